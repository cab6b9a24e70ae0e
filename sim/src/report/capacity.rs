//! What `fleetsim capacity` found (`capacity.json`), its summary table and
//! `capacity.html`. The search itself is [`crate::run::capacity`]; each
//! step is a whole run with its own report directory under `steps/`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::fmt_num;
use super::html::CSS;
use super::junit::escape;
use super::svg::{line_chart, Series, XAxis, PALETTE};

/// `capacity.json`'s version; bump on an incompatible change.
pub const CAPACITY_SCHEMA_VERSION: u32 = 1;

/// Which part of the search a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Geometric ramp from the start rate.
    Ramp,
    /// Bisection between the last pass and the first failure.
    Bisect,
    /// A boundary rate again with another seed (the band).
    Repeat,
}

/// A threshold a step failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedThreshold {
    /// The metric, e.g. `arrivals.dropped_rate`.
    pub metric: String,
    /// The threshold as written, e.g. `arrivals.dropped_rate < 1%`.
    pub threshold: String,
    /// In report.json's units; `None`: the step did not produce it.
    pub measured: Option<f64>,
}

/// One step: the scenario's load at one rate, judged on its own.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapacityStep {
    /// 1-based, in the order the steps ran.
    pub index: u32,
    pub stage: Stage,
    /// The arrival rate the step was asked to offer.
    pub rate_per_s: f64,
    pub seed: u64,
    /// Arrivals offered per second of the measured window (report.json
    /// `arrivals.offered_per_s`).
    pub offered_per_s: f64,
    /// Arrivals served per second of the measured window and its drain
    /// (`arrivals.served_per_s`): the achieved rate.
    pub served_per_s: f64,
    /// Arrivals offered in the measured window.
    pub offered: u64,
    /// p99 of every credential check completed in the window, ms; `None`
    /// when no check completed.
    pub checks_p99_ms: Option<f64>,
    /// Every threshold passed (thresholds not judged count as failed here).
    pub passed: bool,
    /// The thresholds it failed, in the scenario's order (the first is
    /// the step's failing metric).
    pub failed: Vec<FailedThreshold>,
    /// Every threshold's metric the step measured, in report.json's units.
    pub measured: BTreeMap<String, f64>,
    /// The harness itself may have been the bottleneck (report.json
    /// `harness.saturated`): the step says nothing about the system.
    pub harness_bound: bool,
    pub harness_warning: Option<String>,
    /// The step's own report directory (report.json, report.html, ...).
    pub report_dir: String,
}

impl CapacityStep {
    /// The first threshold this step failed.
    pub fn failing_metric(&self) -> Option<&FailedThreshold> {
        self.failed.first()
    }
}

/// A boundary rate over its runs (the search's step and the repeats).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Band {
    pub rate_per_s: f64,
    pub runs: u32,
    pub passed: u32,
    pub served_per_s_min: f64,
    pub served_per_s_max: f64,
    /// The breaking metric (see [`CapacityReport::breaking_metric`]) over
    /// the runs, where measured.
    pub metric: Option<String>,
    pub measured_min: Option<f64>,
    pub measured_max: Option<f64>,
}

/// How the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A passing rate with a failing one above it, within the precision.
    Found,
    /// The maximum rate passed: the capacity is at least that (not found).
    AtMax,
    /// The start rate failed: no rate passed.
    NonePassed,
}

/// `capacity.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapacityReport {
    pub schema_version: u32,
    pub fleetsim_version: String,
    pub name: String,
    pub seed: u64,
    pub transport: String,
    pub clock: String,
    /// The command that repeats the search.
    pub command: String,
    pub plan: Plan,
    pub verdict: Verdict,
    /// The highest rate that passed (`None`: none did). With `at_max`
    /// the capacity is at least this, not this.
    pub max_passing_per_s: Option<f64>,
    /// The lowest rate that failed (`None`: the maximum passed).
    pub first_failing_per_s: Option<f64>,
    /// The first threshold the step at `first_failing_per_s` failed.
    pub breaking_metric: Option<FailedThreshold>,
    /// The boundary rates over their repeats: the highest pass, then the
    /// lowest failure.
    pub bands: Vec<Band>,
    /// Every repeat at the highest pass passed and every repeat at the
    /// lowest failure failed (`None`: no repeats).
    pub stable: Option<bool>,
    /// Steps whose harness may have been the bottleneck.
    pub harness_bound_steps: Vec<u32>,
    pub steps: Vec<CapacityStep>,
}

/// The search's settings, as the flags gave them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub start_per_s: f64,
    pub max_per_s: f64,
    /// Each ramp step's rate over the last one's.
    pub growth: f64,
    pub step_s: f64,
    pub warmup_s: f64,
    pub repeats: u32,
    /// As given: `5%` or `10/s`.
    pub precision: String,
}

fn rate(v: f64) -> String {
    let r = if v >= 100.0 {
        v.round()
    } else {
        (v * 100.0).round() / 100.0
    };
    format!("{}/s", fmt_num(r))
}

