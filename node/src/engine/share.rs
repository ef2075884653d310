//! This node's share of a results or time-series query
//! (`docs/cluster.md`, "Query fan-out and merge").
//!
//! Aggregates stay on the node that emitted them, so every query is the
//! sum of every member's share — on a single node, of one share. The
//! engine computes its own share here (`Engine::share`): checked against
//! the project's settings and the limits, read from the experiment's
//! aggregate actor. Gathering the shares, checking that every store is
//! counted once, merging and finishing them is the coordinator's job
//! (`cluster::coordinator`).

use super::actors::AggregateMessage;
use super::aggregates::ExperimentAggregates;
use super::mailbox::{CallError, Mailbox};
use super::query::{self, Partial, QueryError, Results, ResultsQuery};
use super::Engine;
use crate::hashing;
use crate::limits;
use crate::project::ProjectConfig;
use ractor::RpcReplyPort;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A results request as the API receives it: range and names unchecked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultsRequest {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub breakdown: Option<String>,
    pub keys: Vec<String>,
    pub baseline: Option<String>,
    /// Expected allocation weight by variation (`weights=`), read but not
    /// yet checked against the variations.
    pub weights: Option<BTreeMap<String, f64>>,
}

/// The answer to a results request, with the range it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsAnswer {
    pub from_ms: i64,
    pub to_ms: i64,
    pub breakdown: Option<Arc<str>>,
    pub results: Results,
    pub weights_source: query::WeightsSource,
}

/// A time-series request as the API receives it: range and names
/// unchecked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesRequest {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub interval_ms: Option<i64>,
    pub breakdown: Option<String>,
    pub keys: Vec<String>,
    pub baseline: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesAnswer {
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_ms: i64,
    pub breakdown: Option<Arc<str>>,
    pub keys: Vec<Arc<str>>,
    pub series: query::SeriesResults,
}

/// What a coordinator asks of every member's engine: the first bucket of
/// the experiment and, once the range is resolved (`from_ms` given), the
/// share over it — one partial, or one per interval of a time series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareRequest {
    pub project: String,
    pub experiment: String,
    /// `None`: only the first bucket is asked (the coordinator resolves a
    /// missing `from` with the earliest over the cluster).
    pub from_ms: Option<i64>,
    pub to_ms: i64,
    pub breakdown: Option<String>,
    pub keys: Vec<String>,
    /// Set for a time series.
    pub interval_ms: Option<i64>,
}

/// This node's share, before the coordinator names the stores it counts.
#[derive(Debug, Clone, Default)]
pub struct LocalShare {
    /// The first bucket of the experiment here, if this node holds any.
    pub first_ms: Option<i64>,
    /// The share over the range (a results request with `from_ms`).
    pub partial: Option<Partial>,
    /// The share per interval (a time-series request with `from_ms`).
    pub series: Option<Vec<Partial>>,
}

impl Engine {
    /// This node's share of a query. A project this node does not know,
    /// and a node that handed its stores over, has nothing to add; an
    /// invalid request (range, breakdown, keys, interval) or one over the
    /// cost limit is an error.
    pub async fn share(&self, request: &ShareRequest) -> Result<LocalShare, QueryError> {
        if self.store_coverage().handed_over.is_some() {
            return Ok(LocalShare::default());
        }
        let first_ms = match self.experiments(&request.project).await {
            Ok(experiments) => experiments
                .into_iter()
                .find(|(name, _)| **name == *request.experiment)
                .and_then(|(_, first)| first),
            Err(QueryError::UnknownProject { .. }) => return Ok(LocalShare::default()),
            Err(error) => return Err(error),
        };
        let Some(from_ms) = request.from_ms else {
            return Ok(LocalShare {
                first_ms,
                ..LocalShare::default()
            });
        };
        if let Some(interval_ms) = request.interval_ms {
            let series = self.series_share(request, from_ms, interval_ms).await?;
            return Ok(LocalShare {
                first_ms,
                series,
                ..LocalShare::default()
            });
        }
        let partial = self.results_share(request, from_ms).await?;
        Ok(LocalShare {
            first_ms,
            partial,
            series: None,
        })
    }

    /// The share of a results query over [from, to); `None` when this node
    /// holds nothing of the experiment.
    async fn results_share(
        &self,
        request: &ShareRequest,
        from_ms: i64,
    ) -> Result<Option<Partial>, QueryError> {
        let config = self.project_config(&request.project)?;
        let results = ResultsRequest {
            from_ms: Some(from_ms),
            to_ms: Some(request.to_ms),
            breakdown: request.breakdown.clone(),
            keys: request.keys.clone(),
            baseline: None,
            weights: None,
        };
        let query = results_query(&config.settings, from_ms, request.to_ms, &results)?;
        let experiment = request.experiment.as_str();
        self.check_cost(
            &config,
            experiment,
            query.breakdown.clone(),
            from_ms,
            request.to_ms,
        )
        .await?;
        let message = |reply| AggregateMessage::Partial {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            query,
            reply,
        };
        self.ask(self.aggregates_for(&config.name, experiment), message)
            .await
    }

