//! Bad input: a clear message and the documented exit code. And help.

mod support;

use support::{code, lockutils, output, stderr, stdout};

fn usage_error(args: &[&str], says: &str) {
    let out = output(args);
    assert_eq!(
        code(&out),
        support::code::USAGE,
        "{args:?}: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(says),
        "{args:?} should say {says:?}: {}",
        stderr(&out)
    );
}

#[test]
fn bad_arguments_exit_64() {
    usage_error(&["frobnicate"], "unrecognized subcommand 'frobnicate'");
    usage_error(&[], "Usage");
    // The command without `--`, and `--` without a command.
    usage_error(
        &["run", "x", "--lock-path", "/tmp", "true"],
        "the command goes after `--`",
    );
    usage_error(&["run", "x", "--lock-path", "/tmp", "--"], "<CMD>");
    usage_error(&["wrapper"], "<CMD>");
    usage_error(
        &["run", "", "--lock-path", "/tmp", "--", "true"],
        "must not be empty",
    );
    usage_error(
        &["run", "x", "-p", "a/b", "--lock-path", "/tmp", "--", "true"],
        "prefix",
    );
    usage_error(
        &["run", "x", "--timeout", "soon", "--", "true"],
        "not a duration",
    );
    usage_error(
        &["run", "x", "--timeout", "1s", "--nonblock", "--", "true"],
        "cannot be used",
    );
    usage_error(&["remove"], "<NAMES>");
    usage_error(&["status", "--lock-path", "/tmp", ""], "must not be empty");
}

/// A lock path under a regular file cannot be created, even by root.
#[test]
fn unusable_lock_path_exits_73_without_running_the_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"").unwrap();
    let locks = dir.path().join("f").join("locks");
    let marker = dir.path().join("ran");
    let out = lockutils()
        .args(["run", "x", "--lock-path"])
        .arg(&locks)
        .args(["--", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(code(&out), support::code::LOCK_PATH, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(locks.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists());

    let out = output(&["run", "x", "--", "true"]);
    assert_eq!(code(&out), support::code::LOCK_PATH);
    assert!(stderr(&out).contains("--lock-path DIR"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("LOCKUTILS_LOCK_PATH"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_and_version() {
    let out = output(&["--version"]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout(&out).trim(),
        format!("lockutils {}", env!("CARGO_PKG_VERSION"))
    );
    let top = stdout(&output(&["--help"]));
    for needle in ["run", "wrapper", "status", "remove", "75", "79", "73", "64"] {
        assert!(top.contains(needle), "--help lacks {needle:?}:\n{top}");
    }
    for sub in ["run", "wrapper", "status", "remove"] {
        let out = output(&[sub, "--help"]);
        assert_eq!(code(&out), 0);
        let text = stdout(&out);
        assert!(
            text.contains("Examples:"),
            "{sub} --help has no examples:\n{text}"
        );
        assert!(
            text.contains("Exit codes"),
            "{sub} --help has no exit codes:\n{text}"
        );
    }
    let status = stdout(&output(&["status", "--help"]));
    assert!(
        status.contains("/proc/locks") && status.contains("fdinfo"),
        "{status}"
    );
}
