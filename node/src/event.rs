//! The internal event and its validation from the wire event.
//!
//! `sessiondb_protocol::Event` is what clients send; `Event` here is what the
//! engine works with: times in ms, values in micro-units, names shared
//! (`Arc<str>`), attributes sorted. Validation is the only way to build one,
//! so the engine can rely on every bound in `limits`.

use crate::limits;
use crate::project::{ProjectConfig, Settings};
use sessiondb_protocol as wire;
use sessiondb_protocol::RejectCode;
use std::sync::Arc;

/// The kind of an event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum EventKind {
    Pageview,
    Click,
    Custom,
    Decision,
}

/// (name, value) or (experiment, variation) pairs.
pub type NamePairs = Vec<(Arc<str>, Arc<str>)>;

/// A validated event of one visitor, as the session actors keep it.
///
/// Laid out for memory (memory per live visitor, `docs/benchmarks.md`): a
/// visitor holds every event inside the lateness horizon, and only decision
/// events carry name pairs, so those live behind one optional box instead
/// of two empty vectors on every event. Encoded exactly as the earlier layout with two
/// vectors (`EventRecord`), so checkpoints and log records written before
/// still decode and the encoding did not change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "EventRecord")]
pub struct Event {
    pub id: Box<str>,
    pub ts_ms: i64,
    /// `round(value × 10⁶)`; 0 when the event has no value.
    pub value_micros: i64,
    pub key: Option<Arc<str>>,
    /// Attributes and decisions; `None` when the event has neither.
    pub decision: Option<Box<DecisionData>>,
    pub kind: EventKind,
}

/// What an event carrying decisions holds besides the common fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionData {
    /// Sorted by name. Kept only on events that carry decisions: only an
    /// exposure event's attributes matter (breakdowns).
    pub attributes: Box<[(Arc<str>, Arc<str>)]>,
    /// (experiment, variation) in the order the client sent them.
    pub decisions: Box<[(Arc<str>, Arc<str>)]>,
}

impl Event {
    /// The total order of a visitor's events: time, then id (ties between
    /// equal times, `docs/semantics.md`).
    pub fn order_key(&self) -> (i64, &str) {
        (self.ts_ms, &self.id)
    }

    /// Sorted by name; empty unless the event carries decisions.
    pub fn attributes(&self) -> &[(Arc<str>, Arc<str>)] {
        self.decision
            .as_deref()
            .map_or(&[], |decision| &decision.attributes)
    }

    /// (experiment, variation) in the order the client sent them.
    pub fn decisions(&self) -> &[(Arc<str>, Arc<str>)] {
        self.decision
            .as_deref()
            .map_or(&[], |decision| &decision.decisions)
    }

    /// Sets the name pairs; an event with neither holds no box.
    pub fn set_name_pairs(&mut self, attributes: NamePairs, decisions: NamePairs) {
        self.decision = if attributes.is_empty() && decisions.is_empty() {
            None
        } else {
            Some(Box::new(DecisionData {
                attributes: attributes.into_boxed_slice(),
                decisions: decisions.into_boxed_slice(),
            }))
        };
    }

    pub fn attribute(&self, name: &str) -> Option<&Arc<str>> {
        let attributes = self.attributes();
        attributes
            .binary_search_by(|(attribute, _)| attribute.as_ref().cmp(name))
            .ok()
            .map(|index| &attributes[index].1)
    }

    /// Each name of the event, mutably, for sharing equal names
    /// (`engine::shard`'s name table).
    pub fn names_mut(&mut self) -> impl Iterator<Item = &mut Arc<str>> {
        let pairs = self
            .decision
            .as_deref_mut()
            .into_iter()
            .flat_map(|decision| {
                decision
                    .attributes
                    .iter_mut()
                    .chain(decision.decisions.iter_mut())
                    .flat_map(|(name, value)| [name, value])
            });
        self.key.iter_mut().chain(pairs)
    }
}

/// The encoded form of an `Event` (journal and checkpoints): the field
/// order and types of the first layout, which postcard's encoding follows.
#[derive(serde::Serialize)]
#[serde(rename = "Event")]
struct EventRecordRef<'a> {
    id: &'a str,
    ts_ms: i64,
    kind: EventKind,
    key: &'a Option<Arc<str>>,
    value_micros: i64,
    attributes: &'a [(Arc<str>, Arc<str>)],
    decisions: &'a [(Arc<str>, Arc<str>)],
}

