//! Organizations, sites, buildings, floors, units, doors and devices.

use jiff::tz::TimeZone;

use super::{BuildingId, DeviceId, DoorId, FloorId, LockoutPolicy, OrgId, SiteId, UnitId};

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub description: String,
    /// A personal profile is an organization of one.
    pub personal: bool,
}

/// Per-site rules a community sets.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct SiteSettings {
    /// 6-digit PINs allowed (4 digits always are).
    pub six_digit_pins: bool,
    /// Residents may pick their own personal PIN.
    pub custom_pins: bool,
    pub lockout: LockoutPolicy,
}

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Site {
    pub id: SiteId,
    pub org: OrgId,
    pub name: String,
    /// IANA name, e.g. "Europe/Berlin".
    pub time_zone: String,
    #[serde(skip)]
    pub tz: TimeZone,
    pub settings: SiteSettings,
}

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Building {
    pub id: BuildingId,
    pub site: SiteId,
    pub name: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Floor {
    pub id: FloorId,
    pub building: BuildingId,
    /// The number shown in the lift.
    pub number: i16,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Unit {
    pub id: UnitId,
    pub floor: FloorId,
    pub name: String,
}

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Door {
    pub id: DoorId,
    pub site: SiteId,
    pub name: String,
    /// Common-area, perimeter door or amenity: no custom PINs here; guest
    /// access to a unit may include these doors.
    pub common_area: bool,
    pub unit: Option<UnitId>,
    /// Floors a lift behind this door phone can take a visitor to.
    pub lift_floors: Vec<FloorId>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Lock,
    Keypad,
    DoorSensor,
    DoorPhone,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Lock => "lock",
            DeviceKind::Keypad => "keypad",
            DeviceKind::DoorSensor => "door_sensor",
            DeviceKind::DoorPhone => "door_phone",
        }
    }
}

/// How a device reaches the cloud, which decides where codes are checked.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    /// Wi-Fi: online checks; codes sync in seconds.
    Wifi,
    /// Bluetooth: decides from its synced local cache; syncs when a phone or
    /// gateway is in range.
    Ble,
}

/// Per-lock guest settings (seeds/004).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct GuestSettings {
    pub guest_can_open_remotely: bool,
    pub prevent_access_until_checked_in: bool,
    pub revoke_access_on_check_out: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub site: SiteId,
    pub door: DoorId,
    pub kind: DeviceKind,
    pub connectivity: Connectivity,
    pub name: String,
    /// Where it is installed, e.g. "Apartment door".
    pub location: String,
    /// A keypad or door sensor is linked to the lock of its door.
    pub linked_to: Option<DeviceId>,
    /// Listings (rentals) this lock is linked to.
    pub listings: Vec<String>,
    pub guest: GuestSettings,
    /// Code slots on the device (Yale: 250). Syncs past this fail `lock_full`.
    pub code_slots: u16,
    /// True when codes live on the device and must be synced before they
    /// work there (locks and keypads). Door phones in server mode ask the
    /// engine and store nothing.
    pub stores_codes: bool,
}

impl Device {
    /// Does this device take keypad PIN entries (and so count wrong tries)?
    pub fn has_keypad(&self) -> bool {
        matches!(
            self.kind,
            DeviceKind::Keypad | DeviceKind::Lock | DeviceKind::DoorPhone
        )
    }
}
