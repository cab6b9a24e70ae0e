//! Credential sync to locks over MQTT: one task owns the sync session
//! (`access_core::sync::SyncSession`, the protocol's rules without I/O)
//! and does what it answers, so no lock is shared with the message
//! handlers.
//!
//! A device gets its pending batch (engine `pending_sync`) when its set
//! changes (`sync_changes`) and whenever it comes online (`status`). The
//! batch is recorded as sent (`SyncSent`, codes go `setting`), published
//! QoS 1, and resent on the session's schedule until the device acks that
//! version; then every code still waiting is marked `timed_out`. An
//! offline device is not retried; it gets the batch of the moment when it
//! comes back.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::backend::Backend;
use super::metrics::DropReason;
use super::Shared;
use crate::domain::{DeviceId, SiteId};
use crate::protocol::{self, Channel, SyncAckMsg, SyncPush};
use crate::sync::{SyncAcked, SyncDue, SyncSession};

/// How sync retries are paced: the session's own setting.
pub type SyncConfig = crate::sync::SyncPacing;

#[derive(Debug)]
pub(crate) enum SyncInput {
    Online(SiteId, DeviceId),
    Offline(DeviceId),
    Ack(DeviceId, SyncAckMsg),
}

pub(crate) struct Syncer<B> {
    pub(crate) shared: Arc<Shared<B>>,
    pub(crate) cfg: SyncConfig,
    online: FxHashMap<DeviceId, SiteId>,
    session: SyncSession,
}

impl<B: Backend> Syncer<B> {
    pub(crate) fn new(shared: Arc<Shared<B>>, cfg: SyncConfig) -> Self {
        Syncer {
            shared,
            cfg,
            online: FxHashMap::default(),
            session: SyncSession::new(cfg),
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
                self.session.restart(device);
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
        let engine_version = self.shared.backend.sync_version(device);
        match self
            .session
            .ack(device, &ack, engine_version, Instant::now().into_std())
        {
            SyncAcked::Stale => {
                self.shared.metrics.drop(DropReason::StaleAck);
                tracing::debug!(%device, acked = ack.version, "stale sync ack");
            }
            SyncAcked::Apply { completed } => {
                self.apply_ack(device, ack.results).await;
                if let (Some(o), Some(rt)) = (&self.shared.observer, completed) {
                    o.sync_acked(device, rt.elapsed, rt.failed);
                }
                // Nothing left in flight: the ack may have made more work
                // (an old PIN to remove now that its replacement is set).
                if self.session.in_flight(device).is_none() {
                    self.push(device).await;
                }
            }
        }
    }

    async fn apply_ack(&self, device: DeviceId, results: Vec<crate::protocol::SyncResult>) {
        match self.shared.backend.sync_ack(device, results).await {
            Ok(()) => self.shared.metrics.sync_acked.inc(),
            Err(e) => {
                self.shared.metrics.drop(DropReason::Rejected);
                tracing::warn!(%device, error = %e, "sync ack refused");
            }
        }
    }

    /// Offers the device its pending batch, and sends what the session
    /// says must go.
    async fn push(&mut self, device: DeviceId) {
        if !self.online.contains_key(&device) {
            return;
        }
        let Some(batch) = self.shared.backend.pending_sync(device) else {
            return;
        };
        let now = Instant::now().into_std();
        let Some(send) = self.session.offer(device, &batch, now) else {
            return;
        };
        if let Err(e) = self.shared.backend.sync_sent(device, send.version).await {
            self.session.unsent(device, send.version);
            tracing::warn!(%device, error = %e, "cannot record a sync as sent");
            return;
        }
        if !send.confirmed.is_empty() {
            if let Err(e) = self.shared.backend.sync_ack(device, send.confirmed).await {
                tracing::warn!(%device, error = %e, "cannot confirm token credentials");
            }
        }
        if !send.pushes.is_empty() {
            self.send(device, &send.pushes);
            self.shared.metrics.sync_pushed.inc();
        }
    }

    fn send(&self, device: DeviceId, pushes: &[SyncPush]) {
        let Some(&site) = self.online.get(&device) else {
            return;
        };
        let topic = protocol::topic(&self.shared.prefix, site, device, Channel::Sync);
        for p in pushes {
            self.shared
                .outbox
                .publish(0, &topic, 1, protocol::encode(p));
        }
    }

    async fn retry_due(&mut self) {
        let online = &self.online;
        let due = self
            .session
            .due(Instant::now().into_std(), |d| online.contains_key(&d));
        for d in due {
            match d {
                SyncDue::Resend { device, pushes } => {
                    self.send(device, &pushes);
                    self.shared.metrics.sync_retried.inc();
                }
                SyncDue::TimedOut {
                    device,
                    results,
                    round_trip,
                } => {
                    self.shared.metrics.sync_timed_out.inc();
                    tracing::warn!(%device, "sync timed out");
                    if let Some(o) = &self.shared.observer {
                        o.sync_acked(device, round_trip.elapsed, true);
                    }
                    if let Err(e) = self.shared.backend.sync_ack(device, results).await {
                        tracing::warn!(%device, error = %e, "cannot mark a sync timed out");
                    }
                }
            }
        }
    }
}
