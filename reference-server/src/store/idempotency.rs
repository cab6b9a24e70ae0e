//! Idempotency keys of the admin API's changes (`Idempotency-Key`), kept
//! durably in the store's SQLite file, in their own table.
//!
//! A key is scoped by the caller (the signed-in user): another user's
//! request with the same key is a different key, so no one replays
//! another's answer. A row is "in flight" (no status yet) from the moment
//! a request claims the key until its answer is stored; an in-flight row
//! left by a stopped server is removed at open (no request of that run is
//! running any more, and its client may retry).
//!
//! Claims run on their own connection under a mutex: a claim's check and
//! insert are one step for every HTTP worker. SQLite's own lock orders
//! them with the store's writer thread (`busy_timeout`). Each claim and
//! each stored answer is committed with `synchronous=FULL`, so an answer
//! that was replayed once survives a power loss too.
//!
//! Rows are kept [`RETENTION`] from the claim, by the server's clock (the
//! `now` the caller passes); older ones are pruned at open and at every
//! claim, and an expired key is free again.

use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::StoreError;
use crate::domain::UserId;

/// How long a key is kept after its first request (at least 24 h, as
/// Stripe and the IETF draft ask).
pub const RETENTION: SignedDuration = SignedDuration::from_hours(24);
/// Longest key accepted (Stripe's limit); a longer one is a 400.
pub const MAX_KEY_LEN: usize = 255;
/// Largest answer body stored for a replay. The admin API's change answers
/// are far smaller; a larger one is answered but not kept (the key is
/// freed, as after a 5xx).
pub const MAX_STORED_BODY_BYTES: usize = 64 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS idempotency_keys (user INTEGER NOT NULL, key TEXT NOT NULL,
    fingerprint BLOB NOT NULL, created_ms INTEGER NOT NULL,
    status INTEGER, content_type TEXT, body BLOB, PRIMARY KEY (user, key));
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_ms);
";

/// A stored answer, replayed as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What a claim of a key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free: it is now in flight for this request, which must
    /// end with [`Idempotency::finish`] or [`Idempotency::release`].
    Claimed,
    /// The same request was answered before: replay this.
    Replay(StoredAnswer),
    /// A request with this key has not been answered yet.
    InFlight,
    /// The key was used with another request (method, path or body).
    Mismatch,
}

/// The idempotency-key table.
pub struct Idempotency {
    conn: Mutex<Connection>,
}

fn to_ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// Rows claimed at or before this are expired.
fn expired_before(now: Timestamp) -> i64 {
    to_ms(now.saturating_sub(RETENTION).unwrap_or(Timestamp::MIN))
}

impl Idempotency {
    /// Opens the table in the store's database file `db` (made by
    /// `Store::open`), drops what a previous run left in flight and prunes
    /// what expired by `now`.
    pub fn open(db: &Path, now: Timestamp) -> Result<Idempotency, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(db, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(SCHEMA)?;
        let stale = conn.execute("DELETE FROM idempotency_keys WHERE status IS NULL", [])?;
        if stale > 0 {
            tracing::warn!(
                keys = stale,
                "idempotency keys left in flight by the previous run were freed"
            );
        }
        conn.execute(
            "DELETE FROM idempotency_keys WHERE created_ms <= ?1",
            params![expired_before(now)],
        )?;
        Ok(Idempotency {
            conn: Mutex::new(conn),
        })
    }

