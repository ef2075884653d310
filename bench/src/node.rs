//! End to end against a real `sessiondb serve`: Rust client ingest with
//! durable acks, query latency, freshness, memory, checkpoint, recovery.

use crate::exact::{differences, from_results, ExactResults};
use crate::inproc::percentile;
use crate::process::{clock_ticks_per_second, cpu_seconds, rss_bytes, start_node, temp_dir};
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use sessiondb_client::protocol::{
    CheckpointResponse, CreateProject, Decision, Event, EventType, NodeStatus,
    ProjectSettingsPatch, Timestamp,
};
use sessiondb_client::{Client, Encoding, ResultsRequest, SenderConfig};
use sessiondb_workload::scale::{BROWSER_ATTRIBUTE, PURCHASE_KEY};
use sessiondb_workload::{ScaleWorkload, DAY_MS, HOUR_MS};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Throughput is sampled this often during ingest.
const SAMPLE_INTERVAL_MS: u64 = 250;
/// Most polls of one freshness probe before it counts as not visible.
const FRESHNESS_POLLS_MAX: usize = 1_000;
/// Most health checks while waiting for a restarted node.
const HEALTH_POLLS_MAX: usize = 10_000;
/// Events per batch the sender cuts.
pub const SENDER_BATCH_EVENTS: usize = 5_000;
pub const SENDER_IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, Serialize)]
pub struct NodeFigures {
    pub events_sent: usize,
    pub ingest_seconds: f64,
    pub events_per_second: f64,
    pub client_cpu_seconds: f64,
    pub server_cpu_seconds: f64,
    /// (seconds since start, events/s over the last interval).
    pub throughput_series: Vec<(f64, f64)>,
    pub query_latencies_ms: Vec<f64>,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
    pub freshness_p50_ms: f64,
    pub freshness_p99_ms: f64,
    pub freshness_not_visible: usize,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub status: NodeStatus,
    pub bytes_per_live_visitor: f64,
    pub bytes_per_segment_cell: f64,
    pub checkpoint: CheckpointResponse,
    pub events_since_checkpoint: usize,
    pub recovery_listening_ms: f64,
    pub recovery_health_ms: f64,
    pub rss_after_recovery_bytes: u64,
    /// Active-visitor estimates per variation: (exact visitors, estimate).
    pub active_visitor_estimates: Vec<(i64, f64)>,
}

pub struct NodeRun {
    pub figures: NodeFigures,
    pub exact: ExactResults,
}

