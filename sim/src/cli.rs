//! The `fleetsim` command line: flags (clap), exit codes, and the
//! subcommands (`run`, `validate`, `list`, `schema`, `metrics`, `merge`,
//! `soak`). Thin: every decision lives in [`crate::scenario`],
//! [`crate::run`] and [`crate::soak`]; this module parses flags, prints,
//! and maps outcomes to [`Exit`] codes.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::run::capacity::{self, CapacityPlan, Precision};
use crate::run::{self, RunError, RunOptions, Shard};
use crate::scenario::{self, threshold, units, Scenario, ScenarioError, Transport};
use crate::soak::{self, Feature, FeatureSet, SoakConfig};

/// Exit codes, documented in scenarios/README.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The run finished and every threshold passed (or: the files are valid).
    Passed = 0,
    /// The run finished and at least one threshold failed.
    ThresholdsFailed = 1,
    /// A bad scenario file or bad flags; nothing ran.
    InvalidInput = 2,
    /// The run could not be carried out (I/O, broker unreachable, ...).
    RunError = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "fleetsim",
    version,
    about = "Smart-lock device-fleet simulator and load-testing harness",
    after_help = "Exit codes: 0 passed, 1 thresholds failed (capacity: no rate passed), 2 invalid input (scenario file or flags; validate --strict: a warning; merge: reports that are not one whole run), 3 run error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario and judge it against its thresholds.
    Run(RunArgs),
    /// Find the highest arrival rate at which the scenario passes its
    /// thresholds: a ramp, then a bisection, then repeats for a band.
    Capacity(CapacityArgs),
    /// Check scenario files and report every problem with file:line:col.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print the results as JSON on stdout (for editors and CI tools).
        #[arg(long)]
        json: bool,
        /// Treat warnings (e.g. an action that can never run) as errors: exit 2.
        #[arg(long)]
        strict: bool,
    },
    /// List the scenarios in a directory with their descriptions.
    List {
        #[arg(long, default_value = "scenarios", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the JSON Schema of scenario files (for editors).
    Schema,
    /// List every metric a threshold may name, with its kind, unit and the
    /// transports that measure it.
    Metrics {
        /// Print the metric tables of scenarios/README.md (Markdown).
        #[arg(long)]
        markdown: bool,
    },
    /// Merge the reports of shard runs and judge the thresholds once.
    Merge {
        /// Report directories of the shards (each with report.json and oracle.json).
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Where the merged report goes.
        #[arg(long, value_name = "DIR", default_value = "reports/merged")]
        report_dir: PathBuf,
        /// The scenario whose thresholds to judge (default: the one the reports name).
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Merge even with shards missing; the verdict is marked partial.
        #[arg(long)]
        allow_partial: bool,
    },
    /// Provision a scenario's fleet once on a shared server (its admin
    /// API) and write a fleet manifest for `run --fleet` workers.
    Provision(ProvisionArgs),
    /// Delete the fleet a manifest names from its server (idempotent).
    Teardown {
        /// The fleet manifest `fleetsim provision` wrote.
        #[arg(value_name = "PATH")]
        manifest: PathBuf,
    },
    /// Run many seeded random scenarios and check each against the
    /// invariants (no false accepts or rejects, no reason mismatches, every
    /// event logged, no panic); exit 1 if a seed fails.
    Soak(SoakArgs),
}

#[derive(Debug, clap::Args)]
struct SoakArgs {
    /// How many seeds to run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    from: u64,
    /// The transport of every generated scenario (inproc runs in virtual
    /// time; mqtt and http in real time, a few seconds a seed).
    #[arg(long, value_enum, default_value = "inproc")]
    transport: TransportArg,
    /// Leave out these generator features, comma-separated, e.g.
    /// "lockout,busy" (an unknown name lists the known ones).
    #[arg(long, value_name = "F,...", value_parser = parse_features)]
    without: Option<FeatureList>,
    /// Use only these generator features, comma-separated.
    #[arg(long, value_name = "F,...", value_parser = parse_features, conflicts_with = "without")]
    only: Option<FeatureList>,
    /// Where the scenario files and reports of failing seeds go.
    #[arg(long, value_name = "DIR", default_value = "reports/soak")]
    out: PathBuf,
    /// Keep the files and reports of passing seeds too.
    #[arg(long)]
    keep: bool,
    /// How long one seed may run before it counts as hung, e.g. "10m".
    #[arg(long, value_name = "D", value_parser = parse_duration_flag, default_value = "10m")]
    seed_timeout: Duration,
}

/// A comma-separated list of soak features.
#[derive(Clone, Debug)]
struct FeatureList(Vec<Feature>);

