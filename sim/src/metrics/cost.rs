//! What the harness itself costs: the CPU time of the fleetsim process
//! during the measured load, the cores that makes, and a verdict on
//! whether the harness rather than the system under test was the limit
//! (as k6 warns about a saturated load generator).
//!
//! CPU time comes from `getrusage(RUSAGE_SELF)`: user and system time of
//! every thread of the process, kept by the kernel (microseconds), with no
//! file to parse. Everything in the process counts: with the `inproc`
//! transport the engine, with `http` or `mqtt` and no `--target` the
//! embedded server and broker too ([`HarnessUsage::sut_in_process`] says
//! so); an external `--broker` or `--target` is not counted.
//!
//! Wall time is the real clock's even under the virtual clock: the cost of
//! a run is CPU per real second. It is read here and in the progress line
//! only, never to decide what the run does, so a replay stays exact.

use std::sync::Arc;

use super::FleetMetrics;

/// Share of the available cores from which the harness counts as
/// saturated: a process at 90% of every core leaves its event loops
/// waiting for a CPU, and arrivals start late.
pub const SATURATED_SHARE: f64 = 0.9;

/// CPU time of this process so far (every thread).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    pub user_s: f64,
    pub system_s: f64,
}

impl CpuTime {
    /// Now, from `getrusage(RUSAGE_SELF)`; zero if the call fails (it
    /// cannot with these arguments).
    pub fn now() -> CpuTime {
        // SAFETY: a zeroed rusage is a valid value, and getrusage writes
        // only into the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        if rc != 0 {
            return CpuTime::default();
        }
        let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        CpuTime {
            user_s: s(ru.ru_utime),
            system_s: s(ru.ru_stime),
        }
    }

    pub fn total_s(&self) -> f64 {
        self.user_s + self.system_s
    }

    /// What was spent since `earlier`.
    pub fn since(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            system_s: (self.system_s - earlier.system_s).max(0.0),
        }
    }
}

/// Cores this process may run on (its CPU affinity and cgroup quota, as
/// the standard library reads them); at least 1.
pub fn cores_available() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// What the process spent over the measured load.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HarnessUsage {
    pub cpu: CpuTime,
    /// Real seconds the measured load took (start of the first phase to
    /// the end of the drain).
    pub wall_s: f64,
    /// Highest cores used over one sample window (about a second).
    pub peak_cores: f64,
    pub cores_available: u32,
    /// The system under test ran in this process (engine, embedded server
    /// or broker), so its CPU is in `cpu` too.
    pub sut_in_process: bool,
}

/// Measures the process's CPU over the load, and keeps the Prometheus
/// harness metrics current when they are served.
pub struct CostMeter {
    start_cpu: CpuTime,
    start_wall: std::time::Instant,
    last: (CpuTime, std::time::Instant),
    peak_cores: f64,
    cores_available: u32,
    sut_in_process: bool,
    prom: Option<Arc<FleetMetrics>>,
}

impl CostMeter {
    /// Starts measuring now.
    pub fn start(sut_in_process: bool, prom: Option<Arc<FleetMetrics>>) -> CostMeter {
        let cpu = CpuTime::now();
        let wall = std::time::Instant::now();
        let cores_available = cores_available();
        if let Some(p) = &prom {
            p.harness_cores_available.set(i64::from(cores_available));
        }
        CostMeter {
            start_cpu: cpu,
            start_wall: wall,
            last: (cpu, wall),
            peak_cores: 0.0,
            cores_available,
            sut_in_process,
            prom,
        }
    }

    /// One sample (about once a second): the cores used since the last
    /// one, the peak, and the Prometheus counters. Windows under 100 ms
    /// are skipped (too short to say anything about cores).
    pub fn sample(&mut self) {
        let (cpu, wall) = (CpuTime::now(), std::time::Instant::now());
        let dt = wall.duration_since(self.last.1).as_secs_f64();
        if dt < 0.1 {
            return;
        }
        let spent = cpu.since(self.last.0).total_s();
        let cores = spent / dt;
        self.peak_cores = self.peak_cores.max(cores);
        if let Some(p) = &self.prom {
            p.harness_cpu_seconds.inc_by(spent);
            p.harness_cores_used.set(cores);
        }
        self.last = (cpu, wall);
    }

    /// What the load cost so far (called when it is over; the meter may
    /// go on sampling for Prometheus).
    pub fn usage(&mut self) -> HarnessUsage {
        self.sample();
        let cpu = CpuTime::now().since(self.start_cpu);
        let wall_s = self.start_wall.elapsed().as_secs_f64();
        // A run shorter than one sample window: its average is its peak.
        let average = if wall_s > 0.0 {
            cpu.total_s() / wall_s
        } else {
            0.0
        };
        HarnessUsage {
            cpu,
            wall_s,
            peak_cores: self.peak_cores.max(average),
            cores_available: self.cores_available,
            sut_in_process: self.sut_in_process,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_never_runs_backwards() {
        let before = CpuTime::now();
        // Spin until the kernel has charged at least 20 ms to this process
        // (bounded, so a clock that never moves fails instead of hanging).
        let mut x = 0u64;
        let mut after = CpuTime::now();
        for _ in 0..10_000 {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
            after = CpuTime::now();
            if after.since(before).total_s() >= 0.02 {
                break;
            }
        }
        std::hint::black_box(x);
        assert!(
            after.since(before).total_s() >= 0.02,
            "{before:?} {after:?}"
        );
        assert!(after.user_s >= before.user_s && after.system_s >= before.system_s);
        assert_eq!(before.since(after).total_s(), 0.0);
    }

    #[test]
    fn the_meter_reports_into_prometheus() {
        let m = Arc::new(FleetMetrics::new());
        let mut meter = CostMeter::start(true, Some(m.clone()));
        assert!(m.harness_cores_available.get() >= 1);
        meter.last.1 -= std::time::Duration::from_secs(1);
        meter.last.0.user_s -= 0.5;
        meter.sample();
        assert!(m.harness_cpu_seconds.get() >= 0.5);
        assert!(m.harness_cores_used.get() > 0.0);
        let usage = meter.usage();
        assert!(usage.peak_cores >= 0.4, "{usage:?}");
        assert!(usage.sut_in_process);
        assert_eq!(usage.cores_available, cores_available());
    }
}
