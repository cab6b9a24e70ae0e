//! The broker's shared state: who is connected, who subscribed to what,
//! the retained messages; and routing a publish to its subscribers.
//!
//! Devices may subscribe only to exact topics, so their subscriptions sit
//! in a hash map keyed by topic (one lookup per publish, whatever the fleet
//! size); wildcard and shared subscriptions (the gateway's handful) are
//! scanned. Routing only `try_send`s into each receiver's bounded queue:
//! it never waits for a slow connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::{has_wildcards, matches};
use rumqttc::QoS;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use tokio::sync::{mpsc, Notify};

use crate::domain::DeviceId;

pub(crate) type ConnId = u64;

/// A message on its way to one connection.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    /// Set only for a retained message sent because of a new subscription.
    pub(crate) retain: bool,
}

struct Client {
    client_id: String,
    tx: mpsc::Sender<Outgoing>,
    /// Notified when another connection takes the client id over.
    kick: Arc<Notify>,
    device: Option<DeviceId>,
    /// Its filters, as subscribed (with `$share/...`), for the clean-up.
    filters: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
struct Sub {
    conn: ConnId,
    qos: QoS,
}

/// `$share/{name}/{filter}`: each message goes to one member, in turn.
struct Group {
    name: String,
    filter: String,
    members: Vec<Sub>,
    next: AtomicUsize,
}

pub(crate) struct Router {
    clients: FxHashMap<ConnId, Client>,
    by_client_id: FxHashMap<String, ConnId>,
    exact: FxHashMap<String, SmallVec<[Sub; 2]>>,
    wild: Vec<(String, Sub)>,
    groups: Vec<Group>,
    retained: FxHashMap<String, (Bytes, QoS)>,
    max_retained: usize,
}

/// A message that could not be queued for its receiver.
pub(crate) struct Undelivered {
    /// The receiving device, if the receiver is one.
    pub(crate) to: Option<DeviceId>,
}

fn split_share(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (name, f) = rest.split_once('/')?;
    (!name.is_empty() && !f.is_empty() && !name.contains(['+', '#'])).then_some((name, f))
}

/// Is `filter` well formed (`$share/{name}/{filter}` included)?
pub(crate) fn valid_filter(filter: &str) -> bool {
    let f = if filter.starts_with("$share/") {
        match split_share(filter) {
            Some((_, f)) => f,
            None => return false,
        }
    } else {
        filter
    };
    rumqttc::mqttbytes::valid_filter(f)
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

impl Router {
    pub(crate) fn new(max_retained: usize) -> Router {
        Router {
            clients: FxHashMap::default(),
            by_client_id: FxHashMap::default(),
            exact: FxHashMap::default(),
            wild: Vec::new(),
            groups: Vec::new(),
            retained: FxHashMap::default(),
            max_retained,
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.clients.len()
    }

    /// Registers a connection; returns the kick of the connection that had
    /// the same client id (it must close).
    pub(crate) fn connect(
        &mut self,
        conn: ConnId,
        client_id: &str,
        tx: mpsc::Sender<Outgoing>,
        kick: Arc<Notify>,
        device: Option<DeviceId>,
    ) -> Option<Arc<Notify>> {
        let old = self
            .by_client_id
            .insert(client_id.to_string(), conn)
            .and_then(|old| self.clients.get(&old))
            .map(|c| c.kick.clone());
        self.clients.insert(
            conn,
            Client {
                client_id: client_id.to_string(),
                tx,
                kick,
                device,
                filters: Vec::new(),
            },
        );
        old
    }

    /// Forgets a connection and its subscriptions.
    pub(crate) fn disconnect(&mut self, conn: ConnId) {
        let Some(client) = self.clients.remove(&conn) else {
            return;
        };
        if self.by_client_id.get(&client.client_id) == Some(&conn) {
            self.by_client_id.remove(&client.client_id);
        }
        for f in &client.filters {
            self.remove_sub(conn, f);
        }
    }

    /// Adds (or replaces) `conn`'s subscription; the filter was checked by
    /// the ACL and [`valid_filter`]. Returns the granted QoS.
    pub(crate) fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) -> QoS {
        let qos = min_qos(qos, QoS::AtLeastOnce);
        self.remove_sub(conn, filter);
        let sub = Sub { conn, qos };
        if let Some((name, f)) = split_share(filter) {
            match self
                .groups
                .iter_mut()
                .find(|g| g.name == name && g.filter == f)
            {
                Some(g) => g.members.push(sub),
                None => self.groups.push(Group {
                    name: name.to_string(),
                    filter: f.to_string(),
                    members: vec![sub],
                    next: AtomicUsize::new(0),
                }),
            }
        } else if has_wildcards(filter) {
            self.wild.push((filter.to_string(), sub));
        } else {
            self.exact.entry(filter.to_string()).or_default().push(sub);
        }
        if let Some(c) = self.clients.get_mut(&conn) {
            if !c.filters.iter().any(|x| x == filter) {
                c.filters.push(filter.to_string());
            }
        }
        qos
    }

    pub(crate) fn unsubscribe(&mut self, conn: ConnId, filter: &str) {
        self.remove_sub(conn, filter);
        if let Some(c) = self.clients.get_mut(&conn) {
            c.filters.retain(|x| x != filter);
        }
    }

    fn remove_sub(&mut self, conn: ConnId, filter: &str) {
        if let Some((name, f)) = split_share(filter) {
            if let Some(g) = self
                .groups
                .iter_mut()
                .find(|g| g.name == name && g.filter == f)
            {
                g.members.retain(|s| s.conn != conn);
            }
            self.groups.retain(|g| !g.members.is_empty());
        } else if has_wildcards(filter) {
            self.wild.retain(|(f, s)| !(s.conn == conn && f == filter));
        } else if let Some(subs) = self.exact.get_mut(filter) {
            subs.retain(|s| s.conn != conn);
            if subs.is_empty() {
                self.exact.remove(filter);
            }
        }
    }

    /// Keeps (or, with an empty payload, clears) the retained message of
    /// `topic`. False when the store is full and the message was not kept.
    pub(crate) fn retain(&mut self, topic: &str, payload: &Bytes, qos: QoS) -> bool {
        if payload.is_empty() {
            self.retained.remove(topic);
            return true;
        }
        if self.retained.len() >= self.max_retained && !self.retained.contains_key(topic) {
            return false;
        }
        self.retained
            .insert(topic.to_string(), (payload.clone(), qos));
        true
    }

    /// The retained messages a new subscription to `filter` receives
    /// (none for a shared subscription).
    pub(crate) fn retained_for(&self, filter: &str, qos: QoS) -> Vec<Outgoing> {
        if filter.starts_with("$share/") {
            return Vec::new();
        }
        let mut out = Vec::new();
        if has_wildcards(filter) {
            for (topic, (payload, q)) in &self.retained {
                if matches(topic, filter) {
                    out.push(Outgoing {
                        topic: Arc::from(topic.as_str()),
                        payload: payload.clone(),
                        qos: min_qos(*q, qos),
                        retain: true,
                    });
                }
            }
        } else if let Some((payload, q)) = self.retained.get(filter) {
            out.push(Outgoing {
                topic: Arc::from(filter),
                payload: payload.clone(),
                qos: min_qos(*q, qos),
                retain: true,
            });
        }
        out
    }

    /// Queues the message for every subscriber (one member per shared
    /// group); answers what could not be queued.
    pub(crate) fn route(
        &self,
        topic: &str,
        payload: &Bytes,
        qos: QoS,
    ) -> SmallVec<[Undelivered; 1]> {
        let mut targets: SmallVec<[Sub; 4]> = SmallVec::new();
        let mut add = |s: Sub| match targets.iter_mut().find(|t| t.conn == s.conn) {
            // Overlapping subscriptions of one client: one copy, at the
            // highest QoS granted.
            Some(t) => {
                if (s.qos as u8) > (t.qos as u8) {
                    t.qos = s.qos;
                }
            }
            None => targets.push(s),
        };
        if let Some(subs) = self.exact.get(topic) {
            for s in subs {
                add(*s);
            }
        }
        for (f, s) in &self.wild {
            if matches(topic, f) {
                add(*s);
            }
        }
        let mut undelivered = SmallVec::new();
        let shared_topic: Arc<str> = Arc::from(topic);
        let message = |s: &Sub| Outgoing {
            topic: shared_topic.clone(),
            payload: payload.clone(),
            qos: min_qos(qos, s.qos),
            retain: false,
        };
        for s in &targets {
            if let Some(c) = self.clients.get(&s.conn) {
                if c.tx.try_send(message(s)).is_err() {
                    undelivered.push(Undelivered { to: c.device });
                }
            }
        }
        for g in &self.groups {
            if g.members.is_empty() || !matches(topic, &g.filter) {
                continue;
            }
            // In turn; a member whose queue is full passes to the next.
            let start = g.next.fetch_add(1, Ordering::Relaxed);
            let n = g.members.len();
            let delivered = (0..n).any(|i| {
                let s = &g.members[(start + i) % n];
                self.clients
                    .get(&s.conn)
                    .is_some_and(|c| c.tx.try_send(message(s)).is_ok())
            });
            if !delivered {
                undelivered.push(Undelivered { to: None });
            }
        }
        undelivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(r: &mut Router, conn: ConnId, cap: usize) -> mpsc::Receiver<Outgoing> {
        let (tx, rx) = mpsc::channel(cap);
        assert!(r
            .connect(conn, &format!("c{conn}"), tx, Arc::new(Notify::new()), None)
            .is_none());
        rx
    }

    fn got(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(m.topic.to_string());
        }
        out
    }

    #[test]
    fn exact_wildcard_and_shared_subscriptions() {
        let mut r = Router::new(10);
        let mut a = client(&mut r, 1, 10);
        let mut b = client(&mut r, 2, 10);
        let mut c = client(&mut r, 3, 10);
        r.subscribe(1, "fleet/site-1/dev-1/auth/resp", QoS::AtLeastOnce);
        r.subscribe(2, "fleet/+/+/status", QoS::AtLeastOnce);
        r.subscribe(2, "$share/engine/fleet/+/+/auth/req", QoS::AtMostOnce);
        r.subscribe(3, "$share/engine/fleet/+/+/auth/req", QoS::AtMostOnce);
        let p = Bytes::from_static(b"x");
        r.route("fleet/site-1/dev-1/auth/resp", &p, QoS::AtLeastOnce);
        r.route("fleet/site-1/dev-9/status", &p, QoS::AtLeastOnce);
        for _ in 0..4 {
            r.route("fleet/site-1/dev-1/auth/req", &p, QoS::AtMostOnce);
        }
        assert_eq!(got(&mut a), ["fleet/site-1/dev-1/auth/resp"]);
        let b_got = got(&mut b);
        let c_got = got(&mut c);
        assert_eq!(b_got.iter().filter(|t| t.ends_with("status")).count(), 1);
        // The shared group splits the checks in turn.
        assert_eq!(b_got.iter().filter(|t| t.ends_with("auth/req")).count(), 2);
        assert_eq!(c_got.len(), 2);
        // Gone with its connection.
        r.disconnect(1);
        r.route("fleet/site-1/dev-1/auth/resp", &p, QoS::AtLeastOnce);
        assert!(got(&mut a).is_empty());
        assert!(r.exact.is_empty());
    }

    #[test]
    fn a_full_queue_is_reported_and_retained_messages_are_bounded() {
        let mut r = Router::new(1);
        let (tx, _rx) = mpsc::channel(1);
        r.connect(1, "dev-4", tx, Arc::new(Notify::new()), Some(DeviceId(4)));
        r.subscribe(1, "t", QoS::AtMostOnce);
        let p = Bytes::from_static(b"x");
        assert!(r.route("t", &p, QoS::AtMostOnce).is_empty());
        let lost = r.route("t", &p, QoS::AtMostOnce);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].to, Some(DeviceId(4)));
        assert!(r.retain("a", &p, QoS::AtLeastOnce));
        assert!(!r.retain("b", &p, QoS::AtLeastOnce), "store full");
        assert!(r.retain("a", &Bytes::new(), QoS::AtLeastOnce), "cleared");
        assert!(r.retain("b", &p, QoS::AtLeastOnce));
        assert_eq!(r.retained_for("#", QoS::AtLeastOnce).len(), 1);
        assert!(r.retained_for("$share/g/#", QoS::AtLeastOnce).is_empty());
    }

    #[test]
    fn a_client_id_taken_over_kicks_the_old_connection() {
        let mut r = Router::new(1);
        let (tx, _rx) = mpsc::channel(1);
        let old_kick = Arc::new(Notify::new());
        r.connect(1, "dev-1", tx.clone(), old_kick.clone(), None);
        let kicked = r.connect(2, "dev-1", tx, Arc::new(Notify::new()), None);
        assert!(kicked.is_some_and(|k| Arc::ptr_eq(&k, &old_kick)));
        // The old connection's clean-up leaves the new one registered.
        r.disconnect(1);
        assert_eq!(r.by_client_id.get("dev-1"), Some(&2));
        assert_eq!(r.connections(), 1);
    }

    #[test]
    fn filters_are_checked() {
        for ok in ["a/b", "a/+/c", "#", "$share/g/a/#"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a+/b", "$share/g", "$share//a", "$share/g+/a"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }
}
