//! The run's live metrics: what Prometheus scrapes while the load goes,
//! refreshed about once a second (in virtual time at most [`VIRTUAL_STEPS`]
//! times a run), and the harness's own CPU sampled on the same tick.
//!
//! Counters that the load updates as it goes (checks, latencies, decisions,
//! arrivals, drops) are the recorder's and the arrival accounting's; this
//! task keeps the rest current: the run's labels, the target arrival rate
//! of the phase running now, devices and devices online per kind, events
//! emitted per kind and events logged by the engine side, and the harness's
//! CPU time and cores. It is the one place that mirrors events to
//! Prometheus, so the end of the run counts none twice.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use super::{rate_at, Ctx};
use crate::metrics::cost::CostMeter;
use crate::metrics::{FleetMetrics, Transport, DEVICE_KINDS};
use crate::scenario::Load;
use crate::transport::log::KindCounts;
use reference_server::protocol::EventKind;

/// Real time between two refreshes.
const EVERY_MS: u64 = 1_000;
/// Refreshes of a virtual-time run, at most (a month would otherwise wake
/// the task 2.6 million times).
const VIRTUAL_STEPS: u32 = 1_000;

/// Refreshes the live metrics (labelled with `transport`) until `stop`
/// fires or its sender is dropped, then once more.
pub(super) async fn run(
    ctx: Rc<Ctx>,
    meter: Rc<RefCell<CostMeter>>,
    prom: Option<(Arc<FleetMetrics>, Transport)>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let every = Duration::from_millis(EVERY_MS);
    let step = if ctx.scenario.clock == crate::scenario::Clock::Virtual {
        (ctx.scenario.total_duration() / VIRTUAL_STEPS).max(every)
    } else {
        every
    };
    let mut mirror = prom.map(|(p, t)| Mirror::new(&ctx, p, t));
    loop {
        if let Some(m) = &mut mirror {
            m.refresh(&ctx);
        }
        tokio::select! {
            _ = tokio::time::sleep(step) => meter.borrow_mut().sample(),
            _ = &mut stop => break,
        }
    }
    meter.borrow_mut().sample();
    if let Some(m) = &mut mirror {
        m.refresh(&ctx);
    }
}

/// What this task mirrors to Prometheus, and what it already added to the
/// counters it owns.
struct Mirror {
    prom: Arc<FleetMetrics>,
    /// Devices per kind ([`DEVICE_KINDS`] order): the fleet is fixed.
    devices: [i64; DEVICE_KINDS.len()],
    /// One counter per event kind ([`EventKind::NAMES`] order), resolved once.
    emitted_counters: Vec<IntCounter>,
    emitted_sent: KindCounts,
    logged_sent: u64,
    /// Of the fleet's sites, the share this process runs (its shard).
    site_share: f64,
}

impl Mirror {
    fn new(ctx: &Ctx, prom: Arc<FleetMetrics>, transport: Transport) -> Mirror {
        let mut devices = [0i64; DEVICE_KINDS.len()];
        for d in ctx.fleet.devices() {
            if let Some(i) = DEVICE_KINDS.iter().position(|k| *k == d.kind) {
                devices[i] += 1;
            }
        }
        let mine = ctx.site_doors.iter().filter(|d| !d.is_empty()).count();
        let sites = ctx.scenario.fleet.sites.max(1);
        prom.set_run_info(model_name(&ctx.scenario.phases), transport);
        Mirror {
            emitted_counters: EventKind::NAMES
                .iter()
                .map(|k| prom.events_counter(k))
                .collect(),
            prom,
            devices,
            emitted_sent: KindCounts::default(),
            logged_sent: 0,
            site_share: mine as f64 / f64::from(sites),
        }
    }

    fn refresh(&mut self, ctx: &Ctx) {
        let p = &self.prom;
        p.target_arrivals_per_second
            .set(target_rate(ctx, ctx.origin.elapsed()) * self.site_share);
        let gauges = ctx.fleet.gauges();
        for (i, kind) in DEVICE_KINDS.iter().enumerate() {
            let offline = i64::try_from(gauges.offline_of(*kind)).unwrap_or(i64::MAX);
            p.set_devices(*kind, self.devices[i], (self.devices[i] - offline).max(0));
        }
        let emitted = gauges.emitted_so_far();
        for (i, c) in self.emitted_counters.iter().enumerate() {
            c.inc_by(emitted.0[i].saturating_sub(self.emitted_sent.0[i]));
        }
        self.emitted_sent = emitted;
        if let Some((log, _)) = ctx.platform.event_log(ctx.fleet.transport()) {
            let logged = log.totals().accepted;
            p.events_logged
                .inc_by(logged.saturating_sub(self.logged_sent));
            self.logged_sent = self.logged_sent.max(logged);
        }
    }
}

/// The arrivals per second the whole fleet's load asks for `elapsed` into
/// the run (the open model's ramp; 0 in a closed phase, which asks for
/// people rather than a rate, and after the last phase).
fn target_rate(ctx: &Ctx, elapsed: Duration) -> f64 {
    let mut start = Duration::ZERO;
    for phase in &ctx.scenario.phases {
        let end = start + phase.duration;
        if elapsed < end {
            return match phase.load {
                Load::Open {
                    from_per_s,
                    to_per_s,
                    ..
                } => rate_at(from_per_s, to_per_s, elapsed - start, phase.duration),
                Load::Closed { .. } => 0.0,
            };
        }
        start = end;
    }
    0.0
}

/// `open`, `closed`, or `mixed` when the phases use both.
fn model_name(phases: &[crate::scenario::Phase]) -> &'static str {
    let open = phases
        .iter()
        .filter(|p| matches!(p.load, Load::Open { .. }))
        .count();
    match open {
        0 => "closed",
        n if n == phases.len() => "open",
        _ => "mixed",
    }
}
