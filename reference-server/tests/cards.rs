//! Card numbers are strings in the admin API, as on the device wire: a
//! card above 2^53 (which a JSON number cannot hold exactly) is issued,
//! revealed and checked with every digit; the number form of earlier
//! versions is still taken up to 2^53; bad ones answer 422.

mod common;

use common::*;
use reference_server::service::Clock;
use serde_json::{json, Value};

fn card(number: Value, door: u64, holder: u64) -> Value {
    json!({"holder": holder, "name": "Fob", "secret": {"kind": "card", "number": number},
           "schedule": {"type": "permanent"}, "doors": [door]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_are_strings_with_every_digit_and_the_old_number_form_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::manual(ts("2026-03-23T10:00:00Z"))).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let member = holder(&api, t, "Rita Resident", "member").await;

    // u64::MAX: 20 digits, far above 2^53.
    let big = "18446744073709551615";
    let c = id(
        &api.ok(
            "POST",
            "/v1/credentials",
            t,
            Some(card(json!(big), w.door_b, member)),
        )
        .await,
        "credential",
    );
    let shown = api
        .ok("POST", &format!("/v1/credentials/{c}/reveal"), t, None)
        .await;
    assert_eq!(shown["card"], big, "{shown}");
    let v = api
        .validate(
            w.phone_b,
            &w.phone_b_secret,
            json!({"type": "card", "value": big}),
        )
        .await;
    assert_eq!(v["decision"], "granted", "{v}");
    // One digit less is another card.
    let v = api
        .validate(
            w.phone_b,
            &w.phone_b_secret,
            json!({"type": "card", "value": "18446744073709551614"}),
        )
        .await;
    assert_eq!(v["decision"], "denied", "{v}");

    // The number form of earlier versions, up to 2^53; revealed as a string.
    let c = id(
        &api.ok(
            "POST",
            "/v1/credentials",
            t,
            Some(card(json!(99_001), w.door_b, member)),
        )
        .await,
        "credential",
    );
    let shown = api
        .ok("POST", &format!("/v1/credentials/{c}/reveal"), t, None)
        .await;
    assert_eq!(shown["card"], "99001", "{shown}");
    let at_limit = 1u64 << 53;
    let (s, v) = api
        .call(
            "POST",
            "/v1/credentials",
            Some(t),
            Some(card(json!(at_limit), w.door_b, member)),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // Refused with a 422 naming the field, nothing made.
    for bad in [
        json!(at_limit + 1),
        json!(-5),
        json!(""),
        json!("+5"),
        json!("12ab"),
        json!(" 12"),
        json!("18446744073709551616"),
        json!("000000000000000000001"),
    ] {
        let (s, v) = api
            .call(
                "POST",
                "/v1/credentials",
                Some(t),
                Some(card(bad.clone(), w.door_b, member)),
            )
            .await;
        assert_eq!(s, 422, "{bad}: {v}");
        assert!(
            v["field"].as_str().unwrap().starts_with("secret"),
            "{bad}: {v}"
        );
    }
    server.stop().await;
}
