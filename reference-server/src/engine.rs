//! The access engine: the whole domain state, one entry point for every
//! change (`apply`), and the credential check (`validate`).
//!
//! Time is always an argument: the server passes the system clock, the
//! simulator its virtual or real clock. `validate` takes `&self` so that many
//! checks can run at once under a read lock; the only state a check changes
//! (use counts and keypad lockouts) is kept in atomics and per-device mutexes.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::pin_index::{Keyed, PinIndex};
use serde::{Deserialize, Serialize};

use crate::domain::*;
use crate::error::EngineError;

/// Longest name the engine stores (organizations, sites, doors, codes...).
pub const MAX_NAME_LEN: usize = 200;
/// Most doors one credential may open.
pub const MAX_DOORS_PER_CREDENTIAL: usize = 1_000;
/// Most floors a lift can serve from one door.
pub const MAX_LIFT_FLOORS: usize = 256;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Signs and checks QR and BLE tokens.
    pub token_key: TokenKey,
    /// Seeds PIN generation, so a simulated run is reproducible.
    pub seed: u64,
}

/// A person who can sign in. Tokens live in the server, not here.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub email: String,
}

/// How the PIN of a new code is chosen.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PinSpec {
    /// Random, `digits` long (the codes of guests, couriers and visitors
    /// always are: seeds/003).
    Generate { digits: u8 },
    /// A resident picks their own (custom PIN rules apply; members only).
    Custom(String),
    /// An admin types it (length, shape and uniqueness rules apply;
    /// members only).
    Manual(String),
    /// Already chosen: what the durable log records, so a replay does not
    /// draw again.
    Resolved { pin: Pin, origin: Origin },
}

impl std::fmt::Debug for PinSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSpec::Generate { digits } => write!(f, "Generate({digits})"),
            PinSpec::Custom(_) => f.write_str("Custom(redacted)"),
            PinSpec::Manual(_) => f.write_str("Manual(redacted)"),
            PinSpec::Resolved { origin, .. } => write!(f, "Resolved({origin:?}, redacted)"),
        }
    }
}

/// The secret of a new credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSpec {
    Pin {
        pin: PinSpec,
    },
    Card {
        number: u64,
    },
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Qr,
    #[serde(deserialize_with = "crate::domain::no_fields")]
    Ble,
}

/// Everything needed to issue a credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub holder: HolderId,
    pub name: String,
    pub secret: SecretSpec,
    pub schedule: Schedule,
    pub doors: Vec<DoorId>,
    /// Add the site's common-area doors (guest access to a unit includes the
    /// community's perimeter doors, seeds/002).
    #[serde(default)]
    pub include_common_areas: bool,
    #[serde(default)]
    pub floors: FloorScope,
}

/// One device's answer for one code in a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResult {
    pub credential: CredentialId,
    /// None: applied. Some: why the device could not.
    pub failure: Option<SyncFailure>,
}

/// What a device must change to match the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncBatch {
    /// Bumped on every change for this device.
    pub version: u64,
    pub set: Vec<(CredentialId, Secret)>,
    pub remove: Vec<CredentialId>,
    /// The validity of the codes in `set` that have one (by time; see
    /// `SyncValidity`), for devices that decide offline.
    pub validity: std::collections::BTreeMap<CredentialId, crate::protocol::SyncValidity>,
}

impl SyncBatch {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// Every change to the engine. `apply` authorizes it, performs it and
/// returns the resolved form (generated values filled in) for the durable log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    CreateUser {
        name: String,
        email: String,
    },
    CreateOrganization {
        name: String,
        description: String,
        owner: UserId,
        personal: bool,
    },
    UpdateOrganization {
        org: OrgId,
        name: String,
        description: String,
    },
    SetMember {
        org: OrgId,
        user: UserId,
        role: Role,
    },
    RemoveMember {
        org: OrgId,
        user: UserId,
    },
    CreateSite {
        org: OrgId,
        name: String,
        time_zone: String,
        settings: SiteSettings,
    },
    UpdateSiteSettings {
        site: SiteId,
        settings: SiteSettings,
    },
    CreateBuilding {
        site: SiteId,
        name: String,
    },
    CreateFloor {
        building: BuildingId,
        number: i16,
    },
    CreateUnit {
        floor: FloorId,
        name: String,
    },
    CreateDoor {
        site: SiteId,
        name: String,
        common_area: bool,
        unit: Option<UnitId>,
        lift_floors: Vec<FloorId>,
    },
    CreateDevice {
        door: DoorId,
        kind: DeviceKind,
        connectivity: Connectivity,
        name: String,
        location: String,
        linked_to: Option<DeviceId>,
        code_slots: u16,
    },
    UpdateGuestSettings {
        device: DeviceId,
        settings: GuestSettings,
    },
    LinkListing {
        device: DeviceId,
        listing: String,
    },
    UnlinkListing {
        device: DeviceId,
        listing: String,
    },
    CreateHolder {
        org: OrgId,
        name: String,
        kind: HolderKind,
        user: Option<UserId>,
        floors: FloorScope,
    },
    SetHolderDisabled {
        holder: HolderId,
        disabled: bool,
    },
    IssueCredential(Issue),
    /// Change a PIN: a new code replaces the old one lock by lock, as each
    /// lock confirms it.
    ChangePin {
        credential: CredentialId,
        pin: PinSpec,
    },
    SetCredentialDisabled {
        credential: CredentialId,
        disabled: bool,
    },
    RevokeCredential {
        credential: CredentialId,
    },
    CreateStay {
        holder: HolderId,
        check_in_at: Timestamp,
        check_out_at: Timestamp,
    },
    CheckIn {
        stay: StayId,
    },
    CheckOut {
        stay: StayId,
    },
    /// Pre-load `pins` on a lock as its fallback pool (resolved: the PINs).
    LoadFallbackPool {
        device: DeviceId,
        pins: Vec<PinSpec>,
    },
    /// Give the next free pool code of a lock to a holder.
    AssignFallback {
        device: DeviceId,
        holder: HolderId,
        name: String,
        schedule: Schedule,
    },
    /// The sync batch of `version` was sent to the device.
    SyncSent {
        device: DeviceId,
        version: u64,
    },
    SyncAck {
        device: DeviceId,
        results: Vec<SyncResult>,
    },
    /// Re-applies a grant's use after a restart (written by the store).
    RestoreUse {
        credential: CredentialId,
        door: DoorId,
    },
}

/// What `apply` made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    User(UserId),
    Organization(OrgId),
    Site(SiteId),
    Building(BuildingId),
    Floor(FloorId),
    Unit(UnitId),
    Door(DoorId),
    Device(DeviceId),
    Holder(HolderId),
    Credential(CredentialId),
    Stay(StayId),
    Credentials(Vec<CredentialId>),
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// The command as performed: what the durable log stores.
    pub logged: Command,
}

/// A credential as presented at a device.
#[derive(Clone, Copy, Debug)]
pub enum Presented<'a> {
    Pin(Pin),
    Card(u64),
    Qr(&'a str),
    Ble(&'a str),
}

impl Presented<'_> {
    pub fn kind(&self) -> CredentialKind {
        match self {
            Presented::Pin(_) => CredentialKind::Pin,
            Presented::Card(_) => CredentialKind::Card,
            Presented::Qr(_) => CredentialKind::Qr,
            Presented::Ble(_) => CredentialKind::Ble,
        }
    }
}

/// One credential check.
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    pub device: DeviceId,
    pub presented: Presented<'a>,
    /// The lift floor asked for at a door phone, if any.
    pub floor: Option<FloorId>,
}

struct DeviceEntry {
    device: Device,
    sync_version: u64,
    /// Fallback codes pre-loaded on this lock and not yet given out.
    fallback_pool: Vec<CredentialId>,
}

pub struct Engine {
    token_key: TokenKey,
    rng: ChaCha8Rng,
    users: Vec<User>,
    orgs: Vec<Organization>,
    roles: FxHashMap<(UserId, OrgId), Role>,
    sites: Vec<Site>,
    buildings: Vec<Building>,
    floors: Vec<Floor>,
    units: Vec<Unit>,
    doors: Vec<Door>,
    /// Devices installed at each door.
    door_devices: Vec<Vec<DeviceId>>,
    /// Credentials that open each door (the lock's code list).
    door_credentials: Vec<Vec<CredentialId>>,
    devices: Vec<DeviceEntry>,
    devices_hot: Vec<DeviceHot>,
    /// Keypad lockout state per device, apart from the rest for the same reason.
    lockouts: Vec<Mutex<Lockout>>,
    holders: Vec<Holder>,
    /// The fallback-pool holder of each organization, made on first use.
    pool_holders: FxHashMap<OrgId, HolderId>,
    stays: Vec<Stay>,
    credentials: Vec<Credential>,
    /// `pin_key(door, pin)` -> credential: which PINs a door holds (the
    /// uniqueness rules and the admin side ask by door).
    pin_index: PinIndex,
    /// `device_pin_key(device, pin)` -> credential: the keypad lookup, the
    /// same entries as `pin_index` once per device at the door. Keyed by the
    /// device a check names, the probe does not wait for the device's row
    /// (its door) to come from memory: both misses overlap.
    device_pins: PinIndex<KeypadSlot>,
    /// (site, card number) -> credential.
    card_index: FxHashMap<(SiteId, u64), CredentialId>,
}

/// Does the device hold this code (or not need to)?
#[inline]
fn usable_on(c: &Credential, id: DeviceId, dev: &DeviceHot) -> bool {
    if !dev.stores_codes {
        // Server-mode devices ask us: a replaced code stops at once there.
        return c.replaced_by.is_none();
    }
    c.placement(id).is_some_and(|p| p.state.on_device())
}

