//! The actors: one shard actor per shard, owning its visitors, and a fixed
//! number of aggregate actors that each own the aggregates of a share of
//! the experiments.
//!
//! Architecture invariant: a shard actor only ever waits on aggregate
//! actors, and aggregate actors wait on nothing, so there is no cycle and
//! every queue drains.

use super::aggregates::{AggregateBatch, AggregateStore};
use super::journal;
use super::mailbox::{Envelope, Mailbox};
use super::query::{self, ResultsQuery};
use super::shard::{DeltaSink, Outcome, ShardState};
use crate::clock::SharedClock;
use crate::event::VisitorEvent;
use crate::project::ProjectConfig;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use tokio::sync::oneshot;

pub enum ShardMessage {
    /// Apply events accepted at `now_ms`, once `durable` says their log
    /// record is on disk (`None`: already durable, e.g. during replay).
    Ingest {
        events: Vec<VisitorEvent>,
        now_ms: i64,
        durable: Option<oneshot::Receiver<Result<(), String>>>,
        reply: RpcReplyPort<Vec<Outcome>>,
    },
    /// Log records of this shard being replayed (`durability::open`),
    /// already durable, in log order. Each is applied with its own "now",
    /// exactly as `Ingest` would; their deltas are forwarded once for all,
    /// so the aggregate actors get a few large batches instead of one per
    /// record (the aggregate store adds deltas, so the sum is the same).
    Replay {
        records: Vec<ReplayRecord>,
        reply: RpcReplyPort<()>,
    },
    Reconfigure {
        config: Arc<ProjectConfig>,
        reply: RpcReplyPort<()>,
    },
    /// Freeze closed sessions, forget expired visitors; reply when done if
    /// asked to.
    Maintain { reply: Option<RpcReplyPort<()>> },
    /// A copy of the shard's state, for a shard move.
    Snapshot { reply: RpcReplyPort<ShardState> },
    /// The shard's state encoded for a checkpoint (`journal::encode`), with
    /// its visitor count. Encoding in place, instead of copying the state
    /// and encoding the copy, keeps a checkpoint from holding a second
    /// copy of every visitor in memory. Then tells every aggregate actor
    /// that this shard is covered (`AggregateMessage::ShardCovered`): the
    /// deltas it forwarded before belong to the checkpoint, those after do
    /// not. Only this shard waits meanwhile: the checkpoint asks a few
    /// shards at a time (`docs/durability.md`, "Checkpoints").
    Encode {
        checkpoint: u64,
        reply: RpcReplyPort<EncodedShard>,
    },
    /// Replace the shard's state: a shard moved in (its state) or away
    /// (empty state).
    Replace {
        state: Box<ShardState>,
        reply: RpcReplyPort<()>,
    },
    /// (live visitors, retained events).
    Sizes { reply: RpcReplyPort<(usize, usize)> },
    /// Panics in the actor: the hidden fault route's way to exercise
    /// supervision (`docs/operations.md`, "Actor failures"). Never sent
    /// otherwise.
    Panic,
}

impl std::fmt::Debug for ShardMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ShardMessage::Ingest { .. } => "Ingest",
            ShardMessage::Replay { .. } => "Replay",
            ShardMessage::Reconfigure { .. } => "Reconfigure",
            ShardMessage::Maintain { .. } => "Maintain",
            ShardMessage::Sizes { .. } => "Sizes",
            ShardMessage::Snapshot { .. } => "Snapshot",
            ShardMessage::Encode { .. } => "Encode",
            ShardMessage::Replace { .. } => "Replace",
            ShardMessage::Panic => "Panic",
        };
        formatter.write_str(name)
    }
}

/// One replayed log record of a shard: its events and the "now" they were
/// accepted at.
#[derive(Debug)]
pub struct ReplayRecord {
    pub now_ms: i64,
    pub events: Vec<VisitorEvent>,
}

/// A shard's checkpoint part.
#[derive(Debug)]
pub struct EncodedShard {
    pub bytes: Vec<u8>,
    pub visitors: usize,
    /// How long the actor spent on it: the time this shard's ingest
    /// waited for the checkpoint.
    pub encode_time: std::time::Duration,
}

#[derive(Debug)]
pub struct ShardActorState {
    /// Which shard this actor holds: deltas and checkpoint marks carry it.
    pub index: u32,
    pub shard: ShardState,
    pub aggregate_actors: Arc<Vec<Mailbox<AggregateMessage>>>,
    pub clock: SharedClock,
}

