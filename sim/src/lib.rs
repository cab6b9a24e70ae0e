//! fleetsim: a smart-lock device-fleet simulator and load-testing harness.
//!
//! # Layout
//!
//! - [`scenario`]: scenario files (TOML) -> checked [`scenario::Scenario`].
//! - [`run`]: executes a scenario (provisioning, load, oracle).
//! - [`cli`]: the `fleetsim` command line, thin over the modules above.

pub mod cli;
pub mod run;
pub mod scenario;
