//! Cost of SIGuard in the real two-party protocol (both parties in this process over the
//! in-memory channel, IKNP or Ferret), against the plain secure softmax of the same logits.
//!
//! `cargo run --release --example siguard_cost -- [ferret] [exp | spline] [CLASSES] [H1 H2]`
//! (default IKNP, the spline softmax, 10, 128 64; `exp`: CrypTen's).
//!
//! Runs the secure softmax and SIGuard with (outer, inner) = (1, 1), (1, 9), (6, 1) and (6, 9),
//! and separates the cost of one inner step in one lane (one outer round) and in all the
//! paper's six rounds' lanes at once (they run side by side: see `SiGuard`'s docs), and the
//! rest (preparation, initial softmax, `h(p)`, label one-hot, the validators, the rounds'
//! bookkeeping, final softmax); extrapolates to the paper's 6 × 49 and measures that run, and
//! its preparation (triples, the defender's products) alone; then splits an inner step's
//! flights from P0 by the primitive that sends them.
//! Bytes and flights come from the channel's counters; the defender's weights are random at a
//! trained one's scale (the cost depends on them only through whether they keep every product
//! inside the bounded truncations' range, which these do).

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Instant;

use moat_mpc::protocols::Session;
use moat_mpc::ring_ops::{
    Defender, DefenderShape, MatrixKind, MatrixSpec, RingOps, SessionOps, SiGuard, SiGuardConfig, Softmax, softmax,
};
use moat_mpc::transport::{Channel, memory};
use moat_mpc::{Party, Seed, share};
use moat_nn::FixedPoint;
use rand::Rng;

/// What [`run`] measures.
#[derive(Clone, Copy)]
enum Part {
    /// The secure softmax alone.
    Softmax,
    /// A SIGuard run's preparation alone (triples and the defender's products).
    Prepare(SiGuardConfig),
    /// A whole SIGuard run.
    SiGuard(SiGuardConfig),
}

/// What one interactive primitive cost the server: flights it sent, elements, wall seconds
/// (its own work and its waits for the client).
#[derive(Clone, Copy, Default)]
struct Tally {
    flights: u64,
    elements: u64,
    seconds: f64,
}

/// The server's operations, tallying each interactive primitive.
struct ByPrimitive<'a> {
    ops: SessionOps<'a>,
    tally: BTreeMap<&'static str, Tally>,
}

impl ByPrimitive<'_> {
    fn count<T>(&mut self, name: &'static str, elements: usize, f: impl FnOnce(&mut SessionOps<'_>) -> T) -> T {
        let before = self.ops.stats().total().rounds;
        let started = Instant::now();
        let out = f(&mut self.ops);
        let t = self.tally.entry(name).or_default();
        t.flights += self.ops.stats().total().rounds - before;
        t.elements += elements as u64;
        t.seconds += started.elapsed().as_secs_f64();
        out
    }
}

type R<T> = moat_mpc::Result<T>;

impl RingOps for ByPrimitive<'_> {
    fn fixed(&self) -> FixedPoint {
        self.ops.fixed()
    }
    fn holds_public(&self) -> bool {
        self.ops.holds_public()
    }
    fn mul(&mut self, x: &[u64], y: &[u64]) -> R<Vec<u64>> {
        self.count("product (Beaver)", x.len(), |o| o.mul(x, y))
    }
    fn truncate(&mut self, x: &[u64], shift: u32) -> R<Vec<u64>> {
        self.count("truncation (signed)", x.len(), |o| o.truncate(x, shift))
    }
    fn truncate_nonnegative(&mut self, x: &[u64], shift: u32) -> R<Vec<u64>> {
        self.count("truncation (non-negative)", x.len(), |o| o.truncate_nonnegative(x, shift))
    }
    fn relu(&mut self, x: &[u64]) -> R<Vec<u64>> {
        self.count("ReLU", x.len(), |o| o.relu(x))
    }
    fn sign(&mut self, x: &[u64]) -> R<Vec<u64>> {
        self.count("sign", x.len(), |o| o.sign(x))
    }
    fn sign_within(&mut self, x: &[u64], bits: u32) -> R<Vec<u64>> {
        self.count("sign (narrow ring)", x.len(), |o| o.sign_within(x, bits))
    }
    fn sign_against(&mut self, x: &[u64], thresholds: &[u64], bits: u32) -> R<Vec<u64>> {
        self.count("sign against thresholds", x.len() * thresholds.len(), |o| o.sign_against(x, thresholds, bits))
    }
    fn mul_bit(&mut self, b: &[u64], x: &[u64]) -> R<Vec<u64>> {
        self.count("bit product (mux)", x.len(), |o| o.mul_bit(b, x))
    }
    fn mul_private(&mut self, w: Option<&[u64]>, x: &[u64]) -> R<Vec<u64>> {
        self.count("private product", x.len(), |o| o.mul_private(w, x))
    }
    fn mul_private_matvec(&mut self, w: Option<&[u64]>, rows: usize, x: &[u64]) -> R<Vec<u64>> {
        self.count("private product", x.len(), |o| o.mul_private_matvec(w, rows, x))
    }
    fn reserve_products(&mut self, n: usize) -> R<()> {
        self.count("preparation: Beaver triples", n, |o| o.reserve_products(n))
    }
    fn prepare_private_matrices(&mut self, matrices: &[MatrixSpec<'_>]) -> R<()> {
        self.count("preparation: the defender's products (HE)", matrices.iter().map(|m| m.uses).sum(), |o| {
            o.prepare_private_matrices(matrices)
        })
    }
    fn mul_private_matrix(&mut self, m: usize, kind: MatrixKind, w: Option<&[u64]>, x: &[u64]) -> R<Vec<u64>> {
        self.count("private product", x.len(), |o| o.mul_private_matrix(m, kind, w, x))
    }
    fn fewest_rounds(&mut self, on: bool) -> R<()> {
        self.ops.fewest_rounds(on)
    }
}

