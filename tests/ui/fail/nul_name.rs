use lockutils::synchronized;

#[synchronized("iptables\0")]
fn f() {}

fn main() {}
