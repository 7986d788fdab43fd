//! What a `tracing` subscriber prints: [`debug_output`] runs a closure
//! under a `fmt` subscriber (up to `DEBUG`, no colours) that writes into
//! memory, and returns the text.
//!
//! `tests/tracing.rs` includes this file alone (`#[path]`), the other test
//! binaries as `support::capture`.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// An in-memory writer; clones share the buffer.
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

/// Runs `f` with a `DEBUG` subscriber as this thread's default, and returns
/// everything it printed.
pub fn debug_output(f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}
