//! One visitor's live state and the pure function from that state to its
//! contribution (`docs/semantics.md`). No I/O, no actors, no clocks: everything here is
//! a function of its arguments, so it can be tested exhaustively and the
//! oracle tests pin it from the outside.

use super::contribution::{
    difference, ActiveCell, Assignment, Contribution, Difference, Entry, Metric, NONE_VALUE,
};
use crate::event::{Event, EventKind};
use crate::limits;
use crate::project::Settings;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A visitor's exposure to an experiment that lies in its frozen past, with
/// what later events need to know about that past.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrozenExposure {
    pub experiment: Arc<str>,
    pub t0_ms: i64,
    pub variation: Arc<str>,
    /// The exposure event's attributes, so breakdowns can be re-derived
    /// when the project's breakdown attributes change.
    pub attributes: Vec<(Arc<str>, Arc<str>)>,
    pub keys: Vec<FrozenKey>,
}

/// Per conversion key: whether the visitor already converted, and the sum
/// of its converted values so far (for sums of squares).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrozenKey {
    pub key: Arc<str>,
    pub converted: bool,
    pub value_sum_micros: i128,
}

/// What happened to one event offered to a visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Accepted,
    Duplicate,
    /// The visitor holds `VISITOR_EVENTS_MAX` events already.
    Full,
}

/// A visitor: its retained events (inside the horizon) and its frozen past.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Visitor {
    /// Sorted by `Event::order_key`, ids unique.
    events: Vec<Event>,
    /// Sorted by experiment.
    frozen: Vec<FrozenExposure>,
    /// Latest event time ever seen, for retention.
    last_event_ms: i64,
}

impl Visitor {
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Events the visitor's vector has room for (memory accounting).
    pub fn events_capacity(&self) -> usize {
        self.events.capacity()
    }

    pub fn frozen(&self) -> &[FrozenExposure] {
        &self.frozen
    }

    pub fn last_event_ms(&self) -> i64 {
        self.last_event_ms
    }

    /// Gives back the unused room of the vectors (a vector grows by
    /// doubling, so up to half of it can be empty).
    pub fn shrink_to_fit(&mut self) {
        self.events.shrink_to_fit();
        self.frozen.shrink_to_fit();
    }

    /// Every name the visitor holds, mutably, for sharing equal names
    /// (`shard::NameTable`).
    pub fn names_mut(&mut self) -> impl Iterator<Item = &mut Arc<str>> {
        let frozen = self.frozen.iter_mut().flat_map(|exposure| {
            let attributes = exposure
                .attributes
                .iter_mut()
                .flat_map(|(name, value)| [name, value]);
            let keys = exposure.keys.iter_mut().map(|key| &mut key.key);
            [&mut exposure.experiment, &mut exposure.variation]
                .into_iter()
                .chain(attributes)
                .chain(keys)
        });
        self.events
            .iter_mut()
            .flat_map(Event::names_mut)
            .chain(frozen)
    }

