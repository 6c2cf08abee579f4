//! A party's protocol session: its role, the ring, OT in both directions and its randomness.

use moat_nn::FixedPoint;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{MpcError, Result};
use crate::ot::ferret::{self, FerretParams};
use crate::ot::{OtReceiver, OtSender, iknp};
use crate::shares::Party;
use crate::transport::Channel;

use super::beaver::TripleStock;

/// Tunable parameters of the non-linear protocols. Both parties must use the same values
/// (they fix message shapes); a mismatch shows up as a length error, never as a wrong result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Bits per leaf of the millionaires' comparison (1..=[`MAX_CHUNK_BITS`]): each leaf is a
    /// 1-out-of-2^k OT built from `k` random OTs, so larger chunks mean fewer leaves (fewer
    /// AND gates in the combining tree, fewer rounds) but bigger tables (`2^(k+1)` bits per
    /// leaf). With IKNP ([`Config::default`]) 6: at ℓ = 37 the fewest bytes and rounds (876
    /// bytes and 4 + 6 flights per ReLU against 914 and 5 + 7 with 4-bit chunks). With silent
    /// OT ([`Config::silent`]) 4: a random OT costs a fraction of a byte but its LPN encoding
    /// is the largest CPU cost, so the width trades table bytes against OTs and tree levels —
    /// 59.2 bytes and 2.23–2.49 µs per ReLU at 4 bits against 50.8 bytes and 2.43–2.93 µs at
    /// 3 (`moat bench relu --n 1048576 --chunk-bits 3|4`, refills counted, three alternating
    /// runs), ≈ 140 bytes at 6; since the triples take the silent OT's own random choices,
    /// 57.2 and 48.0 bytes. See [`super::millionaire`](mod@super::millionaire).
    pub chunk_bits: u32,
    /// Largest number of elements processed in one pass. Larger inputs run in consecutive
    /// passes of this size, each with the protocol's constant number of rounds; this bounds
    /// memory and frame sizes (a pass of 2^21 ReLUs holds ≈ 80 MB of tables and OT state).
    pub max_batch: usize,
}

/// Upper bound of [`Config::chunk_bits`]: a leaf pads its `2^(k+1)`-bit table with the bits
/// of the 128-bit random-OT outputs directly, so `k ≤ 6`.
pub const MAX_CHUNK_BITS: u32 = 6;

impl Default for Config {
    fn default() -> Self {
        Self { chunk_bits: 6, max_batch: 1 << 21 }
    }
}

impl Config {
    /// The parameters for a session whose OT is silent ([`Session::setup_silent`]): 4-bit
    /// leaves (see [`Config::chunk_bits`]), the rest as [`Config::default`].
    pub fn silent() -> Self {
        Self { chunk_bits: 4, ..Self::default() }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_CHUNK_BITS).contains(&self.chunk_bits) {
            return Err(MpcError::invalid(
                "Config",
                format!("chunk_bits = {} not in 1..={MAX_CHUNK_BITS}", self.chunk_bits),
            ));
        }
        if self.max_batch == 0 {
            return Err(MpcError::invalid("Config", "max_batch must be positive"));
        }
        Ok(())
    }
}

/// One party's state for the non-linear protocols: who it is, the ring, an OT sender and an OT
/// receiver (so it can play either OT role) and a seeded random generator for its own shares
/// and OT choice bits.
///
/// Both parties create their session over the same channel (the OT setup is interactive) and
/// then call the same protocol functions with their own shares, in the same order.
pub struct Session {
    party: Party,
    fp: FixedPoint,
    config: Config,
    sender: Box<dyn OtSender + Send>,
    receiver: Box<dyn OtReceiver + Send>,
    rng: ChaCha20Rng,
    /// Beaver triples made ahead of use ([`super::beaver::preprocess_triples`]).
    triples: TripleStock,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("party", &self.party)
            .field("fp", &self.fp)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Runs the IKNP setup in both directions ([`iknp::setup_both`], ≈ 8.3 KB, four flights)
    /// and returns the session. `seed` drives all of this party's randomness (base OTs, its
    /// shares, its OT choice bits); the two parties must use independent seeds.
    pub fn setup(ch: &mut dyn Channel, party: Party, fp: FixedPoint, seed: u64) -> Result<Self> {
        Self::setup_with_rng(ch, party, fp, ChaCha20Rng::seed_from_u64(seed))
    }

