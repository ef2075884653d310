//! One replica of a shard group: an openraft `Raft` whose log is the
//! group's [`GroupLog`] in the node's shared [`ReplicatedLog`], whose state
//! machine hands every committed entry to a [`GroupApply`], and whose
//! snapshots are that trait's bytes in a file per group.
//!
//! What a payload means is the [`GroupApply`]'s business (the engine's,
//! later: an ingest batch with its stamped "now", a project change); this
//! module moves opaque bytes. Blank and membership entries never reach the
//! trait.
//!
//! Recovery of a replica: the state machine is rebuilt from the group's
//! newest snapshot file ([`GroupApply::install`]), then openraft applies
//! the committed entries the log holds above it. The log is purged only
//! after a snapshot covering the purged entries is on disk (openraft
//! purges after `build_snapshot` returns, and that returns after the
//! file's fsync).

// openraft's storage traits fix `StorageError` (~224 bytes) as the error
// type of the trait methods.
#![allow(clippy::result_large_err)]

use super::network::{GroupNetwork, GroupTransport};
use super::{GroupId, GroupLog, ReplicatedLog};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
// `declare_raft_types!` names `Cursor` unqualified, so it must be in scope.
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// A replica's node id: the node's placement id.
pub type ReplicaId = u64;

/// A replica's address as openraft stores it in the group's membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    /// The node's HTTP address, `host:port`.
    pub address: String,
}

impl fmt::Display for ReplicaNode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.address)
    }
}

/// The bytes of one entry. Shared, because the replicated log hands
/// openraft clones of cached entries and a batch can be large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPayload(Arc<[u8]>);

impl GroupPayload {
    pub fn new(bytes: Vec<u8>) -> GroupPayload {
        GroupPayload(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for GroupPayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for GroupPayload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(GroupPayload::new)
    }
}

openraft::declare_raft_types!(
    /// The types of every shard group's Raft.
    pub ReplicaTypes:
        D = GroupPayload,
        R = (),
        NodeId = ReplicaId,
        Node = ReplicaNode,
        Entry = openraft::Entry<ReplicaTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running replica of one group.
pub type GroupRaft = openraft::Raft<ReplicaTypes>;

/// What a group's replicated entries are applied to: the narrow door the
/// engine will implement (one per group and replica). Calls come in log
/// order from the group's state machine task, never concurrently.
///
/// An error stops the replica (openraft treats a state machine error as
/// fatal), as a failed actor stops the node: state that may be half
/// applied is never served.
pub trait GroupApply: Send + Sync + 'static {
    /// Applies the committed entry `index` (indexes only grow; blank and
    /// membership entries are skipped, so they need not be consecutive).
    fn apply(&mut self, index: u64, payload: &[u8]) -> Result<(), GroupApplyError>;

    /// The state after the last applied entry, as bytes [`Self::install`]
    /// reads back (on this replica after a restart, or on another one).
    fn snapshot(&mut self) -> Result<Vec<u8>, GroupApplyError>;

    /// Replaces the whole state with a snapshot's.
    fn install(&mut self, snapshot: &[u8]) -> Result<(), GroupApplyError>;
}

/// Why a [`GroupApply`] call failed.
#[derive(Debug, thiserror::Error)]
#[error("group state {step} failed: {reason}")]
pub struct GroupApplyError {
    /// `apply`, `snapshot` or `install`.
    pub step: &'static str,
    pub reason: String,
}

/// Timing and log-compaction settings of the shard groups' Raft.
///
/// Faster than placement's: a group's leader is where its ingest goes, so
/// failover must finish within a few seconds (an election timeout plus a
/// round of votes), while heartbeats stay well below the timeout so a busy
/// node keeps its leaderships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub heartbeat_interval_ms: u64,
    /// A follower that hears nothing from its leader for a random time
    /// between these bounds stands for election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot once this many entries were applied since the last.
    pub snapshot_entries_since_last: u64,
    /// Entries kept in the log behind a snapshot, so a follower briefly
    /// away catches up from the log instead of a snapshot.
    pub entries_kept_behind_snapshot: u64,
    /// Purge the log in steps of at least this many entries.
    pub purge_batch_entries: u64,
    /// How long a follower waits for the next piece of a snapshot, and how
    /// long sending one piece may take.
    pub install_snapshot_timeout_ms: u64,
    /// The longest one append or vote exchange may take.
    pub rpc_timeout_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1_500,
            snapshot_entries_since_last: 10_000,
            entries_kept_behind_snapshot: 1_000,
            purge_batch_entries: 256,
            install_snapshot_timeout_ms: 5_000,
            rpc_timeout_ms: 1_000,
        }
    }
}

