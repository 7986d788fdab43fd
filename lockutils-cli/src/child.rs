//! Running the command: spawn, forward signals, wait, translate the status;
//! and end it when the lock it runs under is lost.
//!
//! Invariant: the command's PID is signalled only while it is unreaped (a
//! thread waits for its exit with `WNOWAIT`, and only this thread reaps
//! it), so a SIGTERM or SIGKILL for a lost lock never reaches a process
//! that took over the PID.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io::{self, ErrorKind};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::exit;
use crate::signals;

/// Watching the lock a command runs under.
pub struct Watch {
    /// Completes when the lock is lost.
    pub lost: lockutils::Lost,
    /// From SIGTERM to SIGKILL.
    pub kill_after: Duration,
    /// What was lost, for the message: `lock "x"`, `leadership of "x"`.
    pub what: String,
}

/// Runs `argv` with `env` added, forwarding signals to it; returns its exit
/// code as a shell would (128 + N for death by signal N).
///
/// `inherit`: a descriptor (opened close-on-exec) that the command keeps
/// open, under the same number. Only the child's copy loses `FD_CLOEXEC`,
/// so no other command this process might start gets it.
///
/// `watch`: when its lock is lost, the command gets SIGTERM, then SIGKILL
/// after `kill_after`, and the exit code is [`exit::LOST`].
pub fn run(
    argv: &[OsString],
    env: &[(&str, &OsStr)],
    inherit: Option<RawFd>,
    watch: Option<Watch>,
) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        return exit::fail(exit::USAGE, "no command given after `--`");
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(fd) = inherit {
        // SAFETY: the closure runs in the forked child before exec and
        // only calls fcntl(2), which is async-signal-safe; it touches no
        // memory shared with the parent.
        unsafe {
            cmd.pre_exec(move || keep_open_across_exec(fd));
        }
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let code = match e.kind() {
                ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
            return exit::fail(
                code,
                format!("cannot run {}: {e}", program.to_string_lossy()),
            );
        }
    };
    // A PID fits in pid_t; std hands it out as u32.
    let pid = child.id() as i32;
    signals::forward_to(pid);
    let lost = match watch {
        Some(w) => supervise(pid, w),
        None => false,
    };
    // std's wait retries on EINTR, so our handler cannot cut it short.
    let status = child.wait();
    signals::stop_forwarding();
    match status {
        Ok(_) if lost => exit::LOST,
        Ok(status) => exit::from_status(status),
        Err(e) => exit::fail(exit::INTERNAL, format!("cannot wait for the command: {e}")),
    }
}

/// What ends a supervised command's run.
enum Event {
    Exited,
    Lost,
}

/// Waits until `pid` (our unreaped child) has exited, ending it if the
/// lock is lost first; returns whether it was. The child is left for the
/// caller to reap.
fn supervise(pid: i32, watch: Watch) -> bool {
    let (tx, rx) = mpsc::channel();
    let exited = tx.clone();
    let waiting = std::thread::Builder::new()
        .name("lockutils-child".into())
        .spawn(move || {
            await_exit(pid);
            let _ = exited.send(Event::Exited);
        });
    if waiting.is_err() {
        // No thread: wait without watching (the caller's wait reaps it).
        return false;
    }
    let lost = watch.lost;
    // Never joined: it may wait for a loss that never comes.
    let _ = std::thread::Builder::new()
        .name("lockutils-lost".into())
        .spawn(move || {
            block_on(lost);
            let _ = tx.send(Event::Lost);
        });
    match rx.recv() {
        Ok(Event::Lost) => {}
        Ok(Event::Exited) | Err(_) => return false,
    }
    eprintln!(
        "lockutils: {} lost on the lock server while the command ran; sending it SIGTERM \
         (SIGKILL in {:?})",
        watch.what, watch.kill_after
    );
    // SAFETY: plain kill(2) of our child, which is not reaped yet (see
    // the module docs).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(watch.kill_after) {
        eprintln!("lockutils: the command outlived --kill-after; sending it SIGKILL");
        // SAFETY: as above: still unreaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = rx.recv();
    }
    true
}

/// Returns once child `pid` has exited, leaving it unreaped (`WNOWAIT`).
fn await_exit(pid: i32) {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) on our own child, writing only into `info`.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            return;
        }
    }
}

/// Runs a future to completion on this thread, parking between polls.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Clears `FD_CLOEXEC` on `fd` (in the child, between fork and exec).
fn keep_open_across_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on a descriptor number: no memory involved; an
    // invalid number is an error, not undefined behaviour.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags == -1 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
