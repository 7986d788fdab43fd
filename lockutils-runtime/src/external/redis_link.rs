//! Connections to Redis: the `redis` crate's for `redis://`, our own TLS
//! stream for `rediss://`.
//!
//! Invariant: a `rediss://` connection is encrypted from its first byte
//! and its server's certificate passed [`ServerVerifier`] (the roots of
//! `cacert`, else the system's; the host name against the subject
//! alternative names); nothing is sent before that, and there is no
//! plaintext fallback.
//!
//! The `redis` crate checks certificates with WebPKI alone, which refuses
//! a server certificate that is itself the trusted root (a self-signed
//! `CA:TRUE` one, which redis-cli accepts), and takes no other verifier.
//! So for `rediss://` the TLS stream is ours (rustls, ring) and the crate
//! only encodes commands and parses replies (`Cmd`, `Parser`), through
//! its `ConnectionLike` trait: scripts run the same on either kind.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ::redis::{
    Client, Connection, ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo, Parser,
    RedisError, RedisResult, Value,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::server::error_chain;
use super::tls::{Names, ServerVerifier, read_certs, system_roots};

/// Where connections go, and how.
#[derive(Clone)]
pub(super) enum Server {
    /// `redis://`: the `redis` crate's client.
    Plain(Client),
    /// `rediss://`: our TLS.
    Tls(Arc<TlsServer>),
}

/// A `rediss://` server: address, database, credentials, TLS settings.
pub(super) struct TlsServer {
    host: String,
    port: u16,
    info: ConnectionInfo,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Server {
    /// The server of `url` (without lockutils' own parameters); with
    /// `tls`, `ca`, `cert` and `key` are the URL's `cacert`, `cert`, `key`.
    pub(super) fn new(
        url: &str,
        tls: bool,
        ca: Option<String>,
        cert: Option<String>,
        key: Option<String>,
    ) -> Result<Server, String> {
        let parse_err = |e: RedisError| format!("not a Redis URL: {}", error_chain(&e));
        if !tls {
            if ca.is_some() || cert.is_some() || key.is_some() {
                return Err("cacert, cert and key need rediss:// (TLS)".into());
            }
            return Client::open(url).map(Server::Plain).map_err(parse_err);
        }
        // Parsed as the plain URL it is apart from the scheme; TLS is ours.
        let plain = url.replacen("rediss://", "redis://", 1);
        let info = plain.as_str().into_connection_info().map_err(parse_err)?;
        let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            return Err("rediss:// needs host:port".into());
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|e| format!("{host:?} is not a host name: {e}"))?;
        let config = Arc::new(client_config(ca, cert, key)?);
        Ok(Server::Tls(Arc::new(TlsServer {
            host,
            port,
            info,
            config,
            name,
        })))
    }

    /// A new connection whose every request may take `timeout`.
    pub(super) fn connect(&self, timeout: Duration) -> RedisResult<Link> {
        let link = match self {
            Server::Plain(client) => Link::Plain(client.get_connection_with_timeout(timeout)?),
            Server::Tls(server) => Link::Tls(Box::new(server.connect(timeout)?)),
        };
        link.set_read_timeout(Some(timeout))?;
        link.set_write_timeout(Some(timeout))?;
        Ok(link)
    }
}

/// Our TLS settings: the roots of `ca` (else the system's), checked as
/// redis-cli checks them plus the host name; `cert` and `key` for mutual
/// TLS.
fn client_config(
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
) -> Result<ClientConfig, String> {
    let (roots, what) = match &ca {
        Some(ca) => (read_certs(ca.as_ref(), "cacert")?, format!("cacert={ca}")),
        None => (system_roots()?, "the system's roots".to_owned()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = ServerVerifier::new(roots, Names::San, provider.clone(), &what)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert.as_ref(), "cert")?;
            let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("key={key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cert/key: {e}"))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("cert and key go together".into()),
    }
}

