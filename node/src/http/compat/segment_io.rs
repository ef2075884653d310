//! Segment's tracking API: `POST /v1/batch` and the single-message
//! `/v1/track`, `/v1/page`, `/v1/identify`, translated into native events
//! (`docs/ingest-formats.md`, "Segment").
//!
//! Every message gets exactly one outcome at its position in the batch:
//! `identify`, `group` and `alias` are answered `ignored_message_type`
//! rather than dropped silently.

use crate::event::RejectReason;
use crate::http::compat;
use crate::http::error::ApiError;
use crate::http::ingest;
use crate::http::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;
use std::collections::BTreeMap;

/// The track event name that expresses an experiment decision (Segment's
/// A/B testing spec).
const EXPERIMENT_VIEWED: &str = "Experiment Viewed";
/// Properties naming the experiment, first present wins.
const EXPERIMENT_PROPERTIES: [&str; 3] = ["experimentId", "experiment_id", "experiment_name"];
/// Properties naming the variation, first present wins.
const VARIATION_PROPERTIES: [&str; 3] = ["variationId", "variation_id", "variation_name"];
/// Properties giving a track event's value, first present wins.
const VALUE_PROPERTIES: [&str; 2] = ["revenue", "value"];
/// Where a message's time comes from, first present wins (then the batch's
/// `sentAt`).
const TIME_FIELDS: [&str; 3] = ["timestamp", "originalTimestamp", "sentAt"];

pub async fn post_batch(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = super::super::body::read_ingest_body(&state, request.headers(), payload).await?;
    let object = compat::parse_object(&body, "an object {\"batch\": [...]}")?;
    let project = authenticate(&state, &request, &object)?;
    let events = map_object(object, &project)?;
    let response = ingest::ingest_events(&state, events).await?;
    Ok(HttpResponse::Ok().json(response))
}

/// The body of a `POST /v1/batch` as native events for `project`, exactly
/// as `post_batch` maps it once the write key is resolved: a pure function,
/// the entry point of the fuzz target (`node/tests/it/fuzz_decoders.rs`).
pub fn map_batch(
    body: &[u8],
    project: &str,
) -> Result<Vec<Result<wire::Event, RejectReason>>, ApiError> {
    map_object(
        compat::parse_object(body, "an object {\"batch\": [...]}")?,
        project,
    )
}

fn map_object(
    mut object: Map<String, Value>,
    project: &str,
) -> Result<Vec<Result<wire::Event, RejectReason>>, ApiError> {
    let Some(Value::Array(messages)) = object.remove("batch") else {
        return Err(ApiError::bad_request(
            ErrorCode::MalformedJson,
            "`batch` must be an array of messages",
        ));
    };
    ingest::check_batch_len(messages.len())?;
    let defaults = BatchDefaults {
        context: match object.remove("context") {
            Some(Value::Object(context)) => context,
            _ => Map::new(),
        },
        sent_at: object.remove("sentAt"),
    };
    Ok(messages
        .into_iter()
        .map(|message| event_of(message, project, &defaults))
        .collect())
}

pub async fn post_track(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    post_single(state, request, payload, "track").await
}

pub async fn post_page(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    post_single(state, request, payload, "page").await
}

pub async fn post_identify(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    post_single(state, request, payload, "identify").await
}

/// One message whose type is the path's (a `type` in the body is
/// overwritten).
async fn post_single(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
    message_type: &str,
) -> Result<HttpResponse, ApiError> {
    let body = super::super::body::read_ingest_body(&state, request.headers(), payload).await?;
    let mut message = compat::parse_object(&body, "a Segment message object")?;
    let project = authenticate(&state, &request, &message)?;
    message.insert("type".to_string(), Value::from(message_type));
    let defaults = BatchDefaults::default();
    let events = vec![event_of(Value::Object(message), &project, &defaults)];
    let response = ingest::ingest_events(&state, events).await?;
    Ok(HttpResponse::Ok().json(response))
}

/// The project of the write key: the user name of HTTP basic auth, else the
/// body's `writeKey` (analytics.js sends it there). Missing or unknown: 401.
fn authenticate(
    state: &AppState,
    request: &HttpRequest,
    body: &Map<String, Value>,
) -> Result<String, ApiError> {
    let key = match compat::basic_auth_user(request)? {
        Some(user) => user,
        None => body
            .get("writeKey")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                compat::unauthorized(
                    "send the project's ingest key as the basic-auth user name (empty password)",
                )
            })?,
    };
    Ok(compat::project_by_key(state, &key)?.name.to_string())
}

