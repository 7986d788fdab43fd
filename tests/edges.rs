//! Promises at the edges: giving up gives everything back at once, a
//! lock file is waited for by at most one thread per process (which ends
//! when nobody waits any more), and a child forked without `exec` neither
//! shares nor unlocks its parent's lock. Real processes throughout; thread
//! and descriptor counts are taken in child processes, where no other test
//! runs beside them.

mod support;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use lockutils::__private_v0_1::waiter_threads;
use lockutils::LockError;
use support::{child, hold, outcome, param, release, report, running_as, try_in_child};

/// Waits (at most [`support::PATIENCE`]) until this process has no thread
/// waiting for a lock file on a caller's behalf.
fn await_no_waiter_thread() {
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while waiter_threads() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a waiter thread stayed with nobody waiting"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// This process's threads, by name.
fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        // A thread that exits between the listing and the read is gone:
        // it is not counted.
        .filter_map(|t| {
            let comm = t.ok()?.path().join("comm");
            Some(std::fs::read_to_string(comm).ok()?.trim().to_owned())
        })
        .collect();
    names.sort();
    names
}

fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// A lock-file timeout frees the in-process lock at once, whatever the
/// file's waiter thread is still waiting for in the kernel.
#[test]
fn a_timeout_on_a_held_lock_file_frees_the_in_process_lock_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let holder = hold(dir.path(), "", "edge-timeout");
    let r = lockutils::lock("edge-timeout")
        .external()
        .lock_path(dir.path())
        .timeout(Duration::from_millis(50))
        .acquire();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    // The very next instant, another thread can take the in-process lock.
    let next =
        std::thread::spawn(|| outcome(&lockutils::lock("edge-timeout").blocking(false).acquire()));
    assert_eq!(
        next.join().unwrap(),
        "ok",
        "the timed-out wait kept the lock"
    );
    release(holder).finish();
}

/// Dropped async acquisitions give the in-process lock back at once;
/// their kernel waits are one (the file's waiter thread, reused by each
/// next one), and end with nothing held once the holder lets go.
#[test]
fn a_dropped_async_acquisition_frees_the_in_process_lock_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge-async-drop");
    let holder = hold(dir.path(), "", "edge-async-drop");
    let lock = lockutils::lock("edge-async-drop")
        .external()
        .lock_path(dir.path());
    // Classic (per-process) locks: no waiter thread, the wait polls.
    let kernel_waits = usize::from(support::cohorting());
    for round in 0..5 {
        let mut fut = Box::pin(lock.acquire_async());
        assert!(poll_once(fut.as_mut()).is_pending(), "the file is held");
        if kernel_waits > 0 {
            support::await_blocked_waiters(&path, 1);
        }
        drop(fut);
        assert_eq!(
            outcome(&lockutils::lock("edge-async-drop").blocking(false).acquire()),
            "ok",
            "the dropped future kept the in-process lock"
        );
        assert_eq!(
            support::blocked_waiters(&path),
            kernel_waits,
            "round {round}: a second kernel wait instead of the one reused"
        );
        assert_eq!(waiter_threads(), kernel_waits, "round {round}");
    }
    release(holder).finish();
    await_no_waiter_thread();
    assert_eq!(
        try_in_child(dir.path(), "", "edge-async-drop"),
        "ok",
        "the waiter thread kept what it got with nobody waiting"
    );
}

/// "threads|fds" as a child reports them.
fn counts(report: &str) -> (Vec<String>, usize) {
    let (threads, fds) = report.split_once('|').unwrap();
    let threads = threads
        .trim_matches(['[', ']'])
        .split(", ")
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_matches('"').to_owned())
        .collect();
    (threads, fds.parse().unwrap())
}

#[test]
fn a_thousand_timed_out_waits_leave_no_thread_or_descriptor_behind() {
    let dir = tempfile::tempdir().unwrap();
    let holder = hold(dir.path(), "", "edge-thousand");
    let mut c = child("child_thousand_timeouts")
        .param("DIR", dir.path())
        .spawn();
    let (before, during) = (counts(&c.next_report()), counts(&c.next_report()));
    release(holder).finish();
    c.send("released");
    let after = counts(&c.next_report());
    c.finish();
    // While the holder keeps the file: at most the file's one waiter
    // thread and its descriptor more, however many waits gave up.
    let mut extra = during.0.clone();
    for t in &before.0 {
        let i = extra.iter().position(|x| x == t).expect("a thread went");
        extra.remove(i);
    }
    assert!(
        extra.is_empty() || extra == ["lockutils-wait"],
        "threads {:?} -> {:?}",
        before.0,
        during.0
    );
    assert!(
        during.1 <= before.1 + 1,
        "descriptors {} -> {}",
        before.1,
        during.1
    );
    // Once nobody waits: the same threads, and no descriptor more.
    assert_eq!(before.0, after.0, "threads before -> after");
    assert!(
        after.1 <= before.1,
        "descriptors {} -> {}",
        before.1,
        after.1
    );
}

