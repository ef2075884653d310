//! Wire types shared by the SessionDB node and its clients.
//!
//! Everything that crosses the HTTP boundary as JSON is defined here and
//! nowhere else. The node converts these types into its own internal types at
//! the edge (`sessiondb_node::http`); internal types are never serialized to
//! clients directly, so the engine can change without breaking the API.
//!
//! Field names are part of the public API and documented in `docs/api.md`.

#![deny(missing_docs)]

pub mod binary;
pub mod codes;
pub mod hashing;

pub use codes::{ErrorCode, RejectCode, UnknownCode};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kinds of events SessionDB understands (`docs/api.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A page view (one page shown to the visitor).
    Pageview,
    /// A click on a tracked element.
    Click,
    /// A custom event, e.g. a conversion named by `key`.
    Custom,
    /// An exposure: the visitor was assigned `decisions`' variations.
    Decision,
}

/// One exposure of a visitor to an experiment variation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The experiment's name.
    pub experiment: String,
    /// The variation the visitor was assigned.
    pub variation: String,
}

/// Event time on the wire: milliseconds since the Unix epoch, or an RFC 3339
/// string. The node normalises both to milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    /// Milliseconds since the Unix epoch.
    Milliseconds(i64),
    /// An RFC 3339 date and time, e.g. `2026-01-31T10:00:00Z`.
    Rfc3339(String),
}

/// One event as sent by a client (`docs/api.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per project: the node applies an event once and counts a resend
    /// with the same id as a duplicate.
    pub id: String,
    /// The project the event belongs to.
    pub project: String,
    /// The visitor the event happened to; an event's shard is a function of
    /// project and visitor.
    pub visitor: String,
    /// When the event happened.
    pub ts: Timestamp,
    /// What kind of event this is (`type` on the wire).
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The conversion key of a custom event, e.g. `purchase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value of a custom event, e.g. a price; decimal on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Attributes of the event (browser, country, …); results break down by
    /// those the project lists in `breakdown_attributes`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// For a decision event: the experiments and variations the visitor was
    /// assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
}

impl Timestamp {
    /// The current time of this machine's clock, in ms since the epoch.
    pub fn now() -> Timestamp {
        Timestamp::from(std::time::SystemTime::now())
    }
}

impl From<std::time::SystemTime> for Timestamp {
    /// Whole milliseconds since the Unix epoch (negative before it).
    fn from(time: std::time::SystemTime) -> Timestamp {
        let ms = match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Timestamp::Milliseconds(ms)
    }
}

impl From<i64> for Timestamp {
    /// Milliseconds since the Unix epoch.
    fn from(ms: i64) -> Timestamp {
        Timestamp::Milliseconds(ms)
    }
}

/// Building events: `Event::decision("v-42", "checkout", "b")`,
/// `Event::custom("v-42", "purchase").value(12.99)`.
///
/// A built event happens now ([`Timestamp::now`]; change it with
/// [`Event::at`]) and has an empty `id` and `project`: a `Sender` gives it
/// a random id once, when it takes it (so retries keep it), and its
/// project when it is bound to one (`Client::sender_for`). Set them with
/// [`Event::id`] and [`Event::project`] to send it otherwise.
impl Event {
    fn new(event_type: EventType, visitor: impl Into<String>) -> Event {
        Event {
            id: String::new(),
            project: String::new(),
            visitor: visitor.into(),
            ts: Timestamp::now(),
            event_type,
            key: None,
            value: None,
            attributes: BTreeMap::new(),
            decisions: Vec::new(),
        }
    }

    /// `visitor` was shown `variation` of `experiment` (an exposure).
    pub fn decision(
        visitor: impl Into<String>,
        experiment: impl Into<String>,
        variation: impl Into<String>,
    ) -> Event {
        Event::new(EventType::Decision, visitor).and_decision(experiment, variation)
    }

    /// `visitor` did something counted as conversion `key`.
    pub fn custom(visitor: impl Into<String>, key: impl Into<String>) -> Event {
        Event {
            key: Some(key.into()),
            ..Event::new(EventType::Custom, visitor)
        }
    }

    /// `visitor` viewed a page.
    pub fn pageview(visitor: impl Into<String>) -> Event {
        Event::new(EventType::Pageview, visitor)
    }

    /// `visitor` clicked.
    pub fn click(visitor: impl Into<String>) -> Event {
        Event::new(EventType::Click, visitor)
    }

    /// The event's id: the node counts an id once, so give the same id to
    /// the same event when you send it again.
    pub fn id(mut self, id: impl Into<String>) -> Event {
        self.id = id.into();
        self
    }

    /// The project the event belongs to.
    pub fn project(mut self, project: impl Into<String>) -> Event {
        self.project = project.into();
        self
    }

    /// When the event happened.
    pub fn at(mut self, ts: impl Into<Timestamp>) -> Event {
        self.ts = ts.into();
        self
    }

    /// A value of a custom event (e.g. revenue).
    pub fn value(mut self, value: f64) -> Event {
        self.value = Some(value);
        self
    }

    /// An attribute, e.g. `("browser", "firefox")`: results can be broken
    /// down by it when the project lists it in `breakdown_attributes`.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// One more exposure, to another experiment.
    pub fn and_decision(
        mut self,
        experiment: impl Into<String>,
        variation: impl Into<String>,
    ) -> Event {
        self.decisions.push(Decision {
            experiment: experiment.into(),
            variation: variation.into(),
        });
        self
    }
}

/// A native ingest batch: `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The events, each judged on its own.
    pub events: Vec<Event>,
}

