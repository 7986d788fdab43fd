// A literal name is checked with its prefix: the lock file's name (prefix,
// `-`, name) must fit in 255 bytes, and neither may hold a NUL byte or `/`.

#[synchronized(
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    prefix = "nova"
)]
fn too_long_with_the_prefix() {}

#[synchronized("n\0")]
fn nul() {}

#[synchronized("n", prefix = "a/b")]
fn slash_in_prefix() {}

// An alias fixes the prefix.
#[nova_sync("n", prefix = "x")]
fn prefix_on_an_alias() {}
