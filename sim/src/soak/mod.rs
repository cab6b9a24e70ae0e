//! The soak campaign (`fleetsim soak`): many seeded random scenarios, each
//! run in-process through [`crate::run::execute`] and held to invariants
//! that no valid scenario may break:
//!
//! - no false accepts, no false rejects, no denials for another reason
//!   than the rules give (the oracle's verdicts, `oracle.json`);
//! - every event a device emitted was logged by the engine side, no more,
//!   no fewer (`report.json`'s health; not over `http`, which has no event
//!   route);
//! - every check gets an answer, unless the scenario injects a fault that
//!   explains errors: devices offline, or an engine slower than a door
//!   phone waits (a check that ends in an error is not judged: a run of
//!   errors would pass the oracle with nothing judged);
//! - no panic, no run error, no hang; every generated file is valid (a
//!   file `fleetsim validate` rejects is a bug of the generator);
//! - for a sharded seed, the merged report adds up the shards' verdicts.
//!
//! Each seed's scenario is written to `<out>/seed-N.toml` with a header
//! naming its features; a failing seed keeps the file and its report
//! directory and prints the command that replays it, a passing one is
//! removed (unless asked to keep it). A file kept as a regression test is
//! run by [`check_file`], which reads the shard count from its header.
//!
//! - [`gen`]: the generator and its [`Feature`]s.

pub mod gen;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use gen::{generate, Feature, FeatureSet, Generated};

use crate::run::oracle::{Example, Verdicts};
use crate::run::verdict::{OracleFile, ORACLE_FILE};
use crate::run::{self, RunOptions, Shard};
use crate::scenario::{self, Clock, Scenario, Transport};

/// Wall time a seed may take before it counts as hung (a guard: a seed
/// takes seconds). The seed's thread is left behind; the campaign goes on.
pub const DEFAULT_SEED_TIMEOUT: Duration = Duration::from_secs(600);
/// Stack of the thread each seed runs on (debug builds nest deeply).
const SEED_STACK_BYTES: usize = 32 * 1024 * 1024;
/// Examples kept per failure (the oracle keeps up to 20).
const EXAMPLES_KEPT: usize = 5;

/// What a campaign runs.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub first_seed: u64,
    pub seeds: u64,
    pub transport: Transport,
    /// The features the generator may use.
    pub allowed: FeatureSet,
    /// Scenario files and report directories go here.
    pub out_dir: PathBuf,
    /// Keep the files of passing seeds too.
    pub keep_passing: bool,
    pub seed_timeout: Duration,
}

impl SoakConfig {
    /// One seed (0) on `transport` with every feature, files under `out_dir`.
    pub fn new(transport: Transport, out_dir: impl Into<PathBuf>) -> SoakConfig {
        SoakConfig {
            first_seed: 0,
            seeds: 1,
            transport,
            allowed: FeatureSet::all(),
            out_dir: out_dir.into(),
            keep_passing: false,
            seed_timeout: DEFAULT_SEED_TIMEOUT,
        }
    }

    pub fn seeds(mut self, first: u64, count: u64) -> SoakConfig {
        self.first_seed = first;
        self.seeds = count;
        self
    }

    pub fn allowed(mut self, allowed: FeatureSet) -> SoakConfig {
        self.allowed = allowed;
        self
    }
}

/// One broken invariant.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The generator wrote a file the scenario checker rejects.
    InvalidScenario(String),
    /// The run could not be carried out (exit code 3 of `fleetsim run`).
    RunError(String),
    /// Code panicked during the run.
    Panic(String),
    /// The seed did not finish within the timeout.
    Hung(Duration),
    FalseAccepts {
        count: u64,
        examples: Vec<Example>,
    },
    FalseRejects {
        count: u64,
        examples: Vec<Example>,
    },
    ReasonMismatches {
        count: u64,
        examples: Vec<Example>,
    },
    /// Events emitted by the devices and logged by the engine side differ.
    Events {
        emitted: u64,
        logged: u64,
    },
    /// Checks ended in an error though no fault explains it.
    Unanswered {
        count: u64,
        reasons: Vec<String>,
    },
    /// A threshold of the file failed that the checks above do not cover.
    Thresholds(Vec<String>),
    /// The shards' reports did not merge into their sum.
    Merge(String),
}

