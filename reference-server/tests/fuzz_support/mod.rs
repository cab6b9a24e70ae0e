//! Generators for fuzzing the device protocol, shared by the server's
//! tests (`protocol_fuzz.rs`) and the simulator's (`sim/tests/decode_fuzz.rs`,
//! which includes this file by path): valid payloads of every wire type,
//! edits of their JSON tree and of their bytes, and random JSON that uses
//! the protocol's keys and words.

#![allow(dead_code)]

use jiff::Timestamp;
use proptest::prelude::*;
use reference_server::domain::{
    CredentialId, DailyWindow, DenyReason, FloorId, HolderId, Origin, SyncFailure, Weekdays,
};
use reference_server::protocol::{
    decode, encode, AuthRequest, AuthResponse, CommandAck, CommandKind, CommandResult,
    DeviceCommand, Event, EventKind, How, ProtocolError, SimAction, Status, SyncAckMsg, SyncCode,
    SyncPush, SyncResult, SyncValidity, SyncWeekly, Verdict, WireCredential, WireSecret,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Cases per property: `PROPTEST_CASES` or 10,000.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        cases,
        // Shrinking a failure is worth a while, not forever.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

// ---- generators of valid payloads --------------------------------------

pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (1_500_000_000i64..2_500_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
            .prop_filter_map("inside jiff's range", |s| Timestamp::from_second(s).ok()),
    ]
}

pub fn credential_id() -> impl Strategy<Value = CredentialId> {
    any::<u32>().prop_map(CredentialId)
}

pub fn deny_reason() -> impl Strategy<Value = DenyReason> {
    prop::sample::select(DenyReason::ALL.to_vec())
}

pub fn origin() -> impl Strategy<Value = Origin> {
    prop::sample::select(vec![Origin::Automatic, Origin::Manual, Origin::Fallback])
}

pub fn sync_failure() -> impl Strategy<Value = SyncFailure> {
    prop::sample::select(vec![
        SyncFailure::LockFull,
        SyncFailure::DuplicateOnDevice,
        SyncFailure::TimedOut,
        SyncFailure::Offline,
    ])
}

pub fn how() -> impl Strategy<Value = How> {
    prop::sample::select(vec![
        How::Manual,
        How::Keypad,
        How::Remote,
        How::Qr,
        How::Card,
        How::Ble,
        How::AutoRelock,
    ])
}

pub fn weekdays() -> impl Strategy<Value = Weekdays> {
    prop::collection::vec(0u8..7, 0..8).prop_map(|days| {
        Weekdays::from_days(
            days.into_iter()
                .filter_map(|d| jiff::civil::Weekday::from_monday_zero_offset(d as i8).ok()),
        )
    })
}

pub fn window() -> impl Strategy<Value = DailyWindow> {
    (0i8..24, 0i8..60, 0i8..24, 0i8..60).prop_map(|(h1, m1, h2, m2)| DailyWindow {
        start: jiff::civil::time(h1, m1, 0, 0),
        end: jiff::civil::time(h2, m2, 0, 0),
    })
}

/// Text as a device might send it: digits, tokens, or anything.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,14}",
        "[A-Za-z0-9_-]{0,60}",
        "\\PC{0,20}",
        prop::sample::select(WORDS.to_vec()).prop_map(str::to_string),
    ]
}

pub fn wire_credential() -> impl Strategy<Value = WireCredential> {
    prop_oneof![
        text().prop_map(WireCredential::Pin),
        text().prop_map(WireCredential::Qr),
        text().prop_map(WireCredential::Card),
        text().prop_map(WireCredential::Ble),
    ]
}

pub fn auth_request() -> impl Strategy<Value = AuthRequest> {
    (
        any::<u64>(),
        wire_credential(),
        prop::option::of(any::<u32>().prop_map(FloorId)),
        prop::option::of(timestamp()),
    )
        .prop_map(|(id, credential, floor, at)| AuthRequest {
            id,
            credential,
            floor,
            at,
        })
}

pub fn auth_response() -> impl Strategy<Value = AuthResponse> {
    (
        any::<u64>(),
        prop::sample::select(vec![Verdict::Granted, Verdict::Denied, Verdict::Error]),
        prop::option::of(deny_reason()),
        prop::option::of(credential_id()),
        prop::option::of(any::<u32>().prop_map(HolderId)),
        prop::option::of(origin()),
        prop::option::of(text()),
        prop::option::of(timestamp()),
    )
        .prop_map(
            |(id, decision, reason, credential_id, holder, origin, error, locked_until)| {
                AuthResponse {
                    id,
                    decision,
                    reason,
                    credential_id,
                    holder,
                    origin,
                    error,
                    locked_until,
                    refused: None,
                }
            },
        )
}

