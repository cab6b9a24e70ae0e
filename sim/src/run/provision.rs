//! Provisioning a scenario's fleet and credentials in the engine, through
//! `Engine::apply(&Actor::System, ..)`, and writing down at the same time
//! what the oracle must know about every credential (the truth table).
//!
//! Every secret the simulator presents is chosen here from the run's seed
//! (PIN digits, card numbers) or is the signed token the engine issued for
//! the credential (QR, BLE), so the truth comes from the scenario, not from
//! the engine's decisions. All sites are provisioned in every shard, so ids
//! and secrets are the same whichever slice of the fleet a process runs.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use reference_server::domain::{
    Actor, Connectivity, CredentialId, DeviceId, DeviceKind, DoorId, FloorScope, GuestSettings,
    HolderId, HolderKind, OrgId, Pin, Repeat, Schedule, Secret, SiteId, SiteSettings, StayId,
    Weekdays,
};
use reference_server::engine::{Command, Issue, Outcome, PinSpec, SecretSpec};
use reference_server::{Engine, EngineError};
use rustc_hash::FxHashSet;

use super::oracle::{Oracle, Truth, TruthId, TruthKind, Validity};
use crate::clock::stream_rng;
use crate::devices::fleet::{
    self, CommandSink, DoorKit, DoorPlan, DoorSpec, FleetError, Mount, Provisioned,
};
use crate::scenario::{DeviceGroup, Scenario, Stays};

/// Seeded stream of a site's guest stays (offsets, PINs, early and late
/// guests), apart from the site's other secrets.
const STAY_STREAM: u64 = 0x57A7_0000;
/// How far from check-in (check-out) an early (late) guest may try when
/// the turnover day leaves no gap between the two times.
const DEFAULT_TURNOVER_S: i64 = 3_600;

/// A door as the load generator sees it.
#[derive(Clone, Debug)]
pub struct DoorInfo {
    pub door: DoorId,
    /// 0-based site index (shards split by it).
    pub site_index: u32,
    pub plan: DoorPlan,
    /// Visitor holder of the door (QR keys issued during the run).
    pub visitor: HolderId,
    /// Residents' holder of the door (PINs created during the run).
    pub member: HolderId,
    /// Valid PINs (truth ids) and expired ones.
    pub pins: Vec<usize>,
    pub expired_pins: Vec<usize>,
    pub cards: Vec<usize>,
    pub ble: Vec<usize>,
    pub qr: Vec<usize>,
    /// Visitor QR keys whose validity ended before the run.
    pub expired_qr: Vec<usize>,
}

/// One guest stay of the run: the host checks the guest in and out at
/// the booked times, and some guests try their PIN early or late.
#[derive(Clone, Debug)]
pub struct StayPlan {
    pub stay: StayId,
    /// Index into [`Provisioning::doors`].
    pub door: usize,
    pub truth: TruthId,
    pub check_in: Timestamp,
    pub check_out: Timestamp,
    /// The stay had begun at provisioning: the guest is checked in.
    pub checked_in: bool,
    pub early_try: Option<Timestamp>,
    pub late_try: Option<Timestamp>,
}

/// What provisioning produced.
pub struct Provisioning {
    pub fleet: Provisioned,
    pub doors: Vec<DoorInfo>,
    pub oracle: Oracle,
    /// Guest stays in time order per door chain.
    pub stays: Vec<StayPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("provisioning: {0}")]
    Engine(#[from] EngineError),
    #[error("engine answered {0:?} where an id was expected")]
    Unexpected(Box<Outcome>),
    #[error("{0}")]
    Unsupported(String),
}

impl From<FleetError> for ProvisionError {
    /// The fleet's building steps fail the way this module's own do.
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Engine(e) => ProvisionError::Engine(e),
            FleetError::UnexpectedOutcome(o) => ProvisionError::Unexpected(Box::new(o)),
            other => ProvisionError::Unsupported(other.to_string()),
        }
    }
}

/// A command as the engine logged it, with its outcome.
pub type Logged = (Command, Outcome);

