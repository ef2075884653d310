//! The engine: routes visitors' events to shard actors, keeps aggregates
//! in aggregate actors, and computes this node's share of queries.
//! `Engine` is the only entry point; the cluster and HTTP layers talk to
//! nothing else. The engine knows nothing of the cluster: which shards it
//! owns (`handoff::ShardRole`) and whose aggregates it holds
//! (`stores::StoreCoverage`) are its own state, which `cluster` drives.
//!
//! Layout, from pure leaves to the actor shell:
//! - `contribution`: what a visitor adds to aggregates, and differences.
//! - `visitor`: one visitor's state and its contribution
//!   (`docs/semantics.md`).
//! - `shard`: all visitors of one shard.
//! - `sketch`, `aggregates`: the aggregate store.
//! - `query`: results and time series over aggregates (pure).
//! - `mailbox`, `actors`: the ractor actors and their bounded queues.
//! - `ingest` (the sequencer), `projects`, `share` (this node's share of
//!   a query), `status`: what `Engine` does, one job per file.
//! - `handoff`, `stores`, `audit`: the engine's half of shard moves, node
//!   removals and the chaos checkers' read.
//! - `durability`: recovery and checkpoints.
//! - `memory`: the memory account for the memory bench.

pub mod actors;
pub mod aggregates;
pub mod audit;
pub mod cardinality;
pub mod contribution;
pub mod durability;
pub mod group;
#[cfg(test)]
mod group_tests;
pub mod handoff;
pub mod ingest;
pub mod journal;
pub mod mailbox;
pub mod memory;
#[cfg(test)]
pub(crate) mod oracle_tests;
pub mod projects;
pub mod query;
pub mod shard;
pub mod share;
pub mod sketch;
pub mod status;
pub mod stores;
pub mod supervisor;
#[cfg(test)]
mod testing;
pub mod visitor;

pub use ingest::IngestError;
pub use share::{
    LocalShare, ResultsAnswer, ResultsRequest, SeriesAnswer, SeriesRequest, ShareRequest,
};
pub use status::{EngineMetrics, EngineStatus};

use crate::clock::SharedClock;
use crate::event::ProjectLookup;
use crate::limits;
use crate::project::{ProjectConfig, ProjectRegistry};
use actors::{AggregateMessage, ShardMessage};
use aggregates::AggregateStore;
use mailbox::Mailbox;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use shard::ShardState;
use status::EventCounters;
use std::sync::Arc;
use std::time::Duration;
use supervisor::{ActorFailure, Health, Supervisor, SupervisorArguments, SupervisorMessage};

/// How the engine is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Virtual shards, fixed when the cluster is created.
    pub shards: u32,
    /// Aggregate actors (`--segment-actors`, the flag's historical name).
    pub aggregate_actors: usize,
    /// How often shard actors freeze closed sessions and forget expired
    /// visitors.
    pub maintenance_interval_ms: u64,
    /// How often a checkpoint is taken.
    pub checkpoint_interval_ms: u64,
    /// A checkpoint is also taken once the log grew by this many bytes
    /// since the last one (0: only by time), so recovery's replay stays
    /// short under heavy ingest (`durability`).
    pub checkpoint_log_bytes_max: u64,
    /// How long an ingest call waits for room (sequencer, shard queues,
    /// the log's backlog) before it fails with `Overloaded`.
    pub ingest_queue_wait_ms: u64,
    /// Most cell-buckets one query may touch (`QueryError::TooExpensive`).
    pub query_cost_max: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 256,
            aggregate_actors: 4,
            maintenance_interval_ms: 10_000,
            checkpoint_interval_ms: 60_000,
            checkpoint_log_bytes_max: limits::CHECKPOINT_LOG_BYTES_MAX_DEFAULT,
            ingest_queue_wait_ms: limits::INGEST_QUEUE_WAIT_MS_DEFAULT,
            query_cost_max: limits::QUERY_COST_MAX_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("shards must be in 1..={max}, got {shards}", max = limits::SHARDS_MAX)]
    InvalidShards { shards: u32 },
    #[error("aggregate actors (--segment-actors) must be in 1..={max}, got {count}", max = limits::AGGREGATE_ACTORS_MAX)]
    InvalidAggregateActors { count: usize },
    #[error("could not start an actor: {reason}")]
    Spawn { reason: String },
    #[error("cannot open the log in {path}")]
    Log {
        path: std::path::PathBuf,
        #[source]
        source: crate::log::LogError,
    },
    #[error("cannot sync the data directory {path}")]
    DataDirectory {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint store")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("cannot decode {what} of the checkpoint or log")]
    Codec {
        what: String,
        #[source]
        source: journal::CodecError,
    },
    #[error("the data directory was created with {found} {what}, but the node is configured with {configured}; start with --{flag} {found}")]
    Mismatch {
        what: &'static str,
        flag: &'static str,
        found: usize,
        configured: usize,
    },
}