#[test]
fn child_thousand_timeouts() {
    if !running_as("child_thousand_timeouts") {
        return;
    }
    let dir = param("DIR");
    let attempt = |async_too: bool, timeout: Duration| {
        let lock = lockutils::lock("edge-thousand")
            .external()
            .lock_path(&dir)
            .timeout(timeout);
        assert!(lock.acquire().unwrap_err().is_busy());
        if async_too {
            // Any executor will do; this one starts no thread of its own.
            let r = futures_lite::future::block_on(async {
                let lock = lockutils::lock("edge-thousand")
                    .external()
                    .lock_path(&dir)
                    .timeout(timeout);
                lock.acquire_async().await.map(drop)
            });
            assert!(r.unwrap_err().is_busy());
        }
    };
    // Start the lazily started timer thread first, without touching the
    // lock file: an async timeout on an in-process lock held here.
    let held = lockutils::lock("edge-thousand-timer").acquire().unwrap();
    let waited = futures_lite::future::block_on(
        lockutils::lock("edge-thousand-timer")
            .timeout(Duration::from_millis(50))
            .acquire_async(),
    );
    assert!(waited.unwrap_err().is_busy());
    drop(held);
    // Open the lock file (kept open by this thread's recent names) with
    // an attempt that never waits, so never needs a helper.
    let tried = lockutils::lock("edge-thousand")
        .external()
        .lock_path(&dir)
        .blocking(false)
        .acquire();
    assert!(tried.unwrap_err().is_busy());
    report(format!("{:?}|{}", threads(), support::open_fds()));
    for i in 0..1000 {
        attempt(i % 10 == 0, Duration::from_millis(1));
    }
    report(format!("{:?}|{}", threads(), support::open_fds()));
    support::await_order("released");
    await_no_waiter_thread();
    report(format!("{:?}|{}", threads(), support::open_fds()));
}

/// A semaphore waiter leaves the kernel wait on one slot to the file's
/// waiter thread while it re-tries the others; when another slot frees
/// first, that thread stays blocked on its slot. Round after round it is
/// the one thread reused (a helper per wait used to pile up: 1 -> 4
/// threads after 6 such waits), and it ends once its slot is free.
#[test]
fn semaphore_waits_leave_no_slot_watcher_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = child("child_slot_watchers")
        .param("DIR", dir.path())
        .spawn();
    let got = c.next_report();
    c.finish();
    // "most waiter threads at once|threads at the start|threads at the end"
    let mut parts = got.splitn(3, '|');
    let most: usize = parts.next().unwrap().parse().unwrap();
    let (start, end) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(most <= 1, "{most} waiter threads for one lock file");
    assert_eq!(start, end, "threads at the start -> at the end");
}

/// Locks byte `slot` of `file` through its own open file description.
fn ofd_lock(file: &std::fs::File, slot: i64, kind: i32) {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = slot;
    fl.l_len = 1;
    // SAFETY: a valid descriptor and `flock` for the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn child_slot_watchers() {
    if !running_as("child_slot_watchers") {
        return;
    }
    let dir = param("DIR");
    let path = Path::new(&dir).join("edge-slots");
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap()
    };
    // Both slots of permits(2) taken by other open files: slot 0 for the
    // whole test, slot 1 released once a waiter is asleep.
    let (slot0, slot1) = (open(), open());
    ofd_lock(&slot0, 0, libc::F_WRLCK);
    let lock = move || {
        let dir = param("DIR");
        lockutils::lock("edge-slots")
            .permits(2)
            .external()
            .lock_path(&dir)
            .acquire()
            .map(drop)
    };
    // One in-process permit held here for the whole test keeps the entry
    // alive, so the watched slot moves round by round (with a fresh entry
    // it would be the same slot every time, by the PID's parity).
    let _keep = lockutils::lock("edge-slots").permits(2).acquire().unwrap();
    let start = format!("{:?}", threads());
    let mut most = 0;
    for _ in 0..6 {
        ofd_lock(&slot1, 1, libc::F_WRLCK);
        let waiter = std::thread::spawn(lock);
        // Classic locks have no waiter thread (the wait polls): nothing to
        // wait for in the kernel.
        if support::cohorting() {
            support::await_blocked_waiters(&path, 1);
        }
        ofd_lock(&slot1, 1, libc::F_UNLCK);
        waiter.join().unwrap().unwrap();
        let waiting = threads().iter().filter(|t| *t == "lockutils-wait").count();
        most = most.max(waiting);
    }
    // Slot 0 goes: a waiter thread still blocked on it gets it, finds
    // nobody waiting, lets go and ends.
    ofd_lock(&slot0, 0, libc::F_UNLCK);
    await_no_waiter_thread();
    report(format!("{most}|{start}|{:?}", threads()));
}

/// Before: the child reused the parent's pooled descriptor (the same open
/// file description), so its lock "succeeded" while the parent held it,
/// and dropping its copy of the parent's guard unlocked the parent.
#[test]
fn a_forked_child_neither_shares_nor_unlocks_its_parents_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = child("child_fork").param("DIR", dir.path()).spawn();
    c.expect("held");
    assert_eq!(c.next_report(), "grandchild: wouldblock");
    // The parent still holds the file, as seen from a third process.
    assert_eq!(try_in_child(dir.path(), "", "edge-fork"), "wouldblock");
    c.send("release");
    c.expect("released");
    c.finish();
    assert_eq!(try_in_child(dir.path(), "", "edge-fork"), "ok");
}

