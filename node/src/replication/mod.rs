//! The replicated log: the storage of every shard group's Raft log on this
//! node (the multi-raft data plane), in ONE shared, group-committed
//! physical log.
//!
//! A node hosts replicas of many groups, each an openraft 0.9 group
//! (`storage-v2`). One log per group would cost one fsync per group per
//! batch; here every group's records go into one `crate::log::Log` (its
//! segment files, checksums, torn-tail cut and group commit), so one
//! `fdatasync` makes the appends of every group queued meanwhile durable.
//! [`ReplicatedLog`] is the node-wide store; [`GroupLog`] is one group's
//! handle and implements openraft's `RaftLogStorage`, [`GroupLogReader`]
//! its `RaftLogReader`.
//!
//! # Types
//!
//! Generic over the group's openraft type config `C`, with openraft's own
//! `Entry<C>` as entry type; the payload `C::D` is whatever the caller
//! replicates (an ingest batch with its stamped "now"), encoded with
//! postcard (openraft's `serde` feature makes every `RaftTypeConfig`
//! serializable). `C::D: Clone` because a cached entry is handed to
//! openraft as a clone; make it cheap (shared bytes) for large batches.
//!
//! # On disk
//!
//! The log's own format (`docs/durability.md`, "The ingest log"), in the
//! directory the caller gives. Each log record's shard field carries the
//! [`GroupId`]; its payload is one of these (see `record`):
//!
//! ```text
//! 1 entry     kind | postcard(LogId) | postcard(EntryPayload)
//! 2 copy      the bytes of an entry record with kind 2: carried forward
//! 3 truncate  kind | index (u64 LE): entries at and above index are gone
//! 4 state     kind | postcard(GroupMeta { vote, committed, purged, floor })
//! 5 forget    kind: the group left this node
//! ```
//!
//! # Guarantees (openraft's rules, `storage/v2.rs`)
//!
//! - `append` returns once the entries are in memory (readable) and queued;
//!   its callback runs on the log's writer thread after the fsync that
//!   covers them, never before, and with the error if the write or the
//!   fsync failed.
//! - Every write of every group goes through the one log in one order, so
//!   all write IO is serialized: a vote (a state record) is durable only
//!   with everything queued before it. `save_vote`, `truncate`, `purge`,
//!   retention changes and `forget_group` wait for their record's fsync;
//!   `save_committed` does not (an older committed id only re-applies
//!   more).
//! - Memory that pins records on disk is released only once the record
//!   that makes them unneeded is durable, so a file is never deleted while
//!   a crash could still need it.
//!
//! # Recovery
//!
//! [`ReplicatedLog::open`] opens the log (cutting a torn tail, refusing
//! other damage) and replays every record in log order (`recovery`):
//! entries, copies, truncations, state records and forgets rebuild each
//! group's entries (as locations), vote, committed id, purge point and
//! retention floor.
//!
//! # Space: retention and carrying forward
//!
//! A group needs its last state record and every entry above
//! `min(purge point, retention floor)`. The retention floor
//! ([`ReplicatedLog::set_retention_floor`]) is the index of the group's
//! previous, kept-back checkpoint: entries above it stay on disk after
//! openraft purges, so a damaged newest checkpoint can fall back to the
//! previous one plus the longer log ([`ReplicatedLog::read_retained`]).
//! [`ReplicatedLog::reclaim`] deletes the oldest files that no group needs;
//! a group whose needed records in them total at most
//! `carry_forward_bytes_max` is carried forward first (its state record and
//! entries written again at the head, the bytes unchanged), a larger one
//! pins the files and is reported.
//!
//! # Memory
//!
//! Per held entry one slot (log id, position, offset: about 64 bytes). The
//! entries themselves stay in memory after `append` up to
//! `entry_cache_bytes_max` (counted as encoded bytes, oldest evicted first,
//! never one whose record is not yet synced); the rest are read back from
//! disk at their location when a lagging follower needs them, at most
//! `read_bytes_max` per read.
//!
//! # Failure
//!
//! The first failed write or fsync fails the store for good: the callbacks
//! waiting get the error, every later write is refused with
//! [`ReplicatedLogError::Failed`] (openraft stops the group on a storage
//! error), and nothing not durable is ever acknowledged. Reads keep working.
//!
//! Architecture invariant: this module knows nothing of events, shards or
//! the engine; it stores openraft entries of opaque payload per group. One
//! process per directory.

mod group;
mod host;
mod log_store;
mod membership;
mod network;
mod reclaim;
mod record;
mod recovery;
mod state;

