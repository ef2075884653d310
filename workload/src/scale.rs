//! The benchmark-scale workload: one experiment, up to millions of visitors,
//! kept compact in memory (`ScaleEvent` is a few dozen bytes) and turned into
//! wire events, NDJSON or CSV only when it is sent or written.
//!
//! What really happens (event time) is generated per visitor; how it reaches
//! the node (arrival order) is decided afterwards, with configurable shares
//! of out-of-order events, late decisions and exact re-sent duplicates — the
//! same three disorders the oracle workload (`crate::generate`) has.
//!
//! Shapes the peers' SQL relies on, guaranteed by construction:
//! - every event carries at most one decision (the CSV is flat);
//! - no session lasts longer than `SESSION_LENGTH_MAX_MS` (12 h), so the
//!   24 h `session_max` rule never cuts one and a gap-only sessionization
//!   (window functions) is exact;
//! - ids are `<visitor>-<index>` with a zero-padded per-visitor index, so
//!   byte order of ids is index order (the tie-break of equal times).

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sessiondb_protocol::{Decision, Event, EventType, Timestamp};
use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::{DAY_MS, HOUR_MS, MINUTE_MS};

/// The conversion key carrying revenue.
pub const PURCHASE_KEY: &str = "purchase";
/// A conversion key without value.
pub const ADD_TO_CART_KEY: &str = "add_to_cart";
/// The only breakdown attribute of the scale workload.
pub const BROWSER_ATTRIBUTE: &str = "browser";
/// Upper bound of one generated session (events × largest in-session gap).
pub const SESSION_LENGTH_MAX_MS: i64 = 12 * HOUR_MS;
/// Most events in one session.
const SESSION_EVENTS_MAX: usize = 12;
/// Largest gap inside a session; sessions stay below
/// `SESSION_LENGTH_MAX_MS` because `SESSION_EVENTS_MAX` gaps of this fit.
const SESSION_INNER_GAP_MAX_MS: i64 = 30 * MINUTE_MS;
/// Purchase values in minor units (cents): integers, so every system's sum
/// is exact.
const PURCHASE_MINOR_MIN: u32 = 100;
const PURCHASE_MINOR_MAX: u32 = 20_000;

/// Browser names, most popular first (the Zipf-like weights follow rank).
const BROWSER_NAMES: &[&str] = &[
    "chrome", "safari", "edge", "firefox", "samsung", "opera", "uc", "yandex", "brave", "vivaldi",
];

/// What to generate. `ScaleConfig::new` gives the benchmark shape of
/// `docs/benchmarks.md` (10 variations, 10 browsers, 7 days).
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    pub seed: u64,
    pub project: String,
    pub experiment: String,
    pub visitors: usize,
    /// Variations `v0`, `v1`, … (at most 1 000).
    pub variations: usize,
    /// Distinct browser values (at most 10), Zipf-distributed by rank.
    pub browsers: usize,
    /// Zipf exponent `s`: browser of rank r has weight `1 / r^s`.
    pub zipf_exponent: f64,
    /// Share of visitors whose decision event carries no browser.
    pub browser_absent_share: f64,
    /// Share of visitors never exposed to the experiment.
    pub unexposed_share: f64,
    /// Share of exposed visitors with a later, conflicting decision.
    pub conflict_share: f64,
    /// Every event time lies in `[base_ms, base_ms + span_ms)`.
    pub base_ms: i64,
    pub span_ms: i64,
    /// The session gap the sessions are built around.
    pub session_gap_ms: i64,
    /// Share of events delivered up to `out_of_order_delay_max_ms` late.
    pub out_of_order_share: f64,
    pub out_of_order_delay_max_ms: i64,
    /// Share of decision events delivered after the visitor's last event.
    pub late_decision_share: f64,
    /// Share of events sent a second time (same id, same content).
    pub duplicate_share: f64,
}

impl ScaleConfig {
    /// 10 variations, 10 Zipf browsers, 7 days from 2025-11-20T00:00Z, 5 %
    /// out of order (≤ 2 h), 5 % late decisions, 1 % duplicates.
    pub fn new(seed: u64, project: &str, visitors: usize) -> Self {
        ScaleConfig {
            seed,
            project: project.to_string(),
            experiment: "checkout".to_string(),
            visitors,
            variations: 10,
            browsers: 10,
            zipf_exponent: 1.0,
            browser_absent_share: 0.03,
            unexposed_share: 0.05,
            conflict_share: 0.02,
            base_ms: 1_763_596_800_000,
            span_ms: 7 * DAY_MS,
            session_gap_ms: 30 * MINUTE_MS,
            out_of_order_share: 0.05,
            out_of_order_delay_max_ms: 2 * HOUR_MS,
            late_decision_share: 0.05,
            duplicate_share: 0.01,
        }
    }

