//! The credential check (`validate`) and the rules it runs, in order.

use super::*;

impl Engine {
    /// Decides one credential check at `check.device`, at time `now`.
    ///
    /// Order of the rules (the first that fails is the reason): device known;
    /// keypad not locked out; credential found (and on this lock); revoked;
    /// disabled; holder disabled; door; floor; validity period and window;
    /// stay (check-in, check-out); use count. Only unknown PINs count as
    /// brute-force tries; a grant clears the keypad's count.
    pub fn validate(&self, check: &Check<'_>, now: Timestamp) -> Decision {
        let id = check.device;
        let Some(dev) = self.devices_hot.get(id.index()) else {
            return Decision::deny(DenyReason::DeviceUnknown);
        };
        match check.presented {
            Presented::Pin(pin) => {
                // The lockout state is read from the hot table; its mutex is
                // taken only to record a wrong try or to clear earlier ones.
                // A lockout answer says when it ends, so the device can end
                // it when the engine does.
                let until_s = dev.locked_until_s.load(Ordering::Relaxed);
                if now.as_second() < until_s {
                    return Decision::deny_locked(DenyReason::LockedOut, until_s);
                }
                let slot = self.device_pins.find(device_pin_key(id, pin));
                if let Some(s) = slot.filter(|s| s.flags & KeypadSlot::FAST != 0) {
                    let now_ns = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
                    if check.floor.is_none() && now_ns != i64::MIN && now_ns != i64::MAX {
                        let d = self.evaluate_keypad(s, now, now_ns);
                        if d.is_granted() && dev.wrong_tries.load(Ordering::Relaxed) {
                            self.lockouts[id.index()].lock().record_success();
                            dev.wrong_tries.store(false, Ordering::Relaxed);
                        }
                        return d;
                    }
                }
                let found = slot.map(|s| &self.credentials[s.credential.index()]);
                let Some(cred) = found.filter(|c| !c.unassigned_fallback && usable_on(c, id, dev))
                else {
                    let mut lockout = self.lockouts[id.index()].lock();
                    // Another check may have locked the keypad meanwhile.
                    if lockout.is_locked(now) {
                        let until_s = lockout.locked_until().map_or(0, |t| t.as_second());
                        return Decision::deny_locked(DenyReason::LockedOut, until_s);
                    }
                    dev.wrong_tries.store(true, Ordering::Relaxed);
                    if lockout.record_wrong(now, &self.sites[dev.site.index()].settings.lockout) {
                        let until_s = lockout
                            .locked_until()
                            .map_or(now.as_second(), |t| t.as_second());
                        // Later, except at the last second a `Timestamp`
                        // holds, where a lockout cannot outlast its start.
                        debug_assert!(until_s >= now.as_second(), "a lockout ends after it starts");
                        dev.locked_until_s.store(until_s, Ordering::Relaxed);
                        // The try that locked the keypad says so.
                        return Decision::deny_locked(DenyReason::WrongPin, until_s);
                    }
                    return Decision::deny(DenyReason::WrongPin);
                };
                // The index is per door, so the door rule already holds.
                let d = self.evaluate(cred, id, dev, true, check.floor, now);
                if d.is_granted() && dev.wrong_tries.load(Ordering::Relaxed) {
                    self.lockouts[id.index()].lock().record_success();
                    dev.wrong_tries.store(false, Ordering::Relaxed);
                }
                d
            }
            Presented::Card(number) => {
                // Keyed by this device: found means the card's credential
                // opens this door (`device_cards` mirrors `card_index`).
                if let Some(s) = self.device_cards.find(card_key(id, number)) {
                    let c = &self.credentials[s.credential.index()];
                    if !usable_on(c, id, dev) {
                        return Decision::deny(DenyReason::UnknownCredential);
                    }
                    return self.evaluate(c, id, dev, true, check.floor, now);
                }
                // Not here: a card of another door of the site says so.
                let found = self
                    .card_index
                    .get(&(dev.site, number))
                    .map(|c| &self.credentials[c.index()]);
                match found {
                    Some(c) if c.door_slot(dev.door).is_none() => {
                        Decision::deny(DenyReason::DoorNotAllowed)
                    }
                    _ => Decision::deny(DenyReason::UnknownCredential),
                }
            }
            Presented::Qr(text) | Presented::Ble(text) => {
                let want = if matches!(check.presented, Presented::Qr(_)) {
                    TokenKind::Qr
                } else {
                    TokenKind::Ble
                };
                // The claimed credential's row is fetched while the MAC is
                // computed (nothing is read from it before the MAC holds).
                let hint = |c: CredentialId| {
                    if let Some(row) = self.credentials.get(c.index()) {
                        crate::huge::prefetch(row);
                    }
                };
                let claims = match self.token_key.verify_with_hint(text, hint) {
                    Ok(c) if c.kind == want => c,
                    _ => return Decision::deny(DenyReason::UnknownCredential),
                };
                let Some(cred) = self.credentials.get(claims.credential.index()) else {
                    return Decision::deny(DenyReason::UnknownCredential);
                };
                if cred.secret
                    != (Secret::Token {
                        version: claims.version,
                    })
                {
                    // A token of an earlier issue of this credential.
                    return Decision::deny(DenyReason::Revoked);
                }
                self.evaluate(cred, id, dev, false, check.floor, now)
            }
        }
    }

