//! `LockName`: a lock name checked during constant evaluation.

use lockutils_name::NameProblem;

/// A lock name checked at compile time.
///
/// Declare shared lock names as constants, so a typo is a compile error
/// rather than a silently different lock:
///
/// ```
/// # use lockutils_runtime as lockutils;
/// use lockutils::LockName;
/// const IPTABLES: LockName = LockName::new("iptables");
/// assert_eq!(IPTABLES.as_str(), "iptables");
/// ```
///
/// A name that cannot be a lock name fails the build:
///
/// ```compile_fail
/// # use lockutils_runtime as lockutils;
/// const BAD: lockutils::LockName = lockutils::LockName::new("..");
/// let _ = BAD;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockName(&'static str);

impl LockName {
    /// Checks `name` (not empty, no NUL, not `.` or `..`); in a `const`
    /// item a bad name is a compile error.
    ///
    /// # Panics
    /// At run time, if `name` is invalid (use [`LockName::try_new`] there).
    pub const fn new(name: &'static str) -> LockName {
        match lockutils_name::check_name(name) {
            Ok(()) => LockName(name),
            Err(problem) => const_panic(problem),
        }
    }

    /// Like [`LockName::new`], returning the problem instead of panicking.
    pub const fn try_new(name: &'static str) -> Result<LockName, NameProblem> {
        match lockutils_name::check_name(name) {
            Ok(()) => Ok(LockName(name)),
            Err(p) => Err(p),
        }
    }

    /// The name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for LockName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Panics with the problem's message; usable in const evaluation, where
/// `panic!` takes only literal messages.
pub(crate) const fn const_panic(problem: NameProblem) -> ! {
    match problem {
        NameProblem::Empty => panic!("lockutils: a lock name must not be empty"),
        NameProblem::Nul => panic!("lockutils: a lock name must not contain a NUL byte"),
        NameProblem::Dot => panic!("lockutils: a lock name must not be `.` or `..`"),
        NameProblem::BadPrefix => {
            panic!("lockutils: a lock prefix must not contain `/` or a NUL byte")
        }
        NameProblem::TooLong => {
            panic!("lockutils: the lock file name (prefix + name) is longer than 255 bytes")
        }
    }
}
