//! Home Assistant PIN slots (Zigbee2MQTT's `pin_code` on a lock): slot N
//! of a lock holds one PIN code on that lock's door.
//!
//! A slot is not a second kind of code: each change is the admin API's
//! own command on the code, applied through [`Service::apply`] with the
//! site's rules (custom PINs only where the site allows them, their
//! shape, uniqueness on the door): setting an empty slot issues a code
//! (`POST /v1/credentials`), a new PIN in a full slot changes the code's
//! PIN and keeps its id (`PUT /v1/credentials/{id}/pin`), disabling and
//! enabling are `…/disable` and `…/enable`, clearing is `DELETE`. So each
//! change syncs to the lock (`setting`, then `set`) and is in the event
//! log like any other. The codes belong to one member holder of the
//! organization, "Home Assistant", made at the first slot set.
//!
//! Which code a slot holds is kept in SQLite (`ha_pin_slots`, written in
//! the same transaction as the command that changes it), so it survives
//! a restart. The slot holds the code's id: a changed PIN keeps it, and
//! the engine's `code_head` finds the live version. A code deleted through
//! the admin API leaves its slot empty.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{Service, ServiceError};
use crate::domain::{
    Actor, CredentialId, DeviceId, DeviceKind, FloorScope, HolderId, HolderKind, OrgId,
    PinRuleError, Schedule, Secret,
};
use crate::engine::{Applied, Command, Issue, Outcome, PinSpec, SecretSpec};
use crate::error::EngineError;
use crate::store::Write;

/// The holder the organization's Home Assistant codes are issued to.
pub const PIN_SLOT_HOLDER_NAME: &str = "Home Assistant";

/// What Home Assistant asks of one slot.
#[derive(Clone, PartialEq, Eq)]
pub enum SlotChange {
    /// The slot's code gets this PIN (a new code in an empty slot), and is
    /// enabled or disabled.
    Set { pin: String, enabled: bool },
    /// The slot's code is enabled or disabled, and kept.
    Enable(bool),
    /// The slot's code is deleted.
    Clear,
}

impl std::fmt::Debug for SlotChange {
    // PINs are codes: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotChange::Set { enabled, .. } => write!(f, "Set(redacted, enabled: {enabled})"),
            SlotChange::Enable(e) => write!(f, "Enable({e})"),
            SlotChange::Clear => f.write_str("Clear"),
        }
    }
}

/// Why a `pin_code` command was refused (the label of
/// `gateway_ha_pin_refused_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinRefusal {
    /// Not a JSON object (or over the size limit).
    NotJson,
    /// A field Zigbee2MQTT's `pin_code` does not have.
    UnknownField,
    /// A field of the wrong type, or `user` missing.
    BadField,
    /// A `user_type` other than `unrestricted`.
    UnsupportedUserType,
    /// `user` is not a slot of this lock (1 to its `code_slots`).
    SlotOutOfRange,
    /// Not an acceptable PIN (digits, length, no 1111 or 1234).
    BadPin,
    /// The site does not allow custom PINs (or the door is a community one).
    CustomPinsDisabled,
    /// The PIN is already in use on the door.
    PinInUse,
    /// Enabling or disabling a slot that holds no code.
    EmptySlot,
    /// The topic names no device the server knows.
    UnknownLock,
    /// The device is no lock storing codes (a keypad, door sensor or door
    /// phone).
    NotKeypadLock,
    /// Too many PIN commands waiting at once.
    Busy,
    /// The server could not apply it (the store failed...).
    Failed,
}

impl PinRefusal {
    pub const ALL: [PinRefusal; 13] = [
        PinRefusal::NotJson,
        PinRefusal::UnknownField,
        PinRefusal::BadField,
        PinRefusal::UnsupportedUserType,
        PinRefusal::SlotOutOfRange,
        PinRefusal::BadPin,
        PinRefusal::CustomPinsDisabled,
        PinRefusal::PinInUse,
        PinRefusal::EmptySlot,
        PinRefusal::UnknownLock,
        PinRefusal::NotKeypadLock,
        PinRefusal::Busy,
        PinRefusal::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PinRefusal::NotJson => "not_json",
            PinRefusal::UnknownField => "unknown_field",
            PinRefusal::BadField => "bad_field",
            PinRefusal::UnsupportedUserType => "unsupported_user_type",
            PinRefusal::SlotOutOfRange => "slot_out_of_range",
            PinRefusal::BadPin => "bad_pin",
            PinRefusal::CustomPinsDisabled => "custom_pins_disabled",
            PinRefusal::PinInUse => "pin_in_use",
            PinRefusal::EmptySlot => "empty_slot",
            PinRefusal::UnknownLock => "unknown_lock",
            PinRefusal::NotKeypadLock => "not_keypad_lock",
            PinRefusal::Busy => "busy",
            PinRefusal::Failed => "failed",
        }
    }
}

