//! One client connection: CONNECT and login, then a loop that reads
//! packets (as fast as the device's rate allows), writes what the router
//! queued for it, and enforces the keep-alive. One task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{valid_topic, Error as CodecError};
use rumqttc::QoS;
use rustc_hash::FxHashSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::router::{self, ConnId, Outgoing};
use super::{BrokerDrop, Identity, Login, Shared, BROKER_MAX_PAYLOAD_BYTES, CONNECT_TIMEOUT};
use crate::limits::TokenBucket;

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes gathered for one write before it goes out.
const WRITE_BATCH: usize = 64 * 1024;

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    /// The client sent DISCONNECT: no Last Will.
    Disconnect,
    /// The connection was lost or broke the protocol: the Last Will goes out.
    Lost(String),
    /// Another connection took the client id: it closes without its Will
    /// (the new session announces itself; a late "offline" would undo it).
    TakenOver,
    /// The broker stops.
    Stopped,
}

impl Close {
    fn describe(&self) -> &str {
        match self {
            Close::Disconnect => "DISCONNECT",
            Close::Lost(why) => why,
            Close::TakenOver => "client id taken over",
            Close::Stopped => "broker stopped",
        }
    }
}

pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, id: ConnId, shared: Arc<Shared>) {
    // Small packets (answers, acks) go out at once, not after the peer's
    // delayed ACK.
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let Some(mut conn) = handshake(rd, wr, id, &shared).await else {
        return;
    };
    shared.cfg.metrics.connections.inc();
    let why = conn.run().await;
    shared.router.write().disconnect(id);
    shared.cfg.metrics.connections.dec();
    tracing::debug!(%peer, client = %conn.client_id, reason = why.describe(), "mqtt connection closed");
    if let (Close::Lost(_), Some(will)) = (&why, conn.will.take()) {
        // Checked against the ACL at CONNECT.
        conn.publish_message(
            &will.topic,
            will.message,
            min_qos(will.qos, QoS::AtLeastOnce),
            will.retain,
        );
    }
    let _ = conn.wr.shutdown().await;
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

/// The protocol level of a CONNECT frame (4 for MQTT 3.1.1), read from the
/// raw bytes: rumqttc's decoder would misread an MQTT 5 CONNECT.
fn protocol_level(frame: &[u8]) -> Option<(&[u8], u8)> {
    // Fixed header: 1 byte, then 1 to 4 bytes of remaining length.
    let len_len = frame[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let var = frame.get(1 + len_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*var.first()?, *var.get(1)?]));
    let name = var.get(2..2 + name_len)?;
    Some((name, *var.get(2 + name_len)?))
}

async fn write_packet(wr: &mut OwnedWriteHalf, f: impl FnOnce(&mut BytesMut)) {
    let mut buf = BytesMut::with_capacity(64);
    f(&mut buf);
    let _ = wr.write_all(&buf).await;
}

async fn refuse(wr: &mut OwnedWriteHalf, shared: &Shared, code: ConnectReturnCode, why: &str) {
    shared.cfg.metrics.refused.with_label_values(&[why]).inc();
    write_packet(wr, |b| {
        let _ = ConnAck::new(code, false).write(b);
    })
    .await;
    let _ = wr.shutdown().await;
}

