//! Runs a compiled scenario: provisioning, load phases, the decision
//! oracle, and the verdict.
//!
//! - [`provision`]: the fleet and its credentials in the engine, and the
//!   truth table the oracle judges by.
//! - [`oracle`]: the independent model of what every check must answer.
//! - [`load`]: the open and closed load models driving the devices.
//! - [`verdict`]: the threshold metrics, the report directory, `merge`.
//! - [`remote`]: the reference server started in-process for the `http`
//!   and `mqtt` transports, provisioned by replaying the local engine's
//!   commands through its service.
//! - [`target`]: an external reference server (`--target`), provisioned
//!   through its admin API with every id translated.
//! - [`fleet_manifest`], [`shared_fleet`]: one fleet provisioned once on a
//!   shared server (`fleetsim provision`), driven by several workers
//!   (`run --fleet`), removed by `fleetsim teardown`.
//! - [`platform`]: the system under test as the workloads reach it (the
//!   run's engine, the embedded server or the external one): every
//!   difference a workload would otherwise branch on.
//!
//! Clocks: `clock = "real"` runs the devices on one arbiter per core and
//! the load generator on the system thread; `clock = "virtual"` runs all of
//! it on a paused current-thread runtime, where tokio time jumps to the next
//! timer, so a 30-day scenario takes seconds and the same seed gives the
//! same numbers. The engine's `now` is the scenario's start plus tokio's
//! elapsed time in both.

pub mod fleet_manifest;
pub mod load;
pub mod oracle;
pub mod platform;
pub mod provision;
pub mod remote;
pub mod shared_fleet;
pub mod target;
pub mod verdict;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::scenario::{Clock, Scenario, ThresholdResult, Transport};

pub use verdict::{merge_dirs, MergeOutcome};

/// One slice of the fleet when a run is split over several processes.
/// Sites are split: shard `i` of `n` runs the sites whose 0-based index is
/// `i` modulo `n` (every shard provisions the whole fleet, so ids and
/// secrets agree, and each site's arrivals come from its own seeded stream,
/// so the shards together make exactly the whole run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    /// 0-based, below `count`.
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The whole fleet in one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Does this shard run site `site` (0-based)?
    pub fn runs_site(&self, site: u32) -> bool {
        site % self.count.max(1) == self.index
    }
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
    /// Names the run in its report; the shards of one run share it, so
    /// `merge` can tell one run's shards from another's (see [`run_id`]).
    pub run_id: String,
    /// The command that replays this run exactly (printed and reported).
    pub reproduce: String,
    /// A fleet provisioned already on the target (`--fleet`): nothing is
    /// provisioned there; never serialized (the manifest holds secrets).
    #[serde(skip)]
    pub fleet: Option<fleet_manifest::FleetRun>,
}

/// The id of a run of `scenario` with `seed`: a hash of the resolved
/// scenario (every default and flag applied, the file's path left out, so
/// shards started from different directories agree) and the seed.
pub fn run_id(scenario: &Scenario, seed: u64) -> String {
    let mut v = serde_json::to_value(scenario).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("file");
    }
    let mut h = blake3::Hasher::new();
    h.update(b"fleetsim run id");
    h.update(v.to_string().as_bytes());
    h.update(&seed.to_le_bytes());
    h.finalize().to_hex()[..16].to_string()
}

