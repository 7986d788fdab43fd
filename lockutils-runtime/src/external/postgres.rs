//! PostgreSQL session-level advisory locks (`postgres://...`).
//!
//! * **Key**: the first 8 bytes of the SHA-256 of the full lock name (UTF-8),
//!   read big-endian as a signed 64-bit integer, passed to the one-argument
//!   `pg_advisory_lock(bigint)` family. Every host and process computes the
//!   same key; distinct names collide with probability about n²/2⁶⁵ (tooz
//!   keeps only 16 bits, where `lock-2` and `lock-137` already collide).
//!   `pg_locks` shows the key as `classid = key >> 32`,
//!   `objid = key & 0xffffffff`, `objsubid = 1`.
//! * **Sessions**: a held lock owns one dedicated session (advisory locks
//!   are re-entrant per session, so two holders must never share one) until
//!   it is released; the session then goes back to an idle pool (at most
//!   [`MAX_IDLE`] kept) for the next acquisition. A session whose unlock
//!   failed is closed instead, which makes the server release everything it
//!   held: a locked session never returns to the pool.
//! * **Waiting** happens in the server: `pg_try_advisory_lock` for
//!   `blocking(false)`, `pg_advisory_lock` to block, and for a deadline
//!   `SET LOCAL lock_timeout` plus `pg_advisory_lock` in one round trip,
//!   where SQLSTATE 55P03 (`lock_not_available`) means "busy". No client-side
//!   polling.
//! * **Dead holders**: the server ends a session when its client dies, and
//!   with it the session's locks. A killed process closes its socket, so the
//!   lock is free at once. A host that vanishes is detected by the server's
//!   TCP keepalive, which every session sets for itself with `set_config`
//!   right after connecting ([`SESSION_SETTINGS`]; not the `options`
//!   startup parameter, which PgBouncer refuses by default): 5 s idle, then 3 probes 2 s apart, so the locks
//!   of a dead or unreachable host are free after about 11 s;
//!   `tcp_user_timeout` = 10 s bounds the time unacknowledged data may wait.
//!   The client side uses the same figures.
//! * **Lost locks**: one thread per backend checks every held session
//!   every [`CHECK_EVERY`] (an empty query, answered within
//!   [`ALIVE_TIMEOUT`]); a session that ended or does not answer makes its
//!   lock lost: the flag `is_lost()` reads (it asks no one) is set, a
//!   `tracing` warning says so and `LockGuard::lost` completes. A session
//!   terminated by the server is told within about a second.
//! * **Fencing tokens**: `nextval('lockutils_fence')`, a sequence created
//!   on first connect (`CREATE SEQUENCE IF NOT EXISTS`), drawn in the same
//!   round trip right after the lock is granted: it grows with every
//!   acquisition of any lock on the server. A sequence rather than a
//!   counter row, because `nextval` is not transactional: no commit, no
//!   row lock, no extra round trip. Without the right to create it (e.g.
//!   PostgreSQL 15's `public` schema) locks work and have no token.
//!   `statement_timeout`, `lock_timeout` and `idle_session_timeout` are set
//!   to 0 for our sessions, so server defaults cannot cut a wait short or
//!   end a session that sits idle while it holds a lock.
//!
//! * **Poolers**: PgBouncer in session mode works (the settings above then
//!   apply between PgBouncer and the server; PgBouncer's own
//!   `tcp_keepalive` settings cover the client side). Transaction or
//!   statement pooling would run a lock and its unlock on different server
//!   sessions, so the first connection checks: a second session's first
//!   statement must not run on the first session's server backend, and the
//!   first session's next two statements must run on the same backend as
//!   its first (`pg_backend_pid()`; two, because a pooler handing out idle
//!   server connections in turn, as PgBouncer's `server_round_robin` does,
//!   can bring one statement back to it). Otherwise every lock fails with a
//!   `LockError::Backend` that says so.
//!
//! Any of the client settings may be overridden in the URL
//! (`?keepalives_idle=30&connect_timeout=10`, as libpq names them).
//!
//! * **Elections**: the leader's lock is the lock of the same name; once
//!   it is granted, the leader's session writes its identity, fencing
//!   token and `pg_backend_pid()` into the table [`LEADERS_TABLE`]
//!   (created on the first election, `CREATE TABLE IF NOT EXISTS`; an
//!   election fails, saying so, without the right to create it). Anyone
//!   reads the leader by joining `pg_locks` (the backend that holds the
//!   advisory lock, in this database) with that row: a row whose backend
//!   no longer holds the lock is stale and never shown. A holder with no
//!   row (a plain lock) is a leader with an empty identity.
//!
//! * **fork without exec**: a child never uses the parent's sessions (their
//!   sockets are shared with the parent); its first lock makes its own
//!   pool and checking thread. A guard it inherited is the parent's lock:
//!   `is_lost()` is `true` there, and dropping it neither unlocks nor ends
//!   the parent's session (the client is kept, unused).
//!
//! * **TLS**: `?sslmode=verify-full&sslrootcert=/ca.pem` (also `require`,
//!   `verify-ca`, and `sslcert`/`sslkey` for a client certificate), with
//!   libpq's meanings; see [`pg_tls`]. Never a fallback to
//!   plaintext.
//! * **Password**: in the URL, else from `PGPASSWORD`; neither is ever
//!   shown (messages carry the URL with the password as `***`).
//! * **`compat=tooz`**: the key is tooz's instead, the two-integer
//!   `pg_advisory_lock(k1, k2)` with the first two bytes of MD5(name) (see
//!   `tooz.rs`); everything else is the same.

