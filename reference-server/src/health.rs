//! Device health (seeds/004): online status, uptime over a window, and the
//! battery series, from the devices' status reports. Kept in memory (bounded
//! per device) and rebuilt from the store's status table at start.

use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::domain::DeviceId;

/// Status samples kept per device (a report every 10 minutes for 30 days
/// is 4,320; older ones are dropped first).
pub const MAX_SAMPLES_PER_DEVICE: usize = 8_192;
/// The battery chart's span.
pub const BATTERY_SERIES_DAYS: i64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub at: Timestamp,
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
}

#[derive(Default)]
struct DeviceHealth {
    samples: std::collections::VecDeque<Sample>,
    firmware: Option<String>,
}

/// What the lock list and the health panel show.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HealthSummary {
    pub online: bool,
    pub battery_pct: Option<u8>,
    pub firmware: Option<String>,
    pub last_seen: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    #[serde(flatten)]
    pub summary: HealthSummary,
    pub window_s: i64,
    /// Share of the window the device was online, 0 to 100.
    pub uptime_pct: f64,
    /// (from, to, online) spans over the window, for the timeline.
    pub timeline: Vec<(Timestamp, Timestamp, bool)>,
    /// Battery reports over the last 30 days, oldest first.
    pub battery: Vec<(Timestamp, u8)>,
}

#[derive(Default)]
pub struct Health {
    devices: Mutex<FxHashMap<DeviceId, DeviceHealth>>,
}

impl Health {
    /// Records a status report; answers the online state before it (None:
    /// the first report).
    pub fn record(&self, device: DeviceId, s: Sample, firmware: Option<&str>) -> Option<bool> {
        let mut map = self.devices.lock();
        let h = map.entry(device).or_default();
        let before = h.samples.back().map(|last| last.online);
        if h.samples.len() == MAX_SAMPLES_PER_DEVICE {
            h.samples.pop_front();
        }
        h.samples.push_back(s);
        if let Some(f) = firmware {
            h.firmware = Some(f.to_string());
        }
        before
    }

    pub fn summary(&self, device: DeviceId) -> HealthSummary {
        let map = self.devices.lock();
        let Some(h) = map.get(&device) else {
            return HealthSummary::default();
        };
        HealthSummary {
            online: h.samples.back().is_some_and(|s| s.online),
            battery_pct: h.samples.iter().rev().find_map(|s| s.battery_pct),
            firmware: h.firmware.clone(),
            last_seen: h.samples.back().map(|s| s.at),
        }
    }

    pub fn online_count(&self) -> usize {
        self.devices
            .lock()
            .values()
            .filter(|h| h.samples.back().is_some_and(|s| s.online))
            .count()
    }

    /// Uptime and battery over `[now - window, now)`. Before the first report
    /// the device counts as offline.
    pub fn report(&self, device: DeviceId, now: Timestamp, window_s: i64) -> HealthReport {
        let summary = self.summary(device);
        let map = self.devices.lock();
        let from = now - SignedDuration::from_secs(window_s);
        let battery_from = now - SignedDuration::from_hours(24 * BATTERY_SERIES_DAYS);
        let mut timeline = Vec::new();
        let mut online_s = 0.0;
        let mut battery = Vec::new();
        if let Some(h) = map.get(&device) {
            // The state at `from`: the last sample before it.
            let mut state = h
                .samples
                .iter()
                .take_while(|s| s.at <= from)
                .last()
                .is_some_and(|s| s.online);
            let mut since = from;
            for s in h.samples.iter().filter(|s| s.at > from && s.at <= now) {
                if s.online != state {
                    timeline.push((since, s.at, state));
                    since = s.at;
                    state = s.online;
                }
            }
            timeline.push((since, now, state));
            online_s = timeline
                .iter()
                .filter(|(_, _, on)| *on)
                .map(|(a, b, _)| b.duration_since(*a).as_secs_f64())
                .sum();
            battery = h
                .samples
                .iter()
                .filter(|s| s.at >= battery_from && s.at <= now)
                .filter_map(|s| s.battery_pct.map(|b| (s.at, b)))
                .collect();
        } else {
            timeline.push((from, now, false));
        }
        let uptime_pct = if window_s > 0 {
            (online_s / window_s as f64 * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        };
        HealthReport {
            summary,
            window_s,
            uptime_pct,
            timeline,
            battery,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_counts_online_spans() {
        let h = Health::default();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        let d = DeviceId(1);
        assert_eq!(
            h.record(
                d,
                Sample {
                    at: at(0),
                    online: true,
                    battery_pct: Some(90)
                },
                None
            ),
            None
        );
        assert_eq!(
            h.record(
                d,
                Sample {
                    at: at(50),
                    online: true,
                    battery_pct: Some(89)
                },
                Some("1.2")
            ),
            Some(true)
        );
        assert_eq!(
            h.record(
                d,
                Sample {
                    at: at(100),
                    online: false,
                    battery_pct: None
                },
                None
            ),
            Some(true)
        );
        let r = h.report(d, at(200), 200);
        assert!((r.uptime_pct - 50.0).abs() < 1e-9, "{}", r.uptime_pct);
        assert_eq!(r.battery, vec![(at(0), 90), (at(50), 89)]);
        assert_eq!(r.summary.battery_pct, Some(89));
        assert!(!r.summary.online);
        assert_eq!(h.online_count(), 0);
    }
}