#[cfg(test)]
pub(crate) mod group_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use group::{
    start_replica, GroupApply, GroupApplyError, GroupConfig, GroupError, GroupHandle, GroupPayload,
    GroupRaft, GroupSnapshotBuilder, GroupStateMachine, GroupStatus, GroupWriteError, ReplicaId,
    ReplicaNode, ReplicaTypes,
};
pub use host::GroupHost;
pub use log_store::{
    AppendDurable, GroupLog, GroupLogReader, GroupTypes, OpenReport, ReclaimReport, ReplicatedLog,
    ReplicatedLogStats,
};
pub use membership::{
    plan_membership, GroupProgress, MemberProgress, MembershipAction, MembershipError,
    ReconcileStep, CATCH_UP_LAG_ENTRIES_MAX,
};
pub use network::{
    serve, GroupConnection, GroupNetwork, GroupRpc, GroupRpcError, GroupTransport, TransportError,
};
pub use record::RecordError;

use crate::log::{LogConfig, LogError, Position};

/// A Raft group of shards. Stored in the log record's shard field.
pub type GroupId = u32;

pub const ENTRY_CACHE_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
pub const READ_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
pub const CARRY_FORWARD_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;

/// How the replicated log is sized.
#[derive(Debug, Clone)]
pub struct ReplicatedLogConfig {
    /// The shared physical log (segment size, record and group bounds,
    /// queue bounds, fault hook).
    pub log: LogConfig,
    /// Entries kept in memory after `append`, in encoded bytes, across all
    /// groups. Entries not yet synced are never evicted, so memory can
    /// exceed this by the log's `queue_bytes_max`.
    pub entry_cache_bytes_max: usize,
    /// Encoded bytes one read returns at most (`limited_get_log_entries`,
    /// `read_retained`); a read always returns at least one entry.
    pub read_bytes_max: usize,
    /// Per group and per `reclaim`, the most bytes carried forward so the
    /// oldest files can go; a group needing more there pins them.
    pub carry_forward_bytes_max: usize,
}

impl Default for ReplicatedLogConfig {
    fn default() -> Self {
        ReplicatedLogConfig {
            log: LogConfig::default(),
            entry_cache_bytes_max: ENTRY_CACHE_BYTES_MAX_DEFAULT,
            read_bytes_max: READ_BYTES_MAX_DEFAULT,
            carry_forward_bytes_max: CARRY_FORWARD_BYTES_MAX_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicatedLogError {
    #[error("replicated log: {0}")]
    Log(#[from] LogError),
    #[error("replicated log record at position {position} (group {group}) is malformed")]
    BadRecord {
        group: GroupId,
        position: Position,
        #[source]
        source: RecordError,
    },
    #[error("group {group}'s log is inconsistent at position {position}: {reason}")]
    Inconsistent {
        group: GroupId,
        position: Position,
        reason: String,
    },
    #[error("the record at position {position} is not group {group}'s entry {index}: {reason}")]
    WrongRecord {
        group: GroupId,
        index: u64,
        position: Position,
        reason: String,
    },
    #[error("cannot encode group {group}'s entry {index}")]
    Encode {
        group: GroupId,
        index: u64,
        #[source]
        source: RecordError,
    },
    #[error("cannot encode group {group}'s state record")]
    EncodeState {
        group: GroupId,
        #[source]
        source: RecordError,
    },
    #[error("group {group}'s entry {index} is {bytes} bytes, over the log's record_bytes_max ({bytes_max})")]
    EntryTooLarge {
        group: GroupId,
        index: u64,
        bytes: usize,
        bytes_max: usize,
    },
    #[error("group {group}: entry {found} appended where {expected} must come next")]
    NotContiguous {
        group: GroupId,
        expected: u64,
        found: u64,
    },
    #[error("group {group}: cannot truncate at {index}, entries up to {purged} are purged")]
    TruncatePurged {
        group: GroupId,
        index: u64,
        purged: u64,
    },
    #[error(
        "group {group}: entries {first}..={last} are not all retained \
         (the group holds {held_first}..={held_last} for reading back)"
    )]
    NotRetained {
        group: GroupId,
        first: u64,
        last: u64,
        held_first: u64,
        held_last: u64,
    },
    #[error("group {group} already has an open storage handle")]
    GroupBusy { group: GroupId },
    #[error("the replicated log failed earlier and accepts no writes: {cause}")]
    Failed { cause: String },
    #[error("invalid replicated log setting {setting}: {reason}")]
    InvalidConfig {
        setting: &'static str,
        reason: &'static str,
    },
    #[error("the replicated log's {task} task stopped")]
    TaskStopped {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}
