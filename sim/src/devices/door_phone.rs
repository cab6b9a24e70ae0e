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

pub struct DoorPhone {
    core: Core,
    /// A lock the relay drives; `None`: the phone's own door relay.
    lock: Option<Addr<Lock>>,
    sensor: Option<Recipient<LockChanged>>,
    relay_timer: Option<SpawnHandle>,
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
            relay_timer: None,
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
        let fresh = self.relay_timer.is_none();
        if let Some(h) = self.relay_timer.take() {
            ctx.cancel_future(h);
        }
        self.core.emit(EventKind::Unlocked {
            how,
            credential,
            origin,
        });
        if fresh {
            if let Some(s) = &self.sensor {
                let _ = s.try_send(LockChanged { unlocked: true });
            }
        }
        let open = Duration::from_secs_f64(self.core.params.door_phone.relay_open_s.max(0.0));
        self.relay_timer = Some(ctx.run_later(open, |act, _| {
            act.relay_timer = None;
            act.core.emit(EventKind::Locked {
                how: How::AutoRelock,
            });
            if let Some(s) = &act.sensor {
                let _ = s.try_send(LockChanged { unlocked: false });
            }
        }));
        DeviceOutcome::Unlocked
    }
}

impl HasCore for DoorPhone {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }
}

impl Actor for DoorPhone {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        start_core(self, ctx);
    }
}

impl Handler<Present> for DoorPhone {
    type Result = ResponseActFuture<Self, Result<Presented, DeviceError>>;

    fn handle(&mut self, msg: Present, _ctx: &mut Context<Self>) -> Self::Result {
        if matches!(msg.credential, WireCredential::Ble(_)) {
            return Box::pin(fut::ready(Err(DeviceError::NotAccepted {
                device: "door phone",
                what: "BLE passes",
            })));
        }
        let how = how_of(&msg.credential);
        let delay = match (&msg.credential, msg.human_timing) {
            (WireCredential::Pin(p), true) => typing_time(&mut self.core, p.len()),
            _ => Duration::ZERO,
        };
        let floor = msg.floor;
        let timeout_ms = self.core.params.door_phone.reader_timeout_ms;
        Box::pin(
            async move { tokio::time::sleep(delay).await }
                .into_actor(self)
                .then(move |_, act, ctx| -> PhoneFuture {
                    match act.core.decide_start(msg.credential, floor, false) {
                        Decide::Done(j) => {
                            let settled = act.core.settle(how, j);
                            act.relay(ctx, settled, how, floor, None, 0, true)
                        }
                        ask => Box::pin(run_decide(ask, Some(timeout_ms)).into_actor(act).then(
                            move |(response, res, _), act, ctx| {
                                let latency = res.as_ref().map_or(0, |c| c.latency_us);
                                let j = act.core.judge(&res);
                                let settled = act.core.settle(how, j);
                                act.relay(ctx, settled, how, floor, response, latency, false)
                            },
                        )),
                    }
                }),
        )
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
    ) -> PhoneFuture {
        let done = move |outcome| Presented {
            response,
            outcome,
            latency_us,
            decided_locally,
        };
        let (credential, origin) = match settled {
            Err(o) => return Box::pin(fut::ready(Ok(done(o)))),
            Ok(x) => x,
        };
        if floor.is_some() {
            self.lift_calls += 1;
        }
        match self.lock.clone() {
            Some(lock) => Box::pin(
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
            ),
            None => {
                let outcome = self.pulse_relay(ctx, how, credential, origin);
                Box::pin(fut::ready(Ok(done(outcome))))
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
    fn handle(&mut self, _: Inbound, _ctx: &mut Context<Self>) {
        // Server mode: the phone stores no codes; commands go to the lock.
    }
}

impl Handler<Control> for DoorPhone {
    type Result = ();
    fn handle(&mut self, m: Control, ctx: &mut Context<Self>) {
        if let Control::GoOffline { for_s } = m {
            go_offline(self, ctx, for_s);
        }
    }
}

impl Handler<GetSnapshot> for DoorPhone {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let state = if self.relay_timer.is_some() {
            "relay_open"
        } else {
            "idle"
        };
        let mut s = self.core.snapshot(state);
        s.lift_calls = self.lift_calls;
        MessageResult(s)
    }
}
