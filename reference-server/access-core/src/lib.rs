//! The access core: everything that decides, and nothing that waits.
//!
//! No socket, file, clock or async runtime enters this crate (its
//! `Cargo.toml` says which crates may, and `tests/run.sh` checks the
//! dependency tree), so the reference server and the simulator's
//! in-process transport share one engine and one sync protocol.
//!
//! # Layout
//!
//! - [`domain`]: ids, places (organizations, sites, buildings, floors,
//!   units, doors, devices), roles and the permission rule, credentials and
//!   holders, schedules, PIN rules, signed QR/BLE tokens, keypad lockout,
//!   decisions.
//! - [`engine`]: the state and its two entry points: `Engine::apply` (every
//!   change, authorized first) and `Engine::validate` (one credential check,
//!   `&self`, `now` as an argument).
//! - [`error`]: the engine's typed errors, each naming the broken rule.
//! - [`protocol`]: the device protocol's wire types (topics, JSON
//!   payloads), depending on the domain only.
//! - [`sync`]: what a device must change (`SyncBatch`), its wire form, and
//!   the sync session every transport drives.
//!
//! The module graph has no cycle: `domain` ← `protocol` ← `sync` ←
//! `engine`.
//!
//! A credential check: `Engine::validate` looks the device up by dense id,
//! checks the keypad lockout, finds the credential (PIN: `(device, pin)`
//! lookup into a 64-byte slot that holds what the common grant needs, so
//! that grant reads no credential row; card: `(site, number)`; QR/BLE:
//! MAC-checked token), then runs the rules (`Engine::evaluate_keypad` from
//! the slot, `Engine::evaluate` otherwise) and takes a use with a
//! compare-and-swap. The big tables ask for transparent huge pages
//! (`huge`).

pub mod domain;
pub mod engine;
pub mod error;
mod huge;
mod pin_index;
pub mod protocol;
pub mod sync;

pub use domain::Presented;
pub use engine::{Check, Command, Engine, EngineConfig};
pub use error::EngineError;