/// Why one event of a batch was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Position of the event in the batch, from 0.
    pub index: usize,
    /// Why, e.g. [`RejectCode::TooLate`] (`"too_late"` on the wire).
    pub reason: RejectCode,
    /// Human-readable explanation naming the offending field and the limit.
    pub message: String,
    /// For `not_owner` and `shard_moving`: the event's shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// For `not_owner`: the node that owns the shard at `epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u64>,
    /// For `not_owner` and `shard_moving`: the shard's epoch as the
    /// answering node knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// The answer to an ingest batch. A batch may be partly accepted: every
/// event is either accepted (newly applied), a duplicate (already applied
/// earlier, so nothing changed), or rejected with its index and a reason.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Events newly applied.
    pub accepted: u64,
    /// Events already applied before (same project and id): nothing changed.
    pub duplicates: u64,
    /// Events refused, each with its index in the batch and a reason.
    pub rejected: Vec<Rejection>,
}

/// An error answer from any endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Why, e.g. [`ErrorCode::UnknownProject`] (`"unknown_project"` on
    /// the wire).
    pub error: ErrorCode,
    /// What went wrong and, where possible, how to fix it.
    pub message: String,
}

/// Per-project settings (`docs/semantics.md`). Every field has a default; see
/// `docs/api.md` for ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectSettings {
    /// A session ends after this long without an event, in ms.
    pub session_gap_ms: i64,
    /// A session is cut after this long, in ms.
    pub session_max_ms: i64,
    /// Whether sessions are cut at midnight in `time_zone`.
    pub midnight_split: bool,
    /// The IANA time zone of day boundaries, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// How late (behind the node's clock) an event may arrive and still be
    /// accepted, in ms.
    pub allowed_lateness_ms: i64,
    /// How far ahead of the node's clock an event may be, in ms.
    pub future_skew_ms: i64,
    /// The width of one aggregate time bucket, in ms; query ranges are whole
    /// buckets. Fixed at creation.
    pub bucket_ms: i64,
    /// HyperLogLog precision of the active-visitor sketches (registers = 2^p).
    /// Fixed at creation.
    pub hll_precision: u8,
    /// How long aggregates are kept, in ms.
    pub retention_ms: i64,
    /// Attributes that results can be broken down by. A visitor's value for
    /// each is taken from its exposure event.
    pub breakdown_attributes: Vec<String>,
}

/// `POST /v1/projects`: create a project. Unset settings take defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreateProject {
    /// The new project's name.
    pub name: String,
    /// Settings differing from the defaults.
    #[serde(default)]
    pub settings: ProjectSettingsPatch,
}

/// A partial update of project settings: `PATCH /v1/projects/{name}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettingsPatch {
    /// See [`ProjectSettings::session_gap_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_gap_ms: Option<i64>,
    /// See [`ProjectSettings::session_max_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_max_ms: Option<i64>,
    /// See [`ProjectSettings::midnight_split`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub midnight_split: Option<bool>,
    /// See [`ProjectSettings::time_zone`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// See [`ProjectSettings::allowed_lateness_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness_ms: Option<i64>,
    /// See [`ProjectSettings::future_skew_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future_skew_ms: Option<i64>,
    /// See [`ProjectSettings::bucket_ms`]; only at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_ms: Option<i64>,
    /// See [`ProjectSettings::hll_precision`]; only at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hll_precision: Option<u8>,
    /// See [`ProjectSettings::retention_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// See [`ProjectSettings::breakdown_attributes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown_attributes: Option<Vec<String>>,
}

