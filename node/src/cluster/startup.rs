//! How a node takes its place in the cluster when it starts
//! (`docs/cluster.md`, "Membership"):
//!
//! - an empty placement store and no `--join`: bootstrap a single-node
//!   cluster (this node the only voter, every shard owned by it);
//! - an empty store and `--join <url>`: ask that node to admit this one,
//!   following `307 not_leader` answers to the leader, until admitted;
//! - a store that is already initialized: Raft restarts from it. If the
//!   membership records another address for this node (it restarted on a
//!   new port), the node announces its new address through the same join
//!   call, to `--join` if given, else to the other members it knows.
//!
//! Every path ends with this node's incarnation (and the cluster's id)
//! recorded in placement (`cluster::identity`): the leader records it
//! itself; any other node announces itself through the join call when
//! placement does not hold it yet (a data directory from before
//! incarnations).
//!
//! A refused cluster secret is fatal (the node exits): no retry can fix
//! it; so is a join refused for the node's identity (`409`).
//!
//! Once started, `follow_placement` keeps the engine in step with the
//! placement state it applies: shard roles (`apply_roles`) and project
//! configurations. The engine never imports placement; this is the glue.

use super::identity::{self, NodeIdentity};
use super::peer::{Peer, PeerClient, PeerError};
use super::placement::{PlacementHandle, PlacementState, PlacementView, ShardAssignment};
use crate::engine::handoff::ShardRole;
use crate::engine::Engine;
use anyhow::Context;
use sessiondb_protocol as wire;
use std::collections::BTreeSet;

/// Join requests a node makes before it gives up.
const JOIN_ATTEMPTS_MAX: u32 = 60;

/// What the node knows about its place in the cluster at startup.
#[derive(Debug, Clone)]
pub struct ClusterStartup {
    /// `--join`: the base URL of a member, `http://host:port`.
    pub join: Option<String>,
    /// The address other nodes reach this one at (`host:port`).
    pub advertise: String,
    /// Shards of a cluster this node bootstraps.
    pub shards: u32,
    /// The node's one client for peer calls.
    pub peers: PeerClient,
    /// This node's incarnation and cluster id (`<data-dir>/node-identity`).
    pub identity: NodeIdentity,
}

/// Bootstraps, joins or re-announces, as the module documentation says.
pub async fn take_place(
    placement: &PlacementHandle,
    startup: &ClusterStartup,
) -> anyhow::Result<()> {
    let node_id = placement.node_id();
    let initialized = placement
        .is_initialized()
        .await
        .map_err(anyhow::Error::msg)?;
    if !initialized {
        return match &startup.join {
            None => {
                placement
                    .bootstrap(&startup.advertise, startup.shards)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("cannot bootstrap a single-node cluster")?;
                tracing::info!(
                    node_id,
                    shards = startup.shards,
                    "bootstrapped a single-node cluster"
                );
                record_own_identity(placement, startup).await
            }
            Some(url) => join(placement, startup, vec![url.clone()]).await,
        };
    }
    if startup.join.is_none() && placement.voters() == BTreeSet::from([node_id]) {
        // This node alone decides: finish a bootstrap a crash interrupted,
        // and record a changed address (harmless if it fails: no peer uses
        // it until the next join, which updates it then).
        placement
            .bootstrap(&startup.advertise, startup.shards)
            .await
            .map_err(anyhow::Error::msg)?;
        if placement.member_address(node_id).as_deref() != Some(startup.advertise.as_str()) {
            let updated = match placement.wait_for_leadership().await {
                Ok(()) => placement
                    .admit(node_id, &startup.advertise)
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error),
            };
            if let Err(error) = updated {
                tracing::warn!(%error, "cannot record this node's new address");
            }
        }
        return record_own_identity(placement, startup).await;
    }
    let recorded = {
        let state = placement.view().current();
        state.incarnation(node_id) == Some(startup.identity.incarnation.as_str())
            && state.cluster_id().is_some()
    };
    if placement.member_address(node_id).as_deref() == Some(startup.advertise.as_str()) {
        tracing::info!(node_id, "restarted as a member of the cluster");
        if !recorded {
            announce_identity(placement, startup).await?;
        }
        return Ok(());
    }
    let targets: Vec<String> = match &startup.join {
        Some(url) => vec![url.clone()],
        None => placement.other_member_addresses(),
    };
    if targets.is_empty() {
        anyhow::bail!(
            "this node's address changed and it knows no other member to tell (use --join)"
        );
    }
    tracing::info!(node_id, address = %startup.advertise, "announcing this node's address and incarnation");
    join(placement, startup, targets).await
}

