//! Arrival accounting: what happened to every arrival the load model
//! offered. Each one is served (presented and answered, or for code
//! actions and sync storms, made), skipped (its action had nothing to
//! present), dropped for a load reason, or still queued when the run ended:
//!
//! `offered == served + skipped + dropped + queued_at_end`
//!
//! An arrival whose device is busy waits in that device's queue (one person
//! at a keypad at a time, as at a real door) and its latency counts from its
//! intended start, so a saturated system shows as latency and as drops,
//! never as silence.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::junit::escape;
use super::{fmt_num, rate};

/// Why an arrival was not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The action found nothing to present: no code valid now, no used-up
    /// or expired QR key, no code to change (skipped work).
    NothingToPresent,
    /// The transport cannot carry the action (`remote_open` over http)
    /// (skipped work).
    NotSupported,
    /// Every device that takes the credential had a full queue.
    QueueFull,
    /// `max_in_flight` arrivals were already waiting or being served.
    MaxInFlight,
    /// The server refused a command the arrival needed first (the visitor
    /// key a resident issued for it).
    ServerRefused,
}

impl DropReason {
    pub const COUNT: usize = 5;
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::NothingToPresent,
        DropReason::NotSupported,
        DropReason::QueueFull,
        DropReason::MaxInFlight,
        DropReason::ServerRefused,
    ];

    /// The label in reports and the `reason` Prometheus label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::NothingToPresent => "nothing_to_present",
            DropReason::NotSupported => "not_supported",
            DropReason::QueueFull => "queue_full",
            DropReason::MaxInFlight => "max_in_flight",
            DropReason::ServerRefused => "server_refused",
        }
    }

    /// Skipped work (the action could not be made at all) rather than a
    /// load the run could not carry: counted by `arrivals.skipped_rate`,
    /// the others by `arrivals.dropped_rate`.
    pub const fn is_skip(self) -> bool {
        matches!(
            self,
            DropReason::NothingToPresent | DropReason::NotSupported
        )
    }

    pub fn parse(s: &str) -> Option<DropReason> {
        DropReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One action's arrivals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionArrivals {
    /// Arrivals that drew this action.
    pub asked: u64,
    /// Served: the check or remote open was presented and answered (an
    /// error answer included); a code action or sync storm was made.
    pub ran: u64,
    /// Not served, per reason (`nothing_to_present`, `queue_full`, ...).
    pub dropped: BTreeMap<String, u64>,
    /// Still waiting in a device's queue, or still waiting for its
    /// device's answer after the drain, when the run ended.
    pub queued_at_end: u64,
}

impl ActionArrivals {
    /// Arrivals skipped for lack of something to present.
    pub fn skipped(&self) -> u64 {
        self.sum(true)
    }

    /// Arrivals dropped for a load reason (queue full, `max_in_flight`, ...).
    pub fn dropped_load(&self) -> u64 {
        self.sum(false)
    }

    fn sum(&self, skips: bool) -> u64 {
        self.dropped
            .iter()
            .filter(|(k, _)| DropReason::parse(k).is_some_and(|r| r.is_skip()) == skips)
            .map(|(_, v)| v)
            .sum()
    }

    /// Arrivals not accounted for (`asked` minus everything else); zero
    /// unless the run lost track of one.
    pub fn unaccounted(&self) -> i64 {
        self.asked as i64
            - (self.ran + self.dropped.values().sum::<u64>() + self.queued_at_end) as i64
    }

    fn add(&mut self, o: &ActionArrivals) {
        self.asked += o.asked;
        self.ran += o.ran;
        self.queued_at_end += o.queued_at_end;
        for (k, v) in &o.dropped {
            *self.dropped.entry(k.clone()).or_default() += v;
        }
    }
}

