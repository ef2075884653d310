//! Proptest-based fuzz targets for every decoder of the node; see
//! `docs/reliability.md`, "Fuzzing". (The binary batch codec has its own
//! target in `protocol/tests/fuzz_binary.rs`.)
//!
//! cargo-fuzz needs a nightly toolchain, so the targets are proptest
//! properties: a modest number of cases in the default suite, many more
//! with `SESSIONDB_FUZZ_CASES=<n>` (the long run).
//!
//! Each target feeds (a) arbitrary bytes, (b) valid encodings with random
//! edits, and, for the JSON formats, (c) values of the right shape with
//! wrong types in random places. Every decoder must return a typed error or
//! a value — never panic — and valid inputs must decode to what was encoded.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};
use sessiondb_node::engine::aggregates::AggregateStore;
use sessiondb_node::engine::journal::{self, JournalEntry, JournalEvent};
use sessiondb_node::engine::shard::{DeltaSink, ShardState};
use sessiondb_node::event::{self, ProjectLookup, RejectReason, VisitorEvent};
use sessiondb_node::http::{ingest, map_optimizely_batch, map_segment_batch};
use sessiondb_node::log::{Log, LogConfig, LogError};
use sessiondb_node::project::{ProjectConfig, ProjectRegistry, SettingsPatch};
use sessiondb_protocol as wire;
use sessiondb_protocol::{ErrorCode, RejectCode};
use sessiondb_test_support::TempDir;
use std::sync::Arc;

/// "Now" for validation: 2025-11-26T10:00:00Z.
const NOW_MS: i64 = 1_764_151_200_000;

/// Cases per target: `SESSIONDB_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("SESSIONDB_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Shared strategies: JSON values, byte edits.

/// Object keys: mostly names the decoders look for, so random objects reach
/// deep into the mappings.
fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "project",
            "visitor",
            "ts",
            "type",
            "key",
            "value",
            "attributes",
            "decisions",
            "experiment",
            "variation",
            "events",
            "visitors",
            "visitor_id",
            "snapshots",
            "uuid",
            "timestamp",
            "revenue",
            "tags",
            "entity_id",
            "batch",
            "messageId",
            "userId",
            "anonymousId",
            "properties",
            "context",
            "sentAt",
            "event",
            "name",
            "originalTimestamp",
            "userAgent",
            "campaign",
            "page",
            "referrer",
            "experimentId",
            "variationId",
            "project_id",
        ])
        .prop_map(str::to_string),
        "[a-z_$]{0,8}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |v| v.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            ".{0,8}",
            Just("track".to_string()),
            Just("page".to_string()),
            Just("identify".to_string()),
            Just("campaign_activated".to_string()),
            Just("Experiment Viewed".to_string()),
            Just("2025-11-26T10:00:00Z".to_string()),
            Just("custom".to_string()),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((arb_key(), inner), 0..5)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Replaces the node reached by following `path` (one child pick per
/// level, stopping early at a leaf or an empty container) with `with`.
fn replace_at(value: &mut Value, path: &[Index], with: Value) {
    let Some((pick, rest)) = path.split_first() else {
        *value = with;
        return;
    };
    match value {
        Value::Array(items) if !items.is_empty() => {
            let index = pick.index(items.len());
            replace_at(&mut items[index], rest, with);
        }
        Value::Object(fields) if !fields.is_empty() => {
            let index = pick.index(fields.len());
            let child = fields.values_mut().nth(index).expect("index is in range");
            replace_at(child, rest, with);
        }
        _ => *value = with,
    }
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<Index>(), 1..8usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
    ]
}

fn arb_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(arb_mutation(), 1..5)
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        if let Mutation::Insert(_, inserted) = mutation {
            bytes.extend_from_slice(inserted);
        }
        return;
    }
    match mutation {
        Mutation::Flip(at, mask) => {
            let index = at.index(bytes.len());
            bytes[index] ^= mask;
        }
        Mutation::Set(at, byte) => {
            let index = at.index(bytes.len());
            bytes[index] = *byte;
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Mutation::Insert(at, inserted) => {
            let index = at.index(bytes.len() + 1);
            bytes.splice(index..index, inserted.iter().copied());
        }
        Mutation::Delete(at, n) => {
            let index = at.index(bytes.len());
            let end = (index + n).min(bytes.len());
            bytes.drain(index..end);
        }
    }
}

fn mutated(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        mutate(&mut bytes, mutation);
    }
    bytes
}

// ---------------------------------------------------------------------------
// Projects, validation, valid wire events.

#[derive(Debug)]
struct Projects(ProjectRegistry);

