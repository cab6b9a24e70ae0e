//! The Home Assistant bridge (docs/reference-server.md, "Home Assistant"):
//! every lock as an HA MQTT-discovery `lock` entity.
//!
//! Per lock, under the discovery prefix (`homeassistant`), object id
//! `{prefix}_{device}` (`fleet_dev-3`):
//!
//! - `…/lock/fleet_dev-3/config`: the discovery config, retained;
//! - `…/lock/fleet_dev-3/state`: `LOCKED`, `UNLOCKED`, `JAMMED` or `OPEN`,
//!   retained, from the events the gateway logged for the device;
//! - `…/lock/fleet_dev-3/availability`: `online`/`offline`, retained, from
//!   the device's `status` (its Last Will turns it `offline`);
//! - `…/lock/fleet_dev-3/set`: `LOCK`, `UNLOCK` or `OPEN` from Home
//!   Assistant, sent to the lock as the protocol's `lock` or `open`
//!   command (the protocol has no "stay unlocked": `UNLOCK` is an Open
//!   Door, and the lock relocks by itself).
//!
//! - the same `…/lock/fleet_dev-3/set` also takes Zigbee2MQTT's
//!   `pin_code` JSON (`{"pin_code": {"user": 3, "pin_code": "4829"}}`):
//!   slot 3 of the lock set, changed, disabled (`user_enabled: false`) or
//!   cleared (`pin_code: null`) through the admin API's code commands
//!   (`service::pin_slots`); the lock's slots are then retained on
//!   `…/lock/fleet_dev-3/users` (`{"users": {"3": {"credential": 7,
//!   "pin_code": "****", "status": "enabled"}}}`, every PIN masked, as
//!   Zigbee2MQTT's `expose_pin: false`; again whenever a slot's code
//!   changes by any path, from the event log), and each JSON command answered,
//!   not retained, on `…/lock/fleet_dev-3/response` (`{"status": "ok"}`
//!   or `{"status": "error", "reason": "bad_pin", "error": "…"}`, with
//!   the request's `transaction`).
//!
//! The bridge speaks through the gateway's first broker connection (one
//! connection: Mosquitto's `use_username_as_clientid` would make a second
//! one on the same account take the first one over). That connection's
//! Last Will (`…/{prefix}/bridge/availability` = `offline`) marks every
//! lock unavailable when the server is gone; each config names both
//! availability topics (`availability_mode: all`). Only the server
//! publishes here: the embedded broker and docs/mosquitto/acl let a device
//! publish on its own device topics only, and Home Assistant's own
//! account (`homeassistant`; on the embedded broker with
//! `HomeAssistantConfig::embedded_password`) on the command topics only.
//!
//! Beside each lock, an HA `event` entity
//! (`…/event/fleet_dev-3_access/config`, retained) whose state topic
//! (`…/event/fleet_dev-3_access/state`, not retained: an event is not a
//! state to replay) carries each keypad, card, QR or BLE access as
//! `{"event_type": "granted", "how": "keypad", "credential": 4}` or
//! `{"event_type": "denied", "how": "card", "reason": "unknown_credential"}`.
//!
//! The state is the server's own record of what the lock reported
//! (`device_state`, the same the device view of the admin API shows and
//! rebuilt from the activity log at start), put in Home Assistant's words
//! by [`ha_state`]: `JAMMED` while jammed, `OPEN` while the door is open,
//! else the bolt.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use rumqttc::{AsyncClient, LastWill, QoS, SubscribeFilter};
use rustc_hash::FxHashMap;
use serde_json::json;
use tokio::sync::Semaphore;

use super::metrics::GatewayMetrics;
use crate::device_state::{DeviceState, DoorState, LockState};
use crate::domain::{DeviceId, SiteId};
use crate::protocol::{self, CommandKind, Event as DeviceEvent, EventKind};
use crate::service::{PinRefusal, PinSlotError, SlotChange, SlotView};

/// Home Assistant's default discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";
/// Commands from Home Assistant waiting for their lock's ack at once;
/// beyond, a command is dropped and logged (HA shows no state change).
const MAX_COMMANDS_IN_FLIGHT: usize = 256;
/// Longest command payload read (`UNLOCK` is 6 bytes).
const MAX_COMMAND_BYTES: usize = 16;
/// Longest `pin_code` JSON command read; longer ones are refused unread.
pub const MAX_PIN_COMMAND_BYTES: usize = 512;
/// `pin_code` commands being applied at once (each is a few durable
/// writes); beyond, a command is refused `busy`.
const MAX_PIN_COMMANDS_IN_FLIGHT: usize = 32;
/// What the `users` state shows in place of every PIN: never its digits,
/// nor how many there are.
pub const PIN_MASK: &str = "****";

