//! Credential sync between the engine and a device, without I/O.
//!
//! [`SyncBatch`] is what a device must change to match the engine (codes to
//! set and to remove, under one version); [`SyncPush::from_batch`] cuts it
//! into the wire's `sync` messages. [`SyncSession`] is the protocol's state
//! in the style of a sans-I/O state machine: the MQTT gateway, the HTTP
//! device routes and the simulator's in-process transport each feed it
//! what happened (a batch to offer, an ack, the time) and do what it
//! answers (send, apply, resend, give up), so every transport follows the
//! same version and retry rules.
//!
//! The rules: a batch goes when its version is not already in flight; a
//! device's ack counts only if it names the engine's current version and
//! the version in flight, if any: an old "set" ack must not confirm a
//! later "remove". A batch unacked is resent with exponential
//! backoff and, after `max_attempts` sends, every code still waiting is
//! marked `timed_out`. QR and BLE codes have nothing to store on the lock
//! and are confirmed as sent.

use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::domain::{CredentialId, DeviceId, Secret, SyncFailure};
use crate::protocol::{
    encode, SyncCode, SyncPush, SyncValidity, WireSecret, MAX_PAYLOAD_BYTES, MAX_SYNC_CODES,
};
use crate::protocol::{SyncAckMsg, SyncResult};

/// What a device must change to match the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncBatch {
    /// Bumped on every change for this device.
    pub version: u64,
    pub set: Vec<(CredentialId, Secret)>,
    pub remove: Vec<CredentialId>,
    /// The validity of the codes in `set` that have one (by time; see
    /// `SyncValidity`), for devices that decide offline.
    pub validity: std::collections::BTreeMap<CredentialId, SyncValidity>,
}

impl SyncBatch {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// The batch's QR and BLE credentials: nothing to store on the lock,
    /// listed so a device that fetches its batch may confirm them too.
    pub fn tokens(&self) -> Vec<CredentialId> {
        self.set
            .iter()
            .filter(|(_, secret)| crate::protocol::WireSecret::from_secret(secret).is_none())
            .map(|(c, _)| *c)
            .collect()
    }
}

// The wire form of a batch is defined here rather than in `protocol`, so
// that the wire types do not depend on the engine's.
impl SyncPush {
    /// The messages of one batch as one: where there is no payload limit
    /// (a reader's HTTP fetch, the in-process link) the pieces travel
    /// together and the device acks the whole batch at once, as over MQTT
    /// once every piece has arrived.
    pub fn joined(version: u64, pieces: Vec<SyncPush>) -> SyncPush {
        let mut one = SyncPush {
            version,
            set: Vec::new(),
            remove: Vec::new(),
        };
        for piece in pieces {
            one.set.extend(piece.set);
            one.remove.extend(piece.remove);
        }
        one
    }

    /// All of `batch` in one message ([`SyncPush::joined`] of
    /// [`SyncPush::from_batch`]).
    pub fn whole(batch: &SyncBatch) -> SyncPush {
        SyncPush::joined(batch.version, SyncPush::from_batch(batch))
    }

    /// The messages that carry `batch`, each within `MAX_SYNC_CODES` codes
    /// and within `MAX_PAYLOAD_BYTES` (codes with a validity are bigger, so
    /// a message may hold fewer of them); all share the batch's
    /// version. Codes with nothing to store (QR, BLE) are left out; a batch
    /// with nothing to send gives no message.
    pub fn from_batch(batch: &SyncBatch) -> Vec<SyncPush> {
        let codes: Vec<SyncCode> = batch
            .set
            .iter()
            .filter_map(|(credential, secret)| {
                Some(SyncCode {
                    credential: *credential,
                    secret: WireSecret::from_secret(secret)?,
                    valid: batch.validity.get(credential).cloned(),
                })
            })
            .collect();
        // Room for the envelope (`version`, keys, brackets) around the codes.
        const CODES_BUDGET_BYTES: usize = MAX_PAYLOAD_BYTES - 128;
        let mut pushes: Vec<SyncPush> = Vec::new();
        let mut set: Vec<SyncCode> = Vec::new();
        let mut set_bytes = 0;
        for code in codes {
            // +1: the comma between codes.
            let bytes = encode(&code).len() + 1;
            if set.len() == MAX_SYNC_CODES
                || (!set.is_empty() && set_bytes + bytes > CODES_BUDGET_BYTES)
            {
                pushes.push(SyncPush {
                    version: batch.version,
                    set: std::mem::take(&mut set),
                    remove: Vec::new(),
                });
                set_bytes = 0;
            }
            set_bytes += bytes;
            set.push(code);
        }
        if !set.is_empty() {
            pushes.push(SyncPush {
                version: batch.version,
                set,
                remove: Vec::new(),
            });
        }
        pushes.extend(batch.remove.chunks(MAX_SYNC_CODES).map(|chunk| SyncPush {
            version: batch.version,
            set: Vec::new(),
            remove: chunk.to_vec(),
        }));
        pushes
    }
}

