//! `authentication`: basic, JWT, API keys and forward (external) authentication.
//!
//! ```text
//! request ─▶ strip headers the proxy sets from auth ─▶ API key ─▶ basic ─▶ JWT ─▶ external
//!         ─▶ first method that accepts: edit headers, add `Identity` ─▶ inner service
//!         ─▶ none accepts: `Rejection` (401 with every method's challenge, the auth service's
//!            own answer, or 503 when it cannot be reached)
//! ```
//!
//! A request passes when any configured method accepts it. Local methods are tried first, so
//! the auth service is only asked about requests no local method accepted. [`AuthLayer`] is built once per
//! snapshot; [`AuthEnv`] (the JWKS cache, the backend resolver, the clock, the HTTP client)
//! outlives snapshots.

mod api_key;
mod basic;
mod client;
mod external;
mod jwks;
mod jwt;
mod token;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use serde_json::{Map, Value};
use tower::{Layer, Service};

use crate::body::ProxyBody;
use crate::error::ProxyError;

pub use jwks::JwksCache;

/// Ready endpoint addresses of a snapshot backend, by backend id (for external auth).
pub type BackendResolver = Arc<dyn Fn(&str) -> Vec<SocketAddr> + Send + Sync>;

/// The time JWT `exp` and `nbf` and the JWKS cache are checked against.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What authentication keeps across snapshots.
#[derive(Clone)]
pub struct AuthEnv {
    /// Remote key sets, shared by every route and snapshot that names the same URI.
    pub jwks: JwksCache,
    /// Endpoints of `ExternalTarget::Backend`.
    pub resolver: BackendResolver,
    /// `SystemTime::now` outside tests.
    pub clock: Clock,
    client: client::HttpClient,
}

impl fmt::Debug for AuthEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthEnv")
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl AuthEnv {
    /// An environment on the system clock, with an empty JWKS cache.
    pub fn new(resolver: BackendResolver) -> Self {
        let client = client::HttpClient::new();
        Self {
            jwks: JwksCache::new(client.clone(), jwks::MIN_REFETCH_INTERVAL),
            resolver,
            clock: Arc::new(SystemTime::now),
            client,
        }
    }

    /// The same environment reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same environment with its own JWKS cache that refetches a key set for an unknown
    /// `kid` at most once per `min_refetch_interval`.
    pub fn with_jwks_refetch_interval(mut self, min_refetch_interval: Duration) -> Self {
        self.jwks = JwksCache::new(self.client.clone(), min_refetch_interval);
        self
    }
}

/// An `authentication` block the proxy cannot enforce. The route must refuse requests rather
/// than let them through.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("basic: htpasswd line {line}: {why}")]
    Htpasswd { line: usize, why: String },
    #[error("jwt provider {provider}: {why}")]
    Jwt { provider: String, why: String },
    #[error("apiKey: {0}")]
    ApiKey(String),
    #[error("external: {0}")]
    External(String),
    #[error("invalid header name {0:?}")]
    HeaderName(String),
}

/// Which method accepted a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    Basic,
    Jwt,
    ApiKey,
    External,
}

/// Who a request was authenticated as, in its extensions for the rate limiter and the logs.
#[derive(Clone)]
pub struct Identity {
    pub method: AuthMethod,
    /// The basic user, the JWT `sub` or the API key's client id.
    pub subject: Option<String>,
    claims: Option<Arc<Map<String, Value>>>,
    /// The client id of the matched API key.
    pub client_id: Option<String>,
}

impl Identity {
    /// An identity without subject, client id or claims (the auth service's, or for tests).
    pub fn new(method: AuthMethod) -> Self {
        Self {
            method,
            subject: None,
            claims: None,
            client_id: None,
        }
    }

    /// The same identity with these JWT claims.
    pub fn with_claims(mut self, claims: Map<String, Value>) -> Self {
        self.claims = Some(Arc::new(claims));
        self
    }

