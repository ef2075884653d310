//! The placement Raft group's storage on sled: openraft's log storage
//! (`PlacementLogStore`) and state machine (`PlacementStateMachine`).
//!
//! Architecture invariant: this is the only file of `placement/` that
//! imports sled. Everything above it sees openraft's storage traits.
//!
//! One sled database under `<data-dir>/placement/`, its own (the engine's
//! checkpoints are a different database), with four trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `log` | entry index, u64 big-endian | `Entry<PlacementTypes>` |
//! | `log_meta` | `vote`, `committed`, `last_purged` | `Vote`, `Option<LogId>`, `LogId` |
//! | `machine` | `applied`, `membership`, `state` | `Option<LogId>`, `StoredMembership`, `PlacementState` |
//! | `snapshots` | last included index + 1 (0: none), u64 big-endian | `StoredSnapshot` |
//!
//! Every value is one format-version byte followed by postcard.
//!
//! Durability: sled syncs in the background only every 500 ms, and we turn
//! that timer off, so each write that openraft needs durable is followed by
//! an explicit `flush` (the function here): sled's `flush_async`, then an
//! `fsync` of every file sled changed and of the directories whose entries
//! changed. sled's own flush is not enough: it ends in `sync_file_range`,
//! which persists neither file metadata (a grown size) nor the drive's
//! cache, and sled writes large values as blob files it never syncs. This
//! covers a saved vote, appended entries
//! (before the append callback fires), a truncation, and a snapshot. Applied
//! state is written atomically (one batch) but not flushed: a flush makes
//! the whole database durable, so the next append or snapshot carries it;
//! after a crash the state may be older than what was applied, and openraft
//! re-applies the committed entries from the log. The log is purged only up
//! to a snapshot, whose flush has made the state before it durable.

// openraft's storage traits fix `StorageError` (~224 bytes) as the error
// type; the helpers here return it too rather than box and unbox it at every
// trait method. Errors are rare and end the Raft node anyway.
#![allow(clippy::result_large_err)]

use super::state::{
    DamagedState, Member, NodeId, PlacementResponse, PlacementState, PlacementStateV2,
    PlacementStateV3, Role,
};
use super::{PlacementNode, PlacementTypes};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, LogState, Membership,
    OptionalSend, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// The first byte of every stored value. Bump it when an encoding changes,
/// and teach `decode` the old one.
/// 2: the state gained `draining` and `retired`.
/// 3: the state gained `experiment_weights`, the cluster id and the
/// incarnations (its last fields); commands gained variants at their end,
/// so every other value (log entries included) reads the same in 2 and 3.
/// 4: the state gained `aliases` (its last field), commands `PutAliases` (a
/// variant at their end); 3 and 2 are still read the same way.
const FORMAT_VERSION: u8 = 4;
/// The version before experiment aliases (`PlacementStateV3`), still read.
const FORMAT_VERSION_BEFORE_ALIASES: u8 = 3;
/// The version before experiment weights and cluster ids
/// (`PlacementStateV2`), still read.
const FORMAT_VERSION_BEFORE_IDENTITY: u8 = 2;

const TREE_LOG: &str = "log";
const TREE_LOG_META: &str = "log_meta";
const TREE_MACHINE: &str = "machine";
const TREE_SNAPSHOTS: &str = "snapshots";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_STATE: &[u8] = b"state";

type Error = StorageError<NodeId>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// The store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PlacementStoreError {
    #[error("placement store at {path}: {operation} failed")]
    Sled {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("placement store at {path} is damaged")]
    Damaged {
        path: PathBuf,
        #[source]
        source: Box<StorageError<NodeId>>,
    },
}

/// A snapshot (openraft's sense: the serialized `PlacementState` at a log
/// position) as stored.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, PlacementNode>,
    data: Vec<u8>,
}

/// Opens (or creates) the placement database at `path` and returns the two
/// storage halves for `openraft::Raft::new`, plus a receiver of every
/// applied state.
pub fn open(
    path: &Path,
) -> Result<
    (
        PlacementLogStore,
        PlacementStateMachine,
        watch::Receiver<Arc<PlacementState>>,
    ),
    PlacementStoreError,