/// What a batch gives every message that lacks it.
#[derive(Debug, Default)]
struct BatchDefaults {
    /// Merged under each message's `context`, key by key.
    context: Map<String, Value>,
    sent_at: Option<Value>,
}

/// One message as a native event, or why not.
fn event_of(
    message: Value,
    project: &str,
    defaults: &BatchDefaults,
) -> Result<wire::Event, RejectReason> {
    let Value::Object(message) = message else {
        return Err(RejectReason::Malformed(
            "a message must be a JSON object".into(),
        ));
    };
    let kind = match message.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(RejectReason::Malformed("`type` must be a string".into())),
        None => return Err(RejectReason::Malformed("`type` is missing".into())),
    };
    let properties = match message.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(properties)) => properties.clone(),
        Some(_) => {
            return Err(RejectReason::Malformed(
                "`properties` must be an object".into(),
            ))
        }
    };
    let mut consumed: Vec<&str> = Vec::new();
    let (event_type, key, value, decisions) = match kind {
        "track" => {
            let name = message.get("event").and_then(Value::as_str).unwrap_or("");
            if name == EXPERIMENT_VIEWED {
                consumed.extend(EXPERIMENT_PROPERTIES);
                consumed.extend(VARIATION_PROPERTIES);
                let decision = wire::Decision {
                    experiment: first_text(&properties, &EXPERIMENT_PROPERTIES),
                    variation: first_text(&properties, &VARIATION_PROPERTIES),
                };
                // No experiment and no variation: `missing_decision`; only
                // one of them: `invalid_decision` (validation says which).
                let decisions = if decision.experiment.is_empty() && decision.variation.is_empty() {
                    Vec::new()
                } else {
                    vec![decision]
                };
                (wire::EventType::Decision, None, None, decisions)
            } else {
                consumed.extend(VALUE_PROPERTIES);
                let value = value_of(&properties)?;
                let key = Some(name.to_string()).filter(|name| !name.is_empty());
                (wire::EventType::Custom, key, value, Vec::new())
            }
        }
        "page" | "screen" => {
            let key = message
                .get("name")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .map(str::to_string);
            (wire::EventType::Pageview, key, None, Vec::new())
        }
        "identify" | "group" | "alias" => {
            return Err(RejectReason::IgnoredMessageType {
                kind: kind.to_string(),
            })
        }
        _ => {
            return Err(RejectReason::UnsupportedMessageType {
                kind: kind.to_string(),
            })
        }
    };
    let context = merged_context(&message, &defaults.context);
    Ok(wire::Event {
        id: message
            .get("messageId")
            .and_then(compat::scalar_text)
            .unwrap_or_default(),
        project: project.to_string(),
        visitor: visitor_of(&message),
        ts: time_of(&message, defaults.sent_at.as_ref())?,
        event_type,
        key,
        value,
        attributes: attributes_of(&properties, &consumed, &context),
        decisions,
    })
}

/// `userId` if present and not empty, else `anonymousId`; empty when
/// neither (validation rejects it as `empty_visitor`).
fn visitor_of(message: &Map<String, Value>) -> String {
    ["userId", "anonymousId"]
        .iter()
        .filter_map(|field| message.get(*field).and_then(compat::scalar_text))
        .find(|id| !id.is_empty())
        .unwrap_or_default()
}

/// The first of `TIME_FIELDS` present, else the batch's `sentAt`: an ISO
/// 8601 / RFC 3339 string, or (a convenience) integer ms.
fn time_of(
    message: &Map<String, Value>,
    batch_sent_at: Option<&Value>,
) -> Result<wire::Timestamp, RejectReason> {
    let time = TIME_FIELDS
        .iter()
        .filter_map(|field| message.get(*field))
        .chain(batch_sent_at)
        .find(|value| !value.is_null());
    match time {
        Some(Value::String(text)) => Ok(wire::Timestamp::Rfc3339(text.clone())),
        Some(Value::Number(number)) => number
            .as_i64()
            .map(wire::Timestamp::Milliseconds)
            .ok_or_else(|| RejectReason::InvalidTimestamp {
                text: number.to_string(),
            }),
        Some(other) => Err(RejectReason::InvalidTimestamp {
            text: other.to_string(),
        }),
        None => Err(RejectReason::Malformed(
            "no `timestamp`, `originalTimestamp` or `sentAt`".into(),
        )),
    }
}

