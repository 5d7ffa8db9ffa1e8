//! Opening connections to endpoints: TCP (no Nagle), then TLS for `https` backends, then the
//! HTTP/1.1 or HTTP/2 handshake. Each connection is driven by its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::request_body::RequestBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_api::AppProtocol;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::ProxyError;

/// A ready-to-use connection to an endpoint.
#[derive(Debug)]
pub enum Conn {
    /// One request at a time; returned to the pool after the response body ends.
    H1(http1::SendRequest<RequestBody>),
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

    /// Connects to `addr` and speaks `protocol`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        protocol: AppProtocol,
    ) -> Result<Conn, ConnectError> {
        tokio::time::timeout(self.connect_timeout, self.connect_inner(addr, protocol))
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
            AppProtocol::Http1 => handshake_h1(tcp).await,
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
                    handshake_h1(tls).await
                }
            }
        }
    }
}

async fn handshake_h1<T>(io: T) -> Result<Conn, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake::<_, RequestBody>(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Other(ProxyError::UpstreamProtocol(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
        }
    });
    Ok(Conn::H1(sender))
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
