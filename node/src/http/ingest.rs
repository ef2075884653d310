//! `POST /v1/events`: native batches, JSON or binary (by content type).

use super::error::ApiError;
use super::AppState;
use crate::engine::shard::Outcome;
use crate::event::RejectReason;
use crate::limits;
use crate::project_rates::BatchProjects;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use sessiondb_protocol::ErrorCode;
use sessiondb_protocol::{self as wire, IngestResponse, Rejection};

pub async fn post_events(
    state: web::Data<AppState>,
    request: actix_web::HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Before the body is read: an unauthenticated sender costs no buffering.
    let permission = super::auth::ingest_permission(&state, request.headers())?;
    let body = super::body::read_ingest_body(&state, request.headers(), payload).await?;
    let events: Vec<Result<wire::Event, RejectReason>> = if is_binary(&request) {
        decode_binary_batch(&body)?
    } else {
        let elements = parse_batch(&body)?;
        elements.into_iter().map(decode_event).collect()
    };
    permission.check(
        events
            .iter()
            .filter_map(|event| event.as_ref().ok())
            .map(|event| event.project.as_str()),
    )?;
    let response = ingest_events(&state, events).await?;
    Ok(HttpResponse::Ok().json(response))
}

fn is_binary(request: &actix_web::HttpRequest) -> bool {
    request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(wire::binary::CONTENT_TYPE))
}

/// A binary batch (docs/api.md, Binary batches) fails as a whole when its
/// framing is wrong; its events are then validated one by one like JSON
/// ones.
fn decode_binary_batch(body: &[u8]) -> Result<Vec<Result<wire::Event, RejectReason>>, ApiError> {
    let events = wire::binary::decode_batch(body).map_err(|error| match error {
        wire::binary::BinaryError::TooManyEvents { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BatchTooLarge,
            format!(
                "{error}; the limit is {} events (BATCH_EVENTS_MAX)",
                limits::BATCH_EVENTS_MAX
            ),
        ),
        other => ApiError::bad_request(ErrorCode::MalformedBinary, other.to_string()),
    })?;
    check_batch_len(events.len())?;
    Ok(events.into_iter().map(Ok).collect())
}

/// The one ingest path every format goes through (native JSON and the
/// compatible formats in `http::compat`): validates each decoded event,
/// passes rejections through at their index, applies the batch and answers
/// one outcome per input.
pub async fn ingest_events(
    state: &AppState,
    events: Vec<Result<wire::Event, RejectReason>>,
) -> Result<IngestResponse, ApiError> {
    let engine = &state.engine;
    let events: Vec<_> = events
        .into_iter()
        .map(|event| event.and_then(|event| engine.validate(event)))
        .collect();
    // The per-project rate limit counts the valid events only: rejected
    // ones cost the engine nothing.
    let mut per_project: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for event in events.iter().flatten() {
        *per_project.entry(event.project.name.as_ref()).or_default() += 1;
    }
    let per_project: Vec<(&str, u64)> = per_project.into_iter().collect();
    state
        .admission
        .take_events(&per_project, engine.clock().now_ms())?;
    let projects = BatchProjects::of(&events);
    let outcomes = engine.ingest(events).await.inspect_err(|error| {
        if matches!(error, crate::engine::IngestError::Overloaded { .. }) {
            state
                .admission
                .refusals
                .overloaded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })?;
    state.project_events.record(&projects, &outcomes);
    Ok(response_of(outcomes))
}

/// The batch's events as JSON values, so that one bad event is rejected on
/// its own instead of failing the batch.
pub fn parse_batch(body: &[u8]) -> Result<Vec<serde_json::Value>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {error}"),
        )
    })?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(ApiError::bad_request(
            ErrorCode::MalformedJson,
            "the body must be an object {\"events\": [...]}",
        ));
    };
    let Some(serde_json::Value::Array(events)) = object.remove("events") else {
        return Err(ApiError::bad_request(
            ErrorCode::MalformedJson,
            "`events` must be an array of events",
        ));
    };
    check_batch_len(events.len())?;
    Ok(events)
}

/// `413 batch_too_large` when a request holds more than `BATCH_EVENTS_MAX`
/// events (or messages) once flattened.
pub fn check_batch_len(count: usize) -> Result<(), ApiError> {
    if count <= limits::BATCH_EVENTS_MAX {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BatchTooLarge,
        format!(
            "the request holds {count} events; the limit is {} (BATCH_EVENTS_MAX)",
            limits::BATCH_EVENTS_MAX
        ),
    ))
}

/// Decodes one event; on failure, names the offending field.
pub fn decode_event(element: serde_json::Value) -> Result<wire::Event, RejectReason> {
    match serde_json::from_value::<wire::Event>(element.clone()) {
        Ok(event) => Ok(event),
        Err(error) => Err(RejectReason::Malformed(describe_malformed(
            &element, &error,
        ))),
    }
}

/// serde's message for a wrong-typed field does not say which field; this
/// decodes the fields one by one to find it. Only runs on the error path.
fn describe_malformed(element: &serde_json::Value, error: &serde_json::Error) -> String {
    use serde_json::Value;
    let Value::Object(fields) = element else {
        return "an event must be a JSON object".to_string();
    };
    fn check<T: serde::de::DeserializeOwned>(value: &Value) -> Option<String> {
        serde_json::from_value::<T>(value.clone())
            .err()
            .map(|error| error.to_string())
    }
    /// (field, how to check it, what it must be).
    type FieldCheck = (&'static str, fn(&Value) -> Option<String>, &'static str);
    let checks: [FieldCheck; 9] = [
        ("id", check::<String>, "a string"),
        ("project", check::<String>, "a string"),
        ("visitor", check::<String>, "a string"),
        (
            "ts",
            check::<wire::Timestamp>,
            "ms since the epoch (integer) or an RFC 3339 string",
        ),
        (
            "type",
            check::<wire::EventType>,
            "one of pageview, click, custom, decision",
        ),
        ("key", check::<Option<String>>, "a string"),
        ("value", check::<Option<f64>>, "a number"),
        (
            "attributes",
            check::<std::collections::BTreeMap<String, String>>,
            "an object of string values",
        ),
        (
            "decisions",
            check::<Vec<wire::Decision>>,
            "an array of {experiment, variation} objects",
        ),
    ];
    for (name, check, expected) in checks {
        if let Some(value) = fields.get(name) {
            if let Some(detail) = check(value) {
                return format!("field `{name}` must be {expected}: {detail}");
            }
        }
    }
    error.to_string()
}

pub fn response_of(outcomes: Vec<Outcome>) -> IngestResponse {
    let mut response = IngestResponse::default();
    for (index, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Outcome::Accepted => response.accepted += 1,
            Outcome::Duplicate => response.duplicates += 1,
            Outcome::Rejected(reason) => {
                // A client routes by these: a `not_owner` names the owner
                // and epoch, so the client can resend without a map fetch.
                let (shard, owner, epoch) = match &reason {
                    RejectReason::NotOwner {
                        shard,
                        owner,
                        epoch,
                    } => (Some(*shard), Some(*owner), Some(*epoch)),
                    RejectReason::ShardMoving { shard, epoch } => {
                        (Some(*shard), None, Some(*epoch))
                    }
                    _ => (None, None, None),
                };
                response.rejected.push(Rejection {
                    index,
                    reason: reason.code(),
                    message: reason.to_string(),
                    shard,
                    owner,
                    epoch,
                });
            }
        }
    }
    response
}
