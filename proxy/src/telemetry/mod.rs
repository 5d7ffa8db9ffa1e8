//! Traces and access logs.
//!
//! ```text
//! dispatch::handle ── server span, access log entry ──▶ route stack ──▶ Backend::forward
//!        │                                                              └─ client span per try,
//!        ▼                                                                 traceparent injected
//! ResponseBody ── at the end of the body (or when the client goes away): span ends, line written
//! ```
//!
//! Both are optional and set once at start-up ([`init`]). With neither, [`get`] is `None` and a
//! request pays for no span, no clock read beyond the metrics', and no formatting. Spans leave
//! through [`export::Batcher`], access log lines through a writer thread: a slow collector or
//! stdout never holds a request up.

mod access_log;
mod trace;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use portico_api::Route;
use portico_otlp::{Flusher, TraceSettings};

use crate::body::{ProxyBody, StreamError};
use crate::cli::{AccessLogFormat, Cli};
use crate::error::ProxyError;
use crate::head_timeout::HeadTimer;
use crate::metrics::{Metrics, Rejection, RouteLabels, RouteMetrics, StreamGuard};
pub use access_log::{AccessLog, Entry};
pub use trace::{ClientSpan, RequestHead, ServerSpan, Tracing, UpstreamTrace};

/// Traces and access log, when at least one is on.
#[derive(Debug)]
pub struct Telemetry {
    pub tracing: Option<Tracing>,
    pub access_log: Option<AccessLog>,
    flusher: Option<Flusher>,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// The telemetry in force, `None` when traces and access log are both off.
#[inline]
pub fn get() -> Option<&'static Telemetry> {
    TELEMETRY.get()
}

/// What the command line and the `OTEL_*` environment ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `None`: tracing is off.
    pub traces: Option<TraceSettings>,
    /// Continue an incoming trace context instead of starting a new trace.
    pub trust_context: bool,
    pub access_log: AccessLogFormat,
}

/// Why the telemetry settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exporter(String),
    #[error("cannot start the access log writer: {0}")]
    AccessLog(#[source] std::io::Error),
}

impl Settings {
    /// Settings from flags, falling back to the standard `OTEL_*` variables read by `env`.
    pub fn resolve(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut resource = vec![
            ("service.name".to_owned(), "portico-proxy".to_owned()),
            (
                "service.version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
        ];
        if let Some(class) = &cli.class {
            resource.push(("portico.ingress_class".to_owned(), class.clone()));
        }
        Ok(Self {
            traces: TraceSettings::resolve(&cli.otlp, resource, env)?,
            trust_context: cli.trust_trace_context,
            access_log: cli.access_log,
        })
    }
}

/// Sets up traces and the access log. Runs inside the runtime (the exporter's client and the
/// export task live on it). Does nothing when both are off.
pub fn init(settings: &Settings, metrics: &Metrics) -> Result<(), TelemetryError> {
    let access_log = AccessLog::start(settings.access_log, metrics.access_log_dropped.clone())
        .map_err(TelemetryError::AccessLog)?;
    let (tracing, flusher) = match &settings.traces {
        None => (None, None),
        Some(traces) => {
            let (provider, flusher) = portico_otlp::start(traces, metrics.spans.clone())
                .map_err(TelemetryError::Exporter)?;
            (
                Some(Tracing::new(provider, settings.trust_context)),
                Some(flusher),
            )
        }
    };
    if tracing.is_none() && access_log.is_none() {
        return Ok(());
    }
    if let Some(t) = &settings.traces {
        ::tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, ratio = t.ratio, trust = settings.trust_context, "exporting traces over OTLP");
    }
    let _ = TELEMETRY.set(Telemetry {
        tracing,
        access_log,
        flusher,
    });
    Ok(())
}

/// Sends the spans and access log lines still queued, waiting at most `timeout`.
pub async fn flush(timeout: Duration) {
    let Some(telemetry) = get() else { return };
    if let Some(flusher) = &telemetry.flusher {
        flusher.flush(timeout).await;
    }
    if let Some(log) = &telemetry.access_log {
        log.flush(timeout);
    }
}

