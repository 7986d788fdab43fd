//! The `mysql://` URL: connection, TLS with MySQL's own option names, and
//! the settings of the lock sessions.
//!
//! `mysql://[user[:password]@]host[:port][/database][?option=value&...]`
//!
//! | `ssl-mode` | encrypted | chain checked against `ssl-ca` | host name checked |
//! |---|---|---|---|
//! | absent without `ssl-ca`, `DISABLED` | no | – | – |
//! | `REQUIRED` | yes | only if `ssl-ca` is given (then as `VERIFY_CA`) | no |
//! | absent with `ssl-ca`, `VERIFY_CA` | yes | yes (`ssl-ca` required) | no |
//! | `VERIFY_IDENTITY` | yes | yes (`ssl-ca` required) | yes |
//!
//! `PREFERRED` is refused: it may end up in plaintext, and a lock URL that
//! asks for TLS never gets less; a server without TLS is an error. Only
//! the CA in `ssl-ca` is trusted (the client's built-in web roots are
//! switched off). `ssl-cert` and `ssl-key` present a client certificate.
//! The option files' underscore spellings (`ssl_mode`, `ssl_ca`, ...) are
//! accepted too. The stack is rustls (ring), in `mysql_async`.
//!
//! `VERIFY_CA` goes through a probe handshake first (`mysql_tls.rs`):
//! `mysql_async` cannot leave the host-name check out on rustls 0.23.
//!
//! Ours: `wait_timeout=SECONDS` (default [`DEFAULT_WAIT_TIMEOUT`]): the
//! server's idle limit for our sessions, see `mysql.rs`;
//! `connect_timeout=SECONDS` (default 5); `compat=tooz` (see `tooz.rs`).
//! Anything else is an error: a misspelt TLS option must not silently
//! mean plaintext.

use std::path::Path;
use std::time::Duration;

use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};

use super::mysql_tls::Probe;
use super::server::error_chain;
use super::tooz::{self, Scheme};

/// The server's idle limit for our sessions when the URL gives none, in
/// seconds.
pub(crate) const DEFAULT_WAIT_TIMEOUT: u64 = 10;

/// How long connecting may take when the URL gives no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disabled,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// What a `mysql://` URL asks for.
pub(crate) struct Settings {
    pub(crate) opts: Opts,
    pub(crate) mode: SslMode,
    pub(crate) wait_timeout: u64,
    pub(crate) connect_timeout: Duration,
    pub(crate) scheme: Scheme,
    /// `VERIFY_CA`: how to learn the name the sessions check (`mysql_tls.rs`).
    pub(crate) probe: Option<Probe>,
}

/// Parses `url`; reads the certificate files it names. `Err`: what is
/// wrong with it.
pub(crate) fn parse(url: &str) -> Result<Settings, String> {
    let (url, scheme) = tooz::take_compat(url)?;
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut mode = None;
    let (mut ca, mut cert, mut key) = (None, None, None);
    let mut wait_timeout = DEFAULT_WAIT_TIMEOUT;
    let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name.replace('_', "-").as_str() {
            "ssl-mode" => mode = Some(ssl_mode(value)?),
            "ssl-ca" => ca = Some(read("ssl-ca", value)?),
            "ssl-cert" => cert = Some(read("ssl-cert", value)?),
            "ssl-key" => key = Some(read("ssl-key", value)?),
            "wait-timeout" => wait_timeout = seconds(name, value, 31_536_000)?,
            "connect-timeout" => connect_timeout = Duration::from_secs(seconds(name, value, 3600)?),
            _ => {
                return Err(format!(
                    "unknown option {name:?}: expected ssl-mode, ssl-ca, ssl-cert, ssl-key, \
                     wait_timeout, connect_timeout or compat"
                ));
            }
        }
    }
    let mode = match (mode, &ca) {
        (Some(SslMode::Required), Some(_)) | (None, Some(_)) => SslMode::VerifyCa,
        (Some(m), _) => m,
        (None, None) => SslMode::Disabled,
    };
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyIdentity) && ca.is_none() {
        return Err("ssl-mode=VERIFY_CA and VERIFY_IDENTITY need ssl-ca=PATH".into());
    }
    if mode == SslMode::Disabled && (ca.is_some() || cert.is_some() || key.is_some()) {
        return Err(
            "ssl-ca, ssl-cert and ssl-key need TLS, which ssl-mode=DISABLED turns off".into(),
        );
    }
    let pair = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("ssl-cert and ssl-key go together".into()),
    };
    let identity = pair
        .clone()
        .map(|(c, k)| ClientIdentity::new(c.into(), k.into()));
    let opts = Opts::from_url(base).map_err(|e| format!("not a MySQL URL: {}", error_chain(&e)))?;
    let mut builder = OptsBuilder::from_opts(opts)
        // On loopback the client would otherwise switch to the server's
        // unix socket, where TLS and the URL's address do not apply.
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(5)))
        .stmt_cache_size(0);
    let mut probe = None;
    if mode != SslMode::Disabled {
        let mut ssl = SslOpts::default().with_client_identity(identity);
        if let Some(ca) = ca {
            if mode == SslMode::VerifyCa {
                let opts: Opts = builder.clone().into();
                probe = Some(Probe {
                    host: opts.ip_or_hostname().to_owned(),
                    port: opts.tcp_port(),
                    ca: ca.clone(),
                    identity: pair,
                });
            }
            ssl = ssl
                .with_root_certs(vec![ca.into()])
                .with_disable_built_in_roots(true);
        }
        ssl = ssl.with_danger_accept_invalid_certs(mode == SslMode::Required);
        builder = builder.ssl_opts(ssl);
    }
    Ok(Settings {
        opts: builder.into(),
        mode,
        wait_timeout,
        connect_timeout,
        scheme,
        probe,
    })
}