use std::fmt;
use std::sync::{Arc, Once, OnceLock, Weak};
use std::time::{Duration, Instant};

use ::postgres::config::SslMode as PgSslMode;
use ::postgres::error::SqlState;
use ::postgres::{Client, Config, NoTls, SimpleQueryMessage};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::Target;
use super::lost::LostFlag;
use super::pg_tls;
use super::server::{
    Leader, NO_TOOZ_ELECTIONS, Server, ServerLock, error_chain as chain, outside_runtime,
};
use super::tooz::{self, Scheme};
use crate::config::redact;
use crate::error::LockError;
use crate::fork::PerProcess;
use crate::spec::{Mode, Wait};

/// Idle sessions kept for reuse; more are closed when released.
pub(crate) const MAX_IDLE: usize = 16;

/// Settings for the server's half of each session, made right after
/// connecting; a setting this server does not know is skipped.
pub(crate) const SESSION_SETTINGS: &str = "SELECT count(set_config(name, value, false)) FROM \
     (VALUES ('tcp_keepalives_idle', '5'), ('tcp_keepalives_interval', '2'), \
     ('tcp_keepalives_count', '3'), ('tcp_user_timeout', '10000'), ('statement_timeout', '0'), \
     ('lock_timeout', '0'), ('idle_session_timeout', '0')) AS s(name, value) \
     WHERE name IN (SELECT name FROM pg_settings)";

/// How long a held session's check waits for the server to answer.
pub(crate) const ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often each held session is checked.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The sequence fencing tokens come from.
const FENCE_SEQUENCE: &str = "lockutils_fence";

/// The table elections record their leaders in (see the module docs).
pub(crate) const LEADERS_TABLE: &str = "lockutils_leaders";

const CREATE_LEADERS: &str = "CREATE TABLE IF NOT EXISTS lockutils_leaders (\
     name text PRIMARY KEY, identity text NOT NULL, fencing_token bigint, \
     pid integer NOT NULL, since timestamptz NOT NULL DEFAULT now())";

const RECORD_LEADER: &str = "INSERT INTO lockutils_leaders (name, identity, fencing_token, pid) \
     VALUES ($1, $2, $3, pg_backend_pid()) ON CONFLICT (name) DO UPDATE SET \
     identity = EXCLUDED.identity, fencing_token = EXCLUDED.fencing_token, \
     pid = EXCLUDED.pid, since = now()";

