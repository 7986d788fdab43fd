//! Lock-order checking: two code paths take the same two locks in opposite
//! orders. Run alone, each works; run at the same time, they can deadlock.
//! lockutils reports the second order the first time it is used, before
//! waiting, naming both locks and the functions that took them.
//!
//! `cargo run --example lock_order`

use lockutils::{config::LockOrderCheck, synchronized};

#[synchronized("iptables", prefix = "nova-")]
fn apply_rules() {
    refresh_instance();
}

#[synchronized("instance", prefix = "nova-")]
fn refresh_instance() {}

#[synchronized("instance", prefix = "nova-")]
fn reboot_instance() {
    flush_rules();
}

#[synchronized("iptables", prefix = "nova-")]
fn flush_rules() {}

fn main() {
    // The default in debug builds; `Warn` logs instead, `Off` (the release
    // default) records nothing.
    lockutils::config::set_lock_order_check(LockOrderCheck::Panic);
    // Keep the panic message for the report below instead of stderr.
    std::panic::set_hook(Box::new(|_| {}));

    apply_rules(); // records nova-iptables -> nova-instance
    let report = std::thread::spawn(reboot_instance)
        .join()
        .expect_err("the inverted order is reported");
    println!("{}", report.downcast_ref::<String>().expect("a message"));

    // The panic released what the thread held: both locks are free.
    apply_rules();
}
