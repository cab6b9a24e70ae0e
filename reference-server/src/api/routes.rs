//! The route handlers. Each one authenticates, lets the engine authorize
//! (through `Service::apply` or `Engine::authorize`) and answers JSON.

use actix_web::{web, HttpRequest, HttpResponse};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{bearer, ApiError, Caller, Json};
use crate::activity::{ActivityQuery, MAX_QUERY_LIMIT};
use crate::domain::*;
use crate::engine::{Command, Engine, Issue, PinSpec, SecretSpec};
use crate::protocol::{self, AuthRequest};
use crate::service::{Service, Transport};

type Svc = web::Data<Service>;
type ApiResult = Result<HttpResponse, ApiError>;

pub(super) fn mount(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/openapi.json", web::get().to(openapi_doc))
        .service(
            web::scope("/v1")
                // First: routes are matched in order, and this is the hot one.
                .route("/devices/{device}/validate", web::post().to(validate))
                .route("/devices/{device}/sync", web::get().to(device_sync))
                .route("/devices/{device}/sync", web::post().to(device_sync_ack))
                .route("/bootstrap", web::post().to(bootstrap))
                .route("/me", web::get().to(me))
                .route("/users", web::post().to(create_user))
                .route("/organizations", web::post().to(create_org))
                .route("/organizations/{org}", web::get().to(get_org))
                .route("/organizations/{org}", web::patch().to(rename_org))
                .route(
                    "/organizations/{org}/members/{user}",
                    web::put().to(set_member),
                )
                .route(
                    "/organizations/{org}/members/{user}",
                    web::delete().to(remove_member),
                )
                .route("/organizations/{org}/sites", web::post().to(create_site))
                .route(
                    "/organizations/{org}/holders",
                    web::post().to(create_holder),
                )
                .route("/organizations/{org}/holders", web::get().to(list_holders))
                .route("/sites/{site}", web::get().to(get_site))
                .route("/sites/{site}/settings", web::put().to(site_settings))
                .route("/sites/{site}/buildings", web::post().to(create_building))
                .route("/sites/{site}/doors", web::post().to(create_door))
                .route("/sites/{site}/locks", web::get().to(lock_list))
                .route("/buildings/{building}/floors", web::post().to(create_floor))
                .route("/floors/{floor}/units", web::post().to(create_unit))
                .route("/doors/{door}/devices", web::post().to(create_device))
                .route("/devices/{device}", web::get().to(get_device))
                .route(
                    "/devices/{device}/guest-settings",
                    web::put().to(guest_settings),
                )
                .route("/devices/{device}/listings", web::post().to(link_listing))
                .route(
                    "/devices/{device}/fallback-pool",
                    web::post().to(load_fallback_pool),
                )
                .route(
                    "/devices/{device}/listings/{listing}",
                    web::delete().to(unlink_listing),
                )
                .route("/devices/{device}/open", web::post().to(open_door))
                .route("/devices/{device}/health", web::get().to(device_health))
                .route("/devices/{device}/activity", web::get().to(activity))
                .route("/devices/{device}/codes", web::get().to(codes))
                .route(
                    "/devices/{device}/schedule",
                    web::get().to(schedule_overview),
                )
                .route("/holders/{holder}/disable", web::post().to(disable_holder))
                .route("/holders/{holder}/enable", web::post().to(enable_holder))
                .route("/holders/{holder}/stays", web::post().to(create_stay))
                .route("/stays/{stay}/check-in", web::post().to(check_in))
                .route("/stays/{stay}/check-out", web::post().to(check_out))
                .route("/credentials", web::post().to(issue))
                .route("/credentials/{credential}", web::get().to(get_credential))
                .route("/credentials/{credential}", web::delete().to(revoke))
                .route("/credentials/{credential}/reveal", web::post().to(reveal))
                .route(
                    "/credentials/{credential}/disable",
                    web::post().to(disable_credential),
                )
                .route(
                    "/credentials/{credential}/enable",
                    web::post().to(enable_credential),
                )
                .route("/credentials/{credential}/pin", web::put().to(change_pin)),
        );
}

// ----- helpers --------------------------------------------------------------

