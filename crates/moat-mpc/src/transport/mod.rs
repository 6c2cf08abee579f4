//! Transport: a framed, length-prefixed, blocking message channel with byte/round counters.
//!
//! [`Channel`] is what every protocol of the crate talks to. Two implementations:
//! [`tcp::TcpChannel`] (real sockets, two processes) and [`memory::pair`] (two threads of one
//! process, for tests), with the same semantics:
//!
//! - a frame is a `u32` little-endian length and the payload ([`frame`]); frames above
//!   [`ChannelConfig::max_frame_len`] are refused on both ends, the receiver refusing from the
//!   header alone (nothing is allocated);
//! - every wait is bounded: a read that sees no data for [`ChannelConfig::timeout`] fails with
//!   [`TransportError::Timeout`] (an *idle* timeout: a frame that keeps arriving is not cut off);
//! - the peer going away yields [`TransportError::PeerClosed`] at a frame boundary and
//!   [`TransportError::PeerDisconnectedMidFrame`] inside one;
//! - writes are buffered and flushed before every `recv`, so a flight of frames costs one
//!   latency; traffic is counted per phase in [`Stats`] ([`stats`]).
//!
//! After any error other than a clean `Timeout` between frames the channel is broken (the byte
//! stream may be out of step) and every later call returns [`TransportError::Broken`].
//!
//! [`shaped::Shaped`] emulates a LAN/WAN link in-process; the crate docs give the `tc netem`
//! recipe for measuring over a real shaped link.

pub mod first;
pub mod frame;
pub mod memory;
pub mod shaped;
pub mod stats;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;

use std::io;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

pub use stats::{Counters, Stats, StatsSnapshot};

use crate::Block;
use crate::bits::BitVec;

/// A transport failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// An earlier error left the channel unusable.
    #[error("channel is broken by an earlier error")]
    Broken,
    /// A frame length above the configured bound (sent or announced by the peer).
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The offending length.
        len: u64,
        /// The configured bound.
        max: usize,
    },
    /// A local misuse of the channel API (never caused by the peer).
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// What was wrong.
        detail: String,
    },
    /// Any other I/O error.
    #[error("{context}: I/O error ({kind:?}): {message}")]
    Io {
        /// The operation that failed.
        context: &'static str,
        /// The I/O error kind.
        kind: io::ErrorKind,
        /// Its message.
        message: String,
    },
    /// A frame whose payload has the wrong length for what the protocol expects.
    #[error("malformed message: expected {expected} bytes, got {got}")]
    LengthMismatch {
        /// Bytes the protocol step expects.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A frame whose content cannot be decoded.
    #[error("malformed message: {detail}")]
    Malformed {
        /// What was wrong.
        detail: String,
    },
    /// The peer closed the connection (at a frame boundary).
    #[error("peer closed the connection")]
    PeerClosed,
    /// The peer disconnected in the middle of a frame.
    #[error("peer disconnected mid-frame (received {received} of {expected} bytes)")]
    PeerDisconnectedMidFrame {
        /// Bytes of the frame (header or payload) received.
        received: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// No data from the peer within the timeout.
    #[error("timed out after {after:?} waiting for the peer")]
    Timeout {
        /// The configured timeout.
        after: Duration,
    },
}

impl TransportError {
    /// Maps an I/O error: disconnects to `PeerClosed`, timeouts to `Timeout`, the rest to `Io`.
    pub fn from_io(context: &'static str, err: &io::Error, timeout: Duration) -> Self {
        use io::ErrorKind as K;
        match err.kind() {
            K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted | K::NotConnected | K::UnexpectedEof => {
                TransportError::PeerClosed
            }
            K::WouldBlock | K::TimedOut => TransportError::Timeout { after: timeout },
            kind => TransportError::Io { context, kind, message: err.to_string() },
        }
    }
}

/// Settings shared by all channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Bound on every wait for the peer (read idle time, write stall). Default 60 s.
    pub timeout: Duration,
    /// Largest payload accepted or sent. Default 256 MiB (at most `u32::MAX`).
    pub max_frame_len: usize,
    /// Bound on establishing a TCP connection (connect retries, accept). Default 60 s.
    pub connect_timeout: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(60), max_frame_len: 256 << 20, connect_timeout: Duration::from_secs(60) }
    }
}