impl TlsServer {
    fn connect(&self, timeout: Duration) -> RedisResult<TlsLink> {
        let mut last = None;
        let mut tcp = None;
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(tcp) = tcp else {
            return Err(last
                .unwrap_or_else(|| std::io::Error::other("the host has no address"))
                .into());
        };
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let tls = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(std::io::Error::other)?;
        let mut stream = StreamOwned::new(tls, tcp);
        // The whole handshake now: a refused certificate fails the connect.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        let settings = self.info.redis_settings();
        let mut link = TlsLink {
            stream,
            parser: Parser::new(),
            db: settings.db(),
            open: true,
        };
        if let Some(password) = settings.password() {
            let mut auth = ::redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password).exec(&mut link)?;
        }
        if link.db != 0 {
            ::redis::cmd("SELECT").arg(link.db).exec(&mut link)?;
        }
        Ok(link)
    }
}

/// One connection, either kind.
pub(super) enum Link {
    Plain(Connection),
    Tls(Box<TlsLink>),
}

impl Link {
    pub(super) fn is_open(&self) -> bool {
        match self {
            Link::Plain(c) => c.is_open(),
            Link::Tls(t) => t.open,
        }
    }

    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        match self {
            Link::Plain(c) => c.set_read_timeout(timeout),
            Link::Tls(t) => Ok(t.stream.sock.set_read_timeout(timeout)?),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        match self {
            Link::Plain(c) => c.set_write_timeout(timeout),
            Link::Tls(t) => Ok(t.stream.sock.set_write_timeout(timeout)?),
        }
    }

    /// Subscribes to `channel`: the connection then only receives its
    /// messages ([`next_message`](Link::next_message)); it is not to be
    /// used for anything else afterwards.
    pub(super) fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        let cmd = ::redis::cmd("SUBSCRIBE").arg(channel).get_packed_command();
        self.send(&cmd)?;
        self.next_message() // the subscription's confirmation
    }

    /// Waits (up to the read timeout) for the next message.
    pub(super) fn next_message(&mut self) -> RedisResult<()> {
        match self {
            Link::Plain(c) => c.recv_response()?.extract_error().map(drop),
            Link::Tls(t) => t.recv().map(drop),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> RedisResult<()> {
        match self {
            Link::Plain(c) => c.send_packed_command(bytes),
            Link::Tls(t) => t.send(bytes),
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Link::Plain(c) => c.req_packed_command(cmd),
            Link::Tls(t) => t.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Link::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Link::Tls(t) => t.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Plain(c) => c.get_db(),
            Link::Tls(t) => t.db,
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Link::Plain(c) => c.check_connection(),
            Link::Tls(t) => t.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        Link::is_open(self)
    }
}

/// A `rediss://` connection: RESP over our TLS stream.
pub(super) struct TlsLink {
    stream: StreamOwned<ClientConnection, TcpStream>,
    parser: Parser,
    db: i64,
    /// Cleared by an I/O error or a reply that does not parse: the stream
    /// is then out of step and is not used again.
    open: bool,
}

impl TlsLink {
    fn send(&mut self, bytes: &[u8]) -> RedisResult<()> {
        let sent = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
        if sent.is_err() {
            self.open = false;
        }
        Ok(sent?)
    }

    /// The next reply; a server error is an `Err`.
    fn recv(&mut self) -> RedisResult<Value> {
        match self.parser.parse_value(&mut self.stream) {
            Ok(v) => v.extract_error(),
            Err(e) => {
                // A timeout with nothing read leaves the stream in step
                // (a waiter's bounded wait for a message); anything else
                // does not.
                if !e.is_timeout() {
                    self.open = false;
                }
                Err(e)
            }
        }
    }
}

impl ConnectionLike for TlsLink {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send(cmd)?;
        self.recv().inspect_err(|e| {
            if e.is_timeout() {
                self.open = false; // the reply may still come
            }
        })
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send(cmd)?;
        let mut replies = Vec::with_capacity(count);
        for i in 0..offset + count {
            let reply = self.recv();
            if reply.as_ref().is_err_and(RedisError::is_timeout) {
                self.open = false;
            }
            if i >= offset {
                replies.push(reply?);
            }
        }
        Ok(replies)
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        ::redis::cmd("PING").exec(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}
