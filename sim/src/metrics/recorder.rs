//! The per-worker [`Recorder`] and the mergeable [`Snapshot`].
//!
//! A recorder is owned by one worker thread and written through `&mut self`:
//! recording is a few array-indexed histogram increments (about 6 ns each),
//! with no lock, no atomic and no allocation once a histogram exists. Other
//! threads never read a recorder; they ask its owner for a [`Snapshot`]
//! (cloned on demand, or taken whole at the end) and merge snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::decisions::{DecisionClass, DecisionExample, DecisionTally};
use super::hdr::{self, merged, HdrError};
use super::health::HealthTally;
use super::prom::FleetMetrics;
use super::{DeviceKind, Operation, Outcome, Transport, Verdict};

/// Highest latency a histogram tracks: one hour, in microseconds. Longer
/// latencies are clamped to it (counted, never dropped).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Default length of one chart/interval-log interval: one second.
pub const DEFAULT_INTERVAL_US: u64 = 1_000_000;

/// Finished intervals a recorder keeps per operation: a bound for a run
/// that outlives its plan (a drain, a stuck server). Runs pick their
/// interval with [`interval_us_for`], which stays far below it. Intervals
/// past the bound are counted in `intervals_dropped`, not stored.
pub const MAX_INTERVALS: usize = 86_400;

/// Most intervals a run's time series is planned to have. Each interval
/// holds one encoded histogram per operation in memory and in report.json,
/// so a month (virtual time) at one-second intervals would keep 2.6M of
/// them; the interval grows with the run instead.
pub const PLANNED_INTERVALS: u64 = 1_000;

/// Interval lengths a run may use, in seconds, shortest first: round
/// numbers on a clock, so chart ticks and HDR logs stay readable.
pub const INTERVAL_STEPS_S: [u64; 18] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200,
    86_400,
];

/// The interval for a run planned to last `run`: the shortest step of
/// [`INTERVAL_STEPS_S`] that covers it in at most [`PLANNED_INTERVALS`]
/// intervals (one second up to about 16 minutes, a day at most).
pub fn interval_us_for(run: std::time::Duration) -> u64 {
    let run_s = run.as_secs_f64();
    let step = INTERVAL_STEPS_S
        .iter()
        .copied()
        .find(|s| run_s / *s as f64 <= PLANNED_INTERVALS as f64)
        .unwrap_or(INTERVAL_STEPS_S[INTERVAL_STEPS_S.len() - 1]);
    step * 1_000_000
}

const SLOTS: usize = Operation::COUNT * Outcome::COUNT;

const fn slot(op: Operation, outcome: Outcome) -> usize {
    op.index() * Outcome::COUNT + outcome.index()
}

/// One operation's histogram for one interval, V2-encoded to keep memory
/// proportional to what was recorded (a live histogram is ~190 KB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntervalSlot {
    /// Interval number: the interval covers `[index, index + 1) * interval_us`
    /// after the run's start.
    pub index: u64,
    pub operation: Operation,
    /// Operations in this interval that ended in [`Outcome::Error`].
    pub errors: u64,
    /// Plain V2 encoding of the interval's latency histogram (all outcomes).
    pub encoded: Vec<u8>,
}

impl IntervalSlot {
    pub fn histogram(&self) -> Result<Histogram<u64>, HdrError> {
        hdr::decode(&self.encoded)
    }
}

/// Prometheus handles a recorder updates alongside its histograms. Counters
/// and histograms of the prometheus crate are atomics: lock-free, shared.
struct PromHook {
    metrics: Arc<FleetMetrics>,
    transport: Transport,
}

/// Per-worker metrics. See the module docs of [`crate::metrics`] on why
/// latency is `completed - intended`.
pub struct Recorder {
    start: Instant,
    interval_us: u64,
    hists: [Option<Histogram<u64>>; SLOTS],
    current: u64,
    cur_hists: [Option<Histogram<u64>>; Operation::COUNT],
    cur_errors: [u64; Operation::COUNT],
    finished: Vec<IntervalSlot>,
    finished_per_op: [usize; Operation::COUNT],
    intervals_dropped: u64,
    decisions: DecisionTally,
    health: HealthTally,
    behind_schedule: u64,
    prom: Option<PromHook>,
}

