//! Lists, deletes, partial updates and stable code ids over real HTTP:
//! paging in Seam's shape with signed cursors, 400s naming the bad
//! parameter, the delete rules (409 while something depends on it), PATCH
//! keeping what it does not name, and a changed PIN keeping its id while
//! its locks confirm it.

mod common;

use common::*;
use reference_server::service::Clock;
use serde_json::{json, Value};

const T0: &str = "2026-03-23T10:00:00Z";

/// Every page of `path` (`limit` items each), in order, as the ids under `key`.
async fn walk(api: &Api, t: &str, path: &str, limit: u32, key: &str) -> Vec<u64> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            None => format!("{path}{sep}limit={limit}"),
            Some(c) => format!("{path}{sep}limit={limit}&page_cursor={c}"),
        };
        let page = api.ok("GET", &url, t, None).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit as usize, "{page}");
        ids.extend(data.iter().map(|x| x[key].as_u64().unwrap()));
        let p = &page["pagination"];
        assert_eq!(
            p["has_next_page"].as_bool(),
            Some(!p["next_page_cursor"].is_null()),
            "{page}"
        );
        match p["next_page_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
    panic!("{path} never ended");
}

/// `(status, field)` of a GET.
async fn refused(api: &Api, t: &str, path: &str) -> (u16, String) {
    let (s, v) = api.call("GET", path, Some(t), None).await;
    (s, v["field"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_pages_by_id_and_refuses_bad_parameters_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let mut guests = Vec::new();
    for i in 0..5 {
        guests.push(holder(&api, t, &format!("G{i}"), "guest").await);
    }
    let member = holder(&api, t, "M", "member").await;
    // Every holder once, by id, whatever the page size.
    let all = walk(&api, t, "/v1/organizations/0/holders", 500, "id").await;
    assert!(all.windows(2).all(|p| p[0] < p[1]), "{all:?}");
    for limit in [1, 2, 4] {
        let paged = walk(&api, t, "/v1/organizations/0/holders", limit, "id").await;
        assert_eq!(paged, all, "limit {limit}");
    }
    // Filters, and paging within them.
    let only_guests = walk(&api, t, "/v1/organizations/0/holders?kind=guest", 2, "id").await;
    assert_eq!(only_guests, guests);
    assert!(!only_guests.contains(&member));
    // The default page is 50, and the biggest 500.
    let page = api.ok("GET", "/v1/organizations/0/holders", t, None).await;
    assert_eq!(page["data"].as_array().unwrap().len(), all.len());
    assert_eq!(page["pagination"]["has_next_page"], false);
    // Sites, doors, devices (with filters), locks, codes, schedules.
    assert_eq!(
        walk(&api, t, "/v1/organizations/0/sites", 1, "id").await,
        [w.site]
    );
    assert_eq!(
        walk(&api, t, "/v1/organizations/0/doors", 1, "id").await,
        [w.door_a, w.door_b]
    );
    let site_doors = format!("/v1/organizations/0/doors?site={}", w.site);
    assert_eq!(
        walk(&api, t, &site_doors, 5, "id").await,
        [w.door_a, w.door_b]
    );
    let mut devices = vec![w.lock_a, w.keypad_a, w.phone_a, w.phone_b];
    devices.sort();
    assert_eq!(
        walk(&api, t, "/v1/organizations/0/devices", 3, "id").await,
        devices
    );
    let at_a = format!("/v1/organizations/0/devices?door={}", w.door_a);
    assert_eq!(walk(&api, t, &at_a, 1, "id").await.len(), 3);
    let phones = "/v1/organizations/0/devices?kind=door_phone";
    assert_eq!(walk(&api, t, phones, 1, "id").await, [w.phone_a, w.phone_b]);
    let locks = format!("/v1/sites/{}/locks", w.site);
    assert_eq!(walk(&api, t, &locks, 1, "id").await, [w.lock_a]);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (c, _) = pin_code(
            &api,
            t,
            member,
            json!([w.door_a]),
            json!({"type": "permanent"}),
        )
        .await;
        codes.push(c);
    }
    let lock_codes = format!("/v1/devices/{}/codes", w.lock_a);
    assert_eq!(walk(&api, t, &lock_codes, 2, "id").await, codes);
    let schedule = format!("/v1/devices/{}/schedule", w.lock_a);
    assert_eq!(walk(&api, t, &schedule, 2, "credential").await, codes);

    // Bad parameters: a 400 naming each.
    let holders = "/v1/organizations/0/holders";
    for bad in ["0", "501", "ten", "-1", "2.5"] {
        let got = refused(&api, t, &format!("{holders}?limit={bad}")).await;
        assert_eq!(got, (400, "limit".into()), "limit={bad}");
    }
    let first = api.ok("GET", &format!("{holders}?limit=1"), t, None).await;
    let cursor = first["pagination"]["next_page_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let mut garbled = cursor.clone().into_bytes();
    garbled[5] = if garbled[5] == b'x' { b'y' } else { b'x' };
    let garbled = String::from_utf8(garbled).unwrap();
    let kinds_cursor = format!("{holders}?kind=guest&page_cursor={cursor}");
    let other_list = format!("/v1/organizations/0/sites?page_cursor={cursor}");
    for path in [
        format!("{holders}?page_cursor={garbled}"),
        format!("{holders}?page_cursor=AAAA"),
        format!("{holders}?page_cursor="),
        // A cursor of another list (another filter, another route).
        kinds_cursor,
        other_list,
    ] {
        assert_eq!(
            refused(&api, t, &path).await,
            (400, "page_cursor".into()),
            "{path}"
        );
    }
    for (path, field) in [
        (format!("{holders}?kind=bogus"), "kind"),
        ("/v1/organizations/0/devices?kind=toaster".into(), "kind"),
        ("/v1/organizations/0/devices?door=front".into(), "door"),
        ("/v1/organizations/0/doors?site=-3".into(), "site"),
        (format!("{holders}?colour=red"), "colour"),
        (
            format!("/v1/devices/{}/activity?kind=bogus", w.lock_a),
            "kind",
        ),
        (format!("{lock_codes}?limit=0"), "limit"),
        (format!("{locks}?page_cursor=zzz"), "page_cursor"),
    ] {
        assert_eq!(refused(&api, t, &path).await, (400, field.into()), "{path}");
    }
    // A known activity kind with nothing logged is an empty list, not a 400.
    let (s, v) = api
        .call(
            "GET",
            &format!("/v1/devices/{}/activity?kind=door_ajar", w.lock_a),
            Some(t),
            None,
        )
        .await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"data": [], "pagination": {"next_page_cursor": null, "has_next_page": false}})
        )
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_refuse_while_something_depends_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let conflict = |v: &Value, field: &str| {
        assert_eq!(v["error"], "conflict", "{v}");
        assert_eq!(v["field"], field, "{v}");
    };
    // A site with doors, a door with devices: 409, nothing changes.
    let (s, v) = api
        .call("DELETE", &format!("/v1/sites/{}", w.site), Some(t), None)
        .await;
    assert_eq!(s, 409, "{v}");
    conflict(&v, "site");
    let (s, v) = api
        .call("DELETE", &format!("/v1/doors/{}", w.door_b), Some(t), None)
        .await;
    assert_eq!(s, 409, "{v}");
    conflict(&v, "door");
    // A lock its keypad is linked to: 409 until the keypad goes.
    let (s, v) = api
        .call(
            "DELETE",
            &format!("/v1/devices/{}", w.lock_a),
            Some(t),
            None,
        )
        .await;
    assert_eq!(s, 409, "{v}");
    conflict(&v, "device");
    // A holder with a live code: 409 until it is revoked.
    let guest = holder(&api, t, "Gus", "guest").await;
    let (code, _) = pin_code(
        &api,
        t,
        guest,
        json!([w.door_b]),
        json!({"type": "permanent"}),
    )
    .await;
    let (s, v) = api
        .call("DELETE", &format!("/v1/holders/{guest}"), Some(t), None)
        .await;
    assert_eq!(s, 409, "{v}");
    conflict(&v, "holder");

    // Phone B goes: it can no longer sign in, and no list shows it.
    api.ok("DELETE", &format!("/v1/devices/{}", w.phone_b), t, None)
        .await;
    let (s, _) = api
        .call("GET", &format!("/v1/devices/{}", w.phone_b), Some(t), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/devices/{}/validate", w.phone_b),
            Some(&w.phone_b_secret),
            Some(json!({"id": 1, "credential": {"type": "pin", "value": "1234"}})),
        )
        .await;
    assert_eq!(s, 401, "a deleted device's secret opens nothing");
    let listed = walk(&api, t, "/v1/organizations/0/devices", 50, "id").await;
    assert!(!listed.contains(&w.phone_b), "{listed:?}");
    // Door B still has a live code: 409; revoked, the door and holder go.
    let (s, v) = api
        .call("DELETE", &format!("/v1/doors/{}", w.door_b), Some(t), None)
        .await;
    assert_eq!(s, 409, "{v}");
    api.ok("DELETE", &format!("/v1/credentials/{code}"), t, None)
        .await;
    api.ok("DELETE", &format!("/v1/doors/{}", w.door_b), t, None)
        .await;
    api.ok("DELETE", &format!("/v1/holders/{guest}"), t, None)
        .await;
    let (s, _) = api
        .call("DELETE", &format!("/v1/holders/{guest}"), Some(t), None)
        .await;
    assert_eq!(s, 404, "a deleted holder is an unknown one");
    // Deleted things are gone from the reads and the lists.
    let doors = walk(&api, t, "/v1/organizations/0/doors", 50, "id").await;
    assert_eq!(doors, [w.door_a]);
    let site = api
        .ok("GET", &format!("/v1/sites/{}", w.site), t, None)
        .await;
    assert_eq!(site["doors"].as_array().unwrap().len(), 1, "{site}");
    let holders = walk(&api, t, "/v1/organizations/0/holders", 50, "id").await;
    assert!(!holders.contains(&guest));
    // A new site without doors goes at once.
    let empty = id(
        &api.ok(
            "POST",
            "/v1/organizations/0/sites",
            t,
            Some(json!({"name": "Empty", "time_zone": "UTC"})),
        )
        .await,
        "site",
    );
    api.ok("DELETE", &format!("/v1/sites/{empty}"), t, None)
        .await;
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/sites/{empty}/doors"),
            Some(t),
            Some(json!({"name": "D"})),
        )
        .await;
    assert_eq!(s, 404, "nothing is made under a deleted site");
    server.stop().await;

    // After a restart: still deleted, the secret still refused.
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let (s, _) = api
        .call("GET", &format!("/v1/devices/{}", w.phone_b), Some(t), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/devices/{}/validate", w.phone_b),
            Some(&w.phone_b_secret),
            Some(json!({"id": 1, "credential": {"type": "pin", "value": "1234"}})),
        )
        .await;
    assert_eq!(s, 401);
    let doors = walk(&api, t, "/v1/organizations/0/doors", 50, "id").await;
    assert_eq!(doors, [w.door_a]);
    let sites = walk(&api, t, "/v1/organizations/0/sites", 50, "id").await;
    assert_eq!(sites, [w.site]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_keeps_what_it_does_not_name_and_put_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let settings = |v: &Value| v["site"]["settings"].clone();
    let site_path = format!("/v1/sites/{}", w.site);
    let before = settings(&api.ok("GET", &site_path, t, None).await);
    assert_eq!(before["custom_pins"], true, "{before}");
    // PATCH names six_digit_pins only: custom_pins and lockout stay.
    api.ok(
        "PATCH",
        &format!("{site_path}/settings"),
        t,
        Some(json!({"six_digit_pins": false})),
    )
    .await;
    let after = settings(&api.ok("GET", &site_path, t, None).await);
    assert_eq!(after["six_digit_pins"], false);
    assert_eq!(after["custom_pins"], true);
    assert_eq!(after["lockout"], before["lockout"]);
    // An unknown field is refused by name; a bad lockout changes nothing.
    let (s, v) = api
        .call(
            "PATCH",
            &format!("{site_path}/settings"),
            Some(t),
            Some(json!({"custom_pin": false})),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("custom_pin")), "{v}");
    // An array is no patch (serde would read it positionally as one that
    // names nothing): the wrong type, for settings and holders alike.
    let someone = holder(&api, t, "Someone", "member").await;
    for path in [
        format!("{site_path}/settings"),
        format!("/v1/holders/{someone}"),
    ] {
        let (s, v) = api
            .call("PATCH", &path, Some(t), Some(json!([null, null])))
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("body")), "{path}: {v}");
    }
    // PUT replaces: what it leaves out takes its default.
    api.ok(
        "PUT",
        &format!("{site_path}/settings"),
        t,
        Some(json!({"six_digit_pins": true})),
    )
    .await;
    let replaced = settings(&api.ok("GET", &site_path, t, None).await);
    assert_eq!(replaced["custom_pins"], false, "{replaced}");

    // A holder's name and disabled flag, each alone.
    let h = holder(&api, t, "Old name", "member").await;
    api.ok(
        "PATCH",
        &format!("/v1/holders/{h}"),
        t,
        Some(json!({"name": "New name"})),
    )
    .await;
    api.ok(
        "PATCH",
        &format!("/v1/holders/{h}"),
        t,
        Some(json!({"disabled": true})),
    )
    .await;
    let list = api
        .ok("GET", "/v1/organizations/0/holders?kind=member", t, None)
        .await;
    let me = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == h)
        .unwrap()
        .clone();
    assert_eq!(
        (me["name"].as_str(), me["disabled"].as_bool()),
        (Some("New name"), Some(true)),
        "{me}"
    );
    let (s, v) = api
        .call(
            "PATCH",
            &format!("/v1/holders/{h}"),
            Some(t),
            Some(json!({"name": ""})),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("name")), "{v}");
    let (s, v) = api
        .call(
            "PATCH",
            &format!("/v1/holders/{h}"),
            Some(t),
            Some(json!({"floors": {"type": "follow_holder", "floors": h}})),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("floors")), "{v}");
    server.stop().await;
}

