//! The MQTT device gateway: the server's side of docs/protocol.md.
//!
//! It connects to a broker (the embedded one or any other) as an MQTT
//! client and subscribes to the devices' topics; credential checks and
//! events through shared subscriptions (`$share/engine/...`), so several
//! server instances split them.
//!
//! # Tasks
//!
//! - one per broker connection that only polls the rumqttc `EventLoop`
//!   (style.md: anything else in that loop stalls the connection) and hands
//!   each publish to the dispatcher over a bounded channel;
//! - the dispatcher: parses the topic, checks that the topic names a known
//!   device on its own site, holds each device to its limits
//!   ([`crate::limits::DeviceLimits`]: its message rate when the broker
//!   does not enforce it, its checks and events in progress), bounds the
//!   payload, and starts a task per check or event (at most `max_in_flight`
//!   at once, so a slow store slows intake instead of growing memory). A
//!   bad payload or a message over a device's limits costs its sender a
//!   counter increment and nobody else anything;
//! - the syncer ([`sync`]), which owns all sync state.
//!
//! Answers go out with `try_publish` into a large request channel; when
//! even that is full the answer is dropped and counted (`overloaded`), the
//! device times out and asks again.
//!
//! With `GatewayConfig::home_assistant`, the first connection also carries
//! the Home Assistant bridge ([`home_assistant`]): the dispatcher hands it
//! each logged event, each recorded status and each message under the
//! discovery prefix (a command).
//!
//! An optional [`GatewayObserver`] (`GatewayConfig::observer`) hears of each
//! event logged and each sync batch acknowledged, for a harness that times
//! delivery end to end; absent, it costs one `Option` check.

mod backend;
mod commands;
mod home_assistant;
mod metrics;
mod serve;
mod sync;

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

pub use backend::{Backend, BackendError};
pub use commands::Commander;
pub use home_assistant::{ha_state, HomeAssistantConfig, LockInfo, DISCOVERY_PREFIX};
pub use metrics::{DropReason, GatewayMetrics};
pub use serve::{
    serve, serve_with_limits, BrokerChoice, MqttRunning, ServeError, DROP_REPORT_INTERVAL,
    ENGINE_USER, HOME_ASSISTANT_USER,
};
pub use sync::SyncConfig;

use crate::domain::{DeviceId, SiteId};
use crate::limits::{DeviceLimits, TokenBucket};
use crate::protocol::{
    self, decode, AuthResponse, Channel, CommandAck, Event as DeviceEvent, ProtocolError, Status,
    SyncAckMsg, MAX_PAYLOAD_BYTES,
};
use sync::{SyncInput, Syncer};

/// Told what the gateway completed, for a caller that measures delivery
/// (a load-testing harness). Called on the gateway's tasks, inline: an
/// implementation must return at once (atomics, a short mutex, a bounded
/// channel with `try_send`), never wait.
pub trait GatewayObserver: Send + Sync {
    /// `event` from `device` was durably logged (first time for its seq;
    /// redeliveries are not reported).
    fn event_logged(&self, _device: DeviceId, _event: &DeviceEvent) {}

    /// A sync batch for `device` ended: acknowledged in full, or given up
    /// after its last retry (`failed`, also when the device reported a code
    /// it could not store). `round_trip` runs from the batch's first publish
    /// to the ack (or the give-up).
    fn sync_acked(&self, _device: DeviceId, _round_trip: Duration, _failed: bool) {}
}

impl std::fmt::Debug for dyn GatewayObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayObserver")
    }
}

/// Status changes and sync acks waiting for the syncer.
const SYNC_QUEUE: usize = 65_536;

/// Where the broker is: `mqtt://[user[:password]@]host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "redacted"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("broker url {0:?}: expected mqtt://[user[:password]@]host:port")]
    Shape(String),
    #[error("broker url {0:?}: the port must be a number from 1 to 65535")]
    Port(String),
}

