//! `moat attack psml`: PSML against a `moat serve` task endpoint, as a key holder of its HTTP
//! API — fingerprint the zoo, find the spec that triggers the victim, and extract it in three
//! arms (fingerprint-guided, naive, single-model baseline); with `--sweep`, the same attack
//! against the ε-randomised selection policies, with the goodput each ε leaves.
//!
//! The attack itself ([`moat_attack::psml`]) sees only labels from the API. The *harness*
//! (ground truth: which member answered, the victim's labels on the test set, goodput and the
//! members' profiles) uses a second, operator key (`--truth-key`; in `--local` mode one is made)
//! and is reported apart from the attacker's spending.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use moat_attack::psml::fingerprint::{self, nearest};
use moat_attack::psml::{self, Arm, PsmlError, Router, SpecPoint, SpecSearch, Transfer};
use moat_attack::victim::{HttpVictim, Victim, VictimError};
use moat_client::{HttpClient, InferRequest, OipTarget};
use moat_mpc::engine::Reveal;
use moat_nn::data::{Dataset, TrainTest};
use moat_nn::tensor::argmax_f32;
use moat_nn::train::{TrainConfig, evaluate, predict_logits, train};
use moat_nn::zoo::{self, Architecture};
use moat_wire::params;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{Value, json};

use super::DataArgs;
use crate::report::print_json;

/// Arguments of `moat attack psml`.
#[derive(clap::Args, Debug)]
pub struct PsmlArgs {
    /// The `moat serve` service to attack.
    #[arg(long, conflicts_with = "local", required_unless_present = "local")]
    pub url: Option<String>,
    /// The attacker's API key.
    #[arg(long)]
    pub api_key: Option<String>,
    /// An operator key for the harness (ground truth, goodput, profiles) with `--url`; without
    /// it the report has no identification accuracy, fidelity or goodput.
    #[arg(long, requires = "url")]
    pub truth_key: Option<String>,
    /// Serve this model repository on loopback with a fresh `moat serve` (a Fastest task over
    /// all its models, and with `--sweep` one task per policy and ε) and attack it.
    #[arg(long)]
    pub local: Option<PathBuf>,
    /// The task to attack (default: the dataset's name).
    #[arg(long)]
    pub task: Option<String>,
    /// Samples each extraction arm may spend (the key's budget must cover the search and the
    /// three arms; `--local` gives the attacker's key `--key-budget`).
    #[arg(long, default_value_t = 3000)]
    pub budget: u64,
    /// The attacker key's budget in `--local` mode.
    #[arg(long, default_value_t = 200_000)]
    pub key_budget: u64,
    /// The victim model's name for the baseline arm (default in `--local` mode and with
    /// `--truth-key`: the member the guided attack targets, found by the harness).
    #[arg(long)]
    pub victim: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// The attacker's public pool: training samples from this index on (the zoo of
    /// deploy/zoo/build-zoo.sh trains on the first 20000 of MNIST / CIFAR-10).
    #[arg(long, default_value_t = 0)]
    pub pool_offset: usize,
    /// Size of the public pool (surrogate training, fingerprint candidates, transfer set).
    #[arg(long, default_value_t = 3000)]
    pub pool_size: usize,
    /// Test samples for accuracy and fidelity: the dataset's test split, which no zoo member
    /// trained on when the zoo shares the attacker's split (`--split-seed`; build-zoo.sh does).
    #[arg(long, default_value_t = 2000)]
    pub test_size: usize,
    /// Seed of the train/test split of sets without an official one (digits): the zoo's
    /// (deploy/zoo/build-zoo.sh trains every digits member on split 1), so the test split is
    /// held out from every member.
    #[arg(long, default_value_t = 1)]
    pub split_seed: u64,
    /// Surrogate architectures the attacker trains on its pool (repeat the flag).
    #[arg(long = "surrogate", default_values_t = ["mlp:16".to_string(), "mlp:64".to_string(), "mlp:128,64".to_string()])]
    pub surrogates: Vec<String>,
    /// Epochs of surrogate and student training.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Fingerprint set size.
    #[arg(long, default_value_t = 12)]
    pub fingerprints: usize,
    /// Minimum-accuracy grid of the spec search: FROM:TO:STEP (percent).
    #[arg(long, default_value = "0:100:2.5")]
    pub accuracy_grid: String,
    /// Maximum-latency values of the spec search, ms (`none`: unset), comma-separated.
    #[arg(long, default_value = "none")]
    pub latency_grid: String,
    /// Probes per spec against the Fastest task (deterministic: two suffice).
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// Probes per spec against the randomised tasks of the sweep: enough to estimate a trigger
    /// rate below 1 (with 2 probes a rate of 0.8 reads as 1.0 two times in three).
    #[arg(long, default_value_t = 10)]
    pub sweep_repeats: usize,
    /// Hamming distance within which two signatures are the same member.
    #[arg(long, default_value_t = 1)]
    pub tolerance: usize,
    /// The student's architecture.
    #[arg(long, default_value = "mlp:128")]
    pub student: String,
    /// Samples per request in the extraction arms.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Also attack the randomised policies over an ε grid (`--local` only).
    #[arg(long, requires = "local")]
    pub sweep: bool,
    /// ε grid of the sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0])]
    pub epsilons: Vec<f64>,
    /// Benign requests (random specs a member meets) per task for goodput.
    #[arg(long, default_value_t = 200)]
    pub benign: usize,
    /// Seed of the attacker's own randomness (surrogates, naive specs, students) and, in
    /// `--local` mode, of the server's selection (`moat serve --seed`); default: drawn from the
    /// OS and recorded in the report.
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry, recorded in the
    /// output).
    #[arg(skip)]
    pub seed: u64,
    /// Directory for report.json and the plots.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A task endpoint over HTTP as the attacker's key sees it: labels only, samples counted. The
/// task and every model named explicitly are label-only [`HttpVictim`]s; a spec goes into the
/// task's request parameters.
struct HttpRouter {
    client: HttpClient,
    /// The task's name.
    task_name: String,
    task: HttpVictim,
    models: BTreeMap<String, HttpVictim>,
    /// The task's input name (its members' ONNX input).
    input: String,
    shape: Vec<usize>,
    classes: usize,
}

/// A refusal (a budget, a rate limit) ends a phase; anything else is an error.
fn psml_error(e: VictimError) -> PsmlError {
    match e {
        VictimError::Refused(m) => PsmlError::Refused(m),
        other => PsmlError::Service(other.to_string()),
    }
}

impl HttpRouter {
    fn new(
        client: HttpClient,
        task: &str,
        input: &str,
        shape: &[usize],
        max_batch: usize,
        classes: usize,
    ) -> anyhow::Result<Self> {
        let target = OipTarget::Task { name: task.to_string() };
        let task_name = task.to_string();
        let task = HttpVictim::new(client.clone(), target, input, shape.to_vec(), Reveal::Label, classes)?
            .with_max_batch(max_batch);
        let (input, shape, models) = (input.to_string(), shape.to_vec(), BTreeMap::new());
        Ok(Self { client, task_name, task, models, input, shape, classes })
    }
}

impl Router for HttpRouter {
    fn max_batch(&self) -> usize {
        self.task.max_batch()
    }

