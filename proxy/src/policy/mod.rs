//! IngressPolicy enforcement: a route's effective [`RoutePolicy`] becomes tower layers around
//! its forwarder, built once per snapshot.
//!
//! The order is fixed (outermost first); each block is one layer in its own module:
//!
//! ```text
//! ipAccess            access::IpAccessLayer        403 before anything else is looked at
//! clientCertificate   access::ClientCertLayer      403 without an acceptable certificate
//! cors                cors::CorsLayer              answers preflights; adds CORS headers to
//!                                                  every response below it, errors included
//! body                body_limit::BodyLimitLayer   413 by Content-Length or while streaming
//! rateLimit PreAuth   rate_limit::RateLimitLayer   429, and the in-flight cap (503)
//! authentication      auth::AuthLayer              401 / the external service's answer
//! rateLimit PostAuth  rate_limit::RateLimitLayer   keys from the identity (JWT claim, API key)
//! headers             headers::HeadersLayer        request edits; response edits on return
//! timeouts, retry     retry::RetryLayer            504, tries within the retry budget; hands
//!                                                  connect and idle limits to the upstream
//! upstream            dispatch::Forward
//! ```
//!
//! Every layer sees the same request: the normalised path the router matched (see
//! `crate::path`), the cleaned headers (`crate::hygiene`), and the client in [`Client`].
//! A block that cannot be built (an unreadable htpasswd, say) makes the route fail closed with
//! 500 rather than serve it unprotected.

pub mod access;
pub mod auth;
pub mod body_limit;
pub mod cors;
pub mod headers;
pub mod rate_limit;
pub mod retry;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use portico_api::RoutePolicy;
use tower::Layer as _;
use tower::util::BoxCloneSyncService;

use crate::body::ProxyBody;
use crate::error::{ProxyError, Result};
use crate::hygiene::ConnInfo;
use crate::upstream::RequestBody;

/// The request type of every route stack.
pub type Req = Request<RequestBody>;
/// The response type of every route stack.
pub type Res = Response<ProxyBody>;
/// A boxed route stack.
pub type Svc = BoxCloneSyncService<Req, Res, ProxyError>;
/// The future of a policy layer.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Res>> + Send>>;

/// The client of a request, in its extensions when the route has a policy.
#[derive(Debug, Clone)]
pub struct Client {
    pub conn: Arc<ConnInfo>,
    /// The client's address: the peer, or the address trusted proxies reported.
    pub ip: IpAddr,
}

/// What outlives snapshots: rate-limit buckets, the Redis client, the JWKS cache.
#[derive(Debug)]
pub struct PolicyEnv {
    pub rate_limits: rate_limit::Buckets,
    pub retry_budgets: retry::Budgets,
    pub auth: auth::AuthEnv,
}

/// Wraps `forward` in the layers of `policy`. `replicas` is the snapshot's replica count
/// (for `DividedAmongReplicas` limits).
pub fn stack(
    route: &str,
    policy: &RoutePolicy,
    replicas: u32,
    env: &PolicyEnv,
    forward: Svc,
) -> Svc {
    match build(route, policy, replicas, env, forward) {
        Ok(svc) => svc,
        Err(e) => {
            let blocks: Vec<&str> = policy.origins.keys().map(String::as_str).collect();
            tracing::error!(error = %e, ?blocks, "policy cannot be enforced; the route answers 500 until it is fixed");
            let e: Arc<str> = e.to_string().into();
            BoxCloneSyncService::new(tower::service_fn(move |_req: Req| {
                let e = e.clone();
                async move { Err::<Res, _>(ProxyError::PolicyUnusable(e)) }
            }))
        }
    }
}

/// Why a policy could not be turned into layers.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("authentication: {0}")]
    Auth(#[from] auth::AuthConfigError),
    #[error("rateLimit: {0}")]
    RateLimit(String),
}

fn build(
    route: &str,
    policy: &RoutePolicy,
    replicas: u32,
    env: &PolicyEnv,
    forward: Svc,
) -> Result<Svc, BuildError> {
    use rate_limit::Stage;
    let mut svc = forward;
    // Built inside out: each line wraps the stack below it.
    if policy.timeouts.is_some() || policy.retry.is_some() {
        svc = Svc::new(
            retry::RetryLayer::new(policy.timeouts.as_deref(), policy.retry.as_deref())
                .with_budget(env.retry_budgets.get(route, policy.retry.as_deref()))
                .layer(svc),
        );
    }
    if let Some(headers) = &policy.headers {
        svc = Svc::new(headers::HeadersLayer::new(headers).layer(svc));
    }
    if let Some(rl) = &policy.rate_limit
        && let Some(layer) = env.rate_limits.layer(rl, Stage::PostAuth, replicas)?
    {
        svc = Svc::new(layer.layer(svc));
    }
    if let Some(authn) = &policy.authentication {
        svc = Svc::new(auth::AuthLayer::new(authn, &env.auth)?.layer(svc));
    }
    if let Some(rl) = &policy.rate_limit
        && let Some(layer) = env.rate_limits.layer(rl, Stage::PreAuth, replicas)?
    {
        svc = Svc::new(layer.layer(svc));
    }
    if let Some(body) = &policy.body {
        svc = Svc::new(body_limit::BodyLimitLayer::new(body.max_request_bytes).layer(svc));
    }
    if let Some(cors) = &policy.cors {
        svc = Svc::new(cors::CorsLayer::new(cors).layer(svc));
    }
    if let Some(cert) = &policy.client_certificate {
        svc = Svc::new(access::ClientCertLayer::new(cert).layer(svc));
    }
    if let Some(ip) = &policy.ip_access {
        svc = Svc::new(access::IpAccessLayer::new(ip).layer(svc));
    }
    Ok(svc)
}
