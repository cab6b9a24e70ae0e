//! When a credential works: permanent, temporary, recurring, delivery,
//! visitor temp key and guest stay schedules.
//!
//! Recurring windows are evaluated on the site's local wall clock (jiff), so a
//! "Tuesday 09:00-17:00" code opens at 09:00 local time on both sides of a DST
//! change. A window whose end is not after its start crosses midnight and
//! belongs to the day it starts on.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::{DenyReason, StayId};

/// A set of weekdays (bit 0 = Monday .. bit 6 = Sunday).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Weekdays(u8);

impl Weekdays {
    pub const ALL: Weekdays = Weekdays(0x7f);
    pub const NONE: Weekdays = Weekdays(0);

    pub fn from_days(days: impl IntoIterator<Item = Weekday>) -> Weekdays {
        Weekdays(days.into_iter().fold(0, |m, d| m | Self::bit(d)))
    }

    fn bit(d: Weekday) -> u8 {
        1 << (d.to_monday_zero_offset() as u8)
    }

    pub fn contains(self, d: Weekday) -> bool {
        self.0 & Self::bit(d) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Weekday> {
        (0..7)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(|i| Weekday::from_monday_zero_offset(i).expect("0..7 is a weekday"))
    }

    /// How many days are in the set.
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }
}

impl serde::Serialize for Weekdays {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.count() as usize))?;
        for d in self.iter() {
            seq.serialize_element(weekday_name(d))?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for Weekdays {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Weekdays, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut days = Vec::with_capacity(names.len());
        for n in names {
            days.push(parse_weekday(&n).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown weekday {n:?}; use mon, tue, wed, thu, fri, sat, sun"
                ))
            })?);
        }
        Ok(Weekdays::from_days(days))
    }
}

fn weekday_name(d: Weekday) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][d.to_monday_zero_offset() as usize]
}

/// Parses "mon", "Monday", "TUE"... (the first three letters decide).
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    let lower = s.to_ascii_lowercase();
    let short = lower.get(..3)?;
    let i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|n| *n == short)?;
    Weekday::from_monday_zero_offset(i as i8).ok()
}

/// A daily window on the local wall clock. `end <= start` crosses midnight;
/// `start == end` is the whole day.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct DailyWindow {
    #[schema(value_type = String, pattern = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?)?$")]
    pub start: Time,
    #[schema(value_type = String, pattern = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?)?$")]
    pub end: Time,
}

impl DailyWindow {
    pub const WHOLE_DAY: DailyWindow = DailyWindow {
        start: Time::midnight(),
        end: Time::midnight(),
    };

    /// Is instant `now`, on the wall clock of `tz`, inside the window on
    /// one of `days`?
    pub fn contains_at(&self, days: Weekdays, now: Timestamp, tz: &TimeZone) -> bool {
        let local = tz.to_datetime(now);
        self.contains(days, local.weekday(), local.time())
    }

    /// Is local time `t` on `day` inside a window that may have opened on
    /// `day` or (crossing midnight) on the day before?
    fn contains(&self, days: Weekdays, day: Weekday, t: Time) -> bool {
        if self.start == self.end {
            return days.contains(day);
        }
        if self.start < self.end {
            return days.contains(day) && self.start <= t && t < self.end;
        }
        (days.contains(day) && t >= self.start) || (days.contains(day.previous()) && t < self.end)
    }
}

/// How often a visitor temp key may be used (seeds/001).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Repeat {
    /// Once within the time range, with an optional use count per door.
    Never,
    /// Every day inside the daily window.
    Daily,
    /// On the chosen weekdays inside the daily window.
    Weekly,
}

