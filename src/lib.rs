//! Named locks for Rust services: inside one process, across processes on
//! one host through lock files that interoperate with OpenStack's
//! oslo.concurrency, with a `#[synchronized]` attribute in the style of
//! oslo's `@synchronized` decorator.
//!
//! ```
//! use lockutils::synchronized;
//!
//! #[synchronized("iptables", prefix = "nova-")]
//! fn apply_rules(rules: &[&str]) -> usize {
//!     // Runs only while this thread holds the lock "nova-iptables".
//!     assert_eq!(lockutils::locks_held(), ["nova-iptables"]);
//!     rules.len()
//! }
//!
//! assert_eq!(apply_rules(&["-A INPUT -j ACCEPT"]), 1);
//! ```
//!
//! Across processes, add `external`: the body then also holds the lock
//! file `<lock path>/nova-iptables`, the very file oslo.concurrency's
//! `lockutils.lock("iptables", "nova-", external=True)` locks.
//!
//! ```
//! # fn main() -> Result<(), lockutils::LockError> {
//! # let dir = tempfile::tempdir().unwrap();
//! lockutils::set_lock_path(dir.path());
//!
//! #[lockutils::synchronized("iptables", prefix = "nova-", external)]
//! fn apply_rules() -> Result<(), lockutils::LockError> {
//!     Ok(()) // no other process runs this (or oslo's equivalent) now
//! }
//! apply_rules()?;
//! assert!(dir.path().join("nova-iptables").exists());
//! # Ok(()) }
//! ```
//!
//! # What is locked, and in what order
//!
//! * A lock is known by its *full name*: the prefix, a `-` unless the prefix
//!   is empty or already ends in `-`, and the name (`"nova-" + "iptables"`).
//!   Functions naming the same full name exclude each other; different names
//!   do not.
//! * The in-process lock is taken first, then (for `external`) the lock file;
//!   they are released in reverse order on every exit path, early `return`,
//!   `?` and panics included.
//! * There is no poisoning: a panic inside the body releases the lock, and
//!   the next caller runs normally.
//! * Locks are not re-entrant. A thread that would wait for a lock it
//!   already holds panics with a message naming the lock, instead of
//!   deadlocking silently as oslo does. Async tasks that share a worker
//!   thread are different tasks: they simply wait for each other.
//! * The guard cannot be reached from the body.
//!
//! # Lock files
//!
//! * `<lock path>/<prefix>[-]<name>`, with `/` in the name replaced by `_`:
//!   byte for byte oslo.concurrency's file name (so `a/b` and `a_b` share a
//!   file, as in oslo). Names that cannot be a file name (empty, NUL, `.`,
//!   `..`, over 255 bytes with the prefix) are [`LockError::InvalidName`].
//! * Lock path: the lock's `lock_path`, else [`set_lock_path`], else
//!   `$LOCKUTILS_LOCK_PATH`, else `$OSLO_LOCK_PATH`, else
//!   [`LockError::LockPathNotSet`]. There is deliberately no temp-dir
//!   default. Missing directories are created (mode 0755 less umask).
//! * Linux open-file-description locks (`F_OFD_SETLKW`) on the whole file:
//!   they exclude threads and descriptors within one process, and they
//!   conflict with the POSIX `lockf` locks Python's oslo.concurrency and
//!   fasteners take. Waiting happens in the kernel, not in a sleep loop.
//! * Files are opened with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`, created
//!   with mode 0644 (less umask), never truncated or written. A symlink,
//!   FIFO, directory or other non-regular file at the path is refused
//!   ([`LockError::NotRegularFile`]) and left untouched.
//! * The kernel drops the lock when the holder dies, `kill -9` included, and
//!   child processes never inherit it.
//! * Files are kept after release (deleting them would split waiters across
//!   inodes); [`remove_external_lock_file`] removes one safely.
//! * [`set_process_locking(false)`](set_process_locking) turns `external`
//!   into a no-op, like oslo's `disable_process_locking`.
//!
//! # Failing to get a lock
//!
//! The body never runs without the locks it asked for. If acquiring fails
//! (no lock path, unwritable directory, planted symlink, busy with
//! `blocking = false`, `timeout` passed), a function returning
//! `Result<_, E>` with `E: From<LockError>` returns the error (`io::Error`,
//! `String`, `Box<dyn Error>` and `anyhow::Error` all qualify); any other
//! function panics with a message naming the lock, the path and the cause.
//!
//! # Without the macro
//!
//! ```
//! # fn main() -> Result<(), lockutils::LockError> {
//! use std::time::Duration;
//! let guard = lockutils::lock("resize")
//!     .prefix("nova-")
//!     .timeout(Duration::from_millis(250))
//!     .acquire()?;
//! assert_eq!(guard.name(), "nova-resize");
//! drop(guard);
//! # Ok(()) }
//! ```
//!
//! [`Lock::acquire_async`] works the same way on any executor.
//!
//! # Fair locks, semaphores, reader/writer locks
//!
//! ```
//! use lockutils::synchronized;
//!
//! #[synchronized("uploads", permits = 2)] // at most 2 at once
//! fn upload() -> usize { lockutils::locks_held().len() }
//!
//! #[synchronized("catalog", shared)] // a reader; without `shared`, a writer
//! fn read_catalog() {}
//!
//! #[synchronized("db", fair)] // waiters served in arrival order
//! fn migrate() {}
//! # assert_eq!(upload(), 1); read_catalog(); migrate();
//! ```
//!
//! With `external` these work across processes too: a semaphore takes one
//! byte-range lock per permit in the lock file, a reader a whole-file
//! `F_RDLCK` (what fasteners' reader/writer lock takes). Every user of a
//! name must ask for the same kind (fair or not, the same number of
//! permits), or get [`LockError::KindMismatch`]. In-process, a waiting
//! writer keeps new readers out, so readers cannot starve writers. The
//! run-time API has [`Lock::fair`], [`Lock::permits`] and [`Lock::shared`].
//!
//! # Lock servers
//!
//! `external` locks go to lock files unless a lock server is configured:
//! [`set_backend`]`("postgres://user@db/locks")` or `$LOCKUTILS_BACKEND`
//! (PostgreSQL session advisory locks with the `postgres` feature; etcd
//! leases with `etcd`), or per lock with [`Lock::backend`]. User code does
//! not change. A guard held on a lock server can tell whether the server may
//! have given the lock away since ([`LockGuard::is_lost`]) and, on etcd,
//! offers a fencing token ([`LockGuard::fencing_token`]).
//!
//! # Prefix aliases
//!
//! oslo's `synchronized_with_prefix("nova-")` gives a project its own
//! decorator. Here a small proc-macro crate of your own does it (the whole
//! file):
//!
//! ```ignore
//! // nova-macros/src/lib.rs, a crate with `proc-macro = true`
//! lockutils_codegen::synchronized_with_prefix!(pub fn nova_synchronized, "nova-");
//! ```
//!
//! and then `#[nova_macros::nova_synchronized("mylock", external)]` takes
//! every argument `#[synchronized]` takes. Without an extra crate, share a
//! `const PREFIX: &str = "nova-";` and write `prefix = PREFIX`.
//!
//! # Tracing
//!
//! Acquisitions and releases are `debug` events with target `lockutils`
//! and fields `lock`, `function`, `lock_path`, `waited` / `held` (seconds),
//! in the spirit of oslo's `Lock "x" acquired by "f" :: waited 0.000s`.
#![warn(missing_docs)]

pub use lockutils_macros::synchronized;
pub use lockutils_runtime::{
    AsyncLockGuard, BACKEND_ENV, LOCK_PATH_ENV, Location, Lock, LockError, LockGuard, LockName,
    Lost, NameProblem, lock, lock_path, locks_held, process_locking, redact_url,
    remove_external_lock_file, reset_lock_path, set_backend, set_lock_path, set_process_locking,
};

/// What `#[synchronized]` expands to. Not a stable API. Its name carries
/// the version (see `lockutils-codegen`), and must match the codegen's.
#[doc(hidden)]
pub mod __private_v0_1 {
    pub use lockutils_runtime::live_entries;
    pub use lockutils_runtime::private::*;
}
