//! Pass/fail thresholds: `"check.pin.p99" = "< 25ms"`. A threshold is a
//! metric name from the catalogue below, a comparator and a value with a
//! unit. Evaluation is pure: it takes the measured metrics as a map.
//!
//! # Units of measured values
//!
//! The map passed to [`evaluate_all`] holds every metric in its base unit:
//! latencies in milliseconds, ratios as fractions (0.001 = 0.1 %), counts as
//! plain numbers and throughputs per second. Threshold values are converted
//! to the same base units when parsed ("25ms" -> 25.0, "0.1%" -> 0.001,
//! "2s" -> 2000.0).

use std::collections::BTreeMap;
use std::fmt;

/// What a metric measures, which decides the units its threshold may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Milliseconds; thresholds need a unit: us, ms or s.
    Latency,
    /// A fraction; thresholds are percentages ("0.1%") or 0.
    Ratio,
    /// A plain number (counts, battery percent as in `battery.min_pct`).
    Count,
    /// Events per second; "/s" optional.
    Throughput,
}

/// Operations with latency histograms.
pub const LATENCY_OPERATIONS: &[&str] = &[
    "check.pin",
    "check.qr",
    "check.card",
    "check.ble",
    "check.any",
    "remote_open",
    "code_sync",
    "event_delivery",
    "actuation",
];
/// Statistics of a latency histogram.
pub const LATENCY_STATS: &[&str] = &["min", "mean", "p50", "p90", "p95", "p99", "p999", "max"];
/// Metrics that are not latencies, with their kind.
pub const OTHER_METRICS: &[(&str, MetricKind)] = &[
    ("decisions.total", MetricKind::Count),
    ("decisions.false_accept", MetricKind::Count),
    ("decisions.false_reject", MetricKind::Count),
    ("decisions.false_accept_rate", MetricKind::Ratio),
    ("decisions.false_reject_rate", MetricKind::Ratio),
    ("decisions.reason_mismatch", MetricKind::Count),
    ("errors.count", MetricKind::Count),
    ("errors.rate", MetricKind::Ratio),
    ("checks.per_s", MetricKind::Throughput),
    ("lockouts.count", MetricKind::Count),
    ("motor_blocked.count", MetricKind::Count),
    ("code_sync.failed", MetricKind::Count),
    ("code_sync.failed_rate", MetricKind::Ratio),
    ("mqtt.reconnects", MetricKind::Count),
    ("events.lost", MetricKind::Count),
    ("events.duplicated", MetricKind::Count),
    ("devices.offline_max", MetricKind::Count),
    ("battery.min_pct", MetricKind::Count),
    ("battery.low_events", MetricKind::Count),
];

/// The kind of a known metric, or `None` for a name not in the catalogue.
pub fn metric_kind(name: &str) -> Option<MetricKind> {
    if let Some((op, stat)) = name.rsplit_once('.') {
        if LATENCY_OPERATIONS.contains(&op) && LATENCY_STATS.contains(&stat) {
            return Some(MetricKind::Latency);
        }
    }
    OTHER_METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
}

/// Every metric name a threshold may use (for suggestions and docs).
pub fn metric_names() -> Vec<String> {
    let mut out = Vec::new();
    for op in LATENCY_OPERATIONS {
        for stat in LATENCY_STATS {
            out.push(format!("{op}.{stat}"));
        }
    }
    out.extend(OTHER_METRICS.iter().map(|(n, _)| n.to_string()));
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Comparator {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Comparator {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
            Comparator::Eq => "==",
            Comparator::Ne => "!=",
        }
    }
}

/// One checked threshold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Threshold {
    pub metric: String,
    pub kind: MetricKind,
    pub comparator: Comparator,
    /// In the metric's base unit (see the module docs).
    pub value: f64,
    /// The expression as written, for reports ("< 25ms").
    pub text: String,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.metric, self.text)
    }
}

/// A threshold that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ThresholdError {
    pub message: String,
    pub hint: String,
    /// True when the metric name is at fault (the key), false for the value.
    pub in_metric: bool,
}

const EXPR_HINT: &str =
    "thresholds look like \"< 25ms\", \"<= 2s\", \"== 0\", \"< 0.1%\" or \">= 500/s\"";

