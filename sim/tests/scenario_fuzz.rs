//! Whatever text arrives, the scenario parser (the library path of
//! `fleetsim validate` and `run`) answers with a scenario or with problems;
//! it never panics, and every problem has a place: a line and column inside
//! the text, the text of that line, and a field path (only a TOML syntax
//! error may lack one).
//!
//! Inputs: arbitrary text, lines that look like scenario files, random
//! TOML documents built from the format's own keys and values, and every
//! shipped scenario damaged (a slice replaced, a line dropped, doubled or
//! given another value). 10,000 cases per property; `PROPTEST_CASES=N`
//! runs N (README, "Testing").

#[path = "../../reference-server/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fleetsim::scenario::{self, ProblemKind, ScenarioError};
use fuzz_support::config;
use proptest::prelude::*;

const SMOKE: &str = include_str!("../../scenarios/smoke.toml");

/// Every shipped scenario (their first line is a comment).
const SHIPPED: [&str; 7] = [
    include_str!("../../scenarios/battery-30-days.toml"),
    include_str!("../../scenarios/broker-outage.toml"),
    include_str!("../../scenarios/brute-force.toml"),
    include_str!("../../scenarios/courier-burst.toml"),
    include_str!("../../scenarios/office-morning-rush.toml"),
    SMOKE,
    include_str!("../../scenarios/vacation-rental-turnover.toml"),
];

/// Keys of the format, at every level.
const KEYS: &[&str] = &[
    "name",
    "description",
    "seed",
    "transport",
    "clock",
    "start_at",
    "sites",
    "timezone",
    "timezones",
    "six_digit_pins",
    "custom_pins",
    "lockout",
    "max_wrong",
    "locked_for",
    "kind",
    "model",
    "per_site",
    "with",
    "relock_after",
    "code_slots",
    "battery_start_pct",
    "battery_low_pct",
    "offline_chance_per_hour",
    "offline_for",
    "sync_every",
    "guest",
    "can_open_remotely",
    "pins_per_door",
    "mix",
    "permanent",
    "temporary",
    "recurring",
    "delivery",
    "stay",
    "six_digit_share",
    "custom_share",
    "expired_pins_per_door",
    "cards_per_door",
    "ble_passes_per_door",
    "qr_keys_per_door",
    "fallback_codes_per_lock",
    "valid_for",
    "max_uses",
    "visitor",
    "repeat",
    "each_door_count",
    "stays",
    "nights",
    "check_in",
    "check_out",
    "early_arrival_share",
    "duration",
    "arrivals",
    "people",
    "think_time",
    "max_in_flight",
    "pin_valid",
    "pin_wrong",
    "pin_expired",
    "qr_valid",
    "qr_replayed",
    "card",
    "ble",
    "remote_open",
    "code_create",
    "sync_storm",
    "broker_outage",
    "offline_wave",
    "motor_blocked",
    "engine_added_latency",
    "at",
    "for",
    "share",
    "from",
    "to",
    "days",
    "window",
    "\"check.pin.p99\"",
    "\"errors.rate\"",
    "\"decisions.false_accept\"",
    "per_sit",
];

/// Values of the format, good and bad.
const VALUES: &[&str] = &[
    "1",
    "0",
    "-1",
    "0.5",
    "1e308",
    "nan",
    "inf",
    "99999999999",
    "9223372036854775807",
    "true",
    "\"2m\"",
    "\"366d\"",
    "\"367d\"",
    "\"0s\"",
    "\"1h30m\"",
    "\"10/s\"",
    "\"0/s\"",
    "\"fast\"",
    "\"< 25ms\"",
    "\"== 0\"",
    "\"lock\"",
    "\"keypad\"",
    "\"door_phone\"",
    "\"ble\"",
    "\"mqtt\"",
    "\"virtual\"",
    "\"never\"",
    "\"weekly\"",
    "\"mon\"",
    "\"08:00-18:00\"",
    "\"25:00\"",
    "\"Europe/Berlin\"",
    "\"Europe/Berln\"",
    "\"2026-03-27T08:00\"",
    "1979-05-27T07:32:00Z",
    "\"\"",
    "\"../../escaped\"",
    "\"a\\u0000b\"",
    "\"\u{202E}x\"",
    "\"\\t\"",
    "[\"keypad\"]",
    "[\"keypad\", \"keypad\"]",
    "[]",
    "{}",
    "{ from = \"1/s\", to = \"x\" }",
    "{ at = \"1s\", for = \"1s\" }",
    "{ at = \"1s\", for = \"1s\", share = 2 }",
    "[{ at = \"1s\", for = \"1s\", share = 0.5 }]",
    "{ permanent = 0.5, stay = 0.5 }",
];

