//! `external` locks on PostgreSQL advisory locks (feature `postgres`),
//! against a real server started for this test binary
//! (`tests/support/servers.rs`) and real processes (this binary re-run as
//! children, `tests/support/mod.rs`). Timing bounds have wide slack; the
//! figures they measure are printed (`--nocapture` shows them).
#![cfg(all(unix, feature = "postgres"))]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lockutils::LockError;
use servers::{POSTGRES_ENV, psql};
use support::{Child, PATIENCE, await_order, param, param_as, report, running_as};

/// A child test of this binary, with the server's URL.
fn pg_child(test: &str) -> support::ChildBuilder {
    support::child(test).env(POSTGRES_ENV, servers::postgres())
}

/// The advisory-lock key a guard holds, as `(classid, objid)` in `pg_locks`,
/// read from its description.
fn pg_locks_id(description: &str) -> (u32, u32) {
    let field = |name: &str| -> u32 {
        let at = description
            .find(name)
            .unwrap_or_else(|| panic!("{name} in {description:?}"));
        let digits: String = description[at + name.len()..]
            .chars()
            .skip_while(|c| *c == ' ')
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    (field("classid"), field("objid"))
}

fn describe(guard: &lockutils::LockGuard) -> String {
    match guard.location().expect("a remote lock describes itself") {
        lockutils::Location::Server(d) => d,
        other => panic!("a lock server's lock is not a file: {other:?}"),
    }
}

/// `lockutils::lock(name)` on the test server, as exclusive or shared.
fn pg_lock<'a>(name: &'a str, mode: &str) -> lockutils::Lock<'a> {
    let lock = lockutils::lock(name)
        .external()
        .backend(servers::postgres());
    match mode {
        "exclusive" => lock,
        "shared" => lock.shared(),
        other => panic!("mode {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Children.

/// Child: holds `NAME` in `MODE`, reports `locked <classid> <objid>`, and
/// keeps it until ordered to `release` (or killed).
#[test]
fn child_pg_hold() {
    if !running_as("child_pg_hold") {
        return;
    }
    let name = param("NAME");
    let guard = pg_lock(&name, &param("MODE"))
        .acquire()
        .unwrap_or_else(|e| panic!("{e}"));
    let (classid, objid) = pg_locks_id(&describe(&guard));
    report(format!("locked {classid} {objid}"));
    await_order("release");
    drop(guard);
    report("released");
}

/// Child: one `blocking(false)` attempt on `NAME` in `MODE`; reports the
/// outcome.
#[test]
fn child_pg_try() {
    if !running_as("child_pg_try") {
        return;
    }
    let name = param("NAME");
    let r = pg_lock(&name, &param("MODE")).blocking(false).acquire();
    report(support::outcome(&r));
}

fn try_in_child(name: &str, mode: &str) -> String {
    let mut c = pg_child("child_pg_try")
        .param("NAME", name)
        .param("MODE", mode)
        .spawn();
    let r = c.next_report();
    c.finish();
    r
}

fn hold_in_child(name: &str, mode: &str) -> (Child, (u32, u32)) {
    let mut c = pg_child("child_pg_hold")
        .param("NAME", name)
        .param("MODE", mode)
        .spawn();
    let got = c.next_report();
    let mut words = got.split(' ');
    assert_eq!(words.next(), Some("locked"), "{got}");
    let id = (
        words.next().unwrap().parse().unwrap(),
        words.next().unwrap().parse().unwrap(),
    );
    (c, id)
}

// ---------------------------------------------------------------------------
// Processes x threads incrementing a counter row under one lock.

const PROCESSES: usize = 3;
const THREADS: usize = 2;
const INCREMENTS: u64 = 8;

/// Adds one to the counter in `TABLE` with two separate statements (read,
/// then write), so that two overlapping holders would lose an increment.
#[lockutils::synchronized("pg-counter", external)]
fn bump(table: &str) -> Result<(), LockError> {
    let n: u64 = psql(&format!("SELECT n FROM {table}")).parse().unwrap();
    psql(&format!("UPDATE {table} SET n = {}", n + 1));
    Ok(())
}

/// Child: `set_backend` to the server, reports `ready`, waits for `go`,
/// then `THREADS` threads each [`bump`] `INCREMENTS` times; reports `done`.
#[test]
fn child_pg_counter() {
    if !running_as("child_pg_counter") {
        return;
    }
    lockutils::config::set_backend(servers::postgres()).unwrap();
    let table = param("TABLE");
    let (threads, increments): (usize, u64) = (param_as("THREADS"), param_as("INCREMENTS"));
    report("ready");
    await_order("go");
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| (0..increments).for_each(|_| bump(&table).unwrap()));
        }
    });
    report("done");
}