/// A project as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// The project's name.
    pub name: String,
    /// The project's settings, defaults filled in.
    pub settings: ProjectSettings,
    /// Experiments that have received at least one decision.
    pub experiments: Vec<String>,
    /// The project's ingest key (`docs/security.md`): `Authorization:
    /// Bearer <key>` on `POST /v1/events`, Segment's basic-auth user name,
    /// or the `X-SessionDB-Key` header on the Optimizely path. Only in the
    /// answer to the project's creation: the node keeps just its hash, so
    /// it cannot show it again (rotate it to get a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_key: Option<String>,
}

/// `GET /v1/projects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectList {
    /// Every project, by name.
    pub projects: Vec<Project>,
}

/// An estimate with its standard error (HyperLogLog counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// Its standard error.
    pub standard_error: f64,
}

/// A comparison of a variation against the baseline variation
/// (`docs/statistics.md` gives every formula and when to trust which number).
///
/// The fields added after the first release are optional, so that a client
/// decodes answers of older nodes and the other way round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// (variation − baseline) / baseline.
    pub relative_improvement: f64,
    /// Fixed-horizon 95% confidence interval of the relative improvement:
    /// valid for one look at a sample size fixed in advance.
    pub ci_low: f64,
    /// Upper end of the fixed-horizon interval (see `ci_low`).
    pub ci_high: f64,
    /// Fixed-horizon two-sided p-value (same caveat as the interval).
    pub p_value: f64,
    /// `p_value` after Holm's correction across every comparison of the
    /// query (variations × keys × rate and value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value_holm: Option<f64>,
    /// Always-valid p-value (mixture sequential probability ratio test):
    /// valid however often the results are looked at. Absent while either
    /// group has no spread (e.g. no conversions yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_valid_p_value: Option<f64>,
    /// 95% confidence sequence of the relative improvement: an interval
    /// valid at every look at once. Absent with `always_valid_p_value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cs_low: Option<f64>,
    /// Upper end of the confidence sequence (see `cs_low`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cs_high: Option<f64>,
}

/// Metrics of one conversion key for one variation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyMetrics {
    /// The conversion key.
    pub key: String,
    /// Visitors with at least one conversion on the key.
    pub unique_conversions: i64,
    /// Conversion events on the key.
    pub total_conversions: i64,
    /// Sum of the converting events' values.
    pub value_sum: f64,
    /// Σ over visitors of (their converted value)², see `docs/semantics.md`.
    pub value_sum_squares: f64,
    /// `unique_conversions / visitors` (0 without visitors).
    pub conversion_rate: f64,
    /// `value_sum / visitors` (0 without visitors).
    pub value_per_visitor: f64,
    /// Sessions (starting in range, counted for this variation) that
    /// contain a conversion on this key.
    pub sessions_with_conversion: i64,
    /// Conversion rate against the baseline (two-proportion z-test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_comparison: Option<Comparison>,
    /// Value per visitor against the baseline (Welch's t-test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_comparison: Option<Comparison>,
}

/// Session metrics of one variation (`docs/semantics.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMetrics {
    /// Sessions counted for the experiment that started in the range.
    pub sessions: i64,
    /// Sessions of exactly one event.
    pub bounced_sessions: i64,
    /// Total duration of the sessions, in ms.
    pub duration_ms_sum: i64,
    /// Total page views of the sessions.
    pub pageviews_sum: i64,
    /// `bounced_sessions / sessions` (0 without sessions).
    pub bounce_rate: f64,
    /// `duration_ms_sum / sessions`, in ms (0 without sessions).
    pub duration_ms_mean: f64,
    /// `pageviews_sum / sessions` (0 without sessions).
    pub pageviews_per_session: f64,
}

/// Results of one variation (within one breakdown group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariationResults {
    /// The variation's name.
    pub variation: String,
    /// The id the variation's compatible format named it by, when the
    /// project's experiment aliases know it (`docs/ingest-formats.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation_id: Option<String>,
    /// Visitors assigned to the variation (exact).
    pub visitors: i64,
    /// Decisions that disagreed with the visitor's sticky variation.
    pub conflicts: i64,
    /// Visitors (exposed before) with an event in the range: a
    /// HyperLogLog estimate with its standard error.
    pub active_visitors: Estimate,
    /// The variation's sessions.
    pub sessions: SessionMetrics,
    /// Per conversion key of the query, its metrics.
    pub metrics: Vec<KeyMetrics>,
}

impl VariationResults {
    /// The metrics of conversion key `key`, if the query asked for it.
    pub fn metric(&self, key: &str) -> Option<&KeyMetrics> {
        self.metrics.iter().find(|metrics| metrics.key == key)
    }
}