    /// A claim of the JWT as text: strings as they are, numbers and booleans printed, arrays of
    /// those joined by commas. A dotted name (`realm.role`) reaches into objects when no
    /// top-level claim has that name.
    pub fn claim(&self, name: &str) -> Option<String> {
        jwt::claim_text(self.claims.as_deref()?, name)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claim values may be personal data: names only.
        f.debug_struct("Identity")
            .field("method", &self.method)
            .field("subject", &self.subject)
            .field("client_id", &self.client_id)
            .field(
                "claims",
                &self.claims.as_ref().map(|c| c.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No method accepted the request: 401 with each failed method's challenge.
    #[error("authentication required")]
    Unauthorized { challenges: Vec<HeaderValue> },
    /// The auth service answered with a non-2xx status: its answer goes to the client.
    #[error("denied by the authentication service with {}", .0.status)]
    Denied(Box<Denial>),
    /// The auth service could not be reached or did not answer in time: 503.
    #[error("authentication service unavailable: {0}")]
    Unavailable(String),
}

/// The auth service's answer, as returned to the client.
pub struct Denial {
    pub status: StatusCode,
    /// End-to-end headers (WWW-Authenticate, Location, Set-Cookie, Content-Type, ...).
    pub headers: HeaderMap,
    /// At most 64 KiB; empty when the answer was longer.
    pub body: Bytes,
}

impl fmt::Debug for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header names only: Set-Cookie values are sessions.
        f.debug_struct("Denial")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Rejection {
    /// The status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Denied(d) => d.status,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Headers to add to the response.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        match self {
            Self::Unauthorized { challenges } => {
                for c in challenges {
                    headers.append(header::WWW_AUTHENTICATE, c.clone());
                }
            }
            Self::Denied(d) => headers.clone_from(&d.headers),
            Self::Unavailable(_) => {}
        }
        headers
    }

    /// The auth service's body, which replaces the proxy's own.
    pub fn body(&self) -> Option<Bytes> {
        match self {
            Self::Denied(d) => Some(d.body.clone()),
            _ => None,
        }
    }

    /// A label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "auth_unauthorized",
            Self::Denied(_) => "auth_denied",
            Self::Unavailable(_) => "auth_unavailable",
        }
    }
}

/// What one method made of a request.
enum Outcome {
    Accepted(Identity),
    /// The method did not accept; its challenge, if it has one.
    Refused(Option<HeaderValue>),
    Denied(Box<Denial>),
    Unavailable(String),
}

/// The methods of one `authentication` block, ready to check requests.
struct Authenticator {
    api_key: Option<api_key::ApiKey>,
    basic: Option<basic::Basic>,
    jwt: Option<jwt::Jwt>,
    external: Option<external::External>,
    /// Headers the proxy sets from auth results, removed from every request first.
    strip: Vec<HeaderName>,
}

impl Authenticator {
    fn new(
        config: &portico_api::policy::Authentication,
        env: &AuthEnv,
    ) -> Result<Self, AuthConfigError> {
        let api_key = config
            .api_key
            .as_ref()
            .map(api_key::ApiKey::new)
            .transpose()?;
        let basic = config.basic.as_ref().map(basic::Basic::new).transpose()?;
        let jwt = config
            .jwt
            .as_ref()
            .map(|j| jwt::Jwt::new(j, env))
            .transpose()?;
        let external = config
            .external
            .as_ref()
            .map(|e| external::External::new(e, env))
            .transpose()?;
        let mut strip = Vec::new();
        if let Some(a) = &api_key {
            strip.extend(a.set_headers().cloned());
        }
        if let Some(j) = &jwt {
            strip.extend(j.set_headers().cloned());
        }
        if let Some(e) = &external {
            strip.extend(e.set_headers().cloned());
        }
        strip.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        strip.dedup();
        Ok(Self {
            api_key,
            basic,
            jwt,
            external,
            strip,
        })
    }

