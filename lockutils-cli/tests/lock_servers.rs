//! `lockutils run --backend`, `elect` and `leader` on real lock servers
//! (the root crate's throwaway PostgreSQL, etcd, Redis and MariaDB,
//! `tests/support/servers.rs`): the command's environment, the command
//! ended when the lock is lost on the server (a deleted key, a revoked
//! lease, `pg_terminate_backend`, `KILL`), SIGKILL after `--kill-after`,
//! the exit code, `--at-least`, elections. Timings are printed
//! (`--nocapture`).
#![cfg(all(
    unix,
    feature = "postgres",
    feature = "redis",
    feature = "mysql",
    feature = "etcd"
))]

#[path = "../../tests/support/servers.rs"]
mod servers;
mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use support::{code, lockutils, stderr, stdout};

/// `lockutils run`/`elect` exits with this when the lock was lost.
const LOST: i32 = 76;

/// A `lockutils` process whose command printed its first line.
struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The command's first line.
    first: String,
}

impl Running {
    /// Starts `lockutils args...` and waits for the command's first line.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = lockutils();
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start lockutils");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read the first line");
        if first.is_empty() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("lockutils {args:?} printed nothing: {err}");
        }
        Running {
            child,
            stdout,
            first: first.trim_end().to_owned(),
        }
    }

    /// SIGTERM to `lockutils` (which passes it to the command, which
    /// should die of it), then [`Running::finish`].
    fn stop(self) -> (i32, String, String) {
        support::kill(self.child.id() as i32, libc::SIGTERM);
        self.finish()
    }

    /// Waits for it to exit: its code, the rest of stdout, its stderr.
    fn finish(mut self) -> (i32, String, String) {
        let mut out = String::new();
        let _ = self.stdout.read_to_string(&mut out);
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        let status = self.child.wait().expect("wait");
        let code = status
            .code()
            .unwrap_or_else(|| panic!("lockutils died: {status:?}: {err}"));
        (code, out, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command that prints `running`, then answers SIGTERM with `got TERM`
/// and exit 3.
const TERMINABLE: &str = "trap 'echo got TERM; exit 3' TERM; echo running; \
     while :; do sleep 0.05; done";

// ---------------------------------------------------------------------------
// The command's environment.

/// `run --backend URL` on each server: the command gets the lock's name
/// and a fencing token that grows; `LOCKUTILS_BACKEND` does the same.
#[test]
fn run_gives_the_command_the_lock_name_and_a_growing_fencing_token() {
    let show = "echo \"$LOCKUTILS_LOCK_NAME ${LOCKUTILS_FENCING_TOKEN-none}\"";
    for url in [
        servers::postgres(),
        servers::etcd(),
        servers::redis(),
        servers::mysql(),
    ] {
        let tokens: Vec<u64> = (0..2)
            .map(|_| {
                let out = lockutils()
                    .args(["run", "cli-env", "--backend", url, "--", "sh", "-c", show])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert_eq!(code(&out), 0, "{url}: {}", stderr(&out));
                let line = stdout(&out);
                let (name, token) = line.trim().split_once(' ').unwrap();
                assert_eq!(name, "cli-env", "{url}");
                token
                    .parse()
                    .unwrap_or_else(|_| panic!("{url}: token {token:?}"))
            })
            .collect();
        assert!(tokens[1] > tokens[0], "{url}: {tokens:?}");
    }
    let out = lockutils()
        .env("LOCKUTILS_BACKEND", servers::redis())
        .args(["run", "cli-env", "--", "sh", "-c", show])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out)
            .trim()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{}",
        stdout(&out)
    );
}

