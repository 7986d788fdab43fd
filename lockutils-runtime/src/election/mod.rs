//! Leader election on a named lock: [`election`] and its [`Election`]
//! builder, the leader's [`Leadership`], and [`Leader`], who leads as any
//! process can read it.
//!
//! Invariants:
//! * the election for a name is the exclusive external lock of that name
//!   (the in-process lock, lock file or lock-server lock that
//!   `lock(name).external()` takes), taken with the candidate's identity:
//!   the leader is whoever holds it, and dropping the [`Leadership`]
//!   releases it (resigns);
//! * the identity is kept beside the lock, never in it: on a lock server
//!   by the backend (`external::Server::leader`), for lock files in a
//!   record that only the lock's holder writes ([`sidecar`]); the lock
//!   file itself is oslo.concurrency's too and is never written;
//! * a leader is named only while it holds the lock: a record left by a
//!   leader that died is stale, and is never shown (its process, or its
//!   server session, must be the lock's holder now);
//! * an election takes its lock even when process locking is switched
//!   off (`set_process_locking(false)`): an election that does not reach
//!   other processes elects nobody.

use std::future::Future;
use std::panic::Location as Caller;
use std::path::Path;
use std::time::Duration;

use crate::acquire::{self, Request};
use crate::builder::{self, Lock};
use crate::error::LockError;
use crate::external::{self, Leader, Location, Lost};
use crate::hold::Hold;
use crate::spec::Wait;
use crate::trace::Site;

mod sidecar;

/// The longest identity, in bytes.
const MAX_IDENTITY: usize = 1024;

/// Starts describing the election `name`; finish with
/// [`campaign`](Election::campaign) (or
/// [`campaign_async`](Election::campaign_async)) to become its leader, or
/// [`leader`](Election::leader) to ask who leads.
///
/// ```
/// # use lockutils_runtime as lockutils;
/// # fn main() -> Result<(), lockutils::LockError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let lead = lockutils::election("scheduler")
///     .identity("host-a:4242")
///     .lock_path(dir.path()) // or .backend("etcd://10.0.0.5:2379"), or $LOCKUTILS_BACKEND
///     .campaign()?; // waits until this process leads
/// let now = lockutils::election("scheduler").lock_path(dir.path()).leader()?;
/// assert_eq!(now.unwrap().identity, "host-a:4242");
/// drop(lead); // resigns
/// # assert!(lockutils::election("scheduler").lock_path(dir.path()).leader()?.is_none());
/// # Ok(()) }
/// ```
pub fn election(name: &str) -> Election<'_> {
    Election {
        name,
        identity: None,
        backend: None,
        lock_path: None,
        wait: Wait::Block,
    }
}

/// An election to campaign in or ask about, built by [`election`].
#[must_use = "an Election does nothing until campaigned in or asked"]
#[derive(Clone, Debug)]
pub struct Election<'a> {
    name: &'a str,
    identity: Option<&'a str>,
    backend: Option<&'a str>,
    lock_path: Option<&'a Path>,
    wait: Wait,
}

impl<'a> Election<'a> {
    /// Who this candidate is, as [`Leader::identity`] will show it to
    /// others: at most 1,024 bytes, no newline or NUL. Default:
    /// `<hostname>:<pid>`.
    pub fn identity(mut self, identity: &'a str) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Hold the election on this lock server (`postgres://…`, `etcd://…`,
    /// `redis://…`, `mysql://…`), or on lock files in `file:///dir`,
    /// instead of the configured backend (`$LOCKUTILS_BACKEND`, else lock
    /// files in the lock path).
    pub fn backend(mut self, url: &'a str) -> Self {
        self.backend = Some(url);
        self
    }

    /// Hold the election on lock files in `dir`.
    pub fn lock_path(mut self, dir: &'a (impl AsRef<Path> + ?Sized)) -> Self {
        self.lock_path = Some(dir.as_ref());
        self
    }

    /// Campaign at most `timeout`, then fail with [`LockError::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.wait = Wait::Timeout(timeout);
        self
    }

