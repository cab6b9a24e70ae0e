//! Raw scenario -> checked [`Scenario`]: applies defaults, converts units and
//! enforces the rules that span several fields (a QR action needs door
//! phones and QR keys; a broker outage needs MQTT; ...). Collects every
//! problem; runs only once the structural pass found none, so values with
//! units are known to parse here.

use std::ops::Range;
use std::time::Duration;

use jiff::civil::{DateTime, Time};
use reference_server::domain::{
    parse_weekday, Connectivity, DailyWindow, DeviceKind, GuestSettings, LockoutPolicy, Repeat,
    Weekdays,
};

use super::error::{Problem, ProblemKind, SourceMap};
use super::model::*;
use super::raw::*;
use super::threshold::Threshold;
use super::units;

/// Most devices one scenario may simulate in one process (shard beyond).
pub const MAX_DEVICES: u64 = 1_000_000;
/// Longest scenario or phase name, in bytes: never more characters than
/// the engine takes for the organization it names.
pub const MAX_NAME_LEN: usize = reference_server::engine::MAX_NAME_CHARS;
/// Longest description, in bytes (one line for the reader).
pub const MAX_DESCRIPTION_LEN: usize = 1_000;
/// Most phases in one scenario.
pub const MAX_PHASES: usize = 100;
/// Longest run: all phases together. A year and a month of virtual time
/// covers a yearly cycle of schedules; anything longer is a mistake or
/// belongs in several runs.
pub const MAX_RUN_DURATION: Duration = Duration::from_secs(400 * 86_400);
/// Most windows of one fault kind (`broker_outage`, `offline_wave`).
pub const MAX_FAULT_WINDOWS: usize = 100;

/// Thresholds every run is judged by unless its file sets the metric
/// itself: a PASS means the work happened (scenarios/README.md).
pub const DEFAULT_THRESHOLDS: &[(&str, &str)] = &[
    // Arrivals dropped for load (device queues full, `max_in_flight`) or
    // still queued at the end.
    ("arrivals.dropped_rate", "< 1%"),
    // Arrivals whose action had nothing to present.
    ("arrivals.skipped_rate", "< 1%"),
];

struct Cx<'a> {
    map: &'a SourceMap<'a>,
    problems: Vec<Problem>,
    /// Warnings: the file is valid, but part of it cannot do what it says.
    warnings: Vec<Problem>,
}

impl Cx<'_> {
    fn warn(&mut self, span: Range<usize>, path: &str, msg: String, hint: &str) {
        let hint = (!hint.is_empty()).then(|| hint.to_string());
        self.warnings.push(
            self.map
                .problem(ProblemKind::NeverRuns, span, path, msg, hint),
        );
    }

    fn push(&mut self, kind: ProblemKind, span: Range<usize>, path: &str, msg: String, hint: &str) {
        let hint = (!hint.is_empty()).then(|| hint.to_string());
        self.problems
            .push(self.map.problem(kind, span, path, msg, hint));
    }

    fn duration(
        &mut self,
        v: &Option<Sp<DurationText>>,
        default: Duration,
        path: &str,
    ) -> Duration {
        let Some(v) = v else { return default };
        match units::parse_duration(&v.get().0) {
            Ok(d) => d,
            Err(e) => {
                self.push(ProblemKind::BadDuration, v.span(), path, e.message, &e.hint);
                default
            }
        }
    }

    fn rate(&mut self, v: &Sp<RateText>, path: &str) -> f64 {
        match units::parse_rate(&v.get().0) {
            Ok(r) => r,
            Err(e) => {
                self.push(ProblemKind::BadRate, v.span(), path, e.message, &e.hint);
                0.0
            }
        }
    }

    fn time(&mut self, v: &Option<Sp<TimeOfDayText>>, default: Time, path: &str) -> Time {
        let Some(v) = v else { return default };
        match units::parse_time_of_day(&v.get().0) {
            Ok(t) => t,
            Err(e) => {
                self.push(ProblemKind::BadTime, v.span(), path, e.message, &e.hint);
                default
            }
        }
    }

    fn window(
        &mut self,
        v: &Option<Sp<WindowText>>,
        default: DailyWindow,
        path: &str,
    ) -> DailyWindow {
        let Some(v) = v else { return default };
        match units::parse_window(&v.get().0) {
            Ok((start, end)) => DailyWindow { start, end },
            Err(e) => {
                self.push(ProblemKind::BadTime, v.span(), path, e.message, &e.hint);
                default
            }
        }
    }
}

fn val<T: Copy>(v: &Option<Sp<T>>, default: T) -> T {
    v.as_ref().map_or(default, |v| *v.get())
}

fn kind_of(k: RawDeviceKind) -> DeviceKind {
    match k {
        RawDeviceKind::Lock => DeviceKind::Lock,
        RawDeviceKind::Keypad => DeviceKind::Keypad,
        RawDeviceKind::DoorSensor => DeviceKind::DoorSensor,
        RawDeviceKind::DoorPhone => DeviceKind::DoorPhone,
    }
}

fn model_of(m: RawModel) -> Connectivity {
    match m {
        RawModel::Wifi => Connectivity::Wifi,
        RawModel::Ble => Connectivity::Ble,
    }
}

fn weekdays(days: &[Sp<RawWeekday>]) -> Weekdays {
    Weekdays::from_days(days.iter().filter_map(|d| {
        let name = format!("{:?}", d.get()).to_ascii_lowercase();
        parse_weekday(&name)
    }))
}

fn workdays() -> Weekdays {
    Weekdays::from_days(
        ["mon", "tue", "wed", "thu", "fri"]
            .iter()
            .filter_map(|d| parse_weekday(d)),
    )
}

