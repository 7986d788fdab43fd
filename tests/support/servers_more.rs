//! More throwaway servers (part of `servers.rs`): test certificates, an
//! etcd that demands client certificates, a 3-member etcd cluster,
//! redis-server, and pgbouncer in front of the test PostgreSQL.
//!
//! Certificates are made at test time with the `openssl` command: a CA, a
//! server certificate for `localhost` and `127.0.0.1` (not `127.0.0.2`,
//! where the TLS servers also listen, so a wrong host name can be tested
//! on the same server), a client certificate, and a second CA that signed
//! none of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{RunAs, await_line, free_port, postgres, server_dir, spawn_logged, start, which};

/// The certificates of the TLS tests (PEM files).
pub struct Certs {
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: verifying against it must fail.
    pub other_ca: PathBuf,
}

/// The test certificates, made on first use.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(make_certs)
}

fn make_certs() -> Certs {
    let dir = server_dir("certs", &RunAs(None));
    let certs = Certs {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        other_ca: dir.join("other-ca.pem"),
        dir,
    };
    let ca_key = certs.dir.join("ca.key");
    let ca = ["-addext", "basicConstraints=critical,CA:TRUE"];
    openssl(&certs.ca, &ca_key, "lockutils-test-ca", &ca, None);
    let other_key = certs.dir.join("other-ca.key");
    openssl(&certs.other_ca, &other_key, "lockutils-other-ca", &ca, None);
    let leaf = |san: &str| {
        [
            "-addext".to_owned(),
            "basicConstraints=CA:FALSE".to_owned(),
            "-addext".to_owned(),
            "extendedKeyUsage=serverAuth,clientAuth".to_owned(),
            "-addext".to_owned(),
            format!("subjectAltName={san}"),
        ]
    };
    let signer = Some((certs.ca.as_path(), ca_key.as_path()));
    let server = leaf("DNS:localhost,IP:127.0.0.1");
    let server: Vec<&str> = server.iter().map(String::as_str).collect();
    openssl(
        &certs.server_cert,
        &certs.server_key,
        "localhost",
        &server,
        signer,
    );
    let client = leaf("DNS:lockutils-client");
    let client: Vec<&str> = client.iter().map(String::as_str).collect();
    openssl(
        &certs.client_cert,
        &certs.client_key,
        "root",
        &client,
        signer,
    );
    certs
}

/// A self-signed server certificate and its key.
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A server certificate made as PostgreSQL's manual makes one ("Creating
/// Certificates"): `openssl req -new -x509 -days 365 -nodes -text -out
/// server.crt -keyout server.key -subj "/CN=dbhost.yourdomain.com"`, with
/// `localhost` as the name. OpenSSL gives it an RSA key, its default
/// `v3_ca` extensions (`CA:TRUE`) and no subject alternative name; the
/// client is to trust this very file as its root. Made on first use.
pub fn self_signed() -> &'static SelfSigned {
    static CERT: OnceLock<SelfSigned> = OnceLock::new();
    CERT.get_or_init(|| make_self_signed("selfsigned", &[]))
}

/// [`self_signed`] with subject alternative names too (`localhost`,
/// `127.0.0.1`), which Go's clients (etcdctl) require: the same command
/// with `-addext subjectAltName=DNS:localhost,IP:127.0.0.1`.
pub fn self_signed_san() -> &'static SelfSigned {
    static CERT: OnceLock<SelfSigned> = OnceLock::new();
    CERT.get_or_init(|| {
        let san = ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"];
        make_self_signed("selfsigned-san", &san)
    })
}

