//! Spans: one server span per request, one client span per upstream try, following the HTTP
//! semantic conventions, with W3C trace context in and out.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

use super::RouteTelemetry;
use crate::error::ProxyError;
use crate::metrics::Rejection;

/// The tracer and how incoming trace context is treated.
#[derive(Debug)]
pub struct Tracing {
    tracer: SdkTracer,
    /// Kept so that the tracer stays usable for the life of the process.
    _provider: SdkTracerProvider,
    /// Continue the client's trace (`traceparent`), or always start a new one.
    trust: bool,
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

impl Tracing {
    pub fn new(provider: SdkTracerProvider, trust: bool) -> Self {
        Self {
            tracer: provider.tracer("portico-proxy"),
            _provider: provider,
            trust,
        }
    }

    /// Starts the server span of a request. An untrusted client's `traceparent` and
    /// `tracestate` are removed: the upstream gets this proxy's.
    pub fn server_span(&self, request: &mut RequestHead<'_>) -> ServerSpan {
        let parent = if self.trust {
            TraceContextPropagator::new().extract(&HeaderExtractor(request.headers))
        } else {
            request.headers.remove(&TRACEPARENT);
            request.headers.remove(&TRACESTATE);
            Context::new()
        };
        let mut attributes = Vec::with_capacity(14);
        attributes.push(KeyValue::new(
            "http.request.method",
            method_value(request.method),
        ));
        attributes.push(KeyValue::new("url.path", request.path.to_owned()));
        attributes.push(KeyValue::new(
            "url.scheme",
            if request.tls { "https" } else { "http" },
        ));
        if !request.host.is_empty() {
            let (host, port) = split_host(request.host);
            attributes.push(KeyValue::new("server.address", host.to_owned()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        attributes.push(KeyValue::new("client.address", request.client.to_string()));
        attributes.push(KeyValue::new(
            "network.protocol.version",
            protocol_version(request.version),
        ));
        if let Some(agent) = request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
        }
        let span = self
            .tracer
            .span_builder(method_name(request.method))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        ServerSpan {
            span,
            tracer: self.tracer.clone(),
            passed: Arc::default(),
        }
    }
}

/// What the route's IngressPolicy let through, seen by the innermost service.
#[derive(Debug)]
struct Passed {
    time: SystemTime,
    rate_limit: bool,
    /// The authentication method that accepted the request.
    authentication: Option<&'static str>,
}

/// What the server span is made from, read before the request is handed on.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// The path without the query.
    pub path: &'a str,
    pub host: &'a str,
    pub version: Version,
    pub tls: bool,
    pub client: std::net::IpAddr,
    pub headers: &'a mut HeaderMap,
}

/// The span of one request, from its head to the end of its response body.
#[derive(Debug)]
pub struct ServerSpan {
    span: Span,
    tracer: SdkTracer,
    passed: Arc<OnceLock<Passed>>,
}

impl ServerSpan {
    /// The trace id, for the access log.
    pub fn trace_id(&self) -> Option<TraceId> {
        let cx = self.span.span_context();
        cx.is_valid().then(|| cx.trace_id())
    }

    /// What client spans need: their parent.
    pub fn upstream(&self) -> UpstreamTrace {
        UpstreamTrace {
            tracer: self.tracer.clone(),
            parent: Context::new().with_remote_span_context(self.span.span_context().clone()),
            tries: Arc::new(AtomicU32::new(0)),
            passed: self.passed.clone(),
        }
    }

    /// The route the request matched.
    pub fn route(&mut self, method: &Method, route: &RouteTelemetry) {
        if !self.span.is_recording() {
            return;
        }
        if let Some(path) = &route.path {
            self.span
                .update_name(format!("{} {path}", method_name(method)));
            self.span
                .set_attribute(KeyValue::new("http.route", Value::from(path.to_string())));
        }
        self.span.set_attribute(KeyValue::new(
            "portico.ingress",
            Value::from(route.ingress.to_string()),
        ));
        self.span.set_attribute(KeyValue::new(
            "portico.service",
            Value::from(route.service.to_string()),
        ));
        self.span
            .set_attribute(KeyValue::new("portico.route", route.id.to_string()));
        if let Some(policy) = &route.policy {
            self.span
                .set_attribute(KeyValue::new("portico.policy", policy.to_string()));
        }
    }

