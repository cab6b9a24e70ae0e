//! The load models. Open model: every site has its own arrival stream with
//! exponential inter-arrival times (a Poisson process at the phase's
//! ramping rate divided by the number of sites) drawn from a seeded RNG per
//! site, so shards that run disjoint sites add up to the whole run.
//! Latency counts from each arrival's intended start. Closed model:
//! `people` workers split over the sites, each acting, waiting for the
//! answer and thinking `think_time`; latency counts from the actual start
//! and the report says "closed".
//!
//! Every arrival is accounted for (see [`crate::report::ArrivalsReport`]):
//! one person at a time presents at a device, as at a real door, and an
//! arrival whose device is busy waits in that device's queue (at most
//! [`MAX_DEVICE_QUEUE`]) with its latency still counting from its intended
//! start. An arrival is dropped, with its reason, when every device that
//! takes its credential has a full queue, when `max_in_flight` arrivals are
//! waiting or being served, or when its action has nothing to present.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use parking_lot::RwLock;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use reference_server::domain::{Actor, DeviceId, TokenKey};
use reference_server::protocol::WireCredential;
use reference_server::{Engine, EngineConfig};
use tokio::time::Instant;

use super::oracle::{Answer, Attempt, Class, Expected, LockReport, Oracle, StayEvent, TruthKind};
use super::platform::Platform;
use super::provision::{self, Book, DoorInfo, StayPlan};
use super::remote::{Deliveries, Remote};
use super::target::Target;
use super::{RunError, RunOptions};
use crate::clock::{stream_rng, SimClock};
use crate::devices::fleet::{Fleet, FleetSpec, Placement};
use crate::devices::{DeviceError, DeviceOutcome, DeviceParams, Present, Presented};
use crate::metrics::cost::{CostMeter, HarnessUsage};
use crate::metrics::{
    DecisionClass, FleetMetrics, MetricsExporter, Operation, Outcome, Recorder, Snapshot, Timings,
    Verdict,
};
use crate::report::{ActionArrivals, DropReason, StartLag};
use crate::scenario::{Action, Load, Scenario, Transport as Kind};
use crate::transport::relay::Relay;
use crate::transport::{EventLog, Transport};

mod codes;
mod live;
mod pacer;
mod progress;

/// Longest the run waits for attempts still running after the last phase.
const DRAIN_WAIT_S: u64 = 60;
/// Longest the run waits for code actions after the attempts drained.
const CODE_DRAIN_WAIT_S: u64 = 5;
/// Most people waiting at one device (keypad, reader, door phone, lock)
/// besides the one presenting. A line at a door longer than this is
/// dropped (`queue_full`): the bound keeps memory flat when the system
/// under test stalls, and a drop is counted, never hidden.
pub const MAX_DEVICE_QUEUE: usize = 16;
/// Longest the run waits, after the last phase, for the server to log the
/// events the devices emitted (MQTT: they may still be on their way).
const EVENTS_DRAIN_WAIT_S: u64 = 10;

/// What a run measured, before thresholds.
pub struct Measured {
    pub snapshot: Snapshot,
    pub oracle: OracleSummary,
    /// Simulated time the measured load started (the wall clock's, in
    /// real time).
    pub started_at: jiff::Timestamp,
    pub duration_s: f64,
    /// What happened to every arrival, per action.
    pub arrivals: BTreeMap<String, ActionArrivals>,
    /// Commands the run could not make that are no arrival (provisioning
    /// the target's API cannot take, a host's check-in the server refused),
    /// per reason.
    pub skipped: BTreeMap<String, u64>,
    pub closed_people: Option<u64>,
    /// Most devices offline at once (offline waves and the device groups'
    /// own spells).
    pub offline_max: u64,
    /// Grants whose motor jammed.
    pub motor_blocked: u64,
    /// Lowest battery level of any device at the end (battery devices only).
    pub battery_min_pct: Option<f64>,
    /// `battery_low` events the devices emitted.
    pub battery_low_events: u64,
    /// Events the engine side saw again after logging them (`None`: the
    /// transport has no event route, http).
    pub events_duplicated: Option<u64>,
    /// MQTT connections made again after a loss (`None`: not mqtt).
    pub mqtt_reconnects: Option<u64>,
    /// What the harness process spent over the load.
    pub harness: HarnessUsage,
    /// How late the open model's arrivals started after their intended time.
    pub start_lag: StartLag,
}

/// The oracle's results, for the report.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OracleSummary {
    pub verdicts: super::oracle::Verdicts,
    pub lockouts: u64,
    /// True denials per reason the rules gave.
    #[serde(default)]
    pub denials: std::collections::BTreeMap<String, u64>,
    pub truth_table: std::collections::BTreeMap<String, u64>,
    pub false_accept_examples: Vec<super::oracle::Example>,
    pub false_reject_examples: Vec<super::oracle::Example>,
    pub reason_mismatch_examples: Vec<super::oracle::Example>,
    /// Attempts on changed-away or revoked PINs (code actions).
    #[serde(default)]
    pub retired_attempts: u64,
}

/// State shared by the load tasks (one thread: the system's).
struct Shared {
    oracle: Oracle,
    recorder: Recorder,
    in_flight: u32,
    /// Code actions waiting for their door's devices (not attempts: they
    /// do not count against `max_in_flight`).
    code_in_flight: u32,
    /// The phases and the drain are over: code actions stop waiting.
    stopping: bool,
    arrivals: Arrivals,
    /// Commands that are no arrival and could not be made (see
    /// [`Measured::skipped`]).
    skipped: BTreeMap<String, u64>,
    errors: u64,
    motor_blocked: u64,
    /// Devices someone is presenting at right now, each with the people
    /// waiting behind (first come, first served). One person at a time per
    /// keypad or reader, as at a real door: overlapping tries at one keypad
    /// would leave the order of its wrong-PIN count (and so its lockout) to
    /// thread scheduling, which no oracle can know.
    queues: rustc_hash::FxHashMap<DeviceId, VecDeque<Queued>>,
    /// People waiting in all queues (the Prometheus backlog gauge).
    queued: usize,
    /// The tasks serving an arrival right now (an attempt at a device, a
    /// remote open), by a serial number: a device that never answers
    /// (a slow engine, a Bluetooth door without a phone) would otherwise
    /// keep its task, and the run, alive past the drain.
    serving: rustc_hash::FxHashMap<u64, (&'static str, tokio::task::JoinHandle<()>)>,
    next_serving: u64,
    /// The credentials an arrival may present, refilled per arrival: one
    /// buffer for the whole run, so choosing allocates nothing once it
    /// has grown to a door's largest set.
    candidates: Vec<usize>,
    /// How late the open model's arrivals started (the harness's own lag).
    start_lag: StartLag,
}

/// Someone waiting at a busy device.
struct Queued {
    job: Job,
    /// The intended start: latency counts from here.
    arrived: Instant,
    /// Told when the attempt is over (a closed-model person waits for it).
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// One action's arrivals while the run goes (see [`ActionArrivals`]).
#[derive(Clone, Default)]
struct Counts {
    asked: u64,
    ran: u64,
    dropped: [u64; DropReason::COUNT],
    queued_at_end: u64,
}

/// The arrival accounting of a run, per action; mirrored to Prometheus.
#[derive(Default)]
struct Arrivals {
    per_action: BTreeMap<&'static str, Counts>,
    /// The arrivals that ended before the measured window (a capacity
    /// step's warm-up): left out of the report.
    before_window: BTreeMap<&'static str, Counts>,
    prom: Option<Arc<FleetMetrics>>,
}

impl Arrivals {
    fn counts(&mut self, action: &'static str) -> &mut Counts {
        self.per_action.entry(action).or_default()
    }

    /// An arrival drew `action`.
    fn asked(&mut self, action: &'static str) {
        self.counts(action).asked += 1;
        if let Some(p) = &self.prom {
            p.arrivals.inc();
        }
    }

    /// An arrival of `action` was served.
    fn ran(&mut self, action: &'static str) {
        self.counts(action).ran += 1;
    }

    /// An arrival of `action` was not served, for `why`.
    fn dropped(&mut self, action: &'static str, why: DropReason) {
        self.counts(action).dropped[why.index()] += 1;
        if let Some(p) = &self.prom {
            p.arrival_dropped(why);
        }
    }

    /// People waiting in device queues now (the Prometheus backlog gauge).
    fn backlog(&self, queued: usize) {
        if let Some(p) = &self.prom {
            p.arrivals_backlog.set(queued as i64);
        }
    }

    /// Served arrivals so far (the progress line).
    fn ran_total(&self) -> u64 {
        self.per_action.values().map(|c| c.ran).sum()
    }

    /// The measured window starts now: arrivals that ended already are
    /// left out of the report; those still waiting or being served count
    /// in the window as offered there, so every arrival in it is still
    /// accounted for (`offered = served + skipped + dropped + queued`).
    fn begin_window(&mut self) {
        self.before_window = self
            .per_action
            .iter()
            .map(|(k, c)| {
                let ended = c.ran + c.dropped.iter().sum::<u64>() + c.queued_at_end;
                let done = Counts {
                    asked: ended.min(c.asked),
                    ..c.clone()
                };
                (*k, done)
            })
            .collect();
    }

