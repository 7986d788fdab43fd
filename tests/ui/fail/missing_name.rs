use lockutils::synchronized;

#[synchronized]
fn no_arguments() {}

#[synchronized(external, prefix = "nova-")]
fn options_only() {}

fn main() {}
