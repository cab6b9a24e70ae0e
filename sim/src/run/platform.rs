//! The system under test as the run's workloads reach it: the run's own
//! engine (the in-process transport), the reference server the run started
//! (http, mqtt), or an external one (`--target`). Every difference between
//! them that a workload would otherwise branch on lives here: whether a
//! change made during the run must reach a server and how it goes, where a
//! code's sync state can be read, how a waiting code is moved toward its
//! devices, a remote open, and what the devices' transport can do.
//!
//! The run's engine is always there: it provisions, and it makes every
//! change of the run first (its `Book` keeps the log), so ids and PINs are
//! known before a server hears of them.

use std::sync::Arc;

use parking_lot::RwLock;
use reference_server::domain::{Actor, DeviceId};
use reference_server::engine::{Command, Outcome};
use reference_server::protocol::{CommandKind, CommandResult, DeviceCommand};
use reference_server::service::Service;
use reference_server::Engine;
use tokio::sync::oneshot;

use super::remote::Forwarder;
use super::target::Target;
use super::RunError;
use crate::clock::SimClock;
use crate::devices::fleet::{DeviceAddr, Fleet};
use crate::devices::Control;
use crate::scenario::Transport as Kind;

pub struct Platform {
    /// The devices' transport.
    kind: Kind,
    sut: Sut,
}

enum Sut {
    /// The run's engine alone.
    Local,
    /// The reference server the run started, fed in order by `forwarder`.
    Embedded {
        service: Arc<Service>,
        forwarder: Forwarder,
    },
    /// A server the run was pointed at, fed through its admin API.
    External {
        target: Arc<Target>,
        forwarder: Forwarder,
    },
}

impl Platform {
    pub fn local() -> Platform {
        Platform {
            kind: Kind::Inproc,
            sut: Sut::Local,
        }
    }

    pub fn embedded(kind: Kind, service: Arc<Service>, forwarder: Forwarder) -> Platform {
        Platform {
            kind,
            sut: Sut::Embedded { service, forwarder },
        }
    }

    pub fn external(target: Arc<Target>) -> Platform {
        Platform {
            kind: Kind::Http,
            sut: Sut::External {
                forwarder: Forwarder::to_target(target.clone()),
                target,
            },
        }
    }

    /// Must the changes made during the run reach a server (the run's
    /// `Book` then keeps their log for [`Platform::forward`])? A served
    /// engine also decides on its own clock.
    pub fn served(&self) -> bool {
        !matches!(self.sut, Sut::Local)
    }

    /// Sends what the run's engine applied (a `Book`'s log) to the server,
    /// in order, made by `actor`: one receiver per command, true once the
    /// server applied it with the same outcome, false when it refused, or
    /// at once when the queue is full. Locally nothing needs to go.
    pub fn forward(
        &self,
        actor: Actor,
        log: Vec<(Command, Outcome)>,
    ) -> Vec<oneshot::Receiver<bool>> {
        let forwarder = match &self.sut {
            Sut::Local => return Vec::new(),
            Sut::Embedded { forwarder, .. } | Sut::External { forwarder, .. } => forwarder,
        };
        log.into_iter()
            .map(|(cmd, expect)| {
                forwarder.send_as(actor, cmd, expect).unwrap_or_else(|| {
                    let (tx, rx) = oneshot::channel();
                    let _ = tx.send(false);
                    rx
                })
            })
            .collect()
    }

    /// Reads the engine of record, where the codes' sync states are: the
    /// embedded server's, or the run's own. `None` for an external server:
    /// the run cannot see its engine, only confirm its readers' codes
    /// ([`Platform::nudge_sync`]).
    pub fn read_engine<R>(
        &self,
        local: &RwLock<Engine>,
        f: impl FnOnce(&Engine) -> R,
    ) -> Option<R> {
        match &self.sut {
            Sut::Local => Some(f(&local.read())),
            Sut::Embedded { service, .. } => Some(f(&service.engine())),
            Sut::External { .. } => None,
        }
    }

    /// Moves the codes waiting for `devices` toward them. `due`: the
    /// pushing kinds act only then (a push or a fetch every so often);
    /// in process the run pushes, an embedded server's HTTP readers fetch,
    /// an MQTT gateway pushes by itself. An external target's readers are
    /// confirmed by the run on every call: `Some(true)` once the server
    /// has nothing pending for them.
    pub async fn nudge_sync(
        &self,
        fleet: &Fleet,
        devices: &[DeviceId],
        due: bool,
    ) -> Result<Option<bool>, RunError> {
        match (&self.sut, self.kind) {
            (Sut::External { target, .. }, _) => target.confirm_codes(devices).await.map(Some),
            (Sut::Local, _) if due => {
                fleet.push_sync_to(devices);
                Ok(None)
            }
            (Sut::Embedded { .. }, Kind::Http) if due => {
                for d in devices {
                    let _ = fleet.control(*d, Control::SyncNow);
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Do the run's Wi-Fi devices get their codes pushed by the run itself
    /// (in process), rather than asking for them?
    pub fn pushes_in_process(&self) -> bool {
        matches!(self.sut, Sut::Local)
    }

    /// Can the platform send a device a command (a remote open)? HTTP has
    /// no command channel to a device (docs/protocol.md).
    pub fn commands_devices(&self) -> bool {
        self.kind != Kind::Http
    }

    /// A remote open of `lock` by `actor`: through the server
    /// (`Service::open_door`: the gateway's command and the lock's
    /// `cmd/ack`), or in process the engine's `authorize_open` and the
    /// command in the lock's mailbox.
    pub async fn open_door(
        &self,
        local: &RwLock<Engine>,
        fleet: &Fleet,
        clock: &SimClock,
        actor: &Actor,
        lock: DeviceId,
    ) -> Result<CommandResult, String> {
        if let Sut::Embedded { service, .. } = &self.sut {
            return service
                .open_door(actor, lock)
                .await
                .map_err(|e| e.to_string());
        }
        local
            .read()
            .authorize_open(actor, lock, clock.now())
            .map_err(|e| e.to_string())?;
        let Some(DeviceAddr::Lock(a)) = fleet.device(lock).map(|d| &d.addr) else {
            return Err(format!("{lock} is not a lock"));
        };
        if !fleet.snapshot(lock).await.is_ok_and(|s| s.online) {
            return Ok(CommandResult::Offline);
        }
        let cmd = DeviceCommand {
            id: 0,
            command: CommandKind::Open,
        };
        a.send(crate::transport::Inbound::Command(cmd))
            .await
            .map(|()| CommandResult::Ok)
            .map_err(|e| e.to_string())
    }
}
