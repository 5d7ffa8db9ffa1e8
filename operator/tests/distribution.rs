//! The real operator (development mode) and the real proxy (cluster mode) as processes on
//! 127.0.0.1: routing through the proxy follows the operator's manifests live, survives the
//! operator's death, and resumes when it comes back. And the operator's traces, as an OTLP
//! receiver on loopback gets them.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_otlp::receiver::{Received, Receiver, attr};
use tokio::net::TcpListener;

const TOKEN: &str = "dev-token-for-tests";
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- files

/// A temporary directory with `manifests/`, `tls/` and a token file; removed on drop.
struct Workspace {
    root: PathBuf,
}

impl Workspace {
    fn new(name: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("portico-operator-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::write(root.join("token"), format!("{TOKEN}\n")).unwrap();
        Self { root }
    }

    fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }

    fn token(&self) -> PathBuf {
        self.root.join("token")
    }

    /// Writes a manifest atomically, as editors and kubectl do.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.manifests().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests().join(name)).unwrap();
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const CLASS: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
";

/// Service `web` (port 80) whose one endpoint is 127.0.0.1:`port`.
fn service(port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"
    )
}

/// Ingress `name` routing everything for `host` to `web`.
fn ingress(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  ingressClassName: portico
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"
    )
}

// ---------------------------------------------------------------- backends

/// An HTTP/1.1 upstream answering every request with its name.
struct Backend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service =
                        service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- processes

/// A child process killed on drop, its stderr collected, its `listening ...` line parsed.
struct Process {
    name: &'static str,
    child: Child,
    listening: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(name: &'static str, mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("PORTICO_TEST_LOG").is_some() {
                    eprintln!("{name}: {line}");
                }
                if line.contains("listening ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let listening = match rx.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{name} did not log its addresses; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Self {
            name,
            child,
            listening,
            log,
        }
    }

    /// The address logged as `key=ADDR`.
    fn addr(&self, key: &str) -> SocketAddr {
        let line = &self.listening;
        let start = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches('"')
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}

/// The proxy binary (it belongs to another package of the workspace).
///
/// `cargo test --workspace --no-run` is what `make test` has already done, so under it this is a
/// no-op that returns the binary built with the workspace's unified features; under `cargo test -p
/// portico-operator` it brings the proxy binary up to date first. Building the proxy alone
/// (`cargo build -p portico-proxy`) would resolve features differently and rebuild about a
/// hundred dependencies a second time.
fn proxy_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let operator = Path::new(env!("CARGO_BIN_EXE_portico-operator"));
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["test", "-q", "--workspace", "--no-run"]);
            // The variables cargo set for this test would look like a changed environment to
            // build scripts, and rebuild dependencies for nothing; the ones a user set
            // (CARGO_HOME, CARGO_TARGET_DIR, CARGO_INCREMENTAL, ...) stay.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                let set_by_cargo = [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .iter()
                .any(|prefix| key.starts_with(prefix));
                if set_by_cargo || key == "OUT_DIR" {
                    cargo.env_remove(&*key);
                }
            }
            let status = cargo.status().expect("cargo runs");
            assert!(status.success(), "the workspace builds");
            operator.with_file_name("portico-proxy")
        })
        .clone()
}

fn start_operator(ws: &Workspace, listen: &str) -> Process {
    start_operator_with(ws, listen, &[], &[])
}

fn start_operator_with(
    ws: &Workspace,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portico-operator"));
    command.args(args).envs(env.iter().copied());
    command
        .arg("--manifests")
        .arg(ws.manifests())
        .arg("--static-token-file")
        .arg(ws.token())
        .arg("--tls-dir")
        .arg(ws.tls())
        .args(["--listen", listen, "--admin", "127.0.0.1:0"])
        .args(["--batch-delay", "20ms", "--ping-interval", "1s"]);
    Process::spawn("operator", command)
}

