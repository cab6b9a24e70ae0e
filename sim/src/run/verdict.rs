//! The end of a run: the report (through [`crate::report`]), the threshold
//! metrics map in the units of [`crate::scenario::threshold`], the verdict,
//! the summary table, and `fleetsim merge` of shard reports.
//!
//! The oracle's finer results (reason mismatches, ambiguous and uncertain
//! attempts, lockouts, the truth table census, attempts per action) go to
//! `oracle.json` next to `report.json`; merge sums them too.
//!
//! Merge refuses a set of reports that is not one whole run: each report
//! records its shard `i/n` and the run's id, and a missing or duplicated
//! shard, an unsharded report among shards, or mixed scenarios, seeds or
//! run ids are named (exit code 2). `--allow-partial` merges a set with
//! shards missing and marks the verdict partial; duplicated or mixed sets
//! are refused even then, as their numbers would be wrong, not incomplete.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::load::{Measured, OracleSummary};
use super::{RunError, RunOptions, RunOutcome};
use crate::metrics::catalogue;
use crate::report::{self, ArrivalsReport, HarnessCost, LoadModel, RunMeta, RunReport, ShardId};
use crate::scenario::{self, evaluate_all, Scenario, ThresholdResult};

/// `oracle.json`: what the oracle found beyond the report's decision counts.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OracleFile {
    pub oracle: OracleSummary,
    /// Attempts made per action (report.json's `arrivals.actions.*.ran`).
    pub actions: BTreeMap<String, u64>,
    /// Commands the run could not make that are no arrival (provisioning a
    /// target's API cannot take, a host's check-in a server refused);
    /// arrivals not served are in report.json's `arrivals`.
    pub skipped: BTreeMap<String, u64>,
    /// Most devices offline at once, waves and spells (summed over shards).
    #[serde(default)]
    pub devices_offline_max: u64,
    #[serde(default)]
    pub motor_blocked: u64,
    #[serde(default)]
    pub battery_min_pct: Option<f64>,
    #[serde(default)]
    pub battery_low_events: u64,
    /// Events the engine side saw again after logging them; absent when the
    /// transport has no event route (http).
    #[serde(default)]
    pub events_duplicated: Option<u64>,
    /// MQTT connections made again after a loss; absent unless mqtt.
    #[serde(default)]
    pub mqtt_reconnects: Option<u64>,
}

pub const ORACLE_FILE: &str = "oracle.json";

/// The threshold metrics: the report's map plus what only the oracle and
/// the devices know, every name from [`catalogue`] and measurable on the
/// report's transport.
pub fn threshold_metrics(r: &RunReport, o: &OracleFile) -> BTreeMap<String, f64> {
    let mut m = r.metrics();
    m.insert("lockouts.count".into(), o.oracle.lockouts as f64);
    m.insert("devices.offline_max".into(), o.devices_offline_max as f64);
    m.insert("motor_blocked.count".into(), o.motor_blocked as f64);
    m.insert("battery.low_events".into(), o.battery_low_events as f64);
    if let Some(b) = o.battery_min_pct {
        m.insert("battery.min_pct".into(), b);
    }
    if let Some(n) = o.events_duplicated {
        m.insert("events.duplicated".into(), n as f64);
    }
    if let Some(n) = o.mqtt_reconnects {
        m.insert("mqtt.reconnects".into(), n as f64);
    }
    let verdicts = &o.oracle.verdicts;
    m.insert(
        "decisions.reason_mismatch".into(),
        verdicts.reason_mismatches as f64,
    );
    m.insert("decisions.ambiguous".into(), verdicts.ambiguous as f64);
    let a = &r.arrivals;
    for (k, v) in [
        ("arrivals.offered", a.offered as f64),
        ("arrivals.served", a.served as f64),
        ("arrivals.skipped", a.skipped as f64),
        ("arrivals.dropped", a.dropped as f64),
        ("arrivals.queued_at_end", a.queued_at_end as f64),
        ("arrivals.skipped_rate", a.skipped_rate),
        ("arrivals.dropped_rate", a.dropped_rate),
        ("arrivals.offered_per_s", a.offered_per_s),
        ("arrivals.served_per_s", a.served_per_s),
    ] {
        m.insert(k.into(), v);
    }
    debug_assert!(
        m.keys()
            .all(|k| crate::metrics::Transport::parse(&r.transport)
                .is_none_or(|t| catalogue::measurable(k, t))),
        "a metric outside the catalogue, or one it says {} cannot measure: {:?}",
        r.transport,
        m.keys().collect::<Vec<_>>()
    );
    m
}