impl std::str::FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || BrokerUrlError::Shape(s.to_string());
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .ok_or_else(shape)?;
        let (login, addr) = match rest.rsplit_once('@') {
            Some((login, addr)) => (Some(login), addr),
            None => (None, rest),
        };
        let (username, password) = match login {
            None => (None, None),
            Some(l) => match l.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(l.to_string()), None),
            },
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(shape)?;
        if host.is_empty() || addr.contains('/') {
            return Err(shape());
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| BrokerUrlError::Port(s.to_string()))?;
        Ok(BrokerUrl {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            username,
            password,
        })
    }
}

/// The gateway's settings; `GatewayConfig::new` documents the defaults.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub broker: BrokerUrl,
    /// Topic prefix (`fleet`).
    pub prefix: String,
    /// Client id stem; connection `i` is `{client_id}-{i}`.
    pub client_id: String,
    /// Shared-subscription group for checks (`engine`; events use
    /// `{group}-events`); `None` subscribes plainly (for brokers without
    /// `$share`, and then only one gateway may run).
    pub shared_group: Option<String>,
    /// Broker connections for checks and events (1). More connections
    /// spread a broker's per-connection work; with `shared_group` the
    /// broker splits the load among them.
    pub connections: usize,
    /// Checks and events being processed at once (4096).
    pub max_in_flight: usize,
    /// rumqttc request channel per connection: answers waiting to be sent
    /// (65536; the default 10 drops answers under load).
    pub request_capacity: usize,
    /// Outgoing QoS 1 messages not yet acked by the broker (1000).
    pub inflight: u16,
    /// QoS of the checks' subscription (1). A broker delivers a request at
    /// the lower of this and the device's QoS, and the answer goes out at
    /// the QoS delivered. `serve` lowers it to 0 on the embedded broker:
    /// it is in the same process, so a delivery is lost only with the
    /// gateway's connection (the device asks again), and no PUBACK per
    /// check has to be written.
    pub check_qos: QoS,
    pub sync: SyncConfig,
    /// How long a remote command waits for its ack (10 s).
    pub command_timeout: Duration,
    /// Per-device limits (`DeviceLimits::default()`): the in-flight bound
    /// always, the payload size always, the rate when `enforce_rate`.
    pub limits: DeviceLimits,
    /// Hold each device to `limits.rate_per_s` here (true). `serve` turns
    /// it off on the embedded broker, which enforces the rate at the
    /// socket, where a flood costs less.
    pub enforce_rate: bool,
    /// Told of logged events and acknowledged syncs (none).
    pub observer: Option<Arc<dyn GatewayObserver>>,
    /// The Home Assistant bridge ([`home_assistant`]; off).
    pub home_assistant: Option<HomeAssistantConfig>,
}

impl GatewayConfig {
    pub fn new(broker: BrokerUrl) -> GatewayConfig {
        GatewayConfig {
            broker,
            prefix: protocol::DEFAULT_PREFIX.into(),
            client_id: "engine".into(),
            shared_group: Some("engine".into()),
            connections: 1,
            max_in_flight: 4096,
            request_capacity: 65_536,
            inflight: 1000,
            check_qos: QoS::AtLeastOnce,
            sync: SyncConfig::default(),
            command_timeout: Duration::from_secs(10),
            limits: DeviceLimits::default(),
            enforce_rate: true,
            observer: None,
            home_assistant: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("gateway config: {0}")]
    Config(&'static str),
}

/// Sends to the broker without waiting: the caller is a handler that must
/// not block on a slow broker.
pub(crate) struct Outbox {
    clients: Vec<AsyncClient>,
    metrics: GatewayMetrics,
}

impl Outbox {
    pub(crate) fn publish(&self, conn: usize, topic: &str, qos: u8, payload: Vec<u8>) {
        let qos = if qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let client = &self.clients[conn % self.clients.len()];
        if let Err(e) = client.try_publish(topic, qos, false, payload) {
            self.metrics.drop(DropReason::Overloaded);
            tracing::debug!(error = %e, "answer dropped");
        }
    }
}

/// What every gateway task shares (read-only).
pub(crate) struct Shared<B> {
    pub(crate) backend: Arc<B>,
    pub(crate) prefix: String,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) outbox: Outbox,
    pub(crate) observer: Option<Arc<dyn GatewayObserver>>,
    pub(crate) home_assistant: Option<Arc<home_assistant::Bridge>>,
}

/// A running gateway.
pub struct GatewayHandle {
    metrics: GatewayMetrics,
    commander: Arc<Commander>,
    ready: watch::Receiver<usize>,
    connections: usize,
    clients: Vec<AsyncClient>,
    tasks: Vec<JoinHandle<()>>,
    /// The checks and events in progress hold these.
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    home_assistant: Option<Arc<home_assistant::Bridge>>,
}

impl GatewayHandle {
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// Sends remote commands to devices (the server's `CommandSink`).
    pub fn commander(&self) -> Arc<Commander> {
        self.commander.clone()
    }

