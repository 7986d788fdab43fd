//! Throwaway lock servers for the backend tests, on loopback.
//!
//! [`postgres`] starts a PostgreSQL cluster (initdb in a fresh directory,
//! trust authentication, 127.0.0.1 on a free port, its unix socket in its
//! own directory) and [`etcd`] a one-member etcd cluster, each once per
//! test binary and shared by its tests. Both are stopped, and their
//! directories removed, when the test binary exits (an `atexit` handler).
//! Readiness is read from the server's own log, not guessed with sleeps.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (CI), the
//! cluster runs as the user `lockutils-test` if it exists, else `nobody`.
//!
//! Child processes (a test binary re-run by `support::child`) must not
//! start servers of their own: the parent passes the URL in
//! [`POSTGRES_ENV`] / [`ETCD_ENV`], which also lets a run use servers
//! started elsewhere.
//!
//! More servers (certificates, TLS-only PostgreSQL and etcd, a 3-member etcd
//! cluster, redis-server, pgbouncer) are in `servers_more.rs`, MariaDB in
//! `servers_mysql.rs`.
//!
//! Missing server binaries fail the test with the command that installs
//! them; they are never a reason to skip.
#![allow(dead_code)] // each test binary uses one of the servers

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The URL of the PostgreSQL server to use, if already running.
pub const POSTGRES_ENV: &str = "LOCKUTILS_TEST_POSTGRES_URL";
/// The URL of the etcd server to use, if already running.
pub const ETCD_ENV: &str = "LOCKUTILS_TEST_ETCD_URL";
/// The URL of the Redis server to use, if already running.
pub const REDIS_ENV: &str = "LOCKUTILS_TEST_REDIS_URL";

#[path = "servers_more.rs"]
mod more;
pub use more::*;
#[path = "servers_mysql.rs"]
mod mysql;
#[allow(unused_imports)] // only the MySQL tests start MariaDB
pub use mysql::*;

/// How long a server may take to start.
const STARTUP: Duration = Duration::from_secs(60);

/// Servers to stop at exit: the process and its directory.
static RUNNING: Mutex<Vec<(Child, i32, PathBuf)>> = Mutex::new(Vec::new());

/// The PostgreSQL server's URL (`postgres://postgres@127.0.0.1:PORT/postgres`),
/// starting the server on first use.
pub fn postgres() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| std::env::var(POSTGRES_ENV).unwrap_or_else(|_| start_postgres()))
}

/// The etcd server's URL (`etcd://127.0.0.1:PORT`), starting it on first use.
pub fn etcd() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| std::env::var(ETCD_ENV).unwrap_or_else(|_| start_etcd()))
}

/// A loopback TCP port nobody listens on (now).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local_addr").port()
}

