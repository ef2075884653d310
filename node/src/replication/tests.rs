//! Tests of the replicated log: openraft's storage suite (fresh stores, and
//! every case as another group of one shared store, reopened at the end),
//! crashes and torn tails, disk failures, retention, carrying forward,
//! the cache bound and bounded reads. The model-based property test is in
//! `model_tests`.

use super::*;
pub(super) use crate::log::tests::TempDir as TemporaryDirectory;
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

/// The current snapshot, shared by a state machine and its builders.
type CurrentSnapshot = Arc<Mutex<Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>>>;

/// A state machine in memory, enough for the suite: the applied payloads,
/// the last applied log id and membership, and the current snapshot.
#[derive(Debug, Default)]
pub(super) struct MemoryStateMachine {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    payloads: Vec<Vec<u8>>,
    snapshot: CurrentSnapshot,
}

#[derive(Debug)]
pub(super) struct MemorySnapshotBuilder {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    payloads: Vec<Vec<u8>>,
    snapshot: CurrentSnapshot,
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
        let log = open(directory.path(), small_config());
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
        log: open(directory.path(), small_config()),
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
        ReplicatedLog::<TestTypes>::open(directory.path(), small_config()).expect("reopen");
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

/// Copies the log files of `from` into a fresh directory: what a crash at
/// this instant would leave (the writer may be in the middle of a write).
fn crash_image(from: &Path, label: &str) -> TemporaryDirectory {
    let image = TemporaryDirectory::new(label);
    std::fs::create_dir_all(image.path()).expect("create image");
    for file in std::fs::read_dir(from).expect("list") {
        let file = file.expect("entry");
        std::fs::copy(file.path(), image.path().join(file.file_name())).expect("copy");
    }
    image
}

fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|file| file.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one log file");
    files[0].clone()
}

type SmallView = (
    LogState<TestTypes>,
    Option<Vote<u64>>,
    Vec<(LogId<u64>, Option<Vec<u8>>)>,
);

async fn group_view(store: &mut GroupLog<TestTypes>) -> SmallView {
    let state = store.get_log_state().await.expect("state");
    let vote = store.read_vote().await.expect("vote");
    (state, vote, summary(&served(store).await))
}

fn indexes(entries: &[Entry<TestTypes>]) -> Vec<u64> {
    entries.iter().map(|entry| entry.log_id.index).collect()
}

#[tokio::test]
async fn an_append_is_readable_at_once_and_a_crash_before_its_callback_keeps_a_prefix() {
    let directory = TemporaryDirectory::new("crash-append");
    let plan = Arc::new(crate::log::FaultPlan::new());
    let mut config = small_config();
    config.log.segment_bytes_max = 1024 * 1024;
    config.log.fault = Some(Arc::clone(&plan));
    let log = open(directory.path(), config);
    let mut store = log.group(1).expect("group");
    store
        .blocking_append(entries(1, 1..=5, 40))
        .await
        .expect("append");

    // A slow disk keeps the next append between its return and its fsync.
    plan.delay_syncs_ms(100);
    let pending = store
        .append_entries(entries(1, 6..=8, 40))
        .await
        .expect("queued");
    assert_eq!(
        indexes(&served(&mut store).await),
        (1..=8).collect::<Vec<_>>()
    );
    let image = crash_image(directory.path(), "crash-append-image");
    pending.durable().await.expect("synced");
    plan.delay_syncs_ms(0);

    // Whatever the crash caught of the pending append, the group is a
    // prefix of its history: never a hole, never a foreign byte.
    let crashed = open(image.path(), small_config());
    let mut crashed_store = crashed.group(1).expect("group");
    let recovered = indexes(&served(&mut crashed_store).await);
    assert!(
        (5..=8).any(|last| recovered == (1..=last).collect::<Vec<_>>()),
        "recovered {recovered:?}"
    );
    drop((store, log));
    let log = open(directory.path(), small_config());
    let mut store = log.group(1).expect("group");
    assert_eq!(
        summary(&served(&mut store).await),
        summary(&entries(1, 1..=8, 40))
    );
}

