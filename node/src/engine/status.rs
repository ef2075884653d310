//! What the engine reports about itself: sizes (`Engine::status`, which
//! asks every actor) and counters (`Engine::metrics`, atomics only).

use super::actors::{AggregateMessage, ShardMessage};
use super::supervisor::ActorKind;
use super::Engine;
use crate::limits;
use crate::metrics::{self, Registry};
use sessiondb_protocol::RejectCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters and sizes of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    pub shards: u32,
    pub projects: usize,
    pub live_visitors: u64,
    /// Events held inside the horizon; frozen ones are folded away.
    pub retained_events: u64,
    pub aggregate_cells: u64,
    pub events_accepted: u64,
    pub events_duplicate: u64,
    pub events_rejected: u64,
    pub now_ms: i64,
}

#[derive(Debug, Default)]
pub(super) struct EventCounters {
    pub(super) accepted: AtomicU64,
    pub(super) duplicate: AtomicU64,
    pub(super) rejected: AtomicU64,
    /// Rejected events by `RejectReason::code`.
    pub(super) rejections: std::sync::Mutex<std::collections::BTreeMap<RejectCode, u64>>,
    /// Ingest calls answered (one per batch).
    pub(super) batches: AtomicU64,
    /// Attribute values cut to `ATTRIBUTE_VALUE_BYTES_MAX` (`event`).
    pub(super) values_truncated: AtomicU64,
    /// Attributes beyond `ATTRIBUTES_MAX` dropped (`event`).
    pub(super) attributes_dropped: AtomicU64,
    /// Breakdown values folded into `(other)` (`cardinality`).
    pub(super) breakdown_values_folded: AtomicU64,
    pub(super) page_names_folded: AtomicU64,
    /// Results and time-series requests, timed by the HTTP layer.
    pub(super) query_seconds: crate::metrics::Histogram,
    /// The last checkpoint taken (`Engine::checkpoint`).
    pub(super) checkpoint_last_ns: AtomicU64,
    pub(super) checkpoint_last_bytes: AtomicU64,
    pub(super) checkpoint_last_position: AtomicU64,
}

