//! The activity log (seeds/004): one entry per thing that happened at a
//! device, saying how (by hand, keypad, remote, QR, card, BLE), which code
//! and its origin, or why access was denied. Entries come from credential
//! checks, device events (idempotent on the device's own `(device, boot, seq)`),
//! status changes and remote opens. The code itself is never recorded.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::{CredentialId, CredentialKind, Decision, DeviceId, Origin};
use crate::protocol::{Event, EventKind, How};

/// Most entries one query returns.
pub const MAX_QUERY_LIMIT: u32 = 1_000;

/// The kinds of entries the server writes itself (device events are named
/// by `EventKind::NAMES`).
const SERVER_KINDS: [&str; 5] = [
    "access_granted",
    "online",
    "offline",
    "remote_open",
    "messages_dropped",
];

/// Every `kind` an entry may have: the device events' names
/// (`EventKind::NAMES`, the protocol's one list) and the server's own. A
/// query's `kind` filter must be one of them (an unknown one is a 400, not
/// an empty list).
pub const ACTIVITY_KINDS: [&str; EventKind::COUNT + SERVER_KINDS.len()] = {
    let mut all = [""; EventKind::COUNT + SERVER_KINDS.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = if i < EventKind::COUNT {
            EventKind::NAMES[i]
        } else {
            SERVER_KINDS[i - EventKind::COUNT]
        };
        i += 1;
    }
    all
};

/// One line of the activity log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActivityEntry {
    pub device: DeviceId,
    pub at: Timestamp,
    /// What happened: an event name (`unlocked`, `door_opened`, ...),
    /// `access_granted`/`access_denied` (a check), `online`/`offline`,
    /// `remote_open`, `messages_dropped`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<How>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Why: a deny reason, a sync failure, a command result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The device's own sequence number (device events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The device's boot epoch (device events that carry one; absent:
    /// boot 0, a device of protocol version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<u64>,
    /// Extra facts (battery level, lockout end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ActivityEntry {
    fn new(device: DeviceId, at: Timestamp, kind: &str) -> ActivityEntry {
        ActivityEntry {
            device,
            at,
            kind: kind.to_string(),
            how: None,
            credential: None,
            origin: None,
            reason: None,
            seq: None,
            boot: None,
            detail: None,
        }
    }

    /// A credential check decided by the engine.
    pub fn from_check(
        device: DeviceId,
        at: Timestamp,
        kind: CredentialKind,
        d: &Decision,
    ) -> ActivityEntry {
        let how = match kind {
            CredentialKind::Pin => How::Keypad,
            CredentialKind::Qr => How::Qr,
            CredentialKind::Card => How::Card,
            CredentialKind::Ble => How::Ble,
        };
        match d {
            Decision::Granted(g) => ActivityEntry {
                how: Some(how),
                credential: Some(g.credential),
                origin: Some(g.origin),
                ..ActivityEntry::new(device, at, "access_granted")
            },
            Decision::Denied { reason, .. } => ActivityEntry {
                how: Some(how),
                reason: Some(reason.as_str().to_string()),
                ..ActivityEntry::new(device, at, "access_denied")
            },
        }
    }

    /// A device's own event.
    pub fn from_event(device: DeviceId, ev: &Event) -> ActivityEntry {
        let mut e = ActivityEntry::new(device, ev.at, ev.kind.name());
        e.seq = Some(ev.seq);
        e.boot = (ev.boot != 0).then_some(ev.boot);
        match &ev.kind {
            EventKind::Unlocked {
                how,
                credential,
                origin,
            } => {
                e.how = Some(*how);
                e.credential = *credential;
                e.origin = *origin;
            }
            EventKind::Locked { how } => e.how = Some(*how),
            EventKind::AccessDenied { how, reason } => {
                e.how = Some(*how);
                e.reason = Some(reason.as_str().to_string());
            }
            EventKind::BatteryLow { battery_pct } => {
                e.detail = Some(format!("battery {battery_pct}%"))
            }
            EventKind::KeypadLockedOut { until } => e.detail = Some(format!("until {until}")),
            EventKind::CodeSet { credential } => e.credential = Some(*credential),
            EventKind::CodeSetFailed { credential, reason } => {
                e.credential = Some(*credential);
                e.reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string));
            }
            EventKind::MotorBlocked
            | EventKind::DoorOpened
            | EventKind::DoorClosed
            | EventKind::DoorAjar
            | EventKind::DoorForcedOpen => {}
        }
        e
    }

    /// The device came online or went offline.
    pub fn connectivity(device: DeviceId, at: Timestamp, online: bool) -> ActivityEntry {
        ActivityEntry::new(device, at, if online { "online" } else { "offline" })
    }

    /// Messages from the device dropped over a report window (its rate,
    /// its checks in progress, a malformed payload...): one entry per
    /// reason and window, never one per message.
    pub fn messages_dropped(
        device: DeviceId,
        at: Timestamp,
        reason: &str,
        count: u64,
        window_s: u64,
    ) -> ActivityEntry {
        ActivityEntry {
            reason: Some(reason.to_string()),
            detail: Some(format!("{count} messages in the last {window_s} s")),
            ..ActivityEntry::new(device, at, "messages_dropped")
        }
    }

    /// Open Door from the platform, with the device's answer.
    /// A remote command and its result: `remote_open` (Open Door, Home
    /// Assistant's `UNLOCK`/`OPEN`) or `remote_lock` (`LOCK`).
    pub fn remote_command(
        device: DeviceId,
        at: Timestamp,
        lock: bool,
        result: &str,
    ) -> ActivityEntry {
        let name = if lock { "remote_lock" } else { "remote_open" };
        ActivityEntry {
            how: Some(How::Remote),
            reason: Some(result.to_string()),
            ..ActivityEntry::new(device, at, name)
        }
    }
}

