//! The protocol scenarios every broker must pass: each takes the broker
//! kind (the embedded broker or a real Mosquitto with the fleet ACL) and
//! plays locks with plain rumqttc clients against the real service.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reference_server::activity::ActivityQuery;
use reference_server::domain::{CredentialId, DenyReason, DeviceId, SyncState};
use reference_server::gateway::{
    self, BrokerChoice, DropReason, GatewayObserver, MqttRunning, SyncConfig,
};
use reference_server::limits::DeviceLimits;
use reference_server::protocol::{self, Channel, Event, EventKind, Verdict, MAX_PAYLOAD_BYTES};

use super::fixture::{world, World};
use super::{ack_all, Device, Mosquitto, Received};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    Embedded,
    Mosquitto,
}

pub struct Harness {
    pub world: World,
    pub mqtt: MqttRunning,
    pub port: u16,
    pub mosquitto: Option<Mosquitto>,
    pub observed: Arc<Observed>,
}

/// What the gateway's observer hook reported.
#[derive(Default)]
pub struct Observed {
    /// (device, seq) of each event logged.
    pub events: Mutex<Vec<(DeviceId, u64)>>,
    /// (device, failed) of each sync that ended.
    pub syncs: Mutex<Vec<(DeviceId, bool)>>,
}

impl GatewayObserver for Observed {
    fn event_logged(&self, device: DeviceId, event: &Event) {
        self.events.lock().unwrap().push((device, event.seq));
    }
    fn sync_acked(&self, device: DeviceId, _round_trip: Duration, failed: bool) {
        self.syncs.lock().unwrap().push((device, failed));
    }
}

pub async fn harness(kind: Broker, locks: usize, sync: SyncConfig) -> Harness {
    harness_with(kind, locks, sync, DeviceLimits::default()).await
}

/// `harness` with per-device limits (the embedded broker and the gateway
/// both apply them).
pub async fn harness_with(
    kind: Broker,
    locks: usize,
    sync: SyncConfig,
    limits: DeviceLimits,
) -> Harness {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let world = world(locks).await;
    let (choice, mosquitto) = match kind {
        Broker::Embedded => (
            BrokerChoice::Embedded {
                listen: "127.0.0.1:0".parse().unwrap(),
            },
            None,
        ),
        Broker::Mosquitto => {
            let accounts: Vec<(String, String)> = world
                .devices
                .iter()
                .map(|(d, s)| (d.to_string(), s.clone()))
                .collect();
            let m = Mosquitto::start(&accounts);
            (
                BrokerChoice::External(m.engine_url().parse().unwrap()),
                Some(m),
            )
        }
    };
    let observed = Arc::new(Observed::default());
    let observer = observed.clone();
    let mqtt = gateway::serve_with_limits(world.service.clone(), choice, limits, |cfg| {
        cfg.sync = sync;
        cfg.observer = Some(observer);
    })
    .await
    .expect("mqtt serves");
    tokio::time::timeout(Duration::from_secs(20), mqtt.gateway.ready())
        .await
        .expect("gateway subscribed");
    let port = mqtt.device_url.rsplit(':').next().unwrap().parse().unwrap();
    Harness {
        world,
        mqtt,
        port,
        mosquitto,
        observed,
    }
}

impl Harness {
    pub async fn device(&self, i: usize) -> Device {
        let (id, secret) = &self.world.devices[i];
        Device::connect(self.port, self.world.site, *id, secret)
            .await
            .expect("device connects")
    }

    pub fn state(&self, cred: CredentialId, i: usize) -> SyncState {
        self.world.state(cred, i).expect("placed")
    }

