//! The sender with a `ShardMapRouter` against a fake cluster: in-process
//! HTTP servers that serve `GET /v1/shard-map` and accept a binary batch's
//! events only for the shards they own, refusing the others as `not_owner`
//! (with or without naming the owner) or `shard_moving` — what real nodes
//! do (`docs/api.md`). The real multi-node runs are in
//! `node/tests/it/cluster_routing.rs`; these tests pin the splitting, the
//! rerouting and the refresh bound, where a fake can misbehave on cue.

use sessiondb_client::protocol::hashing::{shard_of, SHARD_HASH};
use sessiondb_client::protocol::{
    binary, ClusterMember, Decision, Event, EventType, IngestResponse, MemberRole, RejectCode,
    Rejection, ShardMap, ShardMapEntry, Timestamp,
};
use sessiondb_client::{Client, Sender, SenderConfig, ShardMapRouter};
use sessiondb_test_support::eventually;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROJECT: &str = "routing";
const SHARDS: u32 = 8;
/// Bound on waiting for a condition (polled, not slept on).
const POLL_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// How the fake nodes refuse events they do not own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `not_owner` with shard, owner and epoch, like the real node.
    WithOwner,
    /// `not_owner` with no machine-readable owner (an older node): the
    /// client must learn the owner from a fresh map.
    Bare,
}

#[derive(Debug)]
struct ClusterState {
    /// (owner, epoch) per shard: who accepts.
    owners: Vec<(u64, u64)>,
    /// What `GET /v1/shard-map` answers; may lag behind `owners`.
    published: Vec<(u64, u64)>,
    addresses: BTreeMap<u64, String>,
    refusal: Refusal,
    /// `shard_moving` answers still to give, per shard.
    moving_answers: BTreeMap<u32, usize>,
    /// Ids applied, cluster-wide (a real cluster's dedup moves with shards).
    applied: BTreeSet<String>,
    /// Per node: batches received, and batches that held events of
    /// another owner per the accepting map.
    batches: BTreeMap<u64, usize>,
    mixed_batches: usize,
    map_fetches: usize,
    map_fetches_running: usize,
    map_fetches_running_max: usize,
    /// The `Authorization` header of every request, `-` when absent.
    authorizations: BTreeSet<String>,
}

type Shared = Arc<Mutex<ClusterState>>;

struct FakeCluster {
    state: Shared,
    urls: Vec<String>,
}

impl FakeCluster {
    /// `nodes` fake nodes (ids 1..=nodes); shard `s` owned by `owners[s]`
    /// at epoch 1.
    async fn start(nodes: u64, owners: &[u64], refusal: Refusal) -> FakeCluster {
        let state = Arc::new(Mutex::new(ClusterState {
            owners: owners.iter().map(|&owner| (owner, 1)).collect(),
            published: owners.iter().map(|&owner| (owner, 1)).collect(),
            addresses: BTreeMap::new(),
            refusal,
            moving_answers: BTreeMap::new(),
            applied: BTreeSet::new(),
            batches: BTreeMap::new(),
            mixed_batches: 0,
            map_fetches: 0,
            map_fetches_running: 0,
            map_fetches_running_max: 0,
            authorizations: BTreeSet::new(),
        }));
        let mut urls = Vec::new();
        for node in 1..=nodes {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            state
                .lock()
                .unwrap()
                .addresses
                .insert(node, address.clone());
            urls.push(format!("http://{address}"));
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    tokio::spawn(serve_connection(node, stream, Arc::clone(&state)));
                }
            });
        }
        FakeCluster { state, urls }
    }

    /// Moves `shard` to `to` (epoch + 1); the published map follows only
    /// when `publish`.
    fn move_shard(&self, shard: u32, to: u64, publish: bool) {
        let mut state = self.state.lock().unwrap();
        let epoch = state.owners[shard as usize].1 + 1;
        state.owners[shard as usize] = (to, epoch);
        if publish {
            state.published[shard as usize] = (to, epoch);
        }
    }

    fn publish(&self) {
        let mut state = self.state.lock().unwrap();
        state.published = state.owners.clone();
    }
}