/// One u64 for (door, PIN): the door in the high half, the PIN's length and
/// value in the low half. Stored PINs have 4 or 6 digits; a keypad entry too
/// long to fit cannot match one and gets a key no stored PIN has.
#[inline]
fn pin_key(door: DoorId, pin: Pin) -> u64 {
    (u64::from(door.0) << 32) | pin_low(pin)
}

/// `pin_key` with the device in the high half: the keypad lookup.
#[inline]
fn device_pin_key(device: DeviceId, pin: Pin) -> u64 {
    (u64::from(device.0) << 32) | pin_low(pin)
}

/// The low half of a PIN key: the PIN's length and value.
#[inline]
fn pin_low(pin: Pin) -> u64 {
    let k = pin.key();
    let (len, value) = (k >> 56, k & ((1 << 56) - 1));
    if len <= 8 && value < (1 << 27) {
        (len << 27) | value
    } else {
        u64::from(u32::MAX)
    }
}

/// What a check needs of a device, packed apart from the rest of it so the
/// table of 100k devices stays small enough to sit in cache.
struct DeviceHot {
    door: DoorId,
    site: SiteId,
    stores_codes: bool,
    /// Wrong tries are on record (a grant must clear them).
    wrong_tries: AtomicBool,
    /// The keypad's lockout end in Unix seconds (0: not locked), mirrored
    /// from its `Lockout` so the happy path needs no lock.
    locked_until_s: AtomicI64,
}

/// One entry of the keypad lookup (`device_pins`): the key, the credential,
/// and what the common grant needs of that credential on this device, in
/// one cache line. A check that finds a `FAST` slot decides from it (plus
/// the holder's flag, the site's time zone and, for a limited code, its use
/// count) and reads no credential row. Every other slot sends the check
/// down the full path over the credential.
///
/// Derived from the credential and the device (`KeypadSlot::of`); `apply`
/// rederives the slots of every credential a command may change.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
struct KeypadSlot {
    key: u64,
    /// `Schedule::bounds_ns`.
    bounds_ns: (i64, i64),
    window: DailyWindow,
    credential: CredentialId,
    holder: HolderId,
    site: SiteId,
    /// `UseLimit::Total(n)`'s n (with `LIMITED`).
    max_uses: u32,
    days: Weekdays,
    flags: u8,
    origin: Origin,
}

const _: () = assert!(std::mem::size_of::<KeypadSlot>() == 64);

impl KeypadSlot {
    /// Decides from the slot: on this device the code is held (or need not
    /// be), usable (not an unassigned fallback code, not revoked, not
    /// disabled), no stay, bounds that fit `bounds_ns`, no per-door count.
    const FAST: u8 = 1;
    /// The schedule repeats weekly in `window` on `days`.
    const WEEKLY: u8 = 2;
    /// `UseLimit::Total(max_uses)`.
    const LIMITED: u8 = 4;

    /// A key whose slot is not derived yet (not `FAST`).
    fn pending(key: u64, credential: CredentialId) -> KeypadSlot {
        KeypadSlot {
            key,
            credential,
            ..KeypadSlot::default()
        }
    }

    fn of(key: u64, c: &Credential, id: DeviceId, dev: &DeviceHot) -> KeypadSlot {
        let limit = c.schedule.use_limit();
        let bounds = c.schedule.bounds_ns();
        let weekly = c.schedule.weekly();
        let fast = !c.unassigned_fallback
            && usable_on(c, id, dev)
            && !c.revoked
            && !c.disabled
            && !matches!(c.schedule, Schedule::Stay { .. })
            && !matches!(limit, UseLimit::PerDoor(_))
            && bounds.is_some();
        let mut flags = 0;
        if fast {
            flags |= KeypadSlot::FAST;
        }
        if weekly.is_some() {
            flags |= KeypadSlot::WEEKLY;
        }
        let max_uses = match limit {
            UseLimit::Total(n) => {
                flags |= KeypadSlot::LIMITED;
                n
            }
            _ => 0,
        };
        let (days, window) = weekly.unwrap_or((Weekdays::NONE, DailyWindow::WHOLE_DAY));
        KeypadSlot {
            key,
            bounds_ns: bounds.unwrap_or((i64::MIN, i64::MAX)),
            window,
            credential: c.id,
            holder: c.holder,
            site: c.site,
            max_uses,
            days,
            flags,
            origin: c.origin,
        }
    }
}

impl Default for KeypadSlot {
    fn default() -> KeypadSlot {
        KeypadSlot {
            key: 0,
            bounds_ns: (i64::MIN, i64::MAX),
            window: DailyWindow::WHOLE_DAY,
            credential: CredentialId(0),
            holder: HolderId(0),
            site: SiteId(0),
            max_uses: 0,
            days: Weekdays::NONE,
            flags: 0,
            origin: Origin::Automatic,
        }
    }
}

