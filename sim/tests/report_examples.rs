//! Debuggable examples: a run whose engine answers wrongly (here the
//! answers are made up and judged by the real oracle, since no scenario
//! fault makes the engine wrong) yields examples with the simulated time,
//! site, door, device, credential, action, both decisions in the wire's
//! words and the keypad's wrong-PIN history, in report.json, report.html,
//! junit.xml and the summary; and `started_at` is set.

use fleetsim::metrics::{Outcome, Snapshot, Verdict, DEFAULT_INTERVAL_US};
use fleetsim::run::load::{Measured, OracleSummary};
use fleetsim::run::oracle::{Attempt, Expected, TruthKind};
use fleetsim::run::{provision, verdict, RunOptions, Shard};
use jiff::SignedDuration;
use reference_server::domain::DenyReason;
use reference_server::{Engine, EngineConfig};
use serde_json::Value;

const SCENARIO: &str = r#"
name = "examples"
description = "one door phone"
clock = "virtual"

[fleet]
sites = 1
lockout = { max_wrong = 5, window = "60s", locked_for = "30s" }

[[fleet.devices]]
kind = "door_phone"
per_site = 1

[credentials]
pins_per_door = 2
mix = { permanent = 1.0 }

[[phases]]
name = "p"
duration = "1s"
arrivals = "1/s"

[actions]
pin_valid = 0.5
pin_wrong = 0.5

[thresholds]
"decisions.false_accept" = "== 0"
"decisions.false_reject" = "== 0"
"decisions.reason_mismatch" = "== 0"
"decisions.no_answer" = "== 0"
"#;

