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
use crate::devices::fleet::{DoorKit, DoorPlan, Provisioned};
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
        let applied = self.engine.apply(&self.actor, cmd, now)?;
        if let Some(log) = &mut self.log {
            log.push((applied.logged, applied.outcome.clone()));
        }
        Ok(applied.outcome)
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
pub fn provision_into(
    engine: &mut Book<'_>,
    s: &Scenario,
    seed: u64,
    now: Timestamp,
) -> Result<Provisioning, ProvisionError> {
    let owner = id_of!(
        apply(
            engine,
            Command::CreateUser {
                name: "Fleet owner".into(),
                email: "owner@fleet.example".into(),
            },
            now,
        )?,
        User
    );
    let org = id_of!(
        apply(
            engine,
            Command::CreateOrganization {
                name: s.name.clone(),
                description: format!("scenario {} seed {seed}", s.name),
                owner,
                personal: false,
            },
            now,
        )?,
        Organization
    );
    let mut out = Provisioning {
        fleet: Provisioned {
            owner,
            org,
            sites: Vec::new(),
            floors: Default::default(),
            doors: Vec::new(),
        },
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
    let settings = SiteSettings {
        six_digit_pins: s.fleet.six_digit_pins,
        custom_pins: s.fleet.custom_pins,
        lockout: s.fleet.lockout,
    };
    let c = &s.credentials;
    for site_index in 0..s.fleet.sites {
        // One RNG per site: a site's secrets do not depend on the others.
        let mut rng = stream_rng(seed, 0x5173_0000 + u64::from(site_index));
        let mut stay_rng = stream_rng(seed, STAY_STREAM + u64::from(site_index));
        let tz_name = s.fleet.time_zone_of(site_index).to_string();
        let tz = TimeZone::get(&tz_name).unwrap_or(TimeZone::UTC);
        let site: SiteId = id_of!(
            apply(
                engine,
                Command::CreateSite {
                    org,
                    name: format!("Site {site_index}"),
                    time_zone: tz_name,
                    settings,
                },
                now,
            )?,
            Site
        );
        out.fleet.sites.push(site);
        out.fleet.floors.insert(site, Vec::new());
        let mut cards_taken: FxHashSet<u64> = FxHashSet::default();
        let mut door_no = 0u32;
        for (group, g) in s.fleet.devices.iter().enumerate() {
            for _ in 0..g.per_site {
                door_no += 1;
                let entrance = g.kind == DeviceKind::DoorPhone;
                let door = id_of!(
                    apply(
                        engine,
                        Command::CreateDoor {
                            site,
                            name: format!("Door {door_no}"),
                            common_area: entrance,
                            unit: None,
                            lift_floors: Vec::new(),
                        },
                        now,
                    )?,
                    Door
                );
                let kit = kit_of(g);
                let mut plan = DoorPlan {
                    door,
                    site,
                    kit,
                    group,
                    lock: None,
                    keypad: None,
                    sensor: None,
                    door_phone: None,
                };
                let device = |engine: &mut Book<'_>,
                              kind: DeviceKind,
                              linked_to: Option<DeviceId>|
                 -> Result<DeviceId, ProvisionError> {
                    let slots = if matches!(kind, DeviceKind::Lock | DeviceKind::Keypad) {
                        g.behaviour.code_slots
                    } else {
                        0
                    };
                    let o = apply(
                        engine,
                        Command::CreateDevice {
                            door,
                            kind,
                            connectivity: g.model,
                            name: format!("{kind:?}"),
                            location: format!("Door {door_no}"),
                            linked_to,
                            code_slots: slots,
                        },
                        now,
                    )?;
                    Ok(id_of!(o, Device))
                };
                let primary = device(engine, g.kind, None)?;
                match g.kind {
                    DeviceKind::Lock => plan.lock = Some(primary),
                    DeviceKind::Keypad => plan.keypad = Some(primary),
                    DeviceKind::DoorPhone => plan.door_phone = Some(primary),
                    DeviceKind::DoorSensor => plan.sensor = Some(primary),
                }
                let lock = plan.lock;
                for w in &g.with {
                    let id = device(engine, *w, lock)?;
                    match w {
                        DeviceKind::Keypad => plan.keypad = Some(id),
                        DeviceKind::DoorSensor => plan.sensor = Some(id),
                        DeviceKind::DoorPhone => plan.door_phone = Some(id),
                        DeviceKind::Lock => {}
                    }
                }
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
                let mut cx = Ctx { engine, now, org };
                let member = cx.holder(HolderKind::Member, format!("Residents {door_no}"))?;
                let visitor = cx.holder(HolderKind::Visitor, format!("Visitors {door_no}"))?;
                let mut info = DoorInfo {
                    door,
                    site_index,
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
                // PINs: the mix decides each code's schedule.
                let mut taken: FxHashSet<String> = FxHashSet::default();
                let temp = SignedDuration::try_from(c.temporary_valid_for)
                    .unwrap_or(SignedDuration::from_hours(24));
                let delivery = SignedDuration::try_from(c.delivery.valid_for)
                    .unwrap_or(SignedDuration::from_hours(2));
                let total = c.pins_per_door + c.expired_pins_per_door;
                for n in 0..total {
                    let six = s.fleet.six_digit_pins && rng.random::<f64>() < c.six_digit_share;
                    let text = draw_pin(&mut rng, if six { 6 } else { 4 }, &taken);
                    taken.insert(text.clone());
                    let expired = n >= c.pins_per_door;
                    let r: f64 = rng.random();
                    let m = c.mix;
                    if !expired
                        && m.stay > 0.0
                        && r >= m.permanent + m.temporary + m.recurring + m.delivery
                    {
                        // A guest code slot: consecutive reservations.
                        let chain = StayChain {
                            stays: &c.stays,
                            tz: &tz,
                            guest: if plan.lock.is_some() {
                                g.behaviour.guest
                            } else {
                                GuestSettings::default()
                            },
                            span,
                            door,
                            door_index: out.doors.len(),
                        };
                        chain.provision(
                            &mut cx,
                            &mut stay_rng,
                            text,
                            &mut taken,
                            &mut out.oracle,
                            &mut info.pins,
                            &mut out.stays,
                        )?;
                        continue;
                    }
                    let (label, schedule, validity, total_uses) = if expired {
                        let (start, end) = (
                            now - SignedDuration::from_hours(48),
                            now - SignedDuration::from_hours(24),
                        );
                        (
                            "expired",
                            Schedule::Temporary { start, end },
                            Validity::Range { start, end },
                            None,
                        )
                    } else if r < m.permanent {
                        ("permanent", Schedule::Permanent, Validity::Always, None)
                    } else if r < m.permanent + m.temporary {
                        // Some temporary codes run out during the run.
                        let start = now
                            - temp / 2
                            - SignedDuration::from_secs_f64(
                                temp.as_secs_f64() * 0.4 * rng.random::<f64>(),
                            );
                        let end = start + temp;
                        (
                            "temporary",
                            Schedule::Temporary { start, end },
                            Validity::Range { start, end },
                            None,
                        )
                    } else if r < m.permanent + m.temporary + m.recurring {
                        (
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
                                tz: tz.clone(),
                                bounds: None,
                            },
                            None,
                        )
                    } else {
                        let (start, end) = (now - SignedDuration::from_mins(1), now + delivery);
                        (
                            "delivery",
                            Schedule::Delivery {
                                start,
                                end,
                                max_uses: c.delivery.max_uses,
                            },
                            Validity::Range { start, end },
                            c.delivery.max_uses,
                        )
                    };
                    let custom = label == "permanent"
                        && s.fleet.custom_pins
                        && !entrance
                        && rng.random::<f64>() < c.custom_share;
                    let pin = if custom {
                        PinSpec::Custom(text.clone())
                    } else {
                        PinSpec::Manual(text.clone())
                    };
                    let cred = cx.issue(member, SecretSpec::Pin { pin }, schedule, door)?;
                    let id = cx_add(
                        &mut out.oracle,
                        TruthKind::Pin,
                        text,
                        door,
                        validity,
                        total_uses,
                        label,
                    );
                    out.oracle.set_credential(id, cred);
                    if expired {
                        info.expired_pins.push(id);
                    } else {
                        info.pins.push(id);
                    }
                }
                for _ in 0..c.cards_per_door {
                    let number = loop {
                        let n = rng.random_range(1_000_000_000u64..10_000_000_000);
                        if cards_taken.insert(n) {
                            break n;
                        }
                    };
                    let cred = cx.issue(
                        member,
                        SecretSpec::Card { number },
                        Schedule::Permanent,
                        door,
                    )?;
                    let id = cx_add(
                        &mut out.oracle,
                        TruthKind::Card,
                        number.to_string(),
                        door,
                        Validity::Always,
                        None,
                        "permanent",
                    );
                    out.oracle.set_credential(id, cred);
                    info.cards.push(id);
                }
                if plan.lock.is_some() {
                    for _ in 0..c.ble_passes_per_door {
                        let cred = cx.issue(member, SecretSpec::Ble, Schedule::Permanent, door)?;
                        let text = cx.engine.engine.token(cred).ok_or_else(|| {
                            ProvisionError::Unsupported("no token for a BLE pass".into())
                        })?;
                        let id = cx_add(
                            &mut out.oracle,
                            TruthKind::Ble,
                            text,
                            door,
                            Validity::Always,
                            None,
                            "permanent",
                        );
                        out.oracle.set_credential(id, cred);
                        info.ble.push(id);
                    }
                    if c.fallback_codes_per_lock > 0 {
                        // Unassigned pool codes must not open: drawn by the
                        // engine after the scenario's PINs.
                        let pins = (0..c.fallback_codes_per_lock)
                            .map(|_| PinSpec::Generate { digits: 4 })
                            .collect();
                        apply(
                            cx.engine,
                            Command::LoadFallbackPool {
                                device: plan.lock.unwrap_or(DeviceId(0)),
                                pins,
                            },
                            now,
                        )?;
                        // A lock holds its pool codes, and a Bluetooth one
                        // decides from what it holds: a "wrong" PIN drawn
                        // for an attempt must not be one of them.
                        let lock = plan.lock.unwrap_or(DeviceId(0));
                        let e = &cx.engine.engine;
                        for id in e.fallback_pool(lock) {
                            if let Some(Secret::Pin(pin)) = e.credential(*id).map(|c| &c.secret) {
                                out.oracle.pool_pin(door, pin.reveal());
                            }
                        }
                    }
                }
                out.oracle.set_lockout(door, s.fleet.lockout);
                out.oracle.set_site(door, site_index);
                if plan.door_phone.is_some() {
                    for _ in 0..c.qr_keys_per_door {
                        let id = issue_qr(engine, &mut out.oracle, s, &info, &tz, now)?;
                        info.qr.push(id);
                    }
                    // Expired the day before, as expired PINs are.
                    let ended = (
                        now - SignedDuration::from_hours(48),
                        now - SignedDuration::from_hours(24),
                    );
                    for _ in 0..c.expired_qr_keys_per_door {
                        let id =
                            issue_qr_between(engine, &mut out.oracle, s, &info, &tz, now, ended)?;
                        info.expired_qr.push(id);
                    }
                }
                out.fleet.doors.push(plan);
                out.doors.push(info);
            }
        }
    }
    Ok(out)
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