async fn serve_connection(node: u64, mut stream: TcpStream, state: Shared) {
    let mut buffer = Vec::new();
    loop {
        // Headers.
        let header_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < header_end + length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        let body = buffer[header_end..header_end + length].to_vec();
        buffer.drain(..header_end + length);
        let request_line = head.lines().next().unwrap_or_default().to_string();
        let authorization = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("authorization")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| "-".to_string());
        state.lock().unwrap().authorizations.insert(authorization);
        let answer = if request_line.starts_with("GET /v1/shard-map") {
            shard_map(node, &state).await
        } else if request_line.starts_with("POST /v1/events") {
            ingest(node, &body, &state)
        } else {
            panic!("unexpected request {request_line}");
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn shard_map(node: u64, state: &Shared) -> String {
    {
        let mut state = state.lock().unwrap();
        state.map_fetches += 1;
        state.map_fetches_running += 1;
        state.map_fetches_running_max =
            state.map_fetches_running_max.max(state.map_fetches_running);
    }
    // Let concurrent fetches overlap if the client sent them.
    tokio::task::yield_now().await;
    let mut state = state.lock().unwrap();
    state.map_fetches_running -= 1;
    let map = ShardMap {
        version: state.published.iter().map(|(_, epoch)| epoch).sum(),
        node_id: node,
        hash: SHARD_HASH.to_string(),
        shards: SHARDS,
        assignments: state
            .published
            .iter()
            .enumerate()
            .map(|(shard, &(owner, epoch))| ShardMapEntry {
                shard: shard as u32,
                owner,
                owner_address: state.addresses.get(&owner).cloned(),
                epoch,
                moving: false,
            })
            .collect(),
        members: state
            .addresses
            .iter()
            .map(|(&node_id, address)| ClusterMember {
                node_id,
                address: address.clone(),
                role: MemberRole::Voter,
                draining: false,
            })
            .collect(),
    };
    serde_json::to_string(&map).unwrap()
}

fn ingest(node: u64, body: &[u8], state: &Shared) -> String {
    let events = binary::decode_batch(body).expect("a binary batch");
    let mut state = state.lock().unwrap();
    *state.batches.entry(node).or_default() += 1;
    let owners: BTreeSet<u64> = events
        .iter()
        .map(|event| state.owners[shard(event) as usize].0)
        .collect();
    if owners.len() > 1 {
        state.mixed_batches += 1;
    }
    let mut answer = IngestResponse::default();
    for (index, event) in events.iter().enumerate() {
        let shard = shard(event);
        let (owner, epoch) = state.owners[shard as usize];
        if let Some(left) = state
            .moving_answers
            .get_mut(&shard)
            .filter(|left| **left > 0)
        {
            *left -= 1;
            answer.rejected.push(Rejection {
                index,
                reason: RejectCode::ShardMoving,
                message: format!("shard {shard} is moving"),
                shard: Some(shard),
                owner: None,
                epoch: Some(epoch),
            });
        } else if owner != node {
            let with_owner = state.refusal == Refusal::WithOwner;
            answer.rejected.push(Rejection {
                index,
                reason: RejectCode::NotOwner,
                message: format!("shard {shard} is owned by node {owner}"),
                shard: with_owner.then_some(shard),
                owner: with_owner.then_some(owner),
                epoch: with_owner.then_some(epoch),
            });
        } else if state.applied.insert(event.id.clone()) {
            answer.accepted += 1;
        } else {
            answer.duplicates += 1;
        }
    }
    serde_json::to_string(&answer).unwrap()
}

fn shard(event: &Event) -> u32 {
    shard_of(&event.project, &event.visitor, SHARDS)
}

fn event(n: usize) -> Event {
    Event {
        id: format!("e-{n}"),
        project: PROJECT.into(),
        visitor: format!("v-{}", n % 97),
        ts: Timestamp::Milliseconds(1_764_150_000_000 + n as i64),
        event_type: EventType::Decision,
        key: None,
        value: None,
        attributes: Default::default(),
        decisions: vec![Decision {
            experiment: "x".into(),
            variation: "a".into(),
        }],
    }
}

fn config() -> SenderConfig {
    SenderConfig {
        batch_events_max: 50,
        retry_attempts_max: 20,
        retry_backoff_initial: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(50),
        ..SenderConfig::default()
    }
}

/// Shards 0..8 owned round-robin by nodes 1..=3.
const OWNERS: [u64; 8] = [1, 2, 3, 1, 2, 3, 1, 2];

async fn send_all(sender: &Sender, events: usize) -> sessiondb_client::FlushReport {
    for n in 0..events {
        sender.track(event(n)).await.unwrap();
    }
    sender.flush().await.unwrap()
}

#[tokio::test]
async fn every_batch_holds_one_owner_and_goes_to_it() {
    let cluster = FakeCluster::start(3, &OWNERS, Refusal::WithOwner).await;
    let router = Arc::new(
        ShardMapRouter::connect(&Client::new(&cluster.urls[0]), cluster.urls.clone())
            .await
            .unwrap(),
    );
    let sender = Sender::new(router.clone(), config()).unwrap();
    let report = send_all(&sender, 1_000).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.accepted, 1_000);
    assert_eq!(sender.stats().reroutes, 0, "{:?}", sender.stats());
    let state = cluster.state.lock().unwrap();
    assert_eq!(state.mixed_batches, 0);
    assert_eq!(state.batches.len(), 3, "{:?}", state.batches);
    assert_eq!(state.map_fetches, 1);
}

#[tokio::test]
async fn the_client_credential_goes_with_every_map_fetch_and_batch() {
    let cluster = FakeCluster::start(3, &OWNERS, Refusal::WithOwner).await;
    // One credential, set once on the client the router is built from.
    let client = Client::new(&cluster.urls[0]).with_token("ingest-key-of-routing");
    let router = Arc::new(
        ShardMapRouter::connect(&client, [cluster.urls[1].clone()])
            .await
            .unwrap(),
    );
    let sender = Sender::new(router, config()).unwrap();
    let report = send_all(&sender, 300).await;
    assert_eq!(report.accepted, 300, "{report:?}");
    let state = cluster.state.lock().unwrap();
    assert_eq!(state.batches.len(), 3, "every owner got batches");
    assert_eq!(
        state.authorizations,
        BTreeSet::from(["Bearer ingest-key-of-routing".to_string()])
    );
}

#[tokio::test]
async fn a_moved_shard_is_rerouted_by_the_owner_named_in_the_refusal() {
    let cluster = FakeCluster::start(3, &OWNERS, Refusal::WithOwner).await;
    let router = Arc::new(
        ShardMapRouter::connect(&Client::new(&cluster.urls[0]), cluster.urls.clone())
            .await
            .unwrap(),
    );
    // Shards 0 and 1 move; the published map does not say so yet, so only
    // the refusals can tell the client.
    cluster.move_shard(0, 3, false);
    cluster.move_shard(1, 1, false);
    let sender = Sender::new(router.clone(), config()).unwrap();
    let report = send_all(&sender, 1_000).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.accepted + report.duplicates, 1_000);
    assert_eq!(report.accepted, 1_000, "every event applied once");
    let stats = sender.stats();
    assert!(stats.reroutes > 0, "{stats:?}");
    let cached: Vec<(u64, u64)> = router
        .assignments()
        .iter()
        .map(|a| (a.owner, a.epoch))
        .collect();
    assert_eq!(cached[0], (3, 2));
    assert_eq!(cached[1], (1, 2));
    assert!(router.stats().hints_applied >= 2, "{:?}", router.stats());
    // A second wave goes straight to the new owners.
    let before = sender.stats().reroutes;
    for n in 1_000..1_500 {
        sender.track(event(n)).await.unwrap();
    }
    let second = sender.flush().await.unwrap();
    assert_eq!(second.accepted, 500, "{second:?}");
    assert_eq!(sender.stats().reroutes, before);
    assert_eq!(cluster.state.lock().unwrap().map_fetches_running_max, 1);
}