    pub async fn stop(self) {
        self.mqtt.gateway.shutdown().await;
    }
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub async fn valid_pin_granted_wrong_pin_denied_with_reason(kind: Broker) {
    let h = harness(kind, 1, SyncConfig::default()).await;
    let cred = h.world.issue_pin("482916").await;
    let mut dev = h.device(0).await;
    // The device came online: it gets the new code and confirms it.
    let push = dev.expect_sync().await;
    assert!(push.set.iter().any(|c| c.credential == cred));
    dev.ack_sync(&ack_all(&push)).await;
    eventually("code set", || h.state(cred, 0) == SyncState::Set).await;

    let ok = dev.present_pin("482916").await;
    assert_eq!(ok.decision, Verdict::Granted, "{ok:?}");
    assert_eq!(ok.credential_id, Some(cred));
    let bad = dev.present_pin("000000").await;
    assert_eq!(bad.decision, Verdict::Denied);
    assert_eq!(bad.reason, Some(DenyReason::WrongPin));
    assert_eq!(bad.locked_until, None);
    assert_eq!(h.mqtt.gateway.metrics().answered(Verdict::Granted), 1);
    // The fifth wrong PIN locks the keypad (the default policy) and says
    // until when; so does the lockout's denial of the right code.
    for _ in 0..3 {
        assert_eq!(dev.present_pin("000000").await.locked_until, None);
    }
    let locking = dev.present_pin("000000").await;
    assert_eq!(locking.reason, Some(DenyReason::WrongPin));
    let end = locking
        .locked_until
        .expect("the locking try says until when");
    let refused = dev.present_pin("482916").await;
    assert_eq!(
        (refused.reason, refused.locked_until),
        (Some(DenyReason::LockedOut), Some(end))
    );
    h.stop().await;
}

pub async fn admin_issued_code_reaches_an_online_lock_and_becomes_set(kind: Broker) {
    let h = harness(kind, 1, SyncConfig::default()).await;
    let mut dev = h.device(0).await;
    // Online first, then the admin issues a code: pushed by sync_changes.
    eventually("online", || {
        h.mqtt.gateway.metrics().devices_online.get() == 1
    })
    .await;
    let cred = h.world.issue_pin("135790").await;
    let push = dev.expect_sync().await;
    let code = push
        .set
        .iter()
        .find(|c| c.credential == cred)
        .expect("the new code");
    assert_eq!(
        code.secret,
        protocol::WireSecret::Pin("135790".into()),
        "the lock gets the PIN to store"
    );
    assert_eq!(h.state(cred, 0), SyncState::Setting);
    dev.ack_sync(&ack_all(&push)).await;
    eventually("code set", || h.state(cred, 0) == SyncState::Set).await;
    // The observer hears of the round trip, acknowledged without failure.
    eventually("sync observed", || {
        !h.observed.syncs.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        *h.observed.syncs.lock().unwrap(),
        [(h.world.device(0), false)]
    );
    h.stop().await;
}

pub async fn offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then(
    kind: Broker,
) {
    let h = harness(kind, 1, SyncConfig::default()).await;
    let cred = h.world.issue_pin("583920").await;
    let mut dev = h.device(0).await;
    let push = dev.expect_sync().await;
    dev.ack_sync(&ack_all(&push)).await;
    eventually("code set", || h.state(cred, 0) == SyncState::Set).await;

    // The lock drops off without DISCONNECT: the broker sends its Last Will.
    dev.crash();
    eventually("offline", || {
        h.mqtt.gateway.metrics().devices_online.get() == 0
    })
    .await;
    let new = h.world.change_pin(cred, "694031").await;
    // Still offline: the old PIN works at that lock, nothing was sent.
    let granted = |pin: &'static str| {
        let w = &h.world;
        async move { w.engine_answer(0, pin).await.decision == Verdict::Granted }
    };
    assert!(
        granted("583920").await,
        "the old PIN works until the lock confirms the new one"
    );
    assert_eq!(h.mqtt.gateway.metrics().sync_pushed.get(), 1);

    // Back online: the new code arrives; once acked the old one is removed.
    let mut dev = h.device(0).await;
    let push = dev.expect_sync().await;
    assert!(push.set.iter().any(|c| c.credential == new), "{push:?}");
    assert!(
        granted("583920").await,
        "old PIN still on the lock until the ack"
    );
    dev.ack_sync(&ack_all(&push)).await;
    let removal = dev.expect_sync().await;
    assert_eq!(removal.remove, vec![cred]);
    dev.ack_sync(&ack_all(&removal)).await;
    eventually("old code removed", || {
        h.state(cred, 0) == SyncState::Removed
    })
    .await;
    assert!(
        !granted("583920").await,
        "the old PIN is gone once the lock has the new one"
    );
    assert!(granted("694031").await);
    h.stop().await;
}

pub async fn unacked_sync_is_retried_then_marked_timed_out(kind: Broker) {
    let h = harness(
        kind,
        1,
        SyncConfig {
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_millis(200),
            max_attempts: 3,
        },
    )
    .await;
    let cred = h.world.issue_pin("246802").await;
    let mut dev = h.device(0).await;
    for _ in 0..3 {
        let push = dev.expect_sync().await;
        assert!(push.set.iter().any(|c| c.credential == cred));
    }
    eventually("timed out", || {
        h.state(cred, 0) == SyncState::Failed(reference_server::domain::SyncFailure::TimedOut)
    })
    .await;
    assert_eq!(h.mqtt.gateway.metrics().sync_retried.get(), 2);
    assert_eq!(h.mqtt.gateway.metrics().sync_timed_out.get(), 1);
    assert_eq!(
        *h.observed.syncs.lock().unwrap(),
        [(h.world.device(0), true)],
        "a timed-out sync is reported failed"
    );
    h.stop().await;
}

pub async fn a_redelivered_event_is_logged_once(kind: Broker) {
    let h = harness(kind, 1, SyncConfig::default()).await;
    let dev = h.device(0).await;
    let ev = Event {
        seq: 1,
        boot: 0,
        at: jiff::Timestamp::now(),
        kind: EventKind::DoorOpened,
    };
    // A QoS 1 redelivery carries the same seq.
    dev.send_event(&ev).await;
    dev.send_event(&ev).await;
    dev.send_event(&Event {
        seq: 2,
        ..ev.clone()
    })
    .await;
    let m = h.mqtt.gateway.metrics().clone();
    eventually("3 events seen", || {
        m.events_logged.get() + m.events_duplicate.get() == 3
    })
    .await;
    assert_eq!(m.events_logged.get(), 2);
    assert_eq!(m.events_duplicate.get(), 1);
    let logged = h
        .world
        .service
        .activity(&ActivityQuery {
            device: Some(h.world.device(0)),
            from: None,
            to: None,
            kind: Some("door_opened".into()),
            limit: 100,
            before: None,
        })
        .unwrap();
    assert_eq!(logged.len(), 2, "seq 1 once and seq 2: {logged:?}");
    // The observer hears of each logged event once, redeliveries not.
    let mut seen = h.observed.events.lock().unwrap().clone();
    seen.sort();
    let d = h.world.device(0);
    assert_eq!(seen, [(d, 1), (d, 2)]);
    h.stop().await;
}

/// The admin API over HTTP on the harness's service (the routes an app
/// reads); its address and a handle to stop it.
fn serve_http(h: &Harness) -> (std::net::SocketAddr, actix_web::dev::ServerHandle) {
    let svc = h.world.service.clone();
    let http = actix_web::HttpServer::new(move || reference_server::api::app(svc.clone()))
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind");
    let addr = http.addrs()[0];
    let http = http.run();
    let handle = http.handle();
    tokio::spawn(http);
    (addr, handle)
}

/// A code's Seam status as `GET /v1/credentials/{id}` shows it.
async fn code_status(addr: std::net::SocketAddr, token: &str, cred: CredentialId) -> String {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/v1/credentials/{}", cred.0))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET the code")
        .json()
        .await
        .expect("JSON");
    v["sync_status"].as_str().expect("sync_status").to_string()
}

