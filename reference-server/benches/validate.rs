//! `Engine::validate` over 1M credentials on 100k doors, mixed kinds.
//!
//! Run: `cargo bench -p reference-server --bench validate`
//!
//! The checks are drawn at random over the whole fleet before timing, so each
//! check touches cold memory the way a real fleet's traffic does (a loop over
//! one hot credential would measure the cache, not the engine).
//!
//! `mixed_1M_credentials_100k_doors` and `qr_only` keep each QR or BLE
//! token in its own heap string, so the first read of a token's text is a
//! random cache miss that a server (which has just read the token off the
//! network) does not pay; the `*_tokens_in_arrival_order` variants run the
//! same checks with the texts in one buffer in arrival order. Both are kept
//! so the older figures stay comparable.
//!
//! Group `validate` measures wall time; group `validate_cpu` runs the
//! one-thread benchmarks again in the thread's CPU time, which other
//! processes on a loaded machine disturb less.

use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput};
use jiff::civil::Time;
use jiff::{SignedDuration, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reference_server::domain::*;
use reference_server::engine::{Issue, Outcome, PinSpec, SecretSpec, SyncResult};
use reference_server::{Check, Command, Engine, EngineConfig, Presented};

const DOORS: u32 = 100_000;
const CREDENTIALS: u32 = 1_000_000;
const CHECKS: usize = 1 << 20;

enum Shown {
    Pin(Pin),
    Card(u64),
    Qr(String),
    Ble(String),
}

struct Fleet {
    engine: Engine,
    now: Timestamp,
    /// (device, what is shown) for every credential.
    shown: Vec<(DeviceId, Shown)>,
}

fn build() -> Fleet {
    let started = Instant::now();
    let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
    let sys = Actor::System;
    let mut e = Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([5; 32]),
        seed: 1,
    });
    let user = match e
        .apply(
            &sys,
            Command::CreateUser {
                name: "o".into(),
                email: "o@example.com".into(),
            },
            now,
        )
        .unwrap()
        .outcome
    {
        Outcome::User(u) => u,
        o => panic!("{o:?}"),
    };
    let org = match e
        .apply(
            &sys,
            Command::CreateOrganization {
                name: "Bench".into(),
                description: String::new(),
                owner: user,
                personal: false,
            },
            now,
        )
        .unwrap()
        .outcome
    {
        Outcome::Organization(o) => o,
        o => panic!("{o:?}"),
    };
    let settings = SiteSettings {
        six_digit_pins: true,
        ..SiteSettings::default()
    };
    let site = match e
        .apply(
            &sys,
            Command::CreateSite {
                org,
                name: "S".into(),
                time_zone: "Europe/Berlin".into(),
                settings,
            },
            now,
        )
        .unwrap()
        .outcome
    {
        Outcome::Site(s) => s,
        o => panic!("{o:?}"),
    };
    let holder = match e
        .apply(
            &sys,
            Command::CreateHolder {
                org,
                name: "h".into(),
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
    let mut locks = Vec::with_capacity(DOORS as usize);
    for i in 0..DOORS {
        let door = match e
            .apply(
                &sys,
                Command::CreateDoor {
                    site,
                    name: format!("d{i}"),
                    common_area: false,
                    unit: None,
                    lift_floors: vec![],
                },
                now,
            )
            .unwrap()
            .outcome
        {
            Outcome::Door(d) => d,
            o => panic!("{o:?}"),
        };
        let cmd = Command::CreateDevice {
            door,
            kind: DeviceKind::Lock,
            connectivity: Connectivity::Wifi,
            name: "lock".into(),
            location: "door".into(),
            linked_to: None,
            code_slots: 250,
        };
        let dev = match e.apply(&sys, cmd, now).unwrap().outcome {
            Outcome::Device(d) => d,
            o => panic!("{o:?}"),
        };
        locks.push((door, dev));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let day = SignedDuration::from_hours(24);
    let mut shown = Vec::with_capacity(CREDENTIALS as usize);
    for i in 0..CREDENTIALS {
        let (door, dev) = locks[(i % DOORS) as usize];
        // Mixed kinds: 70% PIN, 10% card, 15% QR, 5% BLE; mixed schedules.
        let roll = rng.random_range(0..100);
        let schedule = match rng.random_range(0..4) {
            0 => Schedule::Permanent,
            1 => Schedule::Temporary {
                start: now - day,
                end: now + day,
            },
            2 => Schedule::Recurring {
                days: Weekdays::ALL,
                window: DailyWindow {
                    start: Time::constant(6, 0, 0, 0),
                    end: Time::constant(22, 0, 0, 0),
                },
                start: None,
                end: None,
            },
            _ => Schedule::Delivery {
                start: now - day,
                end: now + day,
                max_uses: Some(1_000_000),
            },
        };
        let secret = match roll {
            0..70 => SecretSpec::Pin {
                pin: PinSpec::Generate { digits: 6 },
            },
            70..80 => SecretSpec::Card {
                number: u64::from(i) + 1_000_000,
            },
            80..95 => SecretSpec::Qr,
            _ => SecretSpec::Ble,
        };
        let issue = Issue {
            holder,
            name: "c".into(),
            secret,
            schedule,
            doors: vec![door],
            include_common_areas: false,
            floors: FloorScope::Any,
        };
        let id = match e
            .apply(&sys, Command::IssueCredential(issue), now)
            .unwrap()
            .outcome
        {
            Outcome::Credential(c) => c,
            o => panic!("{o:?}"),
        };
        let c = e.credential(id).unwrap();
        let s = match c.kind {
            CredentialKind::Pin => Shown::Pin(c.pin().unwrap()),
            CredentialKind::Card => Shown::Card(u64::from(i) + 1_000_000),
            CredentialKind::Qr => Shown::Qr(e.token(id).unwrap()),
            CredentialKind::Ble => Shown::Ble(e.token(id).unwrap()),
        };
        shown.push((dev, s));
    }
    // Every lock confirms its codes, as a synced fleet would have.
    for (_, dev) in &locks {
        let batch = e.pending_sync(*dev).unwrap();
        let results = batch
            .set
            .iter()
            .map(|(c, _)| SyncResult {
                credential: *c,
                failure: None,
            })
            .collect();
        e.apply(
            &sys,
            Command::SyncAck {
                device: *dev,
                results,
            },
            now,
        )
        .unwrap();
    }
    eprintln!(
        "fleet: {DOORS} doors, {CREDENTIALS} credentials, built in {:.1?}",
        started.elapsed()
    );
    Fleet {
        engine: e,
        now,
        shown,
    }
}

fn checks(fleet: &Fleet, seed: u64) -> Vec<Check<'_>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..CHECKS)
        .map(|_| {
            let (device, s) = &fleet.shown[rng.random_range(0..fleet.shown.len())];
            let presented = match s {
                Shown::Pin(p) => Presented::Pin(*p),
                Shown::Card(n) => Presented::Card(*n),
                Shown::Qr(t) => Presented::Qr(t),
                Shown::Ble(t) => Presented::Ble(t),
            };
            Check {
                device: *device,
                presented,
                floor: None,
            }
        })
        .collect()
}

/// Every token text of `list`, in order, in one buffer.
fn arrival_buffer<'a, C: std::borrow::Borrow<Check<'a>>>(list: &[C]) -> String {
    let mut buf = String::new();
    for c in list {
        if let Presented::Qr(t) | Presented::Ble(t) = c.borrow().presented {
            buf.push_str(t);
        }
    }
    buf
}

/// `list` again, each token's text taken from `buf` (`arrival_buffer`).
fn in_arrival_order<'a, 'b, C: std::borrow::Borrow<Check<'a>>>(
    list: &[C],
    buf: &'b str,
) -> Vec<Check<'b>> {
    let mut at = 0;
    let mut next = |t: &str| {
        let s = &buf[at..at + t.len()];
        assert_eq!(s, t);
        at += t.len();
        s
    };
    list.iter()
        .map(|c| {
            let c = c.borrow();
            let presented = match c.presented {
                Presented::Pin(p) => Presented::Pin(p),
                Presented::Card(n) => Presented::Card(n),
                Presented::Qr(t) => Presented::Qr(next(t)),
                Presented::Ble(t) => Presented::Ble(next(t)),
            };
            Check {
                device: c.device,
                presented,
                floor: c.floor,
            }
        })
        .collect()
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): what a check
/// costs the core that runs it, without the time the thread waits while
/// other processes run (wall time on a loaded 2-core machine counts that
/// too). Cache misses and the caches other processes evicted still count.
struct ThreadCpu;

