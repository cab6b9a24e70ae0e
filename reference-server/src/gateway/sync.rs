//! Credential sync to locks: one task owns the state of every sync in
//! flight, so no lock is shared with the message handlers.
//!
//! A device gets its pending batch (engine `pending_sync`) when its set
//! changes (`sync_changes`) and whenever it comes online (`status`). The
//! batch is recorded as sent (`SyncSent`, codes go `setting`), published
//! QoS 1, and sent again with exponential backoff until the device acks
//! that version. After `max_attempts` sends with no ack, every code of the
//! batch is marked failed (`SyncAck` with `timed_out`). An offline device
//! is not retried; it gets the batch of the moment when it comes back.
//! Acks for another version than the one in flight are stale and dropped
//! (an old "set" ack must not confirm a later "remove").

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::backend::{fail_all, Backend};
use super::metrics::DropReason;
use super::Shared;
use crate::domain::{CredentialId, DeviceId, SiteId, SyncFailure};
use crate::engine::SyncResult;
use crate::protocol::{self, Channel, SyncAckMsg, SyncPush};

/// How sync retries are paced.
#[derive(Clone, Copy, Debug)]
pub struct SyncConfig {
    /// Wait before the first resend; doubled on each further one.
    pub first_retry: Duration,
    /// Longest wait between two sends.
    pub max_retry: Duration,
    /// Sends (the first included) before the batch is marked timed out.
    pub max_attempts: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(60),
            max_attempts: 5,
        }
    }
}

#[derive(Debug)]
pub(crate) enum SyncInput {
    Online(SiteId, DeviceId),
    Offline(DeviceId),
    Ack(DeviceId, SyncAckMsg),
}

struct InFlight {
    site: SiteId,
    version: u64,
    pushes: Vec<SyncPush>,
    /// Codes not acked yet (a batch may span several messages).
    waiting: FxHashSet<CredentialId>,
    attempts: u32,
    next_send: Instant,
    /// The first publish of this version (the observer's round trip).
    first_sent: Instant,
    /// A code of the batch was reported failed.
    failed: bool,
}

pub(crate) struct Syncer<B> {
    pub(crate) shared: Arc<Shared<B>>,
    pub(crate) cfg: SyncConfig,
    online: FxHashMap<DeviceId, SiteId>,
    in_flight: FxHashMap<DeviceId, InFlight>,
}

impl<B: Backend> Syncer<B> {
    pub(crate) fn new(shared: Arc<Shared<B>>, cfg: SyncConfig) -> Self {
        Syncer {
            shared,
            cfg,
            online: FxHashMap::default(),
            in_flight: FxHashMap::default(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut inputs: mpsc::Receiver<SyncInput>,
        mut changes: broadcast::Receiver<DeviceId>,
    ) {
        // Retries are checked on a coarse tick: a sync is not latency
        // critical, and one timer beats one per device.
        let tick_every = (self.cfg.first_retry / 4).max(Duration::from_millis(20));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => self.on_input(input).await,
                    None => return,
                },
                changed = changes.recv() => match changed {
                    Ok(device) => self.push(device).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "sync changes lagged; re-syncing every online device");
                        let devices: Vec<DeviceId> = self.online.keys().copied().collect();
                        for d in devices {
                            self.push(d).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => self.retry_due().await,
            }
        }
    }

    async fn on_input(&mut self, input: SyncInput) {
        match input {
            SyncInput::Online(site, device) => {
                self.online.insert(device, site);
                self.shared
                    .metrics
                    .devices_online
                    .set(self.online.len() as i64);
                // Whatever was in flight may be stale now: send the batch of
                // the moment.
                self.in_flight.remove(&device);
                self.push(device).await;
            }
            SyncInput::Offline(device) => {
                self.online.remove(&device);
                self.shared
                    .metrics
                    .devices_online
                    .set(self.online.len() as i64);
            }
            SyncInput::Ack(device, ack) => self.on_ack(device, ack).await,
        }
    }

