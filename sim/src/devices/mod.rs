//! Virtual devices as actix actors: [`lock::Lock`], [`keypad::Keypad`],
//! [`door_sensor::DoorSensor`], [`door_phone::DoorPhone`], linked as in real
//! installations (keypad -> lock, door sensor on the same door, door phone ->
//! its door relay), and the [`fleet`] builder that provisions and starts
//! them.
//!
//! Every device has a [`Core`]: its id, RNG (from seed and id), clock (with
//! the device's skew), link to the engine, battery, online state, event
//! sequence and per-kind emitted counts. All timing goes through tokio time
//! (actix timers use it), so a fleet runs in virtual time as in real time.

pub mod door_phone;
pub mod door_sensor;
pub mod fleet;
pub mod keypad;
pub mod lock;
pub mod params;
pub mod timers;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use actix::prelude::*;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use reference_server::domain::{
    CredentialId, DenyReason, DeviceId, DeviceKind, Lockout, Pin, SyncFailure,
};
use reference_server::protocol::{
    encode, AuthRequest, AuthResponse, CommandAck, CommandResult, DeviceCommand, Event, EventKind,
    SimAction, Status, SyncAckMsg, SyncPush, SyncResult, SyncValidity, Verdict, WireCredential,
    WireSecret,
};
use rustc_hash::FxHashMap;
use serde::Serialize;
use tokio::time::Instant;

use crate::clock::SimClock;
use crate::transport::{Checked, KindCounts, Link, TransportError};
pub use params::*;

/// What happened at the device after a credential was presented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum DeviceOutcome {
    Unlocked,
    /// Granted, but the motor jammed.
    MotorBlocked,
    /// Granted, but the battery is too low to run the motor.
    LowBattery,
    Denied(DenyReason),
    /// The device could not reach the engine (and cannot decide alone):
    /// nothing was sent, so the engine cannot have decided anything.
    Offline,
    /// The engine did not answer within the reader's timeout (it may
    /// still have decided).
    TimedOut,
    /// The engine answered "error", or the transport failed after the
    /// request may have gone out.
    Error(String),
}

impl DeviceOutcome {
    /// An outcome with no decision in it where the engine may still have
    /// decided (a timeout, a transport error, an error answer): what the
    /// check did to use counts and wrong-PIN counts is unknown.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, DeviceOutcome::TimedOut | DeviceOutcome::Error(_))
    }
}

/// The answer to one presentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    /// The engine's answer; `None` when the device decided alone or could
    /// not ask.
    pub response: Option<AuthResponse>,
    pub outcome: DeviceOutcome,
    /// Time the transport took (0 for local decisions).
    pub latency_us: u64,
    /// Decided from the device's own code cache (Bluetooth, offline).
    pub decided_locally: bool,
}

/// A credential presented to a device.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Presented, DeviceError>")]
pub struct Present {
    pub credential: WireCredential,
    /// A lift floor asked for at a door phone.
    pub floor: Option<reference_server::domain::FloorId>,
    /// Simulate the human part (typing digits at 0.3-1 s each). Load tests
    /// that measure the check from its intended time turn it off.
    pub human_timing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("a {device} does not take {what}")]
    NotAccepted {
        device: &'static str,
        what: &'static str,
    },
    #[error("device {0} is not in this fleet")]
    UnknownDevice(DeviceId),
    #[error("device mailbox full")]
    MailboxFull,
    #[error("device stopped")]
    Stopped,
}

/// The observable state of a device (tests, reports).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    pub id: DeviceId,
    pub kind: DeviceKind,
    pub state: &'static str,
    pub battery_pct: Option<f64>,
    pub online: bool,
    /// Last event sequence number used.
    pub seq: u64,
    pub emitted: KindCounts,
    pub checks: u64,
    pub granted: u64,
    pub denied: u64,
    /// Events dropped from a full offline buffer.
    pub events_dropped: u64,
    /// Codes in the local cache (locks, keypads).
    pub cached_codes: usize,
    pub relock_after_s: Option<f64>,
    pub lift_calls: u64,
    pub syncs_applied: u64,
    /// blake3 of the device's event trace, when tracing is on.
    pub trace_digest: Option<String>,
    /// Daily battery readings (at most 31).
    pub battery_history_pct: Vec<f64>,
}

#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Snapshot")]
pub struct GetSnapshot;

/// Fault injection and test control.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub enum Control {
    /// Lose connectivity for this long.
    GoOffline { for_s: f64 },
    /// End an offline spell now: the device reconnects and delivers what it
    /// buffered (the run's end, so held events are not counted as lost).
    GoOnline,
    /// A phone or gateway is near now: sync (Bluetooth devices).
    SyncNow,
    /// Start the device's own offline spells (see
    /// [`FaultParams::spells_at_start`]); once, later ones do nothing.
    BeginOfflineSpells,
}

