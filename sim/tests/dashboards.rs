//! Every metric a dashboard in dashboards/ queries is one a binary exports:
//! fleetsim names against the fleetsim registry itself, reference server
//! names against dashboards/reference-server-metrics.txt. Label names used
//! in selectors and `by (...)` clauses are checked too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use fleetsim::metrics::FleetMetrics;

/// Labels Prometheus attaches at scrape time (or the scrape config sets).
const TARGET_LABELS: [&str; 5] = ["job", "instance", "shard", "role", "le"];

#[derive(Debug)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn known_families() -> BTreeMap<String, Family> {
    let mut known = BTreeMap::new();
    for d in FleetMetrics::new().catalog() {
        known.insert(
            d.name.clone(),
            Family {
                kind: d.kind.to_owned(),
                labels: d.labels.iter().cloned().collect(),
            },
        );
    }
    let text =
        std::fs::read_to_string(dashboards_dir().join("reference-server-metrics.txt")).unwrap();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (decl, kind) = line.rsplit_once(' ').expect("`name{labels} type`");
        let (name, labels) = match decl.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.trim_end_matches('}')
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .collect(),
            ),
            None => (decl, BTreeSet::new()),
        };
        assert!(name.starts_with("reference_server_"), "{name}");
        assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
        known.insert(
            name.to_owned(),
            Family {
                kind: kind.to_owned(),
                labels,
            },
        );
    }
    known
}

/// Resolves a queried series name (`x_bucket` of a histogram `x`) to its family.
fn family<'a>(known: &'a BTreeMap<String, Family>, name: &str) -> Option<&'a Family> {
    if let Some(f) = known.get(name) {
        return (f.kind != "histogram").then_some(f);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let f = known.get(name.strip_suffix(suffix)?)?;
        (f.kind == "histogram").then_some(f)
    })
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Problems in one PromQL expression.
fn check_expr(known: &BTreeMap<String, Family>, expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut used_labels: BTreeSet<String> = BTreeSet::new();
    let mut metrics = 0;
    let mut grouping = Vec::new();
    let mut i = 0;
    let mut in_string = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            in_string = !in_string;
            i += 1;
            continue;
        }
        if in_string || !(c.is_ascii_alphabetic() || c == '_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let rest: String = chars[i..].iter().collect::<String>();
        let rest = rest.trim_start();
        if word.starts_with("fleetsim_") || word.starts_with("reference_server_") {
            metrics += 1;
            let Some(f) = family(known, &word) else {
                problems.push(format!("`{word}` is not exported"));
                continue;
            };
            // Label matchers right after the name.
            if let Some(body) = rest.strip_prefix('{') {
                let body = &body[..body.find('}').unwrap_or(body.len())];
                for matcher in split_matchers(body) {
                    let label = matcher
                        .split(['=', '!', '~'])
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_owned();
                    if !f.labels.contains(&label) && !TARGET_LABELS.contains(&label.as_str()) {
                        problems.push(format!("`{word}` has no label `{label}`"));
                    }
                }
            }
            used_labels.extend(f.labels.iter().cloned());
        } else if word == "by" || word == "without" {
            if let Some(body) = rest.strip_prefix('(') {
                let body = &body[..body.find(')').unwrap_or(body.len())];
                grouping.extend(
                    body.split(',')
                        .map(|l| l.trim().to_owned())
                        .filter(|l| !l.is_empty()),
                );
            }
        } else if word == "label_values" {
            // label_values(metric, label)
            let args: Vec<&str> = rest
                .trim_start_matches('(')
                .split(')')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .collect();
            if let [metric, label] = args[..] {
                match family(known, metric) {
                    Some(f) if f.labels.contains(label) => {}
                    Some(_) => problems.push(format!("`{metric}` has no label `{label}`")),
                    None => problems.push(format!("`{metric}` is not exported")),
                }
                metrics += 1;
            }
        }
    }
    for l in grouping {
        if !used_labels.contains(&l) && !TARGET_LABELS.contains(&l.as_str()) {
            problems.push(format!("grouping by `{l}`, which no queried metric has"));
        }
    }
    if metrics == 0 {
        problems.push("queries no fleetsim or reference server metric".to_owned());
    }
    problems
}

/// Splits `a="x",b=~"y,z"` at commas outside quotes.
fn split_matchers(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in body.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Every PromQL query of a dashboard: panel targets and template variables.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("definition", serde_json::Value::String(s)) if !s.is_empty() => {
                        out.push(s.clone())
                    }
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

#[test]
fn every_dashboard_queries_only_exported_metrics() {
    let known = known_families();
    let mut files: Vec<_> = std::fs::read_dir(dashboards_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "a fleetsim and a reference server dashboard"
    );
    let mut uids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for file in files {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // Importable: a title, a unique uid, a datasource input and positioned panels.
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: title"
        );
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "{name}: uid"
        );
        assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS", "{name}");
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 5, "{name}");
        for p in panels {
            assert!(
                p["gridPos"]["w"].as_u64().is_some(),
                "{name}: panel {} has no position",
                p["title"]
            );
        }
        let mut qs = Vec::new();
        queries(&d, &mut qs);
        assert!(qs.len() >= 8, "{name}: {} queries", qs.len());
        for q in &qs {
            let problems = check_expr(&known, q);
            assert!(problems.is_empty(), "{name}: `{q}`: {problems:?}");
            for w in q.split(|c: char| !is_ident(c)) {
                if w.starts_with("fleetsim_") || w.starts_with("reference_server_") {
                    used.insert(
                        w.trim_end_matches("_bucket")
                            .trim_end_matches("_count")
                            .trim_end_matches("_sum")
                            .to_owned(),
                    );
                }
            }
        }
    }
    // The dashboards show most of what is exported.
    let unused: Vec<_> = known.keys().filter(|k| !used.contains(*k)).collect();
    assert!(
        unused.len() <= 2,
        "exported but on no dashboard: {unused:?}"
    );
}

#[test]
fn the_checker_catches_unknown_names_and_labels() {
    let known = known_families();
    assert!(check_expr(&known, "sum(rate(fleetsim_checks_total[1m]))").is_empty());
    assert!(check_expr(
        &known,
        r#"rate(fleetsim_check_latency_seconds_bucket{le="0.1"}[1m])"#
    )
    .is_empty());
    assert_eq!(
        check_expr(&known, "rate(fleetsim_nope_total[1m])"),
        vec!["`fleetsim_nope_total` is not exported"]
    );
    assert_eq!(
        check_expr(&known, r#"fleetsim_checks_total{device_id="lock-1"}"#),
        vec!["`fleetsim_checks_total` has no label `device_id`"]
    );
    assert_eq!(
        check_expr(&known, "sum by (route) (rate(fleetsim_checks_total[1m]))"),
        vec!["grouping by `route`, which no queried metric has"]
    );
    assert!(
        !check_expr(&known, "fleetsim_checks_total_bucket").is_empty(),
        "a counter has no buckets"
    );
    assert!(!check_expr(&known, "up").is_empty());
    assert!(check_expr(
        &known,
        r#"reference_server_http_requests_total{status=~"5..",route="/v1"}"#
    )
    .is_empty());
}
