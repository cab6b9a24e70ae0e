//! What one device may cost the server, so that no device can stop or slow
//! it for the others (docs/protocol.md, "Limits"):
//!
//! - [`DeviceLimits`]: the message rate (sustained, with a burst), the
//!   device's checks and events being processed at once, the payload size;
//! - [`TokenBucket`]: the rate, one bucket per device (`now` is an
//!   argument: the caller reads the clock);
//! - [`DeviceDrops`]: what each device had dropped, by reason, for the
//!   activity log (one summary entry per device and reason per report
//!   interval, never one per message) and for the top offenders in
//!   `/metrics` (a fixed number of series, whatever the fleet's size).
//!
//! The embedded broker enforces the rate at the socket (it stops reading a
//! device that is over it); behind an external broker the gateway enforces
//! it. The gateway always enforces the in-flight bound.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::domain::DeviceId;
use crate::protocol::MAX_PAYLOAD_BYTES;

/// Per-device limits; `Default` documents the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Messages a device may send per second, sustained, over all its
    /// connections and topics (1,000). A real lock sends a few a minute
    /// and a busy door phone a few a second, but a lock given a few hundred
    /// codes at once reports each one (`code_set`): the limit is there to
    /// stop a runaway device, not to pace a busy one.
    pub rate_per_s: u32,
    /// Messages a device may send at once above the rate (2,000): a device
    /// that was offline sends its buffered events in one go.
    pub burst: u32,
    /// A device's checks and events being processed at once (32); more are
    /// dropped (`busy`) instead of taking every worker.
    pub in_flight: u32,
    /// Largest payload from a device (`protocol::MAX_PAYLOAD_BYTES`).
    pub max_payload_bytes: usize,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        DeviceLimits {
            rate_per_s: 1000,
            burst: 2000,
            in_flight: 32,
            max_payload_bytes: MAX_PAYLOAD_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl DeviceLimits {
    /// Every limit must let something through.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.rate_per_s == 0 {
            return Err(LimitsError::Zero("the device message rate"));
        }
        if self.burst == 0 {
            return Err(LimitsError::Zero("the device burst"));
        }
        if self.in_flight == 0 {
            return Err(LimitsError::Zero("the device in-flight limit"));
        }
        if self.max_payload_bytes == 0 {
            return Err(LimitsError::Zero("the device payload limit"));
        }
        Ok(())
    }
}

/// A token bucket: `burst` tokens, refilled at `rate_per_s`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate_per_s: f64::from(rate_per_s.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token even when there is none: the bucket goes into debt,
    /// and [`TokenBucket::until_token`] says how long the debt takes to
    /// clear. For a message that must not be lost (QoS 1) but may wait.
    pub fn take_on_credit(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    /// How long until one token is there (zero if one is).
    pub fn until_token(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate_per_s)
        }
    }
}

/// Series in `device_dropped_top` (the devices that had most dropped).
pub const TOP_OFFENDERS: usize = 5;

/// Per device and reason, what was dropped: in all, and since the last
/// report. Bounded by the devices the engine knows (ids only come from
/// authenticated connections and known topics) times the reasons.
#[derive(Default)]
pub struct DeviceDrops {
    inner: Mutex<Drops>,
}

#[derive(Default)]
struct Drops {
    total: FxHashMap<DeviceId, u64>,
    pending: FxHashMap<(DeviceId, &'static str), u64>,
}

impl DeviceDrops {
    pub fn record(&self, device: DeviceId, reason: &'static str) {
        let mut d = self.inner.lock();
        *d.total.entry(device).or_default() += 1;
        *d.pending.entry((device, reason)).or_default() += 1;
    }

    /// What was dropped since the last call, by device and reason (sorted,
    /// so reports come out in a stable order).
    pub fn take_pending(&self) -> Vec<(DeviceId, &'static str, u64)> {
        let pending = std::mem::take(&mut self.inner.lock().pending);
        let mut out: Vec<_> = pending.into_iter().map(|((d, r), n)| (d, r, n)).collect();
        out.sort_unstable();
        out
    }

    /// Everything a device had dropped since the server started.
    pub fn total(&self, device: DeviceId) -> u64 {
        self.inner.lock().total.get(&device).copied().unwrap_or(0)
    }

    /// The `n` devices with most dropped, most first (ties by id).
    pub fn top(&self, n: usize) -> Vec<(DeviceId, u64)> {
        let d = self.inner.lock();
        let mut all: Vec<(DeviceId, u64)> = d.total.iter().map(|(k, v)| (*k, *v)).collect();
        drop(d);
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0), "burst spent");
        assert_eq!(b.until_token(t0), Duration::from_millis(100));
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // Idle for long: full again, never above the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(t2)).count(), 3);
        // A clock read that goes back does not add tokens.
        assert!(!b.take(t1));
        // On credit: the debt delays the next token.
        let t3 = t2 + Duration::from_secs(60);
        let mut b = TokenBucket::new(10, 1, t3);
        assert!(b.take(t3));
        b.take_on_credit(t3);
        assert_eq!(b.until_token(t3), Duration::from_millis(200));
        assert!(!b.take(t3 + Duration::from_millis(150)));
        assert!(b.take(t3 + Duration::from_millis(200)));
    }

    #[test]
    fn drops_are_reported_once_and_ranked() {
        let d = DeviceDrops::default();
        for _ in 0..3 {
            d.record(DeviceId(7), "rate_limited");
        }
        d.record(DeviceId(2), "busy");
        d.record(DeviceId(7), "busy");
        assert_eq!(
            d.take_pending(),
            vec![
                (DeviceId(2), "busy", 1),
                (DeviceId(7), "busy", 1),
                (DeviceId(7), "rate_limited", 3)
            ]
        );
        assert!(d.take_pending().is_empty(), "reported once");
        assert_eq!(d.top(1), vec![(DeviceId(7), 4)]);
        assert_eq!(d.total(DeviceId(2)), 1);
        assert_eq!(d.top(10).len(), 2);
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(DeviceLimits::default().validate().is_ok());
        let bad = DeviceLimits {
            rate_per_s: 0,
            ..DeviceLimits::default()
        };
        assert!(bad.validate().is_err());
    }
}