/// What a fleet's devices count together while the run goes, shared by
/// its devices on every arbiter: devices offline right now (in all and per
/// kind) and at most at once (offline waves and a group's own spells
/// alike), and the events emitted per kind. Read live (Prometheus) without
/// asking every device for a snapshot.
#[derive(Debug, Default)]
pub struct FleetGauges {
    now: AtomicU64,
    peak: AtomicU64,
    /// `[kind]` in [`crate::metrics::DEVICE_KINDS`] order.
    offline_by_kind: [AtomicU64; crate::metrics::DEVICE_KINDS.len()],
    /// `[kind]` in [`reference_server::protocol::EventKind::NAMES`] order.
    emitted: [AtomicU64; reference_server::protocol::EventKind::COUNT],
}

impl FleetGauges {
    fn went_offline(&self, kind: DeviceKind) {
        let n = self.now.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(n, Relaxed);
        self.offline_by_kind[crate::metrics::device_kind_index(kind)].fetch_add(1, Relaxed);
    }
    fn came_back(&self, kind: DeviceKind) {
        let down = |a: &AtomicU64| {
            let _ = a.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        };
        down(&self.now);
        down(&self.offline_by_kind[crate::metrics::device_kind_index(kind)]);
    }
    fn emitted(&self, kind: &EventKind) {
        self.emitted[kind.index()].fetch_add(1, Relaxed);
    }
    /// Devices offline right now.
    pub fn now(&self) -> u64 {
        self.now.load(Relaxed)
    }
    /// Devices of `kind` offline right now.
    pub fn offline_of(&self, kind: DeviceKind) -> u64 {
        self.offline_by_kind[crate::metrics::device_kind_index(kind)].load(Relaxed)
    }
    /// Most devices offline at the same time so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }
    /// Events the devices emitted so far, per kind.
    pub fn emitted_so_far(&self) -> KindCounts {
        let mut k = KindCounts::default();
        for (out, n) in k.0.iter_mut().zip(&self.emitted) {
            *out = n.load(Relaxed);
        }
        k
    }
}

/// The lock tells its door sensor (and the sensor the lock) what changed.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct LockChanged {
    pub unlocked: bool,
}

#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct DoorChanged {
    pub open: bool,
}

/// The most battery readings kept (30 days plus the first).
pub const BATTERY_HISTORY_DAYS: usize = 31;

/// Charge modelled lazily: the level at a mark plus linear drain since,
/// so 30 days cost one timer per threshold, not one per tick.
#[derive(Clone, Debug)]
pub struct Battery {
    pct_at_mark: f64,
    mark: Instant,
    low_reported: bool,
}

impl Battery {
    fn level(&self, p: &BatteryParams) -> f64 {
        self.level_at(p, Instant::now())
    }
    /// The level at `now` (one clock read serves a whole motor run).
    fn level_at(&self, p: &BatteryParams, now: Instant) -> f64 {
        let days = now.saturating_duration_since(self.mark).as_secs_f64() / 86_400.0;
        (self.pct_at_mark - days * p.drain_pct_per_day).max(0.0)
    }
    fn spend_at(&mut self, p: &BatteryParams, pct: f64, now: Instant) {
        self.pct_at_mark = (self.level_at(p, now) - pct).max(0.0);
        self.mark = now;
    }
    /// Time until the level reaches `pct` by drain alone.
    fn time_to(&self, p: &BatteryParams, pct: f64) -> Option<Duration> {
        self.time_to_at(p, pct, Instant::now())
    }
    fn time_to_at(&self, p: &BatteryParams, pct: f64, now: Instant) -> Option<Duration> {
        let left = self.level_at(p, now) - pct;
        if left <= 0.0 || p.drain_pct_per_day <= 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(
            left / p.drain_pct_per_day * 86_400.0,
        ))
    }
}

/// Codes stored on a lock or keypad, as the engine synced them.
#[derive(Clone, Debug, Default)]
pub struct CodeCache {
    pins: FxHashMap<u64, CredentialId>,
    cards: FxHashMap<u64, CredentialId>,
    /// When each stored code may open (codes without one: always), so
    /// the lock decides offline by time as the engine would.
    valid: FxHashMap<CredentialId, SyncValidity>,
}

