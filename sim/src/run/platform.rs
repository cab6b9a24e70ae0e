//! The system under test as the run's workloads reach it: the run's own
//! engine (the in-process transport), the reference server the run started
//! (http, mqtt), or an external one (`--target`). Every difference between
//! them that a workload would otherwise branch on lives here: whether a
//! change made during the run must reach a server and how it goes, where a
//! code's sync state can be read, how a waiting code is moved toward its
//! devices, a remote open, and what the devices' transport can do.
//!
//! The run's engine is always there: it provisions, and it makes every
//! change of the run first (its `Book` keeps the log), so ids and PINs are
//! known before a server hears of them. The platform also gives the
//! devices their transport, waits until every device holds its codes
//! before the load, and stops the embedded server at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use reference_server::domain::{Actor, CredentialId, DeviceId, SyncState};
use reference_server::engine::{Command, Outcome};
use reference_server::protocol::{CommandKind, CommandResult, DeviceCommand};
use reference_server::Engine;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::remote::{pending_on, Forwarder, Remote};
use super::target::Target;
use super::RunError;
use crate::clock::SimClock;
use crate::devices::fleet::{DeviceAddr, Fleet};
use crate::devices::Control;
use crate::metrics::Timings;
use crate::scenario::Transport as Kind;
use crate::transport::relay::Relay;
use crate::transport::{
    EventLog, HttpConfig, HttpTransport, InProcTransport, MqttConfig, MqttTransport, Multiplex,
    ServerIds, Transport,
};

/// An external target's answer time limit per request.
const TARGET_TIMEOUT_MS: u64 = 5_000;
/// How long the devices may take to store their codes before the load.
const SYNC_WAIT_S: u64 = 120;

/// One code as the engine of record shows it: replaced or revoked
/// (`gone`), and its state on each device it is placed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeSync {
    pub gone: bool,
    pub states: Vec<SyncState>,
}

impl CodeSync {
    pub fn of(c: &reference_server::domain::Credential) -> CodeSync {
        CodeSync {
            gone: c.revoked || c.replaced_by.is_some(),
            states: c.placements.iter().map(|p| p.state).collect(),
        }
    }
}

pub struct Platform {
    /// The devices' transport.
    kind: Kind,
    sut: Sut,
}

enum Sut {
    /// The run's engine alone.
    Local,
    /// The reference server the run started, fed in order by `forwarder`.
    Embedded {
        remote: Remote,
        forwarder: Forwarder,
        /// The events its gateway logged (mqtt).
        events: Arc<EventLog>,
    },
    /// A server the run was pointed at, fed through its admin API. Over
    /// MQTT its gateway is on the broker at `broker` (`host:port`), which
    /// the devices reach through `relay` when the scenario cuts it.
    External {
        target: Arc<Target>,
        forwarder: Forwarder,
        broker: Option<(String, u16)>,
        relay: Option<Arc<Relay>>,
    },
}

impl Platform {
    pub fn local() -> Platform {
        Platform {
            kind: Kind::Inproc,
            sut: Sut::Local,
        }
    }

    /// The server the run started; `events`: what its gateway's observer
    /// logs (mqtt).
    pub fn embedded(kind: Kind, remote: Remote, events: Arc<EventLog>) -> Platform {
        Platform {
            kind,
            sut: Sut::Embedded {
                forwarder: remote.forwarder(),
                remote,
                events,
            },
        }
    }

    /// A server the run was pointed at (`--target`): over `kind` http
    /// the devices ask its HTTP routes; over mqtt they speak to its
    /// gateway through `broker` (`--broker`, where the devices connect),
    /// through a relay of the run's when `outages` are to be played.
    pub async fn external(
        kind: Kind,
        target: Arc<Target>,
        broker: Option<&str>,
        outages: bool,
    ) -> Result<Platform, RunError> {
        let (broker, relay) = match (kind, broker) {
            (Kind::Http, _) => (None, None),
            (Kind::Mqtt, Some(b)) => {
                let url = super::remote::broker_url(b)?;
                let relay = if outages {
                    Some(super::remote::relay_to(&url.host, url.port).await?)
                } else {
                    None
                };
                (Some((url.host, url.port)), relay)
            }
            (k, _) => {
                return Err(RunError::TargetUnsupported(format!(
                    "a target server over the {} transport (http, or mqtt with --broker)",
                    crate::scenario::transport_name(k)
                )))
            }
        };
        Ok(Platform {
            kind,
            sut: Sut::External {
                forwarder: Forwarder::to_target(target.clone()),
                target,
                broker,
                relay,
            },
        })
    }

