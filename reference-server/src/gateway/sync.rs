//! Credential sync to locks over MQTT: one task owns the sync session
//! (`access_core::sync::SyncSession`, the protocol's rules without I/O)
//! and does what it answers, so no lock is shared with the message
//! handlers.
//!
//! A device gets its pending batch (engine `pending_sync`) when its set
//! changes (`sync_changes`), whenever it comes online (`status`) and when
//! it asks (`sync/req`); a request with `full` first records `SyncReset`
//! (every code of the device counts as not set again), so the batch is
//! the whole set, through the same session as every other batch. The
//! batch is recorded as sent (`SyncSent`, codes go `setting`), published
//! QoS 1, and resent on the session's schedule until the device acks that
//! version; then every code still waiting is marked `timed_out`. An
//! offline device is not retried; it gets the batch of the moment when it
//! comes back.
//!
//! The task works in rounds: the inputs (or changes) queued when it wakes,
//! up to `MAX_ROUND`, are handled together, and their bookkeeping is one
//! `Backend::sync_record` call, one engine write lock and one store
//! transaction, so a sync storm does not stall every credential check
//! once per device.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::backend::Backend;
use super::metrics::DropReason;
use super::Shared;
use crate::domain::{DeviceId, SiteId};
use crate::engine::Command;
use crate::protocol::{self, Channel, SyncAckMsg, SyncPush};
use crate::sync::{SyncAcked, SyncDue, SyncSession};

/// How sync retries are paced: the session's own setting.
pub type SyncConfig = crate::sync::SyncPacing;

#[derive(Debug)]
pub(crate) enum SyncInput {
    Online(SiteId, DeviceId),
    Offline(DeviceId),
    Ack(DeviceId, SyncAckMsg),
    /// `sync/req`: the device is connected and asks for its batch now.
    Request(SiteId, DeviceId, protocol::SyncRequest),
}

