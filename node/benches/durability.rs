//! Durable ingest, checkpoint and recovery, in process (`docs/durability.md`):
//! events/s with durable acks through `Engine::ingest` (log + group commit +
//! actors, no HTTP), checkpoint time and size, and recovery time for the
//! events logged since the last checkpoint. The checkpoint is taken while
//! the tail is being ingested, and the ingest latency of the batches that
//! overlap it is reported against those that do not. Reports; asserts only
//! correctness.
//!
//! Run: `cargo bench -p sessiondb-node --bench durability -- [--visitors N] [--tail-visitors N] [--batch-events N] [--clients N] [--checkpoint-log-bytes-max N]`

use sessiondb_node::clock::{ManualClock, SharedClock};
use sessiondb_node::engine::durability;
use sessiondb_node::engine::{Engine, EngineConfig};
use sessiondb_node::event::VisitorEvent;
use sessiondb_node::log::LogConfig;
use sessiondb_node::project::SettingsPatch;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{generate, DAY_MS};

/// The node binary's allocator (`node/src/main.rs`), so the figures are
/// the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    visitors: usize,
    tail_visitors: usize,
    batch_events: usize,
    clients: usize,
    /// 0 (the default here): no checkpoint by volume, so recovery replays
    /// the whole tail.
    checkpoint_log_bytes_max: u64,
}

fn options() -> Options {
    let mut options = Options {
        visitors: 200_000,
        tail_visitors: 200_000,
        batch_events: 2_000,
        clients: 8,
        checkpoint_log_bytes_max: 0,
    };
    let arguments: Vec<String> = std::env::args().collect();
    for pair in arguments.windows(2) {
        let value = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--visitors" => options.visitors = value(),
            "--tail-visitors" => options.tail_visitors = value(),
            "--batch-events" => options.batch_events = value(),
            "--clients" => options.clients = value(),
            "--checkpoint-log-bytes-max" => options.checkpoint_log_bytes_max = value() as u64,
            _ => {}
        }
    }
    options
}

/// When each batch was sent and answered.
type Timings = Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>;

fn batches(events: &[VisitorEvent], batch_events: usize) -> Vec<Vec<VisitorEvent>> {
    events
        .chunks(batch_events)
        .map(<[VisitorEvent]>::to_vec)
        .collect()
}

