use lockutils::synchronized;

fn main() {
    // Attributes on expressions are not stable Rust: closures cannot be
    // synchronized; call a synchronized function from the closure instead.
    let apply = #[synchronized("iptables")]
    || {};
    apply();
}