    fn task_labels(&mut self, spec: SpecPoint, inputs: &[&[f32]]) -> Result<Vec<usize>, PsmlError> {
        let value = |v: Option<f64>| v.map_or(Value::Null, Value::from);
        self.task.set_parameter(params::MIN_ACCURACY, value(spec.min_accuracy));
        self.task.set_parameter(params::MAX_LATENCY_MS, value(spec.max_latency_ms));
        self.task.labels(inputs).map_err(psml_error)
    }

    fn model_labels(&mut self, name: &str, inputs: &[&[f32]]) -> Result<Vec<usize>, PsmlError> {
        if !self.models.contains_key(name) {
            let target = OipTarget::Model { name: name.to_string(), version: None };
            let victim = HttpVictim::new(
                self.client.clone(),
                target,
                &self.input,
                self.shape.clone(),
                Reveal::Label,
                self.classes,
            )
            .map_err(psml_error)?
            .with_max_batch(self.task.max_batch());
            self.models.insert(name.to_string(), victim);
        }
        let victim = self.models.get_mut(name).ok_or_else(|| PsmlError::Invalid(format!("no victim '{name}'")))?;
        victim.labels(inputs).map_err(psml_error)
    }

    fn spent(&self) -> u64 {
        self.task.queries() + self.models.values().map(HttpVictim::queries).sum::<u64>()
    }
}

/// A `moat serve` this command started on loopback; killed on drop.
struct LocalServer {
    child: Child,
    url: String,
    _dir: tempdir::Dir,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The model names of a repository: folders holding a numbered version folder.
fn repository_models(repo: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo).with_context(|| format!("reading {}", repo.display()))? {
        let entry = entry?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let has_version = std::fs::read_dir(&path)?
            .filter_map(Result::ok)
            .any(|v| v.path().is_dir() && v.file_name().to_string_lossy().parse::<u64>().is_ok());
        if has_version {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Task name of the sweep for `policy` at `epsilon`.
fn sweep_task(task: &str, policy: &str, epsilon: f64) -> String {
    format!("{task}-{policy}-e{epsilon}")
}

const SWEEP_POLICIES: [&str; 3] = ["exponential", "permute-and-flip", "noisy-spec"];

/// Lays out a serving copy of `repo` (symbolic links to its models), a task table and a key
/// file, and starts `moat serve` on loopback.
fn start_local(
    args: &PsmlArgs,
    repo: &Path,
    task: &str,
    attacker: &str,
    operator: &str,
) -> anyhow::Result<LocalServer> {
    let models = repository_models(repo)?;
    if models.is_empty() {
        bail!("{} holds no models (expected <model>/<version>/model.onnx)", repo.display());
    }
    let dir = tempdir::Dir::new("moat-psml")?;
    let serve_repo = dir.path().join("repo");
    std::fs::create_dir_all(&serve_repo)?;
    let repo = repo.canonicalize()?;
    for m in &models {
        std::os::unix::fs::symlink(repo.join(m), serve_repo.join(m))?;
    }
    let mut tasks = serde_json::Map::new();
    tasks.insert(task.into(), json!({ "policy": "fastest", "models": models }));
    if args.sweep {
        for policy in SWEEP_POLICIES {
            for &e in &args.epsilons {
                tasks.insert(sweep_task(task, policy, e), json!({ "policy": policy, "epsilon": e, "models": models }));
            }
        }
    }
    std::fs::write(serve_repo.join("tasks.json"), Value::Object(tasks).to_string())?;
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({ attacker: { "name": "attacker", "budget": args.key_budget }, operator: { "name": "harness", "admin": true } })
            .to_string(),
    )?;
    let exe = std::env::current_exe().context("locating the moat binary")?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--repository")
        .arg(&serve_repo)
        .args(["--listen", "127.0.0.1:0", "--secure-addr", "off", "--profile-runs", "50"])
        .arg("--api-keys")
        .arg(&keys)
        .args(["--seed", &args.seed.to_string()]);
    if let Some(d) = &args.data.data_dir {
        command.arg("--data-dir").arg(d);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("starting moat serve")?;
    let stdout = child.stdout.take().context("moat serve's stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(300)).unwrap_or_default();
    let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_string) else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("moat serve on {} did not start (no 'listening on' line within 300 s)", serve_repo.display());
    };
    Ok(LocalServer { child, url, _dir: dir })
}

fn parse_grid(acc: &str, lat: &str) -> anyhow::Result<Vec<SpecPoint>> {
    let parts: Vec<f64> = acc
        .split(':')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--accuracy-grid '{acc}': expected FROM:TO:STEP"))?;
    let [from, to, step] = parts[..] else { bail!("--accuracy-grid '{acc}': expected FROM:TO:STEP") };
    if !(step > 0.0 && from <= to && from >= 0.0 && to <= 100.0) {
        bail!("--accuracy-grid '{acc}': need 0 <= FROM <= TO <= 100 and STEP > 0");
    }
    let n = ((to - from) / step + 1e-9).floor() as usize;
    let accuracies: Vec<f64> = (0..=n).map(|i| from + i as f64 * step).collect();
    let latencies: Vec<Option<f64>> = lat
        .split(',')
        .map(|l| match l.trim() {
            "none" => Ok(None),
            v => v.parse::<f64>().ok().filter(|x| *x > 0.0).map(Some).with_context(|| format!("--latency-grid: '{v}'")),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(psml::spec_grid(&accuracies, &latencies))
}

/// Splits `specs` into those some member meets (by its served profile) and those none does.
fn meetable_specs(specs: &[SpecPoint], members: &[Member]) -> (Vec<SpecPoint>, Vec<SpecPoint>) {
    specs.iter().copied().partition(|s| {
        members.iter().any(|m| {
            m.accuracy.unwrap_or(0.0) >= s.min_accuracy.unwrap_or(0.0)
                && m.latency_ms <= s.max_latency_ms.unwrap_or(f64::INFINITY)
        })
    })
}

fn labels_of(graph: &moat_nn::Graph, inputs: &[f32]) -> anyhow::Result<Vec<usize>> {
    let classes = graph.num_classes();
    Ok(predict_logits(graph, inputs)?.chunks(classes).map(|r| argmax_f32(r).unwrap_or(0)).collect())
}

fn train_arch(arch: &str, data: &Dataset, epochs: usize, seed: u64) -> anyhow::Result<moat_nn::Graph> {
    let arch: Architecture = arch.parse().with_context(|| format!("architecture '{arch}'"))?;
    let graph = zoo::build(&arch, &data.sample_shape, data.classes, seed)?;
    let config = TrainConfig { epochs, seed, ..TrainConfig::default_for(&arch) };
    Ok(train(&graph, data, &config)?.0)
}

/// What the harness knows (operator key): the members, their profiles and signatures.
struct Truth {
    client: HttpClient,
    members: Vec<Member>,
}

#[derive(Clone, Debug, Serialize)]
struct Member {
    name: String,
    accuracy: Option<f64>,
    latency_ms: f64,
    pareto: bool,
    #[serde(skip)]
    signature: Vec<usize>,
}

impl Truth {
    fn new(client: HttpClient, task_models: &[String]) -> anyhow::Result<Self> {
        let stats = client.get_json("/v2/models/stats").context("harness: model statistics")?;
        let mut members = Vec::new();
        for s in stats["model_stats"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            if !task_models.is_empty() && !task_models.contains(&name) {
                continue;
            }
            members.push(Member {
                name,
                accuracy: s["profile"]["accuracy"].as_f64(),
                latency_ms: s["profile"]["latency_ms"].as_f64().unwrap_or(f64::NAN),
                pareto: false,
                signature: Vec::new(),
            });
        }
        let profiles: Vec<moat_serve::policy::Candidate> = members
            .iter()
            .map(|m| moat_serve::policy::Candidate { accuracy: m.accuracy.unwrap_or(0.0), latency_ms: m.latency_ms })
            .collect();
        for i in moat_serve::policy::pareto_front(&profiles) {
            members[i].pareto = true;
        }
        Ok(Self { client, members })
    }

    fn labels(&self, model: &str, inputs: &[Vec<f32>], input: &str, shape: &[usize]) -> anyhow::Result<Vec<usize>> {
        let target = OipTarget::Model { name: model.to_string(), version: None };
        let answers = self
            .client
            .infer_in_batches(&target, inputs, shape, 64, |r| {
                r.with_input_name(input).with_binary_input(true).with_output("label", false, None)
            })
            .with_context(|| format!("harness: labels of {model}"))?;
        let mut out = Vec::with_capacity(inputs.len());
        for (_, response) in answers {
            out.extend(response.labels()?);
        }
        Ok(out)
    }

    fn sign(&mut self, fps: &[Vec<f32>], input: &str, shape: &[usize]) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            let s = self.labels(&self.members[i].name, fps, input, shape)?;
            self.members[i].signature = s;
        }
        Ok(())
    }

    /// The member that answered each probe (nearest true signature).
    fn answered(&self, signature: &[usize]) -> Option<usize> {
        let refs: Vec<Vec<usize>> = self.members.iter().map(|m| m.signature.clone()).collect();
        nearest(signature, &refs).map(|(i, _)| i)
    }

    /// Goodput of `task` under benign traffic: `n` single-sample requests, each with the
    /// accuracy of a random member as its minimum (a spec some member meets).
    fn goodput(
        &self,
        task: &str,
        n: usize,
        sample: &[f32],
        input: &str,
        shape: &[usize],
        seed: u64,
    ) -> anyhow::Result<f64> {
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let accs: Vec<f64> = self.members.iter().filter_map(|m| m.accuracy).collect();
        let before = self.client.get_json(&format!("/v2/tasks/{task}/stats"))?;
        for _ in 0..n {
            let a = accs[rng.random_range(0..accs.len().max(1))];
            let r = InferRequest::new(std::iter::once(1).chain(shape.iter().copied()).collect(), sample.to_vec())?
                .with_input_name(input)
                .with_spec(Some(a), None);
            self.client.infer_task(task, &r).with_context(|| format!("harness: benign request to {task}"))?;
        }
        let after = self.client.get_json(&format!("/v2/tasks/{task}/stats"))?;
        let count = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        let requests = count(&after, "requests") - count(&before, "requests");
        Ok(if requests > 0.0 { (count(&after, "goodput") - count(&before, "goodput")) / requests } else { 0.0 })
    }
}

#[derive(Debug, Serialize)]
struct SearchReport {
    task: String,
    specs: usize,
    probes: usize,
    members_found: usize,
    spent: u64,
    refused: Option<String>,
    target_cluster: usize,
    best_spec: SpecPoint,
    best_trigger_rate: f64,
    trigger_rates: Vec<(SpecPoint, Option<f64>)>,
    /// Share of probes whose cluster is the member that answered (harness).
    identification_accuracy: Option<f64>,
    /// The member the target cluster is (harness).
    victim: Option<String>,
}

#[derive(Debug, Serialize)]
struct ArmPoint {
    budget: u64,
    samples: usize,
    accuracy: f64,
    fidelity: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ArmReport {
    arm: &'static str,
    spent: u64,
    kept_batches: usize,
    rejected_batches: usize,
    refused: Option<String>,
    curve: Vec<ArmPoint>,
}

#[derive(Debug, Serialize)]
struct SweepPoint {
    policy: &'static str,
    epsilon: f64,
    goodput: f64,
    search: SearchReport,
    guided: ArmReport,
}

/// Everything one attack on one task needs.
struct Setup<'a> {
    args: &'a PsmlArgs,
    pool: &'a Dataset,
    test: &'a Dataset,
    fp_idx: &'a [usize],
    specs: &'a [SpecPoint],
    victim_test: Option<&'a [usize]>,
}

impl Setup<'_> {
    fn fps(&self) -> Vec<&[f32]> {
        self.fp_idx.iter().map(|&i| self.pool.sample(i)).collect()
    }

    fn search(
        &self,
        router: &mut HttpRouter,
        truth: Option<&Truth>,
        repeats: usize,
    ) -> anyhow::Result<(SpecSearch, SearchReport)> {
        let fps = self.fps();
        let search = psml::search_specs(router, &fps, self.specs, repeats, self.args.tolerance)?;
        let truth_labels: Vec<usize> = self.fp_idx.iter().map(|&i| self.pool.label(i)).collect();
        let target = search.most_accurate_cluster(&truth_labels).context("the search saw no answer")?;
        let (best, rate) = search.best_spec(target).context("no spec was probed")?;
        let (identification_accuracy, victim) = match truth {
            None => (None, None),
            Some(t) => {
                // Map each cluster to the member answering most of its probes.
                let answered: Vec<Option<usize>> = search.probes.iter().map(|p| t.answered(&p.signature)).collect();
                let mut votes: BTreeMap<(usize, usize), usize> = BTreeMap::new();
                for (p, a) in search.probes.iter().zip(&answered) {
                    if let Some(a) = a {
                        *votes.entry((p.cluster, *a)).or_default() += 1;
                    }
                }
                let majority = |c: usize| {
                    votes.iter().filter(|((k, _), _)| *k == c).max_by_key(|(_, n)| **n).map(|((_, m), _)| *m)
                };
                let right = search
                    .probes
                    .iter()
                    .zip(&answered)
                    .filter(|(p, a)| a.is_some() && majority(p.cluster) == **a)
                    .count();
                let acc = right as f64 / search.probes.len().max(1) as f64;
                (Some(acc), majority(target).map(|m| t.members[m].name.clone()))
            }
        };
        let report = SearchReport {
            task: router.task_name.clone(),
            specs: self.specs.len(),
            probes: search.probes.len(),
            members_found: search.clusters.centroids.len(),
            spent: search.spent,
            refused: search.refused.clone(),
            target_cluster: target,
            best_spec: self.specs[best],
            best_trigger_rate: rate,
            trigger_rates: self.specs.iter().copied().zip(search.trigger_rates(target)).collect(),
            identification_accuracy,
            victim,
        };
        Ok((search, report))
    }

    fn arm(&self, router: &mut HttpRouter, name: &'static str, arm: &Arm) -> anyhow::Result<ArmReport> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.args.seed ^ 0x5eed);
        let pool: Vec<&[f32]> =
            (0..self.pool.len()).filter(|i| !self.fp_idx.contains(i)).map(|i| self.pool.sample(i)).collect();
        let fps = self.fps();
        let t = psml::collect_transfer(router, arm, &pool, &fps, self.args.budget, self.args.batch, &mut rng)?;
        let curve = self.curve(&t, &pool)?;
        Ok(ArmReport {
            arm: name,
            spent: t.spent,
            kept_batches: t.kept_batches,
            rejected_batches: t.rejected_batches,
            refused: t.refused,
            curve,
        })
    }

    /// Students trained on what the arm collected within ¼, ½ and all of the budget.
    fn curve(&self, t: &Transfer, pool: &[&[f32]]) -> anyhow::Result<Vec<ArmPoint>> {
        let mut points = Vec::new();
        for budget in [self.args.budget / 4, self.args.budget / 2, self.args.budget] {
            let n = t.within(budget);
            if n == 0 {
                points.push(ArmPoint { budget, samples: 0, accuracy: 0.0, fidelity: None });
                continue;
            }
            let features: Vec<f32> = t.indices[..n].iter().flat_map(|&i| pool[i].iter().copied()).collect();
            let labels: Vec<u16> = t.labels[..n].iter().map(|&l| l as u16).collect();
            let data = Dataset::new("transfer", self.pool.sample_shape.clone(), self.pool.classes, features, labels)?;
            let student = train_arch(&self.args.student, &data, self.args.epochs, self.args.seed)?;
            let accuracy = f64::from(evaluate(&student, self.test)?);
            let fidelity = match self.victim_test {
                Some(v) => Some(psml::agreement(&labels_of(&student, &self.test.features)?, v)),
                None => None,
            };
            points.push(ArmPoint { budget, samples: n, accuracy, fidelity });
        }
        Ok(points)
    }
}

/// `moat attack psml`.
pub fn run(mut args: PsmlArgs) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    let task = args.task.clone().unwrap_or_else(|| args.data.dataset.clone());
    let specs = parse_grid(&args.accuracy_grid, &args.latency_grid)?;
    if args.fingerprints == 0 || args.repeats == 0 || args.sweep_repeats == 0 || args.budget == 0 || args.batch == 0 {
        bail!("--fingerprints, --repeats, --sweep-repeats, --budget and --batch must be positive");
    }
    if args.surrogates.len() < 2 {
        bail!("nothing to fingerprint with: give at least two --surrogate architectures");
    }
    // The local server, keys and clients.
    let nonce: u64 = rand::random();
    let (attacker_key, operator_key) = (format!("k-attacker-{nonce:016x}"), format!("k-harness-{nonce:016x}"));
    let local = match &args.local {
        Some(repo) => Some(start_local(&args, repo, &task, &attacker_key, &operator_key)?),
        None => None,
    };
    let url = match (&local, &args.url) {
        (Some(l), _) => l.url.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => bail!("give --url or --local"),
    };
    let timeout = Duration::from_secs(60);
    let mut attacker = HttpClient::new(&url)?.with_timeout(timeout);
    let key = if local.is_some() { Some(attacker_key.clone()) } else { args.api_key.clone() };
    if let Some(k) = &key {
        attacker = attacker.with_api_key(k.clone());
    }
    let operator = match (&local, &args.truth_key) {
        (Some(_), _) => Some(operator_key.clone()),
        (None, k) => k.clone(),
    };

