//! Wire types of the device protocol (docs/protocol.md), shared by the
//! server's gateway and the simulator's devices: MQTT topics and the JSON
//! payloads that travel on them (and on the HTTP validate endpoint).
//!
//! Decoding is strict (unknown fields are errors) and bounded
//! (`MAX_PAYLOAD_BYTES`), so a device cannot make the server parse without
//! limit. Devices are named on the wire by their display ids ("site-3",
//! "dev-12"); the engine's ids are dense integers behind them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::{
    CredentialId, CredentialKind, DailyWindow, Decision, DenyReason, DeviceId, DeviceKind, FloorId,
    HolderId, Origin, Pin, SiteId, SyncFailure, Weekdays,
};
use crate::domain::{Presented, Secret};

/// Bumped on any incompatible change to topics or payloads.
pub const PROTOCOL_VERSION: u32 = 2;
/// Default topic prefix.
pub const DEFAULT_PREFIX: &str = "fleet";
/// Largest payload accepted from a device; larger ones are dropped and counted.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024;
/// Most codes in one sync message; bigger deltas are split.
pub const MAX_SYNC_CODES: usize = 64;
/// Longest credential value on the wire (a QR token is 46 characters).
pub const MAX_CREDENTIAL_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("topic {0:?} is not a device topic")]
    BadTopic(String),
    #[error("bad id {0:?}: expected like site-3 or dev-12")]
    BadId(String),
    #[error("credential value: {0}")]
    BadCredential(&'static str),
}

/// The channels of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Status,
    Events,
    AuthReq,
    AuthResp,
    Sync,
    SyncAck,
    /// A device asks for its sync (version 2).
    SyncReq,
    Cmd,
    CmdAck,
}

impl Channel {
    pub const ALL: [Channel; 9] = [
        Channel::Status,
        Channel::Events,
        Channel::AuthReq,
        Channel::AuthResp,
        Channel::Sync,
        Channel::SyncAck,
        Channel::SyncReq,
        Channel::Cmd,
        Channel::CmdAck,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Channel::Status => "status",
            Channel::Events => "events",
            Channel::AuthReq => "auth/req",
            Channel::AuthResp => "auth/resp",
            Channel::Sync => "sync",
            Channel::SyncAck => "sync/ack",
            Channel::SyncReq => "sync/req",
            Channel::Cmd => "cmd",
            Channel::CmdAck => "cmd/ack",
        }
    }

    /// Channels a device publishes on (the others it only receives).
    pub fn from_device(self) -> bool {
        matches!(
            self,
            Channel::Status
                | Channel::Events
                | Channel::AuthReq
                | Channel::SyncAck
                | Channel::SyncReq
                | Channel::CmdAck
        )
    }
}

/// `{prefix}/{site}/{device}/{channel}`.
pub fn topic(prefix: &str, site: SiteId, device: DeviceId, channel: Channel) -> String {
    format!("{prefix}/{site}/{device}/{}", channel.suffix())
}

/// Splits a device topic into its site, device and channel.
pub fn parse_topic(
    prefix: &str,
    topic: &str,
) -> Result<(SiteId, DeviceId, Channel), ProtocolError> {
    let bad = || ProtocolError::BadTopic(topic.chars().take(200).collect());
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(bad)?;
    let mut parts = rest.splitn(3, '/');
    let (site, device, chan) = (
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    let channel = Channel::ALL
        .into_iter()
        .find(|c| c.suffix() == chan)
        .ok_or_else(bad)?;
    Ok((parse_site(site)?, parse_device(device)?, channel))
}

fn parse_prefixed(s: &str, prefix: &str) -> Result<u32, ProtocolError> {
    s.strip_prefix(prefix)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.len() <= 10)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ProtocolError::BadId(s.chars().take(40).collect()))
}

pub fn parse_device(s: &str) -> Result<DeviceId, ProtocolError> {
    parse_prefixed(s, "dev-").map(DeviceId)
}

pub fn parse_site(s: &str) -> Result<SiteId, ProtocolError> {
    parse_prefixed(s, "site-").map(SiteId)
}

/// Decodes a payload strictly and within the size limit.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtocolError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types always serialize")
}

/// Most digits in a card number: `u64::MAX` has 20.
pub const MAX_CARD_DIGITS: usize = 20;

/// A card number as text, on the wire and in the admin API alike: 1 to
/// [`MAX_CARD_DIGITS`] ASCII decimal digits (no sign, no spaces) whose
/// value fits 64 bits.
pub fn parse_card_number(s: &str) -> Result<u64, ProtocolError> {
    const RULE: &str = "a card number is 1 to 20 decimal digits, at most 18446744073709551615";
    if s.is_empty() || s.len() > MAX_CARD_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtocolError::BadCredential(RULE));
    }
    s.parse::<u64>()
        .map_err(|_| ProtocolError::BadCredential(RULE))
}

