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
mod export;
mod trace;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use portico_api::Route;

use crate::body::{ProxyBody, StreamError};
use crate::cli::{AccessLogFormat, Cli, OtlpProtocol};
use crate::error::ProxyError;
use crate::head_timeout::HeadTimer;
use crate::metrics::{Metrics, Rejection, RouteLabels, RouteMetrics, StreamGuard};
pub use access_log::{AccessLog, Entry};
use export::{BatchSettings, Batcher, ExportCounters, Flusher};
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
    pub traces: Option<TraceSettings>,
    pub access_log: AccessLogFormat,
}

/// Where and how traces are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The full URL: for HTTP, with its `/v1/traces` path.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Fraction of new traces recorded.
    pub ratio: f64,
    /// Follow the parent's decision when there is one.
    pub parent_based: bool,
    pub trust_context: bool,
    pub resource: Vec<(String, String)>,
    pub batch: BatchSettings,
}

/// Why the telemetry settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot start the access log writer: {0}")]
    AccessLog(#[source] std::io::Error),
}

impl Settings {
    /// Settings from flags, falling back to the standard `OTEL_*` variables read by `env`.
    pub fn resolve(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let protocol = match cli.otlp_protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .as_deref()
                .map(str::trim)
            {
                None | Some("http/protobuf") => OtlpProtocol::Http,
                Some("grpc") => OtlpProtocol::Grpc,
                Some(other) => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported (use grpc or http/protobuf)"
                    ));
                }
            },
        };
        // A signal-specific URL is used as it is; a base URL gets the signal's path (HTTP).
        let endpoint = match (
            &cli.otlp_endpoint,
            env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ) {
            (Some(base), _) => Some(signal_url(base, protocol)),
            (None, Some(full)) => Some(full),
            (None, None) => env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|b| signal_url(&b, protocol)),
        };
        let traces = match endpoint {
            None => None,
            Some(endpoint) => {
                let uri: http::Uri = endpoint
                    .parse()
                    .map_err(|e| format!("invalid OTLP endpoint `{endpoint}`: {e}"))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(format!(
                        "invalid OTLP endpoint `{endpoint}`: expected http://HOST:PORT or https://HOST:PORT"
                    ));
                }
                let (ratio, parent_based) = sampler(cli.trace_sampling, &env)?;
                Some(TraceSettings {
                    endpoint,
                    protocol,
                    ratio,
                    parent_based,
                    trust_context: cli.trust_trace_context,
                    resource: resource(cli, &env),
                    batch: batch(&env)?,
                })
            }
        };
        Ok(Self {
            traces,
            access_log: cli.access_log,
        })
    }
}

fn signal_url(base: &str, protocol: OtlpProtocol) -> String {
    let base = base.trim();
    if protocol == OtlpProtocol::Grpc {
        return base.to_owned();
    }
    match base.parse::<http::Uri>() {
        Ok(uri) if uri.path() != "/" => base.to_owned(),
        _ => format!("{}/v1/traces", base.trim_end_matches('/')),
    }
}

/// `(ratio, parent_based)` from `--trace-sampling`, else `OTEL_TRACES_SAMPLER[_ARG]`.
fn sampler(
    flag: Option<f64>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(f64, bool), String> {
    if let Some(ratio) = flag {
        return Ok((ratio, true));
    }
    let arg = || -> Result<f64, String> {
        match env("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(a) => {
                crate::cli::parse_ratio(&a).map_err(|e| format!("OTEL_TRACES_SAMPLER_ARG: {e}"))
            }
        }
    };
    let name = env("OTEL_TRACES_SAMPLER");
    Ok(match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => (1.0, true),
        Some("always_on") => (1.0, false),
        Some("always_off") => (0.0, false),
        Some("parentbased_always_off") => (0.0, true),
        Some("traceidratio") => (arg()?, false),
        Some("parentbased_traceidratio") => (arg()?, true),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER `{other}` is not supported (use always_on, always_off, traceidratio or their parentbased_ forms)"
            ));
        }
    })
}

/// Resource attributes, later entries winning: ours, then `OTEL_RESOURCE_ATTRIBUTES`, then
/// `OTEL_SERVICE_NAME`.
fn resource(cli: &Cli, env: &impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut attributes = vec![
        ("service.name".to_owned(), "portico-proxy".to_owned()),
        (
            "service.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ];
    let pod = env("PORTICO_POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        });
    if let Some(pod) = pod {
        attributes.push(("k8s.pod.name".to_owned(), pod.clone()));
        attributes.push(("service.instance.id".to_owned(), pod));
    }
    if let Some(class) = &cli.class {
        attributes.push(("portico.ingress_class".to_owned(), class.clone()));
    }
    if let Some(extra) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for pair in extra.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                let (k, v) = (percent_decode(k.trim()), percent_decode(v.trim()));
                if !k.is_empty() {
                    attributes.push((k, v));
                }
            }
        }
    }
    if let Some(name) = env("OTEL_SERVICE_NAME") {
        attributes.push(("service.name".to_owned(), name));
    }
    attributes
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `OTEL_BSP_*`: queue, batch, delay and timeout of the span export.
fn batch(env: &impl Fn(&str) -> Option<String>) -> Result<BatchSettings, String> {
    let mut settings = BatchSettings::default();
    let number = |name: &str| -> Result<Option<u64>, String> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{name} `{v}` is not a whole number"))
            })
            .transpose()
    };
    if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE")? {
        settings.max_queue = (n as usize).max(1);
    }
    if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
        settings.max_batch = (n as usize).max(1);
    }
    if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY")? {
        settings.delay = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = number("OTEL_BSP_EXPORT_TIMEOUT")? {
        settings.timeout = Duration::from_millis(ms.max(1));
    }
    Ok(settings)
}

