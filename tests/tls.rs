//! TLS to the lock servers (features `postgres`, `etcd`, `redis`), against
//! a TLS-only PostgreSQL (pg_hba `hostssl`, SCRAM password) and an etcd that
//! demands client certificates, both started for this test binary with
//! certificates made at test time (`tests/support/servers_more.rs`). The
//! server certificate names `localhost` and `127.0.0.1`; both servers also
//! listen on `127.0.0.2`, a name the certificate does not carry. More
//! servers (PostgreSQL, etcd, Redis) present a self-signed certificate made
//! as PostgreSQL's manual makes one, which the clients trust as its own
//! root; the engines' own clients (psql, etcdctl, redis-cli) are asked the
//! same questions beside lockutils.
#![cfg(all(unix, feature = "postgres", feature = "etcd"))]

#[path = "support/servers.rs"]
mod servers;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use lockutils::LockError;
use servers::{TLS_PG_PASSWORD, certs, psql_socket};
use support::{param, report, running_as};

/// A TLS URL of the TLS-only PostgreSQL: `host`, `query` appended, with
/// the password unless `password` is false.
fn pg_url(host: &str, password: bool, query: &str) -> String {
    let pg = servers::postgres_tls();
    let auth = if password {
        format!("postgres:{TLS_PG_PASSWORD}")
    } else {
        "postgres".to_owned()
    };
    format!("postgres://{auth}@{host}:{}/postgres?{query}", pg.port)
}

fn verify_full(root: &Path) -> String {
    format!("sslmode=verify-full&sslrootcert={}", root.display())
}

/// Takes and releases `name` on `url`: the error if it could not.
fn try_lock(url: &str, name: &str) -> Result<Duration, LockError> {
    let started = Instant::now();
    let guard = lockutils::lock(name).external().backend(url).acquire()?;
    let took = started.elapsed();
    assert!(!guard.is_lost());
    Ok(took)
}

/// The `cause` of a `LockError::Backend` for `name` on `url`, after
/// checking the rest of it (no password anywhere).
fn failure(url: &str, name: &str) -> (String, String) {
    let e = try_lock(url, name).expect_err("the lock was taken");
    let text = e.to_string();
    assert!(!text.contains(TLS_PG_PASSWORD), "{text}");
    match e {
        LockError::Backend {
            name: n,
            op,
            cause,
            backend,
        } => {
            // Configuration errors come before any lock is named.
            assert!(n == name || op == "configure", "{n}");
            assert!(!backend.contains(TLS_PG_PASSWORD), "{backend}");
            println!("{name}: {op}: {cause}");
            (op.to_owned(), cause)
        }
        other => panic!("expected LockError::Backend, got {other:?}"),
    }
}

/// Whether the session holding the advisory lock `objid` on the TLS
/// server is encrypted, as the server sees it.
fn holder_is_encrypted(objid: &str) -> String {
    let pg = servers::postgres_tls();
    let sql = format!(
        "SELECT string_agg(s.ssl::text, ',') FROM pg_locks l JOIN pg_stat_ssl s USING (pid) \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objid = {objid}"
    );
    psql_socket(&pg.socket_dir, pg.port, &sql)
}

