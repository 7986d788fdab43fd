//! Named locks for Rust services: inside one process, across processes on
//! one host through lock files that interoperate with OpenStack's
//! oslo.concurrency, and across hosts through PostgreSQL, etcd, Redis or
//! MySQL, with a `#[synchronized]` attribute in the style of oslo's
//! `@synchronized` decorator.
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
//! lockutils::config::set_lock_path(dir.path()); // or $LOCKUTILS_LOCK_PATH, $OSLO_LOCK_PATH
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
//! # What is here
//!
//! * The attribute [`synchronized`] (its page lists every argument), and
//!   [`lock`], which builds a [`Lock`] to take at run time; [`LockName`]
//!   for names checked at compile time; [`remove_external_lock_file`].
//! * Guards: [`LockGuard`] and [`AsyncLockGuard`] (the lock is held until
//!   they drop), [`Lost`] (a lock server's loss, as a future), [`Location`]
//!   (where an external lock lives), [`locks_held`].
//! * Errors: [`LockError`], with [`NameProblem`] for names.
//! * Who holds a lock file: [`holders`], [`holders_of_file`],
//!   [`holders_of_files`] and what they return.
//! * Elections: [`election`] builds an [`Election`]; a campaign wins a
//!   [`Leadership`]; [`Election::leader`] names the [`Leader`] from any
//!   process.
//! * [`config`]: process-wide settings (lock path, process locking, lock
//!   server, handoff batches, the lock-order check, metrics).
//! * [`guide`]: how lockutils behaves at the edges: giving up, fork,
//!   shared files, platforms, lock servers, lock-order checking, the CLI.
//!
//! # What is locked, and in what order
//!
//! * A lock is known by its *full name*: the prefix, a `-` unless the prefix
//!   is empty or already ends in `-`, and the name (`"nova-" + "iptables"`).
//!   Functions naming the same full name exclude each other; different names
//!   do not.
//! * The in-process lock is taken first, then (for `external`) the lock file
//!   or the lock server's lock; they are released in reverse order on every
//!   exit path, early `return`, `?` and panics included.
//! * There is no poisoning: a panic inside the body releases the lock, and
//!   the next caller runs normally.
//! * Locks are not re-entrant. A thread that would wait for a lock it
//!   already holds panics with a message naming the lock, instead of
//!   deadlocking silently as oslo does. Async tasks that share a worker
//!   thread are different tasks: they simply wait for each other.
//! * `async fn` bodies hold the lock across their awaits; the executor
//!   thread never blocks on it.
//!
//! # Failing to get a lock
//!
//! The body never runs without the locks it asked for. If acquiring fails
//! (no lock path, unwritable directory, planted symlink, busy with
//! `blocking = false`, `timeout` passed), a function returning
//! `Result<_, E>` with `E: From<LockError>` returns the error (`io::Error`,
//! `String`, `Box<dyn Error>` and `anyhow::Error` all qualify); any other
//! function panics with a message naming the lock, the path and the cause.
//! Giving up gives everything back at once, with no thread, descriptor or
//! lock left behind: see [`guide::giving_up`].
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
//! With `external` these work across processes too (see
//! [`guide::shared_files`]). Every user of a name must ask for the same
//! kind (fair or not, the same number of permits), or get
//! [`LockError::KindMismatch`]. In-process, a waiting writer keeps new
//! readers out, so readers cannot starve writers. The run-time API has
//! [`Lock::fair`], [`Lock::permits`] and [`Lock::shared`].
//!
//! # Lock servers
//!
//! `external` locks go to lock files unless a lock server is configured
//! with [`config::set_backend`] or `$LOCKUTILS_BACKEND`, or given per lock
//! with [`Lock::backend`]: PostgreSQL advisory locks (`postgres://`,
//! feature `postgres`), etcd leases (`etcd://`, feature `etcd`), Redis keys
//! (`redis://`, `rediss://`, feature `redis`), MySQL and MariaDB `GET_LOCK`
//! (`mysql://`, feature `mysql`). The code that takes the locks does not
//! change. A guard on a lock server tells whether the server may have
//! given the lock away ([`LockGuard::is_lost`], [`LockGuard::lost`]) and
//! carries a fencing token where the server has one
//! ([`LockGuard::fencing_token`]). `?compat=tooz` takes the very lock
//! OpenStack's tooz takes for the same name. See [`guide::lock_servers`].
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
//! # Lock-order checking
//!
//! The first acquisition that would close a cycle in the order locks are
//! taken ("held A while taking B", then B while taking A, or longer) is
//! reported before it waits, naming every lock of the cycle and the
//! function that took each: a panic by default in debug builds, a warning
//! or nothing as [`config::set_lock_order_check`] says. See
//! [`guide::lock_order`].
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
//! # Tracing and metrics
//!
//! Acquisitions and releases are `debug` events with target `lockutils`
//! and fields `lock`, `function`, `lock_path`, `waited` / `held` (seconds),
//! in the spirit of oslo's `Lock "x" acquired by "f" :: waited 0.000s`.
//!
//! With the feature `metrics`, every acquisition is reported through the
//! [`metrics`](https://docs.rs/metrics) facade to whatever exporter the
//! application installs (Prometheus, StatsD, OpenTelemetry), labelled
//! `lock="<full name>"`: `lockutils_acquisitions_total`,
//! `lockutils_contended_acquisitions_total` (the lock was taken when first
//! tried), and the histograms `lockutils_wait_seconds` and
//! `lockutils_hold_seconds`. At most 256 names (see
//! `config::set_metric_name_limit`) get series of their own; later names
//! share `lock="(other)"`. Without the feature nothing is measured; with
//! it, every acquisition goes the full way (the attribute's inline fast
//! path steps aside), reads the clock once (twice if it waited) and its
//! release once (`examples/prometheus.rs` serves a scrape).
#![warn(missing_docs)]

