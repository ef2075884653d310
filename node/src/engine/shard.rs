//! The state of one shard: every visitor of every project that hashes to it.
//! Pure and synchronous; the shard actor owns one `ShardState` and feeds it
//! messages.

use super::aggregates::AggregateBatch;
use super::contribution::{difference, Contribution, Difference};
use super::visitor::{Insert, Visitor};
use crate::event::{RejectReason, VisitorEvent};
use crate::hashing;
use crate::project::ProjectConfig;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What became of one event sent to a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Rejected(RejectReason),
}

/// Collects the changes a shard produces, per aggregate actor and project.
#[derive(Debug)]
pub struct DeltaSink {
    segment_count: usize,
    batches: HashMap<(usize, Arc<str>), AggregateBatch>,
}

impl DeltaSink {
    pub fn new(segment_count: usize) -> Self {
        assert!(segment_count > 0);
        DeltaSink {
            segment_count,
            batches: HashMap::new(),
        }
    }

    fn push(&mut self, project: &ProjectConfig, visitor_hash: u64, change: Difference) {
        self.push_by_experiment(
            project,
            change.entries,
            |entry| &entry.experiment,
            |batch, entry| batch.entries.push(entry),
        );
        self.push_by_experiment(
            project,
            change.active_added,
            |cell| &cell.experiment,
            |batch, cell| batch.active.push((cell, visitor_hash)),
        );
    }

    /// `items` are sorted by experiment, so each run of one experiment finds
    /// its batch once: hashing the names per item was a tenth of the
    /// engine's time.
    fn push_by_experiment<T>(
        &mut self,
        project: &ProjectConfig,
        items: Vec<T>,
        experiment_of: impl Fn(&T) -> &Arc<str>,
        mut add: impl FnMut(&mut AggregateBatch, T),
    ) {
        let mut items = items.into_iter().peekable();
        while let Some(first) = items.next() {
            let experiment = Arc::clone(experiment_of(&first));
            let batch = self.batch(project, &experiment);
            add(batch, first);
            while let Some(item) = items.next_if(|item| *experiment_of(item) == experiment) {
                add(batch, item);
            }
        }
    }

    fn batch(&mut self, project: &ProjectConfig, experiment: &str) -> &mut AggregateBatch {
        let segment = hashing::aggregate_actor_of(&project.name, experiment, self.segment_count);
        self.batches
            .entry((segment, Arc::clone(&project.name)))
            .or_insert_with(|| AggregateBatch {
                project: Arc::clone(&project.name),
                precision: project.settings.hll_precision,
                bucket_ms: project.settings.bucket_ms,
                ..AggregateBatch::default()
            })
    }

