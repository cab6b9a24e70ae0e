//! The Home Assistant bridge against a real Mosquitto with the ACL of
//! docs/mosquitto/acl: `mosquitto_sub`, logged in as Home Assistant's
//! account, reads the retained discovery config, state and availability
//! after a lock connects and reports; the lock's Last Will turns it
//! offline; `LOCK`/`UNLOCK` published by Home Assistant reach the lock as
//! protocol commands through the service's remote-command path (an
//! activity entry each, as the admin API's Open Door); a device can forge
//! none of it.

mod mqtt_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use mqtt_support::fixture::{world, World};
use mqtt_support::{Device, Mosquitto, Received};
use reference_server::activity::ActivityQuery;
use reference_server::events::{EventType, Method};
use reference_server::gateway::{self, BrokerChoice, HomeAssistantConfig, MqttRunning};
use reference_server::protocol::{self, CommandKind, Event, EventKind, How};
use reference_server::store::{EventQuery, Order};

const HA_USER: &str = "homeassistant";
const HA_PASSWORD: &str = "ha-test-password";

struct Bridge {
    world: World,
    mqtt: MqttRunning,
    /// The broker's port (Mosquitto's, or the embedded one's).
    port: u16,
    mosquitto: Option<Mosquitto>,
}

async fn start(locks: usize) -> Bridge {
    let world = world(locks).await;
    let mut accounts: Vec<(String, String)> = world
        .devices
        .iter()
        .map(|(d, s)| (d.to_string(), s.clone()))
        .collect();
    accounts.push((HA_USER.into(), HA_PASSWORD.into()));
    let mosquitto = Mosquitto::start(&accounts);
    let mqtt = gateway::serve(
        world.service.clone(),
        BrokerChoice::External(mosquitto.engine_url().parse().unwrap()),
        |cfg| cfg.home_assistant = Some(HomeAssistantConfig::default()),
    )
    .await
    .expect("mqtt serves");
    tokio::time::timeout(Duration::from_secs(20), mqtt.gateway.ready())
        .await
        .expect("gateway subscribed");
    Bridge {
        world,
        mqtt,
        port: mosquitto.port,
        mosquitto: Some(mosquitto),
    }
}

/// The bridge on the server's embedded broker, with its `homeassistant`
/// account.
async fn start_embedded(locks: usize) -> Bridge {
    let world = world(locks).await;
    let mqtt = gateway::serve(
        world.service.clone(),
        BrokerChoice::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
        },
        |cfg| {
            cfg.home_assistant = Some(HomeAssistantConfig {
                embedded_password: Some(HA_PASSWORD.into()),
                ..HomeAssistantConfig::default()
            })
        },
    )
    .await
    .expect("mqtt serves");
    tokio::time::timeout(Duration::from_secs(20), mqtt.gateway.ready())
        .await
        .expect("gateway subscribed");
    let port = mqtt.device_url.rsplit(':').next().unwrap().parse().unwrap();
    Bridge {
        world,
        mqtt,
        port,
        mosquitto: None,
    }
}

impl Bridge {
    async fn device(&self, i: usize) -> Device {
        let (id, secret) = &self.world.devices[i];
        Device::connect(self.port, self.world.site, *id, secret)
            .await
            .expect("device connects")
    }

    fn topic(&self, i: usize, leaf: &str) -> String {
        format!("homeassistant/lock/fleet_{}/{leaf}", self.world.device(i))
    }

