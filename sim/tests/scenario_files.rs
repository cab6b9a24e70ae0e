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

/// The benchmark scenarios the README's performance section runs are
/// files users copy: a field renamed in the format must not leave them broken.
#[test]
fn every_benchmark_scenario_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = scenario::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            assert!(
                !s.thresholds.is_empty(),
                "{} has no thresholds",
                path.display()
            );
            n += 1;
        }
    }
    assert!(
        n >= 6,
        "expected the benchmark scenarios in {}, found {n}",
        dir.display()
    );
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

#[test]
fn a_minimal_scenario_gets_the_documented_defaults() {
    use fleetsim::scenario::{Action, ActionMix, Clock};
    let s = scenario::parse(BASE, "t.toml").unwrap();
    assert_eq!(s.transport, Transport::Inproc);
    assert_eq!(s.clock, Clock::Real);
    assert_eq!(s.seed, None);
    assert_eq!(s.fleet.sites, 1);
    assert_eq!(s.fleet.time_zones, vec!["UTC".to_string()]);
    assert_eq!(s.fleet.device_count(), 4);
    assert_eq!(s.fleet.lockout.max_wrong, 5);
    let b = &s.fleet.devices[0].behaviour;
    assert_eq!(b.code_slots, 250);
    assert_eq!(b.relock_after.as_secs(), 30);
    assert_eq!(b.battery_drain_pct_per_day, 0.2);
    assert_eq!(s.credentials.pins_per_door, 10);
    assert_eq!(s.credentials.mix.permanent, 1.0);
    assert_eq!(s.credentials.delivery.max_uses, Some(1));
    assert_eq!(s.actions, ActionMix(vec![(Action::PinValid, 1.0)]));
    assert_eq!(s.phases[0].name, "phase-1");
    assert_eq!(
        s.phases[0].load,
        Load::Open {
            from_per_s: 5.0,
            to_per_s: 5.0,
            max_in_flight: 10_000
        }
    );
    // No thresholds in the file: the defaults judge the run.
    let defaults: Vec<(&str, &str, bool)> = s
        .thresholds
        .iter()
        .map(|t| (t.metric.as_str(), t.text.as_str(), t.default))
        .collect();
    assert_eq!(
        defaults,
        [
            ("arrivals.dropped_rate", "< 1%", true),
            ("arrivals.skipped_rate", "< 1%", true)
        ]
    );
    // The resolved scenario serializes for the report, durations in ms.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["phases"][0]["duration_ms"], 10_000);
    assert_eq!(
        json["fleet"]["devices"][0]["behaviour"]["relock_after_ms"],
        30_000
    );
}

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
            src: replace("name = \"t\"", "name = \"t\"\nsead = 4"),
            kind: ProblemKind::UnknownField,
            fragment: "unknown field `sead`",
            hint: "`seed`",
            line: 2,
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
            src: append("[thresholds]\n\"chek.pin.p99\" = \"< 5ms\"\n"),
            kind: ProblemKind::BadThreshold,
            fragment: "unknown metric `chek.pin.p99`",
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
        Case {
            name: "NUL in the name",
            src: replace("name = \"t\"", "name = \"t\\u0000x\""),
            kind: ProblemKind::UnsafeText,
            fragment: "the value holds a NUL character (U+0000) at character 2",
            hint: "printable on one line",
            line: 1,
            col: 8,
        },
        Case {
            name: "bidirectional override in the description",
            src: replace(
                "name = \"t\"",
                "name = \"t\"\ndescription = \"pay \u{202E}gnp.exe\"",
            ),
            kind: ProblemKind::UnsafeText,
            fragment: "holds a bidirectional text control (U+202E) at character 5",
            hint: "printable on one line",
            line: 2,
            col: 15,
        },
        Case {
            name: "line break in a phase name",
            src: replace("[[phases]]", "[[phases]]\nname = \"a\\nb\""),
            kind: ProblemKind::UnsafeText,
            fragment: "holds a control character (U+000A) at character 2",
            hint: "write a space",
            line: 8,
            col: 8,
        },
        Case {
            name: "C1 control in a key",
            src: append("[thresholds]\n\"check.pin.p99\\u0085\" = \"< 5ms\"\n"),
            kind: ProblemKind::UnsafeText,
            fragment: "the key holds a control character (U+0085) at character 14",
            hint: "printable on one line",
            line: 11,
            col: 1,
        },
        Case {
            name: "bidirectional isolate in a time zone",
            src: replace("[fleet]", "[fleet]\ntimezone = \"\\u2066UTC\""),
            kind: ProblemKind::UnsafeText,
            fragment: "holds a bidirectional text control (U+2066) at character 1",
            hint: "printable on one line",
            line: 3,
            col: 12,
        },
        Case {
            name: "name longer than the engine takes",
            src: replace("name = \"t\"", &format!("name = \"{}\"", "é".repeat(101))),
            kind: ProblemKind::BadValue,
            fragment: "the name must be 1 to 200 bytes long",
            hint: "office-morning-rush",
            line: 1,
            col: 8,
        },
        Case {
            name: "more phases than allowed",
            src: append(&"[[phases]]\nduration = \"1s\"\narrivals = \"1/s\"\n".repeat(100)),
            kind: ProblemKind::BadValue,
            fragment: "the scenario has 101 phases; at most 100",
            hint: "split the run into several scenarios",
            // The 101st [[phases]] table: 9 lines of BASE, 99 of 3 lines each.
            line: 10 + 99 * 3,
            col: 1,
        },
        Case {
            name: "run longer than allowed",
            src: format!(
                "{}[[phases]]\nduration = \"35d\"\narrivals = \"1/s\"\n",
                replace("duration = \"10s\"", "duration = \"366d\"")
            ),
            kind: ProblemKind::BadValue,
            fragment: "the phases last 401d up to here; a run lasts at most 400d",
            hint: "split the run into several scenarios",
            line: 11,
            col: 12,
        },
        Case {
            name: "more fault windows than allowed",
            src: append(&format!(
                "[faults]\noffline_wave = [{}]\n",
                "{ at = \"1s\", for = \"1s\", share = 0.1 },".repeat(101)
            )),
            kind: ProblemKind::BadValue,
            fragment: "101 windows; at most 100",
            hint: "merge adjacent windows",
            line: 11,
            col: 16,
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
    assert!(problems[0]
        .hint
        .as_deref()
        .unwrap_or_default()
        .contains("quote it"));
}

