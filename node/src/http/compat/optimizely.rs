//! `POST /optimizely/v1/events`: the event batches Optimizely SDKs send to
//! `https://logx.optimizely.com/v1/events`, translated into native events
//! (`docs/ingest-formats.md`, "Optimizely").
//!
//! The batch is flattened visitor by visitor, snapshot by snapshot, event by
//! event; rejection indexes count positions in that flattened list.
//!
//! Decisions are stored under the keys of their `metadata` (`rule_key`, or
//! `flag_key` when the rule has none; `variation_key`), the names
//! experimenters know; the ids go to the project's experiment aliases
//! (`experiment_aliases`), which also name the decisions of a batch that
//! carries ids only.

use crate::event::RejectReason;
use crate::experiment_aliases::{Alias, ProjectAliases};
use crate::http::auth;
use crate::http::compat;
use crate::http::error::ApiError;
use crate::http::ingest;
use crate::http::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The event key Optimizely SDKs use for impressions (decisions).
const IMPRESSION_KEY: &str = "campaign_activated";
/// Optimizely's reserved attribute carrying the user agent; becomes
/// `browser`. Every other `$opt_` attribute is dropped.
const USER_AGENT_ATTRIBUTE: &str = "$opt_user_agent";
const RESERVED_ATTRIBUTE_PREFIX: &str = "$opt_";
/// Tags that are also an event's `revenue` / `value`: they become the
/// value, not attributes.
const VALUE_TAGS: [&str; 2] = ["revenue", "value"];

/// `?project=<name>`: the SessionDB project, overriding `project_id`.
#[derive(Debug, Deserialize)]
pub struct Target {
    project: Option<String>,
}

/// The parts of Optimizely's event batch that SessionDB reads. Account,
/// revision, client and anonymisation fields are ignored.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    project_id: Value,
    visitors: Vec<Visitor>,
}

#[derive(Debug, Deserialize)]
struct Visitor {
    visitor_id: String,
    #[serde(default)]
    attributes: Vec<Attribute>,
    #[serde(default)]
    snapshots: Vec<Snapshot>,
}

#[derive(Debug, Deserialize)]
struct Attribute {
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Deserialize)]
struct Snapshot {
    #[serde(default)]
    decisions: Vec<SnapshotDecision>,
    /// Decoded one by one, so that one bad event is rejected on its own.
    #[serde(default)]
    events: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct SnapshotDecision {
    #[serde(default)]
    experiment_id: Option<String>,
    #[serde(default)]
    variation_id: Option<String>,
    /// The keys of the decision (SDKs since 2020 send them).
    #[serde(default)]
    metadata: Option<DecisionMetadata>,
}

/// The parts of a decision's `metadata` that name it; `rule_type` and
/// `enabled` are ignored.
#[derive(Debug, Default, Deserialize)]
struct DecisionMetadata {
    #[serde(default)]
    rule_key: Option<String>,
    #[serde(default)]
    flag_key: Option<String>,
    #[serde(default)]
    variation_key: Option<String>,
}

impl SnapshotDecision {
    fn experiment_id(&self) -> &str {
        self.experiment_id.as_deref().unwrap_or_default()
    }

    fn variation_id(&self) -> &str {
        self.variation_id.as_deref().unwrap_or_default()
    }

    /// The experiment's key as the decision carries it: `rule_key`, or
    /// `flag_key` when the rule key is empty.
    fn experiment_key(&self) -> Option<&str> {
        let metadata = self.metadata.as_ref()?;
        [&metadata.rule_key, &metadata.flag_key]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|key| !key.is_empty())
    }

    fn variation_key(&self) -> Option<&str> {
        let key = self.metadata.as_ref()?.variation_key.as_deref()?;
        Some(key).filter(|key| !key.is_empty())
    }

    /// The ids and keys the decision carries, when it carries all four.
    fn alias(&self) -> Option<Alias> {
        let alias = Alias {
            experiment_id: self.experiment_id().to_string(),
            experiment_key: self.experiment_key()?.to_string(),
            variation_id: self.variation_id().to_string(),
            variation_key: self.variation_key()?.to_string(),
        };
        alias.is_storable().then_some(alias)
    }

