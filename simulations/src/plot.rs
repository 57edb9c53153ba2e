//! Plots: latency CDF, throughput over time, and metrics against a swept
//! parameter. Each is a [`LineChart`], drawn by one function that is generic
//! over the plotters backend; the file extension picks the backend: `.svg`
//! (plotters' SVG backend) or `.png` (its bitmap backend).
//!
//! Text needs different things in the two formats:
//! - SVG writes text as `<text>` in the generic `sans-serif` family, and the
//!   viewer renders it. Plotters only needs widths to lay the chart out; they
//!   come from a built-in metrics-only font (a fixed advance per character, no
//!   glyphs), so SVGs need no font file and are identical on every machine.
//! - PNG rasterizes text itself and needs a real TrueType (or OpenType) font,
//!   loaded once per process at run time: the file named by
//!   [`FONT_ENV`] (`QUORATE_SIM_FONT`) if set, else the first of
//!   [`FONT_PATHS`] that exists (see [`png_font`]).

use std::{
    ffi::OsString,
    ops::Range,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use plotters::{
    coord::Shift,
    prelude::*,
    style::{register_font, FontStyle},
};

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

/// Environment variable naming the TrueType/OpenType font file that PNG plots
/// draw their text with (it overrides [`FONT_PATHS`]).
pub const FONT_ENV: &str = "QUORATE_SIM_FONT";

/// Font files tried, in order, for PNG text when [`FONT_ENV`] is not set
/// (DejaVu Sans on Debian/Ubuntu, Arch and Fedora, then Liberation Sans).
pub const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Family of SVG text: what the viewer renders, and the name the metrics-only
/// layout font is registered under.
const SVG_FAMILY: &str = "sans-serif";
/// Family the PNG font is registered under. Every text style of a chart names
/// its family explicitly, so no PNG text falls back to plotters' default
/// `sans-serif` (which would find the glyph-less layout font).
const PNG_FAMILY: &str = "quorate-sim-png";

/// Image formats written for every plot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Formats {
    /// Also write a PNG next to every SVG (same base name). Needs a font, see
    /// [`png_font`].
    pub png: bool,
}

/// The fonts registered with plotters (once per process), or why they are not.
struct Fonts {
    svg: Result<(), String>,
    png: Result<PathBuf, String>,
}

fn fonts() -> &'static Fonts {
    static FONTS: OnceLock<Fonts> = OnceLock::new();
    FONTS.get_or_init(|| {
        let candidates = FONT_PATHS.map(Path::new);
        Fonts {
            svg: register(SVG_FAMILY, layout_font())
                .map_err(|()| "the built-in layout font was rejected".to_string()),
            png: find_png_font(std::env::var_os(FONT_ENV), &candidates).and_then(
                |(path, bytes)| match register(PNG_FAMILY, bytes) {
                    Ok(()) => Ok(path),
                    Err(()) => Err(format!(
                        "{} is not a TrueType or OpenType font",
                        path.display()
                    )),
                },
            ),
        }
    })
}

/// Registers `bytes` as the normal style of `family` (plotters keeps fonts
/// for the life of the process, so the bytes are leaked; this runs at most
/// once per family).
fn register(family: &str, bytes: Vec<u8>) -> Result<(), ()> {
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(family, FontStyle::Normal, bytes).map_err(|_| ())
}

/// The font file for PNG text: the file named by `env` (the value of
/// [`FONT_ENV`]) if set, else the first readable of `candidates`.
fn find_png_font(
    env: Option<OsString>,
    candidates: &[&Path],
) -> Result<(PathBuf, Vec<u8>), String> {
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return match std::fs::read(&path) {
            Ok(bytes) => Ok((path, bytes)),
            Err(e) => Err(format!("{FONT_ENV}={}: {e}", path.display())),
        };
    }
    for path in candidates {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok((path.to_path_buf(), bytes));
        }
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "{FONT_ENV} is not set and none of {} can be read",
        tried.join(", ")
    ))
}

