//! `headers`: literal edits of the request on its way up and of the response on its way back,
//! applied in the order remove, set, add. Names and values were validated by the CRD; any
//! that still do not parse are dropped with a warning when the snapshot is applied.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use portico_api::policy::{HeaderOps, Headers};
use tower::{Layer, Service};

use super::{BoxFuture, Req, Res};
use crate::error::{ProxyError, Result};

/// Header edits, parsed once.
#[derive(Debug, Default)]
pub struct Edits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl Edits {
    fn new(ops: &HeaderOps) -> Self {
        let pair = |h: &portico_api::policy::HeaderValue| match (
            HeaderName::try_from(h.name.as_str()),
            HeaderValue::try_from(h.value.as_str()),
        ) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                tracing::warn!(header = %h.name, "header edit skipped: not a valid header");
                None
            }
        };
        Self {
            remove: ops
                .remove
                .iter()
                .filter_map(|n| HeaderName::try_from(n.as_str()).ok())
                .collect(),
            set: ops.set.iter().filter_map(pair).collect(),
            add: ops.add.iter().filter_map(pair).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the edits to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Request and response header edits.
#[derive(Debug, Clone)]
pub struct HeadersLayer {
    request: Arc<Edits>,
    response: Arc<Edits>,
}

impl HeadersLayer {
    pub fn new(spec: &Headers) -> Self {
        Self {
            request: Arc::new(Edits::new(&spec.request)),
            response: Arc::new(Edits::new(&spec.response)),
        }
    }
}

impl<S> Layer<S> for HeadersLayer {
    type Service = HeaderEdits<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HeaderEdits {
            request: self.request.clone(),
            response: self.response.clone(),
            inner,
        }
    }
}

/// The service of [`HeadersLayer`].
#[derive(Debug, Clone)]
pub struct HeaderEdits<S> {
    request: Arc<Edits>,
    response: Arc<Edits>,
    inner: S,
}

impl<S> Service<Req> for HeaderEdits<S>
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

    fn call(&mut self, mut req: Req) -> BoxFuture {
        self.request.apply(req.headers_mut());
        let fut = self.inner.call(req);
        if self.response.is_empty() {
            return Box::pin(fut);
        }
        let response = self.response.clone();
        Box::pin(async move {
            let mut res = fut.await?;
            response.apply(res.headers_mut());
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::body::ProxyBody;
    use crate::upstream::RequestBody;

    fn hv(name: &str, value: &str) -> portico_api::policy::HeaderValue {
        portico_api::policy::HeaderValue {
            name: name.into(),
            value: value.into(),
        }
    }

    #[tokio::test]
    async fn edits_both_ways_in_order() {
        let spec = Headers {
            request: HeaderOps {
                set: vec![hv("x-env", "prod")],
                add: vec![hv("x-tag", "b")],
                remove: vec!["x-secret".into(), "x-env".into()],
            },
            response: HeaderOps {
                set: vec![hv("server", "portico")],
                add: vec![],
                remove: vec!["x-powered-by".into()],
            },
        };
        let svc = ServiceBuilder::new()
            .layer(HeadersLayer::new(&spec))
            .service_fn(|req: Req| async move {
                let h = req.headers();
                assert!(!h.contains_key("x-secret"));
                assert_eq!(h["x-env"], "prod");
                let tags: Vec<_> = h.get_all("x-tag").iter().collect();
                assert_eq!(tags, ["a", "b"]);
                let mut res = Res::new(ProxyBody::empty());
                res.headers_mut()
                    .insert("x-powered-by", "php".parse().unwrap());
                res.headers_mut()
                    .insert("server", "apache".parse().unwrap());
                Ok::<_, ProxyError>(res)
            });
        let mut req = Req::new(RequestBody::Empty);
        req.headers_mut().insert("x-secret", "1".parse().unwrap());
        req.headers_mut().insert("x-env", "dev".parse().unwrap());
        req.headers_mut().insert("x-tag", "a".parse().unwrap());
        let res = svc.oneshot(req).await.unwrap();
        assert!(!res.headers().contains_key("x-powered-by"));
        assert_eq!(res.headers()["server"], "portico");
    }
}
