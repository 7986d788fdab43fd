//! `lockutils remove`: the library's safe removal, refusing held locks
//! unless asked to wait.

use lockutils::LockError;

use crate::cli::RemoveArgs;
use crate::exit;
use crate::holders;

/// Runs the subcommand; returns the exit code (the first failure's).
pub fn remove(args: RemoveArgs) -> i32 {
    let dir = match args.place.dir() {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let mut code = 0;
    for name in &args.names {
        let result = remove_one(&args, name, &dir);
        if code == 0 {
            code = result;
        }
    }
    code
}

fn remove_one(args: &RemoveArgs, name: &str, dir: &std::path::Path) -> i32 {
    let named = match args.place.named(name) {
        Ok(named) => named,
        Err(e) => return exit::lock_error(&e),
    };
    let path = dir.join(&named.file);
    if let Err(e) = std::fs::symlink_metadata(&path) {
        if e.kind() == std::io::ErrorKind::NotFound {
            eprintln!(
                "lockutils: no lock file {}; nothing to remove",
                path.display()
            );
            return 0;
        }
        return exit::fail(
            exit::LOCK_PATH,
            format!("cannot inspect {}: {e}", path.display()),
        );
    }
    let prefix = args.place.prefix.as_str();
    if !args.wait {
        // Refuse rather than wait. The library's removal itself blocks, so
        // look first; see the subcommand's help for the window this leaves.
        let attempt = lockutils::lock(name)
            .prefix(prefix)
            .external()
            .lock_path(dir)
            .blocking(false)
            .acquire();
        match attempt {
            Ok(guard) => drop(guard),
            Err(LockError::WouldBlock { .. }) => {
                let by = holders::of_path(&path)
                    .map(|u| format!(" by {}", holders::describe(&u)))
                    .unwrap_or_default();
                return exit::fail(
                    exit::BUSY,
                    format!(
                        "lock {:?} ({}) is held{by}; not removed (use --wait to wait for it)",
                        named.full,
                        path.display()
                    ),
                );
            }
            Err(e) => return exit::lock_error(&e),
        }
    }
    match lockutils::remove_external_lock_file(name, prefix, Some(dir)) {
        Ok(()) => 0,
        Err(e) => exit::lock_error(&e),
    }
}
