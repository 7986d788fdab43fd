//! etcd v3 leases (`etcd://[user:password@]host:2379[,host:2379...][/prefix][?ttl=10]`).
//!
//! TLS: `?cacert=/ca.pem` turns it on (`https://` to every endpoint, the
//! server's certificate checked against that CA and the endpoint's host
//! name, as etcdctl checks it: see `etcd_tls`);
//! `&cert=/client.pem&key=/client.key` adds a client certificate (etcd's
//! `--client-cert-auth`). The stack is rustls (ring) in tonic. Without
//! `cacert` the connection is plaintext; with it, never.
//!
//! Each acquisition is a key-per-waiter queue, the recipe of etcd's own
//! `concurrency.Mutex` and `RWMutex`, with one lease per acquisition:
//!
//! 1. Grant a lease of `ttl` seconds (default [`DEFAULT_TTL`], `?ttl=5` in
//!    the URL) and keep it alive from a task on the backend's private tokio
//!    runtime, every `ttl / 3`, **while waiting and while holding**.
//! 2. In one transaction, create `<prefix><name>/<w|r>/<lease id>` attached
//!    to the lease and read the oldest key it must wait for. Its create
//!    revision `R` is the acquisition's place in the queue.
//! 3. A writer (exclusive) waits for every older key, a reader (shared)
//!    only for older writers: while such a key exists it watches the
//!    newest one for its deletion (a release, a revoked or expired lease),
//!    then looks again. The wait happens in etcd (a watch), not a polling
//!    loop; a deadline or `blocking(false)` gives up by revoking the lease.
//! 4. Having waited, it checks its own key still exists with revision `R`:
//!    the lease may have expired meanwhile, which etcd 3.4's own Lock API
//!    fails to notice (<https://github.com/etcd-io/etcd/issues/9921>).
//!
//! `R` is the fencing token: it grows with every acquisition of any lock on
//! the server. Releasing revokes the lease, which deletes the key. If a
//! keepalive fails, the lease expires, or the key is deleted while its
//! lease lives (a watch on it from the moment it is held), the hold is
//! lost: [`ServerLock::is_lost`] turns true (it reads a flag and a clock,
//! asking no one), a `tracing` warning says so and `LockGuard::lost`
//! completes. The lease's life is counted from just before each request
//! that extended it was sent (the grant included), so the client never
//! believes in a lease the server has already let expire. A holder that
//! dies stops renewing its lease, so waiters proceed at most `ttl` seconds
//! later.
//!
//! **Elections**: the key's value is the candidate's identity (empty for
//! a plain lock), so the leader is the oldest key of the name's queue,
//! as in etcd's own `concurrency.Election`: anyone reads it with one
//! range request (sorted by create revision, limit 1), and its create
//! revision is the leader's fencing token.
//!
//! After `fork` without `exec`, a child's first lock starts its own
//! runtime and connection (the parent's runtime threads are not in the
//! child); a guard it inherited is the parent's lease: `is_lost()` is
//! `true` there, and dropping it revokes nothing.
//!
//! Names are escaped (`%` → `%25`, `/` → `%2F`) so that no name's keys can
//! fall under another name's prefix.
//!
//! **`compat=tooz`**: tooz's lock instead of the queue: the one key
//! `/tooz/locks<name>` (see `tooz.rs`), created with our lease only if
//! absent; while it exists, a waiter watches it for its deletion and tries
//! again. Leases, keepalive, loss and the fencing token (the key's create
//! revision) are as above; there is no shared mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use super::Target;
use super::etcd_tls::{self, Tls, TlsFiles};
use super::lost::LostFlag;
use super::server::{Leader, NO_TOOZ_ELECTIONS, Server, ServerLock, error_chain, outside_runtime};
use super::tooz::{self, Scheme};
use crate::config::redact;
use crate::error::LockError;
use crate::fork::PerProcess;
use crate::spec::{Mode, Wait};

/// The lease time-to-live when the URL does not give `?ttl=`, in seconds.
pub(crate) const DEFAULT_TTL: u64 = 10;

/// The key prefix when the URL has no path.
const DEFAULT_PREFIX: &str = "lockutils/";

