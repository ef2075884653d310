//! Recovery and checkpoints: how the engine gets its state back after a
//! crash, and how it saves it so that recovery stays short.
//!
//! - **Write path** (`Engine::ingest`): one log record per shard per batch,
//!   synced (group commit) before the shard applies it and before the
//!   client's acknowledgement.
//! - **Checkpoint** (`Engine::checkpoint`): no barrier over the whole
//!   state. Each shard, in turn, is asked to encode its state at its own
//!   log position (the last record queued when the request was queued,
//!   under the sequencer), so one shard waits only for its own copy while
//!   the others take ingest; the aggregate actors keep a copy that follows
//!   each shard up to its position. Then encoding, one atomic write to the
//!   checkpoint store, and truncation of the log segments the checkpoint
//!   kept back covers. Taken by time, by log volume and on demand.
//! - **Recovery** (`open`): load the latest checkpoint, start the actors
//!   with it, replay every log record after its position in log order
//!   (each shard's only past that shard's own position; decoded in
//!   parallel, applied by the actors on every core), then serve.
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
use crate::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, FileCheckpointStore, CHECKPOINT_VERSION,
};
use crate::clock::SharedClock;
use crate::event::VisitorEvent;
use crate::limits;
use crate::log::{Log, LogConfig};
use crate::project::ProjectConfig;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The last log position each shard's state includes (all the
    /// checkpoint's position in a version 1 checkpoint; empty without a
    /// checkpoint).
    pub shard_positions: Vec<u64>,
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
    /// The longest one shard's ingest was held: its own encoding (in its
    /// actor). Other shards take ingest meanwhile.
    pub pause_ms: u64,
    pub duration_ms: u64,
    pub log_segments_removed: usize,
}

