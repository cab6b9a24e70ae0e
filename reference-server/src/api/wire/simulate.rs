//! Bodies of the sandbox routes (`POST /v1/devices/{device}/simulate/...`).
//! Actions without a value (`connect`, `jam`, ...) take no body; their
//! answer is `Simulated` (`service::sandbox`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::protocol::SimAction;

/// `simulate/keypad_code_entry`: the code typed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeypadCodeEntryBody {
    /// 1 to 12 digits, as typed.
    #[schema(example = "482916", pattern = "^[0-9]{1,12}$")]
    pub code: String,
}

impl std::fmt::Debug for KeypadCodeEntryBody {
    // Codes never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeypadCodeEntryBody(redacted)")
    }
}

/// `simulate/card_tap`: the card's number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardTapBody {
    /// Decimal digits, as a string (JSON numbers lose digits), at most
    /// 18446744073709551615.
    #[schema(example = "1234567890", pattern = "^[0-9]{1,20}$")]
    pub card_number: String,
}

impl std::fmt::Debug for CardTapBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardTapBody(redacted)")
    }
}

/// `simulate/battery`: the level the battery reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatteryBody {
    /// 0 to 100.
    #[schema(maximum = 100)]
    pub level_pct: u8,
}

impl From<KeypadCodeEntryBody> for SimAction {
    fn from(b: KeypadCodeEntryBody) -> SimAction {
        SimAction::KeypadCodeEntry { code: b.code }
    }
}

impl From<CardTapBody> for SimAction {
    fn from(b: CardTapBody) -> SimAction {
        SimAction::CardTap {
            card_number: b.card_number,
        }
    }
}

impl From<BatteryBody> for SimAction {
    fn from(b: BatteryBody) -> SimAction {
        SimAction::Battery {
            level_pct: b.level_pct,
        }
    }
}
