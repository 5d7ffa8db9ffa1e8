//! Shared end-to-end harness: echo backends, manifest writers, the real proxy binary, clients.
//!
//! Everything listens on 127.0.0.1 with port 0. The proxy is killed when its handle drops.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

pub type TestBody = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

// ---------------------------------------------------------------- backends

/// An in-test upstream on 127.0.0.1 speaking HTTP/1.1 and h2c.
///
/// - `/ws...`: WebSocket echo.
/// - `/slow?ms=N`: answers after N ms.
/// - `/download?bytes=N`: streams N bytes.
/// - `/upload`: reads the body as it streams and answers with its length.
/// - `/grpc...`: a body and the trailer `grpc-status: 0`.
/// - anything else: JSON `{backend, method, path, version, headers}`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    tasks: Arc<Mutex<JoinSet<()>>>,
    pub requests: Arc<AtomicUsize>,
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, None).await
    }

    /// A backend behind TLS (self-signed, ALPN h2 and http/1.1).
    pub async fn start_tls(name: &str) -> Self {
        let c = rcgen::generate_simple_self_signed(vec!["backend.test".to_owned()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with(
            name,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let name = name.to_owned();
        let (n, t, r) = (name.clone(), tasks.clone(), requests.clone());
        tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let name = n.clone();
                let requests = r.clone();
                let tls = tls.clone();
                t.lock().unwrap().spawn(async move {
                    let service = service_fn(move |req| {
                        requests.fetch_add(1, Ordering::Relaxed);
                        backend_answer(name.clone(), req)
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            name,
            addr,
            tasks,
            requests,
        }
    }

    /// Closes the listener and every connection: the port now refuses connections.
    pub fn stop(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn backend_answer(
    name: String,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/ws") {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .cloned()
            .unwrap_or_else(|| http::HeaderValue::from_static(""));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                } else if msg.is_close() {
                    return;
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(full(Bytes::new()))
            .unwrap());
    }
    // Backends whose name starts with `failing` answer 503 on /flaky.
    if path == "/flaky" && name.starts_with("failing") {
        return Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("x-backend", name.as_str())
            .body(full("failing\n"))
            .unwrap());
    }
    if path == "/status" {
        let code = query_param(&req, "code").unwrap_or(200) as u16;
        return Ok(Response::builder()
            .status(code)
            .header("x-backend", name.as_str())
            .body(full(format!("status {code}\n")))
            .unwrap());
    }
    if path == "/slow" {
        let ms = query_param(&req, "ms").unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(full(format!("slow {name}\n"))));
    }
    if path == "/download" {
        let total = query_param(&req, "bytes").unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(chunk.len() as u64);
                Some((
                    Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                    left - n,
                ))
            }
        });
        return Ok(Response::builder()
            .header("content-length", total)
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap());
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        return Ok(Response::new(full(total.to_string())));
    }
    if path.starts_with("/grpc") {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("x-backend", name.parse().unwrap());
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
            Ok(Frame::trailers(trailers)),
        ];
        return Ok(Response::builder()
            .header("content-type", "application/grpc")
            .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))))
            .unwrap());
    }
    let headers: BTreeMap<String, Vec<String>> = req
        .headers()
        .keys()
        .map(|k| {
            let values = req
                .headers()
                .get_all(k)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (k.as_str().to_owned(), values)
        })
        .collect();
    let body = json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("x-backend", name.as_str())
        .body(full(body.to_string()))
        .unwrap())
}

// ---------------------------------------------------------------- manifests

/// A temporary manifests directory, removed on drop.
pub struct Manifests {
    pub dir: PathBuf,
}

impl Manifests {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portico-proxy-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let m = Self { dir };
        m.write("00-class.yaml", &ingress_class("portico"));
        m
    }

    /// Writes a file atomically (temporary name, then rename), as editors and kubectl do.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.join(name)).unwrap();
    }
}

impl Drop for Manifests {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A default IngressClass served by Portico.
pub fn ingress_class(name: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: {name}
  annotations: {{ingressclass.kubernetes.io/is-default-class: \"true\"}}
spec: {{controller: portico.dev/ingress-controller}}
"
    )
}

/// A Service (port 80, named `http`) and one EndpointSlice per endpoint port on 127.0.0.1.
pub fn service(name: &str, ports: &[u16], app_protocol: Option<&str>) -> String {
    let app = app_protocol
        .map(|p| format!(", appProtocol: {p}"))
        .unwrap_or_default();
    let mut out = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{ports: [{{name: http, port: 80{app}}}]}}
"
    );
    for (i, port) in ports.iter().enumerate() {
        out.push_str(&format!(
            "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-{i}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"
        ));
    }
    out
}

/// An Ingress with one rule: `(path, pathType, service)` triples for `host` (`""`: no host).
pub fn ingress(name: &str, host: &str, paths: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  rules:\n  - "
    );
    if !host.is_empty() {
        out.push_str(&format!("host: \"{host}\"\n    "));
    }
    out.push_str("http:\n      paths:\n");
    for (path, kind, svc) in paths {
        out.push_str(&format!(
            "      - {{path: \"{path}\", pathType: {kind}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    out
}

/// An Ingress with only a default backend.
pub fn default_backend(name: &str, svc: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec: {{defaultBackend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}
"
    )
}

/// A self-signed certificate for `hosts`: (cert PEM, key PEM, cert DER).
pub fn certificate(hosts: &[&str]) -> (String, String, Vec<u8>) {
    let c =
        rcgen::generate_simple_self_signed(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap();
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().to_vec(),
    )
}

/// A TLS Secret.
pub fn tls_secret(name: &str, cert_pem: &str, key_pem: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}",
        indent(cert_pem),
        indent(key_pem)
    )
}

