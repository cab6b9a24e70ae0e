//! The simulator's clock and per-device randomness.
//!
//! Devices never read `std::time`: they read [`SimClock`], which is a fixed
//! scenario start plus the tokio runtime's elapsed time. Under a paused
//! runtime tokio time is virtual and jumps to the next timer, so 30 days run
//! in seconds; under a normal runtime the same code runs in real time.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reference_server::domain::DeviceId;
use tokio::time::Instant;

/// Wall time as the simulation sees it. `Copy`: every actor holds one.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    start: Timestamp,
    origin: Instant,
}

impl SimClock {
    /// A clock reading `start` now. Must be called inside the tokio runtime
    /// that drives the devices (the paused one, for virtual time).
    pub fn starting_at(start: Timestamp) -> SimClock {
        SimClock {
            start,
            origin: Instant::now(),
        }
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Time since the clock was made (virtual under a paused runtime).
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The simulated wall time now.
    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The simulated wall time at a tokio instant.
    pub fn at(&self, instant: Instant) -> Timestamp {
        let since = instant.saturating_duration_since(self.origin);
        let since = SignedDuration::try_from(since).unwrap_or(SignedDuration::MAX);
        self.start.checked_add(since).unwrap_or(Timestamp::MAX)
    }

    /// The tokio instant of a simulated wall time (the inverse of
    /// [`SimClock::at`]); times before the clock was made map to its origin.
    /// Lets a receiver time a message by the sender's own timestamp.
    pub fn instant_of(&self, t: Timestamp) -> Instant {
        let since = t.duration_since(self.start);
        match Duration::try_from(since) {
            Ok(d) => self.origin.checked_add(d).unwrap_or(self.origin),
            Err(_) => self.origin,
        }
    }
}

/// A simulated time for people: RFC 3339 in UTC to the millisecond
/// (`2026-03-02T07:00:05.123Z`), as reports show it.
pub fn display_ms(t: Timestamp) -> String {
    t.round(jiff::Unit::Millisecond).unwrap_or(t).to_string()
}

/// SplitMix64: spreads nearby inputs (seed ^ small ids) over all 64 bits.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The RNG of one device: a function of the run's seed and the device id
/// only, so a device behaves the same whatever else the fleet contains.
pub fn device_rng(seed: u64, device: DeviceId) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(u64::from(device.0))))
}

/// An RNG for another seeded stream (`stream` names it, e.g. a connection).
pub fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(splitmix64(
        seed ^ splitmix64(stream ^ 0xC0FF_EE00_0000_0000),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn device_rngs_differ_by_device_and_seed_only() {
        let a = device_rng(7, DeviceId(1)).random::<u64>();
        assert_eq!(a, device_rng(7, DeviceId(1)).random::<u64>());
        assert_ne!(a, device_rng(7, DeviceId(2)).random::<u64>());
        assert_ne!(a, device_rng(8, DeviceId(1)).random::<u64>());
    }

    #[test]
    fn times_are_shown_to_the_millisecond() {
        let t =
            Timestamp::from_second(1_800_000_000).unwrap() + SignedDuration::from_nanos(5_678_900);
        assert_eq!(display_ms(t), "2027-01-15T08:00:00.006Z");
    }

    #[tokio::test(start_paused = true)]
    async fn clock_follows_virtual_time() {
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let clock = SimClock::starting_at(start);
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        assert_eq!(clock.now(), start + SignedDuration::from_hours(24));
        let at = Instant::now() - Duration::from_millis(1500);
        assert_eq!(clock.instant_of(clock.at(at)), at);
        assert_eq!(
            clock.instant_of(start - SignedDuration::from_hours(1)),
            clock.origin
        );
    }
}
