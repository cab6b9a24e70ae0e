//! The lock: motor (locked / unlocked / jammed), auto-relock that waits
//! for the door to close, battery, a built-in keypad and BLE reader.
//! A Wi-Fi lock asks the engine; a Bluetooth lock decides PINs and cards
//! from its synced local cache and syncs when a phone or gateway is in
//! range (a BLE pass brings a phone, so it is checked through it).

use std::time::Duration;

use actix::prelude::*;
use rand::Rng;
use reference_server::domain::{Connectivity, CredentialId, Origin};
use reference_server::protocol::{
    CommandKind, CommandResult, EventKind, How, SimAction, SyncPush, WireCredential,
};

use super::*;
use crate::transport::Inbound;
use tokio::time::Instant;

/// Most sync batches a Bluetooth lock keeps until a phone is near.
const MAX_STASHED_SYNCS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    Locked,
    Unlocked,
    /// The motor blocked; the next run may free it.
    Jammed,
}

/// Ask the lock to run its motor open (a linked keypad or door phone).
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "DeviceOutcome")]
pub struct Actuate {
    pub how: How,
    pub credential: Option<CredentialId>,
    pub origin: Option<Origin>,
}

/// Links the door sensor of the same door (after both started).
#[derive(Clone, Message)]
#[rtype(result = "()")]
pub struct LinkSensor(pub Recipient<LockChanged>);

pub struct Lock {
    core: Core,
    connectivity: Connectivity,
    state: LockState,
    relock_after_s: f64,
    /// The pending auto-relock: its timer and when it is due. A repeated
    /// unlock moves `relock_at` on and keeps the timer, which re-arms for
    /// the rest when it fires early (no timer churn per check).
    relock_armed: bool,
    relock_at: Option<Instant>,
    door_open: bool,
    relock_when_closed: bool,
    sensor: Option<Recipient<LockChanged>>,
    stashed: Vec<SyncPush>,
}

impl Lock {
    pub fn new(mut core: Core, connectivity: Connectivity) -> Lock {
        let relock_after_s = core.params.lock.relock_after_s.sample(&mut core.rng);
        Lock {
            core,
            connectivity,
            state: LockState::Locked,
            relock_after_s,
            relock_armed: false,
            relock_at: None,
            door_open: false,
            relock_when_closed: false,
            sensor: None,
            stashed: Vec::new(),
        }
    }

    fn motor_blocks(&mut self) -> bool {
        let p = self.core.params.lock.motor_block_probability;
        p > 0.0 && self.core.rng.random_bool(p.min(1.0))
    }

    fn tell_sensor(&self, unlocked: bool) {
        if let Some(s) = &self.sensor {
            let _ = s.try_send(LockChanged { unlocked });
        }
    }

    fn actuate(
        &mut self,
        ctx: &mut Context<Self>,
        how: How,
        credential: Option<CredentialId>,
        origin: Option<Origin>,
    ) -> DeviceOutcome {
        if !self.core.actuation_allowed() {
            return DeviceOutcome::LowBattery;
        }
        battery_spent(self, ctx);
        if self.motor_blocks() {
            self.state = LockState::Jammed;
            self.core.emit(EventKind::MotorBlocked);
            return DeviceOutcome::MotorBlocked;
        }
        let was_unlocked = self.state == LockState::Unlocked;
        self.state = LockState::Unlocked;
        self.core.emit(EventKind::Unlocked {
            how,
            credential,
            origin,
        });
        if !was_unlocked {
            self.tell_sensor(true);
        }
        let delay = Duration::from_secs_f64(self.relock_after_s);
        self.relock_at = Some(Instant::now() + delay);
        if !self.relock_armed {
            self.arm_relock(ctx, delay);
        }
        DeviceOutcome::Unlocked
    }

    fn arm_relock(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        self.relock_armed = true;
        timers::run_later(ctx, delay, |act, ctx| {
            act.relock_armed = false;
            match act.relock_at {
                Some(at) if at > Instant::now() => {
                    let rest = at - Instant::now();
                    act.arm_relock(ctx, rest);
                }
                Some(_) => {
                    act.relock_at = None;
                    act.relock(ctx, How::AutoRelock);
                }
                None => {}
            }
        });
    }

    fn relock(&mut self, ctx: &mut Context<Self>, how: How) -> CommandResult {
        if self.door_open {
            // A real lock does not throw its bolt into an open door.
            self.relock_when_closed = true;
            return CommandResult::Ok;
        }
        if self.state == LockState::Locked {
            return CommandResult::Ok;
        }
        if !self.core.actuation_allowed() {
            return CommandResult::LowBattery;
        }
        battery_spent(self, ctx);
        if self.motor_blocks() {
            self.state = LockState::Jammed;
            self.core.emit(EventKind::MotorBlocked);
            return CommandResult::MotorBlocked;
        }
        self.state = LockState::Locked;
        self.core.emit(EventKind::Locked { how });
        self.tell_sensor(false);
        CommandResult::Ok
    }