#[derive(Debug)]
pub struct ShardActor;

impl Actor for ShardActor {
    type Msg = Envelope<ShardMessage>;
    type State = ShardActorState;
    type Arguments = ShardActorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        arguments: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(arguments)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        envelope: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let mut sink = DeltaSink::new(state.aggregate_actors.len());
        match envelope.message {
            ShardMessage::Ingest {
                events,
                now_ms,
                durable,
                reply,
            } => {
                if let Some(durable) = durable {
                    // Waiting here is what orders this shard's applies in
                    // log order; the wait is bounded by the log's sync.
                    if !log_record_is_durable(durable).await {
                        // Nothing of an unsynced record is applied; the
                        // caller already answered with the storage error.
                        drop(reply);
                        return Ok(());
                    }
                }
                let outcomes = state.shard.apply(now_ms, events, &mut sink);
                // Deltas are queued at the aggregate actors before the reply,
                // so a query sent after the acknowledgement sees them.
                forward(state, &mut sink).await;
                let _ = reply.send(outcomes);
            }
            ShardMessage::Replay { records, reply } => {
                for record in records {
                    state.shard.apply(record.now_ms, record.events, &mut sink);
                }
                forward(state, &mut sink).await;
                let _ = reply.send(());
            }
            ShardMessage::Reconfigure { config, reply } => {
                state.shard.reconfigure(&config, &mut sink);
                forward(state, &mut sink).await;
                let _ = reply.send(());
            }
            ShardMessage::Maintain { reply } => {
                state.shard.maintain(state.clock.now_ms());
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            ShardMessage::Snapshot { reply } => {
                let _ = reply.send(state.shard.clone());
            }
            ShardMessage::Encode { checkpoint, reply } => {
                let started = std::time::Instant::now();
                let mut encoded = EncodedShard {
                    bytes: journal::encode(&state.shard),
                    visitors: state.shard.visitor_count(),
                    encode_time: std::time::Duration::ZERO,
                };
                // Behind every delta this shard forwarded, ahead of every
                // later one: each aggregate actor's queue is in send order.
                for actor in state.aggregate_actors.iter() {
                    let covered = AggregateMessage::ShardCovered {
                        checkpoint,
                        shard: state.index,
                    };
                    if actor.send(covered).await.is_err() {
                        tracing::warn!("aggregate actor stopped; node is shutting down");
                    }
                }
                encoded.encode_time = started.elapsed();
                let _ = reply.send(encoded);
            }
            ShardMessage::Replace {
                state: replacement,
                reply,
            } => {
                state.shard = *replacement;
                // A state moved in was decoded: one copy of each name.
                state.shard.share_names();
                let _ = reply.send(());
            }
            ShardMessage::Sizes { reply } => {
                let shard = &state.shard;
                let _ = reply.send((shard.visitor_count(), shard.retained_event_count()));
            }
            ShardMessage::Panic => panic!("injected panic (the hidden fault route asked for it)"),
        }
        Ok(())
    }
}

async fn log_record_is_durable(durable: oneshot::Receiver<Result<(), String>>) -> bool {
    let wait = std::time::Duration::from_millis(crate::limits::LOG_SYNC_WAIT_MS);
    matches!(tokio::time::timeout(wait, durable).await, Ok(Ok(Ok(()))))
}

async fn forward(state: &ShardActorState, sink: &mut DeltaSink) {
    for (actor, batch) in sink.drain() {
        // Waiting without a bound is deliberate: the visitor state already
        // changed, so the delta must arrive. Aggregate actors wait on
        // nothing, so room always comes.
        let apply = AggregateMessage::Apply {
            shard: state.index,
            batch,
        };
        if state.aggregate_actors[actor].send(apply).await.is_err() {
            tracing::warn!(actor, "aggregate actor stopped; node is shutting down");
        }
    }
}