impl Failure {
    /// Short name of the invariant.
    pub fn invariant(&self) -> &'static str {
        match self {
            Failure::InvalidScenario(_) => "invalid_scenario",
            Failure::RunError(_) => "run_error",
            Failure::Panic(_) => "panic",
            Failure::Hung(_) => "hung",
            Failure::FalseAccepts { .. } => "false_accept",
            Failure::FalseRejects { .. } => "false_reject",
            Failure::ReasonMismatches { .. } => "reason_mismatch",
            Failure::Events { .. } => "events",
            Failure::Unanswered { .. } => "unanswered",
            Failure::Thresholds(_) => "threshold",
            Failure::Merge(_) => "merge",
        }
    }

    /// The failure's categories, for the campaign's tally: the invariant,
    /// and for oracle disagreements each example's action and answers
    /// (`false_reject: pin_valid, expected granted, got denied(locked_out)`).
    pub fn categories(&self) -> Vec<String> {
        let name = self.invariant();
        match self {
            Failure::FalseAccepts { examples, .. }
            | Failure::FalseRejects { examples, .. }
            | Failure::ReasonMismatches { examples, .. } => {
                let mut out: Vec<String> = examples
                    .iter()
                    .map(|e| {
                        format!(
                            "{name}: {}, expected {}, got {}",
                            e.action, e.expected, e.actual
                        )
                    })
                    .collect();
                out.sort();
                out.dedup();
                if out.is_empty() {
                    out.push(name.to_string());
                }
                out
            }
            Failure::Unanswered { reasons, .. } => {
                let mut out: Vec<String> = reasons
                    .iter()
                    .map(|r| format!("{name}: {}", first_words(r, 8)))
                    .collect();
                out.sort();
                out.dedup();
                out
            }
            Failure::RunError(e) => vec![format!("{name}: {}", first_words(e, 8))],
            Failure::Panic(e) => vec![format!("{name}: {}", first_words(e, 8))],
            _ => vec![name.to_string()],
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let examples = |f: &mut std::fmt::Formatter<'_>, ex: &[Example]| {
            for e in ex {
                write!(
                    f,
                    "\n      device {} {}: expected {}, got {}",
                    e.device, e.action, e.expected, e.actual
                )?;
            }
            Ok(())
        };
        match self {
            Failure::InvalidScenario(e) => write!(f, "the generated file is invalid:\n{e}"),
            Failure::RunError(e) => write!(f, "run error: {e}"),
            Failure::Panic(e) => write!(f, "panic: {e}"),
            Failure::Hung(d) => write!(f, "no result after {} s", d.as_secs()),
            Failure::FalseAccepts {
                count,
                examples: ex,
            } => {
                write!(f, "{count} false accepts")?;
                examples(f, ex)
            }
            Failure::FalseRejects {
                count,
                examples: ex,
            } => {
                write!(f, "{count} false rejects")?;
                examples(f, ex)
            }
            Failure::ReasonMismatches {
                count,
                examples: ex,
            } => {
                write!(f, "{count} reason mismatches")?;
                examples(f, ex)
            }
            Failure::Events { emitted, logged } => {
                write!(f, "events: {emitted} emitted, {logged} logged")
            }
            Failure::Unanswered { count, reasons } => {
                write!(f, "{count} checks ended in an error no fault explains")?;
                for r in reasons {
                    write!(f, "\n      {r}")?;
                }
                Ok(())
            }
            Failure::Thresholds(t) => write!(f, "thresholds failed: {}", t.join("; ")),
            Failure::Merge(e) => write!(f, "merge: {e}"),
        }
    }
}

fn first_words(s: &str, n: usize) -> String {
    // Numbers vary from seed to seed; keep the words that name the problem.
    s.split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one seed found.
#[derive(Clone, Debug)]
pub struct SeedResult {
    pub seed: u64,
    pub features: FeatureSet,
    pub shards: u32,
    /// Attempts the oracle judged (all shards).
    pub verdicts: Verdicts,
    pub lockouts: u64,
    pub wall: Duration,
    pub failures: Vec<Failure>,
    /// The scenario file (removed again when the seed passed and files
    /// are not kept).
    pub scenario_file: PathBuf,
    /// The commands that replay the seed (one per shard).
    pub replay: Vec<String>,
}

impl SeedResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line per seed, then for a failure each broken invariant and the
    /// replay commands.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let v = &self.verdicts;
        let _ = write!(
            s,
            "seed {:<6} {}  {} decisions, {} ambiguous, {} lockouts, {:.1} s",
            self.seed,
            if self.passed() { "PASS" } else { "FAIL" },
            v.decisions(),
            v.ambiguous,
            self.lockouts,
            self.wall.as_secs_f64()
        );
        if self.passed() {
            return s;
        }
        let _ = write!(s, "\n    features: {}", self.features.names());
        for f in &self.failures {
            let _ = write!(s, "\n    {f}");
        }
        let _ = write!(s, "\n    scenario: {}", self.scenario_file.display());
        for r in &self.replay {
            let _ = write!(s, "\n    replay:   {r}");
        }
        s
    }
}

