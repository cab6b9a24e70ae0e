//! Device timers without per-actor timer futures.
//!
//! actix's `ctx.run_later` keeps a timer future in the actor's context, and
//! the context polls every one of them each time it wakes (on every
//! message). With a relock, a battery and a daily timer per device, a
//! load test spent ~15% of its time polling timers that were not due.
//!
//! Here each thread (arbiter) has one timer heap and one task driving it
//! with a single tokio sleep to the earliest deadline; a due timer is
//! delivered to its actor as a [`Fire`] message (`do_send`: a timer is
//! never refused by a full mailbox). Everything stays on tokio time, so a
//! paused runtime (virtual time) advances to the next deadline as before.
//! Timers due at the same instant fire in the order they were set.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tokio::time::{Instant, Sleep};

/// A timer's callback on its actor.
pub type Callback<A> = Box<dyn FnOnce(&mut A, &mut <A as Actor>::Context) + Send>;

/// A timer's callback, run in the actor as a message.
pub struct Fire<A: Actor>(pub Callback<A>);

impl<A: Actor> Message for Fire<A> {
    type Result = ();
}

/// Implements `Handler<Fire<Self>>` (run the callback) for device actors.
#[macro_export]
macro_rules! handle_fire {
    ($t:ty) => {
        impl actix::Handler<$crate::devices::timers::Fire<$t>> for $t {
            type Result = ();
            fn handle(
                &mut self,
                m: $crate::devices::timers::Fire<$t>,
                ctx: &mut actix::Context<$t>,
            ) {
                (m.0)(self, ctx)
            }
        }
    };
}

struct Entry {
    at: Instant,
    seq: u64,
    fire: Box<dyn FnOnce()>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One thread's timers.
struct Wheel {
    heap: RefCell<BinaryHeap<Reverse<Entry>>>,
    seq: Cell<u64>,
    /// The deadline the driver sleeps to (`None`: it waits for a timer).
    armed: Cell<Option<Instant>>,
    waker: RefCell<Option<Waker>>,
    /// False once the driver task is gone (its runtime stopped).
    alive: Cell<bool>,
    /// The actix system the driver runs in.
    system: Option<usize>,
}

thread_local! {
    static WHEEL: RefCell<Option<Rc<Wheel>>> = const { RefCell::new(None) };
}

fn current_system() -> Option<usize> {
    actix_rt::System::try_current().map(|s| s.id())
}

/// This thread's wheel, started (its driver spawned) on first use.
fn wheel() -> Rc<Wheel> {
    WHEEL.with(|w| {
        let mut w = w.borrow_mut();
        let system = current_system();
        if let Some(wheel) = w.as_ref() {
            if wheel.alive.get() && wheel.system == system {
                return wheel.clone();
            }
        }
        let wheel = Rc::new(Wheel {
            heap: RefCell::new(BinaryHeap::new()),
            seq: Cell::new(0),
            armed: Cell::new(None),
            waker: RefCell::new(None),
            alive: Cell::new(true),
            system,
        });
        actix_rt::spawn(Driver {
            wheel: wheel.clone(),
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
        });
        *w = Some(wheel.clone());
        wheel
    })
}

struct Driver {
    wheel: Rc<Wheel>,
    sleep: Pin<Box<Sleep>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.wheel.alive.set(false);
        // Callbacks hold actor addresses: let them go with the runtime.
        if let Ok(mut h) = self.wheel.heap.try_borrow_mut() {
            h.clear();
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            let now = Instant::now();
            // Fire everything due (a callback only sends a message, so it
            // cannot re-enter the heap).
            loop {
                let due = {
                    let mut heap = this.wheel.heap.borrow_mut();
                    match heap.peek() {
                        Some(Reverse(e)) if e.at <= now => heap.pop().map(|Reverse(e)| e),
                        _ => None,
                    }
                };
                match due {
                    Some(e) => (e.fire)(),
                    None => break,
                }
            }
            let next = this.wheel.heap.borrow().peek().map(|Reverse(e)| e.at);
            this.wheel.armed.set(next);
            let mut waker = this.wheel.waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            drop(waker);
            let Some(at) = next else {
                return Poll::Pending;
            };
            if this.sleep.deadline() != at {
                this.sleep.as_mut().reset(at);
            }
            match this.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => continue,
            }
        }
    }
}

/// Runs `f` on the actor after `delay` (as `ctx.run_later` does, but
/// without a future in the actor's context). There is no cancel: callers
/// that re-plan check a token of theirs when it fires.
pub fn run_later<A, F>(ctx: &mut Context<A>, delay: Duration, f: F)
where
    A: Actor<Context = Context<A>> + Handler<Fire<A>>,
    A::Context: ToEnvelope<A, Fire<A>>,
    F: FnOnce(&mut A, &mut Context<A>) + Send + 'static,
{
    let addr = ctx.address();
    let at = Instant::now() + delay;
    let fire = Box::new(move || addr.do_send(Fire(Box::new(f))));
    let wheel = wheel();
    let seq = wheel.seq.get();
    wheel.seq.set(seq + 1);
    wheel
        .heap
        .borrow_mut()
        .push(Reverse(Entry { at, seq, fire }));
    if wheel.armed.get().is_none_or(|armed| at < armed) {
        wheel.armed.set(Some(at));
        if let Some(w) = wheel.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}