    /// Whether nothing is left worth keeping.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.frozen.is_empty()
    }

    /// Adds an event unless its id is already held.
    pub fn insert(&mut self, event: Event) -> Insert {
        let insert = self.admission(&event, 0);
        if insert == Insert::Accepted {
            self.place(event);
        }
        insert
    }

    /// What `insert` answers for `event` when `pending` events already
    /// admitted are not placed yet.
    fn admission(&self, event: &Event, pending: usize) -> Insert {
        if self.events.iter().any(|held| held.id == event.id) {
            Insert::Duplicate
        } else if self.events.len() + pending >= limits::VISITOR_EVENTS_MAX {
            Insert::Full
        } else {
            Insert::Accepted
        }
    }

    /// Puts an admitted event in order.
    fn place(&mut self, event: Event) {
        let position = self
            .events
            .partition_point(|held| held.order_key() < event.order_key());
        self.last_event_ms = self.last_event_ms.max(event.ts_ms);
        self.events.insert(position, event);
    }

    /// Folds the sessions that can no longer change into the frozen summary
    /// and drops their events. Changes no contribution already emitted:
    /// frozen events' contributions are final (docs/semantics.md).
    pub fn freeze(&mut self, settings: &Settings, now_ms: i64) {
        let boundary_ms = now_ms - settings.allowed_lateness_ms - settings.session_gap_ms;
        if self
            .events
            .first()
            .is_none_or(|event| event.ts_ms >= boundary_ms)
        {
            return;
        }
        let sessions = split_sessions(settings, &self.events);
        let closed = sessions
            .iter()
            .take_while(|session| self.events[session.end - 1].ts_ms < boundary_ms)
            .count();
        if closed == 0 {
            return;
        }
        let cut = sessions[closed - 1].end;
        let frozen_events: Vec<Event> = self.events.drain(..cut).collect();
        self.frozen = fold(&self.frozen, &frozen_events);
    }

    /// Inserts `events` and answers one `Insert` per event, in order, with
    /// the change of the visitor's contribution.
    ///
    /// Only the sessions from the one holding the earliest new event on can
    /// change (docs/architecture.md, "Contributions are pure"): the events
    /// before it keep their sessions and only feed the exposure and
    /// conversion state, so they are folded into a summary and the
    /// difference is computed over the suffix alone. A property test checks
    /// this against the whole-visitor difference. The sketch cells it
    /// reports may include cells the visitor was already active in through
    /// the folded events: inserting into a sketch again changes nothing.
    ///
    /// The suffix starts where the session of the event just before the
    /// earliest new one starts: every session boundary up to there is
    /// decided by events that are the same before and after the insert, so
    /// the prefix is cut identically in both states. That lets the "before"
    /// contribution be computed before inserting, on the held events
    /// themselves, instead of on a copy without the new events.
    pub fn insert_all(
        &mut self,
        settings: &Settings,
        events: Vec<Event>,
    ) -> (Vec<Insert>, Difference) {
        let inserts = self.classify(&events);
        let earliest = events
            .iter()
            .zip(&inserts)
            .filter(|(_, insert)| **insert == Insert::Accepted)
            .map(|(event, _)| event.order_key())
            .min();
        let Some(earliest) = earliest else {
            return (inserts, Difference::default());
        };
        let position = self
            .events
            .partition_point(|held| held.order_key() < earliest);
        let start = if position == 0 {
            0
        } else {
            split_sessions(settings, &self.events[..position])
                .last()
                .expect("a non-empty prefix has a session")
                .start
        };
        let summary = fold(&self.frozen, &self.events[..start]);
        let before = View {
            frozen: &summary,
            events: &self.events[start..],
        }
        .contribute(settings);
        for (event, insert) in events.into_iter().zip(&inserts) {
            if *insert == Insert::Accepted {
                self.place(event);
            }
        }
        let after = View {
            frozen: &summary,
            events: &self.events[start..],
        }
        .contribute(settings);
        (inserts, difference(&before, &after))
    }

    /// What `insert` would answer for each of `events` inserted in order,
    /// without inserting: duplicates of held events or of earlier events of
    /// the same call, and events past `VISITOR_EVENTS_MAX`.
    fn classify(&self, events: &[Event]) -> Vec<Insert> {
        let mut inserts = Vec::with_capacity(events.len());
        let mut accepted = 0;
        for (index, event) in events.iter().enumerate() {
            let earlier_accepted = events[..index]
                .iter()
                .zip(&inserts)
                .any(|(earlier, insert)| *insert == Insert::Accepted && earlier.id == event.id);
            let insert = if earlier_accepted {
                Insert::Duplicate
            } else {
                self.admission(event, accepted)
            };
            if insert == Insert::Accepted {
                accepted += 1;
            }
            inserts.push(insert);
        }
        inserts
    }

    /// The visitor's contribution to its project's aggregates.
    pub fn contribute(&self, settings: &Settings) -> Contribution {
        View {
            frozen: &self.frozen,
            events: &self.events,
        }
        .contribute(settings)
    }
}

