//! Cluster membership with real node processes on loopback
//! (`docs/cluster.md`, "Membership" and "Cluster status"): formation, a
//! learner beyond `--voters-max`, a killed leader, and the cluster secret.
//!
//! Every wait is bounded polling of `GET /v1/cluster` until the nodes agree
//! (a bound to fail at, never a delay to wait out).

use crate::support::cluster::{
    cluster_args, cluster_status, create_project_everywhere, member_options, start_member,
    wait_until, CLUSTER_SECRET, SHARDS, START_MS,
};
use crate::support::node::TestNode;
use reqwest::StatusCode;
use sessiondb_protocol::{ClusterStatus, MemberRole, RaftState};
use std::collections::BTreeMap;

/// Members by id with their roles.
fn roles(status: &ClusterStatus) -> BTreeMap<u64, MemberRole> {
    status
        .members
        .iter()
        .map(|member| (member.node_id, member.role))
        .collect()
}

/// Every status names the same leader, and it is one of them.
fn same_leader(statuses: &[ClusterStatus]) -> Option<u64> {
    let leader = statuses.first()?.leader?;
    let agreed = statuses.iter().all(|status| status.leader == Some(leader));
    let present = statuses.iter().any(|status| status.node_id == leader);
    (agreed && present).then_some(leader)
}

/// Every shard owned by `owner` at epoch 1, none moving.
fn all_shards_initial(status: &ClusterStatus, owner: u64) -> bool {
    status.shards.len() == SHARDS as usize
        && status.shards.iter().enumerate().all(|(index, shard)| {
            shard.shard as usize == index
                && shard.owner == owner
                && shard.epoch == 1
                && shard.moving_to.is_none()
        })
}

fn voters(ids: &[u64]) -> BTreeMap<u64, MemberRole> {
    ids.iter().map(|id| (*id, MemberRole::Voter)).collect()
}

/// Starts node 1, then joins 2 and 3 to it; waits until all three agree.
async fn form_three_node_cluster() -> Vec<TestNode> {
    let first = start_member(1, None).await;
    let alone = wait_until(&[&first], "single-node bootstrap", |statuses| {
        same_leader(statuses) == Some(1) && all_shards_initial(&statuses[0], 1)
    })
    .await;
    assert_eq!(roles(&alone[0]), voters(&[1]));
    assert_eq!(alone[0].state, RaftState::Leader);
    let second = start_member(2, Some(&first)).await;
    let third = start_member(3, Some(&first)).await;
    wait_until(
        &[&first, &second, &third],
        "three-node formation",
        |statuses| {
            same_leader(statuses).is_some()
                && statuses.iter().all(|status| {
                    roles(status) == voters(&[1, 2, 3]) && all_shards_initial(status, 1)
                })
        },
    )
    .await;
    vec![first, second, third]
}

#[tokio::test]
async fn three_nodes_form_a_cluster_and_a_fourth_joins_as_a_learner() {
    let nodes = form_three_node_cluster().await;
    // Each member is recorded at the address it serves on.
    let status = cluster_status(&nodes[0]).await.expect("node 1 answers");
    for (member, node) in status.members.iter().zip(&nodes) {
        assert_eq!(member.address, node.address(), "node {}", member.node_id);
    }
    // Joining through a follower works too: it answers `307 not_leader`
    // naming the leader, and the new node asks there.
    let leader = status.leader.expect("a leader");
    let via = nodes
        .iter()
        .zip(1u64..)
        .find(|(_, node_id)| *node_id != leader)
        .map(|(node, _)| node)
        .expect("a follower");
    let fourth = start_member(4, Some(via)).await;
    let all = [&nodes[0], &nodes[1], &nodes[2], &fourth];
    let statuses = wait_until(&all, "fourth node joins", |statuses| {
        let mut expected = voters(&[1, 2, 3]);
        expected.insert(4, MemberRole::Learner);
        same_leader(statuses).is_some()
            && statuses
                .iter()
                .all(|status| roles(status) == expected && all_shards_initial(status, 1))
    })
    .await;
    let learner = statuses
        .iter()
        .find(|status| status.node_id == 4)
        .expect("node 4 answered");
    assert_eq!(learner.state, RaftState::Learner);
}

