//! `tracing` events: `debug` level, target `lockutils`, with the lock, the
//! function, the lock path and the waited / held durations.

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[lockutils::synchronized("traced", prefix = "nova-")]
fn traced_fn() -> u32 {
    7
}

#[test]
fn acquire_and_release_events_carry_lock_function_and_durations() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let dir = tempfile::tempdir().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(traced_fn(), 7);
        let g = lockutils::lock("traced-ext")
            .external()
            .lock_path(dir.path())
            .acquire()
            .unwrap();
        drop(g);
    });
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
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
