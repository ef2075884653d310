//! A seeded generator of realistic event streams and of their arrival order.
//!
//! The generator first builds what "really happened" (per-visitor sessions,
//! decisions, conversions, in event time), then decides how it reaches the
//! node: shuffled within a bounded delay, with exact re-sent duplicates and
//! with decisions delivered after the visitor's later events. The oracle only
//! ever sees `Workload::distinct`; the node sees `Workload::arrival`.

use chrono::{DateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sessiondb_protocol::{Decision, Event, EventType, Timestamp};
use std::collections::BTreeMap;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Purchase values: integers, halves, values with many decimals and one
/// refund, so that micro-unit rounding and signed sums are exercised.
const PURCHASE_VALUES: &[f64] = &[
    12.5,
    9.99,
    100.0,
    0.333_333_3,
    1_234.567_890_1,
    2_000.000_000_5,
    49.0,
    0.000_001,
    -3.5,
    19.95,
];

/// Skewed breakdown attribute distributions: (value, weight). A share of
/// visitors lacks each attribute, so `(none)` groups appear.
const BROWSERS: &[(&str, u32)] = &[("chrome", 60), ("safari", 20), ("firefox", 12), ("edge", 8)];
const DEVICES: &[(&str, u32)] = &[("desktop", 55), ("mobile", 40), ("tablet", 5)];
const COUNTRIES: &[(&str, u32)] = &[
    ("us", 40),
    ("de", 15),
    ("fr", 10),
    ("gb", 10),
    ("jp", 8),
    ("br", 7),
    ("in", 6),
    ("nz", 4),
];

/// What to generate. `WorkloadConfig::new` gives sensible defaults; tests
/// override fields.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub project: String,
    pub visitors: usize,
    pub experiments: usize,
    pub variations_per_experiment: usize,
    /// Keys of conversions; the first two are treated as `add_to_cart`-like
    /// (mostly no value) and `purchase`-like (with revenue).
    pub conversion_keys: Vec<String>,
    /// Every event time lies in `[base_ms, base_ms + span_ms)`.
    pub base_ms: i64,
    pub span_ms: i64,
    /// The session gap the workload is built around: some gaps are exactly
    /// it, just under it or just over it.
    pub session_gap_ms: i64,
    /// Time zone whose midnights some sessions straddle.
    pub time_zone: Tz,
    /// Share of events sent a second time (same id, same content).
    pub duplicate_share: f64,
    /// Share of decision events delivered after the visitor's later events.
    pub late_decision_share: f64,
    /// No event (original or copy) arrives more than this after its own
    /// event time. Tests keep it below the project's allowed lateness.
    pub max_delay_ms: i64,
    /// Share of events whose `ts` is sent as an RFC 3339 string.
    pub rfc3339_share: f64,
    /// Largest number of events of one visitor (before decisions).
    pub events_per_visitor_max: usize,
}

impl WorkloadConfig {
    pub fn new(seed: u64, project: &str) -> Self {
        WorkloadConfig {
            seed,
            project: project.to_string(),
            visitors: 1_000,
            experiments: 3,
            variations_per_experiment: 3,
            conversion_keys: vec![
                "add_to_cart".to_string(),
                "purchase".to_string(),
                "signup".to_string(),
            ],
            // 2025-11-20T00:00:00Z
            base_ms: 1_763_596_800_000,
            span_ms: 6 * DAY_MS,
            session_gap_ms: 30 * MINUTE_MS,
            time_zone: chrono_tz::UTC,
            duplicate_share: 0.05,
            late_decision_share: 0.2,
            max_delay_ms: 6 * DAY_MS,
            rfc3339_share: 0.05,
            events_per_visitor_max: 60,
        }
    }

    pub fn experiment_names(&self) -> Vec<String> {
        (0..self.experiments).map(|i| format!("exp-{i}")).collect()
    }

    pub fn variation_names(&self) -> Vec<String> {
        (0..self.variations_per_experiment)
            .map(|i| match i {
                0 => "control".to_string(),
                n => format!("treatment-{n}"),
            })
            .collect()
    }
}

/// A generated workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Events in the order they are sent, duplicates included.
    pub arrival: Vec<Event>,
    /// When each event of `arrival` reaches the node (ms, same clock as event
    /// times); non-decreasing, and never before the event's own time.
    pub arrival_ms: Vec<i64>,
    /// Every distinct event once, in generation order.
    pub distinct: Vec<Event>,
    /// How many extra copies `arrival` holds (`arrival.len() - distinct.len()`).
    pub resent_copies: usize,
}

