//! Accept loops: the connection cap, TLS with SNI, HTTP/1.1 and HTTP/2 serving, and graceful
//! drain.
//!
//! Over `--max-connections`, accepting pauses and new connections wait in the kernel backlog.
//! A TLS connection speaks the protocol ALPN chose; a plain one speaks HTTP/2 when it opens with
//! the HTTP/2 preface (prior knowledge) and HTTP/1.x otherwise. On shutdown ([`Drain`]) the
//! loops stop accepting and drop their sockets (new connections are refused), and the
//! connections they started finish their in-flight requests; idle keep-alive ones close.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::LazyConfigAcceptor;

use crate::dispatch;
use crate::head_timeout::{Close, H2Streams, HeadTimeoutIo, HeadTimer};
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

/// The HTTP servers: HTTP/1.1 with keep-alive, and HTTP/2.
struct Servers {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

fn servers() -> Servers {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // `HeadTimeoutIo` answers slow heads with 408; hyper's own timeout would close them
        // silently, and costs a timer per request head.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(1024)
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(30));
    Servers { h1, h2 }
}

/// Graceful shutdown of the accept loops and of the connections they started: each holds a
/// receiver of the channel.
#[derive(Debug)]
pub struct Drain(watch::Sender<bool>);

impl Default for Drain {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl Drain {
    /// Stops the accept loops and asks every connection to finish its in-flight requests and
    /// close (idle ones close at once); resolves when all loops and connections have ended.
    pub async fn drain(&self) {
        self.0.send_replace(true);
        self.0.closed().await;
    }
}

/// Accepts connections until the drain starts, then drops the listener.
pub async fn serve(
    listener: TcpListener,
    tls: bool,
    state: Arc<State>,
    options: ServeOptions,
    drain: Arc<Drain>,
) {
    let mut shutdown = drain.0.subscribe();
    let servers = Arc::new(servers());
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
        let servers = servers.clone();
        let drained = drain.0.subscribe();
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
                serve_tls(stream, peer, local, state, &servers, drained, limits).await;
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
                let mut io = HeadTimeoutIo::new(stream, timer.clone(), limit, idle);
                let (h2, first) = match sniff(&mut io).await {
                    Ok(Some(sniffed)) => sniffed,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "connection ended before a request");
                        return;
                    }
                };
                if h2 {
                    io.stand_aside();
                } else {
                    conn.head_timer = Some(timer);
                }
                let io = TokioIo::new(Prefixed { first, inner: io });
                serve_http(io, h2, conn, state, &servers, drained, idle).await;
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
    servers: &Servers,
    drained: watch::Receiver<bool>,
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
        serve_http(TokioIo::new(tls), true, info, state, servers, drained, idle).await;
    } else {
        let head_timer = Arc::new(HeadTimer::default());
        info.head_timer = Some(head_timer.clone());
        let io = HeadTimeoutIo::new(tls, head_timer, timeout, idle);
        serve_http(TokioIo::new(io), false, info, state, servers, drained, idle).await;
    }
}

/// Serves HTTP/2 (`h2`) or HTTP/1.1 on `io` until the connection ends or the drain closes it.
/// An HTTP/2 connection is also closed once it has had no stream open for `idle` (an HTTP/1.1
/// connection's `io` enforces that itself).
async fn serve_http<I>(
    io: I,
    h2: bool,
    mut conn: ConnInfo,
    state: Arc<State>,
    servers: &Servers,
    drained: watch::Receiver<bool>,
    idle: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let streams = h2.then(|| Arc::new(H2Streams::default()));
    conn.h2_streams = streams.clone();
    let conn = Arc::new(conn);
    let service = service_fn(move |req| dispatch::handle(state.clone(), conn.clone(), req));
    let ended = if let Some(streams) = streams {
        let connection = servers.h2.serve_connection(io, service);
        let watch = streams.watch(idle);
        until_drained(connection, drained, watch, |c| c.graceful_shutdown()).await
    } else {
        let connection = servers.h1.serve_connection(io, service).with_upgrades();
        let watch = std::future::pending();
        until_drained(connection, drained, watch, |c| c.graceful_shutdown()).await
    };
    match ended {
        Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        None => tracing::debug!(%peer, "client took no response bytes in time: connection closed"),
        Some(Ok(())) => {}
    }
}

/// Runs `connection` to its end; when the drain starts or `watch` finds it idle, asks it
/// (`shutdown`) to finish what is in flight and close. Holds `drained` until then, which is how
/// [`Drain`] counts it. `None` when `watch` found it stalled: the connection is dropped.
async fn until_drained<C: Future>(
    connection: C,
    mut drained: watch::Receiver<bool>,
    watch: impl Future<Output = Close>,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> Option<C::Output> {
    let mut connection = pin!(connection);
    tokio::select! {
        biased;
        ended = connection.as_mut() => return Some(ended),
        // Also when the `Drain` is gone, which only happens at exit.
        _ = drained.wait_for(|drain| *drain) => {}
        close = watch => match close {
            Close::Idle => tracing::debug!("idle HTTP/2 connection closed"),
            Close::Stalled => return None,
        },
    }
    shutdown(connection.as_mut());
    Some(connection.await)
}

/// Longest first read of a plain connection: room for a typical request head, so that hyper
/// finds it whole and the connection costs no extra read.
const FIRST_READ: usize = 4096;

/// The HTTP/2 connection preface, as far as it tells HTTP/2 from HTTP/1.x.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a plain connection: whether it speaks HTTP/2 (prior knowledge),
/// and the bytes read, which the server must see first. Reads until the bytes tell, usually
/// once. `None` when the client closed without a byte.
async fn sniff<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Option<(bool, Bytes)>> {
    let mut first = BytesMut::with_capacity(FIRST_READ);
    loop {
        if io.read_buf(&mut first).await? == 0 {
            return Ok((!first.is_empty()).then(|| (false, first.freeze())));
        }
        let n = first.len().min(H2_PREFACE.len());
        if first[..n] != H2_PREFACE[..n] {
            return Ok(Some((false, first.freeze())));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some((true, first.freeze())));
        }
    }
}

/// A connection whose first bytes were already read: reads give them first.
struct Prefixed<T> {
    first: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.first.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.first.len().min(buf.remaining());
        buf.put_slice(&self.first[..n]);
        self.first.advance(n);
        if self.first.is_empty() {
            // Frees the first read's buffer.
            self.first = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