#[derive(Debug)]
struct Inner {
    config: EngineConfig,
    clock: SharedClock,
    projects: ProjectRegistry,
    shard_actors: Vec<Mailbox<ShardMessage>>,
    aggregate_actors: Arc<Vec<Mailbox<AggregateMessage>>>,
    /// Owns the actors above (`supervisor`).
    supervisor: ActorRef<SupervisorMessage>,
    health: Arc<Health>,
    counters: EventCounters,
    storage: Storage,
    /// Held while a change is given its place in the log and queued at the
    /// actors, so every shard applies its records in log order (replay
    /// then reaches the same state). A checkpoint holds it only to queue
    /// its requests at their place in the log.
    sequencer: tokio::sync::Mutex<()>,
    /// One checkpoint at a time.
    checkpointing: tokio::sync::Mutex<()>,
    /// How much log the last checkpoint left to replay (volume trigger).
    log_volume: durability::LogVolume,
    /// This node's role for each shard; read on every ingest, written when
    /// ownership changes.
    roles: std::sync::RwLock<Vec<handoff::ShardRole>>,
    /// Whose aggregates the aggregate stores hold (`stores`); changed only
    /// under the sequencer, so a checkpoint sees it with the stores.
    coverage: std::sync::Mutex<stores::StoreCoverage>,
    /// What recovery repaired (a cut log tail, skipped checkpoints): set
    /// once by `durability::open`, reported by `/v1/status` and `/metrics`.
    recovery_notes: std::sync::Mutex<durability::RecoveryNotes>,
    /// The names each project has here, held to the cardinality limits by
    /// `Engine::ingest` before events are logged (`cardinality`).
    names: std::sync::Mutex<cardinality::NameSets>,
}

/// Where the engine keeps what it acknowledged.
#[derive(Debug)]
pub struct Storage {
    pub log: Arc<crate::log::Log>,
    pub checkpoints: Arc<dyn crate::checkpoint::CheckpointStore>,
}

impl ProjectLookup for Inner {
    fn project(&self, name: &str) -> Option<Arc<ProjectConfig>> {
        self.projects.get(name)
    }
}

