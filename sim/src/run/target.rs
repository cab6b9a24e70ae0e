//! An external reference server as the run's target (`--transport http
//! --target URL`): the fleet is provisioned through the server's admin API
//! and the devices validate against it.
//!
//! - The run still provisions its local engine first (the oracle's truth
//!   is written there, as for every transport), keeping the commands; each
//!   command is then sent to the admin route that makes the same change
//!   ([`Ids::request`]), with every id in it translated from the local
//!   engine's to the server's (the server numbers its own entities: it may
//!   hold others already). PINs and card numbers are sent explicitly, so
//!   the server holds the very secrets the oracle knows.
//! - The owner: `POST /v1/bootstrap` on a fresh server (its organization
//!   is renamed to the scenario's), or the user whose token is in
//!   `FLEETSIM_TARGET_TOKEN` (`GET /v1/me`) on one bootstrapped already.
//! - QR and BLE tokens are signed with the server's own key: the issue
//!   answer carries the server's token, kept against the token the local
//!   engine signed; the HTTP transport presents the server's
//!   ([`ServerIds`]). Devices are addressed by the server's ids, with the
//!   secrets the server issued when they were created.
//! - Commands made during the run (code actions, check-in and check-out,
//!   visitor keys) go through the same client, in order (the run's
//!   [`Forwarder`](super::remote::Forwarder)).
//! - Readers ask the server on every check, but the server counts a code
//!   usable on a lock or keypad only once the device confirmed storing it:
//!   the run confirms each code-storing device's pending codes through the
//!   device routes `GET`/`POST /v1/devices/{device}/sync` (device secret),
//!   as the embedded server's readers are confirmed on their behalf.
//! - A lock's fallback pool goes as typed-in PINs (the run drew them, and
//!   the oracle knows them as codes the lock holds).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use reference_server::domain::{DeviceId, Origin};
use reference_server::engine::{Command, Outcome, PinSpec, SecretSpec};
use reference_server::protocol::{SyncAckMsg, SyncItemResult};
use reference_server::Engine;
use rustc_hash::FxHashMap;
use serde_json::{json, Value};

use super::RunError;
use crate::transport::http::SyncBody;
use crate::transport::ServerIds;

/// Environment variable with an owner's user token, for a target that was
/// bootstrapped already.
pub const TOKEN_ENV: &str = "FLEETSIM_TARGET_TOKEN";
/// How long one admin or sync request may take.
const REQUEST_TIMEOUT_S: u64 = 10;
/// Rounds of sync confirmation per device and call (a changed PIN takes
/// two: the new code set, then the old one removed).
const SYNC_ROUNDS: usize = 4;
/// Longest server message kept in an error.
const MAX_MESSAGE: usize = 300;

/// The kinds of ids the run's commands carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    User,
    Organization,
    Site,
    Door,
    Device,
    Holder,
    Credential,
    Stay,
}

impl IdKind {
    /// The key of this kind in the server's answers (`{"site": 3}`).
    fn key(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Organization => "organization",
            IdKind::Site => "site",
            IdKind::Door => "door",
            IdKind::Device => "device",
            IdKind::Holder => "holder",
            IdKind::Credential => "credential",
            IdKind::Stay => "stay",
        }
    }
}

/// A server id in an answer: a whole number the server's ids fit in
/// (`u32`); anything else is no id, never one cut to fit.
fn server_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// The device a `POST .../devices` answer made: its id and its secret.
pub fn device_answer(answer: &Value) -> Result<(DeviceId, String), String> {
    let id = server_id(&answer["device"]).ok_or("the answer names no device id")?;
    let secret = answer["mqtt"]["password"]
        .as_str()
        .ok_or("the answer holds no device secret (mqtt.password)")?;
    Ok((DeviceId(id), secret.to_string()))
}

/// The acknowledgement of a device's pending codes, from the server's
/// `GET /v1/devices/{device}/sync` answer (decoded as the HTTP transport
/// decodes it): every code and token confirmed stored.
pub fn sync_confirmation(answer: Value) -> Result<SyncAckMsg, String> {
    let body: SyncBody = serde_json::from_value(answer).map_err(|e| format!("not a sync message: {e}"))?;
    let results = body
        .push
        .credentials()
        .chain(body.tokens)
        .map(|credential| SyncItemResult {
            credential,
            failure: None,
        })
        .collect();
    Ok(SyncAckMsg {
        version: body.push.version,
        results,
    })
}