/// `EventRecordRef`, owned, for decoding.
#[derive(serde::Deserialize)]
#[serde(rename = "Event")]
struct EventRecord {
    id: Box<str>,
    ts_ms: i64,
    kind: EventKind,
    key: Option<Arc<str>>,
    value_micros: i64,
    attributes: NamePairs,
    decisions: NamePairs,
}

impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EventRecordRef {
            id: &self.id,
            ts_ms: self.ts_ms,
            kind: self.kind,
            key: &self.key,
            value_micros: self.value_micros,
            attributes: self.attributes(),
            decisions: self.decisions(),
        }
        .serialize(serializer)
    }
}

impl From<EventRecord> for Event {
    fn from(record: EventRecord) -> Event {
        let mut event = Event {
            id: record.id,
            ts_ms: record.ts_ms,
            value_micros: record.value_micros,
            key: record.key,
            decision: None,
            kind: record.kind,
        };
        event.set_name_pairs(record.attributes, record.decisions);
        event
    }
}

/// An event addressed to its visitor in its project.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitorEvent {
    pub project: Arc<ProjectConfig>,
    pub visitor: Box<str>,
    pub event: Event,
}

/// Why an event was rejected. `code()` is the stable wire reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("{0}")]
    Malformed(String),
    #[error("`id` is empty")]
    EmptyId,
    #[error("`id` is {bytes} bytes; the limit is {max}", max = limits::ID_BYTES_MAX)]
    IdTooLong { bytes: usize },
    #[error("`visitor` is empty")]
    EmptyVisitor,
    #[error("`visitor` is {bytes} bytes; the limit is {max}", max = limits::VISITOR_BYTES_MAX)]
    VisitorTooLong { bytes: usize },
    #[error("project `{project}` does not exist; create it first (POST /v1/projects)")]
    UnknownProject { project: String },
    #[error("`ts` {text} is not ms since the epoch nor an RFC 3339 time")]
    InvalidTimestamp { text: String },
    #[error("`ts` {ts_ms} is older than now ({now_ms}) minus allowed lateness ({allowed_lateness_ms} ms)")]
    TooLate {
        ts_ms: i64,
        now_ms: i64,
        allowed_lateness_ms: i64,
    },
    #[error("`ts` {ts_ms} is later than now ({now_ms}) plus future skew ({future_skew_ms} ms)")]
    TooEarly {
        ts_ms: i64,
        now_ms: i64,
        future_skew_ms: i64,
    },
    #[error("a custom event needs a `key`")]
    MissingKey,
    #[error("`key` must be 1-{max} bytes", max = limits::KEY_BYTES_MAX)]
    KeyTooLong,
    #[error("a decision event needs at least one entry in `decisions`")]
    MissingDecision,
    #[error("{count} decisions; the limit is {max}", max = limits::DECISIONS_MAX)]
    TooManyDecisions { count: usize },
    #[error("decision {index}: experiment and variation must be 1-{max} bytes", max = limits::DECISION_NAME_BYTES_MAX)]
    InvalidDecision { index: usize },
    #[error("`value` must be finite with |value| ≤ {max:e}", max = limits::VALUE_ABS_MAX)]
    InvalidValue,
    #[error("the visitor already holds {max} events inside the lateness horizon", max = limits::VISITOR_EVENTS_MAX)]
    VisitorEventLimit,
    /// One more name than a cardinality limit allows
    /// (`engine::cardinality`).
    #[error("{kind} `{name}` is new and {max} are held already, the most {limit} allows on this node; the event is not counted", limit = kind.limit())]
    CardinalityLimit {
        kind: NameKind,
        name: String,
        max: usize,
    },
    #[error("shard {shard} is owned by node {owner} (epoch {epoch}); send it there")]
    NotOwner { shard: u32, owner: u64, epoch: u64 },
    #[error("shard {shard} (epoch {epoch}) is moving to another node; retry shortly")]
    ShardMoving { shard: u32, epoch: u64 },
    /// A compatible-format message of a type SessionDB cannot map to an
    /// event (`docs/ingest-formats.md`).
    #[error("message type `{kind}` is not supported")]
    UnsupportedMessageType { kind: String },
    /// A compatible-format message of a known type that carries nothing
    /// SessionDB stores (Segment `identify`, `group`, `alias`). Informational:
    /// retrying it changes nothing.
    #[error("`{kind}` messages carry nothing SessionDB stores; acknowledged, not applied")]
    IgnoredMessageType { kind: String },
}