/// An Ingress terminating TLS for `host` with `secret`, routing everything to `svc`.
pub fn tls_ingress(name: &str, host: &str, secret: &str, svc: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  tls: [{{hosts: [\"{host}\"], secretName: {secret}}}]
  rules:
  - host: \"{host}\"
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}
"
    )
}

// ---------------------------------------------------------------- the proxy

/// The proxy binary, running on free ports.
pub struct Proxy {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Lines the proxy wrote on stdout (the access log).
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Starts the proxy on `dir` and waits until it is ready.
    pub async fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(dir, extra, &[]).await
    }

    /// Starts the proxy with extra environment variables.
    pub async fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portico-proxy"))
            .arg("--manifests")
            .arg(dir)
            .args([
                "--http",
                "127.0.0.1:0",
                "--https",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .args(["--watch-debounce", "20ms", "--log-level", "info"])
            .args(if extra.contains(&"--workers") {
                &[][..]
            } else {
                &["--workers", "2"][..]
            })
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the proxy binary starts");
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let lines = stdout_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("PORTICO_TEST_LOG").is_some() {
                    eprintln!("proxy: {line}");
                }
                if line.contains("listening http=")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the proxy logs its listening line");
        let addr = |key: &str| -> SocketAddr {
            let start = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
            line[start..]
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('"')
                .parse()
                .unwrap()
        };
        let proxy = Self {
            http: addr("http"),
            https: addr("https"),
            admin: addr("admin"),
            child,
            log,
            stdout: stdout_lines,
        };
        proxy.wait_ready().await;
        proxy
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn wait_ready(&self) {
        let client = Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = client.try_get(self.admin, "admin", "/readyz").await
                && r.status == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "proxy not ready in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/config` as JSON.
    pub async fn config(&self) -> Value {
        let r = Client::new().get(self.admin, "admin", "/config").await;
        serde_json::from_str(&r.body).unwrap()
    }

    pub async fn version(&self) -> u64 {
        self.config().await["version"].as_u64().unwrap()
    }

    /// Waits until `/config` shows a version above `above`, and returns it.
    pub async fn wait_version_above(&self, above: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.version().await;
            if v > above {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no new snapshot after version {above}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        Client::new()
            .get(self.admin, "admin", "/metrics")
            .await
            .body
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the proxy did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `/proc/<pid>/status` field in kB, such as `VmHWM` (peak RSS).
    pub fn proc_status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- clients

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The backend that answered (from the echo JSON).
    pub fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// A pooled keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub struct Client {
    inner: LegacyClient<HttpConnector, TestBody>,
}

impl Client {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            inner: LegacyClient::builder(TokioExecutor::new()).build(connector),
        }
    }

    pub async fn try_get(&self, addr: SocketAddr, host: &str, path: &str) -> Result<Resp, String> {
        let req = Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(Empty::new().map_err(|e| match e {}).boxed())
            .unwrap();
        self.send(req).await
    }

    pub async fn get(&self, addr: SocketAddr, host: &str, path: &str) -> Resp {
        self.try_get(addr, host, path).await.unwrap()
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn raw(&self, req: Request<TestBody>) -> Response<Incoming> {
        self.inner.request(req).await.unwrap()
    }

    pub async fn send(&self, req: Request<TestBody>) -> Result<Resp, String> {
        let response = tokio::time::timeout(Duration::from_secs(10), self.inner.request(req))
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        read(response).await
    }
}

/// Reads a response whole.
pub async fn read<B>(response: Response<B>) -> Result<Resp, String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Sends raw bytes on a new connection and returns the status code of the answer.
pub async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// Opens a WebSocket through the proxy's plain listener.
pub async fn websocket(
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let mut request = format!("ws://{host}{path}").into_client_request().unwrap();
    request.headers_mut().insert("host", host.parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("WebSocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends a text message and expects it back.
pub async fn ws_echo<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text))
        .await
        .expect("send on the WebSocket");
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("the WebSocket is open")
        .expect("a message");
    assert_eq!(reply.into_text().unwrap().as_str(), text);
}

/// A TLS client config that accepts any certificate (the tests check which one they got).
pub fn insecure_tls(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    insecure_tls_with_cert(alpn, None)
}

/// Like [`insecure_tls`], presenting a client certificate `(cert DER, key DER)` if given.
pub fn insecure_tls_with_cert(
    alpn: &[&[u8]],
    client: Option<(Vec<u8>, Vec<u8>)>,
) -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)));
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.into()],
                rustls::pki_types::PrivateKeyDer::try_from(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects with TLS to the proxy, sending `sni` (or none), and returns the stream.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = (*insecure_tls(alpn)).clone();
    let name = match sni {
        Some(name) => rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
        None => {
            config.enable_sni = false;
            rustls::pki_types::ServerName::try_from("no-sni.invalid").unwrap()
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy")
}

/// Sends one request over an established connection with HTTP/1.1 or HTTP/2.
pub async fn send_on<T>(io: T, h2: bool, req: Request<TestBody>) -> Resp
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        read(sender.send_request(req).await.unwrap()).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        read(sender.send_request(req).await.unwrap()).await.unwrap()
    }
}

/// An empty body.
pub fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed()
}
