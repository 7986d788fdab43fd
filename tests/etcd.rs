//! `external` locks on etcd leases (feature `etcd`), against a real etcd
//! started for this test binary (`tests/support/servers.rs`) and real
//! processes (this binary re-run as children, `tests/support/mod.rs`).
//! Timing bounds have wide slack; the figures they measure are printed
//! (`--nocapture` shows them).
#![cfg(all(unix, feature = "etcd"))]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lockutils::LockError;
use servers::{ETCD_ENV, etcdctl};
use support::{Child, PATIENCE, await_order, param, param_as, report, running_as};

/// The lease time-to-live of the tests that kill or starve a holder.
const SHORT_TTL: u64 = 2;

/// The test server's URL with `?ttl=SHORT_TTL`.
fn short_ttl_url() -> String {
    format!("{}?ttl={SHORT_TTL}", servers::etcd())
}

/// A child test of this binary, with the server's URL.
fn etcd_child(test: &str) -> support::ChildBuilder {
    support::child(test).env(ETCD_ENV, servers::etcd())
}

/// `lockutils::lock(name)` on `url`, as exclusive or shared.
fn etcd_lock<'a>(name: &'a str, url: &'a str, mode: &str) -> lockutils::Lock<'a> {
    let lock = lockutils::lock(name).external().backend(url);
    match mode {
        "exclusive" => lock,
        "shared" => lock.shared(),
        other => panic!("mode {other:?}"),
    }
}

fn describe(guard: &lockutils::LockGuard) -> String {
    match guard.location().expect("a remote lock describes itself") {
        lockutils::Location::Server(d) => d,
        other => panic!("a lock server's lock is not a file: {other:?}"),
    }
}

/// The lease id (hex) in a guard's description.
fn lease_of(description: &str) -> String {
    let at = description
        .find("(lease ")
        .expect("lease in the description")
        + 7;
    description[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

/// The keys queued for `name` (holders and waiters).
fn queued(name: &str) -> usize {
    let out = etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("lockutils/{name}/"),
    ]);
    out.lines().filter(|l| !l.is_empty()).count()
}