/// How unacknowledged batches are resent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPacing {
    /// Wait before the first resend; doubled on each further one.
    pub first_retry: Duration,
    /// Longest wait between two sends.
    pub max_retry: Duration,
    /// Sends (the first included) before the batch is marked timed out.
    pub max_attempts: u32,
}

impl Default for SyncPacing {
    fn default() -> Self {
        SyncPacing {
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(60),
            max_attempts: 5,
        }
    }
}

/// A batch to send: record `version` as sent in the engine (`SyncSent`),
/// apply `confirmed` (`SyncAck`: the codes the lock need not store), then
/// deliver `pushes` (none when only such codes changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSend {
    pub version: u64,
    pub pushes: Vec<SyncPush>,
    pub confirmed: Vec<SyncResult>,
}

/// A batch's whole round trip: from its first send to the ack that
/// completed it, or to its time-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncRoundTrip {
    pub elapsed: Duration,
    /// A code was reported failed, or the batch timed out.
    pub failed: bool,
}

/// What to do with an ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncAcked {
    /// Another version than the one to confirm: drop it (counted).
    Stale,
    /// Apply the ack's results (`SyncAck`). `completed`: every code of
    /// the batch is now answered (offer the device's batch again: the ack
    /// may have made more work, an old PIN to remove now that its
    /// replacement is set).
    Apply { completed: Option<SyncRoundTrip> },
}

/// What is due at a tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncDue {
    /// Send the batch in flight again.
    Resend {
        device: DeviceId,
        pushes: Vec<SyncPush>,
    },
    /// Give up: apply `results` (every code still waiting, `timed_out`).
    TimedOut {
        device: DeviceId,
        results: Vec<SyncResult>,
        round_trip: SyncRoundTrip,
    },
}

#[derive(Clone, Debug)]
struct InFlight {
    version: u64,
    pushes: Vec<SyncPush>,
    /// Codes not answered yet (a batch may span several messages).
    waiting: FxHashSet<CredentialId>,
    attempts: u32,
    next_send: Instant,
    first_sent: Instant,
    failed: bool,
}

/// The sync protocol's state for a set of devices: the batch in flight per
/// device. No I/O and no clock: time comes in as `now`.
#[derive(Debug, Default)]
pub struct SyncSession {
    pacing: SyncPacing,
    in_flight: FxHashMap<DeviceId, InFlight>,
    stale_acks: u64,
}

impl SyncSession {
    pub fn new(pacing: SyncPacing) -> Self {
        SyncSession {
            pacing,
            ..SyncSession::default()
        }
    }

    /// The device (re)connected or asked for its batch: whatever was in
    /// flight may never have reached it, so the next offer sends anew.
    pub fn restart(&mut self, device: DeviceId) {
        self.in_flight.remove(&device);
    }

    /// The engine's pending `batch` for `device`: what to send, unless that
    /// very version is already in flight or there is nothing to change.
    pub fn offer(&mut self, device: DeviceId, batch: &SyncBatch, now: Instant) -> Option<SyncSend> {
        if batch.is_empty() {
            self.in_flight.remove(&device);
            return None;
        }
        if self
            .in_flight
            .get(&device)
            .is_some_and(|f| f.version == batch.version)
        {
            return None;
        }
        let confirmed: Vec<SyncResult> = batch
            .set
            .iter()
            .filter(|(_, secret)| WireSecret::from_secret(secret).is_none())
            .map(|(credential, _)| SyncResult {
                credential: *credential,
                failure: None,
            })
            .collect();
        let pushes = SyncPush::from_batch(batch);
        if pushes.is_empty() {
            // Nothing for the lock to store: nothing to wait for.
            self.in_flight.remove(&device);
        } else {
            self.in_flight.insert(
                device,
                InFlight {
                    version: batch.version,
                    pushes: pushes.clone(),
                    waiting: pushes.iter().flat_map(|p| p.credentials()).collect(),
                    attempts: 1,
                    next_send: now + self.pacing.first_retry,
                    first_sent: now,
                    failed: false,
                },
            );
        }
        Some(SyncSend {
            version: batch.version,
            pushes,
            confirmed,
        })
    }

    /// The send of the batch just offered did not happen (the engine
    /// refused to record it, the device's mailbox was full): forget it, so
    /// the next offer tries again.
    pub fn unsent(&mut self, device: DeviceId, version: u64) {
        if self
            .in_flight
            .get(&device)
            .is_some_and(|f| f.version == version)
        {
            self.in_flight.remove(&device);
        }
    }