/// What a refusal's body says, for the run's error: the API's field and
/// rule when it is the server's JSON error, else the text; at most
/// `MAX_MESSAGE` characters, control characters shown as U+FFFD (it goes
/// to a terminal and a report).
pub fn error_message(body: &str) -> String {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(v) if v["rule"].is_string() => format!(
            "{}: {}",
            v["field"].as_str().unwrap_or("-"),
            v["rule"].as_str().unwrap_or_default()
        ),
        _ => body.to_string(),
    };
    text.chars()
        .take(MAX_MESSAGE)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The kind and local id an outcome names.
fn made(o: &Outcome) -> Option<(IdKind, u32)> {
    Some(match o {
        Outcome::User(x) => (IdKind::User, x.0),
        Outcome::Organization(x) => (IdKind::Organization, x.0),
        Outcome::Site(x) => (IdKind::Site, x.0),
        Outcome::Door(x) => (IdKind::Door, x.0),
        Outcome::Device(x) => (IdKind::Device, x.0),
        Outcome::Holder(x) => (IdKind::Holder, x.0),
        Outcome::Credential(x) => (IdKind::Credential, x.0),
        Outcome::Stay(x) => (IdKind::Stay, x.0),
        _ => return None,
    })
}

/// One admin API request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
}

impl Request {
    fn new(method: &'static str, path: String, body: Option<Value>) -> Request {
        Request { method, path, body }
    }