/// What `/metrics` reports of the engine besides `EngineStatus`.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// Rejected events by reason code, sorted by code.
    pub rejections: Vec<(RejectCode, u64)>,
    /// What ingest changed in accepted events instead of rejecting them,
    /// by reason: `value_truncated`, `attribute_dropped`,
    /// `breakdown_value_folded`, `page_name_folded`.
    pub adjustments: [(&'static str, u64); 4],
    pub batches: u64,
    pub query_seconds: crate::metrics::HistogramSnapshot,
    /// Messages queued or being handled, summed over the shard actors.
    pub shard_queue_depth: u64,
    /// The same over the aggregate actors.
    pub aggregate_queue_depth: u64,
    /// The deepest single shard actor queue (a hot shard shows here
    /// before it shows in the sum).
    pub shard_queue_depth_max: u64,
    /// The deepest single aggregate actor queue.
    pub aggregate_queue_depth_max: u64,
    /// Actors that failed since start, by kind (`supervisor`).
    pub shard_actor_failures: u64,
    pub aggregate_actor_failures: u64,
    /// Records waiting in the log's group-commit backlog.
    pub log_queued_records: u64,
    /// The last checkpoint: duration, size, log position (0 before one).
    pub checkpoint_last: Duration,
    pub checkpoint_last_bytes: u64,
    pub checkpoint_last_position: u64,
    pub log: crate::log::LogStats,
    pub log_fsync_seconds: crate::metrics::HistogramSnapshot,
}

impl Engine {
    pub async fn status(&self) -> EngineStatus {
        let (mut live_visitors, mut retained_events) = (0_u64, 0_u64);
        let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
        for shard in &self.inner.shard_actors {
            let sizes = |reply| ShardMessage::Sizes { reply };
            if let Ok((visitors, events)) = shard.call(sizes, wait).await {
                live_visitors += visitors as u64;
                retained_events += events as u64;
            }
        }
        let mut aggregate_cells = 0_u64;
        for actor in self.inner.aggregate_actors.iter() {
            let count = |reply| AggregateMessage::CellCount { reply };
            if let Ok(count) = actor.call(count, wait).await {
                aggregate_cells += count as u64;
            }
        }
        let counters = &self.inner.counters;
        EngineStatus {
            shards: self.inner.config.shards,
            projects: self.inner.projects.len(),
            live_visitors,
            retained_events,
            aggregate_cells,
            events_accepted: counters.accepted.load(Ordering::Relaxed),
            events_duplicate: counters.duplicate.load(Ordering::Relaxed),
            events_rejected: counters.rejected.load(Ordering::Relaxed),
            now_ms: self.inner.clock.now_ms(),
        }
    }

    /// The engine's metrics (`docs/operations.md`, "Metrics reference"):
    /// ingest, the log, the actors, the stores, checkpoints, queries.
    /// `status` is this scrape's `Engine::status`.
    pub fn register_metrics(&self, registry: &mut Registry, status: &EngineStatus) {
        let engine = self.metrics();
        let outcomes = [
            ("accepted", status.events_accepted),
            ("duplicate", status.events_duplicate),
            ("rejected", status.events_rejected),
        ];
        metrics::labeled_counter(
            registry,
            "sessiondb_ingest_events_total",
            "Events answered by ingest, by outcome.",
            "outcome",
            outcomes.map(|(outcome, count)| (outcome.to_string(), count)),
        );
        metrics::labeled_counter(
            registry,
            "sessiondb_ingest_rejections_total",
            "Rejected events by reason code (docs/api.md); a code appears once it has occurred.",
            "reason",
            engine
                .rejections
                .iter()
                .map(|(code, count)| (code.to_string(), *count)),
        );
        metrics::labeled_counter(
            registry,
            "sessiondb_ingest_adjustments_total",
            "What ingest changed in accepted events instead of rejecting them, by reason (docs/ingest-formats.md).",
            "reason",
            engine
                .adjustments
                .iter()
                .map(|(reason, count)| (reason.to_string(), *count)),
        );
        metrics::counter(
            registry,
            "sessiondb_ingest_batches_total",
            "Ingest calls answered (one per batch or compatible-format request).",
            engine.batches,
        );
        register_log(registry, &engine);
        register_actors(registry, &engine);
        let sizes = [
            (
                "sessiondb_live_visitors",
                "Visitors held in memory by the session actors.",
                status.live_visitors,
            ),
            (
                "sessiondb_retained_events",
                "Events held inside the lateness horizon.",
                status.retained_events,
            ),
            (
                "sessiondb_segment_cells",
                "Aggregate cells held by the segment actors.",
                status.aggregate_cells,
            ),
            (
                "sessiondb_checkpoint_bytes",
                "Size of the last checkpoint (0 before the first).",
                engine.checkpoint_last_bytes,
            ),
            (
                "sessiondb_checkpoint_position",
                "Log position the last checkpoint covers (0 before the first).",
                engine.checkpoint_last_position,
            ),
        ];
        for (name, help, value) in sizes {
            metrics::gauge(
                registry,
                name,
                help,
                i64::try_from(value).unwrap_or(i64::MAX),
            );
        }
        let notes = self.recovery_notes();
        let storage = [
            (
                "sessiondb_storage_failed",
                "1 when the log failed (I/O error, full disk) and ingest is refused until a restart, else 0.",
                u64::from(self.storage_failure().is_some()),
            ),
            (
                "sessiondb_recovery_checkpoints_skipped",
                "Checkpoints the last start could not use (checksum or decoding failed) and fell back from.",
                notes.checkpoints_skipped.len() as u64,
            ),
            (
                "sessiondb_recovery_log_bytes_cut",
                "Bytes cut off a torn or damaged log tail at the last start.",
                notes.log_bytes_cut,
            ),
        ];
        for (name, help, value) in storage {
            metrics::gauge(
                registry,
                name,
                help,
                i64::try_from(value).unwrap_or(i64::MAX),
            );
        }
        metrics::gauge_f64(
            registry,
            "sessiondb_checkpoint_duration_seconds",
            "Duration of the last checkpoint (0 before the first).",
            engine.checkpoint_last.as_secs_f64(),
        );
        metrics::histogram(
            registry,
            "sessiondb_query_duration_seconds",
            "Duration of results and time-series requests, errors included.",
            &engine.query_seconds,
        );
    }

    /// Records how long a results or time-series request took.
    pub fn observe_query(&self, elapsed: Duration) {
        self.inner.counters.query_seconds.observe(elapsed);
    }

    /// Records the last checkpoint for `/metrics` (`durability`).
    pub(super) fn record_checkpoint(&self, elapsed: Duration, bytes: usize, position: u64) {
        let counters = &self.inner.counters;
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        counters.checkpoint_last_ns.store(nanos, Ordering::Relaxed);
        counters
            .checkpoint_last_bytes
            .store(bytes as u64, Ordering::Relaxed);
        counters
            .checkpoint_last_position
            .store(position, Ordering::Relaxed);
    }

    /// Counters for `/metrics`; reads atomics only, never waits on an actor.
    pub fn metrics(&self) -> EngineMetrics {
        let counters = &self.inner.counters;
        let capacity = limits::ACTOR_QUEUE_MESSAGES_MAX;
        let rejections = counters
            .rejections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(code, count)| (code.clone(), *count))
            .collect();
        let adjustments = [
            ("value_truncated", &counters.values_truncated),
            ("attribute_dropped", &counters.attributes_dropped),
            ("breakdown_value_folded", &counters.breakdown_values_folded),
            ("page_name_folded", &counters.page_names_folded),
        ]
        .map(|(reason, counter)| (reason, counter.load(Ordering::Relaxed)));
        EngineMetrics {
            rejections,
            adjustments,
            batches: counters.batches.load(Ordering::Relaxed),
            query_seconds: counters.query_seconds.snapshot(),
            shard_queue_depth: self
                .inner
                .shard_actors
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .sum(),
            aggregate_queue_depth: self
                .inner
                .aggregate_actors
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .sum(),
            shard_queue_depth_max: self
                .inner
                .shard_actors
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .max()
                .unwrap_or(0),
            aggregate_queue_depth_max: self
                .inner
                .aggregate_actors
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .max()
                .unwrap_or(0),
            shard_actor_failures: self.inner.health.failures(ActorKind::Shard),
            aggregate_actor_failures: self.inner.health.failures(ActorKind::Aggregate),
            log_queued_records: self.inner.storage.log.queued_records() as u64,
            checkpoint_last: Duration::from_nanos(
                counters.checkpoint_last_ns.load(Ordering::Relaxed),
            ),
            checkpoint_last_bytes: counters.checkpoint_last_bytes.load(Ordering::Relaxed),
            checkpoint_last_position: counters.checkpoint_last_position.load(Ordering::Relaxed),
            log: self.inner.storage.log.stats(),
            log_fsync_seconds: self.inner.storage.log.fsync_histogram(),
        }
    }
}