async fn apply(svc: &Service, caller: &Caller, cmd: Command) -> ApiResult {
    let applied = svc.apply(&caller.actor(), cmd).await?;
    Ok(match applied.outcome {
        crate::engine::Outcome::Done => HttpResponse::Ok().json(serde_json::json!({"ok": true})),
        o => HttpResponse::Created().json(o),
    })
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

/// `resolved` PINs are the store's own form: a client may not set an origin.
fn no_resolved(spec: &PinSpec) -> Result<(), ApiError> {
    if matches!(spec, PinSpec::Resolved { .. }) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "pin",
            "type must be generate, custom or manual",
        ));
    }
    Ok(())
}

// ----- service routes ---------------------------------------------------------

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn metrics(svc: Svc) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(svc.metrics().render())
}

async fn openapi_doc() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::openapi())
}

// ----- users and organizations -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapBody {
    name: String,
    email: String,
    organization: String,
}

async fn bootstrap(svc: Svc, body: Json<BootstrapBody>) -> ApiResult {
    let b = body.into_inner();
    let made = svc.bootstrap(b.name, b.email, b.organization).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "user": made.user, "organization": made.org, "token": made.token,
    })))
}

async fn me(svc: Svc, caller: Caller) -> ApiResult {
    let e = svc.engine();
    let user = e.user(caller.0).cloned();
    let orgs: Vec<_> = e
        .memberships(caller.0)
        .into_iter()
        .map(|(org, role)| serde_json::json!({"organization": org, "role": role}))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"user": user, "memberships": orgs})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    name: String,
    email: String,
}

/// Any signed-in user may create a user (a person to invite); roles are
/// given separately by an owner.
async fn create_user(svc: Svc, _caller: Caller, body: Json<UserBody>) -> ApiResult {
    let b = body.into_inner();
    let (user, token) = svc.create_user(b.name, b.email).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({"user": user, "token": token})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    personal: bool,
}

impl OrgBody {
    fn command(self, owner: UserId) -> Command {
        Command::CreateOrganization {
            name: self.name,
            description: self.description,
            owner,
            personal: self.personal,
        }
    }
}

async fn create_org(svc: Svc, caller: Caller, body: Json<OrgBody>) -> ApiResult {
    apply(&svc, &caller, body.into_inner().command(caller.0)).await
}

async fn get_org(svc: Svc, caller: Caller, org: web::Path<u32>) -> ApiResult {
    let org = OrgId(org.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Organization(org))?;
    let o = e.organization(org).expect("resolved above");
    let sites: Vec<_> = e.sites().iter().filter(|s| s.org == org).collect();
    let members: Vec<_> = e
        .members(org)
        .into_iter()
        .map(|(u, r)| serde_json::json!({"user": u, "role": r}))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "organization": o, "sites": sites, "members": members,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

async fn rename_org(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    body: Json<RenameBody>,
) -> ApiResult {
    let cmd = body
        .into_inner()
        .command(&svc.engine(), OrgId(org.into_inner()));
    apply(&svc, &caller, cmd).await
}

impl RenameBody {
    /// No description: the organization keeps its own.
    fn command(self, e: &Engine, org: OrgId) -> Command {
        let description = match self.description {
            Some(d) => d,
            None => e
                .organization(org)
                .map(|o| o.description.clone())
                .unwrap_or_default(),
        };
        Command::UpdateOrganization {
            org,
            name: self.name,
            description,
        }
    }
}

async fn set_member(
    svc: Svc,
    caller: Caller,
    path: web::Path<(u32, u32)>,
    role: Json<Role>,
) -> ApiResult {
    let (org, user) = path.into_inner();
    apply(
        &svc,
        &caller,
        Command::SetMember {
            org: OrgId(org),
            user: UserId(user),
            role: role.into_inner(),
        },
    )
    .await
}

async fn remove_member(svc: Svc, caller: Caller, path: web::Path<(u32, u32)>) -> ApiResult {
    let (org, user) = path.into_inner();
    apply(
        &svc,
        &caller,
        Command::RemoveMember {
            org: OrgId(org),
            user: UserId(user),
        },
    )
    .await
}

// ----- places ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteBody {
    name: String,
    time_zone: String,
    #[serde(default)]
    settings: SiteSettings,
}

async fn create_site(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    body: Json<SiteBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(OrgId(org.into_inner()));
    apply(&svc, &caller, cmd).await
}

impl SiteBody {
    fn command(self, org: OrgId) -> Command {
        Command::CreateSite {
            org,
            name: self.name,
            time_zone: self.time_zone,
            settings: self.settings,
        }
    }
}