impl CodeCache {
    pub fn len(&self) -> usize {
        self.pins.len() + self.cards.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn lookup(&self, c: &WireCredential) -> Option<CredentialId> {
        match c {
            WireCredential::Pin(s) => Pin::parse(s)
                .ok()
                .and_then(|p| self.pins.get(&p.key()).copied()),
            WireCredential::Card(s) => s.parse().ok().and_then(|n| self.cards.get(&n).copied()),
            _ => None,
        }
    }
    /// The stored code for `c` and whether it may open at the device's
    /// `now`: the engine's time rules (use limits stay online-only).
    pub fn judge(
        &self,
        c: &WireCredential,
        now: Timestamp,
    ) -> Option<(CredentialId, Result<(), DenyReason>)> {
        let id = self.lookup(c)?;
        Some((id, self.valid.get(&id).map_or(Ok(()), |v| v.check(now))))
    }
    /// Applies a batch within `slots`; says per code what happened.
    pub fn apply(&mut self, push: &SyncPush, slots: u16) -> Vec<SyncResult> {
        let mut results = Vec::with_capacity(push.set.len() + push.remove.len());
        for id in &push.remove {
            self.pins.retain(|_, c| c != id);
            self.cards.retain(|_, c| c != id);
            self.valid.remove(id);
            results.push(SyncResult {
                credential: *id,
                failure: None,
            });
        }
        for code in &push.set {
            let key = match &code.secret {
                WireSecret::Pin(s) => Pin::parse(s).ok().map(|p| (true, p.key())),
                WireSecret::Card(s) => s.parse().ok().map(|n| (false, n)),
            };
            let failure = match key {
                None => Some(SyncFailure::DuplicateOnDevice),
                Some((is_pin, k)) => {
                    let used = self.pins.len() + self.cards.len();
                    let map = if is_pin { &self.pins } else { &self.cards };
                    match map.get(&k) {
                        Some(c) if *c == code.credential => None,
                        Some(_) => Some(SyncFailure::DuplicateOnDevice),
                        None if used >= usize::from(slots) => Some(SyncFailure::LockFull),
                        None => {
                            let map = if is_pin {
                                &mut self.pins
                            } else {
                                &mut self.cards
                            };
                            map.insert(k, code.credential);
                            None
                        }
                    }
                }
            };
            if failure.is_none() {
                // A re-sent code may carry a new validity (an edit).
                match &code.valid {
                    Some(v) => self.valid.insert(code.credential, v.clone()),
                    None => self.valid.remove(&code.credential),
                };
            }
            results.push(SyncResult {
                credential: code.credential,
                failure,
            });
        }
        results
    }
}

/// The part every device shares.
pub struct Core {
    pub id: DeviceId,
    pub kind: DeviceKind,
    pub rng: ChaCha8Rng,
    pub clock: SimClock,
    pub link: Link,
    pub params: std::sync::Arc<DeviceParams>,
    /// The fleet's count of offline devices.
    offline: std::sync::Arc<FleetGauges>,
    /// Own offline spells started (see [`FaultParams::spells_at_start`]).
    spells_started: bool,
    /// The boot epoch its events carry (protocol version 2): the device's
    /// power-up, as Unix seconds of the run's start. A later run against
    /// the same server starts `seq` at 1 again under a new boot, so its
    /// events are logged, not taken for duplicates of the last run's.
    boot: u64,
    seq: u64,
    emitted: KindCounts,
    online: bool,
    /// Bumped by each offline spell: the timer of a spell ended early
    /// (by [`Control::GoOnline`]) does nothing.
    offline_spell: u64,
    offline_buffer: VecDeque<Event>,
    events_dropped: u64,
    skew: SignedDuration,
    battery: Option<Battery>,
    battery_history: VecDeque<f64>,
    /// Bumped on each re-plan: an older battery timer does nothing.
    battery_gen: u64,
    /// When the battery timer fires (it re-plans then).
    battery_due: Option<Instant>,
    trace: Option<Box<blake3::Hasher>>,
    pub checks: u64,
    pub granted: u64,
    pub denied: u64,
    pub syncs_applied: u64,
    pub codes: Option<CodeCache>,
    /// The code store was lost and the engine not told yet: the next sync
    /// asks for every code (a full resync) instead of the delta. Locks
    /// boot with it set, as a lock rebooted or reflashed with an empty
    /// cache (fleetsim's devices keep nothing across runs); cleared once
    /// the request went out, so a reconnect later asks for the delta.
    pub cache_lost: bool,
    /// The keypad's own lockout, for PINs it decides itself (a Bluetooth
    /// device checking its code cache): its wrong tries, by its policy.
    pub lockout: Lockout,
    /// The engine's lockout of this keypad as its last answer said
    /// (`locked_until`, Unix seconds; `i64::MIN`: none). A device that asks the
    /// engine counts no wrong tries itself: it refuses PINs until the end
    /// the engine gave, so both agree on when the lockout ends.
    engine_locked_until_s: i64,
    next_request_id: u64,
}

/// A device's boot epoch: the run's start in Unix seconds (at least 1, so
/// that it is never the "no boot" of a version 1 device).
fn clock_start_boot(clock: &SimClock) -> u64 {
    clock.start().as_second().max(1) as u64
}

impl Core {
    pub fn new(
        id: DeviceId,
        kind: DeviceKind,
        mut rng: ChaCha8Rng,
        clock: SimClock,
        link: Link,
        params: std::sync::Arc<DeviceParams>,
        offline: std::sync::Arc<FleetGauges>,
    ) -> Core {
        // Door phones are mains powered; locks and keypads store codes.
        let battery_powered = kind != DeviceKind::DoorPhone;
        let stores_codes = matches!(kind, DeviceKind::Lock | DeviceKind::Keypad);
        let skew_max = params.faults.clock_skew_max_s;
        let skew_s = if skew_max > 0.0 {
            rng.random_range(-skew_max..=skew_max)
        } else {
            0.0
        };
        let battery = battery_powered.then(|| Battery {
            pct_at_mark: params.battery.initial_pct.sample(&mut rng),
            mark: Instant::now(),
            low_reported: false,
        });
        let boot = clock_start_boot(&clock);
        Core {
            id,
            kind,
            rng,
            clock,
            link,
            boot,
            seq: 0,
            emitted: KindCounts::default(),
            online: true,
            offline_spell: 0,
            offline_buffer: VecDeque::new(),
            events_dropped: 0,
            skew: SignedDuration::from_millis((skew_s * 1000.0) as i64),
            battery,
            battery_history: VecDeque::new(),
            battery_gen: 0,
            battery_due: None,
            trace: params.trace.then(|| Box::new(blake3::Hasher::new())),
            checks: 0,
            granted: 0,
            denied: 0,
            syncs_applied: 0,
            codes: stores_codes.then(CodeCache::default),
            cache_lost: kind == DeviceKind::Lock,
            lockout: Lockout::default(),
            engine_locked_until_s: i64::MIN,
            next_request_id: 1,
            params,
            offline,
            spells_started: false,
        }
    }

