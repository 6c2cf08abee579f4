//! `moat eval`: the scorecard — every attack moat implements against every defense, one report.
//!
//! The run trains (or loads) its victims, then plays each result end to end with the commands
//! that exist for it, and reads their JSON reports:
//!
//! | area | steps | what it measures |
//! |---|---|---|
//! | `secure` | `moat secure server` + `moat secure client --compare-with`, `moat bench secure` | parity with the fixed-point executor over real two-party sessions; time, bytes, per layer |
//! | `seek` | `moat attack seek` undefended, `--harden`, `--budget` | queries per parameter, error, fidelity of the copy |
//! | `mia` | `moat train` (an overfit victim), `moat attack mia`; `moat train-defender` and `moat attack mia --guard memguard\|siguard` | every membership attack on float and two-party outputs; the score and label attacks against MemGuard (plaintext) and SIGuard (the two-party protocol's guard) |
//! | `psml` | `moat train` × zoo, `moat attack psml --local --sweep` | identification, extraction arms, ε-selection with goodput |
//! | `fusion` | `moat attack fusion` | detection of each cheating server vs analytic, false alarms |
//!
//! Each step is a child process of this binary, so the report records, for every figure, the
//! exact command that reproduces it, with the seed and the commit of the build (see
//! [`report`]). The embedded preset (no `--data-dir`) uses the UCI digits set built into the
//! binary; `--data-dir` runs MNIST (secure inference, SEEK, PSML, Fusion) and CIFAR-10
//! (membership inference). `--quick` shrinks the sample counts.
//!
//! The victim of the secure, SEEK and Fusion areas is `--victim` when given; with `--data-dir`
//! and no `--victim` it is the repository's [`DATASET_VICTIM`] when that file exists from the
//! working directory (the LeNet-5 the BENCHMARKS.md sections measure, so the scorecard's figures
//! are theirs), and otherwise a LeNet-5 the run trains; the report's notes say which.

mod html;
mod plots;
pub mod report;
mod runner;
mod scorecard;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use self::report::Report;
use self::runner::{Step, StepRecord};
use crate::progress;

/// The areas of the scorecard (`--only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    /// Secure inference: parity, time, bytes.
    Secure,
    /// SEEK model extraction by share tampering.
    Seek,
    /// Membership inference.
    Mia,
    /// PSML zoo fingerprinting and extraction, ε-randomised selection.
    Psml,
    /// Fusion mix-and-check against cheating servers.
    Fusion,
}

impl Area {
    /// Every area, in report order.
    pub const ALL: [Area; 5] = [Area::Secure, Area::Seek, Area::Mia, Area::Psml, Area::Fusion];
}

/// Arguments of `moat eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Small sample counts (the embedded default finishes in well under two minutes).
    #[arg(long)]
    pub quick: bool,
    /// Only these areas (comma separated): secure, seek, mia, psml, fusion.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Area>,
    /// Directory of the real datasets (a parent with mnist/ and cifar10/, e.g. ../shared/data):
    /// run the MNIST / CIFAR-10 version instead of the embedded digits.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory for the models, the steps' outputs and logs, report.json and report.html.
    #[arg(long, default_value = "out/eval")]
    pub out: PathBuf,
    /// Seed of every step (default: drawn from the OS and recorded in the report).
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// Deadline of one step, in seconds (a step still running then is killed and the run fails).
    #[arg(long, default_value_t = 3600)]
    pub step_timeout_s: u64,
    /// Print report.json on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// The victim of the secure, SEEK and Fusion areas (an ONNX file of the preset's task);
    /// default: with --data-dir, models/lenet5-mnist.onnx when it exists, else one the run trains.
    #[arg(long, value_name = "MODEL")]
    pub victim: Option<PathBuf>,
}

/// The MNIST model BENCHMARKS.md measures, relative to the repository's root: the data preset's
/// default victim when the run starts there.
pub const DATASET_VICTIM: &str = "models/lenet5-mnist.onnx";

/// What the run is: the datasets and sizes every step uses.
#[derive(Clone, Debug)]
pub(crate) struct Preset {
    /// `digits` (embedded) or the real-data version.
    pub real: Option<PathBuf>,
    /// Small counts.
    pub quick: bool,
    /// The seed of every step.
    pub seed: u64,
}

