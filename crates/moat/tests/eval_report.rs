//! `moat eval`: the scorecard on the embedded default, its report.json, and report.html
//! rendered in a real browser (headless Chromium: Debian's `chromium`, which `.ci/run` installs;
//! `MOAT_CHROMIUM` names another binary). Without a browser the rendering test prints a notice
//! and passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn moat(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_moat")).args(args).output()
}

fn scratch(name: &str) -> Result<PathBuf, std::io::Error> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs `moat eval --quick` once per process (two tests read its output).
fn quick_run() -> Result<&'static Path, String> {
    static RUN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("eval-quick").map_err(|e| e.to_string())?;
        let out = moat(&["eval", "--quick", "--seed", "3", "--out", dir.to_str().ok_or("path")?])
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("moat eval failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.contains("report.html") {
            return Err(format!("the run does not point at its report: {stdout}"));
        }
        Ok(dir)
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(Clone::clone)
}

fn report(dir: &Path) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(dir.join("report.json"))?)?)
}

#[test]
fn the_quick_scorecard_fills_every_cell_or_says_why_not() -> TestResult {
    let dir = quick_run()?;
    let r = report(dir)?;
    assert_eq!(r["schema"], "moat-eval-report");
    assert_eq!(r["version"], 1);
    assert_eq!(r["seed"], 3);
    assert!(r["commit"].as_str().is_some_and(|c| !c.is_empty()), "{}", r["commit"]);
    let defenses = r["scorecard"]["defenses"].as_array().ok_or("defenses")?;
    assert_eq!(defenses.len(), 7);
    let rows = r["scorecard"]["rows"].as_array().ok_or("rows")?;
    let ids: Vec<&str> = rows.iter().filter_map(|row| row["id"].as_str()).collect();
    assert_eq!(ids, ["seek", "mia-scores", "mia-labels", "psml", "cheating-server"]);
    let commands: Vec<&str> =
        r["steps"].as_array().ok_or("steps")?.iter().filter_map(|s| s["command"].as_str()).collect();
    for row in rows {
        let cells = row["cells"].as_array().ok_or("cells")?;
        assert_eq!(cells.len(), defenses.len());
        let mut measured = 0;
        for c in cells {
            match c["status"].as_str() {
                Some("measured") => {
                    measured += 1;
                    assert!(c["value"].as_f64().is_some_and(f64::is_finite), "{c}");
                    let command = c["command"].as_str().ok_or("a measured cell without its command")?;
                    assert!(command.starts_with("moat ") && commands.contains(&command), "{command}");
                    assert!(command.contains("--seed 3"), "{command}");
                }
                Some("not-applicable") => {
                    assert!(c["reason"].as_str().is_some_and(|s| s.len() > 10), "{c}");
                }
                other => panic!("cell status {other:?}"),
            }
        }
        assert!(measured >= 1, "row {} has no measured cell", row["id"]);
    }
    // The figures the issues report, on the embedded digits: SEEK recovers the victim, the
    // hardened server stops it, Fusion catches the cheaper model, parity is exact.
    let cell = |row: usize, col: usize| rows[row]["cells"][col]["value"].as_f64().unwrap_or(f64::NAN);
    assert!(cell(0, 0) > 0.99, "SEEK fidelity {}", cell(0, 0));
    assert!(cell(0, 1) < 0.5, "SEEK against hardening {}", cell(0, 1));
    assert!(cell(1, 0) > 0.6, "score MIA AUC {}", cell(1, 0));
    assert!(cell(4, 6) > 0.95, "Fusion detection {}", cell(4, 6));
    // The guards (columns 3 SIGuard, 4 MemGuard) are measured against both MIA rows, keep every
    // label, and SIGuard lowers the best score attack (measured on this victim: RMIA 0.75 →
    // 0.59 under SIGuard).
    for (row, col) in [(1, 3), (1, 4), (2, 3), (2, 4)] {
        let c = &rows[row]["cells"][col];
        assert_eq!(c["status"], "measured", "{c}");
        assert!(c["cost"].as_str().is_some_and(|s| s.starts_with("labels kept on 100.0 %")), "{c}");
    }
    assert!(cell(1, 3) < cell(1, 0) - 0.05, "score MIA AUC {} under SIGuard, {} without", cell(1, 3), cell(1, 0));
    let secure = &r["scorecard"]["secure"];
    assert_eq!(secure["agree_with_fixed_point"], secure["queries"], "{secure}");
    Ok(())
}

