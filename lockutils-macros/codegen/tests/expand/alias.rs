// An alias made with `synchronized_with_prefix!(.., "nova-")` puts its
// fixed prefix on the spec.

#[nova_sync("n")]
fn f() {}
