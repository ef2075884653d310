//! Makes the group replicas running on this node follow the replica sets
//! placement wants (`docs/cluster.md`, "Replicated shards (design)").
//!
//! Each call of [`GroupKeeper::follow`] is one round, given every group's
//! wanted replica set:
//! - a group this node should hold and does not run is started (from its
//!   snapshot and log on disk, or empty) and made reachable by peers; if
//!   the set is the group's **first** one and this node is its first
//!   member, the node creates the group with the set as its voters. Only
//!   then: a replacement member joining a running group starts empty and
//!   must never create a group of its own (it would elect itself and split
//!   the group), so it waits for the leader to add it;
//! - on every group this node leads, one step of
//!   `GroupHandle::reconcile` towards the wanted set (learners first, then
//!   one joint change), so a lost member is replaced;
//! - a running group this node no longer belongs to is left running and
//!   reported: deleting a replica is safe only once the group's leader has
//!   taken it out of the membership, which this node cannot see when it is
//!   out (a removed replica hears nothing more).
//!
//! The keeper decides nothing about who should hold what: placement's
//! planner does, and the keeper only executes it, so every node reaches
//! the same groups from the same placement state.

use super::replicas::GroupReplicas;
use crate::replication::{
    GroupApply, GroupError, GroupHandle, GroupHost, GroupId, GroupTransport, MembershipError,
    ReconcileStep, ReplicaId, ReplicaNode,
};
use std::collections::{BTreeMap, BTreeSet};

/// A group's wanted replica set, as placement records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedGroup {
    /// The members, in placement's order (the first creates the group).
    pub voters: Vec<(ReplicaId, ReplicaNode)>,
    /// Whether this is the group's first replica set: only then may its
    /// first member create the group.
    pub first_set: bool,
}

/// What one round did, per group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeeperReport {
    /// Replicas started this round.
    pub started: BTreeSet<GroupId>,
    /// Groups this node created (as the first member of a first set).
    pub created: BTreeSet<GroupId>,
    /// Reconcile steps taken on groups this node leads.
    pub reconciled: BTreeMap<GroupId, ReconcileStep>,
    /// Running groups this node is no longer wanted in.
    pub unwanted: BTreeSet<GroupId>,
    /// Failures, by group (the round goes on with the other groups).
    pub failures: BTreeMap<GroupId, String>,
}

#[derive(Debug, thiserror::Error)]
enum KeepError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// Runs this node's group replicas as placement wants them.
pub struct GroupKeeper<T: GroupTransport, F> {
    host: GroupHost<T>,
    replicas: GroupReplicas,
    make_state: F,
}

impl<T: GroupTransport, F> std::fmt::Debug for GroupKeeper<T, F> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GroupKeeper")
            .field("host", &self.host)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl<T, F, A> GroupKeeper<T, F>
