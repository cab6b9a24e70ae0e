//! The event feed with real clients: an HTTP client listing events after
//! real actions, an SSE reader that disconnects and resumes with
//! `Last-Event-ID`, webhook receivers on loopback that verify the
//! signatures (one failing, retried), and the log and the delivery queue
//! across a restart.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use reference_server::domain::{CredentialId, DenyReason, DeviceId};
use reference_server::events::sign;
use reference_server::events::webhooks::RetryPolicy;
use reference_server::protocol::{Event, EventKind, How, Status};
use reference_server::server::Server;
use reference_server::service::{Clock, Service};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A hang guard only: every wait below ends as soon as its condition holds.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn types(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect()
}

async fn device_event(svc: &Service, device: u64, seq: u64, kind: EventKind) -> bool {
    let at = svc.now();
    svc.record_event(
        DeviceId(device as u32),
        &Event {
            seq,
            boot: 0,
            at,
            kind,
        },
    )
    .await
    .unwrap()
}

/// A lock of door A made over HTTP; answers (device, secret).
async fn new_lock(api: &Api, t: &str, door: u64) -> (u64, String) {
    let v = api
        .ok(
            "POST",
            &format!("/v1/doors/{door}/devices"),
            t,
            Some(json!({"kind": "lock", "name": "Side lock"})),
        )
        .await;
    (
        id(&v, "device"),
        v["mqtt"]["password"].as_str().unwrap().to_string(),
    )
}

