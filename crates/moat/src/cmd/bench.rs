//! `moat bench relu|trunc|maxpool|argmax|sigmoid|gelu`: a two-party protocol between two
//! processes on loopback (`trunc --nonnegative`: the truncation of a ReLU output, as the fused
//! rescale of secure inference runs it; `sigmoid`: the 16-knot spline of
//! `moat_nn::approx::SIGMOID`, as a Sigmoid layer runs it; `gelu`: `ReLU(x)` plus the 16-knot
//! spline of `moat_nn::approx::GELU`, as a Gelu layer runs it; `--activation NAME` runs any
//! other spline of `moat_nn::approx` the same way — Tanh and Softsign cost what Sigmoid does,
//! SiLU, GELU's tanh form, Softplus and ELU (SELU: ELU's spline scaled) what GELU does).
//!
//! The command plays the server `P0` and spawns itself (`std::env::current_exe()`) with the
//! hidden arguments `--role client --connect 127.0.0.1:PORT` as the client `P1`. Both derive
//! the same plaintext inputs and the same sharing of them from `--seed` (each then uses only
//! its own share), set up their OT session (timed separately), run the protocol (timed, end
//! to end: until the server holds the client's report, sent as soon as the client is done) and
//! report time, bytes each way and rounds per party. With `--verify` both then send each other
//! their input and output shares (untimed) and check the reconstruction against the plaintext
//! function, exactly; any mismatch is an error.
//!
//! Every wait is bounded by `--timeout-ms`: the socket reads of both processes, the server's
//! wait for the client to connect and to exit. If either process dies, the other fails with a
//! clear error instead of hanging.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use moat_mpc::ot::ferret::{EXTENSION_PHASE, FerretParams};
use moat_mpc::protocols::maxpool::MaxTree;
use moat_mpc::protocols::{self, Config, Session, cost};
use moat_mpc::transport::frame::{pack_ring, unpack_ring};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig, Counters};
use moat_mpc::{AShare, Party};
use moat_nn::FixedPoint;
use moat_nn::approx::SplineForm;
use moat_nn::kernels::{self, Window};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::FixedArgs;
use crate::report::{Table, print_json, thousands};

/// Which protocol to run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Exact ReLU of n shared values (DReLU by millionaires', then MUX).
    Relu,
    /// Exact truncation by f bits of n shared signed values.
    Trunc,
    /// Max pooling of a shared [C, H, W] tensor.
    Maxpool,
    /// Label-only argmax of n samples of K logits, revealed to the client only.
    Argmax,
    /// The sigmoid spline of n shared values (moat_nn::approx::SIGMOID).
    Sigmoid,
    /// The GELU (ReLU plus a spline) of n shared values (moat_nn::approx::GELU).
    Gelu,
}

/// The approximated activations `moat bench sigmoid|gelu --activation` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `moat_nn::approx::SIGMOID` (an odd spline: sign, ReLUs, muxes, a truncation).
    Sigmoid,
    /// `moat_nn::approx::TANH` (odd).
    Tanh,
    /// `moat_nn::approx::SOFTSIGN` (odd).
    Softsign,
    /// `moat_nn::approx::SILU` (ReLU plus an even spline).
    Silu,
    /// `moat_nn::approx::GELU` (ReLU plus an even spline).
    Gelu,
    /// `moat_nn::approx::GELU_TANH` (ReLU plus an even spline).
    GeluTanh,
    /// `moat_nn::approx::SOFTPLUS` (ReLU plus an even spline).
    Softplus,
    /// `moat_nn::approx::ELU` (ReLU plus a spline of the negative side).
    Elu,
}

impl Activation {
    /// Its spline.
    pub fn spline(self) -> moat_nn::approx::Spline {
        use moat_nn::approx;
        match self {
            Activation::Sigmoid => approx::SIGMOID,
            Activation::Tanh => approx::TANH,
            Activation::Softsign => approx::SOFTSIGN,
            Activation::Silu => approx::SILU,
            Activation::Gelu => approx::GELU,
            Activation::GeluTanh => approx::GELU_TANH,
            Activation::Softplus => approx::SOFTPLUS,
            Activation::Elu => approx::ELU,
        }
    }
}

impl Protocol {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Argmax => "argmax",
            Protocol::Maxpool => "maxpool",
            Protocol::Relu => "relu",
            Protocol::Trunc => "trunc",
            Protocol::Sigmoid => "sigmoid",
            Protocol::Gelu => "gelu",
        }
    }
}

/// The OT behind the protocols.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtKind {
    /// IKNP extension: 16 bytes per random OT.
    Iknp,
    /// Ferret silent OT bootstrapped by IKNP: 1 bit plus ≈ 0.05 bytes per random OT.
    Ferret,
}

/// The LPN parameter set of Ferret (`--lpn`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LpnSet {
    /// emp-ot's current `ferret_b12` (k = 2^18, t = 1,520; 128-bit by the regular-LPN
    /// estimator), moat's default.
    #[default]
    B12,
    /// emp-ot's earlier `ferret_b13` (k = 452,000, t = 1,280): fewer bytes, a larger table.
    B13,
}