impl ResultsGroup {
    /// The results of `variation` in this group.
    pub fn variation(&self, variation: &str) -> Option<&VariationResults> {
        self.variations
            .iter()
            .find(|results| results.variation == variation)
    }
}

/// One breakdown group: all variations for one value of the breakdown
/// attribute (or the whole experiment when no breakdown is asked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsGroup {
    /// The breakdown value, `(none)` for visitors without it; absent when
    /// the query has no breakdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown_value: Option<String>,
    /// The variations, sorted by name.
    pub variations: Vec<VariationResults>,
    /// Sample ratio mismatch check of this group's visitors; absent with
    /// fewer than two variations or no visitors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srm: Option<SampleRatioMismatch>,
}

/// Pearson's chi-square test of visitors per variation against the
/// expected allocation (`docs/statistics.md`, "Sample ratio mismatch").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRatioMismatch {
    /// The chi-square test's p-value.
    pub p_value: f64,
    /// Per variation, its expected share of visitors (summing to 1): equal
    /// unless the query gave `weights`.
    pub expected_weights: BTreeMap<String, f64>,
    /// `p_value` < 0.001: the split is broken, and so are the comparisons.
    pub flagged: bool,
    /// Where `expected_weights` came from.
    #[serde(default)]
    pub weights_source: WeightsSource,
}

/// The origin of a sample ratio mismatch check's expected allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsSource {
    /// Equal shares: no weights given or stored, or the stored weights do
    /// not name every variation with data.
    #[default]
    Equal,
    /// The query's `weights` parameter.
    Query,
    /// The experiment's stored weights (`ExperimentWeights`).
    Stored,
}

/// `PUT /v1/projects/{project}/experiments/{experiment}/weights`: the
/// experiment's expected allocation, variation → weight (any positive
/// scale: `{"control": 1, "treatment": 1}` is 50/50).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetExperimentWeights {
    /// The weight of each variation (relative: 2 and 1 mean two thirds and one third).
    pub weights: BTreeMap<String, f64>,
}

/// An experiment's stored allocation weights (`GET`, `PUT` and `DELETE`
/// `/v1/projects/{project}/experiments/{experiment}/weights`); `weights`
/// is `null` when none are stored (the check then assumes equal shares).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentWeights {
    /// The project asked.
    pub project: String,
    /// The experiment asked.
    pub experiment: String,
    /// The stored weights; `None` when none are stored (equal shares are expected).
    pub weights: Option<BTreeMap<String, f64>>,
}

/// `GET /v1/projects/{project}/experiments/{experiment}/results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsResponse {
    /// The project asked.
    pub project: String,
    /// The name the experiment's events are stored under (for Optimizely,
    /// its key), whether the query named it by that or by its id.
    pub experiment: String,
    /// The id the experiment's compatible format named it by, when the
    /// project's experiment aliases know it (`docs/ingest-formats.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Start of the range answered, ms since the epoch (a bucket boundary).
    pub from: i64,
    /// End (exclusive) of the range answered, ms since the epoch (a bucket
    /// boundary).
    pub to: i64,
    /// The breakdown attribute, if the query had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<String>,
    /// The baseline variation the comparisons are against.
    pub baseline: Option<String>,
    /// The conversion keys answered.
    pub keys: Vec<String>,
    /// One group per breakdown value (one group without breakdown).
    pub groups: Vec<ResultsGroup>,
    /// In a cluster: true when a member did not answer in time, so the
    /// numbers lack its share (`docs/cluster.md`, "Query fan-out and merge").
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
    /// The members whose shares are missing when `partial`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_nodes: Vec<u64>,
}

impl ResultsResponse {
    /// The group of breakdown value `value` (`None`: the one group of a
    /// query without breakdown).
    pub fn group(&self, value: Option<&str>) -> Option<&ResultsGroup> {
        self.groups
            .iter()
            .find(|group| group.breakdown_value.as_deref() == value)
    }