pub fn status() -> impl Strategy<Value = Status> {
    (
        any::<bool>(),
        prop::option::of(any::<u8>()),
        prop::option::of(text()),
        prop::option::of(timestamp()),
    )
        .prop_map(|(online, battery_pct, firmware, at)| Status {
            online,
            battery_pct,
            firmware,
            at,
        })
}

pub fn event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (
            how(),
            prop::option::of(credential_id()),
            prop::option::of(origin())
        )
            .prop_map(|(how, credential, origin)| EventKind::Unlocked {
                how,
                credential,
                origin
            }),
        how().prop_map(|how| EventKind::Locked { how }),
        (how(), deny_reason()).prop_map(|(how, reason)| EventKind::AccessDenied { how, reason }),
        Just(EventKind::MotorBlocked),
        Just(EventKind::DoorOpened),
        Just(EventKind::DoorClosed),
        Just(EventKind::DoorAjar),
        Just(EventKind::DoorForcedOpen),
        any::<u8>().prop_map(|battery_pct| EventKind::BatteryLow { battery_pct }),
        timestamp().prop_map(|until| EventKind::KeypadLockedOut { until }),
        credential_id().prop_map(|credential| EventKind::CodeSet { credential }),
        (credential_id(), sync_failure())
            .prop_map(|(credential, reason)| EventKind::CodeSetFailed { credential, reason }),
    ]
}

pub fn event() -> impl Strategy<Value = Event> {
    (any::<u64>(), any::<u64>(), timestamp(), event_kind()).prop_map(|(seq, boot, at, kind)| {
        Event {
            seq,
            boot,
            at,
            kind,
        }
    })
}

pub fn validity() -> impl Strategy<Value = SyncValidity> {
    let secs = || prop::option::of(any::<i64>());
    let zone = prop::sample::select(vec![
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Asia/Tokyo",
    ]);
    (
        secs(),
        secs(),
        prop::option::of((weekdays(), window(), zone)),
        secs(),
        secs(),
    )
        .prop_map(
            |(not_before_s, not_after_s, weekly, check_in_s, check_out_s)| SyncValidity {
                not_before_s,
                not_after_s,
                weekly: weekly.map(|(days, window, tz)| SyncWeekly {
                    days,
                    window,
                    tz: tz.to_string(),
                }),
                check_in_s,
                check_out_s,
            },
        )
}

pub fn sync_push() -> impl Strategy<Value = SyncPush> {
    let code = (
        credential_id(),
        prop_oneof![
            text().prop_map(WireSecret::Pin),
            text().prop_map(WireSecret::Card)
        ],
        prop::option::of(validity()),
    )
        .prop_map(|(credential, secret, valid)| SyncCode {
            credential,
            secret,
            valid,
        });
    (
        any::<u64>(),
        prop::collection::vec(code, 0..4),
        prop::collection::vec(credential_id(), 0..6),
    )
        .prop_map(|(version, set, remove)| SyncPush {
            version,
            set,
            remove,
        })
}

pub fn sync_ack() -> impl Strategy<Value = SyncAckMsg> {
    let item =
        (credential_id(), prop::option::of(sync_failure())).prop_map(|(credential, failure)| {
            SyncResult {
                credential,
                failure,
            }
        });
    (any::<u64>(), prop::collection::vec(item, 0..8))
        .prop_map(|(version, results)| SyncAckMsg { version, results })
}

/// A sandbox action with values a device reads (and some it refuses:
/// a code or card number of the wrong length).
pub fn sim_action() -> impl Strategy<Value = SimAction> {
    prop_oneof![
        prop::sample::select(vec![
            SimAction::Connect,
            SimAction::Disconnect,
            SimAction::Lock,
            SimAction::Unlock,
            SimAction::DoorOpen,
            SimAction::DoorClose,
            SimAction::DoorForcedOpen,
            SimAction::DoorLeftOpen,
            SimAction::Jam,
        ]),
        "[0-9]{0,14}".prop_map(|code| SimAction::KeypadCodeEntry { code }),
        "[0-9]{0,22}".prop_map(|card_number| SimAction::CardTap { card_number }),
        any::<u8>().prop_map(|level_pct| SimAction::Battery { level_pct }),
    ]
}