impl LpnSet {
    fn params(self) -> FerretParams {
        match self {
            LpnSet::B12 => FerretParams::B12,
            LpnSet::B13 => FerretParams::B13,
        }
    }
}

impl OtKind {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OtKind::Iknp => "iknp",
            OtKind::Ferret => "ferret",
        }
    }
}

/// The role of this process (the client role is only started by the server process).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// P0: listens, spawns the client, reports.
    Server,
    /// P1: connects to the server.
    Client,
}

/// `moat bench`: one benchmark per subcommand.
#[derive(clap::Args, Debug)]
pub struct BenchCommand {
    #[command(subcommand)]
    what: Bench,
}

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// Exact ReLU of n shared values (DReLU by millionaires', then MUX), two processes.
    Relu(Args),
    /// Exact truncation by f bits of n shared signed values, two processes.
    Trunc(Args),
    /// Max pooling of a shared [C, H, W] tensor, two processes.
    Maxpool(Args),
    /// Label-only argmax of n samples of K logits, revealed to the client only, two processes.
    Argmax(Args),
    /// The sigmoid spline (sign, 16 ReLUs, 2 muxes, a truncation) of n shared values, two
    /// processes.
    Sigmoid(Args),
    /// GELU as ReLU(x) plus a 16-knot spline (17 ReLUs, a truncation) of n shared values, two
    /// processes.
    Gelu(Args),
    /// A whole network privately (HE linear layers + OT non-linear layers), two processes.
    Secure(super::secure::BenchArgs),
}

/// Runs `moat bench …`.
pub fn dispatch(command: BenchCommand) -> anyhow::Result<()> {
    let (protocol, mut args) = match command.what {
        Bench::Relu(a) => (Protocol::Relu, a),
        Bench::Trunc(a) => (Protocol::Trunc, a),
        Bench::Maxpool(a) => (Protocol::Maxpool, a),
        Bench::Argmax(a) => (Protocol::Argmax, a),
        Bench::Sigmoid(a) => (Protocol::Sigmoid, a),
        Bench::Gelu(a) => (Protocol::Gelu, a),
        Bench::Secure(a) => return super::secure::bench(a),
    };
    args.protocol = protocol;
    args.seed = super::experiment_seed(args.seed_arg)?;
    run(args)
}

/// Arguments of `moat bench relu|trunc|maxpool|argmax|sigmoid`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The protocol (the subcommand).
    #[arg(skip = Protocol::Relu)]
    pub protocol: Protocol,
    /// Elements (relu, trunc; default 1048576; sigmoid: default 65536) or samples (argmax;
    /// default 10000).
    #[arg(long)]
    pub n: Option<usize>,
    #[command(flatten)]
    pub fixed_point: FixedArgs,
    /// Bits per leaf of the millionaires' comparison (1..=6; default 6 with IKNP, 4 with Ferret).
    #[arg(long)]
    pub chunk_bits: Option<u32>,
    /// The OT: `ferret` (silent OT; its pools are filled during the setup, later refills are
    /// part of the run) or `iknp` (the 16-byte extension).
    #[arg(long, value_enum, default_value = "ferret")]
    pub ot: OtKind,
    /// Ferret's LPN parameter set (with `--ot ferret`).
    #[arg(long, value_enum, default_value = "b12")]
    pub lpn: LpnSet,
    /// Seed of the inputs, their sharing and both parties' randomness (**not private**: a
    /// benchmark of plaintext-derived inputs); default: drawn from the OS and recorded in the
    /// report. The server passes the seed it uses to its client process.
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry).
    #[arg(skip)]
    pub seed: u64,
    /// maxpool: channels C of the [C, H, W] input.
    #[arg(long, default_value_t = 64)]
    pub channels: usize,
    /// maxpool: height H.
    #[arg(long, default_value_t = 32)]
    pub height: usize,
    /// maxpool: width W.
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// maxpool: square window size.
    #[arg(long, default_value_t = 2)]
    pub window: usize,
    /// maxpool: stride (default: the window size).
    #[arg(long)]
    pub stride: Option<usize>,
    /// argmax: classes K per sample.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// trunc: the inputs are non-negative (as a ReLU's outputs), truncated by the cheaper
    /// protocol the fused rescale uses (`truncate_nonnegative`).
    #[arg(long)]
    pub nonnegative: bool,
    /// sigmoid, gelu: the approximated activation to run instead of the subcommand's own — any
    /// spline of `moat_nn::approx` (SELU costs what ELU does: the same spline, scaled).
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// After the timed run, exchange shares and check the result against the plaintext function.
    #[arg(long)]
    pub verify: bool,
    /// Also run the IKNP version and compare, in this one invocation: ROUNDS alternating pairs
    /// of runs (Ferret, then IKNP; each its own client process and session; seeds SEED,
    /// SEED + 1, …), then the medians of both and their ratio (Ferret only).
    #[arg(long, value_name = "ROUNDS")]
    pub against_iknp: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Bound on every wait for the other process, in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    pub timeout_ms: u64,
    /// Internal: the role of this process.
    #[arg(long, value_enum, default_value = "server", hide = true)]
    pub role: Role,
    /// Internal: the server's address (client role).
    #[arg(long, hide = true)]
    pub connect: Option<SocketAddr>,
    /// Internal (tests): the client exits abruptly this long after its setup.
    #[arg(long, hide = true)]
    pub die_after_ms: Option<u64>,
    /// Internal (tests): the client adds 1 to its first output share before `--verify`, which
    /// must then fail.
    #[arg(long, hide = true)]
    pub corrupt_output: bool,
}