impl RejectReason {
    /// The stable code of this reason, sent as `Rejection::reason`.
    pub fn code(&self) -> RejectCode {
        match self {
            RejectReason::Malformed(_) => RejectCode::MalformedEvent,
            RejectReason::EmptyId => RejectCode::EmptyId,
            RejectReason::IdTooLong { .. } => RejectCode::IdTooLong,
            RejectReason::EmptyVisitor => RejectCode::EmptyVisitor,
            RejectReason::VisitorTooLong { .. } => RejectCode::VisitorTooLong,
            RejectReason::UnknownProject { .. } => RejectCode::UnknownProject,
            RejectReason::InvalidTimestamp { .. } => RejectCode::InvalidTimestamp,
            RejectReason::TooLate { .. } => RejectCode::TooLate,
            RejectReason::TooEarly { .. } => RejectCode::TooEarly,
            RejectReason::MissingKey => RejectCode::MissingKey,
            RejectReason::KeyTooLong => RejectCode::KeyTooLong,
            RejectReason::MissingDecision => RejectCode::MissingDecision,
            RejectReason::TooManyDecisions { .. } => RejectCode::TooManyDecisions,
            RejectReason::InvalidDecision { .. } => RejectCode::InvalidDecision,
            RejectReason::InvalidValue => RejectCode::InvalidValue,
            RejectReason::VisitorEventLimit => RejectCode::VisitorEventLimit,
            RejectReason::CardinalityLimit { .. } => RejectCode::CardinalityLimit,
            RejectReason::NotOwner { .. } => RejectCode::NotOwner,
            RejectReason::ShardMoving { .. } => RejectCode::ShardMoving,
            RejectReason::UnsupportedMessageType { .. } => RejectCode::UnsupportedMessageType,
            RejectReason::IgnoredMessageType { .. } => RejectCode::IgnoredMessageType,
        }
    }
}

/// The names whose number per project is limited (`engine::cardinality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Experiment,
    Variation,
    ConversionKey,
}

impl NameKind {
    /// The name of the limit, as `docs/operations.md` lists it.
    pub fn limit(self) -> &'static str {
        match self {
            NameKind::Experiment => "EXPERIMENTS_PER_PROJECT_MAX",
            NameKind::Variation => "VARIATIONS_PER_EXPERIMENT_MAX",
            NameKind::ConversionKey => "CONVERSION_KEYS_PER_PROJECT_MAX",
        }
    }
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            NameKind::Experiment => "experiment",
            NameKind::Variation => "variation",
            NameKind::ConversionKey => "conversion key",
        })
    }
}

/// Looks up projects for validation.
pub trait ProjectLookup {
    fn project(&self, name: &str) -> Option<Arc<ProjectConfig>>;
}

/// What validation changed in events' attributes instead of rejecting
/// them, per reason (`/metrics`, `sessiondb_ingest_adjustments_total`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttributeAdjustments {
    /// Values cut to `ATTRIBUTE_VALUE_BYTES_MAX` bytes.
    pub values_truncated: u64,
    /// Attributes beyond `ATTRIBUTES_MAX` on one event, dropped.
    pub attributes_dropped: u64,
}

/// The breakdown attribute whose URLs are cut to their host: a breakdown
/// by full referrer URL would have a group per search query.
pub const REFERRER_ATTRIBUTE: &str = "referrer";

/// Validates one wire event against the limits and its project's horizon.
pub fn validate(
    event: wire::Event,
    projects: &impl ProjectLookup,
    now_ms: i64,
) -> Result<VisitorEvent, RejectReason> {
    validate_adjusting(
        event,
        projects,
        now_ms,
        &mut AttributeAdjustments::default(),
    )
}