async fn get_site(svc: Svc, caller: Caller, site: web::Path<u32>) -> ApiResult {
    let site = SiteId(site.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Site(site))?;
    let s = e.site(site).expect("resolved above");
    let buildings: Vec<_> = e.buildings().iter().filter(|b| b.site == site).collect();
    let doors: Vec<_> = e.doors().iter().filter(|d| d.site == site).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "site": s, "buildings": buildings, "doors": doors,
    })))
}

async fn site_settings(
    svc: Svc,
    caller: Caller,
    site: web::Path<u32>,
    body: Json<SiteSettings>,
) -> ApiResult {
    apply(
        &svc,
        &caller,
        Command::UpdateSiteSettings {
            site: SiteId(site.into_inner()),
            settings: body.into_inner(),
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

async fn create_building(
    svc: Svc,
    caller: Caller,
    site: web::Path<u32>,
    body: Json<NameBody>,
) -> ApiResult {
    let cmd = body.into_inner().building(SiteId(site.into_inner()));
    apply(&svc, &caller, cmd).await
}

impl NameBody {
    fn building(self, site: SiteId) -> Command {
        Command::CreateBuilding {
            site,
            name: self.name,
        }
    }

    fn unit(self, floor: FloorId) -> Command {
        Command::CreateUnit {
            floor,
            name: self.name,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FloorBody {
    number: i16,
}

async fn create_floor(
    svc: Svc,
    caller: Caller,
    b: web::Path<u32>,
    body: Json<FloorBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(BuildingId(b.into_inner()));
    apply(&svc, &caller, cmd).await
}

impl FloorBody {
    fn command(self, building: BuildingId) -> Command {
        Command::CreateFloor {
            building,
            number: self.number,
        }
    }
}

async fn create_unit(
    svc: Svc,
    caller: Caller,
    f: web::Path<u32>,
    body: Json<NameBody>,
) -> ApiResult {
    let cmd = body.into_inner().unit(FloorId(f.into_inner()));
    apply(&svc, &caller, cmd).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DoorBody {
    name: String,
    #[serde(default)]
    common_area: bool,
    #[serde(default)]
    unit: Option<UnitId>,
    #[serde(default)]
    lift_floors: Vec<FloorId>,
}

async fn create_door(
    svc: Svc,
    caller: Caller,
    site: web::Path<u32>,
    body: Json<DoorBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(SiteId(site.into_inner()));
    apply(&svc, &caller, cmd).await
}

impl DoorBody {
    fn command(self, site: SiteId) -> Command {
        Command::CreateDoor {
            site,
            name: self.name,
            common_area: self.common_area,
            unit: self.unit,
            lift_floors: self.lift_floors,
        }
    }
}

// ----- devices --------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    kind: DeviceKind,
    #[serde(default = "wifi")]
    connectivity: Connectivity,
    name: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    linked_to: Option<DeviceId>,
    #[serde(default = "default_slots")]
    code_slots: u16,
}

impl DeviceBody {
    fn command(self, door: DoorId) -> Command {
        Command::CreateDevice {
            door,
            kind: self.kind,
            connectivity: self.connectivity,
            name: self.name,
            location: self.location,
            linked_to: self.linked_to,
            code_slots: self.code_slots,
        }
    }
}

fn wifi() -> Connectivity {
    Connectivity::Wifi
}

fn default_slots() -> u16 {
    250
}

async fn create_device(
    svc: Svc,
    caller: Caller,
    door: web::Path<u32>,
    body: Json<DeviceBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(DoorId(door.into_inner()));
    let (device, secret) = svc.create_device(&caller.actor(), cmd).await?;
    let site = svc.engine().device(device).map(|d| d.site);
    Ok(HttpResponse::Created().json(serde_json::json!({
        "device": device,
        "site": site,
        // Shown once: the server keeps only a hash.
        "mqtt": {"username": device.to_string(), "password": secret},
    })))
}

#[derive(Serialize)]
struct Component {
    device: DeviceId,
    kind: DeviceKind,
    name: String,
    online: bool,
}

#[derive(Serialize)]
struct LockView {
    id: DeviceId,
    display_id: String,
    name: String,
    kind: DeviceKind,
    connectivity: Connectivity,
    site: SiteId,
    door: DoorId,
    door_name: String,
    location: String,
    listings: Vec<String>,
    online: bool,
    battery_pct: Option<u8>,
    last_seen: Option<Timestamp>,
    firmware: Option<String>,
    components: Vec<Component>,
    guest_settings: GuestSettings,
    code_slots: u16,
    /// Pool codes on the lock not yet handed to anyone.
    fallback_pool_free: usize,
}

fn lock_view(svc: &Service, e: &Engine, d: &Device) -> LockView {
    let h = svc.health_summary(d.id);
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
        battery_pct: h.battery_pct,
        last_seen: h.last_seen,
        firmware: h.firmware,
        components,
        guest_settings: d.guest,
        code_slots: d.code_slots,
        fallback_pool_free: e.fallback_pool(d.id).len(),
    }
}

async fn lock_list(svc: Svc, caller: Caller, site: web::Path<u32>) -> ApiResult {
    let site = SiteId(site.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Site(site))?;
    let locks: Vec<_> = e
        .devices()
        .filter(|d| d.site == site && d.kind == DeviceKind::Lock)
        .map(|d| lock_view(&svc, &e, d))
        .collect();
    Ok(HttpResponse::Ok().json(locks))
}

async fn get_device(svc: Svc, caller: Caller, device: web::Path<u32>) -> ApiResult {
    let e = svc.engine();
    let d = viewed_device(&e, &caller, device.into_inner())?;
    Ok(HttpResponse::Ok().json(lock_view(&svc, &e, d)))
}

async fn guest_settings(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<GuestSettings>,
) -> ApiResult {
    apply(
        &svc,
        &caller,
        Command::UpdateGuestSettings {
            device: DeviceId(device.into_inner()),
            settings: body.into_inner(),
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListingBody {
    listing: String,
}

async fn link_listing(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<ListingBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(DeviceId(device.into_inner()));
    apply(&svc, &caller, cmd).await
}

impl ListingBody {
    fn command(self, device: DeviceId) -> Command {
        Command::LinkListing {
            device,
            listing: self.listing,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackPoolBody {
    pins: Vec<PinSpec>,
}

/// Pre-loads a lock's fallback pool (codes kept on the lock for when its
/// owner has no network, handed out later). The engine checks the role,
/// the lock's code slots and the PIN rules of each code.
async fn load_fallback_pool(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    body: Json<FallbackPoolBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(DeviceId(device.into_inner()))?;
    apply(&svc, &caller, cmd).await
}

impl FallbackPoolBody {
    fn command(self, device: DeviceId) -> Result<Command, ApiError> {
        for p in &self.pins {
            no_resolved(p)?;
        }
        Ok(Command::LoadFallbackPool {
            device,
            pins: self.pins,
        })
    }
}

async fn unlink_listing(svc: Svc, caller: Caller, path: web::Path<(u32, String)>) -> ApiResult {
    let (device, listing) = path.into_inner();
    apply(
        &svc,
        &caller,
        Command::UnlinkListing {
            device: DeviceId(device),
            listing,
        },
    )
    .await
}

async fn open_door(svc: Svc, caller: Caller, device: web::Path<u32>) -> ApiResult {
    let result = svc
        .open_door(&caller.actor(), DeviceId(device.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"result": result})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthQuery {
    #[serde(default)]
    window_s: Option<u32>,
}

/// Longest uptime window (the battery chart spans 30 days).
const MAX_HEALTH_WINDOW_S: u32 = 90 * 24 * 3600;

async fn device_health(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    q: web::Query<HealthQuery>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    view(&svc.engine(), &caller, Ref::Device(device))?;
    let window_s = q.window_s.unwrap_or(24 * 3600);
    if window_s == 0 || window_s > MAX_HEALTH_WINDOW_S {
        return Err(ApiError::bad_request(
            "window_s",
            format!("1 to {MAX_HEALTH_WINDOW_S} seconds"),
        ));
    }
    Ok(HttpResponse::Ok().json(svc.health_report(device, i64::from(window_s))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityParams {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn activity(
    svc: Svc,
    caller: Caller,
    device: web::Path<u32>,
    q: web::Query<ActivityParams>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    view(&svc.engine(), &caller, Ref::Device(device))?;
    let q = q.into_inner();
    let time = |field: &str, v: &Option<String>| -> Result<Option<Timestamp>, ApiError> {
        v.as_deref()
            .map(|s| {
                s.parse::<Timestamp>().map_err(|_| {
                    ApiError::bad_request(field, "an RFC 3339 time like 2026-03-24T09:00:00Z")
                })
            })
            .transpose()
    };
    let (from, to) = (time("from", &q.from)?, time("to", &q.to)?);
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_QUERY_LIMIT {
        return Err(ApiError::bad_request(
            "limit",
            format!("1 to {MAX_QUERY_LIMIT}"),
        ));
    }
    if let Some(k) = &q.kind {
        if k.is_empty() || k.len() > 40 || !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(ApiError::bad_request(
                "kind",
                "an event name like door_opened",
            ));
        }
    }
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            return Err(ApiError::bad_request("to", "must be after from"));
        }
    }
    let entries = svc.activity(&ActivityQuery {
        device: Some(device),
        from,
        to,
        kind: q.kind,
        limit,
    })?;
    Ok(HttpResponse::Ok().json(entries))
}

#[derive(Serialize)]
struct CodeView {
    id: CredentialId,
    name: String,
    kind: CredentialKind,
    origin: Origin,
    holder: HolderId,
    holder_name: String,
    holder_kind: HolderKind,
    status: ActiveStatus,
    duration: String,
    schedule: Schedule,
    doors: Vec<DoorId>,
    /// On this lock (locks and keypads store codes).
    sync: Option<SyncState>,
    uses: u32,
    created_at: Timestamp,
}

fn code_view(e: &Engine, c: &Credential, device: Option<DeviceId>, now: Timestamp) -> CodeView {
    let holder = e.holder(c.holder);
    let tz = e
        .site(c.site)
        .map(|s| s.tz.clone())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    CodeView {
        id: c.id,
        name: c.name.clone(),
        kind: c.kind,
        origin: c.origin,
        holder: c.holder,
        holder_name: holder.map(|h| h.name.clone()).unwrap_or_default(),
        holder_kind: holder.map(|h| h.kind).unwrap_or(HolderKind::Member),
        status: e.active_status(c, now),
        duration: c.schedule.duration_label(&tz),
        schedule: c.schedule.clone(),
        doors: c.doors.clone(),
        sync: device.and_then(|d| c.placement(d)).map(|p| p.state),
        uses: c.uses.total(),
        created_at: c.created_at,
    }
}

async fn codes(svc: Svc, caller: Caller, device: web::Path<u32>) -> ApiResult {
    let now = svc.now();
    let e = svc.engine();
    let d = viewed_device(&e, &caller, device.into_inner())?;
    let list: Vec<_> = e
        .credentials_at(d.door)
        .filter(|c| !c.unassigned_fallback)
        .map(|c| code_view(&e, c, Some(d.id), now))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn schedule_overview(svc: Svc, caller: Caller, device: web::Path<u32>) -> ApiResult {
    let now = svc.now();
    let e = svc.engine();
    let d = viewed_device(&e, &caller, device.into_inner())?;
    let mut rows: Vec<_> = e
        .credentials_at(d.door)
        .filter(|c| !c.unassigned_fallback && !c.revoked && c.replaced_by.is_none())
        .map(|c| {
            let (start, end) = c.schedule.bounds();
            let v = code_view(&e, c, Some(d.id), now);
            serde_json::json!({
                "credential": c.id, "name": v.name, "holder": v.holder, "holder_name": v.holder_name,
                "holder_kind": v.holder_kind, "schedule": c.schedule.kind_name(), "start": start, "end": end,
                "duration": v.duration, "status": v.status,
            })
        })
        .collect();
    rows.sort_by(|a, b| a["start"].to_string().cmp(&b["start"].to_string()));
    Ok(HttpResponse::Ok().json(rows))
}

/// `POST /v1/devices/{device}/validate`: the device's own secret as Bearer.
async fn validate(
    req: HttpRequest,
    svc: Svc,
    device: web::Path<u32>,
    body: Json<AuthRequest>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    let ok = bearer(&req).is_some_and(|s| svc.authenticate_device(device, s));
    if !ok {
        return Err(ApiError::unauthorized());
    }
    let resp: protocol::AuthResponse = svc.check(device, &body, Transport::Http).await;
    Ok(HttpResponse::Ok().json(resp))
}

/// The device's own secret as Bearer, or 401.
fn device_caller(req: &HttpRequest, svc: &Service, device: DeviceId) -> Result<(), ApiError> {
    if bearer(req).is_some_and(|s| svc.authenticate_device(device, s)) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// `GET /v1/devices/{device}/sync`: the device's pending batch, as one
/// `sync` message (the MQTT one, unsplit: HTTP has no payload limit).
/// For readers that confirm their codes over HTTP (no MQTT session).
async fn device_sync(req: HttpRequest, svc: Svc, device: web::Path<u32>) -> ApiResult {
    let device = DeviceId(device.into_inner());
    device_caller(&req, &svc, device)?;
    let batch = svc.sync_fetch(device).await?;
    let mut push = protocol::SyncPush {
        version: batch.version,
        set: Vec::new(),
        remove: Vec::new(),
    };
    for p in protocol::SyncPush::from_batch(&batch) {
        push.set.extend(p.set);
        push.remove.extend(p.remove);
    }
    // QR and BLE credentials have nothing to store: confirmed by
    // `sync_fetch`, and still listed, so a device may confirm them too.
    let tokens: Vec<CredentialId> = batch
        .set
        .iter()
        .filter(|(_, secret)| protocol::WireSecret::from_secret(secret).is_none())
        .map(|(c, _)| *c)
        .collect();
    let mut body = serde_json::to_value(&push).expect("sync messages serialize");
    body["tokens"] = serde_json::to_value(tokens).expect("ids serialize");
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /v1/devices/{device}/sync`: the device's `sync/ack` for the
/// version it was given; 409 when that version is no longer the pending one.
async fn device_sync_ack(
    req: HttpRequest,
    svc: Svc,
    device: web::Path<u32>,
    body: Json<protocol::SyncAckMsg>,
) -> ApiResult {
    let device = DeviceId(device.into_inner());
    device_caller(&req, &svc, device)?;
    let ack = body.into_inner();
    if !svc.sync_ack(device, &ack).await? {
        let current = svc.pending_sync(device).map(|b| b.version);
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "version",
            format!("the pending version is {}", current.unwrap_or_default()),
        ));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"ok": true})))
}

// ----- holders and stays ----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderBody {
    name: String,
    kind: HolderKind,
    #[serde(default)]
    user: Option<UserId>,
    #[serde(default)]
    floors: FloorScope,
}

async fn create_holder(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    body: Json<HolderBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(OrgId(org.into_inner()));
    apply(&svc, &caller, cmd).await
}

impl HolderBody {
    fn command(self, org: OrgId) -> Command {
        Command::CreateHolder {
            org,
            name: self.name,
            kind: self.kind,
            user: self.user,
            floors: self.floors,
        }
    }
}

async fn list_holders(svc: Svc, caller: Caller, org: web::Path<u32>) -> ApiResult {
    let org = OrgId(org.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Organization(org))?;
    let list: Vec<_> = e.holders().iter().filter(|h| h.org == org).collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn disable_holder(svc: Svc, caller: Caller, h: web::Path<u32>) -> ApiResult {
    let holder = HolderId(h.into_inner());
    apply(
        &svc,
        &caller,
        Command::SetHolderDisabled {
            holder,
            disabled: true,
        },
    )
    .await
}

async fn enable_holder(svc: Svc, caller: Caller, h: web::Path<u32>) -> ApiResult {
    let holder = HolderId(h.into_inner());
    apply(
        &svc,
        &caller,
        Command::SetHolderDisabled {
            holder,
            disabled: false,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StayBody {
    check_in_at: Timestamp,
    check_out_at: Timestamp,
}

async fn create_stay(
    svc: Svc,
    caller: Caller,
    h: web::Path<u32>,
    body: Json<StayBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(HolderId(h.into_inner()));
    apply(&svc, &caller, cmd).await
}

impl StayBody {
    fn command(self, holder: HolderId) -> Command {
        Command::CreateStay {
            holder,
            check_in_at: self.check_in_at,
            check_out_at: self.check_out_at,
        }
    }
}

async fn check_in(svc: Svc, caller: Caller, s: web::Path<u32>) -> ApiResult {
    apply(
        &svc,
        &caller,
        Command::CheckIn {
            stay: StayId(s.into_inner()),
        },
    )
    .await
}

async fn check_out(svc: Svc, caller: Caller, s: web::Path<u32>) -> ApiResult {
    apply(
        &svc,
        &caller,
        Command::CheckOut {
            stay: StayId(s.into_inner()),
        },
    )
    .await
}

// ----- credentials --------------------------------------------------------------

/// `Issue`, strictly: unknown fields are errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    holder: HolderId,
    name: String,
    secret: SecretSpec,
    schedule: Schedule,
    doors: Vec<DoorId>,
    #[serde(default)]
    include_common_areas: bool,
    #[serde(default)]
    floors: FloorScope,
}

impl IssueBody {
    fn command(self) -> Result<Command, ApiError> {
        if let SecretSpec::Pin { pin } = &self.secret {
            no_resolved(pin)?;
        }
        Ok(Command::IssueCredential(Issue {
            holder: self.holder,
            name: self.name,
            secret: self.secret,
            schedule: self.schedule,
            doors: self.doors,
            include_common_areas: self.include_common_areas,
            floors: self.floors,
        }))
    }
}

async fn issue(svc: Svc, caller: Caller, body: Json<IssueBody>) -> ApiResult {
    let cmd = body.into_inner().command()?;
    let applied = svc.apply(&caller.actor(), cmd).await?;
    let crate::engine::Outcome::Credential(id) = applied.outcome else {
        return Ok(HttpResponse::Created().json(applied.outcome));
    };
    // QR and BLE keys: the token text is what the holder is sent.
    let token = svc.engine().token(id);
    let mut body = serde_json::json!({"credential": id});
    if let Some(t) = token {
        body["token"] = t.into();
    }
    Ok(HttpResponse::Created().json(body))
}

/// The credential, if the caller may read it (or, `manage`, manage it).
fn credential_access<'e>(
    e: &'e Engine,
    caller: &Caller,
    id: CredentialId,
    manage: bool,
) -> Result<&'e Credential, ApiError> {
    e.authorize_on(&caller.actor(), Ref::Credential(id), |org| {
        if manage {
            Action::ManageAccess {
                org,
                doors: e
                    .credential(id)
                    .map(|c| c.doors.clone())
                    .unwrap_or_default(),
            }
        } else {
            Action::View(org)
        }
    })?;
    Ok(e.credential(id).expect("resolved above"))
}

async fn get_credential(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    let id = CredentialId(c.into_inner());
    let now = svc.now();
    let e = svc.engine();
    let c = credential_access(&e, &caller, id, false)?;
    let placements: Vec<_> = c.placements.to_vec();
    let mut v = serde_json::to_value(code_view(&e, c, None, now)).expect("views serialize");
    v["placements"] = serde_json::to_value(placements).expect("views serialize");
    v["replaced_by"] = serde_json::to_value(c.replaced_by).expect("views serialize");
    Ok(HttpResponse::Ok().json(v))
}

/// The only route that returns a PIN (or card number, or token text).
async fn reveal(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    let id = CredentialId(c.into_inner());
    let e = svc.engine();
    let c = credential_access(&e, &caller, id, true)?;
    let body = match c.secret {
        Secret::Pin(p) => serde_json::json!({"credential": id, "pin": p.reveal()}),
        Secret::Card(n) => serde_json::json!({"credential": id, "card": n.to_string()}),
        Secret::Token { .. } => serde_json::json!({"credential": id, "token": e.token(id)}),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(body))
}

async fn disable_credential(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    let credential = CredentialId(c.into_inner());
    apply(
        &svc,
        &caller,
        Command::SetCredentialDisabled {
            credential,
            disabled: true,
        },
    )
    .await
}

async fn enable_credential(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    let credential = CredentialId(c.into_inner());
    apply(
        &svc,
        &caller,
        Command::SetCredentialDisabled {
            credential,
            disabled: false,
        },
    )
    .await
}

async fn revoke(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    let credential = CredentialId(c.into_inner());
    apply(&svc, &caller, Command::RevokeCredential { credential }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePinBody {
    pin: PinSpec,
}

async fn change_pin(
    svc: Svc,
    caller: Caller,
    c: web::Path<u32>,
    body: Json<ChangePinBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(CredentialId(c.into_inner()))?;
    apply(&svc, &caller, cmd).await
}

impl ChangePinBody {
    fn command(self, credential: CredentialId) -> Result<Command, ApiError> {
        no_resolved(&self.pin)?;
        Ok(Command::ChangePin {
            credential,
            pin: self.pin,
        })
    }
}

#[cfg(test)]
mod fuzz;
