//! Per request: find the host, normalise the path, match a route, clean the headers and hand
//! the request to the route's stack, which forwards it upstream.
//!
//! Each route's handler is a `tower::Service` built once per snapshot ([`route_stack`]): the
//! forwarder wrapped in the layers of the route's IngressPolicy (see [`crate::policy`]), with the
//! route's metric handles and trace attributes beside it. Each request is counted in its route's
//! metrics and, when traces or the access log are on, traced and logged (see
//! [`crate::telemetry`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use portico_api::{Route, normalize_host};
use tower::ServiceExt;

use crate::body::ProxyBody;
use crate::error::{ProxyError, Result};
use crate::head_timeout::HeadTimer;
use crate::hygiene::{self, ConnInfo};
use crate::metrics::{ActiveStreams, Metrics};
use crate::path::{match_path, normalize_path};
use crate::policy::auth::{AuthMethod, Identity};
use crate::policy::{self, Client, PolicyEnv, Req, Svc};
use crate::state::State;
use crate::telemetry::{
    self, Entry, Finish, Observe, RequestHead, ResponseBody, RouteTelemetry, ServerSpan,
    UpstreamInfo,
};
use crate::upstream::{Backend, RequestBody};

/// The handler of one route, built once per snapshot.
pub struct RouteStack {
    id: Arc<str>,
    handler: Handler,
    /// Metric handles and trace attributes of the route.
    telemetry: Arc<RouteTelemetry>,
}

/// How a route's requests reach its backend.
#[derive(Clone)]
enum Handler {
    /// No policy: straight to the forwarder, without a boxed service to clone and a boxed
    /// future per layer.
    Direct(Forward),
    /// The forwarder in the layers of the route's IngressPolicy, which read the request's
    /// [`Client`].
    Policy(Svc),
}

impl std::fmt::Debug for RouteStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStack").field("id", &self.id).finish()
    }
}

impl RouteStack {
    /// The route's id.
    pub fn route_id(&self) -> &str {
        &self.id
    }
}

/// Builds the stack of `route` against the snapshot's backends. `class` is the snapshot's
/// IngressClass, a label of the route's metrics.
pub fn route_stack(
    route: &Route,
    backends: &HashMap<&str, Arc<Backend>>,
    policy: &PolicyEnv,
    replicas: u32,
    class: &str,
    metrics: &Metrics,
) -> RouteStack {
    let forward = Forward {
        backend: backends.get(route.backend.as_str()).cloned(),
        backend_id: route.backend.as_str().into(),
        rate_limited: route.policy.rate_limit.is_some(),
    };
    let handler = if route.policy.is_empty() {
        Handler::Direct(forward)
    } else {
        let _route = tracing::info_span!("route", id = %route.id).entered();
        Handler::Policy(policy::stack(
            &route.id,
            &route.policy,
            replicas,
            policy,
            Svc::new(forward),
        ))
    };
    let telemetry = Arc::new(RouteTelemetry::new(route, class, metrics));
    RouteStack {
        id: telemetry.id.clone(),
        handler,
        telemetry,
    }
}

/// The innermost service: forwards to the route's backend.
#[derive(Debug, Clone)]
struct Forward {
    /// `None` when the snapshot lacks the backend: 503.
    backend: Option<Arc<Backend>>,
    backend_id: Arc<str>,
    /// The route has rate limits: a request that gets here passed them.
    rate_limited: bool,
}

