//! In-process measurements: the engine alone on one core (the logic of
//! `node/benches/engine.rs` on the shared workload) and HyperLogLog accuracy.

use serde::Serialize;
use sessiondb_node::engine::aggregates::AggregateStore;
use sessiondb_node::engine::query::{self, ResultsQuery};
use sessiondb_node::engine::shard::{DeltaSink, ShardState};
use sessiondb_node::engine::sketch::Sketch;
use sessiondb_node::event::{validate, ProjectLookup, VisitorEvent};
use sessiondb_node::hashing::sketch_hash_of;
use sessiondb_node::project::{ProjectConfig, Settings};
use sessiondb_workload::scale::{BROWSER_ATTRIBUTE, PURCHASE_KEY};
use sessiondb_workload::{ScaleWorkload, DAY_MS};
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::Instant;

/// Events handed to the shard per call, like one shard's share of a batch.
const EVENTS_PER_CALL: usize = 512;
/// The HyperLogLog precision the distinct-visitor accuracy target is
/// stated for (RMS error ≤ 0.9 % at precision 14).
pub const HLL_PRECISION: u8 = 14;

#[derive(Debug, Clone, Serialize)]
pub struct EngineFigures {
    pub events: usize,
    pub seconds: f64,
    pub events_per_second_per_core: f64,
    pub segment_cells: usize,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
}

struct OneProject(Arc<ProjectConfig>);

impl ProjectLookup for OneProject {
    fn project(&self, name: &str) -> Option<Arc<ProjectConfig>> {
        (*self.0.name == *name).then(|| Arc::clone(&self.0))
    }
}

