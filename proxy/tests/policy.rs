//! IngressPolicy enforced over real HTTP: the real proxy binary on a manifests directory with
//! IngressPolicy objects, echo backends on loopback, and (for distributed limits) a real
//! `redis-server`.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

/// An IngressPolicy whose target is one path of an Ingress (or the whole Ingress when `path`
/// is empty), with `defaults` in YAML flow style.
fn policy(name: &str, ingress: &str, host: &str, path: &str, defaults: &str) -> String {
    let target = if path.is_empty() {
        format!("{{group: networking.k8s.io, kind: Ingress, name: {ingress}}}")
    } else {
        format!(
            "{{group: networking.k8s.io, kind: Ingress, name: {ingress}, host: \"{host}\", path: \"{path}\"}}"
        )
    };
    format!(
        "apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{target}]
  defaults: {defaults}
"
    )
}

fn get(host: &str, path: &str) -> http::request::Builder {
    Request::get(format!("http://proxy{path}")).header("host", host)
}

async fn send(c: &Client, proxy: &Proxy, req: http::request::Builder, body: TestBody) -> Resp {
    let mut req = req.body(body).unwrap();
    let uri = format!(
        "http://{}{}",
        proxy.http,
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    *req.uri_mut() = uri.parse().unwrap();
    c.send(req).await.unwrap()
}

fn body(s: &'static str) -> TestBody {
    http_body_util::Full::new(Bytes::from_static(s.as_bytes()))
        .map_err(|e| match e {})
        .boxed()
}

/// A chunked body (no Content-Length) of `chunks` chunks of 1 KiB.
fn chunked(chunks: usize) -> TestBody {
    let stream =
        futures_util::stream::iter((0..chunks).map(|_| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'x'; 1024])))
        }));
    BodyExt::boxed(StreamBody::new(stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_cors_body_headers_timeouts_and_limits() {
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write(
        "app.yaml",
        &ingress(
            "app",
            "app.test",
            &[
                ("/open", "Prefix", "web"),
                ("/internal", "Prefix", "web"),
                ("/cors", "Prefix", "web"),
                ("/upload", "Prefix", "web"),
                ("/edit", "Prefix", "web"),
                ("/slow", "Prefix", "web"),
                ("/limited", "Prefix", "web"),
            ],
        ),
    );
    m.write(
        "cap.yaml",
        &ingress("cap", "cap.test", &[("/slow", "Prefix", "web")]),
    );
    m.write(
        "p-internal.yaml",
        &policy(
            "internal",
            "app",
            "app.test",
            "/internal",
            "{ipAccess: {deny: [127.0.0.0/8]}}",
        ),
    );
    m.write(
        "p-cors.yaml",
        &policy(
            "cors",
            "app",
            "app.test",
            "/cors",
            "{cors: {allowOrigins: [\"https://app.example\"], allowMethods: [GET, PUT], allowHeaders: [X-Token], maxAge: 600}}",
        ),
    );
    m.write(
        "p-upload.yaml",
        &policy(
            "upload",
            "app",
            "app.test",
            "/upload",
            "{body: {maxRequestSize: 4Ki}}",
        ),
    );
    m.write(
        "p-edit.yaml",
        &policy(
            "edit",
            "app",
            "app.test",
            "/edit",
            "{headers: {request: {set: [{name: X-Env, value: prod}], remove: [X-Secret]}, response: {set: [{name: X-Frame-Options, value: DENY}]}}}",
        ),
    );
    m.write(
        "p-slow.yaml",
        &policy(
            "slow",
            "app",
            "app.test",
            "/slow",
            "{timeouts: {backendRequest: 200ms}}",
        ),
    );
    m.write(
        "p-limited.yaml",
        &policy(
            "limited",
            "app",
            "app.test",
            "/limited",
            "{rateLimit: {rules: [{name: per-user, key: {type: Header, name: X-User}, limit: {requests: 2, period: 1m}}]}}",
        ),
    );
    m.write(
        "p-cap.yaml",
        &policy(
            "cap",
            "cap",
            "",
            "",
            "{rateLimit: {concurrency: {maxInFlight: 2}}}",
        ),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;
    let c = Client::new();
    let at = |path: &'static str| get("app.test", path);

    // ipAccess: loopback is denied on /internal only.
    assert_eq!(send(&c, &proxy, at("/open"), empty()).await.status, 200);
    let before = backend.requests.load(Ordering::Relaxed);
    assert_eq!(send(&c, &proxy, at("/internal"), empty()).await.status, 403);
    assert_eq!(
        backend.requests.load(Ordering::Relaxed),
        before,
        "a refused request never reaches the backend"
    );

    // CORS: the proxy answers the preflight; actual requests get the headers.
    let preflight = Request::options("http://proxy/cors")
        .header("host", "app.test")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT");
    let r = send(&c, &proxy, preflight, empty()).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers["access-control-allow-methods"], "GET, PUT");
    assert_eq!(r.headers["access-control-max-age"], "600");
    assert_eq!(backend.requests.load(Ordering::Relaxed), before);
    let r = send(
        &c,
        &proxy,
        at("/cors").header("origin", "https://app.example"),
        empty(),
    )
    .await;
    assert_eq!((r.status, r.backend().as_str()), (200, "web"));
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let r = send(
        &c,
        &proxy,
        at("/cors").header("origin", "https://evil.example"),
        empty(),
    )
    .await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));

    // body: 413 by Content-Length, and for a chunked body crossing the limit while streaming.
    let r = send(
        &c,
        &proxy,
        Request::post("http://proxy/upload").header("host", "app.test"),
        body("small"),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "5"));
    // Over the limit by Content-Length: answered from the head alone, before any of the body is
    // read (as a client sending `Expect: 100-continue` would see it).
    let head = "POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5000\r\n\r\n";
    assert_eq!(raw_status(proxy.http, head).await, 413);
    let r = send(
        &c,
        &proxy,
        Request::post("http://proxy/upload").header("host", "app.test"),
        chunked(3),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "3072"));
    // A chunked body crossing the limit while it streams: 413 once 4 KiB have gone by.
    let mut chunked_head = String::from(
        "POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..6 {
        chunked_head.push_str(&format!("400\r\n{}\r\n", "z".repeat(1024)));
    }
    assert_eq!(raw_status(proxy.http, &chunked_head).await, 413);

    // headers: request edits reach the backend, response edits reach the client.
    let r = send(
        &c,
        &proxy,
        at("/edit").header("x-secret", "s").header("x-env", "dev"),
        empty(),
    )
    .await;
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-env"][0], "prod");
    assert!(seen.get("x-secret").is_none());
    assert_eq!(r.headers["x-frame-options"], "DENY");

    // timeouts: 504 when the backend is slower than backendRequest.
    assert_eq!(
        send(&c, &proxy, at("/slow?ms=1000"), empty()).await.status,
        504
    );
    assert_eq!(
        send(&c, &proxy, at("/slow?ms=10"), empty()).await.status,
        200
    );

    // rateLimit by header: two per minute per X-User, then 429 with the headers clients need.
    // The bucket starts full: both at once.
    for _ in 0..2 {
        assert_eq!(
            send(
                &c,
                &proxy,
                at("/limited").header("x-user", "alice"),
                empty()
            )
            .await
            .status,
            200
        );
    }
    let r = send(
        &c,
        &proxy,
        at("/limited").header("x-user", "alice"),
        empty(),
    )
    .await;
    assert_eq!(r.status, 429);
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(r.headers["ratelimit-limit"], "2");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    assert_eq!(r.headers["ratelimit-policy"], "2;w=60");
    assert_eq!(
        send(&c, &proxy, at("/limited").header("x-user", "bob"), empty())
            .await
            .status,
        200
    );

    // concurrency: two in flight; the third at the same time gets 503.
    let statuses: Vec<u16> = futures_util::future::join_all((0..3).map(|i| {
        let c = Client::new();
        let addr = proxy.http;
        async move {
            tokio::time::sleep(Duration::from_millis(i * 50)).await;
            c.get(addr, "cap.test", "/slow?ms=600").await.status
        }
    }))
    .await;
    assert_eq!(statuses, [200, 200, 503]);
    assert_eq!(
        c.get(proxy.http, "cap.test", "/slow?ms=1").await.status,
        200,
        "slots are released"
    );
    drop(m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_from_trusted_proxies_only() {
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write(
        "app.yaml",
        &ingress("app", "app.test", &[("/", "Prefix", "web")]),
    );
    m.write(
        "p.yaml",
        &policy(
            "office",
            "app",
            "",
            "",
            "{ipAccess: {allow: [203.0.113.0/24], source: ClientIP}}",
        ),
    );
    let trusting = Proxy::start(&m.dir, &["--trusted-proxies", "127.0.0.0/8"]).await;
    let untrusting = Proxy::start(&m.dir, &[]).await;
    let c = Client::new();
    let xff = |v: &'static str| get("app.test", "/").header("x-forwarded-for", v);
    assert_eq!(
        send(&c, &trusting, xff("203.0.113.7"), empty())
            .await
            .status,
        200
    );
    // The right-most untrusted entry counts, not a spoofed left-most one.
    assert_eq!(
        send(&c, &trusting, xff("203.0.113.7, 198.51.100.1"), empty())
            .await
            .status,
        403
    );
    assert_eq!(
        send(&c, &trusting, get("app.test", "/"), empty())
            .await
            .status,
        403
    );
    // A proxy that trusts nobody sees the loopback peer, whatever the header says.
    assert_eq!(
        send(&c, &untrusting, xff("203.0.113.7"), empty())
            .await
            .status,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_failing_endpoint_within_the_budget() {
    let good = Backend::start("good").await;
    let bad = Backend::start("failing").await;
    let m = Manifests::new();
    m.write(
        "svc.yaml",
        &service("web", &[good.addr.port(), bad.addr.port()], None),
    );
    m.write(
        "app.yaml",
        &ingress(
            "app",
            "app.test",
            &[("/flaky", "Prefix", "web"), ("/plain", "Prefix", "web")],
        ),
    );
    m.write(
        "p.yaml",
        &policy(
            "retry",
            "app",
            "app.test",
            "/flaky",
            "{retry: {attempts: 2, on: [gateway-error], backoff: {base: 1ms, max: 5ms}, budget: {percent: 60, minPerSecond: 10}}}",
        ),
    );
    m.write("svc-down.yaml", &service("down", &[bad.addr.port()], None));
    m.write(
        "down.yaml",
        &ingress("down", "down.test", &[("/", "Prefix", "down")]),
    );
    m.write(
        "p-down.yaml",
        &policy(
            "down",
            "down",
            "",
            "",
            "{retry: {attempts: 3, on: [gateway-error], backoff: {base: 1ms, max: 2ms}}}",
        ),
    );
    // Budgets fill with time from the moment the snapshot is applied.
    let applied = Instant::now();
    let proxy = Proxy::start(&m.dir, &[]).await;
    let c = Client::new();
    for _ in 0..20 {
        let r = c.get(proxy.http, "app.test", "/flaky").await;
        assert_eq!((r.status, r.backend().as_str()), (200, "good"));
    }
    assert!(
        bad.requests.load(Ordering::Relaxed) > 0,
        "round robin sent tries to the failing endpoint"
    );
    // POST is not idempotent: not retried, so the failing endpoint's 503 shows through.
    let mut saw_503 = false;
    for _ in 0..6 {
        let r = send(
            &c,
            &proxy,
            Request::post("http://proxy/flaky").header("host", "app.test"),
            body("x"),
        )
        .await;
        saw_503 |= r.status == 503;
    }
    assert!(saw_503);

    // A backend that is down: the default budget (20% of requests plus 10 a second) keeps the
    // tries from quadrupling the load, though every request may be tried four times.
    let before = bad.requests.load(Ordering::Relaxed);
    for _ in 0..100 {
        assert_eq!(c.get(proxy.http, "down.test", "/flaky").await.status, 503);
    }
    let tries = bad.requests.load(Ordering::Relaxed) - before;
    let allowance = 100.0 * 1.2 + 10.0 + 10.0 * applied.elapsed().as_secs_f64() + 1.0;
    assert!(
        tries as f64 <= allowance,
        "{tries} tries for 100 requests (allowance {allowance:.0})"
    );
    assert!(tries > 100, "some requests were retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_within_five_percent_over_ten_seconds() {
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write(
        "app.yaml",
        &ingress("app", "app.test", &[("/", "Prefix", "web")]),
    );
    m.write(
        "p.yaml",
        &policy(
            "global",
            "app",
            "",
            "",
            "{rateLimit: {rules: [{name: all, key: {type: Global}, limit: {requests: 50, period: 1s, burst: 5}}]}}",
        ),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let run_for = Duration::from_secs(10);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (ok, limited) = (ok.clone(), limited.clone());
            let addr = proxy.http;
            tokio::spawn(async move {
                let c = Client::new();
                while started.elapsed() < run_for {
                    match c.get(addr, "app.test", "/").await.status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        429 => limited.fetch_add(1, Ordering::Relaxed),
                        s => panic!("unexpected status {s}"),
                    };
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed) as f64;
    // A full bucket at the start (50 + the burst of 5), then 50/s.
    let expected = 50.0 * elapsed + 55.0;
    assert!(
        (ok - expected).abs() <= expected * 0.05,
        "{ok} allowed in {elapsed:.2}s, expected {expected:.0} ± 5% ({} limited)",
        limited.load(Ordering::Relaxed)
    );
    assert!(
        limited.load(Ordering::Relaxed) > 0,
        "the load exceeded the limit"
    );
}

/// A `redis-server` on a free loopback port, stopped on drop.
struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps.sh test, run by make test, installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, addr }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_limits_hold_across_proxies_through_redis() {
    let redis = RedisServer::start().await;
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write(
        "app.yaml",
        &ingress("app", "app.test", &[("/", "Prefix", "web")]),
    );
    m.write(
        "p.yaml",
        &policy(
            "shared",
            "app",
            "",
            "",
            "{rateLimit: {rules: [{name: per-client, key: {type: Header, name: X-Client}, limit: {requests: 10, period: 1m}, replicas: Distributed}]}}",
        ),
    );
    let url = format!("redis://{}/", redis.addr);
    let a = Proxy::start(&m.dir, &["--redis-url", &url]).await;
    let b = Proxy::start(&m.dir, &["--redis-url", &url]).await;
    let c = Client::new();
    let mut ok = 0;
    for i in 0..30 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        let r = send(
            &c,
            proxy,
            get("app.test", "/").header("x-client", "ci"),
            empty(),
        )
        .await;
        assert!(matches!(r.status, 200 | 429), "{}", r.status);
        ok += usize::from(r.status == 200);
    }
    assert_eq!(ok, 10, "ten per minute across both proxies, not ten each");
    // Another key has its own budget.
    assert_eq!(
        send(
            &c,
            &a,
            get("app.test", "/").header("x-client", "other"),
            empty()
        )
        .await
        .status,
        200
    );

    // Redis gone: each proxy falls back to its share of the limit (no replicas count in
    // standalone mode: the whole limit), and keeps serving.
    drop(redis);
    let r = send(
        &c,
        &a,
        get("app.test", "/").header("x-client", "fresh"),
        empty(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        a.metrics()
            .await
            .contains("portico_proxy_rate_limit_backend_errors_total 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_asked_for_and_verified() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let backend = Backend::start("web").await;
    // A client CA and a client certificate it issued, plus one from a stranger CA.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.subject_alt_names =
        vec![SanType::URI("spiffe://partners/acme".try_into().unwrap())];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger".to_owned()]).unwrap();

    let (cert_pem, key_pem, _) = certificate(&["secure.test", "open.test"]);
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write("tls.yaml", &tls_secret("site", &cert_pem, &key_pem));
    m.write(
        "secure.yaml",
        &tls_ingress("secure", "secure.test", "site", "web"),
    );
    m.write(
        "open.yaml",
        &tls_ingress("open", "open.test", "site", "web"),
    );
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    m.write(
        "ca.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: partners-ca}}\nstringData:\n  ca.crt: |\n{}",
            indent(&ca.pem())
        ),
    );
    m.write(
        "p.yaml",
        &policy(
            "mtls",
            "secure",
            "",
            "",
            "{clientCertificate: {caRef: {name: partners-ca}, required: true, allowedSANs: [\"spiffe://partners/acme\"]}}",
        ),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;

    let connect = |cert: Option<(Vec<u8>, Vec<u8>)>, sni: &'static str| {
        let addr = proxy.https;
        async move {
            let config = insecure_tls_with_cert(&[b"http/1.1"], cert);
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(config)
                .connect(rustls::pki_types::ServerName::try_from(sni).unwrap(), tcp)
                .await
        }
    };
    let req = |host: &str| {
        Request::get("/")
            .header("host", host)
            .body(empty())
            .unwrap()
    };

    // With the partner's certificate: served.
    let ok = (client_cert.der().to_vec(), client_key.serialize_der());
    let tls = connect(Some(ok.clone()), "secure.test").await.unwrap();
    assert_eq!(send_on(tls, false, req("secure.test")).await.status, 200);
    // Without one: the handshake succeeds (the CA only asks), the required path refuses.
    let tls = connect(None, "secure.test").await.unwrap();
    assert_eq!(send_on(tls, false, req("secure.test")).await.status, 403);
    // A certificate from another CA fails the handshake itself.
    let strange = (
        stranger.cert.der().to_vec(),
        stranger.signing_key.serialize_der(),
    );
    let refused = match connect(Some(strange), "secure.test").await {
        Err(_) => true,
        // TLS 1.3: the client learns of the refusal on its first read.
        Ok(tls) => {
            let io = hyper_util::rt::TokioIo::new(tls);
            match hyper::client::conn::http1::handshake::<_, TestBody>(io).await {
                Ok((mut sender, conn)) => {
                    tokio::spawn(conn);
                    sender.send_request(req("secure.test")).await.is_err()
                }
                Err(_) => true,
            }
        }
    };
    assert!(refused, "a certificate from an unknown CA is refused");
    // A connection made for the open host cannot be used for the mTLS host: 421.
    let tls = connect(None, "open.test").await.unwrap();
    assert_eq!(send_on(tls, false, req("secure.test")).await.status, 421);
    let tls = connect(Some(ok), "secure.test").await.unwrap();
    assert_eq!(send_on(tls, false, req("open.test")).await.status, 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_on_admin_cannot_be_bypassed() {
    let admin = Backend::start("admin").await;
    let public = Backend::start("public").await;
    let m = Manifests::new();
    m.write(
        "svc-admin.yaml",
        &service("admin", &[admin.addr.port()], None),
    );
    m.write(
        "svc-public.yaml",
        &service("public", &[public.addr.port()], None),
    );
    m.write(
        "app.yaml",
        &ingress(
            "app",
            "app.test",
            &[("/admin", "Prefix", "admin"), ("/", "Prefix", "public")],
        ),
    );
    m.write(
        "p.yaml",
        &policy(
            "lockdown",
            "app",
            "app.test",
            "/admin",
            "{ipAccess: {deny: [0.0.0.0/0, \"::/0\"]}}",
        ),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;
    let raw = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n{extra}Connection: close\r\n\r\n")
    };
    for target in [
        "/admin",
        "/admin/",
        "/admin/../admin",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/%2561dmin/../admin",
        "/admin;x",
        "/admin;jsessionid=1/users",
        "http://app.test/admin",
    ] {
        let status = raw_status(proxy.http, &raw(target, "")).await;
        assert_eq!(status, 403, "{target}");
    }
    // Malformed requests never reach either backend.
    assert_eq!(
        raw_status(
            proxy.http,
            "GET /admin HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n"
        )
        .await,
        400
    );
    assert_eq!(
        raw_status(
            proxy.http,
            "GET http://other.test/admin HTTP/1.1\r\nHost: app.test\r\n\r\n"
        )
        .await,
        400
    );
    // Content-Length with Transfer-Encoding: the chunked framing wins (RFC 9112 §6.3), the
    // length is not forwarded, and the connection is closed after the answer, so whatever was
    // smuggled after the chunked body is never read as a request.
    let smuggle = "POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let answers = raw_exchange(proxy.http, smuggle).await;
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 1, "{answers}");
    assert!(answers.contains("connection: close"), "{answers}");
    assert!(!answers.contains("content-length: 40"), "{answers}");
    assert_eq!(
        raw_status(proxy.http, "POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello").await,
        400
    );
    assert_eq!(
        admin.requests.load(Ordering::Relaxed),
        0,
        "nothing reached the admin backend"
    );
    // Documented: paths are case-sensitive, and an encoded slash is not a separator, so these
    // are other paths, served by the catch-all with the path they name.
    let c = Client::new();
    let r = c.get(proxy.http, "app.test", "/ADMIN").await;
    assert_eq!((r.status, r.backend().as_str()), (200, "public"));
    let r = c.get(proxy.http, "app.test", "/admin%2F..").await;
    assert_eq!((r.status, r.backend().as_str()), (200, "public"));
    assert_eq!(r.json()["path"], "/admin%2F..");
    assert_eq!(admin.requests.load(Ordering::Relaxed), 0);
}

/// Writes `bytes` on a new connection and reads until the proxy closes it.
async fn raw_exchange(addr: SocketAddr, bytes: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_class_overrides_path_defaults_and_disabled() {
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write(
        "app.yaml",
        &ingress(
            "app",
            "app.test",
            &[
                ("/a", "Prefix", "web"),
                ("/b", "Prefix", "web"),
                ("/c", "Prefix", "web"),
            ],
        ),
    );
    let tag = |v: &str| {
        format!(
            "{{headers: {{response: {{set: [{{name: X-Policy, value: {v}}}]}}}}, timeouts: {{request: 5s}}}}"
        )
    };
    m.write(
        "p-ingress.yaml",
        &policy("ingress-wide", "app", "", "", &tag("ingress")),
    );
    m.write(
        "p-path.yaml",
        &policy("path-b", "app", "app.test", "/b", &tag("path")),
    );
    m.write(
        "p-disabled.yaml",
        &policy(
            "path-c",
            "app",
            "app.test",
            "/c",
            "{headers: {disabled: true}}",
        ),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;
    let c = Client::new();
    let tag_of = |r: &Resp| {
        r.headers
            .get("x-policy")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        tag_of(&c.get(proxy.http, "app.test", "/a").await).as_deref(),
        Some("ingress")
    );
    assert_eq!(
        tag_of(&c.get(proxy.http, "app.test", "/b").await).as_deref(),
        Some("path"),
        "path default beats Ingress default"
    );
    assert_eq!(
        tag_of(&c.get(proxy.http, "app.test", "/c").await),
        None,
        "disabled removes the inherited block"
    );

    // A class-wide override from the platform namespace beats both.
    let v = proxy.version().await;
    m.write(
        "p-class.yaml",
        "apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: platform, namespace: portico-system}
spec:
  targetRefs: [{group: networking.k8s.io, kind: IngressClass, name: portico}]
  overrides: {headers: {response: {set: [{name: X-Policy, value: class}]}}}
",
    );
    proxy.wait_version_above(v).await;
    for path in ["/a", "/b", "/c"] {
        assert_eq!(
            tag_of(&c.get(proxy.http, "app.test", path).await).as_deref(),
            Some("class"),
            "{path}"
        );
    }

    // The statuses the translator computed are on the admin port.
    let status = Client::new().get(proxy.admin, "admin", "/status").await;
    assert_eq!(status.status, 200);
    let status = status.json();
    let conditions = &status["policies"]["default/path-b"]["ancestors"][0]["conditions"];
    let accepted = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap();
    assert_eq!(accepted["status"], "True", "{status}");
    // An override from outside the platform namespace is refused and says why.
    m.write(
        "p-rogue.yaml",
        "apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: rogue, namespace: default}
spec:
  targetRefs: [{group: networking.k8s.io, kind: IngressClass, name: portico}]
  overrides: {headers: {response: {set: [{name: X-Policy, value: rogue}]}}}
",
    );
    let v = proxy.version().await;
    proxy.wait_version_above(v).await;
    assert_eq!(
        tag_of(&c.get(proxy.http, "app.test", "/a").await).as_deref(),
        Some("class")
    );
    let status = Client::new()
        .get(proxy.admin, "admin", "/status")
        .await
        .json();
    let rogue = status["policies"]["default/rogue"].to_string();
    assert!(rogue.contains("\"False\""), "{rogue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_too_slow_to_send_a_head_get_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write(
        "app.yaml",
        &ingress("app", "app.test", &[("/", "Prefix", "web")]),
    );
    let proxy = Proxy::start(
        &m.dir,
        &["--header-read-timeout", "500ms", "--idle-timeout", "1500ms"],
    )
    .await;

    async fn answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    // Half a head, then nothing: 408 and the connection closed.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app").await.unwrap();
    let started = Instant::now();
    let text = answer(&mut s).await;
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A keep-alive connection: a whole request is served, idling past the head limit does not
    // count against the next one, and a slow third head gets 408.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let mut first = vec![0u8; 4096];
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut first).await.unwrap();
        let text = String::from_utf8_lossy(&first[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let text = answer(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");

    // The same over TLS (HTTP/1.1 by ALPN).
    let mut tls = tls_connect(proxy.https, Some("app.test"), &[b"http/1.1"]).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let text = answer(&mut tls).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");

    // The start of an HTTP/2 preface, then nothing, is a slow head like any other: the
    // connection is not held open.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    answer(&mut s).await;
    assert!(started.elapsed() < Duration::from_secs(3));

    // A connection that says nothing is closed silently at the idle limit.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let started = Instant::now();
    assert_eq!(answer(&mut s).await, "");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A slow body is not a slow head: an upload trickling in is served.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"cd").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("4"),
        "{text:?}"
    );

    // A body sent whole, then an upstream slower than the idle limit: the client is not the
    // one stalling, and is answered.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"POST /slow?ms=2500 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n\r\nabcd")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");

    // Part of a body, then nothing (slow POST): the connection is closed after the idle limit.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nabcd")
        .await
        .unwrap();
    let started = Instant::now();
    answer(&mut s).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A client that stops reading a large response (slow read) is disconnected after the idle
    // limit, rather than holding its connection and the upstream one for good.
    const BIG: u64 = 64 << 20;
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(format!("GET /download?bytes={BIG} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = 0u64;
    let reading = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = vec![0u8; 1 << 16];
        while let Ok(n) = s.read(&mut chunk).await
            && n > 0
        {
            got += n as u64;
        }
    })
    .await;
    assert!(reading.is_ok(), "the connection was closed");
    assert!(
        got < BIG,
        "the whole {BIG}-byte response was held for a client that stopped reading"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_names_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start("web").await;
    let m = Manifests::new();
    m.write("svc.yaml", &service("web", &[backend.addr.port()], None));
    m.write(
        "app.yaml",
        &ingress(
            "app",
            "app.test",
            &[("/", "Prefix", "web"), ("/office", "Prefix", "web")],
        ),
    );
    m.write(
        "p.yaml",
        &policy(
            "office",
            "app",
            "app.test",
            "/office",
            "{ipAccess: {allow: [203.0.113.0/24]}}",
        ),
    );
    let proxy = Proxy::start(&m.dir, &["--proxy-protocol"]).await;
    let exchange = |header: &'static str, path: &'static str| {
        let addr = proxy.http;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(header.as_bytes()).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let text = exchange("PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n", "/").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("\"x-forwarded-for\":[\"203.0.113.9\"]"),
        "{text}"
    );
    // The header's address is the peer ipAccess checks.
    let text = exchange("PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n", "/office").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let text = exchange("PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\n", "/office").await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    // Without a header: closed without an answer.
    let text = exchange("", "/").await;
    assert_eq!(text, "");
}

/// A backend on raw sockets that misbehaves by path, one request per connection (answers say
/// `connection: close`):
/// `/stall-head` never answers, `/stall-body` sends its head and 5 of 100 bytes then nothing,
/// `/trickle` sends eight one-byte chunks 150 ms apart; anything else answers 200 once it has
/// read the request's `Content-Length` body.
async fn stalling_backend() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < head_end + length {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let hold = Duration::from_secs(30);
                match path.as_str() {
                    "/stall-head" => tokio::time::sleep(hold).await,
                    "/stall-body" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                            .await;
                        tokio::time::sleep(hold).await;
                    }
                    "/trickle" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
                            .await;
                        for _ in 0..8 {
                            tokio::time::sleep(Duration::from_millis(150)).await;
                            let _ = s.write_all(b"1\r\nx\r\n").await;
                        }
                        let _ = s.write_all(b"0\r\n\r\n").await;
                    }
                    _ => {
                        let body = format!("got {length}");
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                }
            });
        }
    });
    addr
}

/// A TLS "backend" that accepts TCP connections and never answers the ClientHello: only a
/// connect timeout ends the wait.
async fn mute_tls_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_idle_timeouts_apply_per_route() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let raw = stalling_backend().await;
    let mute = mute_tls_backend().await;
    let m = Manifests::new();
    m.write("svc-raw.yaml", &service("raw", &[raw.port()], None));
    m.write(
        "svc-mute.yaml",
        &service("mute", &[mute.port()], Some("https")),
    );
    m.write(
        "slow.yaml",
        &ingress("slow", "slow.test", &[("/", "Prefix", "raw")]),
    );
    m.write(
        "plain.yaml",
        &ingress("plain", "plain.test", &[("/", "Prefix", "raw")]),
    );
    m.write(
        "hung.yaml",
        &ingress("hung", "hung.test", &[("/", "Prefix", "mute")]),
    );
    m.write(
        "p-slow.yaml",
        &policy(
            "idle",
            "slow",
            "",
            "",
            "{timeouts: {idle: 400ms, requestHeaders: 2s}}",
        ),
    );
    m.write(
        "p-hung.yaml",
        &policy("connect", "hung", "", "", "{timeouts: {connect: 300ms}}"),
    );
    // Proxy-wide limits far beyond the test's patience: only the routes' own can answer.
    let proxy = Proxy::start(&m.dir, &["--connect-timeout", "60s"]).await;
    let c = Client::new();
    let uri = |path: &str| format!("http://{}{path}", proxy.http);
    let get = |host: &str, path: &str| {
        Request::get(uri(path))
            .header("host", host)
            .body(empty())
            .unwrap()
    };

    // connect: the TLS handshake never completes; 504 well before --connect-timeout.
    let r = tokio::time::timeout(Duration::from_secs(10), c.send(get("hung.test", "/")))
        .await
        .expect("the route's connect timeout answers")
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (504, "upstream timeout\n"));
    // It counts as a connect failure: the only endpoint is ejected, so the next request is
    // refused at once without waiting again.
    let r = c.send(get("hung.test", "/")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy endpoints\n"));

    // idle: headers, 5 of 100 bytes, then silence: the client's response is cut short.
    let response = c.raw(get("slow.test", "/stall-body")).await;
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the route's idle timeout ends the body");
    assert!(body.is_err(), "a stalled body must not end cleanly");
    // The same to an HTTP/2 client: its stream is reset, the connection stays usable.
    let io =
        hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(proxy.http).await.unwrap());
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let h2_get = |path: &str| {
        Request::get(format!("http://slow.test{path}"))
            .body(empty())
            .unwrap()
    };
    let response = h2.send_request(h2_get("/stall-body")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the route's idle timeout ends the HTTP/2 stream");
    assert!(body.is_err(), "a stalled body must not end cleanly");
    let r = read(h2.send_request(h2_get("/upload")).await.unwrap())
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "got 0"));
    // Without the policy, the same stall is waited out (no default idle limit).
    let response = c.raw(get("plain.test", "/stall-body")).await;
    let waited =
        tokio::time::timeout(Duration::from_millis(1_500), response.into_body().collect()).await;
    assert!(waited.is_err(), "no idle limit without the policy");

    // idle before the response head: 504.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.send(get("slow.test", "/stall-head")),
    )
    .await
    .expect("the route's idle timeout answers")
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (504, "upstream timeout\n"));

    // A response that keeps moving is not idle, however long it takes in all (1.2 s > 400 ms).
    let r = c.send(get("slow.test", "/trickle")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "xxxxxxxx"));

    // The request body counts too: sent slowly, it keeps the exchange alive before any answer.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 8\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"y").await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("got 8"), "{text}");
    // ... and a client that stops sending its body mid-way gets 504.
    let mut s = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 8\r\n\r\nyyy")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");

    // requestHeaders cannot be per route (headers come before the route is known): the
    // policy's status says so rather than pretending.
    let status = c.get(proxy.admin, "admin", "/status").await.json();
    let programmed = status["policies"]["default/idle"]["ancestors"][0]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .find(|c| c["type"] == "Programmed")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(programmed["reason"], "PartiallyProgrammed", "{status}");
    let message = programmed["message"].as_str().unwrap();
    assert!(
        message.contains("defaults.timeouts.requestHeaders is not applied"),
        "{message}"
    );
}
