//! Lock cohorting: a lock file's lock handed from one thread or task of
//! this process to the next with the in-process lock, never to anyone
//! else, and always let go in the end. Other processes (children of this
//! test binary, see `tests/support`) check from outside what the kernel
//! holds.
#![cfg(unix)]

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lockutils::__private_v0_1::{cohort_stats, has_waiters, holders};
use support::{PATIENCE, lock_child, param, report, running_as, try_in_child};

fn external<'a>(name: &'a str, dir: &'a Path) -> lockutils::Lock<'a> {
    lockutils::lock(name).external().lock_path(dir)
}

/// Waits until a thread of this process is queued for `name`.
fn await_local_waiter(name: &str) {
    let deadline = Instant::now() + PATIENCE;
    while has_waiters(name) != Some(true) {
        assert!(
            Instant::now() < deadline,
            "no thread ever queued for {name}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_waiting_thread_is_handed_the_locked_file() {
    let dir = tempfile::tempdir().unwrap();
    let name = "cohort-handed";
    let first = external(name, dir.path()).acquire().unwrap();
    let before = cohort_stats(name).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let guard = external(name, dir.path()).acquire().unwrap();
            // Another process sees the file locked while the handed-over
            // guard lives.
            let seen = try_in_child(dir.path(), "", name);
            drop(guard);
            // A batch's handoffs are counted when it ends: here.
            (cohort_stats(name).unwrap(), seen)
        });
        await_local_waiter(name);
        drop(first);
        let (stats, seen) = waiter.join().unwrap();
        assert_eq!(
            stats.0,
            before.0 + u64::from(support::cohorting()),
            "the waiting thread locked the file itself instead of being handed it \
             (or, with classic locks, was handed it)"
        );
        assert_eq!(
            seen, "wouldblock",
            "the handed-over lock was not held in the kernel"
        );
    });
    assert_eq!(
        try_in_child(dir.path(), "", name),
        "ok",
        "the lock file stayed locked after the last guard"
    );
}

fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// A task handed the lock with its file while nobody polls it holds both,
/// as a granted `tokio::sync::Mutex` waiter holds its lock: another thread
/// of this process finds the lock taken, and another process the file (a
/// locked file with the in-process lock free, as cohort parking left it,
/// was held for a holder that did not exist). Dropped unpolled, the task
/// gives both back.
#[test]
fn an_unpolled_waiter_handed_the_lock_holds_it_visibly() {
    let dir = tempfile::tempdir().unwrap();
    let name = "cohort-unpolled";
    let first = external(name, dir.path()).acquire().unwrap();
    let lock = external(name, dir.path());
    let mut task = Box::pin(lock.acquire_async());
    assert!(poll_once(task.as_mut()).is_pending());
    await_local_waiter(name);
    drop(first);
    // Another process first: it sees the file as this process keeps it.
    let elsewhere = try_in_child(dir.path(), "", name);
    let in_process = holders(name);
    let here = std::thread::scope(|s| {
        s.spawn(|| support::outcome(&external(name, dir.path()).blocking(false).acquire()))
            .join()
            .unwrap()
    });
    let who = lockutils::holders(&lock).unwrap();
    if support::cohorting() {
        assert_eq!(
            (here.as_str(), elsewhere.as_str(), in_process),
            ("wouldblock", "wouldblock", Some(1)),
            "the lock was handed to the task: held here and in the file"
        );
        assert_eq!(
            who.holders.iter().map(|h| h.pid).collect::<Vec<_>>(),
            [Some(std::process::id())],
            "holders() does not name this process"
        );
    } else {
        // Classic locks: nothing is handed over; the lock was released.
        assert_eq!((here.as_str(), elsewhere.as_str()), ("ok", "ok"));
    }
    drop(task);
    assert_eq!(holders(name), Some(0), "the dropped task kept the lock");
    assert_eq!(
        try_in_child(dir.path(), "", name),
        "ok",
        "the dropped task kept the file"
    );
}

/// A child forked while its parent had a waiter queued (here handed the
/// lock and the file, not yet polled) starts with none of that: what the
/// child takes and releases afterwards, it unlocks, and the parent gets the
/// lock as soon as the child is done. (The parent's queued waiter, copied
/// into the child, used to make the child's release park its file for a
/// waiter the child does not have, for as long as the child lived.)
#[test]
fn a_child_forked_beside_a_queued_waiter_releases_what_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = support::child("child_fork_beside_waiter")
        .param("DIR", dir.path())
        .spawn();
    assert_eq!(c.next_report(), "child: ok");
    assert_eq!(c.next_report(), "parent after the child released: ok");
    c.finish();
}