impl tower::Service<Req> for Forward {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.backend(&req) {
            Ok(backend) => {
                let backend = backend.clone();
                Box::pin(async move { backend.forward(req).await })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

impl Forward {
    /// The backend `req` goes to. Marks in the request's trace that the route's policy passed
    /// it.
    fn backend(&self, req: &Req) -> Result<&Arc<Backend>> {
        if let Some(Observe { trace: Some(trace) }) = req.extensions().get::<Observe>() {
            let method = req.extensions().get::<Identity>().map(|i| match i.method {
                AuthMethod::Basic => "basic",
                AuthMethod::Jwt => "jwt",
                AuthMethod::ApiKey => "apiKey",
                AuthMethod::External => "external",
            });
            trace.policy_passed(self.rate_limited, method);
        }
        self.backend
            .as_ref()
            .ok_or_else(|| ProxyError::MissingBackend(self.backend_id.to_string()))
    }
}

/// Serves one request of a client connection. Never fails: errors become responses here.
///
/// The request is counted in its route's metrics at the response head. With traces or the
/// access log on, its server span and log line are finished at the end of the response body.
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> std::result::Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    if let Some(timer) = &conn.head_timer {
        timer.head_received();
    }
    let stream = ActiveStreams::start(conn.h2_streams.as_ref());
    let Some(telemetry) = telemetry::get() else {
        let mut route = None;
        let result = proxy(&state, &conn, req, None, &mut route).await;
        let response = respond(&state, route.as_deref(), result, start, None);
        let timer = head_timer(&conn, &response);
        return Ok(response.map(|body| ResponseBody::new(body, stream, None, timer)));
    };
    // Boxed: the plain path's future stays as small as it was without telemetry.
    Box::pin(observed(&state, &conn, req, telemetry, start, stream)).await
}

/// [`handle`] with traces or the access log on.
async fn observed(
    state: &State,
    conn: &Arc<ConnInfo>,
    mut req: Request<Incoming>,
    telemetry: &'static telemetry::Telemetry,
    start: Instant,
    stream: crate::metrics::StreamGuard,
) -> std::result::Result<Response<ResponseBody>, Infallible> {
    let time = SystemTime::now();
    let method = req.method().clone();
    let version = req.version();
    let path: Box<str> = req.uri().path().into();
    let host: Box<str> = match req.uri().authority() {
        Some(authority) => authority.as_str().into(),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .into(),
    };
    let client = hygiene::client_ip(req.headers(), conn, &state.trusted_proxies);
    let mut span: Option<ServerSpan> = telemetry.tracing.as_ref().map(|tracing| {
        tracing.server_span(&mut RequestHead {
            method: &method,
            path: &path,
            host: &host,
            version,
            tls: conn.tls,
            client,
            headers: req.headers_mut(),
        })
    });
    let trace_id = match &span {
        Some(span) => span.trace_id(),
        None => telemetry::incoming_trace_id(req.headers()),
    };
    req.extensions_mut().insert(Observe {
        trace: span.as_ref().map(ServerSpan::upstream),
    });
    let mut route = None;
    let result = proxy(state, conn, req, Some(client), &mut route).await;
    if let (Some(span), Some(route)) = (&mut span, &route) {
        span.route(&method, route);
    }
    let error = result.as_ref().err().map(ProxyError::metric_label);
    let response = respond(state, route.as_deref(), result, start, span.as_mut());
    let upstream = response.extensions().get::<UpstreamInfo>().copied();
    let entry = telemetry.access_log.as_ref().map(|_| Entry {
        time,
        client,
        method,
        host,
        path,
        version,
        status: response.status().as_u16(),
        route: route.as_ref().map(|r| r.id.clone()),
        upstream: upstream.map(|u| u.endpoint),
        upstream_time: upstream.map(|u| u.elapsed),
        head_time: start.elapsed(),
        trace_id,
        error,
    });
    let finish = Box::new(Finish {
        span,
        entry,
        start,
        bytes: 0,
    });
    let timer = head_timer(conn, &response);
    Ok(response.map(|body| ResponseBody::new(body, stream, Some(finish), timer)))
}

/// The connection's head timer, for the response body to tell when the response is over; none
/// after an upgrade, which leaves no next request head to time.
fn head_timer(conn: &ConnInfo, response: &Response<ProxyBody>) -> Option<Arc<HeadTimer>> {
    let timer = conn.head_timer.as_ref()?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        timer.upgraded();
        return None;
    }
    Some(timer.clone())
}

/// Turns the outcome into the response, and counts it in the route's metrics (or the
/// unmatched ones).
fn respond(
    state: &State,
    route: Option<&RouteTelemetry>,
    result: Result<Response<ProxyBody>>,
    start: Instant,
    span: Option<&mut ServerSpan>,
) -> Response<ProxyBody> {
    let metrics = route.map_or(state.metrics.unmatched(), |r| &r.metrics);
    let response = match result {
        Ok(response) => {
            if let Some(span) = span {
                span.status(response.status().as_u16(), None);
            }
            response
        }
        Err(e) => {
            if let Some(why) = telemetry::rejection(&e) {
                metrics.reject(why);
            }
            if let Some(span) = span {
                span.status(e.status().as_u16(), Some(&e));
            }
            e.into_response()
        }
    };
    metrics.record(response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

/// Routes and forwards a request. `client_ip` is the client address when the caller already
/// worked it out; `matched` gets the telemetry of the route it matched.
async fn proxy(
    state: &State,
    conn: &Arc<ConnInfo>,
    mut req: Request<Incoming>,
    client_ip: Option<IpAddr>,
    matched: &mut Option<Arc<RouteTelemetry>>,
) -> Result<Response<ProxyBody>> {
    let host = request_host(&req)?;
    let host_str = host
        .to_str()
        .map_err(|_| ProxyError::BadRequest("invalid Host header"))?;
    let uri_path = req.uri().path();
    if !uri_path.starts_with('/') {
        return Err(ProxyError::BadRequest("the path must start with /"));
    }
    let path = normalize_path(uri_path);
    let handler = {
        let config = state.config();
        if conn.tls {
            // A request may only name a host the connection's handshake was made for: one
            // served with the same certificate, and never across a host that asks for client
            // certificates (that handshake's verification is what its routes rely on).
            let named = normalize_host(host_str);
            let sni = conn.sni.as_deref();
            if sni != Some(named.as_ref()) {
                let router = config.router();
                let by_host = router.sni(Some(&named));
                let by_sni = router.sni(sni);
                let mtls = by_host.is_some_and(|e| e.client_ca.is_some())
                    || by_sni.is_some_and(|e| e.client_ca.is_some());
                if mtls
                    || (sni.is_some()
                        && by_host.map(|e| &e.certificate) != by_sni.map(|e| &e.certificate))
                {
                    return Err(ProxyError::Misdirected);
                }
            }
        }
        let stack = config.lookup(host_str, &match_path(&path))?;
        tracing::trace!(route = stack.route_id(), "routed");
        *matched = Some(stack.telemetry.clone());
        stack.handler.clone()
    };
    let has_policy = matches!(handler, Handler::Policy(_));
    // The upstream gets the origin form: the normalised path and the original query.
    let rewrite = matches!(path, std::borrow::Cow::Owned(_))
        || req.uri().scheme().is_some()
        || req.uri().authority().is_some();
    if rewrite {
        let path_and_query = match req.uri().query() {
            Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
            None => PathAndQuery::try_from(path.as_ref()),
        }
        .map_err(|_| ProxyError::BadRequest("invalid path"))?;
        *req.uri_mut() = Uri::from(path_and_query);
    }
    // Policies see the client as it was before this hop is appended to X-Forwarded-For.
    let client = has_policy.then(|| Client {
        ip: client_ip
            .unwrap_or_else(|| hygiene::client_ip(req.headers(), conn, &state.trusted_proxies)),
        conn: conn.clone(),
    });
    let http11 = req.version() == Version::HTTP_11;
    let headers = req.headers_mut();
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }
    hygiene::prepare_request(headers, conn, &host, http11, state.hygiene);
    let timer = conn.head_timer.as_ref();
    let mut req: Req = req.map(|body| RequestBody::client(body, timer));
    if let Some(client) = client {
        req.extensions_mut().insert(client);
    }
    let mut response = match handler {
        // Boxed: the connection's future stays small, and is moved once per request.
        Handler::Direct(forward) => Box::pin(forward.backend(&req)?.forward(req)).await?,
        Handler::Policy(service) => service.oneshot(req).await?,
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    hygiene::prepare_response(response.headers_mut(), switching);
    Ok(response)
}

/// The request's host as the client gave it: `Host` for HTTP/1.x (exactly one; it must agree
/// with an absolute-form URI), `:authority` (else `Host`) for HTTP/2.
fn request_host(req: &Request<Incoming>) -> Result<HeaderValue> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let authority = req.uri().authority();
    if req.version() >= Version::HTTP_2 {
        return match (authority, host) {
            (Some(a), _) => HeaderValue::from_str(a.as_str())
                .map_err(|_| ProxyError::BadRequest("invalid :authority")),
            (None, Some(h)) => Ok(h.clone()),
            (None, None) => Err(ProxyError::BadRequest("missing :authority")),
        };
    }
    match (authority, host) {
        (Some(a), Some(h)) => {
            let h_str = h
                .to_str()
                .map_err(|_| ProxyError::BadRequest("invalid Host header"))?;
            if normalize_host(a.as_str()) != normalize_host(h_str) {
                return Err(ProxyError::BadRequest("Host differs from the request URI"));
            }
            Ok(h.clone())
        }
        (None, Some(h)) => Ok(h.clone()),
        (Some(a), None) => HeaderValue::from_str(a.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid authority")),
        (None, None) if req.version() == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("missing Host header"))
        }
        // HTTP/1.0 without a host matches the rules without a host.
        (None, None) => Ok(HeaderValue::from_static("")),
    }
}
