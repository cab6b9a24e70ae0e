//! Devices as an admin manages them: creation, the lock list and details,
//! guest settings, listings, fallback pools, remote opening, health,
//! activity, and the codes on a lock.

use actix_web::http::StatusCode;
use actix_web::{delete, get, post, put, web, HttpResponse};
use jiff::Timestamp;

use super::{apply_done, create, view, viewed_device, ApiResult, Svc};
use crate::activity::{ActivityEntry, ActivityQuery, ACTIVITY_KINDS};
use crate::api::paging::{PageRequest, SortKey};
use crate::api::wire::{
    code_view, ActivityParams, CodeView, Component, CredentialsCreated, DeviceBody, DeviceCreated,
    Done, FallbackPoolBody, HealthQuery, ListingBody, LockView, MqttLogin, OpenResult, Page,
    PageParams, ScheduleRow, DEFAULT_HEALTH_WINDOW_S, MAX_HEALTH_WINDOW_S, MAX_KIND_LEN,
};
use crate::api::{ApiError, Caller, Json};
use crate::domain::{Device, DeviceId, DeviceKind, DoorId, GuestSettings, Ref, SiteId};
use crate::engine::{Command, Engine};
use crate::health::HealthReport;
use crate::service::Service;

/// Add a lock, keypad, door sensor or door phone; answers its MQTT
/// credentials once (owner).
#[utoipa::path(
    params(("door" = DoorId, Path, description = "Door id")),
    request_body = DeviceBody,
    responses(
        (status = 201, description = "Created; the password is shown once", body = DeviceCreated),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/doors/{door}/devices")]
pub(super) async fn create_device(
    svc: Svc,
    caller: Caller,
    door: web::Path<u32>,
    body: Json<DeviceBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(DoorId(door.into_inner()));
    let (device, secret) = svc.create_device(&caller.actor(), cmd).await?;
    let site = svc.engine().device(device).map(|d| d.site);
    Ok(HttpResponse::Created().json(DeviceCreated {
        device,
        site,
        // Shown once: the server keeps only a hash.
        mqtt: MqttLogin {
            username: device.to_string(),
            password: secret,
        },
    }))
}

pub(super) fn lock_view(svc: &Service, e: &Engine, d: &Device) -> LockView {
    let h = svc.health_summary(d.id);
    let state = svc.device_state(d.id);
    let components = e
        .devices_at(d.door)
        .iter()
        .filter_map(|id| e.device(*id))
        .filter(|c| c.linked_to == Some(d.id))
        .map(|c| Component {
            device: c.id,
            kind: c.kind,
            name: c.name.clone(),
            online: svc.health_summary(c.id).online,
        })
        .collect();
    LockView {
        id: d.id,
        display_id: d.id.to_string(),
        name: d.name.clone(),
        kind: d.kind,
        connectivity: d.connectivity,
        site: d.site,
        door: d.door,
        door_name: e.door(d.door).map(|x| x.name.clone()).unwrap_or_default(),
        location: d.location.clone(),
        listings: d.listings.clone(),
        online: h.online,
        lock_state: state.lock_state,
        door_state: state.door_state,
        jammed: state.jammed,
        battery_pct: h.battery_pct,
        last_seen: h.last_seen,
        firmware: h.firmware,
        components,
        guest_settings: d.guest,
        code_slots: d.code_slots,
        fallback_pool_free: e.fallback_pool(d.id).len(),
    }
}

/// The lock list: online, lock and door state, battery, components,
/// location, listings; by id.
#[utoipa::path(
    params(("site" = SiteId, Path, description = "Site id"), PageParams),
    responses((status = 200, description = "A page of the site's locks", body = Page<LockView>)),
    security(("user_token" = [])),
)]
#[get("/v1/sites/{site}/locks")]
pub(super) async fn lock_list(
    svc: Svc,
    caller: Caller,
    site: web::Path<u32>,
    q: web::Query<PageParams>,
) -> ApiResult {
    let site = SiteId(site.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Site(site))?;
    let req = page_request(&svc, format!("locks:{site}"), &q)?;
    let page = req.page(
        e.devices()
            .filter(|d| d.site == site && d.kind == DeviceKind::Lock)
            .filter(|d| e.device(d.id).is_some())
            .map(|d| ((i64::from(d.id.0), 0), lock_view(&svc, &e, d))),
    );
    Ok(HttpResponse::Ok().json(page))
}

/// The paging of `q` for the list named `scope`.
pub(super) fn page_request<'s>(
    svc: &'s Service,
    scope: String,
    q: &PageParams,
) -> Result<PageRequest<'s>, ApiError> {
    PageRequest::parse(
        svc.cursor_key(),
        scope,
        q.limit.as_deref(),
        q.page_cursor.as_deref(),
    )
}

