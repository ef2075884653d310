//! Store and facade tests: openraft's storage suite on fresh sled stores,
//! reopening a store, and a single-node Raft group end to end.

use super::*;
use crate::project::{ProjectConfig, Settings};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, ServerState,
    StorageError, Vote,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A directory under the system temp dir, removed when dropped.
#[derive(Debug)]
struct TemporaryDirectory {
    path: PathBuf,
}

impl TemporaryDirectory {
    fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "sessiondb-placement-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TemporaryDirectory { path }
    }
}

impl Drop for TemporaryDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

struct FreshStores;

impl StoreBuilder<PlacementTypes, PlacementLogStore, PlacementStateMachine, TemporaryDirectory>
    for FreshStores
{
    async fn build(
        &self,
    ) -> Result<(TemporaryDirectory, PlacementLogStore, PlacementStateMachine), StorageError<NodeId>>
    {
        let directory = TemporaryDirectory::new("suite");
        let placement = Placement::open(&directory.path, 0).expect("a fresh store opens");
        Ok((directory, placement.log_store, placement.state_machine))
    }
}

/// The acceptance criterion: openraft's own storage test suite, each case on
/// a fresh sled database. `Suite` runs every case in its own runtime, so this
/// is a plain test.
#[test]
fn the_store_passes_the_openraft_storage_suite() {
    let result = Suite::test_all(FreshStores);
    assert!(result.is_ok(), "storage suite failed: {result:?}");
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn command_entry(term: u64, index: u64, command: PlacementCommand) -> Entry<PlacementTypes> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(command),
    }
}

fn membership_entry(index: u64, nodes: &[(NodeId, &str)]) -> Entry<PlacementTypes> {
    let nodes: BTreeMap<NodeId, PlacementNode> = nodes
        .iter()
        .map(|(id, address)| {
            (
                *id,
                PlacementNode {
                    address: address.to_string(),
                },
            )
        })
        .collect();
    let voters = nodes.keys().copied().collect();
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Membership(openraft::Membership::new(vec![voters], nodes)),
    }
}

fn shop() -> ProjectConfig {
    ProjectConfig {
        name: "shop".into(),
        settings: Settings::default(),
        version: 1,
        ingest_keys: crate::keys::RotatingKey::new(crate::keys::KeyHash::of(
            b"0123456789abcdef0123456789abcdef",
        )),
    }
}

/// Everything a store holds survives closing and reopening it: the vote,
/// the log, the committed id, the applied state and the current snapshot.
#[tokio::test]
async fn a_reopened_store_has_what_was_written() {
    let directory = TemporaryDirectory::new("reopen");
    let entries = vec![
        membership_entry(1, &[(1, "127.0.0.1:7001"), (2, "127.0.0.1:7002")]),
        command_entry(
            1,
            2,
            PlacementCommand::Initialize {
                shards: 4,
                owner: 1,
            },
        ),
        command_entry(1, 3, PlacementCommand::PutProject { config: shop() }),
        command_entry(
            1,
            4,
            PlacementCommand::BeginMove {
                shard: 3,
                from: 1,
                to: 2,
                expected_epoch: 1,
            },
        ),
    ];
    let vote = Vote::new_committed(1, 1);
    let snapshot_meta;
    let state_before;
    {
        let mut placement = Placement::open(&directory.path, 1).unwrap();
        placement.log_store.save_vote(&vote).await.unwrap();
        // Appending directly needs openraft's flush callback, which only
        // openraft can make; `blocking_append` wraps it.
        use openraft::storage::RaftLogStorageExt;
        placement
            .log_store
            .blocking_append(entries.clone())
            .await
            .unwrap();
        placement
            .log_store
            .save_committed(Some(log_id(1, 4)))
            .await
            .unwrap();
        let responses = placement
            .state_machine
            .apply(entries.clone())
            .await
            .unwrap();
        assert_eq!(
            responses,
            vec![
                PlacementResponse::NoCommand,
                PlacementResponse::Initialized {
                    shards: 4,
                    owner: 1
                },
                PlacementResponse::ProjectStored {
                    name: "shop".into(),
                    version: 1
                },
                PlacementResponse::MoveBegun {
                    shard: 3,
                    to: 2,
                    epoch: 1
                },
            ]
        );
        let snapshot = placement
            .state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        snapshot_meta = snapshot.meta;
        state_before = placement.view.current();
        assert_eq!(state_before.shard(3).unwrap().moving_to, Some(2));
        assert_eq!(state_before.members().len(), 2);
        assert_eq!(state_before.members()[&2].role, Role::Voter);
    }

    let mut placement = reopen(&directory.path, 1).await;
    assert_eq!(placement.log_store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(
        placement.log_store.read_committed().await.unwrap(),
        Some(log_id(1, 4))
    );
    let stored = placement.log_store.try_get_log_entries(1..5).await.unwrap();
    assert_eq!(
        stored.iter().map(|entry| entry.log_id).collect::<Vec<_>>(),
        entries.iter().map(|entry| entry.log_id).collect::<Vec<_>>()
    );
    let (applied, membership) = placement.state_machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 4)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    assert_eq!(*placement.view.current(), *state_before);
    let current = placement
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("the snapshot survives");
    assert_eq!(current.meta, snapshot_meta);

    // Purge survives too, and the log state reflects it.
    placement.log_store.purge(log_id(1, 2)).await.unwrap();
    drop(placement);
    let mut placement = reopen(&directory.path, 1).await;
    let log_state = placement.log_store.get_log_state().await.unwrap();
    assert_eq!(log_state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(log_state.last_log_id, Some(log_id(1, 4)));
    let remaining = placement
        .log_store
        .try_get_log_entries(0..10)
        .await
        .unwrap();
    assert_eq!(remaining.len(), 2);
}

/// A transport for a one-node group: there is no one to talk to.
struct NoPeers;

struct NoPeer;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, PlacementNode, E> {
    let error = std::io::Error::new(std::io::ErrorKind::NotConnected, "no peers in this test");
    RPCError::Unreachable(Unreachable::new(&error))
}

impl openraft::RaftNetworkFactory<PlacementTypes> for NoPeers {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: NodeId, _node: &PlacementNode) -> NoPeer {
        NoPeer
    }
}