> {
    let sled_error = |operation: &'static str| {
        move |source| PlacementStoreError::Sled {
            path: path.to_path_buf(),
            operation,
            source,
        }
    };
    let damaged = |source: Error| PlacementStoreError::Damaged {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let db = sled::Config::new()
        .path(path)
        // Durability comes from our explicit flushes, not sled's timer.
        .flush_every_ms(None)
        .open()
        .map_err(sled_error("open"))?;
    let db = SyncedDb {
        db,
        files: Arc::new(SledFiles::new(path)),
    };
    let tree = |name: &str| db.open_tree(name).map_err(sled_error("open tree"));
    let log_store = PlacementLogStore {
        db: db.clone(),
        log: tree(TREE_LOG)?,
        meta: tree(TREE_LOG_META)?,
    };
    log_store.remove_purged().map_err(damaged)?;

    let machine = tree(TREE_MACHINE)?;
    let subject = || ErrorSubject::StateMachine;
    let applied: Option<Option<LogId<NodeId>>> =
        read_value(&machine, KEY_APPLIED, subject()).map_err(damaged)?;
    let membership: Option<StoredMembership<NodeId, PlacementNode>> =
        read_value(&machine, KEY_MEMBERSHIP, subject()).map_err(damaged)?;
    let state: Option<PlacementState> = machine
        .get(KEY_STATE)
        .map_err(|e| damaged(io_error(subject(), ErrorVerb::Read, &e)))?
        .map(|bytes| decode_state(&bytes))
        .transpose()
        .map_err(|e| damaged(io_error(subject(), ErrorVerb::Read, e)))?;
    let state = state.unwrap_or_default();
    state
        .check()
        .map_err(|damage| damaged(damaged_state(damage)))?;
    let (published, view) = watch::channel(Arc::new(state.clone()));
    let state_machine = PlacementStateMachine {
        db: db.clone(),
        machine,
        snapshots: tree(TREE_SNAPSHOTS)?,
        applied: applied.flatten(),
        membership: membership.unwrap_or_default(),
        state,
        published,
    };
    Ok((log_store, state_machine, view))
}

fn encode<T: Serialize>(value: &T) -> std::result::Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, vec![FORMAT_VERSION])
}

/// Any value but the `PlacementState` (`decode_state`), whose layout
/// alone changed in version 3.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, AnyError> {
    match bytes.split_first() {
        Some((
            &(FORMAT_VERSION | FORMAT_VERSION_BEFORE_ALIASES | FORMAT_VERSION_BEFORE_IDENTITY),
            rest,
        )) => postcard::from_bytes(rest).map_err(|e| AnyError::new(&e)),
        Some((version, _)) => Err(AnyError::error(format!(
            "unknown format version {version} (this build reads {FORMAT_VERSION})"
        ))),
        None => Err(AnyError::error("empty value")),
    }
}

/// A stored or snapshotted `PlacementState`, in the current layout or the
/// one before experiment weights and cluster ids (which it gets none of
/// yet).
fn decode_state(bytes: &[u8]) -> std::result::Result<PlacementState, AnyError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION_BEFORE_IDENTITY, rest)) => postcard::from_bytes(rest)
            .map(|old: PlacementStateV2| PlacementState::from(old))
            .map_err(|e| AnyError::new(&e)),
        Some((&FORMAT_VERSION_BEFORE_ALIASES, rest)) => postcard::from_bytes(rest)
            .map(|old: PlacementStateV3| PlacementState::from(old))
            .map_err(|e| AnyError::new(&e)),
        _ => decode(bytes),
    }
}

fn io_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, source: impl Into<AnyError>) -> Error {
    StorageIOError::new(subject, verb, source).into()
}

fn damaged_state(damage: DamagedState) -> Error {
    io_error(ErrorSubject::StateMachine, ErrorVerb::Read, &damage)
}