fn to_report_thresholds(rs: &[ThresholdResult]) -> Vec<report::ThresholdResult> {
    rs.iter()
        .map(|r| {
            let t = report::ThresholdResult::new(
                &r.threshold.metric,
                &r.threshold.text,
                r.measured,
                r.passed,
            );
            match &r.not_judged {
                Some(why) => t.not_judged(why),
                None => t,
            }
        })
        .collect()
}

/// Latency thresholds of a run whose latencies are simulated are not
/// judged, unless the scenario asks (`judge_simulated_latency`).
fn skip_simulated(s: &Scenario, results: &mut [ThresholdResult]) {
    if !s.latency_simulated() || s.judge_simulated_latency {
        return;
    }
    for r in results
        .iter_mut()
        .filter(|r| r.threshold.kind == scenario::MetricKind::Latency)
    {
        r.passed = false;
        r.not_judged = Some(report::NOT_JUDGED_SIMULATED.to_owned());
    }
}

/// Builds, judges and writes the report of a finished run.
pub fn finish(s: &Scenario, opts: &RunOptions, m: Measured) -> Result<RunOutcome, RunError> {
    let meta = RunMeta {
        name: s.name.clone(),
        seed: opts.seed,
        command: opts.reproduce.clone(),
        scenario: serde_json::to_value(s).unwrap_or_default(),
        model: match m.closed_people {
            Some(n) => LoadModel::Closed { concurrency: n },
            None => LoadModel::Open,
        },
        transport: scenario::transport_name(opts.transport).to_string(),
        clock: match s.clock {
            scenario::Clock::Real => "real".into(),
            scenario::Clock::Virtual => "virtual".into(),
        },
        started_at: Some(crate::clock::display_ms(m.started_at)),
        duration_s: m.duration_s,
        shard: (opts.shard.count > 1).then_some(ShardId {
            index: opts.shard.index,
            count: opts.shard.count,
        }),
    };
    let mut snapshot = m.snapshot;
    let o = &m.oracle;
    snapshot.decisions.adopt_examples(
        &o.false_accept_examples,
        &o.false_reject_examples,
        &o.reason_mismatch_examples,
    );
    let mut r = RunReport::build(meta, &snapshot)?;
    r.run_id = opts.run_id.clone();
    r.fleet = opts.fleet.as_ref().map(|f| f.reference.clone());
    let actions = m
        .arrivals
        .iter()
        .filter(|(_, a)| a.ran > 0)
        .map(|(k, a)| (k.clone(), a.ran))
        .collect();
    r.arrivals = ArrivalsReport::of(m.arrivals, s.total_duration().as_secs_f64(), r.duration_s);
    let checks = r.checks.as_ref().map_or(0, |c| c.count);
    r.harness = Some(HarnessCost::of(&m.harness, checks, m.start_lag));
    let extra = OracleFile {
        oracle: m.oracle,
        actions,
        skipped: m.skipped,
        devices_offline_max: m.offline_max,
        motor_blocked: m.motor_blocked,
        battery_min_pct: m.battery_min_pct,
        battery_low_events: m.battery_low_events,
        events_duplicated: m.events_duplicated,
        mqtt_reconnects: m.mqtt_reconnects,
    };
    judge_and_write(s, &mut r, &extra, &opts.report_dir)
}

fn judge_and_write(
    s: &Scenario,
    r: &mut RunReport,
    extra: &OracleFile,
    dir: &Path,
) -> Result<RunOutcome, RunError> {
    let metrics = threshold_metrics(r, extra);
    let mut results = evaluate_all(&s.thresholds, &metrics);
    skip_simulated(s, &mut results);
    r.set_thresholds(to_report_thresholds(&results));
    report::write_all(dir, r)?;
    let json = serde_json::to_vec_pretty(extra).unwrap_or_default();
    std::fs::write(dir.join(ORACLE_FILE), json)?;
    let passed = scenario::threshold::all_passed(&results);
    Ok(RunOutcome {
        summary: summary(r, extra),
        thresholds: results,
        passed,
        report_dir: dir.to_path_buf(),
    })
}