/// The engine provisioning writes to, keeping (when asked) every command
/// as the engine logged it (generated PINs resolved), so a reference server
/// can replay them and end up with the same ids, codes and tokens.
pub struct Book<'e> {
    pub engine: &'e mut Engine,
    log: Option<Vec<(Command, Outcome)>>,
    /// Who makes the changes: the system at provisioning, an admin for
    /// code changes during a run.
    actor: Actor,
}

impl<'e> Book<'e> {
    /// `keep_log`: record the applied commands (for a remote server).
    pub fn new(engine: &'e mut Engine, keep_log: bool) -> Book<'e> {
        Book {
            engine,
            log: keep_log.then(Vec::new),
            actor: Actor::System,
        }
    }

    /// Applies the following commands as `actor` (authorized by the engine).
    pub fn acting_as(mut self, actor: Actor) -> Book<'e> {
        self.actor = actor;
        self
    }

    /// Applies one command now (and logs it when asked).
    pub fn apply(&mut self, cmd: Command, now: Timestamp) -> Result<Outcome, ProvisionError> {
        Ok(self.submit(cmd, now)?)
    }

    /// The commands applied so far with their outcomes (empty without
    /// `keep_log`).
    pub fn take_log(&mut self) -> Vec<(Command, Outcome)> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The host checks a guest in or out (a property-management system
    /// does it at the booked times).
    pub fn stay_event(
        &mut self,
        stay: StayId,
        check_in: bool,
        now: Timestamp,
    ) -> Result<(), ProvisionError> {
        let cmd = if check_in {
            Command::CheckIn { stay }
        } else {
            Command::CheckOut { stay }
        };
        self.apply(cmd, now).map(|_| ())
    }
}

impl CommandSink for Book<'_> {
    fn submit(&mut self, cmd: Command, now: Timestamp) -> Result<Outcome, EngineError> {
        let applied = self.engine.apply(&self.actor, cmd, now)?;
        if let Some(log) = &mut self.log {
            log.push((applied.logged, applied.outcome.clone()));
        }
        Ok(applied.outcome)
    }
}

fn apply(book: &mut Book<'_>, cmd: Command, now: Timestamp) -> Result<Outcome, ProvisionError> {
    book.apply(cmd, now)
}

macro_rules! id_of {
    ($o:expr, $v:ident) => {
        match $o {
            Outcome::$v(x) => x,
            other => return Err(ProvisionError::Unexpected(Box::new(other))),
        }
    };
}

/// The engine's `now` at the start of a run: `start_at` in the first site's
/// zone, else a fixed Monday morning (virtual runs are reproducible), or
/// the wall clock for real runs without a start.
pub fn start_time(s: &Scenario) -> Timestamp {
    let tz = TimeZone::get(s.fleet.time_zone_of(0)).unwrap_or(TimeZone::UTC);
    let fixed = DateTime::constant(2026, 3, 2, 8, 0, 0, 0);
    match (s.start_at, s.clock) {
        (Some(dt), _) => tz.to_timestamp(dt).unwrap_or(Timestamp::UNIX_EPOCH),
        (None, crate::scenario::Clock::Virtual) => {
            tz.to_timestamp(fixed).unwrap_or(Timestamp::UNIX_EPOCH)
        }
        (None, crate::scenario::Clock::Real) => Timestamp::now(),
    }
}

/// A random PIN obeying the shape rules, not yet used at `taken`.
fn draw_pin(rng: &mut ChaCha8Rng, len: usize, taken: &FxHashSet<String>) -> String {
    loop {
        let upper = 10u64.pow(len as u32);
        let text = format!("{:0len$}", rng.random_range(0..upper));
        let ok = Pin::parse(&text).is_ok_and(|p| p.check_shape().is_ok());
        if ok && !taken.contains(&text) {
            return text;
        }
    }
}

/// Kit of a device group's door (decides the devices' connectivity).
fn kit_of(g: &DeviceGroup) -> DoorKit {
    match (g.kind, g.model) {
        (DeviceKind::DoorPhone, _) => DoorKit::Entrance,
        (_, Connectivity::Ble) => DoorKit::BleApartment,
        _ => DoorKit::WifiApartment,
    }
}

struct Ctx<'a, 'e> {
    engine: &'a mut Book<'e>,
    now: Timestamp,
    org: OrgId,
}

