//! The event feed: one ordered, durable log of what happened in an
//! organization, served as a paged list (`GET /v1/events`), a
//! Server-Sent Events stream that resumes from `Last-Event-ID`, and signed
//! webhooks.
//!
//! Each event type has ONE source, mapped here and nowhere else:
//!
//! | events | source | mapped by |
//! |---|---|---|
//! | `access_code.created`, `.changed`, `.deleted` | an admin's command the engine applied | [`of_command`] |
//! | `access_code.set_on_device`, `.removed_from_device`, `.failed_to_set_on_device` | a device's sync ack the engine applied (a state change of the code on that lock) | [`of_command`] |
//! | `lock.locked`, `lock.unlocked`, `lock.access_denied` | the lock's own event (it says what it did, whoever decided) | [`of_device_event`] |
//! | `device.jammed`, `.low_battery`, `.door_*` | the device's own event | [`of_device_event`] |
//! | `device.connected`, `.disconnected` | a status report that changed the device's online state | [`connectivity`] |
//!
//! A credential check is not an event by itself: the lock reports what it
//! did with the answer (`unlocked`, or `access_denied` with the reason),
//! so a check and its outcome are never counted twice. A device's
//! `code_set`/`code_set_failed` events stay in the activity log only: the
//! sync ack is the code's one source.
//!
//! Timestamps: `created_at` is the server's clock when the server learned
//! of it (read at the I/O edge, in `Service`); `occurred_at` is the
//! device's own time for a device's event and `created_at` otherwise. The
//! engine never reads a clock.
//!
//! The log's order is the store's commit order (one writer thread); an
//! event's id is its position in that log, so ids only grow.
//!
//! # Layout
//!
//! - this file: the catalogue ([`EventType`], [`Method`]), the event
//!   ([`NewEvent`], [`Event`]) and the mappings;
//! - [`sign`]: webhook signatures (Standard Webhooks, HMAC-SHA256);
//! - [`stream`]: the SSE stream (log first, then the live broadcast);
//! - [`webhooks`]: the durable delivery queue's dispatcher and its retry
//!   schedule.

pub mod sign;
pub mod stream;
pub mod webhooks;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::{CredentialId, CredentialKind, DeviceId, OrgId, Ref, SyncState};
use crate::engine::{Applied, Command, Engine, Outcome};
use crate::protocol::{self, EventKind, How};

macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident = $name:tt,)*) => {
        /// What happened (`event_type`): the feed's whole catalogue.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum EventType {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl EventType {
            /// Every type, in the catalogue's order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }
        }
    };
}

event_types! {
    /// An access code (a PIN credential) was issued.
    AccessCodeCreated = "access_code.created",
    /// Its PIN changed, or it was disabled or enabled.
    AccessCodeChanged = "access_code.changed",
    /// A lock confirmed it holds the code.
    AccessCodeSetOnDevice = "access_code.set_on_device",
    /// A lock confirmed it removed the code.
    AccessCodeRemovedFromDevice = "access_code.removed_from_device",
    /// A lock could not store the code (`reason`).
    AccessCodeFailedToSetOnDevice = "access_code.failed_to_set_on_device",
    /// The code was revoked.
    AccessCodeDeleted = "access_code.deleted",
    LockLocked = "lock.locked",
    LockUnlocked = "lock.unlocked",
    /// The lock refused a credential (`reason`).
    LockAccessDenied = "lock.access_denied",
    DeviceConnected = "device.connected",
    DeviceDisconnected = "device.disconnected",
    DeviceLowBattery = "device.low_battery",
    /// The motor was blocked.
    DeviceJammed = "device.jammed",
    DeviceDoorOpened = "device.door_opened",
    DeviceDoorClosed = "device.door_closed",
    DeviceDoorForcedOpen = "device.door_forced_open",
    /// The door stayed open past its time (the device's `door_ajar`).
    DeviceDoorLeftOpen = "device.door_left_open",
}

impl EventType {
    /// The type named `s` (`lock.unlocked`), if any.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a lock was locked or unlocked, or how access was tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Keycode,
    Card,
    Qr,
    Ble,
    Remote,
    Manual,
    /// The lock relocked itself.
    Automatic,
}

impl From<How> for Method {
    fn from(h: How) -> Method {
        match h {
            How::Keypad => Method::Keycode,
            How::Card => Method::Card,
            How::Qr => Method::Qr,
            How::Ble => Method::Ble,
            How::Remote => Method::Remote,
            How::Manual => Method::Manual,
            How::AutoRelock => Method::Automatic,
        }
    }
}

