//! The door phone: reads QR codes, cards and PINs, forwards them to the
//! engine and waits at most its reader timeout (about 200 ms), then drives
//! its door relay (its own, or the linked lock's motor) and calls the lift
//! to the floor asked for. Mains powered: no battery.

use std::time::Duration;

use actix::prelude::*;
use reference_server::protocol::{EventKind, How, WireCredential};

use super::lock::{Actuate, Lock};
use super::*;
use crate::transport::Inbound;
use reference_server::protocol::{CommandKind, CommandResult};
use tokio::time::Instant;

pub struct DoorPhone {
    core: Core,
    /// A lock the relay drives; `None`: the phone's own door relay.
    lock: Option<Addr<Lock>>,
    sensor: Option<Recipient<LockChanged>>,
    /// The energized relay: its timer and when it drops. A grant while
    /// energized moves `relay_until` on and keeps the timer (it re-arms
    /// for the rest when it fires early).
    relay_armed: bool,
    relay_until: Option<Instant>,
    lift_calls: u64,
}

/// Links the door sensor of the phone's door.
#[derive(Clone, Message)]
#[rtype(result = "()")]
pub struct LinkPhoneSensor(pub Recipient<LockChanged>);

impl DoorPhone {
    pub fn new(core: Core, lock: Option<Addr<Lock>>) -> DoorPhone {
        DoorPhone {
            core,
            lock,
            sensor: None,
            relay_armed: false,
            relay_until: None,
            lift_calls: 0,
        }
    }

    /// Energizes the phone's own relay for `relay_open_s`.
    fn pulse_relay(
        &mut self,
        ctx: &mut Context<Self>,
        how: How,
        credential: Option<reference_server::domain::CredentialId>,
        origin: Option<reference_server::domain::Origin>,
    ) -> DeviceOutcome {
        let fresh = !self.relay_armed;
        self.core.emit(EventKind::Unlocked {
            how,
            credential,
            origin,
        });
        let open = Duration::from_secs_f64(self.core.params.door_phone.relay_open_s.max(0.0));
        self.relay_until = Some(Instant::now() + open);
        if fresh {
            if let Some(s) = &self.sensor {
                let _ = s.try_send(LockChanged { unlocked: true });
            }
            self.arm_relay(ctx, open);
        }
        DeviceOutcome::Unlocked
    }

    fn arm_relay(&mut self, ctx: &mut Context<Self>, after: Duration) {
        self.relay_armed = true;
        timers::run_later(ctx, after, |act, ctx| {
            let now = Instant::now();
            match act.relay_until {
                Some(until) if until > now => act.arm_relay(ctx, until - now),
                _ => {
                    act.relay_armed = false;
                    act.relay_until = None;
                    act.core.emit(EventKind::Locked {
                        how: How::AutoRelock,
                    });
                    if let Some(s) = &act.sensor {
                        let _ = s.try_send(LockChanged { unlocked: false });
                    }
                }
            }
        });
    }
}

impl HasCore for DoorPhone {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }
}

crate::handle_fire!(DoorPhone);

impl Actor for DoorPhone {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        start_core(self, ctx);
    }
}

impl Handler<Present> for DoorPhone {
    type Result = ActorResponse<Self, Result<Presented, DeviceError>>;

    fn handle(&mut self, msg: Present, ctx: &mut Context<Self>) -> Self::Result {
        if matches!(msg.credential, WireCredential::Ble(_)) {
            return ActorResponse::reply(Err(DeviceError::NotAccepted {
                device: "door phone",
                what: "BLE passes",
            }));
        }
        let how = how_of(&msg.credential);
        let delay = match (&msg.credential, msg.human_timing) {
            (WireCredential::Pin(p), true) => typing_time(&mut self.core, p.len()),
            _ => Duration::ZERO,
        };
        let floor = msg.floor;
        if delay.is_zero() {
            // The load path: answered in the handler when the engine is
            // in-process and the phone drives its own relay.
            return match self.begin(ctx, msg.credential, floor, how) {
                Relayed::Now(r) => ActorResponse::reply(r),
                Relayed::Later(f) => ActorResponse::r#async(f),
            };
        }
        ActorResponse::r#async(wait(delay).into_actor(self).then(
            move |_, act, ctx| -> PhoneFuture {
                match act.begin(ctx, msg.credential, floor, how) {
                    Relayed::Now(r) => Box::pin(fut::ready(r)),
                    Relayed::Later(f) => f,
                }
            },
        ))
    }
}

