// `fair`, `shared`, `flock` and `permits` say what kind of lock a name is,
// and go on the spec after the other options.

#[synchronized("n", permits = 4, fair, external)]
fn semaphore() {}

// A const number of permits is checked during constant evaluation; the
// call is written as a path call spanned on the const, so that rustc
// points a zero at the const rather than at the attribute.
#[synchronized("n", permits = limits::N)]
fn const_permits() {}

#[synchronized("n", shared)]
async fn reader() {}

// `flock` also locks the lock file with flock(2), beside the `fcntl` lock.
#[synchronized("n", external, flock)]
fn with_flock() {}
