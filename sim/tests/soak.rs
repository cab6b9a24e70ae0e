//! The soak campaign: generated scenarios are valid and cover the whole
//! scenario format; 200 seeds run in virtual time, a few in real time over
//! MQTT and HTTP, and the kept regression files, all without breaking an
//! invariant; `fleetsim soak` reports and exits as documented.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fleetsim::cli::{main_with, Exit};
use fleetsim::scenario::{self, Transport};
use fleetsim::soak::{self, check_file, Feature, FeatureSet, Header, SoakConfig};

fn cli(args: &[&str]) -> (Exit, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("fleetsim")
        .chain(args.iter().copied())
        .map(Into::into);
    let code = main_with(argv, &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Dotted key paths of a TOML value (array elements share their array's path).
fn toml_paths(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                toml_paths(v, &p, out);
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                toml_paths(v, prefix, out);
            }
        }
        _ => {}
    }
}

/// Dotted property paths of the scenario JSON Schema (every documented
/// field; `thresholds` is a map of metric names, so only its own key).
fn schema_paths(
    root: &serde_json::Value,
    s: &serde_json::Value,
    prefix: &str,
    out: &mut BTreeSet<String>,
) {
    if let Some(r) = s.get("$ref").and_then(|r| r.as_str()) {
        let name = r.trim_start_matches("#/definitions/");
        schema_paths(root, &root["definitions"][name], prefix, out);
        return;
    }
    for key in ["anyOf", "allOf", "oneOf"] {
        if let Some(list) = s.get(key).and_then(|l| l.as_array()) {
            for sub in list {
                schema_paths(root, sub, prefix, out);
            }
        }
    }
    if let Some(items) = s.get("items") {
        schema_paths(root, items, prefix, out);
    }
    if let Some(props) = s.get("properties").and_then(|p| p.as_object()) {
        for (k, sub) in props {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.insert(p.clone());
            if p != "thresholds" {
                schema_paths(root, sub, &p, out);
            }
        }
    }
}

#[test]
fn every_generated_file_is_valid_and_the_seeds_cover_the_format() {
    let mut seen = BTreeSet::new();
    let mut values: BTreeSet<String> = BTreeSet::new();
    let mut features: BTreeSet<Feature> = BTreeSet::new();
    let mut shards = BTreeSet::new();
    for (transport, seeds) in [
        (Transport::Inproc, 0..1500u64),
        (Transport::Mqtt, 0..300),
        (Transport::Http, 0..300),
    ] {
        for seed in seeds {
            let g = soak::generate(seed, transport, &FeatureSet::all());
            // A file the checker rejects is a bug of the generator.
            if let Err(e) = scenario::parse(&g.text, "generated.toml") {
                panic!("seed {seed} ({transport:?}) is invalid:\n{e}\n{}", g.text);
            }
            let again = soak::generate(seed, transport, &FeatureSet::all());
            assert_eq!(g.text, again.text, "seed {seed}: the same text each time");
            let v: toml::Value = toml::from_str(&g.text).unwrap();
            toml_paths(&v, "", &mut seen);
            for key in ["transport", "clock", "kind", "model", "repeat", "start_at"] {
                for line in g
                    .text
                    .lines()
                    .filter(|l| l.starts_with(&format!("{key} =")))
                {
                    values.insert(line.to_string());
                }
            }
            features.extend(g.features.iter());
            shards.insert(g.shards);
        }
    }
    let schema = serde_json::to_value(scenario::json_schema()).unwrap();
    let mut documented = BTreeSet::new();
    schema_paths(&schema, &schema, "", &mut documented);
    for deep in [
        "fleet.devices.guest.can_open_remotely",
        "faults.offline_wave.model",
        "phases.arrivals.from",
        "credentials.stays.late_departure_share",
    ] {
        assert!(documented.contains(deep), "{deep} not in {documented:?}");
    }
    let missing: Vec<&String> = documented.difference(&seen).collect();
    assert!(missing.is_empty(), "the generator never writes {missing:?}");
    for v in [
        "transport = \"inproc\"",
        "transport = \"mqtt\"",
        "transport = \"http\"",
        "clock = \"virtual\"",
        "clock = \"real\"",
        "kind = \"lock\"",
        "kind = \"keypad\"",
        "kind = \"door_sensor\"",
        "kind = \"door_phone\"",
        "model = \"ble\"",
        "model = \"wifi\"",
        "repeat = \"never\"",
        "repeat = \"daily\"",
        "repeat = \"weekly\"",
    ] {
        assert!(values.contains(v), "never generated: {v}");
    }
    let unused: Vec<Feature> = Feature::ALL
        .into_iter()
        .filter(|f| !features.contains(f))
        .collect();
    assert!(unused.is_empty(), "features never used: {unused:?}");
    assert!(shards.contains(&2) && shards.contains(&3), "{shards:?}");
}

#[test]
fn generated_start_times_with_dst_fall_before_a_clock_change() {
    // `dst` starts the run before an offset change of the first zone and
    // runs past it: the change falls inside the run.
    let mut checked = 0;
    for seed in 0..400 {
        let only = {
            let mut f = FeatureSet::none();
            f.insert(Feature::Dst);
            f
        };
        let g = soak::generate(seed, Transport::Inproc, &only);
        if !g.features.contains(Feature::Dst) {
            continue;
        }
        let s = scenario::parse(&g.text, "dst.toml").unwrap();
        let tz = jiff::tz::TimeZone::get(s.fleet.time_zone_of(0)).unwrap();
        let start = tz.to_timestamp(s.start_at.unwrap()).unwrap();
        let end = start + jiff::SignedDuration::try_from(s.total_duration()).unwrap();
        let change = tz.following(start).next().unwrap().timestamp();
        assert!(change < end, "seed {seed}: no clock change in the run");
        checked += 1;
    }
    assert!(checked > 50, "{checked}");
}

