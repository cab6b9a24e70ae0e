//! The oracle against a real engine: it must count a false accept when the
//! engine grants something the truth table says must be denied, and keep
//! counting true decisions otherwise. The extra code is provisioned in the
//! engine behind the truth table's back, as a bug or a stale code would be.

use fleetsim::run::oracle::{Attempt, Expected, TruthKind};
use fleetsim::run::provision;
use jiff::Timestamp;
use reference_server::domain::{Actor, FloorScope, HolderKind, Pin, Schedule, TokenKey};
use reference_server::engine::{Command, Issue, Outcome, PinSpec, SecretSpec};
use reference_server::{Check, Engine, EngineConfig, Presented};

const SCENARIO: &str = r#"
name = "oracle-check"
description = "one door phone per site"
clock = "virtual"

[fleet]
sites = 1

[[fleet.devices]]
kind = "door_phone"
per_site = 1

[credentials]
pins_per_door = 3
mix = { permanent = 1.0 }

[[phases]]
name = "p"
duration = "1s"
arrivals = "1/s"

[actions]
pin_valid = 0.5
pin_wrong = 0.5
"#;

fn decide(
    engine: &Engine,
    device: reference_server::domain::DeviceId,
    pin: &str,
    now: Timestamp,
) -> Expected {
    let d = engine.validate(
        &Check {
            device,
            presented: Presented::Pin(Pin::parse(pin).unwrap()),
            floor: None,
        },
        now,
    );
    match d.reason() {
        None => Expected::Granted,
        Some(r) => Expected::Denied(r),
    }
}

#[test]
fn a_code_the_truth_table_does_not_know_is_a_false_accept_when_the_engine_grants_it() {
    let s = fleetsim::scenario::parse(SCENARIO, "oracle-check.toml").unwrap();
    let mut engine = Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([3; 32]),
        seed: 5,
    });
    let now = provision::start_time(&s);
    let mut p = provision::provision(&mut engine, &s, 5, now).unwrap();
    let door = &p.doors[0];
    let phone = door.plan.door_phone.unwrap();

    // A PIN the truth table knows: the engine grants it, a true grant.
    let known = p.oracle.truth(door.pins[0]).text.clone();
    let attempt = |truth, action| Attempt {
        device: phone,
        door: door.door,
        action,
        kind: TruthKind::Pin,
        truth,
        keypad: true,
    };
    let got = decide(&engine, phone, &known, now);
    p.oracle
        .judge(&attempt(Some(door.pins[0]), "pin_valid"), got, now, now);
    assert_eq!(p.oracle.verdicts.true_grants, 1);

    // A code issued in the engine only. The truth table says it is no code
    // of this door, so a person typing it must be denied (wrong PIN).
    let rogue = "2580";
    assert!(!p.oracle.pin_known(door.door, rogue));
    let holder = match engine
        .apply(
            &Actor::System,
            Command::CreateHolder {
                org: p.fleet.org,
                name: "Nobody".into(),
                kind: HolderKind::Member,
                user: None,
                floors: FloorScope::Any,
            },
            now,
        )
        .unwrap()
        .outcome
    {
        Outcome::Holder(h) => h,
        other => panic!("{other:?}"),
    };
    engine
        .apply(
            &Actor::System,
            Command::IssueCredential(Issue {
                holder,
                name: "Rogue".into(),
                secret: SecretSpec::Pin {
                    pin: PinSpec::Manual(rogue.into()),
                },
                schedule: Schedule::Permanent,
                doors: vec![door.door],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
            now,
        )
        .unwrap();
    let got = decide(&engine, phone, rogue, now);
    assert_eq!(got, Expected::Granted, "the engine grants the rogue code");
    p.oracle.judge(&attempt(None, "pin_wrong"), got, now, now);
    assert_eq!(p.oracle.verdicts.false_accepts, 1);
    let ex = &p.oracle.false_accept_examples[0];
    assert_eq!(ex.action, "pin_wrong");
    assert_eq!(ex.device, phone.0);
    assert_eq!(ex.expected, "denied:wrong_pin");
    assert_eq!(ex.actual, "granted");

    // A wrong PIN the engine really denies is a true denial.
    let got = decide(&engine, phone, "9157", now);
    p.oracle.judge(&attempt(None, "pin_wrong"), got, now, now);
    assert_eq!(p.oracle.verdicts.true_denials, 1);
    assert_eq!(p.oracle.verdicts.false_accepts, 1);
}

#[test]
fn the_oracle_models_keypad_lockout_with_the_sites_policy() {
    let s = fleetsim::scenario::parse(SCENARIO, "oracle-check.toml").unwrap();
    let mut engine = Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([3; 32]),
        seed: 5,
    });
    let now = provision::start_time(&s);
    let mut p = provision::provision(&mut engine, &s, 5, now).unwrap();
    let door = p.doors[0].clone();
    let phone = door.plan.door_phone.unwrap();
    let a = |truth, action| Attempt {
        device: phone,
        door: door.door,
        action,
        kind: TruthKind::Pin,
        truth,
        keypad: true,
    };
    // Default policy: 5 wrong within 60 s lock the pad for 30 s.
    for i in 0..5 {
        let t = now + jiff::SignedDuration::from_secs(i);
        let got = decide(&engine, phone, "9157", t);
        p.oracle.judge(&a(None, "pin_wrong"), got, t, t);
    }
    let t = now + jiff::SignedDuration::from_secs(6);
    let valid = p.oracle.truth(door.pins[0]).text.clone();
    assert_eq!(
        p.oracle.expect(&a(Some(door.pins[0]), "pin_valid"), t),
        Expected::Denied(reference_server::domain::DenyReason::LockedOut)
    );
    let got = decide(&engine, phone, &valid, t);
    p.oracle
        .judge(&a(Some(door.pins[0]), "pin_valid"), got, t, t);
    assert_eq!(p.oracle.lockouts, 1);
    assert_eq!(
        p.oracle.verdicts.false_accepts + p.oracle.verdicts.false_rejects,
        0
    );
    assert_eq!(p.oracle.verdicts.true_denials, 6);
}

