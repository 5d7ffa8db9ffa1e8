//! `timeouts` and `retry`: the whole request within `timeouts.request` (retries included),
//! each try within `retry.perTryTimeout` or `timeouts.backendRequest`, both until the response
//! head arrives; 504 when one runs out. `timeouts.connect` and `timeouts.idle` go with the
//! request to the upstream ([`RouteTimeouts`]), which enforces them on each try.
//!
//! A request is tried again only when all of these hold:
//! - its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or `nonIdempotent`;
//! - it is not an upgrade, and its body is empty or declared (`Content-Length`) at most
//!   [`MAX_REPLAY_BYTES`], which is then held in memory to be sent again;
//! - the try failed in a way `retry.on` names, before any of the response reached the client
//!   (a retried status is discarded, never forwarded);
//! - the retry budget has a token: each request adds `budget.percent`/100 of a token, and
//!   `budget.minPerSecond` tokens arrive each second (default 20% and 10/s), so retries cannot
//!   multiply the load on a failing backend.
//!
//! Tries wait a full-jitter exponential backoff (`base * 2^n`, at most `max`) between them,
//! and each retry is logged with its reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use portico_api::policy::{Retry, RetryOn, Timeouts};
use tower::{Layer, Service, ServiceExt};

use super::{BoxFuture, Req, Res};
use crate::error::{ProxyError, Result};
use crate::upstream::{RequestBody, RouteTimeouts};

/// Largest body kept in memory so that a request can be sent again.
pub const MAX_REPLAY_BYTES: u64 = 64 * 1024;

const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Config {
    request_timeout: Option<Duration>,
    try_timeout: Option<Duration>,
    /// Set on each request when the route has either.
    upstream: Option<RouteTimeouts>,
    attempts: u32,
    on: Vec<RetryOn>,
    status_codes: Vec<u16>,
    backoff_base: Duration,
    backoff_max: Duration,
    non_idempotent: bool,
    budget: Arc<Budget>,
}

/// Retry tokens: deposits per request, a steady trickle per second, withdrawals per retry.
#[derive(Debug)]
pub struct Budget {
    /// Hundredths of a token deposited per request.
    percent: u32,
    /// Tokens arriving each second.
    min_per_second: u32,
    /// Tokens, and when the trickle was last added.
    state: Mutex<(f64, Instant)>,
}

/// Retry budgets by route, kept across snapshots while their settings are unchanged, so that
/// a config change does not hand a failing backend a fresh allowance of retries.
#[derive(Debug, Default)]
pub struct Budgets {
    by_route: Mutex<HashMap<String, Weak<Budget>>>,
}

impl Budgets {
    /// The budget of `route` for `retry`'s settings.
    pub fn get(&self, route: &str, retry: Option<&Retry>) -> Arc<Budget> {
        let budget = Budget::of(retry);
        let mut by_route = self.by_route.lock().unwrap();
        by_route.retain(|_, b| b.strong_count() > 0);
        if let Some(existing) = by_route.get(route).and_then(Weak::upgrade)
            && (existing.percent, existing.min_per_second)
                == (budget.percent, budget.min_per_second)
        {
            return existing;
        }
        let budget = Arc::new(budget);
        by_route.insert(route.to_owned(), Arc::downgrade(&budget));
        budget
    }
}

impl Budget {
    /// A fresh budget for `retry`'s settings (by default 20% and 10/s).
    fn of(retry: Option<&Retry>) -> Self {
        let spec = retry.and_then(|r| r.budget.as_ref());
        let min_per_second = spec.map_or(10, |b| b.min_per_second);
        Self {
            percent: spec.map_or(20, |b| b.percent),
            min_per_second,
            // Starts with a second's worth, so the first failures can be retried.
            state: Mutex::new((f64::from(min_per_second), Instant::now())),
        }
    }

    /// At most ten seconds' worth of tokens (and at least ten) are kept.
    fn cap(&self) -> f64 {
        (f64::from(self.min_per_second) * 10.0).max(10.0)
    }

    fn deposit(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = (s.0 + f64::from(self.percent) / 100.0).min(self.cap());
    }

