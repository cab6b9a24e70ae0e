//! List pages, their queries, and the partial updates (`PATCH`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{CredentialId, FloorScope};
use crate::engine::Command;

/// Where the next page starts (`api::paging`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pagination {
    /// Pass it as `page_cursor` for the next page; null on the last.
    pub next_page_cursor: Option<String>,
    pub has_next_page: bool,
}

/// One page of a list, in the list's stable order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

/// The query of a list route: paging and the list's own filters, each
/// a string checked by the route (a bad one is a 400 naming it; an
/// unknown parameter is too).
macro_rules! list_params {
    ($($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? })*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            /// Most items in the page: 1 to 500 (default 50).
            #[serde(default)]
            #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
            pub limit: Option<String>,
            /// The `next_page_cursor` of the page before, as it came.
            #[serde(default)]
            pub page_cursor: Option<String>,
            $(
                $(#[$fdoc])*
                #[serde(default)]
                #[param(value_type = Option<$ty>)]
                pub $field: Option<String>,
            )*
        }
    )*};
}

list_params! {
    /// `?limit=&page_cursor=`.
    PageParams {}
    /// `GET /v1/organizations/{org}/doors`.
    DoorsParams {
        /// Only the doors of this site.
        site: crate::domain::SiteId,
    }
    /// `GET /v1/organizations/{org}/devices`.
    DevicesParams {
        /// Only the devices of this site.
        site: crate::domain::SiteId,
        /// Only the devices of this door.
        door: crate::domain::DoorId,
        /// Only devices of this kind.
        kind: crate::domain::DeviceKind,
    }
    /// `GET /v1/organizations/{org}/holders`.
    HoldersParams {
        /// Only holders of this kind.
        kind: crate::domain::HolderKind,
    }
}

/// `PATCH /v1/holders/{holder}`: the fields given change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HolderPatchBody {
    /// `null` or absent: left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::optional_name_schema)]
    pub name: Option<String>,
    /// Floors the holder may reach by lift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floors: Option<FloorScope>,
    /// A disabled holder's codes open nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

impl HolderPatchBody {
    pub fn command(self, holder: crate::domain::HolderId) -> Command {
        Command::UpdateHolder {
            holder,
            name: self.name,
            floors: self.floors,
            disabled: self.disabled,
        }
    }
}

/// Where a code stands on its locks, in Seam's words: `setting` until
/// every lock confirmed it, then `set`; `removing` once deleted until
/// every lock confirmed the removal, then `removed`; `failed` when a lock
/// refused it (see `placements`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeSyncStatus {
    Setting,
    Set,
    Removing,
    Removed,
    Failed,
}

impl CodeSyncStatus {
    /// The status of the live version `c` of a code; `earlier_on_device`:
    /// an earlier PIN of the code is still stored on some lock.
    pub fn of(c: &crate::domain::Credential, earlier_on_device: bool) -> CodeSyncStatus {
        use crate::domain::SyncState as S;
        let states = || c.placements.iter().map(|p| p.state);
        if c.revoked {
            let stored = states().any(|s| matches!(s, S::Removing | S::Set | S::Setting));
            if stored || earlier_on_device {
                return CodeSyncStatus::Removing;
            }
            return CodeSyncStatus::Removed;
        }
        if states().any(|s| matches!(s, S::Failed(_))) {
            CodeSyncStatus::Failed
        } else if states().any(|s| matches!(s, S::Pending | S::Setting)) {
            CodeSyncStatus::Setting
        } else {
            CodeSyncStatus::Set
        }
    }
}

/// `PUT /v1/credentials/{credential}/pin`: the code keeps its id; its
/// status goes `setting` until every lock confirmed the new PIN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PinChanged {
    pub credential: CredentialId,
    pub sync_status: CodeSyncStatus,
}