/// The longest a single request (not a wait) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An etcd cluster used as a lock server.
pub(crate) struct Etcd {
    /// The URL without its password, for messages.
    url: String,
    /// Each process's own runtime and connections: a forked child has
    /// none of the parent's runtime threads, and its connections are the
    /// parent's. `Err`: a child could not start its runtime.
    inner: PerProcess<Result<Arc<Inner>, String>>,
}

struct Inner {
    /// The URL without its password, for messages.
    url: String,
    endpoints: Vec<String>,
    options: ConnectOptions,
    prefix: String,
    /// tooz's single key instead of our queue (`compat=tooz`).
    scheme: Scheme,
    ttl: i64,
    /// Whether the URL asks for TLS, and whether it gives a client
    /// certificate: what [`tls_hint`] adds to a failure's cause.
    tls: Option<ClientCert>,
    /// The client certificate and the server certificate check, with TLS.
    channel_tls: Option<Tls>,
    /// Runs the client and the keepalive tasks; never dropped (backends
    /// live as long as the process).
    runtime: Runtime,
    /// Connected on first use; reconnected after a failed connect.
    client: Mutex<Option<Client>>,
}

impl Etcd {
    /// Parses the URL and starts the runtime; connects on first use.
    pub(crate) fn new(url: &str) -> Result<Etcd, LockError> {
        let bad = |cause: String| LockError::Backend {
            name: String::new(),
            backend: redact(url),
            op: "configure",
            cause,
        };
        let (url_rest, compat) = tooz::take_compat(url).map_err(bad)?;
        let rest = &url_rest[url_rest.find("://").map_or(0, |i| i + 3)..];
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (ttl, files) = query_options(query).map_err(bad)?;
        let tls = files.tls().map_err(bad)?;
        let tls_kind = tls.as_ref().map(|_| match files.cert {
            Some(_) => ClientCert::Given,
            None => ClientCert::None,
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{h}"))
            .collect();
        if endpoints.is_empty() {
            return Err(bad("no host: expected etcd://host:port".into()));
        }
        let prefix = match path.trim_matches('/') {
            "" => DEFAULT_PREFIX.to_owned(),
            p => format!("{p}/"),
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            // HTTP/2 pings: a dead server is noticed in ~4 s even while
            // only a watch or the keepalive stream is open.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_tcp_keepalive(Duration::from_secs(5));
        if let Some((user, password)) = userinfo.and_then(|u| u.split_once(':')) {
            options = options.with_user(user, password);
        }
        let runtime = start_runtime().map_err(bad)?;
        let inner = Inner {
            url: redact(url),
            endpoints,
            options,
            prefix,
            scheme: compat,
            ttl: ttl as i64,
            tls: tls_kind,
            channel_tls: tls,
            runtime,
            client: Mutex::new(None),
        };
        Ok(Etcd {
            url: redact(url),
            inner: PerProcess::new(Ok(Arc::new(inner))),
        })
    }

    /// This process's runtime and connections (made anew in a forked child).
    fn inner(&self) -> Result<&Arc<Inner>, &str> {
        let fresh = |inherited: Option<&Result<Arc<Inner>, String>>| match inherited {
            Some(Ok(inner)) => inner.fresh().map(Arc::new),
            Some(Err(e)) => Err(e.clone()),
            None => unreachable!("made by new"),
        };
        self.inner.renewed(fresh).as_ref().map_err(String::as_str)
    }
}

/// The private runtime the client and the keepalive tasks run on.
fn start_runtime() -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lockutils-etcd")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start its runtime: {e}"))
}

impl Inner {
    /// A forked child's: the same settings, its own runtime, no client
    /// (reading `self` only: its mutexes may have been held by threads the
    /// child lacks, and its runtime's threads are not in the child).
    fn fresh(&self) -> Result<Inner, String> {
        Ok(Inner {
            url: self.url.clone(),
            endpoints: self.endpoints.clone(),
            options: self.options.clone(),
            prefix: self.prefix.clone(),
            ttl: self.ttl,
            tls: self.tls,
            scheme: self.scheme,
            channel_tls: self.channel_tls.clone(),
            runtime: start_runtime()?,
            client: Mutex::new(None),
        })
    }
}

impl Etcd {
    fn connected(&self, name: &str) -> Result<&Arc<Inner>, LockError> {
        self.inner().map_err(|cause| LockError::Backend {
            name: name.to_owned(),
            backend: self.url.clone(),
            op: "connect",
            cause: cause.to_owned(),
        })
    }
}