/// While `run` holds the lock on a server, another `run --nonblock` of the
/// same name is busy (75); lock files hold no fencing token to give.
#[test]
fn run_on_a_server_excludes_and_lock_files_give_no_token() {
    let url = servers::redis();
    let holder = Running::start(
        &[
            "run",
            "cli-excl",
            "--backend",
            url,
            "--",
            "sh",
            "-c",
            "echo held; exec sleep 30",
        ],
        &[],
    );
    assert_eq!(holder.first, "held");
    let try_run = || {
        lockutils()
            .args([
                "run",
                "cli-excl",
                "--backend",
                url,
                "--nonblock",
                "--",
                "true",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = try_run();
    assert_eq!(code(&out), support::code::BUSY, "{}", stderr(&out));
    let (code_holder, _, _) = holder.stop();
    assert_eq!(
        code_holder,
        128 + libc::SIGTERM,
        "the command died of the SIGTERM passed on"
    );
    let out = try_run();
    assert_eq!(code(&out), 0, "released at exit: {}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    let out = lockutils()
        .args(["run", "cli-file", "--lock-path"])
        .arg(dir.path())
        .args([
            "--",
            "sh",
            "-c",
            "echo \"$LOCKUTILS_LOCK_NAME ${LOCKUTILS_FENCING_TOKEN-none}\"",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "cli-file none");
}

// ---------------------------------------------------------------------------
// Lost locks.

/// Runs [`TERMINABLE`] under `name` on `url`, makes the server let the
/// lock go with `lose`, and checks the command got SIGTERM and `run`
/// exited [`LOST`]; returns how long that took.
fn lost_run(url: &str, name: &str, lose: impl FnOnce()) -> Duration {
    let run = Running::start(
        &["run", name, "--backend", url, "--", "sh", "-c", TERMINABLE],
        &[],
    );
    assert_eq!(run.first, "running");
    let lost_at = Instant::now();
    lose();
    let (code, out, err) = run.finish();
    let took = lost_at.elapsed();
    assert_eq!(code, LOST, "stdout {out:?}, stderr {err:?}");
    assert!(
        out.contains("got TERM"),
        "the command got no SIGTERM: {out:?}"
    );
    assert!(err.contains("lost on the lock server"), "{err}");
    println!("lockutils run on {url}: command ended {took:?} after the server let the lock go");
    took
}

#[test]
fn a_deleted_redis_key_terminates_the_command() {
    let url = format!("{}?ttl=2", servers::redis());
    let took = lost_run(&url, "cli-lost-redis", || {
        let n = servers::redis_cli(servers::redis(), &["DEL", "lockutils:cli-lost-redis"]);
        assert_eq!(n, "1", "the key was there");
    });
    // Found at the next renewal, ttl/3 later.
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_revoked_etcd_lease_terminates_the_command() {
    let took = lost_run(servers::etcd(), "cli-lost-etcd", || {
        let keys =
            servers::etcdctl(&["get", "--prefix", "--keys-only", "lockutils/cli-lost-etcd/"]);
        let key = keys.lines().find(|l| !l.is_empty()).expect("the lock key");
        let lease = key.rsplit('/').next().unwrap();
        servers::etcdctl(&["lease", "revoke", lease]);
    });
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_terminated_postgres_session_terminates_the_command() {
    let took = lost_run(servers::postgres(), "cli-lost-pg", || {
        // The advisory key: the first 8 bytes of SHA-256 of the name.
        let key: i64 = servers::psql(
            "SELECT ('x' || substr(encode(sha256('cli-lost-pg'::bytea), 'hex'), 1, 16))\
             ::bit(64)::bigint",
        )
        .parse()
        .unwrap();
        let key = key as u64;
        let ended = servers::psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' \
             AND granted AND classid = {} AND objid = {} AND objsubid = 1",
            key >> 32,
            key & 0xffff_ffff
        ));
        assert_eq!(ended, "1");
    });
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_killed_mysql_session_terminates_the_command() {
    let took = lost_run(servers::mysql(), "cli-lost-mysql", || {
        let m = servers::mariadb();
        let id = m.sql("SELECT IS_USED_LOCK('lockutils:cli-lost-mysql')");
        assert!(id.parse::<u64>().is_ok(), "held by {id:?}");
        m.sql(&format!("KILL {id}"));
    });
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A command that ignores SIGTERM gets SIGKILL `--kill-after` later.
#[test]
fn a_command_that_ignores_sigterm_is_killed_after_kill_after() {
    let url = format!("{}?ttl=2", servers::redis());
    let stubborn = "trap '' TERM; echo running; while :; do sleep 0.05; done";
    let run = Running::start(
        &[
            "run",
            "cli-stubborn",
            "--backend",
            &url,
            "--kill-after",
            "700ms",
            "--",
            "sh",
            "-c",
            stubborn,
        ],
        &[],
    );
    assert_eq!(run.first, "running");
    let n = servers::redis_cli(servers::redis(), &["DEL", "lockutils:cli-stubborn"]);
    assert_eq!(n, "1");
    let (code, _, err) = run.finish();
    assert_eq!(code, LOST, "{err}");
    let term = err.find("SIGTERM").expect("SIGTERM first");
    let kill = err.find("sending it SIGKILL").expect("then SIGKILL");
    assert!(term < kill, "{err}");
}

// ---------------------------------------------------------------------------
// --at-least.

/// The lock stays taken until `--at-least` after it was taken, though the
/// command ended at once; then it is free.
#[test]
fn at_least_keeps_the_lock_after_a_short_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    for place in [vec!["--backend", servers::redis()], vec!["--lock-path", &d]] {
        let mut args = vec!["run", "cli-least"];
        args.extend(&place);
        args.extend(["--at-least", "1500ms", "--", "echo", "done"]);
        let started = Instant::now();
        let run = Running::start(&args, &[]);
        assert_eq!(run.first, "done");
        let mut again = vec!["run", "cli-least", "--nonblock"];
        again.extend(&place);
        again.extend(["--", "true"]);
        let out = lockutils()
            .args(&again)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            code(&out),
            support::code::BUSY,
            "{place:?}: {}",
            stderr(&out)
        );
        let (code_first, _, err) = run.finish();
        let held = started.elapsed();
        assert_eq!(code_first, 0, "{err}");
        assert!(
            held >= Duration::from_millis(1500),
            "{place:?}: held {held:?}"
        );
        let out = lockutils()
            .args(&again)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{place:?}: {}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------
// elect and leader.

fn leader_json(name: &str, url: &str) -> serde_json::Value {
    let out = lockutils()
        .args(["leader", name, "--backend", url, "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", stdout(&out)))
}

/// `elect` runs the command as leader with its identity and token;
/// `leader --json` names it from another process; a second candidate
/// with `--nonblock` is refused naming the leader; after the command
/// ends nobody leads.
#[test]
fn elect_runs_the_command_as_leader_and_leader_names_it() {
    for url in [servers::postgres(), servers::etcd()] {
        let name = "cli-elect";
        let show = "echo \"$LOCKUTILS_LEADER_IDENTITY $LOCKUTILS_FENCING_TOKEN\"; exec sleep 30";
        let lead = Running::start(
            &[
                "elect",
                name,
                "--backend",
                url,
                "--identity",
                "host-a",
                "--",
                "sh",
                "-c",
                show,
            ],
            &[],
        );
        let (identity, token) = lead.first.split_once(' ').unwrap();
        assert_eq!(identity, "host-a");
        let token: u64 = token.parse().unwrap();
        let now = leader_json(name, url);
        assert_eq!(now["name"], name);
        assert_eq!(now["leader"]["identity"], "host-a", "{now}");
        assert_eq!(now["leader"]["fencing_token"], token, "{now}");

        let out = lockutils()
            .args(["elect", name, "--backend", url, "--nonblock", "--", "true"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(code(&out), support::code::BUSY, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("led by \"host-a\""),
            "{}",
            stderr(&out)
        );

        let plain = lockutils()
            .args(["leader", name, "--backend", url])
            .output()
            .unwrap();
        assert_eq!(
            stdout(&plain).trim(),
            format!("host-a (fencing token {token})")
        );
        let (code_lead, _, _) = lead.stop();
        assert_eq!(code_lead, 128 + libc::SIGTERM);
        assert!(
            leader_json(name, url)["leader"].is_null(),
            "resigned at exit"
        );
        let out = lockutils()
            .args(["leader", name, "--backend", url])
            .output()
            .unwrap();
        assert_eq!(stdout(&out).trim(), "no leader");
    }
}

/// An elected command is ended like `run`'s when the leadership is lost.
#[test]
fn elect_ends_the_command_when_the_leadership_is_lost() {
    let url = servers::etcd();
    let run = Running::start(
        &[
            "elect",
            "cli-elect-lost",
            "--backend",
            url,
            "--",
            "sh",
            "-c",
            TERMINABLE,
        ],
        &[],
    );
    assert_eq!(run.first, "running");
    let keys = servers::etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        "lockutils/cli-elect-lost/",
    ]);
    let lease = keys
        .lines()
        .find(|l| !l.is_empty())
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    servers::etcdctl(&["lease", "revoke", &lease]);
    let (code, out, err) = run.finish();
    assert_eq!(code, LOST, "{err}");
    assert!(out.contains("got TERM"), "{out}");
    assert!(
        err.contains("leadership of \"cli-elect-lost\" lost"),
        "{err}"
    );
}

/// On lock files: `leader` without a leader, then with one.
#[test]
fn elect_and_leader_on_lock_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = lockutils()
        .args(["leader", "cli-files", "--lock-path", d])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "no leader");
    let lead = Running::start(
        &[
            "elect",
            "cli-files",
            "--lock-path",
            d,
            "-i",
            "me",
            "--",
            "sh",
            "-c",
            "echo $LOCKUTILS_FENCING_TOKEN; exec sleep 30",
        ],
        &[],
    );
    assert_eq!(lead.first, "1", "the first leader's token");
    let out = lockutils()
        .args(["leader", "cli-files", "--lock-path", d])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "me (fencing token 1)");
    lead.stop();
}
