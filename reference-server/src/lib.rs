//! The reference access engine for smart-lock fleets.
//!
//! # Layout
//!
//! - [`domain`]: the I/O-free core: ids, places (organizations, sites,
//!   buildings, floors, units, doors, devices), roles and the permission
//!   rule, credentials and holders, schedules, PIN rules, signed QR/BLE
//!   tokens, keypad lockout, decisions. No sockets, files or clock reads.
//! - [`engine`]: the state and its two entry points: `Engine::apply` (every
//!   change, authorized first) and `Engine::validate` (one credential check,
//!   `&self`, `now` as an argument).
//! - [`error`]: the engine's typed errors, each naming the broken rule.
//! - [`protocol`]: the device protocol's wire types (topics, JSON payloads),
//!   shared with the simulator.
//! - [`service`]: the server's one facade over engine, store, activity log,
//!   health and metrics; the admin API and the device gateway call it. The
//!   only clock read in the server (`Clock`).
//! - [`store`]: durable SQLite (WAL): the command log replayed at start,
//!   token/secret hashes, status reports, the activity log; one writer
//!   thread with group commit.
//! - [`api`]: the admin HTTP API (actix-web, `/v1`), the HTTP validate
//!   endpoint, `/healthz`, `/metrics`, `/openapi.json`.
//! - [`server`]: `run(config, shutdown)`: the binary and the tests start it.
//! - [`activity`], [`health`], [`metrics`], [`auth`]: the activity log's
//!   entries, device uptime and battery, the Prometheus registry, secrets.
//! - [`gateway`]: the MQTT device gateway (checks, events, status, sync,
//!   remote commands) over any broker.
//! - [`broker`]: the embedded MQTT 3.1.1 broker for a self-contained run:
//!   each device confined to its own topics (ACL), held to its limits.
//! - [`limits`]: what one device may cost the server (rate, in-flight,
//!   payload size) and the per-device count of what it had dropped.
//!
//! A credential check: `Engine::validate` looks the device up by dense id,
//! checks the keypad lockout, finds the credential (PIN: `(device, pin)`
//! lookup into a 64-byte slot that holds what the common grant needs, so
//! that grant reads no credential row; card: `(site, number)`; QR/BLE:
//! MAC-checked token), then runs the rules (`Engine::evaluate_keypad` from
//! the slot, `Engine::evaluate` otherwise) and takes a use with a
//! compare-and-swap. The big tables ask for transparent huge pages
//! (`huge`).

pub mod activity;
pub mod api;
pub mod auth;
pub mod broker;
pub mod domain;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod health;
mod huge;
pub mod limits;
pub mod metrics;
mod pin_index;
pub mod protocol;
pub mod server;
pub mod service;
pub mod store;

pub use engine::{Check, Command, Engine, EngineConfig, Presented};
pub use error::EngineError;
