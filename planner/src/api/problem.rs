//! Errors as RFC 9457 problem documents (`application/problem+json`), and
//! extractors whose rejections are problem documents too.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ebb_shared::StateError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::PlannerError;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Names the kind of problem: `urn:ebb:problem:<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The kind of problem, in words.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// This occurrence, in words: what to do about it.
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:ebb:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "Ebb could not answer; the reason is in `ebb serve`'s log",
        )
    }

    fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Unavailable",
            detail,
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ebb\""),
            );
        }
        response
    }
}

impl From<PlannerError> for Problem {
    fn from(error: PlannerError) -> Self {
        match error {
            PlannerError::NotFound(m) => Problem::not_found(m),
            PlannerError::Conflict(m) => Problem::conflict(m),
            PlannerError::Usage(m) => Problem::bad_request(m),
            PlannerError::CancelledWhilePlanning(_) => Problem::conflict(error.to_string()),
            PlannerError::State(state) => state.into(),
            PlannerError::Queue(e) => {
                tracing::warn!(error = %e, "API request failed on the queue");
                Problem::unavailable("the task queue (Redis) does not answer; try again shortly")
            }
            other => {
                tracing::error!(error = %other, "API request failed");
                Problem::internal()
            }
        }
    }
}

impl From<StateError> for Problem {
    fn from(error: StateError) -> Self {
        match error {
            StateError::RunActive { .. } => Problem::conflict(error.to_string()),
            StateError::NoSuchRun(_) | StateError::NoSuchVerification(_) => {
                Problem::not_found(error.to_string())
            }
            other => {
                tracing::error!(error = %other, "API request failed on the state database");
                Problem::internal()
            }
        }
    }
}

/// Query parameters, or a 400 problem naming what is wrong with them.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}

/// Path parameters, or a 400 problem.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}

/// A JSON object body; no body (or `null`) reads as `T::default()`, so
/// bodies with only optional fields may be left out.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        if bytes.is_empty() {
            return Ok(ApiJson(T::default()));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(not_the_json)?;
        if value.is_null() {
            return Ok(ApiJson(T::default()));
        }
        object(value).map(ApiJson)
    }
}

/// A JSON object body that must be there.
pub struct ApiBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(not_the_json)?;
        object(value).map(ApiBody)
    }
}

/// `value` as `T`, when it is a JSON object (serde would also read a
/// struct from an array).
pub fn object<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Problem> {
    if !value.is_object() {
        return Err(Problem::bad_request(
            "the body must be a JSON object; see /api/v1/openapi.json",
        ));
    }
    serde_json::from_value(value).map_err(not_the_json)
}

fn not_the_json(e: serde_json::Error) -> Problem {
    Problem::bad_request(format!(
        "the body is not the JSON this operation takes: {e}"
    ))
}
