//! The engine: shards visitors to session actors, keeps aggregates in
//! segment actors, and answers queries. `Engine` is the only entry point;
//! the HTTP layer talks to nothing else.
//!
//! Layout, from pure leaves to the actor shell:
//! - `contribution`: what a visitor adds to aggregates, and differences.
//! - `visitor`: one visitor's state and its contribution (SPEC §4).
//! - `shard`: all visitors of one shard.
//! - `sketch`, `segment`: the aggregates store.
//! - `query`: results and time series over aggregates.
//! - `mailbox`, `actors`: the ractor actors and their bounded queues.

pub mod actors;
pub mod contribution;
pub mod mailbox;
pub mod query;
pub mod segment;
pub mod shard;
pub mod sketch;
pub mod visitor;

use crate::clock::SharedClock;
use crate::event::{self, ProjectLookup, RejectReason, VisitorEvent};
use crate::hashing;
use crate::limits;
use crate::project::{ProjectConfig, ProjectError, ProjectRegistry, SettingsPatch};
use actors::{SegmentActor, SegmentMessage, SessionActor, SessionActorState, SessionMessage};
use mailbox::{Mailbox, MailboxError};
use query::{QueryError, Results, ResultsQuery};
use ractor::Actor;
use segment::SegmentStore;
use shard::{Outcome, ShardState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How the engine is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Virtual shards, fixed when the cluster is created.
    pub shards: u32,
    pub segment_actors: usize,
    /// How often session actors freeze closed sessions and forget expired
    /// visitors.
    pub maintenance_interval_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 256,
            segment_actors: 4,
            maintenance_interval_ms: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("shards must be in 1..={max}, got {shards}", max = limits::SHARDS_MAX)]
    InvalidShards { shards: u32 },
    #[error("segment actors must be in 1..=256, got {count}")]
    InvalidSegmentActors { count: usize },
    #[error("could not start an actor: {reason}")]
    Spawn { reason: String },
}

/// A results request as the API receives it: range and names unchecked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultsRequest {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub breakdown: Option<String>,
    pub keys: Vec<String>,
    pub baseline: Option<String>,
}

/// The answer to a results request, with the range it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsAnswer {
    pub from_ms: i64,
    pub to_ms: i64,
    pub breakdown: Option<Arc<str>>,
    pub results: Results,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesAnswer {
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_ms: i64,
    pub series: query::Series,
}

/// Counters and sizes of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    pub shards: u32,
    pub projects: usize,
    pub live_visitors: u64,
    /// Events held inside the horizon; frozen ones are folded away.
    pub retained_events: u64,
    pub segment_cells: u64,
    pub events_accepted: u64,
    pub events_duplicate: u64,
    pub events_rejected: u64,
    pub now_ms: i64,
}