/// What a finished run found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunOutcome {
    pub thresholds: Vec<ThresholdResult>,
    /// True when every threshold passed.
    pub passed: bool,
    pub report_dir: PathBuf,
    /// The end-of-run table (operations, decisions, thresholds).
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "the run engine is not implemented yet: scenario `{scenario}` was validated but cannot run"
    )]
    NotImplemented { scenario: String },
    /// The target server (--target) answered an admin or device route
    /// with an error.
    #[error("the target server (--target) refused {route}: {status} {message}")]
    Target {
        route: String,
        status: u16,
        message: String,
    },
    /// The fleet manifest (`--fleet`) does not fit the run.
    #[error("fleet manifest: {0}")]
    Fleet(String),
    /// The run needs a change the target's admin API cannot make.
    #[error("cannot provision the target server (--target): {0}")]
    TargetUnsupported(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot reach {what} at {addr}: {reason}")]
    Unreachable {
        what: &'static str,
        addr: String,
        reason: String,
    },
    #[error("{0}")]
    Provision(#[from] provision::ProvisionError),
    #[error("the actor system failed: {0}")]
    Runtime(String),
    #[error("report: {0}")]
    Report(#[from] crate::report::ReportError),
    /// Found before the load: the report directory cannot take the report.
    #[error("cannot write the report directory: {0}")]
    ReportDir(crate::report::ReportError),
    #[error("cannot serve /metrics: {0}")]
    Metrics(#[from] crate::metrics::ExporterError),
    #[error(
        "the devices did not receive their codes within {waited_s} s ({pending} still pending)"
    )]
    SyncTimeout { waited_s: u64, pending: usize },
    #[error(
        "the devices' connections were not ready within {waited_s} s ({connections} devices not linked, or connections down or not subscribed)"
    )]
    LinksNotReady { waited_s: u64, connections: usize },
}

/// Where reports go when no directory is given.
pub const REPORTS_DIR: &str = "reports";
/// Longest slug of a scenario name in a report directory's name.
const MAX_SLUG_LEN: usize = 64;

/// The file-name form of a scenario name: ASCII letters (lowercased),
/// digits, `-` and `_` are kept, every other run of characters (`/`, `.`,
/// spaces, anything not ASCII) becomes one `-`, leading and trailing `-`
/// are dropped, and the result is cut to 64 characters; `scenario` if
/// nothing is left. A name can then never leave [`REPORTS_DIR`] nor make
/// a hidden directory: `../../escaped` becomes `escaped`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(MAX_SLUG_LEN).collect();
    out.truncate(out.trim_end_matches('-').len());
    if out.is_empty() {
        "scenario".to_string()
    } else {
        out
    }
}

/// The report directory of a run given none: `reports/<slug>-<seed>`.
pub fn default_report_dir(scenario_name: &str, seed: u64) -> PathBuf {
    Path::new(REPORTS_DIR).join(format!("{}-{seed}", slug(scenario_name)))
}

/// Runs `scenario` with `opts`. The report directory is created and
/// checked first: a run that could not save its report does no load.
pub fn execute(scenario: &Scenario, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    crate::report::prepare_dir(&opts.report_dir, &[verdict::ORACLE_FILE])
        .map_err(RunError::ReportDir)?;
    let measured = match scenario.clock {
        Clock::Virtual => {
            let sys = actix_rt::System::with_tokio_rt(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
                    .expect("a current-thread tokio runtime builds")
            });
            sys.block_on(load::run(scenario, opts, 0))
        }
        Clock::Real => {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 8);
            let sys = actix_rt::System::new();
            sys.block_on(load::run(scenario, opts, threads))
        }
    }?;
    verdict::finish(scenario, opts, measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_a_name_inside_the_reports_directory() {
        for (name, want) in [
            ("office-morning-rush", "office-morning-rush"),
            ("../../escaped", "escaped"),
            ("/etc/passwd", "etc-passwd"),
            ("..", "scenario"),
            ("", "scenario"),
            (".hidden", "hidden"),
            ("Büro Süd: 2 Türen", "b-ro-s-d-2-t-ren"),
            ("a\\b\\..\\c", "a-b-c"),
            ("under_score--dash", "under_score--dash"),
            ("東京", "scenario"),
        ] {
            assert_eq!(slug(name), want, "{name:?}");
        }
        let long = slug(&"ab-".repeat(100));
        assert!(long.len() <= MAX_SLUG_LEN && !long.ends_with('-'), "{long}");
        let dir = default_report_dir("../../x", 9);
        assert_eq!(dir, Path::new("reports").join("x-9"));
        assert_eq!(dir.components().count(), 2);
    }
}
