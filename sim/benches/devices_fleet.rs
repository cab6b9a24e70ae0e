//! Fleet benchmarks (run with `cargo bench -p fleetsim --bench
//! devices_fleet -- <memory|checks|virtual|all>`):
//!
//! - memory: RSS (VmRSS) of 100k mixed in-process devices plus the engine.
//! - checks: 100k devices on one arbiter per core; an open-model load of
//!   `CHECKS_PER_S` (default 200,000) PIN checks a second at Wi-Fi keypads,
//!   locks and door phones for `CHECKS_SECONDS` (default 10); latency from
//!   each check's intended start to the device's answer (HDR histogram).
//! - virtual: 30 days of 1,000 Bluetooth locks (battery, syncs, faults) in
//!   virtual time; wall-clock seconds.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use fleetsim::clock::SimClock;
use fleetsim::devices::fleet::{DeviceAddr, Fleet, FleetSpec, Placement};
use fleetsim::devices::{DeviceOutcome, DeviceParams, Present};
use fleetsim::transport::{InProcTransport, Transport};
use hdrhistogram::Histogram;
use jiff::Timestamp;
use parking_lot::RwLock;
use reference_server::domain::{Actor, FloorScope, HolderKind, Schedule, TokenKey};
use reference_server::engine::{Command, Issue, Outcome, PinSpec, SecretSpec};
use reference_server::protocol::WireCredential;
use reference_server::{Engine, EngineConfig};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn engine() -> Arc<RwLock<Engine>> {
    Arc::new(RwLock::new(Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([3; 32]),
        seed: 1,
    })))
}

/// 100k devices: 20k Wi-Fi doors (lock, keypad, sensor), 15k Bluetooth
/// doors (lock, sensor), 5k entrances (door phone, sensor).
fn mixed_100k() -> FleetSpec {
    FleetSpec::new(1)
        .wifi_doors(20_000)
        .ble_doors(15_000)
        .entrances(5_000)
}

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn memory() {
    let before = rss_mib();
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let e = engine();
        let clock = SimClock::starting_at(start());
        let t = InProcTransport::new(e.clone(), clock);
        let spec = mixed_100k();
        let fleet = Fleet::build(&spec, &e, Transport::InProc(t), clock, &Placement::Current).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = fleet.devices().len();
        let after = rss_mib();
        println!(
            "memory: {n} devices in-process: VmRSS {after:.1} MiB (before {before:.1} MiB, +{:.1} MiB, {:.2} KiB/device)",
            after - before,
            (after - before) * 1024.0 / n as f64
        );
        actix_rt::System::current().stop();
    });
    sys.run().unwrap();
}

