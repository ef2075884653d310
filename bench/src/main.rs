//! `sessiondb-bench`: the benchmark harness behind `docs/benchmarks.md`
//! and its performance targets (run it through
//! `scripts/bench`). One run, one generated workload
//! (`sessiondb_workload::scale`), every figure:
//!
//! 1. the engine alone on one core (in process);
//! 2. HyperLogLog accuracy over many seeds (in process);
//! 3. a real `sessiondb serve`: Rust client ingest with durable acks and
//!    CPU use, results-query latency, freshness, memory, checkpoint, and
//!    recovery after SIGKILL;
//! 4. peers on the same events: Redis `PFADD` (pipelined), DuckDB and chDB
//!    (`bench/peers.py`) computing the same exact results;
//! 5. the check that SessionDB's exact results equal DuckDB's — a mismatch
//!    fails the run (exit 1) after the report is written.
//!
//! It writes `results.md`, `results.json` and PNG plots into `--out-dir`.
//! Every child process is killed when the harness ends, also on error.

mod cluster;
mod exact;
mod inproc;
mod node;
mod peers;
mod plots;
mod process;
mod redis;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use sessiondb_workload::scale::PURCHASE_KEY;
use sessiondb_workload::{generate_scale, ScaleConfig, HOUR_MS};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Exit code when SessionDB's exact results differ from DuckDB's.
const EXIT_MISMATCH: u8 = 1;
/// Exit code when the harness itself failed.
const EXIT_FAILED: u8 = 2;

/// SessionDB benchmark harness: every figure of docs/benchmarks.md, one run.
#[derive(Debug, Parser)]
struct Options {
    /// Small profile (100 k visitors, fewer queries and seeds): < 3 minutes.
    #[arg(long)]
    quick: bool,
    /// Visitors to generate (default 1 000 000, 100 000 with --quick).
    #[arg(long)]
    visitors: Option<usize>,
    /// Workload seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The release `sessiondb` binary.
    #[arg(long, default_value = "target/release/sessiondb")]
    node_binary: PathBuf,
    /// Where results.md, results.json and the plots go.
    #[arg(long, default_value = "docs/benchmarks")]
    out_dir: PathBuf,
    #[arg(long, default_value = "python3")]
    python: String,
    #[arg(long, default_value = "bench/peers.py")]
    peers_script: PathBuf,
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Run only the cluster figures (1 vs 3 nodes, shard moves) and write
    /// cluster.md and cluster.json into --out-dir (docs/benchmarks.md,
    /// "Cluster"). --visitors sets the ingest workload (default 100 000).
    #[arg(long)]
    cluster: bool,
    /// With --cluster: visitors in the moved shard, one move per size.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    move_visitors: Vec<usize>,
    /// With --cluster: results queries timed per cluster size.
    #[arg(long, default_value_t = 200)]
    cluster_queries: usize,
    /// Run only the in-process engine figure on the workload's arrival
    /// order and print it: small enough to run under
    /// `valgrind --tool=callgrind`, whose instruction counts do not depend
    /// on the machine's load (docs/benchmarks.md, "What bounds us").
    #[arg(long)]
    engine_only: bool,
    /// Only compare the node's HyperLogLog with hyperloglogplus (accuracy,
    /// insert, union, estimate) and print the table; no workload, no node.
    #[arg(long)]
    sketches_only: bool,
}

/// Visitors of the cluster ingest workload unless --visitors says otherwise.
const CLUSTER_VISITORS_DEFAULT: usize = 100_000;

struct Profile {
    visitors: usize,
    engine_queries: usize,
    http_queries: usize,
    freshness_probes: usize,
    /// (cardinality, seeds).
    hll_plan: Vec<(usize, usize)>,
}