#[tokio::test]
async fn a_torn_tail_at_any_byte_recovers_the_state_after_the_last_whole_record() {
    let directory = TemporaryDirectory::new("torn");
    let mut config = small_config();
    config.log.segment_bytes_max = 1024 * 1024;
    let log = open(directory.path(), config.clone());
    let mut store = log.group(3).expect("group");
    let file = only_file(directory.path());
    // After each durable operation: the file length and what the group is.
    let mut history = vec![(
        std::fs::metadata(&file).expect("stat").len(),
        group_view(&mut store).await,
    )];
    let mut record = |length: u64, view| history.push((length, view));
    for index in 1..=6 {
        store
            .blocking_append(entries(1, index..=index, 30))
            .await
            .expect("append");
        record(
            std::fs::metadata(&file).expect("stat").len(),
            group_view(&mut store).await,
        );
    }
    store.save_vote(&Vote::new(2, 1)).await.expect("vote");
    record(
        std::fs::metadata(&file).expect("stat").len(),
        group_view(&mut store).await,
    );
    store.truncate(log_id(1, 5)).await.expect("truncate");
    record(
        std::fs::metadata(&file).expect("stat").len(),
        group_view(&mut store).await,
    );
    store
        .blocking_append(entries(2, 5..=5, 30))
        .await
        .expect("append");
    record(
        std::fs::metadata(&file).expect("stat").len(),
        group_view(&mut store).await,
    );
    store.purge(log_id(1, 2)).await.expect("purge");
    record(
        std::fs::metadata(&file).expect("stat").len(),
        group_view(&mut store).await,
    );
    for index in 6..=7 {
        store
            .blocking_append(entries(2, index..=index, 30))
            .await
            .expect("append");
        record(
            std::fs::metadata(&file).expect("stat").len(),
            group_view(&mut store).await,
        );
    }
    drop((store, log));

    let full = std::fs::read(&file).expect("read");
    let header_len = history[0].0;
    for cut in header_len..=full.len() as u64 {
        let image = TemporaryDirectory::new("torn-image");
        std::fs::create_dir_all(image.path()).expect("create");
        std::fs::write(
            image.path().join(file.file_name().expect("name")),
            &full[..cut as usize],
        )
        .expect("write");
        let (log, report) = ReplicatedLog::<TestTypes>::open(image.path(), config.clone())
            .expect("a torn tail opens");
        let mut store = log.group(3).expect("group");
        let (_, expected) = history
            .iter()
            .rev()
            .find(|(length, _)| *length <= cut)
            .expect("the empty log is a whole state");
        assert_eq!(&group_view(&mut store).await, expected, "cut at byte {cut}");
        let whole = history.iter().any(|(length, _)| *length == cut);
        assert_eq!(report.log.truncated_bytes == 0, whole, "cut at byte {cut}");
    }
}

#[tokio::test]
async fn a_failed_fsync_fails_every_waiting_and_later_write_and_never_reports_success() {
    let directory = TemporaryDirectory::new("fsync-fault");
    let plan = Arc::new(crate::log::FaultPlan::new());
    let mut config = small_config();
    config.log.fault = Some(Arc::clone(&plan));
    let log = open(directory.path(), config);
    let mut store = log.group(1).expect("group");
    let mut other = log.group(2).expect("group");
    store
        .blocking_append(entries(1, 1..=5, 40))
        .await
        .expect("append");

    plan.fail_sync_after(0);
    // Several appends in flight, of two groups: none may report success.
    let first = store.append_entries(entries(1, 6..=6, 40)).await;
    let second = other.append_entries(entries(1, 1..=2, 40)).await;
    // Queued before the failure, they fail later; after it, at once (the
    // `Err`s that `flatten` leaves out).
    for pending in [first, second].into_iter().flatten() {
        assert!(pending.durable().await.is_err());
    }
    assert!(store.blocking_append(entries(1, 7..=7, 40)).await.is_err());
    assert!(store.save_vote(&Vote::new(5, 1)).await.is_err());
    assert!(store.truncate(log_id(1, 3)).await.is_err());
    let failure = log.failure().expect("the store failed");
    assert!(failure.contains("fsync"), "{failure}");
    drop((store, other, log));

    let log = open(directory.path(), small_config());
    let mut store = log.group(1).expect("group");
    assert_eq!(
        indexes(&served(&mut store).await),
        (1..=5).collect::<Vec<_>>()
    );
    assert_eq!(store.read_vote().await.expect("vote"), None);
    let mut other = log.group(2).expect("group");
    assert!(served(&mut other).await.is_empty());
}

