//! The reference server behind the `http` and `mqtt` transports, started
//! inside the fleetsim process so a run needs nothing else installed.
//!
//! - The server is the real one: `reference_server::Service` over SQLite in
//!   a temporary data directory, its HTTP API (`server::run`) for `http`,
//!   its MQTT gateway with the embedded broker (or an external
//!   broker given with `--broker`) for `mqtt`.
//! - Provisioning happens on a local copy of the engine (where the oracle's
//!   truth table is written, as for `inproc`) and every command the local
//!   engine logged is replayed through `Service::apply` as the system
//!   actor, durably. The replay starts from an empty store with the same
//!   token key, so ids, PINs and the signed QR/BLE tokens are the same on
//!   both sides. Devices are created with `Service::create_device`, which
//!   issues each device its secret: the MQTT password and HTTP bearer the
//!   simulated device signs in with.
//! - Commands made during the run (a resident issuing a visitor key) go
//!   through the [`Forwarder`]: one task applying them in the order the
//!   local engine did, so the ids keep matching.
//! - Over HTTP the code-storing devices fetch their pending codes
//!   (`GET /v1/devices/{device}/sync`) and acknowledge them (`POST`); the
//!   run asks them to (`SyncNow`) and waits until nothing is pending. An
//!   external target (`target.rs`) also has them confirmed through its HTTP
//!   sync routes by the run itself. Over MQTT the
//!   gateway syncs the devices for real and the run waits until every code
//!   is stored.
//! - Over MQTT the gateway's observer hook ([`Deliveries`]) tells the run
//!   which events the server logged (counted per kind, timed from the
//!   device's own timestamp) and how long each sync round trip took.
//! - With broker outages in the scenario the devices reach the broker
//!   through a [`Relay`] the run cuts for each window; the gateway keeps
//!   its own connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reference_server::domain::{Actor, DeviceId};
use reference_server::engine::{Command, Outcome};
use reference_server::gateway::{
    self, BrokerChoice, BrokerUrl, GatewayObserver, MqttRunning, ENGINE_USER,
};
use reference_server::protocol::Event;
use reference_server::server::{self, Server};
use reference_server::service::{Clock, Service, TOKEN_KEY_FILE};
use reference_server::Engine;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::RunError;
use crate::clock::SimClock;
use crate::metrics::{Operation, Outcome as OpOutcome, Timings};
use crate::scenario::Transport as TransportKind;
use crate::transport::relay::Relay;
use crate::transport::{
    DeviceSecrets, EventLog, HttpConfig, HttpTransport, MqttConfig, MqttTransport, Multiplex,
    Transport,
};

/// Commands from the run waiting to be forwarded to the server.
const FORWARD_QUEUE: usize = 1_024;
/// How long a check waits for the server over HTTP or MQTT.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How long the run waits for the embedded server to stop.
const STOP_WAIT_S: u64 = 15;

/// The server of one run.
pub struct Remote {
    pub service: Arc<Service>,
    http: Option<Server>,
    mqtt: Option<MqttRunning>,
    /// Between the devices and the broker, when the scenario cuts it.
    relay: Option<Arc<Relay>>,
    secrets: Arc<FxHashMap<DeviceId, String>>,
    _dir: tempfile::TempDir,
}

/// The run's ear on the gateway (its observer): events the server logged
/// and sync round trips. Returns at once, as the gateway requires: a short
/// per-device lock in the log and one in the timings.
pub struct Deliveries {
    /// What the server logged, per device and kind.
    pub log: Arc<EventLog>,
    pub timings: Arc<Timings>,
    /// The devices' clock, to turn an event's timestamp into an instant.
    pub clock: SimClock,
}

impl GatewayObserver for Deliveries {
    fn event_logged(&self, device: DeviceId, event: &Event) {
        let now = Instant::now();
        self.log.record(device, event);
        let sent = self.clock.instant_of(event.at);
        self.timings.record(
            Operation::EventDelivery,
            OpOutcome::Granted,
            now.saturating_duration_since(sent),
            now,
        );
    }

    fn sync_acked(&self, _device: DeviceId, round_trip: Duration, failed: bool) {
        let outcome = if failed {
            OpOutcome::Error
        } else {
            OpOutcome::Granted
        };
        self.timings.record(
            Operation::SyncRoundTrip,
            outcome,
            round_trip,
            Instant::now(),
        );
    }
}

fn cannot_reach(what: &'static str, addr: impl Into<String>, reason: impl ToString) -> RunError {
    RunError::Unreachable {
        what,
        addr: addr.into(),
        reason: reason.to_string(),
    }
}

/// Writes the token key the local engine signs with, so the server signs
/// the same QR and BLE tokens.
fn write_token_key(dir: &Path, key: [u8; 32]) -> Result<(), RunError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(dir.join(TOKEN_KEY_FILE))?;
    f.write_all(&key)?;
    Ok(())
}

