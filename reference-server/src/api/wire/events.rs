//! Bodies of the event feed and webhook routes.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::lists::Pagination;
use crate::events::Event;
use crate::store::Delivery;

/// Parameters of `GET /v1/events`. Every one is read as text and checked
/// by the route, so a bad one is a 400 naming it.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// The organization whose events to read (any member may).
    #[param(value_type = u32, minimum = 0, required = true)]
    pub organization_id: Option<String>,
    /// Only events of this type, like `lock.unlocked`.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<crate::events::EventType>)]
    pub event_type: Option<String>,
    /// Only events of this device.
    #[param(value_type = Option<u32>, minimum = 0)]
    pub device_id: Option<String>,
    /// Events per page, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// The `next_page_cursor` of the page before.
    pub page_cursor: Option<String>,
}

/// Parameters of `GET /v1/events/stream`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    #[param(value_type = u32, minimum = 0, required = true)]
    pub organization_id: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<crate::events::EventType>)]
    pub event_type: Option<String>,
    #[param(value_type = Option<u32>, minimum = 0)]
    pub device_id: Option<String>,
}

/// A page of events, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub data: Vec<Event>,
    pub pagination: Pagination,
}

/// A new webhook endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    #[schema(value_type = u32)]
    pub organization_id: crate::domain::OrgId,
    /// Where events are POSTed: an `https://` URL (the certificate is
    /// verified against the bundled Mozilla roots and the server's
    /// `--webhook-ca-file`), or a plain `http://` one for development.
    #[schema(pattern = "^https?://[^\\s]+$", max_length = 2048)]
    pub url: String,
}

/// A webhook endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub webhook_id: String,
    #[schema(value_type = u32)]
    pub organization_id: crate::domain::OrgId,
    pub url: String,
    pub created_at: Timestamp,
}

/// A webhook endpoint as created: its signing secret is shown this once.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_...`: verifies `webhook-signature` (Standard Webhooks).
    pub secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookPage {
    pub data: Vec<WebhookView>,
    pub pagination: Pagination,
}

/// Parameters of `GET /v1/webhooks`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookListParams {
    #[param(value_type = u32, minimum = 0, required = true)]
    pub organization_id: Option<String>,
}

/// A page of deliveries, newest first.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<Delivery>,
    pub pagination: Pagination,
}
