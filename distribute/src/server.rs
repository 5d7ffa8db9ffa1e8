//! The operator's side: a [`Hub`] of published snapshots and the HTTP/2 server streaming them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use portico_api::Snapshot;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::body::ServerBody;
use crate::protocol::{
    ACKS_PATH, Ack, CONTENT_TYPE, Message, SNAPSHOTS_PATH, encode_full, same_routing,
};

/// Versions kept per class for resuming proxies with a delta.
const HISTORY: usize = 16;

// ---------------------------------------------------------------- hub

/// What each class's proxies report, by class and proxy id.
pub type Acks = BTreeMap<String, BTreeMap<String, ProxyAck>>;

/// One proxy's state as the hub sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyAck {
    /// Last version of the current epoch it applied.
    pub version: Option<u64>,
    /// Whether a snapshot stream of it is open.
    pub connected: bool,
}

/// How far a class's current version has reached its proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// The version being served.
    pub version: u64,
    /// Proxies with an open stream.
    pub connected: usize,
    /// Connected proxies that applied `version` (or a later one).
    pub applied: usize,
}

impl Rollout {
    /// Every connected proxy applied the current version, and there is at least one.
    pub fn complete(&self) -> bool {
        self.connected > 0 && self.applied == self.connected
    }
}

/// The snapshots being served, by class. Cheap to clone; every clone is the same hub.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// Frames and bytes sent on snapshot streams since the hub was made (pings not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub full_frames: u64,
    pub full_bytes: u64,
    pub delta_frames: u64,
    pub delta_bytes: u64,
}

#[derive(Debug, Default)]
struct SentCounters {
    full_frames: AtomicU64,
    full_bytes: AtomicU64,
    delta_frames: AtomicU64,
    delta_bytes: AtomicU64,
}

