//! `ping` and `status`.

use super::table::format_utc;
use super::{CliError, Context, EXIT_OK};
use crate::Client;
use std::time::Instant;

/// `sessiondb-ctl ping`: `GET /v1/health`.
pub async fn ping(client: &Client, context: &Context) -> Result<u8, CliError> {
    let started = Instant::now();
    client
        .health()
        .await
        .map_err(|error| context.client_error(error))?;
    let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
    if context.json {
        context.print_json(&serde_json::json!({
            "node": context.node,
            "ok": true,
            "latency_ms": latency_ms,
        }))?;
    } else {
        println!("ok: {} answered in {latency_ms:.1} ms", context.node);
    }
    Ok(EXIT_OK)
}

/// `sessiondb-ctl status`: `GET /v1/status`.
pub async fn status(client: &Client, context: &Context) -> Result<u8, CliError> {
    let status = client
        .status()
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&status)?;
        return Ok(EXIT_OK);
    }
    let rows = [
        ("node", context.node.clone()),
        ("node id", status.node_id.to_string()),
        ("version", status.version.clone()),
        (
            "now",
            format!("{} ({})", format_utc(status.now_ms), status.now_ms),
        ),
        ("shards", status.shards.to_string()),
        ("projects", status.projects.to_string()),
        ("live visitors", status.live_visitors.to_string()),
        ("retained events", status.retained_events.to_string()),
        ("segment cells", status.segment_cells.to_string()),
        ("events accepted", status.events_accepted.to_string()),
        ("events duplicate", status.events_duplicate.to_string()),
        ("events rejected", status.events_rejected.to_string()),
    ];
    print_fields(&rows);
    Ok(EXIT_OK)
}

/// Prints `name: value` lines with the values lined up.
pub fn print_fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in rows {
        println!("{:width$}  {value}", format!("{name}:"), width = width + 1);
    }
}
