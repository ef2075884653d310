//! Opening: replay every record of the shared log in order and rebuild each
//! group's entries (as locations, not payloads), metadata and needs.
//!
//! The rules, applied per group in log order:
//!
//! - an entry record adds its entry; the group must not hold that index or
//!   any above it (openraft truncates before it appends over a conflict, and
//!   the truncation record comes first);
//! - a copy record moves an entry it holds to the copy, or adds it when the
//!   original is in a deleted file (copies are only made of entries the
//!   group held at that point of the log, so this never revives a removed
//!   one);
//! - a truncation removes the entries at and above its index;
//! - a state record replaces the metadata, then drops the entries neither
//!   served nor retained (below the purge point and the floor); a purge
//!   past the last entry, which in memory drops every entry, is preceded
//!   by a truncation at 0 — replay cannot decide it from the entries it
//!   holds, since copies carried forward come after the records around
//!   them;
//! - a forget record removes the group.
//!
//! At the end every group's entries must be consecutive and reach down to
//! the purge point; anything else is `Inconsistent`, never repaired.

use super::record::{self, GroupMeta, Header};
use super::state::{GroupState, Slot};
use super::{GroupId, ReplicatedLogError};
use crate::log::{Log, Position, Record};
use openraft::{LogId, NodeId, RaftTypeConfig};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// What `ReplicatedLog::open` starts from.
#[derive(Debug)]
pub(super) struct Recovered<C: RaftTypeConfig> {
    pub groups: HashMap<GroupId, GroupState<C>>,
    pub records: u64,
}

#[derive(Debug, Clone)]
struct Located<NID: NodeId> {
    log_id: LogId<NID>,
    position: Position,
    offset: u64,
    record_bytes: usize,
}

#[derive(Debug)]
struct Recovering<NID: NodeId> {
    entries: BTreeMap<u64, Located<NID>>,
    meta: GroupMeta<NID>,
    state_position: Position,
}

impl<NID: NodeId> Default for Recovering<NID> {
    fn default() -> Self {
        Recovering {
            entries: BTreeMap::new(),
            meta: GroupMeta::default(),
            state_position: 0,
        }
    }
}

pub(super) fn recover<C: RaftTypeConfig>(log: &Log) -> Result<Recovered<C>, ReplicatedLogError> {
    let first_position = log
        .segment_first_positions()
        .first()
        .copied()
        .expect("a log always has its active segment");
    let mut replay = log.replay_after(first_position - 1)?;
    let mut groups: HashMap<GroupId, Recovering<C::NodeId>> = HashMap::new();
    let mut records = 0u64;
    while let Some(record) = replay.next() {
        let record = record?;
        let offset = replay.last_offset().expect("set for every yielded record");
        apply(&mut groups, &record, offset)?;
        records += 1;
    }
    let groups = groups
        .into_iter()
        .map(|(group, recovering)| Ok((group, finish::<C>(group, recovering)?)))
        .collect::<Result<_, ReplicatedLogError>>()?;
    Ok(Recovered { groups, records })
}

fn apply<NID: NodeId>(
    groups: &mut HashMap<GroupId, Recovering<NID>>,
    record: &Record,
    offset: u64,
) -> Result<(), ReplicatedLogError> {
    let group = record.shard;
    let position = record.position;
    let header = record::decode_header::<NID>(&record.payload).map_err(|source| {
        ReplicatedLogError::BadRecord {
            group,
            position,
            source,
        }
    })?;
    let inconsistent = |reason: String| ReplicatedLogError::Inconsistent {
        group,
        position,
        reason,
    };
    match header {
        Header::Entry { log_id, copy } => {
            let state = groups.entry(group).or_default();
            let located = Located {
                log_id,
                position,
                offset,
                record_bytes: record.payload.len(),
            };
            if copy {
                state.add_copy(located).map_err(inconsistent)
            } else {
                state.add_entry(located).map_err(inconsistent)
            }
        }
        Header::Truncate { index } => {
            let state = groups.entry(group).or_default();
            state.entries.split_off(&index);
            Ok(())
        }
        Header::State(meta) => {
            let state = groups.entry(group).or_default();
            state.meta = meta;
            state.state_position = position;
            state.drop_unkept();
            Ok(())
        }
        Header::Forget => {
            groups.remove(&group);
            Ok(())
        }
    }
}

impl<NID: NodeId> Recovering<NID> {
    fn add_entry(&mut self, located: Located<NID>) -> Result<(), String> {
        let index = located.log_id.index;
        if let Some((last, _)) = self.entries.last_key_value() {
            if *last >= index {
                return Err(format!(
                    "entry {index} appended while the group holds entries up to {last}"
                ));
            }
        }
        if let Some(keep) = self.meta.keep_after() {
            if index <= keep {
                return Err(format!(
                    "entry {index} appended at or below the purge point {keep}"
                ));
            }
        }
        self.entries.insert(index, located);
        Ok(())
    }

    fn add_copy(&mut self, located: Located<NID>) -> Result<(), String> {
        let index = located.log_id.index;
        if self.meta.keep_after().is_some_and(|keep| index <= keep) {
            return Ok(());
        }
        match self.entries.get(&index) {
            Some(held) if held.log_id != located.log_id => Err(format!(
                "copy of entry {} while the group holds {}",
                located.log_id, held.log_id
            )),
            _ => {
                self.entries.insert(index, located);
                Ok(())
            }
        }
    }

    /// The in-memory rule of `GroupState::drop_unkept` below the purge
    /// point and the floor (the past-the-end case is a truncation record).
    fn drop_unkept(&mut self) {
        if let Some(keep) = self.meta.keep_after() {
            self.entries = self.entries.split_off(&(keep + 1));
        }
    }
}

fn finish<C: RaftTypeConfig>(
    group: GroupId,
    recovering: Recovering<C::NodeId>,
) -> Result<GroupState<C>, ReplicatedLogError> {
    let inconsistent = |position: Position, reason: String| ReplicatedLogError::Inconsistent {
        group,
        position,
        reason,
    };
    let mut slots = VecDeque::with_capacity(recovering.entries.len());
    for (index, located) in recovering.entries {
        if let Some(previous) = slots.back().map(|slot: &Slot<C>| slot.log_id.index) {
            if index != previous + 1 {
                return Err(inconsistent(
                    located.position,
                    format!("entries {previous} and {index} with nothing between"),
                ));
            }
        }
        slots.push_back(Slot {
            log_id: located.log_id,
            position: located.position,
            offset: located.offset,
            record_bytes: located.record_bytes,
            cached: None,
        });
    }
    if let (Some(first), Some(purged)) = (slots.front(), recovering.meta.purged.as_ref()) {
        if first.log_id.index > purged.index + 1 {
            let first_index = first.log_id.index;
            return Err(inconsistent(
                first.position,
                format!(
                    "the first entry is {first_index} but the purge point is {}",
                    purged.index
                ),
            ));
        }
    }
    Ok(GroupState {
        meta: recovering.meta,
        state_position: recovering.state_position,
        slots,
        ..GroupState::default()
    })
}