fn read_value<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    subject: ErrorSubject<NodeId>,
) -> Result<Option<T>> {
    let Some(bytes) = tree
        .get(key)
        .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))?
    else {
        return Ok(None);
    };
    decode(&bytes)
        .map(Some)
        .map_err(|e| io_error(subject, ErrorVerb::Read, e))
}

fn write_value<T: Serialize>(
    tree: &sled::Tree,
    key: &[u8],
    value: &T,
    subject: ErrorSubject<NodeId>,
) -> Result<()> {
    let bytes = encode(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
    tree.insert(key, bytes)
        .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
    Ok(())
}

async fn flush(db: &SyncedDb, subject: ErrorSubject<NodeId>) -> Result<()> {
    db.flush_async()
        .await
        .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
    let files = Arc::clone(&db.files);
    tokio::task::spawn_blocking(move || files.sync())
        .await
        .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, AnyError::error(e)))?
        .map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
    Ok(())
}

/// The sled database and what makes its flushes durable.
#[derive(Debug, Clone)]
pub struct SyncedDb {
    db: sled::Db,
    files: Arc<SledFiles>,
}

impl std::ops::Deref for SyncedDb {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.db
    }
}

/// Most entries looked at in one directory of the sled database: sled
/// keeps a handful of files and one per blob (placement values are small).
const SLED_DIRECTORY_ENTRIES_MAX: usize = 100_000;

/// A directory's files as last synced: name → (size, modified).
type DirectoryStamps = BTreeMap<std::ffi::OsString, (u64, Option<std::time::SystemTime>)>;

/// `fsync`s what sled wrote, after sled's own flush. A file is synced when
/// its size or modification time changed since it was last synced (sled's
/// main file `db` every time: it is rewritten in place), a directory when
/// its list of entries changed.
#[derive(Debug)]
struct SledFiles {
    path: PathBuf,
    /// Per directory (the database's and `blobs/`): entry name → (size,
    /// modified) at the last sync.
    synced: std::sync::Mutex<BTreeMap<PathBuf, DirectoryStamps>>,
}

