//! Several processes serialising on one external lock.
//!
//! ```text
//! cargo run --example demo            # 4 worker processes x 5 turns
//! cargo run --example demo -- 8 10    # 8 workers x 10 turns
//! ```
//!
//! The demo starts worker processes (itself, with the argument `worker`),
//! each of which calls an `#[synchronized("demo", external)]` function
//! several times. The function holds the lock file `<tmp>/demo` for 20 ms
//! and increments a counter file. Afterwards the parent prints who held the
//! lock when, checks that no two holds overlapped and that the counter is
//! exact, and exits non-zero if not.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockutils::synchronized;

/// How long each turn keeps the lock: the "work".
const HOLD: Duration = Duration::from_millis(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("worker") => worker(&args[1..]),
        _ => parent(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One hold of the lock, as a worker reports it.
struct Turn {
    pid: u32,
    start: u128,
    end: u128,
    counter: u64,
}

fn parent(args: &[String]) -> Result<(), String> {
    let number = |i: usize, default: u64| -> Result<u64, String> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse().map_err(|e| format!("{a:?}: {e}"))
        })
    };
    let (workers, turns) = (number(0, 4)?, number(1, 5)?);
    let dir = tempfile::tempdir().map_err(|e| format!("temporary lock path: {e}"))?;
    let epoch = now_ns();
    println!(
        "{workers} worker processes x {turns} turns on the external lock \"demo\" ({})",
        dir.path().join("demo").display()
    );

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for _ in 0..workers {
        let child = Command::new(&exe)
            .arg("worker")
            .arg(dir.path())
            .arg(turns.to_string())
            .arg(epoch.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        children.push(child);
    }
    let mut timeline = Vec::new();
    for mut child in children {
        let out = child.stdout.take().expect("piped stdout");
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| e.to_string())?;
            timeline.push(parse_turn(&line)?);
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("worker {} exited with {status}", child.id()));
        }
    }

    timeline.sort_by_key(|t| t.start);
    println!("\ntimeline:");
    for t in &timeline {
        println!(
            "  [pid {}] held +{:.3}s .. +{:.3}s, counter -> {}",
            t.pid,
            secs(t.start.saturating_sub(epoch)),
            secs(t.end.saturating_sub(epoch)),
            t.counter
        );
    }
    check(&timeline, workers * turns, &dir.path().join("counter"))?;
    println!(
        "\nOK: {workers} processes x {turns} turns, no overlap, counter = {}",
        workers * turns
    );
    Ok(())
}

/// No two holds overlap, every increment is there once, the file agrees.
fn check(timeline: &[Turn], total: u64, counter: &Path) -> Result<(), String> {
    for pair in timeline.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.start < a.end {
            return Err(format!(
                "pid {} got the lock while pid {} held it",
                b.pid, a.pid
            ));
        }
    }
    let mut seen: Vec<u64> = timeline.iter().map(|t| t.counter).collect();
    seen.sort_unstable();
    if seen != (1..=total).collect::<Vec<_>>() {
        return Err(format!(
            "counter values seen by the turns: {seen:?}, expected 1..={total}"
        ));
    }
    let stored = read_counter(counter).map_err(|e| format!("counter file: {e}"))?;
    if stored != total {
        return Err(format!("counter file holds {stored}, expected {total}"));
    }
    Ok(())
}

fn worker(args: &[String]) -> Result<(), String> {
    let [dir, turns, epoch] = args else {
        return Err("usage: demo worker DIR TURNS EPOCH_NS".into());
    };
    let dir = PathBuf::from(dir);
    let turns: u64 = turns.parse().map_err(|e| format!("turns: {e}"))?;
    let epoch: u128 = epoch.parse().map_err(|e| format!("epoch: {e}"))?;
    lockutils::config::set_lock_path(&dir);
    let counter = dir.join("counter");
    for _ in 0..turns {
        let t = take_turn(&counter, epoch).map_err(|e| e.to_string())?;
        // For the parent; the human-readable line went to stderr.
        println!("turn {} {} {} {}", t.pid, t.start, t.end, t.counter);
    }
    Ok(())
}

/// Runs only while this process holds the lock file `<lock path>/demo`
/// (and the in-process lock `demo`). A failure to get the lock comes back
/// as an `io::Error` (`From<LockError>`), and the body does not run.
#[synchronized("demo", external)]
fn take_turn(counter: &Path, epoch: u128) -> std::io::Result<Turn> {
    let start = now_ns();
    let pid = std::process::id();
    eprintln!(
        "[pid {pid}] got lock at +{:.3}s, holding {}ms",
        secs(start.saturating_sub(epoch)),
        HOLD.as_millis()
    );
    let n = read_counter(counter)? + 1;
    std::fs::write(counter, format!("{n}\n"))?;
    std::thread::sleep(HOLD);
    Ok(Turn {
        pid,
        start,
        end: now_ns(),
        counter: n,
    })
}

fn read_counter(path: &Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(0),
        Ok(s) => s.trim().parse().map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn parse_turn(line: &str) -> Result<Turn, String> {
    let bad = || format!("unexpected worker output {line:?}");
    let f: Vec<&str> = line.split(' ').collect();
    let [tag, pid, start, end, counter] = f[..] else {
        return Err(bad());
    };
    if tag != "turn" {
        return Err(bad());
    }
    Ok(Turn {
        pid: pid.parse().map_err(|_| bad())?,
        start: start.parse().map_err(|_| bad())?,
        end: end.parse().map_err(|_| bad())?,
        counter: counter.parse().map_err(|_| bad())?,
    })
}

/// Wall-clock nanoseconds: shared by all processes, unlike `Instant`.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn secs(ns: u128) -> f64 {
    ns as f64 / 1e9
}