impl SentCounters {
    fn count(&self, full: bool, bytes: usize) {
        let (frames, total) = if full {
            (&self.full_frames, &self.full_bytes)
        } else {
            (&self.delta_frames, &self.delta_bytes)
        };
        frames.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct HubInner {
    epoch: String,
    sent: SentCounters,
    classes: Mutex<HashMap<String, Slot>>,
    acks: watch::Sender<Acks>,
    /// Open streams per (class, proxy).
    streams: Mutex<HashMap<(String, String), usize>>,
}

#[derive(Debug)]
struct Slot {
    view: watch::Sender<Arc<View>>,
    last_version: u64,
}

/// The recent versions of one class, the latest last; empty when not (or no longer) published.
#[derive(Debug, Default)]
struct View {
    history: VecDeque<Published>,
}

#[derive(Debug, Clone)]
struct Published {
    snapshot: Arc<Snapshot>,
    /// The version at which everything but the backends last changed: a proxy holding a
    /// version with the same `routing` needs only a backend delta.
    routing: u64,
    /// Encoded frames, shared by every stream: most proxies of a class need the same ones.
    frames: Arc<Frames>,
}

#[derive(Debug, Default)]
struct Frames {
    full: OnceLock<Bytes>,
    /// The last delta computed to this version, and its base.
    delta: Mutex<Option<(u64, Bytes)>>,
}

impl Published {
    fn full_frame(&self, epoch: &str) -> Bytes {
        self.frames
            .full
            .get_or_init(|| Bytes::from(encode_full(epoch, &self.snapshot)))
            .clone()
    }

    fn delta_frame(&self, epoch: &str, from: &Published) -> Bytes {
        let base = from.snapshot.version;
        let mut cached = self.frames.delta.lock().unwrap();
        if let Some((b, frame)) = &*cached
            && *b == base
        {
            return frame.clone();
        }
        let frame =
            Bytes::from(Message::backends_delta(epoch, &from.snapshot, &self.snapshot).encode());
        *cached = Some((base, frame.clone()));
        frame
    }
}

impl View {
    fn latest(&self) -> Option<&Published> {
        self.history.back()
    }

    fn find(&self, version: u64) -> Option<&Published> {
        self.history.iter().find(|p| p.snapshot.version == version)
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub with a fresh random epoch.
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::with_epoch(format!("{:016x}", fastrand::u64(..) ^ nanos))
    }

    /// An empty hub with the given epoch.
    pub fn with_epoch(epoch: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(HubInner {
                epoch: epoch.into(),
                classes: Mutex::default(),
                acks: watch::Sender::new(Acks::new()),
                streams: Mutex::default(),
                sent: SentCounters::default(),
            }),
        }
    }

    /// This hub's epoch: versions are comparable only within it.
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// Makes `snapshot` the current one of `class` and pushes it to the class's proxies.
    /// Returns its version; a snapshot equal to the current one (whatever its `version`) keeps
    /// the current version and sends nothing.
    pub fn publish(&self, class: &str, mut snapshot: Snapshot) -> u64 {
        let mut classes = self.inner.classes.lock().unwrap();
        let slot = classes.entry(class.to_owned()).or_insert_with(Slot::new);
        let view = slot.view.borrow().clone();
        let latest = view.latest();
        if let Some(latest) = latest {
            snapshot.version = latest.snapshot.version;
            if *latest.snapshot == snapshot {
                return snapshot.version;
            }
        }
        slot.last_version += 1;
        let version = slot.last_version;
        snapshot.version = version;
        let routing = match latest {
            Some(l) if same_routing(&l.snapshot, &snapshot) => l.routing,
            _ => version,
        };
        let mut history = view.history.clone();
        history.push_back(Published {
            snapshot: Arc::new(snapshot),
            routing,
            frames: Arc::default(),
        });
        while history.len() > HISTORY {
            history.pop_front();
        }
        slot.view.send_replace(Arc::new(View { history }));
        version
    }

    /// Stops serving `class`: its proxies keep what they have, and get the next snapshot
    /// published for it (versions keep counting up).
    pub fn retire(&self, class: &str) {
        if let Some(slot) = self.inner.classes.lock().unwrap().get(class) {
            slot.view.send_replace(Arc::new(View::default()));
        }
        self.inner
            .acks
            .send_if_modified(|acks| acks.remove(class).is_some());
    }

    /// The classes currently published.
    pub fn classes(&self) -> BTreeSet<String> {
        let classes = self.inner.classes.lock().unwrap();
        classes
            .iter()
            .filter(|(_, slot)| slot.view.borrow().latest().is_some())
            .map(|(class, _)| class.clone())
            .collect()
    }

    /// The current version of `class`, if published.
    pub fn version(&self, class: &str) -> Option<u64> {
        let classes = self.inner.classes.lock().unwrap();
        let slot = classes.get(class)?;
        let view = slot.view.borrow();
        view.latest().map(|p| p.snapshot.version)
    }

    /// Drops what is known of a proxy (a deleted pod), unless it is connected.
    pub fn forget(&self, class: &str, proxy: &str) {
        self.inner.acks.send_if_modified(|acks| {
            let Some(proxies) = acks.get_mut(class) else {
                return false;
            };
            let gone = proxies.get(proxy).is_some_and(|p| !p.connected);
            if gone {
                proxies.remove(proxy);
            }
            gone
        });
    }

    /// What the streams have sent so far, by kind: the measure of what deltas save.
    pub fn sent(&self) -> Sent {
        let c = &self.inner.sent;
        Sent {
            full_frames: c.full_frames.load(Ordering::Relaxed),
            full_bytes: c.full_bytes.load(Ordering::Relaxed),
            delta_frames: c.delta_frames.load(Ordering::Relaxed),
            delta_bytes: c.delta_bytes.load(Ordering::Relaxed),
        }
    }

    /// Where `class`'s current version stands among its proxies; `None` when not published.
    /// What the `Programmed` condition is made of.
    pub fn rollout(&self, class: &str) -> Option<Rollout> {
        let version = self.version(class)?;
        let acks = self.inner.acks.borrow();
        let proxies = acks.get(class).into_iter().flat_map(|p| p.values());
        let connected: Vec<_> = proxies.filter(|p| p.connected).collect();
        Some(Rollout {
            version,
            connected: connected.len(),
            applied: connected
                .iter()
                .filter(|p| p.version.is_some_and(|v| v >= version))
                .count(),
        })
    }

    /// The current snapshot of `class`, if published.
    pub fn snapshot(&self, class: &str) -> Option<Arc<Snapshot>> {
        let classes = self.inner.classes.lock().unwrap();
        let view = classes.get(class)?.view.borrow();
        view.latest().map(|p| p.snapshot.clone())
    }

    /// Bytes of the full frame of `class`'s current snapshot, if published: the frame proxies
    /// are sent, encoded once per version and shared with them.
    pub fn full_frame_len(&self, class: &str) -> Option<usize> {
        let latest = {
            let classes = self.inner.classes.lock().unwrap();
            let view = classes.get(class)?.view.borrow();
            view.latest()?.clone()
        };
        // Encoded outside the lock: a first encoding of a large snapshot must not hold up
        // publishing.
        Some(latest.full_frame(&self.inner.epoch).len())
    }

    /// Proxy reports, updated as proxies connect, apply and go. A disconnected proxy stays
    /// listed (not connected) until [`Hub::forget`] or [`Hub::retire`].
    pub fn acks(&self) -> watch::Receiver<Acks> {
        self.inner.acks.subscribe()
    }

    fn subscribe(&self, class: &str) -> watch::Receiver<Arc<View>> {
        let mut classes = self.inner.classes.lock().unwrap();
        let slot = classes.entry(class.to_owned()).or_insert_with(Slot::new);
        slot.view.subscribe()
    }

    fn record_ack(&self, class: &str, proxy: &str, version: u64) {
        self.inner.acks.send_if_modified(|acks| {
            let entry = acks
                .entry(class.to_owned())
                .or_default()
                .entry(proxy.to_owned())
                .or_default();
            let newer = entry.version.is_none_or(|v| v < version);
            if newer {
                entry.version = Some(version);
            }
            newer
        });
    }

    fn stream_opened(&self, class: &str, proxy: &str) -> StreamGuard {
        *self
            .inner
            .streams
            .lock()
            .unwrap()
            .entry((class.to_owned(), proxy.to_owned()))
            .or_default() += 1;
        self.set_connected(class, proxy, true);
        StreamGuard {
            hub: self.clone(),
            class: class.to_owned(),
            proxy: proxy.to_owned(),
        }
    }

    fn set_connected(&self, class: &str, proxy: &str, connected: bool) {
        self.inner.acks.send_if_modified(|acks| {
            let entry = acks
                .entry(class.to_owned())
                .or_default()
                .entry(proxy.to_owned())
                .or_default();
            let changed = entry.connected != connected;
            entry.connected = connected;
            changed
        });
    }
}

impl Slot {
    fn new() -> Self {
        Self {
            view: watch::Sender::new(Arc::new(View::default())),
            last_version: 0,
        }
    }
}

/// Marks a proxy disconnected when its last stream ends.
struct StreamGuard {
    hub: Hub,
    class: String,
    proxy: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let key = (self.class.clone(), self.proxy.clone());
        let last = {
            let mut streams = self.hub.inner.streams.lock().unwrap();
            let n = streams.entry(key.clone()).or_default();
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                streams.remove(&key);
            }
            last
        };
        if last {
            tracing::info!(class = %self.class, proxy = %self.proxy, "proxy disconnected");
            self.hub.set_connected(&self.class, &self.proxy, false);
        }
    }
}

