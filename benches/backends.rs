//! Uncontended acquire + release of an `external` lock on each lock server,
//! against a raw client doing the same calls on an open connection.
//!
//! `cargo bench --bench backends --features postgres,etcd,redis` starts
//! throwaway servers (as the tests do, `tests/support/servers.rs`) and
//! prints two tables: the first acquisition on a new URL (connect, TLS
//! handshake included) with and without TLS, then the steady state. Figures are
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
//! * Redis: the `redis` crate on one open connection sending what
//!   lockutils sends (the acquire script, the release script).
#![cfg(unix)]

#[path = "../tests/support/servers.rs"]
mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

/// The first acquire + release on a URL not used before (a new backend:
/// connect, authenticate, TLS handshake), median of 5, in milliseconds,
/// plain and with TLS.
fn first_use(pg: &str, etcd: &str, redis: &str) {
    let c = servers::certs();
    let pg_tls = servers::postgres_tls().port;
    let etcd_tls = servers::etcd_tls();
    let redis_tls = servers::redis_tls();
    let ca = c.ca.display().to_string();
    let mutual = format!(
        "cacert={ca}&cert={}&key={}",
        c.client_cert.display(),
        c.client_key.display()
    );
    type Url = Box<dyn Fn(usize) -> String>;
    let (pg, etcd, redis) = (pg.to_owned(), etcd.to_owned(), redis.to_owned());
    let ca2 = ca.clone();
    let cases: Vec<(&str, Url)> = vec![
        (
            "postgres://",
            Box::new(move |i| format!("{pg}?application_name=b{i}")),
        ),
        (
            "postgres:// sslmode=verify-full",
            Box::new(move |i| {
                format!(
                    "postgres://postgres:{}@localhost:{pg_tls}/postgres?application_name=b{i}\
                     &sslmode=verify-full&sslrootcert={ca2}",
                    servers::TLS_PG_PASSWORD
                )
            }),
        ),
        ("etcd://", Box::new(move |i| format!("{etcd}/b{i}"))),
        (
            "etcd:// cacert+cert+key (mutual TLS)",
            Box::new(move |i| format!("etcd://localhost:{etcd_tls}/b{i}?{mutual}")),
        ),
        (
            "redis://",
            Box::new(move |i| format!("{redis}?ttl={}", 10 + i)),
        ),
        (
            "rediss:// cacert",
            Box::new(move |i| {
                format!(
                    "rediss://localhost:{redis_tls}/0?ttl={}&cacert={ca}",
                    10 + i
                )
            }),
        ),
    ];
    println!("\nFirst acquire + release on a new URL (connect, TLS handshake), ms, median of 5");
    println!("| {:<40} | {:>10} |", "URL", "first use");
    println!("|{:-<42}|{:->12}|", "", ":");
    for (name, url) in &cases {
        let mut ms: Vec<f64> = (0..5)
            .map(|i| {
                let url = url(i);
                let t = Instant::now();
                drop(
                    lockutils::lock("bench-first")
                        .external()
                        .backend(&url)
                        .acquire()
                        .unwrap(),
                );
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!("| {:<40} | {:>10.2} |", name, ms[2]);
    }
}

/// The Redis backend's two requests, on one open connection.
struct RawRedis {
    con: redis::Connection,
}

impl RawRedis {
    fn connect(url: &str) -> RawRedis {
        let client = redis::Client::open(url).unwrap();
        RawRedis {
            con: client.get_connection().unwrap(),
        }
    }

    fn lock_unlock(&mut self) {
        let acquire = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
             return {redis.call('INCR', KEYS[2]), 0} end return {0, redis.call('PTTL', KEYS[1])}";
        let release = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) \
             redis.call('PUBLISH', KEYS[2], '1') return 1 end return 0";
        let _: (u64, i64) = redis::cmd("EVAL")
            .arg(acquire)
            .arg(2)
            .arg("raw:bench")
            .arg("raw:bench:fence")
            .arg("token")
            .arg(10_000)
            .query(&mut self.con)
            .unwrap();
        let _: i64 = redis::cmd("EVAL")
            .arg(release)
            .arg(2)
            .arg("raw:bench")
            .arg("raw:bench:released")
            .arg("token")
            .query(&mut self.con)
            .unwrap();
    }
}

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
    let (pg, etcd, redis) = (servers::postgres(), servers::etcd(), servers::redis());
    first_use(pg, etcd, redis);
    let mut raw = RawEtcd::connect(etcd);
    let mut raw_redis = RawRedis::connect(redis);
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
        (
            "lockutils, redis://",
            Box::new(batch(1000 * scale, || {
                acquire(lockutils::lock("bench").external().backend(redis))
            })),
        ),
        (
            "raw redis crate, the same 2 scripts, open connection",
            Box::new(batch(1000 * scale, || raw_redis.lock_unlock())),
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