/// A `--fleet` run's shared target, manifest and workers, in one line.
pub fn shared_fleet_line(r: &RunReport) -> Option<String> {
    let f = r.fleet.as_ref()?;
    let workers: Vec<String> = r
        .shards
        .merged_from
        .iter()
        .map(|m| shard_name(m.shard))
        .collect();
    let workers = match (workers.is_empty(), r.shards.shard) {
        (false, _) => format!("; workers: {}", workers.join(", ")),
        (true, Some(s)) => format!("; worker: {}", shard_name(Some(s))),
        (true, None) => String::new(),
    };
    let broker = f
        .broker
        .as_ref()
        .map(|b| format!(" (devices through {b})"))
        .unwrap_or_default();
    Some(format!(
        "shared target: {}{broker}, organization {}; fleet manifest {} (hash {}){workers}",
        f.target, f.organization, f.manifest, f.manifest_hash
    ))
}

/// The end-of-run table.
pub fn summary(r: &RunReport, o: &OracleFile) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ({}, {}, {}): {:.1} s",
        r.name,
        r.transport,
        r.clock,
        match r.model {
            LoadModel::Open => "open model".to_string(),
            LoadModel::Closed { concurrency } => format!("closed model, {concurrency} people"),
        },
        r.duration_s
    );
    let _ = writeln!(
        s,
        "time series: {} intervals of {} s",
        r.timeseries.len(),
        report::fmt_num(r.interval_s)
    );
    if r.latency_simulated {
        let skipped = r
            .thresholds
            .iter()
            .filter(|t| t.not_judged.is_some())
            .count();
        let _ = writeln!(
            s,
            "latencies are simulated (virtual time), not measured; {skipped} latency thresholds not judged"
        );
    }
    let _ = writeln!(
        s,
        "{:<15} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "operation", "count", "granted", "denied", "errors", "p50 ms", "p99 ms"
    );
    // Named as thresholds name them (`check.pin`, `code_sync`).
    for series in catalogue::SERIES {
        let op = match series.operation {
            Some(op) => r.operations.get(op.as_str()),
            None => r.checks.as_ref(),
        };
        let Some(op) = op else { continue };
        let _ = writeln!(
            s,
            "{:<15} {:>9} {:>9} {:>9} {:>7} {:>10.3} {:>10.3}",
            series.prefix,
            op.count,
            op.granted,
            op.denied,
            op.errors,
            op.latency.p50_us as f64 / 1000.0,
            op.latency.p99_us as f64 / 1000.0
        );
    }
    let v = &o.oracle.verdicts;
    let _ = writeln!(
        s,
        "oracle: {} true grants, {} true denials, {} false accepts, {} false rejects, {} reason mismatches, {} ambiguous (time edge), {} uncertain (after a check with unknown outcome), {} lockouts",
        v.true_grants, v.true_denials, v.false_accepts, v.false_rejects, v.reason_mismatches, v.ambiguous, v.uncertain, o.oracle.lockouts
    );
    if let Some(p) = &r.partial {
        let _ = writeln!(s, "PARTIAL verdict (--allow-partial): {p}");
    }
    if let Some(line) = shared_fleet_line(r) {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "throughput: {:.1} checks/s", r.throughput.checks_per_s);
    r.arrivals.summary_lines(&mut s, r.arrivals_behind_schedule);
    if let Some(h) = &r.harness {
        h.summary_lines(&mut s);
    }
    let h = &r.health;
    if !h.code_sync.is_empty() {
        let list: Vec<String> = h
            .code_sync
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "code actions: {} failed of {} ({}); {} attempts on changed or revoked codes",
            h.code_sync_failed,
            h.code_sync_total,
            list.join(", "),
            o.oracle.retired_attempts
        );
    }
    if !o.skipped.is_empty() {
        let list: Vec<String> = o.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "commands not made: {}", list.join(", "));
    }
    let d = &r.decisions;
    for (what, list) in [
        ("false accept", &d.false_accept_examples),
        ("false reject", &d.false_reject_examples),
        ("reason mismatch", &d.reason_mismatch_examples),
    ] {
        for ex in list.iter().take(SUMMARY_EXAMPLES) {
            let _ = writeln!(s, "  {what}: {ex}");
        }
    }
    s
}

