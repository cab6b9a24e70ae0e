//! Durable storage in SQLite (WAL mode): the engine's command log, user
//! tokens and device secrets (hashes only), status reports and the activity
//! log.
//!
//! Every write goes through ONE writer thread fed by two bounded queues:
//!
//! - acknowledged writes (`write`, `enqueue`): the caller waits until they
//!   are on disk. The thread takes everything queued, commits it in one
//!   transaction with `synchronous=FULL` (group commit: one fsync for many
//!   waiters) and then answers each waiter;
//! - fire-and-forget writes (`write_later`: the activity entries of checks),
//!   in a much longer queue so a slow disk (an fsync or a checkpoint taking
//!   hundreds of milliseconds while other programs write) holds up nobody's
//!   answer. A transaction holding only these commits with
//!   `synchronous=NORMAL`: no fsync, yet it survives `kill -9` (the pages are
//!   in the OS); the next FULL commit makes them durable against power loss
//!   too, since its fsync covers the whole log file.
//!
//! Checkpoints (copying the WAL into the database file, with its fsync) run
//! on a separate checkpointer thread, not in the writer, so they do not
//! delay commits. When the WAL still grows past [`WAL_TRUNCATE_FRAMES`]
//! (the checkpointer never catches up under a steady write load), the writer
//! truncates it itself after a commit.
//!
//! The engine is rebuilt at start by replaying the command log.
//!
//! The admin API's idempotency keys live in the same file, in their own
//! table on their own connection ([`idempotency`]): a key's claim must be
//! answered before the request runs, not batched with the log.
//!
//! The store is private: the data directory is made owner-only (0700) and
//! the database file is created owner-only (0600) before SQLite opens it,
//! so its `-wal` and `-shm` files (SQLite gives them the database file's
//! mode) are too, from their creation. The command log holds PINs and card
//! numbers in plaintext, because the server must be able to push each code
//! to the locks that store it. [`loose_permissions`] lists what is looser
//! (a directory made by an older version, a restored backup); the server
//! warns at start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::activity::{ActivityEntry, ActivityQuery, LogPosition, MAX_QUERY_LIMIT};
use crate::domain::{CredentialId, DeviceId, HolderId, OrgId, Origin, UserId};
use crate::engine::Command;
use crate::metrics::Metrics;
use crate::protocol::How;

pub mod events;
pub mod idempotency;

use crate::events::{Event, NewEvent};
pub use events::{
    Delivery, DeliveryStatus, DueDelivery, EndpointRow, EventQuery, Order, WebhookWrite,
};

/// Acknowledged jobs waiting for the writer; senders wait when it is full
/// (backpressure).
pub const WRITE_QUEUE_CAPACITY: usize = 8_192;
/// Fire-and-forget writes waiting for the writer: several seconds of checks
/// at 20k/s, so a disk stall does not reach the answers. Senders wait only
/// when it is full (a sustained overload slows checks instead of losing
/// log entries).
pub const LATER_QUEUE_CAPACITY: usize = 131_072;
/// Most acknowledged jobs committed in one transaction.
pub const MAX_BATCH_JOBS: usize = 4_096;
/// Most fire-and-forget writes committed in one transaction (besides a
/// `flush`, which takes all that were queued before it).
pub const MAX_BATCH_LATER: usize = 16_384;
/// How long fire-and-forget writes gather before they are committed (no
/// one waits for them; a flush or an acknowledged write ends the wait).
pub const LATER_GATHER: Duration = Duration::from_millis(20);
/// How often the checkpointer copies the WAL into the database file.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// WAL frames (pages, 4 KiB) above which the writer truncates the WAL
/// itself: 64 MiB.
pub const WAL_TRUNCATE_FRAMES: i64 = 16_384;
/// Committed events buffered for live readers (the SSE streams, the
/// webhook dispatcher); one that falls further behind re-reads the log.
pub const EVENT_BROADCAST_CAPACITY: usize = 1_024;

