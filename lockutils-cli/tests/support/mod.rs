//! Shared pieces of the CLI tests: the built `lockutils` binary, processes
//! holding locks, `status --json`, and a Python with oslo.concurrency.
//!
//! Processes synchronise through pipes (a holder prints a line once it
//! holds the lock) or by polling a condition the kernel reports (a waiter
//! shows in /proc/locks), never by sleeping for a guessed time.
#![allow(dead_code)] // each test binary uses a different part

pub mod python;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Exit codes, as `lockutils --help` documents them.
pub mod code {
    pub const USAGE: i32 = 64;
    pub const LOCK_PATH: i32 = 73;
    pub const BUSY: i32 = 75;
    pub const TIMEOUT: i32 = 79;
    pub const NOT_FOUND: i32 = 127;
}

/// How long any wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The `lockutils` binary, with no lock configuration from our environment.
pub fn lockutils() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockutils"));
    for var in ["LOCKUTILS_LOCK_PATH", "OSLO_LOCK_PATH", "LOCKUTILS_BACKEND"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `lockutils args...` to the end.
pub fn output(args: &[&str]) -> Output {
    lockutils()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lockutils")
}

/// The exit code, failing the test on death by signal.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("lockutils died: {:?}", out.status))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process that holds a lock until released: `lockutils run NAME ... --
/// sh -c 'echo held; read x'`, or any command that prints one line once it
/// holds the lock and releases it when its stdin closes.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    /// `lockutils run NAME --lock-path DIR EXTRA... -- sh -c 'echo held; read x'`,
    /// returned once it holds the lock.
    pub fn lockutils(name: &str, dir: &Path, extra: &[&str]) -> Holder {
        let mut cmd = lockutils();
        cmd.args(["run", name, "--lock-path"]).arg(dir).args(extra);
        cmd.args(["--", "sh", "-c", "echo held; read x || true"]);
        Holder::start(cmd, "held")
    }

    /// Starts `cmd` and waits for it to print `ready` (one line).
    pub fn start(mut cmd: Command, ready: &str) -> Holder {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read holder's line");
        if line.trim_end() != ready {
            let _ = child.kill();
            let status = child.wait();
            panic!("{cmd:?} printed {line:?} instead of {ready:?} ({status:?})");
        }
        Holder {
            child,
            stdin,
            stdout,
        }
    }

    /// The holding process's PID.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Lets go (closes its stdin) and checks it exits with 0.
    pub fn release(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for holder");
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        assert!(
            status.success(),
            "holder exited with {status:?}; output {rest:?}"
        );
    }
}

impl Holder {
    /// Waits for it to exit by itself; returns its status and the rest of
    /// its output.
    pub fn finish(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("wait for child");
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        drop(self.stdin.take());
        (status, rest)
    }
}

impl Holder {
    /// Kills the holding process itself (SIGKILL) and reaps it. Processes
    /// it started (the command of `lockutils run`) live on, and still read
    /// the stdin this holder writes to.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        let status = self.child.wait().expect("reap");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    /// Closes its stdin and reads its stdout to the end: returns once
    /// every process writing there (the command too) has exited.
    pub fn let_go_and_drain(&mut self) -> String {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        rest
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Tells a holder process (through its stdin) without closing it.
pub fn send_line(stdin: &mut ChildStdin, line: &str) {
    writeln!(stdin, "{line}").expect("write to child");
}

/// `lockutils status --json --lock-path DIR NAMES...`, parsed.
pub fn status_json(dir: &Path, names: &[&str]) -> serde_json::Value {
    let mut cmd = lockutils();
    cmd.args(["status", "--json", "--lock-path"])
        .arg(dir)
        .args(names);
    let out = cmd.output().expect("run lockutils status");
    assert_eq!(code(&out), 0, "status failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json printed invalid JSON ({e}): {}", stdout(&out)))
}

/// The one lock `name` from `status --json`.
pub fn lock_status(dir: &Path, name: &str) -> serde_json::Value {
    let all = status_json(dir, &[name]);
    let locks = all["locks"].as_array().expect("locks array");
    assert_eq!(locks.len(), 1, "{all}");
    locks[0].clone()
}

/// Polls `cond` until true; fails the test after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until at least `n` lock requests wait for `name` (per /proc/locks).
pub fn wait_for_waiters(dir: &Path, name: &str, n: u64) {
    wait_until(&format!("{n} process(es) wait for {name}"), || {
        lock_status(dir, name)["waiters"].as_u64().unwrap_or(0) >= n
    });
}

/// Sends `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill(2).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}
