//! The keypad and card-reader lookups: PIN and card keys, the packed
//! per-device row a check reads (`DeviceHot`), the 64-byte slot a common
//! PIN grant decides from (`KeypadSlot`) and the per-device card slot
//! (`CardSlot`), kept in step with the credentials by `apply`.

use super::*;

/// Does the device hold this code (or not need to)?
#[inline]
pub(super) fn usable_on(c: &Credential, id: DeviceId, dev: &DeviceHot) -> bool {
    if !dev.stores_codes {
        // Server-mode devices ask us: a replaced code stops at once there.
        return c.replaced_by.is_none();
    }
    c.placement(id).is_some_and(|p| p.state.on_device())
}

/// One u64 for (door, PIN): the door in the high half, the PIN's length and
/// value in the low half. Stored PINs have 4 or 6 digits; a keypad entry too
/// long to fit cannot match one and gets a key no stored PIN has.
#[inline]
pub(super) fn pin_key(door: DoorId, pin: Pin) -> u64 {
    (u64::from(door.0) << 32) | pin_low(pin)
}

/// `pin_key` with the device in the high half: the keypad lookup.
#[inline]
pub(super) fn device_pin_key(device: DeviceId, pin: Pin) -> u64 {
    (u64::from(device.0) << 32) | pin_low(pin)
}

/// `(device, card number)` in one u128, the card reader's lookup: the
/// device plus one in the high half, so no key is 0 (the empty slot).
#[inline]
pub(super) fn card_key(device: DeviceId, number: u64) -> u128 {
    ((u128::from(device.0) + 1) << 64) | u128::from(number)
}

/// The low half of a PIN key: the PIN's length and value.
#[inline]
pub(super) fn pin_low(pin: Pin) -> u64 {
    let k = pin.key();
    let (len, value) = (k >> 56, k & ((1 << 56) - 1));
    if len <= 8 && value < (1 << 27) {
        (len << 27) | value
    } else {
        u64::from(u32::MAX)
    }
}

/// What a check needs of a device, packed apart from the rest of it so the
/// table of 100k devices stays small enough to sit in cache.
pub(super) struct DeviceHot {
    pub(super) door: DoorId,
    pub(super) site: SiteId,
    pub(super) stores_codes: bool,
    /// Wrong tries are on record (a grant must clear them).
    pub(super) wrong_tries: AtomicBool,
    /// The keypad's lockout end in Unix seconds (`i64::MIN`: never locked,
    /// so a clock before 1970 is not read as locked), mirrored from its
    /// `Lockout` so the happy path needs no lock.
    pub(super) locked_until_s: AtomicI64,
}

/// One entry of the keypad lookup (`device_pins`): the key, the credential,
/// and what the common grant needs of that credential on this device, in
/// one cache line. A check that finds a `FAST` slot decides from it (plus
/// the holder's flag, the site's time zone and, for a limited code, its use
/// count) and reads no credential row. Every other slot sends the check
/// down the full path over the credential.
///
/// Derived from the credential and the device (`KeypadSlot::of`); `apply`
/// rederives the slots of every credential a command may change.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub(super) struct KeypadSlot {
    pub(super) key: u64,
    /// `Schedule::bounds_ns`.
    pub(super) bounds_ns: (i64, i64),
    pub(super) window: DailyWindow,
    pub(super) credential: CredentialId,
    pub(super) holder: HolderId,
    pub(super) site: SiteId,
    /// `UseLimit::Total(n)`'s n (with `LIMITED`).
    pub(super) max_uses: u32,
    pub(super) days: Weekdays,
    pub(super) flags: u8,
    pub(super) origin: Origin,
}

const _: () = assert!(std::mem::size_of::<KeypadSlot>() == 64);

impl KeypadSlot {
    /// Decides from the slot: on this device the code is held (or need not
    /// be), usable (not an unassigned fallback code, not revoked, not
    /// disabled), no stay, bounds that fit `bounds_ns`, no per-door count.
    pub(super) const FAST: u8 = 1;
    /// The schedule repeats weekly in `window` on `days`.
    pub(super) const WEEKLY: u8 = 2;
    /// `UseLimit::Total(max_uses)`.
    pub(super) const LIMITED: u8 = 4;

    /// A key whose slot is not derived yet (not `FAST`).
    pub(super) fn pending(key: u64, credential: CredentialId) -> KeypadSlot {
        KeypadSlot {
            key,
            credential,
            ..KeypadSlot::default()
        }
    }