    /// `variation`'s results in the one group of a query without breakdown.
    pub fn variation(&self, variation: &str) -> Option<&VariationResults> {
        self.group(None)?.variation(variation)
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// One point of a time series: the counters of one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSeriesPoint {
    /// Bucket start, ms since the epoch.
    pub ts: i64,
    /// Visitors assigned in the bucket.
    pub visitors: i64,
    /// Visitors with an event in the bucket (estimate).
    pub active_visitors: f64,
    /// Sessions that started in the bucket.
    pub sessions: i64,
    /// Per requested key, in the order of `TimeSeriesResponse::keys`.
    pub total_conversions: Vec<i64>,
    /// Per requested key: visitors converting in the bucket.
    pub unique_conversions: Vec<i64>,
    /// Per requested key: the sum of the converting events' values.
    pub value_sum: Vec<f64>,
    /// Per requested key, in the order of `TimeSeriesResponse::keys`: this
    /// variation against the baseline over everything from `from` to the
    /// end of this interval (the results a page showing the range up to
    /// then would show). Empty for the baseline and without `keys`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cumulative: Vec<CumulativeComparison>,
}

/// One key's comparison with the baseline over the counters summed from the
/// start of a time series to the end of a point's interval. Holm's
/// correction is not applied (`p_value_holm` is absent): the same
/// hypothesis looked at again and again is what the always-valid fields
/// are for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CumulativeComparison {
    /// The comparison of conversion rates (unique conversions per visitor).
    pub rate_comparison: Option<Comparison>,
    /// The comparison of values per visitor.
    pub value_comparison: Option<Comparison>,
}

/// The series of one breakdown value (`TimeSeriesResponse::groups`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSeriesGroup {
    /// The breakdown value; `None` for visitors without one.
    pub breakdown_value: Option<String>,
    /// Every variation's series within this value.
    pub variations: Vec<VariationSeries>,
}

/// The series of one variation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariationSeries {
    /// The variation's name.
    pub variation: String,
    /// As in `VariationResults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation_id: Option<String>,
    /// One point per interval of the range, in time order.
    pub points: Vec<TimeSeriesPoint>,
}

/// `GET /v1/projects/{project}/experiments/{experiment}/timeseries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSeriesResponse {
    /// The project asked.
    pub project: String,
    /// The experiment asked.
    pub experiment: String,
    /// As in `ResultsResponse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Start of the range answered, ms since the epoch.
    pub from: i64,
    /// End (exclusive) of the range answered, ms since the epoch.
    pub to: i64,
    /// The width of one point, in ms.
    pub interval_ms: i64,
    /// The breakdown attribute asked; with one, `variations` is empty and
    /// `groups` holds one series per breakdown value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<String>,
    /// The variation the cumulative comparisons are against.
    #[serde(default)]
    pub baseline: Option<String>,
    /// The conversion keys of the points' per-key vectors, in order.
    pub keys: Vec<String>,
    /// Without a breakdown: the series of every variation.
    pub variations: Vec<VariationSeries>,
    /// With a breakdown: per breakdown value (sorted), every variation's
    /// series within it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<TimeSeriesGroup>,
    /// True when some node's share is missing (named in `missing_nodes`):
    /// the series is then too low.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
    /// The members whose shares are missing when `partial`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_nodes: Vec<u64>,
}

/// `GET /v1/status`: what a node is and how it is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id in the cluster.
    pub node_id: u64,
    /// The node's version.
    pub version: String,
    /// The number of shards.
    pub shards: u32,
    /// Projects on the node.
    pub projects: u64,
    /// Visitors the node holds state for.
    pub live_visitors: u64,
    /// Events held inside the lateness horizon; older sessions are frozen
    /// into per-visitor summaries.
    pub retained_events: u64,
    /// Aggregate cells (cell × bucket) held by the aggregate actors.
    pub segment_cells: u64,
    /// Events accepted since the node started.
    pub events_accepted: u64,
    /// Events answered as duplicates since the node started.
    pub events_duplicate: u64,
    /// Events rejected since the node started.
    pub events_rejected: u64,
    /// The node's clock, ms since the epoch.
    pub now_ms: i64,
    /// What the storage went through: a failed log, what recovery repaired.
    #[serde(default)]
    pub storage: StorageStatus,
}

/// `NodeStatus::storage` (`docs/durability.md`, "What is reported").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// Why the log failed (I/O error, full disk), if it did: ingest answers
    /// `503 storage_unavailable` and `/v1/ready` `503 storage_failed` until
    /// the node is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The log position of the checkpoint the last start recovered from
    /// (0: none).
    pub recovered_checkpoint_position: u64,
    /// Checkpoints the last start could not use (failed checksum or
    /// decoding), newest first; it fell back to an older one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints_skipped: Vec<SkippedCheckpoint>,
    /// Bytes cut off the log's last segment at the last start (a torn or
    /// damaged tail; never acknowledged records).
    pub log_bytes_cut: u64,
    /// Where and why the log was cut, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_cut: Option<String>,
}

/// A checkpoint recovery skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedCheckpoint {
    /// The checkpoint's id.
    pub id: u64,
    /// Why it could not be used.
    pub reason: String,
}

