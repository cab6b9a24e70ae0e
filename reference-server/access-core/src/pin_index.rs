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
//! (`engine::KeypadSlot`), so that grant reads no credential. The card
//! reader's index (`engine::CardSlot`) has a 128-bit key: a device and a
//! 64-bit card number.

use crate::domain::CredentialId;

/// A key of the table: 0 marks an empty slot, so no stored key is 0
/// (`engine::pin_key` puts the PIN's length, at least 1, in the low half;
/// `engine::card_key` adds one to the device).
pub(crate) trait IndexKey: Copy + Eq {
    const EMPTY: Self;
    /// Spreads the key over the table (the packed keys are far from random).
    fn mix(self) -> u64;
}

impl IndexKey for u64 {
    const EMPTY: u64 = 0;
    #[inline]
    fn mix(self) -> u64 {
        mix(self)
    }
}

impl IndexKey for u128 {
    const EMPTY: u128 = 0;
    #[inline]
    fn mix(self) -> u64 {
        mix((self as u64) ^ mix((self >> 64) as u64))
    }
}

/// A slot type: its key and whatever the lookup wants beside it. `default()`
/// must have the empty key.
pub(crate) trait Keyed: Copy + Default {
    type Key: IndexKey;
    fn key(&self) -> Self::Key;
}

/// The plain slot: key -> credential.
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
pub(crate) struct Slot {
    key: u64,
    value: u32,
}

impl Keyed for Slot {
    type Key = u64;
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
    fn position(&self, key: S::Key) -> Option<usize> {
        // A lookup may come with any key a device sends; the empty key
        // must not match an empty slot.
        if key == S::Key::EMPTY {
            return None;
        }
        let mask = self.mask();
        let mut i = key.mix() as usize & mask;
        loop {
            let k = self.slots[i].key();
            if k == key {
                return Some(i);
            }
            if k == S::Key::EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub(crate) fn find(&self, key: S::Key) -> Option<&S> {
        self.position(key).map(|i| &self.slots[i])
    }

    /// The slot of `key`, to change what is kept beside the key (never the
    /// key itself).
    pub(crate) fn find_mut(&mut self, key: S::Key) -> Option<&mut S> {
        self.position(key).map(|i| &mut self.slots[i])
    }

    /// Inserts or replaces the slot with `slot`'s key.
    pub(crate) fn put(&mut self, slot: S) {
        let key = slot.key();
        assert!(key != S::Key::EMPTY, "key 0 is reserved for empty slots");
        // Keep the load at most one half: probe runs stay short.
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = key.mix() as usize & mask;
        loop {
            let s = &mut self.slots[i];
            if s.key() == key {
                *s = slot;
                return;
            }
            if s.key() == S::Key::EMPTY {
                *s = slot;
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    pub(crate) fn take(&mut self, key: S::Key) -> Option<S> {
        let mask = self.mask();
        let i = self.position(key)?;
        let removed = self.slots[i];
        // Backward-shift: move later entries of the run into the hole when
        // their home slot does not lie (cyclically) between the hole and them.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slots[j];
            if s.key() == S::Key::EMPTY {
                break;
            }
            let home = s.key().mix() as usize & mask;
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
            if s.key() != S::Key::EMPTY {
                self.put(s);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slots(&self) -> impl Iterator<Item = &S> + '_ {
        self.slots.iter().filter(|s| s.key() != S::Key::EMPTY)
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

    #[derive(Clone, Copy, Default)]
    struct Wide {
        key: u128,
        value: u32,
    }

    impl Keyed for Wide {
        type Key = u128;
        fn key(&self) -> u128 {
            self.key
        }
    }

    #[test]
    fn wide_keys_that_share_a_half_stay_apart() {
        let mut t = PinIndex::<Wide>::new();
        // The same card number on many devices, and many numbers on one.
        let key = |dev: u128, n: u128| ((dev + 1) << 64) | n;
        for dev in 0..300u128 {
            for n in [0u128, 1, u128::from(u64::MAX)] {
                t.put(Wide {
                    key: key(dev, n),
                    value: (dev * 3 + n % 3) as u32,
                });
            }
        }
        assert_eq!(t.len(), 900);
        for dev in (0..300u128).step_by(2) {
            assert!(t.take(key(dev, 1)).is_some());
        }
        for dev in 0..300u128 {
            for n in [0u128, 1, u128::from(u64::MAX)] {
                let want = (n != 1 || dev % 2 == 1).then_some((dev * 3 + n % 3) as u32);
                assert_eq!(t.find(key(dev, n)).map(|s| s.value), want, "{dev} {n}");
            }
        }
        // The empty key finds nothing, though empty slots hold it.
        assert!(t.find(0).is_none());
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
