//! The supervisor: the actor that owns every shard and aggregate actor
//! (`docs/operations.md`, "Actor failures").
//!
//! It spawns them linked to itself (ractor's `spawn_linked`), so ractor
//! tells it when one fails. A failed actor means a bug, and the state it
//! held is suspect: a panic may have left a shard half-changed, or deltas
//! already sent to the aggregate actors without the shard's own change.
//! Restarting that one actor from the checkpoint and the log would send
//! again deltas the aggregate actors already hold (double counting), so the
//! engine does not restart anything in place: the failure is logged,
//! counted (`sessiondb_actor_failures_total`), kept in `Health` — from then
//! on ingest and queries are refused and `/v1/ready` answers
//! `503 actor_failed` — and the process stops with its own exit code
//! (`cli::EXIT_ACTOR_FAILED`). Whoever restarts it (a process manager, an
//! orchestrator) gets a node recovered from the checkpoint and the log,
//! where every acknowledged event is.
//!
//! The supervisor receives one message (`TakeChildren`, at start) and
//! ractor's supervision events, so it needs no bounded `Mailbox`.

use super::actors::{AggregateActor, AggregateMessage, ShardActor, ShardActorState, ShardMessage};
use super::aggregates::AggregateStore;
use super::mailbox::Mailbox;
use super::shard::ShardState;
use crate::clock::SharedClock;
use crate::limits;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The two kinds of supervised actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Shard,
    Aggregate,
}

impl ActorKind {
    /// The label value in `/metrics` (the names the actors had when the
    /// metrics were first published).
    pub fn label(self) -> &'static str {
        match self {
            ActorKind::Shard => "session",
            ActorKind::Aggregate => "segment",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ActorKind::Shard => "shard actor",
            ActorKind::Aggregate => "aggregate actor",
        }
    }
}

/// The first actor failure, as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorFailure {
    /// Which actor, e.g. `shard actor 3`.
    pub actor: String,
    /// The panic message or the error it stopped with.
    pub cause: String,
}

impl std::fmt::Display for ActorFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} failed: {}", self.actor, self.cause)
    }
}

/// Whether every supervised actor is alive; shared by the supervisor, the
/// engine and whoever waits for a failure.
#[derive(Debug)]
pub struct Health {
    failure: Mutex<Option<ActorFailure>>,
    failed: tokio::sync::watch::Sender<bool>,
    /// Set before a shutdown stops the actors: their ends are not failures.
    stopping: AtomicBool,
    shard_failures: AtomicU64,
    aggregate_failures: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            failure: Mutex::new(None),
            failed: tokio::sync::watch::Sender::new(false),
            stopping: AtomicBool::new(false),
            shard_failures: AtomicU64::new(0),
            aggregate_failures: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// The first failure, if an actor failed.
    pub fn failure(&self) -> Option<ActorFailure> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Completes once an actor failed.
    pub async fn wait_failed(&self) {
        let mut failed = self.failed.subscribe();
        // The sender lives in `self`, so the wait ends only by a failure.
        let _ = failed.wait_for(|failed| *failed).await;
    }

