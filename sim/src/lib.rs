//! fleetsim: a smart-lock device-fleet simulator and load-testing harness.
//!
//! # Layout
//!
//! - [`scenario`]: scenario files (TOML) -> checked [`scenario::Scenario`].
//! - [`run`]: executes a scenario (provisioning, load, oracle), against the
//!   embedded reference server or an external one (`run::target`, the
//!   admin API client behind `--target`).
//! - [`cli`]: the `fleetsim` command line, thin over the modules above.
//! - [`clock`]: the simulator's clock (a scenario start `Timestamp` plus tokio
//!   elapsed time, so virtual and real time look the same to devices) and the
//!   per-device RNG derived from (seed, device id).
//! - [`transport`]: how a device reaches an engine. One enum, three kinds:
//!   in-process (the engine embedded, no network), MQTT (rumqttc, per-device
//!   or multiplexed connections, reconnect with backoff, bounded offline
//!   buffer) and HTTP (reqwest: the validate endpoint and the device sync
//!   routes). Also the event log
//!   that proves every device event was logged exactly once.
//! - [`devices`]: lock, keypad, door sensor and door phone actors (actix),
//!   their behaviour models and documented parameters (`DeviceParams`), and
//!   the fleet builder with `present(device, credential)` entry points.
//!   Device timers sit in one deadline heap per arbiter (`devices::timers`).
//! - [`metrics`]: per-worker HDR recorders, Prometheus registry and exporter,
//!   and the metric catalogue thresholds, reports and docs derive from.
//! - [`report`]: the run report (JSON, HTML, JUnit, HDR logs) and merging.
//! - [`soak`]: the seeded random-scenario campaign (`fleetsim soak`): a
//!   generator of valid scenario files and the invariants every run of
//!   one must keep.
//!
//! A credential check: a workload calls `Fleet::present` -> the device actor
//! (keypad types the digits, door phone reads the QR) -> `transport::Link::check`
//! -> `Engine::validate` (directly, or behind MQTT/HTTP) -> the actor acts on
//! the answer (lock unlocks, motor may block) -> events with per-device
//! sequence numbers -> the engine's event log.

pub mod cli;
pub mod clock;
pub mod devices;
pub mod metrics;
pub mod report;
pub mod run;
pub mod scenario;
pub mod soak;
pub mod transport;
