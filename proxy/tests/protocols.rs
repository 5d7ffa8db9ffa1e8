//! TLS with SNI and the fallback certificate, HTTP/2 by ALPN and by prior knowledge, gRPC with
//! trailers to an h2c upstream, and WebSocket upgrades.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_are_chosen_by_sni() {
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    let (a_pem, a_key, a_der) = certificate(&["a.test"]);
    let (b_pem, b_key, b_der) = certificate(&["b.test"]);
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write("secret-a.yaml", &tls_secret("a-tls", &a_pem, &a_key));
    m.write("secret-b.yaml", &tls_secret("b-tls", &b_pem, &b_key));
    m.write("ing-a.yaml", &tls_ingress("a", "a.test", "a-tls", "web"));
    m.write("ing-b.yaml", &tls_ingress("b", "b.test", "b-tls", "web"));
    let proxy = Proxy::start(&m.dir, &[]).await;

    let served = |tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    for (sni, der) in [("a.test", &a_der), ("b.test", &b_der), ("A.TEST", &a_der)] {
        let tls = tls_connect(proxy.https, Some(sni), &[b"http/1.1"]).await;
        assert_eq!(&served(&tls), der, "certificate for {sni}");
        let req = Request::get("/").header("host", sni).body(empty()).unwrap();
        let r = send_on(tls, false, req).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["headers"]["x-forwarded-proto"][0], "https");
    }
    // Unknown names and clients without SNI get the generated fallback certificate.
    for sni in [Some("unknown.test"), None] {
        let tls = tls_connect(proxy.https, sni, &[b"http/1.1"]).await;
        let der = served(&tls);
        assert!(der != a_der && der != b_der, "fallback for {sni:?}");
    }
    // A request for a host served with another certificate than the connection's: 421.
    let tls = tls_connect(proxy.https, Some("a.test"), &[b"http/1.1"]).await;
    let req = Request::get("/")
        .header("host", "b.test")
        .body(empty())
        .unwrap();
    assert_eq!(send_on(tls, false, req).await.status, 421);

    // Certificates swap with the snapshot.
    let (c_pem, c_key, c_der) = certificate(&["a.test"]);
    let v = proxy.version().await;
    m.write("secret-a.yaml", &tls_secret("a-tls", &c_pem, &c_key));
    proxy.wait_version_above(v).await;
    let tls = tls_connect(proxy.https, Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(served(&tls), c_der);
}

/// A proxy in front of `backend` alone: its Service (with `app_protocol`) and one Ingress
/// sending all of `host` to it. The manifests live as long as the returned value.
async fn one_route_proxy(
    backend: &Backend,
    app_protocol: Option<&str>,
    host: &str,
) -> (Manifests, Proxy) {
    let name = backend.name.as_str();
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &service(name, &[backend.addr.port()], app_protocol),
    );
    m.write("ing.yaml", &ingress(name, host, &[("/", "Prefix", name)]));
    let proxy = Proxy::start(&m.dir, &[]).await;
    (m, proxy)
}

