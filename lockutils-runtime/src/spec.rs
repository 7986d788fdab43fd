//! What an acquisition asks for: the [`Mode`], the [`Kind`] of lock every
//! user of a name agrees on, and how long to [`Wait`].
//!
//! Every layer speaks these types, from the in-process primitives up to the
//! builder, so this module imports nothing of the runtime but `error`.

use std::fmt;
use std::time::{Duration, Instant};

/// Exclusive (a writer, or any holder of a semaphore) or shared (a reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    Exclusive,
    Shared,
}

impl Mode {
    /// `"exclusive"` or `"shared"`, for events and messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        }
    }
}

/// What every user of a lock name must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Kind {
    /// First come, first served.
    pub(crate) fair: bool,
    /// `Some(n)`: a counted semaphore; `None`: a reader/writer lock (whose
    /// default, exclusive mode is a plain mutex).
    pub(crate) permits: Option<u32>,
}

impl Kind {
    pub(crate) const MUTEX: Kind = Kind {
        fair: false,
        permits: None,
    };
}

/// With its article, to read in a sentence: "a fair lock".
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.fair, self.permits) {
            (false, None) => f.write_str("a lock"),
            (true, None) => f.write_str("a fair lock"),
            (false, Some(n)) => write!(f, "a semaphore of {n} permits"),
            (true, Some(n)) => write!(f, "a fair semaphore of {n} permits"),
        }
    }
}

/// How long to wait for a busy lock: the one type every layer uses.
///
/// A request starts as [`Wait::Try`], [`Wait::Block`] or
/// [`Wait::Timeout`]; [`Wait::start`] turns a timeout into a deadline when
/// the acquisition begins, so every later step (in-process queue, lock
/// file, lock server) waits for the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Do not wait: busy is an answer.
    Try,
    /// Wait as long as it takes.
    Block,
    /// Wait at most this long, counted from [`Wait::start`].
    Timeout(Duration),
    /// Wait until `deadline`; `timeout` is what was asked, for messages.
    Until {
        deadline: Instant,
        timeout: Duration,
    },
}

impl Wait {
    /// Fixes a timeout's deadline from now. A deadline past the clock's
    /// range is no deadline.
    pub(crate) fn start(self) -> Wait {
        match self {
            Wait::Timeout(timeout) => match Instant::now().checked_add(timeout) {
                Some(deadline) => Wait::Until { deadline, timeout },
                None => Wait::Block,
            },
            other => other,
        }
    }

    /// The instant to give up at, if any (a timeout not yet started counts
    /// from now).
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self.start() {
            Wait::Until { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Whether this wait may block at all.
    pub(crate) fn is_try(self) -> bool {
        self == Wait::Try
    }

    /// The error for a lock that stayed busy: `Timeout` for a timed wait,
    /// `WouldBlock` otherwise.
    pub(crate) fn busy(self, name: &str) -> crate::error::LockError {
        match self {
            Wait::Timeout(timeout) | Wait::Until { timeout, .. } => {
                crate::error::LockError::Timeout {
                    name: name.to_owned(),
                    timeout,
                }
            }
            Wait::Try | Wait::Block => crate::error::LockError::WouldBlock {
                name: name.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_mismatch_reads_as_a_sentence() {
        let e = crate::error::LockError::KindMismatch {
            name: "x".into(),
            this: Kind {
                fair: true,
                permits: None,
            }
            .to_string(),
            other: Kind::MUTEX.to_string(),
        };
        assert_eq!(
            e.to_string(),
            "lock \"x\" was asked for as a fair lock, but it is in use as a lock; \
             every user of a lock name must ask for the same kind"
        );
    }
}