    /// The share of a time series: one partial per interval; `None` when
    /// this node holds nothing of the experiment.
    async fn series_share(
        &self,
        request: &ShareRequest,
        from_ms: i64,
        interval_ms: i64,
    ) -> Result<Option<Vec<Partial>>, QueryError> {
        let config = self.project_config(&request.project)?;
        let to_ms = request.to_ms;
        series_interval(config.settings.bucket_ms, from_ms, to_ms, Some(interval_ms))?;
        let breakdown = match &request.breakdown {
            Some(attribute) => Some(check_breakdown(&config.settings, attribute)?),
            None => None,
        };
        let experiment = request.experiment.as_str();
        self.check_cost(&config, experiment, breakdown.clone(), from_ms, to_ms)
            .await?;
        let message = |reply| AggregateMessage::SeriesPartial {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            from_ms,
            to_ms,
            interval_ms,
            breakdown,
            reply,
        };
        self.ask(self.aggregates_for(&config.name, experiment), message)
            .await
    }

    pub(super) fn aggregates_for(
        &self,
        project: &str,
        experiment: &str,
    ) -> &Mailbox<AggregateMessage> {
        let index =
            hashing::aggregate_actor_of(project, experiment, self.inner.aggregate_actors.len());
        &self.inner.aggregate_actors[index]
    }

    /// Checks a results request over an explicit range and builds the query
    /// a coordinator finishes the merged shares with: the same checks every
    /// member's share makes.
    pub fn results_query_for(
        &self,
        project: &str,
        from_ms: i64,
        to_ms: i64,
        request: &ResultsRequest,
    ) -> Result<ResultsQuery, QueryError> {
        let config = self.project_config(project)?;
        check_range(config.settings.bucket_ms, from_ms, to_ms)?;
        results_query(&config.settings, from_ms, to_ms, request)
    }

    /// Checks a time series' interval and range the way `time_series` does
    /// (for a coordinator that gathers shares); answers the interval.
    pub fn series_interval_for(
        &self,
        project: &str,
        from_ms: i64,
        to_ms: i64,
        interval_ms: Option<i64>,
    ) -> Result<i64, QueryError> {
        let config = self.project_config(project)?;
        check_range(config.settings.bucket_ms, from_ms, to_ms)?;
        series_interval(config.settings.bucket_ms, from_ms, to_ms, interval_ms)
    }

    /// Checks a time series' breakdown, keys and baseline against the
    /// project's settings and the limits (for a coordinator that finishes
    /// the merged shares).
    pub fn series_query_for(
        &self,
        project: &str,
        request: &SeriesRequest,
    ) -> Result<query::SeriesQuery, QueryError> {
        let config = self.project_config(project)?;
        let results = ResultsRequest {
            breakdown: request.breakdown.clone(),
            keys: request.keys.clone(),
            baseline: request.baseline.clone(),
            ..ResultsRequest::default()
        };
        let checked = results_query(&config.settings, 0, 0, &results)?;
        Ok(query::SeriesQuery {
            breakdown: checked.breakdown,
            keys: checked.keys,
            baseline: checked.baseline,
        })
    }

    /// Experiments of a project with their earliest bucket, sorted by name.
    pub async fn experiments(
        &self,
        project: &str,
    ) -> Result<Vec<(Arc<str>, Option<i64>)>, QueryError> {
        let config = self.project_config(project)?;
        let mut experiments = Vec::new();
        for actor in self.inner.aggregate_actors.iter() {
            let message = |reply| AggregateMessage::Experiments {
                project: Arc::clone(&config.name),
                reply,
            };
            experiments.extend(self.ask(actor, message).await?);
        }
        experiments.sort();
        Ok(experiments)
    }

    pub fn project_config(&self, project: &str) -> Result<Arc<ProjectConfig>, QueryError> {
        self.inner
            .projects
            .get(project)
            .ok_or_else(|| QueryError::UnknownProject {
                project: project.to_string(),
            })
    }

