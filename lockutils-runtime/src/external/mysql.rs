//! MySQL and MariaDB user-level locks (`mysql://user:password@host:3306/db`):
//! `GET_LOCK`, which takes several locks per session on MySQL 5.7 and
//! later and MariaDB 10.0.2 and later.
//!
//! * **Name**: `lockutils:` + the full lock name when that is at most 64
//!   bytes of printable ASCII without capital letters and the name does
//!   not start with `sha256:`; otherwise `lockutils:sha256:` + the first
//!   20 bytes of SHA-256(name) in lowercase hex (57 characters). MySQL
//!   takes at most 64 characters and compares names without case, so
//!   `Foo` and `foo` would be one lock there; MariaDB compares bytes and
//!   takes 192. With `compat=tooz`, the name's bytes as they are, as tooz
//!   sends them (see `tooz.rs`). Names are sent as hex literals (binary
//!   strings), never spliced in as text.
//! * **Sessions**: a held lock owns one dedicated session (`GET_LOCK` is
//!   re-entrant per session, so two holders must never share one) until
//!   it is released with `RELEASE_LOCK`; the session then goes back to an
//!   idle pool (at most [`MAX_IDLE`], reused only while the server still
//!   keeps it open). A session whose release did not answer `1` is closed,
//!   which makes the server release whatever it held.
//! * **Waiting** happens in the server: `GET_LOCK(name, 0)` for
//!   `blocking(false)`, `GET_LOCK(name, left)` for a deadline (MariaDB
//!   waits fractions of a second; MySQL whole seconds, so the wait is
//!   rounded up there), and for a plain blocking lock `GET_LOCK(name, 30)`
//!   again and again ([`WAIT_CHUNK`]), each under a client-side limit, so
//!   that a server that vanished during a wait is noticed. A wait that
//!   gives up leaves nothing on the server.
//! * **Dead holders**: the server ends a session when its client's socket
//!   closes (a killed process), and with it its locks. For a client host
//!   that vanishes, each session sets its `wait_timeout` (the server's
//!   idle limit) to 10 s (`mysql_url::DEFAULT_WAIT_TIMEOUT`, `?wait_timeout=`
//!   in the URL): the holder's check (below) talks to the server every
//!   second, so only a holder that stopped talking (host gone, process
//!   frozen) loses its session and lock, about 10 s later.
//!   `max_statement_time` (MariaDB) or `max_execution_time` (MySQL) is 0
//!   for our sessions, so no server default cuts a wait short.
//! * **Lost locks**: a task on the backend's runtime pings every held
//!   session every [`CHECK_EVERY`] (answered within [`ALIVE_TIMEOUT`]);
//!   a session that ended (`KILL`, a restart) or does not answer makes its
//!   lock lost: the flag `is_lost()` reads (it asks no one) is set, a
//!   `tracing` warning says so and `LockGuard::lost` completes.
//! * **Fencing tokens**: on MariaDB 10.3 and later with a database in the
//!   URL, `NEXTVAL(lockutils_fence)`, a sequence created on first connect
//!   (`CREATE SEQUENCE IF NOT EXISTS`), drawn right after the lock is
//!   granted: it grows with every acquisition of any lock on the server
//!   (sequences are not transactional: no commit, no row lock). MySQL has
//!   no sequences (a counter row would cost a logged write per
//!   acquisition): no token there, nor without the right to create it.
//! * **Elections**: the leader's lock is the lock of the same name; once
//!   granted, its session writes its identity, fencing token and
//!   `CONNECTION_ID()` into the table [`LEADERS_TABLE`] of the URL's
//!   database (created by the first election; without a database in the
//!   URL, or the right to create it, an election fails saying so). Anyone
//!   reads the leader as the row whose connection is the one
//!   `IS_USED_LOCK` names: a row left by a leader whose session is gone is
//!   never shown. A holder with no row (a plain lock) is a leader with an
//!   empty identity.
//! * **Galera** (MariaDB Galera Cluster, Percona XtraDB Cluster): `GET_LOCK`
//!   is not replicated; each node has its own locks. Point every user of
//!   a lock at the same node (or at a proxy that sends them all to one
//!   writer node); two clients on two nodes both get the lock.
//! * **TLS and URL options**: see `mysql_url.rs`. The password is never
//!   shown (messages carry the URL with it as `***`).
//! * **Shared** (reader) mode is refused with `LockError::Backend`: user
//!   locks have one owner.

