//! The decision oracle: an independent model of what every check must
//! answer, built from what the scenario asked provisioning to create (the
//! truth table) plus its own small model of state that changes during a run
//! (wrong-PIN counts and keypad lockouts, use counts per credential and
//! door). It never calls the engine: a bug in the engine's rules shows up
//! as a false accept or a false reject here.
//!
//! Time: the engine decides at some instant between the attempt's start and
//! its answer. The oracle evaluates the instants in between (both ends and
//! each whole second, which the lockout rule counts); when they disagree (a
//! schedule edge, a lockout ending inside the attempt) and the answer is
//! one of them, the attempt is `ambiguous`, not a false decision.
//!
//! Lockouts: one rule, kept by whoever decides the keypad's PINs (the
//! engine for a device that asks it, the device for one that decides from
//! its code cache). A wrong try counts in the whole second it was decided,
//! which the oracle may not know: it keeps every lockout state the rule
//! allows and drops those an answer contradicts (the engine's answers say
//! when a lockout ends, `locked_until`, which settles most of them).
//!
//! Unknown outcomes: a check that ended in a timeout or transport error may
//! still have been decided, using the credential or counting a wrong PIN.
//! The oracle keeps use counts as ranges and such a keypad's lockout as
//! unknown until later answers tell; an answer that depends on what such a
//! check did is `uncertain`, never false. The oracle's state follows the
//! engine's answers where the rules allow them, so one wrong answer is
//! counted once.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use reference_server::domain::{
    CredentialId, DailyWindow, DenyReason, DeviceId, DoorId, LockoutPolicy, Weekdays,
    MAX_WRONG_LIMIT,
};
use reference_server::protocol::{AuthResponse, Verdict as WireVerdict};
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

/// What an answer says about the keypad's lockout after the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockReport {
    /// It does not say: the device decided (its own cache, or its copy of
    /// the engine's lockout), or an engine that does not report ends.
    Unreported,
    /// An engine answer without `locked_until`: not locked out after it.
    NotLocked,
    /// An engine answer with `locked_until`.
    Until(Timestamp),
}

/// One answered attempt: the decision and what it says about the lockout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub decision: Expected,
    pub lock: LockReport,
}

impl From<Expected> for Answer {
    fn from(decision: Expected) -> Answer {
        Answer {
            decision,
            lock: LockReport::Unreported,
        }
    }
}

impl Answer {
    /// The engine's answer on the wire; `None` for an error answer.
    pub fn from_response(r: &AuthResponse) -> Option<Answer> {
        let decision = match r.decision {
            WireVerdict::Granted => Expected::Granted,
            // As a device reads a denial without a reason.
            WireVerdict::Denied => {
                Expected::Denied(r.reason.unwrap_or(DenyReason::UnknownCredential))
            }
            WireVerdict::Error => return None,
        };
        let lock = r
            .locked_until
            .map_or(LockReport::NotLocked, LockReport::Until);
        Some(Answer { decision, lock })
    }
}

/// How the oracle judged one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    TrueGrant,
    TrueDenial,
    /// Denied as the rules say, for another reason than they give (also
    /// counted as a true denial).
    ReasonMismatch,
    FalseAccept,
    FalseReject,
    /// The expectation changed while the attempt ran (a time edge) and the
    /// answer is one of those it took.
    Ambiguous,
    /// The answer depends on what an earlier check whose outcome is
    /// unknown did (a timeout: did it use the key, count a wrong PIN?) and
    /// is one the rules allow.
    Uncertain,
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
    /// The answer hangs on an earlier check whose outcome is unknown.
    #[serde(default)]
    pub uncertain: u64,
}

impl Verdicts {
    pub fn add(&mut self, o: &Verdicts) {
        self.true_grants += o.true_grants;
        self.true_denials += o.true_denials;
        self.false_accepts += o.false_accepts;
        self.false_rejects += o.false_rejects;
        self.reason_mismatches += o.reason_mismatches;
        self.ambiguous += o.ambiguous;
        self.uncertain += o.uncertain;
    }
    pub fn decisions(&self) -> u64 {
        self.true_grants
            + self.true_denials
            + self.false_accepts
            + self.false_rejects
            + self.ambiguous
            + self.uncertain
    }
}

/// How long after a device gave up on a check (timeout, transport error)
/// the engine may still decide it. A server reads a request it will
/// answer within its intake's bounded queue (4096 checks, seconds at any
/// load) or drops it; 30 s is far beyond that. Until then a keypad whose
/// wrong-PIN count that check may change stays uncertain.
pub const LATE_DECISION_S: i64 = 30;
/// Most lockout states kept for one keypad. They multiply only when a
/// wrong try's whole second is unknown (an attempt across a second's
/// edge) while earlier ones still count; past this the keypad is treated
/// as unknown until an answer pins its state down.
const MAX_LOCK_STATES: usize = 64;
/// Most whole seconds of one attempt looked at one by one: an answer
/// slower than this is judged at its ends and the seconds next to them.
const MAX_SPANNED_S: i64 = 600;

/// Uses of a credential (at a door, or in all) as the oracle knows them:
/// an attempt whose outcome is unknown may have used one, so the count
/// lies in `lo..=hi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Uses {
    lo: u32,
    hi: u32,
}

impl Uses {
    /// A grant: one more (a limited credential never passes its limit).
    fn granted(&mut self, limit: Option<u32>) {
        let cap = limit.unwrap_or(u32::MAX);
        self.lo = self.lo.saturating_add(1).min(cap);
        self.hi = self.hi.saturating_add(1).min(cap).max(self.lo);
    }

    /// An attempt that may have been granted.
    fn maybe_granted(&mut self, limit: Option<u32>) {
        let cap = limit.unwrap_or(u32::MAX);
        self.hi = self.hi.saturating_add(1).min(cap).max(self.lo);
    }
}

