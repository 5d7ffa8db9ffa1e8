//! Traces, access logs and metrics of real traffic: the real proxy binary exporting to an OTLP
//! receiver on loopback (gRPC and HTTP/protobuf), echo backends, the access log on stdout and
//! `/metrics` on the admin port.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::Request;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use portico_otlp::receiver::{Received, Receiver, attr};
use serde_json::Value;
use tokio::net::TcpListener;

// ---------------------------------------------------------------- helpers

/// Exports quickly, so that tests need not wait for the default five-second batches.
const FAST_EXPORT: &[(&str, &str)] = &[
    ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ("PORTICO_POD_NAME", "portico-test-0"),
];

/// Ingress `web` for `shop.test`: `/api` (Prefix) to Service `api`.
async fn shop(m: &Manifests) -> Backend {
    let api = Backend::start("api").await;
    m.write("svc.yaml", &service("api", &[api.addr.port()], None));
    m.write(
        "ing.yaml",
        &ingress("web", "shop.test", &[("/api", "Prefix", "api")]),
    );
    api
}

async fn get_with(proxy: &Proxy, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = Request::get(format!("http://{}{path}", proxy.http)).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::new()
        .send(req.body(empty()).unwrap())
        .await
        .unwrap()
}

fn server_span<'a>(spans: &'a [Received], trace: &str) -> &'a Received {
    spans
        .iter()
        .find(|s| s.kind() == SpanKind::Server && s.trace_id() == trace)
        .unwrap_or_else(|| panic!("no server span in trace {trace}"))
}

fn client_spans<'a>(spans: &'a [Received], parent: &Received) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Client && s.parent_id() == parent.span_id())
        .collect()
}

/// `traceparent` as the backend received it: (trace id, parent span id).
fn upstream_traceparent(r: &Resp) -> (String, String) {
    let tp = r.json()["headers"]["traceparent"][0]
        .as_str()
        .expect("the backend got a traceparent")
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    (parts[1].to_owned(), parts[2].to_owned())
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01")
}

// ---------------------------------------------------------------- traces