    // Bad input before any query is spent: the task must exist and have two members or more.
    let meta = attacker.get_json(&format!("/v2/tasks/{task}")).with_context(|| format!("task '{task}'"))?;
    let ready = meta["parameters"]["ready_models"].as_u64().unwrap_or(0);
    if ready < 2 {
        bail!("nothing to fingerprint: task '{task}' has {ready} ready model(s); PSML needs a zoo of two or more");
    }
    let shape: Vec<usize> = meta["inputs"][0]["shape"]
        .as_array()
        .map(|s| s.iter().skip(1).filter_map(Value::as_u64).map(|d| d as usize).collect())
        .unwrap_or_default();
    let input = meta["inputs"][0]["name"].as_str().unwrap_or("input").to_string();

    // The harness (operator key) knows the members' profiles: specs no member meets are
    // dropped from the grid, and a grid left empty is an error, before the attacker spends a
    // sample. (Without the harness the attacker cannot tell an unmet spec from a met one
    // before asking.)
    let mut truth = match &operator {
        Some(k) => Some(Truth::new(HttpClient::new(&url)?.with_timeout(timeout).with_api_key(k.clone()), &[])?),
        None => None,
    };
    let mut unmeetable = Vec::new();
    let specs = match &truth {
        Some(t) => {
            let (met, unmet) = meetable_specs(&specs, &t.members);
            if met.is_empty() {
                let best = t.members.iter().filter_map(|m| m.accuracy).fold(f64::NAN, f64::max);
                let fastest = t.members.iter().map(|m| m.latency_ms).fold(f64::NAN, f64::min);
                bail!(
                    "no member of task '{task}' meets any spec of the grid (--accuracy-grid {}, --latency-grid {}): \
                     the most accurate member has {best:.2} %, the fastest {fastest:.3} ms; nothing was queried",
                    args.accuracy_grid,
                    args.latency_grid
                );
            }
            unmeetable = unmet;
            met
        }
        None => specs,
    };

