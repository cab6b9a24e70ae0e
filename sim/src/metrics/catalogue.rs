//! The metric catalogue: every metric a threshold may name, in one table.
//!
//! Everything else that names metrics derives from it: the threshold
//! checker ([`crate::scenario::Threshold::parse`]), the report's metric map
//! ([`crate::report::RunReport::metrics`]) and the run's threshold metrics
//! (`run::verdict::threshold_metrics`), which may only produce names listed
//! here, the end-of-run summary, the scenario JSON Schema (`fleetsim
//! schema`) and the metric tables of scenarios/README.md (`fleetsim metrics
//! --markdown`). Tests hold the two ends together: every name produced is
//! listed, and runs that exercise every operation on every transport
//! measure every name listed for that transport.
//!
//! Adding a metric is one line in [`METRICS`] (plus the code that measures
//! it). A latency statistic is a [`Stat`] variant; the report's exhaustive
//! [`Stat`] match makes every series produce it.
//!
//! # Units of measured values
//!
//! Metrics are held in base units: latencies in milliseconds, ratios as
//! fractions (0.001 = 0.1 %), counts as plain numbers (names ending in
//! `_pct` are percentages, 0 to 100) and throughputs per second.

use std::fmt::Write as _;

use super::{Operation, Transport};

/// What a metric measures, which decides the units its threshold may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Milliseconds; thresholds need a unit: us, ms or s.
    Latency,
    /// A fraction; thresholds are percentages ("0.1%") or 0.
    Ratio,
    /// A plain number (counts, and `_pct` levels such as `battery.min_pct`).
    Count,
    /// Events per second; "/s" optional.
    Throughput,
}

impl MetricKind {
    pub const ALL: [MetricKind; 4] = [
        MetricKind::Latency,
        MetricKind::Ratio,
        MetricKind::Count,
        MetricKind::Throughput,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Latency => "latency",
            MetricKind::Ratio => "ratio",
            MetricKind::Count => "count",
            MetricKind::Throughput => "throughput",
        }
    }

    /// How a threshold's value is written for this kind.
    pub const fn written_as(self) -> &'static str {
        match self {
            MetricKind::Latency => "a time: `\"< 25ms\"`, `\"< 500us\"`, `\"<= 2s\"`",
            MetricKind::Ratio => "a percentage: `\"< 0.1%\"`, or `\"== 0\"`",
            MetricKind::Count => "a plain number: `\"== 0\"`, `\"> 20\"`",
            MetricKind::Throughput => "`\">= 500/s\"` or `\">= 500\"`",
        }
    }

    /// The unit of a measured value of this kind in reports (see the
    /// module docs); `_pct` counts are in percent.
    const fn base_unit(self) -> &'static str {
        match self {
            MetricKind::Latency => "ms",
            MetricKind::Ratio => "ratio",
            MetricKind::Count => "",
            MetricKind::Throughput => "/s",
        }
    }
}

/// The transports that can measure a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transports(u8);

impl Transports {
    /// Every transport.
    pub const ALL: Transports = Transports(0b111);
    /// Transports with an event route to the engine side (http has none).
    pub const EVENT_ROUTE: Transports =
        Transports(1 << Transport::Inproc as u8 | 1 << Transport::Mqtt as u8);
    /// Transports that carry commands to a device ("Open Door"); http has none.
    pub const COMMAND_CHANNEL: Transports =
        Transports(1 << Transport::Inproc as u8 | 1 << Transport::Mqtt as u8);
    pub const MQTT: Transports = Transports(1 << Transport::Mqtt as u8);

    pub const fn has(self, t: Transport) -> bool {
        self.0 & (1 << t as u8) != 0
    }

