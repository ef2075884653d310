//! `QueryCoordinator`: every results or time-series query, on one node or
//! many (`docs/cluster.md`, "Query fan-out and merge").
//!
//! Aggregates stay on the node that emitted them, so a query is the sum of
//! every member's share. The node that receives the query coordinates, and
//! every query takes the same four steps, whatever the cluster's size — a
//! single node is a cluster of one, whose only share is its own:
//!
//! 1. **resolve the range**: `to` defaults to the end of the current
//!    bucket, `from` to the experiment's first bucket over every share;
//! 2. **gather** every member's share at once: this node's from its engine
//!    (`Engine::share`), the others' over `PeerClient::query_share`; a
//!    member that does not answer within its budget is missing;
//! 3. **check coverage**: every expected store
//!    (`PlacementState::expected_stores`) counted exactly once — a store
//!    nobody counted makes the answer partial, one counted twice fails it;
//! 4. **merge and finish**: `Partial::merge` (counters add, sketches
//!    union), then `query::finish` or `query::finish_series`.

use super::peer::{NodeId, PeerClient, QueryShare};
use super::placement::PlacementView;
use crate::engine::query::{self, Partial, QueryError, ResultsQuery, WeightsSource};
use crate::engine::{
    Engine, ResultsAnswer, ResultsRequest, SeriesAnswer, SeriesRequest, ShareRequest,
};
use sessiondb_protocol as wire;
use std::collections::BTreeMap;

/// A query's answer and the members whose share is missing from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered<T> {
    pub answer: T,
    /// Sorted; empty for a complete answer.
    pub missing_nodes: Vec<NodeId>,
}

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request is invalid, too expensive, or this node's engine could
    /// not compute its share.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Two shares counted the same store: the sum would be silently too
    /// high (a node removal in progress).
    #[error("node {store}'s aggregates were counted {times} times (a node removal is in progress?); retry")]
    CountedTwice { store: NodeId, times: usize },
}

/// Every member's shares and the members that did not answer.
#[derive(Debug)]
struct Shares {
    shares: Vec<QueryShare>,
    missing: Vec<NodeId>,
}

/// Coordinates queries on this node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueryCoordinator {
    node_id: NodeId,
    engine: Engine,
    view: PlacementView,
    peers: PeerClient,
}

impl QueryCoordinator {
    pub fn new(
        node_id: NodeId,
        engine: Engine,
        view: PlacementView,
        peers: PeerClient,
    ) -> QueryCoordinator {
        QueryCoordinator {
            node_id,
            engine,
            view,
            peers,
        }
    }

    /// A results query over every member's share.
    pub async fn results(
        &self,
        project: &str,
        experiment: &str,
        request: &ResultsRequest,
    ) -> Result<Gathered<ResultsAnswer>, CoordinatorError> {
        let mut share = ShareRequest {
            project: project.to_string(),
            experiment: experiment.to_string(),
            breakdown: request.breakdown.clone(),
            keys: request.keys.clone(),
            ..ShareRequest::default()
        };
        let mut missing = self
            .resolve_range(&mut share, request.from_ms, request.to_ms)
            .await?;
        let (from_ms, to_ms) = (share.from_ms.unwrap_or(0), share.to_ms);
        // The engine's own checks (range, breakdown, keys), as a single node
        // makes them; a node without data of the experiment still passes.
        let mut query = self
            .engine
            .results_query_for(project, from_ms, to_ms, request)?;
        let gathered = self.gather(&share).await?;
        missing.extend(gathered.missing);
        missing.extend(self.uncovered_stores(&gathered.shares)?);
        missing.sort_unstable();
        missing.dedup();
        let merged = merge(
            gathered
                .shares
                .into_iter()
                .filter_map(|share| share.partial),
        );
        let merged = match merged {
            Some(merged) => merged,
            None if missing.is_empty() => return Err(unknown_experiment(project, experiment)),
            // Nothing among the members that answered; the missing ones may
            // hold the experiment: an empty, partial answer.
            None => Partial {
                precision: self.engine.project_config(project)?.settings.hll_precision,
                ..Partial::default()
            },
        };
        let weights_source = self.expected_weights(project, experiment, &merged, &mut query);
        let breakdown = query.breakdown.clone();
        let results = query::finish(merged, &query)?;
        Ok(Gathered {
            answer: ResultsAnswer {
                from_ms,
                to_ms,
                breakdown,
                results,
                weights_source,
            },
            missing_nodes: missing,
        })
    }