/// A credential as a device reads it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum WireCredential {
    /// Keypad digits, as typed.
    Pin(String),
    /// The QR token text.
    Qr(String),
    /// The card number, in decimal (a string: JSON numbers lose digits).
    Card(String),
    /// The BLE pass token.
    Ble(String),
}

impl std::fmt::Debug for WireCredential {
    // Codes never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireCredential({}, redacted)", self.kind().as_str())
    }
}

impl WireCredential {
    pub fn kind(&self) -> CredentialKind {
        match self {
            WireCredential::Pin(_) => CredentialKind::Pin,
            WireCredential::Qr(_) => CredentialKind::Qr,
            WireCredential::Card(_) => CredentialKind::Card,
            WireCredential::Ble(_) => CredentialKind::Ble,
        }
    }

    /// What the engine checks. Malformed values are errors, not denials: a
    /// device that sends letters as a PIN has a bug worth reporting.
    pub fn to_presented(&self) -> Result<Presented<'_>, ProtocolError> {
        let check_len = |s: &str| {
            if s.len() > MAX_CREDENTIAL_LEN {
                Err(ProtocolError::BadCredential("too long"))
            } else {
                Ok(())
            }
        };
        match self {
            WireCredential::Pin(s) => Pin::parse(s)
                .map(Presented::Pin)
                .map_err(|_| ProtocolError::BadCredential("a PIN is 1 to 12 digits")),
            WireCredential::Card(s) => parse_card_number(s).map(Presented::Card),
            WireCredential::Qr(s) => check_len(s).map(|_| Presented::Qr(s)),
            WireCredential::Ble(s) => check_len(s).map(|_| Presented::Ble(s)),
        }
    }

    pub fn from_presented(p: &Presented<'_>) -> WireCredential {
        match p {
            Presented::Pin(pin) => WireCredential::Pin(pin.reveal()),
            Presented::Card(n) => WireCredential::Card(n.to_string()),
            Presented::Qr(t) => WireCredential::Qr((*t).to_string()),
            Presented::Ble(t) => WireCredential::Ble((*t).to_string()),
        }
    }
}

/// `auth/req` and the body of `POST /v1/devices/{device}/validate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    /// Correlation id, chosen by the device, echoed in the answer.
    pub id: u64,
    pub credential: WireCredential,
    /// The lift floor asked for at a door phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<FloorId>,
    /// The device's own clock (informational: the engine decides by its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Granted,
    Denied,
    /// The request could not be checked (malformed credential, engine busy).
    Error,
}

/// `auth/resp`, and the validate endpoint's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthResponse {
    pub id: u64,
    pub decision: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<CredentialId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<HolderId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The keypad is locked out until then: on a `locked_out` denial and on
    /// the wrong PIN that locked it. Absent: not locked out after this
    /// check (and in answers from servers before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<Timestamp>,
    /// A request refused before it could be checked (not the JSON of an
    /// `auth/req`, over the size limit): the HTTP validate route's refusal
    /// of the same bytes, status and body. Only on `decision: error`;
    /// answers from servers before this field lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// Why a request was refused: the HTTP status and the error body
/// (`{"error", "field", "rule"}`) the HTTP device route answers to the
/// same bytes, so a device hears the same over MQTT and HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// The HTTP status: 400 (not JSON), 413 (too large), 422 (a field of
    /// the wrong type, missing or unknown).
    pub status: u16,
    /// The status in words: `unprocessable_entity`, ...
    pub error: String,
    /// The field's path (`credential.type`), or `body`.
    pub field: String,
    /// The rule it broke, in words.
    pub rule: String,
}

impl AuthResponse {
    pub fn from_decision(id: u64, d: &Decision) -> AuthResponse {
        match d {
            Decision::Granted(g) => AuthResponse {
                id,
                decision: Verdict::Granted,
                reason: None,
                credential_id: Some(g.credential),
                holder: Some(g.holder),
                origin: Some(g.origin),
                error: None,
                locked_until: None,
                refused: None,
            },
            Decision::Denied {
                reason,
                locked_until,
            } => AuthResponse {
                id,
                decision: Verdict::Denied,
                reason: Some(*reason),
                credential_id: None,
                holder: None,
                origin: None,
                error: None,
                locked_until: *locked_until,
                refused: None,
            },
        }
    }

    pub fn error(id: u64, message: impl Into<String>) -> AuthResponse {
        AuthResponse {
            id,
            decision: Verdict::Error,
            reason: None,
            credential_id: None,
            holder: None,
            origin: None,
            error: Some(message.into()),
            locked_until: None,
            refused: None,
        }
    }