impl Server for Etcd {
    fn lock(&self, t: &Target<'_>, wait: Wait) -> Result<Option<Box<dyn ServerLock>>, LockError> {
        let wait = wait.start();
        let inner = self.connected(t.name)?;
        if t.identity.is_some() && inner.scheme == Scheme::Tooz {
            return Err(inner.no_tooz(t.name));
        }
        let got = outside_runtime(|| {
            inner
                .runtime
                .block_on(inner.clone().acquire(t.name, t.mode, wait, t.identity))
        });
        Ok(got?.map(|h| Box::new(h) as Box<dyn ServerLock>))
    }

    fn leader(&self, name: &str) -> Result<Option<Leader>, LockError> {
        let inner = self.connected(name)?;
        if inner.scheme == Scheme::Tooz {
            return Err(inner.no_tooz(name));
        }
        outside_runtime(|| inner.runtime.block_on(inner.leader(name)))
    }
}

impl Inner {
    fn no_tooz(&self, name: &str) -> LockError {
        LockError::Backend {
            name: name.to_owned(),
            backend: self.url.clone(),
            op: "elect a leader",
            cause: NO_TOOZ_ELECTIONS.to_owned(),
        }
    }

    /// The oldest key of `name`'s queue: its value (the identity) and its
    /// create revision (the fencing token).
    async fn leader(&self, name: &str) -> Result<Option<Leader>, LockError> {
        let failed = |(op, cause): Failure| LockError::Backend {
            name: name.to_owned(),
            backend: self.url.clone(),
            op,
            cause,
        };
        let client = self.client().await.map_err(failed)?;
        let queue = format!("{}{}/", self.prefix, escape(name));
        let oldest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let found = self
            .persist("read the leader", || {
                let (mut c, q, o) = (client.clone(), queue.clone(), oldest.clone());
                async move { c.get(q, Some(o)).await }
            })
            .await
            .map_err(failed)?;
        Ok(found.kvs().first().map(|kv| {
            Leader::new(
                String::from_utf8_lossy(kv.value()).into_owned(),
                u64::try_from(kv.create_revision()).ok(),
            )
        }))
    }
}

/// The URL's query: `ttl`, and the TLS files.
fn query_options(query: &str) -> Result<(u64, TlsFiles), String> {
    let mut ttl = DEFAULT_TTL;
    let mut files = TlsFiles::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("ttl", v)) => {
                ttl = super::server::ttl_seconds(v)?;
            }
            Some(("cacert", v)) => files.ca = Some(v.to_owned()),
            Some(("cert", v)) => files.cert = Some(v.to_owned()),
            Some(("key", v)) => files.key = Some(v.to_owned()),
            _ => {
                return Err(format!(
                    "unknown option {pair:?}: expected ttl=SECONDS, cacert=PATH, cert=PATH \
                         or key=PATH"
                ));
            }
        }
    }
    Ok((ttl, files))
}

/// Why an acquisition failed: what was being done, and the cause.
type Failure = (&'static str, String);

/// Whether a TLS URL gives a client certificate (`cert=` and `key=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientCert {
    Given,
    None,
}

/// What to add to the cause of a failure over TLS, which tonic reports in
/// words that do not name the likely mistake:
/// - a server that does not speak TLS answers the ClientHello by closing
///   the connection; the client then sees "tls handshake eof" or, when the
///   close came before the hello was read, "Connection reset by peer".
///   Which one is a race, so both get the same hint.
/// - a server that demands a client certificate the URL lacks closes the
///   connection once the handshake is over, which surfaces as a "transport
///   error" (broken pipe) or, again by a race, as a reset.
fn tls_hint(cause: &str, cert: ClientCert) -> String {
    let lower = cause.to_ascii_lowercase();
    let ended = lower.contains("tls handshake eof") || lower.contains("connection reset by peer");
    let dropped = ended || lower.contains("transport error") || lower.contains("broken pipe");
    let mut hint = String::new();
    if ended {
        hint.push_str(" (the connection ended in the TLS handshake: does the server speak TLS?)");
    }
    if cert == ClientCert::None && dropped {
        hint.push_str(
            " (TLS with no client certificate: if the server demands one, add \
             cert=PATH&key=PATH to the URL)",
        );
    }
    hint
}

fn failed(op: &'static str) -> impl Fn(etcd_client::Error) -> Failure {
    move |e| (op, error_chain(&e))
}

