//! Every field scenarios/README.md documents takes effect.
//!
//! The test reads the README's field tables (so a newly documented field
//! without a probe here fails it), and for each field runs a small
//! scenario twice, once as a base and once with that field changed, and
//! asserts that a named output differs: a value in report.json or
//! oracle.json, or what provisioning put into the engine. The few fields
//! no run can show are listed in the README's "What a run cannot show"
//! table with the reason; that table and [`CANNOT`] must agree.
//!
//! Most runs are short in-process runs in virtual time; the transport,
//! clock and broker-outage probes need a few seconds of real time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use fleetsim::run::provision::{self, Provisioning};
use fleetsim::run::{self, RunOptions, Shard};
use reference_server::domain::TokenKey;
use reference_server::{Engine, EngineConfig};
use serde_json::Value;
use toml::Table;

/// Fields no run output can show, with the README saying why.
const CANNOT: &[&str] = &["credentials.custom_share"];

/// The base of every probe: two sites of three Wi-Fi doors (lock, keypad,
/// door sensor), four permanent PINs a door, two hours of valid PINs in
/// virtual time.
const BASE: &str = r#"
name = "knobs"
seed = 5
transport = "inproc"
clock = "virtual"
start_at = "2026-01-05T08:00"

[fleet]
sites = 2
timezone = "UTC"

[[fleet.devices]]
kind = "lock"
per_site = 3
with = ["keypad", "door_sensor"]

[credentials]
pins_per_door = 4

[[phases]]
name = "load"
duration = "2h"
arrivals = "2/m"

[actions]
pin_valid = 1.0
"#;

