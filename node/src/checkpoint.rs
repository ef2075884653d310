//! The checkpoint store: where the engine's state is saved so that recovery
//! replays only the log written after it.
//!
//! Architecture invariant: this is the only module that imports sled, and
//! only through `SledCheckpointStore`. The engine sees the narrow
//! `CheckpointStore` trait, so sled can be replaced (sled 0.34 keeps
//! everything it writes in memory-mapped pages and can use a lot of space).
//!
//! A checkpoint is a set of named parts (opaque bytes: the project registry,
//! one part per shard, one per aggregate actor) and the log position it
//! includes. Writing one is atomic: parts go under a fresh checkpoint id,
//! then, after a flush, one `latest` pointer names the id; the previous
//! checkpoint's parts are deleted only after that. A crash at any point
//! leaves either the old or the new checkpoint complete.

use std::path::{Path, PathBuf};

/// A complete checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every log record up to and including this position is reflected.
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
    Store {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("checkpoint {id} is incomplete or damaged: {detail}")]
    Damaged { id: u64, detail: String },
    /// The pointer to the latest checkpoint is not a checkpoint id.
    #[error("the checkpoint store's latest pointer is {bytes} bytes, not 8: the store is damaged")]
    DamagedPointer { bytes: usize },
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

/// Saves and loads checkpoints. Implementations must make `write` atomic and
/// durable before it returns.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    fn write(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
    fn read_latest(&self) -> Result<Option<Checkpoint>, CheckpointError>;
}

/// Checkpoints in a sled database.
#[derive(Debug)]
pub struct SledCheckpointStore {
    path: PathBuf,
    database: sled::Db,
}

const LATEST_KEY: &[u8] = b"latest";

/// Key of a checkpoint's metadata: `meta/<id>` → position, created, names.
fn meta_key(id: u64) -> Vec<u8> {
    format!("meta/{id:020}").into_bytes()
}

fn part_key(id: u64, name: &str) -> Vec<u8> {
    format!("part/{id:020}/{name}").into_bytes()
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    position: u64,
    created_ms: i64,
    names: Vec<String>,
}

impl SledCheckpointStore {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        let database = sled::Config::new()
            .path(&path)
            // Writes are made durable by our explicit flush, not by sled's
            // background timer.
            .flush_every_ms(None)
            .open()
            .map_err(|source| store_error(&path, "open", source))?;
        Ok(SledCheckpointStore { path, database })
    }

    fn latest_id(&self) -> Result<Option<u64>, CheckpointError> {
        let Some(value) = self
            .database
            .get(LATEST_KEY)
            .map_err(|source| store_error(&self.path, "read", source))?
        else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value
            .as_ref()
            .try_into()
            .map_err(|_| CheckpointError::DamagedPointer { bytes: value.len() })?;
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    fn remove(&self, id: u64) -> Result<(), CheckpointError> {
        let prefix = format!("part/{id:020}/");
        for key in self.database.scan_prefix(prefix.as_bytes()).keys() {
            let key = key.map_err(|source| store_error(&self.path, "scan", source))?;
            self.database
                .remove(key)
                .map_err(|source| store_error(&self.path, "remove", source))?;
        }
        self.database
            .remove(meta_key(id))
            .map_err(|source| store_error(&self.path, "remove", source))?;
        Ok(())
    }
}

fn store_error(path: &Path, operation: &'static str, source: sled::Error) -> CheckpointError {
    CheckpointError::Store {
        path: path.to_path_buf(),
        operation,
        source: Box::new(source),
    }
}

impl CheckpointStore for SledCheckpointStore {
    fn write(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let previous = self.latest_id()?;
        let id = previous.map_or(1, |id| id + 1);
        for (name, bytes) in &checkpoint.parts {
            self.database
                .insert(part_key(id, name), bytes.as_slice())
                .map_err(|source| store_error(&self.path, "insert", source))?;
        }
        let meta = Meta {
            position: checkpoint.position,
            created_ms: checkpoint.created_ms,
            names: checkpoint
                .parts
                .iter()
                .map(|(name, _)| name.clone())
                .collect(),
        };
        let meta = postcard::to_stdvec(&meta).expect("metadata always encodes");
        self.database
            .insert(meta_key(id), meta)
            .map_err(|source| store_error(&self.path, "insert", source))?;
        // Parts and metadata must be on disk before the pointer names them.
        self.database
            .flush()
            .map_err(|source| store_error(&self.path, "flush", source))?;
        self.database
            .insert(LATEST_KEY, &id.to_le_bytes())
            .map_err(|source| store_error(&self.path, "insert", source))?;
        self.database
            .flush()
            .map_err(|source| store_error(&self.path, "flush", source))?;
        if let Some(previous) = previous {
            self.remove(previous)?;
            // Not flushed: leftover parts of an old checkpoint are harmless.
        }
        Ok(())
    }

    fn read_latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let Some(id) = self.latest_id()? else {
            return Ok(None);
        };
        let damaged = |detail: String| CheckpointError::Damaged { id, detail };
        let meta = self
            .database
            .get(meta_key(id))
            .map_err(|source| store_error(&self.path, "read", source))?
            .ok_or_else(|| damaged("metadata missing".into()))?;
        let meta: Meta = postcard::from_bytes(&meta).map_err(|error| damaged(error.to_string()))?;
        let mut parts = Vec::with_capacity(meta.names.len());
        for name in meta.names {
            let bytes = self
                .database
                .get(part_key(id, &name))
                .map_err(|source| store_error(&self.path, "read", source))?
                .ok_or_else(|| damaged(format!("part `{name}` missing")))?;
            parts.push((name, bytes.to_vec()));
        }
        Ok(Some(Checkpoint {
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

    #[test]
    fn latest_checkpoint_survives_reopen_and_replaces_the_previous() {
        let path = temporary_directory("reopen");
        {
            let store = SledCheckpointStore::open(&path).unwrap();
            assert_eq!(store.read_latest().unwrap(), None);
            let first = Checkpoint {
                position: 10,
                created_ms: 1,
                parts: vec![("a".into(), vec![1, 2]), ("b".into(), vec![3])],
            };
            store.write(&first).unwrap();
            let second = Checkpoint {
                position: 20,
                created_ms: 2,
                parts: vec![("a".into(), vec![9])],
            };
            store.write(&second).unwrap();
            assert_eq!(store.read_latest().unwrap(), Some(second));
        }
        let store = SledCheckpointStore::open(&path).unwrap();
        let latest = store.read_latest().unwrap().unwrap();
        assert_eq!(latest.position, 20);
        assert_eq!(latest.parts, vec![("a".to_string(), vec![9])]);
        let leftovers = store.database.scan_prefix(b"part/").count();
        assert_eq!(leftovers, 1, "the previous checkpoint's parts are removed");
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }
}