impl Recorder {
    /// A recorder whose time zero is `start` (the run's start, shared by all
    /// workers so that their intervals line up) and whose intervals are
    /// `interval_us` long (at least 1 ms).
    pub fn new(start: Instant, interval_us: u64) -> Recorder {
        Recorder {
            start,
            interval_us: interval_us.max(1_000),
            hists: Default::default(),
            current: 0,
            cur_hists: Default::default(),
            cur_errors: [0; Operation::COUNT],
            finished: Vec::new(),
            finished_per_op: [0; Operation::COUNT],
            intervals_dropped: 0,
            decisions: DecisionTally::default(),
            health: HealthTally::default(),
            behind_schedule: 0,
            prom: None,
        }
    }

    /// Also updates the Prometheus metrics (with this transport label) on every record.
    pub fn with_prometheus(mut self, metrics: Arc<FleetMetrics>, transport: Transport) -> Recorder {
        self.prom = Some(PromHook { metrics, transport });
        self
    }

    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// Records one operation. `intended` is when the load model scheduled it
    /// (open model) or when it started (closed model); `completed` is when its
    /// answer arrived. The latency recorded is `completed - intended`.
    #[inline]
    pub fn record(
        &mut self,
        op: Operation,
        outcome: Outcome,
        intended: Instant,
        completed: Instant,
    ) {
        let intended_us = micros_since(self.start, intended);
        let completed_us = micros_since(self.start, completed);
        self.record_us(op, outcome, intended_us, completed_us);
    }

    /// [`Recorder::record`] with both times as microseconds since the run's start.
    ///
    /// Intervals are keyed by completion time. A worker records operations as
    /// they complete, so completion times only go forward; one that completes
    /// before the open interval (never, with a monotonic clock) is counted in
    /// the open interval rather than reopening a closed one.
    #[inline]
    pub fn record_us(
        &mut self,
        op: Operation,
        outcome: Outcome,
        intended_us: u64,
        completed_us: u64,
    ) {
        self.record_latency_us(
            op,
            outcome,
            completed_us.saturating_sub(intended_us),
            completed_us,
        );
    }

    /// Records an operation whose latency was measured elsewhere (a sync
    /// round trip timed by the server) and that completed at `completed`.
    #[inline]
    pub fn record_latency(
        &mut self,
        op: Operation,
        outcome: Outcome,
        latency_us: u64,
        completed: Instant,
    ) {
        let completed_us = micros_since(self.start, completed);
        self.record_latency_us(op, outcome, latency_us, completed_us);
    }

    /// [`Recorder::record_latency`] with the completion time in microseconds
    /// since the run's start.
    #[inline]
    pub fn record_latency_us(
        &mut self,
        op: Operation,
        outcome: Outcome,
        latency_us: u64,
        completed_us: u64,
    ) {
        let interval = completed_us / self.interval_us;
        if interval > self.current {
            self.rotate(interval);
        }
        self.hists[slot(op, outcome)]
            .get_or_insert_with(hdr::new_histogram)
            .saturating_record(latency_us);
        self.cur_hists[op.index()]
            .get_or_insert_with(hdr::new_histogram)
            .saturating_record(latency_us);
        if outcome == Outcome::Error {
            self.cur_errors[op.index()] += 1;
        }
        if let Some(p) = &self.prom {
            p.metrics.observe(op, outcome, p.transport, latency_us);
        }
    }

    /// Counts one credential check against the oracle. `example` is called
    /// only for a mismatch that will be kept as an example.
    pub fn record_decision(
        &mut self,
        expected: Verdict,
        actual: Outcome,
        example: impl FnOnce() -> DecisionExample,
    ) -> DecisionClass {
        let class = self.decisions.record(expected, actual, example);
        if let Some(p) = &self.prom {
            p.metrics.count_decision(class);
        }
        class
    }

    /// Counts one credential check the oracle judged and keeps the
    /// examples of (they reach the report through
    /// [`DecisionTally::adopt_examples`]).
    pub fn count_decision(&mut self, expected: Verdict, actual: Outcome) -> DecisionClass {
        let class = self.decisions.count(expected, actual);
        if let Some(p) = &self.prom {
            p.metrics.count_decision(class);
        }
        class
    }

    /// Counts one credential check in the class the oracle gave it
    /// (ambiguous and uncertain ones included); the oracle keeps the
    /// examples.
    pub fn count_decision_class(&mut self, class: DecisionClass) -> DecisionClass {
        let class = self.decisions.count_class(class);
        if let Some(p) = &self.prom {
            p.metrics.count_decision(class);
        }
        class
    }

    /// Counts an arrival that started later than the load model intended
    /// (the generator could not keep up; latencies still count from the
    /// intended time, but the run should say so).
    pub fn arrival_behind_schedule(&mut self) {
        self.behind_schedule += 1;
        if let Some(p) = &self.prom {
            p.metrics.arrivals_behind_schedule.inc();
        }
    }

