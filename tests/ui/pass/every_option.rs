// Every argument, in every accepted form, compiles without a warning.
#![deny(warnings)]

use lockutils::{LockError, LockName, synchronized};

const NAME: LockName = LockName::new("iptables");
const PREFIX: &str = "nova";
const DIR: &str = "/nonexistent/lockutils-ui";

mod reexport {
    pub use ::lockutils;
}

#[synchronized("a")]
fn literal() {}

#[synchronized(NAME, prefix = PREFIX)]
fn const_name_and_prefix() {}

#[synchronized(crate::NAME, prefix = "nova-")]
fn crate_path_name() {}

#[synchronized("b", external, lock_path = "/nonexistent/lockutils-ui")]
fn external_literal_path() -> Result<(), LockError> {
    Ok(())
}

#[synchronized("c", lock_path = DIR, external, blocking = true)]
fn external_const_path() -> std::io::Result<()> {
    Ok(())
}

#[synchronized("d", blocking = false)]
fn nonblocking() -> Result<(), String> {
    Ok(())
}

#[synchronized("e", timeout = "1.5s", crate = ::lockutils)]
fn timed() -> Result<(), LockError> {
    Ok(())
}

#[synchronized("f", crate = crate::reexport::lockutils, timeout = "10µs")]
fn through_reexport() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    literal();
    const_name_and_prefix();
    crate_path_name();
    let _ = (external_literal_path, external_const_path);
    nonblocking().unwrap();
    timed().unwrap();
    through_reexport().unwrap();
}
