//! SVG plots (plotters' SVG backend: text is emitted as SVG `<text>`, no fonts
//! are loaded): latency CDF, throughput over time, and a metric against a swept
//! parameter.

use std::path::Path;

use plotters::prelude::*;

use crate::{error::SimError, report::SessionRecord};

const SIZE: (u32, u32) = (800, 500);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err(path: &Path) -> impl Fn(String) -> SimError + '_ {
    move |message| SimError::Plot {
        path: path.to_path_buf(),
        message,
    }
}

fn upper(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v * 1.05
    } else {
        1.0
    }
}

/// Cumulative distribution of latencies (ms), one line per named series.
pub fn latency_cdf(
    path: &Path,
    title: &str,
    series: &[(String, Vec<f64>)],
) -> Result<(), SimError> {
    let e = err(path);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..upper(max), 0.0..1.0)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("fraction of successful sessions")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (name, values)) in series.iter().enumerate() {
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1) as f64;
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .flat_map(|(k, x)| [(*x, k as f64 / n), (*x, (k + 1) as f64 / n)])
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

/// Successful sessions per second, in bins of `bin_s` seconds by completion time.
pub fn throughput_series(sessions: &[SessionRecord], bin_s: f64) -> Vec<(f64, f64)> {
    let bin_ms = (bin_s * 1_000.0).max(1.0);
    let done: Vec<f64> = sessions
        .iter()
        .filter(|s| s.latency_ms.is_some())
        .filter_map(|s| s.finished_ms)
        .collect();
    let last = done.iter().copied().fold(0.0f64, f64::max);
    let bins = (last / bin_ms).floor() as usize + 1;
    let mut counts = vec![0u64; bins];
    for t in done {
        let b = ((t / bin_ms).floor() as usize).min(bins - 1);
        counts[b] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i as f64 * bin_s, c as f64 / bin_s))
        .collect()
}

/// Throughput over time.
pub fn throughput(path: &Path, title: &str, points: &[(f64, f64)]) -> Result<(), SimError> {
    let e = err(path);
    let xmax = points.iter().map(|p| p.0).fold(0.0f64, f64::max);
    let ymax = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..upper(xmax), 0.0..upper(ymax))
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc("successful sessions per second")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            COLORS[0].stroke_width(2),
        ))
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// One or more metrics against a swept parameter.
pub fn sweep(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    x: &[f64],
    series: &[(String, Vec<f64>)],
) -> Result<(), SimError> {
    let e = err(path);
    let xmin = x.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let xmax = x.iter().copied().fold(0.0f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(xmin..upper(xmax), 0.0..upper(ymax))
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (name, ys)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = x
            .iter()
            .zip(ys)
            .filter(|(_, y)| y.is_finite())
            .map(|(a, b)| (*a, *b))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|x| e(x.to_string()))?;
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))
}
