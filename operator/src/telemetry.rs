//! The operator's logs and traces.
//!
//! Both come from `tracing`: log lines are its events, formatted on stderr; traces are its spans
//! (each translation pass, each IngressClass reconcile, each status write, and the steps inside
//! them), turned into OpenTelemetry spans by `tracing-opentelemetry` and exported over OTLP by
//! [`portico_otlp`], off the reconcile loop. The two are filtered apart: `--log-level` quiets the
//! log without losing spans.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use portico_otlp::{Flusher, TraceSettings};
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::cli::{Cli, LogFormat};
use crate::metrics::Metrics;

/// The exporter's settings from the command line and `OTEL_*`; `None` when tracing is off.
pub fn trace_settings(
    cli: &Cli,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<TraceSettings>, String> {
    let resource = vec![
        ("service.name".to_owned(), "portico-operator".to_owned()),
        (
            "service.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        ("k8s.namespace.name".to_owned(), cli.namespace.clone()),
    ];
    TraceSettings::resolve(&cli.otlp, resource, env)
}

/// The layer that turns the operator's spans into OpenTelemetry spans: ours and the
/// controller runtime's (`reconciling object`, the parent of each reconcile), at info.
pub fn span_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("portico-operator"))
        .with_filter(
            Targets::new()
                .with_target("portico_operator", Level::INFO)
                .with_target("kube_runtime::controller", Level::INFO),
        )
}

/// What [`init`] started and shutdown must flush.
#[derive(Debug, Default)]
pub struct Exporting {
    flusher: Option<Flusher>,
    _provider: Option<SdkTracerProvider>,
}

impl Exporting {
    /// Sends the spans still queued, waiting at most `timeout`.
    pub async fn flush(&self, timeout: std::time::Duration) {
        if let Some(flusher) = &self.flusher {
            flusher.flush(timeout).await;
        }
    }
}

/// Installs the log (stderr, `--log-format`, `--log-level`) and, with `traces`, the span
/// export. Runs inside the runtime, where the export task is spawned.
pub fn init(
    cli: &Cli,
    traces: Option<&TraceSettings>,
    metrics: &Metrics,
) -> Result<Exporting, String> {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_new(&cli.log_level)
        .map_err(|e| format!("invalid --log-level `{}`: {e}", cli.log_level))?;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let log = match cli.log_format {
        LogFormat::Text => log.boxed(),
        LogFormat::Json => log.json().boxed(),
    }
    .with_filter(filter);
    let Some(traces) = traces else {
        Registry::default().with(log).init();
        return Ok(Exporting::default());
    };
    let (provider, flusher) = portico_otlp::start(traces, metrics.spans.clone())?;
    Registry::default()
        .with(log)
        .with(span_layer(&provider))
        .init();
    Ok(Exporting {
        flusher: Some(flusher),
        _provider: Some(provider),
    })
}
