//! The HTTP transport (reqwest): `POST /v1/devices/{device}/validate` with
//! the device's secret as a Bearer token, as door phones do in third-party
//! server mode. Code-storing devices sync over `GET` and `POST
//! /v1/devices/{device}/sync` (the MQTT `sync` and `sync/ack` messages):
//! [`HttpLink::request_sync`] fetches in the background and hands the batch
//! to the device's mailbox as `Inbound::Sync`, as MQTT does, and the
//! device's ack goes back by `POST`. The protocol has no HTTP route for
//! events, so events are accounted locally (`local_log`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use reference_server::api::wire::DeviceSync;
use reference_server::domain::CredentialId;
use reference_server::protocol::{
    AuthRequest, AuthResponse, Event, SyncAckMsg, SyncPush, SyncResult,
};
use tokio::time::Instant;

use super::{Checked, DeviceSecrets, Endpoint, EventLog, Inbound, ServerIds, TransportError};
use crate::metrics::{Operation, Outcome, Timings};

/// A fetch not answered by an ack within this long no longer blocks the
/// next one (the device was offline when the batch came, or dropped it).
const SYNC_STALE: Duration = Duration::from_secs(10);

/// Fetch rounds one request drains (a changed PIN's old code is removable
/// only once its replacement is acknowledged: a second round removes it).
const SYNC_ROUNDS: u8 = 8;

/// Decodes the `GET /v1/devices/{device}/sync` answer (the server's own
/// wire type: the `sync` message plus the QR and BLE credentials to
/// confirm, with nothing to store for them).
pub fn decode_sync(bytes: &[u8]) -> Result<DeviceSync, TransportError> {
    serde_json::from_slice(bytes)
        .map_err(|e| TransportError::Http(format!("not a sync message: {e}")))
}

/// One device's sync state, shared by the clones of its link.
#[derive(Default)]
struct SyncState {
    /// When the fetch in flight started (until its ack is answered).
    in_flight: Mutex<Option<Instant>>,
    /// The version fetched, its tokens, the round and when its fetch
    /// started.
    fetched: Mutex<Option<Fetched>>,
}

struct Fetched {
    version: u64,
    tokens: Vec<CredentialId>,
    round: u8,
    started: Instant,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// e.g. `http://127.0.0.1:8080`
    pub base_url: String,
    pub request_timeout_ms: u64,
    /// Idle connections kept per host (reqwest pools them).
    pub pool_max_idle_per_host: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            base_url: "http://127.0.0.1:8080".into(),
            request_timeout_ms: 2_000,
            pool_max_idle_per_host: 64,
        }
    }
}

#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    config: Arc<HttpConfig>,
    secrets: DeviceSecrets,
    log: Arc<EventLog>,
    /// An external server's ids, secrets and tokens.
    server_ids: Option<Arc<dyn ServerIds>>,
    /// Failed sync fetches and acks (network, status, bad body).
    sync_errors: Arc<AtomicU64>,
    /// Where sync round trips (fetch to acknowledged) are timed.
    timings: Option<Arc<Timings>>,
}

impl HttpTransport {
    pub fn new(
        config: HttpConfig,
        secrets: DeviceSecrets,
    ) -> Result<HttpTransport, TransportError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build()
            .map_err(|e| TransportError::Http(e.to_string()))?;
        Ok(HttpTransport {
            client,
            config: Arc::new(config),
            secrets,
            log: Arc::new(EventLog::new()),
            server_ids: None,
            sync_errors: Arc::new(AtomicU64::new(0)),
            timings: None,
        })
    }

    /// Times each device's sync round trip (`GET` to acknowledged `POST`)
    /// as `sync_round_trip` in `timings`.
    pub fn with_timings(mut self, timings: Arc<Timings>) -> HttpTransport {
        self.timings = Some(timings);
        self
    }

    /// Addresses devices by the server's ids and secrets, and presents the
    /// server's QR and BLE tokens (an external target).
    pub fn with_server_ids(mut self, ids: Arc<dyn ServerIds>) -> HttpTransport {
        self.server_ids = Some(ids);
        self
    }

    /// Events the devices emitted (kept here: no HTTP event route).
    pub fn local_log(&self) -> &Arc<EventLog> {
        &self.log
    }

    /// Sync fetches and acks that failed, all devices together.
    pub fn sync_errors(&self) -> u64 {
        self.sync_errors.load(Ordering::Relaxed)
    }

    /// The link of one device; synced batches go to `inbox`.
    pub fn link_with_inbox(&self, ep: Endpoint, inbox: Recipient<Inbound>) -> HttpLink {
        HttpLink {
            inbox: Some(inbox),
            ..self.link(ep)
        }
    }

    /// A link without a mailbox: checks, and `fetch_sync`/`sync_ack`
    /// called directly.
    pub fn link(&self, ep: Endpoint) -> HttpLink {
        let base = self.config.base_url.trim_end_matches('/');
        let (id, bearer) = match &self.server_ids {
            // A device the server does not know: its checks get a 401.
            Some(m) => m.device(ep.device).unwrap_or((ep.device, String::new())),
            None => (ep.device, (self.secrets)(ep.device)),
        };
        HttpLink {
            client: self.client.clone(),
            url: format!("{base}/v1/devices/{}/validate", id.0).into(),
            sync_url: format!("{base}/v1/devices/{}/sync", id.0).into(),
            bearer: bearer.into(),
            log: self.log.clone(),
            device: ep.device,
            server_ids: self.server_ids.clone(),
            inbox: None,
            sync: Arc::new(SyncState::default()),
            sync_errors: self.sync_errors.clone(),
            timings: self.timings.clone(),
            timeout_ms: self.config.request_timeout_ms,
        }
    }
}

