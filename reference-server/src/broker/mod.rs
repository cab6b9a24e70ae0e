//! The embedded MQTT 3.1.1 broker, so `reference-server` works on a fresh
//! machine with nothing else running, and confines every device to its own
//! topics. The same gateway works unchanged against Mosquitto or any MQTT
//! 3.1.1 broker with shared subscriptions.
//!
//! It is a small broker of its own over rumqttc's MQTT codec
//! (`rumqttc::mqttbytes::v4`), because the broker it replaced (rumqttd
//! 0.19) authenticates at CONNECT but has no per-topic ACL and no per-client
//! limits (README, "Why our own broker"). What it does:
//!
//! - **Login** ([`LoginCheck`]): every connection says who it is; the
//!   answer is an [`Identity`]: the server's gateway ([`Identity::Engine`])
//!   or one device ([`Identity::Device`]). Anything else gets CONNACK 4
//!   (bad username or password).
//! - **ACL** ([`Identity::may_publish`], [`Identity::may_subscribe`]): a
//!   device publishes only on its own device-to-engine channels and
//!   subscribes only to its own engine-to-device channels, by exact topic;
//!   a refused subscription gets the SUBACK failure code 0x80, a refused
//!   publish is dropped and counted (MQTT 3.1.1 cannot refuse one: a QoS 1
//!   publish is still acknowledged), a Last Will on a foreign topic gets
//!   CONNACK 5 (not authorized). Only the gateway may publish on `cmd`,
//!   `auth/resp` and `sync`, and only the gateway may use shared
//!   subscriptions (`$share/{group}/{filter}`) and wildcards.
//! - **Limits** ([`crate::limits::DeviceLimits`]): a device's messages
//!   (all its connections together) go through a token bucket. Over the
//!   rate, a QoS 0 message is dropped and counted (`rate_limited`), a QoS 1
//!   or 2 message waits; either way the connection is then not read again
//!   until the rate allows, so a flood stays in the flooder's own socket
//!   buffer instead of in the server's memory. Packets over
//!   [`BROKER_MAX_PAYLOAD_BYTES`] close the connection. Messages waiting to
//!   be written to a connection are bounded (`device_queue`,
//!   `engine_queue`); beyond, they are dropped and counted (`queue_full`).
//! - **Sessions**: clean only (a `clean_session = false` CONNECT is served
//!   as clean, CONNACK session present 0); a client id already connected is
//!   taken over (the old connection is closed, its Last Will published).
//!   Retained messages are kept in memory (at most `max_retained`).
//! - Every socket sets `TCP_NODELAY`: small answers go out at once instead
//!   of waiting for the peer's delayed ACK.
//!
//! The broker runs on the caller's tokio runtime. [`start`] binds the
//! listener first, so a taken port is an error at once.

mod conn;
mod router;

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rustc_hash::FxHashMap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::domain::{DeviceId, SiteId};
use crate::gateway::GatewayMetrics;
use crate::limits::{DeviceLimits, TokenBucket};
use crate::protocol::{self, Channel};

/// Largest MQTT packet the broker accepts (remaining length). Device
/// payloads are far smaller (`protocol::MAX_PAYLOAD_BYTES`); the gateway
/// enforces that limit itself and counts what is over it, so the broker's
/// limit only stops abuse: a bigger packet closes the connection.
pub const BROKER_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// How long a new connection may take to send its CONNECT.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Who a connection is, decided at CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The server's gateway (or a trusted load generator): every topic,
    /// wildcards and shared subscriptions, no rate limit.
    Engine,
    /// One device, on its site: its own topics only.
    Device { device: DeviceId, site: SiteId },
    /// Home Assistant (the bridge's account, `homeassistant`): reads
    /// everything under its discovery prefix, and publishes only a lock's
    /// command, `{discovery_prefix}/lock/{object id}/set` (as
    /// docs/mosquitto/acl lets it on Mosquitto). Its `pin_code` JSON
    /// commands go there too; the `users` state and the `response`
    /// answers are the server's alone, so no one can forge a slot's state
    /// or an answer.
    HomeAssistant { discovery_prefix: String },
}