impl Threshold {
    /// Parses `metric = expr`, e.g. ("check.pin.p99", "< 25ms").
    pub fn parse(metric: &str, expr: &str) -> Result<Threshold, ThresholdError> {
        let kind = metric_kind(metric).ok_or_else(|| {
            let names = metric_names();
            let hint = match super::error::suggest(metric, names.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "see the metric list in scenarios/README.md".to_string(),
            };
            ThresholdError {
                message: format!("unknown metric `{metric}`"),
                hint,
                in_metric: true,
            }
        })?;
        let bad = |message: String, hint: &str| ThresholdError {
            message,
            hint: hint.to_string(),
            in_metric: false,
        };
        let s = expr.trim();
        let (comparator, rest) = [
            ("<=", Comparator::Le),
            (">=", Comparator::Ge),
            ("==", Comparator::Eq),
            ("!=", Comparator::Ne),
            ("<", Comparator::Lt),
            (">", Comparator::Gt),
        ]
        .into_iter()
        .find_map(|(p, c)| s.strip_prefix(p).map(|r| (c, r.trim())))
        .ok_or_else(|| {
            bad(
                format!("`{expr}` does not start with a comparator (<, <=, >, >=, ==, !=)"),
                EXPR_HINT,
            )
        })?;
        let end = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map_or(rest.len(), |(i, _)| i);
        let number: f64 = rest[..end]
            .parse()
            .map_err(|_| bad(format!("`{expr}` has no number to compare with"), EXPR_HINT))?;
        let unit = rest[end..].trim();
        let value = match (kind, unit) {
            (MetricKind::Latency, "us" | "µs") => number / 1000.0,
            (MetricKind::Latency, "ms") => number,
            (MetricKind::Latency, "s") => number * 1000.0,
            (MetricKind::Latency, "") if number == 0.0 => 0.0,
            (MetricKind::Latency, _) => {
                return Err(bad(
                    format!("`{metric}` is a latency; `{expr}` needs a time unit (us, ms or s)"),
                    "e.g. \"< 25ms\"",
                ))
            }
            (MetricKind::Ratio, "%") => number / 100.0,
            (MetricKind::Ratio, "") if number == 0.0 => 0.0,
            (MetricKind::Ratio, _) => {
                return Err(bad(
                    format!("`{metric}` is a ratio; write `{expr}` as a percentage"),
                    "e.g. \"< 0.1%\"",
                ))
            }
            (MetricKind::Count, "") => number,
            (MetricKind::Count, _) => {
                return Err(bad(
                    format!("`{metric}` is a plain number; `{expr}` should have no unit"),
                    "e.g. \"== 0\"",
                ))
            }
            (MetricKind::Throughput, "" | "/s") => number,
            (MetricKind::Throughput, _) => {
                return Err(bad(
                    format!("`{metric}` is per second; `{expr}` should end in /s or nothing"),
                    "e.g. \">= 500/s\"",
                ))
            }
        };
        Ok(Threshold {
            metric: metric.to_string(),
            kind,
            comparator,
            value,
            text: expr.trim().to_string(),
        })
    }

    /// Does `measured` (in the metric's base unit) pass? NaN never passes.
    pub fn evaluate(&self, measured: f64) -> bool {
        if measured.is_nan() {
            return false;
        }
        match self.comparator {
            Comparator::Lt => measured < self.value,
            Comparator::Le => measured <= self.value,
            Comparator::Gt => measured > self.value,
            Comparator::Ge => measured >= self.value,
            Comparator::Eq => measured == self.value,
            Comparator::Ne => measured != self.value,
        }
    }
}

/// The verdict on one threshold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ThresholdResult {
    pub threshold: Threshold,
    /// `None` when the run did not produce this metric (which fails).
    pub measured: Option<f64>,
    pub passed: bool,
}

/// Evaluates every threshold against the measured metrics. A metric missing
/// from `measured` fails its threshold: a check that could not be made must
/// not pass silently.
pub fn evaluate_all(
    thresholds: &[Threshold],
    measured: &BTreeMap<String, f64>,
) -> Vec<ThresholdResult> {
    thresholds
        .iter()
        .map(|t| {
            let m = measured.get(&t.metric).copied();
            ThresholdResult {
                threshold: t.clone(),
                measured: m,
                passed: m.is_some_and(|v| t.evaluate(v)),
            }
        })
        .collect()
}

