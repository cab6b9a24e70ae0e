//! Whatever text arrives, the scenario parser answers with a scenario or
//! with problems; it never panics.

use fleetsim::scenario;
use proptest::prelude::*;

const SMOKE: &str = include_str!("../../scenarios/smoke.toml");

/// Keys and values that look like scenario files, to reach deep paths.
fn toml_ish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "seed",
        "transport",
        "clock",
        "sites",
        "timezone",
        "kind",
        "per_site",
        "with",
        "duration",
        "arrivals",
        "people",
        "pin_valid",
        "pin_wrong",
        "at",
        "for",
        "share",
        "\"check.pin.p99\"",
        "from",
        "to",
        "mix",
        "days",
        "window",
    ]);
    let value = prop::sample::select(vec![
        "1",
        "-1",
        "0.5",
        "1e308",
        "\"2m\"",
        "\"10/s\"",
        "\"< 25ms\"",
        "\"lock\"",
        "true",
        "[\"keypad\"]",
        "{ from = \"1/s\", to = \"x\" }",
        "{}",
        "[]",
        "\"\"",
        "1979-05-27T07:32:00Z",
        "\"Europe/Berlin\"",
        "99999999999",
        "\"mon\"",
        "\"08:00-18:00\"",
    ]);
    let header = prop::sample::select(vec![
        "",
        "[fleet]",
        "[[fleet.devices]]",
        "[[phases]]",
        "[actions]",
        "[faults]",
        "[thresholds]",
        "[credentials]",
        "[credentials.visitor]",
        "[fleet.lockout]",
    ]);
    prop::collection::vec((header, key, value), 0..20).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(h, k, v)| format!("{h}\n{k} = {v}\n"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = scenario::parse(&s, "fuzz.toml");
    }

    #[test]
    fn toml_ish_text_never_panics(s in toml_ish()) {
        let _ = scenario::parse(&s, "fuzz.toml");
    }

    #[test]
    fn damaged_scenarios_never_panic(cut in 0..SMOKE.len(), len in 0..40usize, junk in "\\PC{0,8}") {
        // Replace a slice of a real scenario with junk, on char boundaries.
        let start = (0..=cut).rev().find(|i| SMOKE.is_char_boundary(*i)).unwrap();
        let end = (start + len).min(SMOKE.len());
        let end = (end..=SMOKE.len()).find(|i| SMOKE.is_char_boundary(*i)).unwrap();
        let s = format!("{}{}{}", &SMOKE[..start], junk, &SMOKE[end..]);
        if let Err(e) = scenario::parse(&s, "fuzz.toml") {
            // Every problem points inside the text.
            for p in e.problems() {
                prop_assert!(p.line >= 1 && p.line <= s.lines().count().max(1) + 1);
                prop_assert!(p.col >= 1);
            }
        }
    }
}
