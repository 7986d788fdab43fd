use lockutils::synchronized;

#[synchronized("job", flock)]
fn f() {}

fn main() {}