#[tokio::test]
async fn a_killed_leader_is_replaced_and_rejoins_as_a_follower() {
    let mut nodes = form_three_node_cluster().await;
    let before = cluster_status(&nodes[0]).await.expect("node 1 answers");
    let old_leader = before.leader.expect("a leader");
    // `form_three_node_cluster` gives node `i + 1` index `i`.
    let killed = usize::try_from(old_leader - 1).expect("a small id");
    nodes[killed].kill_9().await;
    let survivors: Vec<&TestNode> = (0..nodes.len())
        .filter(|index| *index != killed)
        .map(|index| &nodes[index])
        .collect();
    let after = wait_until(&survivors, "a new leader", |statuses| {
        same_leader(statuses).is_some_and(|leader| leader != old_leader)
    })
    .await;
    let new_leader = after[0].leader.expect("a leader");
    for status in &after {
        assert_eq!(roles(status), voters(&[1, 2, 3]), "membership unchanged");
        assert!(status.term > before.term, "a new term: {status:?}");
        assert!(all_shards_initial(status, 1));
    }
    // Restarted on its data directory (on a new port, which it announces),
    // the old leader follows the new one.
    nodes[killed].restart().await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let rejoined = wait_until(&all, "the old leader rejoins", |statuses| {
        same_leader(statuses).is_some()
            && statuses.iter().all(|status| {
                roles(status) == voters(&[1, 2, 3])
                    && status
                        .members
                        .iter()
                        .any(|member| member.address == nodes[killed].address())
            })
    })
    .await;
    let restarted = &rejoined[killed];
    assert_eq!(restarted.node_id, old_leader);
    assert_eq!(restarted.state, RaftState::Follower, "{restarted:?}");
    assert_eq!(restarted.leader, Some(new_leader), "{rejoined:#?}");
    assert!(all_shards_initial(restarted, 1));
}

