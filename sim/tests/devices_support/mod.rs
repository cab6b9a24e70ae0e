//! Shared helpers of the device tests: a virtual-time actix system, an
//! engine, an in-process fleet, and credential issuing through
//! `Engine::apply`.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use fleetsim::clock::SimClock;
use fleetsim::devices::fleet::{provision, Fleet, FleetSpec, Placement, Provisioned};
use fleetsim::devices::DeviceParams;
use fleetsim::transport::{InProcTransport, Transport};
use jiff::Timestamp;
use parking_lot::RwLock;
use reference_server::domain::{
    Actor, CredentialId, DeviceId, DoorId, FloorScope, HolderId, HolderKind, OrgId, Repeat,
    Schedule, TokenKey,
};
use reference_server::engine::{Command, Issue, Outcome, PinSpec, SecretSpec};
use reference_server::protocol::SyncResult;
use reference_server::{Engine, EngineConfig};

pub const START: i64 = 1_800_000_000;

pub fn start_time() -> Timestamp {
    Timestamp::from_second(START).unwrap()
}

/// Runs `f` on a paused current-thread runtime (virtual time) inside an
/// actix system, then stops the system cleanly.
pub fn run_virtual<F, Fut>(f: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let sys = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    });
    sys.block_on(async {
        f().await;
        actix_rt::System::current().stop();
    });
    sys.run().unwrap();
}

pub fn engine(seed: u64) -> Arc<RwLock<Engine>> {
    Arc::new(RwLock::new(Engine::new(EngineConfig {
        token_key: TokenKey::from_bytes([7; 32]),
        seed,
    })))
}

pub struct Setup {
    pub engine: Arc<RwLock<Engine>>,
    pub transport: InProcTransport,
    pub fleet: Fleet,
    pub clock: SimClock,
}

/// An in-process fleet on the current arbiter (call inside `run_virtual`).
pub fn inproc_fleet(spec: &FleetSpec) -> Setup {
    let engine = engine(spec.seed);
    let clock = SimClock::starting_at(start_time());
    let transport = InProcTransport::new(engine.clone(), clock);
    let fleet = Fleet::build(
        spec,
        &engine,
        Transport::InProc(transport.clone()),
        clock,
        &Placement::Current,
    )
    .unwrap();
    Setup {
        engine,
        transport,
        fleet,
        clock,
    }
}

fn holder(engine: &mut Engine, org: OrgId, kind: HolderKind, now: Timestamp) -> HolderId {
    let o = engine
        .apply(
            &Actor::System,
            Command::CreateHolder {
                org,
                name: "Holder".into(),
                kind,
                user: None,
                floors: FloorScope::Any,
            },
            now,
        )
        .unwrap()
        .outcome;
    match o {
        Outcome::Holder(h) => h,
        other => panic!("{other:?}"),
    }
}

fn issue(
    s: &Setup,
    secret: SecretSpec,
    schedule: Schedule,
    doors: Vec<DoorId>,
    kind: HolderKind,
) -> CredentialId {
    let now = s.clock.now();
    issue_in(
        &mut s.engine.write(),
        s.fleet.provisioned.org,
        now,
        secret,
        schedule,
        doors,
        kind,
    )
}

/// A permanent member PIN for `door`, straight into an engine (before a
/// fleet runs).
pub fn issue_pin_in(
    e: &mut Engine,
    org: OrgId,
    door: DoorId,
    pin: &str,
    now: Timestamp,
) -> CredentialId {
    issue_in(
        e,
        org,
        now,
        SecretSpec::Pin {
            pin: PinSpec::Manual(pin.into()),
        },
        Schedule::Permanent,
        vec![door],
        HolderKind::Member,
    )
}

/// Marks every code pending for `device` set on it, as a run before a
/// reboot left the server: the batch sent and acknowledged whole.
pub fn acked_on(e: &mut Engine, device: DeviceId, now: Timestamp) {
    let Some(batch) = e.pending_sync(device) else {
        return;
    };
    let sent = Command::SyncSent {
        device,
        version: batch.version,
    };
    e.apply(&Actor::System, sent, now).unwrap();
    let results = batch
        .set
        .iter()
        .map(|(credential, _)| *credential)
        .chain(batch.remove.iter().copied())
        .map(|credential| SyncResult {
            credential,
            failure: None,
        })
        .collect();
    e.apply(&Actor::System, Command::SyncAck { device, results }, now)
        .unwrap();
    assert!(
        e.pending_sync(device).is_none_or(|b| b.is_empty()),
        "nothing pending for {device} after its ack"
    );
}