impl Ctx<'_, '_> {
    fn holder(&mut self, kind: HolderKind, name: String) -> Result<HolderId, ProvisionError> {
        let o = apply(
            self.engine,
            Command::CreateHolder {
                org: self.org,
                name,
                kind,
                user: None,
                floors: FloorScope::Any,
            },
            self.now,
        )?;
        Ok(id_of!(o, Holder))
    }

    fn issue(
        &mut self,
        holder: HolderId,
        secret: SecretSpec,
        schedule: Schedule,
        door: DoorId,
    ) -> Result<CredentialId, ProvisionError> {
        let o = apply(
            self.engine,
            Command::IssueCredential(Issue {
                holder,
                name: "Code".into(),
                secret,
                schedule,
                doors: vec![door],
                include_common_areas: false,
                floors: FloorScope::Any,
            }),
            self.now,
        )?;
        Ok(id_of!(o, Credential))
    }
}

/// One door's chain of consecutive guest stays over the run's span.
struct StayChain<'a> {
    stays: &'a Stays,
    tz: &'a TimeZone,
    guest: GuestSettings,
    /// The run's span.
    span: (Timestamp, Timestamp),
    door: DoorId,
    door_index: usize,
}

impl StayChain<'_> {
    fn at(
        &self,
        day: jiff::civil::Date,
        t: jiff::civil::Time,
    ) -> Result<Timestamp, ProvisionError> {
        // Local wall time in the site's zone: a check-in on the day the
        // clocks change is still at 15:00 local.
        self.tz
            .to_timestamp(day.to_datetime(t))
            .map_err(|e| ProvisionError::Unsupported(format!("a stay's time: {e}")))
    }

    /// How long the host's turnover on `day` lasts (check-out to check-in).
    fn turnover(&self, day: jiff::civil::Date) -> Result<SignedDuration, ProvisionError> {
        let gap = self.at(day, self.stays.check_in)? - self.at(day, self.stays.check_out)?;
        let gap = SignedDuration::try_from(gap).unwrap_or(SignedDuration::ZERO);
        Ok(if gap.is_positive() {
            gap
        } else {
            SignedDuration::from_secs(DEFAULT_TURNOVER_S)
        })
    }

    /// Creates the chain's guests, stays and PINs (generated by the engine;
    /// the first as long as `first_pin`, the slot's drawn code); the guests
    /// whose stay had begun are checked in.
    #[allow(clippy::too_many_arguments)] // the door loop's state, borrowed once
    fn provision(
        &self,
        cx: &mut Ctx<'_, '_>,
        rng: &mut ChaCha8Rng,
        first_pin: String,
        taken: &mut FxHashSet<String>,
        oracle: &mut Oracle,
        pins: &mut Vec<TruthId>,
        plans: &mut Vec<StayPlan>,
    ) -> Result<(), ProvisionError> {
        let (start, end) = self.span;
        let nights = i64::from(self.stays.nights.max(1));
        let days = |n: i64| jiff::Span::new().days(n);
        let bad = |e: jiff::Error| ProvisionError::Unsupported(format!("a stay's date: {e}"));
        // Chains start at a seeded day, so turnovers spread over the week;
        // the first guest may be mid-stay when the run starts.
        let offset = rng.random_range(0..nights);
        let mut day = self
            .tz
            .to_datetime(start)
            .date()
            .checked_sub(days(offset + nights))
            .map_err(bad)?;
        let mut pin = Some(first_pin);
        loop {
            let out_day = day.checked_add(days(nights)).map_err(bad)?;
            let check_in = self.at(day, self.stays.check_in)?;
            let check_out = self.at(out_day, self.stays.check_out)?;
            if check_in >= end {
                return Ok(());
            }
            let early = rng.random::<f64>() < self.stays.early_arrival_share;
            let late = rng.random::<f64>() < self.stays.late_departure_share;
            let (u_early, u_late) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            if check_out <= start {
                day = out_day;
                continue;
            }
            // The first guest's code is as long as the slot's drawn one.
            let digits = pin.take().map_or(4, |t| t.len());
            let holder = cx.holder(HolderKind::Guest, format!("Guest {}", plans.len() + 1))?;
            let stay = id_of!(
                apply(
                    cx.engine,
                    Command::CreateStay {
                        holder,
                        check_in_at: check_in,
                        check_out_at: check_out,
                    },
                    cx.now,
                )?,
                Stay
            );
            // seeds/003: a guest's code is generated by the engine (from the
            // run's seed), never picked; the oracle learns it from there.
            let secret = SecretSpec::Pin {
                pin: PinSpec::Generate {
                    digits: u8::try_from(digits).unwrap_or(4),
                },
            };
            let code = cx.issue(holder, secret, Schedule::Stay { stay }, self.door)?;
            let text = cx
                .engine
                .engine
                .credential(code)
                .and_then(|c| c.pin())
                .map(|p| p.reveal())
                .ok_or_else(|| ProvisionError::Unsupported("a guest code without a PIN".into()))?;
            // The door's later codes are drawn around it.
            taken.insert(text.clone());
            let checked_in = check_in <= start;
            if checked_in {
                cx.engine.stay_event(stay, true, cx.now)?;
            }
            let truth = oracle.add(Truth {
                kind: TruthKind::Pin,
                text,
                doors: vec![self.door],
                validity: Validity::Stay {
                    check_in,
                    check_out,
                    prevent_until_checked_in: self.guest.prevent_access_until_checked_in,
                    revoke_on_check_out: self.guest.revoke_access_on_check_out,
                },
                per_door_uses: None,
                total_uses: None,
                label: "stay",
            });
            oracle.set_credential(truth, code);
            pins.push(truth);
            let within =
                |gap: SignedDuration, u: f64| SignedDuration::from_secs_f64(gap.as_secs_f64() * u);
            let (before, after) = (self.turnover(day)?, self.turnover(out_day)?);
            plans.push(StayPlan {
                stay,
                door: self.door_index,
                truth,
                check_in,
                check_out,
                checked_in,
                early_try: early.then(|| check_in - within(before, u_early)),
                late_try: late.then(|| check_out + within(after, u_late)),
            });
            day = out_day;
        }
    }
}

