//! The admin token: the secret that unlocks the console's data calls and
//! `/v1/admin/*` (`docs/console.md`).
//!
//! It comes from `--admin-token`, `SESSIONDB_ADMIN_TOKEN` or the
//! configuration file's `admin_token`; without any of them the node generates
//! one at its first start and keeps it in `<data-dir>/admin-token` (mode
//! 0600), reusing it on later starts. The token itself is never logged or
//! printed: `AdminToken`'s `Debug` is redacted, and the node logs only the
//! file's path.
//!
//! The cluster secret (`docs/cluster.md`, "Cluster secret") is the same kind
//! of secret with its own file, `<data-dir>/cluster-secret`: `resolve_secret`
//! serves both.

use anyhow::Context;
use rand::RngCore;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the token file inside the data directory.
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin-token";
/// Name of the cluster secret's file inside the data directory.
pub const CLUSTER_SECRET_FILE_NAME: &str = "cluster-secret";
/// Shortest token accepted from flags, environment or file: a guessable
/// token would make the check pointless.
pub const ADMIN_TOKEN_BYTES_MIN: usize = 16;
/// Longest token accepted (it travels in an HTTP header).
pub const ADMIN_TOKEN_BYTES_MAX: usize = 256;
/// Random bytes in a generated token (hex encoded: twice as many characters).
const GENERATED_TOKEN_RANDOM_BYTES: usize = 32;

/// A validated admin token. Cheap to clone; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AdminToken(<redacted>)")
    }
}

/// The secret every node-to-node request carries (`/v1/internal/*`,
/// `/v1/cluster/join`): validated, compared and stored like the admin token.
pub type ClusterSecret = AdminToken;

/// Which secret a file holds: its file name and what messages call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretKind {
    pub file_name: &'static str,
    pub label: &'static str,
}

/// The admin token's file.
pub const ADMIN_TOKEN_KIND: SecretKind = SecretKind {
    file_name: ADMIN_TOKEN_FILE_NAME,
    label: "admin token",
};
/// The cluster secret's file.
pub const CLUSTER_SECRET_KIND: SecretKind = SecretKind {
    file_name: CLUSTER_SECRET_FILE_NAME,
    label: "cluster secret",
};

/// Why a token was refused at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    #[error(
        "the admin token has {bytes} bytes; it needs {ADMIN_TOKEN_BYTES_MIN} to {ADMIN_TOKEN_BYTES_MAX}"
    )]
    Length { bytes: usize },
    #[error("the admin token may contain only visible ASCII characters (no spaces)")]
    Characters,
}

impl AdminToken {
    /// Checks a token given by an operator: 16–256 visible ASCII bytes, so
    /// it fits an `Authorization` header unchanged.
    pub fn parse(text: &str) -> Result<AdminToken, AdminTokenError> {
        let bytes = text.len();
        if !(ADMIN_TOKEN_BYTES_MIN..=ADMIN_TOKEN_BYTES_MAX).contains(&bytes) {
            return Err(AdminTokenError::Length { bytes });
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(AdminTokenError::Characters);
        }
        Ok(AdminToken(Arc::from(text)))
    }

