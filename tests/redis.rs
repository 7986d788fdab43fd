//! `external` locks on Redis (feature `redis`), against a real
//! redis-server started for this test binary (`tests/support/servers.rs`)
//! and real processes (this binary re-run as children,
//! `tests/support/mod.rs`). Timing bounds have wide slack; the figures they
//! measure are printed (`--nocapture` shows them).
#![cfg(all(unix, feature = "redis"))]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lockutils::LockError;
use servers::{REDIS_ENV, redis_cli};
use support::{Child, PATIENCE, await_order, param, param_as, report, running_as};

/// The key time-to-live of the tests that kill a holder or the server.
const SHORT_TTL: u64 = 2;

fn short_ttl(url: &str) -> String {
    format!("{url}?ttl={SHORT_TTL}")
}

fn redis_child(test: &str) -> support::ChildBuilder {
    support::child(test).env(REDIS_ENV, servers::redis())
}

fn redis_lock<'a>(name: &'a str, url: &'a str) -> lockutils::Lock<'a> {
    lockutils::lock(name).external().backend(url)
}

/// How many waiters are subscribed to `name`'s release channel.
fn waiters(url: &str, name: &str) -> usize {
    let out = redis_cli(
        url,
        &["PUBSUB", "NUMSUB", &format!("lockutils:{name}:released")],
    );
    out.lines().nth(1).unwrap_or("0").trim().parse().unwrap()
}

fn await_waiters(url: &str, name: &str, n: usize) {
    support::wait_for("a subscribed waiter", PATIENCE, || waiters(url, name) >= n);
}

// ---------------------------------------------------------------------------
// Children.

/// Child: holds `NAME` on `URL`, reports `locked <fencing token>`, keeps it
/// until ordered to `release` (or killed), reports `released`.
#[test]
fn child_redis_hold() {
    if !running_as("child_redis_hold") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let guard = redis_lock(&name, &url)
        .acquire()
        .unwrap_or_else(|e| panic!("{e}"));
    report(format!("locked {}", guard.fencing_token().unwrap()));
    await_order("release");
    drop(guard);
    report("released");
}

/// A child holding `name` on `url`; its fencing token.
fn hold_in_child(name: &str, url: &str) -> (Child, u64) {
    support::holding_with_token(
        redis_child("child_redis_hold")
            .param("NAME", name)
            .param("URL", url),
    )
}

// ---------------------------------------------------------------------------
// Processes x threads incrementing a counter file under one lock.

const PROCESSES: usize = 3;
const THREADS: usize = 2;
const INCREMENTS: u64 = 40;

#[lockutils::synchronized("redis-counter", external)]
fn bump(counter: &std::path::Path) -> Result<u64, LockError> {
    Ok(support::increment(counter))
}

/// Child: `set_backend` to the server, reports `ready`, waits for `go`,
/// then `THREADS` threads each [`bump`] the counter file `INCREMENTS` times.
#[test]
fn child_redis_counter() {
    if !running_as("child_redis_counter") {
        return;
    }
    lockutils::config::set_backend(servers::redis()).unwrap();
    support::bump_in_threads(|c| _ = bump(c).unwrap());
}

#[test]
fn counter_is_exact_across_processes_and_threads() {
    let (want, took) = support::exact_counter(
        || redis_child("child_redis_counter"),
        PROCESSES,
        THREADS,
        INCREMENTS,
    );
    let left = redis_cli(servers::redis(), &["EXISTS", "lockutils:redis-counter"]);
    assert_eq!(left, "0", "the released lock leaves no key");
    println!(
        "redis counter: {PROCESSES} processes x {THREADS} threads, {want} increments in {took:?}"
    );
}

// ---------------------------------------------------------------------------
// Waiting: woken by the release, or by the dead holder's key expiring.

#[test]
fn a_waiter_is_woken_by_the_release_not_by_polling() {
    let name = "redis-wake";
    let url = servers::redis();
    let (holder, _) = hold_in_child(name, url);
    let waiter = std::thread::spawn(move || {
        let _guard = redis_lock(name, url).acquire().unwrap();
        Instant::now()
    });
    await_waiters(url, name, 1);
    let released = Instant::now();
    let holder = support::release(holder);
    let took = waiter.join().unwrap() - released;
    holder.finish();
    println!("redis: waiter got the lock {took:?} after the release");
    // The holder's key had ~10 s to live and a waiter re-checks at most
    // every second on its own: only the published release explains less.
    assert!(took < Duration::from_millis(900), "took {took:?}");
}