/// Which end of an uncertain use count an expectation assumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Count {
    Fewest,
    Most,
}

/// The whole seconds of a keypad's wrong tries that still count, oldest
/// first: at most [`MAX_WRONG_LIMIT`] (a policy counts no more), held
/// inline so that the states the oracle weighs per answer are copied
/// without allocating.
#[derive(Clone, Copy, Debug, Default)]
struct WrongTries {
    s: [i64; MAX_WRONG_LIMIT as usize],
    len: u8,
}

impl WrongTries {
    fn as_slice(&self) -> &[i64] {
        &self.s[..usize::from(self.len)]
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn iter(&self) -> std::slice::Iter<'_, i64> {
        self.as_slice().iter()
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds a try in second `t`, keeping the latest `n` (`n` at most
    /// [`MAX_WRONG_LIMIT`]).
    fn push_keeping(&mut self, t: i64, n: usize) {
        debug_assert!((1..=self.s.len()).contains(&n), "{n} tries kept");
        let len = self.len();
        if len >= n {
            let drop = len + 1 - n;
            self.s.copy_within(drop..len, 0);
            self.len -= drop as u8;
        }
        self.s[self.len()] = t;
        self.len += 1;
    }

    fn retain(&mut self, keep: impl Fn(i64) -> bool) {
        let mut kept = 0;
        for i in 0..self.len() {
            if keep(self.s[i]) {
                self.s[kept] = self.s[i];
                kept += 1;
            }
        }
        self.len = kept as u8;
    }
}

impl PartialEq for WrongTries {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for WrongTries {}

/// One state the keeper of a keypad's lockout may be in: the engine for a
/// device that asks it, the device for one that decides PINs itself. The
/// same rule as the engine's, written apart from it (see [`LockState::step`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LockState {
    /// Whole seconds of the wrong tries that still count (since the last
    /// grant or lockout, inside the window), oldest first.
    wrong_s: WrongTries,
    /// The lockout's end in whole seconds; 0: not locked out.
    until_s: i64,
}

impl LockState {
    fn locked(&self, s: i64) -> bool {
        s < self.until_s
    }

    /// The keeper's answer in second `s` to a PIN that the rules answer
    /// `unlocked` when the keypad is not locked out, and the state after:
    /// locked out -> `locked_out`, nothing counts; a wrong PIN counts, and
    /// the `max_wrong`-th within `window_s` locks for `lockout_s` from its
    /// second and clears the count; a grant clears it; other denials
    /// change nothing.
    fn step(&self, s: i64, unlocked: Expected, p: &LockoutPolicy) -> (Expected, LockState) {
        if self.locked(s) {
            return (Expected::Denied(DenyReason::LockedOut), *self);
        }
        let mut next = *self;
        match unlocked {
            Expected::Granted => next.wrong_s.clear(),
            Expected::Denied(DenyReason::WrongPin) => {
                // As the engine: a policy counts 1 to MAX_WRONG_LIMIT tries.
                let n = usize::from(p.max_wrong.clamp(1, MAX_WRONG_LIMIT));
                next.wrong_s.push_keeping(s, n);
                let since = s - i64::from(p.window_s);
                if next.wrong_s.len() == n && next.wrong_s.iter().all(|&t| t > since) {
                    next.until_s = s + i64::from(p.lockout_s);
                    next.wrong_s.clear();
                }
            }
            Expected::Denied(_) => {}
        }
        next.forget(s, p);
        (unlocked, next)
    }

    /// Drops what cannot matter from second `s` on (an ended lockout,
    /// tries out of the window), so states with the same future compare
    /// equal. A keypad's attempts come one after another, so no later one
    /// is decided before `s`.
    fn forget(&mut self, s: i64, p: &LockoutPolicy) {
        if self.until_s <= s {
            self.until_s = 0;
        }
        let since = s - i64::from(p.window_s);
        self.wrong_s.retain(|t| t > since);
    }

    /// The state after an answer the rules did not allow, following it.
    fn follow(&self, s: i64, actual: Expected, p: &LockoutPolicy) -> LockState {
        match actual {
            Expected::Denied(DenyReason::LockedOut) => *self,
            other => {
                let mut free = *self;
                free.until_s = 0;
                free.step(s, other, p).1
            }
        }
    }
}

/// What the oracle knows of one keypad's lockout.
#[derive(Clone, Debug)]
enum Keeper {
    /// The states it may be in: one, unless the whole second of a try
    /// that counted is unknown (several, each judged).
    Known(Vec<LockState>),
    /// Locked out or not, nobody knows, until an answer pins the state
    /// down after `settles_at`: a check whose outcome is unknown may have
    /// counted a wrong PIN or cleared the count (`after_error`; until that
    /// check can no longer be decided late), or the tries' unknown seconds
    /// left more states than are kept.
    Unknown {
        settles_at: Timestamp,
        after_error: bool,
    },
}

impl Default for Keeper {
    fn default() -> Self {
        Keeper::Known(vec![LockState::default()])
    }
}

#[derive(Clone, Debug, Default)]
struct KeypadModel {
    keeper: Keeper,
    /// Every state was locked out since the last lockout was counted in
    /// [`Oracle::lockouts`] (and none was free since).
    in_lockout: bool,
    /// The end of the last lockout counted, when it was known: a lockout
    /// seen again after an unknown spell is not counted twice.
    counted_until_s: i64,
}

/// One way the rules may answer an attempt.
struct Candidate {
    answer: Expected,
    /// Index into the attempt's instants.
    instant: usize,
    count: Count,
    /// Index into the keypad's known states, and the state after.
    state: Option<(usize, LockState)>,
}

/// Does the device of `a` keep a PIN lockout (the engine's or its own)?
fn keeps_lockout(a: &Attempt) -> bool {
    a.kind == TruthKind::Pin && a.keypad
}

/// The instants at which an attempt made in `sent..=done` may have been
/// decided: both ends, and either side of each whole second between them
/// (the lockout rule counts whole seconds; validity edges are instants).
/// Written into `v` (cleared first; the oracle keeps one buffer for
/// every answer).
fn instants(sent: Timestamp, done: Timestamp, v: &mut Vec<Timestamp>) {
    fn second_edge(v: &mut Vec<Timestamp>, s: i64) {
        if let Ok(edge) = Timestamp::from_second(s) {
            if let Ok(before) = edge.checked_sub(jiff::SignedDuration::from_nanos(1)) {
                v.push(before);
            }
            v.push(edge);
        }
    }
    v.clear();
    v.push(sent);
    let (first, last) = (sent.as_second() + 1, done.as_second());
    if last - first < MAX_SPANNED_S {
        for s in first..=last {
            second_edge(v, s);
        }
    } else {
        for s in [first, first + 1, last - 1, last] {
            second_edge(v, s);
        }
    }
    v.push(done);
    v.retain(|t| sent <= *t && *t <= done);
    v.dedup();
}

/// Keeps the first of equal states, in order, in place.
fn dedup_keeping_first(states: &mut Vec<LockState>) {
    let mut kept = 0;
    for i in 0..states.len() {
        if !states[..kept].contains(&states[i]) {
            states.swap(kept, i);
            kept += 1;
        }
    }
    states.truncate(kept);
}

/// The truth table and the oracle's model of run-time state.
pub struct Oracle {
    truths: Vec<Truth>,
    /// Door -> PIN text -> truth (per door, so that a typed PIN is
    /// looked up by `&str`, allocating nothing).
    pins: FxHashMap<DoorId, FxHashMap<Box<str>, TruthId>>,
    /// Lockout policy per door's site.
    lockout: FxHashMap<DoorId, LockoutPolicy>,
    /// 0-based site index per door (for examples).
    sites: FxHashMap<DoorId, u32>,
    keypads: FxHashMap<DeviceId, KeypadModel>,
    uses_total: FxHashMap<TruthId, Uses>,
    uses_door: FxHashMap<(TruthId, DoorId), Uses>,
    /// How far the deciding engine's clock may be from the run's: an
    /// attempt may have been decided that much before it was sent or after
    /// it was answered, by the run's clock.
    clock_skew: jiff::SignedDuration,
    /// Does the engine report lockout ends (`locked_until`)? Only then
    /// does an answer without one say "not locked out": `None` until an
    /// answer tells (one with an end: yes; `locked_out` without: no).
    ends_reported: Option<bool>,
    /// Uses picked but not yet judged (so two arrivals do not pick one key).
    reserved: FxHashMap<(TruthId, DoorId), u32>,
    extra_qr: FxHashMap<DoorId, Vec<TruthId>>,
    /// Fallback pool codes per door (see [`Oracle::pool_pin`]).
    pool_pins: FxHashMap<DoorId, FxHashSet<Box<str>>>,
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
    /// Buffers [`Oracle::judge`] reuses for every answer (the instants
    /// looked at, the answers the rules allow), so judging allocates
    /// nothing once they have grown.
    instants_buf: Vec<Timestamp>,
    candidates_buf: Vec<Candidate>,
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
            ends_reported: None,
            clock_skew: jiff::SignedDuration::ZERO,
            reserved: FxHashMap::default(),
            extra_qr: FxHashMap::default(),
            pool_pins: FxHashMap::default(),
            credentials: FxHashMap::default(),
            frozen: FxHashSet::default(),
            retired: FxHashMap::default(),
            extra_pins: FxHashMap::default(),
            retired_pins: FxHashMap::default(),
            retired_attempts: 0,
            instants_buf: Vec::new(),
            candidates_buf: Vec::new(),
            verdicts: Verdicts::default(),
            lockouts: 0,
            denials: BTreeMap::new(),
            false_accept_examples: Vec::new(),
            false_reject_examples: Vec::new(),
            reason_mismatch_examples: Vec::new(),
        }
    }

