//! How a simulated device reaches an access engine.
//!
//! One [`Transport`] per fleet, one [`Link`] per device. Both are enums, not
//! trait objects: an `async fn` in a trait is not object-safe without boxing
//! every future, the in-process hot path (hundreds of thousands of checks a
//! second) should not pay for a `Box` per check, and a closed set of three
//! kinds matched exhaustively is easier to keep consistent. Adding a
//! transport means adding a variant, and the compiler lists every place
//! that must handle it.
//!
//! What a device can do through its link: check a credential (answer plus
//! latency), publish an event (never blocks: buffered or counted when it
//! cannot go), publish its status, pull a sync batch where the transport
//! supports pulling, acknowledge syncs and commands. Pushes from the engine
//! (sync batches, remote commands) arrive as [`Inbound`] messages in the
//! device actor's bounded mailbox.

pub mod http;
pub mod inproc;
pub mod log;
pub mod mqtt;
pub mod relay;

use std::sync::Arc;

use actix::prelude::*;
use reference_server::domain::{Connectivity, DeviceId, SiteId};
use reference_server::protocol::{
    AuthRequest, AuthResponse, CommandAck, DeviceCommand, Event, ProtocolError, Status, SyncAckMsg,
    SyncPush, WireCredential, WireSecret,
};

pub use http::{HttpConfig, HttpTransport};
pub use inproc::InProcTransport;
pub use log::{EventLog, KindCounts};
pub use mqtt::{MqttConfig, MqttTransport, Multiplex};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Nothing was sent: the engine cannot have seen the request. Every
    /// other error of a check leaves it unknown whether the engine decided
    /// it (and used a credential's use or counted a wrong PIN).
    #[error("not connected")]
    Offline,
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("send queue full")]
    Busy,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("mqtt: {0}")]
    Mqtt(String),
    #[error("http: {0}")]
    Http(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("{what} is not supported by the {transport} transport")]
    Unsupported {
        what: &'static str,
        transport: &'static str,
    },
}

/// A credential check's answer and how long the transport took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub response: AuthResponse,
    pub latency_us: u64,
}

/// What the engine pushes to a device.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub enum Inbound {
    Sync(SyncPush),
    Command(DeviceCommand),
}

/// Where a device sits, as its link needs it (topics name the site).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub device: DeviceId,
    pub site: SiteId,
    pub connectivity: Connectivity,
}

/// The secret a device authenticates with (MQTT password, HTTP bearer).
pub type DeviceSecrets = Arc<dyn Fn(DeviceId) -> String + Send + Sync>;

/// Where a server numbers the fleet its own way (an external target): the
/// server's id and secret of each device, the server's token for each QR
/// or BLE token the run's engine signed, and the server's text for each
/// PIN where it generated a guest's code itself.
pub trait ServerIds: Send + Sync {
    fn device(&self, device: DeviceId) -> Option<(DeviceId, String)>;
    fn token(&self, local: &str) -> Option<String>;
    /// The server's PIN text for the run's `local` at `device` (the server
    /// generates guests' codes itself). The identity by default.
    fn pin(&self, _device: DeviceId, local: &str) -> String {
        local.to_string()
    }
    /// The run's PIN text for the server's `server` at `device`.
    fn local_pin(&self, _device: DeviceId, server: &str) -> String {
        server.to_string()
    }
    /// The server's id of the run's `site` (the site level of a device's
    /// MQTT topics). `None`: the server does not know it.
    fn site(&self, _site: SiteId) -> Option<SiteId> {
        None
    }
}

/// `req` as `device` (the run's id) presents it to a server that numbers
/// the fleet its own way: the server's QR or BLE token, the server's PIN
/// text. `None`: nothing to change (a card), or a token the server never
/// signed (sent as it is: the server denies it).
pub fn to_server(ids: &dyn ServerIds, device: DeviceId, req: &AuthRequest) -> Option<AuthRequest> {
    let credential = match &req.credential {
        WireCredential::Qr(t) => WireCredential::Qr(ids.token(t)?),
        WireCredential::Ble(t) => WireCredential::Ble(ids.token(t)?),
        WireCredential::Pin(p) => WireCredential::Pin(ids.pin(device, p)),
        WireCredential::Card(_) => return None,
    };
    Some(AuthRequest {
        credential,
        ..req.clone()
    })
}

/// A sync batch from such a server as `device` (the run's id) stores it:
/// the run's texts for the PINs the server sent.
pub fn to_local(ids: &dyn ServerIds, device: DeviceId, push: &mut SyncPush) {
    for code in &mut push.set {
        if let WireSecret::Pin(p) = &code.secret {
            code.secret = WireSecret::Pin(ids.local_pin(device, p));
        }
    }
}

/// Secrets derived from a key: `blake3::keyed_hash(key, "dev-N")`, hex.
/// A server that provisions devices the same way can check them without a
/// table.
pub fn derived_secrets(key: [u8; 32]) -> DeviceSecrets {
    Arc::new(move |d: DeviceId| {
        blake3::keyed_hash(&key, d.to_string().as_bytes())
            .to_hex()
            .to_string()
    })
}

