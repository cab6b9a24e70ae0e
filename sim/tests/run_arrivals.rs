//! Every arrival accounted for, skipped work made visible, and merge
//! refusing sets that are not one whole run: the real binary, in-process
//! runs in virtual time (deterministic: no assertion depends on the
//! machine's speed; latencies are exact sums of the scenario's added
//! engine latency).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the binary; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `fleetsim run <file> --report-dir <dir>`.
fn run_into(file: &Path, dir: &Path) -> (i32, String, String) {
    run(&[
        "run",
        file.to_str().unwrap(),
        "--report-dir",
        dir.to_str().unwrap(),
    ])
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// One site, one door: a lock with a keypad, one door phone. Virtual time.
/// `extra` is appended (tables such as `[faults]`, `[thresholds]`).
fn scenario(dir: &Path, name: &str, phases: &str, actions: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
description = "arrival accounting"
seed = 5
transport = "inproc"
clock = "virtual"

[fleet]
sites = 1

[[fleet.devices]]
kind = "lock"
per_site = 1
with = ["keypad"]

[[fleet.devices]]
kind = "door_phone"
per_site = 1

[credentials]
pins_per_door = 6
cards_per_door = 2
qr_keys_per_door = 4

{phases}

[actions]
{actions}

{extra}
"#
    );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// Asserts `offered = served + skipped + dropped + queued_at_end`, in
/// total, per reason and per action; returns report.json's `arrivals`.
fn assert_accounted(r: &Value) -> Value {
    let a = r["arrivals"].clone();
    let n = |v: &Value| v.as_u64().unwrap();
    assert!(n(&a["offered"]) > 0, "{a}");
    assert_eq!(
        n(&a["offered"]),
        n(&a["served"]) + n(&a["skipped"]) + n(&a["dropped"]) + n(&a["queued_at_end"]),
        "{a}"
    );
    let by_reason: u64 = a["by_reason"].as_object().unwrap().values().map(n).sum();
    assert_eq!(by_reason, n(&a["skipped"]) + n(&a["dropped"]), "{a}");
    let mut asked = 0;
    for (action, c) in a["actions"].as_object().unwrap() {
        let dropped: u64 = c["dropped"].as_object().unwrap().values().map(n).sum();
        assert_eq!(
            n(&c["asked"]),
            n(&c["ran"]) + dropped + n(&c["queued_at_end"]),
            "{action}: {c}"
        );
        asked += n(&c["asked"]);
    }
    assert_eq!(asked, n(&a["offered"]));
    a
}

/// Credential checks answered, from the latency histograms' counts.
fn checks_answered(r: &Value) -> u64 {
    ["pin_check", "qr_check", "card_check", "ble_check"]
        .iter()
        .filter_map(|op| r["operations"][op]["count"].as_u64())
        .sum()
}

#[test]
fn a_saturated_run_queues_at_busy_devices_and_accounts_for_every_arrival() {
    let tmp = tempfile::tempdir().unwrap();
    // Three devices take the credentials (keypad, lock for cards, door
    // phone); each check takes 150 ms of engine time (within a reader's
    // 200 ms patience), so at 40/s lines form and overflow.
    let file = scenario(
        tmp.path(),
        "saturated",
        "[[phases]]\nduration = \"1m\"\narrivals = \"40/s\"",
        "pin_valid = 0.7\ncard = 0.3",
        "[faults]\nengine_added_latency = \"150ms\"\n\n[thresholds]\n\"decisions.false_accept\" = \"== 0\"",
    );
    let dir = tmp.path().join("out");
    let (code, out, err) = run_into(&file, &dir);
    // The default dropped-rate threshold fails the run.
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("FAIL arrivals.dropped_rate < 1% (default)"),
        "{out}"
    );
    assert!(out.contains("PASS decisions.false_accept"), "{out}");
    let r = json(&dir.join("report.json"));
    let a = assert_accounted(&r);
    assert!(a["by_reason"]["queue_full"].as_u64().unwrap() > 0, "{a}");
    assert!(a["dropped"].as_u64().unwrap() > 0, "{a}");
    assert!(a["dropped_rate"].as_f64().unwrap() > 0.01, "{a}");
    // Served arrivals are exactly the checks the histograms hold.
    assert_eq!(a["served"].as_u64().unwrap(), checks_answered(&r), "{a}");
    assert!(a["served_per_s"].as_f64().unwrap() < a["offered_per_s"].as_f64().unwrap());
    // Waiting in line is latency: a check takes exactly 150 ms (virtual
    // time), so anything past 1 s waited behind at least six others.
    let waited = r["arrivals_behind_schedule"].as_u64().unwrap();
    assert!(waited > 0, "nobody waited in line");
    let pin = &r["operations"]["pin_check"];
    assert!(
        pin["latency"]["min_us"].as_u64().unwrap() >= 150_000,
        "{pin}"
    );
    assert!(
        pin["latency"]["max_us"].as_u64().unwrap() >= 1_000_000,
        "{pin}"
    );
    // The reader's patience runs from when the person presents, not from
    // when they joined the line: waiting causes no errors.
    assert_eq!(pin["errors"], 0, "{pin}");
    let d = &r["decisions"]["counts"];
    assert_eq!(d["false_accepts"], 0, "{d}");
    assert_eq!(d["false_rejects"], 0, "{d}");
    // The summary shows offered against achieved, and the drops by reason.
    assert!(out.contains("arrivals: offered"), "{out}");
    assert!(out.contains("queue_full"), "{out}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"arrivals\""), "no arrivals section");
    assert!(html.contains("queue_full"));
}