#[derive(Clone)]
pub struct HttpLink {
    client: reqwest::Client,
    url: Arc<str>,
    sync_url: Arc<str>,
    bearer: Arc<str>,
    log: Arc<EventLog>,
    device: reference_server::domain::DeviceId,
    server_ids: Option<Arc<dyn ServerIds>>,
    inbox: Option<Recipient<Inbound>>,
    sync: Arc<SyncState>,
    sync_errors: Arc<AtomicU64>,
    timings: Option<Arc<Timings>>,
    /// The client's timeout, named in a timeout error.
    timeout_ms: u64,
}

fn request_error(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout(0)
    } else {
        TransportError::Http(e.to_string())
    }
}

/// A non-2xx answer as an error, with the server's (bounded) reason.
async fn status_error(resp: reqwest::Response) -> TransportError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    TransportError::Http(format!("status {status}: {body}"))
}

impl HttpLink {
    pub async fn check(&self, req: &AuthRequest) -> Result<Checked, TransportError> {
        let t0 = Instant::now();
        // The server signed its own token for the credential, and made
        // its own PINs for guests.
        let translated = self
            .server_ids
            .as_ref()
            .and_then(|m| super::to_server(m.as_ref(), self.device, req));
        let resp = self
            .client
            .post(&*self.url)
            .bearer_auth(&*self.bearer)
            .json(translated.as_ref().unwrap_or(req))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    TransportError::Timeout(self.timeout_ms)
                } else {
                    TransportError::Http(e.to_string())
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            // The server's JSON error names the field and the rule: keep it
            // (bounded) so the report's examples say why.
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(TransportError::Http(format!("status {status}: {body}")));
        }
        let response: AuthResponse = resp
            .json()
            .await
            .map_err(|e| TransportError::Http(e.to_string()))?;
        Ok(Checked {
            response,
            latency_us: t0.elapsed().as_micros() as u64,
        })
    }

    pub fn event(&self, event: &Event) {
        self.log.record(self.device, event);
    }

    /// `GET /v1/devices/{device}/sync`: the pending batch (empty when
    /// nothing is pending) and the QR/BLE credentials to confirm with it.
    pub async fn fetch_sync(&self) -> Result<(SyncPush, Vec<CredentialId>), TransportError> {
        self.fetch_sync_with(false).await
    }

    /// [`fetch_sync`](Self::fetch_sync); `full`: `?full=true` (protocol
    /// version 2), the device lost its codes and asks for every one.
    pub async fn fetch_sync_with(
        &self,
        full: bool,
    ) -> Result<(SyncPush, Vec<CredentialId>), TransportError> {
        let mut get = self.client.get(&*self.sync_url);
        if full {
            get = get.query(&[("full", "true")]);
        }
        let resp = get
            .bearer_auth(&*self.bearer)
            .send()
            .await
            .map_err(request_error)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let bytes = resp.bytes().await.map_err(request_error)?;
        let (mut push, tokens) = decode_sync(&bytes)?.split();
        // The device stores the run's texts for the codes it is given.
        if let Some(m) = &self.server_ids {
            super::to_local(m.as_ref(), self.device, &mut push);
        }
        Ok((push, tokens))
    }

    /// `POST /v1/devices/{device}/sync`: the acknowledgement (a 409 when
    /// the version is no longer the pending one: an error here).
    pub async fn post_sync_ack(&self, ack: &SyncAckMsg) -> Result<(), TransportError> {
        let resp = self
            .client
            .post(&*self.sync_url)
            .bearer_auth(&*self.bearer)
            .json(ack)
            .send()
            .await
            .map_err(request_error)?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        Ok(())
    }

    /// Failed sync fetches and acks of the whole transport.
    pub fn sync_errors(&self) -> u64 {
        self.sync_errors.load(Ordering::Relaxed)
    }

    fn sync_failed(&self, e: &TransportError) {
        tracing::debug!(device = %self.device, error = %e, "http sync");
        self.sync_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks the server for the device's pending codes in the background;
    /// a batch arrives in the device's mailbox as `Inbound::Sync`. At most
    /// one fetch (until its ack) per device: a storm does not pile up
    /// requests. Call from within an actix system.
    pub fn request_sync(&self) {
        {
            let mut f = self.sync.in_flight.lock();
            if f.is_some_and(|t| t.elapsed() < SYNC_STALE) {
                return;
            }
            *f = Some(Instant::now());
        }
        self.spawn_fetch(1, false);
    }

    /// [`request_sync`](Self::request_sync) for a device that lost its
    /// codes: `GET .../sync?full=true`, every code it should hold. Sent
    /// even while a plain fetch is in flight (it is asked once per boot,
    /// and that fetch's batch would be a delta on codes the device no
    /// longer has).
    pub fn request_full_sync(&self) {
        *self.sync.in_flight.lock() = Some(Instant::now());
        self.spawn_fetch(1, true);
    }

    /// The device did not apply the batch its fetch brought (it went
    /// offline meanwhile): no ack will follow, so the fetch is over and
    /// the next `request_sync` (on reconnect) fetches again at once
    /// instead of waiting out `SYNC_STALE`.
    pub fn sync_dropped(&self) {
        self.sync.fetched.lock().take();
        *self.sync.in_flight.lock() = None;
    }

    fn spawn_fetch(&self, round: u8, full: bool) {
        let Some(inbox) = self.inbox.clone() else {
            *self.sync.in_flight.lock() = None;
            return;
        };
        let link = self.clone();
        actix::spawn(async move {
            let started = Instant::now();
            let delivered = match link.fetch_sync_with(full).await {
                Ok((push, tokens)) => {
                    if push.set.is_empty() && push.remove.is_empty() && tokens.is_empty() {
                        false
                    } else {
                        *link.sync.fetched.lock() = Some(Fetched {
                            version: push.version,
                            tokens,
                            round,
                            started,
                        });
                        // A full mailbox drops it: the device asks again.
                        inbox.try_send(Inbound::Sync(push)).is_ok()
                    }
                }
                Err(e) => {
                    link.sync_failed(&e);
                    false
                }
            };
            if !delivered {
                *link.sync.in_flight.lock() = None;
            }
        });
    }

    /// Sends the device's ack for a fetched batch (in the background), with
    /// the batch's QR/BLE credentials confirmed; then fetches again while
    /// something is still pending.
    pub fn sync_ack(&self, ack: &SyncAckMsg) {
        let mut ack = ack.clone();
        let (round, started) = match self.sync.fetched.lock().take() {
            Some(f) if f.version == ack.version => {
                ack.results
                    .extend(f.tokens.into_iter().map(|credential| SyncResult {
                        credential,
                        failure: None,
                    }));
                (f.round, Some(f.started))
            }
            _ => (1, None),
        };
        let link = self.clone();
        actix::spawn(async move {
            let outcome = match link.post_sync_ack(&ack).await {
                Ok(()) => Outcome::Granted,
                Err(e) => {
                    link.sync_failed(&e);
                    Outcome::Error
                }
            };
            if let (Some(t), Some(started)) = (&link.timings, started) {
                let now = Instant::now();
                t.record(Operation::SyncRoundTrip, outcome, now - started, now);
            }
            // More behind this batch, or changed meanwhile (a 409): again.
            if round < SYNC_ROUNDS && link.inbox.is_some() {
                link.spawn_fetch(round + 1, false);
            } else {
                *link.sync.in_flight.lock() = None;
            }
        });
    }
}
