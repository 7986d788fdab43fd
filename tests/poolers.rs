//! Lock servers behind poolers and in clusters (features `postgres`,
//! `etcd`): PostgreSQL through a real pgbouncer in session mode (works) and
//! transaction mode (refused), and a 3-member etcd cluster losing the
//! member under a held and an awaited lock. Servers are started once for
//! this test binary (`tests/support/servers.rs`); the other processes are
//! this binary re-run as children.
#![cfg(all(unix, feature = "postgres", feature = "etcd"))]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lockutils::LockError;
use servers::psql;
use support::{Child, PATIENCE, await_order, param, param_as, report, running_as};

// ---------------------------------------------------------------------------
// pgbouncer.

/// Adds one to the counter in `TABLE` with two statements (read, then
/// write), so that overlapping holders would lose an increment.
#[lockutils::synchronized("pgbouncer-counter", external)]
fn bump(table: &str) -> Result<(), LockError> {
    let n: u64 = psql(&format!("SELECT n FROM {table}")).parse().unwrap();
    psql(&format!("UPDATE {table} SET n = {}", n + 1));
    Ok(())
}

/// Child: locks through `URL` (pgbouncer), bumps the counter `INCREMENTS`
/// times on each of 2 threads after `go`.
#[test]
fn child_pgbouncer_counter() {
    if !running_as("child_pgbouncer_counter") {
        return;
    }
    lockutils::config::set_backend(&param("URL")).unwrap();
    let table = param("TABLE");
    let increments: u64 = param_as("INCREMENTS");
    report("ready");
    await_order("go");
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| (0..increments).for_each(|_| bump(&table).unwrap()));
        }
    });
    report("done");
}

#[test]
fn session_pooling_gives_exact_exclusion_across_processes() {
    let url = servers::pgbouncer("session");
    let table = "pgbouncer_counter";
    psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (n bigint); INSERT INTO {table} VALUES (0)"
    ));
    let mut children: Vec<Child> = (0..3)
        .map(|_| {
            support::child("child_pgbouncer_counter")
                .env(servers::POSTGRES_ENV, servers::postgres())
                .param("URL", url)
                .param("TABLE", table)
                .param("INCREMENTS", "6")
                .spawn()
        })
        .collect();
    let started = support::ready_set_go(&mut children);
    let took = support::all_done(children, started);
    let got: u64 = psql(&format!("SELECT n FROM {table}")).parse().unwrap();
    assert_eq!(got, 3 * 2 * 6, "lost increments: holders overlapped");
    println!("pgbouncer (session): 36 increments by 3 processes x 2 threads in {took:?}");
    // Through the pooler, with fencing tokens and a check thread as direct.
    let g = lockutils::lock("pgbouncer-token")
        .external()
        .backend(url)
        .acquire()
        .unwrap();
    assert!(g.fencing_token().is_some());
    assert!(!g.is_lost());
}

#[lockutils::synchronized("pgbouncer-refused", external)]
fn guarded(ran: &AtomicBool) -> Result<u32, LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(7)
}

/// Child: `set_backend` to pgbouncer in transaction mode; reports the
/// error a `#[synchronized]` function gets.
#[test]
fn child_pgbouncer_transaction() {
    if !running_as("child_pgbouncer_transaction") {
        return;
    }
    lockutils::config::set_backend(&param("URL")).unwrap();
    let ran = AtomicBool::new(false);
    let r = guarded(&ran);
    assert!(
        !ran.load(Ordering::SeqCst),
        "the body ran without a real lock"
    );
    match r {
        Err(LockError::Backend { op, cause, .. }) => report(format!("{op}: {cause}")),
        other => report(format!("unexpected: {other:?}")),
    }
    // Asked again, the same answer, without a new check.
    let again = guarded(&ran).unwrap_err().to_string();
    assert!(again.contains("transaction or statement mode"), "{again}");
}

#[test]
fn transaction_pooling_is_detected_at_connect_and_refused() {
    let mut c = support::child("child_pgbouncer_transaction")
        .param("URL", servers::pgbouncer("transaction"))
        .spawn();
    let got = c.next_report();
    c.finish();
    println!("pgbouncer (transaction): {got}");
    assert!(got.starts_with("connect: "), "{got}");
    assert!(got.contains("transaction or statement mode"), "{got}");
    assert!(got.contains("pool_mode = session"), "{got}");
}

