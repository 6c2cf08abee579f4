//! Test support: run the two parties of a protocol in two threads, over the in-memory pair or
//! over TCP loopback. Used by this crate's unit and integration tests, and available to
//! downstream crates that test their own two-party code (as mpz exports its test helpers).

use std::net::TcpListener;
use std::time::Duration;

use crate::error::{MpcError, Result};
use crate::transport::tcp::TcpChannel;
use crate::transport::{Channel, ChannelConfig, TransportError, memory};

/// Which transport a two-party test runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// [`memory::pair`] (two threads in one process).
    Memory,
    /// [`TcpChannel`] over 127.0.0.1.
    Tcp,
}

/// Both transports, for tests that run over each.
pub const NETS: [Net; 2] = [Net::Memory, Net::Tcp];

fn config() -> ChannelConfig {
    ChannelConfig::default().with_timeout(Duration::from_secs(30)).with_connect_timeout(Duration::from_secs(10))
}

fn io(e: std::io::Error) -> MpcError {
    MpcError::Transport(TransportError::from_io("test socket", &e, Duration::ZERO))
}

/// Runs `p0` here and `p1` in a thread, connected by `net`; returns both outputs.
pub fn run_pair<A, B>(
    net: Net,
    p0: impl FnOnce(&mut dyn Channel) -> Result<A>,
    p1: impl FnOnce(&mut dyn Channel) -> Result<B> + Send + 'static,
) -> Result<(A, B)>
where
    B: Send + 'static,
{
    let (mut c0, handle): (Box<dyn Channel>, _) = match net {
        Net::Memory => {
            let (a, mut b) = memory::pair(config());
            (Box::new(a), std::thread::spawn(move || p1(&mut b)))
        }
        Net::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
            let addr = listener.local_addr().map_err(io)?;
            let handle = std::thread::spawn(move || {
                let mut b = TcpChannel::accept(&listener, config())?;
                p1(&mut b)
            });
            (Box::new(TcpChannel::connect(addr, config())?), handle)
        }
    };
    let a = p0(&mut *c0);
    // Closing our end first lets a party 1 still waiting see the peer close, not a timeout.
    drop(c0);
    let b = handle.join().map_err(|_| MpcError::invalid("run_pair", "party 1 panicked"))?;
    Ok((a?, b?))
}
