// An option that can fail (`timeout`) on a function returning a `Result`:
// the failure is returned through `into_error`, and the body does not run.
// Every value option goes on the spec; `crate = c` changes the one path
// the expansion names.

#[synchronized("n", prefix = "p", external, lock_path = "/l", timeout = "1ms", crate = c)]
fn f() -> io::Result<()> {
    Ok(())
}
