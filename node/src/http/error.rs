//! Every HTTP error is a JSON `ErrorResponse` with a stable code.

use crate::engine::query::QueryError;
use crate::engine::IngestError;
use crate::project::ProjectError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use sessiondb_protocol::{ErrorCode, ErrorResponse};

/// An error answer: status, stable code, human message, and for answers
/// that mean "later" (429, 503 overloaded) the `Retry-After` seconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
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

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
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
            error: self.code.clone(),
            message: self.message.clone(),
        })
    }
}

impl From<ProjectError> for ApiError {
    fn from(error: ProjectError) -> Self {
        let (status, code) = match &error {
            ProjectError::Unknown { .. } => (StatusCode::NOT_FOUND, ErrorCode::UnknownProject),
            ProjectError::Exists { .. } => (StatusCode::CONFLICT, ErrorCode::ProjectExists),
            ProjectError::InvalidName { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidProjectName)
            }
            ProjectError::InvalidSetting { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidSettings)
            }
            ProjectError::Immutable { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::ImmutableSetting)
            }
            ProjectError::TooMany => (StatusCode::BAD_REQUEST, ErrorCode::TooManyProjects),
            ProjectError::Storage { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StorageUnavailable,
            ),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        let (status, code) = match &error {
            IngestError::Storage { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StorageUnavailable,
            ),
            IngestError::Overloaded { .. } => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Overloaded,
                    error.to_string(),
                )
                .with_retry_after(crate::limits::OVERLOAD_RETRY_AFTER_SECONDS);
            }
            IngestError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ShuttingDown),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let (status, code) = match &error {
            QueryError::UnknownProject { .. } => (StatusCode::NOT_FOUND, ErrorCode::UnknownProject),
            QueryError::UnknownExperiment { .. } => {
                (StatusCode::NOT_FOUND, ErrorCode::UnknownExperiment)
            }
            QueryError::UnalignedRange { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::UnalignedRange)
            }
            QueryError::InvalidRange { .. } => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRange),
            QueryError::TooManyBuckets { .. } => (StatusCode::BAD_REQUEST, ErrorCode::RangeTooLong),
            QueryError::UnknownBreakdown { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::UnknownBreakdown)
            }
            QueryError::UnknownBaseline { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::UnknownBaseline)
            }
            QueryError::TooManyKeys { .. } => (StatusCode::BAD_REQUEST, ErrorCode::TooManyKeys),
            QueryError::UnknownWeightedVariation { .. } | QueryError::MissingWeight { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery)
            }
            QueryError::InvalidInterval { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidInterval)
            }
            QueryError::TooManyPoints { .. } => (StatusCode::BAD_REQUEST, ErrorCode::TooManyPoints),
            QueryError::TooExpensive { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::QueryTooExpensive,
            ),
            QueryError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
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
                ErrorCode::StoresCountedTwice,
                error.to_string(),
            ),
        }
    }
}
