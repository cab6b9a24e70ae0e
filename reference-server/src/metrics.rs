//! The server's Prometheus registry, with exactly the metric names the
//! dashboards use (prefix `reference_server_`). Handles are resolved once;
//! every label takes a bounded set of values (route patterns, never ids).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::domain::DenyReason;

const PREFIX: &str = "reference_server";

/// Which transport a credential check came over (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Mqtt,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Http => "http",
        }
    }
    fn index(self) -> usize {
        match self {
            Transport::Mqtt => 0,
            Transport::Http => 1,
        }
    }
}

/// Outcomes of a check: granted, each deny reason, error.
const OUTCOMES: usize = DenyReason::ALL.len() + 2;

pub struct Metrics {
    pub registry: Registry,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub validations_total: IntCounterVec,
    pub store_write_duration_seconds: Histogram,
    pub store_batch_size: Histogram,
    pub gateway_dropped_total: IntCounterVec,
    pub devices_online: IntGauge,
    /// Activity entries the store could no longer take (it had stopped).
    pub activity_entries_lost_total: IntCounter,
    /// `validations_total` resolved per (transport, outcome): the check path
    /// does no label hashing.
    validations: [[IntCounter; OUTCOMES]; 2],
}

fn outcome_name(i: usize) -> &'static str {
    match i {
        0 => "granted",
        i if i <= DenyReason::ALL.len() => DenyReason::ALL[i - 1].as_str(),
        _ => "error",
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some(PREFIX.to_string()), None)
            .expect("a constant prefix is valid");
        let http_requests_total = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route pattern",
            )
            .buckets(latency_buckets()),
            &["route"],
        )
        .expect("valid metric");
        let validations_total = IntCounterVec::new(
            Opts::new(
                "validations_total",
                "Credential checks by outcome (granted, a deny reason, error) and transport",
            ),
            &["outcome", "transport"],
        )
        .expect("valid metric");
        let store_write_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "store_write_duration_seconds",
                "Time to commit one group of writes",
            )
            .buckets(latency_buckets()),
        )
        .expect("valid metric");
        let store_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "store_batch_size",
                "Writes committed in one transaction (group commit)",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
            ]),
        )
        .expect("valid metric");
        let gateway_dropped_total = IntCounterVec::new(
            Opts::new(
                "gateway_dropped_total",
                "Device messages dropped, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let devices_online =
            IntGauge::new("devices_online", "Devices whose last status said online")
                .expect("valid metric");
        let activity_entries_lost_total = IntCounter::new(
            "activity_entries_lost_total",
            "Activity entries that could not be stored because the store had stopped",
        )
        .expect("valid metric");
        for c in [
            Box::new(http_requests_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_request_duration_seconds.clone()),
            Box::new(validations_total.clone()),
            Box::new(store_write_duration_seconds.clone()),
            Box::new(store_batch_size.clone()),
            Box::new(gateway_dropped_total.clone()),
            Box::new(devices_online.clone()),
            Box::new(activity_entries_lost_total.clone()),
        ] {
            registry.register(c).expect("names are unique");
        }
        let validations = [Transport::Mqtt, Transport::Http].map(|t| {
            std::array::from_fn(|i| {
                validations_total.with_label_values(&[outcome_name(i), t.as_str()])
            })
        });
        Metrics {
            registry,
            http_requests_total,
            http_request_duration_seconds,
            validations_total,
            store_write_duration_seconds,
            store_batch_size,
            gateway_dropped_total,
            devices_online,
            activity_entries_lost_total,
            validations,
        }
    }

    /// Counts one check: `None` is an error (the request could not be checked).
    pub fn validation(&self, transport: Transport, outcome: Option<Option<DenyReason>>) {
        let i = match outcome {
            Some(None) => 0,
            Some(Some(r)) => 1 + DenyReason::ALL.iter().position(|x| *x == r).unwrap_or(0),
            None => OUTCOMES - 1,
        };
        self.validations[transport.index()][i].inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_dashboard_names() {
        let m = Metrics::new();
        m.validation(Transport::Http, Some(None));
        m.validation(Transport::Mqtt, Some(Some(DenyReason::WrongPin)));
        m.http_requests_total
            .with_label_values(&["/v1/x", "GET", "200"])
            .inc();
        m.http_request_duration_seconds
            .with_label_values(&["/v1/x"])
            .observe(0.01);
        m.store_write_duration_seconds.observe(0.001);
        m.store_batch_size.observe(3.0);
        m.gateway_dropped_total
            .with_label_values(&["too_large"])
            .inc();
        let text = m.render();
        for name in [
            "reference_server_http_requests_total",
            "reference_server_http_request_duration_seconds",
            "reference_server_validations_total{outcome=\"granted\",transport=\"http\"} 1",
            "reference_server_validations_total{outcome=\"wrong_pin\",transport=\"mqtt\"} 1",
            "reference_server_store_write_duration_seconds",
            "reference_server_store_batch_size",
            "reference_server_gateway_dropped_total",
            "reference_server_devices_online",
            "reference_server_activity_entries_lost_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
