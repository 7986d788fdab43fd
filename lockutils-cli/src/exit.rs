//! Exit codes, and turning failures into them.
//!
//! `run` and `wrapper` pass the command's own exit status through, so any
//! code of ours may also be one the command chose. We pick codes from the
//! BSD `sysexits.h` range (64–78) plus 79, which few programs use, rather
//! than `flock(1)`'s 1 (which nearly every program uses for "failed") or
//! `timeout(1)`'s 124 (which a wrapped `timeout` would return).

use std::fmt::Display;
use std::process::ExitStatus;

use lockutils::LockError;

/// Bad arguments: unknown subcommand or option, missing `-- CMD`, an
/// invalid lock name or duration (`EX_USAGE`).
pub const USAGE: i32 = 64;
/// A lock server (`LOCKUTILS_BACKEND`) could not be used (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: i32 = 69;
/// Something that should not happen (`EX_SOFTWARE`).
pub const INTERNAL: i32 = 70;
/// The lock path is not set, cannot be created or opened, or holds
/// something other than a regular file where the lock file goes
/// (`EX_CANTCREAT`).
pub const LOCK_PATH: i32 = 73;
/// The lock is held by someone else: `run --nonblock`, or `remove`
/// without `--wait` (`EX_TEMPFAIL`: try again later).
pub const BUSY: i32 = 75;
/// The lock (or leadership) was lost on the lock server while the command
/// ran: the command was sent SIGTERM, then SIGKILL after `--kill-after`
/// (`EX_PROTOCOL`'s number: the server broke the arrangement).
pub const LOST: i32 = 76;
/// `run --timeout` ran out before the lock was free.
pub const TIMEOUT: i32 = 79;
/// The command was found but could not be executed (as in shells).
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found (as in shells).
pub const NOT_FOUND: i32 = 127;
/// Added to a signal's number when the command died of it, or when the
/// signal ended the wait for the lock (130 for SIGINT, 143 for SIGTERM).
pub const SIGNAL_BASE: i32 = 128;

/// The exit-code table, for `--help`.
pub const TABLE: &str = "\
Exit codes:
  0-255  run, wrapper, elect: the command's own exit code
  128+N  run, wrapper, elect: the command died of signal N; run, elect: signal N (INT 130,
         TERM 143, HUP 129, QUIT 131) arrived while waiting, lock not taken
     64  bad arguments (unknown subcommand or option, no `-- CMD`, invalid
         lock name or duration)
     69  the configured lock server (LOCKUTILS_BACKEND) is unavailable
     70  internal error
     73  lock path error: not set, cannot be created or opened, or not a
         regular file where the lock file goes
     75  lock busy: run --nonblock, or remove without --wait; elect
         --nonblock: another candidate leads
     76  run, elect: the lock or leadership was lost on the lock server
         while the command ran (it got SIGTERM, then SIGKILL after
         --kill-after)
     79  run --timeout, elect --timeout: timed out waiting
    126  the command cannot be executed
    127  the command was not found";

/// What to say when no lock path is configured.
pub const NO_LOCK_PATH: &str =
    "no lock path: pass --lock-path DIR, or set LOCKUTILS_LOCK_PATH (or OSLO_LOCK_PATH)";

/// Prints `lockutils: <msg>` on stderr and returns `code`.
pub fn fail(code: i32, msg: impl Display) -> i32 {
    eprintln!("lockutils: {msg}");
    code
}

/// The exit code for a library error.
pub fn code_for(e: &LockError) -> i32 {
    match e {
        LockError::InvalidName { .. } | LockError::InvalidOptions { .. } => USAGE,
        LockError::WouldBlock { .. } => BUSY,
        LockError::Timeout { .. } => TIMEOUT,
        LockError::LockPathNotSet { .. }
        | LockError::NotRegularFile { .. }
        | LockError::Io { .. } => LOCK_PATH,
        LockError::Backend { .. } => UNAVAILABLE,
        _ => INTERNAL,
    }
}

/// Prints a library error and returns its exit code.
pub fn lock_error(e: &LockError) -> i32 {
    fail(code_for(e), e)
}

/// The shell's view of how a command ended: its code, or 128 + signal.
pub fn from_status(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => SIGNAL_BASE + sig,
        (None, None) => INTERNAL,
    }
}
