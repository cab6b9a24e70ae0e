//! The gateway's Prometheus metrics. Labels are bounded (a reason, a channel,
//! a decision); the only device ids are those of the few devices that had
//! most dropped (`gateway_device_dropped_top`, at most
//! [`TOP_OFFENDERS`](crate::limits::TOP_OFFENDERS) series at a time).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::domain::DeviceId;
use crate::limits::{DeviceDrops, TOP_OFFENDERS};
use crate::protocol::{Channel, Verdict};
use crate::service::PinRefusal;

/// Why a message from a device was dropped (`gateway_dropped_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The topic is not a device topic of this protocol.
    BadTopic,
    /// The topic names a device on another site than the one it is on, or
    /// a channel only the engine publishes on.
    ForeignTopic,
    /// The topic names a device the engine does not know.
    UnknownDevice,
    /// Over `protocol::MAX_PAYLOAD_BYTES`.
    Oversized,
    /// Not the payload the channel carries (bad JSON, unknown field...).
    Malformed,
    /// A sync ack for a version that is not the one in flight.
    StaleAck,
    /// The engine refused the message (e.g. an ack for a code that is not
    /// on that lock).
    Rejected,
    /// The gateway's outgoing queue was full.
    Overloaded,
    /// The device sent more than its rate allows (`DeviceLimits`).
    RateLimited,
    /// The device already had its limit of checks and events in progress.
    Busy,
    /// The embedded broker's ACL refused the publish (not the device's own
    /// topic, or a channel only the engine publishes on).
    NotAuthorized,
    /// The embedded broker could not queue the message for its receiver (a
    /// connection that does not read).
    QueueFull,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::BadTopic,
        DropReason::ForeignTopic,
        DropReason::UnknownDevice,
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::StaleAck,
        DropReason::Rejected,
        DropReason::Overloaded,
        DropReason::RateLimited,
        DropReason::Busy,
        DropReason::NotAuthorized,
        DropReason::QueueFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadTopic => "bad_topic",
            DropReason::ForeignTopic => "foreign_topic",
            DropReason::UnknownDevice => "unknown_device",
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::StaleAck => "stale_ack",
            DropReason::Rejected => "rejected",
            DropReason::Overloaded => "overloaded",
            DropReason::RateLimited => "rate_limited",
            DropReason::Busy => "busy",
            DropReason::NotAuthorized => "not_authorized",
            DropReason::QueueFull => "queue_full",
        }
    }
}

/// Handles resolved once (style: no label lookup on the hot path).
#[derive(Clone)]
pub struct GatewayMetrics {
    dropped: Vec<IntCounter>,
    received: Vec<IntCounter>,
    auth: Vec<IntCounter>,
    pub events_logged: IntCounter,
    pub events_duplicate: IntCounter,
    pub sync_pushed: IntCounter,
    pub sync_retried: IntCounter,
    pub sync_acked: IntCounter,
    /// Full resyncs devices asked for (`sync/req` with `full`).
    pub sync_full_resyncs: IntCounter,
    pub sync_timed_out: IntCounter,
    pub commands_sent: IntCounter,
    pub commands_unanswered: IntCounter,
    pub devices_online: IntGauge,
    pub broker_connections: IntGauge,
    /// Home Assistant `pin_code` commands refused, by reason
    /// (`gateway_ha_pin_refused_total{reason}`).
    ha_pin_refused: Vec<IntCounter>,
    /// Home Assistant `pin_code` commands applied.
    pub ha_pin_applied: IntCounter,
    /// What each device had dropped (for the activity log and the top
    /// offenders).
    devices: Arc<DeviceDrops>,
}

/// `gateway_device_dropped_top{device}`: computed at each scrape from the
/// per-device ledger, so the series are always the current top few.
struct TopOffenders {
    devices: Arc<DeviceDrops>,
    template: IntGaugeVec,
}

fn top_offenders_vec() -> IntGaugeVec {
    IntGaugeVec::new(
        Opts::new(
            "gateway_device_dropped_top",
            "Messages dropped since the server started, for the devices that had most dropped",
        ),
        &["device"],
    )
    .expect("valid metric")
}