fn make_self_signed(kind: &str, extra: &[&str]) -> SelfSigned {
    let dir = server_dir(kind, &RunAs(None));
    let c = SelfSigned {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    let out = Command::new(which("openssl", "apt-get install openssl"))
        .args(["req", "-new", "-x509", "-days", "365", "-nodes", "-text"])
        .arg("-out")
        .arg(&c.cert)
        .arg("-keyout")
        .arg(&c.key)
        .args(["-subj", "/CN=localhost"])
        .args(extra)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req -new -x509 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c
}

/// Makes a P-256 key and a certificate for `cn`: self-signed, or signed by
/// `signer` (certificate, key).
fn openssl(cert: &Path, key: &Path, cn: &str, extra: &[&str], signer: Option<(&Path, &Path)>) {
    let mut cmd = Command::new(which("openssl", "apt-get install openssl"));
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .args(extra);
    if let Some((ca, ca_key)) = signer {
        cmd.arg("-CA").arg(ca).arg("-CAkey").arg(ca_key);
    }
    let out = cmd.output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req for {cn} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// etcd: with client certificates; a cluster.

/// One etcd member: its name, client and peer URLs.
fn etcd_member(name: &str, dir: &Path, client_urls: &str, advertise: &str, peer: &str) -> Command {
    let mut cmd = Command::new(which("etcd", "apt-get install etcd-server"));
    cmd.args(["--name", name, "--data-dir"])
        .arg(dir.join(name))
        .args(["--listen-client-urls", client_urls])
        .args(["--advertise-client-urls", advertise])
        .args(["--listen-peer-urls", peer])
        .args(["--initial-advertise-peer-urls", peer]);
    cmd
}

/// The port of an etcd that speaks only TLS with the test server
/// certificate on 127.0.0.1 and 127.0.0.2 and admits only clients with a
/// certificate signed by the test CA; started on first use.
pub fn etcd_tls() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let c = certs();
        let dir = server_dir("etcdtls", &RunAs(None));
        let (port, peer) = (free_port(), free_port());
        let listen = format!("https://127.0.0.1:{port},https://127.0.0.2:{port}");
        let advertise = format!("https://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let mut cmd = etcd_member("tls", &dir, &listen, &advertise, &peer);
        cmd.arg(format!("--initial-cluster=tls={peer}"))
            .arg("--cert-file")
            .arg(&c.server_cert)
            .arg("--key-file")
            .arg(&c.server_key)
            .arg("--trusted-ca-file")
            .arg(&c.ca)
            .arg("--client-cert-auth");
        let ready = "ready to serve client requests";
        start(cmd, "etcd (TLS)", ready, libc::SIGTERM, dir);
        port
    })
}

/// The port of an etcd that speaks only TLS, with [`self_signed_san`]'s
/// certificate, on 127.0.0.1 and 127.0.0.2 (no client certificates);
/// started on first use.
pub fn etcd_tls_self_signed() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let c = self_signed_san();
        let dir = server_dir("etcdtls-self", &RunAs(None));
        let (port, peer) = (free_port(), free_port());
        let listen = format!("https://127.0.0.1:{port},https://127.0.0.2:{port}");
        let advertise = format!("https://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let mut cmd = etcd_member("tlsself", &dir, &listen, &advertise, &peer);
        cmd.arg(format!("--initial-cluster=tlsself={peer}"))
            .arg("--cert-file")
            .arg(&c.cert)
            .arg("--key-file")
            .arg(&c.key);
        let ready = "ready to serve client requests";
        start(cmd, "etcd (TLS, self-signed)", ready, libc::SIGTERM, dir);
        port
    })
}

/// A 3-member etcd cluster on loopback.
pub struct EtcdCluster {
    /// `etcd://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C`.
    pub url: String,
    /// Each member's client port and process id.
    pub members: Vec<(u16, i32)>,
}

/// The 3-member cluster, started on first use. Short heartbeats and
/// elections (50 ms / 500 ms) so that losing the leader costs little time.
pub fn etcd_cluster() -> &'static EtcdCluster {
    static CLUSTER: OnceLock<EtcdCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = server_dir("etcd3", &RunAs(None));
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let initial = initial.join(",");
        let mut logs = Vec::new();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let name = format!("m{i}");
            let mut cmd = etcd_member(&name, &dir, &client_url, &client_url, &peer_url);
            cmd.arg(format!("--initial-cluster={initial}"))
                .args(["--initial-cluster-token", "lockutils-test"])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"]);
            // Each member removes its own data; the last, stopped last, all.
            let data = if i == 2 { dir.clone() } else { dir.join(&name) };
            let (pid, log) = spawn_logged(cmd, "etcd member", libc::SIGTERM, data);
            logs.push(log);
            members.push((*client, pid));
        }
        // A member is ready once the cluster has a leader: all start first.
        for log in &logs {
            await_line(log, "etcd member", "ready to serve client requests");
        }
        let hosts: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("127.0.0.1:{c}"))
            .collect();
        EtcdCluster {
            url: format!("etcd://{}", hosts.join(",")),
            members,
        }
    })
}

// ---------------------------------------------------------------------------
// Redis.

/// A redis-server of its own (not shared): its URL and process id, to
/// kill it under a holder.
pub struct Redis {
    pub url: String,
    pub pid: i32,
}

/// Starts a redis-server on a free loopback port: no persistence.
pub fn start_redis() -> Redis {
    let dir = server_dir("redis", &RunAs(None));
    let port = free_port();
    let mut cmd = Command::new(which("redis-server", "apt-get install redis-server"));
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir);
    let pid = start(
        cmd,
        "redis-server",
        "Ready to accept connections",
        libc::SIGTERM,
        dir,
    );
    Redis {
        url: format!("redis://127.0.0.1:{port}/0"),
        pid,
    }
}

