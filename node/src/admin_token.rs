//! The admin token: the secret that unlocks projects, queries, the
//! console's data calls, `/metrics`, `/v1/admin/*` and cluster mutations
//! (`docs/security.md`); and the cluster secret.
//!
//! The admin token may come from `--admin-token`, `SESSIONDB_ADMIN_TOKEN` or
//! the configuration file's `admin_token`; without any of them the node
//! generates one at its first start and prints it once on stdout. Either
//! way the node keeps only its SHA-256 hash, in `<data-dir>/admin-token`
//! (mode 0600, `AdminTokens`), together with the previous token's hash while
//! a rotation's grace period runs. The token itself is never logged:
//! `AdminToken`'s `Debug` is redacted, and the node logs only the file's
//! path.
//!
//! The cluster secret (`docs/cluster.md`, "Cluster secret") is sent by the
//! node to its peers, so it is kept in plaintext in its own file,
//! `<data-dir>/cluster-secret` (mode 0600): `resolve_secret` serves it.

use crate::clock::SharedClock;
use crate::keys::{self, KeyHash, RotatingKey};
use anyhow::Context;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

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
const GENERATED_TOKEN_RANDOM_BYTES: usize = keys::ADMIN_TOKEN_RANDOM_BYTES;
/// First line of the admin token file since tokens are stored hashed; a
/// file without it holds a plaintext token of an older node.
pub const ADMIN_TOKEN_FILE_HEADER: &str = "sessiondb admin token hashes v2";

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
        AdminToken(Arc::from(keys::generate_secret(
            GENERATED_TOKEN_RANDOM_BYTES,
        )))
    }

    /// The token's hash, the only form of the admin token that is stored.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.0.as_bytes())
    }

    /// Whether `candidate` is this token. The comparison looks at every
    /// byte whatever the first difference, so its time does not tell an
    /// attacker how long a prefix they guessed right (only the length).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        keys::constant_time_eq(self.0.as_bytes(), candidate)
    }

    /// The token's text, for writing it to its file or sending it to a
    /// peer (the cluster secret). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
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

/// The node's admin token, as hashes (`docs/security.md`): the current
/// token and, during a rotation's grace period, the previous one. Mirrors
/// `<data-dir>/admin-token`, which every change rewrites before it takes
/// effect. Cheap to clone.
#[derive(Clone)]
pub struct AdminTokens {
    inner: Arc<AdminTokensInner>,
}

struct AdminTokensInner {
    hashes: RwLock<RotatingKey>,
    path: PathBuf,
    clock: SharedClock,
    /// Serialises rotations, so two never interleave their file writes.
    rotating: Mutex<()>,
}