pub async fn run(
    binary: &Path,
    workload: &ScaleWorkload,
    now_ms: i64,
    queries: usize,
    freshness_probes: usize,
) -> Result<NodeRun> {
    let config = &workload.config;
    let data_dir = temp_dir("sessiondb-bench-node")?;
    let mut node = start_node(binary, data_dir.path(), now_ms)?;
    let pid = node.guard.pid().to_string();
    let client = Client::new(node.base_url.clone()).with_token(crate::process::ADMIN_TOKEN);
    client
        .create_project(&CreateProject {
            name: config.project.clone(),
            settings: ProjectSettingsPatch {
                allowed_lateness_ms: Some(7 * DAY_MS),
                session_gap_ms: Some(config.session_gap_ms),
                breakdown_attributes: Some(vec![BROWSER_ATTRIBUTE.to_string()]),
                ..ProjectSettingsPatch::default()
            },
        })
        .await
        .context("create the bench project")?;
    let rss_before_bytes = rss_bytes(&pid)?;
    let ticks = clock_ticks_per_second();
    let server_cpu_before = cpu_seconds(&pid, ticks)?;
    let client_cpu_before = cpu_seconds("self", ticks)?;

    // First half, checkpoint, second half: recovery then replays the
    // second half from the log.
    let half = workload.arrival.len() / 2;
    let sender = client.sender(SenderConfig {
        batch_events_max: SENDER_BATCH_EVENTS,
        buffer_events_max: 20 * SENDER_BATCH_EVENTS,
        in_flight_batches_max: SENDER_IN_FLIGHT,
        encoding: Encoding::Binary,
        ..SenderConfig::default()
    })?;
    let mut series = Vec::new();
    let started = Instant::now();
    let first = send(&sender, workload, 0..half, started, &mut series).await?;
    let checkpoint_cpu = (cpu_seconds(&pid, ticks)?, cpu_seconds("self", ticks)?);
    let checkpoint: CheckpointResponse = post_json(&client, "/v1/admin/checkpoint").await?;
    let checkpoint_cpu = (
        cpu_seconds(&pid, ticks)? - checkpoint_cpu.0,
        cpu_seconds("self", ticks)? - checkpoint_cpu.1,
    );
    let resumed = Instant::now();
    let second = send(
        &sender,
        workload,
        half..workload.arrival.len(),
        resumed - Duration::from_secs_f64(first),
        &mut series,
    )
    .await?;
    let ingest_seconds = first + second;
    let server_cpu_seconds = cpu_seconds(&pid, ticks)? - server_cpu_before - checkpoint_cpu.0;
    let client_cpu_seconds = cpu_seconds("self", ticks)? - client_cpu_before - checkpoint_cpu.1;
    let rss_after_bytes = rss_bytes(&pid)?;
    let status = client.status().await?;

    let to_ms = config.base_ms + config.span_ms;
    let mut request = ResultsRequest::new(&config.project, &config.experiment);
    request.from = Some(config.base_ms);
    request.to = Some(to_ms);
    request.keys = vec![PURCHASE_KEY.to_string()];
    let whole = client.results(&request).await?;
    let active_visitor_estimates = whole.groups[0]
        .variations
        .iter()
        .map(|v| (v.visitors, v.active_visitors.value))
        .collect();
    request.breakdown = Some(BROWSER_ATTRIBUTE.to_string());
    let by_browser = client.results(&request).await?;
    let exact = from_results(&whole, &by_browser)?;

    let mut query_latencies_ms = Vec::with_capacity(queries);
    for _ in 0..queries {
        let started = Instant::now();
        let answer = client.results(&request).await?;
        query_latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(answer);
    }
    let mut sorted = query_latencies_ms.clone();
    sorted.sort_by(f64::total_cmp);

    let (freshness, freshness_not_visible) =
        freshness(&client, workload, now_ms, freshness_probes).await?;

    // Kill -9 and restart on the same data.
    let before = client.status().await?;
    let before_results = from_results(&whole, &client.results(&request).await?)?;
    node.guard.kill();
    let restarted = Instant::now();
    node = start_node(binary, data_dir.path(), now_ms)?;
    let client = Client::new(node.base_url.clone()).with_token(crate::process::ADMIN_TOKEN);
    let mut healthy = false;
    for _ in 0..HEALTH_POLLS_MAX {
        if client.health().await.is_ok() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    ensure!(healthy, "the restarted node never answered /v1/health");
    let recovery_health_ms = restarted.elapsed().as_secs_f64() * 1e3;
    let after = client.status().await?;
    let recovered = client.results(&request).await?;
    ensure!(
        after.live_visitors == before.live_visitors
            && after.retained_events == before.retained_events
            && after.segment_cells == before.segment_cells,
        "recovery lost state: before {before:?}, after {after:?}"
    );
    let recovered = from_results(&whole, &recovered)?;
    let lost = differences(
        "before the kill",
        &before_results,
        "after recovery",
        &recovered,
    );
    ensure!(lost.is_empty(), "results after recovery differ: {lost:?}");
    let rss_after_recovery_bytes = rss_bytes(&node.guard.pid().to_string())?;
    node.guard.kill();

    let live = status.live_visitors.max(1) as f64;
    let grown = rss_after_bytes.saturating_sub(rss_before_bytes) as f64;
    Ok(NodeRun {
        figures: NodeFigures {
            events_sent: workload.arrival.len(),
            ingest_seconds,
            events_per_second: workload.arrival.len() as f64 / ingest_seconds,
            client_cpu_seconds,
            server_cpu_seconds,
            throughput_series: series,
            query_p50_ms: percentile(&sorted, 0.5),
            query_p99_ms: percentile(&sorted, 0.99),
            query_latencies_ms,
            freshness_p50_ms: percentile(&freshness, 0.5),
            freshness_p99_ms: percentile(&freshness, 0.99),
            freshness_not_visible,
            rss_before_bytes,
            rss_after_bytes,
            bytes_per_live_visitor: grown / live,
            bytes_per_segment_cell: grown / status.segment_cells.max(1) as f64,
            status,
            checkpoint,
            events_since_checkpoint: workload.arrival.len() - half,
            recovery_listening_ms: node.listening_ms,
            recovery_health_ms,
            rss_after_recovery_bytes,
            active_visitor_estimates,
        },
        exact,
    })
}

/// Tracks events `range` of the arrival order and flushes; answers the
/// seconds it took. Samples the resolved count into `series`.
async fn send(
    sender: &sessiondb_client::Sender,
    workload: &ScaleWorkload,
    range: std::ops::Range<usize>,
    origin: Instant,
    series: &mut Vec<(f64, f64)>,
) -> Result<f64> {
    let started = Instant::now();
    let resolved = sender.resolved_events();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut points = Vec::new();
            let mut last = (Instant::now(), *resolved.borrow());
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(SAMPLE_INTERVAL_MS)).await;
                let now = (Instant::now(), *resolved.borrow());
                let rate = (now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64();
                points.push(((now.0 - origin).as_secs_f64(), rate));
                last = now;
            }
            points
        }
    });
    for event in &workload.arrival[range] {
        sender.track(workload.to_event(event)).await?;
    }
    let report = sender.flush().await?;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    series.extend(sampler.await?);
    ensure!(
        report.rejected.is_empty() && report.failed.is_empty() && report.details_dropped == 0,
        "the node rejected or failed events: {} rejected (first: {:?}), {} failed (first: {:?})",
        report.rejected.len(),
        report.rejected.first(),
        report.failed.len(),
        report.failed.first()
    );
    Ok(seconds)
}