#[tokio::test]
async fn a_failed_write_fails_the_openraft_callback_and_keeps_what_was_acknowledged() {
    let directory = TemporaryDirectory::new("write-fault");
    let plan = Arc::new(crate::log::FaultPlan::new());
    let mut config = small_config();
    config.log.fault = Some(Arc::clone(&plan));
    let log = open(directory.path(), config);
    let mut store = log.group(1).expect("group");
    store
        .blocking_append(entries(1, 1..=3, 40))
        .await
        .expect("append");
    plan.fail_write_after(0);
    // `blocking_append` goes through openraft's own callback.
    let error = store
        .blocking_append(entries(1, 4..=6, 40))
        .await
        .expect_err("the callback reports the failed write");
    assert!(error.to_string().contains("write"), "{error}");
    assert!(store.blocking_append(entries(1, 7..=7, 40)).await.is_err());
    drop((store, log));

    let log = open(directory.path(), small_config());
    let mut store = log.group(1).expect("group");
    assert_eq!(indexes(&served(&mut store).await), vec![1, 2, 3]);
}

/// Config whose files hold about a dozen 100-byte entries.
fn retention_config() -> ReplicatedLogConfig {
    let mut config = small_config();
    config.log.group_records_max = 64;
    config.log.group_bytes_max = 64 * 1024;
    config
}

