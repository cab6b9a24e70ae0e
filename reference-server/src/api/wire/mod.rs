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
//! | [`events`] | the event feed and webhooks |
//! | [`lists`] | list pages and their queries, partial updates (`PATCH`) |
//! | [`simulate`] | the sandbox controls |

pub mod access;
pub mod device;
pub mod devices;
pub mod events;
pub mod lists;
pub mod org;
pub mod places;
pub mod simulate;

pub use access::*;
pub use device::*;
pub use devices::*;
pub use events::*;
pub use lists::*;
pub use org::*;
pub use places::*;
pub use simulate::*;

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
    /// A new credential.
    CredentialCreated { credential: CredentialId } from Credential;
    /// The codes of a fallback pool, in the order of the request's PINs.
    CredentialsCreated { credentials: Vec<CredentialId> } from Credentials;
}

/// The schema of a required name-like text, as `engine::check_name` takes
/// it: 1 to `MAX_NAME_CHARS` characters, not all space, without control
/// characters or bidirectional overrides. Built from the engine's own
/// constants, so the document and the check cannot differ.
pub fn name_schema() -> utoipa::openapi::Object {
    text(true, false)
}

/// An optional text (`engine::check_text` not required): may be empty.
pub fn text_schema() -> utoipa::openapi::Object {
    text(false, false)
}

/// A user's email: a name that holds an `@` (all the engine asks).
pub fn email_schema() -> utoipa::openapi::Object {
    let r = crate::engine::REFUSED_CHAR_CLASS;
    let mut o = text(true, false);
    o.pattern = Some(format!("^[^{r}]*@[^{r}]*$"));
    o
}

/// [`name_schema`], or `null` (left as it is: a `PATCH`'s field).
pub fn optional_name_schema() -> utoipa::openapi::Object {
    text(true, true)
}

/// [`text_schema`], or `null` (left as it is).
pub fn optional_text_schema() -> utoipa::openapi::Object {
    text(false, true)
}

fn text(required: bool, nullable: bool) -> utoipa::openapi::Object {
    use crate::engine::{MAX_NAME_CHARS, REFUSED_CHAR_CLASS as R, SPACE_CHAR_CLASS as S};
    use utoipa::openapi::schema::{SchemaType, Type};
    let pattern = if required {
        format!("^[^{R}]*[^{R}{S}][^{R}]*$")
    } else {
        format!("^[^{R}]*$")
    };
    let ty = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(ty)
        .min_length(required.then_some(1))
        .max_length(Some(MAX_NAME_CHARS))
        .pattern(Some(pattern))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PinPolicy, MAX_WRONG_LIMIT, PIN_PATTERN};
    use crate::engine::{check_name, check_text, MAX_NAME_CHARS};

    /// Does `s` pass the string schema `o` (pattern and length in chars)?
    fn passes(o: &utoipa::openapi::Object, s: &str) -> bool {
        let re = regex::Regex::new(o.pattern.as_deref().unwrap()).unwrap();
        let n = s.chars().count();
        re.is_match(s) && o.min_length.is_none_or(|m| n >= m) && o.max_length.is_none_or(|m| n <= m)
    }

    #[test]
    fn the_documented_text_rules_are_the_engines() {
        let mut samples: Vec<String> = [
            "",
            "a",
            " a ",
            " ",
            "\t",
            "\u{3000}",
            "\u{a0}b",
            "\u{85}",
            "x\u{7}",
            "a\nb",
            "\u{202E}abc",
            "ab\u{2066}",
            "é",
            "東京",
            "\u{9f}",
            "\u{feff}",
            "a@b",
            "@",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [MAX_NAME_CHARS - 1, MAX_NAME_CHARS, MAX_NAME_CHARS + 1] {
            samples.push("a".repeat(n));
            samples.push("é".repeat(n));
        }
        let (name, text, email) = (name_schema(), text_schema(), email_schema());
        for s in &samples {
            assert_eq!(passes(&name, s), check_name("f", s).is_ok(), "name {s:?}");
            assert_eq!(
                passes(&text, s),
                check_text("f", s, false).is_ok(),
                "text {s:?}"
            );
            let engine_email = check_name("f", s).is_ok() && s.contains('@');
            assert_eq!(passes(&email, s), engine_email, "email {s:?}");
        }
    }

    #[test]
    fn the_documented_pin_shape_is_the_engines() {
        let re = regex::Regex::new(PIN_PATTERN).unwrap();
        let six = PinPolicy {
            six_digits_enabled: true,
            custom_pins_enabled: true,
        };
        for len in 0..=8 {
            let pin = "1397245086"[..len].to_string();
            let engine = six.check_custom(&pin, false).is_ok();
            assert_eq!(re.is_match(&pin), engine, "{pin:?}");
        }
        assert!(!re.is_match("12a4") && !re.is_match("1234\n"));
    }

    #[test]
    fn the_documented_lockout_bounds_are_the_engines() {
        let doc: serde_json::Value = serde_json::from_str(&crate::api::openapi::openapi()).unwrap();
        let max_wrong = &doc["components"]["schemas"]["LockoutPolicy"]["properties"]["max_wrong"];
        assert_eq!(
            max_wrong["maximum"],
            u64::from(MAX_WRONG_LIMIT),
            "{max_wrong}"
        );
        assert_eq!(max_wrong["minimum"], 1, "{max_wrong}");
    }
}
