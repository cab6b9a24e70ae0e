//! The protocol scenarios every broker must pass: each takes the broker
//! kind (the embedded rumqttd or a real Mosquitto with the fleet ACL) and
//! plays locks with plain rumqttc clients against the real service.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reference_server::activity::ActivityQuery;
use reference_server::domain::{CredentialId, DenyReason, DeviceId, SyncState};
use reference_server::gateway::{
    self, BrokerChoice, DropReason, GatewayObserver, MqttRunning, SyncConfig,
};
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
    let mqtt = gateway::serve(world.service.clone(), choice, |cfg| {
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
            && m.dropped(DropReason::ForeignTopic) == 1
            // Mosquitto's ACL refuses a topic outside the device's own
            // before the gateway sees it; rumqttd lets it through.
            && m.dropped(DropReason::BadTopic) == u64::from(kind == Broker::Embedded)
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
