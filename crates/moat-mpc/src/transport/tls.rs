//! TLS for blocking session channels: a handshake with a deadline, then a relay that hands the
//! caller a plain [`TcpStream`] carrying the decrypted bytes, so [`super::tcp::TcpChannel`] (its
//! framing, timeouts and concurrent large exchanges) runs over TLS unchanged.
//!
//! ```text
//! caller ── TcpChannel ── loopback pair ── relay threads (rustls) ── network socket ── peer
//! ```
//!
//! The loopback pair is made by connecting to a listener bound to `127.0.0.1:0` that is dropped
//! at once; the accepted end is checked to be the one this process connected (its peer address
//! is the connecting socket's own), so no other local process can slip into the pair. Two
//! threads per connection move bytes: *up* reads TLS records from the network and writes the
//! plaintext to the caller's end; *down* reads the caller's plaintext and writes TLS records.
//! The rustls state sits behind a mutex that is never held across a blocking socket call, and a
//! second mutex orders the writes of TLS records, so two peers exchanging megabytes at once
//! cannot deadlock on full socket buffers. When either side closes, both threads end and both
//! sockets are shut down; a network idle longer than the relay's idle limit closes the relay.
//!
//! What the network observer learns: the TLS record lengths and timing (as with any TLS), not
//! the frames. Cost: the TLS handshake (one round trip with TLS 1.3 plus the certificate
//! exchange, a few kB) and 22 bytes of record overhead per record of up to 16 kB.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

pub use rustls;

/// Bytes moved per read on either side.
const CHUNK: usize = 16 * 1024;
/// The first byte of a TLS handshake record.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// A TLS failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The TLS protocol failed (bad certificate, wrong protocol, alert from the peer…).
    #[error("TLS {context}: {source}")]
    Tls {
        /// What was being done.
        context: &'static str,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// A socket operation failed or timed out.
    #[error("TLS {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The handshake did not finish by the deadline.
    #[error("TLS handshake: no answer within {after:?}")]
    Timeout {
        /// The handshake's time limit.
        after: Duration,
    },
}

/// A peer's certificate chain, DER, leaf first.
pub type PeerChain = Vec<Vec<u8>>;

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> TlsError {
    move |source| TlsError::Io { context, source }
}

/// Runs the server side of a TLS handshake on `stream` within `timeout`, then returns the
/// plaintext end of a relay (see the module docs) and the client's certificate chain (DER)
/// when it presented one (mutual TLS).
pub fn accept(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
    idle: Duration,
) -> Result<(TcpStream, Option<PeerChain>), TlsError> {
    let conn = ServerConnection::new(config).map_err(|source| TlsError::Tls { context: "setup", source })?;
    let mut conn = Connection::Server(conn);
    let mut stream = stream;
    handshake(&mut conn, &mut stream, timeout)?;
    let peer_certs = conn.peer_certificates().map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect());
    Ok((relay(conn, stream, idle)?, peer_certs))
}

/// Runs the client side of a TLS handshake with `server_name` (the name or IP the server's
/// certificate must carry) on `stream` within `timeout`, then returns the plaintext end of a
/// relay (see the module docs).
pub fn connect(
    stream: TcpStream,
    config: Arc<ClientConfig>,
    server_name: &str,
    timeout: Duration,
    idle: Duration,
) -> Result<TcpStream, TlsError> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| TlsError::Io {
        context: "server name",
        source: io::Error::new(io::ErrorKind::InvalidInput, format!("'{server_name}': {e}")),
    })?;
    let conn = ClientConnection::new(config, name).map_err(|source| TlsError::Tls { context: "setup", source })?;
    let mut conn = Connection::Client(conn);
    let mut stream = stream;
    handshake(&mut conn, &mut stream, timeout)?;
    relay(conn, stream, idle)
}

/// Drives the handshake to completion, bounded by `timeout` however slowly the peer answers.
/// On a TLS error the alert rustls queued is sent before returning.
fn handshake(conn: &mut Connection, stream: &mut TcpStream, timeout: Duration) -> Result<(), TlsError> {
    let deadline = Instant::now() + timeout;
    stream.set_nonblocking(false).map_err(io_err("socket setup"))?;
    while conn.is_handshaking() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(TlsError::Timeout { after: timeout });
        }
        stream.set_read_timeout(Some(remaining)).map_err(io_err("socket setup"))?;
        stream.set_write_timeout(Some(remaining)).map_err(io_err("socket setup"))?;
        while conn.wants_write() {
            conn.write_tls(stream).map_err(io_err("handshake write"))?;
        }
        if !conn.is_handshaking() {
            break;
        }
        match conn.read_tls(stream) {
            Ok(0) => {
                return Err(TlsError::Io {
                    context: "handshake",
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection"),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(TlsError::Timeout { after: timeout });
            }
            Err(e) => return Err(TlsError::Io { context: "handshake read", source: e }),
        }
        if let Err(source) = conn.process_new_packets() {
            // Tell the peer why (rustls queued an alert); best effort.
            while conn.wants_write() {
                if conn.write_tls(stream).is_err() {
                    break;
                }
            }
            return Err(TlsError::Tls { context: "handshake", source });
        }
    }
    // Flush the last flight (e.g. the client's Finished).
    while conn.wants_write() {
        conn.write_tls(stream).map_err(io_err("handshake write"))?;
    }
    Ok(())
}