/// The port of a redis-server that speaks only TLS (the test server
/// certificate, on 127.0.0.1 and 127.0.0.2; client certificates optional);
/// started on first use.
pub fn redis_tls() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let c = certs();
        let dir = server_dir("redistls", &RunAs(None));
        let port = free_port();
        let mut cmd = Command::new(which("redis-server", "apt-get install redis-server"));
        cmd.args(["--bind", "127.0.0.1 127.0.0.2", "--port", "0"])
            .args([
                "--tls-port",
                &port.to_string(),
                "--tls-auth-clients",
                "optional",
            ])
            .arg("--tls-cert-file")
            .arg(&c.server_cert)
            .arg("--tls-key-file")
            .arg(&c.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&c.ca)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir);
        let ready = "Ready to accept connections";
        start(cmd, "redis-server (TLS)", ready, libc::SIGTERM, dir);
        port
    })
}

/// The port of a redis-server that speaks only TLS with
/// [`self_signed_san`]'s certificate, on 127.0.0.1 and 127.0.0.2 (no
/// client certificates); started on first use.
pub fn redis_tls_self_signed() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let c = self_signed_san();
        let dir = server_dir("redistls-self", &RunAs(None));
        let port = free_port();
        let mut cmd = Command::new(which("redis-server", "apt-get install redis-server"));
        cmd.args(["--bind", "127.0.0.1 127.0.0.2", "--port", "0"])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&c.cert)
            .arg("--tls-key-file")
            .arg(&c.key)
            .arg("--tls-ca-cert-file")
            .arg(&c.cert)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir);
        let ready = "Ready to accept connections";
        start(
            cmd,
            "redis-server (TLS, self-signed)",
            ready,
            libc::SIGTERM,
            dir,
        );
        port
    })
}

/// The shared redis-server's URL (`redis://127.0.0.1:PORT/0`), started on
/// first use; [`REDIS_ENV`](super::REDIS_ENV) names one started elsewhere.
pub fn redis() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| std::env::var(super::REDIS_ENV).unwrap_or_else(|_| start_redis().url))
}

/// Runs `redis-cli` with `args` against `url`; its standard output.
pub fn redis_cli(url: &str, args: &[&str]) -> String {
    let out = Command::new(which("redis-cli", "apt-get install redis-tools"))
        .args(["-u", url])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("redis-cli output is UTF-8")
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------
// pgbouncer.

/// A pgbouncer in `mode` (`session` or `transaction`) in front of
/// [`postgres`]; its URL (`postgres://postgres@127.0.0.1:PORT/postgres`).
/// Started once per mode.
pub fn pgbouncer(mode: &str) -> &'static str {
    static SESSION: OnceLock<String> = OnceLock::new();
    static TRANSACTION: OnceLock<String> = OnceLock::new();
    let cell = match mode {
        "session" => &SESSION,
        "transaction" => &TRANSACTION,
        other => panic!("pool mode {other:?}"),
    };
    cell.get_or_init(|| start_pgbouncer(mode, ""))
}

/// A pgbouncer in transaction mode that hands out its idle server
/// connections in turn (`server_round_robin = 1`, FIFO); `postgres` may
/// use its admin console (the database `pgbouncer`). Started once.
pub fn pgbouncer_round_robin() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let extra = "server_round_robin = 1\nadmin_users = postgres\n";
        start_pgbouncer("transaction", extra)
    })
}

fn start_pgbouncer(mode: &str, extra: &str) -> String {
    let server = postgres();
    let pg_port = server
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap();
    // pgbouncer refuses to run as root.
    let user = RunAs::pick();
    let kind = if extra.is_empty() { mode } else { "custom" };
    let dir = server_dir(&format!("pgbouncer-{kind}"), &user);
    let port = free_port();
    let users = dir.join("users.txt");
    std::fs::write(&users, "\"postgres\" \"\"\n").expect("write the auth file");
    let config = format!(
        "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\n\
         listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {}\npool_mode = {mode}\n\
         max_client_conn = 400\ndefault_pool_size = 100\nlogfile =\npidfile =\n{extra}",
        users.display()
    );
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(&ini, config).expect("write pgbouncer.ini");
    let mut cmd = user.command(which("pgbouncer", "apt-get install pgbouncer"));
    cmd.arg(&ini);
    start(cmd, "pgbouncer", "process up", libc::SIGINT, dir);
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}