/// Runs `sql` with `psql` against [`postgres`]; its output, unaligned and
/// without headers (`-A -t`). Fails the test if psql fails.
pub fn psql(sql: &str) -> String {
    let out = Command::new(pg_bin().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            postgres(),
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql -c {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("psql output is UTF-8")
        .trim()
        .to_owned()
}

/// Runs `etcdctl` with `args` against [`etcd`]; its standard output.
pub fn etcdctl(args: &[&str]) -> String {
    let endpoint = etcd().replacen("etcd://", "http://", 1);
    let out = Command::new(which("etcdctl", "apt-get install etcd-client"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("etcdctl output is UTF-8")
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------
// PostgreSQL.

/// The directory of PostgreSQL's server programs: `$LOCKUTILS_TEST_PG_BIN`,
/// else the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
pub fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOCKUTILS_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .filter(|(_, p)| p.join("bin/postgres").is_file())
        .max();
    match newest {
        Some((_, dir)) => dir.join("bin"),
        None => panic!(
            "the PostgreSQL server is not installed (no /usr/lib/postgresql/*/bin/postgres): \
             install it with `apt-get install postgresql`, or point LOCKUTILS_TEST_PG_BIN at \
             the directory holding initdb and postgres"
        ),
    }
}

fn start_postgres() -> String {
    let port = start_cluster("pg", None).port;
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// A running PostgreSQL cluster: its port and its unix socket directory.
pub struct PgCluster {
    pub port: u16,
    pub socket_dir: PathBuf,
}

/// Starts a PostgreSQL cluster on 127.0.0.1 (and 127.0.0.2). With `tls`:
/// TLS only (pg_hba `hostssl`, SCRAM password [`TLS_PG_PASSWORD`] for the
/// user `postgres`), with the server certificate and key `tls`; the unix
/// socket trusts local users either way (for `psql`).
fn start_cluster(kind: &str, tls: Option<(&Path, &Path)>) -> PgCluster {
    let bin = pg_bin();
    let user = RunAs::pick();
    let dir = server_dir(kind, &user);
    let data = dir.join("data");
    let mut initdb = user.command(bin.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    let out = initdb.output().expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let mut server = user.command(bin.join("postgres"));
    server
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&dir)
        .args(["-h", "127.0.0.1,127.0.0.2", "-p", &port.to_string()])
        // A throwaway cluster: durability is not the point.
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "max_connections=300"]);
    if let Some((cert, key)) = tls {
        tls_only(&data, cert, key, &user);
        server.args(["-c", "ssl=on", "-c", "password_encryption=scram-sha-256"]);
    }
    // SIGINT: a fast shutdown (SIGTERM would wait for our pooled sessions).
    let ready = "database system is ready to accept connections";
    let (_, log) = spawn_logged(server, "postgres", libc::SIGINT, dir.clone());
    await_line(&log, "postgres", ready);
    if tls.is_some() {
        let set = format!("ALTER USER postgres PASSWORD '{TLS_PG_PASSWORD}'");
        psql_socket(&dir, port, &set);
    }
    PgCluster {
        port,
        socket_dir: dir,
    }
}

/// The password of `postgres` on [`postgres_tls`].
pub const TLS_PG_PASSWORD: &str = "tls-s3cret";

/// Makes the cluster in `data` TLS-only: its certificate and key (owned by
/// the server's user, mode 0600 as PostgreSQL demands), and a pg_hba.conf
/// that accepts TCP only as `hostssl` with a password.
fn tls_only(data: &Path, cert: &Path, key: &Path, user: &RunAs) {
    use std::os::unix::fs::PermissionsExt;
    for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
        let dest = data.join(to);
        std::fs::copy(from, &dest).expect("copy the server certificate");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        user.chown(&dest);
    }
    let hba = "local all all trust\n\
               hostssl all all 127.0.0.1/32 scram-sha-256\n\
               hostssl all all 127.0.0.2/32 scram-sha-256\n";
    std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
}

/// The TLS-only PostgreSQL cluster (see [`start_cluster`]), started on
/// first use.
pub fn postgres_tls() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = certs();
        start_cluster("pgtls", Some((&c.server_cert, &c.server_key)))
    })
}

/// A TLS-only PostgreSQL cluster like [`postgres_tls`], whose certificate
/// is [`self_signed`]'s (made the way PostgreSQL's manual makes one);
/// started on first use.
pub fn postgres_tls_self_signed() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = self_signed();
        start_cluster("pgtls-self", Some((&c.cert, &c.key)))
    })
}