/// A lock that rebooted with an empty cache asks for a full resync
/// (`sync/req` `{"full": true}`, protocol version 2): its codes, `set`
/// before, show `setting` in the API, are pushed again whole (not only
/// what changed: nothing did), and walk back to `set` on the ack; an ack
/// of the batch from before the reboot cannot confirm them.
pub async fn a_rebooted_lock_asks_for_a_full_resync(kind: Broker) {
    let h = harness(kind, 1, SyncConfig::default()).await;
    let (addr, http) = serve_http(&h);
    let token = h.world.token.clone();
    let a = h.world.issue_pin("135790").await;
    let b = h.world.issue_pin("246801").await;
    let mut dev = h.device(0).await;
    let first = dev.expect_sync().await;
    dev.ack_sync(&ack_all(&first)).await;
    eventually("codes set", || {
        h.state(a, 0) == SyncState::Set && h.state(b, 0) == SyncState::Set
    })
    .await;
    assert_eq!(code_status(addr, &token, a).await, "set");
    // A plain request (no `full`) with nothing pending sends nothing.
    dev.publish_raw(&dev.topic(Channel::SyncReq), b"{}".to_vec(), false)
        .await;
    // The reboot: an empty cache; the lock asks for everything.
    dev.publish_raw(
        &dev.topic(Channel::SyncReq),
        br#"{"full":true}"#.to_vec(),
        false,
    )
    .await;
    let push = dev.expect_sync().await;
    assert!(push.version > first.version, "a new version");
    let mut sent: Vec<CredentialId> = push.set.iter().map(|c| c.credential).collect();
    sent.sort();
    assert_eq!(sent, vec![a, b], "the whole set, again");
    for c in [a, b] {
        assert_eq!(h.state(c, 0), SyncState::Setting);
        assert_eq!(code_status(addr, &token, c).await, "setting");
    }
    assert_eq!(h.mqtt.gateway.metrics().sync_full_resyncs.get(), 1);
    // The ack of the batch before the reboot is stale now.
    dev.ack_sync(&ack_all(&first)).await;
    eventually("stale ack dropped", || {
        h.mqtt.gateway.metrics().dropped(DropReason::StaleAck) == 1
    })
    .await;
    assert_eq!(h.state(a, 0), SyncState::Setting);
    dev.ack_sync(&ack_all(&push)).await;
    eventually("codes set again", || {
        h.state(a, 0) == SyncState::Set && h.state(b, 0) == SyncState::Set
    })
    .await;
    assert_eq!(code_status(addr, &token, a).await, "set");
    assert_eq!(code_status(addr, &token, b).await, "set");
    // A malformed request is dropped and counted, nothing reset.
    let malformed = h.mqtt.gateway.metrics().dropped(DropReason::Malformed);
    dev.publish_raw(
        &dev.topic(Channel::SyncReq),
        br#"{"full":"yes"}"#.to_vec(),
        false,
    )
    .await;
    eventually("malformed request counted", || {
        h.mqtt.gateway.metrics().dropped(DropReason::Malformed) == malformed + 1
    })
    .await;
    assert_eq!(h.state(a, 0), SyncState::Set);
    http.stop(true).await;
    h.stop().await;
}

