//! `fleetsim capacity` end to end on a system whose capacity is known by
//! construction (`capacity_support/known-capacity.toml`: one keypad, a
//! check takes 20-21 ms, one arrival in flight, so the share dropped at
//! rate r is r*d/(1+r*d) and stays below the 20% threshold up to
//! 0.25/d = 11.9 to 12.5/s). In-process and virtual time: every step is
//! deterministic, and the whole search takes seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

fn known() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/capacity_support/known-capacity.toml")
}

/// Runs the binary; returns (exit code, stdout, stderr).
fn fleetsim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `fleetsim capacity` on the known system with `flags`; returns the exit
/// code, stdout and capacity.json.
fn capacity(dir: &Path, flags: &[&str]) -> (i32, String, Value) {
    let file = known();
    let mut args = vec![
        "capacity",
        file.to_str().unwrap(),
        "--report-dir",
        dir.to_str().unwrap(),
        "--step-duration",
        "2m",
        "--warmup",
        "5s",
    ];
    args.extend(flags);
    let (code, out, err) = fleetsim(&args);
    let json = std::fs::read(dir.join("capacity.json"))
        .unwrap_or_else(|e| panic!("no capacity.json ({e}); stdout:\n{out}\nstderr:\n{err}"));
    (code, out, serde_json::from_slice(&json).unwrap())
}

/// The share of arrivals a one-server loss system drops at `rate` with
/// a service time of `d` seconds (Erlang B with one server).
fn erlang_b1(rate: f64, d: f64) -> f64 {
    rate * d / (1.0 + rate * d)
}

