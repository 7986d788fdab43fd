//! Uncontended acquire + release of an `external` lock on each lock server,
//! against a raw client doing the same calls on an open connection.
//!
//! `cargo bench --bench backends --features postgres,etcd` starts a
//! throwaway PostgreSQL and etcd (as the tests do,
//! `tests/support/servers.rs`) and prints one table. Figures are
//! microseconds per acquire + release: the median over samples (each the
//! mean of a batch), and the minimum.
//!
//! The raw clients are the servers' own tools, so nothing but the server's
//! work and one round trip per call is in them:
//! * PostgreSQL: `pgbench` (libpq, C) running `pg_advisory_lock` +
//!   `pg_advisory_unlock` on one open connection (simple protocol, as
//!   lockutils uses), and with `-C`: a new connection per lock, which is
//!   what tooz does.
//! * etcd: the same requests lockutils makes (grant a lease, one keepalive,
//!   a transaction that puts the key and reads the queue head, revoke),
//!   sent over one open HTTP/1.1 connection to etcd's JSON gateway. The
//!   gateway adds a hop inside etcd, so this somewhat overstates the raw
//!   gRPC cost; the four requests are dominated by three raft writes.
#![cfg(unix)]

#[path = "../tests/support/servers.rs"]
mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

/// One measured variant: per-sample microseconds per operation.
struct Row {
    name: String,
    samples: Vec<f64>,
}

