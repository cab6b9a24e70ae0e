//! Sites, buildings, floors, units and doors.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{
    Building, BuildingId, Door, FloorId, OrgId, Site, SiteId, SiteSettings, UnitId,
};
use crate::engine::Command;

/// `POST /v1/organizations/{org}/sites`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteBody {
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    /// IANA name, e.g. `Europe/Berlin`: schedules are local to it.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    #[serde(default)]
    pub settings: SiteSettings,
}

impl SiteBody {
    pub fn command(self, org: OrgId) -> Command {
        Command::CreateSite {
            org,
            name: self.name,
            time_zone: self.time_zone,
            settings: self.settings,
        }
    }
}

/// `GET /v1/sites/{site}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SiteView {
    pub site: Site,
    pub buildings: Vec<Building>,
    pub doors: Vec<Door>,
}

/// A building or a unit: a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    #[schema(schema_with = super::name_schema)]
    pub name: String,
}

impl NameBody {
    pub fn building(self, site: SiteId) -> Command {
        Command::CreateBuilding {
            site,
            name: self.name,
        }
    }

    pub fn unit(self, floor: FloorId) -> Command {
        Command::CreateUnit {
            floor,
            name: self.name,
        }
    }
}

/// `POST /v1/buildings/{building}/floors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FloorBody {
    /// The number shown in the lift (negative below ground).
    pub number: i16,
}

impl FloorBody {
    pub fn command(self, building: BuildingId) -> Command {
        Command::CreateFloor {
            building,
            number: self.number,
        }
    }
}

/// `POST /v1/sites/{site}/doors`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoorBody {
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    /// Perimeter door or amenity: no custom PINs; guests of a unit may
    /// have it included.
    #[serde(default)]
    pub common_area: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitId>,
    /// Floors the lift behind this door phone serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lift_floors: Vec<FloorId>,
}

impl DoorBody {
    pub fn command(self, site: SiteId) -> Command {
        Command::CreateDoor {
            site,
            name: self.name,
            common_area: self.common_area,
            unit: self.unit,
            lift_floors: self.lift_floors,
        }
    }
}