    /// How far the deciding engine's clock may be from the run's; zero
    /// unless set (an engine in-process decides by the run's clock).
    pub fn set_clock_skew(&mut self, skew: jiff::SignedDuration) {
        self.clock_skew = skew.abs();
    }

    /// The span in which the engine may have decided an attempt made in
    /// `sent..=done` by the run's clock.
    fn decided_within(&self, sent: Timestamp, done: Timestamp) -> (Timestamp, Timestamp) {
        let (sent, done) = (sent.min(done), sent.max(done));
        (
            sent.checked_sub(self.clock_skew).unwrap_or(sent),
            done.checked_add(self.clock_skew).unwrap_or(done),
        )
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
                let text: Box<str> = t.text.as_str().into();
                self.pins.entry(*d).or_default().insert(text, id);
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
        self.pin_at(door, text).is_some()
            || self.pool_pins.get(&door).is_some_and(|p| p.contains(text))
    }

    /// An unassigned fallback code pre-loaded on `door`'s lock: not a
    /// credential anyone holds, but not a wrong PIN either.
    pub fn pool_pin(&mut self, door: DoorId, text: String) {
        self.pool_pins
            .entry(door)
            .or_default()
            .insert(text.into_boxed_str());
    }

    /// The truth entry of a PIN typed at `door`.
    pub fn pin_at(&self, door: DoorId, text: &str) -> Option<TruthId> {
        self.pins.get(&door).and_then(|p| p.get(text)).copied()
    }

    /// The uses of `id` at `door` and in all.
    fn uses(&self, id: TruthId, door: DoorId) -> (Uses, Uses) {
        let d = self.uses_door.get(&(id, door)).copied().unwrap_or_default();
        let all = self.uses_total.get(&id).copied().unwrap_or_default();
        (d, all)
    }

