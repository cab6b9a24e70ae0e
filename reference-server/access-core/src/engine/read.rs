//! Read access to the state, for the API, the gateway and the simulator.

use super::*;

impl Engine {
    /// The device's sync version: bumped on every change to the codes it
    /// must hold (what a sync ack must name).
    pub fn sync_version(&self, device: DeviceId) -> Option<u64> {
        self.devices.get(device.index()).map(|e| e.sync_version)
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

    /// The device, unless unknown or deleted.
    pub fn device(&self, id: DeviceId) -> Option<&Device> {
        self.devices
            .get(id.index())
            .filter(|e| !e.removed)
            .map(|e| &e.device)
    }

    /// Every device, deleted ones too (ids are indexes).
    pub fn devices(&self) -> impl ExactSizeIterator<Item = &Device> {
        self.devices.iter().map(|e| &e.device)
    }

    /// The code `id` names as the API shows it: its first id, which a
    /// changed PIN keeps (the change is a new credential internally,
    /// replacing the old one lock by lock).
    pub fn code_id(&self, id: CredentialId) -> CredentialId {
        let mut at = id;
        // Bounded: each step goes to a lower id.
        while let Some(prev) = self.credentials.get(at.index()).and_then(|c| c.replaces) {
            debug_assert!(prev < at, "a replacement is newer than what it replaces");
            at = prev;
        }
        at
    }

    /// The live version of the code named `id` (by any of its ids): the
    /// credential that holds its PIN now.
    pub fn code_head(&self, id: CredentialId) -> CredentialId {
        let root = self.code_id(id);
        self.code_heads.get(&root).copied().unwrap_or(root)
    }

    /// The earlier versions of the code `id` still on some lock (a changed
    /// PIN stays valid on a lock until it confirms the new one).
    pub fn code_versions_on_devices(&self, id: CredentialId) -> Vec<&Credential> {
        self.earlier_versions(id)
            .into_iter()
            .map(|c| &self.credentials[c.index()])
            .filter(|c| c.placements.iter().any(|p| p.state.on_device()))
            .collect()
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