/// Sets up traces and the access log. Runs inside the runtime (the exporter's client and the
/// export task live on it). Does nothing when both are off.
pub fn init(settings: &Settings, metrics: &Metrics) -> Result<(), TelemetryError> {
    let access_log = AccessLog::start(settings.access_log, metrics.access_log_dropped.clone())
        .map_err(TelemetryError::AccessLog)?;
    let (tracing, flusher) = match &settings.traces {
        None => (None, None),
        Some(traces) => {
            let (tracing, flusher) = start_tracing(traces, metrics)?;
            (Some(tracing), Some(flusher))
        }
    };
    if tracing.is_none() && access_log.is_none() {
        return Ok(());
    }
    if let Some(t) = &settings.traces {
        ::tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, ratio = t.ratio, trust = t.trust_context, "exporting traces over OTLP");
    }
    let _ = TELEMETRY.set(Telemetry {
        tracing,
        access_log,
        flusher,
    });
    Ok(())
}

fn start_tracing(
    settings: &TraceSettings,
    metrics: &Metrics,
) -> Result<(Tracing, Flusher), TelemetryError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => {
            let builder = builder
                .with_tonic()
                .with_endpoint(&settings.endpoint)
                .with_timeout(settings.batch.timeout);
            if settings.endpoint.starts_with("https:") {
                // The system's CA certificates (SSL_CERT_FILE and SSL_CERT_DIR are honoured).
                let tls = opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                    .with_native_roots();
                builder.with_tls_config(tls).build()
            } else {
                builder.build()
            }
        }
        OtlpProtocol::Http => builder
            .with_http()
            .with_endpoint(&settings.endpoint)
            .with_timeout(settings.batch.timeout)
            .with_http_client(https_client(settings.batch.timeout))
            .build(),
    }
    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = Resource::builder_empty()
        .with_attributes(
            settings
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let mut exporter = exporter;
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
    let (batcher, flusher) = Batcher::start(
        exporter,
        settings.batch.clone(),
        ExportCounters {
            exported: metrics.spans_exported.clone(),
            dropped: metrics.spans_dropped.clone(),
        },
    );
    let ratio = Sampler::TraceIdRatioBased(settings.ratio);
    let sampler = if settings.parent_based {
        Sampler::ParentBased(Box::new(ratio))
    } else {
        ratio
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batcher)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    Ok((Tracing::new(provider, settings.trust_context), flusher))
}

/// The HTTP/protobuf exporter's client: HTTP/1.1, plain or TLS verified against the system's
/// CAs (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
fn https_client(
    timeout: Duration,
) -> opentelemetry_http::hyper::HyperClient<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        ::tracing::warn!(error = %e, "reading system root certificates");
    }
    roots.add_parsable_certificates(native.certs);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    opentelemetry_http::hyper::HyperClient::new(https, timeout, None)
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
    _stream: StreamGuard,
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
            _stream: stream,
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
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
    fn flags_win_over_the_environment() {
        let s = resolve(
            &[
                "--otlp-endpoint",
                "http://jaeger:4317",
                "--otlp-protocol",
                "grpc",
                "--trace-sampling",
                "0.25",
                "--trust-trace-context",
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ],
        )
        .unwrap();
        let t = s.traces.unwrap();
        assert_eq!(t.endpoint, "http://jaeger:4317");
        assert_eq!(t.protocol, OtlpProtocol::Grpc);
        assert_eq!((t.ratio, t.parent_based), (0.25, true));
        assert!(t.trust_context);
    }

    #[test]
    fn the_standard_variables_configure_tracing() {
        let s = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_SERVICE_NAME", "edge"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,team=a%2Cb",
                ),
                ("PORTICO_POD_NAME", "portico-0"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ],
        )
        .unwrap();
        let t = s.traces.unwrap();
        assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(t.protocol, OtlpProtocol::Http);
        assert_eq!((t.ratio, t.parent_based), (0.1, false));
        assert_eq!(t.batch.delay, Duration::from_millis(200));
        let get = |k: &str| {
            t.resource
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("service.name"), Some("edge"));
        assert_eq!(get("k8s.pod.name"), Some("portico-0"));
        assert_eq!(get("team"), Some("a,b"));
        assert_eq!(get("deployment.environment"), Some("prod"));
        assert_eq!(get("service.version"), Some(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn a_traces_endpoint_is_used_as_it_is() {
        let s = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap();
        assert_eq!(s.traces.unwrap().endpoint, "http://c:4318/custom");
    }

    #[test]
    fn bad_settings_are_explained() {
        let e = resolve(&["--otlp-endpoint", "jaeger:4317"], &[]).unwrap_err();
        assert!(e.contains("expected http://HOST:PORT"), "{e}");
        let e = resolve(
            &["--otlp-endpoint", "http://j:4318"],
            &[("OTEL_TRACES_SAMPLER", "sometimes")],
        )
        .unwrap_err();
        assert!(e.contains("OTEL_TRACES_SAMPLER"), "{e}");
        let e = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
        )
        .unwrap_err();
        assert!(e.contains("http/json"), "{e}");
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
