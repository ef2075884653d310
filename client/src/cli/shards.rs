//! `shards list`, `shards move` and `shards rebalance`.

use super::node::print_fields;
use super::table::{Align, Table};
use super::{CliError, Context, EXIT_FAILED, EXIT_OK};
use crate::protocol::{FailedMove, PlannedMove, RebalanceReport, ShardMoveReport};
use crate::Client;

/// `sessiondb-ctl shards list`: the shard map of `GET /v1/cluster`.
pub async fn list(client: &Client, context: &Context) -> Result<u8, CliError> {
    let status = client
        .cluster_status()
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&status.shards)?;
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(&[
        ("SHARD", Align::Right),
        ("OWNER", Align::Right),
        ("EPOCH", Align::Right),
        ("MOVING TO", Align::Right),
    ]);
    for shard in &status.shards {
        table.row(vec![
            shard.shard.to_string(),
            shard.owner.to_string(),
            shard.epoch.to_string(),
            shard
                .moving_to
                .map_or_else(|| "-".to_string(), |to| to.to_string()),
        ]);
    }
    print!("{}", table.render());
    Ok(EXIT_OK)
}

/// `sessiondb-ctl shards move <shard> --to <node>`.
pub async fn move_shard(
    client: &Client,
    context: &Context,
    shard: u32,
    to: u64,
) -> Result<u8, CliError> {
    eprintln!("moving shard {shard} to node {to}…");
    let report = client
        .move_shard(shard, to)
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&report)?;
        return Ok(EXIT_OK);
    }
    let rows = [
        ("shard", report.shard.to_string()),
        ("from", report.from.to_string()),
        ("to", report.to.to_string()),
        ("epoch", report.epoch.to_string()),
        ("bytes", report.bytes.to_string()),
        ("duration", format!("{} ms", report.duration_ms)),
    ];
    print_fields(&rows);
    Ok(EXIT_OK)
}

/// `sessiondb-ctl shards rebalance`: the plan and each move's outcome.
/// Exits with `EXIT_FAILED` when a move failed (the other moves are done;
/// run it again to retry the failed ones).
pub async fn rebalance(client: &Client, context: &Context) -> Result<u8, CliError> {
    eprintln!("rebalancing: the leader plans the moves and runs them one by one…");
    let report = client
        .rebalance()
        .await
        .map_err(|error| context.client_error(error))?;
    let code = if report.failed.is_some() {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    if context.json {
        context.print_json(&report)?;
    } else {
        print!("{}", rebalance_table(&report).render());
        eprintln!("{}", rebalance_summary(&report));
    }
    Ok(code)
}

fn rebalance_table(report: &RebalanceReport) -> Table {
    let mut table = Table::new(&[
        ("SHARD", Align::Right),
        ("FROM", Align::Right),
        ("TO", Align::Right),
        ("OUTCOME", Align::Left),
        ("BYTES", Align::Right),
        ("DURATION", Align::Right),
    ]);
    let done = |step: &PlannedMove| -> Option<&ShardMoveReport> {
        report.moved.iter().find(|moved| moved.shard == step.shard)
    };
    for step in &report.plan {
        let (outcome, bytes, duration) = match done(step) {
            Some(moved) => (
                format!("moved (epoch {})", moved.epoch),
                moved.bytes.to_string(),
                format!("{} ms", moved.duration_ms),
            ),
            None => match failure_of(report, step.shard) {
                Some(failed) => (format!("failed: {}", failed.error), "-".into(), "-".into()),
                None => ("skipped".to_string(), "-".into(), "-".into()),
            },
        };
        table.row(vec![
            step.shard.to_string(),
            step.from.to_string(),
            step.to.to_string(),
            outcome,
            bytes,
            duration,
        ]);
    }
    table
}

/// The failure of `shard`'s move: `failures`, or `failed` from a node
/// that reports only the first.
fn failure_of(report: &RebalanceReport, shard: u32) -> Option<&FailedMove> {
    report
        .failures
        .iter()
        .chain(report.failed.iter())
        .find(|failed| failed.shard == shard)
}

fn rebalance_summary(report: &RebalanceReport) -> String {
    let unreachable = if report.unreachable.is_empty() {
        String::new()
    } else {
        format!(" (left out, not answering: nodes {:?})", report.unreachable)
    };
    if report.plan.is_empty() {
        return format!("already balanced: nothing to move{unreachable}");
    }
    let mut summary = format!(
        "{} of {} planned moves done",
        report.moved.len(),
        report.plan.len()
    );
    let failures: Vec<&FailedMove> = if report.failures.is_empty() {
        report.failed.iter().collect()
    } else {
        report.failures.iter().collect()
    };
    if let Some(first) = failures.first() {
        let shards: Vec<u32> = failures.iter().map(|failed| failed.shard).collect();
        summary.push_str(&format!(
            "; {} failed (shards {shards:?}; first: {})",
            failures.len(),
            first.message
        ));
    }
    if !report.skipped.is_empty() {
        summary.push_str(&format!(
            "; {} not attempted (run `shards rebalance` again)",
            report.skipped.len()
        ));
    }
    summary.push_str(&unreachable);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(shard: u32, to: u64) -> PlannedMove {
        PlannedMove { shard, from: 1, to }
    }

    #[test]
    fn the_rebalance_table_shows_each_planned_moves_outcome() {
        let failure = FailedMove {
            shard: 6,
            from: 1,
            to: 3,
            error: "move_failed".into(),
            message: "the move failed at step import".into(),
        };
        let report = RebalanceReport {
            plan: vec![planned(7, 2), planned(6, 3), planned(5, 3)],
            moved: vec![ShardMoveReport {
                shard: 7,
                from: 1,
                to: 2,
                epoch: 2,
                bytes: 1234,
                duration_ms: 15,
            }],
            failed: Some(failure.clone()),
            failures: vec![failure],
            skipped: vec![planned(5, 3)],
            unreachable: vec![4],
        };
        let text = rebalance_table(&report).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].contains("moved (epoch 2)") && lines[1].contains("1234"));
        assert!(lines[2].contains("failed: move_failed"));
        assert!(lines[3].contains("skipped"));
        let summary = rebalance_summary(&report);
        assert!(
            summary.starts_with("1 of 3 planned moves done"),
            "{summary}"
        );
        assert!(
            summary.contains("1 failed (shards [6]")
                && summary.contains("1 not attempted")
                && summary.contains("nodes [4]"),
            "{summary}"
        );
        let empty = RebalanceReport {
            plan: Vec::new(),
            moved: Vec::new(),
            failed: None,
            failures: Vec::new(),
            skipped: Vec::new(),
            unreachable: Vec::new(),
        };
        assert_eq!(
            rebalance_summary(&empty),
            "already balanced: nothing to move"
        );
    }
}
