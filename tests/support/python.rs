//! The Python helper scripts of tests/support (`oslo_helper.py` for
//! tests/interop.rs, `fasteners_rw.py` for tests/rwlock.rs), run by the
//! interpreter [`python`] bootstraps (see `pyenv.rs`).

use std::path::Path;
use std::process::Command;

pub use super::pyenv::python;

use super::ChildBuilder;

/// A command running the script `tests/support/<file>` with `args`.
pub fn script(file: &str, args: &[&str]) -> ChildBuilder {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(file);
    let mut cmd = Command::new(python());
    cmd.arg("-u").arg(path).args(args);
    ChildBuilder::command(cmd, format!("{file} {}", args.join(" ")))
}

/// A command running `tests/support/oslo_helper.py` with `args`.
pub fn helper(args: &[&str]) -> ChildBuilder {
    script("oslo_helper.py", args)
}