    /// The retained messages under `filter`, as Home Assistant's account
    /// reads them with `mosquitto_sub` (topic -> payload).
    fn retained(&self, filter: &str) -> BTreeMap<String, String> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", HA_USER, "-P", HA_PASSWORD, "-i", "ha-reader"])
            .args(["-t", filter, "-v", "--retained-only", "-W", "1"])
            .output()
            .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect()
    }

    /// Polls the retained value of `topic` until it is `want` (a hang
    /// guard, not a speed check).
    async fn wait_retained(&self, topic: &str, want: &str) {
        let mut last = None;
        for _ in 0..40 {
            last = self.retained(topic).remove(topic);
            if last.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{topic}: retained {last:?}, want {want:?}; mosquitto log: {}",
            self.mosquitto
                .as_ref()
                .map(|m| m.log_text())
                .unwrap_or_default()
        );
    }

    /// Home Assistant sends `payload` on lock `i`'s command topic.
    fn command(&self, i: usize, payload: &str) {
        ha_pub(
            self.port,
            "ha-writer",
            &self.topic(i, "set"),
            payload,
            false,
        );
    }
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        boot: 0,
        at: jiff::Timestamp::now(),
        kind,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_state_and_availability_are_retained_and_the_last_will_turns_a_lock_offline() {
    let b = start(2).await;
    // Before any lock connects: every lock is announced, offline.
    b.wait_retained(&b.topic(1, "availability"), "offline")
        .await;
    b.wait_retained("homeassistant/fleet/bridge/availability", "online")
        .await;
    let dev = b.device(0).await;
    b.wait_retained(&b.topic(0, "availability"), "online").await;
    dev.send_event(&event(1, EventKind::Locked { how: How::Manual }))
        .await;
    b.wait_retained(&b.topic(0, "state"), "LOCKED").await;
    dev.send_event(&event(
        2,
        EventKind::Unlocked {
            how: How::Keypad,
            credential: None,
            origin: None,
        },
    ))
    .await;
    b.wait_retained(&b.topic(0, "state"), "UNLOCKED").await;
    dev.send_event(&event(3, EventKind::DoorOpened)).await;
    b.wait_retained(&b.topic(0, "state"), "OPEN").await;
    dev.send_event(&event(4, EventKind::MotorBlocked)).await;
    b.wait_retained(&b.topic(0, "state"), "JAMMED").await;

    let all = b.retained(&format!("homeassistant/lock/fleet_{}/#", b.world.device(0)));
    let config: serde_json::Value =
        serde_json::from_str(&all[&b.topic(0, "config")]).expect("the config is JSON");
    let id = format!("fleet_{}", b.world.device(0));
    assert_eq!(config["unique_id"], id.as_str());
    assert_eq!(config["name"], "Lock 0");
    assert_eq!(config["command_topic"], b.topic(0, "set").as_str());
    assert_eq!(config["state_topic"], b.topic(0, "state").as_str());
    assert_eq!(
        config["availability"][0]["topic"],
        b.topic(0, "availability").as_str()
    );
    assert_eq!(config["device"]["identifiers"][0], id.as_str());
    for (k, v) in [
        ("payload_lock", "LOCK"),
        ("payload_unlock", "UNLOCK"),
        ("payload_open", "OPEN"),
        ("state_locked", "LOCKED"),
        ("state_unlocked", "UNLOCKED"),
        ("state_jammed", "JAMMED"),
    ] {
        assert_eq!(config[k], v, "{k}");
    }

    // The lock drops off without DISCONNECT: Mosquitto publishes its Last
    // Will, and Home Assistant sees it unavailable.
    dev.crash();
    b.wait_retained(&b.topic(0, "availability"), "offline")
        .await;
    // The server stops cleanly: the bridge says it is gone.
    b.mqtt.gateway.shutdown().await;
    b.wait_retained("homeassistant/fleet/bridge/availability", "offline")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_unlock_from_home_assistant_reach_the_lock() {
    let b = start(2).await;
    let mut dev = b.device(0).await;
    let mut other = b.device(1).await;
    b.wait_retained(&b.topic(0, "availability"), "online").await;
    for (payload, want) in [
        ("LOCK", CommandKind::Lock),
        ("UNLOCK", CommandKind::Open),
        ("OPEN", CommandKind::Open),
    ] {
        b.command(0, payload);
        let cmd = dev.expect_cmd().await;
        assert_eq!(cmd.command, want, "{payload}");
        dev.ack_cmd(&protocol::CommandAck {
            id: cmd.id,
            result: protocol::CommandResult::Ok,
        })
        .await;
    }
    // Through the service's remote-command path, as the admin API's Open
    // Door: each command left an activity entry with its result.
    let lock = b.world.device(0);
    let remote = |kind: &str| {
        b.world
            .service
            .activity(&ActivityQuery {
                device: Some(lock),
                from: None,
                to: None,
                kind: Some(kind.into()),
                limit: 10,
                before: None,
            })
            .unwrap()
    };
    for _ in 0..100 {
        if remote("remote_open").len() == 2 && remote("remote_lock").len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = remote("remote_open");
    assert_eq!(opened.len(), 2, "{opened:?}");
    assert!(opened
        .iter()
        .all(|e| e.how == Some(How::Remote) && e.reason.as_deref() == Some("ok")));
    let locked = remote("remote_lock");
    assert_eq!(locked.len(), 1, "{locked:?}");
    assert_eq!(locked[0].reason.as_deref(), Some("ok"));
    // The lock reports what it did: `lock.unlocked` with method `remote`.
    dev.send_event(&event(
        1,
        EventKind::Unlocked {
            how: How::Remote,
            credential: None,
            origin: None,
        },
    ))
    .await;
    let org = reference_server::events::device_org(&b.world.service.engine(), lock).unwrap();
    let unlocked = || {
        b.world
            .service
            .store()
            .events(&EventQuery {
                org,
                event_type: Some(EventType::LockUnlocked),
                device: Some(lock),
                order: Order::After(0),
                limit: 10,
            })
            .unwrap()
    };
    for _ in 0..100 {
        if !unlocked().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = unlocked();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].body.method, Some(Method::Remote));
    // A bad payload and a command for a lock that does not exist are
    // ignored: nothing reaches either lock, and the next command still
    // works.
    b.command(0, "lock");
    b.command(0, "{\"state\":\"LOCK\"}");
    ha_pub(
        b.port,
        "ha-writer",
        "homeassistant/lock/fleet_dev-999/set",
        "LOCK",
        false,
    );
    b.command(1, "LOCK");
    let cmd = other.expect_cmd().await;
    assert_eq!(cmd.command, CommandKind::Lock);
    while let Some(got) = dev.try_next(Duration::from_millis(300)).await {
        assert!(
            !matches!(got, Received::Cmd(_)),
            "lock 0 got a command from a bad payload: {got:?}"
        );
    }
    b.mqtt.gateway.shutdown().await;
}

/// A device may not publish under `homeassistant/`: not another lock's
/// state, not a discovery config, not a command. Mosquitto drops the
/// publishes (the ACL); the retained values stay the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_discovery_state_or_commands() {
    let b = start(2).await;
    let mut victim = b.device(0).await;
    let mut forger = b.device(1).await;
    victim
        .send_event(&event(1, EventKind::Locked { how: How::Manual }))
        .await;
    b.wait_retained(&b.topic(0, "state"), "LOCKED").await;
    let before = b.retained(&b.topic(1, "config"));
    assert!(!before.is_empty(), "lock 1's config is published");
    forger
        .publish_raw(&b.topic(0, "state"), b"UNLOCKED".to_vec(), true)
        .await;
    forger
        .publish_raw(&b.topic(0, "availability"), b"offline".to_vec(), true)
        .await;
    forger
        .publish_raw(&b.topic(1, "config"), b"{}".to_vec(), true)
        .await;
    forger
        .publish_raw(&b.topic(0, "set"), b"UNLOCK".to_vec(), false)
        .await;
    // One connection's packets are handled in order: once the forger's
    // check is answered, its forged publishes were handled too.
    let answer = forger.present_pin("000000").await;
    assert_eq!(answer.id, 1);
    assert_eq!(
        b.retained(&b.topic(0, "state"))[&b.topic(0, "state")],
        "LOCKED"
    );
    assert_eq!(
        b.retained(&b.topic(0, "availability"))[&b.topic(0, "availability")],
        "online"
    );
    assert_eq!(b.retained(&b.topic(1, "config")), before);
    // The forged UNLOCK never reached the lock; a real one does.
    b.command(0, "LOCK");
    assert_eq!(
        victim.expect_cmd().await.command,
        CommandKind::Lock,
        "the forged UNLOCK arrived"
    );
    assert!(
        b.mosquitto
            .as_ref()
            .unwrap()
            .log_text()
            .contains("Denied PUBLISH"),
        "Mosquitto logs the refused publishes"
    );
    b.mqtt.gateway.shutdown().await;
}