/// The default start of a virtual-clock run: Monday 2026-01-05 08:00 local.
pub const DEFAULT_VIRTUAL_START: DateTime = jiff::civil::date(2026, 1, 5).at(8, 0, 0, 0);

/// A transport/clock combination that cannot run, with a hint; shared by
/// the file check and the CLI's `--transport` override.
pub fn transport_conflict(
    transport: Transport,
    clock: Clock,
    has_broker_outage: bool,
) -> Option<(String, String)> {
    if clock == Clock::Virtual && transport != Transport::Inproc {
        return Some((
            format!(
                "clock = \"virtual\" needs transport = \"inproc\", not \"{}\"",
                transport_name(transport)
            ),
            "virtual time jumps ahead whenever the simulator is idle, which would fire \
             network timeouts; use the real clock for mqtt and http"
                .to_string(),
        ));
    }
    if has_broker_outage && transport != Transport::Mqtt {
        return Some((
            format!(
                "a broker outage needs transport = \"mqtt\", not \"{}\"",
                transport_name(transport)
            ),
            "set transport = \"mqtt\" or remove faults.broker_outage".to_string(),
        ));
    }
    None
}

pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Inproc => "inproc",
        Transport::Mqtt => "mqtt",
        Transport::Http => "http",
    }
}

pub(crate) fn compile(
    raw: RawScenario,
    file: &str,
    map: &SourceMap<'_>,
) -> Result<Scenario, Vec<Problem>> {
    let mut cx = Cx {
        map,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let name = raw.name.get().trim().to_string();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        cx.push(
            ProblemKind::BadValue,
            raw.name.span(),
            "name",
            format!("the name must be 1 to {MAX_NAME_LEN} bytes long"),
            "e.g. name = \"office-morning-rush\"",
        );
    }
    if let Some(d) = raw
        .description
        .as_ref()
        .filter(|d| d.get().len() > MAX_DESCRIPTION_LEN)
    {
        cx.push(
            ProblemKind::BadValue,
            d.span(),
            "description",
            format!(
                "the description is {} bytes long; at most {MAX_DESCRIPTION_LEN}",
                d.get().len()
            ),
            "one line for the reader; longer notes belong in comments (# ...)",
        );
    }
    let transport = val(&raw.transport, Transport::Inproc);
    let clock = val(&raw.clock, Clock::Real);

    let fleet = compile_fleet(
        &mut cx,
        raw.fleet.get(),
        located(&[raw.fleet.span(), raw.fleet.get().devices.span()]),
    );
    let credentials = compile_credentials(&mut cx, raw.credentials.as_ref(), &fleet);
    let phases = compile_phases(&mut cx, &raw.phases);
    let total: Duration = phases.iter().map(|p| p.duration).sum();
    // With no [actions] table, a problem of the default mix is about the
    // fleet (no keypads): it points there.
    let fleet_span = located(&[raw.fleet.get().devices.span(), raw.fleet.span()]);
    let actions = compile_actions(
        &mut cx,
        raw.actions.as_ref(),
        &fleet,
        &credentials,
        fleet_span.clone(),
    );
    let faults = compile_faults(&mut cx, raw.faults.as_ref(), total);

    if let Some((msg, hint)) = transport_conflict(transport, clock, false) {
        let (span, path) = match (&raw.clock, &raw.transport) {
            (Some(c), _) => (c.span(), "clock"),
            (None, Some(t)) => (t.span(), "transport"),
            (None, None) => (0..0, "clock"),
        };
        cx.push(ProblemKind::Conflict, span, path, msg, &hint);
    }
    let outage = raw
        .faults
        .as_ref()
        .and_then(|f| f.get().broker_outage.as_ref());
    if let Some(outage) = outage {
        if let Some((msg, hint)) = transport_conflict(transport, Clock::Real, true) {
            cx.push(
                ProblemKind::Conflict,
                outage.span(),
                "faults.broker_outage",
                msg,
                &hint,
            );
        }
    }

    let start_at = match &raw.start_at {
        Some(s) if clock == Clock::Real => {
            cx.push(
                ProblemKind::Conflict,
                s.span(),
                "start_at",
                "start_at applies to the virtual clock only".to_string(),
                "set clock = \"virtual\", or remove start_at to start at the current time",
            );
            None
        }
        Some(s) => s.get().0.trim().replace(' ', "T").parse::<DateTime>().ok(),
        None if clock == Clock::Virtual => Some(DEFAULT_VIRTUAL_START),
        None => None,
    };

    let judge_simulated_latency = match &raw.judge_simulated_latency {
        Some(j) if clock == Clock::Real => {
            cx.push(
                ProblemKind::Conflict,
                j.span(),
                "judge_simulated_latency",
                "judge_simulated_latency applies to the virtual clock only".to_string(),
                "real-clock latencies are measured and always judged; remove the field",
            );
            false
        }
        Some(j) => *j.get(),
        None => false,
    };

    let mut thresholds: Vec<(usize, Threshold)> = Vec::new();
    if let Some(ths) = &raw.thresholds {
        for (k, v) in ths.get() {
            let path = format!("thresholds.{:?}", k.get());
            match Threshold::parse(k.get(), &v.get().0) {
                Ok(t) => {
                    // A threshold the transport can never measure would
                    // only ever fail "not measured".
                    let name = transport_name(transport);
                    if let Some((msg, hint)) = super::threshold::transport_problem(k.get(), name) {
                        cx.push(ProblemKind::BadThreshold, k.span(), &path, msg, &hint);
                    }
                    thresholds.push((k.span().start, t))
                }
                Err(e) => {
                    let span = if e.in_metric { k.span() } else { v.span() };
                    cx.push(ProblemKind::BadThreshold, span, &path, e.message, &e.hint);
                }
            }
        }
    }
    // Report thresholds in the order the file lists them, then the defaults.
    thresholds.sort_by_key(|(at, _)| *at);
    for (metric, expr) in DEFAULT_THRESHOLDS {
        if thresholds.iter().all(|(_, t)| t.metric != *metric) {
            let mut t = Threshold::parse(metric, expr).expect("default thresholds parse");
            t.default = true;
            thresholds.push((usize::MAX, t));
        }
    }
    warn_never_runs(
        &mut cx,
        raw.actions.as_ref(),
        &NeverRunsCx {
            mix: &actions,
            fleet: &fleet,
            creds: &credentials,
            transport,
            total,
        },
    );

    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    Ok(Scenario {
        file: file.to_string(),
        name,
        description: raw
            .description
            .map(|d| d.get().trim().to_string())
            .unwrap_or_default(),
        seed: raw.seed.map(|s| *s.get()),
        transport,
        clock,
        start_at,
        judge_simulated_latency,
        fleet,
        credentials,
        phases,
        actions,
        faults,
        thresholds: thresholds.into_iter().map(|(_, t)| t).collect(),
        warnings: cx.warnings,
    })
}

