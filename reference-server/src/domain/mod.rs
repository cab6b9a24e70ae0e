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
