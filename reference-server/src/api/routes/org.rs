//! Bootstrap, users, `me`, organizations and their members.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};

use super::{apply_done, create, view, ApiResult, Svc};
use crate::api::wire::{
    BootstrapBody, Bootstrapped, Done, Me, MemberView, MembershipView, OrgBody,
    OrganizationCreated, OrganizationView, RenameBody, UserBody, UserCreated,
};
use crate::api::{ApiError, Caller, Json};
use crate::domain::{OrgId, Ref, Role, UserId};
use crate::engine::Command;

/// Create the first owner and organization (only on an empty server);
/// answers the owner's token.
#[utoipa::path(
    request_body = BootstrapBody,
    responses(
        (status = 201, description = "The owner, the organization and the owner's token (shown once)", body = Bootstrapped),
        (status = 409, description = "The server has its owner already", body = ApiError),
    ),
)]
#[post("/v1/bootstrap")]
pub(super) async fn bootstrap(svc: Svc, body: Json<BootstrapBody>) -> ApiResult {
    let b = body.into_inner();
    let made = svc.bootstrap(b.name, b.email, b.organization).await?;
    Ok(HttpResponse::Created().json(Bootstrapped {
        user: made.user,
        organization: made.org,
        token: made.token,
    }))
}

/// The caller and their roles.
#[utoipa::path(
    responses((status = 200, description = "The caller", body = Me)),
    security(("user_token" = [])),
)]
#[get("/v1/me")]
pub(super) async fn me(svc: Svc, caller: Caller) -> ApiResult {
    let e = svc.engine();
    let memberships = e
        .memberships(caller.0)
        .into_iter()
        .map(|(organization, role)| MembershipView { organization, role })
        .collect();
    Ok(HttpResponse::Ok().json(Me {
        user: e.user(caller.0).cloned(),
        memberships,
    }))
}

/// Create a user to invite; answers their token (shown once). Any
/// signed-in user may; roles are given separately by an owner.
#[utoipa::path(
    request_body = UserBody,
    responses((status = 201, description = "The user and their token", body = UserCreated)),
    security(("user_token" = [])),
)]
#[post("/v1/users")]
pub(super) async fn create_user(svc: Svc, _caller: Caller, body: Json<UserBody>) -> ApiResult {
    let b = body.into_inner();
    let (user, token) = svc.create_user(b.name, b.email).await?;
    Ok(HttpResponse::Created().json(UserCreated { user, token }))
}

/// Create an organization owned by the caller.
#[utoipa::path(
    request_body = OrgBody,
    responses((status = 201, description = "Created", body = OrganizationCreated)),
    security(("user_token" = [])),
)]
#[post("/v1/organizations")]
pub(super) async fn create_org(svc: Svc, caller: Caller, body: Json<OrgBody>) -> ApiResult {
    create::<OrganizationCreated>(&svc, &caller, body.into_inner().command(caller.0)).await
}

/// An organization, its sites and members.
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id")),
    responses((status = 200, description = "The organization", body = OrganizationView)),
    security(("user_token" = [])),
)]
#[get("/v1/organizations/{org}")]
pub(super) async fn get_org(svc: Svc, caller: Caller, org: web::Path<u32>) -> ApiResult {
    let org = OrgId(org.into_inner());
    let e = svc.engine();
    view(&e, &caller, Ref::Organization(org))?;
    let organization = e.organization(org).expect("resolved above").clone();
    let sites = e
        .sites()
        .iter()
        .filter(|s| s.org == org && !e.is_removed(Ref::Site(s.id)))
        .cloned()
        .collect();
    let members = e
        .members(org)
        .into_iter()
        .map(|(user, role)| MemberView { user, role })
        .collect();
    Ok(HttpResponse::Ok().json(OrganizationView {
        organization,
        sites,
        members,
    }))
}

/// Rename an organization (owner).
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id")),
    request_body = RenameBody,
    responses(
        (status = 200, description = "Renamed", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[patch("/v1/organizations/{org}")]
pub(super) async fn rename_org(
    svc: Svc,
    caller: Caller,
    org: web::Path<u32>,
    body: Json<RenameBody>,
) -> ApiResult {
    let cmd = body
        .into_inner()
        .command(&svc.engine(), OrgId(org.into_inner()));
    apply_done(&svc, &caller, cmd).await
}

/// Delete an organization with everything in it (owner): its codes are
/// revoked, its devices (which can no longer sign in), doors, holders and
/// sites deleted, its members' roles there ended. `fleetsim teardown`
/// removes a load test's fleet so.
#[utoipa::path(
    params(("org" = OrgId, Path, description = "Organization id")),
    responses(
        (status = 200, description = "Deleted", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 404, description = "No such organization (or deleted already)", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/organizations/{org}")]
pub(super) async fn delete_org(svc: Svc, caller: Caller, org: web::Path<u32>) -> ApiResult {
    let org = OrgId(org.into_inner());
    svc.delete_organization(&caller.actor(), org).await?;
    Ok(HttpResponse::Ok().json(Done { ok: true }))
}

/// Give a user a role: owner, admin, or door_admin with doors (owner).
#[utoipa::path(
    params(
        ("org" = OrgId, Path, description = "Organization id"),
        ("user" = UserId, Path, description = "User id"),
    ),
    request_body = Role,
    responses(
        (status = 200, description = "The role is set", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[put("/v1/organizations/{org}/members/{user}")]
pub(super) async fn set_member(
    svc: Svc,
    caller: Caller,
    path: web::Path<(u32, u32)>,
    role: Json<Role>,
) -> ApiResult {
    let (org, user) = path.into_inner();
    let cmd = Command::SetMember {
        org: OrgId(org),
        user: UserId(user),
        role: role.into_inner(),
    };
    apply_done(&svc, &caller, cmd).await
}

/// Remove a member (owner).
#[utoipa::path(
    params(
        ("org" = OrgId, Path, description = "Organization id"),
        ("user" = UserId, Path, description = "User id"),
    ),
    responses(
        (status = 200, description = "Removed", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/organizations/{org}/members/{user}")]
pub(super) async fn remove_member(
    svc: Svc,
    caller: Caller,
    path: web::Path<(u32, u32)>,
) -> ApiResult {
    let (org, user) = path.into_inner();
    let cmd = Command::RemoveMember {
        org: OrgId(org),
        user: UserId(user),
    };
    apply_done(&svc, &caller, cmd).await
}