/// Issues PIN 4829 on every door with a lock or door phone.
fn issue_everywhere(e: &Arc<RwLock<Engine>>, fleet: &Fleet, now: Timestamp) {
    let mut e = e.write();
    let holder = match e
        .apply(
            &Actor::System,
            Command::CreateHolder {
                org: fleet.provisioned.org,
                name: "Resident".into(),
                kind: HolderKind::Member,
                user: None,
                floors: FloorScope::Any,
            },
            now,
        )
        .unwrap()
        .outcome
    {
        Outcome::Holder(h) => h,
        o => panic!("{o:?}"),
    };
    for d in &fleet.provisioned.doors {
        e.apply(
            &Actor::System,
            Command::IssueCredential(Issue {
                holder,
                name: "PIN".into(),
                secret: SecretSpec::Pin {
                    pin: PinSpec::Manual("4829".into()),
                },
                schedule: Schedule::Permanent,
                doors: vec![d.door],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
            now,
        )
        .unwrap();
    }
}

struct ShardResult {
    hist: Histogram<u64>,
    sent: u64,
    ok: u64,
    unexpected: u64,
    /// From the shard's start to its last answer.
    wall_s: f64,
}

fn checks() {
    let rate: f64 = std::env::var("CHECKS_PER_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000.0);
    let seconds: f64 = std::env::var("CHECKS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let arbiters: Vec<Arbiter> = (0..cores).map(|_| Arbiter::new()).collect();
        let handles: Vec<_> = arbiters.iter().map(|a| a.handle()).collect();
        let e = engine();
        let clock = SimClock::starting_at(start());
        let t = InProcTransport::new(e.clone(), clock);
        let mut params = DeviceParams::default();
        // The load test measures checks; keep the keypads from locking out.
        params.keypad.lockout.max_wrong = 16;
        let spec = mixed_100k().params(params);
        let fleet = Fleet::build(&spec, &e, Transport::InProc(t.clone()), clock, &Placement::Arbiters(handles.clone())).unwrap();
        issue_everywhere(&e, &fleet, clock.now());
        // Actors on other arbiters link as they start: wait for all.
        while t.linked() < fleet.devices().len() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pushed = t.push_sync();
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!("checks: {} devices on {cores} arbiters; {pushed} sync batches pushed", fleet.devices().len());
        // Targets: devices that ask the engine, grouped by the arbiter of
        // their door (the generator runs next to its devices).
        let mut shards: Vec<Vec<DeviceAddr>> = vec![Vec::new(); cores];
        for (i, plan) in fleet.provisioned.doors.iter().enumerate() {
            if plan.kit == fleetsim::devices::fleet::DoorKit::BleApartment {
                continue;
            }
            for d in [plan.keypad, plan.lock, plan.door_phone].into_iter().flatten() {
                shards[i % cores].push(fleet.device(d).unwrap().addr.clone());
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ShardResult>();
        let per_shard = rate / cores as f64;
        for (shard, targets) in shards.into_iter().enumerate() {
            let tx = tx.clone();
            handles[shard].spawn_fn(move || {
                actix_rt::spawn(generate(targets, per_shard, seconds, shard as u64, tx));
            });
        }
        drop(tx);
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let (mut sent, mut ok, mut unexpected, mut wall_s) = (0, 0, 0, 0.0f64);
        while let Some(r) = rx.recv().await {
            wall_s = wall_s.max(r.wall_s);
            hist.add(&r.hist).unwrap();
            sent += r.sent;
            ok += r.ok;
            unexpected += r.unexpected;
        }
        println!(
            "checks: target {rate:.0}/s for {seconds} s: sent {sent}, answered {} in {wall_s:.2} s ({:.0}/s), unlocked {ok}, other outcomes {unexpected}",
            hist.len(),
            hist.len() as f64 / wall_s
        );
        println!(
            "checks: latency from intended start: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            hist.value_at_quantile(0.999) as f64 / 1000.0,
            hist.max() as f64 / 1000.0
        );
        println!("checks: VmRSS {:.1} MiB", rss_mib());
        for a in &arbiters {
            a.stop();
        }
        actix_rt::System::current().stop();
    });
    sys.run().unwrap();
}

/// What one shard's answers added up to.
struct Tally {
    hist: Histogram<u64>,
    answered: u64,
    ok: u64,
    unexpected: u64,
    /// Worst latency (µs) per 100 ms of intended start time (diagnostics:
    /// `CHECKS_TIMELINE=1` prints the slow stretches).
    worst: Vec<u64>,
}

/// One shard's open-model generator: request k is due at start + k/rate,
/// sent when due whether or not earlier ones were answered; its latency is
/// measured from that due time (no coordinated omission). One local task
/// per request (its message goes out at once), no address clone and no
/// join handle kept per request.
async fn generate(
    targets: Vec<DeviceAddr>,
    rate: f64,
    seconds: f64,
    shard: u64,
    tx: tokio::sync::mpsc::UnboundedSender<ShardResult>,
) {
    let targets: Rc<[DeviceAddr]> = targets.into();
    let tally = Rc::new(RefCell::new(Tally {
        hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
        answered: 0,
        ok: 0,
        unexpected: 0,
        worst: vec![0; (seconds * 10.0).ceil() as usize + 1],
    }));
    let total = (rate * seconds) as u64;
    let t0 = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let due_of = |k: u64| t0 + interval.mul_f64(k as f64);
    let mut k = 0u64;
    let mut pick = shard.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while k < total {
        let now = tokio::time::Instant::now();
        // Everything due by now goes out now.
        while k < total && due_of(k) <= now {
            let due = due_of(k);
            pick = fleetsim::clock::splitmix64(pick);
            let i = (pick % targets.len() as u64) as usize;
            let (targets, tally) = (targets.clone(), tally.clone());
            actix_rt::spawn(async move {
                let p = Present {
                    credential: WireCredential::Pin("4829".into()),
                    floor: None,
                    human_timing: false,
                };
                let r = targets[i].present(p).await;
                let us = due.elapsed().as_micros() as u64;
                let mut t = tally.borrow_mut();
                let slot = ((due - t0).as_millis() / 100) as usize;
                if let Some(w) = t.worst.get_mut(slot) {
                    *w = (*w).max(us);
                }
                t.hist.saturating_record(us.max(1));
                t.answered += 1;
                match r {
                    Ok(p) if p.outcome == DeviceOutcome::Unlocked => t.ok += 1,
                    _ => t.unexpected += 1,
                }
            });
            k += 1;
        }
        if k < total {
            tokio::time::sleep_until(due_of(k)).await;
        }
    }
    while tally.borrow().answered < k {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let t = tally.borrow();
    if std::env::var_os("CHECKS_TIMELINE").is_some() {
        let slow: Vec<String> = t
            .worst
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 5_000)
            .map(|(i, w)| format!("{:.1}s:{:.0}ms", i as f64 / 10.0, *w as f64 / 1000.0))
            .collect();
        println!(
            "checks: shard {shard} worst latency > 5 ms at: {}",
            slow.join(" ")
        );
    }
    let _ = tx.send(ShardResult {
        hist: t.hist.clone(),
        sent: k,
        ok: t.ok,
        unexpected: t.unexpected,
        wall_s,
    });
}

fn virtual_30_days() {
    let wall = std::time::Instant::now();
    let sys = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    });
    sys.block_on(async {
        let e = engine();
        let clock = SimClock::starting_at(start());
        let t = InProcTransport::new(e.clone(), clock);
        let spec = FleetSpec::new(1).ble_doors(1_000).sensors(false);
        let fleet = Fleet::build(
            &spec,
            &e,
            Transport::InProc(t.clone()),
            clock,
            &Placement::Current,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_secs(30 * 86_400)).await;
        let emitted = fleet.emitted().await.unwrap();
        println!(
            "virtual: 30 days x {} locks: {:.2} s wall; events emitted {}, logged {}",
            fleet.devices().len(),
            wall.elapsed().as_secs_f64(),
            emitted.total(),
            t.log().totals().accepted
        );
        actix_rt::System::current().stop();
    });
    sys.run().unwrap();
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = which.is_empty() || which.iter().any(|w| w == "all");
    let want = |name: &str| all || which.iter().any(|w| w == name);
    if want("memory") {
        memory();
    }
    if want("virtual") {
        virtual_30_days();
    }
    if want("checks") {
        checks();
    }
}
