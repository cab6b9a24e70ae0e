//! `fleetsim capacity`: the highest arrival rate at which a scenario still
//! passes its thresholds. A geometric ramp from the start rate (×2 a step,
//! capped at the maximum) until a step fails, then a bisection between the
//! last pass and the first failure until they are within the precision,
//! then the two boundary rates again with other seeds (the band).
//!
//! A step is a run ([`super::execute`]) of the scenario's load at one
//! constant rate: two open-model phases, the warm-up and the measured
//! window, judged by the scenario's thresholds ([`super::verdict`]) on what
//! the window measured alone ([`super::RunOptions::warmup`]). Every step
//! keeps its own report directory. Ramp and bisection steps share the
//! run's seed (each rate sees the same random draws); repeat `i` uses the
//! seed plus `i`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{RunError, RunOptions, RunOutcome};
pub use crate::report::capacity::Verdict;
use crate::report::capacity::{
    Band, CapacityReport, CapacityStep, FailedThreshold, Plan, Stage, CAPACITY_SCHEMA_VERSION,
};
use crate::scenario::{self, units, Clock, Load, MetricKind, Phase, Scenario};

/// Each ramp step's rate over the last one's.
pub const GROWTH: f64 = 2.0;
/// Most bisection steps (the precision ends it far sooner; this bounds a
/// search with a precision finer than a float can tell).
const MAX_BISECTIONS: u32 = 40;
/// Most repeats of each boundary rate.
pub const MAX_REPEATS: u32 = 20;
/// Fewest arrivals a step at the start rate must offer in its window: a
/// ratio threshold of 1% (the defaults') needs 100 to tell one arrival.
pub const MIN_STEP_ARRIVALS: f64 = 100.0;
/// `max_in_flight` of a step when the scenario's phases set none.
const DEFAULT_MAX_IN_FLIGHT: u32 = 10_000;

/// When the bisection stops: `hi - lo` at most this.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Precision {
    /// Arrivals per second.
    PerS(f64),
    /// A share of the highest passing rate, in percent.
    Percent(f64),
}

impl Precision {
    /// Parses `5%` or a rate (`10/s`, `600/m`).
    pub fn parse(s: &str) -> Result<Precision, String> {
        let p = match s.trim().strip_suffix('%') {
            Some(pct) => Precision::Percent(
                pct.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("`{s}` is not a percentage like 5%"))?,
            ),
            None => Precision::PerS(
                units::parse_rate(s)
                    .map_err(|e| format!("`{s}` is neither a percentage (5%) nor {e}"))?,
            ),
        };
        match p {
            Precision::Percent(v) if !(v > 0.0 && v < 100.0) => Err(format!(
                "the precision `{s}` must be above 0% and below 100%"
            )),
            Precision::PerS(v) if v <= 0.0 => Err(format!("the precision `{s}` must be above 0/s")),
            p => Ok(p),
        }
    }

    /// The widest `hi - lo` that ends the bisection, with `lo` passing.
    pub fn width_per_s(&self, lo: f64) -> f64 {
        match *self {
            Precision::PerS(v) => v,
            Precision::Percent(p) => lo * p / 100.0,
        }
    }
}

/// The search's settings (the flags).
#[derive(Clone, Debug)]
pub struct CapacityPlan {
    pub start_per_s: f64,
    pub max_per_s: f64,
    /// The measured window of each step.
    pub step: Duration,
    /// Run before each step's window and left out of its verdict.
    pub warmup: Duration,
    /// How often each boundary rate runs again with another seed.
    pub repeats: u32,
    pub precision: Precision,
    /// The precision as given, for the report.
    pub precision_text: String,
}

impl CapacityPlan {
    /// The flags' own rules (exit code 2 when broken).
    pub fn check(&self) -> Result<(), String> {
        if self.start_per_s <= 0.0 {
            return Err("--start-rate must be above 0/s".into());
        }
        if self.start_per_s > self.max_per_s {
            return Err(format!(
                "--start-rate {}/s is above --max-rate {}/s: the search ramps up from the start rate to the maximum",
                self.start_per_s, self.max_per_s
            ));
        }
        if self.step.is_zero() {
            return Err("--step-duration must be longer than 0s".into());
        }
        let arrivals = self.start_per_s * self.step.as_secs_f64();
        if arrivals < MIN_STEP_ARRIVALS {
            return Err(format!(
                "a step at the start rate would offer about {arrivals:.0} arrivals, too few to judge (a 1% threshold needs {MIN_STEP_ARRIVALS}): lengthen --step-duration or raise --start-rate"
            ));
        }
        if self.repeats > MAX_REPEATS {
            return Err(format!("--repeats must be at most {MAX_REPEATS}"));
        }
        Ok(())
    }