#[test]
fn child_fork() {
    if !running_as("child_fork") {
        return;
    }
    let dir = param("DIR");
    let lock = lockutils::lock("edge-fork").external().lock_path(&dir);
    let guard = lock.acquire().unwrap();
    report("held");
    // SAFETY: the child only drops a guard, takes a lock and exits; the
    // allocator and lockutils' own locks are not held by other threads.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(guard); // the child's copy: must not unlock the parent's lock
        let code = match lock.blocking(false).acquire() {
            Err(LockError::WouldBlock { .. }) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        // SAFETY: ends the forked child without running the parent's
        // atexit handlers or libtest's teardown.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let said = match libc::WEXITSTATUS(status) {
        0 => "wouldblock",
        1 => "ok (shared the parent's lock)",
        _ => "error",
    };
    report(format!("grandchild: {said}"));
    support::await_order("release");
    drop(guard);
    report("released");
}

/// A child forked while its parent waits for a lock file (the file's
/// waiter thread blocked in the kernel for a pending async acquisition)
/// inherits neither that thread nor the wait: its own timed wait times out
/// on time, its dropped async wait returns, and it makes a waiter thread
/// of its own. The parent's wait goes on and gets the lock.
#[test]
fn a_forked_child_never_waits_on_what_it_inherited() {
    let dir = tempfile::tempdir().unwrap();
    let holder = hold(dir.path(), "", "edge-fork-wait");
    let mut c = child("child_fork_wait").param("DIR", dir.path()).spawn();
    assert_eq!(c.next_report(), "grandchild: ok");
    release(holder).finish();
    c.expect("parent: acquired");
    c.finish();
}

#[test]
fn child_fork_wait() {
    if !running_as("child_fork_wait") {
        return;
    }
    let dir = param("DIR");
    let lock = lockutils::lock("edge-fork-wait").external().lock_path(&dir);
    let mut pending = Box::pin(lock.acquire_async());
    assert!(poll_once(pending.as_mut()).is_pending(), "the file is held");
    // Classic locks poll instead of leaving the wait to a thread.
    let threads = usize::from(support::cohorting());
    assert_eq!(waiter_threads(), threads);
    // SAFETY: the child takes locks and exits; no lock of the allocator or
    // of lockutils is held by another thread (the waiter thread is blocked
    // in fcntl, holding none).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let inherited = waiter_threads();
        let started = std::time::Instant::now();
        let timed = lock.clone().timeout(Duration::from_millis(50)).acquire();
        let took = started.elapsed();
        let mut fut = Box::pin(lock.acquire_async());
        let pending_here = poll_once(fut.as_mut()).is_pending();
        drop(fut);
        let free_here = lock.clone().blocking(false).acquire().is_err()
            && lockutils::lock("edge-fork-wait")
                .blocking(false)
                .acquire()
                .is_ok();
        let ok = inherited == 0
            && matches!(timed, Err(LockError::Timeout { .. }))
            && took < Duration::from_secs(10)
            && pending_here
            && free_here
            && waiter_threads() == threads;
        // SAFETY: ends the forked child without libtest's teardown.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    report(format!("grandchild: {}", if ok { "ok" } else { "failed" }));
    let guard = futures_lite::future::block_on(pending).unwrap();
    report("parent: acquired");
    drop(guard);
}

/// Classic per-process `fcntl` locks (forced here as where OFD locks do
/// not exist): two readers of one process share one kernel read lock, so a
/// naive release by one would drop the other's, and a writer elsewhere
/// would get in. Run in a child with `LOCKUTILS_CLASSIC_LOCKS=1`.
#[test]
fn classic_locks_keep_a_readers_lock_when_another_reader_of_its_process_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = child("child_classic_readers")
        .param("DIR", dir.path())
        .env("LOCKUTILS_CLASSIC_LOCKS", "1")
        .spawn();
    c.expect("two readers, one left");
    let writer = support::tried(
        support::lock_child("support::child_try", dir.path(), "", "edge-classic")
            .param("MODE", "exclusive"),
    );
    assert_eq!(writer, "wouldblock", "a writer got in beside a reader");
    c.send("release");
    c.expect("released");
    c.finish();
    assert_eq!(try_in_child(dir.path(), "", "edge-classic"), "ok");
}

#[test]
fn child_classic_readers() {
    if !running_as("child_classic_readers") {
        return;
    }
    let dir = param("DIR");
    let lock = || {
        lockutils::lock("edge-classic")
            .shared()
            .external()
            .lock_path(&dir)
    };
    let first = lock().acquire().unwrap();
    let second = std::thread::scope(|s| s.spawn(|| lock().acquire().map(drop)).join());
    second.unwrap().unwrap(); // the other reader came and went
    report("two readers, one left");
    support::await_order("release");
    drop(first);
    report("released");
}
