//! The reference server's real `/metrics` scrape: it passes
//! `promtool check metrics`, and it exports every family the dashboards are
//! allowed to query (dashboards/reference-server-metrics.txt), with the
//! declared type.

use std::io::Write;
use std::process::{Command, Stdio};

async fn scrape() -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = reference_server::server::Config {
        data_dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".parse().unwrap(),
        http_workers: 1,
        ..Default::default()
    };
    let server = reference_server::server::run(config, std::future::pending())
        .await
        .unwrap();
    // The MQTT gateway (with its embedded broker) registers its families in
    // the same registry, as the binary does.
    let listen = "127.0.0.1:0".parse().unwrap();
    let mqtt = reference_server::gateway::serve(
        server.service.clone(),
        reference_server::gateway::BrokerChoice::Embedded { listen },
        |_| {},
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    // Some traffic first, so the labelled families have samples.
    let health = client
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    let body = client
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    drop(mqtt);
    server.stop().await;
    body
}

fn declared() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/reference-server-metrics.txt"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let family = parts.next().unwrap();
            let name = family.split('{').next().unwrap().to_string();
            (name, parts.next().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_exports_what_the_dashboards_query_and_promtool_accepts_it() {
    let body = scrape().await;
    for (name, kind) in declared() {
        let type_line = format!("# TYPE {name} {kind}");
        assert!(
            body.contains(&type_line),
            "missing `{type_line}` in the scrape:\n{body}"
        );
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) is installed by tests/run.sh");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
