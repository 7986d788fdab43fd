use lockutils::synchronized;

#[synchronized("iptables", timeout = "250ms")]
fn plain() -> u32 {
    1
}

#[synchronized("iptables", timeout = "250ms")]
async fn unit_async() {}

fn main() {}
