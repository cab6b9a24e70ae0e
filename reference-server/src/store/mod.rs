//! Durable storage in SQLite (WAL mode): the engine's command log, user
//! tokens and device secrets (hashes only), status reports and the activity
//! log.
//!
//! Every write goes through ONE writer thread fed by a bounded channel. The
//! thread takes everything queued, commits it in one transaction (group
//! commit) and then answers each waiter, so many concurrent writers share one
//! fsync. The engine is rebuilt at start by replaying the command log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::activity::{ActivityEntry, ActivityQuery, MAX_QUERY_LIMIT};
use crate::domain::{CredentialId, DeviceId, Origin, UserId};
use crate::engine::Command;
use crate::metrics::Metrics;
use crate::protocol::How;

/// Jobs waiting for the writer; senders wait when it is full (backpressure).
pub const WRITE_QUEUE_CAPACITY: usize = 8_192;
/// Most jobs committed in one transaction.
pub const MAX_BATCH_JOBS: usize = 4_096;

const DB_FILE: &str = "reference-server.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("corrupt row {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// One durable write.
#[derive(Clone, Debug)]
pub enum Write {
    /// An applied engine command (the resolved form) and when it was applied.
    Command {
        at: Timestamp,
        json: String,
    },
    /// Ignored when a device event with the same `(device, seq)` is there.
    Activity(ActivityEntry),
    UserToken {
        user: UserId,
        hash: [u8; 32],
    },
    DeviceSecret {
        device: DeviceId,
        hash: [u8; 32],
    },
    Status {
        device: DeviceId,
        at: Timestamp,
        online: bool,
        battery_pct: Option<u8>,
        firmware: Option<String>,
    },
}

/// Per write of a job: did it change a row (false: a duplicate event)?
pub type WriteAck = Result<Vec<bool>, Arc<StoreError>>;

struct Job {
    writes: Vec<Write>,
    reply: Option<oneshot::Sender<WriteAck>>,
    /// The last job: commit what came before and stop.
    stop: bool,
}

/// A stored status report.
#[derive(Clone, Debug)]
pub struct StatusRow {
    pub device: DeviceId,
    pub at: Timestamp,
    pub online: bool,
    pub battery_pct: Option<u8>,
    pub firmware: Option<String>,
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub commands: Vec<(Timestamp, Command)>,
    pub user_tokens: Vec<(UserId, [u8; 32])>,
    pub device_secrets: Vec<(DeviceId, [u8; 32])>,
    pub statuses: Vec<StatusRow>,
}

pub struct Store {
    tx: mpsc::Sender<Job>,
    reader: Mutex<Connection>,
    path: PathBuf,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS commands (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS user_tokens (user INTEGER NOT NULL, hash BLOB NOT NULL PRIMARY KEY);
CREATE TABLE IF NOT EXISTS device_secrets (device INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS statuses (id INTEGER PRIMARY KEY, device INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    online INTEGER NOT NULL, battery_pct INTEGER, firmware TEXT);
CREATE TABLE IF NOT EXISTS activity (id INTEGER PRIMARY KEY, device INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL, how TEXT, credential INTEGER, origin TEXT, reason TEXT, seq INTEGER, detail TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS activity_device_seq ON activity (device, seq);
CREATE INDEX IF NOT EXISTS activity_device_at ON activity (device, at_ms);
";

fn open_conn(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before a waiter hears of it (power loss
        // included); group commit pays for the fsync once per batch.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
    }
    Ok(conn)
}

fn to_ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn from_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn enum_str<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

fn enum_from<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_value(serde_json::Value::String(s)).ok())
}

impl Store {
    /// Opens (or creates) the store in `dir` and reads everything back.
    pub fn open(dir: &Path, metrics: Arc<Metrics>) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let conn = open_conn(&path, false)?;
        let loaded = load(&conn)?;
        let reader = open_conn(&path, true)?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, &metrics))?;
        Ok((
            Store {
                tx,
                reader: Mutex::new(reader),
                path,
                writer: Mutex::new(Some(writer)),
            },
            loaded,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `writes` in one transaction and waits until they are durable.
    pub async fn write(&self, writes: Vec<Write>) -> WriteAck {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                writes,
                reply: Some(reply),
                stop: false,
            })
            .await
            .map_err(|_| Arc::new(StoreError::Closed))?;
        rx.await.map_err(|_| Arc::new(StoreError::Closed))?
    }

    /// Queues `writes` for the next commit without waiting for it (activity
    /// entries of checks). Waits only while the queue is full.
    pub async fn write_later(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.tx
            .send(Job {
                writes,
                reply: None,
                stop: false,
            })
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Queues a write and returns a receiver for its acknowledgement, so the
    /// caller can order the enqueue under a lock and wait outside it.
    pub async fn enqueue(
        &self,
        writes: Vec<Write>,
    ) -> Result<oneshot::Receiver<WriteAck>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                writes,
                reply: Some(reply),
                stop: false,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Reads the activity log, newest first.
    pub fn activity(&self, q: &ActivityQuery) -> Result<Vec<ActivityEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT device, at_ms, kind, how, credential, origin, reason, seq, detail FROM activity WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(d) = q.device {
            sql.push_str(" AND device = ?");
            args.push(i64::from(d.0).into());
        }
        if let Some(f) = q.from {
            sql.push_str(" AND at_ms >= ?");
            args.push(to_ms(f).into());
        }
        if let Some(t) = q.to {
            sql.push_str(" AND at_ms < ?");
            args.push(to_ms(t).into());
        }
        if let Some(k) = &q.kind {
            sql.push_str(" AND kind = ?");
            args.push(k.clone().into());
        }
        sql.push_str(" ORDER BY at_ms DESC, id DESC LIMIT ?");
        args.push(i64::from(q.limit.clamp(1, MAX_QUERY_LIMIT)).into());
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(ActivityEntry {
                device: DeviceId(r.get::<_, u32>(0)?),
                at: from_ms(r.get(1)?),
                kind: r.get(2)?,
                how: enum_from::<How>(r.get(3)?),
                credential: r.get::<_, Option<u32>>(4)?.map(CredentialId),
                origin: enum_from::<Origin>(r.get(5)?),
                reason: r.get(6)?,
                seq: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
                detail: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stops the writer after it has committed everything queued before.
    pub async fn close(&self) {
        let _ = self
            .tx
            .send(Job {
                writes: Vec::new(),
                reply: None,
                stop: true,
            })
            .await;
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn load(conn: &Connection) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
    let mut stmt = conn.prepare("SELECT seq, at, json FROM commands ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let at: String = r.get(1)?;
        let json: String = r.get(2)?;
        let at: Timestamp = at.parse().map_err(|e| StoreError::Corrupt {
            what: "commands.at",
            detail: format!("seq {seq}: {e}"),
        })?;
        let cmd: Command = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
            what: "commands.json",
            detail: format!("seq {seq}: {e}"),
        })?;
        loaded.commands.push((at, cmd));
    }
    let blob32 = |b: Vec<u8>, what: &'static str| -> Result<[u8; 32], StoreError> {
        b.try_into().map_err(|_| StoreError::Corrupt {
            what,
            detail: "not 32 bytes".into(),
        })
    };
    let mut stmt = conn.prepare("SELECT user, hash FROM user_tokens")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        loaded
            .user_tokens
            .push((UserId(r.get(0)?), blob32(r.get(1)?, "user_tokens.hash")?));
    }
    let mut stmt = conn.prepare("SELECT device, hash FROM device_secrets")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        loaded.device_secrets.push((
            DeviceId(r.get(0)?),
            blob32(r.get(1)?, "device_secrets.hash")?,
        ));
    }
    let mut stmt = conn
        .prepare("SELECT device, at_ms, online, battery_pct, firmware FROM statuses ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        loaded.statuses.push(StatusRow {
            device: DeviceId(r.get(0)?),
            at: from_ms(r.get(1)?),
            online: r.get(2)?,
            battery_pct: r.get(3)?,
            firmware: r.get(4)?,
        });
    }
    Ok(loaded)
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>, metrics: &Metrics) {
    let mut stopping = false;
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH_JOBS && !jobs.last().is_some_and(|j| j.stop) {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if jobs.last().is_some_and(|j| j.stop) {
            jobs.pop();
            stopping = true;
        }
        let started = Instant::now();
        let result = commit(&mut conn, &jobs);
        metrics
            .store_write_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.store_batch_size.observe(jobs.len() as f64);
        match result {
            Ok(acks) => {
                for (job, ack) in jobs.into_iter().zip(acks) {
                    if let Some(r) = job.reply {
                        let _ = r.send(Ok(ack));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = jobs.len(), "store commit failed");
                let e = Arc::new(e);
                for job in jobs {
                    if let Some(r) = job.reply {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
        }
        if stopping {
            rx.close();
            return;
        }
    }
}

fn commit(conn: &mut Connection, jobs: &[Job]) -> Result<Vec<Vec<bool>>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let tx = conn.transaction()?;
    let mut acks = Vec::with_capacity(jobs.len());
    {
        let mut cmd = tx.prepare_cached("INSERT INTO commands (at, json) VALUES (?1, ?2)")?;
        let mut act = tx.prepare_cached(
            "INSERT OR IGNORE INTO activity (device, at_ms, kind, how, credential, origin, reason, seq, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut tok = tx.prepare_cached("INSERT INTO user_tokens (user, hash) VALUES (?1, ?2)")?;
        let mut sec = tx.prepare_cached(
            "INSERT OR REPLACE INTO device_secrets (device, hash) VALUES (?1, ?2)",
        )?;
        let mut st = tx.prepare_cached(
            "INSERT INTO statuses (device, at_ms, online, battery_pct, firmware) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for job in jobs {
            let mut ack = Vec::with_capacity(job.writes.len());
            for w in &job.writes {
                let n = match w {
                    Write::Command { at, json } => cmd.execute(params![at.to_string(), json])?,
                    Write::Activity(e) => act.execute(params![
                        e.device.0,
                        to_ms(e.at),
                        e.kind,
                        e.how.as_ref().and_then(enum_str),
                        e.credential.map(|c| c.0),
                        e.origin.as_ref().and_then(enum_str),
                        e.reason,
                        e.seq.map(|s| s as i64),
                        e.detail,
                    ])?,
                    Write::UserToken { user, hash } => tok.execute(params![user.0, &hash[..]])?,
                    Write::DeviceSecret { device, hash } => {
                        sec.execute(params![device.0, &hash[..]])?
                    }
                    Write::Status {
                        device,
                        at,
                        online,
                        battery_pct,
                        firmware,
                    } => {
                        st.execute(params![device.0, to_ms(*at), online, battery_pct, firmware])?
                    }
                };
                ack.push(n > 0);
            }
            acks.push(ack);
        }
    }
    tx.commit()?;
    Ok(acks)
}

/// Reads the count of stored commands (tests and diagnostics).
pub fn command_count(dir: &Path) -> Result<u64, StoreError> {
    let conn = open_conn(&dir.join(DB_FILE), true)?;
    Ok(conn
        .query_row("SELECT COUNT(*) FROM commands", [], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0) as u64)
}
