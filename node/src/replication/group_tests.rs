//! Tests of a shard group's replicas: three openraft replicas of one group
//! in one process, each with its own `ReplicatedLog` on real disk, joined
//! by an in-process transport that can cut a replica off. Every wait is on
//! openraft's metrics or on state with a bound; none is a sleep.

use super::tests::TemporaryDirectory;
use super::*;
use crate::log::{FaultPlan, LogConfig};
use openraft::{LogId, RaftLogReader, ServerState};
use sessiondb_test_support::eventually;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const GROUP: GroupId = 7;
/// Bound of every wait: a failure point, not a delay.
const WAIT: Duration = Duration::from_secs(30);

/// What a replica applied: every payload in order, and how many snapshots
/// it installed.
#[derive(Debug, Default)]
struct Applied {
    payloads: Vec<Vec<u8>>,
    installs: u64,
}

/// The test's `GroupApply`: records payloads; a snapshot is the list.
/// Also used by the peer transport's test (`cluster::replicas`).
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordingApply(Arc<Mutex<Applied>>);

impl RecordingApply {
    pub(crate) fn payloads(&self) -> Vec<Vec<u8>> {
        self.lock().payloads.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl GroupApply for RecordingApply {
    fn apply(&mut self, _index: u64, payload: &[u8]) -> Result<(), GroupApplyError> {
        self.lock().payloads.push(payload.to_vec());
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, GroupApplyError> {
        serde_json::to_vec(&self.lock().payloads).map_err(|error| GroupApplyError {
            step: "snapshot",
            reason: error.to_string(),
        })
    }

    fn install(&mut self, snapshot: &[u8]) -> Result<(), GroupApplyError> {
        let payloads = serde_json::from_slice(snapshot).map_err(|error| GroupApplyError {
            step: "install",
            reason: error.to_string(),
        })?;
        let mut applied = self.lock();
        applied.payloads = payloads;
        applied.installs += 1;
        Ok(())
    }
}

/// The in-process network: which replicas are up, and which are cut off
/// from every other (both ways).
#[derive(Clone, Default)]
struct Switchboard(Arc<Mutex<Lines>>);

#[derive(Default)]
struct Lines {
    replicas: HashMap<ReplicaId, GroupRaft>,
    isolated: HashSet<ReplicaId>,
}

impl Switchboard {
    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn route(&self, from: ReplicaId, target: ReplicaId) -> Result<GroupRaft, TransportError> {
        let lines = self.lines();
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            reason: reason.to_string(),
        };
        if lines.isolated.contains(&from) || lines.isolated.contains(&target) {
            return Err(unreachable("cut off"));
        }
        lines
            .replicas
            .get(&target)
            .cloned()
            .ok_or_else(|| unreachable("not running"))
    }
}

#[derive(Clone)]
struct LocalTransport {
    from: ReplicaId,
    board: Switchboard,
}

impl GroupTransport for LocalTransport {
    fn call(
        &self,
        target: ReplicaId,
        _node: &ReplicaNode,
        group: GroupId,
        rpc: GroupRpc,
        body: Vec<u8>,
        _timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let route = self.board.route(self.from, target);
        async move {
            assert_eq!(group, GROUP, "one group in these tests");
            let raft = route?;
            serve(&raft, rpc, &body)
                .await
                .map_err(|error| TransportError::Failed {
                    target,
                    reason: error.to_string(),
                })
        }
    }
}

struct Replica {
    raft: GroupRaft,
    log: ReplicatedLog<ReplicaTypes>,
    state: RecordingApply,
    fault: Arc<FaultPlan>,
}

/// Three replicas of `GROUP`, each in its own directory.
struct TestGroup {
    root: TemporaryDirectory,
    board: Switchboard,
    config: GroupConfig,
    replicas: BTreeMap<ReplicaId, Replica>,
}

const MEMBERS: [ReplicaId; 3] = [1, 2, 3];

fn test_config() -> GroupConfig {
    GroupConfig {
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1_200,
        ..GroupConfig::default()
    }
}

impl TestGroup {
    async fn start(name: &str, config: GroupConfig) -> TestGroup {
        let mut group = TestGroup {
            root: TemporaryDirectory::new(name),
            board: Switchboard::default(),
            config,
            replicas: BTreeMap::new(),
        };
        for id in MEMBERS {
            group.start_replica(id).await;
        }
        let members: BTreeMap<ReplicaId, ReplicaNode> = MEMBERS
            .iter()
            .map(|&id| {
                let address = format!("replica-{id}");
                (id, ReplicaNode { address })
            })
            .collect();
        group.replicas[&1]
            .raft
            .initialize(members)
            .await
            .expect("initialize the group");
        group
    }

    fn dir(&self, id: ReplicaId) -> PathBuf {
        self.root.path().join(format!("replica-{id}"))
    }

    /// Opens replica `id`'s log and snapshots from its directory (as a
    /// restarted node does) and starts its Raft; returns what the log held.
    async fn start_replica(&mut self, id: ReplicaId) -> OpenReport {
        let fault = Arc::new(FaultPlan::new());
        let config = ReplicatedLogConfig {
            log: LogConfig {
                fault: Some(Arc::clone(&fault)),
                ..LogConfig::default()
            },
            ..ReplicatedLogConfig::default()
        };
        let (log, report) =
            ReplicatedLog::open(self.dir(id).join("log"), config).expect("open the log");
        let state = RecordingApply::default();
        let transport = LocalTransport {
            from: id,
            board: self.board.clone(),
        };
        let raft = start_replica(
            id,
            GROUP,
            &log,
            &self.dir(id).join("snapshots"),
            state.clone(),
            transport,
            &self.config,
        )
        .await
        .expect("start the replica");
        self.board.lines().replicas.insert(id, raft.clone());
        self.replicas.insert(
            id,
            Replica {
                raft,
                log,
                state,
                fault,
            },
        );
        report
    }

    /// Stops replica `id` as a crash would look to the others: it is
    /// unreachable at once, then its Raft and log are dropped.
    async fn stop(&mut self, id: ReplicaId) {
        self.board.lines().replicas.remove(&id);
        let replica = self.replicas.remove(&id).expect("a running replica");
        replica
            .raft
            .shutdown()
            .await
            .expect("shut the replica down");
    }

    fn raft(&self, id: ReplicaId) -> &GroupRaft {
        &self.replicas[&id].raft
    }

    fn payloads(&self, id: ReplicaId) -> Vec<Vec<u8>> {
        self.replicas[&id].state.lock().payloads.clone()
    }

    fn isolate(&self, id: ReplicaId) {
        self.board.lines().isolated.insert(id);
    }

    fn heal(&self, id: ReplicaId) {
        self.board.lines().isolated.remove(&id);
    }

    /// The leader of the highest term among running replicas, once one
    /// of the replicas `among` leads.
    async fn leader_among(&self, among: &[ReplicaId]) -> ReplicaId {
        eventually(WAIT, "a leader is elected", async || {
            let leader = self
                .replicas
                .iter()
                .filter(|(id, _)| among.contains(id))
                .map(|(id, replica)| (*id, replica.raft.metrics().borrow().clone()))
                .filter(|(_, metrics)| metrics.state == ServerState::Leader)
                .max_by_key(|(_, metrics)| metrics.current_term)
                .map(|(id, _)| id);
            leader.ok_or("no leader yet")
        })
        .await
    }

    async fn leader(&self) -> ReplicaId {
        let running: Vec<ReplicaId> = self.replicas.keys().copied().collect();
        self.leader_among(&running).await
    }

    async fn write(&self, id: ReplicaId, payload: &[u8]) -> LogId<ReplicaId> {
        let response = self
            .raft(id)
            .client_write(GroupPayload::new(payload.to_vec()))
            .await
            .expect("the leader accepts the write");
        response.log_id
    }

    /// Waits until replica `id` applied everything up to `index`.
    async fn applied(&self, id: ReplicaId, index: u64) {
        self.raft(id)
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), format!("replica {id} applies {index}"))
            .await
            .expect("the replica applies");
    }