/// A [`Relay`] on loopback in front of the broker at `host:port`, where
/// the scenario's broker outages are played.
pub async fn relay_to(host: &str, port: u16) -> Result<Arc<Relay>, RunError> {
    let upstream = tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            cannot_reach(
                "the MQTT broker",
                format!("{host}:{port}"),
                "cannot resolve it",
            )
        })?;
    let r = Relay::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream)
        .await
        .map_err(|e| cannot_reach("the outage relay", "127.0.0.1:0", e))?;
    Ok(Arc::new(r))
}

/// Parses `--broker` (`mqtt://[user[:password]@]host:port`); the gateway
/// signs in as `engine` when the URL names no user.
pub fn broker_url(text: &str) -> Result<BrokerUrl, RunError> {
    let mut url: BrokerUrl = text
        .parse()
        // Not the parser's message: it quotes the URL, password included.
        .map_err(|_| {
            cannot_reach(
                "the MQTT broker",
                "--broker",
                "expected mqtt://[user[:password]@]host:port",
            )
        })?;
    if url.username.is_none() {
        url.username = Some(ENGINE_USER.into());
    }
    Ok(url)
}

impl Remote {
    /// Starts the server for `kind` (http or mqtt) with `token_key`, and
    /// replays `commands` (the local engine's provisioning) into it. MQTT:
    /// `observer` hears from the gateway, and `relay` puts a [`Relay`]
    /// between the devices and the broker.
    pub async fn start(
        kind: TransportKind,
        broker: Option<&str>,
        token_key: [u8; 32],
        commands: Vec<(Command, Outcome)>,
        observer: Option<Arc<dyn GatewayObserver>>,
        relay: bool,
    ) -> Result<Remote, RunError> {
        let dir = tempfile::Builder::new()
            .prefix("fleetsim-server-")
            .tempdir()?;
        write_token_key(dir.path(), token_key)?;
        let (service, http) = match kind {
            TransportKind::Http => {
                let cfg = server::Config {
                    data_dir: dir.path().to_path_buf(),
                    http: SocketAddr::from(([127, 0, 0, 1], 0)),
                    clock: Clock::system(),
                    http_workers: 2,
                    webhook_ca_file: None,
                };
                let s = server::run(cfg, futures::future::pending())
                    .await
                    .map_err(|e| cannot_reach("the embedded server", "127.0.0.1:0", e))?;
                (s.service.clone(), Some(s))
            }
            _ => {
                let path = dir.path().to_path_buf();
                let svc =
                    tokio::task::spawn_blocking(move || Service::open(&path, Clock::system()))
                        .await
                        .map_err(|e| RunError::Runtime(e.to_string()))?
                        .map_err(|e| cannot_reach("the server's store", "temp dir", e))?;
                (Arc::new(svc), None)
            }
        };
        let secrets = replay(&service, commands).await?;
        let mqtt = if kind == TransportKind::Mqtt {
            let choice = match broker {
                Some(b) => BrokerChoice::External(broker_url(b)?),
                None => BrokerChoice::Embedded {
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                },
            };
            // Where, without the password a `--broker` URL may carry.
            let at = match &choice {
                BrokerChoice::External(u) => format!("{}:{}", u.host, u.port),
                BrokerChoice::Embedded { .. } => "the embedded broker".into(),
            };
            let running = gateway::serve(service.clone(), choice, |cfg| cfg.observer = observer)
                .await
                .map_err(|e| cannot_reach("the MQTT gateway", at.clone(), e))?;
            // `serve` returns after a while even when it could not connect.
            if tokio::time::timeout(Duration::from_secs(2), running.gateway.ready())
                .await
                .is_err()
            {
                running.gateway.shutdown().await;
                return Err(cannot_reach(
                    "the MQTT broker",
                    at,
                    "the gateway could not connect and subscribe",
                ));
            }
            Some(running)
        } else {
            None
        };
        let relay = match (&mqtt, relay) {
            (Some(m), true) => {
                let url = broker_url(&m.device_url)?;
                Some(relay_to(&url.host, url.port).await?)
            }
            _ => None,
        };
        Ok(Remote {
            service,
            http,
            mqtt,
            relay,
            secrets: Arc::new(secrets),
            _dir: dir,
        })
    }

    /// The relay that cuts the broker for the scenario's outages.
    pub fn relay(&self) -> Option<Arc<Relay>> {
        self.relay.clone()
    }

    /// Each device's issued secret.
    pub fn secrets(&self) -> DeviceSecrets {
        let map = self.secrets.clone();
        Arc::new(move |d: DeviceId| map.get(&d).cloned().unwrap_or_default())
    }

    /// The devices' transport to this server.
    pub fn transport(&self, seed: u64) -> Result<Transport, RunError> {
        if let Some(s) = &self.http {
            let cfg = HttpConfig {
                base_url: s.url(),
                request_timeout_ms: REQUEST_TIMEOUT_MS,
                ..HttpConfig::default()
            };
            let t = HttpTransport::new(cfg, self.secrets())
                .map_err(|e| cannot_reach("the embedded server", s.url(), e))?;
            return Ok(Transport::Http(t));
        }
        let m = self
            .mqtt
            .as_ref()
            .ok_or_else(|| RunError::Runtime("no server transport".into()))?;
        let url = broker_url(&m.device_url)?;
        let (host, port) = match &self.relay {
            Some(r) => (r.addr().ip().to_string(), r.addr().port()),
            None => (url.host, url.port),
        };
        let cfg = MqttConfig {
            host,
            port,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            ..MqttConfig::default()
        };
        Ok(Transport::Mqtt(MqttTransport::new(
            cfg,
            Multiplex::PerDevice,
            self.secrets(),
            seed,
        )))
    }