    // The attacker's data: a public pool and a test set.
    let TrainTest { train: all, test } = args.data.load(args.split_seed)?;
    if all.sample_shape != shape {
        bail!(
            "task '{task}' takes inputs of shape {shape:?}, dataset {} has {:?}",
            args.data.dataset,
            all.sample_shape
        );
    }
    let end = (args.pool_offset + args.pool_size).min(all.len());
    if args.pool_offset >= end {
        bail!("--pool-offset {} is past the {} training samples", args.pool_offset, all.len());
    }
    let pool = all.subset("pool", &(args.pool_offset..end).collect::<Vec<_>>())?;
    let test = test.subset("test", &(0..args.test_size.min(test.len())).collect::<Vec<_>>())?;

    // Offline: surrogates and fingerprints.
    let mut preds = Vec::new();
    let mut surrogate_acc = Vec::new();
    for (i, arch) in args.surrogates.iter().enumerate() {
        let g = train_arch(arch, &pool, args.epochs, args.seed + 1 + i as u64)?;
        surrogate_acc.push((arch.clone(), f64::from(evaluate(&g, &test)?)));
        preds.push(labels_of(&g, &pool.features)?);
    }
    let fp_idx = fingerprint::select_fingerprints(&preds, args.fingerprints)?;
    let fp_inputs: Vec<Vec<f32>> = fp_idx.iter().map(|&i| pool.sample(i).to_vec()).collect();

