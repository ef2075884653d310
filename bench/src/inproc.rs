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
}

/// Relative errors of `Sketch::estimate` against the exact count, for
/// distinct visitor names per seed, with the node's element hash.
pub fn hll_accuracy(plan: &[(usize, usize)]) -> Vec<HllPoint> {
    plan.iter()
        .map(|&(cardinality, seeds)| {
            let errors: Vec<f64> = (0..seeds)
                .map(|seed| {
                    let mut sketch = Sketch::new(HLL_PRECISION);
                    for visitor in 0..cardinality {
                        sketch.insert(sketch_hash_of("hll", &format!("s{seed}-{visitor}")));
                    }
                    sketch.estimate() / cardinality as f64 - 1.0
                })
                .collect();
            HllPoint {
                cardinality,
                seeds,
                rms_relative_error: rms(&errors),
                worst_relative_error: errors.iter().fold(0.0, |m, e| m.max(e.abs())),
            }
        })
        .collect()
}

pub fn rms(errors: &[f64]) -> f64 {
    if errors.is_empty() {
        return f64::NAN;
    }
    (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt()
}