#[tokio::test]
async fn without_an_owner_in_the_refusal_a_bounded_refresh_finds_it() {
    let cluster = FakeCluster::start(3, &OWNERS, Refusal::Bare).await;
    let router = Arc::new(
        ShardMapRouter::connect(&Client::new(&cluster.urls[0]), cluster.urls.clone())
            .await
            .unwrap(),
    );
    for shard in 0..SHARDS {
        cluster.move_shard(shard, (u64::from(shard) + 1) % 3 + 1, false);
    }
    // The nodes publish the new map only after the client has been refused.
    let sender = Sender::new(router.clone(), config()).unwrap();
    let sending = tokio::spawn({
        let sender = sender.clone();
        async move { send_all(&sender, 2_000).await }
    });
    // Once some refusals came back (reroutes counted), publish the map.
    // (The sender's retry budget, ~0.9 s with `config()`, outlasts a poll
    // interval many times over.)
    eventually(POLL_WAIT_MAX, "a refusal", async || {
        (sender.stats().reroutes > 0)
            .then_some(())
            .ok_or("no reroute yet")
    })
    .await;
    cluster.publish();
    let report = sending.await.unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.accepted, 2_000);
    let state = cluster.state.lock().unwrap();
    assert_eq!(state.map_fetches_running_max, 1, "one fetch at a time");
    let refused = sender.stats().reroutes as usize;
    // Every refused answer asked for a refresh; the bound folds them.
    assert!(
        state.map_fetches <= refused,
        "{} fetches for {refused} refused events",
        state.map_fetches
    );
    assert!(router.stats().refreshes >= 2, "{:?}", router.stats());
}

