//! Who may call what (`docs/security.md`): every request's credential is
//! one of four classes, and each endpoint class accepts some of them.
//!
//! - the admin token: projects, queries, the console's data calls,
//!   `/metrics`, `/v1/status`, `/v1/admin/*` and the cluster endpoints for
//!   operators (`require_admin`); it may also send events;
//! - the viewer token (`--viewer-token`), read-only: `/metrics`,
//!   `/v1/status`, `GET /v1/cluster`, and the `GET`s of `/v1/projects`
//!   (projects, results, time series) (`require_viewer_or_admin`,
//!   `require_admin_to_write`); nothing that writes;
//! - a project's ingest key: `POST /v1/events` for that project only
//!   (`ingest_permission`), and the shard map (`require_ingest_or_admin`);
//! - the cluster secret: node-to-node calls, `/v1/internal/*` and
//!   `POST /v1/cluster/join` (`require_cluster_secret`).
//!
//! A missing or unknown credential is `401 unauthorized`; a valid credential
//! of the wrong class (an ingest key on a query, project A's key sending to
//! project B) is `403 forbidden`. Either body says which class the endpoint
//! needs and nothing about the credential presented. Every comparison is in
//! constant time (hashes for the admin token and ingest keys,
//! `AdminToken::matches` for the cluster secret).
//!
//! Credentials travel only as `Authorization: Bearer <credential>`: never in
//! a URL (URLs end up in logs, histories and referrers).

use super::error::ApiError;
use super::AppState;
use crate::keys::KeyHash;
use crate::project::ProjectConfig;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use sessiondb_protocol::ErrorCode;
use std::sync::Arc;

const BEARER_PREFIX: &str = "Bearer ";

/// What an endpoint accepts; the refusal's message names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    Admin,
    ClusterSecret,
    /// Any project's ingest key, or the admin token.
    IngestKeyOrAdmin,
    /// The viewer token or the admin token: reads only.
    ViewerOrAdmin,
}

impl Required {
    fn hint(self) -> &'static str {
        match self {
            Required::Admin => {
                "this endpoint needs the admin token as `Authorization: Bearer <token>` (see docs/security.md)"
            }
            Required::ClusterSecret => {
                "node-to-node endpoints need the cluster secret as `Authorization: Bearer <secret>` (see docs/cluster.md)"
            }
            Required::IngestKeyOrAdmin => {
                "this endpoint needs a project's ingest key or the admin token as `Authorization: Bearer <key>` (see docs/security.md)"
            }
            Required::ViewerOrAdmin => {
                "this endpoint needs the viewer token or the admin token as `Authorization: Bearer <token>` (see docs/security.md)"
            }
        }
    }
}

/// The class of the credential a request presented.
#[derive(Debug, Clone)]
pub enum Credential {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer credential that is none of the node's.
    Unknown,
    Admin,
    ClusterSecret,
    /// The read-only viewer token.
    Viewer,
    /// The ingest key (current, or previous within its grace period) of
    /// this project.
    IngestKey(Arc<ProjectConfig>),
}

/// Classifies the request's bearer credential. Looks at every class, so a
/// credential is never mistaken for another.
pub fn credential_of(state: &AppState, headers: &HeaderMap) -> Credential {
    let Some(presented) = bearer(headers) else {
        return Credential::Missing;
    };
    let bytes = presented.as_bytes();
    if state.admin_tokens.matches(bytes) {
        return Credential::Admin;
    }
    if state.cluster_secret.matches(bytes) {
        return Credential::ClusterSecret;
    }
    if state
        .viewer_token
        .is_some_and(|viewer| viewer.matches(&KeyHash::of(bytes)))
    {
        return Credential::Viewer;
    }
    let now_ms = state.engine.clock().now_ms();
    match state.engine.projects().by_ingest_key(presented, now_ms) {
        Some(project) => Credential::IngestKey(project),
        None => Credential::Unknown,
    }
}

/// Whether `credential` opens an endpoint that needs `required`.
fn admits(required: Required, credential: &Credential) -> bool {
    matches!(
        (required, credential),
        (Required::Admin, Credential::Admin)
            | (Required::ClusterSecret, Credential::ClusterSecret)
            | (Required::IngestKeyOrAdmin, Credential::Admin)
            | (Required::IngestKeyOrAdmin, Credential::IngestKey(_))
            | (Required::ViewerOrAdmin, Credential::Admin)
            | (Required::ViewerOrAdmin, Credential::Viewer)
    )
}

/// The refusal for `credential` at an endpoint needing `required`: 401 when
/// there is no valid credential, 403 when there is one of another class.
pub fn refusal(required: Required, credential: &Credential) -> ApiError {
    match credential {
        Credential::Missing | Credential::Unknown => unauthorized(required),
        Credential::Admin
        | Credential::ClusterSecret
        | Credential::Viewer
        | Credential::IngestKey(_) => forbidden(required.hint()),
    }
}

/// `401 unauthorized`, with the class `required` in the message.
pub fn unauthorized(required: Required) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        required.hint(),
    )
}

/// `403 forbidden`.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

/// Middleware (`actix_web::middleware::from_fn`): passes the request on when
/// it carries the node's admin token.
pub async fn require_admin(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    require(request, next, Required::Admin).await
}

/// Middleware: passes the request on when it carries the viewer token or the
/// admin token (read-only endpoints: `/metrics`, `/v1/status`,
/// `GET /v1/cluster`).
pub async fn require_viewer_or_admin(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    require(request, next, Required::ViewerOrAdmin).await
}