/// The bridge's settings.
#[derive(Debug, Clone)]
pub struct HomeAssistantConfig {
    /// Where Home Assistant looks for discovery configs (`homeassistant`).
    pub discovery_prefix: String,
    /// With the embedded broker: the password of its `homeassistant`
    /// account (Home Assistant logs in with it); `None`, no such account.
    /// An external broker has its own accounts.
    pub embedded_password: Option<String>,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            discovery_prefix: DISCOVERY_PREFIX.into(),
            embedded_password: None,
        }
    }
}

/// What the bridge says about one lock in its discovery config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub device: DeviceId,
    pub site: SiteId,
    pub name: String,
    /// Where it is installed (HA's `suggested_area`).
    pub location: String,
    /// What it last reported (`Service::device_state`).
    pub state: DeviceState,
}

/// A lock's state in Home Assistant's words; `None` before the lock said
/// anything of its bolt, door or motor.
pub fn ha_state(s: &DeviceState) -> Option<&'static str> {
    if s.jammed {
        Some("JAMMED")
    } else if s.door_state == Some(DoorState::Open) {
        Some("OPEN")
    } else {
        s.lock_state.map(|l| match l {
            LockState::Locked => "LOCKED",
            LockState::Unlocked => "UNLOCKED",
        })
    }
}

/// A keypad, card, QR or BLE access as the HA event entity's payload;
/// `None` for anything else (a manual or remote unlock is in the state).
pub fn access_event(kind: &EventKind) -> Option<serde_json::Value> {
    use crate::protocol::How;
    let by_credential = |how: &How| matches!(how, How::Keypad | How::Card | How::Qr | How::Ble);
    match kind {
        EventKind::Unlocked {
            how, credential, ..
        } if by_credential(how) => {
            let mut v = json!({"event_type": "granted", "how": how});
            if let Some(c) = credential {
                v["credential"] = json!(c);
            }
            Some(v)
        }
        EventKind::AccessDenied { how, reason } if by_credential(how) => {
            Some(json!({"event_type": "denied", "how": how, "reason": reason}))
        }
        _ => None,
    }
}

/// A command from Home Assistant, as the lock's protocol command.
pub fn command_of(payload: &[u8]) -> Option<CommandKind> {
    match payload {
        b"LOCK" => Some(CommandKind::Lock),
        b"UNLOCK" | b"OPEN" => Some(CommandKind::Open),
        _ => None,
    }
}

/// A `pin_code` command from Home Assistant (Zigbee2MQTT's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCode {
    /// Zigbee2MQTT's `user`: the slot.
    pub slot: u16,
    pub change: SlotChange,
    /// Echoed in the answer, as Zigbee2MQTT's bridge requests do.
    pub transaction: Option<serde_json::Value>,
}

/// A refused `pin_code` command, with what of it could be read for the
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCodeRefused {
    pub error: PinSlotError,
    pub user: Option<u64>,
    pub transaction: Option<serde_json::Value>,
}

/// Is this payload a JSON command (`{…}`) rather than `LOCK`/`UNLOCK`/`OPEN`?
pub fn is_json(payload: &[u8]) -> bool {
    payload.trim_ascii_start().first() == Some(&b'{')
}