async fn handshake(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    id: ConnId,
    shared: &Arc<Shared>,
) -> Option<Conn> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut stopping = shared.stopping.clone();
    let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match rumqttc::mqttbytes::check(buf.iter(), BROKER_MAX_PAYLOAD_BYTES) {
                Ok(header) => return Some(header.frame_length()),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(_) => return None,
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    });
    let frame_len = tokio::select! {
        r = first => r.ok().flatten()?,
        () = super::stopped(&mut stopping) => return None,
    };
    if buf[0] >> 4 != 1 {
        // The first packet must be CONNECT.
        shared
            .cfg
            .metrics
            .refused
            .with_label_values(&["protocol"])
            .inc();
        return None;
    }
    match protocol_level(&buf[..frame_len]) {
        Some((b"MQTT", 4)) => {}
        _ => {
            refuse(
                &mut wr,
                shared,
                ConnectReturnCode::RefusedProtocolVersion,
                "protocol",
            )
            .await;
            return None;
        }
    }
    let Ok(Packet::Connect(connect)) = Packet::read(&mut buf, BROKER_MAX_PAYLOAD_BYTES) else {
        refuse(
            &mut wr,
            shared,
            ConnectReturnCode::RefusedProtocolVersion,
            "protocol",
        )
        .await;
        return None;
    };
    let (username, password) = connect
        .login
        .as_ref()
        .map_or(("", ""), |l| (l.username.as_str(), l.password.as_str()));
    let Some(identity) = (shared.cfg.login)(&Login {
        client_id: &connect.client_id,
        username,
        password,
    }) else {
        refuse(
            &mut wr,
            shared,
            ConnectReturnCode::BadUserNamePassword,
            "bad_login",
        )
        .await;
        return None;
    };
    let prefix = &shared.cfg.prefix;
    if let Some(w) = &connect.last_will {
        if !valid_topic(&w.topic) || !identity.may_publish(prefix, &w.topic) {
            refuse(
                &mut wr,
                shared,
                ConnectReturnCode::NotAuthorized,
                "not_authorized",
            )
            .await;
            return None;
        }
    }
    let client_id = if connect.client_id.is_empty() {
        format!("auto-{id}")
    } else {
        connect.client_id.clone()
    };
    let queue = match identity {
        Identity::Engine => shared.cfg.engine_queue,
        // Home Assistant reads every lock's retained config and state.
        Identity::HomeAssistant { .. } => shared.cfg.engine_queue,
        Identity::Device { .. } => shared.cfg.device_queue,
    };
    let (tx, rx) = mpsc::channel(queue);
    let kick = Arc::new(Notify::new());
    let registered = {
        let mut r = shared.router.write();
        let room = r.connections() < shared.cfg.max_connections;
        if room {
            if let Some(old) =
                r.connect(id, &client_id, tx.clone(), kick.clone(), identity.device())
            {
                old.notify_one();
            }
        }
        room
    };
    if !registered {
        refuse(
            &mut wr,
            shared,
            ConnectReturnCode::ServiceUnavailable,
            "server_full",
        )
        .await;
        return None;
    }
    let keep_alive = Duration::from_secs(u64::from(connect.keep_alive));
    let bucket = identity.device().map(|d| shared.bucket(d));
    let mut conn = Conn {
        id,
        shared: shared.clone(),
        identity,
        client_id,
        rd,
        wr,
        tx,
        rx,
        kick,
        will: connect.last_will,
        keep_alive,
        read_buf: buf,
        write_buf: BytesMut::with_capacity(4096),
        bucket,
        throttled_until: None,
        next_pkid: 0,
        inflight: FxHashSet::default(),
        qos2_pending: FxHashSet::default(),
    };
    let _ = ConnAck::new(ConnectReturnCode::Success, false).write(&mut conn.write_buf);
    if conn.flush().await.is_err() {
        shared.router.write().disconnect(id);
        return None;
    }
    Some(conn)
}

struct Conn {
    id: ConnId,
    shared: Arc<Shared>,
    identity: Identity,
    client_id: String,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    /// Its own queue's sender, for the retained messages of a subscription.
    tx: mpsc::Sender<Outgoing>,
    rx: mpsc::Receiver<Outgoing>,
    kick: Arc<Notify>,
    will: Option<LastWill>,
    keep_alive: Duration,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// The device's rate (none for the engine).
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    /// Over its rate: nothing more is read until then.
    throttled_until: Option<Instant>,
    next_pkid: u16,
    /// QoS 1 messages sent and not yet acknowledged.
    inflight: FxHashSet<u16>,
    /// QoS 2 messages received, waiting for their PUBREL.
    qos2_pending: FxHashSet<u16>,
}

