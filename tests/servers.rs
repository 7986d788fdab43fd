//! The test servers themselves (`tests/support/servers.rs`): each starts,
//! serves what it should, and the TLS ones refuse plaintext and clients
//! without a certificate.
#![cfg(unix)]

#[path = "support/servers.rs"]
mod servers;

use std::process::Command;

/// `psql` over TCP to the TLS-only cluster with libpq's `sslmode`.
fn psql_tcp(host: &str, sslmode: &str) -> std::process::Output {
    let pg = servers::postgres_tls();
    let c = servers::certs();
    let conn = format!(
        "host={host} port={} user=postgres dbname=postgres sslmode={sslmode} sslrootcert={}",
        pg.port,
        c.ca.display()
    );
    Command::new(servers::pg_bin().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .arg(conn)
        .env("PGPASSWORD", servers::TLS_PG_PASSWORD)
        .output()
        .expect("run psql")
}

#[test]
fn the_tls_postgres_refuses_plaintext_and_serves_verified_tls() {
    let plain = psql_tcp("127.0.0.1", "disable");
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && err.contains("no encryption"),
        "{err}"
    );
    let tls = psql_tcp("localhost", "verify-full");
    assert!(
        tls.status.success(),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&tls.stdout).trim(), "t");
    // 127.0.0.2 is not in the server certificate.
    let wrong = psql_tcp("127.0.0.2", "verify-full");
    assert!(!wrong.status.success());
}

/// `etcdctl endpoint health` on the TLS etcd, with or without the client
/// certificate.
fn etcdctl_tls(with_cert: bool) -> std::process::Output {
    let c = servers::certs();
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints=https://127.0.0.1:{}",
            servers::etcd_tls()
        ))
        .arg(format!("--cacert={}", c.ca.display()))
        .arg("--command-timeout=3s");
    if with_cert {
        cmd.arg(format!("--cert={}", c.client_cert.display()))
            .arg(format!("--key={}", c.client_key.display()));
    }
    cmd.args(["put", "probe", "1"])
        .output()
        .expect("run etcdctl")
}

#[test]
fn the_tls_etcd_admits_only_clients_with_a_certificate() {
    assert!(!etcdctl_tls(false).status.success());
    let ok = etcdctl_tls(true);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn the_etcd_cluster_has_three_members() {
    let cluster = servers::etcd_cluster();
    let endpoints = cluster.url.replace("etcd://", "");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["member", "list"])
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[test]
fn redis_and_pgbouncer_answer() {
    assert_eq!(servers::redis_cli(servers::redis(), &["PING"]), "PONG");
    for mode in ["session", "transaction"] {
        let out = Command::new(servers::pg_bin().join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-d",
                servers::pgbouncer(mode),
                "-c",
                "SELECT 7",
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
    }
}

/// The `mariadb` client over TCP to the TLS-only MariaDB, with or without
/// TLS, asking for the session's `Ssl_cipher`.
fn mariadb_tcp(tls: bool) -> std::process::Output {
    let server = servers::mariadb_tls();
    let mut cmd = Command::new("mariadb");
    cmd.args(["--no-defaults", "-h", "127.0.0.1", "-N", "-B"])
        .arg(format!("--port={}", server.port))
        .args(["-u", "lockutils"])
        .arg(format!("--password={}", servers::MYSQL_PASSWORD));
    if tls {
        let ca = servers::certs().ca.display().to_string();
        cmd.arg(format!("--ssl-ca={ca}"))
            .arg("--ssl-verify-server-cert");
    } else {
        cmd.arg("--skip-ssl");
    }
    cmd.args(["-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'"])
        .output()
        .expect("run mariadb")
}

#[test]
fn the_mariadb_servers_answer_and_the_tls_one_refuses_plaintext() {
    assert_eq!(servers::mariadb().sql("SELECT 7"), "7");
    assert!(!mariadb_tcp(false).status.success());
    let tls = mariadb_tcp(true);
    assert!(
        tls.status.success(),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
    let status = String::from_utf8_lossy(&tls.stdout);
    let cipher = status.trim().split('\t').nth(1).unwrap_or_default();
    assert!(!cipher.is_empty(), "no TLS cipher: {status:?}");
}
