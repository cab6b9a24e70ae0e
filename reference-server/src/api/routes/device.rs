//! The device's own routes, authenticated with its secret (the MQTT
//! password it was given when it was created), never a user's token:
//! a credential check and the sync of its codes.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};

use super::{ApiResult, Svc};
use crate::api::wire::{DeviceSync, DeviceSyncQuery, Done};
use crate::api::{bearer, ApiError, Json};
use crate::domain::DeviceId;
use crate::protocol::{AuthRequest, AuthResponse, SyncAckMsg, SyncPush, MAX_PAYLOAD_BYTES};
use crate::service::{Service, Transport};

/// The device's own secret as Bearer, or 401.
fn device_caller(req: &HttpRequest, svc: &Service, device: DeviceId) -> Result<(), ApiError> {
    if bearer(req).is_some_and(|s| svc.authenticate_device(device, s)) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Check a credential (body: `auth/req`; answer: `auth/resp`). A malformed
/// credential is an answer with decision `error`, as over MQTT.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "The device asking")),
    request_body = AuthRequest,
    responses(
        (status = 200, description = "The decision", body = AuthResponse),
        (status = 413, description = "Over the device protocol's 4096-byte payload limit (refused unread)", body = ApiError),
    ),
    security(("device_secret" = [])),
)]
#[post("/v1/devices/{device}/validate")]
pub(super) async fn validate(
    req: HttpRequest,
    svc: Svc,
    device: web::Path<u32>,
    body: Json<AuthRequest, MAX_PAYLOAD_BYTES>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    device_caller(&req, &svc, device)?;
    let resp: AuthResponse = svc.check(device, &body, Transport::Http).await;
    Ok(HttpResponse::Ok().json(resp))
}

/// The device's pending codes, one `sync` message plus the token
/// credentials to confirm (readers without MQTT).
/// With `full=true` (protocol version 2) the device lost its codes: every
/// code it should hold is sent again and counts as not set until acked.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "The device asking"), DeviceSyncQuery),
    responses((status = 200, description = "What the device must store and remove", body = DeviceSync)),
    security(("device_secret" = [])),
)]
#[get("/v1/devices/{device}/sync")]
pub(super) async fn device_sync(
    req: HttpRequest,
    svc: Svc,
    device: web::Path<u32>,
    q: web::Query<DeviceSyncQuery>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    device_caller(&req, &svc, device)?;
    let batch = svc.sync_fetch(device, q.full.unwrap_or(false)).await?;
    // QR and BLE credentials have nothing to store: confirmed by
    // `sync_fetch`, and still listed, so a device may confirm them too.
    Ok(HttpResponse::Ok().json(DeviceSync::new(SyncPush::whole(&batch), batch.tokens())))
}

/// Confirm a sync version (body: `sync/ack`); 409 when that version is no
/// longer the pending one (a change since the fetch: fetch again).
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "The device confirming")),
    request_body = SyncAckMsg,
    responses(
        (status = 200, description = "Confirmed", body = Done),
        (status = 404, description = "A result names no credential of the server", body = ApiError),
        (status = 409, description = "Not the pending version: ask again", body = ApiError),
        (status = 413, description = "Over the device protocol's 4096-byte payload limit (refused unread)", body = ApiError),
    ),
    security(("device_secret" = [])),
)]
#[post("/v1/devices/{device}/sync")]
pub(super) async fn device_sync_ack(
    req: HttpRequest,
    svc: Svc,
    device: web::Path<u32>,
    body: Json<SyncAckMsg, MAX_PAYLOAD_BYTES>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    device_caller(&req, &svc, device)?;
    let ack = body.into_inner();
    if !svc.sync_ack(device, &ack).await? {
        let current = svc.pending_sync(device).map(|b| b.version);
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "version",
            format!("the pending version is {}", current.unwrap_or_default()),
        ));
    }
    Ok(HttpResponse::Ok().json(Done { ok: true }))
}
