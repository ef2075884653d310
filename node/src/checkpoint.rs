//! The checkpoint store: where the engine's state is saved so that recovery
//! replays only the log written after it.
//!
//! Architecture invariant: this is the only module that imports sled, and
//! only to read a checkpoint that an older node wrote into a sled database
//! (`migrate_sled`). The engine sees the narrow `CheckpointStore` trait.
//!
//! A checkpoint is a set of named parts (opaque bytes: the project registry,
//! one part per shard, one per aggregate actor) and the log position it
//! includes. `FileCheckpointStore` writes each checkpoint as one file of its
//! own: written to a temporary name, `fsync`ed, renamed, the directory
//! `fsync`ed, then read back and checksummed. Only then does the engine cut
//! the log, and only up to the checkpoint before it: one verified
//! checkpoint is kept back with the log since it, so a newest checkpoint
//! that turns out damaged on open falls back to the previous one plus the
//! longer log. Why our own files and not sled: sled 0.34 writes values over
//! ~128 KiB as blob files without `fsync`, and its `flush` uses
//! `sync_file_range`, which persists neither metadata nor the drive cache
//! (`docs/durability.md`, "Checkpoints").

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A complete checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The file format's version (`CHECKPOINT_VERSION` for what this build
    /// writes; older versions are read as they were written).
    pub version: u32,
    /// Every log record up to and including this position is reflected
    /// (version 2: by every shard; a shard may include more, as its own
    /// part says).
    pub position: u64,
    /// When it was taken (node clock, ms since the epoch).
    pub created_ms: i64,
    /// (name, bytes), names unique.
    pub parts: Vec<(String, Vec<u8>)>,
}

impl Checkpoint {
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|(_, bytes)| bytes.len()).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint store at {path}: {operation} failed")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("legacy sled checkpoint store at {path}: {operation} failed")]
    Sled {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process holds the store (a second node on the same data
    /// directory).
    #[error("checkpoint store at {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("checkpoint {id} is incomplete or damaged: {detail}")]
    Damaged { id: u64, detail: String },
    /// The log had failed before the copy: the copy may hold applies the
    /// log never made durable.
    #[error("the log has failed ({cause}); restart the node to recover")]
    LogFailed { cause: String },
    /// An actor did not hand over its state (it stopped, failed, or did not
    /// answer in time).
    #[error("an actor did not hand over its state for the checkpoint: {detail}")]
    ActorCopy { detail: String },
    /// The blocking task that encodes and writes the checkpoint did not
    /// finish (it panicked or was cancelled).
    #[error("the checkpoint task failed: {detail}")]
    Task { detail: String },
    /// The checkpoint is written, but the log it covers could not be cut.
    #[error("the checkpoint is written but the log could not be truncated")]
    Truncate(#[source] crate::log::LogError),
}

/// What a verified `write` left on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub id: u64,
    /// Size of the checkpoint file.
    pub file_bytes: u64,
    /// The log must keep every record after this position: the position of
    /// the checkpoint kept back (0 when there is none).
    pub log_needed_after: u64,
}

/// Saves and loads checkpoints.
///
/// `write` is atomic, durable and verified before it returns, and keeps the
/// previous verified checkpoint. Loading is driven by the engine, newest
/// first, because only the engine can tell whether the parts decode:
/// `ids`, `read`, then `adopt` the one it restored from.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    fn write(&self, checkpoint: &Checkpoint) -> Result<Written, CheckpointError>;
    /// Checkpoint ids on disk, newest first.
    fn ids(&self) -> Vec<u64>;
    /// Reads one checkpoint and checks its checksum and framing.
    fn read(&self, id: u64) -> Result<Checkpoint, CheckpointError>;
    /// The engine restored from `id`: it is the checkpoint to keep back
    /// when the next one is written.
    fn adopt(&self, id: u64, position: u64);
    /// The newest checkpoint written, when its file is gone (deleted, or
    /// lost with its directory entry): `ids` cannot show it.
    fn newest_missing(&self) -> Option<u64>;
}

