//! A Python with oslo.concurrency, shared with the root crate's interop
//! tests: `$LOCKUTILS_PYTHON` if set, else the venv
//! `<workspace>/target/lockutils-pyenv` (`$LOCKUTILS_PYENV`), created if
//! missing with `python3 -m venv` and `pip install oslo.concurrency
//! fasteners` (the packages and marker file the root crate's
//! `tests/support/python.rs` uses, so either side may create it). Creation
//! is serialised with an external lockutils lock. Missing Python fails the
//! test: it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const HOW_TO: &str = "the oslo.concurrency tests need Python 3 with venv and pip, and access to \
     PyPI: `apt-get install python3 python3-venv python3-pip`, or set LOCKUTILS_PYTHON to a \
     python that has `oslo.concurrency` and `fasteners` installed";

/// Same list and marker as the root crate's bootstrap.
const PACKAGES: [&str; 2] = ["oslo.concurrency", "fasteners"];
const MARKER: &str = ".lockutils-ready";

/// The interpreter, bootstrapped on first use.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(bootstrap)
}

fn bootstrap() -> PathBuf {
    if let Some(py) = std::env::var_os("LOCKUTILS_PYTHON") {
        let py = PathBuf::from(py);
        check_imports(&py);
        return py;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let venv = std::env::var_os("LOCKUTILS_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target").join("lockutils-pyenv"));
    let py = venv.join("bin").join("python");
    let marker = venv.join(MARKER);
    if marker.exists() {
        return py;
    }
    let parent = venv.parent().expect("venv path has a parent");
    std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("cannot create {parent:?}: {e}"));
    // The root crate's test binaries may be doing the same: one at a time.
    let _guard = lockutils::lock("lockutils-pyenv.lock")
        .external()
        .lock_path(parent)
        .acquire()
        .unwrap_or_else(|e| panic!("cannot lock the venv bootstrap: {e}"));
    if marker.exists() {
        return py;
    }
    let python3 = std::env::var_os("LOCKUTILS_PYTHON3").unwrap_or_else(|| "python3".into());
    let mut create = Command::new(&python3);
    create.arg("-m").arg("venv").arg(&venv);
    run(create, "create the venv");
    let mut pip = Command::new(&py);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(PACKAGES);
    run(pip, "pip install oslo.concurrency fasteners");
    check_imports(&py);
    std::fs::write(&marker, PACKAGES.join("\n"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", marker.display()));
    py
}

fn check_imports(py: &Path) {
    let mut cmd = Command::new(py);
    cmd.args(["-c", "import fasteners, oslo_concurrency.lockutils"]);
    run(cmd, "import oslo_concurrency");
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

/// A Python process holding oslo's external lock `name` (prefix `prefix`)
/// in `dir` until its stdin closes; it prints `locked` once it holds it.
pub fn oslo_holder(name: &str, prefix: &str, dir: &Path) -> Command {
    const SCRIPT: &str = "\
import sys
from oslo_concurrency import lockutils
with lockutils.lock(sys.argv[1], sys.argv[2], external=True, lock_path=sys.argv[3]):
    print('locked', flush=True)
    sys.stdin.readline()
";
    let mut cmd = Command::new(python());
    cmd.args(["-u", "-c", SCRIPT, name, prefix]).arg(dir);
    cmd
}
