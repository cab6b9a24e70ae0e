//! The reference access engine for smart-lock fleets.
//!
//! # Layout
//!
//! - [`domain`], [`engine`], [`error`], [`protocol`], [`sync`]: the
//!   I/O-free core, from the `access-core` crate (re-exported here under
//!   the paths the server and the simulator use).
//! - [`service`]: the server's one facade over engine, store, activity log,
//!   health and metrics; the admin API and the device gateway call it. The
//!   only clock read in the server (`Clock`).
//! - [`store`]: durable SQLite (WAL): the command log replayed at start,
//!   token/secret hashes, status reports, the activity log, Home
//!   Assistant's PIN slots; one writer
//!   thread with group commit.
//! - [`api`]: the admin HTTP API (actix-web, `/v1`), the HTTP validate
//!   endpoint, `/healthz`, `/metrics`, `/openapi.json`.
//! - [`server`]: `run(config, shutdown)`: the binary and the tests start it.
//! - [`activity`], [`health`], [`device_state`], [`metrics`], [`auth`]: the
//!   activity log's entries, device uptime and battery, lock and door state,
//!   the Prometheus registry, secrets.
//! - [`gateway`]: the MQTT device gateway (checks, events, status, sync,
//!   remote commands) over any broker, and the Home Assistant bridge
//!   (discovery, state, commands, Zigbee2MQTT-style `pin_code` slots kept
//!   by `service`'s `pin_slots`).
//! - [`events`]: the event feed: one ordered, durable log per organization,
//!   served as a paged list, a Server-Sent Events stream and signed
//!   webhooks (a durable delivery queue with retries).
//! - [`broker`]: the embedded MQTT 3.1.1 broker for a self-contained run:
//!   each device confined to its own topics (ACL), held to its limits.
//! - [`mqtt_client`]: how every MQTT client here connects (the gateway,
//!   fleetsim's devices, the benchmarks): `TCP_NODELAY` on each socket.
//! - [`limits`]: what one device may cost the server (rate, in-flight,
//!   payload size) and the per-device count of what it had dropped.
//!
//! A credential check is followed through the code in `access-core`'s
//! crate documentation and in docs/architecture.md.

pub mod activity;
pub mod api;
pub mod auth;
pub mod broker;
pub mod device_state;
pub mod events;
pub mod gateway;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod mqtt_client;
pub mod server;
pub mod service;
pub mod store;

// The I/O-free core, under the paths the server's modules and the
// simulator have always used.
pub use access_core::{domain, engine, error, protocol, sync};
pub use access_core::{Check, Command, Engine, EngineConfig, EngineError, Presented};
