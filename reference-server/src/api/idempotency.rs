//! `Idempotency-Key` on every change of the admin API (POST, PUT, PATCH,
//! DELETE), with Stripe's semantics and the status codes of the IETF
//! draft `draft-ietf-httpapi-idempotency-key-header`. One middleware
//! around every route, so no handler can forget it:
//!
//! - the first request with a key runs, and its answer (any status below
//!   500) is kept for 24 h (`store::idempotency::RETENTION`) by the
//!   server's clock;
//! - the same key again with the same method, path and body answers the
//!   kept status and body, with `Idempotent-Replayed: true`, and runs
//!   nothing;
//! - the same key with another method, path or body is a 422;
//! - the same key while its first request has not been answered is a 409;
//! - a key that is empty, longer than [`MAX_KEY_LEN`] or not visible ASCII
//!   is a 400.
//!
//! Keys belong to the signed-in user who sent them: another user's same
//! key is another key. Requests that no user token signs (bootstrap, the
//! device's own routes, a bad token, which the route answers 401) and
//! methods a path does not take (405) are passed on untouched. A 5xx, an answer larger than
//! [`MAX_STORED_BODY_BYTES`] or a request dropped before its answer frees
//! the key, so the client can retry with it. The table lives in the store
//! (`store::idempotency`).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};

use super::{allowed_methods, bearer, body_error, ApiError};
use crate::domain::UserId;
use crate::service::Service;
use crate::store::idempotency::{Claim, StoredAnswer};
pub use crate::store::idempotency::{MAX_KEY_LEN, MAX_STORED_BODY_BYTES};

/// The request header naming the key.
pub const KEY_HEADER: &str = "idempotency-key";
/// The answer header that marks a replay (Stripe's name).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

type Answer = Result<ServiceResponse<BoxBody>, actix_web::Error>;

/// The middleware (`actix_web::middleware::from_fn`).
pub(super) async fn guard(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Answer {
    let change = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    // Only a keyed change that a route takes (any other answers as without
    // the key: 405 with `Allow`, 404), looked at in this order so that the
    // hot paths (reads, the device's checks) pay one header lookup.
    let keyed_by = change
        .then(|| req.headers().get(KEY_HEADER).cloned())
        .flatten()
        .filter(|_| allowed_methods(req.path()).contains(&req.method().as_str()))
        .zip(req.app_data::<web::Data<Service>>().cloned())
        .and_then(|(header, svc)| {
            let user = svc.authenticate_user(bearer(req.request())?)?;
            Some((header, svc, user))
        });
    match keyed_by {
        Some((header, svc, user)) => match parse_key(&header) {
            Ok(key) => keyed(req, next, svc, user, key).await,
            Err(e) => Ok(req.error_response(e)),
        },
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

/// The key, if well formed.
fn parse_key(header: &HeaderValue) -> Result<String, ApiError> {
    let bytes = header.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            KEY_HEADER,
            format!("1 to {MAX_KEY_LEN} visible ASCII characters (a UUID is a good key)"),
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// What a request is compared by: its method, path with query, and body.
fn fingerprint(req: &ServiceRequest, body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(req.method().as_str().as_bytes());
    h.update(b"\0");
    let target = req.uri().path_and_query().map_or("", |p| p.as_str());
    h.update(target.as_bytes());
    h.update(b"\0");
    h.update(body);
    *h.finalize().as_bytes()
}

/// Runs `f` (SQLite, with an fsync) off the HTTP worker.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, crate::store::StoreError> + Send + 'static,
) -> Result<R, ApiError> {
    let stored = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "idempotency store failure");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store",
            "the idempotency key could not be stored",
        )
    };
    match web::block(f).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(stored(&e)),
        Err(e) => Err(stored(&e)),
    }
}

