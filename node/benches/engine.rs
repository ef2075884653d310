//! In-process engine benchmark (`docs/benchmarks.md`, "Engine alone"):
//! decoded events → session and segment updates on one core, and
//! results-query latency for the target query shape (10 variations × 10
//! breakdown values × 168 hourly buckets). Not a test: it reports, it asserts nothing about speed.
//!
//! Run: `cargo bench -p sessiondb-node --bench engine -- [--visitors N] [--queries N]`

use sessiondb_node::engine::aggregates::AggregateStore;
use sessiondb_node::engine::query::{self, ResultsQuery};
use sessiondb_node::engine::shard::{DeltaSink, ShardState};
use sessiondb_node::event::VisitorEvent;
use sessiondb_node::project::{ProjectConfig, Settings};
use std::sync::Arc;
use std::time::Instant;

mod common;
use common::{generate, BROWSERS, DAY_MS, VARIATIONS};
/// Events handed to the shard per call, like one shard's share of a batch.
const EVENTS_PER_CALL: usize = 512;

struct Options {
    visitors: usize,
    queries: usize,
}

fn options() -> Options {
    let mut options = Options {
        visitors: 1_000_000,
        queries: 200,
    };
    let arguments: Vec<String> = std::env::args().collect();
    for pair in arguments.windows(2) {
        match pair[0].as_str() {
            "--visitors" => options.visitors = pair[1].parse().expect("--visitors N"),
            "--queries" => options.queries = pair[1].parse().expect("--queries N"),
            _ => {}
        }
    }
    options
}

fn main() {
    let options = options();
    let start_ms = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;
    let settings = Settings {
        allowed_lateness_ms: 7 * DAY_MS,
        breakdown_attributes: vec![Arc::from("browser")],
        ..Settings::default()
    };
    let config = Arc::new(ProjectConfig {
        name: Arc::from("bench"),
        settings,
        version: 1,
        ingest_keys: sessiondb_node::keys::RotatingKey::new(sessiondb_node::keys::KeyHash::of(
            b"bench",
        )),
    });
    let events = generate(options.visitors, start_ms, &config);
    let event_count = events.len();
    let now_ms = start_ms + 7 * DAY_MS;

    let mut shard = ShardState::default();
    let mut store = AggregateStore::default();
    let mut sink = DeltaSink::new(1);
    let started = Instant::now();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let chunk: Vec<VisitorEvent> = events.by_ref().take(EVENTS_PER_CALL).collect();
        shard.apply(now_ms, chunk, &mut sink);
        for (_, batch) in sink.drain() {
            store.apply(&batch);
        }
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    println!(
        "engine: {event_count} events, {} visitors in {ingest_seconds:.2} s on one core = {:.0} events/s",
        options.visitors,
        event_count as f64 / ingest_seconds
    );
    println!("segment cells (cell x bucket): {}", store.cell_count());

    let aggregates = store
        .experiment("bench", "checkout")
        .expect("experiment exists");
    let query = ResultsQuery {
        from_ms: start_ms,
        to_ms: start_ms + 7 * DAY_MS,
        breakdown: Some(Arc::from("browser")),
        keys: vec![Arc::from("purchase")],
        baseline: None,
        weights: None,
    };
    let mut latencies_us: Vec<f64> = (0..options.queries)
        .map(|_| {
            let started = Instant::now();
            let results = query::results(aggregates, &query).expect("query runs");
            assert_eq!(results.groups.len(), BROWSERS);
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    latencies_us.sort_by(f64::total_cmp);
    let percentile =
        |fraction: f64| latencies_us[((latencies_us.len() - 1) as f64 * fraction) as usize];
    println!(
        "results query ({VARIATIONS} variations x {BROWSERS} breakdown values x 168 hourly buckets): p50 {:.0} us, p99 {:.0} us",
        percentile(0.5),
        percentile(0.99)
    );
}