impl Profile {
    fn of(options: &Options) -> Profile {
        if options.quick {
            Profile {
                visitors: options.visitors.unwrap_or(100_000),
                engine_queries: 50,
                http_queries: 100,
                freshness_probes: 50,
                hll_plan: vec![(100, 32), (1_000, 32), (10_000, 16), (100_000, 8)],
            }
        } else {
            Profile {
                visitors: options.visitors.unwrap_or(1_000_000),
                engine_queries: 200,
                http_queries: 500,
                freshness_probes: 200,
                hll_plan: vec![
                    (100, 200),
                    (1_000, 200),
                    (10_000, 100),
                    (100_000, 40),
                    (1_000_000, 8),
                ],
            }
        }
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    if options.cluster {
        return match run_cluster(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sessiondb-bench: failed: {error:#}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_MISMATCH),
        Err(error) => {
            eprintln!("sessiondb-bench: failed: {error:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn step(text: &str) {
    eprintln!("[bench] {text}");
}

/// The cluster figures only (`--cluster`).
fn run_cluster(options: &Options) -> Result<()> {
    let visitors = options.visitors.unwrap_or(CLUSTER_VISITORS_DEFAULT);
    let config = ScaleConfig::new(options.seed, "bench", visitors);
    let now_ms = config.base_ms + config.span_ms;
    step(&format!("generating {visitors} visitors"));
    let workload = generate_scale(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut ingest = Vec::new();
    for nodes in [1, 3] {
        step(&format!("ingest and queries on {nodes} node(s)"));
        ingest.push(runtime.block_on(cluster::ingest_and_query(
            &options.node_binary,
            nodes,
            &workload,
            now_ms,
            options.cluster_queries,
        ))?);
    }
    drop(workload);
    step(&format!(
        "shard moves of {:?} visitors",
        options.move_visitors
    ));
    let moves = runtime.block_on(cluster::shard_moves(
        &options.node_binary,
        &options.move_visitors,
        now_ms,
    ))?;
    let figures = cluster::ClusterFigures { ingest, moves };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let markdown = cluster::render(&figures, &command);
    println!("{markdown}");
    std::fs::create_dir_all(&options.out_dir)?;
    std::fs::write(options.out_dir.join("cluster.md"), &markdown)?;
    std::fs::write(
        options.out_dir.join("cluster.json"),
        serde_json::to_string_pretty(&figures)?,
    )?;
    Ok(())
}

/// `--sketches-only`: the sketch comparison of a full run, alone.
fn sketches_only(profile: &Profile) -> Result<bool> {
    step("HyperLogLog accuracy: ours and hyperloglogplus");
    let hll = inproc::hll_accuracy(&profile.hll_plan);
    step("sketch costs: ours and hyperloglogplus");
    let sketches = inproc::sketch_costs();
    let mut table = String::new();
    sketch_table(&mut table, &sketches, &hll);
    println!("{table}");
    Ok(true)
}

/// Runs everything; answers whether the exact results agreed.
fn run(options: &Options) -> Result<bool> {
    let profile = Profile::of(options);
    let config = ScaleConfig::new(options.seed, "bench", profile.visitors);
    let now_ms = config.base_ms + config.span_ms;
    let run_started = Instant::now();
    if options.sketches_only {
        return sketches_only(&profile);
    }

    step(&format!("generating {} visitors", profile.visitors));
    let started = Instant::now();
    let workload = generate_scale(&config);
    let generate_s = started.elapsed().as_secs_f64();
    let scratch = process::temp_dir("sessiondb-bench")?;
    let csv = scratch.path().join("events.csv");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        workload.write_csv(&mut out)?;
    }
    step(&format!(
        "{} events ({} distinct) in {generate_s:.1} s",
        workload.arrival.len(),
        workload.distinct_events
    ));

    step("engine alone (one core)");
    let engine = inproc::engine_alone(&workload, now_ms, profile.engine_queries);
    if options.engine_only {
        println!(
            "engine alone: {} events in {:.2} s = {:.0} events/s per core",
            engine.events, engine.seconds, engine.events_per_second_per_core
        );
        return Ok(true);
    }
    step("HyperLogLog accuracy");
    let hll = inproc::hll_accuracy(&profile.hll_plan);
    step("sketch costs: ours and hyperloglogplus");
    let sketches = inproc::sketch_costs();

    step("end to end: client -> sessiondb serve");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let node_run = runtime.block_on(node::run(
        &options.node_binary,
        &workload,
        now_ms,
        profile.http_queries,
        profile.freshness_probes,
    ))?;
    drop(runtime);
    let sessiondb_exact = node_run.exact;
    let node = node_run.figures;
    let exact_visitors: Vec<i64> = (0..config.variations as u16)
        .map(|v| {
            sessiondb_exact
                .get(&config.variation_name(v))
                .map(|c| c.visitors)
                .unwrap_or(0)
        })
        .collect();

    step("peer: redis-server");
    let redis =
        redis::run(&options.redis_server, &workload, &exact_visitors).map_err(|e| format!("{e:#}"));
    if let Err(error) = &redis {
        eprintln!("[bench] REDIS SKIPPED: {error}");
    }
    step("peers: DuckDB and chDB");
    let peers = peers::run(
        &options.python,
        &options.peers_script,
        &csv,
        &config.experiment,
        PURCHASE_KEY,
        config.session_gap_ms,
    )
    .context("running the SQL peers")?;
    let distinct_events = workload.distinct_events;
    drop(workload);

    // The correctness gate.
    let mut mismatches = Vec::new();
    match &peers.duckdb {
        peers::Peer::Ran(duckdb) => {
            mismatches = exact::differences("sessiondb", &sessiondb_exact, "duckdb", &duckdb.exact);
        }
        peers::Peer::Failed { error } => {
            mismatches.push(format!(
                "DuckDB did not run, nothing to check against: {error}"
            ));
        }
    }
    let chdb_mismatches = match (&peers.duckdb, &peers.chdb) {
        (peers::Peer::Ran(d), peers::Peer::Ran(c)) => {
            exact::differences("duckdb", &d.exact, "chdb", &c.exact)
        }
        _ => Vec::new(),
    };

    step("writing the report");
    std::fs::create_dir_all(&options.out_dir)?;
    let text = plots::init_fonts();
    if !text {
        eprintln!("[bench] no DejaVu Sans font found: plots are drawn without text");
    }
    let report = Report {
        options,
        profile: &profile,
        config: &config,
        generate_s,
        distinct_events,
        engine: &engine,
        hll: &hll,
        sketches: &sketches,
        node: &node,
        redis: &redis,
        peers: &peers,
        mismatches: &mismatches,
        chdb_mismatches: &chdb_mismatches,
        total_s: run_started.elapsed().as_secs_f64(),
    };
    let markdown = report.markdown();
    println!("{markdown}");
    std::fs::write(options.out_dir.join("results.md"), &markdown)?;
    std::fs::write(
        options.out_dir.join("results.json"),
        serde_json::to_string_pretty(&report.json())?,
    )?;
    report.plots(text)?;

    if !mismatches.is_empty() {
        eprintln!("\n[bench] FAILED: SessionDB's exact results differ from DuckDB's:");
        for line in &mismatches {
            eprintln!("  {line}");
        }
        return Ok(false);
    }
    Ok(true)
}

struct Report<'a> {
    options: &'a Options,
    profile: &'a Profile,
    config: &'a ScaleConfig,
    generate_s: f64,
    distinct_events: usize,
    engine: &'a inproc::EngineFigures,
    hll: &'a [inproc::HllPoint],
    sketches: &'a inproc::SketchComparison,
    node: &'a node::NodeFigures,
    redis: &'a std::result::Result<redis::RedisFigures, String>,
    peers: &'a peers::Peers,
    mismatches: &'a [String],
    chdb_mismatches: &'a [String],
    total_s: f64,
}

/// Relative errors of (exact, estimate) pairs: (RMS, worst).
fn errors(pairs: &[(i64, f64)]) -> (f64, f64) {
    let relative: Vec<f64> = pairs
        .iter()
        .filter(|(exact, _)| *exact > 0)
        .map(|&(exact, estimate)| estimate / exact as f64 - 1.0)
        .collect();
    (
        inproc::rms(&relative),
        relative.iter().fold(0.0, |m, e| m.max(e.abs())),
    )
}

fn millions(value: f64) -> String {
    format!("{:.2} M", value / 1e6)
}

fn percent(value: f64) -> String {
    format!("{:.2} %", value * 100.0)
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 && ours.is_finite() {
        format!("{:.2}×", ours / theirs)
    } else {
        "—".to_string()
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

impl Report<'_> {
    /// Per peer function: per-variation (exact, estimate).
    fn peer_estimates(&self) -> Vec<(String, Vec<(i64, f64)>)> {
        let exact = |variation: &str| {
            self.node
                .active_visitor_estimates
                .iter()
                .zip(0..)
                .find(|(_, index)| self.config.variation_name(*index) == variation)
                .map(|((exact, _), _)| *exact)
                .unwrap_or(0)
        };
        let mut out = Vec::new();
        for (name, peer) in [("DuckDB", &self.peers.duckdb), ("chDB", &self.peers.chdb)] {
            if let peers::Peer::Ran(peer) = peer {
                for (function, estimates) in &peer.approx {
                    let pairs = estimates
                        .iter()
                        .map(|(variation, &estimate)| (exact(variation), estimate as f64))
                        .collect();
                    out.push((format!("{name} `{function}`"), pairs));
                }
            }
        }
        if let Ok(redis) = self.redis {
            out.push(("Redis `PFCOUNT`".to_string(), redis.estimates.clone()));
        }
        out
    }

    fn sql_events_per_second(&self, peer: &peers::Peer) -> Option<(f64, f64)> {
        match peer {
            peers::Peer::Ran(p) => Some((
                self.node.events_sent as f64 / (p.load_s + p.exact_s),
                p.exact_s,
            )),
            peers::Peer::Failed { .. } => None,
        }
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let node = self.node;
        let engine = self.engine;
        let hll_rms = inproc::rms(
            &self
                .hll
                .iter()
                .map(|p| p.rms_relative_error)
                .collect::<Vec<_>>(),
        );
        let hll_worst = self
            .hll
            .iter()
            .fold(0.0f64, |m, p| m.max(p.worst_relative_error));
        let (e2e_rms, e2e_worst) = errors(&node.active_visitor_estimates);
        let redis_rate = self.redis.as_ref().map(|r| r.ops_per_second).unwrap_or(0.0);
        let duck = self.sql_events_per_second(&self.peers.duckdb);
        let ch = self.sql_events_per_second(&self.peers.chdb);
        let _ = writeln!(
            s,
            "# SessionDB benchmark results\n\n{} profile, {} visitors, {} events sent ({} distinct; \
             10 variations × 10 Zipf browsers × 7 days of hourly buckets), seed {}. \
             Whole run {:.0} s (generation {:.1} s).\n",
            if self.options.quick { "Quick" } else { "Full" },
            self.config.visitors,
            node.events_sent,
            self.distinct_events,
            self.config.seed,
            self.total_s,
            self.generate_s
        );
        let _ = writeln!(
            s,
            "| figure | SessionDB | peer (same run) | ratio | target |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        let redis_cell = match self.redis {
            Ok(r) => format!("Redis PFADD ×64 pipeline: {}/s", millions(r.ops_per_second)),
            Err(e) => format!("Redis: not run ({e})"),
        };
        let _ = writeln!(
            s,
            "| engine alone, events/s per core | {} | {redis_cell} | {} | ≥ 10 M: {} |",
            millions(engine.events_per_second_per_core),
            ratio(engine.events_per_second_per_core, redis_rate),
            met(engine.events_per_second_per_core >= 10e6)
        );
        let _ = writeln!(
            s,
            "| end to end, Rust client → node, durable acks, events/s | {} | {redis_cell} | {} | ≥ 2 M: {} |",
            millions(node.events_per_second),
            ratio(node.events_per_second, redis_rate),
            met(node.events_per_second >= 2e6)
        );
        for (name, figures) in [("DuckDB", duck), ("chDB", ch)] {
            if let Some((rate, _)) = figures {
                let _ = writeln!(
                    s,
                    "| end to end vs batch SQL (load + exact queries), events/s | {} | {name}: {}/s | {} | — |",
                    millions(node.events_per_second),
                    millions(rate),
                    ratio(node.events_per_second, rate)
                );
            }
        }
        let _ = writeln!(
            s,
            "| CPU during ingest: client / server (s; µs per event) | {:.1} / {:.1} ({:.2} / {:.2}) | — | — | — |",
            node.client_cpu_seconds,
            node.server_cpu_seconds,
            node.client_cpu_seconds * 1e6 / node.events_sent as f64,
            node.server_cpu_seconds * 1e6 / node.events_sent as f64
        );
        let duck_query = match &self.peers.duckdb {
            peers::Peer::Ran(p) => Some(p.exact_s * 1e3),
            peers::Peer::Failed { .. } => None,
        };
        let _ = writeln!(
            s,
            "| results query over HTTP (10 var × 10 browsers × 168 h), p50 / p99 ms | {:.2} / {:.2} | {} | {} | p99 ≤ 5 ms: {} |",
            node.query_p50_ms,
            node.query_p99_ms,
            duck_query.map(|ms| format!("DuckDB exact queries (batch): {ms:.0} ms")).unwrap_or_else(|| "—".into()),
            duck_query.map(|ms| ratio(ms, node.query_p99_ms)).unwrap_or_else(|| "—".into()),
            met(node.query_p99_ms <= 5.0)
        );
        let _ = writeln!(
            s,
            "| results query in process (segment store only), p50 / p99 ms | {:.2} / {:.2} | — | — | — |",
            engine.query_p50_ms, engine.query_p99_ms
        );
        let _ = writeln!(
            s,
            "| freshness, ack → visible, p50 / p99 ms | {:.2} / {:.2} ({} not visible) | — | — | p99 ≤ 100 ms: {} |",
            node.freshness_p50_ms,
            node.freshness_p99_ms,
            node.freshness_not_visible,
            met(node.freshness_p99_ms <= 100.0 && node.freshness_not_visible == 0)
        );
        let _ = writeln!(
            s,
            "| memory per live visitor (RSS growth ÷ live visitors), bytes | {:.0} ({} live visitors, RSS {:.0} → {:.0} MB) | — | — | ≤ 150: {} |",
            node.bytes_per_live_visitor,
            node.status.live_visitors,
            node.rss_before_bytes as f64 / 1e6,
            node.rss_after_bytes as f64 / 1e6,
            met(node.bytes_per_live_visitor <= 150.0)
        );
        let _ = writeln!(
            s,
            "| memory per segment cell (same growth ÷ cells; upper bound), bytes | {:.0} ({} cells, {} retained events) | — | — | — |",
            node.bytes_per_segment_cell, node.status.segment_cells, node.status.retained_events
        );
        let _ = writeln!(
            s,
            "| checkpoint: size, time (pause) | {:.1} MB, {} ms ({} ms), {} visitors | — | — | — |",
            node.checkpoint.bytes as f64 / 1e6,
            node.checkpoint.duration_ms,
            node.checkpoint.pause_ms,
            node.checkpoint.visitors
        );
        let _ = writeln!(
            s,
            "| recovery after SIGKILL: `listening` line / health answers, ms | {:.0} / {:.0} ({} events since checkpoint; RSS after {:.0} MB) | — | — | ≤ 5 s for 10 M events: {} |",
            node.recovery_listening_ms,
            node.recovery_health_ms,
            node.events_since_checkpoint,
            node.rss_after_recovery_bytes as f64 / 1e6,
            if node.events_since_checkpoint >= 10_000_000 {
                met(node.recovery_health_ms <= 5_000.0)
            } else if node.recovery_health_ms <= 5_000.0 {
                "met at this size (fewer than 10 M events)"
            } else {
                "**not met**"
            }
        );
        let _ = writeln!(
            s,
            "| HLL p=14 in process: RMS / worst relative error ({} seeds × cardinalities) | {} / {} | — | — | RMS ≤ 0.9 %: {} |",
            self.hll.iter().map(|p| p.seeds).sum::<usize>(),
            percent(hll_rms),
            percent(hll_worst),
            met(hll_rms <= 0.009)
        );
        let _ = writeln!(
            s,
            "| HLL via the node: active visitors per variation, RMS / worst | {} / {} | — | — | — |",
            percent(e2e_rms),
            percent(e2e_worst)
        );
        for (name, pairs) in self.peer_estimates() {
            let (rms, worst) = errors(&pairs);
            let _ = writeln!(
                s,
                "| distinct visitors per variation, RMS / worst error | SessionDB: {} / {} | {name}: {} / {} | {} | — |",
                percent(e2e_rms),
                percent(e2e_worst),
                percent(rms),
                percent(worst),
                ratio(e2e_rms, rms)
            );
        }
        let _ = writeln!(
            s,
            "| exact metrics: SessionDB == DuckDB exact SQL | {} | chDB == DuckDB: {} | — | identical: {} |",
            if self.mismatches.is_empty() { "identical" } else { "**DIFFERENT**" },
            match (&self.peers.duckdb, &self.peers.chdb) {
                (peers::Peer::Ran(_), peers::Peer::Ran(_)) if self.chdb_mismatches.is_empty() => "identical".to_string(),
                (peers::Peer::Ran(_), peers::Peer::Ran(_)) => format!("{} differences", self.chdb_mismatches.len()),
                _ => "not compared".to_string(),
            },
            met(self.mismatches.is_empty())
        );
        let _ = writeln!(s, "\nPeers:");
        for (name, peer) in [("DuckDB", &self.peers.duckdb), ("chDB", &self.peers.chdb)] {
            match peer {
                peers::Peer::Ran(p) => {
                    let _ = writeln!(
                        s,
                        "- {name} {}: load + dedup {:.2} s, exact queries {:.2} s, approximate {:.3} s.",
                        p.version, p.load_s, p.exact_s, p.approx_s
                    );
                }
                peers::Peer::Failed { error } => {
                    let _ = writeln!(s, "- {name}: **NOT RUN** — {error}");
                }
            }
        }
        match self.redis {
            Ok(r) => {
                let _ = writeln!(
                    s,
                    "- Redis {}: {} PFADD in {:.2} s (64-deep pipeline, one connection).",
                    r.version, r.pfadd_ops, r.seconds
                );
            }
            Err(e) => {
                let _ = writeln!(s, "- Redis: **NOT RUN** — {e}");
            }
        }
        let _ = writeln!(
            s,
            "\nSender: binary encoding, {}-event batches, {} in flight. HLL cardinalities (seeds): {}.",
            node::SENDER_BATCH_EVENTS,
            node::SENDER_IN_FLIGHT,
            self.hll
                .iter()
                .map(|p| format!("{} ({})", p.cardinality, p.seeds))
                .collect::<Vec<_>>()
                .join(", ")
        );
        sketch_table(&mut s, self.sketches, self.hll);
        if !self.mismatches.is_empty() {
            let _ = writeln!(s, "\n**Exact results differ from DuckDB:**\n");
            for line in self.mismatches.iter().take(50) {
                let _ = writeln!(s, "- {line}");
            }
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "quick": self.options.quick,
            "visitors": self.config.visitors,
            "seed": self.config.seed,
            "generate_s": self.generate_s,
            "total_s": self.total_s,
            "engine": self.engine,
            "hll": self.hll,
            "sketches": self.sketches,
            "node": self.node,
            "redis": match self.redis { Ok(r) => json!(r), Err(e) => json!({"error": e}) },
            "peers": {
                "duckdb": peer_json(&self.peers.duckdb),
                "chdb": peer_json(&self.peers.chdb),
            },
            "peer_estimates": self.peer_estimates(),
            "exact_mismatches": self.mismatches,
            "chdb_mismatches": self.chdb_mismatches,
            "profile": {
                "engine_queries": self.profile.engine_queries,
                "http_queries": self.profile.http_queries,
                "freshness_probes": self.profile.freshness_probes,
            },
            "hour_ms": HOUR_MS,
        })
    }

    fn plots(&self, text: bool) -> Result<()> {
        let dir = &self.options.out_dir;
        plots::lines(
            &dir.join("throughput.png"),
            text,
            "End-to-end ingest (durable acks)",
            "seconds",
            "events/s",
            &[("SessionDB", self.node.throughput_series.clone())],
            false,
        )?;
        plots::histogram(
            &dir.join("query_latency.png"),
            text,
            "Results query latency over HTTP",
            &self.node.query_latencies_ms,
            40,
        )?;
        let mut series = vec![
            (
                "SessionDB RMS (in process)".to_string(),
                self.hll
                    .iter()
                    .map(|p| (p.cardinality as f64, p.rms_relative_error * 100.0))
                    .collect::<Vec<_>>(),
            ),
            (
                "hyperloglogplus RMS (in process)".to_string(),
                self.hll
                    .iter()
                    .map(|p| {
                        (
                            p.cardinality as f64,
                            p.hyperloglogplus_rms_relative_error * 100.0,
                        )
                    })
                    .collect(),
            ),
            (
                "SessionDB worst".to_string(),
                self.hll
                    .iter()
                    .map(|p| (p.cardinality as f64, p.worst_relative_error * 100.0))
                    .collect(),
            ),
        ];
        for (name, pairs) in self.peer_estimates() {
            let mean_exact =
                pairs.iter().map(|p| p.0).sum::<i64>() as f64 / pairs.len().max(1) as f64;
            let (rms, _) = errors(&pairs);
            series.push((format!("{name} RMS"), vec![(mean_exact, rms * 100.0)]));
        }
        let named: Vec<(&str, Vec<(f64, f64)>)> = series
            .iter()
            .map(|(n, p)| (n.as_str(), p.clone()))
            .collect();
        plots::lines(
            &dir.join("hll_error.png"),
            text,
            "Distinct-count error vs cardinality (%)",
            "cardinality",
            "relative error (%)",
            &named,
            true,
        )?;
        Ok(())
    }
}

fn peer_json(peer: &peers::Peer) -> serde_json::Value {
    match peer {
        peers::Peer::Ran(p) => json!({
            "version": p.version, "load_s": p.load_s, "exact_s": p.exact_s,
            "approx_s": p.approx_s, "approx": p.approx,
        }),
        peers::Peer::Failed { error } => json!({"error": error}),
    }
}

/// The node's own HyperLogLog beside `hyperloglogplus` on the same
/// hashes: why the node keeps its own sketch, re-measured every run.
fn sketch_table(s: &mut String, sketches: &inproc::SketchComparison, hll: &[inproc::HllPoint]) {
    let (ours, theirs) = (&sketches.ours, &sketches.hyperloglogplus);
    let _ = writeln!(
        s,
        "\n## Our sketch and hyperloglogplus (p={}, same hashes, one core)\n\n\
         | figure | SessionDB `Sketch` | hyperloglogplus 0.4 | ratio |\n|---|---|---|---|",
        sketches.precision
    );
    let rows = [
        (
            "insert, ns per element (1 M, dense)",
            ours.insert_ns,
            theirs.insert_ns,
        ),
        (
            "union of two dense sketches, µs",
            ours.merge_us,
            theirs.merge_us,
        ),
        (
            "estimate of a dense sketch, µs",
            ours.estimate_us,
            theirs.estimate_us,
        ),
    ];
    for (figure, ours, theirs) in rows {
        let _ = writeln!(
            s,
            "| {figure} | {ours:.2} | {theirs:.2} | {:.1}× |",
            theirs / ours
        );
    }
    for point in hll {
        let _ = writeln!(
            s,
            "| RMS / worst error at {} ({} seeds) | {} / {} | {} / {} | — |",
            point.cardinality,
            point.seeds,
            percent(point.rms_relative_error),
            percent(point.worst_relative_error),
            percent(point.hyperloglogplus_rms_relative_error),
            percent(point.hyperloglogplus_worst_relative_error),
        );
    }
}