    /// What happened in the measured window (the whole run without a
    /// warm-up), per action.
    fn window(&self) -> BTreeMap<&'static str, Counts> {
        let mut out = self.per_action.clone();
        for (k, before) in &self.before_window {
            if let Some(c) = out.get_mut(k) {
                c.asked -= before.asked;
                c.ran -= before.ran;
                for (d, b) in c.dropped.iter_mut().zip(before.dropped) {
                    *d -= b;
                }
                c.queued_at_end -= before.queued_at_end;
            }
        }
        out
    }

    fn report(&self) -> BTreeMap<String, ActionArrivals> {
        self.window()
            .iter()
            .map(|(k, c)| {
                let dropped = DropReason::ALL
                    .iter()
                    .filter(|r| c.dropped[r.index()] > 0)
                    .map(|r| (r.as_str().to_string(), c.dropped[r.index()]))
                    .collect();
                let a = ActionArrivals {
                    asked: c.asked,
                    ran: c.ran,
                    dropped,
                    queued_at_end: c.queued_at_end,
                };
                (k.to_string(), a)
            })
            .collect()
    }
}

struct Ctx {
    scenario: Scenario,
    clock: SimClock,
    origin: Instant,
    fleet: Fleet,
    engine: Arc<RwLock<Engine>>,
    doors: Vec<DoorInfo>,
    /// Door indexes per site (only the shard's sites are non-empty).
    site_doors: Vec<Vec<usize>>,
    /// What an arrival chooses from at each site, built once (see
    /// [`SiteIndex`]).
    sites: Vec<SiteIndex>,
    tz: Vec<TimeZone>,
    /// The system under test: where changes made during the run go, where
    /// sync states are read, what the transport can do.
    platform: Platform,
    /// The fleet's owner (remote opens and code actions are theirs).
    owner: reference_server::domain::UserId,
    /// Wakes code actions waiting for a phone's pass at the end of the run.
    stop: tokio::sync::Notify,
    /// Starts arrivals on time in real-clock runs ([`pacer`]); `None` in
    /// virtual time.
    pacer: Option<pacer::Pacer>,
    shared: RefCell<Shared>,
}

impl Ctx {
    /// Waits for an arrival's intended start: to the microsecond in real
    /// time (the [`pacer`]; tokio's timer is 1 ms coarse and the latency
    /// counts from this instant), on tokio's paused clock in virtual time.
    async fn start_at(&self, intended: Instant) {
        match &self.pacer {
            Some(p) => p.sleep_until(intended).await,
            None => tokio::time::sleep_until(intended).await,
        }
    }
}

/// The token MAC key of a run (the embedded server gets the same one).
fn token_key_bytes(seed: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"fleetsim token key");
    h.update(&seed.to_le_bytes());
    *h.finalize().as_bytes()
}

/// How far the clock the engine decides by may be from where the oracle
/// places it: nowhere in-process (the engine gets the run's clock); a
/// served engine reads this machine's system clock, which the oracle
/// measures at each answer ([`served_clock_offset`]) up to a few ms; an
/// external server's clock is taken to be within 1 s of this machine's
/// (NTP).
fn engine_clock_skew(served: bool, external: bool) -> jiff::SignedDuration {
    jiff::SignedDuration::from_millis(match (served, external) {
        (false, _) => 0,
        (true, false) => 5,
        (true, true) => 1_000,
    })
}

/// The system clock (a served engine's) minus the run's clock (its start
/// plus monotonic time), now: they drift apart as the system clock slews.
/// The engine's answers are judged at the engine's time.
fn served_clock_offset(clock: &SimClock) -> jiff::SignedDuration {
    Timestamp::now().duration_since(clock.now())
}

fn op_of(kind: TruthKind) -> Operation {
    match kind {
        TruthKind::Pin => Operation::PinCheck,
        TruthKind::Card => Operation::CardCheck,
        TruthKind::Qr => Operation::QrCheck,
        TruthKind::Ble => Operation::BleCheck,
    }
}

/// How long the devices' connections may take to be ready once their codes
/// are stored (they connected before that, so this is a bound, not a wait).
const LINKS_READY_WAIT_S: u64 = 60;

/// Provisions, syncs, drives every phase and returns what was measured.
/// `threads` = 0: everything on the current thread (virtual time).
pub async fn run(s: &Scenario, opts: &RunOptions, threads: usize) -> Result<Measured, RunError> {
    let seed = opts.seed;
    let (b, mut prov, transport) = set_up_backend(s, opts).await?;
    let (fleet, keep, arbiters) = start_fleet(s, opts, &prov, transport, b.clock, threads);
    // Step 3: every device holds its codes before the load starts.
    b.platform.wait_stored(&fleet, &b.engine).await?;
    // Every device can be answered (over MQTT: subscribed) before the
    // first arrival.
    fleet
        .wait_links_ready(Duration::from_secs(LINKS_READY_WAIT_S))
        .await
        .map_err(|connections| RunError::LinksNotReady {
            waited_s: LINKS_READY_WAIT_S,
            connections,
        })?;
    // The groups' own offline spells start once every code is stored.
    let refused = fleet.begin_offline_spells();
    if refused > 0 {
        tracing::warn!(
            refused,
            "devices with a full mailbox start no offline spells"
        );
    }
    let (metering, exporter) = start_metrics(s, opts, &b.timings).await?;
    let origin = metering.origin;
    // Everything in this process counts: the engine, or the embedded server.
    let sut_in_process = opts.target.is_none();
    let meter = Rc::new(RefCell::new(CostMeter::start(
        sut_in_process,
        metering.prom.clone(),
    )));
    let live_prom = metering
        .prom
        .clone()
        .map(|p| (p, prom_transport(opts.transport)));
    let stays = std::mem::take(&mut prov.stays);
    let relay = b.platform.relay();
    let timings = b.timings.clone();
    let ctx = new_ctx(s, b, fleet, prov, &keep, metering)?;

    let progress_line = progress::Progress::new(s.clock == crate::scenario::Clock::Virtual);
    let progress = actix_rt::spawn(progress_line.clone().run(ctx.clone()));
    let waves = actix_rt::spawn(offline_waves(ctx.clone(), seed));
    let (live_stop, live_stopped) = tokio::sync::oneshot::channel();
    let live = actix_rt::spawn(live::run(
        ctx.clone(),
        meter.clone(),
        live_prom,
        live_stopped,
    ));
    let stays = actix_rt::spawn(guest_stays(ctx.clone(), stays, s.total_duration()));
    let outages = relay.clone().map(|r| {
        actix_rt::spawn(broker_outages(
            r,
            ctx.scenario.faults.broker_outages.clone(),
            origin,
        ))
    });
    let warmup = (!opts.warmup.is_zero()).then(|| {
        actix_rt::spawn(end_warmup(
            ctx.clone(),
            timings.clone(),
            origin + opts.warmup,
        ))
    });
    let (phase_start, closed_people) = drive_phases(&ctx, s, seed).await;
    if let Some(w) = warmup {
        let _ = w.await;
    }
    progress_line.finish(&ctx);
    drain(&ctx).await;
    let harness = meter.borrow_mut().usage();
    progress.abort();
    waves.abort();
    stays.abort();
    let _ = progress.await;
    let _ = waves.await;
    let _ = stays.await;
    if let Some(o) = outages {
        o.abort();
        let _ = o.await;
    }
    // The broker is back for the end of the run (a window may reach it).
    if let Some(r) = &relay {
        r.restore();
    }
    // Likewise the devices an offline spell still holds: they deliver the
    // events they buffered, which would otherwise count as lost. Each
    // device's mailbox handles this before the snapshot asked for below.
    for d in ctx.fleet.devices() {
        let _ = ctx.fleet.control(d.id, crate::devices::Control::GoOnline);
    }
    let duration_s = measured_duration_s(origin, phase_start) - opts.warmup.as_secs_f64();
    let health = device_health(&ctx).await;
    let events = count_events(&ctx, &health.emitted).await;
    // The live metrics' last refresh has the final event totals.
    let _ = live_stop.send(());
    let _ = live.await;
    if let Some(e) = exporter {
        e.shutdown().await;
    }
    for a in &arbiters {
        a.stop();
    }
    let end = EndOfRun {
        duration_s,
        closed_people,
        health,
        events,
        harness,
    };
    finish(ctx, &timings, end).await
}

/// What the devices talk to, set up before any of them starts.
struct Backend {
    engine: Arc<RwLock<Engine>>,
    clock: SimClock,
    /// The system under test: the run's engine, the embedded server (http
    /// and mqtt without --target) or an external one.
    platform: Platform,
    /// Event delivery and sync round trips, timed where they complete.
    timings: Arc<Timings>,
}

