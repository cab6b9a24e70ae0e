//! Wiring for the server binary: start the embedded broker (or use an
//! external one), connect the gateway to the service, register the command
//! sink. One call, so the binary and the tests start MQTT the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{BrokerUrl, GatewayConfig, GatewayError, GatewayHandle};
use crate::broker::{self, BrokerError, BrokerHandle, EmbeddedBrokerConfig};
use crate::service::Service;

/// The gateway's account on the embedded broker.
pub const ENGINE_USER: &str = "engine";
/// How long `serve` waits for the gateway's first subscription before it
/// returns anyway (the gateway keeps retrying in the background).
const READY_WAIT: Duration = Duration::from_secs(10);

/// Which broker the devices use.
#[derive(Clone, Debug)]
pub enum BrokerChoice {
    /// Start rumqttd in-process, listening here (port 0: a free port).
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
    pub gateway: GatewayHandle,
}

/// Starts the broker if embedded, then the gateway on `service`.
pub async fn serve(
    service: Arc<Service>,
    choice: BrokerChoice,
    tune: impl FnOnce(&mut GatewayConfig),
) -> Result<MqttRunning, ServeError> {
    let (url, embedded) = match choice {
        BrokerChoice::Embedded { listen } => {
            let password = crate::auth::random_secret();
            let svc = service.clone();
            let cfg = EmbeddedBrokerConfig {
                listen,
                auth: Some(broker::fleet_auth(
                    ENGINE_USER.into(),
                    password.clone(),
                    move |d, p| svc.authenticate_device(d, p),
                )),
                ..EmbeddedBrokerConfig::default()
            };
            let handle = tokio::task::spawn_blocking(move || broker::start_embedded(cfg))
                .await
                .expect("starting the broker does not panic")?;
            tracing::warn!(
                addr = %handle.addr(),
                "embedded MQTT broker: devices are authenticated, but rumqttd has no topic \
                 ACLs, so an authenticated device could publish on another device's topics; \
                 put untrusted devices behind Mosquitto with docs/mosquitto/acl (--broker)"
            );
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
    if embedded.is_some() {
        // See `GatewayConfig::check_qos`: in-process, a lost delivery needs
        // the gateway's connection to drop, and the device asks again.
        cfg.check_qos = rumqttc::QoS::AtMostOnce;
    }
    tune(&mut cfg);
    let m = service.metrics();
    let metrics = super::GatewayMetrics::new(&m.registry, Some(m.gateway_dropped_total.clone()))
        .map_err(GatewayError::Metrics)?;
    let gateway = super::start(service.clone(), cfg, metrics)?;
    if tokio::time::timeout(READY_WAIT, gateway.ready())
        .await
        .is_err()
    {
        tracing::warn!(broker = %device_url, "the gateway is not subscribed yet; still trying");
    }
    service.set_command_sink(gateway.command_sink());
    Ok(MqttRunning {
        device_url,
        embedded,
        gateway,
    })
}
