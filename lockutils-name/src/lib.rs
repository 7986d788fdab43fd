//! The naming rules of lockutils, in one place.
//!
//! A lock has a *name* (`"iptables"`) and an optional *prefix* (`"nova-"`).
//! Together they make the lock's *full name*, which keys the in-process
//! registry and, with `/` replaced by `_`, is the lock file's name inside the
//! lock path. These are exactly the rules of oslo.concurrency's
//! `_get_lock_path`, so a Rust and a Python service agree on the file:
//!
//! * a `-` joins prefix and name unless the prefix is empty or already ends
//!   in `-`;
//! * every `/` of the name becomes `_` (so `a/b` and `a_b` share one file,
//!   as they do in oslo).
//!
//! What oslo lets through but we refuse, because it cannot be a safe file
//! name: an empty name, a NUL byte, the names `.` and `..`, a prefix holding
//! `/` or NUL, and a file name longer than 255 bytes (`NAME_MAX`).
//!
//! Every check is a `const fn`, so the macros can run it at expansion and
//! `LockName::new` can run it during constant evaluation.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

use alloc::string::String;

/// The longest file name (one path component) most file systems accept.
pub const MAX_FILE_NAME: usize = 255;

/// Why a lock name or prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameProblem {
    /// The name is the empty string.
    Empty,
    /// The name contains a NUL byte.
    Nul,
    /// The name is `.` or `..`, which would name a directory.
    Dot,
    /// The prefix contains `/` or NUL, so it would leave the lock path.
    BadPrefix,
    /// Prefix, separator and name make a file name over [`MAX_FILE_NAME`] bytes.
    TooLong,
}

impl NameProblem {
    /// A sentence saying what is wrong, for compile errors and `LockError`.
    pub const fn message(self) -> &'static str {
        match self {
            NameProblem::Empty => "a lock name must not be empty",
            NameProblem::Nul => "a lock name must not contain a NUL byte",
            NameProblem::Dot => "a lock name must not be `.` or `..`",
            NameProblem::BadPrefix => "a lock prefix must not contain `/` or a NUL byte",
            NameProblem::TooLong => "the lock file name (prefix + name) is longer than 255 bytes",
        }
    }
}

impl core::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

/// Checks a lock name on its own (no prefix, no length limit).
pub const fn check_name(name: &str) -> Result<(), NameProblem> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err(NameProblem::Empty);
    }
    if contains(b, 0) {
        return Err(NameProblem::Nul);
    }
    if matches!(b, [b'.'] | [b'.', b'.']) {
        return Err(NameProblem::Dot);
    }
    Ok(())
}

/// Checks a prefix on its own.
pub const fn check_prefix(prefix: &str) -> Result<(), NameProblem> {
    let b = prefix.as_bytes();
    if contains(b, 0) || contains(b, b'/') {
        return Err(NameProblem::BadPrefix);
    }
    Ok(())
}

/// Checks a name and prefix together, including the file-name length.
pub const fn check(prefix: &str, name: &str) -> Result<(), NameProblem> {
    if let Err(e) = check_name(name) {
        return Err(e);
    }
    if let Err(e) = check_prefix(prefix) {
        return Err(e);
    }
    if full_name_len(prefix, name) > MAX_FILE_NAME {
        return Err(NameProblem::TooLong);
    }
    Ok(())
}

/// Whether a `-` goes between `prefix` and the name (oslo's rule).
pub const fn needs_separator(prefix: &str) -> bool {
    match prefix.as_bytes() {
        [] => false,
        [.., last] => *last != b'-',
    }
}

/// Length in bytes of the full name, and so of the lock file's name.
pub const fn full_name_len(prefix: &str, name: &str) -> usize {
    prefix.len() + needs_separator(prefix) as usize + name.len()
}

/// The full lock name: prefix, `-` where oslo adds one, then the name.
///
/// This keys the in-process registry. The caller is expected to have checked
/// the parts with [`check`].
pub fn full_name(prefix: &str, name: &str) -> String {
    let mut s = String::with_capacity(full_name_len(prefix, name));
    push_full_name(&mut s, prefix, name);
    s
}

/// Appends the full name to `out` (see [`full_name`]).
pub fn push_full_name(out: &mut String, prefix: &str, name: &str) {
    out.push_str(prefix);
    if needs_separator(prefix) {
        out.push('-');
    }
    out.push_str(name);
}

/// The lock file's name inside the lock path: the full name with every `/`
/// of the *name* replaced by `_`, byte for byte as oslo.concurrency makes it.
pub fn file_name(prefix: &str, name: &str) -> String {
    let mut s = String::with_capacity(full_name_len(prefix, name));
    s.push_str(prefix);
    if needs_separator(prefix) {
        s.push('-');
    }
    for ch in name.chars() {
        s.push(if ch == '/' { '_' } else { ch });
    }
    s
}

const fn contains(b: &[u8], needle: u8) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == needle {
            return true;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oslo_file_names() {
        // Expected values are what oslo.concurrency's _get_lock_path produces.
        assert_eq!(file_name("nova-", "iptables"), "nova-iptables");
        assert_eq!(file_name("nova", "iptables"), "nova-iptables");
        assert_eq!(file_name("", "iptables"), "iptables");
        assert_eq!(file_name("n", "a/b/c"), "n-a_b_c");
        assert_eq!(file_name("", "/"), "_");
        assert_eq!(file_name("x-", "ünï"), "x-ünï");
    }

    #[test]
    fn full_name_keeps_slashes() {
        assert_eq!(full_name("nova", "a/b"), "nova-a/b");
        assert_eq!(full_name("", "a"), "a");
    }

    #[test]
    fn refusals() {
        assert_eq!(check("", ""), Err(NameProblem::Empty));
        assert_eq!(check("", "a\0b"), Err(NameProblem::Nul));
        assert_eq!(check("", "."), Err(NameProblem::Dot));
        assert_eq!(check("", ".."), Err(NameProblem::Dot));
        assert_eq!(check("a/", "x"), Err(NameProblem::BadPrefix));
        assert_eq!(check("a\0", "x"), Err(NameProblem::BadPrefix));
        assert_eq!(check("", &"x".repeat(256)), Err(NameProblem::TooLong));
        assert_eq!(check("p", &"x".repeat(254)), Err(NameProblem::TooLong));
        assert_eq!(check("p-", &"x".repeat(253)), Ok(()));
        assert_eq!(check("", "..."), Ok(()));
        assert_eq!(check(".", "."), Err(NameProblem::Dot));
        assert_eq!(check("", "./"), Ok(()));
    }

    const _CONST_CHECK: () = assert!(check("nova-", "iptables").is_ok());
}