#[test]
fn an_engine_slower_than_the_run_ends_the_run_with_every_arrival_accounted_for() {
    // Each check takes 30 s of engine time, far past the drain: the run
    // still ends (it used to fail with "load tasks still hold the run"),
    // and whatever was still being served is counted as queued at the end.
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario(
        tmp.path(),
        "slow-engine",
        "[[phases]]\nduration = \"10m\"\narrivals = \"12/m\"",
        "pin_valid = 1.0",
        "[faults]\nengine_added_latency = \"30s\"",
    );
    let dir = tmp.path().join("out");
    let (code, out, err) = run_into(&file, &dir);
    assert!(code == 0 || code == 1, "stdout:\n{out}\nstderr:\n{err}");
    let r = json(&dir.join("report.json"));
    let a = assert_accounted(&r);
    assert!(a["served"].as_u64().unwrap() > 0, "{a}");
}

#[test]
fn max_in_flight_drops_are_counted_with_their_reason_and_a_file_threshold_replaces_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario(
        tmp.path(),
        "limited",
        "[[phases]]\nduration = \"30s\"\narrivals = \"4/s\"\nmax_in_flight = 2",
        "pin_valid = 1",
        "[faults]\nengine_added_latency = \"1s\"\n\n[thresholds]\n\"arrivals.dropped_rate\" = \"<= 100%\"",
    );
    let dir = tmp.path().join("out");
    let (code, out, err) = run_into(&file, &dir);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("PASS arrivals.dropped_rate <= 100%"), "{out}");
    assert!(!out.contains("arrivals.dropped_rate < 1%"), "{out}");
    let r = json(&dir.join("report.json"));
    let a = assert_accounted(&r);
    let limited = a["by_reason"]["max_in_flight"].as_u64().unwrap();
    assert!(limited > 0, "{a}");
    assert_eq!(
        a["actions"]["pin_valid"]["dropped"]["max_in_flight"],
        limited
    );
    // At most two in flight: a line never holds more than one.
    assert!(a["by_reason"].get("queue_full").is_none(), "{a}");
    assert_eq!(a["served"].as_u64().unwrap(), checks_answered(&r));
    let t: Vec<&Value> = r["thresholds"].as_array().unwrap().iter().collect();
    assert!(t.iter().any(|t| t["metric"] == "arrivals.skipped_rate"));
}