/// Keypad and card accesses reach Home Assistant as `event` entity
/// messages (not retained), beside a retained event-entity config; a
/// manual unlock is not one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keypad_and_card_accesses_are_home_assistant_events() {
    use reference_server::domain::{CredentialId, DenyReason};

    let b = start(1).await;
    let dev = b.device(0).await;
    let access = format!("homeassistant/event/fleet_{}_access", b.world.device(0));
    b.wait_retained(&b.topic(0, "availability"), "online").await;
    let config: serde_json::Value =
        serde_json::from_str(&b.retained(&format!("{access}/config"))[&format!("{access}/config")])
            .expect("the event entity's config");
    assert_eq!(config["state_topic"], format!("{access}/state"));
    assert_eq!(
        config["event_types"],
        serde_json::json!(["granted", "denied"])
    );
    assert_eq!(
        config["device"]["identifiers"][0],
        format!("fleet_{}", b.world.device(0))
    );

    // Home Assistant listens before the lock reports.
    let (mut rx, poller) = listen(b.port, &format!("{access}/state"), "ha-events");
    assert!(next(&mut rx).await.is_none(), "subscribed first");
    dev.send_event(&event(
        1,
        EventKind::Unlocked {
            how: How::Manual,
            credential: None,
            origin: None,
        },
    ))
    .await;
    dev.send_event(&event(
        2,
        EventKind::Unlocked {
            how: How::Keypad,
            credential: Some(CredentialId(7)),
            origin: None,
        },
    ))
    .await;
    dev.send_event(&event(
        3,
        EventKind::AccessDenied {
            how: How::Card,
            reason: DenyReason::UnknownCredential,
        },
    ))
    .await;
    let (retained, first) = next(&mut rx).await.expect("an event");
    assert!(!retained);
    let first: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"event_type": "granted", "how": "keypad", "credential": 7}),
        "the manual unlock is not an access event"
    );
    let (_, second) = next(&mut rx).await.expect("an event");
    let second: serde_json::Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(second["event_type"], "denied");
    assert_eq!(second["how"], "card");
    assert_eq!(second["reason"], "unknown_credential");
    poller.abort();
    b.mqtt.gateway.shutdown().await;
}