    fn withdraw(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap();
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * f64::from(self.min_per_second)).min(self.cap());
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Timeouts and retries of a route.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    config: Arc<Config>,
}

impl RetryLayer {
    pub fn new(timeouts: Option<&Timeouts>, retry: Option<&Retry>) -> Self {
        let ms = Duration::from_millis;
        let backoff = retry.and_then(|r| r.backoff.as_ref());
        Self {
            config: Arc::new(Config {
                request_timeout: timeouts.and_then(|t| t.request_ms).map(ms),
                try_timeout: retry
                    .and_then(|r| r.per_try_timeout_ms)
                    .or_else(|| timeouts.and_then(|t| t.backend_request_ms))
                    .map(ms),
                upstream: timeouts
                    .map(|t| RouteTimeouts {
                        connect: t.connect_ms.map(ms),
                        idle: t.idle_ms.map(ms),
                    })
                    .filter(|t| *t != RouteTimeouts::default()),
                attempts: retry.map_or(0, |r| r.attempts),
                on: retry.map(|r| r.on.clone()).unwrap_or_default(),
                status_codes: retry.map(|r| r.status_codes.clone()).unwrap_or_default(),
                backoff_base: backoff
                    .map(|b| ms(b.base_ms))
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_BACKOFF_BASE),
                backoff_max: backoff
                    .map(|b| ms(b.max_ms))
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_BACKOFF_MAX),
                non_idempotent: retry.is_some_and(|r| r.non_idempotent),
                budget: Arc::new(Budget::of(retry)),
            }),
        }
    }

    /// Uses `budget` (shared across snapshots, see [`Budgets`]) instead of a fresh one.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        Arc::get_mut(&mut self.config)
            .expect("configured before it is shared")
            .budget = budget;
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retrying<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Retrying {
            config: self.config.clone(),
            inner,
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retrying<S> {
    config: Arc<Config>,
    inner: S,
}

impl<S> Service<Req> for Retrying<S>
where
    S: Service<Req, Response = Res, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Res;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> BoxFuture {
        if let Some(upstream) = self.config.upstream {
            req.extensions_mut().insert(upstream);
        }
        let config = self.config.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let work = tries(&config, inner, req);
            match config.request_timeout {
                Some(limit) => tokio::time::timeout(limit, work)
                    .await
                    .unwrap_or(Err(ProxyError::UpstreamTimeout)),
                None => work.await,
            }
        })
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

async fn once<S>(config: &Config, inner: S, req: Req) -> Result<Res>
where
    S: Service<Req, Response = Res, Error = ProxyError>,
{
    let call = inner.oneshot(req);
    match config.try_timeout {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .unwrap_or(Err(ProxyError::UpstreamTimeout)),
        None => call.await,
    }
}

