//! Every request body the admin API and the device HTTP routes decode,
//! fuzzed: mutated valid bodies (a field dropped, replaced by any JSON,
//! an unknown one added), random JSON shapes, random bytes, flipped bytes,
//! wrong types, huge numbers, control characters and bidi overrides. The
//! server never answers 5xx and never panics.
//!
//! - The bulk: [`DEFAULT_CASES`] cases per body type decode through
//!   `decode_json` (what every route decodes with), are turned into the
//!   engine's command by the route's own builder and applied to an engine
//!   holding a small world, as its owner. No HTTP: it runs in seconds in a
//!   debug build.
//! - Over real HTTP: [`HTTP_CASES_PER_ROUTE`] cases per body route against
//!   a running server, through the whole route.
//!
//! `PROPTEST_CASES=200000 cargo test -p reference-server --lib fuzz` runs
//! a longer campaign (that many cases per body type).

use std::cell::RefCell;

use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

use crate::api::wire::*;
use crate::api::{decode_json, routes, ApiError};
use crate::domain::*;
use crate::engine::{
    check_name, Command, Engine, EngineConfig, Issue, Outcome, PinSpec, SecretSpec,
    SiteSettingsPatch,
};
use crate::protocol;

/// Cases per body type unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 10_000;
/// Cases per body route over HTTP (about 340 requests in all).
const HTTP_CASES_PER_ROUTE: u32 = 16;
/// A fresh world every so many cases: what earlier cases made does not
/// slow the later ones down.
const CASES_PER_WORLD: u32 = 256;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn now() -> Timestamp {
    "2026-03-23T10:00:00Z".parse().expect("a time")
}

const OWNER: Actor = Actor::User(UserId(0));

fn run(e: &mut Engine, actor: Actor, cmd: Command) -> Result<(), ApiError> {
    e.apply(&actor, cmd, now())
        .map(|_| ())
        .map_err(ApiError::from)
}

/// One body route: its method and path as `ROUTES` has them, a valid
/// body, and what the route does with the body it decoded (`id`: the id in
/// its path).
struct Decoder {
    method: &'static str,
    path: &'static str,
    valid: Value,
    apply: fn(&mut Engine, &[u8], u32) -> Result<(), ApiError>,
}

/// Every body route's decoder, in the order the HTTP campaign sends them
/// (one server takes them all, so what a route makes can matter to the
/// next): one function per family of routes.
fn decoders() -> Vec<Decoder> {
    let mut all = account_decoders();
    all.extend(organization_decoders());
    all.extend(place_decoders());
    all.extend(device_decoders());
    all.extend(credential_decoders());
    all.push(Decoder {
        method: "POST",
        path: "/v1/webhooks",
        valid: json!({"organization_id": 0, "url": "http://127.0.0.1:9/hook"}),
        apply: |e, b, _| {
            let body: WebhookBody = decode_json(b)?;
            super::events::check_url(&body.url)?;
            e.authorize_on(
                &OWNER,
                Ref::Organization(body.organization_id),
                Action::ManageOrganization,
            )?;
            Ok(())
        },
    });
    all
}

