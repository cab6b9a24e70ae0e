//! `report.html`: one self-contained file (inline CSS and SVG, no script, no
//! network) that a QA engineer can open from a CI artifact.

use std::fmt::Write;

use super::junit::escape;
use super::svg::{
    bar_chart, downsample, line_chart, Fold, Series, XAxis, MAX_CHART_POINTS, PALETTE,
};
use super::{fmt_num, RunReport};
use crate::metrics::{DecisionExample, BATTERY_BUCKETS};

const CSS: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px}
main{padding:12px 28px 40px;max-width:1100px}
section{background:#fff;border-radius:6px;padding:14px 18px;margin:14px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e3e5ea;text-align:right}
th:first-child,td:first-child{text-align:left}
td.l,th.l{text-align:left}
td.nw{white-space:nowrap}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;font-size:13px}
.pass{background:#d9f2e3;color:#0b6b35}.fail{background:#fbe0dc;color:#a3200f}.skip{background:#e8e9ed;color:#444}
.note{background:#fff6d6;border-left:4px solid #E69F00;padding:8px 12px;font-size:13px}
.meta{font-size:13px;opacity:.9}
pre{background:#f0f1f4;padding:8px;overflow:auto;font-size:12px}
.chart{width:100%;max-width:720px;height:auto;display:block;margin:6px 0}
.chart .ct{font-size:14px;font-weight:600;fill:#1d2330}
.chart .tick{font-size:11px;fill:#444}
.chart .muted{font-size:14px;fill:#888}
.chart .grid{stroke:#e6e8ec;stroke-width:1}
.chart .axis{stroke:#888;stroke-width:1}
.grid2{display:grid;grid-template-columns:1fr;gap:8px}
";

/// Renders the report as one HTML document.
pub fn render_html(r: &RunReport) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let verdict = match (r.passed, r.partial.is_some()) {
        (true, false) => r#"<span class="badge pass">PASSED</span>"#,
        (false, false) => r#"<span class="badge fail">FAILED</span>"#,
        (true, true) => {
            r#"<span class="badge pass">PASSED</span> <span class="badge fail">PARTIAL</span>"#
        }
        (false, true) => {
            r#"<span class="badge fail">FAILED</span> <span class="badge fail">PARTIAL</span>"#
        }
    };
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,"><title>fleetsim report: {name}</title><style>{CSS}</style></head><body><header><h1>{name} {verdict}</h1><div class="meta">fleetsim {ver} &middot; seed {seed} &middot; transport {tr} &middot; clock {clock} &middot; {dur} s &middot; intervals of {interval} s{started}{shard}</div><div class="meta">{model}</div></header><main>{simulated}"#,
        name = escape(&r.name),
        ver = escape(&r.fleetsim_version),
        seed = r.seed,
        tr = escape(&r.transport),
        clock = escape(&r.clock),
        dur = fmt_num(r.duration_s),
        interval = fmt_num(r.interval_s),
        simulated = if r.latency_simulated {
            r#"<p class="note" id="latency-simulated"><b>Latencies are simulated, not measured.</b> In virtual time an in-process check takes no time: the latencies below are a timer's rounding (0-1 ms). Latency thresholds are not judged unless the scenario sets <code>judge_simulated_latency = true</code>.</p>"#
        } else {
            ""
        },
        started = r
            .started_at
            .as_deref()
            .map(|s| format!(" &middot; started {}", escape(s)))
            .unwrap_or_default(),
        shard = match (&r.shards.shard, r.shards.merged_from.len()) {
            (Some(s), _) => format!(" &middot; shard {}/{}", s.index, s.count),
            (None, n) if n > 0 => format!(" &middot; merged from {n} reports"),
            _ => String::new(),
        },
        model = escape(&r.model_label),
    );

    let _ = write!(
        h,
        "<section><h2>Reproduce</h2><pre>{}</pre></section>",
        escape(&r.command)
    );
    if let Some(p) = &r.partial {
        let _ = write!(
            h,
            "<section id=\"partial\"><h2>Partial verdict</h2><p>Merged with --allow-partial: {}. The numbers cover only the reports merged.</p></section>",
            escape(p)
        );
    }
    if let Some(f) = &r.fleet {
        let workers: Vec<String> = r
            .shards
            .merged_from
            .iter()
            .filter_map(|m| m.shard.map(|s| format!("shard {}/{}", s.index, s.count)))
            .collect();
        let _ = write!(
            h,
            "<section id=\"shared-fleet\"><h2>Shared target</h2><p>Target {}{}, organization {}; fleet manifest <code>{}</code> (hash {}){}.</p></section>",
            escape(&f.target),
            f.broker
                .as_deref()
                .map(|b| format!(", devices through {}", escape(b)))
                .unwrap_or_default(),
            f.organization,
            escape(&f.manifest),
            escape(&f.manifest_hash),
            if workers.is_empty() {
                String::new()
            } else {
                format!("; workers: {}", escape(&workers.join(", ")))
            }
        );
    }
    thresholds(&mut h, r);
    r.arrivals.html(&mut h, r.arrivals_behind_schedule);
    operations(&mut h, r);
    charts(&mut h, r);
    decisions(&mut h, r);
    health(&mut h, r);
    mismatch_examples(&mut h, r);
    let scenario = serde_json::to_string_pretty(&r.scenario).unwrap_or_default();
    let _ = writeln!(
        h,
        "<section><h2>Resolved scenario</h2><details><summary>show</summary><pre>{}</pre></details></section></main></body></html>",
        escape(&scenario)
    );
    h
}

fn thresholds(h: &mut String, r: &RunReport) {
    h.push_str("<section id=\"thresholds\"><h2>Thresholds</h2>");
    if r.thresholds.is_empty() {
        h.push_str("<p>No thresholds in this scenario.</p></section>");
        return;
    }
    h.push_str("<table><tr><th>metric</th><th class=\"l\">expected</th><th>measured</th><th class=\"l\">unit</th><th>result</th></tr>");
    for t in &r.thresholds {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
            escape(&t.metric),
            escape(&t.expression),
            t.measured.map(fmt_num).unwrap_or_else(|| "no value".into()),
            escape(&t.unit),
            match (&t.not_judged, t.passed) {
                (Some(why), _) => format!(
                    r#"<span class="badge skip">not judged: {}</span>"#,
                    escape(why)
                ),
                (None, true) => r#"<span class="badge pass">pass</span>"#.to_string(),
                (None, false) => r#"<span class="badge fail">FAIL</span>"#.to_string(),
            }
        );
    }
    h.push_str("</table></section>");
}

fn ms(us: u64) -> String {
    fmt_num(us as f64 / 1000.0)
}

fn operations(h: &mut String, r: &RunReport) {
    h.push_str("<section id=\"operations\"><h2>Operations</h2>");
    if r.latency_simulated {
        h.push_str("<p>Latency columns: simulated (virtual time), not measured.</p>");
    }
    let _ = write!(
        h,
        "<p>{} operations/s over the run, {} credential checks/s, peak interval {} /s.</p>",
        fmt_num(r.throughput.total_per_s),
        fmt_num(r.throughput.checks_per_s),
        fmt_num(r.throughput.peak_interval_per_s)
    );
    h.push_str("<table><tr><th>operation</th><th>count</th><th>rate /s</th><th>granted</th><th>denied</th><th>errors</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>mean ms</th></tr>");
    let rows = r
        .operations
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(r.checks.as_ref().map(|c| ("all credential checks", c)));
    for (name, o) in rows {
        let l = &o.latency;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            o.count,
            fmt_num(o.rate_per_s),
            o.granted,
            o.denied,
            o.errors,
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p99_9_us),
            ms(l.max_us),
            fmt_num((l.mean_us / 1000.0 * 1000.0).round() / 1000.0),
        );
    }
    h.push_str("</table></section>");
}

fn charts(h: &mut String, r: &RunReport) {
    h.push_str("<section id=\"charts\"><h2>Latency and throughput</h2>");
    // Every chart of the time series draws at most MAX_CHART_POINTS points
    // per line; say so when intervals were folded together.
    let folded = r.timeseries.len().div_ceil(MAX_CHART_POINTS);
    if folded > 1 {
        let _ = write!(
            h,
            "<p>{} intervals of {} s; each chart point covers {folded} of them (rates: their mean, p99: the worst).</p>",
            r.timeseries.len(),
            fmt_num(r.interval_s)
        );
    }
    let sim = if r.latency_simulated {
        " (simulated)"
    } else {
        ""
    };
    h.push_str("<div class=\"grid2\">");
    let rates = |f: &dyn Fn(&super::IntervalPoint) -> f64| {
        let pts: Vec<(f64, f64)> = r.timeseries.iter().map(|p| (p.start_s, f(p))).collect();
        downsample(&pts, MAX_CHART_POINTS, Fold::Mean)
    };
    let worst = |pts: Vec<(f64, f64)>| downsample(&pts, MAX_CHART_POINTS, Fold::Max);
    let curves: Vec<Series> = r
        .operations
        .iter()
        .enumerate()
        .map(|(i, (name, o))| Series {
            name: name.clone(),
            color: PALETTE[i % PALETTE.len()],
            points: o
                .curve
                .iter()
                .map(|p| (p.quantile, p.latency_us as f64 / 1000.0))
                .collect(),
        })
        .collect();
    h.push_str(&line_chart(
        "chart-percentiles",
        &format!("Latency by percentile{sim}"),
        XAxis::Percentile,
        "latency (ms)",
        &curves,
    ));

    let rate = vec![
        Series {
            name: "operations/s".into(),
            color: PALETTE[0],
            points: rates(&|p| p.rate_per_s),
        },
        Series {
            name: "errors/s".into(),
            color: PALETTE[3],
            points: rates(&|p| p.errors as f64 / r.interval_s.max(1e-9)),
        },
    ];
    h.push_str(&line_chart(
        "chart-throughput",
        "Throughput over time",
        XAxis::Linear("seconds since start"),
        "per second",
        &rate,
    ));

    let mut p99 = vec![Series {
        name: "all checks".into(),
        color: PALETTE[7],
        points: worst(
            r.timeseries
                .iter()
                .filter_map(|p| p.checks_p99_us.map(|v| (p.start_s, v as f64 / 1000.0)))
                .collect(),
        ),
    }];
    for (i, name) in r.operations.keys().enumerate() {
        p99.push(Series {
            name: name.clone(),
            color: PALETTE[i % (PALETTE.len() - 1)],
            points: worst(
                r.timeseries
                    .iter()
                    .filter_map(|p| {
                        p.by_operation
                            .get(name)
                            .map(|o| (p.start_s, o.p99_us as f64 / 1000.0))
                    })
                    .collect(),
            ),
        });
    }
    h.push_str(&line_chart(
        "chart-p99",
        &format!("p99 latency over time{sim}"),
        XAxis::Linear("seconds since start"),
        "p99 (ms)",
        &p99,
    ));
    h.push_str("</div></section>");
}

fn examples(h: &mut String, id: &str, title: &str, list: &[DecisionExample]) {
    if list.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<h3>{}</h3><table id=\"{id}\"><tr><th class=\"l\">time (simulated)</th><th>site</th><th>door</th><th>device</th><th>credential</th><th class=\"l\">action</th><th class=\"l\">expected</th><th class=\"l\">actual</th><th class=\"l\">keypad: wrong PINs at</th></tr>",
        escape(title)
    );
    for e in list {
        let mut keypad = e.wrong_pins_at.clone();
        if let Some(t) = &e.locked_until {
            keypad.push(format!("locked until {t}"));
        }
        let _ = write!(
            h,
            "<tr><td class=\"l nw\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{} {}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            escape(&e.at),
            e.site.map(|s| s.to_string()).unwrap_or_default(),
            e.door,
            e.device,
            e.credential.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            escape(&e.credential_kind),
            escape(&e.action),
            escape(&e.expected),
            escape(&e.actual),
            escape(&keypad.join(", ")),
        );
    }
    h.push_str("</table>");
}

fn decisions(h: &mut String, r: &RunReport) {
    let d = &r.decisions;
    let c = &d.counts;
    h.push_str("<section id=\"decisions\"><h2>Decisions vs the oracle</h2>");
    let bars = vec![
        ("true grants".to_string(), c.true_grants as f64, PALETTE[2]),
        (
            "true denials".to_string(),
            c.true_denials as f64,
            PALETTE[0],
        ),
        (
            "false accepts".to_string(),
            c.false_accepts as f64,
            PALETTE[3],
        ),
        (
            "false rejects".to_string(),
            c.false_rejects as f64,
            PALETTE[1],
        ),
        ("no answer".to_string(), c.no_answer as f64, PALETTE[7]),
        // Neither right nor wrong: the expectation changed inside the
        // check, or hangs on an earlier check whose outcome is unknown.
        ("ambiguous".to_string(), c.ambiguous as f64, PALETTE[5]),
        ("uncertain".to_string(), c.uncertain as f64, PALETTE[4]),
    ];
    h.push_str(&bar_chart("chart-decisions", "Decisions", "checks", &bars));
    h.push_str("</section>");
}

/// Mismatches with the oracle, up to the bounded number kept per class.
fn mismatch_examples(h: &mut String, r: &RunReport) {
    let d = &r.decisions;
    let kinds = [
        (
            "examples-false-accept",
            "False accepts (expected denied, granted)",
            &d.false_accept_examples,
        ),
        (
            "examples-false-reject",
            "False rejects (expected granted, denied)",
            &d.false_reject_examples,
        ),
        (
            "examples-reason-mismatch",
            "Reason mismatches (denied, for another reason than the rules give)",
            &d.reason_mismatch_examples,
        ),
        (
            "examples-no-answer",
            "Checks without an answer",
            &d.no_answer_examples,
        ),
    ];
    if kinds.iter().all(|(_, _, list)| list.is_empty()) {
        return;
    }
    h.push_str("<section id=\"examples\"><h2>Examples of mismatches</h2>");
    for (id, title, list) in kinds {
        examples(h, id, title, list);
    }
    h.push_str("</section>");
}

fn health(h: &mut String, r: &RunReport) {
    let x = &r.health;
    h.push_str("<section id=\"health\"><h2>Device health</h2>");
    let _ = write!(
        h,
        "<p>{} of {} devices online ({}). Events: {} emitted, {} logged, {} lost. Arrivals behind schedule: {}.</p>",
        x.devices_online,
        x.devices_total,
        x.online_pct.map(|p| format!("{} %", fmt_num(p))).unwrap_or_else(|| "n/a".into()),
        x.events_emitted_total,
        x.events_logged_total,
        x.events_lost,
        r.arrivals_behind_schedule,
    );
    if !x.code_sync.is_empty() {
        let parts: Vec<String> = x
            .code_sync
            .iter()
            .map(|(k, n)| format!("{} {n}", escape(k)))
            .collect();
        let _ = write!(
            h,
            "<p>Code changes synced to their doors: {} of {} failed ({}).</p>",
            x.code_sync_failed,
            x.code_sync_total,
            parts.join(", "),
        );
    }
    if !x.devices.is_empty() {
        h.push_str("<table><tr><th>device kind</th><th>devices</th><th>online</th></tr>");
        for (k, c) in &x.devices {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(k),
                c.total,
                c.online
            );
        }
        h.push_str("</table>");
    }
    let battery: Vec<(String, f64, &str)> = (0..BATTERY_BUCKETS)
        .map(|i| {
            (
                format!("{}-{}%", i * 10, i * 10 + 10),
                x.battery_buckets[i] as f64,
                PALETTE[2],
            )
        })
        .collect();
    let battery = if x.battery_buckets.iter().all(|n| *n == 0) {
        Vec::new()
    } else {
        battery
    };
    h.push_str(&bar_chart(
        "chart-battery",
        "Battery levels",
        "devices",
        &battery,
    ));
    let mut kinds: Vec<&String> = x
        .events_emitted
        .keys()
        .chain(x.events_logged.keys())
        .collect();
    kinds.sort();
    kinds.dedup();
    let events: Vec<(String, f64, &str)> = kinds
        .iter()
        .map(|k| {
            (
                (*k).clone(),
                x.events_emitted.get(*k).copied().unwrap_or(0) as f64,
                PALETTE[5],
            )
        })
        .collect();
    h.push_str(&bar_chart(
        "chart-events",
        "Events emitted by kind",
        "events",
        &events,
    ));
    if !kinds.is_empty() {
        h.push_str(
            "<table><tr><th>event kind</th><th>emitted</th><th>logged</th><th>lost</th></tr>",
        );
        for k in kinds {
            let e = x.events_emitted.get(k).copied().unwrap_or(0);
            let l = x.events_logged.get(k).copied().unwrap_or(0);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{e}</td><td>{l}</td><td>{}</td></tr>",
                escape(k),
                e.saturating_sub(l)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}