pub fn command() -> impl Strategy<Value = DeviceCommand> {
    prop_oneof![
        (
            any::<u64>(),
            prop::sample::select(vec![CommandKind::Open, CommandKind::Lock]),
        )
            .prop_map(|(id, command)| DeviceCommand {
                id,
                command,
                simulate: None,
            }),
        (any::<u64>(), sim_action()).prop_map(|(id, action)| DeviceCommand {
            id,
            command: CommandKind::Simulate,
            simulate: Some(action),
        }),
    ]
}

pub fn command_ack() -> impl Strategy<Value = CommandAck> {
    (
        any::<u64>(),
        prop::sample::select(vec![
            CommandResult::Ok,
            CommandResult::MotorBlocked,
            CommandResult::LowBattery,
            CommandResult::Offline,
            CommandResult::Unsupported,
        ]),
    )
        .prop_map(|(id, result)| CommandAck { id, result })
}

// ---- mutations ----------------------------------------------------------

/// Keys of the protocol's payloads: random objects use them, so a
/// mutation can put a known field in the wrong place or shape.
pub const KEYS: &[&str] = &[
    "id",
    "credential",
    "type",
    "value",
    "floor",
    "at",
    "decision",
    "reason",
    "credential_id",
    "holder",
    "origin",
    "error",
    "online",
    "battery_pct",
    "firmware",
    "seq",
    "event",
    "how",
    "until",
    "version",
    "set",
    "remove",
    "secret",
    "valid",
    "not_before_s",
    "not_after_s",
    "weekly",
    "days",
    "window",
    "start",
    "end",
    "tz",
    "check_in_s",
    "check_out_s",
    "results",
    "failure",
    "command",
    "result",
    "tokens",
    "simulate",
    "action",
    "code",
    "card_number",
    "level_pct",
];

/// Words of the protocol (enum values, times, zones) and near misses.
pub const WORDS: &[&str] = &[
    "pin",
    "qr",
    "card",
    "ble",
    "granted",
    "denied",
    "error",
    "unlocked",
    "locked",
    "access_denied",
    "motor_blocked",
    "door_opened",
    "keypad_locked_out",
    "code_set",
    "code_set_failed",
    "battery_low",
    "keypad",
    "auto_relock",
    "remote",
    "wrong_pin",
    "expired",
    "lock_full",
    "timed_out",
    "open",
    "lock",
    "ok",
    "low_battery",
    "offline",
    "automatic",
    "fallback",
    "mon",
    "sun",
    "funday",
    "09:00",
    "24:00",
    "25:61",
    "23:59:59.999999999",
    "UTC",
    "Europe/Berlin",
    "Mars/Olympus",
    "../../etc/localtime",
    "2026-01-05T08:00:00Z",
    "-009999-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "482916",
    "0000000000000",
    "18446744073709551616",
    "-1",
    "",
    "\u{0}",
    "\u{202E}",
];

pub fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(WORDS.to_vec()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

/// Random JSON whose objects mostly use the protocol's keys.
pub fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ];
    json_leaf().prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// One change to a JSON tree, at the node `at` (preorder, modulo the count).
#[derive(Clone, Debug)]
pub enum TreeEdit {
    Replace(usize, Value),
    Remove(usize),
    Insert(usize, String, Value),
}

pub fn tree_edit() -> impl Strategy<Value = TreeEdit> {
    let key = prop::sample::select(KEYS.to_vec()).prop_map(str::to_string);
    prop_oneof![
        (any::<usize>(), any_json()).prop_map(|(at, v)| TreeEdit::Replace(at, v)),
        any::<usize>().prop_map(TreeEdit::Remove),
        (any::<usize>(), key, any_json()).prop_map(|(at, k, v)| TreeEdit::Insert(at, k, v)),
    ]
}

pub fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The node at preorder index `n` (0 is `v` itself).
pub fn nth(v: &mut Value, mut n: usize) -> Option<&mut Value> {
    if n == 0 {
        return Some(v);
    }
    n -= 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => return None,
    };
    for c in children {
        let size = count(c);
        if n < size {
            return nth(c, n);
        }
        n -= size;
    }
    None
}

