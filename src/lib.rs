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
//!   file, as in oslo, and are one lock in-process too). Names that cannot be a file name (empty, NUL, `.`,
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
//! * The kernel drops the lock when the holder dies, `kill -9` included.
//!   Children started with `exec` never inherit it; a child forked without
//!   `exec` never locks through, nor unlocks, a descriptor it inherited.
//! * Where only classic per-process `fcntl` locks exist (or OFD locks are
//!   refused), one descriptor per file is shared by the process's holders,
//!   readers are counted and semaphore slots tracked in-process, so shared
//!   and counted locks stay correct.
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
//! Giving up gives everything back at once: after a timeout, a would-block,
//! an error or a dropped `acquire_async()` future, the in-process lock is
//! free the next instant and no helper thread or descriptor is left behind
//! (a helper's kernel wait is interrupted and joined). Async acquisitions
//! never make a lock-server round trip on the executor thread.
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
//! leases with `etcd`; Redis keys with `redis`; MySQL/MariaDB `GET_LOCK`
//! with `mysql`), or per lock with [`Lock::backend`]. User code does not
//! change. A guard held on a lock server can tell whether the server may
//! have given the lock away since ([`LockGuard::is_lost`]) and offers a
//! fencing token where the server has one ([`LockGuard::fencing_token`]).
//! `?compat=tooz` in a server's URL takes the very lock OpenStack's tooz
//! takes for the same name, so Python services using tooz and Rust ones
//! exclude each other.
//!
//! # Lock-order checking
//!
//! The first acquisition that would close a cycle in the order locks are
//! taken ("held A while taking B", then B while taking A, or longer) is
//! reported before it waits, naming every lock of the cycle and the
//! function or call site that took each. [`set_lock_order_check`] or
//! `$LOCKUTILS_LOCK_ORDER` choose [`LockOrderCheck::Panic`] (the default with
//! `debug_assertions`), [`LockOrderCheck::Warn`] (a `tracing` warning once
//! per cycle) or [`LockOrderCheck::Off`] (the release default: one relaxed
//! atomic load per acquisition).
//!
//! ```
//! use lockutils::{LockOrderCheck, synchronized};
//!
//! #[synchronized("iptables")]
//! fn apply_rules() { refresh_instance() }
//! #[synchronized("instance")]
//! fn refresh_instance() {}
//!
//! lockutils::set_lock_order_check(LockOrderCheck::Panic);
//! apply_rules(); // iptables, then instance
//! let inverted = std::thread::spawn(|| {
//!     let _instance = lockutils::lock("instance").acquire().unwrap();
//!     let _iptables = lockutils::lock("iptables").acquire(); // panics here
//! });
//! let report = inverted.join().unwrap_err();
//! let report = report.downcast_ref::<String>().unwrap();
//! assert!(report.contains("lock order cycle (possible deadlock) among 2 locks"));
//! assert!(report.contains("\"iptables\" taken by") && report.contains("::apply_rules"));
//! ```
//!
//! A lock counts as held by the thread that took it synchronously, or by
//! the async task (known by its waker; with a no-op waker, the polling
//! thread) that took it with
//! [`Lock::acquire_async`] or an `async fn`. Shared, counted, fair and
//! external locks all take part; try-locks (`blocking = false`) add no
//! edge, since they cannot deadlock. Branches of one `join!` share their
//! task. The graph keeps at most 4,096 names (least recently used ones are
//! forgotten), so dynamic names stay bounded.
//!
//! # Leader election
//!
//! [`election`]`(name)` elects one leader among candidates on any backend
//! (lock files on one host, or a lock server across hosts): the leader is
//! whoever holds the exclusive lock `name`, and its identity is kept
//! beside the lock, where [`Election::leader`] reads it from any process.
//!
//! ```
//! # fn main() -> Result<(), lockutils::LockError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let lead = lockutils::election("scheduler")
//!     .identity("host-a:4242") // default: "<hostname>:<pid>"
//!     .lock_path(dir.path()) // or .backend("etcd://10.0.0.5:2379"), or $LOCKUTILS_BACKEND
//!     .campaign()?; // blocks until elected; campaign_async().await on an executor
//! let now = lockutils::election("scheduler").lock_path(dir.path()).leader()?;
//! assert_eq!(now.unwrap().identity, "host-a:4242");
//! let _token = lead.fencing_token(); // grows with every new leader
//! drop(lead); // resigns
//! # Ok(()) }
//! ```
//!
//! [`Leadership::lost`] and [`Leadership::is_lost`] tell a lock server's
//! loss as [`LockGuard::lost`] does.
//!
//! # Metrics
//!
//! With the feature `metrics`, every acquisition is reported through the
//! [`metrics`](https://docs.rs/metrics) facade to whatever exporter the
//! application installs (Prometheus, StatsD, OpenTelemetry), labelled
//! `lock="<full name>"`: `lockutils_acquisitions_total`,
//! `lockutils_contended_acquisitions_total` (the lock was taken when first
//! tried), and the histograms `lockutils_wait_seconds` and
//! `lockutils_hold_seconds`. At most [`metric_name_limit`] names (256
//! unless [`set_metric_name_limit`] or `$LOCKUTILS_METRICS_NAMES` say
//! otherwise) get series of their own; later names share
//! `lock="(other)"`. Without the feature nothing is measured, and the
//! inline fast path of `#[synchronized]` stays as it is; with it, every
//! acquisition goes the full way, reads the clock once (twice if it
//! waited) and its release once (`examples/prometheus.rs` serves a
//! scrape).
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
    AsyncLockGuard, BACKEND_ENV, COHORT_ENV, LOCK_ORDER_ENV, LOCK_PATH_ENV, Location, Lock,
    LockError, LockGuard, LockName, LockOrderCheck, Lost, NameProblem, cohort_limit, lock,
    lock_order_check, lock_path, locks_held, process_locking, redact_url,
    remove_external_lock_file, reset_lock_path, set_backend, set_cohort_limit,
    set_lock_order_check, set_lock_path, set_process_locking,
};
pub use lockutils_runtime::{Election, Leader, Leadership, default_identity, election};
pub use lockutils_runtime::{
    HoldKind, HoldMode, Holder, Holders, HoldersSource, holders, holders_of_file, holders_of_files,
};
#[cfg(feature = "metrics")]
pub use lockutils_runtime::{
    METRICS_FOLDED, METRICS_NAMES_ENV, metric_name_limit, set_metric_name_limit,
};

/// What `#[synchronized]` expands to. Not a stable API. Its name carries
/// the version (see `lockutils-codegen`), and must match the codegen's.
#[doc(hidden)]
pub mod __private_v0_1 {
    pub use lockutils_runtime::live_entries;
    pub use lockutils_runtime::private::*;
}
