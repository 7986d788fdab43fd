//! Where `external` locks live: lock files (the default), or a lock server
//! chosen by URL, the way tooz does it.
//!
//! | URL | backend |
//! |---|---|
//! | `file:///var/lib/nova/locks` | lock files in that directory (same as `set_lock_path`) |
//! | `postgres://user:pass@host:5432/db` | PostgreSQL session advisory locks (feature `postgres`) |
//! | `etcd://host:2379` | etcd v3 leases (feature `etcd`) |
//! | `redis://host:6379/0`, `rediss://…` | Redis `SET NX PX` with renewal (feature `redis`) |
//!
//! A remote backend implements [`Backend`]; what it hands back while a lock
//! is held is a [`RemoteHold`]. Backends are made once per URL and shared
//! (with their connections) by every lock that uses the URL.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use crate::error::LockError;
use crate::external::FileWait;
use crate::semaphore::Mode;

pub use lost::Lost;
pub(crate) use lost::LostFlag;

#[cfg(feature = "etcd")]
mod etcd;
mod lost;
#[cfg(feature = "postgres")]
mod pg_tls;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

/// A lock server.
pub(crate) trait Backend: Send + Sync {
    /// Takes `name` (a full lock name) in `mode`. `Try`: `Ok(None)` if busy;
    /// `Until`: `Ok(None)` once the deadline passed; `Block`: waits.
    fn lock(
        &self,
        name: &str,
        mode: Mode,
        wait: FileWait,
    ) -> Result<Option<Box<dyn RemoteHold>>, LockError>;
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

static BACKENDS: LazyLock<Mutex<HashMap<String, Arc<dyn Backend>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The backend for `url`, made on first use and shared afterwards.
pub(crate) fn get(url: &str) -> Result<Arc<dyn Backend>, LockError> {
    let mut map = BACKENDS.lock();
    if let Some(b) = map.get(url) {
        return Ok(b.clone());
    }
    let b = make(url)?;
    map.insert(url.to_owned(), b.clone());
    Ok(b)
}

/// The URL's scheme, lower-cased, if it has one.
pub(crate) fn scheme(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    (!scheme.is_empty() && !rest.is_empty()).then(|| scheme.to_ascii_lowercase())
}

fn make(url: &str) -> Result<Arc<dyn Backend>, LockError> {
    let bad = |reason: String| LockError::Backend {
        name: String::new(),
        backend: redact(url),
        op: "configure",
        cause: reason,
    };
    match scheme(url).as_deref() {
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
        Some("file") => Err(bad(
            "file:// is not a lock server; it sets the lock path".into()
        )),
        Some(other) => Err(bad(format!(
            "unknown scheme {other:?}: expected file://, postgres://, etcd:// or redis://"
        ))),
        None => Err(bad(
            "not a URL: expected file://, postgres://, etcd:// or redis://".into(),
        )),
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// An error and its causes, each once: `a: b: c`.
#[cfg(any(feature = "postgres", feature = "etcd", feature = "redis"))]
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
#[cfg(any(feature = "postgres", feature = "etcd"))]
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
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("etcd://h:2379"), "etcd://h:2379");
        assert_eq!(
            redact("postgres://u:p@ss@h/db?x=1"),
            "postgres://u:***@h/db?x=1"
        );
    }

    #[test]
    fn unknown_schemes_are_errors_naming_the_url() {
        let e = make("memcached://u:pw@h").err().unwrap().to_string();
        assert!(e.contains("memcached://u:***@h"), "{e}");
        assert!(e.contains("unknown scheme"), "{e}");
        assert!(make("nonsense").is_err());
    }
}