/// Step 1: the run's engine, the fleet provisioned in it, and the server
/// and transport the devices use. Over http and mqtt the provisioning
/// commands are replayed into an embedded server, or with --target sent
/// to an external server's admin API.
async fn set_up_backend(
    s: &Scenario,
    opts: &RunOptions,
) -> Result<(Backend, provision::Provisioning, Transport), RunError> {
    let seed = opts.seed;
    let clock = SimClock::starting_at(provision::start_time(s));
    let served = opts.transport != Kind::Inproc;
    // An external server: provisioned through its admin API (the CLI
    // allows --target with http, and with mqtt given --broker), unless a
    // fleet manifest says it was already (`fleetsim provision`); then the
    // run's engine is provisioned as it was, at the same instant.
    let url = opts.target.as_deref().filter(|_| served);
    let target = match (&opts.fleet, url) {
        (None, Some(url)) => Some(Arc::new(Target::connect(url, local_engine(seed)).await?)),
        _ => None,
    };
    let at = opts
        .fleet
        .as_ref()
        .map_or_else(|| clock.now(), |f| f.manifest.provisioned_at);
    let engine = target
        .as_ref()
        .map_or_else(|| local_engine(seed), |t| t.engine().clone());
    let (mut prov, commands) = provision_local(&engine, s, seed, at, served)?;
    let target = match (&opts.fleet, target) {
        (Some(f), _) => {
            f.check_commands(&commands)?;
            Some(Arc::new(Target::attach(&f.manifest, engine.clone()).await?))
        }
        (None, Some(t)) => {
            t.provision(commands.clone()).await?;
            Some(t)
        }
        (None, None) => None,
    };
    prov.oracle
        .set_clock_skew(engine_clock_skew(served, target.is_some()));
    // Event delivery and sync round trips, timed where they complete: the
    // in-process transport, the gateway's observer over MQTT, the devices'
    // links over HTTP (sync round trips only: HTTP has no event route).
    let timings = Arc::new(Timings::new());
    let platform = match target {
        Some(t) => {
            let outages = !s.faults.broker_outages.is_empty();
            Platform::external(opts.transport, t, opts.broker.as_deref(), outages).await?
        }
        None if served => {
            // The events the gateway logs (mqtt).
            let events = Arc::new(EventLog::new());
            let key = token_key_bytes(seed);
            let remote = start_remote(s, opts, &timings, &events, clock, key, commands).await?;
            Platform::embedded(opts.transport, remote, events)
        }
        None => Platform::local(),
    };
    let transport = platform.transport(
        &engine,
        clock,
        &timings,
        s.faults.engine_added_latency,
        seed,
        opts.target.as_deref().unwrap_or_default(),
    )?;
    let b = Backend {
        engine,
        clock,
        platform,
        timings,
    };
    Ok((b, prov, transport))
}

/// The run's engine, empty, with the run's token key.
pub(super) fn local_engine(seed: u64) -> Arc<RwLock<Engine>> {
    Arc::new(RwLock::new(Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes(token_key_bytes(seed)),
        seed,
    })))
}

/// The scenario's fleet provisioned into `engine` at `at`, and the commands
/// that made it (kept when `keep_log`: a server replays them).
pub(super) fn provision_local(
    engine: &RwLock<Engine>,
    s: &Scenario,
    seed: u64,
    at: Timestamp,
    keep_log: bool,
) -> Result<(provision::Provisioning, Vec<provision::Logged>), RunError> {
    let mut e = engine.write();
    let mut book = Book::new(&mut e, keep_log);
    let prov = provision::provision_into(&mut book, s, seed, at)?;
    Ok((prov, book.take_log()))
}

/// The embedded reference server for http and mqtt, replaying the
/// provisioning `commands` (same ids, same token key).
async fn start_remote(
    s: &Scenario,
    opts: &RunOptions,
    timings: &Arc<Timings>,
    server_log: &Arc<EventLog>,
    clock: SimClock,
    key: [u8; 32],
    commands: Vec<(
        reference_server::engine::Command,
        reference_server::engine::Outcome,
    )>,
) -> Result<Remote, RunError> {
    let observer = (opts.transport == Kind::Mqtt).then(|| {
        Arc::new(Deliveries {
            log: server_log.clone(),
            timings: timings.clone(),
            clock,
        }) as Arc<dyn reference_server::gateway::GatewayObserver>
    });
    let outages = !s.faults.broker_outages.is_empty();
    Remote::start(
        opts.transport,
        opts.broker.as_deref(),
        key,
        commands,
        observer,
        outages,
    )
    .await
}

/// Step 2: actors for the doors of this shard's sites (every site is
/// provisioned in every shard; `keep` says which doors run here), on the
/// current thread or on `threads` arbiters.
fn start_fleet(
    s: &Scenario,
    opts: &RunOptions,
    prov: &provision::Provisioning,
    transport: Transport,
    clock: SimClock,
    threads: usize,
) -> (Fleet, Vec<bool>, Vec<actix::Arbiter>) {
    let spec = FleetSpec::new(opts.seed).group_params(DeviceParams::of_groups(s));
    let mut mine = prov.fleet.clone();
    let keep: Vec<bool> = prov
        .doors
        .iter()
        .map(|d| opts.shard.runs_site(d.site_index))
        .collect();
    mine.doors = prov
        .fleet
        .doors
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(d, _)| d.clone())
        .collect();
    let arbiters: Vec<actix::Arbiter> = (0..threads).map(|_| actix::Arbiter::new()).collect();
    let placement = if arbiters.is_empty() {
        Placement::Current
    } else {
        Placement::Arbiters(arbiters.iter().map(|a| a.handle()).collect())
    };
    let fleet = Fleet::start(&spec, mine, transport, clock, &placement);
    (fleet, keep, arbiters)
}

/// Where the run's measurements go, from the moment the load starts.
struct Metering {
    recorder: Recorder,
    /// The Prometheus metrics, when they are served.
    prom: Option<Arc<FleetMetrics>>,
    /// The run's time zero (after provisioning and sync).
    origin: Instant,
}

/// Step 4: the recorders (and the /metrics exporter when asked); the
/// measured run starts here.
async fn start_metrics(
    s: &Scenario,
    opts: &RunOptions,
    timings: &Timings,
) -> Result<(Metering, Option<MetricsExporter>), RunError> {
    let metrics = Arc::new(FleetMetrics::new());
    let exporter = match opts.metrics_addr {
        Some(addr) => Some(MetricsExporter::start(addr, metrics.clone()).await?),
        None => None,
    };
    if let Some(e) = &exporter {
        eprintln!("serving /metrics on http://{}/metrics", e.local_addr());
    }
    let origin = Instant::now();
    // Intervals grow with the run (report.json and memory stay bounded).
    let interval_us = crate::metrics::interval_us_for(s.total_duration());
    let mut recorder = Recorder::new(origin, interval_us);
    let mut delivery_recorder = Recorder::new(origin, interval_us);
    if exporter.is_some() {
        let t = prom_transport(opts.transport);
        recorder = recorder.with_prometheus(metrics.clone(), t);
        delivery_recorder = delivery_recorder.with_prometheus(metrics.clone(), t);
    }
    timings.start(delivery_recorder);
    let metering = Metering {
        recorder,
        prom: exporter.is_some().then(|| metrics.clone()),
        origin,
    };
    Ok((metering, exporter))
}

/// The `transport` label of the run's Prometheus metrics.
fn prom_transport(kind: Kind) -> crate::metrics::Transport {
    match kind {
        Kind::Inproc => crate::metrics::Transport::Inproc,
        Kind::Mqtt => crate::metrics::Transport::Mqtt,
        Kind::Http => crate::metrics::Transport::Http,
    }
}

/// Step 5: the state every load task shares.
fn new_ctx(
    s: &Scenario,
    b: Backend,
    fleet: Fleet,
    prov: provision::Provisioning,
    keep: &[bool],
    metering: Metering,
) -> Result<Rc<Ctx>, RunError> {
    let mut site_doors = vec![Vec::new(); s.fleet.sites as usize];
    for (i, d) in prov.doors.iter().enumerate() {
        if keep[i] {
            site_doors[d.site_index as usize].push(i);
        }
    }
    let sites = site_doors
        .iter()
        .map(|doors| SiteIndex::new(&prov.doors, doors))
        .collect();
    let tz = (0..s.fleet.sites)
        .map(|i| TimeZone::get(s.fleet.time_zone_of(i)).unwrap_or(TimeZone::UTC))
        .collect();
    // Provisioning commands the target's API could not take.
    let skipped = b.platform.skipped();
    let pacer = match s.clock {
        crate::scenario::Clock::Real => Some(pacer::Pacer::start()?),
        crate::scenario::Clock::Virtual => None,
    };
    Ok(Rc::new(Ctx {
        scenario: s.clone(),
        clock: b.clock,
        origin: metering.origin,
        fleet,
        engine: b.engine,
        doors: prov.doors,
        site_doors,
        sites,
        tz,
        platform: b.platform,
        owner: prov.fleet.owner,
        stop: tokio::sync::Notify::new(),
        pacer,
        shared: RefCell::new(Shared {
            oracle: prov.oracle,
            recorder: metering.recorder,
            in_flight: 0,
            code_in_flight: 0,
            stopping: false,
            arrivals: Arrivals {
                per_action: BTreeMap::new(),
                before_window: BTreeMap::new(),
                prom: metering.prom,
            },
            skipped,
            errors: 0,
            motor_blocked: 0,
            queues: Default::default(),
            queued: 0,
            serving: Default::default(),
            next_serving: 0,
            candidates: Vec::new(),
            start_lag: StartLag::default(),
        }),
    }))
}

