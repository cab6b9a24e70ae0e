//! `fleetsim run` and `fleetsim merge` end to end: the real binary, the
//! in-process transport in real and virtual time, and smoke over HTTP and
//! MQTT against the embedded reference server (and a real Mosquitto). No timing assertions:
//! latencies only feed thresholds the runs are built to pass or fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn virtual_mini() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run_support/virtual-mini.toml")
}

/// Runs the binary; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().current_dir(root()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// The numbers a replay must reproduce: counts per operation and outcome,
/// and the decision totals.
fn numbers(r: &Value) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for (name, op) in r["operations"].as_object().unwrap() {
        for k in ["count", "granted", "denied", "errors"] {
            v.push((format!("{name}.{k}"), op[k].as_u64().unwrap()));
        }
    }
    for (k, n) in r["decisions"]["counts"].as_object().unwrap() {
        v.push((format!("decisions.{k}"), n.as_u64().unwrap()));
    }
    v
}

#[test]
fn smoke_passes_end_to_end_with_no_false_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smoke");
    let (code, out, err) = run(&[
        "run",
        "scenarios/smoke.toml",
        "--report-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let r = report(&dir);
    let d = &r["decisions"]["counts"];
    assert_eq!(d["false_accepts"], 0);
    assert_eq!(d["false_rejects"], 0);
    assert!(d["true_grants"].as_u64().unwrap() > 50, "{d}");
    assert!(d["true_denials"].as_u64().unwrap() > 5, "{d}");
    assert!(r["operations"]["pin_check"]["count"].as_u64().unwrap() > 50);
    assert!(r["operations"]["qr_check"]["count"].as_u64().unwrap() > 5);
    assert_eq!(r["passed"], true);
    assert_eq!(r["transport"], "inproc");
    for f in ["report.html", "junit.xml", "oracle.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(out.contains("PASS decisions.false_accept"), "{out}");
}

#[test]
fn an_impossible_threshold_exits_1_and_junit_shows_the_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let smoke = std::fs::read_to_string(root().join("scenarios/smoke.toml")).unwrap();
    let changed = smoke.replace(
        r#""check.pin.p99" = "< 25ms""#,
        r#""check.pin.p99" = "< 0ms""#,
    );
    assert_ne!(smoke, changed, "smoke.toml no longer has the p99 threshold");
    let file = tmp.path().join("impossible.toml");
    std::fs::write(&file, changed).unwrap();
    let dir = tmp.path().join("out");
    let (code, out, err) = run(&[
        "run",
        file.to_str().unwrap(),
        "--duration",
        "3s",
        "--report-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("FAIL check.pin.p99 < 0ms"), "{out}");
    assert!(out.contains("replay with: fleetsim run"), "{out}");
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert!(junit.contains("check.pin.p99"), "{junit}");
    assert_eq!(report(&dir)["passed"], false);
}

#[test]
fn the_same_seed_in_virtual_time_gives_the_same_numbers_and_another_seed_others() {
    let tmp = tempfile::tempdir().unwrap();
    let file = virtual_mini();
    let mut got = Vec::new();
    for (name, seed) in [("a", "7"), ("b", "7"), ("c", "8")] {
        let dir = tmp.path().join(name);
        let (code, out, err) = run(&[
            "run",
            file.to_str().unwrap(),
            "--seed",
            seed,
            "--duration",
            "3m",
            "--report-dir",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
        let r = report(&dir);
        assert_eq!(r["clock"], "virtual");
        got.push(numbers(&r));
    }
    assert!(got[0].iter().any(|(_, n)| *n > 0));
    assert_eq!(got[0], got[1], "same seed, different numbers");
    assert_ne!(got[0], got[2], "another seed gave the same numbers");
}

#[test]
fn merged_shards_count_what_one_whole_run_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let file = virtual_mini();
    let f = file.to_str().unwrap();
    let whole = tmp.path().join("whole");
    let common = ["--duration", "2m", "--seed", "11"];
    let (code, out, _) = run(&[
        &["run", f, "--report-dir", whole.to_str().unwrap()][..],
        &common,
    ]
    .concat());
    assert_eq!(code, 0, "{out}");
    let mut dirs = Vec::new();
    for i in 0..2 {
        let d = tmp.path().join(format!("shard{i}"));
        let shard = format!("{i}/2");
        let (code, out, _) = run(&[
            &[
                "run",
                f,
                "--shard",
                &shard,
                "--report-dir",
                d.to_str().unwrap(),
            ][..],
            &common,
        ]
        .concat());
        assert_eq!(code, 0, "{out}");
        dirs.push(d);
    }
    let merged = tmp.path().join("merged");
    let (code, out, err) = run(&[
        "merge",
        dirs[0].to_str().unwrap(),
        dirs[1].to_str().unwrap(),
        "--scenario",
        f,
        "--report-dir",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let one = numbers(&report(&dirs[0]));
    let whole_n = numbers(&report(&whole));
    assert_ne!(one, whole_n, "a shard alone counted the whole run");
    assert_eq!(numbers(&report(&merged)), whole_n);
}

#[test]
fn merge_of_a_missing_directory_is_invalid_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["merge", tmp.path().join("nope").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.is_empty());
}

/// smoke.toml without its latency thresholds (CI machines are slow and
/// shared); the oracle's thresholds (no false accept, no false reject, no
/// error) stay.
fn smoke_without_latency(dir: &Path) -> PathBuf {
    let smoke = std::fs::read_to_string(root().join("scenarios/smoke.toml")).unwrap();
    let kept: Vec<&str> = smoke
        .lines()
        .filter(|l| !l.starts_with("\"check."))
        .collect();
    assert!(
        kept.len() < smoke.lines().count(),
        "smoke.toml has no latency threshold"
    );
    let file = dir.join("smoke-no-latency.toml");
    std::fs::write(&file, kept.join("\n")).unwrap();
    file
}

/// Runs the smoke copy on `transport` (plus `extra` flags) for 5 s and
/// checks the oracle's verdict in the report.
fn smoke_over(transport: &str, extra: &[&str]) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let file = smoke_without_latency(tmp.path());
    let dir = tmp.path().join("out");
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--transport",
        transport,
        "--duration",
        "5s",
        "--report-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let r = report(&dir);
    let d = &r["decisions"]["counts"];
    assert_eq!(d["false_accepts"], 0, "{d}");
    assert_eq!(d["false_rejects"], 0, "{d}");
    assert!(d["true_grants"].as_u64().unwrap() > 5, "{d}");
    assert!(d["true_denials"].as_u64().unwrap() > 0, "{d}");
    assert!(r["operations"]["pin_check"]["count"].as_u64().unwrap() > 5);
    assert_eq!(r["operations"]["pin_check"]["errors"], 0);
    assert_eq!(r["transport"], transport);
    assert_eq!(r["passed"], true);
    assert!(out.contains("PASS decisions.false_reject"), "{out}");
    r
}

#[test]
fn smoke_passes_over_http_against_the_embedded_reference_server() {
    let r = smoke_over("http", &[]);
    // Visitor keys issued during the run reach the server before use.
    assert!(r["operations"]["qr_check"]["granted"].as_u64().unwrap() > 0);
}

/// Event delivery and sync round trips were timed, and the engine side
/// logged every event the devices emitted.
fn assert_deliveries_timed(r: &Value) {
    let ops = &r["operations"];
    for op in ["event_delivery", "sync_round_trip"] {
        assert!(ops[op]["count"].as_u64().unwrap_or(0) > 0, "{op}: {ops}");
    }
    let h = &r["health"];
    assert!(h["events_emitted_total"].as_u64().unwrap() > 0, "{h}");
    assert_eq!(h["events_emitted"], h["events_logged"], "{h}");
    assert_eq!(h["events_lost"], 0, "{h}");
}

#[test]
fn inproc_runs_time_event_delivery_and_sync_round_trips() {
    let r = smoke_over("inproc", &[]);
    assert_deliveries_timed(&r);
}

#[test]
fn smoke_passes_over_mqtt_through_the_embedded_broker_and_gateway() {
    let r = smoke_over("mqtt", &[]);
    // Through the gateway's observer hook.
    assert_deliveries_timed(&r);
}

#[test]
fn a_broker_outage_makes_devices_reconnect_without_false_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run_support/broker-outage-mini.toml");
    let (code, out, err) = run(&[
        "run",
        file.to_str().unwrap(),
        "--report-dir",
        dir.to_str().unwrap(),
    ]);
    // Thresholds: mqtt.reconnects > 0, no false accept or reject, no
    // event logged twice.
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("PASS mqtt.reconnects"), "{out}");
    let r = report(&dir);
    let d = &r["decisions"]["counts"];
    assert_eq!(
        (d["false_accepts"].as_u64(), d["false_rejects"].as_u64()),
        (Some(0), Some(0))
    );
    // The outage cost checks (errors), not wrong answers.
    let errors: u64 = ["pin_check", "ble_check"]
        .iter()
        .filter_map(|op| r["operations"][op]["errors"].as_u64())
        .sum();
    assert!(errors > 0, "{}", r["operations"]);
    assert!(r["operations"]["event_delivery"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn smoke_passes_over_mqtt_through_mosquitto() {
    let which = std::process::Command::new("mosquitto")
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        which.is_ok(),
        "this test needs Mosquitto: apt-get install mosquitto (tests/run.sh does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = tmp.path().join("mosquitto.conf");
    // The setup scenarios/README.md documents for a test broker: loopback,
    // no password file (device secrets are issued per run), the fleet ACL.
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {}\n\
             use_username_as_clientid true\nmax_inflight_messages 1000\n\
             max_queued_messages 10000\npersistence false\nlog_dest stderr\n",
            root().join("docs/mosquitto/acl").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(tmp.path().join("mosquitto.log")).unwrap();
    let mut child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed().as_secs() < 10, "mosquitto did not listen");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let url = format!("mqtt://127.0.0.1:{port}");
    let result = std::panic::catch_unwind(|| smoke_over("mqtt", &["--broker", &url]));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        let log = std::fs::read_to_string(tmp.path().join("mosquitto.log")).unwrap_or_default();
        eprintln!("mosquitto log:\n{log}");
        std::panic::resume_unwind(e);
    }
}

#[test]
fn an_external_http_target_is_a_run_error_that_says_why() {
    let (code, _, err) = run(&[
        "run",
        "scenarios/smoke.toml",
        "--transport",
        "http",
        "--target",
        "http://127.0.0.1:9",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--target"), "{err}");
}
