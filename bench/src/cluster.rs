//! `sessiondb-bench --cluster`: cluster figures (docs/benchmarks.md,
//! "Cluster"; docs/cluster.md, "Measured").
//!
//! 1. Ingest throughput (client → cluster, durable acks, `ShardMapRouter`)
//!    and results-query latency on 1 node and on 3 nodes, all on this
//!    machine: the same workload, the same shard count, every node a
//!    separate `sessiondb serve` process. The 3-node cluster is rebalanced
//!    before ingest, so each node owns a third of the shards; queries go to
//!    node 1, which fans out.
//! 2. Shard moves by shard size: a 2-node cluster, one shard loaded with
//!    N visitors on node 1, moved to node 2 while a prober sends one event
//!    of that shard at a time through a `ShardMapRouter` sender. Reported:
//!    the move's own duration and bytes, and the longest acknowledgement
//!    the prober waited during the move (the pause a client sees: fenced,
//!    then rerouted to the new owner).

use crate::inproc::percentile;
use crate::process::{
    clock_ticks_per_second, cpu_seconds, start_node_with_args, temp_dir, Node, TempDir,
};
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use sessiondb_client::protocol::hashing::shard_of;
use sessiondb_client::protocol::{
    ClusterStatus, CreateProject, Decision, Event, EventType, ProjectSettingsPatch,
    RebalanceReport, ShardMoveReport, Timestamp,
};
use sessiondb_client::{Client, Encoding, ResultsRequest, Sender, SenderConfig, ShardMapRouter};
use sessiondb_workload::scale::{BROWSER_ATTRIBUTE, PURCHASE_KEY};
use sessiondb_workload::{ScaleWorkload, DAY_MS};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cluster secret of the benchmark's nodes.
const CLUSTER_SECRET: &str = "sessiondb-bench-cluster-secret-0123456789";
/// Shards of every benchmark cluster: the node's default.
pub const SHARDS: u32 = 256;
/// Most rebalance calls before the harness gives up (each carries out at
/// most the node's `REBALANCE_MOVES_MAX` moves).
const REBALANCE_CALLS_MAX: usize = 16;
/// Most polls of `GET /v1/cluster` while waiting for members.
const MEMBERSHIP_POLLS_MAX: usize = 2_400;
const MEMBERSHIP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Events per visitor loaded into the moved shard: a decision, a pageview
/// and a purchase.
const MOVE_EVENTS_PER_VISITOR: usize = 3;
/// Distinct visitors the prober cycles through (each probe event has its
/// own id).
const PROBE_VISITORS: usize = 1_000;
/// The project of the move measurements.
const MOVE_PROJECT: &str = "moves";

