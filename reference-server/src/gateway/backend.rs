//! What the gateway needs from the server, as one trait: the seam between
//! MQTT handling and the service (engine + durable store). The server's
//! `Service` implements it; the gateway never touches the engine directly.

use std::future::Future;

use crate::domain::{CredentialId, DeviceId, SiteId};
use crate::engine::{SyncBatch, SyncResult};
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

    /// Records that the batch of `version` was sent.
    fn sync_sent(
        &self,
        device: DeviceId,
        version: u64,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Applies a device's sync results (also the gateway's `timed_out`).
    fn sync_ack(
        &self,
        device: DeviceId,
        results: Vec<SyncResult>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Devices whose credential set changed.
    fn sync_changes(&self) -> tokio::sync::broadcast::Receiver<DeviceId>;
}

/// The results that mark every code of a batch failed with `failure`.
pub fn fail_all(
    credentials: impl IntoIterator<Item = CredentialId>,
    failure: crate::domain::SyncFailure,
) -> Vec<SyncResult> {
    credentials
        .into_iter()
        .map(|credential| SyncResult {
            credential,
            failure: Some(failure),
        })
        .collect()
}
