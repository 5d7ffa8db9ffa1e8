//! OTLP trace export, shared by the proxy and the operator.
//!
//! [`TraceSettings::resolve`] reads flags and the standard `OTEL_*` variables; [`start`] builds
//! the exporter (gRPC via tonic, or HTTP/protobuf via hyper, either plain or TLS against the
//! system's CAs) behind a [`Batcher`] that keeps export off the request path, and returns the
//! tracer provider to draw tracers from. With the `receiver` feature, [`receiver`] is an OTLP
//! receiver on loopback for the tests of both programs.

mod export;
#[cfg(feature = "receiver")]
pub mod receiver;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

pub use export::{BatchSettings, Batcher, ExportCounters, Flusher};
pub use settings::{Flags, Protocol, TraceSettings, parse_ratio};

/// Starts exporting: the provider to draw tracers from, and the handle that flushes what is
/// queued (at shutdown). Runs inside a Tokio runtime, where the export task is spawned.
pub fn start(
    settings: &TraceSettings,
    counters: ExportCounters,
) -> Result<(SdkTracerProvider, Flusher), String> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let mut exporter = match settings.protocol {
        Protocol::Grpc => {
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
        Protocol::Http => builder
            .with_http()
            .with_endpoint(&settings.endpoint)
            .with_timeout(settings.batch.timeout)
            .with_http_client(https_client(settings.batch.timeout))
            .build(),
    }
    .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let resource = Resource::builder_empty()
        .with_attributes(
            settings
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
    let (batcher, flusher) = Batcher::start(exporter, settings.batch.clone(), counters);
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
    Ok((provider, flusher))
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
        tracing::warn!(error = %e, "reading system root certificates");
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
