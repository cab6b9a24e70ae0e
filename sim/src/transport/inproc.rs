//! The in-process transport: the engine embedded in the simulator, no
//! network. Checks call `Engine::validate` under a read lock; events go to
//! an [`EventLog`]; sync batches are computed from the engine on demand
//! (`pull_sync`, for Bluetooth locks in range) or pushed to the Wi-Fi
//! devices' mailboxes (`push_sync`, what a gateway does on a change).
//!
//! With [`Timings`] (`InProcTransport::timed`), it also times each event
//! from the device's timestamp until logged, and each device's sync from the
//! first batch sent until the device's ack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::Recipient;
use parking_lot::{Mutex, RwLock};
use reference_server::domain::{Actor, Connectivity, DeviceId};
use reference_server::engine::{Check, Command, SyncBatch};
use reference_server::protocol::{AuthRequest, AuthResponse, Event, SyncAckMsg, SyncPush};
use reference_server::Engine;
use rustc_hash::FxHashMap;
use tokio::time::Instant;

use super::log::Logged;
use super::{Checked, Endpoint, EventLog, Inbound, TransportError};
use crate::clock::SimClock;
use crate::metrics::{Operation, Outcome, Timings};

#[derive(Clone)]
pub struct InProcTransport {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<RwLock<Engine>>,
    clock: SimClock,
    log: Arc<EventLog>,
    inboxes: Mutex<FxHashMap<DeviceId, (Connectivity, Recipient<Inbound>)>>,
    /// Pushes a full mailbox refused (the device gets them on the next push).
    pushes_dropped: AtomicU64,
    /// The `engine_added_latency` fault: every check waits this long before
    /// the engine decides. Zero keeps checks synchronous (the hot path).
    added_latency: std::time::Duration,
    timings: Option<Arc<Timings>>,
    /// Each device's batch in flight: the version an ack must name, and
    /// when the first unacknowledged batch went (one entry per device).
    in_flight: Mutex<FxHashMap<DeviceId, InFlight>>,
    /// Acks naming another version than the one in flight (dropped, as
    /// the gateway drops them: an old ack must not mark newer codes set).
    stale_acks: AtomicU64,
}

/// A device's batch in flight.
#[derive(Clone, Copy)]
struct InFlight {
    version: u64,
    first_sent: Instant,
}

impl InProcTransport {
    /// `clock` gives the engine its `now`; make it inside the runtime that
    /// runs the devices.
    pub fn new(engine: Arc<RwLock<Engine>>, clock: SimClock) -> InProcTransport {
        InProcTransport::timed(engine, clock, None)
    }

    /// [`InProcTransport::new`], timing event delivery and sync round
    /// trips into `timings`.
    pub fn timed(
        engine: Arc<RwLock<Engine>>,
        clock: SimClock,
        timings: Option<Arc<Timings>>,
    ) -> InProcTransport {
        InProcTransport {
            inner: Arc::new(Inner {
                engine,
                clock,
                log: Arc::new(EventLog::new()),
                inboxes: Mutex::new(FxHashMap::default()),
                pushes_dropped: AtomicU64::new(0),
                added_latency: std::time::Duration::ZERO,
                timings,
                in_flight: Mutex::new(FxHashMap::default()),
                stale_acks: AtomicU64::new(0),
            }),
        }
    }