/// Issues a visitor QR key for `door` valid from `now` as the scenario's
/// `[credentials.visitor]` says; returns its truth id.
pub fn issue_qr(
    engine: &mut Book<'_>,
    oracle: &mut Oracle,
    s: &Scenario,
    door: &DoorInfo,
    tz: &TimeZone,
    now: Timestamp,
) -> Result<usize, ProvisionError> {
    let v = s.credentials.visitor;
    let start = now - SignedDuration::from_mins(1);
    let end = now + SignedDuration::try_from(v.valid_for).unwrap_or(SignedDuration::from_hours(24));
    issue_qr_between(engine, oracle, s, door, tz, now, (start, end))
}

/// Issues a visitor QR key for `door` valid from `start` to `end`.
fn issue_qr_between(
    engine: &mut Book<'_>,
    oracle: &mut Oracle,
    s: &Scenario,
    door: &DoorInfo,
    tz: &TimeZone,
    now: Timestamp,
    (start, end): (Timestamp, Timestamp),
) -> Result<usize, ProvisionError> {
    let v = s.credentials.visitor;
    let schedule = Schedule::Visitor {
        repeat: v.repeat,
        start,
        end,
        days: v.days,
        window: v.window,
        each_door_count: v.each_door_count,
    };
    let mut cx = Ctx {
        engine,
        now,
        org: OrgId(0),
    };
    let id = cx.issue(door.visitor, SecretSpec::Qr, schedule, door.door)?;
    let text = engine.engine.token(id).ok_or_else(|| {
        ProvisionError::Unsupported("the engine gave no token for a QR key".into())
    })?;
    let validity = match (v.repeat, v.window) {
        (Repeat::Never, _) | (_, None) => Validity::Range { start, end },
        (Repeat::Daily, Some(w)) => Validity::Recurring {
            days: Weekdays::ALL,
            window: w,
            tz: tz.clone(),
            bounds: Some((start, end)),
        },
        (Repeat::Weekly, Some(w)) => Validity::Recurring {
            days: v.days.unwrap_or(Weekdays::ALL),
            window: w,
            tz: tz.clone(),
            bounds: Some((start, end)),
        },
    };
    let truth = oracle.add(Truth {
        kind: TruthKind::Qr,
        text,
        doors: vec![door.door],
        validity,
        per_door_uses: match v.repeat {
            Repeat::Never => v.each_door_count,
            _ => None,
        },
        total_uses: None,
        label: "visitor",
    });
    oracle.set_credential(truth, id);
    Ok(truth)
}

