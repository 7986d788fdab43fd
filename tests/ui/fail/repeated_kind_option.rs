use lockutils::synchronized;

#[synchronized("pool", fair, shared, fair, permits = 2, shared, permits = 3)]
fn f() {}

fn main() {}
