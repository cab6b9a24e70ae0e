//! The admin HTTP API (actix-web, JSON under `/v1`), the device's HTTP
//! routes (validate, sync), `/healthz`, `/metrics` and `/openapi.json`.
//!
//! Every route authenticates (user bearer token, or the device's own secret
//! for the device routes) and every change or read goes through `Service`,
//! where the engine resolves each id (`Engine::resolve`: another
//! organization's id answers exactly as an unknown one) and checks the
//! caller's role. Client mistakes get a 4xx with `{"error", "field",
//! "rule"}`, never a 500; a method a path does not take gets 405 with
//! `Allow`.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `mod.rs` | errors (`ApiError`), the strict JSON extractor, the caller, the app |
//! | [`paging`] | `limit` + `page_cursor` and the `{data, pagination}` answer of list routes |
//! | [`wire`] | every request and response body, defined once (the simulator's `--target` client uses them too) |
//! | `routes/` | the handlers by audience and resource, each with its `#[utoipa::path]`; one list mounts and documents them |
//! | `idempotency.rs` | `Idempotency-Key` on every change: replay, 409, 422 (one middleware) |
//! | `openapi.rs` | the document: the handlers' paths plus the answers every route of a shape gives, security schemes, 405's `Allow` |

mod idempotency;
mod openapi;
pub mod paging;
mod routes;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::dev::{Service as _, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::{Actor, UserId};
use crate::error::EngineError;
use crate::service::{Service, ServiceError};

pub use openapi::{allowed_methods, document, openapi, routes, Access, Route};

/// Largest JSON body accepted.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;

/// A client-facing error: status plus the field and rule it broke.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// The status in words: `not_found`, `unprocessable_entity`, ...
    pub error: String,
    /// What was wrong: a body field's path (`secret.pin`), `path`,
    /// `authorization`, `content-type`, ...
    pub field: String,
    /// The rule it broke, in words.
    pub rule: String,
}

impl ApiError {
    pub fn new(status: StatusCode, field: &str, rule: impl Into<String>) -> ApiError {
        let rule = rule.into();
        ApiError {
            status,
            error: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            field: field.to_string(),
            rule,
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authorization",
            "a valid bearer token is required",
        )
    }

    pub fn bad_request(field: &str, rule: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, field, rule)
    }

    pub fn not_found(field: &str, rule: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, field, rule)
    }
}

impl From<ApiError> for crate::protocol::Refusal {
    /// The refusal a device hears over MQTT: this status and body.
    fn from(e: ApiError) -> Self {
        crate::protocol::Refusal {
            status: e.status.as_u16(),
            error: e.error,
            field: e.field,
            rule: e.rule,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.field, self.rule)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse<BoxBody> {
        HttpResponse::build(self.status).json(self)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::Forbidden { .. } => StatusCode::FORBIDDEN,
            EngineError::NotFound { .. } => StatusCode::NOT_FOUND,
            EngineError::Pin(_) | EngineError::Schedule(_) | EngineError::Invalid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            EngineError::Conflict { .. } => StatusCode::CONFLICT,
        };
        let rule = match &e {
            EngineError::Invalid { rule, .. } | EngineError::Conflict { rule, .. } => rule.clone(),
            EngineError::Pin(p) => p.to_string(),
            EngineError::Schedule(s) => s.to_string(),
            // Not the id: an unknown id and one of another organization
            // answer the same bytes (`Engine::resolve`).
            EngineError::NotFound { kind, .. } => format!("no {kind} with this id"),
            other => other.to_string(),
        };
        ApiError::new(status, e.field(), rule)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Engine(e) => e.into(),
            ServiceError::AlreadyBootstrapped => {
                ApiError::new(StatusCode::CONFLICT, "bootstrap", e.to_string())
            }
            ServiceError::UnknownDevice(d) => EngineError::NotFound {
                kind: "device",
                id: d.0,
            }
            .into(),
            ServiceError::Store(s) => {
                tracing::error!(error = %s, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store",
                    "the change could not be stored",
                )
            }
        }
    }
}

/// The field a serde error names, when it names one (an unknown field
/// with an empty name is the body's fault).
fn serde_field(msg: &str) -> String {
    for pat in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(rest) = msg.split(pat).nth(1) {
            if let Some(name) = rest.split('`').next().filter(|n| !n.is_empty()) {
                return name.to_string();
            }
        }
    }
    "body".to_string()
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            too_large(MAX_JSON_BODY_BYTES)
        }
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type",
            "must be application/json",
        ),
        JsonPayloadError::Deserialize(e) => {
            let msg = e.to_string();
            let status = if e.is_data() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, &serde_field(&msg), msg)
        }
        other => ApiError::bad_request("body", other.to_string()),
    };
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    let api = ApiError::bad_request("path", format!("ids are non-negative integers ({err})"));
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let msg = err.to_string();
    let api = ApiError::bad_request(&serde_field(&msg), msg);
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

/// A JSON body, decoded strictly: the error names the field by its path
/// (`secret.pin.value`, `doors[2]`) and the rule serde reported. A body
/// over `LIMIT` bytes is refused unread ([`too_large`]); the device
/// protocol's routes take `Json<T, { protocol::MAX_PAYLOAD_BYTES }>`, the
/// limit the MQTT gateway applies to the same payloads.
pub struct Json<T, const LIMIT: usize = MAX_JSON_BODY_BYTES>(pub T);