    /// The device's own clock (the simulated time plus its skew).
    pub fn now(&self) -> Timestamp {
        self.clock
            .now()
            .checked_add(self.skew)
            .unwrap_or(Timestamp::MAX)
    }

    pub fn online(&self) -> bool {
        self.online
    }

    pub fn battery_pct(&self) -> Option<f64> {
        self.battery.as_ref().map(|b| b.level(&self.params.battery))
    }

    /// Emits one event: the next sequence number, the device's time; sent
    /// now, or kept (bounded) while offline.
    pub fn emit(&mut self, kind: EventKind) {
        self.seq += 1;
        self.emitted.add(&kind);
        self.offline.emitted(&kind);
        let event = Event {
            seq: self.seq,
            boot: self.boot,
            at: self.now(),
            kind,
        };
        if let Some(h) = self.trace.as_mut() {
            h.update(&encode(&event));
        }
        if self.online {
            if self.link.event(&event).is_err() {
                self.events_dropped += 1;
            }
        } else {
            if self.offline_buffer.len() >= self.params.max_buffered_events.max(1) {
                self.offline_buffer.pop_front();
                self.events_dropped += 1;
            }
            self.offline_buffer.push_back(event);
        }
    }

    pub fn request(
        &mut self,
        credential: WireCredential,
        floor: Option<reference_server::domain::FloorId>,
    ) -> AuthRequest {
        let now = self.now();
        self.request_at(credential, floor, now)
    }

    /// [`Core::request`] stamped with the device time `now`.
    pub fn request_at(
        &mut self,
        credential: WireCredential,
        floor: Option<reference_server::domain::FloorId>,
        now: Timestamp,
    ) -> AuthRequest {
        let id = self.next_request_id;
        self.next_request_id += 1;
        AuthRequest {
            id,
            credential,
            floor,
            at: Some(now),
        }
    }

    /// Counts a check's answer.
    pub fn count(&mut self, granted: bool) {
        self.checks += 1;
        if granted {
            self.granted += 1;
        } else {
            self.denied += 1;
        }
    }

    /// Spends battery for one motor run; false if the battery is too low
    /// to run it.
    pub fn actuation_allowed(&mut self) -> bool {
        let p = &self.params.battery;
        match self.battery.as_mut() {
            None => true,
            Some(b) => {
                let now = Instant::now();
                if b.level_at(p, now) < p.dead_pct {
                    return false;
                }
                b.spend_at(p, p.actuation_cost_pct, now);
                true
            }
        }
    }

    /// Applies a sync batch to the code cache, emits code events and acks.
    pub fn apply_sync(&mut self, push: &SyncPush) {
        let slots = self.params.lock.code_slots;
        let Some(cache) = self.codes.as_mut() else {
            return;
        };
        let results = cache.apply(push, slots);
        self.syncs_applied += 1;
        for r in &results {
            if push.remove.contains(&r.credential) {
                continue;
            }
            self.emit(match r.failure {
                None => EventKind::CodeSet {
                    credential: r.credential,
                },
                Some(reason) => EventKind::CodeSetFailed {
                    credential: r.credential,
                    reason,
                },
            });
        }
        let ack = SyncAckMsg {
            version: push.version,
            results,
        };
        let _ = self.link.sync_ack(&ack);
    }

