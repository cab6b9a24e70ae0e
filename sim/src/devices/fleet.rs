//! The fleet builder: provisions a fleet in the engine (organization,
//! sites, buildings with lift floors, doors, devices, all through
//! `Engine::apply` as `Actor::System`), starts one actor per device linked
//! as in real installations, and offers the entry points workload
//! generators use (`present`, snapshots, fault controls).
//!
//! Door kits:
//! - Wi-Fi apartment door: Wi-Fi lock + keypad (linked to it) + door sensor.
//! - Bluetooth apartment door: Bluetooth lock (built-in keypad) + door sensor.
//! - Entrance: door phone driving its own door relay and the lift, + sensor.

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use jiff::Timestamp;
use parking_lot::RwLock;
use reference_server::domain::{
    Actor as EngineActor, BuildingId, Connectivity, DeviceId, DeviceKind, DoorId, FloorId, OrgId,
    SiteId, SiteSettings, UserId,
};
use reference_server::engine::{Command, Outcome};
use reference_server::protocol::WireCredential;
use reference_server::{Engine, EngineError};
use rustc_hash::FxHashMap;

use super::door_phone::{DoorPhone, LinkPhoneSensor};
use super::door_sensor::{DoorSensor, LinkLock};
use super::keypad::Keypad;
use super::lock::{LinkSensor, Lock};
use super::*;
use crate::clock::{device_rng, SimClock};
use crate::transport::{Endpoint, Inbound, KindCounts, Transport};

/// Most devices one fleet may hold (bounds the provisioning loop).
pub const MAX_FLEET_DEVICES: u64 = 2_000_000;

/// What to build. Counts are doors; each door gets its kit.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// Seeds every device's RNG (with its id).
    pub seed: u64,
    pub wifi_doors: u32,
    pub ble_doors: u32,
    pub entrances: u32,
    /// Wi-Fi doors get a keypad linked to the lock.
    pub keypads: bool,
    /// Every door gets a door sensor.
    pub sensors: bool,
    /// Doors per site (a site is one building with a lift).
    pub doors_per_site: u32,
    /// Floors the lift behind each entrance serves.
    pub lift_floors: u8,
    /// IANA time zone of the sites.
    pub time_zone: String,
    /// Parameters of every device whose door has no group of its own.
    pub params: DeviceParams,
    /// Parameters per device group: a door's devices take
    /// `group_params[plan.group]` (scenario runs: one per `[[fleet.devices]]`
    /// table); doors of a group beyond the list take `params`.
    pub group_params: Vec<DeviceParams>,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            seed: 0,
            wifi_doors: 0,
            ble_doors: 0,
            entrances: 0,
            keypads: true,
            sensors: true,
            doors_per_site: 1_000,
            lift_floors: 8,
            time_zone: "Europe/Berlin".into(),
            params: DeviceParams::default(),
            group_params: Vec::new(),
        }
    }
}

impl FleetSpec {
    pub fn new(seed: u64) -> FleetSpec {
        FleetSpec {
            seed,
            ..FleetSpec::default()
        }
    }
    pub fn wifi_doors(mut self, n: u32) -> Self {
        self.wifi_doors = n;
        self
    }
    pub fn ble_doors(mut self, n: u32) -> Self {
        self.ble_doors = n;
        self
    }
    pub fn entrances(mut self, n: u32) -> Self {
        self.entrances = n;
        self
    }
    pub fn keypads(mut self, on: bool) -> Self {
        self.keypads = on;
        self
    }
    pub fn sensors(mut self, on: bool) -> Self {
        self.sensors = on;
        self
    }
    pub fn params(mut self, p: DeviceParams) -> Self {
        self.params = p;
        self
    }
    pub fn group_params(mut self, groups: Vec<DeviceParams>) -> Self {
        self.group_params = groups;
        self
    }

