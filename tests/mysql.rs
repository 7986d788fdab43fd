//! `external` locks on MySQL/MariaDB (feature `mysql`), against a real
//! mariadbd started for this test binary (`tests/support/servers_mysql.rs`)
//! and real processes (this binary re-run as children,
//! `tests/support/mod.rs`). The server itself says what it holds and who
//! waits (`IS_USED_LOCK`, the process list), read as root over its socket.
//! Timing bounds have wide slack; the figures they measure are printed
//! (`--nocapture` shows them).
#![cfg(all(unix, feature = "mysql"))]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lockutils::LockError;
use servers::MYSQL_ENV;
use support::{Child, PATIENCE, param, param_as, report, running_as};

fn mysql_child(test: &str) -> support::ChildBuilder {
    support::child(test).env(MYSQL_ENV, servers::mysql())
}

fn my_lock<'a>(name: &'a str, url: &'a str) -> lockutils::Lock<'a> {
    lockutils::lock(name).external().backend(url)
}

fn sql(q: &str) -> String {
    servers::mariadb().sql(q)
}

/// The server's lock name of a short lowercase lock name.
fn server_name(name: &str) -> String {
    format!("lockutils:{name}")
}

/// The session holding `name` on the server, if any (`IS_USED_LOCK`).
fn holder(name: &str) -> Option<u32> {
    let id = sql(&format!("SELECT IS_USED_LOCK('{}')", server_name(name)));
    id.parse().ok()
}

/// How many sessions wait in `GET_LOCK` for `name`.
fn waiters(name: &str) -> usize {
    let hex: String = server_name(name)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    sql(&format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE INFO LIKE 'SELECT GET_LOCK(X''{hex}''%'"
    ))
    .parse()
    .unwrap()
}

fn await_waiters(name: &str, n: usize) {
    support::wait_for("a waiter in GET_LOCK", PATIENCE, || waiters(name) >= n);
}

// ---------------------------------------------------------------------------
// Children.

/// Child: holds `NAME` on `URL`, reports `locked <fencing token>`, keeps it
/// until ordered to `release` (or killed), reports `released`; or, ordered
/// to `check`, waits until it is told the lock is lost and reports `lost`.
#[test]
fn child_mysql_hold() {
    if !running_as("child_mysql_hold") {
        return;
    }
    let (name, url) = (param("NAME"), param("URL"));
    let guard = my_lock(&name, &url)
        .acquire()
        .unwrap_or_else(|e| panic!("{e}"));
    let token = guard.fencing_token().map_or(0, |t| t);
    report(format!("locked {token}"));
    match support::order().as_str() {
        "release" => {
            drop(guard);
            report("released");
        }
        "check" => {
            support::block_on_within(Duration::from_secs(10), guard.lost());
            assert!(guard.is_lost());
            report("lost");
        }
        other => panic!("unexpected order {other:?}"),
    }
}

/// A child holding `name` on `url`; its fencing token.
fn hold_in_child(name: &str, url: &str) -> (Child, u64) {
    support::holding_with_token(
        mysql_child("child_mysql_hold")
            .param("NAME", name)
            .param("URL", url),
    )
}

// ---------------------------------------------------------------------------
// Processes x threads incrementing a counter file under one lock.

const PROCESSES: usize = 3;
const THREADS: usize = 2;
const INCREMENTS: u64 = 40;

#[lockutils::synchronized("mysql-counter", external)]
fn bump(counter: &std::path::Path) -> Result<u64, LockError> {
    Ok(support::increment(counter))
}

/// Child: `set_backend` to the server, reports `ready`, waits for `go`,
/// then `THREADS` threads each [`bump`] the counter file `INCREMENTS` times.
#[test]
fn child_mysql_counter() {
    if !running_as("child_mysql_counter") {
        return;
    }
    lockutils::config::set_backend(servers::mysql()).unwrap();
    support::bump_in_threads(|c| _ = bump(c).unwrap());
}