/// Where a probe looks.
#[derive(Clone, Copy)]
enum Output {
    /// A JSON pointer into report.json.
    Report(&'static str),
    /// A JSON pointer into oracle.json.
    Oracle(&'static str),
    /// What provisioning put into the engine (no run).
    Provisioned(&'static str, fn(&Engine, &Provisioning) -> Value),
}

impl Output {
    fn name(&self) -> String {
        match self {
            Output::Report(p) => format!("report.json {p}"),
            Output::Oracle(p) => format!("oracle.json {p}"),
            Output::Provisioned(what, _) => format!("provisioned: {what}"),
        }
    }
}

type Edit = Box<dyn Fn(&mut Table) + Send + Sync>;

struct Probe {
    /// The field's path as the README documents it.
    field: &'static str,
    /// Turns [`BASE`] into this probe's base.
    base: Edit,
    /// Changes the field.
    change: Edit,
    output: Output,
}

/// Sets `path` (dotted; numbers index arrays) in `t`, making tables on the way.
fn set(t: &mut Table, path: &str, v: impl Into<toml::Value>) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = t;
    for (i, p) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        let next_is_index = parts.get(i + 1).is_some_and(|n| n.parse::<usize>().is_ok());
        if last {
            cur.insert((*p).to_string(), v.into());
            return;
        }
        let entry = cur
            .entry((*p).to_string())
            .or_insert_with(|| toml::Value::Table(Table::new()));
        cur = if next_is_index {
            let idx: usize = parts[i + 1].parse().unwrap();
            let arr = entry.as_array_mut().expect("an array of tables");
            let table = arr[idx].as_table_mut().expect("a table");
            if i + 2 == parts.len() {
                panic!("set: {path} ends in an index");
            }
            // Skip the index segment.
            return set(table, &parts[i + 2..].join("."), v);
        } else {
            entry.as_table_mut().expect("a table")
        };
    }
}

fn del(t: &mut Table, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = t;
    let mut i = 0;
    while i + 1 < parts.len() {
        let v = cur.get_mut(parts[i]).unwrap();
        cur = match parts[i + 1].parse::<usize>() {
            Ok(idx) => {
                i += 1;
                v.as_array_mut().unwrap()[idx].as_table_mut().unwrap()
            }
            Err(_) => v.as_table_mut().unwrap(),
        };
        i += 1;
    }
    cur.remove(parts[parts.len() - 1]);
}

fn table(kv: &[(&str, toml::Value)]) -> toml::Value {
    let mut t = Table::new();
    for (k, v) in kv {
        t.insert((*k).to_string(), v.clone());
    }
    toml::Value::Table(t)
}

fn strs(xs: &[&str]) -> toml::Value {
    toml::Value::Array(xs.iter().map(|x| toml::Value::from(*x)).collect())
}

fn actions(t: &mut Table, mix: &[(&str, f64)]) {
    let kv: Vec<(&str, toml::Value)> = mix.iter().map(|(k, f)| (*k, (*f).into())).collect();
    t.insert("actions".into(), table(&kv));
}

fn group(t: &mut Table, g: toml::Value) {
    t.get_mut("fleet")
        .and_then(|f| f.get_mut("devices"))
        .and_then(|d| d.as_array_mut())
        .unwrap()
        .push(g);
}

fn door_phones(t: &mut Table) {
    group(
        t,
        table(&[("kind", "door_phone".into()), ("per_site", 1.into())]),
    );
}

fn real_clock(t: &mut Table, duration: &str, rate: &str) {
    set(t, "clock", "real");
    del(t, "start_at");
    set(t, "phases.0.duration", duration);
    set(t, "phases.0.arrivals", rate);
}

/// Guest stays: two days, every PIN a stay chain, early and late guests.
fn stays(t: &mut Table) {
    set(t, "phases.0.duration", "2d");
    set(t, "credentials.mix", table(&[("stay", 1.0.into())]));
    set(t, "credentials.stays.early_arrival_share", 1.0);
    set(t, "credentials.stays.late_departure_share", 1.0);
}

fn recurring(t: &mut Table) {
    set(t, "credentials.mix", table(&[("recurring", 1.0.into())]));
}

fn visitors(t: &mut Table) {
    door_phones(t);
    set(t, "credentials.qr_keys_per_door", 2);
}

/// Every credential an action may need, on Wi-Fi doors, an entrance and
/// one Bluetooth door per site.
fn rich(t: &mut Table) {
    visitors(t);
    group(
        t,
        table(&[
            ("kind", "lock".into()),
            ("model", "ble".into()),
            ("per_site", 1.into()),
            ("with", strs(&["keypad"])),
        ]),
    );
    set(t, "credentials.expired_pins_per_door", 1);
    set(t, "credentials.expired_qr_keys_per_door", 1);
    set(t, "credentials.cards_per_door", 1);
    set(t, "credentials.ble_passes_per_door", 1);
}

fn offline_wave(t: &mut Table, at: &str, for_: &str, share: f64) {
    set(
        t,
        "faults.offline_wave",
        table(&[
            ("at", at.into()),
            ("for", for_.into()),
            ("share", share.into()),
        ]),
    );
}

fn probe(
    field: &'static str,
    base: impl Fn(&mut Table) + Send + Sync + 'static,
    change: impl Fn(&mut Table) + Send + Sync + 'static,
    output: Output,
) -> Probe {
    Probe {
        field,
        base: Box::new(base),
        change: Box::new(change),
        output,
    }
}

fn same(_: &mut Table) {}

fn site_settings(e: &Engine, p: &Provisioning) -> Value {
    let s = e.site(p.fleet.sites[0]).unwrap();
    serde_json::json!({
        "six_digit_pins": s.settings.six_digit_pins,
        "custom_pins": s.settings.custom_pins,
    })
}

fn pin_lengths(_: &Engine, p: &Provisioning) -> Value {
    let mut by_len: BTreeMap<usize, u64> = BTreeMap::new();
    for d in &p.doors {
        for id in &d.pins {
            *by_len.entry(p.oracle.truth(*id).text.len()).or_default() += 1;
        }
    }
    serde_json::to_value(by_len).unwrap()
}

fn lock_guest_settings(e: &Engine, p: &Provisioning) -> Value {
    let lock = p.doors[0].plan.lock.unwrap();
    serde_json::to_value(e.device(lock).unwrap().guest).unwrap()
}

fn action_probe(action: &'static str, field: &'static str, output: Output) -> Probe {
    // pin_valid's own probe starts from another action; a replay needs
    // keys that valid scans use up.
    let others: &'static [&'static str] = match action {
        "pin_valid" => &["pin_wrong"],
        "qr_replayed" => &["pin_valid", "qr_valid"],
        _ => &["pin_valid"],
    };
    probe(
        field,
        move |t| {
            rich(t);
            let share = 1.0 / others.len() as f64;
            let mix: Vec<(&str, f64)> = others.iter().map(|o| (*o, share)).collect();
            actions(t, &mix);
        },
        move |t| {
            let share = 1.0 / (others.len() + 1) as f64;
            let mut mix: Vec<(&str, f64)> = others.iter().map(|o| (*o, share)).collect();
            mix.push((action, share));
            actions(t, &mix);
        },
        output,
    )
}