#[test]
fn single_and_double_bracket_mixups_get_a_hint() {
    let src = BASE.replace("[[phases]]", "[phases]");
    let problems = problems_of(&src);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].kind, ProblemKind::WrongType);
    let hint = problems[0].hint.clone().unwrap_or_default();
    assert!(hint.contains("[[phases]]"), "{hint}");

    let src = BASE.replace("[fleet]\n[[fleet.devices]]", "[[fleet]]\n[[fleet.devices]]");
    let problems = problems_of(&src);
    assert!(
        problems.iter().any(|p| p
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("[fleet] (single brackets)")),
        "{problems:#?}"
    );
}

#[test]
fn implicit_parent_tables_are_accepted_and_located() {
    // No [fleet] or [credentials] line: TOML creates those tables implicitly.
    let src = r#"name = "implicit"
[[fleet.devices]]
kind = "door_phone"
per_site = 1
[credentials.visitor]
repeat = "never"
each_door_count = 3
[[phases]]
duration = "1m"
arrivals = "1/s"
[actions]
qr_valid = 1
"#;
    let problems = problems_of(src);
    // The only problem: QR keys are missing (qr_keys_per_door is 0).
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].message.contains("visitor QR keys"));
    let ok = src.replace(
        "[credentials.visitor]",
        "[credentials]\nqr_keys_per_door = 2\n[credentials.visitor]",
    );
    let s = scenario::parse(&ok, "implicit.toml").unwrap();
    assert_eq!(s.credentials.visitor.each_door_count, Some(3));
    assert_eq!(s.fleet.devices.len(), 1);

    // A problem inside an implicit table points at its first key, not line 1.
    let src = "name = \"x\"\n[fleet.lockout]\nmax_wrong = 3\n[[phases]]\nduration = \"1m\"\narrivals = \"1/s\"\n";
    let problems = problems_of(src);
    let missing = problems
        .iter()
        .find(|p| p.message.contains("missing field `devices`"))
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert_eq!(missing.line, 2, "{missing}");
}