#[test]
fn the_search_finds_the_known_capacity_with_a_band() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, c) = capacity(
        dir.path(),
        &[
            "--start-rate",
            "2/s",
            "--max-rate",
            "100/s",
            "--repeats",
            "2",
            "--precision",
            "5%",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(c["schema_version"], 1);
    assert_eq!(c["verdict"], "found");
    let lo = c["max_passing_per_s"].as_f64().unwrap();
    let hi = c["first_failing_per_s"].as_f64().unwrap();
    // The capacity is 11.9 to 12.5/s; a 2-minute step sees about 1,400
    // arrivals, whose drop share is off by a few percent (one sigma about
    // 1.1 points of the 20%), so the boundary lands within 10% of it.
    assert!(
        (11.9 * 0.9..=12.5 * 1.1).contains(&lo),
        "highest pass {lo}/s"
    );
    assert!(hi > lo && hi - lo <= 0.05 * lo + 1e-9, "{lo} .. {hi}");
    assert_eq!(c["breaking_metric"]["metric"], "arrivals.dropped_rate");
    assert_eq!(
        c["breaking_metric"]["threshold"],
        "arrivals.dropped_rate < 20%"
    );
    assert!(c["breaking_metric"]["measured"].as_f64().unwrap() >= 0.2);

    let steps = c["steps"].as_array().unwrap();
    let ramp: Vec<f64> = steps
        .iter()
        .filter(|s| s["stage"] == "ramp")
        .map(|s| s["rate_per_s"].as_f64().unwrap())
        .collect();
    assert_eq!(ramp, [2.0, 4.0, 8.0, 16.0]);
    for s in steps {
        let rate = s["rate_per_s"].as_f64().unwrap();
        let offered = s["offered_per_s"].as_f64().unwrap();
        let dropped = s["measured"]["arrivals.dropped_rate"].as_f64().unwrap();
        // Each step measured the system it was built to be: the drop share
        // follows Erlang B at the offered rate (d = 20.5 ms: the added
        // 20 ms and the timer's rounding), and the warm-up's arrivals are
        // not in it (the offered rate is the step's, not inflated).
        let want = erlang_b1(offered, 0.0205);
        assert!(
            (dropped - want).abs() < 0.05,
            "step at {rate}/s offered {offered}/s dropped {dropped}, Erlang B {want}"
        );
        assert!((offered - rate).abs() < 0.15 * rate, "{s}");
        assert_eq!(s["passed"].as_bool().unwrap(), dropped < 0.2, "{s}");
        assert!(!s["harness_bound"].as_bool().unwrap(), "virtual time: {s}");
        let report = Path::new(s["report_dir"].as_str().unwrap()).join("report.json");
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(r["arrivals"]["dropped_rate"].as_f64().unwrap(), dropped);
    }

    let bands = c["bands"].as_array().unwrap();
    assert_eq!(bands.len(), 2);
    for (b, rate) in bands.iter().zip([lo, hi]) {
        assert_eq!(b["rate_per_s"].as_f64().unwrap(), rate);
        assert_eq!(b["runs"], 3, "the search's step and 2 repeats");
        assert_eq!(b["metric"], "arrivals.dropped_rate");
        let (min, max) = (
            b["measured_min"].as_f64().unwrap(),
            b["measured_max"].as_f64().unwrap(),
        );
        assert!(min <= max && min > 0.1 && max < 0.3, "{b}");
    }
    let seeds: Vec<u64> = steps
        .iter()
        .filter(|s| s["stage"] == "repeat")
        .map(|s| s["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [12, 13, 12, 13], "repeats use the seed plus 1, 2");
    assert!(c["stable"].is_boolean());

    assert!(out.contains("capacity: "), "{out}");
    assert!(out.contains("fails: arrivals.dropped_rate < 20%"), "{out}");
    let html = std::fs::read_to_string(dir.path().join("capacity.html")).unwrap();
    for id in [
        "chart-capacity-rate",
        "chart-capacity-p99",
        "capacity-steps",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
    }
}

#[test]
fn a_passing_maximum_reports_at_least_and_a_failing_start_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, c) = capacity(
        dir.path(),
        &["--start-rate", "2/s", "--max-rate", "6/s", "--repeats", "0"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(c["verdict"], "at_max");
    assert_eq!(c["max_passing_per_s"], 6.0);
    assert!(c["first_failing_per_s"].is_null());
    assert!(c["bands"].as_array().unwrap().is_empty() && c["stable"].is_null());
    assert!(out.contains("capacity: at least 6/s"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let (code, out, c) = capacity(
        dir.path(),
        &[
            "--start-rate",
            "40/s",
            "--max-rate",
            "100/s",
            "--repeats",
            "1",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(c["verdict"], "none_passed");
    assert!(c["max_passing_per_s"].is_null());
    assert_eq!(c["first_failing_per_s"], 40.0);
    assert_eq!(c["breaking_metric"]["metric"], "arrivals.dropped_rate");
    assert!(
        out.contains("no rate passed; the start rate 40/s fails: arrivals.dropped_rate < 20%"),
        "{out}"
    );
}

#[test]
fn bad_flags_and_unsearchable_scenarios_exit_2_before_any_step() {
    let dir = tempfile::tempdir().unwrap();
    let file = known();
    let f = file.to_str().unwrap();
    let report = dir.path().join("r");
    let r = report.to_str().unwrap();
    let closed = dir.path().join("closed.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &closed,
        text.replace(
            "arrivals = \"10/s\"\nmax_in_flight = 1",
            "people = 3\nthink_time = \"1s\"",
        ),
    )
    .unwrap();
    let latency = dir.path().join("latency.toml");
    std::fs::write(
        &latency,
        text.replace(
            "[thresholds]",
            "[thresholds]\n\"check.pin.p99\" = \"< 50ms\"",
        ),
    )
    .unwrap();
    for (args, says) in [
        (
            vec!["--start-rate", "50/s", "--max-rate", "10/s"],
            "is above --max-rate",
        ),
        (vec!["--start-rate", "0/s"], "above 0/s"),
        (vec!["--start-rate", "fast"], "is not a rate"),
        (vec!["--precision", "0%"], "above 0%"),
        (vec!["--precision", "often"], "neither a percentage"),
        (vec!["--step-duration", "0s"], "longer than 0s"),
        (vec!["--repeats", "21"], "at most 20"),
        (
            vec!["--start-rate", "1/s", "--step-duration", "30s"],
            "too few to judge",
        ),
        (vec!["--transport", "http"], "virtual"),
    ] {
        let mut all = vec!["capacity", f, "--report-dir", r];
        all.extend(&args);
        let (code, out, err) = fleetsim(&all);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!report.exists(), "{args:?}: nothing ran");
    }
    for (file, says) in [
        (&closed, "no open-model phase"),
        (&latency, "judge_simulated_latency"),
    ] {
        let (code, out, err) = fleetsim(&["capacity", file.to_str().unwrap(), "--report-dir", r]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains(says), "{err}");
        assert!(!report.exists());
    }
}

#[test]
fn a_steps_warmup_is_left_out_of_its_verdict() {
    use fleetsim::run::capacity::{step_scenario, CapacityPlan, Precision};
    use fleetsim::run::{execute, RunOptions, Shard};
    let s = fleetsim::scenario::load(&known()).unwrap();
    let plan = CapacityPlan {
        start_per_s: 1.0,
        max_per_s: 10.0,
        step: Duration::from_secs(20),
        warmup: Duration::from_secs(200),
        repeats: 0,
        precision: Precision::Percent(5.0),
        precision_text: "5%".into(),
    };
    // 5/s: 1,000 arrivals in the warm-up, about 100 in the window.
    let step = step_scenario(&s, &plan, 5.0);
    assert_eq!(step.phases.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        seed: 3,
        transport: step.transport,
        broker: None,
        target: None,
        report_dir: dir.path().to_path_buf(),
        metrics_addr: None,
        shard: Shard::WHOLE,
        run_id: "warmup".into(),
        reproduce: "test".into(),
        fleet: None,
        warmup: plan.warmup,
    };
    let out = execute(&step, &opts).unwrap();
    let a = &out.report.arrivals;
    assert!((50..=160).contains(&a.offered), "offered {}", a.offered);
    assert_eq!(a.load_s, 20.0);
    assert!(a.unaccounted().is_empty(), "{:?}", a.unaccounted());
    let checks = out.report.checks.as_ref().unwrap().count;
    assert!(
        checks <= a.served + 1 && checks > 0,
        "checks judged {checks}, served {}",
        a.served
    );
    // The whole step's decisions stay counted (correctness is never
    // warmed up).
    assert!(out.report.decisions.counts.true_grants > 500);
}

#[test]
fn a_threshold_a_step_cannot_measure_fails_it_loudly() {
    // No QR check is ever made here, so `check.qr.errors` is never
    // produced: every step must fail on it, never pass around it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unmeasured.toml");
    let text = std::fs::read_to_string(known()).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "[thresholds]",
            "[thresholds]\n\"check.qr.errors\" = \"== 0\"",
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("r");
    let (code, out, err) = fleetsim(&[
        "capacity",
        file.to_str().unwrap(),
        "--report-dir",
        out_dir.to_str().unwrap(),
        "--start-rate",
        "2/s",
        "--step-duration",
        "1m",
        "--repeats",
        "0",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let c: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("capacity.json")).unwrap()).unwrap();
    assert_eq!(c["verdict"], "none_passed");
    assert_eq!(c["breaking_metric"]["metric"], "check.qr.errors");
    assert!(c["breaking_metric"]["measured"].is_null());
    assert!(
        out.contains("check.qr.errors == 0 (measured not measured)")
            || out.contains("not measured"),
        "{out}"
    );
}
