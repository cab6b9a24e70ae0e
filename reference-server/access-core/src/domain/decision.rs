//! What a credential check answers.

use jiff::Timestamp;

use super::{CredentialId, CredentialKind, HolderId, Origin};

/// Why a check was denied. One reason per denial, the first rule that failed,
/// in the order `Engine::validate` documents.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// No credential with this card, token or pass exists (or the token's MAC is wrong).
    UnknownCredential,
    /// A keypad entry that matches no code this lock holds.
    WrongPin,
    /// Before the credential's start.
    NotYetValid,
    /// After the credential's end.
    Expired,
    /// Inside the validity period but outside the recurring window.
    OutsideSchedule,
    /// The use limit (total or per door) is used up.
    UsesExhausted,
    /// A one-time QR or BLE token presented again.
    Replayed,
    /// The credential exists but does not open this door.
    DoorNotAllowed,
    /// The requested lift floor is not permitted.
    FloorNotAllowed,
    /// The holder of the credential is disabled.
    HolderDisabled,
    /// The credential itself is disabled (it can be enabled again).
    Disabled,
    /// The credential was revoked or deleted.
    Revoked,
    /// A guest code before check-in, where the lock prevents access until then.
    NotCheckedIn,
    /// A guest code after check-out, where the lock revokes access on check-out.
    CheckedOut,
    /// Too many wrong PINs on this keypad within the window.
    LockedOut,
    /// The device is not known to the engine.
    DeviceUnknown,
}

impl DenyReason {
    /// Every reason, in declaration order (tests and reports enumerate them).
    pub const ALL: [DenyReason; 16] = [
        DenyReason::UnknownCredential,
        DenyReason::WrongPin,
        DenyReason::NotYetValid,
        DenyReason::Expired,
        DenyReason::OutsideSchedule,
        DenyReason::UsesExhausted,
        DenyReason::Replayed,
        DenyReason::DoorNotAllowed,
        DenyReason::FloorNotAllowed,
        DenyReason::HolderDisabled,
        DenyReason::Disabled,
        DenyReason::Revoked,
        DenyReason::NotCheckedIn,
        DenyReason::CheckedOut,
        DenyReason::LockedOut,
        DenyReason::DeviceUnknown,
    ];

    /// The wire and metric name (`snake_case`), without allocating.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::UnknownCredential => "unknown_credential",
            DenyReason::WrongPin => "wrong_pin",
            DenyReason::NotYetValid => "not_yet_valid",
            DenyReason::Expired => "expired",
            DenyReason::OutsideSchedule => "outside_schedule",
            DenyReason::UsesExhausted => "uses_exhausted",
            DenyReason::Replayed => "replayed",
            DenyReason::DoorNotAllowed => "door_not_allowed",
            DenyReason::FloorNotAllowed => "floor_not_allowed",
            DenyReason::HolderDisabled => "holder_disabled",
            DenyReason::Disabled => "disabled",
            DenyReason::Revoked => "revoked",
            DenyReason::NotCheckedIn => "not_checked_in",
            DenyReason::CheckedOut => "checked_out",
            DenyReason::LockedOut => "locked_out",
            DenyReason::DeviceUnknown => "device_unknown",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A granted check: which credential, whose, and how it was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub credential: CredentialId,
    pub holder: HolderId,
    pub origin: Origin,
    pub kind: CredentialKind,
}

/// The answer to one credential check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Granted(Grant),
    Denied {
        reason: DenyReason,
        /// The keypad is locked out until then (whole seconds): set on a
        /// `locked_out` denial and on the wrong PIN that locked the keypad,
        /// so a device can show the lockout and end it when the engine does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        locked_until: Option<Timestamp>,
    },
}

impl Decision {
    pub fn is_granted(&self) -> bool {
        matches!(self, Decision::Granted(_))
    }

    /// The denial reason, if denied.
    pub fn reason(&self) -> Option<DenyReason> {
        match self {
            Decision::Granted(_) => None,
            Decision::Denied { reason, .. } => Some(*reason),
        }
    }

    /// When the keypad's lockout ends, if this check left it locked out.
    pub fn locked_until(&self) -> Option<Timestamp> {
        match self {
            Decision::Granted(_) => None,
            Decision::Denied { locked_until, .. } => *locked_until,
        }
    }

    pub(crate) fn deny(reason: DenyReason) -> Decision {
        Decision::Denied {
            reason,
            locked_until: None,
        }
    }

    /// A denial that leaves the keypad locked out until `until_s` (Unix
    /// seconds, as the lockout keeps it).
    pub(crate) fn deny_locked(reason: DenyReason, until_s: i64) -> Decision {
        Decision::Denied {
            reason,
            locked_until: Timestamp::from_second(until_s).ok(),
        }
    }
}