    /// `all`, or the transports by name (`inproc, mqtt`).
    pub fn describe(self) -> String {
        if self == Transports::ALL {
            return "all".to_string();
        }
        Transport::ALL
            .iter()
            .filter(|t| self.has(**t))
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where a metric's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The latency histograms of the timed operations.
    Histograms,
    /// The decision oracle's verdicts on the credential checks.
    Oracle,
    /// The simulated devices' state (at the end of the run, or counted by them).
    Devices,
    /// The load generator's own counters.
    Load,
    /// The transport: the engine side's event log, broker connections.
    Transport,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Histograms => "histograms",
            Source::Oracle => "oracle",
            Source::Devices => "devices",
            Source::Load => "load",
            Source::Transport => "transport",
        }
    }

    /// Where to find it in the report directory.
    pub const fn in_reports(self) -> &'static str {
        match self {
            Source::Histograms => "report.json `operations`, `checks`",
            Source::Oracle => "report.json `decisions`, oracle.json",
            Source::Devices => "report.json `health`, oracle.json",
            Source::Load => "report.json, oracle.json",
            Source::Transport => "report.json `health`, oracle.json",
        }
    }
}

/// One metric that is not a latency statistic.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub source: Source,
    pub transports: Transports,
    pub description: &'static str,
}

const fn metric(
    name: &'static str,
    kind: MetricKind,
    source: Source,
    transports: Transports,
    description: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        source,
        transports,
        description,
    }
}

use MetricKind::{Count, Ratio, Throughput};
use Source::{Devices, Load, Oracle};
const ALL: Transports = Transports::ALL;
const EVENTS: Transports = Transports::EVENT_ROUTE;

/// Every metric that is not a latency statistic, one line each.
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    metric("decisions.total", Count, Oracle, ALL, "credential checks the oracle judged, answered or not"),
    metric("decisions.true_grant", Count, Oracle, ALL, "checks granted that the rules grant"),
    metric("decisions.true_denial", Count, Oracle, ALL, "checks denied that the rules deny (reason mismatches included)"),
    metric("decisions.false_accept", Count, Oracle, ALL, "checks granted that the rules deny: a security failure"),
    metric("decisions.false_reject", Count, Oracle, ALL, "checks denied that the rules grant"),
    metric("decisions.false_accept_rate", Ratio, Oracle, ALL, "false accepts per judged check"),
    metric("decisions.false_reject_rate", Ratio, Oracle, ALL, "false rejects per judged check"),
    metric("decisions.reason_mismatch", Count, Oracle, ALL, "checks denied for another reason than the rules give"),
    metric("decisions.ambiguous", Count, Oracle, ALL, "checks whose right answer changed while they ran (a time edge): either answer is right"),
    metric("decisions.uncertain", Count, Oracle, ALL, "checks the oracle cannot judge because an earlier check of the credential ended without an answer"),
    metric("decisions.no_answer", Count, Oracle, ALL, "credential checks that ended in an error or a timeout"),
    metric("errors.count", Count, Load, ALL, "checks and remote opens without a valid answer (deliveries are not counted)"),
    metric("errors.rate", Ratio, Load, ALL, "`errors.count` per check and remote open"),
    metric("checks.per_s", Throughput, Load, ALL, "credential checks completed per second over the run"),
    metric("operations.per_s", Throughput, Load, ALL, "operations of every kind completed per second over the run"),
    metric("arrivals.behind_schedule", Count, Load, ALL, "arrivals the load generator started late"),
    metric("arrivals.dropped_rate", Ratio, Load, ALL, "arrivals that could not be served (a full queue, `max_in_flight`) per arrival"),
    metric("arrivals.skipped_rate", Ratio, Load, ALL, "arrivals whose action had nothing to present per arrival"),
    metric("arrivals.offered", Count, Load, ALL, "arrivals the load model offered"),
    metric("arrivals.served", Count, Load, ALL, "arrivals that were presented at a device"),
    metric("arrivals.skipped", Count, Load, ALL, "arrivals whose action had nothing to present"),
    metric("arrivals.dropped", Count, Load, ALL, "arrivals that could not be served (a full queue, `max_in_flight`)"),
    metric("arrivals.queued_at_end", Count, Load, ALL, "arrivals still waiting in a device's queue when the run ended"),
    metric("arrivals.offered_per_s", Throughput, Load, ALL, "arrivals offered per second of the run"),
    metric("arrivals.served_per_s", Throughput, Load, ALL, "arrivals served per second of the run"),
    metric("lockouts.count", Count, Oracle, ALL, "keypad lockouts in the oracle's model"),
    metric("motor_blocked.count", Count, Devices, ALL, "grants whose lock motor jammed (`faults.motor_blocked`)"),
    metric("code_sync.total", Count, Devices, ALL, "code actions (create, change, revoke) whose sync ended"),
    metric("code_sync.failed", Count, Devices, ALL, "code actions not stored on every device of their door"),
    metric("code_sync.failed_rate", Ratio, Devices, ALL, "`code_sync.failed` per `code_sync.total`"),
    metric("events.emitted", Count, Devices, ALL, "events the devices emitted"),
    metric("events.logged", Count, Source::Transport, EVENTS, "events the engine side logged"),
    metric("events.lost", Count, Source::Transport, EVENTS, "events emitted but never logged (lost, or still in flight at the end)"),
    metric("events.duplicated", Count, Source::Transport, EVENTS, "events the engine side saw again after logging them"),
    metric("mqtt.reconnects", Count, Source::Transport, Transports::MQTT, "MQTT connections made again after a loss"),
    metric("devices.total", Count, Devices, ALL, "simulated devices"),
    metric("devices.online", Count, Devices, ALL, "devices online at the end"),
    metric("devices.online_pct", Count, Devices, ALL, "devices online at the end, in percent"),
    metric("devices.offline_max", Count, Load, ALL, "most devices one offline wave took down"),
    metric("battery.min_pct", Count, Devices, ALL, "lowest battery level of any battery-powered device at the end, in percent"),
    metric("battery.low_events", Count, Devices, ALL, "`battery_low` events the devices emitted"),
];

