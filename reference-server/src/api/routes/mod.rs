//! The route handlers, by audience and resource. Each one authenticates,
//! lets the engine authorize (through `Service::apply` or
//! `Engine::authorize_on`) and answers one of the `wire` types.
//!
//! Every handler carries its `#[utoipa::path]` and is listed once in
//! [`routes!`], which both mounts it and puts it in the OpenAPI document:
//! a route cannot be served without being documented.
//!
//! | module | routes |
//! |---|---|
//! | [`service`] | `/healthz`, `/metrics`, `/openapi.json` |
//! | [`device`] | the device's own: validate, sync (device secret) |
//! | [`org`] | bootstrap, users, `me`, organizations, members |
//! | [`places`] | sites, buildings, floors, units, doors |
//! | [`devices`] | devices as an admin manages them |
//! | [`access`] | holders, stays, credentials |
//! | [`events`] | the event feed (list, SSE stream), webhooks and their deliveries |
//! | [`lists`] | lists of sites, doors and devices; deletes; `PATCH`es |
//! | [`simulate`] | the sandbox controls (`/v1/devices/{device}/simulate/...`) |

mod access;
mod device;
mod devices;
mod events;
mod lists;
mod org;
mod places;
mod service;
mod simulate;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::wire::Done;
use super::{ApiError, Caller};
use crate::domain::{Action, Device, DeviceId, OrgId, Ref};
use crate::engine::{Command, Engine, Outcome};
use crate::service::Service;

type Svc = web::Data<Service>;
type ApiResult = Result<HttpResponse, ApiError>;

/// Lists every route once: `mount` serves them in this order (actix tries
/// routes in order, so the device's hot validate route comes first) and
/// `ApiDoc` documents them.
macro_rules! routes {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        /// Mounts every route.
        pub(super) fn mount(cfg: &mut web::ServiceConfig) {
            $(cfg.service($module::$handler);)*
        }

        /// The OpenAPI document of every route (`openapi::document` adds
        /// the conventions every operation shares).
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($module::$handler),*))]
        pub(crate) struct ApiDoc;
    };
}

routes![
    device::validate,
    device::device_sync,
    device::device_sync_ack,
    service::healthz,
    service::metrics,
    service::openapi_doc,
    org::bootstrap,
    org::me,
    org::create_user,
    org::create_org,
    org::get_org,
    org::rename_org,
    org::delete_org,
    org::set_member,
    org::remove_member,
    places::create_site,
    places::get_site,
    places::site_settings,
    places::create_building,
    places::create_floor,
    places::create_unit,
    places::create_door,
    devices::create_device,
    devices::lock_list,
    devices::get_device,
    devices::guest_settings,
    devices::link_listing,
    devices::unlink_listing,
    devices::load_fallback_pool,
    devices::open_door,
    devices::device_health,
    devices::activity,
    devices::codes,
    devices::schedule_overview,
    access::create_holder,
    access::list_holders,
    access::disable_holder,
    access::enable_holder,
    access::create_stay,
    access::check_in,
    access::check_out,
    access::issue,
    access::get_credential,
    access::revoke,
    access::reveal,
    access::disable_credential,
    access::enable_credential,
    access::change_pin,
    events::list_events,
    events::stream_events,
    events::create_webhook,
    events::list_webhooks,
    events::delete_webhook,
    events::list_deliveries,
    lists::list_sites,
    lists::list_doors,
    lists::list_devices,
    lists::delete_site,
    lists::delete_door,
    lists::delete_device,
    lists::delete_holder,
    lists::patch_site_settings,
    lists::patch_holder,
    simulate::simulate_connect,
    simulate::simulate_disconnect,
    simulate::simulate_keypad_code_entry,
    simulate::simulate_card_tap,
    simulate::simulate_lock,
    simulate::simulate_unlock,
    simulate::simulate_door_open,
    simulate::simulate_door_close,
    simulate::simulate_door_forced_open,
    simulate::simulate_door_left_open,
    simulate::simulate_jam,
    simulate::simulate_battery,
];

/// Applies a change that makes nothing new: 200 `{"ok": true}`.
async fn apply_done(svc: &Service, caller: &Caller, cmd: Command) -> ApiResult {
    svc.apply(&caller.actor(), cmd).await?;
    Ok(HttpResponse::Ok().json(Done { ok: true }))
}

/// Applies a change that makes one thing: 201 with its id, as `T`.
async fn create<T>(svc: &Service, caller: &Caller, cmd: Command) -> ApiResult
where
    T: TryFrom<Outcome, Error = Outcome> + Serialize,
{
    let applied = svc.apply(&caller.actor(), cmd).await?;
    let made = T::try_from(applied.outcome).map_err(unexpected)?;
    Ok(HttpResponse::Created().json(made))
}

/// The engine made something else than the route's command makes: an
/// engine bug, never the client's.
fn unexpected(o: Outcome) -> ApiError {
    tracing::error!(outcome = ?o, "a command made an unexpected outcome");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "outcome",
        "the server made something unexpected",
    )
}

/// May the caller read what `r` names? Through the engine's one resolver:
/// an id of an organization the caller has no role in answers as an
/// unknown one.
fn view(e: &Engine, caller: &Caller, r: Ref) -> Result<OrgId, ApiError> {
    Ok(e.authorize_on(&caller.actor(), r, Action::View)?)
}

/// The device, if the caller may read it (`view`).
fn viewed_device<'e>(e: &'e Engine, caller: &Caller, device: u32) -> Result<&'e Device, ApiError> {
    let id = DeviceId(device);
    view(e, caller, Ref::Device(id))?;
    Ok(e.device(id).expect("resolved above"))
}

#[cfg(test)]
mod fuzz;