/// "measured 0.21", or "not measured" when the step did not produce it.
fn measured(f: &FailedThreshold) -> String {
    f.measured.map_or_else(
        || "not measured".to_string(),
        |m| format!("measured {}", fmt_num(m)),
    )
}

impl CapacityReport {
    /// The console table and the finding.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>4} {:<7} {:>11} {:>11} {:>11} {:>9}  {:<7} failing metric",
            "step", "stage", "rate", "offered/s", "achieved/s", "p99 ms", "verdict"
        );
        for st in &self.steps {
            let p99 = st
                .checks_p99_ms
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
            let failing = st.failing_metric().map_or_else(String::new, |f| {
                format!("{} ({})", f.threshold, measured(f))
            });
            let _ = writeln!(
                s,
                "{:>4} {:<7} {:>11} {:>11.2} {:>11.2} {:>9}  {:<7} {}{}",
                st.index,
                format!("{:?}", st.stage).to_lowercase(),
                rate(st.rate_per_s),
                st.offered_per_s,
                st.served_per_s,
                p99,
                if st.passed { "PASS" } else { "FAIL" },
                failing,
                if st.harness_bound {
                    "  [HARNESS-BOUND]"
                } else {
                    ""
                }
            );
        }
        for b in &self.bands {
            let metric = match (&b.metric, b.measured_min, b.measured_max) {
                (Some(m), Some(lo), Some(hi)) => {
                    format!(", {m} {} to {}", fmt_num(lo), fmt_num(hi))
                }
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "band at {}: passed {} of {} runs, achieved {:.2} to {:.2}/s{metric}",
                rate(b.rate_per_s),
                b.passed,
                b.runs,
                b.served_per_s_min,
                b.served_per_s_max
            );
        }
        if !self.harness_bound_steps.is_empty() {
            let list: Vec<String> = self
                .harness_bound_steps
                .iter()
                .map(u32::to_string)
                .collect();
            let _ = writeln!(
                s,
                "WARNING: the harness may have been the bottleneck in step(s) {}: those rates say nothing about the system (see each step's report)",
                list.join(", ")
            );
        }
        let _ = writeln!(s, "{}", self.finding());
        s
    }

    /// One line: what the search found.
    pub fn finding(&self) -> String {
        let breaking = self.breaking_metric.as_ref().map_or_else(String::new, |f| {
            format!(": {} ({})", f.threshold, measured(f))
        });
        let mut line = match (self.verdict, self.max_passing_per_s, self.first_failing_per_s) {
            (Verdict::Found, Some(lo), Some(hi)) => format!(
                "capacity: {} passes; {} fails{breaking}",
                rate(lo),
                rate(hi)
            ),
            (Verdict::AtMax, Some(lo), _) => format!(
                "capacity: at least {} (the maximum rate passed; raise --max-rate to find the limit)",
                rate(lo)
            ),
            (_, _, hi) => format!(
                "capacity: no rate passed; the start rate {} fails{breaking}",
                hi.map(rate).unwrap_or_default()
            ),
        };
        if self.stable == Some(false) {
            line.push_str(
                "\nthe boundary is not stable: repeats disagree (see the bands); lengthen --step-duration or widen --precision",
            );
        }
        line
    }
}

