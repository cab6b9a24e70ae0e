//! The door sensor: open, closed, ajar (open past a threshold), forced
//! open (opened while locked). It also plays the person at the door: after
//! an unlock someone opens the door 1-3 s later and closes it 3-10 s after
//! that (or leaves it open). It tells the lock, which relocks only once the
//! door is closed.

use std::time::Duration;

use actix::prelude::*;
use rand::Rng;
use reference_server::protocol::{CommandKind, CommandResult, EventKind, SimAction};

use super::*;

#[derive(Clone, Message)]
#[rtype(result = "()")]
pub struct LinkLock(pub Recipient<DoorChanged>);

pub struct DoorSensor {
    core: Core,
    lock: Option<Recipient<DoorChanged>>,
    open: bool,
    locked: bool,
    /// Counts openings, so a timer from an earlier opening does nothing.
    opening: u64,
}

impl DoorSensor {
    pub fn new(core: Core) -> DoorSensor {
        DoorSensor {
            core,
            lock: None,
            open: false,
            locked: true,
            opening: 0,
        }
    }

    fn tell_lock(&self, open: bool) {
        if let Some(l) = &self.lock {
            let _ = l.try_send(DoorChanged { open });
        }
    }

    fn open_door(&mut self, ctx: &mut Context<Self>) {
        if self.open {
            return;
        }
        self.open = true;
        self.opening += 1;
        self.core.emit(EventKind::DoorOpened);
        if self.locked {
            self.core.emit(EventKind::DoorForcedOpen);
        }
        self.tell_lock(true);
        let p = self.core.params.door.clone();
        let open_s = if p.left_open_probability > 0.0
            && self.core.rng.random_bool(p.left_open_probability.min(1.0))
        {
            p.left_open_s.sample(&mut self.core.rng)
        } else {
            p.closes_after_s.sample(&mut self.core.rng)
        };
        let opening = self.opening;
        if open_s > p.ajar_after_s {
            timers::run_later(
                ctx,
                Duration::from_secs_f64(p.ajar_after_s),
                move |act, _| {
                    if act.open && act.opening == opening {
                        act.core.emit(EventKind::DoorAjar);
                    }
                },
            );
        }
        timers::run_later(ctx, Duration::from_secs_f64(open_s), move |act, _| {
            if act.open && act.opening == opening {
                act.open = false;
                act.core.emit(EventKind::DoorClosed);
                act.tell_lock(false);
            }
        });
    }

    fn schedule_forced(&mut self, ctx: &mut Context<Self>) {
        let per_day = self.core.params.door.forced_open_per_day;
        if per_day <= 0.0 {
            return;
        }
        let wait = exponential(86_400.0 / per_day, &mut self.core.rng);
        timers::run_later(ctx, Duration::from_secs_f64(wait), |act, ctx| {
            if act.locked && !act.open {
                act.open_door(ctx);
            }
            act.schedule_forced(ctx);
        });
    }
}

impl HasCore for DoorSensor {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }
}

crate::handle_fire!(DoorSensor);

impl Actor for DoorSensor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        start_core(self, ctx);
        self.schedule_forced(ctx);
    }
}

impl Handler<LockChanged> for DoorSensor {
    type Result = ();
    fn handle(&mut self, m: LockChanged, ctx: &mut Context<Self>) {
        self.locked = !m.unlocked;
        if !m.unlocked || self.open {
            return;
        }
        let p = &self.core.params.door;
        let (prob, after) = (p.open_probability, p.opens_after_s);
        if prob > 0.0 && self.core.rng.random_bool(prob.min(1.0)) {
            let wait = after.sample(&mut self.core.rng);
            timers::run_later(ctx, Duration::from_secs_f64(wait), |act, ctx| {
                // The person opens only if it is still unlocked.
                if !act.locked {
                    act.open_door(ctx);
                }
            });
        }
    }
}

impl Handler<LinkLock> for DoorSensor {
    type Result = ();
    fn handle(&mut self, m: LinkLock, _ctx: &mut Context<Self>) {
        self.lock = Some(m.0);
    }
}

impl Handler<Control> for DoorSensor {
    type Result = ();
    fn handle(&mut self, m: Control, ctx: &mut Context<Self>) {
        match m {
            Control::GoOffline { for_s } => go_offline(self, ctx, for_s),
            Control::BeginOfflineSpells => begin_offline_spells(self, ctx),
            Control::GoOnline => go_online(self, ctx),
            Control::SyncNow => {}
        }
    }
}

impl Handler<Present> for DoorSensor {
    type Result = Result<Presented, DeviceError>;
    fn handle(&mut self, _: Present, _ctx: &mut Context<Self>) -> Self::Result {
        Err(DeviceError::NotAccepted {
            device: "door sensor",
            what: "credentials",
        })
    }
}

impl Handler<crate::transport::Inbound> for DoorSensor {
    type Result = ();
    fn handle(&mut self, msg: crate::transport::Inbound, ctx: &mut Context<Self>) {
        use crate::transport::Inbound;
        match msg {
            Inbound::Command(cmd) if cmd.command == CommandKind::Simulate && self.core.online() => {
                let result = match simulated(&cmd) {
                    Ok(action) => self.simulate(ctx, action),
                    Err(r) => r,
                };
                ack_command(&self.core, &cmd, result);
            }
            _ => {}
        }
    }
}

impl DoorSensor {
    /// A sandbox action: the shared ones, then the door as the sensor
    /// sees it (not the person of `open_door`: nobody closes it later).
    fn simulate(&mut self, ctx: &mut Context<Self>, action: &SimAction) -> CommandResult {
        if let Some(r) = simulate_shared(self, ctx, action) {
            return r;
        }
        let (open, kind) = match action {
            SimAction::DoorOpen => (true, EventKind::DoorOpened),
            SimAction::DoorForcedOpen => (true, EventKind::DoorForcedOpen),
            SimAction::DoorLeftOpen => (true, EventKind::DoorAjar),
            SimAction::DoorClose => (false, EventKind::DoorClosed),
            _ => return CommandResult::Unsupported,
        };
        // Timers of an earlier opening find another number and do nothing.
        self.opening += 1;
        self.core.emit(kind);
        if open != self.open {
            self.open = open;
            self.tell_lock(open);
        }
        CommandResult::Ok
    }
}

impl Handler<GetSnapshot> for DoorSensor {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.core
                .snapshot(if self.open { "open" } else { "closed" }),
        )
    }
}
