//! `lockutils status`: free, held, by which process, for locks held by
//! lockutils (OFD locks) and by Python's oslo.concurrency (POSIX locks).

mod support;

use std::process::Command;

use support::{Holder, code, lock_status, lockutils, output, status_json, stderr, stdout};

#[test]
fn free_missing_and_listing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(
        code(&output(&["run", "b", "--lock-path", d, "--", "true"])),
        0
    );
    assert_eq!(
        code(&output(&[
            "run",
            "a",
            "-p",
            "nova",
            "--lock-path",
            d,
            "--",
            "true"
        ])),
        0
    );
    std::fs::create_dir(dir.path().join("subdir")).unwrap();

    let all = status_json(dir.path(), &[]);
    assert_eq!(all["lock_path"], d);
    let names: Vec<&str> = all["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "nova-a"], "directories are not lock files");
    for lock in all["locks"].as_array().unwrap() {
        assert_eq!(lock["state"], "free", "{lock}");
        assert_eq!(lock["holders"].as_array().unwrap().len(), 0);
        assert!(lock["age_seconds"].as_f64().unwrap() >= 0.0);
    }

    // --prefix filters the listing; a named lock with no file is "missing".
    let mut cmd = lockutils();
    cmd.args(["status", "--json", "--prefix", "nova", "--lock-path", d]);
    let only: serde_json::Value = serde_json::from_slice(&cmd.output().unwrap().stdout).unwrap();
    assert_eq!(only["locks"].as_array().unwrap().len(), 1, "{only}");
    assert_eq!(only["locks"][0]["name"], "nova-a");
    assert_eq!(lock_status(dir.path(), "nope")["state"], "missing");

    let table = output(&["status", "--lock-path", d]);
    assert_eq!(code(&table), 0);
    let text = stdout(&table);
    assert!(text.contains("LOCK") && text.contains("STATE"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("nova-a") && l.contains("free")),
        "{text}"
    );
}

