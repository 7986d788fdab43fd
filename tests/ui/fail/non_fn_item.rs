use lockutils::synchronized;

#[synchronized("iptables")]
struct Rules;

// A closure in a static is still not a function.
#[synchronized("iptables")]
static APPLY: fn() = || {};

fn main() {
    let _ = Rules;
    APPLY();
}