#[test]
fn counter_is_exact_across_processes_and_threads() {
    let (want, took) = support::exact_counter(
        || mysql_child("child_mysql_counter"),
        PROCESSES,
        THREADS,
        INCREMENTS,
    );
    assert_eq!(holder("mysql-counter"), None, "released: nobody holds it");
    println!(
        "mysql counter: {PROCESSES} processes x {THREADS} threads, {want} increments in {took:?}"
    );
}

// ---------------------------------------------------------------------------
// Waiting in the server.

#[test]
fn a_waiter_waits_in_the_server_and_gets_the_lock_at_the_release() {
    let name = "mysql-wake";
    let url = servers::mysql();
    let (holder_child, _) = hold_in_child(name, url);
    let waiter = std::thread::spawn(move || {
        let _guard = my_lock(name, url).acquire().unwrap();
        Instant::now()
    });
    await_waiters(name, 1);
    let released = Instant::now();
    let holder_child = support::release(holder_child);
    let took = waiter.join().unwrap() - released;
    holder_child.finish();
    println!("mysql: waiter got the lock {took:?} after the release");
    assert!(took < Duration::from_millis(900), "took {took:?}");
}

#[test]
fn a_killed_holder_frees_the_lock_at_once() {
    let name = "mysql-sigkill";
    let url = servers::mysql();
    let (mut holder_child, _) = hold_in_child(name, url);
    let waiter = std::thread::spawn(move || {
        let guard = my_lock(name, url).acquire().unwrap();
        assert!(!guard.is_lost());
        Instant::now()
    });
    await_waiters(name, 1);
    let killed = Instant::now();
    holder_child.kill();
    let took = waiter.join().unwrap() - killed;
    println!("mysql: waiter got the lock {took:?} after SIGKILL of the holder");
    // The socket closes with the process: no timeout is involved.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_stopped_holder_loses_its_lock_after_wait_timeout_and_is_told() {
    let name = "mysql-stopped";
    let url = format!("{}?wait_timeout=2", servers::mysql());
    let (mut holder_child, _) = hold_in_child(name, &url);
    let stopped = support::Stopped::new(holder_child.pid());
    let since = Instant::now();
    let guard = my_lock(name, &url).timeout(PATIENCE).acquire().unwrap();
    let took = since.elapsed();
    println!("mysql: a stopped holder's lock was taken {took:?} after SIGSTOP (wait_timeout 2 s)");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(stopped);
    holder_child.send("check");
    holder_child.expect("lost");
    holder_child.finish();
    drop(guard);
}

// ---------------------------------------------------------------------------
// Timeouts, blocking(false), shared mode, names, fencing.