/// A campaign's results.
#[derive(Clone, Debug, Default)]
pub struct Campaign {
    pub results: Vec<SeedResult>,
}

impl Campaign {
    pub fn failed(&self) -> impl Iterator<Item = &SeedResult> {
        self.results.iter().filter(|r| !r.passed())
    }

    /// Seeds per failure category.
    pub fn categories(&self) -> BTreeMap<String, Vec<u64>> {
        let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for r in self.failed() {
            let mut cats: Vec<String> = r.failures.iter().flat_map(Failure::categories).collect();
            cats.sort();
            cats.dedup();
            for c in cats {
                m.entry(c).or_default().push(r.seed);
            }
        }
        m
    }

    /// Failed seeds per feature they used (which features to suspect).
    pub fn failures_by_feature(&self) -> BTreeMap<Feature, (u64, u64)> {
        let mut m: BTreeMap<Feature, (u64, u64)> = BTreeMap::new();
        for r in &self.results {
            for f in r.features.iter() {
                let e = m.entry(f).or_default();
                e.1 += 1;
                if !r.passed() {
                    e.0 += 1;
                }
            }
        }
        m
    }

    /// The end-of-campaign summary.
    pub fn summary(&self, cfg: &SoakConfig) -> String {
        let mut s = String::new();
        let mut v = Verdicts::default();
        let mut lockouts = 0;
        for r in &self.results {
            v.add(&r.verdicts);
            lockouts += r.lockouts;
        }
        let failed = self.failed().count();
        let _ = writeln!(
            s,
            "soak: {} seeds ({}..={}), transport {}: {} passed, {} failed",
            self.results.len(),
            cfg.first_seed,
            cfg.first_seed + cfg.seeds.saturating_sub(1),
            scenario::transport_name(cfg.transport),
            self.results.len() - failed,
            failed
        );
        let _ = writeln!(
            s,
            "judged: {} decisions ({} true grants, {} true denials, {} false accepts, {} false rejects, {} reason mismatches, {} ambiguous), {} lockouts",
            v.decisions(),
            v.true_grants,
            v.true_denials,
            v.false_accepts,
            v.false_rejects,
            v.reason_mismatches,
            v.ambiguous,
            lockouts
        );
        let excluded: Vec<&str> = Feature::ALL
            .iter()
            .filter(|f| !cfg.allowed.contains(**f) && f.applies_to(cfg.transport))
            .map(|f| f.as_str())
            .collect();
        if !excluded.is_empty() {
            let _ = writeln!(s, "features left out: {}", excluded.join(", "));
        }
        let cats = self.categories();
        if !cats.is_empty() {
            let _ = writeln!(s, "failures by category (seeds):");
            for (c, seeds) in &cats {
                let list: Vec<String> = seeds.iter().take(10).map(u64::to_string).collect();
                let more = if seeds.len() > 10 { ", ..." } else { "" };
                let _ = writeln!(
                    s,
                    "  {:>4}  {c} [seeds {}{more}]",
                    seeds.len(),
                    list.join(", ")
                );
            }
            let _ = writeln!(s, "failed / ran, per feature used:");
            for (f, (bad, all)) in self.failures_by_feature() {
                let _ = writeln!(s, "  {:<14} {bad} / {all}", f.as_str());
            }
        }
        s
    }
}

/// Runs every seed of `cfg` in turn; `each` sees each result as it comes.
pub fn run_campaign(cfg: &SoakConfig, each: &mut dyn FnMut(&SeedResult)) -> Campaign {
    let mut c = Campaign::default();
    for seed in cfg.first_seed..cfg.first_seed.saturating_add(cfg.seeds) {
        let r = run_seed(cfg, seed);
        each(&r);
        c.results.push(r);
    }
    c
}

/// The header of a generated file: how it was made, its features and shards.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub features: Vec<Feature>,
    pub shards: u32,
}

const FEATURES_LINE: &str = "# soak-features:";
const SHARDS_LINE: &str = "# soak-shards:";