    pub fn variation_name(&self, variation: u16) -> String {
        format!("v{variation}")
    }

    pub fn browser_name(&self, browser: u8) -> &'static str {
        BROWSER_NAMES[usize::from(browser)]
    }

    pub fn visitor_name(&self, visitor: u32) -> String {
        format!("u{visitor}")
    }

    pub fn event_id(&self, visitor: u32, index: u16) -> String {
        format!("u{visitor}-{index:04}")
    }
}

/// The kind and conversion key of a scale event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleKind {
    Pageview,
    Click,
    AddToCart,
    Purchase,
    Decision,
}

impl ScaleKind {
    pub fn event_type(self) -> EventType {
        match self {
            ScaleKind::Pageview => EventType::Pageview,
            ScaleKind::Click => EventType::Click,
            ScaleKind::AddToCart | ScaleKind::Purchase => EventType::Custom,
            ScaleKind::Decision => EventType::Decision,
        }
    }

    pub fn key(self) -> Option<&'static str> {
        match self {
            ScaleKind::AddToCart => Some(ADD_TO_CART_KEY),
            ScaleKind::Purchase => Some(PURCHASE_KEY),
            _ => None,
        }
    }

    fn type_name(self) -> &'static str {
        match self.event_type() {
            EventType::Pageview => "pageview",
            EventType::Click => "click",
            EventType::Custom => "custom",
            EventType::Decision => "decision",
        }
    }
}

/// One event, compactly: names are indices into the config's name tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    pub ts_ms: i64,
    pub visitor: u32,
    /// Position in the visitor's time-ordered events; the id's suffix.
    pub index: u16,
    pub kind: ScaleKind,
    /// Purchase value in minor units.
    pub value_minor: Option<u32>,
    /// The decision's variation (decision events only).
    pub variation: Option<u16>,
    /// The browser attribute (decision events only).
    pub browser: Option<u8>,
}

/// A generated scale workload.
#[derive(Debug, Clone)]
pub struct ScaleWorkload {
    pub config: ScaleConfig,
    /// Events in the order they are sent, re-sent copies included.
    pub arrival: Vec<ScaleEvent>,
    /// Distinct events (`arrival.len()` minus the copies).
    pub distinct_events: usize,
}

/// Draws browser ranks with weight `1 / (rank + 1)^s`.
#[derive(Debug, Clone)]
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(values: usize, exponent: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..values)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(exponent);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let total = *self.cumulative.last().expect("at least one value");
        let roll = rng.gen_range(0.0..total);
        self.cumulative
            .partition_point(|&edge| edge <= roll)
            .min(self.cumulative.len() - 1)
    }
}

/// Generates a scale workload. Deterministic in `config`.
pub fn generate_scale(config: &ScaleConfig) -> ScaleWorkload {
    assert!(config.variations >= 1 && config.variations <= 1_000);
    assert!(config.browsers >= 1 && config.browsers <= BROWSER_NAMES.len());
    assert!(config.visitors <= u32::MAX as usize);
    assert!(config.span_ms > SESSION_LENGTH_MAX_MS);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let zipf = Zipf::new(config.browsers, config.zipf_exponent);
    let end_ms = config.base_ms + config.span_ms;
    // (arrival ms, sequence, event): the sequence keeps a copy behind its
    // original and makes the sort deterministic.
    let mut schedule: Vec<(i64, u32, ScaleEvent)> = Vec::with_capacity(config.visitors * 9);
    let mut timeline: Vec<ScaleEvent> = Vec::new();
    let mut distinct_events = 0usize;
    for visitor in 0..config.visitors as u32 {
        visitor_timeline(config, &mut rng, &zipf, visitor, end_ms, &mut timeline);
        let last_ts = timeline.last().map(|e| e.ts_ms).unwrap_or(config.base_ms);
        for event in timeline.drain(..) {
            let mut arrival = event.ts_ms;
            if rng.gen_bool(config.out_of_order_share) {
                arrival += rng.gen_range(0..=config.out_of_order_delay_max_ms);
            }
            if event.kind == ScaleKind::Decision && rng.gen_bool(config.late_decision_share) {
                arrival = arrival.max(last_ts + rng.gen_range(0..HOUR_MS));
            }
            let sequence = schedule.len() as u32;
            schedule.push((arrival, sequence, event));
            distinct_events += 1;
            if rng.gen_bool(config.duplicate_share) {
                let sequence = schedule.len() as u32;
                schedule.push((arrival + rng.gen_range(0..HOUR_MS), sequence, event));
            }
        }
    }
    schedule.sort_unstable_by_key(|&(arrival, sequence, _)| (arrival, sequence));
    ScaleWorkload {
        config: config.clone(),
        arrival: schedule.into_iter().map(|(_, _, event)| event).collect(),
        distinct_events,
    }
}