    // The harness.
    if let Some(t) = truth.as_mut() {
        t.sign(&fp_inputs, &input, &shape)?;
    }

    let max_batch = meta[params::MAX_BATCH_SIZE].as_u64().map_or(64, |b| b as usize).max(1);
    let mut router = HttpRouter::new(attacker, &task, &input, &shape, max_batch, pool.classes)?;
    let mut setup = Setup { args: &args, pool: &pool, test: &test, fp_idx: &fp_idx, specs: &specs, victim_test: None };
    let (search, search_report) = setup.search(&mut router, truth.as_ref(), args.repeats)?;
    let victim = args.victim.clone().or(search_report.victim.clone());
    let victim_test = match (&truth, &victim) {
        (Some(t), Some(v)) => {
            Some(t.labels(v, &(0..test.len()).map(|i| test.sample(i).to_vec()).collect::<Vec<_>>(), &input, &shape)?)
        }
        _ => None,
    };
    setup.victim_test = victim_test.as_deref();
    let rate = search_report.best_trigger_rate;
    let guided_arm = Arm::Guided {
        spec: search_report.best_spec,
        verify: rate < 1.0,
        target: search_report.target_cluster,
        clusters: search.clusters.clone(),
    };
    let mut arms = vec![setup.arm(&mut router, "guided", &guided_arm)?];
    arms.push(setup.arm(&mut router, "naive", &Arm::Naive { specs: specs.clone() })?);
    if let Some(v) = &victim {
        arms.push(setup.arm(&mut router, "baseline", &Arm::Baseline { model: v.clone() })?);
    }

