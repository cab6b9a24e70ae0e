//! The event log and the webhook delivery queue in SQLite.
//!
//! - `events`: the log. `AUTOINCREMENT`, so an id is never reused, even
//!   after old events are deleted: a `Last-Event-ID` or a cursor never
//!   names another event than the one it did.
//! - `webhook_endpoints`: an organization's receivers (deleted ones are
//!   kept, flagged, so their deliveries stay readable).
//! - `webhook_deliveries`: one row per (endpoint, event), inserted in the
//!   same transaction as the event, so an event and its deliveries are
//!   durable together; the dispatcher (`events::webhooks`) takes the due
//!   ones and records each attempt through the writer.
//!
//! Writes go through the store's one writer thread (`Write::Event`,
//! `Write::Webhook`); reads use the store's reader connection.

use jiff::Timestamp;
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::{from_ms, to_ms, Store, StoreError};
use crate::domain::{DeviceId, OrgId};
use crate::events::{Event, EventType, NewEvent};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, org INTEGER NOT NULL,
    type TEXT NOT NULL, device INTEGER, created_at_ms INTEGER NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_org_id ON events (org, id);
CREATE TABLE IF NOT EXISTS webhook_endpoints (id TEXT PRIMARY KEY, org INTEGER NOT NULL, url TEXT NOT NULL,
    secret TEXT NOT NULL, created_at_ms INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS webhook_deliveries (id INTEGER PRIMARY KEY, endpoint TEXT NOT NULL,
    event INTEGER NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, next_attempt_ms INTEGER,
    last_attempt_ms INTEGER, last_status_code INTEGER, last_error TEXT);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint, id);
";

/// Longest error text kept per delivery attempt.
pub const MAX_DELIVERY_ERROR_CHARS: usize = 200;

/// A change to the webhook tables.
#[derive(Clone, Debug)]
pub enum WebhookWrite {
    CreateEndpoint {
        id: String,
        org: OrgId,
        url: String,
        secret: String,
        at: Timestamp,
    },
    /// Flags the endpoint deleted and cancels its pending deliveries.
    DeleteEndpoint { id: String },
    /// One delivery attempt's outcome.
    Attempted {
        delivery: u64,
        at: Timestamp,
        status_code: Option<u16>,
        error: Option<String>,
        /// The state it is left in.
        status: DeliveryStatus,
        /// When to try again (`Pending` only).
        next_attempt_at: Option<Timestamp>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Every attempt failed; no more will be made.
    Failed,
    /// The endpoint was deleted before it was delivered.
    Cancelled,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> DeliveryStatus {
        match s {
            "succeeded" => DeliveryStatus::Succeeded,
            "failed" => DeliveryStatus::Failed,
            "cancelled" => DeliveryStatus::Cancelled,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// A webhook endpoint as stored (the secret only leaves at creation).
#[derive(Clone, Debug)]
pub struct EndpointRow {
    pub id: String,
    pub org: OrgId,
    pub url: String,
    pub secret: String,
    pub created_at: Timestamp,
}

/// A delivery as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Its position in the queue (decimal string).
    pub delivery_id: String,
    pub event_id: String,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Timestamp>,
    /// The receiver's HTTP status on the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed without a status (connection refused,
    /// timeout, a TLS failure such as an untrusted certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A delivery the dispatcher should attempt now.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    pub delivery: u64,
    pub attempts: u32,
    pub url: String,
    pub secret: String,
    pub event: Event,
}

/// Filters of an event-log read.
#[derive(Clone, Debug)]
pub struct EventQuery {
    pub org: OrgId,
    pub event_type: Option<EventType>,
    pub device: Option<DeviceId>,
    pub order: Order,
    pub limit: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Oldest first, ids above this one (0: from the start).
    After(u64),
    /// Newest first, ids below this one (None: from the newest).
    Before(Option<u64>),
}

fn event_from_row(id: i64, json: &str) -> Result<Event, StoreError> {
    let body: NewEvent = serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: "events.json",
        detail: format!("id {id}: {e}"),
    })?;
    Ok(Event::new(id as u64, body))
}

/// Appends `event` to the log and queues it for each live endpoint of its
/// organization (in the caller's transaction).
pub(super) fn insert_event(tx: &Transaction<'_>, event: &NewEvent) -> Result<Event, StoreError> {
    let json = serde_json::to_string(event).expect("events serialize");
    tx.prepare_cached(
        "INSERT INTO events (org, type, device, created_at_ms, json) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        event.organization_id.0,
        event.event_type.as_str(),
        event.device_id.map(|d| d.0),
        to_ms(event.created_at),
        json
    ])?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached(
        "INSERT INTO webhook_deliveries (endpoint, event, status, attempts, next_attempt_ms)
         SELECT id, ?1, 'pending', 0, ?2 FROM webhook_endpoints WHERE org = ?3 AND deleted = 0",
    )?
    .execute(params![
        id,
        to_ms(event.created_at),
        event.organization_id.0
    ])?;
    Ok(Event::new(id as u64, event.clone()))
}