impl openraft::RaftNetwork<PlacementTypes> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<PlacementTypes>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PlacementNode, RaftError<NodeId>>>
    {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<PlacementTypes>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PlacementNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PlacementNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A lone node elects itself after one election timeout; keep it short.
fn quick_elections(mut placement: Placement) -> Placement {
    placement.raft_config.heartbeat_interval_ms = 50;
    placement.raft_config.election_timeout_min_ms = 150;
    placement.raft_config.election_timeout_max_ms = 300;
    placement
}

/// A one-node cluster: initialize, become leader, commit commands through
/// Raft, get typed rejections back, and find the state again after a
/// restart on the same directory.
#[tokio::test]
async fn a_single_node_group_commits_commands_and_recovers() {
    let directory = TemporaryDirectory::new("single");
    let address = PlacementNode {
        address: "127.0.0.1:7001".into(),
    };
    {
        let placement = quick_elections(Placement::open(&directory.path, 1).unwrap());
        let (raft, view) = placement.start(NoPeers).await.unwrap();
        raft.initialize(BTreeMap::from([(1, address.clone())]))
            .await
            .unwrap();
        raft.wait(WAIT)
            .state(ServerState::Leader, "becomes leader")
            .await
            .unwrap();

        let written = raft
            .client_write(PlacementCommand::Initialize {
                shards: 8,
                owner: 1,
            })
            .await
            .unwrap();
        assert_eq!(
            written.data,
            PlacementResponse::Initialized {
                shards: 8,
                owner: 1
            }
        );
        let rejected = raft
            .client_write(PlacementCommand::BeginMove {
                shard: 0,
                from: 1,
                to: 2,
                expected_epoch: 1,
            })
            .await
            .unwrap();
        assert_eq!(
            rejected.data,
            PlacementResponse::Rejected {
                reason: PlacementRejection::NotAMember { node: 2 }
            }
        );
        let state = view.current();
        assert_eq!(state.shard_count(), 8);
        assert_eq!(
            state.members().get(&1),
            Some(&Member {
                address: address.address.clone(),
                role: Role::Voter
            })
        );
        raft.shutdown().await.unwrap();
    }

    let placement = quick_elections(reopen(&directory.path, 1).await);
    let recovered = placement.view.current();
    assert_eq!(recovered.shard_count(), 8);
    assert!(recovered.is_member(1));
    let (raft, view) = placement.start(NoPeers).await.unwrap();
    raft.wait(WAIT)
        .state(ServerState::Leader, "leads again after a restart")
        .await
        .unwrap();
    let written = raft
        .client_write(PlacementCommand::Initialize {
            shards: 8,
            owner: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        written.data,
        PlacementResponse::Rejected {
            reason: PlacementRejection::AlreadyInitialized { shards: 8 }
        }
    );
    assert_eq!(view.current().shard_count(), 8);
    raft.shutdown().await.unwrap();
}

/// Opens a store that this process had open a moment ago. sled releases its
/// directory lock when the last handle to the database is dropped, and a
/// handle can outlive the test's scope briefly (a task finishing an
/// asynchronous flush), so a reopen waits for the lock — bounded, yielding
/// between attempts, and only for that one error.
async fn reopen(path: &std::path::Path, node_id: u64) -> Placement {
    const ATTEMPTS_MAX: u32 = 100_000;
    for _ in 0..ATTEMPTS_MAX {
        match Placement::open(path, node_id) {
            Ok(placement) => return placement,
            Err(error) if format!("{error:?}").contains("could not acquire lock") => {
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("reopening the store failed: {error:?}"),
        }
    }
    panic!("the store's lock was still held after {ATTEMPTS_MAX} attempts");
}
