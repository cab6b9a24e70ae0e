//! The MQTT transport (rumqttc): devices speak protocol.rs topics and
//! payloads to a real broker, and an engine (the reference server's gateway
//! or any other backend) answers there.
//!
//! - One connection per device (username `dev-N`, password its secret, Last
//!   Will `status {"online":false}` retained), or many devices multiplexed on
//!   one connection (a gateway's own username), as `Multiplex` says.
//! - Against a server that numbers the fleet its own way (`--target`,
//!   [`MqttTransport::with_server_ids`]) a device signs in and names itself
//!   in its topics by that server's ids, with the secret it issued, and
//!   its PINs and tokens are translated both ways as over HTTP.
//! - Each connection's `EventLoop` is polled by a task that does nothing
//!   else; other tasks only `try_publish`.
//! - On a connection error the task waits (exponential backoff with jitter
//!   drawn from the seeded RNG) and polls again, which reconnects; each
//!   device then publishes its last status again (its retained Last Will
//!   said offline), and reconnects are counted transport-wide.
//! - Events are QoS 1. While disconnected they are kept in a bounded buffer
//!   (oldest dropped and counted when full) and sent on reconnect; the
//!   per-device sequence number lets the engine drop redeliveries.
//! - A connection is *ready* once the broker acknowledged (SUBACK) every
//!   subscription it asked for since its last CONNACK: before that an
//!   answer could be published to a topic nobody listens on yet, so a
//!   check then is refused as `Offline` (nothing sent) rather than left to
//!   time out, and a run starts its load only once every connection is
//!   ready and every device linked ([`MqttTransport::not_ready`]).
//! - Auth requests (QoS 0, answered at QoS 0) carry a correlation id;
//!   answers on `auth/resp` complete the waiting check, which gives up
//!   after `request_timeout_ms`.
//!
//! Needs real time (sockets do not advance a paused tokio clock).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use parking_lot::Mutex;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use reference_server::domain::{DeviceId, SiteId};
use reference_server::protocol::{
    decode, encode, parse_topic, topic, AuthRequest, AuthResponse, Channel, CommandAck,
    DeviceCommand, Event, Status, SyncAckMsg, SyncPush, SyncRequest, DEFAULT_PREFIX,
    MAX_PAYLOAD_BYTES,
};
use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, Packet, QoS};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Checked, DeviceSecrets, Endpoint, Inbound, ServerIds, TransportError};
use crate::clock::stream_rng;

/// Connection settings, with defaults for a local broker.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Topic prefix (protocol default `fleet`).
    pub prefix: String,
    pub keep_alive_s: u64,
    /// How long a check waits for `auth/resp`.
    pub request_timeout_ms: u64,
    /// Events kept per connection while it is down.
    pub max_buffered_events: usize,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// rumqttc's request channel (its default of 10 is small under load).
    pub request_channel_capacity: usize,
    /// Unacknowledged QoS 1 publishes in flight per connection.
    pub inflight: u16,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            prefix: DEFAULT_PREFIX.into(),
            keep_alive_s: 30,
            request_timeout_ms: 2_000,
            max_buffered_events: 1_024,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            request_channel_capacity: 1_024,
            inflight: 200,
        }
    }
}

/// How devices share connections.
#[derive(Clone, Debug)]
pub enum Multiplex {
    /// One connection per device, as real Wi-Fi locks have.
    PerDevice,
    /// `devices_per_connection` devices on each connection, which signs in
    /// as `username`/`password` (a gateway, or a load generator saving
    /// sockets).
    Shared {
        devices_per_connection: u32,
        username: String,
        password: String,
    },
}

#[derive(Clone)]
pub struct MqttTransport {
    inner: Arc<TransportInner>,
    /// An external server's ids and secrets for the devices (`--target`).
    server_ids: Option<Arc<dyn ServerIds>>,
}

/// A device the server numbers its own way: its translation tables and
/// the run's id of the device.
type ServerSide = Option<(Arc<dyn ServerIds>, DeviceId)>;

