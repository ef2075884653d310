//! The store: [`ReplicatedLog`] (node-wide), [`GroupLog`] (one group's
//! openraft `RaftLogStorage`) and [`GroupLogReader`] (its `RaftLogReader`).
//!
//! Locks, outermost first: a group's write lock (tokio, held across the
//! wait for room in the log's queue and, for the writes openraft needs
//! durable, across the fsync), the deletion lock (readers share it while
//! they pick locations and read them, `reclaim` takes it alone to delete
//! files), and the groups mutex (std, short sections, also taken by the
//! log's writer thread in the callbacks). Nothing waits while holding the
//! groups mutex, and the writer thread takes nothing else, so the callbacks
//! can never deadlock with a caller.

// openraft's storage traits fix `StorageError` (~224 bytes) as the error
// type of the trait methods.
#![allow(clippy::result_large_err)]

use super::record::{self, GroupMeta};
use super::recovery;
use super::state::{Groups, Slot};
use super::{GroupId, ReplicatedLogConfig, ReplicatedLogError};
use crate::log::{self, AppendCallback, Appended, Log, LogStats, Position, RecoveryReport};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader,
    RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use tokio::sync::oneshot;

/// The type configs the replicated log stores: openraft's own entry type,
/// and a payload that can be cloned out of the cache.
pub trait GroupTypes: RaftTypeConfig<Entry = Entry<Self>, D: Clone> {}

impl<C> GroupTypes for C where C: RaftTypeConfig<Entry = Entry<C>, D: Clone> {}

/// What [`ReplicatedLog::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The shared log's own report (torn tail cut, segments, positions).
    pub log: RecoveryReport,
    /// Records replayed.
    pub records: u64,
    pub groups: usize,
    /// Entries held over all groups (served or retained).
    pub entries: u64,
}

/// What one [`ReplicatedLog::reclaim`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub segments_removed: usize,
    pub bytes_removed: u64,
    /// Entry records written again at the head.
    pub entries_carried: u64,
    /// State records written again at the head.
    pub states_carried: u64,
    /// Groups whose records in the oldest files were over
    /// `carry_forward_bytes_max`; they keep those files.
    pub pinned_groups: Vec<GroupId>,
}

/// Counters and sizes, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicatedLogStats {
    pub groups: usize,
    /// Entries held over all groups (each has a slot in memory).
    pub held_entries: u64,
    pub cached_entries: usize,
    pub cached_bytes: usize,
    /// Files of the shared log.
    pub segments: usize,
    pub log: LogStats,
}

/// How the end of an append is reported.
enum Completion<C: RaftTypeConfig> {
    /// openraft's callback.
    Raft(LogFlushed<C>),
    /// [`AppendDurable`] and the writes that wait for their fsync.
    Channel(oneshot::Sender<Result<(), String>>),
}

impl<C: RaftTypeConfig> Completion<C> {
    fn complete(self, result: Result<(), String>) {
        match self {
            Completion::Raft(flushed) => {
                flushed.log_io_completed(result.map_err(std::io::Error::other));
            }
            Completion::Channel(sender) => {
                let _ = sender.send(result);
            }
        }
    }
}

/// An append's durability, for callers that drive a [`GroupLog`] without
/// openraft (tests, benchmarks).
#[derive(Debug)]
pub struct AppendDurable {
    receiver: oneshot::Receiver<Result<(), String>>,
}

impl AppendDurable {
    /// Completes once the entries are synced, or with the failure.
    pub async fn durable(self) -> Result<(), ReplicatedLogError> {
        wait_for(self.receiver).await
    }
}

async fn wait_for(
    receiver: oneshot::Receiver<Result<(), String>>,
) -> Result<(), ReplicatedLogError> {
    match receiver.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(cause)) => Err(ReplicatedLogError::Failed { cause }),
        Err(_) => Err(ReplicatedLogError::Failed {
            cause: "the log dropped the write without an answer".to_string(),
        }),
    }
}

/// What a synced record means for memory.
#[derive(Debug, Clone)]
pub(super) enum Synced<NID: openraft::NodeId> {
    /// The slot of this entry (not yet durable) gets its location.
    Entry(LogId<NID>),
    /// The slot of this entry, if still at `from`, moves to the copy.
    Copy { log_id: LogId<NID>, from: Position },
    /// The group's last synced state record is here.
    State,
    /// Truncate or forget: the caller changes memory after waiting.
    Other,
}