pub enum AggregateMessage {
    /// Deltas forwarded by shard `shard`.
    Apply {
        shard: u32,
        batch: AggregateBatch,
    },
    /// A checkpoint starts (sent in log order, under the sequencer): keep a
    /// copy of the store that takes only the deltas of shards not yet
    /// covered, and answer it once all `shards` are covered.
    BeginCheckpoint {
        /// Tells this checkpoint's marks from a failed one's late marks.
        checkpoint: u64,
        shards: usize,
        reply: RpcReplyPort<AggregateStore>,
    },
    /// Shard `shard` encoded its state for the running checkpoint; its
    /// later deltas stay out of the checkpoint's copy.
    ShardCovered {
        checkpoint: u64,
        shard: u32,
    },
    /// The running checkpoint failed: drop its copy.
    AbortCheckpoint,
    /// The experiments of a project held here, with their earliest bucket.
    Experiments {
        project: Arc<str>,
        reply: RpcReplyPort<Vec<(Arc<str>, Option<i64>)>>,
    },
    Expire {
        project: Arc<str>,
        before_ms: i64,
    },
    CellCount {
        reply: RpcReplyPort<usize>,
    },
    /// How many cells a query of the experiment reads (see
    /// `ExperimentAggregates::cells_read`); `None` without the experiment.
    CellsRead {
        project: Arc<str>,
        experiment: Arc<str>,
        breakdown: Option<Arc<str>>,
        reply: RpcReplyPort<Option<u64>>,
    },
    /// A copy of the store, for a checkpoint.
    Snapshot {
        reply: RpcReplyPort<AggregateStore>,
    },
    /// This store's share of a time series (`query::series_partial`);
    /// `None` when the store has no such experiment.
    SeriesPartial {
        project: Arc<str>,
        experiment: Arc<str>,
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
        /// The breakdown attribute whose cells are read; `None`: totals.
        breakdown: Option<Arc<str>>,
        reply: RpcReplyPort<Option<Vec<query::Partial>>>,
    },
    /// Merges another node's aggregates of one experiment into this store
    /// (`engine::stores`).
    Absorb {
        project: Arc<str>,
        experiment: Arc<str>,
        aggregates: Box<super::aggregates::ExperimentAggregates>,
        reply: RpcReplyPort<()>,
    },
    /// This store's share of a results query (cluster-wide answers add
    /// every node's share); `None` when the store has no such experiment.
    Partial {
        project: Arc<str>,
        experiment: Arc<str>,
        query: ResultsQuery,
        reply: RpcReplyPort<Option<query::Partial>>,
    },
}

impl std::fmt::Debug for AggregateMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            AggregateMessage::Apply { .. } => "Apply",
            AggregateMessage::BeginCheckpoint { .. } => "BeginCheckpoint",
            AggregateMessage::ShardCovered { .. } => "ShardCovered",
            AggregateMessage::AbortCheckpoint => "AbortCheckpoint",
            AggregateMessage::Experiments { .. } => "Experiments",
            AggregateMessage::Expire { .. } => "Expire",
            AggregateMessage::CellCount { .. } => "CellCount",
            AggregateMessage::CellsRead { .. } => "CellsRead",
            AggregateMessage::Snapshot { .. } => "Snapshot",
            AggregateMessage::Partial { .. } => "Partial",
            AggregateMessage::Absorb { .. } => "Absorb",
            AggregateMessage::SeriesPartial { .. } => "SeriesPartial",
        };
        formatter.write_str(name)
    }
}

#[derive(Debug)]
pub struct AggregateActor;

/// An aggregate actor's store and the copy a running checkpoint takes.
#[derive(Debug)]
pub struct AggregateActorState {
    store: AggregateStore,
    checkpoint: Option<CheckpointCopy>,
}

/// The store as of each shard's checkpoint position: taken when the
/// checkpoint began, it receives the deltas of a shard until that shard
/// is covered. Queries keep reading the live store, which takes every
/// delta at once, so an acknowledged event stays visible.
#[derive(Debug)]
struct CheckpointCopy {
    checkpoint: u64,
    copy: AggregateStore,
    covered: Vec<bool>,
    uncovered: usize,
    reply: RpcReplyPort<AggregateStore>,
}

impl AggregateActorState {
    fn apply(&mut self, shard: u32, batch: &AggregateBatch) {
        self.store.apply(batch);
        if let Some(checkpoint) = &mut self.checkpoint {
            if !checkpoint.covered[shard as usize] {
                checkpoint.copy.apply(batch);
            }
        }
    }

    fn begin_checkpoint(
        &mut self,
        checkpoint: u64,
        shards: usize,
        reply: RpcReplyPort<AggregateStore>,
    ) {
        assert!(shards > 0, "a checkpoint covers at least one shard");
        // A copy left by a checkpoint that never finished is dropped: its
        // answer was given up on.
        self.checkpoint = Some(CheckpointCopy {
            checkpoint,
            copy: self.store.clone(),
            covered: vec![false; shards],
            uncovered: shards,
            reply,
        });
    }