/// A lock held by lockutils (the library, in a `lockutils run` process)
/// shows as held by that process and by the command, which shares its
/// locked open file; with `--close`, by lockutils alone.
#[test]
fn lock_held_by_lockutils_shows_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::lockutils("held", dir.path(), &[]);
    let lock = lock_status(dir.path(), "held");
    assert_eq!(lock["state"], "held", "{lock}");
    assert_eq!(lock["mode"], "exclusive", "{lock}");
    assert_eq!(lock["source"], "proc", "{lock}");
    let holders = lock["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 2, "lockutils and its command: {lock}");
    let ours = holders
        .iter()
        .find(|h| h["pid"] == holder.pid())
        .unwrap_or_else(|| panic!("pid {} missing: {lock}", holder.pid()));
    assert_eq!(ours["kind"], "ofd");
    let command = ours["command"].as_str().unwrap();
    assert!(command.contains("run held"), "command line {command:?}");
    assert!(ours["since"].as_f64().unwrap() > 0.0, "{lock}");
    let other = holders.iter().find(|h| h["pid"] != holder.pid()).unwrap();
    assert!(
        other["command"].as_str().unwrap().starts_with("sh -c"),
        "{lock}"
    );

    let d = dir.path().to_str().unwrap();
    let table = stdout(&output(&["status", "held", "--lock-path", d]));
    let row = table
        .lines()
        .find(|l| l.starts_with("held"))
        .expect("a row for the lock");
    assert!(
        row.contains(" held ") && row.contains(&holder.pid().to_string()),
        "{table}"
    );

    holder.release();
    let lock = lock_status(dir.path(), "held");
    assert_eq!(lock["state"], "free", "{lock}");

    let holder = Holder::lockutils("held", dir.path(), &["--close"]);
    let lock = lock_status(dir.path(), "held");
    let pids: Vec<&serde_json::Value> = lock["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["pid"])
        .collect();
    assert_eq!(pids, [holder.pid()], "{lock}");
    holder.release();
}

/// Two shared holders show as two PIDs, mode shared; the lock path comes
/// from $OSLO_LOCK_PATH here.
#[test]
fn shared_holders_all_show() {
    let dir = tempfile::tempdir().unwrap();
    let a = Holder::lockutils("readers", dir.path(), &["--shared"]);
    let b = Holder::lockutils("readers", dir.path(), &["--shared"]);
    let out = lockutils()
        .args(["status", "--json", "readers"])
        .env("OSLO_LOCK_PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lock = &all["locks"][0];
    assert_eq!(lock["mode"], "shared", "{lock}");
    // The lockutils processes (their commands hold the lock too).
    let mut pids: Vec<i64> = lock["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["command"].as_str().unwrap().contains("lockutils"))
        .map(|h| h["pid"].as_i64().unwrap())
        .collect();
    pids.sort();
    let mut want = vec![i64::from(a.pid()), i64::from(b.pid())];
    want.sort();
    assert_eq!(pids, want, "{lock}");
    a.release();
    b.release();
}

/// A lock held by Python's oslo.concurrency (a POSIX `lockf` lock) shows
/// as held by the Python process, and `run --nonblock` finds it busy.
#[test]
fn lock_held_by_oslo_concurrency_shows_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let cmd: Command = support::python::oslo_holder("iptables", "nova-", dir.path());
    let holder = Holder::start(cmd, "locked");
    let lock = lock_status(dir.path(), "nova-iptables");
    assert_eq!(lock["state"], "held", "{lock}");
    let holders = lock["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{lock}");
    assert_eq!(holders[0]["pid"], holder.pid(), "{lock}");
    assert_eq!(holders[0]["kind"], "posix");
    assert_eq!(holders[0]["mode"], "exclusive");

    let d = dir.path().to_str().unwrap();
    let out = output(&[
        "run",
        "iptables",
        "--prefix",
        "nova",
        "--lock-path",
        d,
        "-n",
        "--",
        "true",
    ]);
    assert_eq!(code(&out), support::code::BUSY, "{}", stderr(&out));
    holder.release();
    assert_eq!(lock_status(dir.path(), "nova-iptables")["state"], "free");
}

#[test]
fn no_lock_path_is_a_lock_path_error() {
    let out = output(&["status"]);
    assert_eq!(code(&out), support::code::LOCK_PATH);
    assert!(
        stderr(&out).contains("LOCKUTILS_LOCK_PATH"),
        "{}",
        stderr(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = output(&["status", "--lock-path", missing.to_str().unwrap()]);
    assert_eq!(code(&out), support::code::LOCK_PATH);
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
}

/// util-linux `flock(1)` holding a lock file: a flock holder (PID and
/// command) in the table and in `--json`; a second `flock` waiting for it
/// is a waiter with its PID.
#[test]
fn flock1_holders_and_waiters_show() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job");
    let mut cmd = Command::new("flock");
    cmd.arg(&path)
        .args(["sh", "-c", "echo held; read x || true"]);
    let holder = Holder::start(cmd, "held");
    let lock = lock_status(dir.path(), "job");
    assert_eq!(lock["state"], "held", "{lock}");
    let holders = lock["holders"].as_array().unwrap();
    let flock = holders
        .iter()
        .find(|h| h["pid"] == holder.pid())
        .unwrap_or_else(|| panic!("flock's pid {} missing: {lock}", holder.pid()));
    assert_eq!(flock["kind"], "flock", "{lock}");
    assert_eq!(flock["mode"], "exclusive", "{lock}");
    assert!(
        flock["command"].as_str().unwrap().starts_with("flock "),
        "{lock}"
    );

    let d = dir.path().to_str().unwrap();
    let table = stdout(&output(&["status", "job", "--lock-path", d]));
    let row = table
        .lines()
        .find(|l| l.contains(&holder.pid().to_string()))
        .unwrap_or_else(|| panic!("no row with flock's pid:\n{table}"));
    assert!(row.contains("flock"), "{table}");
    assert!(table.contains("KIND"), "{table}");

    let mut waiter = Command::new("flock")
        .arg(&path)
        .arg("true")
        .spawn()
        .expect("start flock");
    support::wait_for_waiters(dir.path(), "job", 1);
    let lock = lock_status(dir.path(), "job");
    let waiting = lock["waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{lock}");
    assert_eq!(waiting[0]["pid"], waiter.id(), "{lock}");
    assert_eq!(waiting[0]["kind"], "flock", "{lock}");

    holder.release();
    assert!(waiter.wait().unwrap().success());
    assert_eq!(lock_status(dir.path(), "job")["state"], "free");
}
