//! The simulator's decoders, fuzzed through the functions the runs use:
//!
//! - what a simulated device decodes from the server and then does with
//!   it: a `sync` message (MQTT: `protocol::decode`; HTTP: the
//!   `GET .../sync` answer, `http::decode_sync`) applied to the device's
//!   code cache and judged at the device's clock, as a Bluetooth lock
//!   decides offline;
//! - what a device presents, decoded as the server decodes `auth/req` and
//!   checked by the engine (`Engine::validate`) on a provisioned fleet,
//!   with real PINs, cards and signed QR and BLE tokens mutated;
//! - the `--target` client's reading of a server's answers: ids, the
//!   device secret, the sync confirmation and error bodies.
//!
//! The decoders of every MQTT payload on their own are fuzzed in
//! `reference-server/tests/protocol_fuzz.rs`, whose generators this file
//! shares. 10,000 cases per property; `PROPTEST_CASES=N` runs N.

#[path = "../../reference-server/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::sync::LazyLock;

use fleetsim::devices::CodeCache;
use fleetsim::run::oracle::TruthKind;
use fleetsim::run::provision::{self, Book};
use fleetsim::run::target::{self, IdKind, Ids};
use fleetsim::transport::http::decode_sync;
use fuzz_support::*;
use jiff::Timestamp;
use proptest::prelude::*;
use reference_server::domain::{DenyReason, DeviceId, FloorId, TokenKey};
use reference_server::engine::{Command, Outcome};
use reference_server::protocol::{self, AuthRequest, SyncPush, WireCredential};
use reference_server::{Check, Engine, EngineConfig};
use serde_json::{json, Value};

/// A fleet with every device kind and every credential kind.
const FLEET: &str = r#"name = "decode-fuzz"
seed = 11
clock = "virtual"
[fleet]
sites = 2
six_digit_pins = true
[[fleet.devices]]
kind = "lock"
per_site = 2
with = ["keypad", "door_sensor"]
[[fleet.devices]]
kind = "lock"
model = "ble"
per_site = 1
[[fleet.devices]]
kind = "door_phone"
per_site = 1
[credentials]
pins_per_door = 3
mix = { permanent = 0.4, temporary = 0.2, recurring = 0.2, delivery = 0.2 }
expired_pins_per_door = 1
cards_per_door = 2
ble_passes_per_door = 2
qr_keys_per_door = 2
fallback_codes_per_lock = 2
[[phases]]
duration = "1m"
arrivals = "1/s"
[actions]
pin_valid = 0.4
card = 0.2
qr_valid = 0.2
ble = 0.2
"#;

struct World {
    engine: Engine,
    now: Timestamp,
    devices: Vec<DeviceId>,
    /// A real credential of every kind the fleet holds, as devices send it.
    presented: Vec<WireCredential>,
    /// Every command provisioning sent, with the local engine's answer.
    log: Vec<(Command, Outcome)>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let s = fleetsim::scenario::parse(FLEET, "decode-fuzz.toml").expect("the fleet is valid");
    let mut engine = Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([5; 32]),
        seed: 11,
    });
    let now = provision::start_time(&s);
    let (p, log) = {
        let mut book = Book::new(&mut engine, true);
        let p = provision::provision_into(&mut book, &s, 11, now).expect("provisioning works");
        (p, book.take_log())
    };
    let devices = p
        .fleet
        .doors
        .iter()
        .flat_map(|d| [d.lock, d.keypad, d.sensor, d.door_phone])
        .flatten()
        .collect();
    let presented = (0..p.oracle.len())
        .map(|i| {
            let t = p.oracle.truth(i);
            match t.kind {
                TruthKind::Pin => WireCredential::Pin(t.text.clone()),
                TruthKind::Card => WireCredential::Card(t.text.clone()),
                TruthKind::Qr => WireCredential::Qr(t.text.clone()),
                TruthKind::Ble => WireCredential::Ble(t.text.clone()),
            }
        })
        .collect();
    World {
        engine,
        now,
        devices,
        presented,
        log,
    }
});

/// A request a device could send: a real credential, on a real device or
/// any other id, with a floor or not.
fn real_request() -> impl Strategy<Value = AuthRequest> {
    let w = &*WORLD;
    (
        any::<u64>(),
        prop::sample::select(w.presented.clone()),
        prop::option::of(any::<u32>().prop_map(FloorId)),
    )
        .prop_map(|(id, credential, floor)| AuthRequest {
            id,
            credential,
            floor,
            at: None,
        })
}

