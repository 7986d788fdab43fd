use lockutils::synchronized;

#[synchronized(".")]
fn here() {}

#[synchronized("..", prefix = "")]
fn parent() {}

fn main() {}