impl Preset {
    /// The preset's name in the report.
    pub fn name(&self) -> &'static str {
        match (self.real.is_some(), self.quick) {
            (false, true) => "embedded-quick",
            (false, false) => "embedded",
            (true, true) => "datasets-quick",
            (true, false) => "datasets",
        }
    }

    /// `--dataset NAME [--data-dir DIR]` for one of the real sets (or digits).
    fn dataset(&self, real_name: &str) -> Vec<String> {
        match &self.real {
            None => strings(&["--dataset", "digits"]),
            Some(dir) => vec!["--dataset".into(), real_name.into(), "--data-dir".into(), dir.display().to_string()],
        }
    }

    fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Runs the steps of a run in order, with one progress bar, and keeps their records.
struct Driver {
    exe: PathBuf,
    logs: PathBuf,
    deadline: Duration,
    bar: indicatif::ProgressBar,
    records: Vec<StepRecord>,
}

impl Driver {
    fn step(&mut self, step: Step) -> anyhow::Result<&serde_json::Value> {
        self.bar.set_message(step.what);
        let record = runner::run(&self.exe, &step, &self.logs, self.deadline)?;
        tracing::info!(step = %record.id, seconds = record.seconds, "step done");
        self.bar.inc(1);
        self.records.push(record);
        Ok(&self.records[self.records.len() - 1].output)
    }
}

/// A `moat secure server` child serving one session, killed when dropped.
struct BackgroundServer {
    child: Child,
    addr: String,
    command: String,
}

impl BackgroundServer {
    /// Starts the server on an ephemeral port and waits (bounded) for its address.
    fn start(exe: &Path, args: Vec<String>, log: &Path, deadline: Duration) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting moat secure server")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(deadline) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("moat secure server printed no address within {} s (log: {})", deadline.as_secs(), log.display());
            }
        };
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("moat secure server did not start (log: {}): {line:?}", log.display());
        };
        Ok(Self { addr: addr.to_string(), child, command: runner::command_line(&args) })
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the victim of the secure, SEEK and Fusion areas comes from.
enum VictimSource {
    /// An ONNX file: `--victim`, or [`DATASET_VICTIM`] found by the data preset.
    File(PathBuf),
    /// Trained by the run (step `victim`).
    Train,
}

impl VictimSource {
    fn choose(given: Option<&Path>, p: &Preset) -> anyhow::Result<Self> {
        if let Some(file) = given {
            if !file.is_file() {
                bail!("--victim {}: no such file", file.display());
            }
            return Ok(Self::File(file.to_path_buf()));
        }
        let default = Path::new(DATASET_VICTIM);
        Ok(if p.real.is_some() && default.is_file() { Self::File(default.to_path_buf()) } else { Self::Train })
    }

    /// The victim's path, training it first when the run must; and the report's note on it.
    fn resolve(&self, d: &mut Driver, p: &Preset, models: &Path) -> anyhow::Result<(PathBuf, String)> {
        match self {
            Self::File(file) => {
                use sha2::Digest;
                let bytes = std::fs::read(file).with_context(|| format!("reading the victim {}", file.display()))?;
                let digest = moat_wire::commitment::to_hex(&sha2::Sha256::digest(&bytes));
                Ok((
                    file.clone(),
                    format!("victim of secure, seek and fusion: {} (loaded, SHA-256 {digest})", file.display()),
                ))
            }
            Self::Train => {
                let model = train_victim(d, p, models)?;
                let note = if p.real.is_some() {
                    format!(
                        "victim of secure, seek and fusion: trained by the run ({DATASET_VICTIM} not found here; --victim FILE loads one)"
                    )
                } else {
                    "victim of secure, seek and fusion: trained by the run on the embedded digits".into()
                };
                Ok((model, note))
            }
        }
    }
}

/// Trains the victim model of the secure, SEEK and Fusion areas.
fn train_victim(d: &mut Driver, p: &Preset, models: &Path) -> anyhow::Result<PathBuf> {
    let model = models.join("victim.onnx");
    let (arch, epochs) = if p.real.is_some() { ("lenet5", p.pick("1", "2")) } else { ("mlp:128,64", "30") };
    let mut args = strings(&["train", "--arch", arch, "--epochs", epochs, "--seed"]);
    args.push(p.seed.to_string());
    args.extend(p.dataset("mnist"));
    if p.real.is_some() && p.quick {
        args.extend(strings(&["--train-limit", "10000"]));
    }
    args.extend(strings(&["--quiet", "-o"]));
    args.push(path(&model));
    d.step(Step::files("victim", "training the victim model", args))?;
    Ok(model)
}