/// Creates the whole fleet and its credentials at `now`.
pub fn provision(
    engine: &mut Engine,
    s: &Scenario,
    seed: u64,
    now: Timestamp,
) -> Result<Provisioning, ProvisionError> {
    provision_into(&mut Book::new(engine, false), s, seed, now)
}

/// [`provision`] through a [`Book`] (which may keep the commands).
///
/// The order of the commands is part of a run's identity (ids, secrets and
/// the seeded PINs follow from it), so the steps below keep it: the
/// organization, then site by site each door with its devices, holders and
/// credentials before the next door.
pub fn provision_into(
    engine: &mut Book<'_>,
    s: &Scenario,
    seed: u64,
    now: Timestamp,
) -> Result<Provisioning, ProvisionError> {
    let description = format!("scenario {} seed {seed}", s.name);
    let fleet = fleet::create_organization(engine, now, s.name.clone(), description)?;
    let mut out = Provisioning {
        fleet,
        doors: Vec::new(),
        oracle: Oracle::new(),
        stays: Vec::new(),
    };
    let span = (
        now,
        now.checked_add(
            SignedDuration::try_from(s.total_duration()).unwrap_or(SignedDuration::MAX),
        )
        .unwrap_or(Timestamp::MAX),
    );
    for site_index in 0..s.fleet.sites {
        provision_site(engine, &mut out, s, seed, site_index, span, now)?;
    }
    Ok(out)
}

/// What the doors of one site share while they are provisioned.
struct SiteCtx<'s> {
    s: &'s Scenario,
    now: Timestamp,
    org: OrgId,
    site: SiteId,
    site_index: u32,
    tz: TimeZone,
    /// The run's span (guest stays cover it).
    span: (Timestamp, Timestamp),
    /// The site's secrets (PIN digits, card numbers, schedules).
    rng: ChaCha8Rng,
    /// The site's guest stays, apart so they do not shift its other secrets.
    stay_rng: ChaCha8Rng,
    /// Card numbers are unique per site.
    cards_taken: FxHashSet<u64>,
}

/// One site: created with the scenario's PIN rules, then its doors group
/// by group. Each site has its own seeded streams, so a site's secrets do
/// not depend on the others (shards provision every site alike).
fn provision_site(
    engine: &mut Book<'_>,
    out: &mut Provisioning,
    s: &Scenario,
    seed: u64,
    site_index: u32,
    span: (Timestamp, Timestamp),
    now: Timestamp,
) -> Result<(), ProvisionError> {
    let settings = SiteSettings {
        six_digit_pins: s.fleet.six_digit_pins,
        custom_pins: s.fleet.custom_pins,
        lockout: s.fleet.lockout,
    };
    let tz_name = s.fleet.time_zone_of(site_index).to_string();
    let tz = TimeZone::get(&tz_name).unwrap_or(TimeZone::UTC);
    let name = format!("Site {site_index}");
    // Scenario sites have no lift: their doors serve no floors.
    let site = fleet::create_site(engine, now, &mut out.fleet, name, tz_name, settings, None)?;
    let mut sc = SiteCtx {
        s,
        now,
        org: out.fleet.org,
        site,
        site_index,
        tz,
        span,
        rng: stream_rng(seed, 0x5173_0000 + u64::from(site_index)),
        stay_rng: stream_rng(seed, STAY_STREAM + u64::from(site_index)),
        cards_taken: FxHashSet::default(),
    };
    let mut door_no = 0u32;
    for (group, g) in s.fleet.devices.iter().enumerate() {
        for _ in 0..g.per_site {
            door_no += 1;
            provision_door(engine, out, &mut sc, group, g, door_no)?;
        }
    }
    Ok(())
}