#[test]
fn child_fork_beside_waiter() {
    if !running_as("child_fork_beside_waiter") {
        return;
    }
    let dir = param("DIR");
    let name = "cohort-fork";
    let lock = lockutils::lock(name).external().lock_path(&dir);
    let first = lock.acquire().unwrap();
    let mut task = Box::pin(lock.acquire_async());
    assert!(poll_once(task.as_mut()).is_pending());
    await_local_waiter(name);
    drop(first); // hands the lock (and the file) to `task`
    let (done_r, done_w) = pipe();
    let (stay_r, stay_w) = pipe();
    // SAFETY: the child takes a lock, writes to a pipe and blocks reading
    // another; no lock of the allocator or of lockutils is held by another
    // thread here (this process runs one test on one thread).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop((done_r, stay_w)); // the parent's ends
        let got = lock.clone().timeout(PATIENCE).acquire();
        let ok = got.is_ok();
        drop(got);
        write_byte(&done_w, if ok { b'y' } else { b'n' });
        // Idles until the parent is done (it closes its end).
        let _ = read_byte(&stay_r);
        // SAFETY: ends the forked child without the parent's atexit
        // handlers or libtest's teardown.
        unsafe { libc::_exit(0) };
    }
    drop((done_w, stay_r));
    let guard = futures_lite::future::block_on(task).unwrap();
    drop(guard);
    let child_ok = read_byte(&done_r) == Some(b'y');
    report(format!("child: {}", if child_ok { "ok" } else { "failed" }));
    // The child has released and now idles.
    let r = lock.clone().timeout(Duration::from_secs(2)).acquire();
    report(format!(
        "parent after the child released: {}",
        support::outcome(&r)
    ));
    drop(r);
    drop(stay_w);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
}

fn pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are new and owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

fn write_byte(mut f: &std::fs::File, b: u8) {
    std::io::Write::write_all(&mut f, &[b]).unwrap();
}

fn read_byte(mut f: &std::fs::File) -> Option<u8> {
    let mut b = [0u8];
    match std::io::Read::read(&mut f, &mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

#[test]
fn a_waiter_that_does_not_lock_the_file_lets_the_parked_file_go() {
    // The same name, once with a lock file and once in process only: the
    // in-process waiter is handed the lock, but not the file, which must
    // not stay locked while nobody in this process uses it.
    let dir = tempfile::tempdir().unwrap();
    let name = "cohort-mixed";
    let first = external(name, dir.path()).acquire().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let guard = lockutils::lock(name).acquire().unwrap();
            let seen = try_in_child(dir.path(), "", name);
            drop(guard);
            seen
        });
        await_local_waiter(name);
        drop(first);
        assert_eq!(
            waiter.join().unwrap(),
            "ok",
            "the lock file stayed locked for an in-process holder"
        );
    });
}

#[test]
fn a_waiter_for_another_lock_path_locks_its_own_file() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let name = "cohort-two-paths";
    let first = external(name, a.path()).acquire().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let guard = external(name, b.path()).acquire().unwrap();
            let at = guard.location().and_then(lockutils::Location::into_file);
            let seen = (
                try_in_child(a.path(), "", name),
                try_in_child(b.path(), "", name),
            );
            drop(guard);
            (at, seen)
        });
        await_local_waiter(name);
        drop(first);
        let (at, (in_a, in_b)) = waiter.join().unwrap();
        assert_eq!(at.as_deref(), Some(&*b.path().join(name)));
        assert_eq!(in_a, "ok", "the first lock path's file stayed locked");
        assert_eq!(
            in_b, "wouldblock",
            "the second lock path's file was not locked"
        );
    });
}

#[test]
fn a_timed_waiter_is_handed_the_file_or_gives_up_with_nothing() {
    // Timed waits race the handoff: whichever wins, a waiter either holds
    // the file (and its holder count says so) or returned with nothing,
    // and at the end the file is free.
    let dir = tempfile::tempdir().unwrap();
    let name = "cohort-timed";
    let lock = external(name, dir.path());
    // This thread keeps the entry (and its figures) alive to the end.
    drop(lock.acquire().unwrap());
    let got = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (lock, got) = (&lock, &got);
            s.spawn(move || {
                for i in 0..2_000u64 {
                    let timeout = Duration::from_micros((i * 7 + t * 13) % 40);
                    if let Ok(guard) = lock.clone().timeout(timeout).acquire() {
                        got.fetch_add(1, Ordering::Relaxed);
                        let spin = Instant::now() + Duration::from_micros(10);
                        while Instant::now() < spin {
                            std::hint::spin_loop();
                        }
                        drop(guard);
                    }
                }
            });
        }
    });
    let (handoffs, longest) = cohort_stats(name).unwrap();
    println!(
        "timed waiters: {} acquisitions, {handoffs} handed over, longest batch {longest}",
        got.load(Ordering::Relaxed)
    );
    support::check_handoffs(handoffs, "timed waiters");
    assert!(longest <= lockutils::config::cohort_limit().0);
    assert_eq!(try_in_child(dir.path(), "", name), "ok");
}