static WALL: WallTime = WallTime;

fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

/// The one-thread benchmarks, in group `g`.
fn per_check<M: Measurement>(g: &mut BenchmarkGroup<'_, M>, fleet: &Fleet, list: &[Check<'_>]) {
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("mixed_1M_credentials_100k_doors", |b| {
        b.iter(|| {
            i = (i + 1) & (CHECKS - 1);
            fleet.engine.validate(&list[i], fleet.now)
        })
    });
    // PIN checks only (the keypad path), for the per-kind figure.
    let pins: Vec<&Check<'_>> = list
        .iter()
        .filter(|c| matches!(c.presented, Presented::Pin(_)))
        .collect();
    let mut j = 0usize;
    g.bench_function("pin_only", |b| {
        b.iter(|| {
            j = (j + 1) % pins.len();
            fleet.engine.validate(pins[j], fleet.now)
        })
    });
    // Card checks only: the card reader's path.
    let cards: Vec<&Check<'_>> = list
        .iter()
        .filter(|c| matches!(c.presented, Presented::Card(_)))
        .collect();
    let mut m = 0usize;
    g.bench_function("card_only", |b| {
        b.iter(|| {
            m = (m + 1) % cards.len();
            fleet.engine.validate(cards[m], fleet.now)
        })
    });
    let qrs: Vec<&Check<'_>> = list
        .iter()
        .filter(|c| matches!(c.presented, Presented::Qr(_)))
        .collect();
    let mut k = 0usize;
    g.bench_function("qr_only", |b| {
        b.iter(|| {
            k = (k + 1) % qrs.len();
            fleet.engine.validate(qrs[k], fleet.now)
        })
    });
    // The same checks with each token's text where a server would have it:
    // in the buffer it has just read the message into. The texts are copied
    // once, before timing, into one buffer in the order the checks arrive,
    // so reading a token's text is a sequential read (as a receive buffer
    // is), not a random miss into 1M scattered heap strings. Everything
    // else (decoding, the MAC, the credential row, every rule) is the same
    // work on the same random cold memory as above.
    let arena = arrival_buffer(list);
    let arrived = in_arrival_order(list, &arena);
    let mut i = 0usize;
    g.bench_function("mixed_tokens_in_arrival_order", |b| {
        b.iter(|| {
            i = (i + 1) & (CHECKS - 1);
            fleet.engine.validate(&arrived[i], fleet.now)
        })
    });
    let qr_arena = arrival_buffer(&qrs);
    let qr_arrived = in_arrival_order(&qrs, &qr_arena);
    let mut k = 0usize;
    g.bench_function("qr_only_tokens_in_arrival_order", |b| {
        b.iter(|| {
            k = (k + 1) % qr_arrived.len();
            fleet.engine.validate(&qr_arrived[k], fleet.now)
        })
    });
}

