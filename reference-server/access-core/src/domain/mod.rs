//! The access domain, with no I/O: ids, places, roles, credentials,
//! schedules, PIN rules, signed tokens, lockout and decisions. Nothing here
//! opens a socket or a file or reads a clock; `now` is always an argument.

mod credential;
mod decision;
mod ids;
mod lockout;
mod pin;
mod places;
mod roles;
mod schedule;
mod token;

pub use credential::*;
pub use decision::*;
pub use ids::*;
pub use lockout::*;
pub use pin::*;
pub use places::*;
pub use roles::*;
pub use schedule::*;
pub use token::*;

/// Deserializes a unit variant of an internally tagged enum, refusing any
/// field besides the tag. serde lets unit variants ignore unknown fields
/// even under `deny_unknown_fields` (`{"type": "permanent", "x": 1}` would
/// pass), while every other object of the API refuses them.
pub fn no_fields<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Empty {}
    <Empty as serde::Deserialize>::deserialize(d).map(|_| ())
}