impl Identity {
    /// May this identity publish on `topic` (under `prefix`)?
    pub fn may_publish(&self, prefix: &str, topic: &str) -> bool {
        match self {
            Identity::Engine => true,
            Identity::HomeAssistant { discovery_prefix } => topic
                .strip_prefix(discovery_prefix.as_str())
                .and_then(|t| t.strip_prefix("/lock/"))
                .and_then(|t| t.strip_suffix("/set"))
                .is_some_and(|id| !id.is_empty() && !id.contains(['/', '+', '#'])),
            Identity::Device { device, site } => {
                own_channel(prefix, *site, *device, topic).is_some_and(Channel::from_device)
            }
        }
    }

    /// May this identity subscribe to `filter`? A device: only its own
    /// engine-to-device topics, exactly (no wildcard, no `$share`).
    pub fn may_subscribe(&self, prefix: &str, filter: &str) -> bool {
        match self {
            Identity::Engine => true,
            Identity::HomeAssistant { discovery_prefix } => filter
                .strip_prefix(discovery_prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
            Identity::Device { device, site } => {
                own_channel(prefix, *site, *device, filter).is_some_and(|c| !c.from_device())
            }
        }
    }

    fn device(&self) -> Option<DeviceId> {
        match self {
            Identity::Engine | Identity::HomeAssistant { .. } => None,
            Identity::Device { device, .. } => Some(*device),
        }
    }
}

/// The channel of `topic` when it is exactly one of `device`'s own topics.
fn own_channel(prefix: &str, site: SiteId, device: DeviceId, topic: &str) -> Option<Channel> {
    match protocol::parse_topic(prefix, topic) {
        // parse_topic accepts only digits in the ids, so "dev-01" or a
        // wildcard never parses as dev-1: the match is exact.
        Ok((s, d, c)) if s == site && d == device && protocol::topic(prefix, s, d, c) == topic => {
            Some(c)
        }
        _ => None,
    }
}

/// What a client said at CONNECT.
#[derive(Debug)]
pub struct Login<'a> {
    pub client_id: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// Decides who a connection is; `None` refuses it (CONNACK 4).
pub type LoginCheck = Arc<dyn Fn(&Login<'_>) -> Option<Identity> + Send + Sync>;

/// The broker's settings; `EmbeddedBrokerConfig::new` documents the
/// defaults.
#[derive(Clone)]
pub struct EmbeddedBrokerConfig {
    /// Port 0 picks a free port (see [`BrokerHandle::addr`]).
    pub listen: SocketAddr,
    /// Topic prefix of the device protocol (`fleet`).
    pub prefix: String,
    /// Who may connect, as what.
    pub login: LoginCheck,
    /// Connections at once (20,000: above the fleet size, every device
    /// holds one); beyond, CONNACK 3 (server unavailable).
    pub max_connections: usize,
    /// Per-device rate and payload limits.
    pub limits: DeviceLimits,
    /// Messages waiting to be written to one device connection (1,024).
    pub device_queue: usize,
    /// Messages waiting to be written to one engine connection (65,536):
    /// every device's requests go there.
    pub engine_queue: usize,
    /// QoS 1 messages sent to one connection and not yet acknowledged
    /// (1,000); more wait in the queue.
    pub max_inflight: u16,
    /// Retained messages kept (100,000; a device retains its status).
    pub max_retained: usize,
    /// Where drops are counted (`gateway_dropped_total{reason}` and the
    /// per-device ledger); `None` counts them only in the broker's own
    /// metrics.
    pub drops: Option<GatewayMetrics>,
    /// The broker's metrics (unregistered ones by default).
    pub metrics: BrokerMetrics,
}

impl EmbeddedBrokerConfig {
    pub fn new(listen: SocketAddr, login: LoginCheck) -> EmbeddedBrokerConfig {
        EmbeddedBrokerConfig {
            listen,
            prefix: protocol::DEFAULT_PREFIX.into(),
            login,
            max_connections: 20_000,
            limits: DeviceLimits::default(),
            device_queue: 1_024,
            engine_queue: 65_536,
            max_inflight: 1_000,
            max_retained: 100_000,
            drops: None,
            metrics: BrokerMetrics::unregistered(),
        }
    }
}

impl std::fmt::Debug for EmbeddedBrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBrokerConfig")
            .field("listen", &self.listen)
            .field("prefix", &self.prefix)
            .field("max_connections", &self.max_connections)
            .field("limits", &self.limits)
            .field("device_queue", &self.device_queue)
            .field("engine_queue", &self.engine_queue)
            .field("max_inflight", &self.max_inflight)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the MQTT broker cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("broker config: {0}")]
    Config(String),
}

