//! Dense integer ids. Every entity lives in a `Vec` indexed by its id, so a
//! lookup on the validate path is an index, not a hash (style.md: String keys
//! cost 3-6x an integer key).

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u32);

        impl $name {
            /// Index into the engine's table for this entity.
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        /// In the OpenAPI document: a whole number in the id's range
        /// (`u32`), so a client knows a larger one is no id.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(u32::MAX))
                    .description(Some(concat!("Id (`", $prefix, "N` in logs and topics)")))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(/// An organization (or a personal profile).
    OrgId, "org-");
id_type!(/// A person who can sign in to the admin API.
    UserId, "user-");
id_type!(/// A community, building complex or rental listing, with one time zone.
    SiteId, "site-");
id_type!(/// A building inside a site.
    BuildingId, "bldg-");
id_type!(/// A floor of a building (served by a lift or not).
    FloorId, "floor-");
id_type!(/// An apartment or unit on a floor.
    UnitId, "unit-");
id_type!(/// An access point.
    DoorId, "door-");
id_type!(/// A lock, keypad, door sensor or door phone.
    DeviceId, "dev-");
id_type!(/// Whoever a credential is for: a member, guest, courier or visitor.
    HolderId, "holder-");
id_type!(/// One credential (a PIN, QR key, card, BLE pass or fallback code).
    CredentialId, "cred-");
id_type!(/// A guest stay tied to a reservation.
    StayId, "stay-");

/// An id as a request names it, with its kind: what the engine resolves to
/// the organization it belongs to (`Engine::resolve`). Users are not here:
/// they belong to no organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    Organization(OrgId),
    Site(SiteId),
    Building(BuildingId),
    Floor(FloorId),
    Unit(UnitId),
    Door(DoorId),
    Device(DeviceId),
    Holder(HolderId),
    Credential(CredentialId),
    Stay(StayId),
}

impl Ref {
    /// The kind's name, as errors and API answers say it (`door`).
    pub fn kind(self) -> &'static str {
        match self {
            Ref::Organization(_) => "organization",
            Ref::Site(_) => "site",
            Ref::Building(_) => "building",
            Ref::Floor(_) => "floor",
            Ref::Unit(_) => "unit",
            Ref::Door(_) => "door",
            Ref::Device(_) => "device",
            Ref::Holder(_) => "holder",
            Ref::Credential(_) => "credential",
            Ref::Stay(_) => "stay",
        }
    }

    pub fn id(self) -> u32 {
        match self {
            Ref::Organization(x) => x.0,
            Ref::Site(x) => x.0,
            Ref::Building(x) => x.0,
            Ref::Floor(x) => x.0,
            Ref::Unit(x) => x.0,
            Ref::Door(x) => x.0,
            Ref::Device(x) => x.0,
            Ref::Holder(x) => x.0,
            Ref::Credential(x) => x.0,
            Ref::Stay(x) => x.0,
        }
    }
}