    /// The answer to a request refused before it could be checked: an
    /// `error` decision whose `error` text is the rule (as before
    /// `refused` was added), with the refusal itself.
    pub fn refused(id: u64, refusal: Refusal) -> AuthResponse {
        AuthResponse {
            refused: Some(refusal.clone()),
            ..AuthResponse::error(id, refusal.rule)
        }
    }
}

/// `status`, retained; also the device's Last Will (`online: false`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// How an action was done, as the activity log says it (seeds/004).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// By hand, no code.
    Manual,
    /// From the keypad with a code.
    Keypad,
    /// Open Door from the platform.
    Remote,
    Qr,
    Card,
    Ble,
    /// The lock relocked itself.
    AutoRelock,
}

/// What happened on a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    Unlocked {
        how: How,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<CredentialId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
    },
    Locked {
        how: How,
    },
    AccessDenied {
        how: How,
        reason: DenyReason,
    },
    MotorBlocked,
    DoorOpened,
    DoorClosed,
    DoorAjar,
    DoorForcedOpen,
    BatteryLow {
        battery_pct: u8,
    },
    KeypadLockedOut {
        until: Timestamp,
    },
    CodeSet {
        credential: CredentialId,
    },
    CodeSetFailed {
        credential: CredentialId,
        reason: SyncFailure,
    },
}

impl EventKind {
    /// How many kinds there are.
    pub const COUNT: usize = 12;

    /// Every kind's name, in [`EventKind::index`] order: the one list that
    /// metrics, filters and the simulator's event accounting share.
    pub const NAMES: [&'static str; Self::COUNT] = [
        "unlocked",
        "locked",
        "access_denied",
        "motor_blocked",
        "door_opened",
        "door_closed",
        "door_ajar",
        "door_forced_open",
        "battery_low",
        "keypad_locked_out",
        "code_set",
        "code_set_failed",
    ];

    /// The kind's position in [`EventKind::NAMES`] (for per-kind arrays).
    pub fn index(&self) -> usize {
        match self {
            EventKind::Unlocked { .. } => 0,
            EventKind::Locked { .. } => 1,
            EventKind::AccessDenied { .. } => 2,
            EventKind::MotorBlocked => 3,
            EventKind::DoorOpened => 4,
            EventKind::DoorClosed => 5,
            EventKind::DoorAjar => 6,
            EventKind::DoorForcedOpen => 7,
            EventKind::BatteryLow { .. } => 8,
            EventKind::KeypadLockedOut { .. } => 9,
            EventKind::CodeSet { .. } => 10,
            EventKind::CodeSetFailed { .. } => 11,
        }
    }

    /// A bounded name for metrics and filters.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// `events`: one event with the device's own sequence number, so the
/// engine logs each once (QoS 1 redeliveries are dropped by
/// (device, boot, seq)).
/// The kind is flattened into the object, which serde cannot combine with
/// `deny_unknown_fields`: extra fields in an event are ignored (newer
/// firmware may add some), unlike every other payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// The device's boot epoch (a counter or boot id it keeps across
    /// restarts and changes when its `seq` starts again, as after a
    /// reflash); events are logged once per `(device, boot, seq)`. Absent
    /// (devices from before protocol version 2): 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub boot: u64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub kind: EventKind,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A code's secret as the lock stores it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum WireSecret {
    Pin(String),
    Card(String),
}

impl WireSecret {
    /// What the lock stores for `secret`; `None` for a QR or BLE
    /// credential, which the lock checks by the token's signature and does
    /// not store in protocol version 1.
    pub fn from_secret(secret: &Secret) -> Option<WireSecret> {
        match secret {
            Secret::Pin(pin) => Some(WireSecret::Pin(pin.reveal())),
            Secret::Card(n) => Some(WireSecret::Card(n.to_string())),
            Secret::Token { .. } => None,
        }
    }
}

impl std::fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireSecret(redacted)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncCode {
    pub credential: CredentialId,
    pub secret: WireSecret,
    /// When the code may open, for a device that decides offline (a
    /// Bluetooth lock). Absent: always (a permanent code, or a payload
    /// from before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<SyncValidity>,
}

/// A code's validity as an offline device checks it against its own
/// clock. Use limits are not here: a device that decides alone cannot
/// count uses made at the other doors, so they are enforced online only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncValidity {
    /// Unix seconds; before it the code is `not_yet_valid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_s: Option<i64>,
    /// Unix seconds; from it on the code is `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after_s: Option<i64>,
    /// Weekdays and a local daily window; outside it `outside_schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<SyncWeekly>,
    /// Unix seconds: a guest stay's check-in, set when the lock's guest
    /// settings prevent access until then (`not_checked_in` before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_in_s: Option<i64>,
    /// Unix seconds: a guest stay's check-out, set when the lock's guest
    /// settings revoke access on check-out (`checked_out` from it on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_out_s: Option<i64>,
}