/// Checkpoint files: `checkpoint-<id:020>.sdbc`, written as
/// `checkpoint-<id:020>.tmp` first.
const FILE_PREFIX: &str = "checkpoint-";
const FILE_SUFFIX: &str = ".sdbc";
const TEMPORARY_SUFFIX: &str = ".tmp";
const LOCK_FILE: &str = "LOCK";
/// Names the newest verified checkpoint: its id (u64) and a crc32 of it.
/// Only used to notice that the newest checkpoint's file went missing.
const NEWEST_FILE: &str = "NEWEST";
const NEWEST_TEMPORARY: &str = "NEWEST.tmp";
const MAGIC: &[u8; 8] = b"SDB-CKPT";
/// The version this build writes. 1: one position for the whole state.
/// 2: the header's position is the lowest of the shards' positions, and a
/// part names each shard's own (checkpoints taken shard by shard); a build
/// that knew only version 1 would replay records twice from it, so it must
/// refuse it, hence the new number.
pub const CHECKPOINT_VERSION: u32 = 2;
/// The oldest version this build reads.
const VERSION_OLDEST: u32 = 1;
/// magic, version, id, position, created_ms, part count.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 4;
const CHECKSUM_BYTES: usize = 4;
/// Most parts in one checkpoint (a part per shard and per segment actor,
/// plus a few): a damaged count is refused before anything is allocated.
pub const CHECKPOINT_PARTS_MAX: usize = 65_536;
/// Longest part name (`shard/00000`, ...).
pub const CHECKPOINT_PART_NAME_BYTES_MAX: usize = 256;
/// Buffer of the writer and of the read-back check.
const IO_BUFFER_BYTES: usize = 1 << 20;

/// A checkpoint known to be good: written and verified, or restored from.
#[derive(Debug, Clone, Copy)]
struct Good {
    id: u64,
    position: u64,
}

#[derive(Debug)]
struct StoreState {
    /// Highest id on disk, good or not: the next checkpoint takes the one
    /// above, so it never reuses a damaged file's name.
    highest_id: u64,
    /// The newest good checkpoint; it is kept back when the next is
    /// written.
    current: Option<Good>,
    /// What `NEWEST` named on open, if its file was not there.
    newest_missing: Option<u64>,
}

/// Checkpoints as files of our own in one directory.
#[derive(Debug)]
pub struct FileCheckpointStore {
    path: PathBuf,
    /// Held (an exclusive `flock`) while the store is open: a second node
    /// on the same data directory fails here, before it touches the log.
    _lock: File,
    state: Mutex<StoreState>,
}

fn io_error(
    path: &Path,
    operation: &'static str,
) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io {
        path,
        operation,
        source,
    }
}

/// `fsync` of a directory, so that the entries created, renamed or removed
/// in it are on disk.
fn sync_directory(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error(path, "sync directory"))
}

fn file_name(id: u64) -> String {
    format!("{FILE_PREFIX}{id:020}{FILE_SUFFIX}")
}

fn temporary_name(id: u64) -> String {
    format!("{FILE_PREFIX}{id:020}{TEMPORARY_SUFFIX}")
}