async fn post_json<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> Result<T> {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", client.base_url()))
        .bearer_auth(crate::process::ADMIN_TOKEN)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "{path}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

/// Ack → visible: one new visitor per probe, polled until its variation's
/// visitor count includes it.
async fn freshness(
    client: &Client,
    workload: &ScaleWorkload,
    now_ms: i64,
    probes: usize,
) -> Result<(Vec<f64>, usize)> {
    let config = &workload.config;
    let to_ms = config.base_ms + config.span_ms;
    let mut request = ResultsRequest::new(&config.project, &config.experiment);
    request.from = Some(to_ms - HOUR_MS);
    request.to = Some(to_ms);
    request.keys = vec![PURCHASE_KEY.to_string()];
    let variation = config.variation_name(0);
    let count = |results: &sessiondb_client::protocol::ResultsResponse| {
        results.groups[0]
            .variations
            .iter()
            .find(|v| v.variation == variation)
            .map(|v| v.visitors)
            .unwrap_or(0)
    };
    let mut expected = count(&client.results(&request).await?);
    let mut delays_ms = Vec::with_capacity(probes);
    let mut not_visible = 0;
    for probe in 0..probes {
        let event = Event {
            id: format!("fresh-{probe}"),
            project: config.project.clone(),
            visitor: format!("fresh-{probe}"),
            ts: Timestamp::Milliseconds(now_ms - 1_000),
            event_type: EventType::Decision,
            key: None,
            value: None,
            attributes: Default::default(),
            decisions: vec![Decision {
                experiment: config.experiment.clone(),
                variation: variation.clone(),
            }],
        };
        let ack = client.send_with(&[event], Encoding::Binary).await?;
        let acked = Instant::now();
        ensure!(ack.accepted == 1, "freshness probe not accepted: {ack:?}");
        expected += 1;
        let mut seen = false;
        for _ in 0..FRESHNESS_POLLS_MAX {
            if count(&client.results(&request).await?) >= expected {
                seen = true;
                break;
            }
        }
        if seen {
            delays_ms.push(acked.elapsed().as_secs_f64() * 1e3);
        } else {
            not_visible += 1;
        }
    }
    delays_ms.sort_by(f64::total_cmp);
    Ok((delays_ms, not_visible))
}
