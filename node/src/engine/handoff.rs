//! Shard ownership as this node sees it, and the engine's half of a shard
//! move: fence, export, import, drop (`docs/cluster.md`, the move protocol).
//!
//! Which node owns a shard is decided by the placement control plane; this
//! module only holds the node's copy (`ShardRole` per shard) and refuses
//! events for shards it does not own. A move hands over the shard's
//! `ShardState` — every visitor, frozen summary and event id, so
//! deduplication survives the move. Aggregates do not move: a delta counts
//! in the store of the node that emitted it, and a query adds every node's
//! share (`query::Partial`), so sums stay exact wherever they are held and
//! sketches union idempotently.

use super::actors::ShardMessage;
use super::journal::{self, JournalEntry};
use super::mailbox::CallError;
use super::shard::ShardState;
use super::Engine;
use crate::limits;
use std::time::Duration;

/// How long a change of a shard's state may take (`ACTOR_APPLY_WAIT_MS`).
pub(super) fn apply_wait() -> Duration {
    Duration::from_millis(limits::ACTOR_APPLY_WAIT_MS)
}

/// This node's view of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardRole {
    /// This node owns the shard at `epoch` and accepts its events.
    Owner { epoch: u64 },
    /// This node owns the shard but is handing it over: events are refused
    /// with a retryable answer until the move commits or aborts.
    Fenced { epoch: u64 },
    /// Another node owns the shard.
    Elsewhere { owner: u64, epoch: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("shard {shard} does not exist (the cluster has {shards} shards)")]
    UnknownShard { shard: u32, shards: u32 },
    #[error("shard {shard} is not owned here ({role:?})")]
    NotOwned { shard: u32, role: ShardRole },
    #[error("the shard state could not be decoded")]
    Codec(#[from] journal::CodecError),
    #[error("the shard change could not be written to disk: {cause}")]
    Storage { cause: String },
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The shard's actor did not answer (it stopped, failed or stayed busy).
    #[error("the shard's actor did not answer: {0}")]
    Actor(#[source] CallError),
    #[error("this node handed its stores to another node and keeps none")]
    HandedOver,
    #[error("this node still owns shard {shard}; drain it before handing over its stores")]
    StillOwnsShard { shard: u32 },
    #[error("the offered stores {offered:?} overlap the stores held here {held:?} in part")]
    StoresOverlap {
        offered: std::collections::BTreeSet<u64>,
        held: std::collections::BTreeSet<u64>,
    },
}

impl Engine {
    fn check_shard(&self, shard: u32) -> Result<(), HandoffError> {
        let shards = self.inner.config.shards;
        if shard >= shards {
            return Err(HandoffError::UnknownShard { shard, shards });
        }
        Ok(())
    }

    /// This node's role for `shard`.
    pub fn shard_role(&self, shard: u32) -> ShardRole {
        self.inner
            .roles
            .read()
            .expect("roles lock is never poisoned")[shard as usize]
            .clone()
    }

    /// Sets this node's role for `shard` (from the placement state).
    pub fn set_shard_role(&self, shard: u32, role: ShardRole) -> Result<(), HandoffError> {
        self.check_shard(shard)?;
        self.inner
            .roles
            .write()
            .expect("roles lock is never poisoned")[shard as usize] = role;
        Ok(())
    }

    /// Fences `shard` and returns its state, encoded, once everything
    /// queued for it before the fence is applied. From here on the shard's
    /// events are refused with a retryable answer.
    pub async fn export_shard(&self, shard: u32) -> Result<Vec<u8>, HandoffError> {
        self.check_shard(shard)?;
        let state = {
            // The sequencer orders the fence after every batch already
            // given a place in the log; later batches see the fence.
            let _order = self.inner.sequencer.lock().await;
            let epoch = match self.shard_role(shard) {
                ShardRole::Owner { epoch } | ShardRole::Fenced { epoch } => epoch,
                role @ ShardRole::Elsewhere { .. } => {
                    return Err(HandoffError::NotOwned { shard, role })
                }
            };
            self.set_shard_role(shard, ShardRole::Fenced { epoch })?;
            let snapshot = |reply| ShardMessage::Snapshot { reply };
            self.inner.shard_actors[shard as usize]
                .call(snapshot, apply_wait())
                .await
                .map_err(HandoffError::Actor)?
        };
        Ok(journal::encode(&state))
    }

    /// Installs a shard's state handed over by its previous owner, logged
    /// first so that recovery restores it, and starts owning it at `epoch`.
    pub async fn import_shard(
        &self,
        shard: u32,
        encoded: &[u8],
        epoch: u64,
    ) -> Result<(), HandoffError> {
        self.check_shard(shard)?;
        let state: ShardState = journal::decode(encoded, "shard state")?;
        let _order = self.inner.sequencer.lock().await;
        self.journal(JournalEntry::InstallShard {
            shard,
            state: state.clone(),
        })
        .await?;
        // Its names join this node's, so the limits go on counting them.
        self.names().observe_shard(&state);
        self.replace_shard(shard, state).await;
        self.set_shard_role(shard, ShardRole::Owner { epoch })
    }

    /// Forgets a shard that now belongs to `owner` at `epoch`, logged first.
    pub async fn drop_shard(&self, shard: u32, owner: u64, epoch: u64) -> Result<(), HandoffError> {
        self.check_shard(shard)?;
        let _order = self.inner.sequencer.lock().await;
        self.journal(JournalEntry::DropShard { shard }).await?;
        self.replace_shard(shard, ShardState::default()).await;
        self.set_shard_role(shard, ShardRole::Elsewhere { owner, epoch })
    }

    pub(super) async fn journal(&self, entry: JournalEntry) -> Result<(), HandoffError> {
        let record = (journal::ALL_SHARDS, journal::encode(&entry));
        let stored = match self.inner.storage.log.enqueue_batch(vec![record]).await {
            Ok(pending) => pending.durable().await,
            Err(error) => Err(error),
        };
        stored.map(|_| ()).map_err(|error| HandoffError::Storage {
            cause: error.to_string(),
        })
    }

    /// Replaces a shard actor's state (in log order: callers hold the
    /// sequencer or are replaying).
    pub(super) async fn replace_shard(&self, shard: u32, state: ShardState) {
        let message = |reply| ShardMessage::Replace {
            state: Box::new(state),
            reply,
        };
        let replaced = self.inner.shard_actors[shard as usize]
            .call(message, apply_wait())
            .await;
        if let Err(error) = replaced {
            tracing::error!(shard, %error, "a shard did not confirm its new state");
        }
    }

    /// Each shard's load here: the events its owner retains (0 for shards
    /// owned elsewhere) — what a rebalance evens out after shard counts.
    pub async fn shard_loads(&self) -> Vec<u64> {
        let mut loads = Vec::with_capacity(self.inner.shard_actors.len());
        let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
        for (shard, actor) in self.inner.shard_actors.iter().enumerate() {
            let owned = !matches!(
                self.shard_role(u32::try_from(shard).expect("at most SHARDS_MAX shards")),
                ShardRole::Elsewhere { .. }
            );
            let sizes = |reply| ShardMessage::Sizes { reply };
            let load = match owned {
                true => actor
                    .call(sizes, wait)
                    .await
                    .map_or(0, |(_, events)| events as u64),
                false => 0,
            };
            loads.push(load);
        }
        loads
    }
}