#[tokio::test]
async fn the_retention_floor_keeps_purged_entries_on_disk_until_it_moves() {
    let directory = TemporaryDirectory::new("retention");
    let log = open(directory.path(), retention_config());
    let mut store = log.group(1).expect("group");
    store
        .blocking_append(entries(1, 1..=60, 100))
        .await
        .expect("append");
    store
        .save_committed(Some(log_id(1, 60)))
        .await
        .expect("committed");
    log.set_retention_floor(1, Some(20)).await.expect("floor");
    store.purge(log_id(1, 40)).await.expect("purge");
    let files_before = log.stats().segments;

    let report = log.reclaim().await.expect("reclaim");
    assert!(report.segments_removed >= 1, "{report:?}");
    assert!(report.pinned_groups.is_empty());
    // openraft sees 41..=60; the fallback path reads 21..=60.
    assert_eq!(
        indexes(&served(&mut store).await),
        (41..=60).collect::<Vec<_>>()
    );
    let retained = log.read_retained(1, 21, 60).expect("retained");
    assert_eq!(summary(&retained), summary(&entries(1, 21..=60, 100)));
    assert!(matches!(
        log.read_retained(1, 20, 60),
        Err(ReplicatedLogError::NotRetained {
            held_first: 21,
            held_last: 60,
            ..
        })
    ));
    let files_kept = log.stats().segments;
    assert!(files_kept < files_before);

    // The floor is durable: it holds after a restart.
    drop((store, log));
    let log = open(directory.path(), retention_config());
    let mut store = log.group(1).expect("group");
    let retained = log
        .read_retained(1, 21, 60)
        .expect("retained after reopening");
    assert_eq!(summary(&retained), summary(&entries(1, 21..=60, 100)));
    assert_eq!(
        store
            .get_log_state()
            .await
            .expect("state")
            .last_purged_log_id,
        Some(log_id(1, 40))
    );

    // Without the floor, the purged entries go, and their files with them.
    log.set_retention_floor(1, None).await.expect("floor");
    let report = log.reclaim().await.expect("reclaim");
    assert!(report.segments_removed >= 1, "{report:?}");
    assert!(log.stats().segments < files_kept);
    assert!(matches!(
        log.read_retained(1, 21, 60),
        Err(ReplicatedLogError::NotRetained { held_first: 41, .. })
    ));
    assert_eq!(
        indexes(&served(&mut store).await),
        (41..=60).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn reads_never_serve_purged_entries_and_holes_are_refused() {
    let directory = TemporaryDirectory::new("purged-reads");
    let log = open(directory.path(), small_config());
    let mut store = log.group(1).expect("group");
    store
        .blocking_append(entries(1, 1..=10, 20))
        .await
        .expect("append");
    store.purge(log_id(1, 5)).await.expect("purge");
    assert_eq!(
        indexes(&served(&mut store).await),
        (6..=10).collect::<Vec<_>>()
    );
    assert!(store
        .try_get_log_entries(0..6)
        .await
        .expect("read")
        .is_empty());
    let mut reader = store.get_log_reader().await;
    assert_eq!(
        indexes(&reader.try_get_log_entries(3..8).await.expect("read")),
        vec![6, 7]
    );
    assert!(matches!(
        log.read_retained(1, 3, 10),
        Err(ReplicatedLogError::NotRetained {
            held_first: 6,
            held_last: 10,
            ..
        })
    ));
    // Below the purge point there is nothing to truncate.
    assert!(store.truncate(log_id(1, 5)).await.is_err());

    // A hole would break openraft's "the last log id says it all".
    let error = store
        .blocking_append(entries(1, 12..=12, 20))
        .await
        .expect_err("a hole is refused");
    assert!(
        error.to_string().contains("entry 12 appended where 11"),
        "{error}"
    );
    assert_eq!(
        indexes(&served(&mut store).await),
        (6..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_idle_group_is_carried_forward_so_old_files_can_go() {
    let directory = TemporaryDirectory::new("carry");
    let log = open(directory.path(), retention_config());
    let mut idle = log.group(1).expect("group");
    idle.save_vote(&Vote::new_committed(3, 1))
        .await
        .expect("vote");
    idle.blocking_append(entries(3, 1..=3, 50))
        .await
        .expect("append");
    idle.save_committed(Some(log_id(3, 2)))
        .await
        .expect("committed");
    let mut busy = log.group(2).expect("group");
    for start in (1..=200).step_by(10) {
        busy.blocking_append(entries(1, start..=start + 9, 100))
            .await
            .expect("append");
    }
    busy.save_committed(Some(log_id(1, 200)))
        .await
        .expect("committed");
    busy.purge(log_id(1, 195)).await.expect("purge");
    let idle_before = group_view(&mut idle).await;
    let busy_before = group_view(&mut busy).await;
    let files_before = log.stats().segments;
    assert!(files_before > 10);

    let report = log.reclaim().await.expect("reclaim");
    assert_eq!(report.entries_carried, 3, "{report:?}");
    assert!(report.states_carried >= 1, "{report:?}");
    assert!(report.pinned_groups.is_empty());
    assert!(log.stats().segments <= 2, "{:?}", log.stats());
    assert_eq!(group_view(&mut idle).await, idle_before);

    drop((idle, busy, log));
    let log = open(directory.path(), retention_config());
    let mut idle = log.group(1).expect("group");
    let mut busy = log.group(2).expect("group");
    assert_eq!(group_view(&mut idle).await, idle_before);
    assert_eq!(
        idle.read_committed().await.expect("committed"),
        Some(log_id(3, 2))
    );
    assert_eq!(group_view(&mut busy).await, busy_before);
}

#[tokio::test]
async fn a_group_too_large_to_carry_pins_its_files_until_it_purges() {
    let directory = TemporaryDirectory::new("pinned");
    let mut config = retention_config();
    config.carry_forward_bytes_max = 500;
    let log = open(directory.path(), config.clone());
    let mut large = log.group(1).expect("group");
    large
        .blocking_append(entries(1, 1..=20, 100))
        .await
        .expect("append");
    let mut busy = log.group(2).expect("group");
    busy.blocking_append(entries(1, 1..=100, 100))
        .await
        .expect("append");
    busy.purge(log_id(1, 100)).await.expect("purge");

    let report = log.reclaim().await.expect("reclaim");
    assert_eq!(report.pinned_groups, vec![1]);
    assert_eq!(report.segments_removed, 0);
    assert_eq!(report.entries_carried, 0);

    large.purge(log_id(1, 20)).await.expect("purge");
    let report = log.reclaim().await.expect("reclaim");
    assert!(report.pinned_groups.is_empty(), "{report:?}");
    assert!(report.segments_removed >= 5, "{report:?}");
    drop((large, busy, log));
    let log = open(directory.path(), config);
    let mut large = log.group(1).expect("group");
    assert_eq!(
        large.get_log_state().await.expect("state"),
        LogState {
            last_purged_log_id: Some(log_id(1, 20)),
            last_log_id: Some(log_id(1, 20)),
        }
    );
}

#[tokio::test]
async fn the_cache_stays_within_its_bound_and_old_entries_come_back_from_disk() {
    let directory = TemporaryDirectory::new("cache");
    let mut config = retention_config();
    config.entry_cache_bytes_max = 1024;
    config.read_bytes_max = 1000;
    let log = open(directory.path(), config);
    let mut store = log.group(1).expect("group");
    for start in (1..=100).step_by(5) {
        store
            .blocking_append(entries(1, start..=start + 4, 100))
            .await
            .expect("append");
        let stats = log.stats();
        assert!(stats.cached_bytes <= 1024, "{stats:?}");
    }
    let stats = log.stats();
    assert_eq!(stats.held_entries, 100);
    assert!(stats.cached_entries < 20, "{stats:?}");
    assert_eq!(
        summary(&served(&mut store).await),
        summary(&entries(1, 1..=100, 100))
    );
    // A lagging follower's read is bounded, and never empty.
    let mut reader = store.get_log_reader().await;
    let first = reader.limited_get_log_entries(1, 101).await.expect("read");
    assert!(!first.is_empty() && first.len() <= 10, "{}", first.len());
    assert_eq!(
        indexes(&first),
        (1..=first.len() as u64).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn one_handle_per_group_and_a_forgotten_group_leaves_nothing_behind() {
    let directory = TemporaryDirectory::new("forget");
    let log = open(directory.path(), retention_config());
    let mut store = log.group(1).expect("group");
    assert!(matches!(
        log.group(1),
        Err(ReplicatedLogError::GroupBusy { group: 1 })
    ));
    store.save_vote(&Vote::new(1, 1)).await.expect("vote");
    store
        .blocking_append(entries(1, 1..=40, 100))
        .await
        .expect("append");
    assert!(matches!(
        log.forget_group(1).await,
        Err(ReplicatedLogError::GroupBusy { group: 1 })
    ));
    drop(store);
    let mut other = log.group(2).expect("group");
    other
        .blocking_append(entries(1, 1..=40, 100))
        .await
        .expect("append");
    other.purge(log_id(1, 40)).await.expect("purge");

    log.forget_group(1).await.expect("forget");
    assert_eq!(log.group_ids(), vec![2]);
    let report = log.reclaim().await.expect("reclaim");
    assert!(report.segments_removed >= 5, "{report:?}");
    drop((other, log));
    let log = open(directory.path(), retention_config());
    assert_eq!(log.group_ids(), vec![2]);
    let mut store = log.group(1).expect("a new, empty group");
    assert_eq!(store.read_vote().await.expect("vote"), None);
    assert!(served(&mut store).await.is_empty());
}