#[test]
fn counter_in_a_table_is_exact_across_processes_and_threads() {
    let table = "counter_exact";
    psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (n bigint)"
    ));
    psql(&format!("INSERT INTO {table} VALUES (0)"));
    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            pg_child("child_pg_counter")
                .param("TABLE", table)
                .param("THREADS", THREADS.to_string())
                .param("INCREMENTS", INCREMENTS.to_string())
                .spawn()
        })
        .collect();
    children.iter_mut().for_each(|c| c.expect("ready"));
    let started = Instant::now();
    children.iter_mut().for_each(|c| c.send("go"));
    children.iter_mut().for_each(|c| c.expect("done"));
    let took = started.elapsed();
    children.into_iter().for_each(Child::finish);
    let want = (PROCESSES * THREADS) as u64 * INCREMENTS;
    let got: u64 = psql(&format!("SELECT n FROM {table}")).parse().unwrap();
    assert_eq!(got, want, "lost increments: holders overlapped");
    println!(
        "postgres counter: {PROCESSES} processes x {THREADS} threads, {want} increments in {took:?}"
    );
}

// ---------------------------------------------------------------------------
// Dead holders.

/// Waits until `pg_locks` shows `n` sessions waiting for the advisory key.
fn await_pg_waiters(id: (u32, u32), n: usize) {
    let sql = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {} \
         AND objid = {} AND objsubid = 1 AND NOT granted",
        id.0, id.1
    );
    let deadline = Instant::now() + PATIENCE;
    while psql(&sql).parse::<usize>().unwrap() < n {
        assert!(Instant::now() < deadline, "nobody ever waited for {id:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn waiter_proceeds_promptly_when_the_holder_is_killed() {
    let name = "pg-sigkill";
    let (mut holder, id) = hold_in_child(name, "exclusive");
    let waiter = std::thread::spawn(move || {
        let guard = pg_lock(name, "exclusive").acquire().unwrap();
        let got = Instant::now();
        drop(guard);
        got
    });
    // The waiter is asleep in the server's lock queue, not about to ask.
    await_pg_waiters(id, 1);
    let killed = Instant::now();
    holder.kill();
    let got = waiter.join().unwrap();
    let took = got - killed;
    println!("postgres: waiter got the lock {took:?} after SIGKILL of the holder");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_session_ended_by_the_server_is_lost() {
    let guard = pg_lock("pg-lost", "exclusive").acquire().unwrap();
    assert!(!guard.is_lost());
    let (classid, objid) = pg_locks_id(&describe(&guard));
    let lost = guard.lost();
    let terminated = Instant::now();
    let ended = psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' \
         AND classid = {classid} AND objid = {objid} AND objsubid = 1 AND granted"
    ));
    assert_eq!(ended, "1");
    support::block_on_within(Duration::from_secs(10), lost);
    let took = terminated.elapsed();
    println!("postgres: a terminated session was told lost after {took:?}");
    assert!(guard.is_lost(), "the holder's session was terminated");
    // Checked every second, answered within two.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    drop(guard);
    // The dead session was not pooled: the next holder works.
    let again = pg_lock("pg-lost", "exclusive")
        .blocking(false)
        .acquire()
        .unwrap();
    assert!(!again.is_lost());
}