/// One fleet's way to the engine.
#[derive(Clone)]
pub enum Transport {
    InProc(InProcTransport),
    Mqtt(MqttTransport),
    Http(HttpTransport),
}

impl Transport {
    /// How often the devices' MQTT sessions reconnected; `None` for a
    /// transport without sessions.
    pub fn mqtt_reconnects(&self) -> Option<u64> {
        match self {
            Transport::Mqtt(t) => Some(t.reconnects()),
            _ => None,
        }
    }

    /// Of a fleet of `devices`, what could not be answered yet (MQTT:
    /// devices not linked yet, connections not up or a subscription not
    /// acknowledged by the broker); 0 for a transport without sessions.
    pub fn links_not_ready(&self, devices: usize) -> usize {
        match self {
            Transport::Mqtt(t) => t.not_ready(devices),
            _ => 0,
        }
    }

    /// The link of one device; pushes for it go to `inbox`.
    pub fn link(&self, ep: Endpoint, inbox: Recipient<Inbound>) -> Link {
        match self {
            Transport::InProc(t) => Link::InProc(t.link(ep, inbox)),
            Transport::Mqtt(t) => Link::Mqtt(t.link(ep, inbox)),
            Transport::Http(t) => Link::Http(t.link_with_inbox(ep, inbox)),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Transport::InProc(_) => "inproc",
            Transport::Mqtt(_) => "mqtt",
            Transport::Http(_) => "http",
        }
    }
}

/// One device's connection to the engine. Cheap to clone (an `Arc` and ids).
#[derive(Clone)]
pub enum Link {
    InProc(inproc::InProcLink),
    Mqtt(mqtt::MqttLink),
    Http(http::HttpLink),
}

impl Link {
    pub async fn check(&self, req: AuthRequest) -> Result<Checked, TransportError> {
        match self {
            Link::InProc(l) if !l.added_latency().is_zero() => Ok(l.check_late(&req).await),
            Link::InProc(l) => Ok(l.check(&req)),
            Link::Mqtt(l) => l.check(req).await,
            Link::Http(l) => l.check(&req).await,
        }
    }

    /// Publishes an event; never waits (buffers or fails instead).
    pub fn event(&self, event: &Event) -> Result<(), TransportError> {
        match self {
            Link::InProc(l) => {
                l.event(event);
                Ok(())
            }
            Link::Mqtt(l) => l.event(event),
            Link::Http(l) => {
                l.event(event);
                Ok(())
            }
        }
    }

    pub fn status(&self, status: &Status) -> Result<(), TransportError> {
        match self {
            Link::InProc(_) | Link::Http(_) => Ok(()),
            Link::Mqtt(l) => l.status(status),
        }
    }

    /// Asks for what the device must change. In-process: computed now.
    /// MQTT: the engine pushes batches as `Inbound::Sync`, so this returns
    /// `None`. HTTP: the device fetches in the background
    /// (`HttpLink::request_sync`; the batch arrives as `Inbound::Sync`), so
    /// this starts that fetch and returns `None`.
    pub fn pull_sync(&self) -> Result<Option<SyncPush>, TransportError> {
        match self {
            Link::InProc(l) => l.pull_sync(),
            Link::Mqtt(_) => Ok(None),
            Link::Http(l) => {
                l.request_sync();
                Ok(None)
            }
        }
    }

    pub fn sync_ack(&self, ack: &SyncAckMsg) -> Result<(), TransportError> {
        match self {
            Link::InProc(l) => l.sync_ack(ack),
            Link::Mqtt(l) => l.sync_ack(ack),
            // Posted in the background; failures are counted there.
            Link::Http(l) => {
                l.sync_ack(ack);
                Ok(())
            }
        }
    }

    /// A device that lost its code store (a reboot, a reflash) asks for
    /// every code it should hold (protocol version 2), on every link:
    /// MQTT `sync/req` `{"full": true}` and HTTP `GET .../sync?full=true`
    /// (the batch arrives as `Inbound::Sync`: `None` here); in-process the
    /// engine resets the device's codes and the first batch is returned,
    /// as [`Link::pull_sync`] does.
    pub fn request_full_sync(&self) -> Result<Option<SyncPush>, TransportError> {
        match self {
            Link::InProc(l) => l.pull_full_sync(),
            Link::Mqtt(l) => l
                .sync_request(&reference_server::protocol::SyncRequest { full: true })
                .map(|()| None),
            Link::Http(l) => {
                l.request_full_sync();
                Ok(None)
            }
        }
    }

    /// A sync batch reached the device while it was offline and was not
    /// applied: over HTTP its fetch ends here (see
    /// `HttpLink::sync_dropped`); MQTT and in-process links resend on the
    /// next cue without being told.
    pub fn sync_dropped(&self) {
        if let Link::Http(l) = self {
            l.sync_dropped();
        }
    }

    pub fn command_ack(&self, ack: &CommandAck) -> Result<(), TransportError> {
        match self {
            Link::InProc(_) | Link::Http(_) => Ok(()),
            Link::Mqtt(l) => l.command_ack(ack),
        }
    }
}

/// Converts a check's answer for callers that had no transport at all.
pub fn offline_response(id: u64) -> AuthResponse {
    AuthResponse::error(id, "device offline")
}