impl Conn {
    async fn run(&mut self) -> Close {
        let mut stopping = self.shared.stopping.clone();
        let max_inflight = usize::from(self.shared.cfg.max_inflight);
        // Spec: the server closes a connection silent for 1.5 keep-alives.
        let grace = self.keep_alive + self.keep_alive / 2;
        let mut last_read = Instant::now();
        loop {
            if let Err(why) = self.process_input() {
                return why;
            }
            if !self.write_buf.is_empty() {
                if let Err(e) = self.flush().await {
                    return Close::Lost(format!("write: {e}"));
                }
            }
            let throttled = self.throttled_until;
            let reading = throttled.is_none();
            let keep_alive_at = last_read + grace;
            tokio::select! {
                _ = self.kick.notified() => return Close::TakenOver,
                () = super::stopped(&mut stopping) => return Close::Stopped,
                out = self.rx.recv(), if self.inflight.len() < max_inflight => {
                    // The sender lives in `self.tx`, so the queue never ends.
                    let Some(out) = out else { return Close::Stopped };
                    self.encode(out);
                    while self.inflight.len() < max_inflight && self.write_buf.len() < WRITE_BATCH {
                        match self.rx.try_recv() {
                            Ok(out) => self.encode(out),
                            Err(_) => break,
                        }
                    }
                }
                read = self.rd.read_buf(&mut self.read_buf), if reading => match read {
                    Ok(0) => return Close::Lost("closed by the client".into()),
                    Ok(_) => last_read = Instant::now(),
                    Err(e) => return Close::Lost(format!("read: {e}")),
                },
                _ = tokio::time::sleep_until(throttled.unwrap_or_else(Instant::now)), if !reading => {
                    self.throttled_until = None;
                    // Its packets waited in the socket, not its fault.
                    last_read = Instant::now();
                }
                _ = tokio::time::sleep_until(keep_alive_at), if reading && !self.keep_alive.is_zero() => {
                    return Close::Lost("keep-alive expired".into());
                }
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                self.read_buf.reserve(READ_CHUNK);
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let r = self.wr.write_all(&self.write_buf).await;
        self.write_buf.clear();
        r
    }

    /// Handles every complete packet read so far, unless the device runs
    /// over its rate (then the rest waits in the buffer and the socket).
    fn process_input(&mut self) -> Result<(), Close> {
        while self.throttled_until.is_none() {
            let packet = match Packet::read(&mut self.read_buf, BROKER_MAX_PAYLOAD_BYTES) {
                Ok(p) => p,
                Err(CodecError::InsufficientBytes(_)) => return Ok(()),
                Err(e) => return Err(Close::Lost(format!("protocol: {e}"))),
            };
            let acked = matches!(
                packet,
                Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_)
            );
            // Acknowledgements cost nothing: the broker asked for them.
            if !acked && !self.charge(&packet) {
                continue;
            }
            self.handle(packet)?;
        }
        Ok(())
    }

    /// Takes one message from the device's bucket. Over the rate a QoS 0
    /// publish is dropped (false); anything else goes through on credit.
    /// Either way the connection is not read again until the bucket has a
    /// token.
    fn charge(&mut self, packet: &Packet) -> bool {
        let Some(bucket) = &self.bucket else {
            return true;
        };
        let now = std::time::Instant::now();
        let mut b = bucket.lock();
        if b.take(now) {
            return true;
        }
        let qos0 = matches!(packet, Packet::Publish(p) if p.qos == QoS::AtMostOnce);
        if !qos0 {
            b.take_on_credit(now);
            self.shared.cfg.metrics.throttled.inc();
        }
        let wait = b.until_token(now);
        drop(b);
        self.throttled_until = Some(Instant::now() + wait);
        if qos0 {
            self.shared
                .drop_message(self.identity.device(), BrokerDrop::RateLimited);
        }
        !qos0
    }

    fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p)?,
            Packet::PubAck(a) => {
                self.inflight.remove(&a.pkid);
            }
            Packet::PubRel(r) => {
                self.qos2_pending.remove(&r.pkid);
                let _ = PubComp::new(r.pkid).write(&mut self.write_buf);
            }
            // The broker sends at most QoS 1.
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Subscribe(s) => {
                let prefix = self.shared.cfg.prefix.clone();
                let mut codes = Vec::with_capacity(s.filters.len());
                let mut retained = Vec::new();
                for f in &s.filters {
                    if !router::valid_filter(&f.path)
                        || !self.identity.may_subscribe(&prefix, &f.path)
                    {
                        self.shared.cfg.metrics.subscriptions_refused.inc();
                        tracing::debug!(client = %self.client_id, filter = %f.path, "subscription refused");
                        codes.push(SubscribeReasonCode::Failure);
                        continue;
                    }
                    let mut r = self.shared.router.write();
                    let granted = r.subscribe(self.id, &f.path, f.qos);
                    retained.extend(r.retained_for(&f.path, granted));
                    codes.push(SubscribeReasonCode::Success(granted));
                }
                let _ = SubAck::new(s.pkid, codes).write(&mut self.write_buf);
                for m in retained {
                    // Behind the SUBACK, through the normal queue (pkids).
                    let _ = self.tx.try_send(m);
                }
            }
            Packet::Unsubscribe(u) => {
                {
                    let mut r = self.shared.router.write();
                    for f in &u.topics {
                        r.unsubscribe(self.id, f);
                    }
                }
                let _ = UnsubAck::new(u.pkid).write(&mut self.write_buf);
            }
            Packet::PingReq => self.write_buf.put_slice(&[0xD0, 0x00]),
            Packet::Disconnect => return Err(Close::Disconnect),
            other => {
                return Err(Close::Lost(format!(
                    "a client may not send {:?}",
                    packet_name(&other)
                )))
            }
        }
        Ok(())
    }

    fn on_publish(&mut self, p: Publish) -> Result<(), Close> {
        if p.topic.is_empty() || !valid_topic(&p.topic) {
            return Err(Close::Lost(format!(
                "publish to an invalid topic {:?}",
                p.topic
            )));
        }
        let duplicate_qos2 = p.qos == QoS::ExactlyOnce && !self.qos2_pending.insert(p.pkid);
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let _ = PubAck::new(p.pkid).write(&mut self.write_buf);
            }
            QoS::ExactlyOnce => {
                let _ = PubRec::new(p.pkid).write(&mut self.write_buf);
            }
        }
        if duplicate_qos2 {
            return Ok(());
        }
        let device = self.identity.device();
        if !self.identity.may_publish(&self.shared.cfg.prefix, &p.topic) {
            // MQTT 3.1.1 has no refusal for a publish: acknowledged above,
            // dropped here.
            self.shared.drop_message(device, BrokerDrop::NotAuthorized);
            tracing::debug!(client = %self.client_id, topic = %p.topic.chars().take(200).collect::<String>(), "publish refused");
            return Ok(());
        }
        if device.is_some() && p.payload.len() > self.shared.cfg.limits.max_payload_bytes {
            if let (Some(d), Some(m)) = (device, &self.shared.cfg.drops) {
                m.drop_from(d, crate::gateway::DropReason::Oversized);
            }
            return Ok(());
        }
        self.publish_message(
            &p.topic,
            p.payload,
            min_qos(p.qos, QoS::AtLeastOnce),
            p.retain,
        );
        Ok(())
    }

    /// Retains (if asked) and routes a message.
    fn publish_message(&self, topic: &str, payload: Bytes, qos: QoS, retain: bool) {
        let shared = &self.shared;
        if retain && !shared.router.write().retain(topic, &payload, qos) {
            tracing::warn!(topic, "retained message not kept: the store is full");
        }
        let undelivered = shared.router.read().route(topic, &payload, qos);
        for u in undelivered {
            shared.drop_message(u.to, BrokerDrop::QueueFull);
        }
    }

    fn encode(&mut self, out: Outgoing) {
        let pkid = if out.qos == QoS::AtMostOnce {
            0
        } else {
            loop {
                self.next_pkid = self.next_pkid.wrapping_add(1);
                if self.next_pkid != 0 && !self.inflight.contains(&self.next_pkid) {
                    break;
                }
            }
            self.inflight.insert(self.next_pkid);
            self.next_pkid
        };
        write_publish(
            &mut self.write_buf,
            &out.topic,
            out.qos,
            out.retain,
            pkid,
            &out.payload,
        );
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::SubAck(_) => "SUBACK",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingResp => "PINGRESP",
        _ => "this packet",
    }
}

