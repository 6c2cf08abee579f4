//! Connections that have not sent a byte yet, oldest first, so a full server can close one to
//! make room for a newcomer instead of letting idle sockets starve health checks and clients.
//!
//! A connection registers when accepted and leaves on its first byte (or when it ends). When
//! every connection slot is taken, the acceptor evicts the oldest registered one: an attacker
//! holding thousands of silent connections keeps at most the slots nobody else needs.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

/// The silent connections, oldest first.
#[derive(Debug, Default)]
pub struct IdleConnections {
    next: AtomicU64,
    waiting: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
}

impl IdleConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, oneshot::Sender<()>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection: its id and the signal that it was evicted.
    pub fn register(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().push_back((id, tx));
        (id, rx)
    }

    /// The connection `id` spoke (or ended): it can no longer be evicted.
    pub fn remove(&self, id: u64) {
        let mut waiting = self.lock();
        if let Some(i) = waiting.iter().position(|(c, _)| *c == id) {
            waiting.remove(i);
        }
    }

    /// Evicts the oldest silent connection; false when there is none.
    pub fn evict_oldest(&self) -> bool {
        while let Some((_, tx)) = self.lock().pop_front() {
            if tx.send(()).is_ok() {
                return true;
            }
        }
        false
    }

    /// Silent connections now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is silent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_silent_connection_goes_first() {
        let idle = IdleConnections::default();
        let (a, mut ra) = idle.register();
        let (_b, mut rb) = idle.register();
        let (c, _rc) = idle.register();
        idle.remove(c);
        assert!(idle.evict_oldest());
        assert!(ra.try_recv().is_ok());
        assert!(rb.try_recv().is_err());
        idle.remove(a);
        assert!(idle.evict_oldest());
        assert!(rb.try_recv().is_ok());
        assert!(!idle.evict_oldest());
        assert!(idle.is_empty());
    }
}

/// The session port's twin of [`IdleConnections`]: blocking sockets that have not presented
/// their token yet, oldest first. Evicting one shuts it down, which ends its handshake thread's
/// read at once and frees its handshake slot for the newcomer.
#[derive(Debug, Default)]
pub struct SilentSockets {
    next: AtomicU64,
    waiting: Mutex<VecDeque<(u64, std::net::TcpStream)>>,
}

impl SilentSockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, std::net::TcpStream)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `stream` until [`SilentSockets::remove`]; `None` if its handle cannot be
    /// cloned (it then just cannot be evicted).
    pub fn register(&self, stream: &std::net::TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push_back((id, handle));
        Some(id)
    }

    /// The socket `id` presented its token (or ended).
    pub fn remove(&self, id: Option<u64>) {
        let Some(id) = id else { return };
        let mut waiting = self.lock();
        if let Some(i) = waiting.iter().position(|(c, _)| *c == id) {
            waiting.remove(i);
        }
    }

    /// Shuts down the socket silent longest; false when there is none.
    pub fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_front();
        match oldest {
            Some((_, stream)) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                true
            }
            None => false,
        }
    }
}