/// Runs a request with [`REQUEST_TIMEOUT`].
async fn request<T>(
    op: &'static str,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(failed(op)),
        Err(_) => Err((op, format!("no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

/// How long a cluster's requests are tried again on other members (a
/// member going away, a leader election).
const FAILOVER: Duration = Duration::from_secs(10);

/// How long one try may take in a cluster before the next is sent: a
/// request stuck on a member whose leader died is abandoned early.
const CLUSTER_TRY: Duration = Duration::from_secs(2);

impl Inner {
    /// Runs a request; with several endpoints, tries again for up to
    /// [`FAILOVER`] while it fails (another member may answer).
    async fn persist<T, F: Future<Output = Result<T, etcd_client::Error>>>(
        &self,
        op: &'static str,
        mut f: impl FnMut() -> F,
    ) -> Result<T, Failure> {
        let started = Instant::now();
        loop {
            let r = if self.endpoints.len() < 2 {
                request(op, f()).await
            } else {
                match tokio::time::timeout(CLUSTER_TRY, f()).await {
                    Ok(r) => r.map_err(failed(op)),
                    Err(_) => Err((op, format!("no answer within {CLUSTER_TRY:?}"))),
                }
            };
            match r {
                Ok(r) => return Ok(r),
                Err(e) if self.endpoints.len() < 2 || started.elapsed() >= FAILOVER => {
                    return Err(e);
                }
                Err(_) => tokio::time::sleep(RETRY).await,
            }
        }
    }

    async fn client(&self) -> Result<Client, Failure> {
        if let Some(c) = self.client.lock().clone() {
            return Ok(c);
        }
        let tls = self.channel_tls.as_ref();
        let connect = etcd_tls::connect(&self.endpoints, self.options.clone(), tls);
        let c = request("connect", connect).await?;
        *self.client.lock() = Some(c.clone());
        Ok(c)
    }

    async fn acquire(
        self: Arc<Self>,
        name: &str,
        mode: Mode,
        wait: Wait,
        identity: Option<&str>,
    ) -> Result<Option<EtcdLock>, LockError> {
        let to_error = |(op, mut cause): Failure| {
            if let Some(cert) = self.tls {
                cause.push_str(&tls_hint(&cause, cert));
            }
            LockError::Backend {
                name: name.to_owned(),
                backend: self.url.clone(),
                op,
                cause,
            }
        };
        let mut client = self.client().await.map_err(to_error)?;
        // The lease lives `ttl` from when the server granted it, which is
        // after this; counting from here errs on the safe side.
        let asked = Instant::now();
        let granted = self
            .persist("grant a lease", || {
                let (mut c, ttl) = (client.clone(), self.ttl);
                async move { c.lease_grant(ttl, None).await }
            })
            .await;
        let lease = granted.map_err(to_error)?;
        let ttl = Duration::from_secs(lease.ttl().max(1) as u64);
        let state = Arc::new(LeaseState::new(ttl, asked));
        let keeper = self
            .runtime
            .spawn(keep_alive(client.clone(), lease.id(), state.clone()));
        let mut hold = EtcdLock {
            inner: self.clone(),
            lease: lease.id(),
            key: String::new(),
            revision: 0,
            state,
            keeper: Some(keeper),
            key_watch: None,
            revoked: false,
        };
        let value = identity.unwrap_or("");
        let r = hold
            .enqueue_and_wait(&mut client, name, mode, wait, value)
            .await;
        if !matches!(r, Ok(true)) {
            // Revoking the lease removes our key from the queue.
            hold.revoke(&mut client).await;
        }
        match r {
            Ok(true) => {
                hold.watch_own_key(client);
                Ok(Some(hold))
            }
            Ok(false) => Ok(None),
            Err(e) => Err(to_error(e)),
        }
    }
}

/// The lease of one acquisition, as its keepalive task sees it.
struct LeaseState {
    ttl: Duration,
    /// When the server last confirmed the lease (it lives `ttl` after).
    renewed: Mutex<Instant>,
    /// Set once the lease is known lost; waiters watch it.
    lost: watch::Sender<bool>,
    /// Set once a held lock is known lost; `LockGuard::lost` waits on it.
    flag: Arc<LostFlag>,
    /// The hold was released on purpose: losing the lease is expected.
    released: AtomicBool,
    warned: AtomicBool,
    /// The hold's description, once held (for the warning).
    describe: Mutex<String>,
}

impl LeaseState {
    fn new(ttl: Duration, asked: Instant) -> LeaseState {
        LeaseState {
            ttl,
            renewed: Mutex::new(asked),
            lost: watch::Sender::new(false),
            flag: LostFlag::new(),
            released: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            describe: Mutex::new(String::new()),
        }
    }

    fn is_lost(&self) -> bool {
        *self.lost.borrow() || self.renewed.lock().elapsed() >= self.ttl
    }

    /// Marks the lease lost and warns once (not after a release).
    fn lose(&self, lease: i64, why: &str) {
        self.lost.send_replace(true);
        let describe = self.describe.lock().clone();
        if !describe.is_empty() {
            // Held: the flag warns and wakes `LockGuard::lost`.
            self.flag.set(&describe, why);
        } else if !self.released.load(Ordering::Acquire)
            && !self.warned.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(
                lease = format_args!("{lease:x}"),
                "lockutils: etcd lease lost ({why}) while waiting for the lock"
            );
        }
    }
}

/// How long to wait before trying a broken stream again (another member
/// of the cluster may answer).
const RETRY: Duration = Duration::from_millis(100);

/// Renews the lease every `ttl / 3` until aborted (released) or it is
/// lost. A broken keepalive stream (a member going away) is opened again,
/// to any member, for as long as the lease still lives.
async fn keep_alive(mut client: Client, lease: i64, state: Arc<LeaseState>) {
    let period = (state.ttl / 3).max(Duration::from_millis(200));
    let mut last_error = String::new();
    let why = loop {
        let left = state.ttl.saturating_sub(state.renewed.lock().elapsed());
        if left.is_zero() {
            break format!("not renewed within its time-to-live ({last_error})");
        }
        match renew(&mut client, lease, &state, period).await {
            Renewal::Gone => break "the lease expired or was revoked".to_owned(),
            Renewal::Broken(e) => last_error = e,
        }
        tokio::time::sleep(RETRY).await;
    };
    state.lose(lease, &why);
}

/// How a keepalive stream ended.
enum Renewal {
    /// The server says the lease is gone.
    Gone,
    /// The stream failed: try again while the lease lives.
    Broken(String),
}

/// Keeps the lease alive on one stream until the stream fails.
async fn renew(client: &mut Client, lease: i64, state: &LeaseState, period: Duration) -> Renewal {
    let broken = |e: etcd_client::Error| Renewal::Broken(error_chain(&e));
    let (mut keeper, mut stream) = match client.lease_keep_alive(lease).await {
        Ok(s) => s,
        Err(e) => return broken(e),
    };
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(period).await;
        }
        first = false;
        let sent = Instant::now();
        if let Err(e) = keeper.keep_alive().await {
            return broken(e);
        }
        // An answer later than the lease's end is no use.
        let left = state.ttl.saturating_sub(state.renewed.lock().elapsed());
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => *state.renewed.lock() = sent,
            Ok(Ok(Some(_))) => return Renewal::Gone,
            Ok(Ok(None)) => return Renewal::Broken("the keepalive stream ended".into()),
            Ok(Err(e)) => return broken(e),
            Err(_) => return Renewal::Broken("no keepalive answer in time".into()),
        }
    }
}