/// A timed operation: the prefix of its statistics (`check.pin.p99`).
#[derive(Clone, Copy, Debug)]
pub struct Series {
    pub prefix: &'static str,
    /// The operation (its report.json `operations` key and Prometheus
    /// label); `None`: every credential check together (report.json `checks`).
    pub operation: Option<Operation>,
    pub transports: Transports,
    pub description: &'static str,
}

const fn series(
    prefix: &'static str,
    operation: Option<Operation>,
    transports: Transports,
    description: &'static str,
) -> Series {
    Series {
        prefix,
        operation,
        transports,
        description,
    }
}

/// Every timed operation, one line each.
#[rustfmt::skip]
pub const SERIES: &[Series] = &[
    series("check.pin", Some(Operation::PinCheck), ALL, "a PIN typed on a keypad until the answer"),
    series("check.qr", Some(Operation::QrCheck), ALL, "a QR code scanned by a door phone until the answer"),
    series("check.card", Some(Operation::CardCheck), ALL, "an RF card presented to a reader until the answer"),
    series("check.ble", Some(Operation::BleCheck), ALL, "a BLE pass presented to a Bluetooth lock until the answer"),
    series("check.any", None, ALL, "every credential check together"),
    series("remote_open", Some(Operation::RemoteOpen), Transports::COMMAND_CHANNEL, "\"Open Door\" from the platform until the lock acknowledges"),
    series("code_sync", Some(Operation::SyncRoundTrip), ALL, "a credential change pushed to a device until its acknowledgement"),
    series("event_delivery", Some(Operation::EventDelivery), EVENTS, "a device event until the engine side logged it"),
];

/// A statistic of a timed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Count,
    Errors,
    Min,
    Mean,
    P50,
    P90,
    P95,
    P99,
    P999,
    Max,
}

impl Stat {
    pub const ALL: [Stat; 10] = [
        Stat::Count,
        Stat::Errors,
        Stat::Min,
        Stat::Mean,
        Stat::P50,
        Stat::P90,
        Stat::P95,
        Stat::P99,
        Stat::P999,
        Stat::Max,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Stat::Count => "count",
            Stat::Errors => "errors",
            Stat::Min => "min",
            Stat::Mean => "mean",
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::P999 => "p999",
            Stat::Max => "max",
        }
    }

    pub const fn kind(self) -> MetricKind {
        match self {
            Stat::Count | Stat::Errors => MetricKind::Count,
            _ => MetricKind::Latency,
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            Stat::Count => "operations completed, answered or not",
            Stat::Errors => "operations without a valid answer",
            Stat::Min => "fastest",
            Stat::Mean => "mean latency",
            Stat::P50 => "median latency",
            Stat::P90 => "90th percentile latency",
            Stat::P95 => "95th percentile latency",
            Stat::P99 => "99th percentile latency",
            Stat::P999 => "99.9th percentile latency",
            Stat::Max => "slowest",
        }
    }

    fn parse(s: &str) -> Option<Stat> {
        Stat::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// The series of an operation.
pub fn series_of(op: Operation) -> &'static Series {
    SERIES
        .iter()
        .find(|s| s.operation == Some(op))
        .expect("every operation has a series in the catalogue")
}