/// A log position: an entry's time in ms and its row id (the order of
/// entries at one time).
pub type LogPosition = (i64, i64);

/// Filters of an activity-log query.
#[derive(Clone, Debug, Default)]
pub struct ActivityQuery {
    pub device: Option<DeviceId>,
    /// Inclusive.
    pub from: Option<Timestamp>,
    /// Exclusive.
    pub to: Option<Timestamp>,
    pub kind: Option<String>,
    /// Newest first, at most this many (capped at `MAX_QUERY_LIMIT`).
    pub limit: u32,
    /// Only entries older than this log position (a page's last entry:
    /// its time in ms and its row id); `None`: from the newest.
    pub before: Option<LogPosition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DenyReason, Grant, HolderId};

    /// Every event's name is a known kind (a new event kind fails to
    /// compile here until it is listed).
    #[test]
    fn every_event_name_is_a_known_kind() {
        use crate::domain::{CredentialId, SyncFailure};
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let all = [
            EventKind::Unlocked {
                how: How::Keypad,
                credential: None,
                origin: None,
            },
            EventKind::Locked { how: How::Manual },
            EventKind::AccessDenied {
                how: How::Card,
                reason: DenyReason::UsesExhausted,
            },
            EventKind::MotorBlocked,
            EventKind::DoorOpened,
            EventKind::DoorClosed,
            EventKind::DoorAjar,
            EventKind::DoorForcedOpen,
            EventKind::BatteryLow { battery_pct: 5 },
            EventKind::KeypadLockedOut { until: at },
            EventKind::CodeSet {
                credential: CredentialId(1),
            },
            EventKind::CodeSetFailed {
                credential: CredentialId(1),
                reason: SyncFailure::LockFull,
            },
        ];
        for k in &all {
            match k {
                EventKind::Unlocked { .. }
                | EventKind::Locked { .. }
                | EventKind::AccessDenied { .. }
                | EventKind::MotorBlocked
                | EventKind::DoorOpened
                | EventKind::DoorClosed
                | EventKind::DoorAjar
                | EventKind::DoorForcedOpen
                | EventKind::BatteryLow { .. }
                | EventKind::KeypadLockedOut { .. }
                | EventKind::CodeSet { .. }
                | EventKind::CodeSetFailed { .. } => {}
            }
            assert!(ACTIVITY_KINDS.contains(&k.name()), "{}", k.name());
        }
    }

    #[test]
    fn entries_say_how_and_which_code() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let g = Decision::Granted(Grant {
            credential: CredentialId(4),
            holder: HolderId(1),
            origin: Origin::Fallback,
            kind: CredentialKind::Pin,
        });
        let e = ActivityEntry::from_check(DeviceId(2), at, CredentialKind::Pin, &g);
        assert_eq!(e.kind, "access_granted");
        assert_eq!(e.how, Some(How::Keypad));
        assert_eq!(
            (e.credential, e.origin),
            (Some(CredentialId(4)), Some(Origin::Fallback))
        );
        let d = Decision::Denied {
            reason: DenyReason::UsesExhausted,
            locked_until: None,
        };
        let e = ActivityEntry::from_check(DeviceId(2), at, CredentialKind::Qr, &d);
        assert_eq!(e.reason.as_deref(), Some("uses_exhausted"));
        let ev = Event {
            seq: 9,
            boot: 0,
            at,
            kind: EventKind::DoorForcedOpen,
        };
        let e = ActivityEntry::from_event(DeviceId(2), &ev);
        assert_eq!((e.kind.as_str(), e.seq), ("door_forced_open", Some(9)));
    }
}