    /// The server's `CommandSink`: Open Door, Lock and sandbox actions
    /// through this gateway.
    pub fn command_sink(&self) -> crate::service::CommandSink {
        let commander = self.commander.clone();
        Arc::new(move |device, order| {
            let commander = commander.clone();
            Box::pin(async move {
                match order {
                    crate::service::Order::Command(command) => {
                        commander.send(device, command).await
                    }
                    crate::service::Order::Simulate(action) => {
                        commander.simulate(device, action).await
                    }
                }
            })
        })
    }

    /// Waits until every connection is up and subscribed.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let n = self.connections;
        // The sender lives as long as the connection tasks.
        let _ = ready.wait_for(|subscribed| *subscribed >= n).await;
    }

    /// Disconnects and stops every task; see [`GatewayHandle::stop`].
    pub async fn shutdown(&self) {
        self.stop(Duration::from_secs(10)).await;
    }

    /// Disconnects, stops taking messages, then waits (at most `drain`)
    /// until every check and event already taken is finished, so their
    /// activity entries are queued before the store closes. Answers how
    /// many were still running when `drain` ran out (0: all finished).
    pub async fn stop(&self, drain: Duration) -> usize {
        if self.permits.is_closed() {
            // Stopped and drained before.
            return 0;
        }
        if let Some(ha) = &self.home_assistant {
            ha.going_offline();
        }
        for c in &self.clients {
            let _ = c.try_disconnect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for t in &self.tasks {
            t.abort();
        }
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        match tokio::time::timeout(drain, self.permits.acquire_many(all)).await {
            Ok(Ok(permits)) => {
                // Nothing may start after the stop.
                permits.forget();
                self.permits.close();
                0
            }
            _ => self
                .max_in_flight
                .saturating_sub(self.permits.available_permits()),
        }
    }
}

struct Inbound {
    conn: usize,
    publish: rumqttc::Publish,
}

/// Connects to the broker and starts serving devices. Must be called
/// inside a tokio runtime.
pub fn start<B: Backend>(
    backend: Arc<B>,
    cfg: GatewayConfig,
    metrics: GatewayMetrics,
) -> Result<GatewayHandle, GatewayError> {
    if cfg.connections == 0 || cfg.max_in_flight == 0 || cfg.request_capacity == 0 {
        return Err(GatewayError::Config(
            "connections, max_in_flight and request_capacity must be at least 1",
        ));
    }
    if cfg.limits.validate().is_err() {
        return Err(GatewayError::Config(
            "device limits: rate, burst, in-flight and payload size must be at least 1",
        ));
    }
    if let Some(ha) = &cfg.home_assistant {
        let p = &ha.discovery_prefix;
        if p.is_empty() || p.contains(['+', '#', '/', '$']) || *p == cfg.prefix {
            return Err(GatewayError::Config(
                "the Home Assistant discovery prefix must be one topic level (no + # / $), other than the device prefix",
            ));
        }
    }
    let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(cfg.max_in_flight);
    let (ready_tx, ready_rx) = watch::channel(0usize);
    let ready_tx = Arc::new(ready_tx);
    let bridge = cfg.home_assistant.as_ref().map(|ha| {
        let (all, one, slots) = (backend.clone(), backend.clone(), backend.clone());
        home_assistant::Bridge::new(
            ha,
            &cfg.prefix,
            Arc::new(move || all.locks()),
            Arc::new(move |d| one.lock_info(d)),
            Arc::new(move |d| slots.pin_slots(d)),
        )
    });
    let mut clients = Vec::with_capacity(cfg.connections);
    let mut tasks = Vec::new();
    for conn in 0..cfg.connections {
        let mut opts = MqttOptions::new(
            format!("{}-{conn}", cfg.client_id),
            cfg.broker.host.clone(),
            cfg.broker.port,
        );
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_request_channel_capacity(cfg.request_capacity)
            .set_inflight(cfg.inflight)
            .set_max_packet_size(
                crate::broker::BROKER_MAX_PAYLOAD_BYTES + 1024,
                crate::broker::BROKER_MAX_PAYLOAD_BYTES + 1024,
            );
        if let Some(user) = &cfg.broker.username {
            opts.set_credentials(
                user.clone(),
                cfg.broker.password.clone().unwrap_or_default(),
            );
        }
        let mut filters = subscriptions(&cfg, conn);
        // The Home Assistant bridge speaks through the first connection.
        let ha = bridge.clone().filter(|_| conn == 0);
        if let Some(b) = &ha {
            opts.set_last_will(b.last_will());
            filters.push(b.subscription());
        }
        let (client, eventloop) = crate::mqtt_client::client(opts, cfg.request_capacity);
        if let Some(b) = &ha {
            b.attach(client.clone());
        }
        tasks.push(tokio::spawn(poll_connection(
            conn,
            eventloop,
            OnConnect {
                client: client.clone(),
                filters,
                home_assistant: ha,
            },
            in_tx.clone(),
            ready_tx.clone(),
            metrics.clone(),
        )));
        clients.push(client);
    }
    drop(in_tx);
    let shared = Arc::new(Shared {
        backend: backend.clone(),
        prefix: cfg.prefix.clone(),
        metrics: metrics.clone(),
        outbox: Outbox {
            clients: clients.clone(),
            metrics: metrics.clone(),
        },
        observer: cfg.observer.clone(),
        home_assistant: bridge.clone(),
    });
    let commander = Arc::new(Commander::new(
        shared.clone() as Arc<dyn commands::CommandOut>,
        cfg.command_timeout,
    ));
    // Roomy: a fleet reconnecting at once sends one status per device, and
    // a full queue would hold up the dispatcher (and so every check) until
    // the syncer's durable writes catch up.
    let (sync_tx, sync_rx) = mpsc::channel(SYNC_QUEUE);
    let syncer = Syncer::new(shared.clone(), cfg.sync);
    tasks.push(tokio::spawn(syncer.run(sync_rx, backend.sync_changes())));
    if let Some(ha) = &bridge {
        tasks.push(tokio::spawn(home_assistant_users(
            ha.clone(),
            backend.clone(),
        )));
    }
    tasks.push(tokio::spawn(dispatch(
        shared,
        in_rx,
        sync_tx,
        commander.clone(),
        permits.clone(),
        Limiter::new(cfg.limits, cfg.enforce_rate),
    )));
    Ok(GatewayHandle {
        metrics,
        commander,
        ready: ready_rx,
        connections: cfg.connections,
        clients,
        tasks,
        permits,
        max_in_flight: cfg.max_in_flight,
        home_assistant: bridge,
    })
}

/// Connection 0 takes every channel; the others only the shared ones
/// (a plain subscription on two connections would deliver twice).
fn subscriptions(cfg: &GatewayConfig, conn: usize) -> Vec<SubscribeFilter> {
    // One group per filter: some brokers (rumqttd 0.19) key a shared group
    // by its name alone, with one read cursor, so two filters in one group
    // lose messages there.
    let share = |suffix: &str| {
        cfg.shared_group
            .as_ref()
            .map(|g| format!("$share/{g}{suffix}/"))
            .unwrap_or_default()
    };
    let p = &cfg.prefix;
    let mut filters = vec![
        SubscribeFilter::new(format!("{}{p}/+/+/auth/req", share("")), cfg.check_qos),
        SubscribeFilter::new(
            format!("{}{p}/+/+/events", share("-events")),
            QoS::AtLeastOnce,
        ),
    ];
    if conn == 0 {
        for chan in [
            Channel::Status,
            Channel::SyncAck,
            Channel::SyncReq,
            Channel::CmdAck,
        ] {
            filters.push(SubscribeFilter::new(
                format!("{p}/+/+/{}", chan.suffix()),
                QoS::AtLeastOnce,
            ));
        }
    }
    filters
}

/// What a connection does on each connect (clean session: everything
/// again).
struct OnConnect {
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    /// The first connection also announces the Home Assistant bridge.
    home_assistant: Option<Arc<home_assistant::Bridge>>,
}

/// Polls one connection and does nothing else.
async fn poll_connection(
    conn: usize,
    mut eventloop: EventLoop,
    on_connect: OnConnect,
    inbound: mpsc::Sender<Inbound>,
    ready: Arc<watch::Sender<usize>>,
    metrics: GatewayMetrics,
) {
    let OnConnect {
        client,
        filters,
        home_assistant,
    } = on_connect;
    let mut up = false;
    let mut subscribed = false;
    let mut failures = 0u32;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if inbound.send(Inbound { conn, publish }).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                if !up {
                    up = true;
                    metrics.broker_connections.inc();
                }
                // Clean session: subscribe on every connect.
                if let Err(e) = client.try_subscribe_many(filters.clone()) {
                    tracing::error!(conn, error = %e, "cannot subscribe");
                }
                if let Some(ha) = &home_assistant {
                    ha.announce();
                }
                tracing::info!(conn, "gateway connected to the broker");
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if refused {
                    tracing::error!(conn, "the broker refused a gateway subscription (ACL?)");
                }
                if !subscribed {
                    subscribed = true;
                    ready.send_modify(|n| *n += 1);
                }
            }
            // The gateway's own DISCONNECT (a stop): the broker closing
            // the connection next is the expected end, not a failure.
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                if up {
                    metrics.broker_connections.dec();
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if up {
                    up = false;
                    metrics.broker_connections.dec();
                }
                failures += 1;
                // Log the first failure of a streak, then now and then.
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::warn!(conn, error = %e, failures, "broker connection failed; retrying");
                }
                let wait_ms = (50u64 << failures.min(5)).min(1000);
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            }
        }
    }
}

