//! The keypad: keypresses with human timing, an entry cleared after a few
//! idle seconds, PIN (and card) checks, and a lockout after wrong tries:
//! the engine's, until the `locked_until` its answer gave (shown and
//! enforced on the device, as keypads do), or the keypad's own when it
//! decides PINs from its code cache (Bluetooth). A granted entry runs the
//! linked lock's motor.

use std::time::Duration;

use actix::prelude::*;
use reference_server::domain::Connectivity;
use reference_server::protocol::{How, WireCredential};
use tokio::time::Instant;

use super::lock::{Actuate, Lock};
use super::*;
use crate::transport::Inbound;
use reference_server::protocol::{CommandKind, CommandResult};

/// Longest entry a keypad buffers (the protocol's PINs are at most 12).
pub const MAX_ENTRY_DIGITS: usize = 12;

/// One key on the pad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Digit(u8),
    Enter,
}

/// A single keypress; `Enter` submits the entry and answers with the result.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "Result<Option<Presented>, DeviceError>")]
pub struct Keypress(pub Key);

pub struct Keypad {
    core: Core,
    connectivity: Connectivity,
    lock: Option<Addr<Lock>>,
    entry: String,
    last_key: Option<Instant>,
}

impl Keypad {
    pub fn new(core: Core, connectivity: Connectivity, lock: Option<Addr<Lock>>) -> Keypad {
        Keypad {
            core,
            connectivity,
            lock,
            entry: String::new(),
            last_key: None,
        }
    }

    /// Checks a completed entry (or card) as far as it can now: decided
    /// alone, or by an in-process engine. `Err`: the engine must be asked
    /// over the network.
    #[allow(clippy::result_large_err)] // Err hands the undecided check back by value; boxing it would allocate on every check.
    fn decide(&mut self, credential: WireCredential) -> Result<Settled, (Decide, How)> {
        let how = how_of(&credential);
        let local = self.connectivity == Connectivity::Ble;
        let (j, response, latency_us, decided_locally) =
            match self.core.decide_start(credential, None, local) {
                Decide::Done(j) => (j, None, 0, true),
                ask => match decide_now(ask) {
                    Ok((response, res)) => {
                        let latency = res.as_ref().map_or(0, |c| c.latency_us);
                        (self.core.judge(&res), response, latency, false)
                    }
                    Err(ask) => return Err((ask, how)),
                },
            };
        Ok(Settled {
            how,
            settled: self.core.settle(how, j),
            response,
            latency_us,
            decided_locally,
        })
    }

    /// Asks the engine over the network, then runs the lock if granted.
    fn ask_then_actuate(
        ask: Decide,
        how: How,
    ) -> impl ActorFuture<Self, Output = Result<Presented, DeviceError>> {
        fut::wrap_future::<_, Self>(run_decide(ask, None)).then(
            move |(response, res, _), act, _| {
                let latency_us = res.as_ref().map_or(0, |c| c.latency_us);
                let j = act.core.judge(&res);
                let s = Settled {
                    how,
                    settled: act.core.settle(how, j),
                    response,
                    latency_us,
                    decided_locally: false,
                };
                fut::wrap_future(actuate(act.lock.clone(), s))
            },
        )
    }

    /// The load path: answers in the handler unless the lock must run
    /// (then one future waits for the lock's reply).
    fn answer(&self, s: Settled) -> ActorResponse<Self, Result<Presented, DeviceError>> {
        match (s.settled, &self.lock) {
            (Ok((credential, origin)), Some(lock)) => {
                let run = lock.send(Actuate {
                    how: s.how,
                    credential,
                    origin,
                });
                let (response, latency_us, decided_locally) =
                    (s.response, s.latency_us, s.decided_locally);
                ActorResponse::r#async(fut::wrap_future(async move {
                    let outcome = run.await.map_err(|_| DeviceError::Stopped)?;
                    Ok(Presented {
                        response,
                        outcome,
                        latency_us,
                        decided_locally,
                    })
                }))
            }
            (settled, _) => ActorResponse::reply(Ok(Presented {
                outcome: match settled {
                    Err(o) => o,
                    // A keypad on a door with no lock drives the door's
                    // strike itself: the engine's grant opens the door.
                    Ok(_) => DeviceOutcome::Unlocked,
                },
                response: s.response,
                latency_us: s.latency_us,
                decided_locally: s.decided_locally,
            })),
        }
    }

    /// Every path as one future (human timing, keypresses).
    fn submit(
        &mut self,
        credential: WireCredential,
    ) -> ResponseActFuture<Self, Result<Presented, DeviceError>> {
        match self.decide(credential) {
            Ok(s) => Box::pin(fut::wrap_future(actuate(self.lock.clone(), s))),
            Err((ask, how)) => Box::pin(Self::ask_then_actuate(ask, how)),
        }
    }
}

