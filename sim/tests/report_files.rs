//! report.json against its schema, junit.xml, merging shard reports, and
//! every typed error of reading and merging reports.

mod common;

use common::*;
use fleetsim::report::{
    json_schema, load_dir, merge, write_all, LoadModel, ReportError, RunReport, ShardId,
    SCHEMA_VERSION,
};
use quick_xml::events::Event;

#[test]
fn report_json_validates_against_its_schema() {
    let report = sample_report();
    let dir = tempfile::tempdir().unwrap();
    let written = write_all(dir.path(), &report).unwrap();
    assert!(written.iter().any(|p| p.ends_with("report.html")));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let schema = serde_json::to_value(json_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // The schema has teeth: a report without its seed, or with a stray field, is rejected.
    let mut no_seed = json.clone();
    no_seed.as_object_mut().unwrap().remove("seed");
    assert!(!validator.is_valid(&no_seed));
    let mut stray = json.clone();
    stray["operations"]["pin_check"]["latency"]["p42_us"] = 1.into();
    assert!(!validator.is_valid(&stray));

    // And what was written reads back identically.
    assert_eq!(load_dir(dir.path()).unwrap(), report);
}

#[test]
fn report_carries_what_reproduces_and_judges_the_run() {
    let r = sample_report();
    assert_eq!(r.seed, 42);
    assert!(r.command.contains("--seed 42"));
    assert_eq!(r.scenario["name"], "office-morning-rush");
    assert!(r.model_label.starts_with("open model"));
    assert!(!r.passed, "two thresholds fail");
    let checks = r.checks.as_ref().unwrap();
    assert_eq!(checks.by_outcome["granted"].count, checks.granted);
    assert_eq!(checks.by_outcome["error"].count, checks.errors);
    let per_op: u64 = ["pin_check", "qr_check", "card_check", "ble_check"]
        .iter()
        .map(|op| r.operations[*op].granted)
        .sum();
    assert_eq!(checks.granted, per_op);
    let pin = &r.operations["pin_check"];
    assert_eq!(pin.count, pin.granted + pin.denied + pin.errors);
    assert!(pin.latency.p50_us <= pin.latency.p90_us && pin.latency.p99_us <= pin.latency.max_us);
    let m = r.metrics();
    assert_eq!(m["check.pin.p99"], pin.latency.p99_us as f64 / 1000.0);
    assert_eq!(
        m["decisions.false_accept"],
        r.decisions.counts.false_accepts as f64
    );
    assert!(m["errors.rate"] > 0.0 && m["errors.rate"] < 0.05);
    assert!(m["events.lost"] > 0.0);
    assert!(r.health.online_pct.unwrap() < 100.0);
    assert!(!r.decisions.false_accept_examples.is_empty());
    assert!(r.timeseries.len() >= 20);
    let summary = r.summary_text();
    assert!(
        summary.contains("FAILED") && summary.contains("reproduce: fleetsim run"),
        "{summary}"
    );

    let closed = RunReport::build(
        fleetsim::report::RunMeta {
            model: LoadModel::Closed { concurrency: 50 },
            ..meta(1.0, None)
        },
        &fleetsim::metrics::Snapshot::empty(INTERVAL_US),
    )
    .unwrap();
    assert!(closed
        .model_label
        .starts_with("closed model (50 concurrent users)"));
    assert!(closed.passed && closed.operations.is_empty());
}

#[test]
fn junit_has_one_testcase_per_threshold() {
    let report = sample_report();
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), &report).unwrap();
    let xml = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut cases, mut failures, mut suites) = (Vec::new(), Vec::new(), 0);
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .map(|a| a.unwrap())
                        .find(|a| a.key.as_ref() == name)
                        .map(|a| {
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .unwrap()
                                .into_owned()
                        })
                };
                match e.name().as_ref() {
                    b"testsuite" => {
                        suites += 1;
                        assert_eq!(attr(b"tests").unwrap(), "4");
                        assert_eq!(attr(b"failures").unwrap(), "3");
                    }
                    b"testcase" => cases.push(attr(b"name").unwrap()),
                    b"failure" => failures.push(attr(b"message").unwrap()),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(suites, 1);
    assert_eq!(cases.len(), report.thresholds.len());
    assert_eq!(cases[0], "check.pin.p99 < 250ms");
    assert_eq!(
        cases[3], "check.card.p999 < 1s & <tight>",
        "escaped and read back"
    );
    assert_eq!(failures.len(), 3);
    assert!(
        failures[0].starts_with("measured ") && failures[0].ends_with("expected == 0"),
        "{}",
        failures[0]
    );
    assert_eq!(failures[2], "measured no value, expected < 1s & <tight>");
}

fn shard_report(samples: &[Sample], index: u32) -> RunReport {
    let mut r = recorder();
    feed(&mut r, samples.iter().filter(|s| s.device % 2 == index));
    observe_fleet(&mut r, (0..DEVICES).filter(|d| d % 2 == index));
    let shard = Some(ShardId { index, count: 2 });
    RunReport::build(meta(15.0, shard), &r.into_snapshot()).unwrap()
}

