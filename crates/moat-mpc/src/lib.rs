//! # moat-mpc — the two-party engine
//!
//! Foundations of moat's secure inference between a server `P0` (holds the model) and a client
//! `P1` (holds the input): ring and shares, a counted transport, and oblivious transfer. The
//! non-linear protocols and the engine are built on these.
//!
//! ## Ring and shares ([`shares`], [`bits`])
//!
//! Values live in Z_2^ℓ with the fixed-point scale of [`moat_nn::FixedPoint`] (ℓ = 37, f = 12
//! by default). An additive sharing `x = x₀ + x₁ mod 2^ℓ` gives each party a uniformly random
//! share: **a party learns nothing from its share alone**. Linear operations are local; only
//! reconstruction reveals (to whoever receives the other share). Bits are XOR-shared
//! ([`shares::BShare`], packed in [`bits::BitVec`]).
//!
//! ## Transport ([`transport`])
//!
//! A blocking, framed channel (`u32` length + payload) over TCP or an in-process pair, with a
//! bound on frame size, an idle timeout on every read, clean errors on disconnects and
//! malformed frames, and counters of bytes, frames and rounds per phase label
//! ([`transport::Stats`], serialisable snapshots). Ring elements travel bit-packed
//! ([`transport::Channel::send_ring`]): ℓ = 37 takes 4.625 bytes, not 8.
//!
//! ## Oblivious transfer ([`ot`])
//!
//! Traits [`ot::OtSender`]/[`ot::OtReceiver`] with random, correlated (over Z_2^ℓ), chosen and
//! 1-out-of-N flavours; Chou–Orlandi base OT on Ristretto255 ([`ot::base`]) and the IKNP
//! extension ([`ot::iknp`]). What each party learns and what each flavour costs is in the
//! module docs; in short, with IKNP a random OT costs 16 bytes in one flight after a one-time
//! setup of ≈ 8.3 KB ([`ot::iknp::setup_both`]). Semi-honest security.
//!
//! ```
//! use moat_mpc::ot::{iknp, OtReceiver, OtSender};
//! use moat_mpc::{transport::memory, BitVec, Party};
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha20Rng;
//!
//! let (mut server_ch, mut client_ch) = memory::pair(Default::default());
//! // The client is the OT receiver: it chooses bits and learns one ℓ-bit message each.
//! let client = std::thread::spawn(move || -> moat_mpc::Result<Vec<u64>> {
//!     let mut rng = ChaCha20Rng::seed_from_u64(2);
//!     let (_sender, mut receiver) = iknp::setup_both(&mut client_ch, Party::P1, &mut rng)?;
//!     receiver.receive_chosen(&mut client_ch, &BitVec::from_bools(&[true, false]), 37)
//! });
//! // The server is the OT sender: it learns nothing about the choices.
//! let mut rng = ChaCha20Rng::seed_from_u64(1);
//! let (mut sender, _receiver) = iknp::setup_both(&mut server_ch, Party::P0, &mut rng)?;
//! sender.send_chosen(&mut server_ch, &[[10, 11], [20, 21]], 37)?;
//! assert_eq!(client.join().expect("client thread")?, vec![11, 20]);
//! # Ok::<(), moat_mpc::MpcError>(())
//! ```
//!
//! ## Non-linear protocols ([`protocols`])
//!
//! Millionaires' comparison, DReLU, MUX/select, B2A, exact ReLU, exact truncation, max pool
//! and the label-only argmax, batched per layer in a constant number of rounds on a per-party
//! [`protocols::Session`]; each module states what it computes, what each party learns and
//! its cost, and [`protocols::cost`] predicts the exact traffic. `moat bench relu` runs them
//! between two processes (≈ 876 bytes per exact ReLU at ℓ = 37 on IKNP, ≈ 50 on Ferret silent OT).
//!
//! **What the protocols are.** Each protocol is a blocking function that one party calls with
//! its [`Party`], its [`protocols::Session`] and a [`transport::Channel`]; the function sends
//! and receives its messages itself and returns that party's output shares. Both parties call
//! the same function in lock step (two threads or two processes). They are *not* sans-IO
//! state machines (messages as types, per-party step functions, a driver over the
//! transport — mpz's shape): a protocol owns the channel for its duration, and the byte and
//! round counts come from the channel's counters, checked against [`protocols::cost`].
//!
//! ## The engine ([`engine`])
//!
//! Both two-party backends run the graph with the one walk of [`moat_nn::walk`] (which the
//! float and fixed-point executors use too), each with its own kernel. The client acts on its
//! shares through a [`engine::ClientBehaviour`], the server on its own through a
//! [`engine::ServerGuard`] (the same points, plus the reveal point), and what a query reveals
//! is one type, [`engine::Reveal`].
//!
//! ## Measuring LAN and WAN
//!
//! [`transport::shaped::Shaped`] emulates a link in-process (documented fidelity). For real
//! measurements shape the loopback interface with `tc netem` (needs root; loopback traffic
//! crosses `lo` once per direction, so the delay is one-way):
//!
//! ```text
//! # LAN of Cheetah/CrypTFlow2: 3 Gbit/s, 0.15 ms one-way
//! sudo tc qdisc replace dev lo root netem delay 0.15ms rate 3gbit limit 100000
//! # WAN: 400 Mbit/s, 20 ms one-way (RTT 40 ms; let TCP windows cover the 2 MB BDP)
//! sudo sysctl -w net.core.rmem_max=16777216 net.core.wmem_max=16777216
//! sudo sysctl -w net.ipv4.tcp_rmem='4096 131072 16777216' net.ipv4.tcp_wmem='4096 131072 16777216'
//! sudo tc qdisc replace dev lo root netem delay 20ms rate 400mbit limit 100000
//! # check: ping -c 3 127.0.0.1 shows ≈ 2 × the delay; remove with
//! sudo tc qdisc del dev lo root
//! ```
//!
//! Run the two parties as two processes on `127.0.0.1`. Rounds × one-way latency +
//! bytes / bandwidth ([`transport::shaped::NetworkModel::predict`]) is the lower bound to
//! compare against.

pub mod bits;
pub mod convert;
pub mod engine;
pub mod error;
pub mod he;
mod memo;
pub mod ot;
pub mod protocols;
pub mod ring_ops;
pub mod seed;
pub mod shares;
pub mod testing;
pub mod transport;

pub use bits::BitVec;
pub use error::{MpcError, Result};
pub use seed::{EntropyError, Seed};
pub use shares::{AShare, BShare, Party, reconstruct, reconstruct_bits, share, share_bits};

/// A 128-bit block: OT keys and messages, 16 little-endian bytes on the wire.
pub type Block = u128;