    /// Pulls and applies a sync batch where the transport can pull.
    pub fn pull_sync(&mut self) {
        if !self.online {
            return;
        }
        if self.cache_lost {
            match self.link.request_full_sync() {
                Ok(first) => {
                    self.cache_lost = false;
                    // MQTT, HTTP: the batch comes as `Inbound::Sync`.
                    let Some(push) = first else { return };
                    self.apply_sync(&push);
                }
                Err(e) => {
                    // Asked again on the next sync.
                    tracing::debug!(device = %self.id, error = %e, "full resync request not sent");
                    return;
                }
            }
        }
        // Bounded: a batch carries at most MAX_SYNC_CODES; a few rounds
        // drain a large backlog.
        for _ in 0..16 {
            match self.link.pull_sync() {
                Ok(Some(push)) => self.apply_sync(&push),
                _ => break,
            }
        }
    }

    /// Asks the engine for this device's pending code changes now: a pull
    /// where the link pulls (in-process); over MQTT a status "online", the
    /// protocol's cue for the gateway to push the pending delta (the
    /// answer arrives as `Inbound::Sync`); over HTTP a background `GET` of
    /// the pending batch, which arrives as `Inbound::Sync` too.
    pub fn request_sync(&mut self) {
        if !self.online {
            return;
        }
        match &self.link {
            Link::Mqtt(l) if !self.cache_lost => {
                let _ = l.status(&self.status());
            }
            _ => self.pull_sync(),
        }
    }

    /// Is the keypad locked out now (its own lockout or the engine's)?
    pub fn locked_out(&self) -> bool {
        self.locked_out_at(self.now())
    }

    /// The rule of both lockouts: locked while the whole second of `now`
    /// is before the end, as the engine compares.
    fn locked_out_at(&self, now: Timestamp) -> bool {
        self.lockout.is_locked(now) || now.as_second() < self.engine_locked_until_s
    }

    /// A PIN this device decided itself: a wrong one counts against its own
    /// lockout (emitting the lockout when it starts), a granted one clears
    /// the count, as on the engine.
    fn own_pin_decided(&mut self, now: Timestamp, granted: bool) {
        if granted {
            self.lockout.record_success();
            return;
        }
        let policy = self.params.keypad.lockout;
        if self.lockout.record_wrong(now, &policy) {
            let until = self.lockout.locked_until().unwrap_or(now);
            self.emit(EventKind::KeypadLockedOut { until });
        }
    }

    /// The engine's answer said the keypad is locked out until `until`:
    /// refuse PINs until then (an answer can only move the end on; the
    /// lockout event goes out once per lockout).
    fn engine_locked_out(&mut self, until: Timestamp) {
        let until_s = until.as_second();
        if until_s <= self.engine_locked_until_s {
            return;
        }
        self.engine_locked_until_s = until_s;
        self.emit(EventKind::KeypadLockedOut { until });
    }

    /// Turns a transport result into an outcome for a device that must
    /// ask; an answer that says the keypad is locked out starts (or
    /// extends) the device's copy of the engine's lockout.
    pub fn judge(&mut self, res: &Result<Checked, TransportError>) -> Judged {
        if let Some(until) = res.as_ref().ok().and_then(|c| c.response.locked_until) {
            self.engine_locked_out(until);
        }
        match res {
            Ok(c) => match c.response.decision {
                Verdict::Granted => {
                    self.count(true);
                    Judged::Granted(c.response.credential_id, c.response.origin)
                }
                Verdict::Denied => {
                    self.count(false);
                    Judged::Denied(c.response.reason.unwrap_or(DenyReason::UnknownCredential))
                }
                Verdict::Error => Judged::Failed(DeviceOutcome::Error(
                    c.response.error.clone().unwrap_or_default(),
                )),
            },
            Err(TransportError::Timeout(_)) => Judged::Failed(DeviceOutcome::TimedOut),
            Err(TransportError::Offline) => Judged::Failed(DeviceOutcome::Offline),
            Err(e) => Judged::Failed(DeviceOutcome::Error(e.to_string())),
        }
    }

    fn status(&self) -> Status {
        Status {
            online: self.online,
            battery_pct: self.battery_pct().map(|p| p.round() as u8),
            firmware: None,
            at: Some(self.now()),
        }
    }

