//! The proxy's side: follow one class's snapshots, reassembling deltas, acknowledging each
//! applied version, and reconnecting for as long as the process runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_api::Snapshot;
use rustls::pki_types::ServerName;

use crate::pki::{PkiError, client_config};
use crate::protocol::{
    ACKS_PATH, Ack, DecodeError, LineDecoder, Message, SNAPSHOTS_PATH, apply_backends,
};

/// Where to follow snapshots from, and how patiently.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://HOST[:PORT]` of the operator.
    pub url: String,
    /// The IngressClass to follow.
    pub class: String,
    /// This proxy's id in acks (its pod name).
    pub proxy_id: String,
    /// PEM file of the CA that signed the operator's certificate; read on every connect.
    pub ca_file: PathBuf,
    /// File holding the bearer token; read on every connect (projected tokens rotate).
    pub token_file: PathBuf,
    /// First reconnect delay; doubled after each failed attempt up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A stream silent for this long (the server pings more often) is given up as dead.
    pub idle_timeout: Duration,
    /// Time allowed for TCP, TLS and HTTP/2 set-up.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// A configuration with the default timings.
    pub fn new(
        url: impl Into<String>,
        class: impl Into<String>,
        proxy_id: impl Into<String>,
        ca_file: impl Into<PathBuf>,
        token_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            url: url.into(),
            class: class.into(),
            proxy_id: proxy_id.into(),
            ca_file: ca_file.into(),
            token_file: token_file.into(),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(35),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl ClientConfig {
    /// Checks what cannot get better by retrying: the URL's shape.
    pub fn validate(&self) -> Result<(), ClientError> {
        target(&self.url).map(drop)
    }
}

/// Why a session with the operator ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid control-plane URL {0}: expected https://HOST[:PORT]")]
    Url(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Ca {
        path: String,
        #[source]
        source: PkiError,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out connecting to {0}")]
    ConnectTimeout(String),
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("the operator answered {status}: {text}")]
    Status { status: StatusCode, text: String },
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("no frame for {0:?}; the connection is presumed dead")]
    Idle(Duration),
    #[error("a delta for version {base} of epoch {epoch} does not apply to what is held")]
    OutOfOrder { epoch: String, base: u64 },
}

/// What the proxy holds: the last snapshot and the epoch its version belongs to.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub epoch: Option<String>,
    pub snapshot: Option<Snapshot>,
}

impl Held {
    /// Takes in `message`; true when it brought a new version (now in `self.snapshot`).
    pub fn apply(&mut self, message: Message) -> Result<bool, ClientError> {
        match message {
            Message::Ping => Ok(false),
            Message::Full {
                epoch,
                version,
                mut snapshot,
            } => {
                snapshot.version = version;
                self.epoch = Some(epoch);
                self.snapshot = Some(*snapshot);
                Ok(true)
            }
            Message::Backends {
                epoch,
                version,
                base,
                changed,
                removed,
            } => {
                let held = self
                    .snapshot
                    .as_mut()
                    .filter(|s| s.version == base && self.epoch.as_deref() == Some(&epoch));
                let Some(snapshot) = held else {
                    // Ask for a full snapshot next time.
                    self.epoch = None;
                    return Err(ClientError::OutOfOrder { epoch, base });
                };
                apply_backends(snapshot, version, changed, removed);
                Ok(true)
            }
        }
    }

    fn version(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.version)
    }
}

/// An open snapshot stream.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    body: Incoming,
    decoder: LineDecoder,
    base: String,
    class: String,
    proxy_id: String,
    token: String,
    idle_timeout: Duration,
}

struct Target {
    base: String,
    addr: String,
    server_name: ServerName<'static>,
}

fn target(url: &str) -> Result<Target, ClientError> {
    let bad = || ClientError::Url(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") || uri.path().len() > 1 {
        return Err(bad());
    }
    let host = uri.host().ok_or_else(bad)?;
    let port = uri.port_u16().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(bare.to_owned()).map_err(|_| bad())?;
    Ok(Target {
        base: format!("https://{host}:{port}"),
        addr: format!("{host}:{port}"),
        server_name,
    })
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::File {
        path: path.display().to_string(),
        source,
    })
}