    /// `device`'s ack. It counts only if it names the engine's current
    /// version for the device (`engine_version`) and, with a batch in
    /// flight, that batch's: a change made since the batch went (a code
    /// revoked, now to be removed) must not be confirmed by an ack of the
    /// older batch, which still set it.
    pub fn ack(
        &mut self,
        device: DeviceId,
        ack: &SyncAckMsg,
        engine_version: Option<u64>,
        now: Instant,
    ) -> SyncAcked {
        let in_flight = self.in_flight.get_mut(&device);
        let current = engine_version == Some(ack.version)
            && in_flight.as_ref().is_none_or(|f| f.version == ack.version);
        if !current {
            self.stale_acks += 1;
            return SyncAcked::Stale;
        }
        let Some(f) = in_flight else {
            return SyncAcked::Apply { completed: None };
        };
        for r in &ack.results {
            f.waiting.remove(&r.credential);
        }
        f.failed |= ack.results.iter().any(|r| r.failure.is_some());
        if !f.waiting.is_empty() {
            return SyncAcked::Apply { completed: None };
        }
        let f = self.in_flight.remove(&device).expect("looked up above");
        SyncAcked::Apply {
            completed: Some(SyncRoundTrip {
                elapsed: now.saturating_duration_since(f.first_sent),
                failed: f.failed,
            }),
        }
    }

    /// Resends and time-outs due at `now`, for the devices `reachable`
    /// says can hear (an offline device is not retried: it gets the batch
    /// of the moment when it comes back).
    pub fn due(&mut self, now: Instant, reachable: impl Fn(DeviceId) -> bool) -> Vec<SyncDue> {
        let due: Vec<DeviceId> = self
            .in_flight
            .iter()
            .filter(|(d, f)| f.next_send <= now && reachable(**d))
            .map(|(d, _)| *d)
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for device in due {
            let Some(f) = self.in_flight.get_mut(&device) else {
                continue;
            };
            if f.attempts >= self.pacing.max_attempts {
                let f = self.in_flight.remove(&device).expect("looked up above");
                out.push(SyncDue::TimedOut {
                    device,
                    results: f
                        .waiting
                        .into_iter()
                        .map(|credential| SyncResult {
                            credential,
                            failure: Some(SyncFailure::TimedOut),
                        })
                        .collect(),
                    round_trip: SyncRoundTrip {
                        elapsed: now.saturating_duration_since(f.first_sent),
                        failed: true,
                    },
                });
                continue;
            }
            f.attempts += 1;
            let wait = self
                .pacing
                .first_retry
                .saturating_mul(1 << (f.attempts - 1).min(16))
                .min(self.pacing.max_retry);
            f.next_send = now + wait;
            out.push(SyncDue::Resend {
                device,
                pushes: f.pushes.clone(),
            });
        }
        out
    }

    /// The version in flight for `device`, if any.
    pub fn in_flight(&self, device: DeviceId) -> Option<u64> {
        self.in_flight.get(&device).map(|f| f.version)
    }