/// Only the correlation id of an auth request, to answer a malformed one.
#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

/// Each device's rate, its checks in progress and its events waiting to
/// be logged, kept by the dispatcher (one task: no lock for the buckets).
struct Limiter {
    limits: DeviceLimits,
    enforce_rate: bool,
    buckets: FxHashMap<DeviceId, TokenBucket>,
    in_flight: FxHashMap<DeviceId, Arc<AtomicU32>>,
    lanes: FxHashMap<DeviceId, Arc<EventLane>>,
}

/// One device's events, logged one after the other by one task. A device
/// back from an offline spell sends what it buffered in one go; those
/// events wait here (in order, as the device's `seq` runs) instead of each
/// taking a worker, so a flush costs one worker and loses nothing up to the
/// lane's capacity.
#[derive(Default)]
struct EventLane {
    /// The events waiting, and whether a task is logging them.
    state: parking_lot::Mutex<(VecDeque<Bytes>, bool)>,
}

enum LanePush {
    /// Queued behind the task already logging the lane.
    Queued,
    /// Queued; the caller starts the task that logs the lane.
    Start,
    /// The lane is full: the event is dropped (`busy`).
    Full,
}

impl EventLane {
    fn push(&self, payload: Bytes, capacity: usize) -> LanePush {
        let mut st = self.state.lock();
        if st.0.len() >= capacity {
            return LanePush::Full;
        }
        st.0.push_back(payload);
        if st.1 {
            LanePush::Queued
        } else {
            st.1 = true;
            LanePush::Start
        }
    }

