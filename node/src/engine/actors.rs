//! The actors: one session actor per shard, and a fixed number of segment
//! actors that each own the aggregates of a share of the experiments.
//!
//! Architecture invariant: a session actor only ever waits on segment
//! actors, and segment actors wait on nothing, so there is no cycle and
//! every queue drains.

use super::mailbox::{Envelope, Mailbox};
use super::query::{self, QueryError, Results, ResultsQuery, Series};
use super::segment::{SegmentBatch, SegmentStore};
use super::shard::{DeltaSink, Outcome, ShardState};
use crate::clock::SharedClock;
use crate::event::VisitorEvent;
use crate::journal;
use crate::project::ProjectConfig;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use tokio::sync::oneshot;

pub enum SessionMessage {
    /// Apply events accepted at `now_ms`, once `durable` says their log
    /// record is on disk (`None`: already durable, e.g. during replay).
    Ingest {
        events: Vec<VisitorEvent>,
        now_ms: i64,
        durable: Option<oneshot::Receiver<Result<(), String>>>,
        reply: oneshot::Sender<Vec<Outcome>>,
    },
    /// Log records of this shard being replayed (`durability::open`),
    /// already durable, in log order. Each is applied with its own "now",
    /// exactly as `Ingest` would; their deltas are forwarded once for all,
    /// so the segment actors get a few large batches instead of one per
    /// record (the segment store adds deltas, so the sum is the same).
    Replay {
        records: Vec<ReplayRecord>,
        reply: oneshot::Sender<()>,
    },
    Reconfigure {
        config: Arc<ProjectConfig>,
        reply: oneshot::Sender<()>,
    },
    /// Freeze closed sessions, forget expired visitors; reply when done if
    /// asked to.
    Maintain { reply: Option<oneshot::Sender<()>> },
    /// A copy of the shard's state, for a shard move.
    Snapshot { reply: oneshot::Sender<ShardState> },
    /// The shard's state encoded for a checkpoint (`journal::encode`), with
    /// its visitor count. Encoding in place, instead of copying the state
    /// and encoding the copy, keeps a checkpoint from holding a second
    /// copy of every visitor in memory.
    Encode {
        reply: oneshot::Sender<EncodedShard>,
    },
    /// Replace the shard's state: a shard moved in (its state) or away
    /// (empty state).
    Replace {
        state: Box<ShardState>,
        reply: oneshot::Sender<()>,
    },
    /// (live visitors, retained events).
    Sizes {
        reply: oneshot::Sender<(usize, usize)>,
    },
}

impl std::fmt::Debug for SessionMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            SessionMessage::Ingest { .. } => "Ingest",
            SessionMessage::Replay { .. } => "Replay",
            SessionMessage::Reconfigure { .. } => "Reconfigure",
            SessionMessage::Maintain { .. } => "Maintain",
            SessionMessage::Sizes { .. } => "Sizes",
            SessionMessage::Snapshot { .. } => "Snapshot",
            SessionMessage::Encode { .. } => "Encode",
            SessionMessage::Replace { .. } => "Replace",
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
}

#[derive(Debug)]
pub struct SessionActorState {
    pub shard: ShardState,
    pub segments: Arc<Vec<Mailbox<SegmentMessage>>>,
    pub clock: SharedClock,
}

#[derive(Debug)]
pub struct SessionActor;

impl Actor for SessionActor {
    type Msg = Envelope<SessionMessage>;
    type State = SessionActorState;
    type Arguments = SessionActorState;

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
        let mut sink = DeltaSink::new(state.segments.len());
        match envelope.message {
            SessionMessage::Ingest {
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
                // Deltas are queued at the segment actors before the reply,
                // so a query sent after the acknowledgement sees them.
                forward(state, &mut sink).await;
                let _ = reply.send(outcomes);
            }
            SessionMessage::Replay { records, reply } => {
                for record in records {
                    state.shard.apply(record.now_ms, record.events, &mut sink);
                }
                forward(state, &mut sink).await;
                let _ = reply.send(());
            }
            SessionMessage::Reconfigure { config, reply } => {
                state.shard.reconfigure(&config, &mut sink);
                forward(state, &mut sink).await;
                let _ = reply.send(());
            }
            SessionMessage::Maintain { reply } => {
                state.shard.maintain(state.clock.now_ms());
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            SessionMessage::Snapshot { reply } => {
                let _ = reply.send(state.shard.clone());
            }
            SessionMessage::Encode { reply } => {
                let _ = reply.send(EncodedShard {
                    bytes: journal::encode(&state.shard),
                    visitors: state.shard.visitor_count(),
                });
            }
            SessionMessage::Replace {
                state: replacement,
                reply,
            } => {
                state.shard = *replacement;
                // A state moved in was decoded: one copy of each name.
                state.shard.share_names();
                let _ = reply.send(());
            }
            SessionMessage::Sizes { reply } => {
                let shard = &state.shard;
                let _ = reply.send((shard.visitor_count(), shard.retained_event_count()));
            }
        }
        Ok(())
    }
}

async fn log_record_is_durable(durable: oneshot::Receiver<Result<(), String>>) -> bool {
    let wait = std::time::Duration::from_millis(crate::limits::LOG_SYNC_WAIT_MS);
    matches!(tokio::time::timeout(wait, durable).await, Ok(Ok(Ok(()))))
}