/// `POST /v1/admin/checkpoint`: what the checkpoint wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointResponse {
    /// Every log record up to this position is in the checkpoint.
    pub position: u64,
    /// Size of the checkpoint.
    pub bytes: u64,
    /// Visitors in the checkpoint.
    pub visitors: u64,
    /// How long ingest waited at the checkpoint's barrier.
    pub pause_ms: u64,
    /// How long the checkpoint took, in ms.
    pub duration_ms: u64,
    /// Log segments the checkpoint made unneeded and removed.
    pub log_segments_removed: u64,
}

/// A member's part in the placement Raft group (`docs/cluster.md`,
/// "Membership").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Votes in elections and counts toward the quorum.
    Voter,
    /// Receives the replicated state but does not vote.
    Learner,
}

/// What a node is doing in the placement Raft group right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftState {
    /// Leads the group: changes go through it.
    Leader,
    /// Follows a leader.
    Follower,
    /// Asks for votes in an election.
    Candidate,
    /// Receives the replicated state without voting.
    Learner,
    /// The Raft node is stopping.
    Shutdown,
}

/// `POST /v1/cluster/join` (cluster secret): a node asks to become a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joining node's id.
    pub node_id: u64,
    /// Where the other nodes reach the joining node (`host:port`).
    pub address: String,
    /// The cluster the joining node's data directory belongs to; `None`
    /// for a fresh data directory (or a node older than cluster ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The id of the joining node's data directory (`docs/cluster.md`,
    /// "Node identity"); `None` from a node older than incarnations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
}

/// `GET /v1/internal/cluster/identity?node_id=N` (cluster secret): what a
/// node checks before it joins, from the answering member's placement
/// state — the cluster-wide constants and what the cluster knows of node
/// `N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// `None` while the cluster has none yet (a cluster older than cluster
    /// ids, until its leader records one).
    pub cluster_id: Option<String>,
    /// The cluster's shard count; 0 before its shard map exists.
    pub shards: u32,
    /// Whether node `N` is a member now.
    pub member: bool,
    /// The incarnation the cluster recorded for node `N`, if any.
    pub incarnation: Option<String>,
}

/// The answer to a successful join: the node is a member with this role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The new member's id.
    pub node_id: u64,
    /// Its part in the group.
    pub role: MemberRole,
    /// The leader that admitted the node.
    pub leader_id: u64,
}

/// `307 not_leader`: the node asked cannot change the membership; ask the
/// leader (also in the `Location` header when it is known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotLeader {
    /// Always [`ErrorCode::NotLeader`].
    pub error: ErrorCode,
    /// Why the change was refused here.
    pub message: String,
    /// The leader, if this node knows one.
    pub leader_id: Option<u64>,
    /// The leader's address (`host:port`), if known.
    pub leader_address: Option<String>,
}

/// One member in `ClusterStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// The member's id.
    pub node_id: u64,
    /// Where it serves HTTP (`host:port`).
    pub address: String,
    /// Its part in the placement group.
    pub role: MemberRole,
    /// Being drained: its shards move away and it receives none.
    #[serde(default)]
    pub draining: bool,
}

/// One shard in `ClusterStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOwnership {
    /// The shard's number.
    pub shard: u32,
    /// The node that owns the shard.
    pub owner: u64,
    /// Grows by one each time the shard changes owner.
    pub epoch: u64,
    /// The node the shard is being handed to, during a move.
    pub moving_to: Option<u64>,
}

/// `GET /v1/cluster` (admin token): the placement state as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    /// This node's part in the placement group now.
    pub state: RaftState,
    /// The leader this node knows of, if any.
    pub leader: Option<u64>,
    /// The Raft term this node is in.
    pub term: u64,
    /// The last Raft log index this node applied (`None` before the first).
    pub applied_index: Option<u64>,
    /// Voters and learners, by node id.
    pub members: Vec<ClusterMember>,
    /// The shard map, by shard; empty before the cluster is initialized.
    pub shards: Vec<ShardOwnership>,
    /// Departed nodes whose aggregates a member keeps: (node, keeper).
    #[serde(default)]
    pub retired: Vec<RetiredStores>,
}

/// A departed node's aggregates and the member that keeps them
/// (`docs/cluster.md`, "Removing a node").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredStores {
    /// The departed node.
    pub node_id: u64,
    /// The member that keeps its aggregates.
    pub kept_by: u64,
}

/// `POST /v1/cluster/nodes/{id}/drain` (admin token): the moves that took
/// the node's shards away (a rebalance over the other members), and how
/// many it still owns (call again while it is not 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// The node being drained.
    pub node_id: u64,
    /// The moves of this call (flattened into the answer).
    #[serde(flatten)]
    pub moves: RebalanceReport,
    /// Shards the node still owns; 0 when drained.
    pub remaining_shards: u32,
}

