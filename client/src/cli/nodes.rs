//! `nodes list`, `nodes drain`, `nodes undrain` and `nodes remove`.

use super::cluster::members_table;
use super::node::print_fields;
use super::{CliError, Context, EXIT_FAILED, EXIT_OK};
use crate::protocol::DrainReport;
use crate::Client;

/// The most drain calls one `nodes drain` makes: each moves up to the
/// server's per-call bound, so this covers every shard of the largest
/// cluster with room to spare, and a drain that makes no progress stops.
const DRAIN_CALLS_MAX: usize = 256;

/// `sessiondb-ctl nodes list`: the members of `GET /v1/cluster`.
pub async fn list(client: &Client, context: &Context) -> Result<u8, CliError> {
    let status = client
        .cluster_status()
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&status.members)?;
        return Ok(EXIT_OK);
    }
    print!("{}", members_table(&status).render());
    Ok(EXIT_OK)
}

/// `sessiondb-ctl nodes drain <node>`: drain calls until the node owns no
/// shard, with a progress line per call. Exits with `EXIT_FAILED` when a
/// move failed or a call made no progress.
pub async fn drain(client: &Client, context: &Context, node_id: u64) -> Result<u8, CliError> {
    let mut reports: Vec<DrainReport> = Vec::new();
    let mut moved_total = 0_usize;
    for _ in 0..DRAIN_CALLS_MAX {
        let report = client
            .drain_node(node_id)
            .await
            .map_err(|error| context.client_error(error))?;
        moved_total += report.moves.moved.len();
        eprintln!(
            "draining node {node_id}: {moved_total} shards moved, {} left",
            report.remaining_shards
        );
        let stalled = report.moves.moved.is_empty() && report.remaining_shards > 0;
        let done = report.remaining_shards == 0;
        let failed = report.moves.failed.clone();
        reports.push(report);
        if let Some(failed) = failed {
            eprintln!(
                "error: moving shard {} to node {} failed: {} ({}); run the drain again",
                failed.shard, failed.to, failed.message, failed.error
            );
            return finish(context, &reports, EXIT_FAILED);
        }
        if done {
            return finish(context, &reports, EXIT_OK);
        }
        if stalled {
            eprintln!("error: no shard moved in the last call; check `sessiondb-ctl shards list`");
            return finish(context, &reports, EXIT_FAILED);
        }
    }
    finish(context, &reports, EXIT_FAILED)
}

fn finish(context: &Context, reports: &[DrainReport], code: u8) -> Result<u8, CliError> {
    if context.json {
        context.print_json(&reports)?;
    } else if let Some(last) = reports.last() {
        let moved: usize = reports.iter().map(|report| report.moves.moved.len()).sum();
        print_fields(&[
            ("node", last.node_id.to_string()),
            ("shards moved", moved.to_string()),
            ("shards left", last.remaining_shards.to_string()),
        ]);
    }
    Ok(code)
}

/// `sessiondb-ctl nodes undrain <node>`.
pub async fn undrain(client: &Client, context: &Context, node_id: u64) -> Result<u8, CliError> {
    let report = client
        .undrain_node(node_id)
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&report)?;
        return Ok(EXIT_OK);
    }
    print_fields(&[
        ("node", report.node_id.to_string()),
        ("was draining", report.was_draining.to_string()),
    ]);
    eprintln!(
        "node {node_id} may receive shards again; `sessiondb-ctl shards rebalance` gives it some"
    );
    Ok(EXIT_OK)
}

/// `sessiondb-ctl nodes remove <node>`.
pub async fn remove(client: &Client, context: &Context, node_id: u64) -> Result<u8, CliError> {
    eprintln!("removing node {node_id}: handing its aggregates to another member…");
    let report = client
        .remove_node(node_id)
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&report)?;
        return Ok(EXIT_OK);
    }
    print_fields(&[
        ("node", report.node_id.to_string()),
        ("aggregates kept by", report.stores_kept_by.to_string()),
        ("bytes", report.bytes.to_string()),
        ("duration", format!("{} ms", report.duration_ms)),
    ]);
    eprintln!("node {node_id} is out of the cluster; stop its process");
    Ok(EXIT_OK)
}