#[test]
fn is_lost_asks_no_one() {
    let guard = pg_lock("pg-is-lost-local", "exclusive").acquire().unwrap();
    let started = Instant::now();
    for _ in 0..1000 {
        assert!(!guard.is_lost());
    }
    // A round trip each would take far longer than 1000 flag reads.
    assert!(
        started.elapsed() < Duration::from_millis(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn fencing_tokens_strictly_increase_across_acquisitions_and_processes() {
    let name = "pg-fencing";
    let mut last = 0;
    for round in 0..4 {
        let mine = pg_lock(name, "exclusive").acquire().unwrap();
        let token = mine.fencing_token().expect("a fencing token");
        assert!(token > last, "round {round}: {token} after {last}");
        drop(mine);
        let tried = pg_lock(name, "exclusive")
            .blocking(false)
            .acquire()
            .unwrap();
        let next = tried.fencing_token().expect("a token from the try path");
        assert!(next > token, "round {round}: {next} after {token}");
        drop(tried);
        let timed = pg_lock(name, "exclusive")
            .timeout(Duration::from_secs(5))
            .acquire()
            .unwrap();
        last = timed
            .fencing_token()
            .expect("a token from the deadline path");
        assert!(last > next, "round {round}: {last} after {next}");
    }
}

// ---------------------------------------------------------------------------
// An unreachable server.

/// The lock body that must not run.
#[lockutils::synchronized("pg-unreachable", external)]
fn guarded(ran: &AtomicBool) -> Result<u32, LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(7)
}

/// Child: `set_backend` to a closed port with a password; checks the error
/// a `Result`-returning `#[synchronized]` function gets; reports `checked`.
#[test]
fn child_pg_unreachable() {
    if !running_as("child_pg_unreachable") {
        return;
    }
    let port: u16 = param_as("PORT");
    servers::check_unreachable(
        &format!("postgres://lockutils:s3cret@127.0.0.1:{port}/locks"),
        &format!("postgres://lockutils:***@127.0.0.1:{port}/locks"),
        "pg-unreachable",
        "PostgreSQL",
        guarded,
    );
    report("checked");
}

#[test]
fn an_unreachable_server_is_a_clear_error_and_the_body_does_not_run() {
    let port = servers::free_port(); // closed again: nothing listens
    let mut c = support::child("child_pg_unreachable")
        .param("PORT", port.to_string())
        .spawn();
    c.expect("checked");
    c.finish();
}

// ---------------------------------------------------------------------------
// Keys.

#[test]
fn distinct_names_take_distinct_keys() {
    // The key function itself is checked on 100,000 names by the unit tests
    // in backend/postgres.rs; here, the keys the server really sees.
    const NAMES: usize = 20_000;
    let started = Instant::now();
    let mut keys = HashSet::with_capacity(NAMES);
    for i in 0..NAMES {
        let name = format!("lock-{i}");
        let guard = pg_lock(&name, "exclusive")
            .blocking(false)
            .acquire()
            .unwrap();
        assert!(
            keys.insert(pg_locks_id(&describe(&guard))),
            "{name} shares its key"
        );
    }
    println!(
        "postgres: {NAMES} names, {NAMES} keys, in {:?}",
        started.elapsed()
    );

    // tooz's 16-bit keys make these two one lock; here they are two.
    let (holder, id2) = hold_in_child("lock-2", "exclusive");
    let g137 = pg_lock("lock-137", "exclusive")
        .blocking(false)
        .acquire()
        .unwrap();
    assert_ne!(pg_locks_id(&describe(&g137)), id2);
    // ... and the test could fail: lock-2 itself is busy.
    let busy = pg_lock("lock-2", "exclusive").blocking(false).acquire();
    assert!(
        matches!(busy, Err(LockError::WouldBlock { .. })),
        "{busy:?}"
    );
    drop(g137);
    support::release(holder).finish();
}

// ---------------------------------------------------------------------------
// Timeouts, blocking(false), shared mode.

#[test]
fn timeout_and_blocking_false_report_busy() {
    let name = "pg-busy";
    let (holder, _) = hold_in_child(name, "exclusive");
    let started = Instant::now();
    let r = pg_lock(name, "exclusive").blocking(false).acquire();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    println!(
        "postgres: blocking(false) on a busy lock answered in {:?}",
        started.elapsed()
    );

    let wait = Duration::from_millis(300);
    let started = Instant::now();
    let r = pg_lock(name, "exclusive").timeout(wait).acquire();
    let took = started.elapsed();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    assert!(
        took >= wait && took < wait + Duration::from_secs(5),
        "took {took:?}"
    );
    println!("postgres: timeout {wait:?} on a busy lock answered in {took:?}");

    support::release(holder).finish();
    let guard = pg_lock(name, "exclusive").timeout(PATIENCE).acquire();
    assert!(guard.is_ok(), "{guard:?}");
}

#[test]
fn shared_holders_coexist_and_exclude_an_exclusive_one() {
    let name = "pg-shared";
    let reader = pg_lock(name, "shared").acquire().unwrap();
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
    let (other_reader, _) = hold_in_child(name, "shared");
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
// The session pool.

#[test]
fn sessions_are_reused_and_never_returned_locked() {
    // A URL of its own, so its pool and sessions are this test's alone.
    let app = "lockutils-pool-test";
    let url = format!("{}?application_name={app}", servers::postgres());
    let lock = |name| lockutils::lock(name).external().backend(&url);
    let sessions = || -> usize {
        psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .parse()
        .unwrap()
    };
    let locks_held = || -> usize {
        psql(&format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE l.locktype = 'advisory' AND a.application_name = '{app}'"
        ))
        .parse()
        .unwrap()
    };
    for _ in 0..50 {
        drop(lock("pool-a").acquire().unwrap());
    }
    assert_eq!(sessions(), 1, "one session, reused 50 times");
    assert_eq!(locks_held(), 0);

    let held: Vec<_> = ["pool-a", "pool-b", "pool-c"]
        .into_iter()
        .map(|n| lock(n).acquire().unwrap())
        .collect();
    assert_eq!(sessions(), 3, "one session per held lock");
    assert_eq!(locks_held(), 3);
    drop(held);
    assert_eq!(locks_held(), 0, "released sessions hold nothing");
    assert_eq!(sessions(), 3, "idle sessions are kept");

    // The server drops the idle sessions (a restart, an administrator):
    // the next acquisition notices and connects afresh.
    let ended = psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = '{app}'"
    ));
    assert_eq!(ended, "3");
    let guard = lock("pool-a").blocking(false).acquire();
    assert!(guard.is_ok(), "{guard:?}");
    assert_eq!(locks_held(), 1);
}

