//! The node's side of the shard groups' Raft traffic (`docs/cluster.md`,
//! "Replicated shards (design)"): [`GroupReplicas`], the table of the
//! group replicas running on this node, which serves peers' requests, and
//! [`PeerGroupTransport`], the `GroupTransport` that sends this node's
//! requests through the one `PeerClient` to
//! `POST /v1/internal/groups/{group}/raft/{append,vote,snapshot}`.
//!
//! The node starts no group yet, so the table is empty and every request
//! is answered `404 not_found`; the ingest path moves onto groups in a
//! later step. No openraft type crosses this module's interface: requests
//! and answers are bytes (`crate::replication::serve`).

use super::peer::{Peer, PeerClient, PeerError, RaftRoute};
use crate::replication::{
    GroupHandle, GroupId, GroupRpc, GroupRpcError, GroupTransport, ReplicaId, ReplicaNode,
    TransportError,
};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Why a peer's group Raft request was not served.
#[derive(Debug, thiserror::Error)]
pub enum GroupServeError {
    #[error("group {group} has no replica on this node")]
    NotHosted { group: GroupId },
    #[error(transparent)]
    Malformed(#[from] GroupRpcError),
}

/// The group replicas running on this node, by group. Cheap to clone.
#[derive(Clone, Default)]
pub struct GroupReplicas {
    running: Arc<RwLock<HashMap<GroupId, GroupHandle>>>,
}

impl std::fmt::Debug for GroupReplicas {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GroupReplicas")
            .field("groups", &self.groups())
            .finish()
    }
}

impl GroupReplicas {
    /// Makes the replica reachable by peers (replacing an older one of its
    /// group).
    pub fn insert(&self, replica: GroupHandle) {
        self.write().insert(replica.group(), replica);
    }

    /// Takes `group`'s replica out of reach; the caller shuts it down.
    pub fn remove(&self, group: GroupId) -> Option<GroupHandle> {
        self.write().remove(&group)
    }