#[test]
fn false_verdicts_carry_when_where_what_and_the_keypads_history_everywhere() {
    let s = fleetsim::scenario::parse(SCENARIO, "examples.toml").unwrap();
    let mut engine = Engine::new(EngineConfig {
        token_key: reference_server::domain::TokenKey::from_bytes([3; 32]),
        seed: 5,
    });
    let t0 = provision::start_time(&s);
    let mut p = provision::provision(&mut engine, &s, 5, t0).unwrap();
    let door = p.doors[0].clone();
    let phone = door.plan.door_phone.unwrap();
    let attempt = |truth, action| Attempt {
        device: phone,
        door: door.door,
        action,
        kind: TruthKind::Pin,
        truth,
        keypad: true,
    };
    let sec = |n: i64| t0 + SignedDuration::from_secs(n);
    let mut snap = Snapshot::empty(DEFAULT_INTERVAL_US);
    let wrong = attempt(None, "pin_wrong");
    let valid = attempt(Some(door.pins[0]), "pin_valid");
    let denied = |r| Expected::Denied(r);

    // Two wrong PINs, rightly denied: the keypad's history.
    for n in 0..2 {
        p.oracle
            .judge(&wrong, denied(DenyReason::WrongPin), sec(n), sec(n));
        snap.decisions.count(Verdict::Deny, Outcome::Denied);
    }
    // A wrong PIN denied for another reason, one granted, a valid one denied.
    p.oracle
        .judge(&wrong, denied(DenyReason::Expired), sec(2), sec(2));
    snap.decisions.count(Verdict::Deny, Outcome::Denied);
    p.oracle.judge(&wrong, Expected::Granted, sec(3), sec(3));
    snap.decisions.count(Verdict::Deny, Outcome::Granted);
    p.oracle
        .judge(&valid, denied(DenyReason::LockedOut), sec(4), sec(4));
    snap.decisions.count(Verdict::Grant, Outcome::Denied);
    // And one without an answer.
    snap.decisions.record(Verdict::Grant, Outcome::Error, || {
        let expected = p.oracle.expect(&valid, sec(5)).label();
        p.oracle.example(
            &valid,
            expected,
            "error:timed_out".into(),
            sec(5),
            sec(6),
            "no answer",
        )
    });
    let v = &p.oracle.verdicts;
    assert_eq!(
        (v.false_accepts, v.false_rejects, v.reason_mismatches),
        (1, 1, 1)
    );

    let o = &p.oracle;
    let measured = Measured {
        snapshot: snap,
        oracle: OracleSummary {
            verdicts: o.verdicts.clone(),
            lockouts: o.lockouts,
            denials: o.denials.clone(),
            truth_table: o.census(),
            false_accept_examples: o.false_accept_examples.clone(),
            false_reject_examples: o.false_reject_examples.clone(),
            reason_mismatch_examples: o.reason_mismatch_examples.clone(),
            retired_attempts: o.retired_attempts,
        },
        started_at: t0,
        duration_s: 6.0,
        arrivals: Default::default(),
        skipped: Default::default(),
        closed_people: None,
        offline_max: 0,
        motor_blocked: 0,
        battery_min_pct: None,
        battery_low_events: 0,
        events_duplicated: Some(0),
        mqtt_reconnects: None,
        // A harness at 11 CPU s over 6 s of 2 cores: saturated.
        harness: fleetsim::metrics::cost::HarnessUsage {
            cpu: fleetsim::metrics::cost::CpuTime {
                user_s: 10.0,
                system_s: 1.0,
            },
            wall_s: 6.0,
            peak_cores: 1.95,
            cores_available: 2,
            sut_in_process: true,
        },
        start_lag: fleetsim::report::StartLag {
            late_starts: 3,
            max_lag_us: 40_000,
        },
    };
    let tmp = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        seed: 5,
        transport: fleetsim::scenario::Transport::Inproc,
        broker: None,
        target: None,
        report_dir: tmp.path().to_path_buf(),
        metrics_addr: None,
        shard: Shard::WHOLE,
        run_id: "test".into(),
        reproduce: "fleetsim run examples.toml --seed 5".into(),
        fleet: None,
    };
    let outcome = verdict::finish(&s, &opts, measured).unwrap();
    assert!(!outcome.passed);
    // The saturated harness is said in the summary and recorded.
    assert!(
        outcome.summary.contains("WARNING: the harness may have been the bottleneck: it used 1.83 of 2 cores on average (peak 1.95), and 3 arrivals started 10 ms or more late (latest 40.0 ms)"),
        "{}",
        outcome.summary
    );

    // report.json
    let text = std::fs::read_to_string(tmp.path().join("report.json")).unwrap();
    assert!(!text.contains("Denied("), "Rust Debug text in report.json");
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["started_at"], t0.to_string());
    assert_eq!(r["harness"]["saturated"], true);
    assert_eq!(r["harness"]["cores_used"], 1.833);
    assert!(r["harness"]["warning"]
        .as_str()
        .unwrap()
        .contains("--shard"));
    let d = &r["decisions"];
    let at = |n| Value::String(sec(n).to_string());
    let fa = &d["false_accept_examples"][0];
    assert_eq!(fa["at"], at(3));
    assert_eq!(fa["site"], 0);
    assert_eq!(fa["door"], door.door.0);
    assert_eq!(fa["device"], phone.0);
    assert_eq!(
        fa["credential"],
        Value::Null,
        "a wrong PIN is no credential"
    );
    assert_eq!(fa["credential_kind"], "pin");
    assert_eq!(fa["action"], "pin_wrong");
    assert_eq!(fa["expected"], "denied:wrong_pin");
    assert_eq!(fa["actual"], "granted");
    // The oracle follows an answer the rules did not allow: the try
    // denied as `expired` did not count as a wrong PIN on the keypad.
    assert_eq!(fa["wrong_pins_at"], serde_json::json!([at(0), at(1)]));
    let fr = &d["false_reject_examples"][0];
    assert_eq!(fr["at"], at(4));
    assert_eq!(fr["action"], "pin_valid");
    let cred = p.oracle.credential(door.pins[0]).unwrap();
    assert_eq!(fr["credential"], cred.0);
    assert_eq!(fr["expected"], "granted");
    assert_eq!(fr["actual"], "denied:locked_out");
    // The grant before it (a false accept, followed) cleared the count.
    assert!(
        fr["wrong_pins_at"].as_array().is_none_or(|a| a.is_empty()),
        "{fr}"
    );
    let rm = &d["reason_mismatch_examples"][0];
    assert_eq!(rm["expected"], "denied:wrong_pin");
    assert_eq!(rm["actual"], "denied:expired");
    assert_eq!(rm["wrong_pins_at"], serde_json::json!([at(0), at(1)]));
    let na = &d["no_answer_examples"][0];
    assert_eq!(na["actual"], "error:timed_out");
    assert_eq!(na["answered_at"], at(6));

    // report.html: all three kinds, with time, keypad history and reasons.
    let html = std::fs::read_to_string(tmp.path().join("report.html")).unwrap();
    for id in [
        "examples-false-accept",
        "examples-false-reject",
        "examples-reason-mismatch",
        "examples-no-answer",
    ] {
        assert!(html.contains(&format!("<table id=\"{id}\"")), "{id}");
    }
    for needle in [
        "denied:locked_out",
        "denied:expired",
        "denied:wrong_pin",
        &sec(4).to_string(),
        &format!("{}, {}", sec(0), sec(1)),
    ] {
        assert!(html.contains(needle), "{needle} missing from report.html");
    }

    // junit.xml: each failed decision threshold lists its examples.
    let junit = std::fs::read_to_string(tmp.path().join("junit.xml")).unwrap();
    let failure = |metric: &str| {
        let start = junit
            .find(&format!("name=\"{metric} == 0\""))
            .unwrap_or_else(|| panic!("{metric}: {junit}"));
        let end = start + junit[start..].find("</testcase>").unwrap();
        junit[start..end].to_string()
    };
    let f = failure("decisions.false_reject");
    assert!(
        f.contains(&format!(
            "{} site 0 door {} device {} pin pin_valid credential {}: expected granted, got denied:locked_out",
            sec(4),
            door.door.0,
            phone.0,
            cred.0,
        )),
        "{f}"
    );
    assert!(
        failure("decisions.reason_mismatch").contains("got denied:expired"),
        "{junit}"
    );
    assert!(
        failure("decisions.false_accept").contains("expected denied:wrong_pin, got granted"),
        "{junit}"
    );
    assert!(
        failure("decisions.no_answer").contains("got error:timed_out"),
        "{junit}"
    );

    // The summary names each kind.
    for kind in ["false accept: ", "false reject: ", "reason mismatch: "] {
        assert!(outcome.summary.contains(kind), "{}", outcome.summary);
    }
}
