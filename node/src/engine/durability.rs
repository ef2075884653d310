//! Recovery and checkpoints: how the engine gets its state back after a
//! crash, and how it saves it so that recovery stays short.
//!
//! - **Write path** (`Engine::ingest`): one log record per shard per batch,
//!   synced (group commit) before the shard applies it and before the
//!   client's acknowledgement.
//! - **Checkpoint** (`Engine::checkpoint`): a barrier on the sequencer (no
//!   new records), a copy of every shard and aggregate actor's state taken
//!   after everything queued before the barrier is applied, then — with
//!   ingest running again — encoding, one atomic write to the checkpoint
//!   store, and truncation of the log segments the checkpoint covers.
//! - **Recovery** (`open`): load the latest checkpoint, start the actors
//!   with it, replay every log record after its position in log order, then
//!   serve.
//!
//! See `docs/durability.md`.

use super::actors::{AggregateMessage, EncodedShard, ReplayRecord, ShardMessage};
use super::aggregates::AggregateStore;
use super::handoff::apply_wait;
use super::journal::{self, JournalEntry, JournalEvent};
use super::mailbox::{CallError, Pending};
use super::shard::ShardState;
use super::stores::StoreCoverage;
use super::{Engine, EngineConfig, EngineError, Storage};
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, FileCheckpointStore};
use crate::clock::SharedClock;
use crate::event::VisitorEvent;
use crate::limits;
use crate::log::{Log, LogConfig};
use crate::project::ProjectConfig;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// State loaded from a checkpoint.
#[derive(Debug, Default)]
pub struct Restored {
    pub projects: Vec<ProjectConfig>,
    pub shards: Vec<ShardState>,
    pub aggregate_stores: Vec<AggregateStore>,
    /// Absent in checkpoints of nodes that never handed over or absorbed
    /// stores.
    pub coverage: StoreCoverage,
}

/// What recovery did, for logs and `docs/benchmarks.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub checkpoint_position: u64,
    pub checkpoint_bytes: usize,
    pub records_replayed: u64,
    pub events_replayed: u64,
    pub log_bytes_cut: u64,
    /// Of `duration_ms`: replaying the log (the rest is loading the
    /// checkpoint and opening the log).
    pub replay_ms: u64,
    pub duration_ms: u64,
}

/// A checkpoint that recovery could not use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedCheckpoint {
    pub id: u64,
    pub reason: String,
}

/// What the last recovery had to repair, for `/v1/status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryNotes {
    /// Where and why the log's tail was cut (torn or damaged), if it was.
    pub log_cut: Option<String>,
    pub log_bytes_cut: u64,
    /// Newest first: checkpoints that failed their checksum or decoding.
    pub checkpoints_skipped: Vec<SkippedCheckpoint>,
    /// The position of the checkpoint recovery started from (0: none).
    pub checkpoint_position: u64,
}

/// What a checkpoint wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    pub position: u64,
    pub bytes: usize,
    pub visitors: u64,
    /// Time ingest was held at the barrier.
    pub pause_ms: u64,
    pub duration_ms: u64,
    pub log_segments_removed: usize,
}

/// Where things live under the data directory.
const LOG_DIRECTORY: &str = "log";
const CHECKPOINT_DIRECTORY: &str = "checkpoints";
const PROJECTS_PART: &str = "projects";
const COVERAGE_PART: &str = "coverage";
/// Records replayed between two progress lines in the node's log.
const REPLAY_PROGRESS_RECORDS: u64 = 100_000;

/// Encodes one shard's events of one batch as a log record.
pub fn encode_events(now_ms: i64, events: &[VisitorEvent]) -> Vec<u8> {
    let entry = JournalEntry::Events {
        now_ms,
        events: events
            .iter()
            .map(|event| JournalEvent {
                project: Arc::clone(&event.project.name),
                visitor: event.visitor.clone(),
                event: event.event.clone(),
            })
            .collect(),
    };
    journal::encode(&entry)
}

