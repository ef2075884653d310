//! Checkpoints taken shard by shard while ingest goes on, crashes at each
//! step of one, checkpoints by log volume, and old checkpoints: recovery
//! must reach what an engine that never checkpointed holds (the oracle).

use super::super::shard::Outcome;
use super::super::testing::{exposure, pageview, HOUR_MS, NOW_MS, PROJECT, SHARDS};
use super::super::{Engine, EngineConfig, ShareRequest};
use super::*;
use crate::checkpoint::{CheckpointStore, FileCheckpointStore};
use crate::clock::{ManualClock, SharedClock};
use crate::log::LogConfig;
use crate::project::SettingsPatch;
use futures::FutureExt;
use sessiondb_protocol as wire;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

const EXPERIMENT: &str = "checkout";

/// A data directory of its own, removed on drop.
struct Directory(PathBuf);

impl Directory {
    fn new(label: &str) -> Directory {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "sessiondb-durability-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Directory(path)
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(checkpoint_log_bytes_max: u64) -> EngineConfig {
    EngineConfig {
        shards: SHARDS,
        aggregate_actors: 2,
        checkpoint_interval_ms: 24 * HOUR_MS as u64,
        checkpoint_log_bytes_max,
        ..EngineConfig::default()
    }
}

async fn open_engine(directory: &Path, checkpoint_log_bytes_max: u64) -> (Engine, RecoveryReport) {
    let clock: SharedClock = Arc::new(ManualClock::new(NOW_MS));
    open(
        config(checkpoint_log_bytes_max),
        clock,
        directory,
        LogConfig::default(),
    )
    .await
    .expect("the engine opens")
}

/// Stops `engine` (a crash, as far as the disk is concerned: nothing more
/// is written) and recovers from the directory.
async fn reopen(engine: Engine, directory: &Path) -> (Engine, RecoveryReport) {
    engine.checkpoints_idle().await;
    engine.shutdown();
    drop(engine);
    open_engine(directory, 0).await
}

async fn create_project(engine: &Engine) {
    let patch = SettingsPatch {
        breakdown_attributes: Some(vec!["browser".to_string()]),
        ..SettingsPatch::default()
    };
    engine
        .create_project(PROJECT, &patch)
        .await
        .expect("the project is created");
}

/// Batch `index`: new visitors exposed and converting, and a page view of
/// a visitor of an earlier batch, over every shard.
fn batch(index: usize) -> Vec<wire::Event> {
    let mut events = Vec::new();
    for visitor in 0..16 {
        let name = format!("v-{index}-{visitor}");
        let variation = if visitor % 2 == 0 { "a" } else { "b" };
        events.push(exposure(&format!("x-{name}"), &name, EXPERIMENT, variation));
        events.push(pageview(&format!("p-{name}"), &name, 1));
    }
    if index > 0 {
        let earlier = format!("v-{}-3", index - 1);
        events.push(pageview(&format!("again-{index}"), &earlier, 1));
    }
    events
}

async fn send(engine: &Engine, events: &[wire::Event]) {
    let validated = events
        .iter()
        .map(|event| engine.validate(event.clone()))
        .collect();
    let outcomes = engine
        .ingest(validated)
        .await
        .expect("the log takes writes");
    assert!(
        outcomes.iter().all(|outcome| *outcome == Outcome::Accepted),
        "{outcomes:?}"
    );
}

/// What a reader can see of an engine: every shard's event ids, the
/// visitor and event counts, and the experiment's aggregates.
async fn observed(engine: &Engine) -> String {
    let mut text = String::new();
    for shard in 0..SHARDS {
        let audit = engine.audit_shard(shard).await.expect("audit");
        text.push_str(&format!("shard {shard}: {:?}\n", audit.events));
    }
    let status = engine.status().await;
    text.push_str(&format!(
        "visitors {} events {}\n",
        status.live_visitors, status.retained_events
    ));
    let bucket = NOW_MS - NOW_MS % HOUR_MS;
    let share = ShareRequest {
        project: PROJECT.to_string(),
        experiment: EXPERIMENT.to_string(),
        from_ms: Some(bucket - HOUR_MS),
        to_ms: bucket + HOUR_MS,
        breakdown: Some("browser".to_string()),
        ..ShareRequest::default()
    };
    let share = engine.share(&share).await.expect("the share");
    text.push_str(&format!("{:?}\n", share.partial));
    text
}

/// The oracle: an engine that got `batches` in order and never took a
/// checkpoint.
async fn oracle(batches: &[Vec<wire::Event>]) -> String {
    let directory = Directory::new("oracle");
    let (engine, _) = open_engine(&directory.0, 0).await;
    create_project(&engine).await;
    for events in batches {
        send(&engine, events).await;
    }
    let text = observed(&engine).await;
    engine.shutdown();
    text
}

/// The newest checkpoint's per-shard positions, read with the engine
/// stopped (the store is locked while it runs).
fn newest_positions(directory: &Path) -> (u32, u64, Vec<u64>) {
    let store = FileCheckpointStore::open(directory.join(CHECKPOINT_DIRECTORY)).expect("store");
    let id = store.ids()[0];
    let checkpoint = store.read(id).expect("read");
    let (_, bytes) = checkpoint
        .parts
        .iter()
        .find(|(name, _)| name == POSITIONS_PART)
        .expect("a positions part");
    let positions = journal::decode(bytes, "positions").expect("positions decode");
    (checkpoint.version, checkpoint.position, positions)
}

/// Events logged after `position`: (those of records past their shard's
/// own position, all of them).
fn events_after(directory: &Path, position: u64, positions: &[u64]) -> (u64, u64) {
    let (log, _) = Log::open(directory.join(LOG_DIRECTORY), LogConfig::default()).expect("log");
    let (mut missing, mut logged) = (0, 0);
    for record in log.replay_after(position).expect("replay") {
        let record = record.expect("record");
        let entry: JournalEntry = journal::decode(&record.payload, "record").expect("decodes");
        if let JournalEntry::Events { events, .. } = entry {
            logged += events.len() as u64;
            if record.position > positions[record.shard as usize] {
                missing += events.len() as u64;
            }
        }
    }
    (missing, logged)
}

/// A checkpoint that ingests a batch after every shard's copy, and
/// reconfigures the project half way.
async fn checkpoint_under_ingest(
    engine: &Engine,
    batches: &mut Vec<Vec<wire::Event>>,
    crash_after_shard: Option<usize>,
) -> Result<CheckpointReport, CheckpointError> {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let first = batches.len();
    let mut between = {
        let sent = Arc::clone(&sent);
        move |shard: usize| {
            let (engine, sent) = (engine.clone(), Arc::clone(&sent));
            async move {
                if crash_after_shard == Some(shard) {
                    engine.shutdown();
                    return;
                }
                if shard == SHARDS as usize / 2 {
                    let patch = SettingsPatch {
                        breakdown_attributes: Some(vec!["browser".into(), "country".into()]),
                        ..SettingsPatch::default()
                    };
                    engine
                        .configure_project(PROJECT, &patch)
                        .await
                        .expect("reconfigured");
                }
                let events = batch(first + shard);
                send(&engine, &events).await;
                sent.lock().expect("not poisoned").push(events);
            }
            .boxed()
        }
    };
    let result = engine.checkpoint_with_pauses(&mut between).await;
    batches.extend(sent.lock().expect("not poisoned").drain(..));
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_taken_while_ingest_goes_on_recovers_what_the_oracle_holds() {
    let directory = Directory::new("interleaved");
    let (engine, _) = open_engine(&directory.0, 0).await;
    create_project(&engine).await;
    let mut batches: Vec<Vec<wire::Event>> = (0..4).map(batch).collect();
    for events in &batches {
        send(&engine, events).await;
    }
    let report = checkpoint_under_ingest(&engine, &mut batches, None)
        .await
        .expect("the checkpoint");
    assert_eq!(batches.len(), 4 + SHARDS as usize);
    for index in batches.len()..batches.len() + 3 {
        batches.push(batch(index));
        send(&engine, batches.last().expect("pushed")).await;
    }
    let live = observed(&engine).await;
    engine.shutdown();
    drop(engine);
    // Each shard was copied at its own place: later shards include the
    // batches ingested after the earlier ones' copies.
    let (version, position, positions) = newest_positions(&directory.0);
    let (missing, logged) = events_after(&directory.0, position, &positions);
    assert!(0 < missing && missing < logged, "{missing} of {logged}");
    let (engine, recovery) = open_engine(&directory.0, 0).await;
    assert_eq!(recovery.checkpoint_position, report.position);
    // Deduplication would hide a record applied twice; the count does not.
    assert_eq!(recovery.events_replayed, missing);
    let recovered = observed(&engine).await;
    engine.shutdown();
    drop(engine);
    assert_eq!(version, CHECKPOINT_VERSION);
    assert_eq!(positions.len(), SHARDS as usize);
    assert_eq!(position, report.position);
    assert_eq!(
        positions[0], position,
        "nothing was ingested before the first copy"
    );
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    let expected = oracle(&batches).await;
    assert_eq!(live, expected, "live state");
    assert_eq!(recovered, expected, "recovered state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_checkpoint_loses_nothing_and_counts_nothing_twice() {
    // After the last shard's copy the aggregate copies are answered: a
    // crash there is one after the write (the test below).
    for crash_after_shard in [0, SHARDS as usize / 2, SHARDS as usize - 2] {
        let directory = Directory::new("crash");
        let (engine, _) = open_engine(&directory.0, 0).await;
        create_project(&engine).await;
        let mut batches: Vec<Vec<wire::Event>> = (0..3).map(batch).collect();
        for events in &batches {
            send(&engine, events).await;
        }
        // A complete checkpoint under ingest first, so that recovery has
        // one to fall back on and a longer log after it.
        let first = checkpoint_under_ingest(&engine, &mut batches, None)
            .await
            .expect("the first checkpoint");
        let failed = checkpoint_under_ingest(&engine, &mut batches, Some(crash_after_shard)).await;
        assert!(failed.is_err(), "the crash stopped the checkpoint");
        let (engine, recovery) = reopen(engine, &directory.0).await;
        assert_eq!(recovery.checkpoint_position, first.position);
        let recovered = observed(&engine).await;
        engine.shutdown();
        assert_eq!(
            recovered,
            oracle(&batches).await,
            "crash after shard {crash_after_shard}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_checkpoint_is_written_recovers_from_it_and_the_log() {
    let directory = Directory::new("written");
    let (engine, _) = open_engine(&directory.0, 0).await;
    create_project(&engine).await;
    let mut batches: Vec<Vec<wire::Event>> = (0..3).map(batch).collect();
    for events in &batches {
        send(&engine, events).await;
    }
    let report = checkpoint_under_ingest(&engine, &mut batches, None)
        .await
        .expect("the checkpoint");
    let (engine, recovery) = reopen(engine, &directory.0).await;
    assert_eq!(recovery.checkpoint_position, report.position);
    // Records after the lowest position, some of them already in the
    // shards that were copied later, are replayed only where missing.
    assert!(recovery.records_replayed > 0);
    let recovered = observed(&engine).await;
    engine.shutdown();
    assert_eq!(recovered, oracle(&batches).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_growing_past_its_volume_takes_a_checkpoint() {
    let directory = Directory::new("volume");
    let bytes_max = 64 * 1024;
    let (engine, _) = open_engine(&directory.0, bytes_max).await;
    create_project(&engine).await;
    let mut batches = Vec::new();
    while engine.log_bytes_since_checkpoint() < bytes_max / 2 {
        batches.push(batch(batches.len()));
        send(&engine, batches.last().expect("pushed")).await;
    }
    assert!(
        engine.checkpoint_if_log_grew().await.is_none(),
        "half the volume takes none"
    );
    assert_eq!(engine.metrics().checkpoint_last_position, 0);
    while engine.log_bytes_since_checkpoint() < bytes_max {
        batches.push(batch(batches.len()));
        send(&engine, batches.last().expect("pushed")).await;
    }
    let position = engine.inner.storage.log.last_position();
    // Taken here, or by the node's own check if it came first.
    if let Some(result) = engine.checkpoint_if_log_grew().await {
        result.expect("the checkpoint by volume");
    }
    assert!(engine.metrics().checkpoint_last_position >= position);
    assert!(engine.log_bytes_since_checkpoint() < bytes_max);
    // After a restart, the log replayed counts towards the next one.
    batches.push(batch(batches.len()));
    send(&engine, batches.last().expect("pushed")).await;
    let since = engine.log_bytes_since_checkpoint();
    let (engine, recovery) = reopen(engine, &directory.0).await;
    assert!(recovery.records_replayed > 0);
    let replayed = engine.log_bytes_since_checkpoint();
    assert!(replayed > 0 && replayed <= since, "{replayed} of {since}");
    let recovered = observed(&engine).await;
    engine.shutdown();
    assert_eq!(recovered, oracle(&batches).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_checkpoint_still_loads() {
    let directory = Directory::new("version-1");
    let (engine, _) = open_engine(&directory.0, 0).await;
    create_project(&engine).await;
    let mut batches: Vec<Vec<wire::Event>> = (0..5).map(batch).collect();
    for events in &batches {
        send(&engine, events).await;
    }
    // Nothing is ingested during this one: every shard is at one position,
    // which is what a version 1 checkpoint says.
    let report = engine.checkpoint().await.expect("the checkpoint");
    for index in 5..8 {
        batches.push(batch(index));
        send(&engine, batches.last().expect("pushed")).await;
    }
    engine.shutdown();
    drop(engine);
    let (id, old) = {
        let store =
            FileCheckpointStore::open(directory.0.join(CHECKPOINT_DIRECTORY)).expect("store");
        let mut checkpoint = store.read(store.ids()[0]).expect("read");
        checkpoint.parts.retain(|(name, _)| name != POSITIONS_PART);
        checkpoint.version = 1;
        let id = store.write(&checkpoint).expect("write").id;
        (id, checkpoint)
    };
    assert_eq!(old.position, report.position);
    let (engine, recovery) = open_engine(&directory.0, 0).await;
    assert_eq!(recovery.checkpoint_position, report.position);
    assert!(engine.recovery_notes().checkpoints_skipped.is_empty());
    let recovered = observed(&engine).await;
    engine.shutdown();
    drop(engine);
    assert_eq!(recovered, oracle(&batches).await);
    let store = FileCheckpointStore::open(directory.0.join(CHECKPOINT_DIRECTORY)).expect("store");
    assert_eq!(store.read(id).expect("read").version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_checkpoint_without_positions_is_damaged() {
    let directory = Directory::new("no-positions");
    let (engine, _) = open_engine(&directory.0, 0).await;
    create_project(&engine).await;
    let batches: Vec<Vec<wire::Event>> = (0..3).map(batch).collect();
    for events in &batches {
        send(&engine, events).await;
    }
    engine.checkpoint().await.expect("the checkpoint");
    engine.shutdown();
    drop(engine);
    let id = {
        let store =
            FileCheckpointStore::open(directory.0.join(CHECKPOINT_DIRECTORY)).expect("store");
        let mut checkpoint = store.read(store.ids()[0]).expect("read");
        checkpoint.parts.retain(|(name, _)| name != POSITIONS_PART);
        store.write(&checkpoint).expect("write").id
    };
    let (engine, _) = open_engine(&directory.0, 0).await;
    let skipped = engine.recovery_notes().checkpoints_skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].id, id);
    assert!(skipped[0].reason.contains("positions"), "{skipped:?}");
    let recovered = observed(&engine).await;
    engine.shutdown();
    assert_eq!(recovered, oracle(&batches).await);
}
