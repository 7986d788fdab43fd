// Doc comments and visibility are kept: `missing_docs` is denied and the
// function is public.
#![deny(missing_docs)]
//! Crate docs.

use lockutils::synchronized;

/// A documented, public, synchronized function.
#[synchronized("docs")]
pub fn documented() -> u32 {
    1
}

/// Entry point.
pub fn main() {
    assert_eq!(documented(), 1);
}
