//! Where `external` locks live, behind one seam: the [`Backend`] trait.
//!
//! | URL | backend |
//! |---|---|
//! | `file:///var/lib/nova/locks` | lock files in that directory (same as `set_lock_path`), [`file`] |
//! | `postgres://user:pass@host:5432/db` | PostgreSQL session advisory locks (feature `postgres`) |
//! | `etcd://host:2379` | etcd v3 leases (feature `etcd`) |
//! | `redis://host:6379/0`, `rediss://…` | Redis `SET NX PX` with renewal (feature `redis`) |
//! | `mysql://user:pass@host:3306/db` | MySQL/MariaDB `GET_LOCK` (feature `mysql`) |
//!
//! `?compat=tooz` on a server URL takes the locks OpenStack's tooz takes
//! for the same names (`tooz.rs`).
//!
//! Lock files and lock servers are peers: each implements [`Backend`], and
//! what they can and cannot do (semaphore permits, waiting until a deadline
//! on the calling thread, fencing tokens, loss) are trait methods, asked by
//! the layers above instead of special cases. [`choose`] picks the backend
//! for a lock and returns a [`Chosen`], an enum that dispatches statically
//! to lock files (the hot path pays no `dyn` call) and dynamically to a lock
//! server. Servers are made once per URL and shared, with their
//! connections, by every lock that uses the URL.
//!
//! This module knows nothing of the registry or of guards: it is given a
//! [`Target`] (the lock's name, kind and per-entry [`State`]) and hands back
//! an [`ExternalHold`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;

use crate::config::{self, redact};
use crate::error::LockError;
use crate::spec::{Kind, Mode, Wait};

#[cfg(feature = "etcd")]
mod etcd;
pub(crate) mod file;
mod lost;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "mysql")]
mod mysql_tls;
#[cfg(feature = "mysql")]
mod mysql_url;
mod pending;
#[cfg(feature = "postgres")]
mod pg_tls;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(
    feature = "postgres",
    feature = "etcd",
    feature = "redis",
    feature = "mysql"
))]
mod tooz;

pub use lost::Lost;
pub(crate) use lost::LostFlag;

pub(crate) use file::Arrival;
pub(crate) use pending::Pending;

/// The per-entry state every backend may keep with a lock name: the lock
/// files opened for it (lock servers keep theirs per URL). Opaque to the
/// registry, which only makes and stores it.
pub(crate) type State = file::Pool;

/// What a backend is asked to lock.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    /// The full lock name (prefix, separator, name).
    pub(crate) name: &'a str,
    pub(crate) kind: Kind,
    pub(crate) state: &'a State,
}

/// An inter-process lock: lock files or a lock server.
pub(crate) trait Backend {
    /// Takes `target` in `mode`. `Wait::Try`: `Ok(None)` if busy.
    /// `Wait::Block`: waits. `Wait::Until`/`Timeout`: a backend that
    /// [`waits_until_deadline`](Backend::waits_until_deadline) returns
    /// `Ok(None)` once the deadline passed; any other waits as for `Block`
    /// (the caller then waits on a helper thread it can abandon).
    ///
    /// The caller holds the in-process lock of `target`'s entry in `mode`
    /// (a `Hold` of the layer above), and keeps it while this runs; the
    /// lock-file backend counts on it (its writer's file).
    fn lock(
        &self,
        target: &Target<'_>,
        mode: Mode,
        wait: Wait,
    ) -> Result<Option<ExternalHold>, LockError>;

    /// Whether `lock` can itself stop waiting at a deadline.
    fn waits_until_deadline(&self) -> bool {
        true
    }

    /// Whether counted semaphores (`permits = N`) work here.
    fn supports_permits(&self) -> bool {
        false
    }

    /// Whether `lock` with `Wait::Try` is cheap enough for an executor
    /// thread (a system call, not a network round trip).
    fn try_is_cheap(&self) -> bool {
        false
    }
}

/// A lock held on a lock server. Dropping it without `release` must also
/// release it (or let the server do so when the session ends).
pub(crate) trait RemoteHold: Send {
    /// Releases the lock on the server.
    fn release(self: Box<Self>);

    /// Where the lock is, for messages: e.g. `postgres://host/db` + key.
    fn describe(&self) -> String;

    /// A number that grows with every acquisition of this lock, for fencing
    /// writes (etcd: the key's create revision).
    fn fencing_token(&self) -> Option<u64> {
        None
    }

    /// Whether the server may have given the lock to someone else since
    /// (a lost session or lease).
    fn is_lost(&self) -> bool {
        false
    }

    /// The flag the backend's keepalive sets when the lock is lost, for
    /// [`Lost`] futures; `None` if this hold cannot tell.
    fn lost_flag(&self) -> Option<Arc<LostFlag>> {
        None
    }
}