/// A proxy started with `args`, serving `h2.test` over TLS (its own certificate) and plain
/// HTTP from backend `web`. The backend and manifests live as long as the returned values.
async fn h2_test_proxy(args: &[&str]) -> (Backend, Manifests, Proxy) {
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    let (pem, key, _) = certificate(&["h2.test"]);
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write("secret.yaml", &tls_secret("h2-tls", &pem, &key));
    m.write("ing.yaml", &tls_ingress("h2", "h2.test", "h2-tls", "web"));
    let proxy = Proxy::start(&m.dir, args).await;
    (backend, m, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn_and_by_prior_knowledge() {
    let (_backend, _m, proxy) = h2_test_proxy(&[]).await;

    // TLS with ALPN h2.
    let tls = tls_connect(proxy.https, Some("h2.test"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let req = Request::get("https://h2.test/over-tls?x=1")
        .body(empty())
        .unwrap();
    let r = send_on(tls, true, req).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/over-tls?x=1");
    assert_eq!(echo["version"], "HTTP/1.1", "the upstream speaks HTTP/1.1");
    assert_eq!(
        echo["headers"]["host"][0], "h2.test",
        ":authority becomes Host"
    );

    // Cleartext h2 with prior knowledge.
    let tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let req = Request::get("http://h2.test/h2c").body(empty()).unwrap();
    let r = send_on(tcp, true, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/h2c");
}

/// Sends the first `slow` bytes of a connection a few at a time, 20 ms apart.
struct Trickle {
    inner: tokio::net::TcpStream,
    slow: usize,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.slow == 0 {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        if let Some(pause) = &mut self.pause {
            ready!(pause.as_mut().poll(cx));
        }
        let n = buf.len().min(5).min(self.slow);
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..n]))?;
        self.slow -= n;
        self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connections_are_told_apart_however_their_first_bytes_arrive() {
    let backend = Backend::start("web").await;
    let (_m, proxy) = one_route_proxy(&backend, None, "slow.test").await;

    // The HTTP/2 preface is 24 bytes and a request head about 40: both arrive in pieces.
    for h2 in [false, true] {
        let tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let io = Trickle {
            inner: tcp,
            slow: 40,
            pause: None,
        };
        let req = Request::get("http://slow.test/piecemeal")
            .header("host", "slow.test")
            .body(empty())
            .unwrap();
        let r = send_on(io, h2, req).await;
        assert_eq!(r.status, 200, "h2: {h2}");
        assert_eq!(r.json()["path"], "/piecemeal", "h2: {h2}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_pass_through_to_an_h2c_upstream() {
    let backend = Backend::start("grpc").await;
    let (_m, proxy) = one_route_proxy(&backend, Some("kubernetes.io/h2c"), "grpc.test").await;

    let tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, _conn) = h2_handshake(tcp).await;
    let req = Request::post("http://grpc.test/grpc.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(
            http_body_util::Full::new(bytes::Bytes::from_static(b"\0\0\0\0\x02hi"))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-backend"], "grpc");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_echo_through_the_proxy() {
    let backend = Backend::start("ws").await;
    let (_m, proxy) = one_route_proxy(&backend, None, "ws.test").await;

    let mut ws = websocket(proxy.http, "ws.test", "/ws").await;
    for i in 0..10 {
        ws_echo(&mut ws, &format!("message {i}")).await;
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_negotiate_h2_and_skip_verification() {
    let backend = Backend::start_tls("secure").await;
    let (_m, proxy) = one_route_proxy(&backend, Some("https"), "secure.test").await;
    let c = Client::new();
    for _ in 0..3 {
        let r = c.get(proxy.http, "secure.test", "/over-tls").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let echo = r.json();
        assert_eq!(echo["backend"], "secure");
        assert_eq!(echo["version"], "HTTP/2.0", "ALPN chose h2 to the upstream");
        assert_eq!(echo["path"], "/over-tls");
    }
}

/// An HTTP/2 (prior knowledge or ALPN) client connection on `io`, driven by a task of its own.
async fn h2_handshake<T>(
    io: T,
) -> (
    hyper::client::conn::http2::SendRequest<TestBody>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

/// Two requests on one HTTP/2 connection, the first longer than the idle limit, the second
/// after a pause shorter than it; then returns how long the connection lived on, idle.
async fn idle_h2_connection_lifetime<T>(io: T, authority: &str) -> Duration
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, mut conn) = h2_handshake(io).await;
    let get = |path: &str| {
        Request::get(format!("http://{authority}{path}"))
            .body(empty())
            .unwrap()
    };
    // A stream open for longer than the idle limit: the connection is busy, not idle.
    let r = read(sender.send_request(get("/slow?ms=1500")).await.unwrap())
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "slow web\n"));
    // A pause shorter than the limit, then another request on the same connection.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = read(sender.send_request(get("/after-a-pause")).await.unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let idle_from = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut conn).await;
    let lived = idle_from.elapsed();
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the proxy closes the idle connection cleanly: {ended:?}"
    );
    drop(sender);
    lived
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_busy_ones_are_not() {
    let (_backend, _m, proxy) = h2_test_proxy(&["--idle-timeout", "1s"]).await;

    // Each connection made just before its first request: left unused, it would be idle.
    let plain = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let h2c = idle_h2_connection_lifetime(plain, "h2.test").await;
    let tls = tls_connect(proxy.https, Some("h2.test"), &[b"h2"]).await;
    let h2 = idle_h2_connection_lifetime(tls, "h2.test").await;
    for (name, lived) in [("h2c", h2c), ("h2 over TLS", h2)] {
        assert!(
            lived >= Duration::from_millis(900) && lived < Duration::from_secs(3),
            "{name}: closed {lived:?} after its last stream, with a 1 s idle limit"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_stops_reading_is_disconnected() {
    let (_backend, _m, proxy) = h2_test_proxy(&["--idle-timeout", "1s"]).await;
    const BIG: u64 = 64 << 20;
    let tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, conn) = h2_handshake(tcp).await;
    let req = Request::get(format!("http://h2.test/download?bytes={BIG}"))
        .body(empty())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    // The body is not read: the stream's window fills, and the proxy's response waits for a
    // client that takes nothing more.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ended = tokio::time::timeout(Duration::from_secs(1), conn).await;
    assert!(ended.is_ok(), "the proxy closed the connection");
    let mut body = response.into_body();
    let mut got = 0u64;
    let reading = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(frame)) = body.frame().await {
            got += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
    })
    .await;
    assert!(reading.is_ok());
    assert!(
        got < BIG,
        "the whole response was held for a client that stopped reading"
    );
}
