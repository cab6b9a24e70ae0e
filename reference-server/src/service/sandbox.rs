//! Sandbox actions (`POST /v1/devices/{device}/simulate/{action}`): a
//! connect, a keypad entry, a door left open, a jam... acted out by the
//! device when it is connected (a `simulate` command on its `cmd` topic:
//! it reports its own events), or by the server for a device that is not
//! (a sandbox device that exists only here): the server then makes the
//! device's status report or event and feeds it to the same intake a
//! device's own takes (`Service::set_status`, `Service::check`, the event
//! intake of `Service::record_event`), so the activity log, the device
//! state, the event feed, its stream and webhooks see it as they would
//! see the device's.

use serde::Serialize;

use super::{EventSource, Order, Service, ServiceError, Transport};
use crate::domain::{Action, Actor, DenyReason, DeviceId, Ref};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::protocol::{
    self, AuthRequest, CommandResult, Event, EventKind, How, SimAction, Status, Verdict,
    SANDBOX_LOW_BATTERY_PCT,
};

/// Who acted a sandbox action out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SimulatedBy {
    /// The connected device, told by a `simulate` command; its events
    /// follow from it, as it sends them.
    Device,
    /// The server, for a device that is not connected: its events are
    /// logged before the answer.
    Server,
}

/// What a sandbox action did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Simulated {
    /// The action's name (`keypad_code_entry`).
    pub action: String,
    pub by: SimulatedBy,
    /// The device's answer: `ok`, `motor_blocked`, `low_battery`,
    /// `unsupported`, or `offline` when it did not answer in time. Always
    /// `ok` when the server acted.
    pub result: CommandResult,
    /// A code entry or card tap the server acted out: the engine's
    /// decision (`granted` or `denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Verdict>,
    /// Why it was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
}

/// Whether `actor` may act `action` out at `device`: the caller's role
/// and organization (owner only, as every sandbox control: it makes
/// events an app trusts), the device kind (`SimAction::fits`, 409), the
/// action's values (`SimAction::check`, 422).
pub fn admit(
    engine: &Engine,
    actor: &Actor,
    device: DeviceId,
    action: &SimAction,
) -> Result<(), EngineError> {
    engine.authorize_on(actor, Ref::Device(device), Action::ManageOrganization)?;
    let kind = engine
        .device(device)
        .ok_or(EngineError::NotFound {
            kind: "device",
            id: device.0,
        })?
        .kind;
    action.fits(kind).map_err(|why| EngineError::Conflict {
        field: "action",
        rule: format!("{} does not fit a {}: {why}", action.name(), kind.as_str()),
    })?;
    action
        .check()
        .map_err(|(field, rule)| EngineError::Invalid {
            field,
            rule: rule.to_string(),
        })
}

impl Service {
    /// Acts `action` out at `device` (owner only, as every sandbox
    /// control: it makes events an app trusts).
    pub async fn simulate(
        &self,
        actor: &Actor,
        device: DeviceId,
        action: SimAction,
    ) -> Result<Simulated, ServiceError> {
        admit(&self.engine.read(), actor, device, &action)?;
        let mut done = Simulated {
            action: action.name().to_string(),
            by: SimulatedBy::Server,
            result: CommandResult::Ok,
            decision: None,
            reason: None,
        };
        let sink = self.command_sink.read().clone();
        let connected = self.connected.lock().contains(&device);
        if let Some(sink) = sink.filter(|_| connected) {
            done.by = SimulatedBy::Device;
            done.result = sink(device, Order::Simulate(action)).await;
            return Ok(done);
        }
        self.act_out(device, &action, &mut done).await?;
        Ok(done)
    }