/// A refused slot change: why, and a message that never holds the PIN.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PinSlotError {
    pub reason: PinRefusal,
    pub message: String,
}

impl PinSlotError {
    pub fn new(reason: PinRefusal, message: impl Into<String>) -> PinSlotError {
        PinSlotError {
            reason,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for PinSlotError {
    fn from(e: ServiceError) -> Self {
        let reason = match &e {
            ServiceError::Engine(EngineError::Pin(p)) => match p {
                PinRuleError::CustomPinsNotEnabled
                | PinRuleError::CommunityDoor
                | PinRuleError::GuestCodeGenerated => PinRefusal::CustomPinsDisabled,
                PinRuleError::InUse => PinRefusal::PinInUse,
                PinRuleError::NotDigits
                | PinRuleError::WrongLength(_)
                | PinRuleError::SixDigitsNotEnabled
                | PinRuleError::RepeatedDigit
                | PinRuleError::ConsecutiveRun
                | PinRuleError::Exhausted => PinRefusal::BadPin,
            },
            _ => PinRefusal::Failed,
        };
        // The engine's and the store's messages name no PIN.
        PinSlotError::new(reason, e.to_string())
    }
}

/// One occupied slot, as Home Assistant's `users` state shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotView {
    pub slot: u16,
    /// The code's id (what access events name).
    pub credential: CredentialId,
    pub enabled: bool,
}

/// The slots, in memory; the store has them too.
#[derive(Default)]
pub(super) struct PinSlots {
    slots: BTreeMap<(DeviceId, u16), CredentialId>,
    holders: FxHashMap<OrgId, HolderId>,
}

impl PinSlots {
    pub(super) fn loaded(
        slots: Vec<(DeviceId, u16, CredentialId)>,
        holders: Vec<(OrgId, HolderId)>,
    ) -> PinSlots {
        PinSlots {
            slots: slots.into_iter().map(|(d, s, c)| ((d, s), c)).collect(),
            holders: holders.into_iter().collect(),
        }
    }
}

/// The lock's door and organization (`slot_lock` says why a device has no
/// such slot).
struct SlotLock {
    door: crate::domain::DoorId,
    org: OrgId,
}

impl Service {
    fn slot_lock(&self, device: DeviceId, slot: u16) -> Result<SlotLock, PinSlotError> {
        let e = self.engine();
        let d = e
            .device(device)
            .ok_or_else(|| PinSlotError::new(PinRefusal::UnknownLock, "no such lock"))?;
        if d.kind != DeviceKind::Lock || !d.stores_codes || d.code_slots == 0 {
            return Err(PinSlotError::new(
                PinRefusal::NotKeypadLock,
                "this device is no lock that stores codes",
            ));
        }
        if slot == 0 || slot > d.code_slots {
            return Err(PinSlotError::new(
                PinRefusal::SlotOutOfRange,
                format!("user is a slot from 1 to {}", d.code_slots),
            ));
        }
        let org = e
            .site(d.site)
            .map(|s| s.org)
            .ok_or_else(|| PinSlotError::new(PinRefusal::UnknownLock, "the lock has no site"))?;
        Ok(SlotLock { door: d.door, org })
    }

    /// The live version of the code in the slot, if any (a code deleted
    /// through the admin API leaves it empty).
    fn slot_code(&self, device: DeviceId, slot: u16) -> Option<CredentialId> {
        let code = *self.pin_slots.lock().slots.get(&(device, slot))?;
        let e = self.engine();
        let head = e.code_head(code);
        e.credential(head).filter(|c| !c.revoked).map(|c| c.id)
    }

    /// The holder of the organization's Home Assistant codes, made at the
    /// first slot set (a member: the site's custom-PIN rules apply).
    async fn slot_holder(&self, org: OrgId) -> Result<HolderId, PinSlotError> {
        let known = self.pin_slots.lock().holders.get(&org).copied();
        if let Some(h) = known {
            if self.engine().holder(h).is_some_and(|x| x.org == org) {
                return Ok(h);
            }
        }
        let applied = self
            .apply_with(
                &Actor::System,
                Command::CreateHolder {
                    org,
                    name: PIN_SLOT_HOLDER_NAME.into(),
                    kind: HolderKind::Member,
                    user: None,
                    floors: FloorScope::Any,
                },
                |a| match a.outcome {
                    Outcome::Holder(holder) => vec![Write::PinSlotHolder { org, holder }],
                    _ => Vec::new(),
                },
            )
            .await?;
        let Outcome::Holder(holder) = applied.outcome else {
            return Err(PinSlotError::new(PinRefusal::Failed, "no holder made"));
        };
        self.pin_slots.lock().holders.insert(org, holder);
        Ok(holder)
    }

    async fn set_disabled(&self, code: CredentialId, disabled: bool) -> Result<(), PinSlotError> {
        let now = self.engine().credential(code).map(|c| c.disabled);
        if now != Some(disabled) {
            self.apply(
                &Actor::System,
                Command::SetCredentialDisabled {
                    credential: code,
                    disabled,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Applies Home Assistant's change to slot `slot` of lock `device`, as
    /// the system (the bridge's account may write only the command topics;
    /// docs/reference-server.md, "Home Assistant").
    pub async fn pin_slot(
        &self,
        device: DeviceId,
        slot: u16,
        change: SlotChange,
    ) -> Result<(), PinSlotError> {
        // One slot change at a time: reading the slot and changing it
        // must not interleave with another change of it.
        let _one = self.pin_slot_order.lock().await;
        let lock = self.slot_lock(device, slot)?;
        let current = self.slot_code(device, slot);
        match change {
            SlotChange::Clear => {
                if let Some(code) = current {
                    self.apply_with(
                        &Actor::System,
                        Command::RevokeCredential { credential: code },
                        |_| forget_slot(device, slot),
                    )
                    .await?;
                } else if self.pin_slots.lock().slots.contains_key(&(device, slot)) {
                    // Its code was deleted elsewhere: forget the slot too.
                    self.store
                        .write(forget_slot(device, slot))
                        .await
                        .map_err(ServiceError::from)?;
                }
                self.pin_slots.lock().slots.remove(&(device, slot));
                Ok(())
            }
            SlotChange::Enable(enabled) => {
                let code = current.ok_or_else(|| {
                    PinSlotError::new(PinRefusal::EmptySlot, "this slot holds no code")
                })?;
                self.set_disabled(code, !enabled).await
            }
            SlotChange::Set { pin, enabled } => {
                let code = match current {
                    Some(code) => self.change_slot_pin(code, pin, enabled).await?,
                    None => {
                        self.issue_slot_code(device, slot, &lock, pin, enabled)
                            .await?
                    }
                };
                self.set_disabled(code, !enabled).await
            }
        }
    }

    /// A new PIN for the slot's code (the same code id); none if it has it.
    async fn change_slot_pin(
        &self,
        code: CredentialId,
        pin: String,
        enabled: bool,
    ) -> Result<CredentialId, PinSlotError> {
        let same = matches!(
            self.engine().credential(code).map(|c| &c.secret),
            Some(Secret::Pin(p)) if p.reveal() == pin
        );
        if same {
            return Ok(code);
        }
        let (applied, disabled) = self
            .apply_then(
                &Actor::System,
                Command::ChangePin {
                    credential: code,
                    pin: PinSpec::Custom(pin),
                },
                disabled_unless(enabled),
                |_| Vec::new(),
            )
            .await?;
        if let Some(Err(e)) = disabled {
            return Err(e.into());
        }
        match applied.outcome {
            Outcome::Credential(new) => Ok(new),
            _ => Err(PinSlotError::new(PinRefusal::Failed, "no code changed")),
        }
    }

    async fn issue_slot_code(
        &self,
        device: DeviceId,
        slot: u16,
        lock: &SlotLock,
        pin: String,
        enabled: bool,
    ) -> Result<CredentialId, PinSlotError> {
        let holder = self.slot_holder(lock.org).await?;
        let name = self
            .engine()
            .device(device)
            .map(|d| format!("Home Assistant user {slot} on {}", d.name))
            .unwrap_or_else(|| format!("Home Assistant user {slot}"));
        let issue = Issue {
            holder,
            name: name.chars().take(crate::engine::MAX_NAME_CHARS).collect(),
            secret: SecretSpec::Pin {
                pin: PinSpec::Custom(pin),
            },
            schedule: Schedule::Permanent,
            doors: vec![lock.door],
            include_common_areas: false,
            floors: FloorScope::Any,
        };
        let (applied, disabled) = self
            .apply_then(
                &Actor::System,
                Command::IssueCredential(issue),
                disabled_unless(enabled),
                |a| match a.outcome {
                    Outcome::Credential(c) => vec![Write::PinSlot {
                        device,
                        slot,
                        credential: Some(c),
                    }],
                    _ => Vec::new(),
                },
            )
            .await?;
        let Outcome::Credential(code) = applied.outcome else {
            return Err(PinSlotError::new(PinRefusal::Failed, "no code issued"));
        };
        self.pin_slots.lock().slots.insert((device, slot), code);
        if let Some(Err(e)) = disabled {
            return Err(e.into());
        }
        Ok(code)
    }

    /// The locks with a slot holding the code `code` (any of its
    /// versions).
    pub fn pin_slot_locks(&self, code: CredentialId) -> Vec<DeviceId> {
        let slots: Vec<(DeviceId, CredentialId)> = self
            .pin_slots
            .lock()
            .slots
            .iter()
            .map(|(&(d, _), &c)| (d, c))
            .collect();
        let e = self.engine();
        let code = e.code_id(code);
        let mut locks: Vec<DeviceId> = slots
            .into_iter()
            .filter(|&(_, c)| e.code_id(c) == code)
            .map(|(d, _)| d)
            .collect();
        locks.dedup();
        locks
    }

    /// The lock's occupied slots, by slot number.
    pub fn pin_slots(&self, device: DeviceId) -> Vec<SlotView> {
        let slots: Vec<(u16, CredentialId)> = self
            .pin_slots
            .lock()
            .slots
            .range((device, 0)..=(device, u16::MAX))
            .map(|(&(_, s), &c)| (s, c))
            .collect();
        let e = self.engine();
        slots
            .into_iter()
            .filter_map(|(slot, code)| {
                let c = e.credential(e.code_head(code)).filter(|c| !c.revoked)?;
                Some(SlotView {
                    slot,
                    credential: code,
                    enabled: !c.disabled,
                })
            })
            .collect()
    }
}

/// The command that disables the code `applied` made when the slot is
/// set disabled, applied in the same step (`Service::apply_then`): no
/// check sees the code enabled, not even between the two (Zigbee's
/// `SetPINCode` sets a code and its user status at once). A new code, and
/// a changed PIN's new version, start enabled.
fn disabled_unless(enabled: bool) -> impl FnOnce(&Applied) -> Option<Command> {
    move |a| match a.outcome {
        Outcome::Credential(credential) if !enabled => Some(Command::SetCredentialDisabled {
            credential,
            disabled: true,
        }),
        _ => None,
    }
}

fn forget_slot(device: DeviceId, slot: u16) -> Vec<Write> {
    vec![Write::PinSlot {
        device,
        slot,
        credential: None,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pin_rule_has_its_reason() {
        let reason = |p: PinRuleError| PinSlotError::from(ServiceError::from(EngineError::Pin(p)));
        for (rule, want) in [
            (PinRuleError::NotDigits, PinRefusal::BadPin),
            (PinRuleError::WrongLength(5), PinRefusal::BadPin),
            (PinRuleError::SixDigitsNotEnabled, PinRefusal::BadPin),
            (PinRuleError::RepeatedDigit, PinRefusal::BadPin),
            (PinRuleError::ConsecutiveRun, PinRefusal::BadPin),
            (
                PinRuleError::CustomPinsNotEnabled,
                PinRefusal::CustomPinsDisabled,
            ),
            (PinRuleError::CommunityDoor, PinRefusal::CustomPinsDisabled),
            (PinRuleError::InUse, PinRefusal::PinInUse),
        ] {
            let e = reason(rule.clone());
            assert_eq!(e.reason, want, "{rule:?}");
            assert_eq!(e.message, format!("pin: {rule}"));
        }
        let other = PinSlotError::from(ServiceError::UnknownDevice(DeviceId(3)));
        assert_eq!(other.reason, PinRefusal::Failed);
    }

    #[test]
    fn reasons_are_distinct_labels() {
        let mut names: Vec<&str> = PinRefusal::ALL.iter().map(|r| r.as_str()).collect();
        for (i, r) in PinRefusal::ALL.iter().enumerate() {
            assert_eq!(
                *r as usize, i,
                "ALL is in declaration order (metric handles)"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PinRefusal::ALL.len());
    }
}
