//! Upstreams: backends of a snapshot, their endpoints and pooled connections.
//!
//! ```text
//! Backend::forward ─▶ Balancer::pick ─▶ Endpoint::checkout (idle, shared h2, or Connector)
//!                 ─▶ send ─▶ response body streams back, then the connection returns to the pool
//! ```
//!
//! A connection that is refused ejects its endpoint for [`EJECT_FOR`] and the request goes to
//! another endpoint: nothing was sent, so the retry is safe for any method. A connect that
//! times out ejects the endpoint too.
//!
//! A route's `timeouts.connect` and `timeouts.idle` arrive with each request as a
//! [`RouteTimeouts`] extension (set by the route's policy stack); see [`idle`] for the latter.

mod balance;
mod connect;
mod endpoint;
pub mod idle;
mod request_body;
mod tunnel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use portico_api::AppProtocol;
use prometheus_client::metrics::counter::Counter;

use crate::body::ProxyBody;
use crate::error::{ProxyError, Result};
use crate::metrics::{Histogram, UpstreamDurations};
use crate::telemetry::{ClientSpan, Observe, UpstreamInfo};
use balance::Balancer;
use connect::{Conn, ConnectError, Connector, H1Conn};
pub use endpoint::{Endpoint, set_idle_timeout};
pub use idle::IdleWatch;
pub use request_body::{ClientBody, Limited, RequestBody};
pub use tunnel::Tunnels;

/// How long an endpoint that refused a connection is skipped.
pub const EJECT_FOR: Duration = Duration::from_secs(5);

/// A pooled connection idle longer than this may have been closed by the server just as the
/// request is written (servers' keep-alive timeouts start at a couple of seconds). Bodiless
/// idempotent requests sent on one keep a copy of their head, and are sent again on another
/// connection if that one closes before answering.
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A route's limits on its upstream exchanges (IngressPolicy `timeouts.connect` and
/// `timeouts.idle`), carried in the request's extensions. `None` keeps the proxy's default:
/// `--connect-timeout`, and no idle limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteTimeouts {
    /// TCP and TLS connect to an endpoint, when a new connection is needed.
    pub connect: Option<Duration>,
    /// The longest nothing may move between proxy and backend, in either direction.
    pub idle: Option<Duration>,
}

/// What every backend shares.
#[derive(Debug)]
struct Shared {
    connector: Connector,
    tunnels: Arc<Tunnels>,
    connect_errors: Counter,
    durations: UpstreamDurations,
}

/// The endpoints of every backend in force, shared across snapshots.
#[derive(Debug)]
pub struct Upstreams {
    shared: Arc<Shared>,
    endpoints: Mutex<HashMap<(SocketAddr, AppProtocol), Weak<Endpoint>>>,
}

impl Upstreams {
    /// Upstreams with the given connect timeout, counting connect failures in `connect_errors`
    /// and timing responses in `durations`.
    pub fn new(
        connect_timeout: Duration,
        tunnels: Arc<Tunnels>,
        connect_errors: Counter,
        durations: UpstreamDurations,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector: Connector::new(connect_timeout),
                tunnels,
                connect_errors,
                durations,
            }),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime form of a snapshot backend. Endpoints already known (same address and
    /// protocol) are reused with their connections and ejection state.
    pub fn backend(&self, backend: &portico_api::Backend) -> Arc<Backend> {
        let mut known = self.endpoints.lock().unwrap();
        let endpoints = backend
            .endpoints
            .iter()
            .map(|e| {
                let key = (SocketAddr::new(e.address, e.port), backend.protocol);
                if let Some(ep) = known.get(&key).and_then(Weak::upgrade) {
                    return ep;
                }
                let ep = Arc::new(Endpoint::new(key.0, key.1));
                known.insert(key, Arc::downgrade(&ep));
                ep
            })
            .collect();
        Arc::new(Backend {
            endpoints,
            balancer: Balancer::new(backend.load_balancer),
            duration: self
                .shared
                .durations
                .service(&backend.service.namespace, &backend.service.name),
            shared: self.shared.clone(),
        })
    }

    /// Forgets endpoints no snapshot uses any more.
    pub fn prune(&self) {
        self.endpoints
            .lock()
            .unwrap()
            .retain(|_, ep| ep.strong_count() > 0);
    }
}

/// A backend of the snapshot in force: where a route's requests go.
#[derive(Debug)]
pub struct Backend {
    endpoints: Box<[Arc<Endpoint>]>,
    balancer: Balancer,
    /// Time to the response head, per try.
    duration: Histogram,
    shared: Arc<Shared>,
}