impl ProjectLookup for Projects {
    fn project(&self, name: &str) -> Option<Arc<ProjectConfig>> {
        self.0.get(name)
    }
}

fn projects() -> Projects {
    let registry = ProjectRegistry::default();
    registry
        .create("shop", &SettingsPatch::default())
        .expect("a fresh registry takes a project");
    Projects(registry)
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9_-]{1,16}", ".{0,8}"]
}

fn arb_wire_event() -> impl Strategy<Value = wire::Event> {
    let ts = prop_oneof![
        (-3_600_000i64..3_600_000)
            .prop_map(|offset| wire::Timestamp::Milliseconds(NOW_MS + offset)),
        any::<i64>().prop_map(wire::Timestamp::Milliseconds),
        prop_oneof![Just("2025-11-26T09:59:00Z".to_string()), ".{0,12}"]
            .prop_map(wire::Timestamp::Rfc3339),
    ];
    let event_type = prop::sample::select(vec![
        wire::EventType::Pageview,
        wire::EventType::Click,
        wire::EventType::Custom,
        wire::EventType::Decision,
    ]);
    let decision =
        ("[a-z]{1,6}", "[a-z]{1,3}").prop_map(|(experiment, variation)| wire::Decision {
            experiment,
            variation,
        });
    (
        (
            arb_text(),
            prop_oneof![4 => Just("shop".to_string()), 1 => arb_text()],
            arb_text(),
            ts,
            event_type,
        ),
        (
            proptest::option::of(arb_text()),
            // Integers: exact through JSON, so the round trip can compare.
            proptest::option::of(any::<i32>().prop_map(f64::from)),
            proptest::collection::btree_map("[a-z]{1,6}", arb_text(), 0..4),
            proptest::collection::vec(decision, 0..3),
        ),
    )
        .prop_map(
            |((id, project, visitor, ts, event_type), (key, value, attributes, decisions))| {
                wire::Event {
                    id,
                    project,
                    visitor,
                    ts,
                    event_type,
                    key,
                    value,
                    attributes,
                    decisions,
                }
            },
        )
}

/// Validation of a decoded event must answer, with a stable code.
fn check_validate(event: wire::Event, projects: &Projects) -> Result<(), TestCaseError> {
    if let Err(reason) = event::validate(event, projects, NOW_MS) {
        prop_assert!(!reason.code().is_unknown());
        prop_assert!(!reason.to_string().is_empty());
    }
    Ok(())
}

/// Whole-request errors of a JSON body are one of these codes, with a
/// message.
fn check_api_error(error: &sessiondb_node::http::error::ApiError) -> Result<(), TestCaseError> {
    prop_assert!(
        [ErrorCode::MalformedJson, ErrorCode::BatchTooLarge].contains(&error.code),
        "unexpected whole-request error {error:?}"
    );
    prop_assert!(error.status.is_client_error());
    prop_assert!(!error.message.is_empty());
    Ok(())
}

/// The native path on any body: `parse_batch`, then `decode_event` and
/// validation per element. Returns the decoded events.
fn native(body: &[u8], projects: &Projects) -> Result<Option<Vec<wire::Event>>, TestCaseError> {
    let elements = match ingest::parse_batch(body) {
        Ok(elements) => elements,
        Err(error) => {
            check_api_error(&error)?;
            return Ok(None);
        }
    };
    let mut decoded = Vec::new();
    for element in elements {
        match ingest::decode_event(element) {
            Ok(event) => {
                decoded.push(event.clone());
                check_validate(event, projects)?;
            }
            Err(reason) => {
                prop_assert_eq!(reason.code(), "malformed_event");
                prop_assert!(!reason.to_string().is_empty());
            }
        }
    }
    Ok(Some(decoded))
}

/// Per-event reasons the compatible mappings may give.
const MAPPING_REASONS: [RejectCode; 4] = [
    RejectCode::MalformedEvent,
    RejectCode::InvalidTimestamp,
    RejectCode::IgnoredMessageType,
    RejectCode::UnsupportedMessageType,
];

type Mapped = Vec<Result<wire::Event, RejectReason>>;

fn check_mapped(
    result: Result<Mapped, sessiondb_node::http::error::ApiError>,
    projects: &Projects,
) -> Result<Option<usize>, TestCaseError> {
    match result {
        Err(error) => {
            check_api_error(&error)?;
            Ok(None)
        }
        Ok(events) => {
            let count = events.len();
            for event in events {
                match event {
                    Ok(event) => {
                        prop_assert_eq!(&event.project, "shop");
                        check_validate(event, projects)?;
                    }
                    Err(reason) => {
                        prop_assert!(
                            MAPPING_REASONS.contains(&reason.code()),
                            "unexpected mapping reason {reason:?}"
                        );
                    }
                }
            }
            Ok(Some(count))
        }
    }
}

