//! TLS for the etcd backend: `?cacert=PATH[&cert=PATH&key=PATH]`.
//!
//! Invariant: with `cacert`, every endpoint is reached over TLS only, and
//! its certificate is checked by [`ServerVerifier`] against the roots in
//! `cacert` and the endpoint's host name (subject alternative names, as Go
//! and so etcdctl check them). Without `cacert`, plaintext.
//!
//! tonic checks certificates with WebPKI alone, which refuses a server
//! certificate that is itself the trusted root (a self-signed `CA:TRUE`
//! one, which etcdctl accepts). etcd-client builds its endpoints itself, so
//! the balanced channel it connects through is made here
//! ([`BalancedChannelBuilder`]): each endpoint it adds gets our verifier
//! (`Endpoint::tls_config_with_verifier`) before it reaches the channel.

use std::sync::Arc;

use etcd_client::{BalancedChannelBuilder, Channel, Client, ConnectOptions, Identity, TlsOptions};
use tonic::transport::channel::Change;
use tonic::transport::{Endpoint, Uri};

/// What etcd-client adds endpoints through (its `EndpointUpdater`).
type Updater = tokio::sync::mpsc::Sender<Change<Uri, Endpoint>>;

use super::tls::{Names, ServerVerifier, read_certs};

/// The TLS files named in the URL.
#[derive(Default)]
pub(super) struct TlsFiles {
    pub(super) ca: Option<String>,
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
}

/// TLS to every endpoint: the client's certificate, if any, and the check
/// of the server's.
#[derive(Clone)]
pub(super) struct Tls {
    /// The client identity only: the roots are the verifier's.
    config: TlsOptions,
    verifier: Arc<ServerVerifier>,
}

impl TlsFiles {
    /// The TLS settings: `None` without `cacert`.
    pub(super) fn tls(&self) -> Result<Option<Tls>, String> {
        let read = |what: &str, path: &str| {
            std::fs::read(path).map_err(|e| format!("{what}={path}: cannot read it: {e}"))
        };
        let Some(ca) = &self.ca else {
            if self.cert.is_some() || self.key.is_some() {
                return Err("cert and key need cacert=PATH (TLS is on only with cacert)".into());
            }
            return Ok(None);
        };
        let roots = read_certs(ca.as_ref(), "cacert")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let what = format!("cacert={ca}");
        let verifier = ServerVerifier::new(roots, Names::San, provider, &what)?;
        let mut config = TlsOptions::new();
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config =
                    config.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
            }
            (None, None) => {}
            _ => return Err("cert and key go together".into()),
        }
        Ok(Some(Tls { config, verifier }))
    }
}

/// Connects to `endpoints` (`https://` ones with `tls`).
pub(super) async fn connect(
    endpoints: &[String],
    options: ConnectOptions,
    tls: Option<&Tls>,
) -> Result<Client, etcd_client::Error> {
    match tls {
        None => Client::connect(endpoints, Some(options)).await,
        Some(tls) => {
            Client::connect_with_balanced_channel(endpoints, Some(options), tls.clone()).await
        }
    }
}

impl BalancedChannelBuilder for Tls {
    type Error = tonic::transport::Error;

    /// tonic's balanced channel, fed through a task that gives each
    /// endpoint our verifier on its way in. Runs inside the backend's
    /// runtime (connecting is one of its tasks).
    fn balanced_channel(self, buffer_size: usize) -> Result<(Channel, Updater), Self::Error> {
        let (channel, to_channel) = tonic::transport::Channel::balance_channel(buffer_size);
        let (updater, mut changes) =
            tokio::sync::mpsc::channel::<Change<Uri, Endpoint>>(buffer_size);
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let change = match change {
                    Change::Insert(uri, endpoint) => {
                        let verifier = self.verifier.clone();
                        match endpoint.tls_config_with_verifier(self.config.clone(), verifier) {
                            Ok(endpoint) => Change::Insert(uri, endpoint),
                            Err(e) => {
                                // Left out: it cannot be reached safely.
                                tracing::warn!(%uri, error = %e, "lockutils: etcd endpoint left out");
                                continue;
                            }
                        }
                    }
                    other => other,
                };
                if to_channel.send(change).await.is_err() {
                    return; // the channel is gone
                }
            }
        });
        Ok((Channel::Tonic(channel), updater))
    }
}
