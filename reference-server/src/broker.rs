//! The embedded MQTT broker (rumqttd), so `reference-server` works on a fresh
//! machine with nothing else running. The same gateway works unchanged
//! against Mosquitto or any MQTT 3.1.1 broker with shared subscriptions.
//!
//! rumqttd's `Broker::start` blocks, so the broker gets its own OS thread
//! (with its own runtime, made by rumqttd). It is set up for load: no delay
//! between accepted connections, room for `max_connections` clients, and a
//! large inflight window.
//!
//! Security: rumqttd 0.19 authenticates clients (username and password, here
//! through an [`AuthHandler`]) but has no topic ACLs (rumqtt issues #495 and
//! #1005). A device that knows its own secret could therefore publish on
//! another device's topics through the embedded broker. Deployments with
//! untrusted devices use Mosquitto with `docs/mosquitto/acl`, which confines
//! each device to its own topics; see docs/protocol.md, "Security".

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

pub use rumqttd::AuthHandler;

/// Largest MQTT packet the broker accepts. Device payloads are far smaller
/// (`protocol::MAX_PAYLOAD_BYTES`); the gateway enforces that limit itself
/// and counts what is over it, so the broker's limit only stops abuse.
pub const BROKER_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// How long `start_embedded` waits for the broker to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct EmbeddedBrokerConfig {
    /// Port 0 picks a free port (see [`BrokerHandle::addr`]).
    pub listen: SocketAddr,
    /// Above the fleet size: every device holds one connection.
    pub max_connections: usize,
    /// Per connection, both directions.
    pub max_inflight: usize,
    /// Checks (client id, username, password) at CONNECT; `None` lets
    /// anyone in (tests of the broker alone only).
    pub auth: Option<AuthHandler>,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_connections: 20_000,
            max_inflight: 1_000,
            auth: None,
        }
    }
}

impl std::fmt::Debug for EmbeddedBrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBrokerConfig")
            .field("listen", &self.listen)
            .field("max_connections", &self.max_connections)
            .field("max_inflight", &self.max_inflight)
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot find a free port on {0}: {1}")]
    NoFreePort(SocketAddr, std::io::Error),
    #[error("the embedded broker did not accept connections on {0} within {1:?}")]
    NotReady(SocketAddr, Duration),
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
}

/// A running embedded broker. It runs until the process ends (rumqttd has no
/// shutdown); dropping the handle does not stop it.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    addr: SocketAddr,
}

impl BrokerHandle {
    /// The address the broker listens on (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://host:port`, as `--broker` takes it.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// The rumqttd configuration for `cfg` at `listen` (a concrete port).
fn rumqttd_config(cfg: &EmbeddedBrokerConfig, listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: BROKER_MAX_PAYLOAD_BYTES,
        max_inflight_count: cfg.max_inflight,
        auth: None,
        external_auth: cfg.auth.clone(),
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4-1".into(),
        listen,
        tls: None,
        // The default delay between accepts throttles a fleet's reconnect
        // storm to a crawl.
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}

/// Starts rumqttd on its own thread and returns once it accepts connections.
pub fn start_embedded(cfg: EmbeddedBrokerConfig) -> Result<BrokerHandle, BrokerError> {
    let listen = if cfg.listen.port() == 0 {
        // rumqttd binds itself and does not report the port it got, so pick
        // a free one first (a small race with other processes, retried by
        // the caller if it matters).
        let probe =
            TcpListener::bind(cfg.listen).map_err(|e| BrokerError::NoFreePort(cfg.listen, e))?;
        probe
            .local_addr()
            .map_err(|e| BrokerError::NoFreePort(cfg.listen, e))?
    } else {
        cfg.listen
    };
    let config = rumqttd_config(&cfg, listen);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    let connect_to = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    let started = Instant::now();
    while TcpStream::connect_timeout(&connect_to, Duration::from_millis(200)).is_err() {
        if started.elapsed() > READY_TIMEOUT {
            return Err(BrokerError::NotReady(listen, READY_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(%listen, "embedded MQTT broker ready");
    Ok(BrokerHandle { addr: connect_to })
}

/// An auth handler from a plain function, for [`EmbeddedBrokerConfig::auth`].
pub fn auth_handler(f: impl Fn(&str, &str, &str) -> bool + Send + Sync + 'static) -> AuthHandler {
    Arc::new(move |client_id: String, user: String, pass: String| f(&client_id, &user, &pass))
}

/// The fleet's login rule for the embedded broker: the server's own
/// account (`engine_user` / `engine_password`), or a device: username
/// `dev-N`, client id `dev-N` or `dev-N-anything` (so a device can open a
/// second session, e.g. mosquitto_sub beside mosquitto_pub, but nobody can
/// take over another device's session id), and `authenticate(dev, password)`.
pub fn fleet_auth(
    engine_user: String,
    engine_password: String,
    authenticate: impl Fn(crate::domain::DeviceId, &str) -> bool + Send + Sync + 'static,
) -> AuthHandler {
    auth_handler(move |client_id, user, pass| {
        if user == engine_user {
            return constant_time_eq(pass.as_bytes(), engine_password.as_bytes());
        }
        let Ok(device) = crate::protocol::parse_device(user) else {
            return false;
        };
        let own_session = client_id == user
            || client_id
                .strip_prefix(user)
                .is_some_and(|rest| rest.starts_with('-'));
        own_session && authenticate(device, pass)
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceId;

    #[test]
    fn fleet_auth_rules() {
        let auth = fleet_auth("engine".into(), "pw".into(), |d, p| {
            d == DeviceId(1) && p == "s1"
        });
        let ok = |c: &str, u: &str, p: &str| auth(c.into(), u.into(), p.into());
        assert!(ok("engine-0", "engine", "pw"));
        assert!(!ok("engine-0", "engine", "pX"));
        assert!(ok("dev-1", "dev-1", "s1"));
        assert!(ok("dev-1-sub", "dev-1", "s1"));
        assert!(!ok("dev-1", "dev-1", "wrong"));
        assert!(!ok("dev-2", "dev-1", "s1"), "another device's session id");
        assert!(!ok("dev-12", "dev-1", "s1"));
        assert!(!ok("x", "nobody", "s1"));
    }
}
