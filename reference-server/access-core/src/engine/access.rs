//! Who may do what: the ids a command names, their organizations, and the
//! role check (`authorize`) `apply` runs before performing anything.

use super::*;

/// The id `cmd` is about (its organization is the command's) and every id
/// its body names; `None` for commands about no organization (users, new
/// organizations) and the system's own (sync, replayed uses).
pub(super) fn command_refs(cmd: &Command) -> Option<(Ref, Vec<Ref>)> {
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
        UpdateOrganization { org, .. }
        | RemoveMember { org, .. }
        | CreateSite { org, .. }
        | DeleteOrganization { org } => (Ref::Organization(*org), Vec::new()),
        SetMember { org, role, .. } => (
            Ref::Organization(*org),
            match role {
                Role::DoorAdmin { doors: d } => doors(d),
                Role::Owner | Role::Admin => Vec::new(),
            },
        ),
        UpdateSiteSettings { site, .. }
        | PatchSiteSettings { site, .. }
        | DeleteSite { site }
        | CreateBuilding { site, .. } => (Ref::Site(*site), Vec::new()),
        DeleteDoor { door } => (Ref::Door(*door), Vec::new()),
        DeleteDevice { device } => (Ref::Device(*device), Vec::new()),
        DeleteHolder { holder } => (Ref::Holder(*holder), Vec::new()),
        UpdateHolder {
            holder, floors: f, ..
        } => (
            Ref::Holder(*holder),
            f.as_ref().map(floors).unwrap_or_default(),
        ),
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

impl Engine {
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
        // A deleted thing (`removal`) is an unknown one, and so is
        // everything under a deleted site.
        let gone = |r: Ref| self.removed.contains(&r);
        let site = |s: SiteId| {
            (!gone(Ref::Site(s)))
                .then(|| self.sites.get(s.index()).map(|s| s.org))
                .flatten()
        };
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
            Ref::Door(_) | Ref::Device(_) | Ref::Holder(_) if gone(r) => None,
            Ref::Door(d) => self.doors.get(d.index()).and_then(|d| site(d.site)),
            Ref::Device(d) => self
                .devices
                .get(d.index())
                .and_then(|d| site(d.device.site)),
            Ref::Holder(h) => self.holders.get(h.index()).map(|h| h.org),
            Ref::Credential(c) => self.credentials.get(c.index()).map(|c| c.org),
            Ref::Stay(s) => self.stays.get(s.index()).map(|s| s.org),
        };
        // Everything of a deleted organization is unknown too.
        org.filter(|o| !gone(Ref::Organization(*o)))
            .ok_or_else(|| EngineError::not_found(r.kind(), r.id()))
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
    pub(super) fn require_in(&self, org: OrgId, r: Ref) -> Result<(), EngineError> {
        if self.org_of(r)? == org {
            Ok(())
        } else {
            Err(EngineError::not_found(r.kind(), r.id()))
        }
    }

    /// Which action a command needs: resolves the id it is about and checks
    /// every id its body names (`command_refs`).
    pub(super) fn action_for(
        &self,
        actor: &Actor,
        cmd: &Command,
    ) -> Result<Option<Action>, EngineError> {
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
            | UpdateHolder { .. }
            | DeleteHolder { .. }
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
}