/// A name the catalogue knows: a metric, or a statistic of a series.
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    Metric(&'static Metric),
    Stat(&'static Series, Stat),
}

impl Entry {
    pub fn name(&self) -> String {
        match self {
            Entry::Metric(m) => m.name.to_string(),
            Entry::Stat(s, stat) => format!("{}.{}", s.prefix, stat.name()),
        }
    }

    pub fn kind(&self) -> MetricKind {
        match self {
            Entry::Metric(m) => m.kind,
            Entry::Stat(_, stat) => stat.kind(),
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Entry::Metric(m) => m.source,
            Entry::Stat(..) => Source::Histograms,
        }
    }

    pub fn transports(&self) -> Transports {
        match self {
            Entry::Metric(m) => m.transports,
            Entry::Stat(s, _) => s.transports,
        }
    }

    /// The unit of measured values in reports: `ms`, `ratio`, `/s`, `%`
    /// (a `_pct` name) or nothing.
    pub fn unit(&self) -> &'static str {
        match self {
            Entry::Metric(m) if m.name.ends_with("_pct") => "%",
            e => e.kind().base_unit(),
        }
    }

    pub fn description(&self) -> String {
        match self {
            Entry::Metric(m) => m.description.to_string(),
            Entry::Stat(s, stat) => format!("{} of {}", stat.description(), s.description),
        }
    }
}

/// Looks a name up; `None` for a name not in the catalogue.
pub fn lookup(name: &str) -> Option<Entry> {
    if let Some(m) = METRICS.iter().find(|m| m.name == name) {
        return Some(Entry::Metric(m));
    }
    let (prefix, stat) = name.rsplit_once('.')?;
    let s = SERIES.iter().find(|s| s.prefix == prefix)?;
    Some(Entry::Stat(s, Stat::parse(stat)?))
}

/// Every entry: the series' statistics, then the other metrics.
pub fn entries() -> impl Iterator<Item = Entry> {
    SERIES
        .iter()
        .flat_map(|s| Stat::ALL.into_iter().map(move |stat| Entry::Stat(s, stat)))
        .chain(METRICS.iter().map(Entry::Metric))
}

/// Every name a threshold may use.
pub fn names() -> Vec<String> {
    entries().map(|e| e.name()).collect()
}

/// Can a run over `transport` (`inproc`, `mqtt`, `http`) measure `name`?
/// False for names not in the catalogue.
pub fn measurable(name: &str, transport: Transport) -> bool {
    lookup(name).is_some_and(|e| e.transports().has(transport))
}

/// Is `name` measured on the engine side (its event log, its sync round
/// trips)? An external server over MQTT (`--target`) keeps that side out of
/// the run's sight, so a threshold on one is refused there before the run.
pub fn engine_side(name: &str) -> bool {
    match lookup(name) {
        Some(Entry::Metric(m)) => matches!(m.source, Source::Transport) && m.transports == EVENTS,
        Some(Entry::Stat(s, _)) => matches!(
            s.operation,
            Some(Operation::SyncRoundTrip | Operation::EventDelivery)
        ),
        None => false,
    }
}

