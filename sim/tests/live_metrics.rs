//! Live metrics, the way a user sees them: a real Prometheus (apt package
//! `prometheus`) scrapes `fleetsim run --metrics-addr` every second, and
//! while the run is still going every query of dashboards/fleetsim-run.json
//! must return data, non-zero where the run must have produced something;
//! so must every metric family fleetsim registers. No timing assertions:
//! the wait for data is a hang guard only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetsim::metrics::FleetMetrics;
use serde_json::Value;

/// How long data may take to show up before the test gives up (a hang
/// guard: on an idle machine it takes a few seconds).
const GIVE_UP_AFTER_S: u64 = 90;

/// Dashboard queries whose value may be zero in a clean run: nothing went
/// wrong, so they have a sample (0) but no more.
const MAY_BE_ZERO_QUERIES: [&str; 5] = [
    "sum(fleetsim_false_accepts_total)",
    "sum(fleetsim_false_rejects_total)",
    "fleetsim_checks_total{outcome=\"error\"",
    "fleetsim_arrivals_behind_schedule_total",
    "sum(fleetsim_arrivals_behind_schedule)",
];

/// Registered families whose every sample may be zero in a clean run (the
/// unit tests of prom.rs, recorder and metrics_exporter move them).
const MAY_BE_ZERO_FAMILIES: [&str; 5] = [
    "fleetsim_false_accepts_total",
    "fleetsim_false_rejects_total",
    "fleetsim_arrivals_behind_schedule_total",
    "fleetsim_arrivals_behind_schedule",
    "fleetsim_arrivals_dropped_total",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every `expr` of a Grafana dashboard, with `$transport` (a multi-value
/// variable whose "All" is `.*`) replaced as Grafana does.
fn dashboard_queries(file: &Path) -> Vec<String> {
    let d: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.replace("$transport", ".*"));
            }
        }
    }
    assert!(out.len() > 10, "dashboard queries: {out:?}");
    out
}

/// The values of an instant query's series (NaN ones left out).
async fn query(client: &reqwest::Client, prom: &str, expr: &str) -> Option<Vec<f64>> {
    let resp = client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .ok()?;
    let v: Value = resp.json().await.ok()?;
    assert_eq!(v["status"], "success", "{expr}: {v}");
    let result = v["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .filter(|x| !x.is_nan())
            .collect(),
    )
}

/// What a query still lacks: `None` when it has what it must.
async fn lacking(
    client: &reqwest::Client,
    prom: &str,
    expr: &str,
    may_be_zero: bool,
) -> Option<String> {
    match query(client, prom, expr).await {
        None => Some(format!("{expr}: no answer")),
        Some(v) if v.is_empty() => Some(format!("{expr}: no sample")),
        Some(v) if !may_be_zero && !v.iter().any(|x| *x > 0.0) => {
            Some(format!("{expr}: only zeros {v:?}"))
        }
        Some(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_every_metric_has_data_mid_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (metrics_port, prom_port) = (free_port(), free_port());
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: fleetsim\n    static_configs:\n      \
             - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(tmp.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(prom_log)
            .spawn()
            .expect("Prometheus is installed (apt-get install prometheus; tests/run.sh does it)"),
    );
    let run_log = std::fs::File::create(tmp.path().join("fleetsim.log")).unwrap();
    let mut fleetsim = Killed(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .current_dir(root())
            .args([
                "run",
                "sim/tests/run_support/live-metrics.toml",
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
                "--report-dir",
                tmp.path().join("out").to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(run_log)
            .spawn()
            .unwrap(),
    );

    let prom = format!("http://127.0.0.1:{prom_port}");
    let client = reqwest::Client::new();
    let dashboards = dashboard_queries(&root().join("dashboards/fleetsim-run.json"));
    // Every family fleetsim registers, by the series Prometheus stores.
    let families: BTreeSet<(String, bool)> = FleetMetrics::new()
        .catalog()
        .iter()
        .map(|d| {
            let series = if d.kind == "histogram" {
                format!("{}_count", d.name)
            } else {
                d.name.clone()
            };
            (series, MAY_BE_ZERO_FAMILIES.contains(&d.name.as_str()))
        })
        .collect();
    let started = Instant::now();
    let missing = loop {
        let mut missing = Vec::new();
        for expr in &dashboards {
            let zero_ok = MAY_BE_ZERO_QUERIES.iter().any(|q| expr.contains(q));
            missing.extend(lacking(&client, &prom, expr, zero_ok).await);
        }
        for (series, zero_ok) in &families {
            missing.extend(lacking(&client, &prom, series, *zero_ok).await);
        }
        if missing.is_empty() || started.elapsed() > Duration::from_secs(GIVE_UP_AFTER_S) {
            break missing;
        }
        assert!(
            fleetsim.0.try_wait().unwrap().is_none(),
            "the run ended before every query had data: {missing:#?}\n{}",
            std::fs::read_to_string(tmp.path().join("fleetsim.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(missing.is_empty(), "no data mid-run: {missing:#?}");
    // Mid-run: the 2-minute load is still going, arrivals still counted.
    assert!(
        fleetsim.0.try_wait().unwrap().is_none(),
        "the data must be there while the run goes"
    );
    let arrivals = query(&client, &prom, "fleetsim_arrivals_total")
        .await
        .unwrap();
    assert!(arrivals[0] > 0.0, "{arrivals:?}");
    // The live values agree with the run: its labels, its rate, its fleet.
    let info = query(
        &client,
        &prom,
        "fleetsim_run_info{model=\"open\",transport=\"inproc\"}",
    )
    .await
    .unwrap();
    assert_eq!(info, [1.0]);
    let target = query(&client, &prom, "fleetsim_target_arrivals_per_second")
        .await
        .unwrap();
    assert_eq!(target, [30.0]);
    // 2 sites x (2 locks, 2 keypads, 2 door sensors, 1 door phone).
    let devices = query(&client, &prom, "sum(fleetsim_devices)")
        .await
        .unwrap();
    assert_eq!(devices, [14.0]);
    let cores = query(&client, &prom, "fleetsim_harness_cores_available")
        .await
        .unwrap();
    assert_eq!(cores, [fleetsim::metrics::cost::cores_available() as f64]);
}