/// One HTTP sync round for a keypad: fetch, acknowledge every entry.
async fn sync_round(api: &Api, keypad: u64, secret: &str) -> Value {
    let path = format!("/v1/devices/{keypad}/sync");
    let (s, batch) = api.call("GET", &path, Some(secret), None).await;
    assert_eq!(s, 200, "{batch}");
    let mut results: Vec<Value> = Vec::new();
    for list in ["set", "remove"] {
        for c in batch[list].as_array().into_iter().flatten() {
            let id = if c.is_u64() {
                c.clone()
            } else {
                c["credential"].clone()
            };
            results.push(json!({"credential": id}));
        }
    }
    api.ok(
        "POST",
        &path,
        secret,
        Some(json!({"version": batch["version"], "results": results})),
    )
    .await;
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_pin_keeps_its_id_and_walks_setting_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts(T0))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let made = api
        .ok(
            "POST",
            &format!("/v1/doors/{}/devices", w.door_b),
            t,
            Some(json!({"kind": "keypad", "name": "Gate keypad"})),
        )
        .await;
    let keypad = id(&made, "device");
    let secret = made["mqtt"]["password"].as_str().unwrap().to_string();
    let m = holder(&api, t, "Mo", "member").await;
    let (code, old_pin) =
        pin_code(&api, t, m, json!([w.door_b]), json!({"type": "permanent"})).await;
    let view = |v: Value| {
        (
            v["id"].as_u64(),
            v["sync_status"].clone(),
            v["previous_pin_on"].clone(),
        )
    };
    let cred = format!("/v1/credentials/{code}");
    assert_eq!(
        view(api.ok("GET", &cred, t, None).await),
        (Some(code), json!("setting"), json!([]))
    );
    sync_round(&api, keypad, &secret).await;
    assert_eq!(
        view(api.ok("GET", &cred, t, None).await),
        (Some(code), json!("set"), json!([]))
    );
    let check = |pin: String| {
        let api = api.clone();
        let secret = secret.clone();
        async move {
            api.validate(keypad, &secret, json!({"type": "pin", "value": pin}))
                .await
        }
    };
    assert_eq!(check(old_pin.clone()).await["decision"], "granted");

    // The change answers the same id; the code is `setting` again and the
    // old PIN still opens the keypad, which has not confirmed yet.
    let changed = api
        .ok(
            "PUT",
            &format!("{cred}/pin"),
            t,
            Some(json!({"pin": {"type": "manual", "value": "8302"}})),
        )
        .await;
    assert_eq!(
        changed,
        json!({"credential": code, "sync_status": "setting"})
    );
    assert_eq!(
        view(api.ok("GET", &cred, t, None).await),
        (Some(code), json!("setting"), json!([keypad]))
    );
    assert_eq!(
        check(old_pin.clone()).await["decision"],
        "granted",
        "until the keypad confirms"
    );
    let revealed = api.ok("POST", &format!("{cred}/reveal"), t, None).await;
    assert_eq!(
        (revealed["credential"].as_u64(), revealed["pin"].as_str()),
        (Some(code), Some("8302"))
    );
    // The lists show the code once, under its id.
    let codes = walk(&api, t, &format!("/v1/devices/{keypad}/codes"), 50, "id").await;
    assert_eq!(codes, [code]);
    // The keypad stores the new PIN (set), then drops the old (removing
    // until then): the code is `set` with no earlier PIN left.
    sync_round(&api, keypad, &secret).await;
    let (_, status, _) = view(api.ok("GET", &cred, t, None).await);
    assert_eq!(status, json!("set"));
    sync_round(&api, keypad, &secret).await;
    assert_eq!(
        view(api.ok("GET", &cred, t, None).await),
        (Some(code), json!("set"), json!([]))
    );
    assert_eq!(check("8302".into()).await["decision"], "granted");
    assert_eq!(check(old_pin.clone()).await["reason"], "wrong_pin");
    // A second change, under the same id again; deleting it by that id
    // takes the code off the keypad: `removing`, then `removed`.
    let again = api
        .ok(
            "PUT",
            &format!("{cred}/pin"),
            t,
            Some(json!({"pin": {"type": "manual", "value": "5921"}})),
        )
        .await;
    assert_eq!(again["credential"], code);
    api.ok("DELETE", &cred, t, None).await;
    let (_, status, on) = view(api.ok("GET", &cred, t, None).await);
    assert_eq!(status, json!("removing"));
    assert_eq!(
        on,
        json!([keypad]),
        "the last confirmed PIN is still on the keypad"
    );
    sync_round(&api, keypad, &secret).await;
    let (_, status, on) = view(api.ok("GET", &cred, t, None).await);
    assert_eq!((status, on), (json!("removed"), json!([])));
    assert_eq!(check("8302".into()).await["reason"], "wrong_pin");
    assert_eq!(check("5921".into()).await["reason"], "wrong_pin");
    server.stop().await;
}
