// Arguments naming `Self` or the function's generics compile without a
// warning in every shape, and returned futures keep `Send` and `Unpin`
// (behaviour is tested in tests/shapes.rs and tests/async_fn.rs).
#![deny(warnings)]

use std::future::Future;

use lockutils::{LockError, LockName, synchronized};

trait Named {
    const NAME: LockName;
    const PREFIX: &'static str;
    const DIR: &'static str;
}

struct Job<const N: u32>;

impl<const N: u32> Job<N> {
    const NAME: LockName = LockName::new("job");

    #[synchronized(Self::NAME)]
    fn run(&self) -> u32 {
        N
    }

    #[synchronized(Self::NAME, permits = N)]
    async fn run_async(&self) -> u32 {
        N
    }

    #[synchronized("job", external, lock_path = T::DIR, prefix = T::PREFIX)]
    fn external<T: Named>(&self) -> Result<u32, LockError> {
        Ok(N)
    }
}

#[synchronized(T::NAME, blocking = false)]
fn future<T: Named>() -> impl Future<Output = Result<u8, LockError>> + Send {
    async { Ok(1) }
}

#[synchronized("unpin")]
fn unpin() -> impl Future<Output = u8> + Unpin + Send {
    std::future::ready(1)
}

fn send_unpin<F: Future + Send + Unpin>(f: F) -> F {
    f
}

struct N1;

impl Named for N1 {
    const NAME: LockName = LockName::new("n1");
    const PREFIX: &'static str = "p";
    const DIR: &'static str = "/tmp";
}

fn main() {
    let job = Job::<2>;
    let _ = job.run();
    let _ = job.run_async();
    let _ = job.external::<N1>();
    let _ = future::<N1>();
    let _ = send_unpin(unpin());
}
