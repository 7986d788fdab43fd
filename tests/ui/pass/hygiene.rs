// User items and locals with the names the expansion uses internally are
// unaffected, in the body and in the arguments.
#![deny(warnings)]

use lockutils::synchronized;

static SITE: &str = "user site";
const GUARD: &str = "user-prefix";

#[synchronized("hygiene", prefix = GUARD)]
fn body_sees_user_items() -> (&'static str, Vec<String>) {
    let guard = SITE;
    #[allow(non_snake_case)]
    let __lockutils_guard = guard;
    (__lockutils_guard, lockutils::locks_held())
}

fn main() {
    assert_eq!(
        body_sees_user_items(),
        ("user site", vec!["user-prefix-hygiene".to_owned()])
    );
}