/// One party's measurements.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartyReport {
    /// `server (P0)` or `client (P1)`.
    pub role: String,
    /// Session setup (base OTs both ways), wall milliseconds.
    pub setup_ms: f64,
    /// The protocol, wall milliseconds as seen by this party.
    pub run_ms: f64,
    /// Traffic of the setup (with silent OT: its bootstrap and first main rounds).
    pub setup: Counters,
    /// Traffic of the protocol, silent OT's refills included.
    pub run: Counters,
    /// The part of `run` that refilled silent OT's pools (main rounds run dry by the protocol).
    pub run_ot_extension: Counters,
}

/// What `--verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Outputs compared with the plaintext function.
    pub checked: usize,
    /// How many differ.
    pub mismatches: usize,
    /// The first few mismatches, described.
    pub examples: Vec<String>,
}

/// The result of a benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The protocol.
    pub protocol: Protocol,
    /// What one element is (ReLU, truncation, pooled output, sample).
    pub element: String,
    /// Elements computed.
    pub elements: usize,
    /// Ring bits ℓ.
    pub ring_bits: u32,
    /// Fractional bits f.
    pub frac_bits: u32,
    /// Millionaires' leaf size.
    pub chunk_bits: u32,
    /// The OT used.
    pub ot: OtKind,
    /// Ferret's LPN parameter set (Ferret runs only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lpn: Option<LpnSet>,
    /// The seed.
    pub seed: u64,
    /// Setup as measured by the server, wall milliseconds.
    pub setup_ms: f64,
    /// The protocol end to end, wall milliseconds (server clock, until the client's report).
    pub run_ms: f64,
    /// Bytes server → client during the run (frame headers included).
    pub bytes_p0_to_p1: u64,
    /// Bytes client → server during the run.
    pub bytes_p1_to_p0: u64,
    /// Both directions.
    pub bytes_total: u64,
    /// Both directions per element.
    pub bytes_per_element: f64,
    /// Microseconds per element (run wall time / elements).
    pub us_per_element: f64,
    /// The byte count predicted by `moat_mpc::protocols::cost`, which models IKNP sessions
    /// (equal to the measurement when the model is right); `None` on a Ferret session, whose
    /// per-OT cost the model does not describe.
    pub predicted_bytes_total: Option<u64>,
    /// Flights sent by the server during the run.
    pub rounds_p0: u64,
    /// Flights sent by the client during the run.
    pub rounds_p1: u64,
    /// The server's measurements.
    pub server: PartyReport,
    /// The client's measurements.
    pub client: PartyReport,
    /// The verification, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyReport>,
}

/// Runs `moat bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let fp = args.fixed_point.fixed_point()?;
    let config = config_for(&args, args.ot)?;
    if args.activation.is_some() && !matches!(args.protocol, Protocol::Sigmoid | Protocol::Gelu) {
        bail!("--activation applies to sigmoid and gelu only");
    }
    if args.nonnegative && args.protocol != Protocol::Trunc {
        bail!("--nonnegative applies to trunc only");
    }
    if args.protocol == Protocol::Maxpool && args.n.is_some() {
        bail!("--n does not apply to maxpool; set the layer with --channels, --height, --width, --window");
    }
    if let Some(rounds) = args.against_iknp {
        if args.ot != OtKind::Ferret || rounds == 0 {
            bail!("--against-iknp takes a positive number of rounds and compares Ferret (--ot ferret) with IKNP");
        }
        return compare(&args, fp, rounds);
    }
    let work = Workload::new(&args, fp)?;
    match args.role {
        Role::Server => server(&args, fp, config, &work),
        Role::Client => client(&args, fp, config, &work),
    }
}

/// The protocol parameters of a run on `ot`: its default leaf width unless `--chunk-bits`.
fn config_for(args: &Args, ot: OtKind) -> anyhow::Result<Config> {
    let base = if ot == OtKind::Ferret { Config::silent() } else { Config::default() };
    let config = Config { chunk_bits: args.chunk_bits.unwrap_or(base.chunk_bits), ..base };
    config.validate()?;
    Ok(config)
}

/// Ferret against IKNP in one invocation (`--against-iknp`): per round one run of each, in
/// that order, with the round's seed.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Rounds (pairs of runs).
    pub rounds: u32,
    /// Median microseconds per element, Ferret.
    pub ferret_us_per_element: f64,
    /// Median microseconds per element, IKNP.
    pub iknp_us_per_element: f64,
    /// Ferret's median time over IKNP's (≤ 1: Ferret no slower).
    pub time_ratio: f64,
    /// Ferret's bytes per element over IKNP's (the same in every round).
    pub bytes_ratio: f64,
    /// Every Ferret run.
    pub ferret: Vec<BenchReport>,
    /// Every IKNP run.
    pub iknp: Vec<BenchReport>,
}

