//! Decisions compared with the oracle: counts per class and a bounded set of
//! examples of every mismatch, so a report shows *which* check went wrong.

use serde::{Deserialize, Serialize};

use super::{Outcome, Verdict};

/// At most this many examples are kept per mismatch class (false accepts,
/// false rejects, no answer); a run with a million mismatches still yields a
/// small report.
pub const MAX_EXAMPLES: usize = 20;

/// How one check compares with the oracle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionClass {
    /// Expected granted, granted.
    TrueGrant,
    /// Expected denied, denied.
    TrueDenial,
    /// Expected denied, granted: a security failure.
    FalseAccept,
    /// Expected granted, denied: an availability failure.
    FalseReject,
    /// No answer at all (error or timeout): neither right nor wrong.
    NoAnswer,
    /// The expectation changed while the check ran (a schedule edge, a
    /// lockout ending) and the answer is one it took: not counted as false.
    Ambiguous,
    /// The expectation hangs on an earlier check whose outcome is unknown
    /// (a timeout: did it use the key, count a wrong PIN?) and the answer
    /// is one the rules allow: not counted as false.
    Uncertain,
}

/// One decision worth a look (a mismatch with the oracle, or a check
/// without an answer), with what it takes to find it again: when and
/// where, what was presented, both decisions in the wire's words, and for
/// PINs what the keypad had seen. Built only when it will be kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DecisionExample {
    /// Simulated time the check started (RFC 3339).
    pub at: String,
    /// Simulated time of its answer, or of its error.
    pub answered_at: String,
    /// 0-based site index (the engine's "Site N").
    pub site: Option<u32>,
    /// The engine's door id.
    pub door: u32,
    /// The engine's id of the device the credential was presented at.
    pub device: u32,
    /// The engine's id of the credential presented; `None` when it is no
    /// credential (a wrong PIN, an unknown card).
    pub credential: Option<u32>,
    /// `pin`, `qr`, `card` or `ble`.
    pub credential_kind: String,
    /// What the simulated person did (`pin_valid`, `qr_replayed`, ...).
    pub action: String,
    /// What the rules say: `granted` or `denied:<reason>`, with the
    /// reason as the wire names it (`denied:locked_out`).
    pub expected: String,
    /// What the system answered: `granted`, `denied:<reason>`, or
    /// `error:<what>` for no answer.
    pub actual: String,
    /// Why this example was kept.
    pub note: String,
    /// PINs: the keypad's wrong PINs since its last success, oldest
    /// first (simulated times), as the oracle counted them before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrong_pins_at: Vec<String>,
    /// PINs: the end of the keypad's lockout in the oracle's model, when
    /// one was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
}

impl std::fmt::Display for DecisionExample {
    /// One line: when, where, what, expected vs actual, and the keypad's
    /// history for PINs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ", self.at)?;
        if let Some(site) = self.site {
            write!(f, "site {site} ")?;
        }
        write!(
            f,
            "door {} device {} {} {}",
            self.door, self.device, self.credential_kind, self.action
        )?;
        if let Some(c) = self.credential {
            write!(f, " credential {c}")?;
        }
        write!(f, ": expected {}, got {}", self.expected, self.actual)?;
        if !self.wrong_pins_at.is_empty() {
            write!(f, "; wrong PINs at {}", self.wrong_pins_at.join(", "))?;
        }
        if let Some(t) = &self.locked_until {
            write!(f, "; locked until {t}")?;
        }
        Ok(())
    }
}

/// Totals per class.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct DecisionCounts {
    pub true_grants: u64,
    pub true_denials: u64,
    pub false_accepts: u64,
    pub false_rejects: u64,
    pub no_answer: u64,
    /// See [`DecisionClass::Ambiguous`].
    #[serde(default)]
    pub ambiguous: u64,
    /// See [`DecisionClass::Uncertain`].
    #[serde(default)]
    pub uncertain: u64,
}

impl DecisionCounts {
    /// Every check the oracle judged, answered or not.
    pub fn total(&self) -> u64 {
        self.true_grants
            + self.true_denials
            + self.false_accepts
            + self.false_rejects
            + self.no_answer
            + self.ambiguous
            + self.uncertain
    }

