//! Compile-time behaviour of `#[synchronized]`: one `tests/ui/fail/*.rs`
//! case per diagnostic, with its expected `.stderr`, and `tests/ui/pass/*.rs`
//! cases that must compile (and run) without warnings.
//!
//! Diagnostics change between compiler releases, so the `.stderr` files are
//! pinned to one toolchain (`PINNED_RUSTC`); on any other, only the passing
//! cases run. Regenerate them with `TRYBUILD=overwrite cargo test --test ui`.

use std::process::Command;

/// The compiler the `.stderr` files were written with.
const PINNED_RUSTC: &str = "rustc 1.95.";

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    Command::new(rustc)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    let version = rustc_version();
    if version.starts_with(PINNED_RUSTC) {
        cases.compile_fail("tests/ui/fail/*.rs");
    } else {
        eprintln!(
            "skipping tests/ui/fail: the .stderr files are for {PINNED_RUSTC}x, this is {version}"
        );
    }
    cases.pass("tests/ui/pass/*.rs");
}
