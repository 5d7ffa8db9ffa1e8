//! Routing per the Ingress spec, end to end through the real binary: hosts, paths, the default
//! backend, 404 and 503, path normalisation, malformed requests and header hygiene.

mod common;

use common::*;

/// Two backends, one empty Service, and Ingresses covering exact, wildcard and any hosts.
async fn setup() -> (Manifests, Backend, Backend, Proxy) {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let m = Manifests::new();
    m.write("svc-a.yaml", &service("svc-a", &[a.addr.port()], None));
    m.write("svc-b.yaml", &service("svc-b", &[b.addr.port()], None));
    m.write("svc-empty.yaml", &service("svc-empty", &[], None));
    m.write(
        "exact-host.yaml",
        &ingress(
            "exact-host",
            "app.test",
            &[
                ("/api", "Prefix", "svc-a"),
                ("/api/v2", "Prefix", "svc-b"),
                ("/exact", "Exact", "svc-b"),
                ("/admin", "Exact", "svc-a"),
                ("/", "Prefix", "svc-b"),
            ],
        ),
    );
    m.write(
        "wildcard.yaml",
        &ingress("wildcard", "*.wild.test", &[("/", "Prefix", "svc-b")]),
    );
    m.write(
        "any-host.yaml",
        &ingress(
            "any-host",
            "",
            &[
                ("/any", "Prefix", "svc-a"),
                ("/empty", "Prefix", "svc-empty"),
            ],
        ),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;
    (m, a, b, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_per_the_ingress_spec() {
    let (m, _a, _b, proxy) = setup().await;
    let c = Client::new();
    let at = |host: &'static str, path: &'static str| {
        let c = c.clone();
        let addr = proxy.http;
        async move { c.get(addr, host, path).await }
    };
    // Exact host; longest prefix by whole segments; Exact beats Prefix.
    assert_eq!(at("app.test", "/api/users").await.backend(), "a");
    assert_eq!(at("app.test", "/api/v2/users").await.backend(), "b");
    assert_eq!(
        at("app.test", "/apis").await.backend(),
        "b",
        "/api does not match /apis"
    );
    assert_eq!(at("app.test", "/exact").await.backend(), "b");
    assert_eq!(
        at("APP.test:8080", "/api").await.backend(),
        "a",
        "case and port ignored"
    );
    // Exact does not match a trailing slash: falls to Prefix /.
    assert_eq!(at("app.test", "/admin/").await.backend(), "b");
    // Wildcard covers exactly one label.
    assert_eq!(at("x.wild.test", "/anything").await.backend(), "b");
    assert_eq!(
        at("a.b.wild.test", "/any").await.backend(),
        "a",
        "goes to any-host rules"
    );
    // Rules without a host.
    assert_eq!(at("other.test", "/any/x").await.backend(), "a");
    // No route and no default backend: 404 with a short body.
    let r = at("other.test", "/nothing").await;
    assert_eq!((r.status, r.body.as_str()), (404, "no route\n"));
    // A backend without endpoints: 503.
    let r = at("other.test", "/empty").await;
    assert_eq!((r.status, r.body.as_str()), (503, "no endpoints\n"));

    // A default backend takes what nothing else matched.
    let v = proxy.version().await;
    m.write("default.yaml", &default_backend("fallback", "svc-a"));
    proxy.wait_version_above(v).await;
    assert_eq!(at("other.test", "/nothing").await.backend(), "a");
    // A host that matched without a matching path goes to the default backend too.
    assert_eq!(at("x.wild.test", "/").await.backend(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_matching() {
    let (_m, _a, _b, proxy) = setup().await;
    let c = Client::new();
    for path in [
        "/admin",
        "/admin/../admin",
        "//admin",
        "/%61dmin",
        "/x/./../admin",
    ] {
        let r = c.get(proxy.http, "app.test", path).await;
        assert_eq!(r.backend(), "a", "{path} routes like /admin");
        assert_eq!(
            r.json()["path"],
            "/admin",
            "{path}: the backend sees the normal path"
        );
    }
    let r = c.get(proxy.http, "app.test", "/ADMIN").await;
    assert_eq!(r.backend(), "b", "paths are case-sensitive");
    // The query is passed unchanged; encoded slashes are not decoded.
    let r = c
        .get(proxy.http, "app.test", "/api/./x%2Fy?q=%2e%2e&b=1")
        .await;
    assert_eq!(r.json()["path"], "/api/x%2Fy?q=%2e%2e&b=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_are_cleaned_and_forwarded() {
    let (_m, _a, _b, proxy) = setup().await;
    let c = Client::new();
    let req = http::Request::get(format!("http://{}/api", proxy.http))
        .header("host", "app.test")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-request-id", "client-chosen")
        .header("x-custom", "kept")
        .body(empty())
        .unwrap();
    let r = c.send(req).await.unwrap();
    let h = &r.json()["headers"];
    assert_eq!(h["host"][0], "app.test");
    assert_eq!(h["x-custom"][0], "kept");
    assert!(h.get("x-hop").is_none(), "{h}");
    assert!(h.get("keep-alive").is_none(), "{h}");
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], "app.test");
    assert_eq!(h["x-forwarded-port"][0], proxy.http.port().to_string());
    let id = h["x-request-id"][0].as_str().unwrap();
    assert_ne!(id, "client-chosen", "not trusted by default");
    assert_eq!(id.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400() {
    let (_m, _a, _b, proxy) = setup().await;
    let two_hosts = "GET /api HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n";
    assert_eq!(raw_status(proxy.http, two_hosts).await, 400);
    let disagreeing = "GET http://other.test/api HTTP/1.1\r\nHost: app.test\r\n\r\n";
    assert_eq!(raw_status(proxy.http, disagreeing).await, 400);
    let agreeing = "GET http://app.test/api HTTP/1.1\r\nHost: app.test\r\n\r\n";
    assert_eq!(raw_status(proxy.http, agreeing).await, 200);
    let no_host = "GET /api HTTP/1.1\r\n\r\n";
    assert_eq!(raw_status(proxy.http, no_host).await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let (_m, _a, _b, proxy) = setup().await;
    let c = Client::new();
    assert_eq!(c.get(proxy.admin, "admin", "/healthz").await.status, 200);
    assert_eq!(c.get(proxy.admin, "admin", "/readyz").await.status, 200);
    c.get(proxy.http, "app.test", "/api").await;
    let metrics = proxy.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portico_proxy_requests_total{")
                && l.ends_with("status_class=\"2xx\"} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("portico_proxy_snapshot_version"),
        "{metrics}"
    );
    let config = proxy.config().await;
    let routes = config["routes"].as_array().unwrap();
    let api = routes
        .iter()
        .find(|r| r["host"] == "app.test" && r["path"] == "/api")
        .unwrap();
    assert_eq!(api["kind"], "Prefix");
    assert_eq!(api["endpoints"], 1);
    assert!(api["backend"].as_str().unwrap().contains("svc-a"));
}
