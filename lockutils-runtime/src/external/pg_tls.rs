//! TLS for the PostgreSQL backend, spelt as libpq spells it in the URL:
//! `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.
//!
//! | `sslmode` | encrypted | chain checked against `sslrootcert` | host name checked |
//! |---|---|---|---|
//! | absent, `disable` | no | – | – |
//! | `require` | yes | only if `sslrootcert` is given (as libpq does) | no |
//! | `verify-ca` | yes | yes (`sslrootcert` required) | no |
//! | `verify-full` | yes | yes (`sslrootcert` required) | yes |
//!
//! `allow` and `prefer` are refused: both may end up in plaintext, and a
//! lock URL that asks for TLS never gets less. A server that declines TLS
//! is an error, not a fallback. The stack is rustls (ring), through the
//! `tokio-postgres-rustls` connector; certificates are checked as libpq
//! checks them (see [`tls`](super::tls)): a server certificate that is
//! itself the trusted root (the manual's self-signed one) is accepted, and
//! a certificate without alternative names is matched by its common name.
//!
//! `sslrootcert=system` (libpq 16) trusts the operating system's roots;
//! as in libpq it makes `verify-full` the default and refuses weaker modes,
//! since any public CA can vouch for any name.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::tls::{Names, ServerVerifier, read_certs, system_roots};

/// How much the connection's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS settings of a URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PgTls {
    pub(crate) mode: SslMode,
    root: Option<Root>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// What `sslrootcert` names.
#[derive(Debug, PartialEq, Eq)]
enum Root {
    /// A PEM file of trusted roots.
    File(PathBuf),
    /// `system`: the operating system's roots.
    System,
}

/// Takes libpq's TLS parameters out of `url`: the URL without them (for
/// the `postgres` crate, which knows only `disable`/`prefer`/`require`),
/// and the settings. `Err`: what is wrong with them.
pub(crate) fn split(url: &str) -> Result<(String, PgTls), String> {
    let mut tls = PgTls {
        mode: SslMode::Disable,
        root: None,
        cert: None,
        key: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), tls));
    };
    let mut kept = Vec::new();
    let mut mode_given = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let path = || PathBuf::from(percent_decoded(v));
        match k {
            "sslmode" => {
                mode_given = true;
                tls.mode = match v {
                    "disable" => SslMode::Disable,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    "allow" | "prefer" => {
                        return Err(format!(
                            "sslmode={v} may fall back to plaintext: use require, verify-ca or \
                             verify-full (or disable)"
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "sslmode={v:?}: expected disable, require, verify-ca or verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" if v == "system" => tls.root = Some(Root::System),
            "sslrootcert" => tls.root = Some(Root::File(path())),
            "sslcert" => tls.cert = Some(path()),
            "sslkey" => tls.key = Some(path()),
            _ => kept.push(pair),
        }
    }
    if tls.root == Some(Root::System) {
        match tls.mode {
            _ if !mode_given => tls.mode = SslMode::VerifyFull,
            SslMode::VerifyFull => {}
            _ => {
                return Err(
                    "sslrootcert=system needs sslmode=verify-full (the default with it): any \
                     public CA could vouch for the server otherwise"
                        .into(),
                );
            }
        }
    }
    let needs_root = matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull);
    if needs_root && tls.root.is_none() {
        return Err(
            "sslmode=verify-ca and verify-full need sslrootcert=PATH (the CA's PEM file) or \
             sslrootcert=system"
                .into(),
        );
    }
    if tls.cert.is_some() != tls.key.is_some() {
        return Err("sslcert and sslkey go together".into());
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, tls))
}

/// `%XX` escapes decoded (paths in a URL query).
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The ring provider: the one crypto stack built in.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl PgTls {
    /// The rustls client configuration for these settings (`Disable`: none).
    pub(crate) fn client_config(&self) -> Result<Option<ClientConfig>, String> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let names = match self.mode {
            SslMode::VerifyFull => Names::SanOrCommonName,
            _ => Names::Unchecked,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match &self.root {
            None => Arc::new(Unverified(provider.signature_verification_algorithms)),
            Some(Root::File(root)) => {
                let what = format!("sslrootcert={}", root.display());
                ServerVerifier::new(read_certs(root, "sslrootcert")?, names, provider, &what)?
            }
            Some(Root::System) => {
                let roots = system_roots().map_err(|e| format!("sslrootcert=system: {e}"))?;
                ServerVerifier::new(roots, names, provider, "sslrootcert=system")?
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "sslcert")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("sslkey={}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("sslcert/sslkey: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(config))
    }
}

/// `require` without `sslrootcert`: encrypted, the certificate not checked
/// (libpq's meaning); the handshake's signatures still are.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (url, tls) =
            split("postgres://u@h/db?sslmode=verify-full&sslrootcert=/a%20b/ca.pem&x=1").unwrap();
        assert_eq!(url, "postgres://u@h/db?x=1");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root, Some(Root::File("/a b/ca.pem".into())));
        let (url, tls) = split("postgres://u@h/db").unwrap();
        assert_eq!(
            (url.as_str(), tls.mode),
            ("postgres://u@h/db", SslMode::Disable)
        );
        let (url, tls) = split("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (url.as_str(), tls.mode),
            ("postgres://u@h/db", SslMode::Require)
        );
    }

    #[test]
    fn sslrootcert_system_means_verify_full() {
        let (_, tls) = split("postgres://u@h/db?sslrootcert=system").unwrap();
        assert_eq!(
            (tls.mode, tls.root),
            (SslMode::VerifyFull, Some(Root::System))
        );
        let (_, tls) = split("postgres://u@h/db?sslrootcert=system&sslmode=verify-full").unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
    }

    #[test]
    fn modes_that_may_be_plaintext_or_unverifiable_are_refused() {
        for (bad, why) in [
            ("postgres://h?sslmode=prefer", "plaintext"),
            ("postgres://h?sslmode=allow", "plaintext"),
            ("postgres://h?sslmode=verify-full", "sslrootcert"),
            ("postgres://h?sslmode=verify-ca", "sslrootcert"),
            ("postgres://h?sslmode=strict", "expected"),
            ("postgres://h?sslmode=require&sslcert=/c.pem", "together"),
            (
                "postgres://h?sslrootcert=system&sslmode=verify-ca",
                "verify-full",
            ),
            (
                "postgres://h?sslmode=require&sslrootcert=system",
                "verify-full",
            ),
        ] {
            let e = split(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