#[test]
fn waiter_proceeds_within_the_ttl_when_the_holder_is_killed() {
    let name = "redis-sigkill";
    let url = short_ttl(servers::redis());
    let (mut holder, _) = hold_in_child(name, &url);
    let waiter_url = url.clone();
    let waiter = std::thread::spawn(move || {
        let guard = redis_lock(name, &waiter_url).acquire().unwrap();
        assert!(!guard.is_lost());
        Instant::now()
    });
    await_waiters(servers::redis(), name, 1);
    let killed = Instant::now();
    holder.kill();
    let took = waiter.join().unwrap() - killed;
    println!("redis: waiter got the lock {took:?} after SIGKILL of the holder (ttl {SHORT_TTL} s)");
    assert!(
        took <= Duration::from_secs(SHORT_TTL) + Duration::from_millis(1500),
        "took {took:?}"
    );
}

#[test]
fn a_held_lock_outlives_its_ttl_by_renewal() {
    let name = "redis-renewed";
    let url = short_ttl(servers::redis());
    let guard = redis_lock(name, &url).acquire().unwrap();
    let pttl = |_: ()| -> i64 {
        redis_cli(servers::redis(), &["PTTL", &format!("lockutils:{name}")])
            .parse()
            .unwrap()
    };
    // Past two time-to-lives, the key is still there, still ours.
    std::thread::sleep(Duration::from_secs(2 * SHORT_TTL));
    assert!(pttl(()) > 0, "the key expired while held");
    assert!(!guard.is_lost());
    let busy = redis_lock(name, &url).blocking(false).acquire();
    assert!(
        matches!(busy, Err(LockError::WouldBlock { .. })),
        "{busy:?}"
    );
}

// ---------------------------------------------------------------------------
// Timeouts, blocking(false), shared mode, fencing.

#[test]
fn timeout_and_blocking_false_report_busy() {
    let name = "redis-busy";
    let url = servers::redis();
    let (holder, _) = hold_in_child(name, url);
    let r = redis_lock(name, url).blocking(false).acquire();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    let wait = Duration::from_millis(300);
    let started = Instant::now();
    let r = redis_lock(name, url).timeout(wait).acquire();
    let took = started.elapsed();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    assert!(
        took >= wait && took < wait + Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(waiters(url, name), 0, "the given-up waiter unsubscribed");
    support::release(holder).finish();
    let guard = redis_lock(name, url).timeout(PATIENCE).acquire();
    assert!(guard.is_ok(), "{guard:?}");
}

#[test]
fn shared_mode_is_a_clear_error() {
    let r = redis_lock("redis-shared", servers::redis())
        .shared()
        .acquire();
    match r {
        Err(LockError::Backend { op, cause, .. }) => {
            assert_eq!(op, "lock");
            assert!(cause.contains("no shared"), "{cause}");
        }
        other => panic!("expected LockError::Backend, got {other:?}"),
    }
}

#[test]
fn fencing_tokens_strictly_increase_across_acquisitions_and_processes() {
    let name = "redis-fencing";
    let url = servers::redis();
    let mut last = 0;
    for round in 0..5 {
        let mine = redis_lock(name, url).acquire().unwrap();
        let token = mine.fencing_token().unwrap();
        assert!(token > last, "round {round}: {token} after {last}");
        drop(mine);
        let (child, theirs) = hold_in_child(name, url);
        assert!(
            theirs > token,
            "round {round}: child's {theirs} after {token}"
        );
        support::release(child).finish();
        last = theirs;
    }
}

// ---------------------------------------------------------------------------
// Lost locks are told.

/// Everything `tracing` printed in this process (a global subscriber: the
/// warnings come from the backend's renewal thread).
fn warnings() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || SharedWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits (at most `limit`) for the guard's `lost()` future; how long it took.
fn await_lost(guard: &lockutils::LockGuard, since: Instant, limit: Duration) -> Duration {
    let lost = guard.lost();
    support::block_on_within(limit, lost);
    since.elapsed()
}

#[test]
fn a_deleted_key_is_told_lost_within_a_third_of_the_ttl() {
    let log = warnings();
    let name = "redis-deleted";
    let url = short_ttl(servers::redis());
    let guard = redis_lock(name, &url).acquire().unwrap();
    assert!(!guard.is_lost());
    let deleted = Instant::now();
    redis_cli(servers::redis(), &["DEL", &format!("lockutils:{name}")]);
    let took = await_lost(&guard, deleted, Duration::from_secs(SHORT_TTL + 2));
    println!("redis: a deleted key was told lost after {took:?} (ttl {SHORT_TTL} s)");
    assert!(guard.is_lost());
    let third = Duration::from_secs(SHORT_TTL) / 3;
    assert!(took < third + Duration::from_millis(500), "took {took:?}");
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(text.contains("lock lost") && text.contains(name), "{text}");
}

#[test]
fn a_killed_server_is_told_lost_within_the_ttl() {
    let server = servers::start_redis();
    let url = short_ttl(&server.url);
    let guard = redis_lock("redis-server-killed", &url).acquire().unwrap();
    let asked = Instant::now();
    assert!(!guard.is_lost());
    assert!(
        asked.elapsed() < Duration::from_millis(5),
        "is_lost asked the server"
    );
    let killed = Instant::now();
    servers::signal(server.pid, libc::SIGKILL);
    let took = await_lost(&guard, killed, Duration::from_secs(SHORT_TTL + 3));
    println!("redis: a killed server was told lost after {took:?} (ttl {SHORT_TTL} s)");
    assert!(
        took <= Duration::from_secs(SHORT_TTL) + Duration::from_millis(500),
        "{took:?}"
    );
}

// ---------------------------------------------------------------------------
// An unreachable server.

#[lockutils::synchronized("redis-unreachable", external)]
fn guarded(ran: &AtomicBool) -> Result<u32, LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(7)
}

