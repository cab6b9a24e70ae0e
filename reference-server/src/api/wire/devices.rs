//! Devices as an admin sees them: creation, the lock views, listings,
//! fallback pools, remote opening, health and activity queries.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::PinRequest;
use crate::domain::{Connectivity, DeviceId, DeviceKind, DoorId, GuestSettings, SiteId};
use crate::engine::Command;
use crate::protocol::CommandResult;

/// Code slots of a device when the request names none (Yale: 250).
pub const DEFAULT_CODE_SLOTS: u16 = 250;

/// `POST /v1/doors/{door}/devices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    pub kind: DeviceKind,
    #[serde(default = "wifi")]
    #[schema(default = "wifi")]
    pub connectivity: Connectivity,
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    /// Where it is installed, e.g. "Apartment door".
    #[serde(default)]
    #[schema(schema_with = super::text_schema)]
    pub location: String,
    /// A keypad or door sensor names the lock of its door.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_to: Option<DeviceId>,
    #[serde(default = "default_slots")]
    #[schema(default = 250)]
    pub code_slots: u16,
}

fn wifi() -> Connectivity {
    Connectivity::Wifi
}

fn default_slots() -> u16 {
    DEFAULT_CODE_SLOTS
}

impl DeviceBody {
    pub fn command(self, door: DoorId) -> Command {
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

/// The device's MQTT login; the password is its secret for the HTTP
/// device routes too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MqttLogin {
    /// `dev-N`.
    pub username: String,
    pub password: String,
}

/// A new device: its id, site and login, shown once (the server keeps a hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceCreated {
    pub device: DeviceId,
    pub site: Option<SiteId>,
    pub mqtt: MqttLogin,
}

/// A keypad or sensor linked to a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Component {
    pub device: DeviceId,
    pub kind: DeviceKind,
    pub name: String,
    pub online: bool,
}

/// A lock as the lock list and the lock details show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LockView {
    pub id: DeviceId,
    /// `dev-N`.
    pub display_id: String,
    pub name: String,
    pub kind: DeviceKind,
    pub connectivity: Connectivity,
    pub site: SiteId,
    pub door: DoorId,
    pub door_name: String,
    pub location: String,
    pub listings: Vec<String>,
    pub online: bool,
    /// Locked or unlocked, as the lock last reported; null: never said.
    pub lock_state: Option<crate::device_state::LockState>,
    /// Open or closed, as the device last reported; null: never said.
    pub door_state: Option<crate::device_state::DoorState>,
    /// The motor was blocked and the lock has not moved since.
    pub jammed: bool,
    pub battery_pct: Option<u8>,
    pub last_seen: Option<Timestamp>,
    pub firmware: Option<String>,
    pub components: Vec<Component>,
    pub guest_settings: GuestSettings,
    pub code_slots: u16,
    /// Pool codes on the lock not yet handed to anyone.
    pub fallback_pool_free: usize,
}

/// `POST /v1/devices/{device}/listings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingBody {
    #[schema(schema_with = super::name_schema)]
    pub listing: String,
}

impl ListingBody {
    pub fn command(self, device: DeviceId) -> Command {
        Command::LinkListing {
            device,
            listing: self.listing,
        }
    }
}

/// `POST /v1/devices/{device}/fallback-pool`: codes kept on the lock for
/// when its owner has no network, handed out later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackPoolBody {
    pub pins: Vec<PinRequest>,
}

impl FallbackPoolBody {
    pub fn command(self, device: DeviceId) -> Command {
        Command::LoadFallbackPool {
            device,
            pins: self.pins.into_iter().map(PinRequest::spec).collect(),
        }
    }
}

/// `POST /v1/devices/{device}/open`: what the lock answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OpenResult {
    pub result: CommandResult,
}

/// Longest uptime window (the battery chart spans 30 days).
pub const MAX_HEALTH_WINDOW_S: u32 = 90 * 24 * 3600;
/// Uptime window when the query names none.
pub const DEFAULT_HEALTH_WINDOW_S: u32 = 24 * 3600;

/// `GET /v1/devices/{device}/health?window_s=`.
#[derive(Clone, Copy, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// The uptime window, in seconds (default a day).
    #[serde(default)]
    #[param(minimum = 1, maximum = 7776000)]
    pub window_s: Option<u32>,
}

/// Longest event name a query may filter on.
pub const MAX_KIND_LEN: usize = 40;

/// `GET /v1/devices/{device}/activity?from=&to=&kind=&limit=&page_cursor=`:
/// a list route like the others (`api::paging`), with time and kind filters.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityParams {
    /// Entries at or after this time (RFC 3339).
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// Entries before this time (RFC 3339); after `from`.
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// One event name, like `door_opened` (`activity::ACTIVITY_KINDS`).
    #[serde(default)]
    #[param(
        pattern = "^(unlocked|locked|access_denied|motor_blocked|door_opened|door_closed|door_ajar|door_forced_open|battery_low|keypad_locked_out|code_set|code_set_failed|access_granted|online|offline|remote_open|messages_dropped)$"
    )]
    pub kind: Option<String>,
    /// Most entries in the page: 1 to 500 (default 50), newest first.
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// The `next_page_cursor` of the page before, as it came.
    #[serde(default)]
    pub page_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The activity kinds the document allows are the ones the route
    /// accepts (`activity::ACTIVITY_KINDS`).
    #[test]
    fn documented_activity_kinds_are_the_checked_ones() {
        let doc: serde_json::Value = serde_json::from_str(&crate::api::openapi::openapi()).unwrap();
        let params = &doc["paths"]["/v1/devices/{device}/activity"]["get"]["parameters"];
        let kind = params
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "kind")
            .unwrap();
        let want = format!("^({})$", crate::activity::ACTIVITY_KINDS.join("|"));
        assert_eq!(kind["schema"]["pattern"], want.as_str(), "{kind}");
    }

    /// The bounds written in the document are the ones the route checks.
    #[test]
    fn documented_query_bounds_are_the_checked_ones() {
        assert_eq!(MAX_HEALTH_WINDOW_S, 7_776_000);
        assert_eq!(MAX_KIND_LEN, 40);
    }
}
