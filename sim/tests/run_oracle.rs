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
    assert_eq!(ex.kind, "pin_wrong");
    assert_eq!(ex.device, phone.0);
    assert!(ex.expected.contains("wrong_pin"), "{ex:?}");
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
