use lockutils::synchronized;

#[synchronized("iptables", blocking = false, timeout = "1s")]
fn f() -> Result<(), lockutils::LockError> {
    Ok(())
}

fn main() {}