/// One visitor's events in event time, with indices assigned in that order.
fn visitor_timeline(
    config: &ScaleConfig,
    rng: &mut ChaCha8Rng,
    zipf: &Zipf,
    visitor: u32,
    end_ms: i64,
    out: &mut Vec<ScaleEvent>,
) {
    let blank = ScaleEvent {
        ts_ms: 0,
        visitor,
        index: 0,
        kind: ScaleKind::Pageview,
        value_minor: None,
        variation: None,
        browser: None,
    };
    let gap = config.session_gap_ms;
    let mut t = config.base_ms + rng.gen_range(0..config.span_ms - SESSION_LENGTH_MAX_MS);
    let sessions = match rng.gen_range(0..20) {
        0..=9 => 1,
        10..=15 => 2,
        16..=18 => 3,
        _ => 5,
    };
    'sessions: for session in 0..sessions {
        if session > 0 {
            t += gap + rng.gen_range(MINUTE_MS..2 * DAY_MS);
        }
        let events = match rng.gen_range(0..10) {
            0..=2 => 1,
            3..=8 => rng.gen_range(2..=6),
            _ => rng.gen_range(7..=SESSION_EVENTS_MAX),
        };
        for n in 0..events {
            if n > 0 {
                // Mostly short gaps; sometimes exactly the session gap (the
                // definition's `>` keeps it in the session).
                t += match rng.gen_range(0..50) {
                    0 => gap.min(SESSION_INNER_GAP_MAX_MS),
                    _ => rng.gen_range(1_000..(gap / 2).min(SESSION_INNER_GAP_MAX_MS)),
                };
            }
            if t >= end_ms {
                break 'sessions;
            }
            let (kind, value_minor) = match rng.gen_range(0..100) {
                0..=59 => (ScaleKind::Pageview, None),
                60..=74 => (ScaleKind::Click, None),
                75..=89 => (ScaleKind::AddToCart, None),
                _ => (
                    ScaleKind::Purchase,
                    Some(rng.gen_range(PURCHASE_MINOR_MIN..=PURCHASE_MINOR_MAX)),
                ),
            };
            out.push(ScaleEvent {
                ts_ms: t,
                kind,
                value_minor,
                ..blank
            });
        }
    }
    if out.is_empty() {
        out.push(ScaleEvent {
            ts_ms: end_ms - 1,
            ..blank
        });
    }
    if !rng.gen_bool(config.unexposed_share) {
        let variation = rng.gen_range(0..config.variations) as u16;
        let browser = if rng.gen_bool(config.browser_absent_share) {
            None
        } else {
            Some(zipf.sample(rng) as u8)
        };
        // Usually at the start of the visit, sometimes in the middle (so
        // earlier purchases must not count); within seconds of an event so
        // the decision never bridges two sessions.
        let anchor = if rng.gen_bool(0.7) {
            0
        } else {
            rng.gen_range(0..out.len())
        };
        let ts_ms =
            (out[anchor].ts_ms + rng.gen_range(-5_000..5_000)).clamp(config.base_ms, end_ms - 1);
        let decision = ScaleEvent {
            ts_ms,
            kind: ScaleKind::Decision,
            variation: Some(variation),
            browser,
            ..blank
        };
        out.push(decision);
        if config.variations > 1 && rng.gen_bool(config.conflict_share) {
            let other =
                (variation + rng.gen_range(1..config.variations as u16)) % config.variations as u16;
            let later = out[rng.gen_range(0..out.len())].ts_ms.max(ts_ms);
            out.push(ScaleEvent {
                ts_ms: later,
                variation: Some(other),
                ..decision
            });
        }
    }
    out.sort_by_key(|event| event.ts_ms);
    for (index, event) in out.iter_mut().enumerate() {
        event.index = index as u16;
    }
}

