//! Where `external` locks live: lock files, or a lock server chosen by URL.
//!
//! | URL | backend |
//! |---|---|
//! | `file:///var/lib/nova/locks` | lock files in that directory (same as `set_lock_path`), [`mod@file`] |
//! | `postgres://user:pass@host:5432/db` | PostgreSQL session advisory locks (feature `postgres`) |
//! | `etcd://host:2379` | etcd v3 leases (feature `etcd`) |
//! | `redis://host:6379/0`, `rediss://…` | Redis `SET NX PX` with renewal (feature `redis`) |
//! | `mysql://user:pass@host:3306/db` | MySQL/MariaDB `GET_LOCK` (feature `mysql`) |
//!
//! `?compat=tooz` on a server URL takes the locks OpenStack's tooz takes
//! for the same names (`tooz.rs`).
//!
//! Invariants:
//! * an acquisition chooses its [`Backend`] once, and the held lock is a
//!   [`Session`] of that backend: a held lock file (statically dispatched:
//!   the hot path pays no `dyn` call) or a held server lock;
//! * lock files keep their per-name state in the registry entry
//!   ([`file::EntryFiles`]); servers keep theirs per URL ([`server`]);
//! * this module knows nothing of the registry or of guards: it is given
//!   what to lock ([`Target`]) and hands back a [`Session`], which the
//!   layer above releases.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::{self, redact};
use crate::error::LockError;
use crate::fork::PerProcess;
use crate::spec::{Kind, Mode, Place, Wait};

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_tls;
pub(crate) mod file;
mod lost;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "mysql")]
mod mysql_tls;
#[cfg(feature = "mysql")]
mod mysql_url;
#[cfg(feature = "postgres")]
mod pg_tls;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_link;
mod server;
#[cfg(any(
    feature = "postgres",
    feature = "etcd",
    feature = "redis",
    feature = "mysql"
))]
// MySQL alone uses only its certificate reading and signature checks.
#[cfg_attr(
    not(any(feature = "postgres", feature = "etcd", feature = "redis")),
    allow(dead_code)
)]
mod tls;
#[cfg(any(
    feature = "postgres",
    feature = "etcd",
    feature = "redis",
    feature = "mysql"
))]
mod tooz;

pub use lost::Lost;

pub(crate) use file::Unlock;
use file::{EntryFiles, FileRequest, FileSession, FileWait, Files};
pub use server::Leader;
use server::ServerWait;
pub(crate) use server::{Server, ServerLock};

/// What an acquisition asks a backend to lock.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    /// The full lock name (prefix, separator, name).
    pub(crate) name: &'a str,
    pub(crate) kind: Kind,
    pub(crate) mode: Mode,
    /// An election's candidate: the identity a lock server records beside
    /// the lock (see [`Server::leader`]); lock files ignore it (the
    /// election keeps it beside the file).
    pub(crate) identity: Option<&'a str>,
}

/// Lock files chosen for one acquisition: where, and the entry's state.
#[derive(Clone, Copy)]
pub(crate) struct FileBackend<'a> {
    files: Files<'a>,
    state: &'a EntryFiles,
}

impl<'a> FileBackend<'a> {
    fn request(&self, t: &Target<'a>) -> FileRequest<'a> {
        FileRequest {
            name: t.name,
            kind: t.kind,
            mode: t.mode,
            files: self.files,
        }
    }
}

/// The backend chosen for one acquisition.
pub(crate) enum Backend<'a> {
    Files(FileBackend<'a>),
    Server(Arc<dyn Server>),
}

/// Chooses the backend for `place`, for the lock `name` (named in errors);
/// `state` gives the entry's lock-file state, made only if lock files are
/// chosen.
#[inline]
pub(crate) fn choose<'a>(
    place: Place<'a>,
    name: &str,
    state: impl FnOnce() -> &'a EntryFiles,
) -> Result<Backend<'a>, LockError> {
    let files = |files| {
        Ok(Backend::Files(FileBackend {
            files,
            state: state(),
        }))
    };
    let server = match place {
        Place::Dir(p) => return files(Files::Explicit(p)),
        Place::Server(url) => get(url),
        Place::Configured => match config::with_backend_url(get) {
            None => return files(Files::Configured),
            Some(r) => r,
        },
    };
    server.map(Backend::Server).map_err(|e| e.for_lock(name))
}