/// Decoded events → session + segment updates, single-threaded, in arrival
/// order; then the target query shape (10 variations × 10 browsers × 168
/// hourly buckets) against the segment store directly.
pub fn engine_alone(workload: &ScaleWorkload, now_ms: i64, queries: usize) -> EngineFigures {
    let config = &workload.config;
    let settings = Settings {
        allowed_lateness_ms: 7 * DAY_MS,
        session_gap_ms: config.session_gap_ms,
        breakdown_attributes: vec![Arc::from(BROWSER_ATTRIBUTE)],
        ..Settings::default()
    };
    let project = OneProject(Arc::new(ProjectConfig {
        name: Arc::from(config.project.as_str()),
        settings,
        version: 1,
        ingest_keys: sessiondb_node::keys::RotatingKey::new(sessiondb_node::keys::KeyHash::of(
            b"bench",
        )),
    }));
    // Decoding is the edge's work, not the engine's: done before the clock.
    let events: Vec<VisitorEvent> = workload
        .arrival
        .iter()
        .map(|event| {
            validate(workload.to_event(event), &project, now_ms)
                .expect("the scale workload is valid")
        })
        .collect();
    let event_count = events.len();
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
    let seconds = started.elapsed().as_secs_f64();

    let aggregates = store
        .experiment(&config.project, &config.experiment)
        .expect("the experiment has aggregates");
    let results_query = ResultsQuery {
        from_ms: config.base_ms,
        to_ms: config.base_ms + config.span_ms,
        breakdown: Some(Arc::from(BROWSER_ATTRIBUTE)),
        keys: vec![Arc::from(PURCHASE_KEY)],
        baseline: None,
        weights: None,
    };
    let mut latencies_ms: Vec<f64> = (0..queries.max(1))
        .map(|_| {
            let started = Instant::now();
            let results = query::results(aggregates, &results_query).expect("query runs");
            std::hint::black_box(results);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    EngineFigures {
        events: event_count,
        seconds,
        events_per_second_per_core: event_count as f64 / seconds,
        segment_cells: store.cell_count(),
        query_p50_ms: percentile(&latencies_ms, 0.5),
        query_p99_ms: percentile(&latencies_ms, 0.99),
    }
}

/// `sorted[⌊(n − 1) · fraction⌋]`.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * fraction) as usize]
}

#[derive(Debug, Clone, Serialize)]
pub struct HllPoint {
    pub cardinality: usize,
    pub seeds: usize,
    pub rms_relative_error: f64,
    pub worst_relative_error: f64,
    /// The same elements in `hyperloglogplus`'s HyperLogLog++ at the same
    /// precision: the crate the node's own sketch must keep beating.
    pub hyperloglogplus_rms_relative_error: f64,
    pub hyperloglogplus_worst_relative_error: f64,
}

/// The `hyperloglogplus` sketch fed the node's element hashes; the crate
/// hashes them once more with a fixed-key hasher (deterministic runs).
use hyperloglogplus::HyperLogLog as _;

type PlusSketch = hyperloglogplus::HyperLogLogPlus<u64, BuildHasherDefault<DefaultHasher>>;

fn plus_sketch() -> PlusSketch {
    PlusSketch::new(HLL_PRECISION, BuildHasherDefault::default())
        .expect("precision 14 is within hyperloglogplus's range")
}

/// Relative errors of `Sketch::estimate` and of `hyperloglogplus` against
/// the exact count, for distinct visitor names per seed, with the node's
/// element hash.
pub fn hll_accuracy(plan: &[(usize, usize)]) -> Vec<HllPoint> {
    plan.iter()
        .map(|&(cardinality, seeds)| {
            let (ours, theirs): (Vec<f64>, Vec<f64>) = (0..seeds)
                .map(|seed| {
                    let mut sketch = Sketch::new(HLL_PRECISION);
                    let mut plus = plus_sketch();
                    for visitor in 0..cardinality {
                        let hash = sketch_hash_of("hll", &format!("s{seed}-{visitor}"));
                        sketch.insert(hash);
                        plus.insert(&hash);
                    }
                    let exact = cardinality as f64;
                    (sketch.estimate() / exact - 1.0, plus.count() / exact - 1.0)
                })
                .unzip();
            HllPoint {
                cardinality,
                seeds,
                rms_relative_error: rms(&ours),
                worst_relative_error: worst(&ours),
                hyperloglogplus_rms_relative_error: rms(&theirs),
                hyperloglogplus_worst_relative_error: worst(&theirs),
            }
        })
        .collect()
}

fn worst(errors: &[f64]) -> f64 {
    errors.iter().fold(0.0, |m, e| m.max(e.abs()))
}

/// Elements inserted per sketch when timing inserts: enough that both
/// sketches are dense, as a busy cell's are.
const SKETCH_INSERTS: usize = 1_000_000;
/// Unions timed (each of two dense sketches into a copy of a third).
const SKETCH_MERGES: usize = 200;

/// What a sketch costs the engine: an insert on the ingest path, a union
/// per (cell, bucket) on the query path, an estimate per answer.
#[derive(Debug, Clone, Serialize)]
pub struct SketchCosts {
    pub insert_ns: f64,
    pub merge_us: f64,
    pub estimate_us: f64,
}

/// The node's sketch and `hyperloglogplus`, on the same hashes, one core.
#[derive(Debug, Clone, Serialize)]
pub struct SketchComparison {
    pub precision: u8,
    pub ours: SketchCosts,
    pub hyperloglogplus: SketchCosts,
}

pub fn sketch_costs() -> SketchComparison {
    let hashes: Vec<u64> = (0..SKETCH_INSERTS)
        .map(|i| sketch_hash_of("costs", &format!("v{i}")))
        .collect();

    let started = Instant::now();
    let mut ours = Sketch::new(HLL_PRECISION);
    for &hash in &hashes {
        ours.insert(hash);
    }
    let ours_insert_ns = nanoseconds_each(started, hashes.len());
    let mut other = Sketch::new(HLL_PRECISION);
    for &hash in hashes.iter().rev().step_by(2) {
        other.insert(hash.rotate_left(7));
    }
    let started = Instant::now();
    for _ in 0..SKETCH_MERGES {
        let mut union = ours.clone();
        union.merge(&other);
        std::hint::black_box(&union);
    }
    let ours_merge_us = nanoseconds_each(started, SKETCH_MERGES) / 1e3;
    let started = Instant::now();
    for _ in 0..SKETCH_MERGES {
        std::hint::black_box(ours.estimate());
    }
    let ours_estimate_us = nanoseconds_each(started, SKETCH_MERGES) / 1e3;

    let started = Instant::now();
    let mut plus = plus_sketch();
    for hash in &hashes {
        plus.insert(hash);
    }
    let plus_insert_ns = nanoseconds_each(started, hashes.len());
    let mut plus_other = plus_sketch();
    for &hash in hashes.iter().rev().step_by(2) {
        plus_other.insert(&hash.rotate_left(7));
    }
    // Dense before timing the union, as `count` converts a sparse sketch.
    plus_other.count();
    plus.count();
    let started = Instant::now();
    for _ in 0..SKETCH_MERGES {
        let mut union = plus.clone();
        union
            .merge(&plus_other)
            .expect("sketches of one precision merge");
        std::hint::black_box(&union);
    }
    let plus_merge_us = nanoseconds_each(started, SKETCH_MERGES) / 1e3;
    let started = Instant::now();
    for _ in 0..SKETCH_MERGES {
        std::hint::black_box(plus.count());
    }
    let plus_estimate_us = nanoseconds_each(started, SKETCH_MERGES) / 1e3;

    SketchComparison {
        precision: HLL_PRECISION,
        ours: SketchCosts {
            insert_ns: ours_insert_ns,
            merge_us: ours_merge_us,
            estimate_us: ours_estimate_us,
        },
        hyperloglogplus: SketchCosts {
            insert_ns: plus_insert_ns,
            merge_us: plus_merge_us,
            estimate_us: plus_estimate_us,
        },
    }
}

fn nanoseconds_each(started: Instant, count: usize) -> f64 {
    started.elapsed().as_secs_f64() * 1e9 / count.max(1) as f64
}

pub fn rms(errors: &[f64]) -> f64 {
    if errors.is_empty() {
        return f64::NAN;
    }
    (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt()
}