    /// Devices the spec makes.
    pub fn device_count(&self) -> u64 {
        let s = u64::from(self.sensors);
        u64::from(self.wifi_doors) * (1 + u64::from(self.keypads) + s)
            + u64::from(self.ble_doors) * (1 + s)
            + u64::from(self.entrances) * (1 + s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("provisioning: {0}")]
    Engine(#[from] EngineError),
    #[error("engine answered {0:?} where an id was expected")]
    UnexpectedOutcome(Outcome),
    #[error("a fleet of {0} devices is over the limit of {MAX_FLEET_DEVICES}")]
    TooLarge(u64),
    #[error("doors_per_site must be at least 1")]
    NoDoorsPerSite,
}

/// The kit installed at a door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorKit {
    WifiApartment,
    BleApartment,
    Entrance,
}

/// A provisioned door and its devices (ids in the engine).
#[derive(Clone, Debug)]
pub struct DoorPlan {
    pub door: DoorId,
    pub site: SiteId,
    pub kit: DoorKit,
    /// The device group the door belongs to (its devices' parameters:
    /// [`FleetSpec::group_params`]).
    pub group: usize,
    pub lock: Option<DeviceId>,
    pub keypad: Option<DeviceId>,
    pub sensor: Option<DeviceId>,
    pub door_phone: Option<DeviceId>,
}

/// What provisioning made in the engine.
#[derive(Clone, Debug)]
pub struct Provisioned {
    pub owner: UserId,
    pub org: OrgId,
    pub sites: Vec<SiteId>,
    /// The lift floors of each site's building.
    pub floors: FxHashMap<SiteId, Vec<FloorId>>,
    pub doors: Vec<DoorPlan>,
}

/// Where provisioning commands go: straight into the engine as the system
/// (device tests and benches), or through a run's book, which also keeps
/// them for a reference server to replay (`run::provision::Book`).
///
/// Both provisioners (this module's [`provision`] for a [`FleetSpec`] and
/// `run::provision` for a scenario) build the fleet with the steps below,
/// so an organization, site, door or device is created one way only.
pub trait CommandSink {
    fn submit(&mut self, cmd: Command, now: Timestamp) -> Result<Outcome, EngineError>;
}

impl CommandSink for Engine {
    fn submit(&mut self, cmd: Command, now: Timestamp) -> Result<Outcome, EngineError> {
        self.apply(&EngineActor::System, cmd, now)
            .map(|a| a.outcome)
    }
}

/// Applies `cmd` and takes the id `pick` finds in the outcome.
fn create<T>(
    sink: &mut (impl CommandSink + ?Sized),
    cmd: Command,
    now: Timestamp,
    pick: impl Fn(&Outcome) -> Option<T>,
) -> Result<T, FleetError> {
    let o = sink.submit(cmd, now)?;
    pick(&o).ok_or(FleetError::UnexpectedOutcome(o))
}

/// Step 1: the fleet's owner and organization; returns an empty
/// [`Provisioned`] the later steps fill in.
pub fn create_organization(
    sink: &mut (impl CommandSink + ?Sized),
    now: Timestamp,
    name: String,
    description: String,
) -> Result<Provisioned, FleetError> {
    let owner = create(
        sink,
        Command::CreateUser {
            name: "Fleet owner".into(),
            email: "owner@fleet.example".into(),
        },
        now,
        |o| match o {
            Outcome::User(u) => Some(*u),
            _ => None,
        },
    )?;
    let org = create(
        sink,
        Command::CreateOrganization {
            name,
            description,
            owner,
            personal: false,
        },
        now,
        |o| match o {
            Outcome::Organization(x) => Some(*x),
            _ => None,
        },
    )?;
    Ok(Provisioned {
        owner,
        org,
        sites: Vec::new(),
        floors: FxHashMap::default(),
        doors: Vec::new(),
    })
}

/// Step 2: a site of the organization; with `lift_floors`, its building
/// and the floors its lift serves (entrances send the lift to a resident's
/// floor), else no floors.
pub fn create_site(
    sink: &mut (impl CommandSink + ?Sized),
    now: Timestamp,
    out: &mut Provisioned,
    name: String,
    time_zone: String,
    settings: SiteSettings,
    lift_floors: Option<u8>,
) -> Result<SiteId, FleetError> {
    let site = create(
        sink,
        Command::CreateSite {
            org: out.org,
            name,
            time_zone,
            settings,
        },
        now,
        |o| match o {
            Outcome::Site(x) => Some(*x),
            _ => None,
        },
    )?;
    let floors = match lift_floors {
        Some(n) => create_lift(sink, now, site, n)?,
        None => Vec::new(),
    };
    out.sites.push(site);
    out.floors.insert(site, floors);
    Ok(site)
}

/// The site's building and its lift floors.
fn create_lift(
    sink: &mut (impl CommandSink + ?Sized),
    now: Timestamp,
    site: SiteId,
    lift_floors: u8,
) -> Result<Vec<FloorId>, FleetError> {
    let building: BuildingId = create(
        sink,
        Command::CreateBuilding {
            site,
            name: "Main building".into(),
        },
        now,
        |o| match o {
            Outcome::Building(x) => Some(*x),
            _ => None,
        },
    )?;
    let mut floors = Vec::new();
    for number in 0..i16::from(lift_floors) {
        floors.push(create(
            sink,
            Command::CreateFloor { building, number },
            now,
            |o| match o {
                Outcome::Floor(x) => Some(*x),
                _ => None,
            },
        )?);
    }
    Ok(floors)
}

/// A door to create: where, what it is called and which kit it gets.
pub struct DoorSpec {
    pub site: SiteId,
    /// The door's name, also its devices' location.
    pub name: String,
    pub kit: DoorKit,
    pub group: usize,
    /// Entrances are common areas and send the lift.
    pub common_area: bool,
    pub lift_floors: Vec<FloorId>,
}

/// A device to mount on a door.
pub struct Mount {
    pub kind: DeviceKind,
    pub connectivity: Connectivity,
    pub name: String,
    pub code_slots: u16,
    /// Whether the door's plan takes the device (a scenario's door phone
    /// may carry a lock the run does not drive: created, not planned).
    pub planned: bool,
}

/// Step 3: a door and its devices, in `mounts` order; each device is linked
/// to the door's lock when one was planned before it (a keypad or a sensor
/// works with its lock).
pub fn create_door(
    sink: &mut (impl CommandSink + ?Sized),
    now: Timestamp,
    spec: DoorSpec,
    mounts: impl IntoIterator<Item = Mount>,
) -> Result<DoorPlan, FleetError> {
    let door = create(
        sink,
        Command::CreateDoor {
            site: spec.site,
            name: spec.name.clone(),
            common_area: spec.common_area,
            unit: None,
            lift_floors: spec.lift_floors,
        },
        now,
        |o| match o {
            Outcome::Door(x) => Some(*x),
            _ => None,
        },
    )?;
    let mut plan = DoorPlan {
        door,
        site: spec.site,
        kit: spec.kit,
        group: spec.group,
        lock: None,
        keypad: None,
        sensor: None,
        door_phone: None,
    };
    for m in mounts {
        let id = create(
            sink,
            Command::CreateDevice {
                door,
                kind: m.kind,
                connectivity: m.connectivity,
                name: m.name,
                location: spec.name.clone(),
                linked_to: plan.lock,
                code_slots: m.code_slots,
            },
            now,
            |o| match o {
                Outcome::Device(x) => Some(*x),
                _ => None,
            },
        )?;
        if m.planned {
            let slot = match m.kind {
                DeviceKind::Lock => &mut plan.lock,
                DeviceKind::Keypad => &mut plan.keypad,
                DeviceKind::DoorSensor => &mut plan.sensor,
                DeviceKind::DoorPhone => &mut plan.door_phone,
            };
            *slot = Some(id);
        }
    }
    Ok(plan)
}

/// The devices of a [`FleetSpec`] door's kit, in creation order.
fn kit_mounts(spec: &FleetSpec, kit: DoorKit) -> Vec<Mount> {
    let slots = spec.params.lock.code_slots.max(1);
    let connectivity = match kit {
        DoorKit::BleApartment => Connectivity::Ble,
        _ => Connectivity::Wifi,
    };
    let mount = |kind, code_slots, name: &str| Mount {
        kind,
        connectivity,
        name: name.into(),
        code_slots,
        planned: true,
    };
    let mut out = Vec::with_capacity(3);
    match kit {
        DoorKit::WifiApartment | DoorKit::BleApartment => {
            out.push(mount(DeviceKind::Lock, slots, "Lock"));
            if kit == DoorKit::WifiApartment && spec.keypads {
                out.push(mount(DeviceKind::Keypad, slots, "Keypad"));
            }
        }
        DoorKit::Entrance => out.push(mount(DeviceKind::DoorPhone, 0, "Door phone")),
    }
    if spec.sensors {
        out.push(mount(DeviceKind::DoorSensor, 0, "Door sensor"));
    }
    out
}

/// Creates the organization, sites, doors and devices of `spec`.
pub fn provision(
    engine: &mut Engine,
    spec: &FleetSpec,
    now: Timestamp,
) -> Result<Provisioned, FleetError> {
    let total = spec.device_count();
    if total > MAX_FLEET_DEVICES {
        return Err(FleetError::TooLarge(total));
    }
    if spec.doors_per_site == 0 {
        return Err(FleetError::NoDoorsPerSite);
    }
    let mut out = create_organization(
        engine,
        now,
        "Simulated fleet".into(),
        format!("seed {}", spec.seed),
    )?;
    let kits = std::iter::repeat_n(DoorKit::WifiApartment, spec.wifi_doors as usize)
        .chain(std::iter::repeat_n(
            DoorKit::BleApartment,
            spec.ble_doors as usize,
        ))
        .chain(std::iter::repeat_n(
            DoorKit::Entrance,
            spec.entrances as usize,
        ));
    let mut site = SiteId(0);
    for (i, kit) in kits.enumerate() {
        if i % spec.doors_per_site as usize == 0 {
            let name = format!("Site {}", out.sites.len());
            let tz = spec.time_zone.clone();
            let settings = SiteSettings::default();
            let lift = Some(spec.lift_floors);
            site = create_site(engine, now, &mut out, name, tz, settings, lift)?;
        }
        let entrance = kit == DoorKit::Entrance;
        let door = DoorSpec {
            site,
            name: format!("Door {i}"),
            kit,
            group: 0,
            common_area: entrance,
            lift_floors: if entrance {
                out.floors[&site].clone()
            } else {
                Vec::new()
            },
        };
        let plan = create_door(engine, now, door, kit_mounts(spec, kit))?;
        out.doors.push(plan);
    }
    Ok(out)
}

/// Where actors run: on the current arbiter (virtual time: one
/// current-thread runtime), or spread door by door over arbiters (real
/// time: one per core). Devices of one door share an arbiter.
#[derive(Clone)]
pub enum Placement {
    Current,
    Arbiters(Vec<actix::ArbiterHandle>),
}

impl Placement {
    fn start<A, F>(&self, door_index: usize, f: F) -> Addr<A>
    where
        A: Actor<Context = Context<A>> + Send,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        match self {
            Placement::Arbiters(hs) if !hs.is_empty() => {
                A::start_in_arbiter(&hs[door_index % hs.len()], f)
            }
            _ => A::create(f),
        }
    }
}

