//! `cors`: answers preflight requests itself and adds CORS headers to the responses of allowed
//! origins, the proxy's own error responses included (a browser script must be able to read a
//! 401 or a 429).
//!
//! Origins match exactly (scheme, host and port, case-insensitively), by `*`, or by a
//! one-label-or-more wildcard host such as `https://*.example.com`. A preflight from an origin
//! that is not allowed gets 403 and never reaches the backend. With `allowCredentials`, `*`
//! is answered with the request's origin, as browsers require.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use portico_api::policy::Cors;
use tower::{Layer, Service};

use super::{BoxFuture, Req, Res};
use crate::body::ProxyBody;
use crate::error::{ProxyError, Result};

#[derive(Debug)]
struct Rules {
    origins: Vec<String>,
    any_origin: bool,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

impl Rules {
    fn allows(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|allowed| {
            if let Some((scheme, rest)) = allowed.split_once("://*.") {
                // `https://*.example.com` allows `https://a.example.com`, not the apex.
                origin
                    .strip_prefix(scheme)
                    .and_then(|o| o.strip_prefix("://"))
                    .and_then(|host| host.strip_suffix(rest))
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            } else {
                *allowed == origin
            }
        })
    }

    /// `Access-Control-Allow-Origin` (and `-Credentials`, `Vary`) for an allowed origin.
    fn origin_headers(&self, origin: &HeaderValue, headers: &mut http::HeaderMap) {
        let echo = !self.any_origin || self.credentials;
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            if echo {
                origin.clone()
            } else {
                HeaderValue::from_static("*")
            },
        );
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if echo {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

fn join(items: &[String]) -> Option<HeaderValue> {
    (!items.is_empty())
        .then(|| HeaderValue::try_from(items.join(", ")).ok())
        .flatten()
}

/// Preflights and CORS response headers.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    rules: Arc<Rules>,
}

impl CorsLayer {
    pub fn new(spec: &Cors) -> Self {
        Self {
            rules: Arc::new(Rules {
                origins: spec
                    .allow_origins
                    .iter()
                    .filter(|o| *o != "*")
                    .map(|o| o.to_ascii_lowercase())
                    .collect(),
                any_origin: spec.allow_origins.iter().any(|o| o == "*"),
                methods: join(&spec.allow_methods),
                headers: join(&spec.allow_headers),
                expose: join(&spec.expose_headers),
                max_age: spec.max_age_seconds.map(HeaderValue::from),
                credentials: spec.allow_credentials,
            }),
        }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = CorsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CorsService {
            rules: self.rules.clone(),
            inner,
        }
    }
}

/// The service of [`CorsLayer`].
#[derive(Debug, Clone)]
pub struct CorsService<S> {
    rules: Arc<Rules>,
    inner: S,
}

impl<S> Service<Req> for CorsService<S>
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
        let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
            return Box::pin(self.inner.call(req));
        };
        let allowed = origin.to_str().is_ok_and(|o| self.rules.allows(o));
        let preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            if !allowed {
                return Box::pin(async { Err(ProxyError::Forbidden("cors origin")) });
            }
            let rules = &self.rules;
            let mut res = Res::new(ProxyBody::empty());
            *res.status_mut() = StatusCode::NO_CONTENT;
            let h = res.headers_mut();
            rules.origin_headers(&origin, h);
            let methods = rules.methods.clone().or_else(|| {
                req.headers()
                    .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                    .cloned()
            });
            put(h, header::ACCESS_CONTROL_ALLOW_METHODS, methods);
            put(
                h,
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                rules.headers.clone(),
            );
            put(h, header::ACCESS_CONTROL_MAX_AGE, rules.max_age.clone());
            return Box::pin(async { Ok(res) });
        }
        let fut = self.inner.call(req);
        if !allowed {
            return Box::pin(fut);
        }
        let rules = self.rules.clone();
        Box::pin(async move {
            let mut res = fut.await.unwrap_or_else(ProxyError::into_response);
            let h = res.headers_mut();
            rules.origin_headers(&origin, h);
            put(
                h,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                rules.expose.clone(),
            );
            Ok(res)
        })
    }
}