const DB_FILE: &str = "reference-server.db";
/// Mode of the data directory: its owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file in it: its owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) owner-only. An existing directory
/// keeps its mode: [`loose_permissions`] reports it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(PRIVATE_DIR_MODE);
    }
    b.create(dir)
}

/// Opens `path` for writing, creating it owner-only when missing (an
/// existing file keeps its content and mode).
pub fn create_private_file(path: &Path, create_new: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(PRIVATE_FILE_MODE);
    }
    o.open(path)
}

/// The data directory and the entries in it that other users may read,
/// write or enter, with their modes. Empty where modes do not apply.
pub fn loose_permissions(dir: &Path) -> std::io::Result<Vec<(PathBuf, u32)>> {
    let mut loose = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut check = |path: PathBuf, meta: std::fs::Metadata| {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                loose.push((path, mode));
            }
        };
        check(dir.to_path_buf(), std::fs::metadata(dir)?);
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            check(e.path(), e.metadata()?);
        }
    }
    Ok(loose)
}

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
    /// Ignored when a device event with the same `(device, boot, seq)` is
    /// there.
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
    /// An event for the log (and its webhook deliveries). With
    /// `if_previous_changed`, only when the write before it in the same
    /// job changed a row (the event of a device's event that was not a
    /// duplicate).
    Event {
        event: NewEvent,
        if_previous_changed: bool,
    },
    Webhook(WebhookWrite),
    /// A Home Assistant PIN slot of a lock now holds the code `credential`
    /// (its code id: a changed PIN keeps it); `None` empties the slot
    /// (`service::pin_slots`).
    PinSlot {
        device: DeviceId,
        slot: u16,
        credential: Option<CredentialId>,
    },
    /// The holder the organization's Home Assistant codes are issued to.
    PinSlotHolder {
        org: OrgId,
        holder: HolderId,
    },
}

impl Write {
    /// An event logged unconditionally.
    pub fn event(event: NewEvent) -> Write {
        Write::Event {
            event,
            if_previous_changed: false,
        }
    }
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
    /// Home Assistant PIN slots: (lock, slot, code id).
    pub pin_slots: Vec<(DeviceId, u16, CredentialId)>,
    /// The holder of each organization's Home Assistant codes.
    pub pin_slot_holders: Vec<(OrgId, HolderId)>,
}