/// A reflashed device restarts `seq` at 1 under a new boot epoch
/// (protocol version 2): its events are logged, not dropped as duplicates
/// of the old boot's; a QoS 1 redelivery (same boot, same seq) still is a
/// duplicate, logged once.
pub async fn a_new_boot_restarts_seq_without_losing_events(kind: Broker) {
    let h = harness(kind, 1, SyncConfig::default()).await;
    let dev = h.device(0).await;
    let at = jiff::Timestamp::now();
    let ev = |boot, seq| Event {
        seq,
        boot,
        at,
        kind: EventKind::DoorOpened,
    };
    // The old firmware (no boot: 0) logged seq 1 and 2.
    dev.send_event(&ev(0, 1)).await;
    dev.send_event(&ev(0, 2)).await;
    // Reflashed: boot 1, seq from 1 again; seq 1 redelivered once.
    dev.send_event(&ev(1, 1)).await;
    dev.send_event(&ev(1, 1)).await;
    dev.send_event(&ev(1, 2)).await;
    let m = h.mqtt.gateway.metrics().clone();
    eventually("5 events seen", || {
        m.events_logged.get() + m.events_duplicate.get() == 5
    })
    .await;
    assert_eq!(m.events_logged.get(), 4);
    assert_eq!(m.events_duplicate.get(), 1);
    let mut logged: Vec<(Option<u64>, Option<u64>)> = h
        .world
        .service
        .activity(&ActivityQuery {
            device: Some(h.world.device(0)),
            from: None,
            to: None,
            kind: Some("door_opened".into()),
            limit: 100,
            before: None,
        })
        .unwrap()
        .iter()
        .map(|e| (e.boot, e.seq))
        .collect();
    logged.sort();
    assert_eq!(
        logged,
        [
            (None, Some(1)),
            (None, Some(2)),
            (Some(1), Some(1)),
            (Some(1), Some(2))
        ],
        "both boots' events, each once"
    );
    h.stop().await;
}

/// A lock back from an offline spell sends what it buffered in one go:
/// far more events than a device may have checks in progress. Every one is
/// logged, in its own order, and none is dropped as `busy`.
pub async fn a_flush_of_buffered_events_is_logged_whole(kind: Broker) {
    let h = harness(kind, 1, SyncConfig::default()).await;
    let dev = h.device(0).await;
    const N: u64 = 500;
    let at = jiff::Timestamp::now();
    for seq in 1..=N {
        dev.send_event(&Event {
            seq,
            boot: 0,
            at,
            kind: EventKind::DoorOpened,
        })
        .await;
    }
    let m = h.mqtt.gateway.metrics().clone();
    eventually("every event logged", || m.events_logged.get() == N).await;
    assert_eq!(m.events_duplicate.get(), 0);
    let seen = h.observed.events.lock().unwrap().clone();
    let d = h.world.device(0);
    let order: Vec<u64> = seen
        .iter()
        .filter(|(x, _)| *x == d)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        order,
        (1..=N).collect::<Vec<_>>(),
        "logged in the device's order"
    );
    h.stop().await;
}