/// The advisory-lock key of a full lock name (see the module docs).
pub(crate) fn key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The arguments of the advisory-lock functions for one lock name: our
/// one 64-bit key, or tooz's two integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AdvisoryKey {
    One(i64),
    Two(i32, i32),
}

impl AdvisoryKey {
    fn of(name: &str, scheme: Scheme) -> AdvisoryKey {
        match scheme {
            Scheme::Lockutils => AdvisoryKey::One(key(name)),
            Scheme::Tooz => {
                let (k1, k2) = tooz::pg_keys(name);
                AdvisoryKey::Two(k1, k2)
            }
        }
    }

    /// How `pg_locks` shows it.
    fn pg_locks(self) -> String {
        match self {
            AdvisoryKey::One(k) => {
                let k = k as u64;
                format!("classid {}, objid {}, objsubid 1", k >> 32, k & 0xffff_ffff)
            }
            AdvisoryKey::Two(k1, k2) => format!("classid {k1}, objid {k2}, objsubid 2"),
        }
    }
}

impl fmt::Display for AdvisoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdvisoryKey::One(k) => write!(f, "{k}"),
            AdvisoryKey::Two(k1, k2) => write!(f, "{k1}, {k2}"),
        }
    }
}

/// A PostgreSQL server used as a lock server.
pub(crate) struct Postgres {
    /// Each process's own sessions: a forked child never uses the
    /// parent's (their sockets are the parent's too).
    pool: PerProcess<Arc<Pool>>,
    scheme: Scheme,
}

/// The connection settings and the idle sessions.
struct Pool {
    config: Config,
    /// The TLS connector, when the URL asks for TLS.
    tls: Option<MakeRustlsConnect>,
    /// The URL without its password, for messages.
    url: String,
    idle: Mutex<Vec<Client>>,
    /// Whether [`FENCE_SEQUENCE`] exists (decided on the first connect).
    fencing: OnceLock<bool>,
    /// Whether [`LEADERS_TABLE`] exists (made by the first election):
    /// `Err` says why not.
    leaders: OnceLock<Result<(), String>>,
    /// Whether sessions are real (not pooled per transaction), found by
    /// the first connect: `Err` says why not.
    sessions: OnceLock<Result<(), String>>,
    /// The held sessions, for the checking thread.
    held: Mutex<Vec<Weak<Held>>>,
    checking: Once,
}

impl Postgres {
    /// Parses the URL; connects only when a lock is first taken.
    pub(crate) fn new(url: &str) -> Result<Postgres, LockError> {
        let bad = |cause: String| LockError::Backend {
            name: String::new(),
            backend: redact(url),
            op: "configure",
            cause,
        };
        let (url_rest, scheme) = tooz::take_compat(url).map_err(bad)?;
        let (plain_url, tls) = pg_tls::split(&url_rest).map_err(bad)?;
        let mut config: Config = plain_url
            .parse()
            .map_err(|e| bad(format!("not a PostgreSQL URL: {}", chain(&e))))?;
        let tls = tls.client_config().map_err(bad)?.map(|c| {
            // Refuse the session if the server declines TLS.
            config.ssl_mode(PgSslMode::Require);
            MakeRustlsConnect::new(c)
        });
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            config.password(password.as_encoded_bytes());
        }
        let given = |key: &str| {
            url.split_once('?')
                .is_some_and(|(_, q)| q.split('&').any(|kv| kv.split('=').next() == Some(key)))
        };
        if !given("connect_timeout") {
            config.connect_timeout(Duration::from_secs(5));
        }
        if !given("keepalives_idle") {
            config.keepalives_idle(Duration::from_secs(5));
        }
        if !given("keepalives_interval") {
            config.keepalives_interval(Duration::from_secs(2));
        }
        if !given("keepalives_retries") {
            config.keepalives_retries(3);
        }
        if !given("tcp_user_timeout") {
            config.tcp_user_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("lockutils");
        }
        let pool = Pool {
            config,
            tls,
            url: redact(url),
            idle: Mutex::new(Vec::new()),
            fencing: OnceLock::new(),
            leaders: OnceLock::new(),
            sessions: OnceLock::new(),
            held: Mutex::new(Vec::new()),
            checking: Once::new(),
        };
        Ok(Postgres {
            pool: PerProcess::new(Arc::new(pool)),
            scheme,
        })
    }
}

