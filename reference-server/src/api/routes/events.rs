//! The event feed and webhooks: `GET /v1/events` (paged), the SSE stream
//! `GET /v1/events/stream`, and an organization's webhook endpoints with
//! their deliveries. Any member reads events; webhooks are the owner's.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use rand::Rng;

use super::{view, ApiResult, Svc};
use crate::api::paging::{PageRequest, SortKey};
use crate::api::wire::Pagination;
use crate::api::wire::{
    DeliveryPage, Done, EventPage, EventParams, PageParams, StreamParams, WebhookBody,
    WebhookCreated, WebhookListParams, WebhookPage, WebhookView,
};
use crate::api::{ApiError, Caller, Json};
use crate::domain::{Action, DeviceId, OrgId, Ref};
use crate::events::webhooks::{MAX_URL_LEN, MAX_WEBHOOKS_PER_ORG};
use crate::events::{sign, stream, EventType};
use crate::store::{EndpointRow, EventQuery, Order, WebhookWrite, Write};
use actix_web::http::StatusCode;

fn id_param(name: &str, raw: Option<&str>) -> Result<Option<u32>, ApiError> {
    raw.map(|s| {
        s.parse::<u32>()
            .map_err(|_| ApiError::bad_request(name, "a non-negative integer id"))
    })
    .transpose()
}

fn org_param(raw: Option<&str>) -> Result<OrgId, ApiError> {
    id_param("organization_id", raw)?
        .map(OrgId)
        .ok_or_else(|| ApiError::bad_request("organization_id", "required"))
}

fn type_param(raw: Option<&str>) -> Result<Option<EventType>, ApiError> {
    raw.map(|s| {
        EventType::parse(s)
            .ok_or_else(|| ApiError::bad_request("type", "an event type like lock.unlocked"))
    })
    .transpose()
}

