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

/// One mismatch, described for a human. Built only when it will be kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DecisionExample {
    pub device_id: String,
    /// `pin`, `qr`, `card` or `ble`.
    pub credential_kind: String,
    /// `granted` or `denied`.
    pub expected: String,
    /// `granted`, `denied` or `error`.
    pub actual: String,
    /// Why: the engine's denial reason, the oracle's expectation, or the error.
    pub reason: String,
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
    pub no_answer_examples: Vec<DecisionExample>,
}

impl DecisionTally {
    /// Counts one check. `example` runs only for a mismatch that will be kept,
    /// so the common path allocates nothing.
    pub fn record(
        &mut self,
        expected: Verdict,
        actual: Outcome,
        example: impl FnOnce() -> DecisionExample,
    ) -> DecisionClass {
        self.record_class(classify(expected, actual), example)
    }

    /// Counts one check of a class the oracle decided (it alone knows
    /// ambiguous and uncertain ones).
    pub fn record_class(
        &mut self,
        class: DecisionClass,
        example: impl FnOnce() -> DecisionExample,
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
        if let Some(list) = keep {
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
            device_id: format!("lock-{n}"),
            credential_kind: "pin".into(),
            expected: "denied".into(),
            actual: "granted".into(),
            reason: "expired code accepted".into(),
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
            t.record_class(DecisionClass::Uncertain, || unreachable!()),
            DecisionClass::Uncertain
        );
        assert_eq!(
            t.record_class(DecisionClass::Ambiguous, || unreachable!()),
            DecisionClass::Ambiguous
        );
        assert_eq!((t.counts.uncertain, t.counts.ambiguous), (1, 1));
        assert_eq!(t.counts.false_accepts, 50);
        assert_eq!(t.false_accept_examples.len(), MAX_EXAMPLES);
        assert_eq!(t.false_accept_examples[0].device_id, "lock-0");
        assert_eq!(t.counts.total(), 56);

        let mut m = t.clone();
        m.merge(&t);
        assert_eq!(m.counts.false_accepts, 100);
        assert_eq!(m.false_accept_examples.len(), MAX_EXAMPLES);
        assert_eq!(m.false_reject_examples.len(), 2);
        assert_eq!(m.counts.uncertain, 2);
    }
}