/// The devices of a group's door, in creation order: the group's kind
/// first, then what is mounted with it.
fn group_mounts(g: &DeviceGroup) -> impl Iterator<Item = Mount> + '_ {
    let mount = move |kind: DeviceKind, planned: bool| Mount {
        kind,
        connectivity: g.model,
        name: format!("{kind:?}"),
        code_slots: if matches!(kind, DeviceKind::Lock | DeviceKind::Keypad) {
            g.behaviour.code_slots
        } else {
            0
        },
        planned,
    };
    // A lock mounted with a door phone is created but not driven by the
    // run (the door's plan keeps the group's own devices only).
    std::iter::once(mount(g.kind, true)).chain(
        g.with
            .iter()
            .map(move |w| mount(*w, *w != DeviceKind::Lock)),
    )
}

/// One door of a device group: its devices and their guest settings, the
/// door's two holders and every credential the scenario gives it.
fn provision_door(
    engine: &mut Book<'_>,
    out: &mut Provisioning,
    sc: &mut SiteCtx<'_>,
    group: usize,
    g: &DeviceGroup,
    door_no: u32,
) -> Result<(), ProvisionError> {
    let (s, now) = (sc.s, sc.now);
    let spec = DoorSpec {
        site: sc.site,
        name: format!("Door {door_no}"),
        kit: kit_of(g),
        group,
        common_area: g.kind == DeviceKind::DoorPhone,
        lift_floors: Vec::new(),
    };
    let plan = fleet::create_door(engine, now, spec, group_mounts(g))?;
    let door = plan.door;
    if let Some(l) = plan.lock {
        apply(
            engine,
            Command::UpdateGuestSettings {
                device: l,
                settings: g.behaviour.guest,
            },
            now,
        )?;
    }
    let mut cx = Ctx {
        engine,
        now,
        org: sc.org,
    };
    let member = cx.holder(HolderKind::Member, format!("Residents {door_no}"))?;
    let visitor = cx.holder(HolderKind::Visitor, format!("Visitors {door_no}"))?;
    let mut info = DoorInfo {
        door,
        site_index: sc.site_index,
        plan: plan.clone(),
        visitor,
        member,
        pins: Vec::new(),
        expired_pins: Vec::new(),
        cards: Vec::new(),
        ble: Vec::new(),
        qr: Vec::new(),
        expired_qr: Vec::new(),
    };
    issue_pins(&mut cx, out, sc, g, &mut info)?;
    issue_cards(&mut cx, out, sc, &mut info)?;
    if let Some(lock) = plan.lock {
        let passes = s.credentials.ble_passes_per_door;
        info.ble = issue_ble(&mut cx, &mut out.oracle, &info, passes)?;
        load_fallback_pool(&mut cx, out, sc, lock, door)?;
    }
    out.oracle.set_lockout(door, s.fleet.lockout);
    out.oracle.set_site(door, sc.site_index);
    if plan.door_phone.is_some() {
        issue_visitor_keys(engine, out, sc, &mut info)?;
    }
    out.fleet.doors.push(plan);
    out.doors.push(info);
    Ok(())
}

/// What a PIN of the mix is: its label, the engine's schedule and the
/// oracle's view of it.
struct PinTerms {
    label: &'static str,
    schedule: Schedule,
    validity: Validity,
    total_uses: Option<u32>,
}