/// Examples of each kind of mismatch the summary shows (report.json and
/// report.html have every one kept).
const SUMMARY_EXAMPLES: usize = 3;

/// What `fleetsim merge` found.
pub struct MergeOutcome {
    pub outcome: RunOutcome,
    pub shards: usize,
    /// What is missing when `--allow-partial` merged an incomplete set.
    pub partial: Option<String>,
}

/// The shards one report covers: its own, or those a merged report was
/// made of; `None` is a whole (unsharded) run.
fn coverage(r: &RunReport) -> Vec<Option<ShardId>> {
    if r.shards.merged_from.is_empty() {
        vec![r.shards.shard]
    } else {
        r.shards.merged_from.iter().map(|m| m.shard).collect()
    }
}

fn shard_name(s: Option<ShardId>) -> String {
    match s {
        Some(s) => format!("shard {}/{}", s.index, s.count),
        None => "an unsharded run".to_string(),
    }
}

/// Checks that `reports` (with their directories) make one whole run.
/// `Err`: every reason they do not, beyond missing shards. `Ok(Some)`: the
/// shards missing (an incomplete set); `Ok(None)`: complete.
pub fn check_set(reports: &[(PathBuf, RunReport)]) -> Result<Option<String>, Vec<String>> {
    let mut problems = Vec::new();
    let Some((first_dir, first)) = reports.first() else {
        return Err(vec!["no reports to merge".to_string()]);
    };
    let mixed = |what: &str, get: &dyn Fn(&RunReport) -> String, problems: &mut Vec<String>| {
        for (d, r) in &reports[1..] {
            if get(r) != get(first) {
                problems.push(format!(
                    "mixed {what}: {} has `{}`, {} has `{}`",
                    first_dir.display(),
                    get(first),
                    d.display(),
                    get(r)
                ));
            }
        }
    };
    mixed("scenarios", &|r| r.name.clone(), &mut problems);
    mixed("seeds", &|r| r.seed.to_string(), &mut problems);
    mixed("run ids", &|r| r.run_id.clone(), &mut problems);
    // Shards of a --fleet run drove one fleet: the same manifest.
    mixed(
        "fleet manifests",
        &|r| {
            r.fleet.as_ref().map_or_else(
                || "no --fleet".to_string(),
                |f| format!("{} (hash {})", f.manifest, f.manifest_hash),
            )
        },
        &mut problems,
    );
    let mut seen: BTreeMap<Option<ShardId>, Vec<String>> = BTreeMap::new();
    for (d, r) in reports {
        for s in coverage(r) {
            seen.entry(s).or_default().push(d.display().to_string());
        }
    }
    for (s, where_) in &seen {
        if where_.len() > 1 {
            problems.push(format!(
                "{} appears {} times ({})",
                shard_name(*s),
                where_.len(),
                where_.join(", ")
            ));
        }
    }
    let whole = seen.get(&None).cloned().unwrap_or_default();
    if !whole.is_empty() && seen.len() > 1 {
        problems.push(format!(
            "an unsharded report ({}) is mixed with shards: it already counts the whole run",
            whole.join(", ")
        ));
    }
    let counts: std::collections::BTreeSet<u32> = seen.keys().flatten().map(|s| s.count).collect();
    if counts.len() > 1 {
        let list: Vec<String> = counts.iter().map(u32::to_string).collect();
        problems.push(format!(
            "mixed shard counts: shards of {} runs",
            list.join(" and ")
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(n) = counts.first().copied() else {
        return Ok(None);
    };
    let missing: Vec<String> = (0..n)
        .filter(|i| {
            !seen.contains_key(&Some(ShardId {
                index: *i,
                count: n,
            }))
        })
        .map(|i| format!("{i}/{n}"))
        .collect();
    Ok((!missing.is_empty()).then(|| {
        format!(
            "shard{} {} missing",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        )
    }))
}

/// Merges the reports in `dirs` into `out` and evaluates the thresholds of
/// `scenario_file` (or of the scenario file the first report names).
/// `allow_partial`: merge a set with shards missing, marked partial.
pub fn merge_dirs(
    dirs: &[PathBuf],
    out: &Path,
    scenario_file: Option<&Path>,
    allow_partial: bool,
) -> Result<MergeOutcome, MergeError> {
    let mut reports = Vec::new();
    let mut extra = OracleFile::default();
    let mut loaded = Vec::new();
    for d in dirs {
        loaded.push((d.clone(), report::load_dir(d)?));
    }
    let partial = match check_set(&loaded) {
        Err(problems) => return Err(MergeError::NotOneRun(problems)),
        Ok(Some(missing)) if !allow_partial => {
            return Err(MergeError::NotOneRun(vec![format!(
                "{missing} (merge every shard, or pass --allow-partial for a partial verdict)"
            )]))
        }
        Ok(p) => p,
    };
    for (d, r) in loaded {
        reports.push(r);
        let d = &d;
        let o: OracleFile = match std::fs::read(d.join(ORACLE_FILE)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| MergeError::Oracle {
                dir: d.clone(),
                reason: e.to_string(),
            })?,
            Err(e) => {
                return Err(MergeError::Oracle {
                    dir: d.clone(),
                    reason: e.to_string(),
                })
            }
        };
        add_oracle(&mut extra, &o);
    }
    let file = match scenario_file {
        Some(f) => f.to_path_buf(),
        None => reports
            .first()
            .and_then(|r| r.scenario.get("file"))
            .and_then(|f| f.as_str())
            .map(PathBuf::from)
            .ok_or(MergeError::NoScenario)?,
    };
    let s = scenario::load(&file).map_err(|e| MergeError::Scenario(e.to_string()))?;
    let n = reports.len();
    let mut merged = report::merge(reports)?;
    merged.partial = partial.clone();
    let outcome = judge_and_write(&s, &mut merged, &extra, out)?;
    Ok(MergeOutcome {
        outcome,
        shards: n,
        partial,
    })
}

fn add_oracle(dst: &mut OracleFile, o: &OracleFile) {
    dst.oracle.verdicts.add(&o.oracle.verdicts);
    dst.oracle.retired_attempts += o.oracle.retired_attempts;
    dst.oracle.lockouts += o.oracle.lockouts;
    for (k, v) in &o.oracle.denials {
        *dst.oracle.denials.entry(k.clone()).or_default() += v;
    }
    // Every shard provisions the whole fleet: one census is the truth.
    if dst.oracle.truth_table.is_empty() {
        dst.oracle.truth_table = o.oracle.truth_table.clone();
    }
    for (mine, theirs) in [
        (
            &mut dst.oracle.false_accept_examples,
            &o.oracle.false_accept_examples,
        ),
        (
            &mut dst.oracle.false_reject_examples,
            &o.oracle.false_reject_examples,
        ),
        (
            &mut dst.oracle.reason_mismatch_examples,
            &o.oracle.reason_mismatch_examples,
        ),
    ] {
        let room = super::oracle::MAX_EXAMPLES.saturating_sub(mine.len());
        mine.extend(theirs.iter().take(room).cloned());
    }
    for (k, v) in &o.actions {
        *dst.actions.entry(k.clone()).or_default() += v;
    }
    dst.devices_offline_max += o.devices_offline_max;
    dst.motor_blocked += o.motor_blocked;
    dst.battery_low_events += o.battery_low_events;
    let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    dst.events_duplicated = add(dst.events_duplicated, o.events_duplicated);
    dst.mqtt_reconnects = add(dst.mqtt_reconnects, o.mqtt_reconnects);
    dst.battery_min_pct = match (dst.battery_min_pct, o.battery_min_pct) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    for (k, v) in &o.skipped {
        *dst.skipped.entry(k.clone()).or_default() += v;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0}")]
    Report(#[from] report::ReportError),
    #[error("{}: cannot read {ORACLE_FILE}: {reason}", dir.display())]
    Oracle { dir: PathBuf, reason: String },
    #[error("the reports do not name their scenario file; pass --scenario FILE")]
    NoScenario,
    #[error("scenario: {0}")]
    Scenario(String),
    #[error("the reports are not one whole run:\n  {}", .0.join("\n  "))]
    NotOneRun(Vec<String>),
    #[error("{0}")]
    Run(#[from] RunError),
}

impl From<std::io::Error> for MergeError {
    fn from(e: std::io::Error) -> Self {
        MergeError::Run(RunError::Io(e))
    }
}