const HEADERS: &[&str] = &[
    "",
    "[fleet]",
    "[[fleet.devices]]",
    "[fleet.lockout]",
    "[[phases]]",
    "[phases]",
    "[actions]",
    "[faults]",
    "[thresholds]",
    "[credentials]",
    "[credentials.mix]",
    "[credentials.visitor]",
    "[credentials.stays]",
    "[[fleet.devices.guest]]",
];

/// Keys and values that look like scenario files, to reach deep paths.
fn toml_ish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(KEYS.to_vec());
    let value = prop::sample::select(VALUES.to_vec());
    let header = prop::sample::select(HEADERS.to_vec());
    prop::collection::vec((header, key, value), 0..20).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(h, k, v)| format!("{h}\n{k} = {v}\n"))
            .collect()
    })
}

/// A TOML value built from the format's words, nested.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        prop::sample::select(VALUES.to_vec())
            .prop_map(|v| toml::Value::String(v.trim_matches('"').to_string())),
        "\\PC{0,10}".prop_map(toml::Value::String),
    ];
    leaf.prop_recursive(3, 40, 6, |inner| {
        let key = prop::sample::select(KEYS.to_vec()).prop_map(|k| k.trim_matches('"').to_string());
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A random TOML document: top-level keys of the format, each with a
/// random value (tables and arrays of tables included).
fn toml_document() -> impl Strategy<Value = String> {
    let top = prop::sample::select(vec![
        "name",
        "description",
        "seed",
        "transport",
        "clock",
        "start_at",
        "fleet",
        "credentials",
        "phases",
        "actions",
        "faults",
        "thresholds",
    ]);
    prop::collection::btree_map(top, toml_value(), 0..10).prop_map(|m| {
        let table: toml::Table = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        toml::to_string(&table).unwrap_or_default()
    })
}

/// One way to damage a file, after its first line.
#[derive(Clone, Debug)]
enum Damage {
    /// Replace `len` bytes at `at` with junk.
    Splice { at: usize, len: usize, junk: String },
    /// Drop line `n`.
    DropLine(usize),
    /// Write line `n` twice.
    DoubleLine(usize),
    /// Give the key on line `n` another value.
    Revalue(usize, &'static str),
    /// Put another key on line `n`.
    Rekey(usize, &'static str),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0usize..40, "\\PC{0,8}").prop_map(|(at, len, junk)| Damage::Splice {
            at,
            len,
            junk
        }),
        any::<usize>().prop_map(Damage::DropLine),
        any::<usize>().prop_map(Damage::DoubleLine),
        (any::<usize>(), prop::sample::select(VALUES.to_vec()))
            .prop_map(|(n, v)| Damage::Revalue(n, v)),
        (any::<usize>(), prop::sample::select(KEYS.to_vec()))
            .prop_map(|(n, k)| Damage::Rekey(n, k)),
    ]
}

fn damaged(src: &str, d: &Damage) -> String {
    let first_end = src.find('\n').map_or(src.len(), |i| i + 1);
    let (first, rest) = src.split_at(first_end);
    let mut lines: Vec<String> = rest.lines().map(str::to_string).collect();
    let n_lines = lines.len().max(1);
    match d {
        Damage::Splice { at, len, junk } => {
            let floor = |i: usize| {
                (0..=i)
                    .rev()
                    .find(|j| rest.is_char_boundary(*j))
                    .unwrap_or(0)
            };
            let start = floor(at % (rest.len() + 1));
            let end = floor((start + len).min(rest.len())).max(start);
            return format!("{first}{}{junk}{}", &rest[..start], &rest[end..]);
        }
        Damage::DropLine(n) if !lines.is_empty() => {
            lines.remove(n % n_lines);
        }
        Damage::DoubleLine(n) if !lines.is_empty() => {
            let l = lines[n % n_lines].clone();
            lines.insert(n % n_lines, l);
        }
        Damage::Revalue(n, v) if !lines.is_empty() => {
            let l = &mut lines[n % n_lines];
            if let Some((k, _)) = l.split_once(" = ") {
                *l = format!("{k} = {v}");
            }
        }
        Damage::Rekey(n, k) if !lines.is_empty() => {
            let l = &mut lines[n % n_lines];
            if let Some((_, v)) = l.split_once(" = ") {
                *l = format!("{k} = {v}");
            }
        }
        _ => {}
    }
    format!("{first}{}\n", lines.join("\n"))
}

/// Every problem has a place: inside the text, with that line's text,
/// and a field path unless it is about the TOML syntax.
fn located(src: &str, e: &ScenarioError) -> Result<(), TestCaseError> {
    let problems = e.problems();
    prop_assert!(!problems.is_empty(), "an invalid file with no problem: {e}");
    let lines: Vec<&str> = src.split('\n').collect();
    for p in problems {
        prop_assert!(p.line >= 1 && p.line <= lines.len(), "{p:?}");
        let line = lines[p.line - 1].trim_end_matches('\r');
        prop_assert!(p.col >= 1 && p.col <= line.chars().count() + 1, "{p:?}");
        // The line shown is the file's, with unprintable characters
        // replaced one for one.
        prop_assert_eq!(
            p.source_line.chars().count(),
            line.chars().count(),
            "{:?}",
            p
        );
        let same = p
            .source_line
            .chars()
            .zip(line.chars())
            .all(|(shown, real)| shown == real || shown == '\u{FFFD}');
        prop_assert!(same, "{p:?}");
        prop_assert!(
            !p.path.is_empty() || p.kind == ProblemKind::Syntax,
            "a problem with no field path: {p:?}"
        );
        prop_assert!(!p.message.is_empty(), "{p:?}");
        prop_assert!(
            p.kind == ProblemKind::Syntax || p.hint.as_deref().is_some_and(|h| !h.is_empty()),
            "a problem with no hint: {p:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        if let Err(e) = scenario::parse(&s, "fuzz.toml") {
            located(&s, &e)?;
        }
    }

    #[test]
    fn toml_ish_text_never_panics(s in toml_ish()) {
        if let Err(e) = scenario::parse(&s, "fuzz.toml") {
            located(&s, &e)?;
        }
    }

    #[test]
    fn random_toml_documents_are_located(s in toml_document()) {
        if let Err(e) = scenario::parse(&s, "fuzz.toml") {
            located(&s, &e)?;
        }
    }

    #[test]
    fn damaged_scenarios_never_panic(cut in 0..SMOKE.len(), len in 0..40usize, junk in "\\PC{0,8}") {
        // Replace a slice of a real scenario with junk, on char boundaries.
        let start = (0..=cut).rev().find(|i| SMOKE.is_char_boundary(*i)).unwrap();
        let end = (start + len).min(SMOKE.len());
        let end = (end..=SMOKE.len()).find(|i| SMOKE.is_char_boundary(*i)).unwrap();
        let s = format!("{}{}{}", &SMOKE[..start], junk, &SMOKE[end..]);
        if let Err(e) = scenario::parse(&s, "fuzz.toml") {
            located(&s, &e)?;
        }
    }

    /// Every shipped scenario, damaged after its first line (a comment):
    /// a problem placed on line 1 would be one without a real place,
    /// except a required field missing from the file as a whole.
    #[test]
    fn damaged_shipped_scenarios_are_located(
        file in 0..SHIPPED.len(),
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let mut s = SHIPPED[file].to_string();
        for d in &damages {
            s = damaged(&s, d);
        }
        if let Err(e) = scenario::parse(&s, "fuzz.toml") {
            located(&s, &e)?;
            for p in e.problems() {
                let whole_file = p.kind == ProblemKind::Syntax
                    || (p.kind == ProblemKind::MissingField && !p.path.contains(['.', '[']));
                prop_assert!(p.line > 1 || whole_file, "placed at the top: {p:?}\n{s}");
            }
        }
    }
}