fn compile_fleet(cx: &mut Cx, f: &RawFleet, span: Range<usize>) -> Fleet {
    let sites = val(&f.sites, 1);
    let time_zones = match (&f.timezone, &f.timezones) {
        (Some(_), Some(many)) => {
            cx.push(
                ProblemKind::Conflict,
                many.span(),
                "fleet.timezones",
                "both `timezone` and `timezones` are set".to_string(),
                "keep one: `timezone` for every site, or `timezones` for sites in turn",
            );
            vec!["UTC".to_string()]
        }
        (Some(one), None) => vec![one.get().0.clone()],
        (None, Some(many)) if many.get().is_empty() => {
            cx.push(
                ProblemKind::BadValue,
                many.span(),
                "fleet.timezones",
                "`timezones` is empty".to_string(),
                "list at least one, e.g. [\"Europe/Berlin\"]",
            );
            vec!["UTC".to_string()]
        }
        (None, Some(many)) => many.get().iter().map(|z| z.get().0.clone()).collect(),
        (None, None) => vec!["UTC".to_string()],
    };

    let defaults = LockoutPolicy::default();
    let lockout = match &f.lockout {
        None => defaults,
        Some(l) => {
            let l = l.get();
            let secs = |cx: &mut Cx, v: &Option<Sp<DurationText>>, def: u32, path: &str| -> u32 {
                let d = cx.duration(v, Duration::from_secs(def.into()), path);
                if d < Duration::from_secs(1) || d.subsec_nanos() != 0 || d.as_secs() > 86_400 {
                    if let Some(v) = v {
                        cx.push(
                            ProblemKind::BadValue,
                            v.span(),
                            path,
                            format!("`{}` must be whole seconds from 1s to 1d", v.get().0),
                            "keypads count lockout time in seconds, e.g. \"30s\"",
                        );
                    }
                    return def;
                }
                d.as_secs() as u32
            };
            LockoutPolicy {
                max_wrong: val(&l.max_wrong, defaults.max_wrong),
                window_s: secs(cx, &l.window, defaults.window_s, "fleet.lockout.window"),
                lockout_s: secs(
                    cx,
                    &l.locked_for,
                    defaults.lockout_s,
                    "fleet.lockout.locked_for",
                ),
            }
        }
    };

    let mut devices = Vec::new();
    if f.devices.get().is_empty() {
        cx.push(
            ProblemKind::BadValue,
            f.devices.span(),
            "fleet.devices",
            "the fleet has no devices".to_string(),
            "add a [[fleet.devices]] table with kind and per_site",
        );
    }
    for (i, g) in f.devices.get().iter().enumerate() {
        let path = format!("fleet.devices[{i}]");
        devices.push(compile_group(cx, g.get(), &path));
    }
    let fleet = Fleet {
        sites,
        time_zones,
        six_digit_pins: val(&f.six_digit_pins, false),
        custom_pins: val(&f.custom_pins, false),
        lockout,
        devices,
    };
    if fleet.device_count() > MAX_DEVICES {
        cx.push(
            ProblemKind::BadValue,
            span,
            "fleet",
            format!(
                "the fleet has {} devices; one process simulates at most {MAX_DEVICES}",
                fleet.device_count()
            ),
            "shard the fleet across processes with --shard i/n",
        );
    }
    fleet
}

