//! Project administration: create, list, show, configure, rotate the
//! ingest key; and the server side of `POST /v1/internal/propose`, a
//! placement command a member hands to the leader (`cluster::leader`).
//!
//! A project change is validated and built from this member's view, then
//! agreed on through placement (`PutProject`, proposed by the leader) and
//! installed here before the answer; the other members install it as they
//! apply the entry (`cluster::startup::follow_placement`).

use super::error::ApiError;
use super::AppState;
use crate::cluster::leader::LeaderError;
use crate::cluster::peer::PROPOSE_PATH;
use crate::cluster::placement::{
    ChangeError, PlacementCommand, PlacementRejection, PlacementResponse,
};
use crate::engine::journal;
use crate::project::{ProjectConfig, ProjectError, SettingsPatch};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;

/// Largest command a member forwards (a project configuration).
const PROPOSE_BODY_BYTES_MAX: usize = 256 * 1024;

pub fn configure_internal(config: &mut web::ServiceConfig) {
    config.service(
        web::resource(PROPOSE_PATH)
            .wrap(actix_web::middleware::from_fn(
                super::auth::require_cluster_secret,
            ))
            .app_data(web::PayloadConfig::new(PROPOSE_BODY_BYTES_MAX))
            .route(web::post().to(serve_propose)),
    );
}

/// `503 placement_unavailable`: safe to retry.
fn unavailable(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PlacementUnavailable,
        format!("the cluster could not agree on the change now: {detail}; retry"),
    )
}

/// `POST /v1/internal/propose`: proposes a forwarded command (leader
/// only; never forwards again).
async fn serve_propose(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let command: PlacementCommand = journal::decode(&body, "placement command")
        .map_err(|error| ApiError::bad_request(ErrorCode::MalformedCommand, error.to_string()))?;
    match state.cluster.placement.propose(command).await {
        Ok(response) => Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(journal::encode(&response))),
        Err(ChangeError::NotLeader { .. }) => Err(ApiError::new(
            StatusCode::TEMPORARY_REDIRECT,
            ErrorCode::NotLeader,
            "this node is no longer the leader",
        )),
        Err(ChangeError::Unavailable { detail }) => Err(unavailable(detail)),
    }
}

pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<wire::CreateProject>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let (config, key) = state
        .engine
        .projects()
        .prepare_create(&body.name, &patch_of(body.settings))?;
    let config = agree(&state, config, true).await?;
    let mut project = project_of(&config, Vec::new());
    // The one answer that carries the key: only its hash is kept.
    project.ingest_key = Some(key);
    Ok(HttpResponse::Created().json(project))
}

/// `POST /v1/projects/{name}/ingest-key/rotate`: a new ingest key, shown
/// once; the old one keeps working for the grace period. Agreed through
/// placement like any project change, so every member knows both keys and
/// the change survives restarts.
pub async fn rotate_ingest_key(
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let grace_ms = super::admin::requested_grace_ms(&body, state.key_rotation_grace_ms)?;
    let now_ms = state.engine.clock().now_ms();
    let (config, key) = state
        .engine
        .projects()
        .prepare_rotate_ingest_key(&name, now_ms, grace_ms)?;
    let config = agree(&state, config, false).await?;
    tracing::info!(project = %config.name, grace_ms, "ingest key rotated");
    Ok(HttpResponse::Ok().json(wire::RotatedKey {
        key,
        previous_valid_until_ms: config
            .ingest_keys
            .previous
            .map(|previous| previous.valid_until_ms),
    }))
}

/// Has the cluster agree on `config` (placement's `PutProject`, through
/// the leader) and installs it here; the other members install it as they
/// apply the entry (`cluster::startup::follow_placement`).
async fn agree(
    state: &AppState,
    config: ProjectConfig,
    creating: bool,
) -> Result<ProjectConfig, ApiError> {
    let name = config.name.to_string();
    // A node whose log failed could not journal the configuration after
    // the cluster agreed on it: refuse before proposing.
    if let Some(cause) = state.engine.storage_failure() {
        return Err(ProjectError::Storage { cause }.into());
    }
    let command = PlacementCommand::PutProject {
        config: config.clone(),
    };
    let response = propose(state, command).await?;
    match response {
        PlacementResponse::ProjectStored { .. } => {}
        PlacementResponse::Rejected { reason } => return Err(rejected(reason, &name, creating)),
        other => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::UnexpectedPlacementAnswer,
                format!("{other:?}"),
            ))
        }
    }
    state.engine.install_project(config.clone()).await?;
    Ok(config)
}