// ---------------------------------------------------------------------------
// (1) Native JSON batches.

/// (c) One field's value: right, wrong-typed, or absent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Choice {
    Right,
    Wrong,
    Absent,
}

const FIELDS: [&str; 9] = [
    "id",
    "project",
    "visitor",
    "ts",
    "type",
    "key",
    "value",
    "attributes",
    "decisions",
];
const REQUIRED: [&str; 5] = ["id", "project", "visitor", "ts", "type"];

fn right_value(field: &str) -> Value {
    match field {
        "id" => json!("e-1"),
        "project" => json!("shop"),
        "visitor" => json!("v-1"),
        "ts" => json!(NOW_MS - 1000),
        "type" => json!("custom"),
        "key" => json!("buy"),
        "value" => json!(12.5),
        "attributes" => json!({"browser": "firefox"}),
        "decisions" => json!([{"experiment": "x", "variation": "a"}]),
        _ => unreachable!("not a field: {field}"),
    }
}

/// Values that `field` cannot take (serde must refuse each).
fn wrong_values(field: &str) -> Vec<Value> {
    let structures = || {
        vec![
            json!([]),
            json!({}),
            json!([1]),
            json!({"a": 1}),
            json!(true),
        ]
    };
    let mut values = structures();
    match field {
        "id" | "project" | "visitor" => values.extend([json!(null), json!(7), json!(1.5)]),
        "ts" => values.extend([json!(null), json!(1.5), json!(u64::MAX)]),
        "type" => values.extend([json!(null), json!(3), json!("purchase"), json!("Custom")]),
        "key" => values.extend([json!(7), json!(1.5)]),
        "value" => values.extend([json!("12"), json!("")]),
        "attributes" => {
            values = vec![
                json!(null),
                json!([]),
                json!("a"),
                json!(3),
                json!({"a": 1}),
                json!({"a": null}),
                json!({"a": ["x"]}),
            ]
        }
        "decisions" => {
            values = vec![
                json!(null),
                json!({}),
                json!("x"),
                json!([1]),
                json!([{"experiment": 1, "variation": "a"}]),
                json!([{"experiment": "x"}]),
            ]
        }
        _ => unreachable!("not a field: {field}"),
    }
    values
}

fn arb_shaped_event() -> impl Strategy<Value = (Vec<Choice>, Value)> {
    let choice = prop_oneof![
        6 => Just(Choice::Right),
        2 => Just(Choice::Wrong),
        1 => Just(Choice::Absent)
    ];
    (
        proptest::collection::vec((choice, any::<Index>()), FIELDS.len()),
        proptest::collection::vec((arb_key(), arb_json()), 0..3),
    )
        .prop_map(|(choices, extra)| {
            let mut object = Map::new();
            // Unknown fields are ignored by the decoder.
            for (name, value) in extra {
                if !FIELDS.contains(&name.as_str()) {
                    object.insert(name, value);
                }
            }
            let mut picked = Vec::new();
            for (field, (choice, index)) in FIELDS.iter().zip(choices) {
                picked.push(choice);
                match choice {
                    Choice::Right => {
                        object.insert(field.to_string(), right_value(field));
                    }
                    Choice::Wrong => {
                        let values = wrong_values(field);
                        object.insert(field.to_string(), values[index.index(values.len())].clone());
                    }
                    Choice::Absent => {}
                }
            }
            (picked, Value::Object(object))
        })
}

