//! TLS (optional, off by default; `docs/operations.md`, "TLS").
//!
//! With `--tls-cert` and `--tls-key` the node serves HTTPS only (rustls,
//! through actix-web), and it calls the other members over HTTPS too,
//! verifying their certificates against `--tls-ca`: every member of a
//! cluster runs with TLS or none does, and each node's certificate names
//! the host of its advertised address.
//!
//! Node-to-node calls (placement Raft, query fan-out, shard moves, join)
//! build their HTTP clients with [`peer_client_builder`] and their URLs
//! with [`peer_scheme`], which read the transport this process was started
//! with ([`set_peer_transport`], once, at start). A process that never sets
//! it (the in-process tests) talks plain HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The TLS files of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the node's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificate(s) of the CA that signed the members' certificates.
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {detail}")]
    Read {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{what} {path} holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the certificate and key do not make a TLS configuration: {detail}")]
    Config { detail: String },
}

/// The certificate chain in a PEM file.
fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let read_error = |detail: String| TlsError::Read {
        what,
        path: path.to_path_buf(),
        detail,
    };
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|error| read_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| read_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

/// The rustls server configuration of `files` (certificate and key; the
/// CA is for calls to peers). Client certificates are not asked for:
/// node-to-node calls authenticate with the cluster secret.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let chain = certificates("certificate file", &files.cert)?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
        TlsError::Read {
            what: "key file",
            path: files.key.clone(),
            detail: error.to_string(),
        }
    })?;
    // Chosen explicitly, so the process never depends on a process-wide
    // default provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |error: rustls::Error| TlsError::Config {
        detail: error.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How this process reaches the other members.
#[derive(Debug, Clone)]
pub struct PeerTransport {
    /// `None`: plain HTTP.
    ca: Option<reqwest::Certificate>,
}

impl PeerTransport {
    /// HTTPS, trusting the CA certificate(s) in `ca_path`.
    pub fn https(ca_path: &Path) -> Result<PeerTransport, TlsError> {
        // Checked with rustls first for a clear error on an empty file.
        certificates("CA file", ca_path)?;
        let pem = std::fs::read(ca_path).map_err(|error| TlsError::Read {
            what: "CA file",
            path: ca_path.to_path_buf(),
            detail: error.to_string(),
        })?;
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|error| TlsError::Read {
            what: "CA file",
            path: ca_path.to_path_buf(),
            detail: error.to_string(),
        })?;
        Ok(PeerTransport { ca: Some(ca) })
    }
}

static PEER_TRANSPORT: OnceLock<PeerTransport> = OnceLock::new();

/// Sets how this process calls its peers; once, before any call. A second
/// call is ignored (the first transport stays).
pub fn set_peer_transport(transport: PeerTransport) {
    let _ = PEER_TRANSPORT.set(transport);
}

/// `https` when the node runs with TLS, else `http`.
pub fn peer_scheme() -> &'static str {
    match PEER_TRANSPORT.get() {
        Some(PeerTransport { ca: Some(_) }) => "https",
        _ => "http",
    }
}

/// `<scheme>://<address>`: the base URL of a member at `host:port`.
pub fn peer_url(address: &str) -> String {
    format!("{}://{address}", peer_scheme())
}

/// A client builder for node-to-node calls: trusts the cluster's CA when
/// the node runs with TLS, and never goes through a proxy from the
/// environment (members talk directly).
pub fn peer_client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().no_proxy();
    match PEER_TRANSPORT.get() {
        Some(PeerTransport { ca: Some(ca) }) => builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .https_only(true),
        _ => builder,
    }
}

/// Sends a node-to-node request and answers the body of a `200`; any other
/// outcome is an error naming `url` (the transport error, or the status and
/// the peer's body).
pub async fn peer_ok_body(request: reqwest::RequestBuilder, url: &str) -> Result<Vec<u8>, String> {
    let response = request
        .send()
        .await
        .map_err(|error| format!("{url}: {error}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| format!("{url}: {error}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body.to_vec())
}
