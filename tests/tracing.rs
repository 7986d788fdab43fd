//! `tracing` events: `debug` level, target `lockutils`, with the lock, the
//! function, the lock path and the waited / held durations.

#[path = "support/capture.rs"]
mod capture;

#[lockutils::synchronized("traced", prefix = "nova-")]
fn traced_fn() -> u32 {
    7
}

#[test]
fn acquire_and_release_events_carry_lock_function_and_durations() {
    let dir = tempfile::tempdir().unwrap();
    let out = capture::debug_output(|| {
        assert_eq!(traced_fn(), 7);
        let g = lockutils::lock("traced-ext")
            .external()
            .lock_path(dir.path())
            .acquire()
            .unwrap();
        drop(g);
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");

    assert!(lines[0].contains("DEBUG lockutils"), "{}", lines[0]);
    assert!(
        lines[0].contains("Lock \"nova-traced\" acquired by"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("lock=\"nova-traced\""), "{}", lines[0]);
    assert!(
        lines[0].contains("function=tracing::traced_fn"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("waited="), "{}", lines[0]);
    assert!(lines[1].contains("\"released\""), "{}", lines[1]);
    assert!(lines[1].contains("held="), "{}", lines[1]);

    let file = dir.path().join("traced-ext");
    assert!(
        lines[2].contains(&format!("lock_path=\"{}\"", file.display())),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].contains("function=tests/tracing.rs:"),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("lock=\"traced-ext\""), "{}", lines[3]);
}