impl Header {
    /// Reads the header lines of a scenario file (absent: no feature, one shard).
    pub fn parse(text: &str) -> Result<Header, String> {
        let mut h = Header {
            features: Vec::new(),
            shards: 1,
        };
        for line in text.lines().take_while(|l| l.starts_with('#')) {
            if let Some(rest) = line.strip_prefix(FEATURES_LINE) {
                h.features = FeatureSet::parse_list(rest)?;
            } else if let Some(rest) = line.strip_prefix(SHARDS_LINE) {
                h.shards = rest
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("`{line}`: the shard count must be 1 to 64"))?;
            }
        }
        Ok(h)
    }

    fn write(g: &Generated, file: &Path) -> String {
        format!(
            "# Generated by `fleetsim soak` (seed {}, transport {}).\n\
             # Replay: {}\n\
             {FEATURES_LINE} {}\n\
             {SHARDS_LINE} {}\n\n",
            g.seed,
            scenario::transport_name(g.transport),
            replay_commands(file, g.shards).join(" && "),
            g.features
                .iter()
                .map(Feature::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            g.shards,
        )
    }
}

fn replay_commands(file: &Path, shards: u32) -> Vec<String> {
    if shards <= 1 {
        return vec![format!("fleetsim run {}", file.display())];
    }
    (0..shards)
        .map(|i| format!("fleetsim run {} --shard {i}/{shards}", file.display()))
        .collect()
}

/// Generates, writes, runs and checks one seed.
pub fn run_seed(cfg: &SoakConfig, seed: u64) -> SeedResult {
    let g = generate(seed, cfg.transport, &cfg.allowed);
    let file = cfg.out_dir.join(format!("seed-{seed}.toml"));
    let report_dir = cfg.out_dir.join(format!("seed-{seed}"));
    let text = format!("{}{}", Header::write(&g, &file), g.text);
    let written = std::fs::create_dir_all(&cfg.out_dir).and_then(|()| std::fs::write(&file, text));
    let mut r = match written {
        Ok(()) => check_file(&file, &report_dir, cfg.seed_timeout),
        Err(e) => SeedResult {
            seed,
            features: g.features.clone(),
            shards: g.shards,
            verdicts: Verdicts::default(),
            lockouts: 0,
            wall: Duration::ZERO,
            failures: vec![Failure::RunError(format!(
                "cannot write {}: {e}",
                file.display()
            ))],
            scenario_file: file.clone(),
            replay: Vec::new(),
        },
    };
    r.seed = seed;
    r.features = g.features;
    if r.passed() && !cfg.keep_passing {
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_dir_all(&report_dir);
    }
    r
}

/// Runs a scenario file (a generated one, or a regression test) as its
/// header says (shards) and checks the invariants; reports go under
/// `report_dir`.
pub fn check_file(file: &Path, report_dir: &Path, timeout: Duration) -> SeedResult {
    let started = Instant::now();
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let header = Header::parse(&text);
    let mut r = SeedResult {
        seed: 0,
        features: FeatureSet::none(),
        shards: 1,
        verdicts: Verdicts::default(),
        lockouts: 0,
        wall: Duration::ZERO,
        failures: Vec::new(),
        scenario_file: file.to_path_buf(),
        replay: Vec::new(),
    };
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            r.failures.push(Failure::InvalidScenario(e));
            return r;
        }
    };
    for f in &header.features {
        r.features.insert(*f);
    }
    r.shards = header.shards;
    r.replay = replay_commands(file, header.shards);
    // Exactly what `fleetsim validate` and `fleetsim run` load.
    let s = match scenario::load(file) {
        Ok(s) => s,
        Err(e) => {
            r.failures.push(Failure::InvalidScenario(e.to_string()));
            return r;
        }
    };
    r.seed = s.seed.unwrap_or(0);
    let mut dirs = Vec::new();
    let mut shard_verdicts = Verdicts::default();
    for index in 0..header.shards {
        let shard = Shard {
            index,
            count: header.shards,
        };
        let dir = if header.shards > 1 {
            report_dir.join(format!("shard-{index}"))
        } else {
            report_dir.to_path_buf()
        };
        let opts = RunOptions {
            seed: r.seed,
            transport: s.transport,
            broker: None,
            target: None,
            report_dir: dir.clone(),
            metrics_addr: None,
            shard,
            run_id: run::run_id(&s, r.seed),
            reproduce: r.replay[index as usize].clone(),
            fleet: None,
        };
        match execute_guarded(&s, opts, timeout) {
            Err(f) => {
                r.failures.push(f);
                continue;
            }
            Ok(outcome) => {
                let before = r.failures.len();
                match check_dir(&dir, &s) {
                    Ok(found) => {
                        shard_verdicts.add(&found.verdicts);
                        r.lockouts += found.lockouts;
                        r.failures.extend(found.failures);
                    }
                    Err(e) => r.failures.push(Failure::RunError(e)),
                }
                // A failed threshold the checks above did not explain.
                if !outcome.passed && r.failures.len() == before {
                    r.failures.push(Failure::Thresholds(
                        outcome
                            .thresholds
                            .iter()
                            .filter(|t| !t.passed)
                            .map(|t| format!("{} (measured {:?})", t.threshold, t.measured))
                            .collect(),
                    ));
                }
                dirs.push(dir);
            }
        }
    }
    r.verdicts = shard_verdicts.clone();
    if header.shards > 1 && dirs.len() == header.shards as usize {
        let merged = report_dir.join("merged");
        match run::merge_dirs(&dirs, &merged, Some(file), false) {
            Ok(_) => match read_oracle(&merged) {
                Ok(o) if o.oracle.verdicts != shard_verdicts => {
                    r.failures.push(Failure::Merge(format!(
                        "merged verdicts {:?} are not the shards' sum {:?}",
                        o.oracle.verdicts, shard_verdicts
                    )))
                }
                Ok(_) => {}
                Err(e) => r.failures.push(Failure::Merge(e)),
            },
            Err(e) => r.failures.push(Failure::Merge(e.to_string())),
        }
    }
    r.wall = started.elapsed();
    r
}

