//! Replicated shard groups in process, over real loopback HTTP: the cost
//! of replication and the time of a failover, at the group level (the
//! engine's state machine is a byte counter here, so the figures are
//! Raft's, the shared log's and the transport's, not the engine's).
//!
//! Three "nodes" in one process, each with its own `GroupHost` (shared
//! log + snapshots on disk), its table of replicas served by a standalone
//! server of the group routes, and the real `PeerGroupTransport` over one
//! `PeerClient`. G groups, each with W writers writing P-byte entries to
//! the group's leader; a write counts once `GroupHandle::write` answers
//! (committed on a majority, fsynced, applied on the leader).
//!
//! - replication factor 1 against 3, same groups, writers and entries;
//! - failover (factor 3): group 0's leader replica is stopped, and the
//!   time until another replica of the group accepts a write is measured;
//!   the stopped replica is restarted and caught up before the next round.
//!
//! Reports; asserts only that writes were acknowledged.
//!
//! Run: `cargo bench -p sessiondb-node --bench groups -- [--groups 4] [--writers 4] [--payload-bytes 8192] [--seconds 5] [--failovers 5]`

use sessiondb_node::admin_token::ClusterSecret;
use sessiondb_node::cluster::peer::{PeerClient, PeerTransport};
use sessiondb_node::cluster::replicas::{standalone, GroupReplicas, PeerGroupTransport};
use sessiondb_node::replication::{
    GroupApply, GroupApplyError, GroupConfig, GroupHandle, GroupHost, GroupId, GroupWriteError,
    ReplicaId, ReplicaNode, ReplicatedLogConfig,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The node binary's allocator, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: [ReplicaId; 3] = [1, 2, 3];
/// Failure point of every wait in the bench.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Options {
    groups: u32,
    writers: usize,
    payload_bytes: usize,
    seconds: u64,
    failovers: usize,
}

fn options() -> Options {
    let mut options = Options {
        groups: 4,
        writers: 4,
        payload_bytes: 8192,
        seconds: 5,
        failovers: 5,
    };
    let arguments: Vec<String> = std::env::args().collect();
    for pair in arguments.windows(2) {
        let number = || pair[1].parse::<u64>().expect("a number");
        match pair[0].as_str() {
            "--groups" => options.groups = number() as u32,
            "--writers" => options.writers = number() as usize,
            "--payload-bytes" => options.payload_bytes = number() as usize,
            "--seconds" => options.seconds = number(),
            "--failovers" => options.failovers = number() as usize,
            _ => {}
        }
    }
    options
}

/// The state machine: counts applied bytes.
#[derive(Debug, Default)]
struct CountingApply {
    bytes: u64,
}

impl GroupApply for CountingApply {
    fn apply(&mut self, _index: u64, payload: &[u8]) -> Result<(), GroupApplyError> {
        self.bytes += payload.len() as u64;
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, GroupApplyError> {
        Ok(self.bytes.to_le_bytes().to_vec())
    }

    fn install(&mut self, snapshot: &[u8]) -> Result<(), GroupApplyError> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| GroupApplyError {
            step: "install",
            reason: "not 8 bytes".into(),
        })?;
        self.bytes = u64::from_le_bytes(bytes);
        Ok(())
    }
}

struct Node {
    host: GroupHost<PeerGroupTransport>,
    table: GroupReplicas,
    address: String,
}

struct Cluster {
    _root: sessiondb_test_support::TempDir,
    nodes: BTreeMap<ReplicaId, Node>,
    servers: Vec<actix_web::dev::ServerHandle>,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let root = sessiondb_test_support::TempDir::new(&format!("bench-groups-{name}"));
        let peers = PeerClient::new(
            PeerTransport::Http,
            ClusterSecret::generate(),
            Duration::from_millis(500),
        )
        .expect("a peer client");
        let mut nodes = BTreeMap::new();
        let mut servers = Vec::new();
        for id in NODES {
            let table = GroupReplicas::default();
            let (address, server) = standalone::serve_table(table.clone()).await;
            servers.push(server);
            let (host, _) = GroupHost::open(
                &root.path().join(format!("node-{id}")),
                id,
                ReplicatedLogConfig::default(),
                GroupConfig::default(),
                PeerGroupTransport::new(peers.clone()),
            )
            .expect("open the node's groups");
            nodes.insert(
                id,
                Node {
                    host,
                    table,
                    address,
                },
            );
        }
        Cluster {
            _root: root,
            nodes,
            servers,
        }
    }

    fn members_of(&self, group: GroupId, factor: usize) -> Vec<ReplicaId> {
        (0..factor)
            .map(|offset| NODES[(group as usize + offset) % NODES.len()])
            .collect()
    }

    async fn start_replica(&self, node: ReplicaId, group: GroupId) -> GroupHandle {
        let node = &self.nodes[&node];
        let replica = node
            .host
            .start(group, CountingApply::default())
            .await
            .expect("start a replica");
        node.table.insert(replica.clone());
        replica
    }

    /// Starts `groups` groups of `factor` replicas and waits for a leader
    /// of each; answers the leaders.
    async fn form(&self, groups: u32, factor: usize) -> Vec<GroupHandle> {
        let mut leaders = Vec::new();
        for group in 0..groups {
            let members = self.members_of(group, factor);
            let mut replicas = Vec::new();
            for &node in &members {
                replicas.push(self.start_replica(node, group).await);
            }
            let voters: BTreeMap<ReplicaId, ReplicaNode> = members
                .iter()
                .map(|node| {
                    let address = self.nodes[node].address.clone();
                    (*node, ReplicaNode { address })
                })
                .collect();
            replicas[0].initialize(voters).await.expect("initialize");
            leaders.push(self.leader(group).await);
        }
        leaders
    }

    /// The replica of `group` that leads, once one does.
    async fn leader(&self, group: GroupId) -> GroupHandle {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self
                .nodes
                .values()
                .filter_map(|node| node.table.get(group))
                .filter(|replica| replica.status().is_leader)
                // A deposed leader may not know yet: the newest term leads.
                .max_by_key(|replica| replica.status().term);
            if let Some(leader) = leader {
                return leader;
            }
            assert!(Instant::now() < deadline, "group {group} elects no leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn shutdown(self) {
        for node in self.nodes.values() {
            for group in node.table.groups() {
                if let Some(replica) = node.table.remove(group) {
                    let _ = replica.shutdown().await;
                }
            }
        }
        for server in self.servers {
            server.stop(true).await;
        }
    }
}