fn compile_group(cx: &mut Cx, g: &RawDeviceGroup, path: &str) -> DeviceGroup {
    let kind = kind_of(*g.kind.get());
    let model = model_of(val(&g.model, RawModel::Wifi));
    let mut with = Vec::new();
    if let Some(w) = &g.with {
        if !matches!(kind, DeviceKind::Lock | DeviceKind::DoorPhone) && !w.get().is_empty() {
            cx.push(
                ProblemKind::Conflict,
                w.span(),
                &format!("{path}.with"),
                format!("a {} has no devices mounted with it", kind.as_str()),
                "put `with` on the lock or door phone of the door",
            );
        }
        for (j, k) in w.get().iter().enumerate() {
            let wk = kind_of(*k.get());
            let p = format!("{path}.with[{j}]");
            if wk == kind || with.contains(&wk) {
                cx.push(
                    ProblemKind::BadValue,
                    k.span(),
                    &p,
                    format!("`{}` is listed twice on this door", wk.as_str()),
                    "each door has at most one device of each kind",
                );
            } else {
                with.push(wk);
            }
        }
    }
    // Parameters that only mean something for some kinds: say so rather
    // than silently ignoring them.
    if kind != DeviceKind::Lock {
        let lock_only = [
            ("relock_after", g.relock_after.as_ref().map(Sp::span)),
            (
                "battery_start_pct",
                g.battery_start_pct.as_ref().map(Sp::span),
            ),
            (
                "battery_drain_pct_per_day",
                g.battery_drain_pct_per_day.as_ref().map(Sp::span),
            ),
            (
                "battery_pct_per_unlock",
                g.battery_pct_per_unlock.as_ref().map(Sp::span),
            ),
            ("battery_low_pct", g.battery_low_pct.as_ref().map(Sp::span)),
            ("guest", g.guest.as_ref().map(Sp::span)),
        ];
        for (field, span) in lock_only {
            if let Some(span) = span {
                cx.push(
                    ProblemKind::Conflict,
                    span,
                    &format!("{path}.{field}"),
                    format!("`{field}` does not apply to a {}", kind.as_str()),
                    "lock behaviour applies to groups with kind = \"lock\"",
                );
            }
        }
    }
    if let Some(cs) = &g.code_slots {
        if !matches!(kind, DeviceKind::Lock | DeviceKind::Keypad) {
            cx.push(
                ProblemKind::Conflict,
                cs.span(),
                &format!("{path}.code_slots"),
                format!("`code_slots` does not apply to a {}", kind.as_str()),
                "code slots apply to locks and keypads",
            );
        }
    }
    if let (Some(s), Connectivity::Wifi) = (&g.sync_every, model) {
        cx.push(
            ProblemKind::Conflict,
            s.span(),
            &format!("{path}.sync_every"),
            "`sync_every` applies to BLE devices only".to_string(),
            "Wi-Fi devices sync within seconds; set model = \"ble\" or remove sync_every",
        );
    }
    let d = LockBehaviour::default();
    let guest = g.guest.as_ref().map_or(GuestSettings::default(), |gs| {
        let gs = gs.get();
        GuestSettings {
            guest_can_open_remotely: val(&gs.can_open_remotely, false),
            prevent_access_until_checked_in: val(&gs.prevent_access_until_checked_in, false),
            revoke_access_on_check_out: val(&gs.revoke_access_on_check_out, false),
        }
    });
    let behaviour = LockBehaviour {
        relock_after: cx.duration(
            &g.relock_after,
            d.relock_after,
            &format!("{path}.relock_after"),
        ),
        code_slots: val(&g.code_slots, d.code_slots),
        battery_start_pct: val(&g.battery_start_pct, d.battery_start_pct),
        battery_drain_pct_per_day: val(&g.battery_drain_pct_per_day, d.battery_drain_pct_per_day),
        battery_pct_per_unlock: val(&g.battery_pct_per_unlock, d.battery_pct_per_unlock),
        battery_low_pct: val(&g.battery_low_pct, d.battery_low_pct),
        offline_chance_per_hour: val(&g.offline_chance_per_hour, d.offline_chance_per_hour),
        offline_for: cx.duration(
            &g.offline_for,
            d.offline_for,
            &format!("{path}.offline_for"),
        ),
        sync_every: cx.duration(&g.sync_every, d.sync_every, &format!("{path}.sync_every")),
        guest,
    };
    DeviceGroup {
        kind,
        model,
        per_site: *g.per_site.get(),
        with,
        behaviour,
    }
}

/// The first of `spans` that points somewhere: a table TOML made
/// implicitly (`[[fleet.devices]]` with no `[fleet]`) has no span.
fn located(spans: &[Range<usize>]) -> Range<usize> {
    spans
        .iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or(0..0)
}

fn need(cx: &mut Cx, ok: bool, span: Range<usize>, path: &str, msg: String, hint: &str) {
    if !ok {
        cx.push(ProblemKind::Conflict, span, path, msg, hint);
    }
}