type Heard = Option<(bool, Vec<u8>)>;

/// The next thing Home Assistant's client heard: `None` for its SUBACK,
/// else (retained, payload).
async fn next(rx: &mut tokio::sync::mpsc::Receiver<Heard>) -> Heard {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a message for Home Assistant")
        .expect("the poller runs")
}

/// Without Mosquitto: the embedded broker's `homeassistant` account reads
/// the retained discovery config, state and availability, the lock's Last
/// Will turns it offline, and `LOCK` reaches the lock through the
/// service's remote-command path (an activity entry); the account may
/// publish nothing but a lock's command, and a wrong password is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_works_on_the_embedded_broker() {
    let b = start_embedded(1).await;
    b.wait_retained(&b.topic(0, "availability"), "offline")
        .await;
    b.wait_retained("homeassistant/fleet/bridge/availability", "online")
        .await;
    let all = b.retained(&format!("homeassistant/lock/fleet_{}/#", b.world.device(0)));
    let config: serde_json::Value =
        serde_json::from_str(&all[&b.topic(0, "config")]).expect("the config is JSON");
    assert_eq!(config["command_topic"], b.topic(0, "set").as_str());
    let mut dev = b.device(0).await;
    b.wait_retained(&b.topic(0, "availability"), "online").await;
    dev.send_event(&event(1, EventKind::Locked { how: How::Manual }))
        .await;
    b.wait_retained(&b.topic(0, "state"), "LOCKED").await;
    // Home Assistant may not write a state.
    ha_pub(b.port, "ha-forger", &b.topic(0, "state"), "UNLOCKED", true);
    b.command(0, "LOCK");
    let cmd = dev.expect_cmd().await;
    assert_eq!(cmd.command, CommandKind::Lock);
    dev.ack_cmd(&protocol::CommandAck {
        id: cmd.id,
        result: protocol::CommandResult::Ok,
    })
    .await;
    let lock = b.world.device(0);
    let remote_lock = || {
        b.world
            .service
            .activity(&ActivityQuery {
                device: Some(lock),
                from: None,
                to: None,
                kind: Some("remote_lock".into()),
                limit: 10,
                before: None,
            })
            .unwrap()
    };
    for _ in 0..100 {
        if !remote_lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(remote_lock().len(), 1);
    assert_eq!(remote_lock()[0].reason.as_deref(), Some("ok"));
    assert_eq!(
        b.retained(&b.topic(0, "state"))
            .get(&b.topic(0, "state"))
            .map(String::as_str),
        Some("LOCKED"),
        "Home Assistant's forged state was dropped"
    );
    // A wrong password is refused at CONNECT.
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &b.port.to_string()])
        .args(["-u", HA_USER, "-P", "not-the-password", "-i", "ha-wrong"])
        .args(["-t", "homeassistant/#", "-W", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong password must not connect");
    dev.crash();
    b.wait_retained(&b.topic(0, "availability"), "offline")
        .await;
    b.mqtt.gateway.shutdown().await;
}

/// Home Assistant's client, subscribed to `filter`: what it hears, as
/// `next` reads it (its SUBACK first).
fn listen(
    port: u16,
    filter: &str,
    id: &str,
) -> (
    tokio::sync::mpsc::Receiver<Heard>,
    tokio::task::JoinHandle<()>,
) {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_credentials(HA_USER, HA_PASSWORD);
    let (ha, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let filter = filter.to_string();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let poller = tokio::spawn(async move {
        ha.subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = tx.send(None).await;
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send(Some((p.retain, p.payload.to_vec()))).await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (rx, poller)
}

/// `mosquitto_pub` as Home Assistant's account (client id `id`), QoS 1:
/// the broker took the message (a refused one is dropped by its ACL, which
/// the caller checks by what it reads back).
fn ha_pub(port: u16, id: &str, topic: &str, payload: &str, retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", HA_USER, "-P", HA_PASSWORD, "-i", id])
        .args(["-t", topic, "-q", "1", "-m", payload]);
    if retain {
        cmd.arg("-r");
    }
    assert!(cmd.status().unwrap().success(), "mosquitto_pub to {topic}");
}

/// The next answer on a `response` topic, as JSON.
async fn answer(rx: &mut tokio::sync::mpsc::Receiver<Heard>) -> serde_json::Value {
    let (retained, payload) = next(rx).await.expect("an answer");
    assert!(!retained, "an answer is not retained");
    serde_json::from_slice(&payload).expect("an answer is JSON")
}

/// The site lets residents pick their own PINs (Home Assistant's are
/// custom PINs).
async fn allow_custom_pins(world: &World, allowed: bool) {
    use reference_server::engine::{Command as EngineCommand, SiteSettingsPatch};
    world
        .service
        .apply(
            &world.owner,
            EngineCommand::PatchSiteSettings {
                site: world.site,
                patch: SiteSettingsPatch {
                    custom_pins: Some(allowed),
                    ..SiteSettingsPatch::default()
                },
            },
        )
        .await
        .expect("site settings");
}

fn users(slots: serde_json::Value) -> String {
    serde_json::json!({ "users": slots }).to_string()
}

/// The code events of the organization, oldest first.
fn code_events(world: &World, t: EventType) -> usize {
    let org =
        reference_server::events::device_org(&world.service.engine(), world.device(0)).unwrap();
    world
        .service
        .store()
        .events(&EventQuery {
            org,
            event_type: Some(t),
            device: None,
            order: Order::After(0),
            limit: 100,
        })
        .unwrap()
        .len()
}

/// Home Assistant as it is: one connection that both listens (a lock's
/// topics) and sends its commands. (On Mosquitto with
/// `use_username_as_clientid`, a second connection of the account, such
/// as a `mosquitto_pub`, would take the first one over.)
struct Ha {
    client: rumqttc::AsyncClient,
    rx: tokio::sync::mpsc::Receiver<(String, Vec<u8>)>,
    poller: tokio::task::JoinHandle<()>,
    /// The last `users` state heard.
    users: Option<String>,
}

impl Ha {
    async fn connect(port: u16, filter: &str) -> Ha {
        let mut opts = rumqttc::MqttOptions::new("ha", "127.0.0.1", port);
        opts.set_credentials(HA_USER, HA_PASSWORD);
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let poller = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(t) = subscribed_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec())).await;
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), subscribed)
            .await
            .expect("Home Assistant subscribed")
            .unwrap();
        Ha {
            client,
            rx,
            poller,
            users: None,
        }
    }

    async fn send(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
    }

    /// The next message heard, noting each `users` state.
    async fn hear(&mut self) -> (String, Vec<u8>) {
        let (topic, payload) = tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("a message for Home Assistant")
            .expect("the poller runs");
        if topic.ends_with("/users") {
            self.users = Some(String::from_utf8(payload.clone()).unwrap());
        }
        (topic, payload)
    }

    /// The next answer on a `response` topic.
    async fn answer(&mut self) -> serde_json::Value {
        loop {
            let (topic, payload) = self.hear().await;
            if topic.ends_with("/response") {
                return serde_json::from_slice(&payload).expect("an answer is JSON");
            }
        }
    }

    /// Waits until the `users` state heard is `want`.
    async fn users_until(&mut self, want: &str) {
        while self.users.as_deref() != Some(want) {
            self.hear().await;
        }
    }
}

