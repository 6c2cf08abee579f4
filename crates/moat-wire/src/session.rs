//! The session port's handshake (`moat-session/1`), before the two-party protocol starts.
//!
//! Frames are those of moat-mpc's transport — a `u32` little-endian length, then the payload —
//! so a client can speak the handshake on the same channel it then runs the protocol on:
//!
//! 1. client → server: one frame holding the session token (ASCII, at most
//!    [`MAX_TOKEN_FRAME`] bytes), within the handshake timeout of connecting;
//! 2. server → client: one JSON frame, [`HandshakeReply`]: `{"accepted": true}`, after which the
//!    `moat-2pc/3` session follows on the same connection (the server's hello first), or
//!    `{"accepted": false, "reason": "unknown_token", "error": "…"}`, after which the server
//!    closes the connection. The reasons are [`Refusal`]'s.
//!
//! A server without tokens (`moat secure server`) skips step 1 and sends its hello at once; the
//! only frame it sends instead of the hello is a `busy` refusal.
//!
//! The frame functions take any byte stream, so a TLS stream works as well as a TCP one: reads
//! need [`DeadlineRead`] to bound a peer that trickles bytes in.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Name and version of the handshake.
pub const HANDSHAKE: &str = "moat-session/1";

/// Largest token frame a server reads.
pub const MAX_TOKEN_FRAME: usize = 256;

/// Why the session port turned a connection down. The wire form (`snake_case`) is stable; a
/// reason this version does not know reads as [`Refusal::Unrecognised`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// The first frame was not a token frame (too long, or not a frame).
    BadHandshake,
    /// Every session slot is taken: the token stays valid, retry before it expires.
    Busy,
    /// The token expired before it was presented.
    Expired,
    /// The server is shutting down.
    ShuttingDown,
    /// The model cannot be prepared for two-party inference.
    Unavailable,
    /// Never issued, already used, or swept after expiring.
    UnknownToken,
    /// The session port speaks TLS and the client connected in plaintext.
    TlsRequired,
    /// The shared token store (Redis) cannot be reached; retry shortly.
    StoreUnavailable,
    /// A reason newer than this client.
    #[serde(other)]
    Unrecognised,
}

impl Refusal {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadHandshake => "bad_handshake",
            Refusal::Busy => "busy",
            Refusal::Expired => "expired",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Unavailable => "unavailable",
            Refusal::UnknownToken => "unknown_token",
            Refusal::TlsRequired => "tls_required",
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::Unrecognised => "unrecognised",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's answer to a token (or, from a tokenless server, its `busy` refusal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeReply {
    /// Whether the session starts.
    pub accepted: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Refusal>,
    /// Human-readable refusal message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HandshakeReply {
    /// The acceptance.
    pub fn accepted() -> Self {
        Self { accepted: true, reason: None, error: None }
    }

    /// A refusal.
    pub fn refused(reason: Refusal, error: impl Into<String>) -> Self {
        Self { accepted: false, reason: Some(reason), error: Some(error.into()) }
    }

    /// The reply in a frame's payload.
    pub fn from_frame(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// The frame payload of the reply.
    pub fn to_frame(&self) -> Vec<u8> {
        // A struct of a bool, an enum and strings always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `Ok` for an acceptance, else the reason (a refusal without one reads as
    /// [`Refusal::Unrecognised`]) and the message.
    pub fn into_result(self) -> Result<(), (Refusal, String)> {
        if self.accepted {
            Ok(())
        } else {
            Err((self.reason.unwrap_or(Refusal::Unrecognised), self.error.unwrap_or_default()))
        }
    }
}

/// A byte stream whose reads can be bounded in time (a TCP stream, or a TLS stream over one).
pub trait DeadlineRead: Read {
    /// Bounds each following read by `timeout` (`None`: no bound).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

impl DeadlineRead for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl<T: DeadlineRead + ?Sized> DeadlineRead for &mut T {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }
}

fn deadline_passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "handshake deadline passed")
}

/// Reads exactly `buf.len()` bytes, failing with `TimedOut` at `deadline` however slowly the
/// peer trickles bytes in.
fn read_until<S: DeadlineRead + ?Sized>(stream: &mut S, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(deadline_passed());
        }
        stream.set_read_timeout(Some(remaining))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the handshake")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(deadline_passed());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one frame of at most `max` bytes before `deadline`.
pub fn read_frame<S: DeadlineRead + ?Sized>(stream: &mut S, max: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    read_until(stream, &mut header, deadline)?;
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes, at most {max} expected"),
        ));
    }
    let mut payload = vec![0u8; len];
    read_until(stream, &mut payload, deadline)?;
    Ok(payload)
}

/// Writes one frame (header and payload in one write).
pub fn write_frame<W: Write + ?Sized>(stream: &mut W, payload: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(payload.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut bytes = Vec::with_capacity(4 + payload.len());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(payload);
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Writes the reply frame.
pub fn write_reply<W: Write + ?Sized>(stream: &mut W, reply: &HandshakeReply) -> io::Result<()> {
    write_frame(stream, &reply.to_frame())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn pair() -> io::Result<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        Ok((client, server))
    }

    #[test]
    fn frames_round_trip_and_are_bounded() -> io::Result<()> {
        let (mut client, mut server) = pair()?;
        write_frame(&mut client, b"abc")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(read_frame(&mut server, 16, deadline)?, b"abc");
        // An announced length above the bound is refused from the header alone.
        client.write_all(&1_000_000u32.to_le_bytes())?;
        let err = read_frame(&mut server, 16, deadline).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::InvalidData));
        Ok(())
    }

    #[test]
    fn a_trickling_peer_hits_the_overall_deadline() -> io::Result<()> {
        let (mut client, mut server) = pair()?;
        // Half a header, then silence: the read gives up at the deadline, not per byte.
        client.write_all(&[5, 0])?;
        let start = Instant::now();
        let err = read_frame(&mut server, 16, start + Duration::from_millis(200)).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert!(start.elapsed() < Duration::from_secs(3));
        Ok(())
    }

    #[test]
    fn replies_are_json_with_stable_reasons() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(String::from_utf8(HandshakeReply::accepted().to_frame())?, r#"{"accepted":true}"#);
        let busy = HandshakeReply::refused(Refusal::Busy, "all 2 session slots are in use");
        assert_eq!(
            String::from_utf8(busy.to_frame())?,
            r#"{"accepted":false,"reason":"busy","error":"all 2 session slots are in use"}"#
        );
        assert_eq!(HandshakeReply::from_frame(&busy.to_frame())?, busy);
        for reason in [
            Refusal::BadHandshake,
            Refusal::Busy,
            Refusal::Expired,
            Refusal::ShuttingDown,
            Refusal::Unavailable,
            Refusal::UnknownToken,
        ] {
            assert_eq!(serde_json::to_value(reason)?, serde_json::json!(reason.as_str()));
        }
        // A reason from a newer server still parses.
        let newer = HandshakeReply::from_frame(br#"{"accepted":false,"reason":"maintenance"}"#)?;
        assert_eq!(newer.into_result(), Err((Refusal::Unrecognised, String::new())));
        Ok(())
    }
}