/// The terms of a non-guest PIN: expired the day before, or by where `r`
/// falls in the scenario's mix (some temporary codes run out during the
/// run, which takes one more draw from the site's stream).
fn pin_terms(sc: &mut SiteCtx<'_>, expired: bool, r: f64) -> PinTerms {
    let (c, now) = (&sc.s.credentials, sc.now);
    let m = c.mix;
    let terms = |label, schedule, validity, total_uses| PinTerms {
        label,
        schedule,
        validity,
        total_uses,
    };
    if expired {
        let (start, end) = (
            now - SignedDuration::from_hours(48),
            now - SignedDuration::from_hours(24),
        );
        terms(
            "expired",
            Schedule::Temporary { start, end },
            Validity::Range { start, end },
            None,
        )
    } else if r < m.permanent {
        terms("permanent", Schedule::Permanent, Validity::Always, None)
    } else if r < m.permanent + m.temporary {
        let temp = SignedDuration::try_from(c.temporary_valid_for)
            .unwrap_or(SignedDuration::from_hours(24));
        let start = now
            - temp / 2
            - SignedDuration::from_secs_f64(temp.as_secs_f64() * 0.4 * sc.rng.random::<f64>());
        let end = start + temp;
        terms(
            "temporary",
            Schedule::Temporary { start, end },
            Validity::Range { start, end },
            None,
        )
    } else if r < m.permanent + m.temporary + m.recurring {
        terms(
            "recurring",
            Schedule::Recurring {
                days: c.recurring.days,
                window: c.recurring.window,
                start: None,
                end: None,
            },
            Validity::Recurring {
                days: c.recurring.days,
                window: c.recurring.window,
                tz: sc.tz.clone(),
                bounds: None,
            },
            None,
        )
    } else {
        let delivery =
            SignedDuration::try_from(c.delivery.valid_for).unwrap_or(SignedDuration::from_hours(2));
        let (start, end) = (now - SignedDuration::from_mins(1), now + delivery);
        terms(
            "delivery",
            Schedule::Delivery {
                start,
                end,
                max_uses: c.delivery.max_uses,
            },
            Validity::Range { start, end },
            c.delivery.max_uses,
        )
    }
}

/// The door's PINs: the valid ones by the scenario's mix (a guest slot
/// becomes a chain of stays), then the expired ones. Each is drawn from
/// the site's stream and unique on the door.
fn issue_pins(
    cx: &mut Ctx<'_, '_>,
    out: &mut Provisioning,
    sc: &mut SiteCtx<'_>,
    g: &DeviceGroup,
    info: &mut DoorInfo,
) -> Result<(), ProvisionError> {
    let s = sc.s;
    let c = &s.credentials;
    let door = info.door;
    let entrance = g.kind == DeviceKind::DoorPhone;
    let mut taken: FxHashSet<String> = FxHashSet::default();
    let total = c.pins_per_door + c.expired_pins_per_door;
    for n in 0..total {
        let six = s.fleet.six_digit_pins && sc.rng.random::<f64>() < c.six_digit_share;
        let text = draw_pin(&mut sc.rng, if six { 6 } else { 4 }, &taken);
        taken.insert(text.clone());
        let expired = n >= c.pins_per_door;
        let r: f64 = sc.rng.random();
        let m = c.mix;
        if !expired && m.stay > 0.0 && r >= m.permanent + m.temporary + m.recurring + m.delivery {
            // A guest code slot: consecutive reservations.
            let chain = StayChain {
                stays: &c.stays,
                tz: &sc.tz,
                guest: if info.plan.lock.is_some() {
                    g.behaviour.guest
                } else {
                    GuestSettings::default()
                },
                span: sc.span,
                door,
                door_index: out.doors.len(),
            };
            chain.provision(
                cx,
                &mut sc.stay_rng,
                text,
                &mut taken,
                &mut out.oracle,
                &mut info.pins,
                &mut out.stays,
            )?;
            continue;
        }
        let t = pin_terms(sc, expired, r);
        let custom = t.label == "permanent"
            && s.fleet.custom_pins
            && !entrance
            && sc.rng.random::<f64>() < c.custom_share;
        let pin = if custom {
            PinSpec::Custom(text.clone())
        } else {
            PinSpec::Manual(text.clone())
        };
        let cred = cx.issue(info.member, SecretSpec::Pin { pin }, t.schedule, door)?;
        let id = cx_add(
            &mut out.oracle,
            TruthKind::Pin,
            text,
            door,
            t.validity,
            t.total_uses,
            t.label,
        );
        out.oracle.set_credential(id, cred);
        if expired {
            info.expired_pins.push(id);
        } else {
            info.pins.push(id);
        }
    }
    Ok(())
}