impl ChannelConfig {
    /// The same with another I/O timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same with another frame bound (clamped to `u32::MAX`).
    pub fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max.min(u32::MAX as usize);
        self
    }

    /// The same with another connection timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// A reliable, ordered, framed, blocking message channel to the other party.
///
/// Implementations count traffic in their [`Stats`]; the provided methods add typed
/// encodings (ring elements, bits, blocks) that check lengths on receipt. The trait is
/// dyn-compatible: protocols take `&mut dyn Channel`.
pub trait Channel {
    /// Queues one frame (it may be buffered until [`Channel::flush`] or the next `recv`).
    fn send(&mut self, payload: &[u8]) -> Result<(), TransportError>;

    /// Flushes pending frames, then blocks for the next frame (bounded by the timeout).
    fn recv(&mut self) -> Result<Vec<u8>, TransportError>;

    /// [`Self::recv`], but a peer that starts no frame within `idle` is a
    /// [`TransportError::Timeout`] after `idle` (a frame once started still has the channel's
    /// own timeout). The stream stays in step. What a server waits with between two requests,
    /// so an idle client does not hold its slot for the whole protocol timeout. Channels
    /// without a socket clock (in memory) wait as [`Self::recv`] does.
    fn recv_idle(&mut self, idle: Duration) -> Result<Vec<u8>, TransportError> {
        let _ = idle;
        self.recv()
    }

    /// Writes out buffered frames.
    fn flush(&mut self) -> Result<(), TransportError>;

    /// The traffic counters.
    fn stats(&self) -> &Stats;

    /// The traffic counters, mutably (to set the phase or reset).
    fn stats_mut(&mut self) -> &mut Stats;

    /// Sets the phase label that traffic is attributed to; returns the previous label.
    fn set_phase(&mut self, label: &str) -> String {
        self.stats_mut().set_phase(label)
    }

    /// Sends `payload` and receives the peer's frame of the same step, when both parties send
    /// at once (e.g. opening shares). One round-trip latency for the pair instead of two; safe
    /// for payloads of any size (TCP writes from a second thread when the socket buffers could
    /// fill up, where a plain `send` + `recv` on both sides could deadlock until the timeout).
    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.send(payload)?;
        self.recv()
    }

    /// [`Channel::exchange`] of `bits`-bit ring elements; the peer must send `values.len()`.
    fn exchange_ring(&mut self, values: &[u64], bits: u32) -> Result<Vec<u64>, TransportError> {
        let bytes = frame::pack_ring(values, bits)?;
        let got = self.exchange(&bytes)?;
        frame::unpack_ring(&got, values.len(), bits)
    }

    /// Receives a frame that must be exactly `len` bytes.
    fn recv_exact(&mut self, len: usize) -> Result<Vec<u8>, TransportError> {
        let bytes = self.recv()?;
        if bytes.len() != len {
            return Err(TransportError::LengthMismatch { expected: len, got: bytes.len() });
        }
        Ok(bytes)
    }

    /// Sends ring elements bit-packed at `bits` bits each (values reduced mod 2^bits).
    fn send_ring(&mut self, values: &[u64], bits: u32) -> Result<(), TransportError> {
        let bytes = frame::pack_ring(values, bits)?;
        self.send(&bytes)
    }

    /// Receives exactly `n` ring elements of `bits` bits (see [`frame::unpack_ring`]).
    fn recv_ring(&mut self, n: usize, bits: u32) -> Result<Vec<u64>, TransportError> {
        let bytes = self.recv()?;
        frame::unpack_ring(&bytes, n, bits)
    }

    /// Sends a bit vector in `⌈len/8⌉` bytes.
    fn send_bits(&mut self, bits: &BitVec) -> Result<(), TransportError> {
        self.send(&bits.to_bytes())
    }

    /// Receives exactly `n` bits.
    fn recv_bits(&mut self, n: usize) -> Result<BitVec, TransportError> {
        let bytes = self.recv_exact(n.div_ceil(8))?;
        BitVec::from_bytes(&bytes, n)
            .ok_or_else(|| TransportError::Malformed { detail: format!("nonzero padding after {n} bits") })
    }

    /// Sends 128-bit blocks, 16 bytes each.
    fn send_blocks(&mut self, blocks: &[Block]) -> Result<(), TransportError> {
        let mut bytes = Vec::with_capacity(16 * blocks.len());
        for b in blocks {
            bytes.extend_from_slice(&b.to_le_bytes());
        }
        self.send(&bytes)
    }

    /// Receives exactly `n` blocks.
    fn recv_blocks(&mut self, n: usize) -> Result<Vec<Block>, TransportError> {
        let len = n
            .checked_mul(16)
            .ok_or_else(|| TransportError::InvalidArgument { detail: format!("{n} blocks overflow a frame") })?;
        let bytes = self.recv_exact(len)?;
        Ok(blocks_from_bytes(&bytes))
    }
}

