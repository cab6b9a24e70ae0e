//! The Prometheus registry of a fleetsim process.
//!
//! Labels are bounded by construction: operation (7), outcome (3), transport
//! (3), device kind (4), drop reason (5), event kind (at most
//! [`MAX_EVENT_KINDS`]) and the decision class (7). A device id is never a
//! label: 100k devices would be
//! 100k series. Every labelled handle on the hot path is resolved once, in
//! [`FleetMetrics::new`], and indexed by enum afterwards.

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::decisions::DecisionClass;
use super::{device_kind_index, DeviceKind, Operation, Outcome, Transport, DEVICE_KINDS};
use crate::report::DropReason;

/// Distinct event kinds given their own label value; later kinds are counted as `other`.
pub const MAX_EVENT_KINDS: usize = 32;

/// Latency buckets in seconds: 100 us to 10 s (device paths go from
/// in-process microseconds to multi-second BLE gateway round trips).
const LATENCY_BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Name, type and label names of one exported metric family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricDesc {
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub labels: Vec<String>,
    pub help: String,
}

/// Every metric a fleetsim process exports, with pre-resolved handles.
pub struct FleetMetrics {
    registry: Registry,
    catalog: Vec<MetricDesc>,
    /// `[op][outcome][transport]`
    checks: Vec<IntCounter>,
    /// `[op][transport]`
    latency: Vec<Histogram>,
    /// `[class]` in [`DecisionClass`] order.
    decisions: Vec<IntCounter>,
    pub false_accepts: IntCounter,
    pub false_rejects: IntCounter,
    devices: Vec<IntGauge>,
    devices_online: Vec<IntGauge>,
    events_vec: IntCounterVec,
    event_kinds: Mutex<Vec<String>>,
    pub events_logged: IntCounter,
    /// Arrivals that started later than the load model intended, in total.
    pub arrivals_behind_schedule: IntCounter,
    /// Arrivals due but not started yet (the generator's backlog), now.
    pub arrivals_backlog: IntGauge,
    pub arrivals: IntCounter,
    /// `[reason]` in [`DropReason`] order.
    arrivals_dropped: Vec<IntCounter>,
    /// The arrival rate the current phase asks for.
    pub target_arrivals_per_second: Gauge,
    run_info: IntGaugeVec,
    /// CPU seconds (user + system) the fleetsim process spent so far.
    pub harness_cpu_seconds: Counter,
    /// Cores the fleetsim process used over the last sample (CPU seconds
    /// per wall second).
    pub harness_cores_used: Gauge,
    /// Cores this machine offers the process.
    pub harness_cores_available: IntGauge,
}

impl FleetMetrics {
    /// Builds the registry; every handle is resolved here, once.
    pub fn new() -> FleetMetrics {
        let registry = Registry::new();
        let mut catalog = Vec::new();
        let mut reg = |c: Box<dyn Collector>, kind: &'static str| {
            for d in c.desc() {
                catalog.push(MetricDesc {
                    name: d.fq_name.clone(),
                    kind,
                    labels: d.variable_labels.clone(),
                    help: d.help.clone(),
                });
            }
            registry
                .register(c)
                .expect("metric names are unique constants");
        };

