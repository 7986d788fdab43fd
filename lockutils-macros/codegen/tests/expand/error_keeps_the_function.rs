// On any error the function is emitted unchanged, followed by the errors,
// so that the user sees them and not a cascade of follow-ups.

#[synchronized("")]
fn empty_name() {}

#[synchronized("n", shared, permits = limits::N, timeout = "1s")]
fn shared_with_permits_and_nothing_to_return_a_timeout_through() {}
