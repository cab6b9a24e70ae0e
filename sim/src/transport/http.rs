//! The HTTP transport (reqwest): `POST /v1/devices/{device}/validate` with
//! the device's secret as a Bearer token, as door phones do in third-party
//! server mode. The protocol has no HTTP route for events or syncs, so
//! events are accounted locally (`local_log`) and syncs are unsupported.

use std::sync::Arc;
use std::time::Duration;

use reference_server::protocol::{AuthRequest, AuthResponse, Event, WireCredential};
use tokio::time::Instant;

use super::{Checked, DeviceSecrets, Endpoint, EventLog, ServerIds, TransportError};

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
        })
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
            bearer: bearer.into(),
            log: self.log.clone(),
            device: ep.device,
            server_ids: self.server_ids.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HttpLink {
    client: reqwest::Client,
    url: Arc<str>,
    bearer: Arc<str>,
    log: Arc<EventLog>,
    device: reference_server::domain::DeviceId,
    server_ids: Option<Arc<dyn ServerIds>>,
}

impl HttpLink {
    pub async fn check(&self, req: &AuthRequest) -> Result<Checked, TransportError> {
        let t0 = Instant::now();
        // The server signed its own token for the credential.
        let translated = self.server_ids.as_ref().and_then(|m| {
            let c = match &req.credential {
                WireCredential::Qr(t) => WireCredential::Qr(m.token(t)?),
                WireCredential::Ble(t) => WireCredential::Ble(m.token(t)?),
                _ => return None,
            };
            Some(AuthRequest {
                credential: c,
                ..req.clone()
            })
        });
        let resp = self
            .client
            .post(&*self.url)
            .bearer_auth(&*self.bearer)
            .json(translated.as_ref().unwrap_or(req))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    TransportError::Timeout(0)
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
}