// ---------------------------------------------------------------------------
// Inside an async runtime.

#[test]
fn sync_and_async_acquisitions_work_inside_a_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The client blocks on a runtime of its own: it must not run on
        // this runtime's thread (that would panic), and must still work.
        let guard = pg_lock("pg-in-async", "exclusive").acquire().unwrap();
        assert!(!guard.is_lost());
        drop(guard);
        let guard = pg_lock("pg-in-async", "exclusive")
            .acquire_async()
            .await
            .unwrap();
        assert!(!guard.is_lost());
        drop(guard);
    });
    assert_eq!(try_in_child("pg-in-async", "exclusive"), "ok", "released");
}

// ---------------------------------------------------------------------------
// A timeout waits on the server, and leaves nothing behind.

#[test]
fn a_timed_out_wait_leaves_nothing_waiting_on_the_server() {
    let name = "pg-timeout-clean";
    let (holder, (classid, objid)) = hold_in_child(name, "exclusive");
    let r = pg_lock(name, "exclusive")
        .timeout(Duration::from_millis(200))
        .acquire();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    // No helper thread left asleep in pg_advisory_lock with a session.
    let waiting = psql(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {classid} \
         AND objid = {objid} AND objsubid = 1 AND NOT granted"
    ));
    assert_eq!(waiting, "0", "a session still waits for the lock");
    support::release(holder).finish();
}