    /// The same transport whose engine answers `latency` late (a slow
    /// backend). Set before any device links.
    pub fn with_added_latency(mut self, latency: std::time::Duration) -> InProcTransport {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.added_latency = latency;
        }
        self
    }

    pub fn engine(&self) -> &Arc<RwLock<Engine>> {
        &self.inner.engine
    }

    pub fn clock(&self) -> SimClock {
        self.inner.clock
    }

    /// What the engine logged from the devices.
    pub fn log(&self) -> &Arc<EventLog> {
        &self.inner.log
    }

    /// Devices linked so far (actors on other arbiters link as they start).
    pub fn linked(&self) -> usize {
        self.inner.inboxes.lock().len()
    }

    pub fn pushes_dropped(&self) -> u64 {
        self.inner.pushes_dropped.load(Ordering::Relaxed)
    }

    /// Sync acks dropped for naming another version than the one in flight.
    pub fn stale_acks(&self) -> u64 {
        self.inner.stale_acks.load(Ordering::Relaxed)
    }

    pub fn link(&self, ep: Endpoint, inbox: Recipient<Inbound>) -> InProcLink {
        self.inner
            .inboxes
            .lock()
            .insert(ep.device, (ep.connectivity, inbox));
        InProcLink {
            inner: self.inner.clone(),
            device: ep.device,
        }
    }

    /// Sends every online (Wi-Fi) device its pending sync batch, as a
    /// gateway does after a change. Bluetooth devices are out of reach and
    /// pull when a phone or gateway is near. Returns how many were sent.
    pub fn push_sync(&self) -> usize {
        let targets: Vec<(DeviceId, Recipient<Inbound>)> = self
            .inner
            .inboxes
            .lock()
            .iter()
            .filter(|(_, (c, _))| *c == Connectivity::Wifi)
            .map(|(d, (_, r))| (*d, r.clone()))
            .collect();
        self.push_to(targets)
    }

    /// [`InProcTransport::push_sync`] for `devices` only (one door's
    /// change need not walk the whole fleet).
    pub fn push_sync_to(&self, devices: &[DeviceId]) -> usize {
        let targets: Vec<(DeviceId, Recipient<Inbound>)> = {
            let inboxes = self.inner.inboxes.lock();
            devices
                .iter()
                .filter_map(|d| inboxes.get(d).map(|(c, r)| (*d, *c, r.clone())))
                .filter(|(_, c, _)| *c == Connectivity::Wifi)
                .map(|(d, _, r)| (d, r))
                .collect()
        };
        self.push_to(targets)
    }

    fn push_to(&self, targets: Vec<(DeviceId, Recipient<Inbound>)>) -> usize {
        let mut sent = 0;
        for (device, inbox) in targets {
            let push = match take_batch(&self.inner, device) {
                Ok(Some(p)) => p,
                _ => continue,
            };
            let version = push.version;
            // Backpressure: a full mailbox drops the push; the codes stay
            // "setting" in the engine and go again next time.
            if inbox.try_send(Inbound::Sync(push)).is_ok() {
                sent_batch(&self.inner, device, version);
                sent += 1;
            } else {
                self.inner.pushes_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        sent
    }
}

/// The engine's batch as one message. The wire form comes from
/// [`SyncPush::from_batch`] (the gateway's split into payload-sized
/// messages, which all share the batch's version); in-process there is no
/// payload limit, so the pieces travel together and the device acks the
/// whole batch at once, as over MQTT once every piece has arrived.
pub fn sync_push_of(batch: &SyncBatch) -> SyncPush {
    let mut one = SyncPush {
        version: batch.version,
        set: Vec::new(),
        remove: Vec::new(),
    };
    for piece in SyncPush::from_batch(batch) {
        one.set.extend(piece.set);
        one.remove.extend(piece.remove);
    }
    one
}

/// The device's pending batch, marked sent, under one write lock: read
/// and mark under two locks let a change made in between be marked sent
/// without ever being pushed.
fn take_batch(inner: &Inner, device: DeviceId) -> Result<Option<SyncPush>, TransportError> {
    let batch = {
        let mut engine = inner.engine.write();
        let batch = match engine.pending_sync(device) {
            Some(b) if !b.is_empty() => b,
            Some(_) => return Ok(None),
            None => return Err(TransportError::Engine(format!("unknown device {device}"))),
        };
        engine
            .apply(
                &Actor::System,
                Command::SyncSent {
                    device,
                    version: batch.version,
                },
                inner.clock.now(),
            )
            .map_err(|e| TransportError::Engine(e.to_string()))?;
        batch
    };
    Ok(Some(sync_push_of(&batch)))
}

/// `version` reached `device`: its ack is the one to wait for. A batch
/// resent before the ack keeps the first send's time, as the gateway times
/// its retries.
fn sent_batch(inner: &Inner, device: DeviceId, version: u64) {
    inner
        .in_flight
        .lock()
        .entry(device)
        .and_modify(|f| f.version = version)
        .or_insert(InFlight {
            version,
            first_sent: Instant::now(),
        });
}

#[derive(Clone)]
pub struct InProcLink {
    inner: Arc<Inner>,
    device: DeviceId,
}

impl InProcLink {
    /// How long the engine waits before deciding (the fault); zero: the
    /// check can be answered synchronously.
    pub fn added_latency(&self) -> std::time::Duration {
        self.inner.added_latency
    }

    /// [`check`](Self::check) after the added latency, which counts in the
    /// transport's latency.
    pub async fn check_late(&self, req: &AuthRequest) -> Checked {
        let t0 = Instant::now();
        tokio::time::sleep(self.inner.added_latency).await;
        let mut c = self.check(req);
        c.latency_us = t0.elapsed().as_micros() as u64;
        c
    }

    pub fn check(&self, req: &AuthRequest) -> Checked {
        let t0 = Instant::now();
        let response = match req.credential.to_presented() {
            Ok(presented) => {
                let check = Check {
                    device: self.device,
                    presented,
                    floor: req.floor,
                };
                let d = self
                    .inner
                    .engine
                    .read()
                    .validate(&check, self.inner.clock.now());
                AuthResponse::from_decision(req.id, &d)
            }
            Err(e) => AuthResponse::error(req.id, e.to_string()),
        };
        Checked {
            response,
            latency_us: t0.elapsed().as_micros() as u64,
        }
    }

    pub fn event(&self, event: &Event) {
        let logged = self.inner.log.record(self.device, event);
        if let (Some(t), Logged::Accepted) = (&self.inner.timings, logged) {
            let now = Instant::now();
            let sent = self.inner.clock.instant_of(event.at);
            t.record(
                Operation::EventDelivery,
                Outcome::Granted,
                now.saturating_duration_since(sent),
                now,
            );
        }
    }

    pub fn pull_sync(&self) -> Result<Option<SyncPush>, TransportError> {
        let push = take_batch(&self.inner, self.device)?;
        if let Some(p) = &push {
            sent_batch(&self.inner, self.device, p.version);
        }
        Ok(push)
    }

    /// The device's ack, under the gateway's version rule: it counts if it
    /// names the batch in flight, or, with none in flight, the engine's
    /// current version; any other is stale and dropped.
    pub fn sync_ack(&self, ack: &SyncAckMsg) -> Result<(), TransportError> {
        // Held until the ack is applied: a batch sent meanwhile waits for
        // its own ack. (Order: this lock, then the engine's.)
        let mut in_flight = self.inner.in_flight.lock();
        let current = match in_flight.get(&self.device) {
            Some(f) => f.version == ack.version,
            None => {
                self.inner
                    .engine
                    .read()
                    .pending_sync(self.device)
                    .map(|b| b.version)
                    == Some(ack.version)
            }
        };
        if !current {
            self.inner.stale_acks.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.inner
            .engine
            .write()
            .apply(
                &Actor::System,
                Command::SyncAck {
                    device: self.device,
                    results: ack.results.clone(),
                },
                self.inner.clock.now(),
            )
            .map_err(|e| TransportError::Engine(e.to_string()))?;
        let sent = in_flight.remove(&self.device);
        drop(in_flight);
        if let (Some(t), Some(sent)) = (&self.inner.timings, sent) {
            let now = Instant::now();
            let failed = ack.results.iter().any(|r| r.failure.is_some());
            t.record(
                Operation::SyncRoundTrip,
                if failed {
                    Outcome::Error
                } else {
                    Outcome::Granted
                },
                now - sent.first_sent,
                now,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use reference_server::domain::{CredentialId, Pin, Secret};
    use reference_server::protocol::MAX_SYNC_CODES;

    use super::*;

    /// A batch larger than one MQTT message reaches an in-process device
    /// whole (it used to stop at `MAX_SYNC_CODES` while the whole batch
    /// was marked sent).
    #[test]
    fn a_batch_past_one_message_travels_whole() {
        let n = MAX_SYNC_CODES as u32 * 2 + 3;
        let batch = SyncBatch {
            version: 7,
            set: (0..n)
                .map(|i| {
                    let pin = Pin::parse(&format!("{:06}", 100_000 + i)).unwrap();
                    (CredentialId(i), Secret::Pin(pin))
                })
                .collect(),
            remove: (n..n + MAX_SYNC_CODES as u32 + 1)
                .map(CredentialId)
                .collect(),
            validity: Default::default(),
        };
        assert!(SyncPush::from_batch(&batch).len() > 1, "the wire splits it");
        let one = sync_push_of(&batch);
        assert_eq!(one.version, 7);
        assert_eq!(one.set.len() as u32, n);
        assert_eq!(one.remove.len(), MAX_SYNC_CODES + 1);
        assert_eq!(
            one.credentials().collect::<Vec<_>>(),
            (0..n + MAX_SYNC_CODES as u32 + 1)
                .map(CredentialId)
                .collect::<Vec<_>>()
        );
    }
}
