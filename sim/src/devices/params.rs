//! Behaviour parameters of the simulated devices, with defaults taken from
//! the domain notes (design/domain.md) where a public figure exists and
//! marked as scenario choices where none does (motor jams, offline spells).
//! Every field name carries its unit.

use rand::Rng;
use reference_server::domain::LockoutPolicy;

use crate::scenario::{DeviceGroup, Scenario};

/// A closed range a value is drawn from uniformly, per device or per event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub min: f64,
    pub max: f64,
}

impl Span {
    pub const fn new(min: f64, max: f64) -> Span {
        Span { min, max }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        if self.max > self.min {
            rng.random_range(self.min..=self.max)
        } else {
            self.min
        }
    }
}

/// Draws from an exponential distribution with this mean (memoryless
/// arrivals: forced-open attempts, offline spells).
pub fn exponential(mean: f64, rng: &mut impl Rng) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln() * mean
}

#[derive(Clone, Debug, PartialEq)]
pub struct LockParams {
    /// Auto-relock delay, drawn once per lock (real locks: 7-60 s).
    pub relock_after_s: Span,
    /// Chance that one motor run (unlock or relock) jams. No public figure:
    /// a scenario choice; default 1 in 1,000.
    pub motor_block_probability: f64,
    /// Code slots on the device (Yale: 250).
    pub code_slots: u16,
    /// How often a phone or gateway comes within range of a Bluetooth lock
    /// (and it syncs); "minutes to hours". Drawn per visit.
    pub ble_in_range_every_s: Span,
}

