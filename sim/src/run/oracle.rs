//! The decision oracle: an independent model of what every check must
//! answer, built from what the scenario asked provisioning to create (the
//! truth table) plus its own small model of state that changes during a run
//! (wrong-PIN counts and keypad lockouts, use counts per credential and
//! door). It never calls the engine: a bug in the engine's rules shows up
//! as a false accept or a false reject here.
//!
//! Time: the engine decides at some instant between the attempt's start and
//! its answer. The oracle evaluates both ends; when they disagree (a
//! schedule edge or a lockout ending inside the attempt) the attempt is
//! counted as `ambiguous`, not as a false decision, and the oracle follows
//! the engine's answer so that its state stays comparable.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use reference_server::domain::{
    CredentialId, DailyWindow, DenyReason, DeviceId, DoorId, LockoutPolicy, Weekdays,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

/// Most examples kept per kind of mismatch.
pub const MAX_EXAMPLES: usize = 20;

/// When a credential is valid, as the scenario asked for it.
#[derive(Clone, Debug)]
pub enum Validity {
    Always,
    /// `start` inclusive, `end` exclusive.
    Range {
        start: Timestamp,
        end: Timestamp,
    },
    /// Weekdays and a local daily window (start == end: the whole day).
    Recurring {
        days: Weekdays,
        window: DailyWindow,
        tz: TimeZone,
        /// Optional validity range around the weekly pattern.
        bounds: Option<(Timestamp, Timestamp)>,
    },
    /// A guest stay, with the lock's guest settings. The engine opens the
    /// stay at `check_in` or when the host checks the guest in, whichever
    /// comes first, and closes it likewise at `check_out`; the oracle keeps
    /// the earlier instant in each (see [`Oracle::stay_event`]).
    Stay {
        check_in: Timestamp,
        check_out: Timestamp,
        prevent_until_checked_in: bool,
        revoke_on_check_out: bool,
    },
}

impl Validity {
    /// `Ok` when valid at `now`, else the reason the rules give.
    pub fn check(&self, now: Timestamp) -> Result<(), DenyReason> {
        match self {
            Validity::Always => Ok(()),
            Validity::Range { start, end } => {
                if now < *start {
                    Err(DenyReason::NotYetValid)
                } else if now >= *end {
                    Err(DenyReason::Expired)
                } else {
                    Ok(())
                }
            }
            Validity::Recurring {
                days,
                window,
                tz,
                bounds,
            } => {
                if let Some((start, end)) = bounds {
                    Validity::Range {
                        start: *start,
                        end: *end,
                    }
                    .check(now)?;
                }
                let local = tz.to_datetime(now);
                let (day, t) = (local.weekday(), local.time());
                let inside = if window.start == window.end {
                    days.contains(day)
                } else if window.start < window.end {
                    days.contains(day) && window.start <= t && t < window.end
                } else {
                    // Crosses midnight: opened today, or yesterday evening.
                    (days.contains(day) && t >= window.start)
                        || (days.contains(day.previous()) && t < window.end)
                };
                if inside {
                    Ok(())
                } else {
                    Err(DenyReason::OutsideSchedule)
                }
            }
            Validity::Stay {
                check_in,
                check_out,
                prevent_until_checked_in,
                revoke_on_check_out,
            } => {
                // The engine's order: a checked-out guest is told so even
                // if the stay had never started.
                if *revoke_on_check_out && now >= *check_out {
                    Err(DenyReason::CheckedOut)
                } else if *prevent_until_checked_in && now < *check_in {
                    Err(DenyReason::NotCheckedIn)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Is `now` inside the stay (always true for other validities)? A
    /// guest with a lenient lock can open outside the stay, but only an
    /// early or late guest tries to.
    pub fn in_stay(&self, now: Timestamp) -> bool {
        match self {
            Validity::Stay {
                check_in,
                check_out,
                ..
            } => *check_in <= now && now < *check_out,
            _ => true,
        }
    }
}

/// A check-in or check-out the host made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StayEvent {
    CheckIn,
    CheckOut,
}

/// What kind of secret a truth entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TruthKind {
    Pin,
    Card,
    Qr,
    Ble,
}

/// One provisioned credential as the oracle knows it.
#[derive(Clone, Debug)]
pub struct Truth {
    pub kind: TruthKind,
    /// What is presented: PIN digits, card number, token text.
    pub text: String,
    pub doors: Vec<DoorId>,
    pub validity: Validity,
    /// Grants allowed per door (visitor keys with "each door counts").
    pub per_door_uses: Option<u32>,
    /// Grants allowed in all (delivery codes).
    pub total_uses: Option<u32>,
    /// The schedule label (permanent, temporary, ...), for reports.
    pub label: &'static str,
}

/// Index of a truth entry.
pub type TruthId = usize;

/// What an attempt presented, resolved against the truth table at arrival.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub device: DeviceId,
    pub door: DoorId,
    /// The action that produced it (pin_valid, qr_replayed, ...).
    pub action: &'static str,
    pub kind: TruthKind,
    /// The truth entry the presented text belongs to, if any.
    pub truth: Option<TruthId>,
    /// Does this device apply keypad lockout (a PIN pad)?
    pub keypad: bool,
}

/// The decision the oracle expects, or the engine gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision", content = "reason")]
pub enum Expected {
    Granted,
    Denied(DenyReason),
}

impl Expected {
    pub fn granted(self) -> bool {
        matches!(self, Expected::Granted)
    }
    /// `granted` or `denied:<reason>`, the reason as the wire names it.
    pub fn label(self) -> String {
        match self {
            Expected::Granted => "granted".into(),
            Expected::Denied(r) => format!("denied:{}", r.as_str()),
        }
    }
}

/// One disagreement, for the report (see [`Oracle::example`]).
pub type Example = crate::metrics::DecisionExample;

/// The oracle's counters.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Verdicts {
    pub true_grants: u64,
    pub true_denials: u64,
    pub false_accepts: u64,
    pub false_rejects: u64,
    /// Both denied, for different reasons.
    pub reason_mismatches: u64,
    /// The expectation changed inside the attempt (a time edge).
    pub ambiguous: u64,
}