        let checks_vec = IntCounterVec::new(
            Opts::new(
                "fleetsim_checks_total",
                "Operations completed (credential checks, sync round trips, remote opens, event deliveries) by outcome.",
            ),
            &["operation", "outcome", "transport"],
        )
        .expect("valid");
        let latency_vec = HistogramVec::new(
            HistogramOpts::new(
                "fleetsim_check_latency_seconds",
                "Operation latency from the intended start (open model) to the answer.",
            )
            .buckets(LATENCY_BUCKETS_S.to_vec()),
            &["operation", "transport"],
        )
        .expect("valid");
        let decisions_vec = IntCounterVec::new(
            Opts::new(
                "fleetsim_decisions_total",
                "Credential checks compared with the oracle, by result.",
            ),
            &["result"],
        )
        .expect("valid");
        let false_accepts = IntCounter::new(
            "fleetsim_false_accepts_total",
            "Checks granted that the oracle expected to be denied.",
        )
        .expect("valid");
        let false_rejects = IntCounter::new(
            "fleetsim_false_rejects_total",
            "Checks denied that the oracle expected to be granted.",
        )
        .expect("valid");
        let devices_vec = IntGaugeVec::new(
            Opts::new("fleetsim_devices", "Simulated devices, by kind."),
            &["device_kind"],
        )
        .expect("valid");
        let online_vec = IntGaugeVec::new(
            Opts::new(
                "fleetsim_devices_online",
                "Simulated devices currently online, by kind.",
            ),
            &["device_kind"],
        )
        .expect("valid");
        let events_vec = IntCounterVec::new(
            Opts::new(
                "fleetsim_events_total",
                "Events emitted by simulated devices, by event kind.",
            ),
            &["kind"],
        )
        .expect("valid");
        let events_logged = IntCounter::new(
            "fleetsim_events_logged_total",
            "Device events the engine confirmed as logged.",
        )
        .expect("valid");
        let behind = IntCounter::new(
            "fleetsim_arrivals_behind_schedule_total",
            "Arrivals that started later than the load model intended.",
        )
        .expect("valid");
        let backlog = IntGauge::new(
            "fleetsim_arrivals_behind_schedule",
            "Arrivals due but not yet started (the generator's backlog).",
        )
        .expect("valid");
        let arrivals = IntCounter::new(
            "fleetsim_arrivals_total",
            "Arrivals generated by the load model.",
        )
        .expect("valid");
        let dropped_vec = IntCounterVec::new(
            Opts::new(
                "fleetsim_arrivals_dropped_total",
                "Arrivals not served, by reason (nothing_to_present and not_supported are skipped work; queue_full, max_in_flight, server_refused are load the run could not carry).",
            ),
            &["reason"],
        )
        .expect("valid");
        let target = Gauge::new(
            "fleetsim_target_arrivals_per_second",
            "Arrival rate the current load phase asks for.",
        )
        .expect("valid");
        let run_info = IntGaugeVec::new(
            Opts::new("fleetsim_run_info", "Always 1; labels describe the run."),
            &["version", "model", "transport"],
        )
        .expect("valid");
        let harness_cpu = Counter::new(
            "fleetsim_harness_cpu_seconds_total",
            "CPU time (user + system) the fleetsim process spent, every thread (an embedded server's included).",
        )
        .expect("valid");
        let harness_cores = Gauge::new(
            "fleetsim_harness_cores_used",
            "Cores the fleetsim process used over the last second (CPU seconds per wall second).",
        )
        .expect("valid");
        let harness_cores_available = IntGauge::new(
            "fleetsim_harness_cores_available",
            "Cores this machine offers the fleetsim process.",
        )
        .expect("valid");

        let mut checks = Vec::with_capacity(Operation::COUNT * Outcome::COUNT * Transport::COUNT);
        for op in Operation::ALL {
            for outcome in Outcome::ALL {
                for t in Transport::ALL {
                    checks.push(checks_vec.with_label_values(&[
                        op.as_str(),
                        outcome.as_str(),
                        t.as_str(),
                    ]));
                }
            }
        }
        let mut latency = Vec::with_capacity(Operation::COUNT * Transport::COUNT);
        for op in Operation::ALL {
            for t in Transport::ALL {
                latency.push(latency_vec.with_label_values(&[op.as_str(), t.as_str()]));
            }
        }
        let decisions = [
            "true_grant",
            "true_denial",
            "false_accept",
            "false_reject",
            "no_answer",
            "ambiguous",
            "uncertain",
        ]
        .iter()
        .map(|r| decisions_vec.with_label_values(&[r]))
        .collect();
        let devices = DEVICE_KINDS
            .iter()
            .map(|k| devices_vec.with_label_values(&[k.as_str()]))
            .collect();
        let devices_online = DEVICE_KINDS
            .iter()
            .map(|k| online_vec.with_label_values(&[k.as_str()]))
            .collect();

        reg(Box::new(checks_vec), "counter");
        reg(Box::new(latency_vec), "histogram");
        reg(Box::new(decisions_vec), "counter");
        reg(Box::new(false_accepts.clone()), "counter");
        reg(Box::new(false_rejects.clone()), "counter");
        reg(Box::new(devices_vec), "gauge");
        reg(Box::new(online_vec), "gauge");
        reg(Box::new(events_vec.clone()), "counter");
        reg(Box::new(events_logged.clone()), "counter");
        reg(Box::new(behind.clone()), "counter");
        reg(Box::new(backlog.clone()), "gauge");
        reg(Box::new(arrivals.clone()), "counter");
        let arrivals_dropped = DropReason::ALL
            .iter()
            .map(|r| dropped_vec.with_label_values(&[r.as_str()]))
            .collect();
        reg(Box::new(dropped_vec), "counter");
        reg(Box::new(target.clone()), "gauge");
        reg(Box::new(run_info.clone()), "gauge");
        reg(Box::new(harness_cpu.clone()), "counter");
        reg(Box::new(harness_cores.clone()), "gauge");
        reg(Box::new(harness_cores_available.clone()), "gauge");