    fn cover(&mut self, id: u64, shard: u32) {
        let Some(checkpoint) = &mut self.checkpoint else {
            // The checkpoint was aborted before this shard's mark arrived.
            return;
        };
        if checkpoint.checkpoint != id {
            // A late mark of a checkpoint that failed (a shard answered
            // after its wait ran out).
            return;
        }
        let covered = &mut checkpoint.covered[shard as usize];
        assert!(!*covered, "a shard is covered once per checkpoint");
        *covered = true;
        checkpoint.uncovered -= 1;
        if checkpoint.uncovered == 0 {
            let done = self.checkpoint.take().expect("checked above");
            let _ = done.reply.send(done.copy);
        }
    }

    fn expire(&mut self, project: &str, before_ms: i64) {
        self.store.expire(project, before_ms);
        if let Some(checkpoint) = &mut self.checkpoint {
            checkpoint.copy.expire(project, before_ms);
        }
    }
}

impl Actor for AggregateActor {
    type Msg = Envelope<AggregateMessage>;
    type State = AggregateActorState;
    type Arguments = AggregateStore;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        arguments: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(AggregateActorState {
            store: arguments,
            checkpoint: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        envelope: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let message = envelope.message;
        match message {
            AggregateMessage::Apply { shard, batch } => state.apply(shard, &batch),
            AggregateMessage::BeginCheckpoint {
                checkpoint,
                shards,
                reply,
            } => state.begin_checkpoint(checkpoint, shards, reply),
            AggregateMessage::ShardCovered { checkpoint, shard } => state.cover(checkpoint, shard),
            AggregateMessage::AbortCheckpoint => state.checkpoint = None,
            AggregateMessage::Expire { project, before_ms } => state.expire(&project, before_ms),
            other => handle_read(&mut state.store, other),
        }
        Ok(())
    }
}

/// The messages that leave a running checkpoint's copy alone. An absorb
/// changes only the live store: it is logged after the checkpoint's start,
/// so replay applies it again after the copy.
fn handle_read(store: &mut AggregateStore, message: AggregateMessage) {
    {
        match message {
            AggregateMessage::Apply { .. }
            | AggregateMessage::BeginCheckpoint { .. }
            | AggregateMessage::ShardCovered { .. }
            | AggregateMessage::AbortCheckpoint
            | AggregateMessage::Expire { .. } => {
                unreachable!("handled by the actor with the checkpoint's copy")
            }
            AggregateMessage::Experiments { project, reply } => {
                let experiments = store
                    .experiments_of(&project)
                    .into_iter()
                    .map(|experiment| {
                        let first = store
                            .experiment(&project, &experiment)
                            .and_then(|aggregates| aggregates.first_bucket_ms());
                        (experiment, first)
                    })
                    .collect();
                let _ = reply.send(experiments);
            }
            AggregateMessage::CellCount { reply } => {
                let _ = reply.send(store.cell_count());
            }
            AggregateMessage::CellsRead {
                project,
                experiment,
                breakdown,
                reply,
            } => {
                let cells = store
                    .experiment(&project, &experiment)
                    .map(|aggregates| aggregates.cells_read(breakdown.as_deref()));
                let _ = reply.send(cells);
            }
            AggregateMessage::Snapshot { reply } => {
                let _ = reply.send(store.clone());
            }
            AggregateMessage::SeriesPartial {
                project,
                experiment,
                from_ms,
                to_ms,
                interval_ms,
                breakdown,
                reply,
            } => {
                let share = store.experiment(&project, &experiment).map(|aggregates| {
                    query::series_partial(
                        aggregates,
                        from_ms,
                        to_ms,
                        interval_ms,
                        breakdown.as_ref(),
                    )
                });
                let _ = reply.send(share);
            }
            AggregateMessage::Absorb {
                project,
                experiment,
                aggregates,
                reply,
            } => {
                store.absorb(project, experiment, *aggregates);
                let _ = reply.send(());
            }
            AggregateMessage::Partial {
                project,
                experiment,
                query,
                reply,
            } => {
                let share = store
                    .experiment(&project, &experiment)
                    .map(|aggregates| query::partial(aggregates, &query));
                let _ = reply.send(share);
            }
        }
    }
}
