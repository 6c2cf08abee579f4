//! The non-linear two-party protocols of secure inference (CrypTFlow2 / Cheetah family),
//! semi-honest, on top of the IKNP oblivious transfer of [`crate::ot`].
//!
//! `P0` is the server (holds the model), `P1` the client (holds the input). Values are
//! additive shares over Z_2^ℓ (any 2 ≤ ℓ ≤ 64; [`moat_nn::FixedPoint`]), bits XOR shares.
//! Each party builds a [`Session`] once (base OTs in both directions, ≈ 8.3 KB) and then both
//! call the same function with their own shares; every function handles a whole layer (a
//! batch of `n` elements) in a constant number of rounds, and matches the ideal functionality
//! of the simulated engine ([`crate::engine::SimulatedEngine`]) bit for bit.
//!
//! | module | computes | bytes/element | flights P0 + P1 |
//! |---|---|---|---|
//! | [`millionaire`](mod@millionaire) | `1{x > y}`, `x` of `P0`, `y` of `P1`, as XOR shares | 835 (36 bits) | 3 + 4 |
//! | [`drelu`](mod@drelu) | `1{x ≥ 0}` of a shared `x` | 835 | 3 + 4 |
//! | [`mux`](mod@mux) | `b·x` (and `select`) | 41.3 | 1 + 2 |
//! | [`b2a`](mod@b2a) | bit → Z_2^ℓ | 20.6 | 1 + 1 |
//! | [`beaver`](mod@beaver) | `x·y` of two shared values (Beaver triple by Gilboa COT), exact | ≈ 1380 | 3 + 3 |
//! | [`prepared`](mod@prepared) | `W·x` for the server's fixed private matrix, after Delphi's HE offline phase | ℓ/8 per input value | 0 + 1 |
//! | [`relu`](mod@relu) | `max(x, 0)`, exact | 876 | 4 + 6 |
//! | [`truncate`](mod@truncate) | `floor(x / 2^f)` signed, exact | 898 | 5 + 6 |
//! | [`truncate_nonnegative`] | `floor(x / 2^f)` of `x ∈ [0, 2^(ℓ−1))`, exact | 295 | 2 + 3 |
//! | [`maxpool`](mod@maxpool) | window maxima (2×2 windows; 3×3 stride 2: ≈ 6.1 ReLUs per output) | 2629 per output | 8 + 11 |
//! | [`argmax`](mod@argmax) | label of `K = 10` logits, to `P1` only | 8258 per sample | 17 + 21 |
//!
//! **On Ferret silent OT** ([`Session::setup_silent`], whose sessions use
//! [`Config::silent`]: 4-bit chunks), measured with `moat bench relu|trunc|maxpool` (2^20
//! elements, refill rounds included): ReLU 57.2 B and 1.1–1.6 µs (12 + 13 flights), signed
//! truncation 53.5 B, non-negative truncation 21.4 B, 3×3 stride-2 max pool 165.0 B per
//! output (3-bit chunks: 48.0 B, 46.0 B, 18.2 B, 135.8 B); exact as on IKNP. The triples'
//! random OTs take the COTs' own random choices and send nothing
//! ([`crate::ot::OtReceiver::receive_random_choice`]).
//!
//! (ℓ = 37, f = 12, the default 6-bit chunks, IKNP, both directions, frame headers included;
//! the flights do not depend on `n` up to [`Config::max_batch`]. With 4-bit chunks a ReLU
//! costs 914 bytes and 5 + 7 flights. Measured on the 2-core development machine, two processes
//! on loopback, with other jobs running: 2^20 exact ReLUs in 2.2–3 s, i.e. 2–3 µs and 876 bytes
//! each; `moat bench relu` reproduces this.)
//!
//! [`cost`] predicts the exact traffic of each (frame headers included) and the tests check
//! the prediction against the channels' counters. The engine's [`crate::engine::layer`] wraps the layers with the
//! client's tamper points, as the engine's hooks define them.
//!
//! ```
//! use moat_mpc::protocols::{Session, relu};
//! use moat_mpc::{share, reconstruct, Party, transport::memory};
//! use moat_nn::FixedPoint;
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha20Rng;
//!
//! let fp = FixedPoint::default();
//! let x = [fp.encode(-1.5), fp.encode(2.25), 0];
//! let (x0, x1) = share(fp, &x, &mut ChaCha20Rng::seed_from_u64(7));
//! let (mut server_ch, mut client_ch) = memory::pair(Default::default());
//! // The client (P1) runs in another thread (another process in deployment).
//! let client = std::thread::spawn(move || -> moat_mpc::Result<_> {
//!     let mut s = Session::setup(&mut client_ch, Party::P1, fp, 2)?;
//!     relu(&mut s, &mut client_ch, &x1)
//! });
//! let mut s = Session::setup(&mut server_ch, Party::P0, fp, 1)?;
//! let y0 = relu(&mut s, &mut server_ch, &x0)?;
//! let y1 = client.join().expect("client thread")?;
//! assert_eq!(reconstruct(&y0, &y1)?, vec![0, fp.encode(2.25), 0]);
//! # Ok::<(), moat_mpc::MpcError>(())
//! ```

pub mod argmax;
pub mod b2a;
pub mod beaver;
pub mod cost;
mod cot;
pub mod drelu;
pub mod maxpool;
pub mod millionaire;
pub mod mux;
pub(crate) mod planes;
pub mod prepared;
pub mod relu;
pub mod session;
mod triples;
pub mod truncate;

pub use argmax::argmax;
pub use b2a::b2a;
pub use beaver::mul_values;
pub use drelu::drelu;
pub use maxpool::max_pool;
pub use millionaire::{greater_than, greater_than_split};
pub use mux::{mux, select};
pub use relu::relu;
pub use session::{Config, MAX_CHUNK_BITS, Session};
pub use truncate::{truncate, truncate_by, truncate_nonnegative};