/// The refusal of a body over `limit` bytes: 413, field `body`. Over
/// MQTT the gateway refuses an oversized `auth/req` with the same.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body",
        format!("at most {limit} bytes"),
    )
}

impl<T, const LIMIT: usize> Json<T, LIMIT> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T, const LIMIT: usize> std::ops::Deref for Json<T, LIMIT> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Decodes a body strictly (see [`Json`]). A body refused only because
/// an integer was written as a whole float (`3.0`) is decoded again with
/// such numbers read as integers: JSON has one number type, and JSON
/// Schema (the OpenAPI document's) counts `3.0` as an integer. The first
/// refusal stands if the second try fails too.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let refused = match decode_json_exact(bytes) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if refused.status != StatusCode::UNPROCESSABLE_ENTITY {
        return Err(refused);
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Err(refused);
    };
    if !whole_floats_to_integers(&mut value) {
        return Err(refused);
    }
    serde_path_to_error::deserialize(value).map_err(|_| refused)
}

/// Rewrites each whole float within the 64-bit integer ranges (`3.0`) as
/// the integer; true when there was one.
fn whole_floats_to_integers(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Exact in an f64 and an i64 alike below 2^53.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if f.fract() == 0.0 && f.abs() <= EXACT {
                *v = Value::from(f as i64);
                return true;
            }
            false
        }
        // Every item is visited (no short cut): each float is rewritten.
        Value::Array(items) => items
            .iter_mut()
            .map(whole_floats_to_integers)
            .fold(false, |any, changed| any | changed),
        Value::Object(map) => map
            .values_mut()
            .map(whole_floats_to_integers)
            .fold(false, |any, changed| any | changed),
        _ => false,
    }
}

fn decode_json_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        let field = if path == "." || path == "?" || path.is_empty() {
            serde_field(&msg)
        } else {
            path
        };
        let status = if inner.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, &field, msg)
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("body", e.to_string()))?;
    Ok(value)
}

/// A body that could not be read (over `limit`, cut off).
fn body_error(e: actix_web::Error, limit: usize) -> ApiError {
    if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        ApiError::bad_request("body", e.to_string())
    }
}

impl<T: serde::de::DeserializeOwned + 'static, const LIMIT: usize> FromRequest for Json<T, LIMIT> {
    type Error = ApiError;
    type Future = futures::future::LocalBoxFuture<'static, Result<Json<T, LIMIT>, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage as _;
        // A declared length over the limit is refused before any byte is
        // read; a body without one is read up to the app's limit and
        // measured.
        let declared_too_long = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|n| n > LIMIT);
        let json = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"));
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content-type",
                    "must be application/json",
                ));
            }
            if declared_too_long {
                return Err(too_large(LIMIT));
            }
            let bytes = body
                .await
                .map_err(|e| body_error(e, LIMIT.min(MAX_JSON_BODY_BYTES)))?;
            if bytes.len() > LIMIT {
                return Err(too_large(LIMIT));
            }
            // No route takes a list, and serde would read an array
            // positionally into a struct (`[null, null]` as a `PATCH` that
            // names nothing): an array is the wrong type, as the schema says.
            if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "body",
                    "a JSON object, not an array",
                ));
            }
            decode_json(&bytes).map(Json)
        })
    }
}

/// The signed-in user, from `Authorization: Bearer u{id}.{secret}`.
#[derive(Clone, Copy, Debug)]
pub struct Caller(pub UserId);

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::User(self.0)
    }
}

/// The bearer token of a request, if well formed.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let user = req
            .app_data::<web::Data<Service>>()
            .zip(bearer(req))
            .and_then(|(svc, token)| svc.authenticate_user(token));
        std::future::ready(user.map(Caller).ok_or_else(ApiError::unauthorized))
    }
}

/// Mounts every route on an actix `App`.
pub fn configure(service: Arc<Service>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(service))
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_JSON_BODY_BYTES)
                    .error_handler(json_error),
            )
            .app_data(web::PayloadConfig::new(MAX_JSON_BODY_BYTES))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::QueryConfig::default().error_handler(query_error));
        routes::mount(cfg);
    }
}

/// No route takes this method at this path: 405 with `Allow` when the
/// path is served (with other methods), else 404.
async fn no_route(req: HttpRequest) -> HttpResponse {
    let allowed = allowed_methods(req.path());
    if allowed.is_empty() {
        return ApiError::not_found("path", "no such route").error_response();
    }
    let allow = allowed.join(", ");
    let mut res = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!("this path takes {allow}"),
    )
    .error_response();
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
        res.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    res
}

/// Builds the whole application (routes, metrics middleware, 404s).
pub fn app(
    service: Arc<Service>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics_svc = service.clone();
    actix_web::App::new()
        .configure(configure(service))
        .default_service(web::to(no_route))
        .wrap(actix_web::middleware::from_fn(idempotency::guard))
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let route = req
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_string());
            let method = req.method().clone();
            let svc = metrics_svc.clone();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                let m = svc.metrics();
                m.http_requests_total
                    .with_label_values(&[&route, method.as_str(), res.status().as_str()])
                    .inc();
                m.http_request_duration_seconds
                    .with_label_values(&[&route])
                    .observe(started.elapsed().as_secs_f64());
                Ok(res)
            }
        })
}