/// Step 6: the phases one after the other, each site's arrivals (open
/// model) or people (closed model) as tasks of their own with seeded
/// streams; returns where the last phase ended and the closed model's
/// people.
async fn drive_phases(ctx: &Rc<Ctx>, s: &Scenario, seed: u64) -> (Duration, Option<u64>) {
    let mut phase_start = Duration::ZERO;
    let mut closed_people = None;
    for (pi, phase) in s.phases.iter().enumerate() {
        let end = phase_start + phase.duration;
        let mut tasks = Vec::new();
        for site in 0..s.fleet.sites {
            if ctx.site_doors[site as usize].is_empty() {
                continue;
            }
            let stream = ((pi as u64) << 32) | u64::from(site);
            match phase.load {
                Load::Open {
                    from_per_s,
                    to_per_s,
                    max_in_flight,
                } => {
                    let rng = stream_rng(seed, 0xA0_0000_0000 ^ stream);
                    tasks.push(actix_rt::spawn(open_site(
                        ctx.clone(),
                        site,
                        rng,
                        (phase_start, end),
                        (from_per_s, to_per_s),
                        max_in_flight,
                    )));
                }
                Load::Closed { people, think_time } => {
                    closed_people = Some(u64::from(people));
                    let n = s.fleet.sites;
                    let mine = people / n + u32::from(site < people % n);
                    for p in 0..mine {
                        let rng = stream_rng(seed, 0xB0_0000_0000 ^ stream ^ (u64::from(p) << 48));
                        tasks.push(actix_rt::spawn(closed_person(
                            ctx.clone(),
                            site,
                            rng,
                            end,
                            think_time,
                        )));
                    }
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        phase_start = end;
    }
    (phase_start, closed_people)
}

/// The end of a capacity step's warm-up (`RunOptions::warmup`): what was
/// measured so far is left out of the step's verdict (latency samples and
/// the arrivals that ended; see [`Arrivals::begin_window`]).
async fn end_warmup(ctx: Rc<Ctx>, timings: Arc<Timings>, at: Instant) {
    tokio::time::sleep_until(at).await;
    let mut sh = ctx.shared.borrow_mut();
    sh.recorder.discard_samples();
    sh.arrivals.begin_window();
    timings.discard_samples();
}

/// Step 7: after the last phase, every arrival ends and is counted.
/// Attempts still running, and the people queued behind them, finish and
/// count; whoever still waits after the drain is counted as queued at the
/// end (their reserved codes released).
async fn drain(ctx: &Rc<Ctx>) {
    wait_while(ctx, DRAIN_WAIT_S, |sh| sh.in_flight > 0).await;
    {
        let mut guard = ctx.shared.borrow_mut();
        let sh = &mut *guard;
        for (_, q) in std::mem::take(&mut sh.queues) {
            for w in q {
                release(&mut sh.oracle, &w.job);
                sh.arrivals.counts(w.job.attempt.action).queued_at_end += 1;
                sh.in_flight = sh.in_flight.saturating_sub(1);
            }
        }
        sh.queued = 0;
        sh.arrivals.backlog(0);
    }
    // Those being served when the lines were cleared get as long again;
    // a device that still has not answered then is cut off and its
    // arrival counted as queued at the end (served it was not).
    wait_while(ctx, DRAIN_WAIT_S, |sh| sh.in_flight > 0).await;
    let unserved: Vec<_> = {
        let mut guard = ctx.shared.borrow_mut();
        let sh = &mut *guard;
        let unserved: Vec<_> = sh.serving.drain().map(|(_, v)| v).collect();
        for (action, task) in &unserved {
            task.abort();
            sh.arrivals.counts(action).queued_at_end += 1;
            sh.in_flight = sh.in_flight.saturating_sub(1);
        }
        unserved
    };
    for (_, task) in unserved {
        let _ = task.await;
    }
    // Code actions get a short grace (a Bluetooth door may wait hours for
    // a phone); those still waiting then end, counted as unfinished. Each
    // looks at the flag within one poll.
    for stop in [false, true] {
        ctx.shared.borrow_mut().stopping = stop;
        if stop {
            ctx.stop.notify_waiters();
        }
        wait_while(ctx, CODE_DRAIN_WAIT_S, |sh| sh.code_in_flight > 0).await;
    }
}

/// The run's measured duration: the time since `origin`, but no longer
/// than the phases when the drain outlasted them, and the phases' length
/// where no time passed.
fn measured_duration_s(origin: Instant, phase_start: Duration) -> f64 {
    let duration_s = (Instant::now() - origin).as_secs_f64().min(
        phase_start
            .as_secs_f64()
            .max((Instant::now() - origin).as_secs_f64()),
    );
    if duration_s <= 0.0 {
        phase_start.as_secs_f64()
    } else {
        duration_s
    }
}

/// The devices' state at the end of the run.
struct Health {
    battery_min_pct: Option<f64>,
    battery_low_events: u64,
    /// Events the devices emitted, per kind.
    emitted: crate::transport::KindCounts,
}

/// Step 8: every device's snapshot (battery, what it emitted), also
/// recorded per kind.
async fn device_health(ctx: &Ctx) -> Health {
    let mut battery_min_pct: Option<f64> = None;
    let mut battery_low_events = 0u64;
    let mut emitted = crate::transport::KindCounts::default();
    for d in ctx.fleet.devices() {
        if let Ok(snap) = d.addr.snapshot().await {
            if let Some(b) = snap.battery_pct {
                battery_min_pct = Some(battery_min_pct.map_or(b, |m| m.min(b)));
            }
            battery_low_events += snap.emitted.get("battery_low");
            emitted.merge(&snap.emitted);
            ctx.shared.borrow_mut().recorder.observe_device(
                snap.kind,
                snap.online,
                snap.battery_pct,
            );
        }
    }
    Health {
        battery_min_pct,
        battery_low_events,
        emitted,
    }
}

/// What the engine side did with the devices' events.
struct EventCounts {
    /// `None`: the transport has no event route (http).
    duplicated: Option<u64>,
    /// `None`: not mqtt.
    mqtt_reconnects: Option<u64>,
}

/// Step 9: events emitted against events logged, recorded per kind. In
/// process the engine side's log is the transport's, over MQTT what the
/// gateway's observer heard; HTTP has no event route (the devices keep
/// their events).
async fn count_events(ctx: &Ctx, emitted: &crate::transport::KindCounts) -> EventCounts {
    let log = ctx.platform.event_log(ctx.fleet.transport());
    if let Some((log, true)) = &log {
        // The gateway logs after the devices' last publishes (and devices
        // buffered during an outage flush late): wait for it, bounded.
        let until = Instant::now() + Duration::from_secs(EVENTS_DRAIN_WAIT_S);
        while log.totals().accepted < emitted.total() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let totals = log.map(|(l, _)| l.totals());
    let logged = totals.map(|t| t.per_kind);
    let mqtt_reconnects = ctx.fleet.transport().mqtt_reconnects();
    let rec = &mut ctx.shared.borrow_mut().recorder;
    for (i, name) in reference_server::protocol::EventKind::NAMES
        .iter()
        .enumerate()
    {
        if emitted.0[i] > 0 {
            rec.events_emitted(name, emitted.0[i]);
        }
        if let Some(l) = logged.filter(|l| l.0[i] > 0) {
            rec.events_logged(name, l.0[i]);
        }
    }
    EventCounts {
        duplicated: totals.map(|t| t.duplicates),
        mqtt_reconnects,
    }
}

/// What the end of the run measured besides the shared state.
struct EndOfRun {
    duration_s: f64,
    closed_people: Option<u64>,
    health: Health,
    events: EventCounts,
    harness: HarnessUsage,
}

/// Step 10: the fleet and the server stop, and the shared state becomes
/// the run's [`Measured`].
async fn finish(ctx: Rc<Ctx>, timings: &Timings, end: EndOfRun) -> Result<Measured, RunError> {
    let ctx = Rc::try_unwrap(ctx)
        .map_err(|_| RunError::Runtime("load tasks still hold the run".into()))?;
    let offline_peak = ctx.fleet.gauges().peak();
    drop(ctx.fleet);
    ctx.platform.stop().await;
    let shared = ctx.shared.into_inner();
    let o = shared.oracle;
    let mut snapshot = shared.recorder.into_snapshot();
    if let Some(d) = timings.finish() {
        snapshot.merge(&d).map_err(|e| RunError::Report(e.into()))?;
    }
    Ok(Measured {
        snapshot,
        oracle: OracleSummary {
            verdicts: o.verdicts.clone(),
            lockouts: o.lockouts,
            denials: o.denials.clone(),
            truth_table: o.census(),
            false_accept_examples: o.false_accept_examples.clone(),
            false_reject_examples: o.false_reject_examples.clone(),
            reason_mismatch_examples: o.reason_mismatch_examples.clone(),
            retired_attempts: o.retired_attempts,
        },
        started_at: ctx.clock.at(ctx.origin),
        duration_s: end.duration_s,
        arrivals: shared.arrivals.report(),
        skipped: shared.skipped,
        closed_people: end.closed_people,
        offline_max: offline_peak,
        motor_blocked: shared.motor_blocked,
        battery_min_pct: end.health.battery_min_pct,
        battery_low_events: end.health.battery_low_events,
        events_duplicated: end.events.duplicated,
        mqtt_reconnects: end.events.mqtt_reconnects,
        harness: end.harness,
        start_lag: shared.start_lag,
    })
}

/// The name of the phase running `elapsed` into the run.
fn phase_at(s: &Scenario, elapsed: Duration) -> &str {
    let mut end = Duration::ZERO;
    for p in &s.phases {
        end += p.duration;
        if elapsed < end {
            return &p.name;
        }
    }
    "drain"
}

/// Offline waves: at each wave's start a seeded share of the shard's
/// devices (of the wave's model, if given) lose connectivity for its
/// length. Wi-Fi devices then cannot ask the engine (errors); Bluetooth
/// locks keep deciding from their code cache.
async fn offline_waves(ctx: Rc<Ctx>, seed: u64) {
    let waves = ctx.scenario.faults.offline_waves.clone();
    for (i, w) in waves.iter().enumerate() {
        tokio::time::sleep_until(ctx.origin + w.window.at).await;
        let mut rng = stream_rng(seed, 0xC0_0000_0000 ^ i as u64);
        let mut refused = 0u64;
        for d in ctx.fleet.devices() {
            if w.model.is_some_and(|m| m != d.connectivity) {
                continue;
            }
            if rng.random::<f64>() < w.share {
                let for_s = w.window.for_.as_secs_f64();
                let go = crate::devices::Control::GoOffline { for_s };
                if ctx.fleet.control(d.id, go).is_err() {
                    refused += 1;
                }
            }
        }
        // The fleet's gauge counts who went offline (devices.offline_max).
        if refused > 0 {
            tracing::warn!(
                refused,
                wave = i,
                "devices with a full mailbox missed an offline wave"
            );
        }
    }
}

/// What happens at one instant of a guest stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum StayStep {
    CheckOut,
    CheckIn,
    EarlyTry,
    LateTry,
}

/// Guest stays during the run, for the shard's doors: the host checks
/// each guest in at the booked check-in time and out at the booked
/// check-out time (as a property-management system does), and early or
/// late guests try their PIN outside the stay. Steps due before the load
/// started happen at once; tries due then are dropped (they would not be
/// early or late any more).
async fn guest_stays(ctx: Rc<Ctx>, plans: Vec<StayPlan>, run_len: Duration) {
    let start = ctx.clock.at(ctx.origin);
    let mine =
        |p: &StayPlan| ctx.site_doors[ctx.doors[p.door].site_index as usize].contains(&p.door);
    let mut steps: Vec<(Timestamp, usize, StayStep)> = Vec::new();
    for (i, p) in plans.iter().enumerate().filter(|(_, p)| mine(p)) {
        if !p.checked_in {
            steps.push((p.check_in, i, StayStep::CheckIn));
        }
        steps.push((p.check_out, i, StayStep::CheckOut));
        for (t, step) in [
            (p.early_try, StayStep::EarlyTry),
            (p.late_try, StayStep::LateTry),
        ] {
            if let Some(t) = t.filter(|t| *t >= start) {
                steps.push((t, i, step));
            }
        }
    }
    // Same instant: the previous guest leaves before the next arrives.
    steps.sort_unstable_by_key(|(t, i, step)| (*t, *step, *i));
    for (at, i, step) in steps {
        let offset = std::time::Duration::try_from(at.duration_since(start)).unwrap_or_default();
        if offset >= run_len {
            return;
        }
        let intended = ctx.origin + offset;
        ctx.start_at(intended).await;
        let p = &plans[i];
        match step {
            StayStep::CheckIn => host_checks(&ctx, p, StayEvent::CheckIn),
            StayStep::CheckOut => host_checks(&ctx, p, StayEvent::CheckOut),
            StayStep::EarlyTry => guest_tries(&ctx, p, "stay_early", intended),
            StayStep::LateTry => guest_tries(&ctx, p, "stay_late", intended),
        }
    }
}

/// The host's check-in or check-out of `p`'s guest, in the engine (and
/// forwarded to a server, in order with the run's other commands).
fn host_checks(ctx: &Rc<Ctx>, p: &StayPlan, event: StayEvent) {
    let now = ctx.clock.now();
    let name = match event {
        StayEvent::CheckIn => "check_in",
        StayEvent::CheckOut => "check_out",
    };
    let mut e = ctx.engine.write();
    let mut book = Book::new(&mut e, ctx.platform.served());
    let applied = book.stay_event(p.stay, event == StayEvent::CheckIn, now);
    let log = book.take_log();
    drop(e);
    let mut sh = ctx.shared.borrow_mut();
    if let Err(err) = applied {
        tracing::warn!(error = %err, stay = p.stay.0, "the engine refused the host's {name}");
        sh.errors += 1;
        return;
    }
    sh.oracle.stay_event(p.truth, event, now);
    drop(sh);
    for rx in ctx.platform.forward(Actor::System, log) {
        let ctx = ctx.clone();
        actix_rt::spawn(async move {
            if !rx.await.unwrap_or(false) {
                let mut sh = ctx.shared.borrow_mut();
                sh.errors += 1;
                *sh.skipped
                    .entry(format!("{name} (server refused)"))
                    .or_default() += 1;
            }
        });
    }
}

/// An early or late guest types their PIN at the door's keypad (waiting
/// in line if someone is at it).
fn guest_tries(ctx: &Rc<Ctx>, p: &StayPlan, action: &'static str, intended: Instant) {
    let door = &ctx.doors[p.door];
    let mut sh = ctx.shared.borrow_mut();
    sh.arrivals.asked(action);
    // A Bluetooth lock decides from its code cache, which holds the stay's
    // check-in and check-out (sync's `valid`), so it is tried too.
    let Some(device) = takers(door, TruthKind::Pin).as_slice().first().copied() else {
        sh.arrivals.dropped(action, DropReason::NothingToPresent);
        return;
    };
    if sh
        .queues
        .get(&device)
        .is_some_and(|q| q.len() >= MAX_DEVICE_QUEUE)
    {
        sh.arrivals.dropped(action, DropReason::QueueFull);
        return;
    }
    let text = sh.oracle.truth(p.truth).text.clone();
    drop(sh);
    let job = Job {
        attempt: Attempt {
            device,
            door: door.door,
            action,
            kind: TruthKind::Pin,
            truth: Some(p.truth),
            keypad: true,
        },
        credential: WireCredential::Pin(text),
        reserved: false,
        forwarded: Vec::new(),
        announce: None,
    };
    dispatch(ctx, job, intended, None);
}

/// Starts `job` at its device, or queues it there while someone else is
/// presenting. The caller checked that the queue has room.
fn dispatch(
    ctx: &Rc<Ctx>,
    job: Job,
    arrived: Instant,
    done: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut guard = ctx.shared.borrow_mut();
    let sh = &mut *guard;
    sh.in_flight += 1;
    let device = job.attempt.device;
    match sh.queues.get_mut(&device) {
        Some(q) => {
            debug_assert!(q.len() < MAX_DEVICE_QUEUE, "the caller checks for room");
            q.push_back(Queued { job, arrived, done });
            sh.queued += 1;
            sh.arrivals.backlog(sh.queued);
            // Started later than the load model intended.
            sh.recorder.arrival_behind_schedule();
        }
        None => {
            sh.queues.insert(device, VecDeque::new());
            drop(guard);
            let action = job.attempt.action;
            serve(ctx, action, attempt(ctx.clone(), job, arrived, false, done));
        }
    }
}

/// Waits while `busy` holds, at most `secs` (the run's clock: virtual
/// time in a virtual run), looking every 5 ms.
async fn wait_while(ctx: &Ctx, secs: u64, busy: impl Fn(&Shared) -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while busy(&ctx.shared.borrow()) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Spawns the task serving one arrival of `action`, kept in
/// [`Shared::serving`] until it ends.
fn serve(ctx: &Rc<Ctx>, action: &'static str, work: impl Future<Output = ()> + 'static) {
    serve_locked(ctx, &mut ctx.shared.borrow_mut(), action, work);
}

/// [`serve`] with `shared` already borrowed. The task cannot run before
/// it is registered: the run's tasks share one thread, and this does not
/// yield between the spawn and the insert.
fn serve_locked(
    ctx: &Rc<Ctx>,
    sh: &mut Shared,
    action: &'static str,
    work: impl Future<Output = ()> + 'static,
) {
    let id = sh.next_serving;
    sh.next_serving += 1;
    let me = ctx.clone();
    let task = actix_rt::spawn(async move {
        work.await;
        me.shared.borrow_mut().serving.remove(&id);
    });
    sh.serving.insert(id, (action, task));
}

/// `device` is free again: the next person in its line steps up.
fn next_in_line(ctx: &Rc<Ctx>, sh: &mut Shared, device: DeviceId) {
    let next = sh.queues.get_mut(&device).and_then(VecDeque::pop_front);
    match next {
        Some(w) => {
            sh.queued = sh.queued.saturating_sub(1);
            sh.arrivals.backlog(sh.queued);
            let action = w.job.attempt.action;
            serve_locked(
                ctx,
                sh,
                action,
                attempt(ctx.clone(), w.job, w.arrived, true, w.done),
            );
        }
        None => {
            sh.queues.remove(&device);
        }
    }
}

/// Broker outages: the relay between the devices and the broker is cut for
/// each window. Devices see their connection drop and reconnect with their
/// own backoff; Wi-Fi checks meanwhile end as errors, Bluetooth locks
/// decide from their code cache.
async fn broker_outages(
    relay: Arc<Relay>,
    windows: Vec<crate::scenario::FaultWindow>,
    origin: Instant,
) {
    for w in windows {
        tokio::time::sleep_until(origin + w.at).await;
        relay.cut();
        tokio::time::sleep_until(origin + w.at + w.for_).await;
        relay.restore();
    }
}

/// The rate at `t` into a phase of length `len`, ramping linearly.
fn rate_at(from: f64, to: f64, t: Duration, len: Duration) -> f64 {
    let f = if len.is_zero() {
        1.0
    } else {
        (t.as_secs_f64() / len.as_secs_f64()).clamp(0.0, 1.0)
    };
    from + (to - from) * f
}

async fn open_site(
    ctx: Rc<Ctx>,
    site: u32,
    mut rng: ChaCha8Rng,
    (start, end): (Duration, Duration),
    (from, to): (f64, f64),
    max_in_flight: u32,
) {
    let sites = f64::from(ctx.scenario.fleet.sites.max(1));
    let mut t = start;
    loop {
        let rate = rate_at(from, to, t - start, end - start) / sites;
        // A zero rate: look again a little later (the ramp may rise).
        let gap = if rate <= 0.0 {
            0.1
        } else {
            -(1.0 - rng.random::<f64>()).ln() / rate
        };
        t += Duration::from_secs_f64(gap);
        if t >= end {
            return;
        }
        if rate <= 0.0 {
            continue;
        }
        let intended = ctx.origin + t;
        ctx.start_at(intended).await;
        let lag = Instant::now().saturating_duration_since(intended);
        ctx.shared
            .borrow_mut()
            .start_lag
            .record(lag.as_micros() as u64);
        arrive(&ctx, site, &mut rng, intended, max_in_flight, None);
    }
}

async fn closed_person(
    ctx: Rc<Ctx>,
    site: u32,
    mut rng: ChaCha8Rng,
    end: Duration,
    think: Duration,
) {
    loop {
        let started = Instant::now();
        if started - ctx.origin >= end {
            return;
        }
        // The person waits for their own attempt (in line, if the device
        // is busy); an admin does not wait for the locks.
        let (tx, rx) = tokio::sync::oneshot::channel();
        arrive(&ctx, site, &mut rng, started, u32::MAX, Some(tx));
        let _ = rx.await;
        tokio::time::sleep(think.max(Duration::from_millis(1))).await;
    }
}

/// One arrival at `site`: draws the action, then serves it, queues it at
/// its device, or counts why not. `done` is told when its attempt is over
/// (dropped unsent when there is no attempt to wait for).
fn arrive(
    ctx: &Rc<Ctx>,
    site: u32,
    rng: &mut ChaCha8Rng,
    intended: Instant,
    max_in_flight: u32,
    done: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let action = pick_action(rng, &ctx.scenario);
    let name = action.as_str();
    ctx.shared.borrow_mut().arrivals.asked(name);
    let now = ctx.clock.at(intended);
    match action {
        // Code actions and sync storms are no attempts: they do not count
        // against `max_in_flight`.
        Action::CodeCreate | Action::CodeChange | Action::CodeRevoke => {
            if let Some(c) = codes::plan(ctx, site, rng, now, action) {
                actix_rt::spawn(codes::run(ctx.clone(), c));
            }
            return;
        }
        Action::SyncStorm => {
            codes::sync_storm(ctx, site);
            return;
        }
        _ => {}
    }
    // Waiting people count as in flight: the limit bounds the run's memory.
    if ctx.shared.borrow().in_flight >= max_in_flight {
        ctx.shared
            .borrow_mut()
            .arrivals
            .dropped(name, DropReason::MaxInFlight);
        return;
    }
    if action == Action::RemoteOpen {
        if let Some(lock) = open_target(ctx, site, rng) {
            ctx.shared.borrow_mut().in_flight += 1;
            serve(
                ctx,
                Action::RemoteOpen.as_str(),
                remote_open(ctx.clone(), lock, intended, done),
            );
        }
        return;
    }
    if let Some(job) = pick(ctx, site, rng, now, action) {
        dispatch(ctx, job, intended, done);
    }
}

/// The lock a `remote_open` at `site` opens: a Wi-Fi lock (Bluetooth ones
/// hear the platform only through a gateway). `None`: counted as skipped.
fn open_target(ctx: &Ctx, site: u32, rng: &mut ChaCha8Rng) -> Option<DeviceId> {
    let name = Action::RemoteOpen.as_str();
    if !ctx.platform.commands_devices() {
        ctx.shared
            .borrow_mut()
            .arrivals
            .dropped(name, DropReason::NotSupported);
        return None;
    }
    let lock = choose(rng, &ctx.sites[site as usize].wifi_locks);
    if lock.is_none() {
        ctx.shared
            .borrow_mut()
            .arrivals
            .dropped(name, DropReason::NothingToPresent);
    }
    lock
}

/// Remote open: the engine authorizes the owner, the lock actuates and
/// acknowledges. Over MQTT through the server (`Service::open_door`, the
/// gateway's command and the lock's `cmd/ack`); in-process the engine's
/// `authorize_open` and the command in the lock's mailbox.
async fn remote_open(
    ctx: Rc<Ctx>,
    lock: DeviceId,
    intended: Instant,
    done: Option<tokio::sync::oneshot::Sender<()>>,
) {
    use reference_server::protocol::CommandResult;
    let actor = Actor::User(ctx.owner);
    let result = ctx
        .platform
        .open_door(&ctx.engine, &ctx.fleet, &ctx.clock, &actor, lock)
        .await;
    let completed = Instant::now();
    let mut sh = ctx.shared.borrow_mut();
    sh.in_flight = sh.in_flight.saturating_sub(1);
    let outcome = match result {
        Ok(CommandResult::Ok | CommandResult::LowBattery) => Outcome::Granted,
        Ok(CommandResult::MotorBlocked) => {
            sh.motor_blocked += 1;
            Outcome::Granted
        }
        // The platform tells the owner the lock is offline: an answer.
        Ok(CommandResult::Offline) => Outcome::Denied,
        // An Open Door a lock does not take: a wrong answer.
        Ok(CommandResult::Unsupported) => {
            sh.errors += 1;
            Outcome::Error
        }
        Err(_) => {
            sh.errors += 1;
            Outcome::Error
        }
    };
    sh.recorder
        .record(Operation::RemoteOpen, outcome, intended, completed);
    sh.arrivals.ran(Action::RemoteOpen.as_str());
    if let Some(d) = done {
        let _ = d.send(());
    }
}

/// One planned attempt: what to present where, and what the oracle needs.
struct Job {
    attempt: Attempt,
    credential: WireCredential,
    /// The same credential presented again right after (qr_replayed
    /// without an used-up key yet).
    reserved: bool,
    /// Commands the server must apply first (a key issued for this
    /// attempt): true when it did.
    forwarded: Vec<tokio::sync::oneshot::Receiver<bool>>,
    /// A key issued for this attempt, listed for other visitors only once
    /// the server has it (before, another arrival could show it to a server
    /// that does not know it yet: a false reject of the run's making).
    announce: Option<(reference_server::domain::DoorId, usize)>,
}

fn release(o: &mut Oracle, job: &Job) {
    if job.reserved {
        if let Some(id) = job.attempt.truth {
            o.unreserve(id, job.attempt.door);
        }
    }
}

fn choose<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T]) -> Option<T> {
    if xs.is_empty() {
        None
    } else {
        Some(xs[rng.random_range(0..xs.len())])
    }
}

/// [`choose`] among the items of `xs` that `keep` lets through, with the
/// same draw as on them collected, but collecting nothing: counts them,
/// then walks to the one drawn (for short lists, where a second walk is
/// cheaper than a buffer).
fn choose_where<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T], keep: impl Fn(&T) -> bool) -> Option<T> {
    let n = xs.iter().filter(|x| keep(x)).count();
    if n == 0 {
        return None;
    }
    let k = rng.random_range(0..n);
    let chosen = xs.iter().filter(|x| keep(x)).nth(k).copied();
    debug_assert!(chosen.is_some(), "the {k}th of {n} kept exists");
    chosen
}

