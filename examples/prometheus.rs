//! Lock metrics for Prometheus: `cargo run --example prometheus --features metrics`.
//!
//! Installs the Prometheus exporter of the metrics-rs project as the
//! `metrics` recorder, makes some contention (four threads on one lock, a
//! lock file, a thousand per-request names), and prints the scrape. With
//! `-- --serve 127.0.0.1:9184` it keeps serving `/metrics` there instead
//! (plain HTTP from the standard library), for `curl` or a Prometheus
//! server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

#[lockutils::synchronized("db-migrate")]
fn migrate_step() {
    std::thread::sleep(Duration::from_micros(200));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.0001, 0.001, 0.01, 0.1, 1.0])?
        .install_recorder()?;
    // Per-request names stay bounded: the first 16 names get their own
    // series, the rest share lock="(other)".
    lockutils::config::set_metric_name_limit(16);

    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| (0..50).for_each(|_| migrate_step()));
        }
    });
    let dir = std::env::temp_dir().join("lockutils-prometheus-example");
    for _ in 0..10 {
        let _report = lockutils::lock("nightly-report")
            .external()
            .lock_path(&dir)
            .acquire()?;
    }
    for request in 0..1000 {
        drop(lockutils::lock(&format!("request-{request}")).acquire()?);
    }

    let serve = std::env::args().skip_while(|a| a != "--serve").nth(1);
    let Some(addr) = serve else {
        print!("{}", handle.render());
        return Ok(());
    };
    let listener = TcpListener::bind(&addr)?;
    eprintln!("serving http://{addr}/metrics");
    for stream in listener.incoming() {
        let mut stream = stream?;
        // The request line and headers, up to the blank line.
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 2 {
            line.clear();
        }
        let body = handle.render();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
    }
    Ok(())
}