        FleetMetrics {
            registry,
            catalog,
            checks,
            latency,
            decisions,
            false_accepts,
            false_rejects,
            devices,
            devices_online,
            events_vec,
            event_kinds: Mutex::new(Vec::new()),
            events_logged,
            arrivals_behind_schedule: behind,
            arrivals_backlog: backlog,
            arrivals,
            arrivals_dropped,
            target_arrivals_per_second: target,
            run_info,
            harness_cpu_seconds: harness_cpu,
            harness_cores_used: harness_cores,
            harness_cores_available,
        }
    }

    /// Counts one operation and observes its latency. Lock-free (atomics).
    #[inline]
    pub fn observe(&self, op: Operation, outcome: Outcome, transport: Transport, latency_us: u64) {
        let c =
            (op.index() * Outcome::COUNT + outcome.index()) * Transport::COUNT + transport.index();
        self.checks[c].inc();
        self.latency[op.index() * Transport::COUNT + transport.index()]
            .observe(latency_us as f64 / 1e6);
    }

    /// Counts one check compared with the oracle.
    pub fn count_decision(&self, class: DecisionClass) {
        let i = match class {
            DecisionClass::TrueGrant => 0,
            DecisionClass::TrueDenial => 1,
            DecisionClass::FalseAccept => {
                self.false_accepts.inc();
                2
            }
            DecisionClass::FalseReject => {
                self.false_rejects.inc();
                3
            }
            DecisionClass::NoAnswer => 4,
            DecisionClass::Ambiguous => 5,
            DecisionClass::Uncertain => 6,
        };
        self.decisions[i].inc();
    }

    /// Counts one arrival not served.
    pub fn arrival_dropped(&self, reason: DropReason) {
        self.arrivals_dropped[reason.index()].inc();
    }

    /// Sets the device gauges of one kind.
    pub fn set_devices(&self, kind: DeviceKind, total: i64, online: i64) {
        self.devices[device_kind_index(kind)].set(total);
        self.devices_online[device_kind_index(kind)].set(online);
    }

    /// The counter of one event kind; resolve it once and keep it. Past
    /// [`MAX_EVENT_KINDS`] distinct kinds, new kinds share the `other` label.
    pub fn events_counter(&self, kind: &str) -> IntCounter {
        let mut kinds = self.event_kinds.lock();
        let label = if kinds.iter().any(|k| k == kind) {
            kind
        } else if kinds.len() < MAX_EVENT_KINDS {
            kinds.push(kind.to_owned());
            kind
        } else {
            "other"
        };
        self.events_vec.with_label_values(&[label])
    }

    /// Sets `fleetsim_run_info` (one series per process).
    pub fn set_run_info(&self, model: &str, transport: Transport) {
        self.run_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), model, transport.as_str()])
            .set(1);
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric family this registry exports (whether or not it has samples yet).
    pub fn catalog(&self) -> &[MetricDesc] {
        &self.catalog
    }

    /// The text exposition format (what `/metrics` serves).
    pub fn encode_text(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for FleetMetrics {
    fn default() -> Self {
        FleetMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_indexed_by_labels() {
        let m = FleetMetrics::new();
        m.observe(Operation::QrCheck, Outcome::Denied, Transport::Mqtt, 1500);
        m.count_decision(DecisionClass::FalseAccept);
        m.count_decision(DecisionClass::Uncertain);
        let text = m.encode_text();
        assert!(text.contains(r#"fleetsim_decisions_total{result="uncertain"} 1"#));
        assert!(text.contains(r#"fleetsim_decisions_total{result="ambiguous"} 0"#));
        assert!(text.contains(
            r#"fleetsim_checks_total{operation="qr_check",outcome="denied",transport="mqtt"} 1"#
        ));
        assert!(text.contains("fleetsim_false_accepts_total 1"));
        assert!(!text.contains("device_id"));
        assert!(m
            .catalog()
            .iter()
            .any(|d| d.name == "fleetsim_check_latency_seconds" && d.kind == "histogram"));
    }

    #[test]
    fn dropped_arrivals_are_counted_per_reason() {
        let m = FleetMetrics::new();
        m.arrivals.inc_by(3);
        m.arrival_dropped(DropReason::QueueFull);
        m.arrival_dropped(DropReason::QueueFull);
        m.arrival_dropped(DropReason::NothingToPresent);
        let text = m.encode_text();
        assert!(text.contains(r#"fleetsim_arrivals_dropped_total{reason="queue_full"} 2"#));
        assert!(text.contains(r#"fleetsim_arrivals_dropped_total{reason="nothing_to_present"} 1"#));
        assert!(text.contains(r#"fleetsim_arrivals_dropped_total{reason="max_in_flight"} 0"#));
        assert!(text.contains("fleetsim_arrivals_total 3"));
    }

    #[test]
    fn event_kinds_are_bounded() {
        let m = FleetMetrics::new();
        for i in 0..MAX_EVENT_KINDS + 5 {
            m.events_counter(&format!("kind_{i}")).inc();
        }
        let text = m.encode_text();
        assert!(text.contains(r#"fleetsim_events_total{kind="other"} 5"#));
    }
}
