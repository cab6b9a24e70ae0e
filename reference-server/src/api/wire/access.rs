//! Holders, stays and credentials.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{
    ActiveStatus, CredentialId, CredentialKind, DoorId, FloorScope, HolderId, HolderKind, OrgId,
    Origin, Placement, Schedule, SyncState, UserId,
};
use crate::engine::{Command, Issue, PinSpec, SecretSpec};

/// `POST /v1/organizations/{org}/holders`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HolderBody {
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    pub kind: HolderKind,
    /// A member who also signs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// Floors the holder may reach by lift.
    #[serde(default)]
    pub floors: FloorScope,
}

impl HolderBody {
    pub fn command(self, org: OrgId) -> Command {
        Command::CreateHolder {
            org,
            name: self.name,
            kind: self.kind,
            user: self.user,
            floors: self.floors,
        }
    }
}

/// `POST /v1/holders/{holder}/stays`: a guest's reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StayBody {
    pub check_in_at: Timestamp,
    /// After `check_in_at`.
    pub check_out_at: Timestamp,
}

impl StayBody {
    pub fn command(self, holder: HolderId) -> Command {
        Command::CreateStay {
            holder,
            check_in_at: self.check_in_at,
            check_out_at: self.check_out_at,
        }
    }
}

/// A PIN as a client writes it: 4 or 6 digits (whether 6 are allowed is
/// the site's setting, and the custom-PIN rules are the engine's; both
/// answer 422).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PinText(pub String);

impl utoipa::PartialSchema for PinText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(crate::domain::PIN_PATTERN))
            .into()
    }
}

impl ToSchema for PinText {}

/// A card number: decimal digits as a JSON string, as on the device
/// wire (`protocol::parse_card_number`: 1 to 20 digits, at most
/// `u64::MAX`), written and read as a string. The JSON number of earlier
/// versions is still taken on input up to 2^53, where every JSON reader
/// holds it exactly; a larger card must be sent as a string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CardNumber(pub u64);

/// The largest card number taken in the JSON number form: 2^53.
pub const MAX_CARD_NUMBER_AS_JSON_NUMBER: u64 = 1 << 53;

impl std::fmt::Debug for CardNumber {
    // Card numbers are codes: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardNumber(redacted)")
    }
}

impl Serialize for CardNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CardNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CardNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a card number as a string of decimal digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CardNumber, E> {
                crate::protocol::parse_card_number(v)
                    .map(CardNumber)
                    .map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CardNumber, E> {
                if v > MAX_CARD_NUMBER_AS_JSON_NUMBER {
                    return Err(E::custom(
                        "a card number above 2^53 must be a string (JSON numbers lose digits)",
                    ));
                }
                Ok(CardNumber(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CardNumber, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a card number is not negative"))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl utoipa::PartialSchema for CardNumber {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]{1,20}$"))
            .description(Some(
                "Decimal digits, at most 18446744073709551615 (a larger value answers 422)",
            ));
        let number = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(MAX_CARD_NUMBER_AS_JSON_NUMBER as i64))
            .deprecated(Some(utoipa::openapi::Deprecated::True))
            .description(Some(
                "Deprecated: the number form of earlier versions, up to 2^53",
            ));
        OneOfBuilder::new().item(text).item(number).into()
    }
}

impl ToSchema for CardNumber {}

/// How the PIN of a new code is chosen, as a client may ask: the engine's
/// `PinSpec` without its `resolved` form (the store's record of a PIN
/// already drawn, which no client may set).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PinRequest {
    /// Random, `digits` long (4, or 6 where the site allows); the codes of
    /// guests, couriers and visitors always are.
    Generate {
        #[schema(minimum = 4, maximum = 6, multiple_of = 2)]
        digits: u8,
    },
    /// A resident picks their own (custom PIN rules; members only).
    Custom(PinText),
    /// An admin types it (members only).
    Manual(PinText),
}

impl std::fmt::Debug for PinRequest {
    /// Typed PINs are secrets: never in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinRequest::Generate { digits } => write!(f, "Generate({digits})"),
            PinRequest::Custom(_) => f.write_str("Custom(redacted)"),
            PinRequest::Manual(_) => f.write_str("Manual(redacted)"),
        }
    }
}

impl PinRequest {
    /// The engine's form.
    pub fn spec(self) -> PinSpec {
        match self {
            PinRequest::Generate { digits } => PinSpec::Generate { digits },
            PinRequest::Custom(p) => PinSpec::Custom(p.0),
            PinRequest::Manual(p) => PinSpec::Manual(p.0),
        }
    }

    /// The request for an engine `spec`; `None` for a resolved PIN (a
    /// client sends its value as `manual` or asks for a `generate`d one).
    pub fn from_spec(spec: &PinSpec) -> Option<PinRequest> {
        match spec {
            PinSpec::Generate { digits } => Some(PinRequest::Generate { digits: *digits }),
            PinSpec::Custom(p) => Some(PinRequest::Custom(PinText(p.clone()))),
            PinSpec::Manual(p) => Some(PinRequest::Manual(PinText(p.clone()))),
            PinSpec::Resolved { .. } => None,
        }
    }
}

