//! The ingest sequencer: how a batch of validated events becomes log
//! records and shard messages, in one order (`docs/architecture.md`,
//! "Log order is apply order").
//!
//! `Engine::ingest` routes each event to its shard, refuses those of shards
//! this node does not own, and under the sequencer lock checks ownership
//! again, reserves room in every touched shard actor's mailbox, writes one
//! log record per shard and queues the shard messages; then it waits for
//! the log's sync and the shards' answers. A shard applies a record only
//! once the log says it is durable.

use super::actors::ShardMessage;
use super::handoff::{apply_wait, ShardRole};
use super::mailbox::CallError;
use super::shard::Outcome;
use super::{durability, Engine};
use crate::event::{self, RejectReason, VisitorEvent};
use crate::hashing;
use sessiondb_protocol::RejectCode;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

/// Per shard: the indexes of its events in the batch, and the events.
type PerShard = std::collections::BTreeMap<u32, (Vec<usize>, Vec<VisitorEvent>)>;

/// Why a whole ingest call failed (per-event reasons are `Outcome`s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("the log cannot take writes: {cause}; nothing of this batch was acknowledged, retry on a healthy node")]
    Storage { cause: String },
    #[error("the node is overloaded: no room in the ingest queues (shard queues or the log's group-commit backlog) within {wait_ms} ms; nothing of this batch was applied, retry later")]
    Overloaded { wait_ms: u64 },
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl Engine {
    /// Validates one wire event at the node's current time, counting what
    /// validation changed in its attributes.
    pub fn validate(&self, event: sessiondb_protocol::Event) -> Result<VisitorEvent, RejectReason> {
        let mut adjustments = event::AttributeAdjustments::default();
        let now_ms = self.inner.clock.now_ms();
        let event = event::validate_adjusting(event, self.inner.as_ref(), now_ms, &mut adjustments);
        let counters = &self.inner.counters;
        if adjustments.values_truncated > 0 {
            counters
                .values_truncated
                .fetch_add(adjustments.values_truncated, Ordering::Relaxed);
        }
        if adjustments.attributes_dropped > 0 {
            counters
                .attributes_dropped
                .fetch_add(adjustments.attributes_dropped, Ordering::Relaxed);
        }
        event
    }

    /// The cardinality limits' name sets (`cardinality`).
    pub(super) fn names(&self) -> std::sync::MutexGuard<'_, super::cardinality::NameSets> {
        self.inner
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies validated events (rejections pass through at their index)
    /// and answers one outcome per input, in order. The events are on disk
    /// before any is applied; if the log cannot take them, nothing is
    /// applied and the whole call fails.
    pub async fn ingest(
        &self,
        events: Vec<Result<VisitorEvent, RejectReason>>,
    ) -> Result<Vec<Outcome>, IngestError> {
        let now_ms = self.inner.clock.now_ms();
        let (mut outcomes, per_shard) = self.route(events);
        if !per_shard.is_empty() {
            let answers = self.submit(now_ms, per_shard).await?;
            for (indexes, shard_outcomes) in answers {
                for (index, outcome) in indexes.into_iter().zip(shard_outcomes) {
                    outcomes[index] = outcome;
                }
            }
        }
        self.count(&outcomes);
        Ok(outcomes)
    }

    /// Groups events by shard, refuses those for shards this node does not
    /// own and holds the others to the cardinality limits (rejections pass
    /// through at their index). The limits are applied here, before the
    /// events are logged, so the log holds what was decided and replay
    /// never decides again (`cardinality`).
    fn route(&self, events: Vec<Result<VisitorEvent, RejectReason>>) -> (Vec<Outcome>, PerShard) {
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(events.len());
        let mut per_shard: std::collections::BTreeMap<u32, (Vec<usize>, Vec<VisitorEvent>)> =
            std::collections::BTreeMap::new();
        let roles = self
            .inner
            .roles
            .read()
            .expect("roles lock is never poisoned");
        let mut names = self.names();
        let mut folded = 0;
        let mut page_names_folded = 0;
        for (index, event) in events.into_iter().enumerate() {
            match event {
                Err(reason) => outcomes.push(Outcome::Rejected(reason)),
                Ok(mut event) => {
                    let shard = hashing::shard_of(
                        &event.project.name,
                        &event.visitor,
                        self.inner.config.shards,
                    );
                    if let Some(reason) = refusal(shard, &roles[shard as usize]) {
                        outcomes.push(Outcome::Rejected(reason));
                        continue;
                    }
                    match names.admit(&event.project.name, &mut event.event) {
                        Ok(count) => {
                            folded += count.breakdown_values;
                            page_names_folded += u64::from(count.page_name);
                        }
                        Err(reason) => {
                            outcomes.push(Outcome::Rejected(reason));
                            continue;
                        }
                    }
                    outcomes.push(Outcome::Accepted);
                    let group = per_shard.entry(shard).or_default();
                    group.0.push(index);
                    group.1.push(event);
                }
            }
        }
        if folded > 0 {
            self.inner
                .counters
                .breakdown_values_folded
                .fetch_add(folded, Ordering::Relaxed);
        }
        if page_names_folded > 0 {
            self.inner
                .counters
                .page_names_folded
                .fetch_add(page_names_folded, Ordering::Relaxed);
        }
        (outcomes, per_shard)
    }

    /// Logs one record per shard and queues the shards' messages in log
    /// order; then waits for the sync and the shards' answers.
    async fn submit(
        &self,
        now_ms: i64,
        mut per_shard: std::collections::BTreeMap<u32, (Vec<usize>, Vec<VisitorEvent>)>,
    ) -> Result<Vec<(Vec<usize>, Vec<Outcome>)>, IngestError> {
        let wait_ms = self.inner.config.ingest_queue_wait_ms;
        let overloaded = || IngestError::Overloaded { wait_ms };
        // One budget for every wait below: an overloaded node answers
        // within it instead of queueing callers without bound.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut records: Vec<(u32, Vec<u8>)> = per_shard
            .iter()
            .map(|(shard, (_, events))| (*shard, durability::encode_events(now_ms, events)))
            .collect();
        let mut waiting = Vec::with_capacity(per_shard.len());
        let mut durable_senders = Vec::with_capacity(per_shard.len());
        let refused;
        let pending = {
            let _order = tokio::time::timeout_at(deadline, self.inner.sequencer.lock())
                .await
                .map_err(|_| overloaded())?;
            // A node whose actor failed takes nothing more: it is stopping
            // (`supervisor`), and its state may miss what it acknowledged.
            if self.inner.health.failure().is_some() {
                return Err(IngestError::ShuttingDown);
            }
            // Ownership again, now in log order: a shard fenced or handed
            // over (both under the sequencer) since `route` looked must not
            // take the batch — the export's copy would miss it and the drop
            // would erase it after the acknowledgement.
            refused = self.refuse_moved(&mut per_shard, &mut records);
            if per_shard.is_empty() {
                return Ok(refused);
            }
            // Room first, log second: a record in the log must never meet a
            // full queue (it would be applied after a restart but not now).
            let mut reservations = Vec::with_capacity(per_shard.len());
            for shard in per_shard.keys() {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                let reservation = self.inner.shard_actors[*shard as usize]
                    .reserve_within(remaining)
                    .await
                    .map_err(|_| overloaded())?;
                reservations.push(reservation);
            }
            // Waiting for the log's queue is cancel-safe: the batch is only
            // handed to the writer after its room is taken.
            let pending =
                tokio::time::timeout_at(deadline, self.inner.storage.log.enqueue_batch(records))
                    .await
                    .map_err(|_| overloaded())?
                    .map_err(|error| IngestError::Storage {
                        cause: error.to_string(),
                    })?;
            for (reservation, (_, (indexes, events))) in reservations.into_iter().zip(per_shard) {
                // The shard applies the record once this says it is on disk.
                let (durable_sender, durable) = oneshot::channel();
                let message = |reply| ShardMessage::Ingest {
                    events,
                    now_ms,
                    durable: Some(durable),
                    reply,
                };
                if let Ok(answer) = reservation.request(message, apply_wait()) {
                    durable_senders.push(durable_sender);
                    waiting.push((indexes, answer));
                }
            }
            pending
        };
        let synced = pending
            .durable()
            .await
            .map(|_| ())
            .map_err(|error| error.to_string());
        for sender in durable_senders {
            let _ = sender.send(synced.clone());
        }
        if let Err(cause) = synced {
            return Err(IngestError::Storage { cause });
        }
        let mut answers = refused;
        answers.reserve(waiting.len());
        for (indexes, answer) in waiting {
            // The record is durable, so the shard will apply it; its answer
            // only reports duplicates and late rejections.
            let outcomes = answer.answer().await.map_err(|error| match error {
                CallError::TimedOut { waited_ms } => IngestError::Overloaded { wait_ms: waited_ms },
                _ => IngestError::ShuttingDown,
            })?;
            answers.push((indexes, outcomes));
        }
        Ok(answers)
    }

    /// Takes the shards this node no longer accepts out of `per_shard` and
    /// `records` (same order) and answers their refusals. The caller holds
    /// the sequencer.
    fn refuse_moved(
        &self,
        per_shard: &mut std::collections::BTreeMap<u32, (Vec<usize>, Vec<VisitorEvent>)>,
        records: &mut Vec<(u32, Vec<u8>)>,
    ) -> Vec<(Vec<usize>, Vec<Outcome>)> {
        let roles = self
            .inner
            .roles
            .read()
            .expect("roles lock is never poisoned");
        let moved: Vec<(u32, RejectReason)> = per_shard
            .keys()
            .filter_map(|shard| Some((*shard, refusal(*shard, &roles[*shard as usize])?)))
            .collect();
        drop(roles);
        records.retain(|(shard, _)| !moved.iter().any(|(other, _)| other == shard));
        moved
            .into_iter()
            .filter_map(|(shard, reason)| {
                let (indexes, _) = per_shard.remove(&shard)?;
                let outcomes = vec![Outcome::Rejected(reason); indexes.len()];
                Some((indexes, outcomes))
            })
            .collect()
    }

    fn count(&self, outcomes: &[Outcome]) {
        let counters = &self.inner.counters;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let mut reasons: Vec<RejectCode> = Vec::new();
        for outcome in outcomes {
            let counter = match outcome {
                Outcome::Accepted => &counters.accepted,
                Outcome::Duplicate => &counters.duplicate,
                Outcome::Rejected(reason) => {
                    reasons.push(reason.code());
                    &counters.rejected
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if !reasons.is_empty() {
            let mut rejections = counters
                .rejections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for code in reasons {
                *rejections.entry(code).or_default() += 1;
            }
        }
    }
}

/// Why this node refuses an event for `shard`, if it does.
fn refusal(shard: u32, role: &ShardRole) -> Option<RejectReason> {
    match *role {
        ShardRole::Owner { .. } => None,
        ShardRole::Fenced { epoch } => Some(RejectReason::ShardMoving { shard, epoch }),
        ShardRole::Elsewhere { owner, epoch } => Some(RejectReason::NotOwner {
            shard,
            owner,
            epoch,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{exposure, pageview, TestEngine, PROJECT, SHARDS};
    use super::*;
    use crate::log::{FaultPlan, LogConfig};
    use std::sync::Arc;

    #[tokio::test]
    async fn outcomes_keep_their_places_and_duplicates_are_told_apart() {
        let node = TestEngine::open("ingest-outcomes")
            .await
            .with_project()
            .await;
        let batch = [
            pageview("e-1", "v-1", 5),
            pageview("", "v-2", 5),
            pageview("e-1", "v-1", 5),
            exposure("e-2", "v-2", "checkout", "a"),
        ];
        let outcomes = node.send(&batch).await;
        assert_eq!(outcomes.len(), 4);
        assert_eq!(outcomes[0], Outcome::Accepted);
        assert_eq!(outcomes[1], Outcome::Rejected(RejectReason::EmptyId));
        assert_eq!(outcomes[2], Outcome::Duplicate);
        assert_eq!(outcomes[3], Outcome::Accepted);
        // Sent again, every valid event is a duplicate.
        let again = node.send(&[pageview("e-1", "v-1", 5)]).await;
        assert_eq!(again, vec![Outcome::Duplicate]);
        let status = node.engine.status().await;
        assert_eq!(
            (
                status.events_accepted,
                status.events_duplicate,
                status.events_rejected
            ),
            (2, 2, 1)
        );
    }

    #[tokio::test]
    async fn events_of_shards_owned_elsewhere_or_moving_are_refused_whole() {
        let node = TestEngine::open("ingest-roles").await.with_project().await;
        let event = pageview("e-1", "v-1", 5);
        let shard = hashing::shard_of(PROJECT, "v-1", SHARDS);
        let elsewhere = ShardRole::Elsewhere { owner: 7, epoch: 3 };
        node.engine
            .set_shard_role(shard, elsewhere)
            .expect("a shard");
        assert_eq!(
            node.send(std::slice::from_ref(&event)).await,
            vec![Outcome::Rejected(RejectReason::NotOwner {
                shard,
                owner: 7,
                epoch: 3
            })]
        );
        let fenced = ShardRole::Fenced { epoch: 3 };
        node.engine.set_shard_role(shard, fenced).expect("a shard");
        assert_eq!(
            node.send(std::slice::from_ref(&event)).await,
            vec![Outcome::Rejected(RejectReason::ShardMoving {
                shard,
                epoch: 3
            })]
        );
        // Nothing of a refused event was applied: owning the shard again,
        // the event is new.
        node.engine
            .set_shard_role(shard, ShardRole::Owner { epoch: 4 })
            .expect("a shard");
        assert_eq!(node.send(&[event]).await, vec![Outcome::Accepted]);
    }

    #[tokio::test]
    async fn a_log_that_cannot_sync_fails_the_whole_batch() {
        let plan = Arc::new(FaultPlan::new());
        let log = LogConfig {
            fault: Some(Arc::clone(&plan)),
            ..LogConfig::default()
        };
        let node = TestEngine::open_with("ingest-storage", log)
            .await
            .with_project()
            .await;
        plan.fail_sync_after(0);
        let event = node.engine.validate(pageview("e-1", "v-1", 5));
        let error = node.engine.ingest(vec![event]).await.unwrap_err();
        assert!(matches!(error, IngestError::Storage { .. }), "{error}");
        assert_eq!(node.engine.status().await.live_visitors, 0);
    }
}
