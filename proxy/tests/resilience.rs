//! Streaming without buffering, endpoint ejection, configuration changes under load, a broken
//! manifest, draining on SIGTERM, and closing idle upstream connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

const HUNDRED_MB: u64 = 100 * 1024 * 1024;

async fn single_backend(name: &str, extra: &[&str]) -> (Manifests, Backend, Proxy) {
    let backend = Backend::start(name).await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write(
        "ing.yaml",
        &ingress("web", "web.test", &[("/", "Prefix", "web")]),
    );
    let proxy = Proxy::start(&m.dir, extra).await;
    (m, backend, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_both_ways_without_buffering() {
    let (_m, _backend, proxy) = single_backend("web", &[]).await;
    let client = Client::new();
    let baseline_kb = proxy.proc_status_kb("VmRSS");

    // Down: the client counts bytes as they arrive.
    let req = Request::get(format!("http://{}/download?bytes={HUNDRED_MB}", proxy.http))
        .header("host", "web.test")
        .body(empty())
        .unwrap();
    let response = client_raw(&client, req).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, HUNDRED_MB);

    // Up: a streamed body of 1600 chunks of 64 KiB.
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = (HUNDRED_MB / chunk.len() as u64) as usize;
    let stream = futures_util::stream::iter(
        std::iter::repeat_n(chunk, chunks)
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(c))),
    );
    let req = Request::post(format!("http://{}/upload", proxy.http))
        .header("host", "web.test")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap();
    let r = client.send(req).await.unwrap();
    assert_eq!(r.body, HUNDRED_MB.to_string());

    let peak_kb = proxy.proc_status_kb("VmHWM");
    eprintln!("RSS before {baseline_kb} kB, peak {peak_kb} kB");
    assert!(
        peak_kb < baseline_kb + 32 * 1024,
        "peak RSS {peak_kb} kB from {baseline_kb} kB: bodies must stream, not buffer"
    );
}