pub async fn bad_payloads_are_counted_and_dropped_without_harm_to_others(kind: Broker) {
    let h = harness(kind, 2, SyncConfig::default()).await;
    let cred = h.world.issue_pin("975310").await;
    let mut good = h.device(0).await;
    let bad = h.device(1).await;
    let push = good.expect_sync().await;
    good.ack_sync(&ack_all(&push)).await;
    eventually("set", || h.state(cred, 0) == SyncState::Set).await;

    let req = bad.topic(Channel::AuthReq);
    bad.publish_raw(&req, b"not json".to_vec(), false).await;
    bad.publish_raw(&req, vec![b'{'; MAX_PAYLOAD_BYTES + 1], false)
        .await;
    bad.publish_raw(
        &bad.topic(Channel::Events),
        b"{\"seq\":\"x\"}".to_vec(),
        false,
    )
    .await;
    // A topic naming the device under another site.
    let foreign = req.replace(&h.world.site.to_string(), "site-999");
    bad.publish_raw(&foreign, b"{}".to_vec(), false).await;
    bad.publish_raw("fleet/site-1/nobody/auth/req", b"{}".to_vec(), false)
        .await;
    // The good device is served as ever, in between and after.
    let ok = good.present_pin("975310").await;
    assert_eq!(ok.decision, Verdict::Granted);

    let m = h.mqtt.gateway.metrics().clone();
    eventually("drops counted", || {
        m.dropped(DropReason::Malformed) == 2
            && m.dropped(DropReason::Oversized) == 1
            // The embedded broker's ACL refuses both topics that are not
            // the device's own (and counts them); Mosquitto's ACL
            // (`fleet/+/%u/...`) lets the foreign site through to the
            // gateway, which drops it, and refuses the other unseen.
            && m.dropped(DropReason::ForeignTopic) == u64::from(kind == Broker::Mosquitto)
            && m.dropped(DropReason::NotAuthorized) == 2 * u64::from(kind == Broker::Embedded)
            && m.dropped(DropReason::BadTopic) == 0
    })
    .await;
    // A malformed request with a readable id is answered with an error.
    let mut bad = bad;
    bad.publish_raw(
        &req,
        br#"{"id":77,"credential":{"type":"pin","value":"12ab"}}"#.to_vec(),
        false,
    )
    .await;
    let answer = bad.expect_auth(77).await;
    assert_eq!(answer.decision, Verdict::Error);
    assert!(answer.error.is_some());
    assert!(matches!(
        good.present_pin("975310").await.decision,
        Verdict::Granted
    ));
    // Nothing meant for the bad device reached the good one.
    assert!(good.try_next(Duration::from_millis(200)).await.is_none());
    h.stop().await;
}

pub async fn remote_open_command_round_trip(kind: Broker) {
    let h = harness(kind, 1, SyncConfig::default()).await;
    let mut dev = h.device(0).await;
    let commander = h.mqtt.gateway.commander();
    let device = h.world.device(0);
    let sent =
        tokio::spawn(async move { commander.send(device, protocol::CommandKind::Open).await });
    let cmd = loop {
        match dev.next().await {
            Received::Cmd(c) => break c,
            _ => continue,
        }
    };
    assert_eq!(cmd.command, protocol::CommandKind::Open);
    dev.ack_cmd(&protocol::CommandAck {
        id: cmd.id,
        result: protocol::CommandResult::Ok,
    })
    .await;
    assert_eq!(sent.await.unwrap(), protocol::CommandResult::Ok);
    h.stop().await;
}

/// The SUBACK code for a subscription the ACL does not allow.
fn refused_subscription(kind: Broker) -> rumqttc::SubscribeReasonCode {
    match kind {
        // The embedded broker refuses it (0x80).
        Broker::Embedded => rumqttc::SubscribeReasonCode::Failure,
        // Mosquitto 2.0 (Debian's 2.0.11) grants it, MQTT 3.1.1 and 5
        // alike, and checks "read" on each delivery instead: nothing
        // arrives (asserted below).
        Broker::Mosquitto => rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce),
    }
}