/// What one report directory shows.
struct Found {
    verdicts: Verdicts,
    lockouts: u64,
    failures: Vec<Failure>,
}

fn read_oracle(dir: &Path) -> Result<OracleFile, String> {
    let path = dir.join(ORACLE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Does a fault of `s` explain checks that end in an error: devices
/// offline, or an engine slower than a door phone waits for it?
fn explains_errors(s: &Scenario) -> bool {
    let patience_ms = crate::devices::DeviceParams::quiet()
        .door_phone
        .reader_timeout_ms;
    s.faults.engine_added_latency.as_millis() >= u128::from(patience_ms)
        || !s.faults.offline_waves.is_empty()
        || !s.faults.broker_outages.is_empty()
        || s.fleet
            .devices
            .iter()
            .any(|g| g.behaviour.offline_chance_per_hour > 0.0)
}

/// Checks the invariants on the report directory of a finished run of `s`.
fn check_dir(dir: &Path, s: &Scenario) -> Result<Found, String> {
    let transport = s.transport;
    let o = read_oracle(dir)?;
    let report = crate::report::load_dir(dir).map_err(|e| e.to_string())?;
    let v = &o.oracle.verdicts;
    let mut failures = Vec::new();
    let kept = |ex: &[Example]| ex.iter().take(EXAMPLES_KEPT).cloned().collect();
    if v.false_accepts > 0 {
        failures.push(Failure::FalseAccepts {
            count: v.false_accepts,
            examples: kept(&o.oracle.false_accept_examples),
        });
    }
    if v.false_rejects > 0 {
        failures.push(Failure::FalseRejects {
            count: v.false_rejects,
            examples: kept(&o.oracle.false_reject_examples),
        });
    }
    if v.reason_mismatches > 0 {
        failures.push(Failure::ReasonMismatches {
            count: v.reason_mismatches,
            examples: kept(&o.oracle.reason_mismatch_examples),
        });
    }
    // HTTP has no event route: the devices keep their events.
    let h = &report.health;
    if transport != Transport::Http && h.events_emitted_total != h.events_logged_total {
        failures.push(Failure::Events {
            emitted: h.events_emitted_total,
            logged: h.events_logged_total,
        });
    }
    let d = &report.decisions;
    if d.counts.no_answer > 0 && !explains_errors(s) {
        let mut reasons: Vec<String> = d
            .no_answer_examples
            .iter()
            .map(|e| format!("{}: {}", e.credential_kind, e.actual))
            .collect();
        reasons.sort();
        reasons.dedup();
        reasons.truncate(EXAMPLES_KEPT);
        failures.push(Failure::Unanswered {
            count: d.counts.no_answer,
            reasons,
        });
    }
    Ok(Found {
        verdicts: v.clone(),
        lockouts: o.oracle.lockouts,
        failures,
    })
}

static PANICS: AtomicU64 = AtomicU64::new(0);
static LAST_PANIC: parking_lot::Mutex<Option<String>> = parking_lot::Mutex::new(None);
thread_local! {
    static THREAD_PANICS: Cell<u64> = const { Cell::new(0) };
}

/// Counts panics (in the whole process, and per thread), then hands them
/// to the hook that was there before. A panic inside a device actor or a
/// spawned task is caught by its runtime and would otherwise go unseen.
fn count_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            THREAD_PANICS.with(|c| c.set(c.get() + 1));
            let thread = std::thread::current();
            *LAST_PANIC.lock() = Some(format!(
                "{info} (thread {})",
                thread.name().unwrap_or("unnamed")
            ));
            previous(info);
        }));
    });
}

