//! A party's protocol session: its role, the ring, OT in both directions and its randomness.

use moat_nn::FixedPoint;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{MpcError, Result};
use crate::ot::{OtReceiver, OtSender, iknp};
use crate::shares::Party;
use crate::transport::Channel;

/// Tunable parameters of the non-linear protocols. Both parties must use the same values
/// (they fix message shapes); a mismatch shows up as a length error, never as a wrong result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Bits per leaf of the millionaires' comparison (1..=[`MAX_CHUNK_BITS`]): each leaf is a
    /// 1-out-of-2^k OT built from `k` random OTs, so larger chunks mean fewer leaves (fewer
    /// AND gates in the combining tree, fewer rounds) but bigger tables (`2^(k+1)` bits per
    /// leaf). Default 6: at ℓ = 37 the fewest bytes and rounds (876 bytes and 4 + 6 flights
    /// per ReLU against 914 and 5 + 7 with 4-bit chunks). See [`super::millionaire`](mod@super::millionaire).
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

    /// A session from OT endpoints that are already set up (e.g. another OT source).
    pub fn from_parts(
        party: Party,
        fp: FixedPoint,
        sender: Box<dyn OtSender + Send>,
        receiver: Box<dyn OtReceiver + Send>,
        rng: ChaCha20Rng,
    ) -> Self {
        Self { party, fp, config: Config::default(), sender, receiver, rng }
    }

    /// The same session with other protocol parameters.
    pub fn with_config(mut self, config: Config) -> Result<Self> {
        config.validate()?;
        self.config = config;
        Ok(self)
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
}
