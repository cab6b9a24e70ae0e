//! Deleting sites, doors, devices and holders, and the partial updates of
//! site settings and holders.
//!
//! Ids are dense indexes, so a deleted thing stays in its vector and is
//! named in `removed`: `org_of` answers it as unknown (every route and
//! command resolves through it), and the list readers skip it. Deleting
//! never leaves a reference dangling, by one rule each:
//!
//! - a **site** goes only without doors (its buildings, floors and units
//!   go with it: nothing else points at them once its doors are gone);
//! - a **door** goes only without devices and without live codes (revoke
//!   or change them first: a code opens every one of its doors or none);
//! - a **device** goes at once unless another device is linked to it; the
//!   codes at its door stay (the door keeps its other devices, and a new
//!   lock gets them); its placements end `removed` (nobody can confirm
//!   for a device that is gone), and its unassigned fallback codes, which
//!   lived only on it, are retired;
//! - a **holder** goes only without live codes;
//! - an **organization** goes with everything in it (a load test's fleet
//!   torn down, an account closed): its live codes are revoked, then its
//!   devices (those linked to another first), doors, holders and sites
//!   deleted by the rules above, and its members lose their roles there.
//!
//! Each refusal is `Conflict` (409 over HTTP) naming what is in the way.

use super::*;

/// `PatchSiteSettings`'s fields, and the body of `PATCH
/// /v1/sites/{site}/settings`: each one given replaces that setting, the
/// others stay (`PUT` replaces them all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteSettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub six_digit_pins: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_pins: Option<bool>,
    /// The whole lockout policy, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout: Option<LockoutPolicy>,
}

impl SiteSettingsPatch {
    /// `current` with this patch's fields in place.
    pub fn merged(&self, current: SiteSettings) -> SiteSettings {
        SiteSettings {
            six_digit_pins: self.six_digit_pins.unwrap_or(current.six_digit_pins),
            custom_pins: self.custom_pins.unwrap_or(current.custom_pins),
            lockout: self.lockout.unwrap_or(current.lockout),
        }
    }
}

impl Engine {
    /// Is `r` deleted?
    pub fn is_removed(&self, r: Ref) -> bool {
        self.removed.contains(&r)
    }

    /// A live (neither revoked nor replaced) code of `c`'s?
    fn live(c: &Credential) -> bool {
        !c.revoked && c.replaced_by.is_none()
    }

    /// `PatchSiteSettings`: logged as the `UpdateSiteSettings` it amounts
    /// to, so a replay does not depend on the settings before.
    pub(super) fn patch_site_settings(
        &mut self,
        site: SiteId,
        patch: SiteSettingsPatch,
    ) -> Result<Applied, EngineError> {
        let current = get(&self.sites, "site", site.0)?.settings;
        let settings = patch.merged(current);
        self.update_site_settings(site, settings)?;
        Ok(Applied {
            outcome: Outcome::Done,
            logged: Command::UpdateSiteSettings { site, settings },
            sync_changed: Vec::new(),
        })
    }

    /// `UpdateHolder`: the fields given, each checked as at creation.
    pub(super) fn update_holder(
        &mut self,
        holder: HolderId,
        name: Option<&str>,
        floors: Option<&FloorScope>,
        disabled: Option<bool>,
    ) -> Result<(), EngineError> {
        get(&self.holders, "holder", holder.0)?;
        if let Some(n) = name {
            check_name("name", n)?;
        }
        if let Some(f) = floors {
            if *f == FloorScope::FollowHolder(holder) {
                return Err(EngineError::invalid(
                    "floors",
                    "a holder cannot follow itself",
                ));
            }
            self.check_floor_scope(f)?;
        }
        let h = &mut self.holders[holder.index()];
        if let Some(n) = name {
            h.name = n.to_owned();
        }
        if let Some(f) = floors {
            h.floors = f.clone();
        }
        if let Some(d) = disabled {
            h.disabled = d;
        }
        Ok(())
    }

    /// `DeleteOrganization`: everything in it, by the rules of each kind.
    pub(super) fn delete_organization(&mut self, org: OrgId) -> Result<(), EngineError> {
        get(&self.orgs, "organization", org.0)?;
        let codes: Vec<CredentialId> = self
            .credentials
            .iter()
            .filter(|c| c.org == org && Engine::live(c))
            .map(|c| c.id)
            .collect();
        for c in codes {
            self.revoke(c)?;
        }
        let sites: Vec<SiteId> = self
            .sites
            .iter()
            .filter(|s| s.org == org && !self.is_removed(Ref::Site(s.id)))
            .map(|s| s.id)
            .collect();
        let doors: Vec<DoorId> = self
            .doors
            .iter()
            .filter(|d| sites.contains(&d.site) && !self.is_removed(Ref::Door(d.id)))
            .map(|d| d.id)
            .collect();
        for d in &doors {
            // A device another is linked to goes after it: at most as
            // many rounds as the door has devices.
            while let Some(free) = self.door_devices[d.index()].iter().copied().find(|x| {
                !self.door_devices[d.index()]
                    .iter()
                    .any(|y| self.devices[y.index()].device.linked_to == Some(*x))
            }) {
                self.delete_device(free)?;
            }
            self.delete_door(*d)?;
        }
        let holders: Vec<HolderId> = self
            .holders
            .iter()
            .filter(|h| h.org == org && !self.is_removed(Ref::Holder(h.id)))
            .map(|h| h.id)
            .collect();
        for h in holders {
            self.delete_holder(h)?;
        }
        for s in sites {
            self.delete_site(s)?;
        }
        self.roles.retain(|(_, o), _| *o != org);
        self.removed.insert(Ref::Organization(org));
        Ok(())
    }