#[derive(Debug, Default)]
struct EventCounters {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    config: EngineConfig,
    clock: SharedClock,
    projects: ProjectRegistry,
    sessions: Vec<Mailbox<SessionMessage>>,
    segments: Arc<Vec<Mailbox<SegmentMessage>>>,
    counters: EventCounters,
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
    pub async fn start(config: EngineConfig, clock: SharedClock) -> Result<Engine, EngineError> {
        if config.shards == 0 || config.shards > limits::SHARDS_MAX {
            return Err(EngineError::InvalidShards {
                shards: config.shards,
            });
        }
        if config.segment_actors == 0 || config.segment_actors > 256 {
            return Err(EngineError::InvalidSegmentActors {
                count: config.segment_actors,
            });
        }
        let mut segments = Vec::with_capacity(config.segment_actors);
        for _ in 0..config.segment_actors {
            let (actor, _) = Actor::spawn(None, SegmentActor, SegmentStore::default())
                .await
                .map_err(|error| EngineError::Spawn {
                    reason: error.to_string(),
                })?;
            segments.push(Mailbox::new(actor, limits::ACTOR_QUEUE_MESSAGES_MAX));
        }
        let segments = Arc::new(segments);
        let mut sessions = Vec::with_capacity(config.shards as usize);
        for _ in 0..config.shards {
            let state = SessionActorState {
                shard: ShardState::default(),
                segments: Arc::clone(&segments),
                clock: Arc::clone(&clock),
            };
            let (actor, _) = Actor::spawn(None, SessionActor, state)
                .await
                .map_err(|error| EngineError::Spawn {
                    reason: error.to_string(),
                })?;
            sessions.push(Mailbox::new(actor, limits::ACTOR_QUEUE_MESSAGES_MAX));
        }
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                clock,
                projects: ProjectRegistry::default(),
                sessions,
                segments,
                counters: EventCounters::default(),
            }),
        };
        engine.spawn_maintenance();
        Ok(engine)
    }

    /// Periodic freezing and retention. Holds only a weak reference so the
    /// task ends when the engine is dropped.
    fn spawn_maintenance(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = Duration::from_millis(self.inner.config.maintenance_interval_ms);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Engine { inner }.maintain();
            }
        });
    }

    /// Asks every actor to freeze and expire; skips actors that are busy
    /// (they get their turn at the next tick).
    pub fn maintain(&self) {
        for session in &self.inner.sessions {
            let _ = session.try_send(SessionMessage::Maintain { reply: None });
        }
        let now_ms = self.inner.clock.now_ms();
        for project in self.inner.projects.list() {
            for segment in self.inner.segments.iter() {
                let _ = segment.try_send(SegmentMessage::Expire {
                    project: Arc::clone(&project.name),
                    before_ms: now_ms - project.settings.retention_ms,
                });
            }
        }
    }

    /// Freezes and expires in every shard now, and returns when done. Used
    /// when a manual clock jumps, so tests observe a defined state.
    pub async fn maintain_now(&self) {
        let mut replies = Vec::with_capacity(self.inner.sessions.len());
        for session in &self.inner.sessions {
            let (reply, answer) = oneshot::channel();
            let message = SessionMessage::Maintain { reply: Some(reply) };
            if session.send(message).await.is_ok() {
                replies.push(answer);
            }
        }
        for answer in replies {
            let _ = answer.await;
        }
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

    pub fn create_project(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<Arc<ProjectConfig>, ProjectError> {
        self.inner.projects.create(name, patch)
    }

    /// Changes settings; returns once every shard has re-evaluated its
    /// visitors under them (when the change affects contributions).
    pub async fn configure_project(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<Arc<ProjectConfig>, ProjectError> {
        let (_, config) = self.inner.projects.configure(name, patch)?;
        let mut replies = Vec::with_capacity(self.inner.sessions.len());
        for session in &self.inner.sessions {
            let (reply, answer) = oneshot::channel();
            let message = SessionMessage::Reconfigure {
                config: Arc::clone(&config),
                reply,
            };
            if session.send(message).await.is_ok() {
                replies.push(answer);
            }
        }
        for answer in replies {
            let _ = answer.await;
        }
        Ok(config)
    }

    /// Validates one wire event at the node's current time.
    pub fn validate(&self, event: sessiondb_protocol::Event) -> Result<VisitorEvent, RejectReason> {
        event::validate(event, self.inner.as_ref(), self.inner.clock.now_ms())
    }

    /// Applies validated events (rejections pass through at their index)
    /// and answers one outcome per input, in order.
    pub async fn ingest(&self, events: Vec<Result<VisitorEvent, RejectReason>>) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(events.len());
        let mut per_shard: Vec<(Vec<usize>, Vec<VisitorEvent>)> = Vec::new();
        let mut shard_slot: std::collections::HashMap<u32, usize> =
            std::collections::HashMap::new();
        for (index, event) in events.into_iter().enumerate() {
            match event {
                Err(reason) => outcomes.push(Outcome::Rejected(reason)),
                Ok(event) => {
                    outcomes.push(Outcome::Accepted);
                    let shard = hashing::shard_of(
                        &event.project.name,
                        &event.visitor,
                        self.inner.config.shards,
                    );
                    let slot = *shard_slot.entry(shard).or_insert_with(|| {
                        per_shard.push((Vec::new(), Vec::new()));
                        per_shard.len() - 1
                    });
                    per_shard[slot].0.push(index);
                    per_shard[slot].1.push(event);
                }
            }
        }
        let shards: Vec<u32> = {
            let mut pairs: Vec<(u32, usize)> = shard_slot.into_iter().collect();
            pairs.sort_by_key(|(_, slot)| *slot);
            pairs.into_iter().map(|(shard, _)| shard).collect()
        };
        let sends = per_shard
            .into_iter()
            .zip(shards)
            .map(|((indexes, events), shard)| self.send_to_shard(shard, indexes, events));
        for (indexes, shard_outcomes) in futures::future::join_all(sends).await {
            for (index, outcome) in indexes.into_iter().zip(shard_outcomes) {
                outcomes[index] = outcome;
            }
        }
        self.count(&outcomes);
        outcomes
    }

    async fn send_to_shard(
        &self,
        shard: u32,
        indexes: Vec<usize>,
        events: Vec<VisitorEvent>,
    ) -> (Vec<usize>, Vec<Outcome>) {
        let overloaded = |count: usize| vec![Outcome::Rejected(RejectReason::Overloaded); count];
        let count = events.len();
        let (reply, answer) = oneshot::channel();
        let wait = Duration::from_millis(limits::INGEST_QUEUE_WAIT_MS);
        let message = SessionMessage::Ingest { events, reply };
        if self.inner.sessions[shard as usize]
            .send_within(message, wait)
            .await
            .is_err()
        {
            return (indexes, overloaded(count));
        }
        // Once queued, the shard will apply the events; waiting for its
        // answer without a bound keeps acknowledgements truthful.
        match answer.await {
            Ok(outcomes) => (indexes, outcomes),
            Err(_) => (indexes, overloaded(count)),
        }
    }

    fn count(&self, outcomes: &[Outcome]) {
        let counters = &self.inner.counters;
        for outcome in outcomes {
            let counter = match outcome {
                Outcome::Accepted => &counters.accepted,
                Outcome::Duplicate => &counters.duplicate,
                Outcome::Rejected(_) => &counters.rejected,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn segment_for(&self, project: &str, experiment: &str) -> &Mailbox<SegmentMessage> {
        let index = hashing::segment_of(project, experiment, self.inner.segments.len());
        &self.inner.segments[index]
    }

    /// Checks a results request and asks the experiment's segment actor.
    pub async fn results(
        &self,
        project: &str,
        experiment: &str,
        request: ResultsRequest,
    ) -> Result<ResultsAnswer, QueryError> {
        let config = self.project_config(project)?;
        let settings = &config.settings;
        let (from_ms, to_ms) = self
            .resolve_range(&config, experiment, request.from_ms, request.to_ms)
            .await?;
        let breakdown = match request.breakdown {
            Some(attribute) => Some(check_breakdown(settings, &attribute)?),
            None => None,
        };
        if request.keys.len() > limits::QUERY_KEYS_MAX {
            return Err(QueryError::TooManyKeys {
                count: request.keys.len(),
            });
        }
        let query = ResultsQuery {
            from_ms,
            to_ms,
            breakdown: breakdown.clone(),
            keys: request
                .keys
                .iter()
                .map(|key| Arc::from(key.as_str()))
                .collect(),
            baseline: request.baseline.as_deref().map(Arc::from),
        };
        let (reply, answer) = oneshot::channel();
        let message = SegmentMessage::Results {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            query,
            reply,
        };
        self.ask(self.segment_for(project, experiment), message, answer)
            .await?
            .map(|results| ResultsAnswer {
                from_ms,
                to_ms,
                breakdown,
                results,
            })
    }

    pub async fn time_series(
        &self,
        project: &str,
        experiment: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        interval_ms: Option<i64>,
    ) -> Result<SeriesAnswer, QueryError> {
        let config = self.project_config(project)?;
        let bucket_ms = config.settings.bucket_ms;
        let (from_ms, to_ms) = self
            .resolve_range(&config, experiment, from_ms, to_ms)
            .await?;
        let interval_ms = interval_ms.unwrap_or(bucket_ms);
        if interval_ms <= 0 || interval_ms % bucket_ms != 0 {
            return Err(QueryError::InvalidInterval {
                interval_ms,
                bucket_ms,
            });
        }
        let points = (to_ms - from_ms + interval_ms - 1) / interval_ms;
        if points > limits::TIMESERIES_POINTS_MAX {
            return Err(QueryError::TooManyPoints { points });
        }
        let (reply, answer) = oneshot::channel();
        let message = SegmentMessage::TimeSeries {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            from_ms,
            to_ms,
            interval_ms,
            reply,
        };
        let series = self
            .ask(self.segment_for(project, experiment), message, answer)
            .await?
            .ok_or_else(|| QueryError::UnknownExperiment {
                project: project.to_string(),
                experiment: experiment.to_string(),
            })?;
        Ok(SeriesAnswer {
            from_ms,
            to_ms,
            interval_ms,
            series,
        })
    }

    /// Experiments of a project with their earliest bucket, sorted by name.
    pub async fn experiments(
        &self,
        project: &str,
    ) -> Result<Vec<(Arc<str>, Option<i64>)>, QueryError> {
        let config = self.project_config(project)?;
        let mut experiments = Vec::new();
        for segment in self.inner.segments.iter() {
            let (reply, answer) = oneshot::channel();
            let message = SegmentMessage::Experiments {
                project: Arc::clone(&config.name),
                reply,
            };
            experiments.extend(self.ask(segment, message, answer).await?);
        }
        experiments.sort();
        Ok(experiments)
    }

    fn project_config(&self, project: &str) -> Result<Arc<ProjectConfig>, QueryError> {
        self.inner
            .projects
            .get(project)
            .ok_or_else(|| QueryError::UnknownProject {
                project: project.to_string(),
            })
    }

    /// Defaults and checks a query range: aligned to buckets, ordered,
    /// bounded in size.
    async fn resolve_range(
        &self,
        config: &ProjectConfig,
        experiment: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<(i64, i64), QueryError> {
        let settings = &config.settings;
        let to_ms = to_ms
            .unwrap_or_else(|| settings.bucket_of(self.inner.clock.now_ms()) + settings.bucket_ms);
        let from_ms = match from_ms {
            Some(from_ms) => from_ms,
            None => self
                .experiments(&config.name)
                .await?
                .into_iter()
                .find(|(name, _)| **name == *experiment)
                .and_then(|(_, first)| first)
                .unwrap_or(to_ms - settings.bucket_ms)
                .min(to_ms - settings.bucket_ms),
        };
        check_range(settings.bucket_ms, from_ms, to_ms)?;
        Ok((from_ms, to_ms))
    }

    async fn ask<T>(
        &self,
        mailbox: &Mailbox<SegmentMessage>,
        message: SegmentMessage,
        answer: oneshot::Receiver<T>,
    ) -> Result<T, QueryError> {
        let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
        mailbox
            .send_within(message, wait)
            .await
            .map_err(|_: MailboxError| QueryError::Unavailable)?;
        tokio::time::timeout(wait, answer)
            .await
            .map_err(|_| QueryError::Unavailable)?
            .map_err(|_| QueryError::Unavailable)
    }

    pub async fn status(&self) -> EngineStatus {
        let (mut live_visitors, mut retained_events) = (0_u64, 0_u64);
        for session in &self.inner.sessions {
            let (reply, answer) = oneshot::channel();
            let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
            if session
                .send_within(SessionMessage::Sizes { reply }, wait)
                .await
                .is_ok()
            {
                let (visitors, events) = answer.await.unwrap_or((0, 0));
                live_visitors += visitors as u64;
                retained_events += events as u64;
            }
        }
        let mut segment_cells = 0_u64;
        for segment in self.inner.segments.iter() {
            let (reply, answer) = oneshot::channel();
            if let Ok(count) = self
                .ask(segment, SegmentMessage::CellCount { reply }, answer)
                .await
            {
                segment_cells += count as u64;
            }
        }
        let counters = &self.inner.counters;
        EngineStatus {
            shards: self.inner.config.shards,
            projects: self.inner.projects.len(),
            live_visitors,
            retained_events,
            segment_cells,
            events_accepted: counters.accepted.load(Ordering::Relaxed),
            events_duplicate: counters.duplicate.load(Ordering::Relaxed),
            events_rejected: counters.rejected.load(Ordering::Relaxed),
            now_ms: self.inner.clock.now_ms(),
        }
    }

    /// Stops every actor. Messages already queued are dropped with their
    /// reply channels, so waiting requests see an error, not a hang.
    pub fn shutdown(&self) {
        for session in &self.inner.sessions {
            session.stop();
        }
        for segment in self.inner.segments.iter() {
            segment.stop();
        }
    }
}

fn check_breakdown(
    settings: &crate::project::Settings,
    attribute: &str,
) -> Result<Arc<str>, QueryError> {
    settings
        .breakdown_attributes
        .iter()
        .find(|name| ***name == *attribute)
        .cloned()
        .ok_or_else(|| QueryError::UnknownBreakdown {
            attribute: attribute.to_string(),
            available: settings
                .breakdown_attributes
                .iter()
                .map(|name| name.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn check_range(bucket_ms: i64, from_ms: i64, to_ms: i64) -> Result<(), QueryError> {
    if from_ms % bucket_ms != 0 || to_ms % bucket_ms != 0 {
        return Err(QueryError::UnalignedRange {
            from_ms,
            to_ms,
            bucket_ms,
        });
    }
    if from_ms >= to_ms {
        return Err(QueryError::InvalidRange { from_ms, to_ms });
    }
    let buckets = (to_ms - from_ms) / bucket_ms;
    if buckets > limits::QUERY_BUCKETS_MAX {
        return Err(QueryError::TooManyBuckets { buckets });
    }
    Ok(())
}
