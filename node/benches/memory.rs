//! Memory per live visitor, by part (target ≤ 150 bytes): the harness's
//! scale workload, validated the way the node validates it and applied to
//! one `ShardState` + `AggregateStore` on one thread, then the state's bytes
//! accounted by part (`engine::memory`) next to the process's RSS growth.
//! Then a checkpoint's work on that state (copy, encode, drop), and the RSS
//! it leaves behind. Reports; asserts nothing about sizes.
//!
//! Run: `cargo bench -p sessiondb-node --bench memory -- [--visitors N] [--seed N]`

use sessiondb_node::engine::aggregates::AggregateStore;
use sessiondb_node::engine::journal;
use sessiondb_node::engine::memory::MemoryAccount;
use sessiondb_node::engine::shard::{DeltaSink, ShardState};
use sessiondb_node::event::{validate, ProjectLookup, VisitorEvent};
use sessiondb_node::metrics::resident_memory_bytes;
use sessiondb_node::project::{ProjectConfig, Settings};
use sessiondb_workload::scale::BROWSER_ATTRIBUTE;
use sessiondb_workload::{generate_scale, ScaleConfig, DAY_MS};
use std::sync::Arc;

/// The node binary's allocator (`node/src/main.rs`), so the figures are
/// the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events handed to the shard per call, like one shard's share of a batch.
const EVENTS_PER_CALL: usize = 512;
/// Calls between two maintenance passes (freezing, shrinking, forgetting
/// unused names): ~500 000 events, about 10 s of the node's ingest.
const MAINTENANCE_CALLS: usize = 1_000;

struct Options {
    visitors: usize,
    seed: u64,
}

fn options() -> Options {
    let mut options = Options {
        visitors: 200_000,
        seed: 7,
    };
    let arguments: Vec<String> = std::env::args().collect();
    for pair in arguments.windows(2) {
        match pair[0].as_str() {
            "--visitors" => options.visitors = pair[1].parse().expect("--visitors N"),
            "--seed" => options.seed = pair[1].parse().expect("--seed N"),
            _ => {}
        }
    }
    options
}

struct OneProject(Arc<ProjectConfig>);

impl ProjectLookup for OneProject {
    fn project(&self, name: &str) -> Option<Arc<ProjectConfig>> {
        (*self.0.name == *name).then(|| Arc::clone(&self.0))
    }
}

fn rss_bytes() -> u64 {
    resident_memory_bytes().expect("procfs")
}

fn main() {
    let options = options();
    let config = ScaleConfig::new(options.seed, "bench", options.visitors);
    let workload = generate_scale(&config);
    let now_ms = config.base_ms + config.span_ms;
    let project = OneProject(Arc::new(ProjectConfig {
        name: Arc::from(config.project.as_str()),
        settings: Settings {
            allowed_lateness_ms: 7 * DAY_MS,
            session_gap_ms: config.session_gap_ms,
            breakdown_attributes: vec![Arc::from(BROWSER_ATTRIBUTE)],
            ..Settings::default()
        },
        version: 1,
        ingest_keys: sessiondb_node::keys::RotatingKey::new(sessiondb_node::keys::KeyHash::of(
            b"bench",
        )),
    }));

    let rss_before = rss_bytes();
    let mut shard = ShardState::default();
    let mut store = AggregateStore::default();
    let mut sink = DeltaSink::new(1);
    // Validated a chunk at a time, as the node does per batch: the input
    // never exists whole, so RSS growth is the state's.
    for (call, chunk) in workload.arrival.chunks(EVENTS_PER_CALL).enumerate() {
        // The node's periodic maintenance (every 10 s, a few hundred
        // thousand events at its ingest rate).
        if call % MAINTENANCE_CALLS == MAINTENANCE_CALLS - 1 {
            shard.maintain(now_ms);
        }
        let events: Vec<VisitorEvent> = chunk
            .iter()
            .map(|event| {
                validate(workload.to_event(event), &project, now_ms)
                    .expect("the scale workload is valid")
            })
            .collect();
        shard.apply(now_ms, events, &mut sink);
        for (_, batch) in sink.drain() {
            store.apply(&batch);
        }
    }
    shard.maintain(now_ms);
    let rss_after = rss_bytes();
    let visitors = shard.visitor_count();
    let events = shard.retained_event_count();
    let mut account = MemoryAccount::default();
    shard.account_memory(&mut account);
    account.add_segment_store(&store, &shard.project_names());

    println!(
        "{visitors} live visitors, {events} retained events ({:.2} per visitor), {} segment cells, {} allocations ({:.1} per visitor)",
        events as f64 / visitors as f64,
        store.cell_count(),
        account.allocations,
        account.allocations as f64 / visitors as f64
    );
    println!("| part | bytes per live visitor |");
    println!("|---|---|");
    let per_visitor = |bytes: f64| bytes / visitors as f64;
    for (part, bytes) in account.parts() {
        println!("| {part} | {:.0} |", per_visitor(bytes as f64));
    }
    let total = account.total_bytes() as f64;
    let grown = rss_after.saturating_sub(rss_before) as f64;
    println!("| **accounted total** | **{:.0}** |", per_visitor(total));
    println!(
        "| RSS growth (RSS {:.0} → {:.0} MB) | {:.0} |",
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6,
        per_visitor(grown)
    );
    println!(
        "| RSS growth − accounted (fragmentation, freed memory kept) | {:.0} |",
        per_visitor(grown - total)
    );

    // A checkpoint's work as the node does it: each session actor encodes
    // its state in place (`ShardMessage::Encode`), the parts are written
    // and dropped.
    let encoded = journal::encode(&shard);
    let rss_checkpoint_peak = rss_bytes();
    let encoded_bytes = encoded.len();
    drop(encoded);
    let rss_after_checkpoint = rss_bytes();
    println!(
        "checkpoint encoding: {:.0} bytes per visitor; RSS after encoding {:.0} MB, after dropping it {:.0} MB ({:.0} bytes per visitor above the state's RSS)",
        per_visitor(encoded_bytes as f64),
        rss_checkpoint_peak as f64 / 1e6,
        rss_after_checkpoint as f64 / 1e6,
        per_visitor(rss_after_checkpoint.saturating_sub(rss_after) as f64)
    );
}
