//! Code actions during a run (`code_create`, `code_change`, `code_revoke`)
//! and sync storms (`sync_storm`).
//!
//! A code action is an admin (the fleet's owner) changing a door's PINs
//! through the engine, with the same [`Book`] provisioning uses (so over
//! http and mqtt the command reaches the embedded server through the
//! [`Forwarder`], in order, and ids stay in step). The change then has to
//! reach the door's devices (domain: per (code, lock) `pending -> set`,
//! `removing -> removed`): Wi-Fi devices get it pushed, Bluetooth ones at
//! the next visit of a phone or gateway, and over http the readers fetch
//! their pending codes (`GET /v1/devices/{device}/sync`, asked every
//! second) and acknowledge them (`POST`). The action waits,
//! bounded, until every device of the door confirmed (the engine's
//! placements of the codes concerned say so).
//!
//! The oracle never judges a code while its change is in flight: the codes
//! concerned are frozen (no attempt picks them) from the command until the
//! confirmation, and a code is only acted on when no attempt on it is
//! running. Once confirmed, a new code is valid like any other, and a
//! changed-away or revoked one is denied when typed: `wrong_pin` where the
//! door's locks held it (the engine drops it from its lookup once every
//! lock removed it), `revoked` at doors whose readers ask the server (no
//! lock to remove it from). A failed or unconfirmed action leaves its codes
//! frozen: what they open then differs from device to device.

use reference_server::domain::{
    Actor, CredentialId, DenyReason, DoorId, FloorScope, Pin, PinRuleError, Schedule, SyncFailure,
    SyncState,
};
use reference_server::engine::{Command, Issue, Outcome as EngineOutcome, PinSpec, SecretSpec};
use reference_server::EngineError;

use super::super::oracle::{Truth, Validity};
use super::super::platform::CodeSync;
use super::*;
use crate::metrics::{CODE_SYNC_STORED, CODE_SYNC_UNFINISHED};

/// Longest a code action waits for the door's Wi-Fi devices (and the
/// server over http/mqtt) to confirm, in seconds.
const CODE_SYNC_WAIT_S: u64 = 60;
/// Draws of a new PIN the engine may refuse as in use (a lock's fallback
/// pool holds codes the oracle does not know) before the action gives up.
const MAX_PIN_DRAWS: u32 = 8;
/// How often an action looks at the engine right after it was sent or a
/// phone passed (when the devices answer)...
const POLL_MS: u64 = 100;
/// ... for how long, in seconds ...
const FAST_POLL_S: u64 = 5;
/// ... and then (or at the next phone's pass, for Bluetooth doors: a
/// long virtual run must not wake every 100 ms for hours).
const SLOW_POLL_MS: u64 = 1_000;
/// How often in-process Wi-Fi devices are pushed what is still pending.
const PUSH_EVERY_MS: u64 = 1_000;

/// One planned code action.
pub(super) struct CodeJob {
    action: Action,
    /// Index into `Ctx::doors`.
    door: usize,
    change: Change,
    /// Credentials whose placements must settle (set, or removed).
    watch: Vec<CredentialId>,
    /// Server transports: the command reached the server (true) or not.
    forwarded: Vec<tokio::sync::oneshot::Receiver<bool>>,
    /// When a phone or gateway first passes the door's Bluetooth devices.
    ble_first_visit: Option<Duration>,
}

/// What the action does to the oracle's truth.
enum Change {
    Create { new: usize },
    Replace { old: usize, new: usize },
    Revoke { old: usize },
}

/// How a code action's sync ended.
enum Settled {
    Waiting,
    Stored,
    Failed(&'static str),
}

fn failure_name(f: SyncFailure) -> &'static str {
    match f {
        SyncFailure::LockFull => "lock_full",
        SyncFailure::DuplicateOnDevice => "duplicate_on_device",
        SyncFailure::TimedOut => "timed_out",
        SyncFailure::Offline => "offline",
    }
}

/// Where the engine of record stands on the watched codes (`None`: a
/// code it does not have): every live code set on every device, every
/// replaced or revoked one removed.
fn settled(codes: &[Option<CodeSync>]) -> Settled {
    let mut waiting = false;
    for c in codes {
        let Some(c) = c else {
            return Settled::Failed("refused");
        };
        for state in &c.states {
            match (*state, c.gone) {
                (SyncState::Failed(f), _) => return Settled::Failed(failure_name(f)),
                (SyncState::Set, false) | (SyncState::Removed, true) => {}
                _ => waiting = true,
            }
        }
    }
    if waiting {
        Settled::Waiting
    } else {
        Settled::Stored
    }
}