/// Applies one webhook change (in the caller's transaction); the number
/// of rows it changed.
pub(super) fn apply_webhook(tx: &Transaction<'_>, w: &WebhookWrite) -> Result<usize, StoreError> {
    Ok(match w {
        WebhookWrite::CreateEndpoint {
            id,
            org,
            url,
            secret,
            at,
        } => tx
            .prepare_cached(
                "INSERT INTO webhook_endpoints (id, org, url, secret, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, org.0, url, secret, to_ms(*at)])?,
        WebhookWrite::DeleteEndpoint { id } => {
            let n = tx
                .prepare_cached("UPDATE webhook_endpoints SET deleted = 1 WHERE id = ?1 AND deleted = 0")?
                .execute(params![id])?;
            tx.prepare_cached(
                "UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_ms = NULL
                 WHERE endpoint = ?1 AND status = 'pending'",
            )?
            .execute(params![id])?;
            n
        }
        WebhookWrite::Attempted {
            delivery,
            at,
            status_code,
            error,
            status,
            next_attempt_at,
        } => tx
            .prepare_cached(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_ms = ?2,
                 last_status_code = ?3, last_error = ?4, status = ?5, next_attempt_ms = ?6
                 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![
                *delivery as i64,
                to_ms(*at),
                status_code,
                error
                    .as_deref()
                    .map(|e| e.chars().take(MAX_DELIVERY_ERROR_CHARS).collect::<String>()),
                status.as_str(),
                next_attempt_at.map(to_ms),
            ])?,
    })
}

/// Deletes events created before `since` and the deliveries of events no
/// longer in the log (retention, at open).
pub(super) fn delete_before(
    conn: &rusqlite::Connection,
    since: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM events WHERE created_at_ms < ?1",
        params![to_ms(since)],
    )?;
    conn.execute(
        "DELETE FROM webhook_deliveries WHERE status != 'pending'
         AND event < (SELECT COALESCE(MIN(id), 9223372036854775807) FROM events)",
        [],
    )?;
    Ok(())
}

impl Store {
    /// Reads the event log.
    pub fn events(&self, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let mut sql = String::from("SELECT id, json FROM events WHERE org = ?");
        let mut args: Vec<rusqlite::types::Value> = vec![i64::from(q.org.0).into()];
        if let Some(t) = q.event_type {
            sql.push_str(" AND type = ?");
            args.push(t.as_str().to_string().into());
        }
        if let Some(d) = q.device {
            sql.push_str(" AND device = ?");
            args.push(i64::from(d.0).into());
        }
        match q.order {
            Order::After(after) => {
                sql.push_str(" AND id > ? ORDER BY id ASC");
                args.push((after.min(i64::MAX as u64) as i64).into());
            }
            Order::Before(Some(before)) => {
                sql.push_str(" AND id < ? ORDER BY id DESC");
                args.push((before.min(i64::MAX as u64) as i64).into());
            }
            Order::Before(None) => sql.push_str(" ORDER BY id DESC"),
        }
        sql.push_str(" LIMIT ?");
        args.push(i64::from(q.limit).into());
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|r| {
            let (id, json) = r?;
            event_from_row(id, &json)
        })
        .collect()
    }

    /// An organization's live webhook endpoints, oldest first.
    pub fn webhook_endpoints(&self, org: OrgId) -> Result<Vec<EndpointRow>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, org, url, secret, created_at_ms FROM webhook_endpoints
             WHERE org = ?1 AND deleted = 0 ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![org.0], endpoint_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A live endpoint by id.
    pub fn webhook_endpoint(&self, id: &str) -> Result<Option<EndpointRow>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, org, url, secret, created_at_ms FROM webhook_endpoints WHERE id = ?1 AND deleted = 0",
        )?;
        Ok(stmt.query_row(params![id], endpoint_row).optional()?)
    }

    /// An endpoint's deliveries, newest first, ids below `before`.
    pub fn deliveries(
        &self,
        endpoint: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.event, e.type, d.status, d.attempts, d.next_attempt_ms, d.last_attempt_ms,
                    d.last_status_code, d.last_error
             FROM webhook_deliveries d JOIN events e ON e.id = d.event
             WHERE d.endpoint = ?1 AND d.id < ?2 ORDER BY d.id DESC LIMIT ?3",
        )?;
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let rows = stmt.query_map(params![endpoint, before, limit], |r| {
            let t: String = r.get(2)?;
            let status: String = r.get(3)?;
            Ok(Delivery {
                delivery_id: r.get::<_, i64>(0)?.to_string(),
                event_id: r.get::<_, i64>(1)?.to_string(),
                event_type: EventType::parse(&t).unwrap_or(EventType::DeviceConnected),
                status: DeliveryStatus::parse(&status),
                attempts: r.get(4)?,
                next_attempt_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
                last_attempt_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
                last_status_code: r.get(7)?,
                last_error: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Pending deliveries due at `now`, oldest due first, at most `limit`.
    pub fn due_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.attempts, w.url, w.secret, e.id, e.json
             FROM webhook_deliveries d
             JOIN webhook_endpoints w ON w.id = d.endpoint
             JOIN events e ON e.id = d.event
             WHERE d.status = 'pending' AND d.next_attempt_ms <= ?1
             ORDER BY d.next_attempt_ms, d.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![to_ms(now), limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut due = Vec::new();
        for r in rows {
            let (delivery, attempts, url, secret, event, json) = r?;
            due.push(DueDelivery {
                delivery: delivery as u64,
                attempts,
                url,
                secret,
                event: event_from_row(event, &json)?,
            });
        }
        Ok(due)
    }

    /// When the next pending delivery falls due, if any.
    pub fn next_delivery_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let conn = self.reader.lock();
        let ms: Option<i64> = conn.query_row(
            "SELECT MIN(next_attempt_ms) FROM webhook_deliveries WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(ms.map(from_ms))
    }
}

fn endpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EndpointRow> {
    Ok(EndpointRow {
        id: r.get(0)?,
        org: OrgId(r.get(1)?),
        url: r.get(2)?,
        secret: r.get(3)?,
        created_at: from_ms(r.get(4)?),
    })
}