    pub(super) fn of(key: u64, c: &Credential, id: DeviceId, dev: &DeviceHot) -> KeypadSlot {
        let limit = c.schedule.use_limit();
        let bounds = c.schedule.bounds_ns();
        let weekly = c.schedule.weekly();
        let fast = !c.unassigned_fallback
            && usable_on(c, id, dev)
            && !c.revoked
            && !c.disabled
            && !matches!(c.schedule, Schedule::Stay { .. })
            && !matches!(limit, UseLimit::PerDoor(_))
            && bounds.is_some();
        let mut flags = 0;
        if fast {
            flags |= KeypadSlot::FAST;
        }
        if weekly.is_some() {
            flags |= KeypadSlot::WEEKLY;
        }
        let max_uses = match limit {
            UseLimit::Total(n) => {
                flags |= KeypadSlot::LIMITED;
                n
            }
            _ => 0,
        };
        let (days, window) = weekly.unwrap_or((Weekdays::NONE, DailyWindow::WHOLE_DAY));
        KeypadSlot {
            key,
            bounds_ns: bounds.unwrap_or((i64::MIN, i64::MAX)),
            window,
            credential: c.id,
            holder: c.holder,
            site: c.site,
            max_uses,
            days,
            flags,
            origin: c.origin,
        }
    }
}

impl Default for KeypadSlot {
    fn default() -> KeypadSlot {
        KeypadSlot {
            key: 0,
            bounds_ns: (i64::MIN, i64::MAX),
            window: DailyWindow::WHOLE_DAY,
            credential: CredentialId(0),
            holder: HolderId(0),
            site: SiteId(0),
            max_uses: 0,
            days: Weekdays::NONE,
            flags: 0,
            origin: Origin::Automatic,
        }
    }
}

/// One entry of the card reader's lookup (`device_cards`): the same
/// entries as `card_index` once per device at each door of the card's
/// credential. Keyed by the device a check names, the probe does not wait
/// for the device's row (its site) nor for a SwissTable's control bytes:
/// a card check's chain of dependent misses is the slot, then the
/// credential, with the device row read beside them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct CardSlot {
    pub(super) key: u128,
    pub(super) credential: CredentialId,
}

impl Default for CardSlot {
    fn default() -> CardSlot {
        CardSlot {
            key: 0,
            credential: CredentialId(0),
        }
    }
}

impl Keyed for CardSlot {
    type Key = u128;
    #[inline]
    fn key(&self) -> u128 {
        self.key
    }
}

impl Keyed for KeypadSlot {
    type Key = u64;
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

impl Engine {
    /// `door` holds `pin` for `id` (replacing whatever held it), at the door
    /// and on every device there.
    pub(super) fn index_pin(&mut self, door: DoorId, pin: Pin, id: CredentialId) {
        self.pin_index.insert(pin_key(door, pin), id);
        for dev in &self.door_devices[door.index()] {
            self.device_pins
                .put(KeypadSlot::pending(device_pin_key(*dev, pin), id));
        }
    }

    /// `door` no longer holds `pin` for `id` (if it still did).
    pub(super) fn unindex_pin(&mut self, door: DoorId, pin: Pin, id: CredentialId) {
        if self.pin_index.get(pin_key(door, pin)) != Some(id) {
            return;
        }
        self.pin_index.remove(pin_key(door, pin));
        for dev in &self.door_devices[door.index()] {
            self.device_pins.take(device_pin_key(*dev, pin));
        }
    }

    /// Card `number` of `site` is `id`'s, which opens `doors`: in
    /// `card_index`, and at every device there in `device_cards` (the
    /// slots of a credential it takes over go first).
    pub(super) fn index_card(
        &mut self,
        site: SiteId,
        number: u64,
        id: CredentialId,
        doors: &[DoorId],
    ) {
        if let Some(old) = self.card_index.insert((site, number), id) {
            if old != id {
                let old_doors = self.credentials[old.index()].doors.clone();
                self.unindex_card_devices(&old_doors, number, old);
            }
        }
        for d in doors {
            for dev in &self.door_devices[d.index()] {
                self.device_cards.put(CardSlot {
                    key: card_key(*dev, number),
                    credential: id,
                });
            }
        }
    }

    /// Card `number` of `site` is no longer `id`'s (if it still was).
    pub(super) fn unindex_card(&mut self, site: SiteId, number: u64, id: CredentialId) {
        if self.card_index.get(&(site, number)) != Some(&id) {
            return;
        }
        self.card_index.remove(&(site, number));
        let doors = self.credentials[id.index()].doors.clone();
        self.unindex_card_devices(&doors, number, id);
    }

