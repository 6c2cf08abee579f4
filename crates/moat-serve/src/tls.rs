//! TLS (rustls, ring provider) for the HTTP API and the session port.
//!
//! [`TlsSettings`] names PEM files: the certificate chain, its private key and, for mutual TLS,
//! the CA whose certificates clients must present. [`ServerTls::load`] reads them once at start;
//! one configuration serves both ports (TLS 1.3 and 1.2, rustls's safe defaults).
//!
//! A plaintext client on a TLS port gets a clear refusal instead of a silent close: the first
//! byte of a connection is peeked, and anything but a TLS handshake record (`0x16`) is answered
//! in the client's own protocol — `400` with "this port speaks TLS: use https://" on the HTTP
//! port, a `tls_required` handshake refusal on the session port — then closed.
//!
//! Without TLS the ports speak plain TCP and the server logs so at start: bearer keys, session
//! tokens and the session hello then travel in clear (fine on loopback or behind a TLS proxy).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::ServeError;

/// Where the server's TLS material is (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Clients must present a certificate issued by this CA (mutual TLS); `None`: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
}

/// A loaded TLS configuration, shared by the HTTP API and the session port.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No key material here: only what kind of TLS is served.
        f.debug_struct("ServerTls").field("mutual", &self.mutual).finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

/// The crypto provider every moat TLS endpoint uses (ring: no cmake or nasm to build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> ServeError {
    ServeError::Server(format!("TLS {what} {}: {e}", path.display()))
}

/// Every certificate of a PEM file (at least one).
pub fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad("certificate file", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate file", path, e))?;
    if certs.is_empty() {
        return Err(bad("certificate file", path, "no certificate in it"));
    }
    Ok(certs)
}

