//! A Python with oslo.concurrency, fasteners and py-filelock, and tooz with
//! the client libraries of its PostgreSQL, MySQL, Redis and etcd drivers, for
//! the interop tests of the root crate and of `lockutils-cli`: both include this file (the CLI's
//! with `#[path]`), so they bootstrap, and share, the same venv.
//!
//! In order: `$LOCKUTILS_PYTHON` (an interpreter that already has both
//! packages, e.g. the venv `.ci/run` made), else the venv
//! `<workspace>/target/lockutils-pyenv` (or `$LOCKUTILS_PYENV`), created on
//! first use with `python3 -m venv` and `pip install` of [`PACKAGES`]
//! (again when the package list grows). Test binaries running at the same time serialise the
//! bootstrap with an external lockutils lock, and a marker file says the
//! venv is complete. Any failure fails the test with what to install: it
//! is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const HOW_TO: &str = "the interop tests need Python 3 with venv and pip, and access to PyPI: \
     `apt-get install python3 python3-venv python3-pip` (Debian/Ubuntu), or set \
     LOCKUTILS_PYTHON to a python that has the packages of pyenv.rs's PACKAGES installed";

/// What the venv holds: oslo.concurrency and the lock-file libraries, and
/// tooz with its drivers' clients (psycopg2, PyMySQL, redis-py, etcd3gw).
const PACKAGES: &[&str] = &[
    "oslo.concurrency",
    "fasteners",
    "filelock",
    "tooz",
    "psycopg2-binary",
    "PyMySQL",
    "redis",
    "etcd3gw",
];

/// Written into the venv once it is complete, listing [`PACKAGES`]: a venv
/// made for a shorter list is completed.
const MARKER: &str = ".lockutils-ready";

/// The interpreter to run oslo.concurrency with, bootstrapped if needed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(bootstrap)
}

/// The workspace root: the ancestor of the crate being tested that holds
/// this file (the root crate itself, or the parent of `lockutils-cli`).
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("tests/support/pyenv.rs").is_file())
        .expect("no ancestor of the crate holds tests/support/pyenv.rs")
}

/// The interpreter [`python`] would give, if it needs no bootstrap: for
/// the benchmarks, which compare with oslo.concurrency where the tests have
/// made the venv, and install nothing.
pub fn python_if_ready() -> Option<PathBuf> {
    if let Some(py) = std::env::var_os("LOCKUTILS_PYTHON") {
        return Some(PathBuf::from(py));
    }
    let venv = venv();
    complete(&venv).then(|| venv.join("bin").join("python"))
}

/// Where the venv is (or will be).
fn venv() -> PathBuf {
    std::env::var_os("LOCKUTILS_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target").join("lockutils-pyenv"))
}

/// Whether the venv at `venv` holds every package of [`PACKAGES`].
fn complete(venv: &Path) -> bool {
    std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|m| m == PACKAGES.join("\n"))
}

fn bootstrap() -> PathBuf {
    if let Some(py) = std::env::var_os("LOCKUTILS_PYTHON") {
        let py = PathBuf::from(py);
        check_imports(&py);
        return py;
    }
    let venv = venv();
    let py = venv.join("bin").join("python");
    let marker = venv.join(MARKER);
    if complete(&venv) {
        return py;
    }
    let parent = venv.parent().expect("venv path has a parent");
    std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("cannot create {parent:?}: {e}"));
    // Other test binaries may be doing the same right now: one at a time.
    let _guard = lockutils::lock("lockutils-pyenv.lock")
        .external()
        .lock_path(parent)
        .acquire()
        .unwrap_or_else(|e| panic!("cannot lock the venv bootstrap: {e}"));
    if complete(&venv) {
        return py;
    }
    let python3 = std::env::var_os("LOCKUTILS_PYTHON3").unwrap_or_else(|| "python3".into());
    if !py.exists() {
        let mut venv_cmd = Command::new(&python3);
        venv_cmd.arg("-m").arg("venv").arg(&venv);
        run(venv_cmd, "create the venv");
    }
    let mut pip = Command::new(&py);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(PACKAGES);
    run(pip, "pip install the interop tests' packages");
    check_imports(&py);
    std::fs::write(&marker, PACKAGES.join("\n"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", marker.display()));
    py
}

fn check_imports(py: &Path) {
    let mut cmd = Command::new(py);
    cmd.args([
        "-c",
        "import fasteners, filelock, oslo_concurrency.lockutils, tooz.coordination, \
         psycopg2, pymysql, redis, etcd3gw",
    ]);
    run(cmd, "import the interop tests' packages");
}

fn run(mut cmd: Command, what: &str) {
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "cannot {what} ({cmd:?} exited with {}):\n{}{}\n{HOW_TO}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ),
        Err(e) => panic!("cannot {what} ({cmd:?}: {e})\n{HOW_TO}"),
    }
}
