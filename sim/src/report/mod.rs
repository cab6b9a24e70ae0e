//! Run reports: what a run measured, in files QA and CI can read.
//!
//! A [`RunReport`] is built from a merged [`Snapshot`] plus what only the
//! caller knows (seed, command line, resolved scenario, load model, threshold
//! results). It carries its merged HDR histograms (V2 deflate, base64), so
//! reports of shards merge exactly: [`merge`] decodes and adds histograms and
//! recomputes every percentile from them; percentiles are never averaged.
//!
//! Thresholds are evaluated by the caller against [`RunReport::metrics`]
//! (a flat map such as `check.pin.p99` in ms) and handed back with
//! [`RunReport::set_thresholds`].
//!
//! Files ([`write_all`]): `report.json` (schema: [`json_schema`]),
//! `report.html` (self-contained, inline SVG charts), `junit.xml` (one test
//! case per threshold) and `hdr/<operation>.hlog` (HdrHistogram interval logs).

mod arrivals;
mod harness;
mod html;
mod junit;
mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metrics::catalogue::{self, Stat};
use crate::metrics::hdr::{self, HdrError};
use crate::metrics::{
    DecisionExample, DecisionTally, DeviceCounts, HealthTally, Operation, Outcome, Snapshot,
    Transport, BATTERY_BUCKETS,
};

pub use arrivals::{ActionArrivals, ArrivalsReport, DropReason};
pub use harness::{HarnessCost, StartLag, LATE_START_MS};
pub use html::render_html;
pub use junit::render_junit;

/// Version of the report.json layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;
/// How `histograms` are encoded.
pub const HISTOGRAM_ENCODING: &str = "hdr-v2-deflate-base64";
/// Largest report.json [`load_dir`] reads (a month of one-minute intervals is far below).
pub const MAX_REPORT_BYTES: u64 = 512 * 1024 * 1024;

/// Quantiles of the latency percentile curve kept per operation.
const CURVE_QUANTILES: [f64; 14] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 1.0,
];

/// Errors of building, reading, writing and merging reports.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Histogram(#[from] HdrError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a fleetsim report: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: report is {size} bytes, more than the {MAX_REPORT_BYTES} bytes allowed")]
    TooLarge { path: PathBuf, size: u64 },
    #[error(
        "report schema version {found} is not supported (this fleetsim reads {SCHEMA_VERSION})"
    )]
    SchemaVersion { found: u32 },
    #[error("unknown {what} `{name}` in report histograms")]
    UnknownLabel { what: &'static str, name: String },
    #[error("histograms are encoded as `{0}`, expected `{HISTOGRAM_ENCODING}`")]
    Encoding(String),
    #[error("nothing to merge")]
    Empty,
    #[error("reports cannot be merged: {field} differs (`{first}` vs `{other}`)")]
    Mismatch {
        field: &'static str,
        first: String,
        other: String,
    },
    #[error("shard {index}/{count} appears twice")]
    DuplicateShard { index: u32, count: u32 },
}

/// Open or closed load model. The closed model measures from the actual
/// start (a waiting user does not arrive), so its latencies can hide
/// queueing; reports say which one produced the numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadModel {
    /// Arrival rate; latency from the intended start (coordinated omission avoided).
    Open,
    /// A fixed number of concurrent users; latency from the actual start.
    Closed { concurrency: u64 },
}

impl LoadModel {
    pub fn label(&self) -> String {
        match self {
            LoadModel::Open => "open model: latency measured from the intended start time".into(),
            LoadModel::Closed { concurrency } => format!(
                "closed model ({concurrency} concurrent users): latency measured from the actual start, \
                 coordinated omission is not corrected"
            ),
        }
    }

    fn short(&self) -> &'static str {
        match self {
            LoadModel::Open => "open",
            LoadModel::Closed { .. } => "closed",
        }
    }
}

/// Which slice of the fleet a report covers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ShardId {
    /// 0-based.
    pub index: u32,
    pub count: u32,
}

/// One report that went into a merged report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardSummary {
    pub shard: Option<ShardId>,
    pub command: String,
    pub duration_s: f64,
    pub operations: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// The shard this report covers; `None` for a whole fleet or a merged report.
    pub shard: Option<ShardId>,
    /// The reports merged into this one (empty unless merged).
    pub merged_from: Vec<ShardSummary>,
}

