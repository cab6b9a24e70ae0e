//! Deterministic sample data for the metrics and report tests: a stream of
//! operations from a small fleet, fed to recorders as a run would.

#![allow(dead_code)]

use fleetsim::metrics::{
    DecisionExample, DeviceKind, Operation, Outcome, Recorder, Snapshot, Verdict,
};
use fleetsim::report::{LoadModel, RunMeta, RunReport, ShardId, ThresholdResult};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

pub const INTERVAL_US: u64 = 1_000_000;
pub const DEVICES: u32 = 40;

#[derive(Clone, Debug)]
pub struct Sample {
    pub device: u32,
    pub op: Operation,
    pub outcome: Outcome,
    pub intended_us: u64,
    pub completed_us: u64,
    pub expected: Verdict,
}

/// `n` operations spread over `secs` seconds, with a long tail and a stall
/// in the middle (latency measured from the intended start grows during it).
/// Ordered by completion, as a worker records them (its clock only goes forward).
pub fn samples(seed: u64, n: usize, secs: u64) -> Vec<Sample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let span_us = secs * 1_000_000;
    let mut all: Vec<Sample> = (0..n)
        .map(|i| {
            let intended_us = i as u64 * span_us / n as u64;
            let op = Operation::ALL[rng.random_range(0..Operation::COUNT)];
            let mut latency_us = 200 + rng.random_range(0..2_000u64);
            if rng.random_ratio(1, 100) {
                latency_us += rng.random_range(10_000..80_000);
            }
            // A 300 ms stall at 40 % of the run.
            let stall_at = span_us * 2 / 5;
            if intended_us >= stall_at && intended_us < stall_at + 300_000 {
                latency_us += stall_at + 300_000 - intended_us;
            }
            let expected = if rng.random_ratio(7, 10) {
                Verdict::Grant
            } else {
                Verdict::Deny
            };
            let roll = rng.random_range(0..1000);
            let outcome = match (expected, roll) {
                (_, 0..=4) => Outcome::Error,
                (Verdict::Grant, 5..=7) => Outcome::Denied,
                (Verdict::Deny, 5..=6) => Outcome::Granted,
                (Verdict::Grant, _) => Outcome::Granted,
                (Verdict::Deny, _) => Outcome::Denied,
            };
            Sample {
                device: rng.random_range(0..DEVICES),
                op,
                outcome,
                intended_us,
                completed_us: intended_us + latency_us,
                expected,
            }
        })
        .collect();
    all.sort_by_key(|s| s.completed_us);
    all
}

pub fn example(s: &Sample) -> DecisionExample {
    let at = |us: u64| format!("2026-03-02T07:00:{:09.6}Z", us as f64 / 1e6 % 60.0);
    DecisionExample {
        at: at(s.intended_us),
        answered_at: at(s.completed_us),
        site: Some(s.device % 4),
        door: s.device / 2,
        device: s.device,
        credential: (s.expected == Verdict::Grant).then_some(1000 + s.device),
        credential_kind: s.op.as_str().trim_end_matches("_check").to_owned(),
        action: format!("{}_valid", s.op.as_str().trim_end_matches("_check")),
        expected: match s.expected {
            Verdict::Grant => "granted".to_owned(),
            Verdict::Deny => "denied:expired".to_owned(),
        },
        actual: match s.outcome {
            Outcome::Error => "error:timed_out".to_owned(),
            Outcome::Granted => "granted".to_owned(),
            Outcome::Denied => "denied:wrong_pin".to_owned(),
        },
        note: "oracle expected the opposite".to_owned(),
        wrong_pins_at: Vec::new(),
        locked_until: None,
    }
}

/// Feeds samples the way a worker would: every operation, its decision for
/// credential checks, and one emitted event per operation.
pub fn feed<'a>(rec: &mut Recorder, samples: impl IntoIterator<Item = &'a Sample>) {
    for s in samples {
        rec.record_us(s.op, s.outcome, s.intended_us, s.completed_us);
        if s.op.is_credential_check() {
            rec.record_decision(s.expected, s.outcome, || example(s));
        }
        let kind = if s.outcome == Outcome::Granted {
            "access_granted"
        } else {
            "access_denied"
        };
        rec.events_emitted(kind, 1);
        if s.device % 17 != 3 {
            rec.events_logged(kind, 1);
        }
    }
}

/// The health sample of the devices in `devices`.
pub fn observe_fleet(rec: &mut Recorder, devices: impl Iterator<Item = u32>) {
    for d in devices {
        let kind = fleetsim::metrics::DEVICE_KINDS[(d % 4) as usize];
        let battery = (kind != DeviceKind::DoorSensor).then_some(f64::from(d * 37 % 101));
        rec.observe_device(kind, d % 9 != 0, battery);
    }
}

pub fn recorder() -> Recorder {
    Recorder::new(Instant::now(), INTERVAL_US)
}

/// Everything from one recorder fed all samples and the whole fleet.
pub fn whole_snapshot(samples: &[Sample]) -> Snapshot {
    let mut r = recorder();
    feed(&mut r, samples);
    observe_fleet(&mut r, 0..DEVICES);
    r.into_snapshot()
}

pub fn meta(duration_s: f64, shard: Option<ShardId>) -> RunMeta {
    let shard_flag = shard
        .map(|s| format!(" --shard {}/{}", s.index, s.count))
        .unwrap_or_default();
    RunMeta {
        name: "office-morning-rush".into(),
        seed: 42,
        command: format!("fleetsim run scenarios/office.toml --seed 42{shard_flag}"),
        scenario: serde_json::json!({
            "name": "office-morning-rush",
            "seed": 42,
            "transport": "inproc",
            "phases": [{"name": "steady", "duration": "20s", "arrivals": "500/s"}],
            "thresholds": {"check.pin.p99": "< 25ms", "decisions.false_accept": "== 0"}
        }),
        model: LoadModel::Open,
        transport: "inproc".into(),
        clock: "real".into(),
        started_at: None,
        duration_s,
        shard,
    }
}

/// A full report with thresholds, one passing and two failing.
pub fn sample_report() -> RunReport {
    let s = samples(7, 20_000, 20);
    let mut report =
        RunReport::build(meta(20.0, None), &whole_snapshot(&s)).expect("report builds");
    let m = report.metrics();
    let p99 = m["check.pin.p99"];
    let fa = m["decisions.false_accept"];
    let err = m["errors.rate"];
    report.set_thresholds(vec![
        ThresholdResult::new("check.pin.p99", "< 250ms", Some(p99), p99 < 250.0),
        ThresholdResult::new("decisions.false_accept", "== 0", Some(fa), fa == 0.0),
        ThresholdResult::new("errors.rate", "< 0.1%", Some(err), err < 0.001),
        ThresholdResult::new("check.card.p999", "< 1s & <tight>", None, false),
    ]);
    report
}