/// The owner and their organizations: bootstrap, users, organizations,
/// renames and members.
fn account_decoders() -> Vec<Decoder> {
    vec![
        Decoder {
            method: "POST",
            path: "/v1/bootstrap",
            valid: json!({"name": "Olivia", "email": "o@example.com", "organization": "Acme"}),
            apply: |e, b, _| {
                let b: BootstrapBody = decode_json(b)?;
                check_name("organization", &b.organization)?;
                run(
                    e,
                    Actor::System,
                    Command::CreateUser {
                        name: b.name,
                        email: b.email,
                    },
                )
            },
        },
        Decoder {
            method: "POST",
            path: "/v1/users",
            valid: json!({"name": "N", "email": "n@example.com"}),
            apply: |e, b, _| {
                let b: UserBody = decode_json(b)?;
                run(
                    e,
                    Actor::System,
                    Command::CreateUser {
                        name: b.name,
                        email: b.email,
                    },
                )
            },
        },
        Decoder {
            method: "POST",
            path: "/v1/organizations",
            valid: json!({"name": "Mine", "description": "d", "personal": false}),
            apply: |e, b, _| run(e, OWNER, decode_json::<OrgBody>(b)?.command(UserId(0))),
        },
        Decoder {
            method: "PATCH",
            path: "/v1/organizations/{org}",
            valid: json!({"name": "Acme", "description": "d"}),
            apply: |e, b, id| {
                let cmd = decode_json::<RenameBody>(b)?.command(e, OrgId(id));
                run(e, OWNER, cmd)
            },
        },
        Decoder {
            method: "PUT",
            path: "/v1/organizations/{org}/members/{user}",
            valid: json!({"role": "door_admin", "doors": [0, 1]}),
            apply: |e, b, id| {
                let role: Role = decode_json(b)?;
                let cmd = Command::SetMember {
                    org: OrgId(id),
                    user: UserId(id % 3),
                    role,
                };
                run(e, OWNER, cmd)
            },
        },
    ]
}

/// What an organization holds directly: its sites and holders.
fn organization_decoders() -> Vec<Decoder> {
    vec![
        Decoder {
            method: "POST",
            path: "/v1/organizations/{org}/sites",
            valid: json!({"name": "S", "time_zone": "Europe/Berlin", "settings": {"six_digit_pins": true, "custom_pins": true, "lockout": {"max_wrong": 3, "window_s": 60, "lockout_s": 30}}}),
            apply: |e, b, id| run(e, OWNER, decode_json::<SiteBody>(b)?.command(OrgId(id))),
        },
        Decoder {
            method: "POST",
            path: "/v1/organizations/{org}/holders",
            valid: json!({"name": "H", "kind": "guest", "user": 0, "floors": {"type": "follow_holder", "floors": 0}}),
            apply: |e, b, id| run(e, OWNER, decode_json::<HolderBody>(b)?.command(OrgId(id))),
        },
    ]
}

/// Sites' settings and what a site is made of: buildings, doors, floors,
/// units, devices and the devices' settings, listings and pools.
fn place_decoders() -> Vec<Decoder> {
    vec![
        Decoder {
            method: "PATCH",
            path: "/v1/sites/{site}/settings",
            valid: json!({"six_digit_pins": true, "custom_pins": false, "lockout": {"max_wrong": 5, "window_s": 60, "lockout_s": 60}}),
            apply: |e, b, id| {
                run(
                    e,
                    OWNER,
                    Command::PatchSiteSettings {
                        site: SiteId(id),
                        patch: decode_json::<SiteSettingsPatch>(b)?,
                    },
                )
            },
        },
        Decoder {
            method: "PUT",
            path: "/v1/sites/{site}/settings",
            valid: json!({"six_digit_pins": true, "custom_pins": false, "lockout": {"max_wrong": 5, "window_s": 60, "lockout_s": 60}}),
            apply: |e, b, id| {
                let settings: SiteSettings = decode_json(b)?;
                run(
                    e,
                    OWNER,
                    Command::UpdateSiteSettings {
                        site: SiteId(id),
                        settings,
                    },
                )
            },
        },
        Decoder {
            method: "POST",
            path: "/v1/sites/{site}/buildings",
            valid: json!({"name": "North"}),
            apply: |e, b, id| run(e, OWNER, decode_json::<NameBody>(b)?.building(SiteId(id))),
        },
        Decoder {
            method: "POST",
            path: "/v1/sites/{site}/doors",
            valid: json!({"name": "D", "common_area": true, "unit": 0, "lift_floors": [0]}),
            apply: |e, b, id| run(e, OWNER, decode_json::<DoorBody>(b)?.command(SiteId(id))),
        },
        Decoder {
            method: "POST",
            path: "/v1/buildings/{building}/floors",
            valid: json!({"number": 3}),
            apply: |e, b, id| {
                run(
                    e,
                    OWNER,
                    decode_json::<FloorBody>(b)?.command(BuildingId(id)),
                )
            },
        },
        Decoder {
            method: "POST",
            path: "/v1/floors/{floor}/units",
            valid: json!({"name": "3A"}),
            apply: |e, b, id| run(e, OWNER, decode_json::<NameBody>(b)?.unit(FloorId(id))),
        },
        Decoder {
            method: "POST",
            path: "/v1/doors/{door}/devices",
            valid: json!({"kind": "keypad", "connectivity": "wifi", "name": "K", "location": "L", "linked_to": 0, "code_slots": 20}),
            apply: |e, b, id| run(e, OWNER, decode_json::<DeviceBody>(b)?.command(DoorId(id))),
        },
        Decoder {
            method: "PUT",
            path: "/v1/devices/{device}/guest-settings",
            valid: json!({"guest_can_open_remotely": true, "prevent_access_until_checked_in": true, "revoke_access_on_check_out": false}),
            apply: |e, b, id| {
                let settings: GuestSettings = decode_json(b)?;
                run(
                    e,
                    OWNER,
                    Command::UpdateGuestSettings {
                        device: DeviceId(id),
                        settings,
                    },
                )
            },
        },
        Decoder {
            method: "POST",
            path: "/v1/devices/{device}/listings",
            valid: json!({"listing": "Loft"}),
            apply: |e, b, id| {
                run(
                    e,
                    OWNER,
                    decode_json::<ListingBody>(b)?.command(DeviceId(id)),
                )
            },
        },
        Decoder {
            method: "POST",
            path: "/v1/devices/{device}/fallback-pool",
            valid: json!({"pins": [{"type": "generate", "value": {"digits": 4}}, {"type": "manual", "value": "4829"}]}),
            apply: |e, b, id| {
                run(
                    e,
                    OWNER,
                    decode_json::<FallbackPoolBody>(b)?.command(DeviceId(id)),
                )
            },
        },
    ]
}