    /// The next event to log; `None` (and the lane idle) when it is empty.
    /// Both under one lock, so an event pushed meanwhile is never stranded.
    fn next(&self) -> Option<Bytes> {
        let mut st = self.state.lock();
        let next = st.0.pop_front();
        if next.is_none() {
            st.1 = false;
        }
        next
    }
}

/// One of a device's checks or events in progress; dropping it ends it.
struct DeviceSlot(Arc<AtomicU32>);

impl Drop for DeviceSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    fn new(limits: DeviceLimits, enforce_rate: bool) -> Limiter {
        Limiter {
            limits,
            enforce_rate,
            buckets: FxHashMap::default(),
            in_flight: FxHashMap::default(),
            lanes: FxHashMap::default(),
        }
    }

    /// The device's event lane.
    fn lane(&mut self, device: DeviceId) -> Arc<EventLane> {
        self.lanes.entry(device).or_default().clone()
    }

    /// Events one device may have waiting: a whole burst at its rate.
    fn lane_capacity(&self) -> usize {
        self.limits.burst.max(self.limits.in_flight) as usize
    }

    /// Within the device's rate (always true when the broker enforces it)?
    fn admit(&mut self, device: DeviceId) -> bool {
        if !self.enforce_rate {
            return true;
        }
        // The one clock read of the gateway's hot path; the bucket itself
        // takes `now` as an argument.
        let now = std::time::Instant::now();
        let l = &self.limits;
        self.buckets
            .entry(device)
            .or_insert_with(|| TokenBucket::new(l.rate_per_s, l.burst, now))
            .take(now)
    }

    /// A slot for one more check or event of `device`, if it has fewer
    /// than its limit in progress.
    fn slot(&mut self, device: DeviceId) -> Option<DeviceSlot> {
        let n = self.in_flight.entry(device).or_default();
        if n.fetch_add(1, Ordering::AcqRel) >= self.limits.in_flight {
            n.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(DeviceSlot(n.clone()))
    }
}

