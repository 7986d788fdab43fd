//! Shared machinery for the multi-process tests.
//!
//! A test that needs another process runs its own test binary again with
//! `--exact <child test> --nocapture --test-threads=1` and
//! `LOCKUTILS_TEST_CHILD=<child test>` in the environment. Child tests
//! return at once unless that variable names them, so they are harmless in
//! a normal run. Parameters travel in `LOCKUTILS_TEST_*` variables.
//!
//! Processes talk over pipes, never through sleeps: a child reports with
//! [`report`] (a line carrying [`MARK`], which the parent picks out of
//! libtest's own output) and waits for the parent's orders with [`order`];
//! the parent reads reports with [`Child::expect`] and gives orders with
//! [`Child::send`].
//!
//! The generic children every test file can use are defined here as tests
//! (`support::child_hold`, `support::child_try`, `support::child_wait`,
//! `support::child_counter`). The first three take an optional `MODE`
//! (`shared` or `exclusive`) and `PERMITS` (a semaphore) besides the lock's
//! `NAME`, `PREFIX` and `DIR`; `child_hold` also an optional `COUNT`.
#![allow(dead_code)] // every test binary uses a different part

pub mod capture;
#[cfg(unix)]
pub mod forked;
pub mod planted;
pub mod pyenv;
pub mod python;
pub mod shm;

use std::ffi::OsStr;
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockutils::LockError;

/// Names the child test a process is running as.
pub const CHILD_ENV: &str = "LOCKUTILS_TEST_CHILD";

/// Starts every line a child reports to its parent.
pub const MARK: &str = "@@lockutils:";

/// How long a parent waits for any one report before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Whether this process was started to run the child test `name`.
pub fn running_as(name: &str) -> bool {
    std::env::var_os(CHILD_ENV).is_some_and(|v| v == OsStr::new(name))
}

/// A parameter passed to a child (`LOCKUTILS_TEST_<KEY>`).
pub fn param(key: &str) -> String {
    let var = format!("LOCKUTILS_TEST_{key}");
    std::env::var(&var).unwrap_or_else(|_| panic!("child started without ${var}"))
}

/// A parameter parsed from its text.
pub fn param_as<T: std::str::FromStr>(key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let v = param(key);
    v.parse()
        .unwrap_or_else(|e| panic!("bad LOCKUTILS_TEST_{key}={v:?}: {e:?}"))
}

/// A parameter the parent may leave out.
pub fn param_opt(key: &str) -> Option<String> {
    std::env::var(format!("LOCKUTILS_TEST_{key}")).ok()
}

/// An optional parameter, parsed from its text.
pub fn param_opt_as<T: std::str::FromStr>(key: &str) -> Option<T>
where
    T::Err: std::fmt::Debug,
{
    param_opt(key).map(|_| param_as(key))
}

/// In a child: tells the parent something (one line).
pub fn report(msg: impl Display) {
    let mut out = std::io::stdout().lock();
    // A leading newline: libtest may have left "test x ... " on the line.
    writeln!(out, "\n{MARK}{msg}").expect("report to parent");
    out.flush().expect("flush report");
}

/// In a child: waits for the parent's next order (one line on stdin).
/// An empty string means the parent closed the pipe.
pub fn order() -> String {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("read order from parent");
    line.trim_end().to_owned()
}

/// In a child: waits for the parent to send exactly `want`.
pub fn await_order(want: &str) {
    let got = order();
    assert_eq!(got, want, "unexpected order from parent");
}

/// In a child: reports `ready` and waits for the parent's `go` (see
/// [`ready_set_go`]).
pub fn await_go() {
    report("ready");
    await_order("go");
}

/// Short name for an acquisition result, as children report it.
pub fn outcome<T>(r: &Result<T, LockError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(LockError::WouldBlock { .. }) => "wouldblock".to_owned(),
        Err(LockError::Timeout { .. }) => "timeout".to_owned(),
        Err(e) => format!("error {e}"),
    }
}

/// A test binary re-run as a child, or any other process under test.
pub struct Child {
    what: String,
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    reports: Receiver<String>,
    /// Everything else the process printed, for failure messages.
    chatter: Arc<Mutex<String>>,
}