/// The sandbox's checks of a decoded action, as `Service::simulate`
/// makes them before acting.
fn sandbox(e: &Engine, id: u32, action: protocol::SimAction) -> Result<(), ApiError> {
    Ok(crate::service::sandbox_admits(
        e,
        &OWNER,
        DeviceId(id),
        &action,
    )?)
}

/// What devices send over HTTP (credential checks and sync acks), and the
/// sandbox's bodies.
fn device_decoders() -> Vec<Decoder> {
    vec![
        Decoder {
            method: "POST",
            path: "/v1/devices/{device}/simulate/keypad_code_entry",
            valid: json!({"code": "4829"}),
            apply: |e, b, id| sandbox(e, id, decode_json::<KeypadCodeEntryBody>(b)?.into()),
        },
        Decoder {
            method: "POST",
            path: "/v1/devices/{device}/simulate/card_tap",
            valid: json!({"card_number": "1234567890"}),
            apply: |e, b, id| sandbox(e, id, decode_json::<CardTapBody>(b)?.into()),
        },
        Decoder {
            method: "POST",
            path: "/v1/devices/{device}/simulate/battery",
            valid: json!({"level_pct": 42}),
            apply: |e, b, id| sandbox(e, id, decode_json::<BatteryBody>(b)?.into()),
        },
        Decoder {
            method: "POST",
            path: "/v1/devices/{device}/validate",
            valid: json!({"id": 1, "credential": {"type": "pin", "value": "4829"}, "floor": 0, "at": "2026-03-23T10:00:00Z"}),
            apply: |e, b, id| {
                let req: protocol::AuthRequest = decode_json(b)?;
                // As `Service::check`: a malformed credential is an answer.
                if let Ok(presented) = req.credential.to_presented() {
                    let check = crate::engine::Check {
                        device: DeviceId(id),
                        presented,
                        floor: req.floor,
                    };
                    let d = e.validate(&check, now());
                    let _ = protocol::AuthResponse::from_decision(req.id, &d);
                }
                Ok(())
            },
        },
        Decoder {
            method: "POST",
            path: "/v1/devices/{device}/sync",
            valid: json!({"version": 1, "results": [{"credential": 0}, {"credential": 1, "failure": "lock_full"}]}),
            apply: |e, b, id| {
                let ack: protocol::SyncAckMsg = decode_json(b)?;
                // Whatever the version: the engine's checks alone.
                let cmd = Command::SyncAck {
                    device: DeviceId(id),
                    results: ack.results.clone(),
                };
                run(e, Actor::System, cmd)
            },
        },
    ]
}