/// True when every result passed (and vacuously for no thresholds).
pub fn all_passed(results: &[ThresholdResult]) -> bool {
    results.iter().all(|r| r.passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(metric: &str, expr: &str) -> Threshold {
        Threshold::parse(metric, expr).unwrap()
    }

    #[test]
    fn parses_units_into_base_units() {
        assert_eq!(t("check.pin.p99", "< 25ms").value, 25.0);
        assert_eq!(t("check.pin.p99", "<= 2s").value, 2000.0);
        assert_eq!(t("check.pin.p99", "< 500us").value, 0.5);
        assert_eq!(t("errors.rate", "< 0.1%").value, 0.001);
        assert_eq!(t("errors.rate", "== 0").value, 0.0);
        assert_eq!(
            t("decisions.false_accept", "== 0").comparator,
            Comparator::Eq
        );
        assert_eq!(t("checks.per_s", ">= 500/s").value, 500.0);
        assert_eq!(t("checks.per_s", ">=500").comparator, Comparator::Ge);
    }

    #[test]
    fn rejects_bad_expressions_with_a_reason() {
        let e = Threshold::parse("check.pin.p99", "< 25").unwrap_err();
        assert!(e.message.contains("time unit"), "{e}");
        let e = Threshold::parse("errors.rate", "< 0.1").unwrap_err();
        assert!(e.message.contains("percentage"), "{e}");
        let e = Threshold::parse("check.pin.p99", "about 25ms").unwrap_err();
        assert!(e.message.contains("comparator"), "{e}");
        let e = Threshold::parse("check.pin.p99", "<").unwrap_err();
        assert!(e.message.contains("no number"), "{e}");
        let e = Threshold::parse("decisions.false_accept", "== 0ms").unwrap_err();
        assert!(e.message.contains("no unit"), "{e}");
        let e = Threshold::parse("chek.pin.p99", "< 25ms").unwrap_err();
        assert!(e.in_metric);
        assert!(e.hint.contains("check.pin.p99"), "{}", e.hint);
    }

    #[test]
    fn evaluate_compares_in_base_units() {
        let p99 = t("check.pin.p99", "< 25ms");
        assert!(p99.evaluate(24.9));
        assert!(!p99.evaluate(25.0));
        assert!(!p99.evaluate(f64::NAN));
        let le = t("check.pin.p99", "<= 25ms");
        assert!(le.evaluate(25.0));
        let fa = t("decisions.false_accept", "== 0");
        assert!(fa.evaluate(0.0));
        assert!(!fa.evaluate(1.0));
        let ne = t("decisions.false_accept", "!= 3");
        assert!(ne.evaluate(0.0) && !ne.evaluate(3.0));
        let rate = t("errors.rate", "< 0.1%");
        assert!(rate.evaluate(0.0009));
        assert!(!rate.evaluate(0.001));
        let thr = t("checks.per_s", ">= 500/s");
        assert!(thr.evaluate(500.0) && !thr.evaluate(499.0));
        let gt = t("battery.min_pct", "> 20");
        assert!(gt.evaluate(21.0) && !gt.evaluate(20.0));
    }

    #[test]
    fn evaluate_all_reports_each_result_and_fails_missing_metrics() {
        let ths = vec![
            t("check.pin.p99", "< 25ms"),
            t("decisions.false_accept", "== 0"),
            t("errors.rate", "< 0.1%"),
        ];
        let measured = BTreeMap::from([
            ("check.pin.p99".to_string(), 12.5),
            ("decisions.false_accept".to_string(), 2.0),
        ]);
        let r = evaluate_all(&ths, &measured);
        assert_eq!(r.len(), 3);
        assert!(r[0].passed);
        assert_eq!(r[0].measured, Some(12.5));
        assert!(!r[1].passed);
        assert_eq!(r[1].measured, Some(2.0));
        assert!(!r[2].passed);
        assert_eq!(r[2].measured, None);
        assert!(!all_passed(&r));
        assert!(all_passed(&r[..1]));
        assert!(all_passed(&[]));
    }
}