/// Runs `f` with the traffic it causes attributed to the phase `label`, then restores the
/// phase that was current (also when `f` fails). Phases nest: a protocol can label its own
/// part of whatever phase its caller set, e.g. `"3:relu_3/trunc"` inside `"3:relu_3"`.
pub fn in_phase<T>(ch: &mut dyn Channel, label: &str, f: impl FnOnce(&mut dyn Channel) -> T) -> T {
    let previous = ch.set_phase(label);
    let out = f(ch);
    ch.set_phase(&previous);
    out
}

/// [`in_phase`] under `"{current}{suffix}"`: a sub-phase of the current phase, so that a
/// prefix sum over the current label ([`StatsSnapshot::sum_prefix`]) still counts it.
pub fn in_subphase<T>(ch: &mut dyn Channel, suffix: &str, f: impl FnOnce(&mut dyn Channel) -> T) -> T {
    let label = format!("{}{suffix}", ch.stats().phase());
    in_phase(ch, &label, f)
}

/// Decodes 16-byte little-endian blocks (a trailing partial block is ignored; callers check lengths).
pub fn blocks_from_bytes(bytes: &[u8]) -> Vec<Block> {
    bytes
        .chunks_exact(16)
        .map(|c| {
            let mut b = [0u8; 16];
            b.copy_from_slice(c);
            u128::from_le_bytes(b)
        })
        .collect()
}

impl<C: Channel + ?Sized> Channel for &mut C {
    fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        (**self).send(payload)
    }
    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        (**self).recv()
    }
    fn recv_idle(&mut self, idle: Duration) -> Result<Vec<u8>, TransportError> {
        (**self).recv_idle(idle)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        (**self).flush()
    }
    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).exchange(payload)
    }
    fn stats(&self) -> &Stats {
        (**self).stats()
    }
    fn stats_mut(&mut self) -> &mut Stats {
        (**self).stats_mut()
    }
}

impl<C: Channel + ?Sized> Channel for Box<C> {
    fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        (**self).send(payload)
    }
    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        (**self).recv()
    }
    fn recv_idle(&mut self, idle: Duration) -> Result<Vec<u8>, TransportError> {
        (**self).recv_idle(idle)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        (**self).flush()
    }
    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).exchange(payload)
    }
    fn stats(&self) -> &Stats {
        (**self).stats()
    }
    fn stats_mut(&mut self) -> &mut Stats {
        (**self).stats_mut()
    }
}

/// A scoped phase label: traffic through the guard is attributed to `label`; the previous
/// label is restored when the guard drops.
///
/// ```
/// use moat_mpc::transport::{memory, Channel, PhaseGuard};
/// let (mut a, mut b) = memory::pair(Default::default());
/// {
///     let mut relu = PhaseGuard::new(&mut a, "relu:layer3");
///     relu.send(b"hello")?;
/// }
/// assert_eq!(a.stats().phase(), "main");
/// assert_eq!(a.stats().phase_counters("relu:layer3").bytes_sent, 4 + 5);
/// assert_eq!(b.recv()?, b"hello");
/// # Ok::<(), moat_mpc::transport::TransportError>(())
/// ```
pub struct PhaseGuard<'a, C: Channel + ?Sized> {
    channel: &'a mut C,
    previous: String,
}

impl<'a, C: Channel + ?Sized> PhaseGuard<'a, C> {
    /// Enters phase `label` on `channel` until the guard drops.
    pub fn new(channel: &'a mut C, label: &str) -> Self {
        let previous = channel.set_phase(label);
        Self { channel, previous }
    }
}

impl<C: Channel + ?Sized> Deref for PhaseGuard<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.channel
    }
}

impl<C: Channel + ?Sized> DerefMut for PhaseGuard<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.channel
    }
}

impl<C: Channel + ?Sized> Drop for PhaseGuard<'_, C> {
    fn drop(&mut self) {
        let previous = std::mem::take(&mut self.previous);
        self.channel.set_phase(&previous);
    }
}
