//! `kill -9` under a write load: every write the API acknowledged is there
//! after a restart (the real binary, a real SIGKILL).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

async fn spawn(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--http-workers",
            "2",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(url) = line.strip_prefix("listening on ") {
            return (child, url.trim().to_string());
        }
    }
    panic!("the server never said where it listens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn(dir.path()).await;
    let api = Api::new(url);
    let w = world(&api).await;
    let t = w.owner.clone();
    let guest = holder(&api, &t, "Load", "member").await;
    // A use-limited code checked in a loop: its grants are writes too.
    let courier = holder(&api, &t, "Courier", "courier").await;
    let (limited, pin) = pin_code(&api, &t, courier, json!([w.door_a]), json!({"type": "delivery", "start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "max_uses": 1000000})).await;

    let issued: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let grants = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..6 {
        let api = api.clone();
        let t = t.clone();
        let issued = issued.clone();
        let door = w.door_a;
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("load-{task}-{n}");
                let body = json!({"holder": guest, "name": name, "secret": {"kind": "pin", "pin": {"type": "generate", "value": {"digits": 6}}}, "schedule": {"type": "permanent"}, "doors": [door]});
                let Ok(resp) = api.client.post(format!("{}/v1/credentials", api.url)).bearer_auth(&t).json(&body).send().await else { break };
                if resp.status().as_u16() != 201 {
                    break;
                }
                let Ok(v) = resp.json::<serde_json::Value>().await else { break };
                issued.lock().push((v["credential"].as_u64().unwrap(), name));
            }
        }));
    }
    for _ in 0..2 {
        let api = api.clone();
        let grants = grants.clone();
        let (device, secret, pin) = (w.phone_a, w.phone_a_secret.clone(), pin.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let body = json!({"id": 1, "credential": {"type": "pin", "value": pin}});
                let Ok(resp) = api
                    .client
                    .post(format!("{}/v1/devices/{device}/validate", api.url))
                    .bearer_auth(&secret)
                    .json(&body)
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(v) = resp.json::<serde_json::Value>().await else {
                    break;
                };
                if v["decision"] == "granted" {
                    grants.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    // Kill once a fair number of writes were acknowledged (not after a fixed time).
    while issued.lock().len() < 300 || grants.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await.expect("SIGKILL");
    for t in tasks {
        let _ = t.await;
    }
    let acked = issued.lock().clone();
    let granted = grants.load(std::sync::atomic::Ordering::SeqCst);

    let (mut child, url) = spawn(dir.path()).await;
    let api = Api::new(url);
    // Every page of the phone's codes (the list is paged).
    let mut names = std::collections::HashMap::<u64, String>::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/devices/{}/codes?limit=500&page_cursor={c}", w.phone_a),
            None => format!("/v1/devices/{}/codes?limit=500", w.phone_a),
        };
        let page = api.ok("GET", &path, &t, None).await;
        for c in page["data"].as_array().unwrap() {
            names.insert(
                c["id"].as_u64().unwrap(),
                c["name"].as_str().unwrap().to_string(),
            );
        }
        match page["pagination"]["next_page_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|(id, name)| names.get(id) != Some(name))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged codes lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let c = api
        .ok("GET", &format!("/v1/credentials/{limited}"), &t, None)
        .await;
    assert!(
        c["uses"].as_u64().unwrap() >= granted,
        "uses {} < {granted} acknowledged grants",
        c["uses"]
    );
    // And it keeps working.
    api.ok(
        "POST",
        "/v1/organizations/0/holders",
        &t,
        Some(json!({"name": "After", "kind": "guest"})),
    )
    .await;
    child.kill().await.unwrap();
}