async fn keyed(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    svc: web::Data<Service>,
    user: UserId,
    key: String,
) -> Answer {
    let body = match req.extract::<web::Bytes>().await {
        Ok(b) => b,
        Err(e) => return Ok(req.error_response(body_error(e, super::MAX_JSON_BODY_BYTES))),
    };
    let fp = fingerprint(&req, &body);
    let now = svc.now();
    let claim = {
        let (svc, key) = (svc.clone(), key.clone());
        blocking(move || svc.idempotency().claim(user, &key, &fp, now)).await
    };
    let claim = match claim {
        Ok(c) => c,
        Err(e) => return Ok(req.error_response(e)),
    };
    match claim {
        Claim::Claimed => {
            req.set_payload(body.into());
            let held = Held {
                svc,
                user,
                key,
                open: true,
            };
            let res = next.call(req).await?;
            held.keep(res).await
        }
        Claim::Replay(answer) => Ok(req.into_response(replay(answer))),
        Claim::InFlight => Ok(req.error_response(ApiError::new(
            StatusCode::CONFLICT,
            KEY_HEADER,
            "a request with this key has not been answered yet; retry once it has",
        ))),
        Claim::Mismatch => Ok(req.error_response(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            KEY_HEADER,
            "this key was used with another request (method, path or body); use a new key",
        ))),
    }
}

/// The kept answer, as it was, marked as a replay.
fn replay(answer: StoredAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut res = HttpResponse::build(status);
    if let Some(ct) = answer
        .content_type
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
    {
        res.insert_header((CONTENT_TYPE, ct));
    }
    res.insert_header((
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    ));
    res.body(answer.body)
}

/// A claimed key: its answer is stored, or the key is freed, also when the
/// request is dropped before it was answered.
struct Held {
    svc: web::Data<Service>,
    user: UserId,
    key: String,
    open: bool,
}

impl Held {
    /// Keeps the answer for replays (or frees the key), then answers it.
    async fn keep(mut self, res: ServiceResponse<impl MessageBody + 'static>) -> Answer {
        let status = res.status();
        if status.is_server_error() {
            self.release().await;
            return Ok(res.map_into_boxed_body());
        }
        let (req, res) = res.into_parts();
        let (head, body) = res.into_parts();
        let Ok(bytes) = actix_web::body::to_bytes(body).await else {
            self.release().await;
            let e = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "body",
                "the answer could not be read",
            );
            return Ok(ServiceResponse::new(req, e.error_response()));
        };
        if bytes.len() > MAX_STORED_BODY_BYTES {
            tracing::warn!(
                bytes = bytes.len(),
                "an answer too large to keep for its idempotency key; the key is freed"
            );
            self.release().await;
        } else {
            let answer = StoredAnswer {
                status: status.as_u16(),
                content_type: head
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: bytes.to_vec(),
            };
            let (svc, user, key) = (self.svc.clone(), self.user, self.key.clone());
            if let Err(e) = blocking(move || svc.idempotency().finish(user, &key, &answer)).await {
                // The change is made and is answered; the key is freed,
                // so a retry with it runs again (logged).
                self.release().await;
                tracing::error!(error = %e, "an answer was not kept for its idempotency key");
            }
            self.open = false;
        }
        Ok(ServiceResponse::new(
            req,
            head.set_body(BoxBody::new(bytes)),
        ))
    }

    async fn release(&mut self) {
        let (svc, user, key) = (self.svc.clone(), self.user, self.key.clone());
        self.open = false;
        if let Err(e) = blocking(move || svc.idempotency().release(user, &key)).await {
            tracing::error!(error = %e, "an idempotency key could not be freed");
        }
    }
}

impl Drop for Held {
    /// The request was dropped (its client went away) before its answer:
    /// free the key, off this thread when a runtime is there.
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let (svc, user, key) = (self.svc.clone(), self.user, std::mem::take(&mut self.key));
        let free = move || {
            if let Err(e) = svc.idempotency().release(user, &key) {
                tracing::error!(error = %e, "an idempotency key could not be freed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(free)),
            Err(_) => free(),
        }
    }
}
