//! What the engine reports about itself: sizes (`Engine::status`, which
//! asks every actor) and counters (`Engine::metrics`, atomics only).

use super::actors::{AggregateMessage, ShardMessage};
use super::Engine;
use crate::limits;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// Counters and sizes of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    pub shards: u32,
    pub projects: usize,
    pub live_visitors: u64,
    /// Events held inside the horizon; frozen ones are folded away.
    pub retained_events: u64,
    pub segment_cells: u64,
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
    pub(super) rejections: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Ingest calls answered (one per batch).
    pub(super) batches: AtomicU64,
    /// Results and time-series requests, timed by the HTTP layer.
    pub(super) query_seconds: crate::metrics::Histogram,
    /// The last checkpoint taken (`Engine::checkpoint`).
    pub(super) checkpoint_last_ns: AtomicU64,
    pub(super) checkpoint_last_bytes: AtomicU64,
    pub(super) checkpoint_last_position: AtomicU64,
}

/// What `/metrics` reports of the engine besides `EngineStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineMetrics {
    /// Rejected events by reason code, sorted by code.
    pub rejections: Vec<(&'static str, u64)>,
    pub batches: u64,
    pub query_seconds: crate::metrics::HistogramSnapshot,
    /// Messages queued or being handled, summed over the session actors.
    pub session_queue_depth: u64,
    /// The same over the segment actors.
    pub segment_queue_depth: u64,
    /// The deepest single session actor queue (a hot shard shows here
    /// before it shows in the sum).
    pub session_queue_depth_max: u64,
    /// The deepest single segment actor queue.
    pub segment_queue_depth_max: u64,
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
        for session in &self.inner.shard_actors {
            let (reply, answer) = oneshot::channel();
            let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
            if session
                .send_within(ShardMessage::Sizes { reply }, wait)
                .await
                .is_ok()
            {
                let (visitors, events) = answer.await.unwrap_or((0, 0));
                live_visitors += visitors as u64;
                retained_events += events as u64;
            }
        }
        let mut segment_cells = 0_u64;
        for segment in self.inner.aggregate_actors.iter() {
            let (reply, answer) = oneshot::channel();
            if let Ok(count) = self
                .ask(segment, AggregateMessage::CellCount { reply }, answer)
                .await
            {
                segment_cells += count as u64;
            }
        }
        let counters = &self.inner.counters;
        EngineStatus {
            shards: self.inner.config.shards,
            projects: self.inner.projects.len(),
            live_visitors,
            retained_events,
            segment_cells,
            events_accepted: counters.accepted.load(Ordering::Relaxed),
            events_duplicate: counters.duplicate.load(Ordering::Relaxed),
            events_rejected: counters.rejected.load(Ordering::Relaxed),
            now_ms: self.inner.clock.now_ms(),
        }
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
            .map(|(code, count)| (*code, *count))
            .collect();
        EngineMetrics {
            rejections,
            batches: counters.batches.load(Ordering::Relaxed),
            query_seconds: counters.query_seconds.snapshot(),
            session_queue_depth: self
                .inner
                .shard_actors
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .sum(),
            segment_queue_depth: self
                .inner
                .aggregate_actors
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .sum(),
            session_queue_depth_max: self
                .inner
                .shard_actors
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .max()
                .unwrap_or(0),
            segment_queue_depth_max: self
                .inner
                .aggregate_actors
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .max()
                .unwrap_or(0),
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
