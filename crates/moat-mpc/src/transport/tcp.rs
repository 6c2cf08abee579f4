//! Framed channel over a blocking TCP stream.
//!
//! `TCP_NODELAY` is set (frames are flushed as whole flights by the buffering, so Nagle would
//! only add latency); reads and writes carry the socket timeouts of [`ChannelConfig::timeout`].
//! Writes go through a buffer that is flushed before each `recv`, on `flush` and on drop.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tracing::debug;

use super::frame::{self, HEADER_LEN};
use super::{Channel, ChannelConfig, Stats, TransportError};

const BUFFER_BYTES: usize = 1 << 16;
/// Payload is read in steps of at most this much, so an announced-but-unsent length cannot
/// make us allocate the whole frame up front.
const READ_STEP: usize = 1 << 20;

/// Exchanges up to this size (both directions) fit in the socket buffers, so
/// [`Channel::exchange`] can write then read; larger ones write from a second thread.
const EXCHANGE_INLINE_BYTES: usize = 1 << 16;

/// One end of a TCP connection carrying frames.
#[derive(Debug)]
pub struct TcpChannel {
    reader: FrameReader,
    writer: BufWriter<TcpStream>,
    config: ChannelConfig,
    stats: Stats,
    broken: bool,
}

/// The read half: frames out of a buffered stream.
#[derive(Debug)]
struct FrameReader {
    inner: BufReader<TcpStream>,
    timeout: Duration,
    max_frame_len: usize,
    /// Part of a frame has been consumed (a timeout now leaves the stream out of step).
    mid_frame: bool,
}

impl FrameReader {
    /// Reads exactly `buf.len()` bytes; `offset` bytes of a frame of `expected` bytes were
    /// read before. EOF before the first byte of a frame is `PeerClosed`, later EOF says how
    /// far the frame got.
    fn read_full(&mut self, buf: &mut [u8], expected: usize, offset: usize) -> Result<(), TransportError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) if offset + filled == 0 => return Err(TransportError::PeerClosed),
                Ok(0) => return Err(TransportError::PeerDisconnectedMidFrame { received: offset + filled, expected }),
                Ok(n) => {
                    filled += n;
                    self.mid_frame = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let err = TransportError::from_io("reading frame", &e, self.timeout);
                    return Err(match err {
                        TransportError::PeerClosed if offset + filled > 0 => {
                            TransportError::PeerDisconnectedMidFrame { received: offset + filled, expected }
                        }
                        other => other,
                    });
                }
            }
        }
        Ok(())
    }

    /// One frame's payload (the caller has flushed its writes).
    fn read_frame(&mut self) -> Result<Vec<u8>, TransportError> {
        let mut header = [0u8; HEADER_LEN];
        self.read_full(&mut header, HEADER_LEN, 0)?;
        let len = frame::decode_header(header, self.max_frame_len)?;
        let mut payload = Vec::with_capacity(len.min(READ_STEP));
        while payload.len() < len {
            let start = payload.len();
            let step = (len - start).min(READ_STEP);
            payload.resize(start + step, 0);
            self.read_full(&mut payload[start..], HEADER_LEN + len, HEADER_LEN + start)?;
        }
        self.mid_frame = false;
        Ok(payload)
    }
}

impl TcpChannel {
    /// Wraps a connected stream: sets `TCP_NODELAY` and the read/write timeouts.
    pub fn from_stream(stream: TcpStream, config: ChannelConfig) -> Result<Self, TransportError> {
        let io = |e: io::Error| TransportError::from_io("configuring socket", &e, config.timeout);
        stream.set_nonblocking(false).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let timeout = Some(config.timeout.max(Duration::from_millis(1)));
        stream.set_read_timeout(timeout).map_err(io)?;
        stream.set_write_timeout(timeout).map_err(io)?;
        let write_half = stream.try_clone().map_err(io)?;
        Ok(Self {
            reader: FrameReader {
                inner: BufReader::with_capacity(BUFFER_BYTES, stream),
                timeout: config.timeout,
                max_frame_len: config.max_frame_len,
                mid_frame: false,
            },
            writer: BufWriter::with_capacity(BUFFER_BYTES, write_half),
            config,
            stats: Stats::new(),
            broken: false,
        })
    }