/// What the caller knows about the run that the metrics do not.
#[derive(Clone, Debug, PartialEq)]
pub struct RunMeta {
    /// Scenario name.
    pub name: String,
    pub seed: u64,
    /// The command line that reproduces this run.
    pub command: String,
    /// The resolved scenario (after defaults and CLI overrides).
    pub scenario: serde_json::Value,
    pub model: LoadModel,
    /// `inproc`, `mqtt` or `http`.
    pub transport: String,
    /// `real` or `virtual`.
    pub clock: String,
    /// Wall-clock start (RFC 3339), informational; `None` keeps reports byte-identical across replays.
    pub started_at: Option<String>,
    /// Length of the measured run in (real or virtual) seconds.
    pub duration_s: f64,
    pub shard: Option<ShardId>,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    #[serde(default)]
    pub p95_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            p99_9_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: round3(h.mean()),
        }
    }
}

/// One point of a latency percentile curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    pub quantile: f64,
    pub latency_us: u64,
}

/// One operation over the whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationStats {
    pub count: u64,
    pub granted: u64,
    pub denied: u64,
    pub errors: u64,
    /// Completed operations per second over the run.
    pub rate_per_s: f64,
    /// All outcomes together.
    pub latency: LatencySummary,
    /// Keyed by outcome (`granted`, `denied`, `error`).
    pub by_outcome: BTreeMap<String, LatencySummary>,
    pub curve: Vec<CurvePoint>,
}

impl OperationStats {
    fn of(
        per_outcome: &[(Outcome, Option<&Histogram<u64>>)],
        all: &Histogram<u64>,
        duration_s: f64,
    ) -> Self {
        let count_of = |o: Outcome| {
            per_outcome
                .iter()
                .filter(|(x, _)| *x == o)
                .filter_map(|(_, h)| h.map(|h| h.len()))
                .sum::<u64>()
        };
        OperationStats {
            count: all.len(),
            granted: count_of(Outcome::Granted),
            denied: count_of(Outcome::Denied),
            errors: count_of(Outcome::Error),
            rate_per_s: rate(all.len(), duration_s),
            latency: LatencySummary::of(all),
            // Several histograms may share an outcome (all credential checks):
            // add them, never pick one.
            by_outcome: Outcome::ALL
                .iter()
                .filter_map(|o| {
                    let same = per_outcome
                        .iter()
                        .filter(|(x, _)| x == o)
                        .filter_map(|(_, h)| *h);
                    let merged = crate::metrics::hdr::merged(same)?;
                    Some((o.as_str().to_owned(), LatencySummary::of(&merged)))
                })
                .collect(),
            curve: CURVE_QUANTILES
                .iter()
                .map(|q| CurvePoint {
                    quantile: *q,
                    latency_us: all.value_at_quantile(*q),
                })
                .collect(),
        }
    }
}

impl OperationStats {
    /// A statistic of the catalogue, in its base unit (latencies in ms).
    pub fn stat(&self, stat: Stat) -> f64 {
        let l = &self.latency;
        match stat {
            Stat::Count => self.count as f64,
            Stat::Errors => self.errors as f64,
            Stat::Min => ms(l.min_us),
            Stat::Mean => l.mean_us / 1000.0,
            Stat::P50 => ms(l.p50_us),
            Stat::P90 => ms(l.p90_us),
            Stat::P95 => ms(l.p95_us),
            Stat::P99 => ms(l.p99_us),
            Stat::P999 => ms(l.p99_9_us),
            Stat::Max => ms(l.max_us),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    /// Every operation, per second over the run.
    pub total_per_s: f64,
    /// Credential checks per second over the run.
    pub checks_per_s: f64,
    /// The busiest interval's rate.
    pub peak_interval_per_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    pub devices_total: u64,
    pub devices_online: u64,
    pub online_pct: Option<f64>,
    /// Keyed by device kind.
    pub devices: BTreeMap<String, DeviceCounts>,
    /// Devices per 10-point battery bucket: `[0,10)`, ..., `[90,100]`.
    pub battery_buckets: [u64; BATTERY_BUCKETS],
    pub events_emitted: BTreeMap<String, u64>,
    pub events_logged: BTreeMap<String, u64>,
    pub events_emitted_total: u64,
    pub events_logged_total: u64,
    /// Emitted but never logged (lost or still in flight at the end).
    pub events_lost: u64,
    /// Code actions (create, change, revoke) by how their sync ended.
    #[serde(default)]
    pub code_sync: BTreeMap<String, u64>,
    /// Code actions whose sync ended, stored or failed.
    #[serde(default)]
    pub code_sync_total: u64,
    /// Code actions not stored on every device of their door.
    #[serde(default)]
    pub code_sync_failed: u64,
}

impl HealthReport {
    fn of(t: &HealthTally) -> HealthReport {
        let emitted: u64 = t.events_emitted.values().sum();
        let logged: u64 = t.events_logged.values().sum();
        HealthReport {
            devices_total: t.devices_total(),
            devices_online: t.devices_online(),
            online_pct: t.online_pct().map(round3),
            devices: t.devices.clone(),
            battery_buckets: t.battery_buckets,
            events_emitted: t.events_emitted.clone(),
            events_logged: t.events_logged.clone(),
            events_emitted_total: emitted,
            events_logged_total: logged,
            events_lost: emitted.saturating_sub(logged),
            code_sync: t.code_sync.clone(),
            code_sync_total: t.code_sync_total(),
            code_sync_failed: t.code_sync_failed(),
        }
    }

    fn tally(&self) -> HealthTally {
        HealthTally {
            devices: self.devices.clone(),
            battery_buckets: self.battery_buckets,
            events_emitted: self.events_emitted.clone(),
            events_logged: self.events_logged.clone(),
            code_sync: self.code_sync.clone(),
        }
    }
}

/// One operation in one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntervalOperation {
    pub count: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// One interval of the time series (charts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntervalPoint {
    pub index: u64,
    /// Seconds since the run's start.
    pub start_s: f64,
    /// Operations completed in the interval (all kinds).
    pub count: u64,
    pub rate_per_s: f64,
    pub errors: u64,
    /// p99 of the credential checks completed in the interval.
    pub checks_p99_us: Option<u64>,
    /// Keyed by operation.
    pub by_operation: BTreeMap<String, IntervalOperation>,
}

/// One operation's interval histogram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodedInterval {
    pub index: u64,
    pub operation: String,
    pub errors: u64,
    pub histogram: String,
}