fn parse_id(name: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(FILE_PREFIX)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

impl FileCheckpointStore {
    /// Opens (or creates) the store at `path`: takes its lock, removes
    /// temporary files a crash left, and moves a checkpoint an older node
    /// left in a sled database into a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(io_error(&path, "create directory"))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path, "open lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CheckpointError::Locked { path });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(io_error(&lock_path, "lock")(source));
            }
        }
        let store = FileCheckpointStore {
            path,
            _lock: lock,
            state: Mutex::new(StoreState {
                highest_id: 0,
                current: None,
                newest_missing: None,
            }),
        };
        store.remove_temporaries()?;
        let highest_id = store.ids().first().copied().unwrap_or(0);
        let named = store.read_newest();
        {
            let mut state = store.lock_state();
            state.highest_id = highest_id.max(named.unwrap_or(0));
            state.newest_missing = named.filter(|id| *id > highest_id);
        }
        if highest_id == 0 {
            store.migrate_sled()?;
        }
        // The lock file and the directory itself must survive a power cut
        // like everything else written here.
        sync_directory(&store.path)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entries(&self) -> Result<Vec<String>, CheckpointError> {
        let mut names = Vec::new();
        let listing = std::fs::read_dir(&self.path).map_err(io_error(&self.path, "list"))?;
        for entry in listing {
            let entry = entry.map_err(io_error(&self.path, "list"))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// The id `NEWEST` names; `None` when there is no such file or it does
    /// not hold an id (a damaged pointer only costs the report of a missing
    /// file).
    fn read_newest(&self) -> Option<u64> {
        let bytes = std::fs::read(self.path.join(NEWEST_FILE)).ok()?;
        let (id, checksum) = bytes.split_at_checked(8)?;
        let checksum: [u8; 4] = checksum.try_into().ok()?;
        (crc32fast::hash(id) == u32::from_le_bytes(checksum))
            .then(|| u64::from_le_bytes(id.try_into().expect("8 bytes")))
    }

    /// Points `NEWEST` at `id`: temporary file, `fsync`, rename. The caller
    /// syncs the directory.
    fn write_newest(&self, id: u64) -> Result<(), CheckpointError> {
        let temporary = self.path.join(NEWEST_TEMPORARY);
        let mut bytes = id.to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&id.to_le_bytes()).to_le_bytes());
        let mut file = File::create(&temporary).map_err(io_error(&temporary, "create"))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error(&temporary, "write"))?;
        let target = self.path.join(NEWEST_FILE);
        std::fs::rename(&temporary, &target).map_err(io_error(&target, "rename"))
    }

    /// A crash during `write` leaves a temporary file: it was never a
    /// checkpoint.
    fn remove_temporaries(&self) -> Result<(), CheckpointError> {
        let mut removed = false;
        for name in self.entries()? {
            if parse_id(&name, TEMPORARY_SUFFIX).is_some() || name == NEWEST_TEMPORARY {
                let file = self.path.join(&name);
                std::fs::remove_file(&file).map_err(io_error(&file, "remove temporary"))?;
                removed = true;
            }
        }
        if removed {
            sync_directory(&self.path)?;
        }
        Ok(())
    }

    /// Writes `checkpoint` as `id`: temporary file, `fsync`, rename,
    /// directory `fsync`. Returns the file's size.
    fn write_file(&self, id: u64, checkpoint: &Checkpoint) -> Result<u64, CheckpointError> {
        assert!(checkpoint.parts.len() <= CHECKPOINT_PARTS_MAX);
        assert!((VERSION_OLDEST..=CHECKPOINT_VERSION).contains(&checkpoint.version));
        let temporary = self.path.join(temporary_name(id));
        let file = File::create(&temporary).map_err(io_error(&temporary, "create"))?;
        let mut writer = ChecksumWriter {
            inner: BufWriter::with_capacity(IO_BUFFER_BYTES, file),
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        let written = (|| -> std::io::Result<()> {
            writer.write_all(MAGIC)?;
            writer.write_all(&checkpoint.version.to_le_bytes())?;
            writer.write_all(&id.to_le_bytes())?;
            writer.write_all(&checkpoint.position.to_le_bytes())?;
            writer.write_all(&checkpoint.created_ms.to_le_bytes())?;
            writer.write_all(&(checkpoint.parts.len() as u32).to_le_bytes())?;
            for (name, bytes) in &checkpoint.parts {
                assert!(
                    name.len() <= CHECKPOINT_PART_NAME_BYTES_MAX,
                    "part name {name}"
                );
                writer.write_all(&(name.len() as u32).to_le_bytes())?;
                writer.write_all(name.as_bytes())?;
                writer.write_all(&(bytes.len() as u64).to_le_bytes())?;
                writer.write_all(bytes)?;
            }
            let checksum = writer.hasher.clone().finalize();
            writer.inner.write_all(&checksum.to_le_bytes())?;
            writer.written += CHECKSUM_BYTES as u64;
            writer.inner.flush()
        })();
        written.map_err(io_error(&temporary, "write"))?;
        let file_bytes = writer.written;
        let file = writer
            .inner
            .into_inner()
            .map_err(|error| io_error(&temporary, "write")(error.into_error()))?;
        // The data and the size before the name: a renamed file is whole.
        file.sync_all().map_err(io_error(&temporary, "fsync"))?;
        drop(file);
        let target = self.path.join(file_name(id));
        std::fs::rename(&temporary, &target).map_err(io_error(&target, "rename"))?;
        sync_directory(&self.path)?;
        Ok(file_bytes)
    }

    /// Reads the file back and checks its checksum: what `write` promises
    /// before the log is cut.
    fn verify(&self, id: u64, file_bytes: u64) -> Result<(), CheckpointError> {
        let path = self.path.join(file_name(id));
        let damaged = |detail: String| CheckpointError::Damaged { id, detail };
        let mut file = File::open(&path).map_err(io_error(&path, "open for verification"))?;
        let length = file
            .metadata()
            .map_err(io_error(&path, "stat for verification"))?
            .len();
        if length != file_bytes {
            return Err(damaged(format!(
                "{length} bytes on disk, {file_bytes} written"
            )));
        }
        let body_bytes = length
            .checked_sub(CHECKSUM_BYTES as u64)
            .ok_or_else(|| damaged("shorter than its checksum".into()))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buffer = vec![0_u8; IO_BUFFER_BYTES];
        let mut remaining = body_bytes;
        while remaining > 0 {
            let chunk = remaining.min(buffer.len() as u64) as usize;
            file.read_exact(&mut buffer[..chunk])
                .map_err(io_error(&path, "read for verification"))?;
            hasher.update(&buffer[..chunk]);
            remaining -= chunk as u64;
        }
        let mut stored = [0_u8; CHECKSUM_BYTES];
        file.read_exact(&mut stored)
            .map_err(io_error(&path, "read for verification"))?;
        if u32::from_le_bytes(stored) != hasher.finalize() {
            return Err(damaged("checksum mismatch on read-back".into()));
        }
        Ok(())
    }

    /// Removes every checkpoint file but `keep`, then syncs the directory
    /// (always: the caller renamed `NEWEST` just before).
    fn remove_all_but(&self, keep: &[u64]) -> Result<(), CheckpointError> {
        for name in self.entries()? {
            let Some(id) = parse_id(&name, FILE_SUFFIX) else {
                continue;
            };
            if !keep.contains(&id) {
                let file = self.path.join(&name);
                std::fs::remove_file(&file).map_err(io_error(&file, "remove"))?;
            }
        }
        sync_directory(&self.path)
    }

    /// An older node kept its checkpoint in a sled database in this
    /// directory. Its latest checkpoint is written as a file (durably, like
    /// any other), then sled's files are removed.
    fn migrate_sled(&self) -> Result<(), CheckpointError> {
        let sled_files = ["conf", "db", "blobs", "snap"];
        if !self.path.join("db").exists() {
            return Ok(());
        }
        let checkpoint = legacy_sled::read_latest(&self.path)?;
        if let Some(checkpoint) = &checkpoint {
            let written = self.write(checkpoint)?;
            tracing::warn!(
                id = written.id,
                position = checkpoint.position,
                "moved the checkpoint of the old sled store into a file"
            );
        }
        for name in self.entries()? {
            let legacy = sled_files
                .iter()
                .any(|prefix| name == *prefix || name.starts_with("snap."));
            if !legacy {
                continue;
            }
            let file = self.path.join(&name);
            let removed = if file.is_dir() {
                std::fs::remove_dir_all(&file)
            } else {
                std::fs::remove_file(&file)
            };
            removed.map_err(io_error(&file, "remove legacy sled file"))?;
        }
        sync_directory(&self.path)
    }
}

