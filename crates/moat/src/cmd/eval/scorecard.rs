//! The attacks × defenses table, read from the steps' own JSON reports.
//!
//! A row is an attack with its figure of merit; a column is a defense. A cell is either
//! **measured** (the figure, the defense's cost, the step and command behind it) or **not
//! applicable**, with the reason: the defense does not act on what the attack uses, the
//! defense is not built in this commit, or the area was not run (`--only`).
//!
//! The steps' reports are read by path (`scores.total.queries_per_parameter`); a missing field
//! is an error naming the step and the path, never a silent blank.

use std::str::FromStr;

use anyhow::{Context, anyhow};
use moat_attack::mia::Attack;
use serde::Serialize;
use serde_json::Value;

use super::Area;
use super::runner::StepRecord;
use crate::report::Table;

/// A defense: a column of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Defense {
    /// Identifier.
    pub id: &'static str,
    /// Column title.
    pub name: &'static str,
    /// What it does.
    pub what: &'static str,
}

/// The columns, in order.
pub const DEFENSES: [Defense; 7] = [
    Defense { id: "none", name: "none", what: "the semi-honest service as deployed" },
    Defense {
        id: "hardening",
        name: "hardening noise",
        what: "the server adds uniform noise (±0.02) to its shares of every activation input and the logits",
    },
    Defense { id: "budget", name: "query budget", what: "a per-key budget on the queries a client may ask" },
    Defense {
        id: "siguard",
        name: "SIGuard",
        what: "MemGuard-style noise on the logits, optimised inside the two-party computation, label kept",
    },
    Defense { id: "memguard", name: "MemGuard", what: "the plaintext ancestor of SIGuard, on the OIP outputs" },
    Defense {
        id: "eps-selection",
        name: "ε-selection",
        what: "ε-randomised model selection among the zoo members that meet the spec",
    },
    Defense {
        id: "fusion",
        name: "Fusion",
        what: "the client mixes known-answer samples and duplicates into its batch (mix-and-check)",
    },
];

/// Whether a cell was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The figure comes from a step of this run.
    Measured,
    /// Not measured; `reason` says why.
    NotApplicable,
}

/// One cell of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// The column's defense.
    pub defense: &'static str,
    /// Measured or not.
    pub status: Status,
    /// The cell in a few words (the figure of merit first).
    pub headline: String,
    /// The figure of merit as a number (the row says what it is).
    pub value: Option<f64>,
    /// What the defense costs its users.
    pub cost: Option<String>,
    /// The step the figure comes from.
    pub step: Option<String>,
    /// That step's command.
    pub command: Option<String>,
    /// Why the cell is not measured.
    pub reason: Option<String>,
}

/// One attack: a row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Identifier.
    pub id: &'static str,
    /// The attack.
    pub attack: &'static str,
    /// Who attacks whom.
    pub threat: &'static str,
    /// What `value` means in this row's cells.
    pub figure_of_merit: &'static str,
    /// One cell per defense, in [`DEFENSES`] order.
    pub cells: Vec<Cell>,
}

/// Secure inference itself: parity and cost.
#[derive(Clone, Debug, Serialize)]
pub struct SecureFigures {
    /// Queries answered by the real two-party protocol.
    pub queries: f64,
    /// Answers equal to the plaintext fixed-point executor's.
    pub agree_with_fixed_point: f64,
    /// Accuracy of the secure answers.
    pub accuracy: f64,
    /// Seconds per query (`moat bench secure`).
    pub seconds_per_query: f64,
    /// Bytes per query, both directions.
    pub bytes_per_query: f64,
    /// The client step.
    pub command: String,
    /// The benchmark step.
    pub bench_command: String,
}

/// The table.
#[derive(Clone, Debug, Serialize)]
pub struct Scorecard {
    /// The columns.
    pub defenses: Vec<Defense>,
    /// The rows.
    pub rows: Vec<Row>,
    /// Secure inference's own figures (when the `secure` area ran).
    pub secure: Option<SecureFigures>,
}

/// Reads the steps' reports by path.
struct Steps<'a>(&'a [StepRecord]);

impl<'a> Steps<'a> {
    fn get(&self, id: &str) -> Option<&'a StepRecord> {
        self.0.iter().find(|s| s.id == id)
    }
}

/// The value at `path` (`a.b.0.c`) in `step`'s report.
fn at<'v>(step: &'v StepRecord, path: &str) -> anyhow::Result<&'v Value> {
    let mut v = &step.output;
    for key in path.split('.') {
        let next = match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(key),
        };
        v = next.ok_or_else(|| anyhow!("the report of step `{}` has no `{path}` (at `{key}`)", step.id))?;
    }
    Ok(v)
}