fn parse_features(s: &str) -> Result<FeatureList, String> {
    FeatureSet::parse_list(s).map(FeatureList)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TransportArg {
    Inproc,
    Mqtt,
    Http,
}

impl From<TransportArg> for Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Inproc => Transport::Inproc,
            TransportArg::Mqtt => Transport::Mqtt,
            TransportArg::Http => Transport::Http,
        }
    }
}

#[derive(Debug, clap::Args)]
struct ProvisionArgs {
    /// The scenario file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The server to provision (its admin API); FLEETSIM_TARGET_TOKEN
    /// holds an owner's token for a server bootstrapped already.
    #[arg(long, value_name = "URL", value_parser = parse_target)]
    target: String,
    /// How workers reach the server by default: http (its device routes)
    /// or mqtt (its gateway, on --broker). Default: the scenario's if it
    /// is one of them, else http.
    #[arg(long, value_enum)]
    transport: Option<SharedTransportArg>,
    /// Over mqtt: the broker the server's gateway is on (mqtt://host:port).
    #[arg(long, value_name = "URL", value_parser = parse_broker)]
    broker: Option<String>,
    /// Override the scenario's seed (workers use the manifest's).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Where the fleet manifest goes (created with mode 0600).
    #[arg(long, value_name = "PATH")]
    manifest: PathBuf,
    /// Overwrite an existing manifest.
    #[arg(long)]
    force: bool,
}

/// The transports of a shared server.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum SharedTransportArg {
    Mqtt,
    Http,
}

impl From<SharedTransportArg> for TransportArg {
    fn from(t: SharedTransportArg) -> Self {
        match t {
            SharedTransportArg::Mqtt => TransportArg::Mqtt,
            SharedTransportArg::Http => TransportArg::Http,
        }
    }
}

/// What picks the scenario and the system under test: the flags `run`
/// and `capacity` share.
#[derive(Clone, Debug, clap::Args)]
struct ScenarioArgs {
    /// The scenario file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Override the scenario's transport.
    #[arg(long, value_enum)]
    transport: Option<TransportArg>,
    /// An external MQTT broker instead of the embedded one (mqtt transport).
    /// With --target: the broker the target server's gateway is on, where
    /// the devices connect (mqtt://host:port).
    #[arg(long, value_name = "URL", value_parser = parse_broker)]
    broker: Option<String>,
    /// A server to run against instead of the embedded one (http, or mqtt
    /// with --broker), provisioned through its admin API;
    /// FLEETSIM_TARGET_TOKEN holds an owner's token for a server
    /// bootstrapped already.
    #[arg(long, value_name = "URL", value_parser = parse_target)]
    target: Option<String>,
    /// Override the scenario's seed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Directory for the reports. Default: reports/SLUG-SEED (run) or
    /// reports/SLUG-SEED-capacity (capacity), SLUG being the scenario's
    /// name in lowercase ASCII letters, digits, '-' and '_'.
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: ScenarioArgs,
    /// Stop after this long in total (phases are cut), e.g. "30s".
    #[arg(long, value_name = "D", value_parser = parse_duration_flag)]
    duration: Option<Duration>,
    /// Serve Prometheus /metrics on this address during the run, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Simulate only slice i of n of the fleet (0-based), e.g. "0/4".
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Drive the fleet `fleetsim provision` made on a shared server
    /// (provisions nothing; the target, and by default the transport and
    /// broker, come from the manifest). With --shard each worker drives
    /// only its own sites.
    #[arg(long, value_name = "PATH", conflicts_with = "target")]
    fleet: Option<PathBuf>,
    /// The run's id in its report (shards of one run share it); default: a
    /// hash of the resolved scenario and the seed.
    #[arg(long, value_name = "ID", value_parser = parse_run_id)]
    run_id: Option<String>,
}

#[derive(Debug, clap::Args)]
struct CapacityArgs {
    #[command(flatten)]
    common: ScenarioArgs,
    /// The first rate of the ramp, e.g. "50/s".
    #[arg(long, value_name = "RATE", value_parser = parse_rate_flag, default_value = "10/s")]
    start_rate: f64,
    /// The highest rate tried; if it passes the capacity is reported as at
    /// least this.
    #[arg(long, value_name = "RATE", value_parser = parse_rate_flag, default_value = "100000/s")]
    max_rate: f64,
    /// The measured window of each step, e.g. "30s".
    #[arg(long, value_name = "D", value_parser = parse_duration_flag, default_value = "30s")]
    step_duration: Duration,
    /// Load at the step's rate before its window, left out of its verdict
    /// ("0s": none).
    #[arg(long, value_name = "D", value_parser = parse_warmup, default_value = "10s")]
    warmup: Duration,
    /// How often the highest passing and the lowest failing rate run again,
    /// each with another seed, for a band (0: none).
    #[arg(long, value_name = "N", default_value_t = 3)]
    repeats: u32,
    /// The bisection stops when the failing and the passing rate are this
    /// close: a share of the passing rate ("5%") or a rate ("10/s").
    #[arg(long, value_name = "P", default_value = "5%")]
    precision: String,
}

