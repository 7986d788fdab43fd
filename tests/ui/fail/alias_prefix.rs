use nova_macros::nova_synchronized;

#[nova_synchronized("iptables", prefix = "neutron-")]
fn f() {}

fn main() {}