/// Connects with `client_id`, `user`, `password` and says how the broker
/// answered the CONNECT (`Ok` = accepted).
pub async fn try_login(
    port: u16,
    client_id: &str,
    user: &str,
    password: &str,
) -> Result<(), String> {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_credentials(user, password);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let answer = tokio::time::timeout(super::ANSWER_TIMEOUT, async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("the broker answers the CONNECT");
    let _ = client.try_disconnect();
    answer
}

/// dev-1, with its own valid credentials, tries to speak for dev-0 and to
/// read what is meant for others: subscribe to dev-0's answers and
/// commands, to `fleet/#` and to every check; publish an Open Door on
/// dev-0's `cmd`, a check and an event as dev-0, and an answer and a sync
/// of its own (channels only the engine publishes on); log in with a wrong
/// password, or with dev-0's client id. All of it is refused or never
/// delivered, and dev-0 is served as ever.
pub async fn a_device_cannot_speak_for_another(kind: Broker) {
    use reference_server::domain::{CredentialId, DeviceId};
    use rumqttc::{
        AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, SubscribeFilter,
        SubscribeReasonCode,
    };

    let h = harness(kind, 2, SyncConfig::default()).await;
    let cred: CredentialId = h.world.issue_pin("482916").await;
    let mut victim = h.device(0).await;
    let push = victim.expect_sync().await;
    victim.ack_sync(&ack_all(&push)).await;
    eventually("code set", || h.state(cred, 0) == SyncState::Set).await;

    let w = &h.world;
    let victim_id: DeviceId = w.device(0);
    let theirs = |c: Channel| protocol::topic("fleet", w.site, victim_id, c);
    let (attacker, secret) = &w.devices[1];
    let mine = |c: Channel| protocol::topic("fleet", w.site, *attacker, c);
    let mut opts = MqttOptions::new(attacker.to_string(), "127.0.0.1", h.port);
    opts.set_credentials(attacker.to_string(), secret.clone());
    let (client, mut el) = AsyncClient::new(opts, 100);
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let spy = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(MqttEvent::Incoming(p)) => {
                    let _ = seen_tx.send(p);
                }
                Ok(_) => {}
                Err(e) => panic!("the attacker's connection failed: {e}"),
            }
        }
    });
    let filters = [
        theirs(Channel::AuthResp),
        theirs(Channel::Cmd),
        "fleet/#".to_string(),
        "fleet/+/+/auth/req".to_string(),
        // Its own answers: allowed, and used to show that nobody, itself
        // included, can publish an answer but the engine.
        mine(Channel::AuthResp),
    ];
    client
        .subscribe_many(
            filters
                .iter()
                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
        )
        .await
        .unwrap();
    let suback = loop {
        match tokio::time::timeout(super::ANSWER_TIMEOUT, seen.recv()).await {
            Ok(Some(Packet::SubAck(a))) => break a,
            Ok(Some(_)) => {}
            _ => panic!("no SUBACK"),
        }
    };
    let refused = refused_subscription(kind);
    assert_eq!(
        suback.return_codes,
        vec![
            refused,
            refused,
            refused,
            refused,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ],
        "{kind:?}"
    );
    let forged: [(String, Vec<u8>); 5] = [
        (
            theirs(Channel::Cmd),
            br#"{"id":999,"command":"open"}"#.to_vec(),
        ),
        (
            theirs(Channel::AuthReq),
            br#"{"id":555,"credential":{"type":"pin","value":"482916"}}"#.to_vec(),
        ),
        (
            theirs(Channel::Events),
            protocol::encode(&Event {
                seq: 1,
                boot: 0,
                at: jiff::Timestamp::now(),
                kind: EventKind::DoorForcedOpen,
            }),
        ),
        (
            mine(Channel::AuthResp),
            br#"{"id":1,"decision":"granted"}"#.to_vec(),
        ),
        (
            theirs(Channel::Sync),
            br#"{"version":99,"set":[],"remove":[0]}"#.to_vec(),
        ),
    ];
    for (topic, payload) in &forged {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    // The real dev-0 checks a PIN: the answer goes to dev-0 only, and
    // dev-0 got no command, sync or answer it did not ask for.
    let answer = victim.present_pin("482916").await;
    assert_eq!((answer.id, answer.decision), (1, Verdict::Granted));
    assert!(
        victim.try_next(Duration::from_millis(500)).await.is_none(),
        "dev-0 received something forged"
    );
    spy.abort();
    let mut pubacks = 0;
    while let Ok(p) = seen.try_recv() {
        match p {
            Packet::PubAck(_) => pubacks += 1,
            Packet::Publish(p) => panic!("dev-1 read {} ({kind:?})", p.topic),
            _ => {}
        }
    }
    // MQTT 3.1.1 cannot refuse a publish: both brokers acknowledge the QoS 1
    // publishes they drop.
    assert_eq!(pubacks, forged.len());
    // The gateway never saw the forged messages: only dev-0's own request.
    let m = h.mqtt.gateway.metrics();
    assert_eq!(m.received(Channel::AuthReq), 1);
    assert_eq!(m.received(Channel::Events), 0);
    match kind {
        Broker::Embedded => {
            assert_eq!(m.dropped(DropReason::NotAuthorized), forged.len() as u64);
            assert_eq!(m.device_drops().total(*attacker), forged.len() as u64);
            assert_eq!(m.device_drops().total(victim_id), 0);
            let text = h.world.service.metrics().render();
            assert!(
                text.contains("reference_server_broker_subscriptions_refused_total 4"),
                "{text}"
            );
        }
        Broker::Mosquitto => {
            let log = h.mosquitto.as_ref().unwrap().log_text();
            let denied = format!("Denied PUBLISH from {attacker}");
            assert_eq!(
                log.matches(&denied).count(),
                forged.len(),
                "mosquitto log:\n{log}"
            );
        }
    }

    // A wrong password and an unknown account are refused at CONNECT.
    let name = attacker.to_string();
    assert!(try_login(h.port, &name, &name, "not-the-secret")
        .await
        .is_err());
    assert!(try_login(h.port, "nobody", "nobody", secret).await.is_err());
    // dev-1's own credentials with dev-0's client id: the embedded broker
    // refuses the login; Mosquitto (`use_username_as_clientid`) replaces
    // the id with "dev-1". Either way dev-0's session is not taken over.
    let with_victims_id = try_login(h.port, &victim_id.to_string(), &name, secret).await;
    assert_eq!(with_victims_id.is_ok(), kind == Broker::Mosquitto);
    let again = victim.present_pin("482916").await;
    assert_eq!(again.decision, Verdict::Granted);
    h.stop().await;
}