/// Reads Zigbee2MQTT's `pin_code` command:
/// `{"pin_code": {"user": 3, "user_type": "unrestricted", "user_enabled":
/// true, "pin_code": "4829"}, "transaction": "t1"}`. `pin_code` a string
/// sets the slot's PIN (enabled unless `user_enabled` is false), `null`
/// clears the slot, absent (with `user_enabled`) enables or disables it.
pub fn pin_code_of(payload: &[u8]) -> Result<PinCode, PinCodeRefused> {
    use serde_json::Value;
    let refused = |reason, message: &str, user, transaction| PinCodeRefused {
        error: PinSlotError::new(reason, message),
        user,
        transaction,
    };
    if payload.len() > MAX_PIN_COMMAND_BYTES {
        return Err(refused(
            PinRefusal::NotJson,
            "a JSON command has at most 512 bytes",
            None,
            None,
        ));
    }
    let Ok(Value::Object(mut top)) = serde_json::from_slice::<Value>(payload) else {
        return Err(refused(
            PinRefusal::NotJson,
            "not a JSON object, nor LOCK, UNLOCK or OPEN",
            None,
            None,
        ));
    };
    let transaction = top.remove("transaction");
    if transaction
        .as_ref()
        .is_some_and(|t| !(t.is_string() || t.is_u64()))
    {
        return Err(refused(
            PinRefusal::BadField,
            "transaction is a string or a number",
            None,
            None,
        ));
    }
    let Some(pin_code) = top.remove("pin_code") else {
        return Err(refused(
            if top.is_empty() {
                PinRefusal::BadField
            } else {
                PinRefusal::UnknownField
            },
            "a JSON command is {\"pin_code\": {...}}",
            None,
            transaction,
        ));
    };
    if !top.is_empty() {
        return Err(refused(
            PinRefusal::UnknownField,
            "only pin_code and transaction are known",
            None,
            transaction,
        ));
    }
    let Value::Object(mut fields) = pin_code else {
        return Err(refused(
            PinRefusal::BadField,
            "pin_code is an object with user and pin_code",
            None,
            transaction,
        ));
    };
    let user = fields.remove("user");
    let Some(user) = user.as_ref().and_then(Value::as_u64) else {
        return Err(refused(
            PinRefusal::BadField,
            "user is the slot number, a whole number",
            None,
            transaction,
        ));
    };
    let user_type = fields.remove("user_type");
    let enabled = fields.remove("user_enabled");
    let pin = fields.remove("pin_code");
    if !fields.is_empty() {
        return Err(refused(
            PinRefusal::UnknownField,
            "pin_code knows user, user_type, user_enabled and pin_code",
            Some(user),
            transaction,
        ));
    }
    let Ok(slot) = u16::try_from(user) else {
        return Err(refused(
            PinRefusal::SlotOutOfRange,
            "user is not a slot of this lock",
            Some(user),
            transaction,
        ));
    };
    match user_type {
        None => {}
        Some(Value::String(t)) if t == "unrestricted" => {}
        Some(Value::String(_)) => {
            return Err(refused(
                PinRefusal::UnsupportedUserType,
                "user_type is unrestricted (schedules are set through the admin API)",
                Some(user),
                transaction,
            ))
        }
        Some(_) => {
            return Err(refused(
                PinRefusal::BadField,
                "user_type is a string",
                Some(user),
                transaction,
            ))
        }
    }
    let enabled = match enabled {
        None => None,
        Some(Value::Bool(b)) => Some(b),
        Some(_) => {
            return Err(refused(
                PinRefusal::BadField,
                "user_enabled is true or false",
                Some(user),
                transaction,
            ))
        }
    };
    let change = match (pin, enabled) {
        (Some(Value::Null), _) => SlotChange::Clear,
        (Some(Value::String(pin)), e) => SlotChange::Set {
            pin,
            enabled: e.unwrap_or(true),
        },
        (None, Some(e)) => SlotChange::Enable(e),
        (None, None) => {
            return Err(refused(
                PinRefusal::BadField,
                "pin_code (a string, or null to clear) or user_enabled is needed",
                Some(user),
                transaction,
            ))
        }
        (Some(_), _) => {
            // A number would lose leading zeros.
            return Err(refused(
                PinRefusal::BadPin,
                "pin_code is a string of digits (or null to clear)",
                Some(user),
                transaction,
            ));
        }
    };
    Ok(PinCode {
        slot,
        change,
        transaction,
    })
}

/// A lock's `users` state: each occupied slot, its PIN masked.
pub fn users_state(slots: &[SlotView]) -> serde_json::Value {
    let users: serde_json::Map<String, serde_json::Value> = slots
        .iter()
        .map(|s| {
            (
                s.slot.to_string(),
                json!({
                    "status": if s.enabled { "enabled" } else { "disabled" },
                    "pin_code": PIN_MASK,
                    "credential": s.credential,
                }),
            )
        })
        .collect();
    json!({ "users": users })
}

/// What Home Assistant asked of a lock.
pub(crate) enum Request {
    /// `LOCK`, `UNLOCK` or `OPEN`.
    Command(CommandKind),
    /// A `pin_code` JSON command.
    PinCode(PinCode),
}

/// The bridge's topics.
#[derive(Debug, Clone)]
struct Topics {
    discovery: String,
    /// The gateway's topic prefix, the first part of each object id.
    node: String,
}

impl Topics {
    fn object_id(&self, device: DeviceId) -> String {
        format!("{}_{device}", self.node)
    }

    fn lock(&self, device: DeviceId, leaf: &str) -> String {
        format!("{}/lock/{}/{leaf}", self.discovery, self.object_id(device))
    }

    fn bridge_availability(&self) -> String {
        format!("{}/{}/bridge/availability", self.discovery, self.node)
    }

    fn command_filter(&self) -> String {
        format!("{}/lock/+/set", self.discovery)
    }

    /// The device a command topic names, exactly (`…/lock/fleet_dev-3/set`).
    fn command_device(&self, topic: &str) -> Option<DeviceId> {
        let object = topic
            .strip_prefix(self.discovery.as_str())?
            .strip_prefix("/lock/")?
            .strip_suffix("/set")?;
        let device =
            protocol::parse_device(object.strip_prefix(self.node.as_str())?.strip_prefix('_')?)
                .ok()?;
        (self.object_id(device) == object).then_some(device)
    }

    fn access(&self, device: DeviceId, leaf: &str) -> String {
        format!(
            "{}/event/{}_access/{leaf}",
            self.discovery,
            self.object_id(device)
        )
    }