    /// Counts events a device emitted, for the report. (Prometheus has
    /// them live from the run's live metrics, `run::load::live`.)
    pub fn events_emitted(&mut self, kind: &'static str, n: u64) {
        self.health.add_emitted(kind, n);
    }

    /// Counts events the engine's activity log recorded, for the report
    /// (live in Prometheus as for [`Recorder::events_emitted`]).
    pub fn events_logged(&mut self, kind: &str, n: u64) {
        self.health.add_logged(kind, n);
    }

    /// Counts one code action's sync outcome (see [`HealthTally::code_sync`]).
    pub fn code_sync(&mut self, outcome: &str) {
        self.health.add_code_sync(outcome);
    }

    /// Counts one device's state in the health sample.
    pub fn observe_device(&mut self, kind: DeviceKind, online: bool, battery_pct: Option<f64>) {
        self.health.observe_device(kind, online, battery_pct);
    }

    /// Forgets the latency samples recorded so far (the whole-run
    /// histograms and the late-start count), from which the thresholds are
    /// judged; the intervals stay for the time series and the decision
    /// tally stays whole. A capacity step calls this at its warm-up's end,
    /// so each step is judged on what completed after it.
    pub fn discard_samples(&mut self) {
        self.hists = Default::default();
        self.behind_schedule = 0;
    }

    /// A copy of everything recorded so far, the open interval included.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::empty(self.interval_us);
        s.hists = self.hists.clone();
        for slot in &self.finished {
            s.intervals
                .insert((slot.index, slot.operation), slot.clone());
        }
        for op in Operation::ALL {
            if let Some(slot) = self.open_interval(op) {
                s.intervals.insert((slot.index, op), slot);
            }
        }
        s.decisions = self.decisions.clone();
        s.health = self.health.clone();
        s.behind_schedule = self.behind_schedule;
        s.intervals_dropped = self.intervals_dropped;
        s
    }

    /// Ends recording and returns everything recorded (cheaper than [`Recorder::snapshot`]).
    pub fn into_snapshot(mut self) -> Snapshot {
        self.rotate(self.current + 1);
        let mut s = Snapshot::empty(self.interval_us);
        s.hists = self.hists;
        for slot in self.finished {
            s.intervals.insert((slot.index, slot.operation), slot);
        }
        s.decisions = self.decisions;
        s.health = self.health;
        s.behind_schedule = self.behind_schedule;
        s.intervals_dropped = self.intervals_dropped;
        s
    }

    fn open_interval(&self, op: Operation) -> Option<IntervalSlot> {
        let h = self.cur_hists[op.index()].as_ref()?;
        (!h.is_empty()).then(|| IntervalSlot {
            index: self.current,
            operation: op,
            errors: self.cur_errors[op.index()],
            encoded: hdr::encode_v2(h),
        })
    }

    /// Closes the open interval (once per interval, not per record): encodes
    /// each operation's histogram and resets it for reuse.
    #[cold]
    fn rotate(&mut self, next: u64) {
        for op in Operation::ALL {
            if let Some(slot) = self.open_interval(op) {
                if self.finished_per_op[op.index()] < MAX_INTERVALS {
                    self.finished_per_op[op.index()] += 1;
                    self.finished.push(slot);
                } else {
                    self.intervals_dropped += 1;
                }
            }
            if let Some(h) = &mut self.cur_hists[op.index()] {
                h.reset();
            }
            self.cur_errors[op.index()] = 0;
        }
        self.current = next;
    }
}

fn micros_since(start: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX)
}

/// Everything recorded by one or more recorders (or shards), merged.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub interval_us: u64,
    hists: [Option<Histogram<u64>>; SLOTS],
    intervals: BTreeMap<(u64, Operation), IntervalSlot>,
    pub decisions: DecisionTally,
    pub health: HealthTally,
    /// Arrivals that started later than intended.
    pub behind_schedule: u64,
    /// Intervals not kept because of [`MAX_INTERVALS`].
    pub intervals_dropped: u64,
}

impl Snapshot {
    pub fn empty(interval_us: u64) -> Snapshot {
        Snapshot {
            interval_us,
            hists: Default::default(),
            intervals: BTreeMap::new(),
            decisions: DecisionTally::default(),
            health: HealthTally::default(),
            behind_schedule: 0,
            intervals_dropped: 0,
        }
    }

