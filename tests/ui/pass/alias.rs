// The alias takes every argument of the base attribute except `prefix`.
#![deny(warnings)]

use lockutils::{LockError, LockName};
use nova_macros::nova_synchronized;

const NAME: LockName = LockName::new("iptables");

#[nova_synchronized("mylock")]
fn plain() {}

#[nova_synchronized(NAME, external, lock_path = "/nonexistent/lockutils-ui")]
fn external() -> Result<(), LockError> {
    Ok(())
}

#[nova_synchronized("b", blocking = false, crate = ::lockutils)]
fn nonblocking() -> Result<(), LockError> {
    Ok(())
}

#[nova_synchronized("t", timeout = "250ms")]
async fn timed() -> Result<(), LockError> {
    Ok(())
}

fn main() {
    plain();
    nonblocking().unwrap();
    let _ = (external, timed());
}
