//! Running the command: spawn, forward signals, wait, translate the status.

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::process::Command;

use crate::exit;
use crate::signals;

/// Runs `argv` with `env` added, forwarding signals to it; returns its exit
/// code as a shell would (128 + N for death by signal N).
pub fn run(argv: &[OsString], env: &[(&str, &OsStr)]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        return exit::fail(exit::USAGE, "no command given after `--`");
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
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