fn compare(args: &Args, fp: FixedPoint, rounds: u32) -> anyhow::Result<()> {
    let (mut ferret, mut iknp) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for ot in [OtKind::Ferret, OtKind::Iknp] {
            let seed = args.seed.wrapping_add(u64::from(round));
            let one = Args { ot, seed, seed_arg: Some(seed), against_iknp: None, ..args.clone() };
            let work = Workload::new(&one, fp)?;
            let (report, status) = measure(&one, fp, config_for(&one, ot)?, &work)?;
            check(&report, status)?;
            if !args.json {
                eprintln!(
                    "round {}/{rounds}, {}: {:.3} µs/{}, {:.1} B",
                    round + 1,
                    ot.name(),
                    report.us_per_element,
                    report.element,
                    report.bytes_per_element
                );
            }
            if ot == OtKind::Ferret { ferret.push(report) } else { iknp.push(report) }
        }
    }
    let median_us = |runs: &[BenchReport]| median(runs.iter().map(|r| r.us_per_element).collect());
    let (f, k) = (median_us(&ferret), median_us(&iknp));
    let bytes = |runs: &[BenchReport]| runs.first().map_or(0.0, |r| r.bytes_per_element);
    let comparison = Comparison {
        rounds,
        ferret_us_per_element: f,
        iknp_us_per_element: k,
        time_ratio: f / k,
        bytes_ratio: bytes(&ferret) / bytes(&iknp),
        ferret,
        iknp,
    };
    if args.json {
        print_json(&comparison)?;
    } else {
        let element = comparison.ferret.first().map_or("element", |r| r.element.as_str());
        println!(
            "moat bench {}: Ferret against IKNP, {rounds} alternating rounds (seeds {} to {}); two processes on 127.0.0.1 per run",
            args.protocol.name(),
            args.seed,
            args.seed.wrapping_add(u64::from(rounds) - 1)
        );
        println!(
            "median:   Ferret {f:.3} µs/{element} ({:.1} B), IKNP {k:.3} µs/{element} ({:.1} B)",
            bytes(&comparison.ferret),
            bytes(&comparison.iknp)
        );
        println!(
            "ratio:    Ferret / IKNP = {:.3}× the time, {:.3}× the bytes",
            comparison.time_ratio, comparison.bytes_ratio
        );
    }
    Ok(())
}

/// The median (the mean of the middle two for an even count; 0 for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn channel_config(args: &Args) -> ChannelConfig {
    let t = Duration::from_millis(args.timeout_ms.max(1));
    ChannelConfig::default().with_timeout(t).with_connect_timeout(t)
}

/// The plaintext inputs of a run, derived from the seed (identical in both processes).
struct Workload {
    x: Vec<u64>,
    /// maxpool: the geometry and the comparison tree over the windows (built ahead, as the
    /// engine builds it once per model, so the timed run is the protocol alone).
    pool: Option<(usize, Window, MaxTree)>,
    elements: usize,
    element: &'static str,
}

impl Workload {
    fn new(args: &Args, fp: FixedPoint) -> anyhow::Result<Self> {
        let seed = args.seed;
        Ok(match args.protocol {
            Protocol::Trunc if args.nonnegative => {
                let n = args.n.unwrap_or(1 << 20);
                Self { x: nonnegative(fp, n, seed), pool: None, elements: n, element: "truncation (x ≥ 0)" }
            }
            Protocol::Relu | Protocol::Trunc => {
                let n = args.n.unwrap_or(1 << 20);
                let element = if args.protocol == Protocol::Relu { "ReLU" } else { "truncation" };
                Self { x: full_range(fp, n, seed), pool: None, elements: n, element }
            }
            Protocol::Sigmoid | Protocol::Gelu => {
                let n = args.n.unwrap_or(1 << 16);
                let element = spline_of(args).name();
                Self { x: activations(fp, n, seed), pool: None, elements: n, element }
            }
            Protocol::Maxpool => {
                let (c, h, w, k) = (args.channels, args.height, args.width, args.window);
                let stride = args.stride.unwrap_or(k);
                if k == 0 || stride == 0 || k > h || k > w {
                    bail!("maxpool window {k} (stride {stride}) does not fit a {h}×{w} input");
                }
                let win = Window { in_hw: [h, w], kernel: [k, k], stride: [stride, stride], padding: [0; 4] };
                let windows = kernels::pool_windows(c, win);
                let elements = windows.len();
                let tree = MaxTree::new(&windows, c * h * w).map_err(flat)?;
                Self { x: half_range(fp, c * h * w, seed), pool: Some((c, win, tree)), elements, element: "output" }
            }
            Protocol::Argmax => {
                let n = args.n.unwrap_or(10_000);
                if args.classes == 0 {
                    bail!("--classes must be positive");
                }
                let mut x = half_range(fp, n * args.classes, seed);
                // Ties in every third sample: the lowest index must win.
                let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x7135);
                for row in x.chunks_mut(args.classes).step_by(3) {
                    if let Some(best) = moat_nn::exec::argmax_ring(fp, row) {
                        let other = rng.random_range(0..row.len());
                        row[other] = row[best];
                    }
                }
                Self { x, pool: None, elements: n, element: "sample" }
            }
        })
    }

    /// This party's share of the input.
    fn share(&self, fp: FixedPoint, party: Party, seed: u64) -> AShare {
        let (s0, s1) = moat_mpc::share(fp, &self.x, &mut ChaCha20Rng::seed_from_u64(seed ^ 0x5EED_5EED));
        if party == Party::P0 { s0 } else { s1 }
    }
}

