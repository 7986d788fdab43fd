//! How the lock servers' certificates are checked: as the servers' own
//! clients check them (libpq, redis-cli: OpenSSL; etcdctl: Go), on rustls.
//!
//! Invariant: [`ServerVerifier`] accepts a certificate only if rustls'
//! WebPKI verifier accepts it, or if it is one of the trusted roots
//! itself, byte for byte, within its validity period and (when names are
//! checked) valid for the host; never anything else.
//!
//! * **A root that is also the server's certificate.** PostgreSQL's manual
//!   makes a self-signed server certificate with `openssl req -new -x509`,
//!   which marks it `CA:TRUE`, and has the client trust that very file as
//!   its root. OpenSSL (libpq, redis-cli) and Go (etcdctl) accept a server
//!   certificate that is itself a trusted root; WebPKI refuses any CA
//!   certificate as the end entity (`CaUsedAsEndEntity`). WebPKI checks
//!   the validity period before the CA flag, so that refusal means the
//!   dates were fine; what is left to check is what OpenSSL checks for a
//!   TLS server (an extended key usage, if present, includes `serverAuth`;
//!   a key usage, if present, allows a TLS key exchange) and the name.
//!   The handshake's signature is checked against the certificate's key
//!   as for any other, so only the holder of the root's private key passes.
//! * **Names**: WebPKI reads the subject alternative names only. libpq
//!   falls back to the subject's common name when the certificate has no
//!   alternative names (the manual's certificates have none), so with
//!   [`Names::SanOrCommonName`] a certificate without the extension is
//!   matched by its common name as libpq matches it: case-insensitively,
//!   a leading `*.` standing for exactly one label.
//! * **System roots** ([`system_roots`]): the operating system's trust
//!   store, through `rustls-native-certs` (on Linux the files OpenSSL
//!   reads, `SSL_CERT_FILE` / `SSL_CERT_DIR` included), as libpq's
//!   `sslrootcert=system` and redis-cli's defaults use.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, OtherError, RootCertStore};
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};

/// The signature half of a [`ServerCertVerifier`] that checks certificates
/// its own way: handshake signatures are checked as its `webpki` field (a
/// [`WebPkiServerVerifier`]) checks them.
macro_rules! signatures_as_webpki {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.webpki.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.webpki.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.webpki.supported_verify_schemes()
        }
    };
}
#[cfg(feature = "mysql")]
pub(crate) use signatures_as_webpki;

/// Which names are checked against the host the client connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    not(all(feature = "postgres", any(feature = "etcd", feature = "redis"))),
    allow(dead_code) // PostgreSQL uses two, etcd and Redis the third
)]
pub(crate) enum Names {
    /// None: the chain only (libpq's `verify-ca` and `require`).
    Unchecked,
    /// The subject alternative names (Go, and WebPKI itself).
    San,
    /// The subject alternative names, or the common name of a certificate
    /// without them (libpq's `verify-full`).
    SanOrCommonName,
}

/// Checks server certificates against `roots`, as described in the
/// module docs.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The trusted roots as given, for a server that presents one itself.
    roots: Vec<CertificateDer<'static>>,
    names: Names,
}

impl ServerVerifier {
    /// A verifier trusting `roots` (`what` names them in errors).
    pub(crate) fn new(
        roots: Vec<CertificateDer<'static>>,
        names: Names,
        provider: Arc<CryptoProvider>,
        what: &str,
    ) -> Result<Arc<ServerVerifier>, String> {
        let mut store = RootCertStore::empty();
        for cert in &roots {
            store
                .add(cert.clone())
                .map_err(|e| format!("{what}: {e}"))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(Arc::new(ServerVerifier {
            webpki,
            roots,
            names,
        }))
    }

    /// The server presents one of the trusted roots itself: accepted if
    /// OpenSSL would accept it as a TLS server's certificate.
    fn root_as_server(
        &self,
        cert: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
    ) -> Result<(), rustls::Error> {
        let parsed = parse(cert)?;
        if !usable_by_a_tls_server(&parsed) {
            return Err(CertificateError::InvalidPurpose.into());
        }
        match self.names {
            Names::Unchecked => Ok(()),
            _ => self.name_matches(cert, &parsed, server_name),
        }
    }

    fn name_matches(
        &self,
        cert: &CertificateDer<'_>,
        parsed: &Certificate,
        server_name: &ServerName<'_>,
    ) -> Result<(), rustls::Error> {
        let by_san = webpki::EndEntityCert::try_from(cert)
            .map_err(|_| rustls::Error::from(CertificateError::BadEncoding))?
            .verify_is_valid_for_subject_name(server_name);
        let Err(refused) = by_san else {
            return Ok(());
        };
        let by_cn = self.names == Names::SanOrCommonName
            && !has_extension(parsed, SUBJECT_ALT_NAME)
            && common_name(parsed).is_some_and(|cn| cn_matches(cn, server_name));
        if by_cn {
            return Ok(());
        }
        // Worded as rustls words WebPKI's refusal, names included.
        Err(match refused {
            webpki::Error::CertNotValidForName(names) => CertificateError::NotValidForNameContext {
                expected: names.expected,
                presented: names.presented,
            },
            _ => CertificateError::NotValidForName,
        }
        .into())
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let checked =
            self.webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        let Err(e) = checked else {
            return checked;
        };
        let ok = || Ok(ServerCertVerified::assertion());
        match &e {
            // WebPKI checks the chain before the name: a name error means
            // the chain was good.
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => match self.names {
                Names::Unchecked => ok(),
                Names::San => Err(e),
                Names::SanOrCommonName => match parse(end_entity) {
                    Ok(parsed) => self
                        .name_matches(end_entity, &parsed, server_name)
                        .map_or(Err(e), |()| ok()),
                    Err(_) => Err(e),
                },
            },
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))
                if matches!(
                    inner.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                if self.roots.iter().any(|r| r.as_ref() == end_entity.as_ref()) {
                    self.root_as_server(end_entity, server_name)?;
                    return ok();
                }
                // A self-signed certificate no root vouches for: said so,
                // rather than as WebPKI's complaint about its CA flag.
                match parse(end_entity) {
                    Ok(c) if c.tbs_certificate.subject == c.tbs_certificate.issuer => {
                        Err(CertificateError::UnknownIssuer.into())
                    }
                    _ => Err(e),
                }
            }
            _ => Err(e),
        }
    }

    signatures_as_webpki!();
}

