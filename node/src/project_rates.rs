//! Events accepted per project on this node, since it started: the
//! console's per-project event rates (`docs/console.md`) and the
//! `sessiondb_project_events_total{project=…}` metric.
//!
//! Kept cheap on the ingest path: a batch is first reduced to runs of
//! consecutive events of one project (a batch is nearly always one
//! project), so the shared map (a `DashMap`: every ingest request of every
//! worker thread counts here) is touched once per run, not per event, and
//! the project name is cloned (an `Arc`) once per run. The map holds at most
//! `PROJECT_COUNTERS_MAX` projects; events of projects beyond that are
//! counted together in `overflow_events`, so the map cannot grow without
//! bound even if projects come and go.
//!
//! The counters are this node's: in a cluster an event is accepted only by
//! its shard's owner, so the cluster's count of a project is the sum over
//! the members. They restart at zero with the process, as Prometheus
//! counters may.

use crate::engine::shard::Outcome;
use crate::event::{RejectReason, VisitorEvent};
use crate::limits;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Most projects counted one by one; equal to the most projects a node
/// holds, so in practice every project has its own counter.
pub const PROJECT_COUNTERS_MAX: usize = limits::PROJECTS_MAX;

/// Accepted events per project (see the module documentation).
#[derive(Debug, Default)]
pub struct ProjectEventCounters {
    counts: DashMap<Arc<str>, u64>,
    /// Projects in `counts`; a project's slot is reserved before its entry
    /// is made, so the bound holds exactly.
    projects: AtomicUsize,
    overflow_events: AtomicU64,
}

/// A run of consecutive batch positions whose valid events all belong to
/// one project (invalid events in between do not break a run: they are
/// never accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    project: Arc<str>,
    start: usize,
    end: usize,
}

/// The projects of a batch's events, by position, taken before the batch
/// is handed to the engine.
#[derive(Debug, Default)]
pub struct BatchProjects {
    runs: Vec<Run>,
}

impl BatchProjects {
    pub fn of(events: &[Result<VisitorEvent, RejectReason>]) -> BatchProjects {
        let mut runs: Vec<Run> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let Ok(event) = event else { continue };
            match runs.last_mut() {
                Some(run) if *run.project == *event.project.name => run.end = index + 1,
                _ => runs.push(Run {
                    project: Arc::clone(&event.project.name),
                    start: index,
                    end: index + 1,
                }),
            }
        }
        BatchProjects { runs }
    }
}

impl ProjectEventCounters {
    /// Counts the accepted events of a batch; `outcomes` are the engine's
    /// answers, by position, for the batch `projects` was taken from.
    pub fn record(&self, projects: &BatchProjects, outcomes: &[Outcome]) {
        if projects.runs.is_empty() {
            return;
        }
        for run in &projects.runs {
            let accepted = outcomes
                .get(run.start..run.end.min(outcomes.len()))
                .unwrap_or_default()
                .iter()
                .filter(|outcome| matches!(outcome, Outcome::Accepted))
                .count() as u64;
            if accepted == 0 {
                continue;
            }
            match self.counts.entry(Arc::clone(&run.project)) {
                dashmap::Entry::Occupied(mut entry) => *entry.get_mut() += accepted,
                dashmap::Entry::Vacant(entry) => {
                    let reserved = self.projects.fetch_update(
                        Ordering::AcqRel,
                        Ordering::Acquire,
                        |projects| (projects < PROJECT_COUNTERS_MAX).then_some(projects + 1),
                    );
                    match reserved {
                        Ok(_) => {
                            entry.insert(accepted);
                        }
                        Err(_) => {
                            self.overflow_events.fetch_add(accepted, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }

    /// Every counted project and its accepted events, by name.
    pub fn snapshot(&self) -> Vec<(Arc<str>, u64)> {
        let mut counts: Vec<(Arc<str>, u64)> = self
            .counts
            .iter()
            .map(|entry| (Arc::clone(entry.key()), *entry.value()))
            .collect();
        counts.sort_unstable();
        counts
    }

    /// `sessiondb_project_events_total{project}` and the overflow counter
    /// (`crate::metrics`).
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        let samples = self
            .snapshot()
            .into_iter()
            .map(|(project, count)| (project.to_string(), count));
        crate::metrics::labeled_counter(
            registry,
            "sessiondb_project_events_total",
            "Events accepted by this node's ingest, per project; a project appears once it has an accepted event.",
            "project",
            samples,
        );
        crate::metrics::counter(
            registry,
            "sessiondb_project_events_overflow_total",
            "Accepted events of projects beyond the per-project counters' bound (PROJECT_COUNTERS_MAX).",
            self.overflow_events(),
        );
    }

    /// Accepted events of projects beyond `PROJECT_COUNTERS_MAX`.
    pub fn overflow_events(&self) -> u64 {
        self.overflow_events.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(project: &str, start: usize, end: usize) -> Run {
        Run {
            project: Arc::from(project),
            start,
            end,
        }
    }

    fn counters_of(runs: Vec<Run>, outcomes: &[Outcome]) -> ProjectEventCounters {
        let counters = ProjectEventCounters::default();
        counters.record(&BatchProjects { runs }, outcomes);
        counters
    }

    #[test]
    fn only_accepted_events_count_per_project() {
        let outcomes = [
            Outcome::Accepted,
            Outcome::Duplicate,
            Outcome::Rejected(RejectReason::EmptyId),
            Outcome::Accepted,
            Outcome::Accepted,
        ];
        let counters = counters_of(vec![run("a", 0, 3), run("b", 3, 5)], &outcomes);
        assert_eq!(
            counters.snapshot(),
            vec![(Arc::from("a"), 1), (Arc::from("b"), 2)]
        );
        // A second batch adds to the same counters.
        counters.record(
            &BatchProjects {
                runs: vec![run("b", 0, 1)],
            },
            &[Outcome::Accepted],
        );
        assert_eq!(counters.snapshot()[1], (Arc::from("b"), 3));
        assert_eq!(counters.overflow_events(), 0);
    }

    #[test]
    fn projects_beyond_the_bound_count_as_overflow() {
        let counters = ProjectEventCounters::default();
        for index in 0..PROJECT_COUNTERS_MAX + 2 {
            counters.record(
                &BatchProjects {
                    runs: vec![run(&format!("p{index}"), 0, 1)],
                },
                &[Outcome::Accepted],
            );
        }
        assert_eq!(counters.snapshot().len(), PROJECT_COUNTERS_MAX);
        assert_eq!(counters.overflow_events(), 2);
        // A project already counted keeps counting once the map is full.
        counters.record(
            &BatchProjects {
                runs: vec![run("p0", 0, 1)],
            },
            &[Outcome::Accepted],
        );
        assert!(counters.snapshot().contains(&(Arc::from("p0"), 2)));
    }

    #[test]
    fn a_run_longer_than_the_outcomes_is_cut_not_a_panic() {
        let counters = counters_of(vec![run("a", 0, 4)], &[Outcome::Accepted]);
        assert_eq!(counters.snapshot(), vec![(Arc::from("a"), 1)]);
    }
}
