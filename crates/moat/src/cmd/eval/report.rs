//! report.json: the schema of `moat eval`'s report.
//!
//! ```text
//! {
//!   "schema": "moat-eval-report", "version": 1,
//!   "commit": "…",            // git commit of the build (`-dirty`: uncommitted changes)
//!   "moat_version": "0.1.0",
//!   "created": "2026-12-03T10:00:00Z",
//!   "preset": "embedded-quick" | "embedded" | "datasets-quick" | "datasets",
//!   "seed": 7,                // passed to every step as --seed
//!   "data_dir": null | "…",
//!   "areas": ["secure", "seek", "mia", "psml", "fusion"],
//!   "seconds": 41.2,
//!   "scorecard": {
//!     "defenses": [{ "id", "name", "what" }, …],          // the columns
//!     "rows": [{ "id", "attack", "threat", "figure_of_merit",
//!                "cells": [{ "defense", "status": "measured" | "not-applicable",
//!                            "headline", "value", "cost", "step", "command", "reason" }, …] }],
//!     "secure": null | { "queries", "agree_with_fixed_point", "accuracy",
//!                        "seconds_per_query", "bytes_per_query", "step", "command" }
//!   },
//!   "steps": [{ "id", "what", "command", "seconds", "output" }, …],  // every step's own JSON
//!   "notes": ["…"]
//! }
//! ```
//!
//! Every measured cell names the step that produced it and that step's command line; with the
//! report's seed and commit, that command reproduces the figure. `value` is the cell's figure
//! of merit as a number (its meaning is the row's `figure_of_merit`), so a reader can compare
//! runs without parsing text. A cell that is not measured says why in `reason`.

use serde::Serialize;

use super::runner::StepRecord;
use super::scorecard::{self, Scorecard};
use super::{Area, Preset};

/// The schema's name.
pub const SCHEMA: &str = "moat-eval-report";
/// The schema's version; bumped on any change a reader must know about.
pub const VERSION: u32 = 1;

/// `moat eval`'s report (see the module documentation for the schema).
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// [`VERSION`].
    pub version: u32,
    /// The git commit the binary was built from.
    pub commit: &'static str,
    /// moat's version.
    pub moat_version: &'static str,
    /// When the run finished (UTC, RFC 3339).
    pub created: String,
    /// The preset.
    pub preset: &'static str,
    /// The seed of every step.
    pub seed: u64,
    /// The datasets' directory of the real-data presets.
    pub data_dir: Option<String>,
    /// The areas run.
    pub areas: Vec<Area>,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// The attacks × defenses table.
    pub scorecard: Scorecard,
    /// Every step, with its command and its own report.
    pub steps: Vec<StepRecord>,
    /// Remarks on how to reproduce steps that need more than their own command.
    pub notes: Vec<String>,
}

impl Report {
    /// Builds the report from the steps' records.
    pub(crate) fn new(
        preset: &Preset,
        areas: &[Area],
        steps: Vec<StepRecord>,
        notes: Vec<String>,
        seconds: f64,
    ) -> anyhow::Result<Self> {
        let scorecard = scorecard::build(&steps, areas)?;
        Ok(Self {
            schema: SCHEMA,
            version: VERSION,
            commit: env!("MOAT_COMMIT"),
            moat_version: env!("CARGO_PKG_VERSION"),
            created: rfc3339_now(),
            preset: preset.name(),
            seed: preset.seed,
            data_dir: preset.real.as_ref().map(|d| d.display().to_string()),
            areas: areas.to_vec(),
            seconds,
            scorecard,
            steps,
            notes,
        })
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    rfc3339(secs)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (the proleptic Gregorian calendar; days-to-civil
/// after Howard Hinnant's algorithm).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_301_296), "2026-12-03T12:34:56Z");
    }
}
