//! The API's error type: every failure becomes `{"error": {"code", "message", "field"?}}`
//! with a fitting 4xx. Causes of 5xx are logged and never sent to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("send a bearer token or sign in: the credentials are missing, unknown or expired")]
    Unauthorized,
    /// 401 with its own code: wrong sign-in credentials or set-up token.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// 403: a cookie-authenticated change failed the CSRF checks.
    #[error("{0}")]
    Csrf(#[from] crate::session::cookie::CsrfError),
    /// 429 with `Retry-After`: too many failed sign-ins.
    #[error("too many failed attempts: try again in {retry_after_s} seconds")]
    TooManyAttempts { retry_after_s: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} '{id}' was not found")]
    NotFound { what: &'static str, id: String },
    /// 400 for malformed input, 422 for well-formed input that breaks a rule.
    #[error("{message}")]
    Invalid {
        status: StatusCode,
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{message}")]
    Unsupported { message: String },
    /// 503: a part of the gateway the request needs is not running.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// An internal failure; the cause is logged, the client sees a generic message.
    #[error("internal error")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 422: a field holds a value the rules refuse.
    pub fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// 400: the request itself is malformed (bad JSON, bad query).
    pub fn bad_request(
        code: &'static str,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            code,
            field,
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            what,
            id: id.into(),
        }
    }

    /// 401 for a sign-in whose e-mail or password is wrong: the same answer for both, so
    /// it does not tell which e-mails exist.
    pub fn invalid_credentials() -> Self {
        ApiError::Unauthenticated {
            code: "invalid_credentials",
            message: "wrong e-mail or password".to_owned(),
        }
    }

    pub fn admin_only() -> Self {
        ApiError::Forbidden("this action needs an admin token".to_owned())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Unauthenticated { code, .. } => (StatusCode::UNAUTHORIZED, code),
            ApiError::Csrf(_) => (StatusCode::FORBIDDEN, "csrf_failed"),
            ApiError::TooManyAttempts { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Invalid { status, code, .. } => (*status, code),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::Unsupported { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { what, id } => ApiError::NotFound { what, id },
            StoreError::Conflict { code, message } => ApiError::Conflict { code, message },
            StoreError::Invalid { field, message } => {
                ApiError::field("invalid_reference", field, message)
            }
            // The client may retry later: nothing is wrong with the request.
            other if crate::store::journal::is_unreachable(&other) => ApiError::Unavailable {
                code: "database_unavailable",
                message: format!("the database cannot be reached: {other}"),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_domain`.
    pub code: String,
    /// What went wrong and what to write instead.
    pub message: String,
    /// The request field the error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
            metrics::counter!("leadline_http_internal_errors_total").increment(1);
        }
        let field = match &self {
            ApiError::Invalid { field, .. } => field.clone(),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                field,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyAttempts { retry_after_s } = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_s),
            );
        }
        response
    }
}
