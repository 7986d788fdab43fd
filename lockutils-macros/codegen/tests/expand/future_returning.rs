// A plain function returning a future: the body runs first (in a closure,
// so an early `return` still yields the future) and the function returns a
// new future that awaits the lock, then the body's future. The guard lives
// in the new future.

struct S;

impl S {
    #[synchronized("n")]
    fn impl_future(&self) -> impl Future<Output = u8> + '_ {
        async move { 1 }
    }

    // A boxed future: the closure carries the return type (so its
    // `return`s coerce as in the function) and the new future is boxed.
    #[synchronized("n")]
    fn boxed(&self) -> Pin<Box<dyn Future<Output = u8> + Send + '_>> {
        Box::pin(async move { 1 })
    }
}

// A signature that promises `Unpin` gets the new future boxed and pinned
// (an `async` block is never `Unpin`); one that does not, does not.
#[synchronized("n")]
fn unpin() -> impl Future<Output = u8> + Unpin + Send {
    std::future::ready(1)
}

#[synchronized("n")]
fn not_unpin() -> impl Future<Output = u8> + Send {
    async { 1 }
}