    /// A fresh random token from the operating system's generator.
    pub fn generate() -> AdminToken {
        let mut random = [0u8; GENERATED_TOKEN_RANDOM_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let text: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        AdminToken(Arc::from(text))
    }

    /// Whether `candidate` is this token. The comparison looks at every
    /// byte whatever the first difference, so its time does not tell an
    /// attacker how long a prefix they guessed right (only the length).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }

    /// The token's text, for writing it to its file or sending it to a
    /// peer (the cluster secret). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Byte equality whose running time depends only on the lengths.
fn constant_time_eq(expected: &[u8], candidate: &[u8]) -> bool {
    if expected.len() != candidate.len() {
        return false;
    }
    let difference = expected
        .iter()
        .zip(candidate)
        .fold(0u8, |difference, (left, right)| difference | (left ^ right));
    std::hint::black_box(difference) == 0
}

/// Where the node's token came from, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    /// `--admin-token`, `SESSIONDB_ADMIN_TOKEN` or the configuration file.
    Configured,
    /// Read from this file, written at an earlier start.
    File(PathBuf),
    /// Generated now and written to this file.
    Generated(PathBuf),
}

/// The token to run with: the configured one, else the one in
/// `<data_dir>/admin-token`, else a new one written there (mode 0600).
pub fn resolve(
    configured: Option<AdminToken>,
    data_dir: &Path,
) -> anyhow::Result<(AdminToken, AdminTokenSource)> {
    resolve_secret(configured, data_dir, ADMIN_TOKEN_KIND)
}

/// A secret to run with: the configured one, else the one in
/// `<data_dir>/<kind.file_name>`, else a new one written there (mode 0600).
pub fn resolve_secret(
    configured: Option<AdminToken>,
    data_dir: &Path,
    kind: SecretKind,
) -> anyhow::Result<(AdminToken, AdminTokenSource)> {
    if let Some(token) = configured {
        return Ok((token, AdminTokenSource::Configured));
    }
    let label = kind.label;
    let path = data_dir.join(kind.file_name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            restrict_permissions(&path, label)?;
            let token = AdminToken::parse(text.trim_end_matches(['\n', '\r']))
                .with_context(|| format!("invalid {label} in {}", path.display()))?;
            Ok((token, AdminTokenSource::File(path)))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let token = AdminToken::generate();
            write_new(&path, &token, label)?;
            Ok((token, AdminTokenSource::Generated(path)))
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot read the {label} {}", path.display()))
        }
    }
}

/// Creates the token file, readable by the owner only, and syncs it so a
/// crash right after startup cannot leave a node whose token is lost.
fn write_new(path: &Path, token: &AdminToken, label: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the {label} file {}", path.display()))?;
    file.write_all(format!("{}\n", token.expose()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the {label} file {}", path.display()))?;
    Ok(())
}

/// Tightens a token file that someone made readable by others back to 0600.
fn restrict_permissions(path: &Path, label: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path)
            .with_context(|| format!("cannot inspect the {label} {}", path.display()))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "{label} file was readable by others; setting mode 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, label);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_needs_every_byte_and_the_length() {
        let token = AdminToken::parse("0123456789abcdef").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"1123456789abcdef"));
        assert!(!token.matches(b"0123456789abcde"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert_eq!(
            AdminToken::parse("short"),
            Err(AdminTokenError::Length { bytes: 5 })
        );
        assert_eq!(
            AdminToken::parse("has a space in it!"),
            Err(AdminTokenError::Characters)
        );
        assert!(AdminToken::parse(&"x".repeat(ADMIN_TOKEN_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = AdminToken::parse("very-secret-token-1234").unwrap();
        assert!(!format!("{token:?}").contains("secret"));
    }

    #[test]
    fn generated_token_is_stored_private_and_reused() {
        let dir = std::env::temp_dir().join(format!(
            "sessiondb-admin-token-{}-{}",
            std::process::id(),
            line!()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (first, source) = resolve(None, &dir).unwrap();
        let path = dir.join(ADMIN_TOKEN_FILE_NAME);
        assert_eq!(source, AdminTokenSource::Generated(path.clone()));
        assert_eq!(first.expose().len(), 2 * GENERATED_TOKEN_RANDOM_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, source) = resolve(None, &dir).unwrap();
        assert_eq!(source, AdminTokenSource::File(path));
        assert_eq!(first, second);
        // The cluster secret lives in a file of its own, never the token's.
        let (secret, source) = resolve_secret(None, &dir, CLUSTER_SECRET_KIND).unwrap();
        let secret_path = dir.join(CLUSTER_SECRET_FILE_NAME);
        assert_eq!(source, AdminTokenSource::Generated(secret_path.clone()));
        assert_ne!(secret, first);
        let (again, _) = resolve_secret(None, &dir, CLUSTER_SECRET_KIND).unwrap();
        assert_eq!(again, secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&secret_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = AdminToken::parse("configured-token-123").unwrap();
        let (third, source) = resolve(Some(configured.clone()), &dir).unwrap();
        assert_eq!((third, source), (configured, AdminTokenSource::Configured));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