    fn to_report(&self) -> Plan {
        Plan {
            start_per_s: self.start_per_s,
            max_per_s: self.max_per_s,
            growth: GROWTH,
            step_s: self.step.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            repeats: self.repeats,
            precision: self.precision_text.clone(),
        }
    }
}

/// Why a scenario cannot be searched (exit code 2): no open-model phase to
/// take the load from, or latency thresholds the run would not judge.
pub fn check_scenario(s: &Scenario) -> Result<(), String> {
    if open_limit(s).is_none() {
        return Err(format!(
            "scenario `{}` has no open-model phase (`arrivals = ...`): a capacity search varies the arrival rate, which a closed model (`people`) has not",
            s.name
        ));
    }
    let unjudged: Vec<&str> = s
        .thresholds
        .iter()
        .filter(|t| t.kind == MetricKind::Latency)
        .map(|t| t.text.as_str())
        .collect();
    if s.latency_simulated() && !s.judge_simulated_latency && !unjudged.is_empty() {
        return Err(format!(
            "in virtual time latency thresholds are not judged ({}), so a step could pass without them: set judge_simulated_latency = true, or use clock = \"real\"",
            unjudged.join(", ")
        ));
    }
    Ok(())
}

/// `max_in_flight` of the scenario's first open-model phase.
fn open_limit(s: &Scenario) -> Option<u32> {
    s.phases.iter().find_map(|p| match p.load {
        Load::Open { max_in_flight, .. } => Some(max_in_flight),
        Load::Closed { .. } => None,
    })
}

/// The scenario a step runs: its fleet, actions, faults and thresholds,
/// with the phases replaced by the warm-up and the window at `rate_per_s`
/// (faults after the step's end are dropped).
pub fn step_scenario(s: &Scenario, plan: &CapacityPlan, rate_per_s: f64) -> Scenario {
    let load = Load::Open {
        from_per_s: rate_per_s,
        to_per_s: rate_per_s,
        max_in_flight: open_limit(s).unwrap_or(DEFAULT_MAX_IN_FLIGHT),
    };
    let mut step = s.clone();
    step.phases = [("warmup", plan.warmup), ("step", plan.step)]
        .into_iter()
        .filter(|(_, d)| !d.is_zero())
        .map(|(name, duration)| Phase {
            name: name.into(),
            duration,
            load: load.clone(),
        })
        .collect();
    let total = step.total_duration();
    step.cap_duration(total);
    step
}

/// One step the search asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepRequest {
    pub index: u32,
    pub stage: Stage,
    pub rate_per_s: f64,
    pub seed: u64,
}

