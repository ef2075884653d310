//! The engine's pure core against the oracle: generated histories (late
//! and conflicting decisions, duplicates, events in any order, any batch
//! split) go through validation, `ShardState` and `AggregateStore` in
//! process, with a checkpoint round trip of both halfway, and every exact
//! counter of every cell must equal the oracle's plain batch computation of
//! the definitions; the active-visitor estimate must lie within its
//! bounds. No log, no actors, no I/O: thousands of cases run in seconds.

use super::aggregates::{AggregateStore, Counters};
use super::journal;
use super::query::{self, ResultsQuery};
use super::shard::{DeltaSink, Outcome, ShardState};
use crate::event;
use crate::project::{ProjectRegistry, SettingsPatch};
use proptest::prelude::*;
use sessiondb_protocol as wire;
use sessiondb_test_support::oracle::{Cell, CellCounts, Oracle, OracleSettings};
use std::collections::BTreeMap;
use std::sync::Arc;

/// 2025-11-20 10:30 UTC.
pub(crate) const NOW_MS: i64 = 1_763_634_600_000;
const HOUR_MS: i64 = 3_600_000;
pub(crate) const PROJECT: &str = "shop";
pub(crate) const EXPERIMENT: &str = "checkout";
/// Events spread over this many hours before `NOW_MS`: several buckets,
/// gaps long and short enough to split sessions, all inside the lateness
/// horizon (a day by default).
const SPREAD_HOURS: i64 = 5;
const VISITORS: u32 = 6;
const EVENTS_MAX: usize = 40;
const AGGREGATE_ACTORS: usize = 2;

#[derive(Debug, Clone)]
enum Kind {
    Pageview,
    Click,
    Conversion {
        key: &'static str,
        value: Option<i32>,
    },
    Decision {
        variation: &'static str,
        browser: Option<&'static str>,
    },
}

#[derive(Debug, Clone)]
struct Generated {
    visitor: u32,
    /// Seconds before `NOW_MS`.
    seconds_ago: i64,
    kind: Kind,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Pageview),
        1 => Just(Kind::Click),
        2 => (prop_oneof![Just("buy"), Just("signup")], proptest::option::of(-50..500i32))
            .prop_map(|(key, value)| Kind::Conversion { key, value }),
        2 => (
            prop_oneof![4 => Just("a"), 4 => Just("b"), 1 => Just("c")],
            proptest::option::of(prop_oneof![Just("chrome"), Just("firefox")]),
        )
            .prop_map(|(variation, browser)| Kind::Decision { variation, browser }),
    ]
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        0..VISITORS,
        // Clustered seconds (sessions) and the whole spread (gaps).
        prop_oneof![0..1_800i64, 0..SPREAD_HOURS * 3_600],
        kind(),
    )
        .prop_map(|(visitor, seconds_ago, kind)| Generated {
            visitor,
            seconds_ago,
            kind,
        })
}

/// A history: distinct events, then the order they arrive in (with
/// duplicates: indexes may repeat) and the batch sizes they arrive in.
pub(crate) fn history() -> impl Strategy<Value = (Vec<wire::Event>, Vec<usize>, Vec<usize>)> {
    proptest::collection::vec(generated(), 1..EVENTS_MAX)
        .prop_map(|generated| {
            generated
                .into_iter()
                .enumerate()
                .map(|(index, generated)| wire_event(index, generated))
                .collect::<Vec<_>>()
        })
        .prop_flat_map(|events| {
            let count = events.len();
            let order = proptest::collection::vec(0..count, count..count * 2 + 1).prop_flat_map(
                move |extra| {
                    // Every event at least once, some again, in any order.
                    let mut order: Vec<usize> = (0..count).collect();
                    order.extend(extra.into_iter().take(count / 3));
                    Just(order).prop_shuffle()
                },
            );
            let batches = proptest::collection::vec(1..8usize, 1..EVENTS_MAX * 2);
            (Just(events), order, batches)
        })
}