    /// Failed actors since start, by kind.
    pub fn failures(&self, kind: ActorKind) -> u64 {
        match kind {
            ActorKind::Shard => self.shard_failures.load(Ordering::Relaxed),
            ActorKind::Aggregate => self.aggregate_failures.load(Ordering::Relaxed),
        }
    }

    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn fail(&self, kind: ActorKind, index: usize, cause: String) {
        let counter = match kind {
            ActorKind::Shard => &self.shard_failures,
            ActorKind::Aggregate => &self.aggregate_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let failure = ActorFailure {
            actor: format!("{} {index}", kind.name()),
            cause,
        };
        tracing::error!(actor = %failure.actor, cause = %failure.cause, "actor failed; the node refuses work and stops (docs/operations.md, \"Actor failures\")");
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(failure);
        self.failed.send_replace(true);
    }
}

/// What the supervisor starts with: the restored state of every actor.
#[derive(Debug)]
pub struct SupervisorArguments {
    pub shards: Vec<ShardState>,
    pub stores: Vec<AggregateStore>,
    pub clock: SharedClock,
    pub health: Arc<Health>,
}

/// The supervised actors' mailboxes, handed to the engine once.
#[derive(Debug)]
pub struct Children {
    pub shard_actors: Vec<Mailbox<ShardMessage>>,
    pub aggregate_actors: Arc<Vec<Mailbox<AggregateMessage>>>,
}

#[derive(Debug)]
pub enum SupervisorMessage {
    /// The children's mailboxes (`None` once taken).
    TakeChildren(RpcReplyPort<Option<Children>>),
}

#[derive(Debug)]
pub struct SupervisorState {
    /// Each child's kind and index.
    names: HashMap<ActorId, (ActorKind, usize)>,
    children: Option<Children>,
    health: Arc<Health>,
}

#[derive(Debug)]
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorState;
    type Arguments = SupervisorArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut names = HashMap::new();
        let mut aggregate_actors = Vec::with_capacity(arguments.stores.len());
        for (index, store) in arguments.stores.into_iter().enumerate() {
            let (actor, _) =
                Actor::spawn_linked(None, AggregateActor, store, myself.get_cell()).await?;
            names.insert(actor.get_id(), (ActorKind::Aggregate, index));
            aggregate_actors.push(Mailbox::new(actor, limits::ACTOR_QUEUE_MESSAGES_MAX));
        }
        let aggregate_actors = Arc::new(aggregate_actors);
        let mut shard_actors = Vec::with_capacity(arguments.shards.len());
        for (index, shard) in arguments.shards.into_iter().enumerate() {
            let state = ShardActorState {
                index: u32::try_from(index).expect("at most SHARDS_MAX shards"),
                shard,
                aggregate_actors: Arc::clone(&aggregate_actors),
                clock: Arc::clone(&arguments.clock),
            };
            let (actor, _) =
                Actor::spawn_linked(None, ShardActor, state, myself.get_cell()).await?;
            names.insert(actor.get_id(), (ActorKind::Shard, index));
            shard_actors.push(Mailbox::new(actor, limits::ACTOR_QUEUE_MESSAGES_MAX));
        }
        Ok(SupervisorState {
            names,
            children: Some(Children {
                shard_actors,
                aggregate_actors,
            }),
            health: arguments.health,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::TakeChildren(reply) => {
                let _ = reply.send(state.children.take());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, cause) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if state.health.stopping.load(Ordering::Acquire) {
                    return Ok(());
                }
                let reason = reason.unwrap_or_else(|| "no reason given".to_string());
                (cell, format!("stopped while the node runs ({reason})"))
            }
            _ => return Ok(()),
        };
        if let Some((kind, index)) = state.names.get(&cell.get_id()) {
            state.health.fail(*kind, *index, cause);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ingest::IngestError;
    use super::super::query::QueryError;
    use super::super::testing::{pageview, TestEngine, HOUR_MS, NOW_MS, PROJECT};
    use super::super::ShareRequest;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicked_shard_actor_is_recorded_counted_and_stops_the_work() {
        let node = TestEngine::open("supervisor").await.with_project().await;
        assert_eq!(node.engine.failure(), None);
        assert!(!node.engine.inject_shard_panic(u32::MAX), "no such shard");
        assert!(node.engine.inject_shard_panic(2));
        let failure = tokio::time::timeout(Duration::from_secs(30), node.engine.failed())
            .await
            .expect("the failure is recorded");
        assert_eq!(failure.actor, "shard actor 2");
        assert!(failure.cause.contains("injected panic"), "{failure}");
        assert_eq!(node.engine.failure(), Some(failure));
        let metrics = node.engine.metrics();
        assert_eq!(
            (
                metrics.shard_actor_failures,
                metrics.aggregate_actor_failures
            ),
            (1, 0)
        );
        let event = node.engine.validate(pageview("e-1", "v-1", 1));
        let refused = node.engine.ingest(vec![event]).await.unwrap_err();
        assert_eq!(refused, IngestError::ShuttingDown);
        let bucket = NOW_MS - NOW_MS % HOUR_MS;
        let share = ShareRequest {
            project: PROJECT.to_string(),
            experiment: "checkout".to_string(),
            from_ms: Some(bucket),
            to_ms: bucket + HOUR_MS,
            ..ShareRequest::default()
        };
        let error = node.engine.share(&share).await.unwrap_err();
        assert!(matches!(error, QueryError::Unavailable), "{error}");
    }
}