/// What a search found, before it is written.
pub struct Search {
    pub steps: Vec<CapacityStep>,
    pub verdict: Verdict,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

/// Runs the search with `run_step` carrying out each step.
pub fn search(
    plan: &CapacityPlan,
    seed: u64,
    mut run_step: impl FnMut(StepRequest) -> Result<CapacityStep, RunError>,
) -> Result<Search, RunError> {
    let mut steps: Vec<CapacityStep> = Vec::new();
    let mut step = |stage, rate_per_s, seed, steps: &mut Vec<CapacityStep>| {
        let req = StepRequest {
            index: steps.len() as u32 + 1,
            stage,
            rate_per_s,
            seed,
        };
        let s = run_step(req)?;
        let passed = s.passed;
        steps.push(s);
        Ok::<bool, RunError>(passed)
    };
    let (mut lo, mut hi) = (None, None);
    let mut rate = plan.start_per_s;
    loop {
        if step(Stage::Ramp, rate, seed, &mut steps)? {
            lo = Some(rate);
            if rate >= plan.max_per_s {
                break;
            }
            rate = (rate * GROWTH).min(plan.max_per_s);
        } else {
            hi = Some(rate);
            break;
        }
    }
    if let (Some(mut l), Some(mut h)) = (lo, hi) {
        let mut n = 0;
        while h - l > plan.precision.width_per_s(l) && n < MAX_BISECTIONS {
            let mid = (l + h) / 2.0;
            if step(Stage::Bisect, mid, seed, &mut steps)? {
                l = mid;
            } else {
                h = mid;
            }
            n += 1;
        }
        (lo, hi) = (Some(l), Some(h));
    }
    for r in [lo, hi].into_iter().flatten() {
        for i in 1..=plan.repeats {
            step(
                Stage::Repeat,
                r,
                seed.wrapping_add(u64::from(i)),
                &mut steps,
            )?;
        }
    }
    let verdict = match (lo, hi) {
        (Some(_), Some(_)) => Verdict::Found,
        (Some(_), None) => Verdict::AtMax,
        (None, _) => Verdict::NonePassed,
    };
    Ok(Search {
        steps,
        verdict,
        lo,
        hi,
    })
}

/// A step's result from its run. `virtual_clock`: the step ran in
/// virtual time, where the harness cannot be the bottleneck (time waits
/// for it), so its saturation flag says nothing.
pub fn step_of(req: StepRequest, out: &RunOutcome, virtual_clock: bool) -> CapacityStep {
    let r = &out.report;
    let mut failed: Vec<FailedThreshold> = out
        .thresholds
        .iter()
        // Not judged counts as failed: a step must not pass on a
        // threshold it could not check.
        .filter(|t| !t.passed)
        .map(|t| FailedThreshold {
            metric: t.threshold.metric.clone(),
            threshold: format!("{} {}", t.threshold.metric, t.threshold.text),
            measured: t.measured,
        })
        .collect();
    // A step that offered nothing did no work, whatever its thresholds say.
    if r.arrivals.offered == 0 {
        failed.push(FailedThreshold {
            metric: "arrivals.offered".into(),
            threshold: "arrivals.offered > 0".into(),
            measured: Some(0.0),
        });
    }
    let harness = r.harness.as_ref();
    let measured = out
        .thresholds
        .iter()
        .filter_map(|t| Some((t.threshold.metric.clone(), t.measured?)))
        .collect();
    CapacityStep {
        index: req.index,
        stage: req.stage,
        rate_per_s: req.rate_per_s,
        seed: req.seed,
        offered_per_s: r.arrivals.offered_per_s,
        served_per_s: r.arrivals.served_per_s,
        offered: r.arrivals.offered,
        checks_p99_ms: r
            .checks
            .as_ref()
            .filter(|c| c.count > 0)
            .map(|c| c.latency.p99_us as f64 / 1000.0),
        passed: failed.is_empty(),
        failed,
        measured,
        harness_bound: !virtual_clock && harness.is_some_and(|h| h.saturated),
        harness_warning: harness
            .and_then(|h| h.warning.clone())
            .filter(|_| !virtual_clock),
        report_dir: out.report_dir.display().to_string(),
    }
}

/// Where step `req` writes its report: `DIR/steps/NN-RATE`.
pub fn step_dir(base: &Path, req: StepRequest) -> PathBuf {
    let rate = format!("{:.3}", req.rate_per_s);
    let rate = rate.trim_end_matches('0').trim_end_matches('.');
    base.join("steps")
        .join(format!("{:02}-{rate}-per-s", req.index))
}

/// The search's report from its steps.
pub fn report(
    s: &Scenario,
    plan: &CapacityPlan,
    seed: u64,
    command: String,
    found: Search,
) -> CapacityReport {
    let breaking = found.hi.and_then(|hi| {
        found
            .steps
            .iter()
            .find(|st| st.stage != Stage::Repeat && st.rate_per_s == hi)
            .and_then(|st| st.failing_metric().cloned())
    });
    let metric = breaking.as_ref().map(|b| b.metric.clone());
    let bands: Vec<Band> = [found.lo, found.hi]
        .into_iter()
        .flatten()
        .filter(|_| plan.repeats > 0)
        .map(|r| band(&found.steps, r, metric.as_deref()))
        .collect();
    let stable = (plan.repeats > 0).then(|| {
        bands.iter().all(|b| {
            let is_lo = Some(b.rate_per_s) == found.lo;
            if is_lo {
                b.passed == b.runs
            } else {
                b.passed == 0
            }
        })
    });
    CapacityReport {
        schema_version: CAPACITY_SCHEMA_VERSION,
        fleetsim_version: env!("CARGO_PKG_VERSION").to_string(),
        name: s.name.clone(),
        seed,
        transport: scenario::transport_name(s.transport).to_string(),
        clock: match s.clock {
            Clock::Real => "real".into(),
            Clock::Virtual => "virtual".into(),
        },
        command,
        plan: plan.to_report(),
        verdict: found.verdict,
        max_passing_per_s: found.lo,
        first_failing_per_s: found.hi,
        breaking_metric: breaking,
        bands,
        stable,
        harness_bound_steps: found
            .steps
            .iter()
            .filter(|st| st.harness_bound)
            .map(|st| st.index)
            .collect(),
        steps: found.steps,
    }
}

/// Rate `r` over its search step and its repeats.
fn band(steps: &[CapacityStep], r: f64, metric: Option<&str>) -> Band {
    let runs: Vec<&CapacityStep> = steps.iter().filter(|st| st.rate_per_s == r).collect();
    let served = runs.iter().map(|st| st.served_per_s);
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|st| st.measured.get(metric?).copied())
        .collect();
    Band {
        rate_per_s: r,
        runs: runs.len() as u32,
        passed: runs.iter().filter(|st| st.passed).count() as u32,
        served_per_s_min: served.clone().fold(f64::INFINITY, f64::min),
        served_per_s_max: served.fold(0.0, f64::max),
        metric: metric.map(str::to_string),
        measured_min: values.iter().copied().reduce(f64::min),
        measured_max: values.iter().copied().reduce(f64::max),
    }
}

