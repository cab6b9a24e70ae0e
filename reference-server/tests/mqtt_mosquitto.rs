//! The device protocol end to end through a real Mosquitto (started per
//! test on a free port, with the fleet ACL of docs/mosquitto/acl and a
//! password file of the issued device secrets). Needs `mosquitto` and
//! `mosquitto_passwd` on PATH (apt-get install mosquitto mosquitto-clients).

mod mqtt_support;

use mqtt_support::scenarios::{self, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_pin_granted_wrong_pin_denied_with_reason() {
    scenarios::valid_pin_granted_wrong_pin_denied_with_reason(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_issued_code_reaches_an_online_lock_and_becomes_set() {
    scenarios::admin_issued_code_reaches_an_online_lock_and_becomes_set(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then() {
    scenarios::offline_lock_gets_a_changed_pin_on_reconnect_and_the_old_one_works_until_then(
        Broker::Mosquitto,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_sync_is_retried_then_marked_timed_out() {
    scenarios::unacked_sync_is_retried_then_marked_timed_out(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_logged_once() {
    scenarios::a_redelivered_event_is_logged_once(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_counted_and_dropped_without_harm_to_others() {
    scenarios::bad_payloads_are_counted_and_dropped_without_harm_to_others(Broker::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_open_command_round_trip() {
    scenarios::remote_open_command_round_trip(Broker::Mosquitto).await;
}

/// dev-1, with its own valid credentials, tries to speak for dev-0: check a
/// PIN as dev-0, log an event as dev-0, and read dev-0's answers. The ACL
/// refuses all of it, Mosquitto logs the denials, and the gateway never
/// sees the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_speak_for_another() {
    use reference_server::protocol::{self, Channel, Event, EventKind};
    use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, SubscribeReasonCode};
    use std::time::Duration;

    let h = scenarios::harness(Broker::Mosquitto, 2, Default::default()).await;
    let w = &h.world;
    let victim = |c: Channel| protocol::topic("fleet", w.site, w.device(0), c);
    let (attacker, secret) = &w.devices[1];
    let mut opts = MqttOptions::new(attacker.to_string(), "127.0.0.1", h.port);
    opts.set_credentials(attacker.to_string(), secret.clone());
    let (client, mut el) = AsyncClient::new(opts, 100);
    client
        .subscribe(victim(Channel::AuthResp), QoS::AtLeastOnce)
        .await
        .unwrap();
    let req = br#"{"id":555,"credential":{"type":"pin","value":"123456"}}"#.to_vec();
    client
        .publish(victim(Channel::AuthReq), QoS::AtLeastOnce, false, req)
        .await
        .unwrap();
    let ev = Event {
        seq: 1,
        at: jiff::Timestamp::now(),
        kind: EventKind::DoorForcedOpen,
    };
    client
        .publish(
            victim(Channel::Events),
            QoS::AtLeastOnce,
            false,
            protocol::encode(&ev),
        )
        .await
        .unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let spy = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(MqttEvent::Incoming(p)) => {
                    let _ = seen_tx.send(p);
                }
                Ok(_) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    });
    // The real dev-0 checks a PIN: the answer goes to dev-0 only.
    let mut victim_dev = h.device(0).await;
    let answer = victim_dev.present_pin("123456").await;
    assert_eq!(answer.id, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    spy.abort();
    let mut pubacks = 0;
    while let Ok(p) = seen.try_recv() {
        match p {
            Packet::PubAck(_) => pubacks += 1,
            Packet::Publish(p) => panic!("dev-1 read a message for dev-0 on {}", p.topic),
            Packet::SubAck(a) => {
                // Mosquitto 2.0 grants the SUBSCRIBE and enforces "read" on
                // every delivery instead; either way nothing arrives.
                let _ = a.return_codes.contains(&SubscribeReasonCode::Failure);
            }
            _ => {}
        }
    }
    // MQTT 3.1.1 acks a denied QoS 1 publish (it has no way to say no) ...
    assert_eq!(pubacks, 2);
    // ... and the gateway never saw the forged messages: only dev-0's own
    // request arrived.
    let m = h.mqtt.gateway.metrics();
    assert_eq!(m.received(Channel::AuthReq), 1);
    assert_eq!(m.received(Channel::Events), 0);
    let log = h.mosquitto.as_ref().unwrap().log_text();
    let denied = format!("Denied PUBLISH from {attacker}");
    assert_eq!(log.matches(&denied).count(), 2, "mosquitto log:\n{log}");
    h.stop().await;
}
