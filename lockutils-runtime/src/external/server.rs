//! What a lock server is to the rest of the runtime: [`Server`] takes a
//! lock and names the [`Leader`] of an election, [`ServerLock`] is one
//! held; and [`ServerWait`], an acquisition waiting on a helper thread for
//! an async caller.
//!
//! Invariants:
//! * a server's calls are network round trips and may block: they never
//!   run on an async executor's thread (async acquisitions wait on a
//!   helper thread, async guards release on one);
//! * a server keeps its own state (connections, sessions, keepalive
//!   threads) per URL, made once and shared by every lock that uses it;
//!   it keeps nothing per registry entry;
//! * a [`ServerWait`] that is given up holds nothing anyone needs: its
//!   helper finishes the server's wait (which ends at the acquisition's
//!   deadline, if it has one) and releases whatever it gets;
//! * an election's lock is the lock of the same name, taken exclusively
//!   with an identity ([`Target::identity`]) that the server keeps beside
//!   it for as long as the lock is held, where any process can read it
//!   ([`Server::leader`]); a holder that gave none (a plain lock) is a
//!   leader with an empty identity.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use super::Target;
use super::lost::LostFlag;
use crate::error::LockError;
use crate::spec::{Kind, Mode, Wait};

/// A lock server (PostgreSQL, etcd, Redis, MySQL).
pub(crate) trait Server: Send + Sync {
    /// Takes the lock `t.name` (a full lock name) in `t.mode`, recording
    /// `t.identity` as its holder if given. `Wait::Try`: `Ok(None)` if
    /// busy; `Wait::Block`: waits; `Wait::Until`/`Timeout`: `Ok(None)` once
    /// the deadline passed. Waits happen in the server where it can (no
    /// client-side polling), on the calling thread.
    fn lock(&self, t: &Target<'_>, wait: Wait) -> Result<Option<Box<dyn ServerLock>>, LockError>;

    /// Who holds the lock `name` now, as the server records it: the
    /// identity its holder gave (empty if none) and that holder's fencing
    /// token. One look, from any process; `None` if nobody holds it.
    fn leader(&self, name: &str) -> Result<Option<Leader>, LockError>;
}

/// The leader of an election: who holds its lock now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The identity the leader campaigned with (by default
    /// `<hostname>:<pid>`). Empty when the lock is held by a holder that
    /// recorded none: a plain [`lock`](crate::lock) of the same name.
    pub identity: String,
    /// The leader's fencing token, where the backend gives one: it grows
    /// with every new leader.
    pub fencing_token: Option<u64>,
}

impl Leader {
    pub(crate) fn new(identity: String, fencing_token: Option<u64>) -> Leader {
        Leader {
            identity,
            fencing_token,
        }
    }
}

/// Why elections refuse `compat=tooz`: tooz's locks keep no identity.
#[cfg(any(
    feature = "postgres",
    feature = "etcd",
    feature = "redis",
    feature = "mysql"
))]
pub(crate) const NO_TOOZ_ELECTIONS: &str = "elections record their leader beside lockutils' own \
     locks; tooz's (compat=tooz) keep no identity: drop compat=tooz for elections";

/// A lock held on a lock server. Dropping it without `release` must also
/// release it (or let the server do so when the session ends).
pub(crate) trait ServerLock: Send {
    /// Releases the lock on the server; by default, by dropping it (the
    /// backends release in `Drop`, so that a guard dropped without a call
    /// here releases too).
    fn release(self: Box<Self>) {
        drop(self);
    }

    /// Where the lock is, for messages: e.g. `postgres://host/db` + key.
    fn describe(&self) -> String;

    /// A number that grows with every acquisition of this lock, for fencing
    /// writes.
    fn fencing_token(&self) -> Option<u64> {
        None
    }

    /// Whether the server may have given the lock to someone else since
    /// (a lost session or lease).
    fn is_lost(&self) -> bool {
        false
    }

    /// The flag the backend's keepalive sets when the lock is lost, for
    /// [`Lost`](super::Lost) futures; `None` if this lock cannot tell.
    fn lost_flag(&self) -> Option<Arc<LostFlag>> {
        None
    }
}

/// What a server acquisition ends with.
type Outcome = Result<Option<Box<dyn ServerLock>>, LockError>;

/// A server acquisition on a helper thread, for an async caller; see the
/// module's invariants for what dropping it does.
pub(crate) struct ServerWait {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
    /// The caller gave up: the helper releases what it gets.
    abandoned: bool,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServerWait {
    /// Starts `server.lock(t, wait)` on a helper thread.
    pub(crate) fn start(
        server: Arc<dyn Server>,
        t: &Target<'_>,
        wait: Wait,
    ) -> Result<ServerWait, LockError> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let theirs = shared.clone();
        let name = t.name.to_owned();
        let identity = t.identity.map(str::to_owned);
        let (kind, mode): (Kind, Mode) = (t.kind, t.mode);
        std::thread::Builder::new()
            .name("lockutils-server".into())
            .spawn(move || {
                let t = Target {
                    name: &name,
                    kind,
                    mode,
                    identity: identity.as_deref(),
                };
                let outcome = server.lock(&t, wait);
                let mut s = lock(&theirs);
                if s.abandoned {
                    drop(s);
                    if let Ok(Some(held)) = outcome {
                        held.release();
                    }
                    return;
                }
                s.outcome = Some(outcome);
                let waker = s.waker.take();
                drop(s);
                if let Some(w) = waker {
                    w.wake();
                }
            })
            .map_err(|source| LockError::Io {
                name: t.name.to_owned(),
                path: Default::default(),
                op: "start a thread to wait for",
                source,
            })?;
        Ok(ServerWait { shared })
    }

    /// The outcome if the helper finished, else remembers `waker`.
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Outcome> {
        let mut s = lock(&self.shared);
        if let Some(o) = s.outcome.take() {
            return Some(o);
        }
        match &s.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => s.waker = Some(waker.clone()),
        }
        None
    }
}

impl Drop for ServerWait {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.abandoned = true;
        let late = s.outcome.take();
        drop(s);
        if let Some(Ok(Some(held))) = late {
            // Got just before the caller left; the release is a round trip,
            // which must not run on the caller's (an executor's) thread.
            release_elsewhere(held);
        }
    }
}

/// Releases a server lock on a helper thread (or here, if no thread can be
/// had: late rather than never).
pub(crate) fn release_elsewhere(held: Box<dyn ServerLock>) {
    let slot = Arc::new(parking_lot::Mutex::new(Some(held)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name("lockutils-release".into())
        .spawn(move || {
            if let Some(h) = theirs.lock().take() {
                h.release();
            }
        });
    if spawned.is_err()
        && let Some(h) = slot.lock().take()
    {
        h.release();
    }
}

/// A `ttl=` URL parameter (etcd, Redis): whole seconds from 1 to a day.
#[cfg(any(feature = "etcd", feature = "redis"))]
pub(crate) fn ttl_seconds(v: &str) -> Result<u64, String> {
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
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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
pub(crate) fn outside_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}