fn num(step: &StepRecord, path: &str) -> anyhow::Result<f64> {
    at(step, path)?.as_f64().ok_or_else(|| anyhow!("`{path}` in the report of step `{}` is not a number", step.id))
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

impl Cell {
    fn measured(defense: &'static str, step: &StepRecord, headline: String, value: f64, cost: Option<String>) -> Self {
        Self {
            defense,
            status: Status::Measured,
            headline,
            value: Some(value),
            cost,
            step: Some(step.id.clone()),
            command: Some(step.command.clone()),
            reason: None,
        }
    }

    fn na(defense: &'static str, reason: impl Into<String>) -> Self {
        Self {
            defense,
            status: Status::NotApplicable,
            headline: "not applicable".into(),
            value: None,
            cost: None,
            step: None,
            command: None,
            reason: Some(reason.into()),
        }
    }
}

const NOT_RUN: &str = "not run: the area was left out (--only)";

/// A row: `measured(defense)` gives the cell of each defense this row measures, `None` for the
/// rest, which get `na(defense)`.
fn row(
    id: &'static str,
    attack: &'static str,
    threat: &'static str,
    figure_of_merit: &'static str,
    ran: bool,
    mut cell: impl FnMut(&'static str) -> anyhow::Result<Option<Cell>>,
    na: impl Fn(&'static str) -> String,
) -> anyhow::Result<Row> {
    let mut cells = Vec::new();
    for d in &DEFENSES {
        let c = if !ran { Cell::na(d.id, NOT_RUN) } else { cell(d.id)?.unwrap_or_else(|| Cell::na(d.id, na(d.id))) };
        cells.push(c);
    }
    Ok(Row { id, attack, threat, figure_of_merit, cells })
}

fn seek_row(steps: &Steps<'_>, ran: bool) -> anyhow::Result<Row> {
    row(
        "seek",
        "SEEK model extraction",
        "a malicious client tampers with its shares and reads labels",
        "fidelity of the extracted copy (label agreement with the victim on the test set)",
        ran,
        |d| {
            Ok(match d {
                "none" => {
                    let s = steps.get("seek").context("step `seek`")?;
                    let fid = num(s, "quality.fidelity")?;
                    let qpp = num(s, "scores.total.queries_per_parameter")?;
                    let err = num(s, "scores.total.mean_relative_error_deployed")?;
                    Some(Cell::measured(
                        d,
                        s,
                        format!("fidelity {}, {qpp:.1} queries/parameter, mean relative error {err:.1e}", pct(fid)),
                        fid,
                        None,
                    ))
                }
                "hardening" => {
                    let s = steps.get("seek-hardened").context("step `seek-hardened`")?;
                    let fid = num(s, "quality.fidelity")?;
                    let failed = num(s, "scores.total.failed")?;
                    let total = num(s, "scores.total.parameters")? + failed;
                    let acc = num(s, "quality.victim_accuracy")?;
                    let hardened = num(s, "quality.hardened_accuracy")?;
                    Some(Cell::measured(
                        d,
                        s,
                        format!(
                            "fidelity {}, {} of the parameters not extracted",
                            pct(fid),
                            pct(failed / total.max(1.0))
                        ),
                        fid,
                        Some(format!("server accuracy {} → {}", pct(acc), pct(hardened))),
                    ))
                }
                "budget" => {
                    let s = steps.get("seek-budget").context("step `seek-budget`")?;
                    let within = num(s, "budget.fraction_within_budget")?;
                    let budget = num(s, "budget.budget")?;
                    let needed = num(s, "budget.needed")?;
                    Some(Cell::measured(
                        d,
                        s,
                        format!(
                            "{} of the parameters within {budget:.0} queries (the whole model needs {needed:.0})",
                            pct(within)
                        ),
                        within,
                        Some(format!("every key limited to {budget:.0} queries")),
                    ))
                }
                _ => None,
            })
        },
        |d| match d {
            "siguard" | "memguard" => "keeps every label, and SEEK reads labels only: its answers are unchanged".into(),
            "eps-selection" => "randomises which zoo member answers; SEEK attacks one named model".into(),
            "fusion" => "protects a client from a cheating server; SEEK is a cheating client".into(),
            _ => unreachable_defense(d),
        },
    )
}

/// The best attack of `output` in the `mia` step's report: label-only or score-based.
fn best_mia(step: &StepRecord, output: &str, label_only: bool) -> anyhow::Result<(String, f64, f64)> {
    let outputs = at(step, "outputs")?.as_array().context("`outputs` is not a list")?;
    let o = outputs
        .iter()
        .find(|o| o.get("output").and_then(Value::as_str) == Some(output))
        .ok_or_else(|| anyhow!("the report of step `{}` has no output `{output}`", step.id))?;
    let attacks = o.get("attacks").and_then(Value::as_array).context("`attacks` is not a list")?;
    let mut best: Option<(String, f64, f64)> = None;
    for a in attacks {
        let name = a.get("attack").and_then(Value::as_str).context("an attack without a name")?;
        let kind = Attack::from_str(name).map_err(|e| anyhow!("attack `{name}` in the report: {e}"))?;
        if kind.label_only() != label_only {
            continue;
        }
        let auc = a.get("auc").and_then(Value::as_f64).context("an attack without `auc`")?;
        let tpr = a.get("tpr_at_1pct_fpr").and_then(Value::as_f64).context("an attack without `tpr_at_1pct_fpr`")?;
        if best.as_ref().is_none_or(|b| auc > b.1) {
            best = Some((name.to_string(), auc, tpr));
        }
    }
    best.ok_or_else(|| anyhow!("step `{}` ran no {} attack", step.id, if label_only { "label-only" } else { "score" }))
}

/// The cell of a guard (`siguard`, `memguard`) from its `mia-<guard>` step: the best attack on
/// the guarded answers beside the same kind of attack on the unguarded baseline, and what the
/// guard cost (labels kept, L1 distortion, time per answer).
fn guard_cell(defense: &'static str, s: &StepRecord, label_only: bool) -> anyhow::Result<Cell> {
    let output = at(s, "guards.0.output")?.as_str().context("`guards.0.output` is not a string")?;
    let baseline = at(s, "guards.0.baseline")?.as_str().context("`guards.0.baseline` is not a string")?;
    let (name, auc, tpr) = best_mia(s, output, label_only)?;
    let (bname, bauc, btpr) = best_mia(s, baseline, label_only)?;
    let kept = num(s, "guards.0.label_agreement")?;
    let l1 = num(s, "guards.0.mean_l1_distortion")?;
    let ms = num(s, "guards.0.ms_per_query")?;
    let answers = if defense == "siguard" {
        "the two-party protocol's SIGuard answers (plaintext ring operations, bit-identical)"
    } else {
        "MemGuard's plaintext answers"
    };
    Ok(Cell::measured(
        defense,
        s,
        format!(
            "AUC {auc:.3} ({name}), TPR {} at 1 % FPR on {answers}; unguarded {bauc:.3} ({bname}), TPR {}",
            pct(tpr),
            pct(btpr)
        ),
        auc,
        Some(format!("labels kept on {}, mean L1 distortion {l1:.3}, {ms:.1} ms per answer", pct(kept))),
    ))
}

fn mia_row(steps: &Steps<'_>, ran: bool, label_only: bool) -> anyhow::Result<Row> {
    let (id, attack, threat) = if label_only {
        ("mia-labels", "Membership inference, label only", "a client tells members from labels alone")
    } else {
        ("mia-scores", "Membership inference, scores", "a client tells members from revealed scores")
    };
    row(
        id,
        attack,
        threat,
        "AUC of the best attack on the two-party protocol's outputs (0.5 = guessing)",
        ran,
        |d| {
            Ok(match d {
                "none" => {
                    let s = steps.get("mia").context("step `mia`")?;
                    let (name, auc, tpr) = best_mia(s, "simulated-2pc", label_only)?;
                    let (fname, fauc, _) = best_mia(s, "float", label_only)?;
                    Some(Cell::measured(
                        d,
                        s,
                        format!(
                            "AUC {auc:.3} ({name}), TPR {} at 1 % FPR on two-party outputs; plaintext {fauc:.3} ({fname})",
                            pct(tpr)
                        ),
                        auc,
                        None,
                    ))
                }
                "siguard" | "memguard" => {
                    let id = format!("mia-{d}");
                    let s = steps.get(&id).with_context(|| format!("step `{id}`"))?;
                    Some(guard_cell(d, s, label_only)?)
                }
                _ => None,
            })
        },
        move |d| match d {
            "hardening" => "noise against share tampering, not a membership defense (not measured)".into(),
            "budget" => {
                "one query per target sample: a budget bounds how many samples are tested, not whether each is exposed"
                    .into()
            }
            "eps-selection" => "a zoo defense; this victim is served alone".into(),
            "fusion" => "protects a client from a cheating server; membership inference is a client attack".into(),
            _ => unreachable_defense(d),
        },
    )
}

fn psml_row(steps: &Steps<'_>, ran: bool) -> anyhow::Result<Row> {
    row(
        "psml",
        "PSML zoo fingerprinting and extraction",
        "a client steers a model-selecting service to one victim and extracts it",
        "fidelity of the guided extraction at the arm's budget",
        ran,
        |d| {
            let Some(s) = steps.get("psml") else { return Err(anyhow!("step `psml` missing")) };
            let arm = |name: &str| -> anyhow::Result<f64> {
                let arms = at(s, "arms")?.as_array().context("`arms` is not a list")?;
                let a = arms
                    .iter()
                    .find(|a| a.get("arm").and_then(Value::as_str) == Some(name))
                    .ok_or_else(|| anyhow!("no `{name}` arm in the psml report"))?;
                let curve = a.get("curve").and_then(Value::as_array).context("an arm without a curve")?;
                curve
                    .last()
                    .and_then(|p| p.get("fidelity"))
                    .and_then(Value::as_f64)
                    .context("an arm without a final fidelity")
            };
            Ok(match d {
                "none" => {
                    let ident = num(s, "search.identification_accuracy")?;
                    let (guided, naive, baseline) = (arm("guided")?, arm("naive")?, arm("baseline")?);
                    Some(Cell::measured(
                        d,
                        s,
                        format!(
                            "identification {}; guided fidelity {} (single-model baseline {}, naive {})",
                            pct(ident),
                            pct(guided),
                            pct(baseline),
                            pct(naive)
                        ),
                        guided,
                        None,
                    ))
                }
                "budget" => {
                    let spent = num(s, "key_spent_total")?;
                    let budget = num(s, "budget_per_arm")?;
                    Some(Cell::measured(
                        d,
                        s,
                        format!(
                            "the whole attack (search + three arms of {budget:.0}) spent {spent:.0} queries of one key"
                        ),
                        spent,
                        Some(format!("a key budget below {spent:.0} stops this run before its arms finish")),
                    ))
                }
                "eps-selection" => {
                    let policies = at(s, "defence.at_80_percent_goodput")?.as_object().context("not an object")?;
                    let undefended = num(s, "defence.undefended_fidelity")?;
                    // The policy that hurts the attacker most while goodput stays ≥ 80 %.
                    let mut best: Option<(&str, f64, f64, f64)> = None;
                    for (policy, v) in policies {
                        let Some(fid) = v.get("fidelity").and_then(Value::as_f64) else { continue };
                        let eps = v.get("epsilon_80").and_then(Value::as_f64).unwrap_or(f64::NAN);
                        let goodput = v.get("goodput").and_then(Value::as_f64).unwrap_or(f64::NAN);
                        if best.is_none_or(|b| fid < b.1) {
                            best = Some((policy, fid, eps, goodput));
                        }
                    }
                    match best {
                        Some((policy, fid, eps, goodput)) => Some(Cell::measured(
                            d,
                            s,
                            format!(
                                "guided fidelity {} with {policy} at ε = {eps} ({:+.1} points)",
                                pct(fid),
                                100.0 * (fid - undefended)
                            ),
                            fid,
                            Some(format!("goodput {}", pct(goodput))),
                        )),
                        None => Some(Cell::na(d, "no policy of the sweep kept goodput at 80 % or more")),
                    }
                }
                _ => None,
            })
        },
        |d| match d {
            "hardening" => "noise on shares does not hide which member answers (not measured)".into(),
            "siguard" | "memguard" => "keeps every label, and the attack reads labels only".into(),
            "fusion" => "protects a client from a cheating server; PSML is a client attack".into(),
            _ => unreachable_defense(d),
        },
    )
}

fn cheat_row(steps: &Steps<'_>, ran: bool) -> anyhow::Result<Row> {
    row(
        "cheating-server",
        "Cheating server: a cheaper model",
        "the server answers with a model ≥ 5 points less accurate than the one it committed to",
        "fraction of cheating batches detected by the client",
        ran,
        |d| {
            let Some(s) = steps.get("fusion") else { return Err(anyhow!("step `fusion` missing")) };
            let points = at(s, "points")?.as_array().context("`points` is not a list")?;
            let point = |name: &str| {
                points
                    .iter()
                    .find(|p| {
                        p.get("name").and_then(Value::as_str) == Some(name)
                            && p.get("pool_labels").and_then(Value::as_str) == Some("honest_model")
                    })
                    .ok_or_else(|| anyhow!("no `{name}` point in the fusion report"))
            };
            let honest_acc = num(s, "honest_accuracy")?;
            let worse_acc = num(s, "worse_accuracy")?;
            Ok(match d {
                "none" => Some(Cell::measured(
                    d,
                    s,
                    format!(
                        "0 % detected: semi-honest secure inference accepts every answer (accuracy {} instead of {})",
                        pct(worse_acc),
                        pct(honest_acc)
                    ),
                    0.0,
                    None,
                )),
                "fusion" => {
                    let sub = point("substitute")?;
                    let honest = point("honest")?;
                    let f = |p: &Value, k: &str| p.get(k).and_then(Value::as_f64).context("a point without a figure");
                    let (measured, analytic, false_alarm) =
                        (f(sub, "measured")?, f(sub, "analytic")?, f(honest, "measured")?);
                    let (n, m, k) = (num(s, "shape.n")?, num(s, "shape.m")?, num(s, "shape.k")?);
                    Some(Cell::measured(
                        d,
                        s,
                        format!(
                            "{} detected (analytic {}), false alarms {} on an honest server",
                            pct(measured),
                            pct(analytic),
                            pct(false_alarm)
                        ),
                        measured,
                        Some(format!(
                            "+{} queries per batch (m = {m:.0}, k = {k:.0} for n = {n:.0})",
                            pct((m + k) / n)
                        )),
                    ))
                }
                _ => None,
            })
        },
        |d| match d {
            "hardening" | "siguard" | "memguard" => {
                "a server-side defense: a cheating server simply leaves it out".into()
            }
            "budget" => "limits clients, not the server".into(),
            "eps-selection" => "randomises the server's choice; it does not check it".into(),
            _ => unreachable_defense(d),
        },
    )
}

fn unreachable_defense(d: &str) -> String {
    format!("no rule for defense `{d}`")
}

fn secure_figures(steps: &Steps<'_>) -> anyhow::Result<Option<SecureFigures>> {
    let (Some(s), Some(b)) = (steps.get("secure"), steps.get("bench")) else { return Ok(None) };
    Ok(Some(SecureFigures {
        queries: num(s, "queries")?,
        agree_with_fixed_point: num(s, "agree_with_fixed_point")?,
        accuracy: num(s, "accuracy")?,
        seconds_per_query: num(b, "seconds_per_query")?,
        bytes_per_query: num(b, "bytes_per_query")?,
        command: s.command.clone(),
        bench_command: b.command.clone(),
    }))
}

/// Builds the table from the steps of a run over `areas`.
pub fn build(records: &[StepRecord], areas: &[Area]) -> anyhow::Result<Scorecard> {
    let steps = Steps(records);
    let ran = |a: Area| areas.contains(&a);
    let rows = vec![
        seek_row(&steps, ran(Area::Seek))?,
        mia_row(&steps, ran(Area::Mia), false)?,
        mia_row(&steps, ran(Area::Mia), true)?,
        psml_row(&steps, ran(Area::Psml))?,
        cheat_row(&steps, ran(Area::Fusion))?,
    ];
    let secure = if ran(Area::Secure) { secure_figures(&steps)? } else { None };
    Ok(Scorecard { defenses: DEFENSES.to_vec(), rows, secure })
}

impl Scorecard {
    /// The table as text: one line per cell (attack × defense), measured ones first.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if let Some(s) = &self.secure {
            out.push_str(&format!(
                "secure inference: {}/{} answers equal to the fixed-point executor, accuracy {}, {:.3} s and {:.2} MiB per query\n\n",
                s.agree_with_fixed_point,
                s.queries,
                pct(s.accuracy),
                s.seconds_per_query,
                s.bytes_per_query / (1024.0 * 1024.0)
            ));
        }
        let mut t = Table::new(&["attack", "defense", "result", "cost"]);
        for r in &self.rows {
            for c in r.cells.iter().filter(|c| c.status == Status::Measured) {
                let name = self.defenses.iter().find(|d| d.id == c.defense).map_or(c.defense, |d| d.name);
                t.row(vec![r.attack.into(), name.into(), c.headline.clone(), c.cost.clone().unwrap_or_default()]);
            }
        }
        out.push_str(&t.render());
        let na = self.rows.iter().flat_map(|r| &r.cells).filter(|c| c.status == Status::NotApplicable).count();
        out.push_str(&format!("({na} cells not applicable, each with its reason in report.json / report.html)\n"));
        out
    }
}
