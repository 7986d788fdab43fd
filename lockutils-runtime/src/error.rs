//! The one error type of lockutils.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use lockutils_name::NameProblem;

/// Why a lock could not be taken (or removed).
///
/// Every variant names the lock; those about lock files also name the path,
/// and those about the operating system carry its error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The name (or prefix) cannot be a lock name: see [`NameProblem`].
    #[error("invalid lock name {name:?}: {problem}")]
    InvalidName {
        /// The full lock name as given (prefix, separator, name).
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },

    /// `blocking(false)`: the lock is held by someone else right now.
    #[error("lock {name:?} is busy and blocking = false was asked")]
    WouldBlock {
        /// The full lock name.
        name: String,
    },

    /// The lock was not free within the timeout.
    #[error("timed out after {timeout:?} waiting for lock {name:?}")]
    Timeout {
        /// The full lock name.
        name: String,
        /// The timeout that ran out.
        timeout: Duration,
    },

    /// An external lock was asked for, but no lock path is configured.
    #[error(
        "no lock path for external lock {name:?}: pass lock_path, call \
         lockutils::set_lock_path(dir), or set LOCKUTILS_LOCK_PATH (or OSLO_LOCK_PATH)"
    )]
    LockPathNotSet {
        /// The full lock name.
        name: String,
    },

    /// Something other than a regular file (a symlink, FIFO, directory,
    /// socket or device) sits where the lock file should be. It was neither
    /// followed nor changed.
    #[error("refusing lock file {path} for lock {name:?}: it is a {kind}, not a regular file")]
    NotRegularFile {
        /// The full lock name.
        name: String,
        /// The lock file's path.
        path: PathBuf,
        /// What was found there: `"symlink"`, `"fifo"`, `"directory"`, ...
        kind: &'static str,
    },

    /// The name is already used as another kind of lock (fair or not, a
    /// semaphore with another number of permits): every user of a name
    /// must use it the same way.
    #[error(
        "lock {name:?} was asked for as {this}, but it is in use as {other}; \
         every user of a lock name must ask for the same kind"
    )]
    KindMismatch {
        /// The full lock name.
        name: String,
        /// What this acquisition asked for, with its article: `"a fair lock"`.
        this: String,
        /// What the name is in use as, likewise: `"a semaphore of 2 permits"`.
        other: String,
    },

    /// The options contradict each other (e.g. `shared` with `permits`).
    #[error("invalid options for lock {name:?}: {reason}")]
    InvalidOptions {
        /// The full lock name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// A lock server (PostgreSQL, etcd) failed or could not be reached.
    #[error("{}", backend_message(name, backend, op, cause))]
    Backend {
        /// The full lock name (empty when no lock was being taken, as in
        /// `set_backend`).
        name: String,
        /// The backend's URL, password removed.
        backend: String,
        /// What was being done, e.g. `"connect"`, `"lock"`.
        op: &'static str,
        /// What went wrong.
        cause: String,
    },

    /// The operating system refused an operation on the lock path or file.
    #[error("cannot {op} {path} for lock {name:?}: {source}")]
    Io {
        /// The full lock name.
        name: String,
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done, e.g. `"open lock file"`, `"lock"`, `"create lock directory"`.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// `lock "x" on URL: cannot OP: CAUSE`, or `lock server URL: ...` when no
/// lock was being taken.
fn backend_message(name: &str, backend: &str, op: &str, cause: &str) -> String {
    if name.is_empty() {
        format!("lock server {backend}: cannot {op}: {cause}")
    } else {
        format!("lock {name:?} on {backend}: cannot {op}: {cause}")
    }
}

impl LockError {
    /// The same error, about the lock `name` where it named none yet (a
    /// lock server's configuration error met while taking a lock).
    pub(crate) fn for_lock(mut self, lock: &str) -> LockError {
        if let LockError::Backend { name, .. } = &mut self
            && name.is_empty()
        {
            lock.clone_into(name);
        }
        self
    }

    /// The full name of the lock the error is about.
    pub fn lock_name(&self) -> &str {
        match self {
            LockError::InvalidName { name, .. }
            | LockError::WouldBlock { name }
            | LockError::Timeout { name, .. }
            | LockError::LockPathNotSet { name }
            | LockError::NotRegularFile { name, .. }
            | LockError::KindMismatch { name, .. }
            | LockError::InvalidOptions { name, .. }
            | LockError::Backend { name, .. }
            | LockError::Io { name, .. } => name,
        }
    }

    /// True for the errors that say "busy": [`LockError::WouldBlock`] and
    /// [`LockError::Timeout`].
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            LockError::WouldBlock { .. } | LockError::Timeout { .. }
        )
    }
}

/// Lets functions returning `std::io::Result` use fallible locks.
impl From<LockError> for io::Error {
    fn from(e: LockError) -> io::Error {
        let kind = match &e {
            LockError::InvalidName { .. } => io::ErrorKind::InvalidInput,
            LockError::WouldBlock { .. } => io::ErrorKind::WouldBlock,
            LockError::Timeout { .. } => io::ErrorKind::TimedOut,
            LockError::LockPathNotSet { .. } => io::ErrorKind::NotFound,
            LockError::NotRegularFile { .. } => io::ErrorKind::InvalidInput,
            LockError::KindMismatch { .. } | LockError::InvalidOptions { .. } => {
                io::ErrorKind::InvalidInput
            }
            LockError::Backend { .. } => io::ErrorKind::Other,
            LockError::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// Lets functions returning `Result<_, String>` use fallible locks.
impl From<LockError> for String {
    fn from(e: LockError) -> String {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_name_the_lock_or_say_there_is_none() {
        let e = LockError::Backend {
            name: String::new(),
            backend: "redis://h".into(),
            op: "configure",
            cause: "unknown scheme".into(),
        };
        assert_eq!(
            e.to_string(),
            "lock server redis://h: cannot configure: unknown scheme"
        );
        assert_eq!(
            e.for_lock("nova-x").to_string(),
            "lock \"nova-x\" on redis://h: cannot configure: unknown scheme"
        );
    }
}
