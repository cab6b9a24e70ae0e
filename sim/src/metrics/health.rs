//! Device health aggregates: how much of the fleet is online, how full the
//! batteries are, and whether every event a device emitted was logged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DeviceKind;

/// Battery levels are counted in ten buckets of 10 percentage points:
/// `[0,10)`, `[10,20)`, ..., `[90,100]`.
pub const BATTERY_BUCKETS: usize = 10;

/// Online and total devices of one kind at the time of the health sample.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct DeviceCounts {
    pub total: u64,
    pub online: u64,
}

/// Health counts; all fields are sums, so shards (disjoint device slices) merge by addition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthTally {
    /// Keyed by device kind label (`lock`, `keypad`, `door_sensor`, `door_phone`).
    pub devices: BTreeMap<String, DeviceCounts>,
    /// Devices per battery bucket (see [`BATTERY_BUCKETS`]); devices without a battery are not counted.
    pub battery_buckets: [u64; BATTERY_BUCKETS],
    /// Events devices emitted, by event kind.
    pub events_emitted: BTreeMap<String, u64>,
    /// Events the engine's activity log recorded, by event kind.
    pub events_logged: BTreeMap<String, u64>,
    /// Code actions of the run (create, change, revoke) by how their sync
    /// ended: `stored` (every device of the door confirmed), a device's
    /// failure (`lock_full`, ...), `not_confirmed` (not within the bounded
    /// wait), `refused` (the server refused the change), `unfinished` (the
    /// run ended first; neither stored nor failed).
    #[serde(default)]
    pub code_sync: BTreeMap<String, u64>,
}

/// Code-sync outcomes that are neither a success nor a failure.
pub const CODE_SYNC_STORED: &str = "stored";
pub const CODE_SYNC_UNFINISHED: &str = "unfinished";

impl HealthTally {
    /// Counts one device's state at the health sample (usually the end of the run).
    pub fn observe_device(&mut self, kind: DeviceKind, online: bool, battery_pct: Option<f64>) {
        let c = self.devices.entry(kind.as_str().to_owned()).or_default();
        c.total += 1;
        c.online += u64::from(online);
        if let Some(pct) = battery_pct {
            self.battery_buckets[battery_bucket(pct)] += 1;
        }
    }

    pub fn add_emitted(&mut self, kind: &str, n: u64) {
        add_to(&mut self.events_emitted, kind, n);
    }

    pub fn add_logged(&mut self, kind: &str, n: u64) {
        add_to(&mut self.events_logged, kind, n);
    }

    /// Counts one code action's sync outcome.
    pub fn add_code_sync(&mut self, outcome: &str) {
        add_to(&mut self.code_sync, outcome, 1);
    }

    /// Code actions whose sync ended (stored or failed).
    pub fn code_sync_total(&self) -> u64 {
        self.code_sync
            .iter()
            .filter(|(k, _)| *k != CODE_SYNC_UNFINISHED)
            .map(|(_, n)| n)
            .sum()
    }

    /// Code actions that failed to reach every device of their door.
    pub fn code_sync_failed(&self) -> u64 {
        self.code_sync_total() - self.code_sync.get(CODE_SYNC_STORED).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &HealthTally) {
        for (k, c) in &other.devices {
            let mine = self.devices.entry(k.clone()).or_default();
            mine.total += c.total;
            mine.online += c.online;
        }
        for (mine, theirs) in self.battery_buckets.iter_mut().zip(other.battery_buckets) {
            *mine += theirs;
        }
        for (k, n) in &other.events_emitted {
            add_to(&mut self.events_emitted, k, *n);
        }
        for (k, n) in &other.events_logged {
            add_to(&mut self.events_logged, k, *n);
        }
        for (k, n) in &other.code_sync {
            add_to(&mut self.code_sync, k, *n);
        }
    }

    pub fn devices_total(&self) -> u64 {
        self.devices.values().map(|c| c.total).sum()
    }

    pub fn devices_online(&self) -> u64 {
        self.devices.values().map(|c| c.online).sum()
    }

    /// Online share in percent; `None` when no device was sampled.
    pub fn online_pct(&self) -> Option<f64> {
        let total = self.devices_total();
        (total > 0).then(|| 100.0 * self.devices_online() as f64 / total as f64)
    }
}

fn add_to(map: &mut BTreeMap<String, u64>, kind: &str, n: u64) {
    match map.get_mut(kind) {
        Some(v) => *v += n,
        None => {
            map.insert(kind.to_owned(), n);
        }
    }
}

/// Bucket index of a battery level; out-of-range values are clamped.
fn battery_bucket(pct: f64) -> usize {
    if pct.is_nan() {
        return 0;
    }
    ((pct.clamp(0.0, 100.0) / 10.0) as usize).min(BATTERY_BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_online_share() {
        let mut h = HealthTally::default();
        h.observe_device(DeviceKind::Lock, true, Some(100.0));
        h.observe_device(DeviceKind::Lock, false, Some(9.99));
        h.observe_device(DeviceKind::Keypad, true, Some(-3.0));
        h.observe_device(DeviceKind::DoorSensor, true, None);
        assert_eq!(h.battery_buckets[9], 1);
        assert_eq!(h.battery_buckets[0], 2);
        assert_eq!(h.online_pct(), Some(75.0));
        let mut m = h.clone();
        m.merge(&h);
        assert_eq!(
            m.devices["lock"],
            DeviceCounts {
                total: 4,
                online: 2
            }
        );
        assert_eq!(m.battery_buckets[0], 4);
    }
}
