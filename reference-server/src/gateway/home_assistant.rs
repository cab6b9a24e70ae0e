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

use crate::device_state::{DeviceState, DoorState, LockState};
use crate::domain::{DeviceId, SiteId};
use crate::protocol::{self, CommandKind, Event as DeviceEvent, EventKind};

/// Home Assistant's default discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";
/// Commands from Home Assistant waiting for their lock's ack at once;
/// beyond, a command is dropped and logged (HA shows no state change).
const MAX_COMMANDS_IN_FLIGHT: usize = 256;
/// Longest command payload read (`UNLOCK` is 6 bytes).
const MAX_COMMAND_BYTES: usize = 16;

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
}

/// The running bridge: the gateway tells it of statuses and events.
pub(crate) struct Bridge {
    /// The gateway's first connection, set once it exists.
    client: OnceLock<AsyncClient>,
    topics: Topics,
    /// Every lock, by the backend, asked again at each (re)connect.
    locks: Arc<dyn Fn() -> Vec<LockInfo> + Send + Sync>,
    lock_info: Arc<dyn Fn(DeviceId) -> Option<LockInfo> + Send + Sync>,
    known: Mutex<FxHashMap<DeviceId, Known>>,
    /// Commands waiting for their lock's ack.
    commands: Arc<Semaphore>,
}

impl Bridge {
    pub(crate) fn new(
        cfg: &HomeAssistantConfig,
        node: &str,
        locks: Arc<dyn Fn() -> Vec<LockInfo> + Send + Sync>,
        lock_info: Arc<dyn Fn(DeviceId) -> Option<LockInfo> + Send + Sync>,
    ) -> Arc<Bridge> {
        Arc::new(Bridge {
            client: OnceLock::new(),
            topics: Topics {
                discovery: cfg.discovery_prefix.clone(),
                node: node.into(),
            },
            locks,
            lock_info,
            known: Mutex::new(FxHashMap::default()),
            commands: Arc::new(Semaphore::new(MAX_COMMANDS_IN_FLIGHT)),
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
        }
        self.retain(self.topics.bridge_availability(), "online");
    }

    /// A message under the discovery prefix: a command from Home
    /// Assistant for one of its locks, with a permit (at most
    /// [`MAX_COMMANDS_IN_FLIGHT`] waiting at once) to hold while the
    /// caller sends it through the service (`Backend::remote_command`, the
    /// admin API's Open Door path); anything else is logged and ignored.
    pub(crate) fn command(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Option<(DeviceId, CommandKind, tokio::sync::OwnedSemaphorePermit)> {
        let Some(device) = self.topics.command_device(topic) else {
            tracing::warn!(topic = %topic.chars().take(200).collect::<String>(), "home assistant: not a lock's command topic; ignored");
            return None;
        };
        if (self.lock_info)(device).is_none() {
            tracing::warn!(%device, "home assistant: a command for an unknown lock; ignored");
            return None;
        }
        let Some(command) = command_of(payload) else {
            let shown = String::from_utf8_lossy(&payload[..payload.len().min(MAX_COMMAND_BYTES)]);
            tracing::warn!(%device, payload = %shown, "home assistant: a command must be LOCK, UNLOCK or OPEN; ignored");
            return None;
        };
        let Ok(permit) = self.commands.clone().try_acquire_owned() else {
            tracing::warn!(%device, "home assistant: too many commands waiting; dropped");
            return None;
        };
        Some((device, command, permit))
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
