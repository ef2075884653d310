//! The engine: shards visitors to session actors, keeps aggregates in
//! segment actors, and answers queries. `Engine` is the only entry point;
//! the HTTP layer talks to nothing else.
//!
//! Layout, from pure leaves to the actor shell:
//! - `contribution`: what a visitor adds to aggregates, and differences.
//! - `visitor`: one visitor's state and its contribution (SPEC §4).
//! - `shard`: all visitors of one shard.
//! - `sketch`, `segment`: the aggregates store.
//! - `query`: results and time series over aggregates.
//! - `mailbox`, `actors`: the ractor actors and their bounded queues.

pub mod actors;
pub mod audit;
pub mod contribution;
pub mod durability;
pub mod handoff;
pub mod mailbox;
pub mod memory;
pub mod query;
pub mod segment;
pub mod shard;
pub mod sketch;
pub mod stores;
pub mod visitor;

use crate::clock::SharedClock;
use crate::event::{self, ProjectLookup, RejectReason, VisitorEvent};
use crate::hashing;
use crate::limits;
use crate::project::{ProjectConfig, ProjectError, ProjectRegistry, SettingsPatch};
use actors::{SegmentActor, SegmentMessage, SessionActor, SessionActorState, SessionMessage};
use mailbox::{Mailbox, MailboxError};
use query::{QueryError, Results, ResultsQuery};
use ractor::Actor;
use segment::SegmentStore;
use sessiondb_protocol::RejectCode;
use shard::{Outcome, ShardState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Per shard: the indexes of its events in the batch, and the events.
type PerShard = std::collections::BTreeMap<u32, (Vec<usize>, Vec<VisitorEvent>)>;

/// How the engine is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Virtual shards, fixed when the cluster is created.
    pub shards: u32,
    pub segment_actors: usize,
    /// How often session actors freeze closed sessions and forget expired
    /// visitors.
    pub maintenance_interval_ms: u64,
    /// How often a checkpoint is taken.
    pub checkpoint_interval_ms: u64,
    /// How long an ingest call waits for room (sequencer, shard queues,
    /// the log's backlog) before it fails with `Overloaded`.
    pub ingest_queue_wait_ms: u64,
    /// Most cell-buckets one query may touch (`QueryError::TooExpensive`).
    pub query_cost_max: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 256,
            segment_actors: 4,
            maintenance_interval_ms: 10_000,
            checkpoint_interval_ms: 60_000,
            ingest_queue_wait_ms: limits::INGEST_QUEUE_WAIT_MS_DEFAULT,
            query_cost_max: limits::QUERY_COST_MAX_DEFAULT,
        }
    }
}

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

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("shards must be in 1..={max}, got {shards}", max = limits::SHARDS_MAX)]
    InvalidShards { shards: u32 },
    #[error("segment actors must be in 1..=256, got {count}")]
    InvalidSegmentActors { count: usize },
    #[error("could not start an actor: {reason}")]
    Spawn { reason: String },
    #[error("cannot open the log in {path}")]
    Log {
        path: std::path::PathBuf,
        #[source]
        source: crate::log::LogError,
    },
    #[error("checkpoint store")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("cannot decode {what} of the checkpoint or log")]
    Codec {
        what: String,
        #[source]
        source: crate::journal::CodecError,
    },
    #[error("the data directory was created with {found} {what}, but the node is configured with {configured}; start with --{flag} {found}")]
    Mismatch {
        what: &'static str,
        flag: &'static str,
        found: usize,
        configured: usize,
    },
}

/// A results request as the API receives it: range and names unchecked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultsRequest {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub breakdown: Option<String>,
    pub keys: Vec<String>,
    pub baseline: Option<String>,
}

