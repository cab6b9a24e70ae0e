//! A small provisioned world on the real service (SQLite store in a temp
//! dir): one site, one door, locks on it (each with its issued secret), a
//! holder, and the owner who issues codes through `Service::apply`.

use std::sync::Arc;

use reference_server::domain::*;
use reference_server::engine::{Command, Issue, Outcome, PinSpec, SecretSpec};
use reference_server::protocol::{AuthRequest, AuthResponse, WireCredential};
use reference_server::service::{Clock, Service, Transport};

pub struct World {
    pub service: Arc<Service>,
    pub owner: Actor,
    pub site: SiteId,
    pub door: DoorId,
    /// Each lock with the secret it connects with.
    pub devices: Vec<(DeviceId, String)>,
    pub holder: HolderId,
    /// The owner's bearer token, for the HTTP API over this service.
    pub token: String,
    pub(crate) dir: tempfile::TempDir,
}

async fn made(service: &Service, actor: &Actor, cmd: Command) -> Outcome {
    service.apply(actor, cmd).await.expect("apply").outcome
}

pub async fn world(locks: usize) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = Arc::new(Service::open(dir.path(), Clock::system()).expect("open service"));
    let boot = service
        .bootstrap("Ann Owner".into(), "ann@example.com".into(), "Org".into())
        .await
        .expect("bootstrap");
    let owner = Actor::User(boot.user);
    let Outcome::Site(site) = made(
        &service,
        &owner,
        Command::CreateSite {
            org: boot.org,
            name: "Site".into(),
            time_zone: "UTC".into(),
            settings: SiteSettings {
                six_digit_pins: true,
                ..SiteSettings::default()
            },
        },
    )
    .await
    else {
        panic!("a site")
    };
    let Outcome::Door(door) = made(
        &service,
        &owner,
        Command::CreateDoor {
            site,
            name: "Front".into(),
            common_area: false,
            unit: None,
            lift_floors: vec![],
        },
    )
    .await
    else {
        panic!("a door")
    };
    let mut devices = Vec::new();
    for i in 0..locks {
        let made = service
            .create_device(
                &owner,
                Command::CreateDevice {
                    door,
                    kind: DeviceKind::Lock,
                    connectivity: Connectivity::Wifi,
                    name: format!("Lock {i}"),
                    location: "Front".into(),
                    linked_to: None,
                    code_slots: 250,
                },
            )
            .await
            .expect("create device");
        devices.push(made);
    }
    let Outcome::Holder(holder) = made(
        &service,
        &owner,
        Command::CreateHolder {
            org: boot.org,
            name: "Bob".into(),
            kind: HolderKind::Member,
            user: None,
            floors: FloorScope::Any,
        },
    )
    .await
    else {
        panic!("a holder")
    };
    World {
        service,
        owner,
        site,
        door,
        devices,
        holder,
        token: boot.token,
        dir,
    }
}

impl World {
    /// The service's data directory (to open it again after a stop).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn device(&self, i: usize) -> DeviceId {
        self.devices[i].0
    }

    /// An admin issues a permanent PIN for the door.
    pub async fn issue_pin(&self, pin: &str) -> CredentialId {
        let Outcome::Credential(c) = made(
            &self.service,
            &self.owner,
            Command::IssueCredential(Issue {
                holder: self.holder,
                name: "code".into(),
                secret: SecretSpec::Pin {
                    pin: PinSpec::Manual(pin.into()),
                },
                schedule: Schedule::Permanent,
                doors: vec![self.door],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
        )
        .await
        else {
            panic!("a credential")
        };
        c
    }

    /// An admin changes a PIN; the new code's id.
    pub async fn change_pin(&self, credential: CredentialId, pin: &str) -> CredentialId {
        let Outcome::Credential(c) = made(
            &self.service,
            &self.owner,
            Command::ChangePin {
                credential,
                pin: PinSpec::Manual(pin.into()),
            },
        )
        .await
        else {
            panic!("a credential")
        };
        c
    }

    /// The sync state of a code on lock `i`.
    pub fn state(&self, credential: CredentialId, i: usize) -> Option<SyncState> {
        let e = self.service.engine();
        e.credential(credential)
            .and_then(|c| c.placement(self.device(i)))
            .map(|p| p.state)
    }

    /// What the engine answers for `pin` at lock `i` (as the lock's own
    /// cache would, for a lock that is offline).
    pub async fn engine_answer(&self, i: usize, pin: &str) -> AuthResponse {
        let req = AuthRequest {
            id: 0,
            credential: WireCredential::Pin(pin.into()),
            floor: None,
            at: None,
        };
        self.service
            .check(self.device(i), &req, Transport::Http)
            .await
    }
}
