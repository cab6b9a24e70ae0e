//! Who may do what. Every mutating engine operation names an `Action` and goes
//! through `Engine::authorize` first; nothing else grants admin rights.

use super::{DoorId, OrgId, UserId};

/// A member's role in an organization (seeds/000).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
pub enum Role {
    /// Everything: access points, users, admins, settings.
    Owner,
    /// Manages access to every access point of the organization.
    Admin,
    /// Admin rights on the listed doors only.
    DoorAdmin { doors: Vec<DoorId> },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::DoorAdmin { .. } => "door_admin",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Membership {
    pub user: UserId,
    pub org: OrgId,
    pub role: Role,
}

/// Who asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The system itself: replaying the store, provisioning a simulated fleet.
    System,
    User(UserId),
}

/// What is asked, with the scope the check needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read anything in the organization (any member).
    View(OrgId),
    /// Settings, sites, doors, devices, members and roles (owner only).
    ManageOrganization(OrgId),
    /// Issue, change, disable or delete credentials and stays on these doors
    /// (owner, admin, or door admin of every listed door).
    ManageAccess { org: OrgId, doors: Vec<DoorId> },
    /// Open a door remotely (access managers; guests where the lock allows).
    OpenDoor { org: OrgId, door: DoorId },
}

impl Action {
    pub fn org(&self) -> OrgId {
        match self {
            Action::View(o) | Action::ManageOrganization(o) => *o,
            Action::ManageAccess { org, .. } | Action::OpenDoor { org, .. } => *org,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::View(_) => "view",
            Action::ManageOrganization(_) => "manage_organization",
            Action::ManageAccess { .. } => "manage_access",
            Action::OpenDoor { .. } => "open_door",
        }
    }
}

/// Does `role` allow `action`? (Org membership is checked by the caller.)
pub fn role_allows(role: &Role, action: &Action) -> bool {
    match (role, action) {
        (_, Action::View(_)) => true,
        (Role::Owner, _) => true,
        (_, Action::ManageOrganization(_)) => false,
        (Role::Admin, Action::ManageAccess { .. } | Action::OpenDoor { .. }) => true,
        (Role::DoorAdmin { doors }, Action::ManageAccess { doors: want, .. }) => {
            !want.is_empty() && want.iter().all(|d| doors.contains(d))
        }
        (Role::DoorAdmin { doors }, Action::OpenDoor { door, .. }) => doors.contains(door),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix() {
        let org = OrgId(1);
        let d1 = DoorId(1);
        let d2 = DoorId(2);
        let manage_org = Action::ManageOrganization(org);
        let access_d1 = Action::ManageAccess {
            org,
            doors: vec![d1],
        };
        let access_both = Action::ManageAccess {
            org,
            doors: vec![d1, d2],
        };
        let open_d2 = Action::OpenDoor { org, door: d2 };
        let door_admin = Role::DoorAdmin { doors: vec![d1] };
        for (role, action, want) in [
            (Role::Owner, &manage_org, true),
            (Role::Admin, &manage_org, false),
            (door_admin.clone(), &manage_org, false),
            (Role::Admin, &access_both, true),
            (door_admin.clone(), &access_d1, true),
            (door_admin.clone(), &access_both, false),
            (door_admin.clone(), &open_d2, false),
            (door_admin.clone(), &Action::View(org), true),
        ] {
            assert_eq!(role_allows(&role, action), want, "{role:?} {action:?}");
        }
    }
}
