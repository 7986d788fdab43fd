use std::future::Future;
use std::pin::Pin;

use lockutils::synchronized;

#[synchronized("iptables", blocking = false)]
fn unit() {}

// For a function returning a future, the future's `Output` is what counts.
#[synchronized("iptables", blocking = false)]
fn later() -> impl Future<Output = u32> {
    async { 1 }
}

#[synchronized("iptables", blocking = false)]
fn boxed() -> Pin<Box<dyn Future<Output = Option<u32>> + Send>> {
    Box::pin(async { None })
}

fn main() {}