async fn tries<S>(config: &Config, inner: S, req: Req) -> Result<Res>
where
    S: Service<Req, Response = Res, Error = ProxyError> + Clone,
{
    config.budget.deposit();
    let may_retry = config.attempts > 0
        && (config.non_idempotent || idempotent(req.method()))
        && !req.headers().contains_key(header::UPGRADE);
    let (parts, body) = req.into_parts();
    let replayable = match body {
        RequestBody::Empty => Some(None),
        RequestBody::Buffered(bytes) => Some(bytes),
        body if may_retry && body.is_end_stream() => Some(None),
        body if may_retry
            && body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= MAX_REPLAY_BYTES) =>
        {
            match body.collect().await {
                Ok(collected) => Some(Some(collected.to_bytes())),
                Err(e) => {
                    tracing::debug!(error = %e, "request body failed while buffering it for retries");
                    return Err(ProxyError::BadRequest("request body could not be read"));
                }
            }
        }
        body => return once(config, inner, Req::from_parts(parts, body)).await,
    };
    let body = replayable.unwrap_or(None);
    if !may_retry {
        return once(
            config,
            inner,
            Req::from_parts(parts, RequestBody::Buffered(body)),
        )
        .await;
    }
    let head = Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        extensions: parts.extensions.clone(),
    };
    let mut first = Some(parts);
    let mut attempt = 0;
    loop {
        let body = RequestBody::Buffered(body.clone());
        let req = match first.take() {
            Some(parts) => Req::from_parts(parts, body),
            None => head.request(body),
        };
        let outcome = once(config, inner.clone(), req).await;
        let Some(reason) = retry_reason(config, &outcome) else {
            return outcome;
        };
        if attempt >= config.attempts {
            return outcome;
        }
        if !config.budget.withdraw(Instant::now()) {
            tracing::info!(reason, attempt, "not retrying: retry budget exhausted");
            return outcome;
        }
        attempt += 1;
        drop(outcome);
        let wait = backoff(config, attempt);
        tracing::info!(
            reason,
            attempt,
            max = config.attempts,
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

/// Full jitter: a uniform wait in `[0, min(max, base * 2^(attempt-1))]`.
fn backoff(config: &Config, attempt: u32) -> Duration {
    let ceiling = config
        .backoff_base
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(config.backoff_max);
    ceiling.mul_f64(fastrand::f64())
}

/// Why `outcome` should be tried again, if `retry.on` says so.
fn retry_reason(config: &Config, outcome: &Result<Res>) -> Option<&'static str> {
    let on = |c: RetryOn| config.on.contains(&c);
    match outcome {
        Ok(res) => {
            let status = res.status();
            let gateway = matches!(
                status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            );
            if on(RetryOn::FiveXx) && status.is_server_error() {
                Some("5xx")
            } else if on(RetryOn::GatewayError) && gateway {
                Some("gateway-error")
            } else if on(RetryOn::RetriableStatusCodes)
                && config.status_codes.contains(&status.as_u16())
            {
                Some("retriable-status-code")
            } else {
                None
            }
        }
        Err(e) => {
            let connect = matches!(
                e,
                ProxyError::UpstreamConnect(_)
                    | ProxyError::UpstreamConnectTimeout
                    | ProxyError::AllEjected
                    | ProxyError::UpstreamTls(_)
            );
            let reset = matches!(e, ProxyError::UpstreamProtocol(_));
            let timeout = matches!(e, ProxyError::UpstreamTimeout | ProxyError::UpstreamIdle);
            if connect && on(RetryOn::ConnectFailure) {
                Some("connect-failure")
            } else if reset && (on(RetryOn::Reset) || on(RetryOn::RefusedStream)) {
                Some("reset")
            } else if (connect || reset || timeout)
                && (on(RetryOn::FiveXx) || on(RetryOn::GatewayError))
            {
                Some("gateway-error")
            } else {
                None
            }
        }
    }
}

/// A request head kept to build the next try.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    /// What the proxy attached to the request (the client, the trace of the tries).
    extensions: http::Extensions,
}

impl Head {
    fn request(&self, body: RequestBody) -> Req {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.clone();
        req
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use bytes::Bytes;
    use portico_api::policy::{Backoff, RetryBudget};
    use tower::ServiceBuilder;

    use super::*;
    use crate::body::ProxyBody;

    fn retry(attempts: u32, on: &[RetryOn]) -> Retry {
        Retry {
            attempts,
            on: on.to_vec(),
            backoff: Some(Backoff {
                base_ms: 1,
                max_ms: 2,
            }),
            ..Retry::default()
        }
    }

    /// A backend answering `statuses` in turn (then 200), counting calls.
    fn backend(
        statuses: &'static [u16],
        calls: Arc<AtomicU32>,
    ) -> impl Service<Req, Response = Res, Error = ProxyError, Future = BoxFuture> + Clone {
        tower::service_fn(move |req: Req| -> BoxFuture {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            Box::pin(async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let status = statuses.get(n).copied().unwrap_or(200);
                if status == 0 {
                    return Err(ProxyError::UpstreamConnect(
                        std::io::ErrorKind::ConnectionRefused.into(),
                    ));
                }
                let mut res = Res::new(ProxyBody::full(body));
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok(res)
            })
        })
    }

    fn request(method: Method, body: &'static str) -> Req {
        let mut req = Req::new(if body.is_empty() {
            RequestBody::Empty
        } else {
            RequestBody::Buffered(Some(Bytes::from_static(body.as_bytes())))
        });
        *req.method_mut() = method;
        req
    }

