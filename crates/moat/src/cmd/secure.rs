//! `moat secure server|client`: two-party secure inference between two processes over TCP.
//!
//! The server holds the model and never sees the input; the client holds the input and learns
//! only the label (or the logits, if the server allows it and the client asks). See
//! `moat_mpc::engine::real` for the protocol.
//!
//! ## Bounded under abuse
//!
//! The server is a thin front of moat-serve's session port
//! ([`moat_serve::secure::SecureListener::spawn_direct`]: no tokens, one model). It runs at most `--max-sessions` sessions at once, one thread each. A connection
//! beyond the cap gets one `moat-session/1` refusal frame (`{"accepted": false, "reason":
//! "busy", "error": …}`, the session port's `HandshakeReply`) instead of the protocol's
//! hello, and is closed at once by the acceptor (no thread, no lingering descriptor); `moat
//! secure client` reports it as "server busy, retry". A connected client must send its first
//! protocol message within `--handshake-timeout-ms` of the hello (each read of it, however
//! slowly it trickles), else its slot is freed; from then on every wait is bounded by
//! `--timeout-ms`. Accept errors (e.g. out of file descriptors) are logged and backed off,
//! never fatal. So an idle-connection flood holds at most `--max-sessions` descriptors for at
//! most the handshake timeout, and a real client is served once a slot frees.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use moat_client::{ClientError, SecureSession};
use moat_mpc::Seed;
use moat_mpc::engine::layer::{RELU_SUBPHASE, TRUNCATION_SUBPHASE};
use moat_mpc::engine::{ClientSession, Hardening, Honest, Reveal, Revealed, ServeOptions, ServerModel};
use moat_mpc::ot::ferret::EXTENSION_PHASE;
use moat_mpc::transport::shaped::{NetworkModel, Shaped};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig};
use moat_nn::QuantizedGraph;
use moat_serve::secure::{DirectConfig, SecureListener};
use serde::Serialize;

use super::{DataArgs, FixedArgs, SiGuardArgs, load_model};
use crate::report::print_json;

/// Arguments of `moat secure`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub role: Role,
}

/// Which party to run.
#[derive(clap::Subcommand, Debug)]
pub enum Role {
    /// The model owner: serves secure-inference sessions on a TCP port.
    Server(ServerArgs),
    /// The input owner: connects, runs private inferences, prints what it learned.
    Client(ClientArgs),
}

/// Arguments of `moat secure server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// The ONNX model to serve.
    pub model: PathBuf,
    /// Address to listen on (port 0 picks a free one; the first line printed is the address).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: String,
    /// BFV ring degree: 4096 (default) or 8192.
    #[arg(long, default_value_t = 4096)]
    pub he_degree: usize,
    /// Serve this many sessions, then exit (0: until killed).
    #[arg(long, default_value_t = 0)]
    pub sessions: u64,
    /// Bound on every wait for the client, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
    /// Write the opening of the model commitment every hello carries (its nonce, drawn from the
    /// OS at start) to this file, readable by its owner only, for an auditor (`moat audit`).
    #[arg(long, value_name = "FILE")]
    pub commitment_opening: Option<PathBuf>,
    /// Sessions running at once; a connection beyond gets a `busy` refusal and is closed.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,
    /// Deadline for a new client's first protocol message after the hello, in milliseconds
    /// (an idle connection is closed then and frees its session slot).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout_ms: u64,
    /// INSECURE: fix the server's randomness (masks, OT, noise) to this public number, for
    /// reproducible experiments. Whoever knows it predicts the server's masks. Without it every
    /// session draws a 256-bit seed from a generator keyed by the operating system.
    #[arg(long)]
    pub insecure_seed: Option<u64>,
    /// Hardening against share-tampering clients (SEEK): fresh uniform noise of this
    /// half-width (real units) on the server's share of every activation input and logit.
    #[arg(long, default_value_t = 0.0)]
    pub harden: f64,
    /// Queries per session (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_queries: u64,
    /// Run the sessions' OT as Ferret silent OT (≈ 0.2 B per random OT instead of IKNP's 16;
    /// ≈ 330 MB of OT pools per session and party). The client follows the server's hello.
    #[arg(long)]
    pub silent_ot: bool,
    /// Do not offer the pool-first plan: by default a client that does not tamper with its
    /// shares runs each ReLU that only a max pool reads after the pool (on a quarter of the
    /// values behind a 3×3 stride-2 pool; the same result). Never offered with `--harden`.
    #[arg(long)]
    pub no_pool_first: bool,
    /// The secure softmax behind a client's request for probabilities (`spline`: `e^d` by a
    /// 32-knot linear spline, the most exact and the fewest flights; `exp`: CrypTen's
    /// `(1 + d/2^9)^(2^9)`; `relu`: `ReLU(d + 4)/Σ`; see `moat_mpc::ring_ops::softmax`),
    /// announced in the hello; SIGuard (`--defender`) computes with it too.
    #[arg(long, default_value = "spline")]
    pub softmax: moat_mpc::ring_ops::Softmax,
    /// Guard every session's probabilities by SIGuard with this trained defender (`moat
    /// train-defender --input probabilities`; the server's secret): the sessions then reveal
    /// at most probabilities, computed by SIGuard on the shared logits (the defender's shape
    /// and SIGuard's parameters are announced in the hello). Replaces --harden.
    #[arg(long, value_name = "FILE")]
    pub defender: Option<PathBuf>,
    /// SIGuard's parameters (with `--defender`).
    #[command(flatten)]
    pub siguard: SiGuardArgs,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub fixed: FixedArgs,
}

