//! Transparent huge pages for the engine's big tables.
//!
//! A check lands on cold memory in tables of hundreds of megabytes (the
//! credentials, the PIN index); with 4 KiB pages most of those accesses miss
//! the TLB as well as the cache, and the page walk is one more dependent
//! miss. The kernel backs a range with 2 MiB pages when asked
//! (`madvise(MADV_HUGEPAGE)`, honoured in THP's default `madvise` mode), so
//! the big tables ask for it when they are allocated, before they are
//! written. Small tables are left alone.

const HUGE_PAGE: usize = 2 << 20;

/// Below this a table stays on ordinary pages.
const MIN_BYTES: usize = 2 * HUGE_PAGE;

/// Asks for huge pages over the whole 2 MiB pages inside `count` elements
/// from `ptr`. Advice only: nothing changes if the kernel says no.
pub(crate) fn advise<T>(ptr: *const T, count: usize) {
    let bytes = count.saturating_mul(std::mem::size_of::<T>());
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
        let end = (ptr as usize + bytes) & !(HUGE_PAGE - 1);
        if end > start {
            // SAFETY: the range lies inside one live allocation of ours;
            // MADV_HUGEPAGE changes how it is backed, never its contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = ptr;
}

/// `Vec::push`, but a big table grows into a fresh buffer advised for huge
/// pages before the elements are moved in (a `realloc` would keep the old
/// small pages).
pub(crate) fn push<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        let want = v.capacity().saturating_mul(2).max(16);
        if want.saturating_mul(std::mem::size_of::<T>()) >= MIN_BYTES {
            let mut grown = Vec::with_capacity(want);
            advise(grown.as_ptr(), grown.capacity());
            grown.append(v);
            *v = grown;
        }
    }
    v.push(x);
}

/// Starts fetching the cache lines of `*r` (at most four) without waiting:
/// a hint, so that work that does not need them yet overlaps the miss.
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (r as *const T).cast::<i8>();
        let lines = std::mem::size_of::<T>().div_ceil(64).clamp(1, 4);
        for i in 0..lines {
            // SAFETY: a prefetch never faults and changes nothing visible;
            // the addresses lie inside `*r`, a live reference.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i * 64));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

#[cfg(test)]
mod tests {
    #[test]
    fn push_keeps_every_element_in_order() {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..3_000_000u64 {
            super::push(&mut v, i);
        }
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64));
    }
}
