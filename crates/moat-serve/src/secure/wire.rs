//! The session port's handshake (`moat-session/1`), before the two-party protocol starts.
//!
//! Frames are those of [`moat_mpc::transport`] — a `u32` little-endian length, then the
//! payload — so a client can speak the handshake on the same `TcpChannel` it then runs the
//! protocol on:
//!
//! 1. client → server: one frame holding the session token (ASCII, at most
//!    [`MAX_TOKEN_FRAME`] bytes), within the handshake timeout of connecting;
//! 2. server → client: one JSON frame, [`HandshakeReply`]: `{"accepted": true}`, after which the
//!    `moat-2pc/1` session follows on the same connection (the server's hello first), or
//!    `{"accepted": false, "reason": "unknown_token", "error": "…"}`, after which the server
//!    closes the connection.
//!
//! Refusal reasons: `unknown_token` (never issued, already used or swept), `expired`,
//! `busy` (every session slot is taken: the token stays valid, retry before it expires),
//! `shutting_down`, `unavailable` (the model cannot be prepared), `bad_handshake`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Name and version of the handshake.
pub const HANDSHAKE: &str = "moat-session/1";

/// Largest token frame the server reads.
pub const MAX_TOKEN_FRAME: usize = 256;

/// The server's answer to a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeReply {
    /// Whether the session starts.
    pub accepted: bool,
    /// Machine-readable refusal reason (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    pub fn refused(reason: &str, error: impl Into<String>) -> Self {
        Self { accepted: false, reason: Some(reason.to_string()), error: Some(error.into()) }
    }
}

/// Reads exactly `buf.len()` bytes, failing with `TimedOut` at `deadline` however slowly the
/// peer trickles bytes in.
fn read_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake deadline passed"));
        }
        stream.set_read_timeout(Some(remaining))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the handshake")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake deadline passed"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one frame of at most `max` bytes before `deadline`.
pub fn read_frame(stream: &mut TcpStream, max: usize, deadline: Instant) -> io::Result<Vec<u8>> {
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

/// Writes one frame.
pub fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(payload.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut bytes = Vec::with_capacity(4 + payload.len());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(payload);
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Writes the reply frame.
pub fn write_reply(stream: &mut TcpStream, reply: &HandshakeReply) -> io::Result<()> {
    let json = serde_json::to_vec(reply).map_err(io::Error::other)?;
    write_frame(stream, &json)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

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
    fn replies_are_json() -> Result<(), Box<dyn std::error::Error>> {
        let text = serde_json::to_string(&HandshakeReply::accepted())?;
        assert_eq!(text, r#"{"accepted":true}"#);
        let refused: HandshakeReply = serde_json::from_str(&serde_json::to_string(&HandshakeReply::refused(
            "busy",
            "all 2 session slots are in use",
        ))?)?;
        assert_eq!(refused.reason.as_deref(), Some("busy"));
        Ok(())
    }
}