/// Where things live under the data directory.
const LOG_DIRECTORY: &str = "log";
const CHECKPOINT_DIRECTORY: &str = "checkpoints";
const PROJECTS_PART: &str = "projects";
const COVERAGE_PART: &str = "coverage";
/// Version 2: the log position each shard's part includes (`Vec<u64>`).
const POSITIONS_PART: &str = "positions";
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
    let (mut restored, position, checkpoint_bytes, skipped) =
        load_checkpoint(&config, &checkpoints)?;
    let mut shard_positions = std::mem::take(&mut restored.shard_positions);
    shard_positions.resize(config.shards as usize, position);
    let from = ReplayFrom {
        position,
        shard_positions,
    };
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
    let replayed = replay(&engine, &from).await?;
    let replay_ms = replay_started.elapsed().as_millis() as u64;
    engine
        .inner
        .log_volume
        .replayed_bytes
        .store(replayed.bytes, Ordering::Relaxed);
    let report = RecoveryReport {
        checkpoint_position: position,
        checkpoint_bytes,
        records_replayed: replayed.records,
        events_replayed: replayed.events,
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
    let (version, position) = (checkpoint.version, checkpoint.position);
    let mut shard_positions: Option<Vec<u64>> = None;
    for (name, bytes) in checkpoint.parts {
        let codec = |source| EngineError::Codec {
            what: name.clone(),
            source,
        };
        if name == PROJECTS_PART {
            restored.projects = journal::decode(&bytes, "projects").map_err(codec)?;
        } else if name == POSITIONS_PART {
            shard_positions = Some(journal::decode(&bytes, "shard positions").map_err(codec)?);
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
    restored.shard_positions = checked_positions(version, position, shard_positions, &restored)?;
    Ok(restored)
}

/// Each shard's position: version 1 has one for all; version 2 names each
/// and must hold one per shard, none below the header's.
fn checked_positions(
    version: u32,
    position: u64,
    shard_positions: Option<Vec<u64>>,
    restored: &Restored,
) -> Result<Vec<u64>, EngineError> {
    let shards = restored.shards.len();
    let invalid = |detail: String| EngineError::Codec {
        what: POSITIONS_PART.to_string(),
        source: journal::CodecError::Decode {
            what: "shard positions",
            detail,
        },
    };
    let positions = match (version, shard_positions) {
        (1, None) => vec![position; shards],
        (1, Some(_)) => {
            return Err(invalid(
                "a version 1 checkpoint names no shard positions".into(),
            ))
        }
        (_, None) => {
            return Err(invalid(format!(
                "missing in a version {version} checkpoint"
            )))
        }
        (_, Some(positions)) => positions,
    };
    if positions.len() != shards {
        return Err(invalid(format!(
            "{} positions for {shards} shards",
            positions.len()
        )));
    }
    if positions.iter().any(|&shard| shard < position) {
        return Err(invalid(format!(
            "a shard position below the checkpoint's {position}"
        )));
    }
    Ok(positions)
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

/// Where replay starts (the checkpoint's position) and the last position
/// each shard's restored state includes: a record of a shard at or below
/// its position is already in that shard (a checkpoint taken shard by
/// shard covers each shard up to its own place in the log).
struct ReplayFrom {
    position: u64,
    shard_positions: Vec<u64>,
}

impl ReplayFrom {
    fn shard_holds(&self, shard: u32, position: u64) -> bool {
        position <= self.shard_positions[shard as usize]
    }
}

/// What replay did.
struct Replayed {
    records: u64,
    events: u64,
    bytes: u64,
}

/// Replays every record after the checkpoint in log order, each shard's
/// records only past that shard's own position.
///
/// Decoding runs on the blocking pool, a few chunks ahead and in parallel
/// (`ReplayDecoder`); applying runs in the shard actors, on every core.
/// Event records are gathered per shard (`ReplayBatches`) and sent as one
/// `ShardMessage::Replay` of many records: under load a record holds a
/// batch's share of one shard (~12 events), and a message per record made
/// replay pay the actor round trip and a small aggregate update per record.
/// Every other entry is ordered against the events before it, so the
/// gathered events are sent first.
async fn replay(engine: &Engine, from: &ReplayFrom) -> Result<Replayed, EngineError> {
    let log = Arc::clone(&engine.inner.storage.log);
    let log_error = |source| EngineError::Log {
        path: log.dir().to_path_buf(),
        source,
    };
    let records = log.replay_after(from.position).map_err(log_error)?;
    let mut replayed = Replayed {
        records: 0,
        events: 0,
        bytes: 0,
    };
    let mut batches = ReplayBatches::new(engine.inner.shard_actors.len());
    let mut decoder = ReplayDecoder::new(records);
    while let Some(chunk) = decoder.next_chunk().await.map_err(log_error)? {
        for decoded in chunk {
            replayed.records += 1;
            replayed.bytes += crate::log::record_bytes(decoded.payload_bytes) as u64;
            let entry = decoded.entry.map_err(|source| EngineError::Codec {
                what: format!("log record {}", decoded.position),
                source,
            })?;
            replayed.events += replay_entry(
                engine,
                from,
                &mut batches,
                decoded.position,
                decoded.shard,
                entry,
            )
            .await?;
            if replayed.records.is_multiple_of(REPLAY_PROGRESS_RECORDS) {
                tracing::info!(
                    records_replayed = replayed.records,
                    events_replayed = replayed.events,
                    "replaying the log"
                );
                batches.wait_applied().await;
            }
        }
    }
    batches.send_all(engine).await;
    batches.wait_applied().await;
    Ok(replayed)
}

/// Replays one record; answers the events it applied.
async fn replay_entry(
    engine: &Engine,
    from: &ReplayFrom,
    batches: &mut ReplayBatches,
    position: u64,
    shard: u32,
    entry: JournalEntry,
) -> Result<u64, EngineError> {
    // Every other entry is ordered against the events before it.
    if !matches!(entry, JournalEntry::Events { .. }) {
        batches.send_all(engine).await;
    }
    match entry {
        JournalEntry::Events { now_ms, events } => {
            if shard as usize >= from.shard_positions.len() {
                return Err(EngineError::Codec {
                    what: format!("log record {position}"),
                    source: journal::CodecError::Decode {
                        what: "log record",
                        detail: format!("events of shard {shard}, beyond the shard count"),
                    },
                });
            }
            if from.shard_holds(shard, position) {
                return Ok(0);
            }
            let count = events.len() as u64;
            let events = resolve(engine, events);
            let record = ReplayRecord { now_ms, events };
            batches.add(engine, shard as usize, record).await;
            return Ok(count);
        }
        JournalEntry::Project { config } => {
            // The registry was copied at the checkpoint's position, the
            // lowest: every later configuration is installed again.
            let config = Arc::new(config);
            engine.inner.projects.install(Arc::clone(&config));
            reconfigure_shards_after(engine, from, position, &config).await;
        }
        JournalEntry::InstallShard { shard, state } => {
            if !from.shard_holds(shard, position) {
                engine.names().observe_shard(&state);
                engine.replace_shard(shard, state).await;
            }
        }
        JournalEntry::DropShard { shard } => {
            if !from.shard_holds(shard, position) {
                engine.replace_shard(shard, ShardState::default()).await;
            }
        }
        // Coverage and the aggregate copies are as of the checkpoint's
        // position: what came later is applied again.
        JournalEntry::HandOverStores { stores } => engine.set_handed_over(stores),
        JournalEntry::AbsorbStores { handover } => {
            let handover = journal::decode(&handover, "handed-over stores").map_err(|source| {
                EngineError::Codec {
                    what: format!("log record {position}"),
                    source,
                }
            })?;
            // Replay is in log order: the absorb lands after every
            // earlier record's deltas, as it did live.
            batches.wait_applied().await;
            engine.apply_absorb(handover).await;
        }
    }
    Ok(0)
}

/// A configuration replayed: the shards whose state predates it
/// re-evaluate their visitors, as they did live.
async fn reconfigure_shards_after(
    engine: &Engine,
    from: &ReplayFrom,
    position: u64,
    config: &Arc<ProjectConfig>,
) {
    let mut pending = Vec::with_capacity(engine.inner.shard_actors.len());
    for (shard, actor) in engine.inner.shard_actors.iter().enumerate() {
        if from.shard_holds(shard as u32, position) {
            continue;
        }
        let message = |reply| ShardMessage::Reconfigure {
            config: Arc::clone(config),
            reply,
        };
        if let Ok(answer) = actor.request(message, apply_wait()).await {
            pending.push(answer);
        }
    }
    for answer in pending {
        if let Err(error) = answer.answer().await {
            tracing::error!(%error, project = %config.name, "a shard did not confirm a reconfiguration");
        }
    }
}

/// Records decoded per chunk.
const REPLAY_DECODE_CHUNK_RECORDS: usize = 1_024;
/// Chunks being decoded at once, ahead of the one being applied.
const REPLAY_DECODE_CHUNKS_IN_FLIGHT: usize = 4;

/// One log record, decoded.
struct DecodedRecord {
    position: u64,
    shard: u32,
    payload_bytes: usize,
    entry: Result<JournalEntry, journal::CodecError>,
}

/// Reads the log in chunks and decodes them on the blocking pool, several
/// at once, answering them in log order.
struct ReplayDecoder {
    records: crate::log::Replay,
    decoding: std::collections::VecDeque<tokio::task::JoinHandle<Vec<DecodedRecord>>>,
    read_all: bool,
}

impl ReplayDecoder {
    fn new(records: crate::log::Replay) -> ReplayDecoder {
        ReplayDecoder {
            records,
            decoding: std::collections::VecDeque::with_capacity(REPLAY_DECODE_CHUNKS_IN_FLIGHT),
            read_all: false,
        }
    }

    /// The next chunk in log order; `None` after the last.
    async fn next_chunk(&mut self) -> Result<Option<Vec<DecodedRecord>>, crate::log::LogError> {
        while !self.read_all && self.decoding.len() < REPLAY_DECODE_CHUNKS_IN_FLIGHT {
            let mut chunk = Vec::with_capacity(REPLAY_DECODE_CHUNK_RECORDS);
            for record in self.records.by_ref().take(REPLAY_DECODE_CHUNK_RECORDS) {
                chunk.push(record?);
            }
            self.read_all = chunk.len() < REPLAY_DECODE_CHUNK_RECORDS;
            if !chunk.is_empty() {
                self.decoding
                    .push_back(tokio::task::spawn_blocking(move || decode_chunk(chunk)));
            }
        }
        match self.decoding.pop_front() {
            Some(decoding) => Ok(Some(decoding.await.expect("decoding does not panic"))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
#[path = "durability_tests.rs"]
mod tests;

fn decode_chunk(chunk: Vec<crate::log::Record>) -> Vec<DecodedRecord> {
    chunk
        .into_iter()
        .map(|record| DecodedRecord {
            position: record.position,
            shard: record.shard,
            payload_bytes: record.payload.len(),
            entry: journal::decode(&record.payload, "log record"),
        })
        .collect()
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

/// How much log recovery would replay: the bytes written since the last
/// checkpoint started (volume trigger, `--checkpoint-log-bytes-max`).
#[derive(Debug, Default)]
pub struct LogVolume {
    /// Log bytes replayed at open: they follow the checkpoint restored.
    replayed_bytes: AtomicU64,
    /// `written_bytes` when the last checkpoint started.
    checkpointed_bytes: AtomicU64,
    /// Checkpoints started since the open: each one's id for the actors.
    started: AtomicU64,
}

impl LogVolume {
    /// Log bytes since the open, the replayed ones included.
    fn written_bytes(&self, log: &Log) -> u64 {
        self.replayed_bytes.load(Ordering::Relaxed) + log.stats().bytes
    }

    /// Log bytes a recovery would replay after the newest checkpoint.
    fn since_checkpoint(&self, log: &Log) -> u64 {
        self.written_bytes(log)
            .saturating_sub(self.checkpointed_bytes.load(Ordering::Relaxed))
    }
}

/// Shards asked for their copy at once. More than one hides the round
/// trip (a shard's copy waits for the sync of what is queued ahead of it);
/// few, so that a batch touching many shards waits for at most this many
/// copies.
const CHECKPOINT_SHARDS_IN_FLIGHT: usize = 4;

/// Run after each shard's copy, with the shard's index.
pub(crate) type BetweenShards<'a> =
    dyn FnMut(usize) -> futures::future::BoxFuture<'a, ()> + Send + 'a;

/// What the checkpoint copies at its start, under the sequencer.
struct CheckpointStart {
    /// This checkpoint among those started since the open.
    checkpoint: u64,
    position: u64,
    projects: Vec<ProjectConfig>,
    coverage: StoreCoverage,
    log_bytes: u64,
    aggregate_copies: Vec<Pending<AggregateStore>>,
}

/// Every shard's encoded state and the position it covers.
struct ShardCopies {
    shards: Vec<EncodedShard>,
    positions: Vec<u64>,
    /// The longest one shard's actor spent encoding.
    shard_pause_max: Duration,
}

impl Engine {
    /// Takes a checkpoint now. Ingest never stops as a whole: each shard
    /// pauses only while it encodes its own state (`docs/durability.md`,
    /// "Checkpoints"). Runs to its end even if the caller stops waiting,
    /// so the aggregate actors never keep a copy for a checkpoint nobody
    /// finishes.
    pub async fn checkpoint(&self) -> Result<CheckpointReport, CheckpointError> {
        let engine = self.clone();
        tokio::spawn(async move { engine.checkpoint_to_end(None).await })
            .await
            .map_err(|error| CheckpointError::Task {
                detail: error.to_string(),
            })?
    }

    /// Takes a checkpoint if the log grew by `checkpoint_log_bytes_max`
    /// since the last one started; `None` if it did not (or the trigger is
    /// off).
    pub async fn checkpoint_if_log_grew(
        &self,
    ) -> Option<Result<CheckpointReport, CheckpointError>> {
        let bytes_max = self.inner.config.checkpoint_log_bytes_max;
        let grown = self
            .inner
            .log_volume
            .since_checkpoint(&self.inner.storage.log);
        if bytes_max == 0 || grown < bytes_max {
            return None;
        }
        tracing::info!(grown, bytes_max, "the log grew past the checkpoint volume");
        Some(self.checkpoint().await)
    }

    /// Completes once no checkpoint is running. A running one holds the
    /// engine (and so its checkpoint store's lock) until it ends, so an
    /// in-process restart waits for it first.
    pub async fn checkpoints_idle(&self) {
        drop(self.inner.checkpointing.lock().await);
    }

    /// Log bytes a recovery would replay after the newest checkpoint.
    pub fn log_bytes_since_checkpoint(&self) -> u64 {
        self.inner
            .log_volume
            .since_checkpoint(&self.inner.storage.log)
    }

    /// A checkpoint that runs `between(shard)` after each shard's copy:
    /// tests ingest, reconfigure or crash there.
    #[cfg(test)]
    pub(crate) async fn checkpoint_with_pauses(
        &self,
        between: &mut BetweenShards<'_>,
    ) -> Result<CheckpointReport, CheckpointError> {
        self.checkpoint_to_end(Some(between)).await
    }

    async fn checkpoint_to_end(
        &self,
        between: Option<&mut BetweenShards<'_>>,
    ) -> Result<CheckpointReport, CheckpointError> {
        let _one_at_a_time = self.inner.checkpointing.lock().await;
        let started = Instant::now();
        let start = match self.begin_checkpoint().await {
            Ok(start) => start,
            Err(error) => {
                self.abort_checkpoint().await;
                return Err(error);
            }
        };
        let copies = match self.copy_shards(start.checkpoint, between).await {
            Ok(copies) => copies,
            Err(error) => {
                self.abort_checkpoint().await;
                return Err(error);
            }
        };
        let mut aggregate_stores = Vec::with_capacity(start.aggregate_copies.len());
        for copy in start.aggregate_copies {
            match copy.answer().await {
                Ok(store) => aggregate_stores.push(store),
                Err(error) => {
                    self.abort_checkpoint().await;
                    return Err(copy_failed(error));
                }
            }
        }
        // A shard's own records up to its position are synced (it applied
        // them); other shards' records below it may still be syncing.
        // Recovery needs the log to reach every position the checkpoint
        // names, and a failed sync refuses the checkpoint.
        let highest = copies
            .positions
            .iter()
            .copied()
            .max()
            .unwrap_or(start.position);
        assert!(copies.positions.iter().all(|&p| p >= start.position));
        if let Err(error) = self.inner.storage.log.wait_synced(highest).await {
            return Err(CheckpointError::LogFailed {
                cause: error.to_string(),
            });
        }
        let pause_ms = copies.shard_pause_max.as_millis() as u64;
        let visitors = copies
            .shards
            .iter()
            .map(|shard| shard.visitors as u64)
            .sum();
        let created_ms = self.inner.clock.now_ms();
        let store = Arc::clone(&self.inner.storage.checkpoints);
        let position = start.position;
        let (projects, coverage) = (start.projects, start.coverage);
        let checkpoint = tokio::task::spawn_blocking(move || {
            let checkpoint = encode_checkpoint(
                CheckpointState {
                    position,
                    created_ms,
                    projects: &projects,
                    coverage: &coverage,
                    aggregate_stores: &aggregate_stores,
                },
                copies.shards,
                &copies.positions,
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
        self.inner
            .log_volume
            .checkpointed_bytes
            .store(start.log_bytes, Ordering::Relaxed);
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

    /// Under the sequencer, so at one place in the log: the position every
    /// shard's copy includes at least, the project registry and store
    /// coverage as of it, and the aggregate actors told to keep a copy
    /// that follows each shard up to that shard's own position.
    async fn begin_checkpoint(&self) -> Result<CheckpointStart, CheckpointError> {
        let _order = self.inner.sequencer.lock().await;
        if let Some(cause) = self.inner.storage.log.failure() {
            return Err(CheckpointError::LogFailed { cause });
        }
        let shards = self.inner.shard_actors.len();
        let checkpoint = self
            .inner
            .log_volume
            .started
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        // The wait starts when the answer is awaited, after every shard's
        // copy (`Pending::answer`).
        let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
        let mut aggregate_copies = Vec::with_capacity(self.inner.aggregate_actors.len());
        for actor in self.inner.aggregate_actors.iter() {
            let begin = |reply| AggregateMessage::BeginCheckpoint {
                checkpoint,
                shards,
                reply,
            };
            aggregate_copies.push(actor.request(begin, wait).await.map_err(copy_failed)?);
        }
        let projects = self
            .inner
            .projects
            .list()
            .iter()
            .map(|config| (**config).clone())
            .collect();
        Ok(CheckpointStart {
            checkpoint,
            position: self.inner.storage.log.enqueued_position(),
            projects,
            coverage: self.store_coverage(),
            log_bytes: self.inner.log_volume.written_bytes(&self.inner.storage.log),
            aggregate_copies,
        })
    }

    /// Each shard in turn: under the sequencer, the position of the last
    /// record queued (every record of the shard up to it is ahead of the
    /// request in its queue, every later one behind), then the shard's
    /// state encoded in its own turn. Other shards take ingest meanwhile.
    async fn copy_shards(
        &self,
        checkpoint: u64,
        mut between: Option<&mut BetweenShards<'_>>,
    ) -> Result<ShardCopies, CheckpointError> {
        let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
        let count = self.inner.shard_actors.len();
        let mut copies = ShardCopies {
            shards: Vec::with_capacity(count),
            positions: Vec::with_capacity(count),
            shard_pause_max: Duration::ZERO,
        };
        // With the test hook, one shard at a time: the hook runs between
        // two shards' requests.
        let in_flight_max = match between {
            Some(_) => 1,
            None => CHECKPOINT_SHARDS_IN_FLIGHT,
        };
        let mut asked = std::collections::VecDeque::with_capacity(in_flight_max);
        for (index, shard) in self.inner.shard_actors.iter().enumerate() {
            if asked.len() == in_flight_max {
                self.take_copy(&mut copies, asked.pop_front()).await?;
                if let Some(between) = between.as_mut() {
                    between(index - 1).await;
                }
            }
            let _order = self.inner.sequencer.lock().await;
            let encode = |reply| ShardMessage::Encode { checkpoint, reply };
            let answer = shard.request(encode, wait).await.map_err(copy_failed)?;
            copies
                .positions
                .push(self.inner.storage.log.enqueued_position());
            asked.push_back(answer);
        }
        while let Some(request) = asked.pop_front() {
            self.take_copy(&mut copies, Some(request)).await?;
            if let Some(between) = between.as_mut() {
                between(copies.shards.len() - 1).await;
            }
        }
        assert_eq!(copies.shards.len(), count);
        Ok(copies)
    }

    async fn take_copy(
        &self,
        copies: &mut ShardCopies,
        request: Option<Pending<EncodedShard>>,
    ) -> Result<(), CheckpointError> {
        let answer = request.expect("a request in flight");
        let shard = answer.answer().await.map_err(copy_failed)?;
        copies.shard_pause_max = copies.shard_pause_max.max(shard.encode_time);
        copies.shards.push(shard);
        Ok(())
    }

    /// Tells the aggregate actors to drop their copies.
    async fn abort_checkpoint(&self) {
        for actor in self.inner.aggregate_actors.iter() {
            let _ = actor.send(AggregateMessage::AbortCheckpoint).await;
        }
    }

    /// Periodic checkpoints: every `checkpoint_interval_ms`, and once the
    /// log grew by `checkpoint_log_bytes_max` (checked every
    /// `CHECKPOINT_LOG_CHECK_INTERVAL_MS`).
    fn spawn_checkpoints(&self) {
        let interval_ms = self.inner.config.checkpoint_interval_ms;
        self.spawn_periodic(interval_ms, |engine| async move {
            if let Err(error) = engine.checkpoint().await {
                tracing::error!(%error, "periodic checkpoint failed");
            }
        });
        if self.inner.config.checkpoint_log_bytes_max == 0 {
            return;
        }
        self.spawn_periodic(
            limits::CHECKPOINT_LOG_CHECK_INTERVAL_MS,
            |engine| async move {
                if let Some(Err(error)) = engine.checkpoint_if_log_grew().await {
                    tracing::error!(%error, "checkpoint by log volume failed");
                }
            },
        );
    }
}

fn copy_failed(error: CallError) -> CheckpointError {
    CheckpointError::ActorCopy {
        detail: error.to_string(),
    }
}

/// The parts of a checkpoint besides the shards.
struct CheckpointState<'a> {
    position: u64,
    created_ms: i64,
    projects: &'a Vec<ProjectConfig>,
    coverage: &'a StoreCoverage,
    aggregate_stores: &'a [AggregateStore],
}

fn encode_checkpoint(
    state: CheckpointState<'_>,
    shards: Vec<EncodedShard>,
    positions: &Vec<u64>,
) -> Checkpoint {
    assert_eq!(shards.len(), positions.len());
    let mut parts = vec![
        (PROJECTS_PART.to_string(), journal::encode(state.projects)),
        (POSITIONS_PART.to_string(), journal::encode(positions)),
    ];
    if *state.coverage != StoreCoverage::default() {
        parts.push((COVERAGE_PART.to_string(), journal::encode(state.coverage)));
    }
    for (index, shard) in shards.into_iter().enumerate() {
        parts.push((format!("shard/{index:05}"), shard.bytes));
    }
    for (index, store) in state.aggregate_stores.iter().enumerate() {
        parts.push((format!("segment/{index:05}"), journal::encode(store)));
    }
    Checkpoint {
        version: CHECKPOINT_VERSION,
        position: state.position,
        created_ms: state.created_ms,
        parts,
    }
}
