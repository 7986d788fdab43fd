//! `ssl-mode=VERIFY_CA` on top of `mysql_async`, whose own way of leaving
//! out the host-name check no longer works with rustls 0.23 (it looks for
//! an error text rustls stopped producing), so that it would check the
//! name anyway.
//!
//! Invariant: a session is only made with a certificate that chains to
//! `ssl-ca`, and with any such certificate (what `VERIFY_CA` means).
//!
//! How: before the first session (and again after a session failed), one
//! probe connection asks the server for TLS the way a client does (its
//! greeting, then MySQL's SSLRequest packet, then the TLS handshake), with
//! a verifier that checks the chain against `ssl-ca` alone and keeps the
//! certificate. A DNS name the certificate carries then becomes the TLS
//! host name of the real sessions (`mysql_async`'s host-name override):
//! their own handshakes check the chain and that name, which a
//! certificate of another CA cannot pass. The probe authenticates nothing
//! and sends no password; it closes after the handshake.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::signatures_as_webpki;

/// The capability flags of the SSLRequest: 4.1 protocol, TLS, 4.1 auth.
const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;

/// Where the probe's verifier leaves the server's certificate.
type Seen = Arc<Mutex<Option<CertificateDer<'static>>>>;

/// What the probe needs: where, the CA, and the client certificate if
/// the URL gives one (a server may ask for it in the handshake).
pub(crate) struct Probe {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) ca: Vec<u8>,
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Probe {
    /// A DNS name of the server's certificate, which chains to the CA.
    pub(crate) async fn certificate_name(&self, limit: Duration) -> Result<String, String> {
        match tokio::time::timeout(limit, self.handshake()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no TLS handshake within {limit:?}")),
        }
    }

    async fn handshake(&self) -> Result<String, String> {
        let (config, seen) = self.config()?;
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| e.to_string())?;
        let greeting = read_packet(&mut tcp).await?;
        if !offers_tls(&greeting)? {
            return Err("Client asked for SSL but the server does not have this capability".into());
        }
        tcp.write_all(&ssl_request())
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = connector.connect(name, tcp).await;
        let cert = seen.lock().take();
        let mut tls = tls.map_err(|e| e.to_string())?;
        let _ = tls.shutdown().await;
        let cert = cert.ok_or("the server presented no certificate")?;
        dns_name(&cert)
    }

    /// A client configuration that checks the chain only, and the cell
    /// where its verifier leaves the certificate.
    fn config(&self) -> Result<(ClientConfig, Seen), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca) {
            let cert = cert.map_err(|e| format!("ssl-ca: {e}"))?;
            roots.add(cert).map_err(|e| format!("ssl-ca: {e}"))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("ssl-ca: {e}"))?;
        let seen = Arc::new(Mutex::new(None));
        let verifier = ChainOnly {
            webpki,
            seen: seen.clone(),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let config = match &self.identity {
            Some((cert, key)) => {
                let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(cert).collect();
                let chain = chain.map_err(|e| format!("ssl-cert: {e}"))?;
                let key =
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("ssl-key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("ssl-cert/ssl-key: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok((config, seen))
    }
}

/// One packet's payload (a 3-byte length, a sequence number, the payload).
async fn read_packet(tcp: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header)
        .await
        .map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload)
        .await
        .map_err(|e| e.to_string())?;
    Ok(payload)
}

/// Whether the server's greeting offers TLS; an error packet is an error.
fn offers_tls(greeting: &[u8]) -> Result<bool, String> {
    if greeting.first() == Some(&0xff) {
        // 0xff, a 2-byte code, then (4.1) '#' and a 5-character SQLSTATE.
        let text = greeting.get(3..).unwrap_or_default();
        let text = text
            .strip_prefix(b"#")
            .map_or(text, |t| t.get(5..).unwrap_or_default());
        return Err(String::from_utf8_lossy(text).into_owned());
    }
    // Protocol version, the server version up to its NUL, the connection
    // id (4), the first scramble (8), a filler (1), then the low 2 bytes of
    // the capability flags.
    let nul = greeting
        .iter()
        .skip(1)
        .position(|&b| b == 0)
        .ok_or("malformed greeting")?;
    let flags = 1 + nul + 1 + 4 + 8 + 1;
    let low = greeting.get(flags..flags + 2).ok_or("malformed greeting")?;
    Ok(u32::from(u16::from_le_bytes([low[0], low[1]])) & CLIENT_SSL != 0)
}

/// The SSLRequest packet (sequence number 1): capabilities, the largest
/// packet, utf8mb4, 23 reserved bytes.
fn ssl_request() -> Vec<u8> {
    let mut packet = vec![32, 0, 0, 1];
    let caps = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION;
    packet.extend_from_slice(&caps.to_le_bytes());
    packet.extend_from_slice(&(16u32 << 20).to_le_bytes());
    packet.push(45);
    packet.extend_from_slice(&[0; 23]);
    packet
}

/// A DNS name the certificate is valid for; for a wildcard, a name under it.
fn dns_name(cert: &CertificateDer<'_>) -> Result<String, String> {
    let cert = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("{e:?}"))?;
    let name = cert.valid_dns_names().next().ok_or(
        "ssl-mode=VERIFY_CA: the server's certificate names no DNS name to check it by; \
         connect by a name or address it carries with VERIFY_IDENTITY",
    )?;
    Ok(match name.strip_prefix("*.") {
        Some(parent) => format!("lockutils.{parent}"),
        None => name.to_owned(),
    })
}

/// Checks the chain against the CA and keeps the certificate; any name.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
    seen: Seen,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain: a name error means a good chain.
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                *self.seen.lock() = Some(end_entity.clone().into_owned());
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    signatures_as_webpki!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssl_request_is_32_bytes_with_tls_asked() {
        let p = ssl_request();
        assert_eq!(p.len(), 36);
        assert_eq!(&p[..4], &[32, 0, 0, 1]);
        let caps = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
        assert_ne!(caps & CLIENT_SSL, 0);
    }

    #[test]
    fn greetings_are_read() {
        // Version 10, "5.5.5-x\0", id, 8 scramble bytes, filler, flags.
        let mut g = vec![10];
        g.extend_from_slice(b"5.5.5-x\0");
        g.extend_from_slice(&[1, 0, 0, 0]);
        g.extend_from_slice(&[0; 8]);
        g.push(0);
        g.extend_from_slice(&(CLIENT_SSL as u16).to_le_bytes());
        assert_eq!(offers_tls(&g), Ok(true));
        let last = g.len() - 2;
        g[last] = 0;
        g[last + 1] = 0;
        assert_eq!(offers_tls(&g), Ok(false));
        let err = b"\xff\x15\x04#28000Access denied";
        assert_eq!(offers_tls(err), Err("Access denied".to_owned()));
    }
}