async fn client_raw(
    client: &Client,
    req: Request<TestBody>,
) -> http::Response<hyper::body::Incoming> {
    client.raw(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_endpoint_is_ejected_and_requests_keep_succeeding() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &service("web", &[a.addr.port(), b.addr.port()], None),
    );
    m.write(
        "ing.yaml",
        &ingress("web", "web.test", &[("/", "Prefix", "web")]),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;
    let client = Client::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = client.get(proxy.http, "web.test", "/").await;
        assert_eq!(r.status, 200);
        seen.insert(r.backend());
    }
    assert_eq!(seen.len(), 2, "round-robin uses both endpoints");

    b.stop();
    // Let the proxy notice its idle connections to b closing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..30 {
        let r = client.get(proxy.http, "web.test", "/").await;
        assert_eq!((r.status, r.backend().as_str()), (200, "a"), "request {i}");
    }
    let metrics = proxy.metrics().await;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portico_proxy_upstream_connect_errors_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors >= 1.0, "{metrics}");
    assert!(
        errors <= 3.0,
        "the ejected endpoint is skipped, not retried each time: {errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_config_changes_under_load_drop_nothing() {
    // One worker: the current-thread runtime serves while a separate thread translates.
    let (m, _backend, proxy) = single_backend("web", &["--workers", "1"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));

    // Keep-alive clients looping.
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let addr = proxy.http;
        loops.push(tokio::spawn(async move {
            let client = Client::new();
            while !stop.load(Ordering::Relaxed) {
                match client.try_get(addr, "web.test", "/loop").await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(websocket(proxy.http, "web.test", "/ws").await);
    }

    let mut version = proxy.version().await;
    let started = Instant::now();
    for i in 0..100 {
        // Each change adds a route, so every snapshot really differs.
        m.write(
            "ing.yaml",
            &ingress(
                "web",
                "web.test",
                &[
                    ("/", "Prefix", "web"),
                    (&format!("/gen-{i}"), "Exact", "web"),
                ],
            ),
        );
        version = proxy.wait_version_above(version).await;
        if i % 20 == 0 {
            for (j, ws) in sockets.iter_mut().enumerate() {
                ws_echo(ws, &format!("swap {i} socket {j}")).await;
            }
        }
    }
    let swaps = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    for (j, ws) in sockets.iter_mut().enumerate() {
        ws_echo(ws, &format!("after the swaps, socket {j}")).await;
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(ok.load(Ordering::Relaxed) > 100, "the clients kept going");
    assert!(swaps < Duration::from_secs(30), "100 swaps took {swaps:?}");
    // The last route is live.
    let r = Client::new().get(proxy.http, "web.test", "/gen-99").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_manifest_leaves_serving_intact() {
    let (m, _backend, proxy) = single_backend("web", &[]).await;
    let client = Client::new();
    let before = proxy.version().await;
    m.write(
        "ing.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nspec: [unclosed\n",
    );
    // Give the watcher time to see it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.get(proxy.http, "web.test", "/").await.status, 200);
    assert_eq!(
        proxy.version().await,
        before,
        "no snapshot from a broken file"
    );
    assert!(
        proxy
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("does not parse")),
        "the error is logged"
    );
    // Fixing it applies again; deleting it removes its routes.
    m.write(
        "ing.yaml",
        &ingress("web", "web.test", &[("/fixed", "Prefix", "web")]),
    );
    let v = proxy.wait_version_above(before).await;
    assert_eq!(client.get(proxy.http, "web.test", "/").await.status, 404);
    assert_eq!(
        client.get(proxy.http, "web.test", "/fixed").await.status,
        200
    );
    m.remove("ing.yaml");
    proxy.wait_version_above(v).await;
    assert_eq!(
        client.get(proxy.http, "web.test", "/fixed").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let (_m, _backend, mut proxy) = single_backend("web", &["--drain-timeout", "10s"]).await;
    let addr = proxy.http;
    let slow = tokio::spawn(async move {
        Client::new()
            .try_get(addr, "web.test", "/slow?ms=1500")
            .await
    });
    let mut ws = websocket(proxy.http, "web.test", "/ws").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    proxy.signal("TERM");

    // Readiness turns false and the listener closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slow request completes.
    let r = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((r.status, r.body.as_str()), (200, "slow web\n"));
    // The WebSocket lives until the drain deadline, then is closed, and the process exits 0.
    ws_echo(&mut ws, "still open while draining").await;
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(1200),
        "waited for the request: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    let closed = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap();
    assert!(
        !matches!(closed, Some(Ok(ref m)) if m.is_text()),
        "the WebSocket is closed at exit: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let (_m, _backend, proxy) = single_backend("web", &["--max-connections", "1"]).await;
    let first = Client::new();
    assert_eq!(first.get(proxy.http, "web.test", "/").await.status, 200);
    // The first client keeps its connection open: a second one waits in the backlog.
    let addr = proxy.http;
    let second = tokio::spawn(async move { Client::new().get(addr, "web.test", "/").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second connection waits");
    drop(first);
    let r = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(r.status, 200);
}

/// A raw HTTP/1.1 upstream whose first connection answers one request, then closes on the
/// second without answering: a keep-alive timeout racing the proxy's next request.
async fn closes_idle_connection_on_reuse() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for request in 0.. {
                    // Read one request head (the requests here have no body).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    if conn == 0 && request == 1 {
                        return; // closes the connection without an answer
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-backend: conn-{conn}\r\n\r\nok"
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_on_an_idle_connection_the_server_closed_is_sent_again() {
    let addr = closes_idle_connection_on_reuse().await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[addr.port()], None));
    m.write(
        "ing.yaml",
        &ingress("web", "web.test", &[("/", "Prefix", "web")]),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;
    let client = Client::new();
    let first = client.get(proxy.http, "web.test", "/").await;
    assert_eq!((first.status, first.backend().as_str()), (200, "conn-0"));
    // Idle long enough for the proxy to treat the pooled connection as possibly stale.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let second = client.get(proxy.http, "web.test", "/").await;
    assert_eq!((second.status, second.backend().as_str()), (200, "conn-1"));
}

/// A raw HTTP/1.1 upstream that answers every request after 200 ms, keeps connections alive
/// and counts the connections open on its side.
async fn counting_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let open = counter.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                'conn: loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'conn,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        break;
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let (addr, open) = counting_backend().await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[addr.port()], None));
    m.write(
        "ing.yaml",
        &ingress("web", "web.test", &[("/", "Prefix", "web")]),
    );
    let proxy = Proxy::start(&m.dir, &["--upstream-idle-timeout", "500ms"]).await;
    // Twenty requests at once: twenty upstream connections, idle in the pool afterwards.
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let http = proxy.http;
            tokio::spawn(async move { Client::new().get(http, "web.test", "/").await.status })
        })
        .collect();
    for request in burst {
        assert_eq!(request.await.unwrap(), 200);
    }
    let after_burst = open.load(Ordering::SeqCst);
    assert!(
        after_burst >= 10,
        "{after_burst} upstream connections after the burst"
    );
    // Nobody asks for them again: the sweep closes them within 1.25 timeouts.
    let deadline = Instant::now() + Duration::from_secs(3);
    while open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        open.load(Ordering::SeqCst),
        0,
        "idle upstream connections are closed after --upstream-idle-timeout"
    );
    // And the pool still serves.
    assert_eq!(
        Client::new().get(proxy.http, "web.test", "/").await.status,
        200
    );
}
