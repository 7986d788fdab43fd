// Every function shape compiles without a warning (behaviour is tested in
// tests/shapes.rs and tests/async_fn.rs).
#![deny(warnings)]

use std::future::Future;
use std::pin::Pin;

use lockutils::{LockError, synchronized};

struct S(u32);

impl S {
    #[synchronized("s")]
    fn by_ref(&self) -> u32 {
        self.0
    }

    #[synchronized("s")]
    fn by_mut(&mut self) {
        self.0 += 1;
    }

    #[synchronized("s")]
    fn by_value(self) -> u32 {
        self.0
    }

    #[synchronized("s")]
    async fn by_ref_async(&self) -> u32 {
        self.0
    }

    #[synchronized("s", blocking = false)]
    fn boxed(&self) -> Pin<Box<dyn Future<Output = Result<u32, LockError>> + Send + '_>> {
        Box::pin(async move { Ok(self.0) })
    }
}

#[synchronized("g")]
fn generic<'a, T>(items: &'a [T]) -> Option<&'a T>
where
    T: Ord,
{
    items.iter().max()
}

#[synchronized("i")]
fn iter() -> impl Iterator<Item = u32> {
    0..3
}

#[synchronized("u")]
unsafe fn raw(p: *const u32) -> u32 {
    unsafe { *p }
}

#[synchronized("f")]
fn later() -> impl Future<Output = u32> + Send {
    async { 1 }
}

#[synchronized("r#type")]
fn r#type() {}

struct M(u32);

impl M {
    #[synchronized("m")]
    fn bump_later(&mut self) -> impl Future<Output = u32> + '_ {
        async move {
            self.0 += 1;
            self.0
        }
    }

    #[synchronized("m")]
    fn consume_later(self) -> impl Future<Output = u32> {
        async move { self.0 }
    }
}

trait Afit {
    fn run(&self) -> impl Future<Output = u32> + Send;
    async fn run_async(&self) -> u32;
}

impl Afit for M {
    #[synchronized("afit")]
    fn run(&self) -> impl Future<Output = u32> + Send {
        async move { self.0 }
    }

    #[synchronized("afit")]
    async fn run_async(&self) -> u32 {
        self.0
    }
}

#[synchronized("generic-async", blocking = false)]
async fn generic_async<T, E>(value: T) -> Result<T, E>
where
    T: Send,
    E: From<LockError>,
{
    Ok(value)
}

#[synchronized("never")]
fn never() -> ! {
    std::process::exit(0)
}

#[synchronized("inner-attrs")]
fn inner_attrs() {
    #![allow(unused_variables)]
    let unused = 1;
}

#[synchronized("extern")]
extern "C" fn callback(x: u32) -> u32 {
    x
}

fn main() {
    let mut s = S(1);
    s.by_mut();
    let _ = (s.by_ref(), generic(&[1, 2]), iter().count(), unsafe {
        raw(&1)
    });
    let _ = (s.by_ref_async(), s.boxed(), later());
    let _ = s.by_value();
    r#type();
    let mut m = M(1);
    let _ = m.bump_later();
    let _ = (M(2).consume_later(), m.run(), m.run_async());
    let _ = generic_async::<u8, LockError>(1);
    inner_attrs();
    assert_eq!(callback(3), 3);
    if std::env::args().count() > 100 {
        never();
    }
}
