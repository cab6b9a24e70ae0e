//! Runs a compiled scenario: provisioning, load phases, faults, the
//! decision oracle, and the verdict.
//!
//! Only the interface exists so far: [`execute`] returns
//! [`RunError::NotImplemented`] until the run engine lands. The CLI already
//! calls it with resolved options, so the engine plugs in here.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::scenario::{Scenario, ThresholdResult, Transport};

/// One slice of the fleet when a run is split over several processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    /// 0-based, below `count`.
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The whole fleet in one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

/// Everything a run needs besides the scenario, resolved from the flags.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunOptions {
    /// The seed in effect (from --seed, the file, or freshly drawn).
    pub seed: u64,
    /// The transport in effect (the file's, or --transport).
    pub transport: Transport,
    /// An external MQTT broker, `mqtt://host:port`; `None`: the embedded one.
    pub broker: Option<String>,
    /// An external HTTP backend, `http://host:port`; `None`: the embedded one.
    pub target: Option<String>,
    /// Where report.json, report.html, junit.xml and HDR logs go.
    pub report_dir: PathBuf,
    /// Serve Prometheus `/metrics` here during the run.
    pub metrics_addr: Option<SocketAddr>,
    pub shard: Shard,
    /// The command that replays this run exactly (printed and reported).
    pub reproduce: String,
}

/// What a finished run found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunOutcome {
    pub thresholds: Vec<ThresholdResult>,
    /// True when every threshold passed.
    pub passed: bool,
    pub report_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "the run engine is not implemented yet: scenario `{scenario}` was validated but cannot run"
    )]
    NotImplemented { scenario: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot reach {what} at {addr}: {reason}")]
    Unreachable {
        what: &'static str,
        addr: String,
        reason: String,
    },
}

/// Runs `scenario` with `opts`.
pub fn execute(scenario: &Scenario, _opts: &RunOptions) -> Result<RunOutcome, RunError> {
    Err(RunError::NotImplemented {
        scenario: scenario.name.clone(),
    })
}