fn parse_rate_flag(s: &str) -> Result<f64, String> {
    match units::parse_rate(s) {
        Ok(r) if r <= 0.0 => Err("the rate must be above 0/s".to_string()),
        Ok(r) => Ok(r),
        Err(e) => Err(format!("{e} ({})", e.hint)),
    }
}

fn parse_warmup(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| format!("{e} ({})", e.hint))
}

/// A run id: 1 to 64 letters, digits, `-`, `_` or `.`.
fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a run id: use 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Parses "i/n" (0-based index below the count).
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not i/n; e.g. 0/4 for the first of four shards"))?;
    let index: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("shard index `{i}` is not a whole number"))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("shard count `{n}` is not a whole number"))?;
    if count == 0 {
        return Err("the shard count must be at least 1".to_string());
    }
    if index >= count {
        return Err(format!(
            "shard index {index} must be below the shard count {count} (shards are numbered from 0)"
        ));
    }
    Ok(Shard { index, count })
}

fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    match units::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the duration must be longer than 0s".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} ({})", e.hint)),
    }
}

/// Checks `scheme://host:port` without resolving anything.
fn parse_endpoint(s: &str, schemes: &[&str], example: &str) -> Result<String, String> {
    let bad = || format!("`{s}` is not a URL like {example}");
    let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
    if !schemes.contains(&scheme) {
        return Err(format!(
            "`{s}`: the scheme must be {} (e.g. {example})",
            schemes.join(" or ")
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(s.to_string())
}

fn parse_broker(s: &str) -> Result<String, String> {
    parse_endpoint(s, &["mqtt", "tcp"], "mqtt://127.0.0.1:1883")
}

fn parse_target(s: &str) -> Result<String, String> {
    parse_endpoint(s, &["http", "https"], "http://127.0.0.1:8080")
}

/// Runs the command line `args` (with the program name first), writing to
/// `out` and `err`; returns the exit code. Never panics on bad input.
/// Checks the command line `args` (with the program name first) against
/// the flags and subcommands, running nothing: `Ok` if [`main_with`] would
/// accept it, else clap's message. Manifests that call fleetsim are held
/// to it (docs/kubernetes, tests/tests/kubernetes.rs).
pub fn check_args(args: impl IntoIterator<Item = OsString>) -> Result<(), String> {
    Cli::try_parse_from(args)
        .map(|_| ())
        .map_err(|e| e.render().to_string())
}

/// Runs the command line `args` (with the program name first), writing to
/// `out` and `err`; returns the exit code. Never panics on bad input.
pub fn main_with(
    args: impl IntoIterator<Item = OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = write!(out, "{text}");
                    Exit::Passed
                }
                // Usage errors, and `fleetsim` with no subcommand.
                _ => {
                    let _ = write!(err, "{text}");
                    Exit::InvalidInput
                }
            };
        }
    };
    match cli.command {
        Command::Validate {
            files,
            json: false,
            strict,
        } => validate(&files, strict, out, err),
        Command::Validate {
            files,
            json: true,
            strict,
        } => validate_json(&files, strict, out),
        Command::List { dir } => list(&dir, out, err),
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&scenario::json_schema())
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            let _ = writeln!(out, "{schema}");
            Exit::Passed
        }
        Command::Metrics { markdown } => {
            let text = if markdown {
                crate::metrics::catalogue::markdown()
            } else {
                crate::metrics::catalogue::listing()
            };
            let _ = write!(out, "{text}");
            Exit::Passed
        }
        Command::Run(args) => run_cmd(args, out, err),
        Command::Capacity(args) => capacity_cmd(args, out, err),
        Command::Provision(args) => provision_cmd(args, out, err),
        Command::Teardown { manifest } => teardown_cmd(&manifest, out, err),
        Command::Merge {
            dirs,
            report_dir,
            scenario,
            allow_partial,
        } => merge_cmd(
            &dirs,
            &report_dir,
            scenario.as_deref(),
            allow_partial,
            out,
            err,
        ),
        Command::Soak(args) => soak_cmd(args, out),
    }
}

fn soak_cmd(args: SoakArgs, out: &mut dyn Write) -> Exit {
    let allowed = match (&args.only, &args.without) {
        (Some(only), _) => {
            let mut set = FeatureSet::none();
            for f in &only.0 {
                set.insert(*f);
            }
            set
        }
        (None, Some(without)) => FeatureSet::without(&without.0),
        (None, None) => FeatureSet::all(),
    };
    let mut cfg = SoakConfig::new(args.transport.into(), args.out)
        .seeds(args.from, args.seeds)
        .allowed(allowed);
    cfg.keep_passing = args.keep;
    cfg.seed_timeout = args.seed_timeout;
    let campaign = soak::run_campaign(&cfg, &mut |r| {
        let _ = writeln!(out, "{}", r.describe());
        let _ = out.flush();
    });
    let _ = write!(out, "{}", campaign.summary(&cfg));
    if campaign.failed().next().is_some() {
        Exit::ThresholdsFailed
    } else {
        Exit::Passed
    }
}

