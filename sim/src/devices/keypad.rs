//! The keypad: keypresses with human timing, an entry cleared after a few
//! idle seconds, PIN (and card) checks, and a lockout after wrong tries as
//! the engine reports them (mirrored on the device, as keypads show it).
//! A granted entry runs the linked lock's motor.

use std::time::Duration;

use actix::prelude::*;
use reference_server::domain::Connectivity;
use reference_server::protocol::{How, WireCredential};
use tokio::time::Instant;

use super::lock::{Actuate, Lock};
use super::*;
use crate::transport::Inbound;

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

    /// Checks a completed entry (or card) and, if granted, runs the lock.
    fn submit(
        &mut self,
        credential: WireCredential,
    ) -> ResponseActFuture<Self, Result<Presented, DeviceError>> {
        let how = how_of(&credential);
        let local = self.connectivity == Connectivity::Ble;
        let d = self.core.decide_start(credential, None, local);
        let lock = self.lock.clone();
        match d {
            Decide::Done(j) => {
                let settled = self.core.settle(how, j);
                Box::pin(actuate(lock, how, settled, None, 0, true).into_actor(self))
            }
            ask => Box::pin(run_decide(ask, None).into_actor(self).then(
                move |(response, res, _), act, _| {
                    let latency = res.as_ref().map_or(0, |c| c.latency_us);
                    let j = act.core.judge(&res);
                    let settled = act.core.settle(how, j);
                    actuate(lock, how, settled, response, latency, false).into_actor(act)
                },
            )),
        }
    }
}

async fn actuate(
    lock: Option<Addr<Lock>>,
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
) -> Result<Presented, DeviceError> {
    let outcome = match settled {
        Err(o) => o,
        Ok((credential, origin)) => match lock {
            None => DeviceOutcome::Error("keypad not linked to a lock".into()),
            Some(lock) => lock
                .send(Actuate {
                    how,
                    credential,
                    origin,
                })
                .await
                .map_err(|_| DeviceError::Stopped)?,
        },
    };
    Ok(Presented {
        response,
        outcome,
        latency_us,
        decided_locally,
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

impl Actor for Keypad {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        start_core(self, ctx);
    }
}

impl Handler<Present> for Keypad {
    type Result = ResponseActFuture<Self, Result<Presented, DeviceError>>;

    fn handle(&mut self, msg: Present, _ctx: &mut Context<Self>) -> Self::Result {
        let digits = match &msg.credential {
            WireCredential::Pin(p) => p.len(),
            WireCredential::Card(_) => 0,
            _ => {
                return Box::pin(fut::ready(Err(DeviceError::NotAccepted {
                    device: "keypad",
                    what: "QR codes or BLE passes",
                })))
            }
        };
        let delay = if msg.human_timing && digits > 0 {
            typing_time(&mut self.core, digits)
        } else {
            Duration::ZERO
        };
        let credential = msg.credential;
        Box::pin(
            async move { tokio::time::sleep(delay).await }
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
    fn handle(&mut self, msg: Inbound, _ctx: &mut Context<Self>) {
        if let (Inbound::Sync(push), true) = (msg, self.core.online()) {
            self.core.apply_sync(&push);
        }
    }
}

impl Handler<Control> for Keypad {
    type Result = ();
    fn handle(&mut self, m: Control, ctx: &mut Context<Self>) {
        match m {
            Control::GoOffline { for_s } => go_offline(self, ctx, for_s),
            Control::SyncNow => self.core.pull_sync(),
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