/// `n` ring elements: the ring's edges (0, ±1, 2^(ℓ−1) − 1, −2^(ℓ−1), around multiples of
/// 2^f) then uniform ones.
fn full_range(fp: FixedPoint, n: usize, seed: u64) -> Vec<u64> {
    let half = 1u64 << (fp.ring_bits() - 1);
    let unit = 1u64 << fp.frac_bits();
    let mut v: Vec<u64> = [0, 1, fp.mask(), half - 1, half, half + 1, unit, unit - 1, unit + 1]
        .into_iter()
        .chain([fp.neg(unit), fp.neg(unit).wrapping_sub(1), fp.neg(unit) + 1])
        .map(|x| fp.reduce(x))
        .take(n)
        .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    v.extend((v.len()..n).map(|_| fp.reduce(rng.random::<u64>())));
    v
}

/// `n` activations: 0, ±the spline's last knot, ±2^(ℓ−2−f) (far tails), then uniform in
/// `[−20, 20]`.
fn activations(fp: FixedPoint, n: usize, seed: u64) -> Vec<u64> {
    let far = 2f64.powi(fp.ring_bits() as i32 - 2 - fp.frac_bits() as i32);
    let mut v: Vec<u64> = [0.0, 8.0, -8.0, far, -far].into_iter().map(|x| fp.encode(x)).take(n).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    v.extend((v.len()..n).map(|_| fp.encode(rng.random_range(-20.0..20.0))));
    v
}

/// `n` values in `[0, 2^(ℓ−1))` (the non-negative truncation's precondition), edges first.
fn nonnegative(fp: FixedPoint, n: usize, seed: u64) -> Vec<u64> {
    let half = 1u64 << (fp.ring_bits() - 1);
    let unit = 1u64 << fp.frac_bits();
    let mut v: Vec<u64> =
        [0, 1, half - 1, half - 2, unit, unit - 1, unit + 1].into_iter().filter(|&x| x < half).take(n).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    v.extend((v.len()..n).map(|_| rng.random::<u64>() & (half - 1)));
    v
}

/// `n` values with |v| < 2^(ℓ−2) (the max-pool and argmax precondition), edges first.
fn half_range(fp: FixedPoint, n: usize, seed: u64) -> Vec<u64> {
    let limit = (1i64 << (fp.ring_bits() - 2)) - 1;
    let mut v: Vec<u64> = [0, 1, -1, limit, -limit].into_iter().map(|x| fp.from_signed(x)).take(n).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    v.extend((v.len()..n).map(|_| fp.from_signed(rng.random_range(-limit..=limit))));
    v
}

/// A party's output: shares, or (argmax) the label for the client.
enum Output {
    Shares(AShare),
    Labels(Option<Vec<usize>>),
}

fn execute(
    args: &Args,
    s: &mut Session,
    ch: &mut dyn Channel,
    work: &Workload,
    x: &AShare,
) -> moat_mpc::Result<Output> {
    Ok(match args.protocol {
        Protocol::Relu => Output::Shares(protocols::relu(s, ch, x)?),
        Protocol::Trunc if args.nonnegative => {
            let f = s.fixed_point().frac_bits();
            Output::Shares(protocols::truncate_nonnegative(s, ch, x, f)?)
        }
        Protocol::Trunc => Output::Shares(protocols::truncate(s, ch, x)?),
        Protocol::Maxpool => {
            let empty = MaxTree::default();
            let tree = work.pool.as_ref().map_or(&empty, |p| &p.2);
            Output::Shares(protocols::maxpool::max_pool_tree(s, ch, x, tree)?)
        }
        Protocol::Argmax => Output::Labels(protocols::argmax(s, ch, x, args.classes)?),
        Protocol::Sigmoid | Protocol::Gelu => {
            let spline = spline_of(args).quantize(s.fixed_point());
            Output::Shares(moat_mpc::engine::layer::spline(s, ch, x, &spline)?)
        }
    })
}

fn predicted(args: &Args, fp: FixedPoint, config: &Config, work: &Workload) -> cost::Prediction {
    match args.protocol {
        Protocol::Relu => cost::relu(work.elements, fp, config),
        Protocol::Trunc if args.nonnegative => cost::truncate_nonnegative(work.elements, fp, fp.frac_bits(), config),
        Protocol::Trunc => cost::truncate(work.elements, fp, fp.frac_bits(), config),
        Protocol::Maxpool => {
            let empty = MaxTree::default();
            cost::max_pool(work.pool.as_ref().map_or(&empty, |p| &p.2), fp, config)
        }
        Protocol::Argmax => cost::argmax(work.elements, args.classes, fp, config),
        Protocol::Sigmoid | Protocol::Gelu => {
            let spline = spline_of(args).quantize(fp);
            if spline.form == SplineForm::Odd {
                cost::spline(work.elements, spline.knots.len(), fp, spline.shift, config)
            } else {
                cost::rectified_spline(work.elements, spline.knots.len(), fp, spline.shift, config)
            }
        }
    }
}

