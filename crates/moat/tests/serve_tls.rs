//! `moat serve --tls-cert/--tls-key` end to end, with a CA made on the spot (rcgen): curl with
//! `--cacert` reads `/v2/health/ready` over HTTPS; moat-client does plaintext inference over
//! HTTPS and a secure (two-party) session over TLS on the session port; `moat infer --url
//! https://… --secure --cacert` does the same from the command line; plaintext clients on either
//! TLS port get a clear refusal; a client that does not trust the CA is refused; with
//! `--tls-client-ca` (mutual TLS) only clients presenting a certificate of that CA get in.

mod serve_util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use moat_client::{ClientError, ClientTls, HttpClient, SecureClient, SessionRequest};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serve_util::{Error, ServerProcess, TestResult, build_lenet_repo, moat, raw_http, scratch, text};

/// PEM files of a throwaway PKI: a CA, a server certificate for `localhost` and `127.0.0.1`,
/// and a client certificate (for mutual TLS) from a second CA.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca(name: &str) -> Result<(rcgen::Certificate, KeyPair, CertificateParams), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.clone().self_signed(&key)?;
    Ok((cert, key, params))
}

fn pki(dir: &Path) -> Result<Pki, Error> {
    let write = |name: &str, pem: String| -> Result<PathBuf, Error> {
        let p = dir.join(name);
        std::fs::write(&p, pem)?;
        Ok(p)
    };
    let (ca_cert, ca_key, ca_params) = ca("moat test CA")?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
        .signed_by(&server_key, &issuer)?;
    let (client_ca_cert, client_ca_key, client_ca_params) = ca("moat test client CA")?;
    let client_issuer = Issuer::new(client_ca_params, client_ca_key);
    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params.distinguished_name.push(DnType::CommonName, "moat test client");
    let client = client_params.signed_by(&client_key, &client_issuer)?;
    Ok(Pki {
        ca: write("ca.pem", ca_cert.pem())?,
        cert: write("server.pem", server.pem())?,
        key: write("server-key.pem", server_key.serialize_pem())?,
        client_ca: write("client-ca.pem", client_ca_cert.pem())?,
        client_cert: write("client.pem", client.pem())?,
        client_key: write("client-key.pem", client_key.serialize_pem())?,
    })
}

/// A running `moat serve` over TLS (a [`ServerProcess`], killed on drop).
struct TlsServer {
    server: ServerProcess,
    url: String,
    port: u16,
}

impl TlsServer {
    fn start(repo: &Path, pki: &Pki, extra: &[&str]) -> Result<Self, Error> {
        let (cert, key) = (pki.cert.to_str().ok_or("path")?, pki.key.to_str().ok_or("path")?);
        let mut args = vec!["--header-timeout", "5s", "--tls-cert", cert, "--tls-key", key];
        args.extend_from_slice(extra);
        let server = ServerProcess::start(repo, &args)?;
        let url = server.url.clone();
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let port = url.rsplit(':').next().ok_or("port")?.parse()?;
        Ok(Self { server, url, port })
    }

    fn log(&self) -> String {
        self.server.log()
    }
}

fn curl(args: &[&str]) -> Result<std::process::Output, Error> {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .map_err(|e| format!("curl is needed for this test (apt-get install curl): {e}").into())
}