impl Verdicts {
    pub fn add(&mut self, o: &Verdicts) {
        self.true_grants += o.true_grants;
        self.true_denials += o.true_denials;
        self.false_accepts += o.false_accepts;
        self.false_rejects += o.false_rejects;
        self.reason_mismatches += o.reason_mismatches;
        self.ambiguous += o.ambiguous;
    }
    pub fn decisions(&self) -> u64 {
        self.true_grants
            + self.true_denials
            + self.false_accepts
            + self.false_rejects
            + self.ambiguous
    }
}

#[derive(Clone, Debug, Default)]
struct KeypadState {
    /// Unix seconds of wrong tries since the last success.
    wrong_s: Vec<i64>,
    /// The lockout's end as the engine may have set it, in Unix seconds:
    /// the engine stamped the locking try somewhere between its start and
    /// its answer, so the end lies in `locked_from_s..=locked_until_s`.
    locked_from_s: i64,
    locked_until_s: i64,
}

/// The truth table and the oracle's model of run-time state.
pub struct Oracle {
    truths: Vec<Truth>,
    /// (door, PIN text) -> truth.
    pins: FxHashMap<(DoorId, String), TruthId>,
    /// Lockout policy per door's site.
    lockout: FxHashMap<DoorId, LockoutPolicy>,
    /// 0-based site index per door (for examples).
    sites: FxHashMap<DoorId, u32>,
    keypads: FxHashMap<DeviceId, KeypadState>,
    uses_total: FxHashMap<TruthId, u32>,
    uses_door: FxHashMap<(TruthId, DoorId), u32>,
    /// Uses picked but not yet judged (so two arrivals do not pick one key).
    reserved: FxHashMap<(TruthId, DoorId), u32>,
    extra_qr: FxHashMap<DoorId, Vec<TruthId>>,
    /// Fallback pool codes per door (see [`Oracle::pool_pin`]).
    pool_pins: rustc_hash::FxHashSet<(DoorId, String)>,
    /// The engine's credential of a truth entry (PINs a run may change or
    /// revoke).
    credentials: FxHashMap<TruthId, CredentialId>,
    /// PINs under a code action not yet confirmed by every device of their
    /// door (or whose action failed): no attempt is planned on them, since
    /// what they open depends on which lock has synced what.
    frozen: FxHashSet<TruthId>,
    /// Changed-away or revoked PINs, confirmed removed: the denial the
    /// rules give when one is typed.
    retired: FxHashMap<TruthId, DenyReason>,
    /// PINs made during the run (created, or the new code of a change),
    /// once every device of their door stores them.
    extra_pins: FxHashMap<DoorId, Vec<TruthId>>,
    /// Retired PINs per door (people type their old code).
    retired_pins: FxHashMap<DoorId, Vec<TruthId>>,
    /// Attempts judged on retired PINs.
    pub retired_attempts: u64,
    pub verdicts: Verdicts,
    pub lockouts: u64,
    /// True denials per expected reason (`not_checked_in`, ...).
    pub denials: BTreeMap<String, u64>,
    pub false_accept_examples: Vec<Example>,
    pub false_reject_examples: Vec<Example>,
    pub reason_mismatch_examples: Vec<Example>,
}