/// `validate`, adding what it changed in the event's attributes to
/// `adjustments`. Attribute limits never reject an event: only what makes
/// an event meaningless does (identity, time, value, key, decisions).
pub fn validate_adjusting(
    event: wire::Event,
    projects: &impl ProjectLookup,
    now_ms: i64,
    adjustments: &mut AttributeAdjustments,
) -> Result<VisitorEvent, RejectReason> {
    check_identity(&event)?;
    let project = projects
        .project(&event.project)
        .ok_or_else(|| RejectReason::UnknownProject {
            project: event.project.clone(),
        })?;
    let ts_ms = parse_timestamp(&event.ts)?;
    check_horizon(ts_ms, now_ms, &project)?;
    let kind = kind_of(event.event_type);
    let key = check_key(event.key.as_deref(), kind)?;
    let value_micros = value_to_micros(event.value)?;
    let decisions = check_decisions(&event.decisions, kind)?;
    let extra = event
        .attributes
        .len()
        .saturating_sub(limits::ATTRIBUTES_MAX);
    adjustments.attributes_dropped += extra as u64;
    // Only an exposure event's attributes are ever read; dropping the rest
    // keeps visitor state small.
    let attributes = if decisions.is_empty() {
        Vec::new()
    } else {
        breakdown_attributes(event.attributes, &project.settings, adjustments)
    };
    let mut internal = Event {
        id: event.id.into_boxed_str(),
        ts_ms,
        value_micros,
        key,
        decision: None,
        kind,
    };
    internal.set_name_pairs(attributes, decisions);
    Ok(VisitorEvent {
        project,
        visitor: event.visitor.into_boxed_str(),
        event: internal,
    })
}

fn check_identity(event: &wire::Event) -> Result<(), RejectReason> {
    if event.id.is_empty() {
        return Err(RejectReason::EmptyId);
    }
    if event.id.len() > limits::ID_BYTES_MAX {
        return Err(RejectReason::IdTooLong {
            bytes: event.id.len(),
        });
    }
    if event.visitor.is_empty() {
        return Err(RejectReason::EmptyVisitor);
    }
    if event.visitor.len() > limits::VISITOR_BYTES_MAX {
        return Err(RejectReason::VisitorTooLong {
            bytes: event.visitor.len(),
        });
    }
    Ok(())
}

pub fn parse_timestamp(ts: &wire::Timestamp) -> Result<i64, RejectReason> {
    match ts {
        wire::Timestamp::Milliseconds(ms) => Ok(*ms),
        wire::Timestamp::Rfc3339(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|time| time.timestamp_millis())
            .map_err(|_| RejectReason::InvalidTimestamp { text: text.clone() }),
    }
}

fn check_horizon(ts_ms: i64, now_ms: i64, project: &ProjectConfig) -> Result<(), RejectReason> {
    let settings = &project.settings;
    if ts_ms < now_ms.saturating_sub(settings.allowed_lateness_ms) {
        return Err(RejectReason::TooLate {
            ts_ms,
            now_ms,
            allowed_lateness_ms: settings.allowed_lateness_ms,
        });
    }
    if ts_ms > now_ms.saturating_add(settings.future_skew_ms) {
        return Err(RejectReason::TooEarly {
            ts_ms,
            now_ms,
            future_skew_ms: settings.future_skew_ms,
        });
    }
    Ok(())
}

fn kind_of(event_type: wire::EventType) -> EventKind {
    match event_type {
        wire::EventType::Pageview => EventKind::Pageview,
        wire::EventType::Click => EventKind::Click,
        wire::EventType::Custom => EventKind::Custom,
        wire::EventType::Decision => EventKind::Decision,
    }
}

fn check_key(key: Option<&str>, kind: EventKind) -> Result<Option<Arc<str>>, RejectReason> {
    match key {
        None if kind == EventKind::Custom => Err(RejectReason::MissingKey),
        None => Ok(None),
        Some(key) if key.is_empty() || key.len() > limits::KEY_BYTES_MAX => {
            Err(RejectReason::KeyTooLong)
        }
        Some(key) => Ok(Some(Arc::from(key))),
    }
}

/// Converts a value to micro-units, rounding half away from zero.
pub fn value_to_micros(value: Option<f64>) -> Result<i64, RejectReason> {
    let Some(value) = value else { return Ok(0) };
    if !value.is_finite() || value.abs() > limits::VALUE_ABS_MAX {
        return Err(RejectReason::InvalidValue);
    }
    let micros = (value * 1e6).round();
    debug_assert!(micros.abs() <= 1e18);
    Ok(micros as i64)
}

fn check_decisions(
    decisions: &[wire::Decision],
    kind: EventKind,
) -> Result<NamePairs, RejectReason> {
    if kind == EventKind::Decision && decisions.is_empty() {
        return Err(RejectReason::MissingDecision);
    }
    if decisions.len() > limits::DECISIONS_MAX {
        return Err(RejectReason::TooManyDecisions {
            count: decisions.len(),
        });
    }
    let name_valid = |name: &str| !name.is_empty() && name.len() <= limits::DECISION_NAME_BYTES_MAX;
    decisions
        .iter()
        .enumerate()
        .map(|(index, decision)| {
            if name_valid(&decision.experiment) && name_valid(&decision.variation) {
                Ok((
                    Arc::from(decision.experiment.as_str()),
                    Arc::from(decision.variation.as_str()),
                ))
            } else {
                Err(RejectReason::InvalidDecision { index })
            }
        })
        .collect()
}

