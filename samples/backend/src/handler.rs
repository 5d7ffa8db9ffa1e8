//! What the sample backend answers, by path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

/// Body of `/bench`: fixed and small, so a load test measures the proxy, not the backend.
pub const BENCH_BODY: &[u8] = b"hello world\n";

/// Longest `/delay/MS` honoured, so a typo cannot park a connection for hours.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Largest request body read for the echo; larger bodies are reported as not read.
const MAX_ECHO_BODY: usize = 1 << 20;

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/bench`: the fixed body.
    Bench,
    /// `/ws`: a WebSocket echo.
    WebSocket,
    /// `/status/NNN`: that status, with the echo as body.
    Status(StatusCode),
    /// `/delay/MS`: the echo after a sleep.
    Delay(Duration),
    /// Anything else (and malformed `/status`/`/delay`): the echo.
    Echo,
}

/// Classifies a request path; pure, so it is tested without sockets.
pub fn classify(path: &str) -> Endpoint {
    if path == "/bench" {
        return Endpoint::Bench;
    }
    if path == "/ws" {
        return Endpoint::WebSocket;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            // 1xx are protocol signals, not final answers; a 101 here would confuse the client.
            Some(status) if status.as_u16() >= 200 => Endpoint::Status(status),
            _ => Endpoint::Echo,
        };
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        return match ms.parse::<u64>() {
            Ok(ms) => Endpoint::Delay(Duration::from_millis(ms).min(MAX_DELAY)),
            Err(_) => Endpoint::Echo,
        };
    }
    Endpoint::Echo
}

/// The service: one call per request.
pub async fn handle(
    name: Arc<str>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let endpoint = classify(req.uri().path());
    let response = match endpoint {
        Endpoint::Bench => Response::builder()
            .header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))
            .body(Full::new(Bytes::from_static(BENCH_BODY))),
        Endpoint::WebSocket => return Ok(crate::ws::upgrade(req)),
        Endpoint::Status(status) => {
            let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                Bytes::new()
            } else {
                echo(&name, remote, req).await
            };
            json_response(status, body)
        }
        Endpoint::Delay(delay) => {
            tokio::time::sleep(delay).await;
            json_response(StatusCode::OK, echo(&name, remote, req).await)
        }
        Endpoint::Echo => json_response(StatusCode::OK, echo(&name, remote, req).await),
    };
    Ok(response.unwrap_or_else(|_| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"bad response\n")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    }))
}

fn json_response(status: StatusCode, body: Bytes) -> http::Result<Response<Full<Bytes>>> {
    let mut builder = Response::builder().status(status);
    if !body.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    builder.body(Full::new(body))
}

/// The JSON echo of a request, body drained (up to [`MAX_ECHO_BODY`]) and counted.
async fn echo(name: &str, remote: SocketAddr, req: Request<Incoming>) -> Bytes {
    let (parts, body) = req.into_parts();
    let body_bytes = match Limited::new(body, MAX_ECHO_BODY).collect().await {
        Ok(collected) => Value::from(collected.to_bytes().len()),
        Err(_) => Value::Null,
    };
    let value = echo_value(
        name,
        remote,
        &parts.method,
        &parts.uri,
        parts.version,
        &parts.headers,
        body_bytes,
    );
    let mut out = serde_json::to_vec_pretty(&value).unwrap_or_default();
    out.push(b'\n');
    out.into()
}

/// Builds the echo document; the `host` comes from the Host header (HTTP/1.1) or the
/// `:authority` (HTTP/2).
fn echo_value(
    name: &str,
    remote: SocketAddr,
    method: &Method,
    uri: &http::Uri,
    version: http::Version,
    headers: &HeaderMap,
    body_bytes: Value,
) -> Value {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()));
    let mut hdrs = Map::new();
    for key in headers.keys() {
        let joined = headers
            .get_all(key)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        hdrs.insert(key.as_str().to_owned(), Value::String(joined));
    }
    json!({
        "backend": name,
        "method": method.as_str(),
        "version": format!("{version:?}"),
        "host": host,
        "path": uri.path(),
        "query": uri.query(),
        "remote": remote.to_string(),
        "headers": hdrs,
        "body_bytes": body_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify("/bench"), Endpoint::Bench);
        assert_eq!(classify("/ws"), Endpoint::WebSocket);
        assert_eq!(
            classify("/status/503"),
            Endpoint::Status(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            classify("/delay/250"),
            Endpoint::Delay(Duration::from_millis(250))
        );
        assert_eq!(classify("/delay/99999999"), Endpoint::Delay(MAX_DELAY));
        // Malformed or non-final statuses fall back to the echo instead of failing.
        assert_eq!(classify("/status/101"), Endpoint::Echo);
        assert_eq!(classify("/status/abc"), Endpoint::Echo);
        assert_eq!(classify("/bench/more"), Endpoint::Echo);
        assert_eq!(classify("/"), Endpoint::Echo);
    }

    #[test]
    fn echo_reports_host_and_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("blue.localhost"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
        let uri: http::Uri = "/a/b?x=1".parse().unwrap();
        let v = echo_value(
            "blue",
            "127.0.0.1:5000".parse().unwrap(),
            &Method::GET,
            &uri,
            http::Version::HTTP_11,
            &headers,
            Value::from(0),
        );
        assert_eq!(v["backend"], "blue");
        assert_eq!(v["host"], "blue.localhost");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["query"], "x=1");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["headers"]["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    }

    #[test]
    fn echo_takes_host_from_authority_on_http2() {
        let uri: http::Uri = "http://green.apps.localhost/x".parse().unwrap();
        let v = echo_value(
            "green",
            "127.0.0.1:5000".parse().unwrap(),
            &Method::GET,
            &uri,
            http::Version::HTTP_2,
            &HeaderMap::new(),
            Value::from(0),
        );
        assert_eq!(v["host"], "green.apps.localhost");
        assert_eq!(v["query"], Value::Null);
    }
}
