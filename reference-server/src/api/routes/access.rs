//! Holders, guest stays and credentials.

use actix_web::{delete, get, post, put, web, HttpResponse};

use super::{apply_done, create, view, ApiResult, Svc};
use crate::api::paging::{filter, PageRequest};
use crate::api::wire::{
    code_view, ChangePinBody, CodeSyncStatus, CredentialView, Done, HolderBody, HolderCreated,
    HoldersParams, IssueBody, Issued, Page, PinChanged, Revealed, StayBody, StayCreated,
};
use crate::api::{ApiError, Caller, Json};
use crate::domain::{
    Action, Credential, CredentialId, Holder, HolderId, HolderKind, OrgId, Ref, Secret, StayId,
};
use crate::engine::{Command, Engine, Outcome};

/// Create a holder: member, guest, courier or visitor.
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id")),
    request_body = HolderBody,
    responses(
        (status = 201, description = "Created", body = HolderCreated),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/organizations/{org}/holders")]
pub(super) async fn create_holder(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    body: Json<HolderBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(OrgId(org.into_inner()));
    create::<HolderCreated>(&svc, &caller, cmd).await
}

/// The organization's holders, by id (`?kind=` filters).
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id"), HoldersParams),
    responses((status = 200, description = "A page of holders", body = Page<Holder>)),
    security(("user_token" = [])),
)]
#[get("/v1/organizations/{org}/holders")]
pub(super) async fn list_holders(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    q: web::Query<HoldersParams>,
) -> ApiResult {
    let org = OrgId(org.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Organization(org))?;
    let kind: Option<HolderKind> = filter("kind", q.kind.as_deref())?;
    let scope = format!("holders:{org}:{kind:?}");
    let req = PageRequest::parse(
        svc.cursor_key(),
        scope,
        q.limit.as_deref(),
        q.page_cursor.as_deref(),
    )?;
    let page = req.page(
        e.holders()
            .iter()
            .filter(|h| h.org == org && !e.is_removed(Ref::Holder(h.id)))
            .filter(|h| kind.is_none_or(|k| h.kind == k))
            .map(|h| ((i64::from(h.id.0), 0), h)),
    );
    Ok(HttpResponse::Ok().json(page))
}