pub mod guide;

pub use lockutils_macros::synchronized;
pub use lockutils_runtime::{
    AsyncLockGuard, Location, Lock, LockError, LockGuard, LockName, Lost, NameProblem, lock,
    locks_held, remove_external_lock_file,
};
pub use lockutils_runtime::{Election, Leader, Leadership, default_identity, election};
pub use lockutils_runtime::{
    HoldKind, HoldMode, Holder, Holders, HoldersSource, holders, holders_of_file, holders_of_files,
};

pub mod config {
    //! Process-wide settings. Each has an environment variable, read once at
    //! first use, and a setter that wins over it from then on.
    //!
    //! | setting | setter | environment | default |
    //! |---|---|---|---|
    //! | where lock files live | [`set_lock_path`], [`reset_lock_path`] | `LOCKUTILS_LOCK_PATH`, then `OSLO_LOCK_PATH` | none: an `external` lock fails with [`LockError::LockPathNotSet`](crate::LockError::LockPathNotSet) |
    //! | whether `external` takes its file or server lock | [`set_process_locking`] | | on |
    //! | the lock server | [`set_backend`] | `LOCKUTILS_BACKEND` | lock files |
    //! | batches of handoffs between a process's threads | [`set_cohort_limit`] | `LOCKUTILS_COHORT` | 1,024 handoffs or 1 ms |
    //! | the lock-order check | [`set_lock_order_check`] | `LOCKUTILS_LOCK_ORDER` | `Panic` with debug assertions, else `Off` |
    //! | names with metrics of their own (feature `metrics`) | `set_metric_name_limit` | `LOCKUTILS_METRICS_NAMES` | 256 |
    //!
    //! ```
    //! # fn main() -> Result<(), lockutils::LockError> {
    //! use lockutils::config;
    //! # let dir = tempfile::tempdir().unwrap();
    //! config::set_lock_path(dir.path());
    //! assert_eq!(config::lock_path().as_deref(), Some(dir.path()));
    //! config::set_lock_order_check(config::LockOrderCheck::Warn);
    //! # config::set_lock_order_check(config::LockOrderCheck::Panic);
    //! # Ok(()) }
    //! ```

    pub use lockutils_runtime::{
        BACKEND_ENV, COHORT_ENV, LOCK_ORDER_ENV, LOCK_PATH_ENV, LockOrderCheck, cohort_limit,
        lock_order_check, lock_path, process_locking, redact_url, reset_lock_path, set_backend,
        set_cohort_limit, set_lock_order_check, set_lock_path, set_process_locking,
    };
    #[cfg(feature = "metrics")]
    pub use lockutils_runtime::{
        METRICS_FOLDED, METRICS_NAMES_ENV, metric_name_limit, set_metric_name_limit,
    };
}

/// What `#[synchronized]` expands to. Not a stable API. Its name carries
/// the version (see `lockutils-codegen`), and must match the codegen's.
#[doc(hidden)]
pub mod __private_v0_1 {
    pub use lockutils_runtime::live_entries;
    pub use lockutils_runtime::private::*;
}
