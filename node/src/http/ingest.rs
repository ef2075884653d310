//! `POST /v1/events`: native JSON batches.

use super::error::ApiError;
use super::AppState;
use crate::engine::shard::Outcome;
use crate::event::RejectReason;
use crate::limits;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures::StreamExt;
use sessiondb_protocol::{self as wire, IngestResponse, Rejection};

pub async fn post_events(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, limits::BODY_BYTES_MAX).await?;
    let elements = parse_batch(&body)?;
    let engine = &state.engine;
    let events = elements
        .into_iter()
        .map(|element| {
            let event: wire::Event = serde_json::from_value(element)
                .map_err(|error| RejectReason::Malformed(error.to_string()))?;
            engine.validate(event)
        })
        .collect();
    let outcomes = engine.ingest(events).await;
    Ok(HttpResponse::Ok().json(response_of(outcomes)))
}

/// Reads the whole body, refusing more than `limit_bytes` without buffering
/// it.
pub async fn read_body(
    mut payload: web::Payload,
    limit_bytes: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|error| ApiError::bad_request("malformed_body", error.to_string()))?;
        if body.len() + chunk.len() > limit_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {limit_bytes} bytes (BODY_BYTES_MAX); send smaller batches"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The batch's events as JSON values, so that one bad event is rejected on
/// its own instead of failing the batch.
fn parse_batch(body: &[u8]) -> Result<Vec<serde_json::Value>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {error}"),
        )
    })?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the body must be an object {\"events\": [...]}",
        ));
    };
    let Some(serde_json::Value::Array(events)) = object.remove("events") else {
        return Err(ApiError::bad_request(
            "malformed_json",
            "`events` must be an array of events",
        ));
    };
    if events.len() > limits::BATCH_EVENTS_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "the batch has {} events; the limit is {} (BATCH_EVENTS_MAX)",
                events.len(),
                limits::BATCH_EVENTS_MAX
            ),
        ));
    }
    Ok(events)
}

pub fn response_of(outcomes: Vec<Outcome>) -> IngestResponse {
    let mut response = IngestResponse::default();
    for (index, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Outcome::Accepted => response.accepted += 1,
            Outcome::Duplicate => response.duplicates += 1,
            Outcome::Rejected(reason) => response.rejected.push(Rejection {
                index,
                reason: reason.code().to_string(),
                message: reason.to_string(),
            }),
        }
    }
    response
}