/// Renders `capacity.html`: the finding, achieved rate and p99 against the
/// offered rate with the boundary, and the steps.
pub fn render_html(c: &CapacityReport) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let badge = match c.verdict {
        Verdict::Found => r#"<span class="badge pass">FOUND</span>"#,
        Verdict::AtMax => r#"<span class="badge skip">AT MAXIMUM</span>"#,
        Verdict::NonePassed => r#"<span class="badge fail">NONE PASSED</span>"#,
    };
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,"><title>fleetsim capacity: {name}</title><style>{CSS}</style></head><body><header><h1>{name} capacity {badge}</h1><div class="meta">fleetsim {ver} &middot; seed {seed} &middot; transport {tr} &middot; clock {clock} &middot; steps of {step} s after a {warm} s warm-up &middot; precision {prec}</div></header><main><section id="finding"><h2>Finding</h2><p>{finding}</p><pre>{cmd}</pre></section>"#,
        name = escape(&c.name),
        ver = escape(&c.fleetsim_version),
        seed = c.seed,
        tr = escape(&c.transport),
        clock = escape(&c.clock),
        step = fmt_num(c.plan.step_s),
        warm = fmt_num(c.plan.warmup_s),
        prec = escape(&c.plan.precision),
        finding = escape(&c.finding()).replace('\n', "<br>"),
        cmd = escape(&c.command),
    );
    if c.clock == "virtual" {
        h.push_str(r#"<p class="note" id="latency-simulated"><b>Virtual time:</b> latencies are simulated (a timer's rounding plus <code>faults.engine_added_latency</code>), and the harness cannot be the bottleneck.</p>"#);
    }
    if !c.harness_bound_steps.is_empty() {
        let _ = write!(
            h,
            r#"<p class="note" id="harness-bound">The harness may have been the bottleneck in step(s) {}: those rates say nothing about the system under test.</p>"#,
            c.harness_bound_steps
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    charts(&mut h, c);
    steps_table(&mut h, c);
    h.push_str("</main></body></html>\n");
    h
}

/// A vertical line at `x` from 0 to `top`, drawn as a two-point series.
fn marker(name: String, color: &'static str, x: f64, top: f64) -> Series {
    Series {
        name,
        color,
        points: vec![(x, 0.0), (x, top)],
    }
}

fn charts(h: &mut String, c: &CapacityReport) {
    // The search's own steps (repeats are in the bands and the table).
    let mut main: Vec<&CapacityStep> = c
        .steps
        .iter()
        .filter(|s| s.stage != Stage::Repeat)
        .collect();
    main.sort_by(|a, b| a.rate_per_s.total_cmp(&b.rate_per_s));
    let achieved: Vec<(f64, f64)> = main
        .iter()
        .map(|s| (s.rate_per_s, s.served_per_s))
        .collect();
    let offered: Vec<(f64, f64)> = main.iter().map(|s| (s.rate_per_s, s.rate_per_s)).collect();
    let p99: Vec<(f64, f64)> = main
        .iter()
        .filter_map(|s| s.checks_p99_ms.map(|p| (s.rate_per_s, p)))
        .collect();
    let top_rate = main
        .iter()
        .map(|s| s.rate_per_s.max(s.served_per_s))
        .fold(0.0, f64::max);
    let top_p99 = p99.iter().map(|p| p.1).fold(0.0, f64::max);
    let boundary = |top: f64| {
        let mut v = Vec::new();
        if let Some(lo) = c.max_passing_per_s {
            v.push(marker(
                format!("highest pass {}", rate(lo)),
                PALETTE[2],
                lo,
                top,
            ));
        }
        if let Some(hi) = c.first_failing_per_s {
            v.push(marker(
                format!("first failure {}", rate(hi)),
                PALETTE[3],
                hi,
                top,
            ));
        }
        v
    };
    let mut rates = vec![
        Series {
            name: "achieved".into(),
            color: PALETTE[0],
            points: achieved,
        },
        Series {
            name: "asked (achieved = asked)".into(),
            color: PALETTE[7],
            points: offered,
        },
    ];
    rates.extend(boundary(top_rate));
    let mut lat = vec![Series {
        name: "p99 of checks".into(),
        color: PALETTE[1],
        points: p99,
    }];
    lat.extend(boundary(top_p99));
    h.push_str("<section id=\"charts\"><h2>Rate and latency against the offered rate</h2><div class=\"grid2\">");
    h.push_str(&line_chart(
        "chart-capacity-rate",
        "Achieved rate (arrivals/s)",
        XAxis::Linear("offered rate (arrivals/s)"),
        "per s",
        &rates,
    ));
    h.push_str(&line_chart(
        "chart-capacity-p99",
        "p99 of credential checks (ms)",
        XAxis::Linear("offered rate (arrivals/s)"),
        "ms",
        &lat,
    ));
    h.push_str("</div></section>");
}

fn steps_table(h: &mut String, c: &CapacityReport) {
    h.push_str("<section id=\"steps\"><h2>Steps</h2><table id=\"capacity-steps\"><tr><th>step</th><th class=\"l\">stage</th><th>rate</th><th>seed</th><th>offered/s</th><th>achieved/s</th><th>p99 ms</th><th class=\"l\">verdict</th><th class=\"l\">failing metric</th><th class=\"l\">report</th></tr>");
    for s in &c.steps {
        let verdict = if s.passed {
            r#"<span class="badge pass">PASS</span>"#
        } else {
            r#"<span class="badge fail">FAIL</span>"#
        };
        let harness = if s.harness_bound {
            r#" <span class="badge skip" title="the harness may have been the bottleneck">HARNESS-BOUND</span>"#
        } else {
            ""
        };
        let failing = s.failing_metric().map_or_else(String::new, |f| {
            format!("{} ({})", f.threshold, measured(f))
        });
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td class=\"l nw\">{verdict}{harness}</td><td class=\"l\">{}</td><td class=\"l\"><a href=\"{}/report.html\">report</a></td></tr>",
            s.index,
            format!("{:?}", s.stage).to_lowercase(),
            escape(&rate(s.rate_per_s)),
            s.seed,
            s.offered_per_s,
            s.served_per_s,
            s.checks_p99_ms.map_or_else(|| "-".to_string(), |v| format!("{v:.3}")),
            escape(&failing),
            escape(&relative(&s.report_dir)),
        );
    }
    h.push_str("</table></section>");
}

/// A step's directory relative to the capacity report's (`steps/...`).
fn relative(dir: &str) -> String {
    match dir.rfind("steps/") {
        Some(i) => dir[i..].to_string(),
        None => dir.to_string(),
    }
}