    /// Acks dropped as stale so far.
    pub fn stale_acks(&self) -> u64 {
        self.stale_acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Pin;
    use crate::protocol::SyncAckMsg;

    fn pin(n: u32) -> Secret {
        Secret::Pin(Pin::parse(&format!("{:04}", 1000 + n)).unwrap())
    }

    fn batch(version: u64, codes: std::ops::Range<u32>) -> SyncBatch {
        SyncBatch {
            version,
            set: codes.map(|i| (CredentialId(i), pin(i))).collect(),
            ..SyncBatch::default()
        }
    }

    fn ack(version: u64, codes: impl IntoIterator<Item = u32>) -> SyncAckMsg {
        SyncAckMsg {
            version,
            results: codes
                .into_iter()
                .map(|i| SyncResult {
                    credential: CredentialId(i),
                    failure: None,
                })
                .collect(),
        }
    }

    const D: DeviceId = DeviceId(7);

    #[test]
    fn a_version_goes_once_and_its_ack_completes_it() {
        let t0 = Instant::now();
        let mut s = SyncSession::new(SyncPacing::default());
        let send = s.offer(D, &batch(3, 0..2), t0).expect("a new version goes");
        assert_eq!((send.version, send.pushes.len()), (3, 1));
        assert!(send.confirmed.is_empty());
        assert_eq!(s.offer(D, &batch(3, 0..2), t0), None, "already in flight");
        let later = t0 + Duration::from_millis(40);
        assert_eq!(
            s.ack(D, &ack(3, 0..2), Some(3), later),
            SyncAcked::Apply {
                completed: Some(SyncRoundTrip {
                    elapsed: Duration::from_millis(40),
                    failed: false
                })
            }
        );
        assert_eq!(s.in_flight(D), None);
    }

    #[test]
    fn an_ack_of_another_version_is_stale_and_counted() {
        let t0 = Instant::now();
        let mut s = SyncSession::new(SyncPacing::default());
        s.offer(D, &batch(3, 0..2), t0).unwrap();
        // A newer change: version 4 replaces 3 in flight.
        s.offer(D, &batch(4, 0..3), t0).unwrap();
        assert_eq!(s.ack(D, &ack(3, 0..2), Some(4), t0), SyncAcked::Stale);
        assert_eq!(s.stale_acks(), 1);
        assert_eq!(s.in_flight(D), Some(4));
        // Nothing in flight: only the engine's current version counts.
        s.restart(D);
        assert_eq!(s.ack(D, &ack(3, 0..2), Some(4), t0), SyncAcked::Stale);
        assert_eq!(
            s.ack(D, &ack(4, 0..3), Some(4), t0),
            SyncAcked::Apply { completed: None }
        );
        assert_eq!(s.stale_acks(), 2);
    }

    /// The batch in flight is version 5; a code of it was revoked since
    /// (the engine is at 6, to remove it) before the push of 6 went out.
    /// The device's ack of 5 says "set": it must not mark the removal done.
    #[test]
    fn an_ack_of_the_batch_in_flight_is_stale_once_the_engine_moved_on() {
        let t0 = Instant::now();
        let mut s = SyncSession::new(SyncPacing::default());
        s.offer(D, &batch(5, 0..2), t0).unwrap();
        assert_eq!(s.ack(D, &ack(5, 0..2), Some(6), t0), SyncAcked::Stale);
        assert_eq!(s.in_flight(D), Some(5), "still waiting for its codes");
    }

    #[test]
    fn a_batch_over_several_messages_waits_for_every_code() {
        let t0 = Instant::now();
        let mut s = SyncSession::new(SyncPacing::default());
        let n = crate::protocol::MAX_SYNC_CODES as u32 + 5;
        let send = s.offer(D, &batch(1, 0..n), t0).unwrap();
        assert!(send.pushes.len() > 1);
        assert_eq!(
            s.ack(D, &ack(1, 0..10), Some(1), t0),
            SyncAcked::Apply { completed: None }
        );
        assert_eq!(s.in_flight(D), Some(1), "codes still waiting");
        let mut rest = ack(1, 10..n);
        rest.results[0].failure = Some(SyncFailure::LockFull);
        let SyncAcked::Apply {
            completed: Some(rt),
        } = s.ack(D, &rest, Some(1), t0)
        else {
            panic!("the last codes complete the batch")
        };
        assert!(rt.failed);
    }

    #[test]
    fn an_unacked_batch_is_resent_with_backoff_then_timed_out() {
        let t0 = Instant::now();
        let pacing = SyncPacing {
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(3),
            max_attempts: 3,
        };
        let mut s = SyncSession::new(pacing);
        s.offer(D, &batch(1, 0..2), t0).unwrap();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(s.due(at(0), |_| true).is_empty());
        assert!(
            s.due(at(1), |_| false).is_empty(),
            "an unreachable device is not retried"
        );
        assert!(matches!(
            s.due(at(1), |_| true)[..],
            [SyncDue::Resend { device: D, .. }]
        ));
        // The second wait is doubled: 2 s.
        assert!(s.due(at(2), |_| true).is_empty());
        assert!(matches!(
            s.due(at(3), |_| true)[..],
            [SyncDue::Resend { .. }]
        ));
        let due = s.due(at(10), |_| true);
        let [SyncDue::TimedOut {
            results,
            round_trip,
            ..
        }] = &due[..]
        else {
            panic!("{due:?}")
        };
        assert_eq!(results.len(), 2);
        assert!(results
            .iter()
            .all(|r| r.failure == Some(SyncFailure::TimedOut)));
        assert_eq!(round_trip.elapsed, Duration::from_secs(10));
        assert_eq!(s.in_flight(D), None);
    }

    #[test]
    fn token_codes_are_confirmed_and_nothing_waits_for_them() {
        let t0 = Instant::now();
        let mut s = SyncSession::new(SyncPacing::default());
        let b = SyncBatch {
            version: 2,
            set: vec![(CredentialId(9), Secret::Token { version: 0 })],
            ..SyncBatch::default()
        };
        let send = s.offer(D, &b, t0).unwrap();
        assert!(send.pushes.is_empty());
        assert_eq!(send.confirmed.len(), 1);
        assert_eq!(s.in_flight(D), None);
        assert_eq!(s.offer(D, &SyncBatch::default(), t0), None);
    }
}
