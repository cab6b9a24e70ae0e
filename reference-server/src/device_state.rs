//! What each device last reported about its door: locked or unlocked,
//! open or closed, jammed. Derived from the device's own events (over MQTT
//! or HTTP, the same `Service::record_event`), by their names, so the
//! events of the activity log rebuild it at start (`Store::state_events`).
//!
//! Each aspect keeps the time of the event that set it: an event older
//! than that (a device's buffered events arriving late) does not turn the
//! state back.

use jiff::Timestamp;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::DeviceId;

/// The bolt, as the lock last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    Locked,
    Unlocked,
}

/// The door, as its lock or sensor last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DoorState {
    Open,
    Closed,
}

/// The event names that change the state (`EventKind::name`).
pub const STATE_EVENTS: [&str; 7] = [
    "locked",
    "unlocked",
    "motor_blocked",
    "door_opened",
    "door_ajar",
    "door_forced_open",
    "door_closed",
];

/// One device's reported state; `None`: never reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceState {
    pub lock_state: Option<LockState>,
    pub door_state: Option<DoorState>,
    /// The motor was blocked, and the lock has not locked or unlocked
    /// since.
    pub jammed: bool,
    #[serde(skip)]
    lock_at: Option<Timestamp>,
    #[serde(skip)]
    door_at: Option<Timestamp>,
}

impl DeviceState {
    /// Applies the event named `kind`, reported `at` (other names change
    /// nothing).
    pub fn apply(&mut self, kind: &str, at: Timestamp) {
        let lock = match kind {
            "locked" => Some((Some(LockState::Locked), false)),
            "unlocked" => Some((Some(LockState::Unlocked), false)),
            "motor_blocked" => Some((self.lock_state, true)),
            _ => None,
        };
        if let Some((state, jammed)) = lock {
            if self.lock_at.is_none_or(|t| at >= t) {
                self.lock_state = state;
                self.jammed = jammed;
                self.lock_at = Some(at);
            }
            return;
        }
        let door = match kind {
            "door_opened" | "door_ajar" | "door_forced_open" => DoorState::Open,
            "door_closed" => DoorState::Closed,
            _ => return,
        };
        if self.door_at.is_none_or(|t| at >= t) {
            self.door_state = Some(door);
            self.door_at = Some(at);
        }
    }
}

/// Every device's state.
#[derive(Default)]
pub struct DeviceStates {
    states: RwLock<FxHashMap<DeviceId, DeviceState>>,
}

impl DeviceStates {
    pub fn record(&self, device: DeviceId, kind: &str, at: Timestamp) {
        if STATE_EVENTS.contains(&kind) {
            self.states
                .write()
                .entry(device)
                .or_default()
                .apply(kind, at);
        }
    }

    pub fn get(&self, device: DeviceId) -> DeviceState {
        self.states.read().get(&device).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn events_set_the_state_and_late_ones_do_not_turn_it_back() {
        let mut s = DeviceState::default();
        assert_eq!((s.lock_state, s.door_state, s.jammed), (None, None, false));
        s.apply("unlocked", at(1));
        s.apply("door_opened", at(2));
        assert_eq!(s.lock_state, Some(LockState::Unlocked));
        assert_eq!(s.door_state, Some(DoorState::Open));
        s.apply("motor_blocked", at(3));
        assert!(s.jammed);
        assert_eq!(s.lock_state, Some(LockState::Unlocked));
        // A buffered older event arrives late: no change.
        s.apply("locked", at(0));
        assert!(s.jammed);
        s.apply("locked", at(4));
        assert_eq!((s.lock_state, s.jammed), (Some(LockState::Locked), false));
        s.apply("door_closed", at(5));
        s.apply("door_forced_open", at(4));
        assert_eq!(s.door_state, Some(DoorState::Closed));
        s.apply("battery_low", at(9));
        assert_eq!(s.door_state, Some(DoorState::Closed));
    }
}