    fn in_range(&mut self) {
        self.apply_stashed();
        self.core.pull_sync();
    }

    fn apply_stashed(&mut self) {
        for push in std::mem::take(&mut self.stashed) {
            self.core.apply_sync(&push);
        }
    }

    fn schedule_in_range(&mut self, ctx: &mut Context<Self>) {
        let wait = self
            .core
            .params
            .lock
            .ble_in_range_every_s
            .sample(&mut self.core.rng);
        timers::run_later(ctx, Duration::from_secs_f64(wait), |act, ctx| {
            act.in_range();
            act.schedule_in_range(ctx);
        });
    }

    pub fn state(&self) -> LockState {
        self.state
    }
}

impl HasCore for Lock {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }
    fn back_online(&mut self, _ctx: &mut Context<Self>) {
        if self.connectivity == Connectivity::Wifi {
            self.core.pull_sync();
        }
    }
}

crate::handle_fire!(Lock);

impl Actor for Lock {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        start_core(self, ctx);
        if self.connectivity == Connectivity::Ble {
            self.schedule_in_range(ctx);
        }
        // A lock powers up with an empty code store (fleetsim's devices
        // keep nothing across runs, `Core::cache_lost`): its first sync
        // asks for every code, so a server that still shows codes `set`
        // from an earlier run sends them again (a server whose codes were
        // never set just sends the pending batch). A Wi-Fi lock syncs now,
        // a Bluetooth one when a phone is first in range.
        if self.connectivity == Connectivity::Wifi {
            self.core.pull_sync();
        }
    }
}

type LockFuture =
    std::pin::Pin<Box<dyn ActorFuture<Lock, Output = Result<Presented, DeviceError>>>>;

impl Handler<Present> for Lock {
    type Result = ActorResponse<Self, Result<Presented, DeviceError>>;

    fn handle(&mut self, msg: Present, ctx: &mut Context<Self>) -> Self::Result {
        if matches!(msg.credential, WireCredential::Qr(_)) {
            return ActorResponse::reply(Err(DeviceError::NotAccepted {
                device: "lock",
                what: "QR codes",
            }));
        }
        let how = how_of(&msg.credential);
        let delay = match (&msg.credential, msg.human_timing) {
            (WireCredential::Pin(p), true) => typing_time(&mut self.core, p.len()),
            _ => Duration::ZERO,
        };
        if delay.is_zero() {
            // The load path: decided in this handler when the link answers
            // at once.
            return match self.begin(ctx, msg, how) {
                Ok(out) => ActorResponse::reply(Ok(out)),
                Err(ask) => ActorResponse::r#async(Self::ask_engine(ask, how)),
            };
        }
        ActorResponse::r#async(wait(delay).into_actor(self).then(
            move |_, act, ctx| -> LockFuture {
                match act.begin(ctx, msg, how) {
                    Ok(out) => Box::pin(fut::ready(Ok(out))),
                    Err(ask) => Box::pin(Self::ask_engine(ask, how)),
                }
            },
        ))
    }
}

impl Lock {
    /// Decides a presentation now if it can (local cache, lockout, an
    /// in-process engine); otherwise gives back the question to ask.
    #[allow(clippy::result_large_err)] // moved back by value; boxing would allocate per check
    fn begin(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Present,
        how: How,
    ) -> Result<Presented, Decide> {
        let local = self.connectivity == Connectivity::Ble;
        if local && matches!(msg.credential, WireCredential::Ble(_)) {
            // The phone that brings the pass is a way to the cloud.
            self.in_range();
        }
        match self.core.decide_start(msg.credential, msg.floor, local) {
            Decide::Done(j) => Ok(self.finish(ctx, how, j, None, 0, true)),
            ask => {
                let (response, res) = decide_now(ask)?;
                let latency = res.as_ref().map_or(0, |c| c.latency_us);
                let j = self.core.judge(&res);
                Ok(self.finish(ctx, how, j, response, latency, false))
            }
        }
    }

    /// Asks the engine over a network transport, then finishes.
    fn ask_engine(
        ask: Decide,
        how: How,
    ) -> impl ActorFuture<Self, Output = Result<Presented, DeviceError>> {
        fut::wrap_future::<_, Self>(run_decide(ask, None)).map(
            move |(response, res, _), act, ctx| {
                let latency = res.as_ref().map_or(0, |c| c.latency_us);
                let j = act.core.judge(&res);
                Ok(act.finish(ctx, how, j, response, latency, false))
            },
        )
    }
}

impl Lock {
    fn finish(
        &mut self,
        ctx: &mut Context<Self>,
        how: How,
        j: Judged,
        response: Option<reference_server::protocol::AuthResponse>,
        latency_us: u64,
        decided_locally: bool,
    ) -> Presented {
        let outcome = match self.core.settle(how, j) {
            Ok((c, o)) => self.actuate(ctx, how, c, o),
            Err(o) => o,
        };
        Presented {
            response,
            outcome,
            latency_us,
            decided_locally,
        }
    }
}

