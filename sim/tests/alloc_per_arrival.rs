//! Allocations per arrival on the scenario's hot path (pick, plan,
//! attempt, judge), counted by a counting global allocator around a short
//! in-process run in virtual time. Counts only, never timings.
//!
//! A run allocates for its setup (provisioning, the fleet's actors, the
//! recorders) and for its report whatever its length; what it allocates per
//! arrival is the difference between two runs that differ only in length,
//! divided by the difference in arrivals. The site has many doors: a plan
//! that walked and collected the site's doors per arrival (as it once did)
//! would allocate hundreds of times per arrival here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fleetsim::run::{load, RunOptions, Shard};
use fleetsim::scenario;

/// Counts every allocation and reallocation (a growing Vec counts).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Held while a test measures: the counter is the process's, and the
/// tests of this file run on threads of their own.
static COUNTING: Mutex<()> = Mutex::new(());

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is an atomic and allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One site with 120 Wi-Fi locks with keypads and 8 door phones, `secs`
/// seconds at 100 arrivals/s of `actions`, in-process in virtual time.
fn scenario_text(secs: u32, actions: &str) -> String {
    format!(
        r#"
name = "alloc-per-arrival"
seed = 5
transport = "inproc"
clock = "virtual"

[fleet]
sites = 1
timezone = "UTC"

[[fleet.devices]]
kind = "lock"
model = "wifi"
per_site = 120
with = ["keypad"]

[[fleet.devices]]
kind = "door_phone"
per_site = 8

[credentials]
pins_per_door = 4
mix = {{ permanent = 0.5, temporary = 0.25, recurring = 0.25 }}
expired_pins_per_door = 1
qr_keys_per_door = 2
cards_per_door = 2

[[phases]]
name = "steady"
duration = "{secs}s"
arrivals = "100/s"

[actions]
{actions}
"#
    )
}

/// Runs the scenario's load in-process as `fleetsim run` does in virtual
/// time; returns (allocations during the run, arrivals, arrivals served).
fn measure(secs: u32, actions: &str) -> (u64, u64, u64) {
    let s = scenario::parse(&scenario_text(secs, actions), "alloc.toml").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        seed: s.seed.unwrap_or(5),
        transport: s.transport,
        broker: None,
        target: None,
        report_dir: tmp.path().to_path_buf(),
        metrics_addr: None,
        shard: Shard::WHOLE,
        run_id: "alloc".into(),
        reproduce: "alloc".into(),
        fleet: None,
    };
    let sys = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let m = sys.block_on(load::run(&s, &opts, 0)).unwrap();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let asked = m.arrivals.values().map(|a| a.asked).sum();
    let ran = m.arrivals.values().map(|a| a.ran).sum();
    let v = &m.oracle.verdicts;
    assert_eq!(v.false_accepts + v.false_rejects, 0, "{v:?}");
    (allocations, asked, ran)
}

/// Allocations per extra arrival between a 10 s and a 20 s run.
fn per_arrival(actions: &str) -> f64 {
    let _alone = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let (a_short, n_short, ran_short) = measure(10, actions);
    let (a_long, n_long, ran_long) = measure(20, actions);
    assert!(n_long > n_short + 500, "{n_short} -> {n_long} arrivals");
    // Most arrivals served: the difference is the attempts', not drops'.
    assert!(ran_long - ran_short > (n_long - n_short) / 2);
    let per = (a_long.saturating_sub(a_short)) as f64 / (n_long - n_short) as f64;
    eprintln!(
        "{actions:?}: {a_short} allocations for {n_short} arrivals, \
         {a_long} for {n_long}: {per:.1} per arrival"
    );
    per
}

/// Most allocations per arrival, over the whole path in-process. Measured
/// 8.4 (PINs and cards) and 9.2 (visitor keys, expired codes): the wire
/// credential's text (`WireCredential` owns a `String`), the task serving
/// the arrival, and the device actor's side (its mailbox envelope and reply
/// channel, the in-process transport, the engine's answer). The plan and the
/// oracle's judgement add none once their buffers have grown. A plan that
/// collected per door, per device or per candidate again would add at least
/// one per door of the site's 128 (the plan before the per-site index made
/// 280 per arrival here).
const MAX_ALLOCATIONS_PER_ARRIVAL: f64 = 16.0;

#[test]
fn pin_and_card_checks_allocate_a_bounded_few_times_per_arrival() {
    let per = per_arrival("pin_valid = 0.6\npin_wrong = 0.2\ncard = 0.2");
    assert!(
        per <= MAX_ALLOCATIONS_PER_ARRIVAL,
        "{per:.1} allocations per arrival"
    );
}

#[test]
fn visitor_keys_and_expired_codes_allocate_a_bounded_few_times_per_arrival() {
    let per = per_arrival("pin_expired = 0.3\nqr_valid = 0.3\nqr_replayed = 0.2\nqr_expired = 0.2");
    assert!(
        per <= MAX_ALLOCATIONS_PER_ARRIVAL,
        "{per:.1} allocations per arrival"
    );
}