/// Every arrival of a run, in report.json as `arrivals`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrivalsReport {
    /// Arrivals the load model made (open model: the arrival streams;
    /// closed model: each person's actions; guest stays: early and late
    /// tries).
    pub offered: u64,
    pub served: u64,
    /// Skipped for lack of something to present (`nothing_to_present`,
    /// `not_supported`).
    pub skipped: u64,
    /// Dropped for a load reason (`queue_full`, `max_in_flight`,
    /// `server_refused`).
    pub dropped: u64,
    /// Still waiting in a device's queue, or still waiting for its
    /// device's answer after the drain, when the run ended.
    pub queued_at_end: u64,
    /// Every reason an arrival was not served, skipped ones included.
    pub by_reason: BTreeMap<String, u64>,
    /// Length of the load phases in seconds (the run's `duration_s` adds
    /// the drain after them).
    pub load_s: f64,
    /// `offered` per second of the load phases (the rate asked for).
    pub offered_per_s: f64,
    /// `served` per second of the run, drain included (the achieved rate).
    pub served_per_s: f64,
    /// `skipped / offered` (0 when nothing was offered).
    pub skipped_rate: f64,
    /// `(dropped + queued_at_end) / offered` (0 when nothing was offered).
    pub dropped_rate: f64,
    /// Keyed by action (`pin_valid`, ..., `stay_early`).
    pub actions: BTreeMap<String, ActionArrivals>,
}

impl ArrivalsReport {
    /// The totals of `actions` over load phases of `load_s` seconds and a
    /// run (drain included) of `duration_s` seconds.
    pub fn of(
        actions: BTreeMap<String, ActionArrivals>,
        load_s: f64,
        duration_s: f64,
    ) -> ArrivalsReport {
        let sum = |f: &dyn Fn(&ActionArrivals) -> u64| actions.values().map(f).sum::<u64>();
        let offered = sum(&|a| a.asked);
        let served = sum(&|a| a.ran);
        let skipped = sum(&|a| a.skipped());
        let dropped = sum(&|a| a.dropped_load());
        let queued_at_end = sum(&|a| a.queued_at_end);
        let mut by_reason = BTreeMap::new();
        for a in actions.values() {
            for (k, v) in &a.dropped {
                *by_reason.entry(k.clone()).or_default() += v;
            }
        }
        let share = |n: u64| {
            if offered == 0 {
                0.0
            } else {
                n as f64 / offered as f64
            }
        };
        ArrivalsReport {
            offered,
            served,
            skipped,
            dropped,
            queued_at_end,
            by_reason,
            load_s,
            offered_per_s: rate(offered, load_s),
            served_per_s: rate(served, duration_s),
            skipped_rate: share(skipped),
            dropped_rate: share(dropped + queued_at_end),
            actions,
        }
    }