/// Has the leader propose a placement command; answers what applying it
/// answered. No agreement now is `503 placement_unavailable`.
pub(super) async fn propose(
    state: &AppState,
    command: PlacementCommand,
) -> Result<PlacementResponse, ApiError> {
    state
        .cluster
        .leader
        .propose(command)
        .await
        .map_err(|error| match error {
            LeaderError::Unknown => unavailable("no leader is known (an election is in progress)"),
            LeaderError::Unavailable { detail } => unavailable(detail),
            LeaderError::Forward(error) => unavailable(error),
        })
}

/// A refused `PutProject`, as the caller's error.
fn rejected(reason: PlacementRejection, name: &str, creating: bool) -> ApiError {
    match reason {
        PlacementRejection::StaleProjectVersion { .. } if creating => {
            ProjectError::Exists {
                name: name.to_string(),
            }
            .into()
        }
        PlacementRejection::StaleProjectVersion { .. } => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ConcurrentChange,
            format!("project `{name}` was changed at the same time through another node; read it again and retry"),
        ),
        PlacementRejection::TooManyProjects { .. } => ProjectError::TooMany.into(),
        other => ApiError::new(StatusCode::CONFLICT, ErrorCode::ProjectRefused, other.to_string()),
    }
}

pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut projects = Vec::new();
    for config in state.engine.projects().list() {
        projects.push(project_with_experiments(&state, &config).await?);
    }
    Ok(HttpResponse::Ok().json(wire::ProjectList { projects }))
}

pub async fn show(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let config = state.engine.projects().get(&name).ok_or_else(|| {
        crate::project::ProjectError::Unknown {
            name: name.to_string(),
        }
    })?;
    Ok(HttpResponse::Ok().json(project_with_experiments(&state, &config).await?))
}

pub async fn configure(
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<wire::ProjectSettingsPatch>,
) -> Result<HttpResponse, ApiError> {
    let (_, config) = state
        .engine
        .projects()
        .prepare_configure(&name, &patch_of(body.into_inner()))?;
    let config = agree(&state, config, false).await?;
    Ok(HttpResponse::Ok().json(project_with_experiments(&state, &config).await?))
}

async fn project_with_experiments(
    state: &AppState,
    config: &ProjectConfig,
) -> Result<wire::Project, ApiError> {
    let experiments = state
        .engine
        .experiments(&config.name)
        .await?
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect();
    Ok(project_of(config, experiments))
}

fn patch_of(patch: wire::ProjectSettingsPatch) -> SettingsPatch {
    SettingsPatch {
        session_gap_ms: patch.session_gap_ms,
        session_max_ms: patch.session_max_ms,
        midnight_split: patch.midnight_split,
        time_zone: patch.time_zone,
        allowed_lateness_ms: patch.allowed_lateness_ms,
        future_skew_ms: patch.future_skew_ms,
        bucket_ms: patch.bucket_ms,
        hll_precision: patch.hll_precision,
        retention_ms: patch.retention_ms,
        breakdown_attributes: patch.breakdown_attributes,
    }
}

fn project_of(config: &ProjectConfig, experiments: Vec<String>) -> wire::Project {
    let settings = &config.settings;
    wire::Project {
        name: config.name.to_string(),
        settings: wire::ProjectSettings {
            session_gap_ms: settings.session_gap_ms,
            session_max_ms: settings.session_max_ms,
            midnight_split: settings.midnight_split,
            time_zone: settings.time_zone.name().to_string(),
            allowed_lateness_ms: settings.allowed_lateness_ms,
            future_skew_ms: settings.future_skew_ms,
            bucket_ms: settings.bucket_ms,
            hll_precision: settings.hll_precision,
            retention_ms: settings.retention_ms,
            breakdown_attributes: settings
                .breakdown_attributes
                .iter()
                .map(|name| name.to_string())
                .collect(),
        },
        experiments,
        ingest_key: None,
    }
}