/// A drain that could not move some of the node's shards (`502
/// move_failed`, or `502 node_unreachable` when the drained node does not
/// answer): the error, the shards that failed, and the report of what did
/// move. The node stays draining; run the drain again or undrain it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainFailure {
    /// `move_failed` or `node_unreachable`.
    pub error: ErrorCode,
    /// What failed, for a person.
    pub message: String,
    /// The shards whose moves failed (also in `failures`, with why).
    pub failed_shards: Vec<u32>,
    /// The drain's report, its fields beside `error` and `message`.
    #[serde(flatten)]
    pub report: DrainReport,
}

/// `POST /v1/cluster/nodes/{id}/undrain` (admin token): the node may
/// receive shards again (a rebalance gives it some).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndrainReport {
    /// The member asked.
    pub node_id: u64,
    /// Whether the node was draining before the call.
    pub was_draining: bool,
}

/// `POST /v1/cluster/nodes/{id}/remove` (admin token): the node is out of
/// the membership and its aggregates live in `stores_kept_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRemoveReport {
    /// The removed node.
    pub node_id: u64,
    /// The member that keeps its aggregates now.
    pub stores_kept_by: u64,
    /// Size of the handed-over aggregates.
    pub bytes: u64,
    /// How long the removal took, in ms.
    pub duration_ms: u64,
}

/// A cluster change run by the leader; any member accepts it from an
/// operator and forwards it (`POST /v1/internal/leader`, cluster secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case", deny_unknown_fields)]
pub enum LeaderOperation {
    /// Move `shard` to member `to` (`POST /v1/cluster/shards/{shard}/move`).
    MoveShard {
        /// The shard to move.
        shard: u32,
        /// The member it goes to.
        to: u64,
    },
    /// Rebalance the shard map (`POST /v1/cluster/rebalance`).
    Rebalance,
    /// Drain member `node_id` (`POST /v1/cluster/nodes/{id}/drain`).
    Drain {
        /// The member to drain.
        node_id: u64,
    },
    /// Clear member `node_id`'s draining mark
    /// (`POST /v1/cluster/nodes/{id}/undrain`).
    Undrain {
        /// The member to undrain.
        node_id: u64,
    },
    /// Remove drained member `node_id` (`POST /v1/cluster/nodes/{id}/remove`).
    Remove {
        /// The member to remove.
        node_id: u64,
    },
}

/// `POST /v1/internal/partial` (cluster secret): a coordinating node asks a
/// member for its share of a results query. The answer is the member's
/// share, postcard-encoded (`application/octet-stream`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialRequest {
    /// The project.
    pub project: String,
    /// The experiment.
    pub experiment: String,
    /// `None`: only the member's first bucket of the experiment is asked
    /// (the coordinator resolves a missing `from` with it).
    #[serde(default)]
    pub from: Option<i64>,
    /// End (exclusive) of the range, ms since the epoch.
    pub to: i64,
    /// The breakdown attribute, if any.
    #[serde(default)]
    pub breakdown: Option<String>,
    /// The conversion keys asked.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Set for a time series: the share is one partial per interval of
    /// this length instead of one over the whole range.
    #[serde(default)]
    pub interval_ms: Option<i64>,
}

/// `POST /v1/cluster/shards/{shard}/move` (admin token, leader only): hand
/// the shard to member `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveShardRequest {
    /// The member that receives the shard.
    pub to: u64,
}

/// A finished shard move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMoveReport {
    /// The shard moved.
    pub shard: u32,
    /// The previous owner.
    pub from: u64,
    /// The new owner.
    pub to: u64,
    /// The shard's epoch after the move (the previous one + 1).
    pub epoch: u64,
    /// Size of the handed-over shard state.
    pub bytes: u64,
    /// From `BeginMove` to the old owner's drop.
    pub duration_ms: u64,
}

/// One planned move of a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    /// The shard to move.
    pub shard: u32,
    /// Its owner now.
    pub from: u64,
    /// The member it goes to.
    pub to: u64,
}

/// A planned move that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedMove {
    /// The shard.
    pub shard: u32,
    /// Its owner.
    pub from: u64,
    /// The member it was to go to.
    pub to: u64,
    /// Why, e.g. [`ErrorCode::MoveFailed`].
    pub error: ErrorCode,
    /// What went wrong.
    pub message: String,
}

