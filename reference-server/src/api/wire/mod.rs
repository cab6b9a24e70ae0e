//! The admin API's wire types: every request and response body of the
//! HTTP API, defined once. The handlers decode into these types and
//! answer with them, `/openapi.json` is generated from them (utoipa), and
//! the simulator's client for an external server (`fleetsim run --target`)
//! builds its requests from them, so the server, its document and its
//! client cannot drift apart.
//!
//! Requests refuse unknown fields (`deny_unknown_fields`; unit variants
//! through `domain::no_fields`, which serde would otherwise let pass).
//! Entities the engine owns (a `Site`, a `Holder`, a `Schedule`) are
//! answered as the domain serializes them; their schemas come from the
//! domain types' own `ToSchema` derives.
//!
//! # Layout
//!
//! | module | bodies of |
//! |---|---|
//! | [`org`] | bootstrap, users, `me`, organizations and members |
//! | [`places`] | sites, buildings, floors, units, doors |
//! | [`devices`] | devices as an admin sees them: creation, lock views, listings, fallback pools, health, activity |
//! | [`access`] | holders, stays and credentials |
//! | [`device`] | the device's own HTTP routes (validate, sync) |

pub mod access;
pub mod device;
pub mod devices;
pub mod org;
pub mod places;

pub use access::*;
pub use device::*;
pub use devices::*;
pub use org::*;
pub use places::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{
    BuildingId, CredentialId, DoorId, FloorId, HolderId, OrgId, SiteId, StayId, UnitId,
};
use crate::engine::Outcome;

/// The answer of a change that made nothing new (a rename, a role, a
/// check-in): `{"ok": true}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Done {
    pub ok: bool,
}

/// One answer type per kind of thing a route creates (`{"site": 3}`),
/// each readable from the engine's `Outcome` of the same kind.
macro_rules! created {
    ($($(#[$doc:meta])* $name:ident { $field:ident: $ty:ty } from $variant:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            pub $field: $ty,
        }

        impl TryFrom<Outcome> for $name {
            type Error = Outcome;
            fn try_from(o: Outcome) -> Result<$name, Outcome> {
                match o {
                    Outcome::$variant($field) => Ok($name { $field }),
                    other => Err(other),
                }
            }
        }
    )*};
}

created! {
    /// A new organization.
    OrganizationCreated { organization: OrgId } from Organization;
    /// A new site.
    SiteCreated { site: SiteId } from Site;
    /// A new building.
    BuildingCreated { building: BuildingId } from Building;
    /// A new floor.
    FloorCreated { floor: FloorId } from Floor;
    /// A new unit.
    UnitCreated { unit: UnitId } from Unit;
    /// A new door.
    DoorCreated { door: DoorId } from Door;
    /// A new holder.
    HolderCreated { holder: HolderId } from Holder;
    /// A new stay.
    StayCreated { stay: StayId } from Stay;
    /// A new credential (a changed PIN is a new credential replacing the old one).
    CredentialCreated { credential: CredentialId } from Credential;
    /// The codes of a fallback pool, in the order of the request's PINs.
    CredentialsCreated { credentials: Vec<CredentialId> } from Credentials;
}