/// A phone's answer: now, or once the engine or the linked lock answered.
enum Relayed {
    Now(Result<Presented, DeviceError>),
    Later(PhoneFuture),
}

impl DoorPhone {
    fn begin(
        &mut self,
        ctx: &mut Context<Self>,
        credential: WireCredential,
        floor: Option<reference_server::domain::FloorId>,
        how: How,
    ) -> Relayed {
        let timeout_ms = self.core.params.door_phone.reader_timeout_ms;
        match self.core.decide_start(credential, floor, false) {
            Decide::Done(j) => {
                let settled = self.core.settle(how, j);
                self.relay(ctx, settled, how, floor, None, 0, true)
            }
            ask => match decide_now(ask) {
                Ok((response, res)) => {
                    let latency = res.as_ref().map_or(0, |c| c.latency_us);
                    let j = self.core.judge(&res);
                    let settled = self.core.settle(how, j);
                    self.relay(ctx, settled, how, floor, response, latency, false)
                }
                Err(ask) => Relayed::Later(Box::pin(
                    fut::wrap_future::<_, Self>(run_decide(ask, Some(timeout_ms))).then(
                        move |(response, res, _), act, ctx| -> PhoneFuture {
                            let latency = res.as_ref().map_or(0, |c| c.latency_us);
                            let j = act.core.judge(&res);
                            let settled = act.core.settle(how, j);
                            match act.relay(ctx, settled, how, floor, response, latency, false) {
                                Relayed::Now(r) => Box::pin(fut::ready(r)),
                                Relayed::Later(f) => f,
                            }
                        },
                    ),
                )),
            },
        }
    }
}

type Settled = Result<
    (
        Option<reference_server::domain::CredentialId>,
        Option<reference_server::domain::Origin>,
    ),
    DeviceOutcome,
>;

type PhoneFuture =
    std::pin::Pin<Box<dyn ActorFuture<DoorPhone, Output = Result<Presented, DeviceError>>>>;

impl DoorPhone {
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        ctx: &mut Context<Self>,
        settled: Settled,
        how: How,
        floor: Option<reference_server::domain::FloorId>,
        response: Option<reference_server::protocol::AuthResponse>,
        latency_us: u64,
        decided_locally: bool,
    ) -> Relayed {
        let done = move |outcome| Presented {
            response,
            outcome,
            latency_us,
            decided_locally,
        };
        let (credential, origin) = match settled {
            Err(o) => return Relayed::Now(Ok(done(o))),
            Ok(x) => x,
        };
        if floor.is_some() {
            self.lift_calls += 1;
        }
        match self.lock.clone() {
            Some(lock) => Relayed::Later(Box::pin(
                async move {
                    lock.send(Actuate {
                        how,
                        credential,
                        origin,
                    })
                    .await
                    .map(done)
                    .map_err(|_| DeviceError::Stopped)
                }
                .into_actor(self),
            )),
            None => {
                let outcome = self.pulse_relay(ctx, how, credential, origin);
                Relayed::Now(Ok(done(outcome)))
            }
        }
    }
}

impl Handler<LinkPhoneSensor> for DoorPhone {
    type Result = ();
    fn handle(&mut self, m: LinkPhoneSensor, _ctx: &mut Context<Self>) {
        self.sensor = Some(m.0);
    }
}

impl Handler<Inbound> for DoorPhone {
    type Result = ();
    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        // Server mode: the phone stores no codes; Open and Lock go to the
        // lock. It answers sandbox actions.
        match msg {
            Inbound::Command(cmd) if cmd.command == CommandKind::Simulate && self.core.online() => {
                let result = match simulated(&cmd) {
                    Ok(action) => simulate_shared(self, ctx, action),
                    Err(r) => Some(r),
                };
                ack_command(
                    &self.core,
                    &cmd,
                    result.unwrap_or(CommandResult::Unsupported),
                );
            }
            _ => {}
        }
    }
}

impl Handler<Control> for DoorPhone {
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

impl Handler<GetSnapshot> for DoorPhone {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let state = if self.relay_armed {
            "relay_open"
        } else {
            "idle"
        };
        let mut s = self.core.snapshot(state);
        s.lift_calls = self.lift_calls;
        MessageResult(s)
    }
}