// ---------------------------------------------------------------- authentication

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The authenticated identity, e.g. `system:serviceaccount:portico-system:portico-proxy-web`.
    pub identity: String,
}

/// Why a request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Bad, expired or missing token: 401.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A valid token that may not read this class: 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The check itself failed (the API server is unreachable): 503, the proxy retries.
    #[error("cannot authenticate now: {0}")]
    Unavailable(String),
}

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Peer, AuthError>> + Send + 'a>>;

/// Decides whether a bearer token may read a class's snapshots.
pub trait Authenticator: Send + Sync + std::fmt::Debug + 'static {
    fn authenticate<'a>(&'a self, token: &'a str, class: &'a str) -> AuthFuture<'a>;
}

/// One shared token, for development and tests; optionally limited to some classes.
#[derive(Clone)]
pub struct StaticToken {
    token: String,
    classes: Option<BTreeSet<String>>,
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticToken")
            .field("token", &"<redacted>")
            .field("classes", &self.classes)
            .finish()
    }
}

impl StaticToken {
    /// Accepts `token` for every class.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            classes: None,
        }
    }

    /// Accepts `token` for `classes` only (403 for others).
    pub fn for_classes(token: impl Into<String>, classes: &[&str]) -> Self {
        Self {
            token: token.into(),
            classes: Some(classes.iter().map(|c| (*c).to_owned()).collect()),
        }
    }
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator for StaticToken {
    fn authenticate<'a>(&'a self, token: &'a str, class: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            if self.token.is_empty() || !constant_time_eq(token.as_bytes(), self.token.as_bytes()) {
                return Err(AuthError::Unauthenticated("token not accepted".into()));
            }
            if let Some(classes) = &self.classes
                && !classes.contains(class)
            {
                return Err(AuthError::Forbidden(format!(
                    "the token may not read class {class}"
                )));
            }
            Ok(Peer {
                identity: "static-token".into(),
            })
        })
    }
}