/// A lock held (or being taken) with one lease.
struct EtcdLock {
    inner: Arc<Inner>,
    lease: i64,
    /// Our key in the name's queue.
    key: String,
    /// Its create revision: our place in the queue, and the fencing token.
    revision: i64,
    state: Arc<LeaseState>,
    /// Keeps the lease alive; `None` once stopped.
    keeper: Option<tokio::task::JoinHandle<()>>,
    /// Watches our key while held: its deletion means the lock is lost.
    key_watch: Option<tokio::task::JoinHandle<()>>,
    revoked: bool,
}

impl EtcdLock {
    /// Stops the keepalive and revokes the lease, which deletes our key.
    /// If etcd cannot be reached, the lease simply expires after its TTL.
    async fn revoke(&mut self, client: &mut Client) {
        self.revoked = true;
        self.state.released.store(true, Ordering::Release);
        self.state.flag.released();
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        if let Some(w) = self.key_watch.take() {
            w.abort();
        }
        let lease = self.lease;
        let revoked = self.inner.persist("release", || {
            let mut c = client.clone();
            async move { c.lease_revoke(lease).await }
        });
        if let Err((_, cause)) = revoked.await {
            tracing::debug!(
                lease = format_args!("{lease:x}"),
                %cause,
                "lockutils: cannot revoke etcd lease; it will expire"
            );
        }
    }