/// `capacity.json` and `capacity.html` in the search's directory.
pub const CAPACITY_JSON: &str = "capacity.json";
pub const CAPACITY_HTML: &str = "capacity.html";

/// Searches `s` with `plan`: each step a run with `base`'s transport,
/// broker, target and seed, its report under `base.report_dir/steps/`;
/// then writes capacity.json and capacity.html there. `progress` hears of
/// each step as it ends.
pub fn execute(
    s: &Scenario,
    plan: &CapacityPlan,
    base: &RunOptions,
    progress: &mut dyn FnMut(&CapacityStep),
) -> Result<CapacityReport, RunError> {
    let dir = base.report_dir.clone();
    crate::report::prepare_dir(&dir, &[CAPACITY_JSON, CAPACITY_HTML])
        .map_err(RunError::ReportDir)?;
    let found = search(plan, base.seed, |req| {
        let step = step_scenario(s, plan, req.rate_per_s);
        let opts = RunOptions {
            seed: req.seed,
            report_dir: step_dir(&dir, req),
            run_id: super::run_id(&step, req.seed),
            warmup: plan.warmup,
            reproduce: format!(
                "{} # step {} at {}/s, seed {}",
                base.reproduce, req.index, req.rate_per_s, req.seed
            ),
            ..base.clone()
        };
        let out = super::execute(&step, &opts)?;
        let st = step_of(req, &out, s.clock == Clock::Virtual);
        progress(&st);
        Ok(st)
    })?;
    let r = report(s, plan, base.seed, base.reproduce.clone(), found);
    let io = |path: PathBuf| {
        move |source| RunError::Report(crate::report::ReportError::Io { path, source })
    };
    let json = serde_json::to_vec_pretty(&r).unwrap_or_default();
    std::fs::write(dir.join(CAPACITY_JSON), json).map_err(io(dir.join(CAPACITY_JSON)))?;
    std::fs::write(
        dir.join(CAPACITY_HTML),
        crate::report::capacity::render_html(&r),
    )
    .map_err(io(dir.join(CAPACITY_HTML)))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(start: f64, max: f64, repeats: u32, precision: Precision) -> CapacityPlan {
        CapacityPlan {
            start_per_s: start,
            max_per_s: max,
            step: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            repeats,
            precision,
            precision_text: String::new(),
        }
    }

    /// A system that passes at `limit` and below, every seed alike.
    fn system(limit: f64) -> impl FnMut(StepRequest) -> Result<CapacityStep, RunError> {
        move |req| {
            let passed = req.rate_per_s <= limit;
            let failed = if passed {
                vec![]
            } else {
                vec![FailedThreshold {
                    metric: "arrivals.dropped_rate".into(),
                    threshold: "arrivals.dropped_rate < 1%".into(),
                    measured: Some(0.5),
                }]
            };
            Ok(CapacityStep {
                index: req.index,
                stage: req.stage,
                rate_per_s: req.rate_per_s,
                seed: req.seed,
                offered_per_s: req.rate_per_s,
                served_per_s: req.rate_per_s.min(limit),
                offered: 1,
                checks_p99_ms: None,
                passed,
                failed,
                measured: Default::default(),
                harness_bound: false,
                harness_warning: None,
                report_dir: String::new(),
            })
        }
    }

    #[test]
    fn the_search_brackets_the_limit_within_the_precision() {
        let p = plan(10.0, 10_000.0, 0, Precision::PerS(1.0));
        let found = search(&p, 1, system(437.3)).unwrap();
        let (lo, hi) = (found.lo.unwrap(), found.hi.unwrap());
        assert_eq!(found.verdict, Verdict::Found);
        assert!(lo <= 437.3 && 437.3 < hi && hi - lo <= 1.0, "{lo} {hi}");
        let ramp: Vec<f64> = found
            .steps
            .iter()
            .filter(|s| s.stage == Stage::Ramp)
            .map(|s| s.rate_per_s)
            .collect();
        assert_eq!(ramp, [10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0]);
        // The bisection halves 320..640 until 1/s: 9 steps.
        let bisect = found
            .steps
            .iter()
            .filter(|s| s.stage == Stage::Bisect)
            .count();
        assert_eq!(bisect, 9);
        let indexes: Vec<u32> = found.steps.iter().map(|s| s.index).collect();
        assert_eq!(indexes, (1..=16).collect::<Vec<u32>>());
    }

    #[test]
    fn a_percent_precision_is_a_share_of_the_passing_rate() {
        let p = plan(10.0, 10_000.0, 0, Precision::Percent(5.0));
        let found = search(&p, 1, system(437.3)).unwrap();
        let (lo, hi) = (found.lo.unwrap(), found.hi.unwrap());
        assert!(hi - lo <= lo * 0.05 && hi - lo > lo * 0.025, "{lo} {hi}");
    }

    #[test]
    fn a_passing_maximum_is_reported_as_such_not_as_a_limit() {
        let p = plan(10.0, 50.0, 1, Precision::Percent(5.0));
        let found = search(&p, 1, system(1e9)).unwrap();
        assert_eq!(found.verdict, Verdict::AtMax);
        assert_eq!((found.lo, found.hi), (Some(50.0), None));
        let rates: Vec<f64> = found.steps.iter().map(|s| s.rate_per_s).collect();
        assert_eq!(rates, [10.0, 20.0, 40.0, 50.0, 50.0]);
        let r = report(
            &crate::scenario::load(std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/capacity_support/known-capacity.toml"
            )))
            .unwrap(),
            &p,
            1,
            String::new(),
            found,
        );
        assert!(r.finding().contains("at least 50/s"), "{}", r.finding());
        assert_eq!(r.first_failing_per_s, None);
    }

    #[test]
    fn a_failing_start_passes_nothing_and_repeats_use_other_seeds() {
        let p = plan(100.0, 1000.0, 2, Precision::Percent(5.0));
        let found = search(&p, 7, system(50.0)).unwrap();
        assert_eq!(found.verdict, Verdict::NonePassed);
        assert_eq!((found.lo, found.hi), (None, Some(100.0)));
        let seeds: Vec<(Stage, u64)> = found.steps.iter().map(|s| (s.stage, s.seed)).collect();
        assert_eq!(
            seeds,
            [(Stage::Ramp, 7), (Stage::Repeat, 8), (Stage::Repeat, 9)]
        );
    }

    #[test]
    fn precisions_parse_as_percentages_or_rates() {
        assert_eq!(Precision::parse("5%"), Ok(Precision::Percent(5.0)));
        assert_eq!(Precision::parse(" 2.5 % "), Ok(Precision::Percent(2.5)));
        assert_eq!(Precision::parse("10/s"), Ok(Precision::PerS(10.0)));
        assert_eq!(Precision::parse("600/m"), Ok(Precision::PerS(10.0)));
        for bad in ["0%", "100%", "-1%", "x%", "fast", "0/s", "5"] {
            assert!(Precision::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Precision::Percent(5.0).width_per_s(200.0), 10.0);
    }

    #[test]
    fn plans_refuse_a_start_above_the_maximum() {
        let mut p = plan(100.0, 10.0, 0, Precision::Percent(5.0));
        assert!(p.check().unwrap_err().contains("above --max-rate"));
        p.max_per_s = 100.0;
        assert!(p.check().is_ok());
        p.step = Duration::from_millis(999);
        assert!(p.check().unwrap_err().contains("too few to judge"));
        p.step = Duration::from_secs(1);
        p.repeats = MAX_REPEATS + 1;
        assert!(p.check().is_err());
    }
}
