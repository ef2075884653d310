//! The compatible ingest formats (`docs/ingest-formats.md`): Optimizely's
//! event API (`optimizely`) and Segment's tracking API (`segment_io`), and
//! what they share (this file): write-key authentication, whole-request
//! checks, and the small conversions from loosely typed JSON to native
//! event fields.
//!
//! Both formats are translated into native wire events and then take the
//! native path (`ingest::ingest_events`), so validation, limits, rejection
//! reasons and acknowledgement are the same for every format.

pub mod optimizely;
pub mod segment_io;

use super::error::ApiError;
use super::AppState;
use crate::project::ProjectConfig;
use actix_web::http::{header, StatusCode};
use actix_web::HttpRequest;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, Engine};
use serde_json::{Map, Value};
use sessiondb_protocol::ErrorCode;
use std::sync::Arc;

/// Header carrying a project's ingest key where the format has no
/// authentication of its own (the Optimizely path).
pub const INGEST_KEY_HEADER: &str = "x-sessiondb-key";

/// `401 unauthorized` for the whole request.
pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
}

/// The project whose ingest key is `key`, or `401 unauthorized`.
pub fn project_by_key(state: &AppState, key: &str) -> Result<Arc<ProjectConfig>, ApiError> {
    let now_ms = state.engine.clock().now_ms();
    state
        .engine
        .projects()
        .by_ingest_key(key, now_ms)
        .ok_or_else(|| {
            unauthorized("this endpoint needs a project's ingest key (shown when the project was created or its key rotated; see docs/security.md)")
        })
}

/// The user name of an `Authorization: Basic` header (Segment puts the
/// write key there, with an empty password). `None` without such a header;
/// `401` when the header is there but unreadable.
pub fn basic_auth_user(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let unreadable =
        || unauthorized("the Authorization header must be `Basic base64(<write key>:)`");
    let value = value.to_str().map_err(|_| unreadable())?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(unreadable)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(unreadable());
    }
    let decoded = base64_decode(encoded.trim()).ok_or_else(unreadable)?;
    let text = String::from_utf8(decoded).map_err(|_| unreadable())?;
    // The password is ignored: Segment sends it empty.
    let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    Ok(Some(user.to_string()))
}

/// Padding optional: Segment's libraries pad, hand-written clients often do not.
const PADDING_OPTIONAL: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PADDING_OPTIONAL);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PADDING_OPTIONAL);

/// Decodes standard or URL-safe base64, padded or not. `None` on any other
/// byte or an impossible length.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    BASE64_STANDARD
        .decode(text)
        .or_else(|_| BASE64_URL_SAFE.decode(text))
        .ok()
}

/// The body as a JSON object, or `400 malformed_json` naming the format.
pub fn parse_object(body: &[u8], expected: &str) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {error}"),
        )
    })?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::bad_request(
            ErrorCode::MalformedJson,
            format!("the body must be {expected}"),
        )),
    }
}

/// The text of a JSON scalar: strings as they are, numbers and booleans as
/// JSON writes them. `None` for null, arrays and objects.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A browser family from a user agent, deliberately coarse: `edge`,
/// `firefox`, `chrome`, `safari` or `other`. Order matters: Edge's agent
/// also names Chrome and Safari, Chrome's also names Safari.
pub fn browser_of(user_agent: &str) -> &'static str {
    let has = |token: &str| user_agent.contains(token);
    if has("Edg/") || has("Edge/") || has("EdgA/") || has("EdgiOS/") {
        "edge"
    } else if has("Firefox/") || has("FxiOS/") {
        "firefox"
    } else if has("Chrome/") || has("CriOS/") || has("Chromium/") {
        "chrome"
    } else if has("Safari/") {
        "safari"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padded_unpadded_and_rejects_garbage() {
        assert_eq!(base64_decode("a2V5Og==").as_deref(), Some(&b"key:"[..]));
        assert_eq!(base64_decode("a2V5Og").as_deref(), Some(&b"key:"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("a2V5O").as_deref(), None);
        assert_eq!(base64_decode("a2*5").as_deref(), None);
        // URL-safe alphabet: 0xfb 0xff is "+/8" standard, "-_8" URL-safe.
        assert_eq!(base64_decode("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(base64_decode("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
    }

    #[test]
    fn browsers_are_told_apart_in_the_right_order() {
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91";
        let chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        assert_eq!(browser_of(edge), "edge");
        assert_eq!(browser_of(chrome), "chrome");
        assert_eq!(browser_of(safari), "safari");
        assert_eq!(browser_of(firefox), "firefox");
        assert_eq!(browser_of("curl/8.4.0"), "other");
    }

    #[test]
    fn scalars_become_text_and_structures_do_not() {
        assert_eq!(scalar_text(&Value::from("x")).as_deref(), Some("x"));
        assert_eq!(scalar_text(&Value::from(12)).as_deref(), Some("12"));
        assert_eq!(scalar_text(&Value::from(1.5)).as_deref(), Some("1.5"));
        assert_eq!(scalar_text(&Value::from(true)).as_deref(), Some("true"));
        assert_eq!(scalar_text(&Value::Null), None);
        assert_eq!(scalar_text(&serde_json::json!([1])), None);
    }
}