/// Every field of the format, set once: the schema, the serde structs and
/// the compiler agree on all of them.
const EVERY_FIELD: &str = r#"
name = "kitchen-sink"
description = "every field"
seed = 5
transport = "inproc"
clock = "virtual"
start_at = "2026-03-27T08:00"

[fleet]
sites = 2
timezones = ["Europe/Berlin", "America/New_York"]
six_digit_pins = true
custom_pins = true
lockout = { max_wrong = 3, window = "30s", locked_for = "1m" }

[[fleet.devices]]
kind = "lock"
model = "ble"
per_site = 3
with = ["keypad", "door_sensor"]
relock_after = "15s"
code_slots = 100
battery_start_pct = 80
battery_drain_pct_per_day = 0.3
battery_pct_per_unlock = 0.01
battery_low_pct = 15
offline_chance_per_hour = 0.01
offline_for = "10m"
sync_every = "1h"
guest = { can_open_remotely = true, prevent_access_until_checked_in = true, revoke_access_on_check_out = true }

[[fleet.devices]]
kind = "door_phone"
per_site = 1

[credentials]
pins_per_door = 6
mix = { permanent = 0.2, temporary = 0.2, recurring = 0.2, delivery = 0.2, stay = 0.2 }
six_digit_share = 0.5
custom_share = 0.1
expired_pins_per_door = 1
cards_per_door = 1
ble_passes_per_door = 1
qr_keys_per_door = 2
fallback_codes_per_lock = 3
temporary = { valid_for = "4h" }
recurring = { days = ["sat", "sun"], window = "22:00-06:00" }
delivery = { valid_for = "30m", max_uses = 0 }
visitor = { repeat = "weekly", valid_for = "7d", days = ["mon"], window = "09:00-17:00" }
stays = { nights = 2, check_in = "16:00", check_out = "10:00", early_arrival_share = 0.1, late_departure_share = 0.2 }

[[phases]]
name = "open"
duration = "1h"
arrivals = { from = "1/m", to = "10/m" }
max_in_flight = 50

[[phases]]
name = "closed"
duration = "1d"
people = 4
think_time = "5m"

[actions]
pin_valid = 0.1
pin_wrong = 0.1
pin_expired = 0.05
qr_valid = 0.1
qr_replayed = 0.05
qr_expired = 0.05
card = 0.1
ble = 0.1
remote_open = 0.1
code_create = 0.05
code_change = 0.05
code_revoke = 0.05
sync_storm = 0.1

[faults]
offline_wave = [{ at = "10m", for = "5m", share = 0.5 }, { at = "2h", for = "1h", share = 1, model = "ble" }]
motor_blocked = 0.01
engine_added_latency = "5ms"

[thresholds]
"check.any.p999" = "<= 1s"
"decisions.false_accept" = "== 0"
"errors.rate" = "< 1%"
"checks.per_s" = ">= 0.001/s"
"#;

