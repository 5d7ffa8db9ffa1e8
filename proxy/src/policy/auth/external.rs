//! Forward authentication: the proxy asks an HTTP service whether to let a request through.
//!
//! The check is a `GET` to the target and path, as Traefik's ForwardAuth sends it, whatever the
//! client's method: the original method, URI, host, scheme and client address travel in
//! `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`, `X-Forwarded-Proto` and
//! `X-Forwarded-For`, with the configured client headers (by default `Authorization` and
//! `Cookie`). No request body is sent. A 2xx answer lets the request through with the chosen
//! answer headers; any other answer goes back to the client (status, headers such as
//! `WWW-Authenticate`, `Location` and `Set-Cookie`, and a body of up to 64 KiB); no answer in
//! time is a 503, unless the block fails open.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use super::client::HttpClient;
use super::{
    AuthConfigError, AuthEnv, AuthMethod, BackendResolver, Denial, Identity, Outcome, header_name,
};

/// Largest auth-service body returned to the client; a longer one is dropped.
pub const MAX_DENIAL_BODY: usize = 64 * 1024;
/// When the block sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers of the auth service's answer that describe its connection, not the answer.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

enum Target {
    /// A snapshot backend, by id: plain HTTP/1.1 to one of its ready endpoints.
    Backend(String),
    /// Scheme and authority of the URL, and the path and query to request.
    Url {
        base: String,
        path_and_query: String,
    },
}

/// A prepared `external` block.
pub struct External {
    target: Target,
    path: String,
    headers_to_auth: Vec<HeaderName>,
    to_backend: Vec<HeaderName>,
    timeout: Duration,
    fail_open: bool,
    client: HttpClient,
    resolver: BackendResolver,
}

impl External {
    pub fn new(
        config: &portico_api::policy::ExternalAuth,
        env: &AuthEnv,
    ) -> Result<Self, AuthConfigError> {
        let path = if config.path.is_empty() {
            "/".to_owned()
        } else if config.path.starts_with('/') {
            config.path.clone()
        } else {
            return Err(AuthConfigError::External(format!(
                "path {:?} must start with /",
                config.path
            )));
        };
        let target = match &config.target {
            portico_api::policy::ExternalTarget::Backend(id) => Target::Backend(id.clone()),
            portico_api::policy::ExternalTarget::Url(url) => {
                let uri: Uri = url
                    .parse()
                    .map_err(|_| AuthConfigError::External(format!("bad URL {url:?}")))?;
                let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
                    return Err(AuthConfigError::External(format!(
                        "{url:?} is not absolute"
                    )));
                };
                if !matches!(scheme, "http" | "https") {
                    return Err(AuthConfigError::External(format!(
                        "{url:?} is not http or https"
                    )));
                }
                // The block's path is appended to the URL's own path.
                let base_path = uri.path().trim_end_matches('/');
                let joined = match (base_path, path.as_str()) {
                    ("", p) => p.to_owned(),
                    (b, "/") => b.to_owned(),
                    (b, p) => format!("{b}{p}"),
                };
                let path_and_query = match uri.query() {
                    Some(q) => format!("{joined}?{q}"),
                    None => joined,
                };
                Target::Url {
                    base: format!("{scheme}://{authority}"),
                    path_and_query,
                }
            }
        };
        let names = |list: &[String]| {
            list.iter()
                .map(|n| header_name(n))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut headers_to_auth = names(&config.headers_to_auth)?;
        if headers_to_auth.is_empty() {
            headers_to_auth = vec![header::AUTHORIZATION, header::COOKIE];
        }
        Ok(Self {
            target,
            path,
            headers_to_auth,
            to_backend: names(&config.response_headers_to_backend)?,
            timeout: match config.timeout_ms {
                0 => DEFAULT_TIMEOUT,
                ms => Duration::from_millis(ms),
            },
            fail_open: config.fail_open,
            client: env.client.clone(),
            resolver: env.resolver.clone(),
        })
    }