/// Lock details.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    responses((status = 200, description = "The device", body = LockView)),
    security(("user_token" = [])),
)]
#[get("/v1/devices/{device}")]
pub(super) async fn get_device(svc: Svc, caller: Caller, device: web::Path<u32>) -> ApiResult {
    let e = svc.engine();
    let d = viewed_device(&e, &caller, device.into_inner())?;
    Ok(HttpResponse::Ok().json(lock_view(&svc, &e, d)))
}

/// Per-lock guest settings.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    request_body = GuestSettings,
    responses(
        (status = 200, description = "Set", body = Done),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[put("/v1/devices/{device}/guest-settings")]
pub(super) async fn guest_settings(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<GuestSettings>,
) -> ApiResult {
    let cmd = Command::UpdateGuestSettings {
        device: DeviceId(device.into_inner()),
        settings: body.into_inner(),
    };
    apply_done(&svc, &caller, cmd).await
}

/// Link a listing (owner).
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    request_body = ListingBody,
    responses(
        (status = 200, description = "Linked", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/devices/{device}/listings")]
pub(super) async fn link_listing(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<ListingBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(DeviceId(device.into_inner()));
    apply_done(&svc, &caller, cmd).await
}

/// Unlink a listing (owner).
#[utoipa::path(
    params(
        ("device" = DeviceId, Path, description = "Device id"),
        ("listing" = String, Path, description = "The listing's name"),
    ),
    responses(
        (status = 200, description = "Unlinked", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/devices/{device}/listings/{listing}")]
pub(super) async fn unlink_listing(
    svc: Svc,
    caller: Caller,
    path: web::Path<(u32, String)>,
) -> ApiResult {
    let (device, listing) = path.into_inner();
    let cmd = Command::UnlinkListing {
        device: DeviceId(device),
        listing,
    };
    apply_done(&svc, &caller, cmd).await
}

/// Pre-load a lock's fallback pool (codes kept on the lock for when its
/// owner has no network, handed out later): at most its code slots; the
/// engine checks the role, the slots and each PIN's rules.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    request_body = FallbackPoolBody,
    responses(
        (status = 201, description = "The pool codes' ids, in order", body = CredentialsCreated),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/devices/{device}/fallback-pool")]
pub(super) async fn load_fallback_pool(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<FallbackPoolBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(DeviceId(device.into_inner()));
    create::<CredentialsCreated>(&svc, &caller, cmd).await
}

/// Open Door remotely: ok, motor_blocked, low_battery or offline.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    responses(
        (status = 200, description = "What the lock answered", body = OpenResult),
        (status = 403, description = "The caller may not open this door", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/devices/{device}/open")]
pub(super) async fn open_door(svc: Svc, caller: Caller, device: web::Path<u32>) -> ApiResult {
    let result = svc
        .open_door(&caller.actor(), DeviceId(device.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(OpenResult { result }))
}

/// Uptime % over window_s and the 30-day battery series.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id"), HealthQuery),
    responses((status = 200, description = "The device's health", body = HealthReport)),
    security(("user_token" = [])),
)]
#[get("/v1/devices/{device}/health")]
pub(super) async fn device_health(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    q: web::Query<HealthQuery>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    view(&svc.engine(), &caller, Ref::Device(device))?;
    let window_s = q.window_s.unwrap_or(DEFAULT_HEALTH_WINDOW_S);
    if window_s == 0 || window_s > MAX_HEALTH_WINDOW_S {
        return Err(ApiError::bad_request(
            "window_s",
            format!("1 to {MAX_HEALTH_WINDOW_S} seconds"),
        ));
    }
    Ok(HttpResponse::Ok().json(svc.health_report(device, i64::from(window_s))))
}

/// An RFC 3339 time from the query, or 400 naming `field`.
fn query_time(field: &str, v: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    v.map(|s| {
        s.parse::<Timestamp>()
            .map_err(|_| ApiError::bad_request(field, "an RFC 3339 time like 2026-03-24T09:00:00Z"))
    })
    .transpose()
}

/// The activity query `q` for `device`, checked: each bad parameter is a
/// 400 naming it. The page (`limit`, `page_cursor`) is the route's.
fn activity_query(device: DeviceId, q: &ActivityParams) -> Result<ActivityQuery, ApiError> {
    let from = query_time("from", q.from.as_deref())?;
    let to = query_time("to", q.to.as_deref())?;
    if let Some(k) = &q.kind {
        if k.len() > MAX_KIND_LEN || !ACTIVITY_KINDS.contains(&k.as_str()) {
            return Err(ApiError::bad_request(
                "kind",
                format!("one of {}", ACTIVITY_KINDS.join(", ")),
            ));
        }
    }
    // Both parse, but together name no time: a rule, not a parse error.
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "to",
                "must be after from",
            ));
        }
    }
    Ok(ActivityQuery {
        device: Some(device),
        from,
        to,
        kind: q.kind.clone(),
        limit: 0,
        before: None,
    })
}

/// Activity log by time range (from, to) and kind, newest first.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id"), ActivityParams),
    responses(
        (status = 200, description = "A page of entries, newest first", body = Page<ActivityEntry>),
        (status = 422, description = "`to` is not after `from`", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[get("/v1/devices/{device}/activity")]
pub(super) async fn activity(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    q: web::Query<ActivityParams>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    view(&svc.engine(), &caller, Ref::Device(device))?;
    let mut query = activity_query(device, &q)?;
    // A cursor belongs to one device's log under one set of filters.
    let scope = format!(
        "activity:{device}:{:?}:{:?}:{:?}",
        query.from, query.to, query.kind
    );
    let req = PageRequest::parse(
        svc.cursor_key(),
        scope,
        q.limit.as_deref(),
        q.page_cursor.as_deref(),
    )?;
    // Newest first: the page walks sort keys upwards, so the key of a log
    // position (time, row id) is its negation.
    query.before = req.after().map(|(at, id)| (-at, -id));
    // One more than the page holds tells whether a next page exists.
    query.limit = u32::try_from(req.limit() + 1).unwrap_or(u32::MAX);
    let rows = svc.activity_keyed(&query)?;
    // A device names the credential version it holds; the API names the
    // code (a changed PIN keeps its id).
    let e = svc.engine();
    let page = req.page(rows.into_iter().map(|((at, id), mut entry)| {
        entry.credential = entry.credential.map(|c| e.code_id(c));
        ((-at, -id), entry)
    }));
    Ok(HttpResponse::Ok().json(page))
}

/// The lock's codes: origin, status, duration, sync state; by id. A
/// changed PIN shows once, as its live version.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id"), PageParams),
    responses((status = 200, description = "A page of the codes at the lock's door", body = Page<CodeView>)),
    security(("user_token" = [])),
)]
#[get("/v1/devices/{device}/codes")]
pub(super) async fn codes(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    q: web::Query<PageParams>,
) -> ApiResult {
    let now = svc.now();
    let e = svc.engine();
    let d = viewed_device(&e, &caller, device.into_inner())?;
    let req = page_request(&svc, format!("codes:{}", d.id), &q)?;
    let mut list: Vec<(SortKey, CodeView)> = e
        .credentials_at(d.door)
        .filter(|c| !c.unassigned_fallback && c.replaced_by.is_none())
        .map(|c| {
            let v = code_view(&e, c, Some(d.id), now);
            ((i64::from(v.id.0), 0), v)
        })
        .collect();
    // By the code's id (a changed PIN's live version is newer).
    list.sort_by_key(|(k, _)| *k);
    Ok(HttpResponse::Ok().json(req.page(list)))
}

/// Schedule overview of the lock's live codes, by start (codes without a
/// start last), then id.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id"), PageParams),
    responses((status = 200, description = "A page of rows, one per live code", body = Page<ScheduleRow>)),
    security(("user_token" = [])),
)]
#[get("/v1/devices/{device}/schedule")]
pub(super) async fn schedule_overview(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    q: web::Query<PageParams>,
) -> ApiResult {
    let now = svc.now();
    let e = svc.engine();
    let d = viewed_device(&e, &caller, device.into_inner())?;
    let req = page_request(&svc, format!("schedule:{}", d.id), &q)?;
    let mut rows: Vec<(SortKey, ScheduleRow)> = e
        .credentials_at(d.door)
        .filter(|c| !c.unassigned_fallback && !c.revoked && c.replaced_by.is_none())
        .map(|c| {
            let (start, end) = c.schedule.bounds();
            let v = code_view(&e, c, Some(d.id), now);
            // Codes without a start sort last.
            let start_ms = start.map_or(i64::MAX, |t| t.as_millisecond());
            let row = ScheduleRow {
                credential: v.id,
                name: v.name,
                holder: v.holder,
                holder_name: v.holder_name,
                holder_kind: v.holder_kind,
                schedule: c.schedule.kind_name().to_string(),
                start,
                end,
                duration: v.duration,
                status: v.status,
            };
            ((start_ms, i64::from(v.id.0)), row)
        })
        .collect();
    rows.sort_by_key(|(k, _)| *k);
    Ok(HttpResponse::Ok().json(req.page(rows)))
}