#[tokio::test]
async fn grpc_export_carries_server_and_client_spans_of_a_trusted_trace() {
    let receiver = Receiver::start().await;
    let m = Manifests::new();
    let _api = shop(&m).await;
    let endpoint = receiver.url();
    let proxy = Proxy::start_with_env(
        &m.dir,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--trust-trace-context",
            "--class",
            "portico",
        ],
        FAST_EXPORT,
    )
    .await;

    let traceparent = client_traceparent();
    let r = get_with(
        &proxy,
        "shop.test",
        "/api/items?token=secret",
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=1"),
            ("user-agent", "telemetry-test/1.0"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    // The client's trace goes on upstream, with the proxy's client span as the parent.
    let (trace, parent) = upstream_traceparent(&r);
    assert_eq!(trace, CLIENT_TRACE);
    assert_ne!(parent, CLIENT_PARENT);
    assert_eq!(r.json()["headers"]["tracestate"][0], "vendor=1");

    let spans = receiver
        .wait_for("server and client spans", |spans| {
            spans.iter().any(|s| s.kind() == SpanKind::Server)
                && spans.iter().any(|s| s.kind() == SpanKind::Client)
        })
        .await;
    let server = server_span(&spans, CLIENT_TRACE);
    assert_eq!(server.transport, "grpc");
    assert_eq!(
        server.parent_id(),
        CLIENT_PARENT,
        "the client's span is the parent"
    );
    assert_eq!(server.span.name, "GET /api");
    for (key, want) in [
        ("http.request.method", "GET"),
        ("url.path", "/api/items"),
        ("url.scheme", "http"),
        ("http.route", "/api"),
        ("http.response.status_code", "200"),
        ("server.address", "shop.test"),
        ("client.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
        ("user_agent.original", "telemetry-test/1.0"),
        ("portico.ingress", "default/web"),
        ("portico.service", "default/api"),
    ] {
        assert_eq!(server.attr(key).as_deref(), Some(want), "{key}");
    }
    // The query (and the token in it) is not recorded.
    assert!(!format!("{:?}", server.span).contains("secret"));

    let clients = client_spans(&spans, server);
    assert_eq!(clients.len(), 1, "one try");
    let client = clients[0];
    assert_eq!(client.trace_id(), CLIENT_TRACE);
    assert_eq!(
        client.span_id(),
        parent,
        "upstream's parent is the client span"
    );
    assert_eq!(client.attr("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        client.attr("server.port"),
        Some(_api.addr.port().to_string())
    );
    assert_eq!(
        client.attr("http.response.status_code").as_deref(),
        Some("200")
    );

    assert_eq!(server.resource["service.name"], "portico-proxy");
    assert_eq!(server.resource["k8s.pod.name"], "portico-test-0");
    assert_eq!(server.resource["portico.ingress_class"], "portico");
    assert_eq!(
        server.resource["service.version"],
        env!("CARGO_PKG_VERSION")
    );
    // Both spans are counted once the collector has answered.
    wait_metric(&proxy, "portico_proxy_trace_spans_exported_total ", 2).await;
}

/// Waits until the unlabelled metric `prefix` reaches `at_least`.
async fn wait_metric(proxy: &Proxy, prefix: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = proxy.metrics().await;
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {prefix}in {metrics}"));
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix}is {value}, expected {at_least}: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn http_export_starts_a_new_trace_unless_the_client_is_trusted() {
    let receiver = Receiver::start().await;
    let m = Manifests::new();
    let _api = shop(&m).await;
    // A base URL: the proxy adds /v1/traces.
    let endpoint = receiver.url();
    let proxy = Proxy::start_with_env(
        &m.dir,
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "http"],
        FAST_EXPORT,
    )
    .await;
    let traceparent = client_traceparent();
    let r = get_with(
        &proxy,
        "shop.test",
        "/api/x",
        &[("traceparent", &traceparent), ("tracestate", "vendor=1")],
    )
    .await;
    assert_eq!(r.status, 200);
    let (trace, parent) = upstream_traceparent(&r);
    assert_ne!(trace, CLIENT_TRACE, "an untrusted trace id is not kept");
    assert!(
        r.json()["headers"].get("tracestate").is_none(),
        "an untrusted tracestate is dropped"
    );

    let spans = receiver
        .wait_for("the new trace", |spans| {
            spans.iter().filter(|s| s.trace_id() == trace).count() >= 2
        })
        .await;
    let server = server_span(&spans, &trace);
    assert_eq!(server.transport, "http");
    assert!(server.span.parent_span_id.is_empty(), "a root span");
    let clients = client_spans(&spans, server);
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].span_id(), parent);
    assert!(spans.iter().all(|s| s.trace_id() != CLIENT_TRACE));

    // A 404 is traced too, without route attributes.
    let r = get_with(&proxy, "nowhere.test", "/", &[]).await;
    assert_eq!(r.status, 404);
    let spans = receiver
        .wait_for("the 404", |spans| {
            spans
                .iter()
                .any(|s| s.attr("http.response.status_code").as_deref() == Some("404"))
        })
        .await;
    let missing = spans
        .iter()
        .find(|s| s.attr("http.response.status_code").as_deref() == Some("404"))
        .unwrap();
    assert_eq!(missing.span.name, "GET");
    assert!(missing.attr("http.route").is_none());
}