#[test]
fn only_runs_the_named_areas_and_marks_the_rest_not_run() -> TestResult {
    let dir = scratch("eval-only")?;
    let out =
        moat(&["eval", "--only", "fusion", "--quick", "--seed", "5", "--out", dir.to_str().ok_or("path")?, "--json"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(r["areas"], serde_json::json!(["fusion"]));
    for row in r["scorecard"]["rows"].as_array().ok_or("rows")? {
        let not_run = row["cells"]
            .as_array()
            .ok_or("cells")?
            .iter()
            .all(|c| c["reason"].as_str().is_some_and(|s| s.starts_with("not run")));
        assert_eq!(not_run, row["id"] != "cheating-server", "{}", row["id"]);
    }
    let bad = moat(&["eval", "--data-dir", dir.to_str().ok_or("path")?, "--out", dir.to_str().ok_or("path")?])?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("has no mnist/ folder"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let missing = dir.join("no-such-model.onnx");
    let bad = moat(&["eval", "--victim", missing.to_str().ok_or("path")?, "--out", dir.to_str().ok_or("path")?])?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no-such-model.onnx: no such file"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let notes = r["notes"].to_string();
    assert!(notes.contains("trained by the run on the embedded digits"), "{notes}");
    Ok(())
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOAT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// Runs headless Chromium on `page` with `mode` (`--dump-dom` or `--screenshot=…`); returns
/// stdout and the console lines of stderr that report errors.
fn headless(
    browser: &Path,
    page: &Path,
    mode: &str,
    profile: &Path,
) -> Result<(String, Vec<String>), Box<dyn std::error::Error>> {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,5200",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(format!("file://{}", page.display()))
        .output()?;
    if !out.status.success() {
        return Err(format!("chromium failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let errors = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error") || l.contains(":ERROR:")))
        .map(str::to_string)
        .collect();
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), errors))
}

#[test]
fn the_report_renders_in_a_real_browser_with_its_table_and_every_plot() -> TestResult {
    let Some(browser) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            return Err("CI=true but no chromium (.ci/run installs Debian's chromium)".into());
        }
        eprintln!("no chromium: skipping the browser test");
        return Ok(());
    };
    let work = scratch("eval-browser")?;

    // The detector of console errors sees one when there is one.
    let broken = work.join("broken.html");
    std::fs::write(&broken, "<!DOCTYPE html><html><body><script>notDefinedAnywhere();</script></body></html>")?;
    let (_, errors) = headless(&browser, &broken, "--dump-dom", &work.join("profile-a"))?;
    assert!(!errors.is_empty(), "a page with a script error must show a console error");

    let dir = quick_run()?;
    let page = dir.join("report.html");
    let (dom, errors) = headless(&browser, &page, "--dump-dom", &work.join("profile-b"))?;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let r = report(dir)?;
    let rows = r["scorecard"]["rows"].as_array().ok_or("rows")?.len();
    let cols = r["scorecard"]["defenses"].as_array().ok_or("defenses")?.len();
    assert_eq!(dom.matches("data-cell=").count(), rows * cols, "every cell of the table is in the page");
    assert_eq!(dom.matches("data-row=").count(), rows);
    for plot in ["roc", "roc-log", "seek", "psml-sweep", "psml-extraction", "fusion", "layers"] {
        let at = dom.find(&format!("data-plot=\"{plot}\"")).ok_or(format!("plot {plot} missing"))?;
        let figure = &dom[at..dom[at..].find("</figure>").map_or(dom.len(), |e| at + e)];
        assert!(
            figure.contains("<svg")
                && figure.matches("<path").count()
                    + figure.matches("<polyline").count()
                    + figure.matches("<rect").count()
                    > 3,
            "plot {plot} is empty"
        );
    }

    // The screenshot: the page drew something in every band of its height that holds content.
    let shot = work.join("report.png");
    headless(&browser, &page, &format!("--screenshot={}", shot.display()), &work.join("profile-c"))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot)?));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let (w, h, channels) = (info.width as usize, info.height as usize, info.color_type.samples());
    let bands = 8;
    let mut inked = 0;
    for band in 0..bands {
        let rows_in_band = (band * h / bands)..((band + 1) * h / bands);
        let mut dark = 0usize;
        for y in rows_in_band.clone() {
            for x in 0..w {
                let p = &buf[(y * w + x) * channels..(y * w + x) * channels + 3];
                dark += usize::from(p.iter().map(|&c| u32::from(c)).sum::<u32>() < 600);
            }
        }
        inked += usize::from(dark * 200 > rows_in_band.len() * w);
    }
    assert!(inked >= bands / 2, "only {inked} of {bands} bands of the screenshot hold content");
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval-report-screenshot.png");
    std::fs::copy(&shot, &artifact)?;
    eprintln!("screenshot of report.html: {}", artifact.display());
    Ok(())
}
