//! `lockutils remove`: refuses held locks, `--wait` waits then removes.

mod support;

use std::process::Stdio;

use support::{Holder, code, lockutils, output, stderr, wait_for_waiters};

#[test]
fn refuses_while_held_and_wait_waits_then_removes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let file = dir.path().join("nova-victim");
    let holder = Holder::lockutils("victim", dir.path(), &["--prefix", "nova"]);

    let out = output(&["remove", "victim", "--prefix", "nova", "--lock-path", d]);
    assert_eq!(code(&out), support::code::BUSY);
    let err = stderr(&out);
    assert!(err.contains("is held") && err.contains("--wait"), "{err}");
    assert!(
        err.contains(&holder.pid().to_string()),
        "holder not named: {err}"
    );
    assert!(file.exists(), "removed while held");

    let remover = lockutils()
        .args([
            "remove",
            "victim",
            "--prefix",
            "nova",
            "--wait",
            "--lock-path",
            d,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_waiters(dir.path(), "nova-victim", 1);
    assert!(
        file.exists(),
        "--wait removed the file before the holder let go"
    );
    holder.release();
    let out = remover.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!file.exists(), "--wait did not remove the file");
}

#[test]
fn removes_free_locks_and_ignores_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(
        code(&output(&["run", "old", "--lock-path", d, "--", "true"])),
        0
    );
    assert!(dir.path().join("old").exists());
    let out = output(&["remove", "old", "never-was", "--lock-path", d]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!dir.path().join("old").exists());
    assert!(
        stderr(&out).contains("nothing to remove"),
        "{}",
        stderr(&out)
    );
}