impl Collector for TopOffenders {
    fn desc(&self) -> Vec<&Desc> {
        self.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let v = top_offenders_vec();
        for (device, n) in self.devices.top(TOP_OFFENDERS) {
            v.with_label_values(&[&device.to_string()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        v.collect()
    }
}

impl GatewayMetrics {
    /// Registers the metrics in `registry`. `dropped` is a
    /// `gateway_dropped_total{reason}` vector already registered there (the
    /// server's `Metrics` has one); `None` registers a new one. Registering
    /// twice in one registry fails, so two gateways in one process need two
    /// registries.
    pub fn new(
        registry: &Registry,
        dropped: Option<IntCounterVec>,
    ) -> Result<GatewayMetrics, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let vec =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let dropped = match dropped {
            Some(d) => d,
            None => vec(
                "gateway_dropped_total",
                "Device messages dropped, by reason",
                "reason",
            )?,
        };
        let received = vec(
            "gateway_received_total",
            "Device messages received, by channel",
            "channel",
        )?;
        let auth = vec(
            "gateway_auth_total",
            "Credential checks answered, by decision",
            "decision",
        )?;
        let ha_pin_refused = vec(
            "gateway_ha_pin_refused_total",
            "Home Assistant pin_code commands refused, by reason",
            "reason",
        )?;
        let devices = Arc::new(DeviceDrops::default());
        registry.register(Box::new(TopOffenders {
            devices: devices.clone(),
            template: top_offenders_vec(),
        }))?;
        Ok(GatewayMetrics {
            devices,
            dropped: DropReason::ALL
                .iter()
                .map(|r| dropped.with_label_values(&[r.as_str()]))
                .collect(),
            received: Channel::ALL
                .iter()
                .map(|c| received.with_label_values(&[c.suffix()]))
                .collect(),
            auth: VERDICTS
                .iter()
                .map(|v| auth.with_label_values(&[verdict_name(*v)]))
                .collect(),
            ha_pin_refused: PinRefusal::ALL
                .iter()
                .map(|r| ha_pin_refused.with_label_values(&[r.as_str()]))
                .collect(),
            ha_pin_applied: counter(
                "gateway_ha_pin_applied_total",
                "Home Assistant pin_code commands applied",
            )?,
            events_logged: counter("gateway_events_logged_total", "Device events logged")?,
            events_duplicate: counter(
                "gateway_events_duplicate_total",
                "Redelivered device events (same device and seq), logged once",
            )?,
            sync_pushed: counter("gateway_sync_pushed_total", "Sync batches sent to devices")?,
            sync_retried: counter(
                "gateway_sync_retried_total",
                "Sync batches sent again after no ack",
            )?,
            sync_acked: counter("gateway_sync_acked_total", "Sync acks applied")?,
            sync_full_resyncs: counter(
                "gateway_sync_full_resyncs_total",
                "Full resyncs devices asked for (every code sent again)",
            )?,
            sync_timed_out: counter(
                "gateway_sync_timed_out_total",
                "Sync batches given up after the last retry (codes marked failed: timed_out)",
            )?,
            commands_sent: counter("gateway_commands_sent_total", "Remote commands sent")?,
            commands_unanswered: counter(
                "gateway_commands_unanswered_total",
                "Remote commands with no ack in time",
            )?,
            devices_online: gauge("gateway_devices_online", "Devices whose status is online")?,
            broker_connections: gauge(
                "gateway_broker_connections",
                "Gateway connections to the broker that are up",
            )?,
        })
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].get()
    }

    pub(crate) fn drop(&self, reason: DropReason) {
        self.dropped[reason as usize].inc();
    }

    /// A message from `device` dropped: the reason's counter and the
    /// device's ledger.
    pub(crate) fn drop_from(&self, device: DeviceId, reason: DropReason) {
        self.dropped[reason as usize].inc();
        self.devices.record(device, reason.as_str());
    }

    /// Per device, what was dropped.
    pub fn device_drops(&self) -> &Arc<DeviceDrops> {
        &self.devices
    }

    /// Home Assistant `pin_code` commands refused for `reason`.
    pub fn ha_pin_refused(&self, reason: PinRefusal) -> u64 {
        self.ha_pin_refused[reason as usize].get()
    }

    pub(crate) fn refuse_pin(&self, reason: PinRefusal) {
        self.ha_pin_refused[reason as usize].inc();
    }

    pub fn received(&self, channel: Channel) -> u64 {
        self.received[channel as usize].get()
    }

    pub(crate) fn receive(&self, channel: Channel) {
        self.received[channel as usize].inc();
    }

    pub fn answered(&self, verdict: Verdict) -> u64 {
        self.auth[verdict as usize].get()
    }

    pub(crate) fn answer(&self, verdict: Verdict) {
        self.auth[verdict as usize].inc();
    }
}

const VERDICTS: [Verdict; 3] = [Verdict::Granted, Verdict::Denied, Verdict::Error];

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Granted => "granted",
        Verdict::Denied => "denied",
        Verdict::Error => "error",
    }
}