/// What an external lock holds: a lock file, or a lock on a server.
pub(crate) enum ExternalHold {
    File(file::FileHold),
    // Made only by the lock-server backends, which are optional features.
    #[cfg_attr(
        not(any(
            feature = "postgres",
            feature = "etcd",
            feature = "redis",
            feature = "mysql"
        )),
        allow(dead_code)
    )]
    Remote(Box<dyn RemoteHold>),
}

impl ExternalHold {
    /// A server's hold, boxed.
    #[cfg_attr(
        not(any(
            feature = "postgres",
            feature = "etcd",
            feature = "redis",
            feature = "mysql"
        )),
        allow(dead_code)
    )]
    pub(crate) fn remote(hold: impl RemoteHold + 'static) -> ExternalHold {
        ExternalHold::Remote(Box::new(hold))
    }

    /// Releases the lock (a lock file goes back to `state`'s pool).
    pub(crate) fn release(self, state: &State) {
        match self {
            ExternalHold::File(f) => f.release(state),
            ExternalHold::Remote(r) => r.release(),
        }
    }

    /// [`ExternalHold::release`] by the lock's writer (see
    /// `file::Pool::take_as_writer`).
    ///
    /// # Safety
    /// The caller holds the entry's in-process lock in exclusive mode, and
    /// the entry is a lock, not a semaphore (a writer's `Hold`).
    pub(crate) unsafe fn release_as_writer(self, state: &State) {
        match self {
            // SAFETY: the caller's promise.
            ExternalHold::File(f) => unsafe { f.release_as_writer(state) },
            ExternalHold::Remote(r) => r.release(),
        }
    }

    /// Parks a lock file's lock in `state` for the next holder in this
    /// process (cohorting; see `file`). `Err`: not parked (a server lock,
    /// or the batch is used up); release it as usual, or with
    /// [`end_batch`](ExternalHold::end_batch) when the error carries how
    /// long the batch that just ended lasted.
    pub(crate) fn park(self, state: &State) -> Result<(), (ExternalHold, Option<Duration>)> {
        match self {
            ExternalHold::File(f) => f.park(state).map_err(|(f, e)| (ExternalHold::File(f), e)),
            remote @ ExternalHold::Remote(_) => Err((remote, None)),
        }
    }

    /// Releases a lock file at the end of a batch of handoffs that lasted
    /// `batch`, leaving other processes a turn (see `file`).
    pub(crate) fn end_batch(self, state: &State, batch: Duration) {
        match self {
            ExternalHold::File(f) => f.end_batch(state, batch),
            ExternalHold::Remote(r) => r.release(),
        }
    }

    /// Releases and closes (after the file was removed).
    pub(crate) fn close(self) {
        match self {
            ExternalHold::File(f) => f.close(),
            ExternalHold::Remote(r) => r.release(),
        }
    }

    /// Where the lock is held. `name` is the full lock name.
    pub(crate) fn location(&self, name: &str) -> Location {
        match self {
            ExternalHold::File(f) => Location::File(f.path(name)),
            ExternalHold::Remote(r) => Location::Server(r.describe()),
        }
    }

    /// Takes flock(2) on the lock file too (lock files only). `Ok(false)`:
    /// busy; `name` is the full lock name.
    pub(crate) fn flock(&mut self, name: &str, mode: Mode, block: bool) -> Result<bool, LockError> {
        match self {
            ExternalHold::File(f) => f.flock(name, mode, block),
            ExternalHold::Remote(_) => Err(LockError::InvalidOptions {
                name: name.to_owned(),
                reason: "flock locks lock files; this lock is on a lock server",
            }),
        }
    }

    /// The open lock file, for a lock on lock files.
    #[cfg(unix)]
    pub(crate) fn file(&self) -> Option<&std::fs::File> {
        match self {
            ExternalHold::File(f) => Some(f.file()),
            ExternalHold::Remote(_) => None,
        }
    }

    /// A token that grows with every acquisition, where the backend has one.
    pub(crate) fn fencing_token(&self) -> Option<u64> {
        match self {
            ExternalHold::File(_) => None,
            ExternalHold::Remote(r) => r.fencing_token(),
        }
    }

    /// Whether a server lock may have been given away since. Lock files
    /// cannot be lost this way.
    pub(crate) fn is_lost(&self) -> bool {
        match self {
            ExternalHold::File(_) => false,
            ExternalHold::Remote(r) => r.is_lost(),
        }
    }

    /// The flag a server lock's keepalive sets on loss.
    pub(crate) fn lost_flag(&self) -> Option<Arc<LostFlag>> {
        match self {
            ExternalHold::File(_) => None,
            ExternalHold::Remote(r) => r.lost_flag(),
        }
    }
}