/// Builds a child running the test `test` of this binary.
pub fn child(test: &str) -> ChildBuilder {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test);
    ChildBuilder {
        cmd,
        what: test.to_owned(),
    }
}

/// A child process about to start.
pub struct ChildBuilder {
    cmd: Command,
    what: String,
}

impl ChildBuilder {
    /// Wraps any command (a Python helper, `sleep`, ...).
    pub fn command(cmd: Command, what: impl Into<String>) -> ChildBuilder {
        ChildBuilder {
            cmd,
            what: what.into(),
        }
    }

    /// Passes `LOCKUTILS_TEST_<key>=value`.
    pub fn param(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(format!("LOCKUTILS_TEST_{key}"), value);
        self
    }

    /// Sets an arbitrary environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Starts the process with piped stdin, stdout and stderr.
    pub fn spawn(mut self) -> Child {
        let mut process = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.what));
        let chatter = Arc::new(Mutex::new(String::new()));
        let (tx, reports) = mpsc::channel();
        let stdout = process.stdout.take().expect("piped stdout");
        let log = chatter.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match line.find(MARK) {
                    Some(i) => {
                        if tx.send(line[i + MARK.len()..].to_owned()).is_err() {
                            break;
                        }
                    }
                    None => push_line(&log, &line),
                }
            }
        });
        let stderr = process.stderr.take().expect("piped stderr");
        let log = chatter.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut buf);
            push_line(&log, &buf);
        });
        let stdin = process.stdin.take();
        Child {
            what: self.what,
            process,
            stdin,
            reports,
            chatter,
        }
    }
}

fn push_line(log: &Mutex<String>, line: &str) {
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    log.push_str(line);
    log.push('\n');
}

impl Child {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The next report, failing the test if none comes in time.
    pub fn next_report(&mut self) -> String {
        match self.reports.recv_timeout(PATIENCE) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => self.fail("no report within the patience period"),
            Err(RecvTimeoutError::Disconnected) => self.fail("exited without the expected report"),
        }
    }

    /// Waits for the next report and checks it is `want`.
    pub fn expect(&mut self, want: &str) {
        let got = self.next_report();
        if got != want {
            self.fail(&format!("reported {got:?}, expected {want:?}"));
        }
    }

    /// Sends an order (one line).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            self.fail(&format!("cannot send {line:?}: {e}"));
        }
    }

    /// Waits for the process to exit and checks it succeeded.
    pub fn finish(mut self) {
        let status = self.wait();
        if !status.success() {
            self.fail(&format!("exited with {status}"));
        }
    }

    /// Waits (boundedly) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.process.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(None) => self.fail("did not exit within the patience period"),
                Err(e) => self.fail(&format!("wait failed: {e}")),
            }
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Fails the test, showing what the process printed.
    pub fn fail(&mut self, why: &str) -> ! {
        let _ = self.process.kill();
        let _ = self.process.wait();
        // Give the reader threads a moment to collect the last output.
        std::thread::sleep(Duration::from_millis(50));
        let log = self
            .chatter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        panic!("{}: {why}\n--- its output ---\n{log}--- end ---", self.what);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Never leave a process behind, even when a test fails midway.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

// ---------------------------------------------------------------------------
// Generic children.

/// The external lock a generic child works on, from its parameters.
fn lock_params() -> (String, String, PathBuf) {
    (param("NAME"), param("PREFIX"), PathBuf::from(param("DIR")))
}

/// The lock of a generic child: `prefix[-]name` in `dir`, external, in the
/// optional `MODE` (`shared` or `exclusive`, the default) and, with
/// `PERMITS`, a semaphore of that many permits.
fn child_lock<'a>(name: &'a str, prefix: &'a str, dir: &'a Path) -> lockutils::Lock<'a> {
    let mut lock = lockutils::lock(name)
        .prefix(prefix)
        .external()
        .lock_path(dir);
    match param_opt("MODE").as_deref() {
        None | Some("exclusive") => {}
        Some("shared") => lock = lock.shared(),
        Some(other) => panic!("mode {other:?}"),
    }
    if let Some(permits) = param_opt_as("PERMITS") {
        lock = lock.permits(permits);
    }
    lock
}