/// One device floods its own `auth/req` (valid checks and garbage, QoS 0,
/// as fast as its client can) while another checks PINs: the other device
/// gets every answer; the flooder gets at most its rate (plus its burst)
/// through, the excess is counted as dropped for it alone, summed up in
/// its activity log, and nothing is lost when the server shuts down.
pub async fn one_device_flooding_leaves_the_others_answered(kind: Broker) {
    use rumqttc::{AsyncClient, MqttOptions, QoS};

    let limits = DeviceLimits {
        rate_per_s: 50,
        burst: 50,
        in_flight: 8,
        ..DeviceLimits::default()
    };
    let rss_before = rss_mib();
    let h = harness_with(kind, 2, SyncConfig::default(), limits).await;
    let cred = h.world.issue_pin("482916").await;
    let mut victim = h.device(0).await;
    let push = victim.expect_sync().await;
    victim.ack_sync(&ack_all(&push)).await;
    eventually("code set", || h.state(cred, 0) == SyncState::Set).await;

    // The flooder: dev-1 with its own credentials, subscribed to nothing
    // (its answers go nowhere, so its client never waits for them).
    let (flooder, secret) = h.world.devices[1].clone();
    let mut opts = MqttOptions::new(flooder.to_string(), "127.0.0.1", h.port);
    opts.set_credentials(flooder.to_string(), secret)
        .set_request_channel_capacity(10_000);
    let (client, mut el) = AsyncClient::new(opts, 10_000);
    let poll = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let topic = protocol::topic("fleet", h.world.site, flooder, Channel::AuthReq);
    let started = std::time::Instant::now();
    let flood = tokio::spawn(async move {
        let mut sent = 0u64;
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            let payload = if sent.is_multiple_of(2) {
                format!(r#"{{"id":{sent},"credential":{{"type":"pin","value":"482916"}}}}"#)
                    .into_bytes()
            } else {
                b"\xffgarbage".to_vec()
            };
            match client.try_publish(&topic, QoS::AtMostOnce, false, payload) {
                Ok(()) => sent += 1,
                // Its own request channel is full: the broker reads it no
                // faster than its rate.
                Err(_) => tokio::task::yield_now().await,
            }
        }
        sent
    });
    // Meanwhile the other device is answered, every time.
    for _ in 0..20 {
        let a = victim.present_pin("482916").await;
        assert_eq!(a.decision, Verdict::Granted, "{a:?}");
    }
    let sent = flood.await.unwrap();
    poll.abort();
    let m = h.mqtt.gateway.metrics().clone();
    let victims = 20;
    // Only what the rate allows got through to the engine (a bound that
    // holds however slow the machine: the elapsed time is measured after).
    let answered = m.answered(Verdict::Granted) + m.answered(Verdict::Denied);
    let errors = m.answered(Verdict::Error);
    let elapsed_s = started.elapsed().as_secs_f64();
    let allowed = f64::from(limits.burst) + f64::from(limits.rate_per_s) * (elapsed_s + 1.0);
    let flooders = (answered + errors + m.dropped(DropReason::Malformed)).saturating_sub(victims);
    assert!(
        (flooders as f64) <= allowed,
        "{flooders} of the flooder's {sent} messages were handled in {elapsed_s:.1} s (at most {allowed:.0} allowed)"
    );
    eprintln!(
        "{kind:?}: the flooder sent {sent} in {elapsed_s:.1} s, {flooders} were handled, {} dropped as over its rate",
        m.dropped(DropReason::RateLimited)
    );
    assert!(
        sent > flooders + 100,
        "the flood was not a flood: {sent} sent"
    );
    // The excess is counted, for the flooder alone.
    assert!(m.dropped(DropReason::RateLimited) > 0);
    assert!(m.device_drops().total(flooder) > 0);
    assert_eq!(m.device_drops().total(h.world.device(0)), 0);
    let rss_after = rss_mib();
    assert!(
        rss_after < rss_before + 256.0,
        "memory grew from {rss_before:.0} to {rss_after:.0} MiB"
    );

    // Shutdown: the gateway stops and finishes, the last drop summary is
    // written, the store commits; nothing was lost.
    h.world.service.close().await;
    let dropped = h
        .world
        .service
        .activity(&ActivityQuery {
            device: None,
            from: None,
            to: None,
            kind: Some("messages_dropped".into()),
            limit: 100,
            before: None,
        })
        .unwrap();
    assert!(
        dropped
            .iter()
            .any(|e| e.device == flooder && e.reason.as_deref() == Some("rate_limited")),
        "{dropped:?}"
    );
    assert!(dropped.iter().all(|e| e.device == flooder), "{dropped:?}");
    // One summary per reason, not one entry per message.
    assert!(dropped.len() <= DropReason::ALL.len(), "{dropped:?}");
    assert_eq!(
        h.world.service.metrics().activity_entries_lost_total.get(),
        0
    );
    h.stop().await;
}