fn main() {
    let fleet = build();
    let list = checks(&fleet, 3);
    let granted = list
        .iter()
        .take(100_000)
        .filter(|ch| fleet.engine.validate(ch, fleet.now).is_granted())
        .count();
    eprintln!("sanity: {granted} of 100000 sampled checks granted");
    assert!(
        granted > 99_000,
        "the benchmark must exercise the grant path"
    );

    let mut wall = Criterion::default().sample_size(30).configure_from_args();
    let mut g = wall.benchmark_group("validate");
    g.measurement_time(Duration::from_secs(8));
    per_check(&mut g, &fleet, &list);
    // Both cores at once: checks run under `&self`, as the server's read lock allows.
    g.throughput(Throughput::Elements(2 * 100_000));
    g.bench_function("mixed_2_threads_200k_checks", |b| {
        b.iter_batched(
            || (),
            |_| {
                std::thread::scope(|s| {
                    for t in 0..2 {
                        let (fleet, list) = (&fleet, &list);
                        s.spawn(move || {
                            for n in 0..100_000 {
                                std::hint::black_box(
                                    fleet.engine.validate(
                                        &list[(t * 400_000 + n) & (CHECKS - 1)],
                                        fleet.now,
                                    ),
                                );
                            }
                        });
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // The same one-thread checks in the thread's CPU time.
    let mut cpu = Criterion::default()
        .with_measurement(ThreadCpu)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .configure_from_args();
    let mut g = cpu.benchmark_group("validate_cpu");
    g.measurement_time(Duration::from_secs(5));
    per_check(&mut g, &fleet, &list);
    g.finish();

    wall.final_summary();
    cpu.final_summary();
}
