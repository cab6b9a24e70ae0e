//! The reference server end to end over real HTTP: the seed documents'
//! workflows, restart durability, the authorization matrix and bad input.

mod common;

use std::sync::Arc;

use common::*;
use jiff::SignedDuration;
use reference_server::domain::DeviceId;
use reference_server::protocol::{CommandResult, Event, EventKind, How, Status};
use reference_server::service::Clock;
use serde_json::{json, Value};

const T0: &str = "2026-03-23T10:00:00Z"; // a Monday

/// The validate answer says when a keypad's lockout ends: the wrong PIN
/// that locks it and every `locked_out` denial carry `locked_until` (the
/// default policy: 5 wrong in 60 s lock for 30 s); other answers do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_answer_over_http_says_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(ts(T0));
    let server = start(dir.path(), clock.clone()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let wrong = || {
        api.validate(
            w.phone_a,
            &w.phone_a_secret,
            json!({"type": "pin", "value": "0000"}),
        )
    };
    for _ in 0..4 {
        let r = wrong().await;
        assert_eq!(r["reason"], "wrong_pin", "{r}");
        assert!(r.get("locked_until").is_none(), "{r}");
    }
    let r = wrong().await;
    assert_eq!(
        (r["reason"].as_str(), r["locked_until"].as_str()),
        (Some("wrong_pin"), Some("2026-03-23T10:00:30Z")),
        "{r}"
    );
    clock.set(ts("2026-03-23T10:00:29Z"));
    let r = wrong().await;
    assert_eq!(
        (r["reason"].as_str(), r["locked_until"].as_str()),
        (Some("locked_out"), Some("2026-03-23T10:00:30Z")),
        "{r}"
    );
    clock.set(ts("2026-03-23T10:00:30Z"));
    let r = wrong().await;
    assert_eq!(r["reason"], "wrong_pin", "{r}");
    assert!(r.get("locked_until").is_none(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_key_delivery_pin_and_dst_recurring_code() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(ts(T0));
    let server = start(dir.path(), clock.clone()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();

    // seeds/001: a visitor temp key, repeat Never, 2 uses on each door, as a QR code.
    let visitor = holder(&api, t, "Vera Visitor", "visitor").await;
    let v = api
        .ok("POST", "/v1/credentials", t, Some(json!({
            "holder": visitor, "name": "Visitor", "secret": {"kind": "qr"},
            "schedule": {"type": "visitor", "repeat": "never", "start": "2026-03-23T09:00:00Z", "end": "2026-03-24T09:00:00Z", "each_door_count": 2},
            "doors": [w.door_a],
        })))
        .await;
    let token = v["token"]
        .as_str()
        .expect("a QR key answers its token")
        .to_string();
    for want in ["granted", "granted"] {
        let r = api
            .validate(
                w.phone_a,
                &w.phone_a_secret,
                json!({"type": "qr", "value": token}),
            )
            .await;
        assert_eq!(r["decision"], want, "{r}");
    }
    let r = api
        .validate(
            w.phone_a,
            &w.phone_a_secret,
            json!({"type": "qr", "value": token}),
        )
        .await;
    assert_eq!(
        (r["decision"].as_str(), r["reason"].as_str()),
        (Some("denied"), Some("uses_exhausted")),
        "{r}"
    );
    // Not valid at the lobby.
    let r = api
        .validate(
            w.phone_b,
            &w.phone_b_secret,
            json!({"type": "qr", "value": token}),
        )
        .await;
    assert_eq!(r["reason"], "door_not_allowed");

    // A courier's delivery PIN, 12:00-13:00 UTC.
    let courier = holder(&api, t, "Carl Courier", "courier").await;
    let (_, pin) = pin_code(
        &api,
        t,
        courier,
        json!([w.door_a]),
        json!({"type": "delivery", "start": "2026-03-23T12:00:00Z", "end": "2026-03-23T13:00:00Z"}),
    )
    .await;
    let check = |pin: String| {
        let api = api.clone();
        let secret = w.phone_a_secret.clone();
        let device = w.phone_a;
        async move {
            api.validate(device, &secret, json!({"type": "pin", "value": pin}))
                .await
        }
    };
    assert_eq!(check(pin.clone()).await["reason"], "not_yet_valid");
    clock.set(ts("2026-03-23T12:30:00Z"));
    assert_eq!(check(pin.clone()).await["decision"], "granted");
    clock.set(ts("2026-03-23T13:00:00Z"));
    assert_eq!(check(pin.clone()).await["reason"], "expired");

    // A recurring cleaner's code: Tuesdays 08:00-10:00 local (Europe/Berlin),
    // across the DST change of 2026-03-29.
    let cleaner = holder(&api, t, "Cleaner", "member").await;
    let (_, pin) = pin_code(&api, t, cleaner, json!([w.door_a]),
        json!({"type": "recurring", "days": ["tue"], "window": {"start": "08:00:00", "end": "10:00:00"}})).await;
    for (now, want) in [
        ("2026-03-24T08:00:00Z", "granted"),          // Tue 09:00 CET
        ("2026-03-24T09:30:00Z", "outside_schedule"), // Tue 10:30 CET
        ("2026-03-30T07:00:00Z", "outside_schedule"), // Mon 09:00 CEST
        ("2026-03-31T07:00:00Z", "granted"),          // Tue 09:00 CEST
        ("2026-03-31T08:30:00Z", "outside_schedule"), // Tue 10:30 CEST (09:30 in winter time)
    ] {
        clock.set(ts(now));
        let r = check(pin.clone()).await;
        let got = r["reason"]
            .as_str()
            .unwrap_or(r["decision"].as_str().unwrap());
        assert_eq!(got, want, "at {now}: {r}");
    }

    // The code list of the door phone: origin, status, duration, sync state.
    let codes = api
        .ok("GET", &format!("/v1/devices/{}/codes", w.phone_a), t, None)
        .await["data"]
        .clone();
    let codes = codes.as_array().unwrap();
    assert_eq!(codes.len(), 3);
    assert!(codes
        .iter()
        .all(|c| c["origin"] == "automatic" || c["kind"] == "qr"));
    assert_eq!(
        codes[0]["status"], "expired",
        "the visitor key's range is over"
    );
    assert_eq!(codes[2]["duration"], "Always");
    // Locks store codes: the lock's list shows each PIN's sync state.
    let lock_codes = api
        .ok("GET", &format!("/v1/devices/{}/codes", w.lock_a), t, None)
        .await["data"]
        .clone();
    assert_eq!(lock_codes[1]["sync"]["state"], "pending", "{lock_codes}");
    assert!(
        !lock_codes.to_string().contains(&pin),
        "code lists never show a PIN"
    );
    let overview = api
        .ok(
            "GET",
            &format!("/v1/devices/{}/schedule", w.phone_a),
            t,
            None,
        )
        .await;
    assert_eq!(overview["data"].as_array().unwrap().len(), 3);
    assert_eq!(overview["pagination"]["has_next_page"], false);

    // The activity log says how, which code and why.
    server.service.flush().await.unwrap();
    let log = api
        .ok(
            "GET",
            &format!("/v1/devices/{}/activity?kind=access_denied", w.phone_a),
            t,
            None,
        )
        .await;
    let reasons: Vec<_> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"uses_exhausted") && reasons.contains(&"outside_schedule"),
        "{reasons:?}"
    );
    let granted = api
        .ok(
            "GET",
            &format!(
                "/v1/devices/{}/activity?kind=access_granted&limit=1",
                w.phone_a
            ),
            t,
            None,
        )
        .await;
    assert_eq!(granted["data"][0]["how"], "keypad");
    assert_eq!(granted["data"][0]["origin"], "automatic");
    assert!(granted["data"][0]["credential"].is_u64());
    // The log pages like every list: the next page starts after this one,
    // and a cursor only works with the filters it was made for.
    assert_eq!(granted["pagination"]["has_next_page"], true, "{granted}");
    let cursor = granted["pagination"]["next_page_cursor"].as_str().unwrap();
    let next = api
        .ok(
            "GET",
            &format!(
                "/v1/devices/{}/activity?kind=access_granted&limit=1&page_cursor={cursor}",
                w.phone_a
            ),
            t,
            None,
        )
        .await;
    assert_eq!(next["data"].as_array().unwrap().len(), 1, "{next}");
    assert_ne!(next["data"][0], granted["data"][0]);
    assert!(next["data"][0]["at"].as_str() <= granted["data"][0]["at"].as_str());
    let (status, body) = api
        .call(
            "GET",
            &format!(
                "/v1/devices/{}/activity?kind=access_denied&page_cursor={cursor}",
                w.phone_a
            ),
            Some(t),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "page_cursor", "{body}");
    let ranged = api
        .ok(
            "GET",
            &format!(
                "/v1/devices/{}/activity?from=2026-03-24T00:00:00Z&to=2026-03-25T00:00:00Z",
                w.phone_a
            ),
            t,
            None,
        )
        .await;
    assert_eq!(ranged["data"].as_array().unwrap().len(), 2, "{ranged}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_stay_codes_locks_health_and_remote_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(ts(T0));
    let server = start(dir.path(), clock.clone()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let svc = server.service.clone();

    // seeds/004: guest settings on the door phone, a stay, check-in and out.
    api.ok(
        "PUT",
        &format!("/v1/devices/{}/guest-settings", w.phone_a),
        t,
        Some(json!({"prevent_access_until_checked_in": true, "revoke_access_on_check_out": true})),
    )
    .await;
    let guest = holder(&api, t, "Gina Guest", "guest").await;
    let stay = id(&api.ok("POST", &format!("/v1/holders/{guest}/stays"), t,
        Some(json!({"check_in_at": "2026-03-23T15:00:00Z", "check_out_at": "2026-03-25T10:00:00Z"}))).await, "stay");
    let (code, pin) = pin_code(
        &api,
        t,
        guest,
        json!([w.door_a]),
        json!({"type": "stay", "stay": stay}),
    )
    .await;
    let check = |pin: String| {
        let api = api.clone();
        let secret = w.phone_a_secret.clone();
        let device = w.phone_a;
        async move {
            api.validate(device, &secret, json!({"type": "pin", "value": pin}))
                .await
        }
    };
    assert_eq!(check(pin.clone()).await["reason"], "not_checked_in");
    api.ok("POST", &format!("/v1/stays/{stay}/check-in"), t, None)
        .await;
    assert_eq!(check(pin.clone()).await["decision"], "granted");

    // Disable, enable, change the PIN, delete.
    api.ok("POST", &format!("/v1/credentials/{code}/disable"), t, None)
        .await;
    assert_eq!(check(pin.clone()).await["reason"], "disabled");
    api.ok("POST", &format!("/v1/credentials/{code}/enable"), t, None)
        .await;
    assert_eq!(check(pin.clone()).await["decision"], "granted");
    let new = id(
        &api.ok(
            "PUT",
            &format!("/v1/credentials/{code}/pin"),
            t,
            Some(json!({"pin": {"type": "generate", "value": {"digits": 6}}})),
        )
        .await,
        "credential",
    );
    assert_eq!(new, code, "a changed PIN keeps the code's id");
    let new_pin = api
        .ok("POST", &format!("/v1/credentials/{new}/reveal"), t, None)
        .await["pin"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(new_pin.len(), 6);
    assert_eq!(check(new_pin.clone()).await["decision"], "granted");
    assert_eq!(
        check(pin.clone()).await["reason"],
        "wrong_pin",
        "a door phone asks the engine: the old PIN stops at once"
    );
    api.ok("POST", &format!("/v1/stays/{stay}/check-out"), t, None)
        .await;
    assert_eq!(check(new_pin.clone()).await["reason"], "checked_out");
    api.ok("DELETE", &format!("/v1/credentials/{new}"), t, None)
        .await;
    let c = api
        .ok("GET", &format!("/v1/credentials/{new}"), t, None)
        .await;
    assert_eq!(c["status"], "revoked");
    assert!(c.get("pin").is_none());

    // A custom PIN follows the community's rules.
    let member = holder(&api, t, "Mia Member", "member").await;
    let custom = |value: &str, doors: Value| json!({"holder": member, "name": "Mine", "secret": {"kind": "pin", "pin": {"type": "custom", "value": value}}, "schedule": {"type": "permanent"}, "doors": doors});
    let (s, e) = api
        .call(
            "POST",
            "/v1/credentials",
            Some(t),
            Some(custom("1234", json!([w.door_a]))),
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("pin")), "{e}");
    let (s, e) = api
        .call(
            "POST",
            "/v1/credentials",
            Some(t),
            Some(custom("2580", json!([w.door_b]))),
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (422, Some("pin")),
        "no custom PINs on community doors: {e}"
    );
    api.ok(
        "POST",
        "/v1/credentials",
        t,
        Some(custom("2580", json!([w.door_a]))),
    )
    .await;
    // A card.
    let card = id(&api.ok("POST", "/v1/credentials", t, Some(json!({"holder": member, "name": "Fob", "secret": {"kind": "card", "number": 99001}, "schedule": {"type": "permanent"}, "doors": [w.door_b]}))).await, "credential");
    assert_eq!(
        api.validate(
            w.phone_b,
            &w.phone_b_secret,
            json!({"type": "card", "value": "99001"})
        )
        .await["decision"],
        "granted"
    );
    assert_eq!(
        api.ok("POST", &format!("/v1/credentials/{card}/reveal"), t, None)
            .await["card"],
        "99001"
    );

    // Device health and the lock list, from status reports.
    let lock = DeviceId(w.lock_a as u32);
    svc.set_status(
        lock,
        &Status {
            online: true,
            battery_pct: Some(81),
            firmware: Some("2.1".into()),
            at: None,
        },
    )
    .await
    .unwrap();
    svc.set_status(
        DeviceId(w.keypad_a as u32),
        &Status {
            online: true,
            battery_pct: None,
            firmware: None,
            at: None,
        },
    )
    .await
    .unwrap();
    clock.advance(SignedDuration::from_hours(12));
    svc.set_status(
        lock,
        &Status {
            online: false,
            battery_pct: Some(80),
            firmware: None,
            at: None,
        },
    )
    .await
    .unwrap();
    clock.advance(SignedDuration::from_hours(12));
    let h = api
        .ok(
            "GET",
            &format!("/v1/devices/{}/health?window_s=86400", w.lock_a),
            t,
            None,
        )
        .await;
    assert!(
        (h["uptime_pct"].as_f64().unwrap() - 50.0).abs() < 0.01,
        "{h}"
    );
    assert_eq!(h["battery"].as_array().unwrap().len(), 2);
    api.ok(
        "POST",
        &format!("/v1/devices/{}/listings", w.lock_a),
        t,
        Some(json!({"listing": "Loft by the river"})),
    )
    .await;
    let locks = api
        .ok("GET", &format!("/v1/sites/{}/locks", w.site), t, None)
        .await;
    let l = &locks["data"][0];
    assert_eq!(
        (l["online"].as_bool(), l["battery_pct"].as_u64()),
        (Some(false), Some(80)),
        "{l}"
    );
    assert_eq!(l["location"], "Apartment door");
    assert_eq!(l["components"][0]["kind"], "keypad");
    assert_eq!(l["components"][0]["online"], true);
    assert_eq!(l["listings"][0], "Loft by the river");
    api.ok(
        "DELETE",
        &format!("/v1/devices/{}/listings/Loft%20by%20the%20river", w.lock_a),
        t,
        None,
    )
    .await;
    let l = api
        .ok("GET", &format!("/v1/devices/{}", w.lock_a), t, None)
        .await;
    assert_eq!(l["listings"].as_array().unwrap().len(), 0);

    // Device events: logged once per (device, seq).
    let ev = Event {
        seq: 7,
        at: ts("2026-03-24T10:00:00Z"),
        kind: EventKind::Unlocked {
            how: How::Manual,
            credential: None,
            origin: None,
        },
    };
    assert!(svc.record_event(lock, &ev).await.unwrap());
    assert!(
        !svc.record_event(lock, &ev).await.unwrap(),
        "a redelivered event is a duplicate"
    );
    svc.record_event(
        lock,
        &Event {
            seq: 8,
            at: ts("2026-03-24T10:01:00Z"),
            kind: EventKind::MotorBlocked,
        },
    )
    .await
    .unwrap();
    let log = api
        .ok(
            "GET",
            &format!("/v1/devices/{}/activity", w.lock_a),
            t,
            None,
        )
        .await;
    let kinds: Vec<_> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "unlocked").count(),
        1,
        "{kinds:?}"
    );
    for k in ["motor_blocked", "online", "offline"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    let manual = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "unlocked")
        .unwrap();
    assert_eq!(manual["how"], "manual");

    // Remote Open Door: offline without a gateway or while the lock is offline.
    let (s, r) = api
        .call(
            "POST",
            &format!("/v1/devices/{}/open", w.lock_a),
            Some(t),
            None,
        )
        .await;
    assert_eq!((s, r["result"].as_str()), (200, Some("offline")));
    svc.set_command_sink(Arc::new(|_, _| Box::pin(async { CommandResult::Ok })));
    svc.set_status(
        lock,
        &Status {
            online: true,
            battery_pct: Some(80),
            firmware: None,
            at: None,
        },
    )
    .await
    .unwrap();
    let r = api
        .ok("POST", &format!("/v1/devices/{}/open", w.lock_a), t, None)
        .await;
    assert_eq!(r["result"], "ok");
    let opens = api
        .ok(
            "GET",
            &format!("/v1/devices/{}/activity?kind=remote_open", w.lock_a),
            t,
            None,
        )
        .await;
    assert_eq!(opens["data"].as_array().unwrap().len(), 2);
    assert_eq!(opens["data"][0]["how"], "remote");

    // Metrics and the OpenAPI document.
    let (_, m) = api.call("GET", "/metrics", None, None).await;
    let m = m.as_str().unwrap().to_string();
    for name in ["reference_server_validations_total{outcome=\"granted\",transport=\"http\"}", "reference_server_http_requests_total{method=\"POST\",route=\"/v1/devices/{device}/validate\",status=\"200\"}", "reference_server_store_batch_size_count", "reference_server_devices_online 2"] {
        assert!(m.contains(name), "{name} not in metrics");
    }
    let (_, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert!(doc["paths"]["/v1/devices/{device}/validate"]["post"].is_object());
    assert!(doc["paths"]["/v1/credentials/{credential}"]["delete"].is_object());
    assert_eq!(api.call("GET", "/healthz", None, None).await.0, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(ts(T0));
    let server = start(dir.path(), clock.clone()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.clone();
    let visitor = holder(&api, &t, "Vera", "visitor").await;
    let v = api.ok("POST", "/v1/credentials", &t, Some(json!({
        "holder": visitor, "name": "Visitor", "secret": {"kind": "qr"},
        "schedule": {"type": "visitor", "repeat": "never", "start": "2026-03-23T09:00:00Z", "end": "2026-03-24T09:00:00Z", "each_door_count": 2},
        "doors": [w.door_a]}))).await;
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(
        api.validate(
            w.phone_a,
            &w.phone_a_secret,
            json!({"type": "qr", "value": token})
        )
        .await["decision"],
        "granted"
    );
    let (code, pin) = pin_code(
        &api,
        &t,
        visitor,
        json!([w.door_a, w.door_b]),
        json!({"type": "permanent"}),
    )
    .await;
    api.ok(
        "PATCH",
        "/v1/organizations/0",
        &t,
        Some(json!({"name": "Acme Homes"})),
    )
    .await;
    api.ok(
        "PUT",
        &format!("/v1/devices/{}/guest-settings", w.lock_a),
        &t,
        Some(json!({"guest_can_open_remotely": true})),
    )
    .await;
    server
        .service
        .set_status(
            DeviceId(w.lock_a as u32),
            &Status {
                online: true,
                battery_pct: Some(77),
                firmware: None,
                at: None,
            },
        )
        .await
        .unwrap();
    let before_codes = api
        .ok("GET", &format!("/v1/devices/{}/codes", w.lock_a), &t, None)
        .await;
    server.stop().await;

    let server = start(dir.path(), clock.clone()).await;
    let api = Api::new(server.url());
    // Tokens, secrets, names, settings, codes and use counts are back.
    let org = api.ok("GET", "/v1/organizations/0", &t, None).await;
    assert_eq!(org["organization"]["name"], "Acme Homes");
    assert_eq!(
        api.ok("POST", &format!("/v1/credentials/{code}/reveal"), &t, None)
            .await["pin"],
        pin.as_str()
    );
    assert_eq!(
        api.ok("GET", &format!("/v1/devices/{}/codes", w.lock_a), &t, None)
            .await,
        before_codes
    );
    let lock = api
        .ok("GET", &format!("/v1/devices/{}", w.lock_a), &t, None)
        .await;
    assert_eq!(lock["guest_settings"]["guest_can_open_remotely"], true);
    assert_eq!(lock["battery_pct"], 77);
    assert_eq!(
        api.validate(
            w.phone_a,
            &w.phone_a_secret,
            json!({"type": "pin", "value": pin})
        )
        .await["decision"],
        "granted"
    );
    let r = api
        .validate(
            w.phone_a,
            &w.phone_a_secret,
            json!({"type": "qr", "value": token}),
        )
        .await;
    assert_eq!(r["decision"], "granted", "one use was left: {r}");
    let r = api
        .validate(
            w.phone_a,
            &w.phone_a_secret,
            json!({"type": "qr", "value": token}),
        )
        .await;
    assert_eq!(
        r["reason"], "uses_exhausted",
        "the use before the restart counts: {r}"
    );
    server.service.flush().await.unwrap();
    let log = api
        .ok(
            "GET",
            &format!("/v1/devices/{}/activity?kind=access_granted", w.phone_a),
            &t,
            None,
        )
        .await;
    assert_eq!(log["data"].as_array().unwrap().len(), 3);
    // New ids continue after the replayed ones.
    let h = holder(&api, &t, "After", "guest").await;
    assert_eq!(h, visitor + 1);
    server.stop().await;
}

/// The roles of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    Owner,
    Admin,
    DoorAdminA,
    DoorAdminB,
    NoRole,
    OtherOwner,
    NoToken,
    BadToken,
}

const EVERYONE: [Who; 8] = [
    Who::Owner,
    Who::Admin,
    Who::DoorAdminA,
    Who::DoorAdminB,
    Who::NoRole,
    Who::OtherOwner,
    Who::NoToken,
    Who::BadToken,
];

/// Who may do it.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// ManageOrganization.
    Org,
    /// ManageAccess with no doors (holders, stays): owner and admin.
    AccessOrg,
    /// ManageAccess / OpenDoor on door A.
    DoorA,
    /// Any signed-in user.
    AnyUser,
}

fn allowed(scope: Scope, who: Who) -> bool {
    match scope {
        Scope::Org => who == Who::Owner,
        Scope::AccessOrg => matches!(who, Who::Owner | Who::Admin),
        Scope::DoorA => matches!(who, Who::Owner | Who::Admin | Who::DoorAdminA),
        Scope::AnyUser => !matches!(who, Who::NoToken | Who::BadToken),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::type_complexity)] // one table of (method, path, body, scope, unknown) rows
async fn authorization_matrix() {
    const U: u64 = 999_999;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.clone();
    let mut tokens = std::collections::HashMap::new();
    for (who, role) in [
        (Who::Admin, Some(json!({"role": "admin"}))),
        (
            Who::DoorAdminA,
            Some(json!({"role": "door_admin", "doors": [w.door_a]})),
        ),
        (
            Who::DoorAdminB,
            Some(json!({"role": "door_admin", "doors": [w.door_b]})),
        ),
        (Who::NoRole, None),
        (Who::OtherOwner, None),
    ] {
        let u = api
            .ok(
                "POST",
                "/v1/users",
                &t,
                Some(json!({"name": format!("{who:?}"), "email": format!("{who:?}@example.com")})),
            )
            .await;
        let user = id(&u, "user");
        if let Some(role) = role {
            api.ok(
                "PUT",
                &format!("/v1/organizations/0/members/{user}"),
                &t,
                Some(role),
            )
            .await;
        }
        tokens.insert(who, u["token"].as_str().unwrap().to_string());
    }
    api.ok(
        "POST",
        "/v1/organizations",
        &tokens[&Who::OtherOwner],
        Some(json!({"name": "Elsewhere"})),
    )
    .await;
    tokens.insert(Who::Owner, t.clone());
    tokens.insert(Who::BadToken, "u0.not-the-secret".to_string());
    let guest = holder(&api, &t, "G", "guest").await;
    let pin_issue = |door: u64| json!({"holder": guest, "name": "C", "secret": {"kind": "pin", "pin": {"type": "generate", "value": {"digits": 4}}}, "schedule": {"type": "permanent"}, "doors": [door]});

    let mut listing_n = 0;
    let mut failures = Vec::new();
    let cases = [
        "rename_org",
        "set_member",
        "remove_member",
        "create_site",
        "site_settings",
        "create_building",
        "create_floor",
        "create_unit",
        "create_door",
        "create_device",
        "link_listing",
        "unlink_listing",
        "guest_settings",
        "fallback_pool",
        "create_holder",
        "disable_holder",
        "enable_holder",
        "create_stay",
        "check_in",
        "check_out",
        "issue_a",
        "reveal",
        "disable_code",
        "enable_code",
        "delete_code",
        "change_pin",
        "open_door",
        "create_org",
        "create_user",
        "read_codes",
        "read_activity",
        "read_events",
        "create_webhook",
        "list_webhooks",
        "delete_webhook",
        "webhook_deliveries",
        "read_sites",
        "read_doors",
        "read_devices",
        "read_holders",
        "delete_site",
        "delete_door",
        "delete_device",
        "delete_holder",
        "patch_settings",
        "patch_holder",
    ];
    let shared_hook = api
        .ok(
            "POST",
            "/v1/webhooks",
            &t,
            Some(json!({"organization_id": 0, "url": "http://127.0.0.1:9/hook"})),
        )
        .await["webhook_id"]
        .as_str()
        .unwrap()
        .to_string();
    for case in cases {
        for who in EVERYONE {
            // Fresh targets for each call, made by the owner.
            // With the same request naming an unknown id where it names one
            // of organization 0 (None: it names none).
            let (method, path, body, scope, unknown): (
                &str,
                String,
                Option<Value>,
                Scope,
                Option<(String, Option<Value>)>,
            ) = match case {
                "rename_org" => (
                    "PATCH",
                    "/v1/organizations/0".into(),
                    Some(json!({"name": "Acme"})),
                    Scope::Org,
                    Some((
                        format!("/v1/organizations/{U}"),
                        Some(json!({"name": "Acme"})),
                    )),
                ),
                "set_member" | "remove_member" => {
                    let u = id(
                        &api.ok(
                            "POST",
                            "/v1/users",
                            &t,
                            Some(json!({"name": "X", "email": "x@example.com"})),
                        )
                        .await,
                        "user",
                    );
                    if case == "set_member" {
                        (
                            "PUT",
                            format!("/v1/organizations/0/members/{u}"),
                            Some(json!({"role": "admin"})),
                            Scope::Org,
                            Some((
                                format!("/v1/organizations/{U}/members/{u}"),
                                Some(json!({"role": "admin"})),
                            )),
                        )
                    } else {
                        api.ok(
                            "PUT",
                            &format!("/v1/organizations/0/members/{u}"),
                            &t,
                            Some(json!({"role": "admin"})),
                        )
                        .await;
                        (
                            "DELETE",
                            format!("/v1/organizations/0/members/{u}"),
                            None,
                            Scope::Org,
                            Some((format!("/v1/organizations/{U}/members/{u}"), None)),
                        )
                    }
                }
                "create_site" => (
                    "POST",
                    "/v1/organizations/0/sites".into(),
                    Some(json!({"name": "S", "time_zone": "UTC"})),
                    Scope::Org,
                    Some((
                        format!("/v1/organizations/{U}/sites"),
                        Some(json!({"name": "S", "time_zone": "UTC"})),
                    )),
                ),
                "site_settings" => (
                    "PUT",
                    format!("/v1/sites/{}/settings", w.site),
                    Some(json!({"six_digit_pins": true, "custom_pins": true})),
                    Scope::Org,
                    Some((
                        format!("/v1/sites/{U}/settings"),
                        Some(json!({"six_digit_pins": true, "custom_pins": true})),
                    )),
                ),
                "create_building" => (
                    "POST",
                    format!("/v1/sites/{}/buildings", w.site),
                    Some(json!({"name": "B"})),
                    Scope::Org,
                    Some((
                        format!("/v1/sites/{U}/buildings"),
                        Some(json!({"name": "B"})),
                    )),
                ),
                "create_floor" => (
                    "POST",
                    "/v1/buildings/0/floors".into(),
                    Some(json!({"number": 1})),
                    Scope::Org,
                    Some((
                        format!("/v1/buildings/{U}/floors"),
                        Some(json!({"number": 1})),
                    )),
                ),
                "create_unit" => (
                    "POST",
                    format!("/v1/floors/{}/units", w.floor),
                    Some(json!({"name": "U"})),
                    Scope::Org,
                    Some((format!("/v1/floors/{U}/units"), Some(json!({"name": "U"})))),
                ),
                "create_door" => (
                    "POST",
                    format!("/v1/sites/{}/doors", w.site),
                    Some(json!({"name": "D"})),
                    Scope::Org,
                    Some((format!("/v1/sites/{U}/doors"), Some(json!({"name": "D"})))),
                ),
                "create_device" => (
                    "POST",
                    format!("/v1/doors/{}/devices", w.door_a),
                    Some(json!({"kind": "door_sensor", "name": "S"})),
                    Scope::Org,
                    Some((
                        format!("/v1/doors/{U}/devices"),
                        Some(json!({"kind": "door_sensor", "name": "S"})),
                    )),
                ),
                "link_listing" => (
                    "POST",
                    format!("/v1/devices/{}/listings", w.lock_a),
                    Some(json!({"listing": "L"})),
                    Scope::Org,
                    Some((
                        format!("/v1/devices/{U}/listings"),
                        Some(json!({"listing": "L"})),
                    )),
                ),
                "unlink_listing" => {
                    listing_n += 1;
                    api.ok(
                        "POST",
                        &format!("/v1/devices/{}/listings", w.lock_a),
                        &t,
                        Some(json!({"listing": format!("L{listing_n}")})),
                    )
                    .await;
                    (
                        "DELETE",
                        format!("/v1/devices/{}/listings/L{listing_n}", w.lock_a),
                        None,
                        Scope::Org,
                        Some((format!("/v1/devices/{U}/listings/L{listing_n}"), None)),
                    )
                }
                "guest_settings" => (
                    "PUT",
                    format!("/v1/devices/{}/guest-settings", w.lock_a),
                    Some(json!({"guest_can_open_remotely": false})),
                    Scope::DoorA,
                    Some((
                        format!("/v1/devices/{U}/guest-settings"),
                        Some(json!({"guest_can_open_remotely": false})),
                    )),
                ),
                "fallback_pool" => (
                    "POST",
                    format!("/v1/devices/{}/fallback-pool", w.lock_a),
                    Some(json!({"pins": [{"type": "generate", "value": {"digits": 4}}]})),
                    Scope::DoorA,
                    Some((
                        format!("/v1/devices/{U}/fallback-pool"),
                        Some(json!({"pins": [{"type": "generate", "value": {"digits": 4}}]})),
                    )),
                ),
                "create_holder" => (
                    "POST",
                    "/v1/organizations/0/holders".into(),
                    Some(json!({"name": "H", "kind": "guest"})),
                    Scope::AccessOrg,
                    Some((
                        format!("/v1/organizations/{U}/holders"),
                        Some(json!({"name": "H", "kind": "guest"})),
                    )),
                ),
                "disable_holder" => (
                    "POST",
                    format!("/v1/holders/{guest}/disable"),
                    None,
                    Scope::AccessOrg,
                    Some((format!("/v1/holders/{U}/disable"), None)),
                ),
                "enable_holder" => (
                    "POST",
                    format!("/v1/holders/{guest}/enable"),
                    None,
                    Scope::AccessOrg,
                    Some((format!("/v1/holders/{U}/enable"), None)),
                ),
                "create_stay" => (
                    "POST",
                    format!("/v1/holders/{guest}/stays"),
                    Some(
                        json!({"check_in_at": "2026-04-01T15:00:00Z", "check_out_at": "2026-04-02T10:00:00Z"}),
                    ),
                    Scope::AccessOrg,
                    Some((
                        format!("/v1/holders/{U}/stays"),
                        Some(
                            json!({"check_in_at": "2026-04-01T15:00:00Z", "check_out_at": "2026-04-02T10:00:00Z"}),
                        ),
                    )),
                ),
                "check_in" | "check_out" => {
                    let s = id(&api.ok("POST", &format!("/v1/holders/{guest}/stays"), &t, Some(json!({"check_in_at": "2026-04-01T15:00:00Z", "check_out_at": "2026-04-02T10:00:00Z"}))).await, "stay");
                    let verb = if case == "check_in" {
                        "check-in"
                    } else {
                        "check-out"
                    };
                    (
                        "POST",
                        format!("/v1/stays/{s}/{verb}"),
                        None,
                        Scope::AccessOrg,
                        Some((format!("/v1/stays/{U}/{verb}"), None)),
                    )
                }
                "issue_a" => {
                    let mut unknown = pin_issue(w.door_a);
                    unknown["holder"] = json!(U);
                    (
                        "POST",
                        "/v1/credentials".into(),
                        Some(pin_issue(w.door_a)),
                        Scope::DoorA,
                        Some(("/v1/credentials".into(), Some(unknown))),
                    )
                }
                "reveal" | "disable_code" | "enable_code" | "delete_code" | "change_pin" => {
                    let c = id(
                        &api.ok("POST", "/v1/credentials", &t, Some(pin_issue(w.door_a)))
                            .await,
                        "credential",
                    );
                    match case {
                        "reveal" => (
                            "POST",
                            format!("/v1/credentials/{c}/reveal"),
                            None,
                            Scope::DoorA,
                            Some((format!("/v1/credentials/{U}/reveal"), None)),
                        ),
                        "disable_code" => (
                            "POST",
                            format!("/v1/credentials/{c}/disable"),
                            None,
                            Scope::DoorA,
                            Some((format!("/v1/credentials/{U}/disable"), None)),
                        ),
                        "enable_code" => (
                            "POST",
                            format!("/v1/credentials/{c}/enable"),
                            None,
                            Scope::DoorA,
                            Some((format!("/v1/credentials/{U}/enable"), None)),
                        ),
                        "delete_code" => (
                            "DELETE",
                            format!("/v1/credentials/{c}"),
                            None,
                            Scope::DoorA,
                            Some((format!("/v1/credentials/{U}"), None)),
                        ),
                        _ => (
                            "PUT",
                            format!("/v1/credentials/{c}/pin"),
                            Some(json!({"pin": {"type": "generate", "value": {"digits": 4}}})),
                            Scope::DoorA,
                            Some((
                                format!("/v1/credentials/{U}/pin"),
                                Some(json!({"pin": {"type": "generate", "value": {"digits": 4}}})),
                            )),
                        ),
                    }
                }
                "open_door" => (
                    "POST",
                    format!("/v1/devices/{}/open", w.lock_a),
                    None,
                    Scope::DoorA,
                    Some((format!("/v1/devices/{U}/open"), None)),
                ),
                "create_org" => (
                    "POST",
                    "/v1/organizations".into(),
                    Some(json!({"name": "Mine"})),
                    Scope::AnyUser,
                    None,
                ),
                "create_user" => (
                    "POST",
                    "/v1/users".into(),
                    Some(json!({"name": "N", "email": "n@example.com"})),
                    Scope::AnyUser,
                    None,
                ),
                // Reads: any member of the organization.
                "read_codes" => (
                    "GET",
                    format!("/v1/devices/{}/codes", w.lock_a),
                    None,
                    Scope::AccessOrg,
                    Some((format!("/v1/devices/{U}/codes"), None)),
                ),
                "read_activity" => (
                    "GET",
                    format!("/v1/devices/{}/activity", w.lock_a),
                    None,
                    Scope::AccessOrg,
                    Some((format!("/v1/devices/{U}/activity"), None)),
                ),
                "read_events" => (
                    "GET",
                    "/v1/events?organization_id=0".into(),
                    None,
                    Scope::AccessOrg,
                    Some((format!("/v1/events?organization_id={U}"), None)),
                ),
                "create_webhook" | "list_webhooks" => {
                    let body = |org: u64| json!({"organization_id": org, "url": "http://127.0.0.1:9/hook"});
                    if case == "create_webhook" {
                        (
                            "POST",
                            "/v1/webhooks".into(),
                            Some(body(0)),
                            Scope::Org,
                            Some(("/v1/webhooks".into(), Some(body(U)))),
                        )
                    } else {
                        (
                            "GET",
                            "/v1/webhooks?organization_id=0".into(),
                            None,
                            Scope::Org,
                            Some((format!("/v1/webhooks?organization_id={U}"), None)),
                        )
                    }
                }
                "delete_webhook" => {
                    let hook = api
                        .ok(
                            "POST",
                            "/v1/webhooks",
                            &t,
                            Some(json!({"organization_id": 0, "url": "http://127.0.0.1:9/hook"})),
                        )
                        .await["webhook_id"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    (
                        "DELETE",
                        format!("/v1/webhooks/{hook}"),
                        None,
                        Scope::Org,
                        Some(("/v1/webhooks/wh_0000000000000000".into(), None)),
                    )
                }
                "webhook_deliveries" => (
                    "GET",
                    format!("/v1/webhooks/{shared_hook}/deliveries"),
                    None,
                    Scope::Org,
                    Some(("/v1/webhooks/wh_0000000000000000/deliveries".into(), None)),
                ),
                "read_sites" | "read_doors" | "read_devices" | "read_holders" => {
                    let list = case.trim_start_matches("read_");
                    (
                        "GET",
                        format!("/v1/organizations/0/{list}"),
                        None,
                        Scope::AccessOrg,
                        Some((format!("/v1/organizations/{U}/{list}"), None)),
                    )
                }
                "delete_site" => {
                    let s = id(
                        &api.ok(
                            "POST",
                            "/v1/organizations/0/sites",
                            &t,
                            Some(json!({"name": "Doomed", "time_zone": "UTC"})),
                        )
                        .await,
                        "site",
                    );
                    (
                        "DELETE",
                        format!("/v1/sites/{s}"),
                        None,
                        Scope::Org,
                        Some((format!("/v1/sites/{U}"), None)),
                    )
                }
                "delete_door" => {
                    let d = id(
                        &api.ok(
                            "POST",
                            &format!("/v1/sites/{}/doors", w.site),
                            &t,
                            Some(json!({"name": "Doomed"})),
                        )
                        .await,
                        "door",
                    );
                    (
                        "DELETE",
                        format!("/v1/doors/{d}"),
                        None,
                        Scope::Org,
                        Some((format!("/v1/doors/{U}"), None)),
                    )
                }
                "delete_device" => {
                    let d = id(
                        &api.ok(
                            "POST",
                            &format!("/v1/doors/{}/devices", w.door_a),
                            &t,
                            Some(json!({"kind": "door_sensor", "name": "Doomed"})),
                        )
                        .await,
                        "device",
                    );
                    (
                        "DELETE",
                        format!("/v1/devices/{d}"),
                        None,
                        Scope::Org,
                        Some((format!("/v1/devices/{U}"), None)),
                    )
                }
                "delete_holder" => {
                    let h = holder(&api, &t, "Doomed", "visitor").await;
                    (
                        "DELETE",
                        format!("/v1/holders/{h}"),
                        None,
                        Scope::AccessOrg,
                        Some((format!("/v1/holders/{U}"), None)),
                    )
                }
                "patch_settings" => (
                    "PATCH",
                    format!("/v1/sites/{}/settings", w.site),
                    Some(json!({"custom_pins": true})),
                    Scope::Org,
                    Some((
                        format!("/v1/sites/{U}/settings"),
                        Some(json!({"custom_pins": true})),
                    )),
                ),
                "patch_holder" => (
                    "PATCH",
                    format!("/v1/holders/{guest}"),
                    Some(json!({"name": "Gina"})),
                    Scope::AccessOrg,
                    Some((format!("/v1/holders/{U}"), Some(json!({"name": "Gina"})))),
                ),
                other => unreachable!("{other}"),
            };
            let member_read =
                case.starts_with("read_") && matches!(who, Who::DoorAdminA | Who::DoorAdminB);
            // No role in organization 0: its ids are unknown ids to them.
            let outsider = matches!(who, Who::NoRole | Who::OtherOwner) && unknown.is_some();
            let want = match who {
                Who::NoToken | Who::BadToken => 401,
                _ if allowed(scope, who) || member_read => 200,
                _ if outsider => 404,
                _ => 403,
            };
            let token = tokens.get(&who).map(String::as_str);
            let (status, text) = api.text(method, &path, token, body).await;
            if let (true, Some((path, body))) = (outsider, &unknown) {
                // Byte for byte what an unknown id answers.
                let none = api.text(method, path, token, body.clone()).await;
                if (status, &text) != (none.0, &none.1) {
                    failures.push(format!(
                        "{case} as {who:?}: {status} {text} but an unknown id answers {} {}",
                        none.0, none.1
                    ));
                }
            }
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let got = if (200..300).contains(&status) {
                200
            } else {
                status
            };
            if got != want {
                failures.push(format!(
                    "{case} as {who:?}: want {want}, got {status} {body}"
                ));
            }
            if status >= 400 {
                assert!(
                    body["field"].is_string() && body["rule"].is_string(),
                    "{case} {who:?}: {body}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cross_organization_ids_in_bodies_answer_as_unknown(&api, &w, &t, &tokens[&Who::OtherOwner])
        .await;
    // A device speaks only for itself: phone B's secret cannot validate as phone A.
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/devices/{}/validate", w.phone_a),
            Some(&w.phone_b_secret),
            Some(json!({"id": 1, "credential": {"type": "pin", "value": "1234"}})),
        )
        .await;
    assert_eq!(s, 401);
    // A user token is not a device secret.
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/devices/{}/validate", w.phone_a),
            Some(&t),
            Some(json!({"id": 1, "credential": {"type": "pin", "value": "1234"}})),
        )
        .await;
    assert_eq!(s, 401);
    // Bootstrap works once.
    let (s, e) = api
        .call(
            "POST",
            "/v1/bootstrap",
            None,
            Some(json!({"name": "Eve", "email": "eve@example.com", "organization": "Mine"})),
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (409, Some("bootstrap")));
    server.stop().await;
}

/// Ids of another organization inside bodies answer byte for byte what
/// unknown ids answer, on every route that takes ids in its body, even for
/// a caller who owns both organizations (a reference across organizations
/// is never stored). `other` owns organization 1.
async fn cross_organization_ids_in_bodies_answer_as_unknown(
    api: &Api,
    w: &World,
    owner: &str,
    other: &str,
) {
    const U: u64 = 999_999;
    // Organization 1's places, a lock, a guest, a stay and a code.
    let site = id(
        &api.ok(
            "POST",
            "/v1/organizations/1/sites",
            other,
            Some(json!({"name": "B site", "time_zone": "UTC"})),
        )
        .await,
        "site",
    );
    let building = id(
        &api.ok(
            "POST",
            &format!("/v1/sites/{site}/buildings"),
            other,
            Some(json!({"name": "B"})),
        )
        .await,
        "building",
    );
    let floor = id(
        &api.ok(
            "POST",
            &format!("/v1/buildings/{building}/floors"),
            other,
            Some(json!({"number": 9})),
        )
        .await,
        "floor",
    );
    let unit = id(
        &api.ok(
            "POST",
            &format!("/v1/floors/{floor}/units"),
            other,
            Some(json!({"name": "9A"})),
        )
        .await,
        "unit",
    );
    let door = id(
        &api.ok(
            "POST",
            &format!("/v1/sites/{site}/doors"),
            other,
            Some(json!({"name": "B door", "unit": unit, "lift_floors": [floor]})),
        )
        .await,
        "door",
    );
    let lock = id(
        &api.ok(
            "POST",
            &format!("/v1/doors/{door}/devices"),
            other,
            Some(json!({"kind": "lock", "name": "B lock"})),
        )
        .await,
        "device",
    );
    let guest = id(
        &api.ok(
            "POST",
            "/v1/organizations/1/holders",
            other,
            Some(json!({"name": "B guest", "kind": "guest"})),
        )
        .await,
        "holder",
    );
    let stay = id(&api.ok("POST", &format!("/v1/holders/{guest}/stays"), other, Some(json!({"check_in_at": "2026-04-01T15:00:00Z", "check_out_at": "2026-04-02T10:00:00Z"}))).await, "stay");
    let code = id(&api.ok("POST", "/v1/credentials", other, Some(json!({"holder": guest, "name": "B code", "secret": {"kind": "pin", "pin": {"type": "generate", "value": {"digits": 4}}}, "schedule": {"type": "permanent"}, "doors": [door]}))).await, "credential");
    // A user who owns both organizations.
    let both = api
        .ok(
            "POST",
            "/v1/users",
            owner,
            Some(json!({"name": "Both", "email": "both@example.com"})),
        )
        .await;
    let (both_id, both) = (
        id(&both, "user"),
        both["token"].as_str().unwrap().to_string(),
    );
    for (t, org) in [(owner, 0), (other, 1)] {
        api.ok(
            "PUT",
            &format!("/v1/organizations/{org}/members/{both_id}"),
            t,
            Some(json!({"role": "owner"})),
        )
        .await;
    }
    let member = id(
        &api.ok(
            "POST",
            "/v1/users",
            owner,
            Some(json!({"name": "M", "email": "m@example.com"})),
        )
        .await,
        "user",
    );
    let org0_guest = holder(api, owner, "A guest", "guest").await;
    let issue = move |doors: Value, schedule: Value, floors: Value| json!({"holder": org0_guest, "name": "X", "secret": {"kind": "pin", "pin": {"type": "generate", "value": {"digits": 4}}}, "schedule": schedule, "doors": doors, "floors": floors});
    let perm = json!({"type": "permanent"});
    let any = json!({"type": "any"});
    // The lock's pending version, for a sync ack that names a code.
    let lock_a_secret = {
        let made = api
            .ok(
                "POST",
                &format!("/v1/doors/{}/devices", w.door_a),
                owner,
                Some(json!({"kind": "keypad", "name": "K2", "linked_to": w.lock_a})),
            )
            .await;
        (
            id(&made, "device"),
            made["mqtt"]["password"].as_str().unwrap().to_string(),
        )
    };
    let (keypad, keypad_secret) = lock_a_secret;
    // A code that opens the lobby, so that only the floor decides there.
    let resident = holder(api, owner, "Resident", "member").await;
    let (_, lobby_pin) = pin_code(api, owner, resident, json!([w.door_b]), perm.clone()).await;
    let (_, pending) = api
        .call(
            "GET",
            &format!("/v1/devices/{keypad}/sync"),
            Some(&keypad_secret),
            None,
        )
        .await;
    let version = pending["version"].as_u64().unwrap();
    // (what, caller, method, path, body with `ID` where the id goes)
    type Case<'a> = (&'a str, &'a str, &'a str, String, Box<dyn Fn(u64) -> Value>);
    let cases: Vec<Case> = vec![
        (
            "a door admin's doors",
            &both,
            "PUT",
            format!("/v1/organizations/0/members/{member}"),
            Box::new(|x| json!({"role": "door_admin", "doors": [x]})),
        ),
        (
            "a door's unit",
            &both,
            "POST",
            format!("/v1/sites/{}/doors", w.site),
            Box::new(|x| json!({"name": "D", "unit": x})),
        ),
        (
            "a door's lift floors",
            &both,
            "POST",
            format!("/v1/sites/{}/doors", w.site),
            Box::new(|x| json!({"name": "D", "lift_floors": [x]})),
        ),
        (
            "a device's lock",
            &both,
            "POST",
            format!("/v1/doors/{}/devices", w.door_a),
            Box::new(|x| json!({"kind": "keypad", "name": "K", "linked_to": x})),
        ),
        (
            "a holder's floors",
            &both,
            "POST",
            "/v1/organizations/0/holders".into(),
            Box::new(
                |x| json!({"name": "H", "kind": "member", "floors": {"type": "only", "floors": [x]}}),
            ),
        ),
        (
            "a holder followed",
            &both,
            "POST",
            "/v1/organizations/0/holders".into(),
            Box::new(
                |x| json!({"name": "H", "kind": "member", "floors": {"type": "follow_holder", "floors": x}}),
            ),
        ),
        (
            "a code's doors",
            &both,
            "POST",
            "/v1/credentials".into(),
            Box::new({
                let (i, p, a) = (issue, perm.clone(), any.clone());
                move |x| i(json!([x]), p.clone(), a.clone())
            }),
        ),
        (
            "a code's stay",
            &both,
            "POST",
            "/v1/credentials".into(),
            Box::new({
                let (i, a, d) = (issue, any.clone(), w.door_a);
                move |x| i(json!([d]), json!({"type": "stay", "stay": x}), a.clone())
            }),
        ),
        (
            "a code's floors",
            &both,
            "POST",
            "/v1/credentials".into(),
            Box::new({
                let (i, p, d) = (issue, perm.clone(), w.door_b);
                move |x| {
                    i(
                        json!([d]),
                        p.clone(),
                        json!({"type": "only", "floors": [x]}),
                    )
                }
            }),
        ),
        (
            "a code's holder",
            owner,
            "POST",
            "/v1/credentials".into(),
            Box::new({
                let (p, d) = (perm.clone(), w.door_a);
                move |x| json!({"holder": x, "name": "X", "secret": {"kind": "qr"}, "schedule": p, "doors": [d]})
            }),
        ),
        (
            "a floor at a door phone",
            &w.phone_b_secret,
            "POST",
            format!("/v1/devices/{}/validate", w.phone_b),
            Box::new(
                move |x| json!({"id": 7, "credential": {"type": "pin", "value": lobby_pin}, "floor": x}),
            ),
        ),
        (
            "a code in a sync ack",
            &keypad_secret,
            "POST",
            format!("/v1/devices/{keypad}/sync"),
            Box::new(move |x| json!({"version": version, "results": [{"credential": x}]})),
        ),
    ];
    let theirs = [
        ("a door admin's doors", door),
        ("a door's unit", unit),
        ("a door's lift floors", floor),
        ("a device's lock", lock),
        ("a holder's floors", floor),
        ("a holder followed", guest),
        ("a code's doors", door),
        ("a code's stay", stay),
        ("a code's floors", floor),
        ("a code's holder", guest),
        ("a floor at a door phone", floor),
        ("a code in a sync ack", code),
    ];
    let mut failures = Vec::new();
    for ((what, token, method, path, body), (_, their_id)) in cases.iter().zip(theirs) {
        let (s1, other_org) = api
            .text(method, path, Some(token), Some(body(their_id)))
            .await;
        let (s2, unknown) = api.text(method, path, Some(token), Some(body(U))).await;
        // A refused change, and byte for byte what an unknown id answers.
        let refused = s1 == 404 || (s1 == 200 && other_org.contains("floor_not_allowed"));
        if !refused || (s1, &other_org) != (s2, &unknown) {
            failures.push(format!(
                "{what}: another organization's id: {s1} {other_org}; unknown: {s2} {unknown}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Organization 1's things are untouched, and its owner still sees them.
    let c = api
        .ok("GET", &format!("/v1/credentials/{code}"), other, None)
        .await;
    assert_eq!(c["status"], "active", "{c}");
    let (s, _) = api
        .call("GET", &format!("/v1/credentials/{code}"), Some(owner), None)
        .await;
    assert_eq!(
        s, 404,
        "organization 0's owner does not see organization 1's code"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_naming_the_field_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let guest = holder(&api, t, "G", "guest").await;
    let issue = |secret: Value, schedule: Value, doors: Value| json!({"holder": guest, "name": "C", "secret": secret, "schedule": schedule, "doors": doors});
    let gen = json!({"kind": "pin", "pin": {"type": "generate", "value": {"digits": 4}}});
    let perm = json!({"type": "permanent"});
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024));
    let validate = format!("/v1/devices/{}/validate", w.phone_a);
    // (method, path, raw body, content type, want status, want field)
    let cases: Vec<(&str, String, String, &str, u16, &str)> = vec![
        ("POST", "/v1/credentials".into(), "{".into(), "application/json", 400, "body"),
        ("POST", "/v1/credentials".into(), "[]".into(), "application/json", 422, "body"),
        ("POST", "/v1/credentials".into(), issue(gen.clone(), perm.clone(), json!([w.door_a])).to_string().replace("\"holder\"", "\"holdr\""), "application/json", 422, "holdr"),
        ("POST", "/v1/credentials".into(), issue(gen.clone(), perm.clone(), json!(["a"])).to_string(), "application/json", 422, "doors[0]"),
        ("POST", "/v1/credentials".into(), issue(json!({"kind": "pin", "pin": {"type": "generate", "value": {"digits": 300}}}), perm.clone(), json!([w.door_a])).to_string(), "application/json", 422, "secret"),
        ("POST", "/v1/credentials".into(), issue(json!({"kind": "pin", "pin": {"type": "generate", "value": {"digits": 5}}}), perm.clone(), json!([w.door_a])).to_string(), "application/json", 422, "pin"),
        ("POST", "/v1/credentials".into(), issue(json!({"kind": "pin", "pin": {"type": "manual", "value": "12ab"}}), perm.clone(), json!([w.door_a])).to_string(), "application/json", 422, "pin"),
        ("POST", "/v1/credentials".into(), issue(json!({"kind": "pin", "pin": {"type": "resolved", "value": {"pin": "1357", "origin": "manual"}}}), perm.clone(), json!([w.door_a])).to_string(), "application/json", 422, "secret"),
        ("POST", "/v1/credentials".into(), issue(gen.clone(), perm.clone(), json!([9999])).to_string(), "application/json", 404, "door"),
        ("POST", "/v1/credentials".into(), issue(gen.clone(), json!({"type": "permanent", "until": "2027-01-01T00:00:00Z"}), json!([w.door_a])).to_string(), "application/json", 422, "schedule"),
        ("POST", "/v1/credentials".into(), issue(json!({"kind": "qr", "pin": "1234"}), perm.clone(), json!([w.door_a])).to_string(), "application/json", 422, "secret"),
        ("POST", "/v1/credentials".into(), issue(json!({"kind": "card", "number": 5, "pin": "1234"}), perm.clone(), json!([w.door_a])).to_string(), "application/json", 422, "secret"),
        ("POST", "/v1/credentials".into(), issue(gen.clone(), json!({"type": "temporary", "start": "2026-03-24T00:00:00Z", "end": "2026-03-23T00:00:00Z"}), json!([w.door_a])).to_string(), "application/json", 422, "schedule"),
        ("POST", "/v1/credentials".into(), issue(gen.clone(), json!({"type": "recurring", "days": ["someday"], "window": {"start": "08:00:00", "end": "10:00:00"}}), json!([w.door_a])).to_string(), "application/json", 422, "schedule"),
        ("POST", "/v1/credentials".into(), issue(gen.clone(), json!({"type": "visitor", "repeat": "daily", "start": "2026-03-23T00:00:00Z", "end": "2026-03-24T00:00:00Z", "each_door_count": 2}), json!([w.door_a])).to_string(), "application/json", 422, "schedule"),
        ("POST", "/v1/credentials".into(), issue(gen.clone(), perm.clone(), json!([w.door_a])).to_string(), "text/plain", 415, "content-type"),
        ("POST", "/v1/organizations/0/holders".into(), json!({"name": "H", "kind": "alien"}).to_string(), "application/json", 422, "kind"),
        ("POST", "/v1/organizations/0/holders".into(), json!({"name": "", "kind": "guest"}).to_string(), "application/json", 422, "name"),
        ("POST", "/v1/organizations/0/sites".into(), json!({"name": "S", "time_zone": "Mars/Olympus"}).to_string(), "application/json", 422, "time_zone"),
        ("POST", "/v1/organizations/0/sites".into(), json!({"name": "S", "time_zone": "UTC", "settings": {"lockout": {"max_wrong": 0, "window_s": 60, "lockout_s": 60}}}).to_string(), "application/json", 422, "settings.lockout"),
        ("POST", "/v1/organizations/0/sites".into(), big.clone(), "application/json", 413, "body"),
        ("POST", "/v1/buildings/0/floors".into(), json!({"number": 70000}).to_string(), "application/json", 422, "number"),
        ("POST", "/v1/organizations/abc/holders".into(), json!({"name": "H", "kind": "guest"}).to_string(), "application/json", 400, "path"),
        ("POST", "/v1/holders/999/stays".into(), json!({"check_in_at": "2026-04-01T00:00:00Z", "check_out_at": "2026-04-02T00:00:00Z"}).to_string(), "application/json", 404, "holder"),
        ("POST", format!("/v1/holders/{guest}/stays"), json!({"check_in_at": "2026-04-02T00:00:00Z", "check_out_at": "2026-04-01T00:00:00Z"}).to_string(), "application/json", 422, "check_out_at"),
        ("POST", format!("/v1/holders/{guest}/stays"), json!({"check_in_at": "yesterday", "check_out_at": "2026-04-01T00:00:00Z"}).to_string(), "application/json", 422, "check_in_at"),
        ("PUT", "/v1/organizations/0/members/0".into(), json!({"role": "door_admin", "doors": []}).to_string(), "application/json", 422, "doors"),
        ("PUT", "/v1/organizations/0/members/0".into(), json!({"role": "emperor"}).to_string(), "application/json", 422, "role"),
        ("GET", format!("/v1/devices/{}/activity?limit=0", w.lock_a), String::new(), "application/json", 400, "limit"),
        ("GET", format!("/v1/devices/{}/activity?from=notatime", w.lock_a), String::new(), "application/json", 400, "from"),
        ("GET", format!("/v1/devices/{}/activity?kind=DROP%20TABLE", w.lock_a), String::new(), "application/json", 400, "kind"),
        ("GET", format!("/v1/devices/{}/health?window_s=0", w.lock_a), String::new(), "application/json", 400, "window_s"),
        ("GET", "/v1/devices/4242/codes".into(), String::new(), "application/json", 404, "device"),
        ("POST", format!("/v1/devices/{}/fallback-pool", w.lock_a), json!({"pins": [{"type": "manual", "value": "12a4"}]}).to_string(), "application/json", 422, "pin"),
        ("POST", format!("/v1/devices/{}/fallback-pool", w.lock_a), json!({"pins": [{"type": "resolved", "value": {"pin": "4821", "origin": "fallback"}}]}).to_string(), "application/json", 422, "pins[0].type"),
        ("POST", format!("/v1/devices/{}/fallback-pool", w.lock_a), json!({"pins": [], "extra": 1}).to_string(), "application/json", 422, "extra"),
        ("POST", format!("/v1/devices/{}/fallback-pool", w.keypad_a), json!({"pins": [{"type": "generate", "value": {"digits": 4}}]}).to_string(), "application/json", 422, "device"),
        ("POST", format!("/v1/devices/{}/fallback-pool", w.lock_a), json!({"pins": vec![json!({"type": "generate", "value": {"digits": 6}}); 300]}).to_string(), "application/json", 422, "pins"),
        ("GET", "/v1/nowhere".into(), String::new(), "application/json", 404, "path"),
        // Control characters and bidi overrides in names, whichever field.
        ("POST", "/v1/organizations/0/holders".into(), json!({"name": "Mal\u{202e}lory", "kind": "guest"}).to_string(), "application/json", 422, "name"),
        ("POST", "/v1/organizations/0/sites".into(), json!({"name": "S\u{0}", "time_zone": "UTC"}).to_string(), "application/json", 422, "name"),
        ("POST", format!("/v1/sites/{}/buildings", w.site), json!({"name": "North\nSouth"}).to_string(), "application/json", 422, "name"),
        ("POST", format!("/v1/doors/{}/devices", w.door_a), json!({"kind": "door_sensor", "name": "S", "location": "a\u{1b}[31m"}).to_string(), "application/json", 422, "location"),
        ("PATCH", "/v1/organizations/0".into(), json!({"name": "Acme", "description": "x\u{85}"}).to_string(), "application/json", 422, "description"),
        ("POST", "/v1/users".into(), json!({"name": "N\u{2066}", "email": "n@example.com"}).to_string(), "application/json", 422, "name"),
        ("POST", format!("/v1/devices/{}/listings", w.lock_a), json!({"listing": "L\u{7f}"}).to_string(), "application/json", 422, "listing"),
        ("POST", "/v1/credentials".into(), json!({"holder": guest, "name": "C\u{9f}", "secret": {"kind": "qr"}, "schedule": perm, "doors": [w.door_a]}).to_string(), "application/json", 422, "name"),
        // seeds/003: a guest's code is generated, never custom or typed in.
        ("POST", "/v1/credentials".into(), issue(json!({"kind": "pin", "pin": {"type": "custom", "value": "2580"}}), perm.clone(), json!([w.door_a])).to_string(), "application/json", 422, "pin"),
        ("POST", "/v1/credentials".into(), issue(json!({"kind": "pin", "pin": {"type": "manual", "value": "2580"}}), json!({"type": "temporary", "start": "2026-03-23T00:00:00Z", "end": "2026-03-24T00:00:00Z"}), json!([w.door_a])).to_string(), "application/json", 422, "pin"),
    ];
    let mut failures = Vec::new();
    for (method, path, body, ct, want, field) in &cases {
        let (s, v) = api
            .raw(method, path, Some(t), ct, body.clone().into_bytes())
            .await;
        if s != *want || v["field"] != *field || !v["rule"].is_string() {
            failures.push(format!("{method} {path}: want {want} {field}, got {s} {v}"));
        }
    }
    // The device endpoint: malformed bodies are 4xx too; a malformed
    // credential is an answer with decision "error".
    let sec = w.phone_a_secret.as_str();
    for (body, want, field) in [
        ("{\"id\": 1}", 422, "credential"),
        (
            "{\"id\": 1, \"credential\": {\"type\": \"pin\", \"value\": \"1\"}, \"extra\": 1}",
            422,
            "extra",
        ),
        (
            "{\"id\": -1, \"credential\": {\"type\": \"pin\", \"value\": \"1\"}}",
            422,
            "id",
        ),
        ("nope", 400, "body"),
    ] {
        let (s, v) = api
            .raw(
                "POST",
                &validate,
                Some(sec),
                "application/json",
                body.as_bytes().to_vec(),
            )
            .await;
        if s != want || v["field"] != field {
            failures.push(format!("validate {body}: want {want} {field}, got {s} {v}"));
        }
    }
    let r = api
        .validate(w.phone_a, sec, json!({"type": "pin", "value": "12ab"}))
        .await;
    assert_eq!(r["decision"], "error");
    // The guest rule is named; the name rule names neither the text nor
    // its bytes.
    let (_, e) = api
        .call(
            "POST",
            "/v1/credentials",
            Some(t),
            Some(issue(
                json!({"kind": "pin", "pin": {"type": "custom", "value": "2580"}}),
                perm.clone(),
                json!([w.door_a]),
            )),
        )
        .await;
    assert!(e["rule"].as_str().unwrap().contains("generated"), "{e}");
    let (_, e) = api
        .call(
            "POST",
            "/v1/organizations/0/holders",
            Some(t),
            Some(json!({"name": "Mal\u{202e}lory", "kind": "guest"})),
        )
        .await;
    let rule = e["rule"].as_str().unwrap();
    assert!(rule.contains("U+202E") && !rule.contains("Mal"), "{e}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let (_, doc) = api.call("GET", "/openapi.json", None, None).await;
    let mut n = 0;
    for route in reference_server::api::routes() {
        let (method, path) = (route.method, route.path.as_str());
        assert!(
            doc["paths"][path][method.to_lowercase()].is_object(),
            "{method} {path} not in the document"
        );
        let concrete: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "0" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let (_, body) = api
            .raw(
                method,
                &concrete,
                Some("u0.x"),
                "application/json",
                b"{}".to_vec(),
            )
            .await;
        assert_ne!(
            body["rule"], "no such route",
            "{method} {path} is documented but not mounted"
        );
        n += 1;
    }
    assert!(n >= 40);
    server.stop().await;
}

/// A method a served path does not take answers 405 naming the ones it
/// does (`Allow`, RFC 9110); a path no route serves stays a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_answers_405_with_allow() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        ("TRACE", "/v1/credentials/0", Some("GET, DELETE")),
        ("PATCH", "/v1/credentials/12", Some("GET, DELETE")),
        ("GET", "/v1/bootstrap", Some("POST")),
        ("PUT", "/v1/devices/3/sync", Some("GET, POST")),
        ("TRACE", "/healthz", Some("GET")),
        ("TRACE", "/v1/nowhere", None),
        ("GET", "/v1/credentials/0/nothing", None),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = client
            .request(m, format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let got = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let mut got_methods: Vec<String> = got
            .iter()
            .flat_map(|a| a.split(", ").map(String::from))
            .collect();
        got_methods.sort();
        let mut want: Vec<String> = allow
            .iter()
            .flat_map(|a| a.split(", ").map(String::from))
            .collect();
        want.sort();
        let want_status = if allow.is_some() { 405 } else { 404 };
        assert_eq!(
            (status, got_methods),
            (want_status, want),
            "{method} {path}"
        );
    }
    server.stop().await;
}

/// A reader without MQTT confirms its codes over HTTP: `GET sync` lists
/// what it must store and marks it sent (`setting`), `POST sync` with that
/// version marks it stored (the keypad then grants the code); a stale
/// version, or the fetched one after a newer change, is a 409; another
/// device's secret a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_confirms_its_codes_over_http_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let made = api
        .ok(
            "POST",
            &format!("/v1/doors/{}/devices", w.door_a),
            t,
            Some(json!({"kind": "keypad", "name": "Keypad 2", "linked_to": w.lock_a})),
        )
        .await;
    let keypad = id(&made, "device");
    let secret = made["mqtt"]["password"].as_str().unwrap().to_string();
    let resident = holder(&api, t, "Rita Resident", "member").await;
    let (code, pin) = pin_code(
        &api,
        t,
        resident,
        json!([w.door_a]),
        json!({"type": "permanent"}),
    )
    .await;
    let typed = json!({"type": "pin", "value": pin});
    // Not stored on the keypad yet: unknown there.
    let r = api.validate(keypad, &secret, typed.clone()).await;
    assert_eq!(r["reason"], "wrong_pin", "{r}");
    let path = format!("/v1/devices/{keypad}/sync");
    let (s, _) = api.call("GET", &path, Some(&w.phone_a_secret), None).await;
    assert_eq!(s, 401);
    let (s, batch) = api.call("GET", &path, Some(&secret), None).await;
    assert_eq!(s, 200, "{batch}");
    let version = batch["version"].as_u64().unwrap();
    let listed: Vec<u64> = batch["set"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential"].as_u64().unwrap())
        .collect();
    assert!(listed.contains(&code), "{batch}");
    let results: Vec<Value> = listed.iter().map(|c| json!({"credential": c})).collect();
    let (s, v) = api
        .call(
            "POST",
            &path,
            Some(&secret),
            Some(json!({"version": version + 1, "results": results})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    // Fetched is sent: the keypad's list shows the code being set.
    let sync_state = |codes: &Value, c: u64| {
        codes["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == c)
            .map(|x| x["sync"]["state"].clone())
    };
    let codes_path = format!("/v1/devices/{keypad}/codes");
    let codes = api.ok("GET", &codes_path, t, None).await;
    assert_eq!(sync_state(&codes, code), Some(json!("setting")), "{codes}");
    // A change after the fetch (a second code): the fetched version's ack
    // is stale now, as over MQTT, and sets nothing.
    let (code2, pin2) = pin_code(
        &api,
        t,
        resident,
        json!([w.door_a]),
        json!({"type": "permanent"}),
    )
    .await;
    let (s, v) = api
        .call(
            "POST",
            &path,
            Some(&secret),
            Some(json!({"version": version, "results": results})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let r = api.validate(keypad, &secret, typed.clone()).await;
    assert_eq!(r["reason"], "wrong_pin", "a stale ack stored nothing: {r}");
    // The batch of the moment holds both codes; its ack stores them.
    let (s, batch) = api.call("GET", &path, Some(&secret), None).await;
    assert_eq!(s, 200, "{batch}");
    let version = batch["version"].as_u64().unwrap();
    let results: Vec<Value> = batch["set"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({"credential": c["credential"]}))
        .collect();
    assert!(results.contains(&json!({"credential": code2})), "{batch}");
    api.ok(
        "POST",
        &path,
        &secret,
        Some(json!({"version": version, "results": results})),
    )
    .await;
    let codes = api.ok("GET", &codes_path, t, None).await;
    assert_eq!(sync_state(&codes, code2), Some(json!("set")), "{codes}");
    let r = api.validate(keypad, &secret, typed).await;
    assert_eq!(r["decision"], "granted", "{r}");
    let r = api
        .validate(keypad, &secret, json!({"type": "pin", "value": pin2}))
        .await;
    assert_eq!(r["decision"], "granted", "{r}");
    let (_, after) = api.call("GET", &path, Some(&secret), None).await;
    assert_eq!(after["set"], json!([]), "{after}");
    server.stop().await;
}

/// The store holds codes in plaintext (a lock system must push each code to
/// its locks): the data directory is its owner's only (0700) and every file
/// in it (database, `-wal`, `-shm`, `token.key`) is 0600 from its creation,
/// after writes and after a restart. Anything looser is reported.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_from_its_creation() {
    use reference_server::store::loose_permissions;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let files = [
        "reference-server.db",
        "reference-server.db-wal",
        "reference-server.db-shm",
        "token.key",
    ];
    let every_file_private = |when: &str| {
        assert_eq!(mode(&data), 0o700, "{when}: the directory");
        for f in files {
            assert_eq!(mode(&data.join(f)), 0o600, "{when}: {f}");
        }
        for e in std::fs::read_dir(&data).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{when}: {}", p.display());
        }
        assert_eq!(loose_permissions(&data).unwrap(), vec![], "{when}");
    };
    let server = start(&data, Clock::manual(ts(T0))).await;
    every_file_private("at start");
    let api = Api::new(server.url());
    let w = world(&api).await;
    let member = holder(&api, &w.owner, "Mia", "member").await;
    pin_code(
        &api,
        &w.owner,
        member,
        json!([w.door_a]),
        json!({"type": "permanent"}),
    )
    .await;
    server.service.flush().await.unwrap();
    every_file_private("after writes");
    server.stop().await;
    let server = start(&data, Clock::manual(ts(T0))).await;
    every_file_private("after a restart");
    server.stop().await;
    // A database made by an older version, or restored from a backup.
    let db = data.join("reference-server.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        loose_permissions(&data).unwrap(),
        vec![(data.clone(), 0o755), (db, 0o644)]
    );
}

/// `DELETE /v1/organizations/{org}`: only an owner of that organization
/// may (an admin is refused, anyone without a role there is answered as
/// for an unknown id); it takes everything in it (its devices can no
/// longer sign in, its codes and places are unknown), leaves another
/// organization alone, and a second delete finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_is_deleted_by_its_owner_with_everything_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let guest = holder(&api, t, "G", "guest").await;
    let (code, _) = pin_code(
        &api,
        t,
        guest,
        json!([w.door_a]),
        json!({"type": "permanent"}),
    )
    .await;
    let user = |name: &'static str| {
        let api = &api;
        async move {
            let u = api
                .ok(
                    "POST",
                    "/v1/users",
                    t,
                    Some(json!({"name": name, "email": format!("{name}@example.com")})),
                )
                .await;
            (id(&u, "user"), u["token"].as_str().unwrap().to_string())
        }
    };
    let (admin, admin_token) = user("admin").await;
    api.ok(
        "PUT",
        &format!("/v1/organizations/0/members/{admin}"),
        t,
        Some(json!({"role": "admin"})),
    )
    .await;
    let (_, stranger) = user("stranger").await;
    let (_, other_owner) = user("other").await;
    let other = id(
        &api.ok(
            "POST",
            "/v1/organizations",
            &other_owner,
            Some(json!({"name": "Elsewhere"})),
        )
        .await,
        "organization",
    );
    let other_site = id(
        &api.ok(
            "POST",
            &format!("/v1/organizations/{other}/sites"),
            &other_owner,
            Some(json!({"name": "Theirs", "time_zone": "UTC"})),
        )
        .await,
        "site",
    );
    let del = |token: Option<&str>, org: u64| {
        let api = &api;
        let token = token.map(str::to_string);
        async move {
            api.call(
                "DELETE",
                &format!("/v1/organizations/{org}"),
                token.as_deref(),
                None,
            )
            .await
            .0
        }
    };
    assert_eq!(del(None, 0).await, 401);
    assert_eq!(del(Some(&admin_token), 0).await, 403);
    assert_eq!(del(Some(&stranger), 0).await, 404);
    assert_eq!(del(Some(&other_owner), 0).await, 404);
    // Refused calls changed nothing: the phone still signs in.
    let (s, _) = api
        .call(
            "GET",
            &format!("/v1/devices/{}/sync", w.phone_a),
            Some(&w.phone_a_secret),
            None,
        )
        .await;
    assert_eq!(s, 200);

    assert_eq!(del(Some(t), 0).await, 200);
    for path in [
        "/v1/organizations/0".to_string(),
        format!("/v1/sites/{}", w.site),
        format!("/v1/devices/{}", w.lock_a),
        format!("/v1/credentials/{code}"),
    ] {
        let (s, v) = api.call("GET", &path, Some(t), None).await;
        assert_eq!(s, 404, "{path}: {v}");
    }
    // Its devices can no longer sign in.
    let (s, _) = api
        .call(
            "GET",
            &format!("/v1/devices/{}/sync", w.phone_a),
            Some(&w.phone_a_secret),
            None,
        )
        .await;
    assert_eq!(s, 401);
    // Its members have no role there any more.
    let me = api.ok("GET", "/v1/me", t, None).await;
    assert_eq!(me["memberships"], json!([]), "{me}");
    // Nothing is left to delete; the other organization is untouched.
    assert_eq!(del(Some(t), 0).await, 404);
    api.ok(
        "GET",
        &format!("/v1/sites/{other_site}"),
        &other_owner,
        None,
    )
    .await;
}