/// The organization's events, newest first; filters by `type` and `device_id`.
#[utoipa::path(
    params(EventParams),
    responses(
        (status = 200, description = "A page of events, newest first", body = EventPage),
        (status = 400, description = "A bad parameter (named in `field`)", body = ApiError),
        (status = 404, description = "No organization with this id (or one the caller has no role in)", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[get("/v1/events")]
pub(super) async fn list_events(svc: Svc, caller: Caller, q: web::Query<EventParams>) -> ApiResult {
    let q = q.into_inner();
    let org = org_param(q.organization_id.as_deref())?;
    let event_type = type_param(q.event_type.as_deref())?;
    let device = id_param("device_id", q.device_id.as_deref())?.map(DeviceId);
    let scope = format!("events:{org:?}:{event_type:?}:{device:?}");
    let req = PageRequest::parse(
        svc.cursor_key(),
        scope,
        q.limit.as_deref(),
        q.page_cursor.as_deref(),
    )?;
    view(&svc.engine(), &caller, Ref::Organization(org))?;
    let events = svc
        .store()
        .events(&EventQuery {
            org,
            event_type,
            device,
            order: Order::Before(req.after().map(seq_of)),
            limit: page_read_limit(&req),
        })
        .map_err(crate::service::ServiceError::from)?;
    let page = req.page(events.into_iter().map(|e| (newest_first(e.seq()), e)));
    Ok(HttpResponse::Ok().json(EventPage {
        data: page.data,
        pagination: page.pagination,
    }))
}

/// Server-Sent Events: each event after `Last-Event-ID` (the header; none:
/// from the start of the log), oldest first, then each new one as it is
/// logged. `id:` is the event id, `event:` its type, `data:` the event.
#[utoipa::path(
    params(
        StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "The last event id received: the stream resumes after it"),
    ),
    responses(
        (status = 200, description = "The event stream (never ends by itself)", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad parameter (named in `field`)", body = ApiError),
        (status = 404, description = "No organization with this id (or one the caller has no role in)", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[get("/v1/events/stream")]
pub(super) async fn stream_events(
    svc: Svc,
    caller: Caller,
    req: HttpRequest,
    q: web::Query<StreamParams>,
) -> ApiResult {
    let q = q.into_inner();
    let org = org_param(q.organization_id.as_deref())?;
    let event_type = type_param(q.event_type.as_deref())?;
    let device = id_param("device_id", q.device_id.as_deref())?.map(DeviceId);
    let last = match req.headers().get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID", "an event id"))?,
    };
    view(&svc.engine(), &caller, Ref::Organization(org))?;
    let filter = stream::Filter {
        org,
        event_type,
        device,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(stream::events(svc.into_inner(), filter, last)))
}

fn view_of(w: EndpointRow) -> WebhookView {
    WebhookView {
        webhook_id: w.id,
        organization_id: w.org,
        url: w.url,
        created_at: w.created_at,
    }
}

/// The owner's check on a webhook's organization.
fn manage(svc: &Svc, caller: &Caller, org: OrgId) -> Result<(), ApiError> {
    svc.engine().authorize_on(
        &caller.actor(),
        Ref::Organization(org),
        Action::ManageOrganization,
    )?;
    Ok(())
}

/// The endpoint `id`, if the caller owns its organization; another
/// organization's answers as an unknown one.
fn endpoint(svc: &Svc, caller: &Caller, id: &str) -> Result<EndpointRow, ApiError> {
    let unknown = || ApiError::not_found("webhook", "no webhook with this id");
    let w = svc
        .store()
        .webhook_endpoint(id)
        .map_err(crate::service::ServiceError::from)?
        .ok_or_else(unknown)?;
    svc.engine()
        .resolve(&caller.actor(), Ref::Organization(w.org))
        .map_err(|_| unknown())?;
    manage(svc, caller, w.org)?;
    Ok(w)
}

pub(super) fn check_url(url: &str) -> Result<(), ApiError> {
    let bad = |rule: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "url", rule);
    if url.len() > MAX_URL_LEN {
        return Err(bad("at most 2048 bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("an https:// or http:// URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("an https:// or http:// URL with a host"));
    }
    Ok(())
}

/// Adds a webhook endpoint; answers its signing secret once (owner).
#[utoipa::path(
    request_body = WebhookBody,
    responses(
        (status = 201, description = "Created; the secret is shown once", body = WebhookCreated),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 404, description = "No organization with this id (or one the caller has no role in)", body = ApiError),
        (status = 422, description = "Not an https:// or http:// URL with a host, or the organization has 16 webhooks", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[post("/v1/webhooks")]
pub(super) async fn create_webhook(svc: Svc, caller: Caller, body: Json<WebhookBody>) -> ApiResult {
    let body = body.into_inner();
    manage(&svc, &caller, body.organization_id)?;
    check_url(&body.url)?;
    let live = svc
        .store()
        .webhook_endpoints(body.organization_id)
        .map_err(crate::service::ServiceError::from)?;
    if live.len() >= MAX_WEBHOOKS_PER_ORG {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "organization_id",
            format!("at most {MAX_WEBHOOKS_PER_ORG} webhooks per organization"),
        ));
    }
    let id = format!("wh_{:016x}", rand::rng().random::<u64>());
    let secret = sign::new_secret();
    let at = svc.now();
    svc.store()
        .write(vec![Write::Webhook(WebhookWrite::CreateEndpoint {
            id: id.clone(),
            org: body.organization_id,
            url: body.url.clone(),
            secret: secret.clone(),
            at,
        })])
        .await
        .map_err(crate::service::ServiceError::from)?;
    Ok(HttpResponse::Created().json(WebhookCreated {
        webhook: WebhookView {
            webhook_id: id,
            organization_id: body.organization_id,
            url: body.url,
            created_at: at,
        },
        secret,
    }))
}

/// The organization's webhook endpoints, oldest first (owner; at most 16, one page).
#[utoipa::path(
    params(WebhookListParams),
    responses(
        (status = 200, description = "The endpoints (no secrets)", body = WebhookPage),
        (status = 400, description = "A bad parameter (named in `field`)", body = ApiError),
        (status = 403, description = "Only an owner may", body = ApiError),
        (status = 404, description = "No organization with this id (or one the caller has no role in)", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[get("/v1/webhooks")]
pub(super) async fn list_webhooks(
    svc: Svc,
    caller: Caller,
    q: web::Query<WebhookListParams>,
) -> ApiResult {
    let org = org_param(q.organization_id.as_deref())?;
    manage(&svc, &caller, org)?;
    let data = svc
        .store()
        .webhook_endpoints(org)
        .map_err(crate::service::ServiceError::from)?
        .into_iter()
        .map(view_of)
        .collect();
    Ok(HttpResponse::Ok().json(WebhookPage {
        data,
        pagination: Pagination {
            next_page_cursor: None,
            has_next_page: false,
        },
    }))
}

/// Deletes a webhook endpoint; its pending deliveries are cancelled (owner).
#[utoipa::path(
    params(("webhook" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "Deleted", body = Done),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[delete("/v1/webhooks/{webhook}")]
pub(super) async fn delete_webhook(svc: Svc, caller: Caller, id: web::Path<String>) -> ApiResult {
    let w = endpoint(&svc, &caller, &id)?;
    svc.store()
        .write(vec![Write::Webhook(WebhookWrite::DeleteEndpoint {
            id: w.id,
        })])
        .await
        .map_err(crate::service::ServiceError::from)?;
    Ok(HttpResponse::Ok().json(Done { ok: true }))
}

/// A webhook's deliveries, newest first: status, attempts, the last
/// answer or error, the next attempt (owner).
#[utoipa::path(
    params(("webhook" = String, Path, description = "Webhook id"), PageParams),
    responses(
        (status = 200, description = "A page of deliveries, newest first", body = DeliveryPage),
        (status = 400, description = "A bad parameter (named in `field`)", body = ApiError),
        (status = 403, description = "Only an owner may", body = ApiError),
    ),
    security(("user_token" = [])),
)]
#[get("/v1/webhooks/{webhook}/deliveries")]
pub(super) async fn list_deliveries(
    svc: Svc,
    caller: Caller,
    id: web::Path<String>,
    q: web::Query<PageParams>,
) -> ApiResult {
    let w = endpoint(&svc, &caller, &id)?;
    let req = PageRequest::parse(
        svc.cursor_key(),
        format!("deliveries:{}", w.id),
        q.limit.as_deref(),
        q.page_cursor.as_deref(),
    )?;
    let rows = svc
        .store()
        .deliveries(&w.id, req.after().map(seq_of), page_read_limit(&req))
        .map_err(crate::service::ServiceError::from)?;
    let page = req.page(
        rows.into_iter()
            .map(|d| (newest_first(d.delivery_id.parse().unwrap_or(0)), d)),
    );
    Ok(HttpResponse::Ok().json(DeliveryPage {
        data: page.data,
        pagination: page.pagination,
    }))
}

/// The sort key of a log position in a newest-first list: the paging
/// walks keys upwards, so the newest (highest) id comes first.
fn newest_first(seq: u64) -> SortKey {
    (-(seq.min(i64::MAX as u64) as i64), 0)
}

/// The log position a newest-first sort key stands for.
fn seq_of(k: SortKey) -> u64 {
    k.0.unsigned_abs()
}

/// What a store query reads for one page: one more than the page, so
/// the paging knows whether a next page exists.
fn page_read_limit(req: &PageRequest<'_>) -> u32 {
    u32::try_from(req.limit() + 1).unwrap_or(u32::MAX)
}