/// What one try reports when the request is observed ([`Observe`]).
#[derive(Debug, Default)]
struct Try {
    span: Option<ClientSpan>,
    endpoint: Option<SocketAddr>,
}

/// A request's claim on an endpoint: counts as in flight until dropped. It holds the HTTP/1.1
/// connection of the exchange, which the response body drives while it streams, and hands it
/// back to the pool when released at the end of the body.
#[derive(Debug)]
pub struct Lease {
    endpoint: Arc<Endpoint>,
    h1: Option<Box<H1Conn>>,
}

impl Lease {
    fn new(endpoint: &Arc<Endpoint>) -> Self {
        endpoint.start_request();
        Self {
            endpoint: endpoint.clone(),
            h1: None,
        }
    }

    /// Drives the connection of the exchange, if the lease holds one: false if it does not.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(h1) = &mut self.h1 else {
            return false;
        };
        if !h1.drive(cx) {
            self.h1 = None;
        }
        true
    }

    /// The exchange completed: the connection goes back to the pool if it can carry another
    /// request, and is closed otherwise.
    pub fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut h1) = self.h1.take()
            && (h1.is_ready(cx) || h1.poll_reusable(cx))
        {
            self.endpoint.put_idle(h1);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.end_request();
    }
}

impl Backend {
    /// Sends `req` (already cleaned by [`crate::hygiene`]) to an endpoint and returns the
    /// response with its body streaming. Each call is one try: with tracing on, one client
    /// span, whose context goes upstream in `traceparent`.
    pub async fn forward(&self, req: Request<RequestBody>) -> Result<Response<ProxyBody>> {
        if self.endpoints.is_empty() {
            return Err(ProxyError::NoEndpoints);
        }
        let start = Instant::now();
        let Some(observe) = req.extensions().get::<Observe>() else {
            let result = self.send(req, None).await;
            self.duration.observe(start.elapsed().as_secs_f64());
            return result;
        };
        let mut this_try = Try {
            span: observe.trace.as_ref().map(|t| t.client_span(req.method())),
            endpoint: None,
        };
        let mut result = self.send(req, Some(&mut this_try)).await;
        let elapsed = start.elapsed();
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(span) = this_try.span {
            span.finish(result.as_ref().map(|r| r.status().as_u16()));
        }
        if let (Ok(response), Some(endpoint)) = (&mut result, this_try.endpoint) {
            response
                .extensions_mut()
                .insert(UpstreamInfo { endpoint, elapsed });
        }
        result
    }

