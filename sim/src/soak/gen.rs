//! The soak campaign's scenario generator: from a seed, the text of a valid
//! scenario file (TOML), as a QA engineer would write it, so a failing seed
//! is a file anyone can run with `fleetsim run`.
//!
//! What a scenario contains is decided by [`Feature`]s. Each feature a
//! campaign allows is switched on per seed by a coin, and each draws its
//! values from its own seeded stream: leaving a feature out of a campaign
//! removes its part of every scenario and leaves the rest as it was, so a
//! failure can be pinned on a feature by running the same seed without it.
//!
//! Sizes are kept small (at most a few sites and a dozen doors, a few
//! thousand attempts) so a seed takes about a second in virtual time.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::clock::stream_rng;
use crate::scenario::units::format_duration;
use crate::scenario::{transport_name, Transport};

/// What a generated scenario may contain, beyond the base (one site of
/// Wi-Fi locks with keypads, maybe door sensors, plain locks and lone
/// sensors, and permanent PINs typed at the keypads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Several sites, handed several time zones.
    MultiSite,
    /// Time zones with daylight saving time, the run starting hours before a
    /// change, windows and check-in times around the changed hour.
    Dst,
    /// Bluetooth lock groups (they decide from their code cache) and BLE passes.
    Ble,
    /// Doors with a keypad and no lock.
    LoneKeypads,
    /// Door phones: visitor QR keys (never, daily, weekly), replays, expired keys.
    DoorPhones,
    /// RF cards.
    Cards,
    /// Temporary, recurring and delivery PINs, and expired ones.
    Schedules,
    /// Guest stays: check-in and check-out, early and late guests, guest settings.
    Stays,
    /// 6-digit and custom PINs.
    PinShapes,
    /// Wrong PINs and brute force under a random lockout policy.
    Lockout,
    /// Code create, change and revoke during the run; fallback codes; small code slots.
    CodeChurn,
    /// Sync storms.
    SyncStorms,
    /// Open Door from the platform.
    RemoteOpen,
    /// Offline waves (`faults.offline_wave`): checks that end in transport errors.
    OfflineWaves,
    /// Device-group knobs set per group (relock, battery, offline spells, BLE sync interval).
    GroupKnobs,
    /// Motor jams.
    Motor,
    /// Latency added to every engine decision.
    AddedLatency,
    /// Closed-model phases (people and think time).
    ClosedModel,
    /// Many arrivals at few doors and a small `max_in_flight`.
    Busy,
    /// Virtual runs of one to three days.
    LongSpans,
    /// The run split into 2 or 3 shards, then merged.
    Shards,
    /// Broker outages (MQTT only).
    BrokerOutage,
}

