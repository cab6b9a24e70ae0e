//! [`Timings`]: delivery timings measured off the run's own thread.
//!
//! Event delivery and sync round trips complete where the run's
//! [`Recorder`] cannot be reached: on device actors of other arbiters
//! (in-process) or on the reference server's gateway tasks (MQTT, through
//! its observer hook). They go into one more recorder behind a short mutex,
//! merged into the run's snapshot at the end. Nothing here waits on I/O:
//! the lock is held for a histogram increment.
//!
//! Deliveries also complete before the measured run starts (the devices'
//! first code sync): they are kept, up to [`MAX_EARLY`], and recorded at
//! the run's time zero with their own latency once the recorder exists.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Operation, Outcome, Recorder, Snapshot};

/// Deliveries kept from before the run's start; more are counted as dropped.
pub const MAX_EARLY: usize = 65_536;

enum State {
    /// Before [`Timings::start`]: (operation, outcome, latency in µs).
    Early(Vec<(Operation, Outcome, u64)>),
    Recording(Box<Recorder>),
    /// After [`Timings::finish`]: late deliveries are not counted.
    Done,
}

/// A thread-safe sink for delivery timings.
pub struct Timings {
    state: Mutex<State>,
    dropped: AtomicU64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings::new()
    }
}

impl Timings {
    pub fn new() -> Timings {
        Timings {
            state: Mutex::new(State::Early(Vec::new())),
            dropped: AtomicU64::new(0),
        }
    }

    /// Starts recording into `recorder` (made with the run's start, so its
    /// intervals line up with the run's); deliveries kept from before are
    /// recorded at time zero.
    pub fn start(&self, mut recorder: Recorder) {
        let mut st = self.state.lock();
        if let State::Early(early) = &*st {
            for (op, outcome, latency_us) in early {
                recorder.record_latency_us(*op, *outcome, *latency_us, 0);
            }
        }
        *st = State::Recording(Box::new(recorder));
    }

    /// One delivery that took `latency` and completed at `completed`.
    pub fn record(&self, op: Operation, outcome: Outcome, latency: Duration, completed: Instant) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        match &mut *self.state.lock() {
            State::Recording(r) => r.record_latency(op, outcome, latency_us, completed),
            State::Early(v) if v.len() < MAX_EARLY => v.push((op, outcome, latency_us)),
            State::Early(_) | State::Done => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Deliveries not recorded (too many before the start, or after the end).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forgets the deliveries timed so far ([`Recorder::discard_samples`]).
    pub fn discard_samples(&self) {
        if let State::Recording(r) = &mut *self.state.lock() {
            r.discard_samples();
        }
    }

    /// Ends recording; `None` if it never started.
    pub fn finish(&self) -> Option<Snapshot> {
        match std::mem::replace(&mut *self.state.lock(), State::Done) {
            State::Recording(r) => Some((*r).into_snapshot()),
            State::Early(_) | State::Done => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DEFAULT_INTERVAL_US;

    #[test]
    fn early_deliveries_count_at_time_zero_with_their_latency() {
        let t = Timings::new();
        let before = Instant::now();
        t.record(
            Operation::SyncRoundTrip,
            Outcome::Granted,
            Duration::from_millis(40),
            before,
        );
        let start = before + Duration::from_secs(5);
        t.start(Recorder::new(start, DEFAULT_INTERVAL_US));
        t.record(
            Operation::EventDelivery,
            Outcome::Granted,
            Duration::from_millis(3),
            start + Duration::from_millis(2_500),
        );
        t.record(
            Operation::SyncRoundTrip,
            Outcome::Error,
            Duration::from_secs(20),
            start + Duration::from_secs(3),
        );
        let s = t.finish().unwrap();
        let h = s
            .histogram(Operation::SyncRoundTrip, Outcome::Granted)
            .unwrap();
        assert!(h.equivalent(h.max(), 40_000));
        assert_eq!(s.count(Operation::SyncRoundTrip, Outcome::Error), 1);
        let e = s
            .histogram(Operation::EventDelivery, Outcome::Granted)
            .unwrap();
        assert!(e.equivalent(e.max(), 3_000));
        let slots: Vec<(u64, Operation)> = s.intervals().map(|i| (i.index, i.operation)).collect();
        assert_eq!(
            slots,
            [
                (0, Operation::SyncRoundTrip),
                (2, Operation::EventDelivery),
                (3, Operation::SyncRoundTrip)
            ]
        );
        // After the end: counted as dropped, nothing panics.
        t.record(
            Operation::EventDelivery,
            Outcome::Granted,
            Duration::ZERO,
            start,
        );
        assert_eq!(t.dropped(), 1);
        assert!(t.finish().is_none());
    }

    #[test]
    fn records_from_many_threads() {
        let t = std::sync::Arc::new(Timings::new());
        let start = Instant::now();
        t.start(Recorder::new(start, DEFAULT_INTERVAL_US));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000u64 {
                        t.record(
                            Operation::EventDelivery,
                            Outcome::Granted,
                            Duration::from_micros(i),
                            start,
                        );
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let s = t.finish().unwrap();
        assert_eq!(s.count(Operation::EventDelivery, Outcome::Granted), 4_000);
    }
}
