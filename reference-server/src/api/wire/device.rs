//! The device's own HTTP routes: a credential check (`validate`, the MQTT
//! `auth/req` and `auth/resp` bodies) and the sync of its codes for readers
//! without MQTT (the `sync` and `sync/ack` bodies). Authenticated with the
//! device's secret, not a user's token.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::CredentialId;
use crate::protocol::{SyncCode, SyncPush};

/// `GET /v1/devices/{device}/sync`: the device's pending codes as one
/// `sync` message (unsplit: HTTP has no MQTT payload limit), plus the QR
/// and BLE credentials to confirm with them (a device stores nothing for
/// those; the MQTT gateway confirms them itself). The `sync` message's
/// fields are spelled out rather than flattened: `SyncPush` refuses
/// unknown fields, `tokens` among them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceSync {
    pub version: u64,
    #[serde(default)]
    pub set: Vec<SyncCode>,
    #[serde(default)]
    pub remove: Vec<CredentialId>,
    #[serde(default)]
    pub tokens: Vec<CredentialId>,
}

impl DeviceSync {
    pub fn new(push: SyncPush, tokens: Vec<CredentialId>) -> DeviceSync {
        DeviceSync {
            version: push.version,
            set: push.set,
            remove: push.remove,
            tokens,
        }
    }

    /// The `sync` message and the token credentials.
    pub fn split(self) -> (SyncPush, Vec<CredentialId>) {
        let push = SyncPush {
            version: self.version,
            set: self.set,
            remove: self.remove,
        };
        (push, self.tokens)
    }
}

/// `GET /v1/devices/{device}/sync?full=`.
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeviceSyncQuery {
    /// `true`: the device lost its codes (a reboot with an empty store);
    /// every code it should hold is sent again and counts as not set
    /// until acked (protocol version 2). Default `false`: the pending
    /// delta.
    #[serde(default)]
    pub full: Option<bool>,
}
