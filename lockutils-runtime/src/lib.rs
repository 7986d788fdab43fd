//! The runtime of [lockutils](https://docs.rs/lockutils): registry,
//! in-process locks, lock files, configuration and errors.
//!
//! Use it through the `lockutils` crate, which re-exports everything here
//! together with the `#[synchronized]` attribute; its documentation
//! describes the semantics.
#![warn(missing_docs)]

// Layers, top first; each names only those below it (tests/layout.rs):
// private > election > holders > builder > acquire > guard > trace > hold > order > registry >
// metrics > external > local > mounts > fork > config > name > spec > error.
mod acquire;
mod builder;
mod config;
mod election;
mod error;
mod external;
mod fork;
mod guard;
mod hold;
mod holders;
mod local;
mod metrics;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod mounts;
mod name;
mod order;
mod registry;
mod spec;
mod trace;

#[doc(hidden)]
pub mod private;

pub use builder::{Lock, lock, remove_external_lock_file};
pub use config::redact as redact_url;
pub use config::{
    BACKEND_ENV, COHORT_ENV, LOCK_PATH_ENV, cohort_limit, lock_path, process_locking,
    reset_lock_path, set_cohort_limit, set_lock_path, set_process_locking,
};
pub use election::{Election, Leadership, default_identity, election};
pub use error::{LockError, NameProblem};
pub use external::{Leader, Location, Lost, set_backend};
pub use guard::{AsyncLockGuard, LockGuard, locks_held};
pub use holders::{
    HoldKind, HoldMode, Holder, Holders, HoldersSource, holders, holders_of_file, holders_of_files,
};
#[cfg(feature = "metrics")]
pub use metrics::{
    FOLDED as METRICS_FOLDED, METRICS_NAMES_ENV, name_limit as metric_name_limit,
    set_name_limit as set_metric_name_limit,
};
pub use name::LockName;
pub use order::{LOCK_ORDER_ENV, LockOrderCheck, lock_order_check, set_lock_order_check};

#[doc(hidden)]
pub use registry::live_entries;
