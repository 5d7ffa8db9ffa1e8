//! Accept loops: the connection cap, TLS with SNI, HTTP/1.1 and HTTP/2 serving, and graceful
//! drain.
//!
//! Over `--max-connections`, accepting pauses and new connections wait in the kernel backlog.
//! On shutdown the loops stop accepting and drop their sockets (new connections are refused);
//! the connections they started are watched by hyper-util's `GracefulShutdown`, which lets
//! in-flight requests finish and closes idle keep-alive connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::LazyConfigAcceptor;

use crate::dispatch;
use crate::head_timeout::{HeadTimeoutIo, HeadTimer};
use crate::hygiene::ConnInfo;
use crate::state::State;

/// Largest request head (and HTTP/1.1 read buffer).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serving settings shared by both listeners.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    /// An HTTP/1.1 connection with no request for this long is closed.
    pub idle_timeout: Duration,
    pub max_connections: Option<u32>,
    /// Every connection starts with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
}

/// The HTTP server builder: HTTP/1.1 with keep-alive and a header read timeout, and HTTP/2
/// (by ALPN on TLS, by prior knowledge on plain connections).
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `HeadTimeoutIo` answers slow heads with 408; hyper's own timeout would close them
        // silently, and costs a timer per request head.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(1024)
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// Accepts connections until `shutdown` turns true, then drops the listener.
pub async fn serve(
    listener: TcpListener,
    tls: bool,
    state: Arc<State>,
    options: ServeOptions,
    graceful: Arc<GracefulShutdown>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder());
    let limit = options
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n as usize)));
    let local = listener.local_addr().ok();
    loop {
        let permit = match &limit {
            Some(limit) => {
                let permit = tokio::select! {
                    permit = limit.clone().acquire_owned() => permit.ok(),
                    _ = shutdown.wait_for(|stop| *stop) => break,
                };
                permit
            }
            None => None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Only the port is used (X-Forwarded-Port): the listener's saves a syscall per
        // connection.
        let local = local.unwrap_or(peer);
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        // One future per path, boxed before it is spawned: tokio moves a spawned future through
        // several frames, and a plain connection need not carry a TLS handshake's state.
        let active = Active::new(&state);
        let proxy_protocol = options.proxy_protocol;
        let idle = options.idle_timeout;
        if tls {
            let timeout = options.header_read_timeout;
            tokio::spawn(Box::pin(async move {
                let (_permit, _active) = (permit, active);
                let mut stream = stream;
                let Some(peer) = client_of(&mut stream, peer, proxy_protocol, timeout).await else {
                    return;
                };
                let limits = (timeout, idle);
                serve_tls(stream, peer, local, state, &builder, watcher, limits).await;
            }));
        } else {
            let limit = options.header_read_timeout;
            tokio::spawn(Box::pin(async move {
                let (_permit, _active) = (permit, active);
                let mut stream = stream;
                let Some(peer) = client_of(&mut stream, peer, proxy_protocol, limit).await else {
                    return;
                };
                let mut conn = ConnInfo::new(peer, local, false, None);
                let timer = Arc::new(HeadTimer::default());
                conn.head_timer = Some(timer.clone());
                let io = HeadTimeoutIo::new(stream, timer, limit, idle);
                serve_conn(TokioIo::new(io), Arc::new(conn), state, &builder, watcher).await;
            }));
        }
    }
    tracing::debug!(tls, "listener closed");
}

/// The connection's client: the TCP peer, or with `proxy_protocol` the address of the PROXY
/// header it starts with. `None` when the header is missing or malformed (the connection is
/// dropped).
async fn client_of(
    stream: &mut TcpStream,
    peer: SocketAddr,
    proxy_protocol: bool,
    limit: Duration,
) -> Option<SocketAddr> {
    if !proxy_protocol {
        return Some(peer);
    }
    match crate::proxy_protocol::read_header(stream, limit).await {
        Ok(client) => Some(client.unwrap_or(peer)),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection refused");
            None
        }
    }
}

/// Counts an open connection for as long as its task holds it, however the task ends.
struct Active(Arc<State>);

impl Active {
    fn new(state: &Arc<State>) -> Self {
        state.metrics.active_connections.inc();
        Self(state.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.metrics.active_connections.dec();
    }
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    state: Arc<State>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    (timeout, idle): (Duration, Duration),
) {
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let sni = start
            .client_hello()
            .server_name()
            .map(|n| n.to_ascii_lowercase().into_boxed_str());
        let config = {
            let current = state.config();
            current.tls().choose(current.router(), sni.as_deref())
        };
        let tls = start.into_stream(config).await?;
        Ok::<_, std::io::Error>((tls, sni))
    };
    let (tls, sni) = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let mut info = ConnInfo::new(peer, local, true, sni);
    // Present only when the host asked for one and it verified against the host's CA.
    info.client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::tls::peer_cert(leaf))
        .map(Arc::new);
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_conn(TokioIo::new(tls), Arc::new(info), state, builder, watcher).await;
    } else {
        let head_timer = Arc::new(HeadTimer::default());
        info.head_timer = Some(head_timer.clone());
        let io = HeadTimeoutIo::new(tls, head_timer, timeout, idle);
        serve_conn(TokioIo::new(io), Arc::new(info), state, builder, watcher).await;
    }
}

async fn serve_conn<I>(
    io: I,
    conn: Arc<ConnInfo>,
    state: Arc<State>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let service = service_fn(move |req| dispatch::handle(state.clone(), conn.clone(), req));
    let connection = builder.serve_connection_with_upgrades(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