fn report_error(e: &ScenarioError, err: &mut dyn Write) {
    let _ = writeln!(err, "{e}");
}

/// Prints a scenario's warnings (file:line:col, as errors are printed).
fn report_warnings(s: &Scenario, err: &mut dyn Write) {
    for w in &s.warnings {
        let _ = writeln!(err, "{}\n", w.as_warning());
    }
}

fn validate(files: &[PathBuf], strict: bool, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let mut exit = Exit::Passed;
    for f in files {
        match scenario::load(f) {
            Ok(s) if strict && !s.warnings.is_empty() => {
                report_warnings(&s, err);
                let n = s.warnings.len();
                let _ = writeln!(
                    err,
                    "{}: {n} warning{} (--strict makes warnings errors)\n",
                    f.display(),
                    if n == 1 { "" } else { "s" }
                );
                exit = Exit::InvalidInput;
            }
            Ok(s) => {
                report_warnings(&s, err);
                let warned = match s.warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".to_string(),
                    n => format!(", {n} warnings"),
                };
                let _ = writeln!(out, "ok: {} ({}{warned})", f.display(), s.name);
            }
            Err(e) => {
                report_error(&e, err);
                let _ = writeln!(err);
                exit = Exit::InvalidInput;
            }
        }
    }
    exit
}

/// One file's verdict in `validate --json`.
#[derive(serde::Serialize)]
struct FileResult<'a> {
    file: String,
    ok: bool,
    name: Option<&'a str>,
    /// Problems with line, col, path, message, hint and kind.
    problems: &'a [scenario::Problem],
    /// A problem that is not about a place in the file (unreadable, too large).
    error: Option<String>,
    /// Warnings (kind `never_runs`: an action that can never run), with
    /// line, col, path, message and hint like problems. With --strict a
    /// warning makes `ok` false.
    warnings: &'a [scenario::Problem],
    /// The thresholds the run will judge, defaults included (`default`:
    /// true where the file did not set that metric).
    thresholds: &'a [scenario::Threshold],
}

fn validate_json(files: &[PathBuf], strict: bool, out: &mut dyn Write) -> Exit {
    let loaded: Vec<_> = files.iter().map(|f| (f, scenario::load(f))).collect();
    let results: Vec<FileResult> = loaded
        .iter()
        .map(|(f, r)| match r {
            Ok(s) => FileResult {
                file: f.display().to_string(),
                ok: !strict || s.warnings.is_empty(),
                name: Some(&s.name),
                problems: &[],
                error: None,
                warnings: &s.warnings,
                thresholds: &s.thresholds,
            },
            Err(e) => FileResult {
                file: f.display().to_string(),
                ok: false,
                name: None,
                problems: e.problems(),
                error: e.problems().is_empty().then(|| e.to_string()),
                warnings: &[],
                thresholds: &[],
            },
        })
        .collect();
    let text = serde_json::to_string_pretty(&results).unwrap_or_else(|_| "[]".to_string());
    let _ = writeln!(out, "{text}");
    if results.iter().all(|r| r.ok) {
        Exit::Passed
    } else {
        Exit::InvalidInput
    }
}

fn list(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let _ = writeln!(
                err,
                "cannot read the scenario directory {}: {e} (pass --dir DIR)",
                dir.display()
            );
            return Exit::InvalidInput;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let width = files
        .iter()
        .map(|f| f.display().to_string().chars().count())
        .max()
        .unwrap_or(0);
    for f in files {
        let shown = f.display().to_string();
        let line = match scenario::load(&f) {
            Ok(s) => format!("{shown:<width$}  {}", s.description),
            Err(e) => format!(
                "{shown:<width$}  INVALID ({} problems; run `fleetsim validate {shown}`)",
                e.problems().len().max(1),
            ),
        };
        let _ = writeln!(out, "{line}");
    }
    Exit::Passed
}

/// The flags of `c` that pick the system under test, as a command line.
fn system_flags(c: &ScenarioArgs) -> String {
    let mut cmd = String::new();
    if let Some(t) = c.transport {
        let t: Transport = t.into();
        cmd.push_str(&format!(" --transport {}", scenario::transport_name(t)));
    }
    if let Some(b) = &c.broker {
        cmd.push_str(&format!(" --broker {b}"));
    }
    if let Some(t) = &c.target {
        cmd.push_str(&format!(" --target {t}"));
    }
    cmd
}

