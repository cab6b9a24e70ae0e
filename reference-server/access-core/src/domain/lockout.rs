//! Keypad brute-force lockout: `max_wrong` wrong PINs within `window_s`
//! seconds lock the keypad for `lockout_s` seconds (real keypads: 3-5 tries,
//! 10-60 s). A correct PIN clears the count, as on the hardware.

use jiff::Timestamp;

/// The most wrong tries a policy may count (bounds the per-keypad state).
pub const MAX_WRONG_LIMIT: u8 = 16;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct LockoutPolicy {
    /// 1 to `MAX_WRONG_LIMIT` (a test holds the document to it).
    #[schema(minimum = 1, maximum = 16)]
    pub max_wrong: u8,
    #[schema(minimum = 1)]
    pub window_s: u32,
    #[schema(minimum = 1)]
    pub lockout_s: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_wrong: 5,
            window_s: 60,
            lockout_s: 30,
        }
    }
}

impl LockoutPolicy {
    pub fn check(&self) -> Result<(), &'static str> {
        if self.max_wrong == 0 || self.max_wrong > MAX_WRONG_LIMIT {
            return Err("max_wrong must be between 1 and 16");
        }
        if self.window_s == 0 || self.lockout_s == 0 {
            return Err("window_s and lockout_s must be at least 1");
        }
        Ok(())
    }
}

/// One keypad's recent wrong tries: a ring of at most `MAX_WRONG_LIMIT`
/// times in whole seconds (the windows are seconds long). Kept small and
/// untouched on the happy path: it sits on the credential-check path of every
/// keypad entry.
#[derive(Clone, Debug)]
pub struct Lockout {
    /// Unix seconds of recent wrong tries; `NONE_S` = empty slot.
    wrong_s: [i64; MAX_WRONG_LIMIT as usize],
    next: u8,
    /// How many slots are filled (0 = nothing to clear on success).
    filled: u8,
    /// Unix seconds; `NONE_S` = not locked.
    locked_until_s: i64,
}

/// "No time": below every second a `Timestamp` can hold, so a device whose
/// clock says 1970-01-01T00:00:00Z (second 0) still counts and locks.
const NONE_S: i64 = i64::MIN;

impl Default for Lockout {
    fn default() -> Self {
        Lockout {
            wrong_s: [NONE_S; MAX_WRONG_LIMIT as usize],
            next: 0,
            filled: 0,
            locked_until_s: NONE_S,
        }
    }
}

impl Lockout {
    pub fn is_locked(&self, now: Timestamp) -> bool {
        now.as_second() < self.locked_until_s
    }

    pub fn locked_until(&self) -> Option<Timestamp> {
        (self.locked_until_s != NONE_S)
            .then(|| Timestamp::from_second(self.locked_until_s).ok())
            .flatten()
    }

    /// Records a wrong PIN; returns true if this try locked the keypad.
    pub fn record_wrong(&mut self, now: Timestamp, p: &LockoutPolicy) -> bool {
        let n = usize::from(p.max_wrong.clamp(1, MAX_WRONG_LIMIT));
        let now_s = now.as_second();
        self.wrong_s[usize::from(self.next) % n] = now_s;
        self.next = ((usize::from(self.next) + 1) % n) as u8;
        self.filled = self.filled.saturating_add(1).min(n as u8);
        let since = now_s - i64::from(p.window_s);
        let recent = self.wrong_s[..n].iter().filter(|&&t| t > since).count();
        if recent >= n {
            // In whole seconds, and never past the last second a
            // `Timestamp` holds: a device's clock may say anything, and the
            // lockout's end must stay a time the engine can report.
            let last_s = Timestamp::MAX.as_second();
            self.locked_until_s = now_s.saturating_add(i64::from(p.lockout_s)).min(last_s);
            self.record_success();
            return true;
        }
        false
    }

    /// A correct PIN clears the count (nothing to write when already clear).
    pub fn record_success(&mut self) {
        if self.filled != 0 {
            self.wrong_s = [NONE_S; MAX_WRONG_LIMIT as usize];
            self.next = 0;
            self.filled = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + s).unwrap()
    }

    #[test]
    fn locks_after_n_wrong_within_window_and_unlocks_after_t() {
        let p = LockoutPolicy {
            max_wrong: 3,
            window_s: 60,
            lockout_s: 30,
        };
        let mut l = Lockout::default();
        assert!(!l.record_wrong(t(0), &p));
        assert!(!l.record_wrong(t(10), &p));
        assert!(l.record_wrong(t(20), &p));
        assert!(l.is_locked(t(49)));
        assert!(!l.is_locked(t(50)));
    }

    /// A device's clock may say anything: at the epoch's first second and
    /// near the last second a `Timestamp` holds, the keypad still locks and
    /// the lockout's end is a time the engine can report.
    #[test]
    fn a_lockout_holds_at_the_edges_of_time() {
        let p = LockoutPolicy {
            max_wrong: 2,
            window_s: 60,
            lockout_s: 30,
        };
        for now_s in [0, -30, Timestamp::MAX.as_second() - 10] {
            let now = Timestamp::from_second(now_s).unwrap();
            let mut l = Lockout::default();
            assert!(!l.record_wrong(now, &p), "at {now_s}");
            assert!(l.record_wrong(now, &p), "at {now_s}");
            assert!(l.is_locked(now), "at {now_s}");
            let until = l.locked_until().expect("a reportable end");
            assert!(until > now, "at {now_s}");
        }
    }

    #[test]
    fn slow_tries_outside_the_window_do_not_lock() {
        let p = LockoutPolicy {
            max_wrong: 3,
            window_s: 60,
            lockout_s: 30,
        };
        let mut l = Lockout::default();
        for i in 0..10 {
            assert!(!l.record_wrong(t(i * 31), &p), "try {i}");
        }
    }

    #[test]
    fn a_correct_pin_clears_the_count() {
        let p = LockoutPolicy {
            max_wrong: 3,
            window_s: 60,
            lockout_s: 30,
        };
        let mut l = Lockout::default();
        l.record_wrong(t(0), &p);
        l.record_wrong(t(1), &p);
        l.record_success();
        assert!(!l.record_wrong(t(2), &p));
    }
}