    /// Must the changes made during the run reach a server (the run's
    /// `Book` then keeps their log for [`Platform::forward`])? A served
    /// engine also decides on its own clock.
    pub fn served(&self) -> bool {
        !matches!(self.sut, Sut::Local)
    }

    /// Sends what the run's engine applied (a `Book`'s log) to the server,
    /// in order, made by `actor`: one receiver per command, true once the
    /// server applied it with the same outcome, false when it refused, or
    /// at once when the queue is full. Locally nothing needs to go.
    pub fn forward(
        &self,
        actor: Actor,
        log: Vec<(Command, Outcome)>,
    ) -> Vec<oneshot::Receiver<bool>> {
        let forwarder = match &self.sut {
            Sut::Local => return Vec::new(),
            Sut::Embedded { forwarder, .. } | Sut::External { forwarder, .. } => forwarder,
        };
        log.into_iter()
            .map(|(cmd, expect)| {
                forwarder.send_as(actor, cmd, expect).unwrap_or_else(|| {
                    let (tx, rx) = oneshot::channel();
                    let _ = tx.send(false);
                    rx
                })
            })
            .collect()
    }

    /// Reads the engine of record, where the codes' sync states are: the
    /// embedded server's, or the run's own. `None` for an external server:
    /// the run cannot see its engine, only confirm its readers' codes
    /// ([`Platform::nudge_sync`]).
    pub fn read_engine<R>(
        &self,
        local: &RwLock<Engine>,
        f: impl FnOnce(&Engine) -> R,
    ) -> Option<R> {
        match &self.sut {
            Sut::Local => Some(f(&local.read())),
            Sut::Embedded { remote, .. } => Some(f(&remote.service.engine())),
            Sut::External { .. } => None,
        }
    }

    /// Where the codes `watch` (the run's ids) stand on their devices, by
    /// the engine of record: the embedded server's or the run's own, or an
    /// external MQTT target's as its admin API shows them (its devices
    /// confirm for themselves). Per code, `None` when the engine of record
    /// does not have it. `None` for an external HTTP target: the run
    /// confirms its readers' codes itself ([`Platform::nudge_sync`]).
    pub async fn code_sync(
        &self,
        local: &RwLock<Engine>,
        watch: &[CredentialId],
    ) -> Result<Option<Vec<Option<CodeSync>>>, RunError> {
        match (&self.sut, self.kind) {
            (Sut::External { target, .. }, Kind::Mqtt) => target.code_sync(watch).await.map(Some),
            (Sut::External { .. }, _) => Ok(None),
            _ => Ok(self.read_engine(local, |e| {
                watch
                    .iter()
                    .map(|id| e.credential(*id).map(CodeSync::of))
                    .collect()
            })),
        }
    }

