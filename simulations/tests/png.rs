//! `--png`: every plot is also written as a PNG next to its SVG; without a
//! font, everything else is still written and the run fails with a clear error.

mod common;

use std::path::{Path, PathBuf};

use common::{temp_dir, TINY};
use quorate_sim::{cli, plot, SimError};

/// Set (to anything) in the child process that [`no_font_writes_everything_else_then_fails`]
/// starts; the test body only runs there.
const CHILD: &str = "QUORATE_SIM_TEST_NO_FONT_CHILD";

const RUN_PLOTS: [&str; 2] = ["latency-cdf", "throughput"];
const SWEEP_PLOTS: [&str; 3] = ["sweep-success", "sweep-latency", "sweep-latency-cdf"];

/// Runs the tiny scenario swept over two loss rates, with `--png` on.
fn run_tiny_sweep(dir: &Path) -> Result<Vec<quorate_sim::Summary>, SimError> {
    let scenario = dir.join("tiny.toml");
    std::fs::write(&scenario, TINY).expect("write scenario");
    cli::run(cli::SimArgs {
        scenario,
        seed: Some(3),
        out: dir.join("out"),
        sweep: Some("network.loss=0,0.2".into()),
        no_sweep: false,
        quiet: true,
        png: true,
    })
}

/// Width and height of a PNG file, checking its signature and that the first
/// chunk is `IHDR`.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 24, "{}: too short", path.display());
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: PNG signature",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR", "{}: IHDR first", path.display());
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (word(16), word(20))
}

#[test]
fn png_next_to_every_svg() {
    if let Err(e) = plot::png_font() {
        eprintln!("skipped: no font for PNG text on this machine ({e})");
        return;
    }
    let dir = temp_dir("png");
    let summaries = run_tiny_sweep(&dir).expect("run");
    assert_eq!(summaries.len(), 2);
    let out = dir.join("out/tiny");
    let mut plots: Vec<PathBuf> = SWEEP_PLOTS.iter().map(|p| out.join(p)).collect();
    for point in ["network.loss=0", "network.loss=0.2"] {
        plots.extend(RUN_PLOTS.iter().map(|p| out.join(point).join(p)));
    }
    for plot in &plots {
        let svg = std::fs::read_to_string(plot.with_extension("svg"))
            .unwrap_or_else(|e| panic!("{}.svg: {e}", plot.display()));
        assert!(svg.starts_with("<svg"), "{}.svg", plot.display());
        assert_eq!(png_size(&plot.with_extension("png")), (800, 500));
    }
    // The text is in the SVG as text, in the generic family.
    let svg = std::fs::read_to_string(out.join("sweep-success.svg")).expect("svg");
    assert!(svg.contains("success rate") && svg.contains("sans-serif"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plot_functions_write_png_by_extension() {
    if let Err(e) = plot::png_font() {
        eprintln!("skipped: no font for PNG text on this machine ({e})");
        return;
    }
    let dir = temp_dir("png-direct");
    let series = [("a".to_string(), vec![3.0, 1.0, 2.0])];
    for ext in ["svg", "png", "PNG"] {
        let path = dir.join(format!("cdf.{ext}"));
        plot::latency_cdf(&path, "cdf", &series).expect("plot");
        assert!(path.is_file(), "{}", path.display());
    }
    assert_eq!(png_size(&dir.join("cdf.png")), (800, 500));
    assert_eq!(png_size(&dir.join("cdf.PNG")), (800, 500));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts this test binary again with `QUORATE_SIM_FONT` pointing nowhere (so
/// no font loads, whatever is installed) and runs the body below in it; the
/// variable is set for the child only.
#[test]
fn no_font_writes_everything_else_then_fails() {
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().expect("test binary");
        let child = std::process::Command::new(exe)
            .args(["--exact", "no_font_writes_everything_else_then_fails"])
            .env(CHILD, "1")
            .env(plot::FONT_ENV, "/nonexistent/quorate-sim-test/font.ttf")
            .output()
            .expect("start child");
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && stdout.contains("1 passed"),
            "child test failed ({}):\n{stdout}\n{}",
            child.status,
            String::from_utf8_lossy(&child.stderr)
        );
        return;
    }
    let dir = temp_dir("png-no-font");
    let err = run_tiny_sweep(&dir).expect_err("no font");
    assert!(matches!(err, SimError::Font { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("TrueType font")
            && message.contains("QUORATE_SIM_FONT")
            && message.contains("fonts-dejavu-core"),
        "{message}"
    );
    let out = dir.join("out/tiny");
    for f in ["sweep.json", "sweep.csv"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for p in SWEEP_PLOTS {
        assert!(out.join(format!("{p}.svg")).is_file(), "{p}.svg missing");
        assert!(!out.join(format!("{p}.png")).exists(), "{p}.png written");
    }
    for point in ["network.loss=0", "network.loss=0.2"] {
        let d = out.join(point);
        for f in ["summary.json", "sessions.csv", "config.toml"] {
            assert!(d.join(f).is_file(), "{point}/{f} missing");
        }
        for p in RUN_PLOTS {
            assert!(
                d.join(format!("{p}.svg")).is_file(),
                "{point}/{p}.svg missing"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
