//! [`FirstRecv`]: a channel that hands its first received frame to a hook.
//!
//! What a party does differently before the peer's first frame — a server that gives the
//! client a shorter deadline for its first message, a client that recognises a refusal sent
//! instead of the protocol's hello — wraps the channel for the setup instead of repeating
//! the whole [`Channel`] delegation.

use super::{Channel, Stats, TransportError};

/// `inner`, except that the outcome of the first `recv` or `exchange` passes through `hook`
/// (once); everything else goes straight through.
pub struct FirstRecv<'a, F> {
    inner: &'a mut dyn Channel,
    hook: Option<F>,
}

impl<'a, F> FirstRecv<'a, F>
where
    F: FnOnce(Result<Vec<u8>, TransportError>) -> Result<Vec<u8>, TransportError>,
{
    /// Wraps `inner` until its first frame arrives (or fails to).
    pub fn new(inner: &'a mut dyn Channel, hook: F) -> Self {
        Self { inner, hook: Some(hook) }
    }

    fn settle(&mut self, result: Result<Vec<u8>, TransportError>) -> Result<Vec<u8>, TransportError> {
        match self.hook.take() {
            Some(hook) => hook(result),
            None => result,
        }
    }
}

impl<F> Channel for FirstRecv<'_, F>
where
    F: FnOnce(Result<Vec<u8>, TransportError>) -> Result<Vec<u8>, TransportError>,
{
    fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        self.inner.send(payload)
    }

    fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        let result = self.inner.recv();
        self.settle(result)
    }

    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        let result = self.inner.exchange(payload);
        self.settle(result)
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        self.inner.flush()
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
    use super::*;
    use crate::transport::memory;

    #[test]
    fn only_the_first_frame_meets_the_hook() -> Result<(), TransportError> {
        let (mut a, mut b) = memory::pair(Default::default());
        a.send(b"one")?;
        a.send(b"two")?;
        a.flush()?;
        let mut calls = 0;
        {
            let mut first = FirstRecv::new(&mut b, |r: Result<Vec<u8>, TransportError>| {
                calls += 1;
                r.map(|mut v| {
                    v.push(b'!');
                    v
                })
            });
            assert_eq!(first.recv()?, b"one!");
            assert_eq!(first.recv()?, b"two");
        }
        assert_eq!(calls, 1);
        Ok(())
    }
}
