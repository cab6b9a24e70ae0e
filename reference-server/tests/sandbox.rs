//! The sandbox controls (`POST /v1/devices/{device}/simulate/{action}`)
//! with a real HTTP client against the real server: for a device that is
//! not connected the server acts the action out through the device's own
//! intake (the event lands in `GET /v1/events`, the device view changes);
//! for a device connected over MQTT (the embedded broker) the action goes
//! to the device as a `simulate` command, and what lands is the event the
//! device itself sends. Role, organization and body checks as on every
//! admin route.

mod common;
mod mqtt_support;

use std::time::Duration;

use common::*;
use mqtt_support::{Device, Received};
use reference_server::domain::{DeviceId, SiteId};
use reference_server::gateway::{self, BrokerChoice};
use reference_server::protocol::{
    CommandAck, CommandKind, CommandResult, Event, EventKind, How, SimAction,
};
use reference_server::service::Clock;
use serde_json::{json, Value};

/// Hang guard only: no test measures speed.
const HANG_GUARD: Duration = Duration::from_secs(20);

async fn simulate(api: &Api, t: &str, device: u64, action: &str, body: Option<Value>) -> Value {
    api.ok(
        "POST",
        &format!("/v1/devices/{device}/simulate/{action}"),
        t,
        body,
    )
    .await
}

/// The newest event of `device` in the organization's log.
async fn newest_event(api: &Api, t: &str, device: u64) -> Value {
    let page = api
        .ok(
            "GET",
            &format!("/v1/events?organization_id=0&device_id={device}&limit=1"),
            t,
            None,
        )
        .await;
    page["data"][0].clone()
}

/// The id of the newest event in the organization's log (0: none).
async fn last_id(api: &Api, t: &str) -> u64 {
    let page = api
        .ok("GET", "/v1/events?organization_id=0&limit=1", t, None)
        .await;
    page["data"][0]["event_id"]
        .as_str()
        .map_or(0, |s| s.parse().unwrap())
}

/// The device's events logged after event `after`, oldest first.
async fn events_after(api: &Api, t: &str, device: u64, after: u64) -> Vec<Value> {
    let page = api
        .ok(
            "GET",
            &format!("/v1/events?organization_id=0&device_id={device}&limit=20"),
            t,
            None,
        )
        .await;
    let mut evs: Vec<Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_id"].as_str().unwrap().parse::<u64>().unwrap() > after)
        .cloned()
        .collect();
    evs.reverse();
    evs
}

async fn view(api: &Api, t: &str, device: u64) -> Value {
    api.ok("GET", &format!("/v1/devices/{device}"), t, None)
        .await
}

/// A device added over the API: (id, MQTT password).
async fn add_device(api: &Api, t: &str, door: u64, body: Value) -> (u64, String) {
    let v = api
        .ok("POST", &format!("/v1/doors/{door}/devices"), t, Some(body))
        .await;
    (
        id(&v, "device"),
        v["mqtt"]["password"].as_str().unwrap().to_string(),
    )
}