use std::sync::{Arc, Once, OnceLock, Weak};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;

use super::Target;
use super::lost::LostFlag;
use super::mysql_url::{self, SslMode};
use super::server::{Leader, NO_TOOZ_ELECTIONS, Server, ServerLock, error_chain, outside_runtime};
use super::tooz::Scheme;
use crate::config::redact;
use crate::error::LockError;
use crate::spec::{Mode, Wait};

/// Idle sessions kept for reuse; more are closed when released.
pub(crate) const MAX_IDLE: usize = 16;

/// How often each held session is checked.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a held session's check waits for the server to answer.
pub(crate) const ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest single `GET_LOCK` wait, in seconds; a longer wait asks again.
const WAIT_CHUNK: u64 = 30;

/// How long past its own timeout a statement may take to answer before
/// the server counts as gone.
const ANSWER_SLACK: Duration = Duration::from_secs(10);

/// The prefix of our lock names.
const PREFIX: &str = "lockutils:";

/// The longest name taken as it is (MySQL's limit, in characters).
const MAX_NAME: usize = 64;

/// The sequence fencing tokens come from.
const FENCE_SEQUENCE: &str = "lockutils_fence";

/// The table elections record their leaders in (see the module docs).
pub(crate) const LEADERS_TABLE: &str = "lockutils_leaders";

const CREATE_LEADERS: &str = "CREATE TABLE IF NOT EXISTS lockutils_leaders (\
     name VARBINARY(255) PRIMARY KEY, identity TEXT NOT NULL, \
     fencing_token BIGINT UNSIGNED NULL, connection_id BIGINT UNSIGNED NOT NULL, \
     since TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))";

/// MySQL's "no such table" and "no database selected".
const NO_TABLE: [u16; 2] = [1146, 1046];