struct TransportInner {
    config: Arc<MqttConfig>,
    secrets: DeviceSecrets,
    mode: Multiplex,
    seed: u64,
    shared: Mutex<FxHashMap<u32, Arc<Conn>>>,
    /// Every connection started (per device, or shared), for readiness.
    conns: Mutex<Vec<std::sync::Weak<Conn>>>,
    /// Devices linked so far (each device links when its actor starts, on
    /// its arbiter: a fleet is linked once this reaches its size).
    linked: std::sync::atomic::AtomicUsize,
    /// Connections made again after a loss, over every connection.
    reconnects: Arc<AtomicU64>,
}

impl MqttTransport {
    /// `seed` draws the reconnect jitter.
    pub fn new(
        config: MqttConfig,
        mode: Multiplex,
        secrets: DeviceSecrets,
        seed: u64,
    ) -> MqttTransport {
        MqttTransport {
            inner: Arc::new(TransportInner {
                config: Arc::new(config),
                secrets,
                mode,
                seed,
                shared: Mutex::new(FxHashMap::default()),
                conns: Mutex::new(Vec::new()),
                linked: std::sync::atomic::AtomicUsize::new(0),
                reconnects: Arc::new(AtomicU64::new(0)),
            }),
            server_ids: None,
        }
    }

    /// Devices sign in and name themselves in topics by the server's ids,
    /// with the secrets the server issued, present the server's QR and
    /// BLE tokens and PIN texts, and store the run's texts for the codes
    /// the server pushes (an external target).
    pub fn with_server_ids(mut self, ids: Arc<dyn ServerIds>) -> MqttTransport {
        self.server_ids = Some(ids);
        self
    }

    /// Connections made again after a loss, over every connection so far.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Of a fleet of `devices`, those not linked yet plus the connections
    /// not ready yet (not connected, or a subscription not acknowledged):
    /// 0 when every device can be answered.
    pub fn not_ready(&self, devices: usize) -> usize {
        let unlinked = devices.saturating_sub(self.inner.linked.load(Ordering::Acquire));
        let conns = self
            .inner
            .conns
            .lock()
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|c| !c.is_ready())
            .count();
        unlinked + conns
    }

    /// Starts (or joins) the device's connection. Must run inside a tokio
    /// runtime: it spawns the connection's poll task.
    pub fn link(&self, ep: Endpoint, inbox: Recipient<Inbound>) -> MqttLink {
        let cfg = &self.inner.config;
        // A device the server does not know signs in with no secret: the
        // broker refuses it.
        let (device, secret, site) = match &self.server_ids {
            Some(m) => {
                let (id, secret) = m.device(ep.device).unwrap_or((ep.device, String::new()));
                (id, secret, m.site(ep.site).unwrap_or(ep.site))
            }
            None => (ep.device, (self.inner.secrets)(ep.device), ep.site),
        };
        let server: ServerSide = self.server_ids.clone().map(|m| (m, ep.device));
        let topics = Arc::new(Topics::new(&cfg.prefix, site, device));
        let conn = match &self.inner.mode {
            Multiplex::PerDevice => {
                let name = device.to_string();
                let will = LastWill::new(
                    topics.status.clone(),
                    encode(&Status {
                        online: false,
                        battery_pct: None,
                        firmware: None,
                        at: None,
                    }),
                    QoS::AtLeastOnce,
                    true,
                );
                let conn = Conn::start(
                    cfg.clone(),
                    &name,
                    &name,
                    &secret,
                    Some(will),
                    stream_rng(self.inner.seed, u64::from(ep.device.0)),
                    self.inner.reconnects.clone(),
                );
                self.inner.conns.lock().push(Arc::downgrade(&conn));
                conn
            }
            Multiplex::Shared {
                devices_per_connection,
                username,
                password,
            } => {
                let n = ep.device.0 / (*devices_per_connection).max(1);
                let mut shared = self.inner.shared.lock();
                shared
                    .entry(n)
                    .or_insert_with(|| {
                        let conn = Conn::start(
                            cfg.clone(),
                            &format!("{username}-{n}"),
                            username,
                            password,
                            None,
                            stream_rng(self.inner.seed, (1 << 40) | u64::from(n)),
                            self.inner.reconnects.clone(),
                        );
                        self.inner.conns.lock().push(Arc::downgrade(&conn));
                        conn
                    })
                    .clone()
            }
        };
        conn.add_device(device, topics.clone(), inbox, server.clone());
        self.inner.linked.fetch_add(1, Ordering::AcqRel);
        MqttLink {
            conn,
            topics,
            device,
            server,
        }
    }
}