#[tokio::test]
async fn shard_moving_is_retried_and_every_fate_stays_exact() {
    let cluster = FakeCluster::start(3, &OWNERS, Refusal::WithOwner).await;
    cluster.state.lock().unwrap().moving_answers = (0..SHARDS).map(|s| (s, 30)).collect();
    let router = Arc::new(
        ShardMapRouter::connect(&Client::new(&cluster.urls[0]), cluster.urls.clone())
            .await
            .unwrap(),
    );
    let sender = Sender::new(router, config()).unwrap();
    let report = send_all(&sender, 600).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.accepted, 600);
    assert!(sender.stats().reroutes >= 30, "{:?}", sender.stats());

    // With one attempt only, refused events are reported as refused, each
    // once, with the node's reason.
    let cluster = FakeCluster::start(3, &OWNERS, Refusal::WithOwner).await;
    cluster.state.lock().unwrap().moving_answers = (0..SHARDS).map(|s| (s, usize::MAX)).collect();
    let router = Arc::new(
        ShardMapRouter::connect(&Client::new(&cluster.urls[0]), cluster.urls.clone())
            .await
            .unwrap(),
    );
    let sender = Sender::new(
        router,
        SenderConfig {
            retry_attempts_max: 1,
            ..config()
        },
    )
    .unwrap();
    let report = send_all(&sender, 100).await;
    assert_eq!(report.accepted, 0);
    assert_eq!(report.rejected.len(), 100);
    assert!(report
        .rejected
        .iter()
        .all(|r| r.reason == RejectCode::ShardMoving));
    let seqs: BTreeSet<u64> = report.rejected.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..100).collect());
}

#[tokio::test]
async fn seeds_that_do_not_answer_fail_connect_with_the_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let error =
        ShardMapRouter::connect(&Client::new("http://unused"), [format!("http://{address}")])
            .await
            .unwrap_err();
    assert!(
        matches!(error, sessiondb_client::ClientError::Transport { .. }),
        "{error:?}"
    );
}
