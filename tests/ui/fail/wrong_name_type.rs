// A path name must be a `lockutils::LockName` const, not a `&str`.
use lockutils::synchronized;

const NAME: &str = "iptables";

#[synchronized(NAME)]
fn f() {}

fn main() {
    f();
}
