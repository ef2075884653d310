//! Who a node is, beyond its `--node-id` (`docs/cluster.md`, "Node
//! identity"):
//!
//! - its **incarnation**: a random id generated when its data directory is
//!   first initialised, so the cluster can tell a node that restarted from
//!   a fresh (wiped) directory under an old id — which holds none of the
//!   old node's events — from the node it knew;
//! - its **cluster id**: the id the first node generated at bootstrap (in
//!   the placement state), so a data directory is never used in another
//!   cluster.
//!
//! Both live in `<data-dir>/node-identity` (written whole: temporary file,
//! `fsync`, rename, directory `fsync`). A data directory without the file
//! gets one at its start: the incarnation and cluster id its own placement
//! store recorded for it if any (the file was lost, the directory was
//! not), else a new incarnation (a new directory, or one from before
//! incarnations) and the cluster id once placement knows it.
//!
//! `check_before_join` is the joining node's side: before it opens
//! anything it asks a member (`GET /v1/internal/cluster/identity`) and
//! refuses to start on a mismatch or a wrong `--shards`. `check_join` is
//! the leader's side of the same rules for every join request.

use super::peer::{Peer, PeerClient, PeerError};
use super::placement::{
    ChangeError, NodeId, PlacementCommand, PlacementHandle, PlacementRejection, PlacementResponse,
    PlacementState,
};
use rand::RngCore;
use sessiondb_protocol as wire;
use std::path::{Path, PathBuf};

/// The file, in the data directory.
pub const IDENTITY_FILE_NAME: &str = "node-identity";
/// Random bytes of a generated id (shown as twice as many hex digits).
const ID_BYTES: usize = 16;
/// Identity checks a joining node makes before it gives up (the member it
/// asks may still be starting).
const CHECK_ATTEMPTS_MAX: u32 = 60;

/// Why a node may not start (or join) with its data directory and flags.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--shards {flag} disagrees with the {cluster} shards {source_text}; start the node without --shards (it takes the cluster's count) or with --shards {cluster}")]
    ShardCount {
        flag: u32,
        cluster: u32,
        source_text: String,
    },
    #[error("this data directory belongs to cluster {own}, but {peer} is in cluster {cluster}; give this node an empty data directory (and a new --node-id) to join that cluster")]
    OtherCluster {
        own: String,
        cluster: String,
        peer: String,
    },
    #[error("node {node} is known to the cluster with another data directory; start this one under a new id, or take node {node} out first: run it on its own data directory, then `sessiondb-ctl nodes drain {node}` and `sessiondb-ctl nodes remove {node}`")]
    KnownElsewhere { node: NodeId },
    #[error("cannot check this node's identity with the cluster after {attempts} attempts; last failure: {last_failure}")]
    Unreachable { attempts: u32, last_failure: String },
    #[error("the cluster secret was refused: {0}")]
    SecretRefused(PeerError),
}

/// The contents of `<data-dir>/node-identity`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    pub incarnation: String,
    /// `None` until this node learns its cluster's id.
    pub cluster_id: Option<String>,
}

/// How `NodeIdentity::open` found the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityOpened {
    Read,
    /// Created now for a data directory that had none.
    Created,
}

