//! Every HTTP error is a JSON `ErrorResponse` with a stable code.

use crate::engine::query::QueryError;
use crate::engine::IngestError;
use crate::project::ProjectError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use sessiondb_protocol::ErrorResponse;

/// An error answer: status, stable code, human message, and for answers
/// that mean "later" (429, 503 overloaded) the `Retry-After` seconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// Sends `Retry-After: <seconds>` with the answer.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The same status and code with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_seconds {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(ErrorResponse {
            error: self.code.to_string(),
            message: self.message.clone(),
        })
    }
}

impl From<ProjectError> for ApiError {
    fn from(error: ProjectError) -> Self {
        let (status, code) = match &error {
            ProjectError::Unknown { .. } => (StatusCode::NOT_FOUND, "unknown_project"),
            ProjectError::Exists { .. } => (StatusCode::CONFLICT, "project_exists"),
            ProjectError::InvalidName { .. } => (StatusCode::BAD_REQUEST, "invalid_project_name"),
            ProjectError::InvalidSetting { .. } => (StatusCode::BAD_REQUEST, "invalid_settings"),
            ProjectError::Immutable { .. } => (StatusCode::BAD_REQUEST, "immutable_setting"),
            ProjectError::TooMany => (StatusCode::BAD_REQUEST, "too_many_projects"),
            ProjectError::Storage { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        let (status, code) = match &error {
            IngestError::Storage { .. } => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            IngestError::Overloaded { .. } => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    error.to_string(),
                )
                .with_retry_after(crate::limits::OVERLOAD_RETRY_AFTER_SECONDS);
            }
            IngestError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let (status, code) = match &error {
            QueryError::UnknownProject { .. } => (StatusCode::NOT_FOUND, "unknown_project"),
            QueryError::UnknownExperiment { .. } => (StatusCode::NOT_FOUND, "unknown_experiment"),
            QueryError::UnalignedRange { .. } => (StatusCode::BAD_REQUEST, "unaligned_range"),
            QueryError::InvalidRange { .. } => (StatusCode::BAD_REQUEST, "invalid_range"),
            QueryError::TooManyBuckets { .. } => (StatusCode::BAD_REQUEST, "range_too_long"),
            QueryError::UnknownBreakdown { .. } => (StatusCode::BAD_REQUEST, "unknown_breakdown"),
            QueryError::UnknownBaseline { .. } => (StatusCode::BAD_REQUEST, "unknown_baseline"),
            QueryError::TooManyKeys { .. } => (StatusCode::BAD_REQUEST, "too_many_keys"),
            QueryError::InvalidInterval { .. } => (StatusCode::BAD_REQUEST, "invalid_interval"),
            QueryError::TooManyPoints { .. } => (StatusCode::BAD_REQUEST, "too_many_points"),
            QueryError::TooExpensive { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "query_too_expensive")
            }
            QueryError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<crate::cluster::coordinator::CoordinatorError> for ApiError {
    fn from(error: crate::cluster::coordinator::CoordinatorError) -> Self {
        use crate::cluster::coordinator::CoordinatorError;
        match error {
            CoordinatorError::Query(error) => error.into(),
            error @ CoordinatorError::CountedTwice { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stores_counted_twice",
                error.to_string(),
            ),
        }
    }
}