/// One sandbox step: the action, its body, the event type it makes, the
/// event's method, and a field of the device view with its value after.
type Step<'a> = (
    &'a str,
    Option<Value>,
    &'a str,
    Option<&'a str>,
    (&'a str, Value),
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_on_a_sandbox_lock_lands_as_its_event_and_changes_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::system()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let lock = w.lock_a;
    let guest = holder(&api, t, "Gina", "guest").await;
    let (code_id, pin) = pin_code(
        &api,
        t,
        guest,
        json!([w.door_a]),
        json!({"type": "permanent"}),
    )
    .await;
    let wrong = if pin == "0000" { "1111" } else { "0000" };

    let steps: Vec<Step> = vec![
        (
            "connect",
            None,
            "device.connected",
            None,
            ("online", json!(true)),
        ),
        (
            "lock",
            None,
            "lock.locked",
            Some("manual"),
            ("lock_state", json!("locked")),
        ),
        (
            "unlock",
            None,
            "lock.unlocked",
            Some("manual"),
            ("lock_state", json!("unlocked")),
        ),
        (
            "door_open",
            None,
            "device.door_opened",
            None,
            ("door_state", json!("open")),
        ),
        (
            "door_close",
            None,
            "device.door_closed",
            None,
            ("door_state", json!("closed")),
        ),
        (
            "door_forced_open",
            None,
            "device.door_forced_open",
            None,
            ("door_state", json!("open")),
        ),
        (
            "door_close",
            None,
            "device.door_closed",
            None,
            ("door_state", json!("closed")),
        ),
        (
            "door_left_open",
            None,
            "device.door_left_open",
            None,
            ("door_state", json!("open")),
        ),
        ("jam", None, "device.jammed", None, ("jammed", json!(true))),
        (
            "lock",
            None,
            "lock.locked",
            Some("manual"),
            ("jammed", json!(false)),
        ),
        (
            "keypad_code_entry",
            Some(json!({"code": pin})),
            "lock.unlocked",
            Some("keycode"),
            ("lock_state", json!("unlocked")),
        ),
        (
            "battery",
            Some(json!({"level_pct": 12})),
            "device.low_battery",
            None,
            ("battery_pct", json!(12)),
        ),
        (
            "disconnect",
            None,
            "device.disconnected",
            None,
            ("online", json!(false)),
        ),
    ];
    for (action, body, event_type, method, (field, want)) in steps {
        let before = last_id(&api, t).await;
        let done = simulate(&api, t, lock, action, body).await;
        assert_eq!(done["by"], "server", "{action}: {done}");
        assert_eq!(done["result"], "ok", "{action}: {done}");
        assert_eq!(done["action"], action);
        let evs = events_after(&api, t, lock, before).await;
        // A connect also stores the lock's pending codes (the sandbox
        // plays its sync): those are `access_code.*` events of their own.
        let (codes, device_events): (Vec<Value>, Vec<Value>) = evs.iter().cloned().partition(|e| {
            e["event_type"]
                .as_str()
                .unwrap()
                .starts_with("access_code.")
        });
        if action == "connect" {
            assert_eq!(codes.len(), 1, "{codes:?}");
            assert_eq!(codes[0]["event_type"], "access_code.set_on_device");
            assert_eq!(codes[0]["access_code_id"], code_id);
        }
        assert_eq!(device_events.len(), 1, "{action}: {device_events:?}");
        let ev = device_events[0].clone();
        assert_eq!(ev["event_type"], event_type, "{action}: {evs:?}");
        assert_eq!(ev["device_id"], lock);
        if let Some(m) = method {
            assert_eq!(ev["method"], m, "{action}: {ev}");
        }
        let v = view(&api, t, lock).await;
        assert_eq!(v[field], want, "{action}: the view says {v}");
    }
    // The code entry was checked by the engine: the event names the code.
    let unlocked = api
        .ok(
            "GET",
            &format!("/v1/events?organization_id=0&device_id={lock}&type=lock.unlocked&limit=1"),
            t,
            None,
        )
        .await;
    assert_eq!(unlocked["data"][0]["access_code_id"], code_id);
    assert_eq!(unlocked["data"][0]["method"], "keycode");

    // A wrong PIN: denied by the engine, with the reason, in the answer
    // and in the event.
    let done = simulate(
        &api,
        t,
        lock,
        "keypad_code_entry",
        Some(json!({"code": wrong})),
    )
    .await;
    assert_eq!(
        (done["decision"].clone(), done["reason"].clone()),
        (json!("denied"), json!("wrong_pin"))
    );
    let ev = newest_event(&api, t, lock).await;
    assert_eq!(ev["event_type"], "lock.access_denied", "{ev}");
    assert_eq!(
        (ev["method"].clone(), ev["reason"].clone()),
        (json!("keycode"), json!("wrong_pin"))
    );

    // A card nobody holds.
    let done = simulate(
        &api,
        t,
        lock,
        "card_tap",
        Some(json!({"card_number": "18446744073709551615"})),
    )
    .await;
    assert_eq!(done["decision"], "denied", "{done}");
    let ev = newest_event(&api, t, lock).await;
    assert_eq!(ev["event_type"], "lock.access_denied", "{ev}");
    assert_eq!(ev["method"], "card");
    assert_eq!(ev["reason"], done["reason"]);

    // A battery above the low threshold: the health says it, no event.
    let before = newest_event(&api, t, lock).await;
    simulate(&api, t, lock, "battery", Some(json!({"level_pct": 80}))).await;
    assert_eq!(view(&api, t, lock).await["battery_pct"], 80);
    assert_eq!(
        newest_event(&api, t, lock).await["event_id"],
        before["event_id"]
    );

    // The activity log has the entries a device's own events make.
    let activity = api
        .ok(
            "GET",
            &format!("/v1/devices/{lock}/activity?kind=motor_blocked"),
            t,
            None,
        )
        .await;
    assert_eq!(
        activity["data"].as_array().map(Vec::len),
        Some(1),
        "{activity}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_kind_takes_the_actions_that_fit_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::system()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let (sensor, _) = add_device(
        &api,
        t,
        w.door_a,
        json!({"kind": "door_sensor", "name": "Door contact"}),
    )
    .await;

    // A door sensor sees the door.
    simulate(&api, t, sensor, "door_forced_open", None).await;
    assert_eq!(
        newest_event(&api, t, sensor).await["event_type"],
        "device.door_forced_open"
    );
    assert_eq!(view(&api, t, sensor).await["door_state"], "open");
    // A keypad reads codes: an unknown one is denied with the reason.
    let done = simulate(
        &api,
        t,
        w.keypad_a,
        "keypad_code_entry",
        Some(json!({"code": "13579"})),
    )
    .await;
    let ev = newest_event(&api, t, w.keypad_a).await;
    assert_eq!(ev["event_type"], "lock.access_denied", "{ev}");
    assert_eq!(ev["reason"], done["reason"]);
    // A door phone has a battery like every device.
    simulate(&api, t, w.phone_a, "battery", Some(json!({"level_pct": 5}))).await;
    let ev = newest_event(&api, t, w.phone_a).await;
    assert_eq!(
        (ev["event_type"].clone(), ev["battery_pct"].clone()),
        (json!("device.low_battery"), json!(5))
    );

    // What does not fit the kind: 409 naming why, and nothing logged.
    for (device, action, body, why) in [
        (
            sensor,
            "keypad_code_entry",
            Some(json!({"code": "1234"})),
            "reads codes",
        ),
        (
            sensor,
            "card_tap",
            Some(json!({"card_number": "42"})),
            "reads codes",
        ),
        (sensor, "jam", None, "bolt"),
        (w.keypad_a, "lock", None, "bolt"),
        (w.keypad_a, "door_open", None, "sees the door"),
        (w.phone_a, "unlock", None, "bolt"),
        (w.phone_a, "door_left_open", None, "sees the door"),
    ] {
        let before = newest_event(&api, t, device).await;
        let (s, v) = api
            .call(
                "POST",
                &format!("/v1/devices/{device}/simulate/{action}"),
                Some(t),
                body,
            )
            .await;
        assert_eq!(s, 409, "{action} on {device}: {v}");
        assert_eq!(v["field"], "action");
        let rule = v["rule"].as_str().unwrap();
        assert!(rule.contains(action) && rule.contains(why), "{rule}");
        assert_eq!(
            newest_event(&api, t, device).await,
            before,
            "{action}: nothing logged"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_routes_check_the_role_the_organization_and_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::system()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let lock = w.lock_a;
    let user = |name: &str| {
        let api = api.clone();
        let (t, name) = (t.to_string(), name.to_string());
        async move {
            let u = api
                .ok(
                    "POST",
                    "/v1/users",
                    &t,
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
    api.ok(
        "POST",
        "/v1/organizations",
        &stranger,
        Some(json!({"name": "Elsewhere"})),
    )
    .await;
    let path = format!("/v1/devices/{lock}/simulate/jam");
    let before = newest_event(&api, t, lock).await;

    // No token, a bad token.
    assert_eq!(api.call("POST", &path, None, None).await.0, 401);
    assert_eq!(api.call("POST", &path, Some("u0.nope"), None).await.0, 401);
    // An admin of the organization may not (owner only): 403.
    assert_eq!(
        api.call("POST", &path, Some(&admin_token), None).await.0,
        403
    );
    // The owner of another organization hears what an unknown device says.
    let (s, other) = api.call("POST", &path, Some(&stranger), None).await;
    let (s2, unknown) = api
        .call(
            "POST",
            "/v1/devices/999999/simulate/jam",
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!((s, s2), (404, 404));
    assert_eq!(other, unknown);
    assert_eq!(newest_event(&api, t, lock).await, before, "nothing logged");

    // Bad bodies: the field is named, nothing logged.
    let post = |action: &str, body: Value| {
        let api = api.clone();
        let path = format!("/v1/devices/{lock}/simulate/{action}");
        let t = t.to_string();
        async move { api.call("POST", &path, Some(&t), Some(body)).await }
    };
    for (action, body, status, field) in [
        ("keypad_code_entry", json!({}), 422, "code"),
        ("keypad_code_entry", json!({"code": "12ab"}), 422, "code"),
        (
            "keypad_code_entry",
            json!({"code": "1234567890123"}),
            422,
            "code",
        ),
        ("keypad_code_entry", json!({"code": 1234}), 422, "code"),
        (
            "keypad_code_entry",
            json!({"code": "1234", "colour": "red"}),
            422,
            "colour",
        ),
        ("card_tap", json!({"card_number": 42}), 422, "card_number"),
        (
            "card_tap",
            json!({"card_number": "-42"}),
            422,
            "card_number",
        ),
        (
            "card_tap",
            json!({"card_number": "18446744073709551616"}),
            422,
            "card_number",
        ),
        ("battery", json!({"level_pct": 101}), 422, "level_pct"),
        ("battery", json!({"level_pct": -1}), 422, "level_pct"),
        ("battery", json!({"level_pct": "50"}), 422, "level_pct"),
    ] {
        let (s, v) = post(action, body.clone()).await;
        assert_eq!(
            (s, v["field"].as_str()),
            (status, Some(field)),
            "{action} {body}: {v}"
        );
    }
    let (s, _) = api
        .raw(
            "POST",
            &format!("/v1/devices/{lock}/simulate/battery"),
            Some(t),
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(s, 400);
    // An action that does not exist is no route.
    assert_eq!(
        api.call(
            "POST",
            &format!("/v1/devices/{lock}/simulate/explode"),
            Some(t),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(newest_event(&api, t, lock).await, before, "nothing logged");
    server.stop().await;
}

/// A device connected over MQTT gets the action as a `simulate` command and
/// acts it out: what lands is the event it sends itself (its own `seq`),
/// and a code entry goes through its own check over MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_device_gets_the_action_as_a_command_and_its_own_event_lands() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::system()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let mqtt = gateway::serve(
        server.service.clone(),
        BrokerChoice::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
        },
        |_| {},
    )
    .await
    .expect("mqtt serves");
    tokio::time::timeout(HANG_GUARD, mqtt.gateway.ready())
        .await
        .expect("gateway subscribed");
    let port: u16 = mqtt.device_url.rsplit(':').next().unwrap().parse().unwrap();
    let (lock, secret) = add_device(
        &api,
        t,
        w.door_b,
        json!({"kind": "lock", "name": "Live lock"}),
    )
    .await;
    let mut dev = Device::connect(port, SiteId(w.site as u32), DeviceId(lock as u32), &secret)
        .await
        .expect("the lock connects");
    tokio::time::timeout(HANG_GUARD, async {
        while view(&api, t, lock).await["online"] != true {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server sees the lock online");

    // The lock acts a jam out: the HTTP answer waits for its ack.
    let asked = {
        let api = api.clone();
        let t = t.to_string();
        tokio::spawn(async move { simulate(&api, &t, lock, "jam", None).await })
    };
    let cmd = loop {
        match tokio::time::timeout(HANG_GUARD, dev.next())
            .await
            .expect("a command")
        {
            Received::Cmd(c) => break c,
            _ => continue,
        }
    };
    assert_eq!(cmd.command, CommandKind::Simulate);
    assert_eq!(cmd.simulate, Some(SimAction::Jam));
    let at = "2026-11-23T08:00:00Z".parse().unwrap();
    dev.send_event(&Event {
        seq: 7,
        boot: 0,
        at,
        kind: EventKind::MotorBlocked,
    })
    .await;
    dev.ack_cmd(&CommandAck {
        id: cmd.id,
        result: CommandResult::Ok,
    })
    .await;
    let done = asked.await.unwrap();
    assert_eq!(
        (done["by"].clone(), done["result"].clone()),
        (json!("device"), json!("ok"))
    );
    let ev = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let ev = newest_event(&api, t, lock).await;
            if ev["event_type"] == "device.jammed" {
                return ev;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lock's event lands");
    // The device's own event (its time), not one the server made.
    assert_eq!(ev["occurred_at"], "2026-11-23T08:00:00Z");
    assert_eq!(view(&api, t, lock).await["jammed"], true);
    let activity = api
        .ok(
            "GET",
            &format!("/v1/devices/{lock}/activity?kind=motor_blocked"),
            t,
            None,
        )
        .await;
    assert_eq!(activity["data"][0]["seq"], 7, "{activity}");

    // A code entry: the lock checks the code over MQTT as it checks any
    // typed code, and reports what it did.
    let asked = {
        let api = api.clone();
        let t = t.to_string();
        tokio::spawn(async move {
            simulate(
                &api,
                &t,
                lock,
                "keypad_code_entry",
                Some(json!({"code": "97531"})),
            )
            .await
        })
    };
    let cmd = loop {
        if let Received::Cmd(c) = tokio::time::timeout(HANG_GUARD, dev.next())
            .await
            .expect("a command")
        {
            break c;
        }
    };
    let Some(SimAction::KeypadCodeEntry { code }) = cmd.simulate.clone() else {
        panic!("a code entry, got {:?}", cmd.simulate);
    };
    let answer = dev.present_pin(&code).await;
    let reason = answer.reason.expect("denied with a reason");
    dev.send_event(&Event {
        seq: 8,
        boot: 0,
        at,
        kind: EventKind::AccessDenied {
            how: How::Keypad,
            reason,
        },
    })
    .await;
    dev.ack_cmd(&CommandAck {
        id: cmd.id,
        result: CommandResult::Ok,
    })
    .await;
    assert_eq!(asked.await.unwrap()["by"], "device");
    let ev = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let ev = newest_event(&api, t, lock).await;
            if ev["event_type"] == "lock.access_denied" {
                return ev;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lock's denial lands");
    assert_eq!(ev["reason"], reason.as_str());
    assert_eq!(ev["method"], "keycode");
    mqtt.gateway.shutdown().await;
    server.stop().await;
}