/// A device's address, by kind.
#[derive(Clone)]
pub enum DeviceAddr {
    Lock(Addr<Lock>),
    Keypad(Addr<Keypad>),
    Sensor(Addr<DoorSensor>),
    Phone(Addr<DoorPhone>),
}

async fn ask<A, M>(addr: &Addr<A>, msg: M) -> Result<M::Result, DeviceError>
where
    A: Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    // `send` waits for mailbox room: backpressure on the caller.
    addr.send(msg).await.map_err(|_| DeviceError::Stopped)
}

impl DeviceAddr {
    pub async fn present(&self, p: Present) -> Result<Presented, DeviceError> {
        match self {
            DeviceAddr::Lock(a) => ask(a, p).await?,
            DeviceAddr::Keypad(a) => ask(a, p).await?,
            DeviceAddr::Sensor(a) => ask(a, p).await?,
            DeviceAddr::Phone(a) => ask(a, p).await?,
        }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, DeviceError> {
        match self {
            DeviceAddr::Lock(a) => ask(a, GetSnapshot).await,
            DeviceAddr::Keypad(a) => ask(a, GetSnapshot).await,
            DeviceAddr::Sensor(a) => ask(a, GetSnapshot).await,
            DeviceAddr::Phone(a) => ask(a, GetSnapshot).await,
        }
    }

    /// Fault injection; `try_send`, so a full mailbox is an error, not a wait.
    pub fn control(&self, c: Control) -> Result<(), DeviceError> {
        let r = match self {
            DeviceAddr::Lock(a) => a.try_send(c),
            DeviceAddr::Keypad(a) => a.try_send(c),
            DeviceAddr::Sensor(a) => a.try_send(c),
            DeviceAddr::Phone(a) => a.try_send(c),
        };
        r.map_err(|e| match e {
            SendError::Full(_) => DeviceError::MailboxFull,
            SendError::Closed(_) => DeviceError::Stopped,
        })
    }
}

/// One device of a fleet.
#[derive(Clone)]
pub struct FleetDevice {
    pub id: DeviceId,
    pub kind: DeviceKind,
    pub connectivity: Connectivity,
    pub door: DoorId,
    pub site: SiteId,
    pub addr: DeviceAddr,
}

/// A running fleet.
pub struct Fleet {
    pub provisioned: Provisioned,
    devices: Vec<FleetDevice>,
    index: FxHashMap<DeviceId, usize>,
    transport: Transport,
    offline: Arc<FleetGauges>,
}

impl Fleet {
    /// Provisions `spec` in `engine` and starts its devices.
    pub fn build(
        spec: &FleetSpec,
        engine: &Arc<RwLock<Engine>>,
        transport: Transport,
        clock: SimClock,
        placement: &Placement,
    ) -> Result<Fleet, FleetError> {
        let provisioned = provision(&mut engine.write(), spec, clock.now())?;
        Ok(Fleet::start(spec, provisioned, transport, clock, placement))
    }

