//! `cluster status`.

use super::node::print_fields;
use super::table::{Align, Table};
use super::{CliError, Context, EXIT_OK};
use crate::protocol::{ClusterStatus, MemberRole, RaftState};
use crate::Client;
use std::collections::BTreeMap;

/// `sessiondb-ctl cluster status`: `GET /v1/cluster` with the admin token.
pub async fn status(client: &Client, context: &Context) -> Result<u8, CliError> {
    let status = client
        .cluster_status()
        .await
        .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&status)?;
        return Ok(EXIT_OK);
    }
    let leader = status.leader.map_or_else(
        || "none (election in progress)".to_string(),
        |id| id.to_string(),
    );
    let rows = [
        ("node", context.node.clone()),
        ("node id", status.node_id.to_string()),
        ("state", state_name(status.state).to_string()),
        ("leader", leader),
        ("term", status.term.to_string()),
        ("shards", status.shards.len().to_string()),
    ];
    print_fields(&rows);
    println!();
    print!("{}", members_table(&status).render());
    Ok(EXIT_OK)
}

fn state_name(state: RaftState) -> &'static str {
    match state {
        RaftState::Leader => "leader",
        RaftState::Follower => "follower",
        RaftState::Candidate => "candidate",
        RaftState::Learner => "learner",
        RaftState::Shutdown => "shutdown",
    }
}

/// One row per member: id, address, role, the shards it owns, their
/// epochs' range and the moves toward it.
pub(super) fn members_table(status: &ClusterStatus) -> Table {
    #[derive(Default)]
    struct Owned {
        shards: u64,
        epoch_min: Option<u64>,
        epoch_max: Option<u64>,
        incoming: u64,
    }
    let mut owned: BTreeMap<u64, Owned> = BTreeMap::new();
    for shard in &status.shards {
        let entry = owned.entry(shard.owner).or_default();
        entry.shards += 1;
        entry.epoch_min = Some(
            entry
                .epoch_min
                .map_or(shard.epoch, |min| min.min(shard.epoch)),
        );
        entry.epoch_max = Some(
            entry
                .epoch_max
                .map_or(shard.epoch, |max| max.max(shard.epoch)),
        );
        if let Some(target) = shard.moving_to {
            owned.entry(target).or_default().incoming += 1;
        }
    }
    let mut table = Table::new(&[
        ("NODE", Align::Right),
        ("ADDRESS", Align::Left),
        ("ROLE", Align::Left),
        ("SHARDS", Align::Right),
        ("EPOCHS", Align::Left),
        ("MOVING IN", Align::Right),
    ]);
    for member in &status.members {
        let mine = owned.remove(&member.node_id).unwrap_or_default();
        let role = match member.role {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        };
        let leader_mark = if status.leader == Some(member.node_id) {
            " (leader)"
        } else {
            ""
        };
        let draining_mark = if member.draining { ", draining" } else { "" };
        table.row(vec![
            member.node_id.to_string(),
            member.address.clone(),
            format!("{role}{leader_mark}{draining_mark}"),
            mine.shards.to_string(),
            epochs(&mine.epoch_min, &mine.epoch_max),
            mine.incoming.to_string(),
        ]);
    }
    // Shards owned by nodes that are no longer members (removed before
    // their shards moved) still show.
    for (node, rest) in owned {
        table.row(vec![
            node.to_string(),
            String::new(),
            "not a member".to_string(),
            rest.shards.to_string(),
            epochs(&rest.epoch_min, &rest.epoch_max),
            rest.incoming.to_string(),
        ]);
    }
    table
}

fn epochs(min: &Option<u64>, max: &Option<u64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) if min == max => min.to_string(),
        (Some(min), Some(max)) => format!("{min}–{max}"),
        _ => "-".to_string(),
    }
}