/// The lock server `place` names, or `None` for lock files: for asking a
/// server about a lock nobody here holds ([`Server::leader`]).
pub(crate) fn server_at(place: Place<'_>) -> Result<Option<Arc<dyn Server>>, LockError> {
    match place {
        Place::Dir(_) => Ok(None),
        Place::Server(url) => get(url).map(Some),
        Place::Configured => config::with_backend_url(get).transpose(),
    }
}

impl<'a> Backend<'a> {
    /// Whether this is a lock server.
    pub(crate) fn is_server(&self) -> bool {
        matches!(self, Backend::Server(_))
    }

    /// One attempt without waiting. `Ok(None)`: busy. For a lock server
    /// this is a network round trip: never on an executor thread.
    #[inline]
    pub(crate) fn try_lock(&self, t: &Target<'a>) -> Result<Option<Session>, LockError> {
        match self {
            Backend::Files(f) => Ok(f.state.try_lock(&f.request(t))?.map(Session::File)),
            Backend::Server(s) => Ok(s.lock(t, Wait::Try)?.map(Session::Server)),
        }
    }

    /// Whether a lock file handed over with the in-process lock serves an
    /// acquisition with this backend (it is a lock file in the same place).
    pub(crate) fn serves(&self, f: &FileSession) -> bool {
        match self {
            Backend::Files(b) => f.serves(b.files),
            Backend::Server(_) => false,
        }
    }

    /// Whether [`Backend::try_lock`] is cheap enough for an executor
    /// thread (a system call, not a round trip).
    pub(crate) fn try_is_cheap(&self) -> bool {
        matches!(self, Backend::Files(_))
    }

    /// Waits on this thread, for a caller that may block: until held, or
    /// (`Ok(None)`) until `wait`'s deadline.
    pub(crate) fn lock_blocking(
        &self,
        t: &Target<'a>,
        wait: Wait,
    ) -> Result<Option<Session>, LockError> {
        match self {
            Backend::Files(f) => {
                let req = f.request(t);
                match wait.deadline() {
                    None => Ok(Some(Session::File(f.state.lock_blocking(&req)?))),
                    Some(deadline) => match f.state.try_lock(&req)? {
                        Some(s) => Ok(Some(Session::File(s))),
                        None => wait_on_thread(f.state, &req, deadline),
                    },
                }
            }
            Backend::Server(s) => Ok(s.lock(t, wait)?.map(Session::Server)),
        }
    }

    /// Starts a wait that can be given up at any moment and never blocks
    /// the caller (an async caller): see [`Waiting`].
    pub(crate) fn wait(&self, t: &Target<'a>, wait: Wait) -> Result<Waiting<'a>, LockError> {
        match self {
            Backend::Files(f) => Ok(Waiting::File(f.state.wait(&f.request(t))?, *f)),
            Backend::Server(s) => Ok(Waiting::Server(ServerWait::start(s.clone(), t, wait)?)),
        }
    }
}

/// A lock-file wait with a deadline, on a caller's thread that parks in
/// between (the waiter thread wakes it).
fn wait_on_thread(
    state: &EntryFiles,
    req: &FileRequest<'_>,
    deadline: Instant,
) -> Result<Option<Session>, LockError> {
    let mut w = state.wait(req)?;
    let waker = crate::local::raw::thread_waker();
    loop {
        if let Poll::Ready(r) = w.poll(state, req, &waker) {
            return r.map(|s| Some(Session::File(s)));
        }
        let now = Instant::now();
        if now >= deadline {
            w.cancel(state, req);
            return Ok(None);
        }
        let until = w.next_try().map_or(deadline, |at| at.min(deadline));
        std::thread::park_timeout(until.saturating_duration_since(now));
    }
}

/// An external lock being waited for without blocking the caller: given
/// up (dropped, or [`Waiting::cancel`]led) at any moment, it gives back
/// everything.
pub(crate) enum Waiting<'a> {
    File(FileWait, FileBackend<'a>),
    Server(ServerWait),
}

impl<'a> Waiting<'a> {
    /// The held lock once it is ours (`Ok(None)`: a server's deadline
    /// passed), else `Pending`, having arranged for `waker` to be woken
    /// when there is news or by [`Waiting::next_try`].
    pub(crate) fn poll(
        &mut self,
        t: &Target<'a>,
        waker: &Waker,
    ) -> Poll<Result<Option<Session>, LockError>> {
        match self {
            Waiting::File(w, f) => w
                .poll(f.state, &f.request(t), waker)
                .map(|r| r.map(|s| Some(Session::File(s)))),
            Waiting::Server(w) => match w.poll(waker) {
                Some(r) => Poll::Ready(r.map(|h| h.map(Session::Server))),
                None => Poll::Pending,
            },
        }
    }

