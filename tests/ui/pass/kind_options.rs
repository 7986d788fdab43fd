// `fair`, `shared` and `permits` in every accepted form compile without a
// warning, expand to the lock kind they name, and run.
#![deny(warnings)]

use lockutils::{LockError, synchronized};

const WORKERS: u32 = 3;

#[synchronized("ui-fair-rw", fair)]
fn fair_writer() -> u8 {
    1
}

#[synchronized("ui-fair-rw", fair, shared)]
fn fair_reader() -> u8 {
    assert_eq!(lockutils::__private_v0_1::queued("ui-fair-rw"), Some(0));
    2
}

#[synchronized("ui-pool", permits = 3, fair)]
fn pooled() -> Option<usize> {
    lockutils::__private_v0_1::holders("ui-pool")
}

#[synchronized("ui-pool", fair, permits = WORKERS, blocking = false)]
fn pooled_const() -> Result<Option<usize>, LockError> {
    Ok(lockutils::__private_v0_1::holders("ui-pool"))
}

#[synchronized("ui-rw", shared, prefix = "nova-", timeout = "1s")]
async fn reader() -> Result<u8, LockError> {
    Ok(3)
}

fn main() {
    assert_eq!(fair_writer() + fair_reader(), 3);
    assert_eq!(pooled(), Some(1));
    assert_eq!(pooled_const().unwrap(), Some(1));
    let value = futures_lite::future::block_on(reader()).unwrap();
    assert_eq!(value, 3);
}