/// Starts a generic child on `name` (prefix `prefix`) in `dir`.
pub fn lock_child(test: &str, dir: &Path, prefix: &str, name: &str) -> ChildBuilder {
    child(test)
        .param("DIR", dir)
        .param("PREFIX", prefix)
        .param("NAME", name)
}

/// Child: takes the lock `COUNT` times (default once; a semaphore's
/// permits), reports `locked`, and holds until ordered to `release`; then
/// reports `released` and exits. Before that, `release-one` drops the
/// latest guard and `release-slot I` the `I`th (guards took slots 0, 1, ..
/// in order, each tried from 0 up); both report `released-one`.
#[test]
fn child_hold() {
    if !running_as("support::child_hold") {
        return;
    }
    let (name, prefix, dir) = lock_params();
    let count: usize = param_opt_as("COUNT").unwrap_or(1);
    let lock = child_lock(&name, &prefix, &dir);
    let mut guards: Vec<_> = (0..count)
        .map(|_| lock.acquire().unwrap_or_else(|e| panic!("child_hold: {e}")))
        .collect();
    report("locked");
    loop {
        match order().as_str() {
            "release" => break,
            "release-one" => {
                guards.pop();
                report("released-one");
            }
            order if order.starts_with("release-slot ") => {
                let slot: usize = order["release-slot ".len()..].parse().expect("slot");
                drop(guards.remove(slot));
                report("released-one");
            }
            other => panic!("unexpected order from parent: {other:?}"),
        }
    }
    drop(guards);
    report("released");
}

/// Starts `c` (a [`child_hold`]) and waits until it holds the lock.
pub fn holding(c: ChildBuilder) -> Child {
    let mut c = c.spawn();
    c.expect("locked");
    c
}

/// A process holding `prefix[-]name` in `dir` (it has reported `locked`).
pub fn hold(dir: &Path, prefix: &str, name: &str) -> Child {
    holding(lock_child("support::child_hold", dir, prefix, name))
}

/// Tells a [`hold`] child to release, and waits for it to confirm.
pub fn release(mut holder: Child) -> Child {
    holder.send("release");
    holder.expect("released");
    holder
}

/// Child: one `blocking(false)` attempt; reports [`outcome`] (a kind
/// mismatch as `mismatch`) and exits.
#[test]
fn child_try() {
    if !running_as("support::child_try") {
        return;
    }
    let (name, prefix, dir) = lock_params();
    let r = child_lock(&name, &prefix, &dir).blocking(false).acquire();
    match r {
        Err(LockError::KindMismatch { .. }) => report("mismatch"),
        r => report(outcome(&r)),
    }
}

/// Runs `c` (a [`child_try`]) to its end; returns what it reported.
pub fn tried(c: ChildBuilder) -> String {
    let mut c = c.spawn();
    let r = c.next_report();
    c.finish();
    r
}

/// What a `blocking(false)` attempt from another process gets.
pub fn try_in_child(dir: &Path, prefix: &str, name: &str) -> String {
    tried(lock_child("support::child_try", dir, prefix, name))
}

/// Child: reports `busy` or `free` after a `blocking(false)` attempt (so
/// the parent knows it started), then waits for the lock, reports
/// `acquired`, and holds it until ordered to `release`.
#[test]
fn child_wait() {
    if !running_as("support::child_wait") {
        return;
    }
    let (name, prefix, dir) = lock_params();
    let lock = child_lock(&name, &prefix, &dir);
    match lock.clone().blocking(false).acquire() {
        Ok(g) => {
            drop(g);
            report("free");
        }
        Err(LockError::WouldBlock { .. }) => report("busy"),
        Err(e) => panic!("child_wait: {e}"),
    }
    let guard = lock.acquire().unwrap_or_else(|e| panic!("child_wait: {e}"));
    report("acquired");
    await_order("release");
    drop(guard);
    report("released");
}

/// A [`child_counter`] process (it reports `ready`, then waits for `go`);
/// each thread pauses `pause` between increments, outside the lock.
pub fn counter_child(
    dir: &Path,
    prefix: &str,
    name: &str,
    counter: &Path,
    threads: usize,
    increments: u64,
    pause: Duration,
) -> Child {
    counter_child_with(dir, prefix, name, counter, threads, increments, pause, &[])
}