impl GroupConfig {
    /// The validated openraft configuration of `group`.
    pub fn to_openraft(&self, group: GroupId) -> Result<Arc<openraft::Config>, GroupError> {
        if self.heartbeat_interval_ms >= self.election_timeout_min_ms {
            return Err(GroupError::Config {
                reason: format!(
                    "heartbeat_interval_ms ({}) must be below election_timeout_min_ms ({})",
                    self.heartbeat_interval_ms, self.election_timeout_min_ms
                ),
            });
        }
        let config = openraft::Config {
            cluster_name: format!("sessiondb-group-{group}"),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                self.snapshot_entries_since_last,
            ),
            max_in_snapshot_log_to_keep: self.entries_kept_behind_snapshot,
            purge_batch_size: self.purge_batch_entries,
            ..openraft::Config::default()
        };
        let config = config.validate().map_err(|error| GroupError::Config {
            reason: error.to_string(),
        })?;
        Ok(Arc::new(config))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("invalid group Raft configuration: {reason}")]
    Config { reason: String },
    #[error(transparent)]
    Log(#[from] super::ReplicatedLogError),
    #[error("group {group}'s snapshot file {path}: {reason}")]
    Snapshot {
        group: GroupId,
        path: PathBuf,
        reason: String,
    },
    #[error("the groups' snapshot directory {path}: {reason}")]
    Snapshots { path: PathBuf, reason: String },
    #[error("group {group}'s state could not take its snapshot back")]
    Install {
        group: GroupId,
        #[source]
        source: GroupApplyError,
    },
    #[error("group {group}'s Raft could not start: {reason}")]
    Start { group: GroupId, reason: String },
    #[error("group {group} could not be initialized: {reason}")]
    Initialize { group: GroupId, reason: String },
    #[error("group {group}'s replica did not shut down cleanly: {reason}")]
    Shutdown { group: GroupId, reason: String },
}

/// Opens `group`'s replica on this node and starts its Raft: the group's
/// log in `log`, its snapshots under `snapshot_dir`, its state in `apply`
/// (rebuilt here from the newest snapshot, if any), its peers through
/// `transport`. A new group stays uninitialized until one replica calls
/// `initialize` with the replica set, or a leader adds this node.
pub async fn start_replica<A, T>(
    id: ReplicaId,
    group: GroupId,
    log: &ReplicatedLog<ReplicaTypes>,
    snapshot_dir: &Path,
    apply: A,
    transport: T,
    config: &GroupConfig,
) -> Result<GroupRaft, GroupError>
where
    A: GroupApply,
    T: GroupTransport,
{
    let raft_config = config.to_openraft(group)?;
    let log_store: GroupLog<ReplicaTypes> = log.group(group)?;
    let state_machine = GroupStateMachine::open(group, snapshot_dir, apply).await?;
    let network = GroupNetwork::new(transport, group, config);
    openraft::Raft::new(id, raft_config, network, log_store, state_machine)
        .await
        .map_err(|fatal| GroupError::Start {
            group,
            reason: fatal.to_string(),
        })
}

/// openraft's state machine of one group: what was applied, the group's
/// membership, and the [`GroupApply`] holding the state.
pub struct GroupStateMachine<A: GroupApply> {
    group: GroupId,
    apply: A,
    applied: Option<LogId<ReplicaId>>,
    membership: StoredMembership<ReplicaId, ReplicaNode>,
    snapshots: SnapshotFile,
}