/// `POST /v1/cluster/rebalance` (admin token): the plan and what became of
/// it. Moves run a few at a time (`MOVES_CONCURRENT_MAX`) in plan order;
/// a move that fails is reported and the others go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceReport {
    /// Every move the balanced map needs (may be longer than what one call
    /// carries out).
    pub plan: Vec<PlannedMove>,
    /// The moves carried out, in order.
    pub moved: Vec<ShardMoveReport>,
    /// The first move that failed (also first in `failures`).
    pub failed: Option<FailedMove>,
    /// Every planned move that failed, in plan order; the other moves were
    /// still carried out.
    #[serde(default)]
    pub failures: Vec<FailedMove>,
    /// Planned moves not attempted: beyond the per-call bound; call again
    /// to continue.
    pub skipped: Vec<PlannedMove>,
    /// Members that did not answer when the plan was made: they neither
    /// gave nor received shards.
    #[serde(default)]
    pub unreachable: Vec<u64>,
}

/// `POST /v1/projects/{name}/ingest-key/rotate` and
/// `POST /v1/admin/token/rotate` (`docs/security.md`, "Rotation").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// How long the old key stays valid, in ms; the node's
    /// `--key-rotation-grace-ms` when absent. 0 ends it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<i64>,
}

/// The answer to a rotation: the new key, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedKey {
    /// The new ingest key or admin token.
    pub key: String,
    /// When the old key stops working (node clock, ms since the epoch);
    /// `None` when it stopped at once (`grace_ms` 0).
    pub previous_valid_until_ms: Option<i64>,
}

/// `GET /v1/shard-map`: what a client needs to send each event to the node
/// that owns its shard (`docs/api.md`, "Shard map"; `docs/client.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Grows with every change of the placement state (its last applied
    /// Raft log index on the answering node; 0 before the first). Of two
    /// maps, the one with the larger version is newer; per shard, the
    /// larger epoch is newer.
    pub version: u64,
    /// The node that answered.
    pub node_id: u64,
    /// The shard function: [`hashing::SHARD_HASH`]. A client that does not
    /// know the named function must not route with this map.
    pub hash: String,
    /// The number of shards (`hashing::shard_of(project, visitor, shards)`).
    pub shards: u32,
    /// One entry per shard, by shard number.
    pub assignments: Vec<ShardMapEntry>,
    /// Every member with its address, owners or not: a client that is told
    /// "not owner, node N owns it" can reach N at once even when N owned
    /// nothing before.
    #[serde(default)]
    pub members: Vec<ClusterMember>,
}

/// One shard of a [`ShardMap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMapEntry {
    /// The shard's number.
    pub shard: u32,
    /// The node that accepts the shard's events at `epoch`.
    pub owner: u64,
    /// Where the owner serves HTTP (`host:port`); `None` if the answering
    /// node does not know it (the owner is not a member).
    pub owner_address: Option<String>,
    /// Grows by one each time the shard changes owner.
    pub epoch: u64,
    /// A move of the shard is under way: its events get `shard_moving`
    /// (retry) until it ends.
    pub moving: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn built_events_serialize_like_literal_ones() {
        let built = Event::decision("v-42", "checkout", "b")
            .id("e-1")
            .project("shop")
            .at(1_764_150_000_000)
            .attribute("browser", "firefox");
        let literal = Event {
            id: "e-1".into(),
            project: "shop".into(),
            visitor: "v-42".into(),
            ts: Timestamp::Milliseconds(1_764_150_000_000),
            event_type: EventType::Decision,
            key: None,
            value: None,
            attributes: [("browser".to_string(), "firefox".to_string())].into(),
            decisions: vec![Decision {
                experiment: "checkout".into(),
                variation: "b".into(),
            }],
        };
        assert_eq!(built, literal);
        let purchase = Event::custom("v-42", "purchase").value(12.99);
        assert_eq!(purchase.event_type, EventType::Custom);
        assert_eq!(purchase.key.as_deref(), Some("purchase"));
        assert_eq!(purchase.value, Some(12.99));
        assert!(purchase.id.is_empty() && purchase.project.is_empty());
    }

    #[test]
    fn timestamps_from_system_time_are_whole_milliseconds() {
        let time = UNIX_EPOCH + Duration::from_micros(1_764_150_000_000_999);
        assert_eq!(
            Timestamp::from(time),
            Timestamp::Milliseconds(1_764_150_000_000)
        );
        let before = UNIX_EPOCH - Duration::from_millis(5);
        assert_eq!(Timestamp::from(before), Timestamp::Milliseconds(-5));
        let Timestamp::Milliseconds(now) = Timestamp::now() else {
            panic!("now is in milliseconds");
        };
        assert!(now > 1_700_000_000_000);
    }
}
