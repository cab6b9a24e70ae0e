//! The checked scenario: every default applied, every unit converted
//! (durations as `Duration`, rates as events per second, fractions as f64),
//! every cross-field rule already enforced. This is what the run engine
//! consumes; it serializes into the report as "the resolved scenario".

use std::time::Duration;

use jiff::civil::{DateTime, Time};
use reference_server::domain::{
    Connectivity, DailyWindow, DeviceKind, GuestSettings, LockoutPolicy, Repeat, Weekdays,
};
use serde::{Serialize, Serializer};

use super::error::Problem;
pub use super::raw::{Clock, Transport};
use super::threshold::Threshold;

pub fn ser_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A checked scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// The file it came from, as given (for messages and the replay command).
    pub file: String,
    pub name: String,
    pub description: String,
    /// `None`: pick a fresh seed per run (and print it).
    pub seed: Option<u64>,
    pub transport: Transport,
    pub clock: Clock,
    /// Local start time in the first site's zone; `None`: now (real clock only).
    pub start_at: Option<DateTime>,
    /// Latency thresholds are judged although the clock is virtual (its
    /// latencies are simulated).
    pub judge_simulated_latency: bool,
    pub fleet: Fleet,
    pub credentials: Credentials,
    pub phases: Vec<Phase>,
    pub actions: ActionMix,
    pub faults: Faults,
    /// The file's thresholds, then the defaults for metrics it does not set.
    pub thresholds: Vec<Threshold>,
    /// What `validate` warns about (an action that can never run, ...).
    #[serde(skip)]
    pub warnings: Vec<Problem>,
}

impl Scenario {
    /// Latencies of this run are simulated, not measured: in virtual time
    /// an in-process check takes no time, and what is recorded is the
    /// rounding of the arrival's timer (0-1 ms).
    pub fn latency_simulated(&self) -> bool {
        self.clock == Clock::Virtual
    }

    /// Total length of all phases.
    pub fn total_duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// Cuts the run to `total` (the `--duration` flag): later phases are
    /// dropped, the phase running at `total` is shortened, and faults that
    /// would start after the end are dropped.
    pub fn cap_duration(&mut self, total: Duration) {
        let mut elapsed = Duration::ZERO;
        self.phases.retain_mut(|p| {
            if elapsed >= total {
                return false;
            }
            p.duration = p.duration.min(total - elapsed);
            elapsed += p.duration;
            true
        });
        self.faults.broker_outages.retain(|w| w.at < total);
        self.faults.offline_waves.retain(|w| w.window.at < total);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    pub sites: u32,
    /// IANA names, one per site in turn (validated with jiff).
    pub time_zones: Vec<String>,
    pub six_digit_pins: bool,
    pub custom_pins: bool,
    pub lockout: LockoutPolicy,
    pub devices: Vec<DeviceGroup>,
}

impl Fleet {
    /// The time zone of site `i` (0-based).
    pub fn time_zone_of(&self, site: u32) -> &str {
        let n = self.time_zones.len().max(1);
        self.time_zones
            .get(site as usize % n)
            .map_or("UTC", String::as_str)
    }

    /// Every device in the fleet, attached ones included.
    pub fn device_count(&self) -> u64 {
        self.devices
            .iter()
            .map(|g| u64::from(g.per_site) * (1 + g.with.len() as u64))
            .sum::<u64>()
            * u64::from(self.sites)
    }

    /// Doors per site (each device group is one door per device).
    pub fn doors_per_site(&self) -> u64 {
        self.devices.iter().map(|g| u64::from(g.per_site)).sum()
    }