/// Stays and credentials: issued, and PINs changed.
fn credential_decoders() -> Vec<Decoder> {
    let issue = json!({"holder": 0, "name": "C", "secret": {"kind": "pin", "pin": {"type": "generate", "value": {"digits": 4}}},
        "schedule": {"type": "temporary", "start": "2026-03-23T09:00:00Z", "end": "2026-03-24T09:00:00Z"}, "doors": [0], "include_common_areas": true, "floors": {"type": "only", "floors": [0]}});
    vec![
        Decoder {
            method: "PATCH",
            path: "/v1/holders/{holder}",
            valid: json!({"name": "H", "floors": {"type": "any"}, "disabled": false}),
            apply: |e, b, id| {
                run(
                    e,
                    OWNER,
                    decode_json::<HolderPatchBody>(b)?.command(HolderId(id)),
                )
            },
        },
        Decoder {
            method: "POST",
            path: "/v1/holders/{holder}/stays",
            valid: json!({"check_in_at": "2026-03-23T15:00:00Z", "check_out_at": "2026-03-25T10:00:00Z"}),
            apply: |e, b, id| run(e, OWNER, decode_json::<StayBody>(b)?.command(HolderId(id))),
        },
        Decoder {
            method: "POST",
            path: "/v1/credentials",
            valid: issue,
            apply: |e, b, _| run(e, OWNER, decode_json::<IssueBody>(b)?.command()),
        },
        Decoder {
            method: "PUT",
            path: "/v1/credentials/{credential}/pin",
            valid: json!({"pin": {"type": "custom", "value": "4829"}}),
            apply: |e, b, id| {
                run(
                    e,
                    OWNER,
                    decode_json::<ChangePinBody>(b)?.command(CredentialId(id)),
                )
            },
        },
    ]
}

/// The engine's world the bulk runs against: the owner (user 0) of
/// organization 0, a second user, a site with a building, two floors, a
/// unit, a unit door with a lock and a keypad, a lobby with a door phone
/// serving the floors, a member, a guest with a stay, and a few codes.
fn world() -> Engine {
    let mut e = Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([7; 32]),
        seed: 7,
    });
    world_people(&mut e);
    world_places(&mut e);
    world_holders(&mut e);
    e
}

/// Builds the world as the system; the world must build.
fn sys(e: &mut Engine, cmd: Command) -> Outcome {
    e.apply(&Actor::System, cmd, now())
        .expect("the world builds")
        .outcome
}

/// The world's users and the owner's organization.
fn world_people(e: &mut Engine) {
    for n in ["Olivia", "Uma"] {
        sys(
            e,
            Command::CreateUser {
                name: n.into(),
                email: format!("{n}@example.com"),
            },
        );
    }
    sys(
        e,
        Command::CreateOrganization {
            name: "Acme".into(),
            description: String::new(),
            owner: UserId(0),
            personal: false,
        },
    );
}

/// The world's site: its building, floors, unit, doors and devices.
fn world_places(e: &mut Engine) {
    let settings = SiteSettings {
        six_digit_pins: true,
        custom_pins: true,
        ..SiteSettings::default()
    };
    sys(
        e,
        Command::CreateSite {
            org: OrgId(0),
            name: "Riverside".into(),
            time_zone: "Europe/Berlin".into(),
            settings,
        },
    );
    sys(
        e,
        Command::CreateBuilding {
            site: SiteId(0),
            name: "North".into(),
        },
    );
    for number in [2, 3] {
        sys(
            e,
            Command::CreateFloor {
                building: BuildingId(0),
                number,
            },
        );
    }
    sys(
        e,
        Command::CreateUnit {
            floor: FloorId(0),
            name: "2A".into(),
        },
    );
    sys(
        e,
        Command::CreateDoor {
            site: SiteId(0),
            name: "2A".into(),
            common_area: false,
            unit: Some(UnitId(0)),
            lift_floors: vec![],
        },
    );
    sys(
        e,
        Command::CreateDoor {
            site: SiteId(0),
            name: "Lobby".into(),
            common_area: true,
            unit: None,
            lift_floors: vec![FloorId(0), FloorId(1)],
        },
    );
    for (door, kind, linked_to) in [
        (0, DeviceKind::Lock, None),
        (0, DeviceKind::Keypad, Some(DeviceId(0))),
        (1, DeviceKind::DoorPhone, None),
    ] {
        sys(
            e,
            Command::CreateDevice {
                door: DoorId(door),
                kind,
                connectivity: Connectivity::Wifi,
                name: "d".into(),
                location: String::new(),
                linked_to,
                code_slots: 250,
            },
        );
    }
}