/// A device's topics, formatted once.
struct Topics {
    status: String,
    events: String,
    auth_req: String,
    auth_resp: String,
    sync: String,
    sync_ack: String,
    sync_req: String,
    cmd: String,
    cmd_ack: String,
}

impl Topics {
    fn new(prefix: &str, site: SiteId, device: DeviceId) -> Topics {
        let t = |c| topic(prefix, site, device, c);
        Topics {
            status: t(Channel::Status),
            events: t(Channel::Events),
            auth_req: t(Channel::AuthReq),
            auth_resp: t(Channel::AuthResp),
            sync: t(Channel::Sync),
            sync_ack: t(Channel::SyncAck),
            sync_req: t(Channel::SyncReq),
            cmd: t(Channel::Cmd),
            cmd_ack: t(Channel::CmdAck),
        }
    }

    fn subscriptions(&self) -> [rumqttc::SubscribeFilter; 3] {
        [
            // QoS 0 like the request: see `MqttLink::check`.
            rumqttc::SubscribeFilter::new(self.auth_resp.clone(), QoS::AtMostOnce),
            rumqttc::SubscribeFilter::new(self.sync.clone(), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new(self.cmd.clone(), QoS::AtLeastOnce),
        ]
    }
}

/// Counters of one connection, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub connects: u64,
    pub connection_errors: u64,
    pub buffered_now: usize,
    pub buffer_dropped: u64,
    pub late_answers: u64,
    pub bad_payloads: u64,
    /// Topic filters the broker refused in a SUBACK (an ACL that does not
    /// let this device read its own topics).
    pub refused_subscriptions: u64,
}

/// One device on a connection: its topics, its mailbox, and the last
/// status it published (sent again on reconnect).
struct Route {
    topics: Arc<Topics>,
    inbox: Recipient<Inbound>,
    status: Option<Vec<u8>>,
    server: ServerSide,
}

/// Where a connection's incoming messages go, per device.
type DeviceRoutes = FxHashMap<DeviceId, Route>;

struct Conn {
    client: AsyncClient,
    config: Arc<MqttConfig>,
    connected: AtomicBool,
    /// SUBSCRIBE packets asked for since the last CONNACK, and SUBACKs
    /// received since then: ready when they match.
    subs_asked: AtomicU64,
    subs_acked: AtomicU64,
    next_id: AtomicU64,
    pending: Mutex<FxHashMap<(DeviceId, u64), oneshot::Sender<AuthResponse>>>,
    devices: Mutex<DeviceRoutes>,
    buffer: Mutex<VecDeque<(String, Vec<u8>)>>,
    stats: Mutex<ConnStats>,
    reconnects: Arc<AtomicU64>,
}

impl Conn {
    fn start(
        config: Arc<MqttConfig>,
        client_id: &str,
        username: &str,
        password: &str,
        will: Option<LastWill>,
        rng: ChaCha8Rng,
        reconnects: Arc<AtomicU64>,
    ) -> Arc<Conn> {
        let mut opts = MqttOptions::new(client_id, config.host.clone(), config.port);
        opts.set_keep_alive(Duration::from_secs(config.keep_alive_s.max(5)))
            .set_credentials(username, password)
            .set_clean_session(true)
            .set_inflight(config.inflight.max(1))
            .set_request_channel_capacity(config.request_channel_capacity.max(1))
            .set_max_packet_size(MAX_PAYLOAD_BYTES * 4, MAX_PAYLOAD_BYTES * 4);
        if let Some(w) = will {
            opts.set_last_will(w);
        }
        let (client, eventloop) =
            reference_server::mqtt_client::client(opts, config.request_channel_capacity.max(1));
        let conn = Arc::new(Conn {
            client,
            config,
            connected: AtomicBool::new(false),
            subs_asked: AtomicU64::new(0),
            subs_acked: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            pending: Mutex::new(FxHashMap::default()),
            devices: Mutex::new(FxHashMap::default()),
            buffer: Mutex::new(VecDeque::new()),
            stats: Mutex::new(ConnStats::default()),
            reconnects,
        });
        // The task holds a weak reference: when every link is gone the
        // connection closes.
        tokio::spawn(poll_loop(eventloop, Arc::downgrade(&conn), rng));
        conn
    }

