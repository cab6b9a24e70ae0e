//! A small provisioned world: one site, one door, locks on it, a holder
//! with a PIN, through the engine's own commands.

use std::sync::Arc;

use jiff::Timestamp;
use parking_lot::RwLock;
use reference_server::domain::*;
use reference_server::engine::{Command, Issue, PinSpec, SecretSpec, SyncBatch, SyncResult};
use reference_server::gateway::{Backend, BackendError};
use reference_server::protocol::{AuthRequest, AuthResponse, Event, Status};
use reference_server::{Check, Engine, EngineConfig};
use rustc_hash::FxHashSet;
use tokio::sync::broadcast;

pub struct EngineBackend {
    pub engine: RwLock<Engine>,
    pub events: parking_lot::Mutex<FxHashSet<(DeviceId, u64)>>,
    pub changes: broadcast::Sender<DeviceId>,
}

impl EngineBackend {
    pub fn apply(&self, cmd: Command) -> reference_server::engine::Applied {
        let applied = self
            .engine
            .write()
            .apply(&Actor::System, cmd, Timestamp::now())
            .expect("apply");
        let e = self.engine.read();
        for d in e.devices() {
            let _ = self.changes.send(d.id);
        }
        applied
    }
}

impl Backend for EngineBackend {
    fn device_site(&self, device: DeviceId) -> Option<SiteId> {
        self.engine.read().device(device).map(|d| d.site)
    }
    async fn check(&self, device: DeviceId, req: &AuthRequest) -> AuthResponse {
        let presented = match req.credential.to_presented() {
            Ok(p) => p,
            Err(e) => return AuthResponse::error(req.id, e.to_string()),
        };
        let d = self.engine.read().validate(
            &Check {
                device,
                presented,
                floor: req.floor,
            },
            Timestamp::now(),
        );
        AuthResponse::from_decision(req.id, &d)
    }
    async fn record_event(&self, device: DeviceId, ev: &Event) -> Result<bool, BackendError> {
        Ok(self.events.lock().insert((device, ev.seq)))
    }
    async fn set_status(&self, _device: DeviceId, _st: &Status) -> Result<(), BackendError> {
        Ok(())
    }
    fn pending_sync(&self, device: DeviceId) -> Option<SyncBatch> {
        self.engine.read().pending_sync(device)
    }
    async fn sync_sent(&self, device: DeviceId, version: u64) -> Result<(), BackendError> {
        self.engine
            .write()
            .apply(
                &Actor::System,
                Command::SyncSent { device, version },
                Timestamp::now(),
            )
            .map(|_| ())
            .map_err(|e| e.into())
    }
    async fn sync_ack(
        &self,
        device: DeviceId,
        results: Vec<SyncResult>,
    ) -> Result<(), BackendError> {
        self.engine
            .write()
            .apply(
                &Actor::System,
                Command::SyncAck { device, results },
                Timestamp::now(),
            )
            .map(|_| ())
            .map_err(|e| e.into())
    }
    fn sync_changes(&self) -> broadcast::Receiver<DeviceId> {
        self.changes.subscribe()
    }
}

pub struct World {
    pub backend: Arc<EngineBackend>,
    pub site: SiteId,
    pub door: DoorId,
    pub devices: Vec<DeviceId>,
    pub holder: HolderId,
}

pub fn world(locks: usize) -> World {
    let (changes, _) = broadcast::channel(1024);
    let b = Arc::new(EngineBackend {
        engine: RwLock::new(Engine::new(EngineConfig {
            token_key: TokenKey::from_bytes([3; 32]),
            seed: 1,
        })),
        events: Default::default(),
        changes,
    });
    use reference_server::engine::Outcome::*;
    let user = match b
        .apply(Command::CreateUser {
            name: "Ann".into(),
            email: "ann@example.com".into(),
        })
        .outcome
    {
        User(u) => u,
        o => panic!("{o:?}"),
    };
    let org = match b
        .apply(Command::CreateOrganization {
            name: "Org".into(),
            description: String::new(),
            owner: user,
            personal: false,
        })
        .outcome
    {
        Organization(o) => o,
        o => panic!("{o:?}"),
    };
    let site = match b
        .apply(Command::CreateSite {
            org,
            name: "Site".into(),
            time_zone: "UTC".into(),
            settings: SiteSettings {
                six_digit_pins: true,
                ..SiteSettings::default()
            },
        })
        .outcome
    {
        Site(s) => s,
        o => panic!("{o:?}"),
    };
    let door = match b
        .apply(Command::CreateDoor {
            site,
            name: "Front".into(),
            common_area: false,
            unit: None,
            lift_floors: vec![],
        })
        .outcome
    {
        Door(d) => d,
        o => panic!("{o:?}"),
    };
    let devices = (0..locks)
        .map(|i| {
            match b
                .apply(Command::CreateDevice {
                    door,
                    kind: DeviceKind::Lock,
                    connectivity: Connectivity::Wifi,
                    name: format!("Lock {i}"),
                    location: "Front".into(),
                    linked_to: None,
                    code_slots: 250,
                })
                .outcome
            {
                Device(d) => d,
                o => panic!("{o:?}"),
            }
        })
        .collect();
    let holder = match b
        .apply(Command::CreateHolder {
            org,
            name: "Bob".into(),
            kind: HolderKind::Member,
            user: None,
            floors: FloorScope::Any,
        })
        .outcome
    {
        Holder(h) => h,
        o => panic!("{o:?}"),
    };
    World {
        backend: b,
        site,
        door,
        devices,
        holder,
    }
}

impl World {
    pub fn issue_pin(&self, pin: &str) -> CredentialId {
        match self
            .backend
            .apply(Command::IssueCredential(Issue {
                holder: self.holder,
                name: "code".into(),
                secret: SecretSpec::Pin {
                    pin: PinSpec::Manual(pin.into()),
                },
                schedule: Schedule::Permanent,
                doors: vec![self.door],
                include_common_areas: false,
                floors: FloorScope::Any,
            }))
            .outcome
        {
            reference_server::engine::Outcome::Credential(c) => c,
            o => panic!("{o:?}"),
        }
    }
}