/// A loopback pair: (the caller's end, the relay's end).
fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let ours = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let theirs = loop {
        match listener.accept() {
            Ok((s, peer)) if peer == ours.local_addr()? => break s,
            // Someone else connected to the short-lived listener: refuse to use it.
            Ok((_s, peer)) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("unexpected local connection from {peer} to the TLS relay"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    };
    drop(listener);
    theirs.set_nonblocking(false)?;
    ours.set_nodelay(true)?;
    theirs.set_nodelay(true)?;
    Ok((ours, theirs))
}

/// Starts the relay threads for an established connection; returns the caller's end.
fn relay(conn: Connection, net: TcpStream, idle: Duration) -> Result<TcpStream, TlsError> {
    let (ours, theirs) = loopback_pair().map_err(io_err("relay setup"))?;
    let idle = Some(idle.max(Duration::from_millis(1)));
    net.set_read_timeout(idle).map_err(io_err("relay setup"))?;
    net.set_write_timeout(idle).map_err(io_err("relay setup"))?;
    net.set_nodelay(true).map_err(io_err("relay setup"))?;
    let conn = Arc::new(Mutex::new(conn));
    let net_writer = Arc::new(Mutex::new(net.try_clone().map_err(io_err("relay setup"))?));
    let up = Relay {
        conn: Arc::clone(&conn),
        net: net.try_clone().map_err(io_err("relay setup"))?,
        net_writer: Arc::clone(&net_writer),
        local: theirs.try_clone().map_err(io_err("relay setup"))?,
    };
    let down = Relay { conn, net, net_writer, local: theirs };
    std::thread::Builder::new()
        .name("moat-tls-up".into())
        .spawn(move || up.run_up())
        .map_err(io_err("relay thread"))?;
    std::thread::Builder::new()
        .name("moat-tls-down".into())
        .spawn(move || down.run_down())
        .map_err(io_err("relay thread"))?;
    Ok(ours)
}

/// One direction of the relay.
struct Relay {
    conn: Arc<Mutex<Connection>>,
    net: TcpStream,
    net_writer: Arc<Mutex<TcpStream>>,
    local: TcpStream,
}

impl Relay {
    /// Encrypted records queued by rustls, written in order under the writer lock (taken
    /// before the rustls lock is released, never while waiting on a socket with it).
    fn flush_records(&self, mut conn: std::sync::MutexGuard<'_, Connection>) -> io::Result<()> {
        let mut records = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut records)?;
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut writer = self.net_writer.lock().unwrap_or_else(PoisonError::into_inner);
        drop(conn);
        writer.write_all(&records)?;
        writer.flush()
    }

    fn close(&self) {
        let _ = self.local.shutdown(Shutdown::Both);
        let _ = self.net.shutdown(Shutdown::Both);
    }

    /// Network → caller. Records read during the handshake may already hold data (a client's
    /// first frame often arrives with its Finished): that is delivered first.
    fn run_up(mut self) {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        loop {
            let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            let (out, conn, failed, peer_closed) = decrypt(conn, &buf[..n]);
            if let Err(e) = self.flush_records(conn) {
                tracing::debug!(error = %e, "TLS relay: network write failed");
                break;
            }
            if !out.is_empty() && self.local.write_all(&out).is_err() {
                break;
            }
            if failed {
                break;
            }
            if peer_closed {
                let _ = self.local.shutdown(Shutdown::Write);
                return;
            }
            n = match self.net.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    tracing::debug!(error = %e, "TLS relay: network read ended");
                    break;
                }
            };
        }
        self.close();
    }

    /// Caller → network.
    fn run_down(mut self) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match self.local.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            if conn.writer().write_all(&buf[..n]).is_err() {
                break;
            }
            if let Err(e) = self.flush_records(conn) {
                tracing::debug!(error = %e, "TLS relay: network write failed");
                break;
            }
        }
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        conn.send_close_notify();
        let _ = self.flush_records(conn);
        self.close();
    }
}

/// Feeds `input` (TLS records) to `conn` and takes out every byte of plaintext it holds;
/// also whether the stream failed and whether the peer closed it.
fn decrypt<'a>(
    mut conn: std::sync::MutexGuard<'a, Connection>,
    input: &[u8],
) -> (Vec<u8>, std::sync::MutexGuard<'a, Connection>, bool, bool) {
    let mut input = input;
    let mut out = Vec::new();
    let mut plain = [0u8; 4096];
    loop {
        if !input.is_empty()
            && let Err(e) = conn.read_tls(&mut input)
        {
            tracing::debug!(error = %e, "TLS relay: bad record stream");
            return (out, conn, true, false);
        }
        let state = match conn.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                tracing::debug!(error = %e, "TLS relay: TLS error");
                return (out, conn, true, false);
            }
        };
        loop {
            match conn.reader().read(&mut plain) {
                Ok(0) => break,
                Ok(k) => out.extend_from_slice(&plain[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return (out, conn, true, false),
            }
        }
        if input.is_empty() {
            return (out, conn, false, state.peer_has_closed());
        }
    }
}

/// True when `byte`, the first a client sent, cannot start a TLS connection (e.g. a plaintext
/// client talking to a TLS port).
pub fn is_not_tls(byte: u8) -> bool {
    byte != TLS_HANDSHAKE_BYTE
}
