//! `lockutils run`: exclusion, exit codes, busy and timeout, signals.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{Holder, code, kill, lockutils, output, stderr, stdout, wait_for_waiters};

/// Two commands under the same lock, started together, never overlap:
/// each logs `start <ns>` and `end <ns>` around a pause.
#[test]
fn serialises_two_concurrent_commands() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        "echo \"start $(date +%s%N)\" >> '{0}'; sleep 0.3; echo \"end $(date +%s%N)\" >> '{0}'",
        log.display()
    );
    let spawn = || {
        lockutils()
            .args(["run", "serial", "--lock-path"])
            .arg(dir.path().join("locks"))
            .args(["--", "sh", "-c", &script])
            .spawn()
            .expect("spawn lockutils run")
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());

    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<(&str, u128)> = text
        .lines()
        .map(|l| {
            let (what, ns) = l.split_once(' ').expect("`what ns` line");
            (what, ns.parse().expect("timestamp"))
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        ["start", "end", "start", "end"],
        "intervals overlap:\n{text}"
    );
    assert!(
        events[2].1 >= events[1].1,
        "second started before first ended:\n{text}"
    );
}

#[test]
fn passes_exit_codes_through() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = output(&["run", "codes", "--lock-path", d, "--", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), 7);
    let out = output(&["run", "codes", "--lock-path", d, "--", "true"]);
    assert_eq!(code(&out), 0);
    // Death by signal N: 128 + N, as shells report it.
    let out = output(&[
        "run",
        "codes",
        "--lock-path",
        d,
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    assert_eq!(code(&out), 128 + libc::SIGTERM);
    let out = output(&[
        "run",
        "codes",
        "--lock-path",
        d,
        "--",
        "no-such-command-lockutils",
    ]);
    assert_eq!(code(&out), support::code::NOT_FOUND, "{}", stderr(&out));
}

#[test]
fn nonblock_on_a_held_lock_exits_busy_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::lockutils("busy", dir.path(), &[]);
    let marker = dir.path().join("ran");
    let d = dir.path().to_str().unwrap();
    let m = marker.to_str().unwrap();
    let started = Instant::now();
    let out = output(&[
        "run",
        "busy",
        "--lock-path",
        d,
        "--nonblock",
        "--",
        "touch",
        m,
    ]);
    let took = started.elapsed();
    assert_eq!(code(&out), support::code::BUSY, "{}", stderr(&out));
    assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "--nonblock took {took:?}");
    assert!(!marker.exists(), "the command ran without the lock");

    // --quiet: the same code, nothing printed.
    let out = output(&[
        "run",
        "busy",
        "--lock-path",
        d,
        "-n",
        "-q",
        "--",
        "touch",
        m,
    ]);
    assert_eq!(code(&out), support::code::BUSY);
    assert_eq!(stderr(&out), "");

    holder.release();
    let out = output(&[
        "run",
        "busy",
        "--lock-path",
        d,
        "--nonblock",
        "--",
        "touch",
        m,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(marker.exists());
}

#[test]
fn timeout_exits_with_the_timeout_code_after_about_that_long() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::lockutils("slow", dir.path(), &[]);
    let d = dir.path().to_str().unwrap();
    let started = Instant::now();
    let out = output(&[
        "run",
        "slow",
        "--lock-path",
        d,
        "--timeout",
        "200ms",
        "--",
        "true",
    ]);
    let took = started.elapsed();
    assert_eq!(code(&out), support::code::TIMEOUT, "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert!(took >= Duration::from_millis(200), "gave up after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    holder.release();
}

#[test]
fn shared_holders_run_together_and_exclude_exclusive_ones() {
    let dir = tempfile::tempdir().unwrap();
    let reader = Holder::lockutils("rw", dir.path(), &["--shared"]);
    let d = dir.path().to_str().unwrap();
    let out = output(&[
        "run",
        "rw",
        "--lock-path",
        d,
        "--shared",
        "--nonblock",
        "--",
        "true",
    ]);
    assert_eq!(
        code(&out),
        0,
        "a second reader was refused: {}",
        stderr(&out)
    );
    let out = output(&["run", "rw", "--lock-path", d, "--nonblock", "--", "true"]);
    assert_eq!(
        code(&out),
        support::code::BUSY,
        "a writer got in beside a reader"
    );
    reader.release();
}

/// SIGTERM or SIGINT while waiting: exit 128+N at once, command not run.
#[test]
fn signal_while_waiting_exits_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::lockutils("sig", dir.path(), &[]);
    for (sig, want) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let marker = dir.path().join(format!("ran-{sig}"));
        let waiter = lockutils()
            .args(["run", "sig", "--lock-path"])
            .arg(dir.path())
            .args(["--", "touch"])
            .arg(&marker)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_waiters(dir.path(), "sig", 1);
        kill(waiter.id() as i32, sig);
        let out = waiter.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(want), "{}", stderr(&out));
        assert!(stderr(&out).contains("lock not taken"), "{}", stderr(&out));
        assert!(!marker.exists(), "the command ran after the signal");
        // The waiter is gone from the lock's queue.
        support::wait_for_waiters(dir.path(), "sig", 0);
    }
    holder.release();
}

/// While the command runs, SIGTERM to lockutils reaches the command, and
/// its exit code (from its trap) comes back.
#[test]
fn signals_are_forwarded_to_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lockutils();
    cmd.args(["run", "fwd", "--lock-path"])
        .arg(dir.path())
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ]);
    let mut running = Holder::start(cmd, "ready");
    kill(running.pid(), libc::SIGTERM);
    let (status, rest) = running.finish();
    assert_eq!(status.code(), Some(3), "output {rest:?}");
    assert_eq!(rest.trim(), "got-term");
}

