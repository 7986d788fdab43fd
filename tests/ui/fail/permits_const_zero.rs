use lockutils::synchronized;

const WORKERS: u32 = 0;

#[synchronized("pool", permits = WORKERS)]
fn f() {}

fn main() {
    f();
}