/// Opens (or creates) the node's storage under `data_dir`, restores the
/// latest checkpoint, replays the log after it and returns a serving engine.
pub async fn open(
    config: EngineConfig,
    clock: SharedClock,
    data_dir: &Path,
    log_config: LogConfig,
) -> Result<(Engine, RecoveryReport), EngineError> {
    let started = Instant::now();
    let checkpoints = FileCheckpointStore::open(data_dir.join(CHECKPOINT_DIRECTORY))?;
    let (restored, position, checkpoint_bytes, skipped) = load_checkpoint(&config, &checkpoints)?;
    let log_path = data_dir.join(LOG_DIRECTORY);
    let (log, log_report) =
        Log::open(&log_path, log_config).map_err(|source| EngineError::Log {
            path: log_path.clone(),
            source,
        })?;
    if let Some(cut) = &log_report.cut {
        tracing::warn!(?cut, "log tail was torn or damaged and has been cut");
    }
    // The entries of `log/` and `checkpoints/` in the data directory must
    // survive a power cut like the files in them.
    std::fs::File::open(data_dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| EngineError::DataDirectory {
            path: data_dir.to_path_buf(),
            source,
        })?;
    let notes = RecoveryNotes {
        log_cut: log_report.cut.as_ref().map(|cut| {
            format!(
                "{} cut at offset {}: {}",
                cut.segment.display(),
                cut.offset,
                cut.damage
            )
        }),
        log_bytes_cut: log_report.truncated_bytes,
        checkpoints_skipped: skipped,
        checkpoint_position: position,
    };
    let storage = Storage {
        log: Arc::new(log),
        checkpoints: Arc::new(checkpoints),
    };
    let engine = Engine::start(config, clock, storage, restored).await?;
    engine.set_recovery_notes(notes);
    let replay_started = Instant::now();
    let (records_replayed, events_replayed) = replay(&engine, position).await?;
    let replay_ms = replay_started.elapsed().as_millis() as u64;
    let report = RecoveryReport {
        checkpoint_position: position,
        checkpoint_bytes,
        records_replayed,
        events_replayed,
        log_bytes_cut: log_report.truncated_bytes,
        replay_ms,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    tracing::info!(?report, "recovered");
    engine.spawn_maintenance();
    engine.spawn_checkpoints();
    Ok((engine, report))
}

/// Restores the newest checkpoint that reads back whole and decodes. A
/// damaged one is skipped with a warning: the previous one and the longer
/// log it needs are kept for exactly this (`docs/durability.md`, "Keeping
/// one checkpoint back"). Returns the state, its log position, its size and
/// the checkpoints skipped.
fn load_checkpoint(
    config: &EngineConfig,
    store: &dyn CheckpointStore,
) -> Result<(Restored, u64, usize, Vec<SkippedCheckpoint>), EngineError> {
    let mut skipped = Vec::new();
    if let Some(id) = store.newest_missing() {
        let reason = "its file is missing".to_string();
        tracing::warn!(
            id,
            reason,
            "checkpoint is damaged; falling back to the one before it and the longer log"
        );
        skipped.push(SkippedCheckpoint { id, reason });
    }
    for id in store.ids() {
        let loaded = store
            .read(id)
            .map_err(EngineError::from)
            .and_then(|checkpoint| {
                let (position, bytes) = (checkpoint.position, checkpoint.bytes());
                restore(config, checkpoint).map(|restored| (restored, position, bytes))
            });
        match loaded {
            Ok((restored, position, bytes)) => {
                store.adopt(id, position);
                tracing::info!(id, position, bytes, "checkpoint loaded");
                return Ok((restored, position, bytes, skipped));
            }
            // A mismatch of flags is the operator's to fix, not damage.
            Err(error @ EngineError::Mismatch { .. }) => return Err(error),
            Err(error) => {
                let reason = error_chain(&error);
                tracing::warn!(
                    id,
                    reason,
                    "checkpoint is damaged; falling back to the one before it and the longer log"
                );
                skipped.push(SkippedCheckpoint { id, reason });
            }
        }
    }
    tracing::info!(
        skipped = skipped.len(),
        "no usable checkpoint: replaying the log from its start"
    );
    Ok((Restored::default(), 0, 0, skipped))
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn restore(config: &EngineConfig, checkpoint: Checkpoint) -> Result<Restored, EngineError> {
    let mut restored = Restored::default();
    for (name, bytes) in checkpoint.parts {
        let codec = |source| EngineError::Codec {
            what: name.clone(),
            source,
        };
        if name == PROJECTS_PART {
            restored.projects = journal::decode(&bytes, "projects").map_err(codec)?;
        } else if name == COVERAGE_PART {
            restored.coverage = journal::decode(&bytes, "store coverage").map_err(codec)?;
        } else if name.starts_with("shard/") {
            let mut shard: ShardState = journal::decode(&bytes, "shard").map_err(codec)?;
            shard.share_names();
            restored.shards.push(shard);
        } else if name.starts_with("segment/") {
            let mut store: AggregateStore = journal::decode(&bytes, "segment").map_err(codec)?;
            store.reindex();
            restored.aggregate_stores.push(store);
        }
    }
    check_count(
        "shards",
        "shards",
        restored.shards.len(),
        config.shards as usize,
    )?;
    check_count(
        "aggregate actors",
        "segment-actors",
        restored.aggregate_stores.len(),
        config.aggregate_actors,
    )?;
    Ok(restored)
}

fn check_count(
    what: &'static str,
    flag: &'static str,
    found: usize,
    configured: usize,
) -> Result<(), EngineError> {
    if found == configured {
        return Ok(());
    }
    Err(EngineError::Mismatch {
        what,
        flag,
        found,
        configured,
    })
}

/// Replays every record after `position` in log order.
///
/// Event records are gathered per shard (`ReplayBatches`) and sent as one
/// `ShardMessage::Replay` of many records: under load a record holds a
/// batch's share of one shard (~12 events), and a message per record made
/// replay pay the actor round trip and a small aggregate update per record.
/// Every other entry is ordered against the events before it, so the
/// gathered events are sent first.
async fn replay(engine: &Engine, position: u64) -> Result<(u64, u64), EngineError> {
    let log = Arc::clone(&engine.inner.storage.log);
    let records = log
        .replay_after(position)
        .map_err(|source| EngineError::Log {
            path: log.dir().to_path_buf(),
            source,
        })?;
    let (mut records_replayed, mut events_replayed) = (0_u64, 0_u64);
    let mut batches = ReplayBatches::new(engine.inner.shard_actors.len());
    for record in records {
        let record = record.map_err(|source| EngineError::Log {
            path: log.dir().to_path_buf(),
            source,
        })?;
        let entry: JournalEntry =
            journal::decode(&record.payload, "log record").map_err(|source| {
                EngineError::Codec {
                    what: format!("log record {}", record.position),
                    source,
                }
            })?;
        records_replayed += 1;
        // Every other entry is ordered against the events before it.
        if !matches!(entry, JournalEntry::Events { .. }) {
            batches.send_all(engine).await;
        }
        match entry {
            JournalEntry::Events { now_ms, events } => {
                events_replayed += events.len() as u64;
                let events = resolve(engine, events);
                batches
                    .add(
                        engine,
                        record.shard as usize,
                        ReplayRecord { now_ms, events },
                    )
                    .await;
            }
            JournalEntry::Project { config } => {
                let config = Arc::new(config);
                engine.inner.projects.install(Arc::clone(&config));
                engine.reconfigure_shards(&config).await;
            }
            JournalEntry::InstallShard { shard, state } => {
                engine.names().observe_shard(&state);
                engine.replace_shard(shard, state).await;
            }
            JournalEntry::DropShard { shard } => {
                engine.replace_shard(shard, ShardState::default()).await;
            }
            JournalEntry::HandOverStores { stores } => engine.set_handed_over(stores),
            JournalEntry::AbsorbStores { handover } => {
                let handover =
                    journal::decode(&handover, "handed-over stores").map_err(|source| {
                        EngineError::Codec {
                            what: format!("log record {}", record.position),
                            source,
                        }
                    })?;
                // Replay is in log order: the absorb lands after every
                // earlier record's deltas, as it did live.
                batches.wait_applied().await;
                engine.apply_absorb(handover).await;
            }
        }
        if records_replayed % REPLAY_PROGRESS_RECORDS == 0 {
            tracing::info!(records_replayed, events_replayed, "replaying the log");
            batches.wait_applied().await;
        }
    }
    batches.send_all(engine).await;
    batches.wait_applied().await;
    Ok((records_replayed, events_replayed))
}

/// Most events gathered for one shard before they are sent.
const REPLAY_BATCH_EVENTS_MAX: usize = 4_096;
/// Most events gathered over all shards before all are sent: replay's
/// memory besides the actors' queues (~250 bytes per event).
const REPLAY_BUFFERED_EVENTS_MAX: usize = 262_144;

/// Replayed records gathered per shard, and the answers of those sent.
struct ReplayBatches {
    records: Vec<Vec<ReplayRecord>>,
    events: Vec<usize>,
    buffered_events: usize,
    answers: Vec<Pending<()>>,
}

impl ReplayBatches {
    fn new(shards: usize) -> ReplayBatches {
        ReplayBatches {
            records: (0..shards).map(|_| Vec::new()).collect(),
            events: vec![0; shards],
            buffered_events: 0,
            answers: Vec::new(),
        }
    }

    async fn add(&mut self, engine: &Engine, shard: usize, record: ReplayRecord) {
        self.events[shard] += record.events.len();
        self.buffered_events += record.events.len();
        self.records[shard].push(record);
        if self.buffered_events >= REPLAY_BUFFERED_EVENTS_MAX {
            self.send_all(engine).await;
        } else if self.events[shard] >= REPLAY_BATCH_EVENTS_MAX {
            self.send(engine, shard).await;
        }
    }

    async fn send(&mut self, engine: &Engine, shard: usize) {
        let records = std::mem::take(&mut self.records[shard]);
        self.buffered_events -= std::mem::take(&mut self.events[shard]);
        if records.is_empty() {
            return;
        }
        // The mailbox bound keeps replay from queueing the whole log.
        let replay = |reply| ShardMessage::Replay { records, reply };
        if let Ok(answer) = engine.inner.shard_actors[shard]
            .request(replay, apply_wait())
            .await
        {
            self.answers.push(answer);
        }
    }

    async fn send_all(&mut self, engine: &Engine) {
        for shard in 0..self.records.len() {
            self.send(engine, shard).await;
        }
    }

    /// Waits until every batch sent so far is applied.
    async fn wait_applied(&mut self) {
        for answer in self.answers.drain(..) {
            if let Err(error) = answer.answer().await {
                tracing::error!(%error, "a shard did not confirm a replayed batch");
            }
        }
    }
}

/// Re-attaches replayed events to their project's configuration as the log
/// has installed it so far.
fn resolve(engine: &Engine, events: Vec<JournalEvent>) -> Vec<VisitorEvent> {
    // Logged events were admitted when they were accepted: replay only
    // records their names, so later events meet the same sets.
    {
        let mut names = engine.names();
        for event in &events {
            names.observe(&event.project, &event.event);
        }
    }
    // A record's events nearly always share one project: look it up once.
    let mut last: Option<Arc<ProjectConfig>> = None;
    events
        .into_iter()
        .filter_map(|event| {
            let project = match &last {
                Some(config) if config.name == event.project => Arc::clone(config),
                _ => {
                    let found = engine.inner.projects.get(&event.project);
                    debug_assert!(found.is_some(), "a project is logged before its events");
                    last = Some(found?);
                    Arc::clone(last.as_ref().expect("set above"))
                }
            };
            Some(VisitorEvent {
                project,
                visitor: event.visitor,
                event: event.event,
            })
        })
        .collect()
}

impl Engine {
    /// Takes a checkpoint now. Ingest pauses only while the actors copy
    /// their state.
    pub async fn checkpoint(&self) -> Result<CheckpointReport, CheckpointError> {
        let _one_at_a_time = self.inner.checkpointing.lock().await;
        let started = Instant::now();
        let (shards, aggregate_stores, projects, coverage, position) = {
            let _barrier = self.inner.sequencer.lock().await;
            let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
            let mut shards = Vec::with_capacity(self.inner.shard_actors.len());
            for shard in &self.inner.shard_actors {
                let encode = |reply| ShardMessage::Encode { reply };
                shards.push(shard.request(encode, wait).await.map_err(copy_failed)?);
            }
            let mut shard_parts = Vec::with_capacity(shards.len());
            for answer in shards {
                shard_parts.push(answer.answer().await.map_err(copy_failed)?);
            }
            // Every shard answered after forwarding its deltas, so the
            // aggregate actors hold them before this request.
            let mut aggregate_stores = Vec::with_capacity(self.inner.aggregate_actors.len());
            for actor in self.inner.aggregate_actors.iter() {
                let snapshot = |reply| AggregateMessage::Snapshot { reply };
                let store = actor.call(snapshot, wait).await.map_err(copy_failed)?;
                aggregate_stores.push(store);
            }
            if let Some(cause) = self.inner.storage.log.failure() {
                return Err(CheckpointError::LogFailed { cause });
            }
            let position = self.inner.storage.log.last_position();
            let coverage = self.store_coverage();
            let projects: Vec<ProjectConfig> = self
                .inner
                .projects
                .list()
                .iter()
                .map(|config| (**config).clone())
                .collect();
            (shard_parts, aggregate_stores, projects, coverage, position)
        };
        let pause_ms = started.elapsed().as_millis() as u64;
        let visitors = shards.iter().map(|shard| shard.visitors as u64).sum();
        let created_ms = self.inner.clock.now_ms();
        let store = Arc::clone(&self.inner.storage.checkpoints);
        let checkpoint = tokio::task::spawn_blocking(move || {
            let checkpoint = encode_checkpoint(
                position,
                created_ms,
                &projects,
                &coverage,
                shards,
                &aggregate_stores,
            );
            store
                .write(&checkpoint)
                .map(|written| (checkpoint.bytes(), written))
        })
        .await
        .map_err(|error| CheckpointError::Task {
            detail: error.to_string(),
        })??;
        let (checkpoint, written) = checkpoint;
        // The new checkpoint is on disk and verified; the one before it is
        // kept back with the log since it, in case the new one is found
        // damaged on open.
        let truncated = self
            .inner
            .storage
            .log
            .truncate_before(written.log_needed_after + 1)
            .map_err(CheckpointError::Truncate)?;
        let report = CheckpointReport {
            position,
            bytes: checkpoint,
            visitors,
            pause_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            log_segments_removed: truncated.segments_removed,
        };
        tracing::info!(?report, "checkpoint written");
        self.record_checkpoint(started.elapsed(), report.bytes, report.position);
        Ok(report)
    }

    /// Periodic checkpoints, every `checkpoint_interval_ms`.
    fn spawn_checkpoints(&self) {
        let interval_ms = self.inner.config.checkpoint_interval_ms;
        self.spawn_periodic(interval_ms, |engine| async move {
            if let Err(error) = engine.checkpoint().await {
                tracing::error!(%error, "periodic checkpoint failed");
            }
        });
    }
}

fn copy_failed(error: CallError) -> CheckpointError {
    CheckpointError::ActorCopy {
        detail: error.to_string(),
    }
}

fn encode_checkpoint(
    position: u64,
    created_ms: i64,
    projects: &Vec<ProjectConfig>,
    coverage: &StoreCoverage,
    shards: Vec<EncodedShard>,
    aggregate_stores: &[AggregateStore],
) -> Checkpoint {
    let mut parts = vec![(PROJECTS_PART.to_string(), journal::encode(projects))];
    if *coverage != StoreCoverage::default() {
        parts.push((COVERAGE_PART.to_string(), journal::encode(coverage)));
    }
    for (index, shard) in shards.into_iter().enumerate() {
        parts.push((format!("shard/{index:05}"), shard.bytes));
    }
    for (index, store) in aggregate_stores.iter().enumerate() {
        parts.push((format!("segment/{index:05}"), journal::encode(store)));
    }
    Checkpoint {
        position,
        created_ms,
        parts,
    }
}