// ---------------------------------------------------------------- server

/// Timing knobs of the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A `ping` frame is sent after this long without another frame.
    pub ping_interval: Duration,
    /// Time a client has to finish the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
struct Ctx {
    hub: Hub,
    auth: Arc<dyn Authenticator>,
    options: ServeOptions,
    stop: watch::Receiver<bool>,
}

/// Serves snapshot streams and acks on `listener` until `shutdown` completes; then ends every
/// stream (the proxies reconnect elsewhere or later) and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    hub: Hub,
    auth: Arc<dyn Authenticator>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let (stop_tx, stop) = watch::channel(false);
    let ctx = Ctx {
        hub,
        auth,
        options,
        stop,
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "distribution accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(ctx.options.handshake_timeout, acceptor.accept(stream));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
            });
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20));
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "distribution connection ended");
            }
        });
    }
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

fn reply(status: StatusCode, text: &'static str) -> Response<ServerBody> {
    let mut response = Response::new(ServerBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn valid_class(class: &str) -> bool {
    !class.is_empty()
        && class.len() <= 253
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn query<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Response<ServerBody> {
    let path = req.uri().path();
    let (class, is_stream) = if let Some(class) = path.strip_prefix(SNAPSHOTS_PATH) {
        (class.to_owned(), true)
    } else if let Some(class) = path.strip_prefix(ACKS_PATH) {
        (class.to_owned(), false)
    } else {
        return reply(StatusCode::NOT_FOUND, "not found\n");
    };
    let expected = if is_stream { Method::GET } else { Method::POST };
    if req.method() != expected {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    if !valid_class(&class) {
        return reply(StatusCode::NOT_FOUND, "no such class\n");
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if token.is_empty() {
        return reply(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
    }
    let peer = match ctx.auth.authenticate(token, &class).await {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(%class, error = %e, "proxy refused");
            return match e {
                AuthError::Unauthenticated(_) => {
                    reply(StatusCode::UNAUTHORIZED, "token not accepted\n")
                }
                AuthError::Forbidden(_) => reply(
                    StatusCode::FORBIDDEN,
                    "this token may not read this class\n",
                ),
                AuthError::Unavailable(_) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot check the token now; retry\n",
                ),
            };
        }
    };
    if is_stream {
        open_stream(req, class, peer, ctx)
    } else {
        receive_ack(req, class, ctx).await
    }
}

fn open_stream(
    req: Request<Incoming>,
    class: String,
    peer: Peer,
    ctx: &Ctx,
) -> Response<ServerBody> {
    let Some(proxy) = query(&req, "proxy").filter(|p| !p.is_empty()) else {
        return reply(StatusCode::BAD_REQUEST, "the proxy parameter is required\n");
    };
    let proxy = proxy.to_owned();
    let hub = &ctx.hub;
    let held = match (query(&req, "epoch"), query(&req, "version")) {
        (Some(epoch), Some(version)) if epoch == hub.epoch() => version.parse::<u64>().ok(),
        _ => None,
    };
    if let Some(version) = held {
        hub.record_ack(&class, &proxy, version);
    }
    tracing::info!(%class, %proxy, identity = %peer.identity, resume = ?held, "proxy connected");
    let (tx, rx) = mpsc::channel(1);
    let guard = hub.stream_opened(&class, &proxy);
    let view = hub.subscribe(&class);
    tokio::spawn(stream(
        view,
        tx,
        hub.epoch().to_owned(),
        held,
        ctx.options.ping_interval,
        ctx.stop.clone(),
        guard,
    ));
    let mut response = Response::new(ServerBody::Stream(rx));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// Feeds one proxy's stream until it goes or the server stops.
async fn stream(
    mut view: watch::Receiver<Arc<View>>,
    tx: mpsc::Sender<Bytes>,
    epoch: String,
    held: Option<u64>,
    ping: Duration,
    mut stop: watch::Receiver<bool>,
    guard: StreamGuard,
) {
    // What the proxy holds, when it is one of the versions we know.
    let mut holding: Option<Published> = held.and_then(|v| view.borrow().find(v).cloned());
    loop {
        if *stop.borrow() {
            return;
        }
        let current = view.borrow_and_update().clone();
        if let Some(latest) = current.latest() {
            let frame = match &holding {
                Some(h) if h.snapshot.version == latest.snapshot.version => None,
                Some(h) if h.routing == latest.routing => {
                    Some(("backends", latest.delta_frame(&epoch, h)))
                }
                _ => Some(("full", latest.full_frame(&epoch))),
            };
            if let Some((kind, frame)) = frame {
                tracing::debug!(class = %guard.class, proxy = %guard.proxy, version = latest.snapshot.version, kind, bytes = frame.len(), "sending");
                guard.hub.inner.sent.count(kind == "full", frame.len());
                if tx.send(frame).await.is_err() {
                    return;
                }
                holding = Some(latest.clone());
            }
        }
        drop(current);
        tokio::select! {
            changed = view.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(ping) => {
                if tx.send(Bytes::from(Message::Ping.encode())).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
            _ = stop.changed() => return,
        }
    }
}

async fn receive_ack(req: Request<Incoming>, class: String, ctx: &Ctx) -> Response<ServerBody> {
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "unreadable body\n"),
    };
    let Ok(ack) = serde_json::from_slice::<Ack>(&body) else {
        return reply(StatusCode::BAD_REQUEST, "malformed ack\n");
    };
    if ack.epoch != ctx.hub.epoch() {
        return reply(StatusCode::CONFLICT, "stale epoch\n");
    }
    ctx.hub.record_ack(&class, &ack.proxy, ack.version);
    let mut response = Response::new(ServerBody::Full(None));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_stamps_versions_and_skips_equal_snapshots() {
        let hub = Hub::with_epoch("e");
        let mut s = Snapshot::empty("c");
        assert_eq!(hub.publish("c", s.clone()), 1);
        s.version = 42;
        assert_eq!(
            hub.publish("c", s.clone()),
            1,
            "equal content, same version"
        );
        s.replicas = 2;
        assert_eq!(hub.publish("c", s.clone()), 2);
        assert_eq!(hub.version("c"), Some(2));
        hub.retire("c");
        assert_eq!(hub.version("c"), None);
        assert!(hub.classes().is_empty());
        assert_eq!(
            hub.publish("c", s),
            3,
            "versions keep counting after a retire"
        );
    }

    #[test]
    fn acks_keep_the_newest_version_and_forget_drops_a_gone_proxy() {
        let hub = Hub::with_epoch("e");
        let acks = hub.acks();
        hub.record_ack("c", "p", 3);
        hub.record_ack("c", "p", 2);
        assert_eq!(
            acks.borrow()["c"]["p"],
            ProxyAck {
                version: Some(3),
                connected: false
            }
        );
        let guard = hub.stream_opened("c", "p");
        hub.forget("c", "p");
        assert!(acks.borrow()["c"]["p"].connected, "a connected proxy stays");
        drop(guard);
        assert!(!acks.borrow()["c"]["p"].connected);
        hub.forget("c", "p");
        assert!(acks.borrow()["c"].is_empty());
    }

    #[test]
    fn a_rollout_counts_connected_proxies_at_the_current_version() {
        let hub = Hub::with_epoch("e");
        assert_eq!(hub.rollout("c"), None);
        hub.publish("c", Snapshot::empty("c"));
        let (_a, _b) = (hub.stream_opened("c", "a"), hub.stream_opened("c", "b"));
        hub.record_ack("c", "gone", 1);
        let rollout = hub.rollout("c").unwrap();
        assert_eq!(
            (rollout.version, rollout.connected, rollout.applied),
            (1, 2, 0)
        );
        hub.record_ack("c", "a", 1);
        assert!(!hub.rollout("c").unwrap().complete());
        hub.record_ack("c", "b", 1);
        assert!(hub.rollout("c").unwrap().complete());
        let mut next = Snapshot::empty("c");
        next.replicas = 2;
        hub.publish("c", next);
        assert_eq!(
            hub.rollout("c").unwrap().applied,
            0,
            "a new version starts over"
        );
    }
}