fn secure(d: &mut Driver, p: &Preset, model: &Path, out: &Path) -> anyhow::Result<Vec<String>> {
    let count = if p.real.is_some() { p.pick(10, 50) } else { p.pick(20, 100) };
    let mut server_args = strings(&["secure", "server"]);
    server_args.extend([path(model), "--listen".into(), "127.0.0.1:0".into(), "--sessions".into(), "1".into()]);
    let server = BackgroundServer::start(&d.exe, server_args, &out.join("logs/secure-server.log"), d.deadline)?;
    let mut client = strings(&["secure", "client", "--connect", &server.addr, "--count"]);
    client.push(count.to_string());
    client.extend(p.dataset("mnist"));
    client.extend(["--compare-with".into(), path(model), "--json".into()]);
    d.step(Step::json("secure", "secure inference against a server process", client))?;
    let server_command = server.command.clone();
    drop(server);
    let mut bench = strings(&["bench", "secure", "--model"]);
    bench.extend([path(model), "--queries".into(), p.pick("2", "4").into(), "--seed".into(), p.seed.to_string()]);
    bench.push("--json".into());
    d.step(Step::json("bench", "benchmarking secure inference (per layer)", bench))?;
    Ok(vec![format!("{server_command} &  # the server of step `secure` (its port is printed)")])
}

fn seek(d: &mut Driver, p: &Preset, model: &Path, out: &Path) -> anyhow::Result<()> {
    let base = |extra: &[&str], dir: &str| {
        let mut args = strings(&["attack", "seek"]);
        args.push(path(model));
        args.extend(p.dataset("mnist"));
        args.extend(["--seed".into(), p.seed.to_string(), "--out".into(), path(&out.join(dir))]);
        if p.real.is_some() {
            args.extend(strings(&["--eval-samples", p.pick("1000", "10000")]));
        }
        args.extend(strings(extra));
        args.push("--json".into());
        args
    };
    d.step(Step::json("seek", "SEEK against the undefended server", base(&[], "seek")))?;
    d.step(Step::json(
        "seek-hardened",
        "SEEK against a noise-hardened server",
        base(&["--harden", "0.02"], "seek-hardened"),
    ))?;
    let budget = if p.real.is_some() { "100000" } else { "20000" };
    d.step(Step::json(
        "seek-budget",
        "SEEK against a per-key query budget",
        base(&["--budget", budget], "seek-budget"),
    ))?;
    Ok(())
}

fn mia(d: &mut Driver, p: &Preset, models: &Path, out: &Path) -> anyhow::Result<()> {
    let victim = models.join("mia-victim.onnx");
    let mut train = strings(&["train"]);
    if p.real.is_some() {
        // BENCHMARKS.md's CIFAR-10 victim: LeNet-5 on the first 2,500 training images.
        train.extend(strings(&["--arch", "lenet5", "--train-limit", "2500", "--test-limit", "2000", "--epochs"]));
        train.push(p.pick("20", "40").into());
    } else {
        train.extend(strings(&["--arch", "mlp:256", "--train-limit", "200", "--epochs", "150"]));
    }
    train.extend(p.dataset("cifar10"));
    train.extend(["--augment".into(), "none".into(), "--seed".into(), p.seed.to_string(), "--quiet".into()]);
    train.extend(["-o".into(), path(&victim)]);
    d.step(Step::files("mia-victim", "training an overfit victim on a member subset", train))?;
    let mut attack = strings(&["attack", "mia"]);
    attack.push(path(&victim));
    attack.extend(p.dataset("cifar10"));
    attack.extend(strings(&["--attacks", "all", "--outputs", "float,simulated", "--members"]));
    attack.push(if p.real.is_some() { p.pick("500", "1000") } else { "150" }.into());
    attack.push("--references".into());
    attack.push(if p.real.is_some() { p.pick("2", "8") } else { p.pick("4", "8") }.into());
    if p.real.is_some() && !p.quick {
        // The rest of BENCHMARKS.md's CIFAR-10 command: its table is this step's.
        attack.extend(strings(&["--non-members", "1000", "--population", "1000", "--reference-epochs", "20"]));
    }
    attack.extend(["--seed".into(), p.seed.to_string(), "--out".into(), path(&out.join("mia")), "--json".into()]);
    d.step(Step::json("mia", "membership inference on float and two-party outputs", attack))?;
    // The guards: the server trains its defender on its members against held-out test samples
    // (a fixed seed from the run's, so that the report's figures can be reproduced — a real
    // server draws it from the OS), then the score attacks, the reference attack RMIA and the
    // label-only ones run against the guarded answers beside the unguarded baseline.
    for (guard, input, outputs) in [("memguard", "sorted", "float"), ("siguard", "probabilities", "fixed")] {
        let defender = models.join(format!("mia-defender-{input}.json"));
        let mut train = strings(&["train-defender"]);
        train.push(path(&victim));
        if let Some(dir) = &p.real {
            train.extend(["--data-dir".into(), path(dir)]);
        }
        train.extend(["--input".into(), input.into(), "--insecure-seed".into(), p.seed.to_string()]);
        train.extend(["--out".into(), path(&defender)]);
        d.step(Step::files(format!("mia-defender-{input}"), "training the server's membership defender", train))?;
        let mut attack = strings(&["attack", "mia"]);
        attack.push(path(&victim));
        attack.extend(p.dataset("cifar10"));
        attack.extend(strings(&["--attacks", GUARDED_ATTACKS, "--outputs", outputs, "--guard", guard, "--defender"]));
        attack.push(path(&defender));
        attack.push("--members".into());
        attack.push(if p.real.is_some() { p.pick("500", "1000") } else { "150" }.into());
        attack.push("--references".into());
        attack.push(if p.real.is_some() { "2" } else { "4" }.into());
        attack.extend(["--seed".into(), p.seed.to_string(), "--out".into(), path(&out.join(format!("mia-{guard}")))]);
        attack.push("--json".into());
        let what = if guard == "memguard" {
            "membership inference against MemGuard"
        } else {
            "membership inference against SIGuard"
        };
        d.step(Step::json(format!("mia-{guard}"), what, attack))?;
    }
    Ok(())
}