/// The merged histograms, so that reports can be merged exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodedHistograms {
    /// Always [`HISTOGRAM_ENCODING`]; values in microseconds.
    pub encoding: String,
    /// operation -> outcome -> histogram.
    pub operations: BTreeMap<String, BTreeMap<String, String>>,
    pub intervals: Vec<EncodedInterval>,
}

/// A threshold of the scenario with its measured value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdResult {
    /// Key in [`RunReport::metrics`], e.g. `check.pin.p99`.
    pub metric: String,
    /// As written in the scenario, e.g. `< 25ms`.
    pub expression: String,
    /// `None` when the run produced no value for the metric (which fails).
    pub measured: Option<f64>,
    /// Unit of `measured` (see [`metric_unit`]).
    pub unit: String,
    /// False for a failure and for a threshold not judged.
    pub passed: bool,
    /// Why the threshold was not judged (`simulated`: a latency threshold
    /// in virtual time): neither a pass nor a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_judged: Option<String>,
}

impl ThresholdResult {
    pub fn new(
        metric: &str,
        expression: &str,
        measured: Option<f64>,
        passed: bool,
    ) -> ThresholdResult {
        ThresholdResult {
            metric: metric.to_owned(),
            expression: expression.to_owned(),
            measured,
            unit: metric_unit(metric).to_owned(),
            passed,
            not_judged: None,
        }
    }

    /// The same threshold, not judged for `reason` (it neither passes nor
    /// fails the run).
    pub fn not_judged(mut self, reason: &str) -> ThresholdResult {
        self.passed = false;
        self.not_judged = Some(reason.to_owned());
        self
    }

    /// "pass", "FAIL" or "not judged: simulated".
    pub fn status(&self) -> String {
        match (&self.not_judged, self.passed) {
            (Some(why), _) => format!("not judged: {why}"),
            (None, true) => "pass".to_owned(),
            (None, false) => "FAIL".to_owned(),
        }
    }

    /// "measured 31.2 ms, expected < 25ms"
    pub fn describe(&self) -> String {
        let measured = match self.measured {
            Some(v) => format!("{} {}", fmt_num(v), self.unit)
                .trim_end()
                .to_owned(),
            None => "no value".to_owned(),
        };
        let why = match self.not_judged.as_deref() {
            Some(NOT_JUDGED_SIMULATED) => {
                " (not judged: the latency is simulated, not measured)".to_owned()
            }
            Some(other) => format!(" (not judged: {other})"),
            None => String::new(),
        };
        format!("measured {measured}, expected {}{why}", self.expression)
    }
}

/// Why a latency threshold of a virtual-time run is not judged.
pub const NOT_JUDGED_SIMULATED: &str = "simulated";

/// What a `--fleet` run records in its report, so `merge` can check every
/// shard drove the same fleet (never the token or a secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetRef {
    /// The manifest's path as the worker was given it.
    pub manifest: String,
    /// A hash of the manifest's bytes.
    pub manifest_hash: String,
    /// The shared server.
    pub target: String,
    /// Over mqtt: the broker the devices connected to.
    pub broker: Option<String>,
    /// The server's id of the fleet's organization.
    pub organization: u32,
}