    /// `group`'s replica here, if it runs.
    pub fn get(&self, group: GroupId) -> Option<GroupHandle> {
        self.running
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&group)
            .cloned()
    }

    /// The groups with a replica here, in order.
    pub fn groups(&self) -> Vec<GroupId> {
        let running = self.running.read().unwrap_or_else(PoisonError::into_inner);
        let mut groups: Vec<GroupId> = running.keys().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// Serves a peer's request for `group`'s replica.
    pub async fn serve(
        &self,
        group: GroupId,
        route: RaftRoute,
        body: &[u8],
    ) -> Result<Vec<u8>, GroupServeError> {
        let replica = self
            .get(group)
            .ok_or(GroupServeError::NotHosted { group })?;
        Ok(replica.serve(rpc_of(route), body).await?)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<GroupId, GroupHandle>> {
        self.running.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn rpc_of(route: RaftRoute) -> GroupRpc {
    match route {
        RaftRoute::Append => GroupRpc::Append,
        RaftRoute::Vote => GroupRpc::Vote,
        RaftRoute::Snapshot => GroupRpc::Snapshot,
    }
}

fn route_of(rpc: GroupRpc) -> RaftRoute {
    match rpc {
        GroupRpc::Append => RaftRoute::Append,
        GroupRpc::Vote => RaftRoute::Vote,
        GroupRpc::Snapshot => RaftRoute::Snapshot,
    }
}

/// Group Raft requests over the node's `PeerClient` (cluster secret, TLS
/// when the node runs with it).
#[derive(Debug, Clone)]
pub struct PeerGroupTransport {
    peers: PeerClient,
}

impl PeerGroupTransport {
    pub fn new(peers: PeerClient) -> PeerGroupTransport {
        PeerGroupTransport { peers }
    }
}

impl GroupTransport for PeerGroupTransport {
    fn call(
        &self,
        target: ReplicaId,
        node: &ReplicaNode,
        group: GroupId,
        rpc: GroupRpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let peers = self.peers.clone();
        let peer = Peer::member(target, node.address.clone());
        async move {
            peers
                .group_raft(&peer, group, route_of(rpc), body, timeout)
                .await
                .map_err(|error| transport_error(target, error))
        }
    }
}

/// openraft backs off from an unreachable replica and retries anything
/// else at its next tick.
fn transport_error(target: ReplicaId, error: PeerError) -> TransportError {
    let reason = error.to_string();
    match error {
        PeerError::Unreachable { .. } => TransportError::Unreachable { target, reason },
        _ => TransportError::Failed { target, reason },
    }
}

/// A server of the group routes alone, without the rest of the node, for
/// in-process tests and the groups benchmark (`node/benches/groups.rs`).
/// It checks no cluster secret: loopback only. The node serves these
/// routes in `http::cluster`, behind the secret.
pub mod standalone {
    use super::*;

    /// Serves `replicas` on a new loopback port; answers its address and
    /// the server's handle (stop it to take the "node" off the network).
    pub async fn serve_table(replicas: GroupReplicas) -> (String, actix_web::dev::ServerHandle) {
        use actix_web::{web, App, HttpResponse, HttpServer};
        async fn handle(
            replicas: web::Data<GroupReplicas>,
            path: web::Path<(u32, String)>,
            body: web::Bytes,
        ) -> HttpResponse {
            let (group, name) = path.into_inner();
            let route = match name.as_str() {
                "append" => RaftRoute::Append,
                "vote" => RaftRoute::Vote,
                _ => RaftRoute::Snapshot,
            };
            match replicas.serve(group, route, &body).await {
                Ok(answer) => HttpResponse::Ok().body(answer),
                Err(error) => HttpResponse::NotFound().body(error.to_string()),
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(replicas.clone()))
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route(
                    "/v1/internal/groups/{group}/raft/{route}",
                    web::post().to(handle),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        (address, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_token::ClusterSecret;
    use crate::cluster::peer::PeerTransport;
    use standalone::serve_table;

    #[test]
    fn routes_and_rpcs_map_both_ways() {
        for route in [RaftRoute::Append, RaftRoute::Vote, RaftRoute::Snapshot] {
            assert_eq!(route_of(rpc_of(route)), route);
        }
        assert_eq!(
            crate::cluster::peer::group_raft_path(7, RaftRoute::Snapshot),
            "/v1/internal/groups/7/raft/snapshot"
        );
    }

    #[tokio::test]
    async fn a_group_not_hosted_here_is_named() {
        let replicas = GroupReplicas::default();
        assert!(replicas.groups().is_empty());
        let error = replicas.serve(3, RaftRoute::Vote, b"{}").await.unwrap_err();
        assert!(
            matches!(error, GroupServeError::NotHosted { group: 3 }),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_replicas_replicate_over_the_peer_client() {
        use crate::replication::group_tests::RecordingApply;
        use crate::replication::{start_replica, GroupConfig, ReplicatedLog};
        use std::collections::BTreeMap;
        const GROUP: GroupId = 11;
        const WAIT: Duration = Duration::from_secs(30);
        let root = crate::log::tests::TempDir::new("group-over-http");
        let peers = PeerClient::new(
            PeerTransport::Http,
            ClusterSecret::generate(),
            Duration::from_millis(500),
        )
        .unwrap();
        let mut tables = BTreeMap::new();
        let mut members = BTreeMap::new();
        let mut servers = Vec::new();
        for id in [1u64, 2, 3] {
            let table = GroupReplicas::default();
            let (address, server) = serve_table(table.clone()).await;
            servers.push(server);
            members.insert(id, ReplicaNode { address });
            tables.insert(id, table);
        }
        let mut replicas = BTreeMap::new();
        for (&id, table) in &tables {
            let dir = root.path().join(format!("replica-{id}"));
            let (log, _) = ReplicatedLog::open(dir.join("log"), Default::default()).unwrap();
            let state = RecordingApply::default();
            let raft = start_replica(
                id,
                GROUP,
                &log,
                &dir.join("snapshots"),
                state.clone(),
                PeerGroupTransport::new(peers.clone()),
                &GroupConfig::default(),
            )
            .await
            .unwrap();
            let replica = GroupHandle::new(GROUP, raft);
            table.insert(replica.clone());
            replicas.insert(id, (replica, state, log));
        }
        replicas[&1].0.initialize(members).await.unwrap();
        let leader = replicas[&1]
            .0
            .raft()
            .wait(Some(WAIT))
            .metrics(|metrics| metrics.current_leader.is_some(), "a leader")
            .await
            .unwrap()
            .current_leader
            .unwrap();
        let written = replicas[&leader]
            .0
            .write(b"over http".to_vec())
            .await
            .unwrap();
        for (id, (replica, state, _)) in &replicas {
            replica
                .raft()
                .wait(Some(WAIT))
                .applied_index_at_least(Some(written), format!("replica {id}"))
                .await
                .unwrap();
            assert_eq!(
                state.payloads(),
                vec![b"over http".to_vec()],
                "replica {id}"
            );
        }
        assert_eq!(tables[&2].groups(), vec![GROUP]);
        for (id, (replica, _, _)) in &replicas {
            tables[id].remove(GROUP);
            replica.shutdown().await.unwrap();
        }
        for server in servers {
            server.stop(true).await;
        }
    }

    #[tokio::test]
    async fn a_replica_nobody_listens_for_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // Closed: connecting is refused.
        drop(listener);
        let peers = PeerClient::new(
            PeerTransport::Http,
            ClusterSecret::generate(),
            Duration::from_millis(500),
        )
        .unwrap();
        let transport = PeerGroupTransport::new(peers);
        let node = ReplicaNode { address };
        let error = transport
            .call(
                2,
                &node,
                5,
                GroupRpc::Vote,
                b"{}".to_vec(),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, TransportError::Unreachable { target: 2, .. }),
            "{error}"
        );
    }
}