/// Writes at every group's leader for the options' time; answers the
/// acknowledged writes and the elapsed time.
async fn write_load(leaders: &[GroupHandle], options: &Options) -> (u64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for leader in leaders {
        for _ in 0..options.writers {
            let (leader, stop, acknowledged) =
                (leader.clone(), Arc::clone(&stop), Arc::clone(&acknowledged));
            let payload = vec![7u8; options.payload_bytes];
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    leader
                        .write(payload.clone())
                        .await
                        .expect("the leader writes");
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a writer");
    }
    (acknowledged.load(Ordering::Relaxed), started.elapsed())
}

async fn throughput(factor: usize, options: &Options) -> f64 {
    let cluster = Cluster::start(&format!("rf{factor}")).await;
    let leaders = cluster.form(options.groups, factor).await;
    let (writes, elapsed) = write_load(&leaders, options).await;
    assert!(writes > 0, "writes were acknowledged");
    let writes_per_second = writes as f64 / elapsed.as_secs_f64();
    let megabytes_per_second = writes_per_second * options.payload_bytes as f64 / 1e6;
    println!(
        "replication factor {factor}: {writes_per_second:>8.0} acknowledged writes/s \
         {megabytes_per_second:>6.1} MB/s ({} groups x {} writers, {} B entries)",
        options.groups, options.writers, options.payload_bytes
    );
    cluster.shutdown().await;
    writes_per_second
}

/// Stops group 0's leader replica and times until another replica takes
/// a write; restarts it and lets it catch up.
async fn failover_round(cluster: &Cluster) -> Duration {
    let leader = cluster.leader(0).await;
    let old = leader.status().replica;
    let node = &cluster.nodes[&old];
    let stopped = node.table.remove(0).expect("the leader runs group 0");
    let started = Instant::now();
    stopped.shutdown().await.expect("stop the leader");
    let others: Vec<GroupHandle> = cluster
        .nodes
        .values()
        .filter_map(|node| node.table.get(0))
        .collect();
    let deadline = started + WAIT;
    let elapsed = 'taken: loop {
        for replica in &others {
            match replica.write(b"after failover".to_vec()).await {
                Ok(_) => break 'taken started.elapsed(),
                Err(GroupWriteError::NotLeader { .. }) => {}
                Err(error) => panic!("group 0 failed: {error}"),
            }
        }
        assert!(Instant::now() < deadline, "no new leader for group 0");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let restarted = cluster.start_replica(old, 0).await;
    let target = cluster.leader(0).await.status().last_applied;
    restarted
        .raft()
        .wait(Some(WAIT))
        .applied_index_at_least(target, "the old leader catches up")
        .await
        .expect("caught up");
    elapsed
}

async fn failovers(options: &Options) {
    let cluster = Cluster::start("failover").await;
    cluster.form(1, 3).await;
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..options.failovers {
        times.push(failover_round(&cluster).await);
    }
    times.sort_unstable();
    let milliseconds = |time: &Duration| time.as_secs_f64() * 1e3;
    println!(
        "failover (factor 3, election timeout {}-{} ms): min {:.0} ms, median {:.0} ms, max {:.0} ms over {} rounds",
        GroupConfig::default().election_timeout_min_ms,
        GroupConfig::default().election_timeout_max_ms,
        milliseconds(&times[0]),
        milliseconds(&times[times.len() / 2]),
        milliseconds(&times[times.len() - 1]),
        times.len()
    );
    cluster.shutdown().await;
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let single = throughput(1, &options).await;
        let replicated = throughput(3, &options).await;
        println!(
            "factor 3 / factor 1: {:.2} of the acknowledged writes/s",
            replicated / single
        );
        if options.failovers > 0 {
            failovers(&options).await;
        }
    });
}