/// What one [`run`] cost: bytes both directions, flights from P0 (in all and by primitive),
/// seconds.
struct Cost {
    bytes: u64,
    flights: u64,
    by_primitive: BTreeMap<&'static str, Tally>,
    seconds: f64,
}

/// The cost of one `part`.
fn run(fp: FixedPoint, shape: DefenderShape, part: Part, ferret: bool, kind: Softmax) -> Result<Cost, Box<dyn Error>> {
    let mut rng = Seed::from_os()?.rng();
    let z: Vec<u64> = (0..shape.classes).map(|_| fp.encode(rng.random_range(-5.0..5.0))).collect();
    let [(r1, c1), (r2, c2), (r3, c3)] = shape.layers();
    // At a trained defender's scale (±1/√fan-in), inside the bounded truncations' range.
    let mut draw = |n: usize, fan_in: usize| -> Vec<f32> {
        let a = 1.0 / (fan_in as f32).sqrt();
        (0..n).map(|_| rng.random_range(-a..a)).collect()
    };
    let (w1, w2, w3) = (draw(r1 * c1, c1), draw(r2 * c2, c2), draw(r3 * c3, c3));
    let (b1, b2, b3) = (draw(r1, c1), draw(r2, c2), draw(r3, c3));
    let config = match part {
        Part::SiGuard(config) | Part::Prepare(config) => Some(config),
        Part::Softmax => None,
    };
    let guard = config
        .map(|config| {
            // As a server builds it: the HE layers of its preparation encoded at load.
            SiGuard::new(Defender::new(fp, shape, [&w1, &w2, &w3], [&b1, &b2, &b3])?, config, shape.classes)?
                .with_prepared_layers()
        })
        .transpose()?;
    // The client's half from the server's announcement, as the engine's hello carries it.
    let spec = guard.as_ref().map(SiGuard::spec);
    let (z0, z1) = share(fp, &z, &mut Seed::from_os()?.rng());
    let (mut c0, mut c1) = memory::pair(Default::default());
    let client_rng = Seed::from_os()?.rng();
    let client = std::thread::spawn(move || -> moat_mpc::Result<Vec<u64>> {
        let mut s = setup(&mut c1, Party::P1, fp, client_rng, ferret)?;
        let ops = &mut SessionOps::new(&mut s, &mut c1);
        match (part, spec.map(SiGuard::client).transpose()?) {
            (Part::SiGuard(_), Some(guard)) => guard.run(ops, z1.values()),
            (Part::Prepare(_), Some(guard)) => guard.prepare(ops).map(|()| Vec::new()),
            _ => softmax(ops, z1.values(), shape.classes, kind),
        }
    });
    let mut s = setup(&mut c0, Party::P0, fp, Seed::from_os()?.rng(), ferret)?;
    let before = c0.stats().total();
    let started = Instant::now();
    let by_primitive = {
        let ops = &mut ByPrimitive { ops: SessionOps::new(&mut s, &mut c0), tally: BTreeMap::new() };
        match (part, &guard) {
            (Part::SiGuard(_), Some(guard)) => {
                guard.run(ops, z0.values())?;
            }
            (Part::Prepare(_), Some(guard)) => guard.prepare(ops)?,
            _ => {
                softmax(ops, z0.values(), shape.classes, kind)?;
            }
        }
        std::mem::take(&mut ops.tally)
    };
    let seconds = started.elapsed().as_secs_f64();
    let used = c0.stats().total().since(&before);
    client.join().map_err(|_| "client thread panicked")??;
    Ok(Cost { bytes: used.bytes_total(), flights: used.rounds, by_primitive, seconds })
}

