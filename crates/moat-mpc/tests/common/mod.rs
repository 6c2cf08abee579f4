//! Shared helpers of the protocol tests: both parties in two threads, over the in-memory pair
//! or TCP loopback, each with its own [`Session`].

#![allow(dead_code)] // each test binary uses a different subset

use moat_mpc::protocols::{Config, Session};
pub use moat_mpc::testing::{NETS, Net, run_pair};
use moat_mpc::transport::{Channel, Counters};
use moat_mpc::{Party, Result};
use moat_nn::FixedPoint;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// What one party's run produced: its output and its traffic after the session setup.
pub struct Run<T> {
    pub out: T,
    pub counters: Counters,
}

/// Sets up a session on each side (seeds `1000 + seed`, `2000 + seed`), synchronises (one
/// empty exchange, so the first message of the protocol starts a flight on both sides), resets
/// the counters, then runs `f0` as `P0` and `f1` as `P1`.
pub fn run_protocol<A, B>(
    net: Net,
    fp: FixedPoint,
    config: Config,
    seed: u64,
    f0: impl FnOnce(&mut Session, &mut dyn Channel) -> Result<A>,
    f1: impl FnOnce(&mut Session, &mut dyn Channel) -> Result<B> + Send + 'static,
) -> Result<(Run<A>, Run<B>)>
where
    B: Send + 'static,
{
    run_pair(
        net,
        move |ch| {
            let mut s = Session::setup(ch, Party::P0, fp, 1000 + seed)?.with_config(config)?;
            ch.exchange(&[])?;
            ch.stats_mut().reset();
            let out = f0(&mut s, ch)?;
            Ok(Run { out, counters: ch.stats().total() })
        },
        move |ch| {
            let mut s = Session::setup(ch, Party::P1, fp, 2000 + seed)?.with_config(config)?;
            ch.exchange(&[])?;
            ch.stats_mut().reset();
            let out = f1(&mut s, ch)?;
            Ok(Run { out, counters: ch.stats().total() })
        },
    )
}

/// A fixed-point setting (ℓ, f).
pub fn ring(bits: u32, frac: u32) -> FixedPoint {
    FixedPoint::new(bits, frac).unwrap_or_else(|e| panic!("ring ({bits}, {frac}): {e}"))
}

/// The rings the tests cover: the default, a small one, the full 64 bits, tiny ones.
pub fn rings() -> Vec<FixedPoint> {
    vec![ring(37, 12), ring(20, 8), ring(64, 16), ring(13, 5), ring(2, 0)]
}

/// `n` ring elements: the ring's edges first (0, ±1, ±2, 2^(ℓ−1) − 1, −2^(ℓ−1), values around
/// multiples of 2^f), then uniform ones; exactly `n` values.
pub fn values_with_edges(fp: FixedPoint, n: usize, seed: u64) -> Vec<u64> {
    let half = 1u64 << (fp.ring_bits() - 1);
    let unit = 1u64 << fp.frac_bits();
    let mut v = vec![
        0,
        1,
        fp.mask(),
        2,
        fp.mask() - 1,
        half - 1,
        half,
        half + 1,
        half - 2,
        unit,
        unit - 1,
        unit + 1,
        fp.neg(unit),
        fp.neg(unit) - 1,
        fp.neg(unit) + 1,
        3 * unit,
        fp.neg(5 * unit),
        fp.neg(5 * unit) + 1,
    ];
    v.iter_mut().for_each(|x| *x = fp.reduce(*x));
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    while v.len() < n {
        v.push(fp.reduce(rng.random::<u64>()));
    }
    v.truncate(n);
    v
}

/// `n` values with |v| < 2^(ℓ−2) (the max-pool / argmax precondition), edges first.
pub fn values_in_half_range(fp: FixedPoint, n: usize, seed: u64) -> Vec<u64> {
    let limit = (1i64 << (fp.ring_bits() - 2)) - 1;
    let mut v: Vec<u64> = [0, 1, -1, limit, -limit, limit - 1, -limit + 1].iter().map(|&x| fp.from_signed(x)).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    while v.len() < n {
        v.push(fp.from_signed(rng.random_range(-limit..=limit)));
    }
    v.truncate(n);
    v
}

/// `n` values in `[0, 2^(ℓ−1))` (the non-negative truncation's precondition): the edges
/// (0, 1, 2^(ℓ−1) − 1 and its neighbours, around multiples of 2^f) first, then uniform ones.
pub fn values_nonnegative(fp: FixedPoint, n: usize, seed: u64) -> Vec<u64> {
    let half = 1u64 << (fp.ring_bits() - 1);
    let unit = 1u64 << fp.frac_bits();
    let mut v: Vec<u64> =
        [0, 1, half - 1, half - 2, 2, unit, unit - 1, unit + 1, 3 * unit, half - unit, half - unit - 1]
            .into_iter()
            .filter(|&x| x < half)
            .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    while v.len() < n {
        v.push(rng.random::<u64>() & (half - 1));
    }
    v.truncate(n);
    v
}

/// Splits `values` into two random share vectors.
pub fn share(fp: FixedPoint, values: &[u64], seed: u64) -> (moat_mpc::AShare, moat_mpc::AShare) {
    moat_mpc::share(fp, values, &mut ChaCha20Rng::seed_from_u64(seed))
}

/// Asserts two counter sets agree on bytes, frames and flights.
pub fn assert_counters(what: &str, got: Counters, want: Counters) {
    assert_eq!(got, want, "{what}: measured {got:?}, predicted {want:?}");
}
