use lockutils::synchronized;

#[synchronized("")]
fn f() {}

fn main() {}