    /// Refuses a query over [from, to) that would read more than
    /// `query_cost_max` cell-buckets: cells read (per the breakdown) × base
    /// buckets in the range. An upper bound (day roll-ups read fewer), and
    /// cheap: one count, before any summing.
    async fn check_cost(
        &self,
        config: &ProjectConfig,
        experiment: &str,
        breakdown: Option<Arc<str>>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(), QueryError> {
        let message = |reply| AggregateMessage::CellsRead {
            project: Arc::clone(&config.name),
            experiment: Arc::from(experiment),
            breakdown,
            reply,
        };
        let Some(cells) = self
            .ask(self.aggregates_for(&config.name, experiment), message)
            .await?
        else {
            // No such experiment here: the query itself says so (or, for a
            // share, answers nothing).
            return Ok(());
        };
        check_cost_limit(
            cells,
            config.settings.bucket_ms,
            from_ms,
            to_ms,
            self.inner.config.query_cost_max,
        )
    }

    /// Asks an aggregate actor, within `ACTOR_REPLY_WAIT_MS`. A node whose
    /// actor failed answers no query (`supervisor`).
    pub(super) async fn ask<T, F>(
        &self,
        mailbox: &Mailbox<AggregateMessage>,
        message: F,
    ) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> AggregateMessage,
    {
        if self.inner.health.failure().is_some() {
            return Err(QueryError::Unavailable);
        }
        let wait = Duration::from_millis(limits::ACTOR_REPLY_WAIT_MS);
        mailbox
            .call(message, wait)
            .await
            .map_err(|_: CallError| QueryError::Unavailable)
    }
}

/// `QueryError::TooExpensive` when reading `cells` cells over [from, to)
/// in buckets of `bucket_ms` touches more than `limit` cell-buckets.
fn check_cost_limit(
    cells: u64,
    bucket_ms: i64,
    from_ms: i64,
    to_ms: i64,
    limit: u64,
) -> Result<(), QueryError> {
    let buckets = u64::try_from((to_ms - from_ms) / bucket_ms).unwrap_or(0);
    let cost = cells.saturating_mul(buckets);
    if cost > limit {
        return Err(QueryError::TooExpensive {
            cost,
            cells,
            buckets,
            limit,
        });
    }
    Ok(())
}

/// The share of one store's aggregates of the experiment (`None`: the
/// store holds none), with the checks `Engine::share` makes: what a
/// replicated shard group answers for its own store (`engine::group`).
pub fn share_of_store(
    aggregates: Option<&ExperimentAggregates>,
    config: &ProjectConfig,
    request: &ShareRequest,
    query_cost_max: u64,
) -> Result<LocalShare, QueryError> {
    let first_ms = aggregates.and_then(ExperimentAggregates::first_bucket_ms);
    let Some(from_ms) = request.from_ms else {
        return Ok(LocalShare {
            first_ms,
            ..LocalShare::default()
        });
    };
    let to_ms = request.to_ms;
    let settings = &config.settings;
    if let Some(interval_ms) = request.interval_ms {
        series_interval(settings.bucket_ms, from_ms, to_ms, Some(interval_ms))?;
        let breakdown = match &request.breakdown {
            Some(attribute) => Some(check_breakdown(settings, attribute)?),
            None => None,
        };
        if let Some(aggregates) = aggregates {
            let cells = aggregates.cells_read(breakdown.as_deref());
            check_cost_limit(cells, settings.bucket_ms, from_ms, to_ms, query_cost_max)?;
        }
        let series = aggregates.map(|aggregates| {
            query::series_partial(aggregates, from_ms, to_ms, interval_ms, breakdown.as_ref())
        });
        return Ok(LocalShare {
            first_ms,
            series,
            ..LocalShare::default()
        });
    }
    let results = ResultsRequest {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        breakdown: request.breakdown.clone(),
        keys: request.keys.clone(),
        baseline: None,
        weights: None,
    };
    let query = results_query(settings, from_ms, to_ms, &results)?;
    if let Some(aggregates) = aggregates {
        let cells = aggregates.cells_read(query.breakdown.as_deref());
        check_cost_limit(cells, settings.bucket_ms, from_ms, to_ms, query_cost_max)?;
    }
    Ok(LocalShare {
        first_ms,
        partial: aggregates.map(|aggregates| query::partial(aggregates, &query)),
        series: None,
    })
}

/// A results query over a checked range: breakdown and keys checked
/// against the project's settings and the limits.
fn results_query(
    settings: &crate::project::Settings,
    from_ms: i64,
    to_ms: i64,
    request: &ResultsRequest,
) -> Result<ResultsQuery, QueryError> {
    let breakdown = match &request.breakdown {
        Some(attribute) => Some(check_breakdown(settings, attribute)?),
        None => None,
    };
    if request.keys.len() > limits::QUERY_KEYS_MAX {
        return Err(QueryError::TooManyKeys {
            count: request.keys.len(),
        });
    }
    Ok(ResultsQuery {
        from_ms,
        to_ms,
        breakdown,
        keys: request
            .keys
            .iter()
            .map(|key| Arc::from(key.as_str()))
            .collect(),
        baseline: request.baseline.as_deref().map(Arc::from),
        weights: request.weights.as_ref().map(|weights| {
            weights
                .iter()
                .map(|(variation, weight)| (Arc::from(variation.as_str()), *weight))
                .collect()
        }),
    })
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

/// A time series' interval (the bucket when not given): a positive multiple
/// of the bucket, with at most `TIMESERIES_POINTS_MAX` points in range.
fn series_interval(
    bucket_ms: i64,
    from_ms: i64,
    to_ms: i64,
    interval_ms: Option<i64>,
) -> Result<i64, QueryError> {
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
    Ok(interval_ms)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{exposure, TestEngine, HOUR_MS, NOW_MS, PROJECT};
    use super::*;

    fn request(experiment: &str, from_ms: Option<i64>) -> ShareRequest {
        let bucket_ms = HOUR_MS;
        let to_ms = NOW_MS - NOW_MS % bucket_ms + bucket_ms;
        ShareRequest {
            project: PROJECT.to_string(),
            experiment: experiment.to_string(),
            from_ms,
            to_ms,
            ..ShareRequest::default()
        }
    }

    #[tokio::test]
    async fn a_share_names_the_first_bucket_then_counts_the_range() {
        let node = TestEngine::open("share-range").await.with_project().await;
        node.send(&[
            exposure("e-1", "v-1", "checkout", "a"),
            exposure("e-2", "v-2", "checkout", "b"),
        ])
        .await;
        let first = node
            .engine
            .share(&request("checkout", None))
            .await
            .expect("a share");
        let bucket = NOW_MS - NOW_MS % HOUR_MS;
        assert_eq!(first.first_ms, Some(bucket));
        assert!(first.partial.is_none() && first.series.is_none());
        let share = node
            .engine
            .share(&request("checkout", Some(bucket)))
            .await
            .expect("a share");
        let partial = share.partial.expect("the experiment is held here");
        assert_eq!(partial.decisions_by_variation.len(), 2);
        let visitors: i64 = partial
            .cells
            .values()
            .map(|(counters, _)| counters.visitors)
            .sum();
        assert_eq!(visitors, 2);
        let series = node
            .engine
            .share(&ShareRequest {
                interval_ms: Some(HOUR_MS),
                ..request("checkout", Some(bucket))
            })
            .await
            .expect("a share")
            .series
            .expect("one partial per interval");
        assert_eq!(series.len(), 1);
    }

    #[tokio::test]
    async fn unknown_projects_and_experiments_add_nothing_and_bad_requests_fail() {
        let node = TestEngine::open("share-unknown").await.with_project().await;
        let unknown_project = ShareRequest {
            project: "nope".to_string(),
            ..request("checkout", Some(0))
        };
        let share = node.engine.share(&unknown_project).await.expect("no share");
        assert!(share.first_ms.is_none() && share.partial.is_none());
        let bucket = NOW_MS - NOW_MS % HOUR_MS;
        let share = node
            .engine
            .share(&request("nothing", Some(bucket)))
            .await
            .expect("no share");
        assert!(share.partial.is_none());
        let unaligned = node
            .engine
            .results_query_for(
                PROJECT,
                bucket + 1,
                bucket + HOUR_MS,
                &ResultsRequest::default(),
            )
            .unwrap_err();
        assert!(
            matches!(unaligned, QueryError::UnalignedRange { .. }),
            "{unaligned}"
        );
        let breakdown = ShareRequest {
            breakdown: Some("country".to_string()),
            ..request("checkout", Some(bucket))
        };
        let error = node.engine.share(&breakdown).await.unwrap_err();
        assert!(
            matches!(error, QueryError::UnknownBreakdown { .. }),
            "{error}"
        );
    }

    #[test]
    fn ranges_are_aligned_ordered_and_bounded() {
        assert!(check_range(HOUR_MS, 0, HOUR_MS).is_ok());
        assert!(matches!(
            check_range(HOUR_MS, HOUR_MS, HOUR_MS),
            Err(QueryError::InvalidRange { .. })
        ));
        let too_long = (limits::QUERY_BUCKETS_MAX + 1) * HOUR_MS;
        assert!(matches!(
            check_range(HOUR_MS, 0, too_long),
            Err(QueryError::TooManyBuckets { .. })
        ));
        assert_eq!(series_interval(HOUR_MS, 0, HOUR_MS, None), Ok(HOUR_MS));
        assert!(matches!(
            series_interval(HOUR_MS, 0, HOUR_MS, Some(HOUR_MS / 2)),
            Err(QueryError::InvalidInterval { .. })
        ));
    }
}