impl Default for Oracle {
    fn default() -> Self {
        Oracle::new()
    }
}

impl Oracle {
    pub fn new() -> Oracle {
        Oracle {
            truths: Vec::new(),
            pins: FxHashMap::default(),
            lockout: FxHashMap::default(),
            sites: FxHashMap::default(),
            keypads: FxHashMap::default(),
            uses_total: FxHashMap::default(),
            uses_door: FxHashMap::default(),
            reserved: FxHashMap::default(),
            extra_qr: FxHashMap::default(),
            pool_pins: Default::default(),
            credentials: FxHashMap::default(),
            frozen: FxHashSet::default(),
            retired: FxHashMap::default(),
            extra_pins: FxHashMap::default(),
            retired_pins: FxHashMap::default(),
            retired_attempts: 0,
            verdicts: Verdicts::default(),
            lockouts: 0,
            denials: BTreeMap::new(),
            false_accept_examples: Vec::new(),
            false_reject_examples: Vec::new(),
            reason_mismatch_examples: Vec::new(),
        }
    }

    pub fn set_lockout(&mut self, door: DoorId, policy: LockoutPolicy) {
        self.lockout.insert(door, policy);
    }

    /// The site `door` belongs to (0-based index), for examples.
    pub fn set_site(&mut self, door: DoorId, site_index: u32) {
        self.sites.insert(door, site_index);
    }

    pub fn add(&mut self, t: Truth) -> TruthId {
        let id = self.truths.len();
        if t.kind == TruthKind::Pin {
            for d in &t.doors {
                self.pins.insert((*d, t.text.clone()), id);
            }
        }
        self.truths.push(t);
        id
    }

    pub fn truth(&self, id: TruthId) -> &Truth {
        &self.truths[id]
    }

    pub fn len(&self) -> usize {
        self.truths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.truths.is_empty()
    }

    /// The host checked the guest of stay truth `id` in or out at `at`:
    /// the engine then opens (closes) the stay from `at` if that is before
    /// the booked time.
    pub fn stay_event(&mut self, id: TruthId, event: StayEvent, at: Timestamp) {
        if let Validity::Stay {
            check_in,
            check_out,
            ..
        } = &mut self.truths[id].validity
        {
            let t = match event {
                StayEvent::CheckIn => check_in,
                StayEvent::CheckOut => check_out,
            };
            *t = (*t).min(at);
        }
    }

    /// Is `text` a PIN of `door` in the truth table?
    pub fn pin_known(&self, door: DoorId, text: &str) -> bool {
        let key = (door, text.to_string());
        self.pins.contains_key(&key) || self.pool_pins.contains(&key)
    }

    /// An unassigned fallback code pre-loaded on `door`'s lock: not a
    /// credential anyone holds, but not a wrong PIN either.
    pub fn pool_pin(&mut self, door: DoorId, text: String) {
        self.pool_pins.insert((door, text));
    }

    /// The truth entry of a PIN typed at `door`.
    pub fn pin_at(&self, door: DoorId, text: &str) -> Option<TruthId> {
        self.pins.get(&(door, text.to_string())).copied()
    }