    async fn run(layer: RetryLayer, statuses: &'static [u16], req: Req) -> (u16, u32, Bytes) {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service(backend(statuses, calls.clone()));
        let (status, body) = match svc.oneshot(req).await {
            Ok(res) => (
                res.status().as_u16(),
                res.into_body().collect().await.unwrap().to_bytes(),
            ),
            Err(e) => (e.status().as_u16(), Bytes::new()),
        };
        (status, calls.load(Ordering::SeqCst), body)
    }

    #[tokio::test]
    async fn retries_the_named_failures_with_the_same_body() {
        let layer = RetryLayer::new(
            None,
            Some(&retry(2, &[RetryOn::GatewayError, RetryOn::ConnectFailure])),
        );
        let (status, calls, body) =
            run(layer.clone(), &[503, 0], request(Method::PUT, "payload")).await;
        assert_eq!((status, calls), (200, 3));
        assert_eq!(body, "payload");
        // Attempts are bounded: the last answer goes to the client.
        let (status, calls, _) = run(
            layer.clone(),
            &[503, 503, 502, 200],
            request(Method::GET, ""),
        )
        .await;
        assert_eq!((status, calls), (502, 3));
        // 500 is not a gateway error.
        let (status, calls, _) = run(layer, &[500], request(Method::GET, "")).await;
        assert_eq!((status, calls), (500, 1));
    }

    #[tokio::test]
    async fn non_idempotent_methods_only_when_asked() {
        let layer = RetryLayer::new(None, Some(&retry(2, &[RetryOn::FiveXx])));
        let (status, calls, _) = run(layer, &[503], request(Method::POST, "x")).await;
        assert_eq!((status, calls), (503, 1));
        let mut spec = retry(2, &[RetryOn::FiveXx]);
        spec.non_idempotent = true;
        let (status, calls, body) = run(
            RetryLayer::new(None, Some(&spec)),
            &[503],
            request(Method::POST, "x"),
        )
        .await;
        assert_eq!((status, calls, body.as_ref()), (200, 2, &b"x"[..]));
    }

    #[tokio::test]
    async fn retriable_status_codes() {
        let mut spec = retry(1, &[RetryOn::RetriableStatusCodes]);
        spec.status_codes = vec![409];
        let (status, calls, _) = run(
            RetryLayer::new(None, Some(&spec)),
            &[409],
            request(Method::GET, ""),
        )
        .await;
        assert_eq!((status, calls), (200, 2));
    }

    #[tokio::test]
    async fn the_budget_caps_retries() {
        let mut spec = retry(3, &[RetryOn::FiveXx]);
        // No trickle and no deposits beyond 1% per request: the starting second's worth is 0.
        spec.budget = Some(RetryBudget {
            percent: 1,
            min_per_second: 0,
        });
        let layer = RetryLayer::new(None, Some(&spec));
        let (status, calls, _) = run(layer, &[503, 503], request(Method::GET, "")).await;
        assert_eq!((status, calls), (503, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_answer_504() {
        let timeouts = Timeouts {
            request_ms: Some(1_000),
            backend_request_ms: Some(300),
            ..Timeouts::default()
        };
        let slow = |delay: u64| {
            tower::service_fn(move |_req: Req| -> BoxFuture {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    Ok(Res::new(ProxyBody::empty()))
                })
            })
        };
        let layer = RetryLayer::new(Some(&timeouts), None);
        let err = ServiceBuilder::new()
            .layer(layer.clone())
            .service(slow(500))
            .oneshot(request(Method::GET, ""))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 504);
        let ok = ServiceBuilder::new()
            .layer(layer)
            .service(slow(200))
            .oneshot(request(Method::GET, ""))
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        // Per-try timeouts are retried under gateway-error, within the request timeout.
        let mut spec = retry(5, &[RetryOn::GatewayError]);
        spec.backoff = Some(Backoff {
            base_ms: 1,
            max_ms: 1,
        });
        let layer = RetryLayer::new(Some(&timeouts), Some(&spec));
        let started = tokio::time::Instant::now();
        let err = ServiceBuilder::new()
            .layer(layer)
            .service(slow(400))
            .oneshot(request(Method::GET, ""))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 504);
        assert!(started.elapsed() <= Duration::from_millis(1_010));
    }
}
