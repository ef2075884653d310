//! TLS (optional, off by default; `docs/operations.md`, "TLS").
//!
//! With `--tls-cert` and `--tls-key` the node serves HTTPS only (rustls,
//! through actix-web), and it calls the other members over HTTPS too,
//! verifying their certificates against `--tls-ca`: every member of a
//! cluster runs with TLS or none does, and each node's certificate names
//! the host of its advertised address.
//!
//! This file is the server half (the rustls configuration of
//! `--tls-cert/--tls-key`); the peer half — HTTPS to the other members,
//! trusting `--tls-ca` — is `cluster::peer::PeerTransport`, which the one
//! `PeerClient` is built from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
pub(crate) fn certificates(
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