/// A PIN for `door` the truth table does not know (so it cannot clash with
/// a live, frozen or retired code), obeying the shape rules.
fn new_pin_text(ctx: &Ctx, rng: &mut ChaCha8Rng, o: &Oracle, door: DoorId) -> String {
    let s = &ctx.scenario;
    let six = s.fleet.six_digit_pins && rng.random::<f64>() < s.credentials.six_digit_share;
    let len = if six { 6 } else { 4 };
    loop {
        let t = format!("{:0len$}", rng.random_range(0..10u64.pow(len as u32)));
        let shaped = Pin::parse(&t).is_ok_and(|p| p.check_shape().is_ok());
        if shaped && !o.pin_known(door, &t) {
            return t;
        }
    }
}

/// The code-storing devices of a door (locks and keypads).
fn storing(d: &DoorInfo) -> Vec<DeviceId> {
    [d.plan.lock, d.plan.keypad].into_iter().flatten().collect()
}

fn is_ble(d: &DoorInfo) -> bool {
    matches!(d.plan.kit, crate::devices::fleet::DoorKit::BleApartment)
}

/// How often a phone or gateway passes a Bluetooth lock: its device
/// group's `sync_every`.
fn ble_visit_every(s: &Scenario, d: &DoorInfo) -> Duration {
    s.fleet
        .devices
        .get(d.plan.group)
        .map_or(Duration::from_secs(30 * 60), |g| g.behaviour.sync_every)
        .max(Duration::from_secs(1))
}

/// Plans a code action at a random door of `site` and applies its command
/// to the engine (and queues it for the server). `None`: nothing to act on,
/// or the engine refused (counted as the arrival's drop reason).
pub(super) fn plan(
    ctx: &Ctx,
    site: u32,
    rng: &mut ChaCha8Rng,
    now: Timestamp,
    action: Action,
) -> Option<CodeJob> {
    let skip = |why: DropReason| {
        ctx.shared
            .borrow_mut()
            .arrivals
            .dropped(action.as_str(), why);
        None
    };
    let doors = ctx.sites[site as usize].doors_taking(TruthKind::Pin);
    let Some(di) = choose(rng, doors) else {
        return skip(DropReason::NothingToPresent);
    };
    let door = &ctx.doors[di];
    let mut sh = ctx.shared.borrow_mut();
    let o = &mut sh.oracle;
    let planned = code_target(o, rng, door, action).and_then(|target| {
        let (out, text, forwarded) = apply_code(ctx, o, rng, door, action, target, now)?;
        let (change, watch) = record_change(o, door, action, target, out, &text)?;
        Ok((change, watch, forwarded))
    });
    let (change, watch, forwarded) = match planned {
        Ok(p) => p,
        Err(why) => {
            drop(sh);
            return skip(why);
        }
    };
    let every = ble_visit_every(&ctx.scenario, door);
    let ble_first_visit =
        is_ble(door).then(|| Duration::from_secs_f64(every.as_secs_f64() * rng.random::<f64>()));
    sh.arrivals.ran(action.as_str());
    sh.code_in_flight += 1;
    Some(CodeJob {
        action,
        door: di,
        change,
        watch,
        forwarded,
        ble_first_visit,
    })
}

/// The code a change or revoke acts on (`None` for a create): one nobody
/// is typing right now, and no guest's (a guest's code belongs to the
/// stay: the host does not change it).
fn code_target(
    o: &Oracle,
    rng: &mut ChaCha8Rng,
    door: &DoorInfo,
    action: Action,
) -> Result<Option<usize>, DropReason> {
    if action == Action::CodeCreate {
        return Ok(None);
    }
    let c: Vec<usize> = door
        .pins
        .iter()
        .chain(o.extra_pins(door.door))
        .copied()
        .filter(|id| o.live(*id) && o.reserved(*id, door.door) == 0)
        .filter(|id| {
            o.credential(*id).is_some() && !matches!(o.truth(*id).validity, Validity::Stay { .. })
        })
        .collect();
    choose(rng, &c)
        .map(Some)
        .ok_or(DropReason::NothingToPresent)
}

/// The engine's answer to a code action, the PIN it set, and the server's
/// confirmations to wait for.
type Applied = (
    EngineOutcome,
    String,
    Vec<tokio::sync::oneshot::Receiver<bool>>,
);