/// What a route's requests are measured and traced with, built once per snapshot.
#[derive(Debug)]
pub struct RouteTelemetry {
    pub metrics: RouteMetrics,
    pub id: Arc<str>,
    /// The Ingress path (`http.route`); `None` for the default backend.
    pub path: Option<Arc<str>>,
    /// `namespace/name` of the Ingress.
    pub ingress: Arc<str>,
    /// `namespace/name` of the Service.
    pub service: Arc<str>,
    /// The IngressPolicies that apply, `namespace/name`, comma-separated.
    pub policy: Option<Arc<str>>,
}

/// IngressPolicy blocks whose refusals are counted.
const COUNTED_BLOCKS: [&str; 4] = [
    "rateLimit",
    "authentication",
    "ipAccess",
    "clientCertificate",
];

impl RouteTelemetry {
    /// The telemetry of `route` of a snapshot for `class`.
    pub fn new(route: &Route, class: &str, metrics: &Metrics) -> Self {
        // Backend ids are `namespace/service:port`.
        let backend = route.backend.as_str();
        let (namespace, rest) = backend.split_once('/').unwrap_or(("", backend));
        let service = rest.rsplit_once(':').map_or(rest, |(name, _)| name);
        let origins = &route.policy.origins;
        let policies = COUNTED_BLOCKS
            .iter()
            .filter_map(|block| Some((*block, Arc::from(origins.get(*block)?.as_str()))))
            .collect();
        let labels = RouteLabels {
            ingress_class: class.into(),
            namespace: route.source.namespace.as_str().into(),
            ingress: route.source.ingress.as_str().into(),
            service: service.into(),
            policies,
        };
        let mut applied: Vec<&str> = origins.values().map(String::as_str).collect();
        applied.sort_unstable();
        applied.dedup();
        Self {
            metrics: metrics.route(&labels),
            id: route.id.as_str().into(),
            path: route.path.as_ref().map(|p| Arc::from(p.value.as_str())),
            ingress: format!("{}/{}", route.source.namespace, route.source.ingress).into(),
            service: format!("{namespace}/{service}").into(),
            policy: (!applied.is_empty()).then(|| applied.join(",").into()),
        }
    }
}

/// The IngressPolicy block that refused a request, if one did.
pub fn rejection(e: &ProxyError) -> Option<Rejection> {
    match e {
        // The in-flight cap is the rateLimit block's `concurrency`.
        ProxyError::RateLimited(_) | ProxyError::Overloaded => Some(Rejection::RateLimit),
        ProxyError::Forbidden("ipAccess") => Some(Rejection::IpAccess),
        ProxyError::Forbidden("clientCertificate") => Some(Rejection::ClientCertificate),
        // No method accepted the credentials, or the auth service said no. An auth service that
        // does not answer is an outage, not a refusal.
        ProxyError::Auth(
            crate::policy::auth::Rejection::Unauthorized { .. }
            | crate::policy::auth::Rejection::Denied(_),
        ) => Some(Rejection::Authentication),
        _ => None,
    }
}

/// The trace id of a request's `traceparent`, for the access log when tracing is off.
pub fn incoming_trace_id(headers: &http::HeaderMap) -> Option<opentelemetry::trace::TraceId> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    if id.len() != 32 {
        return None;
    }
    let id = opentelemetry::trace::TraceId::from_hex(id).ok()?;
    (id != opentelemetry::trace::TraceId::INVALID).then_some(id)
}

/// A request extension read by the upstream: whether (and how) to report on each try.
#[derive(Debug, Clone)]
pub struct Observe {
    pub trace: Option<UpstreamTrace>,
}

/// A response extension set by the upstream when the request carried [`Observe`].
#[derive(Debug, Clone, Copy)]
pub struct UpstreamInfo {
    pub endpoint: SocketAddr,
    /// From choosing the endpoint to the response head.
    pub elapsed: Duration,
}

/// What is finished when the response body ends.
#[derive(Debug)]
pub struct Finish {
    pub span: Option<ServerSpan>,
    pub entry: Option<Entry>,
    pub start: Instant,
    pub bytes: u64,
}