impl<A: GroupApply> fmt::Debug for GroupStateMachine<A> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("GroupStateMachine")
            .field("group", &self.group)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl<A: GroupApply> GroupStateMachine<A> {
    /// The state of the newest snapshot in `snapshot_dir`, or an empty one.
    pub async fn open(
        group: GroupId,
        snapshot_dir: &Path,
        mut apply: A,
    ) -> Result<GroupStateMachine<A>, GroupError> {
        let snapshots = SnapshotFile::new(group, snapshot_dir);
        let mut machine_applied = None;
        let mut membership = StoredMembership::default();
        if let Some(stored) = snapshots.read().await? {
            apply
                .install(&stored.data)
                .map_err(|source| GroupError::Install { group, source })?;
            machine_applied = stored.meta.last_log_id;
            membership = stored.meta.last_membership;
        }
        Ok(GroupStateMachine {
            group,
            apply,
            applied: machine_applied,
            membership,
            snapshots,
        })
    }
}

fn storage_error(
    subject: ErrorSubject<ReplicaId>,
    verb: ErrorVerb,
    error: &(impl std::error::Error + 'static),
) -> StorageError<ReplicaId> {
    StorageIOError::new(subject, verb, AnyError::new(error)).into()
}

impl<A: GroupApply> RaftStateMachine<ReplicaTypes> for GroupStateMachine<A> {
    type SnapshotBuilder = GroupSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<ReplicaId>>,
            StoredMembership<ReplicaId, ReplicaNode>,
        ),
        StorageError<ReplicaId>,
    > {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<ReplicaId>>
    where
        I: IntoIterator<Item = Entry<ReplicaTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(payload) => {
                    self.apply
                        .apply(entry.log_id.index, payload.bytes())
                        .map_err(|error| {
                            storage_error(
                                ErrorSubject::Apply(entry.log_id),
                                ErrorVerb::Write,
                                &error,
                            )
                        })?;
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            self.applied = Some(entry.log_id);
            responses.push(());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> GroupSnapshotBuilder {
        // Taken here, between two applies, so the bytes match `applied`.
        let data = self.apply.snapshot();
        GroupSnapshotBuilder {
            data,
            applied: self.applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<ReplicaId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<ReplicaId, ReplicaNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<ReplicaId>> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        self.apply
            .install(&stored.data)
            .map_err(|error| storage_error(subject(), ErrorVerb::Read, &error))?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        // On disk before openraft purges the log it replaces.
        self.snapshots
            .write(stored)
            .await
            .map(drop)
            .map_err(|error| storage_error(subject(), ErrorVerb::Write, &error))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<ReplicaTypes>>, StorageError<ReplicaId>> {
        let stored = self.snapshots.read().await.map_err(|error| {
            storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &error)
        })?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Writes a snapshot taken between two applies.
pub struct GroupSnapshotBuilder {
    data: Result<Vec<u8>, GroupApplyError>,
    applied: Option<LogId<ReplicaId>>,
    membership: StoredMembership<ReplicaId, ReplicaNode>,
    snapshots: SnapshotFile,
}

/// Without the data: a snapshot can be large.
impl fmt::Debug for GroupSnapshotBuilder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("GroupSnapshotBuilder")
            .field("applied", &self.applied)
            .field("bytes", &self.data.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl RaftSnapshotBuilder<ReplicaTypes> for GroupSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<ReplicaTypes>, StorageError<ReplicaId>> {
        let subject = || ErrorSubject::Snapshot(None);
        // Taken, not copied: openraft builds once per builder.
        let data = match &mut self.data {
            Ok(data) => std::mem::take(data),
            Err(error) => {
                return Err(storage_error(subject(), ErrorVerb::Read, error));
            }
        };
        let position = match self.applied {
            Some(log_id) => format!("{}-{}", log_id.leader_id.term, log_id.index),
            None => "empty".to_string(),
        };
        // Unique per build: two builds at one position may differ in
        // membership-free details, and a receiver tells transfers apart by id.
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{position}-{:016x}", rand::random::<u64>()),
        };
        let stored = self
            .snapshots
            .write(StoredSnapshot { meta, data })
            .await
            .map_err(|error| storage_error(subject(), ErrorVerb::Write, &error))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

/// A snapshot as stored: openraft's meta and the [`GroupApply`]'s bytes.
#[derive(Debug, Clone)]
pub(super) struct StoredSnapshot {
    pub meta: SnapshotMeta<ReplicaId, ReplicaNode>,
    pub data: Vec<u8>,
}

const SNAPSHOT_FORMAT_VERSION: u8 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 1 + 4;
const SNAPSHOT_CHECKSUM_BYTES: usize = 4;

/// The group's newest snapshot, one file `group-<id>.snapshot`:
///
/// ```text
/// version (1) | meta length (u32 LE) | meta (JSON) | data | crc32 (u32 LE)
/// ```
///
/// The meta is JSON because openraft's types skip absent fields, which a
/// non-self-describing format cannot read back. Written to a temporary
/// file, fsynced, renamed over the old one, directory fsynced; a snapshot
/// older than the one on disk is never written over it (a builder that
/// finishes after a newer snapshot was installed).
#[derive(Debug, Clone)]
pub(super) struct SnapshotFile {
    group: GroupId,
    path: PathBuf,
    /// One write at a time, so the "never older" check holds.
    writing: Arc<Mutex<()>>,
}

impl SnapshotFile {
    pub fn new(group: GroupId, dir: &Path) -> SnapshotFile {
        SnapshotFile {
            group,
            path: dir.join(format!("group-{group}.snapshot")),
            writing: Arc::new(Mutex::new(())),
        }
    }

    fn error(&self, reason: impl fmt::Display) -> GroupError {
        GroupError::Snapshot {
            group: self.group,
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    pub async fn read(&self) -> Result<Option<StoredSnapshot>, GroupError> {
        let file = self.clone();
        tokio::task::spawn_blocking(move || file.read_blocking())
            .await
            .map_err(|error| self.error(error))?
    }

    /// Writes `snapshot` (unless a newer one is on disk) and hands it back.
    pub async fn write(&self, snapshot: StoredSnapshot) -> Result<StoredSnapshot, GroupError> {
        let file = self.clone();
        tokio::task::spawn_blocking(move || file.write_blocking(&snapshot).map(|()| snapshot))
            .await
            .map_err(|error| self.error(error))?
    }

    /// Removes the group's snapshot file (the group left this node); a
    /// missing file is not an error.
    pub fn remove(&self) -> Result<(), GroupError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                crate::durable_file::sync_parent(&self.path).map_err(|error| self.error(error))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(self.error(error)),
        }
    }

    fn read_blocking(&self) -> Result<Option<StoredSnapshot>, GroupError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        decode_snapshot(&bytes)
            .map(Some)
            .map_err(|reason| self.error(reason))
    }

    fn write_blocking(&self, snapshot: &StoredSnapshot) -> Result<(), GroupError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = self.read_blocking()? {
            if current.meta.last_log_id > snapshot.meta.last_log_id {
                return Ok(());
            }
        }
        let bytes = encode_snapshot(snapshot).map_err(|error| self.error(error))?;
        let dir = self
            .path
            .parent()
            .ok_or_else(|| self.error("no directory"))?;
        std::fs::create_dir_all(dir).map_err(|error| self.error(error))?;
        crate::durable_file::replace_whole(&self.path, &bytes).map_err(|error| self.error(error))
    }
}

fn encode_snapshot(snapshot: &StoredSnapshot) -> Result<Vec<u8>, serde_json::Error> {
    let meta = serde_json::to_vec(&snapshot.meta)?;
    let mut bytes = Vec::with_capacity(
        SNAPSHOT_HEADER_BYTES + meta.len() + snapshot.data.len() + SNAPSHOT_CHECKSUM_BYTES,
    );
    bytes.push(SNAPSHOT_FORMAT_VERSION);
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&snapshot.data);
    let checksum = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    Ok(bytes)
}

fn decode_snapshot(bytes: &[u8]) -> Result<StoredSnapshot, String> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES + SNAPSHOT_CHECKSUM_BYTES {
        return Err(format!("{} bytes is too short", bytes.len()));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - SNAPSHOT_CHECKSUM_BYTES);
    let checksum = u32::from_le_bytes(checksum.try_into().expect("four bytes"));
    if crc32fast::hash(body) != checksum {
        return Err("checksum mismatch".to_string());
    }
    if body[0] != SNAPSHOT_FORMAT_VERSION {
        return Err(format!("unknown format version {}", body[0]));
    }
    let meta_bytes = u32::from_le_bytes(body[1..5].try_into().expect("four bytes")) as usize;
    let rest = &body[SNAPSHOT_HEADER_BYTES..];
    if meta_bytes > rest.len() {
        return Err(format!("meta length {meta_bytes} runs past the end"));
    }
    let (meta, data) = rest.split_at(meta_bytes);
    let meta = serde_json::from_slice(meta).map_err(|error| error.to_string())?;
    Ok(StoredSnapshot {
        meta,
        data: data.to_vec(),
    })
}

/// What the rest of the node may do with a running replica; no openraft
/// type crosses it (as `PlacementHandle` for placement). Cheap to clone.
#[derive(Clone)]
pub struct GroupHandle {
    group: GroupId,
    raft: GroupRaft,
}

impl fmt::Debug for GroupHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("GroupHandle")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum GroupWriteError {
    /// Only the leader writes; the entry was not committed (a deposed
    /// leader's entry is cut from its log). Safe to send to the leader.
    #[error("group {group}: this replica is not the leader (leader: {})", leader_address.as_deref().unwrap_or("unknown"))]
    NotLeader {
        group: GroupId,
        leader: Option<ReplicaId>,
        leader_address: Option<String>,
    },
    /// The replica stopped (storage failure or shutdown).
    #[error("group {group}'s replica stopped: {reason}")]
    Stopped { group: GroupId, reason: String },
}

/// What a replica knows of its group, for routing and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub replica: ReplicaId,
    pub is_leader: bool,
    /// The Raft term: the epoch of the group's leadership.
    pub term: u64,
    pub leader: Option<ReplicaId>,
    pub last_applied: Option<u64>,
    pub voters: Vec<ReplicaId>,
}

impl GroupHandle {
    pub fn new(group: GroupId, raft: GroupRaft) -> GroupHandle {
        GroupHandle { group, raft }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Writes `payload` and answers its log index once it is committed (on
    /// disk on a majority of the replica set) and applied here.
    pub async fn write(&self, payload: Vec<u8>) -> Result<u64, GroupWriteError> {
        match self.raft.client_write(GroupPayload::new(payload)).await {
            Ok(response) => Ok(response.log_id.index),
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(forward),
            )) => Err(GroupWriteError::NotLeader {
                group: self.group,
                leader: forward.leader_id,
                leader_address: forward.leader_node.map(|node| node.address),
            }),
            Err(error) => Err(GroupWriteError::Stopped {
                group: self.group,
                reason: error.to_string(),
            }),
        }
    }

    /// Makes a new group with `members` as its voters; called on one of
    /// them, once.
    pub async fn initialize(
        &self,
        members: std::collections::BTreeMap<ReplicaId, ReplicaNode>,
    ) -> Result<(), GroupError> {
        self.raft
            .initialize(members)
            .await
            .map_err(|error| GroupError::Initialize {
                group: self.group,
                reason: error.to_string(),
            })
    }

    /// Serves a peer's request for this replica (`super::network::serve`).
    pub async fn serve(
        &self,
        rpc: super::network::GroupRpc,
        body: &[u8],
    ) -> Result<Vec<u8>, super::network::GroupRpcError> {
        super::network::serve(&self.raft, rpc, body).await
    }

    pub fn status(&self) -> GroupStatus {
        let metrics = self.raft.metrics().borrow().clone();
        GroupStatus {
            group: self.group,
            replica: metrics.id,
            is_leader: metrics.state == openraft::ServerState::Leader,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_applied: metrics.last_applied.map(|log_id| log_id.index),
            voters: metrics.membership_config.membership().voter_ids().collect(),
        }
    }

    /// Stops the replica; its log handle closes.
    pub async fn shutdown(&self) -> Result<(), GroupError> {
        self.raft
            .shutdown()
            .await
            .map_err(|error| GroupError::Shutdown {
                group: self.group,
                reason: error.to_string(),
            })
    }

    /// The openraft node, for this module's tests and metrics waits.
    pub fn raft(&self) -> &GroupRaft {
        &self.raft
    }
}
