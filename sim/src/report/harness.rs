//! The harness's own cost in a report: CPU time, cores used, checks per
//! harness core, and whether the harness itself was the bottleneck (see
//! [`crate::metrics::cost`] for how it is measured).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metrics::cost::{HarnessUsage, SATURATED_SHARE};

/// What the harness process cost over the measured load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HarnessCost {
    /// CPU seconds (user + system) of the fleetsim process, every thread,
    /// during the load (merged: summed over the shards).
    pub cpu_s: f64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// Real seconds the load took, drain included (merged: the longest
    /// shard's).
    pub wall_s: f64,
    /// `cpu_s / wall_s`: cores kept busy on average (merged: summed over
    /// the shards).
    pub cores_used: f64,
    /// The most cores used over about one second (merged: the sum of the
    /// shards' peaks, an upper bound).
    pub peak_cores_used: f64,
    /// Cores the process could use (merged: summed over the shards, which
    /// counts a machine twice when two shards share it).
    pub cores_available: u32,
    /// Credential checks per CPU second of the harness: the checks per
    /// second one fully used harness core carries.
    pub checks_per_cpu_s: f64,
    /// Arrivals the generator started at least [`LATE_START_MS`] after
    /// their intended time (its event loop was busy or short of CPU).
    pub late_starts: u64,
    /// The latest start of any arrival after its intended time, ms.
    pub max_start_lag_ms: f64,
    /// The system under test ran inside this process (in-process engine,
    /// embedded server or broker): its CPU is in `cpu_s` too.
    pub sut_in_process: bool,
    /// The harness itself was the bottleneck (see `warning`).
    pub saturated: bool,
    /// Why the harness counts as the bottleneck, for the summary.
    pub warning: Option<String>,
}

/// An arrival that starts this late after its intended time counts as a
/// late start: well above timer granularity (1 ms) and scheduling noise.
pub const LATE_START_MS: u64 = 10;

/// How the generator kept to its schedule: arrivals started late, and the
/// latest start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StartLag {
    pub late_starts: u64,
    pub max_lag_us: u64,
}

impl StartLag {
    /// Counts one arrival that started `lag_us` after its intended time.
    pub fn record(&mut self, lag_us: u64) {
        if lag_us >= LATE_START_MS * 1_000 {
            self.late_starts += 1;
        }
        self.max_lag_us = self.max_lag_us.max(lag_us);
    }
}

impl HarnessCost {
    /// The cost of a run that made `checks` credential checks. Saturated
    /// when the process kept at least [`SATURATED_SHARE`] of the machine's
    /// cores busy over the whole load, or when arrivals started late while
    /// it did so for a second or more.
    pub fn of(u: &HarnessUsage, checks: u64, lag: StartLag) -> HarnessCost {
        let cpu_s = u.cpu.total_s();
        let cores_used = if u.wall_s > 0.0 {
            cpu_s / u.wall_s
        } else {
            0.0
        };
        let limit = SATURATED_SHARE * f64::from(u.cores_available.max(1));
        let flat_out = cores_used >= limit;
        let behind = lag.late_starts > 0 && u.peak_cores >= limit;
        let warning = (flat_out || behind).then(|| {
            let mut w = format!(
                "the harness may have been the bottleneck: it used {:.2} of {} cores on average (peak {:.2})",
                cores_used, u.cores_available, u.peak_cores
            );
            if lag.late_starts > 0 {
                w.push_str(&format!(
                    ", and {} arrivals started {} ms or more late (latest {:.1} ms)",
                    lag.late_starts,
                    LATE_START_MS,
                    lag.max_lag_us as f64 / 1e3
                ));
            }
            if u.sut_in_process {
                w.push_str("; the system under test ran in the same process");
            }
            w.push_str(
                ". Rates and latencies may be fleetsim's limit, not the system's: split the run over more cores or machines (--shard)",
            );
            w
        });
        HarnessCost {
            cpu_s: round3(cpu_s),
            cpu_user_s: round3(u.cpu.user_s),
            cpu_system_s: round3(u.cpu.system_s),
            wall_s: round3(u.wall_s),
            cores_used: round3(cores_used),
            peak_cores_used: round3(u.peak_cores),
            cores_available: u.cores_available,
            checks_per_cpu_s: if cpu_s > 0.0 {
                (checks as f64 / cpu_s).round()
            } else {
                0.0
            },
            late_starts: lag.late_starts,
            max_start_lag_ms: round3(lag.max_lag_us as f64 / 1e3),
            sut_in_process: u.sut_in_process,
            saturated: warning.is_some(),
            warning,
        }
    }