/// Every event of organization 0 through the list route, oldest first,
/// following the cursors `limit` at a time.
async fn all_events(api: &Api, t: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/events?organization_id=0&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&page_cursor={c}"));
        }
        let page = api.ok("GET", &path, t, None).await;
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["pagination"]["next_page_cursor"].as_str() {
            Some(c) => {
                assert_eq!(page["pagination"]["has_next_page"], true);
                cursor = Some(c.to_string());
            }
            None => {
                assert_eq!(page["pagination"]["has_next_page"], false);
                break;
            }
        }
    }
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_listed_after_real_actions_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::system()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let svc = server.service.clone();
    let (lock, secret) = new_lock(&api, t, w.door_a).await;
    let member = holder(&api, t, "Rita Resident", "member").await;
    // An admin issues a code: access_code.created.
    let (code, _pin) = pin_code(
        &api,
        t,
        member,
        json!([w.door_a]),
        json!({"type": "permanent"}),
    )
    .await;
    // The lock syncs over HTTP and confirms it: access_code.set_on_device.
    let (s, batch) = api
        .call(
            "GET",
            &format!("/v1/devices/{lock}/sync"),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(s, 200, "{batch}");
    let results: Vec<Value> = batch["set"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({"credential": c["credential"]}))
        .collect();
    assert!(results.iter().any(|r| r["credential"] == code), "{batch}");
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/devices/{lock}/sync"),
            Some(&secret),
            Some(json!({"version": batch["version"], "results": results})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // A check over HTTP is no event by itself (the lock reports what it
    // did with the answer) ...
    let denied = api
        .validate(
            w.phone_a,
            &w.phone_a_secret,
            json!({"type": "pin", "value": "0000"}),
        )
        .await;
    assert_eq!(denied["decision"], "denied", "{denied}");
    // ... the lock's reports are: here through the service call the MQTT
    // gateway makes for each device message.
    svc.set_status(
        DeviceId(lock as u32),
        &Status {
            online: true,
            battery_pct: Some(80),
            firmware: None,
            at: None,
        },
    )
    .await
    .unwrap();
    assert!(
        device_event(
            &svc,
            lock,
            1,
            EventKind::AccessDenied {
                how: How::Keypad,
                reason: DenyReason::UnknownCredential
            }
        )
        .await
    );
    let unlocked = EventKind::Unlocked {
        how: How::Keypad,
        credential: Some(CredentialId(code as u32)),
        origin: None,
    };
    assert!(device_event(&svc, lock, 2, unlocked.clone()).await);
    assert!(
        !device_event(&svc, lock, 2, unlocked).await,
        "a redelivered device event is no new event"
    );
    assert!(device_event(&svc, lock, 3, EventKind::DoorAjar).await);
    assert!(
        device_event(
            &svc,
            lock,
            4,
            EventKind::Locked {
                how: How::AutoRelock
            }
        )
        .await
    );
    // The code is revoked: access_code.deleted.
    api.ok("DELETE", &format!("/v1/credentials/{code}"), t, None)
        .await;
    svc.flush().await.unwrap();

    let page = api.ok("GET", "/v1/events?organization_id=0", t, None).await;
    assert_eq!(
        types(&page),
        [
            "access_code.deleted",
            "lock.locked",
            "device.door_left_open",
            "lock.unlocked",
            "lock.access_denied",
            "device.connected",
            "access_code.set_on_device",
            "access_code.created",
        ],
        "newest first: {page}"
    );
    let data = page["data"].as_array().unwrap();
    let ids: Vec<u64> = data
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|p| p[0] > p[1]), "{ids:?}");
    assert_eq!(data[3]["method"], "keycode");
    assert_eq!(data[3]["access_code_id"], code);
    assert_eq!(data[3]["device_id"], lock);
    assert_eq!(data[4]["reason"], "unknown_credential");
    assert_eq!(data[1]["method"], "automatic");
    assert_eq!(data[6]["device_id"], lock);
    assert_eq!(data[6]["access_code_id"], code);
    assert_eq!(data[7]["organization_id"], 0);
    assert!(data.iter().all(|e| e["created_at"].is_string()));

    // Filters.
    let only = api
        .ok(
            "GET",
            "/v1/events?organization_id=0&type=lock.unlocked",
            t,
            None,
        )
        .await;
    assert_eq!(types(&only), ["lock.unlocked"]);
    let of_lock = api
        .ok(
            "GET",
            &format!("/v1/events?organization_id=0&device_id={lock}"),
            t,
            None,
        )
        .await;
    assert_eq!(of_lock["data"].as_array().unwrap().len(), 6, "{of_lock}");
    let none = api
        .ok(
            "GET",
            &format!("/v1/events?organization_id=0&device_id={}", w.phone_b),
            t,
            None,
        )
        .await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    // Pages of 3 give the same log.
    let paged = all_events(&api, t, 3).await;
    let mut whole = data.clone();
    whole.reverse();
    assert_eq!(paged, whole);

    // Bad parameters: a 400 naming each.
    for (query, field) in [
        ("organization_id=0&limit=0", "limit"),
        ("organization_id=0&limit=501", "limit"),
        ("organization_id=0&type=lock.exploded", "type"),
        ("organization_id=0&device_id=x", "device_id"),
        ("organization_id=0&page_cursor=nope", "page_cursor"),
        ("", "organization_id"),
        ("organization_id=-1", "organization_id"),
    ] {
        let (s, v) = api
            .call("GET", &format!("/v1/events?{query}"), Some(t), None)
            .await;
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{query}: {v}");
    }
    // Another organization's events answer as an unknown organization's.
    let (s, _) = api
        .call("GET", "/v1/events?organization_id=7", Some(t), None)
        .await;
    assert_eq!(s, 404);

    // A restart keeps the log, its ids and order.
    server.stop().await;
    let server = start(dir.path(), Clock::system()).await;
    let api = Api::new(server.url());
    let again = api.ok("GET", "/v1/events?organization_id=0", t, None).await;
    assert_eq!(again["data"], page["data"]);
    // New events continue after the old ones.
    assert!(device_event(&server.service, lock, 5, EventKind::DoorClosed).await);
    server.service.flush().await.unwrap();
    let newest = api
        .ok("GET", "/v1/events?organization_id=0&limit=1", t, None)
        .await;
    let newest_id: u64 = newest["data"][0]["event_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(newest_id > ids[0]);
    server.stop().await;
}

