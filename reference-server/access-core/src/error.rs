//! Errors of the engine layer: each names the rule that was broken, so the
//! API can answer with the field and the rule.

use crate::domain::{OrgId, PinRuleError, ScheduleError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("forbidden: '{action}' needs a role the caller does not have in {org}")]
    Forbidden { action: &'static str, org: OrgId },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: u32 },
    #[error("pin: {0}")]
    Pin(#[from] PinRuleError),
    #[error("schedule: {0}")]
    Schedule(#[from] ScheduleError),
    #[error("{field}: {rule}")]
    Invalid { field: &'static str, rule: String },
    /// The change does not fit the state: something still depends on
    /// what it would delete.
    #[error("{field}: {rule}")]
    Conflict { field: &'static str, rule: String },
}

impl EngineError {
    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> EngineError {
        EngineError::Invalid {
            field,
            rule: rule.into(),
        }
    }

    pub(crate) fn conflict(field: &'static str, rule: impl Into<String>) -> EngineError {
        EngineError::Conflict {
            field,
            rule: rule.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: u32) -> EngineError {
        EngineError::NotFound { kind, id }
    }

    /// The request field the error is about, for API answers.
    pub fn field(&self) -> &'static str {
        match self {
            EngineError::Forbidden { .. } => "role",
            EngineError::NotFound { kind, .. } => kind,
            EngineError::Pin(_) => "pin",
            EngineError::Schedule(_) => "schedule",
            EngineError::Invalid { field, .. } | EngineError::Conflict { field, .. } => field,
        }
    }
}
