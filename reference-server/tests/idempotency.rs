//! `Idempotency-Key` on the admin API's changes, over real HTTP against a
//! real server and its SQLite store: a replay runs nothing and answers the
//! first answer; another body is a 422; a key still in flight is a 409;
//! keys survive a restart, expire after 24 h and are each caller's own.

mod common;

use common::*;
use reference_server::domain::UserId;
use reference_server::service::Clock;
use reference_server::store::idempotency::Claim;
use serde_json::{json, Value};

/// A request with an `Idempotency-Key`; answers status, replay header and
/// the body's text as it came.
async fn keyed(
    api: &Api,
    method: &str,
    path: &str,
    token: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Option<String>, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = api
        .client
        .request(m, format!("{}{path}", api.url))
        .bearer_auth(token)
        .header("Idempotency-Key", key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.expect("request sent");
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), replayed, resp.text().await.unwrap())
}

fn guest(name: &str) -> Option<Value> {
    Some(json!({"name": name, "kind": "guest"}))
}

const HOLDERS: &str = "/v1/organizations/0/holders";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_replays_the_first_answer_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(ts("2026-03-23T10:00:00Z"));
    let server = start(dir.path(), clock.clone()).await;
    let api = Api::new(server.url());
    let owner = api.bootstrap().await;
    let t = owner.as_str();

    let (s, replayed, first) = keyed(&api, "POST", HOLDERS, t, "k-1", guest("Gina")).await;
    assert_eq!((s, replayed), (201, None), "{first}");
    let holder = id(&serde_json::from_str(&first).unwrap(), "holder");
    let (s, replayed, again) = keyed(&api, "POST", HOLDERS, t, "k-1", guest("Gina")).await;
    assert_eq!((s, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first, "the same bytes");
    // The replay made nothing: the next holder takes the next id.
    assert_eq!(holder_made(&api, t).await, holder + 1);

    // Another body, path or method with the key: 422, nothing made.
    for (method, path, body) in [
        ("POST", HOLDERS, guest("Other")),
        ("POST", "/v1/organizations", Some(json!({"name": "Org"}))),
    ] {
        let (s, replayed, text) = keyed(&api, method, path, t, "k-1", body).await;
        assert_eq!((s, replayed), (422, None), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["field"], "idempotency-key", "{v}");
    }
    assert_eq!(holder_made(&api, t).await, holder + 2);

    // A refusal is kept too: the same wrong request answers the same 404.
    let (s, _, refused) = keyed(&api, "POST", "/v1/holders/999/disable", t, "k-2", None).await;
    assert_eq!(s, 404, "{refused}");
    let (s, replayed, again) = keyed(&api, "POST", "/v1/holders/999/disable", t, "k-2", None).await;
    assert_eq!(
        (s, replayed.as_deref(), again),
        (404, Some("true"), refused)
    );

    // A restart keeps the key and its answer.
    server.stop().await;
    let server = start(dir.path(), clock.clone()).await;
    let api = Api::new(server.url());
    let (s, replayed, again) = keyed(&api, "POST", HOLDERS, t, "k-1", guest("Gina")).await;
    assert_eq!(
        (s, replayed.as_deref(), again),
        (201, Some("true"), first.clone())
    );

    // Kept a day by the server's clock; then the key is free again.
    clock.advance(jiff::SignedDuration::from_hours(24) - jiff::SignedDuration::from_secs(1));
    let (s, replayed, _) = keyed(&api, "POST", HOLDERS, t, "k-1", guest("Other")).await;
    assert_eq!((s, replayed), (422, None));
    clock.advance(jiff::SignedDuration::from_secs(1));
    let (s, replayed, text) = keyed(&api, "POST", HOLDERS, t, "k-1", guest("Other")).await;
    assert_eq!((s, replayed), (201, None), "{text}");
    assert_ne!(text, first);
    server.stop().await;
}

/// Creates a holder without a key; answers its id.
async fn holder_made(api: &Api, token: &str) -> u64 {
    id(
        &api.ok("POST", HOLDERS, token, guest("Probe")).await,
        "holder",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_flight_answers_409_until_its_request_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts("2026-03-23T10:00:00Z"))).await;
    let api = Api::new(server.url());
    let owner = api.bootstrap().await;
    let t = owner.as_str();
    let me = id(&api.ok("GET", "/v1/me", t, None).await["user"], "id");
    let keys = server.service.idempotency();
    // The test holds the key as a request still running would.
    let claim = keys
        .claim(UserId(me as u32), "busy", &[0; 32], server.service.now())
        .unwrap();
    assert_eq!(claim, Claim::Claimed);
    let (s, replayed, text) = keyed(&api, "POST", HOLDERS, t, "busy", guest("Gina")).await;
    assert_eq!((s, replayed), (409, None), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["field"], "idempotency-key", "{v}");
    let probe = holder_made(&api, t).await;
    assert_eq!(probe, 0, "the refused request made nothing");
    // Once it is freed (its request failed), a retry runs.
    keys.release(UserId(me as u32), "busy").unwrap();
    let (s, _, text) = keyed(&api, "POST", HOLDERS, t, "busy", guest("Gina")).await;
    assert_eq!(s, 201, "{text}");
    assert_eq!(id(&serde_json::from_str(&text).unwrap(), "holder"), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_each_callers_own_and_malformed_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts("2026-03-23T10:00:00Z"))).await;
    let api = Api::new(server.url());
    let owner = api.bootstrap().await;
    let other = api
        .ok(
            "POST",
            "/v1/users",
            &owner,
            Some(json!({"name": "Tom Tenant", "email": "tom@example.com"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let org = Some(json!({"name": "Same Name"}));
    let (s, _, mine) = keyed(
        &api,
        "POST",
        "/v1/organizations",
        &owner,
        "shared",
        org.clone(),
    )
    .await;
    assert_eq!(s, 201, "{mine}");
    // The same key and body from another tenant runs for them: their own
    // organization, not a replay of the owner's answer.
    let (s, replayed, theirs) = keyed(
        &api,
        "POST",
        "/v1/organizations",
        &other,
        "shared",
        org.clone(),
    )
    .await;
    assert_eq!((s, replayed), (201, None), "{theirs}");
    let (a, b): (Value, Value) = (
        serde_json::from_str(&mine).unwrap(),
        serde_json::from_str(&theirs).unwrap(),
    );
    assert_ne!(id(&a, "organization"), id(&b, "organization"));
    let (s, _, _) = keyed(&api, "POST", "/v1/organizations", &other, "shared", org).await;
    assert_eq!(s, 201);

    // Malformed keys: a clear 400 naming the header, nothing made.
    let long = "k".repeat(256);
    for bad in [long.as_str(), "", "two words"] {
        let (s, _, text) = keyed(&api, "POST", HOLDERS, &owner, bad, guest("Gina")).await;
        assert_eq!(s, 400, "{bad:?}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["field"], "idempotency-key", "{v}");
    }
    let longest = "k".repeat(255);
    let (s, _, text) = keyed(&api, "POST", HOLDERS, &owner, &longest, guest("Gina")).await;
    assert_eq!(s, 201, "{text}");
    assert_eq!(id(&serde_json::from_str(&text).unwrap(), "holder"), 0);

    // A key on a request that no user token signs is the route's to refuse.
    let (s, _, _) = keyed(&api, "POST", HOLDERS, "u0.wrong", "x", guest("Gina")).await;
    assert_eq!(s, 401);
    // GET takes no key: it is passed on untouched.
    let (s, replayed, _) = keyed(&api, "GET", "/v1/me", &owner, "", None).await;
    assert_eq!((s, replayed), (200, None));
    server.stop().await;
}
