//! The runtime of [lockutils](https://docs.rs/lockutils): registry,
//! in-process locks, lock files, configuration and errors.
//!
//! Use it through the `lockutils` crate, which re-exports everything here
//! together with the `#[synchronized]` attribute; its documentation
//! describes the semantics.
#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod external;
mod fifo;
mod file_lock;
mod guard;
mod hold;
mod local;
mod lock;
mod name;
mod registry;
mod semaphore;
mod timer;
mod trace;

#[doc(hidden)]
pub mod private;

pub use backend::Lost;
pub use backend::redact as redact_url;
pub use config::{
    BACKEND_ENV, LOCK_PATH_ENV, lock_path, process_locking, reset_lock_path, set_backend,
    set_lock_path, set_process_locking,
};
pub use error::{LockError, NameProblem};
pub use guard::{AsyncLockGuard, LockGuard, locks_held};
pub use lock::{Lock, lock, remove_external_lock_file};
pub use name::LockName;

#[doc(hidden)]
pub use registry::live_entries;
