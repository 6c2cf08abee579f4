//! In-process emulation of a network link's bandwidth and latency.
//!
//! [`Shaped`] wraps a channel on *both* parties and sleeps according to a [`NetworkModel`]:
//!
//! - the sender pays serialisation time, `8·(payload + 4) / bandwidth` per frame (accumulated
//!   and slept in steps of at least 1 ms, and before every `recv`/`flush`);
//! - the receiver pays one one-way latency when the first frame of an incoming flight arrives
//!   (a `recv` that follows a `send`, or the first `recv`).
//!
//! So a protocol of `r` flights and `B` bytes costs about `r·latency + B/bandwidth` on top of
//! computation, which is the model Cheetah and CrypTFlow2 report under. **Fidelity:** no overlap
//! of transfer with the peer's computation (pipelined protocols look slower than on a real
//! link), no TCP slow start or congestion window, sleep granularity ≈ 0.1 ms (so the LAN
//! latency of 0.15 ms is approximate). For real measurements use `tc netem` (crate docs).

use std::time::Duration;

use super::{Channel, Stats, TransportError, frame::HEADER_LEN};

/// Bandwidth and one-way latency of a link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkModel {
    /// Bits per second in each direction.
    pub bandwidth_bits_per_sec: f64,
    /// One-way latency.
    pub latency: Duration,
}

impl NetworkModel {
    /// LAN of the Cheetah/CrypTFlow2 evaluations: 3 Gbit/s, 0.15 ms one-way.
    pub const LAN: NetworkModel = NetworkModel { bandwidth_bits_per_sec: 3.0e9, latency: Duration::from_micros(150) };
    /// WAN of the same evaluations: 400 Mbit/s, 20 ms one-way.
    pub const WAN: NetworkModel = NetworkModel { bandwidth_bits_per_sec: 400.0e6, latency: Duration::from_millis(20) };

    /// Predicted link time of `rounds` flights carrying `bytes` in total.
    pub fn predict(&self, bytes: u64, rounds: u64) -> Duration {
        self.latency * rounds as u32 + Duration::from_secs_f64(8.0 * bytes as f64 / self.bandwidth_bits_per_sec)
    }
}

/// A channel that sleeps like a link of the given model (see the module docs for fidelity).
#[derive(Debug)]
pub struct Shaped<C> {
    inner: C,
    model: NetworkModel,
    debt: Duration,
    last_was_recv: bool,
}

impl<C: Channel> Shaped<C> {
    /// Wraps `inner`.
    pub fn new(inner: C, model: NetworkModel) -> Self {
        Self { inner, model, debt: Duration::ZERO, last_was_recv: false }
    }

    /// The wrapped channel.
    pub fn into_inner(self) -> C {
        self.inner
    }

    fn pay_debt(&mut self) {
        if !self.debt.is_zero() {
            std::thread::sleep(self.debt);
            self.debt = Duration::ZERO;
        }
    }
}

impl<C: Channel> Channel for Shaped<C> {
    fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        self.inner.send(payload)?;
        self.last_was_recv = false;
        let bits = 8.0 * (payload.len() + HEADER_LEN) as f64;
        self.debt += Duration::from_secs_f64(bits / self.model.bandwidth_bits_per_sec);
        if self.debt >= Duration::from_millis(1) {
            self.pay_debt();
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        self.pay_debt();
        self.inner.flush()?;
        let out = self.inner.recv()?;
        if !self.last_was_recv {
            std::thread::sleep(self.model.latency);
        }
        self.last_was_recv = true;
        Ok(out)
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        self.pay_debt();
        self.inner.flush()
    }

    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        let bits = 8.0 * (payload.len() + HEADER_LEN) as f64;
        self.debt += Duration::from_secs_f64(bits / self.model.bandwidth_bits_per_sec);
        self.pay_debt();
        let out = self.inner.exchange(payload)?;
        std::thread::sleep(self.model.latency);
        self.last_was_recv = true;
        Ok(out)
    }

    fn stats(&self) -> &Stats {
        self.inner.stats()
    }

    fn stats_mut(&mut self) -> &mut Stats {
        self.inner.stats_mut()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::transport::memory;

    #[test]
    fn ping_pong_pays_latency_per_flight() -> Result<(), TransportError> {
        let model = NetworkModel { bandwidth_bits_per_sec: 1e9, latency: Duration::from_millis(10) };
        let (a, b) = memory::pair(Default::default());
        let (mut a, mut b) = (Shaped::new(a, model), Shaped::new(b, model));
        let start = Instant::now();
        let t = std::thread::spawn(move || -> Result<(), TransportError> {
            for _ in 0..3 {
                let m = b.recv()?;
                b.send(&m)?;
            }
            Ok(())
        });
        for _ in 0..3 {
            a.send(&[0; 100])?;
            a.recv()?;
        }
        t.join().map_err(|_| TransportError::Broken)??;
        let elapsed = start.elapsed();
        // 6 flights × 10 ms; bandwidth negligible.
        assert!(elapsed >= Duration::from_millis(60), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
        assert_eq!(model.predict(0, 6), Duration::from_millis(60));
        Ok(())
    }
}