/// An emulated link (both parties must shape: each sleeps for its own sends and the latency
/// of its incoming flights; see `moat_mpc::transport::shaped`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ShapeArgs {
    /// Emulate a link of this bandwidth, Mbit/s per direction (with --rtt-ms).
    #[arg(long)]
    pub bandwidth_mbps: Option<f64>,
    /// Emulated round-trip time, milliseconds.
    #[arg(long)]
    pub rtt_ms: Option<f64>,
}

impl ShapeArgs {
    /// The link model, if any part of it is set (a missing part is unlimited / zero).
    pub fn model(&self) -> anyhow::Result<Option<NetworkModel>> {
        if self.bandwidth_mbps.is_none() && self.rtt_ms.is_none() {
            return Ok(None);
        }
        let mbps = self.bandwidth_mbps.unwrap_or(f64::INFINITY);
        let rtt = self.rtt_ms.unwrap_or(0.0);
        if mbps.is_nan() || mbps <= 0.0 || !rtt.is_finite() || rtt < 0.0 {
            bail!("--bandwidth-mbps must be positive and --rtt-ms non-negative and finite");
        }
        Ok(Some(NetworkModel { bandwidth_bits_per_sec: mbps * 1e6, latency: Duration::from_secs_f64(rtt / 2e3) }))
    }

    /// The same flags for a child process.
    fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = self.bandwidth_mbps {
            out.extend(["--bandwidth-mbps".to_string(), b.to_string()]);
        }
        if let Some(r) = self.rtt_ms {
            out.extend(["--rtt-ms".to_string(), r.to_string()]);
        }
        out
    }
}

/// The server guard `moat bench secure --guard` measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchGuard {
    /// The unguarded queries only.
    None,
    /// The unguarded queries, then as many under SIGuard (see [`GuardCost`]).
    Siguard,
}

/// Named links of the evaluation.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkPreset {
    /// No shaping (loopback).
    Loopback,
    /// 1 Gbit/s, 0.5 ms round trip.
    Lan,
    /// 100 Mbit/s, 40 ms round trip.
    Wan,
}

/// Arguments of `moat secure client`.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub connect: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Query the first COUNT samples of the test split (from --offset).
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// First test sample to query.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Ask for the logits instead of the label only.
    #[arg(long)]
    pub logits: bool,
    /// Verification only (a real client does not have the model): compare every answer with
    /// the plaintext fixed-point executor of this model.
    #[arg(long)]
    pub compare_with: Option<PathBuf>,
    /// Bound on every wait for the server, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
    /// INSECURE: fix the client's keys, masks and OT choices to this public number, for
    /// reproducible experiments. Whoever knows it can decrypt the client's input from the
    /// traffic. Without it the session seed is 256 bits from the operating system.
    #[arg(long)]
    pub insecure_seed: Option<u64>,
    /// Split seed of datasets without an official test split (public; not session randomness).
    #[arg(long, default_value_t = 1)]
    pub split_seed: u64,
    #[command(flatten)]
    pub fixed: FixedArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `moat secure`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.role {
        Role::Server(a) => server(a),
        Role::Client(a) => client(a),
    }
}

fn channel_config(timeout_ms: u64) -> ChannelConfig {
    ChannelConfig::default()
        .with_timeout(Duration::from_millis(timeout_ms))
        .with_connect_timeout(Duration::from_millis(timeout_ms))
}

fn server(args: ServerArgs) -> anyhow::Result<()> {
    let graph = load_model(&args.model)?;
    let quantized = Arc::new(QuantizedGraph::new(&graph, args.fixed.fixed_point()?)?);
    let started = Instant::now();
    let commitment = commit_to(&args, graph.name())?;
    let model = Arc::new(
        ServerModel::new(quantized, args.he_degree)
            .context("preparing the model's HE layers")?
            .with_commitment(commitment),
    );
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "model prepared");
    let guard = siguard_factory(&args, &model)?;
    let listener = TcpListener::bind(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    if !(args.harden.is_finite() && args.harden >= 0.0) {
        bail!("--harden must be a non-negative amplitude, got {}", args.harden);
    }
    if args.insecure_seed.is_some() {
        tracing::warn!("--insecure-seed: the sessions' randomness is fixed and NOT private");
    }
    let config = DirectConfig {
        max_sessions: usize::try_from(args.max_sessions).unwrap_or(usize::MAX),
        handshake_timeout: Duration::from_millis(args.handshake_timeout_ms),
        session_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        sessions: (args.sessions > 0).then_some(args.sessions),
        options: ServeOptions {
            max_queries: (args.max_queries > 0).then_some(args.max_queries),
            hardening: Hardening::uniform(args.harden),
            silent_ot: args.silent_ot,
            softmax: args.softmax,
            pool_first: !args.no_pool_first,
            ..ServeOptions::default()
        },
        link: args.shape.model()?,
        insecure_seed: args.insecure_seed,
    };
    let port = SecureListener::spawn_direct_guarded(listener, model, config, guard)?;
    println!("listening on {}", port.local_addr());
    port.wait();
    Ok(())
}

