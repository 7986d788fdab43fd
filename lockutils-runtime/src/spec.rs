//! What an acquisition asks for: the [`Mode`], the [`Kind`] of lock every
//! user of a name agrees on, how long to [`Wait`], where an external lock
//! lives ([`Place`]), and all of it together ([`Options`]).
//!
//! Every layer speaks these types, from the in-process primitives up to the
//! builder, so this module imports nothing of the runtime but `error`.

use std::fmt;
use std::path::Path;
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
    /// The lock file is also locked with `flock(2)` (lock files only).
    pub(crate) flock: bool,
}

impl Kind {
    pub(crate) const MUTEX: Kind = Kind {
        fair: false,
        permits: None,
        flock: false,
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
        }?;
        if self.flock {
            f.write_str(" with flock(2)")?;
        }
        Ok(())
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

/// A lock's own lock directory: a path from the run-time API, or a string
/// from `#[synchronized(lock_path = "...")]` (a `Path` cannot be made in a
/// `const`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum LockDir<'a> {
    Path(&'a Path),
    Str(&'a str),
}

impl<'a> LockDir<'a> {
    pub(crate) fn path(self) -> &'a Path {
        match self {
            LockDir::Path(p) => p,
            LockDir::Str(s) => Path::new(s),
        }
    }
}

/// Where an external lock lives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Place<'a> {
    /// Lock files in this directory (the lock's own `lock_path`).
    Dir(&'a Path),
    /// The lock server at this URL (the lock's own `backend`).
    Server(&'a str),
    /// The process configuration: the configured lock server if any, else
    /// lock files in the configured lock path.
    Configured,
}

/// Everything an acquisition asks for besides the name: the one options
/// type behind the [`Lock`](crate::Lock) builder and the
/// `#[synchronized]` call sites (whose setters are `const`, so a call
/// site's options are built at compile time).
///
/// [`Options::check`] is the one place the combinations are checked at run
/// time (the attribute also rejects them at compile time, with a span).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options<'a> {
    pub(crate) mode: Mode,
    pub(crate) kind: Kind,
    pub(crate) wait: Wait,
    pub(crate) external: bool,
    pub(crate) lock_path: Option<LockDir<'a>>,
    pub(crate) backend: Option<&'a str>,
    /// An election's candidate, recorded beside the lock on a lock server.
    pub(crate) identity: Option<&'a str>,
}

/// Why a combination of options is refused; each text is written once.
pub(crate) mod refused {
    pub(crate) const FLOCK_NEEDS_EXTERNAL: &str = "flock locks the lock file: add external";
    pub(crate) const FLOCK_WITH_PERMITS: &str =
        "flock(2) has no counted mode: `flock` cannot be combined with permits";
    pub(crate) const NO_PERMITS: &str = "permits must be at least 1";
    pub(crate) const SHARED_SEMAPHORE: &str = "a semaphore (permits) has no shared mode";
    pub(crate) const PERMITS_ON_SERVER: &str =
        "semaphores (permits) work with lock files only, not lock servers";
    pub(crate) const FLOCK_ON_SERVER: &str =
        "flock locks lock files; this lock is on a lock server";
}

impl<'a> Options<'a> {
    /// A blocking, exclusive, in-process plain lock.
    pub(crate) const DEFAULT: Options<'static> = Options {
        mode: Mode::Exclusive,
        kind: Kind::MUTEX,
        wait: Wait::Block,
        external: false,
        lock_path: None,
        backend: None,
        identity: None,
    };

    /// Where the external lock lives: the lock's own `lock_path` wins
    /// (lock files), then its own `backend`, else the configuration.
    pub(crate) fn place(&self) -> Place<'a> {
        match (self.lock_path, self.backend) {
            (Some(dir), _) => Place::Dir(dir.path()),
            (None, Some(url)) => Place::Server(url),
            (None, None) => Place::Configured,
        }
    }

    /// Whether the options agree with each other. `full_name` is named in
    /// the error.
    pub(crate) fn check(&self, full_name: &str) -> Result<(), crate::error::LockError> {
        let reason = match (self.kind.permits, self.mode) {
            _ if self.kind.flock && !self.external => refused::FLOCK_NEEDS_EXTERNAL,
            (Some(_), _) if self.kind.flock => refused::FLOCK_WITH_PERMITS,
            (Some(0), _) => refused::NO_PERMITS,
            (Some(_), Mode::Shared) => refused::SHARED_SEMAPHORE,
            _ => return Ok(()),
        };
        Err(crate::error::LockError::InvalidOptions {
            name: full_name.to_owned(),
            reason,
        })
    }

    /// Whether a lock of this kind can live on a lock server (`true`) or
    /// needs lock files.
    pub(crate) fn check_server(&self, full_name: &str) -> Result<(), crate::error::LockError> {
        let reason = if self.kind.permits.is_some() {
            refused::PERMITS_ON_SERVER
        } else if self.kind.flock {
            refused::FLOCK_ON_SERVER
        } else {
            return Ok(());
        };
        Err(crate::error::LockError::InvalidOptions {
            name: full_name.to_owned(),
            reason,
        })
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
                flock: false,
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
