//! What the replicated log holds in memory: per group its metadata and one
//! slot per entry still on disk (where the record is, and the entry itself
//! while the cache keeps it), and the cache's accounting.
//!
//! Plain data behind the store's one mutex; no I/O and no waiting here, so
//! the lock is held for short, bounded work (the writer thread takes it in
//! every callback).

use super::record::GroupMeta;
use super::GroupId;
use crate::log::Position;
use openraft::{LogId, RaftTypeConfig};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Stale cache-queue items tolerated beyond twice the cached entries
/// before the queue is swept (they come from truncated or purged entries).
const CACHE_QUEUE_SLACK_ITEMS: usize = 1024;

/// One entry the group holds, by index.
#[derive(Debug)]
pub(super) struct Slot<C: RaftTypeConfig> {
    pub log_id: LogId<C::NodeId>,
    /// Log position of the record holding the entry; 0 until it is synced
    /// (positions start at 1).
    pub position: Position,
    /// Byte offset of that record in its log file; meaningful once
    /// `position` is set.
    pub offset: u64,
    /// Bytes of the record's payload: the cache's measure of the entry and
    /// the cost of carrying it forward.
    pub record_bytes: usize,
    /// The entry, while the cache keeps it.
    pub cached: Option<Arc<C::Entry>>,
}

impl<C: RaftTypeConfig> Slot<C> {
    pub fn is_durable(&self) -> bool {
        self.position != 0
    }
}

#[derive(Debug)]
pub(super) struct GroupState<C: RaftTypeConfig> {
    /// The latest metadata: what the last state record written says, or
    /// will say once it is synced (`save_committed` does not wait).
    pub meta: GroupMeta<C::NodeId>,
    /// Position of the last state record known to be synced; 0: none.
    pub state_position: Position,
    /// The entries on disk that the group still serves or retains,
    /// consecutive by index.
    pub slots: VecDeque<Slot<C>>,
    /// Serializes the group's writes (its openraft handle, retention
    /// changes and carrying forward): what is queued for the group and what
    /// memory says of it change together. A tokio mutex because it is held
    /// while waiting for room in the log's queue.
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Whether a `GroupLog` (the one writer openraft may have) is open.
    pub handle_open: bool,
}

impl<C: RaftTypeConfig> Default for GroupState<C> {
    fn default() -> Self {
        GroupState {
            meta: GroupMeta::default(),
            state_position: 0,
            slots: VecDeque::new(),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            handle_open: false,
        }
    }
}

impl<C: RaftTypeConfig> GroupState<C> {
    pub fn first_index(&self) -> Option<u64> {
        self.slots.front().map(|slot| slot.log_id.index)
    }

    pub fn last_index(&self) -> Option<u64> {
        self.slots.back().map(|slot| slot.log_id.index)
    }

    pub fn slot(&self, index: u64) -> Option<&Slot<C>> {
        let offset = index.checked_sub(self.first_index()?)?;
        self.slots.get(usize::try_from(offset).ok()?)
    }

    pub fn slot_mut(&mut self, index: u64) -> Option<&mut Slot<C>> {
        let offset = index.checked_sub(self.first_index()?)?;
        self.slots.get_mut(usize::try_from(offset).ok()?)
    }

    /// The last log id openraft knows: the last entry, or the purge point
    /// when every entry is purged.
    pub fn last_log_id(&self) -> Option<LogId<C::NodeId>> {
        let last_entry = self.slots.back().map(|slot| slot.log_id.clone());
        std::cmp::max(last_entry, self.meta.purged.clone())
    }

    /// Index the next appended entry must have; `None`: any (the group
    /// holds nothing and has never purged).
    pub fn next_index(&self) -> Option<u64> {
        self.last_log_id().map(|log_id| log_id.index + 1)
    }

    /// Lowest index openraft may read: above the purge point.
    pub fn served_from(&self) -> u64 {
        self.meta
            .purged
            .as_ref()
            .map_or(0, |purged| purged.index + 1)
    }

    /// Lowest index the group still holds for a fallback read: above the
    /// lower of the purge point and the retention floor.
    pub fn retained_from(&self) -> u64 {
        self.meta.keep_after().map_or(0, |keep| keep + 1)
    }

    /// Removes the slots at and above `index` (a truncation).
    pub fn remove_from(&mut self, index: u64, cache: &mut CacheAccount) {
        while self.last_index().is_some_and(|last| last >= index) {
            let slot = self.slots.pop_back().expect("a last slot");
            cache.forget(&slot);
        }
    }

    /// Drops the slots that are neither served nor retained after a change
    /// of the purge point or the floor. When the purge point passed the
    /// last entry (a snapshot from the leader covered more than this log),
    /// retained entries could never be followed by the next appended one
    /// without a hole, so they go too: retention needs a log that reaches
    /// the purge point.
    pub fn drop_unkept(&mut self, cache: &mut CacheAccount) {
        let keep_after = self.meta.keep_after();
        let past_end = self.is_past_end(&self.meta);
        while let Some(first) = self.first_index() {
            let unkept = keep_after.is_some_and(|keep| first <= keep);
            if !unkept && !past_end {
                break;
            }
            let slot = self.slots.pop_front().expect("a first slot");
            cache.forget(&slot);
        }
    }

