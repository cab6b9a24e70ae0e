//! The MQTT transport in real time against a real broker (the reference
//! server's embedded broker on a free loopback port, with username/password
//! auth and its per-device ACL), and a
//! responder built on the real `Engine` that answers `auth/req`, pushes
//! `sync`, applies `sync/ack` and logs `events` exactly once.

mod devices_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use devices_support::{
    all_codes_set, engine, eventually, issue_pin_in, reflashed_lock, snapshot_when, start_time,
};
use fleetsim::clock::SimClock;
use fleetsim::devices::fleet::{provision, Fleet, FleetSpec, Placement, Provisioned};
use fleetsim::devices::{Control, DeviceOutcome, DeviceParams, Present};
use fleetsim::transport::{
    derived_secrets, DeviceSecrets, EventLog, MqttConfig, MqttTransport, Multiplex, Transport,
};
use parking_lot::RwLock;
use reference_server::domain::{Actor, DenyReason, DeviceId, FloorScope, HolderKind};
use reference_server::engine::{Command, Issue, Outcome, PinSpec, SecretSpec, SyncResult};
use reference_server::protocol::{
    decode, encode, parse_topic, topic, AuthRequest, AuthResponse, Channel, CommandAck,
    CommandKind, CommandResult, DeviceCommand, Event, SimAction, SyncAckMsg,
};
use reference_server::{broker, Check, Engine};
use rumqttc::{AsyncClient, MqttOptions, Packet, QoS};

const ENGINE_USER: &str = "engine";
const ENGINE_PASS: &str = "engine-secret";

/// Starts the embedded broker on a free port: only the listed users may
/// connect; a `dev-N` user is that device, confined to its own topics by
/// the broker's ACL; any other user is trusted (the responder, a shared
/// connection).
async fn start_broker(users: HashMap<String, String>, engine: &Arc<RwLock<Engine>>) -> u16 {
    let engine = engine.clone();
    let login: broker::LoginCheck = Arc::new(move |l: &broker::Login<'_>| {
        if users.get(l.username).map(String::as_str) != Some(l.password) {
            return None;
        }
        match reference_server::protocol::parse_device(l.username) {
            Ok(device) => engine
                .read()
                .device(device)
                .map(|d| broker::Identity::Device {
                    device,
                    site: d.site,
                }),
            Err(_) => Some(broker::Identity::Engine),
        }
    });
    let cfg = broker::EmbeddedBrokerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), login);
    let handle = broker::start(cfg).await.expect("the broker starts");
    handle.addr().port()
}

/// A broker whose accounts are every device of `engine` with its secret,
/// the engine's and `extra`; its port and the accounts.
async fn broker_for(
    engine: &Arc<RwLock<Engine>>,
    secrets: &DeviceSecrets,
    extra: &[(&str, &str)],
) -> (u16, HashMap<String, String>) {
    let mut users: HashMap<String, String> = engine
        .read()
        .devices()
        .map(|d| (d.id.to_string(), secrets(d.id)))
        .collect();
    users.insert(ENGINE_USER.into(), ENGINE_PASS.into());
    for (user, password) in extra {
        users.insert((*user).into(), (*password).into());
    }
    (start_broker(users.clone(), engine).await, users)
}

/// The fleet `provisioned`, its devices speaking MQTT to the broker of
/// `config` (connections as `mode` says), seeded by the spec.
fn mqtt_fleet(
    spec: &FleetSpec,
    provisioned: Provisioned,
    config: MqttConfig,
    mode: Multiplex,
    secrets: DeviceSecrets,
    clock: SimClock,
) -> Fleet {
    let transport = MqttTransport::new(config, mode, secrets, spec.seed);
    Fleet::start(
        spec,
        provisioned,
        Transport::Mqtt(transport),
        clock,
        &Placement::Current,
    )
}

/// The engine side over MQTT: answers checks, applies sync acks, logs events.
struct Responder {
    client: AsyncClient,
    log: Arc<EventLog>,
    /// The boot epochs the devices' events carried.
    boots: Arc<parking_lot::Mutex<std::collections::BTreeSet<u64>>>,
    /// The devices that asked for a full resync (`sync/req`), as often as
    /// they asked.
    full_resyncs: Arc<parking_lot::Mutex<Vec<DeviceId>>>,
    /// SUBACKs received: the responder hears what devices send once all
    /// its subscriptions are in place.
    subacks: Arc<std::sync::atomic::AtomicUsize>,
    /// The `cmd/ack`s heard: (device, ack).
    acks: Arc<parking_lot::Mutex<Vec<(DeviceId, CommandAck)>>>,
}

