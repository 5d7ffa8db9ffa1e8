//! An OTLP trace receiver on 127.0.0.1 for tests: `POST /v1/traces` (HTTP/protobuf) and the gRPC
//! `TraceService/Export` method (h2c, or h2 behind TLS), decoding each
//! `ExportTraceServiceRequest` and keeping its spans with the resource of their batch.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::net::TcpListener;

/// The gRPC method collectors implement.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A span as received, with the resource of its batch.
#[derive(Debug, Clone)]
pub struct Received {
    pub span: Span,
    pub resource: HashMap<String, String>,
    /// `grpc` or `http`.
    pub transport: &'static str,
}

impl Received {
    /// A span attribute, as a string.
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    pub fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    /// Empty for a root span.
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute value as a string.
pub fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// The attribute `key` among `attributes` (of a span or of an event), as a string.
pub fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| value(&kv.value))
}

/// The receiver; it stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A plain receiver (HTTP/1.1 and h2c) on an ephemeral port.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A receiver behind TLS (ALPN h2 and http/1.1), as collectors outside the cluster are.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("a PEM certificate");
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .expect("a PEM key")
            .expect("a PEM key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a usable certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| receive(store.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, spans, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (15 s at most, then panics with what did arrive) until `done` holds for the spans
    /// received, and returns them.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in time; received: {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.span.name, s.kind(), s.trace_id()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

fn refuse(why: &str) -> Reply {
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .body(Full::new(Bytes::from(why.to_owned())).boxed())
        .expect("a valid response")
}

async fn receive(
    store: Arc<Mutex<Vec<Received>>>,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = req.uri().path().to_owned();
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(refuse("the body did not arrive"));
    };
    let (message, transport) = if grpc {
        if path != GRPC_EXPORT {
            return Ok(refuse("not the TraceService/Export method"));
        }
        // One length-prefixed message: compression flag (0: none), 4-byte length, the message.
        let mut frame = body;
        if frame.len() < 5 || frame.get_u8() != 0 {
            return Ok(refuse("expected one uncompressed gRPC message"));
        }
        let len = frame.get_u32() as usize;
        if frame.len() < len {
            return Ok(refuse("truncated gRPC message"));
        }
        (frame.slice(..len), "grpc")
    } else {
        if path != "/v1/traces" {
            return Ok(refuse("not /v1/traces"));
        }
        (body, "http")
    };
    let Ok(request) = ExportTraceServiceRequest::decode(message) else {
        return Ok(refuse("not an ExportTraceServiceRequest"));
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource: HashMap<String, String> = resource_spans
            .resource
            .map(|r| {
                r.attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), value(&kv.value)))
                    .collect()
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    span,
                    resource: resource.clone(),
                    transport,
                });
            }
        }
    }
    store
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(received);
    // An empty ExportTraceServiceResponse.
    let response = if grpc {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(&[
                0, 0, 0, 0, 0,
            ]))),
            Ok(hyper::body::Frame::trailers(trailers)),
        ];
        Response::builder()
            .header("content-type", "application/grpc")
            .body(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed())
    } else {
        Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::new()).boxed())
    };
    Ok(response.expect("a valid response"))
}
