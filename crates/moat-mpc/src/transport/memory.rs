//! An in-process channel pair: the two parties of a test in two threads of one process.
//!
//! Same semantics as TCP: frame bound on both ends, timeouts on every receive, `PeerClosed`
//! when the other end is dropped, and identical byte/round counting (header included).

use std::sync::mpsc;

use super::frame::{self, HEADER_LEN};
use super::{Channel, ChannelConfig, Stats, TransportError};

/// One end of an in-process channel.
#[derive(Debug)]
pub struct MemoryChannel {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
    config: ChannelConfig,
    stats: Stats,
}

/// Two connected ends.
pub fn pair(config: ChannelConfig) -> (MemoryChannel, MemoryChannel) {
    let (tx_a, rx_b) = mpsc::channel();
    let (tx_b, rx_a) = mpsc::channel();
    (
        MemoryChannel { tx: tx_a, rx: rx_a, config, stats: Stats::new() },
        MemoryChannel { tx: tx_b, rx: rx_b, config, stats: Stats::new() },
    )
}

impl MemoryChannel {
    /// The settings of this end.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }
}

impl Channel for MemoryChannel {
    fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        frame::encode_header(payload.len(), self.config.max_frame_len)?;
        self.tx.send(payload.to_vec()).map_err(|_| TransportError::PeerClosed)?;
        self.stats.record_send(HEADER_LEN + payload.len());
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        let payload = self.rx.recv_timeout(self.config.timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => TransportError::Timeout { after: self.config.timeout },
            mpsc::RecvTimeoutError::Disconnected => TransportError::PeerClosed,
        })?;
        if payload.len() > self.config.max_frame_len {
            return Err(TransportError::FrameTooLarge { len: payload.len() as u64, max: self.config.max_frame_len });
        }
        self.stats.record_recv(HEADER_LEN + payload.len());
        Ok(payload)
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
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
    use std::time::{Duration, Instant};

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_counts() -> Result<(), TransportError> {
        let (mut a, mut b) = pair(ChannelConfig::default());
        a.send(b"abc")?;
        a.send_ring(&[1, 2, 3], 37)?;
        assert_eq!(b.recv()?, b"abc");
        assert_eq!(b.recv_ring(3, 37)?, vec![1, 2, 3]);
        b.send(&[])?;
        assert_eq!(a.recv()?, Vec::<u8>::new());
        // 3-byte frame + 14-byte frame (111 bits), then an empty frame back.
        assert_eq!(a.stats().total().bytes_sent, 7 + 18);
        assert_eq!(b.stats().total().bytes_received, 7 + 18);
        assert_eq!(a.stats().total().rounds + b.stats().total().rounds, 2);
        Ok(())
    }

    #[test]
    fn timeout_and_peer_closed() {
        let cfg = ChannelConfig::default().with_timeout(Duration::from_millis(100));
        let (mut a, b) = pair(cfg);
        let start = Instant::now();
        assert_eq!(a.recv(), Err(TransportError::Timeout { after: Duration::from_millis(100) }));
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(b);
        assert_eq!(a.recv(), Err(TransportError::PeerClosed));
        assert_eq!(a.send(b"x"), Err(TransportError::PeerClosed));
    }

    #[test]
    fn frame_bound_enforced() {
        let (mut a, _b) = pair(ChannelConfig::default().with_max_frame_len(8));
        assert_eq!(a.send(&[0; 9]), Err(TransportError::FrameTooLarge { len: 9, max: 8 }));
    }

    proptest! {
        #[test]
        fn random_frames_never_panic_decoders(payload in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..20, bits in 1u32..=64) {
            let (mut a, mut b) = pair(ChannelConfig::default());
            for _ in 0..3 {
                a.send(&payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let ring = b.recv_ring(n, bits);
            prop_assert!(ring.is_err() || frame::packed_len(n, bits) == Some(payload.len()));
            let bits_ok = b.recv_bits(n);
            prop_assert!(bits_ok.is_err() || payload.len() == n.div_ceil(8));
            let blocks = b.recv_blocks(n);
            prop_assert!(blocks.is_err() || payload.len() == 16 * n);
        }
    }
}