/// Where an external lock is held, as [`LockGuard::location`](crate::LockGuard::location)
/// reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A lock file at this path.
    File(PathBuf),
    /// A lock on a lock server: its URL (password removed) and key.
    Server(String),
}

impl Location {
    /// The lock file's path, for a lock file.
    pub fn as_file(&self) -> Option<&Path> {
        match self {
            Location::File(p) => Some(p),
            Location::Server(_) => None,
        }
    }

    /// The lock file's path, for a lock file.
    pub fn into_file(self) -> Option<PathBuf> {
        match self {
            Location::File(p) => Some(p),
            Location::Server(_) => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Server(s) => f.write_str(s),
        }
    }
}

/// Where a lock asks to live.
#[derive(Clone, Copy)]
pub(crate) enum Dir<'a> {
    /// Lock files in the lock's own `lock_path`.
    Explicit(&'a Path),
    /// The lock server at this URL (the lock's own `backend`).
    Backend(&'a str),
    /// The process configuration: the configured lock server if any, else
    /// lock files in the configured lock path.
    Configured,
}

impl<'a> Dir<'a> {
    /// Where a lock with these options lives: its own `lock_path` wins
    /// (lock files), then its own `backend`, else the configuration.
    pub(crate) fn from_options(lock_path: Option<&'a Path>, backend: Option<&'a str>) -> Dir<'a> {
        match (lock_path, backend) {
            (Some(p), _) => Dir::Explicit(p),
            (None, Some(url)) => Dir::Backend(url),
            (None, None) => Dir::Configured,
        }
    }
}

/// For a holder of the in-process lock that wants an external lock in
/// `dir`: the lock file a releaser parked (cohorting), if it is one this
/// acquisition would lock. A parked file it cannot use is released.
#[inline]
pub(crate) fn take_parked(state: &State, dir: Dir<'_>, name: &str) -> Option<ExternalHold> {
    if !state.is_parked() {
        return None;
    }
    take_parked_slow(state, dir, name)
}

#[cold]
#[inline(never)]
fn take_parked_slow(state: &State, dir: Dir<'_>, name: &str) -> Option<ExternalHold> {
    let files = match choose(dir, name) {
        Ok(Chosen::File(files)) => Some(files),
        _ => None,
    };
    state.take_parked(files).map(ExternalHold::File)
}

/// The backend chosen for one acquisition.
pub(crate) enum Chosen<'a> {
    File(file::Files<'a>),
    Server(Arc<dyn Backend + Send + Sync>),
}

impl Backend for Chosen<'_> {
    #[inline]
    fn lock(
        &self,
        target: &Target<'_>,
        mode: Mode,
        wait: Wait,
    ) -> Result<Option<ExternalHold>, LockError> {
        match self {
            Chosen::File(f) => f.lock(target, mode, wait),
            Chosen::Server(s) => s.lock(target, mode, wait),
        }
    }

    fn waits_until_deadline(&self) -> bool {
        match self {
            Chosen::File(f) => f.waits_until_deadline(),
            Chosen::Server(s) => s.waits_until_deadline(),
        }
    }

    fn supports_permits(&self) -> bool {
        match self {
            Chosen::File(f) => f.supports_permits(),
            Chosen::Server(s) => s.supports_permits(),
        }
    }

    fn try_is_cheap(&self) -> bool {
        match self {
            Chosen::File(f) => f.try_is_cheap(),
            Chosen::Server(s) => s.try_is_cheap(),
        }
    }
}

impl Chosen<'_> {
    /// Starts waiting for `target` on a helper thread, for a caller that
    /// must not block or must stop at a deadline: it keeps its in-process
    /// lock, and dropping the [`Pending`] gives up the wait (see
    /// `pending`). Lock files stop at once; a lock server waits on until
    /// its own deadline (`wait`) and then lets go of what it got.
    pub(crate) fn start_wait(
        &self,
        target: &Target<'_>,
        mode: Mode,
        wait: Wait,
    ) -> Result<Pending, LockError> {
        match self {
            Chosen::File(f) => f.start_wait(target, mode),
            Chosen::Server(server) => {
                let (server, name, kind) = (server.clone(), target.name.to_owned(), target.kind);
                Pending::spawn(target.name, false, move |_| {
                    // Servers keep no per-entry state.
                    static NONE: LazyLock<State> = LazyLock::new(State::new);
                    let target = Target {
                        name: &name,
                        kind,
                        state: &NONE,
                    };
                    server.lock(&target, mode, wait)
                })
            }
        }
    }
}

