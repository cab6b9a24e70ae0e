//! Precise arrival starts for real-clock runs.
//!
//! A check's latency counts from its intended start, so however late the
//! load wakes is in every latency the run measures. tokio's timer wheel
//! has a 1 ms resolution: an arrival due at t wakes at the next whole
//! millisecond after it, 0.5-1 ms late on average (`examples/timer_lateness`
//! measures it), which alone is ten times the harness floor's target.
//!
//! The pacer is one OS thread that sleeps on a condition variable until
//! the earliest deadline waiting (the kernel's high-resolution timer, with
//! the thread's timer slack cut to 1 µs) and wakes the task that waits for
//! it; the runtime then runs that task at once. Waking a parked runtime
//! thread takes tens of microseconds itself, so the pacer wakes a task
//! [`EARLY`] before its deadline, and the task finishes the wait by
//! yielding (other ready tasks run meanwhile) until the deadline passes.
//! Virtual-clock runs do not use it: there tokio's paused clock is the time.
//!
//! Bounded: a task waits for one deadline at a time, so the heap holds at
//! most one entry per waiting task (plus entries of waits dropped before
//! their deadline, removed when it passes).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// A waiting task: its deadline, and an order among equal deadlines.
struct Entry {
    at: Instant,
    order: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// How long before its deadline the pacer wakes a task: about what a
/// parked runtime thread takes to run a task woken from another thread
/// on this class of machine. The task yields the rest of the way, so a
/// start is never early; the cost is at most this long of yielding per
/// arrival when the load's thread is otherwise idle.
const EARLY: std::time::Duration = std::time::Duration::from_micros(40);

#[derive(Default)]
struct Waiting {
    heap: BinaryHeap<Reverse<Entry>>,
    next_order: u64,
}

#[derive(Default)]
struct Shared {
    waiting: Mutex<Waiting>,
    changed: Condvar,
    stop: AtomicBool,
}

/// The pacer thread; stopped and joined on drop.
pub struct Pacer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    pub fn start() -> std::io::Result<Pacer> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fleetsim-pacer".into())
            .spawn(move || pace(&s))?;
        Ok(Pacer {
            shared,
            thread: Some(thread),
        })
    }

    /// Completes at `at` (at once if it has passed).
    pub fn sleep_until(&self, at: tokio::time::Instant) -> Sleep<'_> {
        Sleep {
            pacer: self,
            at: at.into_std(),
            registered: false,
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Taken under the lock, so the thread is either waiting (and
        // woken) or about to look at `stop`.
        drop(self.shared.waiting.lock());
        self.shared.changed.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The pacer thread: wakes each task whose deadline has passed, then
/// sleeps until the next deadline or a new earliest one.
fn pace(shared: &Shared) {
    cut_timer_slack();
    let mut waiting = shared.waiting.lock();
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now() + EARLY;
        while waiting.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = waiting.heap.pop() {
                e.waker.wake();
            }
        }
        match waiting.heap.peek().map(|Reverse(e)| e.at) {
            Some(at) => {
                shared
                    .changed
                    .wait_until(&mut waiting, at.checked_sub(EARLY).unwrap_or(at));
            }
            None => shared.changed.wait(&mut waiting),
        }
    }
}

/// The kernel may delay a sleeping thread's wake-up by its timer slack
/// (50 µs by default) to batch wake-ups; the pacer's one job is to be on
/// time, so its slack is 1 µs.
fn cut_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only
    // the calling thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// The future of [`Pacer::sleep_until`].
pub struct Sleep<'a> {
    pacer: &'a Pacer,
    at: Instant,
    registered: bool,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        // The pacer wakes an entry once its deadline is less than EARLY
        // away: the rest is yielded here, so one entry per wait.
        if self.registered {
            // A poll for another reason long before the deadline waits for
            // the pacer's wake-up instead.
            if self.at.saturating_duration_since(Instant::now()) <= EARLY {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        {
            let shared = &self.pacer.shared;
            let mut waiting = shared.waiting.lock();
            let earliest = waiting.heap.peek().is_none_or(|Reverse(e)| self.at < e.at);
            let order = waiting.next_order;
            waiting.next_order += 1;
            waiting.heap.push(Reverse(Entry {
                at: self.at,
                order,
                waker: cx.waker().clone(),
            }));
            drop(waiting);
            if earliest {
                shared.changed.notify_one();
            }
            self.registered = true;
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits end at or after their deadlines, in deadline order, whatever
    /// order they were registered in.
    #[test]
    fn waits_end_after_their_deadlines_in_order() {
        let pacer = Pacer::start().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let ended = std::cell::RefCell::new(Vec::new());
        rt.block_on(async {
            let origin = tokio::time::Instant::now();
            let wait = |i: usize, ms: u64| {
                let (pacer, ended) = (&pacer, &ended);
                async move {
                    let at = origin + Duration::from_millis(ms);
                    pacer.sleep_until(at).await;
                    assert!(tokio::time::Instant::now() >= at);
                    ended.borrow_mut().push(i);
                }
            };
            tokio::join!(wait(0, 30), wait(1, 10), wait(2, 20), wait(3, 0));
        });
        assert_eq!(ended.into_inner(), vec![3, 1, 2, 0]);
        // Stops and joins its thread.
        drop(pacer);
    }
}