/// A `GET .../sync` answer: a sync message and the tokens to confirm.
fn sync_body() -> impl Strategy<Value = Value> {
    (sync_push(), prop::collection::vec(credential_id(), 0..4)).prop_map(|(push, tokens)| {
        let mut v = serde_json::to_value(&push).expect("wire types serialize");
        v["tokens"] = json!(tokens);
        v
    })
}

/// A server id, or something that looks like one and is not.
fn id_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<u32>().prop_map(Value::from),
        1 => (u64::from(u32::MAX) + 1..=u64::MAX).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => json_leaf(),
    ]
}

/// An answer shaped like the admin API's: the keys the client reads,
/// with ids that may not be ids.
fn admin_answer() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "user",
        "organization",
        "site",
        "door",
        "device",
        "holder",
        "credential",
        "stay",
        "token",
    ]);
    let shaped = (
        prop::collection::vec((keys, id_value()), 0..4),
        prop::option::of(prop::collection::vec(id_value(), 0..6)),
        prop::option::of(json_leaf()),
    )
        .prop_map(|(fields, credentials, password)| {
            let mut v = json!({});
            for (k, id) in fields {
                v[k] = id;
            }
            if let Some(ids) = credentials {
                v["credentials"] = Value::Array(ids);
            }
            if let Some(p) = password {
                v["mqtt"] = json!({ "password": p });
            }
            v
        });
    prop_oneof![3 => shaped, 1 => any_json()]
}

