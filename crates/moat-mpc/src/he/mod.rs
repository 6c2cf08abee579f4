//! Homomorphic linear layers: BFV on fhe.rs with Cheetah-style coefficient encoding.
//!
//! The linear layers of secure inference (convolution with any stride, padding and kernel,
//! dense, depthwise maps for average pooling and unfolded batch norm, global average pooling)
//! are evaluated on additive shares by one round trip each: the client sends its share
//! encrypted under its own key, the server adds its own share as a plaintext, multiplies by its
//! weights, masks, re-randomises and returns ciphertexts whose decryption is the client's new
//! share (the server's is the mask plus the bias). No rotations, relinearisation
//! or Galois keys: one public key per session. Residual adds are local on shares.
//!
//! ## Plaintext modulus: t = 2^ℓ directly
//!
//! moat's shares live in Z_2^ℓ (ℓ = 37). BFV needs an NTT over `t` only for SIMD (batched)
//! encoding; coefficient encoding works for any `t` coprime to the ciphertext primes, and a
//! product of polynomials mod `X^N + 1` with coefficients reduced mod `t = 2^ℓ` is exactly the
//! wrapping ring arithmetic of `moat_nn::kernels`. fhe.rs accepts `t = 2^37` (it builds no
//! plaintext NTT and its decryption scales by `t/q` for any `t`), which `tests/he_fhe_rs.rs`
//! checks empirically: fresh encryption, ct × pt and decryption at N = 4096, q ≈ 2^109. So
//! moat follows Cheetah and uses `t = 2^ℓ`: no prime-field shares, no conversion between a
//! prime `t` and 2^ℓ, and the output share is exact mod 2^ℓ. (With a prime `t` the integer
//! result `W·x` would have to fit below `t` — about 2^70 for a 3×3×512 convolution — or the
//! shares be converted between Z_p and Z_2^ℓ with an extra protocol, as CrypTFlow2's SCI-HE
//! does.)
//!
//! Two details make `t = 2^ℓ` sound with flooding, and are why [`cipher`] does the BFV
//! arithmetic on fhe-math polynomials itself instead of through fhe.rs's `Plaintext` API:
//! the client's message is encoded as `round(q·m/t)` (not `⌊q/t⌋·m`, whose error
//! `(q mod t)·m/t` — up to `t` per coefficient since `q mod t` is arbitrary — would be
//! multiplied by the weights), and weights are lifted centred (fhe.rs lifts plaintexts to
//! `[0, t)`, which would make `−1` a 37-bit weight). The product noise then depends only on
//! the weights' 2-norm ([`HeParams::product_noise_bound`]).
//!
//! ## Parameters ([`params`])
//!
//! Default [`HeParams::n4096`]: N = 4096, q = q₀·q₁ with a 60-bit and a 49-bit prime
//! (109 bits: 128-bit security for ternary secrets per the HE standard), t = 2^37, flooding
//! 2^68, response at q₀ with 11 (c₁) and 20 (c₀) low bits dropped (49 and 40 bits sent). [`HeParams::n8192`] trades
//! ≈ 1.65× query bytes for ≈ 100 bits of circuit privacy per coefficient.
//!
//! ## Modules
//!
//! * [`params`] — vetted parameter sets, their security level and noise budget;
//! * [`encoding`] — the coefficient encodings ([`Packing`]) and their plaintext model;
//! * [`cipher`] — keys, encryption, the server's response (re-randomisation, flooding,
//!   modulus switch, compression), decryption; the wire format;
//! * [`linear`] — the per-party protocol over a [`crate::transport::Channel`].
//!
//! ```no_run
//! use moat_mpc::he::{HeClient, HeParams, HeServer, ServerLayer};
//! use moat_mpc::transport::memory;
//! # fn run(model: moat_nn::QuantizedGraph, node: usize, x0: Vec<u64>, x1: Vec<u64>) -> moat_mpc::Result<()> {
//! let params = HeParams::n4096(model.fixed())?;
//! let (mut server_ch, mut client_ch) = memory::pair(Default::default());
//! // Server: the layer with its weights; client: only the public plan.
//! let layer = ServerLayer::from_quantized(&params, &model, node)?.expect("a linear node");
//! let plan = layer.plan().clone();
//! let client_params = params.clone();
//! let client = std::thread::spawn(move || -> moat_mpc::Result<Vec<u64>> {
//!     let mut client = HeClient::new(&client_params, 2)?;
//!     client.setup(&mut client_ch)?;
//!     client.linear(&mut client_ch, &plan, &x1)
//! });
//! let mut server = HeServer::setup(&params, &mut server_ch, 1)?;
//! let y0 = server.linear(&mut server_ch, &layer, &x0)?;
//! let y1 = client.join().expect("client thread")?;
//! // y0 + y1 = model.linear(node, x0 + x1, true) mod 2^ℓ
//! # Ok(()) }
//! ```

pub mod cipher;
pub mod encoding;
pub mod linear;
pub mod params;

pub use cipher::{PublicKey, SecretKey};
pub use encoding::{LinearShape, Packing, PackingCosts};
pub use linear::{HeClient, HeServer, ServerLayer, predicted_bytes, shape_of};
pub use params::HeParams;