#[test]
fn pg_verify_full_works_and_the_session_is_encrypted() {
    let url = pg_url("localhost", true, &verify_full(&certs().ca));
    let guard = lockutils::lock("tls-pg-full")
        .external()
        .backend(&url)
        .acquire()
        .unwrap();
    let describe = guard.location().unwrap().to_string();
    assert!(!describe.contains(TLS_PG_PASSWORD), "{describe}");
    let objid = describe
        .split("objid ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert_eq!(holder_is_encrypted(objid), "true");
    drop(guard);
}

#[test]
fn pg_require_and_verify_ca_accept_a_name_the_certificate_lacks() {
    // libpq's meanings: neither checks the host name.
    let ca = certs().ca.display().to_string();
    let verify_ca = pg_url(
        "127.0.0.2",
        true,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    try_lock(&verify_ca, "tls-pg-ca").unwrap();
    try_lock(&pg_url("127.0.0.2", true, "sslmode=require"), "tls-pg-req").unwrap();
    // require with a root checks the chain, as verify-ca does.
    let other = certs().other_ca.display().to_string();
    let req_root = pg_url(
        "127.0.0.2",
        true,
        &format!("sslmode=require&sslrootcert={other}"),
    );
    let (_, cause) = failure(&req_root, "tls-pg-req-root");
    assert!(cause.contains("UnknownIssuer"), "{cause}");
}

#[test]
fn pg_verify_full_refuses_a_wrong_host_name_and_an_unknown_ca() {
    let wrong_host = pg_url("127.0.0.2", true, &verify_full(&certs().ca));
    let (op, cause) = failure(&wrong_host, "tls-pg-wrong-host");
    assert_eq!(op, "connect");
    assert!(
        cause.contains("TLS") && cause.contains("not valid for"),
        "{cause}"
    );
    let unknown_ca = pg_url("localhost", true, &verify_full(&certs().other_ca));
    let (_, cause) = failure(&unknown_ca, "tls-pg-unknown-ca");
    assert!(cause.contains("UnknownIssuer"), "{cause}");
}

#[test]
fn pg_tls_asked_of_a_plaintext_server_is_refused_not_downgraded() {
    let plain = servers::postgres();
    let url = format!("{plain}?{}", verify_full(&certs().ca));
    let (op, cause) = failure(&url, "tls-pg-plain-server");
    assert_eq!(op, "connect");
    assert!(cause.contains("does not support TLS"), "{cause}");
}

#[test]
fn pg_plaintext_to_the_tls_only_server_is_refused_by_the_server() {
    let url = pg_url("127.0.0.1", true, "sslmode=disable");
    let (_, cause) = failure(&url, "tls-pg-plaintext");
    assert!(cause.contains("no encryption"), "{cause}");
}

#[test]
fn pg_bad_tls_settings_are_configuration_errors() {
    for (query, why) in [
        ("sslmode=prefer", "plaintext"),
        ("sslmode=verify-full", "sslrootcert"),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "/nonexistent/ca.pem",
        ),
    ] {
        let (op, cause) = failure(&pg_url("localhost", true, query), "tls-pg-config");
        assert_eq!(op, "configure");
        assert!(cause.contains(why), "{query}: {cause}");
    }
}

/// Child: takes a lock on `URL` (for PostgreSQL, the password may be in
/// `PGPASSWORD` instead); reports the outcome.
#[test]
fn child_tls_pg_lock() {
    if !running_as("child_tls_pg_lock") {
        return;
    }
    let r = try_lock(&param("URL"), "tls-pg-env");
    report(support::outcome(&r));
}

#[test]
fn pg_password_from_pgpassword_and_a_wrong_one_is_not_shown() {
    let url = pg_url("localhost", false, &verify_full(&certs().ca));
    let mut ok = support::child("child_tls_pg_lock")
        .param("URL", &url)
        .env("PGPASSWORD", TLS_PG_PASSWORD)
        .spawn();
    assert_eq!(ok.next_report(), "ok");
    ok.finish();
    let mut bad = support::child("child_tls_pg_lock")
        .param("URL", &url)
        .env("PGPASSWORD", "wrong-pw-x")
        .spawn();
    let got = bad.next_report();
    bad.finish();
    assert!(got.contains("password authentication failed"), "{got}");
    assert!(!got.contains("wrong-pw-x"), "{got}");
}

// ---------------------------------------------------------------------------
// etcd with client certificates.

/// An etcd URL of the TLS etcd on `host` with `query`.
fn etcd_url(host: &str, query: &str) -> String {
    format!("etcd://{host}:{}/tls?{query}", servers::etcd_tls())
}

fn mutual(ca: &Path) -> String {
    let c = certs();
    format!(
        "cacert={}&cert={}&key={}",
        ca.display(),
        c.client_cert.display(),
        c.client_key.display()
    )
}

#[test]
fn etcd_with_a_client_certificate_works() {
    let url = etcd_url("localhost", &mutual(&certs().ca));
    let guard = lockutils::lock("tls-etcd")
        .external()
        .backend(&url)
        .acquire()
        .unwrap();
    assert!(guard.fencing_token().is_some());
    drop(guard);
    let ip = etcd_url("127.0.0.1", &mutual(&certs().ca));
    try_lock(&ip, "tls-etcd-ip").unwrap();
}

#[test]
fn etcd_refuses_a_wrong_host_an_unknown_ca_and_a_missing_client_certificate() {
    let ca = certs().ca.display().to_string();
    let cases = [
        (etcd_url("127.0.0.2", &mutual(&certs().ca)), "not valid for"),
        (
            etcd_url("localhost", &mutual(&certs().other_ca)),
            "UnknownIssuer",
        ),
        (
            etcd_url("localhost", &format!("cacert={ca}")),
            "no client certificate",
        ),
    ];
    for (url, why) in cases {
        let started = Instant::now();
        let (_, cause) = failure(&url, "tls-etcd-bad");
        assert!(cause.contains(why), "{url}: {cause}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }
}

#[test]
fn etcd_tls_asked_of_a_plaintext_server_is_refused() {
    let plain = servers::etcd();
    let url = format!("{plain}?cacert={}", certs().ca.display());
    let (_, cause) = failure(&url, "tls-etcd-plain-server");
    // tonic says "tls handshake eof" or "connection reset by peer",
    // depending on a race with the server's close; the hint covers both.
    assert!(cause.contains("does the server speak TLS?"), "{cause}");
}

// ---------------------------------------------------------------------------
// Every URL form through `LOCKUTILS_BACKEND`: exact across processes.

const ENV_PROCESSES: usize = 3;
const ENV_THREADS: usize = 2;
const ENV_INCREMENTS: u64 = 20;

/// Child: its lock server comes from `$LOCKUTILS_BACKEND` (set by the
/// parent); `ENV_THREADS` threads each increment the counter file
/// `ENV_INCREMENTS` times under the external lock `NAME`.
#[test]
fn child_env_counter() {
    if !running_as("child_env_counter") {
        return;
    }
    let counter = std::path::PathBuf::from(param("COUNTER"));
    let name = param("NAME");
    support::await_go();
    std::thread::scope(|s| {
        for _ in 0..ENV_THREADS {
            s.spawn(|| {
                for _ in 0..ENV_INCREMENTS {
                    let guard = lockutils::lock(&name).external().acquire().unwrap();
                    support::increment(&counter);
                    drop(guard);
                }
            });
        }
    });
    report("done");
}

#[test]
fn every_tls_and_cluster_url_in_lockutils_backend_gives_an_exact_counter() {
    let c = certs();
    let mut forms = vec![
        (
            "pg-verify-full",
            pg_url("localhost", true, &verify_full(&c.ca)),
        ),
        ("etcd-mutual-tls", etcd_url("localhost", &mutual(&c.ca))),
        ("etcd-cluster", servers::etcd_cluster().url.clone()),
    ];
    if cfg!(feature = "redis") {
        let port = servers::redis_tls();
        forms.push((
            "rediss",
            format!("rediss://localhost:{port}/0?cacert={}", c.ca.display()),
        ));
    }
    for (what, url) in forms {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("counter");
        let mut children: Vec<support::Child> = (0..ENV_PROCESSES)
            .map(|_| {
                support::child("child_env_counter")
                    .env(lockutils::config::BACKEND_ENV, &url)
                    .param("COUNTER", &counter)
                    .param("NAME", format!("env-counter-{what}"))
                    .spawn()
            })
            .collect();
        let started = support::ready_set_go(&mut children);
        let took = support::all_done(children, started);
        let want = (ENV_PROCESSES * ENV_THREADS) as u64 * ENV_INCREMENTS;
        assert_eq!(
            support::read_counter(&counter),
            want,
            "{what}: lost increments, holders overlapped"
        );
        println!("{what}: {want} increments across {ENV_PROCESSES} processes in {took:?}");
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL's manual's self-signed certificate, trusted as its own root;
// the system's roots.

/// A URL of the TLS-only cluster whose certificate is the manual's
/// self-signed one, on `host`, with the password and `query`.
fn self_signed_url(host: &str, query: &str) -> String {
    let pg = servers::postgres_tls_self_signed();
    format!(
        "postgres://postgres:{TLS_PG_PASSWORD}@{host}:{}/postgres?{query}",
        pg.port
    )
}

/// Whether psql (libpq) connects with the URL `url`: its error if not.
fn psql_connects(url: &str) -> Result<(), String> {
    let out = std::process::Command::new(servers::pg_bin().join("psql"))
        .args(["-X", "-A", "-t", "-q", "-d", url, "-c", "SELECT 1"])
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Before: every case that psql accepts failed here with
/// `invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`, and
/// the certificate's name (a common name, no alternative names) matched
/// nothing.
#[test]
fn pg_the_manuals_self_signed_certificate_is_accepted_where_psql_accepts_it() {
    let cert = &servers::self_signed().cert;
    // What the case is about: a CA certificate, named only by its CN.
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(text.contains("CN = localhost"), "{text}");

    let own = cert.display().to_string();
    let other = certs().other_ca.display().to_string();
    for (host, mode, root, accepted) in [
        ("localhost", "verify-full", &own, true),
        ("localhost", "verify-ca", &own, true),
        ("localhost", "require", &own, true),
        // The name is the certificate's common name only.
        ("127.0.0.2", "verify-full", &own, false),
        ("127.0.0.2", "verify-ca", &own, true),
        // Another root: nothing vouches for this certificate.
        ("localhost", "verify-full", &other, false),
        ("localhost", "verify-ca", &other, false),
    ] {
        let url = self_signed_url(host, &format!("sslmode={mode}&sslrootcert={root}"));
        let case = format!("sslmode={mode} to {host} trusting {root}");
        let psql = psql_connects(&url);
        assert_eq!(psql.is_ok(), accepted, "psql, {case}: {psql:?}");
        let ours = try_lock(&url, "tls-pg-self-signed");
        assert_eq!(ours.is_ok(), accepted, "lockutils, {case}: {ours:?}");
        if let Err(e) = ours {
            println!("{case}: {e}");
        }
    }
}

/// `sslrootcert=system` in a child whose system roots (`SSL_CERT_FILE`,
/// which OpenSSL and rustls-native-certs read) are the file `roots`: what
/// locking `url` came to.
fn with_system_roots(url: &str, roots: &Path) -> String {
    let mut c = support::child("child_tls_pg_lock")
        .param("URL", url)
        .env("SSL_CERT_FILE", roots)
        .env_remove("SSL_CERT_DIR")
        .spawn();
    let got = c.next_report();
    c.finish();
    got
}

/// Before: `sslrootcert=system` was read as a file named `system`.
#[test]
fn pg_sslrootcert_system_trusts_the_systems_roots_and_means_verify_full() {
    let c = certs();
    let own = &servers::self_signed().cert;
    let system = "sslrootcert=system";
    assert_eq!(
        with_system_roots(&self_signed_url("localhost", system), own),
        "ok"
    );
    assert_eq!(
        with_system_roots(&pg_url("localhost", true, system), &c.ca),
        "ok"
    );
    // verify-full, as libpq makes it: the name is checked.
    let wrong_host = with_system_roots(&pg_url("127.0.0.2", true, system), &c.ca);
    assert!(wrong_host.contains("not valid for"), "{wrong_host}");
    let unknown = with_system_roots(&pg_url("localhost", true, system), &c.other_ca);
    assert!(unknown.contains("UnknownIssuer"), "{unknown}");
    let weaker = pg_url("localhost", true, "sslrootcert=system&sslmode=verify-ca");
    let (op, cause) = failure(&weaker, "tls-pg-system-weaker");
    assert_eq!(op, "configure");
    assert!(cause.contains("verify-full"), "{cause}");
}

// ---------------------------------------------------------------------------
// etcd and Redis with a self-signed server certificate trusted as its own
// root (made as PostgreSQL's manual makes one, with the alternative names
// Go requires).

/// Whether etcdctl (Go) reads from the etcd at `host:port` trusting
/// `cacert`: its error if not.
fn etcdctl_connects(host: &str, port: u16, cacert: &Path) -> Result<(), String> {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{host}:{port}"))
        .arg(format!("--cacert={}", cacert.display()))
        .args(["--dial-timeout=3s", "get", "x"])
        .output()
        .expect("run etcdctl (apt-get install etcd-client)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Whether redis-cli (OpenSSL) pings the Redis at `host:port` trusting
/// `cacert`: its error if not.
fn redis_cli_connects(host: &str, port: u16, cacert: &Path) -> Result<(), String> {
    let out = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(cacert)
        .args(["-h", host, "-p", &port.to_string(), "PING"])
        .output()
        .expect("run redis-cli (apt-get install redis-tools)");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && said == "PONG" {
        Ok(())
    } else {
        Err(format!(
            "{said} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Before: refused with `CaUsedAsEndEntity` where etcdctl connects.
#[test]
fn etcd_a_self_signed_certificate_trusted_as_its_own_root_is_accepted() {
    let port = servers::etcd_tls_self_signed();
    let own = servers::self_signed_san().cert.clone();
    let other = certs().other_ca.clone();
    for (host, root, accepted) in [
        ("localhost", &own, true),
        ("127.0.0.1", &own, true),
        ("127.0.0.2", &own, false),
        ("localhost", &other, false),
    ] {
        let case = format!("{host} trusting {}", root.display());
        let theirs = etcdctl_connects(host, port, root);
        assert_eq!(theirs.is_ok(), accepted, "etcdctl, {case}: {theirs:?}");
        let url = format!("etcd://{host}:{port}/self?cacert={}", root.display());
        let ours = try_lock(&url, "tls-etcd-self-signed");
        assert_eq!(ours.is_ok(), accepted, "lockutils, {case}: {ours:?}");
    }
}

/// Before: refused with `CaUsedAsEndEntity` where redis-cli connects.
#[test]
fn redis_a_self_signed_certificate_trusted_as_its_own_root_is_accepted() {
    if !cfg!(feature = "redis") {
        panic!("run the TLS tests with --all-features (the Redis backend is a feature)");
    }
    let port = servers::redis_tls_self_signed();
    let own = servers::self_signed_san().cert.clone();
    let other = certs().other_ca.clone();
    for (host, root, accepted) in [
        ("localhost", &own, true),
        ("127.0.0.1", &own, true),
        ("localhost", &other, false),
    ] {
        let case = format!("{host} trusting {}", root.display());
        let theirs = redis_cli_connects(host, port, root);
        assert_eq!(theirs.is_ok(), accepted, "redis-cli, {case}: {theirs:?}");
        let url = format!("rediss://{host}:{port}/0?cacert={}", root.display());
        let ours = try_lock(&url, "tls-redis-self-signed");
        assert_eq!(ours.is_ok(), accepted, "lockutils, {case}: {ours:?}");
    }
    // A name the certificate lacks: refused (redis-cli does not check
    // names at all).
    let url = format!("rediss://127.0.0.2:{port}/0?cacert={}", own.display());
    let (_, cause) = failure(&url, "tls-redis-self-signed-name");
    assert!(cause.contains("not valid for"), "{cause}");
}

/// `rediss://` without `cacert` trusts the system's roots (here
/// `SSL_CERT_FILE`, in a child). Before: the self-signed server, in the
/// system's roots, was refused (`CaUsedAsEndEntity`).
#[test]
fn redis_without_cacert_trusts_the_systems_roots() {
    let own = &servers::self_signed_san().cert;
    let url = format!("rediss://localhost:{}/0", servers::redis_tls_self_signed());
    assert_eq!(with_system_roots(&url, own), "ok");
    let unknown = with_system_roots(&url, &certs().other_ca);
    assert!(unknown.contains("UnknownIssuer"), "{unknown}");
    let ca_signed = format!("rediss://localhost:{}/0", servers::redis_tls());
    assert_eq!(with_system_roots(&ca_signed, &certs().ca), "ok");
}