/// Event time of an event in ms, whichever wire form it uses.
pub fn ts_ms(event: &Event) -> i64 {
    match &event.ts {
        Timestamp::Milliseconds(ms) => *ms,
        Timestamp::Rfc3339(text) => DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("bad RFC 3339 timestamp {text:?}: {e}"))
            .timestamp_millis(),
    }
}

/// One JSON object per line, as the NDJSON import path reads them.
pub fn to_ndjson(events: &[Event]) -> String {
    let mut out = String::new();
    for event in events {
        out.push_str(&serde_json::to_string(event).expect("an Event serializes"));
        out.push('\n');
    }
    out
}

/// The same events addressed to another project (ids stay unique there).
pub fn with_project(events: &[Event], project: &str) -> Vec<Event> {
    events
        .iter()
        .map(|e| Event {
            project: project.to_string(),
            ..e.clone()
        })
        .collect()
}

impl Workload {
    /// The arrival order cut into batches: a batch never covers more than
    /// `window_ms` of arrival time nor more than `events_max` events. Each
    /// batch comes with the clock to set before sending it (its last arrival
    /// time), so every event of a batch is at most `window_ms + max_delay_ms`
    /// old when it is sent, and none is in the future.
    pub fn batches(&self, window_ms: i64, events_max: usize) -> Vec<(i64, Vec<Event>)> {
        let mut batches: Vec<(i64, Vec<Event>)> = Vec::new();
        let mut window_start = i64::MIN;
        for (event, &arrival) in self.arrival.iter().zip(&self.arrival_ms) {
            let start_new = match batches.last() {
                None => true,
                Some((_, events)) => {
                    arrival - window_start > window_ms || events.len() >= events_max
                }
            };
            if start_new {
                window_start = arrival;
                batches.push((arrival, Vec::new()));
            }
            let batch = batches.last_mut().expect("a batch was just pushed");
            batch.0 = arrival;
            batch.1.push(event.clone());
        }
        batches
    }

    pub fn max_ts_ms(&self) -> i64 {
        self.distinct.iter().map(ts_ms).max().unwrap_or(0)
    }

    pub fn min_ts_ms(&self) -> i64 {
        self.distinct.iter().map(ts_ms).min().unwrap_or(0)
    }
}

/// Kinds of events in a visitor's raw timeline, before ids are given.
#[derive(Debug, Clone)]
struct Draft {
    ts: i64,
    event_type: EventType,
    key: Option<String>,
    value: Option<f64>,
    attributes: BTreeMap<String, String>,
    decisions: Vec<Decision>,
}

fn pick_weighted<'a>(rng: &mut ChaCha8Rng, table: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total);
    for (value, weight) in table {
        if roll < *weight {
            return value;
        }
        roll -= weight;
    }
    unreachable!("roll is below the total weight")
}

/// The start of the local day (in `tz`) that contains `utc_ms`, in ms.
fn local_midnight_ms(tz: Tz, utc_ms: i64) -> i64 {
    let local_date = DateTime::from_timestamp_millis(utc_ms)
        .expect("timestamp in range")
        .with_timezone(&tz)
        .date_naive();
    let naive = local_date.and_time(NaiveTime::MIN);
    match tz.from_local_datetime(&naive).earliest() {
        Some(dt) => dt.timestamp_millis(),
        // Midnight skipped by a DST change: the day starts at 01:00.
        None => tz
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .expect("01:00 exists when midnight does not")
            .timestamp_millis(),
    }
}