/// Waits until `name` has `n` keys queued: the waiters are in the queue.
fn await_queued(name: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while queued(name) < n {
        assert!(
            Instant::now() < deadline,
            "{name} never had {n} keys queued"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Children.

/// Child: holds `NAME` in `MODE` on `URL`, reports `locked <fencing token>`,
/// keeps it until ordered to `release` (or killed), reports `released`.
#[test]
fn child_etcd_hold() {
    if !running_as("child_etcd_hold") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let guard = etcd_lock(&name, &url, &param("MODE"))
        .acquire()
        .unwrap_or_else(|e| panic!("{e}"));
    report(format!("locked {}", guard.fencing_token().unwrap()));
    await_order("release");
    drop(guard);
    report("released");
}

/// Child: one `blocking(false)` attempt; reports the outcome.
#[test]
fn child_etcd_try() {
    if !running_as("child_etcd_try") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let r = etcd_lock(&name, &url, &param("MODE"))
        .blocking(false)
        .acquire();
    report(support::outcome(&r));
}

/// Child: waits for `NAME` on `URL` (blocking); reports the outcome.
#[test]
fn child_etcd_wait() {
    if !running_as("child_etcd_wait") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let r = etcd_lock(&name, &url, "exclusive").acquire();
    report(support::outcome(&r));
}

fn try_in_child(name: &str, mode: &str) -> String {
    let mut c = etcd_child("child_etcd_try")
        .param("NAME", name)
        .param("URL", servers::etcd())
        .param("MODE", mode)
        .spawn();
    let r = c.next_report();
    c.finish();
    r
}

/// A child holding `name`; its fencing token.
fn hold_in_child(name: &str, url: &str, mode: &str) -> (Child, u64) {
    support::holding_with_token(
        etcd_child("child_etcd_hold")
            .param("NAME", name)
            .param("URL", url)
            .param("MODE", mode),
    )
}

// ---------------------------------------------------------------------------
// Processes x threads incrementing a counter file under one lock.

const PROCESSES: usize = 3;
const THREADS: usize = 2;
const INCREMENTS: u64 = 40;

#[lockutils::synchronized("etcd-counter", external)]
fn bump(counter: &std::path::Path) -> Result<u64, LockError> {
    Ok(support::increment(counter))
}

/// Child: `set_backend` to the server, reports `ready`, waits for `go`,
/// then `THREADS` threads each [`bump`] the counter file `INCREMENTS` times.
#[test]
fn child_etcd_counter() {
    if !running_as("child_etcd_counter") {
        return;
    }
    lockutils::config::set_backend(servers::etcd()).unwrap();
    support::bump_in_threads(|c| _ = bump(c).unwrap());
}

#[test]
fn counter_is_exact_across_processes_and_threads() {
    let (want, took) = support::exact_counter(
        || etcd_child("child_etcd_counter"),
        PROCESSES,
        THREADS,
        INCREMENTS,
    );
    assert_eq!(queued("etcd-counter"), 0, "released locks leave no keys");
    println!(
        "etcd counter: {PROCESSES} processes x {THREADS} threads, {want} increments in {took:?}"
    );
}

// ---------------------------------------------------------------------------
// Dead holders, lost leases.

#[test]
fn waiter_proceeds_within_the_ttl_when_the_holder_is_killed() {
    let name = "etcd-sigkill";
    let url = short_ttl_url();
    let (mut holder, _) = hold_in_child(name, &url, "exclusive");
    let waiter_url = url.clone();
    let waiter = std::thread::spawn(move || {
        let guard = etcd_lock(name, &waiter_url, "exclusive").acquire().unwrap();
        let got = Instant::now();
        assert!(!guard.is_lost());
        got
    });
    await_queued(name, 2); // the waiter's key is behind the holder's
    let killed = Instant::now();
    holder.kill();
    let took = waiter.join().unwrap() - killed;
    println!("etcd: waiter got the lock {took:?} after SIGKILL of the holder (ttl {SHORT_TTL} s)");
    assert!(took <= Duration::from_secs(SHORT_TTL + 3), "took {took:?}");
}

#[test]
fn a_revoked_lease_is_lost_and_the_lock_free_for_others() {
    let name = "etcd-revoked";
    let url = short_ttl_url();
    let guard = etcd_lock(name, &url, "exclusive").acquire().unwrap();
    assert!(!guard.is_lost());
    assert_eq!(try_in_child(name, "exclusive"), "wouldblock");
    let lost = guard.lost();
    let revoked = Instant::now();
    etcdctl(&["lease", "revoke", &lease_of(&describe(&guard))]);
    // Revoking deletes the key: the watch on it tells at once, and the
    // keepalive would within ttl/3.
    support::block_on_within(Duration::from_secs(SHORT_TTL + 2), lost);
    let took = revoked.elapsed();
    println!("etcd: revoked lease told lost after {took:?} (ttl {SHORT_TTL} s)");
    assert!(guard.is_lost());
    assert!(took < Duration::from_secs(SHORT_TTL), "took {took:?}");
    assert_eq!(
        try_in_child(name, "exclusive"),
        "ok",
        "the server gave the lock away"
    );
    drop(guard);
}

#[test]
fn a_key_deleted_while_its_lease_lives_is_told_lost() {
    let name = "etcd-key-deleted";
    let guard = etcd_lock(name, servers::etcd(), "exclusive")
        .acquire()
        .unwrap();
    let key = describe(&guard)
        .split(" key ")
        .nth(1)
        .and_then(|k| k.split(' ').next())
        .unwrap()
        .to_owned();
    let lost = guard.lost();
    let deleted = Instant::now();
    assert_eq!(etcdctl(&["del", &key]), "1");
    support::block_on_within(Duration::from_secs(5), lost);
    let took = deleted.elapsed();
    println!("etcd: a deleted key was told lost after {took:?}");
    assert!(guard.is_lost(), "the lease lives, but the key is gone");
    // The ttl is the default 10 s: only the watch explains this.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_waiter_whose_lease_expired_is_told_not_given_the_lock() {
    // etcd 3.4's Lock API can report success to such a waiter
    // (etcd-io/etcd#9921); the waiter must check its key is still there.
    let name = "etcd-expired-waiter";
    let (holder, _) = hold_in_child(name, servers::etcd(), "exclusive");
    let mut waiter = etcd_child("child_etcd_wait")
        .param("NAME", name)
        .param("URL", short_ttl_url())
        .spawn();
    await_queued(name, 2);
    // Freeze the waiter (its keepalive too) until its lease has expired
    // and etcd deleted its key.
    let frozen = support::Stopped::new(waiter.pid());
    let deadline = Instant::now() + PATIENCE;
    while queued(name) > 1 {
        assert!(
            Instant::now() < deadline,
            "the frozen waiter's lease never expired"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    support::release(holder).finish();
    drop(frozen);
    let got = waiter.next_report();
    assert!(got.starts_with("error") && got.contains("lease"), "{got}");
    println!("etcd: waiter with an expired lease got: {got}");
    waiter.finish();
    assert_eq!(queued(name), 0);
}

// ---------------------------------------------------------------------------
// Fencing tokens.

#[test]
fn fencing_tokens_strictly_increase_across_acquisitions_and_processes() {
    let name = "etcd-fencing";
    let url = servers::etcd();
    let mut last = 0;
    for round in 0..5 {
        let mine = etcd_lock(name, url, "exclusive").acquire().unwrap();
        let token = mine.fencing_token().unwrap();
        assert!(token > last, "round {round}: {token} after {last}");
        drop(mine);
        let (child, theirs) = hold_in_child(name, url, "exclusive");
        assert!(
            theirs > token,
            "round {round}: child's {theirs} after {token}"
        );
        support::release(child).finish();
        last = theirs;
    }
}

// ---------------------------------------------------------------------------
// An unreachable server.

#[lockutils::synchronized("etcd-unreachable", external)]
fn guarded(ran: &AtomicBool) -> Result<u32, LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(7)
}

/// Child: `set_backend` to a closed port with a password; checks the error
/// a `Result`-returning `#[synchronized]` function gets; reports `checked`.
#[test]
fn child_etcd_unreachable() {
    if !running_as("child_etcd_unreachable") {
        return;
    }
    let port: u16 = param_as("PORT");
    servers::check_unreachable(
        &format!("etcd://lockutils:s3cret@127.0.0.1:{port}"),
        &format!("etcd://lockutils:***@127.0.0.1:{port}"),
        "etcd-unreachable",
        "etcd",
        guarded,
    );
    report("checked");
}

#[test]
fn an_unreachable_server_is_a_clear_error_and_the_body_does_not_run() {
    let port = servers::free_port();
    let mut c = support::child("child_etcd_unreachable")
        .param("PORT", port.to_string())
        .spawn();
    c.expect("checked");
    c.finish();
}

// ---------------------------------------------------------------------------
// Timeouts, blocking(false), shared mode.

#[test]
fn timeout_and_blocking_false_report_busy() {
    let name = "etcd-busy";
    let url = servers::etcd();
    let (holder, _) = hold_in_child(name, url, "exclusive");
    let r = etcd_lock(name, url, "exclusive").blocking(false).acquire();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    let wait = Duration::from_millis(300);
    let started = Instant::now();
    let r = etcd_lock(name, url, "exclusive").timeout(wait).acquire();
    let took = started.elapsed();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    assert!(
        took >= wait && took < wait + Duration::from_secs(5),
        "took {took:?}"
    );
    support::release(holder).finish();
    let guard = etcd_lock(name, url, "exclusive")
        .timeout(PATIENCE)
        .acquire();
    assert!(guard.is_ok(), "{guard:?}");
    drop(guard);
    assert_eq!(queued(name), 0, "given-up waiters leave no keys");
}

#[test]
fn shared_holders_coexist_and_exclude_an_exclusive_one() {
    let name = "etcd-shared";
    let url = servers::etcd();
    let reader = etcd_lock(name, url, "shared").acquire().unwrap();
    assert_eq!(
        try_in_child(name, "shared"),
        "ok",
        "a second reader at once"
    );
    assert_eq!(
        try_in_child(name, "exclusive"),
        "wouldblock",
        "a writer among readers"
    );
    let (other_reader, _) = hold_in_child(name, url, "shared");
    drop(reader);
    assert_eq!(
        try_in_child(name, "exclusive"),
        "wouldblock",
        "one reader left"
    );
    support::release(other_reader).finish();
    assert_eq!(try_in_child(name, "exclusive"), "ok", "no readers left");
}

// ---------------------------------------------------------------------------
// Inside an async runtime.

#[test]
fn sync_and_async_acquisitions_work_inside_a_tokio_runtime() {
    let url = servers::etcd();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let guard = etcd_lock("etcd-in-async", url, "exclusive")
            .acquire()
            .unwrap();
        assert!(!guard.is_lost());
        drop(guard);
        let guard = etcd_lock("etcd-in-async", url, "exclusive")
            .acquire_async()
            .await
            .unwrap();
        assert!(guard.fencing_token().is_some());
        drop(guard);
    });
    assert_eq!(queued("etcd-in-async"), 0, "released");
}

// ---------------------------------------------------------------------------
// A timeout waits on the server, and leaves nothing behind.

#[test]
fn a_timed_out_wait_leaves_nothing_queued() {
    let name = "etcd-timeout-clean";
    let url = servers::etcd();
    let (holder, _) = hold_in_child(name, url, "exclusive");
    let r = etcd_lock(name, url, "exclusive")
        .timeout(Duration::from_millis(200))
        .acquire();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    assert_eq!(
        queued(name),
        1,
        "only the holder's key: no waiter left queued"
    );
    support::release(holder).finish();
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
fn child_etcd_fork() {
    if !running_as("child_etcd_fork") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let ttl = Duration::from_secs(param_as("TTL"));
    let lock = |name: &str| etcd_lock(name, &url, "exclusive").acquire();
    let mut guard = Some(lock(&name).unwrap());
    report("held");
    let code = support::forked::in_forked_child(|| {
        // Ended by SIGALRM if stuck (before, dropping the inherited guard
        // blocked on the parent's runtime, whose threads it lacks).
        // SAFETY: alarm(2) has no memory-safety preconditions.
        unsafe { libc::alarm(30) };
        let inherited = guard.take().unwrap();
        report(format!(
            "inherited: is_lost {}, lost() {}",
            inherited.is_lost(),
            completed(inherited.lost())
        ));
        drop(inherited);
        let tried = etcd_lock(&name, &url, "exclusive")
            .blocking(false)
            .acquire();
        report(format!("try: {}", support::outcome(&tried)));
        drop(tried);
        let mine = lock(&format!("{name}-child")).unwrap();
        // Time passing is the point: the lease must be kept alive meanwhile.
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

/// Before: the forked child's copy of the guard said `is_lost() == false`
/// (a guess: nothing keeps the lease alive there), and dropping it
/// revoked the parent's lease on the parent's runtime, whose threads the
/// child lacks: it never returned.
#[test]
fn a_forked_child_leaves_the_parents_lock_alone_and_keeps_its_own_alive() {
    let ttl = SHORT_TTL;
    let url = short_ttl_url();
    let name = "etcd-fork";
    let mut p = etcd_child("child_etcd_fork")
        .param("NAME", name)
        .param("URL", &url)
        .param("TTL", ttl.to_string())
        .spawn();
    p.expect("held");
    assert_eq!(p.next_report(), "inherited: is_lost true, lost() true");
    assert_eq!(p.next_report(), "try: wouldblock");
    assert_eq!(p.next_report(), "child holds: is_lost false");
    // Three time-to-lives on, the child's lease still holds its key.
    let child_lock = format!("{name}-child");
    assert_eq!(try_in_child(&child_lock, "exclusive"), "wouldblock");
    p.send("release-child");
    p.expect("child released");
    assert_eq!(p.next_report(), "forked child exited 0");
    // The parent's lock is still the parent's.
    assert_eq!(try_in_child(name, "exclusive"), "wouldblock");
    p.send("check-parent");
    assert_eq!(p.next_report(), "parent: is_lost false");
    p.send("release");
    p.expect("released");
    p.finish();
    assert_eq!(try_in_child(name, "exclusive"), "ok");
    assert_eq!(queued(name) + queued(&child_lock), 0, "keys left");
}