#[test]
fn an_action_that_never_runs_is_warned_about_and_fails_the_skipped_rate() {
    let tmp = tempfile::tempdir().unwrap();
    // Visitor keys are valid for a day: none expires in a 2-minute run.
    let file = scenario(
        tmp.path(),
        "never-expires",
        "[[phases]]\nduration = \"2m\"\narrivals = \"2/s\"",
        "pin_valid = 0.9\nqr_expired = 0.1",
        "",
    );
    let f = file.to_str().unwrap();
    let (code, out, err) = run(&["validate", f]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // The warning points at the action's fraction, like an error would.
    let line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("qr_expired"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            "{f}:{line}:14: warning: actions.qr_expired: `qr_expired` can never run"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: set credentials.expired_qr_keys_per_door"),
        "{err}"
    );
    assert!(out.contains("1 warning"), "{out}");

    let (code, _, err) = run(&["validate", "--strict", f]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--strict makes warnings errors"), "{err}");

    let (code, out, _) = run(&["validate", "--json", f]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["warnings"][0]["kind"], "never_runs");
    assert_eq!(v[0]["warnings"][0]["path"], "actions.qr_expired");
    assert_eq!(v[0]["warnings"][0]["line"], line);
    let defaults: Vec<&str> = v[0]["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["default"] == true)
        .map(|t| t["metric"].as_str().unwrap())
        .collect();
    assert_eq!(defaults, ["arrivals.dropped_rate", "arrivals.skipped_rate"]);
    let (code, out, _) = run(&["validate", "--json", "--strict", f]);
    assert_eq!(code, 2);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["ok"], false);

    // The run does no qr_expired check and says so: exit 1.
    let dir = tmp.path().join("out");
    let (code, out, err) = run(&["run", f, "--report-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("warning: actions.qr_expired"), "{err}");
    assert!(
        out.contains("FAIL arrivals.skipped_rate < 1% (default)"),
        "{out}"
    );
    let r = json(&dir.join("report.json"));
    let a = assert_accounted(&r);
    let q = &a["actions"]["qr_expired"];
    assert!(q["asked"].as_u64().unwrap() > 0, "{q}");
    assert_eq!(q["ran"], 0, "{q}");
    assert_eq!(q["dropped"]["nothing_to_present"], q["asked"], "{q}");
    assert!(a["actions"]["pin_valid"]["ran"].as_u64().unwrap() > 0);
    assert!(r["operations"].get("qr_check").is_none());
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("arrivals.skipped_rate"), "{junit}");

    // Expired keys from the start give the action its work: no warning,
    // every qr_expired arrival presents a key.
    let fixed = scenario(
        tmp.path(),
        "expired-keys",
        "[[phases]]\nduration = \"2m\"\narrivals = \"2/s\"",
        "pin_valid = 0.9\nqr_expired = 0.1",
        "",
    );
    let text = std::fs::read_to_string(&fixed).unwrap().replace(
        "qr_keys_per_door = 4",
        "qr_keys_per_door = 4\nexpired_qr_keys_per_door = 2",
    );
    std::fs::write(&fixed, text).unwrap();
    let (code, _, err) = run(&["validate", "--strict", fixed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let dir = tmp.path().join("fixed");
    let (code, out, err) = run_into(&fixed, &dir);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let r = json(&dir.join("report.json"));
    let q = &r["arrivals"]["actions"]["qr_expired"];
    assert!(q["ran"].as_u64().unwrap() > 0, "{q}");
    assert_eq!(q["ran"], q["asked"], "{q}");
    assert_eq!(r["decisions"]["counts"]["false_accepts"], 0);
}

#[test]
fn every_shipped_scenario_validates_strictly() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| format!("scenarios/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    assert!(files.len() >= 7);
    let mut args = vec!["validate", "--strict"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// Runs `file` (virtual time) as shard `shard` ("" for the whole run) with
/// `seed` into `dir`; asserts it passed.
fn run_shard(file: &Path, shard: &str, seed: &str, dir: &Path) {
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--seed",
        seed,
        "--report-dir",
        dir.to_str().unwrap(),
    ];
    if !shard.is_empty() {
        args.extend(["--shard", shard]);
    }
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
}

#[test]
fn merge_refuses_sets_that_are_not_one_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = scenario(
        tmp.path(),
        "sharded",
        "[[phases]]\nduration = \"1m\"\narrivals = \"2/s\"",
        "pin_valid = 0.8\ncard = 0.2",
        "[thresholds]\n\"decisions.false_accept\" = \"== 0\"",
    );
    // Two sites, so each shard has one.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("sites = 1", "sites = 2");
    std::fs::write(&file, text).unwrap();
    let d = |n: &str| tmp.path().join(n);
    run_shard(&file, "0/2", "3", &d("s0"));
    run_shard(&file, "1/2", "3", &d("s1"));
    run_shard(&file, "", "3", &d("whole"));
    run_shard(&file, "1/2", "4", &d("s1-seed4"));
    let s = |n: &str| d(n).to_str().unwrap().to_string();
    let r0 = json(&d("s0").join("report.json"));
    let r1 = json(&d("s1").join("report.json"));
    assert_eq!(r0["shards"]["shard"]["index"], 0);
    assert_eq!(r0["shards"]["shard"]["count"], 2);
    assert!(!r0["run_id"].as_str().unwrap().is_empty());
    assert_eq!(r0["run_id"], r1["run_id"], "shards of one run share its id");
    let merge = |dirs: &[String], extra: &[&str], out: &str| {
        let mut args = vec!["merge".to_string()];
        args.extend(dirs.iter().cloned());
        args.extend(extra.iter().map(|x| x.to_string()));
        args.extend(["--report-dir".to_string(), s(out)]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    };

    // A lone shard.
    let (code, out, err) = merge(&[s("s0")], &[], "m1");
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("shard 1/2 missing"), "{err}");
    assert!(err.contains("--allow-partial"), "{err}");
    assert!(!d("m1").join("report.json").exists());
    // The same shard twice.
    let (code, _, err) = merge(&[s("s0"), s("s0"), s("s1")], &[], "m2");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shard 0/2 appears 2 times"), "{err}");
    // A shard with an unsharded run (which counts the whole run already).
    let (code, _, err) = merge(&[s("s0"), s("whole")], &[], "m3");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unsharded report"), "{err}");
    // Shards of different seeds.
    let (code, _, err) = merge(&[s("s0"), s("s1-seed4")], &[], "m4");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mixed seeds"), "{err}");
    assert!(err.contains("mixed run ids"), "{err}");
    // Mixed sets stay refused with --allow-partial: their numbers would be wrong.
    let (code, _, err) = merge(&[s("s0"), s("whole")], &["--allow-partial"], "m5");
    assert_eq!(code, 2, "{err}");

    // --allow-partial: merged, and marked partial everywhere.
    let (code, out, err) = merge(&[s("s0")], &["--allow-partial"], "partial");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("PARTIAL"), "{out}");
    assert!(out.contains("shard 1/2 missing"), "{out}");
    let p = json(&d("partial").join("report.json"));
    assert_eq!(p["partial"], "shard 1/2 missing");
    let html = std::fs::read_to_string(d("partial").join("report.html")).unwrap();
    assert!(html.contains("PARTIAL"));

    // The complete set merges, and its arrivals add up to the whole run's.
    let (code, out, err) = merge(&[s("s0"), s("s1")], &[], "full");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let m = json(&d("full").join("report.json"));
    assert!(m["partial"].is_null(), "{}", m["partial"]);
    let whole = json(&d("whole").join("report.json"));
    assert_accounted(&m);
    for k in ["offered", "served", "skipped", "dropped"] {
        assert_eq!(m["arrivals"][k], whole["arrivals"][k], "{k}");
    }
    assert_eq!(m["arrivals"]["actions"], whole["arrivals"]["actions"]);
}