impl ServerTls {
    /// Reads the files of `settings` and builds the configuration.
    pub fn load(settings: &TlsSettings) -> Result<Self, ServeError> {
        let certs = read_certs(&settings.cert)?;
        let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| bad("key file", &settings.key, e))?;
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ServeError::Server(format!("TLS setup: {e}")))?;
        let builder = match &settings.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).map_err(|e| bad("client CA", ca, e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| bad("client CA", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| bad("certificate and key", &settings.cert, e))?;
        Ok(Self { config: Arc::new(config), mutual: settings.client_ca.is_some() })
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    /// Accepts TLS on an HTTP connection within `timeout`. A connection whose first byte is
    /// not a TLS handshake gets a plain `400` saying to use https:// and `None`; so does a
    /// failed or timed-out handshake (logged at debug: clients are not trusted to be polite).
    pub async fn accept_http(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let mut first = [0u8; 1];
        match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            Ok(_) | Err(_) => return None,
        }
        if moat_mpc::transport::tls::is_not_tls(first[0]) {
            tracing::debug!(%peer, "plaintext request on the TLS port");
            let body = "this port speaks TLS: use https://\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(timeout, stream.write_all(reply.as_bytes())).await;
            let _ = stream.shutdown().await;
            return None;
        }
        match tokio::time::timeout(timeout, TlsAcceptor::from(self.config()).accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }
}

/// The session port's side of [`ServerTls`] (blocking, on the connection's handshake thread):
/// refuses a plaintext client with a `tls_required` handshake reply, else runs the TLS
/// handshake within [`SecureConfig::handshake_timeout`] and returns the plaintext end of the
/// relay ([`moat_mpc::transport::tls`]), which closes after twice
/// [`SecureConfig::session_timeout`] without traffic. `None` when the connection is done.
///
/// [`SecureConfig::handshake_timeout`]: crate::SecureConfig::handshake_timeout
/// [`SecureConfig::session_timeout`]: crate::SecureConfig::session_timeout
pub fn accept_session(
    mut stream: std::net::TcpStream,
    tls: &ServerTls,
    peer: SocketAddr,
    config: &crate::SecureConfig,
) -> Option<std::net::TcpStream> {
    let started = std::time::Instant::now();
    let timeout = config.handshake_timeout;
    let mut first = [0u8; 1];
    let peeked = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(timeout)))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| stream.peek(&mut first));
    match peeked {
        Ok(1) => {}
        Ok(_) => return None,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "session port: nothing sent");
            return None;
        }
    }
    if moat_mpc::transport::tls::is_not_tls(first[0]) {
        tracing::info!(%peer, "plaintext client on the TLS session port; refused");
        let reply = moat_wire::HandshakeReply::refused(
            moat_wire::Refusal::TlsRequired,
            "this session port speaks TLS: connect through an https:// server URL",
        );
        // Read what it sent (its token frame) so closing does not reset the connection and
        // destroy the refusal on its way.
        let mut sent = [0u8; 4 + moat_wire::MAX_TOKEN_FRAME];
        let _ = std::io::Read::read(&mut stream, &mut sent);
        if let Err(e) = moat_wire::session::write_reply(&mut stream, &reply) {
            tracing::debug!(%peer, error = %e, "could not send the refusal");
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        return None;
    }
    let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    let idle = config.session_timeout.saturating_mul(2);
    match moat_mpc::transport::tls::accept(stream, tls.config(), remaining, idle) {
        Ok((plain, _client_chain)) => Some(plain),
        Err(e) => {
            tracing::info!(%peer, error = %e, "session port: TLS handshake failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> Result<PathBuf, std::io::Error> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// A self-signed certificate for `localhost`, written as PEM files into `dir`.
    fn self_signed(dir: &std::path::Path) -> Result<(rcgen::Certificate, TlsSettings), Box<dyn std::error::Error>> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
        let settings = TlsSettings {
            cert: write(dir, "cert.pem", &cert.pem())?,
            key: write(dir, "key.pem", &key.serialize_pem())?,
            client_ca: None,
        };
        Ok((cert, settings))
    }

    /// A server and a client relay on real loopback sockets: frames both ways, a large
    /// concurrent exchange (both sides sending 3 MB at once), then a clean close.
    #[test]
    fn channels_run_over_the_tls_relay() -> Result<(), Box<dyn std::error::Error>> {
        use moat_mpc::transport::tcp::TcpChannel;
        use moat_mpc::transport::{Channel, ChannelConfig};
        let dir = tempfile::tempdir()?;
        let (cert, settings) = self_signed(dir.path())?;
        let tls = ServerTls::load(&settings)?;
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone())?;
        let client_config = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let config = ChannelConfig::default().with_timeout(Duration::from_secs(20));
        let server = std::thread::spawn(move || -> Result<Vec<u8>, String> {
            let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
            let (plain, _) = moat_mpc::transport::tls::accept(
                stream,
                tls.config(),
                Duration::from_secs(10),
                Duration::from_secs(30),
            )
            .map_err(|e| e.to_string())?;
            let mut ch = TcpChannel::from_stream(plain, config).map_err(|e| e.to_string())?;
            let hello = ch.recv().map_err(|e| e.to_string())?;
            ch.send(&hello).map_err(|e| e.to_string())?;
            let big = ch.exchange(&vec![7u8; 3 << 20]).map_err(|e| e.to_string())?;
            ch.flush().map_err(|e| e.to_string())?;
            Ok(big)
        });
        let stream = std::net::TcpStream::connect(addr)?;
        let plain = moat_mpc::transport::tls::connect(
            stream,
            client_config,
            "localhost",
            Duration::from_secs(10),
            Duration::from_secs(30),
        )?;
        let mut ch = TcpChannel::from_stream(plain, config)?;
        ch.send(b"token")?;
        assert_eq!(ch.recv()?, b"token");
        let big = ch.exchange(&vec![9u8; 3 << 20])?;
        assert_eq!(big, vec![7u8; 3 << 20]);
        let theirs = server.join().map_err(|_| "server thread panicked")??;
        assert_eq!(theirs, vec![9u8; 3 << 20]);
        Ok(())
    }

    #[test]
    fn loads_a_generated_certificate_and_refuses_bad_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (_cert, settings) = self_signed(dir.path())?;
        let tls = ServerTls::load(&settings)?;
        assert!(!tls.mutual());
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        let mutual = ServerTls::load(&TlsSettings { client_ca: Some(settings.cert.clone()), ..settings.clone() })?;
        assert!(mutual.mutual());
        // A key file holding a certificate, an empty certificate file: refused with the path.
        let swapped = TlsSettings { key: settings.cert.clone(), ..settings.clone() };
        let err = ServerTls::load(&swapped).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("key file"), "{err}");
        let empty = TlsSettings { cert: write(dir.path(), "empty.pem", "")?, ..settings };
        let err = ServerTls::load(&empty).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no certificate"), "{err}");
        Ok(())
    }
}
