//! A Python with oslo.concurrency, shared with the root crate's interop
//! tests: the venv bootstrap is the root crate's `tests/support/pyenv.rs`
//! (included here by path), so either side may create the venv and both
//! use the same one. Missing Python fails the test: it is never skipped.

use std::path::Path;
use std::process::Command;

#[path = "../../../tests/support/pyenv.rs"]
mod pyenv;

pub use pyenv::python;

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
