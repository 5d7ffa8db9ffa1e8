//! Opening connections to endpoints: TCP (no Nagle), then TLS for `https` backends, then the
//! HTTP/1.1 or HTTP/2 handshake.
//!
//! An HTTP/2 connection is driven by its own task and shared. An HTTP/1.1 connection is driven
//! by the request using it ([`H1Conn`]): no task of its own, so a request and its response do
//! not cross channels between tasks, nor wake a second task, on the way.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::request_body::RequestBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_api::AppProtocol;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::ProxyError;

/// A ready-to-use connection to an endpoint.
#[derive(Debug)]
pub enum Conn {
    /// One request at a time; returned to the pool after the response body ends. Boxed: it
    /// moves with each request, and its buffers stay put.
    H1(Box<H1Conn>),
    /// Multiplexed; shared by every request to the endpoint.
    H2(http2::SendRequest<RequestBody>),
}

/// Why a connection could not be opened. `Refused` is safe to retry elsewhere: nothing was sent.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    Timeout,
    Other(ProxyError),
}

impl From<ConnectError> for ProxyError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Refused(e) => ProxyError::UpstreamConnect(e),
            ConnectError::Timeout => ProxyError::UpstreamConnectTimeout,
            ConnectError::Other(e) => e,
        }
    }
}

/// Opens upstream connections.
pub struct Connector {
    connect_timeout: Duration,
    tls: TlsConnector,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector with the given connect timeout (TCP and TLS together).
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            tls: TlsConnector::from(Arc::new(client_tls_config())),
        }
    }

    /// Connects to `addr` and speaks `protocol`, within `timeout` (the route's
    /// `timeouts.connect`) or else the connector's own.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        protocol: AppProtocol,
        timeout: Option<Duration>,
    ) -> Result<Conn, ConnectError> {
        let timeout = timeout.unwrap_or(self.connect_timeout);
        tokio::time::timeout(timeout, self.connect_inner(addr, protocol))
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    async fn connect_inner(
        &self,
        addr: SocketAddr,
        protocol: AppProtocol,
    ) -> Result<Conn, ConnectError> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectError::Refused(e),
            _ => ConnectError::Other(ProxyError::UpstreamConnect(e)),
        })?;
        let _ = tcp.set_nodelay(true);
        match protocol {
            AppProtocol::Http1 => handshake_h1(UpstreamIo::Tcp(tcp)).await,
            AppProtocol::H2c => handshake_h2(tcp).await,
            AppProtocol::Https => {
                // An IP address as the server name: rustls sends no SNI, and verification is off.
                let name = ServerName::IpAddress(addr.ip().into());
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::Other(ProxyError::UpstreamTls(e)))?;
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    handshake_h2(tls).await
                } else {
                    handshake_h1(UpstreamIo::Tls(Box::new(tls))).await
                }
            }
        }
    }
}

async fn handshake_h1(io: UpstreamIo) -> Result<Conn, ConnectError> {
    let (sender, conn) = http1::Builder::new()
        .handshake::<_, RequestBody>(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Other(ProxyError::UpstreamProtocol(e)))?;
    Ok(Conn::H1(Box::new(H1Conn {
        sender,
        conn: Some(conn),
    })))
}

/// An HTTP/1.1 connection driven by whoever holds it: the request future while the request is
/// sent and the response head awaited, then the response body while it streams. Idle in the
/// pool, nobody polls it; it is polled once when taken, which notices a close by the server.
pub struct H1Conn {
    sender: http1::SendRequest<RequestBody>,
    /// `None` once the connection has ended.
    conn: Option<http1::Connection<TokioIo<UpstreamIo>, RequestBody>>,
}

impl std::fmt::Debug for H1Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Conn")
            .field("open", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl H1Conn {
    /// Reads and writes what the connection can now. False once it has ended.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        match Pin::new(conn).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                }
                self.conn = None;
                false
            }
        }
    }

    /// True if the connection is open and can carry another request now. Polls the
    /// connection, which notices a close by the server.
    pub fn poll_reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && self.is_ready(cx)
    }

    /// True if the connection can carry another request now, as far as it knows without
    /// being polled. At the end of a response body it usually knows already: the poll that
    /// read the end of the body went on to wait for the next request.
    pub fn is_ready(&mut self, cx: &mut Context<'_>) -> bool {
        matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }

    /// Sends `req`, driving the connection until the response head arrives.
    pub fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Sending<
        '_,
        impl Future<Output = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>>,
    > {
        let response = self.sender.try_send_request(req);
        Sending {
            conn: self,
            response,
        }
    }

    /// Hands the connection to a task of its own, which can give it up to an upgrade (a
    /// tunnel then takes it over), and returns the sender.
    pub fn into_spawned(mut self) -> http1::SendRequest<RequestBody> {
        if let Some(conn) = self.conn.take() {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                }
            });
        }
        self.sender
    }
}

pin_project_lite::pin_project! {
    /// The future of [`H1Conn::send`]. A named future, not an `async fn`: it is part of every
    /// request's future, and an `async fn` would hold the request twice.
    #[must_use = "futures do nothing unless polled"]
    pub struct Sending<'c, F> {
        conn: &'c mut H1Conn,
        #[pin]
        response: F,
    }
}

impl<F: Future> Future for Sending<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The connection first: it writes the request and reads the head. Should it end,
        // dropping it answers the response future with an error (with the request back if it
        // was not sent).
        this.conn.drive(cx);
        this.response.poll(cx)
    }
}

/// The transport of an upstream HTTP/1.1 connection, so that pooled connections have one type.
#[derive(Debug)]
pub enum UpstreamIo {
    Tcp(TcpStream),
    /// Boxed: a TLS session is large, and most upstreams are plain TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

async fn handshake_h2<T>(io: T) -> Result<Conn, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(30))
        .handshake::<_, RequestBody>(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Other(ProxyError::UpstreamProtocol(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Conn::H2(sender))
}

/// TLS to upstreams offers h2 and http/1.1 and does not verify the endpoint's certificate,
/// like nginx's default `proxy_ssl_verify off`: endpoints are pod addresses, which rarely have
/// certificates naming them.
fn client_tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Accepts any server certificate (signatures are still checked, so the handshake is sound).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