    /// Every device ever made in `org`, deleted ones too (a deleted
    /// organization's devices' secrets are forgotten by this list).
    pub fn devices_ever_in(&self, org: OrgId) -> Vec<DeviceId> {
        self.devices
            .iter()
            .filter(|d| self.sites.get(d.device.site.index()).map(|s| s.org) == Some(org))
            .map(|d| d.device.id)
            .collect()
    }

    /// `DeleteSite`.
    pub(super) fn delete_site(&mut self, site: SiteId) -> Result<(), EngineError> {
        get(&self.sites, "site", site.0)?;
        let doors = self
            .doors
            .iter()
            .filter(|d| d.site == site && !self.is_removed(Ref::Door(d.id)))
            .count();
        if doors > 0 {
            return Err(EngineError::conflict(
                "site",
                format!("the site still has {doors} doors: delete them first"),
            ));
        }
        self.removed.insert(Ref::Site(site));
        Ok(())
    }

    /// `DeleteDoor`.
    pub(super) fn delete_door(&mut self, door: DoorId) -> Result<(), EngineError> {
        get(&self.doors, "door", door.0)?;
        let devices = self.door_devices[door.index()].len();
        if devices > 0 {
            return Err(EngineError::conflict(
                "door",
                format!("the door still has {devices} devices: delete them first"),
            ));
        }
        let codes = self
            .credentials_at(door)
            .filter(|c| Engine::live(c))
            .count();
        if codes > 0 {
            return Err(EngineError::conflict(
                "door",
                format!("{codes} live codes open this door: revoke them first"),
            ));
        }
        self.removed.insert(Ref::Door(door));
        Ok(())
    }

    /// `DeleteHolder`.
    pub(super) fn delete_holder(&mut self, holder: HolderId) -> Result<(), EngineError> {
        get(&self.holders, "holder", holder.0)?;
        let codes = self
            .credentials
            .iter()
            .filter(|c| c.holder == holder && Engine::live(c))
            .count();
        if codes > 0 {
            return Err(EngineError::conflict(
                "holder",
                format!("the holder still has {codes} live codes: revoke them first"),
            ));
        }
        self.removed.insert(Ref::Holder(holder));
        Ok(())
    }

    /// `DeleteDevice`.
    pub(super) fn delete_device(&mut self, device: DeviceId) -> Result<(), EngineError> {
        let door = get(&self.devices, "device", device.0)?.device.door;
        let linked = self.door_devices[door.index()]
            .iter()
            .filter(|d| self.devices[d.index()].device.linked_to == Some(device))
            .count();
        if linked > 0 {
            return Err(EngineError::conflict(
                "device",
                format!("{linked} devices are linked to this one: delete them first"),
            ));
        }
        // Its keypad and card entries go before it leaves the door (they
        // are keyed by device and found through the door).
        let at_door = self.door_credentials[door.index()].clone();
        for c in &at_door {
            let cred = &self.credentials[c.index()];
            match cred.secret {
                Secret::Pin(p) if self.pin_index.get(pin_key(door, p)) == Some(*c) => {
                    self.device_pins.take(device_pin_key(device, p));
                }
                Secret::Card(n) if self.card_index.get(&(cred.site, n)) == Some(c) => {
                    self.device_cards.take(card_key(device, n));
                }
                _ => {}
            }
        }
        self.door_devices[door.index()].retain(|d| *d != device);
        let pool = std::mem::take(&mut self.devices[device.index()].fallback_pool);
        let mut retire = Vec::new();
        for c in at_door {
            let cred = &mut self.credentials[c.index()];
            if let Some(p) = cred.placement_mut(device) {
                p.state = SyncState::Removed;
            }
            let pooled = pool.contains(&c);
            let gone = !Engine::live(cred) || pooled;
            if gone && cred.placements.iter().all(|p| !p.state.on_device()) {
                retire.push(c);
            }
        }
        for c in retire {
            self.retire(c);
        }
        self.devices[device.index()].removed = true;
        self.removed.insert(Ref::Device(device));
        Ok(())
    }
}