/// When a credential is valid.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// "Always".
    #[serde(deserialize_with = "super::no_fields")]
    Permanent,
    /// From `start` (inclusive) to `end` (exclusive).
    Temporary { start: Timestamp, end: Timestamp },
    /// Chosen weekdays and a local daily window, optionally bounded.
    Recurring {
        #[schema(value_type = Vec<String>)]
        days: Weekdays,
        window: DailyWindow,
        #[serde(default)]
        start: Option<Timestamp>,
        #[serde(default)]
        end: Option<Timestamp>,
    },
    /// A courier's short window, optionally limited to `max_uses` grants in all.
    Delivery {
        start: Timestamp,
        end: Timestamp,
        #[serde(default)]
        max_uses: Option<u32>,
    },
    /// A visitor temp key: a time range, a repeat mode and, with `Never`, a
    /// use count per door ("each door counts").
    Visitor {
        repeat: Repeat,
        start: Timestamp,
        end: Timestamp,
        #[serde(default)]
        #[schema(value_type = Option<Vec<String>>)]
        days: Option<Weekdays>,
        #[serde(default)]
        window: Option<DailyWindow>,
        #[serde(default)]
        each_door_count: Option<u32>,
    },
    /// Tied to a guest stay: check-in and check-out decide (with the lock's
    /// guest settings).
    Stay { stay: StayId },
}

/// How many grants a credential allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UseLimit {
    Unlimited,
    /// In all, over every door.
    Total(u32),
    /// On each door separately.
    PerDoor(u32),
}

/// A schedule that cannot be issued, naming the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the end must be after the start")]
    EndNotAfterStart,
    #[error("a recurring schedule needs at least one weekday")]
    NoWeekdays,
    #[error("a use count must be at least 1")]
    ZeroUses,
    #[error("'each door counts' applies only with repeat mode never")]
    DoorCountNeedsNever,
    #[error("repeat mode {0} needs a daily window")]
    WindowRequired(&'static str),
    #[error("weekdays apply only with repeat mode weekly")]
    DaysNeedWeekly,
}