    /// Starts actors for already provisioned doors.
    pub fn start(
        spec: &FleetSpec,
        provisioned: Provisioned,
        transport: Transport,
        clock: SimClock,
        placement: &Placement,
    ) -> Fleet {
        let params = Arc::new(spec.params.clone());
        let groups: Vec<Arc<DeviceParams>> =
            spec.group_params.iter().cloned().map(Arc::new).collect();
        let offline = Arc::new(FleetGauges::default());
        let seed = spec.seed;
        let mut devices = Vec::with_capacity(spec.device_count() as usize);
        for (i, plan) in provisioned.doors.iter().enumerate() {
            let conn = match plan.kit {
                DoorKit::BleApartment => Connectivity::Ble,
                _ => Connectivity::Wifi,
            };
            let site = plan.site;
            let door = plan.door;
            // Makes the core inside the actor's context (the link needs
            // the actor's address for pushes).
            let make = {
                let transport = transport.clone();
                let params = groups.get(plan.group).unwrap_or(&params).clone();
                let offline = offline.clone();
                move |id: DeviceId, kind, inbox: Recipient<Inbound>| {
                    let ep = Endpoint {
                        device: id,
                        site,
                        connectivity: conn,
                    };
                    let link = transport.link(ep, inbox);
                    Core::new(
                        id,
                        kind,
                        device_rng(seed, id),
                        clock,
                        link,
                        params.clone(),
                        offline.clone(),
                    )
                }
            };
            let mut push = |id, kind, addr| {
                devices.push(FleetDevice {
                    id,
                    kind,
                    connectivity: conn,
                    door,
                    site,
                    addr,
                })
            };
            let lock = plan.lock.map(|id| {
                let make = make.clone();
                let a = placement.start(i, move |ctx: &mut Context<Lock>| {
                    let core = make(id, DeviceKind::Lock, ctx.address().recipient());
                    Lock::new(core, conn)
                });
                push(id, DeviceKind::Lock, DeviceAddr::Lock(a.clone()));
                a
            });
            if let Some(id) = plan.keypad {
                let make = make.clone();
                let l = lock.clone();
                let a = placement.start(i, move |ctx: &mut Context<Keypad>| {
                    let core = make(id, DeviceKind::Keypad, ctx.address().recipient());
                    Keypad::new(core, conn, l)
                });
                push(id, DeviceKind::Keypad, DeviceAddr::Keypad(a));
            }
            let phone = plan.door_phone.map(|id| {
                let make = make.clone();
                let a = placement.start(i, move |ctx: &mut Context<DoorPhone>| {
                    let core = make(id, DeviceKind::DoorPhone, ctx.address().recipient());
                    DoorPhone::new(core, None)
                });
                push(id, DeviceKind::DoorPhone, DeviceAddr::Phone(a.clone()));
                a
            });
            if let Some(id) = plan.sensor {
                let make = make.clone();
                let a = placement.start(i, move |ctx: &mut Context<DoorSensor>| {
                    let core = make(id, DeviceKind::DoorSensor, ctx.address().recipient());
                    DoorSensor::new(core)
                });
                // Build-time links: `do_send` is fine here, nothing else is
                // queued yet.
                if let Some(l) = &lock {
                    l.do_send(LinkSensor(a.clone().recipient()));
                    a.do_send(LinkLock(l.clone().recipient()));
                }
                if let Some(p) = &phone {
                    p.do_send(LinkPhoneSensor(a.clone().recipient()));
                }
                push(id, DeviceKind::DoorSensor, DeviceAddr::Sensor(a));
            }
        }
        let index = devices.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
        Fleet {
            provisioned,
            devices,
            index,
            transport,
            offline,
        }
    }