impl Postgres {
    fn pool(&self) -> &Arc<Pool> {
        self.pool
            .renewed(|inherited| Arc::new(inherited.expect("made by new").fresh()))
    }

    fn no_tooz(&self, name: &str) -> Result<(), LockError> {
        if self.scheme == Scheme::Tooz {
            return Err(self
                .pool()
                .failed(name, "elect a leader", NO_TOOZ_ELECTIONS));
        }
        Ok(())
    }
}

impl Server for Postgres {
    fn lock(&self, t: &Target<'_>, wait: Wait) -> Result<Option<Box<dyn ServerLock>>, LockError> {
        let (name, mode) = (t.name, t.mode);
        if t.identity.is_some() {
            self.no_tooz(name)?;
        }
        let wait = wait.start();
        let key = AdvisoryKey::of(name, self.scheme);
        let pool = self.pool();
        let got = outside_runtime(|| {
            let got = pool.run(name, key, mode, wait)?;
            match (got, t.identity) {
                (Some((mut client, fence)), Some(identity)) => {
                    // On failure the session closes as `client` drops,
                    // and the lock with it.
                    pool.record_leader(&mut client, name, identity, fence)?;
                    Ok(Some((client, fence)))
                }
                (got, _) => Ok(got),
            }
        })?;
        Ok(got.map(|(client, fence)| {
            let hold = PgLock::new(pool.clone(), client, key, mode, fence);
            Box::new(hold) as Box<dyn ServerLock>
        }))
    }

    fn leader(&self, name: &str) -> Result<Option<Leader>, LockError> {
        self.no_tooz(name)?;
        let key = AdvisoryKey::of(name, self.scheme);
        let pool = self.pool();
        outside_runtime(|| pool.leader(name, key))
    }
}

impl Pool {
    /// Records `identity` as the leader of `name` on `client`, the session
    /// that has just been granted its lock.
    fn record_leader(
        &self,
        client: &mut Client,
        name: &str,
        identity: &str,
        fence: Option<u64>,
    ) -> Result<(), LockError> {
        let made = self.leaders.get_or_init(|| {
            let made = client.simple_query(CREATE_LEADERS);
            match made {
                Ok(_) => Ok(()),
                // Two first elections may race: "already exists" is fine.
                Err(e)
                    if [SqlState::UNIQUE_VIOLATION, SqlState::DUPLICATE_TABLE]
                        .iter()
                        .any(|c| e.code() == Some(c)) =>
                {
                    Ok(())
                }
                Err(e) => Err(format!(
                    "cannot create the table {LEADERS_TABLE} that records leaders \
                     (create it, or grant CREATE): {}",
                    chain(&e)
                )),
            }
        });
        if let Err(why) = made {
            return Err(self.failed(name, "record the leader", why));
        }
        let token = fence.and_then(|f| i64::try_from(f).ok());
        client
            .execute(RECORD_LEADER, &[&name, &identity, &token])
            .map_err(|e| self.error(name, "record the leader", &e))?;
        Ok(())
    }

    /// The holder of `key` in this database, and what it recorded.
    fn leader(&self, name: &str, key: AdvisoryKey) -> Result<Option<Leader>, LockError> {
        let pooled = self.idle.lock().pop();
        let mut client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.connect(name)?,
        };
        let r = read_leader(&mut client, name, key);
        match r {
            Ok(found) => {
                self.give_back(client);
                Ok(found)
            }
            Err(e) => Err(self.error(name, "read the leader", &e)),
        }
    }
}