/// Everything a run measured; `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    pub schema_version: u32,
    pub fleetsim_version: String,
    pub name: String,
    pub seed: u64,
    /// The command that reproduces this run.
    pub command: String,
    pub scenario: serde_json::Value,
    pub model: LoadModel,
    /// Human-readable description of the model and what latency means under it.
    pub model_label: String,
    pub transport: String,
    pub clock: String,
    pub started_at: Option<String>,
    pub duration_s: f64,
    /// Length of one time-series interval (and HDR log interval): it grows
    /// with the run's planned length (`metrics::interval_us_for`).
    pub interval_s: f64,
    /// Latencies are simulated, not measured (virtual clock: a check takes
    /// no time and what is recorded is a timer's rounding, 0-1 ms).
    /// Latency thresholds are then not judged unless the scenario asks.
    #[serde(default)]
    pub latency_simulated: bool,
    /// True when every threshold passed or was not judged (and vacuously
    /// when there are none).
    pub passed: bool,
    pub shards: ShardInfo,
    /// Keyed by operation (`pin_check`, ...).
    pub operations: BTreeMap<String, OperationStats>,
    /// All credential checks together.
    pub checks: Option<OperationStats>,
    pub throughput: Throughput,
    pub decisions: DecisionTally,
    pub thresholds: Vec<ThresholdResult>,
    pub health: HealthReport,
    /// Arrivals that waited in a device's queue (started later than the
    /// load model intended; their latency still counts from the intended start).
    pub arrivals_behind_schedule: u64,
    /// What happened to every arrival.
    #[serde(default)]
    pub arrivals: ArrivalsReport,
    /// The run this report belongs to: shards of one run share it (derived
    /// from the resolved scenario and the seed, or `--run-id`).
    #[serde(default)]
    pub run_id: String,
    /// What the harness process itself cost over the load, and whether it
    /// was the bottleneck (`None`: a report from before it was measured).
    #[serde(default)]
    pub harness: Option<HarnessCost>,
    /// Set when `fleetsim merge --allow-partial` merged an incomplete or
    /// mixed set of reports: what is missing or mixed.
    #[serde(default)]
    pub partial: Option<String>,
    /// A run on a fleet provisioned once on a shared server (`run
    /// --fleet`): the manifest and the server; every shard of a merge
    /// must name the same manifest.
    #[serde(default)]
    pub fleet: Option<FleetRef>,
    pub intervals_dropped: u64,
    pub timeseries: Vec<IntervalPoint>,
    pub histograms: EncodedHistograms,
}

impl RunReport {
    /// Builds a report from a (merged) snapshot. Thresholds start empty.
    pub fn build(meta: RunMeta, snap: &Snapshot) -> Result<RunReport, ReportError> {
        let duration_s = meta.duration_s.max(0.0);
        let interval_s = snap.interval_us as f64 / 1e6;
        // As `Scenario::latency_simulated`: the virtual clock.
        let latency_simulated = meta.clock == "virtual";

        let mut operations = BTreeMap::new();
        let mut encoded_ops = BTreeMap::new();
        for op in Operation::ALL {
            let Some(all) = snap.operation_histogram(op) else {
                continue;
            };
            let per: Vec<_> = Outcome::ALL
                .iter()
                .map(|o| (*o, snap.histogram(op, *o)))
                .collect();
            operations.insert(
                op.as_str().to_owned(),
                OperationStats::of(&per, &all, duration_s),
            );
            let mut enc = BTreeMap::new();
            for (o, h) in per {
                if let Some(h) = h {
                    enc.insert(o.as_str().to_owned(), hdr::encode_base64(h)?);
                }
            }
            encoded_ops.insert(op.as_str().to_owned(), enc);
        }
        let checks = snap.checks_histogram().map(|all| {
            let per: Vec<_> = Outcome::ALL
                .iter()
                .flat_map(|o| {
                    Operation::ALL
                        .iter()
                        .filter(|op| op.is_credential_check())
                        .map(move |op| (*o, snap.histogram(*op, *o)))
                })
                .collect();
            OperationStats::of(&per, &all, duration_s)
        });

        let (timeseries, intervals) = timeseries(snap, interval_s)?;
        let total: u64 = operations.values().map(|s| s.count).sum();
        let throughput = Throughput {
            total_per_s: rate(total, duration_s),
            checks_per_s: checks.as_ref().map_or(0.0, |c| c.rate_per_s),
            peak_interval_per_s: timeseries.iter().map(|p| p.rate_per_s).fold(0.0, f64::max),
        };

        Ok(RunReport {
            schema_version: SCHEMA_VERSION,
            fleetsim_version: env!("CARGO_PKG_VERSION").to_owned(),
            name: meta.name,
            seed: meta.seed,
            command: meta.command,
            scenario: meta.scenario,
            model_label: meta.model.label(),
            model: meta.model,
            transport: meta.transport,
            clock: meta.clock,
            started_at: meta.started_at,
            duration_s,
            interval_s,
            latency_simulated,
            passed: true,
            shards: ShardInfo {
                shard: meta.shard,
                merged_from: Vec::new(),
            },
            operations,
            checks,
            throughput,
            decisions: snap.decisions.clone(),
            thresholds: Vec::new(),
            health: HealthReport::of(&snap.health),
            arrivals_behind_schedule: snap.behind_schedule,
            arrivals: ArrivalsReport::default(),
            run_id: String::new(),
            harness: None,
            partial: None,
            fleet: None,
            intervals_dropped: snap.intervals_dropped,
            timeseries,
            histograms: EncodedHistograms {
                encoding: HISTOGRAM_ENCODING.to_owned(),
                operations: encoded_ops,
                intervals,
            },
        })
    }