/// `id` with anything but letters, digits, `-`, `.` and `_` replaced, to travel in a query.
fn query_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Opens the stream of `config.class`, telling the server what `held` holds.
pub async fn connect(config: &ClientConfig, held: &Held) -> Result<Connection, ClientError> {
    let target = target(&config.url)?;
    let ca = read_file(&config.ca_file)?;
    let tls = client_config(&ca).map_err(|source| ClientError::Ca {
        path: config.ca_file.display().to_string(),
        source,
    })?;
    let token = String::from_utf8_lossy(&read_file(&config.token_file)?)
        .trim()
        .to_owned();

    let setup = async {
        let tcp = tokio::net::TcpStream::connect(&target.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: target.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
            .connect(target.server_name.clone(), tcp)
            .await
            .map_err(|source| ClientError::Connect {
                addr: target.addr.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control-plane connection ended");
            }
        });
        Ok::<_, ClientError>(sender)
    };
    let mut sender = tokio::time::timeout(config.connect_timeout, setup)
        .await
        .map_err(|_| ClientError::ConnectTimeout(target.addr.clone()))??;

    let mut uri = format!(
        "{}{SNAPSHOTS_PATH}{}?proxy={}",
        target.base,
        config.class,
        query_safe(&config.proxy_id)
    );
    if let (Some(epoch), Some(version)) = (&held.epoch, held.version()) {
        uri.push_str(&format!("&epoch={epoch}&version={version}"));
    }
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .map_err(|_| ClientError::Url(config.url.clone()))?;
    let response = tokio::time::timeout(config.connect_timeout, sender.send_request(request))
        .await
        .map_err(|_| ClientError::ConnectTimeout(target.addr.clone()))??;
    let status = response.status();
    if status != StatusCode::OK {
        let text = tokio::time::timeout(Duration::from_secs(1), response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Err(ClientError::Status { status, text });
    }
    Ok(Connection {
        sender,
        body: response.into_body(),
        decoder: LineDecoder::default(),
        base: target.base,
        class: config.class.clone(),
        proxy_id: config.proxy_id.clone(),
        token,
        idle_timeout: config.idle_timeout,
    })
}

impl Connection {
    /// The next message and its size on the wire; `None` when the server ended the stream.
    pub async fn next_message(&mut self) -> Result<Option<(Message, usize)>, ClientError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(Some(message));
            }
            let frame = tokio::time::timeout(self.idle_timeout, self.body.frame())
                .await
                .map_err(|_| ClientError::Idle(self.idle_timeout))?;
            match frame {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }

    /// Reports `version` of `epoch` applied. Runs on its own task; failures are only logged
    /// (the next stream's resume parameters carry the same news).
    pub fn ack(&self, epoch: &str, version: u64) {
        let ack = Ack {
            proxy: query_safe(&self.proxy_id),
            epoch: epoch.to_owned(),
            version,
        };
        let body = serde_json::to_vec(&ack).unwrap_or_default();
        let request = Request::post(format!("{}{ACKS_PATH}{}", self.base, self.class))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else { return };
        let mut sender = self.sender.clone();
        tokio::spawn(async move {
            let sent = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request));
            match sent.await {
                Ok(Ok(r)) if r.status() == StatusCode::NO_CONTENT => {}
                Ok(Ok(r)) => tracing::debug!(status = %r.status(), version, "ack refused"),
                Ok(Err(e)) => tracing::debug!(error = %e, version, "ack failed"),
                Err(_) => tracing::debug!(version, "ack timed out"),
            }
        });
    }
}

/// A delay in `[d/2, d]`: spread reconnects of many proxies after an operator restart.
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Follows `config.class` for ever: each new version is handed to `on_snapshot` and, when it
/// returns `Ok`, acknowledged. Errors and disconnects are logged and retried with capped
/// exponential backoff and jitter; `on_snapshot` is simply not called meanwhile, so the caller
/// keeps what it has.
pub async fn run<F>(config: ClientConfig, mut on_snapshot: F)
where
    F: FnMut(Snapshot) -> Result<(), String>,
{
    let mut held = Held::default();
    let mut backoff = config.backoff_initial;
    loop {
        let mut progressed = false;
        let result = session(&config, &mut held, &mut on_snapshot, &mut progressed).await;
        match result {
            Ok(()) => tracing::info!("the operator ended the snapshot stream; reconnecting"),
            Err(e) => {
                tracing::warn!(url = %config.url, class = %config.class, error = %e, "control plane unavailable; serving the last snapshot")
            }
        }
        if progressed {
            backoff = config.backoff_initial;
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

async fn session<F>(
    config: &ClientConfig,
    held: &mut Held,
    on_snapshot: &mut F,
    progressed: &mut bool,
) -> Result<(), ClientError>
where
    F: FnMut(Snapshot) -> Result<(), String>,
{
    let mut conn = connect(config, held).await?;
    tracing::info!(url = %config.url, class = %config.class, resume = ?held.version(), "following the control plane");
    while let Some((message, bytes)) = conn.next_message().await? {
        *progressed = true;
        let kind = match &message {
            Message::Full { .. } => "full",
            Message::Backends { .. } => "backends",
            Message::Ping => "ping",
        };
        tracing::debug!(kind, bytes, "frame received");
        if !held.apply(message)? {
            continue;
        }
        let (Some(snapshot), Some(epoch)) = (&held.snapshot, &held.epoch) else {
            continue;
        };
        let version = snapshot.version;
        match on_snapshot(snapshot.clone()) {
            Ok(()) => conn.ack(epoch, version),
            Err(e) => tracing::error!(version, error = %e, "snapshot not applied"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = target("https://127.0.0.1:8443").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8443");
        let t = target("https://portico-operator.portico-system.svc").unwrap();
        assert_eq!(t.addr, "portico-operator.portico-system.svc:443");
        assert!(target("http://x:1").is_err());
        assert!(target("https://x:1/path").is_err());
        assert!(target("not a url").is_err());
        assert_eq!(query_safe("web-7f9c.x_1"), "web-7f9c.x_1");
        assert_eq!(query_safe("a&b=c d"), "a_b_c_d");
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        }
    }
}