#[test]
fn merging_two_half_reports_equals_the_whole() {
    let samples = samples(11, 25_000, 15);
    let whole = RunReport::build(meta(15.0, None), &whole_snapshot(&samples)).unwrap();
    let halves = [shard_report(&samples, 0), shard_report(&samples, 1)];
    // Through the files, as `fleetsim merge DIR...` would.
    let dirs: Vec<_> = halves
        .iter()
        .map(|h| {
            let d = tempfile::tempdir().unwrap();
            write_all(d.path(), h).unwrap();
            d
        })
        .collect();
    let loaded = dirs.iter().map(|d| load_dir(d.path()).unwrap()).collect();
    let merged = merge(loaded).unwrap();

    assert_eq!(merged.operations, whole.operations);
    assert_eq!(merged.checks, whole.checks);
    assert_eq!(merged.throughput, whole.throughput);
    assert_eq!(merged.decisions.counts, whole.decisions.counts);
    assert_eq!(merged.health, whole.health);
    assert_eq!(merged.timeseries, whole.timeseries);
    assert_eq!(merged.histograms, whole.histograms);
    assert_eq!(merged.metrics(), whole.metrics());
    assert!(
        merged.thresholds.is_empty(),
        "the caller evaluates thresholds once"
    );
    assert_eq!(merged.shards.merged_from.len(), 2);
    assert_eq!(
        merged.shards.merged_from[1].shard,
        Some(ShardId { index: 1, count: 2 })
    );
    assert!(merged.shards.merged_from[0]
        .command
        .ends_with("--shard 0/2"));
    // A percentile of the merge is not the average of the halves' percentiles in general;
    // it is exactly the whole's.
    assert_eq!(
        merged.operations["qr_check"].latency.p99_9_us,
        whole.operations["qr_check"].latency.p99_9_us
    );

    // Merging a merged report with nothing else changes nothing.
    let again = merge(vec![merged.clone()]).unwrap();
    assert_eq!(again.operations, merged.operations);
    assert_eq!(again.shards.merged_from, merged.shards.merged_from);
}

#[test]
fn merge_refuses_what_does_not_belong_together() {
    let samples = samples(12, 2_000, 3);
    let a = shard_report(&samples, 0);
    assert!(matches!(merge(vec![]), Err(ReportError::Empty)));
    let mut other_seed = shard_report(&samples, 1);
    other_seed.seed = 43;
    assert!(matches!(
        merge(vec![a.clone(), other_seed]),
        Err(ReportError::Mismatch { field: "seed", .. })
    ));
    assert!(matches!(
        merge(vec![a.clone(), a.clone()]),
        Err(ReportError::DuplicateShard { index: 0, count: 2 })
    ));
    let mut bad_hist = shard_report(&samples, 1);
    bad_hist
        .histograms
        .operations
        .get_mut("pin_check")
        .unwrap()
        .insert("granted".into(), "!!".into());
    assert!(matches!(
        merge(vec![a.clone(), bad_hist]),
        Err(ReportError::Histogram(_))
    ));
    let mut bad_op = shard_report(&samples, 1);
    bad_op.histograms.intervals[0].operation = "teleport".into();
    let e = merge(vec![a.clone(), bad_op]).unwrap_err();
    assert!(
        matches!(
            e,
            ReportError::UnknownLabel {
                what: "operation",
                ..
            }
        ),
        "{e}"
    );
    let mut bad_interval = shard_report(&samples, 1);
    bad_interval.interval_s = 10.0;
    assert!(matches!(
        merge(vec![a, bad_interval]),
        Err(ReportError::Mismatch {
            field: "interval",
            ..
        })
    ));
}

#[test]
fn load_dir_reports_each_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, ReportError::Io { .. }), "{e}");
    assert!(e.to_string().contains("report.json"));

    std::fs::write(dir.path().join("report.json"), b"{\"not\": \"a report\"}").unwrap();
    let e = load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, ReportError::Json { .. }), "{e}");

    let mut json = serde_json::to_value(sample_report()).unwrap();
    json["schema_version"] = (SCHEMA_VERSION + 1).into();
    let file = dir.path().join("old.json");
    std::fs::write(&file, serde_json::to_vec(&json).unwrap()).unwrap();
    let e = load_dir(&file).unwrap_err();
    assert!(matches!(e, ReportError::SchemaVersion { .. }), "{e}");

    let blocked = dir.path().join("file-in-the-way");
    std::fs::write(&blocked, b"x").unwrap();
    let e = write_all(&blocked.join("sub"), &sample_report()).unwrap_err();
    assert!(matches!(e, ReportError::Io { .. }), "{e}");
}

#[test]
fn an_empty_run_still_writes_every_file() {
    let empty = RunReport::build(
        meta(0.0, None),
        &fleetsim::metrics::Snapshot::empty(INTERVAL_US),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let written = write_all(dir.path(), &empty).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["report.json", "report.html", "junit.xml"],
        "no interval logs without intervals"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("no data") && html.contains("No thresholds in this scenario."));
    assert_eq!(load_dir(dir.path()).unwrap(), empty);
    assert_eq!(empty.metrics()["errors.rate"], 0.0);
    assert!(
        !empty.metrics().contains_key("devices.online_pct"),
        "no devices, no share"
    );
}
