//! Webhook delivery: the dispatcher takes due deliveries from the durable
//! queue (`webhook_deliveries`, filled in the same transaction as each
//! event), POSTs each signed event to its endpoint, and records the
//! attempt through the store's writer. A failed attempt (no answer, or
//! not 2xx) is retried with exponential backoff ([`RetryPolicy`]) until
//! it succeeds or the attempts run out (`failed`).
//!
//! The queue is the database: a restart loses nothing. A delivery whose
//! attempt was under way when the server stopped is attempted again
//! (at-least-once; receivers dedupe on `webhook-id`, the event's id).
//! Waiting between attempts uses tokio time; when the next attempt falls
//! due is a time of the server's clock, stored with the delivery.
//!
//! Endpoints are `https://` (certificates verified against the bundled
//! Mozilla roots plus an optional private CA, `--webhook-ca-file`) or
//! plain `http://`. A TLS failure (an untrusted certificate, a name that
//! does not match) is a failed attempt like any other: recorded as the
//! delivery's `last_error` and retried, never delivered around.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::sign;
use crate::service::Service;
use crate::store::{DeliveryStatus, DueDelivery, WebhookWrite, Write};

/// Most deliveries attempted at once (one batch).
pub const DELIVERY_BATCH: u32 = 32;
/// An attempt's whole budget: connect, send, the receiver's answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest idle wait before the queue is read again (a clock that jumped).
pub const MAX_IDLE_WAIT: Duration = Duration::from_secs(30);
/// Live endpoints an organization may have.
pub const MAX_WEBHOOKS_PER_ORG: usize = 16;
/// Longest endpoint URL.
pub const MAX_URL_LEN: usize = 2_048;

/// When a failed delivery is tried again: `first_retry_after`, doubling
/// per failed attempt up to `max_retry_after`, `max_attempts` in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_retry_after: Duration,
    pub max_retry_after: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 5 s, 10 s, 20 s, ... capped at 1 h; 12 attempts (about 5 hours).
    fn default() -> Self {
        RetryPolicy {
            first_retry_after: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(3_600),
            max_attempts: 12,
        }
    }
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts; None: give up.
    pub fn after(&self, attempts: u32) -> Option<Duration> {
        if attempts == 0 || attempts >= self.max_attempts {
            return None;
        }
        let factor = 1u32.checked_shl(attempts - 1).unwrap_or(u32::MAX);
        Some(
            self.first_retry_after
                .saturating_mul(factor)
                .min(self.max_retry_after),
        )
    }
}

/// Why the delivery client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the webhook CA file holds no PEM certificate")]
    NoCertificate,
    #[error("the webhook CA file is not PEM certificates: {0}")]
    BadPem(reqwest::Error),
    #[error("the webhook HTTP client: {0}")]
    Build(reqwest::Error),
}

/// The delivery client: rustls, verifying servers against the bundled
/// Mozilla roots and, if given, the certificates of `extra_ca_pem` (a
/// private CA). It follows no redirect (a signed body goes only where
/// it was registered).
pub fn client(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(true);
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(ClientError::BadPem)?;
        if certs.is_empty() {
            return Err(ClientError::NoCertificate);
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(ClientError::Build)
}

/// Starts the dispatcher with its client; it stops (abandoning attempts
/// under way, which stay pending) before the store closes.
pub fn start(svc: Arc<Service>, client: reqwest::Client) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(dispatch(svc.clone(), client, stop_rx));
    svc.before_close(Box::new(move || {
        Box::pin(async move {
            let _ = stop_tx.send(());
            let _ = task.await;
        })
    }));
}

async fn dispatch(
    svc: Arc<Service>,
    client: reqwest::Client,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    // New events wake the dispatcher (their deliveries are due at once).
    let mut committed = svc.store().subscribe_events();
    loop {
        let now = svc.now();
        let due = svc
            .store()
            .due_deliveries(now, DELIVERY_BATCH)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the webhook queue could not be read");
                Vec::new()
            });
        if !due.is_empty() {
            let attempts = futures::future::join_all(due.iter().map(|d| attempt(&client, &svc, d)));
            let writes = tokio::select! {
                _ = &mut stop => return,
                w = attempts => w,
            };
            let writes = writes.into_iter().map(Write::Webhook).collect();
            if let Err(e) = svc.store().write(writes).await {
                tracing::warn!(error = %e, "webhook attempts could not be recorded");
                return;
            }
            continue;
        }
        let next = svc.store().next_delivery_due().ok().flatten();
        let wait = next
            .map(|t| {
                let ms = (t - now).get_milliseconds().max(0) as u64;
                Duration::from_millis(ms).min(MAX_IDLE_WAIT)
            })
            .unwrap_or(MAX_IDLE_WAIT);
        tokio::select! {
            _ = &mut stop => return,
            r = committed.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One signed POST of a delivery; the outcome to record.
async fn attempt(client: &reqwest::Client, svc: &Service, d: &DueDelivery) -> WebhookWrite {
    let body = serde_json::to_vec(&d.event).expect("events serialize");
    let result = match sign::secret_key(&d.secret) {
        None => Err("the endpoint's secret is corrupt".to_string()),
        Some(key) => {
            let ts = svc.now().as_second();
            let id = &d.event.event_id;
            client
                .post(&d.url)
                .header("content-type", "application/json")
                .header("webhook-id", id.as_str())
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign::signature(&key, id, ts, &body))
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| error_text(&e))
        }
    };
    let at = svc.now();
    let attempts = d.attempts.saturating_add(1);
    let ok = matches!(result, Ok(code) if (200..300).contains(&code));
    let (status, next_attempt_at) = if ok {
        (DeliveryStatus::Succeeded, None)
    } else {
        match svc.feed().retry_policy().after(attempts) {
            Some(wait) => (DeliveryStatus::Pending, Some(later(at, wait))),
            None => (DeliveryStatus::Failed, None),
        }
    };
    if !ok {
        tracing::debug!(
            delivery = d.delivery,
            attempts,
            ?result,
            "webhook attempt failed"
        );
    }
    WebhookWrite::Attempted {
        delivery: d.delivery,
        at,
        status_code: result.as_ref().ok().copied(),
        error: result.err(),
        status,
        next_attempt_at,
    }
}

fn later(at: Timestamp, wait: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(wait)
        .ok()
        .and_then(|w| at.checked_add(w).ok())
        .unwrap_or(Timestamp::MAX)
}

/// A reqwest error's cause chain, without the URL (which the API already
/// shows). A TLS failure reads like "could not connect: ...: invalid peer
/// certificate: UnknownIssuer".
fn error_text(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_pem_certificate_is_refused() {
        assert!(client(None).is_ok());
        for bad in [&b""[..], b"not a certificate\n"] {
            assert!(
                matches!(client(Some(bad)), Err(ClientError::NoCertificate)),
                "{bad:?}"
            );
        }
        let broken = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(client(Some(broken)).is_err());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_ends() {
        let p = RetryPolicy {
            first_retry_after: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
            max_attempts: 6,
        };
        let waits: Vec<_> = (1..=6).map(|n| p.after(n).map(|d| d.as_secs())).collect();
        assert_eq!(
            waits,
            vec![Some(5), Some(10), Some(20), Some(30), Some(30), None]
        );
        assert_eq!(p.after(0), None);
        let huge = RetryPolicy {
            max_attempts: u32::MAX,
            max_retry_after: Duration::MAX,
            ..p
        };
        assert!(huge.after(200).is_some(), "no overflow");
    }
}