/// The command that replays a run: the file plus every flag in effect.
fn reproduce_command(args: &RunArgs, seed: u64) -> String {
    // A --fleet run's target is the manifest's: replayed by --fleet.
    let common_flags = match &args.fleet {
        Some(f) => {
            let own = ScenarioArgs {
                target: None,
                ..args.common.clone()
            };
            format!("{} --fleet {}", system_flags(&own), f.display())
        }
        None => system_flags(&args.common),
    };
    let mut cmd = format!(
        "fleetsim run {} --seed {seed}{common_flags}",
        args.common.file.display(),
    );
    if let Some(d) = args.duration {
        cmd.push_str(&format!(" --duration {}", units::format_duration(d)));
    }
    if let Some(s) = args.shard {
        cmd.push_str(&format!(" --shard {}/{}", s.index, s.count));
    }
    if let Some(id) = &args.run_id {
        cmd.push_str(&format!(" --run-id {id}"));
    }
    cmd
}

/// Loads the scenario with the flags applied, prints its warnings, and
/// picks the seed; `Err`: the exit code, the reason printed.
fn load_scenario(c: &ScenarioArgs, err: &mut dyn Write) -> Result<(Scenario, u64), Exit> {
    let mut scenario = scenario::load(&c.file).map_err(|e| {
        report_error(&e, err);
        Exit::InvalidInput
    })?;
    if let Err(msg) = apply_overrides(&mut scenario, c) {
        let _ = writeln!(err, "error: {msg}");
        return Err(Exit::InvalidInput);
    }
    report_warnings(&scenario, err);
    let seed = c.seed.or(scenario.seed).unwrap_or_else(rand::random::<u64>);
    Ok((scenario, seed))
}

/// The exit code of a run that could not be carried out, the reason printed.
fn run_error(e: RunError, err: &mut dyn Write) -> Exit {
    match e {
        e @ RunError::Fleet(_) => {
            let _ = writeln!(err, "error: {e}");
            let _ = writeln!(err, "nothing ran");
            Exit::InvalidInput
        }
        e @ RunError::ReportDir(_) => {
            let _ = writeln!(err, "error: {e}");
            let _ = writeln!(
                err,
                "nothing ran; pass --report-dir DIR with a directory fleetsim may write"
            );
            Exit::InvalidInput
        }
        e => {
            let _ = writeln!(err, "run error: {e}");
            if let RunError::NotImplemented { .. } = e {
                let _ = writeln!(
                    err,
                    "the scenario is valid; `fleetsim validate` checks files without running them"
                );
            }
            Exit::RunError
        }
    }
}

fn run_cmd(mut args: RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    // A --fleet run takes its target (and by default its transport,
    // broker and seed) from the manifest.
    let fleet_path = args.fleet.clone();
    if let Some(path) = &fleet_path {
        match fleet_defaults(path, &mut args) {
            Ok(m) => args.common.seed = args.common.seed.or(Some(m.seed)),
            Err(msg) => {
                let _ = writeln!(err, "error: {msg}");
                return Exit::InvalidInput;
            }
        }
    }
    let (mut scenario, seed) = match load_scenario(&args.common, err) {
        Ok(x) => x,
        Err(exit) => return exit,
    };
    if let Some(d) = args.duration {
        scenario.cap_duration(d);
    }
    // Workers of a shared fleet: each must have sites of its own.
    let fleet_shard = args.shard.filter(|_| fleet_path.is_some());
    if let Some(msg) = fleet_shard.and_then(|sh| shard_problem(&scenario, sh)) {
        let _ = writeln!(err, "error: {msg}");
        return Exit::InvalidInput;
    }
    let fleet = match &fleet_path {
        Some(path) => match run::fleet_manifest::FleetRun::load(path, &scenario, seed) {
            Ok(f) => Some(f),
            Err(msg) => {
                let _ = writeln!(err, "error: {msg}");
                return Exit::InvalidInput;
            }
        },
        None => None,
    };
    let reproduce = reproduce_command(&args, seed);
    let report_dir = args
        .common
        .report_dir
        .clone()
        .unwrap_or_else(|| run::default_report_dir(&scenario.name, seed));
    let _ = writeln!(
        out,
        "fleetsim {}: scenario `{}` ({}), seed {seed}, transport {}, {} devices, {} phases over {}",
        env!("CARGO_PKG_VERSION"),
        scenario.name,
        args.common.file.display(),
        scenario::transport_name(scenario.transport),
        scenario.fleet.device_count(),
        scenario.phases.len(),
        units::format_duration(scenario.total_duration()),
    );
    let _ = writeln!(out, "reproduce: {reproduce}");
    let opts = RunOptions {
        seed,
        transport: scenario.transport,
        broker: args.common.broker.clone(),
        target: args.common.target.clone(),
        report_dir,
        metrics_addr: args.metrics_addr,
        shard: args.shard.unwrap_or(Shard::WHOLE),
        run_id: args
            .run_id
            .clone()
            .unwrap_or_else(|| run::run_id(&scenario, seed)),
        reproduce,
        fleet,
        warmup: Duration::ZERO,
    };
    match run::execute(&scenario, &opts) {
        Ok(outcome) => {
            let _ = write!(out, "{}", outcome.summary);
            let _ = writeln!(out, "report: {}", outcome.report_dir.display());
            print_thresholds(&outcome, out);
            if outcome.passed {
                Exit::Passed
            } else {
                let _ = writeln!(out, "thresholds failed; replay with: {}", opts.reproduce);
                Exit::ThresholdsFailed
            }
        }
        Err(e) => run_error(e, err),
    }
}