#[tokio::test]
async fn retries_are_sibling_client_spans_and_rejections_are_events() {
    let receiver = Receiver::start().await;
    let m = Manifests::new();
    let failing = Backend::start("failing-1").await;
    m.write("svc.yaml", &service("flaky", &[failing.addr.port()], None));
    m.write(
        "ing.yaml",
        &ingress("web", "shop.test", &[("/", "Prefix", "flaky")]),
    );
    m.write(
        "policy.yaml",
        "apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: resilient}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: web}]
  defaults:
    retry: {attempts: 2, on: [5xx], backoff: {base: 1ms, max: 2ms}, budget: {percent: 100, minPerSecond: 100}}
    rateLimit: {rules: [{name: three, key: {type: Global}, limit: {requests: 3, period: 1m}}]}
    authentication:
      basic: {secretRef: {name: htpasswd}, realm: Shop}
",
    );
    // alice / wonderland
    m.write(
        "htpasswd.yaml",
        "apiVersion: v1
kind: Secret
metadata: {name: htpasswd}
stringData: {auth: \"alice:$apr1$portico$1ChCvguPk.d7BjaxyXJFh.\"}
",
    );
    let alice = [("authorization", "Basic YWxpY2U6d29uZGVybGFuZA==")];
    let endpoint = receiver.url();
    let proxy = Proxy::start_with_env(
        &m.dir,
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc"],
        FAST_EXPORT,
    )
    .await;
    let r = get_with(&proxy, "shop.test", "/flaky", &alice).await;
    assert_eq!(r.status, 503);
    let spans = receiver
        .wait_for("the request and its three tries", |spans| {
            spans.iter().any(|s| s.kind() == SpanKind::Server)
                && spans
                    .iter()
                    .filter(|s| s.kind() == SpanKind::Client)
                    .count()
                    >= 3
        })
        .await;
    let server = spans.iter().find(|s| s.kind() == SpanKind::Server).unwrap();
    assert_eq!(
        server.attr("portico.policy").as_deref(),
        Some("default/resilient")
    );
    let tries = client_spans(&spans, server);
    assert_eq!(
        tries.len(),
        3,
        "the first try and two retries, all children of the request"
    );
    let mut resends: Vec<String> = tries
        .iter()
        .map(|t| t.attr("http.request.resend_count").unwrap_or_default())
        .collect();
    resends.sort();
    assert_eq!(resends, ["", "1", "2"]);
    // What the policy let through is on the request's span.
    let event = |span: &Received, name: &str| {
        span.span.events.iter().find(|e| e.name == name).map(|e| {
            (
                attr(&e.attributes, "portico.outcome").unwrap_or_default(),
                attr(&e.attributes, "portico.method").unwrap_or_default(),
            )
        })
    };
    assert_eq!(
        event(server, "portico.rate_limit"),
        Some(("allowed".into(), String::new()))
    );
    assert_eq!(
        event(server, "portico.authentication"),
        Some(("accepted".into(), "basic".into()))
    );
    assert_eq!(
        failing.requests.load(std::sync::atomic::Ordering::Relaxed),
        3
    );

    // Without credentials: 401, with an event.
    let r = get_with(&proxy, "shop.test", "/flaky", &[]).await;
    assert_eq!(r.status, 401);
    let spans = receiver
        .wait_for("the 401", |spans| {
            spans
                .iter()
                .any(|s| s.attr("http.response.status_code").as_deref() == Some("401"))
        })
        .await;
    let refused = spans
        .iter()
        .find(|s| s.attr("http.response.status_code").as_deref() == Some("401"))
        .unwrap();
    assert_eq!(
        event(refused, "portico.authentication"),
        Some(("rejected".into(), String::new()))
    );

    // The limit (three a minute) is used up by the next request: a 429 with an event.
    let _ = get_with(&proxy, "shop.test", "/flaky", &alice).await;
    let r = get_with(&proxy, "shop.test", "/flaky", &alice).await;
    assert_eq!(r.status, 429);
    let spans = receiver
        .wait_for("the 429", |spans| {
            spans
                .iter()
                .any(|s| s.attr("http.response.status_code").as_deref() == Some("429"))
        })
        .await;
    let limited = spans
        .iter()
        .find(|s| s.attr("http.response.status_code").as_deref() == Some("429"))
        .unwrap();
    let event = limited
        .span
        .events
        .iter()
        .find(|e| e.name == "portico.rate_limit")
        .expect("a rate-limit event");
    assert_eq!(
        attr(&event.attributes, "portico.outcome").as_deref(),
        Some("rejected")
    );
    assert_eq!(
        attr(&event.attributes, "portico.rule").as_deref(),
        Some("three")
    );
    assert!(
        client_spans(&spans, limited).is_empty(),
        "never sent upstream"
    );

    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            "portico_proxy_policy_rejections_total{policy=\"default/resilient\",block=\"rateLimit\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "portico_proxy_policy_rejections_total{policy=\"default/resilient\",block=\"authentication\"} 1"
    ));
}

