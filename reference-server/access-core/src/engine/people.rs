//! Users, organizations and their members.

use super::*;

impl Engine {
    /// `CreateUser`.
    pub(super) fn create_user(&mut self, name: &str, email: &str) -> Result<UserId, EngineError> {
        check_name("name", name)?;
        check_name("email", email)?;
        if !email.contains('@') {
            return Err(EngineError::invalid("email", "must contain @"));
        }
        let id = UserId(next_id(self.users.len(), "user")?);
        self.users.push(User {
            id,
            name: name.to_owned(),
            email: email.to_owned(),
        });
        Ok(id)
    }

    /// `CreateOrganization`.
    pub(super) fn create_organization(
        &mut self,
        name: &str,
        description: &str,
        owner: UserId,
        personal: bool,
    ) -> Result<OrgId, EngineError> {
        check_name("name", name)?;
        check_text("description", description, false)?;
        get(&self.users, "user", owner.0)?;
        let id = OrgId(next_id(self.orgs.len(), "organization")?);
        self.orgs.push(Organization {
            id,
            name: name.to_owned(),
            description: description.to_owned(),
            personal,
        });
        self.roles.insert((owner, id), Role::Owner);
        Ok(id)
    }

    /// `UpdateOrganization`.
    pub(super) fn update_organization(
        &mut self,
        org: OrgId,
        name: &str,
        description: &str,
    ) -> Result<(), EngineError> {
        check_name("name", name)?;
        check_text("description", description, false)?;
        let o = self
            .orgs
            .get_mut(org.index())
            .ok_or_else(|| EngineError::not_found("organization", org.0))?;
        o.name = name.to_owned();
        o.description = description.to_owned();
        Ok(())
    }

    /// `SetMember`.
    pub(super) fn set_member(
        &mut self,
        org: OrgId,
        user: UserId,
        role: &Role,
    ) -> Result<(), EngineError> {
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
        Ok(())
    }

    /// `RemoveMember`.
    pub(super) fn remove_member(&mut self, org: OrgId, user: UserId) -> Result<(), EngineError> {
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
        Ok(())
    }
}
