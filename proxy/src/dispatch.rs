//! Per request: find the host, normalise the path, match a route, clean the headers and hand
//! the request to the route's stack, which forwards it upstream.
//!
//! Each route's handler is a `tower::Service` built once per snapshot ([`route_stack`]): the
//! forwarder, wrapped in the route's IngressPolicy middleware.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use portico_api::{Route, normalize_host};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::body::ProxyBody;
use crate::error::{ProxyError, Result};
use crate::hygiene::{self, ConnInfo};
use crate::path::normalize_path;
use crate::policy::auth::{AuthEnv, AuthLayer};
use crate::state::State;
use crate::upstream::Backend;

/// The handler of one route: a boxed, cloneable service built once per snapshot.
#[derive(Clone)]
pub struct RouteStack {
    id: Arc<str>,
    service: BoxCloneSyncService<Request<Incoming>, Response<ProxyBody>, ProxyError>,
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

/// Builds the stack of `route` against the snapshot's backends.
pub fn route_stack(
    route: &Route,
    backends: &HashMap<&str, Arc<Backend>>,
    auth: &AuthEnv,
) -> RouteStack {
    let forward = Forward {
        backend: backends.get(route.backend.as_str()).cloned(),
        backend_id: route.backend.as_str().into(),
    };
    // Layers of the route's IngressPolicy go here, outermost first.
    let service = match route.policy.authentication.as_deref() {
        None => BoxCloneSyncService::new(forward),
        Some(config) => match AuthLayer::new(config, auth) {
            Ok(layer) => BoxCloneSyncService::new(
                tower::ServiceBuilder::new()
                    // authentication: 401 (or the auth service's answer) before the backend
                    .layer(layer)
                    .service(forward),
            ),
            // Fail closed: a block the proxy cannot enforce must not let requests through.
            Err(e) => {
                tracing::error!(route = %route.id, error = %e, "cannot enforce authentication; the route answers 500");
                BoxCloneSyncService::new(tower::service_fn(|_: Request<Incoming>| async {
                    Err(ProxyError::Internal("authentication is misconfigured"))
                }))
            }
        },
    };
    RouteStack {
        id: route.id.as_str().into(),
        service,
    }
}

/// The innermost service: forwards to the route's backend.
#[derive(Debug, Clone)]
struct Forward {
    /// `None` when the snapshot lacks the backend: 503.
    backend: Option<Arc<Backend>>,
    backend_id: Arc<str>,
}

impl tower::Service<Request<Incoming>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        match &self.backend {
            Some(backend) => {
                let backend = backend.clone();
                Box::pin(async move { backend.forward(req).await })
            }
            None => {
                let id = self.backend_id.to_string();
                Box::pin(async move { Err(ProxyError::MissingBackend(id)) })
            }
        }
    }
}

/// Serves one request of a client connection. Never fails: errors become responses here.
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> std::result::Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let response = match proxy(&state, &conn, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    state
        .metrics
        .record(response.status().as_u16(), start.elapsed().as_secs_f64());
    Ok(response)
}

async fn proxy(
    state: &State,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
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
    let stack = {
        let config = state.config();
        if let Some(sni) = conn.sni.as_deref() {
            let named = normalize_host(host_str);
            if named != sni {
                let router = config.router();
                let by_host = router.sni(Some(&named)).map(|e| &e.certificate);
                let by_sni = router.sni(Some(sni)).map(|e| &e.certificate);
                if by_host != by_sni {
                    return Err(ProxyError::Misdirected);
                }
            }
        }
        config.lookup(host_str, &path)?.clone()
    };
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
    let http11 = req.version() == Version::HTTP_11;
    let headers = req.headers_mut();
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }
    hygiene::prepare_request(headers, conn, &host, http11, state.hygiene);
    tracing::trace!(route = stack.route_id(), "routed");
    let mut response = stack.service.oneshot(req).await?;
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