async fn dispatch<B: Backend>(
    shared: Arc<Shared<B>>,
    mut inbound: mpsc::Receiver<Inbound>,
    sync: mpsc::Sender<SyncInput>,
    commander: Arc<Commander>,
    permits: Arc<Semaphore>,
    mut limiter: Limiter,
) {
    while let Some(Inbound { conn, publish }) = inbound.recv().await {
        let m = &shared.metrics;
        if let Some(ha) = shared.home_assistant.as_ref() {
            if ha.owns(&publish.topic) {
                home_assistant_message(&shared, ha, &publish.topic, &publish.payload);
                continue;
            }
        }
        let Some((site, device, channel)) = route(&shared, &publish.topic) else {
            continue;
        };
        m.receive(channel);
        if !limiter.admit(device) {
            m.drop_from(device, DropReason::RateLimited);
            continue;
        }
        let payload = publish.payload;
        if payload.len() > limiter.limits.max_payload_bytes.min(MAX_PAYLOAD_BYTES) {
            m.drop_from(device, DropReason::Oversized);
            tracing::debug!(%device, bytes = payload.len(), "oversized payload dropped");
            continue;
        }
        let qos = publish.qos as u8;
        match channel {
            Channel::AuthReq => {
                let Some(slot) = limiter.slot(device) else {
                    m.drop_from(device, DropReason::Busy);
                    continue;
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    answer_check(&shared, conn, site, device, qos, &payload).await;
                    drop((slot, permit));
                });
            }
            Channel::Events => {
                let lane = limiter.lane(device);
                match lane.push(payload, limiter.lane_capacity()) {
                    LanePush::Full => m.drop_from(device, DropReason::Busy),
                    LanePush::Queued => {}
                    LanePush::Start => {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return;
                        };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            while let Some(payload) = lane.next() {
                                log_event(&shared, device, &payload).await;
                            }
                            drop(permit);
                        });
                    }
                }
            }
            Channel::Status => {
                // Zero-length: a retained status being cleared.
                if payload.is_empty() {
                    continue;
                }
                let Some(status) = decoded::<Status>(m, device, &payload) else {
                    continue;
                };
                let input = if status.online {
                    SyncInput::Online(site, device)
                } else {
                    SyncInput::Offline(device)
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    match shared.backend.set_status(device, &status).await {
                        Ok(()) => {
                            if let Some(ha) = &shared.home_assistant {
                                ha.status(device, status.online);
                            }
                        }
                        Err(e) => {
                            shared.metrics.drop(DropReason::Rejected);
                            tracing::warn!(%device, error = %e, "status not recorded");
                        }
                    }
                    drop(permit);
                });
                if sync.send(input).await.is_err() {
                    return;
                }
            }
            Channel::SyncAck => {
                let Some(ack) = decoded::<SyncAckMsg>(m, device, &payload) else {
                    continue;
                };
                if sync.send(SyncInput::Ack(device, ack)).await.is_err() {
                    return;
                }
            }
            Channel::SyncReq => {
                let Some(req) = decoded::<protocol::SyncRequest>(m, device, &payload) else {
                    continue;
                };
                if sync
                    .send(SyncInput::Request(site, device, req))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Channel::CmdAck => {
                if let Some(ack) = decoded::<CommandAck>(m, device, &payload) {
                    commander.resolve(device, ack);
                }
            }
            // `route` lets only device-sent channels through.
            Channel::AuthResp | Channel::Sync | Channel::Cmd => {}
        }
    }
}

