//! Tests of the replicated log: openraft's storage suite (fresh stores, and
//! every case as another group of one shared store, reopened at the end),
//! crashes and torn tails, disk failures, retention, carrying forward,
//! the cache bound and bounded reads. The model-based property test is in
//! `model_tests`.

use super::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, LogState, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

openraft::declare_raft_types!(
    /// A group whose entries carry bytes, as the shard groups' will.
    pub TestTypes:
        D = Vec<u8>,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TestTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub(super) struct TemporaryDirectory {
    pub path: PathBuf,
}

impl TemporaryDirectory {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "sessiondb-replication-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TemporaryDirectory { path }
    }
}

impl Drop for TemporaryDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Small files and batches, so a few dozen entries rotate files and split
/// appends into several log batches.
pub(super) fn small_config() -> ReplicatedLogConfig {
    ReplicatedLogConfig {
        log: LogConfig {
            segment_bytes_max: 2048,
            record_bytes_max: 512,
            group_records_max: 8,
            group_bytes_max: 4096,
            queue_records_max: 64,
            queue_bytes_max: 64 * 1024,
            ..LogConfig::default()
        },
        entry_cache_bytes_max: 1024,
        read_bytes_max: 1024 * 1024,
        carry_forward_bytes_max: 1024 * 1024,
    }
}

pub(super) fn open(dir: &Path, config: ReplicatedLogConfig) -> ReplicatedLog<TestTypes> {
    match ReplicatedLog::open(dir, config) {
        Ok((log, _)) => log,
        Err(error) => panic!("open failed: {error}"),
    }
}

pub(super) fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// Entry `index` of `term`, with `payload_len` bytes that depend on both
/// (0 bytes: a blank entry, as a new leader appends).
pub(super) fn entry(term: u64, index: u64, payload_len: usize) -> Entry<TestTypes> {
    let payload = if payload_len == 0 {
        EntryPayload::Blank
    } else {
        let bytes = (0..payload_len)
            .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8)
            .collect();
        EntryPayload::Normal(bytes)
    };
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

pub(super) fn entries(
    term: u64,
    indexes: std::ops::RangeInclusive<u64>,
    payload_len: usize,
) -> Vec<Entry<TestTypes>> {
    indexes
        .map(|index| entry(term, index, payload_len))
        .collect()
}

/// Entries compared by log id and payload (`Entry` has no `PartialEq`).
pub(super) fn summary(entries: &[Entry<TestTypes>]) -> Vec<(LogId<u64>, Option<Vec<u8>>)> {
    entries
        .iter()
        .map(|entry| {
            let payload = match &entry.payload {
                EntryPayload::Normal(bytes) => Some(bytes.clone()),
                _ => None,
            };
            (entry.log_id, payload)
        })
        .collect()
}

async fn served(store: &mut GroupLog<TestTypes>) -> Vec<Entry<TestTypes>> {
    store.try_get_log_entries(..).await.expect("read")
}

/// A state machine in memory, enough for the suite: the applied payloads,
/// the last applied log id and membership, and the current snapshot.
#[derive(Debug, Default)]
pub(super) struct MemoryStateMachine {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    payloads: Vec<Vec<u8>>,
    snapshot: Arc<Mutex<Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>>>,
}

#[derive(Debug)]
pub(super) struct MemorySnapshotBuilder {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    payloads: Vec<Vec<u8>>,
    snapshot: Arc<Mutex<Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>>>,
}