#[test]
fn timeout_and_blocking_false_report_busy_and_leave_nothing_behind() {
    let name = "mysql-busy";
    let url = servers::mysql();
    let (holder_child, _) = hold_in_child(name, url);
    let held_by = holder(name).expect("the child holds it");
    let r = my_lock(name, url).blocking(false).acquire();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    let wait = Duration::from_millis(300);
    let started = Instant::now();
    let r = my_lock(name, url).timeout(wait).acquire();
    let took = started.elapsed();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    assert!(
        took >= wait && took < wait + Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(waiters(name), 0, "the given-up waiter left GET_LOCK");
    assert_eq!(holder(name), Some(held_by), "the holder is unchanged");
    support::release(holder_child).finish();
    let guard = my_lock(name, url).timeout(PATIENCE).acquire();
    assert!(guard.is_ok(), "{guard:?}");
}

#[test]
fn shared_mode_is_a_clear_error() {
    let r = my_lock("mysql-shared", servers::mysql()).shared().acquire();
    match r {
        Err(LockError::Backend { op, cause, .. }) => {
            assert_eq!(op, "lock");
            assert!(cause.contains("no shared"), "{cause}");
        }
        other => panic!("expected LockError::Backend, got {other:?}"),
    }
}

#[test]
fn long_and_capitalised_names_are_digested_and_still_exclude() {
    let url = servers::mysql();
    let long = format!("mysql-long-{}", "x".repeat(100));
    let (child, _) = hold_in_child(&long, url);
    let r = my_lock(&long, url).blocking(false).acquire();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    // The server computes the documented digest name itself.
    let digest = |name: &str| {
        let held = format!("CONCAT('lockutils:sha256:', LEFT(SHA2('{name}', 256), 40))");
        sql(&format!("SELECT IS_USED_LOCK({held})"))
    };
    assert_ne!(digest(&long), "NULL", "the digest name is held");
    support::release(child).finish();
    // Names that differ only in case are two locks (MySQL would fold them):
    // a name with capitals is digested too.
    let (child, _) = hold_in_child("Mysql-Case", url);
    assert_ne!(digest("Mysql-Case"), "NULL", "the digest name is held");
    let other = my_lock("mysql-case", url).blocking(false).acquire();
    assert!(other.is_ok(), "{other:?}");
    let same = my_lock("Mysql-Case", url).blocking(false).acquire();
    assert!(
        matches!(same, Err(LockError::WouldBlock { .. })),
        "{same:?}"
    );
    support::release(child).finish();
}

#[test]
fn fencing_tokens_strictly_increase_across_acquisitions_and_processes() {
    let name = "mysql-fencing";
    let url = servers::mysql();
    let mut last = 0;
    for round in 0..5 {
        let mine = my_lock(name, url).acquire().unwrap();
        let token = mine.fencing_token().expect("MariaDB gives fencing tokens");
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

#[test]
fn async_code_and_sync_calls_inside_a_runtime_work() {
    let name = "mysql-async";
    let url = servers::mysql();
    let (child, _) = hold_in_child(name, url);
    support::block_on_within(PATIENCE, async move {
        let wait = Duration::from_millis(300);
        let started = Instant::now();
        let r = my_lock(name, url).timeout(wait).acquire_async().await;
        assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
        assert!(started.elapsed() >= wait, "{:?}", started.elapsed());
        // A synchronous call from inside the runtime (the backend's own
        // runtime cannot be entered from here: it runs on another thread).
        let r = my_lock(name, url).blocking(false).acquire();
        assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    });
    assert_eq!(waiters(name), 0, "the timed-out wait left GET_LOCK");
    support::release(child).finish();
    support::block_on_within(PATIENCE, async move {
        let guard = my_lock(name, url).acquire_async().await.unwrap();
        assert!(guard.fencing_token().is_some());
        drop(guard);
    });
    // An async guard releases on a helper thread: soon, not necessarily
    // before drop returns.
    support::wait_for("the async guard's release", PATIENCE, || {
        holder(name).is_none()
    });
}

// ---------------------------------------------------------------------------
// Lost locks are told.

/// Everything `tracing` printed in this process (a global subscriber: the
/// warnings come from the backend's checking task).
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

#[test]
fn a_killed_session_is_told_lost_within_seconds() {
    let log = warnings();
    let name = "mysql-killed";
    let url = servers::mysql();
    let guard = my_lock(name, url).acquire().unwrap();
    let asked = Instant::now();
    assert!(!guard.is_lost());
    assert!(
        asked.elapsed() < Duration::from_millis(5),
        "is_lost asked the server"
    );
    let session = holder(name).expect("held");
    let location = guard.location().expect("an external lock").to_string();
    assert!(location.contains(&session.to_string()), "{location}");
    let killed = Instant::now();
    sql(&format!("KILL {session}"));
    let lost = guard.lost();
    support::block_on_within(Duration::from_secs(5), lost);
    let took = killed.elapsed();
    println!("mysql: a killed session was told lost after {took:?}");
    assert!(guard.is_lost());
    // Checked every second, answered within 2 s: a second or so, with
    // slack for a loaded machine.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(text.contains("lock lost") && text.contains(name), "{text}");
    // The server let go with the session: another holder gets it.
    let (child, _) = hold_in_child(name, url);
    support::release(child).finish();
}

// ---------------------------------------------------------------------------
// An unreachable server.

#[lockutils::synchronized("mysql-unreachable", external)]
fn guarded(ran: &AtomicBool) -> Result<u32, LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(7)
}

/// Child: `set_backend` to a closed port with a password; checks the error.
#[test]
fn child_mysql_unreachable() {
    if !running_as("child_mysql_unreachable") {
        return;
    }
    let port: u16 = param_as("PORT");
    servers::check_unreachable(
        &format!("mysql://lockutils:s3cret@127.0.0.1:{port}/locks"),
        &format!("mysql://lockutils:***@127.0.0.1:{port}/locks"),
        "mysql-unreachable",
        "mysql",
        guarded,
    );
    report("checked");
}

#[test]
fn an_unreachable_server_is_a_clear_error_and_the_body_does_not_run() {
    let port = servers::free_port();
    let mut c = support::child("child_mysql_unreachable")
        .param("PORT", port.to_string())
        .spawn();
    c.expect("checked");
    c.finish();
}

// ---------------------------------------------------------------------------
// TLS: ssl-mode, ssl-ca, ssl-cert, ssl-key.

fn tls_url(host: &str, query: &str) -> String {
    let server = servers::mariadb_tls();
    let pw = servers::MYSQL_PASSWORD;
    format!(
        "mysql://lockutils:{pw}@{host}:{}/locks?{query}",
        server.port
    )
}

/// The `cause` of the `LockError::Backend` that taking a lock on `url` gives.
fn cause_of(url: &str) -> String {
    match my_lock("mysql-tls-bad", url).acquire() {
        Err(LockError::Backend { cause, backend, .. }) => {
            assert!(!backend.contains(servers::MYSQL_PASSWORD), "{backend}");
            println!("{backend}: {cause}");
            cause
        }
        other => panic!("expected LockError::Backend, got {other:?}"),
    }
}

#[test]
fn tls_verifies_the_server_and_never_falls_back() {
    let certs = servers::certs();
    let ca = certs.ca.display();
    let started = Instant::now();
    let full = tls_url(
        "localhost",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    );
    let guard = my_lock("mysql-tls", &full).acquire().unwrap();
    println!(
        "mysql TLS: first lock (TLS handshake included) in {:?}",
        started.elapsed()
    );
    // The server takes TCP clients only over TLS: the lock is proof.
    let held = servers::mariadb_tls().sql("SELECT IS_USED_LOCK('lockutils:mysql-tls')");
    assert_ne!(held, "NULL");
    drop(guard);
    // VERIFY_CA: the chain, not the name (127.0.0.2 is not in the
    // certificate); a certificate of another CA is refused all the same.
    let ca_only = |host, ca: &std::path::Path| {
        tls_url(host, &format!("ssl-mode=VERIFY_CA&ssl-ca={}", ca.display()))
    };
    drop(
        my_lock("mysql-tls-ca", &ca_only("127.0.0.2", &certs.ca))
            .acquire()
            .unwrap(),
    );
    let cause = cause_of(&ca_only("127.0.0.2", &certs.other_ca));
    assert!(cause.contains("UnknownIssuer"), "{cause}");
    // REQUIRED without a CA: encrypted, unverified.
    let required = tls_url("127.0.0.2", "ssl-mode=REQUIRED");
    drop(my_lock("mysql-tls-req", &required).acquire().unwrap());
    let mutual = tls_url(
        "127.0.0.1",
        &format!(
            "ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}&ssl-cert={}&ssl-key={}",
            certs.client_cert.display(),
            certs.client_key.display()
        ),
    );
    drop(my_lock("mysql-tls-mutual", &mutual).acquire().unwrap());
    let wrong_name = tls_url(
        "127.0.0.2",
        &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
    );
    let cause = cause_of(&wrong_name);
    assert!(cause.contains("not valid for name"), "{cause}");
    let other = certs.other_ca.display();
    let cause = cause_of(&tls_url("localhost", &format!("ssl-ca={other}")));
    assert!(cause.contains("UnknownIssuer"), "{cause}");
    // The TLS server refuses plaintext (MariaDB answers "access denied"
    // to the very user and password it took over TLS above); a plaintext
    // server refuses TLS.
    let cause = cause_of(&tls_url("127.0.0.1", ""));
    assert!(cause.contains("Access denied"), "{cause}");
    let plain = format!("{}?ssl-mode=REQUIRED", servers::mysql());
    let cause = cause_of(&plain);
    assert!(cause.contains("does not support TLS"), "{cause}");
}
