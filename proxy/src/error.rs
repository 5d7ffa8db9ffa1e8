//! Every way a request can fail, and the one place that turns a failure into a response.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;
use crate::policy::auth;

/// A request that could not be proxied. Each variant maps to exactly one status in
/// [`ProxyError::status`], and [`ProxyError::into_response`] is the only place that builds
/// an error response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No host and path matched and the snapshot has no default backend.
    #[error("no route")]
    NoRoute,
    /// The route names a backend the snapshot does not hold.
    #[error("backend {0} is not in the snapshot")]
    MissingBackend(String),
    /// The backend has no ready endpoints.
    #[error("backend has no endpoints")]
    NoEndpoints,
    /// Every endpoint of the backend is ejected after refusing connections.
    #[error("every endpoint is ejected")]
    AllEjected,
    /// The route's in-flight cap (IngressPolicy `rateLimit.concurrency`) is reached.
    #[error("overloaded")]
    Overloaded,
    /// A rate limit refused the request.
    #[error("rate limited by {}", .0.rule)]
    RateLimited(Box<RateLimited>),
    /// An IngressPolicy refused the request (ipAccess, clientCertificate).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The request body is larger than the route allows.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The backend did not answer within the route's request timeout.
    #[error("upstream request timeout")]
    UpstreamTimeout,
    /// Nothing moved between the proxy and the backend for the route's idle timeout before
    /// the response head arrived.
    #[error("upstream idle timeout")]
    UpstreamIdle,
    /// The route's policy could not be built; the route fails closed.
    #[error("policy not usable: {0}")]
    PolicyUnusable(std::sync::Arc<str>),
    /// The endpoint could not be reached.
    #[error("upstream connect error: {0}")]
    UpstreamConnect(#[source] std::io::Error),
    /// The endpoint did not accept the connection in time.
    #[error("upstream connect timeout")]
    UpstreamConnectTimeout,
    /// The TLS handshake with the endpoint failed.
    #[error("upstream TLS error: {0}")]
    UpstreamTls(#[source] std::io::Error),
    /// The HTTP exchange with the endpoint failed.
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(#[source] hyper::Error),
    /// The request is malformed (two Host headers, a Host that disagrees with the URI, ...).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request's host is served with another certificate than the one the TLS
    /// connection was made for.
    #[error("misdirected request")]
    Misdirected,
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// Authentication refused the request (401), the auth service said no (its own answer),
    /// or could not be asked (503).
    #[error("authentication: {0}")]
    Auth(#[from] auth::Rejection),
}

impl ProxyError {
    /// The status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MissingBackend(_) | Self::NoEndpoints | Self::AllEjected | Self::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UpstreamConnect(_) | Self::UpstreamTls(_) | Self::UpstreamProtocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamConnectTimeout | Self::UpstreamTimeout | Self::UpstreamIdle => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::PolicyUnusable(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Auth(r) => r.status(),
        }
    }

    /// The short, uniform body sent to the client. Details stay in the logs.
    fn body(&self) -> &'static str {
        match self {
            Self::NoRoute => "no route\n",
            Self::MissingBackend(_) | Self::NoEndpoints => "no endpoints\n",
            Self::AllEjected => "no healthy endpoints\n",
            Self::Overloaded => "overloaded\n",
            Self::UpstreamConnect(_) | Self::UpstreamTls(_) => "upstream connect error\n",
            Self::UpstreamProtocol(_) => "upstream protocol error\n",
            Self::UpstreamConnectTimeout | Self::UpstreamTimeout | Self::UpstreamIdle => {
                "upstream timeout\n"
            }
            Self::RateLimited(_) => "too many requests\n",
            Self::Forbidden(_) => "forbidden\n",
            Self::PayloadTooLarge => "request body too large\n",
            Self::PolicyUnusable(_) => "policy error\n",
            Self::BadRequest(_) => "bad request\n",
            Self::Misdirected => "misdirected request\n",
            Self::Internal(_) => "internal error\n",
            Self::Auth(auth::Rejection::Unavailable(_)) => "authentication unavailable\n",
            Self::Auth(_) => "unauthorized\n",
        }
    }

    /// A label for metrics and logs, one per variant.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::MissingBackend(_) => "missing_backend",
            Self::NoEndpoints => "no_endpoints",
            Self::AllEjected => "all_ejected",
            Self::Overloaded => "overloaded",
            Self::UpstreamConnect(_) => "upstream_connect",
            Self::UpstreamConnectTimeout => "upstream_connect_timeout",
            Self::UpstreamTls(_) => "upstream_tls",
            Self::UpstreamProtocol(_) => "upstream_protocol",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamIdle => "upstream_idle",
            Self::RateLimited(_) => "rate_limited",
            Self::Forbidden(_) => "forbidden",
            Self::PayloadTooLarge => "payload_too_large",
            Self::PolicyUnusable(_) => "policy_unusable",
            Self::BadRequest(_) => "bad_request",
            Self::Misdirected => "misdirected",
            Self::Internal(_) => "internal",
            Self::Auth(r) => r.metric_label(),
        }
    }

    /// The response for this error: the only place errors become responses.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        match status {
            StatusCode::NOT_FOUND
            | StatusCode::BAD_REQUEST
            | StatusCode::MISDIRECTED_REQUEST
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::FORBIDDEN
            | StatusCode::PAYLOAD_TOO_LARGE => {
                tracing::debug!(error = %self, "request refused");
            }
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::warn!(error = %self, kind = self.metric_label(), "request failed");
            }
            _ => tracing::debug!(error = %self, kind = self.metric_label(), "request failed"),
        }
        // The auth service's own answer goes back as it is; challenges join the uniform body.
        let (own_body, extra) = match &self {
            Self::Auth(r) => (r.body(), r.headers()),
            _ => (None, http::HeaderMap::new()),
        };
        let body = own_body.unwrap_or_else(|| Bytes::from_static(self.body().as_bytes()));
        let mut response = Response::new(ProxyBody::full(body));
        *response.status_mut() = status;
        if !extra.contains_key(header::CONTENT_TYPE) {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        response.headers_mut().extend(extra);
        match self {
            Self::RateLimited(limited) => limited.headers(response.headers_mut()),
            // The connection cannot be trusted to be in sync any more (a body cut short).
            Self::PayloadTooLarge => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// What a 429 tells the client: `Retry-After` and the `RateLimit-*` fields of the IETF
/// draft (`RateLimit-Limit`, `-Remaining`, `-Reset`, `-Policy`).
#[derive(Debug, Clone)]
pub struct RateLimited {
    /// The rule's name, for logs.
    pub rule: std::sync::Arc<str>,
    /// Requests per window.
    pub limit: u32,
    /// The window in seconds (at least 1).
    pub window_secs: u64,
    /// When the next request would be allowed.
    pub retry_after: std::time::Duration,
}

impl RateLimited {
    fn headers(&self, headers: &mut http::HeaderMap) {
        // Whole seconds, rounded up: a client that waits that long is let through.
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        let secs = secs.max(1);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("ratelimit-reset", HeaderValue::from(secs));
        if let Ok(policy) =
            HeaderValue::try_from(format!("{};w={}", self.limit, self.window_secs.max(1)))
        {
            headers.insert("ratelimit-policy", policy);
        }
    }
}

/// `Result` with [`ProxyError`].
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::NoEndpoints.status(), 503);
        assert_eq!(ProxyError::AllEjected.status(), 503);
        assert_eq!(ProxyError::UpstreamConnectTimeout.status(), 504);
        assert_eq!(ProxyError::UpstreamIdle.status(), 504);
        assert_eq!(ProxyError::BadRequest("x").status(), 400);
        assert_eq!(ProxyError::Misdirected.status(), 421);
        assert_eq!(ProxyError::Internal("x").status(), 500);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(ProxyError::UpstreamConnect(io).status(), 502);
        let unavailable = auth::Rejection::Unavailable("timeout".into());
        assert_eq!(ProxyError::from(unavailable).status(), 503);
    }

    #[test]
    fn auth_rejections_carry_challenges_or_the_auth_service_answer() {
        let challenges = vec![
            HeaderValue::from_static(r#"Basic realm="x""#),
            HeaderValue::from_static("Bearer"),
        ];
        let r = ProxyError::from(auth::Rejection::Unauthorized { challenges }).into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers().get_all(header::WWW_AUTHENTICATE).iter().count(),
            2
        );
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );

        let mut headers = http::HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/login"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let denial = auth::Denial {
            status: StatusCode::FOUND,
            headers,
            body: Bytes::from_static(b"<a href=/login>"),
        };
        let r = ProxyError::from(auth::Rejection::Denied(Box::new(denial))).into_response();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()[header::LOCATION], "/login");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html");
        assert_eq!(r.headers().get_all(header::CONTENT_TYPE).iter().count(), 1);
    }
}
