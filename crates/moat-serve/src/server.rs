//! The network server: binding, the connection loop with its bounds, graceful shutdown.
//!
//! Connections are served by hyper (HTTP/1.1, keep-alive) with a header-read deadline that also
//! closes idle keep-alive connections, at most [`Limits::max_connections`] at once; when all are
//! taken, the connection silent longest (no byte sent yet) is closed to make room for the new
//! one ([`crate::idle`]), so idle sockets cannot starve health checks. On SIGTERM
//! or Ctrl-C the server reports not-ready, stops accepting, lets in-flight requests finish and
//! closes, waiting at most [`Limits::shutdown_grace`]; then the secure-session port
//! ([`crate::secure`]) stops accepting and its running sessions get the same grace.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::SharedState;
use crate::error::ServeError;
use crate::http::{app, app_with_extensions, secure_routes};
use crate::idle::IdleConnections;
use crate::secure::{SecureConfig, SecureListener, SecureService};
use crate::state::{Limits, ServerConfig, ServerState};
use crate::tls::ServerTls;

/// A bound, loaded server, ready to run.
#[derive(Debug)]
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: TcpListener,
    state: SharedState,
    local_addr: SocketAddr,
    /// The address asked for (port 0 stays 0 here).
    requested: SocketAddr,
    secure: Option<std::net::TcpListener>,
    tls: Option<ServerTls>,
}

/// The session port's address for the HTTP address `http` asked for: `config.listen`, else the
/// same IP with the next port (any free port when `http`'s port is 0).
pub fn secure_address(config: &SecureConfig, http: SocketAddr) -> Result<SocketAddr, ServeError> {
    if let Some(a) = config.listen {
        return Ok(a);
    }
    let port = match http.port() {
        0 => 0,
        p => p.checked_add(1).ok_or_else(|| {
            ServeError::Server(format!("no port after {p} for secure sessions: set the session address"))
        })?,
    };
    Ok(SocketAddr::new(http.ip(), port))
}

impl Server {
    /// Loads the repository (profiling every model), then binds `config.listen` and, when
    /// secure sessions are on, their port.
    pub fn bind(config: &ServerConfig) -> Result<Self, ServeError> {
        let state = Arc::new(ServerState::load(config)?);
        let mut server = Self::bind_state(state, config.listen, config.runtime_workers)?;
        if let Some(settings) = &config.tls {
            server = server.with_tls(ServerTls::load(settings)?);
        }
        match &config.secure {
            Some(secure) => server.bind_secure(secure.clone()),
            None => Ok(server),
        }
    }

    /// Binds an already built state.
    pub fn bind_state(state: SharedState, listen: SocketAddr, runtime_workers: usize) -> Result<Self, ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(runtime_workers.max(1))
            .thread_name("moat-serve")
            .enable_all()
            .build()
            .map_err(|e| ServeError::Server(format!("cannot start the async runtime: {e}")))?;
        let listener = runtime
            .block_on(TcpListener::bind(listen))
            .map_err(|e| ServeError::Server(format!("cannot listen on {listen}: {e}")))?;
        let local_addr = listener.local_addr().map_err(|e| ServeError::Server(e.to_string()))?;
        Ok(Self { runtime, listener, state, local_addr, requested: listen, secure: None, tls: None })
    }

    /// Serves TLS on the HTTP port and on the session port bound after this (see [`crate::tls`]).
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Binds the secure-session port (see [`secure_address`]) and enables the admission
    /// routes; sessions are accepted once the server runs.
    pub fn bind_secure(mut self, mut config: SecureConfig) -> Result<Self, ServeError> {
        if config.tls.is_none() {
            config.tls = self.tls.clone();
        }
        let addr = secure_address(&config, self.requested)?;
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            ServeError::Server(format!(
                "cannot listen for secure sessions on {addr}: {e} (choose another address, or turn secure sessions off)"
            ))
        })?;
        let local = listener.local_addr().map_err(|e| ServeError::Server(e.to_string()))?;
        self.state.enable_secure(Arc::new(SecureService::new(config, local)?))?;
        self.secure = Some(listener);
        Ok(self)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The secure-session port, when enabled.
    pub fn secure_addr(&self) -> Option<SocketAddr> {
        self.state.secure().map(|s| s.local_addr())
    }

    /// The shared state.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub fn run(self) -> Result<(), ServeError> {
        self.run_until(shutdown_signal())
    }

    /// Serves until `shutdown` completes.
    pub fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let Server { runtime, listener, state, secure, tls, .. } = self;
        let sessions = match (secure, state.secure()) {
            (Some(l), Some(service)) => Some(SecureListener::spawn(l, state.clone(), Arc::clone(service))?),
            _ => None,
        };
        let result = runtime.block_on(serve_with_tls(listener, state.clone(), tls, shutdown));
        if let Some(sessions) = sessions {
            sessions.shutdown(state.limits.shutdown_grace);
        }
        // Inference jobs past their deadline may still be running: do not wait for them.
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