/// Disable a holder: none of their codes opens anything.
#[utoipa::path(
    params(("holder" = HolderId, Path, description = "Holder id")),
    responses(
        (status = 200, description = "Disabled", body = Done),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/holders/{holder}/disable")]
pub(super) async fn disable_holder(svc: Svc, caller: Caller, holder: web::Path<u32>) -> ApiResult {
    let holder = HolderId(holder.into_inner());
    let cmd = Command::SetHolderDisabled {
        holder,
        disabled: true,
    };
    apply_done(&svc, &caller, cmd).await
}

/// Enable a holder.
#[utoipa::path(
    params(("holder" = HolderId, Path, description = "Holder id")),
    responses(
        (status = 200, description = "Enabled", body = Done),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/holders/{holder}/enable")]
pub(super) async fn enable_holder(svc: Svc, caller: Caller, holder: web::Path<u32>) -> ApiResult {
    let holder = HolderId(holder.into_inner());
    let cmd = Command::SetHolderDisabled {
        holder,
        disabled: false,
    };
    apply_done(&svc, &caller, cmd).await
}

/// Create a guest stay (check_in_at, check_out_at).
#[utoipa::path(
    params(("holder" = HolderId, Path, description = "Holder id")),
    request_body = StayBody,
    responses(
        (status = 201, description = "Created", body = StayCreated),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/holders/{holder}/stays")]
pub(super) async fn create_stay(
    svc: Svc,
    caller: Caller,
    holder: web::Path<u32>,
    body: Json<StayBody>,
) -> ApiResult {
    let cmd = body.into_inner().command(HolderId(holder.into_inner()));
    create::<StayCreated>(&svc, &caller, cmd).await
}

/// Check a guest in.
#[utoipa::path(
    params(("stay" = StayId, Path, description = "Stay id")),
    responses(
        (status = 200, description = "Checked in", body = Done),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/stays/{stay}/check-in")]
pub(super) async fn check_in(svc: Svc, caller: Caller, stay: web::Path<u32>) -> ApiResult {
    let stay = StayId(stay.into_inner());
    apply_done(&svc, &caller, Command::CheckIn { stay }).await
}

/// Check a guest out.
#[utoipa::path(
    params(("stay" = StayId, Path, description = "Stay id")),
    responses(
        (status = 200, description = "Checked out", body = Done),
        (status = 403, description = "The caller's role does not allow it", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/stays/{stay}/check-out")]
pub(super) async fn check_out(svc: Svc, caller: Caller, stay: web::Path<u32>) -> ApiResult {
    let stay = StayId(stay.into_inner());
    apply_done(&svc, &caller, Command::CheckOut { stay }).await
}

/// Issue a code: PIN (generate; custom or manual for members only, a
/// guest's is generated), card, QR or BLE. A QR or BLE answer carries the
/// token to share.
#[utoipa::path(
    request_body = IssueBody,
    responses(
        (status = 201, description = "Issued", body = Issued),
        (status = 403, description = "The caller may not manage access to these doors", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/credentials")]
pub(super) async fn issue(svc: Svc, caller: Caller, body: Json<IssueBody>) -> ApiResult {
    let applied = svc
        .apply(&caller.actor(), body.into_inner().command())
        .await?;
    let Outcome::Credential(credential) = applied.outcome else {
        return Err(super::unexpected(applied.outcome));
    };
    // QR and BLE keys: the token text is what the holder is sent.
    let token = svc.engine().token(credential);
    Ok(HttpResponse::Created().json(Issued { credential, token }))
}

/// The credential, if the caller may read it (or, `manage`, manage it).
fn credential_access<'e>(
    e: &'e Engine,
    caller: &Caller,
    id: CredentialId,
    manage: bool,
) -> Result<&'e Credential, ApiError> {
    let id = e.code_head(id);
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

/// A code (never its secret).
#[utoipa::path(
    params(("credential" = CredentialId, Path, description = "Credential id")),
    responses((status = 200, description = "The code", body = CredentialView)),
    security(("user_token" = [])),
)]
#[get("/v1/credentials/{credential}")]
pub(super) async fn get_credential(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    let id = CredentialId(c.into_inner());
    let now = svc.now();
    let e = svc.engine();
    let c = credential_access(&e, &caller, id, false)?;
    let previous_pin_on: Vec<_> = e
        .code_versions_on_devices(c.id)
        .iter()
        .flat_map(|old| old.placements.iter().filter(|p| p.state.on_device()))
        .map(|p| p.device)
        .collect();
    Ok(HttpResponse::Ok().json(CredentialView {
        code: code_view(&e, c, None, now),
        placements: c.placements.to_vec(),
        sync_status: CodeSyncStatus::of(c, !previous_pin_on.is_empty()),
        previous_pin_on,
    }))
}

/// Reveal a code's PIN, card number or token (the only route that does).
#[utoipa::path(
    params(("credential" = CredentialId, Path, description = "Credential id")),
    responses(
        (status = 200, description = "The secret; never cached", body = Revealed),
        (status = 403, description = "The caller may not manage access to this code's doors", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/credentials/{credential}/reveal")]
pub(super) async fn reveal(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    let id = CredentialId(c.into_inner());
    let e = svc.engine();
    let c = credential_access(&e, &caller, id, true)?;
    let mut shown = Revealed {
        credential: e.code_id(id),
        pin: None,
        card: None,
        token: None,
    };
    match c.secret {
        Secret::Pin(p) => shown.pin = Some(p.reveal()),
        Secret::Card(n) => shown.card = Some(n.to_string()),
        Secret::Token { .. } => shown.token = e.token(c.id),
    }
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(shown))
}

/// Disable or enable a code.
/// The live version of the code a path names (a changed PIN keeps the
/// code's id; the engine acts on its newest credential).
fn head(svc: &Svc, c: web::Path<u32>) -> CredentialId {
    svc.engine().code_head(CredentialId(c.into_inner()))
}

async fn set_disabled(svc: Svc, caller: Caller, c: web::Path<u32>, disabled: bool) -> ApiResult {
    let credential = head(&svc, c);
    let cmd = Command::SetCredentialDisabled {
        credential,
        disabled,
    };
    apply_done(&svc, &caller, cmd).await
}

/// Disable a code.
#[utoipa::path(
    params(("credential" = CredentialId, Path, description = "Credential id")),
    responses(
        (status = 200, description = "Disabled", body = Done),
        (status = 403, description = "The caller may not manage access to this code's doors", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/credentials/{credential}/disable")]
pub(super) async fn disable_credential(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    set_disabled(svc, caller, c, true).await
}

/// Enable a code.
#[utoipa::path(
    params(("credential" = CredentialId, Path, description = "Credential id")),
    responses(
        (status = 200, description = "Enabled", body = Done),
        (status = 403, description = "The caller may not manage access to this code's doors", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/credentials/{credential}/enable")]
pub(super) async fn enable_credential(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    set_disabled(svc, caller, c, false).await
}

/// Delete (revoke) a code.
#[utoipa::path(
    params(("credential" = CredentialId, Path, description = "Credential id")),
    responses(
        (status = 200, description = "Revoked", body = Done),
        (status = 403, description = "The caller may not manage access to this code's doors", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/credentials/{credential}")]
pub(super) async fn revoke(svc: Svc, caller: Caller, c: web::Path<u32>) -> ApiResult {
    let credential = head(&svc, c);
    apply_done(&svc, &caller, Command::RevokeCredential { credential }).await
}

/// Change a PIN (generate; custom or manual for members only). The code
/// keeps its id and goes `setting` until each lock confirms the new PIN;
/// until then the old PIN still opens that lock.
#[utoipa::path(
    params(("credential" = CredentialId, Path, description = "Credential id")),
    request_body = ChangePinBody,
    responses(
        (status = 200, description = "The code, with its new PIN on the way", body = PinChanged),
        (status = 403, description = "The caller may not manage access to this code's doors", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[put("/v1/credentials/{credential}/pin")]
pub(super) async fn change_pin(
    svc: Svc,
    caller: Caller,
    c: web::Path<u32>,
    body: Json<ChangePinBody>,
) -> ApiResult {
    let current = head(&svc, c);
    let cmd = body.into_inner().command(current);
    let applied = svc.apply(&caller.actor(), cmd).await?;
    let Outcome::Credential(new) = applied.outcome else {
        return Err(super::unexpected(applied.outcome));
    };
    let e = svc.engine();
    let earlier = !e.code_versions_on_devices(new).is_empty();
    let status = e
        .credential(new)
        .map_or(CodeSyncStatus::Setting, |c| CodeSyncStatus::of(c, earlier));
    Ok(HttpResponse::Ok().json(PinChanged {
        credential: e.code_id(new),
        sync_status: status,
    }))
}
