//! Sites, buildings, floors, units and doors (created by an owner).

use actix_web::{get, post, put, web, HttpResponse};

use super::{apply_done, create, view, ApiResult, Svc};
use crate::api::wire::{
    BuildingCreated, Done, DoorBody, DoorCreated, FloorBody, FloorCreated, NameBody, SiteBody,
    SiteCreated, SiteView, UnitCreated,
};
use crate::api::{ApiError, Caller, Json};
use crate::domain::{BuildingId, FloorId, OrgId, Ref, SiteId, SiteSettings};
use crate::engine::Command;

/// Create a site with an IANA time zone and settings (owner).
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id")),
    request_body = SiteBody,
    responses(
        (status = 201, description = "Created", body = SiteCreated),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/organizations/{org}/sites")]
pub(super) async fn create_site(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    body: Json<SiteBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(OrgId(org.into_inner()));
    create::<SiteCreated>(&svc, &caller, cmd).await
}

/// A site, its buildings and doors.
#[utoipa::path(
    params(("site" = SiteId, Path, description = "Site id")),
    responses((status = 200, description = "The site", body = SiteView)),
    security(("user_token" = [])),
)]
#[get("/v1/sites/{site}")]
pub(super) async fn get_site(svc: Svc, caller: Caller, site: web::Path<u32>) -> ApiResult {
    let site = SiteId(site.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Site(site))?;
    Ok(HttpResponse::Ok().json(SiteView {
        site: e.site(site).expect("resolved above").clone(),
        buildings: e
            .buildings()
            .iter()
            .filter(|b| b.site == site)
            .cloned()
            .collect(),
        doors: e
            .doors()
            .iter()
            .filter(|d| d.site == site && !e.is_removed(Ref::Door(d.id)))
            .cloned()
            .collect(),
    }))
}

/// Replace the site settings: six_digit_pins, custom_pins, lockout
/// (owner); one left out takes its default (`PATCH` keeps it instead).
#[utoipa::path(
    params(("site" = SiteId, Path, description = "Site id")),
    request_body = SiteSettings,
    responses(
        (status = 200, description = "Set", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[put("/v1/sites/{site}/settings")]
pub(super) async fn site_settings(
    svc: Svc,
    caller: Caller,
    site: web::Path<u32>,
    body: Json<SiteSettings>,
) -> ApiResult {
    let cmd = Command::UpdateSiteSettings {
        site: SiteId(site.into_inner()),
        settings: body.into_inner(),
    };
    apply_done(&svc, &caller, cmd).await
}

/// Create a building (owner).
#[utoipa::path(
    params(("site" = SiteId, Path, description = "Site id")),
    request_body = NameBody,
    responses(
        (status = 201, description = "Created", body = BuildingCreated),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/sites/{site}/buildings")]
pub(super) async fn create_building(
    svc: Svc,
    caller: Caller,
    site: web::Path<u32>,
    body: Json<NameBody>,
) -> ApiResult {
    let cmd = body.into_inner().building(SiteId(site.into_inner()));
    create::<BuildingCreated>(&svc, &caller, cmd).await
}

/// Create a floor (owner).
#[utoipa::path(
    params(("building" = BuildingId, Path, description = "Building id")),
    request_body = FloorBody,
    responses(
        (status = 201, description = "Created", body = FloorCreated),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/buildings/{building}/floors")]
pub(super) async fn create_floor(
    svc: Svc,
    caller: Caller,
    building: web::Path<u32>,
    body: Json<FloorBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(BuildingId(building.into_inner()));
    create::<FloorCreated>(&svc, &caller, cmd).await
}

/// Create a unit (owner).
#[utoipa::path(
    params(("floor" = FloorId, Path, description = "Floor id")),
    request_body = NameBody,
    responses(
        (status = 201, description = "Created", body = UnitCreated),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/floors/{floor}/units")]
pub(super) async fn create_unit(
    svc: Svc,
    caller: Caller,
    floor: web::Path<u32>,
    body: Json<NameBody>,
) -> ApiResult {
    let cmd = body.into_inner().unit(FloorId(floor.into_inner()));
    create::<UnitCreated>(&svc, &caller, cmd).await
}

/// Create a door: common_area, unit, lift_floors (owner).
#[utoipa::path(
    params(("site" = SiteId, Path, description = "Site id")),
    request_body = DoorBody,
    responses(
        (status = 201, description = "Created", body = DoorCreated),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/sites/{site}/doors")]
pub(super) async fn create_door(
    svc: Svc,
    caller: Caller,
    site: web::Path<u32>,
    body: Json<DoorBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(SiteId(site.into_inner()));
    create::<DoorCreated>(&svc, &caller, cmd).await
}