#[tokio::test]
async fn tries_cut_short_by_the_per_try_timeout_end_as_cancelled() {
    let receiver = Receiver::start().await;
    let m = Manifests::new();
    let _api = shop(&m).await;
    m.write(
        "slow.yaml",
        &ingress("slowly", "slow.test", &[("/", "Prefix", "api")]),
    );
    m.write(
        "policy.yaml",
        "apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: impatient}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: slowly}]
  defaults:
    retry: {attempts: 1, on: [gateway-error], perTryTimeout: 100ms, backoff: {base: 1ms, max: 2ms}}
",
    );
    let endpoint = receiver.url();
    let proxy = Proxy::start_with_env(
        &m.dir,
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc"],
        FAST_EXPORT,
    )
    .await;
    let r = get_with(&proxy, "slow.test", "/slow?ms=2000", &[]).await;
    assert_eq!(r.status, 504);
    let spans = receiver
        .wait_for("the request and two cancelled tries", |spans| {
            spans.iter().any(|s| s.kind() == SpanKind::Server)
                && spans
                    .iter()
                    .filter(|s| s.attr("error.type").as_deref() == Some("cancelled"))
                    .count()
                    >= 2
        })
        .await;
    let server = spans.iter().find(|s| s.kind() == SpanKind::Server).unwrap();
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("504")
    );
    assert_eq!(client_spans(&spans, server).len(), 2);
}

// The receiver must keep running while this thread waits for the proxy to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_are_sent_on_shutdown() {
    let receiver = Receiver::start().await;
    let m = Manifests::new();
    let _api = shop(&m).await;
    let endpoint = receiver.url();
    // Batches every minute: only the flush at shutdown can deliver the span in time.
    let mut proxy = Proxy::start_with_env(
        &m.dir,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--drain-timeout",
            "1s",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "60000")],
    )
    .await;
    let r = get_with(&proxy, "shop.test", "/api/last", &[]).await;
    assert_eq!(r.status, 200);
    let (trace, _) = upstream_traceparent(&r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.spans().is_empty(), "nothing sent yet");
    proxy.signal("TERM");
    assert!(proxy.wait_exit(Duration::from_secs(10)).success());
    let spans = receiver
        .wait_for("the flushed spans", |spans| {
            spans.iter().filter(|s| s.trace_id() == trace).count() >= 2
        })
        .await;
    assert_eq!(
        server_span(&spans, &trace).attr("url.path").as_deref(),
        Some("/api/last")
    );
}