/// A weekly window on the site's wall clock. The zone travels by IANA
/// name so the device resolves DST itself (jiff), as the engine does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncWeekly {
    #[schema(value_type = Vec<String>)]
    pub days: Weekdays,
    pub window: DailyWindow,
    /// Checked when decoded: an unknown zone is a malformed payload.
    #[serde(deserialize_with = "known_zone")]
    pub tz: String,
}

fn known_zone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    match jiff::tz::TimeZone::get(&name) {
        Ok(_) => Ok(name),
        Err(_) => Err(serde::de::Error::custom(format!(
            "unknown time zone {:?}",
            name.chars().take(60).collect::<String>()
        ))),
    }
}

impl SyncValidity {
    /// The validity of `c` at `device` as the engine would judge it by
    /// time alone; `None` when time never matters (a permanent code, or a
    /// stay whose lock ignores check-in and check-out).
    pub fn of(
        c: &crate::domain::Credential,
        tz: &jiff::tz::TimeZone,
        stay: Option<(&crate::domain::Stay, crate::domain::GuestSettings)>,
    ) -> Option<SyncValidity> {
        let (start, end) = c.schedule.bounds();
        let mut v = SyncValidity {
            not_before_s: start.map(|t| t.as_second()),
            not_after_s: end.map(|t| t.as_second()),
            weekly: c.schedule.weekly().and_then(|(days, window)| {
                // Sites are created from IANA names; a zone without one
                // (a fixed offset) cannot travel and is sent as such.
                Some(SyncWeekly {
                    days,
                    window,
                    tz: tz.iana_name()?.to_string(),
                })
            }),
            ..SyncValidity::default()
        };
        if let Some((s, g)) = stay {
            if g.prevent_access_until_checked_in && !s.checked_in {
                v.check_in_s = Some(s.check_in_at.as_second());
            }
            if g.revoke_access_on_check_out {
                // Checked out early: from now on (any past instant works).
                v.check_out_s = Some(if s.checked_out {
                    i64::MIN
                } else {
                    s.check_out_at.as_second()
                });
            }
        }
        (v != SyncValidity::default()).then_some(v)
    }

    /// The engine's time rules in its order (`Schedule::check_time`, then
    /// the stay), at the device's `now`.
    pub fn check(&self, now: Timestamp) -> Result<(), DenyReason> {
        let now_s = now.as_second();
        if self.not_before_s.is_some_and(|s| now_s < s) {
            return Err(DenyReason::NotYetValid);
        }
        if self.not_after_s.is_some_and(|e| now_s >= e) {
            return Err(DenyReason::Expired);
        }
        if let Some(w) = &self.weekly {
            // The name was checked when decoded; a failure here cannot
            // happen, and denying is the safe side if it did.
            let tz = jiff::tz::TimeZone::get(&w.tz).map_err(|_| DenyReason::OutsideSchedule)?;
            if !w.window.contains_at(w.days, now, &tz) {
                return Err(DenyReason::OutsideSchedule);
            }
        }
        if self.check_out_s.is_some_and(|t| now_s >= t) {
            return Err(DenyReason::CheckedOut);
        }
        if self.check_in_s.is_some_and(|t| now_s < t) {
            return Err(DenyReason::NotCheckedIn);
        }
        Ok(())
    }
}

/// `sync`: the delta a device must apply, with the engine's version for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncPush {
    pub version: u64,
    #[serde(default)]
    pub set: Vec<SyncCode>,
    #[serde(default)]
    pub remove: Vec<CredentialId>,
}

impl SyncPush {
    /// Every credential the message names.
    pub fn credentials(&self) -> impl Iterator<Item = CredentialId> + '_ {
        self.set
            .iter()
            .map(|c| c.credential)
            .chain(self.remove.iter().copied())
    }
}

/// One device's answer for one code in a sync: on the wire in `sync/ack`,
/// and the engine's input for `SyncAck`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncResult {
    pub credential: CredentialId,
    /// None: applied. Some: why the device could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<SyncFailure>,
}

/// `sync/req` (version 2): a device asks for its sync now. `full`: its
/// code store is empty (a reboot that lost it, a factory reset), so every
/// code it should hold is to be sent again, not only what changed; without
/// it, the pending delta is sent again (as when it comes online).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(default)]
    pub full: bool,
}

/// `sync/ack`: the version applied, and the outcome per code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncAckMsg {
    pub version: u64,
    pub results: Vec<SyncResult>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Remote Open Door.
    Open,
    Lock,
    /// A sandbox action (`DeviceCommand::simulate`): the device acts as if
    /// it happened to it and reports its own events.
    Simulate,
}

