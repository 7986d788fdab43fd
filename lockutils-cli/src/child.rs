//! Running the command: spawn, forward signals, wait, translate the status.

use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::exit;
use crate::signals;

/// Runs `argv` with `env` added, forwarding signals to it; returns its exit
/// code as a shell would (128 + N for death by signal N).
///
/// `inherit`: a descriptor (opened close-on-exec) that the command keeps
/// open, under the same number. Only the child's copy loses `FD_CLOEXEC`,
/// so no other command this process might start gets it.
pub fn run(argv: &[OsString], env: &[(&str, &OsStr)], inherit: Option<RawFd>) -> i32 {
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
    signals::forward_to(child.id() as i32);
    // std's wait retries on EINTR, so our handler cannot cut it short.
    let status = child.wait();
    signals::stop_forwarding();
    match status {
        Ok(status) => exit::from_status(status),
        Err(e) => exit::fail(exit::INTERNAL, format!("cannot wait for the command: {e}")),
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