    /// Adds another snapshot: histograms are added (never percentiles
    /// averaged), intervals with the same number are added, counts summed.
    pub fn merge(&mut self, other: &Snapshot) -> Result<(), HdrError> {
        if other.interval_us != self.interval_us {
            return Err(HdrError::Add(format!(
                "interval lengths differ: {} us vs {} us",
                self.interval_us, other.interval_us
            )));
        }
        for (mine, theirs) in self.hists.iter_mut().zip(&other.hists) {
            if let Some(t) = theirs {
                match mine {
                    Some(m) => hdr::add(m, t)?,
                    None => *mine = Some(t.clone()),
                }
            }
        }
        for (key, slot) in &other.intervals {
            self.insert_interval(key.0, key.1, slot.errors, slot.histogram()?)?;
        }
        self.decisions.merge(&other.decisions);
        self.health.merge(&other.health);
        self.behind_schedule += other.behind_schedule;
        self.intervals_dropped += other.intervals_dropped;
        Ok(())
    }

    /// The histogram of one operation and outcome, if anything was recorded.
    pub fn histogram(&self, op: Operation, outcome: Outcome) -> Option<&Histogram<u64>> {
        self.hists[slot(op, outcome)].as_ref()
    }

    /// One operation over all outcomes.
    pub fn operation_histogram(&self, op: Operation) -> Option<Histogram<u64>> {
        merged(Outcome::ALL.iter().filter_map(|o| self.histogram(op, *o)))
    }

    /// Every credential check (PIN, QR, card, BLE) over all outcomes.
    pub fn checks_histogram(&self) -> Option<Histogram<u64>> {
        merged(
            Operation::ALL
                .iter()
                .filter(|op| op.is_credential_check())
                .flat_map(|op| Outcome::ALL.iter().filter_map(|o| self.histogram(*op, *o))),
        )
    }

    /// Operations recorded for an operation and outcome.
    pub fn count(&self, op: Operation, outcome: Outcome) -> u64 {
        self.histogram(op, outcome).map_or(0, |h| h.len())
    }

    /// Adds a histogram for one operation and outcome (used when decoding a report).
    pub fn add_histogram(
        &mut self,
        op: Operation,
        outcome: Outcome,
        h: &Histogram<u64>,
    ) -> Result<(), HdrError> {
        match &mut self.hists[slot(op, outcome)] {
            Some(m) => hdr::add(m, h),
            empty => {
                *empty = Some(h.clone());
                Ok(())
            }
        }
    }

    /// Adds one interval's histogram (merging with an interval of the same number).
    pub fn insert_interval(
        &mut self,
        index: u64,
        op: Operation,
        errors: u64,
        h: Histogram<u64>,
    ) -> Result<(), HdrError> {
        match self.intervals.get_mut(&(index, op)) {
            Some(slot) => {
                let mut m = slot.histogram()?;
                hdr::add(&mut m, &h)?;
                slot.encoded = hdr::encode_v2(&m);
                slot.errors += errors;
            }
            None => {
                self.intervals.insert(
                    (index, op),
                    IntervalSlot {
                        index,
                        operation: op,
                        errors,
                        encoded: hdr::encode_v2(&h),
                    },
                );
            }
        }
        Ok(())
    }

    /// Interval slots ordered by interval number, then operation.
    pub fn intervals(&self) -> impl Iterator<Item = &IntervalSlot> {
        self.intervals.values()
    }

    /// Totals of one interval, for a live progress line (rate, p99, errors).
    /// Ask for the last *closed* interval: the open one is still filling.
    pub fn interval_totals(&self, index: u64) -> Result<IntervalTotals, HdrError> {
        let mut t = IntervalTotals {
            index,
            count: 0,
            errors: 0,
            checks_p99_us: None,
        };
        let mut checks: Option<Histogram<u64>> = None;
        for slot in self
            .intervals
            .range((index, Operation::PinCheck)..=(index, Operation::EventDelivery))
        {
            let h = slot.1.histogram()?;
            t.count += h.len();
            t.errors += slot.1.errors;
            if slot.1.operation.is_credential_check() {
                match &mut checks {
                    Some(c) => hdr::add(c, &h)?,
                    None => checks = Some(h),
                }
            }
        }
        t.checks_p99_us = checks.map(|c| c.value_at_quantile(0.99));
        Ok(t)
    }
}