/// SIGuard for every session when `--defender` is given, checked (readable, trained on the raw
/// probabilities of a model of this width, valid parameters) before the port opens.
fn siguard_factory(args: &ServerArgs, model: &ServerModel) -> anyhow::Result<Option<moat_mpc::engine::GuardFactory>> {
    use moat_attack::defense::{DefenderFile, DefenderInput};
    use moat_mpc::ring_ops::SiGuard;
    let Some(path) = &args.defender else {
        if args.siguard != SiGuardArgs::default() {
            bail!("the --siguard-* options set SIGuard's parameters; they need --defender");
        }
        return Ok(None);
    };
    if args.harden != 0.0 {
        bail!("--defender and --harden cannot be combined (SIGuard replaces the hardening guard)");
    }
    let file = DefenderFile::load(path).with_context(|| format!("reading the defender {}", path.display()))?;
    file.validate().with_context(|| format!("the defender {}", path.display()))?;
    if file.meta.input != DefenderInput::Probabilities {
        bail!("SIGuard needs a defender on the raw probabilities (moat train-defender --input probabilities)");
    }
    let config = args.siguard.config(args.softmax)?;
    let (outer, inner) = (config.outer, config.inner);
    let quantized = model.model();
    let classes = moat_nn::tensor::numel(quantized.graph().output_shape());
    // Its HE layers built and encoded once here, as the network's are at load.
    let guard = SiGuard::new(file.weights().to_defender(quantized.fixed())?, config, classes)
        .and_then(SiGuard::with_prepared_layers)
        .with_context(|| format!("SIGuard with the defender {}", path.display()))?;
    tracing::info!(outer, inner, classes, "SIGuard on every session's probabilities");
    Ok(Some(std::sync::Arc::new(move || Box::new(guard.clone()))))
}