    /// Records the caller's threshold evaluation; `passed` follows it
    /// (thresholds not judged neither pass nor fail it).
    pub fn set_thresholds(&mut self, thresholds: Vec<ThresholdResult>) {
        self.passed = thresholds
            .iter()
            .all(|t| t.passed || t.not_judged.is_some());
        self.thresholds = thresholds;
    }

    /// Decodes the histograms back into a snapshot (the inverse of [`RunReport::build`]).
    pub fn to_snapshot(&self) -> Result<Snapshot, ReportError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(ReportError::SchemaVersion {
                found: self.schema_version,
            });
        }
        if self.histograms.encoding != HISTOGRAM_ENCODING {
            return Err(ReportError::Encoding(self.histograms.encoding.clone()));
        }
        let mut s = Snapshot::empty((self.interval_s * 1e6).round() as u64);
        for (op, outcomes) in &self.histograms.operations {
            let op = parse_op(op)?;
            for (o, b64) in outcomes {
                let o = Outcome::parse(o).ok_or_else(|| ReportError::UnknownLabel {
                    what: "outcome",
                    name: o.clone(),
                })?;
                s.add_histogram(op, o, &hdr::decode_base64(b64)?)?;
            }
        }
        for i in &self.histograms.intervals {
            s.insert_interval(
                i.index,
                parse_op(&i.operation)?,
                i.errors,
                hdr::decode_base64(&i.histogram)?,
            )?;
        }
        s.decisions = self.decisions.clone();
        s.health = self.health.tally();
        s.behind_schedule = self.arrivals_behind_schedule;
        s.intervals_dropped = self.intervals_dropped;
        Ok(s)
    }

    /// The report's part of the metrics thresholds are evaluated against
    /// (the run adds what only the oracle and the devices know), named and
    /// in the units of [`catalogue`]: latencies in ms (`check.pin.p99`),
    /// shares as fractions (`errors.rate` = 0.001 for 0.1 %), counts as
    /// counts. A metric this report's transport cannot measure is left
    /// out, not reported as a number (HTTP has no event route: no events
    /// are logged, none are lost).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for series in catalogue::SERIES {
            let stats = match series.operation {
                Some(op) => self.operations.get(op.as_str()),
                None => self.checks.as_ref(),
            };
            let Some(s) = stats else { continue };
            for stat in Stat::ALL {
                m.insert(format!("{}.{}", series.prefix, stat.name()), s.stat(stat));
            }
        }
        let d = &self.decisions.counts;
        let judged = d.total().max(1) as f64;
        // Errors of what someone waits for (checks, remote opens): event
        // deliveries and code syncs have their own thresholds.
        let requests = || {
            self.operations
                .iter()
                .filter(|(name, _)| Operation::parse(name).is_none_or(|op| !op.is_delivery()))
                .map(|(_, s)| s)
        };
        let total_ops: u64 = requests().map(|s| s.count).sum();
        let errors: u64 = requests().map(|s| s.errors).sum();
        let h = &self.health;
        for (k, v) in [
            ("decisions.true_grant", d.true_grants as f64),
            ("decisions.true_denial", d.true_denials as f64),
            ("decisions.false_accept", d.false_accepts as f64),
            ("decisions.false_reject", d.false_rejects as f64),
            (
                "decisions.false_accept_rate",
                d.false_accepts as f64 / judged,
            ),
            (
                "decisions.false_reject_rate",
                d.false_rejects as f64 / judged,
            ),
            ("decisions.no_answer", d.no_answer as f64),
            ("decisions.ambiguous", d.ambiguous as f64),
            ("decisions.uncertain", d.uncertain as f64),
            ("decisions.total", d.total() as f64),
            ("errors.count", errors as f64),
            (
                "errors.rate",
                if total_ops == 0 {
                    0.0
                } else {
                    errors as f64 / total_ops as f64
                },
            ),
            ("checks.per_s", self.throughput.checks_per_s),
            ("operations.per_s", self.throughput.total_per_s),
            ("events.emitted", h.events_emitted_total as f64),
            ("events.logged", h.events_logged_total as f64),
            ("events.lost", h.events_lost as f64),
            ("code_sync.total", h.code_sync_total as f64),
            ("code_sync.failed", h.code_sync_failed as f64),
            (
                "code_sync.failed_rate",
                if h.code_sync_total == 0 {
                    0.0
                } else {
                    h.code_sync_failed as f64 / h.code_sync_total as f64
                },
            ),
            ("devices.total", h.devices_total as f64),
            ("devices.online", h.devices_online as f64),
            (
                "arrivals.behind_schedule",
                self.arrivals_behind_schedule as f64,
            ),
        ] {
            m.insert(k.to_owned(), v);
        }
        if let Some(p) = h.online_pct {
            m.insert("devices.online_pct".to_owned(), p);
        }
        debug_assert!(
            m.keys().all(|k| catalogue::lookup(k).is_some()),
            "a metric outside the catalogue: {:?}",
            m.keys().find(|k| catalogue::lookup(k).is_none())
        );
        if let Some(t) = Transport::parse(&self.transport) {
            m.retain(|k, _| catalogue::measurable(k, t));
        }
        m
    }

    /// The examples kept for a decision metric (`decisions.false_accept`,
    /// its rate, ...), with a title; `None` for other metrics.
    pub fn examples_for(&self, metric: &str) -> Option<(&'static str, &[DecisionExample])> {
        let d = &self.decisions;
        let (title, list) = match metric {
            "decisions.false_accept" | "decisions.false_accept_rate" => (
                "false accepts (expected denied, granted)",
                &d.false_accept_examples,
            ),
            "decisions.false_reject" | "decisions.false_reject_rate" => (
                "false rejects (expected granted, denied)",
                &d.false_reject_examples,
            ),
            "decisions.reason_mismatch" => (
                "reason mismatches (denied for another reason)",
                &d.reason_mismatch_examples,
            ),
            "decisions.no_answer" | "errors.count" | "errors.rate" => {
                ("checks without an answer", &d.no_answer_examples)
            }
            _ => return None,
        };
        Some((title, list))
    }

    /// A few lines for the console at the end of a run.
    pub fn summary_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} seed={} {} {:.1}s ({}): {}",
            self.name,
            self.seed,
            self.transport,
            self.duration_s,
            self.model.short(),
            if self.passed { "PASSED" } else { "FAILED" }
        );
        if self.latency_simulated {
            let _ = writeln!(s, "  latencies simulated (virtual time), not measured");
        }
        let _ = writeln!(
            s,
            "  {:<16} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "operation", "count", "rate/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
        );
        for (name, o) in &self.operations {
            let l = &o.latency;
            let _ = writeln!(
                s,
                "  {:<16} {:>10} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7}",
                name,
                o.count,
                o.rate_per_s,
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.p99_9_us),
                ms(l.max_us),
                o.errors
            );
        }
        let d = &self.decisions.counts;
        let _ = writeln!(
            s,
            "  decisions: {} true grants, {} true denials, {} false accepts, {} false rejects, {} unanswered, {} ambiguous, {} uncertain",
            d.true_grants, d.true_denials, d.false_accepts, d.false_rejects, d.no_answer, d.ambiguous, d.uncertain
        );
        for t in &self.thresholds {
            let _ = writeln!(
                s,
                "  [{}] {} {}: {}",
                t.status(),
                t.metric,
                t.expression,
                t.describe()
            );
        }
        if !self.passed {
            let _ = writeln!(s, "  reproduce: {}", self.command);
        }
        s
    }
}