    /// Moves the codes waiting for `devices` toward them. `due`: the
    /// pushing kinds act only then (a push or a fetch every so often);
    /// in process the run pushes, an embedded server's HTTP readers fetch,
    /// an MQTT gateway (an external target's too) pushes by itself. An
    /// external target's HTTP readers are confirmed by the run on every
    /// call: `Some(true)` once the server has nothing pending for them.
    pub async fn nudge_sync(
        &self,
        fleet: &Fleet,
        devices: &[DeviceId],
        due: bool,
    ) -> Result<Option<bool>, RunError> {
        match (&self.sut, self.kind) {
            (Sut::External { .. }, Kind::Mqtt) => Ok(None),
            (Sut::External { target, .. }, _) => target.confirm_codes(devices).await.map(Some),
            (Sut::Local, _) if due => {
                fleet.push_sync_to(devices);
                Ok(None)
            }
            (Sut::Embedded { .. }, Kind::Http) if due => {
                for d in devices {
                    let _ = fleet.control(*d, Control::SyncNow);
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Do the run's Wi-Fi devices get their codes pushed by the run itself
    /// (in process), rather than asking for them?
    pub fn pushes_in_process(&self) -> bool {
        matches!(self.sut, Sut::Local)
    }

    /// Can the platform send a device a command (a remote open)? HTTP has
    /// no command channel to a device (docs/protocol.md).
    pub fn commands_devices(&self) -> bool {
        self.kind != Kind::Http
    }

    /// A remote open of `lock` by `actor`: through the server
    /// (`Service::open_door`, or an external one's `POST
    /// /v1/devices/{device}/open`: the gateway's command and the lock's
    /// `cmd/ack`), or in process the engine's `authorize_open` and the
    /// command in the lock's mailbox.
    pub async fn open_door(
        &self,
        local: &RwLock<Engine>,
        fleet: &Fleet,
        clock: &SimClock,
        actor: &Actor,
        lock: DeviceId,
    ) -> Result<CommandResult, String> {
        match &self.sut {
            Sut::Embedded { remote, .. } => {
                return remote
                    .service
                    .open_door(actor, lock)
                    .await
                    .map_err(|e| e.to_string())
            }
            // As the owner whose token the run holds (`actor`).
            Sut::External { target, .. } => {
                return target.open_door(lock).await.map_err(|e| e.to_string())
            }
            Sut::Local => {}
        }
        local
            .read()
            .authorize_open(actor, lock, clock.now())
            .map_err(|e| e.to_string())?;
        let Some(DeviceAddr::Lock(a)) = fleet.device(lock).map(|d| &d.addr) else {
            return Err(format!("{lock} is not a lock"));
        };
        if !fleet.snapshot(lock).await.is_ok_and(|s| s.online) {
            return Ok(CommandResult::Offline);
        }
        let cmd = DeviceCommand {
            id: 0,
            command: CommandKind::Open,
            simulate: None,
        };
        a.send(crate::transport::Inbound::Command(cmd))
            .await
            .map(|()| CommandResult::Ok)
            .map_err(|e| e.to_string())
    }

    /// How the devices reach the system under test: the run's engine in
    /// process (`added_latency` slows it, as the fault asks), the embedded
    /// server's transport, or the target (at `target_url` over HTTP, its
    /// gateway's broker over MQTT) by the server's ids and secrets.
    pub fn transport(
        &self,
        engine: &Arc<RwLock<Engine>>,
        clock: SimClock,
        timings: &Arc<Timings>,
        added_latency: Duration,
        seed: u64,
        target_url: &str,
    ) -> Result<Transport, RunError> {
        Ok(match &self.sut {
            Sut::External {
                target,
                broker: Some((host, port)),
                relay,
                ..
            } => {
                let (host, port) = match relay {
                    Some(r) => (r.addr().ip().to_string(), r.addr().port()),
                    None => (host.clone(), *port),
                };
                let cfg = MqttConfig {
                    host,
                    port,
                    request_timeout_ms: TARGET_TIMEOUT_MS,
                    ..MqttConfig::default()
                };
                let ids: Arc<dyn ServerIds> = target.clone();
                // Each device signs in with the secret the server issued.
                let none: crate::transport::DeviceSecrets = Arc::new(|_| String::new());
                Transport::Mqtt(
                    MqttTransport::new(cfg, Multiplex::PerDevice, none, seed).with_server_ids(ids),
                )
            }
            Sut::External { target, .. } => {
                let cfg = HttpConfig {
                    base_url: target_url.to_string(),
                    request_timeout_ms: TARGET_TIMEOUT_MS,
                    ..HttpConfig::default()
                };
                let ids: Arc<dyn ServerIds> = target.clone();
                let http = HttpTransport::new(cfg, Arc::new(|_| String::new()))
                    .map_err(|e| RunError::Runtime(e.to_string()))?;
                Transport::Http(http.with_server_ids(ids).with_timings(timings.clone()))
            }
            Sut::Embedded { remote, .. } => {
                // The fault slows the engine itself: here the server's.
                remote.service.set_added_latency(added_latency);
                match remote.transport(seed)? {
                    Transport::Http(t) => Transport::Http(t.with_timings(timings.clone())),
                    t => t,
                }
            }
            Sut::Local => Transport::InProc(
                InProcTransport::timed(engine.clone(), clock, Some(timings.clone()))
                    .with_added_latency(added_latency),
            ),
        })
    }

    /// The relay between the server's broker (embedded, or an external
    /// target's over MQTT) and the devices, where broker outages are
    /// played.
    pub fn relay(&self) -> Option<Arc<Relay>> {
        match &self.sut {
            Sut::Embedded { remote, .. } => remote.relay(),
            Sut::External { relay, .. } => relay.clone(),
            Sut::Local => None,
        }
    }

    /// Provisioning commands an external target's API could not take, by
    /// what they were.
    pub fn skipped(&self) -> BTreeMap<String, u64> {
        match &self.sut {
            Sut::External { target, .. } => target.skipped(),
            _ => BTreeMap::new(),
        }
    }

    /// Waits until every device of `fleet` holds its codes (or `SYNC_WAIT_S`
    /// passed): the engine of record has nothing pending for them, or an
    /// external target's readers are all confirmed (HTTP) or its sync
    /// states say every code arrived (MQTT). Meanwhile the codes are moved
    /// along: in process the run pushes and brings a phone to Bluetooth
    /// locks; an embedded server's HTTP readers are asked to fetch, and now
    /// and then a server's Bluetooth locks (over MQTT) visited.
    pub async fn wait_stored(
        &self,
        fleet: &Fleet,
        engine: &RwLock<Engine>,
    ) -> Result<(), RunError> {
        let ids: Vec<DeviceId> = fleet.devices().iter().map(|d| d.id).collect();
        let visit = |pending: &[DeviceId], all: bool| {
            for id in pending {
                let ble = fleet
                    .device(*id)
                    .is_some_and(|d| d.connectivity == reference_server::domain::Connectivity::Ble);
                if all || ble {
                    let _ = fleet.control(*id, Control::SyncNow);
                }
            }
        };
        let http_readers = matches!(self.sut, Sut::Embedded { .. }) && self.kind == Kind::Http;
        if http_readers {
            visit(&ids, true);
        }
        // A target is asked one request per device a round: less often.
        let poll = Duration::from_millis(match self.sut {
            Sut::External { .. } => 200,
            _ => 100,
        });
        let deadline = Instant::now() + Duration::from_secs(SYNC_WAIT_S);
        let mut round = 0u32;
        // An external MQTT target's devices still waiting (asked again
        // until settled: nothing else changes their codes before the load).
        let mut waiting = ids.clone();
        loop {
            let pending = match self.read_engine(engine, |e| pending_on(e, &ids)) {
                None => match (&self.sut, self.kind) {
                    // The devices confirm for themselves; its Bluetooth
                    // locks are visited now and then, as an embedded one's.
                    (Sut::External { target, .. }, Kind::Mqtt) => {
                        waiting = target.unsettled(&waiting).await?;
                        if round % 10 == 5 {
                            visit(&waiting, false);
                        }
                        waiting.len()
                    }
                    _ if self.nudge_sync(fleet, &ids, true).await? == Some(true) => 0,
                    _ => ids.len(),
                },
                Some(pending) => {
                    if self.pushes_in_process() {
                        if !pending.is_empty() {
                            fleet.push_sync();
                            visit(&pending, false);
                        }
                    } else if round % 10 == 5 {
                        visit(&pending, http_readers);
                    }
                    pending.len()
                }
            };
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RunError::SyncTimeout {
                    waited_s: SYNC_WAIT_S,
                    pending,
                });
            }
            round = round.wrapping_add(1);
            tokio::time::sleep(poll).await;
        }
    }

    /// Where the devices' events were logged (the devices use
    /// `transport`), and whether that log fills in after their last
    /// publishes (a gateway logs on its own time): the in-process
    /// transport's log, or an embedded MQTT gateway's. None over HTTP,
    /// which has no event route, and for an external target, whose
    /// gateway logs out of the run's sight (the devices keep their
    /// events).
    pub fn event_log(&self, transport: &Transport) -> Option<(Arc<EventLog>, bool)> {
        match (&self.sut, transport) {
            (Sut::Local, Transport::InProc(t)) => Some((t.log().clone(), false)),
            (Sut::Embedded { events, .. }, Transport::Mqtt(_)) => Some((events.clone(), true)),
            _ => None,
        }
    }

    /// The end of the run: an embedded server stops (its store commits).
    pub async fn stop(self) {
        if let Sut::Embedded { remote, .. } = self.sut {
            remote.stop().await;
        }
    }
}