/// A writer that checksums what goes through it.
struct ChecksumWriter {
    inner: BufWriter<File>,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl Write for ChecksumWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let count = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..count]);
        self.written += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointStore for FileCheckpointStore {
    fn write(&self, checkpoint: &Checkpoint) -> Result<Written, CheckpointError> {
        let id = self.lock_state().highest_id + 1;
        // Taken now: a failed write below must not reuse the name.
        self.lock_state().highest_id = id;
        let file_bytes = self.write_file(id, checkpoint)?;
        self.verify(id, file_bytes)?;
        self.write_newest(id)?;
        let previous = self.lock_state().current;
        // Only the new checkpoint and the one before it stay; older ones,
        // and damaged ones a fallback skipped, go.
        let mut keep = vec![id];
        keep.extend(previous.map(|good| good.id));
        self.remove_all_but(&keep)?;
        self.lock_state().current = Some(Good {
            id,
            position: checkpoint.position,
        });
        Ok(Written {
            id,
            file_bytes,
            log_needed_after: previous.map_or(0, |good| good.position),
        })
    }

    fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .entries()
            .unwrap_or_default()
            .iter()
            .filter_map(|name| parse_id(name, FILE_SUFFIX))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    fn read(&self, id: u64) -> Result<Checkpoint, CheckpointError> {
        let path = self.path.join(file_name(id));
        let file = File::open(&path).map_err(|source| CheckpointError::Damaged {
            id,
            detail: format!("cannot open {}: {source}", path.display()),
        })?;
        decode(id, file)
    }

    fn newest_missing(&self) -> Option<u64> {
        self.lock_state().newest_missing
    }

    fn adopt(&self, id: u64, position: u64) {
        let mut state = self.lock_state();
        state.highest_id = state.highest_id.max(id);
        state.current = Some(Good { id, position });
    }
}

