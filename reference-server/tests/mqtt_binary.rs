//! The real `reference-server` binary and its embedded broker: a taken MQTT
//! port stops it at once, and SIGTERM after an overload loses no activity
//! entry (each one the server accepted is in the store, or counted and
//! reported as lost).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Generous: only a guard against a hang.
const EXIT_WAIT: Duration = Duration::from_secs(90);

fn server(dir: &Path, mqtt_listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reference-server"));
    cmd.args([
        "--data-dir",
        dir.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--http-workers",
        "2",
        "--mqtt-listen",
        mqtt_listen,
    ])
    .args(extra)
    .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_mqtt_port_stops_the_server_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(EXIT_WAIT, server(dir.path(), &addr, &[]).output())
        .await
        .expect("the server exits by itself")
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit {:?}", out.status);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "the error names the address: {stderr}"
    );
    assert!(
        !stdout.contains("listening on"),
        "it must not say it listens: {stdout}"
    );
    drop(taken);
}

/// Starts the server; its HTTP URL and MQTT port.
async fn spawn(dir: &Path, extra: &[&str]) -> (Child, String, u16) {
    let mut child = server(dir, "127.0.0.1:0", extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut port) = (None, None);
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(u) = line.strip_prefix("listening on ") {
            url = Some(u.trim().to_string());
        }
        if let Some(u) = line.strip_prefix("devices connect to ") {
            port = u.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        }
        if let (Some(url), Some(port)) = (&url, port) {
            return (child, url.clone(), port);
        }
    }
    panic!("the server never said where it listens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_a_flood_loses_no_activity_entry() {
    let dir = tempfile::tempdir().unwrap();
    // Limits far above the flood, so the checks pile up in the store's
    // queue: the overload the shutdown must not lose.
    let (mut child, url, port) = spawn(
        dir.path(),
        &[
            "--device-rate-per-s",
            "10000000",
            "--device-burst",
            "10000000",
            "--device-in-flight",
            "100000",
        ],
    )
    .await;
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let api = Api::new(url);
    let w = world(&api).await;
    let guest = holder(&api, &w.owner, "Guest", "member").await;
    let (_, pin) = pin_code(
        &api,
        &w.owner,
        guest,
        json!([w.door_a]),
        json!({"type": "permanent"}),
    )
    .await;

    // The door phone floods its own auth/req with checks and counts the
    // answers it gets: each answer's activity entry was queued first.
    let user = format!("dev-{}", w.phone_a);
    let base = format!("fleet/site-{}/{user}", w.site);
    let mut opts = MqttOptions::new(user.clone(), "127.0.0.1", port);
    opts.set_credentials(user.clone(), w.phone_a_secret.clone())
        .set_request_channel_capacity(10_000)
        .set_inflight(1_000);
    let (client, mut el) = AsyncClient::new(opts, 10_000);
    client
        .subscribe(format!("{base}/auth/resp"), QoS::AtMostOnce)
        .await
        .unwrap();
    let answers = Arc::new(AtomicU64::new(0));
    let counted = answers.clone();
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let ready = subscribed.clone();
    let poll = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => ready.notify_one(),
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(EXIT_WAIT, subscribed.notified())
        .await
        .expect("subscribed");
    let topic = format!("{base}/auth/req");
    let body = format!(r#"{{"id":1,"credential":{{"type":"pin","value":"{pin}"}}}}"#);
    let flood_until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut sent = 0u64;
    let pid = child.id().expect("running") as i32;
    let mut signalled = false;
    while tokio::time::Instant::now() < flood_until {
        match client.try_publish(&topic, QoS::AtMostOnce, false, body.clone()) {
            Ok(()) => sent += 1,
            Err(_) => tokio::task::yield_now().await,
        }
        // SIGTERM in the middle of the flood.
        if !signalled && flood_until - tokio::time::Instant::now() < Duration::from_secs(1) {
            // SAFETY: kill(2) on the child we started.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
            signalled = true;
        }
    }
    let status = tokio::time::timeout(EXIT_WAIT, child.wait())
        .await
        .expect("the server stops after SIGTERM")
        .unwrap();
    poll.abort();
    let stderr = stderr_text.await.unwrap();
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    let answered = answers.load(Ordering::Relaxed);
    assert!(answered > 0, "no check was answered ({sent} sent)");

    // Every answered check's entry is in the store, or counted as lost and
    // said so once (not once per entry).
    let lost: u64 = stderr
        .lines()
        .find_map(|l| {
            l.split("activity entries lost: ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    assert!(
        stderr.matches("lost").count() <= 1,
        "losses are reported once:\n{stderr}"
    );
    let db = rusqlite::Connection::open(dir.path().join("reference-server.db")).unwrap();
    let stored: u64 = db
        .query_row(
            "SELECT COUNT(*) FROM activity WHERE device = ?1 AND kind IN ('access_granted', 'access_denied')",
            [w.phone_a],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored + lost >= answered,
        "{answered} checks answered, {stored} entries stored, {lost} reported lost"
    );
}