async fn forward(state: &SessionActorState, sink: &mut DeltaSink) {
    for (segment, batch) in sink.drain() {
        // Waiting without a bound is deliberate: the visitor state already
        // changed, so the delta must arrive. Segment actors wait on nothing,
        // so room always comes.
        if state.segments[segment]
            .send(SegmentMessage::Apply(batch))
            .await
            .is_err()
        {
            tracing::warn!(segment, "segment actor stopped; node is shutting down");
        }
    }
}

pub enum SegmentMessage {
    Apply(SegmentBatch),
    Results {
        project: Arc<str>,
        experiment: Arc<str>,
        query: ResultsQuery,
        reply: oneshot::Sender<Result<Results, QueryError>>,
    },
    TimeSeries {
        project: Arc<str>,
        experiment: Arc<str>,
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
        reply: oneshot::Sender<Option<Series>>,
    },
    /// The experiments of a project held here, with their earliest bucket.
    Experiments {
        project: Arc<str>,
        reply: oneshot::Sender<Vec<(Arc<str>, Option<i64>)>>,
    },
    Expire {
        project: Arc<str>,
        before_ms: i64,
    },
    CellCount {
        reply: oneshot::Sender<usize>,
    },
    /// How many cells a query of the experiment reads (see
    /// `ExperimentAggregates::cells_read`); `None` without the experiment.
    CellsRead {
        project: Arc<str>,
        experiment: Arc<str>,
        breakdown: Option<Arc<str>>,
        reply: oneshot::Sender<Option<u64>>,
    },
    /// A copy of the store, for a checkpoint.
    Snapshot {
        reply: oneshot::Sender<SegmentStore>,
    },
    /// This store's share of a time series (`query::series_partial`);
    /// `None` when the store has no such experiment.
    SeriesPartial {
        project: Arc<str>,
        experiment: Arc<str>,
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
        reply: oneshot::Sender<Option<Vec<query::Partial>>>,
    },
    /// Merges another node's aggregates of one experiment into this store
    /// (`engine::stores`).
    Absorb {
        project: Arc<str>,
        experiment: Arc<str>,
        aggregates: Box<super::segment::ExperimentAggregates>,
        reply: oneshot::Sender<()>,
    },
    /// This store's share of a results query (cluster-wide answers add
    /// every node's share); `None` when the store has no such experiment.
    Partial {
        project: Arc<str>,
        experiment: Arc<str>,
        query: ResultsQuery,
        reply: oneshot::Sender<Option<query::Partial>>,
    },
}

impl std::fmt::Debug for SegmentMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            SegmentMessage::Apply(_) => "Apply",
            SegmentMessage::Results { .. } => "Results",
            SegmentMessage::TimeSeries { .. } => "TimeSeries",
            SegmentMessage::Experiments { .. } => "Experiments",
            SegmentMessage::Expire { .. } => "Expire",
            SegmentMessage::CellCount { .. } => "CellCount",
            SegmentMessage::CellsRead { .. } => "CellsRead",
            SegmentMessage::Snapshot { .. } => "Snapshot",
            SegmentMessage::Partial { .. } => "Partial",
            SegmentMessage::Absorb { .. } => "Absorb",
            SegmentMessage::SeriesPartial { .. } => "SeriesPartial",
        };
        formatter.write_str(name)
    }
}

#[derive(Debug)]
pub struct SegmentActor;

impl Actor for SegmentActor {
    type Msg = Envelope<SegmentMessage>;
    type State = SegmentStore;
    type Arguments = SegmentStore;

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
        store: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match envelope.message {
            SegmentMessage::Apply(batch) => store.apply(&batch),
            SegmentMessage::Results {
                project,
                experiment,
                query,
                reply,
            } => {
                let answer = match store.experiment(&project, &experiment) {
                    Some(aggregates) => query::results(aggregates, &query),
                    None => Err(QueryError::UnknownExperiment {
                        project: project.to_string(),
                        experiment: experiment.to_string(),
                    }),
                };
                let _ = reply.send(answer);
            }
            SegmentMessage::TimeSeries {
                project,
                experiment,
                from_ms,
                to_ms,
                interval_ms,
                reply,
            } => {
                let answer = store
                    .experiment(&project, &experiment)
                    .map(|aggregates| query::time_series(aggregates, from_ms, to_ms, interval_ms));
                let _ = reply.send(answer);
            }
            SegmentMessage::Experiments { project, reply } => {
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
            SegmentMessage::Expire { project, before_ms } => store.expire(&project, before_ms),
            SegmentMessage::CellCount { reply } => {
                let _ = reply.send(store.cell_count());
            }
            SegmentMessage::CellsRead {
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
            SegmentMessage::Snapshot { reply } => {
                let _ = reply.send(store.clone());
            }
            SegmentMessage::SeriesPartial {
                project,
                experiment,
                from_ms,
                to_ms,
                interval_ms,
                reply,
            } => {
                let share = store.experiment(&project, &experiment).map(|aggregates| {
                    query::series_partial(aggregates, from_ms, to_ms, interval_ms)
                });
                let _ = reply.send(share);
            }
            SegmentMessage::Absorb {
                project,
                experiment,
                aggregates,
                reply,
            } => {
                store.absorb(project, experiment, *aggregates);
                let _ = reply.send(());
            }
            SegmentMessage::Partial {
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
        Ok(())
    }
}
