//! The device protocol end to end through the embedded broker: plain
//! rumqttc clients play locks against the real gateway and service.

mod mqtt_support;

use std::time::Duration;

use mqtt_support::scenarios::{self, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_pin_granted_wrong_pin_denied_with_reason() {
    scenarios::valid_pin_granted_wrong_pin_denied_with_reason(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_issued_code_reaches_an_online_lock_and_becomes_set() {
    scenarios::admin_issued_code_reaches_an_online_lock_and_becomes_set(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then() {
    scenarios::offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then(
        Broker::Embedded,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_sync_is_retried_then_marked_timed_out() {
    scenarios::unacked_sync_is_retried_then_marked_timed_out(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_logged_once() {
    scenarios::a_redelivered_event_is_logged_once(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebooted_lock_asks_for_a_full_resync() {
    scenarios::a_rebooted_lock_asks_for_a_full_resync(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_boot_restarts_seq_without_losing_events() {
    scenarios::a_new_boot_restarts_seq_without_losing_events(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_counted_and_dropped_without_harm_to_others() {
    scenarios::bad_payloads_are_counted_and_dropped_without_harm_to_others(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_open_command_round_trip() {
    scenarios::remote_open_command_round_trip(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_speak_for_another() {
    scenarios::a_device_cannot_speak_for_another(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_view_shows_what_its_events_said() {
    scenarios::the_device_view_shows_what_its_events_said(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_of_buffered_events_is_logged_whole() {
    scenarios::a_flush_of_buffered_events_is_logged_whole(Broker::Embedded).await;
}

/// The gateway records a round of sync bookkeeping at once: the engine
/// says which devices a change touched (`Applied::sync_changed`), and
/// `Service::apply_batch` applies one `SyncSent` per device under one
/// engine write lock as one store job, each command succeeding or failing
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_round_is_one_store_job_and_each_command_answers_alone() {
    use reference_server::domain::{Actor, DeviceId, SyncState};
    use reference_server::engine::Command;
    use reference_server::service::ServiceError;
    use reference_server::EngineError;

    let w = mqtt_support::fixture::world(3).await;
    let svc = &w.service;
    let code = w.issue_pin("4826").await;
    let devices: Vec<DeviceId> = (0..3).map(|i| w.device(i)).collect();
    // A change on one lock only: its device alone is touched.
    let applied = svc
        .apply(
            &Actor::System,
            Command::SyncSent {
                device: devices[0],
                version: svc.sync_version(devices[0]).unwrap(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        applied.sync_changed,
        Vec::<DeviceId>::new(),
        "a send changes no code list"
    );
    let revoked = svc
        .apply(&w.owner, Command::RevokeCredential { credential: code })
        .await
        .unwrap();
    assert_eq!(
        revoked.sync_changed,
        vec![devices[0]],
        "only the lock it was sent to must remove it"
    );

    let code = w.issue_pin("5937").await;
    let jobs_before = svc.metrics().store_batch_size.get_sample_count();
    let mut cmds: Vec<Command> = devices
        .iter()
        .map(|&device| Command::SyncSent {
            device,
            version: svc.sync_version(device).unwrap(),
        })
        .collect();
    cmds.push(Command::SyncSent {
        device: DeviceId(9_999),
        version: 0,
    });
    let results = svc
        .apply_batch(cmds)
        .await
        .expect("the store takes the round");
    assert_eq!(results.len(), 4);
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(
        matches!(
            &results[3],
            Err(ServiceError::Engine(EngineError::NotFound { .. }))
        ),
        "{:?}",
        results[3]
    );
    for i in 0..3 {
        assert_eq!(w.state(code, i), Some(SyncState::Setting), "lock {i}");
    }
    assert_eq!(
        svc.metrics().store_batch_size.get_sample_count() - jobs_before,
        1,
        "the three records are one store job"
    );
}

/// The HTTP API over the harness's service, on a free loopback port: its
/// base URL and the handle that stops it. The same device then speaks both
/// transports to one server.
fn http_beside(h: &scenarios::Harness) -> (String, actix_web::dev::ServerHandle) {
    let svc = h.world.service.clone();
    let http = actix_web::HttpServer::new(move || reference_server::api::app(svc.clone()))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("http binds");
    let url = format!("http://{}", http.addrs()[0]);
    let http = http.run();
    let handle = http.handle();
    tokio::spawn(http);
    (url, handle)
}

/// POSTs `body` to `path` as HTTP/1.1 chunks of 1 KiB (no
/// `Content-Length`, as a client streaming its body sends it); answers the
/// status and the response's text.
async fn chunked_post(url: &str, path: &str, bearer: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    conn.write_all(&req).await.expect("the request is sent");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.expect("an answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {text}"));
    (status, text)
}

/// The same malformed check gets the same refusal over MQTT as over the
/// HTTP validate route: the HTTP status and error body ride in `refused`
/// of a `decision: error` answer (protocol.md, "auth/resp").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_check_answers_over_mqtt_as_over_http() {
    use reference_server::protocol::{Channel, Refusal, Verdict};

    let h = scenarios::harness(Broker::Embedded, 1, Default::default()).await;
    let (url, http_handle) = http_beside(&h);
    let (device, secret) = h.world.devices[0].clone();
    let mut dev = h.device(0).await;
    let client = reqwest::Client::new();
    // An unknown field, a wrong type, an unknown variant, a missing field.
    let bad: [&[u8]; 4] = [
        br#"{"id":41,"credential":{"type":"pin","value":"1234"},"colour":"red"}"#,
        br#"{"id":42,"credential":{"type":"pin","value":1234}}"#,
        br#"{"id":43,"credential":{"type":"iris","value":"x"}}"#,
        br#"{"id":44,"credential":{"type":"pin"},"floor":-1}"#,
    ];
    for (i, body) in bad.iter().enumerate() {
        let resp = client
            .post(format!("{url}/v1/devices/{}/validate", device.0))
            .bearer_auth(&secret)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("validate over HTTP");
        let status = resp.status().as_u16();
        let over_http: serde_json::Value = resp.json().await.unwrap();
        assert!((400..500).contains(&status), "{over_http}");
        dev.publish_raw(&dev.topic(Channel::AuthReq), body.to_vec(), false)
            .await;
        let answer = dev.expect_auth(41 + i as u64).await;
        assert_eq!(answer.decision, Verdict::Error);
        let want = Refusal {
            status,
            error: over_http["error"].as_str().unwrap().into(),
            field: over_http["field"].as_str().unwrap().into(),
            rule: over_http["rule"].as_str().unwrap().into(),
        };
        assert_eq!(
            answer.refused.as_ref(),
            Some(&want),
            "{}",
            String::from_utf8_lossy(body)
        );
        // Devices that read only `error` (before `refused`) get the rule.
        assert_eq!(answer.error.as_deref(), Some(want.rule.as_str()));
    }
    // A request that is not a refusal has no `refused`: a bad PIN value
    // is a decision, on both transports.
    let answer = dev.present_pin("12ab").await;
    assert_eq!((answer.decision, answer.refused), (Verdict::Error, None));
    http_handle.stop(true).await;
    h.stop().await;
}

/// A request over the protocol's payload limit (`MAX_PAYLOAD_BYTES`, 4096
/// bytes), the same 5 KiB bytes on both transports: HTTP refuses it unread
/// with 413 and `at most 4096 bytes`, the same refusal whichever device
/// route (validate, sync ack); MQTT drops it unread and counts it
/// (`oversized`), answering nothing, as protocol.md says. At the limit
/// itself the same request is answered on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_payload_limit_is_refused_unread_on_both_transports() {
    use mqtt_support::Received;
    use reference_server::gateway::DropReason;
    use reference_server::protocol::{Channel, MAX_PAYLOAD_BYTES};

    let h = scenarios::harness(Broker::Embedded, 1, Default::default()).await;
    let (url, http_handle) = http_beside(&h);
    let (device, secret) = h.world.devices[0].clone();
    let mut dev = h.device(0).await;
    let client = reqwest::Client::new();
    // A well-formed request padded with spaces to `len` bytes.
    let padded = |id: u64, len: usize| {
        let head = format!(r#"{{"id":{id},"credential":{{"type":"pin","value":"1234"}}"#);
        let mut body = head.into_bytes();
        body.resize(len - 1, b' ');
        body.push(b'}');
        body
    };
    let post = |path: &str, body: Vec<u8>| {
        client
            .post(format!("{url}/v1/devices/{}/{path}", device.0))
            .bearer_auth(&secret)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let five_kib = 5 * 1024;

    // HTTP.
    for path in ["validate", "sync"] {
        let resp = post(path, padded(51, five_kib)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 413, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "payload_too_large",
                "field": "body",
                "rule": format!("at most {MAX_PAYLOAD_BYTES} bytes"),
            }),
            "{path}"
        );
    }
    // Without a declared length (chunked), the body is measured as read:
    // the same refusal.
    let (status, body) = chunked_post(
        &url,
        &format!("/v1/devices/{}/validate", device.0),
        &secret,
        &padded(53, five_kib),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains(&format!("at most {MAX_PAYLOAD_BYTES} bytes")),
        "{body}"
    );
    let resp = post("validate", padded(52, MAX_PAYLOAD_BYTES))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "at the limit it is checked");
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["id"], 52, "{answer}");

    // MQTT: the oversized request, then the same at the limit.
    let m = h.mqtt.gateway.metrics().clone();
    let oversized_before = m.dropped(DropReason::Oversized);
    let req = dev.topic(Channel::AuthReq);
    dev.publish_raw(&req, padded(51, five_kib), false).await;
    dev.publish_raw(&req, padded(52, MAX_PAYLOAD_BYTES), false)
        .await;
    loop {
        match dev.next().await {
            Received::AuthResp(r) if r.id == 52 => break,
            Received::AuthResp(r) => panic!("the oversized request was answered: {r:?}"),
            _ => {}
        }
    }
    scenarios::eventually("the oversized payload counted", || {
        m.dropped(DropReason::Oversized) == oversized_before + 1
    })
    .await;
    while let Some(r) = dev.try_next(Duration::from_millis(200)).await {
        assert!(
            !matches!(&r, Received::AuthResp(a) if a.id == 51),
            "the oversized request was answered"
        );
    }
    http_handle.stop(true).await;
    h.stop().await;
}