    pub(super) fn guest_settings_for(&self, dev: &Device) -> GuestSettings {
        match dev.linked_to {
            Some(lock) => self.devices[lock.index()].device.guest,
            None => dev.guest,
        }
    }

    pub(super) fn stay_check(
        &self,
        c: &Credential,
        device: DeviceId,
        now: Timestamp,
    ) -> Result<(), DenyReason> {
        let Schedule::Stay { stay } = c.schedule else {
            return Ok(());
        };
        let s = &self.stays[stay.index()];
        let g = self.guest_settings_for(&self.devices[device.index()].device);
        if g.revoke_access_on_check_out && (s.checked_out || now >= s.check_out_at) {
            return Err(DenyReason::CheckedOut);
        }
        if g.prevent_access_until_checked_in && !s.checked_in && now < s.check_in_at {
            return Err(DenyReason::NotCheckedIn);
        }
        Ok(())
    }

    pub(super) fn floor_allowed(&self, scope: &FloorScope, floor: FloorId, depth: u8) -> bool {
        match scope {
            FloorScope::Any => true,
            FloorScope::Only(fs) => fs.contains(&floor),
            // Bounded: a chain of "follow" links cannot loop forever.
            FloorScope::FollowHolder(h) => {
                depth < 4 && self.floor_allowed(&self.holders[h.index()].floors, floor, depth + 1)
            }
        }
    }

    /// `evaluate` for a `FAST` keypad slot and no floor asked: the same rules
    /// in the same order, from the slot. Revoked, disabled, stays and
    /// per-door counts never make a `FAST` slot; the door holds by the
    /// lookup; a limited code takes its use from the credential's counter.
    #[inline]
    pub(super) fn evaluate_keypad(&self, s: &KeypadSlot, now: Timestamp, now_ns: i64) -> Decision {
        if s.flags & KeypadSlot::LIMITED != 0 {
            // Its use count is read below: fetch it while the time is checked.
            crate::huge::prefetch(&self.credentials[s.credential.index()].uses);
        }
        if self.holders[s.holder.index()].disabled {
            return Decision::deny(DenyReason::HolderDisabled);
        }
        let weekly = (s.flags & KeypadSlot::WEEKLY != 0).then_some((s.days, s.window));
        let tz = &self.sites[s.site.index()].tz;
        if let Err(r) = Schedule::check_time_parts(s.bounds_ns, weekly, now, now_ns, tz) {
            return Decision::deny(r);
        }
        if s.flags & KeypadSlot::LIMITED != 0 {
            let c = &self.credentials[s.credential.index()];
            // A PIN is never a replayed token: the reason stays as it is.
            if let Err(r) = c.uses.try_take(UseLimit::Total(s.max_uses), 0) {
                return Decision::deny(r);
            }
        }
        Decision::Granted(Grant {
            credential: s.credential,
            holder: s.holder,
            origin: s.origin,
            kind: CredentialKind::Pin,
        })
    }