/// The commitment to the served model file (as `moat serve` makes one per loaded version: a
/// fresh OS nonce, [`moat_wire::commitment::commit`]), its opening written where
/// `--commitment-opening` says.
fn commit_to(args: &ServerArgs, name: &str) -> anyhow::Result<String> {
    use moat_wire::commitment::{CommitmentOpening, NONCE_BYTES, commit, to_hex};
    let file = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let mut nonce = [0u8; NONCE_BYTES];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut nonce)
        .map_err(|e| anyhow::anyhow!("drawing the commitment nonce from the OS: {e}"))?;
    let commitment = commit(&nonce, &file);
    if let Some(path) = &args.commitment_opening {
        let opening = CommitmentOpening {
            model_name: name.to_string(),
            model_version: "1".into(),
            commitment: commitment.clone(),
            nonce: to_hex(&nonce),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(path).with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut out, &serde_json::to_vec_pretty(&opening)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(%commitment, "model commitment (carried by every hello)");
    Ok(commitment)
}

/// What a client run found.
#[derive(Debug, Serialize)]
pub struct ClientReport {
    /// Server address.
    pub server: String,
    /// Dataset queried.
    pub dataset: String,
    /// Samples queried.
    pub queries: usize,
    /// Labels learned, in order.
    pub labels: Vec<usize>,
    /// Fraction equal to the true labels.
    pub accuracy: f64,
    /// Seconds for the session setup (OT base OTs, HE keys).
    pub setup_seconds: f64,
    /// Mean seconds per query.
    pub seconds_per_query: f64,
    /// Bytes both ways per query (client's view), setup excluded.
    pub bytes_per_query: f64,
    /// Bytes of the setup.
    pub setup_bytes: u64,
    /// With `--compare-with`: answers equal to the plaintext fixed-point executor's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agree_with_fixed_point: Option<usize>,
    /// Whether the session's randomness was private (false under `--insecure-seed`).
    pub private: bool,
    /// The `--insecure-seed` that fixed the session's randomness, if any (then it is not private).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_seed: Option<u64>,
}

fn client(args: ClientArgs) -> anyhow::Result<()> {
    let test = args.data.load(args.split_seed)?.test;
    if args.offset + args.count > test.len() {
        bail!("--offset {} + --count {} exceeds the {} test samples", args.offset, args.count, test.len());
    }
    let reference = match &args.compare_with {
        Some(path) => Some(QuantizedGraph::new(&load_model(path)?, args.fixed.fixed_point()?)?),
        None => None,
    };
    let seed = match args.insecure_seed {
        Some(n) => Seed::insecure_from_u64(n),
        None => Seed::from_os()?,
    };
    let mut session = match SecureSession::connect_direct(&args.connect, channel_config(args.timeout_ms), seed) {
        Err(ClientError::Refused { reason, message }) => {
            bail!("{} refused the session ({reason}): {message}", args.connect)
        }
        connected => connected.with_context(|| format!("secure session with {}", args.connect))?,
    };
    let setup = session.stats();
    let (setup_seconds, setup_bytes) = (setup.setup_seconds, setup.setup_bytes);
    let fixed = session.protocol().architecture().fixed();
    let reveal = if args.logits { Reveal::Logits } else { Reveal::Label };
    let progress = crate::progress::bar(args.count as u64, "secure inference", args.json);
    let (mut labels, mut correct, mut agree) = (Vec::new(), 0, 0);
    let queries_started = Instant::now();
    for i in args.offset..args.offset + args.count {
        let answer = session.infer_with(test.sample(i), reveal, &mut Honest).with_context(|| format!("query {i}"))?;
        let label = answer.label(fixed).context("empty answer")?;
        correct += usize::from(label == test.label(i));
        if let Some(q) = &reference {
            let expected = q.logits_encoded(test.sample(i))?;
            agree += usize::from(match &answer {
                Revealed::Label(l) => Some(*l) == moat_nn::exec::argmax_ring(fixed, &expected),
                Revealed::Logits(v) => *v == expected,
                Revealed::Probabilities(_) => moat_nn::exec::argmax_ring(fixed, &expected) == Some(label),
            });
        }
        labels.push(label);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let query_seconds = queries_started.elapsed().as_secs_f64();
    let stats = session.close()?;
    let bytes = stats.bytes_sent + stats.bytes_received - setup_bytes;
    let n = args.count.max(1) as f64;
    let report = ClientReport {
        server: args.connect.clone(),
        dataset: args.data.dataset.clone(),
        queries: args.count,
        labels,
        accuracy: correct as f64 / n,
        setup_seconds,
        seconds_per_query: query_seconds / n,
        bytes_per_query: bytes as f64 / n,
        setup_bytes,
        agree_with_fixed_point: reference.as_ref().map(|_| agree),
        private: args.insecure_seed.is_none(),
        insecure_seed: args.insecure_seed,
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "{} private inferences on {}: accuracy {:.2} %, {:.3} s and {:.2} MiB per query (setup {:.2} s, {:.2} MiB)",
        report.queries,
        report.dataset,
        100.0 * report.accuracy,
        report.seconds_per_query,
        report.bytes_per_query / (1024.0 * 1024.0),
        report.setup_seconds,
        report.setup_bytes as f64 / (1024.0 * 1024.0)
    );
    if let Some(agree) = report.agree_with_fixed_point {
        println!("answers equal to the plaintext fixed-point executor: {agree}/{}", report.queries);
    }
    if let Some(n) = report.insecure_seed {
        println!("NOT PRIVATE: --insecure-seed {n} fixed the client's keys; this traffic can be decrypted");
    }
    Ok(())
}

/// Arguments of `moat bench secure`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Network: lenet5-mnist, resnet20-cifar10, resnet32-cifar10, resnet18-cifar10,
    /// resnet34-cifar10, mobilenetv2-cifar10, shufflenet-cifar10, resnet50-imagenet,
    /// squeezenet-imagenet (random weights unless a trained model is in `models/`), or any ONNX
    /// file with --model.
    #[arg(long, default_value = "lenet5-mnist")]
    pub net: String,
    /// Benchmark this ONNX model instead of a named network.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Private inferences to time (after one session setup).
    #[arg(long, default_value_t = 1)]
    pub queries: usize,
    /// BFV ring degree: 4096 or 8192.
    #[arg(long, default_value_t = 4096)]
    pub he_degree: usize,
    /// Bound on every wait, in milliseconds.
    #[arg(long, default_value_t = 600_000)]
    pub timeout_ms: u64,
    /// Seed of the weights (for random networks) and the inputs (default: drawn from the OS and
    /// recorded in the report); both parties' session randomness comes from the operating
    /// system (it does not change the costs).
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry).
    #[arg(skip)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The OT of the non-linear layers: `ferret` (silent OT) or `iknp`.
    #[arg(long, value_enum, default_value = "ferret")]
    pub ot: super::bench::OtKind,
    /// Run the server with `--no-pool-first`: every ReLU before its max pool, as a tampering
    /// client's session does (for before/after comparisons).
    #[arg(long)]
    pub no_pool_first: bool,
    /// An emulated link for both processes: lan = 1 Gbit/s and 0.5 ms RTT, wan = 100 Mbit/s
    /// and 40 ms RTT (overridden by --bandwidth-mbps / --rtt-ms).
    #[arg(long, value_enum, default_value = "loopback")]
    pub network: NetworkPreset,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// `siguard`: also time the same number of queries revealing probabilities under SIGuard
    /// (the server child runs `--defender`), in the same session as the unguarded label
    /// queries, and report what SIGuard adds; `none` (default): the unguarded queries only.
    #[arg(long, value_enum, default_value = "none")]
    pub guard: BenchGuard,
    /// The defender for `--guard siguard` (default: a stand-in trained briefly on random
    /// probability vectors — SIGuard's cost does not depend on the weights: fixed
    /// iterations, no data-dependent control flow).
    #[arg(long, value_name = "FILE")]
    pub defender: Option<PathBuf>,
    /// SIGuard's parameters for `--guard siguard` (`--siguard-g1-only`: the paper's public
    /// prototype's variant, whose reported 1.1 s overhead is of it).
    #[command(flatten)]
    pub siguard: SiGuardArgs,
    /// The server's secure softmax (`moat secure server --softmax`), SIGuard's too.
    #[arg(long, default_value = "spline")]
    pub softmax: moat_mpc::ring_ops::Softmax,
}

impl BenchArgs {
    fn link(&self) -> ShapeArgs {
        let (b, r) = match self.network {
            NetworkPreset::Loopback => (None, None),
            NetworkPreset::Lan => (Some(1000.0), Some(0.5)),
            NetworkPreset::Wan => (Some(100.0), Some(40.0)),
        };
        ShapeArgs { bandwidth_mbps: self.shape.bandwidth_mbps.or(b), rtt_ms: self.shape.rtt_ms.or(r) }
    }
}

/// A named benchmark network: architecture, input shape, classes, and the trained model file
/// used when present.
struct Net {
    arch: &'static str,
    input: &'static [usize],
    classes: usize,
    trained: Option<&'static str>,
}

