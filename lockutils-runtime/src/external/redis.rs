//! Redis, single instance (`redis://[user:password@]host:6379/0[?ttl=10]`,
//! `rediss://…[?cacert=PATH[&cert=PATH&key=PATH]]`).
//!
//! * **Acquire**: one Lua script runs `SET <key> <token> NX PX <ttl>` and,
//!   if that took the key, `INCR <key>:fence`: the counter is the fencing
//!   token, and since both happen in one script, tokens follow the order of
//!   acquisitions. `<key>` is `lockutils:<name>`; the token is unique to
//!   the acquisition (host, process, counter, clock).
//! * **Renewal while held**: one thread per backend renews every held key
//!   every `ttl / 3` with a compare-and-`PEXPIRE` script (default
//!   [`DEFAULT_TTL`]; `?ttl=SECONDS`). If the key is gone or holds another
//!   token, or no renewal got through before the `ttl` ran out (counted
//!   from when the request was sent), the lock is lost: the flag behind
//!   `is_lost()` is set, a `tracing` warning says so and `LockGuard::lost`
//!   completes. `is_lost()` itself asks no one.
//! * **Release**: compare-and-delete in Lua (delete only if the key still
//!   holds our token), which also `PUBLISH`es on `<key>:released`.
//! * **Waiting**: subscribed to `<key>:released`, a waiter tries again when
//!   a release is published, or when the holder's key would expire (its
//!   `PTTL`, at most one second later as a bounded re-check): no hot poll,
//!   also for a key without a time-to-live (not one lockutils set), which
//!   is looked at once a second.
//!   A deadline or `blocking(false)` gives up without leaving anything on
//!   the server.
//! * **Elections**: the key's value is the acquisition's token, a newline
//!   and the candidate's identity: compare-and-delete and renewal compare
//!   the whole value, so they stay safe. Anyone reads the leader with one
//!   `MGET <key> <key>:fence`: the identity from the value, and the
//!   counter, which no one can draw from while the key exists, is the
//!   leader's fencing token.
//! * **fork without exec**: a child never uses the parent's connections;
//!   its first lock makes its own, and its own renewal thread. A guard it
//!   inherited is the parent's key: `is_lost()` is `true` there, and
//!   dropping it deletes nothing.
//! * **Shared** (reader) mode is refused with `LockError::Backend`: a plain
//!   key has one owner, and a reader count would need its own expiry
//!   scheme; use PostgreSQL or etcd for reader/writer locks.
//!
//! **`compat=tooz`** (`&namespace=NS` as in tooz's URL, default `_tooz`):
//! the key is tooz's, `<namespace>_<name>_lock`, taken and released the
//! way redis-py's lock does (see `tooz.rs`); tooz publishes no release,
//! so a waiter looks again every [`TOOZ_RECHECK`] (redis-py's own pause).
//!
//! **A failover can lose a lock.** Redis replication is asynchronous: if
//! the primary fails after granting a lock and before a replica has the
//! key, the promoted replica grants it again. This backend does not
//! implement Redlock (which has its own timing assumptions); use the
//! fencing token to make stale holders harmless, or PostgreSQL/etcd where
//! that matters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ::redis::RedisError;
use parking_lot::{Condvar, Mutex};

use super::Target;
use super::lost::LostFlag;
use super::redis_link::{Link, Server as Endpoint};
use super::server::{Leader, NO_TOOZ_ELECTIONS, Server, ServerLock, error_chain};
use super::tooz::{self, Scheme};
use crate::config::redact;
use crate::error::LockError;
use crate::fork::PerProcess;
use crate::spec::{Mode, Wait};

/// The key time-to-live when the URL does not give `?ttl=`, in seconds.
pub(crate) const DEFAULT_TTL: u64 = 10;

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;

/// The longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a waiter sleeps between two looks at the key.
const RECHECK: Duration = Duration::from_secs(1);

/// The same with `compat=tooz`, whose holders publish no release.
const TOOZ_RECHECK: Duration = Duration::from_millis(100);