#[derive(Debug, Clone, Serialize)]
pub struct IngestFigures {
    pub nodes: usize,
    pub events: usize,
    pub seconds: f64,
    pub events_per_second: f64,
    /// CPU seconds of every node process together during ingest.
    pub server_cpu_seconds: f64,
    pub client_cpu_seconds: f64,
    /// Events per CPU second of the nodes: what one core of node work buys.
    pub events_per_server_cpu_second: f64,
    pub reroutes: u64,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MoveFigures {
    pub visitors: usize,
    pub events: usize,
    pub bytes: u64,
    pub move_ms: u64,
    /// Longest acknowledgement of a probe event during the move.
    pub probe_max_ms: f64,
    pub probe_p50_ms: f64,
    pub probes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterFigures {
    pub ingest: Vec<IngestFigures>,
    pub moves: Vec<MoveFigures>,
}

/// Starts `count` nodes: node 1 bootstraps, the others join it.
async fn start_cluster(
    binary: &std::path::Path,
    count: u64,
    now_ms: i64,
) -> Result<Vec<(Node, TempDir)>> {
    let mut nodes: Vec<(Node, TempDir)> = Vec::new();
    for id in 1..=count {
        let data_dir = temp_dir(&format!("sessiondb-bench-cluster-{id}"))?;
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--cluster-secret".to_string(),
            CLUSTER_SECRET.to_string(),
            "--shards".to_string(),
            SHARDS.to_string(),
        ];
        if let Some((first, _)) = nodes.first() {
            args.push("--join".to_string());
            args.push(first.base_url.clone());
        }
        let node = start_node_with_args(binary, data_dir.path(), now_ms, &args)?;
        nodes.push((node, data_dir));
    }
    let first = admin_client(nodes[0].0.base_url.clone());
    let mut agreed = false;
    for _ in 0..MEMBERSHIP_POLLS_MAX {
        if let Ok(status) = first.cluster_status().await {
            if status.members.len() == count as usize && !status.shards.is_empty() {
                agreed = true;
                break;
            }
        }
        tokio::time::sleep(MEMBERSHIP_POLL_INTERVAL).await;
    }
    ensure!(agreed, "the {count} nodes never formed a cluster");
    Ok(nodes)
}

async fn leader(client: &Client) -> Result<ClusterStatus> {
    Ok(client.cluster_status().await?)
}

/// Rebalances until the plan is empty; answers the moves made.
async fn rebalance(nodes: &[(Node, TempDir)]) -> Result<usize> {
    let status = leader(&admin_client(nodes[0].0.base_url.clone())).await?;
    let leader_id = status.leader.context("a leader")?;
    let leader = admin_client(nodes[usize::try_from(leader_id - 1)?].0.base_url.clone());
    let mut moves = 0;
    for _ in 0..REBALANCE_CALLS_MAX {
        let report: RebalanceReport = leader.rebalance().await?;
        ensure!(
            report.failed.is_none(),
            "rebalance failed: {:?}",
            report.failed
        );
        moves += report.moved.len();
        if report.skipped.is_empty() {
            return Ok(moves);
        }
    }
    anyhow::bail!("the rebalance did not finish in {REBALANCE_CALLS_MAX} calls")
}

/// Creates the project through node 1 (placement replicates it) and polls
/// until every node knows it.
async fn create_project(nodes: &[(Node, TempDir)], request: &CreateProject) -> Result<()> {
    admin_client(nodes[0].0.base_url.clone())
        .create_project(request)
        .await?;
    for (node, _) in nodes {
        let client = admin_client(node.base_url.clone());
        let mut known = false;
        for _ in 0..MEMBERSHIP_POLLS_MAX {
            if client.project(&request.name).await.is_ok() {
                known = true;
                break;
            }
            tokio::time::sleep(MEMBERSHIP_POLL_INTERVAL).await;
        }
        ensure!(
            known,
            "project {} never reached {}",
            request.name,
            node.base_url
        );
    }
    Ok(())
}

fn sender_config() -> SenderConfig {
    SenderConfig {
        batch_events_max: crate::node::SENDER_BATCH_EVENTS,
        buffer_events_max: 20 * crate::node::SENDER_BATCH_EVENTS,
        in_flight_batches_max: crate::node::SENDER_IN_FLIGHT,
        encoding: Encoding::Binary,
        retry_attempts_max: 30,
        ..SenderConfig::default()
    }
}

/// Ingest and query figures of a `count`-node cluster.
pub async fn ingest_and_query(
    binary: &std::path::Path,
    count: u64,
    workload: &ScaleWorkload,
    now_ms: i64,
    queries: usize,
) -> Result<IngestFigures> {
    let config = &workload.config;
    let nodes = start_cluster(binary, count, now_ms).await?;
    if count > 1 {
        rebalance(&nodes).await?;
    }
    create_project(
        &nodes,
        &CreateProject {
            name: config.project.clone(),
            settings: ProjectSettingsPatch {
                allowed_lateness_ms: Some(7 * DAY_MS),
                session_gap_ms: Some(config.session_gap_ms),
                breakdown_attributes: Some(vec![BROWSER_ATTRIBUTE.to_string()]),
                ..ProjectSettingsPatch::default()
            },
        },
    )
    .await?;
    let urls: Vec<String> = nodes
        .iter()
        .map(|(node, _)| node.base_url.clone())
        .collect();
    let router =
        Arc::new(ShardMapRouter::connect(&admin_client(urls[0].clone()), urls.clone()).await?);
    let sender = Sender::new(router, sender_config())?;
    let ticks = clock_ticks_per_second();
    let pids: Vec<String> = nodes
        .iter()
        .map(|(node, _)| node.guard.pid().to_string())
        .collect();
    let server_cpu =
        |pids: &[String]| -> Result<f64> { pids.iter().map(|pid| cpu_seconds(pid, ticks)).sum() };
    let server_before = server_cpu(&pids)?;
    let client_before = cpu_seconds("self", ticks)?;
    let started = Instant::now();
    for event in &workload.arrival {
        sender.track(workload.to_event(event)).await?;
    }
    let report = sender.flush().await?;
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu_seconds = server_cpu(&pids)? - server_before;
    let client_cpu_seconds = cpu_seconds("self", ticks)? - client_before;
    ensure!(
        report.is_success(),
        "{count} nodes: {} rejected (first {:?}), {} failed (first {:?})",
        report.rejected.len(),
        report.rejected.first(),
        report.failed.len(),
        report.failed.first()
    );

    let client = admin_client(urls[0].clone());
    let mut request = ResultsRequest::new(&config.project, &config.experiment);
    request.from = Some(config.base_ms);
    request.to = Some(config.base_ms + config.span_ms);
    request.keys = vec![PURCHASE_KEY.to_string()];
    request.breakdown = Some(BROWSER_ATTRIBUTE.to_string());
    let first = client.results(&request).await?;
    ensure!(!first.partial, "a partial answer: {first:?}");
    let mut latencies_ms = Vec::with_capacity(queries);
    for _ in 0..queries {
        let started = Instant::now();
        let answer = client.results(&request).await?;
        latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(answer);
    }
    latencies_ms.sort_by(f64::total_cmp);
    Ok(IngestFigures {
        nodes: count as usize,
        events: workload.arrival.len(),
        seconds,
        events_per_second: workload.arrival.len() as f64 / seconds,
        server_cpu_seconds,
        client_cpu_seconds,
        events_per_server_cpu_second: workload.arrival.len() as f64 / server_cpu_seconds,
        reroutes: sender.stats().reroutes,
        query_p50_ms: percentile(&latencies_ms, 0.5),
        query_p99_ms: percentile(&latencies_ms, 0.99),
    })
}

/// `count` visitor names (after `skip` others) whose shard is `shard`.
fn visitors_in_shard(shard: u32, skip: usize, count: usize) -> Vec<String> {
    (0u64..)
        .map(|n| format!("m{shard}-{n}"))
        .filter(|visitor| shard_of(MOVE_PROJECT, visitor, SHARDS) == shard)
        .skip(skip)
        .take(count)
        .collect()
}

fn move_events(visitor: &str, ts_ms: i64) -> [Event; MOVE_EVENTS_PER_VISITOR] {
    let event = |suffix: &str, event_type: EventType, offset_ms: i64| Event {
        id: format!("{visitor}-{suffix}"),
        project: MOVE_PROJECT.to_string(),
        visitor: visitor.to_string(),
        ts: Timestamp::Milliseconds(ts_ms + offset_ms),
        event_type,
        key: (event_type == EventType::Custom).then(|| PURCHASE_KEY.to_string()),
        value: None,
        attributes: Default::default(),
        decisions: if event_type == EventType::Decision {
            vec![Decision {
                experiment: "move".into(),
                variation: "a".into(),
            }]
        } else {
            Vec::new()
        },
    };
    [
        event("d", EventType::Decision, 0),
        event("p", EventType::Pageview, 1_000),
        event("c", EventType::Custom, 2_000),
    ]
}

/// Move time and client-visible pause for each shard size in `sizes`.
pub async fn shard_moves(
    binary: &std::path::Path,
    sizes: &[usize],
    now_ms: i64,
) -> Result<Vec<MoveFigures>> {
    let nodes = start_cluster(binary, 2, now_ms).await?;
    create_project(
        &nodes,
        &CreateProject {
            name: MOVE_PROJECT.to_string(),
            settings: ProjectSettingsPatch {
                allowed_lateness_ms: Some(7 * DAY_MS),
                ..ProjectSettingsPatch::default()
            },
        },
    )
    .await?;
    let urls: Vec<String> = nodes
        .iter()
        .map(|(node, _)| node.base_url.clone())
        .collect();
    let status = leader(&admin_client(urls[0].clone())).await?;
    let leader_url = urls[usize::try_from(status.leader.context("a leader")? - 1)?].clone();
    let leader = admin_client(leader_url);
    let mut figures = Vec::new();
    for (index, &visitors) in sizes.iter().enumerate() {
        let shard = index as u32;
        let router =
            Arc::new(ShardMapRouter::connect(&admin_client(urls[0].clone()), urls.clone()).await?);
        let loader = Sender::new(router.clone(), sender_config())?;
        let names = visitors_in_shard(shard, 0, visitors);
        let ts_ms = now_ms - DAY_MS;
        for visitor in &names {
            for event in move_events(visitor, ts_ms) {
                loader.track(event).await?;
            }
        }
        let loaded = loader.flush().await?;
        ensure!(loaded.is_success(), "loading shard {shard}: {loaded:?}");

        // The prober: one event of the shard at a time, until the move ends.
        let prober = Sender::new(
            router.clone(),
            SenderConfig {
                batch_events_max: 1,
                linger: Duration::from_millis(0),
                retry_attempts_max: 200,
                retry_backoff_initial: Duration::from_millis(1),
                retry_backoff_max: Duration::from_millis(20),
                ..SenderConfig::default()
            },
        )?;
        let probe_visitors = visitors_in_shard(shard, visitors, PROBE_VISITORS);
        let moving = Arc::new(AtomicBool::new(true));
        let probing = tokio::spawn({
            let moving = Arc::clone(&moving);
            async move {
                let mut latencies_ms = Vec::new();
                for visitor in probe_visitors.iter().cycle() {
                    if !moving.load(Ordering::Relaxed) {
                        break;
                    }
                    let [mut event, _, _] = move_events(visitor, ts_ms);
                    event.id = format!("probe-{}-{}", visitor, latencies_ms.len());
                    let started = Instant::now();
                    prober.track(event).await?;
                    let report = prober.flush().await?;
                    ensure!(report.is_success(), "a probe failed: {report:?}");
                    latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
                }
                Ok::<_, anyhow::Error>(latencies_ms)
            }
        });
        let moved: ShardMoveReport = leader
            .move_shard(shard, 2)
            .await
            .with_context(|| format!("moving shard {shard}"))?;
        moving.store(false, Ordering::Relaxed);
        let mut latencies_ms = probing.await??;
        latencies_ms.sort_by(f64::total_cmp);
        figures.push(MoveFigures {
            visitors,
            events: visitors * MOVE_EVENTS_PER_VISITOR,
            bytes: moved.bytes,
            move_ms: moved.duration_ms,
            probe_max_ms: latencies_ms.last().copied().unwrap_or(0.0),
            probe_p50_ms: percentile(&latencies_ms, 0.5),
            probes: latencies_ms.len(),
        });
    }
    Ok(figures)
}

/// The markdown table of the figures.
pub fn render(figures: &ClusterFigures, command: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "Command: `{command}`\n");
    let _ = writeln!(
        out,
        "| nodes | events | ingest s | events/s | node CPU s | events per node CPU s | client CPU s | reroutes | query p50 ms | query p99 ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for row in &figures.ingest {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} | {} | {:.1} | {:.1} |",
            row.nodes,
            row.events,
            row.seconds,
            row.events_per_second,
            row.server_cpu_seconds,
            row.events_per_server_cpu_second,
            row.client_cpu_seconds,
            row.reroutes,
            row.query_p50_ms,
            row.query_p99_ms
        );
    }
    let _ = writeln!(
        out,
        "\n| visitors in the shard | events | state bytes | move ms | longest probe ack during the move ms | probe p50 ms | probes |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in &figures.moves {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {} |",
            row.visitors,
            row.events,
            row.bytes,
            row.move_ms,
            row.probe_max_ms,
            row.probe_p50_ms,
            row.probes
        );
    }
    out
}

/// A client of the node at `base_url` with the admin token the harness
/// starts nodes with.
fn admin_client(base_url: impl Into<String>) -> Client {
    Client::new(base_url).with_token(crate::process::ADMIN_TOKEN)
}