impl Schedule {
    /// Checks the schedule's own consistency (the engine checks references).
    pub fn check(&self) -> Result<(), ScheduleError> {
        let order = |s: &Timestamp, e: &Timestamp| {
            if e > s {
                Ok(())
            } else {
                Err(ScheduleError::EndNotAfterStart)
            }
        };
        match self {
            Schedule::Permanent | Schedule::Stay { .. } => Ok(()),
            Schedule::Temporary { start, end } => order(start, end),
            Schedule::Recurring {
                days, start, end, ..
            } => {
                if days.is_empty() {
                    return Err(ScheduleError::NoWeekdays);
                }
                match (start, end) {
                    (Some(s), Some(e)) => order(s, e),
                    _ => Ok(()),
                }
            }
            Schedule::Delivery {
                start,
                end,
                max_uses,
            } => {
                order(start, end)?;
                if *max_uses == Some(0) {
                    return Err(ScheduleError::ZeroUses);
                }
                Ok(())
            }
            Schedule::Visitor {
                repeat,
                start,
                end,
                days,
                window,
                each_door_count,
            } => {
                order(start, end)?;
                match repeat {
                    Repeat::Never => {
                        if days.is_some() {
                            return Err(ScheduleError::DaysNeedWeekly);
                        }
                        if *each_door_count == Some(0) {
                            return Err(ScheduleError::ZeroUses);
                        }
                    }
                    Repeat::Daily | Repeat::Weekly => {
                        if each_door_count.is_some() {
                            return Err(ScheduleError::DoorCountNeedsNever);
                        }
                        if window.is_none() {
                            let name = if *repeat == Repeat::Daily {
                                "daily"
                            } else {
                                "weekly"
                            };
                            return Err(ScheduleError::WindowRequired(name));
                        }
                        match (repeat, days) {
                            (Repeat::Daily, Some(_)) => return Err(ScheduleError::DaysNeedWeekly),
                            (Repeat::Weekly, None) => return Err(ScheduleError::NoWeekdays),
                            (Repeat::Weekly, Some(d)) if d.is_empty() => {
                                return Err(ScheduleError::NoWeekdays)
                            }
                            _ => {}
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The schedule kind's name, as the API and reports show it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Schedule::Permanent => "permanent",
            Schedule::Temporary { .. } => "temporary",
            Schedule::Recurring { .. } => "recurring",
            Schedule::Delivery { .. } => "delivery",
            Schedule::Visitor { .. } => "visitor",
            Schedule::Stay { .. } => "stay",
        }
    }

    pub fn use_limit(&self) -> UseLimit {
        match self {
            Schedule::Delivery {
                max_uses: Some(n), ..
            } => UseLimit::Total(*n),
            Schedule::Visitor {
                repeat: Repeat::Never,
                each_door_count: Some(n),
                ..
            } => UseLimit::PerDoor(*n),
            _ => UseLimit::Unlimited,
        }
    }

    /// The validity bounds, if any: (start, end).
    pub fn bounds(&self) -> (Option<Timestamp>, Option<Timestamp>) {
        match self {
            Schedule::Permanent | Schedule::Stay { .. } => (None, None),
            Schedule::Temporary { start, end }
            | Schedule::Delivery { start, end, .. }
            | Schedule::Visitor { start, end, .. } => (Some(*start), Some(*end)),
            Schedule::Recurring { start, end, .. } => (*start, *end),
        }
    }

    /// Checks `now` against the bounds and the recurring window, in `tz`.
    /// Stays and use counts are the engine's business.
    #[inline]
    pub fn check_time(&self, now: Timestamp, tz: &TimeZone) -> Result<(), DenyReason> {
        let (start, end) = self.bounds();
        if let Some(s) = start {
            if now < s {
                return Err(DenyReason::NotYetValid);
            }
        }
        if let Some(e) = end {
            if now >= e {
                return Err(DenyReason::Expired);
            }
        }
        let Some((days, window)) = self.weekly() else {
            return Ok(());
        };
        if window.contains_at(days, now, tz) {
            Ok(())
        } else {
            Err(DenyReason::OutsideSchedule)
        }
    }

    /// The bounds in nanoseconds since the Unix epoch, `i64::MIN` for no
    /// start and `i64::MAX` for no end, when both fit exactly (what the
    /// keypad lookup keeps beside a PIN); None otherwise.
    pub fn bounds_ns(&self) -> Option<(i64, i64)> {
        let ns =
            |t: Timestamp, none: i64| i64::try_from(t.as_nanosecond()).ok().filter(|n| *n != none);
        let (start, end) = self.bounds();
        let start = match start {
            None => i64::MIN,
            Some(t) => ns(t, i64::MIN)?,
        };
        let end = match end {
            None => i64::MAX,
            Some(t) => ns(t, i64::MAX)?,
        };
        Some((start, end))
    }

    /// The weekdays and local daily window the schedule repeats in, if any
    /// (what an offline lock is told to check, too).
    pub fn weekly(&self) -> Option<(Weekdays, DailyWindow)> {
        match self {
            Schedule::Recurring { days, window, .. } => Some((*days, *window)),
            Schedule::Visitor {
                repeat: Repeat::Daily,
                window: Some(w),
                ..
            } => Some((Weekdays::ALL, *w)),
            Schedule::Visitor {
                repeat: Repeat::Weekly,
                days: Some(d),
                window: Some(w),
                ..
            } => Some((*d, *w)),
            _ => None,
        }
    }

    /// `check_time` from the parts kept beside a PIN: the bounds from
    /// `bounds_ns` and `weekly()`. `now_ns` is `now` in nanoseconds and lies
    /// strictly between `i64::MIN` and `i64::MAX`.
    #[inline]
    pub fn check_time_parts(
        (start_ns, end_ns): (i64, i64),
        weekly: Option<(Weekdays, DailyWindow)>,
        now: Timestamp,
        now_ns: i64,
        tz: &TimeZone,
    ) -> Result<(), DenyReason> {
        if now_ns < start_ns {
            return Err(DenyReason::NotYetValid);
        }
        if now_ns >= end_ns {
            return Err(DenyReason::Expired);
        }
        match weekly {
            Some((days, window)) if !window.contains_at(days, now, tz) => {
                Err(DenyReason::OutsideSchedule)
            }
            _ => Ok(()),
        }
    }

    /// "Always" or "start – end", as the code list's Duration column shows it.
    pub fn duration_label(&self, tz: &TimeZone) -> String {
        let fmt = |t: Timestamp| tz.to_datetime(t).strftime("%Y-%m-%d %H:%M").to_string();
        match self.bounds() {
            (None, None) => "Always".to_string(),
            (Some(s), Some(e)) => format!("{} – {}", fmt(s), fmt(e)),
            (Some(s), None) => format!("from {}", fmt(s)),
            (None, Some(e)) => format!("until {}", fmt(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use jiff::{SignedDuration, ToSpan};
    use proptest::prelude::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    fn at(tz: &TimeZone, y: i16, m: i8, d: i8, h: i8, min: i8) -> Timestamp {
        date(y, m, d)
            .at(h, min, 0, 0)
            .to_zoned(tz.clone())
            .unwrap()
            .timestamp()
    }

    fn recurring(days: &[Weekday], start: Time, end: Time) -> Schedule {
        Schedule::Recurring {
            days: Weekdays::from_days(days.iter().copied()),
            window: DailyWindow { start, end },
            start: None,
            end: None,
        }
    }

    #[test]
    fn tuesday_morning_across_both_dst_changes() {
        let tz = berlin();
        let s = recurring(
            &[Weekday::Tuesday],
            Time::constant(9, 0, 0, 0),
            Time::constant(10, 0, 0, 0),
        );
        // 2026-03-24 (CET, UTC+1), 2026-03-31 (CEST, UTC+2), 2026-10-27 (CET again).
        for (m, d) in [(3, 24), (3, 31), (10, 20), (10, 27)] {
            assert_eq!(
                s.check_time(at(&tz, 2026, m, d, 9, 0), &tz),
                Ok(()),
                "{m}-{d} 09:00"
            );
            assert_eq!(s.check_time(at(&tz, 2026, m, d, 9, 59), &tz), Ok(()));
            assert_eq!(
                s.check_time(at(&tz, 2026, m, d, 10, 0), &tz),
                Err(DenyReason::OutsideSchedule)
            );
            assert_eq!(
                s.check_time(at(&tz, 2026, m, d, 8, 59), &tz),
                Err(DenyReason::OutsideSchedule)
            );
        }
    }

    #[test]
    fn night_window_belongs_to_the_day_it_starts() {
        let tz = berlin();
        let s = recurring(
            &[Weekday::Sunday],
            Time::constant(22, 0, 0, 0),
            Time::constant(6, 0, 0, 0),
        );
        // Sunday 2026-11-22 23:00 and Monday 05:59 are in; Monday 22:00 is not.
        assert_eq!(s.check_time(at(&tz, 2026, 11, 22, 23, 0), &tz), Ok(()));
        assert_eq!(s.check_time(at(&tz, 2026, 11, 23, 5, 59), &tz), Ok(()));
        assert_eq!(
            s.check_time(at(&tz, 2026, 11, 23, 6, 0), &tz),
            Err(DenyReason::OutsideSchedule)
        );
        assert_eq!(
            s.check_time(at(&tz, 2026, 11, 23, 22, 0), &tz),
            Err(DenyReason::OutsideSchedule)
        );
        assert_eq!(
            s.check_time(at(&tz, 2026, 11, 22, 5, 0), &tz),
            Err(DenyReason::OutsideSchedule)
        );
    }

    #[test]
    fn bounds_give_not_yet_valid_and_expired() {
        let tz = TimeZone::UTC;
        let start = Timestamp::from_second(1_000).unwrap();
        let end = Timestamp::from_second(2_000).unwrap();
        let s = Schedule::Temporary { start, end };
        assert_eq!(
            s.check_time(Timestamp::from_second(999).unwrap(), &tz),
            Err(DenyReason::NotYetValid)
        );
        assert_eq!(s.check_time(start, &tz), Ok(()));
        assert_eq!(s.check_time(end, &tz), Err(DenyReason::Expired));
    }

    #[test]
    fn inconsistent_schedules_name_the_rule() {
        let t = Timestamp::from_second(1_000).unwrap();
        let later = Timestamp::from_second(2_000).unwrap();
        assert_eq!(
            Schedule::Temporary {
                start: later,
                end: t
            }
            .check(),
            Err(ScheduleError::EndNotAfterStart)
        );
        let v = |repeat, days, window, each_door_count| Schedule::Visitor {
            repeat,
            start: t,
            end: later,
            days,
            window,
            each_door_count,
        };
        let w = Some(DailyWindow::WHOLE_DAY);
        assert_eq!(
            v(Repeat::Daily, None, w, Some(2)).check(),
            Err(ScheduleError::DoorCountNeedsNever)
        );
        assert_eq!(
            v(Repeat::Weekly, None, w, None).check(),
            Err(ScheduleError::NoWeekdays)
        );
        assert_eq!(
            v(Repeat::Daily, None, None, None).check(),
            Err(ScheduleError::WindowRequired("daily"))
        );
        assert_eq!(
            v(Repeat::Never, None, None, Some(0)).check(),
            Err(ScheduleError::ZeroUses)
        );
        assert_eq!(v(Repeat::Never, None, None, Some(2)).check(), Ok(()));
        assert_eq!(
            v(Repeat::Never, None, None, Some(2)).use_limit(),
            UseLimit::PerDoor(2)
        );
    }

    #[test]
    fn schedules_round_trip_through_json() {
        let s = recurring(
            &[Weekday::Tuesday, Weekday::Friday],
            Time::constant(9, 0, 0, 0),
            Time::constant(17, 30, 0, 0),
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"tue\""), "{json}");
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
    }

    fn any_window() -> impl Strategy<Value = (u8, i8, i8)> {
        (1u8..=0x7f, 0i8..24, 0i8..24)
    }

    proptest! {
        // The parts the keypad lookup keeps decide as the schedule does,
        // to the nanosecond at the bounds.
        #[test]
        fn parts_decide_as_the_schedule(
            (mask, sh, eh) in any_window(),
            kind in 0u8..4,
            start_s in 1_700_000_000i64..1_800_000_000,
            len_s in 1i64..10_000_000,
            start_nanos in 0i32..1_000_000_000,
            offset_ns in -2_000_000_000i64..2_000_000_000,
            at in 0u8..3,
        ) {
            let tz = berlin();
            let start = Timestamp::new(start_s, start_nanos).unwrap();
            let end = start + jiff::SignedDuration::from_secs(len_s);
            let window = DailyWindow { start: Time::constant(sh, 0, 0, 0), end: Time::constant(eh, 0, 0, 0) };
            let days = Weekdays(mask);
            let s = match kind {
                0 => Schedule::Permanent,
                1 => Schedule::Temporary { start, end },
                2 => Schedule::Recurring { days, window, start: Some(start), end: None },
                _ => Schedule::Recurring { days, window, start: None, end: Some(end) },
            };
            // Around the start, around the end, or anywhere inside.
            let base = match at { 0 => start, 1 => end, _ => start + jiff::SignedDuration::from_secs(len_s / 2) };
            let now = base + jiff::SignedDuration::from_nanos(offset_ns);
            let now_ns = i64::try_from(now.as_nanosecond()).unwrap();
            let bounds = s.bounds_ns().unwrap();
            prop_assert_eq!(
                Schedule::check_time_parts(bounds, s.weekly(), now, now_ns, &tz),
                s.check_time(now, &tz)
            );
        }

        // A window that crosses midnight is the union of "start..24:00 on the
        // chosen days" and "00:00..end on the day after each chosen day".
        #[test]
        fn crossing_midnight_is_two_halves((mask, sh, eh) in any_window(), minute in 0i64..(3 * 366 * 24 * 60)) {
            prop_assume!(eh < sh);
            let tz = berlin();
            let now = Timestamp::from_second(1_735_689_600 + minute * 60).unwrap();
            let days = Weekdays(mask);
            let start = Time::constant(sh, 0, 0, 0);
            let end = Time::constant(eh, 0, 0, 0);
            let whole = Schedule::Recurring { days, window: DailyWindow { start, end }, start: None, end: None };
            let next_days = Weekdays::from_days(days.iter().map(|d| d.next()));
            let evening = Schedule::Recurring { days, window: DailyWindow { start, end: Time::MAX }, start: None, end: None };
            let morning = Schedule::Recurring { days: next_days, window: DailyWindow { start: Time::midnight(), end }, start: None, end: None };
            // An end at midnight leaves no morning half (00:00..00:00 would
            // mean the whole day).
            let in_morning = eh > 0 && morning.check_time(now, &tz).is_ok();
            let union = evening.check_time(now, &tz).is_ok() || in_morning;
            prop_assert_eq!(whole.check_time(now, &tz).is_ok(), union);
        }

        // Over any week, the open time equals days x window length, give or
        // take the hour a DST change adds or removes inside that week.
        #[test]
        fn open_minutes_per_week((mask, sh, eh) in any_window(), week in 0i64..104) {
            prop_assume!(sh != eh);
            let tz = berlin();
            let days = Weekdays(mask);
            let window = DailyWindow { start: Time::constant(sh, 0, 0, 0), end: Time::constant(eh, 0, 0, 0) };
            let s = Schedule::Recurring { days, window, start: None, end: None };
            let week_start = Timestamp::from_second(1_735_689_600).unwrap() + SignedDuration::from_hours(24 * 7 * week);
            let mut open = 0i64;
            for m in 0..(7 * 24 * 60) {
                let now = week_start + SignedDuration::from_mins(m);
                if s.check_time(now, &tz).is_ok() { open += 1; }
            }
            let len_h = if eh > sh { i64::from(eh - sh) } else { i64::from(24 - sh + eh) };
            let expected = i64::from(days.count()) * len_h * 60;
            let week_end = week_start + SignedDuration::from_hours(24 * 7);
            let offset_changes = tz.to_offset(week_start) != tz.to_offset(week_end);
            // A week of wall-clock time covers each weekday and hour exactly
            // once; a DST change makes that week an hour longer or shorter.
            let slack = if offset_changes { 60 } else { 0 };
            prop_assert!((open - expected).abs() <= slack, "open {} expected {}", open, expected);
        }

        // Week boundary: Sunday's evening window still opens on Monday morning.
        #[test]
        fn sunday_night_reaches_monday(h in 0i8..6, week in 0i64..52) {
            let tz = berlin();
            let s = recurring(&[Weekday::Sunday], Time::constant(22, 0, 0, 0), Time::constant(6, 0, 0, 0));
            let monday = date(2026, 1, 5).checked_add((7 * week).days()).unwrap();
            let t = monday.at(h, 30, 0, 0).to_zoned(tz.clone()).unwrap().timestamp();
            prop_assert_eq!(s.check_time(t, &tz), Ok(()));
            let tue = monday.tomorrow().unwrap().at(h, 30, 0, 0).to_zoned(tz.clone()).unwrap().timestamp();
            prop_assert_eq!(s.check_time(tue, &tz), Err(DenyReason::OutsideSchedule));
        }
    }
}