where
    T: GroupTransport,
    F: Fn(GroupId) -> A,
    A: GroupApply,
{
    /// `make_state(group)` builds the empty state of a group's replica
    /// (the engine's, in the node); `replicas` is the table peers reach.
    pub fn new(host: GroupHost<T>, replicas: GroupReplicas, make_state: F) -> Self {
        GroupKeeper {
            host,
            replicas,
            make_state,
        }
    }

    /// `group`'s replica on this node, if it runs.
    pub fn replica(&self, group: GroupId) -> Option<GroupHandle> {
        self.replicas.get(group)
    }

    pub fn host(&self) -> &GroupHost<T> {
        &self.host
    }

    /// One round towards `wanted` (every group's wanted set).
    pub async fn follow(&self, wanted: &BTreeMap<GroupId, WantedGroup>) -> KeeperReport {
        let mut report = KeeperReport::default();
        let node = self.host.replica();
        for (&group, set) in wanted {
            let is_member = set.voters.iter().any(|(replica, _)| *replica == node);
            if !is_member {
                if self.replicas.get(group).is_some() {
                    report.unwanted.insert(group);
                }
                continue;
            }
            if let Err(error) = self.keep(group, set, &mut report).await {
                report.failures.insert(group, error.to_string());
            }
        }
        for group in self.replicas.groups() {
            if !wanted.contains_key(&group) {
                report.unwanted.insert(group);
            }
        }
        report
    }

    async fn keep(
        &self,
        group: GroupId,
        set: &WantedGroup,
        report: &mut KeeperReport,
    ) -> Result<(), KeepError> {
        let replica = match self.replicas.get(group) {
            Some(replica) => replica,
            None => {
                let replica = self.host.start(group, (self.make_state)(group)).await?;
                self.replicas.insert(replica.clone());
                report.started.insert(group);
                replica
            }
        };
        if self.creates(&replica, set) {
            let voters: BTreeMap<ReplicaId, ReplicaNode> = set.voters.iter().cloned().collect();
            replica.initialize(voters).await?;
            report.created.insert(group);
            return Ok(());
        }
        if replica.status().is_leader {
            let wanted: BTreeMap<ReplicaId, ReplicaNode> = set.voters.iter().cloned().collect();
            let step = replica.reconcile(&wanted).await?;
            report.reconciled.insert(group, step);
        }
        Ok(())
    }

    /// Whether this node creates the group now: the set is the group's
    /// first, this node is its first member, and the replica has never
    /// been part of a membership (no voters known: nothing in its log).
    fn creates(&self, replica: &GroupHandle, set: &WantedGroup) -> bool {
        let first_member = set.voters.first().map(|(replica, _)| *replica);
        set.first_set
            && first_member == Some(self.host.replica())
            && replica.status().voters.is_empty()
    }

    /// Stops every running replica (the node is shutting down).
    pub async fn shutdown(&self) {
        for group in self.replicas.groups() {
            if let Some(replica) = self.replicas.remove(group) {
                if let Err(error) = replica.shutdown().await {
                    tracing::warn!(group, %error, "a group replica did not stop cleanly");
                }
            }
        }
    }
}

/// Test support: nodes in one process, each a `GroupKeeper` over a real
/// `GroupHost` and a standalone server of the group routes.
#[cfg(test)]
pub(crate) mod test_cluster {
    use super::*;
    use crate::admin_token::ClusterSecret;
    use crate::cluster::peer::{PeerClient, PeerTransport};
    use crate::cluster::replicas::standalone::serve_table;
    use crate::cluster::replicas::PeerGroupTransport;
    use crate::replication::{GroupConfig, ReplicatedLogConfig};
    use sessiondb_test_support::eventually;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    pub(crate) const WAIT: Duration = Duration::from_secs(30);

    type States<A> = Arc<Mutex<BTreeMap<GroupId, A>>>;
    type MakeState<A> = Arc<dyn Fn(GroupId) -> A + Send + Sync>;

    /// One node: its keeper, the table its server serves, each group's
    /// recorded state.
    pub(crate) struct TestNode<A> {
        pub(crate) keeper: GroupKeeper<PeerGroupTransport, Box<dyn Fn(GroupId) -> A>>,
        pub(crate) states: States<A>,
        server: actix_web::dev::ServerHandle,
    }

    /// `groups` groups on nodes started by `start`, each group's state made
    /// by `make`, with `config`'s timings and snapshot policy.
    pub(crate) struct TestCluster<A> {
        root: sessiondb_test_support::TempDir,
        peers: PeerClient,
        groups: Vec<GroupId>,
        config: GroupConfig,
        make: MakeState<A>,
        addresses: BTreeMap<ReplicaId, ReplicaNode>,
        pub(crate) nodes: BTreeMap<ReplicaId, TestNode<A>>,
    }

