use lockutils::synchronized;

#[synchronized("iptables", external, prefix = "a", external, prefix = "b")]
fn f() {}

fn main() {}