/// Runs `sql` with psql against `url`; its unaligned output (header first).
fn psql_at(url: &str, sql: &str) -> String {
    let out = Command::new(servers::pg_bin().join("psql"))
        .args(["-X", "-A", "-q", "-d", url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql -d {url} -c {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The idle server connections of pgbouncer's pool for the database
/// `postgres`, from its admin console (`SHOW POOLS`).
fn idle_servers(url: &str) -> usize {
    let admin = format!("{}/pgbouncer", url.rsplit_once('/').unwrap().0);
    let pools = psql_at(&admin, "SHOW POOLS");
    let mut lines = pools.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    let idle = header
        .iter()
        .position(|h| *h == "sv_idle")
        .expect("sv_idle");
    lines
        .map(|l| l.split('|').collect::<Vec<_>>())
        .find(|row| row.first() == Some(&"postgres"))
        .map_or(0, |row| row[idle].parse().unwrap())
}

/// Makes pgbouncer at `url` open `n` server connections: `n` psql
/// clients inside a transaction at once (each answers with its backend's
/// pid once in it), then all commit; waits until the `n` are idle.
fn open_servers(url: &str, n: usize) {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let mut pids = std::collections::BTreeSet::new();
    let mut clients: Vec<std::process::Child> = (0..n)
        .map(|_| {
            let mut c = Command::new(servers::pg_bin().join("psql"))
                .args(["-X", "-A", "-t", "-q", "-d", url])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("run psql");
            let stdin = c.stdin.as_mut().unwrap();
            writeln!(stdin, "BEGIN;\nSELECT pg_backend_pid();").unwrap();
            stdin.flush().unwrap();
            let mut pid = String::new();
            BufReader::new(c.stdout.as_mut().unwrap())
                .read_line(&mut pid)
                .unwrap();
            pids.insert(pid.trim().to_owned());
            c
        })
        .collect();
    assert_eq!(pids.len(), n, "the transactions shared a server: {pids:?}");
    for c in &mut clients {
        let mut stdin = c.stdin.take().unwrap();
        writeln!(stdin, "COMMIT;").unwrap();
        drop(stdin);
        assert!(c.wait().unwrap().success());
    }
    support::wait_for("the server connections to be idle", PATIENCE, || {
        idle_servers(url) >= n
    });
}

/// Before: with idle server connections handed out in turn, a session's
/// two statements around another session's ran on backends X, Y, X and
/// the check passed; the lock "held" nothing (the body ran).
#[test]
fn transaction_pooling_that_hands_out_servers_in_turn_is_detected_too() {
    let url = servers::pgbouncer_round_robin();
    open_servers(url, 3);
    let mut c = support::child("child_pgbouncer_transaction")
        .param("URL", url)
        .spawn();
    let got = c.next_report();
    c.finish();
    println!("pgbouncer (transaction, round robin): {got}");
    assert!(got.starts_with("connect: "), "{got}");
    assert!(got.contains("transaction or statement mode"), "{got}");
}

// ---------------------------------------------------------------------------
// A 3-member etcd cluster losing a member.

/// `etcdctl` against the cluster's live members.
fn cluster_keys(endpoints: &str, prefix: &str) -> usize {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["get", "--prefix", "--keys-only", prefix])
        .output()
        .expect("run etcdctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

/// Child: waits (blocking) for `NAME` on `URL`; reports the outcome.
#[test]
fn child_cluster_wait() {
    if !running_as("child_cluster_wait") {
        return;
    }
    let r = lockutils::lock(&param("NAME"))
        .external()
        .backend(&param("URL"))
        .acquire();
    report(support::outcome(&r));
}

#[test]
fn losing_a_member_keeps_the_holder_or_tells_it_and_the_waiter_gets_the_lock() {
    let cluster = servers::etcd_cluster();
    let url = format!("{}/cluster?ttl=3", cluster.url);
    let name = "cluster-failover";
    let holder = lockutils::lock(name)
        .external()
        .backend(&url)
        .acquire()
        .unwrap();
    let lost = holder.lost();
    let mut waiter = support::child("child_cluster_wait")
        .param("NAME", name)
        .param("URL", &url)
        .spawn();
    let live: Vec<String> = cluster.members[1..]
        .iter()
        .map(|(p, _)| format!("127.0.0.1:{p}"))
        .collect();
    let live = live.join(",");
    let all = cluster.url.replace("etcd://", "");
    support::wait_for("the waiter to queue", PATIENCE, || {
        cluster_keys(&all, "cluster/") >= 2
    });
    // The first endpoint: where the clients started.
    let killed = Instant::now();
    servers::signal(cluster.members[0].1, libc::SIGKILL);
    // A new lock through the same URL: how long until the cluster serves.
    let other = lockutils::lock("cluster-after-kill")
        .external()
        .backend(&url)
        .acquire()
        .unwrap();
    let failover = killed.elapsed();
    drop(other);
    // Past a whole ttl and more after the kill: kept, or told lost.
    let watched = support::block_on_within(Duration::from_secs(30), async move {
        tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .is_ok()
    });
    let kept = !holder.is_lost();
    assert_eq!(kept, !watched, "is_lost() and lost() disagree");
    println!(
        "etcd cluster: member killed; a new lock after {failover:?}; holder {} \
         the lock 5 s (ttl 3 s) later",
        if kept { "kept" } else { "was told it lost" }
    );
    let released = Instant::now();
    drop(holder);
    let got = waiter.next_report();
    let handover = released.elapsed();
    waiter.finish();
    assert_eq!(got, "ok", "the waiter did not get the lock");
    println!("etcd cluster: the waiter got the lock {handover:?} after the release");
    assert!(handover < Duration::from_secs(5), "{handover:?}");
    assert!(
        cluster_keys(&live, "cluster/cluster-failover") == 0,
        "keys left"
    );
}
