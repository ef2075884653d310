//! Freeing disk: delete the oldest files of the shared log once no group
//! needs a record in them, after carrying the needed records of small
//! groups forward.
//!
//! Why carry forward: the files are shared, so one idle group's old vote or
//! few entries would otherwise keep every later file of every group on
//! disk. Why a bound: a group that holds a long log (a follower not yet
//! purged, a large retention) would be copied again at every reclaim; it
//! pins the files instead, and is reported so that its checkpoint and purge
//! can catch up.
//!
//! Safety: a carried record is written and synced before the original can
//! go, and the file deletion takes the deletion lock alone, so no reader
//! holds a location in a file being deleted.

use super::log_store::{encode_state, GroupTypes, Shared, Synced};
use super::record::{self, Header};
use super::{GroupId, ReclaimReport, ReplicatedLogError};
use crate::log::{Position, RecordReader};
use openraft::LogId;
use std::sync::{Arc, PoisonError};

/// An entry record to write again: its log id, where it is now, and its
/// bytes as a copy record.
type Carried<NID> = (LogId<NID>, Position, Vec<u8>);

/// One group's records in the files that `reclaim` wants to delete.
#[derive(Debug)]
struct Needs<NID: openraft::NodeId> {
    group: GroupId,
    /// Its last state record, if that is in those files.
    state: Option<Position>,
    /// Its entries there: log id, position, offset.
    entries: Vec<(LogId<NID>, Position, u64)>,
    /// Encoded bytes of those entries.
    entry_bytes: usize,
}

impl<NID: openraft::NodeId> Needs<NID> {
    fn lowest_position(&self) -> Option<Position> {
        let entries = self.entries.iter().map(|(_, position, _)| *position).min();
        match (self.state, entries) {
            (Some(state), Some(entries)) => Some(state.min(entries)),
            (state, entries) => state.or(entries),
        }
    }
}

impl<C: GroupTypes> Shared<C> {
    pub(super) async fn reclaim(self: Arc<Self>) -> Result<ReclaimReport, ReplicatedLogError> {
        let _one_at_a_time = self.reclaiming.lock().await;
        self.check_failure()?;
        let segments = self.log.segment_first_positions();
        let mut report = ReclaimReport::default();
        let Some(&active_first) = segments.last() else {
            return Ok(report);
        };
        if segments.len() < 2 {
            return Ok(report);
        }
        let needs = self.needs_below(active_first);
        let target = self.choose_target(&segments, active_first, &needs, &mut report);
        for group_needs in &needs {
            if report.pinned_groups.contains(&group_needs.group) {
                continue;
            }
            if group_needs
                .lowest_position()
                .is_some_and(|lowest| lowest < target)
            {
                self.carry_forward(group_needs.group, target, &mut report)
                    .await?;
            }
        }
        self.delete_unneeded(active_first, &mut report).await?;
        Ok(report)
    }

    /// Every group's records below `limit`.
    fn needs_below(&self, limit: Position) -> Vec<Needs<C::NodeId>> {
        let groups = self.lock();
        let mut needs: Vec<Needs<C::NodeId>> = groups
            .groups
            .iter()
            .map(|(group, state)| {
                let entries: Vec<(LogId<C::NodeId>, Position, u64)> = state
                    .slots
                    .iter()
                    .filter(|slot| slot.is_durable() && slot.position < limit)
                    .map(|slot| (slot.log_id.clone(), slot.position, slot.offset))
                    .collect();
                let entry_bytes = state
                    .slots
                    .iter()
                    .filter(|slot| slot.is_durable() && slot.position < limit)
                    .map(|slot| slot.record_bytes)
                    .sum();
                let state_record = (state.state_position != 0 && state.state_position < limit)
                    .then_some(state.state_position);
                Needs {
                    group: *group,
                    state: state_record,
                    entries,
                    entry_bytes,
                }
            })
            .filter(|needs| needs.lowest_position().is_some())
            .collect();
        needs.sort_by_key(|needs| needs.group);
        needs
    }