proptest! {
    #![proptest_config(config(512))]

    /// (1a) Arbitrary bytes, and arbitrary text inside `{"events": [...]}`.
    #[test]
    fn native_json_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        text in ".{0,64}",
    ) {
        let projects = projects();
        native(&bytes, &projects)?;
        native(format!("{{\"events\": [{text}]}}").as_bytes(), &projects)?;
    }

    /// (1b) Valid batches round-trip through `parse_batch` + `decode_event`;
    /// edited ones fail cleanly.
    #[test]
    fn native_json_mutated(
        events in proptest::collection::vec(arb_wire_event(), 0..5),
        mutations in arb_mutations(),
    ) {
        let projects = projects();
        let body = serde_json::to_vec(&wire::EventBatch { events: events.clone() }).unwrap();
        let decoded = native(&body, &projects)?;
        prop_assert_eq!(decoded, Some(events));
        native(&mutated(body, &mutations), &projects)?;
    }

    /// (1c) Events of the right shape with wrong-typed or missing fields:
    /// the error names the first wrong field (in the decoder's order); an
    /// event with every field right decodes.
    #[test]
    fn native_json_wrong_types((choices, element) in arb_shaped_event()) {
        let first_wrong = FIELDS
            .iter()
            .zip(&choices)
            .find(|(_, choice)| **choice == Choice::Wrong)
            .map(|(field, _)| *field);
        let missing = FIELDS
            .iter()
            .zip(&choices)
            .any(|(field, choice)| *choice == Choice::Absent && REQUIRED.contains(field));
        let result = ingest::decode_event(element.clone());
        match (first_wrong, result) {
            (Some(field), Err(RejectReason::Malformed(message))) => {
                let expected = format!("field `{field}`");
                prop_assert!(message.starts_with(&expected), "{message} for {element}");
            }
            (None, Err(RejectReason::Malformed(message))) => {
                prop_assert!(missing, "{message} for {element}");
                prop_assert!(message.contains("missing field"), "{message}");
            }
            (None, Ok(event)) => {
                prop_assert!(!missing, "decoded without a required field: {element}");
                check_validate(event, &projects())?;
            }
            (first_wrong, result) => {
                prop_assert!(false, "{result:?} for {element} (first wrong: {first_wrong:?})");
            }
        }
        // The same element inside a batch, next to arbitrary elements.
        let body = serde_json::to_vec(&json!({"events": [element, 1, null, "x"]})).unwrap();
        let decoded = native(&body, &projects())?;
        prop_assert!(decoded.is_some());
    }

    /// (1c) Arbitrary JSON values as the body and as the elements.
    #[test]
    fn native_json_arbitrary_values(value in arb_json(), elements in proptest::collection::vec(arb_json(), 0..4)) {
        let projects = projects();
        native(&serde_json::to_vec(&value).unwrap(), &projects)?;
        let body = serde_json::to_vec(&json!({"events": elements})).unwrap();
        prop_assert!(native(&body, &projects)?.is_some());
    }
}

// ---------------------------------------------------------------------------
// (3) Optimizely batches.

#[derive(Debug, Clone)]
struct OptimizelyEvent {
    uuid: String,
    key: String,
    timestamp: i64,
    revenue: Option<i32>,
}

