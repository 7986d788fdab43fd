use lockutils::synchronized;

#[synchronized("iptables", blockin = false)]
fn f() -> Result<(), lockutils::LockError> {
    Ok(())
}

fn main() {}