/// An event before the log gives it its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewEvent {
    pub event_type: EventType,
    #[schema(value_type = u32)]
    pub organization_id: OrgId,
    /// When the server learned of it (the server's clock).
    pub created_at: Timestamp,
    /// When it happened: the device's own time for a device's event.
    pub occurred_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>)]
    pub device_id: Option<DeviceId>,
    /// The credential (access code, card, QR or BLE key) concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>)]
    pub access_code_id: Option<CredentialId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Why: a deny reason (`unknown_credential`), a sync failure (`slots_full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
}

impl NewEvent {
    pub fn new(event_type: EventType, org: OrgId, now: Timestamp) -> NewEvent {
        NewEvent {
            event_type,
            organization_id: org,
            created_at: now,
            occurred_at: now,
            device_id: None,
            access_code_id: None,
            method: None,
            reason: None,
            battery_pct: None,
        }
    }
}

/// An event in the log: what `GET /v1/events`, the stream and webhooks
/// carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Its position in the log, as a decimal string: ids only grow; the
    /// stream's `id:` and a webhook's `webhook-id` are this value.
    pub event_id: String,
    #[serde(flatten)]
    pub body: NewEvent,
}

impl Event {
    pub fn new(id: u64, body: NewEvent) -> Event {
        Event {
            event_id: id.to_string(),
            body,
        }
    }

    /// The log position (the id as a number).
    pub fn seq(&self) -> u64 {
        self.event_id.parse().unwrap_or(0)
    }
}

fn enum_str<T: Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

/// A device's own event as the feed says it; None for what the feed does
/// not carry (keypad lockouts, and code set/failed, whose source is the
/// sync ack).
pub fn of_device_event(
    org: OrgId,
    device: DeviceId,
    ev: &protocol::Event,
    now: Timestamp,
) -> Option<NewEvent> {
    let (event_type, method) = match &ev.kind {
        EventKind::Unlocked { how, .. } => (EventType::LockUnlocked, Some(Method::from(*how))),
        EventKind::Locked { how } => (EventType::LockLocked, Some(Method::from(*how))),
        EventKind::AccessDenied { how, .. } => {
            (EventType::LockAccessDenied, Some(Method::from(*how)))
        }
        EventKind::MotorBlocked => (EventType::DeviceJammed, None),
        EventKind::DoorOpened => (EventType::DeviceDoorOpened, None),
        EventKind::DoorClosed => (EventType::DeviceDoorClosed, None),
        EventKind::DoorAjar => (EventType::DeviceDoorLeftOpen, None),
        EventKind::DoorForcedOpen => (EventType::DeviceDoorForcedOpen, None),
        EventKind::BatteryLow { .. } => (EventType::DeviceLowBattery, None),
        EventKind::KeypadLockedOut { .. }
        | EventKind::CodeSet { .. }
        | EventKind::CodeSetFailed { .. } => return None,
    };
    let mut e = NewEvent::new(event_type, org, now);
    e.occurred_at = ev.at;
    e.device_id = Some(device);
    e.method = method;
    match &ev.kind {
        EventKind::Unlocked { credential, .. } => e.access_code_id = *credential,
        EventKind::AccessDenied { reason, .. } => e.reason = Some(reason.as_str().to_string()),
        EventKind::BatteryLow { battery_pct } => e.battery_pct = Some(*battery_pct),
        _ => {}
    }
    Some(e)
}

/// A status report changed the device's online state.
pub fn connectivity(org: OrgId, device: DeviceId, online: bool, now: Timestamp) -> NewEvent {
    let t = if online {
        EventType::DeviceConnected
    } else {
        EventType::DeviceDisconnected
    };
    let mut e = NewEvent::new(t, org, now);
    e.device_id = Some(device);
    e
}

/// What [`of_command`] needs from the engine before the command: the sync
/// state of each acknowledged code on the acknowledging lock (an ack's
/// meaning, set or removed, depends on it).
#[derive(Debug, Default)]
pub struct Before {
    states: Vec<(CredentialId, Option<SyncState>)>,
}

impl Before {
    pub fn capture(engine: &Engine, cmd: &Command) -> Before {
        let Command::SyncAck { device, results } = cmd else {
            return Before::default();
        };
        let states = results
            .iter()
            .map(|r| {
                let state = engine
                    .credential(r.credential)
                    .and_then(|c| c.placement(*device))
                    .map(|p| p.state);
                (r.credential, state)
            })
            .collect();
        Before { states }
    }

    fn state(&self, c: CredentialId) -> Option<SyncState> {
        self.states
            .iter()
            .find(|(id, _)| *id == c)
            .and_then(|(_, s)| *s)
    }
}

/// The access-code events of an applied command (the resolved form in
/// `applied.logged`), read against the engine after it. Only PIN
/// credentials are access codes.
pub fn of_command(
    engine: &Engine,
    before: &Before,
    applied: &Applied,
    now: Timestamp,
) -> Vec<NewEvent> {
    let code = |id: CredentialId, t: EventType| -> Option<NewEvent> {
        let c = engine.credential(id)?;
        if c.kind != CredentialKind::Pin {
            return None;
        }
        let mut e = NewEvent::new(t, c.org, now);
        e.access_code_id = Some(id);
        Some(e)
    };
    let made = |o: &Outcome| -> Vec<CredentialId> {
        match o {
            Outcome::Credential(c) => vec![*c],
            Outcome::Credentials(cs) => cs.clone(),
            _ => Vec::new(),
        }
    };
    match &applied.logged {
        Command::IssueCredential(_) | Command::AssignFallback { .. } => made(&applied.outcome)
            .into_iter()
            .filter_map(|c| code(c, EventType::AccessCodeCreated))
            .collect(),
        Command::ChangePin { credential, .. }
        | Command::SetCredentialDisabled { credential, .. } => {
            code(*credential, EventType::AccessCodeChanged)
                .into_iter()
                .collect()
        }
        Command::RevokeCredential { credential } => code(*credential, EventType::AccessCodeDeleted)
            .into_iter()
            .collect(),
        Command::SyncAck { device, results } => results
            .iter()
            .filter_map(|r| {
                let was = before.state(r.credential);
                let t = match (was, r.failure) {
                    (Some(SyncState::Removing), None) => EventType::AccessCodeRemovedFromDevice,
                    (Some(SyncState::Removing | SyncState::Removed) | None, _) => return None,
                    (Some(SyncState::Set), None) => return None,
                    (Some(SyncState::Failed(f)), Some(g)) if f == g => return None,
                    (_, None) => EventType::AccessCodeSetOnDevice,
                    (_, Some(_)) => EventType::AccessCodeFailedToSetOnDevice,
                };
                let mut e = code(r.credential, t)?;
                e.device_id = Some(*device);
                e.reason = r.failure.as_ref().and_then(enum_str);
                Some(e)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The feed's live parts, held by `Service`: the signal that ends every
/// SSE stream at shutdown, and the webhook retry schedule.
pub struct Feed {
    stop: tokio::sync::watch::Sender<bool>,
    retry: parking_lot::Mutex<webhooks::RetryPolicy>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            stop: tokio::sync::watch::Sender::new(false),
            retry: parking_lot::Mutex::new(webhooks::RetryPolicy::default()),
        }
    }
}

impl Feed {
    /// Ends every open stream (at shutdown, before the HTTP server waits
    /// for its connections to finish).
    pub fn stop_streams(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once `stop_streams` was called.
    pub fn stopped(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub fn retry_policy(&self) -> webhooks::RetryPolicy {
        *self.retry.lock()
    }

    /// Sets the webhook retry schedule (the binary's flags; tests shorten it).
    pub fn set_retry_policy(&self, p: webhooks::RetryPolicy) {
        *self.retry.lock() = p;
    }
}

/// The organization a device belongs to.
pub fn device_org(engine: &Engine, device: DeviceId) -> Option<OrgId> {
    engine.org_of(Ref::Device(device)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_and_serializes_as_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::String(t.as_str().into())
            );
        }
        assert_eq!(EventType::parse("lock.exploded"), None);
        assert_eq!(EventType::ALL.len(), 17);
    }

    #[test]
    fn device_events_map_to_the_feed_with_method_and_reason() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let now = Timestamp::from_second(1_800_000_005).unwrap();
        let ev = |kind| protocol::Event {
            seq: 1,
            boot: 0,
            at,
            kind,
        };
        let e = of_device_event(
            OrgId(3),
            DeviceId(2),
            &ev(EventKind::Unlocked {
                how: How::Keypad,
                credential: Some(CredentialId(7)),
                origin: None,
            }),
            now,
        )
        .unwrap();
        assert_eq!(e.event_type, EventType::LockUnlocked);
        assert_eq!(e.method, Some(Method::Keycode));
        assert_eq!(e.access_code_id, Some(CredentialId(7)));
        assert_eq!((e.occurred_at, e.created_at), (at, now));
        let e = of_device_event(
            OrgId(3),
            DeviceId(2),
            &ev(EventKind::AccessDenied {
                how: How::Card,
                reason: crate::domain::DenyReason::UnknownCredential,
            }),
            now,
        )
        .unwrap();
        assert_eq!(e.reason.as_deref(), Some("unknown_credential"));
        assert_eq!(e.method, Some(Method::Card));
        let e = of_device_event(OrgId(3), DeviceId(2), &ev(EventKind::DoorAjar), now).unwrap();
        assert_eq!(e.event_type, EventType::DeviceDoorLeftOpen);
        let relock = of_device_event(
            OrgId(3),
            DeviceId(2),
            &ev(EventKind::Locked {
                how: How::AutoRelock,
            }),
            now,
        )
        .unwrap();
        assert_eq!(relock.method, Some(Method::Automatic));
        assert!(of_device_event(
            OrgId(3),
            DeviceId(2),
            &ev(EventKind::CodeSet {
                credential: CredentialId(1)
            }),
            now
        )
        .is_none());
    }
}