#[tokio::test]
async fn the_cluster_secret_guards_node_to_node_calls() {
    let first = start_member(1, None).await;
    wait_until(&[&first], "single-node bootstrap", |statuses| {
        same_leader(statuses) == Some(1)
    })
    .await;
    let wrong = "Bearer wrong-cluster-secret-0123456789";
    let right = format!("Bearer {CLUSTER_SECRET}");
    for path in [
        "/v1/internal/raft/vote",
        "/v1/internal/raft/append",
        "/v1/internal/raft/snapshot",
        "/v1/cluster/join",
    ] {
        let refused = first
            .post_with_headers(path, &[("authorization", wrong)], "{}")
            .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(refused.error_code(), Some("unauthorized"), "{path}");
        let anonymous = first.post_anonymous(path, "{}").await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        // With the secret the request reaches the handler, which finds the
        // empty body malformed.
        let malformed = first
            .post_with_headers(path, &[("authorization", right.as_str())], "{}")
            .await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{path}");
    }
    // The shard groups' Raft routes: guarded the same way; with the secret
    // a group with no replica here is named as not found.
    for path in [
        "/v1/internal/groups/5/raft/vote",
        "/v1/internal/groups/5/raft/append",
        "/v1/internal/groups/5/raft/snapshot",
    ] {
        let refused = first
            .post_with_headers(path, &[("authorization", wrong)], "{}")
            .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
        let anonymous = first.post_anonymous(path, "{}").await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        let not_hosted = first
            .post_with_headers(path, &[("authorization", right.as_str())], "{}")
            .await;
        assert_eq!(not_hosted.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(not_hosted.error_code(), Some("not_found"), "{path}");
        assert!(
            not_hosted.text.contains("group 5 has no replica"),
            "{path}: {}",
            not_hosted.text
        );
    }
    // The cluster status needs the admin token: the cluster secret is a
    // credential of another class (403).
    let status = first
        .get_with_headers("/v1/cluster", &[("authorization", right.as_str())])
        .await;
    assert_eq!(status.status, StatusCode::FORBIDDEN);

    // A node with another secret is refused (at its identity check,
    // before it listens) and exits with an error.
    let refused = TestNode::try_start_with_args(
        member_options(),
        cluster_args(2, Some(&first), "another-cluster-secret-0123456789"),
    )
    .await
    .expect_err("a node with another secret must not start");
    let exit = refused.status.expect("the refused node exited");
    assert_eq!(exit.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("refused this node's cluster secret"),
        "{}",
        refused.stderr
    );
    let status = cluster_status(&first).await.expect("node 1 answers");
    assert_eq!(roles(&status), voters(&[1]));
}

#[tokio::test]
async fn a_restarted_single_node_keeps_its_cluster_and_records_its_new_address() {
    let mut node = start_member(1, None).await;
    let before = wait_until(&[&node], "single-node bootstrap", |statuses| {
        same_leader(statuses) == Some(1) && all_shards_initial(&statuses[0], 1)
    })
    .await;
    let old_address = node.address().to_string();
    node.kill_9().await;
    node.restart().await;
    // With `--listen 127.0.0.1:0` the node almost always gets another port.
    let moved = node.address() != old_address;
    // The restarted leader commits a new entry of its own (a blank entry,
    // and the address change when the port moved); the wait fails if it
    // never does.
    let after = wait_until(&[&node], "single-node restart", |statuses| {
        same_leader(statuses) == Some(1)
            && statuses[0].members.len() == 1
            && statuses[0].members[0].address == node.address()
            && statuses[0].applied_index > before[0].applied_index
    })
    .await;
    assert_eq!(roles(&after[0]), voters(&[1]));
    // The same cluster, not a new one: the shard map was not recreated.
    assert!(all_shards_initial(&after[0], 1));
    assert!(after[0].term >= before[0].term);
    if moved {
        assert!(after[0].members.iter().all(|m| m.address != old_address));
    }
}

/// Shard roles follow placement: after bootstrap node 1 owns every shard,
/// so only node 1 accepts events; another member refuses them with
/// `not_owner`, naming the owner, and applies nothing.
#[tokio::test]
async fn only_the_shard_owner_accepts_events() {
    let nodes = form_three_node_cluster().await;
    let event = sessiondb_protocol::Event {
        id: "e-1".to_string(),
        project: "shop".to_string(),
        visitor: "v-1".to_string(),
        ts: sessiondb_protocol::Timestamp::Milliseconds(START_MS),
        event_type: sessiondb_protocol::EventType::Pageview,
        key: None,
        value: None,
        attributes: Default::default(),
        decisions: Vec::new(),
    };
    // Created through node 2 (a follower or the leader): every node has it.
    create_project_everywhere(&[&nodes[1], &nodes[0]], "shop", serde_json::json!({})).await;
    // Creating it again through another node is refused: it exists
    // cluster-wide.
    let again = nodes[2]
        .post_raw("/v1/projects", r#"{"name": "shop", "settings": {}}"#)
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(again.error_code(), Some("project_exists"));
    let refused = nodes[1].send_batch(std::slice::from_ref(&event)).await;
    assert_eq!(refused.accepted, 0, "{refused:?}");
    assert_eq!(refused.rejected.len(), 1, "{refused:?}");
    assert_eq!(refused.rejected[0].reason, "not_owner");
    assert!(
        refused.rejected[0].message.contains("node 1"),
        "{:?}",
        refused.rejected[0]
    );
    let accepted = nodes[0].send_batch(std::slice::from_ref(&event)).await;
    assert_eq!(
        (accepted.accepted, accepted.rejected.len()),
        (1, 0),
        "{accepted:?}"
    );
}
