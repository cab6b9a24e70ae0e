//! Run metrics: what the harness measures and how it is exported.
//!
//! - [`Recorder`]: one per worker thread (never one per device). It keeps HDR
//!   histograms per operation and outcome, per-interval histograms for charts
//!   and interval logs, decision counts against the oracle and device health.
//!   Recording takes `&mut self`: no lock and no allocation on the record path.
//! - [`Snapshot`]: the merge of any number of recorders (or shards); taken on
//!   demand and at the end of a run, it is what a report is built from.
//! - [`catalogue`]: every metric a threshold may name, the one list the
//!   checker, the reports, the schema and the docs derive from.
//! - [`cost`]: what the harness itself costs (process CPU time, cores used)
//!   and whether it was the bottleneck.
//! - [`FleetMetrics`]: the Prometheus registry with every handle resolved once,
//!   served by [`MetricsExporter`] on `/metrics`.
//!
//! # Coordinated omission
//!
//! Latencies are recorded as `completed - intended`, where `intended` is the
//! time the load model scheduled the operation to start (open model), not the
//! time it actually started. When the system under test stalls, operations
//! queue up behind it; measuring from the intended start charges that queueing
//! to the latency, so a slow server cannot hide it (the wrk2/HdrHistogram
//! remedy for coordinated omission). In the closed model the caller passes the
//! actual start as `intended`, and the report labels the run as closed.

pub mod catalogue;
pub mod cost;
mod decisions;
mod exporter;
pub mod hdr;
mod health;
mod prom;
mod recorder;
mod timings;

pub use decisions::{DecisionClass, DecisionCounts, DecisionExample, DecisionTally, MAX_EXAMPLES};
pub use exporter::{ExporterError, MetricsExporter, CONTENT_TYPE};
pub use health::{
    DeviceCounts, HealthTally, BATTERY_BUCKETS, CODE_SYNC_STORED, CODE_SYNC_UNFINISHED,
};
pub use prom::{FleetMetrics, MetricDesc, MAX_EVENT_KINDS};
pub use recorder::{
    interval_us_for, IntervalSlot, IntervalTotals, Recorder, Snapshot, DEFAULT_INTERVAL_US,
    INTERVAL_STEPS_S, MAX_INTERVALS, MAX_LATENCY_US, PLANNED_INTERVALS,
};
pub use reference_server::domain::DeviceKind;
pub use timings::Timings;

/// An operation the harness times. Labels are stable: they appear in reports,
/// interval log tags and the `operation` Prometheus label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// A PIN typed on a keypad, checked by the engine.
    PinCheck,
    /// A QR code scanned by a door phone.
    QrCheck,
    /// An RF card presented to a reader.
    CardCheck,
    /// A BLE pass presented to a Bluetooth lock.
    BleCheck,
    /// Credential delta pushed to a device until its acknowledgement.
    SyncRoundTrip,
    /// "Open Door" from the platform until the lock acknowledges.
    RemoteOpen,
    /// A device event until the engine has logged it.
    EventDelivery,
}

impl Operation {
    pub const COUNT: usize = 7;
    pub const ALL: [Operation; Operation::COUNT] = [
        Operation::PinCheck,
        Operation::QrCheck,
        Operation::CardCheck,
        Operation::BleCheck,
        Operation::SyncRoundTrip,
        Operation::RemoteOpen,
        Operation::EventDelivery,
    ];

    /// The label used in reports, interval logs and Prometheus.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::PinCheck => "pin_check",
            Operation::QrCheck => "qr_check",
            Operation::CardCheck => "card_check",
            Operation::BleCheck => "ble_check",
            Operation::SyncRoundTrip => "sync_round_trip",
            Operation::RemoteOpen => "remote_open",
            Operation::EventDelivery => "event_delivery",
        }
    }

    /// True for the four credential checks (the ones the oracle judges).
    pub const fn is_credential_check(self) -> bool {
        matches!(
            self,
            Operation::PinCheck | Operation::QrCheck | Operation::CardCheck | Operation::BleCheck
        )
    }

    /// True for deliveries the devices and the engine make on their own
    /// (events, code syncs), as opposed to requests someone waits for;
    /// `errors.*` counts only the latter.
    pub const fn is_delivery(self) -> bool {
        matches!(self, Operation::SyncRoundTrip | Operation::EventDelivery)
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.as_str() == s)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A check answered "granted", or any other operation that succeeded.
    Granted,
    /// A check answered "denied" (a valid answer, not an error).
    Denied,
    /// No valid answer: timeout, transport failure, malformed reply, device fault.
    Error,
}

impl Outcome {
    pub const COUNT: usize = 3;
    pub const ALL: [Outcome; Outcome::COUNT] = [Outcome::Granted, Outcome::Denied, Outcome::Error];

    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// What the oracle expects a credential check to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Grant,
    Deny,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Grant => "granted",
            Verdict::Deny => "denied",
        }
    }
}

/// The transport label (bounded: one of three).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Inproc,
    Mqtt,
    Http,
}

impl Transport {
    pub const COUNT: usize = 3;
    pub const ALL: [Transport; Transport::COUNT] =
        [Transport::Inproc, Transport::Mqtt, Transport::Http];

    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Inproc => "inproc",
            Transport::Mqtt => "mqtt",
            Transport::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// Device kinds are the engine's own ([`reference_server::domain::DeviceKind`]);
/// these are the four label values, in a fixed order for indexed handles.
pub const DEVICE_KINDS: [DeviceKind; 4] = [
    DeviceKind::Lock,
    DeviceKind::Keypad,
    DeviceKind::DoorSensor,
    DeviceKind::DoorPhone,
];

/// Position of a device kind in [`DEVICE_KINDS`].
pub(crate) const fn device_kind_index(kind: DeviceKind) -> usize {
    match kind {
        DeviceKind::Lock => 0,
        DeviceKind::Keypad => 1,
        DeviceKind::DoorSensor => 2,
        DeviceKind::DoorPhone => 3,
    }
}
