//! The API's one error shape, `{"error": {"code", "message", "details"}}`, with the status that
//! fits, and the conversions from extractor rejections, event decoding and store errors, so that no handler
//! and no malformed request ever answers with anything else.

use crate::event::DecodeError;
use crate::store::StoreError;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code, e.g. `not_found`, `schema`, `unknown_type`.
    pub code: &'static str,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
    /// Structured details (schema violation paths, field errors).
    pub details: Option<Value>,
}

/// The body of every error answer (for the OpenAPI document).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What an error answer says.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Structured details, when there are any.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// The answers every endpoint behind a key may give besides its own (in the OpenAPI document
/// of each, beside the answers particular to it).
#[derive(utoipa::IntoResponses)]
pub enum KeyRefusals {
    /// No key, an `Authorization` header that is not `Bearer <key>`, or an unknown key
    /// (`unauthorized`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key lacks the scope this endpoint needs (`forbidden`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None }
    }

    /// Adds structured details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422 with a code.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 503: a dependency (broker, store) cannot be reached now; try again.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"code": self.code, "message": self.message, "details": self.details}
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Cursor(c) => {
                Self::bad_request(format!("invalid cursor {c:?}: pass back the `next` value of a previous page"))
            }
            StoreError::Conflict(c) => Self::conflict(c.to_string()),
            other => {
                tracing::warn!(error = %other, "store error answering an API request");
                Self::unavailable("store_unavailable", format!("the store did not answer: {other}"))
            }
        }
    }
}

impl From<DecodeError> for ApiError {
    /// 422 `malformed`, with the attribute at fault in `details.attribute` when there is one.
    fn from(e: DecodeError) -> Self {
        let attribute = e.attribute().map(str::to_string);
        let err = Self::unprocessable("malformed", e.to_string());
        match attribute {
            Some(a) => err.details(serde_json::json!({ "attribute": a })),
            None => err,
        }
    }
}

impl From<crate::binding::BindingError> for ApiError {
    /// 422 `malformed`, the attribute in `details.attribute`, as a structured event's would be.
    fn from(e: crate::binding::BindingError) -> Self {
        let attribute = e.attribute.clone();
        Self::unprocessable("malformed", e.to_string()).details(serde_json::json!({ "attribute": attribute }))
    }
}

impl From<crate::runtime::plan::PlanError> for ApiError {
    /// A path outside the config layout or too many files: 422, the path in `details.path`;
    /// too many bytes: 413; a scratch directory the router cannot write: 503.
    fn from(e: crate::runtime::plan::PlanError) -> Self {
        use crate::runtime::plan::PlanError;
        let message = e.to_string();
        match e {
            PlanError::Path { path, .. } => {
                Self::unprocessable("file_path", message).details(serde_json::json!({ "path": path }))
            }
            PlanError::TooMany { .. } => Self::unprocessable("too_many_files", message),
            PlanError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message),
            PlanError::Scratch(_) => {
                tracing::warn!(error = %message, "a plan could not be made");
                Self::unavailable("scratch_unavailable", message)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match r.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            _ => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        Self::new(status, code, r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let (status, code) = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            _ => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        Self::new(status, code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

/// `Json<T>` whose rejections answer in the API's error shape.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query<T>` whose rejections answer in the API's error shape.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The raw body (axum's `Bytes`, within its default limit), whose rejections answer in the API's
/// error shape.
#[derive(Debug)]
pub struct RawBody(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(bytes::Bytes::from_request(req, state).await?))
    }
}

/// `Path<T>` whose rejections answer in the API's error shape.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
