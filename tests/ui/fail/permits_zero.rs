use lockutils::synchronized;

#[synchronized("pool", permits = 0)]
fn f() {}

fn main() {}