impl Keyed for KeypadSlot {
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

/// Characters no name may hold: control characters (C0 with NUL, DEL,
/// C1) break logs, terminals and CSV exports, and the bidirectional
/// overrides and isolates (U+202A-U+202E, U+2066-U+2069) make a name
/// display as another ("Trojan Source").
pub fn refused_char(c: char) -> bool {
    c.is_control()
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// The one check of every name-like text the engine stores (names,
/// emails, descriptions, locations, listings): at most [`MAX_NAME_LEN`]
/// bytes and no [`refused_char`]; `required`: not blank either. The error
/// names `field` and the rule, never the text.
pub fn check_text(field: &'static str, s: &str, required: bool) -> Result<(), EngineError> {
    if required && s.trim().is_empty() {
        return Err(EngineError::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(EngineError::invalid(
            field,
            format!("at most {MAX_NAME_LEN} bytes"),
        ));
    }
    if let Some((at, c)) = s.char_indices().find(|(_, c)| refused_char(*c)) {
        return Err(EngineError::invalid(
            field,
            format!(
                "must not contain control characters or bidirectional overrides \
                 (U+{:04X} at byte {at})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// [`check_text`] for a required name.
pub fn check_name(field: &'static str, s: &str) -> Result<(), EngineError> {
    check_text(field, s, true)
}

/// The id `cmd` is about (its organization is the command's) and every id
/// its body names; `None` for commands about no organization (users, new
/// organizations) and the system's own (sync, replayed uses).
fn command_refs(cmd: &Command) -> Option<(Ref, Vec<Ref>)> {
    use Command::*;
    let floors = |f: &FloorScope| match f {
        FloorScope::Any => Vec::new(),
        FloorScope::Only(fs) => fs.iter().map(|f| Ref::Floor(*f)).collect(),
        FloorScope::FollowHolder(h) => vec![Ref::Holder(*h)],
    };
    let stay = |s: &Schedule| match s {
        Schedule::Stay { stay } => Some(Ref::Stay(*stay)),
        _ => None,
    };
    let doors = |d: &[DoorId]| d.iter().map(|d| Ref::Door(*d)).collect::<Vec<_>>();
    Some(match cmd {
        CreateUser { .. }
        | CreateOrganization { .. }
        | SyncSent { .. }
        | SyncAck { .. }
        | RestoreUse { .. } => return None,
        UpdateOrganization { org, .. } | RemoveMember { org, .. } | CreateSite { org, .. } => {
            (Ref::Organization(*org), Vec::new())
        }
        SetMember { org, role, .. } => (
            Ref::Organization(*org),
            match role {
                Role::DoorAdmin { doors: d } => doors(d),
                Role::Owner | Role::Admin => Vec::new(),
            },
        ),
        UpdateSiteSettings { site, .. } | CreateBuilding { site, .. } => {
            (Ref::Site(*site), Vec::new())
        }
        CreateDoor {
            site,
            unit,
            lift_floors,
            ..
        } => (
            Ref::Site(*site),
            unit.map(Ref::Unit)
                .into_iter()
                .chain(lift_floors.iter().map(|f| Ref::Floor(*f)))
                .collect(),
        ),
        CreateFloor { building, .. } => (Ref::Building(*building), Vec::new()),
        CreateUnit { floor, .. } => (Ref::Floor(*floor), Vec::new()),
        CreateDevice {
            door, linked_to, ..
        } => (
            Ref::Door(*door),
            linked_to.map(Ref::Device).into_iter().collect(),
        ),
        UpdateGuestSettings { device, .. }
        | LinkListing { device, .. }
        | UnlinkListing { device, .. }
        | LoadFallbackPool { device, .. } => (Ref::Device(*device), Vec::new()),
        AssignFallback {
            device,
            holder,
            schedule,
            ..
        } => (
            Ref::Device(*device),
            std::iter::once(Ref::Holder(*holder))
                .chain(stay(schedule))
                .collect(),
        ),
        CreateHolder { org, floors: f, .. } => (Ref::Organization(*org), floors(f)),
        SetHolderDisabled { holder, .. } | CreateStay { holder, .. } => {
            (Ref::Holder(*holder), Vec::new())
        }
        IssueCredential(issue) => (
            Ref::Holder(issue.holder),
            doors(&issue.doors)
                .into_iter()
                .chain(stay(&issue.schedule))
                .chain(floors(&issue.floors))
                .collect(),
        ),
        ChangePin { credential, .. }
        | SetCredentialDisabled { credential, .. }
        | RevokeCredential { credential } => (Ref::Credential(*credential), Vec::new()),
        CheckIn { stay } | CheckOut { stay } => (Ref::Stay(*stay), Vec::new()),
    })
}

fn get<'a, T>(v: &'a [T], kind: &'static str, id: u32) -> Result<&'a T, EngineError> {
    v.get(id as usize)
        .ok_or_else(|| EngineError::not_found(kind, id))
}

fn next_id(len: usize, kind: &'static str) -> Result<u32, EngineError> {
    u32::try_from(len).map_err(|_| EngineError::invalid(kind, "too many"))
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            token_key: config.token_key,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            users: Vec::new(),
            orgs: Vec::new(),
            roles: FxHashMap::default(),
            sites: Vec::new(),
            buildings: Vec::new(),
            floors: Vec::new(),
            units: Vec::new(),
            doors: Vec::new(),
            door_devices: Vec::new(),
            door_credentials: Vec::new(),
            devices: Vec::new(),
            devices_hot: Vec::new(),
            lockouts: Vec::new(),
            holders: Vec::new(),
            pool_holders: FxHashMap::default(),
            stays: Vec::new(),
            credentials: Vec::new(),
            pin_index: PinIndex::new(),
            device_pins: PinIndex::new(),
            card_index: FxHashMap::default(),
        }
    }

    // ----- authorization -------------------------------------------------

    /// The one permission check. `Actor::System` (store replay, simulator
    /// provisioning) may do anything; a user needs a role in the org.
    pub fn authorize(&self, actor: &Actor, action: &Action) -> Result<(), EngineError> {
        let user = match actor {
            Actor::System => return Ok(()),
            Actor::User(u) => *u,
        };
        let org = action.org();
        let allowed = self
            .roles
            .get(&(user, org))
            .is_some_and(|role| role_allows(role, action));
        if allowed {
            Ok(())
        } else {
            Err(EngineError::Forbidden {
                action: action.name(),
                org,
            })
        }
    }

    /// May `actor` open `device`'s door remotely now? Access managers may; a
    /// guest may where the lock allows it and they hold a currently valid
    /// credential for the door.
    pub fn authorize_open(
        &self,
        actor: &Actor,
        device: DeviceId,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let dev = &get(&self.devices, "device", device.0)?.device;
        let org = self.sites[dev.site.index()].org;
        let action = Action::OpenDoor {
            org,
            door: dev.door,
        };
        let denied = match self.authorize(actor, &action) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let Actor::User(user) = actor else {
            return Err(denied);
        };
        // Someone with no role in the organization hears what an unknown
        // device would answer, unless they hold a key to this door.
        let denied = if self.roles.contains_key(&(*user, org)) {
            denied
        } else {
            EngineError::not_found("device", device.0)
        };
        if !self.guest_settings_for(dev).guest_can_open_remotely {
            return Err(denied);
        }
        let holds_valid = self.door_credentials[dev.door.index()].iter().any(|c| {
            let c = &self.credentials[c.index()];
            self.holders[c.holder.index()].user == Some(*user)
                && self.active_status(c, now) == ActiveStatus::Active
                && self.stay_check(c, device, now).is_ok()
        });
        if holds_valid {
            Ok(())
        } else {
            Err(denied)
        }
    }

    /// The organization `r` belongs to; `NotFound` for an unknown id.
    pub fn org_of(&self, r: Ref) -> Result<OrgId, EngineError> {
        let site = |s: SiteId| self.sites.get(s.index()).map(|s| s.org);
        let building = |b: BuildingId| self.buildings.get(b.index()).and_then(|b| site(b.site));
        let floor = |f: FloorId| {
            self.floors
                .get(f.index())
                .and_then(|f| building(f.building))
        };
        let org = match r {
            Ref::Organization(o) => self.orgs.get(o.index()).map(|o| o.id),
            Ref::Site(s) => site(s),
            Ref::Building(b) => building(b),
            Ref::Floor(f) => floor(f),
            Ref::Unit(u) => self.units.get(u.index()).and_then(|u| floor(u.floor)),
            Ref::Door(d) => self.doors.get(d.index()).and_then(|d| site(d.site)),
            Ref::Device(d) => self
                .devices
                .get(d.index())
                .and_then(|d| site(d.device.site)),
            Ref::Holder(h) => self.holders.get(h.index()).map(|h| h.org),
            Ref::Credential(c) => self.credentials.get(c.index()).map(|c| c.org),
            Ref::Stay(s) => self.stays.get(s.index()).map(|s| s.org),
        };
        org.ok_or_else(|| EngineError::not_found(r.kind(), r.id()))
    }

    /// The organization of the id a request is about, for `actor`: the
    /// one resolver every route and command goes through. An id of an
    /// organization where the actor has no role is answered exactly as an
    /// unknown id (`NotFound` of the same kind), so no answer tells anyone
    /// which ids exist elsewhere. A member whose role does not allow the
    /// action gets `Forbidden` from `authorize` (members see the
    /// organization anyway).
    pub fn resolve(&self, actor: &Actor, r: Ref) -> Result<OrgId, EngineError> {
        let org = self.org_of(r)?;
        match actor {
            Actor::System => Ok(org),
            Actor::User(u) if self.roles.contains_key(&(*u, org)) => Ok(org),
            Actor::User(_) => Err(EngineError::not_found(r.kind(), r.id())),
        }
    }

    /// `resolve`, then `authorize` the action made from the organization:
    /// the check of a read or change about one id.
    pub fn authorize_on(
        &self,
        actor: &Actor,
        r: Ref,
        action: impl FnOnce(OrgId) -> Action,
    ) -> Result<OrgId, EngineError> {
        let org = self.resolve(actor, r)?;
        self.authorize(actor, &action(org))?;
        Ok(org)
    }

    /// An id a command's body names (a door of a credential, a role's
    /// doors, a door's unit) must belong to the command's organization;
    /// one of another organization is answered as an unknown one, whoever
    /// asks: a reference across organizations is never stored.
    fn require_in(&self, org: OrgId, r: Ref) -> Result<(), EngineError> {
        if self.org_of(r)? == org {
            Ok(())
        } else {
            Err(EngineError::not_found(r.kind(), r.id()))
        }
    }

    /// Which action a command needs: resolves the id it is about and checks
    /// every id its body names (`command_refs`).
    fn action_for(&self, actor: &Actor, cmd: &Command) -> Result<Option<Action>, EngineError> {
        use Command::*;
        let Some((target, body)) = command_refs(cmd) else {
            return match (cmd, actor) {
                (_, Actor::System) => Ok(None),
                // Anyone may create an organization they will own.
                (CreateOrganization { owner, .. }, Actor::User(u)) if u == owner => Ok(None),
                (CreateOrganization { .. }, Actor::User(_)) => Err(EngineError::Forbidden {
                    action: "create_organization",
                    org: OrgId(u32::MAX),
                }),
                // Sign-up, device traffic and replay are the system's own.
                (_, Actor::User(_)) => Err(EngineError::Forbidden {
                    action: "system",
                    org: OrgId(u32::MAX),
                }),
            };
        };
        let org = self.resolve(actor, target)?;
        for r in body {
            self.require_in(org, r)?;
        }
        let access = |doors: Vec<DoorId>| Action::ManageAccess { org, doors };
        // Resolved above: the device or credential exists.
        Ok(Some(match cmd {
            UpdateGuestSettings { device, .. }
            | LoadFallbackPool { device, .. }
            | AssignFallback { device, .. } => {
                access(vec![self.devices[device.index()].device.door])
            }
            CreateHolder { .. }
            | SetHolderDisabled { .. }
            | CreateStay { .. }
            | CheckIn { .. }
            | CheckOut { .. } => access(Vec::new()),
            IssueCredential(issue) => access(issue.doors.clone()),
            ChangePin { credential, .. }
            | SetCredentialDisabled { credential, .. }
            | RevokeCredential { credential } => {
                access(self.credentials[credential.index()].doors.clone())
            }
            // The organization itself: settings, members, places, devices.
            _ => Action::ManageOrganization(org),
        }))
    }

    // ----- changes ---------------------------------------------------------

    /// Authorizes and performs one change. On error nothing changed.
    pub fn apply(
        &mut self,
        actor: &Actor,
        cmd: Command,
        now: Timestamp,
    ) -> Result<Applied, EngineError> {
        if let Some(action) = self.action_for(actor, &cmd)? {
            self.authorize(actor, &action)?;
        }
        let touched = self.keypad_touched(&cmd);
        let before = self.credentials.len();
        let applied = self.perform(cmd, now);
        // Rederive the keypad slots, whatever the outcome: a command that
        // fails halfway may have changed a credential.
        let new = (before..self.credentials.len()).map(|i| CredentialId(i as u32));
        for id in touched.into_iter().chain(new) {
            self.refresh_keypad(id);
        }
        #[cfg(test)]
        self.assert_pin_indexes_agree();
        applied
    }

    fn perform(&mut self, cmd: Command, now: Timestamp) -> Result<Applied, EngineError> {
        use Command::*;
        let done = |cmd: Command| {
            Ok(Applied {
                outcome: Outcome::Done,
                logged: cmd,
            })
        };
        match cmd {
            CreateUser {
                ref name,
                ref email,
            } => {
                check_name("name", name)?;
                check_name("email", email)?;
                if !email.contains('@') {
                    return Err(EngineError::invalid("email", "must contain @"));
                }
                let id = UserId(next_id(self.users.len(), "user")?);
                self.users.push(User {
                    id,
                    name: name.clone(),
                    email: email.clone(),
                });
                Ok(Applied {
                    outcome: Outcome::User(id),
                    logged: cmd,
                })
            }
            CreateOrganization {
                ref name,
                ref description,
                owner,
                personal,
            } => {
                check_name("name", name)?;
                check_text("description", description, false)?;
                get(&self.users, "user", owner.0)?;
                let id = OrgId(next_id(self.orgs.len(), "organization")?);
                self.orgs.push(Organization {
                    id,
                    name: name.clone(),
                    description: description.clone(),
                    personal,
                });
                self.roles.insert((owner, id), Role::Owner);
                Ok(Applied {
                    outcome: Outcome::Organization(id),
                    logged: cmd,
                })
            }
            UpdateOrganization {
                org,
                ref name,
                ref description,
            } => {
                check_name("name", name)?;
                check_text("description", description, false)?;
                let o = self
                    .orgs
                    .get_mut(org.index())
                    .ok_or_else(|| EngineError::not_found("organization", org.0))?;
                o.name = name.clone();
                o.description = description.clone();
                done(cmd)
            }
            SetMember {
                org,
                user,
                ref role,
            } => {
                get(&self.orgs, "organization", org.0)?;
                get(&self.users, "user", user.0)?;
                if let Role::DoorAdmin { doors } = role {
                    if doors.is_empty() {
                        return Err(EngineError::invalid(
                            "doors",
                            "a door admin needs at least one door",
                        ));
                    }
                    // Each door is of `org`: `action_for` checked the body's ids.
                }
                self.roles.insert((user, org), role.clone());
                done(cmd)
            }
            RemoveMember { org, user } => {
                if self.roles.get(&(user, org)) == Some(&Role::Owner)
                    && self
                        .roles
                        .iter()
                        .filter(|((_, o), r)| *o == org && **r == Role::Owner)
                        .count()
                        == 1
                {
                    return Err(EngineError::invalid(
                        "user",
                        "an organization keeps at least one owner",
                    ));
                }
                self.roles
                    .remove(&(user, org))
                    .ok_or_else(|| EngineError::not_found("member", user.0))?;
                done(cmd)
            }
            CreateSite {
                org,
                ref name,
                ref time_zone,
                settings,
            } => {
                check_name("name", name)?;
                get(&self.orgs, "organization", org.0)?;
                settings
                    .lockout
                    .check()
                    .map_err(|r| EngineError::invalid("settings.lockout", r))?;
                let tz = TimeZone::get(time_zone).map_err(|_| {
                    EngineError::invalid(
                        "time_zone",
                        format!("{time_zone:?} is not an IANA time zone (like Europe/Berlin)"),
                    )
                })?;
                let id = SiteId(next_id(self.sites.len(), "site")?);
                self.sites.push(Site {
                    id,
                    org,
                    name: name.clone(),
                    time_zone: time_zone.clone(),
                    tz,
                    settings,
                });
                Ok(Applied {
                    outcome: Outcome::Site(id),
                    logged: cmd,
                })
            }
            UpdateSiteSettings { site, settings } => {
                settings
                    .lockout
                    .check()
                    .map_err(|r| EngineError::invalid("settings.lockout", r))?;
                let s = self
                    .sites
                    .get_mut(site.index())
                    .ok_or_else(|| EngineError::not_found("site", site.0))?;
                s.settings = settings;
                done(cmd)
            }
            CreateBuilding { site, ref name } => {
                check_name("name", name)?;
                get(&self.sites, "site", site.0)?;
                let id = BuildingId(next_id(self.buildings.len(), "building")?);
                self.buildings.push(Building {
                    id,
                    site,
                    name: name.clone(),
                });
                Ok(Applied {
                    outcome: Outcome::Building(id),
                    logged: cmd,
                })
            }
            CreateFloor { building, number } => {
                get(&self.buildings, "building", building.0)?;
                let id = FloorId(next_id(self.floors.len(), "floor")?);
                self.floors.push(Floor {
                    id,
                    building,
                    number,
                });
                Ok(Applied {
                    outcome: Outcome::Floor(id),
                    logged: cmd,
                })
            }
            CreateUnit { floor, ref name } => {
                check_name("name", name)?;
                get(&self.floors, "floor", floor.0)?;
                let id = UnitId(next_id(self.units.len(), "unit")?);
                self.units.push(Unit {
                    id,
                    floor,
                    name: name.clone(),
                });
                Ok(Applied {
                    outcome: Outcome::Unit(id),
                    logged: cmd,
                })
            }
            CreateDoor {
                site,
                ref name,
                common_area,
                unit,
                ref lift_floors,
            } => {
                check_name("name", name)?;
                get(&self.sites, "site", site.0)?;
                if lift_floors.len() > MAX_LIFT_FLOORS {
                    return Err(EngineError::invalid(
                        "lift_floors",
                        format!("at most {MAX_LIFT_FLOORS}"),
                    ));
                }
                // Of the site's organization (`action_for`); of the site
                // itself too: a door phone serves its own building's lift.
                let floor_site = |f: FloorId| -> Result<SiteId, EngineError> {
                    let b = get(&self.floors, "floor", f.0)?.building;
                    Ok(get(&self.buildings, "building", b.0)?.site)
                };
                if let Some(u) = unit {
                    if floor_site(get(&self.units, "unit", u.0)?.floor)? != site {
                        return Err(EngineError::invalid("unit", "must be on the door's site"));
                    }
                }
                for f in lift_floors {
                    if floor_site(*f)? != site {
                        return Err(EngineError::invalid(
                            "lift_floors",
                            format!("{f} is not on the door's site"),
                        ));
                    }
                }
                let id = DoorId(next_id(self.doors.len(), "door")?);
                self.doors.push(Door {
                    id,
                    site,
                    name: name.clone(),
                    common_area,
                    unit,
                    lift_floors: lift_floors.clone(),
                });
                self.door_devices.push(Vec::new());
                self.door_credentials.push(Vec::new());
                Ok(Applied {
                    outcome: Outcome::Door(id),
                    logged: cmd,
                })
            }
            CreateDevice {
                door,
                kind,
                connectivity,
                ref name,
                ref location,
                linked_to,
                code_slots,
            } => {
                check_name("name", name)?;
                check_text("location", location, false)?;
                let site = get(&self.doors, "door", door.0)?.site;
                if let Some(l) = linked_to {
                    let target = &get(&self.devices, "device", l.0)?.device;
                    if target.kind != DeviceKind::Lock || target.door != door {
                        return Err(EngineError::invalid(
                            "linked_to",
                            "must be a lock on the same door",
                        ));
                    }
                }
                let stores_codes = matches!(kind, DeviceKind::Lock | DeviceKind::Keypad);
                if stores_codes && code_slots == 0 {
                    return Err(EngineError::invalid(
                        "code_slots",
                        "a lock or keypad needs at least one code slot",
                    ));
                }
                let id = DeviceId(next_id(self.devices.len(), "device")?);
                let device = Device {
                    id,
                    site,
                    door,
                    kind,
                    connectivity,
                    name: name.clone(),
                    location: location.clone(),
                    linked_to,
                    listings: Vec::new(),
                    guest: GuestSettings::default(),
                    code_slots,
                    stores_codes,
                };
                self.devices.push(DeviceEntry {
                    device,
                    sync_version: 0,
                    fallback_pool: Vec::new(),
                });
                crate::huge::push(
                    &mut self.devices_hot,
                    DeviceHot {
                        door,
                        site,
                        stores_codes,
                        wrong_tries: AtomicBool::new(false),
                        locked_until_s: AtomicI64::new(0),
                    },
                );
                self.lockouts.push(Mutex::new(Lockout::default()));
                self.door_devices[door.index()].push(id);
                // The keypad lookup gets the PINs the door already holds.
                for c in &self.door_credentials[door.index()] {
                    if let Secret::Pin(p) = self.credentials[c.index()].secret {
                        if self.pin_index.get(pin_key(door, p)) == Some(*c) {
                            self.device_pins
                                .put(KeypadSlot::pending(device_pin_key(id, p), *c));
                        }
                    }
                }
                // Codes that already open this door must reach the new device.
                if stores_codes {
                    let existing = self.door_credentials[door.index()].clone();
                    for c in existing {
                        let cred = &mut self.credentials[c.index()];
                        if cred.kind.stored_on_device() && !cred.revoked {
                            cred.placements.push(Placement {
                                device: id,
                                state: SyncState::Pending,
                            });
                            self.devices[id.index()].sync_version += 1;
                        }
                    }
                }
                Ok(Applied {
                    outcome: Outcome::Device(id),
                    logged: cmd,
                })
            }
            UpdateGuestSettings { device, settings } => {
                let d = self
                    .devices
                    .get_mut(device.index())
                    .ok_or_else(|| EngineError::not_found("device", device.0))?;
                d.device.guest = settings;
                done(cmd)
            }
            LinkListing {
                device,
                ref listing,
            } => {
                check_name("listing", listing)?;
                let d = self
                    .devices
                    .get_mut(device.index())
                    .ok_or_else(|| EngineError::not_found("device", device.0))?;
                if !d.device.listings.contains(listing) {
                    d.device.listings.push(listing.clone());
                }
                done(cmd)
            }
            UnlinkListing {
                device,
                ref listing,
            } => {
                let d = self
                    .devices
                    .get_mut(device.index())
                    .ok_or_else(|| EngineError::not_found("device", device.0))?;
                let before = d.device.listings.len();
                d.device.listings.retain(|l| l != listing);
                if d.device.listings.len() == before {
                    return Err(EngineError::not_found("listing", 0));
                }
                done(cmd)
            }
            CreateHolder {
                org,
                ref name,
                kind,
                user,
                ref floors,
            } => {
                check_name("name", name)?;
                get(&self.orgs, "organization", org.0)?;
                if let Some(u) = user {
                    get(&self.users, "user", u.0)?;
                }
                self.check_floor_scope(floors)?;
                let id = HolderId(next_id(self.holders.len(), "holder")?);
                self.holders.push(Holder {
                    id,
                    org,
                    name: name.clone(),
                    kind,
                    user,
                    disabled: false,
                    floors: floors.clone(),
                });
                Ok(Applied {
                    outcome: Outcome::Holder(id),
                    logged: cmd,
                })
            }
            SetHolderDisabled { holder, disabled } => {
                let h = self
                    .holders
                    .get_mut(holder.index())
                    .ok_or_else(|| EngineError::not_found("holder", holder.0))?;
                h.disabled = disabled;
                done(cmd)
            }
            IssueCredential(issue) => {
                let (id, resolved) = self.issue(issue, None, now)?;
                Ok(Applied {
                    outcome: Outcome::Credential(id),
                    logged: IssueCredential(resolved),
                })
            }
            ChangePin { credential, pin } => self.change_pin(credential, pin, now),
            SetCredentialDisabled {
                credential,
                disabled,
            } => {
                let c = self
                    .credentials
                    .get_mut(credential.index())
                    .ok_or_else(|| EngineError::not_found("credential", credential.0))?;
                c.disabled = disabled;
                done(cmd)
            }
            RevokeCredential { credential } => {
                self.revoke(credential)?;
                done(cmd)
            }
            CreateStay {
                holder,
                check_in_at,
                check_out_at,
            } => {
                let org = get(&self.holders, "holder", holder.0)?.org;
                if check_out_at <= check_in_at {
                    return Err(EngineError::invalid(
                        "check_out_at",
                        "must be after check_in_at",
                    ));
                }
                let id = StayId(next_id(self.stays.len(), "stay")?);
                self.stays.push(Stay {
                    id,
                    org,
                    holder,
                    check_in_at,
                    check_out_at,
                    checked_in: false,
                    checked_out: false,
                });
                Ok(Applied {
                    outcome: Outcome::Stay(id),
                    logged: cmd,
                })
            }
            CheckIn { stay } => {
                let s = self
                    .stays
                    .get_mut(stay.index())
                    .ok_or_else(|| EngineError::not_found("stay", stay.0))?;
                if s.checked_out {
                    return Err(EngineError::invalid("stay", "already checked out"));
                }
                s.checked_in = true;
                done(cmd)
            }
            CheckOut { stay } => {
                let s = self
                    .stays
                    .get_mut(stay.index())
                    .ok_or_else(|| EngineError::not_found("stay", stay.0))?;
                s.checked_out = true;
                done(cmd)
            }
            LoadFallbackPool { device, pins } => self.load_fallback_pool(device, pins, now),
            AssignFallback {
                device,
                holder,
                ref name,
                ref schedule,
            } => {
                check_name("name", name)?;
                schedule.check()?;
                // The holder is of the device's organization (`action_for`).
                get(&self.holders, "holder", holder.0)?;
                let entry = &mut self.devices[device.index()];
                let Some(id) = entry.fallback_pool.first().copied() else {
                    return Err(EngineError::invalid(
                        "device",
                        "the fallback pool of this lock is empty",
                    ));
                };
                entry.fallback_pool.remove(0);
                let c = &mut self.credentials[id.index()];
                c.holder = holder;
                c.name = name.clone();
                c.schedule = schedule.clone();
                c.uses = UseCounter::new(c.doors.len(), schedule.use_limit());
                c.unassigned_fallback = false;
                Ok(Applied {
                    outcome: Outcome::Credential(id),
                    logged: cmd,
                })
            }
            SyncSent { device, version } => {
                let entry = self
                    .devices
                    .get(device.index())
                    .ok_or_else(|| EngineError::not_found("device", device.0))?;
                if version > entry.sync_version {
                    return Err(EngineError::invalid("version", "newer than the engine's"));
                }
                for c in self.door_credentials[entry.device.door.index()].clone() {
                    if let Some(p) = self.credentials[c.index()].placement_mut(device) {
                        if p.state == SyncState::Pending {
                            p.state = SyncState::Setting;
                        }
                    }
                }
                done(cmd)
            }
            SyncAck {
                device,
                ref results,
            } => {
                self.sync_ack(device, results)?;
                done(cmd)
            }
            RestoreUse { credential, door } => {
                let c = get(&self.credentials, "credential", credential.0)?;
                c.uses.restore(c.door_slot(door));
                done(cmd)
            }
        }
    }

    fn check_floor_scope(&self, floors: &FloorScope) -> Result<(), EngineError> {
        match floors {
            FloorScope::Any => Ok(()),
            FloorScope::Only(fs) => fs
                .iter()
                .try_for_each(|f| get(&self.floors, "floor", f.0).map(|_| ())),
            FloorScope::FollowHolder(h) => get(&self.holders, "holder", h.0).map(|_| ()),
        }
    }

    fn pin_policy(&self, site: SiteId) -> PinPolicy {
        let s = &self.sites[site.index()].settings;
        PinPolicy {
            six_digits_enabled: s.six_digit_pins,
            custom_pins_enabled: s.custom_pins,
        }
    }

    /// Is `pin` free on every door (ignoring revoked codes and `except`)?
    fn pin_free(&self, pin: Pin, doors: &[DoorId], except: Option<CredentialId>) -> bool {
        doors
            .iter()
            .all(|d| match self.pin_index.get(pin_key(*d, pin)) {
                None => true,
                Some(c) => Some(c) == except || self.credentials[c.index()].revoked,
            })
    }

    fn resolve_pin(
        &mut self,
        spec: PinSpec,
        site: SiteId,
        doors: &[DoorId],
        except: Option<CredentialId>,
    ) -> Result<(Pin, Origin), EngineError> {
        let policy = self.pin_policy(site);
        let (pin, origin) = match spec {
            PinSpec::Generate { digits } => {
                let mut rng = std::mem::replace(&mut self.rng, ChaCha8Rng::seed_from_u64(0));
                let r = policy.generate(usize::from(digits), &mut rng, |p| {
                    !self.pin_free(p, doors, except)
                });
                self.rng = rng;
                (r?, Origin::Automatic)
            }
            PinSpec::Custom(text) => {
                let community = doors.iter().any(|d| self.doors[d.index()].common_area);
                (policy.check_custom(&text, community)?, Origin::Manual)
            }
            PinSpec::Manual(text) => {
                let open = PinPolicy {
                    custom_pins_enabled: true,
                    ..policy
                };
                (open.check_custom(&text, false)?, Origin::Manual)
            }
            PinSpec::Resolved { pin, origin } => (pin, origin),
        };
        if !self.pin_free(pin, doors, except) {
            return Err(PinRuleError::InUse.into());
        }
        Ok((pin, origin))
    }

    fn issue(
        &mut self,
        mut issue: Issue,
        replaces: Option<CredentialId>,
        now: Timestamp,
    ) -> Result<(CredentialId, Issue), EngineError> {
        check_name("name", &issue.name)?;
        issue.schedule.check()?;
        let holder = get(&self.holders, "holder", issue.holder.0)?;
        let org = holder.org;
        // seeds/003: guest codes are randomly generated, not customizable.
        let typed = matches!(
            issue.secret,
            SecretSpec::Pin {
                pin: PinSpec::Custom(_) | PinSpec::Manual(_)
            }
        );
        if typed && holder.kind != HolderKind::Member {
            return Err(PinRuleError::GuestCodeGenerated.into());
        }
        if issue.doors.is_empty() {
            return Err(EngineError::invalid(
                "doors",
                "a credential opens at least one door",
            ));
        }
        if issue.doors.len() > MAX_DOORS_PER_CREDENTIAL {
            return Err(EngineError::invalid(
                "doors",
                format!("at most {MAX_DOORS_PER_CREDENTIAL}"),
            ));
        }
        let site = get(&self.doors, "door", issue.doors[0].0)?.site;
        for d in &issue.doors {
            let door = get(&self.doors, "door", d.0)?;
            if door.site != site {
                return Err(EngineError::invalid(
                    "doors",
                    "all doors of a credential are on one site",
                ));
            }
        }
        // `action_for` answered doors of another organization as unknown.
        debug_assert_eq!(
            self.sites[site.index()].org,
            org,
            "doors of the holder's org"
        );
        if let Schedule::Stay { stay } = issue.schedule {
            let s = get(&self.stays, "stay", stay.0)?;
            if s.holder != issue.holder {
                return Err(EngineError::invalid(
                    "schedule.stay",
                    "the stay belongs to another holder",
                ));
            }
        }
        self.check_floor_scope(&issue.floors)?;
        if issue.include_common_areas {
            for door in &self.doors {
                if door.site == site && door.common_area && !issue.doors.contains(&door.id) {
                    issue.doors.push(door.id);
                }
            }
            issue.include_common_areas = false;
            if issue.doors.len() > MAX_DOORS_PER_CREDENTIAL {
                return Err(EngineError::invalid(
                    "doors",
                    format!("at most {MAX_DOORS_PER_CREDENTIAL} with common areas"),
                ));
            }
        }
        issue.doors.sort_unstable();
        issue.doors.dedup();
        let id = CredentialId(next_id(self.credentials.len(), "credential")?);
        let (kind, secret, origin) = match &issue.secret {
            SecretSpec::Pin { pin } => {
                let (pin, origin) = self.resolve_pin(pin.clone(), site, &issue.doors, replaces)?;
                issue.secret = SecretSpec::Pin {
                    pin: PinSpec::Resolved { pin, origin },
                };
                (CredentialKind::Pin, Secret::Pin(pin), origin)
            }
            SecretSpec::Card { number } => {
                if let Some(c) = self.card_index.get(&(site, *number)) {
                    if !self.credentials[c.index()].revoked {
                        return Err(EngineError::invalid(
                            "number",
                            "this card is already in use on the site",
                        ));
                    }
                }
                (CredentialKind::Card, Secret::Card(*number), Origin::Manual)
            }
            SecretSpec::Qr => (
                CredentialKind::Qr,
                Secret::Token { version: 0 },
                Origin::Automatic,
            ),
            SecretSpec::Ble => (
                CredentialKind::Ble,
                Secret::Token { version: 0 },
                Origin::Automatic,
            ),
        };
        match secret {
            Secret::Pin(p) => {
                for d in &issue.doors {
                    self.index_pin(*d, p, id);
                }
            }
            Secret::Card(n) => {
                self.card_index.insert((site, n), id);
            }
            Secret::Token { .. } => {}
        }
        let mut placements = Placements::new();
        if kind.stored_on_device() {
            for d in &issue.doors {
                for dev in &self.door_devices[d.index()] {
                    let entry = &mut self.devices[dev.index()];
                    if entry.device.stores_codes {
                        placements.push(Placement {
                            device: *dev,
                            state: SyncState::Pending,
                        });
                        entry.sync_version += 1;
                    }
                }
            }
        }
        for d in &issue.doors {
            self.door_credentials[d.index()].push(id);
        }
        let uses = UseCounter::new(issue.doors.len(), issue.schedule.use_limit());
        crate::huge::push(
            &mut self.credentials,
            Credential {
                id,
                org,
                site,
                holder: issue.holder,
                name: issue.name.clone(),
                kind,
                origin,
                secret,
                schedule: issue.schedule.clone(),
                doors: issue.doors.clone(),
                floors: issue.floors.clone(),
                disabled: false,
                revoked: false,
                unassigned_fallback: false,
                replaces,
                replaced_by: None,
                placements,
                uses,
                created_at: now,
                sole_door: match issue.doors.as_slice() {
                    [d] => *d,
                    _ => DoorId(u32::MAX),
                },
            },
        );
        Ok((id, issue))
    }

    fn change_pin(
        &mut self,
        old: CredentialId,
        pin: PinSpec,
        now: Timestamp,
    ) -> Result<Applied, EngineError> {
        let c = get(&self.credentials, "credential", old.0)?;
        if c.kind != CredentialKind::Pin {
            return Err(EngineError::invalid(
                "credential",
                "only PIN codes can be changed",
            ));
        }
        if c.revoked || c.replaced_by.is_some() {
            return Err(EngineError::invalid(
                "credential",
                "this code is revoked or already replaced",
            ));
        }
        let issue = Issue {
            holder: c.holder,
            name: c.name.clone(),
            secret: SecretSpec::Pin { pin },
            schedule: c.schedule.clone(),
            doors: c.doors.clone(),
            include_common_areas: false,
            floors: c.floors.clone(),
        };
        let (new, resolved) = self.issue(issue, Some(old), now)?;
        let old_c = &mut self.credentials[old.index()];
        old_c.replaced_by = Some(new);
        // A code with no device to wait for is replaced at once.
        if old_c.placements.iter().all(|p| !p.state.on_device()) {
            self.retire(old);
        }
        let SecretSpec::Pin { pin } = resolved.secret else {
            unreachable!("issued as a PIN")
        };
        Ok(Applied {
            outcome: Outcome::Credential(new),
            logged: Command::ChangePin {
                credential: old,
                pin,
            },
        })
    }

    fn revoke(&mut self, id: CredentialId) -> Result<(), EngineError> {
        let c = self
            .credentials
            .get_mut(id.index())
            .ok_or_else(|| EngineError::not_found("credential", id.0))?;
        c.revoked = true;
        let mut touched = Vec::new();
        for p in &mut c.placements {
            p.state = match p.state {
                SyncState::Pending | SyncState::Failed(_) | SyncState::Removed => {
                    SyncState::Removed
                }
                SyncState::Setting | SyncState::Set | SyncState::Removing => {
                    touched.push(p.device);
                    SyncState::Removing
                }
            };
        }
        for d in touched {
            self.devices[d.index()].sync_version += 1;
        }
        Ok(())
    }

    /// `door` holds `pin` for `id` (replacing whatever held it), at the door
    /// and on every device there.
    fn index_pin(&mut self, door: DoorId, pin: Pin, id: CredentialId) {
        self.pin_index.insert(pin_key(door, pin), id);
        for dev in &self.door_devices[door.index()] {
            self.device_pins
                .put(KeypadSlot::pending(device_pin_key(*dev, pin), id));
        }
    }

    /// `door` no longer holds `pin` for `id` (if it still did).
    fn unindex_pin(&mut self, door: DoorId, pin: Pin, id: CredentialId) {
        if self.pin_index.get(pin_key(door, pin)) != Some(id) {
            return;
        }
        self.pin_index.remove(pin_key(door, pin));
        for dev in &self.door_devices[door.index()] {
            self.device_pins.take(device_pin_key(*dev, pin));
        }
    }

    /// Panics unless the two PIN indexes agree (`device_pins` holds exactly
    /// the entries of `pin_index`, once per device at each door) and every
    /// keypad slot says what its credential and device say now. For tests:
    /// it walks both indexes.
    #[doc(hidden)]
    pub fn assert_pin_indexes_agree(&self) {
        let low = |k: u64| k & u64::from(u32::MAX);
        let mut expected = 0;
        for (key, c) in self.pin_index.entries() {
            let door = (key >> 32) as usize;
            for dev in &self.door_devices[door] {
                let dk = (u64::from(dev.0) << 32) | low(key);
                let slot = self.device_pins.find(dk).map(|s| s.credential);
                assert_eq!(slot, Some(c), "device {dev} key {key:#x}");
                expected += 1;
            }
        }
        assert_eq!(self.device_pins.len(), expected, "stray device PIN entries");
        // Every slot says what its credential and device say now.
        for s in self.device_pins.slots() {
            let dev = DeviceId((s.key >> 32) as u32);
            let c = &self.credentials[s.credential.index()];
            let want = KeypadSlot::of(s.key, c, dev, &self.devices_hot[dev.index()]);
            assert_eq!(*s, want, "stale keypad slot of {} on {dev}", c.id);
        }
    }

    /// Rederives the keypad slots of `id` (see `KeypadSlot`).
    fn refresh_keypad(&mut self, id: CredentialId) {
        let Some(c) = self.credentials.get(id.index()) else {
            return;
        };
        let Secret::Pin(p) = c.secret else {
            return;
        };
        for d in &c.doors {
            if self.pin_index.get(pin_key(*d, p)) != Some(id) {
                continue;
            }
            for dev in &self.door_devices[d.index()] {
                let key = device_pin_key(*dev, p);
                if let Some(s) = self.device_pins.find_mut(key) {
                    *s = KeypadSlot::of(key, c, *dev, &self.devices_hot[dev.index()]);
                }
            }
        }
    }

    /// The existing credentials whose keypad slots `cmd` may change (new
    /// ones are rederived anyway).
    fn keypad_touched(&self, cmd: &Command) -> Vec<CredentialId> {
        let at_device = |device: &DeviceId| {
            self.devices
                .get(device.index())
                .map(|e| self.door_credentials[e.device.door.index()].clone())
                .unwrap_or_default()
        };
        match cmd {
            Command::ChangePin { credential, .. }
            | Command::SetCredentialDisabled { credential, .. }
            | Command::RevokeCredential { credential } => vec![*credential],
            Command::CreateDevice { door, .. } => self
                .door_credentials
                .get(door.index())
                .cloned()
                .unwrap_or_default(),
            Command::AssignFallback { device, .. } | Command::SyncSent { device, .. } => {
                at_device(device)
            }
            Command::SyncAck { results, .. } => {
                let mut v: Vec<CredentialId> = results.iter().map(|r| r.credential).collect();
                // An acknowledged new code retires the one it replaces.
                v.extend(
                    results
                        .iter()
                        .filter_map(|r| self.credentials.get(r.credential.index()))
                        .filter_map(|c| c.replaces),
                );
                v
            }
            _ => Vec::new(),
        }
    }

    /// A replaced or revoked code whose locks no longer hold it: take it out
    /// of the lookup tables.
    fn retire(&mut self, id: CredentialId) {
        let c = &mut self.credentials[id.index()];
        c.revoked = true;
        match c.secret {
            Secret::Pin(p) => {
                for d in c.doors.clone() {
                    self.unindex_pin(d, p, id);
                }
            }
            Secret::Card(n) => {
                if self.card_index.get(&(c.site, n)) == Some(&id) {
                    self.card_index.remove(&(c.site, n));
                }
            }
            Secret::Token { .. } => {}
        }
    }

    fn load_fallback_pool(
        &mut self,
        device: DeviceId,
        pins: Vec<PinSpec>,
        now: Timestamp,
    ) -> Result<Applied, EngineError> {
        let dev = get(&self.devices, "device", device.0)?.device.clone();
        if dev.kind != DeviceKind::Lock {
            return Err(EngineError::invalid(
                "device",
                "fallback pools are loaded on locks",
            ));
        }
        if pins.len() > usize::from(dev.code_slots) {
            return Err(EngineError::invalid(
                "pins",
                format!("at most the lock's {} code slots", dev.code_slots),
            ));
        }
        let org = self.sites[dev.site.index()].org;
        let holder = match self.pool_holders.get(&org) {
            Some(h) => *h,
            None => {
                let id = HolderId(next_id(self.holders.len(), "holder")?);
                self.holders.push(Holder {
                    id,
                    org,
                    name: "Fallback pool".into(),
                    kind: HolderKind::Member,
                    user: None,
                    disabled: false,
                    floors: FloorScope::Any,
                });
                self.pool_holders.insert(org, id);
                id
            }
        };
        let mut made = Vec::new();
        let mut resolved = Vec::new();
        for spec in pins {
            let (pin, _) = self.resolve_pin(spec, dev.site, &[dev.door], None)?;
            let issue = Issue {
                holder,
                name: "Fallback code".into(),
                secret: SecretSpec::Pin {
                    pin: PinSpec::Resolved {
                        pin,
                        origin: Origin::Fallback,
                    },
                },
                schedule: Schedule::Permanent,
                doors: vec![dev.door],
                include_common_areas: false,
                floors: FloorScope::Any,
            };
            let (id, _) = self.issue(issue, None, now)?;
            let c = &mut self.credentials[id.index()];
            c.unassigned_fallback = true;
            // Pre-loaded at installation: already on the lock, nothing to sync.
            for p in &mut c.placements {
                if p.device == device {
                    p.state = SyncState::Set;
                }
            }
            self.devices[device.index()].fallback_pool.push(id);
            made.push(id);
            resolved.push(PinSpec::Resolved {
                pin,
                origin: Origin::Fallback,
            });
        }
        Ok(Applied {
            outcome: Outcome::Credentials(made),
            logged: Command::LoadFallbackPool {
                device,
                pins: resolved,
            },
        })
    }

    fn sync_ack(&mut self, device: DeviceId, results: &[SyncResult]) -> Result<(), EngineError> {
        get(&self.devices, "device", device.0)?;
        // Check every entry first, so a bad ack changes nothing. A code not
        // placed on this device is, to the device, an unknown one: the
        // answer does not tell it which ids exist elsewhere.
        for r in results {
            let placed = self
                .credentials
                .get(r.credential.index())
                .is_some_and(|c| c.placement(device).is_some());
            if !placed {
                return Err(EngineError::not_found("credential", r.credential.0));
            }
        }
        let mut retire = Vec::new();
        let mut replaced_to_remove = Vec::new();
        for r in results {
            let c = &mut self.credentials[r.credential.index()];
            let replaces = c.replaces;
            let p = c.placement_mut(device).expect("checked above");
            p.state = match (p.state, r.failure) {
                (SyncState::Removing, None) => SyncState::Removed,
                (SyncState::Removing, Some(_)) => SyncState::Removing,
                (SyncState::Removed, _) => SyncState::Removed,
                (_, None) => {
                    if let Some(old) = replaces {
                        replaced_to_remove.push(old);
                    }
                    SyncState::Set
                }
                (_, Some(f)) => SyncState::Failed(f),
            };
            if (c.revoked || c.replaced_by.is_some())
                && c.placements.iter().all(|p| !p.state.on_device())
            {
                retire.push(c.id);
            }
        }
        // The new code is on this lock: the old one may go from it now.
        for old in replaced_to_remove {
            let c = &mut self.credentials[old.index()];
            if let Some(p) = c.placement_mut(device) {
                if p.state.on_device() || p.state == SyncState::Setting {
                    p.state = SyncState::Removing;
                    self.devices[device.index()].sync_version += 1;
                } else {
                    p.state = SyncState::Removed;
                }
            }
            if c.placements.iter().all(|p| !p.state.on_device()) {
                retire.push(old);
            }
        }
        for id in retire {
            self.retire(id);
        }
        Ok(())
    }

    // ----- the check ---------------------------------------------------------

    /// Decides one credential check at `check.device`, at time `now`.
    ///
    /// Order of the rules (the first that fails is the reason): device known;
    /// keypad not locked out; credential found (and on this lock); revoked;
    /// disabled; holder disabled; door; floor; validity period and window;
    /// stay (check-in, check-out); use count. Only unknown PINs count as
    /// brute-force tries; a grant clears the keypad's count.
    pub fn validate(&self, check: &Check<'_>, now: Timestamp) -> Decision {
        let id = check.device;
        let Some(dev) = self.devices_hot.get(id.index()) else {
            return Decision::deny(DenyReason::DeviceUnknown);
        };
        match check.presented {
            Presented::Pin(pin) => {
                // The lockout state is read from the hot table; its mutex is
                // taken only to record a wrong try or to clear earlier ones.
                // A lockout answer says when it ends, so the device can end
                // it when the engine does.
                let until_s = dev.locked_until_s.load(Ordering::Relaxed);
                if now.as_second() < until_s {
                    return Decision::deny_locked(DenyReason::LockedOut, until_s);
                }
                let slot = self.device_pins.find(device_pin_key(id, pin));
                if let Some(s) = slot.filter(|s| s.flags & KeypadSlot::FAST != 0) {
                    let now_ns = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
                    if check.floor.is_none() && now_ns != i64::MIN && now_ns != i64::MAX {
                        let d = self.evaluate_keypad(s, now, now_ns);
                        if d.is_granted() && dev.wrong_tries.load(Ordering::Relaxed) {
                            self.lockouts[id.index()].lock().record_success();
                            dev.wrong_tries.store(false, Ordering::Relaxed);
                        }
                        return d;
                    }
                }
                let found = slot.map(|s| &self.credentials[s.credential.index()]);
                let Some(cred) = found.filter(|c| !c.unassigned_fallback && usable_on(c, id, dev))
                else {
                    let mut lockout = self.lockouts[id.index()].lock();
                    // Another check may have locked the keypad meanwhile.
                    if lockout.is_locked(now) {
                        let until_s = lockout.locked_until().map_or(0, |t| t.as_second());
                        return Decision::deny_locked(DenyReason::LockedOut, until_s);
                    }
                    dev.wrong_tries.store(true, Ordering::Relaxed);
                    if lockout.record_wrong(now, &self.sites[dev.site.index()].settings.lockout) {
                        let until_s = lockout.locked_until().map_or(0, |t| t.as_second());
                        debug_assert!(until_s > now.as_second(), "a lockout ends after it starts");
                        dev.locked_until_s.store(until_s, Ordering::Relaxed);
                        // The try that locked the keypad says so.
                        return Decision::deny_locked(DenyReason::WrongPin, until_s);
                    }
                    return Decision::deny(DenyReason::WrongPin);
                };
                // The index is per door, so the door rule already holds.
                let d = self.evaluate(cred, id, dev, true, check.floor, now);
                if d.is_granted() && dev.wrong_tries.load(Ordering::Relaxed) {
                    self.lockouts[id.index()].lock().record_success();
                    dev.wrong_tries.store(false, Ordering::Relaxed);
                }
                d
            }
            Presented::Card(number) => {
                let found = self
                    .card_index
                    .get(&(dev.site, number))
                    .map(|c| &self.credentials[c.index()]);
                match found {
                    Some(c) if c.door_slot(dev.door).is_none() => {
                        Decision::deny(DenyReason::DoorNotAllowed)
                    }
                    Some(c) if usable_on(c, id, dev) => {
                        self.evaluate(c, id, dev, true, check.floor, now)
                    }
                    _ => Decision::deny(DenyReason::UnknownCredential),
                }
            }
            Presented::Qr(text) | Presented::Ble(text) => {
                let want = if matches!(check.presented, Presented::Qr(_)) {
                    TokenKind::Qr
                } else {
                    TokenKind::Ble
                };
                // The claimed credential's row is fetched while the MAC is
                // computed (nothing is read from it before the MAC holds).
                let hint = |c: CredentialId| {
                    if let Some(row) = self.credentials.get(c.index()) {
                        crate::huge::prefetch(row);
                    }
                };
                let claims = match self.token_key.verify_with_hint(text, hint) {
                    Ok(c) if c.kind == want => c,
                    _ => return Decision::deny(DenyReason::UnknownCredential),
                };
                let Some(cred) = self.credentials.get(claims.credential.index()) else {
                    return Decision::deny(DenyReason::UnknownCredential);
                };
                if cred.secret
                    != (Secret::Token {
                        version: claims.version,
                    })
                {
                    // A token of an earlier issue of this credential.
                    return Decision::deny(DenyReason::Revoked);
                }
                self.evaluate(cred, id, dev, false, check.floor, now)
            }
        }
    }

    fn guest_settings_for(&self, dev: &Device) -> GuestSettings {
        match dev.linked_to {
            Some(lock) => self.devices[lock.index()].device.guest,
            None => dev.guest,
        }
    }

    fn stay_check(
        &self,
        c: &Credential,
        device: DeviceId,
        now: Timestamp,
    ) -> Result<(), DenyReason> {
        let Schedule::Stay { stay } = c.schedule else {
            return Ok(());
        };
        let s = &self.stays[stay.index()];
        let g = self.guest_settings_for(&self.devices[device.index()].device);
        if g.revoke_access_on_check_out && (s.checked_out || now >= s.check_out_at) {
            return Err(DenyReason::CheckedOut);
        }
        if g.prevent_access_until_checked_in && !s.checked_in && now < s.check_in_at {
            return Err(DenyReason::NotCheckedIn);
        }
        Ok(())
    }

    fn floor_allowed(&self, scope: &FloorScope, floor: FloorId, depth: u8) -> bool {
        match scope {
            FloorScope::Any => true,
            FloorScope::Only(fs) => fs.contains(&floor),
            // Bounded: a chain of "follow" links cannot loop forever.
            FloorScope::FollowHolder(h) => {
                depth < 4 && self.floor_allowed(&self.holders[h.index()].floors, floor, depth + 1)
            }
        }
    }

    /// `evaluate` for a `FAST` keypad slot and no floor asked: the same rules
    /// in the same order, from the slot. Revoked, disabled, stays and
    /// per-door counts never make a `FAST` slot; the door holds by the
    /// lookup; a limited code takes its use from the credential's counter.
    #[inline]
    fn evaluate_keypad(&self, s: &KeypadSlot, now: Timestamp, now_ns: i64) -> Decision {
        if s.flags & KeypadSlot::LIMITED != 0 {
            // Its use count is read below: fetch it while the time is checked.
            crate::huge::prefetch(&self.credentials[s.credential.index()].uses);
        }
        if self.holders[s.holder.index()].disabled {
            return Decision::deny(DenyReason::HolderDisabled);
        }
        let weekly = (s.flags & KeypadSlot::WEEKLY != 0).then_some((s.days, s.window));
        let tz = &self.sites[s.site.index()].tz;
        if let Err(r) = Schedule::check_time_parts(s.bounds_ns, weekly, now, now_ns, tz) {
            return Decision::deny(r);
        }
        if s.flags & KeypadSlot::LIMITED != 0 {
            let c = &self.credentials[s.credential.index()];
            // A PIN is never a replayed token: the reason stays as it is.
            if let Err(r) = c.uses.try_take(UseLimit::Total(s.max_uses), 0) {
                return Decision::deny(r);
            }
        }
        Decision::Granted(Grant {
            credential: s.credential,
            holder: s.holder,
            origin: s.origin,
            kind: CredentialKind::Pin,
        })
    }

    /// The rules after lookup. `door_known`: the lookup was by this door.
    fn evaluate(
        &self,
        c: &Credential,
        id: DeviceId,
        dev: &DeviceHot,
        door_known: bool,
        floor: Option<FloorId>,
        now: Timestamp,
    ) -> Decision {
        if c.revoked {
            return Decision::deny(DenyReason::Revoked);
        }
        if c.disabled {
            return Decision::deny(DenyReason::Disabled);
        }
        if self.holders[c.holder.index()].disabled {
            return Decision::deny(DenyReason::HolderDisabled);
        }
        if !door_known && c.door_slot(dev.door).is_none() {
            return Decision::deny(DenyReason::DoorNotAllowed);
        }
        if let Some(f) = floor {
            let served = self.doors[dev.door.index()].lift_floors.contains(&f);
            if !served || !self.floor_allowed(&c.floors, f, 0) {
                return Decision::deny(DenyReason::FloorNotAllowed);
            }
        }
        if let Err(r) = c.schedule.check_time(now, &self.sites[c.site.index()].tz) {
            return Decision::deny(r);
        }
        if let Err(r) = self.stay_check(c, id, now) {
            return Decision::deny(r);
        }
        let limit = c.schedule.use_limit();
        let slot = match limit {
            UseLimit::PerDoor(_) => c.door_slot(dev.door).unwrap_or(usize::MAX),
            _ => 0,
        };
        if let Err(r) = c.uses.try_take(limit, slot) {
            let one_time = matches!(limit, UseLimit::Total(1) | UseLimit::PerDoor(1));
            let token = matches!(c.kind, CredentialKind::Qr | CredentialKind::Ble);
            return Decision::deny(if one_time && token {
                DenyReason::Replayed
            } else {
                r
            });
        }
        Decision::Granted(Grant {
            credential: c.id,
            holder: c.holder,
            origin: c.origin,
            kind: c.kind,
        })
    }

    // ----- reading -----------------------------------------------------------

    /// The signed token text of a QR or BLE credential (what is shared).
    pub fn token(&self, id: CredentialId) -> Option<String> {
        let c = self.credentials.get(id.index())?;
        let kind = match c.kind {
            CredentialKind::Qr => TokenKind::Qr,
            CredentialKind::Ble => TokenKind::Ble,
            _ => return None,
        };
        let Secret::Token { version } = c.secret else {
            return None;
        };
        Some(self.token_key.sign(&TokenClaims {
            kind,
            credential: id,
            version,
            expires: c.schedule.bounds().1,
        }))
    }

    /// What the code list shows in its status column.
    pub fn active_status(&self, c: &Credential, now: Timestamp) -> ActiveStatus {
        if c.revoked || c.replaced_by.is_some() {
            return ActiveStatus::Revoked;
        }
        if c.disabled || self.holders[c.holder.index()].disabled {
            return ActiveStatus::Disabled;
        }
        if let Schedule::Stay { stay } = c.schedule {
            let s = &self.stays[stay.index()];
            if s.checked_out || now >= s.check_out_at {
                return ActiveStatus::Expired;
            }
            if !s.checked_in && now < s.check_in_at {
                return ActiveStatus::Scheduled;
            }
        }
        let exhausted = match c.schedule.use_limit() {
            UseLimit::Total(n) => c.uses.total() >= n,
            UseLimit::PerDoor(n) => (0..c.doors.len()).all(|i| c.uses.at_door(i).unwrap_or(0) >= n),
            UseLimit::Unlimited => false,
        };
        match c.schedule.bounds() {
            (Some(s), _) if now < s => ActiveStatus::Scheduled,
            (_, Some(e)) if now >= e => ActiveStatus::Expired,
            _ if exhausted => ActiveStatus::Expired,
            _ => ActiveStatus::Active,
        }
    }

    /// What a device must change: codes to set and to remove.
    pub fn pending_sync(&self, device: DeviceId) -> Option<SyncBatch> {
        let entry = self.devices.get(device.index())?;
        let mut batch = SyncBatch {
            version: entry.sync_version,
            ..SyncBatch::default()
        };
        for c in &self.door_credentials[entry.device.door.index()] {
            let cred = &self.credentials[c.index()];
            match cred.placement(device).map(|p| p.state) {
                Some(SyncState::Pending | SyncState::Setting) => {
                    batch.set.push((cred.id, cred.secret));
                    let stay = match cred.schedule {
                        Schedule::Stay { stay } => Some((
                            &self.stays[stay.index()],
                            self.guest_settings_for(&entry.device),
                        )),
                        _ => None,
                    };
                    let tz = &self.sites[cred.site.index()].tz;
                    if let Some(v) = crate::protocol::SyncValidity::of(cred, tz, stay) {
                        batch.validity.insert(cred.id, v);
                    }
                }
                Some(SyncState::Removing) => batch.remove.push(cred.id),
                _ => {}
            }
        }
        Some(batch)
    }

    /// The keypad's lockout end, if it is locked at `now`.
    pub fn locked_until(&self, device: DeviceId, now: Timestamp) -> Option<Timestamp> {
        let l = self.lockouts.get(device.index())?.lock();
        l.is_locked(now).then(|| l.locked_until()).flatten()
    }

    pub fn role(&self, user: UserId, org: OrgId) -> Option<&Role> {
        self.roles.get(&(user, org))
    }

    /// Organizations where `user` has a role.
    pub fn memberships(&self, user: UserId) -> Vec<(OrgId, Role)> {
        let mut v: Vec<_> = self
            .roles
            .iter()
            .filter(|((u, _), _)| *u == user)
            .map(|((_, o), r)| (*o, r.clone()))
            .collect();
        v.sort_by_key(|(o, _)| *o);
        v
    }

    pub fn members(&self, org: OrgId) -> Vec<(UserId, Role)> {
        let mut v: Vec<_> = self
            .roles
            .iter()
            .filter(|((_, o), _)| *o == org)
            .map(|((u, _), r)| (*u, r.clone()))
            .collect();
        v.sort_by_key(|(u, _)| *u);
        v
    }

    pub fn user(&self, id: UserId) -> Option<&User> {
        self.users.get(id.index())
    }
    pub fn users(&self) -> &[User] {
        &self.users
    }
    pub fn organization(&self, id: OrgId) -> Option<&Organization> {
        self.orgs.get(id.index())
    }
    pub fn organizations(&self) -> &[Organization] {
        &self.orgs
    }
    pub fn site(&self, id: SiteId) -> Option<&Site> {
        self.sites.get(id.index())
    }
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }
    pub fn building(&self, id: BuildingId) -> Option<&Building> {
        self.buildings.get(id.index())
    }
    pub fn buildings(&self) -> &[Building] {
        &self.buildings
    }
    pub fn floor(&self, id: FloorId) -> Option<&Floor> {
        self.floors.get(id.index())
    }
    pub fn floors(&self) -> &[Floor] {
        &self.floors
    }
    pub fn units(&self) -> &[Unit] {
        &self.units
    }
    pub fn door(&self, id: DoorId) -> Option<&Door> {
        self.doors.get(id.index())
    }
    pub fn doors(&self) -> &[Door] {
        &self.doors
    }
    pub fn device(&self, id: DeviceId) -> Option<&Device> {
        self.devices.get(id.index()).map(|e| &e.device)
    }
    pub fn devices(&self) -> impl ExactSizeIterator<Item = &Device> {
        self.devices.iter().map(|e| &e.device)
    }
    pub fn devices_at(&self, door: DoorId) -> &[DeviceId] {
        self.door_devices
            .get(door.index())
            .map_or(&[], |v| v.as_slice())
    }
    /// Every credential that opens `door`, in issue order.
    pub fn credentials_at(&self, door: DoorId) -> impl Iterator<Item = &Credential> {
        self.door_credentials
            .get(door.index())
            .into_iter()
            .flatten()
            .map(|c| &self.credentials[c.index()])
    }
    pub fn holder(&self, id: HolderId) -> Option<&Holder> {
        self.holders.get(id.index())
    }
    pub fn holders(&self) -> &[Holder] {
        &self.holders
    }
    pub fn stay(&self, id: StayId) -> Option<&Stay> {
        self.stays.get(id.index())
    }
    pub fn stays(&self) -> &[Stay] {
        &self.stays
    }
    pub fn credential(&self, id: CredentialId) -> Option<&Credential> {
        self.credentials.get(id.index())
    }
    pub fn credentials(&self) -> &[Credential] {
        &self.credentials
    }
    /// Free fallback codes still pre-loaded on a lock.
    pub fn fallback_pool(&self, device: DeviceId) -> &[CredentialId] {
        self.devices
            .get(device.index())
            .map_or(&[], |e| e.fallback_pool.as_slice())
    }
}