    pub fn has_kind(&self, kind: DeviceKind) -> bool {
        self.devices
            .iter()
            .any(|g| g.kind == kind || g.with.contains(&kind))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceGroup {
    pub kind: DeviceKind,
    pub model: Connectivity,
    pub per_site: u32,
    /// Devices mounted on the same door.
    pub with: Vec<DeviceKind>,
    pub behaviour: LockBehaviour,
}

impl DeviceGroup {
    /// Does a PIN pad sit on this door (keypad, door phone, or a lock with a keypad)?
    pub fn takes_pins(&self) -> bool {
        matches!(self.kind, DeviceKind::Keypad | DeviceKind::DoorPhone)
            || self.with.contains(&DeviceKind::Keypad)
            || self.with.contains(&DeviceKind::DoorPhone)
    }
}

/// How the simulated locks of a group behave. Defaults follow the domain
/// notes (docs: scenarios/README.md).
#[derive(Clone, Debug, Serialize)]
pub struct LockBehaviour {
    #[serde(rename = "relock_after_ms", serialize_with = "ser_ms")]
    pub relock_after: Duration,
    pub code_slots: u16,
    pub battery_start_pct: f64,
    pub battery_drain_pct_per_day: f64,
    pub battery_pct_per_unlock: f64,
    pub battery_low_pct: f64,
    pub offline_chance_per_hour: f64,
    #[serde(rename = "offline_for_ms", serialize_with = "ser_ms")]
    pub offline_for: Duration,
    #[serde(rename = "sync_every_ms", serialize_with = "ser_ms")]
    pub sync_every: Duration,
    pub guest: GuestSettings,
}

impl Default for LockBehaviour {
    fn default() -> Self {
        LockBehaviour {
            relock_after: Duration::from_secs(30),
            code_slots: 250,
            battery_start_pct: 100.0,
            battery_drain_pct_per_day: 0.2,
            battery_pct_per_unlock: 0.005,
            battery_low_pct: 20.0,
            offline_chance_per_hour: 0.0,
            offline_for: Duration::from_secs(5 * 60),
            sync_every: Duration::from_secs(30 * 60),
            guest: GuestSettings::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Credentials {
    pub pins_per_door: u32,
    pub mix: PinMix,
    pub six_digit_share: f64,
    pub custom_share: f64,
    pub expired_pins_per_door: u32,
    pub cards_per_door: u32,
    pub ble_passes_per_door: u32,
    pub qr_keys_per_door: u32,
    pub expired_qr_keys_per_door: u32,
    pub fallback_codes_per_lock: u32,
    #[serde(rename = "temporary_valid_for_ms", serialize_with = "ser_ms")]
    pub temporary_valid_for: Duration,
    pub recurring: Recurring,
    pub delivery: Delivery,
    pub visitor: Visitor,
    pub stays: Stays,
}

/// Fractions of PINs per schedule kind (they add up to 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PinMix {
    pub permanent: f64,
    pub temporary: f64,
    pub recurring: f64,
    pub delivery: f64,
    pub stay: f64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Recurring {
    pub days: Weekdays,
    pub window: DailyWindow,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Delivery {
    #[serde(rename = "valid_for_ms", serialize_with = "ser_ms")]
    pub valid_for: Duration,
    /// `None`: unlimited.
    pub max_uses: Option<u32>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Visitor {
    pub repeat: Repeat,
    /// With repeat never: grants per door.
    pub each_door_count: Option<u32>,
    #[serde(rename = "valid_for_ms", serialize_with = "ser_ms")]
    pub valid_for: Duration,
    /// With repeat weekly.
    pub days: Option<Weekdays>,
    /// With repeat daily or weekly.
    pub window: Option<DailyWindow>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stays {
    pub nights: u32,
    pub check_in: Time,
    pub check_out: Time,
    pub early_arrival_share: f64,
    pub late_departure_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub name: String,
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
    pub load: Load,
}

/// How people arrive during a phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Load {
    /// Open model: arrivals per second, ramping linearly from `from_per_s` to
    /// `to_per_s` (equal for a constant rate). Latency counts from each
    /// arrival's intended start, so a slow server cannot hide its queueing.
    Open {
        from_per_s: f64,
        to_per_s: f64,
        max_in_flight: u32,
    },
    /// Closed model: `people` act concurrently, pausing `think_time`.
    Closed {
        people: u32,
        #[serde(rename = "think_time_ms", serialize_with = "ser_ms")]
        think_time: Duration,
    },
}

/// What people do at the doors, and so what the oracle expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    PinValid,
    PinWrong,
    PinExpired,
    QrValid,
    QrReplayed,
    QrExpired,
    Card,
    Ble,
    RemoteOpen,
    CodeCreate,
    CodeChange,
    CodeRevoke,
    SyncStorm,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Action::PinValid,
        Action::PinWrong,
        Action::PinExpired,
        Action::QrValid,
        Action::QrReplayed,
        Action::QrExpired,
        Action::Card,
        Action::Ble,
        Action::RemoteOpen,
        Action::CodeCreate,
        Action::CodeChange,
        Action::CodeRevoke,
        Action::SyncStorm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::PinValid => "pin_valid",
            Action::PinWrong => "pin_wrong",
            Action::PinExpired => "pin_expired",
            Action::QrValid => "qr_valid",
            Action::QrReplayed => "qr_replayed",
            Action::QrExpired => "qr_expired",
            Action::Card => "card",
            Action::Ble => "ble",
            Action::RemoteOpen => "remote_open",
            Action::CodeCreate => "code_create",
            Action::CodeChange => "code_change",
            Action::CodeRevoke => "code_revoke",
            Action::SyncStorm => "sync_storm",
        }
    }
}

/// Fractions per action, adding up to 1; zero entries are omitted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionMix(pub Vec<(Action, f64)>);

impl ActionMix {
    pub fn fraction(&self, a: Action) -> f64 {
        self.0
            .iter()
            .find(|(x, _)| *x == a)
            .map_or(0.0, |(_, f)| *f)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Faults {
    pub broker_outages: Vec<FaultWindow>,
    pub offline_waves: Vec<OfflineWave>,
    /// Chance per actuation.
    pub motor_blocked: f64,
    #[serde(rename = "engine_added_latency_ms", serialize_with = "ser_ms")]
    pub engine_added_latency: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FaultWindow {
    #[serde(rename = "at_ms", serialize_with = "ser_ms")]
    pub at: Duration,
    #[serde(rename = "for_ms", serialize_with = "ser_ms")]
    pub for_: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OfflineWave {
    pub window: FaultWindow,
    pub share: f64,
    /// `None`: both models.
    pub model: Option<Connectivity>,
}
