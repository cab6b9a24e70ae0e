//! An organization's sites, doors and devices as lists; deleting sites,
//! doors, devices and holders; the partial updates (`PATCH`) of site
//! settings and holders. What a delete refuses (409) is the engine's
//! rule (`engine::removal`).

use actix_web::{delete, get, patch, web, HttpResponse};

use super::devices::{lock_view, page_request};
use super::{apply_done, view, ApiResult, Svc};
use crate::api::paging::{filter, PageRequest};
use crate::api::wire::{
    DevicesParams, Done, DoorsParams, HolderPatchBody, LockView, Page, PageParams,
};
use crate::api::{ApiError, Caller, Json};
use crate::domain::{
    Device, DeviceId, DeviceKind, Door, DoorId, HolderId, OrgId, Ref, Site, SiteId,
};
use crate::engine::{Command, SiteSettingsPatch};

/// The organization's sites, by id.
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id"), PageParams),
    responses((status = 200, description = "A page of sites", body = Page<Site>)),
    security(("user_token" = [])),
)]
#[get("/v1/organizations/{org}/sites")]
pub(super) async fn list_sites(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    q: web::Query<PageParams>,
) -> ApiResult {
    let org = OrgId(org.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Organization(org))?;
    let req = page_request(&svc, format!("sites:{org}"), &q)?;
    let page = req.page(
        e.sites()
            .iter()
            .filter(|s| s.org == org && !e.is_removed(Ref::Site(s.id)))
            .map(|s| ((i64::from(s.id.0), 0), s)),
    );
    Ok(HttpResponse::Ok().json(page))
}

/// The organization's doors, by id (`?site=` filters).
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id"), DoorsParams),
    responses((status = 200, description = "A page of doors", body = Page<Door>)),
    security(("user_token" = [])),
)]
#[get("/v1/organizations/{org}/doors")]
pub(super) async fn list_doors(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    q: web::Query<DoorsParams>,
) -> ApiResult {
    let org = OrgId(org.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Organization(org))?;
    let site: Option<SiteId> = filter("site", q.site.as_deref())?;
    let req = PageRequest::parse(
        svc.cursor_key(),
        format!("doors:{org}:{site:?}"),
        q.limit.as_deref(),
        q.page_cursor.as_deref(),
    )?;
    // `org_of` is the one answer to "is it live, and whose": a door of a
    // deleted site or a deleted door is neither.
    let page = req.page(
        e.doors()
            .iter()
            .filter(|d| e.org_of(Ref::Door(d.id)).ok() == Some(org))
            .filter(|d| site.is_none_or(|s| d.site == s))
            .map(|d| ((i64::from(d.id.0), 0), d)),
    );
    Ok(HttpResponse::Ok().json(page))
}

/// The organization's devices with their state, by id (`?site=`,
/// `?door=`, `?kind=` filter).
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id"), DevicesParams),
    responses((status = 200, description = "A page of devices", body = Page<LockView>)),
    security(("user_token" = [])),
)]
#[get("/v1/organizations/{org}/devices")]
pub(super) async fn list_devices(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    q: web::Query<DevicesParams>,
) -> ApiResult {
    let org = OrgId(org.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Organization(org))?;
    let site: Option<SiteId> = filter("site", q.site.as_deref())?;
    let door: Option<DoorId> = filter("door", q.door.as_deref())?;
    let kind: Option<DeviceKind> = filter("kind", q.kind.as_deref())?;
    let req = PageRequest::parse(
        svc.cursor_key(),
        format!("devices:{org}:{site:?}:{door:?}:{kind:?}"),
        q.limit.as_deref(),
        q.page_cursor.as_deref(),
    )?;
    let wanted = |d: &Device| {
        e.org_of(Ref::Device(d.id)).ok() == Some(org)
            && site.is_none_or(|s| d.site == s)
            && door.is_none_or(|x| d.door == x)
            && kind.is_none_or(|k| d.kind == k)
    };
    let page = req.page(
        e.devices()
            .filter(|d| wanted(d))
            .map(|d| ((i64::from(d.id.0), 0), lock_view(&svc, &e, d))),
    );
    Ok(HttpResponse::Ok().json(page))
}

/// Delete a site without doors (owner); its buildings, floors and units
/// go with it.
#[utoipa::path(
    params(("site" = SiteId, Path, description = "Site id")),
    responses(
        (status = 200, description = "Deleted", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 409, description = "The site still has doors", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/sites/{site}")]
pub(super) async fn delete_site(svc: Svc, caller: Caller, site: web::Path<u32>) -> ApiResult {
    let site = SiteId(site.into_inner());
    apply_done(&svc, &caller, Command::DeleteSite { site }).await
}

/// Delete a door without devices or live codes (owner).
#[utoipa::path(
    params(("door" = DoorId, Path, description = "Door id")),
    responses(
        (status = 200, description = "Deleted", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 409, description = "The door still has devices or live codes", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/doors/{door}")]
pub(super) async fn delete_door(svc: Svc, caller: Caller, door: web::Path<u32>) -> ApiResult {
    let door = DoorId(door.into_inner());
    apply_done(&svc, &caller, Command::DeleteDoor { door }).await
}

/// Delete a device (owner): it can no longer sign in; the codes of its
/// door stay for the door's other devices.
#[utoipa::path(
    params(("device" = DeviceId, Path, description = "Device id")),
    responses(
        (status = 200, description = "Deleted", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 409, description = "Other devices are linked to it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/devices/{device}")]
pub(super) async fn delete_device(svc: Svc, caller: Caller, device: web::Path<u32>) -> ApiResult {
    let device = DeviceId(device.into_inner());
    svc.delete_device(&caller.actor(), device).await?;
    Ok(HttpResponse::Ok().json(Done { ok: true }))
}

/// Delete a holder without live codes.
#[utoipa::path(
    params(("holder" = HolderId, Path, description = "Holder id")),
    responses(
        (status = 200, description = "Deleted", body = Done),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
        (status = 409, description = "The holder still has live codes", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/holders/{holder}")]
pub(super) async fn delete_holder(svc: Svc, caller: Caller, holder: web::Path<u32>) -> ApiResult {
    let holder = HolderId(holder.into_inner());
    apply_done(&svc, &caller, Command::DeleteHolder { holder }).await
}

/// Change some site settings (owner); those left out stay.
#[utoipa::path(
    params(("site" = SiteId, Path, description = "Site id")),
    request_body = SiteSettingsPatch,
    responses(
        (status = 200, description = "Set", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[patch("/v1/sites/{site}/settings")]
pub(super) async fn patch_site_settings(
    svc: Svc,
    caller: Caller,
    site: web::Path<u32>,
    body: Json<SiteSettingsPatch>,
) -> ApiResult {
    let cmd = Command::PatchSiteSettings {
        site: SiteId(site.into_inner()),
        patch: body.into_inner(),
    };
    apply_done(&svc, &caller, cmd).await
}

/// Change a holder's name, floors or disabled flag; those left out stay.
#[utoipa::path(
    params(("holder" = HolderId, Path, description = "Holder id")),
    request_body = HolderPatchBody,
    responses(
        (status = 200, description = "Changed", body = Done),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[patch("/v1/holders/{holder}")]
pub(super) async fn patch_holder(
    svc: Svc,
    caller: Caller,
    holder: web::Path<u32>,
    body: Json<HolderPatchBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(HolderId(holder.into_inner()));
    apply_done(&svc, &caller, cmd).await
}
