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
use crate::protocol::SyncValidity;
// Defined next to what they describe; named here too, where the engine's
// callers look for them.
pub use crate::domain::Presented;
pub use crate::protocol::SyncResult;
pub use crate::sync::SyncBatch;

/// Longest name the engine stores (organizations, sites, doors, codes...),
/// in characters: what a JSON Schema's `maxLength` counts, so the API's
/// document states the same limit.
pub const MAX_NAME_CHARS: usize = 200;
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
    /// The settings given, the others kept (logged as the
    /// `UpdateSiteSettings` it amounts to).
    PatchSiteSettings {
        site: SiteId,
        patch: SiteSettingsPatch,
    },
    /// Delete an organization with everything in it (see `removal`).
    DeleteOrganization {
        org: OrgId,
    },
    /// Delete a site without doors (see `removal`).
    DeleteSite {
        site: SiteId,
    },
    /// Delete a door without devices or live codes.
    DeleteDoor {
        door: DoorId,
    },
    /// Delete a device no other device is linked to.
    DeleteDevice {
        device: DeviceId,
    },
    /// Delete a holder without live codes.
    DeleteHolder {
        holder: HolderId,
    },
    /// Change the fields of a holder that are given.
    UpdateHolder {
        holder: HolderId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        floors: Option<FloorScope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disabled: Option<bool>,
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
    /// The device asked for a full resync (its cache is empty: a reboot,
    /// a reset): every code it should hold counts as not set again and
    /// goes out in the next batch (protocol version 2, `sync/req`).
    SyncReset {
        device: DeviceId,
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
    /// The devices whose code list changed (their sync version moved, a
    /// code on them was handed out, or an ack may have made more work for
    /// them), sorted: the ones to push a sync to.
    pub sync_changed: Vec<DeviceId>,
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
    /// Deleted (`DeleteDevice`): `device()` no longer finds it.
    removed: bool,
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
    /// (site, card number) -> credential: the uniqueness rule and the
    /// answer for a card of another door.
    card_index: FxHashMap<(SiteId, u64), CredentialId>,
    /// `card_key(device, number)` -> credential: the card reader's lookup,
    /// the entries of `card_index` once per device at each door of the
    /// credential (see `CardSlot`).
    device_cards: PinIndex<CardSlot>,
    /// Deleted sites, doors, devices and holders (`removal`).
    removed: rustc_hash::FxHashSet<Ref>,
    /// A changed code's first id -> its live version (`code_head`).
    code_heads: FxHashMap<CredentialId, CredentialId>,
    /// Devices whose sync version moved during the command being applied
    /// (scratch of `apply`, empty between commands).
    sync_changed: Vec<DeviceId>,
}

mod access;
mod check;
mod credentials;
mod keypad;
mod people;
mod places;
mod read;
mod removal;
mod sync_state;

pub use removal::SiteSettingsPatch;

use keypad::{card_key, device_pin_key, pin_key, usable_on, CardSlot, DeviceHot, KeypadSlot};

/// Characters no name may hold: control characters (C0 with NUL, DEL,
/// C1) break logs, terminals and CSV exports, and the bidirectional
/// overrides and isolates (U+202A-U+202E, U+2066-U+2069) make a name
/// display as another ("Trojan Source").
pub fn refused_char(c: char) -> bool {
    c.is_control()
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// [`refused_char`] as the body of a regular expression's character
/// class (ECMA 262, as JSON Schema's `pattern` reads it): `is_control` is
/// Unicode's Cc, U+0000-U+001F and U+007F-U+009F.
pub const REFUSED_CHAR_CLASS: &str = r"\x00-\x1F\x7F-\x9F\u202A-\u202E\u2066-\u2069";

/// What `str::trim` takes for space (Unicode's White_Space), in the same
/// form: a required text must hold something else.
pub const SPACE_CHAR_CLASS: &str =
    r"\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// The one check of every name-like text the engine stores (names,
/// emails, descriptions, locations, listings): at most [`MAX_NAME_CHARS`]
/// characters and no [`refused_char`]; `required`: not blank either. The error
/// names `field` and the rule, never the text.
pub fn check_text(field: &'static str, s: &str, required: bool) -> Result<(), EngineError> {
    if required && s.trim().is_empty() {
        return Err(EngineError::invalid(field, "must not be empty"));
    }
    // Counted only when the bytes could be too many (a char is 1-4 bytes).
    if s.len() > MAX_NAME_CHARS && s.chars().count() > MAX_NAME_CHARS {
        return Err(EngineError::invalid(
            field,
            format!("at most {MAX_NAME_CHARS} characters"),
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
            sync_changed: Vec::new(),
            stays: Vec::new(),
            credentials: Vec::new(),
            pin_index: PinIndex::new(),
            device_pins: PinIndex::new(),
            card_index: FxHashMap::default(),
            device_cards: PinIndex::new(),
            removed: Default::default(),
            code_heads: FxHashMap::default(),
        }
    }

    // ----- changes ---------------------------------------------------------

    /// Authorizes and performs one change. On error nothing changed.
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
        self.sync_changed.clear();
        let mut applied = self.perform(cmd, now);
        let mut changed = std::mem::take(&mut self.sync_changed);
        if let Ok(a) = &mut applied {
            // Devices to push to although their version did not move: a
            // fallback code handed out (its validity on the lock changed),
            // or an ack (a removal may wait for it).
            match &a.logged {
                Command::AssignFallback { device, .. }
                | Command::LoadFallbackPool { device, .. }
                | Command::SyncAck { device, .. } => changed.push(*device),
                _ => {}
            }
            changed.sort_unstable();
            changed.dedup();
            a.sync_changed = changed;
        }
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
        // Four commands log a resolved form (the PIN drawn), not the
        // command as given.
        let mut resolved = None;
        let done = |()| Outcome::Done;
        let outcome = match &cmd {
            IssueCredential(issue) => {
                let (id, r) = self.issue(issue.clone(), None, now)?;
                resolved = Some(IssueCredential(r));
                Outcome::Credential(id)
            }
            ChangePin { credential, pin } => {
                let a = self.change_pin(*credential, pin.clone(), now)?;
                resolved = Some(a.logged);
                a.outcome
            }
            LoadFallbackPool { device, pins } => {
                let a = self.load_fallback_pool(*device, pins.clone(), now)?;
                resolved = Some(a.logged);
                a.outcome
            }
            PatchSiteSettings { site, patch } => {
                let a = self.patch_site_settings(*site, *patch)?;
                resolved = Some(a.logged);
                a.outcome
            }
            DeleteOrganization { org } => self.delete_organization(*org).map(done)?,
            DeleteSite { site } => self.delete_site(*site).map(done)?,
            DeleteDoor { door } => self.delete_door(*door).map(done)?,
            DeleteDevice { device } => self.delete_device(*device).map(done)?,
            DeleteHolder { holder } => self.delete_holder(*holder).map(done)?,
            UpdateHolder {
                holder,
                name,
                floors,
                disabled,
            } => self
                .update_holder(*holder, name.as_deref(), floors.as_ref(), *disabled)
                .map(done)?,
            CreateUser { name, email } => Outcome::User(self.create_user(name, email)?),
            CreateOrganization {
                name,
                description,
                owner,
                personal,
            } => Outcome::Organization(self.create_organization(
                name,
                description,
                *owner,
                *personal,
            )?),
            UpdateOrganization {
                org,
                name,
                description,
            } => self
                .update_organization(*org, name, description)
                .map(done)?,
            SetMember { org, user, role } => self.set_member(*org, *user, role).map(done)?,
            RemoveMember { org, user } => self.remove_member(*org, *user).map(done)?,
            CreateSite {
                org,
                name,
                time_zone,
                settings,
            } => Outcome::Site(self.create_site(*org, name, time_zone, *settings)?),
            UpdateSiteSettings { site, settings } => {
                self.update_site_settings(*site, *settings).map(done)?
            }
            CreateBuilding { site, name } => Outcome::Building(self.create_building(*site, name)?),
            CreateFloor { building, number } => {
                Outcome::Floor(self.create_floor(*building, *number)?)
            }
            CreateUnit { floor, name } => Outcome::Unit(self.create_unit(*floor, name)?),
            CreateDoor {
                site,
                name,
                common_area,
                unit,
                lift_floors,
            } => Outcome::Door(self.create_door(*site, name, *common_area, *unit, lift_floors)?),
            CreateDevice {
                door,
                kind,
                connectivity,
                name,
                location,
                linked_to,
                code_slots,
            } => Outcome::Device(self.create_device(
                *door,
                *kind,
                *connectivity,
                name,
                location,
                *linked_to,
                *code_slots,
            )?),
            UpdateGuestSettings { device, settings } => {
                self.update_guest_settings(*device, *settings).map(done)?
            }
            LinkListing { device, listing } => self.link_listing(*device, listing).map(done)?,
            UnlinkListing { device, listing } => self.unlink_listing(*device, listing).map(done)?,
            CreateHolder {
                org,
                name,
                kind,
                user,
                floors,
            } => Outcome::Holder(self.create_holder(*org, name, *kind, *user, floors)?),
            SetHolderDisabled { holder, disabled } => {
                self.set_holder_disabled(*holder, *disabled).map(done)?
            }
            SetCredentialDisabled {
                credential,
                disabled,
            } => self
                .set_credential_disabled(*credential, *disabled)
                .map(done)?,
            CreateStay {
                holder,
                check_in_at,
                check_out_at,
            } => Outcome::Stay(self.create_stay(*holder, *check_in_at, *check_out_at)?),
            CheckIn { stay } => self.check_in(*stay).map(done)?,
            CheckOut { stay } => self.check_out(*stay).map(done)?,
            AssignFallback {
                device,
                holder,
                name,
                schedule,
            } => Outcome::Credential(self.assign_fallback(*device, *holder, name, schedule)?),
            SyncSent { device, version } => self.sync_sent(*device, *version).map(done)?,
            RestoreUse { credential, door } => self.restore_use(*credential, *door).map(done)?,
            RevokeCredential { credential } => self.revoke(*credential).map(done)?,
            SyncAck { device, results } => self.sync_ack(*device, results).map(done)?,
            SyncReset { device } => self.sync_reset(*device).map(done)?,
        };
        Ok(Applied {
            outcome,
            logged: resolved.unwrap_or(cmd),
            sync_changed: Vec::new(),
        })
    }
}