/// A PUBLISH packet, written without building a `Publish` (no topic copy).
fn write_publish(
    buf: &mut BytesMut,
    topic: &str,
    qos: QoS,
    retain: bool,
    pkid: u16,
    payload: &[u8],
) {
    let byte1 = 0x30 | ((qos as u8) << 1) | u8::from(retain);
    let mut len = 2 + topic.len() + payload.len();
    if qos != QoS::AtMostOnce {
        len += 2;
    }
    buf.reserve(len + 5);
    buf.put_u8(byte1);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    if qos != QoS::AtMostOnce {
        buf.put_u16(pkid);
    }
    buf.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_encoding_reads_back() {
        for (qos, pkid, size) in [
            (QoS::AtMostOnce, 0, 10),
            (QoS::AtLeastOnce, 7, 200),
            (QoS::AtLeastOnce, 9, 20_000),
        ] {
            let payload = vec![b'x'; size];
            let mut buf = BytesMut::new();
            write_publish(
                &mut buf,
                "fleet/site-1/dev-1/auth/resp",
                qos,
                true,
                pkid,
                &payload,
            );
            let Packet::Publish(p) = Packet::read(&mut buf, 1 << 20).unwrap() else {
                panic!("a publish")
            };
            assert_eq!(p.topic, "fleet/site-1/dev-1/auth/resp");
            assert_eq!((p.qos, p.pkid, p.retain), (qos, pkid, true));
            assert_eq!(p.payload.len(), size);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn protocol_level_of_a_connect() {
        let mut buf = BytesMut::new();
        rumqttc::mqttbytes::v4::Connect::new("dev-1")
            .write(&mut buf)
            .unwrap();
        assert_eq!(protocol_level(&buf), Some((&b"MQTT"[..], 4)));
        assert_eq!(protocol_level(&[0x10, 0x00]), None);
    }
}