/// Reads and decodes a checkpoint file as a stream (no second copy of the
/// parts in memory), checking framing, limits and, at the end, the
/// checksum over everything read.
fn decode(id: u64, file: File) -> Result<Checkpoint, CheckpointError> {
    let damaged = |detail: String| CheckpointError::Damaged { id, detail };
    let length = file
        .metadata()
        .map_err(|error| damaged(format!("cannot stat: {error}")))?
        .len();
    let body_bytes = length
        .checked_sub((HEADER_BYTES + CHECKSUM_BYTES) as u64)
        .ok_or_else(|| damaged(format!("{length} bytes, shorter than a header")))?
        + HEADER_BYTES as u64;
    let mut reader = ChecksumReader {
        inner: std::io::BufReader::with_capacity(IO_BUFFER_BYTES, file),
        hasher: crc32fast::Hasher::new(),
        remaining: body_bytes,
    };
    let mut field = |what: &str, length: u64| -> Result<Vec<u8>, CheckpointError> {
        reader
            .take(length)
            .map_err(|error| damaged(format!("{what}: {error}")))
    };
    let u32_of = |bytes: Vec<u8>| u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
    let u64_of = |bytes: Vec<u8>| u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    if field("the magic", 8)? != MAGIC {
        return Err(damaged("not a checkpoint file (magic)".into()));
    }
    let version = u32_of(field("the version", 4)?);
    if !(VERSION_OLDEST..=CHECKPOINT_VERSION).contains(&version) {
        return Err(damaged(format!(
            "format version {version} (this build reads {VERSION_OLDEST} to {CHECKPOINT_VERSION})"
        )));
    }
    let stored_id = u64_of(field("the id", 8)?);
    if stored_id != id {
        return Err(damaged(format!("file holds checkpoint {stored_id}")));
    }
    let position = u64_of(field("the position", 8)?);
    let created_ms = u64_of(field("the creation time", 8)?) as i64;
    let count = u32_of(field("the part count", 4)?) as usize;
    if count > CHECKPOINT_PARTS_MAX {
        return Err(damaged(format!(
            "{count} parts, over {CHECKPOINT_PARTS_MAX}"
        )));
    }
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let name_length = u32_of(field("a part name length", 4)?) as u64;
        if name_length > CHECKPOINT_PART_NAME_BYTES_MAX as u64 {
            return Err(damaged(format!("part name of {name_length} bytes")));
        }
        let name = String::from_utf8(field("a part name", name_length)?)
            .map_err(|_| damaged("part name is not UTF-8".into()))?;
        let length = u64_of(field("a part length", 8)?);
        let part = field("a part", length)?;
        parts.push((name, part));
    }
    if reader.remaining != 0 {
        return Err(damaged(format!(
            "{} bytes after the last part",
            reader.remaining
        )));
    }
    let mut stored = [0_u8; CHECKSUM_BYTES];
    reader
        .inner
        .read_exact(&mut stored)
        .map_err(|error| damaged(format!("the checksum: {error}")))?;
    if reader.hasher.finalize() != u32::from_le_bytes(stored) {
        return Err(damaged("checksum mismatch".into()));
    }
    Ok(Checkpoint {
        version,
        position,
        created_ms,
        parts,
    })
}

/// Reads the body of a checkpoint file, checksumming it, never past its
/// end (so a damaged length is refused before anything is allocated).
struct ChecksumReader {
    inner: std::io::BufReader<File>,
    hasher: crc32fast::Hasher,
    remaining: u64,
}

impl ChecksumReader {
    fn take(&mut self, length: u64) -> std::io::Result<Vec<u8>> {
        if length > self.remaining {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{length} bytes announced, {} left in the file",
                    self.remaining
                ),
            ));
        }
        let mut bytes = vec![0_u8; length as usize];
        self.inner.read_exact(&mut bytes)?;
        self.hasher.update(&bytes);
        self.remaining -= length;
        Ok(bytes)
    }
}

