//! Scenario files: every shipped scenario validates, and a table of broken
//! files each yields the expected problem at the expected line:col, through
//! the library and through `fleetsim validate` (exit code 2).

use std::path::PathBuf;
use std::process::Command;

use fleetsim::scenario::{self, Load, ProblemKind, Transport};

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

#[test]
fn every_shipped_scenario_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = scenario::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            assert!(
                !s.description.is_empty(),
                "{} has no description",
                path.display()
            );
            assert!(
                !s.thresholds.is_empty(),
                "{} has no thresholds",
                path.display()
            );
            assert!(s.seed.is_some(), "{} has no seed", path.display());
            n += 1;
        }
    }
    assert!(n >= 7, "expected the seven shipped scenarios, found {n}");
}

#[test]
fn smoke_is_small_and_short() {
    let s = scenario::load(&scenarios_dir().join("smoke.toml")).unwrap();
    assert!(s.total_duration().as_secs() <= 30);
    assert_eq!(s.transport, Transport::Inproc);
    assert!(s.fleet.device_count() <= 100);
}

#[test]
fn office_rush_ramps_then_holds() {
    let s = scenario::load(&scenarios_dir().join("office-morning-rush.toml")).unwrap();
    assert_eq!(
        s.phases[0].load,
        Load::Open {
            from_per_s: 10.0,
            to_per_s: 2000.0,
            max_in_flight: 10_000
        }
    );
    assert_eq!(s.faults.broker_outages[0].at.as_secs(), 360);
    assert_eq!(s.fleet.device_count(), 5 * (96 * 3 + 4));
}

#[test]
fn long_scenarios_use_virtual_time() {
    for f in ["battery-30-days.toml", "vacation-rental-turnover.toml"] {
        let s = scenario::load(&scenarios_dir().join(f)).unwrap();
        assert_eq!(s.clock, scenario::Clock::Virtual, "{f}");
        assert!(s.start_at.is_some(), "{f}");
    }
    let s = scenario::load(&scenarios_dir().join("battery-30-days.toml")).unwrap();
    assert_eq!(s.total_duration().as_secs(), 30 * 86_400);
}

/// A valid scenario the broken cases start from (line numbers matter).
const BASE: &str = r#"name = "t"
[fleet]
[[fleet.devices]]
kind = "lock"
per_site = 2
with = ["keypad"]
[[phases]]
duration = "10s"
arrivals = "5/s"
"#;

struct Case {
    name: &'static str,
    src: String,
    kind: ProblemKind,
    fragment: &'static str,
    hint: &'static str,
    line: usize,
    col: usize,
}