/// One look at who holds `key` (`pg_locks`) and at the row it wrote.
fn read_leader(
    client: &mut Client,
    name: &str,
    key: AdvisoryKey,
) -> Result<Option<Leader>, ::postgres::Error> {
    let (classid, objid, objsubid) = match key {
        AdvisoryKey::One(k) => {
            let k = k as u64;
            (k >> 32, k & 0xffff_ffff, 1)
        }
        AdvisoryKey::Two(k1, k2) => (u64::from(k1 as u32), u64::from(k2 as u32), 2),
    };
    let holder = format!(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = {classid} AND objid = {objid} AND objsubid = {objsubid} \
         ORDER BY mode = 'ExclusiveLock' DESC LIMIT 1"
    );
    let rows = client.query(&holder, &[])?;
    let Some(pid) = rows.first().map(|r| r.get::<_, i32>(0)) else {
        return Ok(None);
    };
    let sql = "SELECT identity, fencing_token FROM lockutils_leaders WHERE name = $1 AND pid = $2";
    match client.query(sql, &[&name, &pid]) {
        Ok(rows) => Ok(Some(match rows.first() {
            Some(r) => Leader::new(
                r.get(0),
                r.get::<_, Option<i64>>(1)
                    .and_then(|t| u64::try_from(t).ok()),
            ),
            None => Leader::new(String::new(), None),
        })),
        // No election ever recorded a leader here.
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
            Ok(Some(Leader::new(String::new(), None)))
        }
        Err(e) => Err(e),
    }
}

/// The statement that takes `key`: its last row's first column is `t` or
/// `f` (the `try` functions) or empty (the blocking ones); with `fence`, a
/// last statement (or column) draws the fencing token once it is taken.
fn lock_sql(key: impl fmt::Display, mode: Mode, wait: Wait, fence: bool) -> String {
    let shared = if mode == Mode::Shared { "_shared" } else { "" };
    let token = if fence {
        format!("; SELECT nextval('{FENCE_SEQUENCE}')")
    } else {
        String::new()
    };
    match wait {
        // CASE: the token is drawn only if the lock was taken.
        Wait::Try if fence => format!(
            "SELECT CASE WHEN pg_try_advisory_lock{shared}({key}) \
             THEN nextval('{FENCE_SEQUENCE}')::text ELSE 'f' END"
        ),
        Wait::Try => format!("SELECT pg_try_advisory_lock{shared}({key})"),
        Wait::Block | Wait::Timeout(_) => format!("SELECT pg_advisory_lock{shared}({key}){token}"),
        Wait::Until { deadline, .. } => {
            let left = deadline.saturating_duration_since(Instant::now());
            // Rounded up, so the wait never ends before the deadline; and
            // lock_timeout = 0 would mean "forever": a spent deadline is 1 ms.
            let ms = left.as_micros().div_ceil(1000).clamp(1, i32::MAX as u128);
            // Statements in one query run as one implicit transaction, so
            // SET LOCAL ends with it and the session keeps lock_timeout=0.
            format!("SET LOCAL lock_timeout = {ms}; SELECT pg_advisory_lock{shared}({key}){token}")
        }
    }
}

impl Pool {
    /// The pool of a forked child: the same settings and what the parent
    /// learnt of the server, no sessions (reading `self` only: its mutexes
    /// may have been held by threads the child lacks).
    fn fresh(&self) -> Pool {
        Pool {
            config: self.config.clone(),
            tls: self.tls.clone(),
            url: self.url.clone(),
            idle: Mutex::new(Vec::new()),
            fencing: self
                .fencing
                .get()
                .copied()
                .map_or_else(OnceLock::new, OnceLock::from),
            leaders: self
                .leaders
                .get()
                .cloned()
                .map_or_else(OnceLock::new, OnceLock::from),
            sessions: self
                .sessions
                .get()
                .cloned()
                .map_or_else(OnceLock::new, OnceLock::from),
            held: Mutex::new(Vec::new()),
            checking: Once::new(),
        }
    }

