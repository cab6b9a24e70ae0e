//! Bootstrap, users, `me`, organizations and members.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{OrgId, Organization, Role, Site, UserId};
use crate::engine::{Command, Engine, User};

/// `POST /v1/bootstrap`: the first owner and their organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapBody {
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    #[schema(schema_with = super::email_schema)]
    pub email: String,
    /// The organization's name.
    #[schema(schema_with = super::name_schema)]
    pub organization: String,
}

/// The bootstrap's answer: the owner's token is shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Bootstrapped {
    pub user: UserId,
    pub organization: OrgId,
    /// Bearer token of the owner (`u{id}.{secret}`).
    pub token: String,
}

/// `POST /v1/users`: a person to invite (roles are given separately).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    #[schema(schema_with = super::email_schema)]
    pub email: String,
}

/// A new user and their bearer token (shown once: the server keeps a hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserCreated {
    pub user: UserId,
    pub token: String,
}

/// One of the caller's roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MembershipView {
    pub organization: OrgId,
    pub role: Role,
}

/// `GET /v1/me`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: Option<User>,
    pub memberships: Vec<MembershipView>,
}

/// `POST /v1/organizations`: an organization owned by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgBody {
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = super::text_schema)]
    pub description: String,
    /// A personal profile: an organization of one.
    #[serde(default)]
    pub personal: bool,
}

impl OrgBody {
    pub fn command(self, owner: UserId) -> Command {
        Command::CreateOrganization {
            name: self.name,
            description: self.description,
            owner,
            personal: self.personal,
        }
    }
}

/// `PATCH /v1/organizations/{org}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    #[schema(schema_with = super::name_schema)]
    pub name: String,
    /// Absent: the organization keeps its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::optional_text_schema)]
    pub description: Option<String>,
}

impl RenameBody {
    pub fn command(self, e: &Engine, org: OrgId) -> Command {
        let description = match self.description {
            Some(d) => d,
            None => e
                .organization(org)
                .map(|o| o.description.clone())
                .unwrap_or_default(),
        };
        Command::UpdateOrganization {
            org,
            name: self.name,
            description,
        }
    }
}

/// A member of an organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub user: UserId,
    pub role: Role,
}

/// `GET /v1/organizations/{org}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrganizationView {
    pub organization: Organization,
    pub sites: Vec<Site>,
    pub members: Vec<MemberView>,
}
