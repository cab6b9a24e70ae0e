//! PIN codes: parsing, the custom-PIN rules, and random generation.
//!
//! Rules (seeds/003, domain.md): 4 or 6 digits, 6 only where the site enables
//! it; a custom PIN may not repeat one digit (1111) nor be an ascending or
//! descending consecutive run (1234, 5432, 987654); no custom PINs on
//! community access points; a guest's code (permanent, temporary, recurring,
//! delivery: any code of a guest, courier or visitor) is always generated,
//! never picked. Generated PINs obey the same shape rules so a system code
//! is never weaker than a user's.

use rand::Rng;

/// A PIN as entered: up to 12 digits. Leading zeros are significant, so the
/// length is kept beside the value ("0123" != "123").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pin {
    len: u8,
    value: u64,
}

/// The longest keypad entry a device may send; longer entries are malformed.
pub const MAX_ENTRY_DIGITS: usize = 12;

/// The shape of a stored PIN (4 or 6 digits) as a regular expression, for
/// the API's document; `PinPolicy::check_length` is the check.
pub const PIN_PATTERN: &str = "^[0-9]{4}([0-9]{2})?$";

/// Why a string is not a PIN, or not an acceptable one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PinRuleError {
    #[error("a PIN contains digits only")]
    NotDigits,
    #[error("a PIN has 4 or 6 digits, got {0}")]
    WrongLength(usize),
    #[error("6-digit PINs are not enabled on this site")]
    SixDigitsNotEnabled,
    #[error("custom PINs are not enabled on this site")]
    CustomPinsNotEnabled,
    #[error("a PIN may not repeat one digit (like 1111)")]
    RepeatedDigit,
    #[error("a PIN may not be a consecutive run (like 1234 or 5432)")]
    ConsecutiveRun,
    #[error("custom PINs are not allowed on community access points or amenities")]
    CommunityDoor,
    #[error(
        "a guest's code (permanent, temporary, recurring or delivery) is randomly generated, \
         never custom or typed in: use type generate"
    )]
    GuestCodeGenerated,
    #[error("this PIN is already in use on one of the chosen doors")]
    InUse,
    #[error("no free PIN of this length could be found for the chosen doors")]
    Exhausted,
}

impl Pin {
    /// Parses a keypad entry: 1 to 12 ASCII digits.
    pub fn parse(s: &str) -> Result<Pin, PinRuleError> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > MAX_ENTRY_DIGITS {
            return Err(PinRuleError::WrongLength(b.len()));
        }
        let mut value = 0u64;
        for &c in b {
            if !c.is_ascii_digit() {
                return Err(PinRuleError::NotDigits);
            }
            value = value * 10 + u64::from(c - b'0');
        }
        Ok(Pin {
            len: b.len() as u8,
            value,
        })
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false: a `Pin` has at least one digit.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A compact key for hash maps: the length in the top byte, so that
    /// "0123" and "123" stay apart.
    #[inline]
    pub fn key(&self) -> u64 {
        (u64::from(self.len) << 56) | self.value
    }

    /// The digits, most significant first.
    pub fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        let len = self.len as u32;
        (0..len).map(move |i| ((self.value / 10u64.pow(len - 1 - i)) % 10) as u8)
    }

    /// The PIN as text. Only for sharing with its holder and for devices:
    /// never for logs (`Debug` redacts it).
    pub fn reveal(&self) -> String {
        format!("{:0width$}", self.value, width = self.len as usize)
    }

    /// The shape rules every PIN of ours obeys (length aside).
    pub fn check_shape(&self) -> Result<(), PinRuleError> {
        let d: Vec<u8> = self.digits().collect();
        if d.windows(2).all(|w| w[0] == w[1]) {
            return Err(PinRuleError::RepeatedDigit);
        }
        let up = d.windows(2).all(|w| w[1] == w[0] + 1);
        let down = d.windows(2).all(|w| w[0] == w[1] + 1);
        if up || down {
            return Err(PinRuleError::ConsecutiveRun);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Pin {
    // Codes never appear in logs: Debug prints the length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pin({} digits, redacted)", self.len)
    }
}

impl serde::Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.reveal())
    }
}

impl<'de> serde::Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pin, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Pin::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Allowed PIN lengths for a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinPolicy {
    pub six_digits_enabled: bool,
    pub custom_pins_enabled: bool,
}

impl PinPolicy {
    fn check_length(&self, len: usize) -> Result<(), PinRuleError> {
        match len {
            4 => Ok(()),
            6 if self.six_digits_enabled => Ok(()),
            6 => Err(PinRuleError::SixDigitsNotEnabled),
            n => Err(PinRuleError::WrongLength(n)),
        }
    }

    /// Checks a PIN a user typed for themselves. `community_door` is true when
    /// any target door is a common-area access point or amenity.
    pub fn check_custom(&self, text: &str, community_door: bool) -> Result<Pin, PinRuleError> {
        if !self.custom_pins_enabled {
            return Err(PinRuleError::CustomPinsNotEnabled);
        }
        if community_door {
            return Err(PinRuleError::CommunityDoor);
        }
        if !text.bytes().all(|c| c.is_ascii_digit()) {
            return Err(PinRuleError::NotDigits);
        }
        self.check_length(text.len())?;
        let pin = Pin::parse(text)?;
        pin.check_shape()?;
        Ok(pin)
    }