impl Default for LockParams {
    fn default() -> Self {
        LockParams {
            relock_after_s: Span::new(7.0, 60.0),
            motor_block_probability: 0.001,
            code_slots: 250,
            ble_in_range_every_s: Span::new(600.0, 7_200.0),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeypadParams {
    /// Time between two keypresses (0.3-1 s).
    pub digit_interval_s: Span,
    /// A partial entry is cleared after this long without a key (about 5 s).
    pub idle_clear_s: f64,
    /// The lockout of a device that decides PINs itself (a Bluetooth lock
    /// or keypad checking its code cache): the site's policy, as the engine
    /// keeps it for devices that ask. A device that asks the engine counts
    /// no wrong tries: it keeps the engine's lockout until the
    /// `locked_until` the engine's answer gave.
    pub lockout: LockoutPolicy,
}

impl Default for KeypadParams {
    fn default() -> Self {
        KeypadParams {
            digit_interval_s: Span::new(0.3, 1.0),
            idle_clear_s: 5.0,
            lockout: LockoutPolicy::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DoorParams {
    /// Chance that someone actually opens the door after an unlock.
    pub open_probability: f64,
    /// The door opens this long after the unlock (1-3 s).
    pub opens_after_s: Span,
    /// and closes this long after opening (3-10 s).
    pub closes_after_s: Span,
    /// Open longer than this: the sensor reports "door ajar".
    pub ajar_after_s: f64,
    /// Chance that a door is left open (then it closes after `left_open_s`).
    pub left_open_probability: f64,
    pub left_open_s: Span,
    /// Forced-open attempts per door per day (opened while locked). A
    /// scenario choice; default 0 (none).
    pub forced_open_per_day: f64,
}

impl Default for DoorParams {
    fn default() -> Self {
        DoorParams {
            open_probability: 0.95,
            opens_after_s: Span::new(1.0, 3.0),
            closes_after_s: Span::new(3.0, 10.0),
            ajar_after_s: 30.0,
            left_open_probability: 0.01,
            left_open_s: Span::new(45.0, 600.0),
            forced_open_per_day: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DoorPhoneParams {
    /// How long the reader waits for the server (about 200 ms).
    pub reader_timeout_ms: u64,
    /// How long the door relay stays energized after a grant.
    pub relay_open_s: f64,
}

impl Default for DoorPhoneParams {
    fn default() -> Self {
        DoorPhoneParams {
            reader_timeout_ms: 200,
            relay_open_s: 5.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BatteryParams {
    /// Charge at the start of a run, drawn per device.
    pub initial_pct: Span,
    /// Self-drain at rest (about 0.2 %/day).
    pub drain_pct_per_day: f64,
    /// Cost of one motor run.
    pub actuation_cost_pct: f64,
    /// Below this the device reports "battery low" (once per crossing).
    pub low_pct: f64,
    /// Below this the motor no longer runs (actuation fails "low battery").
    pub dead_pct: f64,
}

impl Default for BatteryParams {
    fn default() -> Self {
        BatteryParams {
            initial_pct: Span::new(20.0, 100.0),
            drain_pct_per_day: 0.2,
            actuation_cost_pct: 0.005,
            low_pct: 20.0,
            dead_pct: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultParams {
    /// Offline spells per device per day (Wi-Fi drop, gateway out of range).
    /// No public figure: default 0.02 (one every ~50 days).
    pub offline_per_day: f64,
    /// Length of one offline spell.
    pub offline_for_s: Span,
    /// Each device's clock is off by a fixed amount drawn from +/- this.
    pub clock_skew_max_s: f64,
    /// Offline spells begin when the device starts; `false`: only on
    /// [`super::Control::BeginOfflineSpells`] (a scenario run sends it once
    /// every device stored its codes, so a spell cannot hold up that sync).
    pub spells_at_start: bool,
}

impl Default for FaultParams {
    fn default() -> Self {
        FaultParams {
            offline_per_day: 0.02,
            offline_for_s: Span::new(60.0, 3_600.0),
            clock_skew_max_s: 2.0,
            spells_at_start: true,
        }
    }
}

/// Everything a fleet's devices are parameterized by. `Default` gives the
/// documented defaults; the `with_*` methods change one group.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceParams {
    pub lock: LockParams,
    pub keypad: KeypadParams,
    pub door: DoorParams,
    pub door_phone: DoorPhoneParams,
    pub battery: BatteryParams,
    pub faults: FaultParams,
    /// Bound of every device mailbox.
    pub mailbox_capacity: usize,
    /// Events a device keeps while offline; the oldest go when full.
    pub max_buffered_events: usize,
    /// Keep a blake3 digest of each device's event trace (tests, replay).
    pub trace: bool,
}

impl Default for DeviceParams {
    fn default() -> Self {
        DeviceParams {
            lock: LockParams::default(),
            keypad: KeypadParams::default(),
            door: DoorParams::default(),
            door_phone: DoorPhoneParams::default(),
            battery: BatteryParams::default(),
            faults: FaultParams::default(),
            mailbox_capacity: 64,
            max_buffered_events: 256,
            trace: false,
        }
    }
}

impl DeviceParams {
    pub fn with_lock(mut self, lock: LockParams) -> Self {
        self.lock = lock;
        self
    }
    pub fn with_keypad(mut self, keypad: KeypadParams) -> Self {
        self.keypad = keypad;
        self
    }
    pub fn with_door(mut self, door: DoorParams) -> Self {
        self.door = door;
        self
    }
    pub fn with_door_phone(mut self, p: DoorPhoneParams) -> Self {
        self.door_phone = p;
        self
    }
    pub fn with_battery(mut self, b: BatteryParams) -> Self {
        self.battery = b;
        self
    }
    pub fn with_faults(mut self, f: FaultParams) -> Self {
        self.faults = f;
        self
    }
    pub fn with_trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }
    /// No randomness that a test did not ask for: no jams, no offline
    /// spells, no skew, doors always opened and never left open.
    pub fn quiet() -> Self {
        let mut p = DeviceParams::default();
        p.lock.motor_block_probability = 0.0;
        p.faults.offline_per_day = 0.0;
        p.faults.clock_skew_max_s = 0.0;
        p.door.open_probability = 1.0;
        p.door.left_open_probability = 0.0;
        p
    }
}

/// How far one gap between two passes of a phone or gateway may stray from
/// `sync_every`, as a share of it: gaps are drawn from `(1 - x)` to `(1 + x)`
/// times `sync_every` (mean `sync_every`), so the locks of a group do not
/// all sync at the same instant.
pub const SYNC_EVERY_SPREAD: f64 = 0.5;

/// Offline spells per day for a chance `p` of dropping offline in any given
/// hour: a Poisson process whose hourly chance of at least one drop is `p`
/// (rate `-ln(1 - p)` per hour). `p` = 1 is held just below 1.
pub fn offline_per_day(chance_per_hour: f64) -> f64 {
    let p = chance_per_hour.clamp(0.0, 0.999_999);
    -(1.0 - p).ln() * 24.0
}

impl DeviceParams {
    /// The parameters of the devices of one `[[fleet.devices]]` group of a
    /// scenario: every device of the group's doors (the group's kind and
    /// those mounted `with` it) gets them.
    ///
    /// - The group's behaviour: `relock_after`, `code_slots`, battery,
    ///   `offline_chance_per_hour` / `offline_for`, `sync_every`.
    /// - The fleet's keypad lockout rule (device side, as the engine's).
    /// - `[faults]`: `motor_blocked`.
    /// - Documented device behaviour on top: doors opened after 95% of the
    ///   unlocks, 1% left open (ajar events). Two things stay off, and
    ///   scenarios/README.md says why: clock skew (a Bluetooth lock would
    ///   decide a schedule edge by a clock the oracle does not know) and
    ///   forced openings (no scenario field asks for them).
    pub fn of_group(s: &Scenario, g: &DeviceGroup) -> DeviceParams {
        let b = &g.behaviour;
        let mut p = DeviceParams::default();
        let relock_s = b.relock_after.as_secs_f64();
        p.lock.relock_after_s = Span::new(relock_s, relock_s);
        p.lock.code_slots = b.code_slots;
        p.lock.motor_block_probability = s.faults.motor_blocked;
        let every_s = b.sync_every.as_secs_f64().max(1.0);
        p.lock.ble_in_range_every_s = Span::new(
            every_s * (1.0 - SYNC_EVERY_SPREAD),
            every_s * (1.0 + SYNC_EVERY_SPREAD),
        );
        p.keypad.lockout = s.fleet.lockout;
        p.battery.initial_pct = Span::new(b.battery_start_pct, b.battery_start_pct);
        p.battery.drain_pct_per_day = b.battery_drain_pct_per_day;
        p.battery.actuation_cost_pct = b.battery_pct_per_unlock;
        p.battery.low_pct = b.battery_low_pct;
        let offline_s = b.offline_for.as_secs_f64();
        p.faults = FaultParams {
            offline_per_day: offline_per_day(b.offline_chance_per_hour),
            offline_for_s: Span::new(offline_s, offline_s),
            clock_skew_max_s: 0.0,
            spells_at_start: false,
        };
        p
    }

    /// [`DeviceParams::of_group`] for every group, in file order (a door's
    /// `DoorPlan::group` indexes it).
    pub fn of_groups(s: &Scenario) -> Vec<DeviceParams> {
        s.fleet
            .devices
            .iter()
            .map(|g| DeviceParams::of_group(s, g))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hourly_chance_becomes_a_daily_rate_with_that_hourly_chance() {
        assert_eq!(offline_per_day(0.0), 0.0);
        // P(no drop in an hour) = exp(-rate per hour) = 1 - p.
        for p in [0.01, 0.5, 0.9] {
            let per_hour = offline_per_day(p) / 24.0;
            assert!(((-per_hour).exp() - (1.0 - p)).abs() < 1e-12, "{p}");
        }
        assert!(offline_per_day(1.0).is_finite());
    }
}