fn wire_event(index: usize, generated: Generated) -> wire::Event {
    let mut event = wire::Event {
        id: format!("e-{index}"),
        project: PROJECT.to_string(),
        visitor: format!("v-{}", generated.visitor),
        ts: wire::Timestamp::Milliseconds(NOW_MS - generated.seconds_ago * 1_000),
        event_type: wire::EventType::Pageview,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: Vec::new(),
    };
    match generated.kind {
        Kind::Pageview => {}
        Kind::Click => event.event_type = wire::EventType::Click,
        Kind::Conversion { key, value } => {
            event.event_type = wire::EventType::Custom;
            event.key = Some(key.to_string());
            event.value = value.map(|value| f64::from(value) / 4.0);
        }
        Kind::Decision { variation, browser } => {
            event.event_type = wire::EventType::Decision;
            event.decisions = vec![wire::Decision {
                experiment: EXPERIMENT.to_string(),
                variation: variation.to_string(),
            }];
            if let Some(browser) = browser {
                event
                    .attributes
                    .insert("browser".to_string(), browser.to_string());
            }
        }
    }
    event
}

/// A shard and the aggregate actors' stores, driven as the actors drive
/// them.
struct Core {
    registry: ProjectRegistry,
    shard: ShardState,
    stores: Vec<AggregateStore>,
}

impl Core {
    fn new() -> Core {
        let registry = ProjectRegistry::default();
        let patch = SettingsPatch {
            breakdown_attributes: Some(vec!["browser".to_string()]),
            ..SettingsPatch::default()
        };
        registry.create(PROJECT, &patch).expect("the project");
        Core {
            registry,
            shard: ShardState::default(),
            stores: (0..AGGREGATE_ACTORS)
                .map(|_| AggregateStore::default())
                .collect(),
        }
    }

    fn apply(&mut self, events: &[wire::Event]) {
        let validated: Vec<_> = events
            .iter()
            .map(|event| event::validate(event.clone(), &self.registry, NOW_MS).expect("valid"))
            .collect();
        let mut sink = DeltaSink::new(AGGREGATE_ACTORS);
        let outcomes = self.shard.apply(NOW_MS, validated, &mut sink);
        assert!(
            outcomes
                .iter()
                .all(|outcome| matches!(outcome, Outcome::Accepted | Outcome::Duplicate)),
            "{outcomes:?}"
        );
        for (store, batch) in sink.drain() {
            self.stores[store].apply(&batch);
        }
    }

    /// A checkpoint and a restore: both halves encoded, decoded and
    /// re-indexed as recovery does, and equal to what was encoded.
    fn round_trip(&mut self) {
        let mut shard: ShardState =
            journal::decode(&journal::encode(&self.shard), "shard").expect("decodes");
        shard.share_names();
        assert_eq!(shard, self.shard);
        self.shard = shard;
        for store in &mut self.stores {
            let mut decoded: AggregateStore =
                journal::decode(&journal::encode(&*store), "aggregates").expect("decodes");
            decoded.reindex();
            *store = decoded;
        }
    }

    fn results(&self, query: &ResultsQuery) -> Option<query::Results> {
        let store = self
            .stores
            .iter()
            .find(|store| store.experiment(PROJECT, EXPERIMENT).is_some())?;
        let aggregates = store.experiment(PROJECT, EXPERIMENT).expect("found");
        Some(query::results(aggregates, query).expect("a valid query"))
    }
}

fn exact_counts(counters: &Counters) -> CellCounts {
    CellCounts {
        visitors: counters.visitors,
        conflicts: counters.conflicts,
        sessions: counters.sessions,
        bounced_sessions: counters.bounced_sessions,
        duration_ms_sum: counters.duration_ms_sum,
        pageviews_sum: counters.pageviews_sum,
        keys: counters
            .keys
            .iter()
            .map(|(key, counts)| {
                let counts = sessiondb_test_support::oracle::KeyCounts {
                    unique_conversions: counts.unique_conversions,
                    total_conversions: counts.total_conversions,
                    value_sum_micro: counts.value_sum_micros,
                    value_sum_squares_micro2: counts.value_sum_squares_micros,
                    sessions_with_conversion: counts.sessions_with_conversion,
                };
                (key.to_string(), counts)
            })
            .filter(|(_, counts)| *counts != Default::default())
            .collect(),
        active_visitors_exact: 0,
        active_visitors_upper: 0,
    }
}