/// The font file PNG text is drawn with (loaded and registered on the first
/// call), or [`SimError::Font`] saying why there is none and how to provide one.
pub fn png_font() -> Result<&'static Path, SimError> {
    fonts().png.as_deref().map_err(|reason| SimError::Font {
        reason: reason.clone(),
    })
}

/// A metrics-only TrueType font for laying out SVG text: one empty glyph
/// (`.notdef`, which every character maps to, as there is no `cmap`) with an
/// advance of 0.455 em, ascent 0.8 em and descent 0.2 em. The advance is the
/// per-character width plotters estimates when it is built without a font
/// backend, so SVG layouts stay as they were before PNG support (to within a
/// pixel of rounding).
fn layout_font() -> Vec<u8> {
    const UNITS_PER_EM: u16 = 1000;
    const ADVANCE: i16 = 455;
    const ASCENT: i16 = 800;
    const DESCENT: i16 = -200;
    fn i16s(out: &mut Vec<u8>, values: &[i16]) {
        for v in values {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    fn checksum(data: &[u8]) -> u32 {
        data.chunks(4).fold(0u32, |sum, chunk| {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            sum.wrapping_add(u32::from_be_bytes(word))
        })
    }

    let mut head = Vec::with_capacity(54);
    head.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // version 1.0
    head.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // font revision
    head.extend_from_slice(&0u32.to_be_bytes()); // checksum adjustment, set below
    head.extend_from_slice(&0x5F0F_3CF5u32.to_be_bytes()); // magic number
    head.extend_from_slice(&0u16.to_be_bytes()); // flags
    head.extend_from_slice(&UNITS_PER_EM.to_be_bytes());
    // created, modified
    head.extend_from_slice(&[0; 16]);
    // x min, y min, x max, y max, mac style, lowest PPEM, direction hint, short loca
    // offsets, glyph data format
    i16s(&mut head, &[0, DESCENT, ADVANCE, ASCENT, 0, 8, 2, 0, 0]);

    let mut hhea = 0x0001_0000u32.to_be_bytes().to_vec();
    // ascender, descender, line gap, max advance, min left and right side
    // bearings, max extent, caret slope rise and run, caret offset, 4 reserved,
    // metric data format, number of horizontal metrics
    i16s(
        &mut hhea,
        &[
            ASCENT, DESCENT, 0, ADVANCE, 0, 0, ADVANCE, 1, 0, 0, 0, 0, 0, 0, 0, 1,
        ],
    );

    // version 0.5 (no TrueType outlines), one glyph
    let mut maxp = 0x0000_5000u32.to_be_bytes().to_vec();
    i16s(&mut maxp, &[1]);

    let mut hmtx = Vec::with_capacity(4);
    i16s(&mut hmtx, &[ADVANCE, 0]); // advance, left side bearing

    // Tables sorted by tag, each at a 4-byte aligned offset.
    let tables: [(&[u8; 4], Vec<u8>); 4] = [
        (b"head", head),
        (b"hhea", hhea),
        (b"hmtx", hmtx),
        (b"maxp", maxp),
    ];
    // sfnt version (TrueType outlines); number of tables, search range, entry
    // selector, range shift
    let mut font = 0x0001_0000u32.to_be_bytes().to_vec();
    i16s(&mut font, &[4, 64, 2, 0]);
    let mut offset = 12 + 16 * tables.len();
    let mut head_offset = 0;
    for (tag, data) in &tables {
        if *tag == b"head" {
            head_offset = offset;
        }
        font.extend_from_slice(*tag);
        font.extend_from_slice(&checksum(data).to_be_bytes());
        font.extend_from_slice(&(offset as u32).to_be_bytes());
        font.extend_from_slice(&(data.len() as u32).to_be_bytes());
        offset += data.len().next_multiple_of(4);
    }
    for (_, data) in &tables {
        font.extend_from_slice(data);
        font.resize(font.len().next_multiple_of(4), 0);
    }
    let adjustment = 0xB1B0_AFBAu32.wrapping_sub(checksum(&font));
    font[head_offset + 8..head_offset + 12].copy_from_slice(&adjustment.to_be_bytes());
    font
}

fn upper(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v * 1.05
    } else {
        1.0
    }
}

/// Where the legend goes (drawn only with more than one series).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Legend {
    LowerRight,
    UpperLeft,
}