impl Handler<Actuate> for Lock {
    type Result = MessageResult<Actuate>;
    fn handle(&mut self, m: Actuate, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.actuate(ctx, m.how, m.credential, m.origin))
    }
}

impl Handler<Inbound> for Lock {
    type Result = ();
    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        if !self.core.online() {
            // Not reachable: the engine resends later.
            if matches!(msg, Inbound::Sync(_)) {
                self.core.link.sync_dropped();
            }
            return;
        }
        match msg {
            Inbound::Sync(push) => match self.connectivity {
                // Over HTTP a batch is the answer to the lock's own fetch
                // (it asked: a phone or gateway is near): applied now.
                Connectivity::Wifi => self.core.apply_sync(&push),
                Connectivity::Ble if matches!(self.core.link, Link::Http(_)) => {
                    self.core.apply_sync(&push)
                }
                Connectivity::Ble => {
                    if self.stashed.len() < MAX_STASHED_SYNCS {
                        self.stashed.push(push);
                    }
                }
            },
            Inbound::Command(cmd) => {
                let result = match cmd.command {
                    CommandKind::Open => self.open_by(ctx, How::Remote),
                    CommandKind::Lock => self.relock(ctx, How::Remote),
                    CommandKind::Simulate => match simulated(&cmd) {
                        Ok(action) => self.simulate(ctx, action),
                        Err(r) => r,
                    },
                };
                ack_command(&self.core, &cmd, result);
            }
        }
    }
}

impl Lock {
    /// Runs the motor open (a remote or a manual unlock).
    fn open_by(&mut self, ctx: &mut Context<Self>, how: How) -> CommandResult {
        match self.actuate(ctx, how, None, None) {
            DeviceOutcome::Unlocked => CommandResult::Ok,
            DeviceOutcome::LowBattery => CommandResult::LowBattery,
            _ => CommandResult::MotorBlocked,
        }
    }

    /// A sandbox action: the shared ones (`simulate_shared`), then the
    /// lock's own, each as the lock would live it: a manual lock or unlock
    /// runs the motor (and may block), a jam blocks it, its built-in door
    /// sensor sees the door (a closed door lets a waiting relock go).
    fn simulate(&mut self, ctx: &mut Context<Self>, action: &SimAction) -> CommandResult {
        if let Some(r) = simulate_shared(self, ctx, action) {
            return r;
        }
        match action {
            SimAction::Lock => return self.relock(ctx, How::Manual),
            SimAction::Unlock => return self.open_by(ctx, How::Manual),
            SimAction::Jam => {
                self.state = LockState::Jammed;
                self.core.emit(EventKind::MotorBlocked);
            }
            SimAction::DoorOpen | SimAction::DoorForcedOpen | SimAction::DoorLeftOpen => {
                self.door_open = true;
                self.core.emit(match action {
                    SimAction::DoorOpen => EventKind::DoorOpened,
                    SimAction::DoorForcedOpen => EventKind::DoorForcedOpen,
                    _ => EventKind::DoorAjar,
                });
            }
            SimAction::DoorClose => {
                self.core.emit(EventKind::DoorClosed);
                self.handle(DoorChanged { open: false }, ctx);
            }
            _ => return CommandResult::Unsupported,
        }
        CommandResult::Ok
    }
}

impl Handler<DoorChanged> for Lock {
    type Result = ();
    fn handle(&mut self, m: DoorChanged, ctx: &mut Context<Self>) {
        self.door_open = m.open;
        if !m.open && self.relock_when_closed {
            self.relock_when_closed = false;
            self.relock(ctx, How::AutoRelock);
        }
    }
}

impl Handler<LinkSensor> for Lock {
    type Result = ();
    fn handle(&mut self, m: LinkSensor, _ctx: &mut Context<Self>) {
        self.sensor = Some(m.0);
    }
}

impl Handler<Control> for Lock {
    type Result = ();
    fn handle(&mut self, m: Control, ctx: &mut Context<Self>) {
        match m {
            Control::GoOffline { for_s } => go_offline(self, ctx, for_s),
            Control::BeginOfflineSpells => begin_offline_spells(self, ctx),
            Control::GoOnline => go_online(self, ctx),
            Control::SyncNow => {
                if self.core.online() {
                    // A phone or gateway is near: what waited is applied,
                    // and the lock asks for what is still pending.
                    self.apply_stashed();
                    self.core.request_sync();
                }
            }
        }
    }
}

impl Handler<GetSnapshot> for Lock {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let state = match self.state {
            LockState::Locked => "locked",
            LockState::Unlocked => "unlocked",
            LockState::Jammed => "jammed",
        };
        let mut s = self.core.snapshot(state);
        s.relock_after_s = Some(self.relock_after_s);
        MessageResult(s)
    }
}
