//! Request extractors whose failures are API errors that name the field.
//!
//! axum's own `Json` and `Query` reject with plain-text bodies; these parse with
//! `serde_path_to_error` so a bad body says which field was wrong, in our JSON error shape.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Upper bound of a JSON request body (bodies are small configuration objects).
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// A JSON body, bounded and parsed with field-naming errors.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::Unsupported {
                message: "send the body as JSON with Content-Type: application/json".to_owned(),
            });
        }
        let bytes = read_body(req, state, MAX_JSON_BODY).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Whether the body is declared as JSON (`application/json` or a `+json` type).
pub fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

/// Reads a body up to `limit` bytes; over the limit is 413.
pub async fn read_body<S: Send + Sync>(
    req: Request,
    state: &S,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let limited = req.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)));
    Bytes::from_request(limited, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge { limit }
            } else {
                ApiError::bad_request("unreadable_body", None, rejection.body_text())
            }
        })
}

/// Parses JSON, naming the field of the first error (`phones[2]`, `lead_creation`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let field = (path != ".").then_some(path);
        let code = if inner.is_syntax() || inner.is_eof() {
            "malformed_json"
        } else {
            "invalid_field"
        };
        let message = match &field {
            Some(f) => format!("{f}: {inner}"),
            None => inner.to_string(),
        };
        ApiError::Invalid {
            status: if code == "malformed_json" {
                axum::http::StatusCode::BAD_REQUEST
            } else {
                axum::http::StatusCode::UNPROCESSABLE_ENTITY
            },
            code,
            field,
            message,
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            None,
            format!("trailing data after JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// Query parameters with field-naming errors.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|err| {
                let field = err.path().to_string();
                let inner = err.into_inner();
                ApiError::bad_request(
                    "invalid_query",
                    (field != ".").then(|| field.clone()),
                    format!("query parameter {field}: {inner}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        phones: Vec<u32>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json::<Body>(br#"{"name":"a","phones":[1,"x"]}"#).unwrap_err();
        match err {
            ApiError::Invalid { field, code, .. } => {
                assert_eq!(field.as_deref(), Some("phones[1]"));
                assert_eq!(code, "invalid_field");
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = parse_json::<Body>(br#"{"name":"a""#).unwrap_err();
        assert!(matches!(
            err,
            ApiError::Invalid {
                code: "malformed_json",
                ..
            }
        ));
        let err = parse_json::<Body>(br#"{"phones":[]}"#).unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
    }
}