    /// Headers this method sets on accepted requests.
    pub fn set_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.to_backend.iter()
    }

    pub async fn check(&self, parts: &mut Parts) -> Outcome {
        let uri = match &self.target {
            Target::Url {
                base,
                path_and_query,
            } => format!("{base}{path_and_query}"),
            Target::Backend(id) => {
                let endpoints = (self.resolver)(id);
                if endpoints.is_empty() {
                    return self.unreachable(format!("backend {id} has no ready endpoint"));
                }
                let addr = endpoints[fastrand::usize(..endpoints.len())];
                format!("http://{addr}{}", self.path)
            }
        };
        let req = match self.request(&uri, parts) {
            Ok(req) => req,
            Err(e) => return self.unreachable(format!("cannot build the request: {e}")),
        };
        let answer = match self.client.send(req, self.timeout, MAX_DENIAL_BODY).await {
            Ok(answer) => answer,
            Err(e) => return self.unreachable(e.to_string()),
        };
        let (head, body) = answer.into_parts();
        if head.status.is_success() {
            for name in &self.to_backend {
                for value in head.headers.get_all(name) {
                    parts.headers.append(name.clone(), value.clone());
                }
            }
            return Outcome::Accepted(Identity::new(AuthMethod::External));
        }
        let mut headers = head.headers;
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        Outcome::Denied(Box::new(Denial {
            status: head.status,
            headers,
            body: body.unwrap_or_default(),
        }))
    }

    /// The check sent to the auth service.
    fn request(&self, uri: &str, parts: &Parts) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut headers = HeaderMap::new();
        for name in &self.headers_to_auth {
            for value in parts.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let original = &parts.headers;
        let uri_text = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let host = original
            .get(&X_FORWARDED_HOST)
            .or_else(|| original.get(header::HOST))
            .cloned()
            .or_else(|| {
                let authority = parts.uri.authority()?;
                HeaderValue::from_str(authority.as_str()).ok()
            });
        let proto = original
            .get(&X_FORWARDED_PROTO)
            .cloned()
            .unwrap_or_else(|| match parts.uri.scheme_str() {
                Some("https") => HeaderValue::from_static("https"),
                _ => HeaderValue::from_static("http"),
            });
        headers.insert(
            &X_FORWARDED_METHOD,
            HeaderValue::from_str(parts.method.as_str()).unwrap_or(HeaderValue::from_static("GET")),
        );
        if let Ok(v) = HeaderValue::from_str(&uri_text) {
            headers.insert(&X_FORWARDED_URI, v);
        }
        if let Some(host) = host {
            headers.insert(&X_FORWARDED_HOST, host);
        }
        headers.insert(&X_FORWARDED_PROTO, proto);
        for value in original.get_all(&X_FORWARDED_FOR) {
            headers.append(&X_FORWARDED_FOR, value.clone());
        }
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(Full::new(Bytes::new()))?;
        *req.headers_mut() = headers;
        Ok(req)
    }

    fn unreachable(&self, why: String) -> Outcome {
        if self.fail_open {
            tracing::warn!(error = %why, "authentication service unreachable; failing open");
            return Outcome::Accepted(Identity::new(AuthMethod::External));
        }
        tracing::warn!(error = %why, "authentication service unreachable");
        Outcome::Unavailable(why)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use http::{Response, StatusCode};
    use portico_api::policy::{Authentication, BasicAuth, ExternalAuth, ExternalTarget};

    use super::super::test_support::*;
    use super::super::{AuthLayer, AuthMethod};
    use super::*;

    type Recorded = Arc<Mutex<Vec<(Method, String, HeaderMap)>>>;

    /// An auth service: `/slow` never answers in time; `Authorization: Bearer good` passes
    /// with `X-User-ID`; `Bearer redirect` gets a 302 to a login page; anything else a 401
    /// with a challenge, a cookie and a body.
    async fn auth_service() -> (SocketAddr, Recorded) {
        let seen: Recorded = Arc::default();
        let record = seen.clone();
        let addr = serve(move |req: Request<hyper::body::Incoming>| {
            record.lock().unwrap().push((
                req.method().clone(),
                req.uri().to_string(),
                req.headers().clone(),
            ));
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            let slow = req.uri().path() == "/slow";
            async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                let mut r = Response::builder();
                r = match auth.as_deref() {
                    Some("Bearer good") => r
                        .status(200)
                        .header("x-user-id", "u-7")
                        .header("x-other", "not copied"),
                    Some("Bearer redirect") => {
                        r.status(302).header("location", "https://login.test/?rd=x")
                    }
                    _ => r
                        .status(401)
                        .header("www-authenticate", r#"Bearer realm="ext""#)
                        .header("set-cookie", "csrf=1")
                        .header("content-type", "application/json"),
                };
                r.body(Full::new(Bytes::from_static(br#"{"error":"nope"}"#)))
                    .unwrap()
            }
        })
        .await;
        (addr, seen)
    }

    fn config(target: ExternalTarget, path: &str) -> ExternalAuth {
        ExternalAuth {
            target,
            path: path.into(),
            headers_to_auth: Vec::new(),
            response_headers_to_backend: vec!["x-user-id".into()],
            timeout_ms: 300,
            fail_open: false,
        }
    }

    fn layer(external: ExternalAuth, resolve_to: Vec<SocketAddr>) -> AuthLayer {
        let env = AuthEnv::new(Arc::new(move |id: &str| {
            assert_eq!(id, "shop/authz:8080");
            resolve_to.clone()
        }));
        let config = Authentication {
            external: Some(external),
            ..Default::default()
        };
        AuthLayer::new(&config, &env).unwrap()
    }

    #[tokio::test]
    async fn a_2xx_passes_and_copies_the_chosen_headers() {
        let (addr, seen) = auth_service().await;
        let l = layer(
            config(ExternalTarget::Backend("shop/authz:8080".into()), "/check"),
            vec![addr],
        );
        let req = request(
            "/orders/1?x=y",
            &[
                ("authorization", "Bearer good"),
                ("cookie", "s=1"),
                ("x-user-id", "spoofed"),
                ("x-private", "stays here"),
                ("host", "shop.test"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-proto", "https"),
            ],
        );
        let mut req = req;
        *req.method_mut() = Method::POST;
        let got = run(&l, req).await;
        assert_eq!(got.status, 200);
        let upstream = got.upstream.unwrap();
        assert_eq!(
            upstream.get_all("x-user-id").iter().collect::<Vec<_>>(),
            ["u-7"]
        );
        assert!(!upstream.contains_key("x-other"));
        assert_eq!(got.identity.unwrap().method, AuthMethod::External);

        let (method, uri, headers) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(method, Method::GET);
        assert_eq!(uri, "/check");
        assert_eq!(headers["x-forwarded-method"], "POST");
        assert_eq!(headers["x-forwarded-uri"], "/orders/1?x=y");
        assert_eq!(headers["x-forwarded-host"], "shop.test");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1");
        assert_eq!(headers["authorization"], "Bearer good");
        assert_eq!(headers["cookie"], "s=1");
        assert!(!headers.contains_key("x-private"));
    }

    #[tokio::test]
    async fn other_answers_go_back_to_the_client() {
        let (addr, _) = auth_service().await;
        let l = layer(
            config(ExternalTarget::Url(format!("http://{addr}")), "/check"),
            Vec::new(),
        );
        let denied = run(&l, request("/", &[("authorization", "Bearer bad")])).await;
        assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
        assert!(denied.upstream.is_none());
        assert_eq!(denied.headers["www-authenticate"], r#"Bearer realm="ext""#);
        assert_eq!(denied.headers["set-cookie"], "csrf=1");
        assert_eq!(denied.headers["content-type"], "application/json");
        assert_eq!(denied.body, r#"{"error":"nope"}"#);

        let redirect = run(&l, request("/", &[("authorization", "Bearer redirect")])).await;
        assert_eq!(redirect.status, StatusCode::FOUND);
        assert_eq!(redirect.headers["location"], "https://login.test/?rd=x");
    }

    #[tokio::test]
    async fn no_answer_is_503_unless_failing_open() {
        let (addr, _) = auth_service().await;
        let slow = config(ExternalTarget::Url(format!("http://{addr}/slow")), "/");
        let l = layer(slow.clone(), Vec::new());
        let got = run(&l, request("/", &[("authorization", "Bearer good")])).await;
        assert_eq!(got.status, 503);
        assert!(got.upstream.is_none());

        let l = layer(
            config(ExternalTarget::Backend("shop/authz:8080".into()), "/"),
            Vec::new(),
        );
        assert_eq!(run(&l, request("/", &[])).await.status, 503);

        let open = ExternalAuth {
            fail_open: true,
            ..slow
        };
        let l = layer(open, Vec::new());
        let got = run(&l, request("/", &[("x-user-id", "spoofed")])).await;
        assert_eq!(got.status, 200);
        assert!(!got.upstream.unwrap().contains_key("x-user-id"));
    }

    #[tokio::test]
    async fn a_denial_carries_the_other_methods_challenges() {
        let (addr, _) = auth_service().await;
        let env = env();
        let config = Authentication {
            basic: Some(BasicAuth {
                realm: "Shop".into(),
                htpasswd: String::new(),
            }),
            external: Some(config(ExternalTarget::Url(format!("http://{addr}/")), "/")),
            ..Default::default()
        };
        let l = AuthLayer::new(&config, &env).unwrap();
        let got = run(&l, request("/", &[])).await;
        assert_eq!(got.status, 401);
        let challenges: Vec<_> = got.headers.get_all("www-authenticate").iter().collect();
        assert_eq!(
            challenges,
            [r#"Bearer realm="ext""#, r#"Basic realm="Shop""#]
        );
    }
}