// ---------------------------------------------------------------------------
// fork without exec.

/// Whether `lost` has completed, polled once.
fn completed(lost: lockutils::Lost) -> bool {
    futures_lite::future::block_on(futures_lite::future::poll_once(lost)).is_some()
}

/// Ends, on the server, the session holding the advisory lock `id`.
fn terminate_holder((classid, objid): (u32, u32)) {
    let ended = psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' \
         AND classid = {classid} AND objid = {objid} AND objsubid = 1 AND granted"
    ));
    assert_eq!(ended, "1");
}

/// Child: holds `NAME`, then forks (no exec). The forked child drops its
/// copy of the guard, tries `NAME`, takes `NAME-child`, reports its key
/// and waits (10 s at most) to be told it lost it; this process then keeps
/// its lock until `release`.
#[test]
fn child_pg_fork() {
    if !running_as("child_pg_fork") {
        return;
    }
    let name = param("NAME");
    let mut guard = Some(pg_lock(&name, "exclusive").acquire().unwrap());
    // An idle session in the pool, for the forked child to leave alone.
    drop(
        pg_lock(&format!("{name}-warm"), "exclusive")
            .acquire()
            .unwrap(),
    );
    report("held");
    let code = support::forked::in_forked_child(|| {
        let inherited = guard.take().unwrap();
        report(format!(
            "inherited: is_lost {}, lost() {}",
            inherited.is_lost(),
            completed(inherited.lost())
        ));
        drop(inherited);
        let tried = pg_lock(&name, "exclusive").blocking(false).acquire();
        report(format!("try: {}", support::outcome(&tried)));
        drop(tried);
        let mine = pg_lock(&format!("{name}-child"), "exclusive")
            .acquire()
            .unwrap();
        let (classid, objid) = pg_locks_id(&describe(&mine));
        report(format!("child holds {classid} {objid}"));
        let started = Instant::now();
        let lost = mine.lost();
        support::within(Duration::from_secs(10), move || {
            futures_lite::future::block_on(lost);
        });
        report(format!(
            "child told lost: is_lost {} (after {:?})",
            mine.is_lost(),
            started.elapsed()
        ));
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

/// Before: the forked child's drop of its copy of the guard unlocked the
/// parent's lock on the parent's own session (shared socket), its copy
/// said `is_lost() == false` (a guess: nothing checks it there), and a
/// lock it took itself was never checked (the checking thread is the
/// parent's): its session ended by the server went unnoticed.
#[test]
fn a_forked_child_leaves_the_parents_lock_alone_and_checks_its_own() {
    let name = "pg-fork";
    let mut p = pg_child("child_pg_fork").param("NAME", name).spawn();
    p.expect("held");
    assert_eq!(p.next_report(), "inherited: is_lost true, lost() true");
    assert_eq!(p.next_report(), "try: wouldblock");
    let got = p.next_report();
    let mut words = got
        .strip_prefix("child holds ")
        .unwrap_or_else(|| panic!("{got}"))
        .split(' ');
    let id = (
        words.next().unwrap().parse().unwrap(),
        words.next().unwrap().parse().unwrap(),
    );
    terminate_holder(id);
    let got = p.next_report();
    assert!(got.starts_with("child told lost: is_lost true"), "{got}");
    println!("postgres, forked child: {got}");
    assert_eq!(p.next_report(), "forked child exited 0");
    // The parent's lock, and its session, are still the parent's.
    assert_eq!(try_in_child(name, "exclusive"), "wouldblock");
    p.send("check-parent");
    assert_eq!(p.next_report(), "parent: is_lost false");
    p.send("release");
    p.expect("released");
    p.finish();
    assert_eq!(try_in_child(name, "exclusive"), "ok");
}