fn net(name: &str) -> anyhow::Result<Net> {
    let (arch, input, classes, trained): (_, &'static [usize], _, _) = match name {
        "lenet5-mnist" => ("lenet5", &[1, 28, 28], 10, Some("models/lenet5-mnist.onnx")),
        "resnet20-cifar10" => ("resnet20", &[3, 32, 32], 10, Some("models/resnet20-cifar10.onnx")),
        "resnet32-cifar10" => ("resnet32", &[3, 32, 32], 10, None),
        "resnet18-cifar10" => ("resnet18", &[3, 32, 32], 10, None),
        "resnet34-cifar10" => ("resnet34", &[3, 32, 32], 10, None),
        "mobilenetv2-cifar10" => ("mobilenetv2", &[3, 32, 32], 10, None),
        "shufflenet-cifar10" => ("shufflenet", &[3, 32, 32], 10, None),
        "resnet50-imagenet" => ("resnet50", &[3, 224, 224], 1000, None),
        "squeezenet-imagenet" => ("squeezenet", &[3, 224, 224], 1000, None),
        other => bail!(
            "unknown network '{other}' (lenet5-mnist, resnet20-cifar10, resnet32-cifar10, resnet18-cifar10, resnet34-cifar10, mobilenetv2-cifar10, shufflenet-cifar10, resnet50-imagenet, squeezenet-imagenet)"
        ),
    };
    Ok(Net { arch, input, classes, trained })
}

/// Same-machine reference figures (both parties on loopback, 2 threads each, ℓ = 37, f = 12):
/// `(system, seconds, MiB)`.
fn references(name: &str) -> &'static [(&'static str, f64, f64)] {
    match name {
        "lenet5-mnist" => &[("Cheetah", 0.3, 7.0)],
        "resnet50-imagenet" => {
            &[("Cheetah", 111.0, 1815.0), ("Cheetah exact ReLU", 173.7, 2060.0), ("CrypTFlow2 SCI_HE", 388.0, 30208.0)]
        }
        "squeezenet-imagenet" => {
            &[("Cheetah", 37.0, 426.0), ("Cheetah exact ReLU", 58.8, 482.0), ("CrypTFlow2 SCI_HE", 72.0, 6348.8)]
        }
        "resnet18-cifar10" => &[("target (issue 4)", 30.0, 1000.0 * 1000.0 * 1000.0 / (1024.0 * 1024.0))],
        _ => &[],
    }
}

/// One row of the per-layer table.
#[derive(Debug, Serialize)]
pub struct LayerCost {
    /// Node (or `setup` / `output`).
    pub layer: String,
    /// Op kind.
    pub op: String,
    /// Wall seconds (mean over the queries).
    pub seconds: f64,
    /// Bytes client → server per query.
    pub bytes_up: f64,
    /// Bytes server → client per query.
    pub bytes_down: f64,
    /// Client's outgoing flights per query.
    pub rounds: f64,
    /// Whether the node truncated its output (a linear layer at once, or a ReLU after a
    /// deferred linear layer).
    pub truncated: bool,
    /// Of `bytes_up + bytes_down`, the bytes of the node's truncation (both directions).
    pub bytes_truncation: f64,
    /// Of `bytes_up + bytes_down`, the bytes of the ReLU a max pool applies to its output
    /// under the pool-first plan, its truncation not included (0 for other nodes).
    pub bytes_relu: f64,
}

impl LayerCost {
    /// The op kind this row's bytes (other than its truncation) are reported under.
    fn kind(&self) -> &'static str {
        match self.op.as_str() {
            "Conv2d" | "Dense" => "HE linear",
            "Relu" | "Clip" | "LeakyRelu" => "ReLU",
            "MaxPool" => "max pool",
            "HardSigmoid" | "HardSwish" | "Sigmoid" | "Tanh" => "approx. activation",
            "Output" => "output",
            _ => "other",
        }
    }
}

/// The benchmark result.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Network name.
    pub net: String,
    /// Whether the weights are trained (a model file) or random.
    pub weights: String,
    /// Queries timed.
    pub queries: usize,
    /// BFV ring degree.
    pub he_degree: usize,
    /// ReLU is exact (no bits dropped) and truncation is faithful.
    pub exact: bool,
    /// Linear layers whose truncation is deferred past their ReLU (the fused rescale).
    pub deferred_truncations: usize,
    /// Linear layers in the (folded) graph.
    pub linear_layers: usize,
    /// ReLUs run after the max pool that reads them (the session ran the pool-first plan;
    /// 0 with `--no-pool-first`).
    pub relus_after_pool: usize,
    /// Server model preparation (HE weight encoding), seconds, in the server process.
    pub setup_seconds: f64,
    /// Session setup bytes (OT base OTs, HE public key).
    pub setup_bytes: u64,
    /// Mean wall seconds per query.
    pub seconds_per_query: f64,
    /// Mean bytes (both directions) per query.
    pub bytes_per_query: f64,
    /// The OT of the non-linear layers.
    pub ot: super::bench::OtKind,
    /// Emulated link bandwidth, Mbit/s (none: loopback).
    pub bandwidth_mbps: Option<f64>,
    /// Emulated link round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Per-layer costs.
    pub layers: Vec<LayerCost>,
    /// Bytes per query of silent OT's main rounds run during the queries (Ferret refilling its
    /// pools; counted apart from the layers whose protocols drew the OTs; 0 with IKNP).
    pub ot_extension_bytes: f64,
    /// Bytes per query by op kind (both directions): HE linear layers, ReLU comparisons and
    /// multiplexers, truncations, max pool, output, OT extension; sums to `bytes_per_query`.
    pub bytes_by_kind: BTreeMap<String, f64>,
    /// Reference systems: `(name, seconds, MiB, time ratio moat/ref, bytes ratio moat/ref)`.
    pub references: Vec<(String, f64, f64, f64, f64)>,
    /// Seed.
    pub seed: u64,
    /// With `--guard siguard`: the guarded queries and what SIGuard adds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siguard: Option<GuardCost>,
}