    pub fn snapshot(&self, state: &'static str) -> Snapshot {
        Snapshot {
            id: self.id,
            kind: self.kind,
            state,
            battery_pct: self.battery_pct(),
            online: self.online,
            seq: self.seq,
            emitted: self.emitted,
            checks: self.checks,
            granted: self.granted,
            denied: self.denied,
            events_dropped: self.events_dropped,
            cached_codes: self.codes.as_ref().map_or(0, |c| c.len()),
            relock_after_s: None,
            lift_calls: 0,
            syncs_applied: self.syncs_applied,
            trace_digest: self
                .trace
                .as_ref()
                .map(|h| h.finalize().to_hex().to_string()),
            battery_history_pct: self.battery_history.iter().copied().collect(),
        }
    }
}

/// A check's answer as the device reads it.
pub enum Judged {
    Granted(
        Option<CredentialId>,
        Option<reference_server::domain::Origin>,
    ),
    Denied(DenyReason),
    Failed(DeviceOutcome),
}

/// Actors with a [`Core`] get the shared timers (battery, offline spells)
/// and controls from these helpers.
pub trait HasCore: Actor<Context = Context<Self>> + Handler<timers::Fire<Self>> {
    fn core(&mut self) -> &mut Core;

    /// Called when connectivity returns (after the buffered events went).
    fn back_online(&mut self, _ctx: &mut Context<Self>) {}
}

/// Starts the shared timers; call from `Actor::started`.
pub fn start_core<A: HasCore>(act: &mut A, ctx: &mut Context<A>) {
    ctx.set_mailbox_capacity(act.core().params.mailbox_capacity.max(1));
    let status = act.core().status();
    let _ = act.core().link.status(&status);
    schedule_battery(act, ctx);
    if act.core().params.faults.spells_at_start {
        begin_offline_spells(act, ctx);
    }
    if act.core().battery.is_some() {
        record_battery_day(act, ctx);
    }
}

fn record_battery_day<A: HasCore>(act: &mut A, ctx: &mut Context<A>) {
    let core = act.core();
    if let Some(pct) = core.battery_pct() {
        if core.battery_history.len() >= BATTERY_HISTORY_DAYS {
            core.battery_history.pop_front();
        }
        core.battery_history.push_back(pct);
    }
    timers::run_later(ctx, Duration::from_secs(86_400), |act, ctx| {
        record_battery_day(act, ctx)
    });
}

/// The battery timer wakes at least this often, so that an actuation
/// (which moves the "low" crossing earlier) needs no re-plan while the
/// crossing is further away than this.
const BATTERY_WAKE_MAX: Duration = Duration::from_secs(86_400);

/// Re-plans the one battery timer: when the level will cross "low" (or a
/// day from now, whichever comes first).
pub fn schedule_battery<A: HasCore>(act: &mut A, ctx: &mut Context<A>) {
    let core = act.core();
    core.battery_gen += 1;
    core.battery_due = None;
    let Some(b) = core.battery.as_mut() else {
        return;
    };
    let p = &core.params.battery;
    if b.low_reported {
        return;
    }
    if b.level(p) < p.low_pct {
        b.low_reported = true;
        let pct = b.level(p);
        core.emit(EventKind::BatteryLow {
            battery_pct: pct.round() as u8,
        });
        return;
    }
    if let Some(wait) = b.time_to(p, p.low_pct) {
        // A little past the crossing, so the level is below it on waking.
        let wait = (wait + Duration::from_millis(1)).min(BATTERY_WAKE_MAX);
        core.battery_due = Some(Instant::now() + wait);
        let gen = core.battery_gen;
        timers::run_later(ctx, wait, move |act, ctx| {
            if act.core().battery_gen == gen {
                schedule_battery(act, ctx);
            }
        });
    }
}

/// After a motor run: re-plans the battery timer only if the "low"
/// crossing moved before the planned wake-up (the hot path of a load test
/// keeps its timer).
pub fn battery_spent<A: HasCore>(act: &mut A, ctx: &mut Context<A>) {
    let core = act.core();
    let Some(b) = core.battery.as_ref() else {
        return;
    };
    if b.low_reported {
        return;
    }
    let p = &core.params.battery;
    let now = Instant::now();
    let still_ahead = match (core.battery_due, b.time_to_at(p, p.low_pct, now)) {
        (Some(due), Some(wait)) => now + wait > due,
        _ => false,
    };
    if !still_ahead {
        schedule_battery(act, ctx);
    }
}

/// Starts the device's own offline spells (once).
pub fn begin_offline_spells<A: HasCore>(act: &mut A, ctx: &mut Context<A>) {
    let core = act.core();
    if core.spells_started {
        return;
    }
    core.spells_started = true;
    schedule_offline(act, ctx);
}

fn schedule_offline<A: HasCore>(act: &mut A, ctx: &mut Context<A>) {
    let core = act.core();
    let per_day = core.params.faults.offline_per_day;
    if per_day <= 0.0 {
        return;
    }
    let wait_s = exponential(86_400.0 / per_day, &mut core.rng);
    let for_s = core.params.faults.offline_for_s.sample(&mut core.rng);
    timers::run_later(ctx, Duration::from_secs_f64(wait_s), move |act, ctx| {
        go_offline(act, ctx, for_s);
        schedule_offline(act, ctx);
    });
}

/// Takes the device offline for `for_s`, then back (flushing its buffer).
pub fn go_offline<A: HasCore>(act: &mut A, ctx: &mut Context<A>, for_s: f64) {
    let core = act.core();
    if !core.online {
        return;
    }
    core.online = false;
    core.offline.went_offline(core.kind);
    core.offline_spell += 1;
    let spell = core.offline_spell;
    timers::run_later(
        ctx,
        Duration::from_secs_f64(for_s.max(0.0)),
        move |act, ctx| {
            if act.core().offline_spell == spell {
                go_online(act, ctx);
            }
        },
    );
}

/// Ends an offline spell: the device reconnects, delivers the events it
/// buffered and says it is online.
pub fn go_online<A: HasCore>(act: &mut A, ctx: &mut Context<A>) {
    let core = act.core();
    if core.online {
        return;
    }
    core.online = true;
    core.offline.came_back(core.kind);
    // The spell's timer, if still armed, finds another spell number.
    core.offline_spell += 1;
    while let Some(e) = core.offline_buffer.pop_front() {
        if core.link.event(&e).is_err() {
            core.events_dropped += 1;
        }
    }
    let status = core.status();
    let _ = core.link.status(&status);
    act.back_online(ctx);
}

/// The delay of a keypad entry: one interval per digit plus "enter".
pub fn typing_time(core: &mut Core, digits: usize) -> Duration {
    let span = core.params.keypad.digit_interval_s;
    let s: f64 = (0..=digits).map(|_| span.sample(&mut core.rng)).sum();
    Duration::from_secs_f64(s)
}

/// The first half of a check at a device that may decide alone.
pub enum Decide {
    /// Ask the engine.
    Ask(Link, AuthRequest),
    /// Decided already (local cache, lockout, offline).
    Done(Judged),
}

/// How a credential reads in the activity log.
pub fn how_of(c: &WireCredential) -> reference_server::protocol::How {
    use reference_server::protocol::How;
    match c {
        WireCredential::Pin(_) => How::Keypad,
        WireCredential::Qr(_) => How::Qr,
        WireCredential::Card(_) => How::Card,
        WireCredential::Ble(_) => How::Ble,
    }
}

impl Core {
    /// Local lockout first; then the local cache where the device decides
    /// alone (`local`: a Bluetooth device and a PIN or card); otherwise ask
    /// the engine if online.
    pub fn decide_start(
        &mut self,
        credential: WireCredential,
        floor: Option<reference_server::domain::FloorId>,
        local: bool,
    ) -> Decide {
        // One clock read for the whole check (the device's time).
        let now = self.now();
        let is_pin = matches!(credential, WireCredential::Pin(_));
        if is_pin && self.locked_out_at(now) {
            self.count(false);
            return Decide::Done(Judged::Denied(DenyReason::LockedOut));
        }
        let cacheable = matches!(credential, WireCredential::Pin(_) | WireCredential::Card(_));
        if local && cacheable {
            let found = self.codes.as_ref().and_then(|c| c.judge(&credential, now));
            let granted = matches!(found, Some((_, Ok(()))));
            self.count(granted);
            // Only unknown PINs are wrong tries; a known code out of its
            // time neither counts nor clears (the engine's rule).
            if is_pin && (granted || found.is_none()) {
                self.own_pin_decided(now, granted);
            }
            return Decide::Done(match found {
                Some((id, Ok(()))) => Judged::Granted(Some(id), None),
                // A known code out of its time: not a wrong try.
                Some((_, Err(reason))) => Judged::Denied(reason),
                None if is_pin => Judged::Denied(DenyReason::WrongPin),
                None => Judged::Denied(DenyReason::UnknownCredential),
            });
        }
        if !self.online {
            return Decide::Done(Judged::Failed(DeviceOutcome::Offline));
        }
        let req = self.request_at(credential, floor, now);
        Decide::Ask(self.link.clone(), req)
    }