    fn availability(&self, device: DeviceId) -> serde_json::Value {
        json!([
            {"topic": self.lock(device, "availability")},
            {"topic": self.bridge_availability()},
        ])
    }

    /// The access event entity's config, on the lock's HA device.
    fn access_config(&self, lock: &LockInfo) -> serde_json::Value {
        let id = self.object_id(lock.device);
        json!({
            "name": "Access",
            "unique_id": format!("{id}_access"),
            "state_topic": self.access(lock.device, "state"),
            "event_types": ["granted", "denied"],
            "availability": self.availability(lock.device),
            "availability_mode": "all",
            "device": {"identifiers": [id]},
            "origin": {"name": "fleetsim reference-server"},
        })
    }

    fn config(&self, lock: &LockInfo) -> serde_json::Value {
        let id = self.object_id(lock.device);
        let mut device = json!({
            "identifiers": [id],
            "name": lock.name,
            "manufacturer": "fleetsim",
            "model": "reference-server lock",
        });
        if !lock.location.is_empty() {
            device["suggested_area"] = json!(lock.location);
        }
        json!({
            "name": lock.name,
            "unique_id": id,
            "command_topic": self.lock(lock.device, "set"),
            "state_topic": self.lock(lock.device, "state"),
            "availability": self.availability(lock.device),
            "availability_mode": "all",
            "payload_available": "online",
            "payload_not_available": "offline",
            "payload_lock": "LOCK",
            "payload_unlock": "UNLOCK",
            "payload_open": "OPEN",
            "state_locked": "LOCKED",
            "state_unlocked": "UNLOCKED",
            "state_jammed": "JAMMED",
            "state_open": "OPEN",
            "optimistic": false,
            "qos": 1,
            "device": device,
            "origin": {"name": "fleetsim reference-server"},
        })
    }
}

/// What the bridge knows of each lock.
#[derive(Default)]
struct Known {
    /// The state payload last retained (published again only on change).
    published: Option<&'static str>,
    online: Option<bool>,
    /// The `users` state last retained.
    users: Option<String>,
}

/// The running bridge: the gateway tells it of statuses and events.
pub(crate) struct Bridge {
    /// The gateway's first connection, set once it exists.
    client: OnceLock<AsyncClient>,
    topics: Topics,
    /// Every lock, by the backend, asked again at each (re)connect.
    locks: Arc<dyn Fn() -> Vec<LockInfo> + Send + Sync>,
    lock_info: Arc<dyn Fn(DeviceId) -> Option<LockInfo> + Send + Sync>,
    /// A lock's occupied PIN slots, by the backend.
    slots: Arc<dyn Fn(DeviceId) -> Vec<SlotView> + Send + Sync>,
    known: Mutex<FxHashMap<DeviceId, Known>>,
    /// Commands waiting for their lock's ack.
    commands: Arc<Semaphore>,
    /// `pin_code` commands being applied.
    pin_commands: Arc<Semaphore>,
}

impl Bridge {
    pub(crate) fn new(
        cfg: &HomeAssistantConfig,
        node: &str,
        locks: Arc<dyn Fn() -> Vec<LockInfo> + Send + Sync>,
        lock_info: Arc<dyn Fn(DeviceId) -> Option<LockInfo> + Send + Sync>,
        slots: Arc<dyn Fn(DeviceId) -> Vec<SlotView> + Send + Sync>,
    ) -> Arc<Bridge> {
        Arc::new(Bridge {
            client: OnceLock::new(),
            topics: Topics {
                discovery: cfg.discovery_prefix.clone(),
                node: node.into(),
            },
            locks,
            lock_info,
            slots,
            known: Mutex::new(FxHashMap::default()),
            commands: Arc::new(Semaphore::new(MAX_COMMANDS_IN_FLIGHT)),
            pin_commands: Arc::new(Semaphore::new(MAX_PIN_COMMANDS_IN_FLIGHT)),
        })
    }

    /// The connection the bridge publishes on (the gateway's first).
    pub(crate) fn attach(&self, client: AsyncClient) {
        let _ = self.client.set(client);
    }

    /// The connection's Last Will: every lock unavailable.
    pub(crate) fn last_will(&self) -> LastWill {
        LastWill::new(
            self.topics.bridge_availability(),
            "offline",
            QoS::AtLeastOnce,
            true,
        )
    }

    /// The subscription to every lock's command topic.
    pub(crate) fn subscription(&self) -> SubscribeFilter {
        SubscribeFilter::new(self.topics.command_filter(), QoS::AtLeastOnce)
    }

    /// Is `topic` under the discovery prefix (a command, or nothing)?
    pub(crate) fn owns(&self, topic: &str) -> bool {
        topic
            .strip_prefix(self.topics.discovery.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }

    fn retain(&self, topic: String, payload: impl Into<Vec<u8>>) {
        let Some(client) = self.client.get() else {
            return;
        };
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, payload.into()) {
            tracing::warn!(error = %e, "home assistant: a retained update was dropped");
        }
    }