    async fn shutdown(mut self) {
        for replica in self.replicas.values() {
            replica.fault.release_syncs();
        }
        let ids: Vec<ReplicaId> = self.replicas.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

fn payload(name: &str, number: usize) -> Vec<u8> {
    format!("{name}-{number}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_one_leader_that_all_follow() {
    let group = TestGroup::start("elect", test_config()).await;
    let leader = group.leader().await;
    for id in MEMBERS {
        group
            .raft(id)
            .wait(Some(WAIT))
            .current_leader(leader, format!("replica {id} follows {leader}"))
            .await
            .expect("every replica follows the leader");
    }
    let voters: Vec<ReplicaId> = group
        .raft(leader)
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, MEMBERS.to_vec());
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_writes_at_the_leader_and_names_it_elsewhere() {
    let group = TestGroup::start("handle", test_config()).await;
    let leader = group.leader().await;
    let follower = MEMBERS.into_iter().find(|&id| id != leader).unwrap();
    let at_leader = GroupHandle::new(GROUP, group.raft(leader).clone());
    let at_follower = GroupHandle::new(GROUP, group.raft(follower).clone());
    let index = at_leader
        .write(b"through the handle".to_vec())
        .await
        .unwrap();
    group.applied(follower, index).await;
    assert_eq!(
        group.payloads(follower),
        vec![b"through the handle".to_vec()]
    );

    let refused = at_follower.write(b"refused".to_vec()).await.unwrap_err();
    match refused {
        GroupWriteError::NotLeader {
            group: GROUP,
            leader: Some(named),
            leader_address: Some(address),
        } => {
            assert_eq!(named, leader);
            assert_eq!(address, format!("replica-{leader}"));
        }
        other => panic!("expected not_leader naming {leader}, got {other:?}"),
    }
    let status = at_follower.status();
    assert!(!status.is_leader);
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.voters, MEMBERS.to_vec());
    assert!(at_leader.status().is_leader);
    assert_eq!(at_leader.status().term, status.term);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_acknowledged_only_once_a_majority_synced_it() {
    let group = TestGroup::start("majority", test_config()).await;
    let leader = group.leader().await;
    let first = group.write(leader, b"before").await;
    let followers: Vec<ReplicaId> = MEMBERS.into_iter().filter(|&id| id != leader).collect();
    for &id in &followers {
        group.applied(id, first.index).await;
        group.replicas[&id].fault.hold_syncs();
    }

    let raft = group.raft(leader).clone();
    let write = tokio::spawn(async move {
        raft.client_write(GroupPayload::new(b"held".to_vec()))
            .await
            .map(|response| response.log_id)
    });
    let index = first.index + 1;
    // Both followers hold the entry in memory, and the leader synced it
    // itself, yet no second replica has it on disk: no acknowledgement.
    for &id in &followers {
        let mut reader = group.replicas[&id].log.reader(GROUP);
        eventually(WAIT, "the follower received the entry", async || {
            let entries = reader
                .try_get_log_entries(index..=index)
                .await
                .map_err(|error| error.to_string())?;
            if entries.len() == 1 {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        })
        .await;
    }
    group
        .raft(leader)
        .wait(Some(WAIT))
        .log_index_at_least(Some(index), "the leader has the entry")
        .await
        .expect("the leader appends");
    assert!(
        !write.is_finished(),
        "acknowledged before any follower synced the entry"
    );
    let metrics = group.raft(leader).metrics().borrow().clone();
    assert!(metrics
        .last_applied
        .is_none_or(|applied| applied.index < index));

    group.replicas[&followers[0]].fault.release_syncs();
    let acknowledged = tokio::time::timeout(WAIT, write)
        .await
        .expect("acknowledged once one follower synced")
        .expect("the write task")
        .expect("the write commits");
    assert_eq!(acknowledged.index, index);
    group.applied(followers[0], index).await;
    assert_eq!(
        group.payloads(followers[0]),
        vec![b"before".to_vec(), b"held".to_vec()]
    );
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_the_leaders_loss_and_a_new_leader_takes_writes() {
    let mut group = TestGroup::start("failover", test_config()).await;
    let old_leader = group.leader().await;
    let mut expected = Vec::new();
    for number in 0..5 {
        let bytes = payload("acknowledged", number);
        group.write(old_leader, &bytes).await;
        expected.push(bytes);
    }
    group.stop(old_leader).await;

    let survivors: Vec<ReplicaId> = MEMBERS.into_iter().filter(|&id| id != old_leader).collect();
    let new_leader = group.leader_among(&survivors).await;
    assert_ne!(new_leader, old_leader);
    let after = payload("after-failover", 0);
    let log_id = group.write(new_leader, &after).await;
    expected.push(after);
    for &id in &survivors {
        group.applied(id, log_id.index).await;
        assert_eq!(group.payloads(id), expected, "replica {id}");
    }
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_reopens_its_log_and_catches_up() {
    let mut group = TestGroup::start("restart", test_config()).await;
    let leader = group.leader().await;
    let follower = MEMBERS.into_iter().find(|&id| id != leader).unwrap();
    let mut expected = Vec::new();
    let mut last = None;
    for number in 0..3 {
        let bytes = payload("before-restart", number);
        last = Some(group.write(leader, &bytes).await);
        expected.push(bytes);
    }
    group.applied(follower, last.unwrap().index).await;
    group.stop(follower).await;
    for number in 0..3 {
        let bytes = payload("while-down", number);
        last = Some(group.write(leader, &bytes).await);
        expected.push(bytes);
    }

    let report = group.start_replica(follower).await;
    assert_eq!(report.groups, 1);
    assert!(report.entries >= 3, "the log kept its entries: {report:?}");
    group.applied(follower, last.unwrap().index).await;
    assert_eq!(group.payloads(follower), expected);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_brought_up_by_a_snapshot_after_the_purge() {
    let config = GroupConfig {
        snapshot_entries_since_last: 5,
        entries_kept_behind_snapshot: 0,
        purge_batch_entries: 1,
        ..test_config()
    };
    let group = TestGroup::start("snapshot", config).await;
    let leader = group.leader().await;
    let lagging = MEMBERS.into_iter().find(|&id| id != leader).unwrap();
    let lagging_index = group.raft(lagging).metrics().borrow().last_log_index;
    group.isolate(lagging);

    let mut expected = Vec::new();
    let mut last = None;
    for number in 0..20 {
        let bytes = payload("while-cut-off", number);
        last = Some(group.write(leader, &bytes).await);
        expected.push(bytes);
    }
    let last = last.unwrap();
    group
        .raft(leader)
        .wait(Some(WAIT))
        .metrics(
            |metrics| {
                metrics.purged.map(|purged| purged.index) > lagging_index.map(|index| index + 1)
            },
            "the leader purged what the lagging replica lacks",
        )
        .await
        .expect("the leader snapshots and purges");

    group.heal(lagging);
    group.applied(lagging, last.index).await;
    assert!(
        group.replicas[&lagging].state.lock().installs >= 1,
        "caught up through a snapshot"
    );
    assert_eq!(group.payloads(lagging), expected);
    assert_eq!(group.payloads(leader), expected);

    // Restarted, the replica starts from its snapshot file: its log no
    // longer holds the entries the snapshot covers.
    let mut group = group;
    group.stop(lagging).await;
    group.start_replica(lagging).await;
    group.applied(lagging, last.index).await;
    assert_eq!(group.replicas[&lagging].state.lock().installs, 1);
    assert_eq!(group.payloads(lagging), expected);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_commit() {
    let group = TestGroup::start("fencing", test_config()).await;
    let old_leader = group.leader().await;
    let old_term = group.raft(old_leader).metrics().borrow().current_term;
    let first = group.write(old_leader, b"before").await;
    group.isolate(old_leader);

    let others: Vec<ReplicaId> = MEMBERS.into_iter().filter(|&id| id != old_leader).collect();
    let new_leader = group.leader_among(&others).await;
    let new_term = group.raft(new_leader).metrics().borrow().current_term;
    assert!(new_term > old_term, "a new leader has a higher term");

    let stale_raft = group.raft(old_leader).clone();
    let stale = tokio::spawn(async move {
        stale_raft
            .client_write(GroupPayload::new(b"stale".to_vec()))
            .await
    });
    group
        .raft(old_leader)
        .wait(Some(WAIT))
        .log_index_at_least(Some(first.index + 1), "the old leader appends")
        .await
        .expect("the old leader still takes the entry into its log");
    let winner = group.write(new_leader, b"winner").await;
    for &id in &others {
        group.applied(id, winner.index).await;
    }
    let metrics = group.raft(old_leader).metrics().borrow().clone();
    assert_eq!(
        metrics.last_applied.map(|applied| applied.index),
        Some(first.index),
        "the cut-off leader committed nothing new"
    );

    group.heal(old_leader);
    let refused = tokio::time::timeout(WAIT, stale)
        .await
        .expect("the stale write is answered")
        .expect("the write task");
    assert!(
        refused.is_err(),
        "the deposed leader's write failed: {refused:?}"
    );
    group.applied(old_leader, winner.index).await;
    let expected = vec![b"before".to_vec(), b"winner".to_vec()];
    for id in MEMBERS {
        assert_eq!(group.payloads(id), expected, "replica {id}");
    }
    group.shutdown().await;
}

#[tokio::test]
async fn snapshot_files_round_trip_and_refuse_damage() {
    use super::group::{SnapshotFile, StoredSnapshot};
    let root = TemporaryDirectory::new("snapshot-file");
    let file = SnapshotFile::new(GROUP, root.path());
    assert!(file.read().await.unwrap().is_none());
    let snapshot = |index: u64, data: &[u8]| StoredSnapshot {
        meta: openraft::SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), index)),
            last_membership: openraft::StoredMembership::default(),
            snapshot_id: format!("snapshot-{index}"),
        },
        data: data.to_vec(),
    };
    file.write(snapshot(10, b"ten")).await.unwrap();
    // An older snapshot never replaces a newer one.
    file.write(snapshot(5, b"five")).await.unwrap();
    let read = file.read().await.unwrap().expect("a snapshot");
    assert_eq!(read.data, b"ten");
    assert_eq!(read.meta.snapshot_id, "snapshot-10");

    let path = root.path().join(format!("group-{GROUP}.snapshot"));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let error = file.read().await.unwrap_err();
    assert!(error.to_string().contains("checksum"), "{error}");
}

/// Repeats the leader's `reconcile` towards `wanted` until the group is in
/// sync; answers the steps taken.
async fn reconcile_until_in_sync(
    group: &TestGroup,
    wanted: &BTreeMap<ReplicaId, ReplicaNode>,
) -> Vec<ReconcileStep> {
    let steps = Arc::new(Mutex::new(Vec::new()));
    eventually(
        WAIT,
        "the group reaches the wanted replica set",
        async || {
            let leader = group.leader().await;
            let handle = GroupHandle::new(GROUP, group.raft(leader).clone());
            let step = handle
                .reconcile(wanted)
                .await
                .map_err(|error| error.to_string())?;
            let in_sync = step == ReconcileStep::InSync;
            steps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(step);
            if in_sync {
                Ok(())
            } else {
                Err("not in sync yet".to_string())
            }
        },
    )
    .await;
    let steps = steps.lock().unwrap_or_else(PoisonError::into_inner).clone();
    steps
}

fn replica_set(ids: &[ReplicaId]) -> BTreeMap<ReplicaId, ReplicaNode> {
    ids.iter()
        .map(|&id| {
            let address = format!("replica-{id}");
            (id, ReplicaNode { address })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_voter_is_replaced_by_a_new_member_that_catches_up() {
    let mut group = TestGroup::start("replace", test_config()).await;
    let leader = group.leader().await;
    let lost = MEMBERS.into_iter().find(|&id| id != leader).unwrap();
    let mut expected = Vec::new();
    for number in 0..20 {
        let bytes = payload("before-loss", number);
        group.write(leader, &bytes).await;
        expected.push(bytes);
    }
    group.stop(lost).await;
    group.start_replica(4).await;
    let wanted_ids: Vec<ReplicaId> = MEMBERS
        .into_iter()
        .filter(|&id| id != lost)
        .chain([4])
        .collect();

    let steps = reconcile_until_in_sync(&group, &replica_set(&wanted_ids)).await;

    assert!(
        steps.contains(&ReconcileStep::AddedLearners([4].into())),
        "the new member came in as a learner first: {steps:?}"
    );
    let leader = group.leader().await;
    let handle = GroupHandle::new(GROUP, group.raft(leader).clone());
    let mut voters = handle.status().voters;
    voters.sort_unstable();
    assert_eq!(
        voters, wanted_ids,
        "the lost member is out, the new one votes"
    );
    let mut last = None;
    for number in 0..5 {
        let bytes = payload("after-replacement", number);
        last = Some(group.write(leader, &bytes).await);
        expected.push(bytes);
    }
    for id in wanted_ids {
        group.applied(id, last.unwrap().index).await;
        assert_eq!(
            group.payloads(id),
            expected,
            "replica {id} holds every write once"
        );
    }
    let progress = handle.progress().expect("the leader reports progress");
    assert_eq!(progress.lag_entries(4), Some(0));
    assert_eq!(progress.lag_entries(lost), None, "the lost member is gone");
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_an_empty_set_is_refused() {
    let group = TestGroup::start("reconcile-refusals", test_config()).await;
    let leader = group.leader().await;
    let follower = MEMBERS.into_iter().find(|&id| id != leader).unwrap();
    group
        .raft(follower)
        .wait(Some(WAIT))
        .current_leader(leader, "the follower knows the leader")
        .await
        .expect("the follower hears the leader");
    let handle = GroupHandle::new(GROUP, group.raft(follower).clone());
    let refused = handle.reconcile(&replica_set(&MEMBERS)).await;
    assert!(
        matches!(refused, Err(MembershipError::NotLeader { leader: Some(named), .. }) if named == leader),
        "a follower refuses and names the leader: {refused:?}"
    );
    assert!(
        handle.progress().is_none(),
        "a follower reports no progress"
    );
    let leading = GroupHandle::new(GROUP, group.raft(leader).clone());
    let empty = leading.reconcile(&BTreeMap::new()).await;
    assert!(
        matches!(empty, Err(MembershipError::EmptyReplicaSet { .. })),
        "{empty:?}"
    );
    assert_eq!(
        leading.reconcile(&replica_set(&MEMBERS)).await.unwrap(),
        ReconcileStep::InSync
    );
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_restarts_its_groups_from_disk_and_forgets_one_wholly() {
    let root = TemporaryDirectory::new("host");
    let open = || {
        let transport = LocalTransport {
            from: 1,
            board: Switchboard::default(),
        };
        GroupHost::open(
            root.path(),
            1,
            ReplicatedLogConfig::default(),
            test_config(),
            transport,
        )
        .expect("open the host")
        .0
    };
    let host = open();
    assert!(
        host.groups_on_disk().unwrap().is_empty(),
        "a new host holds nothing"
    );
    let state = RecordingApply::default();
    let replica = host
        .start(GROUP, state.clone())
        .await
        .expect("start the group");
    replica
        .initialize(replica_set(&[1]))
        .await
        .expect("a group of one");
    replica
        .raft()
        .wait(Some(WAIT))
        .state(ServerState::Leader, "the only voter leads")
        .await
        .expect("the only voter is elected");
    let written: Vec<Vec<u8>> = (0..5).map(|number| payload("hosted", number)).collect();
    let mut last = 0;
    for bytes in &written {
        last = replica
            .write(bytes.clone())
            .await
            .expect("the only voter leads");
    }
    replica.shutdown().await.unwrap();
    drop(host);

    let host = open();
    assert_eq!(host.groups_on_disk().unwrap(), [GROUP].into());
    let restarted = RecordingApply::default();
    let replica = host
        .start(GROUP, restarted.clone())
        .await
        .expect("restart the group");
    replica
        .raft()
        .wait(Some(WAIT))
        .applied_index_at_least(Some(last), "the restarted group applies its log")
        .await
        .expect("the log is applied again");
    assert_eq!(restarted.payloads(), written, "every write is back, once");
    assert!(
        host.start(GROUP, RecordingApply::default()).await.is_err(),
        "a group runs once per node"
    );

    replica
        .raft()
        .trigger()
        .snapshot()
        .await
        .expect("ask for a snapshot");
    replica
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |metrics| metrics.snapshot.is_some_and(|log_id| log_id.index >= last),
            "the group's snapshot is on disk",
        )
        .await
        .expect("the snapshot is written");
    host.forget(replica).await.expect("forget the group");
    assert!(
        host.groups_on_disk().unwrap().is_empty(),
        "nothing of the group is left"
    );
}
