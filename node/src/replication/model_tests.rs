//! The property test: random interleavings of several groups' appends,
//! truncations, commits, purges (also past the end, as after a snapshot
//! from the leader), retention floors, votes, reclaims and reopenings, on
//! small files so that batches split, files rotate, entries fall out of
//! the cache and records are carried forward — checked after every reclaim
//! and reopening against a plain in-memory model of openraft's view.

use super::tests::{entry, log_id, open, small_config, summary, TemporaryDirectory, TestTypes};
use super::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{LogId, LogState, RaftLogReader, Vote};
use proptest::prelude::*;
use std::collections::BTreeMap;

const GROUPS: u32 = 3;
const OPERATIONS_MAX: usize = 60;

#[derive(Debug, Clone)]
enum Operation {
    Append {
        group: u32,
        count: u64,
        payload_len: usize,
    },
    Truncate {
        group: u32,
        back: u64,
    },
    Commit {
        group: u32,
    },
    Purge {
        group: u32,
        back: u64,
    },
    PurgePastEnd {
        group: u32,
        ahead: u64,
    },
    Floor {
        group: u32,
        below_purge: Option<u64>,
    },
    Vote {
        group: u32,
    },
    Reclaim,
    Reopen,
}

fn operation() -> impl Strategy<Value = Operation> {
    let group = 0..GROUPS;
    prop_oneof![
        8 => (group.clone(), 1..6u64, 0..120usize).prop_map(|(group, count, payload_len)| {
            Operation::Append { group, count, payload_len }
        }),
        1 => (group.clone(), 0..4u64).prop_map(|(group, back)| Operation::Truncate { group, back }),
        2 => group.clone().prop_map(|group| Operation::Commit { group }),
        2 => (group.clone(), 0..6u64).prop_map(|(group, back)| Operation::Purge { group, back }),
        1 => (group.clone(), 1..4u64).prop_map(|(group, ahead)| Operation::PurgePastEnd { group, ahead }),
        2 => (group.clone(), proptest::option::of(0..12u64))
            .prop_map(|(group, below_purge)| Operation::Floor { group, below_purge }),
        1 => group.prop_map(|group| Operation::Vote { group }),
        2 => Just(Operation::Reclaim),
        2 => Just(Operation::Reopen),
    ]
}

/// openraft's view of one group, and the entries it retains.
#[derive(Debug, Clone, Default)]
struct ModelGroup {
    /// Entries held (served or retained): index → (term, payload length).
    entries: BTreeMap<u64, (u64, usize)>,
    term: u64,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
    floor: Option<u64>,
}

impl ModelGroup {
    fn last_log_id(&self) -> Option<LogId<u64>> {
        let last_entry = self
            .entries
            .last_key_value()
            .map(|(index, (term, _))| log_id(*term, *index));
        std::cmp::max(last_entry, self.purged)
    }

    fn log_id_at(&self, index: u64) -> Option<LogId<u64>> {
        self.entries
            .get(&index)
            .map(|(term, _)| log_id(*term, index))
    }

    /// The retention rule, written out independently of the store.
    fn drop_unkept(&mut self) {
        let Some(purged) = self.purged else {
            return;
        };
        if self
            .entries
            .last_key_value()
            .is_some_and(|(last, _)| purged.index > *last)
        {
            self.entries.clear();
        }
        let keep = self
            .floor
            .map_or(purged.index, |floor| floor.min(purged.index));
        self.entries = self.entries.split_off(&(keep + 1));
    }

    fn entries_from(&self, from: u64) -> Vec<openraft::Entry<TestTypes>> {
        self.entries
            .range(from..)
            .map(|(index, (term, payload_len))| entry(*term, *index, *payload_len))
            .collect()
    }
}

struct Harness {
    directory: TemporaryDirectory,
    config: ReplicatedLogConfig,
    log: Option<ReplicatedLog<TestTypes>>,
    handles: Vec<GroupLog<TestTypes>>,
    model: Vec<ModelGroup>,
}

impl Harness {
    fn new() -> Harness {
        let directory = TemporaryDirectory::new("model");
        let mut config = small_config();
        config.entry_cache_bytes_max = 500;
        config.carry_forward_bytes_max = 800;
        let mut harness = Harness {
            directory,
            config,
            log: None,
            handles: Vec::new(),
            model: vec![ModelGroup::default(); GROUPS as usize],
        };
        harness.reopen();
        harness
    }

    fn log(&self) -> &ReplicatedLog<TestTypes> {
        self.log.as_ref().expect("open")
    }

    fn reopen(&mut self) {
        self.handles.clear();
        self.log = None;
        let log = open(self.directory.path(), self.config.clone());
        self.handles = (0..GROUPS)
            .map(|group| log.group(group).expect("no other handle"))
            .collect();
        self.log = Some(log);
    }

