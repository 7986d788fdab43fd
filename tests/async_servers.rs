//! Async code never waits for a lock server on its executor thread (it
//! would stall every task sharing that thread): acquiring, waiting and
//! dropping an `AsyncLockGuard` do their round trips on helper threads.
//!
//! To make a blocked executor show, the test freezes the whole PostgreSQL
//! cluster (SIGSTOP to the postmaster and its backends) for a while around
//! each operation: a round trip made on the executor thread then stalls a
//! ticker task on the same current-thread runtime for that long. This file
//! is its own test binary, so its server is its own and freezing it
//! stalls no other test.
#![cfg(feature = "postgres")]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::time::{Duration, Instant};

use servers::POSTGRES_ENV;
use support::{await_order, report, running_as};

const NAME: &str = "async-executor";

/// How long each freeze lasts; a round trip on the executor would stall
/// the ticker at least this long.
const FREEZE: Duration = Duration::from_millis(200);

/// The longest the ticker may go without a tick.
const MAX_GAP: Duration = Duration::from_millis(50);

fn pg_lock(name: &str) -> lockutils::Lock<'_> {
    lockutils::lock(name)
        .external()
        .backend(servers::postgres())
}

/// The postmaster of the test cluster (its command line names the port)
/// and every process it started.
fn cluster_pids() -> Vec<i32> {
    let port = servers::postgres().rsplit(':').next().unwrap();
    let port = port.split('/').next().unwrap().to_owned();
    let procs: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect();
    let postmaster = procs
        .iter()
        .find(|(_, _, cmd)| cmd.contains("postgres") && cmd.contains(&format!("-p {port} ")))
        .map(|(pid, _, _)| *pid)
        .expect("the test cluster's postmaster");
    let mut pids = vec![postmaster];
    pids.extend(procs.iter().filter(|p| p.1 == postmaster).map(|p| p.0));
    pids
}

fn signal_all(pids: &[i32], sig: i32) {
    for &p in pids {
        // SAFETY: sending a signal to a process of our test cluster.
        unsafe { libc::kill(p, sig) };
    }
}

/// Runs `op` while the cluster is frozen: frozen before `op` starts,
/// thawed [`FREEZE`] later (on a blocking thread, not the executor).
async fn while_frozen<F: std::future::Future>(op: F) -> F::Output {
    let pids = tokio::task::spawn_blocking(|| {
        let pids = cluster_pids();
        signal_all(&pids, libc::SIGSTOP);
        pids
    })
    .await
    .unwrap();
    let thaw = tokio::task::spawn_blocking(move || {
        // The stall being simulated, not a synchronisation.
        std::thread::sleep(FREEZE);
        signal_all(&pids, libc::SIGCONT);
    });
    let out = op.await;
    thaw.await.unwrap();
    out
}

/// Child: holds the lock until ordered to release.
#[test]
fn child_pg_hold() {
    if !running_as("child_pg_hold") {
        return;
    }
    let guard = pg_lock(NAME).acquire().unwrap();
    report("locked");
    await_order("release");
    drop(guard);
    report("released");
}

/// Waiters on the server for advisory locks, as `pg_locks` shows them.
fn waiting_on_server() -> usize {
    let out =
        servers::psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted");
    out.trim().parse().unwrap()
}

#[test]
fn async_acquire_wait_and_release_never_block_the_executor() {
    let mut holder = support::child("child_pg_hold")
        .env(POSTGRES_ENV, servers::postgres())
        .spawn();
    holder.expect("locked");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (worst, holder) = rt.block_on(async move {
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ticker = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            loop {
                let t = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                    _ = &mut stop_rx => return worst,
                }
                worst = worst.max(t.elapsed());
            }
        });
        // A waiter whose first attempt meets a frozen server (its task is
        // started while frozen; it is awaited later, on purpose).
        #[allow(clippy::async_yields_async)]
        let waiter =
            while_frozen(async { tokio::spawn(async { pg_lock(NAME).acquire_async().await }) })
                .await;
        let mut holder = tokio::task::spawn_blocking(move || {
            support::wait_for("a waiter on the server", support::PATIENCE, || {
                waiting_on_server() >= 1
            });
            holder.send("release");
            holder.expect("released");
            holder
        })
        .await
        .unwrap();
        let guard = waiter.await.unwrap().expect("the waiter gets the lock");
        // A release that meets a frozen server.
        while_frozen(async { drop(guard) }).await;
        // A non-blocking attempt on the free lock, frozen server.
        let again = while_frozen(pg_lock(NAME).blocking(false).acquire_async()).await;
        assert!(again.is_ok(), "{again:?}");
        drop(again);
        stop_tx.send(()).unwrap();
        holder = tokio::task::spawn_blocking(move || holder).await.unwrap();
        (ticker.await.unwrap(), holder)
    });
    holder.finish();
    assert!(
        worst < MAX_GAP,
        "the executor was blocked for {worst:?} (a freeze lasts {FREEZE:?})"
    );
}