#[tokio::test]
async fn export_to_a_collector_behind_tls() {
    let (cert, key, _) = certificate(&["localhost"]);
    let receiver = Receiver::start_tls(&cert, &key).await;
    let m = Manifests::new();
    let _api = shop(&m).await;
    // The collector's CA, as a deployment would mount it.
    let ca = m.dir.join("collector-ca.pem.txt");
    std::fs::write(&ca, &cert).unwrap();
    let endpoint = format!("https://localhost:{}", receiver.addr().port());
    let ca = ca.to_str().unwrap();
    let mut env = FAST_EXPORT.to_vec();
    env.push(("SSL_CERT_FILE", ca));
    for protocol in ["grpc", "http"] {
        let proxy = Proxy::start_with_env(
            &m.dir,
            &["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol],
            &env,
        )
        .await;
        let r = get_with(&proxy, "shop.test", "/api/tls", &[]).await;
        assert_eq!(r.status, 200);
        let (trace, _) = upstream_traceparent(&r);
        let spans = receiver
            .wait_for("spans over TLS", |spans| {
                spans.iter().filter(|s| s.trace_id() == trace).count() >= 2
            })
            .await;
        assert_eq!(server_span(&spans, &trace).transport, protocol);
    }
}

#[tokio::test]
async fn requests_do_not_wait_for_a_collector_that_is_down_or_silent() {
    // A port nobody listens on, and a listener that accepts connections but never answers.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = silent.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });

    let m = Manifests::new();
    let _api = shop(&m).await;
    let env: &[(&str, &str)] = &[
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
        // Far longer than the whole test may take: a request that waited for an export would
        // time out the client below.
        ("OTEL_BSP_EXPORT_TIMEOUT", "60000"),
    ];
    for (protocol, addr) in [("http", closed_addr), ("grpc", silent_addr)] {
        let endpoint = format!("http://{addr}");
        let proxy = Proxy::start_with_env(
            &m.dir,
            &["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol],
            env,
        )
        .await;
        let client = Client::new();
        for i in 0..200 {
            let r = client
                .try_get(proxy.http, "shop.test", &format!("/api/{i}"))
                .await
                .unwrap_or_else(|e| panic!("{protocol}: request {i} failed: {e}"));
            assert_eq!(r.status, 200, "{protocol}");
        }
        // Spans that could not be queued or sent are counted.
        wait_metric(&proxy, "portico_proxy_trace_spans_dropped_total ", 1).await;
    }
    accept.abort();
}

// ---------------------------------------------------------------- access log

fn access_lines(proxy: &Proxy) -> Vec<Value> {
    proxy
        .stdout
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_lines(proxy: &Proxy, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = access_lines(proxy);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} access log lines",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn json_access_log_has_one_line_per_request_without_secrets() {
    let receiver = Receiver::start().await;
    let m = Manifests::new();
    let api = shop(&m).await;
    let endpoint = receiver.url();
    let proxy = Proxy::start_with_env(
        &m.dir,
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "http"],
        FAST_EXPORT,
    )
    .await;
    let r = get_with(
        &proxy,
        "shop.test",
        "/api/orders?access_token=hunter2",
        &[
            ("authorization", "Bearer hunter3"),
            ("cookie", "session=hunter4"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let body_len = r.body.len() as u64;
    let (trace, _) = upstream_traceparent(&r);
    let missing = get_with(&proxy, "nowhere.test", "/x", &[]).await;
    assert_eq!(missing.status, 404);

    let lines = wait_lines(&proxy, 2).await;
    let raw = proxy.stdout.lock().unwrap().join("\n");
    for secret in ["hunter2", "hunter3", "hunter4", "access_token"] {
        assert!(!raw.contains(secret), "{secret} leaked: {raw}");
    }
    let ok = lines.iter().find(|l| l["status"] == 200).unwrap();
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["host"], "shop.test");
    assert_eq!(ok["path"], "/api/orders");
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["bytes"], body_len);
    assert_eq!(ok["upstream"], api.addr.to_string());
    assert_eq!(ok["trace_id"], trace.as_str());
    assert!(ok["route"].as_str().unwrap().contains("web"), "{ok}");
    assert!(ok["duration_ms"].as_f64().unwrap() >= ok["upstream_ms"].as_f64().unwrap());
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    let nf = lines.iter().find(|l| l["status"] == 404).unwrap();
    assert_eq!(nf["error"], "no_route");
    assert!(nf["route"].is_null() && nf["upstream"].is_null());
}

#[tokio::test]
async fn access_log_formats_and_off() {
    let m = Manifests::new();
    let _api = shop(&m).await;
    let text = Proxy::start(&m.dir, &["--access-log", "text"]).await;
    let traceparent = client_traceparent();
    let r = get_with(
        &text,
        "shop.test",
        "/api/t?x=1",
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = text.stdout.lock().unwrap().first().cloned() {
            break line;
        }
        assert!(Instant::now() < deadline, "no text access log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        line.contains("\"GET shop.test/api/t HTTP/1.1\" 200 "),
        "{line}"
    );
    // Without tracing the client's trace id is still logged, and its traceparent forwarded.
    assert!(line.contains(&format!("trace_id={CLIENT_TRACE}")), "{line}");
    assert_eq!(upstream_traceparent(&r).0, CLIENT_TRACE);

    let off = Proxy::start(&m.dir, &["--access-log", "off"]).await;
    assert_eq!(off_get(&off).await, 200);
    // The request is done and a line would have been flushed already; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(off.stdout.lock().unwrap().is_empty());
}

async fn c_status(proxy: &Proxy, host: &str, path: &str) -> u16 {
    Client::new().get(proxy.http, host, path).await.status
}

async fn off_get(proxy: &Proxy) -> u16 {
    Client::new()
        .get(proxy.http, "shop.test", "/api")
        .await
        .status
}

// ---------------------------------------------------------------- metrics

#[tokio::test]
async fn metrics_are_labelled_by_route_and_bounded() {
    let m = Manifests::new();
    let _api = shop(&m).await;
    m.write(
        "policy.yaml",
        "apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: generous}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: web}]
  defaults:
    rateLimit: {rules: [{name: many, key: {type: Global}, limit: {requests: 1000, period: 1m}}]}
",
    );
    // Basic authentication on another Ingress: alice / wonderland.
    m.write(
        "vault.yaml",
        &ingress("vault", "vault.test", &[("/", "Prefix", "api")]),
    );
    m.write(
        "htpasswd.yaml",
        "apiVersion: v1
kind: Secret
metadata: {name: htpasswd}
stringData: {auth: \"alice:$apr1$portico$1ChCvguPk.d7BjaxyXJFh.\"}
",
    );
    m.write(
        "locked.yaml",
        "apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: locked}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: vault}]
  defaults:
    authentication:
      basic: {secretRef: {name: htpasswd}, realm: Vault}
",
    );
    let proxy = Proxy::start(&m.dir, &["--access-log", "off", "--class", "portico"]).await;
    assert_eq!(c_status(&proxy, "vault.test", "/").await, 401);
    assert_eq!(c_status(&proxy, "vault.test", "/").await, 401);
    let c = Client::new();
    for _ in 0..3 {
        assert_eq!(c.get(proxy.http, "shop.test", "/api/x").await.status, 200);
    }
    // Request data never becomes a label: unmatched hosts and paths share one series.
    for i in 0..5 {
        let host = format!("random-{i}.test");
        assert_eq!(
            c.get(proxy.http, &host, &format!("/p{i}")).await.status,
            404
        );
    }
    let metrics = proxy.metrics().await;
    let route = "ingress_class=\"portico\",namespace=\"default\",ingress=\"web\",service=\"api\"";
    assert!(
        metrics.contains(&format!(
            "portico_proxy_requests_total{{{route},status_class=\"2xx\"}} 3"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "portico_proxy_request_duration_seconds_count{{{route},status_class=\"2xx\"}} 3"
    )));
    assert!(metrics.contains(
        "portico_proxy_requests_total{ingress_class=\"\",namespace=\"\",ingress=\"\",service=\"\",status_class=\"4xx\"} 5"
    ));
    assert!(!metrics.contains("random-"));
    assert!(
        metrics.contains(
            "portico_proxy_policy_rejections_total{policy=\"default/locked\",block=\"authentication\"} 2"
        ),
        "{metrics}"
    );
    // Resolved with the route, before any refusal.
    assert!(metrics.contains(
        "portico_proxy_policy_rejections_total{policy=\"default/generous\",block=\"rateLimit\"} 0"
    ));
    assert!(metrics.contains(
        "portico_proxy_upstream_response_duration_seconds_count{namespace=\"default\",service=\"api\"} 3"
    ));
    for name in [
        "portico_proxy_active_connections ",
        "portico_proxy_active_streams ",
        "portico_proxy_snapshot_age_seconds ",
        "portico_proxy_snapshot_version ",
        "portico_proxy_snapshot_errors_total ",
    ] {
        assert!(metrics.contains(name), "{name}: {metrics}");
    }

    // Every metric the Grafana dashboard queries is one the proxy exports.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/grafana/portico-dashboard.json"
    ))
    .unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).unwrap();
    let families: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("portico_proxy_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(families.contains(&family), "{name} is not exported");
                queried += 1;
            }
        }
    }
    assert!(queried >= 15, "{queried}");
}