fn setup(
    ch: &mut dyn Channel,
    party: Party,
    fp: FixedPoint,
    rng: rand_chacha::ChaCha20Rng,
    ferret: bool,
) -> moat_mpc::Result<Session> {
    if ferret {
        Session::setup_silent_with_rng(ch, party, fp, rng)
    } else {
        Session::setup_with_rng(ch, party, fp, rng)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| match args.iter().position(|a| a == name) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    };
    let ferret = flag("ferret");
    flag("spline"); // the default, accepted by name
    let kind = if flag("exp") { Softmax::Exp } else { Softmax::Spline };
    let args: Vec<usize> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let classes = args.first().copied().unwrap_or(10);
    let hidden = [args.get(1).copied().unwrap_or(128), args.get(2).copied().unwrap_or(64)];
    let fp = FixedPoint::default();
    let shape = DefenderShape { classes, hidden };
    let at = |outer, inner| SiGuardConfig { outer, inner, softmax: kind, ..Default::default() };
    let soft = run(fp, shape, Part::Softmax, ferret, kind)?;
    // One lane (one outer round), and the paper's six rounds (all their lanes at once).
    let one = [
        run(fp, shape, Part::SiGuard(at(1, 1)), ferret, kind)?,
        run(fp, shape, Part::SiGuard(at(1, 9)), ferret, kind)?,
    ];
    let a = run(fp, shape, Part::SiGuard(at(6, 1)), ferret, kind)?;
    let b = run(fp, shape, Part::SiGuard(at(6, 9)), ferret, kind)?;
    let prepare = run(fp, shape, Part::Prepare(at(6, 49)), ferret, kind)?;
    let measured = run(fp, shape, Part::SiGuard(at(6, 49)), ferret, kind)?;
    let diff = |x: &Cost, y: &Cost| {
        (
            x.bytes.saturating_sub(y.bytes) as f64 / 8.0,
            x.flights.saturating_sub(y.flights) as f64 / 8.0,
            (x.seconds - y.seconds).max(0.0) / 8.0,
        )
    };
    let lane_step = diff(&one[1], &one[0]);
    let step = diff(&b, &a);
    // The preparation, the fixed part, the validators of every lane and the rounds' bookkeeping.
    let rest = (a.bytes as f64 - step.0, a.flights as f64 - step.1, (a.seconds - step.2).max(0.0));
    let full = (rest.0 + 49.0 * step.0, rest.1 + 49.0 * step.1, rest.2 + 49.0 * step.2);
    println!(
        "defender {classes} → {} → {} → 1, ring ℓ = {}, f = {}, {}, softmax {kind}, in-memory channel",
        hidden[0],
        hidden[1],
        fp.ring_bits(),
        fp.frac_bits(),
        if ferret { "Ferret" } else { "IKNP" }
    );
    println!("| part | MB | flights (P0) | seconds |\n|---|---|---|---|");
    let row = |name: &str, v: (f64, f64, f64)| println!("| {name} | {:.2} | {:.0} | {:.3} |", v.0 / 1e6, v.1, v.2);
    let measured_row = |v: &Cost| (v.bytes as f64, v.flights as f64, v.seconds);
    row("secure softmax alone", measured_row(&soft));
    row("one inner step, one lane (softmax, h forward + backward, g2, g3, norm, update)", lane_step);
    row("one inner step, the 6 rounds' 15 lanes at once", step);
    row("preparation, fixed part, 15 validators, bookkeeping (6 × 1 minus a step)", rest);
    row("SIGuard 6 × 49 (extrapolated)", full);
    row("SIGuard 6 × 49 (measured)", measured_row(&measured));
    row("of which its preparation (triples, the defender's products)", measured_row(&prepare));
    println!("\n| preparation of the 6 × 49 run | flights from P0 | products | P0 s |\n|---|---|---|---|");
    for (name, t) in prepare.by_primitive.iter().filter(|(name, _)| name.starts_with("preparation")) {
        println!("| {name} | {} | {} | {:.3} |", t.flights, t.elements, t.seconds);
    }
    println!(
        "\n| primitive | flights from P0 per inner step | elements per inner step (15 lanes) | P0 ms per inner step |\n|---|---|---|---|"
    );
    // (The flights are the same for one lane and for all: the lanes share every flight.)
    for (name, t) in &b.by_primitive {
        let before = a.by_primitive.get(name).copied().unwrap_or_default();
        let flights = t.flights.saturating_sub(before.flights) as f64 / 8.0;
        let elements = t.elements.saturating_sub(before.elements) as f64 / 8.0;
        let ms = (t.seconds - before.seconds).max(0.0) / 8.0 * 1e3;
        if elements > 0.0 && !name.starts_with("preparation") {
            println!("| {name} | {flights:.1} | {elements:.0} | {ms:.2} |");
        }
    }
    Ok(())
}