/// The unit of a metric's measured values (see [`catalogue::Entry::unit`]).
pub fn metric_unit(metric: &str) -> &'static str {
    catalogue::lookup(metric).map_or("", |e| e.unit())
}

/// Merges shard reports: histograms decoded and added, counts summed,
/// percentiles recomputed from the merged histograms, time series merged by
/// interval number. Thresholds are left empty for the caller to evaluate.
pub fn merge(reports: Vec<RunReport>) -> Result<RunReport, ReportError> {
    let first = reports.first().ok_or(ReportError::Empty)?.clone();
    let mut snap = first.to_snapshot()?;
    let mut seen = Vec::new();
    let mut merged_from = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let same = |field: &'static str, a: String, b: String| {
            if a == b {
                Ok(())
            } else {
                Err(ReportError::Mismatch {
                    field,
                    first: a,
                    other: b,
                })
            }
        };
        same("scenario name", first.name.clone(), r.name.clone())?;
        same("seed", first.seed.to_string(), r.seed.to_string())?;
        same(
            "interval",
            first.interval_s.to_string(),
            r.interval_s.to_string(),
        )?;
        same(
            "load model",
            first.model.short().into(),
            r.model.short().into(),
        )?;
        if let Some(s) = r.shards.shard {
            if seen.contains(&s) {
                return Err(ReportError::DuplicateShard {
                    index: s.index,
                    count: s.count,
                });
            }
            seen.push(s);
        }
        if i > 0 {
            snap.merge(&r.to_snapshot()?)?;
        }
        if r.shards.merged_from.is_empty() {
            merged_from.push(ShardSummary {
                shard: r.shards.shard,
                command: r.command.clone(),
                duration_s: r.duration_s,
                operations: r.operations.values().map(|o| o.count).sum(),
            });
        } else {
            merged_from.extend(r.shards.merged_from.iter().cloned());
        }
    }
    let meta = RunMeta {
        name: first.name,
        seed: first.seed,
        command: first.command,
        scenario: first.scenario,
        model: first.model,
        transport: first.transport,
        clock: first.clock,
        started_at: reports.iter().filter_map(|r| r.started_at.clone()).min(),
        // Shards run side by side: the merged run lasts as long as the longest.
        duration_s: reports.iter().map(|r| r.duration_s).fold(0.0, f64::max),
        shard: None,
    };
    let mut out = RunReport::build(meta, &snap)?;
    out.arrivals = ArrivalsReport::merged(reports.iter().map(|r| &r.arrivals), out.duration_s);
    out.run_id = first.run_id;
    out.harness = HarnessCost::merged(
        reports.iter().filter_map(|r| {
            let name = match r.shards.shard {
                Some(s) => format!("shard {}/{}", s.index, s.count),
                None => "a report".to_string(),
            };
            r.harness.as_ref().map(|h| (name, h))
        }),
        out.checks.as_ref().map_or(0, |c| c.count),
    );
    out.fleetsim_version = first.fleetsim_version;
    out.shards.merged_from = merged_from;
    out.fleet = first.fleet;
    Ok(out)
}

