//! The sandbox controls, as Seam's `/devices/simulate/*` but for every
//! device kind: `POST /v1/devices/{device}/simulate/{action}`. Owner only
//! (they make events an app trusts). A connected device is told to act
//! the action out (a `simulate` command, docs/protocol.md) and reports its
//! own events; for one that is not connected the server reports them
//! through the device's intake (`service::sandbox`).

use actix_web::{post, web, HttpResponse};

use super::{ApiResult, Svc};
use crate::api::wire::{BatteryBody, CardTapBody, KeypadCodeEntryBody};
use crate::api::{ApiError, Caller, Json};
use crate::domain::DeviceId;
use crate::protocol::SimAction;
use crate::service::Simulated;

async fn simulate(svc: &Svc, caller: &Caller, device: u32, action: SimAction) -> ApiResult {
    let done = svc
        .simulate(&caller.actor(), DeviceId(device), action)
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// One route per action without a value: its path, its action.
macro_rules! simulate_route {
    ($($(#[$doc:meta])* $handler:ident = $path:literal => $action:expr;)*) => {$(
        $(#[$doc])*
        #[utoipa::path(
            params(("device" = DeviceId, Path, description = "Device id")),
            responses(
                (status = 200, description = "Acted out (`by`: the device or the server)", body = Simulated),
                (status = 403, description = "Only an owner may", body = ApiError),
                (status = 404, description = "No such device", body = ApiError),
                (status = 409, description = "The action does not fit the device's kind", body = ApiError),
            ),
            security(("user_token" = [])),
        )]
        #[post($path)]
        pub(super) async fn $handler(svc: Svc, caller: Caller, device: web::Path<u32>) -> ApiResult {
            simulate(&svc, &caller, device.into_inner(), $action).await
        }
    )*};
}

simulate_route! {
    /// Sandbox: the device comes online (`device.connected`).
    simulate_connect = "/v1/devices/{device}/simulate/connect" => SimAction::Connect;
    /// Sandbox: the device drops offline (`device.disconnected`).
    simulate_disconnect = "/v1/devices/{device}/simulate/disconnect" => SimAction::Disconnect;
    /// Sandbox: the bolt is thrown by hand (`lock.locked`, method `manual`; locks).
    simulate_lock = "/v1/devices/{device}/simulate/lock" => SimAction::Lock;
    /// Sandbox: the bolt is drawn by hand (`lock.unlocked`, method `manual`; locks).
    simulate_unlock = "/v1/devices/{device}/simulate/unlock" => SimAction::Unlock;
    /// Sandbox: the door opens (`device.door_opened`; locks and door sensors).
    simulate_door_open = "/v1/devices/{device}/simulate/door_open" => SimAction::DoorOpen;
    /// Sandbox: the door closes (`device.door_closed`; locks and door sensors).
    simulate_door_close = "/v1/devices/{device}/simulate/door_close" => SimAction::DoorClose;
    /// Sandbox: the door is forced open (`device.door_forced_open`; locks and door sensors).
    simulate_door_forced_open = "/v1/devices/{device}/simulate/door_forced_open" => SimAction::DoorForcedOpen;
    /// Sandbox: the door is left open (`device.door_left_open`; locks and door sensors).
    simulate_door_left_open = "/v1/devices/{device}/simulate/door_left_open" => SimAction::DoorLeftOpen;
    /// Sandbox: the motor blocks (`device.jammed`; locks).
    simulate_jam = "/v1/devices/{device}/simulate/jam" => SimAction::Jam;
}

/// Sandbox: someone types a code on the device's keypad; the engine checks
/// it (`lock.unlocked` with method `keycode`, or `lock.access_denied` with
/// the reason). Locks, keypads and door phones.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    request_body = KeypadCodeEntryBody,
    responses(
        (status = 200, description = "Acted out (`by`: the device or the server)", body = Simulated),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 404, description = "No such device", body = ApiError),
        (status = 409, description = "The action does not fit the device's kind", body = ApiError),
        (status = 422, description = "Not a code of 1 to 12 digits", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/devices/{device}/simulate/keypad_code_entry")]
pub(super) async fn simulate_keypad_code_entry(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<KeypadCodeEntryBody>,
) -> ApiResult {
    let action = body.into_inner().into();
    simulate(&svc, &caller, device.into_inner(), action).await
}

/// Sandbox: someone taps a card; the engine checks it (`lock.unlocked`
/// with method `card`, or `lock.access_denied`). Locks, keypads and door
/// phones.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    request_body = CardTapBody,
    responses(
        (status = 200, description = "Acted out (`by`: the device or the server)", body = Simulated),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 404, description = "No such device", body = ApiError),
        (status = 409, description = "The action does not fit the device's kind", body = ApiError),
        (status = 422, description = "Not a card number", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/devices/{device}/simulate/card_tap")]
pub(super) async fn simulate_card_tap(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<CardTapBody>,
) -> ApiResult {
    let action = body.into_inner().into();
    simulate(&svc, &caller, device.into_inner(), action).await
}

/// Sandbox: the battery reads `level_pct` (the device's health;
/// `device.low_battery` below 20%). Every device kind.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    request_body = BatteryBody,
    responses(
        (status = 200, description = "Acted out (`by`: the device or the server)", body = Simulated),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 404, description = "No such device", body = ApiError),
        (status = 422, description = "Not 0 to 100", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/devices/{device}/simulate/battery")]
pub(super) async fn simulate_battery(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<BatteryBody>,
) -> ApiResult {
    let action = body.into_inner().into();
    simulate(&svc, &caller, device.into_inner(), action).await
}
