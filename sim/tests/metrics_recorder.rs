//! Recorders merge exactly, interval logs are readable by HdrHistogram's own
//! reader, and latency counts from the intended start (coordinated omission).

mod common;

use common::*;
use fleetsim::metrics::{Operation, Outcome, Recorder, Snapshot};
use fleetsim::report::{write_all, RunReport};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;

fn split(samples: &[Sample]) -> (Snapshot, Snapshot) {
    let mut a = recorder();
    let mut b = recorder();
    feed(&mut a, samples.iter().filter(|s| s.device % 2 == 0));
    feed(&mut b, samples.iter().filter(|s| s.device % 2 == 1));
    observe_fleet(&mut a, (0..DEVICES).filter(|d| d % 2 == 0));
    observe_fleet(&mut b, (0..DEVICES).filter(|d| d % 2 == 1));
    (a.into_snapshot(), b.into_snapshot())
}

#[test]
fn merge_of_two_recorders_equals_one_recorder_fed_the_same_values() {
    let samples = samples(1, 30_000, 12);
    let whole = whole_snapshot(&samples);
    let (a, b) = split(&samples);
    let mut merged = a.clone();
    merged.merge(&b).unwrap();

    let mut checked = 0;
    for op in Operation::ALL {
        for o in Outcome::ALL {
            let (w, m) = (whole.histogram(op, o), merged.histogram(op, o));
            assert_eq!(w.map(|h| h.len()), m.map(|h| h.len()), "{op:?} {o:?} count");
            if let (Some(w), Some(m)) = (w, m) {
                for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
                    assert_eq!(
                        w.value_at_quantile(q),
                        m.value_at_quantile(q),
                        "{op:?} {o:?} q={q}"
                    );
                }
                assert!(w == m, "{op:?} {o:?}: histograms differ");
                checked += 1;
            }
        }
    }
    assert!(checked >= Operation::COUNT * 2, "samples cover most slots");
    assert_eq!(
        whole.count(Operation::PinCheck, Outcome::Granted),
        a.count(Operation::PinCheck, Outcome::Granted)
            + b.count(Operation::PinCheck, Outcome::Granted)
    );

    let wi: Vec<_> = whole.intervals().collect();
    let mi: Vec<_> = merged.intervals().collect();
    assert_eq!(wi.len(), mi.len());
    assert!(wi.len() >= 12 * 4);
    for (w, m) in wi.iter().zip(&mi) {
        assert_eq!(
            (w.index, w.operation, w.errors),
            (m.index, m.operation, m.errors)
        );
        assert!(
            w.histogram().unwrap() == m.histogram().unwrap(),
            "interval {} {:?}",
            w.index,
            w.operation
        );
    }
    assert_eq!(whole.decisions.counts, merged.decisions.counts);
    assert!(whole.decisions.counts.false_accepts > 0 && whole.decisions.counts.false_rejects > 0);
    assert_eq!(whole.health, merged.health);
}

#[test]
fn snapshot_on_demand_includes_the_open_interval_and_recording_continues() {
    let samples = samples(2, 1_000, 3);
    let mut r = recorder();
    feed(&mut r, &samples[..500]);
    let early = r.snapshot();
    feed(&mut r, &samples[500..]);
    let late = r.into_snapshot();
    let total = |s: &Snapshot| -> u64 {
        Operation::ALL
            .iter()
            .flat_map(|op| Outcome::ALL.iter().map(move |o| s.count(*op, *o)))
            .sum()
    };
    assert_eq!(total(&early), 500);
    assert_eq!(total(&late), 1_000);
    let in_intervals =
        |s: &Snapshot| -> u64 { s.intervals().map(|i| i.histogram().unwrap().len()).sum() };
    assert_eq!(in_intervals(&early), 500);
    assert_eq!(in_intervals(&late), 1_000);
}

#[test]
fn interval_logs_round_trip_through_hdrhistograms_reader() {
    let samples = samples(3, 8_000, 6);
    let snap = whole_snapshot(&samples);
    let mut m = meta(6.0, None);
    m.started_at = Some("2026-11-23T08:00:00Z".into());
    let report = RunReport::build(m, &snap).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), &report).unwrap();

    for op in Operation::ALL {
        let bytes = std::fs::read(dir.path().join(format!("hdr/{}.hlog", op.as_str()))).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("#fleetsim "), "{text:.80}");
        let expected: Vec<_> = snap.intervals().filter(|i| i.operation == op).collect();
        let mut n = 0;
        let mut base_time = None;
        for entry in IntervalLogIterator::new(&bytes) {
            let i = match entry.unwrap() {
                LogEntry::BaseTime(t) => {
                    base_time = Some(t.as_secs());
                    continue;
                }
                LogEntry::StartTime(_) => continue,
                LogEntry::Interval(i) => i,
            };
            assert_eq!(
                base_time,
                Some(1_795_420_800),
                "BaseTime precedes the intervals"
            );
            let e = expected[n];
            assert_eq!(i.tag().unwrap().as_str(), op.as_str());
            assert_eq!(i.start_timestamp().as_secs(), e.index);
            assert_eq!(i.duration().as_secs(), 1);
            let raw = base64_decode(i.encoded_histogram());
            let h: hdrhistogram::Histogram<u64> = Deserializer::new()
                .deserialize(&mut raw.as_slice())
                .unwrap();
            assert!(h == e.histogram().unwrap(), "interval {}", e.index);
            // The max column is in the log's unit (values / divisor 1.0).
            assert_eq!(i.max(), h.max() as f64);
            n += 1;
        }
        assert_eq!(n, expected.len(), "{op:?}");
        assert!(n >= 6);
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn latency_counts_from_the_intended_start_so_stalls_are_not_hidden() {
    // A server that stalls 1 s once, then answers in 1 ms. Arrivals are due every 10 ms.
    // Open model: the 100 arrivals due during the stall all wait for it.
    let mut open = recorder();
    let mut closed = recorder();
    let mut free_at_us = 0u64;
    for i in 0..1_000u64 {
        let intended_us = i * 10_000;
        let service_us = if i == 100 { 1_000_000 } else { 1_000 };
        let started_us = intended_us.max(free_at_us);
        let completed_us = started_us + service_us;
        free_at_us = completed_us;
        open.record_us(
            Operation::PinCheck,
            Outcome::Granted,
            intended_us,
            completed_us,
        );
        closed.record_us(
            Operation::PinCheck,
            Outcome::Granted,
            started_us,
            completed_us,
        );
    }
    let open = open.into_snapshot();
    let closed = closed.into_snapshot();
    let p = |s: &Snapshot, q| {
        s.histogram(Operation::PinCheck, Outcome::Granted)
            .unwrap()
            .value_at_quantile(q)
    };
    // Measured from the actual start, only the stalled request is slow: p99 stays at 1 ms.
    assert!(p(&closed, 0.99) < 1_100, "closed p99 {}", p(&closed, 0.99));
    // From the intended start, ~10 % of requests waited behind the stall.
    assert!(p(&open, 0.95) > 400_000, "open p95 {}", p(&open, 0.95));
}

#[test]
fn values_beyond_the_range_are_clamped_not_lost() {
    let mut r = Recorder::new(tokio::time::Instant::now(), INTERVAL_US);
    r.record_us(Operation::RemoteOpen, Outcome::Error, 0, u64::MAX / 2);
    let s = r.into_snapshot();
    assert_eq!(s.count(Operation::RemoteOpen, Outcome::Error), 1);
}