/// `frozen` with `events` (the oldest of a visitor's events) folded in: new
/// exposures, and per key whether it converted and the value sum so far.
fn fold(frozen: &[FrozenExposure], events: &[Event]) -> Vec<FrozenExposure> {
    let mut folded = frozen.to_vec();
    for experiment in experiments_in(events) {
        if find_frozen(&folded, &experiment).is_some() {
            continue;
        }
        let exposure =
            first_decision(events, &experiment).expect("experiment came from these events");
        let position = folded.partition_point(|frozen| frozen.experiment < experiment);
        folded.insert(
            position,
            FrozenExposure {
                experiment,
                t0_ms: exposure.ts_ms,
                variation: exposure.variation,
                attributes: exposure.attributes,
                keys: Vec::new(),
            },
        );
    }
    for frozen in &mut folded {
        for event in events.iter().filter(|event| event.ts_ms >= frozen.t0_ms) {
            let Some(key) = &event.key else { continue };
            let position = frozen.keys.partition_point(|held| held.key < *key);
            if frozen
                .keys
                .get(position)
                .is_none_or(|held| held.key != *key)
            {
                frozen.keys.insert(
                    position,
                    FrozenKey {
                        key: Arc::clone(key),
                        converted: false,
                        value_sum_micros: 0,
                    },
                );
            }
            let held = &mut frozen.keys[position];
            held.converted = true;
            held.value_sum_micros += i128::from(event.value_micros);
        }
    }
    folded
}

fn find_frozen<'a>(frozen: &'a [FrozenExposure], experiment: &str) -> Option<&'a FrozenExposure> {
    frozen
        .binary_search_by(|held| held.experiment.as_ref().cmp(experiment))
        .ok()
        .map(|index| &frozen[index])
}

/// A visitor's frozen summary and (some of) its events, borrowed: the
/// contribution function works on the whole visitor or on a suffix of it.
struct View<'a> {
    frozen: &'a [FrozenExposure],
    events: &'a [Event],
}