/// The `GET_LOCK` name of a full lock name (see the module docs).
pub(crate) fn lock_name(name: &str, scheme: Scheme) -> Vec<u8> {
    if scheme == Scheme::Tooz {
        return name.as_bytes().to_vec();
    }
    let plain = name
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && !b.is_ascii_uppercase());
    if plain && PREFIX.len() + name.len() <= MAX_NAME && !name.starts_with("sha256:") {
        return format!("{PREFIX}{name}").into_bytes();
    }
    let digest = Sha256::digest(name.as_bytes());
    format!("{PREFIX}sha256:{}", hex(&digest[..20])).into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` as an SQL hex literal (a binary string): `X'6c6f636b'`.
fn literal(bytes: &[u8]) -> String {
    format!("X'{}'", hex(bytes))
}

/// A MySQL or MariaDB server used as a lock server.
pub(crate) struct Mysql {
    inner: Arc<Inner>,
}

struct Inner {
    settings: mysql_url::Settings,
    /// The URL without its password, for messages.
    url: String,
    runtime: Runtime,
    idle: Mutex<Vec<Idle>>,
    /// What the server is, learnt on the first connect.
    server: OnceLock<Flavour>,
    /// `VERIFY_CA`: the options with the certificate's name to check,
    /// learnt by a probe (`mysql_tls.rs`); again after a failed session.
    verified: Mutex<Option<Opts>>,
    /// The held sessions, for the checking task.
    held: Mutex<Vec<Weak<Held>>>,
    checking: Once,
    /// Whether [`LEADERS_TABLE`] exists (made by the first election):
    /// `Err` says why not.
    leaders: tokio::sync::OnceCell<Result<(), String>>,
}

/// A session in the idle pool, and since when it is idle.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// What the server turned out to be.
#[derive(Clone, Copy, Debug)]
struct Flavour {
    mariadb: bool,
    /// Whether [`FENCE_SEQUENCE`] exists.
    fencing: bool,
}

impl Mysql {
    /// Parses the URL and starts the runtime; connects on first use.
    pub(crate) fn new(url: &str) -> Result<Mysql, LockError> {
        let bad = |cause: String| LockError::Backend {
            name: String::new(),
            backend: redact(url),
            op: "configure",
            cause,
        };
        let settings = mysql_url::parse(url).map_err(bad)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lockutils-mysql")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start its runtime: {e}")))?;
        let inner = Inner {
            settings,
            url: redact(url),
            runtime,
            idle: Mutex::new(Vec::new()),
            server: OnceLock::new(),
            verified: Mutex::new(None),
            held: Mutex::new(Vec::new()),
            checking: Once::new(),
            leaders: tokio::sync::OnceCell::new(),
        };
        Ok(Mysql {
            inner: Arc::new(inner),
        })
    }
}

impl Server for Mysql {
    fn lock(&self, t: &Target<'_>, wait: Wait) -> Result<Option<Box<dyn ServerLock>>, LockError> {
        let (name, mode) = (t.name, t.mode);
        let wait = wait.start();
        let inner = &self.inner;
        if t.identity.is_some() && inner.settings.scheme == Scheme::Tooz {
            let why = NO_TOOZ_ELECTIONS.to_owned();
            return Err(inner.error(name, "elect a leader", why));
        }
        if mode == Mode::Shared {
            return Err(inner.error(
                name,
                "lock",
                "MySQL user locks have no shared (reader) mode: take it exclusive, or use \
                 PostgreSQL or etcd for reader/writer locks"
                    .into(),
            ));
        }
        let key = lock_name(name, inner.settings.scheme);
        let got = outside_runtime(|| {
            inner.runtime.block_on(async {
                let got = inner.acquire(name, &key, wait).await?;
                match (got, t.identity) {
                    (Some((mut conn, fence)), Some(identity)) => {
                        // On failure the session closes as `conn` drops,
                        // and the lock with it.
                        inner
                            .record_leader(&mut conn, name, &key, identity, fence)
                            .await?;
                        Ok(Some((conn, fence)))
                    }
                    (got, _) => Ok(got),
                }
            })
        })?;
        Ok(got.map(|(conn, fence)| {
            Box::new(MysqlLock::new(inner.clone(), conn, key, fence)) as Box<dyn ServerLock>
        }))
    }

    fn leader(&self, name: &str) -> Result<Option<Leader>, LockError> {
        let inner = &self.inner;
        if inner.settings.scheme == Scheme::Tooz {
            let why = NO_TOOZ_ELECTIONS.to_owned();
            return Err(inner.error(name, "elect a leader", why));
        }
        let key = lock_name(name, inner.settings.scheme);
        outside_runtime(|| inner.runtime.block_on(inner.leader(name, &key)))
    }
}

impl Inner {
    /// Records `identity` as the leader of `name` (server name `key`) on
    /// `conn`, the session that has just been granted its lock.
    async fn record_leader(
        &self,
        conn: &mut Conn,
        name: &str,
        key: &[u8],
        identity: &str,
        fence: Option<u64>,
    ) -> Result<(), LockError> {
        let made = self
            .leaders
            .get_or_init(|| async {
                if self.settings.opts.db_name().is_none() {
                    return Err(format!(
                        "elections need a database in the URL (mysql://user@host/DB) for \
                         the table {LEADERS_TABLE}"
                    ));
                }
                conn.query_drop(CREATE_LEADERS).await.map_err(|e| {
                    format!(
                        "cannot create the table {LEADERS_TABLE} that records leaders \
                         (create it, or grant CREATE): {}",
                        error_chain(&e)
                    )
                })
            })
            .await;
        if let Err(why) = made {
            return Err(self.error(name, "record the leader", why.clone()));
        }
        let sql = format!(
            "INSERT INTO {LEADERS_TABLE} (name, identity, fencing_token, connection_id) \
             VALUES ({}, ?, ?, CONNECTION_ID()) ON DUPLICATE KEY UPDATE \
             identity = VALUES(identity), fencing_token = VALUES(fencing_token), \
             connection_id = VALUES(connection_id), since = CURRENT_TIMESTAMP(3)",
            literal(key)
        );
        conn.exec_drop(sql, (identity, fence))
            .await
            .map_err(|e| self.error(name, "record the leader", error_chain(&e)))
    }

    /// The session `IS_USED_LOCK` names for `key`, and the row it wrote.
    async fn leader(&self, name: &str, key: &[u8]) -> Result<Option<Leader>, LockError> {
        let mut conn = match self.pop_idle() {
            Some(c) => c,
            None => self.connect(name).await?,
        };
        let failed = |e: mysql_async::Error| self.error(name, "read the leader", error_chain(&e));
        let holder: Option<Option<u64>> = conn
            .query_first(format!("SELECT IS_USED_LOCK({})", literal(key)))
            .await
            .map_err(failed)?;
        let Some(id) = holder.flatten() else {
            self.give_back(conn);
            return Ok(None);
        };
        let sql = format!(
            "SELECT identity, fencing_token FROM {LEADERS_TABLE} \
             WHERE name = {} AND connection_id = {id}",
            literal(key)
        );
        let row: Result<Option<(String, Option<u64>)>, _> = conn.query_first(sql).await;
        let leader = match row {
            Ok(Some((identity, token))) => Leader::new(identity, token),
            Ok(None) => Leader::new(String::new(), None),
            Err(mysql_async::Error::Server(e)) if NO_TABLE.contains(&e.code) => {
                Leader::new(String::new(), None)
            }
            Err(e) => return Err(failed(e)),
        };
        self.give_back(conn);
        Ok(Some(leader))
    }
}

/// What one attempt found: the lock (with a fencing token if one was
/// drawn), or busy.
type Attempt = Option<Option<u64>>;

impl Inner {
    fn error(&self, name: &str, op: &'static str, cause: String) -> LockError {
        LockError::Backend {
            name: name.to_owned(),
            backend: self.url.clone(),
            op,
            cause,
        }
    }

    /// Takes `key` on an idle or new session. `Some`: the session, now
    /// holding the lock, and the fencing token; `None`: busy, the session
    /// went back.
    async fn acquire(
        &self,
        name: &str,
        key: &[u8],
        wait: Wait,
    ) -> Result<Option<(Conn, Option<u64>)>, LockError> {
        if let Some(mut conn) = self.pop_idle() {
            match self.attempt(&mut conn, key, wait).await {
                Ok(got) => return Ok(self.settle(conn, got)),
                // Most likely a session the server ended meanwhile (a
                // restart, an administrator), and the other idle ones with
                // it: drop them all and try once on a new session, which
                // reports any error that persists.
                Err(_) => {
                    let stale = std::mem::take(&mut *self.idle.lock());
                    drop(stale);
                    drop(conn);
                }
            }
        }
        let mut conn = self.connect(name).await?;
        let got = self.attempt(&mut conn, key, wait).await;
        match got {
            Ok(got) => Ok(self.settle(conn, got)),
            // The session is closed as `conn` drops: nothing stays locked.
            Err(cause) => Err(self.error(name, "lock", cause)),
        }
    }

    fn settle(&self, conn: Conn, got: Attempt) -> Option<(Conn, Option<u64>)> {
        match got {
            Some(fence) => Some((conn, fence)),
            None => {
                self.give_back(conn);
                None
            }
        }
    }

    /// Runs `GET_LOCK` until it answers for `wait`.
    async fn attempt(&self, conn: &mut Conn, key: &[u8], wait: Wait) -> Result<Attempt, String> {
        let mariadb = self.server.get().is_some_and(|s| s.mariadb);
        loop {
            let (seconds, limit) = match wait {
                Wait::Try => ("0".to_owned(), Duration::ZERO),
                Wait::Block | Wait::Timeout(_) => {
                    (WAIT_CHUNK.to_string(), Duration::from_secs(WAIT_CHUNK))
                }
                Wait::Until { deadline, .. } => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = left.as_millis().min(u128::from(WAIT_CHUNK) * 1000) as u64;
                    let seconds = if mariadb {
                        format!("{}.{:03}", ms / 1000, ms % 1000)
                    } else {
                        ms.div_ceil(1000).to_string()
                    };
                    (seconds, Duration::from_millis(ms))
                }
            };
            let sql = format!("SELECT GET_LOCK({}, {seconds})", literal(key));
            let answer = tokio::time::timeout(limit + ANSWER_SLACK, conn.query_first(sql)).await;
            let got: Option<Option<i64>> = match answer {
                Ok(r) => r.map_err(|e| error_chain(&e))?,
                Err(_) => return Err(format!("no answer within {:?}", limit + ANSWER_SLACK)),
            };
            match got.flatten() {
                Some(1) => return Ok(Some(self.fence(conn).await)),
                Some(0) => match wait {
                    Wait::Try => return Ok(None),
                    Wait::Until { deadline, .. } if Instant::now() >= deadline => return Ok(None),
                    _ => continue,
                },
                // NULL: an error in the server (out of memory, the
                // statement killed).
                Some(other) => return Err(format!("GET_LOCK answered {other}")),
                None => {
                    return Err("GET_LOCK answered NULL (killed, or an error in the server)".into());
                }
            }
        }
    }

    /// Draws a fencing token on `conn`, which has just got its lock.
    async fn fence(&self, conn: &mut Conn) -> Option<u64> {
        if !self.server.get().is_some_and(|s| s.fencing) {
            return None;
        }
        let sql = format!("SELECT NEXTVAL({FENCE_SEQUENCE})");
        match conn.query_first::<u64, _>(sql).await {
            Ok(token) => token,
            Err(e) => {
                tracing::debug!(backend = %self.url, error = %error_chain(&e), "lockutils: no fencing token");
                None
            }
        }
    }

    /// An idle session the server still keeps open.
    fn pop_idle(&self) -> Option<Conn> {
        // The server closes a session idle for wait_timeout; keep a margin.
        let fresh = Duration::from_secs(self.settings.wait_timeout) / 2;
        let mut idle = self.idle.lock();
        while let Some(Idle { conn, since }) = idle.pop() {
            if since.elapsed() < fresh {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an unlocked session for reuse, unless enough are kept.
    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// A new session with our settings made.
    async fn connect(&self, name: &str) -> Result<Conn, LockError> {
        let limit = self.settings.connect_timeout;
        let made = tokio::time::timeout(limit, self.session()).await;
        let mut cause = match made {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(cause)) => cause,
            Err(_) => format!("no connection within {limit:?}"),
        };
        // The probe's verdict may be stale (a new certificate): ask again.
        self.verified.lock().take();
        if self.settings.mode != SslMode::Disabled
            && cause.contains("does not have this capability")
        {
            cause.push_str(" (the server does not support TLS)");
        }
        Err(self.error(name, "connect", cause))
    }

    /// The options to connect with: the URL's, or for `VERIFY_CA` those
    /// with the name the probe found in the server's certificate.
    async fn opts(&self) -> Result<Opts, String> {
        let Some(probe) = &self.settings.probe else {
            return Ok(self.settings.opts.clone());
        };
        if let Some(opts) = self.verified.lock().clone() {
            return Ok(opts);
        }
        let name = probe
            .certificate_name(self.settings.connect_timeout)
            .await?;
        let opts = &self.settings.opts;
        let ssl = opts
            .ssl_opts()
            .cloned()
            .map(|ssl| ssl.with_danger_tls_hostname_override(Some(name)));
        let opts: Opts = OptsBuilder::from_opts(opts.clone()).ssl_opts(ssl).into();
        *self.verified.lock() = Some(opts.clone());
        Ok(opts)
    }

    async fn session(&self) -> Result<Conn, String> {
        let chain = |e: mysql_async::Error| error_chain(&e);
        let mut conn = Conn::new(self.opts().await?).await.map_err(chain)?;
        let server = match self.server.get() {
            Some(s) => *s,
            None => {
                let server = self.learn(&mut conn).await.map_err(chain)?;
                *self.server.get_or_init(|| server)
            }
        };
        let limit = if server.mariadb {
            "max_statement_time"
        } else {
            "max_execution_time"
        };
        let wait_timeout = self.settings.wait_timeout;
        conn.query_drop(format!(
            "SET SESSION wait_timeout = {wait_timeout}, {limit} = 0"
        ))
        .await
        .map_err(chain)?;
        Ok(conn)
    }

    /// What the server is, and whether it can give fencing tokens.
    async fn learn(&self, conn: &mut Conn) -> Result<Flavour, mysql_async::Error> {
        let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
        let mariadb = version.as_deref().is_some_and(|v| v.contains("MariaDB"));
        let mut fencing = false;
        if mariadb && conn.server_version() >= (10, 3, 0) && self.settings.opts.db_name().is_some()
        {
            let made = conn
                .query_drop(format!("CREATE SEQUENCE IF NOT EXISTS {FENCE_SEQUENCE}"))
                .await;
            match made {
                Ok(()) => fencing = true,
                Err(e) => tracing::debug!(
                    backend = %self.url,
                    error = %error_chain(&e),
                    "lockutils: no fencing tokens: cannot create the sequence {FENCE_SEQUENCE}"
                ),
            }
        }
        Ok(Flavour { mariadb, fencing })
    }
}

/// A user lock held by one session.
struct MysqlLock {
    inner: Arc<Inner>,
    held: Arc<Held>,
    key: Vec<u8>,
    fence: Option<u64>,
}

/// What a hold shares with the checking task.
struct Held {
    /// `None` once released.
    conn: tokio::sync::Mutex<Option<Conn>>,
    lost: Arc<LostFlag>,
    describe: String,
}

impl MysqlLock {
    fn new(inner: Arc<Inner>, conn: Conn, key: Vec<u8>, fence: Option<u64>) -> MysqlLock {
        let describe = format!(
            "{} GET_LOCK({}) (IS_USED_LOCK gives session {})",
            inner.url,
            String::from_utf8_lossy(&key),
            conn.id()
        );
        let held = Arc::new(Held {
            conn: tokio::sync::Mutex::new(Some(conn)),
            lost: LostFlag::new(),
            describe,
        });
        inner.held.lock().push(Arc::downgrade(&held));
        let checked = inner.clone();
        inner.checking.call_once(|| {
            inner.runtime.spawn(checked.check_forever());
        });
        MysqlLock {
            inner,
            held,
            key,
            fence,
        }
    }
}

impl Inner {
    /// The checking task: every [`CHECK_EVERY`], pings each held session.
    async fn check_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let held: Vec<Arc<Held>> = {
                let mut list = self.held.lock();
                list.retain(|w| w.strong_count() > 0);
                list.iter().filter_map(Weak::upgrade).collect()
            };
            for h in held {
                let mut conn = h.conn.lock().await;
                let Some(c) = conn.as_mut() else { continue };
                if h.lost.is_set() {
                    continue;
                }
                let why = match tokio::time::timeout(ALIVE_TIMEOUT, c.ping()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => error_chain(&e),
                    Err(_) => format!("no answer within {ALIVE_TIMEOUT:?}"),
                };
                h.lost.set(
                    &h.describe,
                    &format!("the session holding it is gone: {why}"),
                );
            }
        }
    }
}

impl ServerLock for MysqlLock {
    fn describe(&self) -> String {
        self.held.describe.clone()
    }

    fn fencing_token(&self) -> Option<u64> {
        self.fence
    }

    /// The checking task's verdict; asks no one.
    fn is_lost(&self) -> bool {
        self.held.lost.is_set()
    }

    fn lost_flag(&self) -> Option<Arc<LostFlag>> {
        Some(self.held.lost.clone())
    }
}

impl Drop for MysqlLock {
    fn drop(&mut self) {
        self.held.lost.released();
        let inner = &self.inner;
        let (held, key) = (&self.held, &self.key);
        outside_runtime(|| {
            inner.runtime.block_on(async {
                let Some(mut conn) = held.conn.lock().await.take() else {
                    return;
                };
                let sql = format!("SELECT RELEASE_LOCK({})", literal(key));
                let answer = tokio::time::timeout(ANSWER_SLACK, conn.query_first(sql)).await;
                match answer {
                    Ok(Ok(Some(Some(1i64)))) if !held.lost.is_set() => inner.give_back(conn),
                    // Not held (or no answer): closing the session is the
                    // one way to be sure nothing stays locked by it.
                    _ => drop(conn),
                }
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_names_are_kept_and_others_digested() {
        assert_eq!(
            lock_name("nova-iptables", Scheme::Lockutils),
            b"lockutils:nova-iptables"
        );
        let long = "x".repeat(55);
        let digested = String::from_utf8(lock_name(&long, Scheme::Lockutils)).unwrap();
        assert!(digested.starts_with("lockutils:sha256:"), "{digested}");
        assert_eq!(digested.len(), 57);
        assert_eq!(lock_name(&"x".repeat(54), Scheme::Lockutils).len(), 64);
        // Case, non-ASCII and a name that looks like a digest are digested.
        for name in ["Foo", "é", "sha256:00"] {
            let n = String::from_utf8(lock_name(name, Scheme::Lockutils)).unwrap();
            assert!(n.starts_with("lockutils:sha256:"), "{name}: {n}");
        }
        assert_ne!(
            lock_name("Foo", Scheme::Lockutils),
            lock_name("foo", Scheme::Lockutils)
        );
        // sha256("abc") = ba7816bf 8f01cfea ...
        assert_eq!(
            lock_name("abc", Scheme::Lockutils),
            b"lockutils:abc".to_vec()
        );
        assert!(
            String::from_utf8(lock_name("ABC", Scheme::Lockutils))
                .unwrap()
                .ends_with(&hex(&Sha256::digest(b"ABC")[..20]))
        );
        assert_eq!(lock_name("Foo é", Scheme::Tooz), "Foo é".as_bytes());
    }

    #[test]
    fn names_are_hex_literals() {
        assert_eq!(literal(b"a'b"), "X'612762'");
    }

    #[test]
    fn bad_urls_are_reported_without_password() {
        let e = Mysql::new("mysql://u:secret@h/db?nonsense=1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("mysql://u:***@h/db"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