    /// Takes `key` on an idle or new session. `Some`: the session, now
    /// holding the lock, and the fencing token; `None`: busy, the session
    /// went back.
    fn run(
        &self,
        name: &str,
        key: AdvisoryKey,
        mode: Mode,
        wait: Wait,
    ) -> Result<Option<(Client, Option<u64>)>, LockError> {
        let pooled = self.idle.lock().pop();
        if let Some(mut client) = pooled {
            let sql = lock_sql(key, mode, wait, self.fencing());
            match attempt(&mut client, &sql) {
                // Most likely an idle session the server ended meanwhile (a
                // restart, an administrator; the error may still be its
                // FATAL message rather than a closed socket), and the other
                // idle ones with it: drop them all and try once on a new
                // session, which reports any error that persists.
                Err(e) if e.code() != Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    drop(client);
                    let stale = std::mem::take(&mut *self.idle.lock());
                    drop(stale); // closed outside the pool's lock
                }
                r => return self.settle(name, client, r),
            }
        }
        let mut client = self.connect(name)?;
        let sql = lock_sql(key, mode, wait, self.fencing());
        let r = attempt(&mut client, &sql);
        self.settle(name, client, r)
    }

    /// Whether lock statements draw fencing tokens (known once connected).
    fn fencing(&self) -> bool {
        self.fencing.get().copied().unwrap_or(false)
    }

    /// What an attempt on `client` means for the caller.
    fn settle(
        &self,
        name: &str,
        client: Client,
        attempt: Result<Option<Option<u64>>, ::postgres::Error>,
    ) -> Result<Option<(Client, Option<u64>)>, LockError> {
        match attempt {
            Ok(Some(fence)) => Ok(Some((client, fence))),
            Ok(None) => {
                self.give_back(client);
                Ok(None)
            }
            // lock_timeout ran out (a deadline).
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                self.give_back(client);
                Ok(None)
            }
            // The session is closed as `client` drops: nothing stays locked.
            Err(e) => Err(self.error(name, "lock", &e)),
        }
    }

    /// A new session with [`SESSION_SETTINGS`] made.
    fn session(&self) -> Result<Client, ::postgres::Error> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }?;
        client.simple_query(SESSION_SETTINGS)?;
        Ok(client)
    }

    /// Whether statements of one session run on one server backend (see
    /// the module docs): checked with `first` and a second session, once.
    fn check_sessions(&self, first: &mut Client) -> Result<(), ::postgres::Error> {
        if self.sessions.get().is_some() {
            return Ok(());
        }
        let pid = |c: &mut Client| -> Result<String, ::postgres::Error> {
            let rows = c.simple_query("SELECT pg_backend_pid()")?;
            Ok(rows
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default())
        };
        let mine = pid(first)?;
        let mut second = self.session()?;
        let theirs = pid(&mut second)?;
        // Twice: a pooler that hands out its idle server connections in
        // turn (PgBouncer's server_round_robin) may bring the first session
        // back to its backend once, never twice in a row unless it has one.
        let again = [pid(first)?, pid(first)?];
        let verdict = if mine == theirs || again.iter().any(|p| *p != mine) {
            let [a, b] = again;
            Err(format!(
                "the server is behind a pooler in transaction or statement mode: statements \
                 ran on server backends {mine}, {theirs} (another session), {a}, {b}; session \
                 advisory locks need whole sessions: pool_mode = session, or connect directly"
            ))
        } else {
            Ok(())
        };
        drop(second); // closed: the pool grows only with demand
        let _ = self.sessions.set(verdict);
        Ok(())
    }

    fn connect(&self, name: &str) -> Result<Client, LockError> {
        if let Some(Err(why)) = self.sessions.get() {
            return Err(self.refused(name, why));
        }
        let mut client = self
            .session()
            .map_err(|e| self.error(name, "connect", &e))?;
        self.check_sessions(&mut client)
            .map_err(|e| self.error(name, "connect", &e))?;
        if let Some(Err(why)) = self.sessions.get() {
            return Err(self.refused(name, why));
        }
        if self.fencing.get().is_none() {
            let made =
                client.simple_query(&format!("CREATE SEQUENCE IF NOT EXISTS {FENCE_SEQUENCE}"));
            // Two first connects may race: "already exists" is fine too.
            let ok = match &made {
                Ok(_) => true,
                Err(e) => [SqlState::UNIQUE_VIOLATION, SqlState::DUPLICATE_TABLE]
                    .iter()
                    .any(|c| e.code() == Some(c)),
            };
            if let Err(e) = &made
                && !ok
            {
                tracing::debug!(
                    backend = %self.url,
                    error = %chain(e),
                    "lockutils: no fencing tokens: cannot create the sequence {FENCE_SEQUENCE}"
                );
            }
            let _ = self.fencing.set(ok);
        }
        Ok(client)
    }

    /// Keeps an unlocked session for reuse, unless enough are kept.
    fn give_back(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(client);
        } else {
            drop(idle);
            drop(client); // closed outside the pool's lock
        }
    }

    fn failed(&self, name: &str, op: &'static str, why: &str) -> LockError {
        LockError::Backend {
            name: name.to_owned(),
            backend: self.url.clone(),
            op,
            cause: why.to_owned(),
        }
    }

    fn refused(&self, name: &str, why: &str) -> LockError {
        LockError::Backend {
            name: name.to_owned(),
            backend: self.url.clone(),
            op: "connect",
            cause: why.to_owned(),
        }
    }

    fn error(&self, name: &str, op: &'static str, e: &::postgres::Error) -> LockError {
        LockError::Backend {
            name: name.to_owned(),
            backend: self.url.clone(),
            op,
            cause: chain(e),
        }
    }
}