impl RaftSnapshotBuilder<TestTypes> for MemorySnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TestTypes>, StorageError<u64>> {
        static NEXT_SNAPSHOT: AtomicU64 = AtomicU64::new(0);
        let data = postcard::to_stdvec(&self.payloads).expect("payloads encode");
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("snapshot-{}", NEXT_SNAPSHOT.fetch_add(1, Ordering::Relaxed)),
        };
        *self.snapshot.lock().expect("not poisoned") = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TestTypes> for MemoryStateMachine {
    type SnapshotBuilder = MemorySnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TestTypes>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(bytes) => self.payloads.push(bytes),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            responses.push(());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MemorySnapshotBuilder {
            applied: self.applied,
            membership: self.membership.clone(),
            payloads: self.payloads.clone(),
            snapshot: Arc::clone(&self.snapshot),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        self.payloads = postcard::from_bytes(&data).expect("a snapshot this test made");
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *self.snapshot.lock().expect("not poisoned") = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TestTypes>>, StorageError<u64>> {
        let current = self.snapshot.lock().expect("not poisoned").clone();
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Every suite case on a store of its own.
struct FreshStores;

impl StoreBuilder<TestTypes, GroupLog<TestTypes>, MemoryStateMachine, TemporaryDirectory>
    for FreshStores
{
    async fn build(
        &self,
    ) -> Result<(TemporaryDirectory, GroupLog<TestTypes>, MemoryStateMachine), StorageError<u64>>
    {
        let directory = TemporaryDirectory::new("suite");
        let log = open(&directory.path, small_config());
        let store = log.group(7).expect("a fresh group");
        Ok((directory, store, MemoryStateMachine::default()))
    }
}

#[test]
fn a_fresh_store_passes_the_openraft_storage_suite() {
    let result = Suite::test_all(FreshStores);
    assert!(result.is_ok(), "storage suite failed: {result:?}");
}

/// Every suite case as a new group of ONE shared store, so the cases'
/// records interleave in one log as the groups of a node do.
struct GroupsOfOneStore {
    log: ReplicatedLog<TestTypes>,
    next_group: AtomicU32,
}

impl StoreBuilder<TestTypes, GroupLog<TestTypes>, MemoryStateMachine> for GroupsOfOneStore {
    async fn build(
        &self,
    ) -> Result<((), GroupLog<TestTypes>, MemoryStateMachine), StorageError<u64>> {
        let group = self.next_group.fetch_add(1, Ordering::Relaxed);
        let store = self.log.group(group).expect("a new group");
        Ok(((), store, MemoryStateMachine::default()))
    }
}

/// What openraft can see of a group.
type GroupView = (
    LogState<TestTypes>,
    Option<Vote<u64>>,
    Option<LogId<u64>>,
    Vec<(LogId<u64>, Option<Vec<u8>>)>,
);

async fn view(log: &ReplicatedLog<TestTypes>, group: GroupId) -> GroupView {
    let mut store = log.group(group).expect("no handle is open");
    (
        store.get_log_state().await.expect("log state"),
        store.read_vote().await.expect("vote"),
        store.read_committed().await.expect("committed"),
        summary(&served(&mut store).await),
    )
}

#[test]
fn every_group_of_a_shared_store_passes_the_suite_and_is_the_same_after_reopening() {
    let directory = TemporaryDirectory::new("suite-reopen");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let builder = GroupsOfOneStore {
        log: open(&directory.path, small_config()),
        next_group: AtomicU32::new(0),
    };
    // The suite's cases, each on its own group, on one store we keep.
    let log = builder.log.clone();
    let result = Suite::test_store(&builder);
    assert!(result.is_ok(), "storage suite failed: {result:?}");
    let groups = log.group_ids();
    assert!(
        groups.len() > 30,
        "one group per case, got {}",
        groups.len()
    );
    let before: Vec<GroupView> = runtime.block_on(async {
        let mut views = Vec::new();
        for group in &groups {
            views.push(view(&log, *group).await);
        }
        views
    });
    drop(builder);
    drop(log);

    let (log, report) =
        ReplicatedLog::<TestTypes>::open(&directory.path, small_config()).expect("reopen");
    assert_eq!(report.log.truncated_bytes, 0);
    // Cases that only read wrote nothing, so their groups are not on disk.
    let recovered = log.group_ids();
    assert!(recovered.len() > 20, "got {recovered:?}");
    assert!(recovered.iter().all(|group| groups.contains(group)));
    let after: Vec<GroupView> = runtime.block_on(async {
        let mut views = Vec::new();
        for group in &groups {
            views.push(view(&log, *group).await);
        }
        views
    });
    assert_eq!(after, before);
}