/// Zigbee2MQTT's `pin_code` on the lock's command topic, against
/// Mosquitto: a slot set becomes a code on the lock's door (the lock gets
/// it by sync and grants it), the retained `users` state shows it masked,
/// a new PIN keeps the code's id, `user_enabled: false` disables it; after
/// a restart of the server the slot still holds the same code, and
/// clearing it deletes the code. Each change is answered and is in the
/// event log; Home Assistant cannot forge the `users` state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_slots_from_home_assistant_become_codes_on_the_lock_and_survive_a_restart() {
    use reference_server::domain::{DenyReason, SyncState};
    use reference_server::protocol::{Verdict, WireSecret};
    use reference_server::service::PinRefusal;

    let b = start(1).await;
    let mut dev = b.device(0).await;
    b.wait_retained(&b.topic(0, "availability"), "online").await;
    b.wait_retained(&b.topic(0, "users"), &users(serde_json::json!({})))
        .await;
    // From here on Home Assistant's one connection does the talking.
    let lock_topics = format!("homeassistant/lock/fleet_{}/#", b.world.device(0));
    let mut ha = Ha::connect(b.port, &lock_topics).await;
    let set_topic = b.topic(0, "set");
    let m = b.mqtt.gateway.metrics().clone();

    // The site does not allow custom PINs yet: refused, answered, counted.
    let set = r#"{"pin_code": {"user": 1, "user_type": "unrestricted", "user_enabled": true, "pin_code": "4829"}, "transaction": "t1"}"#;
    ha.send(&set_topic, set).await;
    let a = ha.answer().await;
    assert_eq!(a["status"], "error", "{a}");
    assert_eq!(a["reason"], "custom_pins_disabled");
    assert_eq!(a["transaction"], "t1");
    assert_eq!(m.ha_pin_refused(PinRefusal::CustomPinsDisabled), 1);

    allow_custom_pins(&b.world, true).await;
    ha.send(&set_topic, set).await;
    let a = ha.answer().await;
    assert_eq!(
        a,
        serde_json::json!({"status": "ok", "data": {"user": 1}, "transaction": "t1"})
    );
    let code = b.world.service.pin_slots(b.world.device(0))[0].credential;
    let enabled = users(
        serde_json::json!({"1": {"status": "enabled", "pin_code": "****", "credential": code}}),
    );
    assert_eq!(
        ha.users.as_deref(),
        Some(enabled.as_str()),
        "the users state comes before the answer"
    );
    // The lock gets the code by the normal sync, setting then set.
    let push = dev.expect_sync().await;
    let synced = push
        .set
        .iter()
        .find(|c| c.credential == code)
        .expect("the slot's code");
    assert_eq!(synced.secret, WireSecret::Pin("4829".into()));
    assert_eq!(b.world.state(code, 0), Some(SyncState::Setting));
    dev.ack_sync(&mqtt_support::ack_all(&push)).await;
    for _ in 0..100 {
        if b.world.state(code, 0) == Some(SyncState::Set) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.world.state(code, 0), Some(SyncState::Set));
    // The lock grants it (the device protocol's check).
    let granted = dev.present_pin("4829").await;
    assert_eq!(granted.decision, Verdict::Granted);
    assert_eq!(granted.credential_id, Some(code));
    {
        let e = b.world.service.engine();
        let c = e.credential(code).unwrap();
        assert_eq!(
            e.holder(c.holder).unwrap().name,
            reference_server::service::PIN_SLOT_HOLDER_NAME
        );
        assert_eq!(c.doors, vec![b.world.door]);
    }

    // A new PIN: the same code (the admin API's PUT pin path).
    ha.send(
        &set_topic,
        r#"{"pin_code": {"user": 1, "pin_code": "5937"}}"#,
    )
    .await;
    assert_eq!(ha.answer().await["status"], "ok");
    let head = b.world.service.engine().code_head(code);
    assert_ne!(head, code, "a new version of the code");
    assert_eq!(b.world.service.engine().code_id(head), code);
    assert_eq!(
        ha.users.as_deref(),
        Some(enabled.as_str()),
        "the same code id"
    );
    let push = dev.expect_sync().await;
    assert!(push.set.iter().any(|c| c.credential == head), "{push:?}");
    dev.ack_sync(&mqtt_support::ack_all(&push)).await;
    // The new PIN opens the lock once it confirmed it.
    for _ in 0..100 {
        if b.world.state(head, 0) == Some(SyncState::Set) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.world.state(head, 0), Some(SyncState::Set));
    assert_eq!(dev.present_pin("5937").await.decision, Verdict::Granted);

    // Home Assistant cannot forge the users state: Mosquitto's ACL drops
    // it (were it let through, Home Assistant would hear it before the
    // next answer: one connection's packets are handled in order).
    ha.client
        .publish(
            b.topic(0, "users"),
            rumqttc::QoS::AtLeastOnce,
            true,
            "{}".to_string(),
        )
        .await
        .unwrap();
    // Disabled, kept.
    ha.send(
        &set_topic,
        r#"{"pin_code": {"user": 1, "user_enabled": false}}"#,
    )
    .await;
    assert_eq!(ha.answer().await["status"], "ok");
    let disabled = users(
        serde_json::json!({"1": {"status": "disabled", "pin_code": "****", "credential": code}}),
    );
    assert_eq!(ha.users.as_deref(), Some(disabled.as_str()));
    assert!(b.world.service.engine().credential(head).unwrap().disabled);
    // In the event log, like any code's changes.
    assert_eq!(code_events(&b.world, EventType::AccessCodeCreated), 1);
    // The new PIN and the disabling.
    assert_eq!(code_events(&b.world, EventType::AccessCodeChanged), 2);

    // An empty slot set disabled: the slot's code is disabled from its
    // first push (issued and disabled under one engine lock,
    // `Service::apply_then`); the lock gets it and its check is denied as
    // disabled. Then the slot is cleared again.
    ha.send(
        &set_topic,
        r#"{"pin_code": {"user": 2, "user_enabled": false, "pin_code": "6142"}}"#,
    )
    .await;
    assert_eq!(ha.answer().await["status"], "ok");
    let second = b
        .world
        .service
        .pin_slots(b.world.device(0))
        .into_iter()
        .find(|s| s.slot == 2)
        .expect("slot 2");
    assert!(!second.enabled);
    let push = dev.expect_sync().await;
    assert!(
        push.set.iter().any(|c| c.credential == second.credential),
        "{push:?}"
    );
    dev.ack_sync(&mqtt_support::ack_all(&push)).await;
    for _ in 0..100 {
        if b.world.state(second.credential, 0) == Some(SyncState::Set) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let denied = dev.present_pin("6142").await;
    assert_eq!(
        (denied.decision, denied.reason),
        (Verdict::Denied, Some(DenyReason::Disabled))
    );
    ha.send(&set_topic, r#"{"pin_code": {"user": 2, "pin_code": null}}"#)
        .await;
    assert_eq!(ha.answer().await["status"], "ok");

    // The server restarts: the slot still holds the same code.
    let Bridge {
        world,
        mqtt,
        mosquitto,
        port,
    } = b;
    mqtt.gateway.shutdown().await;
    dev.disconnect().await;
    world.service.close().await;
    let again = std::sync::Arc::new(
        reference_server::service::Service::open(
            world.data_dir(),
            reference_server::service::Clock::system(),
        )
        .expect("open again"),
    );
    let slots = again.pin_slots(world.device(0));
    assert_eq!(slots.len(), 1);
    assert_eq!(
        (slots[0].slot, slots[0].credential, slots[0].enabled),
        (1, code, false)
    );
    let mosquitto = mosquitto.unwrap();
    let mqtt = gateway::serve(
        again.clone(),
        BrokerChoice::External(mosquitto.engine_url().parse().unwrap()),
        |cfg| cfg.home_assistant = Some(HomeAssistantConfig::default()),
    )
    .await
    .expect("mqtt serves");
    tokio::time::timeout(Duration::from_secs(20), mqtt.gateway.ready())
        .await
        .expect("gateway subscribed");
    let b = Bridge {
        world: World {
            service: again.clone(),
            ..world
        },
        mqtt,
        port,
        mosquitto: Some(mosquitto),
    };
    ha.send(
        &set_topic,
        r#"{"pin_code": {"user": 1, "user_enabled": true}}"#,
    )
    .await;
    assert_eq!(ha.answer().await["status"], "ok");
    assert_eq!(ha.users.as_deref(), Some(enabled.as_str()));
    assert!(!again.engine().credential(head).unwrap().disabled);
    // Cleared: the code is deleted, the slot empty.
    ha.send(&set_topic, r#"{"pin_code": {"user": 1, "pin_code": null}}"#)
        .await;
    assert_eq!(ha.answer().await["status"], "ok");
    ha.users_until(&users(serde_json::json!({}))).await;
    assert!(again.engine().credential(head).unwrap().revoked);
    assert!(again.pin_slots(b.world.device(0)).is_empty());
    // Slot 2's code, then slot 1's.
    assert_eq!(code_events(&b.world, EventType::AccessCodeDeleted), 2);
    assert!(
        b.mosquitto
            .as_ref()
            .unwrap()
            .log_text()
            .contains("Denied PUBLISH"),
        "Mosquitto refused the forged users state"
    );
    ha.poller.abort();
    b.mqtt.gateway.shutdown().await;
}

/// On the embedded broker: every kind of bad `pin_code` command is
/// refused, answered with its reason (never the PIN) and counted in
/// `gateway_ha_pin_refused_total{reason}`; nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pin_code_commands_are_refused_answered_and_counted() {
    use reference_server::domain::{Connectivity, DeviceKind};
    use reference_server::engine::Command as EngineCommand;
    use reference_server::service::PinRefusal;

    let b = start_embedded(1).await;
    allow_custom_pins(&b.world, true).await;
    b.wait_retained("homeassistant/fleet/bridge/availability", "online")
        .await;
    let (sensor, _) = b
        .world
        .service
        .create_device(
            &b.world.owner,
            EngineCommand::CreateDevice {
                door: b.world.door,
                kind: DeviceKind::DoorSensor,
                connectivity: Connectivity::Wifi,
                name: "Sensor".into(),
                location: "Front".into(),
                linked_to: None,
                code_slots: 0,
            },
        )
        .await
        .expect("a door sensor");
    let (mut answers, poller) = listen(b.port, "homeassistant/lock/+/response", "ha-answers");
    assert!(next(&mut answers).await.is_none(), "subscribed first");
    let m = b.mqtt.gateway.metrics().clone();
    // A first slot, so a second one with its PIN is a PIN in use.
    b.command(0, r#"{"pin_code": {"user": 1, "pin_code": "4829"}}"#);
    assert_eq!(answer(&mut answers).await["status"], "ok");
    let publish = |topic: &str, payload: &str| ha_pub(b.port, "ha-writer", topic, payload, false);
    let lock = b.topic(0, "set");
    let sensor_topic = format!("homeassistant/lock/fleet_{sensor}/set");
    let mut counted = BTreeMap::<&str, u64>::new();
    for (topic, payload, want) in [
        (&lock, "{oops", PinRefusal::NotJson),
        (
            &lock,
            r#"{"pin_code": {"user": 2, "pin_code": "7316", "name": "x"}}"#,
            PinRefusal::UnknownField,
        ),
        (
            &lock,
            r#"{"pin_code": {"user": "2", "pin_code": "7316"}}"#,
            PinRefusal::BadField,
        ),
        (
            &lock,
            r#"{"pin_code": {"user": 251, "pin_code": "7316"}}"#,
            PinRefusal::SlotOutOfRange,
        ),
        (
            &lock,
            r#"{"pin_code": {"user": 0, "pin_code": "7316"}}"#,
            PinRefusal::SlotOutOfRange,
        ),
        (
            &lock,
            r#"{"pin_code": {"user": 2, "pin_code": "2222"}}"#,
            PinRefusal::BadPin,
        ),
        (
            &lock,
            r#"{"pin_code": {"user": 2, "pin_code": "73161"}}"#,
            PinRefusal::BadPin,
        ),
        (
            &lock,
            r#"{"pin_code": {"user": 2, "pin_code": "4829"}}"#,
            PinRefusal::PinInUse,
        ),
        (
            &lock,
            r#"{"pin_code": {"user": 2, "user_type": "master", "pin_code": "7316"}}"#,
            PinRefusal::UnsupportedUserType,
        ),
        (
            &lock,
            r#"{"pin_code": {"user": 3, "user_enabled": true}}"#,
            PinRefusal::EmptySlot,
        ),
        (
            &"homeassistant/lock/fleet_dev-999/set".to_string(),
            r#"{"pin_code": {"user": 2, "pin_code": "7316"}}"#,
            PinRefusal::UnknownLock,
        ),
        (
            &sensor_topic,
            r#"{"pin_code": {"user": 2, "pin_code": "7316"}}"#,
            PinRefusal::NotKeypadLock,
        ),
    ] {
        publish(topic, payload);
        let a = answer(&mut answers).await;
        assert_eq!(a["status"], "error", "{payload}: {a}");
        assert_eq!(a["reason"], want.as_str(), "{payload}: {a}");
        for pin in ["7316", "4829", "2222", "73161"] {
            assert!(!a.to_string().contains(pin), "{a}");
        }
        *counted.entry(want.as_str()).or_default() += 1;
        assert_eq!(m.ha_pin_refused(want), counted[want.as_str()], "{payload}");
    }
    // The site stops allowing custom PINs: a new PIN is refused.
    allow_custom_pins(&b.world, false).await;
    b.command(0, r#"{"pin_code": {"user": 1, "pin_code": "7316"}}"#);
    assert_eq!(answer(&mut answers).await["reason"], "custom_pins_disabled");
    assert_eq!(m.ha_pin_refused(PinRefusal::CustomPinsDisabled), 1);
    assert_eq!(m.ha_pin_applied.get(), 1, "only the first set was applied");
    let slots = b.world.service.pin_slots(b.world.device(0));
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_eq!(
        b.world
            .service
            .engine()
            .credential(slots[0].credential)
            .map(|c| c.disabled),
        Some(false)
    );
    // The embedded broker's ACL: Home Assistant may not write the users
    // state nor an answer.
    let users_topic = b.topic(0, "users");
    let before = b.retained(&users_topic);
    ha_pub(b.port, "ha-forger", &users_topic, "{}", true);
    assert!(before[&users_topic].contains("\"1\""), "{before:?}");
    assert_eq!(b.retained(&users_topic), before);
    // The slot's code deleted through the admin API's command: the slot
    // is empty, and Home Assistant sees it.
    let head = b.world.service.engine().code_head(slots[0].credential);
    b.world
        .service
        .apply(
            &b.world.owner,
            EngineCommand::RevokeCredential { credential: head },
        )
        .await
        .unwrap();
    b.wait_retained(&users_topic, &users(serde_json::json!({})))
        .await;
    assert!(b.world.service.pin_slots(b.world.device(0)).is_empty());
    // A lock added while the bridge runs gets its (empty) users state
    // when it first comes online.
    let (late, secret) = b
        .world
        .service
        .create_device(
            &b.world.owner,
            EngineCommand::CreateDevice {
                door: b.world.door,
                kind: DeviceKind::Lock,
                connectivity: Connectivity::Wifi,
                name: "Late lock".into(),
                location: "Front".into(),
                linked_to: None,
                code_slots: 20,
            },
        )
        .await
        .expect("a lock");
    let _late = mqtt_support::Device::connect(b.port, b.world.site, late, &secret)
        .await
        .expect("the new lock connects");
    b.wait_retained(
        &format!("homeassistant/lock/fleet_{late}/users"),
        &users(serde_json::json!({})),
    )
    .await;
    poller.abort();
    b.mqtt.gateway.shutdown().await;
}
