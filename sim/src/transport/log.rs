//! The engine side's event log accounting: each (device, seq) is logged at
//! most once; repeats (QoS 1 redeliveries) are counted as duplicates, holes
//! as gaps. Memory is bounded by the number of devices, not of events: the
//! log keeps counts per device and kind, not the events themselves.
//!
//! Events of one device may be recorded out of order (the MQTT gateway logs
//! them on concurrent tasks): a late one fills its hole instead of counting
//! as a duplicate. Up to [`MAX_AHEAD`] sequence numbers above the first hole
//! are remembered per device; past that the oldest hole is given up.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use parking_lot::Mutex;
use reference_server::domain::DeviceId;
use reference_server::protocol::{Event, EventKind};
use serde::Serialize;

/// Sequence numbers remembered above a device's first hole.
pub const MAX_AHEAD: usize = 256;

/// Events counted per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts(pub [u64; EventKind::COUNT]);

impl KindCounts {
    pub fn add(&mut self, k: &EventKind) {
        self.0[k.index()] += 1;
    }
    pub fn merge(&mut self, other: &KindCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// The count of one kind by name (`EventKind::NAMES`), 0 for unknown names.
    pub fn get(&self, name: &str) -> u64 {
        EventKind::NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.0[i])
    }
}

/// One device's accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceLog {
    /// Highest sequence number logged.
    pub last_seq: u64,
    pub accepted: u64,
    /// Events seen again (seq at or below `last_seq`): not logged twice.
    pub duplicates: u64,
    /// Sequence numbers skipped (lost events).
    pub gaps: u64,
    pub per_kind: KindCounts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logged {
    Accepted,
    Duplicate,
}

/// One device's accounting and what it has seen.
#[derive(Default)]
struct DeviceState {
    log: DeviceLog,
    /// Every seq up to here was logged.
    seen_to: u64,
    /// Seqs above `seen_to + 1` logged already (sorted, at most `MAX_AHEAD`).
    ahead: std::collections::BTreeSet<u64>,
}

/// Devices per chunk of the log's table.
const CHUNK: usize = 4096;
/// Chunks in the table (devices `0..CHUNK * CHUNKS` have a slot; the rest,
/// not made by the fleet builder, go to an overflow map).
const CHUNKS: usize = 1 << 14;

type Chunk = Box<[Mutex<DeviceState>]>;

/// Per-device accounting behind one lock per device, so that checks on
/// different cores do not contend on one counter. The table is chunks made
/// on first use: finding a device's slot reads one pointer (no shared lock
/// whose counter both cores would write on every event).
pub struct EventLog {
    chunks: Box<[OnceLock<Chunk>]>,
    overflow: Mutex<BTreeMap<usize, DeviceState>>,
}

impl Default for EventLog {
    fn default() -> EventLog {
        EventLog {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            overflow: Mutex::new(BTreeMap::new()),
        }
    }
}

impl EventLog {
    pub fn new() -> EventLog {
        EventLog::default()
    }

    fn chunk(&self, c: usize) -> &Chunk {
        self.chunks[c].get_or_init(|| (0..CHUNK).map(|_| Mutex::default()).collect())
    }

    /// Makes room for devices `0..n` up front.
    pub fn reserve(&self, n: usize) {
        for c in 0..n.div_ceil(CHUNK).min(CHUNKS) {
            self.chunk(c);
        }
    }

    /// Runs `f` on a device's state (made on first use).
    fn with<R>(&self, i: usize, f: impl FnOnce(&mut DeviceState) -> R) -> R {
        let c = i / CHUNK;
        if c < CHUNKS {
            f(&mut self.chunk(c)[i % CHUNK].lock())
        } else {
            f(self.overflow.lock().entry(i).or_default())
        }
    }

    pub fn record(&self, device: DeviceId, event: &Event) -> Logged {
        self.with(device.index(), |st| Self::record_in(st, event))
    }

    fn record_in(st: &mut DeviceState, event: &Event) -> Logged {
        let seq = event.seq;
        let d = &mut st.log;
        if seq <= st.seen_to || st.ahead.contains(&seq) {
            d.duplicates += 1;
            return Logged::Duplicate;
        }
        if seq > d.last_seq {
            d.gaps += seq - d.last_seq - 1;
            d.last_seq = seq;
        } else {
            // A late event fills one hole.
            d.gaps = d.gaps.saturating_sub(1);
        }
        d.accepted += 1;
        d.per_kind.add(&event.kind);
        if seq == st.seen_to + 1 {
            st.seen_to = seq;
            while st.ahead.first() == Some(&(st.seen_to + 1)) {
                st.ahead.pop_first();
                st.seen_to += 1;
            }
        } else {
            st.ahead.insert(seq);
            if st.ahead.len() > MAX_AHEAD {
                // Give up the oldest hole: what lies below is settled.
                if let Some(first) = st.ahead.pop_first() {
                    st.seen_to = first;
                }
            }
        }
        Logged::Accepted
    }

    pub fn device(&self, device: DeviceId) -> DeviceLog {
        let i = device.index();
        let c = i / CHUNK;
        if c < CHUNKS {
            self.chunks[c]
                .get()
                .map(|ch| ch[i % CHUNK].lock().log)
                .unwrap_or_default()
        } else {
            self.overflow
                .lock()
                .get(&i)
                .map(|st| st.log)
                .unwrap_or_default()
        }
    }

    /// Sums over every device.
    pub fn totals(&self) -> DeviceLog {
        let mut t = DeviceLog::default();
        let mut add = |d: DeviceLog| {
            t.accepted += d.accepted;
            t.duplicates += d.duplicates;
            t.gaps += d.gaps;
            t.last_seq = t.last_seq.max(d.last_seq);
            t.per_kind.merge(&d.per_kind);
        };
        for ch in self.chunks.iter().filter_map(|c| c.get()) {
            for d in ch.iter() {
                add(d.lock().log);
            }
        }
        for st in self.overflow.lock().values() {
            add(st.log);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            at: Timestamp::UNIX_EPOCH,
            kind: EventKind::DoorOpened,
        }
    }

    #[test]
    fn logs_each_sequence_number_once_and_counts_gaps() {
        let log = EventLog::new();
        let d = DeviceId(3);
        assert_eq!(log.record(d, &ev(1)), Logged::Accepted);
        assert_eq!(log.record(d, &ev(1)), Logged::Duplicate);
        assert_eq!(log.record(d, &ev(4)), Logged::Accepted);
        let got = log.device(d);
        assert_eq!((got.accepted, got.duplicates, got.gaps), (2, 1, 2));
        assert_eq!(got.per_kind.get("door_opened"), 2);
        assert_eq!(log.totals().accepted, 2);
    }

    #[test]
    fn late_events_fill_their_holes_and_are_not_duplicates() {
        let log = EventLog::new();
        let d = DeviceId(1);
        for seq in [1, 3, 4, 2, 2, 4, 5] {
            log.record(d, &ev(seq));
        }
        let got = log.device(d);
        assert_eq!(
            (got.accepted, got.duplicates, got.gaps, got.last_seq),
            (5, 2, 0, 5)
        );
        // A hole that stays open while many later events arrive is given up.
        let d = DeviceId(2);
        log.record(d, &ev(1));
        for seq in 3..(4 + MAX_AHEAD as u64) {
            log.record(d, &ev(seq));
        }
        assert_eq!(log.record(d, &ev(2)), Logged::Duplicate);
        assert_eq!(log.device(d).gaps, 1);
    }
}
