//! The `fleetsim` binary: parses the command line and hands over to
//! `fleetsim::cli`. Exit codes: 0 passed, 1 thresholds failed, 2 invalid
//! input, 3 run error.

use std::process::ExitCode;

use fleetsim::cli::{main_with, Exit};

fn main() -> ExitCode {
    // A panic is a bug, but it must still end with a documented exit code
    // (3, run error) rather than Rust's 101; the hook has printed it already.
    let result = std::panic::catch_unwind(|| {
        // Locked per write, never for the whole command: a run's own
        // threads print too (a soak seed's progress line), and a lock held
        // here for the command's length would stop them for good.
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        main_with(std::env::args_os(), &mut out, &mut err)
    });
    result.unwrap_or(Exit::RunError).into()
}