    fn add(&mut self, o: &DecisionCounts) {
        self.true_grants += o.true_grants;
        self.true_denials += o.true_denials;
        self.false_accepts += o.false_accepts;
        self.false_rejects += o.false_rejects;
        self.no_answer += o.no_answer;
        self.ambiguous += o.ambiguous;
        self.uncertain += o.uncertain;
    }
}

/// Counts plus bounded examples; mergeable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DecisionTally {
    pub counts: DecisionCounts,
    /// At most [`MAX_EXAMPLES`] each.
    pub false_accept_examples: Vec<DecisionExample>,
    pub false_reject_examples: Vec<DecisionExample>,
    /// Denied as expected, but for another reason than the rules give
    /// (counted among the true denials).
    #[serde(default)]
    pub reason_mismatch_examples: Vec<DecisionExample>,
    pub no_answer_examples: Vec<DecisionExample>,
}

impl DecisionTally {
    /// Counts one check without keeping an example (the oracle keeps its
    /// own, see [`DecisionTally::adopt_examples`]).
    pub fn count(&mut self, expected: Verdict, actual: Outcome) -> DecisionClass {
        self.record_with(expected, actual, None::<fn() -> DecisionExample>)
    }

    /// Counts one check. `example` runs only for a mismatch that will be kept,
    /// so the common path allocates nothing.
    pub fn record(
        &mut self,
        expected: Verdict,
        actual: Outcome,
        example: impl FnOnce() -> DecisionExample,
    ) -> DecisionClass {
        self.record_with(expected, actual, Some(example))
    }

    /// Counts one check of a class the oracle decided (it alone knows
    /// ambiguous and uncertain ones), without an example: the oracle keeps
    /// its own (see [`DecisionTally::adopt_examples`]).
    pub fn count_class(&mut self, class: DecisionClass) -> DecisionClass {
        self.record_class_with(class, None::<fn() -> DecisionExample>)
    }

    /// The examples of the oracle's verdicts, which only the oracle can
    /// describe (the expected reason, the keypad's history); they replace
    /// any kept by [`DecisionTally::record`]. Bounded like the others.
    pub fn adopt_examples(
        &mut self,
        false_accepts: &[DecisionExample],
        false_rejects: &[DecisionExample],
        reason_mismatches: &[DecisionExample],
    ) {
        let bounded = |l: &[DecisionExample]| l.iter().take(MAX_EXAMPLES).cloned().collect();
        self.false_accept_examples = bounded(false_accepts);
        self.false_reject_examples = bounded(false_rejects);
        self.reason_mismatch_examples = bounded(reason_mismatches);
    }

    fn record_with(
        &mut self,
        expected: Verdict,
        actual: Outcome,
        example: Option<impl FnOnce() -> DecisionExample>,
    ) -> DecisionClass {
        self.record_class_with(classify(expected, actual), example)
    }

    fn record_class_with(
        &mut self,
        class: DecisionClass,
        example: Option<impl FnOnce() -> DecisionExample>,
    ) -> DecisionClass {
        let c = &mut self.counts;
        let keep = match class {
            DecisionClass::TrueGrant => {
                c.true_grants += 1;
                None
            }
            DecisionClass::TrueDenial => {
                c.true_denials += 1;
                None
            }
            DecisionClass::FalseAccept => {
                c.false_accepts += 1;
                Some(&mut self.false_accept_examples)
            }
            DecisionClass::FalseReject => {
                c.false_rejects += 1;
                Some(&mut self.false_reject_examples)
            }
            DecisionClass::NoAnswer => {
                c.no_answer += 1;
                Some(&mut self.no_answer_examples)
            }
            DecisionClass::Ambiguous => {
                c.ambiguous += 1;
                None
            }
            DecisionClass::Uncertain => {
                c.uncertain += 1;
                None
            }
        };
        if let (Some(list), Some(example)) = (keep, example) {
            if list.len() < MAX_EXAMPLES {
                list.push(example());
            }
        }
        class
    }

    /// Adds another tally; examples are kept up to the bound, first come first kept.
    pub fn merge(&mut self, other: &DecisionTally) {
        self.counts.add(&other.counts);
        for (mine, theirs) in [
            (
                &mut self.false_accept_examples,
                &other.false_accept_examples,
            ),
            (
                &mut self.false_reject_examples,
                &other.false_reject_examples,
            ),
            (
                &mut self.reason_mismatch_examples,
                &other.reason_mismatch_examples,
            ),
            (&mut self.no_answer_examples, &other.no_answer_examples),
        ] {
            let room = MAX_EXAMPLES.saturating_sub(mine.len());
            mine.extend(theirs.iter().take(room).cloned());
        }
    }
}