fn probes() -> Vec<Probe> {
    use Output::*;
    let true_grants = Report("/decisions/counts/true_grants");
    let truth_table = Oracle("/oracle/truth_table");
    let offline_max = Oracle("/devices_offline_max");
    let pin_checks = Report("/operations/pin_check/count");
    let battery_min = Oracle("/battery_min_pct");
    let mut v = vec![
        // Top level.
        probe("name", same, |t| set(t, "name", "other"), Report("/name")),
        probe(
            "description",
            same,
            |t| set(t, "description", "another line"),
            Report("/scenario/description"),
        ),
        probe(
            "seed",
            |t| actions(t, &[("pin_valid", 0.5), ("pin_wrong", 0.5)]),
            |t| set(t, "seed", 6),
            Report("/decisions/counts/true_denials"),
        ),
        probe(
            "transport",
            |t| real_clock(t, "2s", "10/s"),
            |t| set(t, "transport", "http"),
            // HTTP has no event route: nothing is logged.
            Report("/health/events_logged_total"),
        ),
        probe(
            "clock",
            |t| {
                set(t, "phases.0.duration", "2s");
                set(t, "phases.0.arrivals", "10/s");
            },
            |t| {
                set(t, "clock", "real");
                del(t, "start_at");
            },
            Report("/latency_simulated"),
        ),
        probe(
            "start_at",
            recurring,
            // A Saturday: the weekday codes do not open.
            |t| set(t, "start_at", "2026-01-10T08:00"),
            true_grants,
        ),
        probe(
            "judge_simulated_latency",
            |t| set(t, "thresholds", table(&[("check.pin.p99", "< 1s".into())])),
            |t| set(t, "judge_simulated_latency", true),
            Report("/thresholds/0/not_judged"),
        ),
        // [fleet]
        probe(
            "fleet.sites",
            same,
            |t| set(t, "fleet.sites", 3),
            Report("/health/devices_total"),
        ),
        probe(
            "fleet.timezone",
            |t| {
                // Two days over the EU DST change: the second day's window
                // opens an hour earlier in Berlin than in UTC.
                recurring(t);
                set(t, "start_at", "2026-03-28T12:00");
                set(t, "phases.0.duration", "2d");
                set(
                    t,
                    "credentials.recurring.days",
                    strs(&["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                );
            },
            |t| set(t, "fleet.timezone", "Europe/Berlin"),
            true_grants,
        ),
        probe(
            "fleet.timezones",
            |t| {
                recurring(t);
                del(t, "fleet.timezone");
                set(t, "fleet.timezones", strs(&["UTC", "UTC"]));
            },
            |t| set(t, "fleet.timezones", strs(&["UTC", "Asia/Tokyo"])),
            true_grants,
        ),
        probe(
            "fleet.six_digit_pins",
            same,
            |t| set(t, "fleet.six_digit_pins", true),
            Provisioned("the sites' PIN settings", site_settings),
        ),
        probe(
            "fleet.custom_pins",
            same,
            |t| set(t, "fleet.custom_pins", true),
            Provisioned("the sites' PIN settings", site_settings),
        ),
        probe(
            "fleet.lockout",
            |t| {
                actions(t, &[("pin_wrong", 1.0)]);
                set(t, "phases.0.arrivals", "30/m");
            },
            |t| {
                set(
                    t,
                    "fleet.lockout",
                    table(&[
                        ("max_wrong", 2.into()),
                        ("window", "60s".into()),
                        ("locked_for", "30s".into()),
                    ]),
                )
            },
            Oracle("/oracle/lockouts"),
        ),
        // [[fleet.devices]]
        probe(
            "fleet.devices.kind",
            same,
            |t| set(t, "fleet.devices.0.kind", "door_phone"),
            Report("/health/devices"),
        ),
        probe(
            "fleet.devices.model",
            |t| actions(t, &[("pin_valid", 0.5), ("remote_open", 0.5)]),
            // Bluetooth locks hear the platform only through a gateway.
            |t| set(t, "fleet.devices.0.model", "ble"),
            Oracle("/actions/remote_open"),
        ),
        probe(
            "fleet.devices.per_site",
            same,
            |t| set(t, "fleet.devices.0.per_site", 4),
            Report("/health/devices_total"),
        ),
        probe(
            "fleet.devices.with",
            same,
            |t| set(t, "fleet.devices.0.with", strs(&["keypad"])),
            Report("/health/devices"),
        ),
        probe(
            "fleet.devices.relock_after",
            same,
            // Unlocked again before the hour is up: fewer relocks.
            |t| set(t, "fleet.devices.0.relock_after", "1h"),
            Report("/health/events_emitted/locked"),
        ),
        probe(
            "fleet.devices.code_slots",
            same,
            |t| set(t, "fleet.devices.0.code_slots", 2),
            Report("/health/events_emitted/code_set_failed"),
        ),
        probe(
            "fleet.devices.battery_start_pct",
            same,
            |t| set(t, "fleet.devices.0.battery_start_pct", 50),
            battery_min,
        ),
        probe(
            "fleet.devices.battery_drain_pct_per_day",
            same,
            |t| set(t, "fleet.devices.0.battery_drain_pct_per_day", 24.0),
            battery_min,
        ),
        probe(
            "fleet.devices.battery_pct_per_unlock",
            same,
            |t| set(t, "fleet.devices.0.battery_pct_per_unlock", 1.0),
            battery_min,
        ),
        probe(
            "fleet.devices.battery_low_pct",
            same,
            |t| set(t, "fleet.devices.0.battery_low_pct", 99.99),
            Oracle("/battery_low_events"),
        ),
        probe(
            "fleet.devices.offline_chance_per_hour",
            same,
            |t| set(t, "fleet.devices.0.offline_chance_per_hour", 0.9),
            offline_max,
        ),
        probe(
            "fleet.devices.offline_for",
            |t| set(t, "fleet.devices.0.offline_chance_per_hour", 0.9),
            |t| set(t, "fleet.devices.0.offline_for", "1h"),
            offline_max,
        ),
        probe(
            "fleet.devices.sync_every",
            |t| {
                set(t, "fleet.devices.0.model", "ble");
                set(t, "fleet.devices.0.sync_every", "10m");
                actions(t, &[("pin_valid", 0.5), ("code_create", 0.5)]);
            },
            // Passes six hours apart: codes created in a 2-hour run are
            // not on the locks by its end.
            |t| set(t, "fleet.devices.0.sync_every", "6h"),
            Report("/health/code_sync/stored"),
        ),
        probe(
            "fleet.devices.guest",
            stays,
            |t| {
                set(
                    t,
                    "fleet.devices.0.guest",
                    table(&[
                        ("prevent_access_until_checked_in", true.into()),
                        ("revoke_access_on_check_out", true.into()),
                    ]),
                )
            },
            Oracle("/oracle/denials"),
        ),
        probe(
            "fleet.devices.guest.can_open_remotely",
            same,
            |t| set(t, "fleet.devices.0.guest.can_open_remotely", true),
            Provisioned("the first lock's guest settings", lock_guest_settings),
        ),
        probe(
            "fleet.devices.guest.prevent_access_until_checked_in",
            stays,
            |t| {
                set(
                    t,
                    "fleet.devices.0.guest.prevent_access_until_checked_in",
                    true,
                )
            },
            Oracle("/oracle/denials/not_checked_in"),
        ),
        probe(
            "fleet.devices.guest.revoke_access_on_check_out",
            stays,
            |t| set(t, "fleet.devices.0.guest.revoke_access_on_check_out", true),
            Oracle("/oracle/denials/checked_out"),
        ),
        // [credentials]
        probe(
            "credentials.pins_per_door",
            same,
            |t| set(t, "credentials.pins_per_door", 6),
            truth_table,
        ),
        probe(
            "credentials.mix",
            same,
            |t| {
                set(
                    t,
                    "credentials.mix",
                    table(&[("permanent", 0.5.into()), ("temporary", 0.5.into())]),
                )
            },
            truth_table,
        ),
        probe(
            "credentials.six_digit_share",
            |t| set(t, "fleet.six_digit_pins", true),
            |t| set(t, "credentials.six_digit_share", 1.0),
            Provisioned("PINs by number of digits", pin_lengths),
        ),
        probe(
            "credentials.expired_pins_per_door",
            same,
            |t| set(t, "credentials.expired_pins_per_door", 2),
            truth_table,
        ),
        probe(
            "credentials.cards_per_door",
            same,
            |t| set(t, "credentials.cards_per_door", 1),
            truth_table,
        ),
        probe(
            "credentials.ble_passes_per_door",
            same,
            |t| set(t, "credentials.ble_passes_per_door", 1),
            truth_table,
        ),
        probe(
            "credentials.qr_keys_per_door",
            door_phones,
            |t| set(t, "credentials.qr_keys_per_door", 2),
            truth_table,
        ),
        probe(
            "credentials.expired_qr_keys_per_door",
            door_phones,
            |t| set(t, "credentials.expired_qr_keys_per_door", 2),
            truth_table,
        ),
        probe(
            "credentials.fallback_codes_per_lock",
            same,
            // The pool codes are stored on the locks too.
            |t| set(t, "credentials.fallback_codes_per_lock", 3),
            Report("/health/events_emitted/code_set"),
        ),
        probe(
            "credentials.temporary.valid_for",
            |t| set(t, "credentials.mix", table(&[("temporary", 1.0.into())])),
            |t| set(t, "credentials.temporary.valid_for", "30m"),
            true_grants,
        ),
        probe(
            "credentials.recurring.days",
            recurring,
            |t| set(t, "credentials.recurring.days", strs(&["sat", "sun"])),
            true_grants,
        ),
        probe(
            "credentials.recurring.window",
            recurring,
            |t| set(t, "credentials.recurring.window", "20:00-22:00"),
            true_grants,
        ),
        probe(
            "credentials.delivery.valid_for",
            |t| {
                set(t, "credentials.mix", table(&[("delivery", 1.0.into())]));
                set(t, "credentials.delivery.max_uses", 0);
            },
            |t| set(t, "credentials.delivery.valid_for", "20m"),
            true_grants,
        ),
        probe(
            "credentials.delivery.max_uses",
            |t| {
                set(t, "credentials.mix", table(&[("delivery", 1.0.into())]));
                set(t, "credentials.delivery.max_uses", 0);
            },
            |t| set(t, "credentials.delivery.max_uses", 1),
            true_grants,
        ),
        probe(
            "credentials.visitor.repeat",
            |t| {
                visitors(t);
                actions(t, &[("qr_valid", 0.5), ("qr_replayed", 0.5)]);
            },
            // A daily key is never used up: nothing to replay.
            |t| set(t, "credentials.visitor.repeat", "daily"),
            Oracle("/actions/qr_replayed"),
        ),
        probe(
            "credentials.visitor.each_door_count",
            |t| {
                visitors(t);
                actions(t, &[("qr_valid", 0.5), ("qr_replayed", 0.5)]);
            },
            |t| set(t, "credentials.visitor.each_door_count", 5),
            Oracle("/actions/qr_replayed"),
        ),
        probe(
            "credentials.visitor.valid_for",
            |t| {
                visitors(t);
                actions(t, &[("qr_valid", 0.5), ("qr_expired", 0.5)]);
            },
            |t| set(t, "credentials.visitor.valid_for", "10m"),
            Oracle("/actions/qr_expired"),
        ),
        probe(
            "credentials.visitor.days",
            |t| {
                visitors(t);
                actions(t, &[("qr_valid", 1.0)]);
                set(t, "credentials.visitor.repeat", "weekly");
            },
            |t| set(t, "credentials.visitor.days", strs(&["sat"])),
            true_grants,
        ),
        probe(
            "credentials.visitor.window",
            |t| {
                visitors(t);
                actions(t, &[("qr_valid", 1.0)]);
                set(t, "credentials.visitor.repeat", "daily");
            },
            |t| set(t, "credentials.visitor.window", "20:00-22:00"),
            true_grants,
        ),
        probe(
            "credentials.stays.nights",
            stays,
            |t| set(t, "credentials.stays.nights", 1),
            truth_table,
        ),
        probe(
            "credentials.stays.check_in",
            stays,
            // The early guests try at other hours: their doors' events move.
            |t| set(t, "credentials.stays.check_in", "22:00"),
            Report("/health/events_emitted_total"),
        ),
        probe(
            "credentials.stays.check_out",
            stays,
            |t| set(t, "credentials.stays.check_out", "06:00"),
            true_grants,
        ),
        probe(
            "credentials.stays.early_arrival_share",
            |t| {
                stays(t);
                set(t, "credentials.stays.early_arrival_share", 0.0);
            },
            |t| set(t, "credentials.stays.early_arrival_share", 1.0),
            Oracle("/actions/stay_early"),
        ),
        probe(
            "credentials.stays.late_departure_share",
            |t| {
                stays(t);
                set(t, "credentials.stays.late_departure_share", 0.0);
            },
            |t| set(t, "credentials.stays.late_departure_share", 1.0),
            Oracle("/actions/stay_late"),
        ),
        // [[phases]]
        probe(
            "phases.name",
            same,
            |t| set(t, "phases.0.name", "renamed"),
            Report("/scenario/phases/0/name"),
        ),
        probe(
            "phases.duration",
            same,
            |t| set(t, "phases.0.duration", "3h"),
            Report("/duration_s"),
        ),
        probe(
            "phases.arrivals",
            same,
            |t| set(t, "phases.0.arrivals", "6/m"),
            pin_checks,
        ),
        probe(
            "phases.arrivals.from",
            |t| {
                set(
                    t,
                    "phases.0.arrivals",
                    table(&[("from", "2/m".into()), ("to", "2/m".into())]),
                )
            },
            |t| set(t, "phases.0.arrivals.from", "20/m"),
            pin_checks,
        ),
        probe(
            "phases.arrivals.to",
            |t| {
                set(
                    t,
                    "phases.0.arrivals",
                    table(&[("from", "2/m".into()), ("to", "2/m".into())]),
                )
            },
            |t| set(t, "phases.0.arrivals.to", "20/m"),
            pin_checks,
        ),
        probe(
            "phases.max_in_flight",
            |t| {
                // Each check takes 30 s: several run at once.
                set(t, "faults.engine_added_latency", "30s");
                set(t, "phases.0.duration", "10m");
                set(t, "phases.0.arrivals", "12/m");
            },
            |t| set(t, "phases.0.max_in_flight", 1),
            Report("/arrivals_behind_schedule"),
        ),
        probe(
            "phases.people",
            |t| {
                del(t, "phases.0.arrivals");
                set(t, "phases.0.people", 1);
                set(t, "phases.0.think_time", "1m");
            },
            |t| set(t, "phases.0.people", 3),
            pin_checks,
        ),
        probe(
            "phases.think_time",
            |t| {
                del(t, "phases.0.arrivals");
                set(t, "phases.0.people", 1);
                set(t, "phases.0.think_time", "1m");
            },
            |t| set(t, "phases.0.think_time", "5m"),
            pin_checks,
        ),
        // [faults]
        probe(
            "faults.broker_outage",
            |t| {
                set(t, "transport", "mqtt");
                real_clock(t, "6s", "5/s");
            },
            |t| {
                set(
                    t,
                    "faults.broker_outage",
                    table(&[("at", "2s".into()), ("for", "2s".into())]),
                )
            },
            Oracle("/mqtt_reconnects"),
        ),
        probe(
            "faults.offline_wave",
            same,
            |t| offline_wave(t, "10m", "10m", 0.5),
            offline_max,
        ),
        probe(
            "faults.motor_blocked",
            same,
            |t| set(t, "faults.motor_blocked", 0.5),
            Oracle("/motor_blocked"),
        ),
        probe(
            "faults.engine_added_latency",
            same,
            |t| set(t, "faults.engine_added_latency", "200ms"),
            Report("/operations/pin_check/latency/p50_us"),
        ),
        probe(
            "faults.window.at",
            |t| offline_wave(t, "10m", "1h", 1.0),
            // Half the wave falls after the run's end (the devices are
            // back online at the end either way): fewer checks fail.
            |t| set(t, "faults.offline_wave.at", "1h30m"),
            true_grants,
        ),
        probe(
            "faults.window.for",
            |t| offline_wave(t, "1h30m", "10m", 1.0),
            |t| set(t, "faults.offline_wave.for", "1h"),
            true_grants,
        ),
        probe(
            "faults.offline_wave.share",
            |t| offline_wave(t, "10m", "10m", 0.25),
            |t| set(t, "faults.offline_wave.share", 0.75),
            offline_max,
        ),
        probe(
            "faults.offline_wave.model",
            |t| {
                group(
                    t,
                    table(&[
                        ("kind", "lock".into()),
                        ("model", "ble".into()),
                        ("per_site", 1.into()),
                    ]),
                );
                offline_wave(t, "10m", "10m", 1.0);
            },
            |t| set(t, "faults.offline_wave.model", "ble"),
            offline_max,
        ),
    ];
    // [actions]: each action shows up in the attempts made.
    for (action, field) in [
        ("pin_valid", "actions.pin_valid"),
        ("pin_wrong", "actions.pin_wrong"),
        ("pin_expired", "actions.pin_expired"),
        ("qr_valid", "actions.qr_valid"),
        ("qr_replayed", "actions.qr_replayed"),
        ("qr_expired", "actions.qr_expired"),
        ("card", "actions.card"),
        ("ble", "actions.ble"),
        ("sync_storm", "actions.sync_storm"),
    ] {
        let output = match action {
            "pin_valid" => Oracle("/actions/pin_valid"),
            "pin_wrong" => Oracle("/actions/pin_wrong"),
            "pin_expired" => Oracle("/actions/pin_expired"),
            "qr_valid" => Oracle("/actions/qr_valid"),
            "qr_replayed" => Oracle("/actions/qr_replayed"),
            "qr_expired" => Oracle("/actions/qr_expired"),
            "card" => Oracle("/actions/card"),
            "ble" => Oracle("/actions/ble"),
            _ => Oracle("/actions/sync_storm"),
        };
        v.push(action_probe(action, field, output));
    }
    v.push(action_probe(
        "remote_open",
        "actions.remote_open",
        Report("/operations/remote_open/count"),
    ));
    for (action, field) in [
        ("code_create", "actions.code_create"),
        ("code_change", "actions.code_change"),
        ("code_revoke", "actions.code_revoke"),
    ] {
        v.push(action_probe(
            action,
            field,
            Report("/health/code_sync_total"),
        ));
    }
    v
}

/// The fields the README's tables document, as dotted paths, and the
/// fields its "What a run cannot show" table lists.
fn readme_fields() -> (BTreeSet<String>, BTreeSet<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/README.md");
    let text = std::fs::read_to_string(path).unwrap();
    let ticked = |s: &str| -> Vec<String> {
        s.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut fields = BTreeSet::new();
    let mut cannot = BTreeSet::new();
    let mut heading = String::new();
    let mut header: Option<Vec<String>> = None;
    let mut sub_table = String::new();
    for line in text.lines() {
        if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_string();
            header = None;
            continue;
        }
        if !line.starts_with('|') {
            header = None;
            continue;
        }
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        let Some(h) = &header else {
            header = Some(cells);
            sub_table.clear();
            continue;
        };
        if cells.iter().all(|c| c.chars().all(|ch| "-: ".contains(ch))) {
            continue;
        }
        if heading.starts_with("What a run cannot show") {
            cannot.extend(ticked(&cells[0]));
            continue;
        }
        // The section's table: `[fleet]`, `[[fleet.devices]]`, ...
        let section = ticked(&heading)
            .into_iter()
            .find(|t| t.starts_with('['))
            .map(|t| format!("{}.", t.trim_matches(|c| c == '[' || c == ']')))
            .unwrap_or_default();
        let names: Vec<String> = match h[0].as_str() {
            "field" => ticked(&cells[0])
                .into_iter()
                .map(|f| format!("{section}{f}"))
                .collect(),
            "action" => ticked(&cells[0])
                .into_iter()
                .map(|f| format!("actions.{f}"))
                .collect(),
            // `[credentials.temporary]` | `valid_for`: an empty first
            // cell continues the table above.
            "table" => {
                if let Some(t) = ticked(&cells[0]).first() {
                    sub_table = format!("{}.", t.trim_matches(|c| c == '[' || c == ']'));
                }
                ticked(&cells[1])
                    .into_iter()
                    .map(|f| format!("{sub_table}{f}"))
                    .collect()
            }
            // `at` and `for` belong to every fault window.
            "in a fault window" => ticked(&cells[0])
                .into_iter()
                .map(|f| match f.contains('.') {
                    true => format!("{section}{f}"),
                    false => format!("{section}window.{f}"),
                })
                .collect(),
            _ => continue,
        };
        fields.extend(names);
    }
    (fields, cannot)
}

struct Outputs {
    report: Value,
    oracle: Value,
}

fn options(s: &fleetsim::scenario::Scenario, dir: &Path) -> RunOptions {
    RunOptions {
        seed: s.seed.unwrap_or(1),
        transport: s.transport,
        broker: None,
        target: None,
        report_dir: dir.to_path_buf(),
        metrics_addr: None,
        shard: Shard::WHOLE,
        run_id: "test".into(),
        reproduce: String::new(),
        fleet: None,
    }
}

fn parse(text: &str) -> fleetsim::scenario::Scenario {
    fleetsim::scenario::parse(text, "knobs.toml")
        .unwrap_or_else(|e| panic!("{e}\n--- scenario:\n{text}"))
}

fn run_scenario(text: &str) -> Outputs {
    let s = parse(text);
    let tmp = tempfile::tempdir().unwrap();
    run::execute(&s, &options(&s, tmp.path()))
        .unwrap_or_else(|e| panic!("run error: {e}\n--- scenario:\n{text}"));
    let read = |f: &str| -> Value {
        serde_json::from_slice(&std::fs::read(tmp.path().join(f)).unwrap()).unwrap()
    };
    Outputs {
        report: read("report.json"),
        oracle: read("oracle.json"),
    }
}

fn provisioned(text: &str, f: fn(&Engine, &Provisioning) -> Value) -> Value {
    let s = parse(text);
    let mut e = Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([7; 32]),
        seed: 1,
    });
    let p = provision::provision(&mut e, &s, 1, provision::start_time(&s)).unwrap();
    f(&e, &p)
}

fn scenario_text(edits: &[&Edit]) -> String {
    let mut t: Table = toml::from_str(BASE).unwrap();
    for e in edits {
        e(&mut t);
    }
    toml::to_string(&t).unwrap()
}

#[test]
fn every_documented_field_changes_a_named_output() {
    let (documented, cannot) = readme_fields();
    let probes = probes();
    assert!(
        documented.len() > 60,
        "the README parser found {documented:?}"
    );
    assert_eq!(
        cannot,
        CANNOT.iter().map(|s| s.to_string()).collect(),
        "scenarios/README.md's \"What a run cannot show\" table and CANNOT differ"
    );
    let probed: BTreeSet<String> = probes.iter().map(|p| p.field.to_string()).collect();
    let missing: Vec<&String> = documented
        .iter()
        .filter(|f| !probed.contains(*f) && !cannot.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "documented fields without a probe (add one, or say in the README why no run can show them): {missing:?}"
    );
    let stale: Vec<&String> = probed.iter().filter(|f| !documented.contains(*f)).collect();
    assert!(stale.is_empty(), "probes of undocumented fields: {stale:?}");

    // Every distinct scenario runs once, on two threads.
    let mut texts: Vec<String> = Vec::new();
    for p in &probes {
        if let Output::Provisioned(..) = p.output {
            continue;
        }
        for t in [
            scenario_text(&[&p.base]),
            scenario_text(&[&p.base, &p.change]),
        ] {
            if !texts.contains(&t) {
                texts.push(t);
            }
        }
    }
    let results: Arc<Mutex<BTreeMap<String, Arc<Outputs>>>> = Arc::default();
    let queue = Arc::new(Mutex::new(texts));
    std::thread::scope(|sc| {
        for _ in 0..2 {
            let (queue, results) = (queue.clone(), results.clone());
            sc.spawn(move || loop {
                let Some(t) = queue.lock().unwrap().pop() else {
                    return;
                };
                let out = run_scenario(&t);
                results.lock().unwrap().insert(t, Arc::new(out));
            });
        }
    });
    let results = results.lock().unwrap();
    let mut unchanged = Vec::new();
    for p in &probes {
        let base = scenario_text(&[&p.base]);
        let changed = scenario_text(&[&p.base, &p.change]);
        assert_ne!(base, changed, "{}: the change edits nothing", p.field);
        let value = |text: &String| -> Value {
            match p.output {
                Output::Report(ptr) => results[text].report.pointer(ptr).cloned(),
                Output::Oracle(ptr) => results[text].oracle.pointer(ptr).cloned(),
                Output::Provisioned(_, f) => Some(provisioned(text, f)),
            }
            .unwrap_or(Value::Null)
        };
        let (a, b) = (value(&base), value(&changed));
        if a == b {
            unchanged.push(format!("{}: {} stays {a}", p.field, p.output.name()));
        }
    }
    assert!(
        unchanged.is_empty(),
        "fields whose change changed nothing:\n{}",
        unchanged.join("\n")
    );
}