/// A check's result before the lock runs.
struct Settled {
    how: How,
    settled: Result<
        (
            Option<reference_server::domain::CredentialId>,
            Option<reference_server::domain::Origin>,
        ),
        DeviceOutcome,
    >,
    response: Option<reference_server::protocol::AuthResponse>,
    latency_us: u64,
    decided_locally: bool,
}

async fn actuate(lock: Option<Addr<Lock>>, s: Settled) -> Result<Presented, DeviceError> {
    let outcome = match s.settled {
        Err(o) => o,
        Ok((credential, origin)) => match lock {
            // No lock on the door: the keypad drives the strike itself.
            None => DeviceOutcome::Unlocked,
            Some(lock) => lock
                .send(Actuate {
                    how: s.how,
                    credential,
                    origin,
                })
                .await
                .map_err(|_| DeviceError::Stopped)?,
        },
    };
    Ok(Presented {
        response: s.response,
        outcome,
        latency_us: s.latency_us,
        decided_locally: s.decided_locally,
    })
}

impl HasCore for Keypad {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }
    fn back_online(&mut self, _ctx: &mut Context<Self>) {
        if self.connectivity == Connectivity::Wifi {
            self.core.pull_sync();
        }
    }
}

crate::handle_fire!(Keypad);

impl Actor for Keypad {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        start_core(self, ctx);
    }
}

impl Handler<Present> for Keypad {
    type Result = ActorResponse<Self, Result<Presented, DeviceError>>;

    fn handle(&mut self, msg: Present, _ctx: &mut Context<Self>) -> Self::Result {
        let digits = match &msg.credential {
            WireCredential::Pin(p) => p.len(),
            WireCredential::Card(_) => 0,
            _ => {
                return ActorResponse::reply(Err(DeviceError::NotAccepted {
                    device: "keypad",
                    what: "QR codes or BLE passes",
                }))
            }
        };
        let delay = if msg.human_timing && digits > 0 {
            typing_time(&mut self.core, digits)
        } else {
            Duration::ZERO
        };
        if delay.is_zero() {
            return match self.decide(msg.credential) {
                Ok(s) => self.answer(s),
                Err((ask, how)) => ActorResponse::r#async(Self::ask_then_actuate(ask, how)),
            };
        }
        let credential = msg.credential;
        ActorResponse::r#async(
            wait(delay)
                .into_actor(self)
                .then(move |_, act, _| act.submit(credential)),
        )
    }
}

impl Handler<Keypress> for Keypad {
    type Result = ResponseActFuture<Self, Result<Option<Presented>, DeviceError>>;

    fn handle(&mut self, Keypress(key): Keypress, _ctx: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let idle = Duration::from_secs_f64(self.core.params.keypad.idle_clear_s.max(0.0));
        if self.last_key.is_some_and(|t| now.duration_since(t) >= idle) {
            self.entry.clear();
        }
        self.last_key = Some(now);
        match key {
            Key::Digit(d) => {
                if d <= 9 && self.entry.len() < MAX_ENTRY_DIGITS {
                    self.entry.push(char::from(b'0' + d));
                }
                Box::pin(fut::ready(Ok(None)))
            }
            Key::Enter => {
                let entry = std::mem::take(&mut self.entry);
                self.last_key = None;
                Box::pin(
                    self.submit(WireCredential::Pin(entry))
                        .map(|r, _, _| r.map(Some)),
                )
            }
        }
    }
}

impl Handler<Inbound> for Keypad {
    type Result = ();
    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        if !self.core.online() {
            if matches!(msg, Inbound::Sync(_)) {
                self.core.link.sync_dropped();
            }
            return;
        }
        match msg {
            Inbound::Sync(push) => self.core.apply_sync(&push),
            // A keypad has no bolt: Open and Lock are the lock's.
            Inbound::Command(cmd) if cmd.command == CommandKind::Simulate => {
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
            Inbound::Command(_) => {}
        }
    }
}

impl Handler<Control> for Keypad {
    type Result = ();
    fn handle(&mut self, m: Control, ctx: &mut Context<Self>) {
        match m {
            Control::GoOffline { for_s } => go_offline(self, ctx, for_s),
            Control::GoOnline => go_online(self, ctx),
            Control::SyncNow => self.core.request_sync(),
            Control::BeginOfflineSpells => begin_offline_spells(self, ctx),
        }
    }
}

impl Handler<GetSnapshot> for Keypad {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let state = if self.core.locked_out() {
            "locked_out"
        } else if self.lock.is_some() {
            "linked"
        } else {
            "unlinked"
        };
        MessageResult(self.core.snapshot(state))
    }
}