fn compile_credentials(cx: &mut Cx, c: Option<&Sp<RawCredentials>>, fleet: &Fleet) -> Credentials {
    let empty;
    let c = match c {
        Some(c) => c.get(),
        None => {
            empty = RawCredentials {
                pins_per_door: None,
                mix: None,
                six_digit_share: None,
                custom_share: None,
                expired_pins_per_door: None,
                cards_per_door: None,
                ble_passes_per_door: None,
                qr_keys_per_door: None,
                expired_qr_keys_per_door: None,
                fallback_codes_per_lock: None,
                temporary: None,
                recurring: None,
                delivery: None,
                visitor: None,
                stays: None,
            };
            &empty
        }
    };
    let mix = match &c.mix {
        None => PinMix {
            permanent: 1.0,
            ..PinMix::default()
        },
        Some(m) => {
            let m = m.get();
            PinMix {
                permanent: val(&m.permanent, 0.0),
                temporary: val(&m.temporary, 0.0),
                recurring: val(&m.recurring, 0.0),
                delivery: val(&m.delivery, 0.0),
                stay: val(&m.stay, 0.0),
            }
        }
    };
    if let Some(s) = c.six_digit_share.as_ref().filter(|s| *s.get() > 0.0) {
        need(
            cx,
            fleet.six_digit_pins,
            s.span(),
            "credentials.six_digit_share",
            "6-digit PINs are not enabled on the sites".to_string(),
            "set fleet.six_digit_pins = true",
        );
    }
    if let Some(s) = c.custom_share.as_ref().filter(|s| *s.get() > 0.0) {
        need(
            cx,
            fleet.custom_pins,
            s.span(),
            "credentials.custom_share",
            "custom PINs are not enabled on the sites".to_string(),
            "set fleet.custom_pins = true",
        );
    }
    let temporary_valid_for = cx.duration(
        &c.temporary.as_ref().and_then(|t| t.get().valid_for.clone()),
        Duration::from_secs(8 * 3600),
        "credentials.temporary.valid_for",
    );
    let recurring = match &c.recurring {
        None => Recurring {
            days: workdays(),
            window: DailyWindow {
                start: Time::constant(8, 0, 0, 0),
                end: Time::constant(18, 0, 0, 0),
            },
        },
        Some(r) => {
            let r = r.get();
            let days = match &r.days {
                None => workdays(),
                Some(d) if d.get().is_empty() => {
                    cx.push(
                        ProblemKind::BadValue,
                        d.span(),
                        "credentials.recurring.days",
                        "a recurring schedule needs at least one weekday".to_string(),
                        "e.g. days = [\"mon\", \"wed\", \"fri\"]",
                    );
                    workdays()
                }
                Some(d) => weekdays(d.get()),
            };
            let default_window = DailyWindow {
                start: Time::constant(8, 0, 0, 0),
                end: Time::constant(18, 0, 0, 0),
            };
            Recurring {
                days,
                window: cx.window(&r.window, default_window, "credentials.recurring.window"),
            }
        }
    };
    let delivery = match &c.delivery {
        None => Delivery {
            valid_for: Duration::from_secs(2 * 3600),
            max_uses: Some(1),
        },
        Some(d) => {
            let d = d.get();
            Delivery {
                valid_for: cx.duration(
                    &d.valid_for,
                    Duration::from_secs(2 * 3600),
                    "credentials.delivery.valid_for",
                ),
                max_uses: Some(val(&d.max_uses, 1)).filter(|n| *n > 0),
            }
        }
    };
    let visitor = compile_visitor(cx, c.visitor.as_ref());
    let stays = match &c.stays {
        None => Stays {
            nights: 3,
            check_in: Time::constant(15, 0, 0, 0),
            check_out: Time::constant(11, 0, 0, 0),
            early_arrival_share: 0.0,
            late_departure_share: 0.0,
        },
        Some(s) => {
            let s = s.get();
            Stays {
                nights: val(&s.nights, 3),
                check_in: cx.time(
                    &s.check_in,
                    Time::constant(15, 0, 0, 0),
                    "credentials.stays.check_in",
                ),
                check_out: cx.time(
                    &s.check_out,
                    Time::constant(11, 0, 0, 0),
                    "credentials.stays.check_out",
                ),
                early_arrival_share: val(&s.early_arrival_share, 0.0),
                late_departure_share: val(&s.late_departure_share, 0.0),
            }
        }
    };
    if let Some(s) = &c.stays {
        need(
            cx,
            mix.stay > 0.0,
            s.span(),
            "credentials.stays",
            "guest stays are configured but the PIN mix has no `stay` share".to_string(),
            "add stay = <fraction> to credentials.mix",
        );
    }
    Credentials {
        pins_per_door: val(&c.pins_per_door, 10),
        mix,
        six_digit_share: val(&c.six_digit_share, 0.0),
        custom_share: val(&c.custom_share, 0.0),
        expired_pins_per_door: val(&c.expired_pins_per_door, 0),
        cards_per_door: val(&c.cards_per_door, 0),
        ble_passes_per_door: val(&c.ble_passes_per_door, 0),
        qr_keys_per_door: val(&c.qr_keys_per_door, 0),
        expired_qr_keys_per_door: val(&c.expired_qr_keys_per_door, 0),
        fallback_codes_per_lock: val(&c.fallback_codes_per_lock, 0),
        temporary_valid_for,
        recurring,
        delivery,
        visitor,
        stays,
    }
}

fn compile_visitor(cx: &mut Cx, v: Option<&Sp<RawVisitor>>) -> Visitor {
    let default_window = DailyWindow {
        start: Time::constant(8, 0, 0, 0),
        end: Time::constant(20, 0, 0, 0),
    };
    let Some(v) = v else {
        return Visitor {
            repeat: Repeat::Never,
            each_door_count: Some(1),
            valid_for: Duration::from_secs(86_400),
            days: None,
            window: None,
        };
    };
    let v = v.get();
    let repeat = match val(&v.repeat, RawRepeat::Never) {
        RawRepeat::Never => Repeat::Never,
        RawRepeat::Daily => Repeat::Daily,
        RawRepeat::Weekly => Repeat::Weekly,
    };
    if let (Some(n), false) = (&v.each_door_count, repeat == Repeat::Never) {
        cx.push(
            ProblemKind::Conflict,
            n.span(),
            "credentials.visitor.each_door_count",
            "'each door counts' applies only with repeat = \"never\"".to_string(),
            "remove each_door_count, or set repeat = \"never\"",
        );
    }
    if let (Some(d), false) = (&v.days, repeat == Repeat::Weekly) {
        cx.push(
            ProblemKind::Conflict,
            d.span(),
            "credentials.visitor.days",
            "weekdays apply only with repeat = \"weekly\"".to_string(),
            "remove days, or set repeat = \"weekly\"",
        );
    }
    if let (Some(w), Repeat::Never) = (&v.window, repeat) {
        cx.push(
            ProblemKind::Conflict,
            w.span(),
            "credentials.visitor.window",
            "a daily window applies only with repeat = \"daily\" or \"weekly\"".to_string(),
            "remove window, or set repeat = \"daily\"",
        );
    }
    let days = match (&v.days, repeat) {
        (Some(d), Repeat::Weekly) if d.get().is_empty() => {
            cx.push(
                ProblemKind::BadValue,
                d.span(),
                "credentials.visitor.days",
                "weekly repeat needs at least one weekday".to_string(),
                "e.g. days = [\"sat\", \"sun\"]",
            );
            None
        }
        (Some(d), Repeat::Weekly) => Some(weekdays(d.get())),
        (None, Repeat::Weekly) => Some(workdays()),
        _ => None,
    };
    let window = match repeat {
        Repeat::Never => None,
        _ => Some(cx.window(&v.window, default_window, "credentials.visitor.window")),
    };
    Visitor {
        repeat,
        each_door_count: (repeat == Repeat::Never).then(|| val(&v.each_door_count, 1)),
        valid_for: cx.duration(
            &v.valid_for,
            Duration::from_secs(86_400),
            "credentials.visitor.valid_for",
        ),
        days,
        window,
    }
}

