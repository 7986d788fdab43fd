// An `async fn` awaits the guard inside its body.

#[synchronized("n")]
async fn f() {}

// A const name is read through `LockName::as_str`; a const prefix is used
// as it is. `blocking = false` on a function returning a `Result` returns
// `WouldBlock` through `into_error`, after awaiting the attempt.
#[synchronized(names::N, blocking = false, prefix = P)]
async fn g() -> Result<(), E> {
    Ok(())
}