    // The ε sweep.
    let mut sweep = Vec::new();
    if args.sweep {
        let benign_sample = test.sample(0).to_vec();
        for policy in SWEEP_POLICIES {
            for &e in &args.epsilons {
                let name = sweep_task(&task, policy, e);
                let goodput = match &truth {
                    Some(t) => t.goodput(&name, args.benign, &benign_sample, &input, &shape, args.seed)?,
                    None => f64::NAN,
                };
                let mut r = HttpRouter::new(router.client.clone(), &name, &input, &shape, max_batch, pool.classes)?;
                let (s, report) = setup.search(&mut r, truth.as_ref(), args.sweep_repeats)?;
                let arm = Arm::Guided {
                    spec: report.best_spec,
                    verify: report.best_trigger_rate < 1.0,
                    target: report.target_cluster,
                    clusters: s.clusters.clone(),
                };
                let guided = setup.arm(&mut r, "guided", &arm)?;
                tracing::info!(policy, epsilon = e, goodput, "sweep point done");
                sweep.push(SweepPoint { policy, epsilon: e, goodput, search: report, guided });
            }
        }
    }
    if let Some(t) = truth.as_mut() {
        t.members.retain(|m| !m.signature.is_empty());
    }
    let defence = defence_summary(&sweep, &arms[0]);