/// The (site, device, channel) of a device's message, or `None` after
/// counting why it is dropped.
fn route<B: Backend>(shared: &Shared<B>, topic: &str) -> Option<(SiteId, DeviceId, Channel)> {
    let m = &shared.metrics;
    let Ok((site, device, channel)) = protocol::parse_topic(&shared.prefix, topic) else {
        m.drop(DropReason::BadTopic);
        tracing::debug!(topic = %topic.chars().take(200).collect::<String>(), "not a device topic");
        return None;
    };
    if !channel.from_device() {
        m.drop(DropReason::ForeignTopic);
        return None;
    }
    match shared.backend.device_site(device) {
        None => {
            m.drop(DropReason::UnknownDevice);
            tracing::debug!(%device, "message from an unknown device");
            None
        }
        Some(real) if real != site => {
            m.drop(DropReason::ForeignTopic);
            tracing::warn!(%device, topic_site = %site, device_site = %real, "topic names a device on another site; dropped");
            None
        }
        Some(_) => Some((site, device, channel)),
    }
}

fn decoded<'a, T: Deserialize<'a>>(
    m: &GatewayMetrics,
    device: DeviceId,
    payload: &'a [u8],
) -> Option<T> {
    match decode::<T>(payload) {
        Ok(v) => Some(v),
        Err(e) => {
            m.drop_from(
                device,
                match e {
                    ProtocolError::TooLarge(_) => DropReason::Oversized,
                    _ => DropReason::Malformed,
                },
            );
            tracing::debug!(%device, error = %e, "payload dropped");
            None
        }
    }
}

/// An `auth/req`, or the refusal the HTTP validate route gives the same
/// bytes (its decoder: one rule for both transports), within the MQTT
/// payload limit.
fn auth_request(payload: &[u8]) -> Result<protocol::AuthRequest, protocol::Refusal> {
    match decode::<protocol::AuthRequest>(payload) {
        Ok(req) => Ok(req),
        Err(ProtocolError::TooLarge(_)) => Err(crate::api::too_large(MAX_PAYLOAD_BYTES).into()),
        // The strict decoder names the field and the rule, and takes what
        // the HTTP route takes (a whole float as an integer).
        Err(_) => crate::api::decode_json(payload).map_err(Into::into),
    }
}

async fn answer_check<B: Backend>(
    shared: &Shared<B>,
    conn: usize,
    site: SiteId,
    device: DeviceId,
    qos: u8,
    payload: &[u8],
) {
    let m = &shared.metrics;
    let resp = match auth_request(payload) {
        Ok(req) => shared.backend.check(device, &req).await,
        Err(refusal) => {
            m.drop_from(device, DropReason::Malformed);
            // Answer when the id can be read, so the device learns of its bug
            // instead of timing out.
            match serde_json::from_slice::<IdOnly>(payload) {
                Ok(IdOnly { id }) => AuthResponse::refused(id, refusal),
                Err(_) => {
                    tracing::debug!(%device, rule = %refusal.rule, "malformed auth request dropped");
                    return;
                }
            }
        }
    };
    m.answer(resp.decision);
    let topic = protocol::topic(&shared.prefix, site, device, Channel::AuthResp);
    shared
        .outbox
        .publish(conn, &topic, qos, protocol::encode(&resp));
}