    /// Uses certainly left at `door` for `id` (an attempt whose outcome
    /// is unknown counts as a use), counting reserved ones; `None`:
    /// unlimited.
    pub fn uses_left(&self, id: TruthId, door: DoorId) -> Option<u32> {
        let t = &self.truths[id];
        let reserved = self.reserved.get(&(id, door)).copied().unwrap_or(0);
        let (d, all) = self.uses(id, door);
        let door_left = t.per_door_uses.map(|n| n.saturating_sub(d.hi + reserved));
        let total_left = t.total_uses.map(|n| n.saturating_sub(all.hi + reserved));
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

    /// Has `id` certainly used up its grants at `door` (judged uses only)?
    pub fn used_up(&self, id: TruthId, door: DoorId) -> bool {
        let t = &self.truths[id];
        let (d, all) = self.uses(id, door);
        t.per_door_uses.is_some_and(|n| d.lo >= n) || t.total_uses.is_some_and(|n| all.lo >= n)
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
        // The keypad's history as the oracle's first possible state has it
        // (none while its state is unknown after an unanswered check).
        let keypad = keeps_lockout(a)
            .then(|| self.keypads.get(&a.device))
            .flatten()
            .and_then(|k| match &k.keeper {
                Keeper::Known(states) => states.first(),
                Keeper::Unknown { .. } => None,
            });
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
            locked_until: keypad.filter(|k| k.until_s != 0).map(|k| at(k.until_s)),
        }
    }

    fn policy(&self, door: DoorId) -> LockoutPolicy {
        self.lockout.get(&door).copied().unwrap_or_default()
    }

    /// What the rules say for `a` at `now`, without changing state (the
    /// first of the keypad's possible lockout states; the fewest uses).
    pub fn expect(&self, a: &Attempt, now: Timestamp) -> Expected {
        let unlocked = self.expect_unlocked(a, now, Count::Fewest);
        if !keeps_lockout(a) {
            return unlocked;
        }
        match self.keypads.get(&a.device).map(|k| &k.keeper) {
            Some(Keeper::Known(states)) => states.first().map_or(unlocked, |st| {
                st.step(now.as_second(), unlocked, &self.policy(a.door)).0
            }),
            _ => unlocked,
        }
    }

    /// What the rules say for `a` at `now` if its keypad is not locked
    /// out, with the fewest or the most uses the credential may have had.
    fn expect_unlocked(&self, a: &Attempt, now: Timestamp, count: Count) -> Expected {
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
        let (d, all) = self.uses(id, a.door);
        let (used_door, used_total) = match count {
            Count::Fewest => (d.lo, all.lo),
            Count::Most => (d.hi, all.hi),
        };
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

    /// Are the credential's use counts known exactly?
    fn uses_exact(&self, a: &Attempt) -> bool {
        a.truth.is_none_or(|id| {
            let (d, all) = self.uses(id, a.door);
            d.lo == d.hi && all.lo == all.hi
        })
    }

    /// Every answer the rules allow for `a` decided in `at`, with the
    /// fewest and (when they differ) the most uses, in every lockout state
    /// the keypad may be in.
    /// Written into `out` (cleared first).
    fn candidates(&self, a: &Attempt, at: &[Timestamp], out: &mut Vec<Candidate>) {
        let counts: &[Count] = if self.uses_exact(a) {
            &[Count::Fewest]
        } else {
            &[Count::Fewest, Count::Most]
        };
        // A keypad not seen yet is in the rule's first state.
        let fresh = [LockState::default()];
        let keeper = keeps_lockout(a).then(|| match self.keypads.get(&a.device) {
            None => Some(&fresh[..]),
            Some(KeypadModel {
                keeper: Keeper::Known(states),
                ..
            }) => Some(states.as_slice()),
            Some(_) => None,
        });
        let policy = self.policy(a.door);
        out.clear();
        for (i, now) in at.iter().enumerate() {
            for &count in counts {
                let unlocked = self.expect_unlocked(a, *now, count);
                match keeper {
                    None => out.push(Candidate {
                        answer: unlocked,
                        instant: i,
                        count,
                        state: None,
                    }),
                    Some(Some(states)) => {
                        for (k, st) in states.iter().enumerate() {
                            let (answer, next) = st.step(now.as_second(), unlocked, &policy);
                            out.push(Candidate {
                                answer,
                                instant: i,
                                count,
                                state: Some((k, next)),
                            });
                        }
                    }
                    // Unknown: locked out or not.
                    Some(None) => {
                        for answer in [unlocked, Expected::Denied(DenyReason::LockedOut)] {
                            out.push(Candidate {
                                answer,
                                instant: i,
                                count,
                                state: None,
                            });
                        }
                    }
                }
            }
        }
    }

    /// The report of an answer, as far as the engine reports ends.
    fn lock_report(&mut self, actual: Expected, lock: LockReport) -> LockReport {
        match lock {
            LockReport::NotLocked if actual == Expected::Denied(DenyReason::LockedOut) => {
                self.ends_reported = Some(false);
            }
            LockReport::Until(_) if self.ends_reported.is_none() => {
                self.ends_reported = Some(true);
            }
            _ => {}
        }
        match lock {
            LockReport::NotLocked if self.ends_reported != Some(true) => LockReport::Unreported,
            other => other,
        }
    }

    /// Judges the answer to attempt `a`, which started at `sent` and was
    /// answered at `done`, and updates the oracle's state from it.
    ///
    /// The answer is right when the rules give it at some instant in
    /// `sent..=done` (the decider's clock read lies there), in some
    /// lockout state the keypad may be in, with some use count the
    /// credential may have: `true` when that is the only answer the rules
    /// allow, else `ambiguous` (it changed inside the attempt) or
    /// `uncertain` (it hangs on an earlier check whose outcome is
    /// unknown). State follows the answer where the rules allow it (and
    /// the lockout end the engine reports), so one wrong answer is counted
    /// once and does not set the oracle apart from the engine.
    pub fn judge(
        &mut self,
        a: &Attempt,
        answer: impl Into<Answer>,
        sent: Timestamp,
        done: Timestamp,
    ) -> Class {
        let answer = answer.into();
        let actual = answer.decision;
        let (sent, done) = self.decided_within(sent, done);
        if a.truth.is_some_and(|id| self.retired.contains_key(&id)) {
            self.retired_attempts += 1;
        }
        let report = self.lock_report(actual, answer.lock);
        let mut at = std::mem::take(&mut self.instants_buf);
        instants(sent, done, &mut at);
        let mut cands = std::mem::take(&mut self.candidates_buf);
        self.candidates(a, &at, &mut cands);
        debug_assert!(!cands.is_empty(), "the rules always give an answer");
        let allowed = cands.iter().any(|c| c.answer == actual);
        let after_error = keeps_lockout(a)
            && matches!(
                self.keypads.get(&a.device).map(|k| &k.keeper),
                Some(Keeper::Unknown {
                    after_error: true,
                    ..
                })
            );
        let class = if allowed {
            let first = cands[0].answer;
            if cands.iter().all(|c| c.answer == first) {
                if actual.granted() {
                    Class::TrueGrant
                } else {
                    Class::TrueDenial
                }
            } else if after_error || self.depends_on_count(&cands) {
                Class::Uncertain
            } else {
                Class::Ambiguous
            }
        } else {
            // Compared with what the rules give at the end (a denial the
            // rules give, when the answer is one: a reason mismatch).
            let at_end = |c: &&Candidate| c.instant + 1 == at.len();
            let expected = if actual.granted() {
                cands.iter().find(at_end)
            } else {
                cands
                    .iter()
                    .filter(|c| !c.answer.granted())
                    .find(at_end)
                    .or_else(|| cands.iter().find(|c| !c.answer.granted()))
                    .or_else(|| cands.iter().find(at_end))
            }
            .map_or(cands[0].answer, |c| c.answer);
            self.count_wrong(a, expected, actual, sent, done)
        };
        match class {
            Class::TrueGrant => self.verdicts.true_grants += 1,
            Class::TrueDenial => {
                self.verdicts.true_denials += 1;
                if let Expected::Denied(r) = actual {
                    self.count_denial(r);
                }
            }
            Class::Ambiguous => self.verdicts.ambiguous += 1,
            Class::Uncertain => self.verdicts.uncertain += 1,
            // Counted by `count_wrong`.
            Class::ReasonMismatch | Class::FalseAccept | Class::FalseReject => {}
        }
        self.follow_uses(a, actual);
        if keeps_lockout(a) {
            self.follow_lockout(a, actual, report, &mut cands, allowed, sent, done);
        }
        cands.clear();
        self.candidates_buf = cands;
        self.instants_buf = at;
        class
    }

    /// One more true denial for `reason` (its key is made once).
    fn count_denial(&mut self, reason: DenyReason) {
        match self.denials.get_mut(reason.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.denials.insert(reason.as_str().to_string(), 1);
            }
        }
    }

