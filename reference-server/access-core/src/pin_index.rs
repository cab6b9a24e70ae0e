//! The keypad lookup: `(door, PIN)` packed in a `u64` -> credential.
//!
//! An open-addressing table with linear probing and key and value in one
//! 16-byte slot, so a lookup in a table of millions of codes costs one cache
//! miss. A SwissTable (hashbrown) keeps its control bytes apart from its
//! slots and costs two, which on this path was a fifth of the check's time.
//! Deletion shifts the following entries back (no tombstones), so lookups
//! stay short however many codes come and go.
//!
//! Generic over the slot: the keypad's per-device index keeps a cache line
//! per entry with what the common grant needs beside the key
//! (`engine::KeypadSlot`), so that grant reads no credential.

use crate::domain::CredentialId;

/// Key 0 marks an empty slot; `engine::pin_key` never produces it (the PIN's
/// length is in the low half and is at least 1).
const EMPTY: u64 = 0;

/// A slot type: its key and whatever the lookup wants beside it. `default()`
/// must have key 0 (empty).
pub(crate) trait Keyed: Copy + Default {
    fn key(&self) -> u64;
}

/// The plain slot: key -> credential.
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
pub(crate) struct Slot {
    key: u64,
    value: u32,
}

impl Keyed for Slot {
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

pub(crate) struct PinIndex<S: Keyed = Slot> {
    slots: Vec<S>,
    len: usize,
}

/// splitmix64's finalizer: the packed keys are far from random (a door id
/// and a short PIN), so they need a real mix before masking.
#[inline]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl PinIndex<Slot> {
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<CredentialId> {
        self.find(key).map(|s| CredentialId(s.value))
    }

    /// Inserts or replaces.
    pub(crate) fn insert(&mut self, key: u64, value: CredentialId) {
        self.put(Slot {
            key,
            value: value.0,
        });
    }

    pub(crate) fn remove(&mut self, key: u64) -> Option<CredentialId> {
        self.take(key).map(|s| CredentialId(s.value))
    }
}

impl<S: Keyed> PinIndex<S> {
    pub(crate) fn new() -> PinIndex<S> {
        PinIndex {
            slots: vec![S::default(); 16],
            len: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn position(&self, key: u64) -> Option<usize> {
        debug_assert_ne!(key, EMPTY);
        let mask = self.mask();
        let mut i = mix(key) as usize & mask;
        loop {
            let k = self.slots[i].key();
            if k == key {
                return Some(i);
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub(crate) fn find(&self, key: u64) -> Option<&S> {
        self.position(key).map(|i| &self.slots[i])
    }

    /// The slot of `key`, to change what is kept beside the key (never the
    /// key itself).
    pub(crate) fn find_mut(&mut self, key: u64) -> Option<&mut S> {
        self.position(key).map(|i| &mut self.slots[i])
    }

    /// Inserts or replaces the slot with `slot`'s key.
    pub(crate) fn put(&mut self, slot: S) {
        let key = slot.key();
        assert_ne!(key, EMPTY, "key 0 is reserved for empty slots");
        // Keep the load at most one half: probe runs stay short.
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = mix(key) as usize & mask;
        loop {
            let s = &mut self.slots[i];
            if s.key() == key {
                *s = slot;
                return;
            }
            if s.key() == EMPTY {
                *s = slot;
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    pub(crate) fn take(&mut self, key: u64) -> Option<S> {
        let mask = self.mask();
        let i = self.position(key)?;
        let removed = self.slots[i];
        // Backward-shift: move later entries of the run into the hole when
        // their home slot does not lie (cyclically) between the hole and them.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slots[j];
            if s.key() == EMPTY {
                break;
            }
            let home = mix(s.key()) as usize & mask;
            let between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !between {
                self.slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = S::default();
        self.len -= 1;
        Some(removed)
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let mut doubled = Vec::with_capacity(n);
        // Huge pages before the first write (see `huge`).
        crate::huge::advise(doubled.as_ptr(), n);
        doubled.resize(n, S::default());
        let old = std::mem::replace(&mut self.slots, doubled);
        self.len = 0;
        for s in old {
            if s.key() != EMPTY {
                self.put(s);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slots(&self) -> impl Iterator<Item = &S> + '_ {
        self.slots.iter().filter(|s| s.key() != EMPTY)
    }
}

impl PinIndex<Slot> {
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u64, CredentialId)> + '_ {
        self.slots().map(|s| (s.key, CredentialId(s.value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        // Any sequence of inserts and removes agrees with std's HashMap.
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec((any::<bool>(), 1u64..200, any::<u32>()), 0..600)) {
            let mut ours = PinIndex::<Slot>::new();
            let mut model = HashMap::new();
            for (insert, key, value) in ops {
                if insert {
                    ours.insert(key, CredentialId(value));
                    model.insert(key, value);
                } else {
                    prop_assert_eq!(ours.remove(key).map(|c| c.0), model.remove(&key));
                }
                prop_assert_eq!(ours.len(), model.len());
            }
            for key in 1u64..200 {
                prop_assert_eq!(ours.get(key).map(|c| c.0), model.get(&key).copied());
            }
        }
    }

    #[test]
    fn many_entries_survive_growth_and_removal() {
        let mut t = PinIndex::<Slot>::new();
        for k in 1..50_000u64 {
            t.insert(k << 32 | 7, CredentialId(k as u32));
        }
        for k in (1..50_000u64).step_by(2) {
            assert_eq!(t.remove(k << 32 | 7), Some(CredentialId(k as u32)));
        }
        for k in 1..50_000u64 {
            let want = (k % 2 == 0).then_some(CredentialId(k as u32));
            assert_eq!(t.get(k << 32 | 7), want, "{k}");
        }
        assert_eq!(t.len(), 24_999);
    }
}