async fn ingest_concurrently(
    engine: &Engine,
    batches: Vec<Vec<VisitorEvent>>,
    clients: usize,
    timings: Timings,
) -> f64 {
    let count: usize = batches.iter().map(Vec::len).sum();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let engine = engine.clone();
            let queue = Arc::clone(&queue);
            let timings = Arc::clone(&timings);
            tokio::spawn(async move {
                loop {
                    let Some(batch) = queue.lock().expect("not poisoned").pop() else {
                        return;
                    };
                    let sent = Instant::now();
                    let outcomes = engine
                        .ingest(batch.into_iter().map(Ok).collect())
                        .await
                        .expect("the log accepts writes");
                    timings
                        .lock()
                        .expect("not poisoned")
                        .push((sent, Instant::now()));
                    assert!(outcomes.iter().all(|outcome| matches!(
                        outcome,
                        sessiondb_node::engine::shard::Outcome::Accepted
                    )));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(options));
}

async fn run(options: Options) {
    let data_dir =
        std::env::temp_dir().join(format!("sessiondb-bench-durability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let start_ms = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;
    let now_ms = start_ms + 7 * DAY_MS;
    let clock: SharedClock = Arc::new(ManualClock::new(now_ms));
    let config = EngineConfig {
        checkpoint_interval_ms: 24 * 3_600_000,
        checkpoint_log_bytes_max: options.checkpoint_log_bytes_max,
        ..EngineConfig::default()
    };
    let (engine, _) = durability::open(
        config.clone(),
        Arc::clone(&clock),
        &data_dir,
        LogConfig::default(),
    )
    .await
    .expect("open");
    let patch = SettingsPatch {
        allowed_lateness_ms: Some(7 * DAY_MS),
        breakdown_attributes: Some(vec!["browser".into()]),
        ..SettingsPatch::default()
    };
    let (project, _) = engine
        .create_project("bench", &patch)
        .await
        .expect("project");

    let events = generate(options.visitors + options.tail_visitors, start_ms, &project);
    let split = options.visitors * common::EVENTS_PER_VISITOR;
    let (head, tail) = events.split_at(split);
    let rate = ingest_concurrently(
        &engine,
        batches(head, options.batch_events),
        options.clients,
        Timings::default(),
    )
    .await;
    println!(
        "durable ingest (in process, {} clients x {}-event batches): {} events at {rate:.0} events/s",
        options.clients,
        options.batch_events,
        head.len()
    );
    // The checkpoint runs while the tail is ingested.
    let tail_batches = batches(tail, options.batch_events);
    let timings = Timings::default();
    let checkpointing = {
        let engine = engine.clone();
        tokio::spawn(async move {
            // Let the clients reach full speed first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = Instant::now();
            let report = engine.checkpoint().await.expect("checkpoint");
            (report, started, Instant::now())
        })
    };
    let tail_rate =
        ingest_concurrently(&engine, tail_batches, options.clients, Arc::clone(&timings)).await;
    let (checkpoint, checkpoint_started, checkpoint_ended) =
        checkpointing.await.expect("checkpoint task");
    println!(
        "checkpoint under ingest: {} visitors, {:.1} MB, longest shard pause {} ms, total {} ms ({:.0} bytes per visitor)",
        checkpoint.visitors,
        checkpoint.bytes as f64 / 1e6,
        checkpoint.pause_ms,
        checkpoint.duration_ms,
        checkpoint.bytes as f64 / checkpoint.visitors.max(1) as f64
    );
    let timings = timings.lock().expect("not poisoned").clone();
    let (during, outside): (Vec<_>, Vec<_>) = timings
        .iter()
        .partition(|(sent, answered)| *sent <= checkpoint_ended && *answered >= checkpoint_started);
    println!(
        "ingest latency of {}-event batches: during the checkpoint ({} batches) {}; outside it ({} batches) {}",
        options.batch_events,
        during.len(),
        latency(&during),
        outside.len(),
        latency(&outside)
    );
    println!(
        "{} more events since the head at {tail_rate:.0} events/s; log since the checkpoint: {:.1} MB",
        tail.len(),
        engine.log_bytes_since_checkpoint() as f64 / 1e6
    );
    let before = engine.status().await;
    // A checkpoint by volume may still be running.
    engine.checkpoints_idle().await;
    engine.shutdown();
    drop(engine);

    let started = Instant::now();
    let (engine, report) = durability::open(config, clock, &data_dir, LogConfig::default())
        .await
        .expect("reopen");
    let recovery_ms = started.elapsed().as_millis();
    println!(
        "recovery: checkpoint {:.1} MB + {} log records ({} events) in {recovery_ms} ms (replay {} ms)",
        report.checkpoint_bytes as f64 / 1e6,
        report.records_replayed,
        report.events_replayed,
        report.replay_ms
    );
    let after = engine.status().await;
    assert_eq!(
        after.live_visitors, before.live_visitors,
        "recovery restores every visitor"
    );
    assert_eq!(
        after.retained_events, before.retained_events,
        "recovery restores every event"
    );
    engine.shutdown();
    drop(engine);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// p50, p99 and max of the batches' latencies.
fn latency(timings: &[&(Instant, Instant)]) -> String {
    let mut latencies: Vec<Duration> = timings
        .iter()
        .map(|(sent, answered)| answered.duration_since(*sent))
        .collect();
    if latencies.is_empty() {
        return "none".to_string();
    }
    latencies.sort();
    let at = |fraction: f64| latencies[((latencies.len() - 1) as f64 * fraction) as usize];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    )
}