/// The secret of a new credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRequest {
    Pin {
        pin: PinRequest,
    },
    /// The card number as its reader reads it: a string of digits (a JSON
    /// number up to 2^53 is still taken).
    Card {
        number: CardNumber,
    },
    /// A signed QR key; the answer carries its token text.
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Qr,
    /// A signed BLE pass; the answer carries its token text.
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Ble,
}

impl SecretRequest {
    pub fn spec(self) -> SecretSpec {
        match self {
            SecretRequest::Pin { pin } => SecretSpec::Pin { pin: pin.spec() },
            SecretRequest::Card { number } => SecretSpec::Card { number: number.0 },
            SecretRequest::Qr => SecretSpec::Qr,
            SecretRequest::Ble => SecretSpec::Ble,
        }
    }
}

/// `POST /v1/credentials`: issue a code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    pub holder: HolderId,
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    pub secret: SecretRequest,
    pub schedule: Schedule,
    pub doors: Vec<DoorId>,
    /// Add the site's common-area doors (guest access to a unit includes
    /// the community's perimeter doors).
    #[serde(default)]
    pub include_common_areas: bool,
    #[serde(default)]
    pub floors: FloorScope,
}

impl IssueBody {
    pub fn command(self) -> Command {
        Command::IssueCredential(Issue {
            holder: self.holder,
            name: self.name,
            secret: self.secret.spec(),
            schedule: self.schedule,
            doors: self.doors,
            include_common_areas: self.include_common_areas,
            floors: self.floors,
        })
    }
}

/// A new credential; a QR or BLE key carries the token text to send the
/// holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Issued {
    pub credential: CredentialId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `PUT /v1/credentials/{credential}/pin`: the code gets this PIN and
/// keeps its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePinBody {
    pub pin: PinRequest,
}

impl ChangePinBody {
    pub fn command(self, credential: CredentialId) -> Command {
        Command::ChangePin {
            credential,
            pin: self.pin.spec(),
        }
    }
}

/// One code as the code list shows it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CodeView {
    pub id: CredentialId,
    pub name: String,
    pub kind: CredentialKind,
    pub origin: Origin,
    pub holder: HolderId,
    pub holder_name: String,
    pub holder_kind: HolderKind,
    pub status: ActiveStatus,
    /// "Permanent", "Mar 23 – Mar 25", ... in the site's time zone.
    pub duration: String,
    pub schedule: Schedule,
    pub doors: Vec<DoorId>,
    /// On this lock (locks and keypads store codes); null in a
    /// credential's own view.
    pub sync: Option<SyncState>,
    pub uses: u32,
    pub created_at: Timestamp,
}

/// `GET /v1/credentials/{credential}`: the code, where it is stored and
/// how far its locks are. A changed PIN keeps the code's id: until a lock
/// confirms the new PIN, the old one still opens it (`previous_pin_on`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CredentialView {
    #[serde(flatten)]
    pub code: CodeView,
    pub placements: Vec<Placement>,
    pub sync_status: super::CodeSyncStatus,
    /// Locks where an earlier PIN of this code is still stored (it opens
    /// them until they confirm the change).
    pub previous_pin_on: Vec<crate::domain::DeviceId>,
}

/// One row of a lock's schedule overview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleRow {
    pub credential: CredentialId,
    pub name: String,
    pub holder: HolderId,
    pub holder_name: String,
    pub holder_kind: HolderKind,
    /// The schedule's type (`permanent`, `recurring`, ...).
    pub schedule: String,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub duration: String,
    pub status: ActiveStatus,
}

/// `POST /v1/credentials/{credential}/reveal`: the one answer carrying a
/// code's secret, by its kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Revealed {
    pub credential: CredentialId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Decimal digits, as a string (JSON numbers lose digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `c` as the code list shows it; `device`: the lock whose sync state to
/// show.
pub fn code_view(
    e: &crate::engine::Engine,
    c: &crate::domain::Credential,
    device: Option<crate::domain::DeviceId>,
    now: Timestamp,
) -> CodeView {
    let holder = e.holder(c.holder);
    let tz = e
        .site(c.site)
        .map(|s| s.tz.clone())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    CodeView {
        // The code's own id, which a changed PIN keeps.
        id: e.code_id(c.id),
        name: c.name.clone(),
        kind: c.kind,
        origin: c.origin,
        holder: c.holder,
        holder_name: holder.map(|h| h.name.clone()).unwrap_or_default(),
        holder_kind: holder.map(|h| h.kind).unwrap_or(HolderKind::Member),
        status: e.active_status(c, now),
        duration: c.schedule.duration_label(&tz),
        schedule: c.schedule.clone(),
        doors: c.doors.clone(),
        sync: device.and_then(|d| c.placement(d)).map(|p| p.state),
        uses: c.uses.total(),
        created_at: c.created_at,
    }
}