/// On a terminal (here `script`'s pseudo-terminal), a wait longer than a
/// second shows the holder's PID and command line and a live elapsed time.
#[test]
fn waiting_on_a_terminal_shows_the_holder_and_elapsed_time() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::lockutils("tty", dir.path(), &[]);
    let inner = format!(
        "'{}' run tty --lock-path '{}' -- echo got-it",
        env!("CARGO_BIN_EXE_lockutils"),
        dir.path().display()
    );
    // script(1) from util-linux: -q quiet, -e child's exit code, -c command;
    // under timeout(1), so a display that never comes fails the test.
    let mut script = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("timeout(1) and script(1) (util-linux) are needed to give lockutils a terminal");
    let mut out = script.stdout.take().unwrap();
    let mut seen = Vec::new();
    let want = format!("held by pid {}", holder.pid());
    let mut buf = [0u8; 4096];
    // Read until the display has shown the holder and a time past 1 s.
    while !(String::from_utf8_lossy(&seen).contains(&want)
        && String::from_utf8_lossy(&seen).contains("waiting 1."))
    {
        let n = out.read(&mut buf).expect("read script output");
        assert!(n > 0, "ended early: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    holder.release();
    out.read_to_end(&mut seen).unwrap();
    assert!(script.wait().unwrap().success());
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("run tty --lock-path"),
        "no holder command line: {text:?}"
    );
    assert!(text.contains("got-it"), "{text:?}");
}

/// Not a terminal: nothing on stderr, however long the wait.
#[test]
fn waiting_off_a_terminal_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::lockutils("pipe", dir.path(), &[]);
    let waiter = lockutils()
        .args(["run", "pipe", "--lock-path"])
        .arg(dir.path())
        .args(["--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_waiters(dir.path(), "pipe", 1);
    // Past the display's one-second threshold: the thing under test.
    std::thread::sleep(Duration::from_millis(1500));
    holder.release();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(code(&out), 0);
    assert_eq!(stderr(&out), "");
}

/// The command inherits the locked open file: SIGKILL of `lockutils`
/// while the command runs leaves the lock held (another `run --nonblock`
/// is refused) until the command exits.
#[test]
fn the_command_keeps_the_lock_when_lockutils_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut holder = Holder::lockutils("kept", dir.path(), &[]);
    holder.kill9();
    let out = output(&["run", "kept", "--lock-path", d, "--nonblock", "--", "true"]);
    assert_eq!(code(&out), support::code::BUSY, "{}", stderr(&out));
    // The lock's holder is now the command alone.
    let lock = support::lock_status(dir.path(), "kept");
    let holders = lock["holders"].as_array().unwrap();
    assert!(!holders.is_empty(), "{lock}");
    assert!(holders.iter().all(|h| h["pid"] != holder.pid()), "{lock}");
    holder.let_go_and_drain();
    let out = output(&["run", "kept", "--lock-path", d, "--nonblock", "--", "true"]);
    assert_eq!(code(&out), 0, "free after the command: {}", stderr(&out));
}

/// `--close` (flock's `-o`): the command does not get the lock file, so
/// SIGKILL of `lockutils` frees the lock while the command runs on.
#[test]
fn close_leaves_the_lock_with_lockutils_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut cmd = lockutils();
    cmd.args(["run", "closed", "--close", "--lock-path", d, "--"]);
    cmd.args(["sh", "-c", "echo held; read x; echo ran-on"]);
    let mut holder = Holder::start(cmd, "held");
    let out = output(&["run", "closed", "--lock-path", d, "-n", "--", "true"]);
    assert_eq!(code(&out), support::code::BUSY, "{}", stderr(&out));
    holder.kill9();
    let out = output(&["run", "closed", "--lock-path", d, "-n", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The command was running all along, unlocked.
    assert_eq!(holder.let_go_and_drain(), "ran-on\n");
}

/// `--flock` against util-linux `flock(1)`, both ways: a `flock` holder
/// makes `run --flock --nonblock` busy (plain `run` is not excluded by
/// it), and `run --flock` keeps `flock -n` out while its command runs.
#[test]
fn flock_option_excludes_util_linux_flock_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let path = dir.path().join("fl");
    let mut cmd = std::process::Command::new("flock");
    cmd.arg(&path)
        .args(["sh", "-c", "echo held; read x || true"]);
    let other = Holder::start(cmd, "held");
    let out = output(&["run", "fl", "--lock-path", d, "--flock", "-n", "--", "true"]);
    assert_eq!(code(&out), support::code::BUSY, "{}", stderr(&out));
    let out = output(&["run", "fl", "--lock-path", d, "-n", "--", "true"]);
    assert_eq!(code(&out), 0, "without --flock, flock(1) does not exclude");
    other.release();

    let p = path.to_str().unwrap();
    let script = format!("flock -n '{p}' true; echo \"flock -n: $?\"");
    let out = output(&[
        "run",
        "fl",
        "--lock-path",
        d,
        "--flock",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "flock -n: 1\n",
        "flock(1) got in while run --flock held"
    );
    let status = std::process::Command::new("flock")
        .args(["-n", p, "true"])
        .status()
        .expect("flock(1): apt-get install util-linux");
    assert!(status.success(), "released after the command");
}