/// Reads `report.json` from a report directory (or the file itself).
pub fn load_dir(path: &Path) -> Result<RunReport, ReportError> {
    let file = if path.is_dir() {
        path.join("report.json")
    } else {
        path.to_path_buf()
    };
    let io = |source| ReportError::Io {
        path: file.clone(),
        source,
    };
    let size = std::fs::metadata(&file).map_err(io)?.len();
    if size > MAX_REPORT_BYTES {
        return Err(ReportError::TooLarge { path: file, size });
    }
    let bytes = std::fs::read(&file).map_err(io)?;
    let report: RunReport = serde_json::from_slice(&bytes).map_err(|source| ReportError::Json {
        path: file.clone(),
        source,
    })?;
    if report.schema_version != SCHEMA_VERSION {
        return Err(ReportError::SchemaVersion {
            found: report.schema_version,
        });
    }
    Ok(report)
}

/// Writes `report.json`, `report.html`, `junit.xml` and `hdr/<operation>.hlog`
/// into `dir` (created if needed). Returns the files written.
/// The files [`write_all`] writes in a report directory, beside the HDR
/// logs in [`HDR_DIR`].
pub const REPORT_FILES: [&str; 3] = ["report.json", "report.html", "junit.xml"];
/// The subdirectory of the HDR interval logs (`hdr/<operation>.hlog`).
pub const HDR_DIR: &str = "hdr";

/// Creates the report directory and checks that every file a run writes
/// there (the report's, and `extra`) can be written, so that a run finds
/// out before its load, not after it, that it could not save its results.
/// Leaves nothing behind (a probe file is removed) and opens existing files
/// without truncating them: an earlier report is replaced only at the end.
pub fn prepare_dir(dir: &Path, extra: &[&str]) -> Result<(), ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let probe = dir.join(".fleetsim-write-check");
    std::fs::write(&probe, b"").map_err(io(&probe))?;
    std::fs::remove_file(&probe).map_err(io(&probe))?;
    let hdr = dir.join(HDR_DIR);
    let hdr_logs = Operation::ALL.map(|op| format!("{HDR_DIR}/{}.hlog", op.as_str()));
    let files = REPORT_FILES
        .iter()
        .chain(extra)
        .map(|f| dir.join(f))
        .chain(hdr_logs.iter().map(|f| dir.join(f)));
    for path in files {
        if path.symlink_metadata().is_ok() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
        }
    }
    if hdr.symlink_metadata().is_ok() && !hdr.is_dir() {
        return Err(ReportError::Io {
            path: hdr,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a directory (the HDR logs go there)",
            ),
        });
    }
    Ok(())
}