    /// The server plays the device: the status report or the events the
    /// device would send for `action`.
    async fn act_out(
        &self,
        device: DeviceId,
        action: &SimAction,
        done: &mut Simulated,
    ) -> Result<(), ServiceError> {
        let health = self.health.summary(device);
        let status = |online: bool, battery_pct: Option<u8>| Status {
            online,
            battery_pct,
            firmware: health.firmware.clone(),
            at: None,
        };
        let kinds = match action {
            SimAction::Connect | SimAction::Disconnect => {
                let online = matches!(action, SimAction::Connect);
                let st = status(online, health.battery_pct);
                self.status_from(device, &st, EventSource::Sandbox).await?;
                if online {
                    self.play_sync(device).await?;
                }
                return Ok(());
            }
            SimAction::Battery { level_pct } => {
                let st = status(health.online, Some(*level_pct));
                self.status_from(device, &st, EventSource::Sandbox).await?;
                if *level_pct >= SANDBOX_LOW_BATTERY_PCT {
                    return Ok(());
                }
                vec![EventKind::BatteryLow {
                    battery_pct: *level_pct,
                }]
            }
            SimAction::KeypadCodeEntry { .. } | SimAction::CardTap { .. } => {
                if health.online {
                    self.play_sync(device).await?;
                }
                self.present(device, action, done).await?
            }
            SimAction::Lock => vec![EventKind::Locked { how: How::Manual }],
            SimAction::Unlock => vec![EventKind::Unlocked {
                how: How::Manual,
                credential: None,
                origin: None,
            }],
            SimAction::DoorOpen => vec![EventKind::DoorOpened],
            SimAction::DoorClose => vec![EventKind::DoorClosed],
            SimAction::DoorForcedOpen => vec![EventKind::DoorForcedOpen],
            SimAction::DoorLeftOpen => vec![EventKind::DoorAjar],
            SimAction::Jam => vec![EventKind::MotorBlocked],
        };
        for kind in kinds {
            let ev = Event {
                // Not the device's numbering: logged without a `seq`.
                seq: 0,
                boot: 0,
                at: self.now(),
                kind,
            };
            self.ingest_event(device, &ev, EventSource::Sandbox).await?;
        }
        Ok(())
    }

    /// An online sandbox device stores what it is sent, as a device that
    /// syncs over HTTP does: its pending batch is fetched and acked whole
    /// (`sync_fetch`, `sync_ack`), so its codes go `set` and open it.
    async fn play_sync(&self, device: DeviceId) -> Result<(), ServiceError> {
        let batch = self.sync_fetch(device, false).await?;
        let push = protocol::SyncPush::whole(&batch);
        let results = push
            .credentials()
            .chain(batch.tokens())
            .map(|credential| protocol::SyncResult {
                credential,
                failure: None,
            })
            .collect::<Vec<_>>();
        if results.is_empty() {
            return Ok(());
        }
        let ack = protocol::SyncAckMsg {
            version: push.version,
            results,
        };
        self.sync_ack(device, &ack).await?;
        Ok(())
    }

    /// A code entry or card tap: checked by the engine as the device's
    /// own check is; answers the events the device reports of it.
    async fn present(
        &self,
        device: DeviceId,
        action: &SimAction,
        done: &mut Simulated,
    ) -> Result<Vec<EventKind>, ServiceError> {
        let credential = action.credential().expect("a code entry or card tap");
        let how = match action {
            SimAction::CardTap { .. } => How::Card,
            _ => How::Keypad,
        };
        let req = AuthRequest {
            id: 0,
            credential,
            floor: None,
            at: None,
        };
        let resp = self.check(device, &req, Transport::Http).await;
        done.decision = Some(resp.decision);
        done.reason = resp.reason;
        match (resp.decision, resp.reason) {
            (Verdict::Granted, _) => Ok(vec![EventKind::Unlocked {
                how,
                credential: resp.credential_id,
                origin: resp.origin,
            }]),
            (Verdict::Denied, Some(reason)) => {
                let mut kinds = vec![EventKind::AccessDenied { how, reason }];
                // The wrong code that locked the keypad (a locked-out
                // denial only repeats the lockout).
                if let (DenyReason::WrongPin, Some(until)) = (reason, resp.locked_until) {
                    kinds.push(EventKind::KeypadLockedOut { until });
                }
                Ok(kinds)
            }
            _ => Err(EngineError::Invalid {
                field: "credential",
                rule: resp.error.unwrap_or_else(|| "the check failed".to_string()),
            }
            .into()),
        }
    }
}