/// The answer to a results request, with the range it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsAnswer {
    pub from_ms: i64,
    pub to_ms: i64,
    pub breakdown: Option<Arc<str>>,
    pub results: Results,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesAnswer {
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_ms: i64,
    pub series: query::Series,
}

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
struct EventCounters {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    rejected: AtomicU64,
    /// Rejected events by `RejectReason::code`.
    rejections: std::sync::Mutex<std::collections::BTreeMap<RejectCode, u64>>,
    /// Ingest calls answered (one per batch).
    batches: AtomicU64,
    /// Results and time-series requests, timed by the HTTP layer.
    query_seconds: crate::metrics::Histogram,
    /// The last checkpoint taken (`Engine::checkpoint`).
    checkpoint_last_ns: AtomicU64,
    checkpoint_last_bytes: AtomicU64,
    checkpoint_last_position: AtomicU64,
}

/// What `/metrics` reports of the engine besides `EngineStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineMetrics {
    /// Rejected events by reason code, sorted by code.
    pub rejections: Vec<(RejectCode, u64)>,
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

#[derive(Debug)]
struct Inner {
    config: EngineConfig,
    clock: SharedClock,
    projects: ProjectRegistry,
    sessions: Vec<Mailbox<SessionMessage>>,
    segments: Arc<Vec<Mailbox<SegmentMessage>>>,
    counters: EventCounters,
    storage: Storage,
    /// Held while a change is given its place in the log and queued at the
    /// actors, so every shard applies its records in log order (replay
    /// then reaches the same state). Also held by a checkpoint's barrier.
    sequencer: tokio::sync::Mutex<()>,
    /// One checkpoint at a time.
    checkpointing: tokio::sync::Mutex<()>,
    /// This node's role for each shard; read on every ingest, written when
    /// ownership changes.
    roles: std::sync::RwLock<Vec<handoff::ShardRole>>,
    /// Whose aggregates the segment stores hold (`stores`); changed only
    /// under the sequencer, so a checkpoint sees it with the stores.
    coverage: std::sync::Mutex<stores::StoreCoverage>,
}

/// Where the engine keeps what it acknowledged.
#[derive(Debug)]
pub struct Storage {
    pub log: Arc<crate::log::Log>,
    pub checkpoints: Arc<dyn crate::checkpoint::CheckpointStore>,
}

impl ProjectLookup for Inner {
    fn project(&self, name: &str) -> Option<Arc<ProjectConfig>> {
        self.projects.get(name)
    }
}