/// Child: `set_backend` to a closed port with a password; checks the error.
#[test]
fn child_redis_unreachable() {
    if !running_as("child_redis_unreachable") {
        return;
    }
    let port: u16 = param_as("PORT");
    servers::check_unreachable(
        &format!("redis://lockutils:s3cret@127.0.0.1:{port}/0"),
        &format!("redis://lockutils:***@127.0.0.1:{port}/0"),
        "redis-unreachable",
        "redis",
        guarded,
    );
    report("checked");
}

#[test]
fn an_unreachable_server_is_a_clear_error_and_the_body_does_not_run() {
    let port = servers::free_port();
    let mut c = support::child("child_redis_unreachable")
        .param("PORT", port.to_string())
        .spawn();
    c.expect("checked");
    c.finish();
}

// ---------------------------------------------------------------------------
// rediss://

fn rediss(host: &str, ca: &std::path::Path) -> String {
    let port = servers::redis_tls();
    format!("rediss://{host}:{port}/0?cacert={}", ca.display())
}

/// The `cause` of the `LockError::Backend` that taking a lock on `url` gives.
fn cause_of(url: &str) -> String {
    match redis_lock("redis-tls-bad", url).acquire() {
        Err(LockError::Backend { cause, .. }) => {
            println!("{url}: {cause}");
            cause
        }
        other => panic!("expected LockError::Backend, got {other:?}"),
    }
}