/// The broker's Prometheus metrics (bounded labels: reasons only).
#[derive(Clone)]
pub struct BrokerMetrics {
    pub connections: IntGauge,
    /// CONNECTs refused, by reason (`bad_login`, `not_authorized`,
    /// `server_full`, `protocol`).
    refused: IntCounterVec,
    /// Subscriptions refused by the ACL (SUBACK 0x80).
    pub subscriptions_refused: IntCounter,
    /// Device messages held back because the device was over its rate
    /// (QoS 1 and 2: delayed, not dropped).
    pub throttled: IntCounter,
    /// Messages dropped by the broker, by reason, device or not.
    dropped: IntCounterVec,
}

impl BrokerMetrics {
    /// Metrics registered in `registry` (`broker_*`).
    pub fn new(registry: &Registry) -> Result<BrokerMetrics, prometheus::Error> {
        let m = BrokerMetrics::unregistered();
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.subscriptions_refused.clone()))?;
        registry.register(Box::new(m.throttled.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        Ok(m)
    }

    pub fn unregistered() -> BrokerMetrics {
        BrokerMetrics {
            connections: IntGauge::new(
                "broker_connections",
                "Connections to the embedded broker that completed CONNECT",
            )
            .expect("valid metric"),
            refused: IntCounterVec::new(
                Opts::new(
                    "broker_connects_refused_total",
                    "CONNECTs the embedded broker refused, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            subscriptions_refused: IntCounter::new(
                "broker_subscriptions_refused_total",
                "Subscriptions the embedded broker refused (SUBACK 0x80): not the client's own topics",
            )
            .expect("valid metric"),
            throttled: IntCounter::new(
                "broker_throttled_total",
                "QoS 1/2 device messages held back until the device's rate allowed them",
            )
            .expect("valid metric"),
            dropped: IntCounterVec::new(
                Opts::new(
                    "broker_dropped_total",
                    "Messages the embedded broker dropped, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        }
    }

    pub fn refused(&self, reason: &str) -> u64 {
        self.refused.with_label_values(&[reason]).get()
    }

    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.with_label_values(&[reason]).get()
    }
}

/// Why the broker dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BrokerDrop {
    /// A device's QoS 0 message over its rate.
    RateLimited,
    /// A publish the ACL refused.
    NotAuthorized,
    /// The receiving connection's queue was full.
    QueueFull,
}

impl BrokerDrop {
    fn as_str(self) -> &'static str {
        match self {
            BrokerDrop::RateLimited => "rate_limited",
            BrokerDrop::NotAuthorized => "not_authorized",
            BrokerDrop::QueueFull => "queue_full",
        }
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) cfg: EmbeddedBrokerConfig,
    pub(crate) router: RwLock<router::Router>,
    /// One bucket per device, over all its connections.
    buckets: Mutex<FxHashMap<DeviceId, Arc<Mutex<TokenBucket>>>>,
    /// Fires when the broker stops: every connection closes.
    pub(crate) stopping: watch::Receiver<bool>,
}

impl Shared {
    fn bucket(&self, device: DeviceId) -> Arc<Mutex<TokenBucket>> {
        let l = &self.cfg.limits;
        self.buckets
            .lock()
            .entry(device)
            .or_insert_with(|| {
                Arc::new(Mutex::new(TokenBucket::new(
                    l.rate_per_s,
                    l.burst,
                    std::time::Instant::now(),
                )))
            })
            .clone()
    }

    pub(crate) fn drop_message(&self, device: Option<DeviceId>, why: BrokerDrop) {
        self.cfg
            .metrics
            .dropped
            .with_label_values(&[why.as_str()])
            .inc();
        if let Some(m) = &self.cfg.drops {
            let reason = match why {
                BrokerDrop::RateLimited => crate::gateway::DropReason::RateLimited,
                BrokerDrop::NotAuthorized => crate::gateway::DropReason::NotAuthorized,
                BrokerDrop::QueueFull => crate::gateway::DropReason::QueueFull,
            };
            match device {
                Some(d) => m.drop_from(d, reason),
                None => m.drop(reason),
            }
        }
    }
}

/// A running embedded broker. Dropping the handle does not stop it;
/// [`BrokerHandle::stop`] does.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
}

