//! Predicted communication of every protocol, frame by frame, for the IKNP-based
//! [`Session::setup`](super::Session::setup): exact byte, frame and flight counts per party
//! (frame headers included), which the tests compare with the channels' [`Counters`].
//!
//! The model replays each protocol's messages in order: frames `(sender, length)` and
//! exchanges (both parties send a frame, then both receive). A party's flights (the `rounds`
//! of [`crate::transport::Stats`]) start whenever it sends after having received.

use moat_nn::FixedPoint;
use serde::{Deserialize, Serialize};

use super::millionaire;
use super::planes::MAX_FRAME_BYTES;
use super::session::Config;
use super::triples::PIECE;
use crate::ot::iknp::CHUNK_OTS;
use crate::shares::Party;
use crate::transport::Counters;
use crate::transport::frame::HEADER_LEN;

/// Predicted traffic of one protocol call, per party.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    /// What `P0` sends, receives and how many flights it sends.
    pub p0: Counters,
    /// The same for `P1`.
    pub p1: Counters,
}

impl Prediction {
    /// Bytes in both directions.
    pub fn bytes_total(&self) -> u64 {
        self.p0.bytes_sent + self.p1.bytes_sent
    }

    /// The counters of `party`.
    pub fn of(&self, party: Party) -> Counters {
        match party {
            Party::P0 => self.p0,
            Party::P1 => self.p1,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    /// One frame of `len` payload bytes from a party to the other.
    Frame(Party, u64),
    /// Both parties send a frame of `len` bytes, then both receive.
    Exchange(u64),
}

/// The messages of a protocol run, in order.
#[derive(Debug, Default)]
struct Model {
    events: Vec<Event>,
}

impl Model {
    fn frame(&mut self, from: Party, len: u64) {
        self.events.push(Event::Frame(from, len));
    }

    /// `n` IKNP random OTs: the receiver sends 16 bytes per OT, rounded up to blocks of 128,
    /// in frames of [`CHUNK_OTS`].
    fn rot(&mut self, receiver: Party, n: usize) {
        let mut blocks = n.div_ceil(128);
        while blocks > 0 {
            let nb = blocks.min(CHUNK_OTS / 128);
            self.frame(receiver, (16 * 128 * nb) as u64);
            blocks -= nb;
        }
    }

    /// Random-choice OTs in pieces of [`PIECE`].
    fn rot_pieces(&mut self, receiver: Party, n: usize) {
        let mut done = 0;
        while done < n {
            let piece = PIECE.min(n - done);
            self.rot(receiver, piece);
            done += piece;
        }
    }

    /// A message split into frames of at most [`MAX_FRAME_BYTES`].
    fn long(&mut self, from: Party, len: usize) {
        if len == 0 {
            self.frame(from, 0);
        }
        let mut left = len;
        while left > 0 {
            let f = left.min(MAX_FRAME_BYTES);
            self.frame(from, f as u64);
            left -= f;
        }
    }

    /// Correlated OTs with `sender` as OT sender; `segments` = (count, width).
    fn cot(&mut self, sender: Party, segments: &[(usize, u32)]) {
        let total: usize = segments.iter().map(|s| s.0).sum();
        if total == 0 {
            return;
        }
        self.rot(sender.other(), total);
        let bits: usize = segments.iter().map(|&(n, w)| n * w as usize).sum();
        self.long(sender, bits.div_ceil(8));
    }

    fn millionaire(&mut self, n: usize, bits: u32, low_bits: u32, config: &Config) {
        let mut left = n;
        while left > 0 {
            let pass = left.min(config.max_batch);
            self.millionaire_pass(pass, bits, low_bits, config.chunk_bits);
            left -= pass;
        }
    }

    fn millionaire_pass(&mut self, n: usize, bits: u32, low_bits: u32, k: u32) {
        if n == 0 || bits == 0 {
            return;
        }
        let (_, ops, _) = millionaire::shape(bits, low_bits, k);
        self.rot(Party::P1, n * bits as usize);
        self.rot_pieces(Party::P1, ops * n);
        self.long(Party::P0, (n * millionaire::table_bits(bits, low_bits, k)).div_ceil(8));
        self.rot_pieces(Party::P0, ops * n);
        for planes in millionaire::opened_planes_per_level(bits, low_bits, k) {
            self.events.push(Event::Exchange((planes * n.div_ceil(8)) as u64));
        }
    }

    fn mux(&mut self, n: usize, ell: u32) {
        self.cot(Party::P0, &[(n, ell)]);
        self.cot(Party::P1, &[(n, ell)]);
    }

    fn relu(&mut self, n: usize, fp: FixedPoint, config: &Config) {
        let mut left = n;
        while left > 0 {
            let pass = left.min(config.max_batch);
            self.millionaire_pass(pass, fp.ring_bits() - 1, 0, config.chunk_bits);
            self.mux(pass, fp.ring_bits());
            left -= pass;
        }
    }

    fn truncate(&mut self, n: usize, fp: FixedPoint, shift: u32, config: &Config) {
        if shift > 0 {
            let mut left = n;
            while left > 0 {
                let pass = left.min(config.max_batch);
                self.millionaire_pass(pass, fp.ring_bits(), shift, config.chunk_bits);
                self.cot(Party::P0, &[(pass, fp.ring_bits()), (pass, shift)]);
                left -= pass;
            }
        }
    }

    fn predict(&self) -> Prediction {
        let mut p = [Counters::default(); 2];
        // Whether each party's last action was a send (a new send then continues its flight).
        let mut sending = [false; 2];
        let send = |p: &mut [Counters; 2], sending: &mut [bool; 2], from: Party, len: u64| {
            let (i, j) = (from.index(), from.other().index());
            let wire = len + HEADER_LEN as u64;
            p[i].bytes_sent += wire;
            p[i].frames_sent += 1;
            p[i].rounds += !sending[i] as u64;
            sending[i] = true;
            p[j].bytes_received += wire;
            p[j].frames_received += 1;
        };
        for &event in &self.events {
            match event {
                Event::Frame(from, len) => {
                    send(&mut p, &mut sending, from, len);
                    sending[from.other().index()] = false;
                }
                Event::Exchange(len) => {
                    send(&mut p, &mut sending, Party::P0, len);
                    send(&mut p, &mut sending, Party::P1, len);
                    sending = [false; 2];
                }
            }
        }
        Prediction { p0: p[0], p1: p[1] }
    }
}

/// [`super::millionaire::greater_than_split`] of `n` comparisons (`low_bits = 0` for
/// [`super::millionaire::greater_than`]).
pub fn millionaire(n: usize, bits: u32, low_bits: u32, config: &Config) -> Prediction {
    let mut m = Model::default();
    m.millionaire(n, bits, low_bits, config);
    m.predict()
}

/// [`super::drelu::drelu`] of `n` elements.
pub fn drelu(n: usize, fp: FixedPoint, config: &Config) -> Prediction {
    millionaire(n, fp.ring_bits() - 1, 0, config)
}

/// [`super::mux::mux`] of `n` elements.
pub fn mux(n: usize, fp: FixedPoint) -> Prediction {
    let mut m = Model::default();
    m.mux(n, fp.ring_bits());
    m.predict()
}

/// [`super::b2a::b2a`] of `n` bits.
pub fn b2a(n: usize, fp: FixedPoint) -> Prediction {
    let mut m = Model::default();
    m.cot(Party::P0, &[(n, fp.ring_bits())]);
    m.predict()
}

/// [`super::relu::relu`] of `n` elements.
pub fn relu(n: usize, fp: FixedPoint, config: &Config) -> Prediction {
    let mut m = Model::default();
    m.relu(n, fp, config);
    m.predict()
}

/// [`super::truncate::truncate_by`] of `n` elements by `shift` bits.
pub fn truncate(n: usize, fp: FixedPoint, shift: u32, config: &Config) -> Prediction {
    let mut m = Model::default();
    m.truncate(n, fp, shift, config);
    m.predict()
}

/// `moat_mpc::engine::layer::spline` of `n` elements with `knots` knots and a final
/// truncation by `shift` bits: a sign comparison, a select, `knots·n` ReLUs, a select, a
/// signed truncation.
pub fn spline(n: usize, knots: usize, fp: FixedPoint, shift: u32, config: &Config) -> Prediction {
    let mut m = Model::default();
    m.millionaire(n, fp.ring_bits() - 1, 0, config);
    m.mux(n, fp.ring_bits());
    m.relu(knots * n, fp, config);
    m.mux(n, fp.ring_bits());
    m.truncate(n, fp, shift, config);
    m.predict()
}

/// `moat_mpc::engine::layer::spline` of a rectified spline (SiLU, GELU, ELU) of `n` elements
/// with `knots` knots and a final truncation by `shift` bits: `n` ReLUs, `knots·n` ReLUs, a
/// signed truncation.
pub fn rectified_spline(n: usize, knots: usize, fp: FixedPoint, shift: u32, config: &Config) -> Prediction {
    let mut m = Model::default();
    m.relu(n, fp, config);
    m.relu(knots * n, fp, config);
    m.truncate(n, fp, shift, config);
    m.predict()
}

/// [`super::truncate::truncate_nonnegative`] of `n` elements by `shift` bits.
pub fn truncate_nonnegative(n: usize, fp: FixedPoint, shift: u32, config: &Config) -> Prediction {
    let mut m = Model::default();
    if shift > 0 {
        let mut left = n;
        while left > 0 {
            let pass = left.min(config.max_batch);
            m.millionaire_pass(pass, shift, 0, config.chunk_bits);
            m.cot(Party::P0, &[(pass, fp.ring_bits()), (pass, shift)]);
            left -= pass;
        }
    }
    m.predict()
}

/// [`super::maxpool::max_pool`] by its [`MaxTree`](super::maxpool::MaxTree): one ReLU batch per level.
pub fn max_pool(plan: &super::maxpool::MaxTree, fp: FixedPoint, config: &Config) -> Prediction {
    let mut m = Model::default();
    for level in &plan.levels {
        m.relu(level.len(), fp, config);
    }
    m.predict()
}

/// [`super::argmax::argmax`] of `samples` samples of `classes` logits.
pub fn argmax(samples: usize, classes: usize, fp: FixedPoint, config: &Config) -> Prediction {
    let mut m = Model::default();
    if samples > 0 && classes > 0 {
        let mut k = classes;
        while k > 1 {
            let pairs = samples * (k / 2);
            m.millionaire(pairs, fp.ring_bits() - 1, 0, config);
            m.mux(2 * pairs, fp.ring_bits());
            k = k.div_ceil(2);
        }
        let width = (usize::BITS - (classes - 1).leading_zeros()).max(1);
        m.frame(Party::P0, (samples * width as usize).div_ceil(8) as u64);
    }
    m.predict()
}

/// [`super::beaver::mul_values`] of `n` products (max batch [`Config::max_batch`]).
pub fn beaver_mul(ell: u32, n: usize) -> Prediction {
    beaver_mul_with(ell, n, &Config::default())
}

/// [`beaver_mul`] with the passes of `config`.
pub fn beaver_mul_with(ell: u32, n: usize, config: &Config) -> Prediction {
    let mut m = Model::default();
    let mut left = n;
    while left > 0 {
        let pass = left.min(config.max_batch);
        let segments: Vec<(usize, u32)> = (0..ell).map(|j| (pass, ell - j)).collect();
        m.cot(Party::P0, &segments);
        m.cot(Party::P1, &segments);
        m.events.push(Event::Exchange((2 * pass * ell as usize).div_ceil(8) as u64));
        left -= pass;
    }
    m.predict()
}
