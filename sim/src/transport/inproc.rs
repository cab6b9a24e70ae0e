//! The in-process transport: the engine embedded in the simulator, no
//! network. Checks call `Engine::validate` under a read lock; events go to
//! an [`EventLog`]; sync batches are computed from the engine on demand
//! (`pull_sync`, for Bluetooth locks in range) or pushed to the Wi-Fi
//! devices' mailboxes (`push_sync`, what a gateway does on a change).
//!
//! Sync follows the server's rules through the same sans-I/O session
//! (`access_core::sync::SyncSession`): a version in flight is not sent
//! twice, and an ack naming another version is stale and dropped. A push
//! to many devices reads and marks their batches under one engine write
//! lock. In process nothing is lost, so nothing is resent on a timer.
//!
//! With [`Timings`] (`InProcTransport::timed`), it also times each event
//! from the device's timestamp until logged, and each device's sync from the
//! first batch sent until the device's ack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use access_core::domain::{Actor, Connectivity, DeviceId};
use access_core::engine::{Check, Command};
use access_core::protocol::{AuthRequest, AuthResponse, Event, SyncAckMsg, SyncPush};
use access_core::sync::{SyncAcked, SyncPacing, SyncSession};
use access_core::Engine;
use actix::Recipient;
use parking_lot::{Mutex, RwLock};
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
    /// Each device's batch in flight, under the gateway's rules. Lock
    /// order: this, then the engine.
    session: Mutex<SyncSession>,
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
                session: Mutex::new(SyncSession::new(SyncPacing::default())),
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
        self.inner.session.lock().stale_acks()
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
        let devices: Vec<DeviceId> = targets.iter().map(|(d, _)| *d).collect();
        let pushes = take_batches(&self.inner, &devices, false);
        let mut sent = 0;
        for ((device, inbox), push) in targets.into_iter().zip(pushes) {
            let Some(push) = push else { continue };
            let version = push.version;
            // Backpressure: a full mailbox drops the push; the codes stay
            // "setting" in the engine and go again next time.
            if inbox.try_send(Inbound::Sync(push)).is_ok() {
                sent += 1;
            } else {
                self.inner.session.lock().unsent(device, version);
                self.inner.pushes_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        sent
    }
}

/// What the session says each of `devices` must get, marked sent in the
/// engine, all under one engine write lock (read and mark under two locks
/// let a change made in between be marked sent without ever being pushed;
/// one lock per device would stall every check during a sync storm).
/// `asked`: the devices asked themselves, so whatever was in flight is
/// sent again.
fn take_batches(inner: &Inner, devices: &[DeviceId], asked: bool) -> Vec<Option<SyncPush>> {
    let mut session = inner.session.lock();
    let mut engine = inner.engine.write();
    let now = inner.clock.now();
    let sent_at = Instant::now().into_std();
    devices
        .iter()
        .map(|&device| {
            if asked {
                session.restart(device);
            }
            let batch = engine.pending_sync(device)?;
            let send = session.offer(device, &batch, sent_at)?;
            for cmd in send.commands(device) {
                if let Err(e) = engine.apply(&Actor::System, cmd, now) {
                    tracing::warn!(%device, error = %e, "cannot record a sync as sent");
                    session.unsent(device, send.version);
                    return None;
                }
            }
            (!send.pushes.is_empty()).then(|| SyncPush::joined(send.version, send.pushes))
        })
        .collect()
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
        if self.inner.engine.read().device(self.device).is_none() {
            return Err(TransportError::Engine(format!(
                "unknown device {}",
                self.device
            )));
        }
        Ok(take_batches(&self.inner, &[self.device], true)
            .pop()
            .flatten())
    }

    /// A device that lost its codes asks for every one (the gateway's
    /// answer to `sync/req` `{"full": true}`): the engine counts them not
    /// set again ([`Command::SyncReset`]) and the first batch is returned
    /// like [`pull_sync`](Self::pull_sync)'s.
    pub fn pull_full_sync(&self) -> Result<Option<SyncPush>, TransportError> {
        self.inner
            .engine
            .write()
            .apply(
                &Actor::System,
                Command::SyncReset {
                    device: self.device,
                },
                self.inner.clock.now(),
            )
            .map_err(|e| TransportError::Engine(e.to_string()))?;
        self.pull_sync()
    }

    /// The device's ack, under the session's version rule (the gateway's):
    /// it counts if it names the engine's current version and the batch in
    /// flight, if any; any other is stale and dropped.
    pub fn sync_ack(&self, ack: &SyncAckMsg) -> Result<(), TransportError> {
        // Held until the ack is applied: a batch sent meanwhile waits for
        // its own ack.
        let mut session = self.inner.session.lock();
        let engine = &self.inner.engine;
        let engine_version = engine.read().sync_version(self.device);
        let SyncAcked::Apply { completed } =
            session.ack(self.device, ack, engine_version, Instant::now().into_std())
        else {
            return Ok(());
        };
        engine
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
        drop(session);
        if let (Some(t), Some(rt)) = (&self.inner.timings, completed) {
            let outcome = if rt.failed {
                Outcome::Error
            } else {
                Outcome::Granted
            };
            t.record(
                Operation::SyncRoundTrip,
                outcome,
                rt.elapsed,
                Instant::now(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use access_core::domain::{CredentialId, Pin, Secret};
    use access_core::protocol::MAX_SYNC_CODES;
    use access_core::sync::SyncBatch;

    use super::*;

    /// The in-process link is the engine and the sync session alone
    /// (access-core, no I/O crate): it names nothing of the server.
    #[test]
    fn the_in_process_link_needs_access_core_alone() {
        let src = include_str!("inproc.rs");
        assert!(!src.contains(concat!("reference", "_server")));
    }

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
        let one = SyncPush::whole(&batch);
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