fn compile_phases(cx: &mut Cx, phases: &Sp<Vec<Sp<RawPhase>>>) -> Vec<Phase> {
    if phases.get().is_empty() {
        cx.push(
            ProblemKind::BadValue,
            phases.span(),
            "phases",
            "there are no phases".to_string(),
            "add a [[phases]] table with a duration and arrivals or people",
        );
    }
    if let Some(extra) = phases.get().get(MAX_PHASES) {
        cx.push(
            ProblemKind::BadValue,
            extra.span(),
            &format!("phases[{MAX_PHASES}]"),
            format!(
                "the scenario has {} phases; at most {MAX_PHASES}",
                phases.get().len()
            ),
            "merge phases with the same load, or split the run into several scenarios",
        );
    }
    let mut out = Vec::new();
    let mut total = Duration::ZERO;
    for (i, p) in phases.get().iter().enumerate() {
        let span = p.span();
        let p = p.get();
        let path = format!("phases[{i}]");
        let duration = cx.duration(
            &Some(p.duration.clone()),
            Duration::ZERO,
            &format!("{path}.duration"),
        );
        if duration.is_zero() {
            cx.push(
                ProblemKind::BadValue,
                p.duration.span(),
                &format!("{path}.duration"),
                "a phase must last longer than 0s".to_string(),
                "e.g. duration = \"2m\"",
            );
        }
        // Reported once, at the phase that crosses the limit.
        let before = total;
        total = total.saturating_add(duration);
        if before <= MAX_RUN_DURATION && total > MAX_RUN_DURATION {
            cx.push(
                ProblemKind::BadValue,
                p.duration.span(),
                &format!("{path}.duration"),
                format!(
                    "the phases last {} up to here; a run lasts at most {}",
                    units::format_duration(total),
                    units::format_duration(MAX_RUN_DURATION)
                ),
                "shorten the phases, or split the run into several scenarios \
                 (a virtual-clock run of 400d takes minutes; more is a mistake)",
            );
        }
        if let Some(n) = p
            .name
            .as_ref()
            .filter(|n| n.get().trim().is_empty() || n.get().len() > MAX_NAME_LEN)
        {
            cx.push(
                ProblemKind::BadValue,
                n.span(),
                &format!("{path}.name"),
                format!("a phase name must be 1 to {MAX_NAME_LEN} bytes long"),
                "e.g. name = \"peak\"; without a name the phase is called phase-N",
            );
        }
        let load = match (&p.arrivals, &p.people) {
            (Some(_), Some(people)) => {
                cx.push(
                    ProblemKind::Conflict,
                    people.span(),
                    &format!("{path}.people"),
                    "a phase has either `arrivals` (open model) or `people` (closed model), not both"
                        .to_string(),
                    "arrivals = \"100/s\" sets a rate; people = 50 keeps 50 people busy",
                );
                None
            }
            (None, None) => {
                cx.push(
                    ProblemKind::MissingField,
                    span.clone(),
                    &format!("{path}.arrivals"),
                    "a phase needs `arrivals` (open model) or `people` (closed model)".to_string(),
                    "e.g. arrivals = \"100/s\", arrivals = { from = \"10/s\", to = \"500/s\" } or people = 50",
                );
                None
            }
            (Some(a), None) => {
                if let Some(t) = &p.think_time {
                    cx.push(
                        ProblemKind::Conflict,
                        t.span(),
                        &format!("{path}.think_time"),
                        "`think_time` belongs to the closed model (`people`)".to_string(),
                        "with `arrivals`, the rate alone sets the pace",
                    );
                }
                let (from, to) = match a.get() {
                    RawArrivals::Constant(r) => {
                        let r = cx.rate(&Sp::new(a.span(), r.clone()), &format!("{path}.arrivals"));
                        (r, r)
                    }
                    RawArrivals::Ramp(ramp) => (
                        cx.rate(&ramp.from, &format!("{path}.arrivals.from")),
                        cx.rate(&ramp.to, &format!("{path}.arrivals.to")),
                    ),
                };
                if from == 0.0 && to == 0.0 {
                    cx.push(
                        ProblemKind::BadValue,
                        a.span(),
                        &format!("{path}.arrivals"),
                        "nobody arrives in this phase (rate 0)".to_string(),
                        "give a rate above 0, e.g. \"10/s\"",
                    );
                }
                Some(Load::Open {
                    from_per_s: from,
                    to_per_s: to,
                    max_in_flight: val(&p.max_in_flight, 10_000),
                })
            }
            (None, Some(people)) => {
                if let Some(m) = &p.max_in_flight {
                    cx.push(
                        ProblemKind::Conflict,
                        m.span(),
                        &format!("{path}.max_in_flight"),
                        "`max_in_flight` belongs to the open model (`arrivals`)".to_string(),
                        "with `people`, at most that many actions are in flight",
                    );
                }
                Some(Load::Closed {
                    people: *people.get(),
                    think_time: cx.duration(
                        &p.think_time,
                        Duration::from_secs(1),
                        &format!("{path}.think_time"),
                    ),
                })
            }
        };
        out.push(Phase {
            name: p
                .name
                .as_ref()
                .map_or_else(|| format!("phase-{}", i + 1), |n| n.get().clone()),
            duration,
            load: load.unwrap_or(Load::Closed {
                people: 1,
                think_time: Duration::from_secs(1),
            }),
        });
    }
    out
}