/// A handle to the running engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts the actors with restored state (empty for a new node).
    /// Recovery (`durability::open`) is the only caller.
    async fn start(
        config: EngineConfig,
        clock: SharedClock,
        storage: Storage,
        restored: durability::Restored,
    ) -> Result<Engine, EngineError> {
        if config.shards == 0 || config.shards > limits::SHARDS_MAX {
            return Err(EngineError::InvalidShards {
                shards: config.shards,
            });
        }
        if config.segment_actors == 0 || config.segment_actors > 256 {
            return Err(EngineError::InvalidSegmentActors {
                count: config.segment_actors,
            });
        }
        let durability::Restored {
            projects,
            mut shards,
            mut segment_stores,
            coverage,
        } = restored;
        shards.resize_with(config.shards as usize, ShardState::default);
        segment_stores.resize_with(config.segment_actors, SegmentStore::default);
        let mut segments = Vec::with_capacity(config.segment_actors);
        for store in segment_stores {
            let (actor, _) = Actor::spawn(None, SegmentActor, store)
                .await
                .map_err(|error| EngineError::Spawn {
                    reason: error.to_string(),
                })?;
            segments.push(Mailbox::new(actor, limits::ACTOR_QUEUE_MESSAGES_MAX));
        }
        let segments = Arc::new(segments);
        let mut sessions = Vec::with_capacity(config.shards as usize);
        for shard in shards {
            let state = SessionActorState {
                shard,
                segments: Arc::clone(&segments),
                clock: Arc::clone(&clock),
            };
            let (actor, _) = Actor::spawn(None, SessionActor, state)
                .await
                .map_err(|error| EngineError::Spawn {
                    reason: error.to_string(),
                })?;
            sessions.push(Mailbox::new(actor, limits::ACTOR_QUEUE_MESSAGES_MAX));
        }
        let registry = ProjectRegistry::default();
        for project in projects {
            registry.install(Arc::new(project));
        }
        let shard_count = config.shards as usize;
        Ok(Engine {
            inner: Arc::new(Inner {
                config,
                clock,
                projects: registry,
                sessions,
                segments,
                counters: EventCounters::default(),
                storage,
                sequencer: tokio::sync::Mutex::new(()),
                checkpointing: tokio::sync::Mutex::new(()),
                // A node starts owning every shard (a single-node cluster);
                // placement tells it otherwise.
                roles: std::sync::RwLock::new(vec![
                    handoff::ShardRole::Owner { epoch: 1 };
                    shard_count
                ]),
                coverage: std::sync::Mutex::new(coverage),
            }),
        })
    }

    /// Periodic freezing and retention. Holds only a weak reference so the
    /// task ends when the engine is dropped.
    fn spawn_maintenance(&self) {
        let interval_ms = self.inner.config.maintenance_interval_ms;
        self.spawn_periodic(interval_ms, |engine| async move { engine.maintain() });
    }

    /// Runs `task` every `interval_ms` (not at once) until the engine is
    /// dropped: the task holds only a weak reference between runs.
    fn spawn_periodic<F, Fut>(&self, interval_ms: u64, task: F)
    where
        F: Fn(Engine) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                task(Engine { inner }).await;
            }
        });
    }

    /// Asks every actor to freeze and expire; skips actors that are busy
    /// (they get their turn at the next tick).
    pub fn maintain(&self) {
        for session in &self.inner.sessions {
            let _ = session.try_send(SessionMessage::Maintain { reply: None });
        }
        let now_ms = self.inner.clock.now_ms();
        for project in self.inner.projects.list() {
            for segment in self.inner.segments.iter() {
                let _ = segment.try_send(SegmentMessage::Expire {
                    project: Arc::clone(&project.name),
                    before_ms: now_ms - project.settings.retention_ms,
                });
            }
        }
    }

    /// Freezes and expires in every shard now, and returns when done. Used
    /// when a manual clock jumps, so tests observe a defined state.
    pub async fn maintain_now(&self) {
        let mut replies = Vec::with_capacity(self.inner.sessions.len());
        for session in &self.inner.sessions {
            let (reply, answer) = oneshot::channel();
            let message = SessionMessage::Maintain { reply: Some(reply) };
            if session.send(message).await.is_ok() {
                replies.push(answer);
            }
        }
        for answer in replies {
            let _ = answer.await;
        }
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    pub fn shards(&self) -> u32 {
        self.inner.config.shards
    }

    pub fn projects(&self) -> &ProjectRegistry {
        &self.inner.projects
    }

    /// Creates a project; returns once its creation is on disk, with its
    /// ingest key (only its hash is stored: this is the one time it is
    /// known).
    pub async fn create_project(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(Arc<ProjectConfig>, String), ProjectError> {
        let _order = self.inner.sequencer.lock().await;
        let (config, key) = self.inner.projects.prepare_create(name, patch)?;
        self.journal_project(&config).await?;
        let config = Arc::new(config);
        self.inner.projects.install(Arc::clone(&config));
        Ok((config, key))
    }

    /// Changes settings; returns once the change is on disk and every shard
    /// has re-evaluated its visitors under them (when the change affects
    /// contributions).
    pub async fn configure_project(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<Arc<ProjectConfig>, ProjectError> {
        let _order = self.inner.sequencer.lock().await;
        let (_, config) = self.inner.projects.prepare_configure(name, patch)?;
        self.journal_project(&config).await?;
        let config = Arc::new(config);
        self.inner.projects.install(Arc::clone(&config));
        self.reconfigure_shards(&config).await;
        Ok(config)
    }

    /// Why this node cannot write now (its log failed), if it cannot: a
    /// change that needs the log is refused before the cluster agrees on
    /// it.
    pub fn storage_failure(&self) -> Option<String> {
        self.inner.storage.log.failure()
    }

    /// Installs a configuration the cluster agreed on (placement's
    /// `PutProject`), journaled first; re-evaluates retained visitors when
    /// it replaces an older one. A configuration no newer than the one held
    /// changes nothing (answers `false`): every member installs each
    /// version once, whether it hears of it from its own request or from
    /// placement.
    pub async fn install_project(&self, config: ProjectConfig) -> Result<bool, ProjectError> {
        let _order = self.inner.sequencer.lock().await;
        let previous = self.inner.projects.get(&config.name);
        if previous
            .as_ref()
            .is_some_and(|held| held.version >= config.version)
        {
            return Ok(false);
        }
        self.journal_project(&config).await?;
        let config = Arc::new(config);
        self.inner.projects.install(Arc::clone(&config));
        if previous.is_some() {
            self.reconfigure_shards(&config).await;
        }
        Ok(true)
    }

    async fn journal_project(&self, config: &ProjectConfig) -> Result<(), ProjectError> {
        let entry = crate::journal::JournalEntry::Project {
            config: config.clone(),
        };
        let record = (crate::journal::ALL_SHARDS, crate::journal::encode(&entry));
        let stored = match self.inner.storage.log.enqueue_batch(vec![record]).await {
            Ok(pending) => pending.durable().await,
            Err(error) => Err(error),
        };
        stored.map(|_| ()).map_err(|error| ProjectError::Storage {
            cause: error.to_string(),
        })
    }

    /// Tells every shard about a new configuration and waits until all have
    /// re-evaluated. Called in log order (under the sequencer or during
    /// replay).
    async fn reconfigure_shards(&self, config: &Arc<ProjectConfig>) {
        let mut replies = Vec::with_capacity(self.inner.sessions.len());
        for session in &self.inner.sessions {
            let (reply, answer) = oneshot::channel();
            let message = SessionMessage::Reconfigure {
                config: Arc::clone(config),
                reply,
            };
            if session.send(message).await.is_ok() {
                replies.push(answer);
            }
        }
        for answer in replies {
            let _ = answer.await;
        }
    }

    /// Validates one wire event at the node's current time.
    pub fn validate(&self, event: sessiondb_protocol::Event) -> Result<VisitorEvent, RejectReason> {
        event::validate(event, self.inner.as_ref(), self.inner.clock.now_ms())
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

    /// Groups events by shard and refuses those for shards this node does
    /// not own (rejections pass through at their index).
    fn route(&self, events: Vec<Result<VisitorEvent, RejectReason>>) -> (Vec<Outcome>, PerShard) {
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(events.len());
        let mut per_shard: std::collections::BTreeMap<u32, (Vec<usize>, Vec<VisitorEvent>)> =
            std::collections::BTreeMap::new();
        let roles = self
            .inner
            .roles
            .read()
            .expect("roles lock is never poisoned");
        for (index, event) in events.into_iter().enumerate() {
            match event {
                Err(reason) => outcomes.push(Outcome::Rejected(reason)),
                Ok(event) => {
                    let shard = hashing::shard_of(
                        &event.project.name,
                        &event.visitor,
                        self.inner.config.shards,
                    );
                    if let Some(reason) = refusal(shard, &roles[shard as usize]) {
                        outcomes.push(Outcome::Rejected(reason));
                        continue;
                    }
                    outcomes.push(Outcome::Accepted);
                    let group = per_shard.entry(shard).or_default();
                    group.0.push(index);
                    group.1.push(event);
                }
            }
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
                let reservation = self.inner.sessions[*shard as usize]
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
                let (durable_sender, durable) = oneshot::channel();
                let (reply, answer) = oneshot::channel();
                let message = SessionMessage::Ingest {
                    events,
                    now_ms,
                    durable: Some(durable),
                    reply,
                };
                if reservation.send(message).is_ok() {
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
            let outcomes = answer.await.map_err(|_| IngestError::ShuttingDown)?;
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

    /// Records how long a results or time-series request took.
    pub fn observe_query(&self, elapsed: Duration) {
        self.inner.counters.query_seconds.observe(elapsed);
    }

    /// Records the last checkpoint for `/metrics` (`durability`).
    fn record_checkpoint(&self, elapsed: Duration, bytes: usize, position: u64) {
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
        EngineMetrics {
            rejections,
            batches: counters.batches.load(Ordering::Relaxed),
            query_seconds: counters.query_seconds.snapshot(),
            session_queue_depth: self
                .inner
                .sessions
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .sum(),
            segment_queue_depth: self
                .inner
                .segments
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .sum(),
            session_queue_depth_max: self
                .inner
                .sessions
                .iter()
                .map(|mailbox| mailbox.depth(capacity) as u64)
                .max()
                .unwrap_or(0),
            segment_queue_depth_max: self
                .inner
                .segments
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

    fn segment_for(&self, project: &str, experiment: &str) -> &Mailbox<SegmentMessage> {
        let index = hashing::segment_of(project, experiment, self.inner.segments.len());
        &self.inner.segments[index]
    }

    /// Checks a results request and asks the experiment's segment actor.
    pub async fn results(
        &self,
        project: &str,
        experiment: &str,
        request: ResultsRequest,
    ) -> Result<ResultsAnswer, QueryError> {
        let config = self.project_config(project)?;
        let settings = &config.settings;
        let (from_ms, to_ms) = self
            .resolve_range(&config, experiment, request.from_ms, request.to_ms)
            .await?;
        let query = results_query(settings, from_ms, to_ms, &request)?;
        let breakdown = query.breakdown.clone();
        self.check_cost(&config, experiment, breakdown.clone(), from_ms, to_ms)
            .await?;
        let (reply, answer) = oneshot::channel();
        let message = SegmentMessage::Results {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            query,
            reply,
        };
        self.ask(self.segment_for(project, experiment), message, answer)
            .await?
            .map(|results| ResultsAnswer {
                from_ms,
                to_ms,
                breakdown,
                results,
            })
    }

    /// Checks a results request over an explicit range and builds its query
    /// exactly as `results` does — for a coordinator that gathers the
    /// shares of other nodes instead of asking its own segment actor.
    pub fn results_query_for(
        &self,
        project: &str,
        from_ms: i64,
        to_ms: i64,
        request: &ResultsRequest,
    ) -> Result<ResultsQuery, QueryError> {
        let config = self.project_config(project)?;
        check_range(config.settings.bucket_ms, from_ms, to_ms)?;
        results_query(&config.settings, from_ms, to_ms, request)
    }

    pub async fn time_series(
        &self,
        project: &str,
        experiment: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        interval_ms: Option<i64>,
    ) -> Result<SeriesAnswer, QueryError> {
        let config = self.project_config(project)?;
        let bucket_ms = config.settings.bucket_ms;
        let (from_ms, to_ms) = self
            .resolve_range(&config, experiment, from_ms, to_ms)
            .await?;
        let interval_ms = series_interval(bucket_ms, from_ms, to_ms, interval_ms)?;
        self.check_cost(&config, experiment, None, from_ms, to_ms)
            .await?;
        let (reply, answer) = oneshot::channel();
        let message = SegmentMessage::TimeSeries {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            from_ms,
            to_ms,
            interval_ms,
            reply,
        };
        let series = self
            .ask(self.segment_for(project, experiment), message, answer)
            .await?
            .ok_or_else(|| QueryError::UnknownExperiment {
                project: project.to_string(),
                experiment: experiment.to_string(),
            })?;
        Ok(SeriesAnswer {
            from_ms,
            to_ms,
            interval_ms,
            series,
        })
    }

    /// Checks a time series' interval and range the way `time_series` does
    /// (for a coordinator that gathers shares); answers the interval.
    pub fn series_interval_for(
        &self,
        project: &str,
        from_ms: i64,
        to_ms: i64,
        interval_ms: Option<i64>,
    ) -> Result<i64, QueryError> {
        let config = self.project_config(project)?;
        check_range(config.settings.bucket_ms, from_ms, to_ms)?;
        series_interval(config.settings.bucket_ms, from_ms, to_ms, interval_ms)
    }

    /// This node's share of a time series (`query::series_partial`);
    /// `None` when it holds nothing of the experiment.
    pub async fn series_partial(
        &self,
        project: &str,
        experiment: &str,
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
    ) -> Result<Option<Vec<query::Partial>>, QueryError> {
        let config = self.project_config(project)?;
        series_interval(config.settings.bucket_ms, from_ms, to_ms, Some(interval_ms))?;
        if self.store_coverage().handed_over.is_some() {
            return Ok(None);
        }
        self.check_cost(&config, experiment, None, from_ms, to_ms)
            .await?;
        let (reply, answer) = oneshot::channel();
        let message = SegmentMessage::SeriesPartial {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            from_ms,
            to_ms,
            interval_ms,
            reply,
        };
        self.ask(self.segment_for(project, experiment), message, answer)
            .await
    }

    /// Experiments of a project with their earliest bucket, sorted by name.
    pub async fn experiments(
        &self,
        project: &str,
    ) -> Result<Vec<(Arc<str>, Option<i64>)>, QueryError> {
        let config = self.project_config(project)?;
        let mut experiments = Vec::new();
        for segment in self.inner.segments.iter() {
            let (reply, answer) = oneshot::channel();
            let message = SegmentMessage::Experiments {
                project: Arc::clone(&config.name),
                reply,
            };
            experiments.extend(self.ask(segment, message, answer).await?);
        }
        experiments.sort();
        Ok(experiments)
    }

    fn project_config(&self, project: &str) -> Result<Arc<ProjectConfig>, QueryError> {
        self.inner
            .projects
            .get(project)
            .ok_or_else(|| QueryError::UnknownProject {
                project: project.to_string(),
            })
    }

    /// Defaults and checks a query range: aligned to buckets, ordered,
    /// bounded in size.
    async fn resolve_range(
        &self,
        config: &ProjectConfig,
        experiment: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<(i64, i64), QueryError> {
        let settings = &config.settings;
        let to_ms = to_ms
            .unwrap_or_else(|| settings.bucket_of(self.inner.clock.now_ms()) + settings.bucket_ms);
        let from_ms = match from_ms {
            Some(from_ms) => from_ms,
            None => self
                .experiments(&config.name)
                .await?
                .into_iter()
                .find(|(name, _)| **name == *experiment)
                .and_then(|(_, first)| first)
                .unwrap_or(to_ms - settings.bucket_ms)
                .min(to_ms - settings.bucket_ms),
        };
        check_range(settings.bucket_ms, from_ms, to_ms)?;
        Ok((from_ms, to_ms))
    }

    /// Refuses a query over [from, to) that would read more than
    /// `query_cost_max` cell-buckets: cells read (per the breakdown) × base
    /// buckets in the range. An upper bound (day roll-ups read fewer), and
    /// cheap: one count, before any summing.
    async fn check_cost(
        &self,
        config: &ProjectConfig,
        experiment: &str,
        breakdown: Option<Arc<str>>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(), QueryError> {
        let (reply, answer) = oneshot::channel();
        let message = SegmentMessage::CellsRead {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            breakdown,
            reply,
        };
        let Some(cells) = self
            .ask(self.segment_for(&config.name, experiment), message, answer)
            .await?
        else {
            // No such experiment here: the query itself says so (or, for a
            // share, answers nothing).
            return Ok(());
        };
        let buckets = u64::try_from((to_ms - from_ms) / config.settings.bucket_ms).unwrap_or(0);
        let cost = cells.saturating_mul(buckets);
        let limit = self.inner.config.query_cost_max;
        if cost > limit {
            return Err(QueryError::TooExpensive {
                cost,
                cells,
                buckets,
                limit,
            });
        }
        Ok(())
    }

    async fn ask<T>(
        &self,
        mailbox: &Mailbox<SegmentMessage>,
        message: SegmentMessage,
        answer: oneshot::Receiver<T>,
    ) -> Result<T, QueryError> {
        let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
        mailbox
            .send_within(message, wait)
            .await
            .map_err(|_: MailboxError| QueryError::Unavailable)?;
        tokio::time::timeout(wait, answer)
            .await
            .map_err(|_| QueryError::Unavailable)?
            .map_err(|_| QueryError::Unavailable)
    }

    pub async fn status(&self) -> EngineStatus {
        let (mut live_visitors, mut retained_events) = (0_u64, 0_u64);
        for session in &self.inner.sessions {
            let (reply, answer) = oneshot::channel();
            let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
            if session
                .send_within(SessionMessage::Sizes { reply }, wait)
                .await
                .is_ok()
            {
                let (visitors, events) = answer.await.unwrap_or((0, 0));
                live_visitors += visitors as u64;
                retained_events += events as u64;
            }
        }
        let mut segment_cells = 0_u64;
        for segment in self.inner.segments.iter() {
            let (reply, answer) = oneshot::channel();
            if let Ok(count) = self
                .ask(segment, SegmentMessage::CellCount { reply }, answer)
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

    /// Stops every actor. Messages already queued are dropped with their
    /// reply channels, so waiting requests see an error, not a hang.
    pub fn shutdown(&self) {
        for session in &self.inner.sessions {
            session.stop();
        }
        for segment in self.inner.segments.iter() {
            segment.stop();
        }
    }
}

/// Why this node refuses an event for `shard`, if it does.
fn refusal(shard: u32, role: &handoff::ShardRole) -> Option<RejectReason> {
    match *role {
        handoff::ShardRole::Owner { .. } => None,
        handoff::ShardRole::Fenced { epoch } => Some(RejectReason::ShardMoving { shard, epoch }),
        handoff::ShardRole::Elsewhere { owner, epoch } => Some(RejectReason::NotOwner {
            shard,
            owner,
            epoch,
        }),
    }
}

/// A results query over a checked range: breakdown and keys checked
/// against the project's settings and the limits.
fn results_query(
    settings: &crate::project::Settings,
    from_ms: i64,
    to_ms: i64,
    request: &ResultsRequest,
) -> Result<ResultsQuery, QueryError> {
    let breakdown = match &request.breakdown {
        Some(attribute) => Some(check_breakdown(settings, attribute)?),
        None => None,
    };
    if request.keys.len() > limits::QUERY_KEYS_MAX {
        return Err(QueryError::TooManyKeys {
            count: request.keys.len(),
        });
    }
    Ok(ResultsQuery {
        from_ms,
        to_ms,
        breakdown,
        keys: request
            .keys
            .iter()
            .map(|key| Arc::from(key.as_str()))
            .collect(),
        baseline: request.baseline.as_deref().map(Arc::from),
    })
}

fn check_breakdown(
    settings: &crate::project::Settings,
    attribute: &str,
) -> Result<Arc<str>, QueryError> {
    settings
        .breakdown_attributes
        .iter()
        .find(|name| ***name == *attribute)
        .cloned()
        .ok_or_else(|| QueryError::UnknownBreakdown {
            attribute: attribute.to_string(),
            available: settings
                .breakdown_attributes
                .iter()
                .map(|name| name.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn check_range(bucket_ms: i64, from_ms: i64, to_ms: i64) -> Result<(), QueryError> {
    if from_ms % bucket_ms != 0 || to_ms % bucket_ms != 0 {
        return Err(QueryError::UnalignedRange {
            from_ms,
            to_ms,
            bucket_ms,
        });
    }
    if from_ms >= to_ms {
        return Err(QueryError::InvalidRange { from_ms, to_ms });
    }
    let buckets = (to_ms - from_ms) / bucket_ms;
    if buckets > limits::QUERY_BUCKETS_MAX {
        return Err(QueryError::TooManyBuckets { buckets });
    }
    Ok(())
}

/// A time series' interval (the bucket when not given): a positive multiple
/// of the bucket, with at most `TIMESERIES_POINTS_MAX` points in range.
fn series_interval(
    bucket_ms: i64,
    from_ms: i64,
    to_ms: i64,
    interval_ms: Option<i64>,
) -> Result<i64, QueryError> {
    let interval_ms = interval_ms.unwrap_or(bucket_ms);
    if interval_ms <= 0 || interval_ms % bucket_ms != 0 {
        return Err(QueryError::InvalidInterval {
            interval_ms,
            bucket_ms,
        });
    }
    let points = (to_ms - from_ms + interval_ms - 1) / interval_ms;
    if points > limits::TIMESERIES_POINTS_MAX {
        return Err(QueryError::TooManyPoints { points });
    }
    Ok(interval_ms)
}
