use lockutils::synchronized;

#[synchronized("a", timeout = "250")]
fn no_unit() -> std::io::Result<()> {
    Ok(())
}

#[synchronized("b", timeout = "3 fortnights")]
fn unknown_unit() -> std::io::Result<()> {
    Ok(())
}

#[synchronized("c", timeout = "0s")]
fn zero() -> std::io::Result<()> {
    Ok(())
}

#[synchronized("d", timeout = "100000000000h")]
fn overflow() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