impl View<'_> {
    fn frozen_exposure(&self, experiment: &str) -> Option<&FrozenExposure> {
        find_frozen(self.frozen, experiment)
    }

    /// The contribution of these events given this summary.
    fn contribute(&self, settings: &Settings) -> Contribution {
        let sessions = split_sessions(settings, self.events);
        // About six entries per event and one active cell per event for
        // one experiment: sized once instead of grown by doubling.
        let mut contribution = Contribution {
            entries: Vec::with_capacity(8 + 6 * self.events.len()),
            active: Vec::with_capacity(1 + self.events.len()),
        };
        let mut experiments: Vec<Arc<str>> = self
            .frozen
            .iter()
            .map(|frozen| Arc::clone(&frozen.experiment))
            .collect();
        experiments.extend(experiments_in(self.events));
        experiments.sort();
        experiments.dedup();
        for experiment in experiments {
            self.contribute_experiment(settings, &sessions, &experiment, &mut contribution);
        }
        contribution.normalise()
    }

    fn contribute_experiment(
        &self,
        settings: &Settings,
        sessions: &[std::ops::Range<usize>],
        experiment: &Arc<str>,
        contribution: &mut Contribution,
    ) {
        let exposure = self.exposure(experiment);
        let assignment = Arc::new(Assignment {
            variation: Arc::clone(&exposure.variation),
            breakdown: breakdown_of(settings, &exposure.attributes),
        });
        let mut emit = |bucket_ms: i64, metric: Metric, amount: i128| {
            contribution.entries.push(Entry {
                experiment: Arc::clone(experiment),
                assignment: Arc::clone(&assignment),
                bucket_ms,
                metric,
                amount,
            });
        };
        if exposure.retained {
            emit(settings.bucket_of(exposure.t0_ms), Metric::Visitors, 1);
        }
        for (event_index, decision_index, event) in self.decisions_of(experiment) {
            let is_exposure =
                exposure.retained && exposure.position == (event_index, decision_index);
            let named = &event.decisions()[decision_index].1;
            let bucket_ms = settings.bucket_of(event.ts_ms);
            emit(bucket_ms, Metric::DecisionsNaming(Arc::clone(named)), 1);
            if !is_exposure && **named != *exposure.variation {
                emit(bucket_ms, Metric::Conflicts, 1);
            }
        }
        let mut keys: BTreeMap<Arc<str>, (bool, i128)> = exposure
            .keys
            .iter()
            .map(|key| (Arc::clone(&key.key), (key.converted, key.value_sum_micros)))
            .collect();
        for event in self
            .events
            .iter()
            .filter(|event| event.ts_ms >= exposure.t0_ms)
        {
            let bucket_ms = settings.bucket_of(event.ts_ms);
            contribution.active.push(ActiveCell {
                experiment: Arc::clone(experiment),
                assignment: Arc::clone(&assignment),
                bucket_ms,
            });
            let Some(key) = &event.key else { continue };
            let (converted, value_sum_micros) = keys.entry(Arc::clone(key)).or_insert((false, 0));
            let value = i128::from(event.value_micros);
            emit(bucket_ms, Metric::TotalConversions(Arc::clone(key)), 1);
            emit(bucket_ms, Metric::ValueSumMicros(Arc::clone(key)), value);
            // (S + x)² − S² = 2·S·x + x²: the bucketed, exactly retractable
            // form of the per-visitor sum of squares.
            emit(
                bucket_ms,
                Metric::ValueSumSquaresMicros(Arc::clone(key)),
                2 * *value_sum_micros * value + value * value,
            );
            *value_sum_micros += value;
            if !*converted {
                *converted = true;
                emit(bucket_ms, Metric::UniqueConversions(Arc::clone(key)), 1);
            }
        }
        for session in sessions {
            let events = &self.events[session.clone()];
            let first = &events[0];
            let last = &events[events.len() - 1];
            if exposure.t0_ms > last.ts_ms {
                continue;
            }
            let bucket_ms = settings.bucket_of(first.ts_ms);
            emit(bucket_ms, Metric::Sessions, 1);
            if events.len() == 1 {
                emit(bucket_ms, Metric::BouncedSessions, 1);
            }
            emit(
                bucket_ms,
                Metric::DurationMsSum,
                i128::from(last.ts_ms - first.ts_ms),
            );
            let pageviews = events
                .iter()
                .filter(|event| event.kind == EventKind::Pageview)
                .count();
            emit(bucket_ms, Metric::PageviewsSum, pageviews as i128);
            let mut converted_keys: Vec<&Arc<str>> = events
                .iter()
                .filter(|event| event.ts_ms >= exposure.t0_ms)
                .filter_map(|event| event.key.as_ref())
                .collect();
            converted_keys.sort();
            converted_keys.dedup();
            for key in converted_keys {
                emit(
                    bucket_ms,
                    Metric::SessionsWithConversion(Arc::clone(key)),
                    1,
                );
            }
        }
    }

    /// Every decision for `experiment` among the retained events, in order,
    /// as (event index, decision index, event).
    fn decisions_of<'a>(
        &'a self,
        experiment: &'a str,
    ) -> impl Iterator<Item = (usize, usize, &'a Event)> + 'a {
        self.events
            .iter()
            .enumerate()
            .flat_map(move |(event_index, event)| {
                event
                    .decisions()
                    .iter()
                    .enumerate()
                    .filter(move |(_, (name, _))| **name == *experiment)
                    .map(move |(decision_index, _)| (event_index, decision_index, event))
            })
    }

    fn exposure(&self, experiment: &str) -> Exposure {
        if let Some(frozen) = self.frozen_exposure(experiment) {
            return Exposure {
                t0_ms: frozen.t0_ms,
                variation: Arc::clone(&frozen.variation),
                attributes: frozen.attributes.clone(),
                keys: frozen.keys.clone(),
                retained: false,
                position: (0, 0),
            };
        }
        let (event_index, decision_index, event) = self
            .decisions_of(experiment)
            .next()
            .expect("experiment comes from the frozen exposures or the retained decisions");
        Exposure {
            t0_ms: event.ts_ms,
            variation: Arc::clone(&event.decisions()[decision_index].1),
            attributes: event.attributes().to_vec(),
            keys: Vec::new(),
            retained: true,
            position: (event_index, decision_index),
        }
    }
}

/// A visitor's exposure to one experiment, wherever it lies.
struct Exposure {
    t0_ms: i64,
    variation: Arc<str>,
    attributes: Vec<(Arc<str>, Arc<str>)>,
    keys: Vec<FrozenKey>,
    /// The exposure event is among the retained events (at `position`).
    retained: bool,
    position: (usize, usize),
}

/// The first decision for `experiment` in `events` (sorted).
struct FirstDecision {
    ts_ms: i64,
    variation: Arc<str>,
    attributes: Vec<(Arc<str>, Arc<str>)>,
}

