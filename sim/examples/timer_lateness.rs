//! How late a tokio `sleep_until` wakes on the runtime fleetsim's load
//! runs on (actix's System, a current-thread tokio runtime): 3,000
//! Poisson arrivals at 1,000/s, each waiting for its intended start as
//! `open_site` does. The harness floor's latency counts from the intended
//! start, so this lateness is in every check it measures (README,
//! "The scenario path"). Run with
//! `cargo run --release -p fleetsim --example timer_lateness`.

use tokio::time::{sleep_until, Duration, Instant};

/// Arrivals measured.
const ARRIVALS: usize = 3_000;
/// Arrivals a second (the harness floor's rate).
const RATE_PER_S: f64 = 1_000.0;

fn main() {
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let start = Instant::now();
        let mut late_us = Vec::with_capacity(ARRIVALS);
        let mut t = Duration::ZERO;
        // A fixed xorshift stream: exponential gaps, no dependency.
        let mut x: u64 = 12_345;
        for _ in 0..ARRIVALS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 1_000_000) as f64 / 1_000_000.0;
            t += Duration::from_secs_f64(-(1.0 - u).ln() / RATE_PER_S);
            let intended = start + t;
            sleep_until(intended).await;
            late_us.push((Instant::now() - intended).as_micros() as u64);
        }
        late_us.sort_unstable();
        let q = |p: f64| late_us[((late_us.len() as f64 - 1.0) * p) as usize];
        println!(
            "wake lateness: p50 {} us, p90 {} us, p99 {} us, max {} us",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    });
}