    /// The batches collected so far, by segment index.
    pub fn drain(&mut self) -> Vec<(usize, AggregateBatch)> {
        self.batches
            .drain()
            .map(|((segment, _), batch)| (segment, batch))
            .filter(|(_, batch)| !batch.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ProjectShard {
    config: Arc<ProjectConfig>,
    visitors: HashMap<Box<str>, Visitor>,
    /// Derived, so not encoded: rebuilt by `ShardState::share_names` after
    /// decoding.
    #[serde(skip)]
    names: NameTable,
}

/// The name table is a cache of what the visitors hold: equal states are
/// equal whatever it holds.
impl PartialEq for ProjectShard {
    fn eq(&self, other: &ProjectShard) -> bool {
        self.config == other.config && self.visitors == other.visitors
    }
}

/// One copy of each name (conversion keys, attribute names and values,
/// experiments, variations) that a project's visitors hold. Events arrive
/// with names of their own — validation allocates them per event, and so
/// does decoding a checkpoint or a log record — and a copy per event cost
/// ~360 bytes per visitor (docs/benchmarks.md, "Memory per live visitor").
/// Bounded by what the visitors hold: `forget_unused` (at maintenance)
/// drops the names no event or frozen summary holds any more.
#[derive(Debug, Clone, Default)]
struct NameTable {
    names: HashSet<Arc<str>>,
}

impl NameTable {
    /// Points `name` at the table's copy, adding it when new.
    fn share(&mut self, name: &mut Arc<str>) {
        match self.names.get(&**name) {
            Some(held) => {
                if !Arc::ptr_eq(held, name) {
                    *name = Arc::clone(held);
                }
            }
            None => {
                self.names.insert(Arc::clone(name));
            }
        }
    }

    fn forget_unused(&mut self) {
        // Held by the table alone: no event or summary uses it.
        self.names.retain(|name| Arc::strong_count(name) > 1);
    }
}

/// Every visitor of one shard.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardState {
    projects: HashMap<Arc<str>, ProjectShard>,
}

impl ShardState {
    pub fn visitor_count(&self) -> usize {
        self.projects
            .values()
            .map(|project| project.visitors.len())
            .sum()
    }

    /// Adds the bytes of every visitor table to `account`.
    pub fn account_memory(&self, account: &mut super::memory::MemoryAccount) {
        for project in self.projects.values() {
            account.add_visitors(&project.visitors);
        }
    }

    /// Names of the projects with visitors here.
    pub fn project_names(&self) -> Vec<Arc<str>> {
        self.projects.keys().cloned().collect()
    }

    /// Events held inside the horizon (not yet frozen).
    pub fn retained_event_count(&self) -> usize {
        self.projects
            .values()
            .flat_map(|project| project.visitors.values())
            .map(|visitor| visitor.events().len())
            .sum()
    }

    /// Every visitor of every project here, for rebuilding the
    /// cardinality limits' name sets on recovery (`engine::cardinality`).
    pub fn visitors(&self) -> impl Iterator<Item = (&Arc<str>, &super::visitor::Visitor)> {
        self.projects.iter().flat_map(|(name, project)| {
            project
                .visitors
                .values()
                .map(move |visitor| (name, visitor))
        })
    }

    /// Every retained event as (project, visitor, event id), for the
    /// chaos tests' audit (`engine::audit`). Frozen sessions keep no ids.
    pub fn retained_event_ids(&self) -> Vec<(Arc<str>, Box<str>, Box<str>)> {
        let mut ids = Vec::with_capacity(self.retained_event_count());
        for (project_name, project) in &self.projects {
            for (visitor_id, visitor) in &project.visitors {
                for event in visitor.events() {
                    ids.push((
                        Arc::clone(project_name),
                        visitor_id.clone(),
                        event.id.clone(),
                    ));
                }
            }
        }
        ids
    }

    /// Applies events in order; answers one outcome per event.
    pub fn apply(
        &mut self,
        now_ms: i64,
        events: Vec<VisitorEvent>,
        sink: &mut DeltaSink,
    ) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Accepted; events.len()];
        for (project_name, visitor_id, events) in group_by_visitor(events) {
            let config = newest_config(&events);
            self.reconfigure(&config, sink);
            let project = self
                .projects
                .get_mut(&project_name)
                .expect("reconfigure created it");
            let config = Arc::clone(&project.config);
            let mut events = events;
            for (_, event) in &mut events {
                for name in event.event.names_mut() {
                    project.names.share(name);
                }
            }
            let visitor = project.visitors.entry(visitor_id.clone()).or_default();
            let accepted_any = apply_to_visitor(
                &config,
                now_ms,
                &visitor_id,
                visitor,
                events,
                &mut outcomes,
                sink,
            );
            if !accepted_any && visitor.is_empty() {
                project.visitors.remove(&visitor_id);
            }
        }
        outcomes
    }

    /// Brings a project to `config`, re-evaluating every visitor when the
    /// change affects contributions. Older versions are ignored.
    pub fn reconfigure(&mut self, config: &Arc<ProjectConfig>, sink: &mut DeltaSink) {
        let project = self
            .projects
            .entry(Arc::clone(&config.name))
            .or_insert_with(|| ProjectShard {
                config: Arc::clone(config),
                visitors: HashMap::new(),
                names: NameTable::default(),
            });
        if project.config.version >= config.version {
            return;
        }
        let previous = std::mem::replace(&mut project.config, Arc::clone(config));
        if !previous.settings.changes_contributions(&config.settings) {
            return;
        }
        for (visitor_id, visitor) in &project.visitors {
            let before = visitor.contribute(&previous.settings);
            let after = visitor.contribute(&config.settings);
            push_difference(config, visitor_id, &before, &after, sink);
        }
    }

