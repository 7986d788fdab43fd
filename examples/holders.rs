//! "Waiting for X, held by pid P": who holds a lock, from code.
//!
//! ```text
//! cargo run --example holders
//! ```
//!
//! Starts a second copy of itself that holds the lock `report` for a
//! moment, then tries the lock without waiting; finding it busy, it logs
//! who holds it (with `lockutils::holders`) and waits for it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitCode, Stdio};
use std::time::SystemTime;

use lockutils::LockError;

fn main() -> ExitCode {
    let dir = std::env::temp_dir().join("lockutils-holders-example");
    let lock = lockutils::lock("report").external().lock_path(&dir);
    if std::env::args().nth(1).as_deref() == Some("hold") {
        // The other process: hold the lock until our stdin closes.
        let _guard = lock.acquire().expect("take the lock");
        println!("held");
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().expect("own path");
    let mut other = Command::new(exe)
        .arg("hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the holder");
    let mut line = String::new();
    let out = other.stdout.take().expect("stdout");
    BufReader::new(out).read_line(&mut line).expect("read");

    let guard = match lock.clone().blocking(false).acquire() {
        Ok(guard) => guard,
        Err(LockError::WouldBlock { name }) => {
            match lockutils::holders(&lock) {
                Ok(found) => {
                    for h in &found.holders {
                        let held_for = h
                            .since
                            .and_then(|s| SystemTime::now().duration_since(s).ok())
                            .map_or("?".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
                        println!(
                            "waiting for {name}: held {:?} ({:?} lock) by pid {} ({}), for at most {held_for}",
                            h.mode,
                            h.kind,
                            h.pid.map_or("?".to_owned(), |p| p.to_string()),
                            h.command.as_deref().unwrap_or("?"),
                        );
                    }
                }
                Err(e) => println!("waiting for {name} (holders unknown: {e})"),
            }
            drop(other.stdin.take()); // let the holder go
            lock.acquire().expect("take the lock")
        }
        Err(e) => {
            eprintln!("{e}");
            drop(other.stdin.take());
            let _ = other.wait();
            return ExitCode::FAILURE;
        }
    };
    let mine = lockutils::holders(&lock).expect("holders");
    println!(
        "got it; holders now: {:?}",
        mine.holders.iter().map(|h| h.pid).collect::<Vec<_>>()
    );
    drop(guard);
    let _ = other.wait();
    ExitCode::SUCCESS
}