fn compile_actions(
    cx: &mut Cx,
    a: Option<&Sp<RawActions>>,
    fleet: &Fleet,
    creds: &Credentials,
    fleet_span: Range<usize>,
) -> ActionMix {
    let Some(a) = a else {
        let mix = ActionMix(vec![(Action::PinValid, 1.0)]);
        check_action_needs(cx, Action::PinValid, Err(fleet_span), fleet, creds);
        return mix;
    };
    let mut mix = Vec::new();
    for (action, v) in action_fields(a.get()) {
        if let Some(v) = v.as_ref().filter(|v| *v.get() > 0.0) {
            check_action_needs(cx, action, Ok(v.span()), fleet, creds);
            mix.push((action, *v.get()));
        }
    }
    ActionMix(mix)
}

/// Each action of `[actions]` with its fraction as written.
fn action_fields(a: &RawActions) -> [(Action, &Option<Sp<f64>>); 13] {
    [
        (Action::PinValid, &a.pin_valid),
        (Action::PinWrong, &a.pin_wrong),
        (Action::PinExpired, &a.pin_expired),
        (Action::QrValid, &a.qr_valid),
        (Action::QrReplayed, &a.qr_replayed),
        (Action::QrExpired, &a.qr_expired),
        (Action::Card, &a.card),
        (Action::Ble, &a.ble),
        (Action::RemoteOpen, &a.remote_open),
        (Action::CodeCreate, &a.code_create),
        (Action::CodeChange, &a.code_change),
        (Action::CodeRevoke, &a.code_revoke),
        (Action::SyncStorm, &a.sync_storm),
    ]
}

/// What [`warn_never_runs`] judges by: the compiled parts of the scenario.
struct NeverRunsCx<'a> {
    mix: &'a ActionMix,
    fleet: &'a Fleet,
    creds: &'a Credentials,
    transport: Transport,
    /// The phases' total length.
    total: Duration,
}

/// Warns about actions in the mix that can never run with the scenario's
/// credentials, durations and transport: every arrival that draws one
/// would be skipped as "nothing to present" (and fail the default
/// `arrivals.skipped_rate` threshold). Rules the file cannot satisfy at
/// all (a QR action without door phones) are errors instead
/// ([`check_action_needs`]).
fn warn_never_runs(cx: &mut Cx, raw: Option<&Sp<RawActions>>, s: &NeverRunsCx) {
    let span_of = |a: Action| -> Range<usize> {
        raw.and_then(|r| {
            action_fields(r.get())
                .into_iter()
                .find(|(x, _)| *x == a)
                .and_then(|(_, v)| v.as_ref().map(Sp::span))
        })
        .unwrap_or(0..0)
    };
    let c = s.creds;
    let v = &c.visitor;
    let fmt = units::format_duration;
    for (a, _) in &s.mix.0 {
        let (msg, hint) = match a {
            // Keys are issued at the start (and when a visitor finds none
            // usable) and valid for `valid_for` from then; with a daily or
            // weekly window a key is also refused outside it, which
            // `qr_expired` uses too.
            Action::QrExpired
                if c.expired_qr_keys_per_door == 0
                    && v.repeat == Repeat::Never
                    && v.valid_for >= s.total =>
            {
                (
                    format!(
                        "`qr_expired` can never run: every visitor QR key is valid for {} from when it is issued, and the phases last {}, so no key expires during the run",
                        fmt(v.valid_for),
                        fmt(s.total)
                    ),
                    "set credentials.expired_qr_keys_per_door (keys expired before the run), or a credentials.visitor.valid_for shorter than the run",
                )
            }
            Action::QrReplayed if v.repeat != Repeat::Never => (
                "`qr_replayed` can never run: repeating visitor keys (daily or weekly) have no use limit, so none is ever used up".to_string(),
                "set credentials.visitor.repeat = \"never\" with each_door_count = 1 or more",
            ),
            Action::QrReplayed if s.mix.fraction(Action::QrValid) == 0.0 => (
                "`qr_replayed` can never run: nobody uses a key up (`qr_valid` is not in the mix)".to_string(),
                "add qr_valid to [actions]",
            ),
            Action::RemoteOpen if s.transport == Transport::Http => (
                "`remote_open` can never run over http: the protocol has no command channel to a device there".to_string(),
                "use transport = \"mqtt\" or \"inproc\", or remove remote_open",
            ),
            Action::RemoteOpen
                if !s.fleet.devices.iter().any(|g| {
                    g.kind == DeviceKind::Lock && g.model == Connectivity::Wifi
                }) =>
            {
                (
                    "`remote_open` can never run: it opens Wi-Fi locks, and the fleet has none (Bluetooth locks hear the platform only through a gateway)".to_string(),
                    "add a lock group with model = \"wifi\"",
                )
            }
            Action::CodeChange | Action::CodeRevoke
                if c.pins_per_door == 0 && s.mix.fraction(Action::CodeCreate) == 0.0 =>
            {
                (
                    format!(
                        "`{}` can never run: no door has a PIN to act on (pins_per_door = 0 and no code_create)",
                        a.as_str()
                    ),
                    "set credentials.pins_per_door above 0, or add code_create",
                )
            }
            _ => continue,
        };
        let path = format!("actions.{}", a.as_str());
        cx.warn(span_of(*a), &path, msg, hint);
    }
}