    /// Uses left at `door` for `id`, counting reserved ones; `None`: unlimited.
    pub fn uses_left(&self, id: TruthId, door: DoorId) -> Option<u32> {
        let t = &self.truths[id];
        let reserved = self.reserved.get(&(id, door)).copied().unwrap_or(0);
        let door_left = t.per_door_uses.map(|n| {
            n.saturating_sub(self.uses_door.get(&(id, door)).copied().unwrap_or(0) + reserved)
        });
        let total_left = t
            .total_uses
            .map(|n| n.saturating_sub(self.uses_total.get(&id).copied().unwrap_or(0) + reserved));
        match (door_left, total_left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Marks one use of `id` at `door` as picked (released by [`Oracle::judge`]).
    pub fn reserve(&mut self, id: TruthId, door: DoorId) {
        *self.reserved.entry((id, door)).or_default() += 1;
    }

    /// Releases a use picked with [`Oracle::reserve`].
    pub fn unreserve(&mut self, id: TruthId, door: DoorId) {
        if let Some(r) = self.reserved.get_mut(&(id, door)) {
            *r = r.saturating_sub(1);
        }
    }

    /// Has `id` used up its grants at `door` (judged uses only)?
    pub fn used_up(&self, id: TruthId, door: DoorId) -> bool {
        let t = &self.truths[id];
        let d = self.uses_door.get(&(id, door)).copied().unwrap_or(0);
        let all = self.uses_total.get(&id).copied().unwrap_or(0);
        t.per_door_uses.is_some_and(|n| d >= n) || t.total_uses.is_some_and(|n| all >= n)
    }

    /// Visitor keys issued during the run for `door`.
    pub fn extra_qr(&self, door: DoorId) -> &[TruthId] {
        self.extra_qr.get(&door).map_or(&[], Vec::as_slice)
    }

    pub fn push_extra_qr(&mut self, door: DoorId, id: TruthId) {
        self.extra_qr.entry(door).or_default().push(id);
    }

    /// Links a truth entry to the engine's credential (for examples, and
    /// for code actions on PINs).
    pub fn set_credential(&mut self, id: TruthId, credential: CredentialId) {
        self.credentials.insert(id, credential);
    }

    pub fn credential(&self, id: TruthId) -> Option<CredentialId> {
        self.credentials.get(&id).copied()
    }

    /// Uses of `id` at `door` picked and not yet judged.
    pub fn reserved(&self, id: TruthId, door: DoorId) -> u32 {
        self.reserved.get(&(id, door)).copied().unwrap_or(0)
    }

    /// Takes `id` out of every pick until [`Oracle::thaw`].
    pub fn freeze(&mut self, id: TruthId) {
        self.frozen.insert(id);
    }

    /// The devices confirmed `id` (a new or changed PIN): `door` may use it.
    pub fn thaw(&mut self, id: TruthId, door: DoorId) {
        self.frozen.remove(&id);
        self.extra_pins.entry(door).or_default().push(id);
    }

    /// A PIN whose removal the devices confirmed: typed again, it is
    /// denied for `reason`.
    pub fn retire(&mut self, id: TruthId, door: DoorId, reason: DenyReason) {
        self.frozen.remove(&id);
        if let Some(v) = self.extra_pins.get_mut(&door) {
            v.retain(|x| *x != id);
        }
        self.retired.insert(id, reason);
        self.retired_pins.entry(door).or_default().push(id);
    }

    /// Neither under a code action nor retired.
    pub fn live(&self, id: TruthId) -> bool {
        !self.frozen.contains(&id) && !self.retired.contains_key(&id)
    }

    /// PINs made during the run that `door` may use.
    pub fn extra_pins(&self, door: DoorId) -> &[TruthId] {
        self.extra_pins.get(&door).map_or(&[], Vec::as_slice)
    }

    /// Retired PINs of `door`.
    pub fn retired_pins(&self, door: DoorId) -> &[TruthId] {
        self.retired_pins.get(&door).map_or(&[], Vec::as_slice)
    }

    /// Describes attempt `a`, started at `sent` and answered (or failed)
    /// at `done`, for a report: where and when, what was presented, and
    /// for PINs at a keypad the wrong tries the oracle has counted and the
    /// lockout end it has set. Call before the attempt changes the
    /// oracle's state, so the history is what the keypad had seen.
    pub fn example(
        &self,
        a: &Attempt,
        expected: String,
        actual: String,
        sent: Timestamp,
        done: Timestamp,
        note: &str,
    ) -> Example {
        use crate::clock::display_ms;
        let at = |s: i64| {
            Timestamp::from_second(s)
                .map(display_ms)
                .unwrap_or_else(|_| s.to_string())
        };
        let keypad = (a.kind == TruthKind::Pin && a.keypad)
            .then(|| self.keypads.get(&a.device))
            .flatten();
        Example {
            at: display_ms(sent),
            answered_at: display_ms(done),
            site: self.sites.get(&a.door).copied(),
            door: a.door.0,
            device: a.device.0,
            credential: a.truth.and_then(|id| self.credential(id)).map(|c| c.0),
            credential_kind: serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            action: a.action.to_string(),
            expected,
            actual,
            note: note.to_string(),
            wrong_pins_at: keypad
                .map_or_else(Vec::new, |k| k.wrong_s.iter().map(|s| at(*s)).collect()),
            locked_until: keypad
                .filter(|k| k.locked_until_s != 0)
                .map(|k| at(k.locked_until_s)),
        }
    }

    fn locked(&self, device: DeviceId, now: Timestamp) -> bool {
        self.keypads
            .get(&device)
            .is_some_and(|k| k.locked_until_s != 0 && now.as_second() < k.locked_until_s)
    }

    /// What the rules say for `a` at `now`, without changing state.
    pub fn expect(&self, a: &Attempt, now: Timestamp) -> Expected {
        use DenyReason as R;
        if a.kind == TruthKind::Pin && a.keypad && self.locked(a.device, now) {
            return Expected::Denied(R::LockedOut);
        }
        self.expect_unlocked(a, now)
    }

    /// Whether the keypad of `a` may or may not be locked out for an
    /// attempt the engine decided somewhere in `sent..=done`, given the
    /// uncertain end of its lockout.
    fn lock_uncertain(&self, a: &Attempt, sent: Timestamp, done: Timestamp) -> bool {
        a.kind == TruthKind::Pin
            && a.keypad
            && self.keypads.get(&a.device).is_some_and(|k| {
                k.locked_until_s != 0
                    && done.as_second() >= k.locked_from_s
                    && sent.as_second() < k.locked_until_s
            })
    }

    /// What the rules say for `a` at `now` if its keypad is not locked out.
    fn expect_unlocked(&self, a: &Attempt, now: Timestamp) -> Expected {
        use DenyReason as R;
        let Some(id) = a.truth else {
            return Expected::Denied(match a.kind {
                TruthKind::Pin => R::WrongPin,
                _ => R::UnknownCredential,
            });
        };
        let t = &self.truths[id];
        if !t.doors.contains(&a.door) {
            return Expected::Denied(match t.kind {
                // The PIN index is per door: another door's code is just wrong here.
                TruthKind::Pin => R::WrongPin,
                _ => R::DoorNotAllowed,
            });
        }
        // Retired before any time rule: the engine no longer finds the code
        // (or finds it revoked).
        if let Some(r) = self.retired.get(&id) {
            return Expected::Denied(*r);
        }
        if let Err(r) = t.validity.check(now) {
            return Expected::Denied(r);
        }
        let used_door = self.uses_door.get(&(id, a.door)).copied().unwrap_or(0);
        let used_total = self.uses_total.get(&id).copied().unwrap_or(0);
        let one_time_token = matches!(t.kind, TruthKind::Qr | TruthKind::Ble)
            && (t.per_door_uses == Some(1) || t.total_uses == Some(1));
        if t.per_door_uses.is_some_and(|n| used_door >= n)
            || t.total_uses.is_some_and(|n| used_total >= n)
        {
            return Expected::Denied(if one_time_token {
                R::Replayed
            } else {
                R::UsesExhausted
            });
        }
        Expected::Granted
    }

    fn record(&mut self, a: &Attempt, decided: Expected, sent: Timestamp, now: Timestamp) {
        if decided.granted() {
            if let Some(id) = a.truth {
                *self.uses_total.entry(id).or_default() += 1;
                *self.uses_door.entry((id, a.door)).or_default() += 1;
            }
        }
        if a.kind != TruthKind::Pin || !a.keypad {
            return;
        }
        let policy = self.lockout.get(&a.door).copied().unwrap_or_default();
        let k = self.keypads.entry(a.device).or_default();
        match decided {
            Expected::Granted => k.wrong_s.clear(),
            Expected::Denied(DenyReason::WrongPin) => {
                let now_s = now.as_second();
                k.wrong_s.push(now_s);
                let since = now_s - i64::from(policy.window_s);
                k.wrong_s.retain(|&t| t > since);
                if k.wrong_s.len() >= usize::from(policy.max_wrong.max(1)) {
                    k.locked_from_s = sent.as_second() + i64::from(policy.lockout_s);
                    k.locked_until_s = now_s + i64::from(policy.lockout_s);
                    k.wrong_s.clear();
                    self.lockouts += 1;
                }
            }
            Expected::Denied(_) => {}
        }
    }

    /// Judges the engine's `actual` decision of attempt `a`, which started
    /// at `sent` and was answered at `done`; updates the oracle's state.
    pub fn judge(&mut self, a: &Attempt, actual: Expected, sent: Timestamp, done: Timestamp) {
        if a.truth.is_some_and(|id| self.retired.contains_key(&id)) {
            self.retired_attempts += 1;
        }
        let at_start = self.expect(a, sent);
        let at_end = self.expect(a, done);
        if at_start != at_end && (actual == at_start || actual == at_end) {
            self.verdicts.ambiguous += 1;
            self.record(a, actual, sent, done);
            return;
        }
        // At the end of a lockout whose exact end the oracle cannot know
        // (the engine's clock read for the locking try), both "locked out"
        // and the unlocked answer are right; the engine's answer then
        // drives the oracle's state, so the two do not drift apart.
        if self.lock_uncertain(a, sent, done)
            && (actual == Expected::Denied(DenyReason::LockedOut)
                || actual == self.expect_unlocked(a, done))
        {
            self.verdicts.ambiguous += 1;
            if actual != Expected::Denied(DenyReason::LockedOut) {
                if let Some(k) = self.keypads.get_mut(&a.device) {
                    k.locked_until_s = 0;
                }
            }
            self.record(a, actual, sent, done);
            return;
        }
        let expected = at_end;
        let example =
            |o: &Oracle, why: &str| o.example(a, expected.label(), actual.label(), sent, done, why);
        match (expected, actual) {
            (Expected::Granted, Expected::Granted) => self.verdicts.true_grants += 1,
            (Expected::Denied(e), Expected::Denied(g)) => {
                self.verdicts.true_denials += 1;
                *self.denials.entry(e.as_str().to_string()).or_default() += 1;
                if e != g {
                    self.verdicts.reason_mismatches += 1;
                    if self.reason_mismatch_examples.len() < MAX_EXAMPLES {
                        let ex = example(self, "denied for another reason than the rules give");
                        self.reason_mismatch_examples.push(ex);
                    }
                }
            }
            (Expected::Denied(_), Expected::Granted) => {
                self.verdicts.false_accepts += 1;
                if self.false_accept_examples.len() < MAX_EXAMPLES {
                    let ex = example(self, "the engine granted what the truth table denies");
                    self.false_accept_examples.push(ex);
                }
            }
            (Expected::Granted, Expected::Denied(_)) => {
                self.verdicts.false_rejects += 1;
                if self.false_reject_examples.len() < MAX_EXAMPLES {
                    let ex = example(
                        self,
                        "the engine denied a credential the truth table grants",
                    );
                    self.false_reject_examples.push(ex);
                }
            }
        }
        // The oracle's own expectation drives its state.
        self.record(a, expected, sent, done);
    }

    /// Counts of truth entries per (kind, label), for the report.
    pub fn census(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for t in &self.truths {
            let k = format!(
                "{}.{}",
                serde_json::to_value(t.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                t.label
            );
            *m.entry(k).or_default() += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{date, time, Weekday};

    fn at(tz: &TimeZone, y: i16, m: i8, d: i8, h: i8, min: i8) -> Timestamp {
        tz.to_timestamp(date(y, m, d).at(h, min, 0, 0)).unwrap()
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_opened() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let v = Validity::Recurring {
            days: Weekdays::from_days([Weekday::Friday]),
            window: DailyWindow {
                start: time(22, 0, 0, 0),
                end: time(6, 0, 0, 0),
            },
            tz: tz.clone(),
            bounds: None,
        };
        // 2026-03-06 is a Friday.
        assert_eq!(v.check(at(&tz, 2026, 3, 6, 23, 0)), Ok(()));
        assert_eq!(v.check(at(&tz, 2026, 3, 7, 5, 59)), Ok(()));
        assert_eq!(
            v.check(at(&tz, 2026, 3, 7, 6, 0)),
            Err(DenyReason::OutsideSchedule)
        );
        assert_eq!(
            v.check(at(&tz, 2026, 3, 6, 5, 0)),
            Err(DenyReason::OutsideSchedule),
            "Thursday night's window is not open"
        );
    }

    #[test]
    fn ranges_are_start_inclusive_and_end_exclusive() {
        let start = Timestamp::from_second(1_000).unwrap();
        let end = Timestamp::from_second(2_000).unwrap();
        let v = Validity::Range { start, end };
        assert_eq!(
            v.check(Timestamp::from_second(999).unwrap()),
            Err(DenyReason::NotYetValid)
        );
        assert_eq!(v.check(start), Ok(()));
        assert_eq!(v.check(end), Err(DenyReason::Expired));
    }

    #[test]
    fn a_one_time_key_used_at_its_door_is_replayed_there() {
        let mut o = Oracle::new();
        let door = DoorId(3);
        let id = o.add(Truth {
            kind: TruthKind::Qr,
            text: "token".into(),
            doors: vec![door],
            validity: Validity::Always,
            per_door_uses: Some(1),
            total_uses: None,
            label: "visitor",
        });
        let a = Attempt {
            device: DeviceId(9),
            door,
            action: "qr_valid",
            kind: TruthKind::Qr,
            truth: Some(id),
            keypad: false,
        };
        let now = Timestamp::from_second(5_000).unwrap();
        o.judge(&a, Expected::Granted, now, now);
        assert!(o.used_up(id, door));
        assert_eq!(o.expect(&a, now), Expected::Denied(DenyReason::Replayed));
        // The engine granting it again is a false accept.
        o.judge(&a, Expected::Granted, now, now);
        assert_eq!(o.verdicts.false_accepts, 1);
        assert_eq!(o.verdicts.true_grants, 1);
    }

    #[test]
    fn an_answer_that_matches_either_end_of_a_time_edge_is_ambiguous() {
        let mut o = Oracle::new();
        let door = DoorId(1);
        let end = Timestamp::from_second(2_000).unwrap();
        let id = o.add(Truth {
            kind: TruthKind::Card,
            text: "1".into(),
            doors: vec![door],
            validity: Validity::Range {
                start: Timestamp::from_second(0).unwrap(),
                end,
            },
            per_door_uses: None,
            total_uses: None,
            label: "temporary",
        });
        let a = Attempt {
            device: DeviceId(2),
            door,
            action: "card",
            kind: TruthKind::Card,
            truth: Some(id),
            keypad: false,
        };
        let before = Timestamp::from_second(1_999).unwrap();
        o.judge(&a, Expected::Granted, before, end);
        assert_eq!(o.verdicts.ambiguous, 1);
        assert_eq!(o.verdicts.false_accepts, 0);
    }

    #[test]
    fn the_end_of_a_lockout_is_uncertain_by_the_locking_try_s_span() {
        let mut o = Oracle::new();
        let door = DoorId(1);
        o.set_lockout(
            door,
            LockoutPolicy {
                max_wrong: 2,
                window_s: 60,
                lockout_s: 30,
            },
        );
        let id = o.add(Truth {
            kind: TruthKind::Pin,
            text: "5826".into(),
            doors: vec![door],
            validity: Validity::Always,
            per_door_uses: None,
            total_uses: None,
            label: "member",
        });
        let attempt = |truth: Option<TruthId>| Attempt {
            device: DeviceId(4),
            door,
            action: if truth.is_some() {
                "pin_valid"
            } else {
                "pin_wrong"
            },
            kind: TruthKind::Pin,
            truth,
            keypad: true,
        };
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let wrong = Expected::Denied(DenyReason::WrongPin);
        o.judge(&attempt(None), wrong, t(100), t(100));
        // The locking try was sent at 100 s and answered at 102 s: the
        // engine's lockout ends somewhere in 130..=132.
        o.judge(&attempt(None), wrong, t(100), t(102));
        assert_eq!(o.lockouts, 1);
        // Certainly locked before 130: a grant there is a false accept.
        o.judge(&attempt(Some(id)), Expected::Granted, t(120), t(120));
        assert_eq!(o.verdicts.false_accepts, 1);
        // At 131 either answer is right, and the engine's grant ends the
        // lockout in the oracle too: the next good PIN is a true grant.
        o.judge(&attempt(Some(id)), Expected::Granted, t(131), t(131));
        assert_eq!(o.verdicts.ambiguous, 1);
        o.judge(&attempt(Some(id)), Expected::Granted, t(131), t(131));
        assert_eq!(o.verdicts.true_grants, 1);
        assert_eq!(o.verdicts.false_accepts, 1);
        assert_eq!(o.verdicts.false_rejects, 0);
    }

    fn stay(prevent: bool, revoke: bool) -> Validity {
        Validity::Stay {
            check_in: Timestamp::from_second(1_000).unwrap(),
            check_out: Timestamp::from_second(2_000).unwrap(),
            prevent_until_checked_in: prevent,
            revoke_on_check_out: revoke,
        }
    }

    #[test]
    fn a_stay_follows_the_lock_s_guest_settings() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let (before, inside, after) = (t(999), t(1_500), t(2_000));
        let strict = stay(true, true);
        assert_eq!(strict.check(before), Err(DenyReason::NotCheckedIn));
        assert_eq!(strict.check(t(1_000)), Ok(()), "check-in is inclusive");
        assert_eq!(strict.check(inside), Ok(()));
        assert_eq!(strict.check(after), Err(DenyReason::CheckedOut));
        // Each setting off: that side of the stay opens.
        let open_early = stay(false, true);
        assert_eq!(open_early.check(before), Ok(()));
        assert_eq!(open_early.check(after), Err(DenyReason::CheckedOut));
        let keeps = stay(true, false);
        assert_eq!(keeps.check(before), Err(DenyReason::NotCheckedIn));
        assert_eq!(keeps.check(after), Ok(()));
        let lenient = stay(false, false);
        for now in [before, inside, after] {
            assert_eq!(lenient.check(now), Ok(()));
        }
        // Only the stay itself counts as "in the stay", whatever the lock.
        assert!(!lenient.in_stay(before) && lenient.in_stay(inside) && !lenient.in_stay(after));
    }

    #[test]
    fn an_early_check_in_or_out_by_the_host_moves_the_stay_s_edge() {
        let mut o = Oracle::new();
        let id = o.add(Truth {
            kind: TruthKind::Pin,
            text: "5826".into(),
            doors: vec![DoorId(1)],
            validity: stay(true, true),
            per_door_uses: None,
            total_uses: None,
            label: "stay",
        });
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        o.stay_event(id, StayEvent::CheckIn, t(900));
        assert_eq!(o.truth(id).validity.check(t(950)), Ok(()));
        // A check-in at the booked time or later changes nothing.
        o.stay_event(id, StayEvent::CheckIn, t(1_200));
        assert_eq!(o.truth(id).validity.check(t(950)), Ok(()));
        o.stay_event(id, StayEvent::CheckOut, t(1_800));
        assert_eq!(
            o.truth(id).validity.check(t(1_900)),
            Err(DenyReason::CheckedOut)
        );
    }

    #[test]
    fn stay_denials_are_judged_and_counted_by_reason_and_the_edge_is_ambiguous() {
        let mut o = Oracle::new();
        let door = DoorId(1);
        let id = o.add(Truth {
            kind: TruthKind::Pin,
            text: "5826".into(),
            doors: vec![door],
            validity: stay(true, true),
            per_door_uses: None,
            total_uses: None,
            label: "stay",
        });
        let a = Attempt {
            device: DeviceId(2),
            door,
            action: "stay_early",
            kind: TruthKind::Pin,
            truth: Some(id),
            keypad: true,
        };
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let not_in = Expected::Denied(DenyReason::NotCheckedIn);
        let out = Expected::Denied(DenyReason::CheckedOut);
        o.judge(&a, not_in, t(500), t(500));
        o.judge(&a, out, t(2_500), t(2_500));
        // Granted before check-in, or to a checked-out guest: false accepts.
        o.judge(&a, Expected::Granted, t(500), t(500));
        o.judge(&a, Expected::Granted, t(2_500), t(2_500));
        // Refused inside the stay: a false reject.
        o.judge(&a, not_in, t(1_500), t(1_500));
        // The check-in instant inside the attempt: either answer is right.
        o.judge(&a, Expected::Granted, t(999), t(1_001));
        o.judge(&a, not_in, t(999), t(1_001));
        let v = &o.verdicts;
        assert_eq!(
            (v.true_denials, v.false_accepts, v.false_rejects),
            (2, 2, 1)
        );
        assert_eq!(v.ambiguous, 2);
        assert_eq!(o.denials.get("not_checked_in"), Some(&1));
        assert_eq!(o.denials.get("checked_out"), Some(&1));
    }

    #[test]
    fn a_retired_pin_is_denied_for_its_reason_and_a_frozen_one_is_not_live() {
        let mut o = Oracle::new();
        let door = DoorId(2);
        let pin = |o: &mut Oracle, text: &str| {
            o.add(Truth {
                kind: TruthKind::Pin,
                text: text.into(),
                doors: vec![door],
                validity: Validity::Always,
                per_door_uses: None,
                total_uses: None,
                label: "permanent",
            })
        };
        let old = pin(&mut o, "5826");
        let new = pin(&mut o, "7314");
        let revoked = pin(&mut o, "9052");
        let a = |truth| Attempt {
            device: DeviceId(1),
            door,
            action: "pin_valid",
            kind: TruthKind::Pin,
            truth: Some(truth),
            keypad: true,
        };
        let now = Timestamp::from_second(5_000).unwrap();
        // A change in flight: neither code is picked.
        o.freeze(old);
        o.freeze(new);
        assert!(!o.live(old) && !o.live(new));
        // Confirmed: the new code is valid, the old one a wrong PIN.
        o.thaw(new, door);
        o.retire(old, door, DenyReason::WrongPin);
        assert!(o.live(new));
        assert_eq!(o.extra_pins(door), &[new]);
        assert_eq!(o.expect(&a(new), now), Expected::Granted);
        assert_eq!(
            o.expect(&a(old), now),
            Expected::Denied(DenyReason::WrongPin)
        );
        o.retire(revoked, door, DenyReason::Revoked);
        assert_eq!(o.retired_pins(door), &[old, revoked]);
        // Granted anyway: a false accept, and an attempt on a retired code.
        o.judge(&a(revoked), Expected::Granted, now, now);
        assert_eq!(o.verdicts.false_accepts, 1);
        assert_eq!(o.retired_attempts, 1);
    }

    #[test]
    fn a_lock_s_fallback_pool_codes_are_known_but_grant_nothing() {
        let mut o = Oracle::new();
        let (door, other) = (DoorId(3), DoorId(4));
        assert!(!o.pin_known(door, "4821"));
        o.pool_pin(door, "4821".into());
        // Never drawn as a wrong PIN at that door (its lock holds it) ...
        assert!(o.pin_known(door, "4821"));
        assert!(!o.pin_known(other, "4821"));
        // ... and no credential anyone could be expected to use.
        assert_eq!(o.pin_at(door, "4821"), None);
    }
}