    /// The position below which everything is to be freed: the active
    /// file's start, or the start of the file holding a pinned group's
    /// oldest needed record. Records the pinned groups.
    fn choose_target(
        &self,
        segments: &[Position],
        active_first: Position,
        needs: &[Needs<C::NodeId>],
        report: &mut ReclaimReport,
    ) -> Position {
        let bytes_max = self.config.carry_forward_bytes_max;
        let mut target = active_first;
        for group_needs in needs {
            if group_needs.entry_bytes <= bytes_max {
                continue;
            }
            report.pinned_groups.push(group_needs.group);
            let lowest = group_needs
                .lowest_position()
                .expect("only groups with needs are listed");
            let file_start = segments
                .iter()
                .rev()
                .find(|first| **first <= lowest)
                .copied()
                .unwrap_or(lowest);
            target = target.min(file_start);
        }
        if !report.pinned_groups.is_empty() {
            tracing::warn!(
                groups = ?report.pinned_groups,
                bytes_max,
                "replicated log: groups hold too much in old files to carry forward; they keep them"
            );
        }
        target
    }

    /// Writes `group`'s records below `target` again at the head of the
    /// log (entries as copies, the state record as a new one) and waits
    /// for their fsync.
    async fn carry_forward(
        self: &Arc<Self>,
        group: GroupId,
        target: Position,
        report: &mut ReclaimReport,
    ) -> Result<(), ReplicatedLogError> {
        // Read outside the group's write lock, so its appends go on; what
        // changed meanwhile is left out below.
        let wanted: Vec<(LogId<C::NodeId>, Position, u64)> = self
            .needs_below(target)
            .into_iter()
            .find(|needs| needs.group == group)
            .map(|needs| needs.entries)
            .unwrap_or_default();
        let copies = self.read_copies(group, &wanted)?;

        let _write = self.lock_group(group).await;
        self.check_failure()?;
        let mut records = Vec::with_capacity(copies.len() + 1);
        let mut states = 0;
        {
            let groups = self.lock();
            let Some(state) = groups.groups.get(&group) else {
                return Ok(());
            };
            for (log_id, from, bytes) in copies {
                let unchanged = state
                    .slot(log_id.index)
                    .is_some_and(|slot| slot.log_id == log_id && slot.position == from);
                if unchanged {
                    records.push((bytes, Synced::Copy { log_id, from }));
                }
            }
            if state.state_position != 0 && state.state_position < target {
                let payload = encode_state(group, &state.meta)?;
                records.push((payload, Synced::State));
                states = 1;
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let entries = (records.len() - states) as u64;
        self.write_and_wait(group, records).await?;
        report.entries_carried += entries;
        report.states_carried += states as u64;
        Ok(())
    }

    /// The entry records at `wanted`, turned into copies (same bytes, kind
    /// changed), each checked to be the entry it should be.
    fn read_copies(
        &self,
        group: GroupId,
        wanted: &[(LogId<C::NodeId>, Position, u64)],
    ) -> Result<Vec<Carried<C::NodeId>>, ReplicatedLogError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let _no_deletion = self.deletion.read().unwrap_or_else(PoisonError::into_inner);
        let mut reader: RecordReader = self.log.record_reader();
        wanted
            .iter()
            .map(|(log_id, position, offset)| {
                let record = reader.read_at(*position, *offset)?;
                let header = record::decode_header::<C::NodeId>(&record.payload);
                let is_entry = matches!(
                    &header,
                    Ok(Header::Entry { log_id: found, .. }) if found == log_id
                );
                if record.shard != group || !is_entry {
                    return Err(ReplicatedLogError::WrongRecord {
                        group,
                        index: log_id.index,
                        position: *position,
                        reason: format!(
                            "group {} record {header:?} where a carried entry was expected",
                            record.shard
                        ),
                    });
                }
                Ok((log_id.clone(), *position, record::into_copy(record.payload)))
            })
            .collect()
    }

    /// Deletes the files below every group's oldest needed record (never
    /// the active one).
    async fn delete_unneeded(
        self: &Arc<Self>,
        active_first: Position,
        report: &mut ReclaimReport,
    ) -> Result<(), ReplicatedLogError> {
        let needed_from = self
            .lock()
            .groups
            .values()
            .filter_map(|state| state.needed_from())
            .min()
            .unwrap_or(active_first);
        let limit = needed_from.min(active_first);
        let shared = Arc::clone(self);
        let truncated = tokio::task::spawn_blocking(move || {
            let _exclusive = shared
                .deletion
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            shared.log.truncate_before(limit)
        })
        .await
        .map_err(|source| ReplicatedLogError::TaskStopped {
            task: "file deletion",
            source,
        })??;
        report.segments_removed = truncated.segments_removed;
        report.bytes_removed = truncated.bytes_removed;
        Ok(())
    }
}