impl Row {
    fn median(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// A variant: its name and one sample (microseconds per operation).
type Variant<'a> = (&'static str, Box<dyn FnMut() -> f64 + 'a>);

/// `batch` runs of `f`, timed: microseconds per run.
fn batch(batch: usize, mut f: impl FnMut()) -> impl FnMut() -> f64 {
    move || {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / batch as f64
    }
}

/// Takes `samples` samples of every variant, interleaved round by round
/// (in rotating order), so that load from elsewhere on a busy machine hits
/// them all alike. The first round is a warm-up.
fn interleave(samples: usize, mut variants: Vec<Variant<'_>>) -> Vec<Row> {
    let mut rows: Vec<Row> = variants
        .iter()
        .map(|(name, _)| Row {
            name: (*name).to_owned(),
            samples: Vec::new(),
        })
        .collect();
    for round in 0..=samples {
        for j in 0..variants.len() {
            let i = (round + j) % variants.len();
            let us = (variants[i].1)();
            if round > 0 {
                rows[i].samples.push(us);
            }
        }
    }
    rows
}

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test` run of benches
    // (which passes nothing) should not start servers.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let dir = std::env::temp_dir().join(format!("lockutils-bench-{}", std::process::id()));
    let (pg, etcd) = (servers::postgres(), servers::etcd());
    let mut raw = RawEtcd::connect(etcd);
    let acquire = |lock: lockutils::Lock<'_>| drop(lock.acquire().unwrap());
    let variants: Vec<Variant<'_>> = vec![
        (
            "lockutils, file:// (reference)",
            Box::new(batch(2000 * scale, || {
                acquire(lockutils::lock("bench").external().lock_path(&dir))
            })),
        ),
        (
            "lockutils, postgres://",
            Box::new(batch(2000 * scale, || {
                acquire(lockutils::lock("bench").external().backend(pg))
            })),
        ),
        (
            "raw libpq (pgbench), open connection",
            Box::new(move || pgbench(2000 * scale, false)),
        ),
        (
            "raw libpq (pgbench), new connection per lock (tooz)",
            Box::new(move || pgbench(100 * scale, true)),
        ),
        (
            "lockutils, etcd://",
            Box::new(batch(30 * scale, || {
                acquire(lockutils::lock("bench").external().backend(etcd))
            })),
        ),
        (
            "raw etcd (JSON gateway), open connection",
            Box::new(batch(30 * scale, || raw.lock_unlock())),
        ),
    ];
    let rows = interleave(10, variants);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\nUncontended acquire + release, microseconds ({})",
        machine()
    );
    println!(
        "| {:<52} | {:>10} | {:>10} |",
        "variant", "median µs", "min µs"
    );
    println!("|{:-<54}|{:->12}|{:->12}|", "", ":", ":");
    for r in &rows {
        println!(
            "| {:<52} | {:>10.1} | {:>10.1} |",
            r.name,
            r.median(),
            r.min()
        );
    }
    let ratio = |a: usize, b: usize| {
        let (x, y) = (&rows[a], &rows[b]);
        format!(
            "{:.2}x (medians), {:.2}x (minimums)",
            x.median() / y.median(),
            x.min() / y.min()
        )
    };
    println!();
    println!(
        "lockutils postgres / raw libpq, open connection: {}",
        ratio(1, 2)
    );
    println!(
        "raw libpq, new connection per lock (tooz) / lockutils postgres: {}",
        ratio(3, 1)
    );
    println!("lockutils etcd / raw etcd requests: {}", ratio(4, 5));
}

/// One `pgbench` run of `transactions` lock + unlock pairs: its average
/// latency, microseconds.
fn pgbench(transactions: usize, reconnect: bool) -> f64 {
    let script = std::env::temp_dir().join(format!("lockutils-pgbench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "SELECT pg_advisory_lock(4242);\nSELECT pg_advisory_unlock(4242);\n",
    )
    .unwrap();
    let mut cmd = Command::new(servers::pg_bin().join("pgbench"));
    cmd.args([
        "-n",
        "-M",
        "simple",
        "-c",
        "1",
        "-t",
        &transactions.to_string(),
        "-f",
    ])
    .arg(&script);
    if reconnect {
        cmd.arg("-C");
    }
    let out = cmd.arg(servers::postgres()).output().expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "latency average = 0.042 ms"
    let line = text
        .lines()
        .find(|l| l.starts_with("latency average"))
        .expect("latency");
    let ms: f64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    ms * 1000.0
}

/// The requests of one etcd acquisition, over one HTTP/1.1 connection to
/// etcd's gRPC-JSON gateway.
struct RawEtcd {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawEtcd {
    fn connect(url: &str) -> RawEtcd {
        let addr = url.trim_start_matches("etcd://");
        let writer = TcpStream::connect(addr).expect("connect to etcd");
        writer.set_nodelay(true).unwrap();
        RawEtcd {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
        }
    }

    fn lock_unlock(&mut self) {
        let grant = self.post("/v3/lease/grant", r#"{"TTL":10}"#);
        let id = json_string(&grant, "ID");
        self.post("/v3/lease/keepalive", &format!(r#"{{"ID":"{id}"}}"#));
        let txn = format!(
            r#"{{"compare":[],"success":[{{"requestPut":{{"key":"{k}","value":"","lease":"{id}"}}}},{{"requestRange":{{"key":"{p}","range_end":"{e}","limit":"1","sort_order":"ASCEND","sort_target":"CREATE","keys_only":true}}}}]}}"#,
            k = base64(&format!("lockutils-raw/bench/w/{id}")),
            p = base64("lockutils-raw/bench/"),
            e = base64("lockutils-raw/bench0"),
        );
        self.post("/v3/kv/txn", &txn);
        self.post("/v3/lease/revoke", &format!(r#"{{"ID":"{id}"}}"#));
    }

    /// One POST; the response body.
    fn post(&mut self, path: &str, body: &str) -> String {
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{path}: {status}");
        let (mut length, mut chunked) = (0, false);
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            chunked |= h == "transfer-encoding: chunked";
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(length, 0);
            self.reader.read_exact(&mut body).unwrap();
        }
        String::from_utf8(body).unwrap()
    }
}

/// The string value of `"key":"..."` in a JSON text.
fn json_string(json: &str, key: &str) -> String {
    let at = json
        .find(&format!("\"{key}\":\""))
        .unwrap_or_else(|| panic!("{key} in {json}"));
    let rest = &json[at + key.len() + 4..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn base64(s: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pg = Command::new(servers::pg_bin().join("postgres"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpus} CPUs, {pg}, etcd from the etcd-server package")
}