fn arb_optimizely_batch() -> impl Strategy<Value = (Value, Vec<(String, OptimizelyEvent)>)> {
    let event = (
        "[a-f0-9-]{1,12}",
        prop_oneof![Just("campaign_activated".to_string()), "[a-z]{1,8}"],
        any::<i64>(),
        proptest::option::of(any::<i32>()),
    )
        .prop_map(|(uuid, key, timestamp, revenue)| OptimizelyEvent {
            uuid,
            key,
            timestamp,
            revenue,
        });
    let snapshot = (
        proptest::collection::vec(("[0-9]{1,4}", "[0-9]{1,4}"), 0..2),
        proptest::collection::vec(event, 0..3),
    );
    let visitor = (
        "[a-z0-9]{1,8}",
        proptest::collection::vec(("[a-z$_]{1,10}", arb_text()), 0..3),
        proptest::collection::vec(snapshot, 0..3),
    );
    proptest::collection::vec(visitor, 0..3).prop_map(|visitors| {
        let mut expected = Vec::new();
        let visitors: Vec<Value> = visitors
            .into_iter()
            .map(|(visitor_id, attributes, snapshots)| {
                let snapshots: Vec<Value> = snapshots
                    .into_iter()
                    .map(|(decisions, events)| {
                        let events: Vec<Value> = events
                            .into_iter()
                            .map(|event| {
                                let mut value = json!({
                                    "entity_id": "1", "uuid": event.uuid, "key": event.key,
                                    "timestamp": event.timestamp, "tags": {"size": "L"},
                                });
                                if let Some(revenue) = event.revenue {
                                    value["revenue"] = json!(revenue);
                                }
                                expected.push((visitor_id.clone(), event));
                                value
                            })
                            .collect();
                        let decisions: Vec<Value> = decisions
                            .into_iter()
                            .map(|(x, v)| json!({"campaign_id": "c", "experiment_id": x, "variation_id": v}))
                            .collect();
                        json!({"decisions": decisions, "events": events})
                    })
                    .collect();
                let attributes: Vec<Value> = attributes
                    .into_iter()
                    .map(|(key, value)| json!({"entity_id": key, "key": key, "type": "custom", "value": value}))
                    .collect();
                json!({"visitor_id": visitor_id, "attributes": attributes, "snapshots": snapshots})
            })
            .collect();
        let batch = json!({
            "account_id": "1", "project_id": "123", "revision": "7",
            "client_name": "fuzz", "visitors": visitors,
        });
        (batch, expected)
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// (3a) Arbitrary bytes.
    #[test]
    fn optimizely_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_mapped(map_optimizely_batch(&bytes, "shop"), &projects())?;
    }

    /// (3b) Valid batches map event by event, in flattened order; edited
    /// ones fail cleanly.
    #[test]
    fn optimizely_mutated((batch, expected) in arb_optimizely_batch(), mutations in arb_mutations()) {
        let projects = projects();
        let body = serde_json::to_vec(&batch).unwrap();
        let events = map_optimizely_batch(&body, "shop");
        prop_assert!(events.is_ok(), "{events:?}");
        let events = events.unwrap();
        prop_assert_eq!(events.len(), expected.len());
        for (event, (visitor, source)) in events.iter().zip(&expected) {
            let event = event.as_ref().map_err(|reason| TestCaseError::fail(format!("{reason:?}")))?;
            prop_assert_eq!(&event.visitor, visitor);
            prop_assert_eq!(&event.id, &source.uuid);
            prop_assert_eq!(&event.ts, &wire::Timestamp::Milliseconds(source.timestamp));
            let impression = source.key == "campaign_activated";
            prop_assert_eq!(event.event_type == wire::EventType::Decision, impression);
            if !impression {
                prop_assert_eq!(event.value, source.revenue.map(f64::from));
            }
        }
        check_mapped(map_optimizely_batch(&mutated(body, &mutations), "shop"), &projects)?;
    }

    /// (3c) A valid batch with one node (anywhere) replaced by an arbitrary
    /// JSON value: a whole-request error or one outcome per event.
    #[test]
    fn optimizely_wrong_types(
        (mut batch, _) in arb_optimizely_batch(),
        path in proptest::collection::vec(any::<Index>(), 0..7),
        with in arb_json(),
    ) {
        replace_at(&mut batch, &path, with);
        let body = serde_json::to_vec(&batch).unwrap();
        check_mapped(map_optimizely_batch(&body, "shop"), &projects())?;
    }
}

// ---------------------------------------------------------------------------
// (4) Segment batches.

#[derive(Debug, Clone)]
struct AggregateMessage {
    kind: &'static str,
    id: String,
    user: String,
    name: String,
    revenue: Option<i32>,
}

fn arb_segment_batch() -> impl Strategy<Value = (Value, Vec<AggregateMessage>)> {
    let message = (
        prop::sample::select(vec!["track", "page", "identify"]),
        "[a-z0-9]{1,10}",
        "[a-z0-9]{1,10}",
        prop_oneof![Just("Experiment Viewed".to_string()), "[A-Za-z ]{0,10}"],
        proptest::option::of(any::<i32>()),
    )
        .prop_map(|(kind, id, user, name, revenue)| AggregateMessage {
            kind,
            id,
            user,
            name,
            revenue,
        });
    proptest::collection::vec(message, 0..6).prop_map(|messages| {
        let batch: Vec<Value> = messages
            .iter()
            .map(|message| {
                let mut properties =
                    json!({"color": "blue", "experiment_id": "x", "variation_id": "a"});
                if let Some(revenue) = message.revenue {
                    properties["revenue"] = json!(revenue);
                }
                json!({
                    "type": message.kind, "messageId": message.id, "userId": message.user,
                    "event": message.name, "name": message.name,
                    "timestamp": "2025-11-26T09:59:00Z", "properties": properties,
                })
            })
            .collect();
        let body = json!({
            "batch": batch, "sentAt": "2025-11-26T10:00:00Z",
            "context": {"userAgent": "Mozilla/5.0 Firefox/120.0"},
        });
        (body, messages)
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// (4a) Arbitrary bytes.
    #[test]
    fn segment_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_mapped(map_segment_batch(&bytes, "shop"), &projects())?;
    }

    /// (4b) Valid batches map message by message; edited ones fail cleanly.
    #[test]
    fn segment_mutated((batch, expected) in arb_segment_batch(), mutations in arb_mutations()) {
        let projects = projects();
        let body = serde_json::to_vec(&batch).unwrap();
        let events = map_segment_batch(&body, "shop");
        prop_assert!(events.is_ok(), "{events:?}");
        let events = events.unwrap();
        prop_assert_eq!(events.len(), expected.len());
        for (event, message) in events.iter().zip(&expected) {
            if message.kind == "identify" {
                prop_assert_eq!(event.as_ref().map_err(RejectReason::code), Err(RejectCode::IgnoredMessageType));
                continue;
            }
            let event = event.as_ref().map_err(|reason| TestCaseError::fail(format!("{reason:?}")))?;
            prop_assert_eq!(&event.id, &message.id);
            prop_assert_eq!(&event.visitor, &message.user);
            prop_assert_eq!(&event.ts, &wire::Timestamp::Rfc3339("2025-11-26T09:59:00Z".into()));
            prop_assert_eq!(event.attributes.get("browser").map(String::as_str), Some("firefox"));
            let expected_type = match (message.kind, message.name.as_str()) {
                ("page", _) => wire::EventType::Pageview,
                (_, "Experiment Viewed") => wire::EventType::Decision,
                _ => wire::EventType::Custom,
            };
            prop_assert_eq!(event.event_type, expected_type);
            if expected_type == wire::EventType::Custom {
                prop_assert_eq!(event.value, message.revenue.map(f64::from));
            }
        }
        check_mapped(map_segment_batch(&mutated(body, &mutations), "shop"), &projects)?;
    }

    /// (4c) One node replaced by an arbitrary JSON value; and messages that
    /// are arbitrary JSON values: one outcome per message.
    #[test]
    fn segment_wrong_types(
        (mut batch, _) in arb_segment_batch(),
        path in proptest::collection::vec(any::<Index>(), 0..6),
        with in arb_json(),
        messages in proptest::collection::vec(arb_json(), 0..4),
    ) {
        replace_at(&mut batch, &path, with);
        let body = serde_json::to_vec(&batch).unwrap();
        check_mapped(map_segment_batch(&body, "shop"), &projects())?;
        let count = messages.len();
        let body = serde_json::to_vec(&json!({"batch": messages})).unwrap();
        prop_assert_eq!(check_mapped(map_segment_batch(&body, "shop"), &projects())?, Some(count));
    }
}

// ---------------------------------------------------------------------------
// (5) Log segments: `Log::open` on a directory holding one segment file.

/// The on-disk layout of `node/src/log/mod.rs`, written independently here.
const SEGMENT_HEADER_LEN: usize = 24;
const RECORD_OVERHEAD_LEN: usize = 20;

fn segment_header(first_position: u64) -> Vec<u8> {
    let mut header = b"SDB-LOG\0".to_vec();
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&first_position.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

fn push_record(out: &mut Vec<u8>, position: u64, shard: u32, payload: &[u8]) {
    let mut body = position.to_le_bytes().to_vec();
    body.extend_from_slice(&shard.to_le_bytes());
    body.extend_from_slice(payload);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// (shard, payload) per record; positions are 1, 2, …
type Records = Vec<(u32, Vec<u8>)>;

fn aggregate_actor_of(records: &Records) -> Vec<u8> {
    let mut bytes = segment_header(1);
    for (index, (shard, payload)) in records.iter().enumerate() {
        push_record(&mut bytes, index as u64 + 1, *shard, payload);
    }
    bytes
}

fn arb_records() -> impl Strategy<Value = Records> {
    proptest::collection::vec(
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40)),
        1..6,
    )
}

/// Opens a log whose only segment holds `bytes`. On success, replays it and
/// checks what recovery reported; returns the records kept, or `None` for a
/// typed refusal.
/// (position, shard, payload) of each record a log replays.
type Kept = Vec<(u64, u32, Vec<u8>)>;

fn open_segment(bytes: &[u8]) -> Result<Option<Kept>, TestCaseError> {
    let dir = TempDir::new("fuzz");
    let file = dir.path().join(format!("log-{:020}.seg", 1));
    std::fs::write(&file, bytes).unwrap();
    match Log::open(dir.path(), LogConfig::default()) {
        Err(error) => {
            prop_assert!(
                matches!(error, LogError::Corrupt { .. }),
                "not a corruption report: {error:?}"
            );
            prop_assert!(!error.to_string().is_empty());
            Ok(None)
        }
        Ok((log, report)) => {
            let replay = log.replay_after(0);
            prop_assert!(replay.is_ok(), "{replay:?}");
            let records: Result<Vec<_>, _> = replay.unwrap().collect();
            prop_assert!(records.is_ok(), "{records:?}");
            let records: Vec<_> = records
                .unwrap()
                .into_iter()
                .map(|record| (record.position, record.shard, record.payload))
                .collect();
            prop_assert_eq!(records.len() as u64, report.records);
            prop_assert_eq!(report.last_position, records.len() as u64);
            for (index, record) in records.iter().enumerate() {
                prop_assert_eq!(record.0, index as u64 + 1);
            }
            let kept = std::fs::metadata(&file).unwrap().len();
            prop_assert!(kept as usize <= bytes.len().max(SEGMENT_HEADER_LEN));
            drop(log);
            Ok(Some(records))
        }
    }
}

/// Whether the records kept are the first ones written, unchanged.
fn is_prefix(kept: &Kept, written: &Records) -> bool {
    kept.len() <= written.len()
        && kept.iter().zip(written).all(
            |((_, shard, payload), (written_shard, written_payload))| {
                shard == written_shard && payload == written_payload
            },
        )
}

proptest! {
    #![proptest_config(config(256))]

    /// (5a) Arbitrary bytes as the segment file, bare and behind a valid
    /// header.
    #[test]
    fn log_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        open_segment(&bytes)?;
        let mut framed = segment_header(1);
        framed.extend_from_slice(&bytes);
        open_segment(&framed)?;
    }

    /// (5b) A torn tail (any truncation) is cut, keeping exactly the whole
    /// records before the cut.
    #[test]
    fn log_truncated_tail_is_cut(records in arb_records(), cut in any::<Index>()) {
        let bytes = aggregate_actor_of(&records);
        let length = cut.index(bytes.len() + 1);
        let kept = open_segment(&bytes[..length])?;
        prop_assert!(kept.is_some(), "a truncated segment was refused");
        let kept = kept.unwrap();
        let mut whole = 0;
        let mut end = SEGMENT_HEADER_LEN;
        for (_, payload) in &records {
            end += RECORD_OVERHEAD_LEN + payload.len();
            if end > length {
                break;
            }
            whole += 1;
        }
        prop_assert_eq!(kept.len(), whole);
        prop_assert!(is_prefix(&kept, &records));
    }

    /// (5b) One flipped byte: in the header or a record before the last it
    /// is corruption (never skipped); in the last record it is a torn tail.
    #[test]
    fn log_flipped_byte(records in arb_records(), at in any::<Index>(), mask in 1..=255u8) {
        let mut bytes = aggregate_actor_of(&records);
        let index = at.index(bytes.len());
        bytes[index] ^= mask;
        let kept = open_segment(&bytes)?;
        let last_start = bytes.len() - RECORD_OVERHEAD_LEN - records.last().unwrap().1.len();
        if index < SEGMENT_HEADER_LEN || index < last_start {
            prop_assert!(kept.is_none(), "damage at byte {index} was not reported");
        } else {
            prop_assert!(kept.is_some(), "a torn last record was refused");
            prop_assert_eq!(kept.unwrap().len(), records.len() - 1);
        }
    }

    /// (5b) Any edits: refused, or the records kept are the first ones
    /// written, unchanged.
    #[test]
    fn log_mutated(records in arb_records(), mutations in arb_mutations()) {
        let bytes = mutated(aggregate_actor_of(&records), &mutations);
        if let Some(kept) = open_segment(&bytes)? {
            prop_assert!(is_prefix(&kept, &records), "{kept:?} is not a prefix of {records:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// (6) Journal entries and checkpoint parts.

fn arb_validated_events() -> impl Strategy<Value = Vec<VisitorEvent>> {
    proptest::collection::vec(arb_wire_event(), 0..8).prop_map(|events| {
        let projects = projects();
        events
            .into_iter()
            .filter_map(|event| event::validate(event, &projects, NOW_MS).ok())
            .collect()
    })
}

fn journal_events(events: &[VisitorEvent]) -> Vec<JournalEvent> {
    events
        .iter()
        .map(|event| JournalEvent {
            project: Arc::clone(&event.project.name),
            visitor: event.visitor.clone(),
            event: event.event.clone(),
        })
        .collect()
}

/// A shard and a segment store that saw `events`.
fn states_of(events: Vec<VisitorEvent>) -> (ShardState, AggregateStore) {
    let mut shard = ShardState::default();
    let mut sink = DeltaSink::new(1);
    shard.apply(NOW_MS, events, &mut sink);
    let mut store = AggregateStore::default();
    for (_, batch) in sink.drain() {
        store.apply(&batch);
    }
    (shard, store)
}

/// Every checkpoint / journal decoder on `bytes`, as restore and replay
/// call them. What decodes must encode and decode to the same value.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(entry) = journal::decode::<JournalEntry>(bytes, "entry") {
        let again = journal::decode::<JournalEntry>(&journal::encode(&entry), "entry");
        prop_assert_eq!(again, Ok(entry));
    }
    if let Ok(shard) = journal::decode::<ShardState>(bytes, "shard") {
        let again = journal::decode::<ShardState>(&journal::encode(&shard), "shard");
        prop_assert_eq!(again, Ok(shard));
    }
    if let Ok(mut store) = journal::decode::<AggregateStore>(bytes, "segment") {
        store.reindex();
        let encoded = journal::encode(&store);
        let again = journal::decode::<AggregateStore>(&encoded, "segment");
        prop_assert!(again.is_ok(), "{again:?}");
        prop_assert_eq!(journal::encode(&again.unwrap()).len(), encoded.len());
    }
    if let Ok(projects) = journal::decode::<Vec<ProjectConfig>>(bytes, "projects") {
        let again = journal::decode::<Vec<ProjectConfig>>(&journal::encode(&projects), "projects");
        prop_assert_eq!(again, Ok(projects));
    }
    Ok(())
}

fn arb_entry() -> impl Strategy<Value = JournalEntry> {
    (arb_validated_events(), any::<i64>(), any::<u32>(), 0..4u8).prop_map(
        |(events, now_ms, shard, kind)| match kind {
            0 => JournalEntry::Events {
                now_ms,
                events: journal_events(&events),
            },
            1 => JournalEntry::Project {
                config: (*projects().0.get("shop").unwrap()).clone(),
            },
            2 => JournalEntry::InstallShard {
                shard,
                state: states_of(events).0,
            },
            _ => JournalEntry::DropShard { shard },
        },
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// (6a) Arbitrary bytes, with and without the right version byte.
    #[test]
    fn journal_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&bytes)?;
        let mut versioned = vec![journal::FORMAT_VERSION];
        versioned.extend_from_slice(&bytes);
        decode_all(&versioned)?;
    }

    /// (6b) Valid journal entries round-trip; edited ones decode cleanly or
    /// fail with a typed error.
    #[test]
    fn journal_mutated(entry in arb_entry(), mutations in arb_mutations()) {
        let bytes = journal::encode(&entry);
        prop_assert_eq!(journal::decode::<JournalEntry>(&bytes, "entry"), Ok(entry));
        decode_all(&mutated(bytes, &mutations))?;
    }

    /// (6b) Valid checkpoint parts (a shard, a segment store, the project
    /// list) round-trip; edited ones decode cleanly or fail.
    #[test]
    fn checkpoint_parts_mutated(events in arb_validated_events(), mutations in arb_mutations()) {
        let (shard, store) = states_of(events);
        let bytes = journal::encode(&shard);
        prop_assert_eq!(journal::decode::<ShardState>(&bytes, "shard"), Ok(shard));
        decode_all(&mutated(bytes, &mutations))?;
        let bytes = journal::encode(&store);
        prop_assert!(journal::decode::<AggregateStore>(&bytes, "segment").is_ok());
        decode_all(&mutated(bytes, &mutations))?;
        let project_list = vec![(*projects().0.get("shop").unwrap()).clone()];
        let bytes = journal::encode(&project_list);
        prop_assert_eq!(journal::decode::<Vec<ProjectConfig>>(&bytes, "projects"), Ok(project_list));
        decode_all(&mutated(bytes, &mutations))?;
    }
}

/// A hostile length prefix (2^63 events, 2^63-byte strings) is an error, not
/// an allocation: postcard reads each element from the bytes that are there
/// and serde preallocates at most 1 MiB for a sequence, whatever its declared
/// length (an attempt to reserve 2^63 elements would abort the test process).
#[test]
fn hostile_length_prefixes_fail_without_allocating() {
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    // Events { now_ms: 0, events: <2^63 - 1> }
    let mut entry = vec![journal::FORMAT_VERSION, 0, 0];
    entry.extend_from_slice(&huge);
    assert!(journal::decode::<JournalEntry>(&entry, "entry").is_err());
    // A shard with 2^63 projects, a project list with 2^63 entries.
    let mut count = vec![journal::FORMAT_VERSION];
    count.extend_from_slice(&huge);
    assert!(journal::decode::<ShardState>(&count, "shard").is_err());
    assert!(journal::decode::<AggregateStore>(&count, "segment").is_err());
    assert!(journal::decode::<Vec<ProjectConfig>>(&count, "projects").is_err());
    // Project { config } whose name is 2^63 bytes long.
    let mut name = vec![journal::FORMAT_VERSION, 1];
    name.extend_from_slice(&huge);
    name.extend_from_slice(b"shop");
    assert!(journal::decode::<JournalEntry>(&name, "entry").is_err());
}