/// Keeps each lock's `users` state current when a slot's code changes by
/// any path (deleted or disabled through the admin API, too): the event
/// log's access-code events name the code.
async fn home_assistant_users<B: Backend>(ha: Arc<home_assistant::Bridge>, backend: Arc<B>) {
    use crate::events::EventType;
    use tokio::sync::broadcast::error::RecvError;
    let mut events = backend.logged_events();
    loop {
        match events.recv().await {
            Ok(ev) => {
                let code_changed = matches!(
                    ev.body.event_type,
                    EventType::AccessCodeCreated
                        | EventType::AccessCodeChanged
                        | EventType::AccessCodeDeleted
                );
                if let (true, Some(code)) = (code_changed, ev.body.access_code_id) {
                    for lock in backend.pin_slot_locks(code) {
                        ha.users(lock, false);
                    }
                }
            }
            Err(RecvError::Lagged(_)) => ha.every_users(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// A message from Home Assistant: its command or `pin_code` change,
/// applied in a task of its own (a permit bounds how many at once).
fn home_assistant_message<B: Backend>(
    shared: &Arc<Shared<B>>,
    ha: &Arc<home_assistant::Bridge>,
    topic: &str,
    payload: &[u8],
) {
    let Some((device, request, permit)) = ha.command(&shared.metrics, topic, payload) else {
        return;
    };
    let (shared, ha) = (shared.clone(), ha.clone());
    tokio::spawn(async move {
        match request {
            home_assistant::Request::Command(command) => {
                match shared.backend.remote_command(device, command).await {
                    Ok(result) => {
                        tracing::info!(%device, ?command, ?result, "home assistant command")
                    }
                    Err(e) => {
                        tracing::warn!(%device, ?command, error = %e, "home assistant command refused")
                    }
                }
            }
            home_assistant::Request::PinCode(pin) => {
                let user = Some(u64::from(pin.slot));
                match shared.backend.pin_slot(device, pin.slot, pin.change).await {
                    Ok(()) => {
                        shared.metrics.ha_pin_applied.inc();
                        tracing::info!(%device, slot = pin.slot, "home assistant pin_code applied");
                        ha.users(device, false);
                        ha.answer(device, user, pin.transaction, None);
                    }
                    Err(error) => ha.refuse_pin(
                        &shared.metrics,
                        Some(device),
                        home_assistant::PinCodeRefused {
                            error,
                            user,
                            transaction: pin.transaction,
                        },
                    ),
                }
            }
        }
        drop(permit);
    });
}

async fn log_event<B: Backend>(shared: &Shared<B>, device: DeviceId, payload: &[u8]) {
    let m = &shared.metrics;
    let Some(ev) = decoded::<DeviceEvent>(m, device, payload) else {
        return;
    };
    match shared.backend.record_event(device, &ev).await {
        Ok(true) => {
            m.events_logged.inc();
            if let Some(o) = &shared.observer {
                o.event_logged(device, &ev);
            }
            if let Some(ha) = &shared.home_assistant {
                ha.event(device, &ev);
            }
        }
        Ok(false) => m.events_duplicate.inc(),
        Err(e) => {
            m.drop(DropReason::Rejected);
            tracing::warn!(%device, seq = ev.seq, error = %e, "event not logged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u: BrokerUrl = "mqtt://127.0.0.1:1883".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.username),
            ("127.0.0.1", 1883, None)
        );
        let u: BrokerUrl = "mqtt://engine:s3cret@localhost:2000".parse().unwrap();
        assert_eq!(u.username.as_deref(), Some("engine"));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert!(!format!("{u:?}").contains("s3cret"));
        for bad in [
            "http://x:1",
            "mqtt://x",
            "mqtt://:1",
            "mqtt://x:0",
            "mqtt://x:99999",
            "mqtt://x:1/a",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad}");
        }
    }
}