/// One interval's totals (see [`Snapshot::interval_totals`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalTotals {
    pub index: u64,
    /// Operations completed in the interval (all kinds).
    pub count: u64,
    pub errors: u64,
    /// p99 of the credential checks completed in the interval.
    pub checks_p99_us: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_completion_minus_intended() {
        let mut r = Recorder::new(Instant::now(), DEFAULT_INTERVAL_US);
        // Scheduled at 1 s, answered at 1.5 s: 500 ms even if it started late.
        r.record_us(Operation::PinCheck, Outcome::Granted, 1_000_000, 1_500_000);
        let s = r.snapshot();
        let h = s.histogram(Operation::PinCheck, Outcome::Granted).unwrap();
        assert!(h.equivalent(h.max(), 500_000));
        assert_eq!(s.count(Operation::PinCheck, Outcome::Granted), 1);
        assert_eq!(s.intervals().count(), 1);
        assert_eq!(s.intervals().next().unwrap().index, 1);
    }

    #[test]
    fn record_takes_tokio_instants_relative_to_the_run_start() {
        use std::time::Duration;
        let start = Instant::now();
        let mut r = Recorder::new(start, DEFAULT_INTERVAL_US);
        let intended = start + Duration::from_millis(1_100);
        r.record(
            Operation::BleCheck,
            Outcome::Denied,
            intended,
            intended + Duration::from_millis(250),
        );
        // An answer "before" the run started (a clock quirk) counts as 0, not a panic.
        r.record(Operation::BleCheck, Outcome::Denied, intended, start);
        let s = r.into_snapshot();
        let h = s.histogram(Operation::BleCheck, Outcome::Denied).unwrap();
        assert!(h.equivalent(h.max(), 250_000));
        assert_eq!(h.min(), 0);
        assert_eq!(s.intervals().next().unwrap().index, 1);
    }

    #[test]
    fn intervals_rotate_and_count_errors() {
        let mut r = Recorder::new(Instant::now(), DEFAULT_INTERVAL_US);
        r.record_us(Operation::QrCheck, Outcome::Error, 0, 10);
        r.record_us(Operation::QrCheck, Outcome::Granted, 0, 20);
        r.record_us(Operation::QrCheck, Outcome::Granted, 2_000_000, 2_000_100);
        let s = r.into_snapshot();
        let slots: Vec<_> = s.intervals().collect();
        assert_eq!(slots.len(), 2);
        assert_eq!((slots[0].index, slots[0].errors), (0, 1));
        assert_eq!(slots[0].histogram().unwrap().len(), 2);
        assert_eq!((slots[1].index, slots[1].errors), (2, 0));
    }

    #[test]
    fn interval_totals_for_a_progress_line() {
        let mut r = Recorder::new(Instant::now(), DEFAULT_INTERVAL_US);
        r.record_us(Operation::PinCheck, Outcome::Granted, 0, 1_000);
        r.record_us(Operation::QrCheck, Outcome::Error, 0, 90_000);
        r.record_us(Operation::EventDelivery, Outcome::Granted, 0, 500_000);
        r.record_us(Operation::PinCheck, Outcome::Granted, 1_000_000, 1_002_000);
        let s = r.snapshot();
        let t = s.interval_totals(0).unwrap();
        assert_eq!((t.count, t.errors), (3, 1));
        // p99 of the two checks (1 ms and 90 ms), not of the event delivery.
        assert!(t.checks_p99_us.unwrap() >= 89_000 && t.checks_p99_us.unwrap() < 100_000);
        assert_eq!(s.interval_totals(1).unwrap().count, 1);
        assert_eq!(s.interval_totals(7).unwrap().checks_p99_us, None);
    }

    #[test]
    fn the_interval_grows_with_the_run_and_keeps_the_series_bounded() {
        use std::time::Duration;
        let s = |secs: u64| interval_us_for(Duration::from_secs(secs)) / 1_000_000;
        assert_eq!(s(0), 1);
        assert_eq!(s(20), 1);
        assert_eq!(s(15 * 60), 1);
        assert_eq!(s(1_001), 2);
        assert_eq!(s(7 * 86_400), 900);
        assert_eq!(s(30 * 86_400), 3_600);
        assert_eq!(s(366 * 86_400), 43_200);
        for days in [1, 2, 7, 14, 30, 90, 366] {
            let run: u64 = days * 86_400;
            assert!(run.div_ceil(s(run)) <= PLANNED_INTERVALS, "{days} days");
        }
    }

    #[test]
    fn merge_rejects_different_intervals() {
        let mut a = Snapshot::empty(1_000_000);
        assert!(a.merge(&Snapshot::empty(2_000_000)).is_err());
    }
}