    /// Whether `meta`'s purge point lies beyond the last entry held, so
    /// that applying it drops every entry.
    pub fn is_past_end(&self, meta: &GroupMeta<C::NodeId>) -> bool {
        let purged_index = meta.purged.as_ref().map(|purged| purged.index);
        match (purged_index, self.last_index()) {
            (Some(purged), Some(last)) => purged > last,
            _ => false,
        }
    }

    /// Lowest log position the group needs to rebuild itself: its last
    /// synced state record and every synced entry it holds. `None`: it needs
    /// nothing on disk.
    pub fn needed_from(&self) -> Option<Position> {
        let state = (self.state_position != 0).then_some(self.state_position);
        let entries = self
            .slots
            .iter()
            .filter(|slot| slot.is_durable())
            .map(|slot| slot.position)
            .min();
        match (state, entries) {
            (Some(state), Some(entries)) => Some(state.min(entries)),
            (state, entries) => state.or(entries),
        }
    }
}

/// Bytes and entries the cache holds, and the order they came in.
#[derive(Debug)]
pub(super) struct CacheAccount {
    pub bytes: usize,
    pub entries: usize,
}

impl CacheAccount {
    fn forget<C: RaftTypeConfig>(&mut self, slot: &Slot<C>) {
        if slot.cached.is_some() {
            self.bytes -= slot.record_bytes;
            self.entries -= 1;
        }
    }
}

/// Every group, the cache's accounting, and the failure that stopped the
/// store.
#[derive(Debug)]
pub(super) struct Groups<C: RaftTypeConfig> {
    pub groups: HashMap<GroupId, GroupState<C>>,
    pub cache: CacheAccount,
    /// Cached entries in the order they were appended; evicted from the
    /// front. Items whose slot is gone or was replaced are stale and are
    /// skipped.
    pub cache_queue: VecDeque<(GroupId, LogId<C::NodeId>)>,
    /// Set by the first failed write; every later write is refused.
    pub failure: Option<String>,
}

impl<C: RaftTypeConfig> Groups<C> {
    pub fn new(groups: HashMap<GroupId, GroupState<C>>) -> Self {
        Groups {
            groups,
            cache: CacheAccount {
                bytes: 0,
                entries: 0,
            },
            cache_queue: VecDeque::new(),
            failure: None,
        }
    }

    pub fn group_mut(&mut self, group: GroupId) -> &mut GroupState<C> {
        self.groups.entry(group).or_default()
    }

    /// Appends slots for new entries, each cached.
    pub fn push_cached(&mut self, group: GroupId, slots: Vec<Slot<C>>) {
        let state = self.groups.entry(group).or_default();
        for slot in slots {
            debug_assert!(slot.cached.is_some());
            self.cache.bytes += slot.record_bytes;
            self.cache.entries += 1;
            self.cache_queue.push_back((group, slot.log_id.clone()));
            state.slots.push_back(slot);
        }
    }

    /// Drops cached entries, oldest first, until the cache is within
    /// `bytes_max`. An entry whose record is not synced yet stays (it could
    /// not be read back), and so does everything appended after it.
    pub fn evict(&mut self, bytes_max: usize) {
        while self.cache.bytes > bytes_max {
            let Some((group, log_id)) = self.cache_queue.front() else {
                break;
            };
            let slot = self
                .groups
                .get_mut(group)
                .and_then(|state| state.slot_mut(log_id.index))
                .filter(|slot| slot.log_id == *log_id && slot.cached.is_some());
            if let Some(slot) = slot {
                if !slot.is_durable() {
                    break;
                }
                slot.cached = None;
                self.cache.bytes -= slot.record_bytes;
                self.cache.entries -= 1;
            }
            self.cache_queue.pop_front();
        }
        if self.cache_queue.len() > 2 * self.cache.entries + CACHE_QUEUE_SLACK_ITEMS {
            self.sweep_cache_queue();
        }
    }

    fn sweep_cache_queue(&mut self) {
        let groups = &self.groups;
        self.cache_queue.retain(|(group, log_id)| {
            groups
                .get(group)
                .and_then(|state| state.slot(log_id.index))
                .is_some_and(|slot| slot.log_id == *log_id && slot.cached.is_some())
        });
        debug_assert_eq!(self.cache_queue.len(), self.cache.entries);
    }

    /// Removes a group and its cached entries.
    pub fn remove_group(&mut self, group: GroupId) {
        if let Some(mut state) = self.groups.remove(&group) {
            state.remove_from(0, &mut self.cache);
        }
    }
}