/// A chart of named line series on linear axes; every plot of the simulator
/// is one. Build it with [`LineChart::latency_cdf`], [`LineChart::throughput`]
/// or [`LineChart::sweep`], write it with [`LineChart::save`].
#[derive(Debug, Clone)]
pub struct LineChart {
    title: String,
    x_desc: String,
    y_desc: String,
    x_range: Range<f64>,
    y_range: Range<f64>,
    y_label_area: u32,
    series: Vec<(String, Vec<(f64, f64)>)>,
    markers: bool,
    legend: Legend,
}

impl LineChart {
    /// Cumulative distribution of latencies (ms), one line per named series.
    pub fn latency_cdf(title: &str, series: &[(String, Vec<f64>)]) -> Self {
        let max = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max);
        let series = series
            .iter()
            .map(|(name, values)| {
                let mut v = values.clone();
                v.sort_by(f64::total_cmp);
                let n = v.len().max(1) as f64;
                let steps = v
                    .iter()
                    .enumerate()
                    .flat_map(|(k, x)| [(*x, k as f64 / n), (*x, (k + 1) as f64 / n)])
                    .collect();
                (name.clone(), steps)
            })
            .collect();
        Self {
            title: title.to_string(),
            x_desc: "latency (ms)".into(),
            y_desc: "fraction of successful sessions".into(),
            x_range: 0.0..upper(max),
            y_range: 0.0..1.0,
            y_label_area: 55,
            series,
            markers: false,
            legend: Legend::LowerRight,
        }
    }

    /// Throughput over time, from [`throughput_series`].
    pub fn throughput(title: &str, points: &[(f64, f64)]) -> Self {
        let xmax = points.iter().map(|p| p.0).fold(0.0f64, f64::max);
        let ymax = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
        Self {
            title: title.to_string(),
            x_desc: "virtual time (s)".into(),
            y_desc: "successful sessions per second".into(),
            x_range: 0.0..upper(xmax),
            y_range: 0.0..upper(ymax),
            y_label_area: 55,
            series: vec![("throughput".into(), points.to_vec())],
            markers: false,
            legend: Legend::LowerRight,
        }
    }

    /// One or more metrics (`series`, one value per `x`) against a swept
    /// parameter; non-finite values are left out.
    pub fn sweep(
        title: &str,
        x_label: &str,
        y_label: &str,
        x: &[f64],
        series: &[(String, Vec<f64>)],
    ) -> Self {
        let xmin = x.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
        let xmax = x.iter().copied().fold(0.0f64, f64::max);
        let ymax = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let series = series
            .iter()
            .map(|(name, ys)| {
                let points = x
                    .iter()
                    .zip(ys)
                    .filter(|(_, y)| y.is_finite())
                    .map(|(a, b)| (*a, *b))
                    .collect();
                (name.clone(), points)
            })
            .collect();
        Self {
            title: title.to_string(),
            x_desc: x_label.to_string(),
            y_desc: y_label.to_string(),
            x_range: xmin..upper(xmax),
            y_range: 0.0..upper(ymax),
            y_label_area: 60,
            series,
            markers: true,
            legend: Legend::UpperLeft,
        }
    }

    /// Draws the chart on any plotters drawing area, with all text in the
    /// font `family` (which must be registered with plotters).
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        family: &str,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (family, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(self.y_label_area)
            .build_cartesian_2d(self.x_range.clone(), self.y_range.clone())?;
        // Plotters' defaults, with the family named (see `PNG_FAMILY`).
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .label_style((family, 12))
            .axis_desc_style((family, 12))
            .draw()?;
        for (i, (name, points)) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            if self.markers {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
        if self.series.len() > 1 {
            chart
                .configure_series_labels()
                .label_font((family, 12))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(match self.legend {
                    Legend::LowerRight => SeriesLabelPosition::LowerRight,
                    Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
                })
                .draw()?;
        }
        root.present()
    }

    /// Writes the chart to `path`, as SVG or PNG by its extension (creating
    /// the directory). PNG needs a font ([`png_font`]); without one this
    /// returns [`SimError::Font`] and writes nothing.
    pub fn save(&self, path: &Path) -> Result<(), SimError> {
        let fail = |message: String| SimError::Plot {
            path: path.to_path_buf(),
            message,
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let png = match ext.as_deref() {
            Some("svg") => false,
            Some("png") => true,
            _ => return Err(fail("the file name must end in .svg or .png".into())),
        };
        if png {
            png_font()?;
        } else {
            fonts().svg.clone().map_err(fail)?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| SimError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        if png {
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            self.draw(&root, PNG_FAMILY)
                .map_err(|e| fail(e.to_string()))
        } else {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            self.draw(&root, SVG_FAMILY)
                .map_err(|e| fail(e.to_string()))
        }
    }
}

/// Writes each `(file stem, chart)` into `dir` as `<stem>.svg`, then, with
/// `formats.png`, each as `<stem>.png`: all SVGs come first, so a missing
/// PNG font costs no SVG.
pub fn save_all(
    dir: &Path,
    charts: &[(&str, LineChart)],
    formats: Formats,
) -> Result<(), SimError> {
    for (stem, chart) in charts {
        chart.save(&dir.join(format!("{stem}.svg")))?;
    }
    if formats.png {
        for (stem, chart) in charts {
            chart.save(&dir.join(format!("{stem}.png")))?;
        }
    }
    Ok(())
}

/// Cumulative distribution of latencies (ms), one line per named series,
/// written to `path` (SVG or PNG by extension).
pub fn latency_cdf(
    path: &Path,
    title: &str,
    series: &[(String, Vec<f64>)],
) -> Result<(), SimError> {
    LineChart::latency_cdf(title, series).save(path)
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

/// Throughput over time, written to `path` (SVG or PNG by extension).
pub fn throughput(path: &Path, title: &str, points: &[(f64, f64)]) -> Result<(), SimError> {
    LineChart::throughput(title, points).save(path)
}

/// One or more metrics against a swept parameter, written to `path` (SVG or
/// PNG by extension).
pub fn sweep(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    x: &[f64],
    series: &[(String, Vec<f64>)],
) -> Result<(), SimError> {
    LineChart::sweep(title, x_label, y_label, x, series).save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_font_has_the_fixed_advance() {
        register("quorate-sim-test-layout", layout_font()).expect("layout font registers");
        let size = ("quorate-sim-test-layout", 100.0)
            .into_font()
            .box_size("abcd")
            .expect("layout");
        assert_eq!(size.0, 182, "4 characters × 0.455 em at 100 px");
    }

    #[test]
    fn missing_font_is_explained() {
        let nowhere = Path::new("/nonexistent/quorate-sim/font.ttf");
        let err = find_png_font(None, &[nowhere]).expect_err("no font");
        assert!(err.contains(FONT_ENV) && err.contains("font.ttf"), "{err}");
        let err =
            find_png_font(Some(nowhere.as_os_str().to_owned()), &[]).expect_err("bad variable");
        assert!(err.starts_with("QUORATE_SIM_FONT=/nonexistent"), "{err}");
        let message = SimError::Font { reason: err }.to_string();
        assert!(
            message.contains("PNG plots need a TrueType font")
                && message.contains("QUORATE_SIM_FONT=/path/to/font.ttf")
                && message.contains("fonts-dejavu-core"),
            "{message}"
        );
    }

    #[test]
    fn unknown_extension_is_refused() {
        let chart = LineChart::throughput("t", &[(0.0, 1.0)]);
        let err = chart
            .save(Path::new("/nonexistent/plot.jpg"))
            .expect_err("jpg");
        assert!(err.to_string().contains(".svg or .png"), "{err}");
    }
}