    /// `POST /v1/...` as an error names it.
    pub fn route(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What to do with one command.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Send(Request),
    /// No admin route makes this change: not sent (the reason says why).
    Skip(&'static str),
}

/// Local id -> server id, per kind, and the owner's bootstrap.
#[derive(Debug, Default)]
pub struct Ids {
    map: FxHashMap<(IdKind, u32), u32>,
    /// The organization `bootstrap` made, waiting for the scenario's
    /// `CreateOrganization` (which renames it).
    boot_org: Option<u32>,
    /// An owner's token was given: users and organizations are created,
    /// not bootstrapped.
    has_token: bool,
}

fn unsupported(what: impl Into<String>) -> RunError {
    RunError::TargetUnsupported(what.into())
}

/// A PIN as the API takes it: the value the local engine resolved, typed
/// by an admin (a client may not send the store's `resolved` form).
fn pin_spec(p: &PinSpec) -> Result<PinSpec, RunError> {
    Ok(match p {
        PinSpec::Resolved { pin, origin } => match origin {
            Origin::Automatic | Origin::Manual => PinSpec::Manual(pin.reveal()),
            Origin::Fallback => return Err(unsupported("a fallback pool PIN cannot be sent")),
        },
        other => other.clone(),
    })
}

/// A pool code as the run drew it, sent as typed in (the server's PIN
/// rules apply): the oracle already knows it as a code of the lock.
fn pool_pin(p: &PinSpec) -> PinSpec {
    match p {
        PinSpec::Resolved { pin, .. } => PinSpec::Manual(pin.reveal()),
        other => other.clone(),
    }
}

impl Ids {
    pub fn new(has_token: bool) -> Ids {
        Ids {
            has_token,
            ..Ids::default()
        }
    }

    /// The server's id of local `id`.
    pub fn get(&self, kind: IdKind, id: u32) -> Result<u32, RunError> {
        self.map.get(&(kind, id)).copied().ok_or_else(|| {
            unsupported(format!(
                "no server id for local {} {id} (its creation was not sent)",
                kind.key()
            ))
        })
    }

    pub fn insert(&mut self, kind: IdKind, local: u32, server: u32) {
        self.map.insert((kind, local), server);
    }

    /// The admin route for `cmd`, with the server's ids in it.
    pub fn request(&self, cmd: &Command) -> Result<Step, RunError> {
        let post = |path: String, body: Value| Step::Send(Request::new("POST", path, Some(body)));
        Ok(match cmd {
            Command::CreateUser { name, email } => {
                if self.has_token {
                    Step::Send(Request::new("GET", "/v1/me".into(), None))
                } else {
                    post(
                        "/v1/bootstrap".into(),
                        json!({"name": name, "email": email, "organization": "fleetsim"}),
                    )
                }
            }
            Command::CreateOrganization {
                name,
                description,
                personal,
                ..
            } => match self.boot_org {
                Some(org) => Step::Send(Request::new(
                    "PATCH",
                    format!("/v1/organizations/{org}"),
                    Some(json!({"name": name, "description": description})),
                )),
                None => post(
                    "/v1/organizations".into(),
                    json!({"name": name, "description": description, "personal": personal}),
                ),
            },
            Command::CreateSite {
                org,
                name,
                time_zone,
                settings,
            } => post(
                format!(
                    "/v1/organizations/{}/sites",
                    self.get(IdKind::Organization, org.0)?
                ),
                json!({"name": name, "time_zone": time_zone, "settings": settings}),
            ),
            Command::CreateDoor {
                site,
                name,
                common_area,
                unit,
                lift_floors,
            } => {
                if unit.is_some() || !lift_floors.is_empty() {
                    return Err(unsupported("doors in units or with lift floors"));
                }
                post(
                    format!("/v1/sites/{}/doors", self.get(IdKind::Site, site.0)?),
                    json!({"name": name, "common_area": common_area}),
                )
            }
            Command::CreateDevice {
                door,
                kind,
                connectivity,
                name,
                location,
                linked_to,
                code_slots,
            } => {
                let linked = linked_to
                    .map(|d| self.get(IdKind::Device, d.0))
                    .transpose()?;
                post(
                    format!("/v1/doors/{}/devices", self.get(IdKind::Door, door.0)?),
                    json!({
                        "kind": kind, "connectivity": connectivity, "name": name,
                        "location": location, "linked_to": linked, "code_slots": code_slots,
                    }),
                )
            }
            Command::UpdateGuestSettings { device, settings } => Step::Send(Request::new(
                "PUT",
                format!(
                    "/v1/devices/{}/guest-settings",
                    self.get(IdKind::Device, device.0)?
                ),
                Some(serde_json::to_value(settings).map_err(|e| unsupported(e.to_string()))?),
            )),
            Command::CreateHolder {
                org,
                name,
                kind,
                user,
                floors,
            } => {
                let user = user.map(|u| self.get(IdKind::User, u.0)).transpose()?;
                post(
                    format!(
                        "/v1/organizations/{}/holders",
                        self.get(IdKind::Organization, org.0)?
                    ),
                    json!({"name": name, "kind": kind, "user": user, "floors": floors}),
                )
            }
            Command::CreateStay {
                holder,
                check_in_at,
                check_out_at,
            } => post(
                format!("/v1/holders/{}/stays", self.get(IdKind::Holder, holder.0)?),
                json!({"check_in_at": check_in_at, "check_out_at": check_out_at}),
            ),
            Command::CheckIn { stay } => post(
                format!("/v1/stays/{}/check-in", self.get(IdKind::Stay, stay.0)?),
                json!({}),
            ),
            Command::CheckOut { stay } => post(
                format!("/v1/stays/{}/check-out", self.get(IdKind::Stay, stay.0)?),
                json!({}),
            ),
            Command::IssueCredential(issue) => {
                let mut issue = issue.clone();
                issue.holder.0 = self.get(IdKind::Holder, issue.holder.0)?;
                for d in &mut issue.doors {
                    d.0 = self.get(IdKind::Door, d.0)?;
                }
                if let SecretSpec::Pin { pin } = &issue.secret {
                    issue.secret = SecretSpec::Pin {
                        pin: pin_spec(pin)?,
                    };
                }
                if let reference_server::domain::Schedule::Stay { stay } = &mut issue.schedule {
                    stay.0 = self.get(IdKind::Stay, stay.0)?;
                }
                if !matches!(issue.floors, reference_server::domain::FloorScope::Any) {
                    return Err(unsupported("credentials limited to floors"));
                }
                post(
                    "/v1/credentials".into(),
                    serde_json::to_value(&issue).map_err(|e| unsupported(e.to_string()))?,
                )
            }
            Command::ChangePin { credential, pin } => Step::Send(Request::new(
                "PUT",
                format!(
                    "/v1/credentials/{}/pin",
                    self.get(IdKind::Credential, credential.0)?
                ),
                Some(json!({"pin": pin_spec(pin)?})),
            )),
            Command::RevokeCredential { credential } => Step::Send(Request::new(
                "DELETE",
                format!(
                    "/v1/credentials/{}",
                    self.get(IdKind::Credential, credential.0)?
                ),
                None,
            )),
            Command::LoadFallbackPool { device, pins } => Step::Send(Request::new(
                "POST",
                format!(
                    "/v1/devices/{}/fallback-pool",
                    self.get(IdKind::Device, device.0)?
                ),
                Some(json!({"pins": pins.iter().map(pool_pin).collect::<Vec<_>>()})),
            )),
            other => {
                let name = format!("{other:?}");
                let name = name.split([' ', '{', '(']).next().unwrap_or_default();
                return Err(unsupported(format!(
                    "the run made a command the admin API client does not send: {name}"
                )));
            }
        })
    }

    /// Records what the server answered to `cmd` (expected `expect`
    /// locally): the server's id of what was made.
    pub fn record(
        &mut self,
        cmd: &Command,
        expect: &Outcome,
        answer: &Value,
    ) -> Result<(), String> {
        match cmd {
            // Bootstrap made the organization the next command renames.
            Command::CreateUser { .. } if !self.has_token => {
                self.boot_org = server_id(&answer["organization"]);
            }
            Command::CreateUser { .. } => {
                let id = server_id(&answer["user"]["id"]).ok_or("GET /v1/me named no user id")?;
                if let Outcome::User(u) = expect {
                    self.insert(IdKind::User, u.0, id);
                }
                return Ok(());
            }
            Command::CreateOrganization { .. } => {
                if let (Some(org), Outcome::Organization(l)) = (self.boot_org.take(), expect) {
                    self.insert(IdKind::Organization, l.0, org);
                    return Ok(());
                }
            }
            _ => {}
        }
        if let Outcome::Credentials(local) = expect {
            let ids = answer["credentials"]
                .as_array()
                .filter(|ids| ids.len() == local.len())
                .ok_or_else(|| format!("the answer names no {} credential ids", local.len()))?;
            for (l, id) in local.iter().zip(ids) {
                let id = server_id(id).ok_or("a credential id is not a server id")?;
                self.insert(IdKind::Credential, l.0, id);
            }
            return Ok(());
        }
        if let Some((kind, local)) = made(expect) {
            let id = server_id(&answer[kind.key()]).ok_or_else(|| {
                format!(
                    "the answer names no {} id (expected like the local {expect:?})",
                    kind.key()
                )
            })?;
            self.insert(kind, local, id);
        }
        Ok(())
    }
}

/// The external server: its admin API client and the translation tables.
pub struct Target {
    http: reqwest::Client,
    base: String,
    /// The owner's user token.
    token: RwLock<Option<String>>,
    ids: Mutex<Ids>,
    /// Local device -> (server's id, its secret).
    devices: RwLock<FxHashMap<DeviceId, (DeviceId, String)>>,
    /// Token the local engine signed -> the server's token.
    tokens: RwLock<FxHashMap<String, String>>,
    /// The local engine (the tokens it signed).
    engine: Arc<RwLock<Engine>>,
    /// Commands not sent, per reason.
    skipped: Mutex<BTreeMap<String, u64>>,
}

impl ServerIds for Target {
    fn device(&self, device: DeviceId) -> Option<(DeviceId, String)> {
        self.devices.read().get(&device).cloned()
    }

    fn token(&self, local: &str) -> Option<String> {
        self.tokens.read().get(local).cloned()
    }
}

impl Target {
    /// A client for `url` (`http://host:port`); checks the server answers
    /// `/healthz`.
    pub async fn connect(url: &str, engine: Arc<RwLock<Engine>>) -> Result<Target, RunError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(REQUEST_TIMEOUT_S))
            .build()
            .map_err(|e| RunError::Runtime(e.to_string()))?;
        let base = url.trim_end_matches('/').to_string();
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty());
        let t = Target {
            http,
            ids: Mutex::new(Ids::new(token.is_some())),
            token: RwLock::new(token),
            base,
            devices: RwLock::default(),
            tokens: RwLock::default(),
            engine,
            skipped: Mutex::default(),
        };
        t.send(&Request::new("GET", "/healthz".into(), None), false)
            .await?;
        Ok(t)
    }

    /// Commands not sent, per reason (for the report's skipped list).
    pub fn skipped(&self) -> BTreeMap<String, u64> {
        self.skipped.lock().clone()
    }

    fn unreachable(&self, e: impl ToString) -> RunError {
        RunError::Unreachable {
            what: "the target server",
            addr: self.base.clone(),
            reason: e.to_string(),
        }
    }

    /// Sends `req` (with the owner's token when `user`, or `bearer`);
    /// the answer's JSON, or a [`RunError::Target`] naming the route, the
    /// status and the server's message.
    async fn send_with(&self, req: &Request, bearer: Option<&str>) -> Result<Value, RunError> {
        let url = format!("{}{}", self.base, req.path);
        let method =
            reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut rb = self.http.request(method, url);
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        if let Some(body) = &req.body {
            rb = rb.json(body);
        }
        let resp = rb.send().await.map_err(|e| {
            // reqwest's Display hides the cause (connection refused, ...).
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            self.unreachable(msg)
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(RunError::Target {
                route: req.route(),
                status: status.as_u16(),
                message: error_message(&text),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| RunError::Target {
            route: req.route(),
            status: status.as_u16(),
            message: format!("not JSON: {e}"),
        })
    }

    async fn send(&self, req: &Request, user: bool) -> Result<Value, RunError> {
        let token = if user {
            self.token.read().clone()
        } else {
            None
        };
        self.send_with(req, token.as_deref()).await
    }

    /// Provisioning: sends every command the local engine logged.
    pub async fn provision(&self, commands: Vec<(Command, Outcome)>) -> Result<(), RunError> {
        for (cmd, expect) in &commands {
            self.apply(cmd, expect).await?;
        }
        Ok(())
    }

    /// Sends one command (answered `expect` by the local engine) and
    /// records the server's ids, secrets and tokens.
    pub async fn apply(&self, cmd: &Command, expect: &Outcome) -> Result<(), RunError> {
        let step = self.ids.lock().request(cmd)?;
        let req = match step {
            Step::Send(r) => r,
            Step::Skip(why) => {
                *self.skipped.lock().entry(why.to_string()).or_default() += 1;
                return Ok(());
            }
        };
        let answer = match self.send(&req, true).await {
            Err(RunError::Target {
                route,
                status: 409,
                message,
            }) if matches!(cmd, Command::CreateUser { .. }) => {
                return Err(RunError::Target {
                    route,
                    status: 409,
                    message: format!(
                        "{message} (a server bootstrapped already: set {TOKEN_ENV} to an owner's user token)"
                    ),
                })
            }
            other => other?,
        };
        if let Command::CreateUser { .. } = cmd {
            if let Some(t) = answer["token"].as_str() {
                *self.token.write() = Some(t.to_string());
            }
            // Bootstrap names the user at the top level.
            if let (Some(u), Outcome::User(l)) = (server_id(&answer["user"]), expect) {
                self.ids.lock().insert(IdKind::User, l.0, u);
            }
        }
        self.ids
            .lock()
            .record(cmd, expect, &answer)
            .map_err(|message| RunError::Target {
                route: req.route(),
                status: 200,
                message,
            })?;
        match (cmd, expect) {
            (Command::CreateDevice { .. }, Outcome::Device(local)) => {
                let device = device_answer(&answer).map_err(|message| RunError::Target {
                    route: req.route(),
                    status: 201,
                    message,
                })?;
                self.devices.write().insert(*local, device);
            }
            (Command::IssueCredential(_), Outcome::Credential(local)) => {
                if let Some(server) = answer["token"].as_str() {
                    let mine = self.engine.read().token(*local);
                    if let Some(mine) = mine {
                        self.tokens.write().insert(mine, server.to_string());
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Confirms, as each of `devices` (local ids), every code the server
    /// has pending for it. True when nothing is pending on any of them
    /// any more.
    pub async fn confirm_codes(&self, devices: &[DeviceId]) -> Result<bool, RunError> {
        let mut clear = true;
        for d in devices {
            let Some((id, secret)) = self.device(*d) else {
                continue;
            };
            let path = format!("/v1/devices/{}/sync", id.0);
            let mut done = false;
            for _ in 0..SYNC_ROUNDS {
                let get = Request::new("GET", path.clone(), None);
                let v = self.send_with(&get, Some(&secret)).await?;
                let ack = sync_confirmation(v).map_err(|message| RunError::Target {
                    route: get.route(),
                    status: 200,
                    message,
                })?;
                if ack.results.is_empty() {
                    done = true;
                    break;
                }
                let post = Request::new(
                    "POST",
                    path.clone(),
                    Some(serde_json::to_value(&ack).map_err(|e| unsupported(e.to_string()))?),
                );
                match self.send_with(&post, Some(&secret)).await {
                    Ok(_) => {}
                    // Changed meanwhile (a command of the run): ask again.
                    Err(RunError::Target { status: 409, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            clear &= done;
        }
        Ok(clear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reference_server::domain::{
        CredentialId, DoorId, FloorScope, HolderId, OrgId, Pin, Schedule, SiteId, StayId, UserId,
    };
    use reference_server::engine::Issue;

    fn ids() -> Ids {
        let mut ids = Ids::new(false);
        ids.insert(IdKind::Organization, 0, 7);
        ids.insert(IdKind::Site, 0, 11);
        ids.insert(IdKind::Door, 2, 40);
        ids.insert(IdKind::Holder, 3, 90);
        ids.insert(IdKind::Stay, 1, 5);
        ids.insert(IdKind::Credential, 4, 300);
        ids.insert(IdKind::Device, 1, 61);
        ids
    }

    fn sent(step: Step) -> Request {
        match step {
            Step::Send(r) => r,
            Step::Skip(why) => panic!("skipped: {why}"),
        }
    }

    #[test]
    fn ids_in_commands_become_the_servers() {
        let ids = ids();
        let r = sent(
            ids.request(&Command::CreateDoor {
                site: SiteId(0),
                name: "Door 1".into(),
                common_area: true,
                unit: None,
                lift_floors: Vec::new(),
            })
            .unwrap(),
        );
        assert_eq!(r.route(), "POST /v1/sites/11/doors");
        assert_eq!(r.body.unwrap()["common_area"], true);
        let r = sent(
            ids.request(&Command::CreateDevice {
                door: DoorId(2),
                kind: reference_server::domain::DeviceKind::Keypad,
                connectivity: reference_server::domain::Connectivity::Wifi,
                name: "Keypad".into(),
                location: "Door 1".into(),
                linked_to: Some(DeviceId(1)),
                code_slots: 20,
            })
            .unwrap(),
        );
        assert_eq!(r.route(), "POST /v1/doors/40/devices");
        let b = r.body.unwrap();
        assert_eq!(
            (b["linked_to"].as_u64(), b["code_slots"].as_u64()),
            (Some(61), Some(20))
        );
        let r = sent(ids.request(&Command::CheckOut { stay: StayId(1) }).unwrap());
        assert_eq!(r.route(), "POST /v1/stays/5/check-out");
        let r = sent(
            ids.request(&Command::RevokeCredential {
                credential: CredentialId(4),
            })
            .unwrap(),
        );
        assert_eq!(r.route(), "DELETE /v1/credentials/300");
        // An id whose creation was never sent is an error, not a guess.
        let e = ids
            .request(&Command::CheckIn { stay: StayId(9) })
            .unwrap_err()
            .to_string();
        assert!(e.contains("stay 9"), "{e}");
    }

    #[test]
    fn resolved_pins_are_sent_as_typed_values_and_stay_schedules_translated() {
        let ids = ids();
        let pin = Pin::parse("4812").unwrap();
        let issue = Issue {
            holder: HolderId(3),
            name: "Code".into(),
            secret: SecretSpec::Pin {
                pin: PinSpec::Resolved {
                    pin,
                    origin: Origin::Automatic,
                },
            },
            schedule: Schedule::Stay { stay: StayId(1) },
            doors: vec![DoorId(2)],
            include_common_areas: false,
            floors: FloorScope::Any,
        };
        let r = sent(ids.request(&Command::IssueCredential(issue)).unwrap());
        assert_eq!(r.route(), "POST /v1/credentials");
        let b = r.body.unwrap();
        assert_eq!(b["holder"], 90);
        assert_eq!(b["doors"], json!([40]));
        assert_eq!(
            b["secret"]["pin"],
            json!({"type": "manual", "value": "4812"})
        );
        assert_eq!(b["schedule"]["stay"], 5);
        let r = sent(
            ids.request(&Command::ChangePin {
                credential: CredentialId(4),
                pin: PinSpec::Resolved {
                    pin: Pin::parse("902211").unwrap(),
                    origin: Origin::Manual,
                },
            })
            .unwrap(),
        );
        assert_eq!(r.route(), "PUT /v1/credentials/300/pin");
        assert_eq!(r.body.unwrap()["pin"]["value"], "902211");
    }

    #[test]
    fn the_owner_is_bootstrapped_and_the_scenarios_organization_renames_its_own() {
        let mut ids = Ids::new(false);
        let user = Command::CreateUser {
            name: "Fleet owner".into(),
            email: "owner@fleet.example".into(),
        };
        assert_eq!(
            sent(ids.request(&user).unwrap()).route(),
            "POST /v1/bootstrap"
        );
        ids.record(
            &user,
            &Outcome::User(UserId(0)),
            &json!({"user": 4, "organization": 9, "token": "u4.x"}),
        )
        .unwrap();
        let org = Command::CreateOrganization {
            name: "smoke".into(),
            description: "d".into(),
            owner: UserId(0),
            personal: false,
        };
        assert_eq!(
            sent(ids.request(&org).unwrap()).route(),
            "PATCH /v1/organizations/9"
        );
        ids.record(&org, &Outcome::Organization(OrgId(0)), &json!({"ok": true}))
            .unwrap();
        assert_eq!(ids.get(IdKind::Organization, 0).unwrap(), 9);
        // A second organization is created.
        assert_eq!(
            sent(ids.request(&org).unwrap()).route(),
            "POST /v1/organizations"
        );
        // With a token: the owner is whoever it belongs to.
        let mut ids = Ids::new(true);
        assert_eq!(sent(ids.request(&user).unwrap()).route(), "GET /v1/me");
        ids.record(
            &user,
            &Outcome::User(UserId(0)),
            &json!({"user": {"id": 2}}),
        )
        .unwrap();
        assert_eq!(ids.get(IdKind::User, 0).unwrap(), 2);
    }

    #[test]
    fn fallback_pools_are_sent_as_typed_pins() {
        let mut ids = ids();
        ids.insert(IdKind::Device, 1, 9);
        let pin = Pin::parse("4821").unwrap();
        let pool = Command::LoadFallbackPool {
            device: DeviceId(1),
            pins: vec![PinSpec::Resolved {
                pin,
                origin: Origin::Fallback,
            }],
        };
        let req = sent(ids.request(&pool).unwrap());
        assert_eq!(req.route(), "POST /v1/devices/9/fallback-pool");
        assert_eq!(
            req.body.unwrap(),
            json!({"pins": [{"type": "manual", "value": "4821"}]})
        );
        // The server's ids of the pool codes, in order.
        let made = Outcome::Credentials(vec![CredentialId(3), CredentialId(4)]);
        ids.record(&pool, &made, &json!({"credentials": [11, 12]}))
            .unwrap();
        assert_eq!(ids.get(IdKind::Credential, 4).unwrap(), 12);
        let short = ids.record(&pool, &made, &json!({"credentials": [11]}));
        assert!(short.unwrap_err().contains("2 credential ids"));
    }
}