proptest! {
    #![proptest_config(config())]

    /// A lock or keypad receives `sync` messages over MQTT: each one
    /// decodes or is refused; applied, the cache never holds more codes
    /// than the device has slots, answers once per code, and judges any
    /// credential at any clock.
    #[test]
    fn devices_apply_whatever_sync_messages_decode(
        messages in prop::collection::vec(payload(sync_push()), 1..4),
        slots in 0u16..6,
        now in device_now(),
        probe in wire_credential(),
    ) {
        let mut cache = CodeCache::default();
        for bytes in &messages {
            let Some(push) = decodes::<SyncPush>(bytes)? else {
                continue;
            };
            let results = cache.apply(&push, slots);
            prop_assert_eq!(results.len(), push.set.len() + push.remove.len());
            prop_assert!(cache.len() <= usize::from(slots));
            for code in &push.set {
                let c = match &code.secret {
                    protocol::WireSecret::Pin(p) => WireCredential::Pin(p.clone()),
                    protocol::WireSecret::Card(n) => WireCredential::Card(n.clone()),
                };
                let _ = cache.judge(&c, now);
            }
        }
        let _ = cache.judge(&probe, now);
    }

    /// The same over HTTP: the `GET .../sync` answer, decoded as the
    /// devices and `--target` decode it.
    #[test]
    fn http_sync_answers_decode_or_are_refused(bytes in payload(sync_body())) {
        if let Ok(body) = decode_sync(&bytes) {
            let (push, _) = body.split();
            let mut cache = CodeCache::default();
            let results = cache.apply(&push, 250);
            prop_assert_eq!(results.len(), push.set.len() + push.remove.len());
        }
        // `--target` reads the same answer as a JSON value: it confirms
        // exactly what the devices' decoder accepts of that value.
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            let decoded = decode_sync(&serde_json::to_vec(&v).expect("a value serializes"));
            let ack = target::sync_confirmation(v);
            prop_assert_eq!(ack.is_ok(), decoded.is_ok(), "{:?}", ack);
            if let (Ok(ack), Ok(body)) = (ack, decoded) {
                prop_assert_eq!(ack.version, body.version);
                prop_assert_eq!(
                    ack.results.len(),
                    body.set.len() + body.remove.len() + body.tokens.len()
                );
            }
        }
    }

    /// Whatever a device presents reaches the engine through the server's
    /// decoder, and the engine answers it (a grant, a denial or a refusal
    /// of the credential's form), at the fleet's start or at any instant.
    #[test]
    fn the_engine_answers_whatever_a_device_presents(
        bytes in prop_oneof![payload(real_request()), payload(auth_request())],
        device in prop_oneof![
            3 => prop::sample::select(WORLD.devices.clone()),
            1 => any::<u32>().prop_map(DeviceId),
        ],
        at in prop_oneof![3 => Just(WORLD.now), 1 => device_now()],
    ) {
        let w = &*WORLD;
        if let Some(req) = decodes::<AuthRequest>(&bytes)? {
            if let Ok(presented) = req.credential.to_presented() {
                let d = w.engine.validate(
                    &Check {
                        device,
                        presented,
                        floor: req.floor,
                    },
                    at,
                );
                if !w.devices.contains(&device) {
                    prop_assert_eq!(d.reason(), Some(DenyReason::DeviceUnknown));
                }
            }
        }
    }

    /// `--target` reads every admin answer for every command provisioning
    /// sends: an id is taken only when it is one (never cut to fit), and a
    /// malformed answer is an error, never a panic.
    #[test]
    fn target_answers_give_ids_or_errors(
        step in 0usize..1_000_000,
        answer in admin_answer(),
        has_token in any::<bool>(),
    ) {
        let w = &*WORLD;
        let (cmd, expect) = &w.log[step % w.log.len()];
        let mut ids = Ids::new(has_token);
        let recorded = ids.record(cmd, expect, &answer);
        if recorded.is_ok() {
            // Whatever was taken is a real server id from the answer.
            for kind in [IdKind::User, IdKind::Organization, IdKind::Site, IdKind::Door,
                         IdKind::Device, IdKind::Holder, IdKind::Credential, IdKind::Stay] {
                for local in 0..64 {
                    if let Ok(id) = ids.get(kind, local) {
                        prop_assert!(answer.to_string().contains(&id.to_string()));
                    }
                }
            }
        }
        if let Ok((device, secret)) = target::device_answer(&answer) {
            prop_assert_eq!(answer["device"].as_u64(), Some(u64::from(device.0)));
            prop_assert_eq!(answer["mqtt"]["password"].as_str(), Some(secret.as_str()));
        }
    }

    /// A refusal's body, whatever the server sends, becomes a bounded,
    /// printable message.
    #[test]
    fn target_error_bodies_become_bounded_messages(
        body in prop_oneof![
            any_json().prop_map(|v| v.to_string()),
            (json_leaf(), json_leaf()).prop_map(|(f, r)| json!({"field": f, "rule": r}).to_string()),
            "\\PC{0,400}",
        ],
    ) {
        let m = target::error_message(&body);
        prop_assert!(m.chars().count() <= 300);
        prop_assert!(!m.chars().any(char::is_control), "{:?}", m);
    }
}

/// Regression: an id beyond the server's range was cut to fit (`as u32`),
/// so `4294967301` became server id 5, someone else's entity.
#[test]
fn ids_beyond_the_servers_range_are_refused_not_truncated() {
    let w = &*WORLD;
    let (cmd, expect) = w
        .log
        .iter()
        .find(|(_, o)| matches!(o, Outcome::Site(_)))
        .expect("provisioning makes a site");
    let mut ids = Ids::new(false);
    let err = ids
        .record(cmd, expect, &json!({"site": u64::from(u32::MAX) + 6}))
        .unwrap_err();
    assert!(err.contains("names no site id"), "{err}");
    let Outcome::Site(local) = expect else {
        unreachable!()
    };
    assert!(ids.get(IdKind::Site, local.0).is_err());
    assert!(
        target::device_answer(&json!({"device": 1u64 << 32, "mqtt": {"password": "s"}})).is_err()
    );
    // A device answer without an id was taken as device 0.
    assert!(target::device_answer(&json!({"mqtt": {"password": "s"}})).is_err());
}

/// Regression: tokens that did not decode were dropped silently, and the
/// server kept them pending with no error to say why.
#[test]
fn a_sync_answer_with_malformed_tokens_is_an_error() {
    let bad = json!({"version": 3, "set": [], "remove": [], "tokens": ["x"]});
    assert!(target::sync_confirmation(bad).is_err());
    let good = json!({"version": 3, "set": [], "remove": [7], "tokens": [9]});
    let ack = target::sync_confirmation(good).unwrap();
    assert_eq!(ack.version, 3);
    assert_eq!(ack.results.len(), 2);
}