/// A [`counter_child`] with extra environment variables.
#[allow(clippy::too_many_arguments)]
pub fn counter_child_with(
    dir: &Path,
    prefix: &str,
    name: &str,
    counter: &Path,
    threads: usize,
    increments: u64,
    pause: Duration,
    env: &[(&str, &str)],
) -> Child {
    let mut child = lock_child("support::child_counter", dir, prefix, name)
        .param("COUNTER", counter)
        .param("THREADS", threads.to_string())
        .param("INCREMENTS", increments.to_string())
        .param("PAUSE_US", pause.as_micros().to_string());
    for (k, v) in env {
        child = child.env(k, v);
    }
    child.spawn()
}

/// Whether lock files hand over between threads here: not with classic
/// (per-process) `fcntl` locks, forced by `LOCKUTILS_CLASSIC_LOCKS=1`
/// (`scripts/test.sh` runs the multi-process suites that way too), where a
/// parked lock could not keep another holder of the process out.
pub fn cohorting() -> bool {
    std::env::var_os("LOCKUTILS_CLASSIC_LOCKS").is_none_or(|v| v != "1")
}

/// Checks the handoff count against the mode: some with OFD locks, none
/// with classic locks.
pub fn check_handoffs(handoffs: u64, what: &str) {
    if cohorting() {
        assert!(
            handoffs > 0,
            "{what}: no handoff happened (the test did not test it)"
        );
    } else {
        assert_eq!(handoffs, 0, "{what}: classic locks must not hand over");
    }
}

/// `(handoffs, longest batch)` from a [`child_counter`]'s `cohort` report.
pub fn parse_cohort(report: &str) -> (u64, u32) {
    let parse = || {
        let (h, l) = report.strip_prefix("cohort ")?.split_once(' ')?;
        Some((h.parse().ok()?, l.parse().ok()?))
    };
    parse().unwrap_or_else(|| panic!("not a cohort report: {report:?}"))
}