fn first_decision(events: &[Event], experiment: &str) -> Option<FirstDecision> {
    events.iter().find_map(|event| {
        let (_, variation) = event
            .decisions()
            .iter()
            .find(|(name, _)| **name == *experiment)?;
        Some(FirstDecision {
            ts_ms: event.ts_ms,
            variation: Arc::clone(variation),
            attributes: event.attributes().to_vec(),
        })
    })
}

fn experiments_in(events: &[Event]) -> Vec<Arc<str>> {
    let mut experiments: Vec<Arc<str>> = events
        .iter()
        .flat_map(|event| {
            event
                .decisions()
                .iter()
                .map(|(experiment, _)| Arc::clone(experiment))
        })
        .collect();
    experiments.sort();
    experiments.dedup();
    experiments
}

fn breakdown_of(
    settings: &Settings,
    attributes: &[(Arc<str>, Arc<str>)],
) -> Vec<(Arc<str>, Arc<str>)> {
    settings
        .breakdown_attributes
        .iter()
        .map(|name| {
            let value = attributes
                .iter()
                .find(|(attribute, _)| attribute == name)
                .map(|(_, value)| Arc::clone(value))
                .unwrap_or_else(|| Arc::from(NONE_VALUE));
            (Arc::clone(name), value)
        })
        .collect()
}

/// Cuts sorted events into sessions (docs/semantics.md, Sessions).
pub fn split_sessions(settings: &Settings, events: &[Event]) -> Vec<std::ops::Range<usize>> {
    let mut sessions = Vec::new();
    let Some(first) = events.first() else {
        return sessions;
    };
    let mut start = 0;
    let mut start_date = local_date(settings, first.ts_ms);
    for index in 1..events.len() {
        let ts_ms = events[index].ts_ms;
        let gap_exceeded = ts_ms - events[index - 1].ts_ms > settings.session_gap_ms;
        let max_exceeded = ts_ms - events[start].ts_ms > settings.session_max_ms;
        let date = local_date(settings, ts_ms);
        if gap_exceeded || max_exceeded || date != start_date {
            sessions.push(start..index);
            start = index;
            start_date = date;
        }
    }
    sessions.push(start..events.len());
    sessions
}

