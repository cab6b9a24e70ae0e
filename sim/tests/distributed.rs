//! One fleet on one shared reference server, driven by several workers:
//! `fleetsim provision` once, three `fleetsim run --fleet --shard i/3`
//! processes side by side on loopback, `fleetsim merge`, `fleetsim
//! teardown`. The real binaries (fleetsim and reference-server), over
//! HTTP and over MQTT through Mosquitto with the server's own gateway on
//! it. No timing assertions: the scenario judges only decisions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use serde_json::Value;

mod run_support;
use run_support::{admin, bin, report, root, run, start_target, start_target_with, Mosquitto};

const WORKERS: u32 = 3;

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run_support/shared-fleet.toml")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `fleetsim provision` of the test scenario on `target`; the manifest.
fn provision(target: &str, dir: &Path, extra: &[&str]) -> (PathBuf, Value) {
    let manifest = dir.join("fleet.json");
    let file = scenario();
    let mut args = vec![
        "provision",
        s(&file),
        "--target",
        target,
        "--manifest",
        s(&manifest),
    ];
    args.extend(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("provisioned scenario `shared-fleet`"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&manifest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the manifest holds secrets");
    }
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert!(
        m["secrets"].as_str().unwrap().contains("device's secret"),
        "{}",
        m["secrets"]
    );
    (manifest, m)
}

/// One worker process: shard `i` of [`WORKERS`] of the manifest's fleet.
fn worker(manifest: &Path, i: u32, out: &Path) -> Child {
    bin()
        .current_dir(root())
        .args([
            "run",
            s(&scenario()),
            "--fleet",
            s(manifest),
            "--shard",
            &format!("{i}/{WORKERS}"),
            "--report-dir",
            s(out),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts every worker at once, waits for them; their report directories.
fn run_workers(manifest: &Path, dir: &Path) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = (0..WORKERS)
        .map(|i| dir.join(format!("shard-{i}")))
        .collect();
    let children: Vec<Child> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| worker(manifest, i as u32, d))
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "worker {i}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dirs
}

/// The counts a merge adds up: per operation count, granted, denied and
/// errors, and the decision tallies.
fn counts(r: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (op, stats) in r["operations"].as_object().unwrap() {
        for k in ["count", "granted", "denied", "errors"] {
            m.insert(format!("{op}.{k}"), stats[k].as_u64().unwrap());
        }
    }
    for (k, n) in r["decisions"]["counts"].as_object().unwrap() {
        m.insert(format!("decisions.{k}"), n.as_u64().unwrap());
    }
    m
}

/// Merges the workers' reports and checks the one verdict: no false
/// decision, the merged counts the sum of the shards', the shared target,
/// the manifest and the workers named.
fn merge_and_check(dirs: &[PathBuf], dir: &Path, manifest: &Path, m: &Value) -> Value {
    let merged = dir.join("merged");
    let mut args = vec!["merge"];
    args.extend(dirs.iter().map(|d| s(d)));
    args.extend(["--report-dir", s(&merged)]);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let r = report(&merged);
    let d = &r["decisions"]["counts"];
    assert!(d["true_grants"].as_u64().unwrap() > 0, "{d}");
    assert!(d["true_denials"].as_u64().unwrap() > 0, "{d}");
    assert_eq!(d["false_accepts"], 0, "{d}");
    assert_eq!(d["false_rejects"], 0, "{d}");
    let shards: Vec<Value> = dirs.iter().map(|d| report(d)).collect();
    // Each worker's replay command names the manifest, not the target.
    for sh in &shards {
        let cmd = sh["command"].as_str().unwrap();
        assert!(
            cmd.contains("--fleet ") && !cmd.contains("--target"),
            "{cmd}"
        );
    }
    let mut sum: BTreeMap<String, u64> = BTreeMap::new();
    for sh in &shards {
        // Each worker drove its own sites only, and some of them.
        assert!(
            sh["checks"]["count"].as_u64().unwrap() > 0,
            "{}",
            sh["checks"]
        );
        for (k, v) in counts(sh) {
            *sum.entry(k).or_default() += v;
        }
    }
    assert_eq!(counts(&r), sum);
    // The merged report names the shared target, the manifest and the workers.
    let fleet = &r["fleet"];
    assert_eq!(fleet["target"], m["target"], "{fleet}");
    assert_eq!(fleet["manifest"], s(manifest), "{fleet}");
    assert_eq!(fleet["organization"], m["organization"], "{fleet}");
    for sh in &shards {
        assert_eq!(&sh["fleet"], fleet);
    }
    let workers: Vec<String> = r["shards"]["merged_from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("{}/{}", w["shard"]["index"], w["shard"]["count"]))
        .collect();
    assert_eq!(workers, ["0/3", "1/3", "2/3"]);
    assert!(out.contains("shared target: "), "{out}");
    assert!(
        out.contains("workers: shard 0/3, shard 1/3, shard 2/3"),
        "{out}"
    );
    let html = std::fs::read_to_string(merged.join("report.html")).unwrap();
    assert!(html.contains("id=\"shared-fleet\""));
    r
}

/// Every use-limited code (a courier's PIN) was granted at most its limit
/// in all, by the server's own activity log over every device of the
/// fleet; and some were granted (the check is not vacuous).
fn use_limits_held(t: &run_support::TargetServer, m: &Value) {
    let token = m["token"].as_str().unwrap();
    let mut grants: BTreeMap<u64, u64> = BTreeMap::new();
    for d in m["fleet"]["devices"].as_object().unwrap().values() {
        // Every page of the device's grants (the log is a paged list).
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!(
                "/v1/devices/{}/activity?kind=access_granted&limit=500",
                d["id"]
            );
            if let Some(c) = &cursor {
                path.push_str(&format!("&page_cursor={c}"));
            }
            let (status, page) = admin(t, "GET", &path, Some(token), Value::Null);
            assert_eq!(status, 200, "{path}: {page}");
            for e in page["data"].as_array().unwrap() {
                if let Some(c) = e["credential"].as_u64() {
                    *grants.entry(c).or_default() += 1;
                }
            }
            match page["pagination"]["next_page_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
    }
    let mut limited_granted = 0;
    for (c, n) in &grants {
        let (status, code) = admin(
            t,
            "GET",
            &format!("/v1/credentials/{c}"),
            Some(token),
            Value::Null,
        );
        assert_eq!(status, 200, "{code}");
        if let Some(limit) = code["schedule"]["max_uses"].as_u64() {
            assert!(
                *n <= limit,
                "code {c} granted {n} times, limit {limit}: {code}"
            );
            limited_granted += 1;
        }
    }
    assert!(
        limited_granted > 0,
        "no use-limited code was granted: {grants:?}"
    );
}

/// `fleetsim teardown` deletes the organization; a second says nothing
/// is left; the server has no organization of the fleet's owner left.
fn teardown_leaves_nothing(t: &run_support::TargetServer, manifest: &Path, m: &Value) {
    let (code, out, err) = run(&["teardown", s(manifest)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("deleted organization"), "{out}");
    let token = m["token"].as_str().unwrap();
    let org = &m["organization"];
    let (status, _) = admin(
        t,
        "GET",
        &format!("/v1/organizations/{org}"),
        Some(token),
        Value::Null,
    );
    assert_eq!(status, 404);
    let (_, me) = admin(t, "GET", "/v1/me", Some(token), Value::Null);
    assert_eq!(me["memberships"], serde_json::json!([]), "{me}");
    let (code, out, err) = run(&["teardown", s(manifest)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("nothing left"), "{out}");
}

#[test]
fn three_workers_drive_one_fleet_on_one_server_over_http() {
    let t = start_target();
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, m) = provision(&t.url, tmp.path(), &[]);
    assert_eq!(m["transport"], "http");
    let dirs = run_workers(&manifest, tmp.path());
    merge_and_check(&dirs, tmp.path(), &manifest, &m);
    use_limits_held(&t, &m);
    teardown_leaves_nothing(&t, &manifest, &m);
}

#[test]
fn three_workers_drive_one_fleet_over_mqtt_through_mosquitto() {
    let broker = Mosquitto::start();
    // The server's own gateway signs in as `engine` (the ACL's account).
    let gateway_url = format!("mqtt://engine@127.0.0.1:{}", broker.port);
    let t = start_target_with(&["--broker", &gateway_url]);
    broker.showing_log(|| {
        let tmp = tempfile::tempdir().unwrap();
        let url = broker.url();
        let (manifest, m) = provision(
            &t.url,
            tmp.path(),
            &["--transport", "mqtt", "--broker", &url],
        );
        assert_eq!(
            (m["transport"].as_str(), m["broker"].as_str()),
            (Some("mqtt"), Some(url.as_str()))
        );
        let dirs = run_workers(&manifest, tmp.path());
        for d in &dirs {
            assert_eq!(report(d)["transport"], "mqtt");
        }
        let r = merge_and_check(&dirs, tmp.path(), &manifest, &m);
        assert_eq!(r["fleet"]["broker"], url.as_str());
        use_limits_held(&t, &m);
        teardown_leaves_nothing(&t, &manifest, &m);
    });
}

/// A worker killed during the load leaves no report: the merge of the
/// set refuses (exit 2) rather than judge part of the fleet as the whole.
#[test]
fn a_worker_killed_mid_run_makes_the_merge_refuse() {
    use std::io::BufRead;
    let t = start_target();
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, _) = provision(&t.url, tmp.path(), &[]);
    let dirs: Vec<PathBuf> = (0..WORKERS)
        .map(|i| tmp.path().join(format!("shard-{i}")))
        .collect();
    let mut children: Vec<Child> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| worker(&manifest, i as u32, d))
        .collect();
    // Shard 1 is killed once it has started its load (it printed its
    // plan and the command that replays it).
    let mut lines = std::io::BufReader::new(children[1].stdout.take().unwrap()).lines();
    let started = lines.any(|l| l.is_ok_and(|l| l.starts_with("reproduce: ")));
    assert!(started, "shard 1 never started");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    children[1].kill().unwrap();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        if i != 1 {
            assert_eq!(out.status.code(), Some(0), "worker {i}");
        }
    }
    assert!(!dirs[1].join("report.json").exists());
    let merged = tmp.path().join("merged");
    let all: Vec<&str> = dirs.iter().map(|d| s(d)).collect();
    let (code, _, err) = run(&[&["merge"], &all[..], &["--report-dir", s(&merged)]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shard-1"), "{err}");
    let (code, _, err) = run(&["merge", all[0], all[2], "--report-dir", s(&merged)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("shard 1/3 missing"), "{err}");
    assert!(!merged.join("report.json").exists());
}

/// Bad input is refused with exit code 2 and a message naming it, before
/// anything runs: a manifest made for another scenario or seed, --fleet
/// with --target, an unreadable or damaged manifest, more shards than
/// sites; and provision never overwrites a manifest unasked.
#[test]
fn a_worker_refuses_a_manifest_that_does_not_fit() {
    let t = start_target();
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, _) = provision(&t.url, tmp.path(), &[]);
    let out = tmp.path().join("out");
    let file = scenario();
    let base = [
        "run",
        s(&file),
        "--fleet",
        s(&manifest),
        "--report-dir",
        s(&out),
    ];
    let refused = |extra: &[&str], want: &str| {
        let (code, stdout, err) = run(&[&base[..], extra].concat());
        assert_eq!(code, 2, "{extra:?}: {stdout}\n{err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    };
    refused(
        &["--seed", "99"],
        "made with seed 18, but this run uses seed 99",
    );
    refused(&["--duration", "2s"], "made for scenario `shared-fleet`");
    refused(&["--target", &t.url], "cannot be used with");
    refused(
        &["--shard", "0/4"],
        "3 sites but the run is split into 4 shards",
    );
    let smoke = root().join("scenarios/smoke.toml");
    let (code, _, err) = run(&[
        "run",
        s(&smoke),
        "--fleet",
        s(&manifest),
        "--report-dir",
        s(&out),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("made for scenario `shared-fleet`") && err.contains("`smoke`"),
        "{err}"
    );
    let damaged = tmp.path().join("damaged.json");
    std::fs::write(&damaged, "{\"format_version\": 1, \"seed\": 18").unwrap();
    let missing = tmp.path().join("missing.json");
    for bad in [&damaged, &missing] {
        let (code, _, err) = run(&["run", s(&file), "--fleet", s(bad), "--report-dir", s(&out)]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(s(bad)), "{err}");
    }
    assert!(!out.join("report.json").exists(), "nothing ran");
    // An existing manifest is kept, and the server not touched.
    let before = std::fs::read(&manifest).unwrap();
    let (code, _, err) = run(&[
        "provision",
        s(&file),
        "--target",
        &t.url,
        "--manifest",
        s(&manifest),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("exists already") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&manifest).unwrap(), before);
    // A server that cannot be reached is a run error (3).
    let (code, _, err) = run(&[
        "provision",
        s(&file),
        "--target",
        "http://127.0.0.1:9",
        "--manifest",
        s(&tmp.path().join("other.json")),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the target server"), "{err}");
}
