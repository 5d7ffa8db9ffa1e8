//! IngressPolicy `authentication` end to end through the real binary: manifests with Secrets,
//! an echo backend that shows what reached it, and an auth service on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const HOST: &str = "shop.test";

/// An EC P-256 signing key made for the test and its public JWKS.
fn signing_key() -> (EncodingKey, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    }]});
    (
        EncodingKey::from_ec_der(&pair.serialize_der()),
        jwks.to_string(),
    )
}

fn token(key: &EncodingKey, exp_from_now: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let claims = json!({
        "iss": "https://issuer.test", "aud": "shop", "sub": "user-42",
        "exp": now + exp_from_now, "groups": ["a", "b"],
    });
    encode(&header, &claims, key).unwrap()
}

/// An auth service: `Authorization: Bearer good` passes with `X-User-ID: ext-7`, anything else
/// gets a 401 with its own challenge and body.
async fn auth_service() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    let good = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer good")
                        && req.uri().path() == "/check"
                        && req
                            .headers()
                            .get("x-forwarded-uri")
                            .is_some_and(|v| v == "/ext/x");
                    let answer = if good {
                        Response::builder()
                            .header("x-user-id", "ext-7")
                            .body(Full::new(Bytes::new()))
                    } else {
                        Response::builder()
                            .status(401)
                            .header("www-authenticate", r#"Bearer realm="ext""#)
                            .body(Full::new(Bytes::from_static(b"ext says no")))
                    };
                    async move { Ok::<_, std::convert::Infallible>(answer.unwrap()) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn policy(name: &str, path: &str, authentication: &str) -> String {
    format!(
        "apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {{name: {name}}}
spec:
  targetRefs:
  - {{group: networking.k8s.io, kind: Ingress, name: shop, host: {HOST}, path: {path}}}
  defaults:
    authentication:
{authentication}"
    )
}

fn secret(name: &str, data: &[(&str, &str)]) -> String {
    let mut out =
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n");
    for (k, v) in data {
        // A JSON string is a YAML double-quoted scalar: newlines and quotes survive.
        out.push_str(&format!("  {k}: {}\n", Value::from(*v)));
    }
    out
}

async fn setup(jwks: &str) -> (Manifests, Backend, Proxy) {
    let app = Backend::start("app").await;
    let authz = auth_service().await;
    let m = Manifests::new();
    m.write(
        "svc-app.yaml",
        &service("svc-app", &[app.addr.port()], None),
    );
    m.write("svc-authz.yaml", &service("authz", &[authz.port()], None));
    m.write(
        "shop.yaml",
        &ingress(
            "shop",
            HOST,
            &[
                ("/basic", "Prefix", "svc-app"),
                ("/jwt", "Prefix", "svc-app"),
                ("/key", "Prefix", "svc-app"),
                ("/ext", "Prefix", "svc-app"),
                ("/open", "Prefix", "svc-app"),
            ],
        ),
    );
    // openssl passwd -apr1 -salt portico wonderland; {SHA} of "secret".
    m.write(
        "htpasswd.yaml",
        &secret(
            "htpasswd",
            &[(
                "auth",
                "alice:$apr1$portico$1ChCvguPk.d7BjaxyXJFh.\nbob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
            )],
        ),
    );
    m.write("jwks.yaml", &secret("jwks", &[("jwks.json", jwks)]));
    m.write(
        "api-keys.yaml",
        &secret("api-keys", &[("ci", "k-ci-123"), ("dash", "k-dash-456")]),
    );
    m.write(
        "basic.yaml",
        &policy(
            "basic",
            "/basic",
            "      basic: {secretRef: {name: htpasswd}, realm: Shop}\n",
        ),
    );
    m.write(
        "jwt.yaml",
        &policy(
            "jwt",
            "/jwt",
            "      jwt:
        providers:
        - name: local
          issuer: https://issuer.test
          audiences: [shop]
          localJWKS: {secretRef: {name: jwks}, key: jwks.json}
          claimToHeaders: [{claim: sub, header: X-User}, {claim: groups, header: X-Groups}]
",
        ),
    );
    m.write(
        "key.yaml",
        &policy(
            "key",
            "/key",
            "      apiKey:
        secretRefs: [{name: api-keys}]
        forwardClientIDHeader: X-Client-ID
",
        ),
    );
    m.write(
        "ext.yaml",
        &policy(
            "ext",
            "/ext",
            "      external:
        http:
          backendRef: {name: authz, port: 80}
          path: /check
          responseHeadersToBackend: [X-User-ID]
          timeout: 2s
",
        ),
    );
    let proxy = Proxy::start(&m.dir, &[]).await;
    (m, app, proxy)
}

async fn send(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = Request::get(format!("http://{}{path}", proxy.http)).header("host", HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    Client::new().send(req).await.unwrap()
}

/// The values of a request header as the echo backend saw it.
fn upstream(resp: &Resp, name: &str) -> Vec<String> {
    match &resp.json()["headers"][name] {
        Value::Array(values) => values
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_without_credentials_and_accepts_with_them() {
    let (key, jwks) = signing_key();
    let (_m, app, proxy) = setup(&jwks).await;

    // No credentials: 401 with the method's challenge, and the backend never sees the request.
    let before = app.requests.load(std::sync::atomic::Ordering::SeqCst);
    let basic = send(&proxy, "/basic/x", &[]).await;
    assert_eq!(basic.status, 401, "{}", basic.body);
    assert_eq!(basic.headers["www-authenticate"], r#"Basic realm="Shop""#);
    let jwt = send(&proxy, "/jwt/x", &[]).await;
    assert_eq!(jwt.status, 401);
    assert_eq!(jwt.headers["www-authenticate"], "Bearer");
    assert_eq!(send(&proxy, "/key/x", &[]).await.status, 401);
    let ext = send(&proxy, "/ext/x", &[]).await;
    assert_eq!(ext.status, 401);
    assert_eq!(ext.headers["www-authenticate"], r#"Bearer realm="ext""#);
    assert_eq!(ext.body, "ext says no");
    assert_eq!(
        app.requests.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    assert_eq!(send(&proxy, "/open", &[]).await.status, 200);

    // Basic: apr1 and {SHA} lines; a wrong password is refused.
    let auth = |user_pass: &str| format!("Basic {}", STANDARD.encode(user_pass));
    for user_pass in ["alice:wonderland", "bob:secret"] {
        let ok = send(&proxy, "/basic/x", &[("authorization", &auth(user_pass))]).await;
        assert_eq!(ok.status, 200, "{user_pass}");
        assert_eq!(ok.backend(), "app");
    }
    let wrong = send(&proxy, "/basic/x", &[("authorization", &auth("alice:x"))]).await;
    assert_eq!(wrong.status, 401);

    // JWT: claims become headers (the client's copies gone), the token is stripped.
    let good = token(&key, 300);
    let ok = send(
        &proxy,
        "/jwt/x",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("x-user", "admin"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(upstream(&ok, "x-user"), ["user-42"]);
    assert_eq!(upstream(&ok, "x-groups"), ["a,b"]);
    assert!(upstream(&ok, "authorization").is_empty());
    let expired = token(&key, -300);
    let late = send(
        &proxy,
        "/jwt/x",
        &[("authorization", &format!("Bearer {expired}"))],
    )
    .await;
    assert_eq!(late.status, 401);
    assert_eq!(
        late.headers["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    // A client-chosen X-User without a token does not get through either.
    assert_eq!(
        send(&proxy, "/jwt/x", &[("x-user", "admin")]).await.status,
        401
    );

    // API keys: the matched client id, never the client's own.
    let ok = send(
        &proxy,
        "/key/x",
        &[("x-api-key", "k-dash-456"), ("x-client-id", "ci")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(upstream(&ok, "x-client-id"), ["dash"]);
    let wrong = send(&proxy, "/key/x", &[("x-api-key", "k-dash-45")]).await;
    assert_eq!(wrong.status, 401);

    // External: the auth service's header replaces the client's copy.
    let ok = send(
        &proxy,
        "/ext/x",
        &[("authorization", "Bearer good"), ("x-user-id", "spoofed")],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(upstream(&ok, "x-user-id"), ["ext-7"]);
    assert_eq!(upstream(&ok, "authorization"), ["Bearer good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_key_set_fails_closed() {
    let (_m, app, proxy) =
        setup(r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "!", "y": "!"}]}"#).await;
    let before = app.requests.load(std::sync::atomic::Ordering::SeqCst);
    let resp = send(&proxy, "/jwt/x", &[]).await;
    assert_eq!(resp.status, 500);
    assert_eq!(
        app.requests.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    // The other routes are untouched.
    assert_eq!(send(&proxy, "/open", &[]).await.status, 200);
}