    fn unindex_card_devices(&mut self, doors: &[DoorId], number: u64, id: CredentialId) {
        for d in doors {
            for dev in &self.door_devices[d.index()] {
                let key = card_key(*dev, number);
                if self.device_cards.find(key).map(|s| s.credential) == Some(id) {
                    self.device_cards.take(key);
                }
            }
        }
    }

    /// Panics unless the two PIN indexes agree (`device_pins` holds exactly
    /// the entries of `pin_index`, once per device at each door), the two
    /// card indexes agree (`device_cards` holds exactly the entries of
    /// `card_index`, once per device at each door of the credential) and
    /// every keypad slot says what its credential and device say now. For
    /// tests: it walks every index.
    #[doc(hidden)]
    pub fn assert_pin_indexes_agree(&self) {
        let low = |k: u64| k & u64::from(u32::MAX);
        let mut expected = 0;
        for (key, c) in self.pin_index.entries() {
            let door = (key >> 32) as usize;
            for dev in &self.door_devices[door] {
                let dk = (u64::from(dev.0) << 32) | low(key);
                let slot = self.device_pins.find(dk).map(|s| s.credential);
                assert_eq!(slot, Some(c), "device {dev} key {key:#x}");
                expected += 1;
            }
        }
        assert_eq!(self.device_pins.len(), expected, "stray device PIN entries");
        // The card reader's index: `card_index`'s entries once per device
        // at each door of the credential, and nothing else.
        let mut card_keys = rustc_hash::FxHashSet::default();
        for ((_, number), c) in &self.card_index {
            for d in &self.credentials[c.index()].doors {
                for dev in &self.door_devices[d.index()] {
                    let key = card_key(*dev, *number);
                    let slot = self.device_cards.find(key).map(|s| s.credential);
                    assert_eq!(slot, Some(*c), "device {dev} card of {c}");
                    card_keys.insert(key);
                }
            }
        }
        assert_eq!(
            self.device_cards.len(),
            card_keys.len(),
            "stray device card entries"
        );
        // Every slot says what its credential and device say now.
        for s in self.device_pins.slots() {
            let dev = DeviceId((s.key >> 32) as u32);
            let c = &self.credentials[s.credential.index()];
            let want = KeypadSlot::of(s.key, c, dev, &self.devices_hot[dev.index()]);
            assert_eq!(*s, want, "stale keypad slot of {} on {dev}", c.id);
        }
    }

    /// Rederives the keypad slots of `id` (see `KeypadSlot`).
    pub(super) fn refresh_keypad(&mut self, id: CredentialId) {
        let Some(c) = self.credentials.get(id.index()) else {
            return;
        };
        let Secret::Pin(p) = c.secret else {
            return;
        };
        for d in &c.doors {
            if self.pin_index.get(pin_key(*d, p)) != Some(id) {
                continue;
            }
            for dev in &self.door_devices[d.index()] {
                let key = device_pin_key(*dev, p);
                if let Some(s) = self.device_pins.find_mut(key) {
                    *s = KeypadSlot::of(key, c, *dev, &self.devices_hot[dev.index()]);
                }
            }
        }
    }

    /// The existing credentials whose keypad slots `cmd` may change (new
    /// ones are rederived anyway).
    pub(super) fn keypad_touched(&self, cmd: &Command) -> Vec<CredentialId> {
        let at_device = |device: &DeviceId| {
            self.devices
                .get(device.index())
                .map(|e| self.door_credentials[e.device.door.index()].clone())
                .unwrap_or_default()
        };
        match cmd {
            Command::ChangePin { credential, .. }
            | Command::SetCredentialDisabled { credential, .. } => vec![*credential],
            // Its earlier versions still on locks are revoked too.
            Command::RevokeCredential { credential } => {
                let mut v = self.earlier_versions(*credential);
                v.push(*credential);
                v
            }
            Command::DeleteDevice { device } => at_device(device),
            Command::CreateDevice { door, .. } => self
                .door_credentials
                .get(door.index())
                .cloned()
                .unwrap_or_default(),
            Command::AssignFallback { device, .. }
            | Command::SyncSent { device, .. }
            | Command::SyncReset { device } => at_device(device),
            Command::SyncAck { results, .. } => {
                let mut v: Vec<CredentialId> = results.iter().map(|r| r.credential).collect();
                // An acknowledged new code retires the one it replaces.
                v.extend(
                    results
                        .iter()
                        .filter(|r| self.credentials.get(r.credential.index()).is_some())
                        .flat_map(|r| self.earlier_versions(r.credential)),
                );
                v
            }
            _ => Vec::new(),
        }
    }
}
