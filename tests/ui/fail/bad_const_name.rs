use lockutils::{LockName, synchronized};

const NAME: LockName = LockName::new("..");

#[synchronized(NAME)]
fn f() {}

fn main() {
    f();
}
