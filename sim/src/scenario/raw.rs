//! The scenario file as written: serde structs that mirror the TOML, with
//! `deny_unknown_fields` and a span on every value, so each later error can
//! point at file:line:col. The JSON Schema `fleetsim schema` prints, and the
//! structural checker in `check.rs` walks, are generated from these types:
//! the structs are the single definition of the format.
//!
//! Values with units stay strings here ("2m", "100/s"); `compile.rs` turns
//! them into checked numbers. Defaults are documented on each field and
//! applied in `compile.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use schemars::gen::SchemaGenerator;
use schemars::schema::{
    ArrayValidation, InstanceType, Metadata, ObjectValidation, Schema, SchemaObject,
    StringValidation, SubschemaValidation,
};
use schemars::JsonSchema;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A value with the byte range it came from.
///
/// Like `toml::Spanned`, but also accepts tables TOML creates implicitly
/// (`[credentials.visitor]` with no `[credentials]` line), which carry no
/// span and make `toml::Spanned` fail; those get the empty span `0..0`.
#[derive(Clone, Debug)]
pub struct Sp<T> {
    pub span: Range<usize>,
    pub value: T,
}

impl<T> Sp<T> {
    pub fn new(span: Range<usize>, value: T) -> Sp<T> {
        Sp { span, value }
    }
    pub fn get(&self) -> &T {
        &self.value
    }
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }
}

// Compare by value only, as `toml::Spanned` does (map keys).
impl<T: PartialEq> PartialEq for Sp<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for Sp<T> {}
impl<T: PartialOrd> PartialOrd for Sp<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.value.partial_cmp(&other.value)
    }
}
impl<T: Ord> Ord for Sp<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

// serde_spanned's protocol: the TOML deserializer answers a request for
// this struct with a map {start, end, value} when it knows the span.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, SpVisitor(PhantomData))
    }
}

struct SpVisitor<T>(PhantomData<T>);