    /// Freezes what can no longer change and forgets visitors idle for
    /// longer than their project's retention.
    pub fn maintain(&mut self, now_ms: i64) {
        for project in self.projects.values_mut() {
            let settings = &project.config.settings;
            let forget_before_ms = now_ms - settings.retention_ms;
            project.visitors.retain(|_, visitor| {
                visitor.freeze(settings, now_ms);
                // Idle visitors give back their vectors' unused room.
                visitor.shrink_to_fit();
                visitor.last_event_ms() >= forget_before_ms
            });
            project.names.forget_unused();
        }
    }

    /// Points every name the visitors hold at one copy per project; for a
    /// state just decoded (a checkpoint, a shard moved in), whose names are
    /// all copies of their own.
    pub fn share_names(&mut self) {
        for project in self.projects.values_mut() {
            let ProjectShard {
                visitors, names, ..
            } = project;
            for visitor in visitors.values_mut() {
                for name in visitor.names_mut() {
                    names.share(name);
                }
            }
        }
    }
}

/// The events of each visitor, in arrival order with their indexes, so
/// each visitor is re-evaluated once per message. Groups are found through
/// borrowed names, so a visitor's id is copied once per message, not once
/// per event.
fn group_by_visitor(events: Vec<VisitorEvent>) -> Vec<(Arc<str>, Box<str>, VisitorEvents)> {
    let mut group_indexes = Vec::with_capacity(events.len());
    let group_count = {
        let mut group_of: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
        for event in &events {
            let next = group_of.len();
            let group = *group_of
                .entry((&event.project.name, &event.visitor))
                .or_insert(next);
            group_indexes.push(group);
        }
        group_of.len()
    };
    let mut groups: Vec<(Arc<str>, Box<str>, VisitorEvents)> = Vec::with_capacity(group_count);
    for (index, (event, group)) in events.into_iter().zip(group_indexes).enumerate() {
        // Groups are numbered in order of first appearance.
        if group == groups.len() {
            groups.push((
                Arc::clone(&event.project.name),
                event.visitor.clone(),
                Vec::new(),
            ));
        }
        groups[group].2.push((index, event));
    }
    groups
}

/// One visitor's events with their indexes in the message.
type VisitorEvents = Vec<(usize, VisitorEvent)>;

fn newest_config(events: &[(usize, VisitorEvent)]) -> Arc<ProjectConfig> {
    let newest = events
        .iter()
        .map(|(_, event)| &event.project)
        .max_by_key(|config| config.version)
        .expect("grouped events are never empty");
    Arc::clone(newest)
}

fn apply_to_visitor(
    config: &Arc<ProjectConfig>,
    now_ms: i64,
    visitor_id: &str,
    visitor: &mut Visitor,
    events: Vec<(usize, VisitorEvent)>,
    outcomes: &mut [Outcome],
    sink: &mut DeltaSink,
) -> bool {
    let settings = &config.settings;
    visitor.freeze(settings, now_ms);
    let horizon_ms = now_ms - settings.allowed_lateness_ms;
    let mut indexes = Vec::with_capacity(events.len());
    let mut inserted = Vec::with_capacity(events.len());
    for (index, event) in events {
        // Validation checked the horizon already, against an earlier "now";
        // this check is the one that guarantees frozen sessions stay frozen.
        if event.event.ts_ms < horizon_ms {
            outcomes[index] = Outcome::Rejected(RejectReason::TooLate {
                ts_ms: event.event.ts_ms,
                now_ms,
                allowed_lateness_ms: settings.allowed_lateness_ms,
            });
            continue;
        }
        indexes.push(index);
        inserted.push(event.event);
    }
    let (inserts, change) = visitor.insert_all(settings, inserted);
    let mut accepted_any = false;
    for (index, insert) in indexes.into_iter().zip(inserts) {
        outcomes[index] = match insert {
            Insert::Accepted => {
                accepted_any = true;
                Outcome::Accepted
            }
            Insert::Duplicate => Outcome::Duplicate,
            Insert::Full => Outcome::Rejected(RejectReason::VisitorEventLimit),
        };
    }
    if !change.is_empty() {
        sink.push(
            config,
            hashing::sketch_hash_of(&config.name, visitor_id),
            change,
        );
    }
    accepted_any
}

fn push_difference(
    config: &ProjectConfig,
    visitor_id: &str,
    before: &Contribution,
    after: &Contribution,
    sink: &mut DeltaSink,
) {
    let change = difference(before, after);
    if change.is_empty() {
        return;
    }
    sink.push(
        config,
        hashing::sketch_hash_of(&config.name, visitor_id),
        change,
    );
}