/// Each action needs something in the fleet or among the credentials.
/// `span` is the action's fraction, or (`Err`) the fleet's for the
/// default mix.
fn check_action_needs(
    cx: &mut Cx,
    a: Action,
    span: Result<Range<usize>, Range<usize>>,
    fleet: &Fleet,
    c: &Credentials,
) {
    let path = format!("actions.{}", a.as_str());
    let implied = if span.is_ok() {
        ""
    } else {
        " (with no [actions] table, everyone types a valid PIN)"
    };
    let span = span.unwrap_or_else(|fleet| fleet);
    let pins = fleet.devices.iter().any(DeviceGroup::takes_pins);
    let door_phones = fleet.has_kind(DeviceKind::DoorPhone);
    let locks = fleet.has_kind(DeviceKind::Lock);
    let ble_locks = fleet
        .devices
        .iter()
        .any(|g| g.kind == DeviceKind::Lock && g.model == Connectivity::Ble);
    let mut needs: Vec<(bool, &str, &str)> = Vec::new();
    match a {
        Action::PinValid
        | Action::PinWrong
        | Action::CodeCreate
        | Action::CodeChange
        | Action::CodeRevoke => {
            needs.push((
                pins,
                "a keypad or door phone to type PINs on",
                "add with = [\"keypad\"] to a lock group, or a keypad or door_phone group",
            ));
        }
        Action::PinExpired => {
            needs.push((
                pins,
                "a keypad or door phone to type PINs on",
                "add with = [\"keypad\"] to a lock group",
            ));
            needs.push((
                c.expired_pins_per_door > 0,
                "expired PINs",
                "set credentials.expired_pins_per_door",
            ));
        }
        Action::QrValid | Action::QrReplayed | Action::QrExpired => {
            needs.push((
                door_phones,
                "door phones (they scan QR codes)",
                "add a door_phone group, or with = [\"door_phone\"] on a lock group",
            ));
            needs.push((
                c.qr_keys_per_door > 0
                    || (a == Action::QrExpired && c.expired_qr_keys_per_door > 0),
                "visitor QR keys",
                "set credentials.qr_keys_per_door",
            ));
        }
        Action::Card => {
            needs.push((
                pins,
                "a card reader (keypad or door phone)",
                "add a keypad or door_phone",
            ));
            needs.push((
                c.cards_per_door > 0,
                "RF cards",
                "set credentials.cards_per_door",
            ));
        }
        Action::Ble => {
            needs.push((
                ble_locks,
                "BLE locks",
                "add a lock group with model = \"ble\"",
            ));
            needs.push((
                c.ble_passes_per_door > 0,
                "BLE passes",
                "set credentials.ble_passes_per_door",
            ));
        }
        Action::RemoteOpen | Action::SyncStorm => {
            needs.push((locks, "locks", "add a lock group"));
        }
    }
    if matches!(a, Action::PinValid) {
        needs.push((
            c.pins_per_door > 0,
            "PINs",
            "set credentials.pins_per_door above 0",
        ));
    }
    for (ok, what, hint) in needs {
        need(
            cx,
            ok,
            span.clone(),
            &path,
            format!("`{}` needs {what}{implied}", a.as_str()),
            hint,
        );
    }
}

fn compile_faults(cx: &mut Cx, f: Option<&Sp<RawFaults>>, total: Duration) -> Faults {
    let Some(f) = f else {
        return Faults::default();
    };
    let f = f.get();
    let window = |cx: &mut Cx, at: &Sp<DurationText>, for_: &Sp<DurationText>, path: &str| {
        let at_d = cx.duration(&Some(at.clone()), Duration::ZERO, &format!("{path}.at"));
        let for_d = cx.duration(&Some(for_.clone()), Duration::ZERO, &format!("{path}.for"));
        if at_d >= total && !total.is_zero() {
            cx.push(
                ProblemKind::BadValue,
                at.span(),
                &format!("{path}.at"),
                format!(
                    "starts at {} but the phases end at {}",
                    units::format_duration(at_d),
                    units::format_duration(total)
                ),
                "faults are timed from the start of the run",
            );
        }
        if for_d.is_zero() {
            cx.push(
                ProblemKind::BadValue,
                for_.span(),
                &format!("{path}.for"),
                "a fault must last longer than 0s".to_string(),
                "e.g. for = \"20s\"",
            );
        }
        FaultWindow {
            at: at_d,
            for_: for_d,
        }
    };
    let too_many = |cx: &mut Cx, windows: usize, span: Range<usize>, path: &str| {
        if windows > MAX_FAULT_WINDOWS {
            cx.push(
                ProblemKind::BadValue,
                span,
                path,
                format!("{windows} windows; at most {MAX_FAULT_WINDOWS}"),
                "each window is a timer for the whole fleet; merge adjacent windows",
            );
        }
    };
    let mut broker_outages = Vec::new();
    if let Some(o) = &f.broker_outage {
        too_many(cx, o.get().0.len(), o.span(), "faults.broker_outage");
        let many = o.get().0.len() > 1;
        for (i, w) in o.get().0.iter().enumerate() {
            let path = if many {
                format!("faults.broker_outage[{i}]")
            } else {
                "faults.broker_outage".to_string()
            };
            broker_outages.push(window(cx, &w.at, &w.for_, &path));
        }
    }
    let mut offline_waves = Vec::new();
    if let Some(o) = &f.offline_wave {
        too_many(cx, o.get().0.len(), o.span(), "faults.offline_wave");
        let many = o.get().0.len() > 1;
        for (i, w) in o.get().0.iter().enumerate() {
            let path = if many {
                format!("faults.offline_wave[{i}]")
            } else {
                "faults.offline_wave".to_string()
            };
            offline_waves.push(OfflineWave {
                window: window(cx, &w.at, &w.for_, &path),
                share: *w.share.get(),
                model: w.model.as_ref().map(|m| model_of(*m.get())),
            });
        }
    }
    Faults {
        broker_outages,
        offline_waves,
        motor_blocked: val(&f.motor_blocked, 0.0),
        engine_added_latency: cx.duration(
            &f.engine_added_latency,
            Duration::ZERO,
            "faults.engine_added_latency",
        ),
    }
}