    /// Accepts the request (editing its headers and adding an [`Identity`]) or refuses it.
    async fn authenticate(&self, parts: &mut Parts) -> Result<(), Rejection> {
        for name in &self.strip {
            parts.headers.remove(name);
        }
        let mut challenges = Vec::new();
        let mut unavailable = None;
        // Local methods first: the auth service is asked only when they did not accept.
        if let Some(api_key) = &self.api_key {
            let outcome = api_key.check(parts);
            if let Some(done) = absorb(outcome, parts, &mut challenges, &mut unavailable) {
                return done;
            }
        }
        if let Some(basic) = &self.basic {
            let outcome = basic.check(parts).await;
            if let Some(done) = absorb(outcome, parts, &mut challenges, &mut unavailable) {
                return done;
            }
        }
        if let Some(jwt) = &self.jwt {
            let outcome = jwt.check(parts).await;
            if let Some(done) = absorb(outcome, parts, &mut challenges, &mut unavailable) {
                return done;
            }
        }
        if let Some(external) = &self.external {
            let outcome = external.check(parts).await;
            if let Some(done) = absorb(outcome, parts, &mut challenges, &mut unavailable) {
                return done;
            }
        }
        match unavailable {
            Some(why) => Err(Rejection::Unavailable(why)),
            None => Err(Rejection::Unauthorized { challenges }),
        }
    }
}

/// Records one method's outcome; `Some` when it decides the request.
fn absorb(
    outcome: Outcome,
    parts: &mut Parts,
    challenges: &mut Vec<HeaderValue>,
    unavailable: &mut Option<String>,
) -> Option<Result<(), Rejection>> {
    match outcome {
        Outcome::Accepted(identity) => {
            tracing::debug!(method = ?identity.method, subject = ?identity.subject, "authenticated");
            parts.extensions.insert(identity);
            Some(Ok(()))
        }
        Outcome::Refused(challenge) => {
            challenges.extend(challenge);
            None
        }
        Outcome::Denied(mut denial) => {
            // The other methods' challenges too, so a client may pick any of them.
            for c in challenges.drain(..) {
                denial.headers.append(header::WWW_AUTHENTICATE, c);
            }
            Some(Err(Rejection::Denied(denial)))
        }
        Outcome::Unavailable(why) => {
            *unavailable = Some(why);
            None
        }
    }
}

/// Authenticates requests before the inner service sees them.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("api_key", &self.auth.api_key.is_some())
            .field("basic", &self.auth.basic.is_some())
            .field("jwt", &self.auth.jwt.is_some())
            .field("external", &self.auth.external.is_some())
            .finish()
    }
}

impl AuthLayer {
    /// Prepares `config` (parses htpasswd lines and inline key sets, checks header names).
    pub fn new(
        config: &portico_api::policy::Authentication,
        env: &AuthEnv,
    ) -> Result<Self, AuthConfigError> {
        Ok(Self {
            auth: Arc::new(Authenticator::new(config, env)?),
        })
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is not ready, the original is: call the original after the await.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            // Parts only across the await: the body need not be `Sync`.
            let (mut parts, body) = req.into_parts();
            auth.authenticate(&mut parts).await?;
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

/// A header name from the snapshot (lower-case already).
fn header_name(name: &str) -> Result<HeaderName, AuthConfigError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| AuthConfigError::HeaderName(name.to_owned()))
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers shared by the methods' tests.

    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    /// An environment whose resolver knows no backend.
    pub fn env() -> AuthEnv {
        AuthEnv::new(Arc::new(|_: &str| Vec::new()))
    }

    /// What the inner service saw, or the error response.
    #[derive(Debug)]
    pub struct Seen {
        pub status: StatusCode,
        pub headers: HeaderMap,
        /// Request headers that reached the inner service (`None` when refused).
        pub upstream: Option<HeaderMap>,
        pub identity: Option<Identity>,
        pub body: Bytes,
    }