    /// The allocation the sample ratio mismatch check expects: the query's
    /// weights, else the experiment's stored ones (placement, agreed like
    /// project settings) when they name every variation with data, else
    /// equal shares.
    fn expected_weights(
        &self,
        project: &str,
        experiment: &str,
        merged: &Partial,
        query: &mut ResultsQuery,
    ) -> WeightsSource {
        if query.weights.is_some() {
            return WeightsSource::Query;
        }
        let placement = self.view.current();
        let Some(stored) = placement.experiment_weights(project, experiment) else {
            return WeightsSource::Equal;
        };
        let variations = query::variations_of(&merged.decisions_by_variation);
        match query::stored_weights_for(&variations, stored) {
            Some(weights) => {
                query.weights = Some(weights);
                WeightsSource::Stored
            }
            None => WeightsSource::Equal,
        }
    }

    /// A time series over every member's share, interval by interval.
    pub async fn time_series(
        &self,
        project: &str,
        experiment: &str,
        request: &SeriesRequest,
    ) -> Result<Gathered<SeriesAnswer>, CoordinatorError> {
        let mut share = ShareRequest {
            project: project.to_string(),
            experiment: experiment.to_string(),
            breakdown: request.breakdown.clone(),
            ..ShareRequest::default()
        };
        let mut missing = self
            .resolve_range(&mut share, request.from_ms, request.to_ms)
            .await?;
        let (from_ms, to_ms) = (share.from_ms.unwrap_or(0), share.to_ms);
        let interval_ms =
            self.engine
                .series_interval_for(project, from_ms, to_ms, request.interval_ms)?;
        let query = self.engine.series_query_for(project, request)?;
        share.interval_ms = Some(interval_ms);
        let gathered = self.gather(&share).await?;
        missing.extend(gathered.missing);
        missing.extend(self.uncovered_stores(&gathered.shares)?);
        missing.sort_unstable();
        missing.dedup();
        let mut merged: Option<Vec<Partial>> = None;
        for series in gathered.shares.into_iter().filter_map(|share| share.series) {
            match merged.as_mut() {
                Some(merged) => {
                    for (mine, theirs) in merged.iter_mut().zip(series) {
                        mine.merge(theirs);
                    }
                }
                None => merged = Some(series),
            }
        }
        if merged.is_none() && missing.is_empty() {
            return Err(unknown_experiment(project, experiment));
        }
        let series =
            query::finish_series(merged.unwrap_or_default(), from_ms, interval_ms, &query)?;
        Ok(Gathered {
            answer: SeriesAnswer {
                from_ms,
                to_ms,
                interval_ms,
                breakdown: query.breakdown,
                keys: query.keys,
                series,
            },
            missing_nodes: missing,
        })
    }

    /// This node's share, naming the stores it counts: what it adds to its
    /// own queries, and what it answers a coordinating member
    /// (`POST /v1/internal/partial`).
    pub async fn local_share(&self, request: &ShareRequest) -> Result<QueryShare, QueryError> {
        let stores = self.engine.store_coverage().stores(self.node_id);
        if stores.is_empty() {
            return Ok(QueryShare::default());
        }
        let local = self.engine.share(request).await?;
        Ok(QueryShare {
            first_ms: local.first_ms,
            partial: local.partial,
            stores,
            series: local.series,
        })
    }