/// Generates a workload. Deterministic in `config`.
pub fn generate(config: &WorkloadConfig) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let experiments = config.experiment_names();
    let variations = config.variation_names();
    let end_ms = config.base_ms + config.span_ms;

    let mut distinct: Vec<Event> = Vec::new();
    // Per distinct event: its visitor's last event time, to deliver late
    // decisions after it.
    let mut visitor_last_ts: Vec<i64> = Vec::new();
    let mut id_counter: u64 = 0;

    for visitor_index in 0..config.visitors {
        let visitor = format!("v{}-{visitor_index}", config.seed);
        let mut attributes = BTreeMap::new();
        for (name, table, absent_share) in [
            ("browser", BROWSERS, 0.03),
            ("device", DEVICES, 0.05),
            ("country", COUNTRIES, 0.05),
        ] {
            if !rng.gen_bool(absent_share) {
                attributes.insert(name.to_string(), pick_weighted(&mut rng, table).to_string());
            }
        }
        if rng.gen_bool(0.1) {
            attributes.insert("campaign".to_string(), format!("c{}", rng.gen_range(0..3)));
        }

        let mut timeline = visitor_timeline(config, &mut rng, end_ms, &attributes);
        add_decisions(
            config,
            &mut rng,
            &mut timeline,
            &experiments,
            &variations,
            &attributes,
        );

        let last_ts = timeline
            .iter()
            .map(|d| d.ts)
            .max()
            .unwrap_or(config.base_ms);
        for draft in timeline {
            // A random prefix gives ids a random byte order among events of
            // equal time (the tie-break); the counter keeps them unique.
            let id = format!("{:04x}-{id_counter}", rng.gen::<u16>());
            id_counter += 1;
            let ts = if rng.gen_bool(config.rfc3339_share) {
                let text = DateTime::from_timestamp_millis(draft.ts)
                    .expect("timestamp in range")
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string();
                Timestamp::Rfc3339(text)
            } else {
                Timestamp::Milliseconds(draft.ts)
            };
            distinct.push(Event {
                id,
                project: config.project.clone(),
                visitor: visitor.clone(),
                ts,
                event_type: draft.event_type,
                key: draft.key,
                value: draft.value,
                attributes: draft.attributes,
                decisions: draft.decisions,
            });
            visitor_last_ts.push(last_ts);
        }
    }

    let (arrival, arrival_ms, resent_copies) =
        arrival_order(config, &mut rng, &distinct, &visitor_last_ts);
    Workload {
        arrival,
        arrival_ms,
        distinct,
        resent_copies,
    }
}

/// Gap between two events of one session, sometimes right at the session
/// gap so that the `>` in the definition matters.
fn intra_session_gap(config: &WorkloadConfig, rng: &mut ChaCha8Rng) -> i64 {
    let gap = config.session_gap_ms;
    match rng.gen_range(0..100) {
        0..=2 => 0, // same ms: the id breaks the tie
        3 => gap,   // exactly the gap: same session
        4 => gap - rng.gen_range(1..2_000),
        5 => gap + rng.gen_range(1..2_000),
        6..=20 => rng.gen_range(1_000..gap / 3),
        _ => rng.gen_range(500..gap / 10),
    }
}

fn inter_session_gap(config: &WorkloadConfig, rng: &mut ChaCha8Rng) -> i64 {
    let gap = config.session_gap_ms;
    match rng.gen_range(0..10) {
        0..=5 => gap + rng.gen_range(1..3 * HOUR_MS),
        _ => rng.gen_range(3 * HOUR_MS..2 * DAY_MS),
    }
}

fn pick_key_event(config: &WorkloadConfig, rng: &mut ChaCha8Rng) -> (Option<String>, Option<f64>) {
    let keys = &config.conversion_keys;
    let roll = rng.gen_range(0..100);
    if roll < 55 || keys.len() < 2 {
        let value = if rng.gen_bool(0.3) { Some(1.0) } else { None };
        (Some(keys[0].clone()), value)
    } else if roll < 85 || keys.len() < 3 {
        let value = PURCHASE_VALUES[rng.gen_range(0..PURCHASE_VALUES.len())];
        (Some(keys[1].clone()), Some(value))
    } else {
        let key = keys[rng.gen_range(2..keys.len())].clone();
        (Some(key), None)
    }
}