/// An SSE reader over a raw HTTP connection (reqwest).
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(url: &str, token: &str, last_event_id: Option<&str>) -> SseReader {
        let mut rb = reqwest::Client::new()
            .get(format!("{url}/v1/events/stream?organization_id=0"))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next event message: (id, event type, data).
    async fn next(&mut self) -> (String, String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let msg: String = self.buf.drain(..end + 2).collect();
                if msg.starts_with(':') {
                    continue; // a keepalive comment
                }
                let field = |name: &str| {
                    msg.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_else(|| panic!("{name} in {msg}"))
                        .to_string()
                };
                let data = serde_json::from_str(&field("data: ")).unwrap();
                return (field("id: "), field("event: "), data);
            }
            let chunk = tokio::time::timeout(HANG_GUARD, self.resp.chunk())
                .await
                .expect("an event within the hang guard")
                .unwrap()
                .expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_reader_resumes_from_last_event_id_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::system()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let svc = server.service.clone();
    let door = |seq: u64| {
        if seq.is_multiple_of(2) {
            EventKind::DoorOpened
        } else {
            EventKind::DoorClosed
        }
    };
    for seq in 1..=3 {
        device_event(&svc, w.lock_a, seq, door(seq)).await;
    }
    let mut got = Vec::new();
    let mut reader = SseReader::open(&server.url(), t, None).await;
    // The log first, then live events.
    for _ in 0..3 {
        got.push(reader.next().await);
    }
    for seq in 4..=6 {
        device_event(&svc, w.lock_a, seq, door(seq)).await;
    }
    for _ in 0..2 {
        got.push(reader.next().await);
    }
    // The reader goes away after 5 of 6; more happens while it is gone.
    drop(reader);
    for seq in 7..=9 {
        device_event(&svc, w.lock_a, seq, door(seq)).await;
    }
    let last = got.last().unwrap().0.clone();
    let mut reader = SseReader::open(&server.url(), t, Some(&last)).await;
    for _ in 0..4 {
        got.push(reader.next().await);
    }
    device_event(&svc, w.lock_a, 10, door(10)).await;
    got.push(reader.next().await);
    // Exactly the log, in order, once each.
    let log = all_events(&api, t, 500).await;
    assert_eq!(log.len(), 10);
    assert_eq!(got.len(), log.len());
    for ((id, kind, data), e) in got.iter().zip(&log) {
        assert_eq!(id, e["event_id"].as_str().unwrap());
        assert_eq!(kind, e["event_type"].as_str().unwrap());
        assert_eq!(data, e);
    }
    // A bad Last-Event-ID is a 400 naming it.
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v1/events/stream?organization_id=0",
            server.url()
        ))
        .bearer_auth(t)
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["field"], "Last-Event-ID");
    // Stopping the server ends open streams (it does not wait for them).
    let reader = SseReader::open(&server.url(), t, Some(&last)).await;
    tokio::time::timeout(HANG_GUARD, server.stop())
        .await
        .expect("the server stops with a stream open");
    drop(reader);
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} header"))
    }
}

/// A webhook receiver on loopback: a small HTTP/1.1 server on tokio's
/// TCP, plain or behind TLS (tokio-rustls). It answers 500 to its first
/// `fail_first` requests, then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicU32>,
    /// TCP connections accepted (with TLS: before the handshake).
    connections: Arc<AtomicU32>,
}

impl Receiver {
    async fn start(fail_first: u32) -> Receiver {
        Receiver::start_with(fail_first, None).await
    }