/// Takes the key; returns `{fence, 0}`, or `{0, pttl}` if it is busy.
const ACQUIRE: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
     return {redis.call('INCR', KEYS[2]), 0} end \
     return {0, redis.call('PTTL', KEYS[1])}";

/// Extends the key's life if it still holds our token: 1, else 0.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";

/// Deletes the key if it still holds our token, and tells the waiters.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     redis.call('DEL', KEYS[1]) redis.call('PUBLISH', KEYS[2], '1') return 1 end return 0";

/// A Redis server used as a lock server.
pub(crate) struct Redis {
    /// Each process's own connections and renewal thread: a forked child
    /// never uses the parent's.
    inner: PerProcess<Arc<Inner>>,
}

struct Inner {
    /// The URL without its password, for messages.
    url: String,
    server: Endpoint,
    /// `rediss://`: a server that does not speak TLS leaves the handshake
    /// unanswered, which the client reports only as a timeout.
    tls: bool,
    ttl: Duration,
    scheme: Scheme,
    /// tooz's key namespace (`compat=tooz`).
    namespace: String,
    /// The longest a waiter sleeps between two looks at the key.
    recheck: Duration,
    idle: Mutex<Vec<Link>>,
    /// The held keys the renewal thread keeps alive, by hold id.
    held: Mutex<HashMap<u64, Renewal>>,
    /// Wakes the renewal thread when a key is added.
    added: Condvar,
    /// The renewal thread was started.
    renewing: std::sync::Once,
}

/// One held key, as the renewal thread sees it.
struct Renewal {
    key: String,
    token: String,
    state: Arc<HoldState>,
    due: Instant,
}

/// What a hold and the renewal thread share.
struct HoldState {
    lost: Arc<LostFlag>,
    /// When the last successful renewal (or the acquisition) was sent: the
    /// key lives at least `ttl` after.
    renewed: Mutex<Instant>,
    describe: String,
}

impl Redis {
    /// Parses the URL; connects only when a lock is first taken.
    pub(crate) fn new(url: &str) -> Result<Redis, LockError> {
        let bad = |cause: String| LockError::Backend {
            name: String::new(),
            backend: redact(url),
            op: "configure",
            cause,
        };
        let (url_rest, scheme) = tooz::take_compat(url).map_err(bad)?;
        let (base, query) = url_rest.split_once('?').unwrap_or((&url_rest, ""));
        let mut ttl = DEFAULT_TTL;
        let mut namespace = None;
        let (mut ca, mut cert, mut key) = (None, None, None);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ttl", v)) => {
                    ttl = super::server::ttl_seconds(v).map_err(bad)?;
                }
                Some(("cacert", v)) => ca = Some(v.to_owned()),
                Some(("cert", v)) => cert = Some(v.to_owned()),
                Some(("key", v)) => key = Some(v.to_owned()),
                Some(("namespace", v)) if scheme == Scheme::Tooz => namespace = Some(v.to_owned()),
                _ => kept.push(pair),
            }
        }
        let plain = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let tls = base.starts_with("rediss://");
        let server = Endpoint::new(&plain, tls, ca, cert, key).map_err(bad)?;
        let inner = Inner {
            url: redact(url),
            server,
            tls,
            ttl: Duration::from_secs(ttl),
            scheme,
            namespace: namespace.unwrap_or_else(|| tooz::REDIS_NAMESPACE.to_owned()),
            recheck: if scheme == Scheme::Tooz {
                TOOZ_RECHECK
            } else {
                RECHECK
            },
            idle: Mutex::new(Vec::new()),
            held: Mutex::new(HashMap::new()),
            added: Condvar::new(),
            renewing: std::sync::Once::new(),
        };
        Ok(Redis {
            inner: PerProcess::new(Arc::new(inner)),
        })
    }

    /// This process's connections.
    fn inner(&self) -> &Arc<Inner> {
        self.inner
            .renewed(|inherited| Arc::new(inherited.expect("made by new").fresh()))
    }
}