pub fn write_all(dir: &Path, report: &RunReport) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    let write = |name: &str, bytes: &[u8], written: &mut Vec<PathBuf>| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
        Ok::<_, ReportError>(())
    };
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|source| ReportError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    mkdir(dir)?;
    let [json_file, html_file, junit_file] = REPORT_FILES;
    let json = serde_json::to_vec_pretty(report).map_err(|source| ReportError::Json {
        path: dir.join(json_file),
        source,
    })?;
    write(json_file, &json, &mut written)?;
    write(html_file, render_html(report).as_bytes(), &mut written)?;
    write(junit_file, render_junit(report).as_bytes(), &mut written)?;
    if !report.histograms.intervals.is_empty() {
        mkdir(&dir.join(HDR_DIR))?;
        // Absolute StartTime/BaseTime headers when the run's start is known.
        let start_unix_s = report
            .started_at
            .as_deref()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond() as f64 / 1000.0);
        for op in Operation::ALL {
            let mut log = Vec::new();
            let mut of_op = report
                .histograms
                .intervals
                .iter()
                .filter(|i| i.operation == op.as_str())
                .peekable();
            if of_op.peek().is_none() {
                continue;
            }
            let secs = std::time::Duration::from_secs_f64;
            // Decoded one at a time as the log is written (see
            // `write_interval_log`).
            hdr::write_interval_log(
                &mut log,
                &format!(
                    "fleetsim {} {} seed={}",
                    report.fleetsim_version, report.name, report.seed
                ),
                start_unix_s,
                of_op.map(|i| {
                    let start = secs(i.index as f64 * report.interval_s);
                    let h = hdr::decode_base64(&i.histogram)?;
                    Ok((start, secs(report.interval_s), op.as_str(), h))
                }),
            )?;
            write(
                &format!("{HDR_DIR}/{}.hlog", op.as_str()),
                &log,
                &mut written,
            )?;
        }
    }
    Ok(written)
}

/// The JSON Schema of `report.json`.
pub fn json_schema() -> schemars::schema::RootSchema {
    schemars::schema_for!(RunReport)
}

fn timeseries(
    snap: &Snapshot,
    interval_s: f64,
) -> Result<(Vec<IntervalPoint>, Vec<EncodedInterval>), ReportError> {
    let mut points: Vec<IntervalPoint> = Vec::new();
    let mut encoded = Vec::new();
    let mut checks: Option<Histogram<u64>> = None;
    let close = |p: &mut IntervalPoint, checks: &mut Option<Histogram<u64>>| {
        p.checks_p99_us = checks.take().map(|h| h.value_at_quantile(0.99));
    };
    for slot in snap.intervals() {
        let h = slot.histogram()?;
        if points.last().map(|p| p.index) != Some(slot.index) {
            if let Some(p) = points.last_mut() {
                close(p, &mut checks);
            }
            points.push(IntervalPoint {
                index: slot.index,
                start_s: round3(slot.index as f64 * interval_s),
                count: 0,
                rate_per_s: 0.0,
                errors: 0,
                checks_p99_us: None,
                by_operation: BTreeMap::new(),
            });
        }
        let p = points.last_mut().expect("pushed above");
        p.count += h.len();
        p.rate_per_s = rate(p.count, interval_s);
        p.errors += slot.errors;
        p.by_operation.insert(
            slot.operation.as_str().to_owned(),
            IntervalOperation {
                count: h.len(),
                errors: slot.errors,
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            },
        );
        if slot.operation.is_credential_check() {
            match &mut checks {
                Some(c) => hdr::add(c, &h)?,
                None => checks = Some(h.clone()),
            }
        }
        encoded.push(EncodedInterval {
            index: slot.index,
            operation: slot.operation.as_str().to_owned(),
            errors: slot.errors,
            histogram: hdr::encode_base64(&h)?,
        });
    }
    if let Some(p) = points.last_mut() {
        close(p, &mut checks);
    }
    Ok((points, encoded))
}

fn parse_op(s: &str) -> Result<Operation, ReportError> {
    Operation::parse(s).ok_or_else(|| ReportError::UnknownLabel {
        what: "operation",
        name: s.to_owned(),
    })
}

fn rate(count: u64, duration_s: f64) -> f64 {
    if duration_s > 0.0 {
        round3(count as f64 / duration_s)
    } else {
        0.0
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Rounded to 3 decimals: stable JSON across platforms and merges.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A number without trailing noise: 31.2, 0, 0.001.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}