/// Runs `sql` with `psql` over the unix socket in `dir`; its output.
pub fn psql_socket(dir: &Path, port: u16, sql: &str) -> String {
    let out = Command::new(pg_bin().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .arg("-h")
        .arg(dir)
        .args(["-p", &port.to_string(), "-d", "postgres", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql -c {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("psql output is UTF-8")
        .trim()
        .to_owned()
}

/// The user a server runs as: ourselves, or an unprivileged one when we
/// are root.
struct RunAs(Option<(u32, u32)>);

impl RunAs {
    fn pick() -> RunAs {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return RunAs(None);
        }
        for name in [c"lockutils-test", c"nobody"] {
            // SAFETY: a NUL-terminated name; the record is copied at once.
            let pw = unsafe { libc::getpwnam(name.as_ptr()) };
            if !pw.is_null() {
                // SAFETY: non-null result of getpwnam.
                let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
                return RunAs(Some((uid, gid)));
            }
        }
        panic!(
            "running as root, and neither user lockutils-test nor nobody exists to run PostgreSQL"
        )
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.0 {
            // std drops the supplementary groups when root changes uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.0 {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown server directory");
        }
    }
}

/// A fresh directory for a server, owned by the user it runs as: under
/// cargo's target directory if that user can reach it, else the system
/// temporary directory.
fn server_dir(kind: &str, user: &RunAs) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let base = if user.0.is_none() || reachable_by_others(&target) {
        target
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("lockutils-{kind}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create server directory");
    user.chown(&dir);
    dir
}

/// Whether every directory from `/` to `dir` lets others through (`o+x`).
fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::create_dir_all(dir);
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

// ---------------------------------------------------------------------------
// etcd.

fn start_etcd() -> String {
    let etcd = which("etcd", "apt-get install etcd-server");
    let dir = server_dir("etcd", &RunAs(None));
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut server = Command::new(etcd);
    server
        .args(["--name", "lockutils-test", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .arg(format!("--initial-cluster=lockutils-test={peer_url}"));
    start(
        server,
        "etcd",
        "ready to serve client requests",
        libc::SIGTERM,
        dir,
    );
    format!("etcd://127.0.0.1:{client}")
}

/// `program` on the PATH (or in /usr/sbin, /usr/bin), else fails saying how
/// to install it.
fn which(program: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed: install it with `{install}`"))
}

// ---------------------------------------------------------------------------
// Starting and stopping.

/// Starts `cmd` and waits until its log (standard error or output) shows
/// `ready`; registers it to be stopped with `stop` (a signal) at exit.
/// Returns its process id.
fn start(cmd: Command, what: &str, ready: &str, stop: i32, dir: PathBuf) -> i32 {
    let (pid, log) = spawn_logged(cmd, what, stop, dir);
    await_line(&log, what, ready);
    pid
}

/// Starts `cmd` with its standard output and error read line by line into
/// the returned channel; registers it to be stopped with `stop` at exit.
fn spawn_logged(
    mut cmd: Command,
    what: &str,
    stop: i32,
    dir: PathBuf,
) -> (i32, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    // Both streams are read to the end, so the server never blocks on a
    // full pipe; lines go to the channel until nobody listens.
    for stream in [
        Box::new(out) as Box<dyn std::io::Read + Send>,
        Box::new(err),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let pid = child.id() as i32;
    register(child, stop, dir);
    (pid, rx)
}

/// Reads `log` until a line contains `ready`; fails the test (showing the
/// log) after [`STARTUP`] or if the server exits first.
fn await_line(log: &mpsc::Receiver<String>, what: &str, ready: &str) {
    let deadline = Instant::now() + STARTUP;
    let mut seen = String::new();
    loop {
        match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let done = line.contains(ready);
                seen.push_str(&line);
                seen.push('\n');
                if done {
                    return;
                }
            }
            Err(_) => panic!("{what} did not start within {STARTUP:?}; its log:\n{seen}"),
        }
    }
}

fn register(child: Child, stop: i32, dir: PathBuf) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: registering a plain `extern "C"` function.
        assert_eq!(unsafe { libc::atexit(stop_all) }, 0, "atexit");
    });
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((child, stop, dir));
}

/// Stops every server with its signal, SIGKILL if it has not exited after
/// 20 s; then removes its directory.
extern "C" fn stop_all() {
    let servers = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    for (mut child, stop, dir) in servers {
        // SAFETY: kill(2) on a child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, stop) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Sends `signal` to the server with process id `pid` (one of ours).
pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a server we started; at worst it has exited.
    unsafe { libc::kill(pid, signal) };
}

/// In a child process: points external locks at `url` (a closed port, with
/// the password `s3cret`), calls `guarded` (a `Result`-returning
/// `#[synchronized(name, external)]` function that sets its flag when its
/// body runs) and checks the error: `LockError::Backend` naming the lock,
/// the URL as `redacted`, `connect` and the refusal; no password anywhere;
/// the body not run.
pub fn check_unreachable(
    url: &str,
    redacted: &str,
    name: &str,
    label: &str,
    guarded: fn(&std::sync::atomic::AtomicBool) -> Result<u32, lockutils::LockError>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    lockutils::config::set_backend(url).unwrap();
    let ran = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let err = guarded(&ran).unwrap_err();
    let took = started.elapsed();
    assert!(!ran.load(Ordering::SeqCst), "the body ran without the lock");
    let text = err.to_string();
    println!("unreachable {label}, after {took:?}: {text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains(redacted), "{text}");
    match &err {
        lockutils::LockError::Backend {
            name: n,
            backend,
            op,
            cause,
        } => {
            assert_eq!(n, name);
            assert_eq!(backend, redacted);
            assert_eq!(*op, "connect");
            assert!(cause.to_lowercase().contains("refused"), "{cause}");
        }
        other => panic!("expected LockError::Backend, got {other:?}"),
    }
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
}