/// The attributes that a breakdown of the project uses, normalised: the
/// rest are never read, so they are not kept. A project has at most
/// `BREAKDOWN_ATTRIBUTES_MAX` (≤ `ATTRIBUTES_MAX`) of them, so none is lost
/// to `ATTRIBUTES_MAX`.
fn breakdown_attributes(
    attributes: std::collections::BTreeMap<String, String>,
    settings: &Settings,
    adjustments: &mut AttributeAdjustments,
) -> NamePairs {
    // BTreeMap iterates in name order, which `Event::attribute` relies on.
    attributes
        .into_iter()
        .filter(|(name, _)| {
            settings
                .breakdown_attributes
                .iter()
                .any(|breakdown| **breakdown == **name)
        })
        .take(limits::ATTRIBUTES_MAX)
        .map(|(name, value)| {
            let value = normalised_value(&name, value, adjustments);
            (Arc::from(name), Arc::from(value))
        })
        .collect()
}

/// A `referrer` URL becomes its host; any value is then cut to
/// `ATTRIBUTE_VALUE_BYTES_MAX` bytes at a character boundary.
fn normalised_value(name: &str, value: String, adjustments: &mut AttributeAdjustments) -> String {
    let mut value = match host_of(&value) {
        Some(host) if name == REFERRER_ATTRIBUTE => host,
        _ => value,
    };
    if value.len() > limits::ATTRIBUTE_VALUE_BYTES_MAX {
        let mut end = limits::ATTRIBUTE_VALUE_BYTES_MAX;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        adjustments.values_truncated += 1;
    }
    value
}