    /// Queues our key and waits for our turn. `Ok(false)`: busy (`Try`) or
    /// the deadline passed.
    async fn enqueue_and_wait(
        &mut self,
        client: &mut Client,
        name: &str,
        mode: Mode,
        wait: Wait,
        value: &str,
    ) -> Result<bool, Failure> {
        if self.inner.scheme == Scheme::Tooz {
            return self.take_tooz_key(client, name, mode, wait).await;
        }
        let queue = format!("{}{}/", self.inner.prefix, escape(name));
        let role = if mode == Mode::Shared { "r" } else { "w" };
        self.key = format!("{queue}{role}/{:016x}", self.lease);
        // Readers wait for older writers; writers for everyone older.
        let blockers = if mode == Mode::Shared {
            format!("{queue}w/")
        } else {
            queue
        };
        let oldest = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1)
            .with_keys_only();
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(
                    self.key.as_str(),
                    value,
                    Some(PutOptions::new().with_lease(self.lease)),
                ),
                TxnOp::get(blockers.as_str(), Some(oldest)),
            ]);
        let put = self
            .inner
            .persist("queue", || {
                let (mut c, txn) = (client.clone(), txn.clone());
                async move { c.txn(txn).await }
            })
            .await?;
        self.revision = put.header().map_or(0, |h| h.revision());
        let first_blocker = put.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
            _ => None,
        });
        if !put.succeeded() || first_blocker.is_none_or(|r| r >= self.revision) {
            return Ok(put.succeeded());
        }
        let deadline = match wait {
            Wait::Try => return Ok(false),
            Wait::Block | Wait::Timeout(_) => None,
            Wait::Until { deadline, .. } => Some(tokio::time::Instant::from_std(deadline)),
        };
        let mut lost = self.state.lost.subscribe();
        let waited = async {
            tokio::select! {
                r = self.await_turn(client, &blockers) => r,
                _ = lost.wait_for(|l| *l) => {
                    Err(("wait", "the lease expired while waiting".to_owned()))
                }
            }
        };
        match deadline {
            None => waited.await?,
            Some(d) => match tokio::time::timeout_at(d, waited).await {
                Ok(r) => r?,
                Err(_) => return Ok(false),
            },
        }
        // Our turn came; make sure it is still ours (etcd-io/etcd#9921).
        // A member going away fails a request or two: ask again, for as
        // long as the lease lives.
        let mine = loop {
            match request("check the lock key", client.get(self.key.as_str(), None)).await {
                Ok(m) => break m,
                Err(e) if self.state.is_lost() => return Err(e),
                Err(_) => tokio::time::sleep(RETRY).await,
            }
        };
        match mine.kvs().first() {
            Some(kv) if kv.create_revision() == self.revision && !self.state.is_lost() => Ok(true),
            _ => Err((
                "check the lock key",
                "the lease expired while waiting".to_owned(),
            )),
        }
    }

    /// Starts watching our key from just after it was created: a deletion
    /// (by anyone, while the lease may still live) loses the lock. Since
    /// the watch starts at that revision, a deletion before the watch is
    /// set up is seen too.
    fn watch_own_key(&mut self, mut client: Client) {
        *self.state.describe.lock() = self.describe();
        let options = WatchOptions::new()
            .with_start_revision(self.revision + 1)
            .with_filters([WatchFilterType::NoPut]);
        let (state, lease, key) = (self.state.clone(), self.lease, self.key.clone());
        self.key_watch = Some(self.inner.runtime.spawn(async move {
            loop {
                // Until this works, or the hold ends (the task is aborted).
                let watching = client.watch(key.as_str(), Some(options.clone())).await;
                let Ok(mut events) = watching else {
                    tokio::time::sleep(RETRY).await;
                    continue;
                };
                loop {
                    match events.message().await {
                        Ok(Some(r)) if !r.events().is_empty() => {
                            return state.lose(lease, "the lock key was deleted");
                        }
                        Ok(Some(r)) if r.canceled() => {
                            return state.lose(lease, "the watch on the lock key was canceled");
                        }
                        Ok(Some(_)) => {}
                        // The stream broke (e.g. a member went away): watch
                        // again from the same revision.
                        Ok(None) | Err(_) => break,
                    }
                }
                tokio::time::sleep(RETRY).await;
            }
        }));
    }

    /// Any request or watch that fails (a member going away) is tried
    /// again: the wait ends only when it is our turn, or (in the caller)
    /// when the lease is lost or the deadline passes.
    async fn await_turn(&self, client: &mut Client, blockers: &str) -> Result<(), Failure> {
        loop {
            match self.next_turn(client, blockers).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err((_, cause)) => {
                    tracing::debug!(%cause, "lockutils: etcd wait interrupted; trying again");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One look at the queue: `Ok(true)` our turn; `Ok(false)` the key we
    /// waited for went away (look again).
    async fn next_turn(&self, client: &mut Client, blockers: &str) -> Result<bool, Failure> {
        let newest_older = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(self.revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let found = request("wait", client.get(blockers, Some(newest_older))).await?;
        let Some(ahead) = found.kvs().first() else {
            return Ok(true);
        };
        let seen = found.header().map_or(0, |h| h.revision());
        // Every event after what we read, so a deletion in between is
        // not missed.
        let options = WatchOptions::new()
            .with_start_revision(seen + 1)
            .with_filters([WatchFilterType::NoPut]);
        let mut events = client
            .watch(ahead.key(), Some(options))
            .await
            .map_err(failed("wait"))?;
        loop {
            match events.message().await.map_err(failed("wait"))? {
                Some(r) if !r.events().is_empty() || r.canceled() => return Ok(false),
                Some(_) => {}
                None => return Err(("wait", "the watch ended".to_owned())),
            }
        }
    }
}

impl EtcdLock {
    /// `compat=tooz`: creates tooz's key for `name` with our lease if it is
    /// absent; while it exists, waits for its deletion and tries again.
    /// `Ok(false)`: busy (`Try`) or the deadline passed.
    async fn take_tooz_key(
        &mut self,
        client: &mut Client,
        name: &str,
        mode: Mode,
        wait: Wait,
    ) -> Result<bool, Failure> {
        if mode == Mode::Shared {
            let why = "tooz's etcd locks have no shared (reader) mode: take it exclusive";
            return Err(("lock", why.to_owned()));
        }
        self.key = tooz::etcd_key(name);
        let deadline = match wait {
            Wait::Until { deadline, .. } => Some(tokio::time::Instant::from_std(deadline)),
            _ => None,
        };
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.as_str(),
                "",
                Some(PutOptions::new().with_lease(self.lease)),
            )]);
        loop {
            let put = self
                .inner
                .persist("lock", || {
                    let (mut c, txn) = (client.clone(), txn.clone());
                    async move { c.txn(txn).await }
                })
                .await?;
            let seen = put.header().map_or(0, |h| h.revision());
            if put.succeeded() {
                self.revision = seen;
                return Ok(true);
            }
            if wait == Wait::Try {
                return Ok(false);
            }
            let mut lost = self.state.lost.subscribe();
            let gone = async {
                tokio::select! {
                    () = deleted_after(client, &self.key, seen) => Ok(()),
                    _ = lost.wait_for(|l| *l) => {
                        Err(("wait", "the lease expired while waiting".to_owned()))
                    }
                }
            };
            match deadline {
                None => gone.await?,
                Some(d) => match tokio::time::timeout_at(d, gone).await {
                    Ok(r) => r?,
                    Err(_) => return Ok(false),
                },
            }
        }
    }
}

