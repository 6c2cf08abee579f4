//! The report's own plots (SVG strings, drawn with plotters): SEEK's queries-to-extraction
//! curve and secure inference's per-layer time and bytes. The other plots come from the steps'
//! output directories (ROC, PSML, Fusion) and are inlined as they are.

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use serde_json::Value;

use super::runner::StepRecord;

fn fail<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a report plot: {e:?}")
}

/// The queries of a `moat attack seek` report in extraction order: each layer's detector
/// queries (`None`), then each parameter's queries and whether it was recovered exactly.
fn seek_queries(step: &StepRecord) -> anyhow::Result<Vec<(f64, Option<bool>)>> {
    let layers = step
        .output
        .pointer("/extraction/layers")
        .and_then(Value::as_array)
        .with_context(|| format!("the report of step `{}` has no extraction.layers", step.id))?;
    let mut out = Vec::new();
    for layer in layers {
        out.push((layer.get("detector_queries").and_then(Value::as_f64).unwrap_or(0.0), None));
        for key in ["weights", "biases"] {
            for w in layer.get(key).and_then(Value::as_array).into_iter().flatten() {
                let q = w.get("queries").and_then(Value::as_f64).context("a parameter without `queries`")?;
                let exact = w.get("exact").and_then(Value::as_bool).unwrap_or(false);
                out.push((q, Some(exact)));
            }
        }
    }
    Ok(out)
}

/// SEEK: the fraction of parameters recovered (exactly) against the queries spent, one curve
/// per run (undefended, hardened).
pub fn seek_curve(runs: &[(&str, &StepRecord)]) -> anyhow::Result<String> {
    let mut curves = Vec::new();
    let mut max_q: f64 = 1.0;
    for (name, step) in runs {
        let params = seek_queries(step)?;
        let total = params.iter().filter(|p| p.1.is_some()).count().max(1) as f64;
        let mut spent = 0.0;
        let mut exact = 0usize;
        let mut points = vec![(0.0, 0.0)];
        let stride = (params.len() / 400).max(1);
        for (i, (q, e)) in params.iter().enumerate() {
            spent += q;
            exact += usize::from(*e == Some(true));
            if i % stride == 0 || i + 1 == params.len() {
                points.push((spent, exact as f64 / total));
            }
        }
        max_q = max_q.max(spent);
        curves.push((name.to_string(), points));
    }
    let mut svg = String::new();
    {
        crate::plot::font_ready();
        let root = SVGBackend::with_string(&mut svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("SEEK: parameters recovered exactly vs queries", ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..max_q * 1.02, 0.0..1.02)
            .map_err(fail)?;
        chart.configure_mesh().x_desc("queries").y_desc("fraction of parameters exact").draw().map_err(fail)?;
        for (i, (name, points)) in curves.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(fail)?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(fail)?;
        root.present().map_err(fail)?;
    }
    Ok(svg)
}

/// Secure inference: seconds and kilobytes per layer (`moat bench secure`), two bar charts
/// side by side.
pub fn layer_bars(bench: &StepRecord) -> anyhow::Result<String> {
    let layers = bench
        .output
        .get("layers")
        .and_then(Value::as_array)
        .with_context(|| format!("the report of step `{}` has no layers", bench.id))?;
    let mut rows = Vec::new();
    for l in layers {
        let name = l.get("layer").and_then(Value::as_str).context("a layer without a name")?;
        let seconds = l.get("seconds").and_then(Value::as_f64).context("a layer without seconds")?;
        let up = l.get("bytes_up").and_then(Value::as_f64).unwrap_or(0.0);
        let down = l.get("bytes_down").and_then(Value::as_f64).unwrap_or(0.0);
        rows.push((name.to_string(), seconds * 1e3, (up + down) / 1024.0));
    }
    let n = rows.len().max(1);
    let mut svg = String::new();
    {
        crate::plot::font_ready();
        let height = 120 + 22 * n as u32;
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let (left, right) = root.split_horizontally(450);
        for (area, title, pick) in
            [(left, "milliseconds per layer", 1usize), (right, "KiB per layer (both ways)", 2usize)]
        {
            let value = |r: &(String, f64, f64)| if pick == 1 { r.1 } else { r.2 };
            let max = rows.iter().map(value).fold(0.0f64, f64::max).max(1e-9) * 1.08;
            let mut chart = ChartBuilder::on(&area)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(110)
                .build_cartesian_2d(0.0..max, (0..n).into_segmented())
                .map_err(fail)?;
            let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(n)
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i).cloned().unwrap_or_default(),
                    SegmentValue::Last => String::new(),
                })
                .draw()
                .map_err(fail)?;
            chart
                .draw_series(rows.iter().enumerate().map(|(i, r)| {
                    let mut bar = Rectangle::new(
                        [(0.0, SegmentValue::Exact(i)), (value(r), SegmentValue::Exact(i + 1))],
                        BLUE.mix(0.6).filled(),
                    );
                    bar.set_margin(3, 3, 0, 0);
                    bar
                }))
                .map_err(fail)?;
        }
        root.present().map_err(fail)?;
    }
    Ok(svg)
}