/// The backend for `dir`, for the lock `name` (named in errors).
#[inline]
pub(crate) fn choose<'a>(dir: Dir<'a>, name: &str) -> Result<Chosen<'a>, LockError> {
    let server = match dir {
        Dir::Explicit(p) => return Ok(Chosen::File(file::Files::Explicit(p))),
        Dir::Backend(url) => get(url),
        Dir::Configured => match config::with_backend_url(get) {
            None => return Ok(Chosen::File(file::Files::Configured)),
            Some(r) => r,
        },
    };
    server.map(Chosen::Server).map_err(|e| e.for_lock(name))
}

/// Chooses where external locks without their own `lock_path` live:
/// `file:///dir` (lock files in `dir`, like [`set_lock_path`](crate::set_lock_path)),
/// `postgres://user:password@host:port/db`, `etcd://host:port`,
/// `redis://host:port/0` or `mysql://user:password@host:port/db`; server
/// URLs take `?compat=tooz` for the locks OpenStack's tooz takes.
///
/// A lock server is contacted when first used; errors in the URL itself
/// (unknown scheme, a backend this build lacks) are reported here.
pub fn set_backend(url: &str) -> Result<(), LockError> {
    if !config::is_file_url(url) {
        get(url)?;
    }
    config::set_backend_url(url);
    Ok(())
}

type Server = Arc<dyn Backend + Send + Sync>;

static BACKENDS: LazyLock<Mutex<HashMap<String, Server>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The backend for `url`, made on first use and shared afterwards.
pub(crate) fn get(url: &str) -> Result<Server, LockError> {
    let mut map = BACKENDS.lock();
    if let Some(b) = map.get(url) {
        return Ok(b.clone());
    }
    let b = make(url)?;
    map.insert(url.to_owned(), b.clone());
    Ok(b)
}

fn make(url: &str) -> Result<Server, LockError> {
    let bad = |reason: String| LockError::Backend {
        name: String::new(),
        backend: redact(url),
        op: "configure",
        cause: reason,
    };
    match config::scheme(url).as_deref() {
        #[cfg(feature = "postgres")]
        Some("postgres" | "postgresql") => Ok(Arc::new(postgres::Postgres::new(url)?)),
        #[cfg(not(feature = "postgres"))]
        Some("postgres" | "postgresql") => Err(bad(
            "this build of lockutils has no PostgreSQL backend: enable the `postgres` feature"
                .into(),
        )),
        #[cfg(feature = "etcd")]
        Some("etcd") => Ok(Arc::new(etcd::Etcd::new(url)?)),
        #[cfg(not(feature = "etcd"))]
        Some("etcd") => Err(bad(
            "this build of lockutils has no etcd backend: enable the `etcd` feature".into(),
        )),
        #[cfg(feature = "redis")]
        Some("redis" | "rediss") => Ok(Arc::new(redis::Redis::new(url)?)),
        #[cfg(not(feature = "redis"))]
        Some("redis" | "rediss") => Err(bad(
            "this build of lockutils has no Redis backend: enable the `redis` feature".into(),
        )),
        #[cfg(feature = "mysql")]
        Some("mysql") => Ok(Arc::new(mysql::Mysql::new(url)?)),
        #[cfg(not(feature = "mysql"))]
        Some("mysql") => Err(bad(
            "this build of lockutils has no MySQL backend: enable the `mysql` feature".into(),
        )),
        Some("file") => Err(bad(
            "file:// is not a lock server; it sets the lock path".into()
        )),
        Some(other) => Err(bad(format!(
            "unknown scheme {other:?}: expected file://, postgres://, etcd://, redis:// or mysql://"
        ))),
        None => Err(bad(
            "not a URL: expected file://, postgres://, etcd://, redis:// or mysql://".into(),
        )),
    }
}

/// A `ttl=` URL parameter (etcd, Redis): whole seconds from 1 to a day.
#[cfg(any(feature = "etcd", feature = "redis"))]
fn ttl_seconds(v: &str) -> Result<u64, String> {
    v.parse()
        .ok()
        .filter(|t| (1..=86_400).contains(t))
        .ok_or_else(|| format!("ttl={v:?}: expected a number of seconds from 1 to 86400"))
}

/// An error and its causes, each once: `a: b: c`.
#[cfg(any(
    feature = "postgres",
    feature = "etcd",
    feature = "redis",
    feature = "mysql"
))]
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Runs `f`, which blocks on a client's own tokio runtime: on this thread
/// normally, on a scoped thread when called from inside an async runtime
/// (a synchronous lock taken or dropped in async code), where blocking on
/// another runtime would panic.
#[cfg(any(feature = "postgres", feature = "etcd", feature = "mysql"))]
fn outside_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_errors_naming_the_url() {
        let e = make("memcached://u:pw@h").err().unwrap().to_string();
        assert!(e.contains("memcached://u:***@h"), "{e}");
        assert!(e.contains("unknown scheme"), "{e}");
        assert!(make("nonsense").is_err());
    }
}