    async fn on_ack(&mut self, device: DeviceId, ack: SyncAckMsg) {
        let Some(f) = self.in_flight.get_mut(&device) else {
            // Nothing in flight (e.g. a restart since): only an ack of the
            // engine's current version is safe to apply.
            let current = self.shared.backend.pending_sync(device).map(|b| b.version);
            if current != Some(ack.version) {
                self.shared.metrics.drop(DropReason::StaleAck);
                return;
            }
            self.apply_ack(device, &ack).await;
            self.push(device).await;
            return;
        };
        if f.version != ack.version {
            self.shared.metrics.drop(DropReason::StaleAck);
            tracing::debug!(%device, acked = ack.version, in_flight = f.version, "stale sync ack");
            return;
        }
        for r in &ack.results {
            f.waiting.remove(&r.credential);
        }
        f.failed |= ack.results.iter().any(|r| r.failure.is_some());
        let done = f.waiting.is_empty();
        let (first_sent, failed) = (f.first_sent, f.failed);
        self.apply_ack(device, &ack).await;
        if done {
            self.in_flight.remove(&device);
            if let Some(o) = &self.shared.observer {
                o.sync_acked(device, first_sent.elapsed(), failed);
            }
            // The ack may have made more work (an old PIN to remove now
            // that its replacement is set).
            self.push(device).await;
        }
    }

    async fn apply_ack(&self, device: DeviceId, ack: &SyncAckMsg) {
        match self
            .shared
            .backend
            .sync_ack(device, ack.results.clone())
            .await
        {
            Ok(()) => self.shared.metrics.sync_acked.inc(),
            Err(e) => {
                self.shared.metrics.drop(DropReason::Rejected);
                tracing::warn!(%device, error = %e, "sync ack refused");
            }
        }
    }

    /// Sends the device its pending batch, unless that very version is
    /// already in flight or the device is offline.
    async fn push(&mut self, device: DeviceId) {
        let Some(&site) = self.online.get(&device) else {
            return;
        };
        let Some(batch) = self.shared.backend.pending_sync(device) else {
            return;
        };
        if batch.is_empty() {
            self.in_flight.remove(&device);
            return;
        }
        if self
            .in_flight
            .get(&device)
            .is_some_and(|f| f.version == batch.version)
        {
            return;
        }
        if let Err(e) = self.shared.backend.sync_sent(device, batch.version).await {
            tracing::warn!(%device, error = %e, "cannot record a sync as sent");
            return;
        }
        // QR and BLE credentials have nothing to store on the lock (it
        // checks the signed token): confirm them as sent.
        let tokens: Vec<SyncResult> = batch
            .set
            .iter()
            .filter(|(_, secret)| protocol::WireSecret::from_secret(secret).is_none())
            .map(|(credential, _)| SyncResult {
                credential: *credential,
                failure: None,
            })
            .collect();
        if !tokens.is_empty() {
            if let Err(e) = self.shared.backend.sync_ack(device, tokens).await {
                tracing::warn!(%device, error = %e, "cannot confirm token credentials");
            }
        }
        let pushes = SyncPush::from_batch(&batch);
        if pushes.is_empty() {
            return;
        }
        let waiting = pushes.iter().flat_map(|p| p.credentials()).collect();
        let now = Instant::now();
        let f = InFlight {
            site,
            version: batch.version,
            pushes,
            waiting,
            attempts: 1,
            next_send: now + self.cfg.first_retry,
            first_sent: now,
            failed: false,
        };
        self.send(device, &f);
        self.shared.metrics.sync_pushed.inc();
        self.in_flight.insert(device, f);
    }

    fn send(&self, device: DeviceId, f: &InFlight) {
        let topic = protocol::topic(&self.shared.prefix, f.site, device, Channel::Sync);
        for p in &f.pushes {
            self.shared
                .outbox
                .publish(0, &topic, 1, protocol::encode(p));
        }
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<DeviceId> = self
            .in_flight
            .iter()
            .filter(|(d, f)| f.next_send <= now && self.online.contains_key(d))
            .map(|(d, _)| *d)
            .collect();
        for device in due {
            let f = self.in_flight.get_mut(&device).expect("listed above");
            if f.attempts >= self.cfg.max_attempts {
                let f = self.in_flight.remove(&device).expect("listed above");
                self.shared.metrics.sync_timed_out.inc();
                tracing::warn!(%device, version = f.version, attempts = f.attempts, "sync timed out");
                if let Some(o) = &self.shared.observer {
                    o.sync_acked(device, now - f.first_sent, true);
                }
                let results = fail_all(f.waiting, SyncFailure::TimedOut);
                if let Err(e) = self.shared.backend.sync_ack(device, results).await {
                    tracing::warn!(%device, error = %e, "cannot mark a sync timed out");
                }
                continue;
            }
            f.attempts += 1;
            let wait = self
                .cfg
                .first_retry
                .saturating_mul(1 << (f.attempts - 1).min(16))
                .min(self.cfg.max_retry);
            f.next_send = now + wait;
            let f = self.in_flight.get(&device).expect("listed above");
            self.send(device, f);
            self.shared.metrics.sync_retried.inc();
        }
    }
}
