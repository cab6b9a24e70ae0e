//! Remote commands (Open Door, Lock, a sandbox action): sent on `cmd` (QoS 1, never
//! retained: a retained unlock would replay when the lock restarts) and
//! answered on `cmd/ack` with the same id. An answer counts only from the
//! device the command went to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use super::backend::Backend;
use super::Shared;
use crate::domain::DeviceId;
use crate::protocol::{
    self, Channel, CommandAck, CommandKind, CommandResult, DeviceCommand, SimAction,
};

/// Most commands waiting for an ack at once; more are answered `offline`
/// at once rather than queued without bound.
pub const MAX_PENDING_COMMANDS: usize = 10_000;

/// How a command leaves the gateway (object-safe, so the commander needs
/// no backend type).
pub(crate) trait CommandOut: Send + Sync {
    /// Publishes `cmd` to `device`; false for an unknown device.
    fn send_command(&self, device: DeviceId, cmd: &DeviceCommand) -> bool;
    fn metrics(&self) -> &super::GatewayMetrics;
}

impl<B: Backend> CommandOut for Shared<B> {
    fn send_command(&self, device: DeviceId, cmd: &DeviceCommand) -> bool {
        let Some(site) = self.backend.device_site(device) else {
            return false;
        };
        let topic = protocol::topic(&self.prefix, site, device, Channel::Cmd);
        self.outbox.publish(0, &topic, 1, protocol::encode(cmd));
        true
    }

    fn metrics(&self) -> &super::GatewayMetrics {
        &self.metrics
    }
}

pub struct Commander {
    out: Arc<dyn CommandOut>,
    timeout: Duration,
    next_id: AtomicU64,
    pending: Mutex<FxHashMap<(DeviceId, u64), oneshot::Sender<CommandResult>>>,
}

impl Commander {
    pub(crate) fn new(out: Arc<dyn CommandOut>, timeout: Duration) -> Commander {
        Commander {
            out,
            timeout,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(FxHashMap::default()),
        }
    }

    /// Sends `command` and waits for the device's answer; `Offline` when
    /// the device is unknown, does not answer within the timeout, or too
    /// many commands are waiting.
    pub async fn send(&self, device: DeviceId, command: CommandKind) -> CommandResult {
        self.send_with(device, command, None).await
    }

    /// Sends a sandbox action (`command: simulate`) and waits for the
    /// device's answer, as [`Commander::send`].
    pub async fn simulate(&self, device: DeviceId, action: SimAction) -> CommandResult {
        self.send_with(device, CommandKind::Simulate, Some(action))
            .await
    }

    async fn send_with(
        &self,
        device: DeviceId,
        command: CommandKind,
        simulate: Option<SimAction>,
    ) -> CommandResult {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_PENDING_COMMANDS {
                return CommandResult::Offline;
            }
            pending.insert((device, id), tx);
        }
        if !self.out.send_command(
            device,
            &DeviceCommand {
                id,
                command,
                simulate,
            },
        ) {
            self.pending.lock().remove(&(device, id));
            return CommandResult::Offline;
        }
        self.out.metrics().commands_sent.inc();
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            _ => {
                self.pending.lock().remove(&(device, id));
                self.out.metrics().commands_unanswered.inc();
                CommandResult::Offline
            }
        }
    }

    /// An ack from `device`; ignored unless a command with that id went to
    /// that very device.
    pub(crate) fn resolve(&self, device: DeviceId, ack: CommandAck) {
        if let Some(tx) = self.pending.lock().remove(&(device, ack.id)) {
            let _ = tx.send(ack.result);
        }
    }
}