/// The host of an absolute URL (`scheme://[user@]host[:port]/…`),
/// lower-cased; `None` for anything else.
pub fn host_of(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let mut scheme_chars = scheme.chars();
    let scheme_valid = scheme_chars.next()?.is_ascii_alphabetic()
        && scheme_chars.all(|char| char.is_ascii_alphanumeric() || "+-.".contains(char));
    if !scheme_valid {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_and_port.strip_prefix('[') {
        // An IPv6 literal keeps its brackets; its colons are not a port.
        Some(literal) => &host_and_port[..literal.find(']')? + 2],
        None => host_and_port.split(':').next().unwrap_or_default(),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::{ProjectRegistry, SettingsPatch};

    impl ProjectLookup for ProjectRegistry {
        fn project(&self, name: &str) -> Option<Arc<ProjectConfig>> {
            self.get(name)
        }
    }

    fn wire_event() -> wire::Event {
        wire::Event {
            id: "e1".into(),
            project: "shop".into(),
            visitor: "v1".into(),
            ts: wire::Timestamp::Milliseconds(1_000_000),
            event_type: wire::EventType::Decision,
            key: None,
            value: Some(12.345_678_9),
            attributes: [("browser".to_string(), "firefox".to_string())].into(),
            decisions: vec![wire::Decision {
                experiment: "x".into(),
                variation: "a".into(),
            }],
        }
    }

    fn registry() -> ProjectRegistry {
        let registry = ProjectRegistry::default();
        registry.create("shop", &SettingsPatch::default()).unwrap();
        registry
    }

    #[test]
    fn valid_event_is_normalised() {
        let event = validate(wire_event(), &registry(), 1_000_000).unwrap();
        assert_eq!(event.event.value_micros, 12_345_679);
        assert_eq!(
            event.event.attribute("browser").map(|value| &**value),
            Some("firefox")
        );
        assert_eq!(event.event.decisions().len(), 1);
    }

    #[test]
    fn each_bound_has_its_reason() {
        let registry = registry();
        let check = |change: &dyn Fn(&mut wire::Event), code: &str| {
            let mut event = wire_event();
            change(&mut event);
            let error = validate(event, &registry, 1_000_000).unwrap_err();
            assert_eq!(error.code(), code, "{error}");
        };
        check(&|event| event.id = "x".repeat(129), "id_too_long");
        check(&|event| event.visitor.clear(), "empty_visitor");
        check(&|event| event.project = "nope".into(), "unknown_project");
        check(
            &|event| event.ts = wire::Timestamp::Milliseconds(1_000_000 - 86_400_001),
            "too_late",
        );
        check(
            &|event| event.ts = wire::Timestamp::Milliseconds(2_000_000),
            "too_early",
        );
        check(
            &|event| event.ts = wire::Timestamp::Rfc3339("yesterday".into()),
            "invalid_timestamp",
        );
        check(&|event| event.decisions.clear(), "missing_decision");
        check(&|event| event.value = Some(f64::NAN), "invalid_value");
        check(&|event| event.value = Some(2e12), "invalid_value");
        check(
            &|event| {
                event.event_type = wire::EventType::Custom;
                event.key = None;
            },
            "missing_key",
        );
    }

    #[test]
    fn attribute_limits_adjust_the_event_instead_of_rejecting_it() {
        let registry = registry();
        let mut event = wire_event();
        for index in 0..40 {
            event.attributes.insert(format!("a{index}"), "v".into());
        }
        // 255 ASCII bytes then a 2-byte character: cut before it.
        event
            .attributes
            .insert("device".into(), format!("{}é", "d".repeat(255)));
        event.attributes.insert("campaign".into(), "c".repeat(300));
        let mut adjustments = AttributeAdjustments::default();
        let event = validate_adjusting(event, &registry, 1_000_000, &mut adjustments).unwrap();
        let names: Vec<&str> = event
            .event
            .attributes()
            .iter()
            .map(|(name, _)| &**name)
            .collect();
        assert_eq!(names, ["browser", "campaign", "device"]);
        let attribute = |name| event.event.attribute(name).map(|value| value.len());
        assert_eq!(attribute("device"), Some(255));
        assert_eq!(
            attribute("campaign"),
            Some(limits::ATTRIBUTE_VALUE_BYTES_MAX)
        );
        assert_eq!(
            adjustments,
            AttributeAdjustments {
                values_truncated: 2,
                attributes_dropped: (43 - limits::ATTRIBUTES_MAX) as u64,
            }
        );
    }

    #[test]
    fn referrers_become_hosts_and_other_text_stays() {
        let referrer = |value: &str| {
            let mut event = wire_event();
            event.attributes.insert("referrer".into(), value.into());
            let event = validate(event, &registry(), 1_000_000).unwrap();
            event.event.attribute("referrer").unwrap().to_string()
        };
        assert_eq!(
            referrer("https://www.google.com/search?q=x"),
            "www.google.com"
        );
        assert_eq!(referrer("HTTP://user@Example.org:8080#top"), "example.org");
        assert_eq!(referrer("http://[::1]:80/x"), "[::1]");
        assert_eq!(referrer("newsletter"), "newsletter");
        assert_eq!(referrer(&"n".repeat(300)).len(), 256);
        assert_eq!(host_of("://nothing"), None);
        assert_eq!(host_of("https:///path"), None);
    }

    /// The compact layout encodes exactly as the first one did (two
    /// vectors of name pairs on every event), so checkpoints and log
    /// records written before decode, and nothing on disk changed.
    #[test]
    fn events_encode_as_the_first_layout() {
        #[derive(serde::Serialize)]
        struct FirstLayout {
            id: Box<str>,
            ts_ms: i64,
            kind: EventKind,
            key: Option<Arc<str>>,
            value_micros: i64,
            attributes: NamePairs,
            decisions: NamePairs,
        }
        let mut pageview = wire_event();
        pageview.event_type = wire::EventType::Custom;
        pageview.key = Some("buy".into());
        pageview.decisions.clear();
        for wire_event in [wire_event(), pageview] {
            let event = validate(wire_event, &registry(), 1_000_000).unwrap().event;
            let first = FirstLayout {
                id: event.id.clone(),
                ts_ms: event.ts_ms,
                kind: event.kind,
                key: event.key.clone(),
                value_micros: event.value_micros,
                attributes: event.attributes().to_vec(),
                decisions: event.decisions().to_vec(),
            };
            let bytes = postcard::to_stdvec(&first).unwrap();
            assert_eq!(postcard::to_stdvec(&event).unwrap(), bytes);
            assert_eq!(postcard::from_bytes::<Event>(&bytes).unwrap(), event);
            assert_eq!(event.decision.is_none(), first.decisions.is_empty());
        }
    }

    #[test]
    fn rfc3339_timestamps_are_accepted() {
        let mut event = wire_event();
        event.ts = wire::Timestamp::Rfc3339("1970-01-01T00:16:40Z".into());
        assert_eq!(
            validate(event, &registry(), 1_000_000).unwrap().event.ts_ms,
            1_000_000
        );
    }
}
