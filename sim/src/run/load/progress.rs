//! The live progress line on stderr: simulated time done of the run's
//! total, wall time, an estimate of the wall time left, the phase, and the
//! attempts, errors and false decisions so far.
//!
//! An indicatif line when stderr is a terminal (redrawn about once a
//! second), else plain lines every [`PLAIN_EVERY_S`] of wall time, and in
//! virtual time always a last line when the phases are done (a run that
//! ends before the first plain line still shows one). In virtual
//! time the task wakes every [`VIRTUAL_STEPS`]th of the run on the
//! simulated clock and reads the wall clock to decide whether to print:
//! the wall clock only decides what goes to stderr, never what the run
//! does, so a replay stays exact.

use std::cell::Cell;
use std::io::IsTerminal;
use std::rc::Rc;
use std::time::Duration;

use super::Ctx;
use crate::scenario::units::format_duration;

/// Wall seconds between two plain lines (stderr not a terminal).
pub const PLAIN_EVERY_S: u64 = 5;
/// Wall time between two redraws of the terminal line.
const BAR_EVERY_MS: u64 = 1_000;
/// Wake-ups of the virtual-time task over the whole run.
const VIRTUAL_STEPS: u32 = 1_000;

/// Where the line goes.
enum Out {
    Bar(indicatif::ProgressBar),
    Plain,
}

/// The progress line of one run.
pub(super) struct Progress {
    out: Out,
    virtual_clock: bool,
    /// The progress line is about the wall clock: std time on purpose.
    wall_start: std::time::Instant,
    /// When the last line went out, and the attempts counted then.
    last: Cell<(std::time::Instant, u64)>,
}

impl Progress {
    pub(super) fn new(virtual_clock: bool) -> Rc<Progress> {
        let out = if std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            Out::Bar(b)
        } else {
            Out::Plain
        };
        let now = std::time::Instant::now();
        Rc::new(Progress {
            out,
            virtual_clock,
            wall_start: now,
            last: Cell::new((now, 0)),
        })
    }

    /// Prints a line every so often until aborted.
    pub(super) async fn run(self: Rc<Self>, ctx: Rc<Ctx>) {
        let every = Duration::from_millis(match self.out {
            Out::Bar(_) => BAR_EVERY_MS,
            Out::Plain => PLAIN_EVERY_S * 1000,
        });
        let step = if self.virtual_clock {
            (ctx.scenario.total_duration() / VIRTUAL_STEPS).max(Duration::from_secs(1))
        } else {
            every
        };
        loop {
            tokio::time::sleep(step).await;
            if self.last.get().0.elapsed() >= every {
                self.print(&ctx, false);
            }
        }
    }

    /// The last line, once the phases are done (virtual time; a real run
    /// ends with its summary).
    pub(super) fn finish(&self, ctx: &Ctx) {
        if self.virtual_clock {
            self.print(ctx, true);
        }
    }

    fn print(&self, ctx: &Ctx, last: bool) {
        let (at, attempts) = self.last.get();
        let now = std::time::Instant::now();
        let since_s = now.duration_since(at).as_secs_f64();
        let done = if last {
            ctx.scenario.total_duration()
        } else {
            ctx.origin.elapsed()
        };
        let (line, counted) = line(
            ctx,
            done,
            now.duration_since(self.wall_start),
            since_s,
            attempts,
            self.virtual_clock,
        );
        self.last.set((now, counted));
        match &self.out {
            Out::Bar(b) if !last => b.set_message(line),
            Out::Bar(b) => b.finish_with_message(line),
            Out::Plain => eprintln!("{line}"),
        }
    }
}

/// One progress line and the attempts counted so far.
fn line(
    ctx: &Ctx,
    done: Duration,
    wall: Duration,
    since_last_s: f64,
    last_attempts: u64,
    virtual_clock: bool,
) -> (String, u64) {
    let total = ctx.scenario.total_duration();
    let sh = ctx.shared.borrow();
    let attempts: u64 = sh.arrivals.ran_total();
    let shown = done.min(total);
    let share = if total.is_zero() {
        1.0
    } else {
        shown.as_secs_f64() / total.as_secs_f64()
    };
    let eta = if share > 0.0 && share < 1.0 {
        let left = wall.as_secs_f64() * (1.0 - share) / share;
        format!(
            ", ETA {}",
            format_duration(Duration::from_secs(left.ceil() as u64))
        )
    } else {
        String::new()
    };
    let whole = |d: Duration| format_duration(Duration::from_secs(d.as_secs()));
    let phase = super::phase_at(&ctx.scenario, done);
    // In virtual time latencies are simulated: no p99 on the line.
    let p99 = match ctx.scenario.latency_simulated() {
        true => String::new(),
        false => {
            let p99_ms = sh
                .recorder
                .snapshot()
                .checks_histogram()
                .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
            format!(", check p99 {p99_ms:.2} ms")
        }
    };
    let line = format!(
        "[{} of {}{} ({:.0}%), wall {:.1}s{eta}] {phase}: attempts {attempts} ({:.0}/s wall){p99}, errors {}, false accepts {}, false rejects {}",
        whole(shown),
        whole(total),
        if virtual_clock { " simulated" } else { "" },
        share * 100.0,
        wall.as_secs_f64(),
        (attempts - last_attempts.min(attempts)) as f64 / since_last_s.max(1e-3),
        sh.errors,
        sh.oracle.verdicts.false_accepts,
        sh.oracle.verdicts.false_rejects,
    );
    (line, attempts)
}