/// `properties.revenue`, else `properties.value`; present but not a number
/// is `malformed_event` (a value silently lost would skew results).
fn value_of(properties: &Map<String, Value>) -> Result<Option<f64>, RejectReason> {
    for name in VALUE_PROPERTIES {
        match properties.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::Number(number)) => return Ok(number.as_f64()),
            Some(_) => {
                return Err(RejectReason::Malformed(format!(
                    "`properties.{name}` must be a number"
                )))
            }
        }
    }
    Ok(None)
}

/// The first of `names` present in `properties` as text; empty if none.
fn first_text(properties: &Map<String, Value>, names: &[&str]) -> String {
    names
        .iter()
        .filter_map(|name| properties.get(*name).and_then(compat::scalar_text))
        .find(|text| !text.is_empty())
        .unwrap_or_default()
}

/// The message's `context` over the batch's, key by key.
fn merged_context(message: &Map<String, Value>, batch: &Map<String, Value>) -> Map<String, Value> {
    let mut context = batch.clone();
    if let Some(Value::Object(own)) = message.get("context") {
        for (name, value) in own {
            context.insert(name.clone(), value.clone());
        }
    }
    context
}

/// String-valued properties (minus those the mapping consumed), then the
/// context's `campaign` (`context.campaign.name`), `referrer`
/// (`context.page.referrer`) and `browser` (from `context.userAgent`), which
/// win over properties of the same name. Limits are validation's.
fn attributes_of(
    properties: &Map<String, Value>,
    consumed: &[&str],
    context: &Map<String, Value>,
) -> BTreeMap<String, String> {
    let mut attributes: BTreeMap<String, String> = properties
        .iter()
        .filter(|(name, _)| !consumed.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_string())))
        .collect();
    let nested = |outer: &str, inner: &str| {
        context
            .get(outer)
            .and_then(|value| value.get(inner))
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
    };
    if let Some(campaign) = nested("campaign", "name") {
        attributes.insert("campaign".into(), campaign.to_string());
    }
    if let Some(referrer) = nested("page", "referrer") {
        attributes.insert("referrer".into(), referrer.to_string());
    }
    if let Some(user_agent) = context.get("userAgent").and_then(Value::as_str) {
        attributes.insert("browser".into(), compat::browser_of(user_agent).into());
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(message: Value) -> Result<wire::Event, RejectReason> {
        event_of(message, "shop", &BatchDefaults::default())
    }

    #[test]
    fn experiment_viewed_precedence_is_id_then_snake_id_then_name() {
        let event = map(json!({
            "type": "track", "event": "Experiment Viewed", "messageId": "m",
            "anonymousId": "a", "timestamp": "2025-11-26T10:00:00Z",
            "properties": {"experiment_name": "Checkout", "experiment_id": "x1",
                           "variation_name": "Blue", "variationId": 7, "color": "blue"}
        }))
        .unwrap();
        assert_eq!(event.event_type, wire::EventType::Decision);
        assert_eq!(event.decisions[0].experiment, "x1");
        assert_eq!(event.decisions[0].variation, "7");
        assert_eq!(event.attributes.keys().collect::<Vec<_>>(), ["color"]);
    }

    #[test]
    fn user_id_wins_and_times_fall_back() {
        let defaults = BatchDefaults {
            context: Map::new(),
            sent_at: Some(json!("2025-11-26T10:00:09Z")),
        };
        let event = event_of(
            json!({"type": "page", "messageId": "m", "userId": "", "anonymousId": "a",
                   "name": "Home"}),
            "shop",
            &defaults,
        )
        .unwrap();
        assert_eq!(event.visitor, "a");
        assert_eq!(event.key.as_deref(), Some("Home"));
        assert_eq!(
            event.ts,
            wire::Timestamp::Rfc3339("2025-11-26T10:00:09Z".into())
        );
        let event = map(json!({"type": "track", "event": "Buy", "messageId": "m",
                               "userId": "u", "anonymousId": "a",
                               "originalTimestamp": "2025-11-26T10:00:01Z",
                               "properties": {"value": 3, "revenue": 12.5}}))
        .unwrap();
        assert_eq!(event.visitor, "u");
        assert_eq!(event.value, Some(12.5));
    }

    #[test]
    fn types_without_events_are_reported() {
        let identify = map(json!({"type": "identify", "userId": "u"})).unwrap_err();
        assert_eq!(identify.code(), "ignored_message_type");
        let unknown = map(json!({"type": "purchase"})).unwrap_err();
        assert_eq!(unknown.code(), "unsupported_message_type");
        let bad_revenue = map(json!({"type": "track", "event": "Buy",
                                     "properties": {"revenue": "12"}}))
        .unwrap_err();
        assert_eq!(bad_revenue.code(), "malformed_event");
    }
}
