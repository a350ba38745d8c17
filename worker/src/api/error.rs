//! One error shape for every endpoint: `{"error": {"code": "...", "message": "..."}}`
//! with an HTTP status; `code` is stable for scripts, `message` is for people.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match &e {
            Error::Usage(m) => ApiError::bad_request(m.clone()),
            Error::Connect { .. } | Error::Db(_) => {
                tracing::warn!(error = %e, "admin API: database error");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database", e.to_string())
            }
            _ => {
                tracing::error!(error = %e, "admin API: internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;