impl Server for Redis {
    fn lock(&self, t: &Target<'_>, wait: Wait) -> Result<Option<Box<dyn ServerLock>>, LockError> {
        let (name, mode) = (t.name, t.mode);
        let wait = wait.start();
        if t.identity.is_some() && self.inner().scheme == Scheme::Tooz {
            let why = NO_TOOZ_ELECTIONS.to_owned();
            return Err(self.inner().error(name, "elect a leader", why));
        }
        if mode == Mode::Shared {
            return Err(self.inner().error(
                name,
                "lock",
                "Redis locks have no shared (reader) mode: take it exclusive, or use \
                 PostgreSQL or etcd for reader/writer locks"
                    .into(),
            ));
        }
        let got = self.inner().clone().acquire(name, wait, t.identity)?;
        Ok(got.map(|h| Box::new(h) as Box<dyn ServerLock>))
    }

    fn leader(&self, name: &str) -> Result<Option<Leader>, LockError> {
        let inner = self.inner();
        if inner.scheme == Scheme::Tooz {
            let why = NO_TOOZ_ELECTIONS.to_owned();
            return Err(inner.error(name, "elect a leader", why));
        }
        let key = format!("lockutils:{name}");
        let found: (Option<String>, Option<u64>) = inner
            .with_connection(|c| {
                ::redis::cmd("MGET")
                    .arg(&key)
                    .arg(format!("{key}:fence"))
                    .query(c)
            })
            .map_err(|(op, e)| {
                let op = if op == "connect" {
                    op
                } else {
                    "read the leader"
                };
                inner.error(name, op, error_chain(&e))
            })?;
        Ok(found.0.map(|value| {
            let identity = value.split_once('\n').map_or("", |(_, id)| id);
            Leader::new(identity.to_owned(), found.1)
        }))
    }
}

/// A token no other acquisition anywhere has.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}:{n}:{nanos}", host.trim(), std::process::id())
}

impl Inner {
    /// A forked child's: the same server and settings, no connections, no
    /// held keys (reading `self` only: its mutexes may have been held by
    /// threads the child lacks).
    fn fresh(&self) -> Inner {
        Inner {
            url: self.url.clone(),
            server: self.server.clone(),
            tls: self.tls,
            ttl: self.ttl,
            scheme: self.scheme,
            namespace: self.namespace.clone(),
            recheck: self.recheck,
            idle: Mutex::new(Vec::new()),
            held: Mutex::new(HashMap::new()),
            added: Condvar::new(),
            renewing: std::sync::Once::new(),
        }
    }

    fn error(&self, name: &str, op: &'static str, cause: String) -> LockError {
        LockError::Backend {
            name: name.to_owned(),
            backend: self.url.clone(),
            op,
            cause,
        }
    }

    fn connect(&self) -> Result<Link, RedisError> {
        self.server.connect(REQUEST_TIMEOUT)
    }

