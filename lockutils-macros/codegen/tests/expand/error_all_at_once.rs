// Every problem is reported at once: the name, the function's kind, the
// contradicting options, and each option that can fail without a `Result`
// to return the failure through.

#[synchronized("..", blocking = false, timeout = "1s")]
const fn f() -> u8 {
    1
}

// A future's output that the signature does not show cannot be checked to
// be a `Result`.
#[synchronized("n", timeout = "1s")]
fn unseen_output() -> impl Future + Send {
    async {}
}