fn replace(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

fn append(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "unknown field with suggestion",
            src: replace("per_site = 2", "per_sit = 2"),
            kind: ProblemKind::UnknownField,
            fragment: "unknown field `per_sit`",
            hint: "did you mean `per_site`?",
            line: 5,
            col: 1,
        },
        Case {
            name: "unknown top-level field",
            src: append("sead = 4\n"),
            kind: ProblemKind::UnknownField,
            fragment: "unknown field `sead`",
            hint: "`seed`",
            line: 10,
            col: 1,
        },
        Case {
            name: "wrong type",
            src: replace("per_site = 2", "per_site = \"2\""),
            kind: ProblemKind::WrongType,
            fragment: "expected an integer, found a string",
            hint: "remove the quotes",
            line: 5,
            col: 12,
        },
        Case {
            name: "unknown enum value",
            src: replace("kind = \"lock\"", "kind = \"lok\""),
            kind: ProblemKind::BadValue,
            fragment: "`lok` is not one of lock, keypad",
            hint: "did you mean `lock`?",
            line: 4,
            col: 8,
        },
        Case {
            name: "bad duration",
            src: replace("duration = \"10s\"", "duration = \"10 seconds\""),
            kind: ProblemKind::BadDuration,
            fragment: "`10 seconds` is not a duration",
            hint: "'30s'",
            line: 8,
            col: 12,
        },
        Case {
            name: "duration without quotes",
            src: replace("duration = \"10s\"", "duration = 10"),
            kind: ProblemKind::WrongType,
            fragment: "expected a string, found an integer",
            hint: "\"10s\"",
            line: 8,
            col: 12,
        },
        Case {
            name: "bad rate in a ramp",
            src: replace(
                "arrivals = \"5/s\"",
                "arrivals = { from = \"1/s\", to = \"fast\" }",
            ),
            kind: ProblemKind::BadRate,
            fragment: "`fast` is not a rate",
            hint: "'100/s'",
            line: 9,
            col: 33,
        },
        Case {
            name: "rate without unit",
            src: replace("arrivals = \"5/s\"", "arrivals = \"5\""),
            kind: ProblemKind::BadRate,
            fragment: "has no time unit",
            hint: "'5/s'",
            line: 9,
            col: 12,
        },
        Case {
            name: "action mix not summing to 1",
            src: append("[actions]\npin_valid = 0.7\npin_wrong = 0.2\n"),
            kind: ProblemKind::MixSum,
            fragment: "the action mix adds up to 0.9, not 1",
            hint: "pin_valid 0.7 + pin_wrong 0.2",
            line: 10,
            col: 1,
        },
        Case {
            name: "unknown time zone",
            src: replace("[fleet]", "[fleet]\ntimezone = \"Europe/Berln\""),
            kind: ProblemKind::UnknownTimeZone,
            fragment: "unknown time zone `Europe/Berln`",
            hint: "Europe/Berlin",
            line: 3,
            col: 12,
        },
        Case {
            name: "threshold without a comparator",
            src: append("[thresholds]\n\"check.pin.p99\" = \"25ms\"\n"),
            kind: ProblemKind::BadThreshold,
            fragment: "does not start with a comparator",
            hint: "\"< 25ms\"",
            line: 11,
            col: 19,
        },
        Case {
            name: "threshold with the wrong unit",
            src: append("[thresholds]\n\"errors.rate\" = \"< 5ms\"\n"),
            kind: ProblemKind::BadThreshold,
            fragment: "is a ratio",
            hint: "0.1%",
            line: 11,
            col: 17,
        },
        Case {
            name: "threshold on an unknown metric",
            src: append("[thresholds]\n\"check.pin.p98\" = \"< 5ms\"\n"),
            kind: ProblemKind::BadThreshold,
            fragment: "unknown metric `check.pin.p98`",
            hint: "check.pin.p99",
            line: 11,
            col: 1,
        },
        Case {
            name: "missing required field",
            src: replace("duration = \"10s\"\n", ""),
            kind: ProblemKind::MissingField,
            fragment: "missing field `duration`",
            hint: "How long the phase lasts",
            line: 7,
            col: 1,
        },
        Case {
            name: "value out of range",
            src: replace("[fleet]", "[fleet]\nsites = 0"),
            kind: ProblemKind::BadValue,
            fragment: "0 is out of range: must be between 1 and 10000",
            hint: "Number of sites",
            line: 3,
            col: 9,
        },
        Case {
            name: "TOML syntax error",
            src: replace("per_site = 2", "per_site = = 2"),
            kind: ProblemKind::Syntax,
            fragment: "not valid TOML",
            hint: "toml.io",
            line: 5,
            col: 12,
        },
        Case {
            name: "open and closed model together",
            src: replace("arrivals = \"5/s\"", "arrivals = \"5/s\"\npeople = 3"),
            kind: ProblemKind::Conflict,
            fragment: "either `arrivals` (open model) or `people`",
            hint: "people = 50",
            line: 10,
            col: 10,
        },
        Case {
            name: "broker outage without mqtt",
            src: append("[faults]\nbroker_outage = { at = \"2s\", for = \"1s\" }\n"),
            kind: ProblemKind::Conflict,
            fragment: "a broker outage needs transport = \"mqtt\"",
            hint: "transport = \"mqtt\"",
            line: 11,
            col: 17,
        },
        Case {
            name: "fault after the last phase",
            src: append("[faults]\noffline_wave = { at = \"1m\", for = \"1s\", share = 0.5 }\n"),
            kind: ProblemKind::BadValue,
            fragment: "starts at 1m but the phases end at 10s",
            hint: "from the start of the run",
            line: 11,
            col: 23,
        },
        Case {
            name: "QR action without door phones",
            src: append("[actions]\nqr_valid = 1\n"),
            kind: ProblemKind::Conflict,
            fragment: "`qr_valid` needs door phones",
            hint: "door_phone",
            line: 11,
            col: 12,
        },
        Case {
            name: "virtual clock over mqtt",
            src: replace(
                "name = \"t\"",
                "name = \"t\"\nclock = \"virtual\"\ntransport = \"mqtt\"",
            ),
            kind: ProblemKind::Conflict,
            fragment: "clock = \"virtual\" needs transport = \"inproc\"",
            hint: "real clock",
            line: 2,
            col: 9,
        },
        Case {
            name: "each door count needs repeat never",
            src: append("[credentials.visitor]\nrepeat = \"daily\"\neach_door_count = 2\n"),
            kind: ProblemKind::Conflict,
            fragment: "'each door counts' applies only with repeat = \"never\"",
            hint: "repeat = \"never\"",
            line: 12,
            col: 19,
        },
    ]
}

