//! What the gateway needs from the server, as one trait: the seam between
//! MQTT handling and the service (engine + durable store). The server's
//! `Service` implements it; the gateway never touches the engine directly.

use std::future::Future;

use crate::domain::{DeviceId, SiteId};
use crate::engine::{Command, SyncBatch};
use crate::protocol::{AuthRequest, AuthResponse, Event, Status};

/// A refusal from the service (bad ack, store failure): logged and counted,
/// never fatal to the gateway.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

pub trait Backend: Send + Sync + 'static {
    /// The site a device is on; `None` for an unknown device.
    fn device_site(&self, device: DeviceId) -> Option<SiteId>;

    /// One credential check, answered for the device.
    fn check(
        &self,
        device: DeviceId,
        req: &AuthRequest,
    ) -> impl Future<Output = AuthResponse> + Send;

    /// Logs an event once per (device, seq): `Ok(false)` for a redelivery.
    fn record_event(
        &self,
        device: DeviceId,
        ev: &Event,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    fn set_status(
        &self,
        device: DeviceId,
        st: &Status,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// What the device must change (empty batch: nothing).
    fn pending_sync(&self, device: DeviceId) -> Option<SyncBatch>;

    /// The device's current sync version (what an ack must name).
    fn sync_version(&self, device: DeviceId) -> Option<u64>;

    /// Records sync bookkeeping as the system (`SyncSent`, `SyncAck`,
    /// the gateway's `timed_out`), every command of a round at once: one
    /// answer per command, in order.
    fn sync_record(
        &self,
        cmds: Vec<Command>,
    ) -> impl Future<Output = Vec<Result<(), BackendError>>> + Send;

    /// Devices whose credential set changed.
    fn sync_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId>;

    /// A remote command from Home Assistant, through the same path as the
    /// admin API's Open Door (authorized, sent, logged in the activity
    /// log): the command's result.
    fn remote_command(
        &self,
        device: DeviceId,
        kind: crate::protocol::CommandKind,
    ) -> impl Future<Output = Result<crate::protocol::CommandResult, BackendError>> + Send;

    /// Home Assistant's `pin_code` change of one slot of a lock, through
    /// the admin API's code commands (`Service::pin_slot`).
    fn pin_slot(
        &self,
        device: DeviceId,
        slot: u16,
        change: crate::service::SlotChange,
    ) -> impl Future<Output = Result<(), crate::service::PinSlotError>> + Send;

    /// A lock's occupied PIN slots (Home Assistant's `users` state).
    fn pin_slots(&self, device: DeviceId) -> Vec<crate::service::SlotView>;

    /// The locks with a PIN slot holding the code `code` (any version).
    fn pin_slot_locks(&self, code: crate::domain::CredentialId) -> Vec<DeviceId>;

    /// Every event committed to the event log from now on (the bridge
    /// follows the access-code ones).
    fn logged_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<std::sync::Arc<crate::events::Event>>;

    /// Every lock, for the Home Assistant bridge.
    fn locks(&self) -> Vec<super::LockInfo>;

    /// One lock; `None` for an unknown device or one that is not a lock.
    fn lock_info(&self, device: DeviceId) -> Option<super::LockInfo>;
}

fn lock_info(svc: &crate::service::Service, d: &crate::domain::Device) -> Option<super::LockInfo> {
    (d.kind == crate::domain::DeviceKind::Lock).then(|| super::LockInfo {
        device: d.id,
        site: d.site,
        name: d.name.clone(),
        location: d.location.clone(),
        state: svc.device_state(d.id),
    })
}

/// The server's service is the gateway's backend: checks go through it
/// (durable uses, activity log, metrics), sync state changes are its
/// commands, applied as the system.
impl Backend for crate::service::Service {
    fn device_site(&self, device: DeviceId) -> Option<SiteId> {
        self.engine().device(device).map(|d| d.site)
    }

    async fn check(&self, device: DeviceId, req: &AuthRequest) -> AuthResponse {
        crate::service::Service::check(self, device, req, crate::service::Transport::Mqtt).await
    }

    async fn record_event(&self, device: DeviceId, ev: &Event) -> Result<bool, BackendError> {
        Ok(crate::service::Service::record_event(self, device, ev).await?)
    }

    async fn set_status(&self, device: DeviceId, st: &Status) -> Result<(), BackendError> {
        Ok(crate::service::Service::set_status(self, device, st).await?)
    }

    fn pending_sync(&self, device: DeviceId) -> Option<SyncBatch> {
        crate::service::Service::pending_sync(self, device)
    }

    fn sync_version(&self, device: DeviceId) -> Option<u64> {
        crate::service::Service::sync_version(self, device)
    }

    async fn sync_record(&self, cmds: Vec<Command>) -> Vec<Result<(), BackendError>> {
        let n = cmds.len();
        match self.apply_batch(cmds).await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map(|_| ()).map_err(BackendError::from))
                .collect(),
            // The store failed: none of them is durable.
            Err(e) => (0..n).map(|_| Err(e.to_string().into())).collect(),
        }
    }

    fn sync_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId> {
        crate::service::Service::sync_changes(self)
    }

    async fn remote_command(
        &self,
        device: DeviceId,
        kind: crate::protocol::CommandKind,
    ) -> Result<crate::protocol::CommandResult, BackendError> {
        // The bridge acts for the server's own Home Assistant account.
        Ok(crate::service::Service::remote_command(
            self,
            &crate::domain::Actor::System,
            device,
            kind,
        )
        .await?)
    }

    async fn pin_slot(
        &self,
        device: DeviceId,
        slot: u16,
        change: crate::service::SlotChange,
    ) -> Result<(), crate::service::PinSlotError> {
        crate::service::Service::pin_slot(self, device, slot, change).await
    }

    fn pin_slots(&self, device: DeviceId) -> Vec<crate::service::SlotView> {
        crate::service::Service::pin_slots(self, device)
    }

    fn pin_slot_locks(&self, code: crate::domain::CredentialId) -> Vec<DeviceId> {
        crate::service::Service::pin_slot_locks(self, code)
    }

    fn logged_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<std::sync::Arc<crate::events::Event>> {
        self.store().subscribe_events()
    }

    fn locks(&self) -> Vec<super::LockInfo> {
        self.engine()
            .devices()
            .filter_map(|d| lock_info(self, d))
            .collect()
    }

    fn lock_info(&self, device: DeviceId) -> Option<super::LockInfo> {
        self.engine()
            .device(device)
            .and_then(|d| lock_info(self, d))
    }
}