    /// Draws a random PIN of `len` digits that obeys the shape rules and for
    /// which `taken` is false. Gives up after a bounded number of draws.
    pub fn generate(
        &self,
        len: usize,
        rng: &mut impl Rng,
        mut taken: impl FnMut(Pin) -> bool,
    ) -> Result<Pin, PinRuleError> {
        self.check_length(len)?;
        // 10^len candidates; give up long before scanning them all, a lock
        // holds a few hundred codes so a free one is found within a few draws.
        const MAX_DRAWS: usize = 10_000;
        let upper = 10u64.pow(len as u32);
        for _ in 0..MAX_DRAWS {
            let pin = Pin {
                len: len as u8,
                value: rng.random_range(0..upper),
            };
            if pin.check_shape().is_ok() && !taken(pin) {
                return Ok(pin);
            }
        }
        Err(PinRuleError::Exhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    const OPEN: PinPolicy = PinPolicy {
        six_digits_enabled: true,
        custom_pins_enabled: true,
    };

    #[test]
    fn leading_zeros_are_significant() {
        let a = Pin::parse("0123").unwrap();
        let b = Pin::parse("123").unwrap();
        assert_ne!(a, b);
        assert_ne!(a.key(), b.key());
        assert_eq!(a.reveal(), "0123");
    }

    #[test]
    fn debug_never_shows_the_code() {
        let p = Pin::parse("482916").unwrap();
        assert!(!format!("{p:?}").contains("482916"));
    }

    #[test]
    fn each_rule_is_named() {
        let cases = [
            ("12a4", PinRuleError::NotDigits),
            ("12345", PinRuleError::WrongLength(5)),
            ("1111", PinRuleError::RepeatedDigit),
            ("1234", PinRuleError::ConsecutiveRun),
            ("5432", PinRuleError::ConsecutiveRun),
            ("987654", PinRuleError::ConsecutiveRun),
        ];
        for (text, want) in cases {
            assert_eq!(OPEN.check_custom(text, false), Err(want), "{text}");
        }
        let four_only = PinPolicy {
            six_digits_enabled: false,
            custom_pins_enabled: true,
        };
        assert_eq!(
            four_only.check_custom("482916", false),
            Err(PinRuleError::SixDigitsNotEnabled)
        );
        let no_custom = PinPolicy {
            six_digits_enabled: true,
            custom_pins_enabled: false,
        };
        assert_eq!(
            no_custom.check_custom("4829", false),
            Err(PinRuleError::CustomPinsNotEnabled)
        );
        assert_eq!(
            OPEN.check_custom("4829", true),
            Err(PinRuleError::CommunityDoor)
        );
        assert!(OPEN.check_custom("4829", false).is_ok());
        assert!(OPEN.check_custom("1243", false).is_ok());
    }

    fn is_run_or_repeat(s: &str) -> bool {
        let d: Vec<i32> = s.bytes().map(|c| i32::from(c - b'0')).collect();
        let steps: Vec<i32> = d.windows(2).map(|w| w[1] - w[0]).collect();
        steps.iter().all(|&x| x == 0)
            || steps.iter().all(|&x| x == 1)
            || steps.iter().all(|&x| x == -1)
    }

    proptest! {
        #[test]
        fn custom_rules_match_a_plain_model(s in "[0-9]{1,8}") {
            let got = OPEN.check_custom(&s, false);
            let ok_len = s.len() == 4 || s.len() == 6;
            prop_assert_eq!(got.is_ok(), ok_len && !is_run_or_repeat(&s));
            if let Ok(pin) = got {
                prop_assert_eq!(pin.reveal(), s);
            }
        }

        #[test]
        fn any_text_is_handled_without_panic(s in "\\PC{0,20}") {
            let _ = Pin::parse(&s);
            let _ = OPEN.check_custom(&s, false);
        }

        #[test]
        fn generated_pins_obey_the_rules_and_avoid_taken(seed in any::<u64>(), six in any::<bool>()) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let len = if six { 6 } else { 4 };
            let taken = Pin::parse(if six { "482916" } else { "4829" }).unwrap();
            let pin = OPEN.generate(len, &mut rng, |p| p == taken).unwrap();
            prop_assert_eq!(pin.len(), len);
            prop_assert!(pin != taken);
            prop_assert!(OPEN.check_custom(&pin.reveal(), false).is_ok());
        }
    }

    #[test]
    fn generation_reports_exhaustion() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            OPEN.generate(4, &mut rng, |_| true),
            Err(PinRuleError::Exhausted)
        );
        let four_only = PinPolicy {
            six_digits_enabled: false,
            custom_pins_enabled: false,
        };
        assert_eq!(
            four_only.generate(6, &mut rng, |_| false),
            Err(PinRuleError::SixDigitsNotEnabled)
        );
    }
}