fn capacity_cmd(args: CapacityArgs, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let precision = match Precision::parse(&args.precision) {
        Ok(p) => p,
        Err(msg) => {
            let _ = writeln!(err, "error: --precision {msg}");
            return Exit::InvalidInput;
        }
    };
    let plan = CapacityPlan {
        start_per_s: args.start_rate,
        max_per_s: args.max_rate,
        step: args.step_duration,
        warmup: args.warmup,
        repeats: args.repeats,
        precision,
        precision_text: args.precision.trim().to_string(),
    };
    if let Err(msg) = plan.check() {
        let _ = writeln!(err, "error: {msg}");
        return Exit::InvalidInput;
    }
    let (scenario, seed) = match load_scenario(&args.common, err) {
        Ok(x) => x,
        Err(exit) => return exit,
    };
    if let Err(msg) = capacity::check_scenario(&scenario) {
        let _ = writeln!(err, "error: {msg}");
        return Exit::InvalidInput;
    }
    let reproduce = format!(
        "fleetsim capacity {} --seed {seed}{} --start-rate {}/s --max-rate {}/s --step-duration {} --warmup {} --repeats {} --precision {}",
        args.common.file.display(),
        system_flags(&args.common),
        args.start_rate,
        args.max_rate,
        units::format_duration(args.step_duration),
        units::format_duration(args.warmup),
        args.repeats,
        plan.precision_text,
    );
    let report_dir = args.common.report_dir.clone().unwrap_or_else(|| {
        let d = run::default_report_dir(&scenario.name, seed);
        d.with_file_name(format!(
            "{}-capacity",
            d.file_name().unwrap_or_default().to_string_lossy()
        ))
    });
    let _ = writeln!(
        out,
        "fleetsim {}: capacity of `{}` ({}), seed {seed}, transport {}, {} devices; steps of {} after a {} warm-up",
        env!("CARGO_PKG_VERSION"),
        scenario.name,
        args.common.file.display(),
        scenario::transport_name(scenario.transport),
        scenario.fleet.device_count(),
        units::format_duration(plan.step),
        units::format_duration(plan.warmup),
    );
    let _ = writeln!(out, "reproduce: {reproduce}");
    let base = RunOptions {
        seed,
        transport: scenario.transport,
        broker: args.common.broker.clone(),
        target: args.common.target.clone(),
        report_dir: report_dir.clone(),
        metrics_addr: None,
        shard: Shard::WHOLE,
        run_id: String::new(),
        reproduce,
        fleet: None,
        warmup: plan.warmup,
    };
    let mut progress = |st: &crate::report::capacity::CapacityStep| {
        let verdict = match st.failing_metric() {
            None => "PASS".to_string(),
            Some(f) => format!("FAIL {}", f.threshold),
        };
        let _ = writeln!(
            out,
            "step {} ({:?}) at {:.2}/s: achieved {:.2}/s, {verdict}{}",
            st.index,
            st.stage,
            st.rate_per_s,
            st.served_per_s,
            if st.harness_bound {
                " [harness-bound]"
            } else {
                ""
            }
        );
        let _ = out.flush();
    };
    let found = capacity::execute(&scenario, &plan, &base, &mut progress);
    match found {
        Ok(r) => {
            let _ = write!(out, "{}", r.summary());
            let _ = writeln!(
                out,
                "report: {} ({}, {})",
                report_dir.display(),
                capacity::CAPACITY_JSON,
                capacity::CAPACITY_HTML
            );
            match r.verdict {
                capacity::Verdict::NonePassed => Exit::ThresholdsFailed,
                capacity::Verdict::Found | capacity::Verdict::AtMax => Exit::Passed,
            }
        }
        Err(e) => run_error(e, err),
    }
}

