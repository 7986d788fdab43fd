//! Throwaway MariaDB servers (part of `servers.rs`): one plain, shared by
//! a test binary's tests, and one that accepts TCP clients only over TLS.
//!
//! Each is a fresh data directory (`mariadb-install-db`) and a `mariadbd`
//! on 127.0.0.1 on a free port, with its unix socket in its own directory
//! (root over that socket is how the tests look at the server: `KILL`,
//! `IS_USED_LOCK`, the process list). An init file creates the database
//! `locks` and the user `lockutils` with the password [`MYSQL_PASSWORD`],
//! which the URLs use over TCP. mariadbd refuses to run as root: when the
//! tests run as root, it runs as `lockutils-test` or `nobody` (as
//! PostgreSQL does). Readiness is read from its log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{Certs, RunAs, await_line, certs, free_port, server_dir, spawn_logged, which};

/// The URL of the MariaDB server to use, if already running.
pub const MYSQL_ENV: &str = "LOCKUTILS_TEST_MYSQL_URL";

/// The password of the user `lockutils` on the test servers.
pub const MYSQL_PASSWORD: &str = "my-s3cret";

const INSTALL: &str = "apt-get install mariadb-server mariadb-client";

/// A running MariaDB server.
pub struct Mariadb {
    /// `mysql://lockutils:PASSWORD@127.0.0.1:PORT/locks`.
    pub url: String,
    pub port: u16,
    /// Its unix socket (root, no password).
    pub socket: PathBuf,
    pub pid: i32,
}

impl Mariadb {
    /// Runs `sql` as root over the unix socket; its output (tab-separated,
    /// no column names). Fails the test if the client fails.
    pub fn sql(&self, sql: &str) -> String {
        mariadb_cli(&self.socket, sql)
    }
}

/// The shared MariaDB server's URL, started on first use;
/// [`MYSQL_ENV`] names one started elsewhere (children get it there).
pub fn mysql() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| std::env::var(MYSQL_ENV).unwrap_or_else(|_| mariadb().url.clone()))
}

/// The shared MariaDB server itself (in the process that started it).
pub fn mariadb() -> &'static Mariadb {
    static SERVER: OnceLock<Mariadb> = OnceLock::new();
    SERVER.get_or_init(|| start_mariadb("mariadb", None))
}

/// A MariaDB server that takes TCP clients only over TLS (the test server
/// certificate; 127.0.0.1 and 127.0.0.2), started on first use.
pub fn mariadb_tls() -> &'static Mariadb {
    static SERVER: OnceLock<Mariadb> = OnceLock::new();
    SERVER.get_or_init(|| start_mariadb("mariadbtls", Some(certs())))
}

fn start_mariadb(kind: &str, tls: Option<&Certs>) -> Mariadb {
    let user = RunAs::pick();
    let dir = server_dir(kind, &user);
    let data = dir.join("data");
    let mut install = user.command(which("mariadb-install-db", INSTALL));
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]);
    let out = install.output().expect("run mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let init = dir.join("init.sql");
    let sql = format!(
        "CREATE DATABASE IF NOT EXISTS locks;\n\
         CREATE USER IF NOT EXISTS 'lockutils'@'%' IDENTIFIED BY '{MYSQL_PASSWORD}';\n\
         GRANT ALL ON *.* TO 'lockutils'@'%' WITH GRANT OPTION;\n"
    );
    std::fs::write(&init, sql).expect("write init.sql");
    user.chown(&init);
    let port = free_port();
    let socket = dir.join("sock");
    let mut server = user.command(which("mariadbd", INSTALL));
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--init-file={}", init.display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--port={port}"))
        .args(["--skip-name-resolve", "--max-connections=400"])
        // A throwaway server: durability is not the point.
        .args([
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-buffer-pool-size=16M",
        ]);
    match tls {
        None => {
            server.arg("--bind-address=127.0.0.1");
        }
        Some(certs) => {
            for (from, option) in [
                (&certs.server_cert, "cert"),
                (&certs.server_key, "key"),
                (&certs.ca, "ca"),
            ] {
                let dest = dir.join(format!("ssl-{option}.pem"));
                std::fs::copy(from, &dest).expect("copy the server certificate");
                user.chown(&dest);
                server.arg(format!("--ssl-{option}={}", dest.display()));
            }
            server
                .arg("--bind-address=127.0.0.1,127.0.0.2")
                .arg("--require-secure-transport=ON");
        }
    }
    let (pid, log) = spawn_logged(server, "mariadbd", libc::SIGTERM, dir.clone());
    await_line(&log, "mariadbd", "ready for connections");
    Mariadb {
        url: format!("mysql://lockutils:{MYSQL_PASSWORD}@127.0.0.1:{port}/locks"),
        port,
        socket,
        pid,
    }
}

/// Runs `sql` with the `mariadb` client as root over `socket`.
pub fn mariadb_cli(socket: &Path, sql: &str) -> String {
    let out = Command::new(which("mariadb", INSTALL))
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["-u", "root", "-N", "-B", "-e", sql])
        .output()
        .expect("run mariadb");
    assert!(
        out.status.success(),
        "mariadb -e {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("mariadb output is UTF-8")
        .trim()
        .to_owned()
}