/// The attacks run against the guards: the score thresholds, RMIA (the strongest reference
/// attack on these victims in BENCHMARKS.md, at a few reference models) and the label-only ones.
const GUARDED_ATTACKS: &str = "loss,confidence,entropy,mentr,rmia,gap,robustness";

/// The zoo of the PSML area (the recipes of deploy/zoo/build-zoo.sh).
fn zoo(p: &Preset) -> Vec<(&'static str, &'static str)> {
    if p.real.is_some() {
        vec![
            ("mlp:16", "2"),
            ("mlp:64", "2"),
            ("mlp:256,64", "2"),
            ("lenet5:x0.5", "1"),
            ("lenet5", "1"),
            ("lenet5:x2", "1"),
        ]
    } else {
        vec![
            ("mlp:8", "30"),
            ("mlp:16", "30"),
            ("mlp:32", "30"),
            ("mlp:64", "30"),
            ("mlp:64,32", "30"),
            ("mlp:128,64", "30"),
        ]
    }
}

fn psml(d: &mut Driver, p: &Preset, out: &Path) -> anyhow::Result<()> {
    let repo = out.join("zoo");
    let task = if p.real.is_some() { "mnist" } else { "digits" };
    for (i, (arch, epochs)) in zoo(p).into_iter().enumerate() {
        let slug = arch.replace(':', "-").replace(',', "_");
        let dir = repo.join(&slug);
        std::fs::create_dir_all(dir.join("1")).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("config.json"), format!("{{ \"task\": \"{task}\" }}\n"))
            .with_context(|| format!("writing {}", dir.join("config.json").display()))?;
        // digits has no official split: every member trains on split seed 1 and its first 700
        // training samples, so the attacker's pool and test split are held out from all of them.
        let model_seed = if p.real.is_some() { p.seed.wrapping_add(i as u64) } else { 1 };
        let mut args = strings(&["train", "--arch", arch, "--epochs", epochs, "--seed"]);
        args.push(model_seed.to_string());
        args.extend(p.dataset("mnist"));
        args.extend(strings(if p.real.is_some() {
            &["--train-limit", "20000", "--test-limit", "5000"]
        } else {
            &["--train-limit", "700"]
        }));
        args.extend(["--quiet".into(), "-o".into(), path(&dir.join("1/model.onnx"))]);
        d.step(Step::files(format!("zoo-{slug}"), "training the PSML zoo", args))?;
    }
    let mut attack = strings(&["attack", "psml", "--local"]);
    attack.push(path(&repo));
    attack.extend(p.dataset("mnist"));
    if p.real.is_some() {
        attack.extend(strings(&["--pool-offset", "20000", "--pool-size", "3000", "--test-size", "2000"]));
    } else {
        attack.extend(strings(&[
            "--pool-offset",
            "700",
            "--pool-size",
            "737",
            "--test-size",
            "360",
            "--budget",
            "600",
        ]));
    }
    attack.extend(["--seed".into(), p.seed.to_string(), "--sweep".into()]);
    for e in p.pick(&["0.5", "1", "5"][..], &["0.1", "0.5", "1", "2", "5", "10"][..]) {
        attack.extend(["--epsilons".into(), (*e).into()]);
    }
    attack.extend(["--out".into(), path(&out.join("psml")), "--json".into()]);
    d.step(Step::json("psml", "PSML: fingerprinting the zoo, extraction, ε sweep", attack))?;
    Ok(())
}

