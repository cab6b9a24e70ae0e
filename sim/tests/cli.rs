//! The `fleetsim` binary: exit codes and output of validate, list, schema
//! and run (which stops at the run engine seam with exit code 3).

use std::path::PathBuf;
use std::process::{Command, Output};

fn fleetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(args)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run fleetsim")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_good_files_exits_0() {
    let out = fleetsim(&[
        "validate",
        "scenarios/smoke.toml",
        "scenarios/brute-force.toml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ok: scenarios/smoke.toml (smoke)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok: scenarios/brute-force.toml (brute-force)"),
        "{stdout}"
    );
}

#[test]
fn validate_bad_file_exits_2_with_every_problem_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"b\"\n[fleet]\n[[fleet.devices]]\nkind = \"lock\"\nper_site = 1\nmodle = \"ble\"\n\
         [[phases]]\nduration = \"1m\"\narrivals = \"fast\"\n",
    )
    .unwrap();
    let good = "scenarios/smoke.toml";
    let out = fleetsim(&["validate", good, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let file = bad.display();
    assert!(
        stderr.contains(&format!(
            "{file}:6:1: fleet.devices[0].modle: unknown field `modle`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint: did you mean `model`?"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:9:12: phases[0].arrivals: `fast` is not a rate"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("2 problems found"), "{stderr}");
    // The good file is still reported as fine.
    assert!(text(&out.stdout).contains("ok: scenarios/smoke.toml"));
}

#[test]
fn validate_json_reports_problems_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"b\"\ncolour = 1\n").unwrap();
    let out = fleetsim(&[
        "validate",
        "--json",
        "scenarios/smoke.toml",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["name"], "smoke");
    assert_eq!(v[1]["ok"], false);
    let problems = v[1]["problems"].as_array().unwrap();
    let unknown = problems
        .iter()
        .find(|p| p["kind"] == "unknown_field")
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(
        (unknown["line"].as_u64(), unknown["col"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(unknown["path"], "colour");
    assert!(problems.iter().any(|p| p["kind"] == "missing_field"));
}

#[test]
fn validate_missing_file_exits_2() {
    let out = fleetsim(&["validate", "scenarios/no-such-file.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read scenario file scenarios/no-such-file.toml"));
}

#[test]
fn unreadable_or_oversized_files_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(2 * 1024 * 1024)).unwrap();
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    for (f, msg) in [
        (big.as_path(), "larger than 1048576 bytes"),
        (binary.as_path(), "cannot read scenario file"),
        (dir.path(), "cannot read scenario file"),
    ] {
        let out = fleetsim(&["validate", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", f.display());
        assert!(text(&out.stderr).contains(msg), "{}", text(&out.stderr));
    }
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["frobnicate"][..],
        &[],
        &["validate"],
        &["run"],
        &["run", "scenarios/smoke.toml", "--no-such-flag"],
        &["run", "scenarios/smoke.toml", "--shard", "3/2"],
        &["run", "scenarios/smoke.toml", "--shard", "1/0"],
        &["run", "scenarios/smoke.toml", "--shard", "half"],
        &["run", "scenarios/smoke.toml", "--seed", "-1"],
        &["run", "scenarios/smoke.toml", "--duration", "soon"],
        &["run", "scenarios/smoke.toml", "--duration", "0s"],
        &[
            "run",
            "scenarios/smoke.toml",
            "--transport",
            "carrier-pigeon",
        ],
        &["run", "scenarios/smoke.toml", "--metrics-addr", "localhost"],
        &["run", "scenarios/smoke.toml", "--broker", "127.0.0.1:1883"],
        &["run", "scenarios/smoke.toml", "--target", "ftp://x:1"],
    ] {
        let out = fleetsim(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = fleetsim(&["run", "scenarios/smoke.toml", "--shard", "3/2"]);
    assert!(text(&out.stderr).contains("shard index 3 must be below the shard count 2"));
}

#[test]
fn flags_that_contradict_the_scenario_exit_2() {
    // Virtual time cannot run over a network transport.
    let out = fleetsim(&[
        "run",
        "scenarios/battery-30-days.toml",
        "--transport",
        "mqtt",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("needs transport = \"inproc\""),
        "{}",
        text(&out.stderr)
    );
    // A broker outage needs MQTT.
    let out = fleetsim(&["run", "scenarios/broker-outage.toml", "--transport", "http"]);
    assert_eq!(out.status.code(), Some(2));
    // --broker needs the mqtt transport.
    let out = fleetsim(&[
        "run",
        "scenarios/smoke.toml",
        "--broker",
        "mqtt://127.0.0.1:1883",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--broker needs the mqtt transport"));
}

/// `--target` works over http, and over mqtt given the broker its gateway
/// is on; every other combination says what is missing, before anything
/// is provisioned (nothing listens at the URLs).
#[test]
fn target_flags_that_cannot_work_together_exit_2_and_say_why() {
    let smoke = "scenarios/smoke.toml";
    let target = "http://127.0.0.1:9";
    for (args, says) in [
        (
            vec!["run", smoke, "--transport", "mqtt", "--target", target],
            "--target over the mqtt transport needs --broker URL",
        ),
        (
            vec![
                "run",
                smoke,
                "--transport",
                "mqtt",
                "--target",
                target,
                "--broker",
                "mqtt://engine:pw@127.0.0.1:9",
            ],
            "each device signs in with the id and secret the target server issued",
        ),
        (
            vec!["run", smoke, "--target", target],
            "--target needs the http or mqtt transport, but the run uses inproc",
        ),
        (
            vec![
                "run",
                smoke,
                "--transport",
                "http",
                "--target",
                target,
                "--broker",
                "mqtt://127.0.0.1:9",
            ],
            "--broker needs the mqtt transport",
        ),
    ] {
        let out = fleetsim(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        // The broker URL's password is never echoed.
        assert!(!err.contains("engine:pw"), "{err}");
    }
}

/// A threshold on what only the engine side sees (its event log, its sync
/// round trips) is refused against an external server over MQTT before
/// anything is provisioned, rather than failing "not measured" at the end.
#[test]
fn engine_side_thresholds_against_an_external_mqtt_server_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let smoke = std::fs::read_to_string(root.join("scenarios/smoke.toml")).unwrap();
    let file = dir.path().join("engine-side.toml");
    let extra = "\"events.lost\" = \"== 0\"\n\"code_sync.p99\" = \"< 1s\"\n";
    let with = smoke.replacen("[thresholds]", &format!("[thresholds]\n{extra}"), 1);
    assert_ne!(with, smoke, "smoke.toml has a [thresholds] table");
    std::fs::write(&file, with).unwrap();
    let file = file.to_str().unwrap();
    let mqtt = [
        "run",
        file,
        "--transport",
        "mqtt",
        "--target",
        "http://127.0.0.1:9",
        "--broker",
        "mqtt://127.0.0.1:9",
    ];
    let out = fleetsim(&mqtt);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("events.lost, code_sync.p99 are measured on the engine side"),
        "{err}"
    );
    // The same file runs against the embedded server (nothing refused):
    // validate accepts it over mqtt.
    let out = fleetsim(&["validate", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn help_and_version_exit_0() {
    let out = fleetsim(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("Exit codes: 0 passed, 1 thresholds failed"));
    let out = fleetsim(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn list_shows_every_scenario_with_its_description() {
    let out = fleetsim(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in [
        "smoke",
        "office-morning-rush",
        "vacation-rental-turnover",
        "courier-burst",
        "brute-force",
        "broker-outage",
        "battery-30-days",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("scenarios/{name}.toml")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{stdout}"));
        assert!(!line.contains("INVALID"), "{line}");
    }
    assert!(
        stdout.contains("Wrong-PIN attacks and QR replays"),
        "{stdout}"
    );
}

#[test]
fn list_marks_invalid_files_and_missing_dirs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.toml"), "name = 1\n").unwrap();
    let out = fleetsim(&["list", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("INVALID"),
        "{}",
        text(&out.stdout)
    );
    let out = fleetsim(&["list", "--dir", "/no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_is_valid_json_describing_the_format() {
    let out = fleetsim(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["title"], "fleetsim scenario");
    assert_eq!(v["additionalProperties"], false);
    let required: Vec<&str> = v["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(
        required.contains(&"name") && required.contains(&"fleet") && required.contains(&"phases")
    );
    let group = &v["definitions"]["DeviceGroup"];
    assert!(group["properties"]["per_site"].is_object(), "{group}");
    assert_eq!(group["additionalProperties"], false);
}

#[test]
fn run_prints_seed_and_replay_command_and_reaches_a_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let out = fleetsim(&[
        "run",
        "scenarios/smoke.toml",
        "--seed",
        "77",
        "--duration",
        "2s",
        "--shard",
        "1/3",
        "--report-dir",
        dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.contains("seed 77"), "{stdout}");
    assert!(
        stdout.contains(
            "reproduce: fleetsim run scenarios/smoke.toml --seed 77 --duration 2s --shard 1/3"
        ),
        "{stdout}"
    );
    // `--duration 2s` cut the 20 s scenario.
    assert!(stdout.contains("over 2s"), "{stdout}");
    // A real verdict (0 passed or 1 thresholds failed), never a run error.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["shards"]["shard"]["index"], 1);
    assert_eq!(report["shards"]["shard"]["count"], 3);
}

#[test]
fn run_uses_the_scenario_seed_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fleetsim(&[
        "run",
        "scenarios/brute-force.toml",
        "--duration",
        "1s",
        "--report-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(
        text(&out.stdout).contains("seed 666"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("--seed 666"));
}

#[test]
fn run_with_a_bad_scenario_exits_2_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"b\"\n").unwrap();
    let out = fleetsim(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "nothing starts: {}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("missing field `fleet`"));
}

/// A short virtual-clock run (seconds of wall time) named `name`.
fn tiny_scenario(name: &str) -> String {
    format!(
        r#"name = "{name}"
seed = 3
clock = "virtual"
[fleet]
[[fleet.devices]]
kind = "lock"
per_site = 1
with = ["keypad"]
[[phases]]
duration = "5s"
arrivals = "2/s"
[thresholds]
"decisions.false_accept" = "== 0"
"#
    )
}

/// Every path under `root`, relative to it, sorted.
fn tree(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_name_like_a_path_lands_under_reports() {
    // The working directory is two levels down, so `../../escaped` would
    // land inside `tmp` (where the test can see it) were it not slugged.
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("a").join("b");
    std::fs::create_dir_all(&cwd).unwrap();
    let file = cwd.join("escape.toml");
    std::fs::write(&file, tiny_scenario("../../escaped")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", file.to_str().unwrap()])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("report: reports/escaped-3"),
        "{}",
        text(&out.stdout)
    );
    assert!(cwd.join("reports/escaped-3/report.json").is_file());
    // Nothing else anywhere in the temporary tree.
    let outside: Vec<String> = tree(tmp.path())
        .into_iter()
        .filter(|p| {
            !p.starts_with("a/b/reports") && p != "a" && p != "a/b" && p != "a/b/escape.toml"
        })
        .collect();
    assert!(outside.is_empty(), "written outside reports/: {outside:?}");
}

#[test]
fn a_report_dir_that_cannot_be_written_stops_the_run_before_its_load() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("s.toml");
    std::fs::write(&file, tiny_scenario("unwritable")).unwrap();
    // Under a regular file, no directory can be made.
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let under_a_file = blocker.join("reports");
    // An existing report.json that is a directory cannot be replaced.
    let occupied = tmp.path().join("occupied");
    std::fs::create_dir_all(occupied.join("report.json")).unwrap();
    // hdr/ must be a directory.
    let hdr_file = tmp.path().join("hdr-file");
    std::fs::create_dir_all(&hdr_file).unwrap();
    std::fs::write(hdr_file.join("hdr"), "").unwrap();
    for dir in [under_a_file, occupied, hdr_file] {
        let out = fleetsim(&[
            "run",
            file.to_str().unwrap(),
            "--report-dir",
            dir.to_str().unwrap(),
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", dir.display());
        assert!(
            stderr.contains("cannot write the report directory"),
            "{stderr}"
        );
        assert!(stderr.contains("nothing ran"), "{stderr}");
        // No load: the end-of-run table never printed.
        let stdout = text(&out.stdout);
        assert!(!stdout.contains("oracle:"), "{stdout}");
        assert!(!stdout.contains("report:"), "{stdout}");
    }
    // Nothing was left behind by the check (no probe file).
    assert_eq!(tree(&tmp.path().join("occupied")), vec!["report.json"]);
}