/// Middleware for a scope of reads and writes (`/v1/projects`): a `GET` or
/// `HEAD` needs the viewer token or the admin token, any other method the
/// admin token.
pub async fn require_admin_to_write(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let required = required_for_method(request.method());
    require(request, next, required).await
}

/// What a request of `method` needs in a scope of reads and writes.
fn required_for_method(method: &actix_web::http::Method) -> Required {
    if method == actix_web::http::Method::GET || method == actix_web::http::Method::HEAD {
        Required::ViewerOrAdmin
    } else {
        Required::Admin
    }
}

/// Middleware: passes the request on when it carries the cluster secret.
pub async fn require_cluster_secret(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    require(request, next, Required::ClusterSecret).await
}

/// Middleware: passes the request on when it carries any project's ingest
/// key or the admin token (the shard map, which senders need to route).
pub async fn require_ingest_or_admin(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    require(request, next, Required::IngestKeyOrAdmin).await
}

async fn require(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    required: Required,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let credential = match request.app_data::<web::Data<AppState>>() {
        Some(state) => credential_of(state, request.headers()),
        None => Credential::Missing,
    };
    if admits(required, &credential) {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let mut response = refusal(required, &credential).error_response();
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    Ok(request.into_response(response).map_into_right_body())
}

/// What a native ingest request may write to.
#[derive(Debug, Clone)]
pub enum IngestPermission {
    /// The admin token: any project.
    AnyProject,
    /// An ingest key: its own project only.
    Project(Arc<str>),
}

impl IngestPermission {
    /// `403 forbidden` when any of `projects` (the projects the request's
    /// events name) is not writable with this permission; the whole request
    /// is refused, nothing applied. Names neither the key's project nor
    /// whether the other project exists.
    pub fn check<'a>(&self, projects: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
        let IngestPermission::Project(allowed) = self else {
            return Ok(());
        };
        if projects.into_iter().all(|name| name == allowed.as_ref()) {
            return Ok(());
        }
        Err(forbidden(
            "the batch names a project this ingest key may not write to: an ingest key sends events to its own project only (see docs/security.md)",
        ))
    }
}

/// The permission of a native ingest request (`POST /v1/events`): the
/// admin token or a project's ingest key; `401`/`403` otherwise.
pub fn ingest_permission(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<IngestPermission, ApiError> {
    let credential = credential_of(state, headers);
    match credential {
        Credential::Admin => Ok(IngestPermission::AnyProject),
        Credential::IngestKey(project) => Ok(IngestPermission::Project(Arc::clone(&project.name))),
        other => Err(refusal(Required::IngestKeyOrAdmin, &other)),
    }
}

/// The credential of an `Authorization: Bearer <credential>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(BEARER_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_opens_only_its_endpoints() {
        let project = Arc::new(ProjectConfig {
            name: Arc::from("shop"),
            settings: crate::project::Settings::default(),
            version: 1,
            ingest_keys: crate::keys::RotatingKey::new(crate::keys::KeyHash::of(b"k")),
        });
        let ingest = Credential::IngestKey(project);
        assert!(admits(Required::Admin, &Credential::Admin));
        assert!(!admits(Required::Admin, &ingest));
        assert!(!admits(Required::Admin, &Credential::ClusterSecret));
        assert!(admits(Required::ClusterSecret, &Credential::ClusterSecret));
        assert!(!admits(Required::ClusterSecret, &Credential::Admin));
        assert!(admits(Required::IngestKeyOrAdmin, &ingest));
        assert!(admits(Required::IngestKeyOrAdmin, &Credential::Admin));
        assert!(!admits(
            Required::IngestKeyOrAdmin,
            &Credential::ClusterSecret
        ));
        assert!(!admits(Required::IngestKeyOrAdmin, &Credential::Viewer));
        assert!(admits(Required::ViewerOrAdmin, &Credential::Viewer));
        assert!(admits(Required::ViewerOrAdmin, &Credential::Admin));
        assert!(!admits(Required::ViewerOrAdmin, &ingest));
        assert!(!admits(Required::ViewerOrAdmin, &Credential::ClusterSecret));
        assert!(!admits(Required::Admin, &Credential::Viewer));
        assert!(!admits(Required::ClusterSecret, &Credential::Viewer));
        assert_eq!(
            refusal(Required::Admin, &Credential::Viewer).status_code(),
            StatusCode::FORBIDDEN
        );
        for required in [
            Required::Admin,
            Required::ClusterSecret,
            Required::IngestKeyOrAdmin,
            Required::ViewerOrAdmin,
        ] {
            assert!(!admits(required, &Credential::Missing));
            assert!(!admits(required, &Credential::Unknown));
            assert_eq!(
                refusal(required, &Credential::Missing).status_code(),
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                refusal(required, &Credential::Unknown).status_code(),
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            refusal(Required::Admin, &ingest).status_code(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn reads_need_the_viewer_or_admin_token_and_writes_the_admin_token() {
        use actix_web::http::Method;
        assert_eq!(required_for_method(&Method::GET), Required::ViewerOrAdmin);
        assert_eq!(required_for_method(&Method::HEAD), Required::ViewerOrAdmin);
        for method in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            assert_eq!(required_for_method(&method), Required::Admin, "{method}");
        }
    }

    #[test]
    fn an_ingest_key_writes_to_its_own_project_only() {
        let own = IngestPermission::Project(Arc::from("shop"));
        assert!(own.check(["shop", "shop"]).is_ok());
        let error = own.check(["shop", "blog"]).unwrap_err();
        assert_eq!(error.status_code(), StatusCode::FORBIDDEN);
        assert!(!error.to_string().contains("blog"));
        assert!(IngestPermission::AnyProject.check(["shop", "blog"]).is_ok());
    }
}
