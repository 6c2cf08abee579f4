//! ROC plots (linear and log-log) as SVG and PNG, drawn with plotters.
//!
//! plotters draws text through ab_glyph from a TrueType font registered at run time:
//! `$MOAT_FONT` when set and readable, else DejaVu Sans embedded in the binary (the `dejavu`
//! crate), so plots carry their labels on any machine. [`font_ready`] registers it once; every
//! plot of the binary calls it before drawing text.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use moat_attack::mia::RocPoint;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::prelude::*;

/// Registers the plots' font with plotters once (see the module documentation); true when
/// text can be drawn — always, unless plotters refuses the embedded font.
pub(crate) fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let custom = std::env::var_os("MOAT_FONT").and_then(|path| std::fs::read(path).ok());
        if let Some(bytes) = custom {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    })
}

/// The lowest rate shown on the log-log axes.
const LOG_FLOOR: f64 = 1e-4;

fn draw<DB: DrawingBackend>(
    area: DrawingArea<DB, Shift>,
    title: &str,
    curves: &[(&str, Vec<RocPoint>)],
    log: bool,
    text: bool,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("drawing the ROC plot: {e}");
    area.fill(&WHITE).map_err(fail)?;
    let mut builder = ChartBuilder::on(&area);
    builder.margin(16);
    if text {
        builder.caption(title, ("sans-serif", 20)).x_label_area_size(40).y_label_area_size(50);
    }
    if log {
        // Rates below the floor are drawn at the floor (a log axis has no zero).
        let chart =
            builder.build_cartesian_2d((LOG_FLOOR..1.0).log_scale(), (LOG_FLOOR..1.0).log_scale()).map_err(fail)?;
        plot_curves(chart, curves, LOG_FLOOR, text).map_err(fail)?;
    } else {
        let chart = builder.build_cartesian_2d(0.0..1.0, 0.0..1.0).map_err(fail)?;
        plot_curves(chart, curves, 0.0, text).map_err(fail)?;
    }
    area.present().map_err(fail)?;
    Ok(())
}

/// The mesh, the chance diagonal from `(floor, floor)` to `(1, 1)` and one line per attack
/// (rates clamped to `floor`), with a legend when `text`: the same on linear and log axes.
fn plot_curves<'a, DB, X, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, Y>>,
    curves: &[(&str, Vec<RocPoint>)],
    floor: f64,
    text: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let palette = |i: usize| Palette99::pick(i).to_rgba();
    let clamp = |v: f64| v.max(floor);
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("false-positive rate").y_desc("true-positive rate");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    chart.draw_series(LineSeries::new([(floor, floor), (1.0, 1.0)], BLACK.mix(0.4)))?;
    for (i, (name, curve)) in curves.iter().enumerate() {
        let series =
            chart.draw_series(LineSeries::new(curve.iter().map(|p| (clamp(p.fpr), clamp(p.tpr))), palette(i)))?;
        if text {
            series.label(*name).legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], palette(i)));
        }
    }
    if text {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    Ok(())
}

/// Writes `roc-<output>.{svg,png}` (linear axes) and `roc-<output>-log.{svg,png}` (log-log)
/// into `dir`, one curve per attack.
pub fn roc_plots(dir: &Path, output: &str, curves: &[(&str, Vec<RocPoint>)]) -> anyhow::Result<()> {
    let text = font_ready();
    if !text {
        eprintln!("notice: the plot font could not be registered: ROC plots drawn without labels");
    }
    for log in [false, true] {
        let stem = if log { format!("roc-{output}-log") } else { format!("roc-{output}") };
        let title = format!("ROC, {output} outputs{}", if log { " (log-log)" } else { "" });
        let svg = dir.join(format!("{stem}.svg"));
        draw(SVGBackend::new(&svg, (640, 560)).into_drawing_area(), &title, curves, log, text)
            .with_context(|| format!("writing {}", svg.display()))?;
        let png = dir.join(format!("{stem}.png"));
        draw(BitMapBackend::new(&png, (640, 560)).into_drawing_area(), &title, curves, log, text)
            .with_context(|| format!("writing {}", png.display()))?;
    }
    Ok(())
}
