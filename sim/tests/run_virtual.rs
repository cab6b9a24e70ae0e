//! Long virtual-time runs stay bounded and say what they cannot measure:
//! the time series has a bounded number of intervals (the interval grows
//! with the run), charts draw a bounded number of points, a progress line
//! goes to stderr, and latency thresholds are not judged on simulated
//! latencies unless the scenario asks. Counts only, never timings.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetsim::metrics::PLANNED_INTERVALS;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `fleetsim run FILE --report-dir DIR`; returns (exit code, stdout, stderr).
fn run(file: &Path, dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .current_dir(root())
        .args(["run", file.to_str().unwrap(), "--report-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// One site, two Wi-Fi doors, 30 days of PIN checks (one every 10 minutes)
/// in virtual time, with `extra` appended at the top level.
fn month(dir: &Path, thresholds: &str, top: &str) -> PathBuf {
    let file = dir.join("month.toml");
    std::fs::write(
        &file,
        format!(
            r#"
name = "month"
seed = 3
clock = "virtual"
{top}

[fleet]
sites = 1

[[fleet.devices]]
kind = "lock"
per_site = 2
with = ["keypad", "door_sensor"]

[credentials]
pins_per_door = 2

[[phases]]
name = "month"
duration = "30d"
arrivals = "6/h"

[actions]
pin_valid = 1.0

[thresholds]
"decisions.false_reject" = "== 0"
{thresholds}
"#
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_month_in_virtual_time_keeps_a_bounded_time_series_and_says_how() {
    let tmp = tempfile::tempdir().unwrap();
    let file = month(tmp.path(), "", "");
    let dir = tmp.path().join("out");
    let (code, out, err) = run(&file, &dir);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let r = json(&dir.join("report.json"));
    // 30 days: one-hour intervals, 720 of them at most.
    assert_eq!(r["interval_s"], 3600.0);
    let points = r["timeseries"].as_array().unwrap().len() as u64;
    assert!(points > 600 && points <= PLANNED_INTERVALS, "{points}");
    let encoded = r["histograms"]["intervals"].as_array().unwrap().len() as u64;
    // pin checks, event deliveries and the first code syncs.
    assert!(encoded <= 3 * PLANNED_INTERVALS, "{encoded}");
    assert!(r["operations"]["pin_check"]["count"].as_u64().unwrap() > 4_000);
    assert!(out.contains("intervals of 3600 s"), "{out}");
    let size = std::fs::metadata(dir.join("report.json")).unwrap().len();
    assert!(size < 5 * 1024 * 1024, "report.json is {size} bytes");
    // Every chart line draws at most 300 points.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("intervals of 3600 s"));
    for line in html.split("<polyline points=\"").skip(1) {
        let pts = line.split('"').next().unwrap().split(' ').count();
        assert!(pts <= 300, "a chart line with {pts} points");
    }
    // The HDR logs have one entry per interval.
    let log = std::fs::read_to_string(dir.join("hdr/pin_check.hlog")).unwrap();
    let entries = log
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('"'))
        .count();
    assert!(entries as u64 <= PLANNED_INTERVALS, "{entries}");
    // The progress line: simulated time done of the total.
    assert!(
        err.contains("[30d of 30d simulated (100%)"),
        "no final progress line on stderr:\n{err}"
    );
}

#[test]
fn simulated_latency_thresholds_are_not_judged_unless_the_scenario_asks() {
    let tmp = tempfile::tempdir().unwrap();
    // An impossible latency threshold: judged, it fails.
    let impossible = r#""check.pin.p99" = "< 0ms""#;
    let file = month(tmp.path(), impossible, "");
    let dir = tmp.path().join("skipped");
    let (code, out, err) = run(&file, &dir);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("NOT JUDGED (simulated) check.pin.p99"),
        "{out}"
    );
    assert!(out.contains("PASS decisions.false_reject"), "{out}");
    assert!(out.contains("latencies are simulated"), "{out}");
    let r = json(&dir.join("report.json"));
    assert_eq!(r["latency_simulated"], true);
    let t = &r["thresholds"][1];
    assert_eq!(t["metric"], "check.pin.p99");
    assert_eq!(t["passed"], false, "a threshold not judged is no pass");
    assert_eq!(t["not_judged"], "simulated");
    assert_eq!(r["passed"], true);
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("skipped=\"1\""), "{junit}");
    assert!(junit.contains("failures=\"0\""), "{junit}");
    assert!(
        junit.contains("<skipped message=\"not judged: simulated\"/>"),
        "{junit}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("not judged: simulated"));
    assert!(html.contains("id=\"latency-simulated\""));

    // Asked for: judged, and it fails.
    let file = month(tmp.path(), impossible, "judge_simulated_latency = true");
    let dir = tmp.path().join("judged");
    let (code, out, _) = run(&file, &dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL check.pin.p99"), "{out}");
    let r = json(&dir.join("report.json"));
    assert!(r["thresholds"][1].get("not_judged").is_none());
}

#[test]
fn judge_simulated_latency_on_the_real_clock_is_invalid_input() {
    let tmp = tempfile::tempdir().unwrap();
    let file = month(tmp.path(), "", "judge_simulated_latency = true");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("clock = \"virtual\"", "clock = \"real\"");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("judge_simulated_latency applies to the virtual clock only"),
        "{err}"
    );
}