impl ScaleWorkload {
    /// The wire event of a scale event.
    pub fn to_event(&self, event: &ScaleEvent) -> Event {
        let config = &self.config;
        let mut attributes = BTreeMap::new();
        if let Some(browser) = event.browser {
            attributes.insert(
                BROWSER_ATTRIBUTE.to_string(),
                config.browser_name(browser).to_string(),
            );
        }
        Event {
            id: config.event_id(event.visitor, event.index),
            project: config.project.clone(),
            visitor: config.visitor_name(event.visitor),
            ts: Timestamp::Milliseconds(event.ts_ms),
            event_type: event.kind.event_type(),
            key: event.kind.key().map(str::to_string),
            value: event.value_minor.map(f64::from),
            attributes,
            decisions: event
                .variation
                .map(|variation| Decision {
                    experiment: config.experiment.clone(),
                    variation: config.variation_name(variation),
                })
                .into_iter()
                .collect(),
        }
    }

    /// Per visitor: the exposure `(variation, t0)` — its first decision in
    /// `(ts, id)` order — or `None` when never exposed.
    pub fn exposures(&self) -> Vec<Option<(u16, i64)>> {
        let mut first: Vec<Option<(i64, u16, u16)>> = vec![None; self.config.visitors];
        for event in &self.arrival {
            let Some(variation) = event.variation else {
                continue;
            };
            let slot = &mut first[event.visitor as usize];
            let candidate = (event.ts_ms, event.index, variation);
            if slot.is_none_or(|current| (candidate.0, candidate.1) < (current.0, current.1)) {
                *slot = Some(candidate);
            }
        }
        first
            .into_iter()
            .map(|slot| slot.map(|(ts, _, variation)| (variation, ts)))
            .collect()
    }

    /// NDJSON of native events (`POST /v1/events` / `sessiondb-ctl import`),
    /// in arrival order.
    pub fn write_ndjson(&self, out: &mut impl Write) -> io::Result<()> {
        for event in &self.arrival {
            serde_json::to_writer(&mut *out, &self.to_event(event))?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The CSV header of `write_csv`.
    pub const CSV_HEADER: &'static str =
        "id,visitor,ts_ms,type,key,value,experiment,variation,browser";

    /// One row per event in arrival order, flat columns (Parquet-friendly):
    /// `id, visitor, ts_ms, type, key, value, experiment, variation,
    /// browser`; absent fields are empty. Re-sent copies are identical rows.
    pub fn write_csv(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "{}", Self::CSV_HEADER)?;
        let config = &self.config;
        for event in &self.arrival {
            let value = event.value_minor.map(|v| v.to_string()).unwrap_or_default();
            let (experiment, variation) = match event.variation {
                Some(variation) => (config.experiment.as_str(), config.variation_name(variation)),
                None => ("", String::new()),
            };
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                config.event_id(event.visitor, event.index),
                config.visitor_name(event.visitor),
                event.ts_ms,
                event.kind.type_name(),
                event.kind.key().unwrap_or(""),
                value,
                experiment,
                variation,
                event.browser.map(|b| config.browser_name(b)).unwrap_or(""),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ScaleWorkload {
        generate_scale(&ScaleConfig::new(7, "bench", 2_000))
    }

    #[test]
    fn is_deterministic() {
        assert_eq!(small().arrival, small().arrival);
    }

    #[test]
    fn respects_the_documented_shapes() {
        let workload = small();
        let config = &workload.config;
        let end = config.base_ms + config.span_ms;
        assert!(workload.arrival.len() > workload.distinct_events);
        let mut by_visitor: BTreeMap<u32, Vec<ScaleEvent>> = BTreeMap::new();
        for event in &workload.arrival {
            assert!((config.base_ms..end).contains(&event.ts_ms));
            by_visitor.entry(event.visitor).or_default().push(*event);
        }
        for events in by_visitor.values_mut() {
            events.sort_by_key(|e| e.index);
            events.dedup();
            // Indices follow event time, so id order is the tie-break.
            assert!(events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
            let mut start = events[0].ts_ms;
            for pair in events.windows(2) {
                if pair[1].ts_ms - pair[0].ts_ms > config.session_gap_ms {
                    start = pair[1].ts_ms;
                }
                assert!(pair[1].ts_ms - start <= SESSION_LENGTH_MAX_MS);
            }
        }
        let exposed = workload.exposures().iter().flatten().count();
        assert!(exposed > 1_800 && exposed < 2_000, "{exposed}");
    }

    #[test]
    fn csv_has_one_flat_row_per_event() {
        let workload = small();
        let mut csv = Vec::new();
        workload.write_csv(&mut csv).expect("writes to memory");
        let text = String::from_utf8(csv).expect("utf-8");
        assert_eq!(text.lines().count(), workload.arrival.len() + 1);
        assert!(text.lines().all(|line| line.split(',').count() == 9));
    }
}