    /// Acts on a denial or failure (the event) and returns the final
    /// answer; a grant is returned for the caller to actuate. Lockouts are
    /// kept where the PIN was decided: [`Core::decide_start`] for the
    /// device's own decisions, [`Core::judge`] for the engine's.
    pub fn settle(
        &mut self,
        how: reference_server::protocol::How,
        judged: Judged,
    ) -> Result<
        (
            Option<CredentialId>,
            Option<reference_server::domain::Origin>,
        ),
        DeviceOutcome,
    > {
        match judged {
            Judged::Granted(c, o) => Ok((c, o)),
            Judged::Denied(reason) => {
                self.emit(EventKind::AccessDenied { how, reason });
                Err(DeviceOutcome::Denied(reason))
            }
            Judged::Failed(o) => Err(o),
        }
    }
}

/// Runs a [`Decide`] to its answer: the engine's response (if asked), the
/// judged result and the transport latency. `timeout_ms` is a reader's
/// patience (door phones); `None` waits for the transport's own timeout.
pub async fn run_decide(
    d: Decide,
    timeout_ms: Option<u64>,
) -> (Option<AuthResponse>, Result<Checked, TransportError>, bool) {
    match d {
        Decide::Done(_) => unreachable!("handled by the caller"),
        Decide::Ask(link, req) => {
            let res = match timeout_ms {
                Some(ms) => {
                    match tokio::time::timeout(Duration::from_millis(ms), link.check(req)).await {
                        Ok(r) => r,
                        Err(_) => Err(TransportError::Timeout(ms)),
                    }
                }
                None => link.check(req).await,
            };
            let response = res.as_ref().ok().map(|c| c.response.clone());
            (response, res, false)
        }
    }
}

/// What [`run_decide`] gives, without the "decided alone" flag.
pub type Asked = (Option<AuthResponse>, Result<Checked, TransportError>);

/// Answers a [`Decide::Ask`] at once where the link answers synchronously
/// (the in-process transport): no future, no box, no task on the hot path.
/// `Err` hands the decision back for [`run_decide`].
#[allow(clippy::result_large_err)] // Err hands the undecided check back by value; boxing it would allocate on every check.
pub fn decide_now(d: Decide) -> Result<Asked, Decide> {
    match d {
        Decide::Ask(Link::InProc(l), req) if l.added_latency().is_zero() => {
            let c = l.check(&req);
            Ok((Some(c.response.clone()), Ok(c)))
        }
        other => Err(other),
    }
}

/// Sleeps for a human delay; no timer at all when there is none (the load
/// path presents without human timing).
pub async fn wait(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// How long a device told to `disconnect` (a sandbox action) stays off
/// before it reconnects by itself, as after a lost link.
pub const SIMULATED_DISCONNECT_S: f64 = 60.0;

/// A sandbox action (a `cmd` with `command: simulate`), the part every
/// device kind acts out alike: connect (it is connected already: nothing
/// to do), disconnect (says so on its status and drops off for
/// [`SIMULATED_DISCONNECT_S`]), battery (its battery reads the level; below
/// its threshold it reports `battery_low` as a drained one does), and a
/// code entry or card tap, presented to itself so it goes through the
/// device's own check. `None`: the action is the device kind's own (the
/// bolt, the door), or one it does not fit.
pub fn simulate_shared<A>(
    act: &mut A,
    ctx: &mut Context<A>,
    action: &SimAction,
) -> Option<CommandResult>
where
    A: HasCore + Handler<Present>,
{
    let kind = act.core().kind;
    if action.fits(kind).is_err() {
        return Some(CommandResult::Unsupported);
    }
    match action {
        SimAction::Connect => Some(CommandResult::Ok),
        SimAction::Disconnect => {
            go_offline(act, ctx, SIMULATED_DISCONNECT_S);
            // What the broker would publish as the device's Last Will.
            let core = act.core();
            let status = core.status();
            let _ = core.link.status(&status);
            Some(CommandResult::Ok)
        }
        SimAction::Battery { level_pct } => {
            let core = act.core();
            let Some(b) = core.battery.as_mut() else {
                return Some(CommandResult::Unsupported);
            };
            b.pct_at_mark = f64::from((*level_pct).min(100));
            b.mark = Instant::now();
            b.low_reported = false;
            schedule_battery(act, ctx);
            let core = act.core();
            let status = core.status();
            let _ = core.link.status(&status);
            Some(CommandResult::Ok)
        }
        SimAction::KeypadCodeEntry { .. } | SimAction::CardTap { .. } => {
            let credential = action.credential()?;
            ctx.address().do_send(Present {
                credential,
                floor: None,
                human_timing: false,
            });
            Some(CommandResult::Ok)
        }
        _ => None,
    }
}

/// Answers a command on `cmd/ack`.
pub fn ack_command(core: &Core, cmd: &DeviceCommand, result: CommandResult) {
    let _ = core.link.command_ack(&CommandAck { id: cmd.id, result });
}

/// The action a `simulate` command carries; a command without one (a
/// malformed one) is unsupported.
pub fn simulated(cmd: &DeviceCommand) -> Result<&SimAction, CommandResult> {
    cmd.simulate.as_ref().ok_or(CommandResult::Unsupported)
}