    async fn start_with(fail_first: u32, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(AtomicU32::new(fail_first));
        let connections = Arc::new(AtomicU32::new(0));
        let (g, f, c) = (got.clone(), fail.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (g, f, tls) = (g.clone(), f.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_one(sock, &g, &f).await,
                        // A refused handshake (the client did not trust
                        // the certificate) ends the connection here.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(sock).await {
                                serve_one(stream, &g, &f).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver {
            url,
            got,
            fail_first: fail,
            connections,
        }
    }
}

async fn serve_one(
    mut sock: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    got: &Mutex<Vec<Received>>,
    fail: &AtomicU32,
) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    got.lock().push(req);
    let failing = fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    let _ = sock
        .write_all(
            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let _ = sock.shutdown().await;
}

async fn read_request(sock: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received { headers, body })
}

/// Polls a webhook's deliveries until `done` holds (hang guard).
async fn deliveries_until(api: &Api, t: &str, hook: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let page = api
            .ok("GET", &format!("/v1/webhooks/{hook}/deliveries"), t, None)
            .await;
        if done(&page) {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "deliveries: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(secret: &str, r: &Received) -> bool {
    let key = sign::secret_key(secret).unwrap();
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    sign::verify(
        &key,
        r.header("webhook-id"),
        ts,
        &r.body,
        r.header("webhook-signature"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_a_failing_receiver_is_retried_with_its_status_visible() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Clock::system()).await;
    server.service.feed().set_retry_policy(RetryPolicy {
        first_retry_after: Duration::from_millis(100),
        max_retry_after: Duration::from_millis(400),
        max_attempts: 3,
    });
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let good = Receiver::start(0).await;
    let flaky = Receiver::start(2).await;
    // Nothing listens there (a port taken and released).
    let dead_url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let mut hooks = Vec::new();
    for url in [&good.url, &flaky.url, &dead_url] {
        let (id, secret) = add_hook(&api, t, url).await;
        assert!(secret.starts_with("whsec_"), "{secret}");
        hooks.push((id, secret));
    }
    let listed = api
        .ok("GET", "/v1/webhooks?organization_id=0", t, None)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown once"
    );

    assert!(device_event(&server.service, w.lock_a, 1, EventKind::DoorForcedOpen).await);
    server.service.flush().await.unwrap();
    let event = api.ok("GET", "/v1/events?organization_id=0", t, None).await["data"][0].clone();
    assert_eq!(event["event_type"], "device.door_forced_open");

    let page = deliveries_until(&api, t, &hooks[0].0, |p| {
        p["data"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(page["data"][0]["attempts"], 1);
    assert_eq!(page["data"][0]["last_status_code"], 200);
    assert_eq!(page["data"][0]["event_id"], event["event_id"]);
    let page = deliveries_until(&api, t, &hooks[1].0, |p| {
        p["data"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(page["data"][0]["attempts"], 3, "two 500s, then 200: {page}");
    let page = deliveries_until(&api, t, &hooks[2].0, |p| p["data"][0]["status"] == "failed").await;
    assert_eq!(page["data"][0]["attempts"], 3, "{page}");
    assert!(
        page["data"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{page}"
    );
    assert!(page["data"][0].get("next_attempt_at").is_none());

    // Every request is signed with its endpoint's secret over id,
    // timestamp and body, and carries the event as listed.
    let got = good.got.lock().clone();
    assert_eq!(got.len(), 1);
    let flaky_got = flaky.got.lock().clone();
    assert_eq!(flaky_got.len(), 3);
    assert_eq!(flaky.fail_first.load(Ordering::SeqCst), 0);
    for (r, secret) in got
        .iter()
        .map(|r| (r, &hooks[0].1))
        .chain(flaky_got.iter().map(|r| (r, &hooks[1].1)))
    {
        assert!(verify(secret, r), "signature of {r:?}");
        assert!(
            !verify(&hooks[2].1, r),
            "another endpoint's secret does not verify it"
        );
        assert_eq!(r.header("webhook-id"), event["event_id"].as_str().unwrap());
        assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap(), event);
    }
    // A tampered body fails verification.
    let mut forged = got[0].clone();
    forged.body = br#"{"event_type":"lock.unlocked"}"#.to_vec();
    assert!(!verify(&hooks[0].1, &forged));

    // Bad input and deletion.
    let (s, v) = api
        .call(
            "POST",
            "/v1/webhooks",
            Some(t),
            Some(json!({"organization_id": 0, "url": "ftp://x"})),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("url")), "{v}");
    let (s, _) = api
        .call("GET", "/v1/webhooks/wh_nope/deliveries", Some(t), None)
        .await;
    assert_eq!(s, 404);
    api.ok("DELETE", &format!("/v1/webhooks/{}", hooks[0].0), t, None)
        .await;
    let (s, _) = api
        .call(
            "GET",
            &format!("/v1/webhooks/{}/deliveries", hooks[0].0),
            Some(t),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let listed = api
        .ok("GET", "/v1/webhooks?organization_id=0", t, None)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_survives_a_restart_and_is_delivered_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = ts("2026-03-23T10:00:00Z");
    let clock = Clock::manual(t0);
    let server = start(dir.path(), clock.clone()).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.clone();
    // Fails everything until told otherwise.
    let receiver = Receiver::start(u32::MAX).await;
    let v = api
        .ok(
            "POST",
            "/v1/webhooks",
            &t,
            Some(json!({"organization_id": 0, "url": receiver.url})),
        )
        .await;
    let (hook, secret) = (
        v["webhook_id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    );
    assert!(device_event(&server.service, w.lock_a, 1, EventKind::MotorBlocked).await);
    // The first attempt fails; the next is due 5 s later (the default
    // schedule), on the server's clock, which stands still here.
    let page = deliveries_until(&api, &t, &hook, |p| p["data"][0]["attempts"] == 1).await;
    assert_eq!(page["data"][0]["status"], "pending");
    assert_eq!(page["data"][0]["next_attempt_at"], "2026-03-23T10:00:05Z");
    server.stop().await;

    receiver.fail_first.store(0, Ordering::SeqCst);
    let clock = Clock::manual(ts("2026-03-23T10:00:06Z"));
    let server = start(dir.path(), clock).await;
    let api = Api::new(server.url());
    let page = deliveries_until(&api, &t, &hook, |p| p["data"][0]["status"] == "succeeded").await;
    assert_eq!(page["data"][0]["attempts"], 2, "{page}");
    let got = receiver.got.lock().clone();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| verify(&secret, r)));
    assert_eq!(got[1].header("webhook-timestamp"), "1774260006");
    server.stop().await;
}

/// A certificate authority made in the test (rcgen).
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A TLS acceptor serving a certificate this CA issued for `names`
    /// (DNS names or IP addresses).
    fn acceptor(&self, names: &[&str]) -> tokio_rustls::TlsAcceptor {
        self.acceptor_valid(names, None)
    }

    /// [`acceptor`](Self::acceptor), the certificate valid only in the
    /// year before 1 January of `expired_in` when given.
    fn acceptor_valid(&self, names: &[&str], expired_in: Option<i32>) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if let Some(year) = expired_in {
            params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let leaf = params.signed_by(&key, &self.cert, &self.key).unwrap();
        // ring is rustls's only provider in this build (as in reqwest's).
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// Registers a webhook for organization 0; answers its id and secret.
async fn add_hook(api: &Api, t: &str, url: &str) -> (String, String) {
    let v = api
        .ok(
            "POST",
            "/v1/webhooks",
            t,
            Some(json!({"organization_id": 0, "url": url})),
        )
        .await;
    (
        v["webhook_id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

/// Starts a server whose webhook client also trusts `ca_file`.
async fn start_trusting(dir: &std::path::Path, ca_file: Option<std::path::PathBuf>) -> Server {
    let server = common::start_with_ca(dir, Clock::system(), ca_file).await;
    server.service.feed().set_retry_policy(RetryPolicy {
        first_retry_after: Duration::from_millis(100),
        max_retry_after: Duration::from_millis(200),
        max_attempts: 3,
    });
    server
}

/// HTTPS endpoints: a certificate from a private CA is refused (a failed,
/// retried delivery whose error names the certificate) until the server
/// trusts that CA through `--webhook-ca-file`; then the event arrives over
/// TLS and its signature verifies. A certificate for another name, or from
/// a CA the server does not trust, or one that has expired, still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_verify_certificates_and_trust_a_private_ca_file() {
    let ca = TestCa::new("webhook test CA");
    let stranger = TestCa::new("a CA nobody trusts");
    let good = Receiver::start_with(0, Some(ca.acceptor(&["127.0.0.1", "localhost"]))).await;
    let wrong_name = Receiver::start_with(0, Some(ca.acceptor(&["hooks.example.com"]))).await;
    let untrusted = Receiver::start_with(0, Some(stranger.acceptor(&["127.0.0.1"]))).await;
    // The right CA and name, but it expired years ago.
    let expired =
        Receiver::start_with(0, Some(ca.acceptor_valid(&["127.0.0.1"], Some(2020)))).await;
    assert!(good.url.starts_with("https://127.0.0.1:"), "{}", good.url);

    // Without the CA file: the bundled roots do not know the private CA.
    let dir = tempfile::tempdir().unwrap();
    let server = start_trusting(dir.path(), None).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let (hook, _) = add_hook(&api, t, &good.url).await;
    assert!(device_event(&server.service, w.lock_a, 1, EventKind::DoorForcedOpen).await);
    let page = deliveries_until(&api, t, &hook, |p| p["data"][0]["status"] == "failed").await;
    let d = &page["data"][0];
    assert_eq!(d["attempts"], 3, "retried like any failure: {page}");
    assert!(d.get("last_status_code").is_none(), "{page}");
    let error = d["last_error"].as_str().unwrap();
    assert!(error.contains("certificate"), "a TLS error: {error}");
    assert!(
        good.got.lock().is_empty(),
        "nothing was sent over a refused TLS session"
    );
    assert_eq!(
        good.connections.load(Ordering::SeqCst),
        3,
        "three attempts reached it"
    );
    server.stop().await;

    // With the CA file.
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start_trusting(dir.path(), Some(ca_file)).await;
    let api = Api::new(server.url());
    let w = world(&api).await;
    let t = w.owner.as_str();
    let (good_hook, secret) = add_hook(&api, t, &good.url).await;
    let (wrong_hook, _) = add_hook(&api, t, &wrong_name.url).await;
    let (untrusted_hook, _) = add_hook(&api, t, &untrusted.url).await;
    let (expired_hook, _) = add_hook(&api, t, &expired.url).await;
    assert!(device_event(&server.service, w.lock_a, 1, EventKind::DoorForcedOpen).await);
    server.service.flush().await.unwrap();
    let event = api.ok("GET", "/v1/events?organization_id=0", t, None).await["data"][0].clone();

    let page = deliveries_until(&api, t, &good_hook, |p| {
        p["data"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(page["data"][0]["attempts"], 1, "{page}");
    assert_eq!(page["data"][0]["last_status_code"], 200);
    let got = good.got.lock().clone();
    assert_eq!(got.len(), 1);
    assert!(
        verify(&secret, &got[0]),
        "the signature verifies over https"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap(),
        event
    );

    for (hook, receiver, why) in [
        (&wrong_hook, &wrong_name, "not valid for name"),
        (&untrusted_hook, &untrusted, "unknownissuer"),
        (&expired_hook, &expired, "expired"),
    ] {
        let page = deliveries_until(&api, t, hook, |p| p["data"][0]["status"] == "failed").await;
        assert_eq!(page["data"][0]["attempts"], 3, "{page}");
        let error = page["data"][0]["last_error"].as_str().unwrap();
        assert!(
            error.contains("certificate") && error.to_lowercase().contains(why),
            "{error}"
        );
        assert!(receiver.got.lock().is_empty());
    }
    server.stop().await;
}