    /// Connected, and every subscription asked for since acknowledged.
    fn is_ready(&self) -> bool {
        self.connected.load(Ordering::Acquire)
            && self.subs_acked.load(Ordering::Acquire) >= self.subs_asked.load(Ordering::Acquire)
    }

    /// `device`: as the topics name it (the server's id).
    fn add_device(
        &self,
        device: DeviceId,
        topics: Arc<Topics>,
        inbox: Recipient<Inbound>,
        server: ServerSide,
    ) {
        // Under the devices lock, which `on_connected` holds while it takes
        // its list and marks the connection up: a device is either in that
        // list or subscribes itself here, never neither.
        let mut devices = self.devices.lock();
        if self.connected.load(Ordering::Acquire) {
            self.subs_asked.fetch_add(1, Ordering::AcqRel);
            let client = self.client.clone();
            let filters = topics.subscriptions();
            tokio::spawn(async move {
                let _ = client.subscribe_many(filters).await;
            });
        }
        devices.insert(
            device,
            Route {
                topics,
                inbox,
                status: None,
                server,
            },
        );
    }

    fn on_suback(&self, ack: &rumqttc::SubAck) {
        let refused = ack
            .return_codes
            .iter()
            .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
            .count() as u64;
        if refused > 0 {
            self.stats.lock().refused_subscriptions += refused;
        }
        self.subs_acked.fetch_add(1, Ordering::AcqRel);
    }

