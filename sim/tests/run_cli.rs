//! `fleetsim run` and `fleetsim merge` end to end: the real binary, the
//! in-process transport, real and virtual clocks. No timing assertions:
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

#[test]
fn transports_that_are_not_wired_yet_are_a_run_error() {
    let (code, _, err) = run(&[
        "run",
        "scenarios/smoke.toml",
        "--transport",
        "http",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("http transport is not available"), "{err}");
}