/// Returns once `key` was deleted after revision `seen`, or when the
/// watch cannot be made or broke (a member going away): the caller looks
/// again, and its request fails over or reports a server that is gone.
async fn deleted_after(client: &mut Client, key: &str, seen: i64) {
    let options = WatchOptions::new()
        .with_start_revision(seen + 1)
        .with_filters([WatchFilterType::NoPut]);
    if let Ok(mut events) = request("wait", client.watch(key, Some(options))).await {
        loop {
            match events.message().await {
                Ok(Some(r)) if !r.events().is_empty() || r.canceled() => return,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    tokio::time::sleep(RETRY).await;
}

impl ServerLock for EtcdLock {
    fn describe(&self) -> String {
        format!(
            "{} key {} (lease {:x}, revision {})",
            self.inner.url, self.key, self.lease, self.revision
        )
    }

    fn fencing_token(&self) -> Option<u64> {
        u64::try_from(self.revision).ok()
    }

    fn is_lost(&self) -> bool {
        if self.state.flag.inherited() {
            return true; // see `LostFlag`
        }
        let lost = self.state.is_lost();
        if lost {
            self.state
                .lose(self.lease, "not renewed within its time-to-live");
        }
        lost
    }

    fn lost_flag(&self) -> Option<Arc<LostFlag>> {
        Some(self.state.flag.clone())
    }
}

impl Drop for EtcdLock {
    /// Releases: the next in the queue goes.
    fn drop(&mut self) {
        if self.state.flag.inherited() {
            // A forked child's copy: the lease is the parent's, whose
            // runtime keeps it alive; revoking it would free the parent's
            // lock. The tasks belong to a runtime without threads here:
            // left alone, as the runtime is.
            std::mem::forget(self.keeper.take());
            std::mem::forget(self.key_watch.take());
            return;
        }
        if self.revoked {
            return;
        }
        let Some(mut client) = self.inner.client.lock().clone() else {
            return;
        };
        let inner = self.inner.clone();
        outside_runtime(|| inner.runtime.block_on(self.revoke(&mut client)));
    }
}

/// A lock name as one key segment: `%` → `%25`, `/` → `%2F`.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_reach_into_other_names_keys() {
        assert_eq!(escape("a/w/b"), "a%2Fw%2Fb");
        assert_eq!(escape("100%/x"), "100%25%2Fx");
        assert_ne!(escape("a/b"), escape("a%2Fb"));
    }

    #[test]
    fn tls_failures_name_the_likely_mistake() {
        // The two ways tonic reports a plaintext server (which one is a race).
        for cause in [
            r#"grpc request error: message: "tls handshake eof", source: ConnectError(Custom { kind: UnexpectedEof })"#,
            r#"grpc request error: message: "Connection reset by peer (os error 104)""#,
        ] {
            let given = tls_hint(cause, ClientCert::Given);
            assert!(
                given.contains("does the server speak TLS?"),
                "{cause}: {given}"
            );
            assert!(!given.contains("client certificate"), "{cause}: {given}");
            let none = tls_hint(cause, ClientCert::None);
            assert!(
                none.contains("does the server speak TLS?"),
                "{cause}: {none}"
            );
            assert!(none.contains("no client certificate"), "{cause}: {none}");
        }
        // A server that wants a certificate the URL lacks.
        let dropped = "transport error: broken pipe";
        let none = tls_hint(dropped, ClientCert::None);
        assert!(none.contains("no client certificate"), "{none}");
        assert!(!none.contains("speak TLS"), "{none}");
        assert_eq!(tls_hint(dropped, ClientCert::Given), "");
        // Causes that already say what is wrong get nothing.
        let unknown = "invalid peer certificate: UnknownIssuer";
        assert_eq!(tls_hint(unknown, ClientCert::None), "");
    }

    #[test]
    fn urls_give_endpoints_prefix_and_ttl() {
        let e = Etcd::new("etcd://u:pw@h1:2379,h2:2379/my/locks?ttl=5").unwrap();
        assert_eq!(
            e.inner().unwrap().endpoints,
            ["http://h1:2379", "http://h2:2379"]
        );
        assert_eq!(e.inner().unwrap().prefix, "my/locks/");
        assert_eq!(e.inner().unwrap().ttl, 5);
        assert_eq!(
            e.inner().unwrap().url,
            "etcd://u:***@h1:2379,h2:2379/my/locks?ttl=5"
        );
        let d = Etcd::new("etcd://h:2379").unwrap();
        assert_eq!(
            (d.inner().unwrap().prefix.as_str(), d.inner().unwrap().ttl),
            (DEFAULT_PREFIX, DEFAULT_TTL as i64)
        );
        for bad in [
            "etcd://h?ttl=0",
            "etcd://h?ttl=x",
            "etcd://h?color=red",
            "etcd://",
            "etcd://h?cert=/c.pem&key=/k.pem",
            "etcd://h?cacert=/nonexistent/ca.pem",
        ] {
            assert!(Etcd::new(bad).is_err(), "{bad}");
        }
    }
}