/// Applies the code action's command as the fleet's owner, drawing a new
/// PIN again while the engine says it is taken by a code the oracle does
/// not know, and forwards what was applied to the server.
fn apply_code(
    ctx: &Ctx,
    o: &Oracle,
    rng: &mut ChaCha8Rng,
    door: &DoorInfo,
    action: Action,
    target: Option<usize>,
    now: Timestamp,
) -> Result<Applied, DropReason> {
    let owner = Actor::User(ctx.owner);
    let mut e = ctx.engine.write();
    let mut book = Book::new(&mut e, ctx.platform.served()).acting_as(owner);
    let mut applied = None;
    // A revoke needs no new PIN: one try.
    let draws = if action == Action::CodeRevoke {
        1
    } else {
        MAX_PIN_DRAWS
    };
    for _ in 0..draws {
        let text = if action == Action::CodeRevoke {
            String::new()
        } else {
            new_pin_text(ctx, rng, o, door.door)
        };
        let pin = PinSpec::Manual(text.clone());
        let cmd = match (action, target.and_then(|t| o.credential(t))) {
            (Action::CodeRevoke, Some(credential)) => Command::RevokeCredential { credential },
            (Action::CodeChange, Some(credential)) => Command::ChangePin { credential, pin },
            (Action::CodeCreate, _) => Command::IssueCredential(Issue {
                holder: door.member,
                name: "Code".into(),
                secret: SecretSpec::Pin { pin },
                schedule: Schedule::Permanent,
                doors: vec![door.door],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
            _ => break,
        };
        match book.apply(cmd, now) {
            Ok(out) => {
                applied = Some((out, text));
                break;
            }
            // Taken by a code the oracle does not know: draw again.
            Err(provision::ProvisionError::Engine(EngineError::Pin(PinRuleError::InUse))) => {}
            Err(_) => break,
        }
    }
    let (out, text) = applied.ok_or(DropReason::ServerRefused)?;
    let forwarded = ctx.platform.forward(owner, book.take_log());
    Ok((out, text, forwarded))
}

/// The oracle learns the change: a created code, a changed one (the new
/// text, the old code's terms) or a revoked one, each frozen until the
/// door's devices confirm it; returns the change and the credentials to
/// watch.
fn record_change(
    o: &mut Oracle,
    door: &DoorInfo,
    action: Action,
    target: Option<usize>,
    out: EngineOutcome,
    text: &str,
) -> Result<(Change, Vec<CredentialId>), DropReason> {
    let new_truth = |o: &mut Oracle, like: Option<usize>, cred: CredentialId| {
        let t = match like {
            Some(old) => {
                let old = o.truth(old);
                Truth {
                    text: text.to_string(),
                    ..old.clone()
                }
            }
            None => Truth {
                kind: TruthKind::Pin,
                text: text.to_string(),
                doors: vec![door.door],
                validity: Validity::Always,
                per_door_uses: None,
                total_uses: None,
                label: "created",
            },
        };
        let id = o.add(t);
        o.set_credential(id, cred);
        o.freeze(id);
        id
    };
    Ok(match (action, target, out) {
        (Action::CodeCreate, None, EngineOutcome::Credential(c)) => (
            Change::Create {
                new: new_truth(o, None, c),
            },
            vec![c],
        ),
        (Action::CodeChange, Some(old), EngineOutcome::Credential(c)) => {
            o.freeze(old);
            let old_cred = o.credential(old).unwrap_or(c);
            let new = new_truth(o, Some(old), c);
            (Change::Replace { old, new }, vec![c, old_cred])
        }
        (Action::CodeRevoke, Some(old), _) => {
            o.freeze(old);
            let cred = o.credential(old).into_iter().collect();
            (Change::Revoke { old }, cred)
        }
        _ => return Err(DropReason::ServerRefused),
    })
}

/// Waits for the door's devices to confirm `job`, then tells the oracle.
pub(super) async fn run(ctx: Rc<Ctx>, mut job: CodeJob) {
    let door = ctx.doors[job.door].clone();
    let mut result = Settled::Waiting;
    for rx in std::mem::take(&mut job.forwarded) {
        if !rx.await.unwrap_or(false) {
            result = Settled::Failed("refused");
        }
    }
    let devices = storing(&door);
    let every = ble_visit_every(&ctx.scenario, &door);
    let started = Instant::now();
    let mut wait = Duration::from_secs(CODE_SYNC_WAIT_S);
    if job.ble_first_visit.is_some() {
        // Two visits of a phone or gateway: a changed code's old PIN is
        // removed only after the new one is confirmed.
        wait += every * 2;
    }
    let mut next_visit = job.ble_first_visit.map(|d| started + d);
    let mut next_push = started;
    let mut last_kick = started;
    let mut unfinished = false;
    while matches!(result, Settled::Waiting) {
        // An external target's HTTP readers are confirmed below, and only
        // what the server says counts.
        result = match ctx.platform.code_sync(&ctx.engine, &job.watch).await {
            Ok(Some(codes)) => settled(&codes),
            Ok(None) => Settled::Waiting,
            Err(e) => {
                tracing::warn!(error = %e, "the target refused a sync state's reading");
                Settled::Failed("refused")
            }
        };
        if !matches!(result, Settled::Waiting) {
            break;
        }
        let now = Instant::now();
        if ctx.shared.borrow().stopping {
            unfinished = true;
            break;
        }
        if now - started >= wait {
            result = Settled::Failed("not_confirmed");
            break;
        }
        // In process the run pushes, an embedded server's HTTP readers
        // fetch, an external target's readers are confirmed by the run
        // (the devices sync too when a storm asks them).
        let due = now >= next_push;
        match ctx.platform.nudge_sync(&ctx.fleet, &devices, due).await {
            Ok(Some(true)) => {
                result = Settled::Stored;
                break;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the target refused a sync confirmation");
                result = Settled::Failed("refused");
                break;
            }
        }
        if due {
            next_push = now + Duration::from_millis(PUSH_EVERY_MS);
        }
        if next_visit.is_some_and(|v| now >= v) {
            for d in &devices {
                let _ = ctx.fleet.control(*d, crate::devices::Control::SyncNow);
            }
            next_visit = Some(now + every);
            last_kick = now;
        }
        let pause = if now - last_kick < Duration::from_secs(FAST_POLL_S) {
            Duration::from_millis(POLL_MS)
        } else {
            match next_visit {
                Some(v) => v.saturating_duration_since(now),
                None => Duration::from_millis(SLOW_POLL_MS),
            }
            .min((started + wait).saturating_duration_since(now))
            .max(Duration::from_millis(POLL_MS))
        };
        // The end of the run wakes a long pause.
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = ctx.stop.notified() => {}
        }
    }
    let mut sh = ctx.shared.borrow_mut();
    sh.code_in_flight = sh.code_in_flight.saturating_sub(1);
    let outcome = match result {
        _ if unfinished => CODE_SYNC_UNFINISHED,
        Settled::Stored => {
            let o = &mut sh.oracle;
            match job.change {
                Change::Create { new } => o.thaw(new, door.door),
                Change::Replace { old, new } => {
                    o.thaw(new, door.door);
                    o.retire(old, door.door, DenyReason::WrongPin);
                }
                Change::Revoke { old } => {
                    // Removed from every lock, the engine no longer finds
                    // the code; with no lock at the door it still finds it,
                    // revoked.
                    let reason = if devices.is_empty() {
                        DenyReason::Revoked
                    } else {
                        DenyReason::WrongPin
                    };
                    o.retire(old, door.door, reason);
                }
            }
            CODE_SYNC_STORED
        }
        Settled::Failed(why) => why,
        Settled::Waiting => CODE_SYNC_UNFINISHED,
    };
    tracing::debug!(action = job.action.as_str(), outcome, "code action");
    sh.recorder.code_sync(outcome);
}

/// A sync storm: every code-storing device of `site` asks for its pending
/// codes at once. In-process the Wi-Fi devices are pushed and the
/// Bluetooth ones pull (a phone near each); over MQTT each device sends its
/// sync request (status "online") and the gateway answers them all; over
/// HTTP each device fetches its pending batch (`GET .../sync`) and acks it.
pub(super) fn sync_storm(ctx: &Ctx, site: u32) {
    let action = Action::SyncStorm.as_str();
    let mut wifi = Vec::new();
    let mut asked = Vec::new();
    for i in &ctx.site_doors[site as usize] {
        let d = &ctx.doors[*i];
        for id in storing(d) {
            if ctx.platform.pushes_in_process() && !is_ble(d) {
                wifi.push(id);
            } else {
                asked.push(id);
            }
        }
    }
    ctx.fleet.push_sync_to(&wifi);
    for id in asked {
        // A full mailbox drops the request: the device asks again later.
        let _ = ctx.fleet.control(id, crate::devices::Control::SyncNow);
    }
    ctx.shared.borrow_mut().arrivals.ran(action);
}