    /// Do the allowed answers differ between the fewest and the most uses
    /// the credential may have had (at one instant, in one state)?
    fn depends_on_count(&self, cands: &[Candidate]) -> bool {
        cands.iter().any(|m| {
            m.count == Count::Most
                && cands.iter().any(|f| {
                    f.count == Count::Fewest
                        && f.instant == m.instant
                        && f.state.as_ref().map(|s| s.0) == m.state.as_ref().map(|s| s.0)
                        && f.answer != m.answer
                })
        })
    }

    /// Counts and records a disagreement.
    fn count_wrong(
        &mut self,
        a: &Attempt,
        expected: Expected,
        actual: Expected,
        sent: Timestamp,
        done: Timestamp,
    ) -> Class {
        let kept = match (expected, actual) {
            (Expected::Denied(_), Expected::Denied(_)) => self.reason_mismatch_examples.len(),
            (Expected::Denied(_), Expected::Granted) => self.false_accept_examples.len(),
            (Expected::Granted, _) => self.false_reject_examples.len(),
        };
        // Described before the answer changes the keypad's history.
        let example = (kept < MAX_EXAMPLES)
            .then(|| self.example(a, expected.label(), actual.label(), sent, done, ""));
        let (class, why, list) = match (expected, actual) {
            (Expected::Denied(e), Expected::Denied(_)) => {
                self.verdicts.true_denials += 1;
                self.verdicts.reason_mismatches += 1;
                self.count_denial(e);
                (
                    Class::ReasonMismatch,
                    "denied for another reason than the rules give",
                    &mut self.reason_mismatch_examples,
                )
            }
            (Expected::Denied(_), Expected::Granted) => {
                self.verdicts.false_accepts += 1;
                (
                    Class::FalseAccept,
                    "the engine granted what the truth table denies",
                    &mut self.false_accept_examples,
                )
            }
            (Expected::Granted, _) => {
                self.verdicts.false_rejects += 1;
                (
                    Class::FalseReject,
                    "the engine denied a credential the truth table grants",
                    &mut self.false_reject_examples,
                )
            }
        };
        if let Some(mut ex) = example {
            ex.note = why.to_string();
            list.push(ex);
        }
        class
    }

    /// Use counts after an answer: a grant uses one; a "used up" denial
    /// says the count is at its limit (which limit, when only one can be).
    fn follow_uses(&mut self, a: &Attempt, actual: Expected) {
        let Some(id) = a.truth else { return };
        let (per_door, total) = (self.truths[id].per_door_uses, self.truths[id].total_uses);
        match actual {
            Expected::Granted => {
                self.uses_door
                    .entry((id, a.door))
                    .or_default()
                    .granted(per_door);
                self.uses_total.entry(id).or_default().granted(total);
            }
            Expected::Denied(DenyReason::Replayed | DenyReason::UsesExhausted) => {
                let (d, all) = self.uses(id, a.door);
                let door_can = per_door.filter(|n| d.hi >= *n);
                let total_can = total.filter(|n| all.hi >= *n);
                match (door_can, total_can) {
                    (Some(n), None) => {
                        self.uses_door.insert((id, a.door), Uses { lo: n, hi: n });
                    }
                    (None, Some(n)) => {
                        self.uses_total.insert(id, Uses { lo: n, hi: n });
                    }
                    // Either limit may be the one (or, against the rules,
                    // neither): the counts stay as they are.
                    _ => {}
                }
            }
            Expected::Denied(_) => {}
        }
    }