    /// Fast elections for tests.
    pub(crate) fn test_config() -> GroupConfig {
        GroupConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 600,
            election_timeout_max_ms: 1_200,
            ..GroupConfig::default()
        }
    }

    impl<A: GroupApply + Clone> TestCluster<A> {
        pub(crate) fn new(
            groups: Vec<GroupId>,
            config: GroupConfig,
            make: impl Fn(GroupId) -> A + Send + Sync + 'static,
        ) -> TestCluster<A> {
            let peers = PeerClient::new(
                PeerTransport::Http,
                ClusterSecret::generate(),
                Duration::from_millis(500),
            )
            .unwrap();
            TestCluster {
                root: sessiondb_test_support::TempDir::new("group-keeper"),
                peers,
                groups,
                config,
                make: Arc::new(make),
                addresses: BTreeMap::new(),
                nodes: BTreeMap::new(),
            }
        }

        pub(crate) async fn start(&mut self, id: ReplicaId) {
            let table = GroupReplicas::default();
            let (address, server) = serve_table(table.clone()).await;
            self.addresses.insert(id, ReplicaNode { address });
            let (host, _) = GroupHost::open(
                &self.root.path().join(format!("node-{id}")),
                id,
                ReplicatedLogConfig::default(),
                self.config.clone(),
                PeerGroupTransport::new(self.peers.clone()),
            )
            .unwrap();
            let states: States<A> = Arc::default();
            let recorded = Arc::clone(&states);
            let make = Arc::clone(&self.make);
            let make_state: Box<dyn Fn(GroupId) -> A> = Box::new(move |group| {
                let state = make(group);
                let mut states = recorded.lock().unwrap_or_else(PoisonError::into_inner);
                states.insert(group, state.clone());
                state
            });
            let keeper = GroupKeeper::new(host, table, make_state);
            self.nodes.insert(
                id,
                TestNode {
                    keeper,
                    states,
                    server,
                },
            );
        }

        /// Loses node `id` for good: its replicas stop, its server closes.
        pub(crate) async fn lose(&mut self, id: ReplicaId) {
            let node = self.nodes.remove(&id).unwrap();
            node.keeper.shutdown().await;
            node.server.stop(true).await;
        }

        pub(crate) fn wanted(
            &self,
            voters: &[ReplicaId],
            first_set: bool,
        ) -> BTreeMap<GroupId, WantedGroup> {
            let set = WantedGroup {
                voters: voters
                    .iter()
                    .map(|id| (*id, self.addresses[id].clone()))
                    .collect(),
                first_set,
            };
            self.groups
                .iter()
                .map(|&group| (group, set.clone()))
                .collect()
        }

        /// Rounds on every node until each group's leader reports it in
        /// sync with `voters`.
        pub(crate) async fn follow_until_in_sync(&self, wanted: &BTreeMap<GroupId, WantedGroup>) {
            eventually(WAIT, "every group reaches its wanted set", async || {
                let mut in_sync = BTreeSet::new();
                for node in self.nodes.values() {
                    let report = node.keeper.follow(wanted).await;
                    if !report.failures.is_empty() {
                        return Err(format!("{:?}", report.failures));
                    }
                    for (group, step) in report.reconciled {
                        if step == ReconcileStep::InSync {
                            in_sync.insert(group);
                        }
                    }
                }
                if in_sync.len() == self.groups.len() {
                    Ok(())
                } else {
                    Err(format!("in sync: {in_sync:?}"))
                }
            })
            .await;
        }

        /// The leader of `group`, once there is one.
        pub(crate) async fn leader(&self, group: GroupId) -> GroupHandle {
            eventually(WAIT, "the group has a leader", async || {
                self.leader_now(group).ok_or("no leader yet")
            })
            .await
        }

        /// Writes `bytes` at `group`'s leader, again at the next leader when
        /// the one asked was not it (then nothing was appended); answers
        /// the entry's index.
        pub(crate) async fn write(&self, group: GroupId, bytes: &[u8]) -> u64 {
            eventually(WAIT, "a leader takes the write", async || {
                let leader = self.leader(group).await;
                match leader.write(bytes.to_vec()).await {
                    Ok(index) => Ok(index),
                    Err(error @ crate::replication::GroupWriteError::NotLeader { .. }) => {
                        Err(error.to_string())
                    }
                    Err(error) => panic!("group {group} failed: {error}"),
                }
            })
            .await
        }

        /// Waits until every node's replica of `group` applied the leader's
        /// whole log. Call with no write in flight: every entry the leader
        /// holds is then committed. (The leader's applied index is no
        /// bound: openraft's metrics report an apply a moment after the
        /// state holds it.)
        pub(crate) async fn applied_everywhere(&self, group: GroupId) {
            let leader = self.leader(group).await;
            let last_log_index = leader.raft().metrics().borrow().last_log_index;
            for (id, node) in &self.nodes {
                let Some(replica) = node.keeper.replica(group) else {
                    continue;
                };
                replica
                    .raft()
                    .wait(Some(WAIT))
                    .applied_index_at_least(
                        last_log_index,
                        format!("node {id} applies group {group}"),
                    )
                    .await
                    .expect("every replica applies the leader's log");
            }
        }

        /// The replica leading `group` in the newest term, if any (a
        /// deposed leader may not know yet).
        pub(crate) fn leader_now(&self, group: GroupId) -> Option<GroupHandle> {
            self.nodes
                .values()
                .filter_map(|node| node.keeper.replica(group))
                .filter(|replica| replica.status().is_leader)
                .max_by_key(|replica| replica.status().term)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_cluster::{test_config, TestCluster, WAIT};
    use super::*;
    use crate::replication::group_tests::RecordingApply;
    use std::sync::PoisonError;

    const GROUPS: [GroupId; 2] = [0, 1];

    fn payloads(
        cluster: &TestCluster<RecordingApply>,
        id: ReplicaId,
        group: GroupId,
    ) -> Vec<Vec<u8>> {
        let states = cluster.nodes[&id]
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        states[&group].payloads()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_form_their_groups_and_replace_a_lost_member() {
        let mut cluster = TestCluster::new(GROUPS.to_vec(), test_config(), |_| {
            RecordingApply::default()
        });
        for id in [1, 2, 3, 4] {
            cluster.start(id).await;
        }
        let first = cluster.wanted(&[1, 2, 3], true);
        cluster.follow_until_in_sync(&first).await;
        let report = cluster.nodes[&4].keeper.follow(&first).await;
        assert!(
            report.started.is_empty(),
            "node 4 holds nothing: {report:?}"
        );
        let mut written: BTreeMap<GroupId, Vec<Vec<u8>>> = BTreeMap::new();
        for group in GROUPS {
            for number in 0..10 {
                let bytes = format!("group-{group}-before-{number}").into_bytes();
                cluster.write(group, &bytes).await;
                written.entry(group).or_default().push(bytes);
            }
        }

        cluster.lose(3).await;
        let replaced = cluster.wanted(&[1, 2, 4], false);
        cluster.follow_until_in_sync(&replaced).await;

        for group in GROUPS {
            let leader = cluster.leader(group).await;
            let mut voters = leader.status().voters;
            voters.sort_unstable();
            assert_eq!(voters, [1, 2, 4], "group {group}: the lost node is out");
            let mut last = 0;
            for number in 0..5 {
                let bytes = format!("group-{group}-after-{number}").into_bytes();
                last = cluster.write(group, &bytes).await;
                written.entry(group).or_default().push(bytes);
            }
            for id in [1, 2, 4] {
                let replica = cluster.nodes[&id].keeper.replicas.get(group).unwrap();
                replica
                    .raft()
                    .wait(Some(WAIT))
                    .applied_index_at_least(Some(last), format!("node {id} applies"))
                    .await
                    .unwrap();
                assert_eq!(
                    payloads(&cluster, id, group),
                    written[&group],
                    "node {id} holds group {group}'s writes once each"
                );
            }
        }
        assert!(
            !cluster.nodes[&4]
                .keeper
                .follow(&replaced)
                .await
                .created
                .contains(&0),
            "a replacement never creates a group"
        );
        for id in [1, 2, 4] {
            cluster.lose(id).await;
        }
    }
}