    let report = json!({
        "url": if local.is_some() { Value::Null } else { json!(url) },
        "local_repository": args.local,
        "task": task,
        "dataset": args.data.dataset,
        "pool": { "offset": args.pool_offset, "size": pool.len() },
        "test_samples": test.len(),
        "seed": args.seed,
        "members": truth.as_ref().map(|t| &t.members),
        "surrogates": surrogate_acc,
        "fingerprints": { "count": fp_idx.len(), "pool_indices": fp_idx, "min_surrogate_separation": fingerprint::min_separation(&preds, &fp_idx) },
        "unmeetable_specs_dropped": unmeetable,
        "search": search_report,
        "victim": victim,
        "student": args.student,
        "budget_per_arm": args.budget,
        "arms": arms,
        "key_spent_total": router.spent() + sweep.iter().map(|p| p.search.spent + p.guided.spent).sum::<u64>(),
        "sweep": sweep,
        "defence": defence,
    });
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
        super::psml_plot::write_plots(dir, &report)?;
    }
    if args.json {
        print_json(&report)?;
    } else {
        print_summary(&report);
    }
    drop(local);
    Ok(())
}

/// The student's accuracy and fidelity at the arm's full budget.
fn final_point(arm: &ArmReport) -> (f64, Option<f64>) {
    arm.curve.last().map_or((0.0, None), |p| (p.accuracy, p.fidelity))
}