fn problems_of(src: &str) -> Vec<scenario::Problem> {
    match scenario::parse(src, "case.toml") {
        Ok(_) => vec![],
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn broken_files_report_the_expected_problem_and_place() {
    assert!(problems_of(BASE).is_empty(), "BASE must be valid");
    for c in cases() {
        let problems = problems_of(&c.src);
        let found = problems.iter().find(|p| p.message.contains(c.fragment));
        let Some(p) = found else {
            panic!(
                "{}: no problem containing {:?}; got {problems:#?}",
                c.name, c.fragment
            );
        };
        assert_eq!(p.kind, c.kind, "{}: {p}", c.name);
        assert_eq!((p.line, p.col), (c.line, c.col), "{}: {p}", c.name);
        let hint = p.hint.clone().unwrap_or_default();
        assert!(
            hint.contains(c.hint),
            "{}: hint {hint:?} lacks {:?}",
            c.name,
            c.hint
        );
        assert_eq!(p.file, "case.toml");
    }
}

#[test]
fn broken_files_exit_2_with_file_line_col_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    for (i, c) in cases().into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, &c.src).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", c.name);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let place = format!("{}:{}:{}: ", path.display(), c.line, c.col);
        assert!(
            stderr.contains(&place),
            "{}: {place:?} not in\n{stderr}",
            c.name
        );
        assert!(stderr.contains(c.fragment), "{}: {stderr}", c.name);
        assert!(out.stdout.is_empty(), "{}", c.name);
    }
}

#[test]
fn several_problems_are_reported_at_once_in_file_order() {
    let src = r#"name = "multi"
transport = "mqt"
[fleet]
timezone = "Mars/Olympus"
[[fleet.devices]]
kind = "lock"
per_sit = 2
[[phases]]
duration = "2 minutes"
arrivals = { from = "1/s", to = "lots" }
[actions]
pin_valid = 0.5
[thresholds]
"check.pin.p99" = "< 25"
"#;
    let problems = problems_of(src);
    let kinds: Vec<ProblemKind> = problems.iter().map(|p| p.kind).collect();
    for k in [
        ProblemKind::BadValue,
        ProblemKind::UnknownTimeZone,
        ProblemKind::UnknownField,
        ProblemKind::MissingField,
        ProblemKind::BadDuration,
        ProblemKind::BadRate,
        ProblemKind::MixSum,
        ProblemKind::BadThreshold,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {problems:#?}");
    }
    assert_eq!(problems.len(), 8, "{problems:#?}");
    let places: Vec<(usize, usize)> = problems.iter().map(|p| (p.line, p.col)).collect();
    let mut sorted = places.clone();
    sorted.sort();
    assert_eq!(places, sorted, "problems come top to bottom");
    let rendered = scenario::parse(src, "multi.toml").unwrap_err().to_string();
    assert!(
        rendered.ends_with("multi.toml: 8 problems found"),
        "{rendered}"
    );
    assert!(rendered.contains("transport: `mqt` is not one of inproc, mqtt or http"));
}

#[test]
fn cross_field_rules_report_every_violation_at_once() {
    let src = r#"name = "x"
[fleet]
[[fleet.devices]]
kind = "door_sensor"
per_site = 1
relock_after = "10s"
[credentials]
six_digit_share = 0.5
[[phases]]
duration = "1m"
people = 5
max_in_flight = 3
[actions]
ble = 0.5
card = 0.5
"#;
    let problems = problems_of(src);
    let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    for m in [
        "`relock_after` does not apply to a door_sensor",
        "6-digit PINs are not enabled",
        "`max_in_flight` belongs to the open model",
        "`ble` needs BLE locks",
        "`ble` needs BLE passes",
        "`card` needs a card reader",
        "`card` needs RF cards",
    ] {
        assert!(
            messages.iter().any(|x| x.contains(m)),
            "{m} missing from {messages:#?}"
        );
    }
}

#[test]
fn toml_datetimes_are_rejected_not_crashed_on() {
    let src = BASE.replace(
        "name = \"t\"",
        "name = \"t\"\nstart_at = 2026-03-27T08:00:00",
    );
    let problems = problems_of(&src);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].kind, ProblemKind::WrongType);
    assert!(
        problems[0].message.contains("found a date-time"),
        "{}",
        problems[0]
    );
}