/// A `--fleet` run: reads the manifest (a bad or unreadable one is an
/// error naming the file and the reason) and takes its target, and its
/// transport and broker unless given.
fn fleet_defaults(
    path: &Path,
    args: &mut RunArgs,
) -> Result<run::fleet_manifest::FleetManifest, String> {
    let (m, _) = run::fleet_manifest::FleetManifest::read(path).map_err(|e| e.to_string())?;
    let c = &mut args.common;
    c.target = Some(m.target.clone());
    if c.transport.is_none() {
        c.transport = Some(match m.transport.as_str() {
            "mqtt" => TransportArg::Mqtt,
            _ => TransportArg::Http,
        });
    }
    if c.broker.is_none() && matches!(c.transport, Some(TransportArg::Mqtt)) {
        c.broker = m.broker.clone();
    }
    Ok(m)
}

/// A shard with no site to run: a scenario has fewer sites than shards
/// (shards split the fleet by site).
fn shard_problem(s: &Scenario, shard: Shard) -> Option<String> {
    (s.fleet.sites < shard.count).then(|| {
        format!(
            "the scenario has {} site{} but the run is split into {} shards: shards split the fleet \
             by site, so shard {} would have nothing to run (use at most {} shards, or more sites)",
            s.fleet.sites,
            if s.fleet.sites == 1 { "" } else { "s" },
            shard.count,
            shard.count - 1,
            s.fleet.sites
        )
    })
}

fn provision_cmd(args: ProvisionArgs, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let mut scenario = match scenario::load(&args.file) {
        Ok(s) => s,
        Err(e) => {
            report_error(&e, err);
            return Exit::InvalidInput;
        }
    };
    let transport: Transport = match args.transport {
        Some(t) => TransportArg::from(t).into(),
        None if scenario.transport == Transport::Mqtt => Transport::Mqtt,
        None => Transport::Http,
    };
    scenario.transport = transport;
    if let Err(msg) = target_flags(transport, Some(&args.target), args.broker.as_deref()) {
        let _ = writeln!(err, "error: {msg}");
        return Exit::InvalidInput;
    }
    if args.broker.is_some() && transport != Transport::Mqtt {
        let _ = writeln!(
            err,
            "error: --broker needs the mqtt transport (add --transport mqtt)"
        );
        return Exit::InvalidInput;
    }
    // Refused before the server is touched: nothing to tear down then.
    if args.manifest.exists() && !args.force {
        let _ = writeln!(
            err,
            "error: {}",
            run::fleet_manifest::ManifestError::Exists(args.manifest.clone())
        );
        return Exit::InvalidInput;
    }
    report_warnings(&scenario, err);
    let seed = args
        .seed
        .or(scenario.seed)
        .unwrap_or_else(rand::random::<u64>);
    let opts = run::shared_fleet::ProvisionOptions {
        seed,
        target: args.target.clone(),
        transport,
        broker: args.broker.clone(),
    };
    let made = match run::shared_fleet::provision(&scenario, &opts) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "provision error: {e}");
            return Exit::RunError;
        }
    };
    if let Err(e) = made.manifest.write(&args.manifest, args.force) {
        let _ = writeln!(
            err,
            "error: {e}\nthe fleet was provisioned (organization {} on {}) but no manifest describes it",
            made.manifest.organization, made.manifest.target
        );
        return Exit::RunError;
    }
    let _ = writeln!(
        out,
        "provisioned scenario `{}` (seed {seed}): {} devices on {} sites as organization {} on {}",
        scenario.name, made.devices, made.sites, made.manifest.organization, made.manifest.target
    );
    let _ = writeln!(
        out,
        "manifest: {} (mode 0600: it holds device secrets and an owner's token)",
        args.manifest.display()
    );
    let _ = writeln!(
        out,
        "workers: fleetsim run {} --fleet {} --shard I/N; then fleetsim merge; fleetsim teardown {}",
        args.file.display(),
        args.manifest.display(),
        args.manifest.display()
    );
    Exit::Passed
}

fn teardown_cmd(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let m = match run::shared_fleet::read_manifest(path) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::InvalidInput;
        }
    };
    match run::shared_fleet::teardown(&m) {
        Ok(run::shared_fleet::TornDown::Deleted { organization }) => {
            let _ = writeln!(
                out,
                "deleted organization {organization} and its fleet from {}",
                m.target
            );
            Exit::Passed
        }
        Ok(run::shared_fleet::TornDown::NothingLeft { organization }) => {
            let _ = writeln!(
                out,
                "nothing left: {} has no organization {organization} (torn down already)",
                m.target
            );
            Exit::Passed
        }
        Err(e) => {
            let _ = writeln!(err, "teardown error: {e}");
            Exit::RunError
        }
    }
}

