//! TLS settings of the client (rustls, ring provider): which CAs to trust and, for servers
//! asking for client certificates (mutual TLS), which certificate to present.
//!
//! An `https://` [`crate::HttpClient`] uses them for the HTTP API and [`crate::SecureClient`]
//! for the session port (the same server name, the URL's host, is verified on both). Without
//! explicit settings, [`ClientTls::from_env`] applies: `MOAT_CACERT` (a PEM file of CAs to
//! trust instead of the built-in web PKI roots), `MOAT_CLIENT_CERT` and `MOAT_CLIENT_KEY`.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ClientError;

/// Environment variable naming a PEM file of CAs to trust.
pub const ENV_CACERT: &str = "MOAT_CACERT";
/// Environment variable naming the client certificate chain (PEM) for mutual TLS.
pub const ENV_CLIENT_CERT: &str = "MOAT_CLIENT_CERT";
/// Environment variable naming the client certificate's key (PEM) for mutual TLS.
pub const ENV_CLIENT_KEY: &str = "MOAT_CLIENT_KEY";

/// What a client trusts and presents.
pub struct ClientTls {
    /// CAs to trust; `None`: the web PKI roots (webpki-roots).
    roots: Option<Vec<CertificateDer<'static>>>,
    identity: Option<Identity>,
}

/// A client certificate chain and its key (as rustls and, in PEM, as ureq take it).
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_pem: zeroize::Zeroizing<Vec<u8>>,
}

impl Clone for ClientTls {
    fn clone(&self) -> Self {
        Self {
            roots: self.roots.clone(),
            identity: self.identity.as_ref().map(|i| Identity {
                chain: i.chain.clone(),
                key: i.key.clone_key(),
                key_pem: i.key_pem.clone(),
            }),
        }
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("custom_roots", &self.roots.as_ref().map(Vec::len))
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bad = |e: &dyn std::fmt::Display| ClientError::Invalid(format!("certificate file {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no certificate in it"));
    }
    Ok(certs)
}

fn env_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from)
}

/// The crypto provider (ring).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClientTls {
    /// Trusts the web PKI roots, presents no certificate.
    pub fn webpki() -> Self {
        Self { roots: None, identity: None }
    }

    /// Trusts only the CAs in the PEM file `path` (like curl's `--cacert`).
    pub fn with_ca_file(path: &Path) -> Result<Self, ClientError> {
        Ok(Self { roots: Some(read_certs(path)?), identity: None })
    }

    /// Presents the certificate chain `cert` with its key `key` (PEM files) to servers that ask.
    pub fn with_identity_files(mut self, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let chain = read_certs(cert)?;
        let bad = |e: &dyn std::fmt::Display| ClientError::Invalid(format!("key file {}: {e}", key.display()));
        let key_pem = zeroize::Zeroizing::new(std::fs::read(key).map_err(|e| bad(&e))?);
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(&e))?;
        self.identity = Some(Identity { chain, key, key_pem });
        Ok(self)
    }

    /// From `MOAT_CACERT`, `MOAT_CLIENT_CERT` and `MOAT_CLIENT_KEY` (see the module docs).
    pub fn from_env() -> Result<Self, ClientError> {
        let tls = match env_path(ENV_CACERT) {
            Some(ca) => Self::with_ca_file(&ca)?,
            None => Self::webpki(),
        };
        tls.with_env_identity()
    }

    /// Adds the client certificate named by `MOAT_CLIENT_CERT` and `MOAT_CLIENT_KEY`, when set.
    pub fn with_env_identity(self) -> Result<Self, ClientError> {
        match (env_path(ENV_CLIENT_CERT), env_path(ENV_CLIENT_KEY)) {
            (Some(cert), Some(key)) => self.with_identity_files(&cert, &key),
            (None, None) => Ok(self),
            _ => Err(ClientError::Invalid(format!("set both {ENV_CLIENT_CERT} and {ENV_CLIENT_KEY}, or neither"))),
        }
    }

    /// The rustls configuration (for the session port).
    pub fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let mut roots = RootCertStore::empty();
        match &self.roots {
            Some(certs) => {
                for c in certs {
                    roots.add(c.clone()).map_err(|e| ClientError::Invalid(format!("CA certificate: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Invalid(format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| ClientError::Invalid(format!("client certificate: {e}")))?,
        };
        Ok(Arc::new(config))
    }

    /// The same settings for ureq (the HTTP API).
    pub(crate) fn ureq_config(&self) -> ureq::tls::TlsConfig {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let roots = match &self.roots {
            None => RootCerts::WebPki,
            Some(certs) => {
                let certs: Vec<Certificate<'static>> =
                    certs.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect();
                RootCerts::new_with_certs(&certs)
            }
        };
        // The key parsed as PEM when the identity was loaded, so this cannot fail in practice;
        // if ureq disagrees, no certificate is presented and the server refuses (mutual TLS).
        let client_cert = self.identity.as_ref().and_then(|id| {
            let chain: Vec<Certificate<'static>> =
                id.chain.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect();
            let key = PrivateKey::from_pem(&id.key_pem).ok()?;
            Some(ClientCert::new_with_certs(&chain, key))
        });
        TlsConfig::builder()
            .root_certs(roots)
            .client_cert(client_cert)
            .unversioned_rustls_crypto_provider(provider())
            .build()
    }
}

/// The host of `base_url` (`https://HOST:PORT/…`), brackets of an IPv6 literal removed: the
/// name the server's certificate must carry.
pub(crate) fn url_host(base_url: &str) -> Option<String> {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next(),
        None => authority.split(':').next(),
    };
    host.filter(|h| !h.is_empty()).map(str::to_string)
}

/// Connects to the session port `address` within `timeout` and runs TLS with `server_name`;
/// returns the channel over the relay ([`moat_mpc::transport::tls`]).
pub(crate) fn connect_channel(
    address: &str,
    server_name: &str,
    tls: &ClientTls,
    config: moat_mpc::transport::ChannelConfig,
) -> Result<moat_mpc::transport::tcp::TcpChannel, ClientError> {
    use std::net::{TcpStream, ToSocketAddrs};
    let transport = |e: &dyn std::fmt::Display| ClientError::Transport(format!("session port {address}: {e}"));
    let addrs: Vec<_> = address.to_socket_addrs().map_err(|e| transport(&e))?.collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, config.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(transport(&"connection refused (nothing listens there)"));
        }
        (None, Some(e)) => return Err(transport(&e)),
        (None, None) => return Err(transport(&"the address resolves to nothing")),
    };
    let plain = moat_mpc::transport::tls::connect(
        stream,
        tls.rustls_config()?,
        server_name,
        config.connect_timeout,
        config.timeout.saturating_mul(2),
    )
    .map_err(|e| transport(&format!("{e} (does the server serve TLS, with a certificate for '{server_name}'?)")))?;
    moat_mpc::transport::tcp::TcpChannel::from_stream(plain, config).map_err(|e| transport(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_name_is_the_url_host() {
        assert_eq!(url_host("https://127.0.0.1:8000").as_deref(), Some("127.0.0.1"));
        assert_eq!(url_host("https://moat.example/v2").as_deref(), Some("moat.example"));
        assert_eq!(url_host("https://[::1]:443/").as_deref(), Some("::1"));
        assert_eq!(url_host("https://").as_deref(), None);
    }

    #[test]
    fn half_a_client_identity_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("moat-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let missing = dir.join("missing.pem");
        assert!(matches!(ClientTls::with_ca_file(&missing), Err(ClientError::Invalid(_))));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "")?;
        let err = ClientTls::with_ca_file(&empty).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no certificate"), "{err}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