    /// Sends `req` through the layer to an inner service that records what it got.
    pub async fn run(layer: &AuthLayer, req: Request<()>) -> Seen {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let recorder = seen.clone();
        let svc = ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(move |req: Request<()>| {
                let recorder = recorder.clone();
                async move {
                    *recorder.lock().unwrap() = Some((
                        req.headers().clone(),
                        req.extensions().get::<Identity>().cloned(),
                    ));
                    Ok::<_, ProxyError>(Response::new(ProxyBody::empty()))
                }
            });
        let response = match svc.oneshot(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let got = seen.lock().unwrap().take();
        let (upstream, identity) = match got {
            Some((h, i)) => (Some(h), i),
            None => (None, None),
        };
        Seen {
            status: parts.status,
            headers: parts.headers,
            upstream,
            identity,
            body,
        }
    }

    /// An HTTP/1.1 server on 127.0.0.1 answering with `handler`, for JWKS and auth services.
    pub async fn serve<F, Fut>(handler: F) -> std::net::SocketAddr
    where
        F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<http_body_util::Full<Bytes>>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let answer = handler(req);
                        async move { Ok::<_, std::convert::Infallible>(answer.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// A request for `/path` with the given headers.
    pub fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use portico_api::policy::{ApiKeyAuth, Authentication, BasicAuth, TokenSource};

    use super::test_support::*;
    use super::*;

    fn both() -> Authentication {
        Authentication {
            basic: Some(BasicAuth {
                realm: "Shop".into(),
                // openssl passwd -apr1 -salt portico wonderland
                htpasswd: "alice:$apr1$portico$1ChCvguPk.d7BjaxyXJFh.\n".into(),
            }),
            api_key: Some(ApiKeyAuth {
                keys: BTreeMap::from([("ci".into(), "k-ci".into())]),
                extract_from: vec![TokenSource::Header {
                    name: "x-api-key".into(),
                    prefix: String::new(),
                }],
                forward_client_id_header: Some("x-client-id".into()),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn any_method_accepting_passes_and_every_challenge_is_returned() {
        let layer = AuthLayer::new(&both(), &env()).unwrap();
        let refused = run(&layer, request("/", &[])).await;
        assert_eq!(refused.status, 401);
        assert!(refused.upstream.is_none());
        let challenges: Vec<_> = refused.headers.get_all("www-authenticate").iter().collect();
        assert_eq!(challenges, [r#"Basic realm="Shop""#]);

        let by_key = run(&layer, request("/", &[("x-api-key", "k-ci")])).await;
        assert_eq!(by_key.status, 200);
        assert_eq!(by_key.identity.unwrap().method, AuthMethod::ApiKey);

        let by_basic = run(
            &layer,
            request("/", &[("authorization", "Basic YWxpY2U6d29uZGVybGFuZA==")]),
        )
        .await;
        assert_eq!(by_basic.status, 200);
        let identity = by_basic.identity.unwrap();
        assert_eq!(identity.method, AuthMethod::Basic);
        assert_eq!(identity.subject.as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn headers_the_proxy_sets_are_removed_from_the_client_request() {
        let layer = AuthLayer::new(&both(), &env()).unwrap();
        // Accepted by basic: the client's own client-id header must not reach the backend.
        let seen = run(
            &layer,
            request(
                "/",
                &[
                    ("authorization", "Basic YWxpY2U6d29uZGVybGFuZA=="),
                    ("x-client-id", "admin"),
                ],
            ),
        )
        .await;
        assert_eq!(seen.status, 200);
        assert!(!seen.upstream.unwrap().contains_key("x-client-id"));
    }

    #[test]
    fn claims_read_as_header_text() {
        let claims = serde_json::json!({
            "sub": "u", "n": 7, "ok": false, "roles": ["a", "b"],
            "realm": {"role": "admin"}, "realm.role": "flat", "obj": {"a": 1}, "mixed": [1, {}],
        });
        let id = Identity::new(AuthMethod::Jwt).with_claims(claims.as_object().unwrap().clone());
        assert_eq!(id.claim("sub").as_deref(), Some("u"));
        assert_eq!(id.claim("n").as_deref(), Some("7"));
        assert_eq!(id.claim("ok").as_deref(), Some("false"));
        assert_eq!(id.claim("roles").as_deref(), Some("a,b"));
        // A top-level claim whose name has a dot wins over the nested one.
        assert_eq!(id.claim("realm.role").as_deref(), Some("flat"));
        assert_eq!(id.claim("obj.a").as_deref(), Some("1"));
        assert_eq!(id.claim("obj"), None);
        assert_eq!(id.claim("mixed"), None);
        assert_eq!(id.claim("missing"), None);
        assert_eq!(Identity::new(AuthMethod::Basic).claim("sub"), None);
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let layer = AuthLayer::new(&both(), &env()).unwrap();
        let text = format!("{layer:?} {:?}", env());
        assert!(!text.contains("k-ci") && !text.contains("apr1"), "{text}");
    }
}