    /// Claims `key` for `user`'s request with this `fingerprint` (of its
    /// method, path and body), or says why not.
    pub fn claim(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &[u8; 32],
        now: Timestamp,
    ) -> Result<Claim, StoreError> {
        debug_assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM idempotency_keys WHERE created_ms <= ?1",
            params![expired_before(now)],
        )?;
        let row = tx
            .query_row(
                "SELECT fingerprint, status, content_type, body FROM idempotency_keys
                 WHERE user = ?1 AND key = ?2",
                params![user.0, key],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Option<u16>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                },
            )
            .optional()?;
        let claim = match row {
            None => {
                tx.execute(
                    "INSERT INTO idempotency_keys (user, key, fingerprint, created_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![user.0, key, &fingerprint[..], to_ms(now)],
                )?;
                Claim::Claimed
            }
            Some((_, None, _, _)) => Claim::InFlight,
            Some((stored, _, _, _)) if stored[..] != fingerprint[..] => Claim::Mismatch,
            Some((_, Some(status), content_type, body)) => Claim::Replay(StoredAnswer {
                status,
                content_type,
                body: body.unwrap_or_default(),
            }),
        };
        tx.commit()?;
        Ok(claim)
    }

    /// Stores the answer of a claimed request (the body at most
    /// [`MAX_STORED_BODY_BYTES`]: the caller frees the key instead).
    pub fn finish(&self, user: UserId, key: &str, answer: &StoredAnswer) -> Result<(), StoreError> {
        debug_assert!(answer.body.len() <= MAX_STORED_BODY_BYTES);
        self.conn.lock().execute(
            "UPDATE idempotency_keys SET status = ?3, content_type = ?4, body = ?5
             WHERE user = ?1 AND key = ?2 AND status IS NULL",
            params![user.0, key, answer.status, answer.content_type, answer.body],
        )?;
        Ok(())
    }

    /// Frees a claimed key whose request has no answer to keep (a 5xx, an
    /// answer too large, a request dropped): the client may retry with it.
    pub fn release(&self, user: UserId, key: &str) -> Result<(), StoreError> {
        self.conn.lock().execute(
            "DELETE FROM idempotency_keys WHERE user = ?1 AND key = ?2 AND status IS NULL",
            params![user.0, key],
        )?;
        Ok(())
    }

    /// How many keys are kept (answered or in flight).
    pub fn len(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn
                .lock()
                .query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn open(dir: &Path, now: Timestamp) -> Idempotency {
        let db = dir.join("db");
        Connection::open(&db).unwrap();
        Idempotency::open(&db, now).unwrap()
    }

    #[test]
    fn a_key_is_claimed_once_then_replayed_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = at("2026-03-23T10:00:00Z");
        let keys = open(dir.path(), t0);
        let (u, fp) = (UserId(1), [7u8; 32]);
        assert_eq!(keys.claim(u, "k", &fp, t0).unwrap(), Claim::Claimed);
        assert_eq!(keys.claim(u, "k", &fp, t0).unwrap(), Claim::InFlight);
        // Another user's same key is another key.
        assert_eq!(keys.claim(UserId(2), "k", &fp, t0).unwrap(), Claim::Claimed);
        let answer = StoredAnswer {
            status: 201,
            content_type: Some("application/json".into()),
            body: b"{\"holder\":3}".to_vec(),
        };
        keys.finish(u, "k", &answer).unwrap();
        assert_eq!(
            keys.claim(u, "k", &fp, t0).unwrap(),
            Claim::Replay(answer.clone())
        );
        assert_eq!(keys.claim(u, "k", &[8u8; 32], t0).unwrap(), Claim::Mismatch);
        // Kept a whole day, free after.
        let day_less = t0 + SignedDuration::from_hours(24) - SignedDuration::from_secs(1);
        assert_eq!(
            keys.claim(u, "k", &fp, day_less).unwrap(),
            Claim::Replay(answer)
        );
        let day = t0 + SignedDuration::from_hours(24);
        assert_eq!(keys.claim(u, "k", &[8u8; 32], day).unwrap(), Claim::Claimed);
        // UserId(2)'s in-flight claim expired and was pruned with it.
        assert_eq!(keys.len().unwrap(), 1);
    }

    #[test]
    fn a_release_frees_the_key_and_a_reopen_frees_what_was_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = at("2026-03-23T10:00:00Z");
        let keys = open(dir.path(), t0);
        let (u, fp) = (UserId(1), [7u8; 32]);
        assert_eq!(keys.claim(u, "a", &fp, t0).unwrap(), Claim::Claimed);
        keys.release(u, "a").unwrap();
        assert_eq!(keys.claim(u, "a", &fp, t0).unwrap(), Claim::Claimed);
        assert_eq!(keys.claim(u, "b", &fp, t0).unwrap(), Claim::Claimed);
        let answer = StoredAnswer {
            status: 200,
            content_type: None,
            body: Vec::new(),
        };
        keys.finish(u, "b", &answer).unwrap();
        drop(keys);
        let keys = open(dir.path(), t0);
        assert_eq!(keys.claim(u, "a", &fp, t0).unwrap(), Claim::Claimed);
        assert_eq!(keys.claim(u, "b", &fp, t0).unwrap(), Claim::Replay(answer));
    }
}