/// Compares every cell: exact counters equal, the active estimate within
/// 4 standard errors of [exact, upper] (late decisions can leave a visitor
/// in the sketch of a cell it left).
fn compare(actual: Option<query::Results>, expected: &BTreeMap<Cell, CellCounts>, context: &str) {
    let mut cells: BTreeMap<Cell, (CellCounts, f64, f64)> = BTreeMap::new();
    for group in actual.iter().flat_map(|results| &results.groups) {
        for variation in &group.variations {
            let cell = Cell {
                breakdown_value: group.value.as_ref().map(|value| value.to_string()),
                variation: variation.variation.to_string(),
            };
            let found = (
                exact_counts(&variation.counters),
                variation.active_estimate,
                variation.active_standard_error,
            );
            assert!(
                cells.insert(cell, found).is_none(),
                "{context}: a cell twice"
            );
        }
    }
    let empty = (CellCounts::default(), 0.0, 0.0);
    for cell in cells.keys().chain(expected.keys()) {
        let (got, estimate, standard_error) = cells.get(cell).unwrap_or(&empty);
        let want = expected.get(cell).cloned().unwrap_or_default();
        let want_exact = CellCounts {
            keys: want
                .keys
                .clone()
                .into_iter()
                .filter(|(_, counts)| *counts != Default::default())
                .collect(),
            active_visitors_exact: 0,
            active_visitors_upper: 0,
            ..want.clone()
        };
        assert_eq!(got, &want_exact, "{context}: cell {cell:?}");
        let slack = 4.0 * standard_error + 0.5;
        let low = want.active_visitors_exact as f64 - slack;
        let high = want.active_visitors_upper as f64 + slack;
        assert!(
            (low..=high).contains(estimate),
            "{context}: cell {cell:?}: active visitors {estimate} outside [{}, {}] ± {slack}",
            want.active_visitors_exact,
            want.active_visitors_upper
        );
    }
}

fn check(core: &Core, oracle: &Oracle, context: &str) {
    check_with(|query| core.results(query), oracle, context);
}

/// Compares the answers of `results` with the oracle's, on the whole
/// spread and on a range cutting into it, with and without a breakdown.
pub(crate) fn check_with(
    results: impl Fn(&ResultsQuery) -> Option<query::Results>,
    oracle: &Oracle,
    context: &str,
) {
    let now_bucket_ms = NOW_MS - NOW_MS % HOUR_MS;
    let to_ms = now_bucket_ms + HOUR_MS;
    let whole_ms = now_bucket_ms - SPREAD_HOURS * HOUR_MS;
    // The whole spread, and a range that cuts into it.
    for from_ms in [whole_ms, now_bucket_ms - 2 * HOUR_MS] {
        for breakdown in [None, Some("browser")] {
            let query = ResultsQuery {
                from_ms,
                to_ms,
                breakdown: breakdown.map(Arc::from),
                keys: Vec::new(),
                baseline: None,
                weights: None,
            };
            let keys = ["buy", "signup"];
            let expected = oracle.results(EXPERIMENT, from_ms, to_ms, breakdown, &keys);
            let context = format!("{context}, [{from_ms}, {to_ms}) by {breakdown:?}");
            compare(results(&query), &expected.cells, &context);
        }
    }
}

fn run(events: &[wire::Event], order: &[usize], batches: &[usize]) {
    let oracle = Oracle::new(OracleSettings::default(), events);
    let mut core = Core::new();
    let arrivals: Vec<wire::Event> = order.iter().map(|index| events[*index].clone()).collect();
    let mut rest = arrivals.as_slice();
    let mut sizes = batches.iter().cycle();
    let halfway = arrivals.len() / 2;
    let mut applied = 0;
    while !rest.is_empty() {
        let size = (*sizes.next().expect("cycled")).min(rest.len());
        let (batch, later) = rest.split_at(size);
        core.apply(batch);
        let before = applied;
        applied += size;
        if before < halfway && applied >= halfway {
            core.round_trip();
        }
        rest = later;
    }
    check(&core, &oracle, "all arrived");
    core.round_trip();
    check(&core, &oracle, "after a round trip");
}

proptest! {
    // 1,000 cases by default; PROPTEST_CASES=N searches deeper.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(1_000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_arrival_order_and_batching_counts_what_the_oracle_counts(
        (events, order, batches) in history()
    ) {
        run(&events, &order, &batches);
    }
}