#[test]
fn every_field_compiles_to_the_documented_values() {
    use fleetsim::scenario::{Action, Load};
    use reference_server::domain::{Connectivity, Repeat};
    use std::time::Duration;

    let s = scenario::parse(EVERY_FIELD, "every.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.fleet.time_zone_of(1), "America/New_York");
    assert_eq!(s.fleet.lockout.max_wrong, 3);
    assert_eq!(s.fleet.lockout.lockout_s, 60);
    let lock = &s.fleet.devices[0];
    assert_eq!(lock.model, Connectivity::Ble);
    assert_eq!(lock.behaviour.relock_after, Duration::from_secs(15));
    assert_eq!(lock.behaviour.sync_every, Duration::from_secs(3600));
    assert!(lock.behaviour.guest.revoke_access_on_check_out);
    assert_eq!(s.fleet.device_count(), 2 * (3 * 3 + 1));
    assert_eq!(s.credentials.delivery.max_uses, None, "0 means unlimited");
    assert_eq!(s.credentials.visitor.repeat, Repeat::Weekly);
    assert_eq!(s.credentials.visitor.each_door_count, None);
    assert!(s.credentials.recurring.window.end < s.credentials.recurring.window.start);
    assert_eq!(s.credentials.stays.nights, 2);
    assert_eq!(
        s.phases[0].load,
        Load::Open {
            from_per_s: 1.0 / 60.0,
            to_per_s: 10.0 / 60.0,
            max_in_flight: 50
        }
    );
    assert_eq!(
        s.phases[1].load,
        Load::Closed {
            people: 4,
            think_time: Duration::from_secs(300)
        }
    );
    assert_eq!(s.actions.0.len(), 13);
    assert_eq!(s.actions.fraction(Action::SyncStorm), 0.1);
    assert_eq!(s.faults.offline_waves.len(), 2);
    assert_eq!(s.faults.offline_waves[1].model, Some(Connectivity::Ble));
    assert_eq!(s.faults.engine_added_latency, Duration::from_millis(5));
    assert_eq!(s.thresholds[0].metric, "check.any.p999", "file order kept");
    assert_eq!(s.thresholds[0].value, 1000.0);

    // --duration: phases are cut, faults after the end dropped.
    let mut cut = s.clone();
    cut.cap_duration(Duration::from_secs(90 * 60));
    assert_eq!(cut.phases.len(), 2);
    assert_eq!(cut.total_duration(), Duration::from_secs(90 * 60));
    assert_eq!(cut.faults.offline_waves.len(), 1);
}

#[test]
fn readme_documents_every_field_of_the_schema() {
    let readme = std::fs::read_to_string(scenarios_dir().join("README.md")).unwrap();
    let schema = serde_json::to_value(scenario::json_schema()).unwrap();
    let mut names: Vec<String> = Vec::new();
    let mut collect = |props: &serde_json::Value| {
        if let Some(p) = props.as_object() {
            names.extend(p.keys().cloned());
        }
    };
    collect(&schema["properties"]);
    for def in schema["definitions"].as_object().unwrap().values() {
        collect(&def["properties"]);
    }
    // A field (`per_site`, `guest.can_open_remotely`) or a section header
    // ([actions], [[phases]]).
    let missing: Vec<String> = names
        .into_iter()
        .filter(|n| {
            !readme.contains(&format!("`{n}`"))
                && !readme.contains(&format!(".{n}`"))
                && !readme.contains(&format!("{n}]"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "scenarios/README.md does not document {missing:?}"
    );
    for metric in [
        "check.pin",
        "decisions.false_accept",
        "errors.rate",
        "checks.per_s",
    ] {
        assert!(readme.contains(metric), "{metric}");
    }
}

/// Characters scenario text may not hold: C0 (NUL, tab, line breaks,
/// escape), DEL, C1, bidirectional embeddings, overrides and isolates.
const UNSAFE: [char; 14] = [
    '\u{0}', '\t', '\n', '\r', '\u{1B}', '\u{7F}', '\u{85}', '\u{9F}', '\u{202A}', '\u{202D}',
    '\u{202E}', '\u{2066}', '\u{2068}', '\u{2069}',
];

#[test]
fn unsafe_text_is_refused_in_every_string_and_never_shown_raw() {
    for c in UNSAFE {
        // TOML escapes: every one of them can be written in a basic string.
        let esc = format!("\\u{:04X}", u32::from(c));
        let places = [
            (
                "name",
                replace("name = \"t\"", &format!("name = \"a{esc}b\"")),
            ),
            (
                "description",
                replace(
                    "name = \"t\"",
                    &format!("name = \"t\"\ndescription = \"{esc}\""),
                ),
            ),
            (
                "phases[0].name",
                replace("[[phases]]", &format!("[[phases]]\nname = \"p{esc}\"")),
            ),
            (
                "phases[0].duration",
                replace("duration = \"10s\"", &format!("duration = \"10s{esc}\"")),
            ),
            (
                "fleet.devices[0].kind",
                replace("kind = \"lock\"", &format!("kind = \"lock{esc}\"")),
            ),
            (
                "fleet.devices[0].with[0]",
                replace("with = [\"keypad\"]", &format!("with = [\"{esc}\"]")),
            ),
        ];
        for (path, src) in places {
            let err = scenario::parse(&src, "case.toml").expect_err(path);
            let problems = err.problems();
            let p = problems
                .iter()
                .find(|p| p.kind == ProblemKind::UnsafeText)
                .unwrap_or_else(|| panic!("{c:?} in {path}: {problems:#?}"));
            assert_eq!(p.path, path, "{c:?}");
            assert!(
                p.message.contains(&format!("(U+{:04X})", u32::from(c))),
                "{p}"
            );
            // Reported once, and no other check quotes the text back.
            assert_eq!(problems.len(), 1, "{c:?} in {path}: {problems:#?}");
            let hint = p.hint.as_deref().unwrap_or_default();
            for shown in [&p.message, &p.path, hint, &p.source_line] {
                assert!(!shown.contains(c), "{c:?} in {path}: {p:?}");
            }
            // The rendering has line breaks of its own, nothing else.
            if c != '\n' {
                assert!(!err.to_string().contains(c), "{c:?} in {path}: {err}");
            }
        }
    }
}

#[test]
fn printable_unicode_text_is_accepted() {
    let src = replace(
        "name = \"t\"",
        "name = \"Büro Süd – Morgen ☀ 東京\"\ndescription = \"Prüfung: 2 Türen, «ok»\"",
    );
    let s = scenario::parse(&src, "case.toml").unwrap();
    assert_eq!(s.name, "Büro Süd – Morgen ☀ 東京");
}

#[test]
fn raw_bidirectional_controls_in_comments_are_not_echoed_by_the_caret_display() {
    // A comment may hold anything (it reaches nothing); but a problem on
    // that line shows the line, and the terminal must not reorder it.
    let src = replace(
        "per_site = 2",
        "per_site = \"2\" # \u{202E}evil\u{2066} comment",
    );
    let err = scenario::parse(&src, "case.toml").unwrap_err();
    assert_eq!(err.problems().len(), 1, "{err}");
    let p = &err.problems()[0];
    assert_eq!(p.kind, ProblemKind::WrongType);
    assert!(
        p.source_line.contains("\u{FFFD}evil\u{FFFD} comment"),
        "{p:?}"
    );
    let shown = err.to_string();
    assert!(
        !shown.contains('\u{202E}') && !shown.contains('\u{2066}'),
        "{shown}"
    );
}

#[test]
fn the_longest_run_and_the_most_phases_allowed_validate() {
    // 100 phases of 4 days: exactly 400 days, exactly 100 phases.
    let src = replace(
        "[[phases]]\nduration = \"10s\"\narrivals = \"5/s\"\n",
        &"[[phases]]\nduration = \"4d\"\narrivals = \"5/s\"\n".repeat(100),
    );
    let s = scenario::parse(&src, "case.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.phases.len(), scenario::MAX_PHASES);
    assert_eq!(s.total_duration(), scenario::MAX_RUN_DURATION);
}

#[test]
fn the_default_action_mix_points_at_the_fleet_not_the_top_of_the_file() {
    // No [actions] table: everyone types a valid PIN, which needs a keypad.
    // Regression: the problem was placed at 1:1, a line about the name.
    let without_keypad = replace("with = [\"keypad\"]\n", "");
    let implicit_fleet = without_keypad.replace("[fleet]\n", "");
    for (src, line) in [(without_keypad, 3), (implicit_fleet, 2)] {
        let problems = problems_of(&src);
        let p = problems
            .iter()
            .find(|p| p.path == "actions.pin_valid")
            .unwrap_or_else(|| panic!("{problems:#?}"));
        assert!(p.message.contains("with no [actions] table"), "{p}");
        assert_eq!(
            (p.line, p.source_line.as_str()),
            (line, "[[fleet.devices]]"),
            "{p}"
        );
    }
}
