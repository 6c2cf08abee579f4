//! Runs one step of the scorecard: a child process of this same binary, with a deadline.
//!
//! Each step is a `moat …` command line. Running it as a child (rather than calling the
//! subcommand in process) keeps the figure and the command that reproduces it the same thing:
//! the report records the exact argument list, and anyone can run it again.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

/// A step of the scorecard: one `moat` command line.
#[derive(Clone, Debug)]
pub struct Step {
    /// Short identifier, unique in a run (`seek`, `mia`, …); cells name the step they come from.
    pub id: String,
    /// What the step does, for the progress bar and the report.
    pub what: &'static str,
    /// The arguments after `moat`.
    pub args: Vec<String>,
    /// Whether the step prints its report as JSON on stdout (`--json`).
    pub json: bool,
}

impl Step {
    /// A step whose stdout is its JSON report.
    pub fn json(id: impl Into<String>, what: &'static str, args: Vec<String>) -> Self {
        Self { id: id.into(), what, args, json: true }
    }

    /// A step run for its files (a trained model, a zoo).
    pub fn files(id: impl Into<String>, what: &'static str, args: Vec<String>) -> Self {
        Self { id: id.into(), what, args, json: false }
    }
}

/// What a step produced, as recorded in report.json.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// The step's identifier.
    pub id: String,
    /// What it does.
    pub what: &'static str,
    /// The command that reproduces it (run from the directory `moat eval` ran in).
    pub command: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The step's JSON report (`null` for steps run for their files).
    pub output: serde_json::Value,
}

/// Quotes an argument for a POSIX shell when it needs it.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if plain { arg.to_string() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

/// The command line of `args` as one would type it.
pub fn command_line(args: &[String]) -> String {
    std::iter::once("moat".to_string()).chain(args.iter().map(|a| shell_quote(a))).collect::<Vec<_>>().join(" ")
}

/// Runs `step` with `exe` (this binary), killing it after `deadline`. stderr is kept in
/// `log_dir/<id>.log`; on failure its tail is part of the error.
pub fn run(exe: &Path, step: &Step, log_dir: &Path, deadline: Duration) -> anyhow::Result<StepRecord> {
    let log_path = log_dir.join(format!("{}.log", step.id));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(&step.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting `{}`", command_line(&step.args)))?;
    // Drain stdout on a thread so a large report never blocks the child on a full pipe.
    let mut stdout = child.stdout.take().context("the child's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a step")? {
            break status;
        }
        if started.elapsed() > deadline {
            // Kill and reap; the step's own error (if any) is in its log.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "step `{}` did not finish within {} s (killed); its log: {}",
                step.id,
                deadline.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader of step `{}` panicked", step.id))?
        .with_context(|| format!("reading the output of step `{}`", step.id))?;
    if !status.success() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("step `{}` failed ({status}): `{}`\n{}", step.id, command_line(&step.args), tail.join("\n"));
    }
    let output = if step.json {
        serde_json::from_slice(&stdout)
            .with_context(|| format!("step `{}` printed no JSON report (`{}`)", step.id, command_line(&step.args)))?
    } else {
        serde_json::Value::Null
    };
    Ok(StepRecord { id: step.id.clone(), what: step.what, command: command_line(&step.args), seconds, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let args =
            vec!["attack".to_string(), "mia".into(), "a b.onnx".into(), "it's".into(), "--seed".into(), "7".into()];
        assert_eq!(command_line(&args), r"moat attack mia 'a b.onnx' 'it'\''s' --seed 7");
        assert_eq!(shell_quote(""), "''");
    }
}