    /// The arrivals of several reports (shards, run side by side)
    /// together, over a run of `duration_s` seconds.
    pub fn merged<'a>(
        reports: impl IntoIterator<Item = &'a ArrivalsReport>,
        duration_s: f64,
    ) -> ArrivalsReport {
        let mut actions: BTreeMap<String, ActionArrivals> = BTreeMap::new();
        let mut load_s: f64 = 0.0;
        for r in reports {
            load_s = load_s.max(r.load_s);
            for (k, a) in &r.actions {
                actions.entry(k.clone()).or_default().add(a);
            }
        }
        ArrivalsReport::of(actions, load_s, duration_s)
    }

    /// Actions whose arrivals do not add up (none in a correct run).
    pub fn unaccounted(&self) -> Vec<(String, i64)> {
        self.actions
            .iter()
            .map(|(k, a)| (k.clone(), a.unaccounted()))
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    /// The summary's lines: offered vs achieved, and asked/ran/skipped per
    /// action.
    pub fn summary_lines(&self, out: &mut String, waited: u64) {
        if self.offered == 0 {
            return;
        }
        let _ = writeln!(
            out,
            "arrivals: offered {} ({}/s over the phases), served {} ({}/s over the run), waited in a queue {}, skipped {} ({}%), dropped {}, still queued at the end {} (dropped {}%)",
            self.offered,
            fmt_num(self.offered_per_s),
            self.served,
            fmt_num(self.served_per_s),
            waited,
            self.skipped,
            fmt_num(self.skipped_rate * 100.0),
            self.dropped,
            self.queued_at_end,
            fmt_num(self.dropped_rate * 100.0),
        );
        let _ = writeln!(
            out,
            "{:<15} {:>9} {:>9} {:>9} {:>9} {:>7}  not served because",
            "action", "asked", "ran", "skipped", "dropped", "queued"
        );
        for (name, a) in &self.actions {
            let why: Vec<String> = a.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                out,
                "{:<15} {:>9} {:>9} {:>9} {:>9} {:>7}  {}",
                name,
                a.asked,
                a.ran,
                a.skipped(),
                a.dropped_load(),
                a.queued_at_end,
                why.join(", ")
            );
        }
    }

    /// The HTML section.
    pub fn html(&self, h: &mut String, waited: u64) {
        h.push_str("<section id=\"arrivals\"><h2>Arrivals</h2>");
        let _ = write!(
            h,
            "<p>Offered {} ({} /s over the load phases), served {} ({} /s over the run, drain included); waited in a device's queue {}; skipped (nothing to present) {} ({} %); dropped {}; still queued at the end {} (dropped rate {} %).</p>",
            self.offered,
            fmt_num(self.offered_per_s),
            self.served,
            fmt_num(self.served_per_s),
            waited,
            self.skipped,
            fmt_num(self.skipped_rate * 100.0),
            self.dropped,
            self.queued_at_end,
            fmt_num(self.dropped_rate * 100.0),
        );
        h.push_str("<table><tr><th>action</th><th>asked</th><th>ran</th><th>skipped</th><th>dropped</th><th>queued at end</th><th class=\"l\">not served because</th></tr>");
        for (name, a) in &self.actions {
            let why: Vec<String> = a.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                escape(name),
                a.asked,
                a.ran,
                a.skipped(),
                a.dropped_load(),
                a.queued_at_end,
                escape(&why.join(", "))
            );
        }
        h.push_str("</table></section>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(asked: u64, ran: u64, dropped: &[(DropReason, u64)], queued: u64) -> ActionArrivals {
        ActionArrivals {
            asked,
            ran,
            dropped: dropped
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), *n))
                .collect(),
            queued_at_end: queued,
        }
    }

    #[test]
    fn totals_split_skipped_from_dropped_and_add_up() {
        let r = ArrivalsReport::of(
            BTreeMap::from([
                (
                    "pin_valid".to_string(),
                    action(100, 80, &[(DropReason::QueueFull, 15)], 5),
                ),
                (
                    "qr_expired".to_string(),
                    action(10, 0, &[(DropReason::NothingToPresent, 10)], 0),
                ),
            ]),
            10.0,
            20.0,
        );
        assert_eq!(
            (r.offered, r.served, r.skipped, r.dropped),
            (110, 80, 10, 15)
        );
        assert_eq!(r.queued_at_end, 5);
        assert_eq!(r.offered_per_s, 11.0);
        assert_eq!(r.served_per_s, 4.0);
        assert_eq!(r.skipped_rate, 10.0 / 110.0);
        assert_eq!(r.dropped_rate, 20.0 / 110.0);
        assert_eq!(r.by_reason["queue_full"], 15);
        assert!(r.unaccounted().is_empty());
        let lost = action(10, 5, &[(DropReason::MaxInFlight, 1)], 0);
        assert_eq!(lost.unaccounted(), 4);
    }

    #[test]
    fn merging_sums_per_action() {
        let a = ArrivalsReport::of(
            BTreeMap::from([(
                "card".to_string(),
                action(4, 3, &[(DropReason::QueueFull, 1)], 0),
            )]),
            2.0,
            3.0,
        );
        let b = ArrivalsReport::of(
            BTreeMap::from([("card".to_string(), action(6, 6, &[], 0))]),
            2.0,
            3.0,
        );
        let m = ArrivalsReport::merged([&a, &b], 3.0);
        assert_eq!(
            m.actions["card"],
            action(10, 9, &[(DropReason::QueueFull, 1)], 0)
        );
        assert_eq!(m.offered_per_s, 5.0);
        assert_eq!(m.served_per_s, 3.0);
        assert_eq!(
            ArrivalsReport::of(BTreeMap::new(), 0.0, 0.0).dropped_rate,
            0.0
        );
    }
}