/// Resolves on SIGTERM or Ctrl-C (or never, if the handlers cannot be installed).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Serves `state` on `listener` (plain TCP) until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with_tls(listener, state, None, shutdown).await
}

/// Serves `state` on `listener` until `shutdown`, then drains; with `tls`, every connection
/// must complete a TLS handshake within the header-read timeout first.
pub async fn serve_with_tls(
    listener: TcpListener,
    state: SharedState,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    match (&tls, listener.local_addr()) {
        (Some(t), Ok(addr)) => tracing::info!(%addr, mutual = t.mutual(), "HTTP API over TLS"),
        (None, Ok(addr)) => {
            tracing::warn!(%addr, "HTTP API over plain TCP (no TLS): keys and tokens travel in clear")
        }
        (_, Err(_)) => {}
    }
    let router = match state.secure() {
        Some(_) => app_with_extensions(state.clone(), secure_routes()),
        None => app(state.clone()),
    };
    let limits: Limits = state.limits.clone();
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    let idle = Arc::new(IdleConnections::default());
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => break,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Full: close the connection that has been silent longest to make room.
                if idle.evict_oldest() {
                    state.metrics.rejections.inc(&["idle_evicted"]);
                }
                match tokio::time::timeout(Duration::from_secs(1), connections.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => break,
                    Err(_) => {
                        state.metrics.rejections.inc(&["connections_full"]);
                        tracing::warn!(%peer, "every connection is busy with a request: closing the new one");
                        continue;
                    }
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let (tls, builder, watcher, idle) = (tls.clone(), builder.clone(), graceful.watcher(), Arc::clone(&idle));
        let timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // Until its first byte the connection may be evicted (see `crate::idle`).
            let (id, evicted) = idle.register();
            let mut first = [0u8; 1];
            let spoke = tokio::select! {
                r = stream.peek(&mut first) => matches!(r, Ok(n) if n > 0),
                _ = evicted => false,
                _ = tokio::time::sleep(timeout) => false,
            };
            idle.remove(id);
            if spoke {
                let result = match tls {
                    None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                    Some(tls) => match tls.accept_http(stream, peer, timeout).await {
                        Some(stream) => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                        None => Ok(()),
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            drop(permit);
        });
    }
    state.set_ready(false);
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("grace period over: closing the remaining connections"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_port_follows_the_http_port_asked_for() -> Result<(), Box<dyn std::error::Error>> {
        let auto = SecureConfig::default();
        assert_eq!(secure_address(&auto, "127.0.0.1:8000".parse()?)?, "127.0.0.1:8001".parse()?);
        assert_eq!(secure_address(&auto, "0.0.0.0:0".parse()?)?, "0.0.0.0:0".parse()?);
        assert!(secure_address(&auto, "127.0.0.1:65535".parse()?).is_err());
        let fixed = SecureConfig { listen: Some("10.0.0.1:9000".parse()?), ..SecureConfig::default() };
        assert_eq!(secure_address(&fixed, "127.0.0.1:8000".parse()?)?, "10.0.0.1:9000".parse()?);
        Ok(())
    }
}