/// The visitor's own activity (no decisions yet), in event time order.
fn visitor_timeline(
    config: &WorkloadConfig,
    rng: &mut ChaCha8Rng,
    end_ms: i64,
    attributes: &BTreeMap<String, String>,
) -> Vec<Draft> {
    let mut t = config.base_ms + rng.gen_range(0..config.span_ms * 9 / 10);
    if rng.gen_bool(0.12) {
        // Start just before a local midnight so the session straddles it.
        let day_ms = config.base_ms + rng.gen_range(DAY_MS..config.span_ms.max(DAY_MS + 1));
        let midnight = local_midnight_ms(config.time_zone, day_ms);
        t = (midnight - rng.gen_range(1..40 * MINUTE_MS)).max(config.base_ms);
    }
    let sessions = match rng.gen_range(0..10) {
        0..=4 => 1,
        5..=7 => 2,
        8 => 3,
        _ => 5,
    };
    let mut timeline = Vec::new();
    'sessions: for session in 0..sessions {
        if session > 0 {
            t += inter_session_gap(config, rng);
        }
        let long = rng.gen_bool(0.08);
        let events = if long {
            rng.gen_range(15..35)
        } else {
            rng.gen_range(1..9)
        };
        for n in 0..events {
            if n > 0 {
                t += if long {
                    rng.gen_range(4 * MINUTE_MS..10 * MINUTE_MS)
                } else {
                    intra_session_gap(config, rng)
                };
            }
            if t >= end_ms || timeline.len() >= config.events_per_visitor_max {
                break 'sessions;
            }
            let roll = rng.gen_range(0..100);
            let (event_type, key, value) = if roll < 55 {
                // A few pageviews carry a key (e.g. a "thank you" page).
                let (key, value) = if rng.gen_bool(0.03) {
                    (
                        Some(config.conversion_keys.last().cloned().unwrap_or_default()),
                        None,
                    )
                } else {
                    (None, None)
                };
                (EventType::Pageview, key, value)
            } else if roll < 75 {
                let (key, value) = if rng.gen_bool(0.2) {
                    (Some(config.conversion_keys[0].clone()), None)
                } else {
                    (None, None)
                };
                (EventType::Click, key, value)
            } else {
                let (key, value) = pick_key_event(config, rng);
                (EventType::Custom, key, value)
            };
            let attributes = if rng.gen_bool(0.5) {
                attributes.clone()
            } else {
                BTreeMap::new()
            };
            timeline.push(Draft {
                ts: t,
                event_type,
                key,
                value,
                attributes,
                decisions: Vec::new(),
            });
        }
    }
    if timeline.is_empty() {
        // The start was near the end of the span: one pageview inside it.
        timeline.push(Draft {
            ts: end_ms - rng.gen_range(1..HOUR_MS),
            event_type: EventType::Pageview,
            key: None,
            value: None,
            attributes: attributes.clone(),
            decisions: Vec::new(),
        });
    }
    timeline
}

/// The attributes a decision event carries: usually the visitor's, sometimes
/// with a different browser (the breakdown must use the exposure event's).
fn decision_attributes(
    rng: &mut ChaCha8Rng,
    attributes: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = attributes.clone();
    if rng.gen_bool(0.1) {
        out.insert(
            "browser".to_string(),
            pick_weighted(rng, BROWSERS).to_string(),
        );
    }
    if rng.gen_bool(0.03) {
        out.remove("country");
    }
    out
}