impl Feature {
    pub const ALL: [Feature; 22] = [
        Feature::MultiSite,
        Feature::Dst,
        Feature::Ble,
        Feature::LoneKeypads,
        Feature::DoorPhones,
        Feature::Cards,
        Feature::Schedules,
        Feature::Stays,
        Feature::PinShapes,
        Feature::Lockout,
        Feature::CodeChurn,
        Feature::SyncStorms,
        Feature::RemoteOpen,
        Feature::OfflineWaves,
        Feature::GroupKnobs,
        Feature::Motor,
        Feature::AddedLatency,
        Feature::ClosedModel,
        Feature::Busy,
        Feature::LongSpans,
        Feature::Shards,
        Feature::BrokerOutage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::MultiSite => "multi_site",
            Feature::Dst => "dst",
            Feature::Ble => "ble",
            Feature::LoneKeypads => "lone_keypads",
            Feature::DoorPhones => "door_phones",
            Feature::Cards => "cards",
            Feature::Schedules => "schedules",
            Feature::Stays => "stays",
            Feature::PinShapes => "pin_shapes",
            Feature::Lockout => "lockout",
            Feature::CodeChurn => "code_churn",
            Feature::SyncStorms => "sync_storms",
            Feature::RemoteOpen => "remote_open",
            Feature::OfflineWaves => "offline_waves",
            Feature::GroupKnobs => "group_knobs",
            Feature::Motor => "motor",
            Feature::AddedLatency => "added_latency",
            Feature::ClosedModel => "closed_model",
            Feature::Busy => "busy",
            Feature::LongSpans => "long_spans",
            Feature::Shards => "shards",
            Feature::BrokerOutage => "broker_outage",
        }
    }

    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == name.trim())
    }

    /// Can a scenario on `transport` use it? Start times (`dst`) and long
    /// spans need the virtual clock, which needs `inproc`; shards stay
    /// in-process to keep the real-time set short.
    pub fn applies_to(self, transport: Transport) -> bool {
        match self {
            Feature::Dst | Feature::LongSpans | Feature::Shards => transport == Transport::Inproc,
            Feature::BrokerOutage => transport == Transport::Mqtt,
            _ => true,
        }
    }

    /// The chance a seed switches it on (when allowed). Long spans cost the
    /// most wall time, so they come less often.
    fn chance(self) -> f64 {
        match self {
            Feature::LongSpans => 0.05,
            Feature::Shards | Feature::Busy => 0.2,
            _ => 0.4,
        }
    }

    /// The seeded stream of the feature's own values.
    fn stream(self) -> u64 {
        0x50A4_0000_0100 + self as u64
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of features (the ones a campaign allows, or a scenario uses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureSet(BTreeSet<Feature>);

impl FeatureSet {
    pub fn all() -> FeatureSet {
        FeatureSet(Feature::ALL.into_iter().collect())
    }

    pub fn none() -> FeatureSet {
        FeatureSet::default()
    }

    /// Every feature but `excluded`.
    pub fn without(excluded: &[Feature]) -> FeatureSet {
        FeatureSet(
            Feature::ALL
                .into_iter()
                .filter(|f| !excluded.contains(f))
                .collect(),
        )
    }

    pub fn contains(&self, f: Feature) -> bool {
        self.0.contains(&f)
    }

    pub fn insert(&mut self, f: Feature) {
        self.0.insert(f);
    }

    pub fn iter(&self) -> impl Iterator<Item = Feature> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Comma-separated names ("-" for none).
    pub fn names(&self) -> String {
        if self.0.is_empty() {
            return "-".to_string();
        }
        self.iter()
            .map(Feature::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Parses "a,b,c" (spaces allowed); the error names the unknown one.
    pub fn parse_list(text: &str) -> Result<Vec<Feature>, String> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                Feature::parse(s).ok_or_else(|| {
                    format!(
                        "unknown soak feature `{}` (known: {})",
                        s.trim(),
                        Feature::ALL.map(Feature::as_str).join(", ")
                    )
                })
            })
            .collect()
    }
}

/// One generated scenario.
#[derive(Clone, Debug)]
pub struct Generated {
    pub seed: u64,
    pub transport: Transport,
    /// The scenario file's text.
    pub text: String,
    /// The features it uses (a subset of those allowed).
    pub features: FeatureSet,
    /// Run as this many shards (1: the whole fleet in one run).
    pub shards: u32,
}

/// Seeded streams of the base scenario's parts (one per part, so a part's
/// values do not depend on what the features drew elsewhere).
const BASE_STREAM: u64 = 0x50A4_0000_0000;
/// Seeded stream of the feature coins.
const COIN_STREAM: u64 = 0x50A4_0000_00FF;

/// The base scenario's parts, each with its own stream.
#[derive(Clone, Copy)]
enum Part {
    Top = 1,
    Zones,
    Spans,
    Groups,
    Fleet,
    Credentials,
    Phases,
    Actions,
}

/// Zones without daylight saving time.
const STEADY_ZONES: &[&str] = &["UTC", "Asia/Tokyo", "Asia/Kolkata", "America/Sao_Paulo"];
/// Zones with daylight saving time, on both hemispheres, with whole-hour,
/// half-hour (Lord Howe) and 45-minute (Chatham) offsets.
const DST_ZONES: &[&str] = &[
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Generates the scenario of `seed` for `transport` from the `allowed` features.
pub fn generate(seed: u64, transport: Transport, allowed: &FeatureSet) -> Generated {
    let mut coins = stream_rng(seed, COIN_STREAM);
    let mut on = FeatureSet::none();
    // Every coin is thrown whatever is allowed, so excluding one feature
    // leaves the others' coins as they were.
    for f in Feature::ALL {
        let heads = coins.random_bool(f.chance());
        if heads && allowed.contains(f) && f.applies_to(transport) {
            on.insert(f);
        }
    }
    Gen {
        seed,
        transport,
        on,
    }
    .build()
}

/// A device group as the generator plans it.
struct Group {
    kind: &'static str,
    model: &'static str,
    per_site: u32,
    with: Vec<&'static str>,
}

impl Group {
    fn is_lock(&self) -> bool {
        self.kind == "lock"
    }
    /// Lock and keypad groups hold codes.
    fn has_slots(&self) -> bool {
        matches!(self.kind, "lock" | "keypad")
    }
    fn takes_pins(&self) -> bool {
        matches!(self.kind, "keypad" | "door_phone")
            || self.with.contains(&"keypad")
            || self.with.contains(&"door_phone")
    }
    fn has_door_phone(&self) -> bool {
        self.kind == "door_phone" || self.with.contains(&"door_phone")
    }
    fn has_lock(&self) -> bool {
        self.kind == "lock" || self.with.contains(&"lock")
    }
}

struct Gen {
    seed: u64,
    transport: Transport,
    on: FeatureSet,
}

/// Time spans of the run, decided first (the rest is fitted into them).
struct Spans {
    total: Duration,
    /// Local start in the first site's zone (virtual clock).
    start_at: Option<DateTime>,
}

impl Gen {
    fn has(&self, f: Feature) -> bool {
        self.on.contains(f)
    }

    /// The base scenario's stream for `part`.
    fn part(&self, part: Part) -> ChaCha8Rng {
        stream_rng(self.seed, BASE_STREAM + part as u64)
    }

    /// Feature `f`'s stream number `n` (one per place it draws from).
    fn rng(&self, f: Feature, n: u64) -> ChaCha8Rng {
        stream_rng(self.seed, f.stream() ^ (n << 20))
    }

    fn virtual_clock(&self) -> bool {
        self.transport == Transport::Inproc
    }

    fn build(self) -> Generated {
        let mut out = String::new();
        let zones = self.zones();
        let spans = self.spans(zones[0]);
        let groups = self.groups();
        let sites = self.sites(zones.len());
        let shards = if self.has(Feature::Shards) {
            self.rng(Feature::Shards, 0).random_range(2..=3).min(sites)
        } else {
            1
        };
        let mut top = self.part(Part::Top);

        let _ = writeln!(out, "name = \"soak-{}\"", self.seed);
        let _ = writeln!(
            out,
            "description = \"soak seed {} ({}): {}\"",
            self.seed,
            transport_name(self.transport),
            self.on.names()
        );
        let _ = writeln!(out, "seed = {}", self.seed);
        let _ = writeln!(out, "transport = \"{}\"", transport_name(self.transport));
        let say_real = top.random_bool(0.5);
        if self.virtual_clock() {
            let _ = writeln!(out, "clock = \"virtual\"");
        } else if say_real {
            let _ = writeln!(out, "clock = \"real\"");
        }
        if let Some(at) = spans.start_at {
            let _ = writeln!(out, "start_at = \"{}\"", at.strftime("%Y-%m-%dT%H:%M"));
        }
        // Written with its default: every field of the format appears in
        // some file (simulated latencies stay unjudged).
        if self.virtual_clock() {
            let _ = writeln!(out, "judge_simulated_latency = false");
        }

        self.fleet(&mut out, sites, &zones, &groups);
        let creds = self.credentials(&mut out, &groups);
        self.phases(&mut out, &spans, &groups, sites);
        self.actions(&mut out, &creds);
        self.faults(&mut out, &spans);
        out.push_str("\n[thresholds]\n");
        out.push_str("\"decisions.false_accept\" = \"== 0\"\n");
        out.push_str("\"decisions.false_reject\" = \"== 0\"\n");
        out.push_str("\"decisions.reason_mismatch\" = \"== 0\"\n");
        // Random mixes may hold actions with nothing to present, and busy
        // keypads queue people: the invariants are about decisions.
        out.push_str("\"arrivals.skipped_rate\" = \"<= 100%\"\n");
        out.push_str("\"arrivals.dropped_rate\" = \"<= 100%\"\n");
        // HTTP has no event route: events.lost would fail as not measured.
        if self.transport != Transport::Http {
            out.push_str("\"events.lost\" = \"== 0\"\n");
        }
        Generated {
            seed: self.seed,
            transport: self.transport,
            text: out,
            features: self.on.clone(),
            shards,
        }
    }

    /// The sites' time zones, in turn (the first decides `start_at`).
    fn zones(&self) -> Vec<&'static str> {
        let mut base = self.part(Part::Zones);
        let mut dst = self.rng(Feature::Dst, 0);
        let n = if self.has(Feature::MultiSite) {
            self.rng(Feature::MultiSite, 0).random_range(1..=3)
        } else {
            1
        };
        (0..n)
            .map(|_| {
                let steady = STEADY_ZONES[base.random_range(0..STEADY_ZONES.len())];
                let changing = DST_ZONES[dst.random_range(0..DST_ZONES.len())];
                if self.has(Feature::Dst) {
                    changing
                } else {
                    steady
                }
            })
            .collect()
    }

    fn sites(&self, zones: usize) -> u32 {
        let mut n = if self.has(Feature::MultiSite) {
            self.rng(Feature::MultiSite, 1).random_range(2..=4)
        } else {
            1
        };
        if self.has(Feature::Shards) {
            n = n.max(2);
        }
        n.max(zones as u32)
    }

    /// How long the run lasts and when it starts.
    fn spans(&self, first_zone: &str) -> Spans {
        let mut base = self.part(Part::Spans);
        if !self.virtual_clock() {
            // Real time: a few seconds.
            return Spans {
                total: Duration::from_secs(base.random_range(3..=6)),
                start_at: None,
            };
        }
        let minutes = |m: u64| Duration::from_secs(m * 60);
        // Modest spans: a report keeps one interval per virtual second.
        let short = Duration::from_secs(base.random_range(30..=600));
        let hours = minutes(base.random_range(20..=120));
        let pick_short = base.random_bool(0.5);
        let start_at = base.random_bool(0.7).then(|| random_start(&mut base));
        if self.has(Feature::LongSpans) {
            let mut rng = self.rng(Feature::LongSpans, 0);
            return Spans {
                total: Duration::from_secs(rng.random_range(86_400..=3 * 86_400)),
                start_at: Some(random_start(&mut rng)),
            };
        }
        if self.has(Feature::Dst) {
            // Start 10 min to 2 h before a change of the first zone's offset
            // and run 20 min to 1 h past it.
            let mut rng = self.rng(Feature::Dst, 1);
            let tz = TimeZone::get(first_zone).unwrap_or(TimeZone::UTC);
            let from = Timestamp::from_second(1_767_225_600) // 2026-01-01T00:00Z
                .unwrap_or(Timestamp::UNIX_EPOCH)
                + jiff::SignedDuration::from_hours(rng.random_range(0..24 * 330));
            if let Some(change) = tz.following(from).next() {
                let before = minutes(rng.random_range(10..=120));
                let after = minutes(rng.random_range(20..=60));
                let start =
                    change.timestamp() - jiff::SignedDuration::try_from(before).unwrap_or_default();
                // Whole minutes: start_at is written to the minute.
                let local = tz.to_datetime(start);
                let local = local
                    .with()
                    .second(0)
                    .subsec_nanosecond(0)
                    .build()
                    .unwrap_or(local);
                return Spans {
                    total: before + after,
                    start_at: Some(local),
                };
            }
        }
        Spans {
            total: if pick_short { short } else { hours },
            start_at,
        }
    }

    /// The device groups: a PIN door first (the base), then what the
    /// features add.
    fn groups(&self) -> Vec<Group> {
        let mut groups = Vec::new();
        let r = &mut self.part(Part::Groups);
        // The base door: a Wi-Fi lock with a keypad.
        let sensor = r.random_bool(0.5);
        let per_site = r.random_range(1..=3);
        let mut with = vec!["keypad"];
        if sensor {
            with.push("door_sensor");
        }
        groups.push(Group {
            kind: "lock",
            model: "wifi",
            per_site,
            with,
        });
        if self.has(Feature::LoneKeypads) {
            groups.push(Group {
                kind: "keypad",
                model: "wifi",
                per_site: self.rng(Feature::LoneKeypads, 0).random_range(1..=2),
                with: vec![],
            });
        }
        // Sometimes a lock without a keypad, or a lone door sensor.
        let plain_lock = r.random_bool(0.3);
        let with_sensor = r.random_bool(0.5);
        let per_site = r.random_range(1..=2);
        if plain_lock {
            groups.push(Group {
                kind: "lock",
                model: "wifi",
                per_site,
                with: if with_sensor {
                    vec!["door_sensor"]
                } else {
                    vec![]
                },
            });
        }
        if r.random_bool(0.15) {
            groups.push(Group {
                kind: "door_sensor",
                model: "wifi",
                per_site: 1,
                with: vec![],
            });
        }
        if self.has(Feature::Ble) {
            let mut rng = self.rng(Feature::Ble, 0);
            let with = match rng.random_range(0..3) {
                0 => vec![],
                1 => vec!["keypad"],
                _ => vec!["door_sensor"],
            };
            groups.push(Group {
                kind: "lock",
                model: "ble",
                per_site: rng.random_range(1..=2),
                with,
            });
        }
        if self.has(Feature::DoorPhones) {
            let mut rng = self.rng(Feature::DoorPhones, 0);
            match rng.random_range(0..3) {
                // An entrance with a door phone alone, or with its lock.
                0 => groups.push(Group {
                    kind: "door_phone",
                    model: "wifi",
                    per_site: rng.random_range(1..=2),
                    with: vec![],
                }),
                1 => groups.push(Group {
                    kind: "door_phone",
                    model: "wifi",
                    per_site: 1,
                    with: vec!["lock"],
                }),
                // An apartment door with a door phone beside the lock.
                _ => groups.push(Group {
                    kind: "lock",
                    model: "wifi",
                    per_site: 1,
                    with: vec!["door_phone"],
                }),
            }
        }
        groups
    }

    fn fleet(&self, out: &mut String, sites: u32, zones: &[&str], groups: &[Group]) {
        let mut base = self.part(Part::Fleet);
        out.push_str("\n[fleet]\n");
        let say_sites = base.random_bool(0.3);
        let say_list = base.random_bool(0.3);
        let say_shapes = base.random_bool(0.2);
        if sites > 1 || say_sites {
            let _ = writeln!(out, "sites = {sites}");
        }
        if zones.len() > 1 || say_list {
            let list: Vec<String> = zones.iter().map(|z| format!("\"{z}\"")).collect();
            let _ = writeln!(out, "timezones = [{}]", list.join(", "));
        } else {
            let _ = writeln!(out, "timezone = \"{}\"", zones[0]);
        }
        if self.has(Feature::PinShapes) {
            out.push_str("six_digit_pins = true\ncustom_pins = true\n");
        } else if say_shapes {
            out.push_str("six_digit_pins = false\ncustom_pins = false\n");
        }
        if self.has(Feature::Lockout) {
            let mut rng = self.rng(Feature::Lockout, 0);
            let _ = writeln!(
                out,
                "lockout = {{ max_wrong = {}, window = \"{}\", locked_for = \"{}\" }}",
                rng.random_range(1..=8),
                format_duration(Duration::from_secs(rng.random_range(5..=600))),
                format_duration(Duration::from_secs(rng.random_range(1..=300))),
            );
        }
        let mut knobs = self.rng(Feature::GroupKnobs, 0);
        let mut churn = self.rng(Feature::CodeChurn, 0);
        let mut stays = self.rng(Feature::Stays, 0);
        for g in groups {
            let say_model = base.random_bool(0.3);
            out.push_str("\n[[fleet.devices]]\n");
            let _ = writeln!(out, "kind = \"{}\"", g.kind);
            if g.model != "wifi" || say_model {
                let _ = writeln!(out, "model = \"{}\"", g.model);
            }
            let _ = writeln!(out, "per_site = {}", g.per_site);
            if !g.with.is_empty() {
                let list: Vec<String> = g.with.iter().map(|k| format!("\"{k}\"")).collect();
                let _ = writeln!(out, "with = [{}]", list.join(", "));
            }
            if self.has(Feature::GroupKnobs) {
                if g.is_lock() {
                    let _ = writeln!(
                        out,
                        "relock_after = \"{}\"",
                        format_duration(Duration::from_secs(knobs.random_range(7..=60)))
                    );
                    let _ = writeln!(out, "battery_start_pct = {}", knobs.random_range(10..=100));
                    let _ = writeln!(
                        out,
                        "battery_drain_pct_per_day = {:.2}",
                        knobs.random_range(0.0..10.0)
                    );
                    let _ = writeln!(
                        out,
                        "battery_pct_per_unlock = {:.3}",
                        knobs.random_range(0.0..0.5)
                    );
                    let _ = writeln!(out, "battery_low_pct = {}", knobs.random_range(5..=40));
                }
                let _ = writeln!(
                    out,
                    "offline_chance_per_hour = {:.2}",
                    knobs.random_range(0.0..0.9)
                );
                let _ = writeln!(
                    out,
                    "offline_for = \"{}\"",
                    format_duration(Duration::from_secs(knobs.random_range(30..=1800)))
                );
                if g.model == "ble" {
                    let _ = writeln!(
                        out,
                        "sync_every = \"{}\"",
                        format_duration(Duration::from_secs(knobs.random_range(120..=7200)))
                    );
                }
            }
            if self.has(Feature::CodeChurn) && g.has_slots() && churn.random_bool(0.4) {
                // Few slots, so code creates run into "lock full". The
                // provisioned codes still fit: at most 4 PINs, 2 expired,
                // 3 cards, 3 passes and 3 fallback codes, and with stays up
                // to 5 guests in turn on each PIN over 3 days.
                let least = if self.has(Feature::Stays) { 40 } else { 16 };
                let _ = writeln!(
                    out,
                    "code_slots = {}",
                    churn.random_range(least..=least + 16)
                );
            }
            if self.has(Feature::Stays) && g.is_lock() {
                let _ = writeln!(
                    out,
                    "guest = {{ can_open_remotely = {}, prevent_access_until_checked_in = {}, revoke_access_on_check_out = {} }}",
                    stays.random_bool(0.5),
                    stays.random_bool(0.5),
                    stays.random_bool(0.5),
                );
            }
        }
    }

    /// Writes `[credentials]`; returns what the actions may use.
    fn credentials(&self, out: &mut String, groups: &[Group]) -> Creds {
        let mut base = self.part(Part::Credentials);
        let mut c = Creds::default();
        out.push_str("\n[credentials]\n");
        let pins = base.random_range(1..=4);
        let permanent = base.random_range(1..=4);
        let say_mix = base.random_bool(0.3);
        let _ = writeln!(out, "pins_per_door = {pins}");
        // Its default, written so the format is covered; expired keys are
        // drawn by the visitor mix instead.
        let _ = writeln!(out, "expired_qr_keys_per_door = 0");
        // The PIN mix.
        let mut mix: Vec<(&str, u32)> = vec![("permanent", permanent)];
        let mut sched = self.rng(Feature::Schedules, 0);
        if self.has(Feature::Schedules) {
            for k in ["temporary", "recurring", "delivery"] {
                if sched.random_bool(0.7) {
                    mix.push((k, sched.random_range(1..=4)));
                }
            }
        }
        let mut stays = self.rng(Feature::Stays, 1);
        if self.has(Feature::Stays) {
            mix.push(("stay", stays.random_range(1..=4)));
        }
        if mix.len() > 1 || say_mix {
            let _ = writeln!(out, "mix = {{ {} }}", fractions(&mix));
        }
        if self.has(Feature::PinShapes) {
            let mut rng = self.rng(Feature::PinShapes, 0);
            let _ = writeln!(out, "six_digit_share = {:.2}", rng.random_range(0.0..=1.0));
            let _ = writeln!(out, "custom_share = {:.2}", rng.random_range(0.0..=1.0));
        }
        if self.has(Feature::Schedules) {
            c.expired = sched.random_range(1..=2);
            let _ = writeln!(out, "expired_pins_per_door = {}", c.expired);
        }
        if self.has(Feature::Cards) {
            c.cards = true;
            let n = self.rng(Feature::Cards, 0).random_range(1..=3);
            let _ = writeln!(out, "cards_per_door = {n}");
        }
        if self.has(Feature::Ble) {
            c.ble = true;
            let n = self.rng(Feature::Ble, 1).random_range(1..=3);
            let _ = writeln!(out, "ble_passes_per_door = {n}");
        }
        let mut phones = self.rng(Feature::DoorPhones, 1);
        if self.has(Feature::DoorPhones) {
            c.qr = true;
            let _ = writeln!(out, "qr_keys_per_door = {}", phones.random_range(1..=4));
        }
        if self.has(Feature::CodeChurn) && groups.iter().any(Group::has_lock) {
            let n = self.rng(Feature::CodeChurn, 1).random_range(0..=3);
            let _ = writeln!(out, "fallback_codes_per_lock = {n}");
        }
        let dst = self.has(Feature::Dst);
        if self.has(Feature::Schedules) {
            let _ = writeln!(
                out,
                "\n[credentials.temporary]\nvalid_for = \"{}\"",
                format_duration(Duration::from_secs(sched.random_range(600..=2 * 86_400)))
            );
            let days = weekdays(&mut sched);
            let _ = writeln!(
                out,
                "\n[credentials.recurring]\ndays = [{days}]\nwindow = \"{}\"",
                window(&mut sched, dst)
            );
            let _ = writeln!(
                out,
                "\n[credentials.delivery]\nvalid_for = \"{}\"\nmax_uses = {}",
                format_duration(Duration::from_secs(sched.random_range(600..=6 * 3600))),
                sched.random_range(0..=3)
            );
        }
        if self.has(Feature::DoorPhones) {
            out.push_str("\n[credentials.visitor]\n");
            match phones.random_range(0..3) {
                0 => {
                    out.push_str("repeat = \"never\"\n");
                    let _ = writeln!(out, "each_door_count = {}", phones.random_range(1..=3));
                }
                1 => {
                    out.push_str("repeat = \"daily\"\n");
                    let _ = writeln!(out, "window = \"{}\"", window(&mut phones, dst));
                }
                _ => {
                    out.push_str("repeat = \"weekly\"\n");
                    let _ = writeln!(out, "days = [{}]", weekdays(&mut phones));
                    let _ = writeln!(out, "window = \"{}\"", window(&mut phones, dst));
                }
            }
            let _ = writeln!(
                out,
                "valid_for = \"{}\"",
                format_duration(Duration::from_secs(phones.random_range(600..=3 * 86_400)))
            );
        }
        if self.has(Feature::Stays) {
            out.push_str("\n[credentials.stays]\n");
            let _ = writeln!(out, "nights = {}", stays.random_range(1..=3));
            let _ = writeln!(out, "check_in = \"{}\"", time_of_day(&mut stays, dst));
            let _ = writeln!(out, "check_out = \"{}\"", time_of_day(&mut stays, dst));
            let _ = writeln!(
                out,
                "early_arrival_share = {:.2}",
                stays.random_range(0.0..=1.0)
            );
            let _ = writeln!(
                out,
                "late_departure_share = {:.2}",
                stays.random_range(0.0..=1.0)
            );
        }
        c.pin_pads = groups.iter().any(Group::takes_pins);
        c.door_phones = groups.iter().any(Group::has_door_phone);
        c.locks = groups.iter().any(Group::has_lock);
        c.ble_locks = groups.iter().any(|g| g.is_lock() && g.model == "ble");
        c
    }

    fn phases(&self, out: &mut String, spans: &Spans, groups: &[Group], sites: u32) {
        let mut base = self.part(Part::Phases);
        let n = base.random_range(1..=3u32);
        // Cut the run into n phases of whole seconds.
        let total_s = spans.total.as_secs().max(u64::from(n));
        let mut cuts: Vec<u64> = (1..n).map(|_| base.random_range(1..total_s)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(total_s);
        let doors: u32 = groups.iter().map(|g| g.per_site).sum::<u32>() * sites;
        // Attempts over the whole run: a few hundred to a few thousand
        // (more, on few doors, when busy).
        let mut busy = self.rng(Feature::Busy, 0);
        let ordinary = base.random_range(50..=1500) as f64 * f64::from(doors.min(6)) / 6.0 + 50.0;
        let attempts = if self.has(Feature::Busy) {
            busy.random_range(500..=3000) as f64
        } else {
            ordinary
        };
        let mut closed = self.rng(Feature::ClosedModel, 0);
        for (i, w) in bounds.windows(2).enumerate() {
            let len_s = w[1] - w[0];
            let named = base.random_bool(0.5);
            let ramp = base.random_bool(0.3);
            let ramp_from = base.random_range(0.0..2.0);
            let cap = base.random_bool(0.2).then(|| base.random_range(20..=1000));
            out.push_str("\n[[phases]]\n");
            if named {
                let _ = writeln!(out, "name = \"p{}\"", i + 1);
            }
            let _ = writeln!(
                out,
                "duration = \"{}\"",
                format_duration(Duration::from_secs(len_s))
            );
            let rate_per_s = (attempts / total_s as f64).max(1.0 / 3600.0);
            if self.has(Feature::ClosedModel) && closed.random_bool(0.5) {
                let people = closed.random_range(1..=6u32);
                // Each person acts every think time: keep to the budget.
                let think_s = (f64::from(people) / rate_per_s).clamp(1.0, 86_400.0);
                let _ = writeln!(out, "people = {people}");
                let _ = writeln!(
                    out,
                    "think_time = \"{}\"",
                    format_duration(Duration::from_secs(think_s.ceil() as u64))
                );
                continue;
            }
            if ramp {
                let from = rate_per_s * ramp_from;
                let to = (2.0 * rate_per_s - from).max(1.0 / 3600.0);
                let _ = writeln!(
                    out,
                    "arrivals = {{ from = \"{}\", to = \"{}\" }}",
                    rate(from),
                    rate(to)
                );
            } else {
                let _ = writeln!(out, "arrivals = \"{}\"", rate(rate_per_s));
            }
            if self.has(Feature::Busy) {
                let _ = writeln!(out, "max_in_flight = {}", busy.random_range(1..=4));
            } else if let Some(cap) = cap {
                let _ = writeln!(out, "max_in_flight = {cap}");
            }
        }
    }

    fn actions(&self, out: &mut String, c: &Creds) {
        let mut base = self.part(Part::Actions);
        let mut mix: Vec<(&str, u32)> = Vec::new();
        let pin_valid = base.random_range(2..=10);
        if c.pin_pads {
            mix.push(("pin_valid", pin_valid));
        }
        if self.has(Feature::Schedules) && c.pin_pads && c.expired > 0 {
            mix.push((
                "pin_expired",
                self.rng(Feature::Schedules, 1).random_range(1..=3),
            ));
        }
        if self.has(Feature::Lockout) && c.pin_pads {
            mix.push((
                "pin_wrong",
                self.rng(Feature::Lockout, 1).random_range(1..=8),
            ));
        }
        if c.qr && c.door_phones {
            let mut rng = self.rng(Feature::DoorPhones, 2);
            mix.push(("qr_valid", rng.random_range(1..=4)));
            mix.push(("qr_replayed", rng.random_range(1..=3)));
            mix.push(("qr_expired", rng.random_range(1..=2)));
        }
        if c.cards && c.pin_pads {
            mix.push(("card", self.rng(Feature::Cards, 1).random_range(1..=4)));
        }
        if c.ble && c.ble_locks {
            mix.push(("ble", self.rng(Feature::Ble, 2).random_range(1..=4)));
        }
        if self.has(Feature::RemoteOpen) && c.locks {
            mix.push((
                "remote_open",
                self.rng(Feature::RemoteOpen, 0).random_range(1..=3),
            ));
        }
        if self.has(Feature::CodeChurn) && c.pin_pads {
            let mut rng = self.rng(Feature::CodeChurn, 2);
            mix.push(("code_create", rng.random_range(1..=2)));
            mix.push(("code_change", rng.random_range(1..=2)));
            mix.push(("code_revoke", rng.random_range(1..=2)));
        }
        // The base door takes PINs, so the mix is never empty.
        assert!(!mix.is_empty(), "the base door takes PINs");
        if self.has(Feature::SyncStorms) && c.locks {
            // A sync storm is a whole site's locks at once: about 1% of
            // arrivals (the other weights are scaled up).
            for (_, w) in &mut mix {
                *w *= 10;
            }
            let total: u32 = mix.iter().map(|(_, w)| w).sum();
            mix.push(("sync_storm", (total / 99).max(1)));
        }
        out.push_str("\n[actions]\n");
        let shares = hundredths(&mix);
        for ((a, _), h) in mix.iter().zip(shares) {
            let _ = writeln!(out, "{a} = {}", fraction_text(h));
        }
    }

    fn faults(&self, out: &mut String, spans: &Spans) {
        let mut lines = Vec::new();
        let total_s = spans.total.as_secs().max(1);
        let window = |rng: &mut ChaCha8Rng, max_for_s: u64| {
            let at = rng.random_range(0..total_s);
            let for_s = rng.random_range(1..=max_for_s.max(1));
            (
                format_duration(Duration::from_secs(at)),
                format_duration(Duration::from_secs(for_s)),
            )
        };
        if self.has(Feature::BrokerOutage) {
            let mut rng = self.rng(Feature::BrokerOutage, 0);
            let n = rng.random_range(1..=2);
            let list: Vec<String> = (0..n)
                .map(|_| {
                    let (at, for_) = window(&mut rng, 2);
                    format!("{{ at = \"{at}\", for = \"{for_}\" }}")
                })
                .collect();
            lines.push(if n == 1 {
                format!("broker_outage = {}", list[0])
            } else {
                format!("broker_outage = [{}]", list.join(", "))
            });
        }
        if self.has(Feature::OfflineWaves) {
            let mut rng = self.rng(Feature::OfflineWaves, 0);
            let n = rng.random_range(1..=2);
            let max_for_s = (total_s / 2).clamp(1, 1800);
            let list: Vec<String> = (0..n)
                .map(|_| {
                    let (at, for_) = window(&mut rng, max_for_s);
                    let share = rng.random_range(0.1..=0.9);
                    let model = match rng.random_range(0..3) {
                        0 => ", model = \"wifi\"",
                        1 => ", model = \"ble\"",
                        _ => "",
                    };
                    format!("{{ at = \"{at}\", for = \"{for_}\", share = {share:.2}{model} }}")
                })
                .collect();
            lines.push(if n == 1 {
                format!("offline_wave = {}", list[0])
            } else {
                format!("offline_wave = [{}]", list.join(", "))
            });
        }
        if self.has(Feature::Motor) {
            let p = self.rng(Feature::Motor, 0).random_range(0.01..=0.3);
            lines.push(format!("motor_blocked = {p:.3}"));
        }
        if self.has(Feature::AddedLatency) {
            let max_ms = if self.virtual_clock() { 300 } else { 20 };
            let ms = self.rng(Feature::AddedLatency, 0).random_range(1..=max_ms);
            lines.push(format!("engine_added_latency = \"{ms}ms\""));
        }
        if !lines.is_empty() {
            out.push_str("\n[faults]\n");
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
}

/// A local start somewhere in 2026, on the minute.
fn random_start(rng: &mut ChaCha8Rng) -> DateTime {
    let day = rng.random_range(0..360);
    let minute = rng.random_range(0..24 * 60);
    DateTime::constant(2026, 1, 1, 0, 0, 0, 0)
        .checked_add(jiff::Span::new().days(day).minutes(minute))
        .unwrap_or(DateTime::constant(2026, 1, 5, 8, 0, 0, 0))
}

/// What the credentials allow the actions to use.
#[derive(Default)]
struct Creds {
    expired: u32,
    cards: bool,
    ble: bool,
    qr: bool,
    pin_pads: bool,
    door_phones: bool,
    locks: bool,
    ble_locks: bool,
}

/// A rate as scenario files write it, in the unit that keeps it a whole
/// number where it can.
fn rate(per_s: f64) -> String {
    if per_s >= 1.0 {
        format!("{:.0}/s", per_s.round())
    } else if per_s * 60.0 >= 1.0 {
        format!("{:.0}/m", (per_s * 60.0).round())
    } else {
        format!("{:.0}/h", (per_s * 3600.0).round().max(1.0))
    }
}

/// Integer weights as hundredths adding up to exactly 100, each at least 1.
fn hundredths(weights: &[(&str, u32)]) -> Vec<u32> {
    let n = weights.len() as u32;
    assert!((1..=100).contains(&n), "1 to 100 weights");
    let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    let spare = u64::from(100 - n);
    let mut shares: Vec<u32> = weights
        .iter()
        .map(|(_, w)| 1 + (spare * u64::from(*w) / total.max(1)) as u32)
        .collect();
    // Hand what rounding left over to the largest weights first.
    let mut left = 100 - shares.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(weights[*i].1));
    for i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        shares[*i] += 1;
        left -= 1;
    }
    debug_assert_eq!(shares.iter().sum::<u32>(), 100);
    shares
}

fn fraction_text(h: u32) -> String {
    format!("{}.{:02}", h / 100, h % 100)
}

/// `a = 0.25, b = 0.75` for an inline table.
fn fractions(weights: &[(&str, u32)]) -> String {
    weights
        .iter()
        .zip(hundredths(weights))
        .map(|((k, _), h)| format!("{k} = {}", fraction_text(h)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A non-empty set of weekdays, quoted.
fn weekdays(rng: &mut ChaCha8Rng) -> String {
    let mut days: Vec<&str> = DAYS
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    if days.is_empty() {
        days.push(DAYS[rng.random_range(0..7)]);
    }
    days.iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time of day; around the hours clocks change (01:00-03:59) when `dst`.
fn time_of_day(rng: &mut ChaCha8Rng, dst: bool) -> String {
    let h = if dst && rng.random_bool(0.6) {
        rng.random_range(1..=3)
    } else {
        rng.random_range(0..24)
    };
    let m = rng.random_range(0..60);
    if rng.random_bool(0.2) {
        format!("{h:02}:{m:02}:{:02}", rng.random_range(0..60))
    } else {
        format!("{h:02}:{m:02}")
    }
}

/// A daily window: ordinary, crossing midnight, the whole day (start ==
/// end), or around the changed hour.
fn window(rng: &mut ChaCha8Rng, dst: bool) -> String {
    let hm = |rng: &mut ChaCha8Rng, dst: bool| {
        let h = if dst && rng.random_bool(0.6) {
            rng.random_range(1..=3)
        } else {
            rng.random_range(0..24)
        };
        format!("{h:02}:{:02}", [0, 15, 30, 45][rng.random_range(0..4)])
    };
    let start = hm(rng, dst);
    if rng.random_bool(0.1) {
        return format!("{start}-{start}");
    }
    format!("{start}-{}", hm(rng, dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hundredths_add_up_to_100() {
        for ws in [
            vec![("a", 1)],
            vec![("a", 1), ("b", 1), ("c", 1)],
            vec![("a", 7), ("b", 1), ("c", 400), ("d", 3)],
        ] {
            let h = hundredths(&ws);
            assert_eq!(h.iter().sum::<u32>(), 100, "{ws:?}");
            assert!(h.iter().all(|x| *x >= 1));
        }
    }

    #[test]
    fn rates_keep_their_value() {
        for per_s in [0.001, 0.02, 0.5, 1.0, 37.4] {
            let text = rate(per_s);
            let back = crate::scenario::units::parse_rate(&text).unwrap();
            assert!(
                (back - per_s).abs() / per_s < 0.5,
                "{per_s} -> {text} -> {back}"
            );
        }
    }

    #[test]
    fn excluding_a_feature_keeps_the_others() {
        for seed in 0..200 {
            let all = generate(seed, Transport::Inproc, &FeatureSet::all());
            let less = generate(
                seed,
                Transport::Inproc,
                &FeatureSet::without(&[Feature::Lockout]),
            );
            let mut expected = all.features.clone();
            expected.0.remove(&Feature::Lockout);
            assert_eq!(less.features, expected, "seed {seed}");
        }
    }
}