/// A new random id (hex).
pub fn generate_id() -> String {
    let mut bytes = [0_u8; ID_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl NodeIdentity {
    /// Reads the identity file of `data_dir`, or creates one: with what
    /// the directory's own placement state (`local`) recorded for `node`,
    /// else with a new incarnation.
    pub fn open(
        data_dir: &Path,
        local: &PlacementState,
        node: NodeId,
    ) -> Result<(NodeIdentity, IdentityOpened), IdentityError> {
        let path = data_dir.join(IDENTITY_FILE_NAME);
        let read_error = |detail: String| IdentityError::Read {
            path: path.clone(),
            detail,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let identity = serde_json::from_slice(&bytes)
                    .map_err(|error| read_error(error.to_string()))?;
                Ok((identity, IdentityOpened::Read))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let identity = NodeIdentity {
                    incarnation: local
                        .incarnation(node)
                        .map_or_else(generate_id, str::to_string),
                    cluster_id: local.cluster_id().map(str::to_string),
                };
                identity.write(data_dir)?;
                Ok((identity, IdentityOpened::Created))
            }
            Err(error) => Err(read_error(error.to_string())),
        }
    }

    /// Writes the file so that a crash leaves the old or the new one whole.
    pub fn write(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let path = data_dir.join(IDENTITY_FILE_NAME);
        let text = serde_json::to_vec_pretty(self).expect("plain fields serialize");
        crate::durable_file::replace_whole(&path, &text)
            .map_err(|source| IdentityError::Write { path, source })
    }
}

/// The shard count to run with: `--shards` if given and agreeing with the
/// cluster's, the cluster's if not given, else the default (a new
/// cluster). `cluster` is what placement (the local store or a member)
/// says, `None` when there is no cluster yet.
pub fn resolve_shards(
    flag: Option<u32>,
    cluster: Option<u32>,
    default: u32,
    source_text: &str,
) -> Result<u32, IdentityError> {
    match (flag, cluster) {
        (Some(flag), Some(cluster)) if flag != cluster => Err(IdentityError::ShardCount {
            flag,
            cluster,
            source_text: source_text.to_string(),
        }),
        (_, Some(cluster)) => Ok(cluster),
        (Some(flag), None) => Ok(flag),
        (None, None) => Ok(default),
    }
}

/// The rules both sides apply to a node that joins with `identity` under
/// `node`, given what the cluster knows (`cluster`). `fresh`: the node's
/// placement store is empty (a new or wiped data directory).
pub fn check_identity(
    node: NodeId,
    identity: &NodeIdentity,
    fresh: bool,
    cluster: &wire::ClusterIdentity,
    peer: &str,
) -> Result<(), IdentityError> {
    if let (Some(own), Some(theirs)) = (&identity.cluster_id, &cluster.cluster_id) {
        if own != theirs {
            return Err(IdentityError::OtherCluster {
                own: own.clone(),
                cluster: theirs.clone(),
                peer: peer.to_string(),
            });
        }
    }
    let known_elsewhere = match &cluster.incarnation {
        Some(recorded) => *recorded != identity.incarnation,
        // A member of a cluster older than incarnations: only an empty
        // data directory is surely not the one it knew.
        None => cluster.member && fresh,
    };
    if known_elsewhere {
        return Err(IdentityError::KnownElsewhere { node });
    }
    Ok(())
}

/// What this member's placement state says about the cluster and `node`
/// (the server side of `GET /v1/internal/cluster/identity`).
pub fn cluster_identity(state: &PlacementState, node: NodeId) -> wire::ClusterIdentity {
    wire::ClusterIdentity {
        cluster_id: state.cluster_id().map(str::to_string),
        shards: state.shard_count(),
        member: state.is_member(node),
        incarnation: state.incarnation(node).map(str::to_string),
    }
}

/// Asks the member at `url` what it knows (retrying while it does not
/// answer or has no shard map yet) and applies `check_identity`. Answers
/// the cluster's shard count.
pub async fn check_before_join(
    peers: &PeerClient,
    url: &str,
    node: NodeId,
    identity: &NodeIdentity,
    fresh: bool,
) -> Result<wire::ClusterIdentity, IdentityError> {
    let peer = Peer::at(peers.base_url(url));
    let mut waits = super::join_retry_waits();
    let mut last_failure = String::new();
    for attempt in 0..CHECK_ATTEMPTS_MAX {
        match peers.cluster_identity(&peer, node).await {
            Ok(cluster) if cluster.shards > 0 => {
                check_identity(node, identity, fresh, &cluster, &peer.address)?;
                return Ok(cluster);
            }
            Ok(_) => last_failure = format!("{} has no shard map yet", peer.address),
            Err(error @ PeerError::SecretRefused { .. }) => {
                return Err(IdentityError::SecretRefused(error))
            }
            Err(error) => {
                tracing::warn!(%error, attempt, "identity check failed; retrying");
                last_failure = error.to_string();
            }
        }
        tokio::time::sleep(waits.next().unwrap_or(super::JOIN_RETRY_WAIT_MAX)).await;
    }
    Err(IdentityError::Unreachable {
        attempts: CHECK_ATTEMPTS_MAX,
        last_failure,
    })
}

/// A member's restart with `--join`: asks the member at `url` once and
/// applies `check_identity` (a data directory of another cluster, or one
/// the cluster knows under another incarnation, stops the node). A member
/// that does not answer is no reason to stop: the node knows its cluster.
pub async fn check_member_once(
    peers: &PeerClient,
    url: &str,
    node: NodeId,
    identity: &NodeIdentity,
) -> Result<(), IdentityError> {
    let peer = Peer::at(peers.base_url(url));
    match peers.cluster_identity(&peer, node).await {
        Ok(cluster) => check_identity(node, identity, false, &cluster, &peer.address),
        Err(error) => {
            tracing::warn!(%error, "cannot check this node's identity with --join now");
            Ok(())
        }
    }
}

/// Names the cluster if it has no id yet and records `node`'s
/// incarnation (leader only): at bootstrap, when a node joins, and when an
/// older member announces itself. A different incarnation already
/// recorded is an error naming the node.
pub async fn record_identity(
    placement: &PlacementHandle,
    node: NodeId,
    incarnation: &str,
) -> Result<(), RecordError> {
    if placement.view().current().cluster_id().is_none() {
        let command = PlacementCommand::SetClusterId {
            cluster_id: generate_id(),
        };
        match placement.propose(command).await? {
            PlacementResponse::ClusterIdSet { cluster_id } => {
                tracing::info!(%cluster_id, "cluster named");
            }
            PlacementResponse::Rejected {
                reason: PlacementRejection::ClusterIdAlreadySet { .. },
            } => {}
            other => return Err(RecordError::Refused(format!("{other:?}"))),
        }
    }
    if placement.view().current().incarnation(node) == Some(incarnation) {
        return Ok(());
    }
    let command = PlacementCommand::RecordIncarnation {
        node,
        incarnation: incarnation.to_string(),
    };
    match placement.propose(command).await? {
        PlacementResponse::IncarnationRecorded { .. } => Ok(()),
        PlacementResponse::Rejected {
            reason: PlacementRejection::IncarnationMismatch { node, .. },
        } => Err(RecordError::KnownElsewhere(IdentityError::KnownElsewhere {
            node,
        })),
        other => Err(RecordError::Refused(format!("{other:?}"))),
    }
}

/// Why `record_identity` did not record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    KnownElsewhere(IdentityError),
    #[error("placement refused the identity: {0}")]
    Refused(String),
}