#[test]
fn https_and_sessions_over_tls_with_a_generated_ca() -> TestResult {
    let dir = scratch("tls")?;
    let pki = pki(&dir)?;
    let repo = build_lenet_repo(&dir, None)?;
    let server = TlsServer::start(&repo, &pki, &[])?;
    let ready = format!("{}/v2/health/ready", server.url);

    // curl, trusting the generated CA, by IP and by name.
    let out = curl(&["--cacert", &pki.ca.to_string_lossy(), "-o", "/dev/null", "-w", "%{http_code}", &ready])?;
    assert_eq!(text(&out.stdout), "200", "{}", text(&out.stderr));
    let by_name = format!("https://localhost:{}/v2/health/ready", server.port);
    let out = curl(&["--cacert", &pki.ca.to_string_lossy(), "-o", "/dev/null", "-w", "%{http_code}", &by_name])?;
    assert_eq!(text(&out.stdout), "200", "{}", text(&out.stderr));
    // curl without the CA: refused by curl's certificate check.
    let out = curl(&["-o", "/dev/null", &ready])?;
    assert!(!out.status.success(), "an untrusted certificate was accepted");

    // Plain HTTP on the TLS port: a clear 400 instead of a silent close.
    let (status, body) = raw_http(&format!("127.0.0.1:{}", server.port), "GET", "/v2/health/ready", &[], &[])?;
    assert_eq!(status, 400);
    assert!(text(&body).contains("use https://"), "{}", text(&body));

    // moat-client over HTTPS, trusting the CA; one plaintext inference for the reference label.
    let http = HttpClient::new(&server.url)?.with_tls(ClientTls::with_ca_file(&pki.ca)?);
    assert!(http.is_ready()?);
    let image = vec![0.5f32; 28 * 28];
    let plaintext = http
        .infer(
            "lenet5",
            None,
            &http
                .model_metadata("lenet5", None)?
                .request(std::slice::from_ref(&image))?
                .with_output("label", false, None),
        )?
        .labels()?;
    // Without the CA: a transport error naming the certificate problem.
    let untrusted = HttpClient::new(&server.url)?.with_tls(ClientTls::webpki());
    match untrusted.is_ready() {
        Err(ClientError::Transport(m)) => assert!(m.to_lowercase().contains("certificate"), "{m}"),
        other => panic!("an untrusted server was accepted: {other:?}"),
    }

    // A secure session over TLS on the session port.
    let client = SecureClient::new(http.clone());
    let admission = client.admit_model("lenet5", None, &SessionRequest::queries(1))?;
    let mut session = client.connect(&admission, moat_client::Seed::from_os()?)?;
    assert_eq!(vec![session.infer(&image)?], plaintext);
    let stats = session.close()?;
    assert!(stats.bytes_sent > 0 && stats.bytes_received > 0);

    // A plaintext client on the TLS session port: refused with `tls_required`.
    let admission = client.admit_model("lenet5", None, &SessionRequest::queries(1))?;
    let session_addr = admission.address.clone();
    let config = ChannelConfig::default().with_timeout(Duration::from_secs(10));
    let mut ch = TcpChannel::connect(session_addr.as_str(), config)?;
    ch.send(admission.session.as_str().as_bytes())?;
    let reply: serde_json::Value = serde_json::from_slice(&ch.recv()?)?;
    assert_eq!(reply["accepted"], false, "{reply}");
    assert_eq!(reply["reason"], "tls_required", "{reply}");
    // The token was not consumed by the refused plaintext attempt: it opens a TLS session.
    let mut session = client.connect(&admission, moat_client::Seed::from_os()?)?;
    assert_eq!(vec![session.infer(&image)?], plaintext);
    session.close()?;

    // The command line: `moat infer --url https://… --secure --cacert ca.pem`.
    let input = dir.join("input.json");
    std::fs::write(&input, serde_json::to_string(&vec![image.clone()])?)?;
    let out = moat()
        .args(["infer", "--url", &server.url, "--secure", "--model", "lenet5", "--json", "--cacert"])
        .arg(&pki.ca)
        .arg("--input")
        .arg(&input)
        .output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(answer["labels"], serde_json::json!(plaintext), "{answer}");

    let log = server.log();
    assert!(log.contains("HTTP API over TLS"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
    Ok(())
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_of_the_client_ca() -> TestResult {
    let dir = scratch("mtls")?;
    let pki = pki(&dir)?;
    let repo = build_lenet_repo(&dir, None)?;
    let server = TlsServer::start(&repo, &pki, &["--tls-client-ca", &pki.client_ca.to_string_lossy()])?;
    let ready = format!("{}/v2/health/ready", server.url);
    let ca = pki.ca.to_string_lossy();
    // No client certificate: the handshake fails.
    let out = curl(&["--cacert", &ca, "-o", "/dev/null", &ready])?;
    assert!(!out.status.success(), "a client without a certificate got in");
    // The server's own certificate (another CA) as client certificate: refused too.
    let out = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &pki.cert.to_string_lossy(),
        "--key",
        &pki.key.to_string_lossy(),
        "-o",
        "/dev/null",
        &ready,
    ])?;
    assert!(!out.status.success(), "a certificate of the wrong CA got in");
    let out = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &pki.client_cert.to_string_lossy(),
        "--key",
        &pki.client_key.to_string_lossy(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &ready,
    ])?;
    assert_eq!(text(&out.stdout), "200", "{}", text(&out.stderr));

    // moat-client with the client certificate: HTTP and a secure session.
    let tls = ClientTls::with_ca_file(&pki.ca)?.with_identity_files(&pki.client_cert, &pki.client_key)?;
    let http = HttpClient::new(&server.url)?.with_tls(tls);
    assert!(http.is_ready()?);
    let client = SecureClient::new(http);
    let admission = client.admit_model("lenet5", None, &SessionRequest::queries(1))?;
    let mut session = client.connect(&admission, moat_client::Seed::from_os()?)?;
    session.infer(&vec![0.25f32; 28 * 28])?;
    session.close()?;
    // Without it, moat-client cannot even ask.
    let anonymous = HttpClient::new(&server.url)?.with_tls(ClientTls::with_ca_file(&pki.ca)?);
    assert!(matches!(anonymous.is_ready(), Err(ClientError::Transport(_))));
    Ok(())
}