/// The class of one check.
pub fn classify(expected: Verdict, actual: Outcome) -> DecisionClass {
    match (expected, actual) {
        (_, Outcome::Error) => DecisionClass::NoAnswer,
        (Verdict::Grant, Outcome::Granted) => DecisionClass::TrueGrant,
        (Verdict::Deny, Outcome::Denied) => DecisionClass::TrueDenial,
        (Verdict::Deny, Outcome::Granted) => DecisionClass::FalseAccept,
        (Verdict::Grant, Outcome::Denied) => DecisionClass::FalseReject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize) -> DecisionExample {
        DecisionExample {
            device: n as u32,
            credential_kind: "pin".into(),
            action: "pin_expired".into(),
            expected: "denied:expired".into(),
            actual: "granted".into(),
            note: "expired code accepted".into(),
            ..Default::default()
        }
    }

    #[test]
    fn classes_and_bounded_examples() {
        let mut t = DecisionTally::default();
        for n in 0..50 {
            assert_eq!(
                t.record(Verdict::Deny, Outcome::Granted, || ex(n)),
                DecisionClass::FalseAccept
            );
        }
        assert_eq!(
            t.record(Verdict::Grant, Outcome::Granted, || unreachable!()),
            DecisionClass::TrueGrant
        );
        assert_eq!(
            t.record(Verdict::Deny, Outcome::Denied, || unreachable!()),
            DecisionClass::TrueDenial
        );
        assert_eq!(
            t.record(Verdict::Grant, Outcome::Denied, || ex(0)),
            DecisionClass::FalseReject
        );
        assert_eq!(
            t.record(Verdict::Grant, Outcome::Error, || ex(0)),
            DecisionClass::NoAnswer
        );
        assert_eq!(
            t.count_class(DecisionClass::Uncertain),
            DecisionClass::Uncertain
        );
        assert_eq!(
            t.count_class(DecisionClass::Ambiguous),
            DecisionClass::Ambiguous
        );
        assert_eq!((t.counts.uncertain, t.counts.ambiguous), (1, 1));
        assert_eq!(t.counts.false_accepts, 50);
        assert_eq!(t.false_accept_examples.len(), MAX_EXAMPLES);
        assert_eq!(t.false_accept_examples[0].device, 0);
        assert_eq!(t.counts.total(), 56);

        let mut m = t.clone();
        m.merge(&t);
        assert_eq!(m.counts.false_accepts, 100);
        assert_eq!(m.false_accept_examples.len(), MAX_EXAMPLES);
        assert_eq!(m.false_reject_examples.len(), 2);
        assert_eq!(m.counts.uncertain, 2);

        // Counting keeps no example; adopted examples replace and stay bounded.
        assert_eq!(
            m.count(Verdict::Grant, Outcome::Denied),
            DecisionClass::FalseReject
        );
        assert_eq!(m.false_reject_examples.len(), 2);
        let many: Vec<_> = (0..30).map(ex).collect();
        m.adopt_examples(&many[..1], &[], &many);
        assert_eq!(m.false_accept_examples, many[..1]);
        assert!(m.false_reject_examples.is_empty());
        assert_eq!(m.reason_mismatch_examples.len(), MAX_EXAMPLES);
    }

    #[test]
    fn an_example_reads_as_one_line_with_its_keypad_history() {
        let e = DecisionExample {
            at: "2026-03-02T07:00:05Z".into(),
            answered_at: "2026-03-02T07:00:05.02Z".into(),
            site: Some(1),
            door: 7,
            device: 12,
            credential: Some(40),
            credential_kind: "pin".into(),
            action: "pin_valid".into(),
            expected: "granted".into(),
            actual: "denied:locked_out".into(),
            note: "n".into(),
            wrong_pins_at: vec!["2026-03-02T07:00:01Z".into(), "2026-03-02T07:00:02Z".into()],
            locked_until: None,
        };
        assert_eq!(
            e.to_string(),
            "2026-03-02T07:00:05Z site 1 door 7 device 12 pin pin_valid credential 40: \
             expected granted, got denied:locked_out; \
             wrong PINs at 2026-03-02T07:00:01Z, 2026-03-02T07:00:02Z"
        );
    }
}