#[test]
fn rediss_verifies_the_server_and_never_falls_back() {
    let certs = servers::certs();
    let started = Instant::now();
    let guard = redis_lock("redis-tls", &rediss("localhost", &certs.ca))
        .acquire()
        .unwrap();
    println!(
        "rediss: first lock (TLS handshake included) in {:?}",
        started.elapsed()
    );
    assert!(guard.fencing_token().is_some());
    drop(guard);
    let with_cert = format!(
        "{}&cert={}&key={}",
        rediss("127.0.0.1", &certs.ca),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    let _mutual = redis_lock("redis-tls-mutual", &with_cert)
        .acquire()
        .unwrap();
    let cause = cause_of(&rediss("127.0.0.2", &certs.ca));
    assert!(cause.contains("not valid for name"), "{cause}");
    let cause = cause_of(&rediss("localhost", &certs.other_ca));
    assert!(cause.contains("UnknownIssuer"), "{cause}");
    // TLS asked of a plaintext server.
    let plain = servers::redis().replace("redis://", "rediss://");
    let cause = cause_of(&format!("{plain}?cacert={}", certs.ca.display()));
    assert!(cause.contains("TLS handshake"), "{cause}");
}

// ---------------------------------------------------------------------------
// fork without exec.

/// Whether `lost` has completed, polled once.
fn completed(lost: lockutils::Lost) -> bool {
    futures_lite::future::block_on(futures_lite::future::poll_once(lost)).is_some()
}

/// Child: holds `NAME` on `URL`, then forks (no exec). The forked child
/// drops its copy of the guard, tries `NAME`, holds `NAME-child` for three
/// time-to-lives and until ordered to `release-child`; this process then
/// keeps its lock until `release`.
#[test]
fn child_redis_fork() {
    if !running_as("child_redis_fork") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let ttl = Duration::from_secs(param_as("TTL"));
    let mut guard = Some(redis_lock(&name, &url).acquire().unwrap());
    // An idle connection in the pool, for the forked child to leave alone.
    drop(redis_lock(&format!("{name}-warm"), &url).acquire().unwrap());
    report("held");
    let code = support::forked::in_forked_child(|| {
        let inherited = guard.take().unwrap();
        report(format!(
            "inherited: is_lost {}, lost() {}",
            inherited.is_lost(),
            completed(inherited.lost())
        ));
        drop(inherited);
        let tried = redis_lock(&name, &url).blocking(false).acquire();
        report(format!("try: {}", support::outcome(&tried)));
        drop(tried);
        let mine = redis_lock(&format!("{name}-child"), &url)
            .acquire()
            .unwrap();
        // Time passing is the point: the key must be renewed meanwhile.
        std::thread::sleep(3 * ttl);
        report(format!("child holds: is_lost {}", mine.is_lost()));
        await_order("release-child");
        drop(mine);
        report("child released");
        0
    });
    report(format!("forked child exited {code}"));
    await_order("check-parent");
    let guard = guard.unwrap();
    report(format!("parent: is_lost {}", guard.is_lost()));
    await_order("release");
    drop(guard);
    report("released");
}

/// Before: the forked child's drop of its copy of the guard deleted the
/// parent's key (same token), its copy said `is_lost() == false` (a guess:
/// nothing renews it there), and a lock it took itself was never renewed
/// (the renewal thread is the parent's) and expired under it.
#[test]
fn a_forked_child_leaves_the_parents_lock_alone_and_renews_its_own() {
    let ttl = 1;
    let url = format!("{}?ttl={ttl}", servers::redis());
    let name = "redis-fork";
    let mut p = redis_child("child_redis_fork")
        .param("NAME", name)
        .param("URL", &url)
        .param("TTL", ttl.to_string())
        .spawn();
    p.expect("held");
    assert_eq!(p.next_report(), "inherited: is_lost true, lost() true");
    assert_eq!(p.next_report(), "try: wouldblock");
    assert_eq!(p.next_report(), "child holds: is_lost false");
    // Three time-to-lives on, the child's key is still there: renewed.
    let child_lock = format!("{name}-child");
    let busy = redis_lock(&child_lock, &url).blocking(false).acquire();
    assert!(
        matches!(busy, Err(LockError::WouldBlock { .. })),
        "{busy:?}"
    );
    p.send("release-child");
    p.expect("child released");
    assert_eq!(p.next_report(), "forked child exited 0");
    // The parent's lock is still the parent's.
    let busy = redis_lock(name, &url).blocking(false).acquire();
    assert!(
        matches!(busy, Err(LockError::WouldBlock { .. })),
        "{busy:?}"
    );
    p.send("check-parent");
    assert_eq!(p.next_report(), "parent: is_lost false");
    p.send("release");
    p.expect("released");
    p.finish();
    for free in [name, child_lock.as_str()] {
        drop(redis_lock(free, &url).blocking(false).acquire().unwrap());
    }
}

// ---------------------------------------------------------------------------
// A key without a time-to-live.

/// How many scripts (`EVAL`: each attempt is one) the server at `url` ran.
fn evals(url: &str) -> u64 {
    let stats = redis_cli(url, &["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_eval:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Before: a waiter tried again every ~2 ms while the lock's key had no
/// time-to-live (`PTTL` -1), about 500 attempts a second.
#[test]
fn a_waiter_does_not_poll_a_key_without_a_ttl() {
    let server = servers::start_redis();
    let name = "redis-no-ttl";
    // Someone else's key, set without an expiry.
    redis_cli(
        &server.url,
        &["SET", &format!("lockutils:{name}"), "foreign"],
    );
    let before = evals(&server.url);
    let wait = Duration::from_secs(2);
    let r = redis_lock(name, &server.url).timeout(wait).acquire();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    let attempts = evals(&server.url) - before;
    println!("redis: {attempts} attempts in a {wait:?} wait for a key without a ttl");
    // One at the start, one once subscribed, then one a second at most.
    assert!(attempts <= 2 + wait.as_secs() + 1, "{attempts} attempts");
}