    /// The decision as stored: by its keys, else by the keys the aliases
    /// know for its ids, else by its ids.
    fn named(&self, aliases: &ProjectAliases) -> wire::Decision {
        let experiment_id = self.experiment_id();
        let variation_id = self.variation_id();
        let experiment = self
            .experiment_key()
            .or_else(|| aliases.experiment_key(experiment_id))
            .unwrap_or(experiment_id);
        let variation = self
            .variation_key()
            .or_else(|| aliases.variation_key(experiment_id, variation_id))
            .unwrap_or(variation_id);
        wire::Decision {
            experiment: experiment.to_string(),
            variation: variation.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct SnapshotEvent {
    #[serde(default)]
    uuid: String,
    #[serde(default)]
    key: String,
    /// Milliseconds since the epoch.
    timestamp: i64,
    /// Integer minor units (cents), as Optimizely sends it.
    #[serde(default)]
    revenue: Option<f64>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    tags: Option<Map<String, Value>>,
}

pub async fn post_events(
    state: web::Data<AppState>,
    request: HttpRequest,
    target: web::Query<Target>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = super::super::body::read_ingest_body(&state, request.headers(), payload).await?;
    let batch = parse_payload(&body)?;
    let project = resolve_project(&state, &request, target.into_inner(), &batch.project_id)?;
    let placement = remember_aliases(&state, &project, &batch).await;
    let no_aliases = ProjectAliases::default();
    let aliases = placement.aliases(&project).unwrap_or(&no_aliases);
    let events = map_payload(batch, &project, aliases)?;
    let response = ingest::ingest_events(&state, events).await?;
    Ok(HttpResponse::Ok().json(response))
}

/// The body of an Optimizely batch as native events for `project`, exactly
/// as `post_events` maps it once the project is resolved (for a project
/// without experiment aliases): a pure function, the entry point of the
/// fuzz target (`node/tests/it/fuzz_decoders.rs`).
pub fn map_batch(
    body: &[u8],
    project: &str,
) -> Result<Vec<Result<wire::Event, RejectReason>>, ApiError> {
    map_payload(parse_payload(body)?, project, &ProjectAliases::default())
}

/// Has the cluster agree on the ids → keys of `batch` that `project`'s
/// aliases lack (`PutAliases`), before its events are stored, and answers
/// the placement state to name them with. Proposes nothing when every id
/// is known (the usual batch) or the table has no room; a failed proposal is
/// logged and the batch goes on (its decisions carry their keys; the next
/// batch with them proposes again).
async fn remember_aliases(
    state: &AppState,
    project: &str,
    batch: &Payload,
) -> Arc<crate::cluster::placement::PlacementState> {
    let placement = state.cluster.placement.view().current();
    if placement.project(project).is_none() {
        return placement;
    }
    let no_aliases = ProjectAliases::default();
    let known = placement.aliases(project).unwrap_or(&no_aliases);
    let mut new = new_aliases(batch, known);
    if new.is_empty() {
        return placement;
    }
    // Only what the table would take: ids past its bound would otherwise
    // be proposed again with every batch.
    let mut trial = known.clone();
    new.retain(|alias| trial.insert(alias));
    if new.is_empty() {
        return placement;
    }
    let command = crate::cluster::placement::PlacementCommand::PutAliases {
        project: project.to_string(),
        aliases: new,
    };
    if let Err(error) = state.cluster.leader.propose(command).await {
        tracing::warn!(%project, %error, "optimizely: the experiment aliases of a batch could not be stored; its decisions are named by the keys they carry");
    }
    placement
}

/// The aliases `batch`'s decisions carry that `known` does not hold, each
/// once.
fn new_aliases(batch: &Payload, known: &ProjectAliases) -> Vec<Alias> {
    let mut new = BTreeMap::new();
    let decisions = batch
        .visitors
        .iter()
        .flat_map(|visitor| &visitor.snapshots)
        .flat_map(|snapshot| &snapshot.decisions);
    for alias in decisions.filter_map(SnapshotDecision::alias) {
        if !known.holds(&alias) {
            let ids = (alias.experiment_id.clone(), alias.variation_id.clone());
            new.insert(ids, alias);
        }
    }
    new.into_values().collect()
}

fn parse_payload(body: &[u8]) -> Result<Payload, ApiError> {
    let object = compat::parse_object(body, "an Optimizely event batch object")?;
    serde_json::from_value(Value::Object(object)).map_err(|error| {
        ApiError::bad_request(
            ErrorCode::MalformedJson,
            format!("not an Optimizely event batch: {error}"),
        )
    })
}

fn map_payload(
    batch: Payload,
    project: &str,
    aliases: &ProjectAliases,
) -> Result<Vec<Result<wire::Event, RejectReason>>, ApiError> {
    let event_count = batch
        .visitors
        .iter()
        .flat_map(|visitor| &visitor.snapshots)
        .map(|snapshot| snapshot.events.len())
        .sum();
    ingest::check_batch_len(event_count)?;
    Ok(events_of(batch, project, aliases))
}

/// The SessionDB project: the project of the `X-SessionDB-Key` header (or
/// of an ingest key sent as `Authorization: Bearer`) if given (an unknown
/// key is `401`; a `?project=` naming another project is `403`). Otherwise
/// the request needs the admin token, and the project is `?project=`, else
/// the batch's `project_id`. A name that is no
/// project is rejected per event (`unknown_project`) by validation.
fn resolve_project(
    state: &AppState,
    request: &HttpRequest,
    target: Target,
    project_id: &Value,
) -> Result<String, ApiError> {
    let key = request.headers().get(compat::INGEST_KEY_HEADER);
    let keyed = match key {
        Some(key) => {
            let key = key
                .to_str()
                .map_err(|_| compat::unauthorized("`X-SessionDB-Key` is not readable text"))?;
            Some(compat::project_by_key(state, key)?)
        }
        None => match auth::credential_of(state, request.headers()) {
            // The admin token may send to any project.
            auth::Credential::Admin => None,
            // An ingest key as a bearer counts as `X-SessionDB-Key`.
            auth::Credential::IngestKey(config) => Some(config),
            other => {
                return Err(auth::refusal(auth::Required::IngestKeyOrAdmin, &other).with_message(
                    "this endpoint needs the project's ingest key as `X-SessionDB-Key` (or `Authorization: Bearer <key>`), or the admin token as `Authorization: Bearer <token>` (see docs/ingest-formats.md)",
                ))
            }
        },
    };
    if let Some(config) = keyed {
        if let Some(name) = target.project {
            if name != config.name.as_ref() {
                return Err(auth::forbidden(
                    "`?project=` names a project this ingest key may not write to: a key sends to its own project only",
                ));
            }
        }
        return Ok(config.name.to_string());
    }
    Ok(target
        .project
        .or_else(|| compat::scalar_text(project_id))
        .unwrap_or_default())
}

/// Every event of the batch in flattened order, each translated or rejected.
fn events_of(
    batch: Payload,
    project: &str,
    aliases: &ProjectAliases,
) -> Vec<Result<wire::Event, RejectReason>> {
    let mut events = Vec::new();
    for visitor in batch.visitors {
        let attributes = visitor_attributes(&visitor.attributes);
        for snapshot in visitor.snapshots {
            let decisions: Vec<wire::Decision> = snapshot
                .decisions
                .iter()
                .map(|decision| decision.named(aliases))
                .collect();
            for element in snapshot.events {
                let event = serde_json::from_value::<SnapshotEvent>(element)
                    .map_err(|error| {
                        RejectReason::Malformed(format!("not an Optimizely event: {error}"))
                    })
                    .map(|event| {
                        event_of(event, project, &visitor.visitor_id, &attributes, &decisions)
                    });
                events.push(event);
            }
        }
    }
    events
}

/// Visitor attributes as event attributes: `key → value` as text;
/// `$opt_user_agent` becomes `browser`, other `$opt_` keys and non-scalar
/// values are dropped.
fn visitor_attributes(attributes: &[Attribute]) -> BTreeMap<String, String> {
    let mut mapped = BTreeMap::new();
    for attribute in attributes {
        let Some(text) = compat::scalar_text(&attribute.value) else {
            continue;
        };
        if attribute.key == USER_AGENT_ATTRIBUTE {
            mapped.insert("browser".to_string(), compat::browser_of(&text).to_string());
        } else if !attribute.key.starts_with(RESERVED_ATTRIBUTE_PREFIX) {
            mapped.insert(attribute.key.clone(), text);
        }
    }
    mapped
}

fn event_of(
    event: SnapshotEvent,
    project: &str,
    visitor: &str,
    visitor_attributes: &BTreeMap<String, String>,
    decisions: &[wire::Decision],
) -> wire::Event {
    let mut attributes = visitor_attributes.clone();
    for (name, value) in event.tags.iter().flatten() {
        if VALUE_TAGS.contains(&name.as_str()) {
            continue;
        }
        if let Some(text) = compat::scalar_text(value) {
            attributes.insert(name.clone(), text);
        }
    }
    let impression = event.key == IMPRESSION_KEY;
    let (event_type, key, value) = if impression {
        (wire::EventType::Decision, None, None)
    } else {
        let key = Some(event.key).filter(|key| !key.is_empty());
        (wire::EventType::Custom, key, event.revenue.or(event.value))
    };
    wire::Event {
        id: event.uuid,
        project: project.to_string(),
        visitor: visitor.to_string(),
        ts: wire::Timestamp::Milliseconds(event.timestamp),
        event_type,
        key,
        value,
        attributes,
        decisions: decisions.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(value: Value) -> Payload {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn impressions_become_decisions_and_conversions_custom_events() {
        let payload = batch(json!({
            "project_id": "123",
            "visitors": [{
                "visitor_id": "u1",
                "attributes": [
                    {"entity_id": "1", "key": "plan", "type": "custom", "value": "pro"},
                    {"entity_id": "$opt_bot_filtering", "key": "$opt_bot_filtering", "type": "custom", "value": false},
                    {"entity_id": "$opt_user_agent", "key": "$opt_user_agent", "type": "custom", "value": "Mozilla/5.0 Firefox/120.0"}
                ],
                "snapshots": [
                    {"decisions": [{"campaign_id": "c", "experiment_id": "x1", "variation_id": "v1"}],
                     "events": [{"entity_id": "c", "key": "campaign_activated", "timestamp": 10, "uuid": "a"}]},
                    {"events": [{"entity_id": "e", "key": "buy", "timestamp": 20, "uuid": "b",
                                 "revenue": 4200, "value": 3.5, "tags": {"revenue": 4200, "size": "L", "n": 2}}]}
                ]
            }]
        }));
        let events: Vec<_> = events_of(payload, "shop", &ProjectAliases::default())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, wire::EventType::Decision);
        assert_eq!(events[0].key, None);
        assert_eq!(events[0].decisions[0].experiment, "x1");
        assert_eq!(
            events[0].attributes.get("browser").map(String::as_str),
            Some("firefox")
        );
        assert!(!events[0].attributes.contains_key("$opt_bot_filtering"));
        assert_eq!(events[1].event_type, wire::EventType::Custom);
        assert_eq!(events[1].value, Some(4200.0), "revenue wins over value");
        assert_eq!(
            events[1].attributes.get("size").map(String::as_str),
            Some("L")
        );
        assert_eq!(events[1].attributes.get("n").map(String::as_str), Some("2"));
        assert!(!events[1].attributes.contains_key("revenue"));
        assert!(events[1].decisions.is_empty());
    }

    #[test]
    fn decisions_are_named_by_their_keys_or_by_the_aliases_of_their_ids() {
        let decision = |experiment: &str, variation: &str, metadata: Value| json!({"experiment_id": experiment, "variation_id": variation, "metadata": metadata});
        let impression = |decision: Value, uuid: &str| {
            json!({"decisions": [decision],
                   "events": [{"key": "campaign_activated", "timestamp": 10, "uuid": uuid}]})
        };
        let payload = batch(json!({
            "visitors": [{"visitor_id": "u1", "snapshots": [
                impression(decision("70001", "70012", json!({"rule_key": "checkout", "flag_key": "flag", "variation_key": "treatment"})), "a"),
                impression(decision("70002", "70021", json!({"rule_key": "", "flag_key": "new_checkout", "variation_key": "on"})), "b"),
                impression(json!({"experiment_id": "70001", "variation_id": "70012"}), "c"),
                impression(json!({"experiment_id": "80001", "variation_id": "80011"}), "d"),
                impression(decision("70001", "70012", json!({"rule_key": "checkout", "variation_key": "treatment"})), "e")
            ]}]
        }));
        let new = new_aliases(&payload, &ProjectAliases::default());
        assert_eq!(new.len(), 2, "one alias per pair of ids: {new:?}");
        let mut aliases = ProjectAliases::default();
        for alias in &new {
            assert!(aliases.insert(alias));
        }
        assert_eq!(aliases.experiment_key("70002"), Some("new_checkout"));
        assert!(new_aliases(&payload, &aliases).is_empty());
        let named: Vec<wire::Decision> = events_of(payload, "shop", &ProjectAliases::default())
            .into_iter()
            .map(|event| event.unwrap().decisions[0].clone())
            .collect();
        let pair = |experiment: &str, variation: &str| wire::Decision {
            experiment: experiment.into(),
            variation: variation.into(),
        };
        // Without aliases, a decision without metadata keeps its ids.
        assert_eq!(named[2], pair("70001", "70012"));
        let payload = batch(json!({
            "visitors": [{"visitor_id": "u1", "snapshots": [
                impression(json!({"experiment_id": "70001", "variation_id": "70012"}), "c"),
                impression(json!({"experiment_id": "80001", "variation_id": "80011"}), "d")
            ]}]
        }));
        let with_aliases: Vec<wire::Decision> = events_of(payload, "shop", &aliases)
            .into_iter()
            .map(|event| event.unwrap().decisions[0].clone())
            .collect();
        assert_eq!(
            named[..2],
            [pair("checkout", "treatment"), pair("new_checkout", "on")]
        );
        assert_eq!(
            with_aliases,
            [pair("checkout", "treatment"), pair("80001", "80011")]
        );
    }

    #[test]
    fn a_bad_event_is_rejected_alone() {
        let payload = batch(json!({
            "visitors": [{"visitor_id": "u1", "snapshots": [{"events": [
                {"key": "buy", "uuid": "a"},
                {"key": "buy", "uuid": "b", "timestamp": 5, "value": 1.5}
            ]}]}]
        }));
        let events = events_of(payload, "shop", &ProjectAliases::default());
        assert_eq!(events[0].as_ref().unwrap_err().code(), "malformed_event");
        assert_eq!(events[1].as_ref().unwrap().value, Some(1.5));
    }
}