/// Runs `f` while three threads keep `name` busy (one always queued, so
/// every release could hand over), once at least 1,000 handoffs went on;
/// returns what `f` returned, and the threads' rounds.
fn while_threads_hand_over<R>(name: &str, dir: &Path, f: impl FnOnce() -> R) -> (R, u64) {
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let lock = external(name, dir);
    drop(lock.acquire().unwrap()); // keeps the entry alive (see above)
    let r = std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let guard = lock.acquire().unwrap();
                    rounds.fetch_add(1, Ordering::Relaxed);
                    drop(guard);
                }
            });
        }
        // Stops the threads however `f` ends: a failed assertion must not
        // leave `scope` joining threads that never stop.
        let _stop = StopOnDrop(&stop);
        let deadline = Instant::now() + PATIENCE;
        while support::cohorting() && cohort_stats(name).map_or(0, |c| c.0) < 1_000 {
            assert!(Instant::now() < deadline, "threads never handed over");
            std::thread::yield_now();
        }
        f()
    });
    let (_, longest) = cohort_stats(name).unwrap();
    assert!(
        longest <= lockutils::config::cohort_limit().0,
        "a batch of {longest} handoffs passed the bound"
    );
    (r, rounds.load(Ordering::Relaxed))
}

#[test]
fn another_process_gets_its_turn_while_threads_keep_handing_over() {
    // A process waiting in the kernel must get the lock: the batch bound
    // releases the file, and the next thread here leaves it to other
    // processes for a turn instead of relocking at once, which under load
    // starved the process for minutes.
    let dir = tempfile::tempdir().unwrap();
    let name = "cohort-bounded";
    let (waited, rounds) = while_threads_hand_over(name, dir.path(), || {
        // The other process must wait in the kernel: its first try finds
        // the lock busy (a try can land in the turn left to pollers, when
        // the file is free; then a new process asks again).
        let deadline = Instant::now() + PATIENCE;
        let mut other = loop {
            let mut other = lock_child("support::child_wait", dir.path(), "", name).spawn();
            match other.next_report().as_str() {
                "busy" => break other,
                "free" => {
                    other.expect("acquired");
                    other.send("release");
                    other.expect("released");
                    other.finish();
                }
                got => other.fail(&format!("reported {got:?}, expected busy or free")),
            }
            assert!(Instant::now() < deadline, "the lock was never busy");
        };
        let asked = Instant::now();
        // `expect` fails after the patience period: a starved process.
        other.expect("acquired");
        let waited = asked.elapsed();
        other.send("release");
        other.expect("released");
        other.finish();
        waited
    });
    let (handoffs, longest) = cohort_stats(name).unwrap();
    println!(
        "the other process waited {waited:?} while {handoffs} handoffs went on \
         (longest batch {longest}, {rounds} rounds)"
    );
}

#[test]
fn a_process_that_polls_finds_the_file_free_between_batches() {
    // fasteners (so oslo.concurrency) and py-filelock wait by polling with
    // non-blocking tries. After each batch
    // the file is left free for an eighth of the batch's length, so about
    // one try in nine succeeds (here: within 1 to 3 tries; relocking at
    // once needed 2 to 27, and oslo's processes, whose tries are 10 to
    // 100 ms apart, once never ran beside busy Rust threads). This checks
    // that a polling process is not starved; how often it gets in is
    // timing, which no test asserts.
    const TRIES: u32 = 200; // (8/9)^200 < 1e-10
    let dir = tempfile::tempdir().unwrap();
    let name = "cohort-polled";
    let (tries, _) = while_threads_hand_over(name, dir.path(), || {
        (1..=TRIES).find(|_| try_in_child(dir.path(), "", name) == "ok")
    });
    if support::cohorting() {
        let tries =
            tries.unwrap_or_else(|| panic!("{TRIES} tries from another process all failed"));
        println!("another process's try succeeded at try {tries}");
    }
}

/// Sets its flag when dropped, on a panic too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A child counting with 3 threads under `LOCKUTILS_COHORT=setting`:
/// `(handoffs, longest batch, its report)`, the total checked.
fn count_in_child(name: &str, setting: &str, each: u64) -> (u64, u32, String) {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let mut child = support::counter_child_with(
        dir.path(),
        "",
        name,
        &counter,
        3,
        each,
        Duration::ZERO,
        &[("LOCKUTILS_COHORT", setting)],
    );
    child.expect("ready");
    child.send("go");
    child.expect(&format!("done {}", 3 * each));
    let _span = child.next_report();
    let cohort = child.next_report();
    child.finish();
    assert_eq!(support::read_counter(&counter), 3 * each);
    let (handoffs, longest) = support::parse_cohort(&cohort);
    (handoffs, longest, cohort)
}

#[test]
fn cohort_limit_from_the_environment_bounds_the_batch() {
    // `LOCKUTILS_COHORT=4` is read at start-up.
    let (handoffs, longest, report) = count_in_child("cohort-env", "4", 2_000);
    support::check_handoffs(handoffs, &report);
    assert!(longest <= 4, "the bound of 4 was passed: {report}");
}

#[test]
fn cohorting_off_hands_nothing_over() {
    let (handoffs, longest, report) = count_in_child("cohort-off", "off", 1_000);
    assert_eq!((handoffs, longest), (0, 0), "{report}");
}
