//! report.html: one self-contained page — no script, no network, every plot inline SVG.
//!
//! The page carries the table (a row per attack, a column per defense; a not-applicable cell
//! shows its reason), secure inference's figures, the plots (ROC linear and log-log, SEEK
//! queries-to-extraction, PSML attack vs ε with goodput, Fusion measured vs analytic detection,
//! per-layer time and bytes) and every step's command. Each plot is a `<figure>` with a
//! `data-plot` attribute and each cell a `<td data-cell>`, so a browser test can count them.

use std::fmt::Write as _;
use std::path::Path;

use super::plots;
use super::report::Report;
use super::scorecard::Status;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The `<svg …>…</svg>` element of an SVG document (drops an XML prolog or doctype), or
/// `None` when the text holds no SVG element.
fn svg_element(doc: &str) -> Option<&str> {
    let start = doc.find("<svg")?;
    let end = doc.rfind("</svg>")? + "</svg>".len();
    (start < end).then(|| &doc[start..end])
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 1400px; color: #1b1b1b; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } .meta { color: #555; margin-top: 0; }
table.scorecard { border-collapse: collapse; width: 100%; font-size: .88rem; }
table.scorecard th, table.scorecard td { border: 1px solid #ccc; padding: .45rem; vertical-align: top; text-align: left; }
table.scorecard th { background: #f2f2f2; }
td.measured { background: #fff; } td.na { background: #f7f7f7; color: #777; font-size: .8rem; }
.cost { color: #7a4b00; display: block; margin-top: .3rem; } .step { color: #888; font-size: .75rem; display: block; margin-top: .3rem; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; } figure { margin: 0; border: 1px solid #ddd; padding: .5rem; background: #fff; }
figcaption { font-size: .85rem; color: #444; max-width: 640px; } figure svg { max-width: 100%; height: auto; display: block; }
code { font-size: .8rem; background: #f4f4f4; padding: .1rem .3rem; word-break: break-all; }
ol.steps li { margin-bottom: .4rem; }
";

/// A figure with an inline SVG plot.
fn figure(out: &mut String, id: &str, caption: &str, svg: &str) {
    let _ =
        writeln!(out, "<figure data-plot=\"{}\">{}<figcaption>{}</figcaption></figure>", esc(id), svg, esc(caption));
}

/// Inlines the SVG file `dir/rel` as a figure; a missing file is noted, not fatal (a step may
/// legitimately not draw it, e.g. without a font).
fn figure_file(out: &mut String, dir: &Path, rel: &str, id: &str, caption: &str) -> Option<()> {
    let text = std::fs::read_to_string(dir.join(rel)).ok()?;
    let svg = svg_element(&text)?;
    figure(out, id, caption, svg);
    Some(())
}

/// Renders the page; `dir` is the run's output directory (where the steps drew their plots).
pub fn render(report: &Report, dir: &Path) -> anyhow::Result<String> {
    let mut h = String::new();
    let title = format!("moat scorecard — {}", report.preset);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = writeln!(
        h,
        "<h1>{}</h1><p class=\"meta\">commit <code>{}</code> · seed {} · {} · {:.1} s · {} · moat {}</p>",
        esc(&title),
        esc(report.commit),
        report.seed,
        esc(&report.created),
        report.seconds,
        report.data_dir.as_deref().map_or("embedded UCI digits".to_string(), |d| format!("datasets in {}", esc(d))),
        esc(report.moat_version)
    );
    h.push_str(
        "<p>Every attack moat implements against every defense. A measured cell gives the attack's figure of \
         merit, the defense's cost and the step that produced it (its command is listed below; with the seed and \
         commit above it reproduces the figure). A grey cell is not applicable and says why.</p>\n",
    );

    if let Some(s) = &report.scorecard.secure {
        let _ = writeln!(
            h,
            "<h2>Secure inference</h2><p data-secure>{} of {} answers of the real two-party protocol equal to the \
             plaintext fixed-point executor; accuracy {:.1} %; {:.3} s and {:.2} MiB per query.<br><code>{}</code><br><code>{}</code></p>",
            s.agree_with_fixed_point,
            s.queries,
            100.0 * s.accuracy,
            s.seconds_per_query,
            s.bytes_per_query / (1024.0 * 1024.0),
            esc(&s.command),
            esc(&s.bench_command)
        );
    }

    h.push_str("<h2>Attacks × defenses</h2><table class=\"scorecard\"><thead><tr><th>attack</th>");
    for d in &report.scorecard.defenses {
        let _ = write!(h, "<th title=\"{}\">{}</th>", esc(d.what), esc(d.name));
    }
    h.push_str("</tr></thead><tbody>\n");
    for r in &report.scorecard.rows {
        let _ = write!(
            h,
            "<tr data-row=\"{}\"><th>{}<br><small>{}</small><br><small><i>{}</i></small></th>",
            esc(r.id),
            esc(r.attack),
            esc(r.threat),
            esc(r.figure_of_merit)
        );
        for c in &r.cells {
            match c.status {
                Status::Measured => {
                    let _ = write!(h, "<td class=\"measured\" data-cell=\"measured\">{}", esc(&c.headline));
                    if let Some(cost) = &c.cost {
                        let _ = write!(h, "<span class=\"cost\">cost: {}</span>", esc(cost));
                    }
                    if let Some(step) = &c.step {
                        let _ = write!(h, "<span class=\"step\">step <a href=\"#step-{0}\">{0}</a></span>", esc(step));
                    }
                    h.push_str("</td>");
                }
                Status::NotApplicable => {
                    let _ = write!(
                        h,
                        "<td class=\"na\" data-cell=\"not-applicable\">not applicable: {}</td>",
                        esc(c.reason.as_deref().unwrap_or(""))
                    );
                }
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n<h2>Plots</h2><div class=\"plots\">\n");

    let step = |id: &str| report.steps.iter().find(|s| s.id == id);
    for (rel, id, caption) in [
        (
            "mia/roc-simulated-2pc.svg",
            "roc",
            "Membership inference on the two-party protocol's outputs: ROC, every attack.",
        ),
        ("mia/roc-simulated-2pc-log.svg", "roc-log", "The same ROC on log-log axes (the low-FPR regime)."),
    ] {
        figure_file(&mut h, dir, rel, id, caption);
    }
    let seek_runs: Vec<(&str, &super::runner::StepRecord)> =
        [("undefended", "seek"), ("hardened ±0.02", "seek-hardened")]
            .into_iter()
            .filter_map(|(n, id)| step(id).map(|s| (n, s)))
            .collect();
    if !seek_runs.is_empty() {
        figure(
            &mut h,
            "seek",
            "SEEK: the fraction of the victim's parameters recovered bit for bit against the queries spent, against the undefended and the hardened server.",
            &plots::seek_curve(&seek_runs)?,
        );
    }
    for (rel, id, caption) in [
        (
            "psml/sweep.svg",
            "psml-sweep",
            "PSML: the guided extraction's fidelity against ε of each selection policy, with the goodput each keeps.",
        ),
        (
            "psml/extraction.svg",
            "psml-extraction",
            "PSML extraction arms (guided, naive, single-model baseline) against the budget.",
        ),
        (
            "fusion/detection_vs_rate.svg",
            "fusion",
            "Fusion: detection measured (markers) vs analytic (lines) against the fraction of answers a server corrupts.",
        ),
    ] {
        figure_file(&mut h, dir, rel, id, caption);
    }
    if let Some(b) = step("bench") {
        figure(
            &mut h,
            "layers",
            "Secure inference per layer: time and bytes (moat bench secure).",
            &plots::layer_bars(b)?,
        );
    }
    h.push_str("</div>\n<h2>Steps</h2><ol class=\"steps\">\n");
    for s in &report.steps {
        let _ = writeln!(
            h,
            "<li id=\"step-{}\"><b>{}</b> — {} ({:.1} s)<br><code>{}</code></li>",
            esc(&s.id),
            esc(&s.id),
            esc(s.what),
            s.seconds,
            esc(&s.command)
        );
    }
    h.push_str("</ol>\n");
    for n in &report.notes {
        let _ = writeln!(h, "<p class=\"meta\">{}</p>", esc(n));
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_svg_elements_are_found() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(svg_element("<?xml version=\"1.0\"?>\n<svg a=\"1\"><g/></svg>\n"), Some("<svg a=\"1\"><g/></svg>"));
        assert_eq!(svg_element("no plot here"), None);
    }
}