/// `cmd`: never retained (a retained unlock would replay on restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCommand {
    pub id: u64,
    pub command: CommandKind,
    /// What to simulate; present exactly when `command` is `simulate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulate: Option<SimAction>,
}

/// Below this level a sandbox battery action also reports `battery_low`
/// (a device uses its own threshold).
pub const SANDBOX_LOW_BATTERY_PCT: u8 = 20;

/// A sandbox action: what the admin API's `POST
/// /v1/devices/{device}/simulate/{action}` asks a device to act out, and
/// the `simulate` of a `cmd` that carries it to a connected device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum SimAction {
    /// The device comes online.
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Connect,
    /// The device drops offline.
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Disconnect,
    /// Someone types `code` on the device's keypad; the code is checked
    /// as any typed code is.
    KeypadCodeEntry { code: String },
    /// Someone taps a card (its number in decimal, as a string).
    CardTap { card_number: String },
    /// The bolt is thrown by hand.
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Lock,
    /// The bolt is drawn by hand.
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Unlock,
    #[serde(deserialize_with = "crate::domain::no_fields")]
    DoorOpen,
    #[serde(deserialize_with = "crate::domain::no_fields")]
    DoorClose,
    #[serde(deserialize_with = "crate::domain::no_fields")]
    DoorForcedOpen,
    /// The door stays open past its time.
    #[serde(deserialize_with = "crate::domain::no_fields")]
    DoorLeftOpen,
    /// The motor blocks.
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Jam,
    /// The battery reads `level_pct` (0 to 100).
    Battery { level_pct: u8 },
}

impl std::fmt::Debug for SimAction {
    // A typed code never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimAction({})", self.name())
    }
}