/// The calendar date in the project's time zone, or a constant when the
/// project does not split at midnight.
fn local_date(settings: &Settings, ts_ms: i64) -> Option<chrono::NaiveDate> {
    use chrono::TimeZone;
    if !settings.midnight_split {
        return None;
    }
    settings
        .time_zone
        .timestamp_millis_opt(ts_ms)
        .single()
        .map(|time| time.date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::contribution::difference;

    const MINUTE_MS: i64 = 60_000;
    const HOUR_MS: i64 = 60 * MINUTE_MS;

    fn event(id: &str, ts_ms: i64, kind: EventKind, key: Option<&str>, value_micros: i64) -> Event {
        Event {
            id: id.into(),
            ts_ms,
            value_micros,
            key: key.map(Arc::from),
            decision: None,
            kind,
        }
    }

    fn decision(id: &str, ts_ms: i64, variation: &str) -> Event {
        let mut decision = event(id, ts_ms, EventKind::Decision, None, 0);
        decision.set_name_pairs(
            vec![(Arc::from("browser"), Arc::from("firefox"))],
            vec![(Arc::from("x"), Arc::from(variation))],
        );
        decision
    }

    fn total(contribution: &Contribution, metric: &Metric) -> i128 {
        contribution
            .entries
            .iter()
            .filter(|entry| entry.metric == *metric)
            .map(|entry| entry.amount)
            .sum()
    }

    #[test]
    fn sessions_split_on_gap_and_max() {
        let settings = Settings::default();
        let events: Vec<Event> = [0, 10 * MINUTE_MS, 50 * MINUTE_MS, 51 * MINUTE_MS]
            .iter()
            .enumerate()
            .map(|(index, &ts_ms)| event(&format!("e{index}"), ts_ms, EventKind::Pageview, None, 0))
            .collect();
        assert_eq!(split_sessions(&settings, &events), vec![0..2, 2..4]);
        let short_max = Settings {
            session_max_ms: 5 * MINUTE_MS,
            ..Settings::default()
        };
        assert_eq!(split_sessions(&short_max, &events), vec![0..1, 1..2, 2..4]);
    }

    #[test]
    fn late_decision_makes_earlier_conversions_count() {
        let settings = Settings::default();
        let mut visitor = Visitor::default();
        visitor.insert(event(
            "p",
            10 * MINUTE_MS,
            EventKind::Custom,
            Some("buy"),
            5_000_000,
        ));
        let before = visitor.contribute(&settings);
        assert!(before.entries.is_empty(), "no exposure, no contribution");
        visitor.insert(decision("d", 5 * MINUTE_MS, "a"));
        let after = visitor.contribute(&settings);
        let key = Arc::from("buy");
        assert_eq!(total(&after, &Metric::Visitors), 1);
        assert_eq!(
            total(&after, &Metric::UniqueConversions(Arc::clone(&key))),
            1
        );
        assert_eq!(
            total(&after, &Metric::ValueSumMicros(Arc::clone(&key))),
            5_000_000
        );
        assert_eq!(total(&after, &Metric::Sessions), 1);
        assert_eq!(
            total(&after, &Metric::DurationMsSum),
            i128::from(5 * MINUTE_MS)
        );
        assert_eq!(
            difference(&before, &after).entries.len(),
            after.entries.len()
        );
    }

    #[test]
    fn late_event_merges_two_sessions_with_exact_retraction() {
        let settings = Settings::default();
        let mut visitor = Visitor::default();
        visitor.insert(decision("d", 0, "a"));
        visitor.insert(event("p2", 40 * MINUTE_MS, EventKind::Pageview, None, 0));
        let before = visitor.contribute(&settings);
        assert_eq!(total(&before, &Metric::Sessions), 2);
        assert_eq!(total(&before, &Metric::BouncedSessions), 2);
        visitor.insert(event("p1", 20 * MINUTE_MS, EventKind::Pageview, None, 0));
        let after = visitor.contribute(&settings);
        assert_eq!(total(&after, &Metric::Sessions), 1);
        assert_eq!(total(&after, &Metric::BouncedSessions), 0);
        let change = difference(&before, &after);
        let sessions_change: i128 = change
            .entries
            .iter()
            .filter(|entry| entry.metric == Metric::Sessions)
            .map(|entry| entry.amount)
            .sum();
        assert_eq!(sessions_change, -1);
    }

    #[test]
    fn first_decision_is_sticky_and_later_conflicts_are_counted() {
        let settings = Settings::default();
        let mut visitor = Visitor::default();
        visitor.insert(decision("d2", 2 * MINUTE_MS, "b"));
        visitor.insert(decision("d1", MINUTE_MS, "a"));
        visitor.insert(decision("d3", 3 * MINUTE_MS, "a"));
        let contribution = visitor.contribute(&settings);
        assert!(contribution
            .entries
            .iter()
            .all(|entry| *entry.assignment.variation == *"a"));
        assert_eq!(total(&contribution, &Metric::Conflicts), 1);
        assert_eq!(
            visitor.insert(decision("d3", 3 * MINUTE_MS, "a")),
            Insert::Duplicate
        );
    }

    #[test]
    fn freezing_keeps_future_contributions_consistent() {
        let settings = Settings::default();
        let key = Arc::from("buy");
        let mut frozen = Visitor::default();
        frozen.insert(decision("d", 0, "a"));
        frozen.insert(event(
            "c1",
            MINUTE_MS,
            EventKind::Custom,
            Some("buy"),
            2_000_000,
        ));
        let mut unfrozen = frozen.clone();
        let late_ms = 3 * 24 * HOUR_MS;
        frozen.freeze(&settings, late_ms);
        assert!(frozen.events().is_empty());
        assert_eq!(frozen.frozen().len(), 1);
        let later = event("c2", late_ms, EventKind::Custom, Some("buy"), 3_000_000);
        let frozen_before = frozen.contribute(&settings);
        frozen.insert(later.clone());
        let frozen_change = difference(&frozen_before, &frozen.contribute(&settings));
        let unfrozen_before = unfrozen.contribute(&settings);
        unfrozen.insert(later);
        let unfrozen_change = difference(&unfrozen_before, &unfrozen.contribute(&settings));
        assert_eq!(
            frozen_change, unfrozen_change,
            "freezing must not change later deltas"
        );
        let squares: i128 = frozen_change
            .entries
            .iter()
            .filter(|entry| entry.metric == Metric::ValueSumSquaresMicros(Arc::clone(&key)))
            .map(|entry| entry.amount)
            .sum();
        assert_eq!(squares, 2 * 2_000_000 * 3_000_000 + 3_000_000 * 3_000_000);
    }

    #[test]
    fn midnight_split_uses_the_project_time_zone() {
        let settings = Settings {
            midnight_split: true,
            time_zone: chrono_tz::Tz::Europe__Paris,
            ..Settings::default()
        };
        // 22:50 and 23:10 UTC in winter are 23:50 and 00:10 in Paris.
        let day_ms = 24 * HOUR_MS;
        let events = vec![
            event("a", day_ms - 70 * MINUTE_MS, EventKind::Pageview, None, 0),
            event("b", day_ms - 50 * MINUTE_MS, EventKind::Pageview, None, 0),
        ];
        assert_eq!(split_sessions(&settings, &events), vec![0..1, 1..2]);
        let utc = Settings {
            time_zone: chrono_tz::Tz::UTC,
            ..settings
        };
        assert_eq!(split_sessions(&utc, &events), vec![0..2]);
    }

    mod suffix_difference {
        use super::*;
        use proptest::prelude::*;

        /// (minute, kind, key?, value, decision variation?) of a small event.
        fn event_strategy() -> impl Strategy<Value = (i64, u8, Option<u8>, i64, Option<u8>)> {
            (
                0_i64..(3 * 24 * 60),
                0_u8..4,
                proptest::option::of(0_u8..2),
                0_i64..5_000_000,
                proptest::option::weighted(0.3, 0_u8..3),
            )
        }

        fn build(index: usize, spec: (i64, u8, Option<u8>, i64, Option<u8>)) -> Event {
            let (minute, kind, key, value_micros, decision) = spec;
            let kind = [
                EventKind::Pageview,
                EventKind::Click,
                EventKind::Custom,
                EventKind::Decision,
            ][kind as usize];
            let key = key.map(|key| Arc::from(["buy", "signup"][key as usize]));
            let mut event = event(
                &format!("e{index:03}"),
                minute * MINUTE_MS,
                kind,
                None,
                value_micros,
            );
            event.key = key;
            if let Some(variation) = decision {
                event.set_name_pairs(
                    vec![(
                        Arc::from("browser"),
                        Arc::from(["ff", "chrome", "safari"][variation as usize]),
                    )],
                    vec![(
                        Arc::from("x"),
                        Arc::from(["a", "b", "c"][variation as usize]),
                    )],
                );
            }
            event
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// The suffix-only difference of `insert_all` equals the
            /// whole-visitor difference, for any split into "held" and
            /// "new" events and any order, with midnight splits on.
            #[test]
            fn insert_all_matches_the_whole_visitor_difference(
                specs in proptest::collection::vec(event_strategy(), 1..24),
                held_count in 0_usize..24,
                seed in any::<u64>(),
            ) {
                let settings = Settings {
                    midnight_split: true,
                    session_max_ms: 2 * HOUR_MS,
                    breakdown_attributes: vec![Arc::from("browser")],
                    ..Settings::default()
                };
                let mut events: Vec<Event> = specs.into_iter().enumerate().map(|(index, spec)| build(index, spec)).collect();
                // A deterministic shuffle from the seed.
                let mut state = seed | 1;
                for index in (1..events.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    events.swap(index, (state % (index as u64 + 1)) as usize);
                }
                let held_count = held_count.min(events.len());
                let new_events = events.split_off(held_count);
                let mut visitor = Visitor::default();
                for event in events {
                    visitor.insert(event);
                }
                let mut whole = visitor.clone();
                let before = whole.contribute(&settings);
                for event in new_events.clone() {
                    whole.insert(event);
                }
                let after = whole.contribute(&settings);
                let expected = difference(&before, &after);
                let (_, actual) = visitor.insert_all(&settings, new_events);
                prop_assert_eq!(&actual.entries, &expected.entries);
                // Sketch insertions may repeat cells the visitor is already
                // active in (an idempotent no-op), but must cover every new
                // one and nothing it is not active in.
                for cell in &expected.active_added {
                    prop_assert!(actual.active_added.contains(cell));
                }
                for cell in &actual.active_added {
                    prop_assert!(after.active.contains(cell));
                }
                prop_assert_eq!(visitor, whole);
            }
        }
    }
}