    /// Fills in the request's range: `to` defaults to the end of the current
    /// bucket, `from` to the experiment's first bucket over every share.
    /// Answers the members that did not answer.
    async fn resolve_range(
        &self,
        share: &mut ShareRequest,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Vec<NodeId>, CoordinatorError> {
        let config = self.engine.project_config(&share.project)?;
        let settings = &config.settings;
        share.to_ms = to_ms.unwrap_or_else(|| {
            settings.bucket_of(self.engine.clock().now_ms()) + settings.bucket_ms
        });
        if let Some(from_ms) = from_ms {
            share.from_ms = Some(from_ms);
            return Ok(Vec::new());
        }
        share.from_ms = None;
        let gathered = self.gather(share).await?;
        let last_bucket_ms = share.to_ms - settings.bucket_ms;
        let first_ms = gathered
            .shares
            .iter()
            .filter_map(|share| share.first_ms)
            .min()
            .unwrap_or(last_bucket_ms)
            .min(last_bucket_ms);
        share.from_ms = Some(first_ms);
        Ok(gathered.missing)
    }

    /// Every member's share (this node's first), and the members that did
    /// not answer. An error of this node's engine fails the query.
    async fn gather(&self, share: &ShareRequest) -> Result<Shares, CoordinatorError> {
        let others = self.other_members();
        let request = wire_request(share);
        let request = &request;
        let remote = self.peers.ask_every(&others, |peers, peer| async move {
            peers.query_share(&peer, request).await
        });
        let (local, remote) = futures::join!(self.local_share(share), remote);
        let mut shares = vec![local?];
        let mut missing = Vec::new();
        for member in remote {
            match member.answer {
                Ok(share) => shares.push(share),
                Err(error) => {
                    tracing::warn!(node_id = member.node, %error, "member's query share missing");
                    missing.push(member.node);
                }
            }
        }
        Ok(Shares { shares, missing })
    }

    /// The members other than this node, from the placement state.
    fn other_members(&self) -> Vec<(NodeId, String)> {
        self.view
            .current()
            .members()
            .iter()
            .filter(|(node_id, _)| **node_id != self.node_id)
            .map(|(node_id, member)| (*node_id, member.address.clone()))
            .collect()
    }

    /// The expected stores that no share counts. A store counted by two
    /// shares is an error: the answer would be silently too high.
    fn uncovered_stores(&self, shares: &[QueryShare]) -> Result<Vec<NodeId>, CoordinatorError> {
        let mut counted: BTreeMap<NodeId, usize> = BTreeMap::new();
        for share in shares {
            for store in &share.stores {
                *counted.entry(*store).or_insert(0) += 1;
            }
        }
        if let Some((store, times)) = counted.iter().find(|(_, times)| **times > 1) {
            return Err(CoordinatorError::CountedTwice {
                store: *store,
                times: *times,
            });
        }
        let expected = self.view.current().expected_stores();
        Ok(expected
            .into_iter()
            .filter(|store| !counted.contains_key(store))
            .collect())
    }
}

/// The sum of partials; `None` without any.
fn merge(partials: impl Iterator<Item = Partial>) -> Option<Partial> {
    partials.reduce(|mut merged, partial| {
        merged.merge(partial);
        merged
    })
}

fn unknown_experiment(project: &str, experiment: &str) -> CoordinatorError {
    CoordinatorError::Query(QueryError::UnknownExperiment {
        project: project.to_string(),
        experiment: experiment.to_string(),
    })
}

/// The network form of a share request (`POST /v1/internal/partial`).
pub fn wire_request(share: &ShareRequest) -> wire::PartialRequest {
    wire::PartialRequest {
        project: share.project.clone(),
        experiment: share.experiment.clone(),
        from: share.from_ms,
        to: share.to_ms,
        breakdown: share.breakdown.clone(),
        keys: share.keys.clone(),
        interval_ms: share.interval_ms,
    }
}

/// A member's share request as the network carries it.
pub fn share_request(request: wire::PartialRequest) -> ShareRequest {
    ShareRequest {
        project: request.project,
        experiment: request.experiment,
        from_ms: request.from,
        to_ms: request.to,
        breakdown: request.breakdown,
        keys: request.keys,
        interval_ms: request.interval_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_requests_cross_the_network_unchanged() {
        let share = ShareRequest {
            project: "shop".into(),
            experiment: "checkout".into(),
            from_ms: Some(3_600_000),
            to_ms: 7_200_000,
            breakdown: Some("browser".into()),
            keys: vec!["purchase".into()],
            interval_ms: None,
        };
        assert_eq!(share_request(wire_request(&share)), share);
    }

    #[test]
    fn merging_adds_shares_and_none_is_no_share() {
        assert!(merge(std::iter::empty()).is_none());
        let one = Partial {
            precision: 12,
            decisions_by_variation: [(std::sync::Arc::from("a"), 2)].into(),
            ..Partial::default()
        };
        let merged = merge([one.clone(), one].into_iter()).expect("a sum");
        assert_eq!(merged.decisions_by_variation[&std::sync::Arc::from("a")], 4);
        assert_eq!(merged.precision, 12);
    }
}
