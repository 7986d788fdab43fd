//! `lockutils run`: take the lock, run the command, release.

use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lockutils::LockError;

use crate::child;
use crate::cli::RunArgs;
use crate::exit;
use crate::holders;
use crate::signals;

/// How often the wait checks for signals and redraws its line.
const TICK: Duration = Duration::from_millis(100);
/// Waits shorter than this show nothing.
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// How often the holders are looked up again while waiting.
const REFRESH_HOLDERS: Duration = Duration::from_secs(2);

/// Runs the subcommand; returns the exit code.
pub fn run(args: RunArgs) -> i32 {
    let named = match args.place.named(&args.name) {
        Ok(named) => named,
        Err(e) => return exit::lock_error(&e),
    };
    signals::install();
    let mut held = match wait_for_lock(&args, &named.full, named.file) {
        Ok(held) => held,
        Err(code) => return code,
    };
    let token = held
        .got
        .fencing_token
        .map(|t| OsString::from(t.to_string()));
    let mut env = vec![(LOCK_NAME_ENV, OsStr::new(&named.full))];
    if let Some(t) = &token {
        env.push((FENCING_TOKEN_ENV, t.as_os_str()));
    }
    let watch = held.got.lost.take().map(|lost| child::Watch {
        lost,
        kill_after: args.on_loss.kill_after,
        what: format!("lock {:?}", named.full),
    });
    let code = child::run(&args.command, &env, held.got.inherit, watch);
    if code != exit::LOST
        && let Some(least) = args.at_least
    {
        hold_until(held.taken + least, &named.full);
    }
    held.release();
    code
}

/// The variable that names the lock to the command.
pub const LOCK_NAME_ENV: &str = "LOCKUTILS_LOCK_NAME";
/// The variable that gives the command the lock's fencing token.
pub const FENCING_TOKEN_ENV: &str = "LOCKUTILS_FENCING_TOKEN";

/// `--at-least`: keeps the lock until `until`, or until a signal says
/// to stop (the lock then goes at once, as at any exit).
fn hold_until(until: Instant, full: &str) {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if let Some(sig) = signals::take_pending() {
            eprintln!(
                "lockutils: {} during --at-least; releasing lock {full:?} early",
                signals::name(sig)
            );
            return;
        }
        thread::sleep(left.min(TICK));
    }
}

/// The lock, held by a thread of ours: a `LockGuard` stays on the thread
/// that took it.
struct Held {
    release: mpsc::Sender<()>,
    thread: JoinHandle<()>,
    got: Got,
    /// When the lock was taken (as this thread learnt it).
    taken: Instant,
}

/// What the thread taking the lock reports once it holds it.
struct Got {
    /// The locked descriptor for the command to inherit (unless `--close`).
    inherit: Option<RawFd>,
    fencing_token: Option<u64>,
    /// Completes when a lock server lets the lock go.
    lost: Option<lockutils::Lost>,
}

impl Held {
    fn release(self) {
        drop(self.release);
        let _ = self.thread.join();
    }
}

/// Takes the lock on a helper thread while this thread watches for
/// signals and shows the wait. On failure, prints why and returns the exit
/// code.
fn wait_for_lock(args: &RunArgs, full: &str, file: String) -> Result<Held, i32> {
    let (result_rx, release_tx, thread) = start_taking(args)
        .map_err(|e| exit::fail(exit::INTERNAL, format!("cannot start a thread: {e}")))?;
    // A lock file, unless a lock server holds the lock.
    let on_server = args.place.lock_path.is_none()
        && (args.backend.is_some()
            || std::env::var(lockutils::config::BACKEND_ENV)
                .is_ok_and(|u| !u.is_empty() && !u.starts_with("file:")));
    let path = args
        .place
        .lock_path
        .clone()
        .or_else(lockutils::config::lock_path)
        .filter(|_| !on_server)
        .map(|d| d.join(file));
    let show = !args.quiet && std::io::stderr().is_terminal();
    let mut display = Display::new(show, full, path, args.timeout);
    let started = Instant::now();
    let got = loop {
        match result_rx.recv_timeout(TICK) {
            Ok(Ok(got)) => {
                display.clear();
                break got;
            }
            Ok(Err(e)) => {
                display.clear();
                let _ = thread.join();
                return Err(not_taken(args, full, display.path.as_deref(), &e));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                display.clear();
                return Err(exit::fail(
                    exit::INTERNAL,
                    "the thread taking the lock failed",
                ));
            }
        }
        if let Some(sig) = signals::take_pending() {
            return Err(interrupted(args, full, sig, &mut display));
        }
        display.tick(started.elapsed());
    };
    let held = Held {
        release: release_tx,
        thread,
        got,
        taken: Instant::now(),
    };
    // A signal between taking the lock and starting the command also means
    // "don't run it".
    if let Some(sig) = signals::take_pending() {
        held.release();
        return Err(interrupted(args, full, sig, &mut display));
    }
    Ok(held)
}

/// What the thread taking the lock reports.
type Taken = Result<Got, LockError>;

