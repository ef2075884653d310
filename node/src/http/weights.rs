//! An experiment's stored allocation weights, which the sample ratio
//! mismatch check expects when a results query gives no `weights`
//! (`docs/statistics.md`, "Sample ratio mismatch"): read, set and cleared
//! here, agreed through placement like project settings
//! (`SetExperimentWeights`), so every member answers with the same weights
//! and they survive restarts.

use super::error::ApiError;
use super::AppState;
use crate::cluster::placement::{PlacementCommand, PlacementRejection, PlacementResponse};
use crate::project::{self, ExperimentWeights, ProjectError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use sessiondb_protocol as wire;
use sessiondb_protocol::ErrorCode;
use std::time::Duration;

/// How long a change waits for this node to apply it after the cluster
/// agreed, so that a read from the same node right after sees it. The
/// change is agreed either way; a node lagging past this answers anyway.
const WEIGHTS_APPLIED_WAIT_MS: u64 = 5_000;

/// `GET /v1/projects/{project}/experiments/{experiment}/weights`.
pub async fn show(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (project, experiment) = path.into_inner();
    require_project(&state, &project)?;
    let weights = stored(&state, &project, &experiment);
    Ok(HttpResponse::Ok().json(answer(project, experiment, weights)))
}

/// `PUT /v1/projects/{project}/experiments/{experiment}/weights`.
pub async fn set(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<wire::SetExperimentWeights>,
) -> Result<HttpResponse, ApiError> {
    let (project, experiment) = path.into_inner();
    require_project(&state, &project)?;
    let weights = body.into_inner().weights;
    project::check_experiment_weights(&experiment, &weights).map_err(invalid)?;
    change(&state, &project, &experiment, Some(weights)).await
}

/// `DELETE /v1/projects/{project}/experiments/{experiment}/weights`: the
/// check assumes equal shares again.
pub async fn clear(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (project, experiment) = path.into_inner();
    require_project(&state, &project)?;
    change(&state, &project, &experiment, None).await
}

fn require_project(state: &AppState, project: &str) -> Result<(), ApiError> {
    if state.engine.projects().get(project).is_none() {
        return Err(ProjectError::Unknown {
            name: project.to_string(),
        }
        .into());
    }
    Ok(())
}

fn stored(state: &AppState, project: &str, experiment: &str) -> Option<ExperimentWeights> {
    state
        .cluster
        .placement
        .view()
        .current()
        .experiment_weights(project, experiment)
        .cloned()
}

fn answer(
    project: String,
    experiment: String,
    weights: Option<ExperimentWeights>,
) -> wire::ExperimentWeights {
    wire::ExperimentWeights {
        project,
        experiment,
        weights,
    }
}

fn invalid(error: project::WeightsError) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidSettings, error.to_string())
}

/// Agrees on the change through placement, then waits (bounded) until this
/// node applied it.
async fn change(
    state: &AppState,
    project: &str,
    experiment: &str,
    weights: Option<ExperimentWeights>,
) -> Result<HttpResponse, ApiError> {
    let command = PlacementCommand::SetExperimentWeights {
        project: project.to_string(),
        experiment: experiment.to_string(),
        weights: weights.clone(),
    };
    match super::projects::propose(state, command).await? {
        PlacementResponse::ExperimentWeightsSet { .. } => {}
        PlacementResponse::Rejected { reason } => return Err(rejected(reason)),
        other => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::UnexpectedPlacementAnswer,
                format!("{other:?}"),
            ))
        }
    }
    wait_until_applied(state, project, experiment, weights.as_ref()).await;
    tracing::info!(
        project,
        experiment,
        stored = weights.is_some(),
        "experiment weights changed"
    );
    Ok(HttpResponse::Ok().json(answer(project.to_string(), experiment.to_string(), weights)))
}

fn rejected(reason: PlacementRejection) -> ApiError {
    match reason {
        PlacementRejection::UnknownProject { name } => ProjectError::Unknown { name }.into(),
        PlacementRejection::InvalidExperimentWeights { detail } => {
            ApiError::bad_request(ErrorCode::InvalidSettings, detail)
        }
        other => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ProjectRefused,
            other.to_string(),
        ),
    }
}

async fn wait_until_applied(
    state: &AppState,
    project: &str,
    experiment: &str,
    weights: Option<&ExperimentWeights>,
) {
    let mut view = state.cluster.placement.view().clone();
    let applied = async {
        while view.current().experiment_weights(project, experiment) != weights {
            if !view.changed().await {
                return;
            }
        }
    };
    let wait = Duration::from_millis(WEIGHTS_APPLIED_WAIT_MS);
    if tokio::time::timeout(wait, applied).await.is_err() {
        tracing::warn!(
            project,
            experiment,
            "weights agreed but not applied here yet"
        );
    }
}