/// --target with the transport and --broker: over http the devices ask
/// the target's HTTP routes; over mqtt they need the broker its gateway is
/// on, and sign in there as themselves (the URL names no account).
fn target_flags(
    transport: Transport,
    target: Option<&str>,
    broker: Option<&str>,
) -> Result<(), String> {
    let Some(_) = target else {
        return Ok(());
    };
    match (transport, broker) {
        (Transport::Http, _) => Ok(()),
        (Transport::Mqtt, None) => Err(
            "--target over the mqtt transport needs --broker URL: the broker the target \
             server's gateway is on, where the devices connect (e.g. \
             --broker mqtt://127.0.0.1:1883, as the server printed \"devices connect to\")"
                .to_string(),
        ),
        (Transport::Mqtt, Some(b)) if b.contains('@') => Err(
            "--broker with --target names only where the devices connect \
             (mqtt://host:port): each device signs in with the id and secret \
             the target server issued, never an account in the URL"
                .to_string(),
        ),
        (Transport::Mqtt, Some(_)) => Ok(()),
        (other, _) => Err(format!(
            "--target needs the http or mqtt transport, but the run uses {} \
             (add --transport http, or --transport mqtt --broker URL)",
            scenario::transport_name(other)
        )),
    }
}

/// Applies --transport, --broker and --target, re-checking the rules they
/// can break.
fn apply_overrides(s: &mut Scenario, args: &ScenarioArgs) -> Result<(), String> {
    if let Some(t) = args.transport {
        s.transport = t.into();
    }
    if let Some((msg, hint)) =
        scenario::transport_conflict(s.transport, s.clock, !s.faults.broker_outages.is_empty())
    {
        return Err(format!("{msg} ({hint})"));
    }
    let unmeasurable: Vec<String> = s
        .thresholds
        .iter()
        .filter_map(|t| {
            threshold::transport_problem(&t.metric, scenario::transport_name(s.transport))
                .map(|(msg, hint)| format!("{msg} ({hint})"))
        })
        .collect();
    if !unmeasurable.is_empty() {
        return Err(unmeasurable.join("; "));
    }
    if args.broker.is_some() && s.transport != Transport::Mqtt {
        return Err(format!(
            "--broker needs the mqtt transport, but the run uses {} (add --transport mqtt)",
            scenario::transport_name(s.transport)
        ));
    }
    target_flags(s.transport, args.target.as_deref(), args.broker.as_deref())?;
    if args.target.is_some() && s.transport == Transport::Mqtt {
        let hidden: Vec<&str> = s
            .thresholds
            .iter()
            .filter(|t| crate::metrics::catalogue::engine_side(&t.metric))
            .map(|t| t.metric.as_str())
            .collect();
        if !hidden.is_empty() {
            return Err(format!(
                "{} measured on the engine side, which an external server over mqtt \
                 (--target) keeps out of the run's sight: remove the threshold, or run \
                 against the embedded server",
                hidden.join(", ") + if hidden.len() == 1 { " is" } else { " are" }
            ));
        }
    }
    Ok(())
}

fn print_thresholds(outcome: &run::RunOutcome, out: &mut dyn Write) {
    for r in &outcome.thresholds {
        let measured = r
            .measured
            .map_or_else(|| "not measured".to_string(), |m| format!("{m}"));
        let status = match (&r.not_judged, r.passed) {
            (Some(why), _) => format!("NOT JUDGED ({why})"),
            (None, true) => "PASS".to_string(),
            (None, false) => "FAIL".to_string(),
        };
        let _ = writeln!(out, "{status} {} (measured {measured})", r.threshold);
    }
}

fn merge_cmd(
    dirs: &[PathBuf],
    report_dir: &Path,
    scenario: Option<&Path>,
    allow_partial: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    match run::merge_dirs(dirs, report_dir, scenario, allow_partial) {
        Ok(m) => {
            let _ = writeln!(
                out,
                "merged {} reports into {}{}",
                m.shards,
                report_dir.display(),
                match &m.partial {
                    Some(p) => format!(" (PARTIAL: {p})"),
                    None => String::new(),
                }
            );
            let _ = write!(out, "{}", m.outcome.summary);
            print_thresholds(&m.outcome, out);
            if m.outcome.passed {
                Exit::Passed
            } else {
                Exit::ThresholdsFailed
            }
        }
        Err(e @ run::verdict::MergeError::Scenario(_))
        | Err(e @ run::verdict::MergeError::NoScenario) => {
            let _ = writeln!(err, "error: {e}");
            Exit::InvalidInput
        }
        Err(e @ run::verdict::MergeError::Report(_))
        | Err(e @ run::verdict::MergeError::Oracle { .. })
        | Err(e @ run::verdict::MergeError::NotOneRun(_)) => {
            let _ = writeln!(err, "error: {e}");
            Exit::InvalidInput
        }
        Err(e) => {
            let _ = writeln!(err, "merge error: {e}");
            Exit::RunError
        }
    }
}