    /// Runs `f` on an idle or new connection; keeps the connection for
    /// reuse unless it failed.
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Link) -> Result<T, RedisError>,
    ) -> Result<T, (&'static str, RedisError)> {
        let pooled = self.idle.lock().pop();
        let mut con = match pooled {
            Some(c) if c.is_open() => c,
            _ => self.connect().map_err(|e| ("connect", e))?,
        };
        let r = f(&mut con).map_err(|e| ("lock", e))?;
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(con);
        }
        Ok(r)
    }

    /// One attempt: `Ok(Ok(fence))` taken, `Ok(Err(pttl))` busy.
    fn attempt(
        &self,
        key: &str,
        token: &str,
    ) -> Result<Result<u64, Duration>, (&'static str, RedisError)> {
        let ttl_ms = self.ttl.as_millis() as u64;
        let (fence, pttl): (u64, i64) = self.with_connection(|c| {
            ::redis::cmd("EVAL")
                .arg(ACQUIRE)
                .arg(2)
                .arg(key)
                .arg(format!("{key}:fence"))
                .arg(token)
                .arg(ttl_ms)
                .query(c)
        })?;
        if fence > 0 {
            return Ok(Ok(fence));
        }
        Ok(Err(match pttl {
            // No expiry (a key not set by lockutils): it goes only when
            // deleted; the bounded re-check sees that.
            -1 => RECHECK,
            // Gone since the script looked: try again at once.
            ..=0 => Duration::from_millis(1),
            ms => Duration::from_millis(ms as u64),
        }))
    }

    fn acquire(
        self: Arc<Self>,
        name: &str,
        wait: Wait,
        identity: Option<&str>,
    ) -> Result<Option<RedisLock>, LockError> {
        let key = match self.scheme {
            Scheme::Lockutils => format!("lockutils:{name}"),
            Scheme::Tooz => tooz::redis_key(&self.namespace, name),
        };
        let token = match identity {
            Some(id) => format!("{}\n{id}", new_token()),
            None => new_token(),
        };
        let fail = |(op, e): (&'static str, RedisError)| {
            let mut cause = error_chain(&e);
            if self.tls && op == "connect" && e.is_timeout() {
                cause.push_str(" (no answer to the TLS handshake: does the server speak TLS?)");
            }
            self.error(name, op, cause)
        };
        let mut sent = Instant::now();
        let mut busy = match self.attempt(&key, &token).map_err(fail)? {
            Ok(fence) => return Ok(Some(self.held(key, token, fence, sent))),
            Err(pttl) => pttl,
        };
        let deadline = match wait {
            Wait::Try => return Ok(None),
            Wait::Block | Wait::Timeout(_) => None,
            Wait::Until { deadline, .. } => Some(deadline),
        };
        let mut sub = self.connect().map_err(|e| fail(("connect", e)))?;
        let channel = format!("{key}:released");
        sub.subscribe(&channel).map_err(|e| fail(("wait", e)))?;
        loop {
            // Subscribed before this attempt: a release after it is heard.
            sent = Instant::now();
            match self.attempt(&key, &token).map_err(fail)? {
                Ok(fence) => return Ok(Some(self.held(key, token, fence, sent))),
                Err(pttl) => busy = busy.min(pttl),
            }
            let mut nap = busy.min(self.recheck) + Duration::from_millis(1);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                nap = nap.min(left);
            }
            sub.set_read_timeout(Some(nap))
                .map_err(|e| fail(("wait", e)))?;
            match sub.next_message() {
                Ok(_) => {}
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(fail(("wait", e))),
            }
            busy = self.recheck;
        }
    }

    /// A hold of `key` taken at `sent`, registered for renewal.
    fn held(self: Arc<Self>, key: String, token: String, fence: u64, sent: Instant) -> RedisLock {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(HoldState {
            lost: LostFlag::new(),
            renewed: Mutex::new(sent),
            describe: format!("{} key {key} (fencing token {fence})", self.url),
        });
        let renewal = Renewal {
            key: key.clone(),
            token: token.clone(),
            state: state.clone(),
            due: sent + self.ttl / 3,
        };
        self.held.lock().insert(id, renewal);
        let me = self.clone();
        self.renewing.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("lockutils-redis".into())
                .spawn(move || me.renew_forever());
            if let Err(e) = spawned {
                tracing::error!(error = %e, "lockutils: cannot start the Redis renewal thread");
            }
        });
        self.added.notify_one();
        RedisLock {
            inner: self,
            id,
            key,
            token,
            fence,
            state,
        }
    }

    /// The renewal thread: renews each held key when it is due.
    fn renew_forever(self: Arc<Self>) {
        let mut con: Option<Link> = None;
        loop {
            let due = {
                let mut held = self.held.lock();
                let now = Instant::now();
                let due: Vec<(u64, String, String, Arc<HoldState>)> = held
                    .iter()
                    .filter(|(_, r)| r.due <= now)
                    .map(|(id, r)| (*id, r.key.clone(), r.token.clone(), r.state.clone()))
                    .collect();
                if due.is_empty() {
                    match held.values().map(|r| r.due).min() {
                        Some(next) => {
                            self.added.wait_until(&mut held, next);
                        }
                        None => self.added.wait(&mut held),
                    }
                    continue;
                }
                due
            };
            for (id, key, token, state) in due {
                let next = self.renew_one(&mut con, &key, &token, &state);
                let mut held = self.held.lock();
                match next {
                    Some(at) => {
                        if let Some(r) = held.get_mut(&id) {
                            r.due = at;
                        }
                    }
                    None => {
                        held.remove(&id);
                    }
                }
            }
        }
    }

    /// Renews one key: when it is next due, or `None` once it is lost.
    fn renew_one(
        &self,
        con: &mut Option<Link>,
        key: &str,
        token: &str,
        state: &HoldState,
    ) -> Option<Instant> {
        let sent = Instant::now();
        let r = match con.take().filter(Link::is_open) {
            Some(c) => Ok(c),
            None => self.connect(),
        }
        .and_then(|mut c| {
            let n: i64 = ::redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(key)
                .arg(token)
                .arg(self.ttl.as_millis() as u64)
                .query(&mut c)?;
            *con = Some(c);
            Ok(n)
        });
        match r {
            Ok(1) => {
                *state.renewed.lock() = sent;
                Some(sent + self.ttl / 3)
            }
            Ok(_) => {
                state.lost.set(
                    &state.describe,
                    "the key was deleted or taken by another holder",
                );
                None
            }
            Err(e) if state.renewed.lock().elapsed() >= self.ttl => {
                let why = format!("not renewed within its time-to-live: {}", error_chain(&e));
                state.lost.set(&state.describe, &why);
                None
            }
            // Try again soon, while the key still lives.
            Err(_) => Some(Instant::now() + (self.ttl / 10).min(Duration::from_millis(200))),
        }
    }
}