    fn on_connected(self: &Arc<Self>) {
        let again = {
            let mut st = self.stats.lock();
            st.connects += 1;
            st.connects > 1
        };
        // Filters per SUBSCRIBE packet: one packet answers for a few
        // devices at once without growing past the broker's packet limit.
        const FILTERS_PER_SUBSCRIBE: usize = 30;
        let (subs, statuses): (Vec<_>, Vec<_>) = {
            let devices = self.devices.lock();
            let subs: Vec<_> = devices
                .values()
                .flat_map(|r| r.topics.subscriptions())
                .collect();
            // The broker published each device's retained Last Will when the
            // connection dropped: say "online" again, as a device does on
            // every connect (the engine then syncs it).
            let statuses = if again {
                devices
                    .values()
                    .filter_map(|r| Some((r.topics.status.clone(), r.status.clone()?)))
                    .collect()
            } else {
                Vec::new()
            };
            // A new session: what was asked and acknowledged before is gone.
            self.subs_acked.store(0, Ordering::Release);
            self.subs_asked.store(
                subs.len().div_ceil(FILTERS_PER_SUBSCRIBE) as u64,
                Ordering::Release,
            );
            self.connected.store(true, Ordering::Release);
            (subs, statuses)
        };
        if again {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let me = self.clone();
        tokio::spawn(async move {
            for chunk in subs.chunks(FILTERS_PER_SUBSCRIBE) {
                if me.client.subscribe_many(chunk.to_vec()).await.is_err() {
                    return;
                }
            }
            for (t, p) in statuses {
                if me
                    .client
                    .publish(t, QoS::AtLeastOnce, true, p)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Send what was kept while down, in order, waiting for room.
            loop {
                let Some((t, p)) = me.buffer.lock().pop_front() else {
                    break;
                };
                if me
                    .client
                    .publish(t, QoS::AtLeastOnce, false, p)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }

    fn on_publish(&self, topic_name: &str, payload: &[u8]) {
        let Ok((_, device, channel)) = parse_topic(&self.config.prefix, topic_name) else {
            self.stats.lock().bad_payloads += 1;
            return;
        };
        match channel {
            Channel::AuthResp => match decode::<AuthResponse>(payload) {
                Ok(r) => match self.pending.lock().remove(&(device, r.id)) {
                    Some(tx) => {
                        let _ = tx.send(r);
                    }
                    None => self.stats.lock().late_answers += 1,
                },
                Err(_) => self.stats.lock().bad_payloads += 1,
            },
            Channel::Sync => match decode::<SyncPush>(payload) {
                Ok(p) => self.deliver(device, Inbound::Sync(p)),
                Err(_) => self.stats.lock().bad_payloads += 1,
            },
            Channel::Cmd => match decode::<DeviceCommand>(payload) {
                Ok(c) => self.deliver(device, Inbound::Command(c)),
                Err(_) => self.stats.lock().bad_payloads += 1,
            },
            _ => {}
        }
    }

    fn deliver(&self, device: DeviceId, mut msg: Inbound) {
        let route = self
            .devices
            .lock()
            .get(&device)
            .map(|r| (r.inbox.clone(), r.server.clone()));
        if let Some((inbox, server)) = route {
            // The device stores the run's texts for the codes it is given.
            if let (Inbound::Sync(push), Some((ids, local))) = (&mut msg, &server) {
                super::to_local(ids.as_ref(), *local, push);
            }
            // Bounded mailbox: a refused push is redelivered by the engine.
            let _ = inbox.try_send(msg);
        }
    }

    /// QoS 1 publish now, or into the bounded buffer while disconnected.
    fn publish_or_buffer(&self, topic_name: &str, payload: Vec<u8>) {
        if self.connected.load(Ordering::Acquire) {
            match self
                .client
                .try_publish(topic_name, QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => return,
                Err(rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(p))) => {
                    return self.buffer_push(topic_name.to_owned(), p.payload.to_vec());
                }
                Err(_) => return,
            }
        }
        self.buffer_push(topic_name.to_owned(), payload);
    }

    fn buffer_push(&self, topic_name: String, payload: Vec<u8>) {
        let mut b = self.buffer.lock();
        if b.len() >= self.config.max_buffered_events.max(1) {
            b.pop_front();
            self.stats.lock().buffer_dropped += 1;
        }
        b.push_back((topic_name, payload));
    }
}

/// Exponential backoff with "equal jitter": half the delay fixed, half
/// random, so a fleet that lost its broker does not reconnect in lockstep.
pub fn backoff_ms(initial_ms: u64, max_ms: u64, attempt: u32, rng: &mut impl Rng) -> u64 {
    let exp = initial_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(max_ms);
    let half = exp / 2;
    half + rng.random_range(0..=half.max(1))
}

async fn poll_loop(mut eventloop: EventLoop, conn: std::sync::Weak<Conn>, mut rng: ChaCha8Rng) {
    let mut attempt = 0u32;
    loop {
        let polled = eventloop.poll().await;
        let Some(c) = conn.upgrade() else {
            return;
        };
        match polled {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                attempt = 0;
                c.on_connected();
            }
            Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => c.on_publish(&p.topic, &p.payload),
            Ok(rumqttc::Event::Incoming(Packet::SubAck(ack))) => c.on_suback(&ack),
            Ok(_) => {}
            Err(_) => {
                c.connected.store(false, Ordering::Release);
                c.stats.lock().connection_errors += 1;
                let (initial, max) = (c.config.backoff_initial_ms, c.config.backoff_max_ms);
                drop(c);
                let wait = backoff_ms(initial, max, attempt, &mut rng);
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
}

/// One device's side of an MQTT connection.
#[derive(Clone)]
pub struct MqttLink {
    conn: Arc<Conn>,
    topics: Arc<Topics>,
    /// As the topics name it (an external server's id).
    device: DeviceId,
    server: ServerSide,
}

impl MqttLink {
    pub fn is_connected(&self) -> bool {
        self.conn.connected.load(Ordering::Acquire)
    }

    /// Connected and subscribed: an answer to a check would reach it.
    pub fn is_ready(&self) -> bool {
        self.conn.is_ready()
    }

    pub fn stats(&self) -> ConnStats {
        let mut s = *self.conn.stats.lock();
        s.buffered_now = self.conn.buffer.lock().len();
        s
    }

    pub async fn check(&self, mut req: AuthRequest) -> Result<Checked, TransportError> {
        if !self.is_ready() {
            return Err(TransportError::Offline);
        }
        let t0 = Instant::now();
        // The server signed its own token for the credential, and made
        // its own PINs for guests.
        if let Some(translated) = self
            .server
            .as_ref()
            .and_then(|(ids, local)| super::to_server(ids.as_ref(), *local, &req))
        {
            req = translated;
        }
        // Ids unique per connection, so multiplexed devices cannot collide.
        req.id = self.conn.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (self.device, req.id);
        let (tx, rx) = oneshot::channel();
        self.conn.pending.lock().insert(key, tx);
        if self
            .conn
            .client
            // QoS 0: the answer is the acknowledgement, and a lost request
            // times out like a lost answer. At QoS 1 the broker's PUBACK
            // goes out just before the answer, so Nagle holds the answer
            // until the device's delayed TCP ACK (about 40 ms a check).
            .try_publish(&self.topics.auth_req, QoS::AtMostOnce, false, encode(&req))
            .is_err()
        {
            self.conn.pending.lock().remove(&key);
            return Err(TransportError::Busy);
        }
        let timeout_ms = self.conn.config.request_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
            Ok(Ok(response)) => Ok(Checked {
                response,
                latency_us: t0.elapsed().as_micros() as u64,
            }),
            // The request went out: the engine may have decided it, so
            // this is no `Offline` (which says nothing was sent).
            Ok(Err(_)) => Err(TransportError::Mqtt(
                "the connection closed before the answer".into(),
            )),
            Err(_) => {
                self.conn.pending.lock().remove(&key);
                Err(TransportError::Timeout(timeout_ms))
            }
        }
    }

    pub fn event(&self, event: &Event) -> Result<(), TransportError> {
        self.conn
            .publish_or_buffer(&self.topics.events, encode(event));
        Ok(())
    }

    pub fn status(&self, status: &Status) -> Result<(), TransportError> {
        let payload = encode(status);
        if let Some(r) = self.conn.devices.lock().get_mut(&self.device) {
            r.status = Some(payload.clone());
        }
        self.conn
            .client
            .try_publish(&self.topics.status, QoS::AtLeastOnce, true, payload)
            .map_err(|e| TransportError::Mqtt(e.to_string()))
    }

    pub fn sync_ack(&self, ack: &SyncAckMsg) -> Result<(), TransportError> {
        self.conn
            .publish_or_buffer(&self.topics.sync_ack, encode(ack));
        Ok(())
    }

    /// `sync/req` (protocol version 2): kept while the connection is down
    /// and sent after its subscriptions, like every other publish.
    pub fn sync_request(&self, req: &SyncRequest) -> Result<(), TransportError> {
        self.conn
            .publish_or_buffer(&self.topics.sync_req, encode(req));
        Ok(())
    }

    pub fn command_ack(&self, ack: &CommandAck) -> Result<(), TransportError> {
        self.conn
            .publish_or_buffer(&self.topics.cmd_ack, encode(ack));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let first = backoff_ms(100, 10_000, 0, &mut rng);
        assert!((50..=100).contains(&first), "{first}");
        let late = backoff_ms(100, 10_000, 30, &mut rng);
        assert!((5_000..=10_000).contains(&late), "{late}");
        let draws: Vec<u64> = (0..8)
            .map(|_| backoff_ms(100, 10_000, 6, &mut rng))
            .collect();
        assert!(draws.iter().any(|d| *d != draws[0]), "jitter: {draws:?}");
    }
}