    /// The shards' costs together: CPU, cores and late starts summed, the
    /// longest wall time, saturated when any shard was (each warning kept,
    /// named by its shard). `checks` is the merged run's.
    pub fn merged<'a>(
        shards: impl IntoIterator<Item = (String, &'a HarnessCost)>,
        checks: u64,
    ) -> Option<HarnessCost> {
        let mut out: Option<HarnessCost> = None;
        let mut warnings = Vec::new();
        for (name, h) in shards {
            if let Some(w) = &h.warning {
                warnings.push(format!("{name}: {w}"));
            }
            let o = out.get_or_insert_with(HarnessCost::default);
            o.cpu_s += h.cpu_s;
            o.cpu_user_s += h.cpu_user_s;
            o.cpu_system_s += h.cpu_system_s;
            o.wall_s = o.wall_s.max(h.wall_s);
            o.peak_cores_used += h.peak_cores_used;
            o.cores_available = o.cores_available.saturating_add(h.cores_available);
            o.late_starts += h.late_starts;
            o.max_start_lag_ms = o.max_start_lag_ms.max(h.max_start_lag_ms);
            o.sut_in_process |= h.sut_in_process;
            o.saturated |= h.saturated;
        }
        let mut o = out?;
        o.cores_used = if o.wall_s > 0.0 {
            round3(o.cpu_s / o.wall_s)
        } else {
            0.0
        };
        o.cpu_s = round3(o.cpu_s);
        o.cpu_user_s = round3(o.cpu_user_s);
        o.cpu_system_s = round3(o.cpu_system_s);
        o.peak_cores_used = round3(o.peak_cores_used);
        o.checks_per_cpu_s = if o.cpu_s > 0.0 {
            (checks as f64 / o.cpu_s).round()
        } else {
            0.0
        };
        o.warning = (!warnings.is_empty()).then(|| warnings.join("; "));
        Some(o)
    }

    /// The summary's lines: the cost, and the warning when saturated.
    pub fn summary_lines(&self, s: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            s,
            "harness: {:.2} CPU s over {:.1} s = {:.2} of {} cores (peak {:.2}), {} checks per harness core-second{}",
            self.cpu_s,
            self.wall_s,
            self.cores_used,
            self.cores_available,
            self.peak_cores_used,
            super::fmt_num(self.checks_per_cpu_s),
            if self.sut_in_process {
                " (the system under test ran in this process and is included)"
            } else {
                ""
            }
        );
        if let Some(w) = &self.warning {
            let _ = writeln!(s, "WARNING: {w}");
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::cost::CpuTime;

    fn usage(cpu_s: f64, wall_s: f64, peak: f64, cores: u32) -> HarnessUsage {
        HarnessUsage {
            cpu: CpuTime {
                user_s: cpu_s * 0.75,
                system_s: cpu_s * 0.25,
            },
            wall_s,
            peak_cores: peak,
            cores_available: cores,
            sut_in_process: false,
        }
    }

    #[test]
    fn cores_and_checks_per_core_follow_from_cpu_and_wall_time() {
        let h = HarnessCost::of(&usage(5.0, 10.0, 0.8, 2), 20_000, StartLag::default());
        assert_eq!(h.cores_used, 0.5);
        assert_eq!(h.checks_per_cpu_s, 4_000.0);
        assert_eq!(h.cpu_user_s + h.cpu_system_s, h.cpu_s);
        assert!(!h.saturated);
        assert_eq!(h.warning, None);
    }

    #[test]
    fn a_harness_flat_out_on_every_core_is_the_bottleneck() {
        let h = HarnessCost::of(&usage(19.0, 10.0, 2.0, 2), 20_000, StartLag::default());
        assert!(h.saturated);
        assert!(h.warning.as_deref().unwrap().contains("1.90 of 2 cores"));
    }

    #[test]
    fn late_starts_while_the_cores_were_full_are_the_harness_too() {
        let mut lag = StartLag::default();
        lag.record(3_000);
        assert_eq!(lag.late_starts, 0, "3 ms is no late start");
        lag.record(25_000);
        // Late starts at a peak of 1.9 of 2 cores: saturated.
        let h = HarnessCost::of(&usage(8.0, 10.0, 1.9, 2), 1_000, lag);
        assert!(h.saturated);
        let w = h.warning.unwrap();
        assert!(
            w.contains("1 arrivals started 10 ms or more late (latest 25.0 ms)"),
            "{w}"
        );
        // Late starts on an idle harness: the system (or a timer), not it.
        let h = HarnessCost::of(&usage(2.0, 10.0, 0.5, 2), 1_000, lag);
        assert!(!h.saturated);
        assert_eq!(h.late_starts, 1);
        assert_eq!(h.max_start_lag_ms, 25.0);
    }

    #[test]
    fn shards_add_up() {
        let a = HarnessCost::of(&usage(4.0, 10.0, 0.5, 2), 10_000, StartLag::default());
        let b = HarnessCost::of(&usage(22.0, 12.0, 2.0, 2), 10_000, StartLag::default());
        assert!(b.saturated);
        let m =
            HarnessCost::merged([("shard 0".into(), &a), ("shard 1".into(), &b)], 20_000).unwrap();
        assert_eq!(m.cpu_s, 26.0);
        assert_eq!(m.wall_s, 12.0);
        assert_eq!(m.cores_available, 4);
        assert_eq!(m.cores_used, round3(26.0 / 12.0));
        assert_eq!(m.checks_per_cpu_s, (20_000.0f64 / 26.0).round());
        assert!(m.saturated);
        assert!(m.warning.unwrap().starts_with("shard 1: "));
        assert_eq!(HarnessCost::merged([], 0), None);
    }
}