/// Runs one scenario on a thread of its own: a panic there, or in a task
/// of its run, fails the seed, and a run that never ends is left behind
/// after `timeout` (reported as hung).
fn execute_guarded(
    s: &Scenario,
    opts: RunOptions,
    timeout: Duration,
) -> Result<run::RunOutcome, Failure> {
    count_panics();
    let virtual_clock = s.clock == Clock::Virtual;
    let global_before = PANICS.load(Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    let scenario = s.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("soak-seed-{}", opts.seed))
        .stack_size(SEED_STACK_BYTES)
        .spawn(move || {
            let before = THREAD_PANICS.with(Cell::get);
            let r = run::execute(&scenario, &opts);
            let panics = THREAD_PANICS.with(Cell::get) - before;
            let _ = tx.send((r, panics));
        });
    let handle = spawned.map_err(|e| Failure::RunError(format!("cannot start a thread: {e}")))?;
    let (result, thread_panics) = match rx.recv_timeout(timeout) {
        Ok(x) => x,
        Err(mpsc::RecvTimeoutError::Timeout) => return Err(Failure::Hung(timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let msg = match handle.join() {
                Err(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".to_string()),
                Ok(()) => "the run's thread ended without a result".to_string(),
            };
            return Err(Failure::Panic(msg));
        }
    };
    let _ = handle.join();
    // A virtual run lives on its thread; a real one also on arbiter and
    // server threads, so any panic in the process while it ran counts.
    let panics = if virtual_clock {
        thread_panics
    } else {
        PANICS.load(Ordering::SeqCst) - global_before
    };
    if panics > 0 {
        let last = LAST_PANIC.lock().clone().unwrap_or_default();
        return Err(Failure::Panic(format!("{panics} panics; the last: {last}")));
    }
    result.map_err(|e| Failure::RunError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips() {
        let g = Generated {
            seed: 9,
            transport: Transport::Inproc,
            text: String::new(),
            features: {
                let mut f = FeatureSet::none();
                f.insert(Feature::Lockout);
                f.insert(Feature::Stays);
                f
            },
            shards: 3,
        };
        let text = Header::write(&g, Path::new("x/seed-9.toml"));
        let h = Header::parse(&text).unwrap();
        assert_eq!(h.features, vec![Feature::Stays, Feature::Lockout]);
        assert_eq!(h.shards, 3);
        assert!(text.contains("fleetsim run x/seed-9.toml --shard 2/3"));
        assert!(Header::parse("# soak-features: nope\n").is_err());
        assert!(Header::parse("# soak-shards: 0\n").is_err());
        assert_eq!(Header::parse("name = \"x\"\n").unwrap().shards, 1);
    }

    #[test]
    fn oracle_disagreements_are_categorized_by_action_and_answers() {
        let ex = |kind: &str, actual: &str| Example {
            device: 3,
            action: kind.to_string(),
            expected: "granted".to_string(),
            actual: actual.to_string(),
            ..Example::default()
        };
        let f = Failure::FalseRejects {
            count: 3,
            examples: vec![
                ex("pin_valid", "denied(locked_out)"),
                ex("pin_valid", "denied(locked_out)"),
                ex("card", "denied(wrong_pin)"),
            ],
        };
        assert_eq!(
            f.categories(),
            vec![
                "false_reject: card, expected granted, got denied(wrong_pin)".to_string(),
                "false_reject: pin_valid, expected granted, got denied(locked_out)".to_string(),
            ]
        );
        let e = Failure::RunError("the devices did not receive their codes within 120 s".into());
        assert_eq!(
            e.categories(),
            vec!["run_error: the devices did not receive their codes within".to_string()]
        );
    }
}
