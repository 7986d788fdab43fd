// A `prefix = CONST` is checked during constant evaluation.
use lockutils::synchronized;

const PREFIX: &str = "nova/";

#[synchronized("iptables", prefix = PREFIX)]
fn f() {}

fn main() {
    f();
}