impl BrokerHandle {
    /// The address the broker listens on (the real port when 0 was asked;
    /// loopback when it listens on every address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://host:port`, as `--broker` takes it.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Stops accepting and closes every connection (no Last Will is
    /// published for them: the broker, not the devices, went away).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `cfg.listen` and serves on the current tokio runtime.
pub async fn start(cfg: EmbeddedBrokerConfig) -> Result<BrokerHandle, BrokerError> {
    cfg.limits
        .validate()
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    if cfg.device_queue == 0 || cfg.engine_queue == 0 || cfg.max_inflight == 0 {
        return Err(BrokerError::Config(
            "device_queue, engine_queue and max_inflight must be at least 1".into(),
        ));
    }
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| BrokerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| BrokerError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let addr = if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        router: RwLock::new(router::Router::new(cfg.max_retained)),
        cfg,
        buckets: Mutex::new(FxHashMap::default()),
        stopping: stop_rx.clone(),
    });
    tokio::spawn(accept_loop(listener, shared, stop_rx));
    tracing::info!(listen = %bound, "embedded MQTT broker ready");
    Ok(BrokerHandle {
        addr,
        stop: Arc::new(stop_tx),
    })
}

/// Resolves once the broker is told to stop; never when every handle was
/// dropped (a dropped handle does not stop the broker).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    tokio::spawn(conn::serve(stream, peer, next_id, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little
                    // instead of spinning.
                    tracing::warn!(error = %e, "embedded broker: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The fleet's login rule: the server's own account (`engine_user` /
/// `engine_password`, any client id), or a device: username `dev-N`,
/// client id `dev-N` or `dev-N-anything` (so a device can open a second
/// session, e.g. mosquitto_sub beside mosquitto_pub, but nobody can take
/// over another device's session id), and `authenticate(dev, password)`
/// answering the device's site.
pub fn fleet_login(
    engine_user: String,
    engine_password: String,
    authenticate: impl Fn(DeviceId, &str) -> Option<SiteId> + Send + Sync + 'static,
) -> LoginCheck {
    Arc::new(move |l: &Login<'_>| {
        if l.username == engine_user {
            return constant_time_eq(l.password.as_bytes(), engine_password.as_bytes())
                .then_some(Identity::Engine);
        }
        let device = protocol::parse_device(l.username).ok()?;
        let own_session = l.client_id == l.username
            || l.client_id
                .strip_prefix(l.username)
                .is_some_and(|rest| rest.starts_with('-'));
        if !own_session {
            return None;
        }
        let site = authenticate(device, l.password)?;
        Some(Identity::Device { device, site })
    })
}

/// The Home Assistant account of the embedded broker: set once the
/// gateway's settings are known (before anyone can log in with it).
#[derive(Clone, Debug)]
pub struct HomeAssistantAccount {
    pub username: String,
    pub password: String,
    pub discovery_prefix: String,
}