impl SledFiles {
    fn new(path: &Path) -> SledFiles {
        SledFiles {
            path: path.to_path_buf(),
            synced: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// One sync at a time: two would race on `synced`.
    fn sync(&self) -> std::io::Result<()> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if synced.is_empty() {
            // sled may just have created the database's directory.
            if let Some(parent) = self.path.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
        for directory in [self.path.clone(), self.path.join("blobs")] {
            if !directory.is_dir() {
                continue;
            }
            let known = synced.entry(directory.clone()).or_default();
            let mut now = BTreeMap::new();
            for entry in std::fs::read_dir(&directory)?.take(SLED_DIRECTORY_ENTRIES_MAX) {
                let entry = entry?;
                let metadata = match entry.metadata() {
                    Ok(metadata) => metadata,
                    // sled removed it meanwhile (an old blob or snapshot).
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                };
                if !metadata.is_file() {
                    continue;
                }
                let stamp = (metadata.len(), metadata.modified().ok());
                let name = entry.file_name();
                let changed = known.get(&name) != Some(&stamp) || name == "db";
                if changed {
                    match std::fs::File::open(entry.path()) {
                        Ok(file) => file.sync_all()?,
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(error) => return Err(error),
                    }
                }
                now.insert(name, stamp);
            }
            let names_changed = !known.keys().eq(now.keys());
            if names_changed {
                std::fs::File::open(&directory)?.sync_all()?;
            }
            *known = now;
        }
        Ok(())
    }
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of_key(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        io_error(
            ErrorSubject::Logs,
            ErrorVerb::Read,
            AnyError::error("log key is not 8 bytes"),
        )
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// openraft's log storage: the vote, the entries, the committed and the last
/// purged log id. Cheap to clone (sled handles); a clone is the log reader.
#[derive(Debug, Clone)]
pub struct PlacementLogStore {
    db: SyncedDb,
    log: sled::Tree,
    meta: sled::Tree,
}

impl PlacementLogStore {
    fn last_purged(&self) -> Result<Option<LogId<NodeId>>> {
        read_value(&self.meta, KEY_LAST_PURGED, ErrorSubject::Logs)
    }

    /// Removes entries at or below the last purged index. `purge` records
    /// the purge point before removing, so a crash can leave some behind.
    fn remove_purged(&self) -> Result<()> {
        let Some(purged) = self.last_purged()? else {
            return Ok(());
        };
        self.remove_range(..=purged.index)
    }

    fn remove_range(&self, range: impl RangeBounds<u64>) -> Result<()> {
        let range = key_range(range);
        let mut batch = sled::Batch::default();
        for key in self.log.range(range).keys() {
            let key = key.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}

fn key_range(range: impl RangeBounds<u64>) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let map = |bound: Bound<&u64>| match bound {
        Bound::Included(index) => Bound::Included(log_key(*index)),
        Bound::Excluded(index) => Bound::Excluded(log_key(*index)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.start_bound()), map(range.end_bound()))
}

impl RaftLogReader<PlacementTypes> for PlacementLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<PlacementTypes>>> {
        let mut entries = Vec::new();
        for item in self.log.range(key_range(range)) {
            let (key, value) =
                item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            let index = index_of_key(&key)?;
            let entry: Entry<PlacementTypes> = decode(&value)
                .map_err(|e| io_error(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
            // Paired with the key written in `append`.
            assert_eq!(
                entry.log_id.index, index,
                "log entry stored under another index"
            );
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<PlacementTypes> for PlacementLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<PlacementTypes>> {
        let last_purged_log_id = self.last_purged()?;
        let last_entry = match self
            .log
            .last()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?
        {
            Some((_, value)) => {
                let entry: Entry<PlacementTypes> =
                    decode(&value).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(entry.log_id)
            }
            None => None,
        };
        // Purging past the last entry leaves the log empty at that point.
        let last_log_id = std::cmp::max(last_entry, last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        write_value(&self.meta, KEY_VOTE, vote, ErrorSubject::Vote)?;
        // A vote must be durable before it is answered.
        flush(&self.db, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        read_value(&self.meta, KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        // Not flushed: a lost update only means re-applying fewer entries
        // after a restart; the leader tells us the commit point again.
        write_value(&self.meta, KEY_COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        let committed: Option<Option<LogId<NodeId>>> =
            read_value(&self.meta, KEY_COMMITTED, ErrorSubject::Store)?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<PlacementTypes>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<PlacementTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = encode(&entry)
                .map_err(|e| io_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e))?;
            batch.insert(&log_key(entry.log_id.index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        // The entries are readable now; they are durable only after the
        // flush, and only then may openraft count them.
        match flush(&self.db, ErrorSubject::Logs).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.remove_range(log_id.index..)?;
        // Conflicting entries must not come back after a crash once newer
        // ones are appended over them.
        flush(&self.db, ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        if self.last_purged()? >= Some(log_id) {
            return Ok(());
        }
        // The purge point first: a crash between the two leaves extra
        // entries, which `open` removes, never a hole.
        write_value(&self.meta, KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)?;
        self.remove_range(..=log_id.index)
    }
}

/// openraft's state machine: the applied `PlacementState`, the last applied
/// log id and membership, and the current snapshot.
#[derive(Debug)]
pub struct PlacementStateMachine {
    db: SyncedDb,
    machine: sled::Tree,
    snapshots: sled::Tree,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, PlacementNode>,
    state: PlacementState,
    published: watch::Sender<Arc<PlacementState>>,
}

/// The members of an openraft membership, with their roles.
pub(super) fn members_of(
    membership: &Membership<NodeId, PlacementNode>,
) -> BTreeMap<NodeId, Member> {
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| {
            let role = if voters.contains(id) {
                Role::Voter
            } else {
                Role::Learner
            };
            let member = Member {
                address: node.address.clone(),
                role,
            };
            (*id, member)
        })
        .collect()
}

impl PlacementStateMachine {
    /// Writes the applied log id, membership and state in one atomic batch.
    fn persist(&self) -> Result<()> {
        let subject = || ErrorSubject::StateMachine;
        let encode_value = |value: Result<Vec<u8>, postcard::Error>| {
            value.map_err(|e| io_error(subject(), ErrorVerb::Write, &e))
        };
        let mut batch = sled::Batch::default();
        batch.insert(KEY_APPLIED, encode_value(encode(&self.applied))?);
        batch.insert(KEY_MEMBERSHIP, encode_value(encode(&self.membership))?);
        batch.insert(KEY_STATE, encode_value(encode(&self.state))?);
        self.machine
            .apply_batch(batch)
            .map_err(|e| io_error(subject(), ErrorVerb::Write, &e))
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.state.clone()));
    }
}

/// Stores a snapshot as the current one and drops older ones. Keys order
/// snapshots by the last index they include, so a builder that finishes
/// after a newer snapshot was installed can never make it current.
async fn store_snapshot(
    db: &SyncedDb,
    snapshots: &sled::Tree,
    snapshot: &StoredSnapshot,
) -> Result<()> {
    let signature = Some(snapshot.meta.signature());
    let write_error = |source: AnyError| {
        io_error(
            ErrorSubject::Snapshot(signature.clone()),
            ErrorVerb::Write,
            source,
        )
    };
    let key = snapshot
        .meta
        .last_log_id
        .map_or(0, |log_id| log_id.index + 1)
        .to_be_bytes();
    let bytes = encode(snapshot).map_err(|e| write_error(AnyError::new(&e)))?;
    snapshots
        .insert(key, bytes)
        .map_err(|e| write_error(AnyError::new(&e)))?;
    for older in snapshots.range(..key).keys() {
        let older = older.map_err(|e| write_error(AnyError::new(&e)))?;
        snapshots
            .remove(older)
            .map_err(|e| write_error(AnyError::new(&e)))?;
    }
    flush(db, ErrorSubject::Snapshot(signature)).await
}

impl RaftStateMachine<PlacementTypes> for PlacementStateMachine {
    type SnapshotBuilder = PlacementSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, PlacementNode>,
    )> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<PlacementResponse>>
    where
        I: IntoIterator<Item = Entry<PlacementTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => PlacementResponse::NoCommand,
                EntryPayload::Normal(command) => self.state.apply(command),
                EntryPayload::Membership(membership) => {
                    self.state.set_members(members_of(&membership));
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    PlacementResponse::NoCommand
                }
            };
            responses.push(response);
        }
        if !responses.is_empty() {
            self.persist()?;
            self.publish();
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PlacementSnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, PlacementNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let read_error = |source: AnyError| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                source,
            )
        };
        let mut state: PlacementState = decode_state(&data).map_err(read_error)?;
        state
            .check()
            .map_err(|damage| read_error(AnyError::new(&damage)))?;
        state.set_members(members_of(meta.last_membership.membership()));
        self.state = state;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.persist()?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        // Also flushes the state written above.
        store_snapshot(&self.db, &self.snapshots, &stored).await?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<PlacementTypes>>> {
        let Some((_, bytes)) = self
            .snapshots
            .last()
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode(&bytes)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Builds a snapshot from a copy of the state taken when it was asked for,
/// so applying goes on while it is written.
#[derive(Debug)]
pub struct PlacementSnapshotBuilder {
    db: SyncedDb,
    snapshots: sled::Tree,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, PlacementNode>,
    state: PlacementState,
}

impl RaftSnapshotBuilder<PlacementTypes> for PlacementSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PlacementTypes>> {
        let subject = || ErrorSubject::Snapshot(None);
        let data = encode(&self.state).map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        // sled's id generator is monotonic across restarts.
        let sequence = self
            .db
            .generate_id()
            .map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        let position = match self.applied {
            Some(log_id) => format!("{}-{}", log_id.leader_id.term, log_id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{position}-{sequence}"),
        };
        let stored = StoredSnapshot { meta, data };
        store_snapshot(&self.db, &self.snapshots, &stored).await?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_stored_before_cluster_ids_is_read() {
        let mut before = PlacementState::default();
        let member = Member {
            address: "127.0.0.1:7001".to_string(),
            role: Role::Voter,
        };
        before.set_members(BTreeMap::from([(1, member)]));
        before.apply(super::super::PlacementCommand::Initialize {
            shards: 12,
            owner: 1,
        });
        let old = PlacementStateV2::of(&before);
        let bytes = postcard::to_extend(&old, vec![FORMAT_VERSION_BEFORE_IDENTITY]).unwrap();
        let state = decode_state(&bytes).unwrap();
        assert_eq!(state, before);
        assert_eq!(state.shard_count(), 12);
        assert_eq!(state.cluster_id(), None);
        let current = encode(&state).unwrap();
        assert_eq!(current[0], FORMAT_VERSION);
        assert_eq!(decode_state(&current).unwrap(), state);
    }

    /// A state stored by format version 3, before experiment aliases,
    /// loads with none: the layout of 3 is the layout of 4 without its last
    /// field (an empty map is one zero byte in postcard).
    #[test]
    fn a_state_stored_before_aliases_loads_with_none() {
        let mut state = PlacementState::default();
        state.apply(super::super::PlacementCommand::Initialize {
            shards: 4,
            owner: 1,
        });
        let current = encode(&state).unwrap();
        assert_eq!(decode_state(&current).unwrap(), state);
        assert_eq!(current.last(), Some(&0), "no aliases: an empty map last");
        let mut before = current[..current.len() - 1].to_vec();
        before[0] = FORMAT_VERSION_BEFORE_ALIASES;
        assert_eq!(decode_state(&before).unwrap(), state);
        assert!(decode::<PlacementState>(&before).is_err());
    }

    #[test]
    fn values_round_trip_and_other_format_versions_are_refused() {
        let vote = Vote::new_committed(3, 1);
        let bytes = encode(&vote).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let decoded: Vote<NodeId> = decode(&bytes).unwrap();
        assert_eq!(decoded, vote);

        let mut future = bytes.clone();
        future[0] = 99;
        let error = decode::<Vote<NodeId>>(&future).unwrap_err();
        assert!(error.to_string().contains("format version 99"), "{error}");
        assert!(decode::<Vote<NodeId>>(&[]).is_err());
        assert!(decode::<Vote<NodeId>>(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A state stored by format version 2, before experiment weights,
    /// loads with none: the layout of 2 is the layout of 3 without its last
    /// field (an empty map is one zero byte in postcard).
    #[test]
    fn a_state_stored_before_experiment_weights_loads_with_none() {
        use super::super::state::PlacementCommand;
        let mut state = PlacementState::default();
        state.set_members(BTreeMap::from([(
            1,
            Member {
                address: "127.0.0.1:7001".into(),
                role: Role::Voter,
            },
        )]));
        state.apply(PlacementCommand::Initialize {
            shards: 8,
            owner: 1,
        });
        let registry = crate::project::ProjectRegistry::default();
        let (config, _) = registry.create("shop", &Default::default()).unwrap();
        state.apply(PlacementCommand::PutProject {
            config: (*config).clone(),
        });
        let mut before = encode(&PlacementStateV2::of(&state)).unwrap();
        before[0] = FORMAT_VERSION_BEFORE_IDENTITY;
        let loaded = decode_state(&before).expect("an old state loads");
        assert_eq!(loaded, state);
        assert!(loaded.project("shop").is_some());

        state.apply(PlacementCommand::SetExperimentWeights {
            project: "shop".into(),
            experiment: "checkout".into(),
            weights: Some([("a".to_string(), 2.0), ("b".to_string(), 1.0)].into()),
        });
        let with_weights = decode_state(&encode(&state).unwrap()).unwrap();
        assert_eq!(with_weights, state);
        assert_eq!(
            with_weights
                .experiment_weights("shop", "checkout")
                .map(|weights| weights["a"]),
            Some(2.0)
        );
    }

    #[test]
    fn log_keys_sort_by_index() {
        let keys: Vec<[u8; 8]> = [0, 1, 255, 256, u64::MAX].map(log_key).to_vec();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(index_of_key(&log_key(256)).unwrap(), 256);
        assert!(index_of_key(b"short").is_err());
    }
}
