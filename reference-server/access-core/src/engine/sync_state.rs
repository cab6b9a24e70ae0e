//! Each code's sync state per device: what a device must change
//! (`pending_sync`), what was sent (`SyncSent`) and what it acknowledged
//! (`SyncAck`).

use super::*;
use crate::sync::SyncSend;

impl SyncSend {
    /// What the engine must record of this send to `device`: the batch
    /// went (`SyncSent`: its codes go `setting`) and its QR and BLE codes,
    /// with nothing to store, are confirmed (`SyncAck`). One definition for
    /// the MQTT gateway, the HTTP device routes and the in-process link.
    pub fn commands(&self, device: DeviceId) -> Vec<Command> {
        let mut cmds = vec![Command::SyncSent {
            device,
            version: self.version,
        }];
        if !self.confirmed.is_empty() {
            cmds.push(Command::SyncAck {
                device,
                results: self.confirmed.clone(),
            });
        }
        cmds
    }
}

impl Engine {
    /// `device`'s code list changed: a new version to sync, and the device
    /// named in the command's `Applied::sync_changed`.
    pub(super) fn bump_sync(&mut self, device: DeviceId) {
        self.devices[device.index()].sync_version += 1;
        self.sync_changed.push(device);
    }

    /// `SyncSent`.
    pub(super) fn sync_sent(&mut self, device: DeviceId, version: u64) -> Result<(), EngineError> {
        let entry = self
            .devices
            .get(device.index())
            .ok_or_else(|| EngineError::not_found("device", device.0))?;
        if version > entry.sync_version {
            return Err(EngineError::invalid("version", "newer than the engine's"));
        }
        for c in self.door_credentials[entry.device.door.index()].clone() {
            if let Some(p) = self.credentials[c.index()].placement_mut(device) {
                if p.state == SyncState::Pending {
                    p.state = SyncState::Setting;
                }
            }
        }
        Ok(())
    }

    /// `SyncReset`: the device lost its codes. Every code it held (`set`)
    /// or failed to take is pending again, so the next batch carries the
    /// whole set and the codes walk `setting` → `set` as the device acks
    /// them; codes being set are in every batch already, and a removal in
    /// progress stays one (removing a code the device lacks is success).
    /// When that changed a code, a new version, so that an ack of a batch
    /// from before the reset cannot confirm it; when it changed nothing (a
    /// device whose codes were never set), the version stays and the
    /// device simply gets its pending batch again.
    pub(super) fn sync_reset(&mut self, device: DeviceId) -> Result<(), EngineError> {
        let entry = self
            .devices
            .get(device.index())
            .ok_or_else(|| EngineError::not_found("device", device.0))?;
        let mut changed = false;
        for c in self.door_credentials[entry.device.door.index()].clone() {
            if let Some(p) = self.credentials[c.index()].placement_mut(device) {
                if matches!(p.state, SyncState::Set | SyncState::Failed(_)) {
                    p.state = SyncState::Pending;
                    changed = true;
                }
            }
        }
        if changed {
            self.bump_sync(device);
        }
        Ok(())
    }

    pub(super) fn sync_ack(
        &mut self,
        device: DeviceId,
        results: &[SyncResult],
    ) -> Result<(), EngineError> {
        get(&self.devices, "device", device.0)?;
        // Check every entry first, so a bad ack changes nothing. A code not
        // placed on this device is, to the device, an unknown one: the
        // answer does not tell it which ids exist elsewhere.
        for r in results {
            let placed = self
                .credentials
                .get(r.credential.index())
                .is_some_and(|c| c.placement(device).is_some());
            if !placed {
                return Err(EngineError::not_found("credential", r.credential.0));
            }
        }
        let mut retire = Vec::new();
        let mut replaced_to_remove = Vec::new();
        for r in results {
            // Every earlier version of the code (a PIN changed twice
            // before this lock confirmed), not only the last.
            let earlier = self.earlier_versions(r.credential);
            let c = &mut self.credentials[r.credential.index()];
            let p = c.placement_mut(device).expect("checked above");
            p.state = match (p.state, r.failure) {
                (SyncState::Removing, None) => SyncState::Removed,
                (SyncState::Removing, Some(_)) => SyncState::Removing,
                (SyncState::Removed, _) => SyncState::Removed,
                (_, None) => {
                    replaced_to_remove.extend(earlier);
                    SyncState::Set
                }
                (_, Some(f)) => SyncState::Failed(f),
            };
            if (c.revoked || c.replaced_by.is_some())
                && c.placements.iter().all(|p| !p.state.on_device())
            {
                retire.push(c.id);
            }
        }
        // The new code is on this lock: the old one may go from it now.
        let mut to_remove = false;
        for old in replaced_to_remove {
            let c = &mut self.credentials[old.index()];
            if let Some(p) = c.placement_mut(device) {
                if p.state.on_device() || p.state == SyncState::Setting {
                    p.state = SyncState::Removing;
                    to_remove = true;
                } else {
                    p.state = SyncState::Removed;
                }
            }
            if c.placements.iter().all(|p| !p.state.on_device()) {
                retire.push(old);
            }
        }
        if to_remove {
            self.bump_sync(device);
        }
        for id in retire {
            self.retire(id);
        }
        Ok(())
    }

    /// The credentials `id` replaced, newest first.
    pub(super) fn earlier_versions(&self, id: CredentialId) -> Vec<CredentialId> {
        let mut out = Vec::new();
        let mut at = self.credentials.get(id.index()).and_then(|c| c.replaces);
        while let Some(prev) = at {
            out.push(prev);
            at = self.credentials[prev.index()].replaces;
        }
        out
    }

    /// What a device must change: codes to set and to remove.
    pub fn pending_sync(&self, device: DeviceId) -> Option<SyncBatch> {
        let entry = self.devices.get(device.index())?;
        let mut batch = SyncBatch {
            version: entry.sync_version,
            ..SyncBatch::default()
        };
        for c in &self.door_credentials[entry.device.door.index()] {
            let cred = &self.credentials[c.index()];
            match cred.placement(device).map(|p| p.state) {
                Some(SyncState::Pending | SyncState::Setting) => {
                    batch.set.push((cred.id, cred.secret));
                    let stay = match cred.schedule {
                        Schedule::Stay { stay } => Some((
                            &self.stays[stay.index()],
                            self.guest_settings_for(&entry.device),
                        )),
                        _ => None,
                    };
                    let tz = &self.sites[cred.site.index()].tz;
                    if let Some(v) = SyncValidity::of(cred, tz, stay) {
                        batch.validity.insert(cred.id, v);
                    }
                }
                Some(SyncState::Removing) => batch.remove.push(cred.id),
                _ => {}
            }
        }
        Some(batch)
    }
}