/// What the responder subscribes to, one filter each.
const RESPONDER_CHANNELS: [Channel; 6] = [
    Channel::AuthReq,
    Channel::Events,
    Channel::SyncAck,
    Channel::SyncReq,
    Channel::CmdAck,
    Channel::Status,
];

impl Responder {
    /// Waits until every subscription is acknowledged: from then on the
    /// responder hears whatever a device sends.
    async fn subscribed(&self) {
        let subacks = self.subacks.clone();
        eventually("the responder's subscriptions", || {
            let subacks = subacks.clone();
            async move {
                subacks.load(std::sync::atomic::Ordering::Acquire) >= RESPONDER_CHANNELS.len()
            }
        })
        .await;
    }

    fn start(port: u16, engine: Arc<RwLock<Engine>>, clock: SimClock) -> Responder {
        let mut opts = MqttOptions::new("engine", "127.0.0.1", port);
        opts.set_credentials(ENGINE_USER, ENGINE_PASS)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(500);
        let (client, mut eventloop) = AsyncClient::new(opts, 1_000);
        let log = Arc::new(EventLog::new());
        let boots = Arc::new(parking_lot::Mutex::new(std::collections::BTreeSet::new()));
        let full_resyncs = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let subacks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acks = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (c, l, b, f, s, a) = (
            client.clone(),
            log.clone(),
            boots.clone(),
            full_resyncs.clone(),
            subacks.clone(),
            acks.clone(),
        );
        tokio::spawn(async move {
            // The version last pushed to each device on its cue (the
            // gateway's session: a batch in flight is not sent again on a
            // status "online"; a full resync sends it again).
            let mut pushed: HashMap<DeviceId, u64> = HashMap::new();
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                        for ch in RESPONDER_CHANNELS {
                            let f = format!("fleet/+/+/{}", ch.suffix());
                            c.subscribe(f, QoS::AtLeastOnce).await.unwrap();
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::SubAck(_))) => {
                        s.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        let (site, device, ch) = parse_topic("fleet", &p.topic).unwrap();
                        match ch {
                            Channel::AuthReq => {
                                let req: AuthRequest = decode(&p.payload).unwrap();
                                let resp = match req.credential.to_presented() {
                                    Ok(presented) => {
                                        let check = Check {
                                            device,
                                            presented,
                                            floor: req.floor,
                                        };
                                        let d = engine.read().validate(&check, clock.now());
                                        AuthResponse::from_decision(req.id, &d)
                                    }
                                    Err(e) => AuthResponse::error(req.id, e.to_string()),
                                };
                                let t = topic("fleet", site, device, Channel::AuthResp);
                                c.try_publish(t, QoS::AtLeastOnce, false, encode(&resp))
                                    .unwrap();
                            }
                            Channel::Events => {
                                let e: Event = decode(&p.payload).unwrap();
                                b.lock().insert(e.boot);
                                l.record(device, &e);
                            }
                            Channel::SyncReq => {
                                let req: reference_server::protocol::SyncRequest =
                                    decode(&p.payload).unwrap();
                                if req.full {
                                    f.lock().push(device);
                                    // The gateway's answer: every code the
                                    // device should hold counts as not set
                                    // and goes out again.
                                    let reset = Command::SyncReset { device };
                                    engine
                                        .write()
                                        .apply(&Actor::System, reset, clock.now())
                                        .unwrap();
                                    pushed.remove(&device);
                                }
                                if let Some(v) = push_pending(&c, &engine, clock, device) {
                                    pushed.insert(device, v);
                                }
                            }
                            // Coming online is the cue to push the delta.
                            Channel::Status => {
                                let st: reference_server::protocol::Status =
                                    decode(&p.payload).unwrap();
                                let pending = engine.read().pending_sync(device).map(|b| b.version);
                                if st.online && pending != pushed.get(&device).copied() {
                                    if let Some(v) = push_pending(&c, &engine, clock, device) {
                                        pushed.insert(device, v);
                                    }
                                }
                            }
                            Channel::CmdAck => {
                                let ack: CommandAck = decode(&p.payload).unwrap();
                                a.lock().push((device, ack));
                            }
                            Channel::SyncAck => {
                                let ack: SyncAckMsg = decode(&p.payload).unwrap();
                                let results = ack
                                    .results
                                    .iter()
                                    .map(|r| SyncResult {
                                        credential: r.credential,
                                        failure: r.failure,
                                    })
                                    .collect();
                                engine
                                    .write()
                                    .apply(
                                        &Actor::System,
                                        Command::SyncAck { device, results },
                                        clock.now(),
                                    )
                                    .unwrap();
                            }
                            _ => {}
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Responder {
            client,
            log,
            boots,
            full_resyncs,
            subacks,
            acks,
        }
    }

    /// Sends a device its pending codes (what the gateway does on a change).
    async fn push_sync(&self, engine: &Arc<RwLock<Engine>>, clock: SimClock, device: DeviceId) {
        push_pending(&self.client, engine, clock, device);
    }
}

/// Publishes a device's pending batch, if any, marked sent; its version.
fn push_pending(
    client: &AsyncClient,
    engine: &Arc<RwLock<Engine>>,
    clock: SimClock,
    device: DeviceId,
) -> Option<u64> {
    let batch = engine.read().pending_sync(device).unwrap();
    if batch.is_empty() {
        return None;
    }
    engine
        .write()
        .apply(
            &Actor::System,
            Command::SyncSent {
                device,
                version: batch.version,
            },
            clock.now(),
        )
        .unwrap();
    let site = engine.read().device(device).unwrap().site;
    let t = topic("fleet", site, device, Channel::Sync);
    // Not awaited: this runs in the responder's event loop too, which must
    // not wait on its own request queue.
    client
        .try_publish(
            t,
            QoS::AtLeastOnce,
            false,
            encode(&reference_server::protocol::SyncPush::whole(&batch)),
        )
        .unwrap();
    Some(batch.version)
}

fn issue_pin(
    engine: &Arc<RwLock<Engine>>,
    fleet: &Fleet,
    door: reference_server::domain::DoorId,
    pin: &str,
    now: jiff::Timestamp,
) {
    let mut e = engine.write();
    let h = match e
        .apply(
            &Actor::System,
            Command::CreateHolder {
                org: fleet.provisioned.org,
                name: "Resident".into(),
                kind: HolderKind::Member,
                user: None,
                floors: FloorScope::Any,
            },
            now,
        )
        .unwrap()
        .outcome
    {
        Outcome::Holder(h) => h,
        o => panic!("{o:?}"),
    };
    e.apply(
        &Actor::System,
        Command::IssueCredential(Issue {
            holder: h,
            name: "Resident PIN".into(),
            secret: SecretSpec::Pin {
                pin: PinSpec::Manual(pin.into()),
            },
            schedule: reference_server::domain::Schedule::Permanent,
            doors: vec![door],
            include_common_areas: false,
            floors: FloorScope::Any,
        }),
        now,
    )
    .unwrap();
}

fn run_mqtt_fleet(mode: impl Fn(&HashMap<String, String>) -> Multiplex, doors: u32) {
    actix_rt::System::new().block_on(async move {
        let engine = engine(5);
        let clock = SimClock::starting_at(start_time());
        let spec = FleetSpec::new(5)
            .wifi_doors(doors)
            .params(DeviceParams::quiet());
        let provisioned = provision(&mut engine.write(), &spec, clock.now()).unwrap();
        let secrets = derived_secrets([9u8; 32]);
        let (port, users) = broker_for(&engine, &secrets, &[("gateway", "gateway-secret")]).await;
        let responder = Responder::start(port, engine.clone(), clock);
        responder.subscribed().await;
        let config = MqttConfig {
            port,
            ..MqttConfig::default()
        };
        let fleet = mqtt_fleet(&spec, provisioned, config, mode(&users), secrets, clock);
        let plans = fleet.provisioned.doors.clone();
        for p in &plans {
            issue_pin(&engine, &fleet, p.door, "4829", clock.now());
        }
        // Push the codes until every lock and keypad confirmed them (a push
        // sent before a device subscribed is lost, as on a real broker; the
        // engine resends what is still "setting").
        let targets: Vec<DeviceId> = plans
            .iter()
            .flat_map(|p| [p.lock.unwrap(), p.keypad.unwrap()])
            .collect();
        let all_set = |e: &Arc<RwLock<Engine>>| {
            let e = e.read();
            targets.iter().all(|d| {
                e.credentials()
                    .iter()
                    .flat_map(|c| c.placements.iter())
                    .any(|pl| pl.device == *d && pl.state.on_device())
            })
        };
        let mut rounds = 0;
        while !all_set(&engine) {
            rounds += 1;
            assert!(rounds < 100, "codes were not confirmed within 20 s");
            for d in &targets {
                responder.push_sync(&engine, clock, *d).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for p in &plans {
            let keypad = p.keypad.unwrap();
            let present = |pin: &str| Present {
                credential: reference_server::protocol::WireCredential::Pin(pin.into()),
                floor: None,
                human_timing: false,
            };
            let got = fleet.present_with(keypad, present("4829")).await.unwrap();
            assert_eq!(got.outcome, DeviceOutcome::Unlocked, "{:?}", got);
            assert!(!got.decided_locally);
            let got = fleet.present_with(keypad, present("1357")).await.unwrap();
            assert_eq!(got.outcome, DeviceOutcome::Denied(DenyReason::WrongPin));
            assert_eq!(got.response.unwrap().reason, Some(DenyReason::WrongPin));
        }
        // Every event each device emitted reached the engine exactly once.
        for d in fleet.devices() {
            let id = d.id;
            let fleet = &fleet;
            let log = responder.log.clone();
            eventually("events to be logged", || {
                let log = log.clone();
                async move {
                    let s = fleet.snapshot(id).await.unwrap();
                    let l = log.device(id);
                    l.per_kind == s.emitted && l.last_seq == s.seq && l.gaps == 0
                }
            })
            .await;
        }
        let totals = responder.log.totals();
        assert_eq!(totals.duplicates, 0);
        // Each lock powered up with an empty store and asked for every code,
        // once (a keypad asks the engine; it stores nothing it must ask for).
        let mut locks: Vec<DeviceId> = plans.iter().map(|p| p.lock.unwrap()).collect();
        locks.sort();
        eventually("full resync requests", || {
            let asked = responder.full_resyncs.clone();
            let locks = locks.clone();
            async move {
                let mut asked = asked.lock().clone();
                asked.sort();
                asked == locks
            }
        })
        .await;
        // Every event carries the devices' boot epoch: the run's start.
        assert_eq!(
            *responder.boots.lock(),
            [start_time().as_second() as u64].into(),
            "the boot epoch of every event"
        );
        assert_eq!(totals.per_kind.get("unlocked"), u64::from(doors));
        assert_eq!(totals.per_kind.get("access_denied"), u64::from(doors));
        // A code pushed again before its ack arrived is confirmed again.
        assert!(totals.per_kind.get("code_set") >= 2 * u64::from(doors));
        actix_rt::System::current().stop();
    });
}

#[test]
fn devices_check_pins_over_a_real_broker_one_connection_each() {
    run_mqtt_fleet(|_| Multiplex::PerDevice, 2);
}

#[test]
fn devices_check_pins_over_a_real_broker_multiplexed() {
    run_mqtt_fleet(
        |users| Multiplex::Shared {
            devices_per_connection: 4,
            username: "gateway".into(),
            password: users["gateway"].clone(),
        },
        5,
    );
}

#[test]
fn a_device_with_a_wrong_secret_is_refused_and_checks_fail_cleanly() {
    actix_rt::System::new().block_on(async {
        let engine = engine(6);
        let clock = SimClock::starting_at(start_time());
        let spec = FleetSpec::new(6)
            .wifi_doors(1)
            .keypads(false)
            .sensors(false);
        let provisioned = provision(&mut engine.write(), &spec, clock.now()).unwrap();
        let users = HashMap::from([("dev-0".to_string(), "right".to_string())]);
        let port = start_broker(users, &engine).await;
        let config = MqttConfig {
            port,
            request_timeout_ms: 300,
            ..MqttConfig::default()
        };
        let fleet = mqtt_fleet(
            &spec,
            provisioned,
            config,
            Multiplex::PerDevice,
            derived_secrets([1; 32]),
            clock,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let lock = fleet.provisioned.doors[0].lock.unwrap();
        let got = fleet
            .present_with(
                lock,
                Present {
                    credential: reference_server::protocol::WireCredential::Pin("4829".into()),
                    floor: None,
                    human_timing: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(got.outcome, DeviceOutcome::Offline);
        actix_rt::System::current().stop();
    });
}

/// The server's `simulate` command over a real broker: a fleetsim lock
/// decodes it from its `cmd` topic, acts it out (a jam jams it), acks it
/// on `cmd/ack` and reports its own `motor_blocked`; a keypad told of a
/// code entry checks the code over MQTT and reports the denial.
#[test]
fn devices_act_out_a_simulate_command_sent_over_the_broker() {
    actix_rt::System::new().block_on(async move {
        let engine = engine(6);
        let clock = SimClock::starting_at(start_time());
        let spec = FleetSpec::new(6)
            .wifi_doors(1)
            .params(DeviceParams::quiet());
        let provisioned = provision(&mut engine.write(), &spec, clock.now()).unwrap();
        let secrets = derived_secrets([8u8; 32]);
        let (port, _) = broker_for(&engine, &secrets, &[]).await;
        let responder = Responder::start(port, engine.clone(), clock);
        responder.subscribed().await;
        let config = MqttConfig {
            port,
            ..MqttConfig::default()
        };
        let fleet = mqtt_fleet(
            &spec,
            provisioned,
            config,
            Multiplex::PerDevice,
            secrets,
            clock,
        );
        fleet
            .wait_links_ready(Duration::from_secs(20))
            .await
            .expect("devices subscribed");
        let plan = fleet.provisioned.doors[0].clone();
        let (lock, keypad) = (plan.lock.unwrap(), plan.keypad.unwrap());
        let send = |device: DeviceId, id: u64, action: SimAction| {
            let cmd = DeviceCommand {
                id,
                command: CommandKind::Simulate,
                simulate: Some(action),
            };
            let t = topic("fleet", plan.site, device, Channel::Cmd);
            responder
                .client
                .try_publish(t, QoS::AtLeastOnce, false, encode(&cmd))
                .unwrap();
        };
        send(lock, 1, SimAction::Jam);
        send(
            keypad,
            2,
            SimAction::KeypadCodeEntry {
                code: "1357".into(),
            },
        );
        let acks = responder.acks.clone();
        eventually("both commands acked", || {
            let acks = acks.clone();
            async move { acks.lock().len() == 2 }
        })
        .await;
        let mut got = responder.acks.lock().clone();
        got.sort_by_key(|(_, a)| a.id);
        assert_eq!(
            got,
            vec![
                (
                    lock,
                    CommandAck {
                        id: 1,
                        result: CommandResult::Ok
                    }
                ),
                (
                    keypad,
                    CommandAck {
                        id: 2,
                        result: CommandResult::Ok
                    }
                ),
            ]
        );
        let log = responder.log.clone();
        eventually("the devices' own events logged", || {
            let log = log.clone();
            async move {
                log.device(lock).per_kind.get("motor_blocked") == 1
                    && log.device(keypad).per_kind.get("access_denied") == 1
            }
        })
        .await;
        assert_eq!(fleet.snapshot(lock).await.unwrap().state, "jammed");
        let k = fleet.snapshot(keypad).await.unwrap();
        assert_eq!((k.checks, k.denied), (1, 1), "checked over MQTT, denied");
        actix_rt::System::current().stop();
    });
}

/// A Wi-Fi lock reflashed with an empty cache, over MQTT: the server shows
/// its three codes set (acked before the reboot), so the delta its status
/// "online" cues would carry nothing; the lock sends `sync/req`
/// `{"full": true}` and gets all three again. A reconnect later is a status
/// "online" only: a code issued while it was offline arrives, the three it
/// holds are not pushed again.
#[test]
fn a_lock_that_lost_its_cache_asks_over_mqtt_for_every_code_and_a_reconnect_for_the_delta() {
    actix_rt::System::new().block_on(async move {
        let r = reflashed_lock(11);
        let (engine, clock, lock) = (r.engine.clone(), r.clock, r.lock);
        let secrets = derived_secrets([9u8; 32]);
        let (port, _) = broker_for(&engine, &secrets, &[]).await;
        let responder = Responder::start(port, engine.clone(), clock);
        responder.subscribed().await;
        let config = MqttConfig {
            port,
            ..MqttConfig::default()
        };
        let fleet = mqtt_fleet(
            &r.spec,
            r.provisioned,
            config,
            Multiplex::PerDevice,
            secrets,
            clock,
        );
        let s = snapshot_when(&fleet, lock, "every code pushed again", |s| {
            s.cached_codes == 3
        })
        .await;
        assert_eq!(*responder.full_resyncs.lock(), vec![lock]);
        all_codes_set(&engine, lock).await;
        let codes_set = fleet.snapshot(lock).await.unwrap().emitted.get("code_set");
        assert!(codes_set >= s.emitted.get("code_set") && codes_set >= 3);

        fleet
            .control(lock, Control::GoOffline { for_s: 0.2 })
            .unwrap();
        issue_pin_in(&mut engine.write(), r.org, r.door, "1357", clock.now());
        let s = snapshot_when(&fleet, lock, "the new code after the reconnect", |s| {
            s.online && s.cached_codes == 4
        })
        .await;
        assert_eq!(
            s.emitted.get("code_set"),
            codes_set + 1,
            "only the new code came after the reconnect"
        );
        assert_eq!(
            *responder.full_resyncs.lock(),
            vec![lock],
            "a reconnect does not ask for everything"
        );
        actix_rt::System::current().stop();
    });
}
