// The simplest expansion: one guard statement at the top of the body, a
// `static` call site in its initializer block (so the body sees neither),
// the body untouched. A function that cannot return an error panics if the
// lock cannot be taken.

#[synchronized("n")]
pub fn f(x: u8) -> u8 {
    x
}

// `external` adds the lock file to the spec; without a `Result` to return
// an error through, a failure to take it is still a panic.
#[synchronized("n", external)]
fn external_without_result() {}