/// A handle to the running engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts the actors with restored state (empty for a new node).
    /// Recovery (`durability::open`) is the only caller.
    async fn start(
        config: EngineConfig,
        clock: SharedClock,
        storage: Storage,
        restored: durability::Restored,
    ) -> Result<Engine, EngineError> {
        if config.shards == 0 || config.shards > limits::SHARDS_MAX {
            return Err(EngineError::InvalidShards {
                shards: config.shards,
            });
        }
        if config.aggregate_actors == 0 || config.aggregate_actors > limits::AGGREGATE_ACTORS_MAX {
            return Err(EngineError::InvalidAggregateActors {
                count: config.aggregate_actors,
            });
        }
        let durability::Restored {
            projects,
            mut shards,
            mut aggregate_stores,
            coverage,
            ..
        } = restored;
        shards.resize_with(config.shards as usize, ShardState::default);
        aggregate_stores.resize_with(config.aggregate_actors, AggregateStore::default);
        let mut names = cardinality::NameSets::new(cardinality::CardinalityLimits::default());
        for store in &aggregate_stores {
            names.observe_store(store);
        }
        for shard in &shards {
            names.observe_shard(shard);
        }
        let health = Arc::new(Health::default());
        let arguments = SupervisorArguments {
            shards,
            stores: aggregate_stores,
            clock: Arc::clone(&clock),
            health: Arc::clone(&health),
        };
        let spawn_error = |reason: String| EngineError::Spawn { reason };
        let (supervisor, _) = Actor::spawn(None, Supervisor, arguments)
            .await
            .map_err(|error| spawn_error(error.to_string()))?;
        let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
        let children = match supervisor
            .call(SupervisorMessage::TakeChildren, Some(wait))
            .await
        {
            Ok(CallResult::Success(Some(children))) => children,
            _ => {
                return Err(spawn_error(
                    "the supervisor did not hand over its actors".into(),
                ))
            }
        };
        let registry = ProjectRegistry::default();
        for project in projects {
            registry.install(Arc::new(project));
        }
        let shard_count = config.shards as usize;
        Ok(Engine {
            inner: Arc::new(Inner {
                config,
                clock,
                projects: registry,
                shard_actors: children.shard_actors,
                aggregate_actors: children.aggregate_actors,
                supervisor,
                health,
                counters: EventCounters::default(),
                storage,
                sequencer: tokio::sync::Mutex::new(()),
                checkpointing: tokio::sync::Mutex::new(()),
                log_volume: durability::LogVolume::default(),
                // A node starts owning every shard (a single-node cluster);
                // placement tells it otherwise.
                roles: std::sync::RwLock::new(vec![
                    handoff::ShardRole::Owner { epoch: 1 };
                    shard_count
                ]),
                coverage: std::sync::Mutex::new(coverage),
                recovery_notes: std::sync::Mutex::new(durability::RecoveryNotes::default()),
                names: std::sync::Mutex::new(names),
            }),
        })
    }

    /// Periodic freezing and retention. Holds only a weak reference so the
    /// task ends when the engine is dropped.
    fn spawn_maintenance(&self) {
        let interval_ms = self.inner.config.maintenance_interval_ms;
        self.spawn_periodic(interval_ms, |engine| async move { engine.maintain() });
    }

    /// Runs `task` every `interval_ms` (not at once) until the engine is
    /// dropped: the task holds only a weak reference between runs.
    fn spawn_periodic<F, Fut>(&self, interval_ms: u64, task: F)
    where
        F: Fn(Engine) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                task(Engine { inner }).await;
            }
        });
    }

    /// Asks every actor to freeze and expire; skips actors that are busy
    /// (they get their turn at the next tick).
    pub fn maintain(&self) {
        for shard in &self.inner.shard_actors {
            let _ = shard.try_send(ShardMessage::Maintain { reply: None });
        }
        let now_ms = self.inner.clock.now_ms();
        for project in self.inner.projects.list() {
            for actor in self.inner.aggregate_actors.iter() {
                let _ = actor.try_send(AggregateMessage::Expire {
                    project: Arc::clone(&project.name),
                    before_ms: now_ms - project.settings.retention_ms,
                });
            }
        }
    }

    /// Freezes and expires in every shard now, and returns when done. Used
    /// when a manual clock jumps, so tests observe a defined state.
    pub async fn maintain_now(&self) {
        let wait = Duration::from_millis(limits::ACTOR_APPLY_WAIT_MS);
        let mut pending = Vec::with_capacity(self.inner.shard_actors.len());
        for shard in &self.inner.shard_actors {
            let build = |reply| ShardMessage::Maintain { reply: Some(reply) };
            if let Ok(answer) = shard.request(build, wait).await {
                pending.push(answer);
            }
        }
        for answer in pending {
            let _ = answer.answer().await;
        }
    }

    /// What the last recovery repaired.
    pub fn recovery_notes(&self) -> durability::RecoveryNotes {
        self.inner
            .recovery_notes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn set_recovery_notes(&self, notes: durability::RecoveryNotes) {
        *self
            .inner
            .recovery_notes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = notes;
    }

    /// The first actor failure, if one failed (`supervisor`): the node
    /// then refuses work and stops.
    pub fn failure(&self) -> Option<ActorFailure> {
        self.inner.health.failure()
    }

    /// Completes once an actor failed.
    pub async fn failed(&self) -> ActorFailure {
        self.inner.health.wait_failed().await;
        self.failure()
            .expect("a failure is recorded before it is signalled")
    }

    /// Makes the actor of `shard` panic: the hidden fault route's way to
    /// exercise supervision (`--fault-actor-panic`). Answers false for a
    /// shard that does not exist.
    pub fn inject_shard_panic(&self, shard: u32) -> bool {
        self.inner
            .shard_actors
            .get(shard as usize)
            .is_some_and(|actor| actor.try_send(ShardMessage::Panic).is_ok())
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    pub fn shards(&self) -> u32 {
        self.inner.config.shards
    }

    pub fn projects(&self) -> &ProjectRegistry {
        &self.inner.projects
    }

    /// Stops every actor and their supervisor. Messages already queued are
    /// dropped with their reply ports, so waiting requests see an error,
    /// not a hang.
    pub fn shutdown(&self) {
        self.inner.health.stop();
        for shard in &self.inner.shard_actors {
            shard.stop();
        }
        for actor in self.inner.aggregate_actors.iter() {
            actor.stop();
        }
        self.inner.supervisor.stop(None);
    }
}