/// Reading the sled database that nodes before file checkpoints wrote.
mod legacy_sled {
    use super::{Checkpoint, CheckpointError};
    use std::path::Path;

    const LATEST_KEY: &[u8] = b"latest";

    #[derive(Debug, serde::Deserialize)]
    struct Meta {
        position: u64,
        created_ms: i64,
        names: Vec<String>,
    }

    fn sled_error(
        path: &Path,
        operation: &'static str,
    ) -> impl FnOnce(sled::Error) -> CheckpointError {
        let path = path.to_path_buf();
        move |source| CheckpointError::Sled {
            path,
            operation,
            source: Box::new(source),
        }
    }

    pub(super) fn read_latest(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        let database = sled::Config::new()
            .path(path)
            .open()
            .map_err(sled_error(path, "open"))?;
        let Some(value) = database.get(LATEST_KEY).map_err(sled_error(path, "read"))? else {
            return Ok(None);
        };
        let damaged = |detail: String| CheckpointError::Damaged { id: 0, detail };
        let id: [u8; 8] = value
            .as_ref()
            .try_into()
            .map_err(|_| damaged(format!("latest pointer of {} bytes", value.len())))?;
        let id = u64::from_le_bytes(id);
        let meta = database
            .get(format!("meta/{id:020}"))
            .map_err(sled_error(path, "read"))?
            .ok_or_else(|| damaged("metadata missing".into()))?;
        let meta: Meta = postcard::from_bytes(&meta).map_err(|error| damaged(error.to_string()))?;
        let mut parts = Vec::with_capacity(meta.names.len());
        for name in meta.names {
            let bytes = database
                .get(format!("part/{id:020}/{name}"))
                .map_err(sled_error(path, "read"))?
                .ok_or_else(|| damaged(format!("part `{name}` missing")))?;
            parts.push((name, bytes.to_vec()));
        }
        // Sled held whole-state checkpoints: one position for all.
        Ok(Some(Checkpoint {
            version: 1,
            position: meta.position,
            created_ms: meta.created_ms,
            parts,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary_directory(label: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "sessiondb-checkpoint-{label}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    fn checkpoint(position: u64, parts: &[(&str, &[u8])]) -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            position,
            created_ms: position as i64 * 10,
            parts: parts
                .iter()
                .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
                .collect(),
        }
    }

    fn files(path: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_keeps_the_previous_checkpoint_and_names_the_log_it_needs() {
        let path = temporary_directory("keep-one-back");
        let store = FileCheckpointStore::open(&path).unwrap();
        assert!(store.ids().is_empty());
        let first = checkpoint(10, &[("a", &[1, 2]), ("b", &[3])]);
        let written = store.write(&first).unwrap();
        assert_eq!(written.log_needed_after, 0, "nothing kept back yet");
        let second = checkpoint(20, &[("a", &[9])]);
        let written = store.write(&second).unwrap();
        assert_eq!(written.log_needed_after, 10, "the first is kept back");
        let third = checkpoint(30, &[("a", &vec![7; 300_000])]);
        let written = store.write(&third).unwrap();
        assert_eq!(written.log_needed_after, 20);
        assert_eq!(store.ids(), vec![3, 2], "only two checkpoints stay");
        assert_eq!(store.read(3).unwrap(), third);
        assert_eq!(store.read(2).unwrap(), second);
        drop(store);
        let store = FileCheckpointStore::open(&path).unwrap();
        assert_eq!(store.ids(), vec![3, 2]);
        assert_eq!(
            files(&path),
            vec![
                "LOCK".to_string(),
                "NEWEST".to_string(),
                file_name(2),
                file_name(3)
            ]
        );
        assert_eq!(store.newest_missing(), None);
        std::fs::remove_file(path.join(file_name(3))).unwrap();
        drop(store);
        let store = FileCheckpointStore::open(&path).unwrap();
        assert_eq!(
            store.newest_missing(),
            Some(3),
            "a deleted newest file is noticed"
        );
        assert_eq!(store.ids(), vec![2]);
        store.adopt(2, 20);
        let written = store.write(&checkpoint(40, &[])).unwrap();
        assert_eq!(written.id, 4, "the missing id is not reused");
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn damage_of_any_kind_is_found_by_read() {
        let path = temporary_directory("damage");
        let store = FileCheckpointStore::open(&path).unwrap();
        store
            .write(&checkpoint(5, &[("shard/00000", &[1; 1000])]))
            .unwrap();
        let file = path.join(file_name(1));
        let good = std::fs::read(&file).unwrap();
        let damages: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 1].to_vec()),
            ("half", good[..good.len() / 2].to_vec()),
            ("empty", Vec::new()),
            ("byte flipped", {
                let mut bytes = good.clone();
                bytes[HEADER_BYTES + 20] ^= 0x40;
                bytes
            }),
            ("checksum flipped", {
                let mut bytes = good.clone();
                *bytes.last_mut().unwrap() ^= 1;
                bytes
            }),
        ];
        for (what, bytes) in damages {
            std::fs::write(&file, &bytes).unwrap();
            let error = store.read(1).unwrap_err();
            assert!(
                matches!(error, CheckpointError::Damaged { id: 1, .. }),
                "{what}: {error}"
            );
        }
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            store.read(1).unwrap_err(),
            CheckpointError::Damaged { id: 1, .. }
        ));
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn after_a_fallback_the_adopted_checkpoint_is_the_one_kept_back() {
        let path = temporary_directory("adopt");
        {
            let store = FileCheckpointStore::open(&path).unwrap();
            store.write(&checkpoint(10, &[("a", &[1])])).unwrap();
            store.write(&checkpoint(20, &[("a", &[2])])).unwrap();
        }
        std::fs::write(path.join(file_name(2)), b"damaged").unwrap();
        // A crash while writing left a temporary file.
        std::fs::write(path.join(temporary_name(3)), b"half").unwrap();
        let store = FileCheckpointStore::open(&path).unwrap();
        assert_eq!(store.ids(), vec![2, 1], "the temporary file is removed");
        assert!(store.read(2).is_err());
        store.adopt(1, 10);
        let written = store.write(&checkpoint(25, &[("a", &[3])])).unwrap();
        assert_eq!(written.id, 3, "a damaged file's id is never reused");
        assert_eq!(written.log_needed_after, 10);
        assert_eq!(store.ids(), vec![3, 1], "the damaged checkpoint goes");
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused() {
        let path = temporary_directory("lock");
        let store = FileCheckpointStore::open(&path).unwrap();
        let second = FileCheckpointStore::open(&path).unwrap_err();
        assert!(matches!(second, CheckpointError::Locked { .. }), "{second}");
        drop(store);
        FileCheckpointStore::open(&path).unwrap();
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_version_1_file_reads_as_written_and_an_unknown_version_is_refused() {
        let path = temporary_directory("versions");
        let store = FileCheckpointStore::open(&path).unwrap();
        let old = Checkpoint {
            version: 1,
            ..checkpoint(9, &[("projects", b"p"), ("shard/00000", b"s")])
        };
        let id = store.write(&old).unwrap().id;
        assert_eq!(store.read(id).unwrap(), old);
        let file = path.join(file_name(id));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[8..12].copy_from_slice(&(CHECKPOINT_VERSION + 1).to_le_bytes());
        std::fs::write(&file, &bytes).unwrap();
        let error = store.read(id).unwrap_err().to_string();
        assert!(error.contains("format version 3"), "{error}");
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_checkpoint_of_the_old_sled_store_is_moved_into_a_file() {
        let path = temporary_directory("migrate");
        {
            let database = sled::open(&path).unwrap();
            let meta = postcard::to_stdvec(&(42_u64, 7_i64, vec!["projects".to_string()])).unwrap();
            database.insert("meta/00000000000000000004", meta).unwrap();
            database
                .insert("part/00000000000000000004/projects", &[1_u8, 2, 3][..])
                .unwrap();
            database.insert("latest", &4_u64.to_le_bytes()).unwrap();
            database.flush().unwrap();
        }
        let store = FileCheckpointStore::open(&path).unwrap();
        assert_eq!(store.ids(), vec![1]);
        assert_eq!(
            store.read(1).unwrap(),
            Checkpoint {
                version: 1,
                position: 42,
                created_ms: 7,
                parts: vec![("projects".to_string(), vec![1, 2, 3])],
            }
        );
        assert_eq!(
            files(&path),
            vec!["LOCK".to_string(), "NEWEST".to_string(), file_name(1)]
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }
}