    /// Devices of `devices` with codes not yet stored (or not yet removed).
    pub fn pending(&self, devices: &[DeviceId]) -> Vec<DeviceId> {
        pending_on(&self.service.engine(), devices)
    }

    /// A task applying commands made during the run, in order.
    pub fn forwarder(&self) -> Forwarder {
        let (tx, mut rx) = mpsc::channel::<Forward>(FORWARD_QUEUE);
        let service = self.service.clone();
        tokio::spawn(async move {
            let mut diverged = false;
            while let Some(f) = rx.recv().await {
                let ok = !diverged
                    && match service.apply(&f.actor, f.command).await {
                        Ok(a) => a.outcome == f.expect,
                        Err(e) => {
                            tracing::warn!(error = %e, "the server refused a forwarded command");
                            false
                        }
                    };
                // Ids would no longer match: forward nothing more.
                diverged |= !ok;
                let _ = f.done.send(ok);
            }
        });
        Forwarder { tx }
    }

    /// Stops the gateway and the HTTP server; the store commits.
    pub async fn stop(self) {
        let Remote {
            service,
            http,
            mqtt,
            relay,
            _dir: dir,
            ..
        } = self;
        drop(relay);
        let stop = async move {
            if let Some(m) = mqtt {
                m.gateway.shutdown().await;
            }
            match http {
                Some(s) => s.stop().await,
                None => service.close().await,
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(STOP_WAIT_S), stop).await;
        drop(dir);
    }
}

/// Devices of `devices` with codes not yet stored (or not yet removed)
/// in `e`: the server's engine, or the run's own.
pub fn pending_on(e: &Engine, devices: &[DeviceId]) -> Vec<DeviceId> {
    devices
        .iter()
        .copied()
        .filter(|d| {
            e.pending_sync(*d)
                .is_some_and(|b| !b.set.is_empty() || !b.remove.is_empty())
        })
        .collect()
}

/// One command for the server and what the local engine answered.
struct Forward {
    actor: Actor,
    command: Command,
    expect: Outcome,
    done: oneshot::Sender<bool>,
}

/// Sends commands made during the run to the server, in order.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Forward>,
}

impl Forwarder {
    /// A task sending commands made during the run to an external target
    /// through its admin API, in order (ids translated). A refused command
    /// answers false; later ones are still sent (their ids are translated,
    /// not assumed equal).
    pub fn to_target(target: Arc<super::target::Target>) -> Forwarder {
        let (tx, mut rx) = mpsc::channel::<Forward>(FORWARD_QUEUE);
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                let ok = match target.apply(&f.command, &f.expect).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "the target refused a forwarded command");
                        false
                    }
                };
                let _ = f.done.send(ok);
            }
        });
        Forwarder { tx }
    }

    /// Queues `command` made by `actor` (the server authorizes it; the
    /// run's engine answered `expect`); the receiver says whether the
    /// server applied it with the same result. `None`: the queue is full.
    pub fn send_as(
        &self,
        actor: Actor,
        command: Command,
        expect: Outcome,
    ) -> Option<oneshot::Receiver<bool>> {
        let (done, rx) = oneshot::channel();
        self.tx
            .try_send(Forward {
                actor,
                command,
                expect,
                done,
            })
            .ok()
            .map(|_| rx)
    }
}

/// Replays the local engine's commands into `service`; returns the secret
/// the server issued to each device.
async fn replay(
    service: &Service,
    commands: Vec<(Command, Outcome)>,
) -> Result<FxHashMap<DeviceId, String>, RunError> {
    let mut secrets = FxHashMap::default();
    let refused = |e: reference_server::service::ServiceError| {
        RunError::Runtime(format!("the server refused a provisioning command: {e}"))
    };
    for (i, (cmd, expect)) in commands.into_iter().enumerate() {
        let got = if matches!(cmd, Command::CreateDevice { .. }) {
            let (device, secret) = service
                .create_device(&Actor::System, cmd)
                .await
                .map_err(refused)?;
            secrets.insert(device, secret);
            Outcome::Device(device)
        } else {
            service
                .apply(&Actor::System, cmd)
                .await
                .map_err(refused)?
                .outcome
        };
        if got != expect {
            return Err(RunError::Runtime(format!(
                "provisioning command {} made {got:?} on the server, {expect:?} locally",
                i + 1
            )));
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_url_defaults_to_the_engine_user_and_hides_passwords_in_errors() {
        let u = broker_url("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(u.username.as_deref(), Some(ENGINE_USER));
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 1883));
        let u = broker_url("mqtt://gw:pw@broker:1884").unwrap();
        assert_eq!(u.username.as_deref(), Some("gw"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        let e = broker_url("mqtt://gw:s3cret@broker")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