/// Most inputs or changes handled in one round: each round records its
/// sync bookkeeping under one engine write lock and one store transaction
/// (`Backend::sync_record`), so a storm of N devices costs N / 1024
/// rounds, not N; the bound keeps one round short.
const MAX_ROUND: usize = 1024;

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
                    Some(first) => {
                        let mut round = vec![first];
                        while round.len() < MAX_ROUND {
                            match inputs.try_recv() {
                                Ok(i) => round.push(i),
                                Err(_) => break,
                            }
                        }
                        self.on_inputs(round).await;
                    }
                    None => return,
                },
                changed = changes.recv() => match changed {
                    Ok(first) => {
                        let mut devices = vec![first];
                        while devices.len() < MAX_ROUND {
                            match changes.try_recv() {
                                Ok(d) => devices.push(d),
                                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                    self.lagged(n, &mut devices);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.push(devices).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let mut devices = Vec::new();
                        self.lagged(n, &mut devices);
                        self.push(devices).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => self.retry_due().await,
            }
        }
    }

    /// Changes were missed: every online device is synced again.
    fn lagged(&self, missed: u64, devices: &mut Vec<DeviceId>) {
        tracing::warn!(
            missed,
            "sync changes lagged; re-syncing every online device"
        );
        devices.extend(self.online.keys().copied());
    }

    fn count_online(&self) {
        self.shared
            .metrics
            .devices_online
            .set(self.online.len() as i64);
    }

    /// One round of inputs: presence first, then the acks (recorded
    /// together), then a push to every device that came online or whose
    /// ack left nothing in flight (it may have made more work: an old PIN
    /// to remove now that its replacement is set).
    async fn on_inputs(&mut self, round: Vec<SyncInput>) {
        let now = Instant::now().into_std();
        let mut to_push = Vec::new();
        let mut acked = Vec::new();
        let mut cmds = Vec::new();
        let mut resets = Vec::new();
        let mut acks = Vec::new();
        for input in round {
            match input {
                SyncInput::Request(site, device, req) => {
                    // Only a connected device asks: it hears its sync.
                    self.online.insert(device, site);
                    self.session.restart(device);
                    if req.full {
                        resets.push(device);
                    }
                    to_push.push(device);
                }
                SyncInput::Online(site, device) => {
                    self.online.insert(device, site);
                    // Whatever was in flight may be stale now: send the
                    // batch of the moment.
                    self.session.restart(device);
                    to_push.push(device);
                }
                SyncInput::Offline(device) => {
                    self.online.remove(&device);
                }
                SyncInput::Ack(device, ack) => acks.push((device, ack)),
            }
        }
        self.count_online();
        // The resets first: an ack of the round then names a version
        // before the reset, stale, and cannot confirm a code the device
        // lost.
        self.reset(resets).await;
        for (device, ack) in acks {
            let engine_version = self.shared.backend.sync_version(device);
            match self.session.ack(device, &ack, engine_version, now) {
                SyncAcked::Stale => {
                    self.shared.metrics.drop(DropReason::StaleAck);
                    tracing::debug!(%device, acked = ack.version, "stale sync ack");
                }
                SyncAcked::Apply { completed } => {
                    acked.push((device, completed));
                    cmds.push(Command::SyncAck {
                        device,
                        results: ack.results,
                    });
                }
            }
        }
        let results = self.shared.backend.sync_record(cmds).await;
        for ((device, completed), r) in acked.into_iter().zip(results) {
            match r {
                Ok(()) => self.shared.metrics.sync_acked.inc(),
                Err(e) => {
                    self.shared.metrics.drop(DropReason::Rejected);
                    tracing::warn!(%device, error = %e, "sync ack refused");
                }
            }
            if let (Some(o), Some(rt)) = (&self.shared.observer, completed) {
                o.sync_acked(device, rt.elapsed, rt.failed);
            }
            if self.session.in_flight(device).is_none() {
                to_push.push(device);
            }
        }
        self.push(to_push).await;
    }

    /// Records a full resync (`SyncReset`) for each of `devices`.
    async fn reset(&mut self, devices: Vec<DeviceId>) {
        let cmds = devices
            .iter()
            .map(|&device| Command::SyncReset { device })
            .collect();
        let results = self.shared.backend.sync_record(cmds).await;
        for (device, r) in devices.into_iter().zip(results) {
            match r {
                Ok(()) => self.shared.metrics.sync_full_resyncs.inc(),
                Err(e) => {
                    self.shared.metrics.drop(DropReason::Rejected);
                    tracing::warn!(%device, error = %e, "full resync refused");
                }
            }
        }
    }

    /// Offers each online device of `devices` its pending batch, records
    /// every send of the round at once, and publishes what was recorded.
    async fn push(&mut self, mut devices: Vec<DeviceId>) {
        devices.sort_unstable();
        devices.dedup();
        let now = Instant::now().into_std();
        let mut sends = Vec::new();
        let mut cmds = Vec::new();
        for device in devices {
            if !self.online.contains_key(&device) {
                continue;
            }
            let Some(batch) = self.shared.backend.pending_sync(device) else {
                continue;
            };
            let Some(send) = self.session.offer(device, &batch, now) else {
                continue;
            };
            let record = send.commands(device);
            sends.push((device, send, record.len()));
            cmds.extend(record);
        }
        let mut results = self.shared.backend.sync_record(cmds).await.into_iter();
        for (device, send, n) in sends {
            // `SyncSent` first, then the tokens' `SyncAck`, if any.
            let sent = results.next().unwrap_or(Err("no answer".into()));
            let confirmed = results.by_ref().take(n - 1).find_map(Result::err);
            if let Err(e) = sent {
                self.session.unsent(device, send.version);
                tracing::warn!(%device, error = %e, "cannot record a sync as sent");
                continue;
            }
            if let Some(e) = confirmed {
                tracing::warn!(%device, error = %e, "cannot confirm token credentials");
            }
            if !send.pushes.is_empty() {
                self.send(device, &send.pushes);
                self.shared.metrics.sync_pushed.inc();
            }
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
        let (mut devices, mut timed_out) = (Vec::new(), Vec::new());
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
                    devices.push(device);
                    timed_out.push(Command::SyncAck { device, results });
                }
            }
        }
        let results = self.shared.backend.sync_record(timed_out).await;
        for (device, r) in devices.into_iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(%device, error = %e, "cannot mark a sync timed out");
            }
        }
    }
}