/// [`choose`] on `a` and `b` joined, without joining them.
fn choose_joined(rng: &mut ChaCha8Rng, a: &[usize], b: &[usize]) -> Option<usize> {
    let n = a.len() + b.len();
    if n == 0 {
        return None;
    }
    let k = rng.random_range(0..n);
    Some(if k < a.len() { a[k] } else { b[k - a.len()] })
}

/// Credential kinds, as indexes into per-kind tables.
const KINDS: usize = 4;

fn kind_index(kind: TruthKind) -> usize {
    match kind {
        TruthKind::Pin => 0,
        TruthKind::Card => 1,
        TruthKind::Qr => 2,
        TruthKind::Ble => 3,
    }
}

/// What the arrivals at one site choose from, built once when the load
/// starts: the site's doors with a device that takes each kind of
/// credential, and its Wi-Fi locks (remote opens). A door's devices never
/// change during a run, so neither do these. The codes do: the oracle keeps
/// those per door as they change ([`Oracle::extra_pins`],
/// [`Oracle::retired_pins`], [`Oracle::extra_qr`]). So an arrival neither
/// walks the site's doors nor collects anything to choose from.
struct SiteIndex {
    /// Door indexes per credential kind ([`kind_index`]), in the site's
    /// door order.
    doors_taking: [Vec<usize>; KINDS],
    /// The Wi-Fi apartment locks (Bluetooth ones hear the platform only
    /// through a gateway).
    wifi_locks: Vec<DeviceId>,
}