/// The door's permanent cards, numbers drawn from the site's stream and
/// unique on the site.
fn issue_cards(
    cx: &mut Ctx<'_, '_>,
    out: &mut Provisioning,
    sc: &mut SiteCtx<'_>,
    info: &mut DoorInfo,
) -> Result<(), ProvisionError> {
    let door = info.door;
    for _ in 0..sc.s.credentials.cards_per_door {
        let number = loop {
            let n = sc.rng.random_range(1_000_000_000u64..10_000_000_000);
            if sc.cards_taken.insert(n) {
                break n;
            }
        };
        let text = number.to_string();
        let secret = SecretSpec::Card { number };
        let cred = cx.issue(info.member, secret, Schedule::Permanent, door)?;
        let truth = add_permanent(&mut out.oracle, TruthKind::Card, text, door, cred);
        info.cards.push(truth);
    }
    Ok(())
}

/// The door's permanent Bluetooth passes (a door with a lock only): the
/// token is the one the engine signed.
fn issue_ble(
    cx: &mut Ctx<'_, '_>,
    oracle: &mut Oracle,
    info: &DoorInfo,
    passes: u32,
) -> Result<Vec<TruthId>, ProvisionError> {
    (0..passes)
        .map(|_| {
            let cred = cx.issue(info.member, SecretSpec::Ble, Schedule::Permanent, info.door)?;
            let no_token = || ProvisionError::Unsupported("no token for a BLE pass".into());
            let text = cx.engine.engine.token(cred).ok_or_else(no_token)?;
            Ok(add_permanent(oracle, TruthKind::Ble, text, info.door, cred))
        })
        .collect()
}

/// The lock's pool of unassigned codes (drawn by the engine after the
/// scenario's PINs). They must not open, and a Bluetooth lock decides from
/// what it holds, so the oracle learns them: a "wrong" PIN drawn for an
/// attempt must not be one of them.
fn load_fallback_pool(
    cx: &mut Ctx<'_, '_>,
    out: &mut Provisioning,
    sc: &SiteCtx<'_>,
    lock: DeviceId,
    door: DoorId,
) -> Result<(), ProvisionError> {
    let n = sc.s.credentials.fallback_codes_per_lock;
    if n == 0 {
        return Ok(());
    }
    let pins = (0..n).map(|_| PinSpec::Generate { digits: 4 }).collect();
    let cmd = Command::LoadFallbackPool { device: lock, pins };
    apply(cx.engine, cmd, sc.now)?;
    let e = &cx.engine.engine;
    for id in e.fallback_pool(lock) {
        if let Some(Secret::Pin(pin)) = e.credential(*id).map(|c| &c.secret) {
            out.oracle.pool_pin(door, pin.reveal());
        }
    }
    Ok(())
}

/// The door phone's visitor QR keys: valid ones from now, then ones that
/// expired the day before (as expired PINs did).
fn issue_visitor_keys(
    engine: &mut Book<'_>,
    out: &mut Provisioning,
    sc: &SiteCtx<'_>,
    info: &mut DoorInfo,
) -> Result<(), ProvisionError> {
    let (s, now) = (sc.s, sc.now);
    for _ in 0..s.credentials.qr_keys_per_door {
        let id = issue_qr(engine, &mut out.oracle, s, info, &sc.tz, now)?;
        info.qr.push(id);
    }
    let ended = (
        now - SignedDuration::from_hours(48),
        now - SignedDuration::from_hours(24),
    );
    for _ in 0..s.credentials.expired_qr_keys_per_door {
        let id = issue_qr_between(engine, &mut out.oracle, s, info, &sc.tz, now, ended)?;
        info.expired_qr.push(id);
    }
    Ok(())
}

/// Writes down a permanent credential of the door (cards, BLE passes).
fn add_permanent(
    oracle: &mut Oracle,
    kind: TruthKind,
    text: String,
    door: DoorId,
    cred: CredentialId,
) -> TruthId {
    let id = cx_add(
        oracle,
        kind,
        text,
        door,
        Validity::Always,
        None,
        "permanent",
    );
    oracle.set_credential(id, cred);
    id
}

fn cx_add(
    oracle: &mut Oracle,
    kind: TruthKind,
    text: String,
    door: DoorId,
    validity: Validity,
    total_uses: Option<u32>,
    label: &'static str,
) -> usize {
    oracle.add(Truth {
        kind,
        text,
        doors: vec![door],
        validity,
        per_door_uses: None,
        total_uses,
        label,
    })
}