pub struct Store {
    tx: mpsc::Sender<Job>,
    later_tx: mpsc::Sender<Write>,
    reader: Mutex<Connection>,
    path: PathBuf,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Dropping it stops the checkpointer.
    checkpointer_stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Each committed event, in log order, after its commit.
    events_tx: broadcast::Sender<Arc<Event>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS commands (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS user_tokens (user INTEGER NOT NULL, hash BLOB NOT NULL PRIMARY KEY);
CREATE TABLE IF NOT EXISTS device_secrets (device INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS statuses (id INTEGER PRIMARY KEY, device INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    online INTEGER NOT NULL, battery_pct INTEGER, firmware TEXT);
CREATE TABLE IF NOT EXISTS activity (id INTEGER PRIMARY KEY, device INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL, how TEXT, credential INTEGER, origin TEXT, reason TEXT, seq INTEGER, detail TEXT,
    boot INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS activity_device_at ON activity (device, at_ms);
";

/// A device's event is logged once per `(device, boot, seq)` (protocol
/// version 2). A store from before the boot epoch has the `activity`
/// table without `boot` and a unique index on `(device, seq)`: the column
/// is added (its events are boot 0, as a version 1 device's are) and the
/// index replaced, so a reflashed device that restarts `seq` under a new
/// boot is logged.
fn migrate_activity_boot(conn: &Connection) -> Result<(), StoreError> {
    let has_boot = conn
        .prepare("SELECT 1 FROM pragma_table_info('activity') WHERE name = 'boot'")?
        .exists([])?;
    if !has_boot {
        conn.execute_batch("ALTER TABLE activity ADD COLUMN boot INTEGER NOT NULL DEFAULT 0;")?;
    }
    conn.execute_batch(
        "DROP INDEX IF EXISTS activity_device_seq;
         CREATE UNIQUE INDEX IF NOT EXISTS activity_device_boot_seq ON activity (device, boot, seq);",
    )?;
    Ok(())
}

/// Home Assistant PIN slots (`service::pin_slots`): which code each slot
/// of a lock holds, and the holder of an organization's Home Assistant
/// codes. A store from before them gets both tables, empty, at open.
const PIN_SLOTS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ha_pin_slots (device INTEGER NOT NULL, slot INTEGER NOT NULL,
    credential INTEGER NOT NULL, PRIMARY KEY (device, slot));
CREATE TABLE IF NOT EXISTS ha_pin_holders (org INTEGER PRIMARY KEY, holder INTEGER NOT NULL);
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
        // included); group commit pays for the fsync once per batch. The
        // writer lowers it to NORMAL for transactions nobody waits for.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Checkpoints run on the checkpointer thread, not inside commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(SCHEMA)?;
        migrate_activity_boot(&conn)?;
        conn.execute_batch(PIN_SLOTS_SCHEMA)?;
        conn.execute_batch(events::SCHEMA)?;
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
    /// Status reports older than `statuses_since` are deleted first (health
    /// looks back 30 days; the table would otherwise grow without bound).
    pub fn open(
        dir: &Path,
        metrics: Arc<Metrics>,
        statuses_since: Timestamp,
    ) -> Result<(Store, Loaded), StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(DB_FILE);
        // Before SQLite creates it (0644), so that it and its -wal and -shm
        // files are owner-only from the start.
        create_private_file(&path, false)?;
        let conn = open_conn(&path, false)?;
        conn.execute(
            "DELETE FROM statuses WHERE at_ms < ?1",
            params![to_ms(statuses_since)],
        )?;
        events::delete_before(&conn, statuses_since)?;
        let loaded = load(&conn)?;
        let reader = open_conn(&path, true)?;
        let checkpoint_conn = open_conn(&path, false)?;
        let wal_too_long = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let long = wal_too_long.clone();
        let checkpointer = std::thread::Builder::new()
            .name("store-checkpointer".into())
            .spawn(move || checkpointer_loop(&checkpoint_conn, &stop_rx, &long))?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let (later_tx, later_rx) = mpsc::channel(LATER_QUEUE_CAPACITY);
        let (events_tx, _) = broadcast::channel(EVENT_BROADCAST_CAPACITY);
        let writer_events = events_tx.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    rx,
                    later_rx,
                    metrics,
                    wal_too_long,
                    full_sync: true,
                    events_tx: writer_events,
                }
                .run()
            })?;
        Ok((
            Store {
                tx,
                later_tx,
                reader: Mutex::new(reader),
                path,
                writer: Mutex::new(Some(writer)),
                checkpointer_stop: Mutex::new(Some(stop_tx)),
                checkpointer: Mutex::new(Some(checkpointer)),
                events_tx,
            },
            loaded,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every event committed from now on, in log order (a receiver that
    /// lags behind `EVENT_BROADCAST_CAPACITY` is told so and re-reads the
    /// log).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events_tx.subscribe()
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
    /// entries of checks). Waits only while the queue is full. They are
    /// committed in order, before any later `write` with no writes
    /// (a flush) is answered.
    pub async fn write_later(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        for w in writes {
            self.write_one_later(w).await?;
        }
        Ok(())
    }

    /// `write_later` for one write, without a `Vec` per check.
    pub async fn write_one_later(&self, write: Write) -> Result<(), StoreError> {
        match self.later_tx.try_send(write) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(w)) => {
                self.later_tx.send(w).await.map_err(|_| StoreError::Closed)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::Closed),
        }
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
        Ok(self
            .activity_keyed(q)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// [`Store::activity`] with each entry's log position (time in ms,
    /// row id): the key a page of the log ends at.
    pub fn activity_keyed(
        &self,
        q: &ActivityQuery,
    ) -> Result<Vec<(LogPosition, ActivityEntry)>, StoreError> {
        let mut sql = String::from(
            "SELECT device, at_ms, kind, how, credential, origin, reason, seq, detail, boot, id FROM activity WHERE 1=1",
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
        if let Some((at_ms, id)) = q.before {
            sql.push_str(" AND (at_ms < ? OR (at_ms = ? AND id < ?))");
            args.extend([at_ms.into(), at_ms.into(), id.into()]);
        }
        sql.push_str(" ORDER BY at_ms DESC, id DESC LIMIT ?");
        args.push(i64::from(q.limit.clamp(1, MAX_QUERY_LIMIT)).into());
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            let key = (r.get::<_, i64>(1)?, r.get::<_, i64>(10)?);
            let entry = ActivityEntry {
                device: DeviceId(r.get::<_, u32>(0)?),
                at: from_ms(r.get(1)?),
                kind: r.get(2)?,
                how: enum_from::<How>(r.get(3)?),
                credential: r.get::<_, Option<u32>>(4)?.map(CredentialId),
                origin: enum_from::<Origin>(r.get(5)?),
                reason: r.get(6)?,
                seq: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
                detail: r.get(8)?,
                boot: Some(r.get::<_, i64>(9)? as u64).filter(|b| *b != 0),
            };
            Ok((key, entry))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last time each device reported each of `kinds`, as
    /// `(device, kind, at)`: what `DeviceStates` is rebuilt from at start.
    pub fn state_events(
        &self,
        kinds: &[&str],
    ) -> Result<Vec<(DeviceId, String, Timestamp)>, StoreError> {
        let marks = vec!["?"; kinds.len()].join(", ");
        let sql = format!(
            "SELECT device, kind, MAX(at_ms) FROM activity WHERE kind IN ({marks}) GROUP BY device, kind"
        );
        let conn = self.reader.lock();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(kinds.iter()), |r| {
            Ok((
                DeviceId(r.get::<_, u32>(0)?),
                r.get::<_, String>(1)?,
                from_ms(r.get(2)?),
            ))
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
        self.checkpointer_stop.lock().take();
        let handle = self.checkpointer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Copies the WAL into the database file every [`CHECKPOINT_INTERVAL`]
/// (PASSIVE: never blocks the writer or readers) until `stop` is dropped.
/// Flags `wal_too_long` when the WAL keeps growing anyway.
fn checkpointer_loop(
    conn: &Connection,
    stop: &std::sync::mpsc::Receiver<()>,
    wal_too_long: &AtomicBool,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(CHECKPOINT_INTERVAL)
    {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) => {
                if frames > WAL_TRUNCATE_FRAMES {
                    wal_too_long.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "store checkpoint failed"),
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
    let mut stmt = conn.prepare("SELECT device, slot, credential FROM ha_pin_slots")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        loaded
            .pin_slots
            .push((DeviceId(r.get(0)?), r.get(1)?, CredentialId(r.get(2)?)));
    }
    let mut stmt = conn.prepare("SELECT org, holder FROM ha_pin_holders")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        loaded
            .pin_slot_holders
            .push((OrgId(r.get(0)?), HolderId(r.get(1)?)));
    }
    Ok(loaded)
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    later_rx: mpsc::Receiver<Write>,
    metrics: Arc<Metrics>,
    wal_too_long: Arc<AtomicBool>,
    /// The connection's current `synchronous` setting.
    full_sync: bool,
    events_tx: broadcast::Sender<Arc<Event>>,
}

impl Writer {
    fn run(mut self) {
        // Waiting on two queues needs a runtime; this thread's own, small one.
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "the store writer cannot start");
                return;
            }
        };
        let mut stopping = false;
        while !stopping {
            // Acknowledged jobs first: someone is waiting for them.
            let first = rt.block_on(async {
                tokio::select! {
                    biased;
                    j = self.rx.recv() => j.map(Ok),
                    w = self.later_rx.recv() => w.map(Err),
                }
            });
            let (mut jobs, mut later) = match first {
                // The store was dropped without `close`: commit what is
                // left, as `close` would.
                None => {
                    stopping = true;
                    (Vec::new(), Vec::new())
                }
                Some(Ok(job)) => (vec![job], Vec::new()),
                Some(Err(w)) => {
                    // Nobody waits for it: let more gather, so the writer
                    // commits a few large transactions instead of one per
                    // check (CPU the checks need), unless someone comes to
                    // wait.
                    let job = rt.block_on(async {
                        tokio::select! {
                            biased;
                            j = self.rx.recv() => j,
                            () = tokio::time::sleep(LATER_GATHER) => None,
                        }
                    });
                    (job.into_iter().collect(), vec![w])
                }
            };
            while jobs.len() < MAX_BATCH_JOBS && !jobs.last().is_some_and(|j| j.stop) {
                match self.rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if jobs.last().is_some_and(|j| j.stop) {
                jobs.pop();
                stopping = true;
            }
            // A flush (a job with no writes) or the stop takes every
            // fire-and-forget write queued before it; at most the queue's
            // capacity was.
            let barrier = stopping || jobs.iter().any(|j| j.writes.is_empty());
            let max_later = if barrier {
                LATER_QUEUE_CAPACITY
            } else {
                MAX_BATCH_LATER
            };
            while later.len() < max_later {
                match self.later_rx.try_recv() {
                    Ok(w) => later.push(w),
                    Err(_) => break,
                }
            }
            self.commit_batch(jobs, &later);
            if self.wal_too_long.swap(false, Ordering::Relaxed) {
                self.truncate_wal();
            }
        }
        self.rx.close();
        self.later_rx.close();
    }

    fn commit_batch(&mut self, jobs: Vec<Job>, later: &[Write]) {
        let started = Instant::now();
        // Durable against power loss only when someone waits for it.
        let full = jobs.iter().any(|j| j.reply.is_some());
        let mut events = Vec::new();
        let result = self.set_full_sync(full).and_then(|()| {
            commit(
                &mut self.conn,
                jobs.iter().map(|j| j.writes.as_slice()).chain([later]),
                &mut events,
            )
        });
        self.metrics
            .store_write_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .store_batch_size
            .observe((jobs.len() + later.len()) as f64);
        match result {
            Ok(acks) => {
                // After the commit, in log order: a reader that sees one
                // finds it (and every earlier one) in the log too.
                for e in events {
                    let _ = self.events_tx.send(Arc::new(e));
                }
                for (job, ack) in jobs.into_iter().zip(acks) {
                    if let Some(r) = job.reply {
                        let _ = r.send(Ok(ack));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = jobs.len(), later = later.len(), "store commit failed");
                let e = Arc::new(e);
                for job in jobs {
                    if let Some(r) = job.reply {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    fn set_full_sync(&mut self, full: bool) -> Result<(), StoreError> {
        if self.full_sync != full {
            let mode = if full { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", mode)?;
            self.full_sync = full;
        }
        Ok(())
    }

    /// Copies what the checkpointer could not and empties the WAL.
    fn truncate_wal(&mut self) {
        let started = Instant::now();
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(0) => tracing::debug!(ms = started.elapsed().as_millis() as u64, "WAL truncated"),
            Ok(_) => tracing::debug!("WAL not truncated: a reader was busy"),
            Err(e) => tracing::warn!(error = %e, "WAL truncation failed"),
        }
    }
}

/// Commits every group of writes in one transaction; answers, per group,
/// which writes changed a row, and adds the events logged to `events`.
fn commit<'a>(
    conn: &mut Connection,
    groups: impl Iterator<Item = &'a [Write]>,
    events: &mut Vec<Event>,
) -> Result<Vec<Vec<bool>>, StoreError> {
    let tx = conn.transaction()?;
    let mut acks = Vec::new();
    {
        let mut cmd = tx.prepare_cached("INSERT INTO commands (at, json) VALUES (?1, ?2)")?;
        let mut act = tx.prepare_cached(
            "INSERT OR IGNORE INTO activity (device, at_ms, kind, how, credential, origin, reason, seq, detail, boot)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut tok = tx.prepare_cached("INSERT INTO user_tokens (user, hash) VALUES (?1, ?2)")?;
        let mut sec = tx.prepare_cached(
            "INSERT OR REPLACE INTO device_secrets (device, hash) VALUES (?1, ?2)",
        )?;
        let mut st = tx.prepare_cached(
            "INSERT INTO statuses (device, at_ms, online, battery_pct, firmware) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for writes in groups {
            let mut ack = Vec::with_capacity(writes.len());
            for w in writes {
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
                        e.boot.unwrap_or(0) as i64,
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
                    Write::Event {
                        event,
                        if_previous_changed,
                    } => {
                        if *if_previous_changed && ack.last() != Some(&true) {
                            0
                        } else {
                            events.push(events::insert_event(&tx, event)?);
                            1
                        }
                    }
                    Write::Webhook(w) => events::apply_webhook(&tx, w)?,
                    Write::PinSlot {
                        device,
                        slot,
                        credential: Some(c),
                    } => tx
                        .prepare_cached(
                            "INSERT OR REPLACE INTO ha_pin_slots (device, slot, credential) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![device.0, slot, c.0])?,
                    Write::PinSlot {
                        device,
                        slot,
                        credential: None,
                    } => tx
                        .prepare_cached("DELETE FROM ha_pin_slots WHERE device = ?1 AND slot = ?2")?
                        .execute(params![device.0, slot])?,
                    Write::PinSlotHolder { org, holder } => tx
                        .prepare_cached(
                            "INSERT OR REPLACE INTO ha_pin_holders (org, holder) VALUES (?1, ?2)",
                        )?
                        .execute(params![org.0, holder.0])?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn count_activity(dir: &Path) -> i64 {
        let conn = open_conn(&dir.join(DB_FILE), true).unwrap();
        conn.query_row("SELECT COUNT(*) FROM activity", [], |r| r.get(0))
            .unwrap()
    }

    fn entry(i: u32) -> Write {
        Write::Activity(ActivityEntry::connectivity(
            DeviceId(i % 7),
            Timestamp::from_second(1_700_000_000 + i64::from(i)).unwrap(),
            i.is_multiple_of(2),
        ))
    }

    /// More fire-and-forget writes than one transaction takes: a flush
    /// still answers only after every one queued before it is committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_waits_for_every_write_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) =
            Store::open(dir.path(), Arc::new(Metrics::new()), Timestamp::UNIX_EPOCH).unwrap();
        let n = (MAX_BATCH_LATER * 2 + 17) as u32;
        for i in 0..n {
            store.write_one_later(entry(i)).await.unwrap();
        }
        store.write(Vec::new()).await.unwrap();
        assert_eq!(count_activity(dir.path()), i64::from(n));
        // An acknowledged write mixed in: its ack says it changed a row.
        store
            .write_later(vec![entry(n), entry(n + 1)])
            .await
            .unwrap();
        let ack = store.write(vec![entry(n + 2)]).await.unwrap();
        assert_eq!(ack, vec![true]);
        store.write(Vec::new()).await.unwrap();
        assert_eq!(count_activity(dir.path()), i64::from(n + 3));
        store.close().await;
    }

    /// A store from before Home Assistant's PIN slots gets their tables
    /// at open; a slot written, moved to another code and emptied reads
    /// back as last written, and an organization's holder is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pin_slots_are_added_to_an_old_store_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE commands (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, json TEXT NOT NULL);",
            )
            .unwrap();
        }
        let open = || Store::open(dir.path(), Arc::new(Metrics::new()), Timestamp::UNIX_EPOCH);
        let (store, loaded) = open().unwrap();
        assert!(loaded.pin_slots.is_empty() && loaded.pin_slot_holders.is_empty());
        let slot = |device: u32, slot: u16, c: Option<u32>| Write::PinSlot {
            device: DeviceId(device),
            slot,
            credential: c.map(CredentialId),
        };
        store
            .write(vec![
                slot(3, 1, Some(7)),
                slot(3, 2, Some(8)),
                slot(4, 1, Some(9)),
                Write::PinSlotHolder {
                    org: OrgId(0),
                    holder: HolderId(5),
                },
            ])
            .await
            .unwrap();
        store
            .write(vec![slot(3, 1, Some(10)), slot(4, 1, None)])
            .await
            .unwrap();
        store.close().await;
        let (store, loaded) = open().unwrap();
        let mut slots = loaded.pin_slots;
        slots.sort();
        assert_eq!(
            slots,
            vec![
                (DeviceId(3), 1, CredentialId(10)),
                (DeviceId(3), 2, CredentialId(8))
            ]
        );
        assert_eq!(loaded.pin_slot_holders, vec![(OrgId(0), HolderId(5))]);
        store.close().await;
    }

    /// A store made before the boot epoch (no `boot` column, unique on
    /// `(device, seq)`) is migrated at open: its events are boot 0, a
    /// redelivery of one is still ignored, and the same seq under a new
    /// boot is logged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_store_is_migrated_to_the_boot_epoch() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE activity (id INTEGER PRIMARY KEY, device INTEGER NOT NULL, at_ms INTEGER NOT NULL,
                    kind TEXT NOT NULL, how TEXT, credential INTEGER, origin TEXT, reason TEXT, seq INTEGER, detail TEXT);
                 CREATE UNIQUE INDEX activity_device_seq ON activity (device, seq);
                 INSERT INTO activity (device, at_ms, kind, seq) VALUES (3, 1000, 'door_opened', 1);",
            )
            .unwrap();
        }
        let (store, _) =
            Store::open(dir.path(), Arc::new(Metrics::new()), Timestamp::UNIX_EPOCH).unwrap();
        let event = |boot: u64| {
            let ev = crate::protocol::Event {
                seq: 1,
                boot,
                at: Timestamp::from_second(2).unwrap(),
                kind: crate::protocol::EventKind::DoorOpened,
            };
            Write::Activity(ActivityEntry::from_event(DeviceId(3), &ev))
        };
        assert_eq!(store.write(vec![event(0)]).await.unwrap(), vec![false]);
        assert_eq!(store.write(vec![event(9)]).await.unwrap(), vec![true]);
        assert_eq!(store.write(vec![event(9)]).await.unwrap(), vec![false]);
        assert_eq!(count_activity(dir.path()), 2);
        store.close().await;
    }

    /// `close` commits what was queued, and the writes survive a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_commits_queued_fire_and_forget_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) =
            Store::open(dir.path(), Arc::new(Metrics::new()), Timestamp::UNIX_EPOCH).unwrap();
        for i in 0..5_000 {
            store.write_one_later(entry(i)).await.unwrap();
        }
        store.close().await;
        assert!(matches!(
            store.write_one_later(entry(0)).await,
            Err(StoreError::Closed)
        ));
        assert_eq!(count_activity(dir.path()), 5_000);
        let (again, _) =
            Store::open(dir.path(), Arc::new(Metrics::new()), Timestamp::UNIX_EPOCH).unwrap();
        again.close().await;
        assert_eq!(count_activity(dir.path()), 5_000);
    }
}