/// The node-wide store. Cheap to clone; every group's handle shares it.
#[derive(Debug)]
pub struct ReplicatedLog<C: GroupTypes> {
    shared: Arc<Shared<C>>,
}

impl<C: GroupTypes> Clone for ReplicatedLog<C> {
    fn clone(&self) -> Self {
        ReplicatedLog {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
pub(super) struct Shared<C: GroupTypes> {
    pub log: Log,
    pub config: ReplicatedLogConfig,
    /// What the writer thread's callbacks touch. Apart from the `Log`, so
    /// that a callback never holds the last reference to the log: dropping
    /// that on the writer thread would make it join itself.
    pub memory: Arc<Memory<C>>,
    /// Shared by readers from choosing locations to reading them; taken
    /// alone by `reclaim` to delete files, so a location a reader chose
    /// never disappears under it.
    pub deletion: RwLock<()>,
    /// One `reclaim` at a time.
    pub reclaiming: tokio::sync::Mutex<()>,
}

impl<C: GroupTypes> ReplicatedLog<C> {
    /// Opens (or creates) the shared log in `dir`, cuts a torn tail,
    /// replays every record and rebuilds every group. Blocking; call it
    /// before serving.
    pub fn open(
        dir: impl AsRef<Path>,
        config: ReplicatedLogConfig,
    ) -> Result<(ReplicatedLog<C>, OpenReport), ReplicatedLogError> {
        if config.read_bytes_max == 0 {
            return Err(ReplicatedLogError::InvalidConfig {
                setting: "read_bytes_max",
                reason: "must be at least 1",
            });
        }
        let (log, log_report) = Log::open(dir, config.log.clone())?;
        let recovered = recovery::recover::<C>(&log)?;
        let entries = recovered
            .groups
            .values()
            .map(|state| state.slots.len() as u64)
            .sum();
        let report = OpenReport {
            log: log_report,
            records: recovered.records,
            groups: recovered.groups.len(),
            entries,
        };
        let shared = Arc::new(Shared {
            log,
            memory: Arc::new(Memory {
                groups: Mutex::new(Groups::new(recovered.groups)),
                entry_cache_bytes_max: config.entry_cache_bytes_max,
            }),
            config,
            deletion: RwLock::new(()),
            reclaiming: tokio::sync::Mutex::new(()),
        });
        Ok((ReplicatedLog { shared }, report))
    }

    /// The storage handle of `group` for `openraft::Raft::new`, creating
    /// an empty group if the log holds none. At most one per group is open
    /// at a time (openraft serializes the writes of one handle; two would
    /// not be); dropping it closes it.
    pub fn group(&self, group: GroupId) -> Result<GroupLog<C>, ReplicatedLogError> {
        let mut groups = self.shared.lock();
        let state = groups.group_mut(group);
        if state.handle_open {
            return Err(ReplicatedLogError::GroupBusy { group });
        }
        state.handle_open = true;
        Ok(GroupLog {
            shared: Arc::clone(&self.shared),
            group,
        })
    }

    /// A reader of `group`'s entries, as openraft's log reader is.
    pub fn reader(&self, group: GroupId) -> GroupLogReader<C> {
        GroupLogReader {
            shared: Arc::clone(&self.shared),
            group,
        }
    }

    /// Groups this node holds anything of, in order.
    pub fn group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.shared.lock().groups.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Sets `group`'s retention floor: the index of its previous, kept-back
    /// checkpoint. Entries above it stay on disk (and readable through
    /// [`Self::read_retained`]) even after openraft purges them; `None`
    /// keeps only what openraft has not purged. Entries already dropped do
    /// not come back. Durable before it returns (a state record), and it
    /// survives restarts.
    pub async fn set_retention_floor(
        &self,
        group: GroupId,
        floor: Option<u64>,
    ) -> Result<(), ReplicatedLogError> {
        self.shared
            .change_meta_durably(group, |meta| {
                let changed = meta.floor != floor;
                meta.floor = floor;
                changed
            })
            .await
    }

    /// Entries `first..=last` of `group` including purged ones it retains,
    /// for rebuilding from the previous checkpoint; a prefix of them when
    /// they exceed `read_bytes_max` (at least one). Refused with
    /// `NotRetained` unless the group holds `first` and `last`.
    pub fn read_retained(
        &self,
        group: GroupId,
        first: u64,
        last: u64,
    ) -> Result<Vec<Entry<C>>, ReplicatedLogError> {
        self.shared.read_retained(group, first, last)
    }

    /// Removes `group` from this node (a replica moved away): a forget
    /// record, durable before it returns, then its memory; its records no
    /// longer pin any file. Refused while its handle is open.
    pub async fn forget_group(&self, group: GroupId) -> Result<(), ReplicatedLogError> {
        self.shared.forget_group(group).await
    }

    /// Deletes the oldest files of the shared log that no group needs,
    /// carrying small groups' records forward first (module documentation,
    /// "Space"). Call it after checkpoints; one runs at a time.
    pub async fn reclaim(&self) -> Result<ReclaimReport, ReplicatedLogError> {
        Arc::clone(&self.shared).reclaim().await
    }

    pub fn stats(&self) -> ReplicatedLogStats {
        let groups = self.shared.lock();
        ReplicatedLogStats {
            groups: groups.groups.len(),
            held_entries: groups
                .groups
                .values()
                .map(|state| state.slots.len() as u64)
                .sum(),
            cached_entries: groups.cache.entries,
            cached_bytes: groups.cache.bytes,
            segments: self.shared.log.segment_first_positions().len(),
            log: self.shared.log.stats(),
        }
    }

    /// Why the store stopped accepting writes, if it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }

    pub fn dir(&self) -> &Path {
        self.shared.log.dir()
    }
}

/// The groups in memory, shared with the writer thread's callbacks.
#[derive(Debug)]
pub(super) struct Memory<C: GroupTypes> {
    groups: Mutex<Groups<C>>,
    entry_cache_bytes_max: usize,
}

impl<C: GroupTypes> Memory<C> {
    /// A poisoned lock only means a panic elsewhere; every update leaves
    /// the state coherent between statements that can panic.
    fn lock(&self) -> MutexGuard<'_, Groups<C>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, cause: &str) {
        let mut groups = self.lock();
        if groups.failure.is_none() {
            tracing::error!(%cause, "replicated log: a write failed; the store accepts no more writes");
            groups.failure = Some(cause.to_string());
        }
    }

    /// Runs on the log's writer thread: records the locations, then
    /// reports.
    fn on_synced(
        &self,
        group: GroupId,
        synced: &[Synced<C::NodeId>],
        result: Result<Appended, log::LogError>,
        done: Option<Completion<C>>,
    ) {
        match result {
            Ok(appended) => {
                let mut groups = self.lock();
                record_locations(&mut groups, group, synced, &appended);
                groups.evict(self.entry_cache_bytes_max);
                drop(groups);
                if let Some(done) = done {
                    done.complete(Ok(()));
                }
            }
            Err(error) => {
                let cause = error.to_string();
                self.fail(&cause);
                if let Some(done) = done {
                    done.complete(Err(cause));
                }
            }
        }
    }
}

impl<C: GroupTypes> Shared<C> {
    pub fn lock(&self) -> MutexGuard<'_, Groups<C>> {
        self.memory.lock()
    }

    pub async fn lock_group(&self, group: GroupId) -> tokio::sync::OwnedMutexGuard<()> {
        let write_lock = Arc::clone(&self.lock().group_mut(group).write_lock);
        write_lock.lock_owned().await
    }

    pub fn check_failure(&self) -> Result<(), ReplicatedLogError> {
        match &self.lock().failure {
            Some(cause) => Err(ReplicatedLogError::Failed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Fails the store with a log error and returns it as ours.
    fn fail_with(&self, error: log::LogError) -> ReplicatedLogError {
        self.memory.fail(&error.to_string());
        ReplicatedLogError::Log(error)
    }

    /// Queues `records` of `group` in order, split into batches that fit
    /// the log's group bounds. Each batch's callback updates memory (the
    /// `Synced` of each record); the last one completes `completion`. The
    /// caller holds the group's write lock.
    async fn write_records(
        self: &Arc<Self>,
        group: GroupId,
        records: Vec<(Vec<u8>, Synced<C::NodeId>)>,
        completion: Option<Completion<C>>,
    ) -> Result<(), ReplicatedLogError> {
        let batches = split_into_batches(records, &self.config.log);
        let batch_count = batches.len();
        let mut completion = completion;
        for (number, batch) in batches.into_iter().enumerate() {
            let done = if number + 1 == batch_count {
                completion.take()
            } else {
                None
            };
            let (payloads, synced): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let payloads = payloads
                .into_iter()
                .map(|payload| (group, payload))
                .collect();
            let memory = Arc::clone(&self.memory);
            let callback: AppendCallback = Box::new(move |result| {
                memory.on_synced(group, &synced, result, done);
            });
            if let Err(error) = self.log.enqueue_with_callback(payloads, callback).await {
                let error = self.fail_with(error);
                if let Some(completion) = completion.take() {
                    completion.complete(Err(error.to_string()));
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// Queues `records` and waits until they are synced.
    pub(super) async fn write_and_wait(
        self: &Arc<Self>,
        group: GroupId,
        records: Vec<(Vec<u8>, Synced<C::NodeId>)>,
    ) -> Result<(), ReplicatedLogError> {
        let (sender, receiver) = oneshot::channel();
        self.write_records(group, records, Some(Completion::Channel(sender)))
            .await?;
        wait_for(receiver).await
    }

    async fn append(
        self: &Arc<Self>,
        group: GroupId,
        entries: Vec<Entry<C>>,
        completion: Completion<C>,
    ) -> Result<(), ReplicatedLogError> {
        let entries = self.unpurged(group, entries);
        if entries.is_empty() {
            return self.barrier(group, completion).await;
        }
        let encoded = match self.encode_entries(group, &entries) {
            Ok(encoded) => encoded,
            Err(error) => {
                completion.complete(Err(error.to_string()));
                return Err(error);
            }
        };
        let _write = self.lock_group(group).await;
        if let Err(error) = self.check_failure().and_then(|()| {
            let mut groups = self.lock();
            let state = groups.group_mut(group);
            check_follows(group, state.next_index(), &entries)
        }) {
            completion.complete(Err(error.to_string()));
            return Err(error);
        }
        let mut records = Vec::with_capacity(entries.len());
        let mut slots = Vec::with_capacity(entries.len());
        for (entry, payload) in entries.into_iter().zip(encoded) {
            slots.push(Slot {
                log_id: entry.log_id.clone(),
                position: 0,
                offset: 0,
                record_bytes: payload.len(),
                cached: Some(Arc::new(entry)),
            });
            let log_id = slots.last().expect("pushed").log_id.clone();
            records.push((payload, Synced::Entry(log_id)));
        }
        {
            let mut groups = self.lock();
            groups.push_cached(group, slots);
            groups.evict(self.config.entry_cache_bytes_max);
        }
        self.write_records(group, records, Some(completion)).await
    }

    /// Leaves out entries at or below the purge point: a snapshot already
    /// covers them, and they would sit below the first entry served.
    /// openraft appends there only in its storage test suite, after it
    /// purged the log up to a state machine that is ahead of it.
    fn unpurged(&self, group: GroupId, mut entries: Vec<Entry<C>>) -> Vec<Entry<C>> {
        let served_from = self.lock().group_mut(group).served_from();
        entries.retain(|entry| entry.log_id.index >= served_from);
        entries
    }

    /// Completes an append with nothing to write only once everything
    /// queued before it is synced (openraft counts a completed append as
    /// "everything up to here is durable"): a state record repeating the
    /// group's metadata goes through the log in order.
    async fn barrier(
        self: &Arc<Self>,
        group: GroupId,
        completion: Completion<C>,
    ) -> Result<(), ReplicatedLogError> {
        let _write = self.lock_group(group).await;
        let meta = self.lock().group_mut(group).meta.clone();
        let payload = match self
            .check_failure()
            .and_then(|()| encode_state(group, &meta))
        {
            Ok(payload) => payload,
            Err(error) => {
                completion.complete(Err(error.to_string()));
                return Err(error);
            }
        };
        self.write_records(group, vec![(payload, Synced::State)], Some(completion))
            .await
    }

    fn encode_entries(
        &self,
        group: GroupId,
        entries: &[Entry<C>],
    ) -> Result<Vec<Vec<u8>>, ReplicatedLogError> {
        let bytes_max = self.config.log.record_bytes_max;
        entries
            .iter()
            .map(|entry| {
                let index = entry.log_id.index;
                let payload =
                    record::encode_entry(entry).map_err(|source| ReplicatedLogError::Encode {
                        group,
                        index,
                        source,
                    })?;
                if payload.len() > bytes_max {
                    return Err(ReplicatedLogError::EntryTooLarge {
                        group,
                        index,
                        bytes: payload.len(),
                        bytes_max,
                    });
                }
                Ok(payload)
            })
            .collect()
    }

    /// Writes a state record with `change` applied to the group's metadata
    /// (when it reports a change), waits for its fsync, then applies it to
    /// memory and drops what is no longer kept.
    async fn change_meta_durably(
        self: &Arc<Self>,
        group: GroupId,
        change: impl FnOnce(&mut GroupMeta<C::NodeId>) -> bool,
    ) -> Result<(), ReplicatedLogError> {
        let _write = self.lock_group(group).await;
        self.check_failure()?;
        let mut meta = self.lock().group_mut(group).meta.clone();
        if !change(&mut meta) {
            return Ok(());
        }
        let mut records = Vec::with_capacity(2);
        if self.lock().group_mut(group).is_past_end(&meta) {
            // Recovery replays copies carried forward after the records
            // around them, so it cannot tell "past the end" from the
            // entries it holds at this point: the clearing is written down.
            records.push((record::encode_truncate(0), Synced::Other));
        }
        records.push((encode_state(group, &meta)?, Synced::State));
        self.write_and_wait(group, records).await?;
        let mut guard = self.lock();
        let Groups { groups, cache, .. } = &mut *guard;
        let state = groups.entry(group).or_default();
        state.meta = meta;
        state.drop_unkept(cache);
        Ok(())
    }

    /// `save_committed`: memory at once, the record without waiting (a
    /// committed id lost in a crash only means re-applying more).
    async fn save_committed(
        self: &Arc<Self>,
        group: GroupId,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), ReplicatedLogError> {
        let _write = self.lock_group(group).await;
        self.check_failure()?;
        let meta = {
            let mut groups = self.lock();
            let state = groups.group_mut(group);
            state.meta.committed = committed;
            state.meta.clone()
        };
        let payload = encode_state(group, &meta)?;
        self.write_records(group, vec![(payload, Synced::State)], None)
            .await
    }

    async fn truncate(
        self: &Arc<Self>,
        group: GroupId,
        index: u64,
    ) -> Result<(), ReplicatedLogError> {
        let _write = self.lock_group(group).await;
        self.check_failure()?;
        {
            let mut groups = self.lock();
            let state = groups.group_mut(group);
            if let Some(purged) = &state.meta.purged {
                if index <= purged.index {
                    return Err(ReplicatedLogError::TruncatePurged {
                        group,
                        index,
                        purged: purged.index,
                    });
                }
            }
            if state.last_index().is_none_or(|last| last < index) {
                // Nothing at or above: memory and disk already agree.
                return Ok(());
            }
        }
        let payload = record::encode_truncate(index);
        self.write_and_wait(group, vec![(payload, Synced::Other)])
            .await?;
        let mut guard = self.lock();
        let Groups { groups, cache, .. } = &mut *guard;
        groups.entry(group).or_default().remove_from(index, cache);
        Ok(())
    }

    async fn forget_group(self: &Arc<Self>, group: GroupId) -> Result<(), ReplicatedLogError> {
        let _write = self.lock_group(group).await;
        self.check_failure()?;
        {
            let mut groups = self.lock();
            let Some(state) = groups.groups.get_mut(&group) else {
                return Ok(());
            };
            if state.handle_open {
                return Err(ReplicatedLogError::GroupBusy { group });
            }
            // Reserved, so no handle opens while the record is written.
            state.handle_open = true;
        }
        let written = self
            .write_and_wait(group, vec![(record::encode_forget(), Synced::Other)])
            .await;
        let mut groups = self.lock();
        match written {
            Ok(()) => {
                groups.remove_group(group);
                Ok(())
            }
            Err(error) => {
                if let Some(state) = groups.groups.get_mut(&group) {
                    state.handle_open = false;
                }
                Err(error)
            }
        }
    }

    /// Entries openraft may read: above the purge point.
    fn read_served(
        &self,
        group: GroupId,
        range: (Bound<u64>, Bound<u64>),
        bytes_max: Option<usize>,
    ) -> Result<Vec<Entry<C>>, ReplicatedLogError> {
        let _no_deletion = self.deletion.read().unwrap_or_else(PoisonError::into_inner);
        let plan = {
            let groups = self.lock();
            let Some(state) = groups.groups.get(&group) else {
                return Ok(Vec::new());
            };
            let Some(last) = state.last_index() else {
                return Ok(Vec::new());
            };
            let start = match range.0 {
                Bound::Included(start) => start,
                Bound::Excluded(start) => start.saturating_add(1),
                Bound::Unbounded => 0,
            };
            let end = match range.1 {
                Bound::Included(end) => end.saturating_add(1),
                Bound::Excluded(end) => end,
                Bound::Unbounded => u64::MAX,
            };
            let start = start
                .max(state.served_from())
                .max(state.first_index().unwrap_or(0));
            let end = end.min(last + 1);
            plan_reads(state, start, end, bytes_max)
        };
        self.fetch(group, plan)
    }

    fn read_retained(
        &self,
        group: GroupId,
        first: u64,
        last: u64,
    ) -> Result<Vec<Entry<C>>, ReplicatedLogError> {
        let _no_deletion = self.deletion.read().unwrap_or_else(PoisonError::into_inner);
        let plan = {
            let groups = self.lock();
            let state = groups.groups.get(&group);
            let held = state.and_then(|state| {
                let held_first = state.first_index()?.max(state.retained_from());
                let held_last = state.last_index()?;
                Some((held_first, held_last))
            });
            match (state, held) {
                (Some(state), Some((held_first, held_last)))
                    if held_first <= first && first <= last && last <= held_last =>
                {
                    plan_reads(state, first, last + 1, Some(self.config.read_bytes_max))
                }
                _ => {
                    let (held_first, held_last) = held.unwrap_or((1, 0));
                    return Err(ReplicatedLogError::NotRetained {
                        group,
                        first,
                        last,
                        held_first,
                        held_last,
                    });
                }
            }
        };
        self.fetch(group, plan)
    }

    /// Entries of a plan: clones of cached ones, the rest read at their
    /// location. The caller holds the deletion lock.
    fn fetch(
        &self,
        group: GroupId,
        plan: Vec<PlannedRead<C>>,
    ) -> Result<Vec<Entry<C>>, ReplicatedLogError> {
        let mut reader = None;
        let mut entries = Vec::with_capacity(plan.len());
        for planned in plan {
            let entry = match planned {
                PlannedRead::Cached(entry) => Entry::clone(&entry),
                PlannedRead::Disk {
                    log_id,
                    position,
                    offset,
                } => {
                    let reader = reader.get_or_insert_with(|| self.log.record_reader());
                    read_entry(reader, group, &log_id, position, offset)?
                }
            };
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// One entry a read returns, decided under the groups lock.
enum PlannedRead<C: GroupTypes> {
    Cached(Arc<Entry<C>>),
    Disk {
        log_id: LogId<C::NodeId>,
        position: Position,
        offset: u64,
    },
}

/// The entries `start..end` of a group, stopping (after at least one) once
/// `bytes_max` encoded bytes are planned.
fn plan_reads<C: GroupTypes>(
    state: &super::state::GroupState<C>,
    start: u64,
    end: u64,
    bytes_max: Option<usize>,
) -> Vec<PlannedRead<C>> {
    let mut plan = Vec::new();
    let mut bytes = 0usize;
    for index in start..end {
        if bytes_max.is_some_and(|bytes_max| bytes >= bytes_max) && !plan.is_empty() {
            break;
        }
        let slot = state
            .slot(index)
            .expect("start and end lie within the group's slots");
        bytes += slot.record_bytes;
        let planned = match &slot.cached {
            Some(entry) => PlannedRead::Cached(Arc::clone(entry)),
            None => {
                // Eviction keeps every entry whose record is not synced.
                assert!(slot.is_durable(), "an uncached entry has a location");
                PlannedRead::Disk {
                    log_id: slot.log_id.clone(),
                    position: slot.position,
                    offset: slot.offset,
                }
            }
        };
        plan.push(planned);
    }
    plan
}

fn read_entry<C: GroupTypes>(
    reader: &mut log::RecordReader,
    group: GroupId,
    log_id: &LogId<C::NodeId>,
    position: Position,
    offset: u64,
) -> Result<Entry<C>, ReplicatedLogError> {
    let record = reader.read_at(position, offset)?;
    let wrong = |reason: String| ReplicatedLogError::WrongRecord {
        group,
        index: log_id.index,
        position,
        reason,
    };
    if record.shard != group {
        return Err(wrong(format!("it belongs to group {}", record.shard)));
    }
    let entry =
        record::decode_entry::<C>(&record.payload).map_err(|error| wrong(error.to_string()))?;
    // Paired with the log id the slot was made from at append.
    if entry.log_id != *log_id {
        return Err(wrong(format!("it holds entry {}", entry.log_id)));
    }
    Ok(entry)
}

pub(super) fn encode_state<NID: openraft::NodeId>(
    group: GroupId,
    meta: &GroupMeta<NID>,
) -> Result<Vec<u8>, ReplicatedLogError> {
    record::encode_state(meta).map_err(|source| ReplicatedLogError::EncodeState { group, source })
}

/// The entries must start at the group's next index and be consecutive:
/// openraft truncates before it appends over a conflict, so anything else
/// is a bug that would leave a hole.
fn check_follows<C: GroupTypes>(
    group: GroupId,
    next_index: Option<u64>,
    entries: &[Entry<C>],
) -> Result<(), ReplicatedLogError> {
    let first = next_index.unwrap_or(entries[0].log_id.index);
    for (expected, entry) in (first..).zip(entries) {
        if entry.log_id.index != expected {
            return Err(ReplicatedLogError::NotContiguous {
                group,
                expected,
                found: entry.log_id.index,
            });
        }
    }
    Ok(())
}

/// Applies what a synced batch means to memory (see [`Synced`]).
fn record_locations<C: GroupTypes>(
    groups: &mut Groups<C>,
    group: GroupId,
    synced: &[Synced<C::NodeId>],
    appended: &Appended,
) {
    assert_eq!(
        synced.len(),
        appended.offsets.len(),
        "one location per record"
    );
    let Some(state) = groups.groups.get_mut(&group) else {
        return;
    };
    let locations = appended.positions.clone().zip(&appended.offsets);
    for (synced, (position, offset)) in synced.iter().zip(locations) {
        match synced {
            Synced::Entry(log_id) => {
                let slot = state
                    .slot_mut(log_id.index)
                    .filter(|slot| slot.log_id == *log_id && !slot.is_durable());
                if let Some(slot) = slot {
                    slot.position = position;
                    slot.offset = *offset;
                }
            }
            Synced::Copy { log_id, from } => {
                let slot = state
                    .slot_mut(log_id.index)
                    .filter(|slot| slot.log_id == *log_id && slot.position == *from);
                if let Some(slot) = slot {
                    slot.position = position;
                    slot.offset = *offset;
                }
            }
            Synced::State => state.state_position = state.state_position.max(position),
            Synced::Other => {}
        }
    }
}

/// Splits records, in order, into batches within the log's group bounds.
fn split_into_batches<T>(
    records: Vec<(Vec<u8>, T)>,
    config: &log::LogConfig,
) -> Vec<Vec<(Vec<u8>, T)>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    for (payload, tag) in records {
        let bytes = log::record_bytes(payload.len());
        let full =
            batch.len() == config.group_records_max || batch_bytes + bytes > config.group_bytes_max;
        if full && !batch.is_empty() {
            batches.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch_bytes += bytes;
        batch.push((payload, tag));
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// One group's storage for openraft: its `RaftLogStorage`. Exclusive per
/// group (see [`ReplicatedLog::group`]).
#[derive(Debug)]
pub struct GroupLog<C: GroupTypes> {
    shared: Arc<Shared<C>>,
    group: GroupId,
}

impl<C: GroupTypes> Drop for GroupLog<C> {
    fn drop(&mut self) {
        if let Some(state) = self.shared.lock().groups.get_mut(&self.group) {
            state.handle_open = false;
        }
    }
}

impl<C: GroupTypes> GroupLog<C> {
    pub fn group(&self) -> GroupId {
        self.group
    }

    fn reader(&self) -> GroupLogReader<C> {
        GroupLogReader {
            shared: Arc::clone(&self.shared),
            group: self.group,
        }
    }

    /// `append` without openraft's callback: returns once the entries are
    /// readable and queued; [`AppendDurable::durable`] completes after
    /// their fsync. Several may be in flight.
    pub async fn append_entries(
        &mut self,
        entries: Vec<Entry<C>>,
    ) -> Result<AppendDurable, ReplicatedLogError> {
        let (sender, receiver) = oneshot::channel();
        self.shared
            .append(self.group, entries, Completion::Channel(sender))
            .await?;
        Ok(AppendDurable { receiver })
    }
}

/// A reader of one group's entries; what openraft's replication tasks use.
#[derive(Debug)]
pub struct GroupLogReader<C: GroupTypes> {
    shared: Arc<Shared<C>>,
    group: GroupId,
}

impl<C: GroupTypes> Clone for GroupLogReader<C> {
    fn clone(&self) -> Self {
        GroupLogReader {
            shared: Arc::clone(&self.shared),
            group: self.group,
        }
    }
}

fn storage_error<NID: openraft::NodeId>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    error: ReplicatedLogError,
) -> StorageError<NID> {
    StorageIOError::new(subject, verb, AnyError::new(&error)).into()
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

async fn try_get_entries<C: GroupTypes>(
    shared: &Shared<C>,
    group: GroupId,
    range: (Bound<u64>, Bound<u64>),
    bytes_max: Option<usize>,
) -> Result<Vec<Entry<C>>, StorageError<C::NodeId>> {
    shared
        .read_served(group, range, bytes_max)
        .map_err(|error| storage_error(ErrorSubject::Logs, ErrorVerb::Read, error))
}

impl<C: GroupTypes> RaftLogReader<C> for GroupLogReader<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<C::NodeId>> {
        try_get_entries(&self.shared, self.group, bounds(&range), None).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<C>>, StorageError<C::NodeId>> {
        let bytes_max = Some(self.shared.config.read_bytes_max);
        try_get_entries(&self.shared, self.group, bounds(&(start..end)), bytes_max).await
    }
}

/// The storage reads as its reader does.
impl<C: GroupTypes> RaftLogReader<C> for GroupLog<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<C::NodeId>> {
        self.reader().try_get_log_entries(range).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<C>>, StorageError<C::NodeId>> {
        self.reader().limited_get_log_entries(start, end).await
    }
}

impl<C: GroupTypes> RaftLogStorage<C> for GroupLog<C> {
    type LogReader = GroupLogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let mut groups = self.shared.lock();
        let state = groups.group_mut(self.group);
        Ok(LogState {
            last_purged_log_id: state.meta.purged.clone(),
            last_log_id: state.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let vote = vote.clone();
        self.shared
            .change_meta_durably(self.group, |meta| {
                meta.vote = Some(vote);
                true
            })
            .await
            .map_err(|error| storage_error(ErrorSubject::Vote, ErrorVerb::Write, error))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.shared.lock().group_mut(self.group).meta.vote.clone())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        self.shared
            .save_committed(self.group, committed)
            .await
            .map_err(|error| storage_error(ErrorSubject::Store, ErrorVerb::Write, error))
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self
            .shared
            .lock()
            .group_mut(self.group)
            .meta
            .committed
            .clone())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<C>> = entries.into_iter().collect();
        self.shared
            .append(self.group, entries, Completion::Raft(callback))
            .await
            .map_err(|error| storage_error(ErrorSubject::Logs, ErrorVerb::Write, error))
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.shared
            .truncate(self.group, log_id.index)
            .await
            .map_err(|error| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, error))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let purged = log_id.clone();
        self.shared
            .change_meta_durably(self.group, |meta| {
                if meta.purged >= Some(purged.clone()) {
                    return false;
                }
                meta.purged = Some(purged);
                true
            })
            .await
            .map_err(|error| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, error))
    }
}