    /// The device's status came in (online, or its Last Will).
    pub(crate) fn status(&self, device: DeviceId, online: bool) {
        let Some(lock) = (self.lock_info)(device) else {
            return;
        };
        let first = {
            let mut known = self.known.lock();
            let k = known.entry(device).or_default();
            let first = k.online.is_none();
            k.online = Some(online);
            first
        };
        if first {
            // A lock created after the bridge connected.
            self.configs(&lock);
            self.users(device, true);
        }
        self.retain(
            self.topics.lock(device, "availability"),
            if online { "online" } else { "offline" },
        );
    }

    /// The gateway logged `ev` for `device` (first delivery only).
    pub(crate) fn event(&self, device: DeviceId, ev: &DeviceEvent) {
        let Some(lock) = (self.lock_info)(device) else {
            return;
        };
        if let Some(access) = access_event(&ev.kind) {
            let topic = self.topics.access(device, "state");
            let client = self.client.get();
            if let Some(Err(e)) =
                client.map(|c| c.try_publish(topic, QoS::AtLeastOnce, false, access.to_string()))
            {
                tracing::warn!(error = %e, "home assistant: an access event was dropped");
            }
        }
        let state = ha_state(&lock.state);
        {
            let mut known = self.known.lock();
            let k = known.entry(device).or_default();
            if k.published == state {
                return;
            }
            k.published = state;
        }
        if let Some(state) = state {
            self.retain(self.topics.lock(device, "state"), state);
        }
    }

    fn configs(&self, lock: &LockInfo) {
        self.retain(
            self.topics.lock(lock.device, "config"),
            self.topics.config(lock).to_string(),
        );
        self.retain(
            self.topics.access(lock.device, "config"),
            self.topics.access_config(lock).to_string(),
        );
    }

    /// Before a clean stop (which sends no Last Will): every lock offline.
    pub(crate) fn going_offline(&self) {
        self.retain(self.topics.bridge_availability(), "offline");
    }

    /// On every connect: say the bridge is online, and publish each lock's
    /// config and what is known of it.
    pub(crate) fn announce(&self) {
        for lock in (self.locks)() {
            let state = ha_state(&lock.state);
            let online = {
                let mut known = self.known.lock();
                let k = known.entry(lock.device).or_default();
                k.published = state;
                k.online
            };
            self.configs(&lock);
            let availability = if online == Some(true) {
                "online"
            } else {
                "offline"
            };
            self.retain(self.topics.lock(lock.device, "availability"), availability);
            if let Some(state) = state {
                self.retain(self.topics.lock(lock.device, "state"), state);
            }
            self.users(lock.device, true);
        }
        self.retain(self.topics.bridge_availability(), "online");
    }

    /// Retains the lock's `users` state (its occupied PIN slots, masked)
    /// if it changed since last retained, or always with `force` (at a
    /// connect).
    pub(crate) fn users(&self, device: DeviceId, force: bool) {
        let state = users_state(&(self.slots)(device)).to_string();
        let mut known = self.known.lock();
        let k = known.entry(device).or_default();
        if !force && k.users.as_deref() == Some(state.as_str()) {
            return;
        }
        k.users = Some(state.clone());
        // Under the lock: a caller that finds the state already retained
        // must find it already queued too (its answer comes after).
        self.retain(self.topics.lock(device, "users"), state);
    }

    /// Every lock's `users` state again where it changed (the code
    /// changes it follows were missed).
    pub(crate) fn every_users(&self) {
        for lock in (self.locks)() {
            self.users(lock.device, false);
        }
    }