fn unspanned<T>(value: T) -> Sp<T> {
    Sp::new(0..0, value)
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for SpVisitor<T> {
    type Value = Sp<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sp<T>, A::Error> {
        use serde::de::Error;
        let first: Option<String> = map.next_key()?;
        if first.as_deref() != Some(SPANNED_START) {
            // A table without a span: hand it to T with its first key replayed.
            let replay = Replay { first, map };
            return T::deserialize(MapAccessDeserializer::new(replay)).map(unspanned);
        }
        let start: usize = map.next_value()?;
        if map.next_key::<String>()?.as_deref() != Some(SPANNED_END) {
            return Err(A::Error::custom("spanned value without an end"));
        }
        let end: usize = map.next_value()?;
        if map.next_key::<String>()?.as_deref() != Some(SPANNED_VALUE) {
            return Err(A::Error::custom("spanned value without a value"));
        }
        let value: T = map.next_value()?;
        Ok(Sp::new(start..end, value))
    }

    // Values the deserializer had no span for arrive as themselves.
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Sp<T>, E> {
        T::deserialize(v.into_deserializer()).map(unspanned)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Sp<T>, E> {
        T::deserialize(v.into_deserializer()).map(unspanned)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Sp<T>, E> {
        T::deserialize(v.into_deserializer()).map(unspanned)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Sp<T>, E> {
        T::deserialize(v.into_deserializer()).map(unspanned)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sp<T>, E> {
        T::deserialize(v.to_string().into_deserializer()).map(unspanned)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Sp<T>, A::Error> {
        T::deserialize(SeqAccessDeserializer::new(seq)).map(unspanned)
    }
}

/// A map whose first key was already read, replayed before the rest.
struct Replay<A> {
    first: Option<String>,
    map: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.first.take() {
            Some(k) => seed.deserialize(k.into_deserializer()).map(Some),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn is_referenceable() -> bool {
        false
    }
    fn schema_name() -> String {
        T::schema_name()
    }
    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        gen.subschema_for::<T>()
    }
}

/// String formats the checker knows how to validate (and editors show).
pub mod format {
    pub const DURATION: &str = "duration";
    pub const RATE: &str = "rate";
    pub const TIME_OF_DAY: &str = "time-of-day";
    pub const DAILY_WINDOW: &str = "daily-window";
    pub const TIME_ZONE: &str = "time-zone";
    pub const THRESHOLD: &str = "threshold";
    pub const LOCAL_DATE_TIME: &str = "local-date-time";
}

fn string_schema(format: &str, pattern: &str, description: &str, example: &str) -> Schema {
    SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        format: Some(format.to_string()),
        string: Some(Box::new(StringValidation {
            pattern: Some(pattern.to_string()),
            ..Default::default()
        })),
        metadata: Some(Box::new(Metadata {
            description: Some(description.to_string()),
            examples: vec![example.into()],
            ..Default::default()
        })),
        ..Default::default()
    }
    .into()
}

/// A string with a unit; the checker validates it by `format`.
macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $format:expr, $pattern:expr, $desc:expr, $example:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl JsonSchema for $name {
            fn is_referenceable() -> bool {
                false
            }
            fn schema_name() -> String {
                stringify!($name).to_string()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                string_schema($format, $pattern, $desc, $example)
            }
        }
    };
}

text_type!(
    /// "250ms", "30s", "2m", "1h30m", "30d".
    DurationText,
    format::DURATION,
    r"^\s*(\d+(\.\d+)?\s*(ms|s|m|min|h|d)\s*)+$",
    "A duration: a number and a unit (ms, s, m, h, d), e.g. '30s', '2m', '1h30m'.",
    "30s"
);
text_type!(
    /// "100/s", "600/m", "50/h".
    RateText,
    format::RATE,
    r"^\s*\d+(\.\d+)?\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$",
    "A rate: a number per time unit, e.g. '100/s', '600/m'.",
    "100/s"
);
text_type!(
    /// "15:00".
    TimeOfDayText,
    format::TIME_OF_DAY,
    r"^\d{1,2}:\d{2}(:\d{2})?$",
    "A time of day on the 24-hour clock, e.g. '15:00' (seconds optional: '15:00:30').",
    "15:00"
);
text_type!(
    /// "08:00-18:00".
    WindowText,
    format::DAILY_WINDOW,
    r"^\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}$",
    "A daily window, e.g. '08:00-18:00'; an end before the start crosses midnight.",
    "08:00-18:00"
);
text_type!(
    /// "Europe/Berlin".
    TimeZoneText,
    format::TIME_ZONE,
    r"^[A-Za-z0-9_+\-/]+$",
    "An IANA time zone name, e.g. 'Europe/Berlin', 'America/New_York', 'UTC'.",
    "Europe/Berlin"
);
text_type!(
    /// "< 25ms".
    ThresholdText,
    format::THRESHOLD,
    r"^\s*(<=|>=|==|!=|<|>)\s*\d+(\.\d+)?\s*(us|µs|ms|s|%|/s)?\s*$",
    "A comparator and a value with a unit, e.g. '< 25ms', '== 0', '< 0.1%', '>= 500/s'.",
    "< 25ms"
);
/// The schema of `[thresholds]`: one property per name of the metric
/// catalogue, so editors complete metric names and show what each
/// measures. Other keys still reach the checker's threshold check, which
/// names the closest metric.
pub struct ThresholdTable;

impl JsonSchema for ThresholdTable {
    fn is_referenceable() -> bool {
        false
    }
    fn schema_name() -> String {
        "Thresholds".to_string()
    }
    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        use crate::metrics::catalogue;
        let mut properties = schemars::Map::new();
        for e in catalogue::entries() {
            let unit = match e.unit() {
                "" => String::new(),
                u => format!(", in {u}"),
            };
            let about = format!(
                "{} ({}{unit}): {}. Write the value as {}.",
                e.name(),
                e.kind().as_str(),
                e.description(),
                e.kind().written_as().replace('`', "")
            );
            let mut value = ThresholdText::json_schema(gen).into_object();
            value.metadata().description = Some(about);
            properties.insert(e.name(), value.into());
        }
        let names = catalogue::names().into_iter().map(Into::into).collect();
        SchemaObject {
            instance_type: Some(InstanceType::Object.into()),
            object: Some(Box::new(ObjectValidation {
                properties,
                additional_properties: Some(Box::new(ThresholdText::json_schema(gen))),
                property_names: Some(Box::new(
                    SchemaObject {
                        enum_values: Some(names),
                        ..Default::default()
                    }
                    .into(),
                )),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into()
    }
}

text_type!(
    /// "2026-03-27T08:00".
    LocalDateTimeText,
    format::LOCAL_DATE_TIME,
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?$",
    "A local date and time in the first site's time zone, e.g. '2026-03-27T08:00'.",
    "2026-03-27T08:00"
);

/// A fleetsim scenario: the fleet to simulate, the credentials to provision,
/// the load phases, what people do, the faults to inject and the pass/fail
/// thresholds.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "fleetsim scenario")]
pub struct RawScenario {
    /// Short name, shown in reports and `fleetsim list`. Required.
    pub name: Sp<String>,
    /// One line for the QA reader. Default: empty.
    pub description: Option<Sp<String>>,
    /// Seeds every random choice; the same seed replays the same run.
    /// Default: a fresh seed per run, printed at start. `--seed` overrides.
    pub seed: Option<Sp<u64>>,
    /// How devices reach the engine: inproc | mqtt | http. Default: inproc.
    /// `--transport` overrides.
    pub transport: Option<Sp<Transport>>,
    /// real (wall clock) | virtual (as fast as the CPU allows; inproc only).
    /// Default: real.
    pub clock: Option<Sp<Clock>>,
    /// Local date and time the run starts at, in the first site's time zone.
    /// Default: now (real clock), 2026-01-05T08:00 (virtual clock, a Monday).
    pub start_at: Option<Sp<LocalDateTimeText>>,
    /// Judge latency thresholds in virtual time too. Latencies there are
    /// simulated (a timer's rounding, not a measurement), so by default
    /// their thresholds are reported as "not judged: simulated". Default:
    /// false. Virtual clock only.
    pub judge_simulated_latency: Option<Sp<bool>>,
    /// The simulated fleet. Required.
    pub fleet: Sp<RawFleet>,
    /// Credentials provisioned through the engine before the load starts.
    pub credentials: Option<Sp<RawCredentials>>,
    /// Load phases, run one after the other. At least one.
    pub phases: Sp<Vec<Sp<RawPhase>>>,
    /// What people do at the doors, as fractions adding up to 1.
    /// Default: pin_valid = 1.
    pub actions: Option<Sp<RawActions>>,
    /// Faults injected during the run. Default: none.
    pub faults: Option<Sp<RawFaults>>,
    /// Pass/fail criteria: "metric" = "comparator value", e.g.
    /// "check.pin.p99" = "< 25ms". Any failure makes the exit code 1.
    #[schemars(with = "Option<ThresholdTable>")]
    pub thresholds: Option<Sp<BTreeMap<Sp<String>, Sp<ThresholdText>>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// The engine in the fleetsim process: the engine's and actors' own cost.
    Inproc,
    /// Devices speak MQTT to a broker (embedded, or `--broker`).
    Mqtt,
    /// Devices POST each check to an HTTP backend (embedded, or `--target`).
    Http,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    Real,
    Virtual,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "DeviceKind")]
pub enum RawDeviceKind {
    Lock,
    Keypad,
    DoorSensor,
    DoorPhone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Model")]
pub enum RawModel {
    /// Online checks; codes sync in seconds.
    Wifi,
    /// Decides from its local cache; syncs when a phone or gateway is near.
    Ble,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Weekday")]
pub enum RawWeekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Repeat")]
pub enum RawRepeat {
    Never,
    Daily,
    Weekly,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Fleet")]
pub struct RawFleet {
    /// Number of sites (buildings, communities or rental listings). Default: 1.
    #[schemars(range(min = 1, max = 10000))]
    pub sites: Option<Sp<u32>>,
    /// IANA time zone of every site. Default: "UTC". Use either this or `timezones`.
    pub timezone: Option<Sp<TimeZoneText>>,
    /// IANA time zones handed to the sites in turn (site 1 gets the first...).
    pub timezones: Option<Sp<Vec<Sp<TimeZoneText>>>>,
    /// Sites allow 6-digit PINs (4 digits always are). Default: false.
    pub six_digit_pins: Option<Sp<bool>>,
    /// Residents may pick their own PIN. Default: false.
    pub custom_pins: Option<Sp<bool>>,
    /// Keypad brute-force lockout. Default: 5 wrong PINs within 60s lock for 30s.
    pub lockout: Option<Sp<RawLockout>>,
    /// Device groups; every site gets each group. At least one.
    pub devices: Sp<Vec<Sp<RawDeviceGroup>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Lockout")]
pub struct RawLockout {
    /// Wrong PINs that lock the keypad. Default: 5.
    #[schemars(range(min = 1, max = 16))]
    pub max_wrong: Option<Sp<u8>>,
    /// Window the wrong PINs are counted in. Default: "60s".
    pub window: Option<Sp<DurationText>>,
    /// How long the keypad stays locked. Default: "30s".
    pub locked_for: Option<Sp<DurationText>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DeviceGroup")]
pub struct RawDeviceGroup {
    /// lock | keypad | door_sensor | door_phone. Required.
    pub kind: Sp<RawDeviceKind>,
    /// wifi | ble. Default: wifi.
    pub model: Option<Sp<RawModel>>,
    /// Doors of this kind on each site. Required.
    #[schemars(range(min = 1, max = 100000))]
    pub per_site: Sp<u32>,
    /// Devices mounted on the same door (locks and door phones only),
    /// e.g. ["keypad", "door_sensor"]. Default: [].
    pub with: Option<Sp<Vec<Sp<RawDeviceKind>>>>,
    /// Locks: auto-relock delay (real locks: 7-60s). Default: "30s".
    pub relock_after: Option<Sp<DurationText>>,
    /// Locks and keypads: code slots (Yale: 250). Default: 250.
    #[schemars(range(min = 1, max = 10000))]
    pub code_slots: Option<Sp<u16>>,
    /// Locks: battery level at start, percent. Default: 100.
    #[schemars(range(min = 0, max = 100))]
    pub battery_start_pct: Option<Sp<f64>>,
    /// Locks: drain at rest, percent per day. Default: 0.2.
    #[schemars(range(min = 0, max = 100))]
    pub battery_drain_pct_per_day: Option<Sp<f64>>,
    /// Locks: extra drain per unlock, percent. Default: 0.005.
    #[schemars(range(min = 0, max = 100))]
    pub battery_pct_per_unlock: Option<Sp<f64>>,
    /// Locks: level that raises a low-battery event, percent. Default: 20.
    #[schemars(range(min = 0, max = 100))]
    pub battery_low_pct: Option<Sp<f64>>,
    /// Chance that a device drops offline in any given hour. Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub offline_chance_per_hour: Option<Sp<f64>>,
    /// How long a device stays offline when it drops. Default: "5m".
    pub offline_for: Option<Sp<DurationText>>,
    /// BLE devices: how often a phone or gateway comes in range to sync codes.
    /// Default: "30m".
    pub sync_every: Option<Sp<DurationText>>,
    /// Locks: per-lock guest settings. Default: all false.
    pub guest: Option<Sp<RawGuest>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Guest")]
pub struct RawGuest {
    /// Guests may use Open Door remotely. Default: false.
    pub can_open_remotely: Option<Sp<bool>>,
    /// A guest's code does not work before check-in. Default: false.
    pub prevent_access_until_checked_in: Option<Sp<bool>>,
    /// A guest's code is revoked at check-out. Default: false.
    pub revoke_access_on_check_out: Option<Sp<bool>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Credentials")]
pub struct RawCredentials {
    /// PIN codes provisioned for each door. Default: 10.
    #[schemars(range(max = 10000))]
    pub pins_per_door: Option<Sp<u32>>,
    /// Schedules of those PINs, as fractions adding up to 1.
    /// Default: permanent = 1.
    pub mix: Option<Sp<RawPinMix>>,
    /// Share of PINs with 6 digits (needs fleet.six_digit_pins). Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub six_digit_share: Option<Sp<f64>>,
    /// Share of permanent PINs the holder picked (needs fleet.custom_pins). Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub custom_share: Option<Sp<f64>>,
    /// PINs per door whose validity ended before the run (for pin_expired). Default: 0.
    #[schemars(range(max = 10000))]
    pub expired_pins_per_door: Option<Sp<u32>>,
    /// RF cards per door. Default: 0.
    #[schemars(range(max = 10000))]
    pub cards_per_door: Option<Sp<u32>>,
    /// BLE passes per door (BLE locks). Default: 0.
    #[schemars(range(max = 10000))]
    pub ble_passes_per_door: Option<Sp<u32>>,
    /// Visitor QR temp keys per door phone. Default: 0.
    #[schemars(range(max = 10000))]
    pub qr_keys_per_door: Option<Sp<u32>>,
    /// Visitor QR keys per door phone whose validity ended before the run
    /// (for qr_expired). Default: 0.
    #[schemars(range(max = 10000))]
    pub expired_qr_keys_per_door: Option<Sp<u32>>,
    /// Fallback (backup) codes pre-loaded on each lock. Default: 0.
    #[schemars(range(max = 1000))]
    pub fallback_codes_per_lock: Option<Sp<u32>>,
    /// Temporary PINs.
    pub temporary: Option<Sp<RawTemporary>>,
    /// Recurring PINs.
    pub recurring: Option<Sp<RawRecurring>>,
    /// Courier (delivery) PINs.
    pub delivery: Option<Sp<RawDelivery>>,
    /// Visitor QR temp keys.
    pub visitor: Option<Sp<RawVisitor>>,
    /// Guest stays (the `stay` part of the mix).
    pub stays: Option<Sp<RawStays>>,
}

/// Fractions of PINs per schedule kind; they must add up to 1.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PinMix")]
pub struct RawPinMix {
    /// "Always". Default: 0 (1 when `mix` is absent).
    #[schemars(range(min = 0, max = 1))]
    pub permanent: Option<Sp<f64>>,
    /// Valid from start to end. Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub temporary: Option<Sp<f64>>,
    /// Weekdays and a daily window. Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub recurring: Option<Sp<f64>>,
    /// Courier PINs, short window, limited uses. Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub delivery: Option<Sp<f64>>,
    /// Tied to a guest stay (check-in/check-out). Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub stay: Option<Sp<f64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Temporary")]
pub struct RawTemporary {
    /// How long each temporary PIN is valid from the run's start. Default: "8h".
    pub valid_for: Option<Sp<DurationText>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Recurring")]
pub struct RawRecurring {
    /// Weekdays. Default: ["mon", "tue", "wed", "thu", "fri"].
    pub days: Option<Sp<Vec<Sp<RawWeekday>>>>,
    /// Local daily window. Default: "08:00-18:00".
    pub window: Option<Sp<WindowText>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Delivery")]
pub struct RawDelivery {
    /// How long each delivery PIN is valid. Default: "2h".
    pub valid_for: Option<Sp<DurationText>>,
    /// Grants allowed in all; 0 means unlimited. Default: 1.
    pub max_uses: Option<Sp<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Visitor")]
pub struct RawVisitor {
    /// never | daily | weekly. Default: never.
    pub repeat: Option<Sp<RawRepeat>>,
    /// With repeat = never: grants allowed on each door. Default: 1.
    #[schemars(range(min = 1))]
    pub each_door_count: Option<Sp<u32>>,
    /// How long each key is valid. Default: "1d".
    pub valid_for: Option<Sp<DurationText>>,
    /// With repeat = weekly: the weekdays. Default: ["mon".."fri"].
    pub days: Option<Sp<Vec<Sp<RawWeekday>>>>,
    /// With repeat = daily or weekly: the local window. Default: "08:00-20:00".
    pub window: Option<Sp<WindowText>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stays")]
pub struct RawStays {
    /// Nights per stay. Default: 3.
    #[schemars(range(min = 1, max = 365))]
    pub nights: Option<Sp<u32>>,
    /// Local check-in time. Default: "15:00".
    pub check_in: Option<Sp<TimeOfDayText>>,
    /// Local check-out time. Default: "11:00".
    pub check_out: Option<Sp<TimeOfDayText>>,
    /// Share of guests who arrive before check-in time. Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub early_arrival_share: Option<Sp<f64>>,
    /// Share of guests who try their code after check-out. Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub late_departure_share: Option<Sp<f64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Phase")]
pub struct RawPhase {
    /// Shown in the progress line and reports. Default: "phase-N".
    pub name: Option<Sp<String>>,
    /// How long the phase lasts, e.g. "2m". Required.
    pub duration: Sp<DurationText>,
    /// Open model: people arriving at doors, "100/s" or a ramp
    /// { from = "10/s", to = "2000/s" }. Use this or `people`.
    pub arrivals: Option<Sp<RawArrivals>>,
    /// Closed model: people acting concurrently. Use this or `arrivals`.
    #[schemars(range(min = 1, max = 1000000))]
    pub people: Option<Sp<u32>>,
    /// Closed model: pause between one person's actions. Default: "1s".
    pub think_time: Option<Sp<DurationText>>,
    /// Open model: actions in flight at most; arrivals beyond are counted
    /// as dropped, never queued without bound. Default: 10000.
    #[schemars(range(min = 1, max = 1000000))]
    pub max_in_flight: Option<Sp<u32>>,
}

/// A constant rate ("100/s") or a linear ramp.
#[derive(Debug)]
pub enum RawArrivals {
    Constant(RateText),
    Ramp(RawRamp),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ramp")]
pub struct RawRamp {
    /// Rate at the start of the phase, e.g. "10/s". Required.
    pub from: Sp<RateText>,
    /// Rate at the end of the phase, e.g. "2000/s". Required.
    pub to: Sp<RateText>,
}

// Hand-written rather than `#[serde(untagged)]`: untagged buffers the value
// and would lose the spans inside the ramp table.
impl<'de> Deserialize<'de> for RawArrivals {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawArrivals;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rate like \"100/s\" or a table { from = \"10/s\", to = \"100/s\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawArrivals, E> {
                Ok(RawArrivals::Constant(RateText(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawArrivals, A::Error> {
                RawRamp::deserialize(MapAccessDeserializer::new(map)).map(RawArrivals::Ramp)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawArrivals {
    fn schema_name() -> String {
        "Arrivals".to_string()
    }
    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        any_of(vec![
            gen.subschema_for::<RateText>(),
            gen.subschema_for::<RawRamp>(),
        ])
    }
}

fn any_of(schemas: Vec<Schema>) -> Schema {
    SchemaObject {
        subschemas: Some(Box::new(SubschemaValidation {
            any_of: Some(schemas),
            ..Default::default()
        })),
        ..Default::default()
    }
    .into()
}

/// One table, or an array of them (`broker_outage = { at = "5m", for = "20s" }`
/// or `broker_outage = [{...}, {...}]`).
#[derive(Debug)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn is_referenceable() -> bool {
        false
    }
    fn schema_name() -> String {
        format!("OneOrMany_{}", T::schema_name())
    }
    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        let one = gen.subschema_for::<T>();
        let many: Schema = SchemaObject {
            instance_type: Some(InstanceType::Array.into()),
            array: Some(Box::new(ArrayValidation {
                items: Some(one.clone().into()),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into();
        any_of(vec![one, many])
    }
}

/// Fractions of actions; they must add up to 1.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Actions")]
pub struct RawActions {
    /// A valid PIN at a keypad (expected: granted).
    #[schemars(range(min = 0, max = 1))]
    pub pin_valid: Option<Sp<f64>>,
    /// A wrong PIN (expected: denied; repeated ones trigger lockout).
    #[schemars(range(min = 0, max = 1))]
    pub pin_wrong: Option<Sp<f64>>,
    /// A PIN whose validity has ended (expected: denied, expired).
    #[schemars(range(min = 0, max = 1))]
    pub pin_expired: Option<Sp<f64>>,
    /// A valid visitor QR key at a door phone (expected: granted).
    #[schemars(range(min = 0, max = 1))]
    pub qr_valid: Option<Sp<f64>>,
    /// A QR key shown again after its uses ran out (expected: denied).
    #[schemars(range(min = 0, max = 1))]
    pub qr_replayed: Option<Sp<f64>>,
    /// A QR key past its end (expected: denied, expired).
    #[schemars(range(min = 0, max = 1))]
    pub qr_expired: Option<Sp<f64>>,
    /// An RF card at a reader (expected: granted).
    #[schemars(range(min = 0, max = 1))]
    pub card: Option<Sp<f64>>,
    /// A BLE pass at a Bluetooth lock (expected: granted).
    #[schemars(range(min = 0, max = 1))]
    pub ble: Option<Sp<f64>>,
    /// Open Door from the platform.
    #[schemars(range(min = 0, max = 1))]
    pub remote_open: Option<Sp<f64>>,
    /// An admin creates a PIN during the run (it must sync before it works).
    #[schemars(range(min = 0, max = 1))]
    pub code_create: Option<Sp<f64>>,
    /// A holder changes their PIN (the old one works until the lock confirms).
    #[schemars(range(min = 0, max = 1))]
    pub code_change: Option<Sp<f64>>,
    /// An admin revokes a PIN (it must stop working once synced).
    #[schemars(range(min = 0, max = 1))]
    pub code_revoke: Option<Sp<f64>>,
    /// A device asks for its whole code set again.
    #[schemars(range(min = 0, max = 1))]
    pub sync_storm: Option<Sp<f64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Faults")]
pub struct RawFaults {
    /// The broker goes away at `at` for `for` (mqtt only).
    pub broker_outage: Option<Sp<OneOrMany<RawWindow>>>,
    /// A share of devices goes offline at `at` for `for`.
    pub offline_wave: Option<Sp<OneOrMany<RawOfflineWave>>>,
    /// Chance that a lock's motor blocks, per actuation. Default: 0.
    #[schemars(range(min = 0, max = 1))]
    pub motor_blocked: Option<Sp<f64>>,
    /// Latency added to every engine decision. Default: "0ms".
    pub engine_added_latency: Option<Sp<DurationText>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Window")]
pub struct RawWindow {
    /// Time since the run started, e.g. "5m". Required.
    pub at: Sp<DurationText>,
    /// How long it lasts, e.g. "20s". Required.
    #[serde(rename = "for")]
    pub for_: Sp<DurationText>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OfflineWave")]
pub struct RawOfflineWave {
    /// Time since the run started. Required.
    pub at: Sp<DurationText>,
    /// How long the devices stay offline. Required.
    #[serde(rename = "for")]
    pub for_: Sp<DurationText>,
    /// Share of devices that go offline. Required.
    #[schemars(range(min = 0, max = 1))]
    pub share: Sp<f64>,
    /// Only devices of this model (wifi | ble). Default: both.
    pub model: Option<Sp<RawModel>>,
}
