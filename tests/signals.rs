//! The application's signals are its own. Whatever it does with any
//! real-time signal (its own handler with `SA_RESTART`, `SIG_IGN`,
//! `SIG_DFL`, or a signalfd that reads it), a timed wait for a lock file
//! held by another process ends at its deadline, a dropped async
//! acquisition returns and gives everything back, the process is not
//! killed, and every signal the application sends itself reaches it.
//!
//! Each case runs in a process forked from a child test process (so that
//! it has one thread, as an application that sets its signal mask at
//! start-up does, and libtest's threads cannot take its signals).
#![cfg(target_os = "linux")]

mod support;

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{child, hold, param, release, report, running_as};

const NAME: &str = "signals";

/// Signals each case sends itself per real-time signal.
const SENT: usize = 5;

#[test]
fn the_applications_signals_are_its_own() {
    let dir = tempfile::tempdir().unwrap();
    // Held for the whole test: every wait below must end without it.
    let holder = hold(dir.path(), "", NAME);
    for how in ["restart-handler", "ignore", "default", "signalfd"] {
        let mut c = child("child_signals")
            .param("DIR", dir.path())
            .param("HOW", how)
            .spawn();
        let got = c.next_report();
        c.finish();
        assert_eq!(got, format!("{how}: ok"));
    }
    release(holder).finish();
}

#[test]
fn child_signals() {
    if !running_as("child_signals") {
        return;
    }
    let (dir, how) = (param("DIR"), param("HOW"));
    let (r, w) = pipe();
    // SAFETY: the forked process runs `case` on its one thread; no lock of
    // the allocator or of lockutils is held by another thread here.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(r);
        let said = case(&dir, &how);
        let _ = std::io::Write::write_all(&mut &w, said.as_bytes());
        drop(w);
        // SAFETY: ends the forked process without libtest's teardown.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let mut said = String::new();
    std::io::Read::read_to_string(&mut &r, &mut said).unwrap();
    let mut status = 0;
    // SAFETY: waits for the process forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFSIGNALED(status) {
        said = format!("killed by signal {}", libc::WTERMSIG(status));
    }
    report(format!("{how}: {said}"));
}

/// Handler calls, by signal number.
static CAUGHT: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

extern "C" fn count(sig: libc::c_int) {
    CAUGHT[sig as usize].fetch_add(1, Ordering::SeqCst);
}

/// Sets `how` as the disposition of `sig` (or blocks it, for a signalfd).
fn set(how: &str, sig: i32) {
    // SAFETY: a zeroed sigaction is valid; the handler only does an
    // atomic add (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        libc::sigemptyset(&mut sa.sa_mask);
        match how {
            "restart-handler" => {
                sa.sa_sigaction = count as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
            }
            "ignore" => sa.sa_sigaction = libc::SIG_IGN,
            "default" | "signalfd" => sa.sa_sigaction = libc::SIG_DFL,
            other => panic!("{other}"),
        }
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// Blocks `sigs` in this thread (threads started later inherit it).
fn block(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: a zeroed sigset is valid to empty and fill.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
        set
    }
}

/// The signals a signalfd for `set` has queued, read without waiting.
fn read_signalfd(fd: &std::fs::File) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        // SAFETY: a zeroed signalfd_siginfo is valid to read into.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            return got;
        }
        got.push(info.ssi_signo);
    }
}

/// One disposition against every real-time signal; returns `ok` or what
/// went wrong.
fn case(dir: &str, how: &str) -> String {
    let lock = || lockutils::lock(NAME).external().lock_path(dir);
    // First a timed wait, so that anything chosen on first use is chosen
    // before the application changes its signals.
    if !matches!(
        lock().timeout(Duration::from_millis(10)).acquire(),
        Err(e) if e.is_busy()
    ) {
        return "the lock was not busy".into();
    }
    let sigs: Vec<i32> = (libc::SIGRTMIN()..=libc::SIGRTMAX()).collect();
    let mut problems = Vec::new();
    let signalfd = (how == "signalfd").then(|| {
        let set = block(&sigs);
        // SAFETY: a new signalfd for `set`, owned by the returned file.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        assert!(fd >= 0, "signalfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is new and owned by nobody else.
        unsafe { std::fs::File::from_raw_fd(fd) }
    });
    for &sig in &sigs {
        set(how, sig);
    }
    for &sig in &sigs {
        // A default disposition ends the process: nobody sends those.
        let send = how != "default";
        let sender = send.then(|| {
            std::thread::spawn(move || {
                for _ in 0..SENT {
                    // SAFETY: kill(2) on this very process.
                    unsafe { libc::kill(libc::getpid(), sig) };
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        });
        let started = Instant::now();
        let timed = lock().timeout(Duration::from_millis(20)).acquire();
        let took = started.elapsed();
        if !matches!(&timed, Err(lockutils::LockError::Timeout { .. })) {
            problems.push(format!("signal {sig}: timed wait gave {timed:?}"));
        }
        if took > Duration::from_secs(10) {
            problems.push(format!("signal {sig}: a 20 ms timeout took {took:?}"));
        }
        if let Some(s) = sender {
            s.join().unwrap();
        }
        // An async acquisition waiting for the file, then dropped.
        let waiting = lock();
        let mut fut = Box::pin(waiting.acquire_async());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if fut.as_mut().poll(&mut cx).is_ready() {
            problems.push(format!("signal {sig}: got a lock another process holds"));
        }
        let started = Instant::now();
        drop(fut);
        if started.elapsed() > Duration::from_secs(10) {
            problems.push(format!(
                "signal {sig}: dropping a wait took {:?}",
                started.elapsed()
            ));
        }
        if lockutils::lock(NAME).blocking(false).acquire().is_err() {
            problems.push(format!("signal {sig}: the in-process lock was kept"));
        }
        // Every signal sent reached the application.
        let got = match how {
            "restart-handler" => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while CAUGHT[sig as usize].load(Ordering::SeqCst) < SENT
                    && Instant::now() < deadline
                {
                    std::thread::yield_now();
                }
                CAUGHT[sig as usize].load(Ordering::SeqCst)
            }
            "signalfd" => {
                let read = read_signalfd(signalfd.as_ref().unwrap());
                read.iter().filter(|&&s| s == sig as u32).count()
            }
            _ => SENT,
        };
        if send && got != SENT {
            problems.push(format!(
                "signal {sig}: {SENT} sent, {got} reached the application"
            ));
        }
    }
    if problems.is_empty() {
        "ok".into()
    } else {
        problems.join("; ")
    }
}

fn pipe() -> (std::fs::File, std::fs::File) {
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