/// Starts the thread that takes the lock, reports, and holds it until the
/// returned sender is dropped.
fn start_taking(
    args: &RunArgs,
) -> std::io::Result<(mpsc::Receiver<Taken>, mpsc::Sender<()>, JoinHandle<()>)> {
    let (result_tx, result_rx) = mpsc::channel::<Taken>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (name, prefix) = (args.name.clone(), args.place.prefix.clone());
    let lock_path = args.place.lock_path.clone();
    let backend = args.backend.clone();
    let (timeout, nonblock, shared) = (args.timeout, args.nonblock, args.shared);
    let (close, flock) = (args.close, args.flock);
    let thread = thread::Builder::new()
        .name("lockutils-hold".into())
        .spawn(move || {
            signals::block_in_this_thread();
            let mut lock = lockutils::lock(&name).prefix(&prefix).external();
            if let Some(dir) = &lock_path {
                lock = lock.lock_path(dir);
            }
            if let Some(url) = &backend {
                lock = lock.backend(url);
            }
            if shared {
                lock = lock.shared();
            }
            if flock {
                lock = lock.flock();
            }
            if nonblock {
                lock = lock.blocking(false);
            } else if let Some(t) = timeout {
                lock = lock.timeout(t);
            }
            match lock.acquire() {
                Ok(guard) => {
                    // Valid while `guard` lives, which is until the command
                    // has ended (`Held::release`).
                    let fd = guard.lock_file_fd().filter(|_| !close);
                    let got = Got {
                        inherit: fd.map(|fd| fd.as_raw_fd()),
                        fencing_token: guard.fencing_token(),
                        lost: Some(guard.lost()),
                    };
                    let _ = result_tx.send(Ok(got));
                    // Hold until the sender is dropped (or the process ends).
                    let _ = release_rx.recv();
                    drop(guard);
                }
                Err(e) => {
                    let _ = result_tx.send(Err(e));
                }
            }
        })?;
    Ok((result_rx, release_tx, thread))
}

/// Says why the lock was not taken (in the command line's terms, naming
/// the holder when busy); returns the exit code.
fn not_taken(args: &RunArgs, full: &str, path: Option<&Path>, e: &LockError) -> i32 {
    let code = exit::code_for(e);
    let held_by = || {
        path.and_then(holders::of_path)
            .map(|u| format!(", held by {}", holders::describe(&u)))
            .unwrap_or_default()
    };
    let msg = match e {
        // The library's message speaks to programmers.
        LockError::LockPathNotSet { .. } => exit::NO_LOCK_PATH.to_owned(),
        _ if args.quiet && e.is_busy() => return code,
        LockError::WouldBlock { .. } => format!("lock {full:?} is busy{}", held_by()),
        LockError::Timeout { timeout, .. } => {
            format!(
                "timed out after {timeout:?} waiting for lock {full:?}{}",
                held_by()
            )
        }
        e => e.to_string(),
    };
    exit::fail(code, msg)
}

/// A signal ended the wait. The helper thread may still be waiting in the
/// kernel; exiting ends it, and the lock is not taken (or, if it was taken
/// this very moment, released by the kernel as we exit).
fn interrupted(args: &RunArgs, full: &str, sig: i32, display: &mut Display) -> i32 {
    display.clear();
    if !args.quiet {
        eprintln!(
            "lockutils: {} while waiting for lock {full:?}; lock not taken, command not run",
            signals::name(sig)
        );
    }
    exit::SIGNAL_BASE + sig
}

/// The waiting display on a terminal: who holds the lock (a line, again
/// when it changes), and a live "waited" line below it.
struct Display {
    enabled: bool,
    name: String,
    path: Option<PathBuf>,
    timeout: Option<Duration>,
    holders: Option<String>,
    looked_up: Option<Instant>,
    live: bool,
}

impl Display {
    fn new(enabled: bool, name: &str, path: Option<PathBuf>, timeout: Option<Duration>) -> Self {
        Display {
            enabled,
            name: name.to_owned(),
            path,
            timeout,
            holders: None,
            looked_up: None,
            live: false,
        }
    }

    fn tick(&mut self, waited: Duration) {
        if !self.enabled || waited < SHOW_AFTER {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self
            .looked_up
            .is_none_or(|t| t.elapsed() >= REFRESH_HOLDERS)
        {
            self.looked_up = Some(Instant::now());
            let holders = self.describe_holders();
            if self.holders.as_ref() != Some(&holders) {
                let _ = writeln!(err, "\r\x1b[Klockutils: {holders}");
                self.holders = Some(holders);
            }
        }
        let limit = self
            .timeout
            .map(|t| format!(" of {:.1}s", t.as_secs_f64()))
            .unwrap_or_default();
        let _ = write!(
            err,
            "\r\x1b[K  waiting {:.1}s{limit} (Ctrl-C to give up)",
            waited.as_secs_f64()
        );
        let _ = err.flush();
        self.live = true;
    }

    fn describe_holders(&self) -> String {
        let name = &self.name;
        let Some(path) = &self.path else {
            return format!("waiting for lock {name:?}");
        };
        match holders::of_path(path) {
            Some(found) => format!(
                "waiting for lock {name:?} ({}), held by {}",
                path.display(),
                holders::describe(&found)
            ),
            _ => format!("waiting for lock {name:?} ({})", path.display()),
        }
    }

    /// Erases the live line.
    fn clear(&mut self) {
        if self.live {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.live = false;
        }
    }
}
