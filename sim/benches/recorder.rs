//! Cost of the record path: one `Recorder::record_us` (two histogram
//! increments), with and without the Prometheus counters.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fleetsim::metrics::{
    FleetMetrics, Operation, Outcome, Recorder, Transport, DEFAULT_INTERVAL_US,
};
use tokio::time::Instant;

fn bench_record(c: &mut Criterion, name: &str, mut r: Recorder) {
    let mut t_us = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            // 1 us apart: a new interval every million records, as in a real run.
            t_us += 1;
            r.record_us(
                Operation::PinCheck,
                Outcome::Granted,
                black_box(t_us),
                black_box(t_us + 850),
            );
        })
    });
}

fn record(c: &mut Criterion) {
    bench_record(
        c,
        "recorder_record_us",
        Recorder::new(Instant::now(), DEFAULT_INTERVAL_US),
    );
    let metrics = Arc::new(FleetMetrics::new());
    bench_record(
        c,
        "recorder_record_us_with_prometheus",
        Recorder::new(Instant::now(), DEFAULT_INTERVAL_US)
            .with_prometheus(metrics, Transport::Inproc),
    );
}

criterion_group!(benches, record);
criterion_main!(benches);