impl SimAction {
    /// The action's name, as in the route and on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            SimAction::Connect => "connect",
            SimAction::Disconnect => "disconnect",
            SimAction::KeypadCodeEntry { .. } => "keypad_code_entry",
            SimAction::CardTap { .. } => "card_tap",
            SimAction::Lock => "lock",
            SimAction::Unlock => "unlock",
            SimAction::DoorOpen => "door_open",
            SimAction::DoorClose => "door_close",
            SimAction::DoorForcedOpen => "door_forced_open",
            SimAction::DoorLeftOpen => "door_left_open",
            SimAction::Jam => "jam",
            SimAction::Battery { .. } => "battery",
        }
    }

    /// Can a device of `kind` act this out? The rule the server checks
    /// before it acts or forwards, and that devices follow: every device
    /// connects, disconnects and has a battery; locks, keypads and door
    /// phones read codes and cards; only a lock has a bolt and a motor;
    /// locks (their built-in door sensor) and door sensors see the door.
    /// Err: why not.
    pub fn fits(&self, kind: DeviceKind) -> Result<(), &'static str> {
        use DeviceKind as K;
        let ok = match self {
            SimAction::Connect | SimAction::Disconnect | SimAction::Battery { .. } => true,
            SimAction::KeypadCodeEntry { .. } | SimAction::CardTap { .. } => {
                matches!(kind, K::Lock | K::Keypad | K::DoorPhone)
            }
            SimAction::Lock | SimAction::Unlock | SimAction::Jam => kind == K::Lock,
            SimAction::DoorOpen
            | SimAction::DoorClose
            | SimAction::DoorForcedOpen
            | SimAction::DoorLeftOpen => matches!(kind, K::Lock | K::DoorSensor),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            SimAction::KeypadCodeEntry { .. } | SimAction::CardTap { .. } => {
                "only a lock, a keypad or a door phone reads codes and cards"
            }
            SimAction::Lock | SimAction::Unlock | SimAction::Jam => {
                "only a lock has a bolt and a motor"
            }
            _ => "only a lock or a door sensor sees the door",
        })
    }

    /// Its values, checked by the rules a device reads them with:
    /// Err((field, rule)).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        match self {
            SimAction::KeypadCodeEntry { code } => Pin::parse(code)
                .map(|_| ())
                .map_err(|_| ("code", "a PIN is 1 to 12 digits")),
            SimAction::CardTap { card_number } => {
                parse_card_number(card_number).map(|_| ()).map_err(|_| {
                    (
                        "card_number",
                        "a card number is 1 to 20 decimal digits, at most 18446744073709551615",
                    )
                })
            }
            SimAction::Battery { level_pct } if *level_pct > 100 => Err(("level_pct", "0 to 100")),
            _ => Ok(()),
        }
    }

    /// The credential a code entry or card tap presents.
    pub fn credential(&self) -> Option<WireCredential> {
        match self {
            SimAction::KeypadCodeEntry { code } => Some(WireCredential::Pin(code.clone())),
            SimAction::CardTap { card_number } => Some(WireCredential::Card(card_number.clone())),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandResult {
    Ok,
    MotorBlocked,
    LowBattery,
    Offline,
    /// The device cannot act this out (a `simulate` its kind does not fit).
    Unsupported,
}

/// `cmd/ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAck {
    pub id: u64,
    pub result: CommandResult,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::SyncBatch;

    #[test]
    fn topics_round_trip() {
        let t = topic("fleet", SiteId(3), DeviceId(12), Channel::AuthReq);
        assert_eq!(t, "fleet/site-3/dev-12/auth/req");
        assert_eq!(
            parse_topic("fleet", &t),
            Ok((SiteId(3), DeviceId(12), Channel::AuthReq))
        );
        for bad in [
            "fleet/site-3/dev-12",
            "other/site-3/dev-12/events",
            "fleet/site-x/dev-12/events",
            "fleet/site-3/dev-/events",
            "fleet/site-3/dev-1/nope",
        ] {
            assert!(parse_topic("fleet", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_request_matches_the_documented_shape() {
        let r: AuthRequest =
            decode(br#"{"id":7,"credential":{"type":"pin","value":"482916"}}"#).unwrap();
        assert_eq!(r.id, 7);
        assert!(matches!(r.credential.to_presented(), Ok(Presented::Pin(_))));
        assert!(!format!("{r:?}").contains("482916"));
    }

    #[test]
    fn strict_and_bounded_decoding() {
        assert!(matches!(
            decode::<AuthRequest>(br#"{"id":7,"credential":{"type":"pin","value":"1"},"x":1}"#),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode::<AuthRequest>(b"not json"),
            Err(ProtocolError::Malformed(_))
        ));
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            decode::<AuthRequest>(&big),
            Err(ProtocolError::TooLarge(MAX_PAYLOAD_BYTES + 1))
        );
        let letters = WireCredential::Pin("12ab".into());
        assert!(letters.to_presented().is_err());
        let card = WireCredential::Card("-1".into());
        assert!(card.to_presented().is_err());
    }

    #[test]
    fn sync_batches_split_and_skip_tokens() {
        let batch = SyncBatch {
            version: 9,
            set: (0..MAX_SYNC_CODES as u32 + 1)
                .map(|i| (CredentialId(i), Secret::Card(u64::from(i))))
                .chain([(CredentialId(999), Secret::Token { version: 1 })])
                .collect(),
            remove: vec![CredentialId(500)],
            validity: Default::default(),
        };
        let pushes = SyncPush::from_batch(&batch);
        assert_eq!(pushes.len(), 3);
        assert!(pushes.iter().all(|p| p.version == 9));
        assert_eq!(pushes[0].set.len(), MAX_SYNC_CODES);
        assert_eq!(pushes[1].set.len(), 1);
        assert_eq!(pushes[2].remove, vec![CredentialId(500)]);
        assert!(pushes
            .iter()
            .all(|p| p.credentials().all(|c| c != CredentialId(999))));
        for p in &pushes {
            assert!(encode(p).len() <= MAX_PAYLOAD_BYTES);
        }
        assert!(SyncPush::from_batch(&SyncBatch::default()).is_empty());
    }

    #[test]
    fn events_carry_a_flat_kind() {
        let e = Event {
            seq: 5,
            boot: 0,
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            kind: EventKind::DoorOpened,
        };
        let json = String::from_utf8(encode(&e)).unwrap();
        assert!(json.contains(r#""event":"door_opened""#), "{json}");
        assert!(!json.contains("boot"), "boot 0 is left out: {json}");
        assert_eq!(decode::<Event>(json.as_bytes()).unwrap(), e);
    }

    /// Version 2's boot epoch: sent when not 0, read back; a version 1
    /// event (no `boot`) is boot 0.
    #[test]
    fn events_carry_an_optional_boot_epoch() {
        let e = Event {
            seq: 1,
            boot: 7,
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            kind: EventKind::DoorOpened,
        };
        let json = String::from_utf8(encode(&e)).unwrap();
        assert!(json.contains(r#""boot":7"#), "{json}");
        assert_eq!(decode::<Event>(json.as_bytes()).unwrap(), e);
        let old: Event =
            decode(br#"{"seq":3,"at":"2026-11-23T08:00:00Z","event":"door_closed"}"#).unwrap();
        assert_eq!((old.seq, old.boot), (3, 0));
        assert!(decode::<Event>(
            br#"{"seq":3,"boot":-1,"at":"2026-11-23T08:00:00Z","event":"door_closed"}"#
        )
        .is_err());
    }

    #[test]
    fn sync_validity_round_trips_and_old_payloads_still_parse() {
        let code = SyncCode {
            credential: CredentialId(7),
            secret: WireSecret::Pin("4829".into()),
            valid: Some(SyncValidity {
                not_before_s: Some(1_800_000_000),
                not_after_s: Some(1_800_086_400),
                weekly: Some(SyncWeekly {
                    days: Weekdays::from_days([jiff::civil::Weekday::Monday]),
                    window: DailyWindow {
                        start: jiff::civil::time(22, 0, 0, 0),
                        end: jiff::civil::time(6, 0, 0, 0),
                    },
                    tz: "Europe/Berlin".into(),
                }),
                check_in_s: None,
                check_out_s: Some(1_800_050_000),
            }),
        };
        let json = String::from_utf8(encode(&code)).unwrap();
        assert!(json.contains(r#""not_before_s":1800000000"#), "{json}");
        assert!(!json.contains("check_in_s"), "{json}");
        assert_eq!(decode::<SyncCode>(json.as_bytes()).unwrap(), code);
        // A payload from before `valid`: parses, and a code without one is
        // sent without the field.
        let old = r#"{"credential":7,"secret":{"type":"pin","value":"4829"}}"#;
        let parsed = decode::<SyncCode>(old.as_bytes());
        let Ok(parsed) = parsed else {
            panic!("{parsed:?}");
        };
        assert_eq!(parsed.valid, None);
        let again = String::from_utf8(encode(&parsed)).unwrap();
        assert!(!again.contains("valid"), "{again}");
    }

    #[test]
    fn codes_with_a_validity_split_within_the_payload_limit() {
        let weekly = SyncValidity {
            not_before_s: Some(1_800_000_000),
            not_after_s: Some(1_900_000_000),
            weekly: Some(SyncWeekly {
                days: Weekdays::ALL,
                window: DailyWindow::WHOLE_DAY,
                tz: "America/Argentina/ComodRivadavia".into(),
            }),
            check_in_s: Some(1_800_000_000),
            check_out_s: Some(1_800_100_000),
        };
        let batch = SyncBatch {
            version: 3,
            set: (0..MAX_SYNC_CODES as u32)
                .map(|i| {
                    (
                        CredentialId(4_000_000_000 - i),
                        Secret::Card(u64::MAX - u64::from(i)),
                    )
                })
                .collect(),
            remove: Vec::new(),
            validity: (0..MAX_SYNC_CODES as u32)
                .map(|i| (CredentialId(4_000_000_000 - i), weekly.clone()))
                .collect(),
        };
        let pushes = SyncPush::from_batch(&batch);
        assert!(pushes.len() > 1);
        assert_eq!(
            pushes.iter().map(|p| p.set.len()).sum::<usize>(),
            MAX_SYNC_CODES
        );
        for p in &pushes {
            let bytes = encode(p);
            assert!(bytes.len() <= MAX_PAYLOAD_BYTES, "{}", bytes.len());
            assert_eq!(&decode::<SyncPush>(&bytes).unwrap(), p);
        }
    }

    #[test]
    fn a_malformed_validity_is_a_protocol_error() {
        let with = |valid: &str| {
            let old = encode(&SyncCode {
                credential: CredentialId(7),
                secret: WireSecret::Pin("4829".into()),
                valid: None,
            });
            let old = String::from_utf8(old).unwrap();
            let head = old.strip_suffix('}').unwrap_or(&old);
            format!("{head},\"valid\":{valid}}}")
        };
        for bad in [
            r#""soon""#,
            r#"{"not_before_s":"yesterday"}"#,
            r#"{"not_after":5}"#,
            r#"{"weekly":{"days":["mon"],"window":{"start":"09:00","end":"17:00"},"tz":"Mars/Olympus"}}"#,
            r#"{"weekly":{"days":["funday"],"window":{"start":"09:00","end":"17:00"},"tz":"UTC"}}"#,
            r#"{"weekly":{"days":["mon"],"window":{"start":"25:00","end":"17:00"},"tz":"UTC"}}"#,
            r#"{"not_after_s":1e400}"#,
        ] {
            let text = with(bad);
            match decode::<SyncCode>(text.as_bytes()) {
                Err(ProtocolError::Malformed(_)) => {}
                other => panic!("{text}: {other:?}"),
            }
        }
        let good = with(
            r#"{"weekly":{"days":["mon"],"window":{"start":"09:00","end":"17:00"},"tz":"UTC"}}"#,
        );
        assert!(decode::<SyncCode>(good.as_bytes()).is_ok(), "{good}");
    }

    #[test]
    fn sync_validity_checks_the_engines_time_rules_in_its_order() {
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        // Monday 2026-03-23, 10:00 in Berlin (CET).
        let at = |h: i8, d: i8| {
            jiff::civil::date(2026, 3, d)
                .at(h, 0, 0, 0)
                .to_zoned(tz.clone())
                .unwrap()
                .timestamp()
        };
        let v = SyncValidity {
            not_before_s: Some(at(0, 23).as_second()),
            not_after_s: Some(at(0, 30).as_second()),
            weekly: Some(SyncWeekly {
                days: Weekdays::from_days([jiff::civil::Weekday::Monday]),
                window: DailyWindow {
                    start: jiff::civil::time(9, 0, 0, 0),
                    end: jiff::civil::time(17, 0, 0, 0),
                },
                tz: "Europe/Berlin".into(),
            }),
            ..SyncValidity::default()
        };
        assert_eq!(v.check(at(10, 22)), Err(DenyReason::NotYetValid));
        assert_eq!(v.check(at(10, 23)), Ok(()));
        assert_eq!(v.check(at(18, 23)), Err(DenyReason::OutsideSchedule));
        assert_eq!(v.check(at(10, 24)), Err(DenyReason::OutsideSchedule));
        // Monday after the clocks went forward (29 March): still 10:00 local.
        assert_eq!(v.check(at(10, 30)), Err(DenyReason::Expired));
        let stay = SyncValidity {
            check_in_s: Some(100),
            check_out_s: Some(200),
            ..SyncValidity::default()
        };
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        assert_eq!(stay.check(t(99)), Err(DenyReason::NotCheckedIn));
        assert_eq!(stay.check(t(150)), Ok(()));
        assert_eq!(stay.check(t(200)), Err(DenyReason::CheckedOut));
    }

    #[test]
    fn a_simulate_command_travels_as_documented_and_old_commands_are_unchanged() {
        let cmd = DeviceCommand {
            id: 5,
            command: CommandKind::Simulate,
            simulate: Some(SimAction::KeypadCodeEntry {
                code: "482916".into(),
            }),
        };
        let json = String::from_utf8(encode(&cmd)).unwrap();
        assert_eq!(
            json,
            r#"{"id":5,"command":"simulate","simulate":{"action":"keypad_code_entry","code":"482916"}}"#
        );
        assert_eq!(decode::<DeviceCommand>(json.as_bytes()), Ok(cmd.clone()));
        // An Open Door is the bytes it always was.
        let open = DeviceCommand {
            id: 3,
            command: CommandKind::Open,
            simulate: None,
        };
        assert_eq!(encode(&open), br#"{"id":3,"command":"open"}"#.to_vec());
        for bad in [
            r#"{"id":1,"command":"simulate","simulate":{"action":"explode"}}"#,
            r#"{"id":1,"command":"simulate","simulate":{"action":"jam","code":"1"}}"#,
            r#"{"id":1,"command":"simulate","simulate":{"action":"battery"}}"#,
        ] {
            assert!(decode::<DeviceCommand>(bad.as_bytes()).is_err(), "{bad}");
        }
        // The code never reaches a log.
        assert!(!format!("{:?}", cmd.simulate).contains("482916"));
    }

    #[test]
    fn sandbox_actions_fit_the_kinds_that_can_act_them_out() {
        use DeviceKind as K;
        let code = SimAction::KeypadCodeEntry {
            code: "1234".into(),
        };
        let kinds = [K::Lock, K::Keypad, K::DoorSensor, K::DoorPhone];
        let fits =
            |a: &SimAction| -> Vec<bool> { kinds.iter().map(|k| a.fits(*k).is_ok()).collect() };
        assert_eq!(fits(&SimAction::Connect), [true; 4]);
        assert_eq!(fits(&SimAction::Battery { level_pct: 5 }), [true; 4]);
        assert_eq!(fits(&code), [true, true, false, true]);
        assert_eq!(fits(&SimAction::Jam), [true, false, false, false]);
        assert_eq!(fits(&SimAction::DoorLeftOpen), [true, false, true, false]);
        assert!(SimAction::Jam.fits(K::Keypad).unwrap_err().contains("bolt"));
        assert_eq!(code.check(), Ok(()));
        assert_eq!(
            SimAction::KeypadCodeEntry {
                code: "12ab".into()
            }
            .check()
            .unwrap_err()
            .0,
            "code"
        );
        assert_eq!(
            SimAction::CardTap {
                card_number: "18446744073709551616".into()
            }
            .check()
            .unwrap_err()
            .0,
            "card_number"
        );
        assert_eq!(
            SimAction::Battery { level_pct: 101 }.check().unwrap_err().0,
            "level_pct"
        );
        assert_eq!(SimAction::Battery { level_pct: 100 }.check(), Ok(()));
    }
}