/// This process's resident memory.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The device view shows what the lock's events said: locked or unlocked,
/// the door open or closed, jammed (read over the HTTP API on the same
/// service), and the state comes back from the activity log after a
/// restart.
pub async fn the_device_view_shows_what_its_events_said(kind: Broker) {
    use reference_server::device_state::{DoorState, LockState};
    use reference_server::protocol::How;
    let h = harness(kind, 1, SyncConfig::default()).await;
    let dev = h.device(0).await;
    dev.set_online(true).await;
    let svc = h.world.service.clone();
    let http = actix_web::HttpServer::new(move || reference_server::api::app(svc.clone()))
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind");
    let addr = http.addrs()[0];
    let http = http.run();
    let stop_http = http.handle();
    tokio::spawn(http);
    let id = h.world.device(0);
    let client = reqwest::Client::new();
    let view = || {
        let client = client.clone();
        let token = h.world.token.clone();
        async move {
            let v: serde_json::Value = client
                .get(format!("http://{addr}/v1/devices/{}", id.0))
                .bearer_auth(token)
                .send()
                .await
                .expect("GET the device")
                .json()
                .await
                .expect("JSON");
            (
                v["lock_state"].clone(),
                v["door_state"].clone(),
                v["jammed"].clone(),
                v["online"].clone(),
                v["battery_pct"].clone(),
            )
        }
    };
    use serde_json::{json, Value};
    let never: (Value, Value, Value) = (Value::Null, Value::Null, json!(false));
    let (l, d, j, _, _) = view().await;
    assert_eq!((l, d, j), never, "nothing reported yet");
    let at = jiff::Timestamp::now();
    let send = |seq: u64, kind: EventKind| {
        let ev = Event {
            seq,
            boot: 0,
            at: at + jiff::SignedDuration::from_secs(seq as i64),
            kind,
        };
        let dev = &dev;
        async move { dev.send_event(&ev).await }
    };
    send(
        1,
        EventKind::Unlocked {
            how: How::Keypad,
            credential: None,
            origin: None,
        },
    )
    .await;
    send(2, EventKind::DoorOpened).await;
    send(3, EventKind::MotorBlocked).await;
    let m = h.mqtt.gateway.metrics().clone();
    eventually("3 events logged", || m.events_logged.get() == 3).await;
    let (l, d, j, online, battery) = view().await;
    assert_eq!(
        (l, d, j, online, battery),
        (
            json!("unlocked"),
            json!("open"),
            json!(true),
            json!(true),
            json!(90)
        )
    );
    send(
        4,
        EventKind::Locked {
            how: How::AutoRelock,
        },
    )
    .await;
    send(5, EventKind::DoorClosed).await;
    eventually("5 events logged", || m.events_logged.get() == 5).await;
    let (l, d, j, _, _) = view().await;
    assert_eq!((l, d, j), (json!("locked"), json!("closed"), json!(false)));
    stop_http.stop(true).await;
    // The world (and its data directory) outlives the gateway.
    let Harness { world, mqtt, .. } = h;
    mqtt.gateway.shutdown().await;
    world.service.close().await;
    let dir = world.data_dir().to_path_buf();
    let again =
        reference_server::service::Service::open(&dir, reference_server::service::Clock::system())
            .expect("open again");
    let s = again.device_state(id);
    let logged = again
        .activity(&ActivityQuery {
            device: Some(id),
            from: None,
            to: None,
            kind: None,
            limit: 100,
            before: None,
        })
        .unwrap();
    assert_eq!(logged.len(), 6, "5 events and coming online: {logged:?}");
    assert_eq!(
        (s.lock_state, s.door_state, s.jammed),
        (Some(LockState::Locked), Some(DoorState::Closed), false)
    );
    again.close().await;
    drop(world);
}
