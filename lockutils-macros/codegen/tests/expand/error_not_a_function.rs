// Only functions with a body can be locked.

#[synchronized("n")]
struct S;

trait T {
    #[synchronized("n")]
    fn bodiless(&self);
}

// On an expression (where attributes are unstable anyway) the error and
// the expression are kept in a block, so nothing else fails to parse.
fn closure() {
    let _ = #[synchronized("n")]
    || {};
}