    /// [`Self::setup`] driven by `rng` (e.g. a generator keyed by a 256-bit
    /// [`crate::seed::Seed`]).
    pub fn setup_with_rng(ch: &mut dyn Channel, party: Party, fp: FixedPoint, mut rng: ChaCha20Rng) -> Result<Self> {
        let mut ot_rng = ChaCha20Rng::from_rng(&mut rng);
        let (sender, receiver) = iknp::setup_both(ch, party, &mut ot_rng)?;
        Ok(Self::from_parts(party, fp, Box::new(sender), Box::new(receiver), rng))
    }

    /// [`Session::setup`] with Ferret silent OT ([`ferret`], parameters
    /// [`FerretParams::DEFAULT`]) bootstrapped by the IKNP pair, in both directions, and one
    /// main round per direction run ahead of use (5.9 M OTs each way in the pools): ≈ 5.6 MB
    /// at setup (measured by `moat bench relu`: IKNP's base OTs, 2 × 74,036 bootstrap OTs,
    /// one bootstrap and one main round per direction, each a single flight), ≈ 200 MB of
    /// pools per party. Every random OT then costs 1 bit (the choice derandomisation) plus
    /// ≈ 0.05 bytes of the next main round (run when a pool runs dry) instead of IKNP's 16
    /// bytes. The session's protocol parameters are
    /// [`Config::silent`] (small millionaires' leaves, as the cheap OTs make them cheapest).
    pub fn setup_silent(ch: &mut dyn Channel, party: Party, fp: FixedPoint, seed: u64) -> Result<Self> {
        Self::setup_silent_with_rng(ch, party, fp, ChaCha20Rng::seed_from_u64(seed))
    }

    /// [`Self::setup_silent`] driven by `rng` (e.g. a generator keyed by a 256-bit
    /// [`crate::seed::Seed`]).
    pub fn setup_silent_with_rng(ch: &mut dyn Channel, party: Party, fp: FixedPoint, rng: ChaCha20Rng) -> Result<Self> {
        Self::setup_silent_with_params(ch, party, fp, rng, FerretParams::DEFAULT)
    }

    /// [`Self::setup_silent_with_rng`] on another LPN parameter set (benchmarks compare them).
    pub fn setup_silent_with_params(
        ch: &mut dyn Channel,
        party: Party,
        fp: FixedPoint,
        mut rng: ChaCha20Rng,
        params: FerretParams,
    ) -> Result<Self> {
        let mut ot_rng = ChaCha20Rng::from_rng(&mut rng);
        let (mut base_s, mut base_r) = iknp::setup_both(ch, party, &mut ot_rng)?;
        let (mut sender, mut receiver) = ferret::setup_both(ch, party, &mut base_s, &mut base_r, params, &mut ot_rng)?;
        // P0's sender pairs with P1's receiver: same order as the setup.
        match party {
            Party::P0 => {
                sender.extend(ch)?;
                receiver.extend(ch)?;
            }
            Party::P1 => {
                receiver.extend(ch)?;
                sender.extend(ch)?;
            }
        }
        Self::from_parts(party, fp, Box::new(sender), Box::new(receiver), rng).with_config(Config::silent())
    }

    /// A session from OT endpoints that are already set up (e.g. another OT source).
    pub fn from_parts(
        party: Party,
        fp: FixedPoint,
        sender: Box<dyn OtSender + Send>,
        receiver: Box<dyn OtReceiver + Send>,
        rng: ChaCha20Rng,
    ) -> Self {
        Self { party, fp, config: Config::default(), sender, receiver, rng, triples: TripleStock::default() }
    }

    /// The same session with other protocol parameters.
    pub fn with_config(mut self, config: Config) -> Result<Self> {
        self.set_config(config)?;
        Ok(self)
    }

    /// Changes the protocol parameters from the next protocol call on (both parties at the
    /// same point, as for every call).
    pub fn set_config(&mut self, config: Config) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// This party.
    pub fn party(&self) -> Party {
        self.party
    }

    /// The ring and fixed-point scale.
    pub fn fixed_point(&self) -> FixedPoint {
        self.fp
    }

    /// The protocol parameters.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The OT sender, the OT receiver and the random generator, borrowed together.
    pub(crate) fn parts(&mut self) -> (&mut dyn OtSender, &mut dyn OtReceiver, &mut ChaCha20Rng) {
        (self.sender.as_mut(), self.receiver.as_mut(), &mut self.rng)
    }

    /// The triples made ahead of use.
    pub(crate) fn triple_stock(&mut self) -> &mut TripleStock {
        &mut self.triples
    }
}