/// SIGuard's queries against the unguarded ones of the same session (`moat bench secure
/// --guard siguard`). A guarded query is the network, then SIGuard on the shared logits
/// (softmax, 6 × 49 steps of the defender's forward and backward pass, the validators, the
/// final softmax) revealing probabilities; an unguarded one is the network, then the argmax
/// revealing the label.
#[derive(Debug, Serialize)]
pub struct GuardCost {
    /// SIGuard's rounds and steps per round.
    pub steps: [u32; 2],
    /// The defender used (`stand-in`: trained on random vectors).
    pub defender: String,
    /// SIGuard's secure softmax (`exp`, `spline`, `relu`).
    pub softmax: String,
    /// Whether SIGuard applied the defender term g₁ only (the prototype's variant).
    pub g1_only: bool,
    /// SIGuard's initial distortion weight c₃.
    pub c3: f64,
    /// SIGuard's initial step length.
    pub lr: f64,
    /// Mean wall seconds per guarded query.
    pub seconds_per_query: f64,
    /// Mean bytes (both directions) per guarded query.
    pub bytes_per_query: f64,
    /// Client's outgoing flights per guarded query.
    pub rounds_per_query: f64,
    /// Client's outgoing flights per unguarded query.
    pub unguarded_rounds_per_query: f64,
    /// Seconds SIGuard adds, relative to the unguarded query (the target: ≤ 0.33).
    pub added_time: f64,
    /// Bytes SIGuard adds, relative to the unguarded query.
    pub added_bytes: f64,
}

/// `moat bench secure`: a server child process and this process as the client, on loopback.
pub fn bench(mut args: BenchArgs) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    let (graph, weights) = match &args.model {
        Some(path) => (load_model(path)?, format!("trained ({})", path.display())),
        None => {
            let spec = net(&args.net)?;
            match spec.trained.map(PathBuf::from).filter(|p| p.exists()) {
                Some(path) => (load_model(&path)?, format!("trained ({})", path.display())),
                None => {
                    (moat_nn::zoo::build(&spec.arch.parse()?, spec.input, spec.classes, args.seed)?, "random".into())
                }
            }
        }
    };
    let dir = std::env::temp_dir().join(format!("moat-bench-secure-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model_path = dir.join("model.onnx");
    moat_nn::onnx::save_onnx(&graph, &model_path)?;
    let guard_args = match args.guard {
        BenchGuard::None => Vec::new(),
        BenchGuard::Siguard => {
            // The parameters checked before a stand-in defender is trained.
            args.siguard.config(args.softmax)?;
            let path = match &args.defender {
                Some(path) => path.clone(),
                None => stand_in_defender(&graph, &dir, args.seed)?,
            };
            let mut guard = vec!["--defender".to_string(), path.display().to_string()];
            guard.extend(args.siguard.to_args());
            guard.extend(["--softmax".into(), args.softmax.to_string()]);
            guard
        }
    };

    let exe = std::env::current_exe().context("locating the moat binary")?;
    let mut child = std::process::Command::new(exe)
        .args(["secure", "server"])
        .arg(&model_path)
        .args(["--listen", "127.0.0.1:0", "--sessions", "1"])
        .args(["--he-degree", &args.he_degree.to_string(), "--timeout-ms", &args.timeout_ms.to_string()])
        .args(if args.ot == super::bench::OtKind::Ferret { &["--silent-ot"][..] } else { &[][..] })
        .args(if args.no_pool_first { &["--no-pool-first"][..] } else { &[][..] })
        .args(args.link().to_args())
        .args(&guard_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting the server process")?;
    let result = bench_client(&args, &graph, &weights, &mut child);
    if result.is_err() {
        child.kill().ok();
    }
    let status = child.wait().context("waiting for the server process")?;
    std::fs::remove_dir_all(&dir).ok();
    let report = result?;
    if !status.success() {
        bail!("the server process failed: {status}");
    }
    if args.json {
        return print_json(&report);
    }
    print_bench(&report);
    Ok(())
}

/// A SIGuard defender for `graph`'s classes trained for 3 epochs on random probability vectors
/// (its weights do not change SIGuard's cost), written to `dir`.
fn stand_in_defender(graph: &moat_nn::Graph, dir: &std::path::Path, seed: u64) -> anyhow::Result<PathBuf> {
    use moat_attack::defense::DefenderFile;
    use moat_attack::defense::defender::TrainSpec;
    let classes = moat_nn::tensor::numel(graph.output_shape());
    let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(seed);
    let mut vectors = |n: usize, spread: f64| -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                let z: Vec<f64> = (0..classes).map(|_| spread * rand::Rng::random_range(&mut rng, -1.0..1.0)).collect();
                moat_attack::victim::softmax(&z)
            })
            .collect()
    };
    let (members, others) = (vectors(64, 8.0), vectors(64, 2.0));
    let spec = TrainSpec {
        model: graph.name().to_string(),
        dataset: "random vectors (bench stand-in)".into(),
        hidden: [128, 64],
        input: moat_attack::defense::DefenderInput::Probabilities,
        epochs: 3,
        insecure_seed: Some(seed),
    };
    let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(seed ^ 1);
    let defender = DefenderFile::train(spec, &members, &others, &mut rng)?;
    let path = dir.join("defender.json");
    defender.save(&path)?;
    Ok(path)
}