/// `login`, plus Home Assistant's account when `account` holds one.
pub fn with_home_assistant(
    login: LoginCheck,
    account: Arc<std::sync::OnceLock<HomeAssistantAccount>>,
) -> LoginCheck {
    Arc::new(move |l: &Login<'_>| {
        if let Some(a) = account.get() {
            if l.username == a.username {
                return constant_time_eq(l.password.as_bytes(), a.password.as_bytes()).then(|| {
                    Identity::HomeAssistant {
                        discovery_prefix: a.discovery_prefix.clone(),
                    }
                });
            }
        }
        login(l)
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_login_rules() {
        let login = fleet_login("engine".into(), "pw".into(), |d, p| {
            (d == DeviceId(1) && p == "s1").then_some(SiteId(4))
        });
        let who = |c: &str, u: &str, p: &str| {
            login(&Login {
                client_id: c,
                username: u,
                password: p,
            })
        };
        assert_eq!(who("engine-0", "engine", "pw"), Some(Identity::Engine));
        assert_eq!(who("engine-0", "engine", "pX"), None);
        let dev1 = Some(Identity::Device {
            device: DeviceId(1),
            site: SiteId(4),
        });
        assert_eq!(who("dev-1", "dev-1", "s1"), dev1);
        assert_eq!(who("dev-1-sub", "dev-1", "s1"), dev1);
        assert_eq!(who("dev-1", "dev-1", "wrong"), None);
        assert_eq!(
            who("dev-2", "dev-1", "s1"),
            None,
            "another device's session id"
        );
        assert_eq!(who("dev-12", "dev-1", "s1"), None);
        assert_eq!(who("x", "nobody", "s1"), None);
    }

    #[test]
    fn a_device_may_use_only_its_own_topics() {
        let me = Identity::Device {
            device: DeviceId(1),
            site: SiteId(4),
        };
        let p = |t: &str| me.may_publish("fleet", t);
        let s = |t: &str| me.may_subscribe("fleet", t);
        for chan in ["status", "events", "auth/req", "sync/ack", "cmd/ack"] {
            assert!(p(&format!("fleet/site-4/dev-1/{chan}")), "{chan}");
            assert!(!s(&format!("fleet/site-4/dev-1/{chan}")), "{chan}");
        }
        for chan in ["auth/resp", "sync", "cmd"] {
            assert!(s(&format!("fleet/site-4/dev-1/{chan}")), "{chan}");
            assert!(
                !p(&format!("fleet/site-4/dev-1/{chan}")),
                "only the engine: {chan}"
            );
        }
        for foreign in [
            "fleet/site-4/dev-2/auth/req",
            "fleet/site-5/dev-1/auth/req",
            "fleet/site-4/dev-01/auth/req",
            "fleet/site-04/dev-1/auth/req",
            "other/site-4/dev-1/auth/req",
            "fleet/site-4/dev-1/auth/req/x",
            "fleet/site-4/dev-1/nothing",
        ] {
            assert!(!p(foreign), "{foreign}");
        }
        for filter in [
            "fleet/#",
            "#",
            "fleet/+/dev-1/auth/resp",
            "fleet/site-4/+/auth/resp",
            "fleet/site-4/dev-1/#",
            "fleet/site-4/dev-2/auth/resp",
            "$share/g/fleet/site-4/dev-1/auth/resp",
        ] {
            assert!(!s(filter), "{filter}");
        }
        // Nothing of the Home Assistant bridge's: not a discovery config,
        // a state, an availability or a command.
        for leaf in [
            "config",
            "state",
            "availability",
            "set",
            "users",
            "response",
        ] {
            for lock in ["fleet_dev-1", "fleet_dev-2"] {
                assert!(!p(&format!("homeassistant/lock/{lock}/{leaf}")), "{leaf}");
            }
        }
        assert!(!p("homeassistant/fleet/bridge/availability"));
        let ha = Identity::HomeAssistant {
            discovery_prefix: "homeassistant".into(),
        };
        assert!(ha.may_publish("fleet", "homeassistant/lock/fleet_dev-1/set"));
        for t in [
            "homeassistant/lock/fleet_dev-1/state",
            "homeassistant/lock/fleet_dev-1/config",
            "homeassistant/lock/fleet_dev-1/users",
            "homeassistant/lock/fleet_dev-1/response",
            "homeassistant/lock//set",
            "homeassistant/lock/+/set",
            "homeassistant/lock/a/b/set",
            "fleet/site-4/dev-1/cmd",
            "homeassistantx/lock/fleet_dev-1/set",
        ] {
            assert!(!ha.may_publish("fleet", t), "{t}");
        }
        assert!(ha.may_subscribe("fleet", "homeassistant/#"));
        assert!(ha.may_subscribe("fleet", "homeassistant/lock/fleet_dev-1/state"));
        assert!(!ha.may_subscribe("fleet", "#"));
        assert!(!ha.may_subscribe("fleet", "fleet/#"));
        assert!(!ha.may_subscribe("fleet", "homeassistantx/#"));
        assert_eq!(ha.device(), None);
        assert!(Identity::Engine.may_publish("fleet", "homeassistant/lock/fleet_dev-1/config"));
        assert!(Identity::Engine.may_publish("fleet", "fleet/site-4/dev-1/cmd"));
        assert!(Identity::Engine.may_subscribe("fleet", "$share/engine/fleet/+/+/auth/req"));
    }
}