/// Runs a lock statement. `Some(token)`: taken (with the fencing token if
/// one was drawn); `None`: busy.
fn attempt(client: &mut Client, sql: &str) -> Result<Option<Option<u64>>, ::postgres::Error> {
    let rows = client.simple_query(sql)?;
    let value = rows.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("").to_owned()),
        _ => None,
    });
    // `pg_advisory_lock` returns void (an empty value): it waited and got it.
    Ok(match value.as_deref() {
        Some("f") => None,
        Some(v) => Some(v.parse().ok()),
        None => Some(None),
    })
}

/// An advisory lock held by one session of the pool.
struct PgLock {
    pool: Arc<Pool>,
    held: Arc<Held>,
    key: AdvisoryKey,
    mode: Mode,
    fence: Option<u64>,
}

/// What a hold shares with the checking thread.
struct Held {
    /// `None` once released.
    client: Mutex<Option<Client>>,
    lost: Arc<LostFlag>,
    describe: String,
}

impl PgLock {
    fn new(
        pool: Arc<Pool>,
        client: Client,
        key: AdvisoryKey,
        mode: Mode,
        fence: Option<u64>,
    ) -> PgLock {
        let describe = format!(
            "{} advisory lock {key} (pg_locks {})",
            pool.url,
            key.pg_locks()
        );
        let held = Arc::new(Held {
            client: Mutex::new(Some(client)),
            lost: LostFlag::new(),
            describe,
        });
        pool.held.lock().push(Arc::downgrade(&held));
        let checked = pool.clone();
        pool.checking.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("lockutils-postgres".into())
                .spawn(move || checked.check_forever());
            if let Err(e) = spawned {
                tracing::error!(error = %e, "lockutils: cannot start the PostgreSQL check thread");
            }
        });
        PgLock {
            pool,
            held,
            key,
            mode,
            fence,
        }
    }
}