const STAYS: &str = r#"
name = "stays-dst"
description = "guest stays across the EU clock change"
clock = "virtual"
start_at = "2026-03-26T00:00"

[fleet]
sites = 2
timezone = "Europe/Berlin"

[[fleet.devices]]
kind = "lock"
model = "wifi"
per_site = 1
with = ["keypad"]
guest = { prevent_access_until_checked_in = true, revoke_access_on_check_out = true }

[[fleet.devices]]
kind = "lock"
model = "wifi"
per_site = 1
with = ["keypad"]

[credentials]
pins_per_door = 3
mix = { stay = 1.0 }

[credentials.stays]
nights = 2
check_in = "15:00"
check_out = "11:00"

[[phases]]
name = "p"
duration = "6d"
arrivals = "1/h"

[actions]
pin_valid = 1.0
"#;

#[test]
fn guest_stays_keep_local_times_across_the_clock_change_and_the_engine_agrees() {
    let s = fleetsim::scenario::parse(STAYS, "stays-dst.toml").unwrap();
    let mut engine = Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([3; 32]),
        seed: 5,
    });
    let now = provision::start_time(&s);
    let p = provision::provision(&mut engine, &s, 5, now).unwrap();
    // The keypads store their codes (as a sync would).
    for door in &p.doors {
        let keypad = door.plan.keypad.unwrap();
        let batch = engine.pending_sync(keypad).unwrap();
        let results = batch
            .set
            .iter()
            .map(|(credential, _)| reference_server::engine::SyncResult {
                credential: *credential,
                failure: None,
            })
            .collect();
        let ack = Command::SyncAck {
            device: keypad,
            results,
        };
        engine.apply(&Actor::System, ack, now).unwrap();
    }
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    assert!(p.stays.len() >= 2 * 2 * 3 * 3, "{} stays", p.stays.len());
    let mut across_dst = 0;
    for st in &p.stays {
        // 15:00 and 11:00 local, summer time or not (29 March 2026).
        let (i, o) = (tz.to_datetime(st.check_in), tz.to_datetime(st.check_out));
        assert_eq!((i.hour(), i.minute()), (15, 0));
        assert_eq!((o.hour(), o.minute()), (11, 0));
        let offsets = (tz.to_offset(st.check_in), tz.to_offset(st.check_out));
        across_dst += usize::from(offsets.0 != offsets.1);
        let door = &p.doors[st.door];
        let keypad = door.plan.keypad.unwrap();
        let pin = p.oracle.truth(st.truth).text.clone();
        let hour = jiff::SignedDuration::from_hours(1);
        for at in [
            st.check_in - hour,
            st.check_in,
            st.check_out - hour,
            st.check_out,
        ] {
            let attempt = Attempt {
                device: keypad,
                door: door.door,
                action: "pin_valid",
                kind: TruthKind::Pin,
                truth: Some(st.truth),
                keypad: true,
            };
            // A stay that began before provisioning was checked in then.
            if st.checked_in && at < now {
                continue;
            }
            assert_eq!(
                decide(&engine, keypad, &pin, at),
                p.oracle.expect(&attempt, at),
                "stay {:?} at {at}",
                st.stay
            );
        }
    }
    assert!(across_dst > 0, "no stay spans the clock change");
}