/// A Wi-Fi lock rebooted with its cache lost, as the
/// `a_lock_that_lost_its_cache_asks_*` tests on each link start it: the
/// server shows its three codes set (the batch acked before the reboot), so
/// a delta would carry nothing and only a full resync brings them back.
pub struct ReflashedLock {
    pub engine: Arc<RwLock<Engine>>,
    pub clock: SimClock,
    pub spec: FleetSpec,
    /// Moved into `Fleet::start` by the test.
    pub provisioned: Provisioned,
    pub org: OrgId,
    pub door: DoorId,
    pub lock: DeviceId,
}

pub fn reflashed_lock(seed: u64) -> ReflashedLock {
    let engine = engine(seed);
    let clock = SimClock::starting_at(start_time());
    let spec = FleetSpec::new(seed)
        .wifi_doors(1)
        .params(DeviceParams::quiet());
    let provisioned = provision(&mut engine.write(), &spec, clock.now()).unwrap();
    let (org, door) = (provisioned.org, provisioned.doors[0].door);
    let lock = provisioned.doors[0].lock.unwrap();
    for p in ["4829", "7315", "2468"] {
        issue_pin_in(&mut engine.write(), org, door, p, clock.now());
    }
    acked_on(&mut engine.write(), lock, clock.now());
    ReflashedLock {
        engine,
        clock,
        spec,
        provisioned,
        org,
        door,
        lock,
    }
}

/// Waits until the engine has nothing left to push to `device`.
pub async fn all_codes_set(engine: &Arc<RwLock<Engine>>, device: DeviceId) {
    eventually("the server shows every code set", || {
        let e = engine.clone();
        async move { e.read().pending_sync(device).is_none_or(|b| b.is_empty()) }
    })
    .await;
}

fn issue_in(
    e: &mut Engine,
    org: OrgId,
    now: Timestamp,
    secret: SecretSpec,
    schedule: Schedule,
    doors: Vec<DoorId>,
    kind: HolderKind,
) -> CredentialId {
    let h = holder(e, org, kind, now);
    let o = e
        .apply(
            &Actor::System,
            Command::IssueCredential(Issue {
                holder: h,
                name: "Code".into(),
                secret,
                schedule,
                doors,
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
            now,
        )
        .unwrap()
        .outcome;
    match o {
        Outcome::Credential(c) => c,
        other => panic!("{other:?}"),
    }
}

/// A permanent member PIN typed by an admin.
pub fn issue_pin(s: &Setup, door: DoorId, pin: &str) -> CredentialId {
    issue(
        s,
        SecretSpec::Pin {
            pin: PinSpec::Manual(pin.into()),
        },
        Schedule::Permanent,
        vec![door],
        HolderKind::Member,
    )
}

/// A member PIN for `door` with `schedule`.
pub fn issue_pin_on(s: &Setup, door: DoorId, pin: &str, schedule: Schedule) -> CredentialId {
    issue(
        s,
        SecretSpec::Pin {
            pin: PinSpec::Manual(pin.into()),
        },
        schedule,
        vec![door],
        HolderKind::Member,
    )
}

pub fn issue_card(s: &Setup, door: DoorId, number: u64) -> CredentialId {
    issue(
        s,
        SecretSpec::Card { number },
        Schedule::Permanent,
        vec![door],
        HolderKind::Member,
    )
}

/// A one-time visitor QR key for `door`, valid for a day; returns the token.
pub fn issue_one_time_qr(s: &Setup, door: DoorId) -> (CredentialId, String) {
    let now = s.clock.now();
    let id = issue(
        s,
        SecretSpec::Qr,
        Schedule::Visitor {
            repeat: Repeat::Never,
            start: now - jiff::SignedDuration::from_hours(1),
            end: now + jiff::SignedDuration::from_hours(24),
            days: None,
            window: None,
            each_door_count: Some(1),
        },
        vec![door],
        HolderKind::Visitor,
    );
    let token = s.engine.read().token(id).unwrap();
    (id, token)
}

/// Lets the devices run for `s` seconds of (virtual) time.
pub async fn wait_s(s: f64) {
    tokio::time::sleep(std::time::Duration::from_secs_f64(s)).await;
}

/// Polls `f` every 20 ms for up to 10 s of real time.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The device's snapshot once `done` holds (polled every 20 ms; a 10 s
/// hang guard in real time).
pub async fn snapshot_when(
    fleet: &Fleet,
    device: DeviceId,
    what: &str,
    done: impl Fn(&fleetsim::devices::Snapshot) -> bool,
) -> fleetsim::devices::Snapshot {
    for _ in 0..500 {
        let s = fleet.snapshot(device).await.unwrap();
        if done(&s) {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
