//! `GET /metrics` (admin token): the node's metrics in the Prometheus text
//! exposition format 0.0.4. Every family is listed in `docs/operations.md`
//! ("Metrics reference").

use super::AppState;
use crate::metrics::{resident_memory_bytes, Exposition, Kind};
use actix_web::{web, HttpResponse};
use std::sync::atomic::Ordering;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let status = state.engine.status().await;
    let engine = state.engine.metrics();
    let raft = state.cluster.placement.report();
    let mut out = Exposition::default();

    let name = "sessiondb_ingest_events_total";
    out.family(
        name,
        Kind::Counter,
        "Events answered by ingest, by outcome.",
    )
    .sample(
        name,
        &[("outcome", "accepted")],
        status.events_accepted as f64,
    )
    .sample(
        name,
        &[("outcome", "duplicate")],
        status.events_duplicate as f64,
    )
    .sample(
        name,
        &[("outcome", "rejected")],
        status.events_rejected as f64,
    );
    let name = "sessiondb_ingest_rejections_total";
    out.family(
        name,
        Kind::Counter,
        "Rejected events by reason code (docs/api.md); a code appears once it has occurred.",
    );
    for (code, count) in &engine.rejections {
        out.sample(name, &[("reason", code)], *count as f64);
    }
    let name = "sessiondb_project_events_total";
    out.family(
        name,
        Kind::Counter,
        "Events accepted by this node's ingest, per project; a project appears once it has an accepted event.",
    );
    for (project, count) in state.project_events.snapshot() {
        out.sample(name, &[("project", &project)], count as f64);
    }
    out.single(
        "sessiondb_project_events_overflow_total",
        Kind::Counter,
        "Accepted events of projects beyond the per-project counters' bound (PROJECT_COUNTERS_MAX).",
        state.project_events.overflow_events() as f64,
    );
    out.single(
        "sessiondb_ingest_batches_total",
        Kind::Counter,
        "Ingest calls answered (one per batch or compatible-format request).",
        engine.batches as f64,
    );

    out.single(
        "sessiondb_log_records_total",
        Kind::Counter,
        "Records written to the write-ahead log since the node started.",
        engine.log.records as f64,
    );
    out.single(
        "sessiondb_log_fsyncs_total",
        Kind::Counter,
        "fdatasync calls on log record data since the node started.",
        engine.log.fsyncs as f64,
    );
    out.histogram(
        "sessiondb_log_fsync_seconds",
        "Duration of each fdatasync on log record data.",
        &engine.log_fsync_seconds,
    );
    out.single(
        "sessiondb_log_group_records_max",
        Kind::Gauge,
        "Most records committed under one fsync since the node started.",
        engine.log.group_records_max as f64,
    );

    let name = "sessiondb_actor_queue_depth";
    out.family(
        name,
        Kind::Gauge,
        "Messages queued or being handled, summed over the actors of a kind.",
    )
    .sample(
        name,
        &[("actor", "session")],
        engine.session_queue_depth as f64,
    )
    .sample(
        name,
        &[("actor", "segment")],
        engine.segment_queue_depth as f64,
    );
    let name = "sessiondb_actor_queue_depth_max";
    out.family(
        name,
        Kind::Gauge,
        "Messages queued or being handled at the single deepest actor of a kind.",
    )
    .sample(
        name,
        &[("actor", "session")],
        engine.session_queue_depth_max as f64,
    )
    .sample(
        name,
        &[("actor", "segment")],
        engine.segment_queue_depth_max as f64,
    );
    out.single(
        "sessiondb_log_queued_records",
        Kind::Gauge,
        "Records waiting in the log's group-commit backlog.",
        engine.log_queued_records as f64,
    );
    let name = "sessiondb_requests_refused_total";
    let refusals = &state.admission.refusals;
    out.family(
        name,
        Kind::Counter,
        "Requests refused whole by a limit (docs/operations.md, Limits).",
    );
    for (limit, counter) in [
        ("in_flight", &refusals.in_flight),
        ("rate", &refusals.rate),
        ("overloaded", &refusals.overloaded),
        ("query_cost", &refusals.query_cost),
    ] {
        out.sample(
            name,
            &[("limit", limit)],
            counter.load(Ordering::Relaxed) as f64,
        );
    }
    out.single(
        "sessiondb_live_visitors",
        Kind::Gauge,
        "Visitors held in memory by the session actors.",
        status.live_visitors as f64,
    );
    out.single(
        "sessiondb_retained_events",
        Kind::Gauge,
        "Events held inside the lateness horizon.",
        status.retained_events as f64,
    );
    out.single(
        "sessiondb_segment_cells",
        Kind::Gauge,
        "Aggregate cells held by the segment actors.",
        status.segment_cells as f64,
    );

    out.single(
        "sessiondb_checkpoint_duration_seconds",
        Kind::Gauge,
        "Duration of the last checkpoint (0 before the first).",
        engine.checkpoint_last.as_secs_f64(),
    );
    out.single(
        "sessiondb_checkpoint_bytes",
        Kind::Gauge,
        "Size of the last checkpoint (0 before the first).",
        engine.checkpoint_last_bytes as f64,
    );
    out.single(
        "sessiondb_checkpoint_position",
        Kind::Gauge,
        "Log position the last checkpoint covers (0 before the first).",
        engine.checkpoint_last_position as f64,
    );

    out.histogram(
        "sessiondb_query_duration_seconds",
        "Duration of results and time-series requests, errors included.",
        &engine.query_seconds,
    );

    out.single(
        "sessiondb_raft_term",
        Kind::Gauge,
        "Current term of the placement Raft group as this node sees it.",
        raft.term as f64,
    );
    out.single(
        "sessiondb_raft_leader",
        Kind::Gauge,
        "Node id of the placement leader this node knows (0 if none).",
        raft.leader.unwrap_or(0) as f64,
    );
    out.single(
        "sessiondb_raft_applied_index",
        Kind::Gauge,
        "Last placement log index applied on this node (0 if none).",
        raft.applied_index.unwrap_or(0) as f64,
    );
    out.single(
        "sessiondb_raft_last_log_index",
        Kind::Gauge,
        "Last placement log index stored on this node (0 if none).",
        raft.last_log_index.unwrap_or(0) as f64,
    );

    let moves = &state.cluster.mover.counters;
    let name = "sessiondb_shard_moves_total";
    out.family(
        name,
        Kind::Counter,
        "Shard moves this node ran as placement leader, by outcome.",
    )
    .sample(
        name,
        &[("outcome", "committed")],
        moves.committed.load(Ordering::Relaxed) as f64,
    )
    .sample(
        name,
        &[("outcome", "failed")],
        moves.failed.load(Ordering::Relaxed) as f64,
    );
    out.histogram(
        "sessiondb_shard_move_duration_seconds",
        "Duration of each shard move this node ran as leader, failed ones included.",
        &moves.seconds.snapshot(),
    );

    let rss = resident_memory_bytes().unwrap_or(0);
    out.single(
        "sessiondb_process_resident_memory_bytes",
        Kind::Gauge,
        "Resident set size of the process (VmRSS; 0 where unavailable).",
        rss as f64,
    );
    let per_visitor = if status.live_visitors == 0 {
        0.0
    } else {
        rss as f64 / status.live_visitors as f64
    };
    out.single(
        "sessiondb_memory_bytes_per_visitor_estimate",
        Kind::Gauge,
        "Resident memory divided by live visitors (0 when none); an upper bound that includes fixed costs.",
        per_visitor,
    );

    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(out.finish())
}
