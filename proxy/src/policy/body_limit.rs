//! `body.maxRequestBytes`: 413 for a request whose `Content-Length` is over the limit (before
//! anything is sent upstream), and for a body without a length (chunked, or HTTP/2 without
//! `content-length`) that crosses the limit while it streams. In the second case the upstream
//! request is aborted, so the backend never sees a complete over-limit body.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::header;
use tower::{Layer, Service};

use super::{BoxFuture, Req, Res};
use crate::error::{ProxyError, Result};
use crate::upstream::{ClientBody, Limited, RequestBody};

/// Caps request bodies at `max` bytes.
#[derive(Debug, Clone)]
pub struct BodyLimitLayer {
    max: u64,
}

impl BodyLimitLayer {
    pub fn new(max: u64) -> Self {
        Self { max }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            max: self.max,
            inner,
        }
    }
}

/// The service of [`BodyLimitLayer`].
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    max: u64,
    inner: S,
}

impl<S> Service<Req> for BodyLimit<S>
where
    S: Service<Req, Response = Res, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Res;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> BoxFuture {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max) {
            return Box::pin(async { Err(ProxyError::PayloadTooLarge) });
        }
        let (parts, body) = req.into_parts();
        let tripped = Arc::new(AtomicBool::new(false));
        let body = match body {
            RequestBody::Client(incoming) if declared.is_none() => {
                let body = ClientBody::new(incoming, None);
                RequestBody::Limited(Box::new(Limited::new(body, self.max, tripped.clone())))
            }
            RequestBody::Owed(body) if declared.is_none() => {
                RequestBody::Limited(Box::new(Limited::new(*body, self.max, tripped.clone())))
            }
            other => other,
        };
        let fut = self.inner.call(Req::from_parts(parts, body));
        Box::pin(async move {
            let result = fut.await;
            if tripped.load(Ordering::Acquire) {
                tracing::debug!("request body crossed the route's limit while streaming");
                return Err(ProxyError::PayloadTooLarge);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::body::ProxyBody;

    #[tokio::test]
    async fn declared_length_over_the_limit_is_refused_before_the_backend() {
        let reached = Arc::new(AtomicBool::new(false));
        let seen = reached.clone();
        let svc = ServiceBuilder::new()
            .layer(BodyLimitLayer::new(10))
            .service_fn(move |_req: Req| {
                seen.store(true, Ordering::Release);
                async { Ok::<_, ProxyError>(Res::new(ProxyBody::empty())) }
            });
        let mut req = Req::new(RequestBody::Empty);
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert_eq!(err.status(), 413);
        assert!(!reached.load(Ordering::Acquire));
        let mut req = Req::new(RequestBody::Empty);
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
        assert!(reached.load(Ordering::Acquire));
    }
}