/// A key held in Redis.
struct RedisLock {
    inner: Arc<Inner>,
    id: u64,
    key: String,
    token: String,
    fence: u64,
    state: Arc<HoldState>,
}

impl ServerLock for RedisLock {
    fn describe(&self) -> String {
        self.state.describe.clone()
    }

    fn fencing_token(&self) -> Option<u64> {
        Some(self.fence)
    }

    /// The renewal thread's verdict, or the key's time-to-live having run
    /// out since the last renewal that got through; no request is made.
    fn is_lost(&self) -> bool {
        if !self.state.lost.is_set() && self.state.renewed.lock().elapsed() >= self.inner.ttl {
            self.state
                .lost
                .set(&self.state.describe, "not renewed within its time-to-live");
        }
        self.state.lost.is_set()
    }

    fn lost_flag(&self) -> Option<Arc<LostFlag>> {
        Some(self.state.lost.clone())
    }
}

impl Drop for RedisLock {
    /// Stops renewing and deletes the key if it is still ours. If Redis
    /// cannot be reached, the key expires after its time-to-live.
    fn drop(&mut self) {
        if self.state.lost.inherited() {
            // A forked child's copy: the key and its token are the
            // parent's, who still renews it; deleting it would free the
            // parent's lock.
            return;
        }
        self.state.lost.released();
        self.inner.held.lock().remove(&self.id);
        let released = self.inner.with_connection(|c| {
            ::redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(2)
                .arg(&self.key)
                .arg(format!("{}:released", self.key))
                .arg(&self.token)
                .query::<i64>(c)
        });
        if let Err((_, e)) = released {
            tracing::debug!(
                lock = %self.state.describe,
                error = %error_chain(&e),
                "lockutils: cannot release the Redis key; it will expire"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_ttl_and_tls_files() {
        let r = Redis::new("redis://u:pw@h:6379/0?ttl=3").unwrap();
        assert_eq!(r.inner().ttl, Duration::from_secs(3));
        assert_eq!(r.inner().url, "redis://u:***@h:6379/0?ttl=3");
        for bad in [
            "redis://h?ttl=0",
            "redis://h?cacert=/ca.pem",
            "rediss://h?cert=/c.pem",
            "rediss://h?cacert=/nonexistent/ca.pem",
        ] {
            let e = Redis::new(bad).err().unwrap_or_else(|| panic!("{bad}"));
            assert!(e.to_string().contains("configure"), "{e}");
        }
    }

    #[test]
    fn tokens_are_unique() {
        assert_ne!(new_token(), new_token());
    }
}