/// Writes the cluster id placement holds into the identity file the first
/// time this node sees one.
pub fn adopt_cluster_id(data_dir: &Path, identity: &mut NodeIdentity, state: &PlacementState) {
    let Some(cluster_id) = state.cluster_id() else {
        return;
    };
    match &identity.cluster_id {
        Some(own) if own == cluster_id => {}
        Some(own) => {
            tracing::error!(own = %own, placement = %cluster_id, "this data directory names another cluster than placement does");
        }
        None => {
            identity.cluster_id = Some(cluster_id.to_string());
            match identity.write(data_dir) {
                Ok(()) => tracing::info!(%cluster_id, "cluster id recorded in the data directory"),
                Err(error) => tracing::error!(%error, "cannot record the cluster id"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(cluster_id: Option<&str>) -> NodeIdentity {
        NodeIdentity {
            incarnation: "aaaa".to_string(),
            cluster_id: cluster_id.map(str::to_string),
        }
    }

    fn cluster(
        cluster_id: Option<&str>,
        member: bool,
        incarnation: Option<&str>,
    ) -> wire::ClusterIdentity {
        wire::ClusterIdentity {
            cluster_id: cluster_id.map(str::to_string),
            shards: 12,
            member,
            incarnation: incarnation.map(str::to_string),
        }
    }

    #[test]
    fn shards_come_from_the_cluster_unless_the_flag_disagrees() {
        assert_eq!(resolve_shards(None, Some(12), 256, "x").unwrap(), 12);
        assert_eq!(resolve_shards(Some(12), Some(12), 256, "x").unwrap(), 12);
        assert_eq!(resolve_shards(Some(8), None, 256, "x").unwrap(), 8);
        assert_eq!(resolve_shards(None, None, 256, "x").unwrap(), 256);
        let error = resolve_shards(Some(256), Some(12), 256, "of the cluster").unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("--shards 256") && text.contains("12 shards"),
            "{text}"
        );
    }

    #[test]
    fn a_wiped_node_under_a_known_id_is_refused() {
        let mine = identity(None);
        // Recorded with another incarnation.
        let error = check_identity(3, &mine, true, &cluster(Some("c"), true, Some("bbbb")), "p")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("node 3 is known to the cluster with another data directory"),
            "{error}"
        );
        // The same incarnation (a restart) is fine.
        check_identity(
            3,
            &mine,
            false,
            &cluster(Some("c"), true, Some("aaaa")),
            "p",
        )
        .unwrap();
        // An old cluster without incarnations: a fresh directory under a
        // member's id is refused, a used one accepted.
        assert!(check_identity(3, &mine, true, &cluster(None, true, None), "p").is_err());
        check_identity(3, &mine, false, &cluster(None, true, None), "p").unwrap();
        // A new id is fine.
        check_identity(4, &mine, true, &cluster(Some("c"), false, None), "p").unwrap();
    }

    #[test]
    fn a_data_directory_of_another_cluster_is_refused() {
        let error = check_identity(
            4,
            &identity(Some("a")),
            false,
            &cluster(Some("b"), false, None),
            "p",
        )
        .unwrap_err();
        assert!(
            matches!(error, IdentityError::OtherCluster { .. }),
            "{error}"
        );
    }

    #[test]
    fn the_file_is_created_once_and_read_back() {
        let directory = std::env::temp_dir().join(format!("sessiondb-identity-{}", generate_id()));
        std::fs::create_dir_all(&directory).unwrap();
        let empty = PlacementState::default();
        let (created, opened) = NodeIdentity::open(&directory, &empty, 1).unwrap();
        assert_eq!(opened, IdentityOpened::Created);
        assert_eq!(created.incarnation.len(), ID_BYTES * 2);
        let mut named = created.clone();
        named.cluster_id = Some("c".to_string());
        named.write(&directory).unwrap();
        let (read, opened) = NodeIdentity::open(&directory, &empty, 1).unwrap();
        assert_eq!((read, opened), (named, IdentityOpened::Read));
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