    /// `false`: fail with [`LockError::WouldBlock`] at once if another
    /// candidate leads.
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.wait = if blocking { Wait::Block } else { Wait::Try };
        self
    }

    /// The election's name (its lock's full name).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Waits until this candidate leads (or as [`timeout`](Self::timeout)
    /// and [`blocking`](Self::blocking) say), blocking this thread.
    ///
    /// A second campaign in the same process waits for the first
    /// [`Leadership`] to resign, like any candidate.
    #[track_caller]
    pub fn campaign(&self) -> Result<Leadership, LockError> {
        let site = Site::Caller(Caller::caller());
        let identity = self.candidate()?;
        let lock = self.lock(&identity)?;
        let hold = acquire::take(lock.entry()?, &request(&lock, site))?;
        Leadership::new(hold, identity, false)
    }

    /// [`campaign`](Self::campaign) without blocking the thread: on any
    /// executor; a lock server is waited for on a helper thread. Dropping
    /// the future gives up the campaign and anything it got.
    #[track_caller]
    pub fn campaign_async(
        &self,
    ) -> impl Future<Output = Result<Leadership, LockError>> + Send + '_ {
        let site = Site::Caller(Caller::caller());
        async move {
            let identity = self.candidate()?;
            let lock = self.lock(&identity)?;
            let hold = acquire::take_async(lock.entry()?, &request(&lock, site)).await?;
            Leadership::new(hold, identity, true)
        }
    }

    /// Who leads now: one look at the backend, from any process (one that
    /// never campaigned too). `None`: nobody holds the election's lock.
    /// A holder that gave no identity (a plain lock of the same name)
    /// shows with an empty one. A round trip to a lock server: not for an
    /// executor thread.
    pub fn leader(&self) -> Result<Option<Leader>, LockError> {
        let lock = self.lock("")?;
        match external::server_at(lock.options().place())? {
            Some(server) => server
                .leader(&lock.full_name()?)
                .map_err(|e| e.for_lock(self.name)),
            None => sidecar::leader(&lock),
        }
    }

    /// The identity to campaign with, checked.
    fn candidate(&self) -> Result<String, LockError> {
        let identity = match self.identity {
            Some(id) => id.to_owned(),
            None => default_identity(),
        };
        let reason = if identity.is_empty() {
            "an election's identity must not be empty"
        } else if identity.len() > MAX_IDENTITY {
            "an election's identity is at most 1024 bytes"
        } else if identity.contains(['\n', '\r', '\0']) {
            "an election's identity must not contain a newline or NUL"
        } else {
            return Ok(identity);
        };
        Err(LockError::InvalidOptions {
            name: self.name.to_owned(),
            reason,
        })
    }

    /// The exclusive external lock of the election, for `identity`.
    fn lock<'l>(&'l self, identity: &'l str) -> Result<Lock<'l>, LockError> {
        let mut lock = builder::lock(self.name).external().candidate(identity);
        lock = match self.wait {
            Wait::Try => lock.blocking(false),
            Wait::Timeout(t) | Wait::Until { timeout: t, .. } => lock.timeout(t),
            Wait::Block => lock,
        };
        let dir = match (self.lock_path, self.backend) {
            (Some(dir), _) => Some(dir),
            (None, Some(url)) => match crate::config::file_url_path(url) {
                Some(dir) => Some(Path::new(dir)),
                None => return Ok(lock.backend(url)),
            },
            (None, None) => None,
        };
        Ok(match dir {
            Some(dir) => lock.lock_path(dir),
            None => lock,
        })
    }
}

/// An election's acquisition: takes the lock file even with process
/// locking off (see the module docs).
fn request<'a>(lock: &Lock<'a>, site: Site) -> Request<'a> {
    Request {
        opts: *lock.options(),
        force_file: true,
        site,
    }
}

/// `<hostname>:<pid>`.
pub fn default_identity() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// This host's name, or `localhost` if it has none.
fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for `len` bytes; gethostname writes
        // at most that many and NUL-terminates unless truncated, which the
        // search for NUL below allows for.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if end > 0 {
                return String::from_utf8_lossy(&buf[..end]).into_owned();
            }
        }
    }
    #[cfg(windows)]
    if let Ok(name) = std::env::var("COMPUTERNAME") {
        return name;
    }
    "localhost".to_owned()
}

/// Leading an election: the lock held, the identity it was won with and
/// its fencing token. Dropping it resigns (releases the lock). It is
/// `Send`: hand it to the task or thread that does the leader's work.
#[must_use = "the leadership ends (resigns) as soon as it is dropped"]
pub struct Leadership {
    hold: Hold,
    identity: String,
    fencing_token: Option<u64>,
    /// Won by `campaign_async`: the release, a round trip to a lock
    /// server, must not run on an executor thread.
    release_elsewhere: bool,
}

impl Leadership {
    fn new(hold: Hold, identity: String, release_elsewhere: bool) -> Result<Leadership, LockError> {
        let fencing_token = match hold.location() {
            Some(Location::File(path)) => {
                Some(sidecar::record(&path, hold.entry().name(), &identity)?)
            }
            _ => hold.fencing_token(),
        };
        tracing::info!(
            target: "lockutils",
            election = hold.entry().name(),
            identity,
            fencing_token,
            "lockutils: elected"
        );
        Ok(Leadership {
            hold,
            identity,
            fencing_token,
            release_elsewhere,
        })
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        self.hold.entry().name()
    }

    /// The identity this leader campaigned with.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// A number that grows with every new leader, to fence writes with
    /// (the resource refuses a token lower than one it has seen): the lock
    /// server's (etcd's revision, Redis' counter, PostgreSQL's and
    /// MariaDB's sequence; none on MySQL), or for lock files a counter
    /// kept in the election's record.
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// Whether the lock server may have given the lock, and so the
    /// leadership, to another candidate (see `LockGuard::is_lost`): asks no
    /// one. Always `false` on lock files.
    pub fn is_lost(&self) -> bool {
        self.hold.is_lost()
    }

    /// A future that completes when the leadership is lost (see
    /// `LockGuard::lost`); never on lock files, nor after a resignation.
    pub fn lost(&self) -> Lost {
        self.hold.lost()
    }

    /// Where the election's lock is held: a lock file, or a lock server's
    /// URL (password removed) and key.
    pub fn location(&self) -> Option<Location> {
        self.hold.location()
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        tracing::info!(
            target: "lockutils",
            election = self.hold.entry().name(),
            identity = self.identity,
            "lockutils: resigned"
        );
        if self.release_elsewhere {
            self.hold.release_server_elsewhere();
        }
        // `hold` drops next: the lock, then the in-process lock.
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("name", &self.name())
            .field("identity", &self.identity)
            .field("fencing_token", &self.fencing_token)
            .finish_non_exhaustive()
    }
}