    /// Answers a `pin_code` command on the lock's `response` topic (not
    /// retained: an answer is not a state).
    pub(crate) fn answer(
        &self,
        device: DeviceId,
        user: Option<u64>,
        transaction: Option<serde_json::Value>,
        error: Option<&PinSlotError>,
    ) {
        let mut v = match error {
            None => json!({"status": "ok"}),
            Some(e) => json!({"status": "error", "reason": e.reason.as_str(), "error": e.message}),
        };
        if let Some(u) = user {
            v["data"] = json!({ "user": u });
        }
        if let Some(t) = transaction {
            v["transaction"] = t;
        }
        let Some(client) = self.client.get() else {
            return;
        };
        let topic = self.topics.lock(device, "response");
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, v.to_string()) {
            tracing::warn!(error = %e, "home assistant: an answer was dropped");
        }
    }

    /// A refused `pin_code` command: counted, logged (never its PIN) and
    /// answered when the topic named a lock.
    pub(crate) fn refuse_pin(
        &self,
        metrics: &GatewayMetrics,
        device: Option<DeviceId>,
        r: PinCodeRefused,
    ) {
        metrics.refuse_pin(r.error.reason);
        tracing::warn!(
            device = device.map(|d| d.to_string()),
            user = r.user,
            reason = r.error.reason.as_str(),
            error = %r.error.message,
            "home assistant: pin_code refused"
        );
        if let Some(d) = device {
            self.answer(d, r.user, r.transaction, Some(&r.error));
        }
    }

    /// A message under the discovery prefix: a command from Home
    /// Assistant for one of its locks, with a permit to hold while the
    /// caller applies it: `LOCK`/`UNLOCK`/`OPEN` (at most
    /// [`MAX_COMMANDS_IN_FLIGHT`] waiting at once) through the service
    /// (`Backend::remote_command`, the admin API's Open Door path), a
    /// `pin_code` JSON command (at most [`MAX_PIN_COMMANDS_IN_FLIGHT`])
    /// through `Backend::pin_slot`. Anything else is logged and ignored; a
    /// JSON command refused here is also counted and answered.
    pub(crate) fn command(
        &self,
        metrics: &GatewayMetrics,
        topic: &str,
        payload: &[u8],
    ) -> Option<(DeviceId, Request, tokio::sync::OwnedSemaphorePermit)> {
        let json = is_json(payload);
        let Some(device) = self.topics.command_device(topic) else {
            tracing::warn!(topic = %topic.chars().take(200).collect::<String>(), "home assistant: not a lock's command topic; ignored");
            if json {
                metrics.refuse_pin(PinRefusal::UnknownLock);
            }
            return None;
        };
        if json {
            let refuse = |error: PinSlotError, user, transaction| {
                self.refuse_pin(
                    metrics,
                    Some(device),
                    PinCodeRefused {
                        error,
                        user,
                        transaction,
                    },
                );
            };
            let pin = match pin_code_of(payload) {
                Ok(pin) => pin,
                Err(r) => {
                    self.refuse_pin(metrics, Some(device), r);
                    return None;
                }
            };
            // An unknown device, or one that is no lock storing codes, is
            // the service's to refuse (`Service::pin_slot`).
            let user = Some(u64::from(pin.slot));
            let Ok(permit) = self.pin_commands.clone().try_acquire_owned() else {
                refuse(
                    PinSlotError::new(PinRefusal::Busy, "too many pin_code commands at once"),
                    user,
                    pin.transaction,
                );
                return None;
            };
            return Some((device, Request::PinCode(pin), permit));
        }
        if (self.lock_info)(device).is_none() {
            tracing::warn!(%device, "home assistant: a command for an unknown lock; ignored");
            return None;
        }
        let Some(command) = command_of(payload) else {
            // Shown only if it looks like a command word: a payload of
            // digits could be a code.
            let word = payload.len() <= MAX_COMMAND_BYTES
                && payload.iter().all(|b| b.is_ascii_uppercase());
            let shown = if word {
                String::from_utf8_lossy(payload).into_owned()
            } else {
                format!("({} bytes)", payload.len())
            };
            tracing::warn!(%device, payload = %shown, "home assistant: a command must be LOCK, UNLOCK, OPEN or a pin_code JSON object; ignored");
            return None;
        };
        let Ok(permit) = self.commands.clone().try_acquire_owned() else {
            tracing::warn!(%device, "home assistant: too many commands waiting; dropped");
            return None;
        };
        Some((device, Request::Command(command), permit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics {
            discovery: "homeassistant".into(),
            node: "fleet".into(),
        }
    }

    #[test]
    fn command_topics_name_one_lock_exactly() {
        let t = topics();
        assert_eq!(
            t.command_device("homeassistant/lock/fleet_dev-3/set"),
            Some(DeviceId(3))
        );
        assert_eq!(
            t.lock(DeviceId(3), "set"),
            "homeassistant/lock/fleet_dev-3/set"
        );
        for bad in [
            "homeassistant/lock/fleet_dev-03/set",
            "homeassistant/lock/fleet_dev-3/state",
            "homeassistant/lock/other_dev-3/set",
            "homeassistant/lock/fleet_dev-3x/set",
            "homeassistant/lock/fleet_dev-3/set/x",
            "homeassistant/switch/fleet_dev-3/set",
            "homeassistant/lock/fleetdev-3/set",
        ] {
            assert_eq!(t.command_device(bad), None, "{bad}");
        }
    }

    #[test]
    fn commands_map_to_the_protocol() {
        assert_eq!(command_of(b"LOCK"), Some(CommandKind::Lock));
        assert_eq!(command_of(b"UNLOCK"), Some(CommandKind::Open));
        assert_eq!(command_of(b"OPEN"), Some(CommandKind::Open));
        for bad in [&b"lock"[..], b"", b"LOCK ", b"{\"state\":\"LOCK\"}"] {
            assert_eq!(command_of(bad), None);
        }
    }

    #[test]
    fn pin_code_commands_read_zigbee2mqtt_shape() {
        let set = pin_code_of(
            br#"{"pin_code": {"user": 3, "user_type": "unrestricted", "user_enabled": true, "pin_code": "4829"}, "transaction": "t1"}"#,
        )
        .unwrap();
        assert_eq!(set.slot, 3);
        assert_eq!(
            set.change,
            SlotChange::Set {
                pin: "4829".into(),
                enabled: true
            }
        );
        assert_eq!(set.transaction, Some(json!("t1")));
        let disabled =
            pin_code_of(br#"{"pin_code": {"user": 3, "user_enabled": false, "pin_code": "4829"}}"#)
                .unwrap();
        assert_eq!(
            disabled.change,
            SlotChange::Set {
                pin: "4829".into(),
                enabled: false
            }
        );
        let clear = pin_code_of(br#"{"pin_code": {"user": 3, "pin_code": null}}"#).unwrap();
        assert_eq!(clear.change, SlotChange::Clear);
        let enable = pin_code_of(br#"{"pin_code": {"user": 3, "user_enabled": true}}"#).unwrap();
        assert_eq!(enable.change, SlotChange::Enable(true));
        assert!(is_json(b"  {}"));
        assert!(!is_json(b"LOCK"));
    }

    #[test]
    fn bad_pin_code_commands_say_why_and_never_echo_the_pin() {
        let big = format!(
            r#"{{"pin_code": {{"user": 1, "pin_code": "4829"}}, "transaction": "{}"}}"#,
            "x".repeat(MAX_PIN_COMMAND_BYTES)
        );
        for (payload, want) in [
            (&b"{not json"[..], PinRefusal::NotJson),
            (b"[1, 2]", PinRefusal::NotJson),
            (big.as_bytes(), PinRefusal::NotJson),
            (b"{}", PinRefusal::BadField),
            (br#"{"state": "LOCK"}"#, PinRefusal::UnknownField),
            (
                br#"{"pin_code": {"user": 1, "pin_code": "4829"}, "x": 1}"#,
                PinRefusal::UnknownField,
            ),
            (
                br#"{"pin_code": {"user": 1, "pin_code": "4829", "name": "a"}}"#,
                PinRefusal::UnknownField,
            ),
            (br#"{"pin_code": "4829"}"#, PinRefusal::BadField),
            (
                br#"{"pin_code": {"pin_code": "4829"}}"#,
                PinRefusal::BadField,
            ),
            (
                br#"{"pin_code": {"user": -1, "pin_code": "4829"}}"#,
                PinRefusal::BadField,
            ),
            (
                br#"{"pin_code": {"user": "1", "pin_code": "4829"}}"#,
                PinRefusal::BadField,
            ),
            (
                br#"{"pin_code": {"user": 70000, "pin_code": "4829"}}"#,
                PinRefusal::SlotOutOfRange,
            ),
            (br#"{"pin_code": {"user": 1}}"#, PinRefusal::BadField),
            (
                br#"{"pin_code": {"user": 1, "pin_code": 4829}}"#,
                PinRefusal::BadPin,
            ),
            (
                br#"{"pin_code": {"user": 1, "user_enabled": "yes"}}"#,
                PinRefusal::BadField,
            ),
            (
                br#"{"pin_code": {"user": 1, "user_type": "master", "pin_code": "4829"}}"#,
                PinRefusal::UnsupportedUserType,
            ),
            (
                br#"{"pin_code": {"user": 1, "pin_code": "4829"}, "transaction": {"a": 1}}"#,
                PinRefusal::BadField,
            ),
        ] {
            let r = pin_code_of(payload).unwrap_err();
            assert_eq!(r.error.reason, want, "{}", String::from_utf8_lossy(payload));
            assert!(!r.error.message.contains("4829"), "{}", r.error.message);
        }
        let r = pin_code_of(br#"{"pin_code": {"user": 9, "user_type": "master", "pin_code": "4829"}, "transaction": 7}"#)
            .unwrap_err();
        assert_eq!(
            (r.user, r.transaction),
            (Some(9), Some(json!(7))),
            "answered with what was read"
        );
        assert!(!format!(
            "{:?}",
            SlotChange::Set {
                pin: "4829".into(),
                enabled: true
            }
        )
        .contains("4829"));
    }

    #[test]
    fn pin_code_commands_beyond_the_limit_are_refused_busy() {
        let bridge = Bridge::new(
            &HomeAssistantConfig::default(),
            "fleet",
            Arc::new(Vec::new),
            Arc::new(|_| None),
            Arc::new(|_| Vec::new()),
        );
        let metrics = GatewayMetrics::new(&prometheus::Registry::new(), None).unwrap();
        let set = br#"{"pin_code": {"user": 1, "pin_code": "4829"}}"#;
        let topic = "homeassistant/lock/fleet_dev-1/set";
        let held: Vec<_> = (0..MAX_PIN_COMMANDS_IN_FLIGHT)
            .map(|_| bridge.command(&metrics, topic, set).expect("taken"))
            .collect();
        assert!(bridge.command(&metrics, topic, set).is_none());
        assert_eq!(metrics.ha_pin_refused(PinRefusal::Busy), 1);
        drop(held);
        let (device, request, _permit) = bridge.command(&metrics, topic, set).expect("taken again");
        assert_eq!(device, DeviceId(1));
        assert!(matches!(request, Request::PinCode(p) if p.slot == 1));
        // A JSON command on a topic that names no lock: counted, unanswered.
        assert!(bridge
            .command(&metrics, "homeassistant/lock/elsewhere/set", set)
            .is_none());
        assert_eq!(metrics.ha_pin_refused(PinRefusal::UnknownLock), 1);
    }

    #[test]
    fn the_users_state_masks_every_pin() {
        use crate::domain::CredentialId;
        let state = users_state(&[
            SlotView {
                slot: 1,
                credential: CredentialId(4),
                enabled: true,
            },
            SlotView {
                slot: 7,
                credential: CredentialId(9),
                enabled: false,
            },
        ]);
        assert_eq!(
            state,
            json!({"users": {
                "1": {"status": "enabled", "pin_code": "****", "credential": 4},
                "7": {"status": "disabled", "pin_code": "****", "credential": 9},
            }})
        );
        assert_eq!(users_state(&[]), json!({"users": {}}));
    }

    #[test]
    fn the_state_follows_the_events() {
        let t = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
        let mut v = DeviceState::default();
        assert_eq!(ha_state(&v), None);
        v.apply("battery_low", t(0));
        assert_eq!(ha_state(&v), None);
        v.apply("locked", t(1));
        assert_eq!(ha_state(&v), Some("LOCKED"));
        v.apply("unlocked", t(2));
        assert_eq!(ha_state(&v), Some("UNLOCKED"));
        v.apply("door_opened", t(3));
        assert_eq!(ha_state(&v), Some("OPEN"));
        v.apply("motor_blocked", t(4));
        assert_eq!(ha_state(&v), Some("JAMMED"));
        v.apply("door_closed", t(5));
        assert_eq!(ha_state(&v), Some("JAMMED"), "jammed until it moves again");
        v.apply("locked", t(6));
        assert_eq!(ha_state(&v), Some("LOCKED"));
    }

    #[test]
    fn keypad_and_card_accesses_are_events() {
        use crate::domain::{CredentialId, DenyReason};
        use crate::protocol::How;
        let granted = access_event(&EventKind::Unlocked {
            how: How::Keypad,
            credential: Some(CredentialId(4)),
            origin: None,
        });
        assert_eq!(
            granted,
            Some(json!({"event_type": "granted", "how": "keypad", "credential": 4}))
        );
        let denied = access_event(&EventKind::AccessDenied {
            how: How::Card,
            reason: DenyReason::UnknownCredential,
        })
        .unwrap();
        assert_eq!(denied["event_type"], "denied");
        assert_eq!(denied["how"], "card");
        assert!(denied["reason"].is_string());
        for not_access in [
            EventKind::Unlocked {
                how: How::Manual,
                credential: None,
                origin: None,
            },
            EventKind::Unlocked {
                how: How::Remote,
                credential: None,
                origin: None,
            },
            EventKind::DoorOpened,
        ] {
            assert_eq!(access_event(&not_access), None, "{not_access:?}");
        }
    }

    #[test]
    fn the_config_names_every_topic_and_payload() {
        let t = topics();
        let c = t.config(&LockInfo {
            device: DeviceId(3),
            site: SiteId(1),
            name: "Front door".into(),
            location: "Hall".into(),
            state: DeviceState::default(),
        });
        assert_eq!(c["unique_id"], "fleet_dev-3");
        assert_eq!(c["command_topic"], "homeassistant/lock/fleet_dev-3/set");
        assert_eq!(c["state_topic"], "homeassistant/lock/fleet_dev-3/state");
        assert_eq!(
            c["availability"][0]["topic"],
            "homeassistant/lock/fleet_dev-3/availability"
        );
        assert_eq!(
            c["availability"][1]["topic"],
            "homeassistant/fleet/bridge/availability"
        );
        assert_eq!(c["device"]["suggested_area"], "Hall");
        for (k, v) in [
            ("payload_lock", "LOCK"),
            ("payload_unlock", "UNLOCK"),
            ("payload_open", "OPEN"),
            ("state_locked", "LOCKED"),
            ("state_unlocked", "UNLOCKED"),
            ("state_jammed", "JAMMED"),
            ("state_open", "OPEN"),
        ] {
            assert_eq!(c[k], v, "{k}");
        }
    }
}