/// Reads every certificate in the PEM file `path`; `what` names the
/// setting in errors (`sslrootcert`, `cacert`).
pub(crate) fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what}={}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{what}={}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what}={}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The operating system's trusted roots (see the module docs). `Err`:
/// none could be read, and why.
#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
pub(crate) fn system_roots() -> Result<Vec<CertificateDer<'static>>, String> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no system root certificates found{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.join("; "))
            }
        ));
    }
    Ok(found.certs)
}

const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

fn parse(cert: &CertificateDer<'_>) -> Result<Certificate, rustls::Error> {
    Certificate::from_der(cert.as_ref()).map_err(|_| CertificateError::BadEncoding.into())
}

fn extension(cert: &Certificate, id: ObjectIdentifier) -> Option<&[u8]> {
    let all = cert.tbs_certificate.extensions.as_ref()?;
    all.iter()
        .find(|e| e.extn_id == id)
        .map(|e| e.extn_value.as_bytes())
}

fn has_extension(cert: &Certificate, id: ObjectIdentifier) -> bool {
    extension(cert, id).is_some()
}

/// What OpenSSL requires of a TLS server's certificate (its
/// `X509_PURPOSE_SSL_SERVER` check): `serverAuth` among the extended key
/// usages, and a key exchange among the key usages, where either is given.
fn usable_by_a_tls_server(cert: &Certificate) -> bool {
    let eku_ok = extension(cert, EXTENDED_KEY_USAGE).is_none_or(|der| {
        ExtendedKeyUsage::from_der(der).is_ok_and(|eku| eku.0.contains(&SERVER_AUTH))
    });
    let ku_ok = extension(cert, KEY_USAGE).is_none_or(|der| {
        KeyUsage::from_der(der)
            .is_ok_and(|ku| ku.digital_signature() || ku.key_encipherment() || ku.key_agreement())
    });
    eku_ok && ku_ok
}

/// The first common name of the subject, if it is a string.
fn common_name(cert: &Certificate) -> Option<&str> {
    let atv = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == COMMON_NAME)?;
    let text = matches!(
        atv.value.tag(),
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString
    );
    text.then(|| std::str::from_utf8(atv.value.value()).ok())?
}

/// libpq's match of a common name against the host: equal ignoring ASCII
/// case, or `*.rest` against `label.rest` (one label, without dots); an
/// IP address is compared as an address.
fn cn_matches(cn: &str, host: &ServerName<'_>) -> bool {
    match host {
        ServerName::DnsName(dns) => {
            let host = dns.as_ref();
            if cn.eq_ignore_ascii_case(host) {
                return true;
            }
            match (cn.strip_prefix("*."), host.split_once('.')) {
                (Some(rest), Some((label, host_rest))) => {
                    !label.is_empty() && !rest.is_empty() && rest.eq_ignore_ascii_case(host_rest)
                }
                _ => false,
            }
        }
        ServerName::IpAddress(ip) => cn.parse::<IpAddr>().is_ok_and(|c| c == IpAddr::from(*ip)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_owned()).unwrap()
    }

    #[test]
    fn common_names_match_as_libpq_matches_them() {
        assert!(cn_matches("db.example.com", &dns("DB.example.com")));
        assert!(cn_matches("*.example.com", &dns("db.example.com")));
        assert!(!cn_matches("*.example.com", &dns("a.db.example.com")));
        assert!(!cn_matches("*.example.com", &dns("example.com")));
        assert!(!cn_matches("db.example.com", &dns("db.example.org")));
        assert!(!cn_matches("*", &dns("localhost")));
        assert!(cn_matches("127.0.0.1", &dns("127.0.0.1")));
        assert!(!cn_matches("127.0.0.2", &dns("127.0.0.1")));
    }
}
