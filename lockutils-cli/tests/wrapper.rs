//! `lockutils wrapper`: a private lock path for one command.

mod support;

use std::path::PathBuf;

use support::{code, lockutils, stderr, stdout};

/// Both variables name one new 0700 directory, which is gone afterwards
/// even though the command failed; its exit code comes back.
#[test]
fn sets_both_variables_and_removes_the_directory_when_the_command_fails() {
    let script = r#"
        echo "$LOCKUTILS_LOCK_PATH"
        echo "$OSLO_LOCK_PATH"
        stat -c %a "$LOCKUTILS_LOCK_PATH"
        "$LOCKUTILS_BIN" run inner -- true && ls "$LOCKUTILS_LOCK_PATH"
        exit 5
    "#;
    let out = lockutils()
        .args(["wrapper", "--", "sh", "-c", script])
        .env("LOCKUTILS_BIN", env!("CARGO_BIN_EXE_lockutils"))
        // Whatever the caller had is replaced.
        .env("OSLO_LOCK_PATH", "/somewhere/else")
        .output()
        .unwrap();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}\n{}", stderr(&out));
    assert_eq!(lines[0], lines[1], "the two variables differ");
    let dir = PathBuf::from(lines[0]);
    assert!(
        dir.starts_with(std::env::temp_dir()),
        "{dir:?} is not in the temp dir"
    );
    assert_eq!(lines[2], "700", "mode of {dir:?}");
    assert_eq!(
        lines[3], "inner",
        "the lock taken inside was not in the wrapper's lock path"
    );
    assert!(!dir.exists(), "{dir:?} was left behind");
}

#[test]
fn passes_success_and_missing_commands_through() {
    let out = lockutils()
        .args(["wrapper", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = lockutils()
        .args(["wrapper", "--", "no-such-command-lockutils"])
        .output()
        .unwrap();
    assert_eq!(code(&out), support::code::NOT_FOUND);
    assert!(
        stderr(&out).contains("no-such-command-lockutils"),
        "{}",
        stderr(&out)
    );
}
