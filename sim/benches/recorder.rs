//! Cost of the record path: one `Recorder::record_us` (two histogram
//! increments), with and without the Prometheus counters.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fleetsim::metrics::{
    FleetMetrics, Operation, Outcome, Recorder, Transport, DEFAULT_INTERVAL_US,
};
use tokio::time::Instant;

fn record(c: &mut Criterion) {
    let mut r = Recorder::new(Instant::now(), DEFAULT_INTERVAL_US);
    let mut t_us = 0u64;
    c.bench_function("recorder_record_us", |b| {
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

    let mut r = Recorder::new(Instant::now(), DEFAULT_INTERVAL_US)
        .with_prometheus(Arc::new(FleetMetrics::new()), Transport::Inproc);
    let mut t_us = 0u64;
    c.bench_function("recorder_record_us_with_prometheus", |b| {
        b.iter(|| {
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

criterion_group!(benches, record);
criterion_main!(benches);