/// The world's holders, the guest's stay and the codes.
fn world_holders(e: &mut Engine) {
    for (name, kind) in [("Rita", HolderKind::Member), ("Gina", HolderKind::Guest)] {
        sys(
            e,
            Command::CreateHolder {
                org: OrgId(0),
                name: name.into(),
                kind,
                user: None,
                floors: FloorScope::Any,
            },
        );
    }
    sys(
        e,
        Command::CreateStay {
            holder: HolderId(1),
            check_in_at: now(),
            check_out_at: now() + jiff::SignedDuration::from_hours(48),
        },
    );
    let pins = [
        (0, PinSpec::Manual("4829".into())),
        (1, PinSpec::Generate { digits: 6 }),
    ];
    for (holder, pin) in pins {
        sys(
            e,
            Command::IssueCredential(Issue {
                holder: HolderId(holder),
                name: "code".into(),
                secret: SecretSpec::Pin { pin },
                schedule: Schedule::Permanent,
                doors: vec![DoorId(0), DoorId(1)],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
        );
    }
    sys(
        e,
        Command::IssueCredential(Issue {
            holder: HolderId(1),
            name: "qr".into(),
            secret: SecretSpec::Qr,
            schedule: Schedule::Stay { stay: StayId(0) },
            doors: vec![DoorId(1)],
            include_common_areas: false,
            floors: FloorScope::Any,
        }),
    );
}

/// Words the bodies' enums and fields use, so random text sometimes hits
/// a real variant.
const WORDS: &[&str] = &[
    "pin",
    "card",
    "qr",
    "ble",
    "generate",
    "custom",
    "manual",
    "resolved",
    "permanent",
    "temporary",
    "recurring",
    "delivery",
    "visitor",
    "stay",
    "never",
    "daily",
    "weekly",
    "lock",
    "keypad",
    "door_phone",
    "door_sensor",
    "wifi",
    "ble",
    "member",
    "guest",
    "courier",
    "owner",
    "admin",
    "door_admin",
    "only",
    "any",
    "follow_holder",
    "mon",
    "tue",
    "sun",
    "automatic",
    "fallback",
    "lock_full",
    "timed_out",
    "Europe/Berlin",
    "UTC",
    "2026-03-23T10:00:00Z",
    "08:00:00",
    "4829",
    "482916",
    "1234",
    "1111",
    "0",
    "-1",
    "99001",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(String::from),
        2 => "[a-z0-9 _]{0,12}",
        2 => "[0-9]{1,14}",
        2 => "\\PC{0,24}",
        2 => prop::collection::vec(any::<char>(), 0..24).prop_map(|v| v.into_iter().collect::<String>()),
        1 => prop::sample::select(&["\0", "\u{7}", "\u{1b}[31m", "\u{7f}", "\u{85}", "\u{202e}evil", "\u{2066}", "a\u{2069}b", "\r\n"][..])
            .prop_map(String::from),
        1 => (190usize..260).prop_map(|n| "x".repeat(n)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        4 => (0u64..6).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => prop::sample::select(&[u64::MAX, 4_294_967_295, 4_294_967_296, 65_536, 70_000][..])
            .prop_map(Value::from),
        1 => prop::sample::select(&[1e300, -1e300, 0.5, -0.0, f64::MAX, f64::MIN_POSITIVE, 4829.0][..])
            .prop_map(|f| json!(f)),
        4 => text().prop_map(Value::from),
    ]
}

/// Any JSON, a few levels deep.
fn any_json() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// `v` with its parts kept, mutated, replaced by any JSON or dropped, and
/// sometimes a field it does not know.
fn mutate(v: Value) -> BoxedStrategy<Value> {
    match v {
        Value::Object(m) => {
            let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = m
                .into_iter()
                .map(|(k, v)| {
                    let (k1, k2) = (k.clone(), k);
                    prop_oneof![
                        6 => mutate(v).prop_map(move |v| Some((k1.clone(), v))),
                        1 => any_json().prop_map(move |v| Some((k2.clone(), v))),
                        1 => Just(None),
                    ]
                    .boxed()
                })
                .collect();
            let extra = prop::option::weighted(0.1, (text(), any_json()));
            (fields, extra)
                .prop_map(|(fields, extra)| {
                    let mut m: Map<String, Value> = fields.into_iter().flatten().collect();
                    if let Some((k, v)) = extra {
                        m.insert(k, v);
                    }
                    Value::Object(m)
                })
                .boxed()
        }
        Value::Array(a) => {
            let items: Vec<BoxedStrategy<Value>> = a.into_iter().map(mutate).collect();
            (items, prop::collection::vec(leaf(), 0..3))
                .prop_map(|(mut items, more)| {
                    items.extend(more);
                    Value::Array(items)
                })
                .boxed()
        }
        leaf_value => prop_oneof![3 => Just(leaf_value), 2 => leaf()].boxed(),
    }
}

/// The bytes of a body: mostly a mutated valid one, else any JSON, random
/// bytes, a valid body with one byte changed, or nesting past serde's
/// recursion limit.
fn body(valid: Value) -> BoxedStrategy<Vec<u8>> {
    let bytes = |v: Value| serde_json::to_vec(&v).expect("JSON serializes");
    prop_oneof![
        12 => mutate(valid.clone()).prop_map(bytes),
        3 => any_json().prop_map(bytes),
        2 => prop::collection::vec(any::<u8>(), 0..64),
        2 => (mutate(valid), any::<prop::sample::Index>(), any::<u8>()).prop_map(move |(v, at, b)| {
            let mut out = bytes(v);
            if !out.is_empty() {
                let i = at.index(out.len());
                out[i] = b;
            }
            out
        }),
        1 => (100usize..300).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
    ]
    .boxed()
}

fn path_id() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..6, 1 => any::<u32>()]
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // A failing input is printed (and shrunk); nothing is written to
        // the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// The bodies the routes take are exactly the ones fuzzed here.
#[test]
fn every_body_route_is_fuzzed() {
    let mut documented: Vec<_> = routes()
        .iter()
        .filter(|r| r.has_body)
        .map(|r| (r.method, r.path.as_str()))
        .collect();
    let mut fuzzed: Vec<_> = decoders().iter().map(|d| (d.method, d.path)).collect();
    documented.sort();
    fuzzed.sort();
    assert_eq!(fuzzed, documented);
}

/// The bulk: every body type, decoded and applied as its route does.
#[test]
fn decoded_bodies_never_answer_5xx_nor_panic() {
    let n = cases();
    for d in decoders() {
        let engine = RefCell::new(world());
        let done = RefCell::new(0u32);
        let mut runner = TestRunner::new(config(n));
        let outcome = runner.run(&(body(d.valid.clone()), path_id()), |(bytes, id)| {
            {
                let mut k = done.borrow_mut();
                *k += 1;
                if (*k).is_multiple_of(CASES_PER_WORLD) {
                    *engine.borrow_mut() = world();
                }
            }
            let mut e = engine.borrow_mut();
            match (d.apply)(&mut e, &bytes, id) {
                Ok(()) => Ok(()),
                Err(err) if err.status.is_server_error() => Err(TestCaseError::fail(format!(
                    "{} {}: {err} for {}",
                    d.method,
                    d.path,
                    String::from_utf8_lossy(&bytes)
                ))),
                Err(err) => {
                    prop_assert!(!err.field.is_empty() && !err.rule.is_empty(), "{err:?}");
                    Ok(())
                }
            }
        });
        if let Err(e) = outcome {
            panic!("{} {}: {e}", d.method, d.path);
        }
        assert!(
            *done.borrow() >= n,
            "{}: {} cases ran",
            d.path,
            done.borrow()
        );
    }
}

/// A few hundred bodies over real HTTP, through every body route of a
/// running server: never a 5xx, and the server answers every one.
#[test]
fn bodies_over_http_never_answer_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (server, token, device_secret) = rt.block_on(async {
        let server = crate::server::run(
            crate::server::Config {
                data_dir: dir.path().to_path_buf(),
                http: "127.0.0.1:0".parse().expect("an address"),
                clock: crate::service::Clock::manual(now()),
                http_workers: 2,
                webhook_ca_file: None,
            },
            std::future::pending(),
        )
        .await
        .expect("the server starts");
        let svc = server.service.clone();
        let made = svc
            .bootstrap("Olivia".into(), "o@example.com".into(), "Acme".into())
            .await
            .expect("bootstrap");
        let owner = Actor::User(made.user);
        let site = svc
            .apply(
                &owner,
                Command::CreateSite {
                    org: made.org,
                    name: "S".into(),
                    time_zone: "UTC".into(),
                    settings: SiteSettings::default(),
                },
            )
            .await
            .expect("a site");
        let Outcome::Site(site) = site.outcome else {
            panic!("a site")
        };
        let door = svc
            .apply(
                &owner,
                Command::CreateDoor {
                    site,
                    name: "D".into(),
                    common_area: false,
                    unit: None,
                    lift_floors: vec![],
                },
            )
            .await
            .expect("a door");
        let Outcome::Door(door) = door.outcome else {
            panic!("a door")
        };
        let (_, secret) = svc
            .create_device(
                &owner,
                Command::CreateDevice {
                    door,
                    kind: DeviceKind::Lock,
                    connectivity: Connectivity::Wifi,
                    name: "L".into(),
                    location: String::new(),
                    linked_to: None,
                    code_slots: 20,
                },
            )
            .await
            .expect("a lock");
        svc.apply(
            &owner,
            Command::CreateHolder {
                org: made.org,
                name: "G".into(),
                kind: HolderKind::Member,
                user: None,
                floors: FloorScope::Any,
            },
        )
        .await
        .expect("a holder");
        (server, made.token, secret)
    });
    let client = reqwest::Client::new();
    let base = server.url();
    let sent = std::cell::Cell::new(0u32);
    for d in decoders() {
        let device_route = d.path.starts_with("/v1/devices/{device}/validate")
            || d.path.starts_with("/v1/devices/{device}/sync");
        let mut runner = TestRunner::new(config(HTTP_CASES_PER_ROUTE));
        let outcome = runner.run(&(body(d.valid.clone()), 0u32..3), |(bytes, id)| {
            // Device routes with the one device whose secret is known.
            let id = if device_route { 0 } else { id };
            let path: String = d
                .path
                .split('/')
                .map(|s| {
                    if s.starts_with('{') {
                        id.to_string()
                    } else {
                        s.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let bearer = if device_route { &device_secret } else { &token };
            let method = reqwest::Method::from_bytes(d.method.as_bytes()).expect("a method");
            let (status, text) = rt.block_on(async {
                let resp = client
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(bearer)
                    .header("content-type", "application/json")
                    .body(bytes.clone())
                    .send()
                    .await
                    .expect("the server answers");
                let status = resp.status();
                (status, resp.text().await.unwrap_or_default())
            });
            sent.set(sent.get() + 1);
            prop_assert!(
                !status.is_server_error(),
                "{} {path}: {status} {text} for {}",
                d.method,
                String::from_utf8_lossy(&bytes)
            );
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{} {}: {e}", d.method, d.path);
        }
    }
    assert!(sent.get() >= 300, "{} requests", sent.get());
    rt.block_on(server.stop());
}
