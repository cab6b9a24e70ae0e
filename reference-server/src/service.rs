//! The server's one facade over the engine, the store, the activity log,
//! device health and metrics. The admin API and the device gateway (MQTT and
//! HTTP) both call it; nothing else touches the engine or the store.
//!
//! Rules it keeps:
//! - Every acknowledged change is durable: `apply` returns after the store
//!   committed the resolved command; a grant of a use-limited credential is
//!   recorded (`RestoreUse`) before the device hears "granted".
//! - The check path reads the in-memory engine under a read lock, never SQL.
//! - Commands reach the store in the order the engine applied them (the
//!   `apply_order` lock spans apply + enqueue), so a replay gives the same
//!   state and the same ids.
//! - This is the only place the server reads a clock (`Clock`).

mod pin_slots;
mod sandbox;

pub use pin_slots::{PinRefusal, PinSlotError, SlotChange, SlotView, PIN_SLOT_HOLDER_NAME};
pub use sandbox::{admit as sandbox_admits, Simulated, SimulatedBy};

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use jiff::Timestamp;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use rand::Rng;
use rustc_hash::FxHashMap;
use tokio::sync::broadcast;

use crate::activity::{ActivityEntry, ActivityQuery, LogPosition};
use crate::auth;
use crate::device_state::{DeviceState, DeviceStates, STATE_EVENTS};
use crate::domain::{Actor, Decision, DeviceId, DoorId, OrgId, TokenKey, UseLimit, UserId};
use crate::engine::{self, Applied, Check, Command, Engine, EngineConfig, Outcome};
use crate::error::EngineError;
use crate::health::{Health, HealthReport, HealthSummary, Sample};
use crate::metrics::Metrics;
pub use crate::metrics::Transport;
use crate::protocol::{self, CommandKind, CommandResult, SimAction};
use crate::store::idempotency::Idempotency;
use crate::store::{Store, StoreError, Write};
use crate::sync::{SyncAcked, SyncBatch, SyncPacing, SyncSession};

/// File in the data directory holding the token MAC key.
pub const TOKEN_KEY_FILE: &str = "token.key";
/// Status reports kept (health shows up to 90 days of uptime, 30 of battery).
pub const STATUS_RETENTION_DAYS: i64 = 90;
/// Queued sync notifications per subscriber before it lags.
pub const SYNC_CHANNEL_CAPACITY: usize = 4_096;

/// Who reported a device event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventSource {
    /// The device itself (deduplicated by its `seq`).
    Device,
    /// The sandbox, for a device that is not connected.
    Sandbox,
}

/// What the platform asks a connected device to do.
#[derive(Clone, Debug)]
pub enum Order {
    /// Open Door, Lock.
    Command(CommandKind),
    /// A sandbox action (`cmd` with `command: simulate`).
    Simulate(SimAction),
}

/// How the gateway sends a command to a device and waits for its ack.
pub type CommandSink =
    Arc<dyn Fn(DeviceId, Order) -> BoxFuture<'static, CommandResult> + Send + Sync>;

/// Work that must finish before the store closes (the gateway stops taking
/// device messages and finishes those it took).
pub type CloseHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// The server's clock: the system clock, or a settable one for tests (so a
/// test can stand on a Tuesday 09:00 across a DST change).
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Timestamp>>>);