    /// Connects to `addr` within [`ChannelConfig::connect_timeout`]. A refused connection
    /// (nothing listens there) is reported at once as [`io::ErrorKind::ConnectionRefused`] when
    /// every address refused; other failures are retried until the deadline.
    pub fn connect(addr: impl ToSocketAddrs, config: ChannelConfig) -> Result<Self, TransportError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| TransportError::from_io("resolving address", &e, config.connect_timeout))?
            .collect();
        let deadline = Instant::now() + config.connect_timeout;
        loop {
            let mut last_err = None;
            let mut refused = Vec::new();
            for a in &addrs {
                let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                match TcpStream::connect_timeout(a, remaining) {
                    Ok(stream) => {
                        debug!(peer = %a, "connected");
                        return Self::from_stream(stream, config);
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused.push(a.to_string()),
                    Err(e) => last_err = Some(e),
                }
            }
            if !addrs.is_empty() && refused.len() == addrs.len() {
                return Err(TransportError::Io {
                    context: "connecting",
                    kind: io::ErrorKind::ConnectionRefused,
                    message: format!("connection refused by {} (nothing listens there)", refused.join(", ")),
                });
            }
            if Instant::now() >= deadline {
                return Err(match last_err {
                    Some(e) => TransportError::from_io("connecting", &e, config.connect_timeout),
                    None => TransportError::Timeout { after: config.connect_timeout },
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Accepts one connection on `listener`, waiting at most [`ChannelConfig::connect_timeout`].
    /// (The listener is switched to non-blocking mode while waiting, and back.)
    pub fn accept(listener: &TcpListener, config: ChannelConfig) -> Result<Self, TransportError> {
        let io = |e: io::Error| TransportError::from_io("accepting", &e, config.connect_timeout);
        listener.set_nonblocking(true).map_err(io)?;
        let deadline = Instant::now() + config.connect_timeout;
        let accepted = loop {
            match listener.accept() {
                Ok((stream, peer)) => break Ok((stream, peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        break Err(TransportError::Timeout { after: config.connect_timeout });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(io(e)),
            }
        };
        listener.set_nonblocking(false).map_err(io)?;
        let (stream, peer) = accepted?;
        debug!(%peer, "accepted");
        Self::from_stream(stream, config)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr, TransportError> {
        self.reader
            .inner
            .get_ref()
            .peer_addr()
            .map_err(|e| TransportError::from_io("peer address", &e, self.config.timeout))
    }

    /// The settings of this end.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    fn recv_frame(&mut self) -> Result<Vec<u8>, TransportError> {
        self.flush_writer()?;
        let payload = self.reader.read_frame()?;
        self.stats.record_recv(HEADER_LEN + payload.len());
        Ok(payload)
    }

    /// Writes a frame from a second thread while this one reads the peer's frame.
    fn exchange_concurrently(&mut self, header: [u8; HEADER_LEN], payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        let timeout = self.config.timeout;
        let writer = &mut self.writer;
        let reader = &mut self.reader;
        let (written, read) = std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<(), TransportError> {
                let map = |e: io::Error| TransportError::from_io("writing frame", &e, timeout);
                writer.write_all(&header).map_err(map)?;
                writer.write_all(payload).map_err(map)?;
                writer.flush().map_err(map)
            });
            let read = reader.read_frame();
            let written = handle.join().unwrap_or_else(|_| {
                Err(TransportError::Io {
                    context: "exchange",
                    kind: io::ErrorKind::Other,
                    message: "writer thread panicked".into(),
                })
            });
            (written, read)
        });
        written?;
        self.stats.record_send(HEADER_LEN + payload.len());
        let payload = read?;
        self.stats.record_recv(HEADER_LEN + payload.len());
        Ok(payload)
    }

    fn flush_writer(&mut self) -> Result<(), TransportError> {
        self.writer.flush().map_err(|e| TransportError::from_io("flushing", &e, self.config.timeout))
    }

    fn guard<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, TransportError>) -> Result<T, TransportError> {
        if self.broken {
            return Err(TransportError::Broken);
        }
        let out = f(self);
        if let Err(e) = &out {
            // Only a timeout between frames leaves the byte stream in step.
            let clean = matches!(e, TransportError::Timeout { .. }) && !self.reader.mid_frame;
            if !clean {
                debug!(error = %e, "tcp channel broken");
                self.broken = true;
            }
        }
        out
    }
}

impl Channel for TcpChannel {
    fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        if self.broken {
            return Err(TransportError::Broken);
        }
        // Checked before touching the stream, so an oversized send leaves the channel usable.
        let header = frame::encode_header(payload.len(), self.config.max_frame_len)?;
        let timeout = self.config.timeout;
        self.guard(|ch| {
            let map = |e: io::Error| TransportError::from_io("writing frame", &e, timeout);
            ch.writer.write_all(&header).map_err(map)?;
            ch.writer.write_all(payload).map_err(map)?;
            ch.stats.record_send(HEADER_LEN + payload.len());
            Ok(())
        })
    }

    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        self.guard(Self::recv_frame)
    }

    fn recv_idle(&mut self, idle: Duration) -> Result<Vec<u8>, TransportError> {
        if self.broken {
            return Err(TransportError::Broken);
        }
        let idle = idle.max(Duration::from_millis(1)).min(self.reader.timeout);
        let socket = |ch: &Self, t: Duration| {
            ch.reader
                .inner
                .get_ref()
                .set_read_timeout(Some(t))
                .map_err(|e| TransportError::from_io("configuring socket", &e, t))
        };
        socket(self, idle)?;
        let protocol = std::mem::replace(&mut self.reader.timeout, idle);
        let out = self.guard(Self::recv_frame);
        self.reader.timeout = protocol;
        socket(self, protocol)?;
        out
    }

    /// Large exchanges write from a scoped thread while reading, so two parties exchanging
    /// megabytes at once cannot both block on full socket buffers.
    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        if self.broken {
            return Err(TransportError::Broken);
        }
        let header = frame::encode_header(payload.len(), self.config.max_frame_len)?;
        if payload.len() + self.writer.buffer().len() <= EXCHANGE_INLINE_BYTES {
            self.send(payload)?;
            return self.recv();
        }
        self.guard(|ch| {
            ch.flush_writer()?;
            ch.exchange_concurrently(header, payload)
        })
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        self.guard(Self::flush_writer)
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::transport::Counters;

    fn cfg(ms: u64) -> ChannelConfig {
        ChannelConfig::default().with_timeout(Duration::from_millis(ms)).with_connect_timeout(Duration::from_secs(10))
    }

    /// A connected pair over real loopback sockets; `f` runs on the accepting side in a thread.
    fn with_pair<T: Send + 'static>(
        config: ChannelConfig,
        f: impl FnOnce(TcpChannel) -> T + Send + 'static,
    ) -> Result<(TcpChannel, thread::JoinHandle<Result<T, TransportError>>), TransportError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| TransportError::from_io("bind", &e, config.timeout))?;
        let addr = listener.local_addr().map_err(|e| TransportError::from_io("addr", &e, config.timeout))?;
        let handle = thread::spawn(move || TcpChannel::accept(&listener, config).map(f));
        Ok((TcpChannel::connect(addr, config)?, handle))
    }

    /// A raw socket peer (to write broken frames) and a channel to test.
    fn raw_pair(config: ChannelConfig) -> Result<(TcpStream, TcpChannel), TransportError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| TransportError::from_io("bind", &e, config.timeout))?;
        let addr = listener.local_addr().map_err(|e| TransportError::from_io("addr", &e, config.timeout))?;
        let raw = TcpStream::connect(addr).map_err(|e| TransportError::from_io("connect", &e, config.timeout))?;
        Ok((raw, TcpChannel::accept(&listener, config)?))
    }

    #[test]
    fn round_trip_with_exact_counts() -> Result<(), TransportError> {
        let (mut a, peer) = with_pair(cfg(5_000), |mut b| -> Result<Stats, TransportError> {
            let x = b.recv()?;
            let y = b.recv_ring(3, 37)?;
            assert_eq!((x.as_slice(), y.as_slice()), (&b"hello"[..], &[1u64, 2, (1 << 37) - 1][..]));
            b.set_phase("reply");
            b.send(&vec![7u8; 100_000])?;
            b.send(&[])?;
            let z = b.recv()?;
            assert_eq!(z, b"bye");
            Ok(b.stats().clone())
        })?;
        a.send(b"hello")?;
        a.send_ring(&[1, 2, (1 << 37) - 1], 37)?;
        let big = a.recv()?;
        assert_eq!(big.len(), 100_000);
        assert!(a.recv()?.is_empty());
        a.send(b"bye")?;
        a.flush()?;
        let b_stats = peer.join().map_err(|_| TransportError::Broken)???;
        let ta = a.stats().total();
        // a: frames of 5 and 14 (3·37 bits) then 3 bytes; b: 100000 and 0.
        assert_eq!(
            ta,
            Counters {
                bytes_sent: 9 + 18 + 7,
                bytes_received: 100_004 + 4,
                frames_sent: 3,
                frames_received: 2,
                rounds: 2
            }
        );
        let tb = b_stats.total();
        assert_eq!((tb.bytes_sent, tb.bytes_received, tb.rounds), (ta.bytes_received, ta.bytes_sent, 1));
        assert_eq!(b_stats.phase_counters("reply").bytes_sent, 100_008);
        assert_eq!(b_stats.phase_counters("main").bytes_received, 27);
        Ok(())
    }

    #[test]
    fn large_simultaneous_exchange_does_not_deadlock() -> Result<(), TransportError> {
        const N: usize = 2 << 20; // 2 Mi elements of 37 bits ≈ 9.7 MB each way
        let mine: Vec<u64> = (0..N as u64).map(|i| i * 3).collect();
        let (mut a, peer) = with_pair(cfg(10_000), |mut b| -> Result<Vec<u64>, TransportError> {
            let theirs: Vec<u64> = (0..N as u64).map(|i| i * 5).collect();
            let small = b.exchange(b"hi")?;
            assert_eq!(small, b"yo");
            b.exchange_ring(&theirs, 37)
        })?;
        assert_eq!(a.exchange(b"yo")?, b"hi");
        let got = a.exchange_ring(&mine, 37)?;
        let b_got = peer.join().map_err(|_| TransportError::Broken)???;
        assert!(got.iter().enumerate().all(|(i, &v)| v == 5 * i as u64));
        assert!(b_got.iter().enumerate().all(|(i, &v)| v == 3 * i as u64));
        // Each side: two flights, one per exchange.
        assert_eq!(a.stats().total().rounds, 2);
        Ok(())
    }

    #[test]
    fn truncated_frame_is_a_mid_frame_disconnect() -> Result<(), TransportError> {
        let (mut raw, mut ch) = raw_pair(cfg(5_000))?;
        raw.write_all(&100u32.to_le_bytes())
            .and_then(|_| raw.write_all(&[1; 40]))
            .map_err(|e| TransportError::from_io("w", &e, Duration::ZERO))?;
        drop(raw);
        assert_eq!(ch.recv(), Err(TransportError::PeerDisconnectedMidFrame { received: 44, expected: 104 }));
        assert_eq!(ch.recv(), Err(TransportError::Broken));

        let (mut raw, mut ch) = raw_pair(cfg(5_000))?;
        raw.write_all(&[9, 0]).map_err(|e| TransportError::from_io("w", &e, Duration::ZERO))?; // half a header
        drop(raw);
        assert_eq!(ch.recv(), Err(TransportError::PeerDisconnectedMidFrame { received: 2, expected: 4 }));
        Ok(())
    }

    #[test]
    fn oversized_header_is_refused_without_allocating() -> Result<(), TransportError> {
        let config = cfg(5_000).with_max_frame_len(1 << 20);
        let (mut raw, mut ch) = raw_pair(config)?;
        // Announces 4 GiB − 1 and sends nothing more: must fail at once, not wait or allocate.
        raw.write_all(&u32::MAX.to_le_bytes()).map_err(|e| TransportError::from_io("w", &e, Duration::ZERO))?;
        let start = Instant::now();
        assert_eq!(ch.recv(), Err(TransportError::FrameTooLarge { len: u32::MAX as u64, max: 1 << 20 }));
        assert!(start.elapsed() < Duration::from_secs(2));
        // A too-large send is refused locally and leaves the channel usable.
        assert_eq!(
            TcpChannel::send(&mut TcpChannel::from_stream(raw, config)?, &vec![0; (1 << 20) + 1]),
            Err(TransportError::FrameTooLarge { len: (1 << 20) + 1, max: 1 << 20 })
        );
        Ok(())
    }

    #[test]
    fn silent_peer_times_out_within_the_bound() -> Result<(), TransportError> {
        let (raw, mut ch) = raw_pair(cfg(200))?;
        let start = Instant::now();
        assert_eq!(ch.recv(), Err(TransportError::Timeout { after: Duration::from_millis(200) }));
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(2), "{elapsed:?}");
        // A clean timeout between frames keeps the channel usable.
        let mut raw = raw;
        raw.write_all(&[1, 0, 0, 0, 42]).map_err(|e| TransportError::from_io("w", &e, Duration::ZERO))?;
        assert_eq!(ch.recv()?, vec![42]);
        Ok(())
    }

    #[test]
    fn peer_dropped_mid_protocol_is_a_clean_error() -> Result<(), TransportError> {
        let (mut a, peer) = with_pair(cfg(5_000), |mut b| -> Result<(), TransportError> {
            // Answers twice, then "dies" (drops its socket) instead of answering the third time.
            for _ in 0..2 {
                let m = b.recv()?;
                b.send(&m)?;
            }
            b.recv()?;
            Ok(())
        })?;
        for i in 0..2u8 {
            a.send(&[i; 1000])?;
            assert_eq!(a.recv()?, vec![i; 1000]);
        }
        a.send(&[3; 10])?;
        let start = Instant::now();
        let err = a.recv();
        assert!(matches!(err, Err(TransportError::PeerClosed)), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
        peer.join().map_err(|_| TransportError::Broken)???;
        // Writing to the dead peer fails too (eventually: the first write may still be buffered).
        let mut last = Ok(());
        for _ in 0..100 {
            last = a.send(&[0; 1 << 16]).and_then(|_| a.flush());
            if last.is_err() {
                break;
            }
        }
        assert!(matches!(last, Err(TransportError::PeerClosed | TransportError::Broken)), "{last:?}");
        Ok(())
    }

    #[test]
    fn a_refused_connection_is_reported_as_refused_at_once() {
        // Bind then drop to get a port that is (almost certainly) closed.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(1);
        let config = cfg(100).with_connect_timeout(Duration::from_secs(5));
        let start = Instant::now();
        let err = TcpChannel::connect(("127.0.0.1", port), config);
        assert!(
            matches!(&err, Err(TransportError::Io { kind: io::ErrorKind::ConnectionRefused, message, .. }) if message.contains("refused")),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    }
}
