//! How lockutils behaves where it matters: pages of documentation only,
//! no items. The crate root describes the everyday use; these pages
//! describe the edges.
//!
//! * [`giving_up`]: timeouts, non-blocking tries and dropped futures give
//!   everything back at once; how a lock-file wait is called off without
//!   a signal.
//! * [`fork`]: what a child forked without `exec` inherits (nothing it
//!   can lock or unlock by mistake).
//! * [`shared_files`]: the lock file, oslo.concurrency's and fasteners'
//!   locks on it, `flock(1)` and py-filelock users, and handoffs between
//!   the threads of one process.
//! * [`platforms`]: Linux's open-file-description locks, classic `fcntl`
//!   locks elsewhere, Windows, file systems, and who holds a lock.
//! * [`lock_servers`]: PostgreSQL, etcd, Redis and MySQL; TLS; lost locks
//!   and fencing tokens; OpenStack tooz's locks.
//! * [`elections`]: one leader among candidates, on lock files or a lock
//!   server, and who leads.
//! * [`lock_order`]: the check that reports an inverted lock order before
//!   it deadlocks.
//! * [`cli`]: the `lockutils` command.

#[doc = include_str!("guide/giving_up.md")]
pub mod giving_up {}

#[doc = include_str!("guide/fork.md")]
pub mod fork {}

#[doc = include_str!("guide/shared_files.md")]
pub mod shared_files {}

#[doc = include_str!("guide/platforms.md")]
pub mod platforms {}

#[doc = include_str!("guide/lock_servers.md")]
pub mod lock_servers {}

#[doc = include_str!("guide/elections.md")]
pub mod elections {}

#[doc = include_str!("guide/lock_order.md")]
pub mod lock_order {}

#[doc = include_str!("guide/cli.md")]
pub mod cli {}