impl Finish {
    fn done(self, complete: bool) {
        if let Some(span) = self.span {
            span.end();
        }
        if let (Some(entry), Some(log)) = (&self.entry, get().and_then(|t| t.access_log.as_ref())) {
            log.write(entry, self.bytes, self.start.elapsed(), complete);
        }
    }
}

/// The body of every proxied response: the proxy's body, counted as an active stream until it
/// ends, with the request's span and log line finished at its end when telemetry is on, and
/// telling the connection's head timer when the exchange is over (the body dropped, after its
/// last frame or when the client went away).
#[derive(Debug)]
pub struct ResponseBody {
    inner: ProxyBody,
    stream: StreamGuard,
    finish: Option<Box<Finish>>,
    head_timer: Option<Arc<HeadTimer>>,
}

impl ResponseBody {
    pub fn new(
        inner: ProxyBody,
        stream: StreamGuard,
        finish: Option<Box<Finish>>,
        head_timer: Option<Arc<HeadTimer>>,
    ) -> Self {
        Self {
            inner,
            stream,
            finish,
            head_timer,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.get_mut();
        this.stream.polling();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled
            && !this.inner.is_end_stream()
        {
            this.stream.handed();
        }
        if let Some(finish) = &mut this.finish {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    finish.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if this.inner.is_end_stream()
                        && let Some(finish) = this.finish.take()
                    {
                        finish.done(true);
                    }
                }
                Poll::Ready(None) => {
                    if let Some(finish) = this.finish.take() {
                        finish.done(true);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    if let Some(finish) = this.finish.take() {
                        finish.done(false);
                    }
                }
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            // Never polled to its end: a bodiless response, or a client that went away.
            let complete = self.inner.is_end_stream();
            finish.done(complete);
        }
        if let Some(timer) = &self.head_timer {
            timer.exchange_done();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["portico-proxy", "--manifests", "/m"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(&cli(args), |k| env.get(k).cloned())
    }

    #[test]
    fn tracing_is_off_without_an_endpoint() {
        let s = resolve(&["--trace-sampling", "0.5"], &[]).unwrap();
        assert!(s.traces.is_none());
        assert_eq!(s.access_log, AccessLogFormat::Json);
    }

    #[test]
    fn the_flags_reach_the_exporter_settings() {
        let s = resolve(
            &[
                "--otlp-endpoint",
                "http://jaeger:4317",
                "--otlp-protocol",
                "grpc",
                "--trace-sampling",
                "0.25",
                "--trust-trace-context",
                "--class",
                "edge",
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
                ("OTEL_SERVICE_NAME", "gateway"),
            ],
        )
        .unwrap();
        let t = s.traces.unwrap();
        assert_eq!(t.endpoint, "http://jaeger:4317");
        assert_eq!(t.protocol, portico_otlp::Protocol::Grpc);
        assert_eq!((t.ratio, t.parent_based), (0.25, true));
        assert!(s.trust_context);
        let get = |k: &str| {
            t.resource
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("service.name"), Some("gateway"));
        assert_eq!(get("service.version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(get("portico.ingress_class"), Some("edge"));
    }

    #[test]
    fn incoming_trace_ids() {
        let mut headers = http::HeaderMap::new();
        assert!(incoming_trace_id(&headers).is_none());
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            incoming_trace_id(&headers).unwrap().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        headers.insert("traceparent", "00-xyz-00f067aa0ba902b7-01".parse().unwrap());
        assert!(incoming_trace_id(&headers).is_none());
    }

    #[test]
    fn rejections_are_told_apart() {
        assert_eq!(
            rejection(&ProxyError::Forbidden("ipAccess")),
            Some(Rejection::IpAccess)
        );
        assert_eq!(rejection(&ProxyError::Forbidden("cors origin")), None);
        assert_eq!(rejection(&ProxyError::NoRoute), None);
        let unauthorized = crate::policy::auth::Rejection::Unauthorized { challenges: vec![] };
        assert_eq!(
            rejection(&ProxyError::Auth(unauthorized)),
            Some(Rejection::Authentication)
        );
        let unavailable = crate::policy::auth::Rejection::Unavailable("timeout".into());
        assert_eq!(rejection(&ProxyError::Auth(unavailable)), None);
    }
}