    /// The keypad's lockout after an answer: the states that give it (and
    /// the end the engine reported), or the answer followed when the rules
    /// did not allow it.
    #[allow(clippy::too_many_arguments)]
    fn follow_lockout(
        &mut self,
        a: &Attempt,
        actual: Expected,
        report: LockReport,
        cands: &mut Vec<Candidate>,
        allowed: bool,
        sent: Timestamp,
        done: Timestamp,
    ) {
        let policy = self.policy(a.door);
        let model = self.keypads.entry(a.device).or_default();
        let reported = match report {
            LockReport::Until(t) => Some(t.as_second()),
            _ => None,
        };
        let pinned = |until_s: i64| {
            Keeper::Known(vec![LockState {
                wrong_s: WrongTries::default(),
                until_s,
            }])
        };
        // The keypad's state vector is refilled in place (no allocation).
        let keeper = std::mem::replace(&mut model.keeper, Keeper::Known(Vec::new()));
        model.keeper = match keeper {
            Keeper::Unknown {
                settles_at,
                after_error,
            } => {
                // Pinned down only when no late decision can land after.
                match (reported, actual) {
                    (Some(until_s), _) if sent >= settles_at => pinned(until_s),
                    (None, Expected::Granted) if sent >= settles_at => pinned(0),
                    _ => Keeper::Unknown {
                        settles_at,
                        after_error,
                    },
                }
            }
            Keeper::Known(mut states) => {
                if allowed {
                    states.clear();
                    let kept = cands.drain(..).filter(|c| c.answer == actual);
                    states.extend(kept.filter_map(|c| c.state.map(|s| s.1)));
                } else {
                    for st in &mut states {
                        *st = st.follow(done.as_second(), actual, &policy);
                    }
                }
                // What the engine reported decides between the states the
                // rule allows. An end it does not allow is not followed:
                // the refusals it brings show as false rejects.
                let fits = |st: &LockState| match report {
                    LockReport::Until(t) => st.until_s == t.as_second(),
                    LockReport::NotLocked => st.until_s == 0,
                    LockReport::Unreported => true,
                };
                if states.iter().any(fits) {
                    states.retain(fits);
                }
                dedup_keeping_first(&mut states);
                if states.is_empty() || states.len() > MAX_LOCK_STATES {
                    Keeper::Unknown {
                        settles_at: done,
                        after_error: false,
                    }
                } else {
                    Keeper::Known(states)
                }
            }
        };
        // A lockout counts once every state agrees it started (their ends
        // may differ by the locking try's unknown second).
        match &model.keeper {
            Keeper::Known(states) if states.iter().all(|s| s.until_s != 0) => {
                let end = states[0].until_s;
                let same_end = states.iter().all(|s| s.until_s == end);
                let seen = same_end && end == model.counted_until_s;
                if !model.in_lockout && !seen {
                    self.lockouts += 1;
                }
                model.in_lockout = true;
                if same_end {
                    model.counted_until_s = end;
                }
            }
            Keeper::Known(states) if states.iter().all(|s| s.until_s == 0) => {
                model.in_lockout = false;
            }
            Keeper::Known(_) => {}
            Keeper::Unknown { .. } => model.in_lockout = false,
        }
    }