fn fusion(d: &mut Driver, p: &Preset, model: &Path, out: &Path) -> anyhow::Result<()> {
    let mut args = strings(&["attack", "fusion"]);
    args.push(path(model));
    args.extend(p.dataset("mnist"));
    args.extend(strings(&["--samples", if p.real.is_some() { "4000" } else { "360" }, "--batches"]));
    args.push(p.pick("1000", "5000").into());
    args.extend(["--seed".into(), p.seed.to_string(), "--out".into(), path(&out.join("fusion")), "--json".into()]);
    d.step(Step::json("fusion", "Fusion against cheating servers", args))?;
    Ok(())
}

/// How many steps a run has (for the progress bar).
fn step_count(areas: &[Area], p: &Preset, victim: &VictimSource) -> u64 {
    let mut n = 0;
    if needs_victim(areas) && matches!(victim, VictimSource::Train) {
        n += 1;
    }
    for a in areas {
        n += match a {
            Area::Secure => 2,
            Area::Seek => 3,
            Area::Mia => 6,
            Area::Psml => zoo(p).len() as u64 + 1,
            Area::Fusion => 1,
        };
    }
    n
}

/// Whether one of `areas` attacks or serves the victim model.
fn needs_victim(areas: &[Area]) -> bool {
    areas.iter().any(|a| matches!(a, Area::Secure | Area::Seek | Area::Fusion))
}

/// `moat eval`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let seed = super::experiment_seed(args.seed_arg)?;
    let mut areas = if args.only.is_empty() { Area::ALL.to_vec() } else { args.only.clone() };
    areas.sort();
    areas.dedup();
    if let Some(dir) = &args.data_dir {
        for set in ["mnist", "cifar10"] {
            if !dir.join(set).is_dir() {
                bail!(
                    "--data-dir {} has no {set}/ folder (it should be the parent of mnist/ and cifar10/)",
                    dir.display()
                );
            }
        }
    }
    let preset = Preset { real: args.data_dir.clone(), quick: args.quick, seed };
    let victim_source = VictimSource::choose(args.victim.as_deref(), &preset)?;
    let models = args.out.join("models");
    let logs = args.out.join("logs");
    for dir in [&models, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let exe = std::env::current_exe().context("locating the moat binary")?;
    let bar = progress::bar(step_count(&areas, &preset, &victim_source), "moat eval", args.json);
    let mut driver = Driver { exe, logs, deadline: Duration::from_secs(args.step_timeout_s), bar, records: Vec::new() };
    let started = Instant::now();
    let mut notes = Vec::new();

    let model = if needs_victim(&areas) {
        let (model, note) = victim_source.resolve(&mut driver, &preset, &models)?;
        notes.push(note);
        Some(model)
    } else {
        None
    };
    for area in &areas {
        let victim = || model.as_deref().context("the victim model (of secure, seek and fusion)");
        match area {
            Area::Secure => notes.extend(secure(&mut driver, &preset, victim()?, &args.out)?),
            Area::Seek => seek(&mut driver, &preset, victim()?, &args.out)?,
            Area::Fusion => fusion(&mut driver, &preset, victim()?, &args.out)?,
            Area::Mia => mia(&mut driver, &preset, &models, &args.out)?,
            Area::Psml => psml(&mut driver, &preset, &args.out)?,
        }
    }
    driver.bar.finish_and_clear();

    let report = Report::new(&preset, &areas, driver.records, notes, started.elapsed().as_secs_f64())?;
    let json_path = args.out.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let html_path = args.out.join("report.html");
    std::fs::write(&html_path, html::render(&report, &args.out)?)
        .with_context(|| format!("writing {}", html_path.display()))?;
    if args.json {
        crate::report::print_json(&report)?;
    } else {
        print!("{}", report.scorecard.render_text());
        println!(
            "\n{} steps in {:.1} s (seed {seed}, commit {}); report: {} and {}",
            report.steps.len(),
            report.seconds,
            report.commit,
            json_path.display(),
            html_path.display()
        );
    }
    Ok(())
}
