//! The distribution protocol end to end on 127.0.0.1: real TLS, real HTTP/2, real files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_api::{
    Backend, Endpoint, PathKind, PathMatch, Route, ServiceRef, Snapshot, VirtualHost,
};
use portico_distribute::client::{self, ClientConfig, ClientError, Held};
use portico_distribute::pki::Pki;
use portico_distribute::protocol::Message;
use portico_distribute::server::{self, Authenticator, Hub, ServeOptions, StaticToken};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const TOKEN: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(10);

/// A temporary directory with the CA and a token file, removed on drop.
struct Files {
    dir: PathBuf,
    pki: Pki,
}

impl Files {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("portico-distribute-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki =
            Pki::load_or_generate_dir(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.join("wrong-token"), "nope").unwrap();
        Self { dir, pki }
    }

    fn config(&self, addr: SocketAddr, class: &str) -> ClientConfig {
        let mut config = ClientConfig::new(
            format!("https://{addr}"),
            class,
            "proxy-1",
            self.dir.join("ca.crt"),
            self.dir.join("token"),
        );
        config.backoff_initial = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(400);
        config
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running server; stops when dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(files: &Files, hub: Hub, auth: Arc<dyn Authenticator>) -> Self {
        Self::start_on(files, hub, auth, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(
        files: &Files,
        hub: Hub,
        auth: Arc<dyn Authenticator>,
        addr: SocketAddr,
    ) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener: TcpListener = socket.listen(64).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let options = ServeOptions {
            ping_interval: Duration::from_millis(200),
            ..Default::default()
        };
        let task = tokio::spawn(server::serve(
            listener,
            files.pki.server_config().unwrap(),
            hub,
            auth,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn backend(name: &str, port: u16) -> Backend {
    Backend {
        service: ServiceRef {
            namespace: "ns".into(),
            name: name.into(),
            port: 80,
        },
        endpoints: vec![Endpoint {
            address: [10, 0, 0, 1].into(),
            port,
        }],
        ..Default::default()
    }
}

/// A snapshot with `routes` routes over 10 backends.
fn snapshot(class: &str, routes: usize) -> Snapshot {
    let mut s = Snapshot::empty(class);
    for b in 0..10 {
        s.backends
            .insert(format!("ns/svc{b}:80"), backend(&format!("svc{b}"), 8000));
    }
    s.hosts = vec![VirtualHost {
        host: "example.com".into(),
        routes: (0..routes)
            .map(|i| Route {
                id: format!("ns/ing/example.com/Prefix/p{i}"),
                path: Some(PathMatch {
                    kind: PathKind::Prefix,
                    value: format!("/p{i}"),
                }),
                backend: format!("ns/svc{}:80", i % 10),
                source: Default::default(),
                policy: Default::default(),
            })
            .collect(),
    }];
    s
}

fn static_token() -> Arc<dyn Authenticator> {
    Arc::new(StaticToken::new(TOKEN))
}

async fn next(conn: &mut client::Connection) -> (Message, usize) {
    loop {
        let got = tokio::time::timeout(WAIT, conn.next_message())
            .await
            .expect("a message in time")
            .unwrap()
            .expect("the stream is open");
        if got.0 != Message::Ping {
            return got;
        }
    }
}

#[tokio::test]
async fn changes_are_pushed_and_backend_changes_travel_as_small_deltas() {
    let files = Files::new("push");
    let hub = Hub::new();
    let server = Server::start(&files, hub.clone(), static_token()).await;
    let config = files.config(server.addr, "web");

    // Connected before anything is published: the stream waits.
    let mut held = Held::default();
    let mut conn = client::connect(&config, &held).await.unwrap();
    let first = snapshot("web", 500);
    hub.publish("web", first.clone());
    let (message, full_size) = next(&mut conn).await;
    assert!(matches!(message, Message::Full { version: 1, .. }));
    assert!(held.apply(message).unwrap());
    assert_eq!(held.snapshot.as_ref().unwrap().hosts, first.hosts);

    // Endpoints of one backend move: a delta, a fraction of the full size.
    let mut second = first.clone();
    second.backends.get_mut("ns/svc3:80").unwrap().endpoints[0].port = 9000;
    second.backends.remove("ns/svc9:80");
    assert_eq!(hub.publish("web", second.clone()), 2);
    let (message, delta_size) = next(&mut conn).await;
    let Message::Backends {
        base,
        changed,
        removed,
        ..
    } = &message
    else {
        panic!("expected a backends delta, got {message:?}");
    };
    assert_eq!(*base, 1);
    assert_eq!(changed.keys().collect::<Vec<_>>(), ["ns/svc3:80"]);
    assert_eq!(removed, &["ns/svc9:80"]);
    assert!(
        delta_size * 20 < full_size,
        "delta {delta_size} bytes vs full {full_size} bytes"
    );
    assert!(held.apply(message).unwrap());
    let sent = hub.sent();
    assert_eq!((sent.full_frames, sent.delta_frames), (1, 1));
    assert_eq!(sent.full_bytes, full_size as u64);
    assert_eq!(sent.delta_bytes, delta_size as u64);
    second.version = 2;
    assert_eq!(
        held.snapshot.as_ref().unwrap(),
        &second,
        "reassembled identically"
    );

    // A route change is a full snapshot again.
    let mut third = second.clone();
    third.hosts[0].routes.pop();
    hub.publish("web", third);
    let (message, _) = next(&mut conn).await;
    assert!(
        matches!(message, Message::Full { version: 3, .. }),
        "{message:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_resumed_stream_sends_only_what_changed() {
    let files = Files::new("resume");
    let hub = Hub::new();
    let server = Server::start(&files, hub.clone(), static_token()).await;
    let config = files.config(server.addr, "web");
    hub.publish("web", snapshot("web", 50));

    let mut held = Held::default();
    let mut conn = client::connect(&config, &held).await.unwrap();
    held.apply(next(&mut conn).await.0).unwrap();
    drop(conn);

    // Reconnect holding the latest version; the first frame after a backend change is a delta
    // on top of it: nothing was resent in between.
    let mut conn = client::connect(&config, &held).await.unwrap();
    let mut changed = snapshot("web", 50);
    changed.backends.get_mut("ns/svc0:80").unwrap().endpoints[0].port = 1;
    hub.publish("web", changed);
    let (message, _) = next(&mut conn).await;
    assert!(
        matches!(
            message,
            Message::Backends {
                base: 1,
                version: 2,
                ..
            }
        ),
        "{message:?}"
    );
    held.apply(message).unwrap();
    drop(conn);

    // Away while the backends changed twice more: one delta from what it holds.
    let mut later = snapshot("web", 50);
    later.backends.get_mut("ns/svc1:80").unwrap().endpoints[0].port = 2;
    hub.publish("web", later.clone());
    later.backends.get_mut("ns/svc2:80").unwrap().endpoints[0].port = 3;
    hub.publish("web", later.clone());
    let mut conn = client::connect(&config, &held).await.unwrap();
    let (message, _) = next(&mut conn).await;
    assert!(
        matches!(
            message,
            Message::Backends {
                base: 2,
                version: 4,
                ..
            }
        ),
        "{message:?}"
    );
    held.apply(message).unwrap();
    later.version = 4;
    assert_eq!(held.snapshot.unwrap(), later);
    server.stop().await;
}

#[tokio::test]
async fn wrong_token_is_401_and_another_class_is_403() {
    let files = Files::new("auth");
    let hub = Hub::new();
    hub.publish("web", snapshot("web", 1));
    hub.publish("internal", snapshot("internal", 1));
    let auth = Arc::new(StaticToken::for_classes(TOKEN, &["web"]));
    let server = Server::start(&files, hub.clone(), auth).await;

    let mut config = files.config(server.addr, "web");
    config.token_file = files.dir.join("wrong-token");
    match client::connect(&config, &Held::default()).await {
        Err(ClientError::Status { status, .. }) => assert_eq!(status, 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let config = files.config(server.addr, "internal");
    match client::connect(&config, &Held::default()).await {
        Err(ClientError::Status { status, .. }) => assert_eq!(status, 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let config = files.config(server.addr, "web");
    assert!(client::connect(&config, &Held::default()).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn the_client_follows_acks_and_takes_a_full_snapshot_from_a_restarted_server() {
    let files = Files::new("restart");
    let hub = Hub::new();
    let server = Server::start(&files, hub.clone(), static_token()).await;
    let addr = server.addr;
    let mut acks = hub.acks();
    hub.publish("web", snapshot("web", 3));

    let (tx, mut rx) = mpsc::unbounded_channel();
    let follower = tokio::spawn(client::run(files.config(addr, "web"), move |s| {
        tx.send(s).map_err(|e| e.to_string())
    }));
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.version, 1);
    let mut changed = snapshot("web", 3);
    changed.hosts[0].routes.pop();
    hub.publish("web", changed.clone());
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.version, got.route_count()), (2, 2));

    // The hub learns the proxy applied version 2.
    tokio::time::timeout(
        WAIT,
        acks.wait_for(|a| {
            a.get("web")
                .and_then(|p| p.get("proxy-1"))
                .is_some_and(|p| p.connected && p.version == Some(2))
        }),
    )
    .await
    .unwrap()
    .unwrap();

    // The server goes; the hub sees the proxy disconnected.
    server.stop().await;
    tokio::time::timeout(
        WAIT,
        acks.wait_for(|a| {
            a.get("web")
                .and_then(|p| p.get("proxy-1"))
                .is_some_and(|p| !p.connected)
        }),
    )
    .await
    .unwrap()
    .unwrap();

    // A new server (new epoch, versions from 1 again) on the same address: the client takes
    // its version 1 in full, though it held version 2 of the old epoch.
    let hub = Hub::new();
    hub.publish("web", changed);
    let server = Server::start_on(&files, hub, static_token(), addr).await;
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.version, got.route_count()), (1, 2));
    follower.abort();
    server.stop().await;
}

/// A response body that never yields a frame.
struct Silence;

impl http_body::Body for Silence {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// A server that accepts the stream and then never sends a byte, like an operator whose node
/// vanished without closing its connections. Counts the streams opened.
async fn silent_server(files: &Files) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(files.pki.server_config().unwrap());
    let streams = Arc::new(AtomicUsize::new(0));
    let counter = streams.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, std::convert::Infallible>(http::Response::new(Silence)) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, streams)
}

#[tokio::test]
async fn a_silent_connection_is_given_up_and_replaced() {
    let files = Files::new("silent");
    let (addr, streams) = silent_server(&files).await;
    let mut config = files.config(addr, "web");
    config.idle_timeout = Duration::from_millis(300);

    let mut conn = client::connect(&config, &Held::default()).await.unwrap();
    match tokio::time::timeout(WAIT, conn.next_message())
        .await
        .unwrap()
    {
        Err(ClientError::Idle(_)) => {}
        other => panic!("expected the idle timeout, got {other:?}"),
    }

    // The follower keeps trying: more streams are opened.
    let follower = tokio::spawn(client::run(config, |_| Ok(())));
    let deadline = tokio::time::Instant::now() + WAIT;
    while streams.load(Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no reconnection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    follower.abort();
}