    /// A check that ended without an answer although the engine may have
    /// decided it (a timeout, a transport error, an error answer): it may
    /// have used the credential and counted a wrong PIN or cleared the
    /// count. The oracle keeps both possible until later answers tell.
    ///
    /// It may also have been decided late, up to [`LATE_DECISION_S`] after
    /// `done`, in another state than the attempt met (a window opened, the
    /// code changed away and is a wrong PIN now): so whatever the rules say
    /// at the attempt, a use of the credential and a change of the keypad's
    /// count stay possible. That widens only what is uncertain, never what
    /// is judged false.
    pub fn judge_unknown(&mut self, a: &Attempt, sent: Timestamp, done: Timestamp) {
        let (_, done) = self.decided_within(sent, done);
        if let Some(id) = a.truth {
            let (per_door, total) = (self.truths[id].per_door_uses, self.truths[id].total_uses);
            self.uses_door
                .entry((id, a.door))
                .or_default()
                .maybe_granted(per_door);
            self.uses_total.entry(id).or_default().maybe_granted(total);
        }
        if keeps_lockout(a) {
            let late = done
                .checked_add(jiff::SignedDuration::from_secs(LATE_DECISION_S))
                .unwrap_or(done);
            let model = self.keypads.entry(a.device).or_default();
            let settles_at = match model.keeper {
                Keeper::Unknown { settles_at, .. } => settles_at.max(late),
                Keeper::Known(_) => late,
            };
            model.keeper = Keeper::Unknown {
                settles_at,
                after_error: true,
            };
            model.in_lockout = false;
        }
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
    fn wrong_tries_keep_the_latest_n_oldest_first_and_compare_by_what_they_hold() {
        let mut t = WrongTries::default();
        for s in 1..=5 {
            t.push_keeping(s, 3);
        }
        assert_eq!(t.as_slice(), &[3, 4, 5]);
        // The full policy: 16 kept, the 17th drops the oldest.
        let mut full = WrongTries::default();
        for s in 0..17 {
            full.push_keeping(s, usize::from(MAX_WRONG_LIMIT));
        }
        assert_eq!(full.as_slice(), (1..17).collect::<Vec<i64>>().as_slice());
        // Slots past the length are stale: equality ignores them.
        let mut a = WrongTries::default();
        a.push_keeping(9, 3);
        a.push_keeping(10, 3);
        a.retain(|s| s > 9);
        let mut b = WrongTries::default();
        b.push_keeping(10, 3);
        assert_eq!(a, b);
        assert_ne!(a, WrongTries::default());
    }

    #[test]
    fn equal_lock_states_are_kept_once_in_their_first_order() {
        let st = |until_s| LockState {
            wrong_s: WrongTries::default(),
            until_s,
        };
        let mut v = vec![st(5), st(0), st(5), st(7), st(0), st(7)];
        dedup_keeping_first(&mut v);
        assert_eq!(v, vec![st(5), st(0), st(7)]);
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

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// An oracle with one PIN ("5826") at door 1, whose site locks a
    /// keypad for 30 s after 2 wrong tries within 60 s.
    fn keypad_oracle() -> (Oracle, TruthId) {
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
        (o, id)
    }

    fn pin_attempt(truth: Option<TruthId>) -> Attempt {
        Attempt {
            device: DeviceId(4),
            door: DoorId(1),
            action: if truth.is_some() {
                "pin_valid"
            } else {
                "pin_wrong"
            },
            kind: TruthKind::Pin,
            truth,
            keypad: true,
        }
    }

    const WRONG: Expected = Expected::Denied(DenyReason::WrongPin);
    const LOCKED: Expected = Expected::Denied(DenyReason::LockedOut);

    #[test]
    fn a_locking_try_s_unknown_second_keeps_every_end_the_rule_allows() {
        let (mut o, id) = keypad_oracle();
        o.judge(&pin_attempt(None), WRONG, t(100), t(100));
        // The locking try was sent at 100 s and answered at 102 s, by a
        // device that does not say when its lockout ends: it ends in
        // 130..=132.
        let c = o.judge(&pin_attempt(None), WRONG, t(100), t(102));
        assert_eq!(c, Class::TrueDenial);
        assert_eq!(o.lockouts, 1, "every possible state is locked out");
        // Certainly locked before 130.
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), LOCKED, t(120), t(120)),
            Class::TrueDenial
        );
        // At 131 either answer is right; the grant rules out the end at
        // 132, so the next good PIN is a true grant.
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), Expected::Granted, t(131), t(131)),
            Class::Ambiguous
        );
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), Expected::Granted, t(131), t(131)),
            Class::TrueGrant
        );
        let v = &o.verdicts;
        assert_eq!((v.false_accepts, v.false_rejects, v.ambiguous), (0, 0, 1));
        assert_eq!(o.denials.get("locked_out"), Some(&1));
    }

    #[test]
    fn the_end_the_engine_reports_settles_the_lockout() {
        let (mut o, id) = keypad_oracle();
        o.judge(&pin_attempt(None), WRONG, t(100), t(100));
        let locking = Answer {
            decision: WRONG,
            lock: LockReport::Until(t(131)),
        };
        assert_eq!(
            o.judge(&pin_attempt(None), locking, t(100), t(102)),
            Class::TrueDenial
        );
        assert_eq!(o.lockouts, 1);
        let half = t(130)
            .checked_add(jiff::SignedDuration::from_millis(500))
            .unwrap();
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), LOCKED, half, half),
            Class::TrueDenial
        );
        // Exactly at the reported end: open, and nothing is ambiguous.
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), Expected::Granted, t(131), t(131)),
            Class::TrueGrant
        );
        // A keypad that refuses at the end itself is a false reject.
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), LOCKED, t(131), t(131)),
            Class::FalseReject
        );
        assert_eq!(o.false_reject_examples[0].actual, "denied:locked_out");
        // An end the rule cannot give (the try's second plus 30 s) is not
        // followed: the refusals past the rule's end are false rejects.
        o.judge(&pin_attempt(None), WRONG, t(200), t(200));
        let odd = Answer {
            decision: WRONG,
            lock: LockReport::Until(t(260)),
        };
        o.judge(&pin_attempt(None), odd, t(201), t(201));
        assert_eq!(o.lockouts, 2);
        assert_eq!(o.expect(&pin_attempt(Some(id)), t(230)), LOCKED);
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), LOCKED, t(240), t(240)),
            Class::FalseReject
        );
    }

    #[test]
    fn an_engine_on_another_clock_may_decide_a_little_outside_the_attempt() {
        // 50 ms before the end by the run's clock, granted by an engine
        // whose clock is 100 ms ahead.
        let just_before = t(131)
            .checked_sub(jiff::SignedDuration::from_millis(50))
            .unwrap();
        let judge = |skew_ms: i64| {
            let (mut o, id) = keypad_oracle();
            o.set_clock_skew(jiff::SignedDuration::from_millis(skew_ms));
            o.judge(&pin_attempt(None), WRONG, t(100), t(100));
            let locking = Answer {
                decision: WRONG,
                lock: LockReport::Until(t(131)),
            };
            o.judge(&pin_attempt(None), locking, t(101), t(101));
            let granted = Expected::Granted;
            o.judge(&pin_attempt(Some(id)), granted, just_before, just_before)
        };
        assert_eq!(judge(0), Class::FalseAccept);
        assert_eq!(judge(100), Class::Ambiguous);
    }

    #[test]
    fn too_many_possible_states_make_the_lockout_unknown_but_not_uncertain() {
        let (mut o, id) = keypad_oracle();
        o.set_lockout(
            DoorId(1),
            LockoutPolicy {
                max_wrong: 16,
                window_s: 600,
                lockout_s: 30,
            },
        );
        // Seven wrong tries, each across two second edges: 3^7 states.
        for k in 0..7 {
            let sent = t(100 + 10 * k)
                .checked_add(jiff::SignedDuration::from_millis(500))
                .unwrap();
            let done = sent
                .checked_add(jiff::SignedDuration::from_secs(2))
                .unwrap();
            let c = o.judge(&pin_attempt(None), WRONG, sent, done);
            assert!(matches!(c, Class::TrueDenial | Class::Ambiguous), "{c:?}");
        }
        // Locked out or not is unknown from timing alone: a time edge.
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), Expected::Granted, t(200), t(200)),
            Class::Ambiguous
        );
        // The grant pinned the state down.
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), Expected::Granted, t(201), t(201)),
            Class::TrueGrant
        );
        assert_eq!(o.verdicts.uncertain, 0);
    }

    #[test]
    fn an_engine_that_does_not_report_ends_is_not_taken_for_unlocked() {
        let (mut o, id) = keypad_oracle();
        o.judge(&pin_attempt(None), WRONG, t(100), t(100));
        // An older server: no `locked_until`, not even with `locked_out`.
        let bare = |decision| Answer {
            decision,
            lock: LockReport::NotLocked,
        };
        o.judge(&pin_attempt(None), bare(WRONG), t(100), t(102));
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), bare(LOCKED), t(110), t(110)),
            Class::TrueDenial
        );
        assert_eq!(
            o.judge(
                &pin_attempt(Some(id)),
                bare(Expected::Granted),
                t(131),
                t(131)
            ),
            Class::Ambiguous
        );
        assert_eq!(o.verdicts.false_rejects + o.verdicts.false_accepts, 0);
    }

    #[test]
    fn a_wrong_pin_whose_outcome_is_unknown_leaves_the_lockout_uncertain_until_it_settles() {
        let (mut o, id) = keypad_oracle();
        o.judge(&pin_attempt(None), WRONG, t(100), t(100));
        // Timed out: the engine may or may not have counted it (and
        // locked the keypad until 131).
        o.judge_unknown(&pin_attempt(None), t(101), t(106));
        let locked_131 = Answer {
            decision: LOCKED,
            lock: LockReport::Until(t(131)),
        };
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), locked_131, t(110), t(110)),
            Class::Uncertain
        );
        // Until the late decision can no longer land (106 + 30 s), even a
        // grant does not settle it.
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), Expected::Granted, t(131), t(131)),
            Class::Uncertain
        );
        assert_eq!(
            o.judge(&pin_attempt(None), WRONG, t(132), t(132)),
            Class::Uncertain
        );
        // After it, a grant pins the state: nothing counts any more.
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), Expected::Granted, t(140), t(140)),
            Class::Uncertain
        );
        assert_eq!(
            o.judge(&pin_attempt(None), WRONG, t(141), t(141)),
            Class::TrueDenial
        );
        assert_eq!(
            o.judge(&pin_attempt(Some(id)), Expected::Granted, t(142), t(142)),
            Class::TrueGrant
        );
        // A wrong answer is still wrong: nothing makes a grant of a wrong
        // PIN right.
        o.judge_unknown(&pin_attempt(None), t(150), t(151));
        assert_eq!(
            o.judge(&pin_attempt(None), Expected::Granted, t(152), t(152)),
            Class::FalseAccept
        );
        let v = &o.verdicts;
        assert_eq!((v.uncertain, v.false_rejects, v.false_accepts), (4, 0, 1));
    }

    #[test]
    fn a_one_time_key_whose_check_timed_out_is_uncertain_until_an_answer_tells() {
        let mut o = Oracle::new();
        let door = DoorId(3);
        let key = |o: &mut Oracle, text: &str| {
            o.add(Truth {
                kind: TruthKind::Qr,
                text: text.into(),
                doors: vec![door],
                validity: Validity::Always,
                per_door_uses: Some(1),
                total_uses: None,
                label: "visitor",
            })
        };
        let (used, unused) = (key(&mut o, "a"), key(&mut o, "b"));
        let a = |truth| Attempt {
            device: DeviceId(9),
            door,
            action: "qr_valid",
            kind: TruthKind::Qr,
            truth: Some(truth),
            keypad: false,
        };
        let now = t(5_000);
        let replayed = Expected::Denied(DenyReason::Replayed);
        for id in [used, unused] {
            o.judge_unknown(&a(id), now, now);
            // Neither certainly left (not picked as valid) nor certainly
            // used up (not picked as replayed).
            assert_eq!(o.uses_left(id, door), Some(0));
            assert!(!o.used_up(id, door));
        }
        // The engine had used it: "replayed" tells, and is no false reject.
        assert_eq!(o.judge(&a(used), replayed, now, now), Class::Uncertain);
        assert!(o.used_up(used, door));
        assert_eq!(o.judge(&a(used), replayed, now, now), Class::TrueDenial);
        // The engine had not: the grant tells; the key is used now.
        assert_eq!(
            o.judge(&a(unused), Expected::Granted, now, now),
            Class::Uncertain
        );
        assert_eq!(o.judge(&a(unused), replayed, now, now), Class::TrueDenial);
        assert_eq!(
            o.judge(&a(unused), Expected::Granted, now, now),
            Class::FalseAccept
        );
        let v = &o.verdicts;
        assert_eq!((v.uncertain, v.false_rejects, v.false_accepts), (2, 0, 1));
    }

    #[test]
    fn an_engine_answer_reads_as_the_device_reads_it() {
        use reference_server::protocol::AuthResponse;
        let d = reference_server::domain::Decision::Denied {
            reason: DenyReason::LockedOut,
            locked_until: Some(t(131)),
        };
        let a = Answer::from_response(&AuthResponse::from_decision(1, &d));
        assert_eq!(
            a,
            Some(Answer {
                decision: LOCKED,
                lock: LockReport::Until(t(131)),
            })
        );
        assert_eq!(Answer::from_response(&AuthResponse::error(1, "busy")), None);
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