fn bench_client(
    args: &BenchArgs,
    graph: &moat_nn::Graph,
    weights: &str,
    child: &mut std::process::Child,
) -> anyhow::Result<BenchReport> {
    use std::io::BufRead;
    let stdout = child.stdout.take().context("server stdout")?;
    let started = Instant::now();
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).context("reading the server's address")?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let addr = line.trim().strip_prefix("listening on ").context("the server did not print its address")?.to_string();
    let tcp = TcpChannel::connect(&addr, channel_config(args.timeout_ms))?;
    let mut ch: Box<dyn Channel> = match args.link().model()? {
        Some(m) => Box::new(Shaped::new(tcp, m)),
        None => Box::new(tcp),
    };
    let ch = &mut *ch;
    let mut session = ClientSession::connect(ch, Seed::from_os()?)?;
    let setup_bytes = ch.stats().total().bytes_total();
    let before = ch.stats().snapshot();
    let n = moat_nn::tensor::numel(graph.input_shape());
    let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(args.seed);
    let queries = args.queries.max(1);
    let progress = crate::progress::bar(queries as u64, "private inference", args.json);
    let mut per_node: Vec<(String, String, String, bool, f64)> = Vec::new();
    let timed = Instant::now();
    for _ in 0..queries {
        let x: Vec<f32> = (0..n).map(|_| rand::Rng::random_range(&mut rng, -1.0f32..1.0)).collect();
        session.infer(ch, &x, Reveal::Label, &mut Honest)?;
        for (i, t) in session.timings().iter().enumerate() {
            if i >= per_node.len() {
                per_node.push((t.name.clone(), t.phase.clone(), t.op.clone(), t.truncated, 0.0));
            }
            per_node[i].4 += t.seconds;
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let seconds = timed.elapsed().as_secs_f64();
    let after = ch.stats().snapshot();
    let guarded = if args.guard == BenchGuard::Siguard {
        let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(args.seed);
        let progress = crate::progress::bar(queries as u64, "private inference + SIGuard", args.json);
        let timed = Instant::now();
        for _ in 0..queries {
            let x: Vec<f32> = (0..n).map(|_| rand::Rng::random_range(&mut rng, -1.0f32..1.0)).collect();
            session.infer(ch, &x, Reveal::Probabilities, &mut Honest)?;
            progress.inc(1);
        }
        progress.finish_and_clear();
        Some((timed.elapsed().as_secs_f64(), ch.stats().snapshot().total.since(&after.total)))
    } else {
        None
    };
    let folded = session.architecture().graph();
    let deferred_truncations = moat_mpc::engine::RescalePlan::fused(folded).deferred();
    let relus_after_pool =
        if session.hello().pool_first { moat_mpc::engine::RescalePlan::pool_first(folded).moved_relus() } else { 0 };
    let linear_layers = folded.nodes().iter().filter(|n| n.op.is_linear()).count();
    session.close(ch)?;
    let q = queries as f64;
    let layers = per_node
        .iter()
        .map(|(name, phase, op, truncated, secs)| {
            // The node's phase and its sub-phases (the truncation's).
            let c = after.sum_prefix(phase).since(&before.sum_prefix(phase));
            let counted = |p: &str| after.sum_prefix(p).since(&before.sum_prefix(p)).bytes_total() as f64;
            let relu_phase = format!("{phase}{RELU_SUBPHASE}");
            // A pool's moved ReLU truncates in its own sub-phase ("{phase}/relu/trunc").
            let relu_trunc = counted(&format!("{relu_phase}{TRUNCATION_SUBPHASE}"));
            let trunc = counted(&format!("{phase}{TRUNCATION_SUBPHASE}")) + relu_trunc;
            LayerCost {
                layer: name.clone(),
                op: op.clone(),
                seconds: secs / q,
                bytes_up: c.bytes_sent as f64 / q,
                bytes_down: c.bytes_received as f64 / q,
                rounds: c.rounds as f64 / q,
                truncated: *truncated,
                bytes_truncation: trunc / q,
                bytes_relu: (counted(&relu_phase) - relu_trunc) / q,
            }
        })
        .collect::<Vec<_>>();
    let total = after.total.since(&before.total);
    let extension = after.sum_prefix(EXTENSION_PHASE).since(&before.sum_prefix(EXTENSION_PHASE));
    let ot_extension_bytes = extension.bytes_total() as f64 / q;
    let mut bytes_by_kind = BTreeMap::new();
    for l in &layers {
        *bytes_by_kind.entry(l.kind().to_string()).or_insert(0.0) +=
            l.bytes_up + l.bytes_down - l.bytes_truncation - l.bytes_relu;
        *bytes_by_kind.entry("ReLU".to_string()).or_insert(0.0) += l.bytes_relu;
        *bytes_by_kind.entry("truncation".to_string()).or_insert(0.0) += l.bytes_truncation;
    }
    bytes_by_kind.insert("OT extension".to_string(), ot_extension_bytes);
    // Traffic outside the nodes' phases (the request frames that start each query).
    let attributed: f64 = bytes_by_kind.values().sum();
    *bytes_by_kind.entry("other".to_string()).or_insert(0.0) += total.bytes_total() as f64 / q - attributed;
    let bytes_per_query = total.bytes_total() as f64 / q;
    let seconds_per_query = seconds / q;
    let mib = bytes_per_query / (1024.0 * 1024.0);
    let references = references(&args.net)
        .iter()
        .map(|(name, s, m)| (name.to_string(), *s, *m, seconds_per_query / s, mib / m))
        .collect();
    let siguard = guarded.map(|(secs, c)| -> anyhow::Result<GuardCost> {
        let config = args.siguard.config(args.softmax)?;
        let bytes = c.bytes_total() as f64 / q;
        Ok(GuardCost {
            steps: [config.outer, config.inner],
            defender: args.defender.as_ref().map_or_else(|| "stand-in".into(), |p| p.display().to_string()),
            softmax: config.softmax.to_string(),
            g1_only: config.g1_only,
            c3: config.c3,
            lr: config.lr,
            seconds_per_query: secs / q,
            bytes_per_query: bytes,
            rounds_per_query: c.rounds as f64 / q,
            unguarded_rounds_per_query: total.rounds as f64 / q,
            added_time: (secs / q - seconds_per_query) / seconds_per_query,
            added_bytes: (bytes - bytes_per_query) / bytes_per_query,
        })
    });
    let siguard = siguard.transpose()?;
    Ok(BenchReport {
        net: args.model.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| args.net.clone()),
        weights: weights.to_string(),
        queries,
        he_degree: args.he_degree,
        exact: true,
        deferred_truncations,
        linear_layers,
        relus_after_pool,
        setup_seconds,
        setup_bytes,
        seconds_per_query,
        bytes_per_query,
        ot: args.ot,
        bandwidth_mbps: args.link().bandwidth_mbps,
        rtt_ms: args.link().rtt_ms,
        layers,
        ot_extension_bytes,
        bytes_by_kind,
        references,
        seed: args.seed,
        siguard,
    })
}