/// Child: reports `ready`, waits for `go`, then `THREADS` threads each add
/// `INCREMENTS` to the counter file, each increment under the external
/// lock; reports `done <total added>`, then `span <first> <last>`: the
/// lowest and highest counter values this process wrote; then `cohort
/// <handoffs> <longest batch>` (lock cohorting, see `tests/cohort.rs`).
/// With `UNTIL_STOP`, the threads go on past `INCREMENTS` until the parent
/// orders `stop`.
#[test]
fn child_counter() {
    if !running_as("support::child_counter") {
        return;
    }
    let (name, prefix, dir) = lock_params();
    let counter = PathBuf::from(param("COUNTER"));
    let threads: usize = param_as("THREADS");
    let increments: u64 = param_as("INCREMENTS");
    let pause = Duration::from_micros(param_as("PAUSE_US"));
    let until_stop = param_opt("UNTIL_STOP").is_some();
    let stopped = std::sync::atomic::AtomicBool::new(!until_stop);
    let added = AtomicU64::new(0);
    let first = AtomicU64::new(u64::MAX);
    let last = AtomicU64::new(0);
    // Taken once here, so this thread keeps the entry (and its cohort
    // figures) alive after the counting threads are gone.
    drop(
        lockutils::lock(&name)
            .prefix(&prefix)
            .external()
            .lock_path(&dir)
            .acquire()
            .unwrap_or_else(|e| panic!("child_counter: {e}")),
    );
    await_go();
    std::thread::scope(|s| {
        if until_stop {
            s.spawn(|| {
                await_order("stop");
                stopped.store(true, Ordering::Relaxed);
            });
        }
        for _ in 0..threads {
            s.spawn(|| {
                let lock = lockutils::lock(&name)
                    .prefix(&prefix)
                    .external()
                    .lock_path(&dir);
                let mut mine = 0;
                while mine < increments || !stopped.load(Ordering::Relaxed) {
                    mine += 1;
                    let guard = lock
                        .acquire()
                        .unwrap_or_else(|e| panic!("child_counter: {e}"));
                    let n = increment(&counter);
                    drop(guard);
                    first.fetch_min(n, Ordering::Relaxed);
                    last.fetch_max(n, Ordering::Relaxed);
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
                added.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    report(format!("done {}", added.into_inner()));
    report(format!("span {} {}", first.into_inner(), last.into_inner()));
    let full = format!("{prefix}{name}");
    let (handoffs, longest) = lockutils::__private_v0_1::cohort_stats(&full).unwrap_or((0, 0));
    report(format!("cohort {handoffs} {longest}"));
}

// ---------------------------------------------------------------------------
// Groups of children.

/// Waits until each of `children` has reported `ready` ([`await_go`]),
/// then orders them all to `go`. Returns when they were sent off.
pub fn ready_set_go(children: &mut [Child]) -> Instant {
    for c in children.iter_mut() {
        c.expect("ready");
    }
    let started = Instant::now();
    for c in children.iter_mut() {
        c.send("go");
    }
    started
}

/// Waits until each of `children` has reported `done`, then for each to
/// exit successfully. Returns the time from `started` to the last `done`.
pub fn all_done(mut children: Vec<Child>, started: Instant) -> Duration {
    for c in &mut children {
        c.expect("done");
    }
    let took = started.elapsed();
    for c in children {
        c.finish();
    }
    took
}

// ---------------------------------------------------------------------------
// What every lock server's suite does the same way.

/// Starts `c`, a child that reports `locked TOKEN` once it holds its lock
/// on a server: the child and the fencing token.
pub fn holding_with_token(c: ChildBuilder) -> (Child, u64) {
    let mut c = c.spawn();
    let got = c.next_report();
    let token = got
        .strip_prefix("locked ")
        .unwrap_or_else(|| c.fail(&format!("expected `locked TOKEN`, got {got:?}")));
    let token = token
        .parse()
        .unwrap_or_else(|_| panic!("a fencing token, not {token:?}"));
    (c, token)
}

/// The body of a counter child: reports `ready`, waits for `go`, then
/// `THREADS` threads each call `bump` on the `COUNTER` file `INCREMENTS`
/// times; reports `done`.
pub fn bump_in_threads(bump: impl Fn(&Path) + Sync) {
    let counter = std::path::PathBuf::from(param("COUNTER"));
    let (threads, increments): (usize, u64) = (param_as("THREADS"), param_as("INCREMENTS"));
    await_go();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| (0..increments).for_each(|_| bump(&counter)));
        }
    });
    report("done");
}

/// Runs `processes` [`bump_in_threads`] children made by `child`, sets them
/// off together, and asserts that no increment was lost. Returns the
/// increments and how long they took.
pub fn exact_counter(
    child: impl Fn() -> ChildBuilder,
    processes: usize,
    threads: usize,
    increments: u64,
) -> (u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let mut children: Vec<Child> = (0..processes)
        .map(|_| {
            child()
                .param("COUNTER", &counter)
                .param("THREADS", threads.to_string())
                .param("INCREMENTS", increments.to_string())
                .spawn()
        })
        .collect();
    let started = ready_set_go(&mut children);
    let took = all_done(children, started);
    let want = (processes * threads) as u64 * increments;
    assert_eq!(
        read_counter(&counter),
        want,
        "lost increments: holders overlapped"
    );
    (want, took)
}

/// Waits (yielding) until `cond` holds, for conditions only other threads
/// or processes can make true; fails the test after `patience`.
pub fn wait_for(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------------------
// Observing the kernel's lock table.

/// Waits until `/proc/locks` shows at least `n` blocked waiters on the file
/// at `path`: proof that they are asleep in `F_OFD_SETLKW` (or `F_SETLKW`),
/// not merely about to call it. Fails the test after the patience period.
pub fn await_blocked_waiters(path: &Path, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = blocked_waiters(path);
        if found >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/proc/locks never showed {n} waiters on {} (saw {found})",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How many blocked lock requests `/proc/locks` lists for the file at `path`.
pub fn blocked_waiters(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("stat lock file");
    let dev = meta.dev();
    // /proc/locks names a file as "MAJOR:MINOR:INODE", major and minor in hex.
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    // A table longer than a page comes in several reads, between which
    // other tests' locks move the lines: a record (a lock and its waiters'
    // lines, all with one number) may come twice or not at all. Records
    // that repeat one already seen are dropped, and the table is read
    // until two reads agree.
    let count = || {
        let table = std::fs::read_to_string("/proc/locks").expect("read /proc/locks");
        let mut records: Vec<Vec<&str>> = Vec::new();
        let mut number = "";
        for line in table
            .lines()
            .filter(|l| l.split_whitespace().any(|f| f == id))
        {
            let (n, rest) = line.split_once(':').unwrap_or(("", line));
            match records.last_mut() {
                Some(record) if n == number => record.push(rest),
                _ => records.push(vec![rest]),
            }
            number = n;
        }
        let mut seen: Vec<&Vec<&str>> = Vec::new();
        for r in &records {
            if !seen.contains(&r) {
                seen.push(r);
            }
        }
        seen.iter()
            .flat_map(|r| r.iter())
            .filter(|l| l.trim_start().starts_with("->"))
            .count()
    };
    let mut last = count();
    for _ in 0..8 {
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Waits until `/proc/locks` shows no blocked waiter on the file at `path`.
pub fn await_blocked_waiters_gone(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while blocked_waiters(path) > 0 {
        assert!(
            Instant::now() < deadline,
            "waiters on {} never went",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A process stopped with SIGSTOP (and confirmed stopped); dropping this
/// continues it with SIGCONT.
pub struct Stopped(i32);

impl Stopped {
    /// Stops process `pid` and waits until the kernel reports it stopped.
    pub fn new(pid: u32) -> Stopped {
        let pid = pid as i32;
        // SAFETY: kill(2) on a process this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let stopped = Stopped(pid);
        let deadline = Instant::now() + PATIENCE;
        while process_state(pid) != Some('T') {
            assert!(Instant::now() < deadline, "process {pid} never stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, ...).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

// ---------------------------------------------------------------------------
// Small helpers.

/// Adds one to the decimal counter stored in `path` (a missing or empty
/// file counts as 0): read, parse, add, write back, like careless real code.
///
/// The number is written zero-padded over the old one rather than after a
/// truncation: on ext4, closing a file that was truncated and rewritten
/// starts a flush (`auto_da_alloc`), which made every increment wait for
/// the disk and the test 10x slower without testing anything more.
pub fn increment(path: &Path) -> u64 {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open counter");
    let mut text = String::new();
    file.read_to_string(&mut text).expect("read counter");
    let n = parse_counter(&text);
    file.seek(SeekFrom::Start(0)).expect("seek counter");
    file.write_all(format!("{:020}\n", n + 1).as_bytes())
        .expect("write counter");
    n + 1
}

fn parse_counter(text: &str) -> u64 {
    let text = text.trim();
    if text.is_empty() {
        return 0;
    }
    text.parse()
        .unwrap_or_else(|e| panic!("counter {text:?}: {e}"))
}

/// The counter stored in `path`.
pub fn read_counter(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(s) => parse_counter(&s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("read counter {}: {e}", path.display()),
    }
}

/// The number of open descriptors of this process.
pub fn open_fds() -> usize {
    // The directory handle itself is one of them; it is the same every time.
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count()
}

/// Becomes `nobody` if running as root, so permissions apply.
pub fn drop_privileges() {
    // SAFETY: plain libc calls; the child is single-threaded here apart
    // from libtest's idle main thread, and setuid(2) applies to all threads
    // through glibc's set*id broadcast.
    unsafe {
        if libc::geteuid() != 0 {
            return;
        }
        let nobody = 65534;
        let ok = libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(nobody) == 0
            && libc::setuid(nobody) == 0;
        assert!(
            ok && libc::geteuid() == nobody,
            "running as root and cannot switch to uid 65534 ({}); permission checks \
             cannot be tested",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs `f` on a thread and fails the test if it takes longer than
/// `limit` (so a lock file that blocks forever fails instead of hanging).
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("still running after {limit:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("the operation panicked"),
    }
}

/// Runs `fut` on a single-threaded tokio runtime (with timers) on its own
/// thread, and fails the test if it takes longer than `limit`: a wait that
/// blocks the one executor thread fails instead of hanging.
pub fn block_on_within<T: Send + 'static>(
    limit: Duration,
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    within(limit, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut)
    })
}