fn put(headers: &mut http::HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    if let Some(value) = value {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::upstream::RequestBody;

    fn cors(origins: &[&str], credentials: bool) -> CorsLayer {
        CorsLayer::new(&Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["x-token".into()],
            expose_headers: vec!["x-trace".into()],
            max_age_seconds: Some(600),
            allow_credentials: credentials,
        })
    }

    async fn call(
        layer: CorsLayer,
        method: Method,
        origin: Option<&str>,
        preflight: bool,
        upstream: u16,
    ) -> Res {
        let mut req = Req::new(RequestBody::Empty);
        *req.method_mut() = method;
        if let Some(o) = origin {
            req.headers_mut().insert(header::ORIGIN, o.parse().unwrap());
        }
        if preflight {
            req.headers_mut().insert(
                header::ACCESS_CONTROL_REQUEST_METHOD,
                "PUT".parse().unwrap(),
            );
        }
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |_req: Req| async move {
                if upstream == 429 {
                    return Err(ProxyError::Forbidden("x"));
                }
                let mut r = Res::new(ProxyBody::empty());
                *r.status_mut() = StatusCode::from_u16(upstream).unwrap();
                Ok(r)
            });
        svc.oneshot(req)
            .await
            .unwrap_or_else(ProxyError::into_response)
    }

    #[tokio::test]
    async fn preflight_is_answered_by_the_proxy() {
        let layer = cors(&["https://app.example.com"], false);
        let res = call(
            layer.clone(),
            Method::OPTIONS,
            Some("https://app.example.com"),
            true,
            500,
        )
        .await;
        assert_eq!(res.status(), 204);
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-methods"], "GET, PUT");
        assert_eq!(h["access-control-allow-headers"], "x-token");
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "Origin");
        let res = call(
            layer,
            Method::OPTIONS,
            Some("https://evil.example.net"),
            true,
            200,
        )
        .await;
        assert_eq!(res.status(), 403);
        assert!(!res.headers().contains_key("access-control-allow-origin"));
    }

    #[tokio::test]
    async fn actual_requests_get_headers_even_on_errors() {
        let layer = cors(&["https://*.example.com"], true);
        let res = call(
            layer.clone(),
            Method::GET,
            Some("https://a.b.example.com"),
            false,
            200,
        )
        .await;
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://a.b.example.com"
        );
        assert_eq!(res.headers()["access-control-allow-credentials"], "true");
        assert_eq!(res.headers()["access-control-expose-headers"], "x-trace");
        let res = call(
            layer.clone(),
            Method::GET,
            Some("https://a.example.com"),
            false,
            429,
        )
        .await;
        assert_eq!(res.status(), 403);
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://a.example.com"
        );
        // The apex and other schemes are not covered by the wildcard.
        for origin in [
            "https://example.com",
            "http://a.example.com",
            "https://a.example.com.evil",
        ] {
            let res = call(layer.clone(), Method::GET, Some(origin), false, 200).await;
            assert!(
                !res.headers().contains_key("access-control-allow-origin"),
                "{origin}"
            );
        }
        // No Origin: not a CORS request; an OPTIONS without the request-method header goes through.
        let res = call(layer.clone(), Method::GET, None, false, 200).await;
        assert!(!res.headers().contains_key("access-control-allow-origin"));
        let res = call(
            layer,
            Method::OPTIONS,
            Some("https://a.example.com"),
            false,
            200,
        )
        .await;
        assert_eq!(res.status(), 200);
    }

    #[tokio::test]
    async fn star_without_credentials_answers_star() {
        let res = call(
            cors(&["*"], false),
            Method::GET,
            Some("https://x.test"),
            false,
            200,
        )
        .await;
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        assert!(!res.headers().contains_key("vary"));
        let res = call(
            cors(&["*"], true),
            Method::GET,
            Some("https://x.test"),
            false,
            200,
        )
        .await;
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://x.test"
        );
    }
}