    async fn send(
        &self,
        mut req: Request<RequestBody>,
        mut observe: Option<&mut Try>,
    ) -> Result<Response<ProxyBody>> {
        let client_upgrade = req
            .headers()
            .contains_key(header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let timeouts = req
            .extensions()
            .get::<RouteTimeouts>()
            .copied()
            .unwrap_or_default();
        let activity = timeouts.idle.map(|_| idle::Activity::new());
        if let Some(activity) = &activity {
            req = req.map(|body| body.watched(activity));
        }
        // Each endpoint may refuse once; a pooled connection that closed under us is retried
        // a few times more.
        let max_tries = self.endpoints.len() + 3;
        let mut tries = 0;
        loop {
            tries += 1;
            let Some(endpoint) = self.balancer.pick(&self.endpoints) else {
                return Err(ProxyError::AllEjected);
            };
            if let Some(observe) = observe.as_deref_mut() {
                observe.endpoint = Some(endpoint.addr);
                if let Some(span) = &mut observe.span {
                    span.endpoint(endpoint.addr, req.headers_mut());
                }
            }
            let checkout = endpoint.checkout(&self.shared.connector, timeouts.connect);
            let (conn, idle_for) = match checkout.await {
                Ok(checked_out) => checked_out,
                Err(e) => {
                    self.shared.connect_errors.inc();
                    match e {
                        ConnectError::Refused(e) => {
                            endpoint.eject(EJECT_FOR);
                            if tries < max_tries {
                                tracing::debug!(endpoint = %endpoint.addr, error = %e, "connection refused, trying another endpoint");
                                continue;
                            }
                            return Err(ProxyError::UpstreamConnect(e));
                        }
                        ConnectError::Timeout => {
                            endpoint.eject(EJECT_FOR);
                            return Err(ProxyError::UpstreamConnectTimeout);
                        }
                        ConnectError::Other(e) => return Err(e),
                    }
                }
            };
            let mut lease = Lease::new(endpoint);
            // The idle clock starts when the request is sent, not while connecting.
            let mut watch = timeouts
                .idle
                .zip(activity.clone())
                .map(|(limit, activity)| {
                    activity.touch();
                    IdleWatch::new(limit, activity)
                });
            match conn {
                Conn::H1(mut h1) => {
                    to_origin_form(&mut req);
                    let replay = (idle_for > REPLAY_AFTER_IDLE && client_upgrade.is_none())
                        .then(|| Replay::of(&req))
                        .flatten();
                    let sent = if client_upgrade.is_some() {
                        // The connection may become a tunnel's: it gets a task of its own, and
                        // is not pooled again.
                        let sending = h1.into_spawned().try_send_request(req);
                        idle::within(watch.as_mut(), sending).await
                    } else {
                        let sent = idle::within(watch.as_mut(), h1.send(req)).await;
                        lease.h1 = Some(h1);
                        sent
                    };
                    let Some(sent) = sent else {
                        // Mid-exchange: the connection is closed, not pooled.
                        lease.h1 = None;
                        return Err(ProxyError::UpstreamIdle);
                    };
                    match sent {
                        Ok(response) => {
                            if response.body().is_end_stream() {
                                std::future::poll_fn(|cx| {
                                    lease.release(cx);
                                    Poll::Ready(())
                                })
                                .await;
                            }
                            return Ok(self.respond(response, lease, client_upgrade, watch));
                        }
                        Err(mut e) => match (e.take_message(), replay) {
                            (Some(back), _) if tries < max_tries => {
                                // Not sent: an idle connection the server had closed. Each is
                                // dropped, so skipping them does not use up the tries.
                                if idle_for > Duration::ZERO {
                                    tries -= 1;
                                }
                                req = back;
                            }
                            (None, Some(replay)) if tries < max_tries => {
                                tracing::debug!(endpoint = %endpoint.addr, error = %e.error(), "idle connection failed; sending the request again");
                                req = replay.into_request();
                            }
                            _ => return Err(ProxyError::UpstreamProtocol(e.into_error())),
                        },
                    }
                }
                Conn::H2(mut sender) => {
                    to_absolute_form(&mut req)?;
                    let Some(sent) =
                        idle::within(watch.as_mut(), sender.try_send_request(req)).await
                    else {
                        return Err(ProxyError::UpstreamIdle);
                    };
                    match sent {
                        Ok(response) => return Ok(self.respond(response, lease, None, watch)),
                        Err(mut e) => match e.take_message() {
                            Some(back) if tries < max_tries => req = back,
                            _ => return Err(ProxyError::UpstreamProtocol(e.into_error())),
                        },
                    }
                }
            }
        }
    }

    fn respond(
        &self,
        mut response: Response<Incoming>,
        lease: Lease,
        client_upgrade: Option<OnUpgrade>,
        idle: Option<IdleWatch>,
    ) -> Response<ProxyBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client) = client_upgrade
        {
            let upstream = hyper::upgrade::on(&mut response);
            self.shared.tunnels.spawn(client, upstream);
            // The connection now belongs to the tunnel.
            drop(lease);
            return response.map(|_| ProxyBody::empty());
        }
        response.map(|body| {
            let body = ProxyBody::upstream(body, lease);
            match idle {
                Some(watch) => body.with_idle(watch),
                None => body,
            }
        })
    }
}

/// HTTP/1.1 upstreams get the origin-form URI the dispatcher built, with the Host header.
fn to_origin_form(req: &mut Request<RequestBody>) {
    *req.version_mut() = Version::HTTP_11;
}

/// HTTP/2 upstreams get `:authority` from the Host header, which is then dropped.
fn to_absolute_form(req: &mut Request<RequestBody>) -> Result<()> {
    *req.version_mut() = Version::HTTP_2;
    if req.uri().authority().is_some() && req.uri().scheme().is_some() {
        req.headers_mut().remove(header::HOST);
        return Ok(());
    }
    let authority = match req.headers_mut().remove(header::HOST) {
        Some(host) => Authority::try_from(host.as_bytes())
            .map_err(|_| ProxyError::BadRequest("invalid Host header"))?,
        None => return Err(ProxyError::BadRequest("missing Host header")),
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|_| ProxyError::Internal("building the upstream URI"))?;
    Ok(())
}

/// The head of a bodiless idempotent request, kept to send it again.
#[derive(Debug)]
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    /// A copy of `req` if sending it twice is safe: an idempotent method and no body.
    fn of(req: &Request<RequestBody>) -> Option<Self> {
        let idempotent = matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::DELETE
                | Method::PUT
        );
        (idempotent && req.body().is_end_stream()).then(|| Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        })
    }

    fn into_request(self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        *req.version_mut() = Version::HTTP_11;
        req
    }
}