    /// The rules after lookup. `door_known`: the lookup was by this door.
    pub(super) fn evaluate(
        &self,
        c: &Credential,
        id: DeviceId,
        dev: &DeviceHot,
        door_known: bool,
        floor: Option<FloorId>,
        now: Timestamp,
    ) -> Decision {
        if c.revoked {
            return Decision::deny(DenyReason::Revoked);
        }
        if c.disabled {
            return Decision::deny(DenyReason::Disabled);
        }
        if self.holders[c.holder.index()].disabled {
            return Decision::deny(DenyReason::HolderDisabled);
        }
        if !door_known && c.door_slot(dev.door).is_none() {
            return Decision::deny(DenyReason::DoorNotAllowed);
        }
        if let Some(f) = floor {
            let served = self.doors[dev.door.index()].lift_floors.contains(&f);
            if !served || !self.floor_allowed(&c.floors, f, 0) {
                return Decision::deny(DenyReason::FloorNotAllowed);
            }
        }
        if let Err(r) = c.schedule.check_time(now, &self.sites[c.site.index()].tz) {
            return Decision::deny(r);
        }
        if let Err(r) = self.stay_check(c, id, now) {
            return Decision::deny(r);
        }
        let limit = c.schedule.use_limit();
        let slot = match limit {
            UseLimit::PerDoor(_) => c.door_slot(dev.door).unwrap_or(usize::MAX),
            _ => 0,
        };
        if let Err(r) = c.uses.try_take(limit, slot) {
            let one_time = matches!(limit, UseLimit::Total(1) | UseLimit::PerDoor(1));
            let token = matches!(c.kind, CredentialKind::Qr | CredentialKind::Ble);
            return Decision::deny(if one_time && token {
                DenyReason::Replayed
            } else {
                r
            });
        }
        Decision::Granted(Grant {
            credential: c.id,
            holder: c.holder,
            origin: c.origin,
            kind: c.kind,
        })
    }

    /// The signed token text of a QR or BLE credential (what is shared).
    pub fn token(&self, id: CredentialId) -> Option<String> {
        let c = self.credentials.get(id.index())?;
        let kind = match c.kind {
            CredentialKind::Qr => TokenKind::Qr,
            CredentialKind::Ble => TokenKind::Ble,
            _ => return None,
        };
        let Secret::Token { version } = c.secret else {
            return None;
        };
        Some(self.token_key.sign(&TokenClaims {
            kind,
            credential: id,
            version,
            expires: c.schedule.bounds().1,
        }))
    }

    /// What the code list shows in its status column.
    pub fn active_status(&self, c: &Credential, now: Timestamp) -> ActiveStatus {
        if c.revoked || c.replaced_by.is_some() {
            return ActiveStatus::Revoked;
        }
        if c.disabled || self.holders[c.holder.index()].disabled {
            return ActiveStatus::Disabled;
        }
        if let Schedule::Stay { stay } = c.schedule {
            let s = &self.stays[stay.index()];
            if s.checked_out || now >= s.check_out_at {
                return ActiveStatus::Expired;
            }
            if !s.checked_in && now < s.check_in_at {
                return ActiveStatus::Scheduled;
            }
        }
        let exhausted = match c.schedule.use_limit() {
            UseLimit::Total(n) => c.uses.total() >= n,
            UseLimit::PerDoor(n) => (0..c.doors.len()).all(|i| c.uses.at_door(i).unwrap_or(0) >= n),
            UseLimit::Unlimited => false,
        };
        match c.schedule.bounds() {
            (Some(s), _) if now < s => ActiveStatus::Scheduled,
            (_, Some(e)) if now >= e => ActiveStatus::Expired,
            _ if exhausted => ActiveStatus::Expired,
            _ => ActiveStatus::Active,
        }
    }

    /// The keypad's lockout end, if it is locked at `now`.
    pub fn locked_until(&self, device: DeviceId, now: Timestamp) -> Option<Timestamp> {
        let l = self.lockouts.get(device.index())?.lock();
        l.is_locked(now).then(|| l.locked_until()).flatten()
    }
}
