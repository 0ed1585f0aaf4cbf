//! Process exit codes of `sim`.

/// Everything ran and every check passed.
pub const SUCCESS: u8 = 0;
/// The job could not run: unreadable or corrupt trace, unwritable output.
pub const FAILURE: u8 = 1;
/// Bad command line (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// A correctness check failed (production and reference SIEVE disagree; a replay read a
/// wrong value or the store failed validation).
pub const CORRECTNESS: u8 = 3;
/// Replay: a worker died without a planned fault, panicked or broke the protocol.
pub const CRASH: u8 = 4;
/// Replay: a worker made no progress within the watchdog, or no write succeeded within the
/// recovery bound after a crash (a hang).
pub const LIVENESS: u8 = 5;

/// The exit code of a replay failure.
pub fn of_failure(kind: crate::mp::FailureKind) -> u8 {
    match kind {
        crate::mp::FailureKind::Crash => CRASH,
        crate::mp::FailureKind::Liveness => LIVENESS,
        crate::mp::FailureKind::Correctness => CORRECTNESS,
        crate::mp::FailureKind::Harness => FAILURE,
    }
}
