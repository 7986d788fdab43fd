//! The registry keeps no dead names (oslo's weak-value dictionary). Alone
//! in its test binary so that no other test's locks are counted.

use lockutils::__private_v0_1::live_entries;

#[test]
fn dead_names_are_forgotten() {
    assert_eq!(live_entries(), 0);
    for i in 0..50_000 {
        let name = format!("instance-{i}");
        let g = lockutils::lock(&name).acquire().unwrap();
        assert_eq!(live_entries(), 1);
        drop(g);
    }
    assert_eq!(live_entries(), 0);
    // A kept guard keeps its entry; a second acquisition shares it.
    let a = lockutils::lock("kept").acquire().unwrap();
    assert_eq!(live_entries(), 1);
    drop(a);
    assert_eq!(live_entries(), 0);
}
