//! Where a lock's file is: the lock path and the file name.

use std::path::PathBuf;

use lockutils::LockError;

use crate::cli::Place;
use crate::exit;

/// A lock named on the command line.
pub struct Named {
    /// The full lock name (prefix, separator, name).
    pub full: String,
    /// The lock file's name inside the lock path.
    pub file: String,
}

impl Place {
    /// The lock path: `--lock-path`, else the library's configuration
    /// (`$LOCKUTILS_LOCK_PATH`, `$OSLO_LOCK_PATH`). Prints the problem and
    /// returns the exit code if there is none.
    pub fn dir(&self) -> Result<PathBuf, i32> {
        match self.lock_path.clone().or_else(lockutils::config::lock_path) {
            Some(dir) => Ok(dir),
            None => Err(exit::fail(exit::LOCK_PATH, exit::NO_LOCK_PATH)),
        }
    }

    /// The full name and file name of lock `name`, checked by the library.
    pub fn named(&self, name: &str) -> Result<Named, LockError> {
        let lock = lockutils::lock(name).prefix(&self.prefix);
        Ok(Named {
            full: lock.full_name()?,
            file: lock.file_name()?,
        })
    }
}