/// The spline a spline benchmark runs: `--activation`'s, else the subcommand's own.
fn spline_of(args: &Args) -> moat_nn::approx::Spline {
    let own = if args.protocol == Protocol::Gelu { Activation::Gelu } else { Activation::Sigmoid };
    args.activation.unwrap_or(own).spline()
}

/// Setup, synchronisation, timed run: `(session setup ms, run ms, setup and run counters, output)`.
fn setup_and_run(
    args: &Args,
    fp: FixedPoint,
    config: Config,
    work: &Workload,
    ch: &mut dyn Channel,
    party: Party,
    x: &AShare,
) -> anyhow::Result<(PartyReport, Output)> {
    let role = if party == Party::P0 { "server (P0)" } else { "client (P1)" };
    ch.set_phase("setup");
    let start = Instant::now();
    let seed = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(party.index() as u64 + 1);
    let session = match args.ot {
        OtKind::Iknp => Session::setup(ch, party, fp, seed),
        OtKind::Ferret => {
            Session::setup_silent_with_params(ch, party, fp, ChaCha20Rng::seed_from_u64(seed), args.lpn.params())
        }
    };
    let mut session = session.and_then(|s| s.with_config(config)).map_err(flat)?;
    // Both parties leave the setup together, so the run starts at the same moment.
    ch.exchange(&[])?;
    let setup_ms = ms(start.elapsed());
    if party == Party::P1
        && let Some(die) = args.die_after_ms
    {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(die));
            eprintln!("moat bench client: exiting abruptly after --die-after-ms {die}");
            std::process::exit(3);
        });
    }
    ch.set_phase("run");
    let before = ch.stats().snapshot();
    let start = Instant::now();
    let out = execute(args, &mut session, ch, work, x)
        .map_err(flat)
        .with_context(|| format!("{} protocol", args.protocol.name()))?;
    ch.flush()?;
    let run_ms = ms(start.elapsed());
    let after = ch.stats().snapshot();
    let report = PartyReport {
        role: role.to_string(),
        setup_ms,
        run_ms,
        setup: before.total,
        // Everything since the run began: the protocol's own phases and the pool refills it
        // triggered (counted under the extension's phase, see `ferret::EXTENSION_PHASE`).
        run: after.total.since(&before.total),
        run_ot_extension: after.sum_prefix(EXTENSION_PHASE).since(&before.sum_prefix(EXTENSION_PHASE)),
    };
    Ok((report, out))
}