    async fn apply(&mut self, operation: &Operation) {
        match *operation {
            Operation::Append {
                group,
                count,
                payload_len,
            } => {
                let model = &mut self.model[group as usize];
                let term = model.term.max(1);
                let next = model.last_log_id().map_or(1, |last| last.index + 1);
                let appended: Vec<_> = (next..next + count)
                    .map(|index| entry(term, index, payload_len))
                    .collect();
                for index in next..next + count {
                    model.entries.insert(index, (term, payload_len));
                }
                self.handles[group as usize]
                    .blocking_append(appended)
                    .await
                    .expect("append");
            }
            Operation::Truncate { group, back } => {
                let model = &mut self.model[group as usize];
                let Some((&last, _)) = model.entries.last_key_value() else {
                    return;
                };
                let index = last.saturating_sub(back);
                // openraft truncates only what is not committed (nor purged).
                let fixed = std::cmp::max(model.committed, model.purged).map_or(0, |id| id.index);
                if index <= fixed || !model.entries.contains_key(&index) {
                    return;
                }
                model.entries.split_off(&index);
                self.handles[group as usize]
                    .truncate(log_id(1, index))
                    .await
                    .expect("truncate");
            }
            Operation::Commit { group } => {
                let model = &mut self.model[group as usize];
                let Some(last) = model.last_log_id() else {
                    return;
                };
                model.committed = Some(last);
                self.handles[group as usize]
                    .save_committed(Some(last))
                    .await
                    .expect("committed");
            }
            Operation::Purge { group, back } => {
                let model = &mut self.model[group as usize];
                let Some(committed) = model.committed else {
                    return;
                };
                let index = committed.index.saturating_sub(back);
                let purged_index = model.purged.map(|purged| purged.index);
                let Some(purge_id) = model.log_id_at(index) else {
                    return;
                };
                if purged_index.is_some_and(|purged| index <= purged) {
                    return;
                }
                model.purged = Some(purge_id);
                model.drop_unkept();
                self.handles[group as usize]
                    .purge(purge_id)
                    .await
                    .expect("purge");
            }
            Operation::PurgePastEnd { group, ahead } => {
                let model = &mut self.model[group as usize];
                let Some(last) = model.last_log_id() else {
                    return;
                };
                let snapshot = log_id(model.term.max(last.leader_id.term), last.index + ahead);
                model.committed = Some(snapshot);
                model.purged = Some(snapshot);
                model.drop_unkept();
                let store = &mut self.handles[group as usize];
                store
                    .save_committed(Some(snapshot))
                    .await
                    .expect("committed");
                store.purge(snapshot).await.expect("purge");
            }
            Operation::Floor { group, below_purge } => {
                let model = &mut self.model[group as usize];
                let purged_index = model.purged.map_or(0, |purged| purged.index);
                let floor = below_purge.map(|below| purged_index.saturating_sub(below));
                model.floor = floor;
                model.drop_unkept();
                self.log()
                    .set_retention_floor(group, floor)
                    .await
                    .expect("floor");
            }
            Operation::Vote { group } => {
                let model = &mut self.model[group as usize];
                model.term += 1;
                let vote = Vote::new(model.term, 1);
                model.vote = Some(vote);
                self.handles[group as usize]
                    .save_vote(&vote)
                    .await
                    .expect("vote");
            }
            Operation::Reclaim => {
                self.log().reclaim().await.expect("reclaim");
                self.check().await;
            }
            Operation::Reopen => {
                self.reopen();
                self.check().await;
            }
        }
    }

    async fn check(&mut self) {
        let log = self.log.clone().expect("open");
        for group in 0..GROUPS {
            let model = &self.model[group as usize];
            let store = &mut self.handles[group as usize];
            assert_eq!(
                store.get_log_state().await.expect("state"),
                LogState {
                    last_purged_log_id: model.purged,
                    last_log_id: model.last_log_id(),
                },
                "group {group}"
            );
            assert_eq!(
                store.read_vote().await.expect("vote"),
                model.vote,
                "group {group}"
            );
            assert_eq!(
                store.read_committed().await.expect("committed"),
                model.committed,
                "group {group}"
            );
            let served_from = model.purged.map_or(0, |purged| purged.index + 1);
            assert_eq!(
                summary(&store.try_get_log_entries(..).await.expect("read")),
                summary(&model.entries_from(served_from)),
                "group {group}"
            );
            match (
                model.entries.first_key_value(),
                model.entries.last_key_value(),
            ) {
                (Some((&first, _)), Some((&last, _))) => assert_eq!(
                    summary(&log.read_retained(group, first, last).expect("retained")),
                    summary(&model.entries_from(first)),
                    "group {group}"
                ),
                _ => assert!(log.read_retained(group, 1, 1).is_err()),
            }
        }
    }
}

fn run(operations: &[Operation]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut harness = Harness::new();
        for operation in operations {
            harness.apply(operation).await;
        }
        harness.check().await;
        harness.reopen();
        harness.check().await;
    });
}

proptest! {
    // 48 cases by default; PROPTEST_CASES=N runs a deeper search locally.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn interleaved_groups_reopen_to_the_model(
        operations in proptest::collection::vec(operation(), 1..OPERATIONS_MAX)
    ) {
        run(&operations);
    }
}
