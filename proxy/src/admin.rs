//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/config` and `/status` (what the
//! translator reported of each Ingress and IngressPolicy, in standalone mode).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use portico_api::{PathKind, Route, Snapshot};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::body::ProxyBody;
use crate::state::State;

/// Serves the admin endpoints until the process exits.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(state: &State, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => with_type(
            StatusCode::OK,
            state.metrics.encode().into(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/config" => {
            let config = state.config();
            let summary = ConfigSummary::of(config.router().snapshot());
            let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
            with_type(StatusCode::OK, json.into(), "application/json")
        }
        "/status" => {
            let json = serde_json::to_vec_pretty(&state.translation_status()).unwrap_or_default();
            with_type(StatusCode::OK, json.into(), "application/json")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    with_type(
        status,
        Bytes::from_static(body.as_bytes()),
        "text/plain; charset=utf-8",
    )
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// What `/config` shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigSummary<'a> {
    version: u64,
    class: &'a str,
    format: u32,
    routes: Vec<RouteSummary<'a>>,
    certificates: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteSummary<'a> {
    id: &'a str,
    /// `""` for rules without a host; `None` for the default backend.
    host: Option<&'a str>,
    path: Option<&'a str>,
    kind: Option<PathKind>,
    backend: &'a str,
    endpoints: usize,
    policy_origins: Vec<(&'a str, &'a str)>,
}

impl<'a> ConfigSummary<'a> {
    fn of(snapshot: &'a Snapshot) -> Self {
        let route = |host: Option<&'a str>, r: &'a Route| RouteSummary {
            id: &r.id,
            host,
            path: r.path.as_ref().map(|p| p.value.as_str()),
            kind: r.path.as_ref().map(|p| p.kind),
            backend: &r.backend,
            endpoints: snapshot
                .backends
                .get(&r.backend)
                .map_or(0, |b| b.endpoints.len()),
            policy_origins: r
                .policy
                .origins
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        let mut routes: Vec<_> = snapshot
            .hosts
            .iter()
            .flat_map(|h| h.routes.iter().map(|r| route(Some(&h.host), r)))
            .collect();
        if let Some(default) = &snapshot.default_route {
            routes.push(route(None, default));
        }
        Self {
            version: snapshot.version,
            class: &snapshot.class,
            format: snapshot.format,
            routes,
            certificates: snapshot.certificates.keys().map(String::as_str).collect(),
        }
    }
}