    /// When the wait wants to be polled again even if not woken.
    pub(crate) fn next_try(&self) -> Option<Instant> {
        match self {
            Waiting::File(w, _) => w.next_try(),
            Waiting::Server(_) => None,
        }
    }

    /// Gives up, returning what can be reused to `t`'s entry.
    pub(crate) fn cancel(self, t: &Target<'a>) {
        match self {
            Waiting::File(w, f) => w.cancel(f.state, &f.request(t)),
            Waiting::Server(w) => drop(w),
        }
    }
}

/// The external part of a held lock: a lock file or a server lock.
pub(crate) enum Session {
    File(FileSession),
    Server(Box<dyn ServerLock>),
}

impl Session {
    /// Releases the lock (or hands a lock file over with the in-process
    /// lock, see [`FileSession::release`]); returns what the in-process
    /// unlock does next.
    ///
    /// `state` is the entry's lock-file state (made if a lock file is
    /// held); `writer`: held in the writer's mode of a lock.
    ///
    /// # Safety
    /// The caller holds the entry's in-process lock in the mode this was
    /// taken for, and `handoff` hands that lock over (see `Local::handoff`).
    #[inline]
    pub(crate) unsafe fn release<'e>(
        self,
        state: impl FnOnce() -> Option<&'e EntryFiles>,
        writer: bool,
        queued: bool,
        handoff: impl Fn() -> bool,
    ) -> Unlock {
        match self {
            Session::File(f) => match state() {
                // SAFETY: forwarded.
                Some(state) => unsafe { f.release(state, writer, queued, handoff) },
                None => {
                    f.close();
                    Unlock::Plain
                }
            },
            Session::Server(s) => {
                s.release();
                Unlock::Plain
            }
        }
    }

    /// Releases a server lock on a helper thread, for async guards (a
    /// network round trip must not run on an executor thread); `None`
    /// when that was done, else the session back (a lock file's release
    /// is a system call, done in place).
    pub(crate) fn release_server_elsewhere(self) -> Option<Session> {
        match self {
            Session::Server(s) => {
                server::release_elsewhere(s);
                None
            }
            file => Some(file),
        }
    }

    /// Releases and closes (after the lock file was removed).
    pub(crate) fn close(self) {
        match self {
            Session::File(f) => f.close(),
            Session::Server(s) => s.release(),
        }
    }

    /// Where the lock is held. `name` is the full lock name.
    pub(crate) fn location(&self, name: &str) -> Location {
        match self {
            Session::File(f) => Location::File(f.path(name)),
            Session::Server(s) => Location::Server(s.describe()),
        }
    }

    /// The held lock file, for a lock on lock files.
    pub(crate) fn as_file(&mut self) -> Option<&mut FileSession> {
        match self {
            Session::File(f) => Some(f),
            Session::Server(_) => None,
        }
    }

    /// The open lock file, for a lock on lock files.
    #[cfg(unix)]
    pub(crate) fn file(&self) -> Option<&std::fs::File> {
        match self {
            Session::File(f) => Some(f.file()),
            Session::Server(_) => None,
        }
    }

    /// A token that grows with every acquisition, where the backend has one.
    pub(crate) fn fencing_token(&self) -> Option<u64> {
        match self {
            Session::File(_) => None,
            Session::Server(s) => s.fencing_token(),
        }
    }

    /// Whether a server lock may have been given away since. Lock files
    /// cannot be lost this way.
    pub(crate) fn is_lost(&self) -> bool {
        match self {
            Session::File(_) => false,
            Session::Server(s) => s.is_lost(),
        }
    }

    /// A future that completes when the lock is lost.
    pub(crate) fn lost(&self) -> Lost {
        Lost::new(match self {
            Session::File(_) => None,
            Session::Server(s) => s.lost_flag(),
        })
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

/// The lock servers of this process, by URL. A forked child makes its own
/// (the parent's connections are the parent's).
static SERVERS: PerProcess<Mutex<HashMap<String, Arc<dyn Server>>>> =
    PerProcess::lazy(Default::default);

/// The lock server for `url`, made on first use and shared afterwards.
pub(crate) fn get(url: &str) -> Result<Arc<dyn Server>, LockError> {
    let mut map = SERVERS.get().lock();
    if let Some(b) = map.get(url) {
        return Ok(b.clone());
    }
    let b = make(url)?;
    map.insert(url.to_owned(), b.clone());
    Ok(b)
}

fn make(url: &str) -> Result<Arc<dyn Server>, LockError> {
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