/// The metric tables of scenarios/README.md (`fleetsim metrics --markdown`).
pub fn markdown() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Timed operations: `<operation>.<statistic>`, e.g. `check.pin.p99`. The\n\
         operation's key in report.json and Prometheus is in brackets.\n"
    );
    let _ = writeln!(s, "| operation | what is timed | transports |");
    let _ = writeln!(s, "|---|---|---|");
    for x in SERIES {
        let key = match x.operation {
            Some(op) => format!(" (`{}`)", op.as_str()),
            None => " (`checks`)".to_string(),
        };
        let _ = writeln!(
            s,
            "| `{}`{key} | {} | {} |",
            x.prefix,
            x.description,
            x.transports.describe()
        );
    }
    let _ = writeln!(s, "\n| statistic | kind | unit | what |");
    let _ = writeln!(s, "|---|---|---|---|");
    for stat in Stat::ALL {
        let _ = writeln!(
            s,
            "| `.{}` | {} | {} | {} |",
            stat.name(),
            stat.kind().as_str(),
            stat.kind().base_unit(),
            stat.description()
        );
    }
    let _ = writeln!(s, "\nOther metrics:\n");
    let _ = writeln!(s, "| metric | kind | unit | transports | from | what |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for m in METRICS {
        let e = Entry::Metric(m);
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            m.name,
            m.kind.as_str(),
            e.unit(),
            m.transports.describe(),
            m.source.as_str(),
            m.description
        );
    }
    let _ = writeln!(s, "\n| kind | write threshold values as |");
    let _ = writeln!(s, "|---|---|");
    for k in MetricKind::ALL {
        let _ = writeln!(s, "| {} | {} |", k.as_str(), k.written_as());
    }
    let _ = writeln!(s, "\n| from | found in |");
    let _ = writeln!(s, "|---|---|");
    for src in [
        Source::Histograms,
        Source::Oracle,
        Source::Devices,
        Source::Load,
        Source::Transport,
    ] {
        let _ = writeln!(s, "| {} | {} |", src.as_str(), src.in_reports());
    }
    s
}

/// One line per name (`fleetsim metrics`).
pub fn listing() -> String {
    let rows: Vec<(String, Entry)> = entries().map(|e| (e.name(), e)).collect();
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (name, e) in rows {
        let _ = writeln!(
            s,
            "{name:<width$}  {:<10}  {:<5}  {:<13}  {}",
            e.kind().as_str(),
            e.unit(),
            e.transports().describe(),
            e.description()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_name_looks_itself_up() {
        let names = names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "a name is listed twice");
        for n in &names {
            let e = lookup(n).unwrap_or_else(|| panic!("{n}"));
            assert_eq!(&e.name(), n);
        }
        for bad in [
            "check.pin.p42",
            "actuation.p99",
            "check.pin",
            "p99",
            "",
            ".",
        ] {
            assert!(lookup(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn every_operation_has_one_series() {
        for op in Operation::ALL {
            let n = SERIES.iter().filter(|s| s.operation == Some(op)).count();
            assert_eq!(n, 1, "{op:?}");
            assert_eq!(series_of(op).operation, Some(op));
        }
    }

    #[test]
    fn units_follow_kinds_and_pct_names() {
        assert_eq!(lookup("check.pin.p95").unwrap().unit(), "ms");
        assert_eq!(lookup("check.pin.count").unwrap().unit(), "");
        assert_eq!(lookup("errors.rate").unwrap().unit(), "ratio");
        assert_eq!(lookup("battery.min_pct").unwrap().unit(), "%");
        assert_eq!(lookup("checks.per_s").unwrap().unit(), "/s");
    }

    #[test]
    fn transports_limit_what_a_run_can_measure() {
        assert!(measurable("events.lost", Transport::Inproc));
        assert!(!measurable("events.lost", Transport::Http));
        assert!(engine_side("events.lost") && engine_side("event_delivery.p99"));
        assert!(engine_side("code_sync.p50") && !engine_side("code_sync.failed"));
        assert!(!engine_side("check.pin.p99") && !engine_side("mqtt.reconnects"));
        assert!(!measurable("event_delivery.p99", Transport::Http));
        assert!(measurable("mqtt.reconnects", Transport::Mqtt));
        assert!(!measurable("mqtt.reconnects", Transport::Inproc));
        assert!(!measurable("no.such", Transport::Inproc));
        assert_eq!(Transports::EVENT_ROUTE.describe(), "inproc, mqtt");
        assert_eq!(Transports::ALL.describe(), "all");
    }
}
