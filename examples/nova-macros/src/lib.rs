//! Nova's own lock attribute: `#[nova_synchronized("name", ...)]` is
//! `#[lockutils::synchronized("name", prefix = "nova-", ...)]`.
//!
//! This whole crate is the one line below, the way oslo's
//! `synchronized_with_prefix('nova-')` gives a project its decorator.
#![warn(missing_docs)]

lockutils_codegen::synchronized_with_prefix!(
    /// Used by nova's tests of the alias.
    pub fn nova_synchronized,
    "nova-"
);