fn print_bench(r: &BenchReport) {
    let mut table = crate::report::Table::new(&["layer", "op", "ms", "KiB up", "KiB down", "rounds"]);
    for l in &r.layers {
        table.row(vec![
            l.layer.clone(),
            if l.truncated { format!("{} + trunc", l.op) } else { l.op.clone() },
            format!("{:.1}", 1e3 * l.seconds),
            format!("{:.1}", l.bytes_up / 1024.0),
            format!("{:.1}", l.bytes_down / 1024.0),
            format!("{:.0}", l.rounds),
        ]);
    }
    print!("{}", table.render());
    let link = match (r.bandwidth_mbps, r.rtt_ms) {
        (None, None) => "loopback".to_string(),
        (b, t) => format!("emulated link {} Mbit/s, {} ms RTT", b.unwrap_or(f64::INFINITY), t.unwrap_or(0.0)),
    };
    println!("OT: {}; {link}", r.ot.name());
    println!(
        "{} ({} weights, N = {}, exact ReLU and truncation, {} of {} linear layers truncate after their ReLU): {:.3} s and {:.2} MiB per private inference over {} quer{} (model preparation {:.2} s, session setup {:.2} MiB; seed {})",
        r.net,
        r.weights,
        r.he_degree,
        r.deferred_truncations,
        r.linear_layers,
        r.seconds_per_query,
        r.bytes_per_query / (1024.0 * 1024.0),
        r.queries,
        if r.queries == 1 { "y" } else { "ies" },
        r.setup_seconds,
        r.setup_bytes as f64 / (1024.0 * 1024.0),
        r.seed
    );
    let kinds: Vec<String> = r
        .bytes_by_kind
        .iter()
        .filter(|(_, b)| **b >= 512.0)
        .map(|(kind, b)| format!("{kind} {:.1} MiB ({:.1} %)", b / (1024.0 * 1024.0), 100.0 * b / r.bytes_per_query))
        .collect();
    println!("  bytes per query by kind: {}", kinds.join(", "));
    if r.relus_after_pool > 0 {
        println!("  pool-first plan: {} ReLU layers run after their max pool", r.relus_after_pool);
    }
    for (name, s, m, tr, br) in &r.references {
        println!("  vs {name}: {s} s, {m:.0} MiB → moat/ref time {tr:.2}×, bytes {br:.2}×");
    }
    if let Some(g) = &r.siguard {
        println!(
            "with SIGuard ({} × {} steps{}, defender {}, softmax {}): {:.3} s and {:.2} MiB, {:.0} flights per query revealing probabilities, against {:.0} flights unguarded → +{:.1} % time, +{:.1} % bytes (target: ≤ 33 % time)",
            g.steps[0],
            g.steps[1],
            if g.g1_only { ", g₁ only" } else { "" },
            g.defender,
            g.softmax,
            g.seconds_per_query,
            g.bytes_per_query / (1024.0 * 1024.0),
            g.rounds_per_query,
            g.unguarded_rounds_per_query,
            100.0 * g.added_time,
            100.0 * g.added_bytes
        );
    }
}