pub fn apply_edit(v: &mut Value, edit: &TreeEdit) {
    let total = count(v);
    match edit {
        TreeEdit::Replace(at, new) => {
            if let Some(node) = nth(v, at % total) {
                *node = new.clone();
            }
        }
        TreeEdit::Remove(at) => match nth(v, at % total) {
            Some(Value::Object(o)) if !o.is_empty() => {
                let k = o.keys().nth(at % o.len()).cloned().unwrap_or_default();
                o.remove(&k);
            }
            Some(Value::Array(a)) if !a.is_empty() => {
                a.remove(at % a.len());
            }
            _ => {}
        },
        TreeEdit::Insert(at, k, new) => match nth(v, at % total) {
            Some(Value::Object(o)) => {
                o.insert(k.clone(), new.clone());
            }
            Some(Value::Array(a)) => a.push(new.clone()),
            _ => {}
        },
    }
}

/// One change to the bytes of a payload.
#[derive(Clone, Debug)]
pub enum ByteEdit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

pub fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let splice = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..6),
        prop::sample::select(vec![
            &b"{"[..],
            b"}",
            b"[",
            b"]",
            b"\"",
            b",",
            b":",
            b"\\u0000",
            b"\\ud800",
            b"1e999",
            b"-0",
            b"null",
            b"\xff\xfe",
            b"\xe2\x80\xae",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| ByteEdit::Flip(at, b)),
        (any::<usize>(), splice).prop_map(|(at, b)| ByteEdit::Insert(at, b)),
        (any::<usize>(), 1usize..8).prop_map(|(at, n)| ByteEdit::Delete(at, n)),
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| ByteEdit::Duplicate(at, n)),
    ]
}

pub fn apply_bytes(b: &mut Vec<u8>, edit: &ByteEdit) {
    let len = b.len().max(1);
    match edit {
        ByteEdit::Flip(at, x) => {
            if !b.is_empty() {
                let i = at % b.len();
                b[i] ^= x | 1;
            }
        }
        ByteEdit::Insert(at, bytes) => {
            let i = at % (b.len() + 1);
            b.splice(i..i, bytes.iter().copied());
        }
        ByteEdit::Delete(at, n) => {
            let i = at % len;
            let end = (i + n).min(b.len());
            if i < end {
                b.drain(i..end);
            }
        }
        ByteEdit::Truncate(at) => b.truncate(at % len),
        ByteEdit::Duplicate(at, n) => {
            let i = at % len;
            let end = (i + n).min(b.len());
            if i < end {
                let copy: Vec<u8> = b[i..end].to_vec();
                b.splice(i..i, copy);
            }
        }
    }
}

/// Payload bytes made from a valid `T`: as is, with its JSON tree edited,
/// with its bytes edited, or random JSON.
pub fn payload<T: Serialize + std::fmt::Debug + 'static>(
    valid: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Vec<u8>> {
    let valid = valid.boxed();
    let as_json = valid
        .clone()
        .prop_map(|t| serde_json::to_value(&t).expect("wire types serialize"));
    prop_oneof![
        1 => valid.clone().prop_map(|t| encode(&t)),
        4 => (as_json, prop::collection::vec(tree_edit(), 1..4)).prop_map(|(mut v, edits)| {
            for e in &edits {
                apply_edit(&mut v, e);
            }
            serde_json::to_vec(&v).expect("a JSON tree serializes")
        }),
        3 => (valid, prop::collection::vec(byte_edit(), 1..4)).prop_map(|(t, edits)| {
            let mut b = encode(&t);
            for e in &edits {
                apply_bytes(&mut b, e);
            }
            b
        }),
        2 => any_json().prop_map(|v| serde_json::to_vec(&v).expect("a JSON tree serializes")),
    ]
}

/// Decodes `bytes` as the gateway or a device does; a value that decodes
/// must re-encode to itself (nothing is lost or invented on the way).
pub fn decodes<T>(bytes: &[u8]) -> Result<Option<T>, TestCaseError>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match decode::<T>(bytes) {
        Ok(v) => {
            let again = decode::<T>(&encode(&v));
            prop_assert_eq!(again.as_ref().ok(), Some(&v), "{:?}", again);
            Ok(Some(v))
        }
        Err(ProtocolError::Malformed(m)) => {
            prop_assert!(!m.is_empty());
            Ok(None)
        }
        Err(e) => Err(TestCaseError::fail(format!(
            "{} bytes: unexpected error {e:?}",
            bytes.len()
        ))),
    }
}

/// A device clock, from ordinary to the ends of time.
pub fn device_now() -> impl Strategy<Value = Timestamp> {
    timestamp()
}
