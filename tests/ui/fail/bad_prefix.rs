use lockutils::synchronized;

#[synchronized("iptables", prefix = "../nova")]
fn f() {}

fn main() {}
