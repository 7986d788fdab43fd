// The body cannot name the guard or the call site the expansion adds.
use lockutils::synchronized;

#[synchronized("iptables")]
fn f() {
    drop(__lockutils_guard);
    let _ = &__LOCKUTILS_SITE;
}

fn main() {
    f();
}