fn register_log(registry: &mut Registry, engine: &EngineMetrics) {
    metrics::counter(
        registry,
        "sessiondb_log_records_total",
        "Records written to the write-ahead log since the node started.",
        engine.log.records,
    );
    metrics::counter(
        registry,
        "sessiondb_log_fsyncs_total",
        "fdatasync calls on log record data since the node started.",
        engine.log.fsyncs,
    );
    metrics::histogram(
        registry,
        "sessiondb_log_fsync_seconds",
        "Duration of each fdatasync on log record data.",
        &engine.log_fsync_seconds,
    );
    metrics::gauge(
        registry,
        "sessiondb_log_group_records_max",
        "Most records committed under one fsync since the node started.",
        i64::try_from(engine.log.group_records_max).unwrap_or(i64::MAX),
    );
    metrics::gauge(
        registry,
        "sessiondb_log_queued_records",
        "Records waiting in the log's group-commit backlog.",
        i64::try_from(engine.log_queued_records).unwrap_or(i64::MAX),
    );
}

/// The actors' queues and failures, labelled `session` (shard actors) and
/// `segment` (aggregate actors), the names the metrics were published with.
fn register_actors(registry: &mut Registry, engine: &EngineMetrics) {
    let level = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let by_kind = |shard: u64, aggregate: u64| {
        [
            (ActorKind::Shard.label().to_string(), level(shard)),
            (ActorKind::Aggregate.label().to_string(), level(aggregate)),
        ]
    };
    metrics::labeled_gauge(
        registry,
        "sessiondb_actor_queue_depth",
        "Messages queued or being handled, summed over the actors of a kind.",
        "actor",
        by_kind(engine.shard_queue_depth, engine.aggregate_queue_depth),
    );
    metrics::labeled_gauge(
        registry,
        "sessiondb_actor_queue_depth_max",
        "Messages queued or being handled at the single deepest actor of a kind.",
        "actor",
        by_kind(
            engine.shard_queue_depth_max,
            engine.aggregate_queue_depth_max,
        ),
    );
    metrics::labeled_counter(
        registry,
        "sessiondb_actor_failures_total",
        "Actors that failed (panicked or stopped) since the node started; after one the node stops (docs/operations.md, Actor failures).",
        "actor",
        [
            (ActorKind::Shard.label().to_string(), engine.shard_actor_failures),
            (ActorKind::Aggregate.label().to_string(), engine.aggregate_actor_failures),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::super::testing::{pageview, TestEngine};

    #[tokio::test]
    async fn status_counts_what_the_actors_hold_and_metrics_the_refusals() {
        let node = TestEngine::open("status").await.with_project().await;
        let empty = node.engine.status().await;
        assert_eq!((empty.live_visitors, empty.retained_events), (0, 0));
        assert_eq!(empty.projects, 1);
        node.send(&[
            pageview("e-1", "v-1", 5),
            pageview("e-2", "v-1", 4),
            pageview("e-3", "v-2", 3),
            pageview("", "v-3", 3),
        ])
        .await;
        let status = node.engine.status().await;
        assert_eq!((status.live_visitors, status.retained_events), (2, 3));
        assert_eq!(status.events_accepted, 3);
        let metrics = node.engine.metrics();
        assert_eq!(
            metrics.rejections,
            vec![(sessiondb_protocol::RejectCode::EmptyId, 1)]
        );
        assert!(metrics.batches >= 1);
        assert_eq!(metrics.shard_queue_depth_max, 0);
    }
}
