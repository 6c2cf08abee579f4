//! The plots of `moat attack psml`, as self-contained SVG line charts: accuracy and fidelity vs
//! query budget for the three extraction arms (`extraction.svg`), and per selection policy the
//! guided attack's accuracy/fidelity against ε with goodput on a second axis and the 80 %
//! goodput line (`sweep.svg`); and the zoo the attack saw, accuracy against latency with its
//! Pareto front (`zoo.svg`).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

const W: f64 = 640.0;
const H: f64 = 400.0;
const L: f64 = 60.0;
const R: f64 = 70.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// One line (or, without `line`, a set of markers): name, points, dashed, optional point labels.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    right_axis: bool,
    line: bool,
    labels: Vec<String>,
}

impl Series {
    /// A line through `points`.
    fn line(name: String, points: Vec<(f64, f64)>, dashed: bool, right_axis: bool) -> Self {
        Self { name, points, dashed, right_axis, line: true, labels: Vec::new() }
    }
}

struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    y2_label: Option<String>,
    log_x: bool,
    series: Vec<Series>,
    hline_y2: Option<f64>,
    /// The legend in the lower right corner instead of the upper left.
    legend_low: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Chart {
    fn render(&self) -> String {
        let xs: Vec<f64> =
            self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).filter(|x| x.is_finite()).collect();
        let tx = |x: f64| if self.log_x { x.max(1e-9).log10() } else { x };
        let (x0, x1) =
            xs.iter().map(|&x| tx(x)).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        let (x0, x1) = if x0.is_finite() && x1 > x0 { (x0, x1) } else { (0.0, 1.0) };
        let y_range = |right: bool| {
            let ys: Vec<f64> = self
                .series
                .iter()
                .filter(|s| s.right_axis == right)
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .filter(|y| y.is_finite())
                .collect();
            let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() && hi > lo {
                let pad = (hi - lo) * 0.08;
                (lo - pad, hi + pad)
            } else if lo.is_finite() {
                (lo - 0.05, lo + 0.05)
            } else {
                (0.0, 1.0)
            }
        };
        let (ya, yb) = y_range(false);
        let (y2a, y2b) = if self.y2_label.is_some() { (0.0, 1.05) } else { (0.0, 1.0) };
        let px = |x: f64| L + (tx(x) - x0) / (x1 - x0) * (W - L - R);
        let py = |y: f64, right: bool| {
            let (a, b) = if right { (y2a, y2b) } else { (ya, yb) };
            H - B - (y - a) / (b - a) * (H - T - B)
        };
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            W / 2.0,
            esc(&self.title)
        );
        let _ = write!(
            svg,
            r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            W - L - R,
            H - T - B
        );
        for i in 0..=4 {
            let f = i as f64 / 4.0;
            let y = ya + f * (yb - ya);
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                L - 4.0,
                py(y, false) + 4.0,
                fmt_num(y)
            );
            let xv = x0 + f * (x1 - x0);
            let shown = if self.log_x { 10f64.powf(xv) } else { xv };
            let xp = L + f * (W - L - R);
            let _ =
                write!(svg, r#"<text x="{xp}" y="{}" text-anchor="middle">{}</text>"#, H - B + 16.0, fmt_num(shown));
            if self.y2_label.is_some() {
                let y2 = y2a + f * (y2b - y2a);
                let _ = write!(svg, r#"<text x="{}" y="{}">{:.2}</text>"#, W - R + 4.0, py(y2, true) + 4.0, y2);
            }
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (L + W - R) / 2.0,
            H - 12.0,
            esc(&self.x_label)
        );
        let _ = write!(
            svg,
            r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (T + H - B) / 2.0,
            esc(&self.y_label)
        );
        if let Some(l) = &self.y2_label {
            let _ = write!(
                svg,
                r#"<text transform="translate({},{}) rotate(90)" text-anchor="middle">{}</text>"#,
                W - 14.0,
                (T + H - B) / 2.0,
                esc(l)
            );
        }
        if let Some(h) = self.hline_y2 {
            let y = py(h, true);
            let _ = write!(
                svg,
                r##"<line x1="{L}" x2="{}" y1="{y}" y2="{y}" stroke="#999" stroke-dasharray="2,3"/><text x="{}" y="{}" fill="#666">goodput {h}</text>"##,
                W - R,
                L + 4.0,
                y - 4.0
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<String> = s
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y, s.right_axis)))
                .collect();
            let dash = if s.dashed { r#" stroke-dasharray="6,4""# } else { "" };
            if s.line {
                let _ = write!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                    pts.join(" ")
                );
            }
            for (k, p) in pts.iter().enumerate() {
                if let Some((x, y)) = p.split_once(',') {
                    let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
                    if let Some(label) = s.labels.get(k) {
                        let _ =
                            write!(svg, r#"<text x="{x}" y="{y}" dx="5" dy="-5" font-size="10">{}</text>"#, esc(label));
                    }
                }
            }
            let (lx, ly) = if self.legend_low {
                (W - R - 160.0, H - B - 14.0 - 15.0 * (self.series.len() - 1 - i) as f64)
            } else {
                (L + 8.0, T + 14.0 + 15.0 * i as f64)
            };
            let _ = write!(
                svg,
                r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx,
                lx + 20.0,
                lx + 24.0,
                ly + 4.0,
                esc(&s.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// `x` with three significant digits (at most eight decimals).
fn fmt_num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
    format!("{x:.decimals$}")
}

fn curve(points: &Value, field: &str) -> Vec<(f64, f64)> {
    points.as_array().into_iter().flatten().filter_map(|p| Some((p["budget"].as_f64()?, p[field].as_f64()?))).collect()
}

/// The zoo as the harness measured it: accuracy against latency, the Pareto front as a line,
/// the dominated members as markers, each named.
fn zoo_chart(report: &Value) -> Option<Chart> {
    let members = report["members"].as_array().filter(|m| !m.is_empty())?;
    let point = |m: &Value| Some((m["latency_ms"].as_f64()?, m["accuracy"].as_f64()?));
    let mut front: Vec<(f64, f64, String)> = Vec::new();
    let mut rest: Vec<(f64, f64, String)> = Vec::new();
    for m in members {
        let Some((x, y)) = point(m) else { continue };
        let name = m["name"].as_str().unwrap_or("?").to_string();
        if m["pareto"].as_bool() == Some(true) { front.push((x, y, name)) } else { rest.push((x, y, name)) }
    }
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    let series = |name: &str, pts: Vec<(f64, f64, String)>, line: bool| Series {
        name: name.into(),
        points: pts.iter().map(|p| (p.0, p.1)).collect(),
        dashed: false,
        right_axis: false,
        line,
        labels: pts.into_iter().map(|p| p.2).collect(),
    };
    Some(Chart {
        title: format!("The zoo behind task '{}' (profiled by the server)", report["task"].as_str().unwrap_or("?")),
        x_label: "latency the router selects by (ms: measured p99 or declared)".into(),
        y_label: "accuracy".into(),
        y2_label: None,
        log_x: false,
        series: vec![series("Pareto front", front, true), series("dominated", rest, false)],
        hline_y2: None,
        legend_low: true,
    })
}

/// Writes `extraction.svg`, `zoo.svg` when the report lists the members, and `sweep.svg` when
/// it has a sweep, into `dir`.
pub fn write_plots(dir: &Path, report: &Value) -> std::io::Result<()> {
    if let Some(chart) = zoo_chart(report) {
        std::fs::write(dir.join("zoo.svg"), chart.render())?;
    }
    let mut series = Vec::new();
    for arm in report["arms"].as_array().into_iter().flatten() {
        let name = arm["arm"].as_str().unwrap_or("?");
        series.push(Series::line(format!("{name} accuracy"), curve(&arm["curve"], "accuracy"), false, false));
        series.push(Series::line(format!("{name} fidelity"), curve(&arm["curve"], "fidelity"), true, false));
    }
    let chart = Chart {
        title: format!("PSML extraction through task '{}'", report["task"].as_str().unwrap_or("?")),
        x_label: "queries (samples of the key's budget)".into(),
        y_label: "student accuracy / fidelity".into(),
        y2_label: None,
        log_x: false,
        series,
        hline_y2: None,
        legend_low: false,
    };
    std::fs::write(dir.join("extraction.svg"), chart.render())?;

    let sweep = report["sweep"].as_array().cloned().unwrap_or_default();
    if sweep.is_empty() {
        return Ok(());
    }
    let mut series = Vec::new();
    for policy in ["exponential", "permute-and-flip", "noisy-spec"] {
        let pts: Vec<&Value> = sweep.iter().filter(|p| p["policy"] == policy).collect();
        let get = |f: &dyn Fn(&Value) -> Option<f64>| -> Vec<(f64, f64)> {
            pts.iter().filter_map(|p| Some((p["epsilon"].as_f64()?, f(p)?))).collect()
        };
        series.push(Series::line(
            format!("{policy}: accuracy"),
            get(&|p| p["guided"]["curve"][2]["accuracy"].as_f64()),
            false,
            false,
        ));
        series.push(Series::line(format!("{policy}: goodput (right)"), get(&|p| p["goodput"].as_f64()), true, true));
    }
    let chart = Chart {
        title: "Guided extraction vs ε of the selection policy".into(),
        x_label: "ε (log scale)".into(),
        y_label: "student accuracy".into(),
        y2_label: Some("goodput".into()),
        log_x: true,
        series,
        hline_y2: Some(0.8),
        legend_low: false,
    };
    std::fs::write(dir.join("sweep.svg"), chart.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_significant_digits() {
        let shown: Vec<String> = [1234.6, 99.76, 1.5, 0.00421, 0.0, -0.25].into_iter().map(fmt_num).collect();
        assert_eq!(shown, ["1235", "99.8", "1.50", "0.00421", "0", "-0.250"]);
    }

    #[test]
    fn the_zoo_chart_draws_the_front_as_a_line_and_names_every_member() {
        let report = serde_json::json!({"task": "digits", "members": [
            {"name": "fast", "accuracy": 80.0, "latency_ms": 0.001, "pareto": true},
            {"name": "slow", "accuracy": 95.0, "latency_ms": 0.01, "pareto": true},
            {"name": "worse", "accuracy": 70.0, "latency_ms": 0.005, "pareto": false},
        ]});
        let svg = zoo_chart(&report).map(|c| c.render()).unwrap_or_default();
        assert_eq!(svg.matches("<polyline").count(), 1, "only the front is a line");
        for name in ["fast", "slow", "worse"] {
            assert!(svg.contains(&format!(">{name}</text>")), "{name}");
        }
        assert!(zoo_chart(&serde_json::json!({"task": "t"})).is_none(), "no members, no chart");
    }
}
