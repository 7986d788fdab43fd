use lockutils::synchronized;

#[synchronized("pool", permits = 4, shared)]
fn f() {}

fn main() {}