/// Has the leader record this node's incarnation (a member whose data
/// directory predates incarnations, or one that stopped before it applied
/// the record). Only a refusal is fatal: an unreachable cluster is
/// retried at the next start.
async fn announce_identity(
    placement: &PlacementHandle,
    startup: &ClusterStartup,
) -> anyhow::Result<()> {
    let targets: Vec<String> = match &startup.join {
        Some(url) => vec![url.clone()],
        None => placement.other_member_addresses(),
    };
    if targets.is_empty() {
        return Ok(());
    }
    match join(placement, startup, targets).await {
        Err(error) if error.downcast_ref::<JoinRefused>().is_some() => Err(error),
        Err(error) => {
            tracing::warn!(%error, "cannot record this node's incarnation now");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// The leader refused this node (`409`): its data directory is not the one
/// the cluster knows under its id, or belongs to another cluster.
#[derive(Debug, thiserror::Error)]
#[error("the cluster refused this node: {message}")]
pub struct JoinRefused {
    pub message: String,
}

/// Records this node's incarnation and names the cluster (this node
/// leads: it bootstrapped, or it is the only voter).
async fn record_own_identity(
    placement: &PlacementHandle,
    startup: &ClusterStartup,
) -> anyhow::Result<()> {
    identity::record_identity(
        placement,
        placement.node_id(),
        &startup.identity.incarnation,
    )
    .await
    .context("cannot record this node's identity in placement")
}

/// Asks `targets` in turn to admit this node until one (or the leader it
/// names) does.
async fn join(
    placement: &PlacementHandle,
    startup: &ClusterStartup,
    targets: Vec<String>,
) -> anyhow::Result<()> {
    // `307 not_leader` is followed here, by hand, to log it.
    let request = wire::JoinRequest {
        node_id: placement.node_id(),
        address: startup.advertise.clone(),
        cluster_id: startup.identity.cluster_id.clone(),
        incarnation: Some(startup.identity.incarnation.clone()),
    };
    let own_old_address = placement.member_address(placement.node_id());
    let mut waits = super::join_retry_waits();
    let mut leader_url: Option<String> = None;
    let mut last_failure = String::new();
    for attempt in 0..JOIN_ATTEMPTS_MAX {
        let target = leader_url
            .take()
            .unwrap_or_else(|| targets[attempt as usize % targets.len()].clone());
        let peer = Peer::at(startup.peers.base_url(&target));
        let url = peer.address.clone();
        match startup.peers.join(&peer, &request).await {
            Ok(answer) => {
                tracing::info!(
                    node_id = answer.node_id,
                    role = ?answer.role,
                    leader_id = answer.leader_id,
                    "joined the cluster"
                );
                return Ok(());
            }
            Err(error @ PeerError::SecretRefused { .. }) => {
                return Err(anyhow::Error::new(error).context("cannot join the cluster"));
            }
            Err(PeerError::Refused {
                status: 409,
                message,
                ..
            }) => {
                // The leader refused this node's identity: no retry helps.
                return Err(JoinRefused { message }.into());
            }
            Err(PeerError::NotLeader {
                leader_address: Some(address),
                ..
            }) if Some(&address) == own_old_address.as_ref() => {
                // The others still name this node, at its old address, as
                // the leader (with two voters, neither can win without the
                // other). Once this node leads again, it records its new
                // address itself.
                tracing::info!(%url, "the cluster names this node as its leader");
                if placement.require_leader().is_ok() {
                    placement
                        .admit(placement.node_id(), &startup.advertise)
                        .await
                        .map_err(|error| {
                            anyhow::anyhow!("cannot record this node's new address: {error}")
                        })?;
                    tracing::info!("recorded this node's new address as the leader");
                    return record_own_identity(placement, startup).await;
                }
                last_failure = format!("{url} names this node as the leader; not leading yet");
            }
            Err(PeerError::NotLeader {
                leader_address: Some(address),
                ..
            }) => {
                tracing::info!(%url, leader = %address, "asking the leader");
                leader_url = Some(address);
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, attempt, "join attempt failed; retrying");
                last_failure = error.to_string();
            }
        }
        tokio::time::sleep(waits.next().unwrap_or(super::JOIN_RETRY_WAIT_MAX)).await;
    }
    anyhow::bail!(
        "cannot join the cluster after {JOIN_ATTEMPTS_MAX} attempts; last failure: {last_failure}"
    )
}

/// Keeps the engine's shard roles equal to the placement state, so this
/// node accepts events only for the shards placement says it owns
/// (`docs/cluster.md`, "Routing"). Runs until the placement node stops.
/// Also writes the cluster's id into the data directory's identity file
/// once placement holds one.
pub async fn follow_placement(
    engine: Engine,
    mut view: PlacementView,
    node_id: u64,
    data_dir: std::path::PathBuf,
    mut identity: NodeIdentity,
) {
    loop {
        let state = view.current();
        apply_roles(&engine, &state, node_id);
        identity::adopt_cluster_id(&data_dir, &mut identity, &state);
        install_projects(&engine, &state).await;
        if !view.changed().await {
            return;
        }
    }
}

/// Installs every project configuration placement holds that is newer than
/// the engine's (`Engine::install_project` journals it).
async fn install_projects(engine: &Engine, state: &PlacementState) {
    for config in state.projects().values() {
        let held = engine.projects().get(&config.name);
        if held.is_some_and(|held| held.version >= config.version) {
            continue;
        }
        match engine.install_project(config.clone()).await {
            Ok(_) => {
                tracing::info!(project = %config.name, version = config.version, "project configuration installed")
            }
            Err(error) => {
                tracing::error!(project = %config.name, %error, "cannot install the project configuration placement holds")
            }
        }
    }
}

/// Applies the placement state's shard map to the engine's roles. Before
/// the cluster is initialized there is no map, and roles stay as they are.
pub fn apply_roles(engine: &Engine, state: &PlacementState, node_id: u64) {
    if !state.is_initialized() {
        return;
    }
    for (shard, assignment) in state.shards().iter().enumerate() {
        let Ok(shard) = u32::try_from(shard) else {
            return;
        };
        if let Err(error) = engine.set_shard_role(shard, role_of(assignment, node_id)) {
            tracing::error!(%error, "placement and engine disagree on the shard count");
            return;
        }
    }
}

/// This node's role for a shard, given its assignment: the owner accepts
/// events until a move begins (then it is fenced); every other node sends
/// writers to the owner.
pub fn role_of(assignment: &ShardAssignment, node_id: u64) -> ShardRole {
    let epoch = assignment.epoch;
    match (assignment.owner == node_id, assignment.moving_to) {
        (true, None) => ShardRole::Owner { epoch },
        (true, Some(_)) => ShardRole::Fenced { epoch },
        (false, _) => ShardRole::Elsewhere {
            owner: assignment.owner,
            epoch,
        },
    }
}

#[cfg(test)]
mod roles_tests {
    use super::*;

    #[test]
    fn owners_accept_movers_fence_others_point_to_the_owner() {
        let owned = ShardAssignment {
            owner: 1,
            epoch: 3,
            moving_to: None,
        };
        assert_eq!(role_of(&owned, 1), ShardRole::Owner { epoch: 3 });
        assert_eq!(
            role_of(&owned, 2),
            ShardRole::Elsewhere { owner: 1, epoch: 3 }
        );
        let moving = ShardAssignment {
            moving_to: Some(2),
            ..owned
        };
        assert_eq!(role_of(&moving, 1), ShardRole::Fenced { epoch: 3 });
        assert_eq!(
            role_of(&moving, 2),
            ShardRole::Elsewhere { owner: 1, epoch: 3 }
        );
    }
}