/// An engine error as one message (its `Display` already includes the transport cause, which
/// would otherwise be printed twice by the error chain).
fn flat(e: moat_mpc::MpcError) -> anyhow::Error {
    anyhow!("{e}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn client(args: &Args, fp: FixedPoint, config: Config, work: &Workload) -> anyhow::Result<()> {
    let addr = args.connect.ok_or_else(|| anyhow!("the client role needs --connect ADDR"))?;
    let mut ch = TcpChannel::connect(addr, channel_config(args))
        .with_context(|| format!("client: connecting to the server at {addr}"))?;
    let x = work.share(fp, Party::P1, args.seed);
    let (report, mut out) = setup_and_run(args, fp, config, work, &mut ch, Party::P1, &x)
        .context("client (P1): the server process died or failed")?;
    if args.corrupt_output {
        out = match out {
            Output::Shares(y) => {
                let mut v = y.into_values();
                if let Some(first) = v.first_mut() {
                    *first = first.wrapping_add(1);
                }
                Output::Shares(AShare::from_wrapping(fp, v))
            }
            Output::Labels(Some(mut l)) => {
                if let Some(first) = l.first_mut() {
                    *first = (*first + 1) % args.classes;
                }
                Output::Labels(Some(l))
            }
            other => other,
        };
    }
    ch.set_phase("report");
    ch.send(&serde_json::to_vec(&report)?)?;
    ch.flush()?;
    if args.verify {
        ch.set_phase("verify");
        let v = verify(args, fp, work, Party::P1, &mut ch, &x, &out).context("client (P1): verification")?;
        if v.mismatches > 0 {
            bail!("client (P1): {} of {} outputs differ from the plaintext function", v.mismatches, v.checked);
        }
    }
    Ok(())
}

/// Kills and reaps the child on every exit path.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Waits for the child's exit for at most `timeout`; kills it after that.
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.0.as_mut().ok_or_else(|| anyhow!("no client process"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.0 = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("the client process did not exit within {timeout:?}; killed it");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Accepts the client's connection, watching the child process and the deadline.
fn accept(listener: &TcpListener, child: &mut ChildGuard, args: &Args) -> anyhow::Result<TcpChannel> {
    listener.set_nonblocking(true)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Ok(TcpChannel::from_stream(stream, channel_config(args))?),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("accepting the client's connection"),
        }
        if let Some(c) = child.0.as_mut()
            && let Some(status) = c.try_wait()?
        {
            child.0 = None;
            bail!("the client process exited ({status}) before connecting");
        }
        if Instant::now() >= deadline {
            bail!("the client did not connect within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn server(args: &Args, fp: FixedPoint, config: Config, work: &Workload) -> anyhow::Result<()> {
    let (report, status) = measure(args, fp, config, work)?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    check(&report, status)
}

/// A failed verification or client process, as the run's error (after its report is out).
fn check(report: &BenchReport, status: std::process::ExitStatus) -> anyhow::Result<()> {
    if let Some(v) = &report.verify
        && v.mismatches > 0
    {
        bail!("verification failed: {} of {} outputs differ from the plaintext function", v.mismatches, v.checked);
    }
    if !status.success() {
        bail!("the client process failed ({status})");
    }
    Ok(())
}

/// This invocation's arguments for the client process of a run on `args.ot` with `args.seed`:
/// the command line without the options the server decides (`--ot`, `--seed`,
/// `--against-iknp`), then those.
fn client_args(args: &Args) -> Vec<std::ffi::OsString> {
    const DECIDED: [&str; 3] = ["--ot", "--seed", "--against-iknp"];
    let mut out = Vec::new();
    let mut given = std::env::args_os().skip(1);
    while let Some(arg) = given.next() {
        let text = arg.to_string_lossy();
        if DECIDED.contains(&&*text) {
            given.next();
        } else if !DECIDED.iter().any(|d| text.starts_with(&format!("{d}="))) {
            out.push(arg);
        }
    }
    out.extend(["--ot", args.ot.name(), "--seed", &args.seed.to_string()].map(Into::into));
    out
}

/// One run: this process as the server (P0), a client process (P1); the report and how the
/// client process ended.
fn measure(
    args: &Args,
    fp: FixedPoint,
    config: Config,
    work: &Workload,
) -> anyhow::Result<(BenchReport, std::process::ExitStatus)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe().context("locating the moat executable")?;
    let child = Command::new(exe)
        .args(client_args(args))
        .args(["--role", "client", "--connect", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the client process")?;
    let mut child = ChildGuard(Some(child));
    let mut ch = accept(&listener, &mut child, args)?;
    let x = work.share(fp, Party::P0, args.seed);
    let run_start = Instant::now();
    let (server_report, out) = setup_and_run(args, fp, config, work, &mut ch, Party::P0, &x)
        .context("server (P0): the client process died or failed")?;
    ch.set_phase("report");
    let client_bytes = ch.recv().context("server (P0): waiting for the client's report")?;
    let run_ms = ms(run_start.elapsed()) - server_report.setup_ms;
    let client_report: PartyReport =
        serde_json::from_slice(&client_bytes).context("server (P0): malformed report from the client")?;
    let verify = if args.verify {
        ch.set_phase("verify");
        Some(verify(args, fp, work, Party::P0, &mut ch, &x, &out).context("server (P0): verification")?)
    } else {
        None
    };
    drop(ch);
    let status = child.wait(Duration::from_millis(args.timeout_ms.max(1)))?;
    let run = server_report.run;
    let prediction = predicted(args, fp, &config, work);
    let elements = work.elements.max(1) as f64;
    let report = BenchReport {
        protocol: args.protocol,
        element: work.element.to_string(),
        elements: work.elements,
        ring_bits: fp.ring_bits(),
        frac_bits: fp.frac_bits(),
        chunk_bits: config.chunk_bits,
        ot: args.ot,
        lpn: (args.ot == OtKind::Ferret).then_some(args.lpn),
        seed: args.seed,
        setup_ms: server_report.setup_ms,
        run_ms,
        bytes_p0_to_p1: run.bytes_sent,
        bytes_p1_to_p0: run.bytes_received,
        bytes_total: run.bytes_total(),
        bytes_per_element: run.bytes_total() as f64 / elements,
        us_per_element: run_ms * 1e3 / elements,
        predicted_bytes_total: (args.ot == OtKind::Iknp).then(|| prediction.bytes_total()),
        rounds_p0: run.rounds,
        rounds_p1: client_report.run.rounds,
        server: server_report,
        client: client_report,
        verify,
    };
    Ok((report, status))
}

/// Exchanges input and output shares (and the client's labels) and checks them.
fn verify(
    args: &Args,
    fp: FixedPoint,
    work: &Workload,
    party: Party,
    ch: &mut dyn Channel,
    x: &AShare,
    out: &Output,
) -> anyhow::Result<VerifyReport> {
    let ell = fp.ring_bits();
    let mut msg = pack_ring(x.values(), ell)?;
    match out {
        Output::Shares(y) => msg.extend(pack_ring(y.values(), ell)?),
        Output::Labels(Some(labels)) => {
            msg.extend(pack_ring(&labels.iter().map(|&l| l as u64).collect::<Vec<_>>(), 32)?)
        }
        Output::Labels(None) => {}
    }
    let peer = ch.exchange(&msg).context("exchanging shares")?;
    let n_in = x.len();
    let in_bytes = n_in * ell as usize;
    let split = in_bytes.div_ceil(8);
    let (peer_in, peer_out) = peer.split_at(split.min(peer.len()));
    let other = AShare::from_wrapping(fp, unpack_ring(peer_in, n_in, ell)?);
    let plain = moat_mpc::reconstruct(x, &other)?;
    if plain != work.x {
        bail!("the reconstructed inputs differ from the seed's inputs");
    }
    let mut examples = Vec::new();
    let mut mismatches = 0;
    let mut note = |i: usize, got: String, want: String| {
        mismatches += 1;
        if examples.len() < 5 {
            examples.push(format!("element {i}: got {got}, want {want}"));
        }
    };
    let checked;
    match (args.protocol, out) {
        (Protocol::Argmax, Output::Labels(mine)) => {
            let labels: Vec<usize> = match (party, mine) {
                (Party::P1, Some(l)) => l.clone(),
                _ => unpack_ring(peer_out, work.elements, 32)?.into_iter().map(|l| l as usize).collect(),
            };
            let want: Vec<usize> =
                plain.chunks(args.classes).map(|row| moat_nn::exec::argmax_ring(fp, row).unwrap_or(0)).collect();
            checked = want.len();
            if labels.len() != want.len() {
                bail!("{} labels for {} samples", labels.len(), want.len());
            }
            for (i, (g, w)) in labels.iter().zip(&want).enumerate() {
                if g != w {
                    note(i, g.to_string(), w.to_string());
                }
            }
        }
        (_, Output::Shares(y)) => {
            let other = AShare::from_wrapping(fp, unpack_ring(peer_out, y.len(), ell)?);
            let got = moat_mpc::reconstruct(y, &other)?;
            let want: Vec<u64> = match (args.protocol, &work.pool) {
                (Protocol::Relu, _) => plain.iter().map(|&v| if fp.is_negative(v) { 0 } else { v }).collect(),
                (Protocol::Trunc, _) => plain.iter().map(|&v| fp.truncate(v)).collect(),
                (Protocol::Sigmoid | Protocol::Gelu, _) => {
                    let spline = spline_of(args).quantize(fp);
                    plain.iter().map(|&v| spline.eval(fp, v)).collect()
                }
                (Protocol::Maxpool, Some((c, win, _))) => {
                    kernels::max_pool(&plain, *c, *win, |a, b| fp.to_signed(a) > fp.to_signed(b))
                }
                _ => bail!("no plaintext function for this output"),
            };
            checked = want.len();
            if got.len() != want.len() {
                bail!("{} outputs for {} expected", got.len(), want.len());
            }
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                if g != w {
                    note(i, fp.to_signed(g).to_string(), fp.to_signed(w).to_string());
                }
            }
        }
        _ => bail!("output kind does not match the protocol"),
    }
    Ok(VerifyReport { checked, mismatches, examples })
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} KB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

fn render(r: &BenchReport) -> String {
    let mut out = format!(
        "moat bench {}: {} × {}, ℓ = {}, f = {}, {}-bit chunks, {} OT, seed {}; two processes on 127.0.0.1\n",
        r.protocol.name(),
        thousands(r.elements),
        r.element,
        r.ring_bits,
        r.frac_bits,
        r.chunk_bits,
        r.ot.name(),
        r.seed
    );
    out.push_str(&format!(
        "setup:    {:.1} ms, {} (OT setup, both directions)\n",
        r.setup_ms,
        human_bytes(r.server.setup.bytes_total())
    ));
    out.push_str(&format!(
        "run:      {:.3} s wall end to end, {:.3} µs/{}\n",
        r.run_ms / 1e3,
        r.us_per_element,
        r.element
    ));
    out.push_str(&format!(
        "traffic:  P0→P1 {}, P1→P0 {}, total {} ({:.1} B/{}; predicted {}), rounds P0 {} + P1 {}\n\n",
        human_bytes(r.bytes_p0_to_p1),
        human_bytes(r.bytes_p1_to_p0),
        human_bytes(r.bytes_total),
        r.bytes_per_element,
        r.element,
        r.predicted_bytes_total.map_or_else(|| "n/a (Ferret)".to_string(), human_bytes),
        r.rounds_p0,
        r.rounds_p1
    ));
    let mut t = Table::new(&["party", "setup ms", "run ms", "sent", "received", "frames sent", "rounds"]);
    for p in [&r.server, &r.client] {
        t.row(vec![
            p.role.clone(),
            format!("{:.1}", p.setup_ms),
            format!("{:.1}", p.run_ms),
            human_bytes(p.run.bytes_sent),
            human_bytes(p.run.bytes_received),
            p.run.frames_sent.to_string(),
            p.run.rounds.to_string(),
        ]);
    }
    out.push_str(&t.render());
    if let Some(v) = &r.verify {
        if v.mismatches == 0 {
            out.push_str(&format!("\nverify: ok, {} outputs exact\n", thousands(v.checked)));
        } else {
            out.push_str(&format!("\nverify: {} of {} outputs WRONG\n", v.mismatches, v.checked));
            for e in &v.examples {
                out.push_str(&format!("  {e}\n"));
            }
        }
    }
    out
}