impl Clock {
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stays at `at` until set or advanced.
    pub fn manual(at: Timestamp) -> Clock {
        Clock(Some(Arc::new(Mutex::new(at))))
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            None => Timestamp::now(),
            Some(t) => *t.lock(),
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set(&self, at: Timestamp) {
        if let Some(t) = &self.0 {
            *t.lock() = at;
        }
    }

    pub fn advance(&self, by: jiff::SignedDuration) {
        if let Some(t) = &self.0 {
            let mut t = t.lock();
            *t = t.saturating_add(by).unwrap_or(*t);
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Clock(system)"),
            Some(t) => write!(f, "Clock(manual {})", t.lock()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("store: {0}")]
    Store(Arc<StoreError>),
    #[error("the server already has an organization; bootstrap works only on an empty server")]
    AlreadyBootstrapped,
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
}

impl From<Arc<StoreError>> for ServiceError {
    fn from(e: Arc<StoreError>) -> Self {
        ServiceError::Store(e)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(Arc::new(e))
    }
}

/// What bootstrap made.
#[derive(Clone, Debug)]
pub struct Bootstrapped {
    pub user: UserId,
    pub org: OrgId,
    /// The owner's bearer token (shown once).
    pub token: String,
}

/// Applies `cmd` to `engine` at `now`: its log record is pushed on
/// `writes`; answers the outcome and the events it makes (the caller
/// places them after any writes of its own).
fn applied_logged(
    engine: &mut Engine,
    actor: &Actor,
    cmd: Command,
    now: Timestamp,
    writes: &mut Vec<Write>,
) -> Result<(Applied, Vec<Write>), ServiceError> {
    let before = crate::events::Before::capture(engine, &cmd);
    let applied = engine.apply(actor, cmd, now)?;
    let events = crate::events::of_command(engine, &before, &applied, now);
    let json = serde_json::to_string(&applied.logged).expect("commands serialize");
    writes.push(Write::Command { at: now, json });
    Ok((applied, events.into_iter().map(Write::event).collect()))
}

pub struct Service {
    engine: RwLock<Engine>,
    store: Store,
    /// The admin API's idempotency keys (`api::idempotency`).
    idempotency: Idempotency,
    health: Health,
    /// Lock and door state, from the devices' events.
    states: DeviceStates,
    /// Signs page cursors (`api::paging`), derived from the token key.
    cursor_key: [u8; 32],
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Spans "apply in the engine + enqueue in the store" so the log keeps
    /// the engine's order.
    apply_order: tokio::sync::Mutex<()>,
    user_tokens: RwLock<FxHashMap<UserId, Vec<[u8; 32]>>>,
    device_secrets: RwLock<FxHashMap<DeviceId, [u8; 32]>>,
    sync_tx: broadcast::Sender<DeviceId>,
    /// The sync session of devices that sync over HTTP (`GET`/`POST
    /// /v1/devices/{device}/sync`); the MQTT gateway's task owns its own.
    /// Never held across an await.
    http_sync: Mutex<SyncSession>,
    command_sink: RwLock<Option<CommandSink>>,
    /// Fault injection for load tests: every check waits this long before
    /// the engine decides (a slow backend). Zero in production.
    added_latency_us: std::sync::atomic::AtomicU64,
    /// Run by `close`, in order, before the store closes.
    close_hooks: Mutex<Vec<CloseHook>>,
    /// The event feed's live parts (stream stop, webhook retry schedule).
    feed: crate::events::Feed,
    /// Devices whose own last status report since the server started
    /// said online: connected, so a sandbox action goes to them. Not
    /// stored: after a restart a device is connected again when it says
    /// so (a sandbox device, online by `simulate/connect`, never is).
    connected: Mutex<rustc_hash::FxHashSet<DeviceId>>,
    /// Home Assistant's PIN slots (`pin_slots`), and the lock held while
    /// one is changed.
    pin_slots: Mutex<pin_slots::PinSlots>,
    pin_slot_order: tokio::sync::Mutex<()>,
}

fn load_or_create_key(dir: &Path) -> Result<TokenKey, StoreError> {
    use std::io::Write as _;
    let path = dir.join(TOKEN_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let key: [u8; 32] = bytes.try_into().map_err(|_| StoreError::Corrupt {
                what: "token.key",
                detail: "must be exactly 32 bytes".into(),
            })?;
            Ok(TokenKey::from_bytes(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rng().fill(&mut key);
            let mut f = crate::store::create_private_file(&path, true)?;
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(TokenKey::from_bytes(key))
        }
        Err(e) => Err(e.into()),
    }
}

impl Service {
    /// Opens the data directory: loads the key (made once), replays the
    /// command log into a fresh engine, restores tokens, secrets and health.
    pub fn open(data_dir: &Path, clock: Clock) -> Result<Service, StoreError> {
        let metrics = Arc::new(Metrics::new());
        crate::store::create_private_dir(data_dir)?;
        let token_key = load_or_create_key(data_dir)?;
        let keep_since = clock.now() - jiff::SignedDuration::from_hours(24 * STATUS_RETENTION_DAYS);
        let (store, loaded) = Store::open(data_dir, metrics.clone(), keep_since)?;
        let idempotency = Idempotency::open(store.path(), clock.now())?;
        // The store holds codes in plaintext: say so when others can read it.
        for (path, mode) in crate::store::loose_permissions(data_dir)? {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "other users can access the store, which holds codes in plaintext; \
                 chmod 700 the data directory and 600 its files"
            );
        }
        let cursor_key = blake3::derive_key(
            "fleetsim reference-server page cursor v1",
            token_key.as_bytes(),
        );
        let mut engine = Engine::new(EngineConfig {
            token_key,
            // Generated PINs are logged resolved, so replay does not draw:
            // the seed only needs to be unpredictable.
            seed: rand::rng().random(),
        });
        let slots = pin_slots::PinSlots::loaded(loaded.pin_slots, loaded.pin_slot_holders);
        let replayed = loaded.commands.len();
        for (i, (at, cmd)) in loaded.commands.into_iter().enumerate() {
            engine
                .apply(&Actor::System, cmd, at)
                .map_err(|e| StoreError::Corrupt {
                    what: "commands",
                    detail: format!("command {} does not replay: {e}", i + 1),
                })?;
        }
        let mut user_tokens: FxHashMap<UserId, Vec<[u8; 32]>> = FxHashMap::default();
        for (u, h) in loaded.user_tokens {
            user_tokens.entry(u).or_default().push(h);
        }
        // A deleted device's secret opens nothing any more.
        let device_secrets = loaded
            .device_secrets
            .into_iter()
            .filter(|(d, _)| engine.device(*d).is_some())
            .collect();
        let states = DeviceStates::default();
        let mut state_events = store.state_events(&STATE_EVENTS)?;
        state_events.sort_by_key(|(_, _, at)| *at);
        for (device, kind, at) in state_events {
            states.record(device, &kind, at);
        }
        let health = Health::default();
        for s in &loaded.statuses {
            health.record(
                s.device,
                Sample {
                    at: s.at,
                    online: s.online,
                    battery_pct: s.battery_pct,
                },
                s.firmware.as_deref(),
            );
        }
        metrics.devices_online.set(health.online_count() as i64);
        tracing::info!(replayed, "store loaded");
        let (sync_tx, _) = broadcast::channel(SYNC_CHANNEL_CAPACITY);
        Ok(Service {
            engine: RwLock::new(engine),
            store,
            idempotency,
            health,
            states,
            cursor_key,
            metrics,
            clock,
            apply_order: tokio::sync::Mutex::new(()),
            user_tokens: RwLock::new(user_tokens),
            device_secrets: RwLock::new(device_secrets),
            sync_tx,
            http_sync: Mutex::new(SyncSession::new(SyncPacing::default())),
            command_sink: RwLock::new(None),
            added_latency_us: std::sync::atomic::AtomicU64::new(0),
            close_hooks: Mutex::new(Vec::new()),
            feed: crate::events::Feed::default(),
            connected: Mutex::new(rustc_hash::FxHashSet::default()),
            pin_slots: Mutex::new(slots),
            pin_slot_order: tokio::sync::Mutex::new(()),
        })
    }

    /// The admin API's idempotency keys.
    pub fn idempotency(&self) -> &Idempotency {
        &self.idempotency
    }

    /// The system clock (or a test's): the only clock read in the server.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store (the event feed reads its log and queue through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn feed(&self) -> &crate::events::Feed {
        &self.feed
    }

    /// Read access to the engine (API reads). Hold it briefly.
    pub fn engine(&self) -> RwLockReadGuard<'_, Engine> {
        self.engine.read()
    }

    /// Makes every later check wait `latency` before the engine decides, as
    /// a slow or distant backend would (fleetsim's `engine_added_latency`
    /// fault). The wait holds no lock, so checks still overlap.
    pub fn set_added_latency(&self, latency: std::time::Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.added_latency_us
            .store(us, std::sync::atomic::Ordering::Relaxed);
    }

    /// One credential check: engine decision, durable use before a grant of a
    /// use-limited credential is answered, activity entry, metrics.
    pub async fn check(
        &self,
        device: DeviceId,
        req: &protocol::AuthRequest,
        transport: Transport,
    ) -> protocol::AuthResponse {
        let added_us = self
            .added_latency_us
            .load(std::sync::atomic::Ordering::Relaxed);
        if added_us > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(added_us)).await;
        }
        let now = self.now();
        let presented = match req.credential.to_presented() {
            Ok(p) => p,
            Err(e) => {
                self.metrics.validation(transport, None);
                return protocol::AuthResponse::error(req.id, e.to_string());
            }
        };
        let kind = presented.kind();
        let (decision, limited_use) = {
            let e = self.engine.read();
            let d = e.validate(
                &Check {
                    device,
                    presented,
                    floor: req.floor,
                },
                now,
            );
            let limited_use = match &d {
                Decision::Granted(g) => e
                    .credential(g.credential)
                    .filter(|c| c.schedule.use_limit() != UseLimit::Unlimited)
                    .zip(e.device(device))
                    .map(|(c, dev)| (c.id, dev.door)),
                Decision::Denied { .. } => None,
            };
            (d, limited_use)
        };
        if let Some((credential, door)) = limited_use {
            if let Err(e) = self.persist_use(credential, door, now).await {
                tracing::error!(error = %e, "could not record a use; answering error");
                self.metrics.validation(transport, None);
                return protocol::AuthResponse::error(req.id, "the use could not be recorded");
            }
        }
        if decision.reason() != Some(crate::domain::DenyReason::DeviceUnknown) {
            let entry = ActivityEntry::from_check(device, now, kind, &decision);
            self.log_activity(entry).await;
        }
        self.metrics.validation(transport, Some(decision.reason()));
        protocol::AuthResponse::from_decision(req.id, &decision)
    }

    async fn persist_use(
        &self,
        credential: crate::domain::CredentialId,
        door: DoorId,
        now: Timestamp,
    ) -> Result<(), ServiceError> {
        let json = serde_json::to_string(&Command::RestoreUse { credential, door })
            .expect("commands serialize");
        let rx = {
            let _order = self.apply_order.lock().await;
            self.store
                .enqueue(vec![Write::Command { at: now, json }])
                .await?
        };
        rx.await.map_err(|_| StoreError::Closed)??;
        Ok(())
    }

    /// Logs a device's event once: false when `(device, boot, seq)` was
    /// seen.
    pub async fn record_event(
        &self,
        device: DeviceId,
        ev: &protocol::Event,
    ) -> Result<bool, ServiceError> {
        self.ingest_event(device, ev, EventSource::Device).await
    }

    /// The one intake of device events (the device's own, and those the
    /// sandbox makes for a device that is not connected): activity log,
    /// event feed, device state.
    async fn ingest_event(
        &self,
        device: DeviceId,
        ev: &protocol::Event,
        source: EventSource,
    ) -> Result<bool, ServiceError> {
        let org = crate::events::device_org(&self.engine.read(), device)
            .ok_or(ServiceError::UnknownDevice(device))?;
        let mut entry = ActivityEntry::from_event(device, ev);
        if source == EventSource::Sandbox {
            // Not in the device's numbering: never taken for a duplicate
            // of, nor a duplicate taken for, the device's own.
            entry.seq = None;
        }
        let mut writes = vec![Write::Activity(entry)];
        // Logged only with its activity entry: a redelivered event is no
        // new event.
        if let Some(event) = crate::events::of_device_event(org, device, ev, self.now()) {
            writes.push(Write::Event {
                event,
                if_previous_changed: true,
            });
        }
        let ack = self.store.write(writes).await?;
        let new = ack.first().copied().unwrap_or(false);
        if new {
            self.states.record(device, ev.kind.name(), ev.at);
        }
        Ok(new)
    }

    /// A status report: health, online gauge, and an activity entry when the
    /// device came online or went offline. The server's clock stamps it.
    pub async fn set_status(
        &self,
        device: DeviceId,
        st: &protocol::Status,
    ) -> Result<(), ServiceError> {
        self.status_from(device, st, EventSource::Device).await
    }

    /// The one intake of status reports (the device's own, and those the
    /// sandbox makes for a device that is not connected).
    async fn status_from(
        &self,
        device: DeviceId,
        st: &protocol::Status,
        source: EventSource,
    ) -> Result<(), ServiceError> {
        {
            let mut connected = self.connected.lock();
            if source == EventSource::Device && st.online {
                connected.insert(device);
            } else {
                connected.remove(&device);
            }
        }
        let org = crate::events::device_org(&self.engine.read(), device)
            .ok_or(ServiceError::UnknownDevice(device))?;
        let at = self.now();
        let before = self.health.record(
            device,
            Sample {
                at,
                online: st.online,
                battery_pct: st.battery_pct,
            },
            st.firmware.as_deref(),
        );
        match (before, st.online) {
            (Some(true), false) => self.metrics.devices_online.dec(),
            (None | Some(false), true) => self.metrics.devices_online.inc(),
            _ => {}
        }
        let mut writes = vec![Write::Status {
            device,
            at,
            online: st.online,
            battery_pct: st.battery_pct,
            firmware: st.firmware.clone(),
        }];
        if before != Some(st.online) {
            writes.push(Write::Activity(ActivityEntry::connectivity(
                device, at, st.online,
            )));
            writes.push(Write::event(crate::events::connectivity(
                org, device, st.online, at,
            )));
        }
        self.store.write(writes).await?;
        Ok(())
    }

    /// Authorizes and applies one change; returns once it is durable.
    pub async fn apply(&self, actor: &Actor, cmd: Command) -> Result<Applied, ServiceError> {
        self.apply_with(actor, cmd, |_| Vec::new()).await
    }

    /// `apply`, committing `extra` writes (made from the outcome) in the same
    /// transaction.
    async fn apply_with(
        &self,
        actor: &Actor,
        cmd: Command,
        extra: impl FnOnce(&Applied) -> Vec<Write>,
    ) -> Result<Applied, ServiceError> {
        let (applied, _) = self.apply_then(actor, cmd, |_| None, extra).await?;
        Ok(applied)
    }

    /// `apply_with`, then the command `then` makes from the first outcome
    /// (if any), under the same engine write lock and in the same store
    /// transaction: no check, sync fetch or push sees the state between the
    /// two (a code issued disabled is never an enabled code on a lock, not
    /// even for one sync push). The outer error is the first command's or
    /// the store's; if only the second fails, the first stands (durable,
    /// its devices told) and the second's error is in the answer.
    pub(crate) async fn apply_then(
        &self,
        actor: &Actor,
        cmd: Command,
        then: impl FnOnce(&Applied) -> Option<Command>,
        extra: impl FnOnce(&Applied) -> Vec<Write>,
    ) -> Result<(Applied, Option<Result<Applied, ServiceError>>), ServiceError> {
        let now = self.now();
        let (applied, second, rx) = {
            let _order = self.apply_order.lock().await;
            let mut writes = Vec::new();
            let (applied, second) = {
                let mut engine = self.engine.write();
                let (applied, events) = applied_logged(&mut engine, actor, cmd, now, &mut writes)?;
                writes.extend(extra(&applied));
                writes.extend(events);
                let second = then(&applied).map(|next| {
                    let (a, events) = applied_logged(&mut engine, actor, next, now, &mut writes)?;
                    writes.extend(events);
                    Ok::<_, ServiceError>(a)
                });
                (applied, second)
            };
            let rx = self.store.enqueue(writes).await?;
            (applied, second, rx)
        };
        rx.await.map_err(|_| StoreError::Closed)??;
        self.notify_sync(&applied);
        if let Some(Ok(a)) = &second {
            self.notify_sync(a);
        }
        Ok((applied, second))
    }

    /// Applies `cmds` of the system (sync bookkeeping: `SyncSent`,
    /// `SyncAck`) under one engine write lock and one store transaction,
    /// so a sync storm of N devices does not stop every check N times.
    /// Each command succeeds or fails alone; the outer error is the
    /// store's, for all of them.
    pub async fn apply_batch(
        &self,
        cmds: Vec<Command>,
    ) -> Result<Vec<Result<Applied, ServiceError>>, ServiceError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let (results, rx) = {
            let _order = self.apply_order.lock().await;
            let mut writes = Vec::new();
            let results: Vec<Result<Applied, ServiceError>> = {
                let mut engine = self.engine.write();
                cmds.into_iter()
                    .map(|cmd| {
                        let (applied, events) =
                            applied_logged(&mut engine, &Actor::System, cmd, now, &mut writes)?;
                        writes.extend(events);
                        Ok(applied)
                    })
                    .collect()
            };
            let rx = if writes.is_empty() {
                None
            } else {
                Some(self.store.enqueue(writes).await?)
            };
            (results, rx)
        };
        if let Some(rx) = rx {
            rx.await.map_err(|_| StoreError::Closed)??;
        }
        for a in results.iter().flatten() {
            self.notify_sync(a);
        }
        Ok(results)
    }

    /// Tells the gateway which devices' code lists changed (the engine
    /// says which: `Applied::sync_changed`).
    fn notify_sync(&self, applied: &Applied) {
        if self.sync_tx.receiver_count() > 0 {
            self.send_sync(&applied.sync_changed);
        }
    }

    fn send_sync(&self, devices: &[DeviceId]) {
        for d in devices {
            let _ = self.sync_tx.send(*d);
        }
    }

    /// The device's sync version (what its sync ack must name).
    pub fn sync_version(&self, device: DeviceId) -> Option<u64> {
        self.engine.read().sync_version(device)
    }

    /// What `device` must change to match the engine.
    pub fn pending_sync(&self, device: DeviceId) -> Option<SyncBatch> {
        self.engine.read().pending_sync(device)
    }

    /// A device asks for its batch over HTTP (`GET .../sync`): the batch
    /// of the moment, recorded as sent (`SyncSent`: its codes go
    /// `setting`) when the session says it goes, with its QR and BLE codes
    /// confirmed as the MQTT gateway confirms them. `full`: the device lost
    /// its codes; `SyncReset` first, so the batch is the whole set (as
    /// `sync/req` with `full` over MQTT).
    pub async fn sync_fetch(
        &self,
        device: DeviceId,
        full: bool,
    ) -> Result<SyncBatch, ServiceError> {
        if full {
            let reset = Command::SyncReset { device };
            if let Some(e) = self
                .apply_batch(vec![reset])
                .await?
                .into_iter()
                .find_map(Result::err)
            {
                return Err(e);
            }
        }
        let batch = self
            .pending_sync(device)
            .ok_or(ServiceError::UnknownDevice(device))?;
        let send = {
            let mut session = self.http_sync.lock();
            session.restart(device);
            session.offer(device, &batch, std::time::Instant::now())
        };
        if let Some(send) = send {
            let failed = match self.apply_batch(send.commands(device)).await {
                Ok(results) => results.into_iter().find_map(Result::err),
                Err(e) => Some(e),
            };
            if let Some(e) = failed {
                self.http_sync.lock().unsent(device, send.version);
                return Err(e);
            }
        }
        Ok(batch)
    }

    /// A device's ack over HTTP (`POST .../sync`), under the session's
    /// version rule. `Ok(false)`: stale (another version than the one to
    /// confirm), nothing applied.
    pub async fn sync_ack(
        &self,
        device: DeviceId,
        ack: &protocol::SyncAckMsg,
    ) -> Result<bool, ServiceError> {
        let engine_version = self.sync_version(device);
        let acked =
            self.http_sync
                .lock()
                .ack(device, ack, engine_version, std::time::Instant::now());
        match acked {
            SyncAcked::Stale => Ok(false),
            SyncAcked::Apply { .. } => {
                let cmd = Command::SyncAck {
                    device,
                    results: ack.results.clone(),
                };
                self.apply(&Actor::System, cmd).await?;
                Ok(true)
            }
        }
    }

    /// Checks a device's own secret (constant time).
    pub fn authenticate_device(&self, device: DeviceId, secret: &str) -> bool {
        self.device_secrets
            .read()
            .get(&device)
            .is_some_and(|h| auth::secret_matches(secret, h))
    }

    /// The user a bearer token belongs to.
    pub fn authenticate_user(&self, token: &str) -> Option<UserId> {
        let (user, secret) = auth::parse_user_token(token)?;
        let tokens = self.user_tokens.read();
        let hashes = tokens.get(&user)?;
        // Compare against every hash, without stopping at a match.
        let ok = hashes
            .iter()
            .fold(false, |ok, h| auth::secret_matches(secret, h) | ok);
        ok.then_some(user)
    }

    /// Devices whose codes changed: the gateway pushes them a delta.
    pub fn sync_changes(&self) -> broadcast::Receiver<DeviceId> {
        self.sync_tx.subscribe()
    }

    /// The gateway registers how to send a command and await its ack.
    pub fn set_command_sink(&self, sink: CommandSink) {
        *self.command_sink.write() = Some(sink);
    }

    /// Makes a user and a bearer token for them (shown once).
    pub async fn create_user(
        &self,
        name: String,
        email: String,
    ) -> Result<(UserId, String), ServiceError> {
        let (secret, hash) = auth::new_secret();
        let applied = self
            .apply_with(
                &Actor::System,
                Command::CreateUser { name, email },
                |a| match a.outcome {
                    Outcome::User(user) => vec![Write::UserToken { user, hash }],
                    _ => Vec::new(),
                },
            )
            .await?;
        let Outcome::User(user) = applied.outcome else {
            unreachable!("CreateUser makes a user")
        };
        self.user_tokens.write().entry(user).or_default().push(hash);
        Ok((user, auth::user_token(user, &secret)))
    }

    /// The first owner and their organization: works only while the server
    /// has no organization.
    pub async fn bootstrap(
        &self,
        name: String,
        email: String,
        organization: String,
    ) -> Result<Bootstrapped, ServiceError> {
        static BOOTSTRAP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = BOOTSTRAP.lock().await;
        if !self.engine.read().organizations().is_empty() {
            return Err(ServiceError::AlreadyBootstrapped);
        }
        // Check the organization's name before making the user.
        engine::check_name("organization", &organization)?;
        let (user, token) = self.create_user(name, email).await?;
        let applied = self
            .apply(
                &Actor::User(user),
                Command::CreateOrganization {
                    name: organization,
                    description: String::new(),
                    owner: user,
                    personal: false,
                },
            )
            .await?;
        let Outcome::Organization(org) = applied.outcome else {
            unreachable!("CreateOrganization makes an organization")
        };
        Ok(Bootstrapped { user, org, token })
    }

    /// Adds a device and makes its MQTT/HTTP secret (shown once; stored
    /// hashed). The MQTT username is the device's display id (`dev-N`).
    pub async fn create_device(
        &self,
        actor: &Actor,
        cmd: Command,
    ) -> Result<(DeviceId, String), ServiceError> {
        let (secret, hash) = auth::new_secret();
        let applied = self
            .apply_with(actor, cmd, |a| match a.outcome {
                Outcome::Device(device) => vec![Write::DeviceSecret { device, hash }],
                _ => Vec::new(),
            })
            .await?;
        let Outcome::Device(device) = applied.outcome else {
            return Err(EngineError::Invalid {
                field: "command",
                rule: "not a device".into(),
            }
            .into());
        };
        self.device_secrets.write().insert(device, hash);
        Ok((device, secret))
    }

    /// Open Door from the platform: authorized by the engine, sent through
    /// the gateway's command sink; `offline` when there is none or the
    /// device is offline.
    pub async fn open_door(
        &self,
        actor: &Actor,
        device: DeviceId,
    ) -> Result<CommandResult, ServiceError> {
        self.remote_command(actor, device, CommandKind::Open).await
    }

    /// A remote command to a lock (`open` or `lock`; the admin API's Open
    /// Door, Home Assistant's `UNLOCK`/`OPEN`/`LOCK`): authorized as Open
    /// Door, sent through the gateway's command sink, and logged as a
    /// `remote_open` or `remote_lock` activity entry with the result. The
    /// lock reports what it did as its own `unlocked`/`locked` event
    /// (`how: remote`), the `lock.unlocked`/`lock.locked` event of the log.
    pub async fn remote_command(
        &self,
        actor: &Actor,
        device: DeviceId,
        kind: CommandKind,
    ) -> Result<CommandResult, ServiceError> {
        let now = self.now();
        self.engine.read().authorize_open(actor, device, now)?;
        let sink = self.command_sink.read().clone();
        let result = match sink {
            Some(sink) if self.health.summary(device).online => {
                sink(device, Order::Command(kind)).await
            }
            _ => CommandResult::Offline,
        };
        let name = serde_json::to_value(result)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.store
            .write(vec![Write::Activity(ActivityEntry::remote_command(
                device,
                now,
                kind == CommandKind::Lock,
                &name,
            ))])
            .await?;
        Ok(result)
    }

    /// The activity log, newest first.
    pub fn activity(&self, q: &ActivityQuery) -> Result<Vec<ActivityEntry>, ServiceError> {
        Ok(self.store.activity(q)?)
    }

    /// The activity log, newest first, with each entry's log position
    /// (what a page of it ends at).
    pub fn activity_keyed(
        &self,
        q: &ActivityQuery,
    ) -> Result<Vec<(LogPosition, ActivityEntry)>, ServiceError> {
        Ok(self.store.activity_keyed(q)?)
    }

    /// Lock and door state, as the device's events last said.
    pub fn device_state(&self, device: DeviceId) -> DeviceState {
        self.states.get(device)
    }

    /// The key page cursors are signed with.
    pub fn cursor_key(&self) -> &[u8; 32] {
        &self.cursor_key
    }

    /// Deletes a device (`Command::DeleteDevice`) and forgets its secret:
    /// it can no longer sign in over HTTP or MQTT.
    pub async fn delete_device(&self, actor: &Actor, device: DeviceId) -> Result<(), ServiceError> {
        self.apply(actor, Command::DeleteDevice { device }).await?;
        self.device_secrets.write().remove(&device);
        Ok(())
    }

    /// Deletes an organization with everything in it
    /// (`Command::DeleteOrganization`) and forgets its devices' secrets:
    /// none of them can sign in any more.
    pub async fn delete_organization(&self, actor: &Actor, org: OrgId) -> Result<(), ServiceError> {
        self.apply(actor, Command::DeleteOrganization { org })
            .await?;
        let devices = self.engine().devices_ever_in(org);
        let mut secrets = self.device_secrets.write();
        for d in devices {
            secrets.remove(&d);
        }
        Ok(())
    }

    pub fn health_summary(&self, device: DeviceId) -> HealthSummary {
        self.health.summary(device)
    }

    pub fn health_report(&self, device: DeviceId, window_s: i64) -> HealthReport {
        self.health.report(device, self.now(), window_s)
    }

    /// Waits until every write queued so far (activity entries of checks
    /// included) is committed.
    pub async fn flush(&self) -> Result<(), ServiceError> {
        self.store.write(Vec::new()).await?;
        Ok(())
    }

    /// Queues an activity entry for the next commit (nobody waits for it).
    /// One the store can no longer take is counted
    /// (`activity_entries_lost_total`) and reported once at `close`, not
    /// logged one by one.
    pub async fn log_activity(&self, entry: ActivityEntry) {
        if self
            .store
            .write_one_later(Write::Activity(entry))
            .await
            .is_err()
        {
            self.metrics.activity_entries_lost_total.inc();
        }
    }

    /// Adds work to run at `close` before the store closes.
    pub fn before_close(&self, hook: CloseHook) {
        self.close_hooks.lock().push(hook);
    }

    /// Runs the close hooks (the gateway stops and finishes what it took),
    /// then commits everything queued and stops the store's writer. Says
    /// how many activity entries could not be stored, if any.
    pub async fn close(&self) {
        let hooks = std::mem::take(&mut *self.close_hooks.lock());
        for hook in hooks {
            hook().await;
        }
        self.store.close().await;
        let lost = self.metrics.activity_entries_lost_total.get();
        if lost > 0 {
            tracing::warn!(
                lost,
                "activity entries lost: {lost} could not be stored (the store had stopped)"
            );
        }
    }
}
