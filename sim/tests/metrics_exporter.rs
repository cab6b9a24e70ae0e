//! The real `/metrics` exporter over real HTTP, checked by Prometheus' own
//! `promtool check metrics` (apt package `prometheus`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use fleetsim::metrics::{DeviceKind, FleetMetrics, MetricsExporter, Transport, CONTENT_TYPE};

fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus; tests/run.sh does it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_real_scrape_passes_promtool_check_metrics() {
    let metrics = Arc::new(FleetMetrics::new());
    metrics.set_run_info("open", Transport::Mqtt);
    metrics.set_devices(DeviceKind::Lock, 500, 487);
    metrics.arrivals.inc_by(20_000);
    metrics.target_arrivals_per_second.set(2_000.0);
    let mut rec = recorder().with_prometheus(metrics.clone(), Transport::Mqtt);
    let samples = samples(5, 20_000, 10);
    feed(&mut rec, &samples);
    rec.arrival_behind_schedule();

    let exporter = MetricsExporter::start("127.0.0.1:0".parse().unwrap(), metrics.clone())
        .await
        .unwrap();
    let base = format!("http://{}", exporter.local_addr());
    let client = reqwest::Client::new();
    let resp = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], CONTENT_TYPE);
    let body = resp.text().await.unwrap();

    assert!(body.contains("# TYPE fleetsim_check_latency_seconds histogram"));
    assert!(body.contains(r#"fleetsim_devices_online{device_kind="lock"} 487"#));
    assert!(body.contains("fleetsim_arrivals_behind_schedule_total 1"));
    let granted_pin = samples
        .iter()
        .filter(|s| {
            s.op == fleetsim::metrics::Operation::PinCheck
                && s.outcome == fleetsim::metrics::Outcome::Granted
        })
        .count();
    assert!(body.contains(&format!(
        r#"fleetsim_checks_total{{operation="pin_check",outcome="granted",transport="mqtt"}} {granted_pin}"#
    )));
    assert!(!body.contains("lock-0"), "no device id in any label");

    let (ok, out) = promtool_check(&body);
    assert!(ok, "promtool check metrics failed:\n{out}");

    // The check has teeth: a counter without `_total` is reported.
    let (ok, out) =
        promtool_check("# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n");
    assert!(!ok, "promtool accepted a bad exposition: {out}");

    // Other paths and methods get clear answers.
    let r = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client.post(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // Scrapes see live values.
    metrics.set_devices(DeviceKind::Lock, 500, 12);
    let body = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains(r#"fleetsim_devices_online{device_kind="lock"} 12"#));

    let addr = exporter.local_addr();
    exporter.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "closed after shutdown"
    );
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_and_the_server_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let metrics = Arc::new(FleetMetrics::new());
    let exporter = MetricsExporter::start("127.0.0.1:0".parse().unwrap(), metrics)
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(exporter.local_addr())
        .await
        .unwrap();
    let junk = format!(
        "GET /metrics HTTP/1.1\r\nX-Junk: {}\r\n",
        "a".repeat(20_000)
    );
    // The server may close before reading everything; only its answer matters.
    let _ = s.write_all(junk.as_bytes()).await;
    let _ = s.shutdown().await;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.60}");
    let ok = reqwest::get(format!("http://{}/metrics", exporter.local_addr()))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    exporter.shutdown().await;
}

#[tokio::test]
async fn binding_a_taken_port_is_a_typed_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = MetricsExporter::start(addr, Arc::new(FleetMetrics::new()))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_clients_that_never_send() {
    let exporter = MetricsExporter::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(FleetMetrics::new()),
    )
    .await
    .unwrap();
    // More idle connections than the exporter serves at once.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(
            tokio::net::TcpStream::connect(exporter.local_addr())
                .await
                .unwrap(),
        );
    }
    tokio::task::yield_now().await;
    // A generous bound that turns a hang into a failure; it asserts no speed.
    tokio::time::timeout(std::time::Duration::from_secs(60), exporter.shutdown())
        .await
        .expect("shutdown returns while idle clients hold connections");
    drop(idle);
}
