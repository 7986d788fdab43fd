//! `lockutils wrapper`: a private lock path for one command.

use std::ffi::OsStr;
use std::hash::{BuildHasher, RandomState};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use crate::child;
use crate::cli::WrapperArgs;
use crate::exit;
use crate::signals;

/// Runs the subcommand; returns the exit code.
pub fn wrapper(args: WrapperArgs) -> i32 {
    let dir = match make_private_dir() {
        Ok(dir) => dir,
        Err(e) => return exit::fail(exit::LOCK_PATH, e),
    };
    signals::install();
    let env: Vec<(&str, &OsStr)> = lockutils::config::LOCK_PATH_ENV
        .iter()
        .map(|var| (*var, dir.as_os_str()))
        .collect();
    let code = child::run(&args.command, &env, None, None);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!(
            "lockutils: cannot remove temporary lock path {}: {e}",
            dir.display()
        );
    }
    code
}

/// Creates `$TMPDIR/lockutils-XXXXXXXX` with mode 0700. `mkdir` fails on
/// anything already there (a symlink included), so a name another user
/// planted is skipped, never followed.
fn make_private_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    let seed = RandomState::new();
    for attempt in 0u32..100 {
        let tag = seed.hash_one((std::process::id(), attempt, std::time::SystemTime::now()));
        let dir = base.join(format!("lockutils-{:012x}", tag & 0xffff_ffff_ffff));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // Exactly 0700, whatever the umask.
                let mode = std::os::unix::fs::PermissionsExt::from_mode(0o700);
                return match std::fs::set_permissions(&dir, mode) {
                    Ok(()) => Ok(dir),
                    Err(e) => {
                        let _ = std::fs::remove_dir(&dir);
                        Err(format!("cannot set mode 0700 on {}: {e}", dir.display()))
                    }
                };
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "cannot create a temporary lock path in {}: {e}",
                    base.display()
                ));
            }
        }
    }
    Err(format!(
        "cannot create a temporary lock path in {}: every name tried exists",
        base.display()
    ))
}