fn ssl_mode(value: &str) -> Result<SslMode, String> {
    match value.to_ascii_uppercase().as_str() {
        "DISABLED" => Ok(SslMode::Disabled),
        "REQUIRED" => Ok(SslMode::Required),
        "VERIFY_CA" => Ok(SslMode::VerifyCa),
        "VERIFY_IDENTITY" => Ok(SslMode::VerifyIdentity),
        "PREFERRED" => Err(
            "ssl-mode=PREFERRED may connect in plaintext: use REQUIRED, VERIFY_CA or \
             VERIFY_IDENTITY (or DISABLED)"
                .into(),
        ),
        _ => Err(format!(
            "ssl-mode={value:?}: expected DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
        )),
    }
}

fn read(what: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("{what}={path}: cannot read it: {e}"))
}

fn seconds(name: &str, value: &str, max: u64) -> Result<u64, String> {
    value
        .parse()
        .ok()
        .filter(|s| (1..=max).contains(s))
        .ok_or_else(|| format!("{name}={value:?}: expected a number of seconds from 1 to {max}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_modes_follow_mysql() {
        let ca = std::env::temp_dir().join("lockutils-mysql-url-test-ca.pem");
        std::fs::write(&ca, b"not checked until connecting").unwrap();
        let ca = ca.display();
        let mode = |q: &str| parse(&format!("mysql://u:p@h/db?{q}")).map(|s| s.mode);
        assert_eq!(mode("").unwrap(), SslMode::Disabled);
        assert_eq!(mode("ssl-mode=REQUIRED").unwrap(), SslMode::Required);
        assert_eq!(mode(&format!("ssl-ca={ca}")).unwrap(), SslMode::VerifyCa);
        let required_ca = format!("ssl-mode=REQUIRED&ssl-ca={ca}");
        assert_eq!(mode(&required_ca).unwrap(), SslMode::VerifyCa);
        let full = format!("ssl_mode=verify_identity&ssl_ca={ca}&compat=tooz");
        assert_eq!(mode(&full).unwrap(), SslMode::VerifyIdentity);
        for bad in [
            "ssl-mode=PREFERRED",
            "ssl-mode=VERIFY_CA",
            "ssl-mode=maybe",
            "ssl-mode=DISABLED&ssl-ca=/x",
            "ssl-cert=/nonexistent/c.pem",
            "sslmode=REQUIRED",
            "wait_timeout=0",
        ] {
            assert!(mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn our_options_are_read() {
        let s = parse("mysql://u:p@h:3307/db?wait_timeout=30&compat=tooz").unwrap();
        assert_eq!(s.wait_timeout, 30);
        assert_eq!(s.scheme, Scheme::Tooz);
        assert_eq!(s.opts.tcp_port(), 3307);
        assert_eq!(s.opts.db_name(), Some("db"));
        assert!(!s.opts.prefer_socket());
    }
}