impl fmt::Debug for AdminTokens {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AdminTokens")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// How `AdminTokens::open` came by the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenOpened {
    /// The hashes in this file (written at an earlier start); a configured
    /// token, if any, is one of them.
    File(PathBuf),
    /// The configured token, whose hash was written to this new file.
    Configured(PathBuf),
    /// A new token, whose hash was written to this file: the one time it
    /// exists in plaintext, to be shown to the operator once.
    Generated { path: PathBuf, token: AdminToken },
    /// This file held a plaintext token (a node from before hashing); it
    /// now holds its hash.
    Migrated(PathBuf),
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Grace(#[from] keys::GraceError),
    #[error("cannot write the admin token file {path}: {source}")]
    Storage {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AdminTokens {
    /// The admin token state of the node with data directory `data_dir`:
    /// from `<data_dir>/admin-token` when it exists, else from the
    /// configured token, else a generated one; the file is written (hashes
    /// only) before this returns. A configured token must be one of the
    /// file's valid tokens: after a rotation, a configuration still naming
    /// the old token must not silently bring it back.
    pub fn open(
        configured: Option<AdminToken>,
        data_dir: &Path,
        clock: SharedClock,
    ) -> anyhow::Result<(AdminTokens, AdminTokenOpened)> {
        let path = data_dir.join(ADMIN_TOKEN_FILE_NAME);
        let label = ADMIN_TOKEN_KIND.label;
        let now_ms = clock.now_ms();
        let (hashes, opened) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                restrict_permissions(&path, label)?;
                match text.lines().next() {
                    Some(ADMIN_TOKEN_FILE_HEADER) => {
                        let hashes = parse_token_file(&text).with_context(|| {
                            format!("invalid admin token file {}", path.display())
                        })?;
                        if let Some(token) = &configured {
                            if !hashes.matches(&token.hash(), now_ms) {
                                anyhow::bail!(
                                    "the configured admin token (--admin-token, SESSIONDB_ADMIN_TOKEN or admin_token) is not this node's admin token: \
                                     it was rotated (sessiondb-ctl admin-token rotate) since. Configure the current token, or remove the setting; \
                                     to make the configured token the node's token again, stop the node and delete {} (docs/security.md)",
                                    path.display()
                                );
                            }
                        }
                        (hashes, AdminTokenOpened::File(path.clone()))
                    }
                    _ => {
                        // A token file from before hashing: the configured
                        // token won over it then, and still does.
                        let hashes = match &configured {
                            Some(token) => RotatingKey::new(token.hash()),
                            None => {
                                let token = AdminToken::parse(text.trim_end_matches(['\n', '\r']))
                                    .with_context(|| {
                                        format!("invalid {label} in {}", path.display())
                                    })?;
                                RotatingKey::new(token.hash())
                            }
                        };
                        write_token_file(&path, &hashes, false).with_context(|| {
                            format!("cannot rewrite the admin token file {}", path.display())
                        })?;
                        (hashes, AdminTokenOpened::Migrated(path.clone()))
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let (token, opened) = match configured {
                    Some(token) => (token, AdminTokenOpened::Configured(path.clone())),
                    None => {
                        let token = AdminToken::generate();
                        let opened = AdminTokenOpened::Generated {
                            path: path.clone(),
                            token: token.clone(),
                        };
                        (token, opened)
                    }
                };
                let hashes = RotatingKey::new(token.hash());
                write_token_file(&path, &hashes, true).with_context(|| {
                    format!("cannot create the admin token file {}", path.display())
                })?;
                (hashes, opened)
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read the {label} {}", path.display()))
            }
        };
        let tokens = AdminTokens {
            inner: Arc::new(AdminTokensInner {
                hashes: RwLock::new(hashes),
                path,
                clock,
                rotating: Mutex::new(()),
            }),
        };
        Ok((tokens, opened))
    }

    /// Whether `candidate` is the admin token (or the previous one, within
    /// its grace period). Compares hashes in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let hash = KeyHash::of(candidate);
        let now_ms = self.inner.clock.now_ms();
        self.inner
            .hashes
            .read()
            .expect("admin token lock is never poisoned")
            .matches(&hash, now_ms)
    }

    /// Replaces the admin token by a new random one; the old one stays valid
    /// for `grace_ms` (the node's clock). The new hashes are on disk before
    /// the new token works or this returns, so the rotation survives a
    /// restart. Returns the new token: the only time it exists in plaintext.
    pub fn rotate(&self, grace_ms: i64) -> Result<AdminToken, RotationError> {
        let grace_ms = keys::check_grace_ms(grace_ms)?;
        let _rotation = self
            .inner
            .rotating
            .lock()
            .expect("admin token lock is never poisoned");
        let token = AdminToken::generate();
        let now_ms = self.inner.clock.now_ms();
        let current = *self
            .inner
            .hashes
            .read()
            .expect("admin token lock is never poisoned");
        let rotated = current.rotated(token.hash(), now_ms, grace_ms);
        write_token_file(&self.inner.path, &rotated, false).map_err(|source| {
            RotationError::Storage {
                path: self.inner.path.clone(),
                source,
            }
        })?;
        *self
            .inner
            .hashes
            .write()
            .expect("admin token lock is never poisoned") = rotated;
        Ok(token)
    }

    /// When the previous token stops working, if a grace period runs.
    pub fn previous_valid_until_ms(&self) -> Option<i64> {
        let hashes = self
            .inner
            .hashes
            .read()
            .expect("admin token lock is never poisoned");
        hashes
            .previous
            .map(|previous| previous.valid_until_ms)
            .filter(|until_ms| *until_ms > self.inner.clock.now_ms())
    }
}

/// The hashes of an admin token file: the header line, then the stored form
/// of `keys::stored_ingest_key` (the same `sha256:<current>[,<previous>@<ms>]`).
fn parse_token_file(text: &str) -> anyhow::Result<RotatingKey> {
    let mut lines = text.lines().skip(1);
    let hashes = lines
        .next()
        .context("the hash line after the header is missing")?;
    if !hashes.starts_with("sha256:") {
        anyhow::bail!("the hash line must start with `sha256:`");
    }
    keys::stored_ingest_key::decode(hashes).map_err(anyhow::Error::msg)
}

/// Writes the admin token file (mode 0600) so that a crash leaves either
/// the old or the new file whole: a temporary file, synced, renamed over
/// the old one, and the directory synced. `create_new`: fail rather than
/// replace a file that appeared meanwhile.
fn write_token_file(path: &Path, hashes: &RotatingKey, create_new: bool) -> std::io::Result<()> {
    let text = format!(
        "{ADMIN_TOKEN_FILE_HEADER}\n{}\n",
        keys::stored_ingest_key::encode(hashes)
    );
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    if create_new && path.exists() {
        let _ = std::fs::remove_file(&temporary);
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the admin token file appeared while it was being created",
        ));
    }
    std::fs::rename(&temporary, path)?;
    if let Some(directory) = path.parent() {
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
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

    fn temporary_directory(line: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sessiondb-admin-token-{}-{line}",
            std::process::id(),
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_cluster_secret_is_generated_private_and_reused() {
        let dir = temporary_directory(line!());
        let (secret, source) = resolve_secret(None, &dir, CLUSTER_SECRET_KIND).unwrap();
        let secret_path = dir.join(CLUSTER_SECRET_FILE_NAME);
        assert_eq!(source, AdminTokenSource::Generated(secret_path.clone()));
        assert_eq!(secret.expose().len(), 2 * GENERATED_TOKEN_RANDOM_BYTES);
        let (again, source) = resolve_secret(None, &dir, CLUSTER_SECRET_KIND).unwrap();
        assert_eq!(source, AdminTokenSource::File(secret_path.clone()));
        assert_eq!(again, secret);
        #[cfg(unix)]
        assert_eq!(mode_of(&secret_path), 0o600);
        let configured = AdminToken::parse("configured-secret-123").unwrap();
        let (third, source) =
            resolve_secret(Some(configured.clone()), &dir, CLUSTER_SECRET_KIND).unwrap();
        assert_eq!((third, source), (configured, AdminTokenSource::Configured));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_admin_token_is_stored_hashed_and_rotates_with_a_grace_period() {
        let dir = temporary_directory(line!());
        let clock = Arc::new(crate::clock::ManualClock::new(1_000));
        let shared: SharedClock = clock.clone();
        let (tokens, opened) = AdminTokens::open(None, &dir, shared.clone()).unwrap();
        let path = dir.join(ADMIN_TOKEN_FILE_NAME);
        let AdminTokenOpened::Generated { token, .. } = opened else {
            panic!("a new data directory generates a token, got {opened:?}");
        };
        assert_eq!(token.expose().len(), 2 * GENERATED_TOKEN_RANDOM_BYTES);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(token.expose()), "{text}");
        assert!(text.contains(&token.hash().to_hex()), "{text}");
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        assert!(tokens.matches(token.expose().as_bytes()));
        assert!(!tokens.matches(b"another-token-0123456789"));

        let new = tokens.rotate(500).unwrap();
        assert!(tokens.matches(new.expose().as_bytes()));
        assert!(tokens.matches(token.expose().as_bytes()));
        assert_eq!(tokens.previous_valid_until_ms(), Some(1_500));
        assert!(tokens.rotate(-1).is_err());

        // Reopened (a restart), the rotation is still there, and the
        // grace period still ends on time.
        let (reopened, opened) =
            AdminTokens::open(Some(new.clone()), &dir, shared.clone()).unwrap();
        assert_eq!(opened, AdminTokenOpened::File(path.clone()));
        assert!(reopened.matches(token.expose().as_bytes()));
        clock.set_ms(1_500);
        assert!(!reopened.matches(token.expose().as_bytes()));
        assert!(reopened.matches(new.expose().as_bytes()));
        // A configuration still naming the retired token is refused.
        let error = AdminTokens::open(Some(token), &dir, shared).unwrap_err();
        assert!(format!("{error:#}").contains("rotated"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_plaintext_token_file_from_an_older_node_is_hashed_in_place() {
        let dir = temporary_directory(line!());
        let path = dir.join(ADMIN_TOKEN_FILE_NAME);
        std::fs::write(&path, "an-old-plaintext-token-123\n").unwrap();
        let clock: SharedClock = Arc::new(crate::clock::ManualClock::new(0));
        let (tokens, opened) = AdminTokens::open(None, &dir, clock).unwrap();
        assert_eq!(opened, AdminTokenOpened::Migrated(path.clone()));
        assert!(tokens.matches(b"an-old-plaintext-token-123"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("an-old-plaintext"), "{text}");
        assert!(text.starts_with(ADMIN_TOKEN_FILE_HEADER), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
