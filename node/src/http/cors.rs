//! Cross-origin ingest (`docs/security.md`, "Browsers on other origins"):
//! a page served from another origin may send events to the ingest paths
//! (native `POST /v1/events`, Optimizely, Segment) when the node's
//! `--cors-allowed-origins` lists that origin.
//!
//! Only the ingest resources are wrapped by `allow_listed_origins`; every
//! other route (the console, queries, administration, the cluster) never
//! answers with CORS headers, so a browser keeps them same-origin. The list
//! is the node's, not a project's: a preflight carries no credential, so
//! the node cannot know which project the request will write to.
//!
//! An origin that is not listed gets no CORS headers at all: its preflight
//! is refused with `403 forbidden`, its other requests are served as any
//! request without `Origin` would be (the browser then withholds the
//! answer from the page). Each is counted in
//! `sessiondb_cors_origins_refused_total` and logged.

use super::error::ApiError;
use super::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use sessiondb_protocol::ErrorCode;
use std::sync::atomic::{AtomicU64, Ordering};

/// How long a browser may cache a preflight's answer
/// (`Access-Control-Max-Age`).
pub const CORS_PREFLIGHT_MAX_AGE_SECONDS: u32 = 3_600;
/// Most origins `--cors-allowed-origins` may list.
pub const CORS_ALLOWED_ORIGINS_MAX: usize = 64;
/// Longest origin accepted in the list.
pub const CORS_ORIGIN_BYTES_MAX: usize = 256;

/// The methods of the ingest paths.
const ALLOWED_METHODS: &str = "POST, OPTIONS";
/// Every header an ingest request may carry besides the safelisted ones:
/// the credential (`Authorization`, Optimizely's `X-SessionDB-Key`), JSON
/// or binary bodies and their compression.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Content-Encoding, X-SessionDB-Key";
/// Response headers a page may read besides the safelisted ones.
const EXPOSED_HEADERS: &str = "Retry-After";

/// Why `--cors-allowed-origins` was refused at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginListError {
    #[error("`{origin}` is not an origin: {reason} (write `https://shop.example` or `http://localhost:8080`)")]
    Invalid {
        origin: String,
        reason: &'static str,
    },
    #[error("{count} origins listed; at most {CORS_ALLOWED_ORIGINS_MAX}")]
    TooMany { count: usize },
}

/// Checks and normalises the configured origins: each is
/// `http(s)://host[:port]`, without path, query, credentials or wildcard,
/// compared as browsers serialise it (lowercase).
pub fn parse_origins(origins: &[String]) -> Result<Vec<String>, OriginListError> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|origin| origin.trim())
        .filter(|origin| !origin.is_empty())
        .collect();
    if origins.len() > CORS_ALLOWED_ORIGINS_MAX {
        return Err(OriginListError::TooMany {
            count: origins.len(),
        });
    }
    origins.into_iter().map(parse_origin).collect()
}

fn parse_origin(origin: &str) -> Result<String, OriginListError> {
    let invalid = |reason| OriginListError::Invalid {
        origin: origin.to_string(),
        reason,
    };
    if origin.len() > CORS_ORIGIN_BYTES_MAX {
        return Err(invalid("too long"));
    }
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| invalid("it must start with `https://` or `http://`"))?;
    let valid_byte = |byte: u8| byte.is_ascii_alphanumeric() || b"-.:[]".contains(&byte);
    if host.is_empty() || !host.bytes().all(valid_byte) {
        return Err(invalid(
            "it is a scheme and a host (with an optional port), nothing else",
        ));
    }
    Ok(origin.to_ascii_lowercase())
}

/// The node's allowed origins and the count of refused ones.
#[derive(Debug, Default)]
pub struct Cors {
    origins: Vec<String>,
    refused: AtomicU64,
}

impl Cors {
    /// `origins` as `parse_origins` answered them.
    pub fn new(origins: Vec<String>) -> Cors {
        Cors {
            origins,
            refused: AtomicU64::new(0),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|allowed| allowed == origin)
    }

    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        crate::metrics::counter(
            registry,
            "sessiondb_cors_origins_refused_total",
            "Ingest requests (preflights included) from a browser origin that --cors-allowed-origins does not list.",
            self.refused.load(Ordering::Relaxed),
        );
    }
}

/// Middleware around the ingest resources: answers preflights and adds
/// `Access-Control-Allow-Origin` for a listed origin; see the module.
pub async fn allow_listed_origins(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let cors = request
        .app_data::<web::Data<AppState>>()
        .map(|state| std::sync::Arc::clone(&state.cors));
    let (Some(origin), Some(cors)) = (origin, cors) else {
        return next.call(request).await.map(|r| r.map_into_left_body());
    };
    let preflight = request.method() == Method::OPTIONS;
    if !cors.allows(&origin) {
        cors.refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%origin, path = %request.path(), preflight, "cors: origin not in --cors-allowed-origins; no CORS headers");
        if preflight {
            let refusal = refused_preflight(&origin).error_response();
            return Ok(request.into_response(refusal).map_into_right_body());
        }
        return next.call(request).await.map(|r| r.map_into_left_body());
    }
    if preflight {
        let answer = preflight_answer(&origin);
        return Ok(request.into_response(answer).map_into_right_body());
    }
    let mut response = next.call(request).await?;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    Ok(response.map_into_left_body())
}

fn refused_preflight(origin: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        format!("origin `{origin}` may not send events here: the node's --cors-allowed-origins does not list it (see docs/security.md)"),
    )
}

/// `204` with what a listed origin may send.
fn preflight_answer(origin: &str) -> HttpResponse {
    let mut answer = HttpResponse::NoContent();
    if let Ok(value) = HeaderValue::from_str(origin) {
        answer.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, value));
    }
    answer
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
        .insert_header((
            header::ACCESS_CONTROL_MAX_AGE,
            CORS_PREFLIGHT_MAX_AGE_SECONDS.to_string(),
        ))
        .insert_header((header::VARY, "Origin"))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(origins: &[&str]) -> Vec<String> {
        origins.iter().map(|origin| origin.to_string()).collect()
    }

    #[test]
    fn origins_are_checked_and_normalised() {
        assert_eq!(
            parse_origins(&list(&[
                "https://Shop.Example",
                " http://localhost:8080 ",
                ""
            ])),
            Ok(list(&["https://shop.example", "http://localhost:8080"]))
        );
        for bad in [
            "shop.example",
            "https://",
            "https://shop.example/",
            "https://shop.example/path",
            "https://*.example",
            "https://user@shop.example",
            "ftp://shop.example",
        ] {
            assert!(
                matches!(
                    parse_origins(&list(&[bad])),
                    Err(OriginListError::Invalid { .. })
                ),
                "{bad}"
            );
        }
        let many: Vec<String> = (0..=CORS_ALLOWED_ORIGINS_MAX)
            .map(|index| format!("https://site{index}.example"))
            .collect();
        assert_eq!(
            parse_origins(&many),
            Err(OriginListError::TooMany {
                count: CORS_ALLOWED_ORIGINS_MAX + 1
            })
        );
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let cors = Cors::new(list(&["https://shop.example"]));
        assert!(cors.allows("https://shop.example"));
        assert!(!cors.allows("https://evil.example"));
        assert!(!cors.allows("https://shop.example:8443"));
        assert!(!Cors::default().allows("https://shop.example"));
    }
}
