//! Which nodes' aggregates this node's segment stores hold, and the
//! engine's half of removing a node (`docs/cluster.md`, "Removing a node").
//!
//! Aggregates stay on the node that emitted the deltas (`handoff`), so a
//! node that leaves the cluster must first give its stores to a member:
//!
//! 1. the leaving node **hands over** (`Engine::hand_over_stores`): it
//!    journals that its stores no longer count here, so its query shares
//!    stop including them, and answers a copy of every experiment's
//!    aggregates;
//! 2. the keeper **absorbs** them (`Engine::absorb_stores`): it journals the
//!    copy and merges it into its own stores — counters add, sketches union.
//!
//! Counters are sums, so a copy absorbed twice would count twice: each
//! store carries the ids of the nodes whose aggregates it holds
//! (`StoreCoverage`), an absorb of ids already held is a no-op, and a query
//! coordinator checks that every expected store is counted exactly once.

use super::actors::AggregateMessage;
use super::aggregates::{AggregateStore, ExperimentAggregates};
use super::handoff::{apply_wait, HandoffError, ShardRole};
use super::journal::{self, JournalEntry};
use super::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Whose aggregates this node's segment stores hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCoverage {
    /// Nodes whose handed-over stores were absorbed here.
    pub absorbed: BTreeSet<u64>,
    /// Set once this node handed its stores (its own and those it had
    /// absorbed, named here) to another node (step 1 above): from then on
    /// its shares count nothing.
    pub handed_over: Option<BTreeSet<u64>>,
}

impl StoreCoverage {
    /// The node ids whose aggregates a share of this node counts, given
    /// this node's own id.
    pub fn stores(&self, own_node_id: u64) -> BTreeSet<u64> {
        if self.handed_over.is_some() {
            return BTreeSet::new();
        }
        let mut stores = self.absorbed.clone();
        stores.insert(own_node_id);
        stores
    }
}

/// What a leaving node hands over: the ids of the stores it held and a copy
/// of every experiment's aggregates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoresHandover {
    pub stores: BTreeSet<u64>,
    pub experiments: Vec<ExperimentCopy>,
}

/// One experiment's aggregates, named.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentCopy {
    pub project: Arc<str>,
    pub experiment: Arc<str>,
    pub aggregates: ExperimentAggregates,
}

impl Engine {
    /// Whose aggregates this node's shares count.
    pub fn store_coverage(&self) -> StoreCoverage {
        self.inner
            .coverage
            .lock()
            .expect("coverage lock is never poisoned")
            .clone()
    }

    /// Step 1 of removing this node: stops counting its stores in its
    /// shares (journaled) and answers them, encoded. Refused while the node
    /// owns or is handing over a shard (new deltas would be lost). Calling
    /// it again answers the same stores, so a remove can be retried.
    pub async fn hand_over_stores(&self, own_node_id: u64) -> Result<Vec<u8>, HandoffError> {
        if let Some(shard) = self.owned_shard() {
            return Err(HandoffError::StillOwnsShard { shard });
        }
        // Under the sequencer: the copy is taken after every delta already
        // queued, and no checkpoint runs between the journal entry and the
        // flag.
        let _order = self.inner.sequencer.lock().await;
        let coverage = self.store_coverage();
        let stores = match coverage.handed_over {
            Some(stores) => stores,
            None => {
                let stores = coverage.stores(own_node_id);
                self.journal(JournalEntry::HandOverStores {
                    stores: stores.clone(),
                })
                .await?;
                self.set_handed_over(stores.clone());
                stores
            }
        };
        let mut experiments = Vec::new();
        for store in self.aggregate_snapshots().await? {
            experiments.extend(store.into_experiments().map(
                |((project, experiment), aggregates)| ExperimentCopy {
                    project,
                    experiment,
                    aggregates,
                },
            ));
        }
        Ok(journal::encode(&StoresHandover {
            stores,
            experiments,
        }))
    }

    /// Step 2: merges another node's handed-over stores into this node's,
    /// journaled first. Answers the store ids this node now holds. An
    /// absorb of stores already held changes nothing (a retried remove);
    /// one that overlaps only in part is refused (it would count some
    /// stores twice).
    pub async fn absorb_stores(
        &self,
        own_node_id: u64,
        encoded: &[u8],
    ) -> Result<BTreeSet<u64>, HandoffError> {
        let handover: StoresHandover = journal::decode(encoded, "handed-over stores")?;
        let _order = self.inner.sequencer.lock().await;
        let coverage = self.store_coverage();
        if coverage.handed_over.is_some() {
            return Err(HandoffError::HandedOver);
        }
        let held = coverage.stores(own_node_id);
        let overlap: BTreeSet<u64> = handover.stores.intersection(&held).copied().collect();
        if !overlap.is_empty() {
            if overlap == handover.stores {
                return Ok(held);
            }
            return Err(HandoffError::StoresOverlap {
                offered: handover.stores,
                held,
            });
        }
        self.journal(JournalEntry::AbsorbStores {
            handover: encoded.to_vec(),
        })
        .await?;
        self.apply_absorb(handover).await;
        Ok(self.store_coverage().stores(own_node_id))
    }

    /// Merges `handover` into the aggregate stores and the coverage (after it
    /// is journaled, or while replaying the journal).
    pub(super) async fn apply_absorb(&self, handover: StoresHandover) {
        for copy in handover.experiments {
            let actor = self.aggregates_for(&copy.project, &copy.experiment);
            let message = |reply| AggregateMessage::Absorb {
                project: copy.project,
                experiment: copy.experiment,
                aggregates: Box::new(copy.aggregates),
                reply,
            };
            if let Err(error) = actor.call(message, apply_wait()).await {
                tracing::error!(%error, "an aggregate actor did not confirm an absorb");
            }
        }
        self.inner
            .coverage
            .lock()
            .expect("coverage lock is never poisoned")
            .absorbed
            .extend(handover.stores);
    }

    pub(super) fn set_handed_over(&self, stores: BTreeSet<u64>) {
        self.inner
            .coverage
            .lock()
            .expect("coverage lock is never poisoned")
            .handed_over = Some(stores);
    }

    /// A shard this node owns or is handing over, if any.
    fn owned_shard(&self) -> Option<u32> {
        let roles = self
            .inner
            .roles
            .read()
            .expect("roles lock is never poisoned");
        roles
            .iter()
            .position(|role| !matches!(role, ShardRole::Elsewhere { .. }))
            .map(|shard| u32::try_from(shard).expect("at most SHARDS_MAX shards"))
    }

    /// A copy of every aggregate actor's store, after everything queued.
    async fn aggregate_snapshots(&self) -> Result<Vec<AggregateStore>, HandoffError> {
        let mut stores = Vec::with_capacity(self.inner.aggregate_actors.len());
        for actor in self.inner.aggregate_actors.iter() {
            let snapshot = |reply| AggregateMessage::Snapshot { reply };
            let store = actor
                .call(snapshot, apply_wait())
                .await
                .map_err(HandoffError::Actor)?;
            stores.push(store);
        }
        Ok(stores)
    }
}