    /// The response status, and why the request failed if it did.
    pub fn status(&mut self, status: u16, error: Option<&ProxyError>) {
        if !self.span.is_recording() {
            return;
        }
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(passed) = self.passed.get() {
            if passed.rate_limit {
                self.span.add_event_with_timestamp(
                    "portico.rate_limit",
                    passed.time,
                    vec![KeyValue::new("portico.outcome", "allowed")],
                );
            }
            if let Some(method) = passed.authentication {
                self.span.add_event_with_timestamp(
                    "portico.authentication",
                    passed.time,
                    vec![
                        KeyValue::new("portico.outcome", "accepted"),
                        KeyValue::new("portico.method", method),
                    ],
                );
            }
        }
        if let Some(e) = error {
            if let Some(why) = super::rejection(e) {
                let (name, block) = match why {
                    Rejection::RateLimit => ("portico.rate_limit", "rateLimit"),
                    Rejection::Authentication => ("portico.authentication", "authentication"),
                    Rejection::IpAccess => ("portico.access", "ipAccess"),
                    Rejection::ClientCertificate => ("portico.access", "clientCertificate"),
                };
                let mut attributes = vec![
                    KeyValue::new("portico.outcome", "rejected"),
                    KeyValue::new("portico.block", block),
                ];
                if let ProxyError::RateLimited(limited) = e {
                    attributes.push(KeyValue::new("portico.rule", limited.rule.to_string()));
                }
                self.span.add_event(name, attributes);
            }
            if status >= 500 {
                self.span
                    .set_attribute(KeyValue::new("error.type", e.metric_label()));
            }
        }
        if status >= 500 {
            self.span.set_status(Status::error(""));
        }
    }

    /// Ends the span.
    pub fn end(mut self) {
        self.span.end();
    }
}

/// A request extension: the parent of the client spans of its upstream tries.
#[derive(Debug, Clone)]
pub struct UpstreamTrace {
    tracer: SdkTracer,
    parent: Context,
    /// Tries so far, retries of the retry policy included.
    tries: Arc<AtomicU32>,
    passed: Arc<OnceLock<Passed>>,
}

impl UpstreamTrace {
    /// The request got through the route's policy: its rate limits if `rate_limit`, and the
    /// authentication `method` that accepted it. Recorded once, at the first try, as events of
    /// the server span.
    pub fn policy_passed(&self, rate_limit: bool, authentication: Option<&'static str>) {
        if rate_limit || authentication.is_some() {
            let _ = self.passed.set(Passed {
                time: SystemTime::now(),
                rate_limit,
                authentication,
            });
        }
    }

    /// Starts the client span of one try.
    pub fn client_span(&self, method: &Method) -> ClientSpan {
        let resends = self.tries.fetch_add(1, Ordering::Relaxed);
        let mut attributes = Vec::with_capacity(6);
        attributes.push(KeyValue::new("http.request.method", method_value(method)));
        if resends > 0 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(resends),
            ));
        }
        let span = self
            .tracer
            .span_builder(method_name(method))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.parent);
        ClientSpan {
            span,
            finished: false,
        }
    }
}

/// The span of one upstream try, up to the response head. A try abandoned before it ended (a
/// per-try timeout, a client that went away) ends as an error of type `cancelled`.
#[derive(Debug)]
pub struct ClientSpan {
    span: Span,
    finished: bool,
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        if !self.finished {
            if self.span.is_recording() {
                self.span
                    .set_attribute(KeyValue::new("error.type", "cancelled"));
                self.span.set_status(Status::error("cancelled"));
            }
            self.span.end();
        }
    }
}

impl ClientSpan {
    /// The endpoint this try goes to; its trace context goes into the request headers.
    pub fn endpoint(&mut self, addr: SocketAddr, headers: &mut HeaderMap) {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new(
                "server.address",
                addr.ip().to_canonical().to_string(),
            ));
            self.span
                .set_attribute(KeyValue::new("server.port", i64::from(addr.port())));
        }
        let cx = Context::new().with_remote_span_context(self.span.span_context().clone());
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }

    /// Ends the span with the outcome of the try.
    pub fn finish(mut self, outcome: Result<u16, &ProxyError>) {
        if self.span.is_recording() {
            match outcome {
                Ok(status) => {
                    self.span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status),
                    ));
                    if status >= 500 {
                        self.span.set_status(Status::error(""));
                    }
                }
                Err(e) => {
                    self.span
                        .set_attribute(KeyValue::new("error.type", e.metric_label()));
                    self.span.set_status(Status::error(e.to_string()));
                }
            }
        }
        self.finished = true;
        self.span.end();
    }
}

/// The standard methods as static strings; others are `_OTHER`, as the conventions say, so
/// that clients cannot make up span names.
fn method_value(method: &Method) -> Value {
    Value::from(method_name(method))
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `host[:port]` (or `[v6]:port`) into its parts.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, port)) => (ip, port.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` is left out rather than sent empty.
        if value.is_empty() {
            self.0.remove(key);
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(split_host("a.example"), ("a.example", None));
        assert_eq!(split_host("a.example:8443"), ("a.example", Some(8443)));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("[::1]"), ("::1", None));
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_value(&Method::GET).as_str(), "GET");
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_value(&custom).as_str(), "_OTHER");
    }
}