/// Per policy, the smallest ε of the grid whose goodput is at least 80 % (the ε where goodput
/// crosses 80 %, at the grid's resolution) and the guided attack's accuracy and fidelity there
/// against the undefended (Fastest) guided attack, in percentage points.
fn defence_summary(sweep: &[SweepPoint], undefended: &ArmReport) -> Value {
    let (acc0, fid0) = final_point(undefended);
    let mut out = serde_json::Map::new();
    for policy in SWEEP_POLICIES {
        let mut points: Vec<&SweepPoint> = sweep.iter().filter(|p| p.policy == policy).collect();
        points.sort_by(|a, b| a.epsilon.total_cmp(&b.epsilon));
        let Some(p) = points.iter().find(|p| p.goodput >= 0.8) else {
            if !points.is_empty() {
                out.insert(
                    policy.into(),
                    json!({ "epsilon_80": Value::Null, "note": "no ε of the grid reaches 80 % goodput" }),
                );
            }
            continue;
        };
        let (acc, fid) = final_point(&p.guided);
        out.insert(
            policy.into(),
            json!({
                "epsilon_80": p.epsilon,
                "goodput": p.goodput,
                "trigger_rate": p.search.best_trigger_rate,
                "rejected_batches": p.guided.rejected_batches,
                "accuracy": acc,
                "fidelity": fid,
                "accuracy_drop_points": (acc - acc0) * 100.0,
                "fidelity_drop_points": fid.zip(fid0).map(|(f, f0)| (f - f0) * 100.0),
            }),
        );
    }
    json!({ "undefended_accuracy": acc0, "undefended_fidelity": fid0, "paper_drop_points": { "accuracy": -9.8, "fidelity": -4.8 }, "at_80_percent_goodput": out })
}

fn print_summary(r: &Value) {
    let s = &r["search"];
    println!(
        "task {}: {} members found with {} probes ({} samples); identification accuracy {}; victim {} triggered at rate {:.2} by spec {}",
        r["task"].as_str().unwrap_or("?"),
        s["members_found"],
        s["probes"],
        s["spent"],
        s["identification_accuracy"].as_f64().map_or("n/a".into(), |a| format!("{:.1} %", a * 100.0)),
        s["victim"].as_str().unwrap_or("(unknown)"),
        s["best_trigger_rate"].as_f64().unwrap_or(0.0),
        s["best_spec"],
    );
    for arm in r["arms"].as_array().into_iter().flatten() {
        let last = &arm["curve"][2];
        println!(
            "  {:<8} spent {:>6}: student accuracy {:.2} %, fidelity {}",
            arm["arm"].as_str().unwrap_or("?"),
            arm["spent"],
            last["accuracy"].as_f64().unwrap_or(0.0) * 100.0,
            last["fidelity"].as_f64().map_or("n/a".into(), |f| format!("{:.2} %", f * 100.0)),
        );
    }
    for p in r["sweep"].as_array().into_iter().flatten() {
        let last = &p["guided"]["curve"][2];
        println!(
            "  {:<16} ε={:<5} goodput {:.3}  identification {}  trigger rate {:.2}  rejected {}  guided accuracy {:.2} %  fidelity {}",
            p["policy"].as_str().unwrap_or("?"),
            p["epsilon"],
            p["goodput"].as_f64().unwrap_or(f64::NAN),
            p["search"]["identification_accuracy"].as_f64().map_or("n/a".into(), |a| format!("{:.3}", a)),
            p["search"]["best_trigger_rate"].as_f64().unwrap_or(f64::NAN),
            p["guided"]["rejected_batches"],
            last["accuracy"].as_f64().unwrap_or(0.0) * 100.0,
            last["fidelity"].as_f64().map_or("n/a".into(), |f| format!("{:.2} %", f * 100.0)),
        );
    }
    for (policy, d) in r["defence"]["at_80_percent_goodput"].as_object().into_iter().flatten() {
        println!(
            "  {policy}: goodput >= 80 % from ε={}: accuracy {:+.1} points, fidelity {} points (paper: -9.8 / -4.8)",
            d["epsilon_80"],
            d["accuracy_drop_points"].as_f64().unwrap_or(f64::NAN),
            d["fidelity_drop_points"].as_f64().map_or("n/a".into(), |f| format!("{f:+.1}")),
        );
    }
}