/// Adds exposures, repeated and conflicting decisions to a timeline.
fn add_decisions(
    config: &WorkloadConfig,
    rng: &mut ChaCha8Rng,
    timeline: &mut Vec<Draft>,
    experiments: &[String],
    variations: &[String],
    attributes: &BTreeMap<String, String>,
) {
    let activity_len = timeline.len();
    // Index of a decision event created for this visitor, so that a later
    // experiment can share it (several decisions in one event).
    let mut shared_decision_event: Option<usize> = None;
    for experiment in experiments {
        if !rng.gen_bool(0.75) {
            continue;
        }
        let variation = variations[rng.gen_range(0..variations.len())].clone();
        let decision = Decision {
            experiment: experiment.clone(),
            variation: variation.clone(),
        };
        // Exposure is usually early in the visit, sometimes in the middle
        // (so that earlier conversions must not count).
        let anchor = if rng.gen_bool(0.6) {
            0
        } else {
            rng.gen_range(0..activity_len)
        };
        let anchor_ts = timeline[anchor].ts;
        let roll = rng.gen_range(0..100);
        let exposure_ts;
        if roll < 25 {
            // The decision rides on an existing event of any type.
            timeline[anchor].decisions.push(decision);
            exposure_ts = anchor_ts;
        } else if roll < 40 && shared_decision_event.is_some() {
            let index = shared_decision_event.expect("checked");
            timeline[index].decisions.push(decision);
            exposure_ts = timeline[index].ts;
        } else {
            let ts = match rng.gen_range(0..10) {
                0..=2 => anchor_ts, // tie with the anchor event
                3..=5 => anchor_ts - rng.gen_range(1..5_000),
                _ => anchor_ts + rng.gen_range(1..5_000),
            };
            let ts = ts.max(config.base_ms);
            exposure_ts = ts;
            let mut decisions = vec![decision];
            if rng.gen_bool(0.02) {
                // Same event, same experiment, different variation: the
                // first in list order wins, the second is a conflict.
                let other = variations[rng.gen_range(0..variations.len())].clone();
                decisions.push(Decision {
                    experiment: experiment.clone(),
                    variation: other,
                });
            }
            timeline.push(Draft {
                ts,
                event_type: EventType::Decision,
                key: None,
                value: None,
                attributes: decision_attributes(rng, attributes),
                decisions,
            });
            shared_decision_event = Some(timeline.len() - 1);
        }

        // Later decisions for the same experiment: agreeing or conflicting.
        let repeats = match rng.gen_range(0..100) {
            0..=11 => 1,
            12..=14 => 2,
            _ => 0,
        };
        for _ in 0..repeats {
            let later = timeline[rng.gen_range(0..activity_len)].ts;
            let conflicting = rng.gen_bool(0.7) && variations.len() > 1;
            let other = if conflicting {
                let mut v = variation.clone();
                while v == variation {
                    v = variations[rng.gen_range(0..variations.len())].clone();
                }
                v
            } else {
                variation.clone()
            };
            // Sometimes at the very same time as the exposure (the id then
            // decides which is first), sometimes earlier than it (then it
            // *is* the exposure and the first one becomes the conflict).
            let ts = if rng.gen_bool(0.3) {
                exposure_ts
            } else {
                (later + rng.gen_range(-60_000..60 * MINUTE_MS)).max(config.base_ms)
            };
            timeline.push(Draft {
                ts,
                event_type: EventType::Decision,
                key: None,
                value: None,
                attributes: decision_attributes(rng, attributes),
                decisions: vec![Decision {
                    experiment: experiment.clone(),
                    variation: other,
                }],
            });
        }
    }
    let end_ms = config.base_ms + config.span_ms;
    for draft in timeline.iter_mut() {
        draft.ts = draft.ts.min(end_ms - 1);
    }
    timeline.sort_by_key(|d| d.ts);
}

/// Decides when each event (and each re-sent copy) reaches the node.
fn arrival_order(
    config: &WorkloadConfig,
    rng: &mut ChaCha8Rng,
    distinct: &[Event],
    visitor_last_ts: &[i64],
) -> (Vec<Event>, Vec<i64>, usize) {
    let max_delay = config.max_delay_ms.max(0);
    // (arrival ms, sequence, index into distinct): the sequence keeps a
    // re-sent copy behind its original when both arrive in the same ms.
    let mut schedule: Vec<(i64, usize, usize)> = Vec::with_capacity(distinct.len());
    for (index, event) in distinct.iter().enumerate() {
        let ts = ts_ms(event);
        let mut delay = match rng.gen_range(0..100) {
            0..=69 => rng.gen_range(0..=(2 * MINUTE_MS).min(max_delay)),
            70..=94 => rng.gen_range(0..=max_delay / 4),
            _ => rng.gen_range(0..=max_delay),
        };
        if event.event_type == EventType::Decision && rng.gen_bool(config.late_decision_share) {
            // Delivered after the visitor's later events (as far as the
            // lateness bound allows).
            let after_last = visitor_last_ts[index] - ts + rng.gen_range(0..HOUR_MS);
            delay = delay.max(after_last.min(max_delay));
        }
        schedule.push((ts + delay, index, index));
    }
    let mut resent_copies = 0;
    let mut sequence = distinct.len();
    for (index, event) in distinct.iter().enumerate() {
        if !rng.gen_bool(config.duplicate_share) {
            continue;
        }
        let ts = ts_ms(event);
        let original_arrival = schedule[index].0;
        let room = (ts + max_delay - original_arrival).max(0);
        schedule.push((original_arrival + rng.gen_range(0..=room), sequence, index));
        sequence += 1;
        resent_copies += 1;
    }
    schedule.sort_by_key(|&(arrival, sequence, _)| (arrival, sequence));
    let arrival = schedule
        .iter()
        .map(|&(_, _, i)| distinct[i].clone())
        .collect();
    let arrival_ms = schedule.iter().map(|&(a, _, _)| a).collect();
    (arrival, arrival_ms, resent_copies)
}