impl Pool {
    /// The checking thread: every [`CHECK_EVERY`], asks each held session
    /// whether it is alive.
    fn check_forever(self: Arc<Self>) {
        loop {
            std::thread::sleep(CHECK_EVERY);
            let held: Vec<Arc<Held>> = {
                let mut list = self.held.lock();
                list.retain(|w| w.strong_count() > 0);
                list.iter().filter_map(Weak::upgrade).collect()
            };
            for h in held {
                let mut client = h.client.lock();
                let Some(c) = client.as_mut() else { continue };
                if h.lost.is_set() {
                    continue;
                }
                if let Err(e) = c.is_valid(ALIVE_TIMEOUT) {
                    let why = format!("the session holding it is gone: {}", chain(&e));
                    h.lost.set(&h.describe, &why);
                }
            }
        }
    }
}

impl ServerLock for PgLock {
    fn describe(&self) -> String {
        self.held.describe.clone()
    }

    fn fencing_token(&self) -> Option<u64> {
        self.fence
    }

    /// The checking thread's verdict; asks no one.
    fn is_lost(&self) -> bool {
        self.held.lost.is_set()
    }

    fn lost_flag(&self) -> Option<Arc<LostFlag>> {
        Some(self.held.lost.clone())
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        if self.held.lost.inherited() {
            // A forked child's copy: the session is the parent's. Unlocking
            // would unlock the parent's lock, and even dropping the client
            // would end the parent's session (it says Terminate on the
            // shared socket): it is kept, unused, for good.
            std::mem::forget(self.held.clone());
            return;
        }
        self.held.lost.released();
        let Some(mut client) = self.held.client.lock().take() else {
            return;
        };
        let shared = if self.mode == Mode::Shared {
            "_shared"
        } else {
            ""
        };
        let sql = format!("SELECT pg_advisory_unlock{shared}({})", self.key);
        outside_runtime(move || match attempt(&mut client, &sql) {
            Ok(Some(_)) => self.pool.give_back(client),
            // Not held (or no answer): closing the session is the one way
            // to be sure nothing stays locked by it.
            Ok(None) | Err(_) => drop(client),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_the_first_8_bytes_of_sha256() {
        // sha256("") = e3b0c442 98fc1c14 ...
        assert_eq!(key("") as u64, 0xe3b0_c442_98fc_1c14);
        // sha256("abc") = ba7816bf 8f01cfea ...
        assert_eq!(key("abc") as u64, 0xba78_16bf_8f01_cfea);
    }

    #[test]
    fn tooz_collisions_are_distinct_keys() {
        assert_ne!(key("lock-2"), key("lock-137"));
        let keys: HashSet<i64> = (0..100_000).map(|i| key(&format!("lock-{i}"))).collect();
        assert_eq!(keys.len(), 100_000);
    }

    #[test]
    fn deadlines_become_a_local_lock_timeout() {
        let until = Wait::Until {
            deadline: Instant::now() + Duration::from_millis(1500),
            timeout: Duration::from_millis(1500),
        };
        let sql = lock_sql(7, Mode::Exclusive, until, false);
        assert!(sql.starts_with("SET LOCAL lock_timeout = 1"), "{sql}");
        assert!(sql.ends_with("; SELECT pg_advisory_lock(7)"), "{sql}");
        let spent = Wait::Until {
            deadline: Instant::now(),
            timeout: Duration::ZERO,
        };
        let spent = lock_sql(7, Mode::Shared, spent, false);
        assert!(spent.starts_with("SET LOCAL lock_timeout = 1;"), "{spent}");
        assert_eq!(
            lock_sql(-3, Mode::Shared, Wait::Try, false),
            "SELECT pg_try_advisory_lock_shared(-3)"
        );
        let fenced = lock_sql(7, Mode::Exclusive, Wait::Block, true);
        assert_eq!(
            fenced,
            "SELECT pg_advisory_lock(7); SELECT nextval('lockutils_fence')"
        );
    }

    #[test]
    fn bad_urls_are_reported_without_password() {
        let e = Postgres::new("postgres://u:secret@h/db?nonsense=1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("postgres://u:***@h/db"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
