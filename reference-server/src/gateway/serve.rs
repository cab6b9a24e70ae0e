//! Wiring for the server binary: start the embedded broker (or use an
//! external one), connect the gateway to the service, register the command
//! sink, report each device's dropped messages to the activity log, and
//! stop the gateway before the store closes. One call, so the binary and
//! the tests start MQTT the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{BrokerUrl, GatewayConfig, GatewayError, GatewayHandle, GatewayMetrics};
use crate::activity::ActivityEntry;
use crate::broker::{self, BrokerError, BrokerHandle, BrokerMetrics, EmbeddedBrokerConfig};
use crate::limits::DeviceLimits;
use crate::service::Service;

/// The gateway's account on the embedded broker.
pub const ENGINE_USER: &str = "engine";
/// Home Assistant's account on the embedded broker (as in
/// docs/mosquitto/acl).
pub const HOME_ASSISTANT_USER: &str = "homeassistant";
/// How long `serve` waits for the gateway's first subscription before it
/// returns anyway (the gateway keeps retrying in the background).
const READY_WAIT: Duration = Duration::from_secs(10);
/// How often each device's dropped messages are summed up in the activity
/// log (one entry per device and reason per interval).
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How long the server waits at shutdown for the checks and events the
/// gateway took to finish.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Which broker the devices use.
#[derive(Clone, Debug)]
pub enum BrokerChoice {
    /// Start the embedded broker in-process, listening here (port 0: a
    /// free port); a taken port is an error at once.
    Embedded { listen: SocketAddr },
    /// Mosquitto, EMQX, HiveMQ...: the gateway connects as a client.
    External(BrokerUrl),
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("embedded broker: {0}")]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// MQTT up and serving.
pub struct MqttRunning {
    /// Where devices connect, `mqtt://host:port` (no password).
    pub device_url: String,
    pub embedded: Option<BrokerHandle>,
    pub gateway: Arc<GatewayHandle>,
}

/// Starts the broker if embedded, then the gateway on `service`, with the
/// default per-device limits.
pub async fn serve(
    service: Arc<Service>,
    choice: BrokerChoice,
    tune: impl FnOnce(&mut GatewayConfig),
) -> Result<MqttRunning, ServeError> {
    serve_with_limits(service, choice, DeviceLimits::default(), tune).await
}

/// [`serve`] with per-device limits: the embedded broker and the gateway
/// both hold every device to `limits`.
pub async fn serve_with_limits(
    service: Arc<Service>,
    choice: BrokerChoice,
    limits: DeviceLimits,
    tune: impl FnOnce(&mut GatewayConfig),
) -> Result<MqttRunning, ServeError> {
    let m = service.metrics();
    let metrics = GatewayMetrics::new(&m.registry, Some(m.gateway_dropped_total.clone()))
        .map_err(GatewayError::Metrics)?;
    let ha_account = Arc::new(std::sync::OnceLock::new());
    let (url, embedded) = match choice {
        BrokerChoice::Embedded { listen } => {
            let password = crate::auth::random_secret();
            // Weak: the broker must not keep the service alive.
            let svc = Arc::downgrade(&service);
            let login = broker::fleet_login(ENGINE_USER.into(), password.clone(), move |d, p| {
                let svc = svc.upgrade()?;
                if !svc.authenticate_device(d, p) {
                    return None;
                }
                let engine = svc.engine();
                engine.device(d).map(|dev| dev.site)
            });
            let login = broker::with_home_assistant(login, ha_account.clone());
            let mut cfg = EmbeddedBrokerConfig::new(listen, login);
            cfg.limits = limits;
            cfg.drops = Some(metrics.clone());
            cfg.metrics = BrokerMetrics::new(&m.registry).map_err(GatewayError::Metrics)?;
            let handle = broker::start(cfg).await?;
            let url = BrokerUrl {
                host: handle.addr().ip().to_string(),
                port: handle.addr().port(),
                username: Some(ENGINE_USER.into()),
                password: Some(password),
            };
            (url, Some(handle))
        }
        BrokerChoice::External(url) => (url, None),
    };
    let device_url = format!("mqtt://{}:{}", url.host, url.port);
    let mut cfg = GatewayConfig::new(url);
    cfg.limits = limits;
    if embedded.is_some() {
        // See `GatewayConfig::check_qos`: in-process, a lost delivery needs
        // the gateway's connection to drop, and the device asks again.
        cfg.check_qos = rumqttc::QoS::AtMostOnce;
        // The broker holds each device to its rate at the socket.
        cfg.enforce_rate = false;
    }
    tune(&mut cfg);
    if let Some(ha) = cfg.home_assistant.as_ref().filter(|_| embedded.is_some()) {
        if let Some(password) = &ha.embedded_password {
            let _ = ha_account.set(broker::HomeAssistantAccount {
                username: HOME_ASSISTANT_USER.into(),
                password: password.clone(),
                discovery_prefix: ha.discovery_prefix.clone(),
            });
        }
    }
    let gateway = Arc::new(super::start(service.clone(), cfg, metrics.clone())?);
    if tokio::time::timeout(READY_WAIT, gateway.ready())
        .await
        .is_err()
    {
        tracing::warn!(broker = %device_url, "the gateway is not subscribed yet; still trying");
    }
    service.set_command_sink(gateway.command_sink());
    let reporter = tokio::spawn(report_drops(Arc::downgrade(&service), metrics.clone()));
    // At shutdown, before the store closes: no more device messages, the
    // ones taken finish (their activity entries are queued), the last
    // drop summaries are written. (Weak: the service owns this hook.)
    let (gw, svc, broker_handle) = (gateway.clone(), Arc::downgrade(&service), embedded.clone());
    service.before_close(Box::new(move || {
        Box::pin(async move {
            let unfinished = gw.stop(DRAIN_WAIT).await;
            if let Some(b) = &broker_handle {
                b.stop();
            }
            reporter.abort();
            if let Some(svc) = svc.upgrade() {
                write_drop_report(&svc, &metrics).await;
            }
            if unfinished > 0 {
                tracing::warn!(
                    unfinished,
                    "checks and events still running at shutdown after {DRAIN_WAIT:?}"
                );
            }
        })
    }));
    Ok(MqttRunning {
        device_url,
        embedded,
        gateway,
    })
}

/// Every [`DROP_REPORT_INTERVAL`], one activity entry per device and
/// reason that had messages dropped.
async fn report_drops(service: std::sync::Weak<Service>, metrics: GatewayMetrics) {
    let mut tick = tokio::time::interval(DROP_REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        write_drop_report(&service, &metrics).await;
    }
}

async fn write_drop_report(service: &Service, metrics: &GatewayMetrics) {
    let now = service.now();
    for (device, reason, count) in metrics.device_drops().take_pending() {
        service
            .log_activity(ActivityEntry::messages_dropped(
                device,
                now,
                reason,
                count,
                DROP_REPORT_INTERVAL.as_secs(),
            ))
            .await;
    }
}
