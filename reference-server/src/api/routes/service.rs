//! The server's own routes: liveness, metrics and the OpenAPI document.

use actix_web::{get, HttpResponse};

use super::Svc;

/// The server's own answer to `/healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Healthy {
    /// Always `ok`: the server answers.
    pub status: &'static str,
}

/// Liveness.
#[utoipa::path(responses((status = 200, description = "The server answers", body = Healthy)))]
#[get("/healthz")]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Healthy { status: "ok" })
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
#[get("/metrics")]
pub(super) async fn metrics(svc: Svc) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(svc.metrics().render())
}

/// This document (OpenAPI 3.1).
#[utoipa::path(responses((status = 200, description = "The OpenAPI document", body = Object)))]
#[get("/openapi.json")]
pub(super) async fn openapi_doc() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::api::openapi())
}