impl SiteIndex {
    /// The index of the site whose doors (indexes into `doors`) are `site`.
    fn new(doors: &[DoorInfo], site: &[usize]) -> SiteIndex {
        let taking = |kind| {
            site.iter()
                .copied()
                .filter(|i| !takers(&doors[*i], kind).is_empty())
                .collect()
        };
        let wifi_locks = site
            .iter()
            .map(|i| &doors[*i].plan)
            .filter(|p| matches!(p.kit, crate::devices::fleet::DoorKit::WifiApartment))
            .filter_map(|p| p.lock)
            .collect();
        SiteIndex {
            doors_taking: [
                TruthKind::Pin,
                TruthKind::Card,
                TruthKind::Qr,
                TruthKind::Ble,
            ]
            .map(taking),
            wifi_locks,
        }
    }

    /// The site's doors with a device that takes `kind`.
    fn doors_taking(&self, kind: TruthKind) -> &[usize] {
        &self.doors_taking[kind_index(kind)]
    }
}

/// The devices at a door that take one kind of credential: at most a
/// keypad, a door phone and a lock, held inline so that asking allocates
/// nothing.
#[derive(Clone, Copy)]
struct Takers {
    ids: [DeviceId; 3],
    len: usize,
}

impl Takers {
    fn as_slice(&self) -> &[DeviceId] {
        &self.ids[..self.len]
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Devices at a door that take `kind`, in a fixed order (keypad, door
/// phone, lock).
fn takers(d: &DoorInfo, kind: TruthKind) -> Takers {
    let p = &d.plan;
    let ble_lock = matches!(p.kit, crate::devices::fleet::DoorKit::BleApartment);
    let maybe = match kind {
        TruthKind::Pin => [
            p.keypad,
            p.door_phone,
            if ble_lock && p.keypad.is_none() {
                p.lock
            } else {
                None
            },
        ],
        TruthKind::Card => [p.keypad, p.door_phone, p.lock],
        TruthKind::Qr => [p.door_phone, None, None],
        TruthKind::Ble => [p.lock, None, None],
    };
    let mut t = Takers {
        ids: [DeviceId(0); 3],
        len: 0,
    };
    for id in maybe.into_iter().flatten() {
        t.ids[t.len] = id;
        t.len += 1;
    }
    t
}

fn pick_action(rng: &mut ChaCha8Rng, s: &Scenario) -> Action {
    let r: f64 = rng.random();
    let mut acc = 0.0;
    for (a, f) in &s.actions.0 {
        acc += f;
        if r < acc {
            return *a;
        }
    }
    s.actions.0.last().map_or(Action::PinValid, |(a, _)| *a)
}

/// Plans a credential check for `action` at `site`: the door and device,
/// and the credential, chosen with the site's RNG from the oracle's model.
/// The device is a free one that takes the credential, else the one with
/// the shortest line. `None`: counted as the arrival's drop reason.
fn pick(ctx: &Ctx, site: u32, rng: &mut ChaCha8Rng, now: Timestamp, action: Action) -> Option<Job> {
    // Planned by `arrive` (code actions, sync storms, remote opens).
    let kind = presented_kind(action)?;
    let doors = ctx.sites[site as usize].doors_taking(kind);
    let drop_for = |ctx: &Ctx, why: DropReason| {
        ctx.shared
            .borrow_mut()
            .arrivals
            .dropped(action.as_str(), why);
        None
    };
    let Some(di) = choose(rng, doors) else {
        return drop_for(ctx, DropReason::NothingToPresent);
    };
    let door = &ctx.doors[di];
    let Some(device) = pick_device(ctx, rng, door, kind) else {
        return drop_for(ctx, DropReason::QueueFull);
    };
    let mut guard = ctx.shared.borrow_mut();
    let sh = &mut *guard;
    let at = AtDoor {
        ctx,
        site,
        door,
        now,
    };
    let chosen = match pick_truth(&at, &mut sh.oracle, &mut sh.candidates, rng, action) {
        Ok(c) => c,
        Err(why) => {
            drop(guard);
            return drop_for(ctx, why);
        }
    };
    let o = &sh.oracle;
    // The wire credential owns its text (`WireCredential` holds a
    // `String`): the one allocation of a plan.
    let text = match chosen.truth {
        Some(id) => o.truth(id).text.clone(),
        None => wrong_pin(rng, o, door),
    };
    let credential = match kind {
        TruthKind::Pin => WireCredential::Pin(text),
        TruthKind::Card => WireCredential::Card(text),
        TruthKind::Qr => WireCredential::Qr(text),
        TruthKind::Ble => WireCredential::Ble(text),
    };
    Some(Job {
        attempt: Attempt {
            device,
            door: door.door,
            action: action.as_str(),
            kind,
            truth: chosen.truth,
            keypad: true,
        },
        credential,
        reserved: chosen.reserved,
        forwarded: chosen.forwarded,
        announce: chosen.announce,
    })
}

/// What an attempt action presents (`None`: the action is no attempt).
fn presented_kind(action: Action) -> Option<TruthKind> {
    match action {
        Action::PinValid | Action::PinWrong | Action::PinExpired => Some(TruthKind::Pin),
        Action::QrValid | Action::QrReplayed | Action::QrExpired => Some(TruthKind::Qr),
        Action::Card => Some(TruthKind::Card),
        Action::Ble => Some(TruthKind::Ble),
        _ => None,
    }
}

/// The device at `door` the person walks up to: a free one that takes
/// `kind`, else the shortest line with room (`None`: every line is full).
fn pick_device(
    ctx: &Ctx,
    rng: &mut ChaCha8Rng,
    door: &DoorInfo,
    kind: TruthKind,
) -> Option<DeviceId> {
    let sh = ctx.shared.borrow();
    let takers = takers(door, kind);
    let all = takers.as_slice();
    match choose_where(rng, all, |d| !sh.queues.contains_key(d)) {
        Some(d) => Some(d),
        // Everyone is busy: join the shortest line (the first taker on
        // a tie), if it has room.
        None => all
            .iter()
            .map(|d| (sh.queues.get(d).map_or(0, VecDeque::len), *d))
            .min_by_key(|(len, _)| *len)
            .filter(|(len, _)| *len < MAX_DEVICE_QUEUE)
            .map(|(_, d)| d),
    }
}

/// The credential an attempt presents, as the oracle knows it.
#[derive(Default)]
struct Chosen {
    /// The truth entry (`None`: a wrong PIN).
    truth: Option<usize>,
    /// Reserved while the attempt runs (see [`Job::reserved`]).
    reserved: bool,
    forwarded: Vec<tokio::sync::oneshot::Receiver<bool>>,
    announce: Option<(reference_server::domain::DoorId, usize)>,
}

impl Chosen {
    fn plain(truth: usize) -> Chosen {
        Chosen {
            truth: Some(truth),
            ..Chosen::default()
        }
    }
}

/// Where and when an arrival presents.
struct AtDoor<'a> {
    ctx: &'a Ctx,
    site: u32,
    door: &'a DoorInfo,
    now: Timestamp,
}

/// Which of the door's credentials `action` presents, or why the arrival
/// is dropped (nothing to present, a server that refused a new key).
/// `c`: the run's buffer for the credentials to choose from (refilled).
fn pick_truth(
    at: &AtDoor<'_>,
    o: &mut Oracle,
    c: &mut Vec<usize>,
    rng: &mut ChaCha8Rng,
    action: Action,
) -> Result<Chosen, DropReason> {
    let (door, now) = (at.door, at.now);
    let nothing = DropReason::NothingToPresent;
    let from = |rng: &mut ChaCha8Rng, c: &[usize]| choose(rng, c).map(Chosen::plain).ok_or(nothing);
    c.clear();
    match action {
        Action::PinValid => {
            // Codes made during the run count once their door has them;
            // codes under a code action do not.
            let all = door.pins.iter().chain(o.extra_pins(door.door)).copied();
            c.extend(all.filter(|id| o.live(*id) && usable(o, door, now, *id)));
            let id = choose(rng, c).ok_or(nothing)?;
            // Reserved while the attempt runs: uses are counted, and a
            // code action leaves a code alone while someone types it.
            o.reserve(id, door.door);
            Ok(Chosen {
                reserved: true,
                ..Chosen::plain(id)
            })
        }
        Action::PinExpired => {
            // Expired codes, and codes changed away or revoked (people
            // type their old code).
            let retired = o.retired_pins(door.door);
            choose_joined(rng, &door.expired_pins, retired)
                .map(Chosen::plain)
                .ok_or(nothing)
        }
        Action::PinWrong => Ok(Chosen::default()),
        Action::Card => from(rng, &door.cards),
        Action::Ble => from(rng, &door.ble),
        Action::QrValid => pick_visitor_key(at, o, c, rng),
        Action::QrReplayed => {
            c.extend(qr_keys(o, door).filter(|id| o.used_up(*id, door.door)));
            from(rng, c)
        }
        Action::QrExpired => {
            let all = door.qr.iter().chain(&door.expired_qr).copied();
            let all = all.chain(o.extra_qr(door.door).iter().copied());
            c.extend(all.filter(|id| o.truth(*id).validity.check(now).is_err()));
            from(rng, c)
        }
        _ => Ok(Chosen::default()),
    }
}

/// Can a credential open `door` at `now` (valid, in its stay, uses left)?
fn usable(o: &Oracle, door: &DoorInfo, now: Timestamp, id: usize) -> bool {
    let v = &o.truth(id).validity;
    v.check(now).is_ok() && v.in_stay(now) && o.uses_left(id, door.door) != Some(0)
}

/// The door's visitor keys: provisioned, then issued during the run.
fn qr_keys<'a>(o: &'a Oracle, door: &'a DoorInfo) -> impl Iterator<Item = usize> + 'a {
    let extra = o.extra_qr(door.door).iter().copied();
    door.qr.iter().copied().chain(extra)
}

/// A usable visitor key of the door, or a new one a resident creates (as
/// people do); a server hears of a new key before the visitor arrives.
fn pick_visitor_key(
    at: &AtDoor<'_>,
    o: &mut Oracle,
    keys: &mut Vec<usize>,
    rng: &mut ChaCha8Rng,
) -> Result<Chosen, DropReason> {
    let AtDoor {
        ctx,
        site,
        door,
        now,
    } = *at;
    keys.clear();
    keys.extend(qr_keys(o, door).filter(|id| usable(o, door, now, *id)));
    let mut chosen = Chosen::default();
    let id = match choose(rng, keys) {
        Some(id) => id,
        None => {
            let tz = &ctx.tz[site as usize];
            let mut e = ctx.engine.write();
            let mut book = Book::new(&mut e, ctx.platform.served());
            let Ok(id) = provision::issue_qr(&mut book, o, &ctx.scenario, door, tz, now) else {
                return Err(DropReason::ServerRefused);
            };
            // A server hears of the key before the visitor arrives (the
            // attempt waits for it).
            chosen.forwarded = ctx.platform.forward(Actor::System, book.take_log());
            if chosen.forwarded.is_empty() {
                o.push_extra_qr(door.door, id);
            } else {
                chosen.announce = Some((door.door, id));
            }
            id
        }
    };
    o.reserve(id, door.door);
    chosen.truth = Some(id);
    chosen.reserved = true;
    Ok(chosen)
}

/// A wrong PIN: digits that are no code of this door. Written into one
/// String, which becomes the wire credential's (a retry rewrites it).
fn wrong_pin(rng: &mut ChaCha8Rng, o: &Oracle, door: &DoorInfo) -> String {
    use std::fmt::Write;
    let mut t = String::with_capacity(6);
    loop {
        let len = if rng.random::<f64>() < 0.2 { 6 } else { 4 };
        t.clear();
        let _ = write!(t, "{:0len$}", rng.random_range(0..10u64.pow(len as u32)));
        if !o.pin_known(door.door, &t) {
            return t;
        }
    }
}

/// Presents `job` (its device is held for it) and judges the answer.
/// Latency counts from `arrived`, the intended start; the oracle judges by
/// the time the credential is actually presented. `waited`: the person
/// stood in the device's line first.
async fn attempt(
    ctx: Rc<Ctx>,
    mut job: Job,
    mut arrived: Instant,
    waited: bool,
    notify: Option<tokio::sync::oneshot::Sender<()>>,
) {
    if !job.forwarded.is_empty() {
        if !server_has_key(&ctx, &mut job).await {
            return;
        }
        // The visitor arrives once the resident's key exists (issued as
        // they arrived: after a wait in line, it long does).
        if !waited {
            arrived = Instant::now();
        }
    }
    // The credential goes to the device (the job keeps what the oracle
    // needs): moved, not copied. An empty String allocates nothing.
    let credential = std::mem::replace(&mut job.credential, WireCredential::Pin(String::new()));
    let presented = Instant::now();
    let sent = ctx.clock.at(presented);
    let got = ctx
        .fleet
        .present_with(
            job.attempt.device,
            Present {
                credential,
                floor: None,
                human_timing: false,
            },
        )
        .await;
    let completed = Instant::now();
    let mut done = ctx.clock.at(completed);
    // The oracle judges an answer at the time of whoever decided it: a
    // served engine's clock, or the device's (the run's).
    let mut sent = sent;
    let by_device = matches!(&got, Ok(p) if p.decided_locally);
    if ctx.platform.served() && !by_device {
        let offset = served_clock_offset(&ctx.clock);
        sent = sent.checked_add(offset).unwrap_or(sent);
        done = done.checked_add(offset).unwrap_or(done);
    }
    let op = op_of(job.attempt.kind);
    let actual = match &got {
        Ok(p) => match &p.outcome {
            DeviceOutcome::Unlocked | DeviceOutcome::MotorBlocked | DeviceOutcome::LowBattery => {
                Some(Expected::Granted)
            }
            DeviceOutcome::Denied(r) => Some(Expected::Denied(*r)),
            _ => None,
        },
        Err(_) => None,
    };
    let mut guard = ctx.shared.borrow_mut();
    let sh = &mut *guard;
    sh.in_flight = sh.in_flight.saturating_sub(1);
    sh.arrivals.ran(job.attempt.action);
    next_in_line(&ctx, sh, job.attempt.device);
    if let Some(n) = notify {
        let _ = n.send(());
    }
    if matches!(&got, Ok(p) if p.outcome == DeviceOutcome::MotorBlocked) {
        sh.motor_blocked += 1;
    }
    let outcome = match actual {
        Some(Expected::Granted) => Outcome::Granted,
        Some(Expected::Denied(_)) => Outcome::Denied,
        None => Outcome::Error,
    };
    sh.recorder.record(op, outcome, arrived, completed);
    if job.reserved {
        if let Some(id) = job.attempt.truth {
            sh.oracle.unreserve(id, job.attempt.door);
        }
    }
    let ended = Ended {
        job: &job,
        got: &got,
        sent,
        done,
    };
    match actual {
        Some(a) => judge_answer(sh, &ended, a),
        None => count_error(sh, &ended, outcome),
    }
}

/// Waits until the server applied the commands issued for `job` (a new
/// visitor key); `false` when it did not, the arrival then counted as
/// dropped: the attempt cannot be made, and the key stays reserved so no
/// later one uses it.
async fn server_has_key(ctx: &Rc<Ctx>, job: &mut Job) -> bool {
    let mut ok = true;
    for rx in std::mem::take(&mut job.forwarded) {
        ok &= rx.await.unwrap_or(false);
    }
    if !ok {
        let mut guard = ctx.shared.borrow_mut();
        let sh = &mut *guard;
        sh.in_flight = sh.in_flight.saturating_sub(1);
        sh.errors += 1;
        sh.arrivals
            .dropped(job.attempt.action, DropReason::ServerRefused);
        next_in_line(ctx, sh, job.attempt.device);
        return false;
    }
    if let Some((door, id)) = job.announce.take() {
        ctx.shared.borrow_mut().oracle.push_extra_qr(door, id);
    }
    true
}

/// An attempt that ended: what the device said, and when it was sent and
/// decided on the decider's clock (the oracle judges by those times).
struct Ended<'a> {
    job: &'a Job,
    got: &'a Result<Presented, DeviceError>,
    sent: Timestamp,
    done: Timestamp,
}

/// An answer came: the oracle judges it and the decision class is counted.
fn judge_answer(sh: &mut Shared, end: &Ended<'_>, a: Expected) {
    let (job, got, sent, done) = (end.job, end.got, end.sent, end.done);
    // The engine's answer says whether the keypad is locked out
    // after it; a device's own decision does not.
    let lock = match got.as_ref().ok().and_then(|p| p.response.as_ref()) {
        Some(r) => r
            .locked_until
            .map_or(LockReport::NotLocked, LockReport::Until),
        None => LockReport::Unreported,
    };
    let answer = Answer { decision: a, lock };
    let class = sh.oracle.judge(&job.attempt, answer, sent, done);
    let class = match class {
        Class::TrueGrant => DecisionClass::TrueGrant,
        Class::TrueDenial | Class::ReasonMismatch => DecisionClass::TrueDenial,
        Class::FalseAccept => DecisionClass::FalseAccept,
        Class::FalseReject => DecisionClass::FalseReject,
        Class::Ambiguous => DecisionClass::Ambiguous,
        Class::Uncertain => DecisionClass::Uncertain,
    };
    // The oracle keeps the examples of its verdicts.
    sh.recorder.count_decision_class(class);
}

/// No answer (an error, a timeout, offline): counted as an error, and as
/// uncertain in the oracle where the engine may have decided all the same.
fn count_error(sh: &mut Shared, end: &Ended<'_>, outcome: Outcome) {
    let (job, got, sent, done) = (end.job, end.got, end.sent, end.done);
    sh.errors += 1;
    // The engine may have decided it all the same (a timeout, an
    // error after the request went out): what it did to use and
    // wrong-PIN counts stays uncertain in the oracle. Offline:
    // nothing was sent.
    let unknown = match &got {
        Ok(p) => p.outcome.outcome_unknown(),
        Err(e) => !matches!(
            e,
            DeviceError::MailboxFull
                | DeviceError::NotAccepted { .. }
                | DeviceError::UnknownDevice(_)
        ),
    };
    if unknown {
        sh.oracle.judge_unknown(&job.attempt, sent, done);
    }
    let expected = if job.attempt.truth.is_some() && job.attempt.action.ends_with("valid") {
        Verdict::Grant
    } else {
        Verdict::Deny
    };
    let why = match &got {
        Ok(p) => match &p.outcome {
            DeviceOutcome::Offline => "offline".to_string(),
            DeviceOutcome::TimedOut => "timed_out".to_string(),
            DeviceOutcome::Error(e) => e.clone(),
            other => format!("{other:?}"),
        },
        Err(e) => e.to_string(),
    };
    let sh = &mut *sh;
    let (oracle, attempt) = (&sh.oracle, &job.attempt);
    sh.recorder.record_decision(expected, outcome, || {
        let rules = oracle.expect(attempt, done).label();
        let note = "no answer: neither right nor wrong";
        oracle.example(attempt, rules, format!("error:{why}"), sent, done, note)
    });
}
