//! Credential sync between the engine and a device, without I/O.
//!
//! [`SyncBatch`] is what a device must change to match the engine (codes to
//! set and to remove, under one version); [`SyncPush::from_batch`] cuts it
//! into the wire's `sync` messages.

use crate::domain::{CredentialId, Secret};
use crate::protocol::{
    encode, SyncCode, SyncPush, SyncValidity, WireSecret, MAX_PAYLOAD_BYTES, MAX_SYNC_CODES,
};

/// What a device must change to match the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncBatch {
    /// Bumped on every change for this device.
    pub version: u64,
    pub set: Vec<(CredentialId, Secret)>,
    pub remove: Vec<CredentialId>,
    /// The validity of the codes in `set` that have one (by time; see
    /// `SyncValidity`), for devices that decide offline.
    pub validity: std::collections::BTreeMap<CredentialId, SyncValidity>,
}

impl SyncBatch {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

// The wire form of a batch is defined here rather than in `protocol`, so
// that the wire types do not depend on the engine's.
impl SyncPush {
    /// The messages that carry `batch`, each within `MAX_SYNC_CODES` codes
    /// and within `MAX_PAYLOAD_BYTES` (codes with a validity are bigger, so
    /// a message may hold fewer of them); all share the batch's
    /// version. Codes with nothing to store (QR, BLE) are left out; a batch
    /// with nothing to send gives no message.
    pub fn from_batch(batch: &SyncBatch) -> Vec<SyncPush> {
        let codes: Vec<SyncCode> = batch
            .set
            .iter()
            .filter_map(|(credential, secret)| {
                Some(SyncCode {
                    credential: *credential,
                    secret: WireSecret::from_secret(secret)?,
                    valid: batch.validity.get(credential).cloned(),
                })
            })
            .collect();
        // Room for the envelope (`version`, keys, brackets) around the codes.
        const CODES_BUDGET_BYTES: usize = MAX_PAYLOAD_BYTES - 128;
        let mut pushes: Vec<SyncPush> = Vec::new();
        let mut set: Vec<SyncCode> = Vec::new();
        let mut set_bytes = 0;
        for code in codes {
            // +1: the comma between codes.
            let bytes = encode(&code).len() + 1;
            if set.len() == MAX_SYNC_CODES
                || (!set.is_empty() && set_bytes + bytes > CODES_BUDGET_BYTES)
            {
                pushes.push(SyncPush {
                    version: batch.version,
                    set: std::mem::take(&mut set),
                    remove: Vec::new(),
                });
                set_bytes = 0;
            }
            set_bytes += bytes;
            set.push(code);
        }
        if !set.is_empty() {
            pushes.push(SyncPush {
                version: batch.version,
                set,
                remove: Vec::new(),
            });
        }
        pushes.extend(batch.remove.chunks(MAX_SYNC_CODES).map(|chunk| SyncPush {
            version: batch.version,
            set: Vec::new(),
            remove: chunk.to_vec(),
        }));
        pushes
    }
}