fn failures_text(c: &soak::Campaign, cfg: &SoakConfig) -> String {
    let mut s = c.summary(cfg);
    for r in c.failed() {
        s.push_str(&r.describe());
        s.push('\n');
    }
    s
}

#[test]
fn two_hundred_seeds_in_virtual_time_keep_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SoakConfig::new(Transport::Inproc, dir.path())
        .seeds(0, 200)
        .allowed(FeatureSet::all());
    let c = soak::run_campaign(&cfg, &mut |r| println!("{}", r.describe()));
    println!("{}", c.summary(&cfg));
    assert_eq!(c.results.len(), 200);
    assert!(c.failed().next().is_none(), "{}", failures_text(&c, &cfg));
    // The campaign judged real work, and the features were exercised.
    let decisions: u64 = c.results.iter().map(|r| r.verdicts.decisions()).sum();
    assert!(decisions > 20_000, "{decisions} decisions");
    for f in Feature::ALL {
        if f.applies_to(Transport::Inproc) {
            assert!(
                c.results.iter().any(|r| r.features.contains(f)),
                "no seed used {f}"
            );
        }
    }
    // Passing seeds leave nothing behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_few_seeds_in_real_time_over_mqtt_and_http_keep_every_invariant() {
    for transport in [Transport::Mqtt, Transport::Http] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SoakConfig::new(transport, dir.path())
            .seeds(0, 3)
            .allowed(FeatureSet::all());
        let c = soak::run_campaign(&cfg, &mut |r| println!("{}", r.describe()));
        println!("{}", c.summary(&cfg));
        assert!(c.failed().next().is_none(), "{}", failures_text(&c, &cfg));
        let decisions: u64 = c.results.iter().map(|r| r.verdicts.decisions()).sum();
        assert!(decisions > 0, "{transport:?}: nothing was judged");
    }
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/soak_regressions")
}

#[test]
fn soak_regressions_keep_every_invariant() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regression files");
    let out = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // Every kept file still parses as a generated one.
        Header::parse(&text).unwrap();
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let r = check_file(f, &out.path().join(name), soak::DEFAULT_SEED_TIMEOUT);
        println!("{}", r.describe());
        assert!(r.passed(), "{}", r.describe());
        ran += 1;
    }
    assert!(ran > 0, "every regression file was skipped");
}

#[test]
fn soak_cli_prints_each_seed_and_a_summary_and_cleans_up() {
    // The real binary: its seeds run on threads of their own that print
    // while the command's own output is open (a lock held on stdout for
    // the whole command once hung every seed).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["soak", "--seeds", "2", "--from", "1000", "--out", out])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Two seeds take about a second; a hang is forever. The bound only
    // turns a hang into a failure instead of a stuck suite.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("fleetsim soak did not end within 10 minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("seed 1000"), "{stdout}");
    assert!(stdout.contains("seed 1001"), "{stdout}");
    assert!(
        stdout.contains("soak: 2 seeds (1000..=1001), transport inproc: 2 passed, 0 failed"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_kept_seed_file_replays_with_fleetsim_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (code, stdout, _) = cli(&[
        "soak",
        "--seeds",
        "1",
        "--from",
        "7",
        "--only",
        "stays,schedules",
        "--keep",
        "--out",
        out,
    ]);
    assert_eq!(code, Exit::Passed, "{stdout}");
    let file = dir.path().join("seed-7.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# Generated by `fleetsim soak` (seed 7"),
        "{text}"
    );
    let report = dir.path().join("replay");
    let (code, stdout, stderr) = cli(&[
        "run",
        file.to_str().unwrap(),
        "--report-dir",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, Exit::Passed, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("PASS decisions.false_reject == 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS decisions.reason_mismatch == 0"),
        "{stdout}"
    );
}

#[test]
fn a_failing_seed_keeps_its_file_and_prints_the_replay_command() {
    // A seed that cannot finish within 1 ms counts as hung: the campaign
    // fails, keeps the scenario file and says how to replay it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (code, stdout, _) = cli(&[
        "soak",
        "--seeds",
        "1",
        "--from",
        "3",
        "--seed-timeout",
        "1ms",
        "--out",
        out,
    ]);
    assert_eq!(code, Exit::ThresholdsFailed, "{stdout}");
    let file = dir.path().join("seed-3.toml");
    assert!(stdout.contains("seed 3      FAIL"), "{stdout}");
    assert!(stdout.contains("no result after"), "{stdout}");
    assert!(
        stdout.contains(&format!("scenario: {}", file.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("replay:   fleetsim run {}", file.display())),
        "{stdout}"
    );
    assert!(stdout.contains("1  hung [seeds 3]"), "{stdout}");
    assert!(file.exists());
    assert!(scenario::load(&file).is_ok());
}

#[test]
fn soak_cli_rejects_bad_flags() {
    let (code, _, err) = cli(&["soak", "--seeds", "0"]);
    assert_eq!(code, Exit::InvalidInput, "{err}");
    let (code, _, err) = cli(&["soak", "--seeds", "3", "--without", "lockout,nope"]);
    assert_eq!(code, Exit::InvalidInput);
    assert!(err.contains("unknown soak feature `nope`"), "{err}");
    assert!(err.contains("lockout"), "{err}");
    let (code, _, _) = cli(&["soak", "--seeds", "3", "--only", "ble", "--without", "dst"]);
    assert_eq!(code, Exit::InvalidInput);
}