fn start_proxy(ws: &Workspace, operator: SocketAddr) -> Process {
    let mut command = Command::new(proxy_binary());
    command
        .args(["--control-plane", &format!("https://{operator}")])
        .args(["--class", "portico", "--pod-name", "proxy-test"])
        .arg("--control-plane-ca")
        .arg(ws.tls().join("ca.crt"))
        .arg("--token-file")
        .arg(ws.token())
        .args(["--http", "127.0.0.1:0", "--https", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0", "--workers", "1"]);
    Process::spawn("proxy", command)
}

// ---------------------------------------------------------------- clients

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Status and body of `GET http://addr{path}` with `Host: host`, or `None` when the request
/// failed.
async fn get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let request = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), client().request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `GET host/` through the proxy until it answers 200 with `body`.
async fn until_routed(proxy: &Process, host: &str, body: &str) {
    let http = proxy.addr("http");
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = get(http, host, "/").await;
        if last.as_ref().is_some_and(|(s, b)| *s == 200 && b == body) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{host} never answered {body:?}; last answer {last:?}");
}

async fn until_ready(process: &Process) {
    let admin = process.addr("admin");
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if get(admin, "admin", "/readyz")
            .await
            .is_some_and(|(s, _)| s == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} not ready in time", process.name);
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_follows_the_operator_live_and_survives_its_restart() {
    let ws = Workspace::new("distribution");
    let a = Backend::start("backend-a").await;
    let b = Backend::start("backend-b").await;
    ws.write("00-class.yaml", CLASS);
    ws.write("10-web.yaml", &service(a.addr.port()));
    ws.write("20-shop.yaml", &ingress("shop", "shop.example"));

    let mut operator = start_operator(&ws, "127.0.0.1:0");
    let listen = operator.addr("distribution");
    until_ready(&operator).await;
    let proxy = start_proxy(&ws, listen);
    until_ready(&proxy).await;
    until_routed(&proxy, "shop.example", "backend-a").await;
    assert_eq!(
        get(proxy.addr("http"), "unknown.example", "/")
            .await
            .map(|r| r.0),
        Some(404)
    );

    // Endpoints move (a backend delta on the wire), then a new Ingress (a full snapshot).
    ws.write("10-web.yaml", &service(b.addr.port()));
    until_routed(&proxy, "shop.example", "backend-b").await;
    ws.write("30-blog.yaml", &ingress("blog", "blog.example"));
    until_routed(&proxy, "blog.example", "backend-b").await;

    // The operator dies: the proxy keeps serving what it has, and stays ready.
    operator.kill();
    for host in ["shop.example", "blog.example"] {
        assert_eq!(
            get(proxy.addr("http"), host, "/").await,
            Some((200, "backend-b".to_owned()))
        );
    }
    until_ready(&proxy).await;

    // A change made while it is down reaches the proxy once it is back on the same address,
    // with the same certificates (kept in --tls-dir) and a new epoch.
    ws.write("10-web.yaml", &service(a.addr.port()));
    let operator = start_operator(&ws, &listen.to_string());
    assert_eq!(operator.addr("distribution"), listen);
    until_routed(&proxy, "shop.example", "backend-a").await;
    until_routed(&proxy, "blog.example", "backend-a").await;

    // And it is followed live again.
    std::fs::remove_file(ws.manifests().join("30-blog.yaml")).unwrap();
    let deadline = Instant::now() + WAIT;
    while get(proxy.addr("http"), "blog.example", "/")
        .await
        .map(|r| r.0)
        != Some(404)
    {
        assert!(
            Instant::now() < deadline,
            "the removed Ingress is still routed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(proxy.addr("http"), "shop.example", "/").await,
        Some((200, "backend-a".to_owned()))
    );

    // Endpoints move again: this time a backends delta on the wire.
    ws.write("10-web.yaml", &service(b.addr.port()));
    until_routed(&proxy, "shop.example", "backend-b").await;

    // The operator counts the proxy as connected, and what it sent it since its restart: the
    // snapshot in full on reconnection, again in full when an Ingress went, then a delta.
    let metrics = get(operator.addr("admin"), "admin", "/metrics")
        .await
        .unwrap()
        .1;
    for line in [
        "portico_operator_proxies_connected 1",
        "portico_operator_snapshot_frames_sent_total{kind=\"full\"} 2",
        "portico_operator_snapshot_frames_sent_total{kind=\"backends\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    // And which version the class is served, how big it is, and that the proxy applied it.
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = get(operator.addr("admin"), "admin", "/metrics")
            .await
            .unwrap()
            .1;
        let value = |prefix: &str| metric_value(&metrics, prefix);
        let version = value("portico_operator_snapshot_version{ingress_class=\"portico\"} ");
        let applied = value(
            "portico_operator_proxy_applied_version{ingress_class=\"portico\",proxy=\"proxy-test\"} ",
        );
        let current =
            value("portico_operator_proxies{ingress_class=\"portico\",state=\"current\"} ");
        let bytes = value("portico_operator_snapshot_bytes{ingress_class=\"portico\"} ");
        if version.is_some() && version == applied && current == Some(1) {
            assert!(bytes.is_some_and(|b| b > 100), "{metrics}");
            assert_eq!(
                value("portico_operator_proxies{ingress_class=\"portico\",state=\"behind\"} "),
                Some(0)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy's acknowledged version never matched: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_proxy_with_a_wrong_token_gets_nothing_and_stays_unready() {
    let ws = Workspace::new("wrong-token");
    ws.write("00-class.yaml", CLASS);
    let operator = start_operator(&ws, "127.0.0.1:0");
    until_ready(&operator).await;
    std::fs::write(ws.token(), "not-the-token").unwrap();
    let proxy = start_proxy(&ws, operator.addr("distribution"));
    let deadline = Instant::now() + WAIT;
    while !proxy.log().contains("401") {
        assert!(Instant::now() < deadline, "the refusal is not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(proxy.addr("admin"), "admin", "/readyz")
            .await
            .map(|r| r.0),
        Some(503)
    );
}

// ---------------------------------------------------------------- traces

/// Exports quickly, so that tests need not wait for the default five-second batches.
const FAST_EXPORT: &[(&str, &str)] = &[
    ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ("OTEL_BSP_EXPORT_TIMEOUT", "500"),
    ("PORTICO_POD_NAME", "operator-test-0"),
];

/// The translation passes that saw `ingresses` Ingresses.
fn passes(spans: &[Received], ingresses: &str) -> Vec<Received> {
    spans
        .iter()
        .filter(|s| {
            s.span.name == "translation pass"
                && s.attr("portico.ingresses").as_deref() == Some(ingresses)
        })
        .cloned()
        .collect()
}

fn child<'a>(spans: &'a [Received], parent: &Received, name: &str) -> Option<&'a Received> {
    spans.iter().find(|s| {
        s.span.name == name
            && s.parent_id() == parent.span_id()
            && s.trace_id() == parent.trace_id()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_translation_pass_is_a_trace_at_the_collector() {
    let receiver = Receiver::start().await;
    let ws = Workspace::new("traces");
    let a = Backend::start("backend-a").await;
    ws.write("00-class.yaml", CLASS);
    ws.write("10-web.yaml", &service(a.addr.port()));
    ws.write("20-shop.yaml", &ingress("shop", "shop.example"));
    let endpoint = receiver.url();
    let operator = start_operator_with(
        &ws,
        "127.0.0.1:0",
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "http"],
        FAST_EXPORT,
    );
    until_ready(&operator).await;

    // The first pass: one Ingress of one class, translated, then published as version 1.
    let spans = receiver
        .wait_for("first translation pass", |spans| {
            passes(spans, "1")
                .iter()
                .any(|p| child(spans, p, "publish").is_some())
        })
        .await;
    let pass = passes(&spans, "1")
        .into_iter()
        .find(|p| child(&spans, p, "publish").is_some())
        .unwrap();
    assert_eq!(pass.parent_id(), "", "a pass is the root of its trace");
    assert_eq!(pass.attr("portico.classes").as_deref(), Some("1"));
    assert_eq!(pass.attr("portico.routes").as_deref(), Some("1"));
    assert_eq!(pass.attr("portico.warnings").as_deref(), Some("0"));
    assert_eq!(pass.resource["service.name"], "portico-operator");
    assert_eq!(pass.resource["k8s.namespace.name"], "portico-system");
    assert_eq!(pass.resource["k8s.pod.name"], "operator-test-0");
    assert!(child(&spans, &pass, "translate").is_some(), "{pass:#?}");
    let publish = child(&spans, &pass, "publish").unwrap();
    let published = publish
        .span
        .events
        .iter()
        .find(|e| e.name == "snapshot published")
        .unwrap_or_else(|| panic!("no publish event: {publish:#?}"));
    assert_eq!(
        attr(&published.attributes, "class").as_deref(),
        Some("portico")
    );
    assert_eq!(attr(&published.attributes, "version").as_deref(), Some("1"));

    // A second Ingress: a new pass, a trace of its own.
    ws.write("30-blog.yaml", &ingress("blog", "blog.example"));
    let spans = receiver
        .wait_for("second translation pass", |spans| {
            !passes(spans, "2").is_empty()
        })
        .await;
    let second = &passes(&spans, "2")[0];
    assert_ne!(second.trace_id(), pass.trace_id());
    assert_eq!(second.attr("portico.routes").as_deref(), Some("2"));

    let metrics = get(operator.addr("admin"), "admin", "/metrics")
        .await
        .unwrap()
        .1;
    assert!(
        !metrics.contains("portico_operator_trace_spans_exported_total 0\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_spans_not_snapshots() {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let ws = Workspace::new("traces-down");
    let a = Backend::start("backend-a").await;
    ws.write("00-class.yaml", CLASS);
    ws.write("10-web.yaml", &service(a.addr.port()));
    ws.write("20-shop.yaml", &ingress("shop", "shop.example"));
    let operator = start_operator_with(
        &ws,
        "127.0.0.1:0",
        &["--otlp-endpoint", &endpoint],
        FAST_EXPORT,
    );
    until_ready(&operator).await;
    let proxy = start_proxy(&ws, operator.addr("distribution"));
    until_routed(&proxy, "shop.example", "backend-a").await;

    // The spans of those passes were dropped, and counted.
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = get(operator.addr("admin"), "admin", "/metrics")
            .await
            .unwrap()
            .1;
        let dropped =
            metric_value(&metrics, "portico_operator_trace_spans_dropped_total ").unwrap_or(0);
        if dropped > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dropped spans counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample whose line starts with `prefix` (name, labels and a space) in a
/// Prometheus text exposition.
fn metric_value(metrics: &str, prefix: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}