    /// Devices offline now and at most at once (waves and spells), and the
    /// events emitted so far.
    pub fn gauges(&self) -> &FleetGauges {
        &self.offline
    }

    /// Starts every device's own offline spells (scenario runs: once the
    /// codes are stored). A device whose mailbox is full is counted and
    /// skipped: its spells do not start.
    pub fn begin_offline_spells(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| d.addr.control(Control::BeginOfflineSpells).is_err())
            .count()
    }

    pub fn devices(&self) -> &[FleetDevice] {
        &self.devices
    }

    pub fn device(&self, id: DeviceId) -> Option<&FleetDevice> {
        self.index.get(&id).map(|i| &self.devices[*i])
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Waits until every device's link can be answered (over MQTT: the
    /// device linked, which it does when its actor starts on its arbiter,
    /// its connection up and its subscriptions acknowledged by the
    /// broker), at most `limit`; `Err` holds the devices and connections
    /// still not ready. A check sent earlier would fail as offline or be
    /// answered to a topic nobody listens on yet.
    pub async fn wait_links_ready(&self, limit: std::time::Duration) -> Result<(), usize> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let not_ready = self.transport.links_not_ready(self.devices.len());
            if not_ready == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(not_ready);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Presents a credential the way a person would (typing time on
    /// keypads) and resolves with the decision and the device's outcome.
    pub async fn present(
        &self,
        device: DeviceId,
        credential: WireCredential,
    ) -> Result<Presented, DeviceError> {
        self.present_with(
            device,
            Present {
                credential,
                floor: None,
                human_timing: true,
            },
        )
        .await
    }

    pub async fn present_with(
        &self,
        device: DeviceId,
        p: Present,
    ) -> Result<Presented, DeviceError> {
        let d = self
            .device(device)
            .ok_or(DeviceError::UnknownDevice(device))?;
        d.addr.present(p).await
    }

    pub async fn snapshot(&self, device: DeviceId) -> Result<Snapshot, DeviceError> {
        let d = self
            .device(device)
            .ok_or(DeviceError::UnknownDevice(device))?;
        d.addr.snapshot().await
    }

    /// Every device's snapshot, in device order.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, DeviceError> {
        let mut out = Vec::with_capacity(self.devices.len());
        for d in &self.devices {
            out.push(d.addr.snapshot().await?);
        }
        out.sort_by_key(|s| s.id);
        Ok(out)
    }

    pub fn control(&self, device: DeviceId, c: Control) -> Result<(), DeviceError> {
        let d = self
            .device(device)
            .ok_or(DeviceError::UnknownDevice(device))?;
        d.addr.control(c)
    }

    /// Pushes pending codes to every online device (in-process transport;
    /// over MQTT the engine's gateway pushes). Returns how many batches went.
    pub fn push_sync(&self) -> usize {
        match &self.transport {
            Transport::InProc(t) => t.push_sync(),
            _ => 0,
        }
    }

    /// [`Fleet::push_sync`] for `devices` only.
    pub fn push_sync_to(&self, devices: &[DeviceId]) -> usize {
        match &self.transport {
            Transport::InProc(t) => t.push_sync_to(devices),
            _ => 0,
        }
    }

    /// What every device emitted, per kind.
    pub async fn emitted(&self) -> Result<KindCounts, DeviceError> {
        let mut k = KindCounts::default();
        for s in self.snapshots().await? {
            k.merge(&s.emitted);
        }
        Ok(k)
    }

    /// One digest of every device's event trace (needs `params.trace`).
    pub async fn trace_digest(&self) -> Result<String, DeviceError> {
        let mut h = blake3::Hasher::new();
        for s in self.snapshots().await? {
            h.update(&s.id.0.to_le_bytes());
            h.update(s.trace_digest.as_deref().unwrap_or("-").as_bytes());
        }
        Ok(h.finalize().to_hex().to_string())
    }
}
