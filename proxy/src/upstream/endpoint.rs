//! One endpoint: its idle HTTP/1.1 connections, its shared HTTP/2 connection, its in-flight
//! count (for least-request balancing) and its ejection deadline.
//!
//! Endpoints outlive snapshots: a new snapshot naming the same address and protocol reuses the
//! endpoint, so a configuration change keeps warm upstream connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::request_body::RequestBody;
use hyper::client::conn::http2;
use portico_api::AppProtocol;

use super::connect::{Conn, ConnectError, Connector, H1Conn};

/// Idle HTTP/1.1 connections kept per endpoint beyond those the requests in flight need. Under
/// a steady load the pool holds about as many connections as there are requests in flight to
/// the endpoint, and closing one there only means opening another a moment later; so up to
/// `max(MAX_IDLE, most requests in flight since the last sweep)` are kept when returned. Once a
/// burst is over, the sweeper trims the pool back to `MAX_IDLE` (the oldest first) and then
/// closes what the idle timeout catches, so a thousand connections opened for a burst do not
/// keep their sockets and buffers, and the upstream's, for nothing. 128 covers the 64 keep-alive
/// connections nginx is usually given (`keepalive 64`) twice over.
const MAX_IDLE: usize = 128;
/// Idle HTTP/1.1 connections older than this are closed (servers close idle connections after a
/// while; nginx's default keepalive_timeout is 75 s).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The idle timeout in milliseconds, 0 for [`DEFAULT_IDLE_TIMEOUT`]. Process-wide: it is set
/// once at start-up, before any endpoint exists.
static IDLE_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);

/// Sets how long an upstream HTTP/1.1 connection may stay idle before it is closed.
pub fn set_idle_timeout(timeout: Duration) {
    IDLE_TIMEOUT_MS.store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
}

fn idle_timeout() -> Duration {
    match IDLE_TIMEOUT_MS.load(Ordering::Relaxed) {
        0 => DEFAULT_IDLE_TIMEOUT,
        ms => Duration::from_millis(ms),
    }
}

/// Milliseconds since the process started; 0 is never a deadline.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// An upstream address and its connections.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub protocol: AppProtocol,
    /// Idle HTTP/1.1 connections and when each became idle; a stack, so the oldest are at
    /// the bottom, where the sweeper closes them.
    idle: Mutex<Vec<(Box<H1Conn>, Instant)>>,
    /// True while a sweeper task watches `idle`.
    sweeping: AtomicBool,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    in_flight: AtomicUsize,
    /// The most requests in flight since the last sweep: how many connections the pool keeps.
    peak_in_flight: AtomicUsize,
    /// `now_ms()` until which the endpoint is skipped; 0 when not ejected.
    ejected_until: AtomicU64,
}

impl Endpoint {
    /// An endpoint without connections.
    pub fn new(addr: SocketAddr, protocol: AppProtocol) -> Self {
        Self {
            addr,
            protocol,
            idle: Mutex::new(Vec::new()),
            sweeping: AtomicBool::new(false),
            h2: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn start_request(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        // A plain load first: the store is rare, and a lost race only keeps a few fewer.
        if now > self.peak_in_flight.load(Ordering::Relaxed) {
            self.peak_in_flight.store(now, Ordering::Relaxed);
        }
    }

    pub(super) fn end_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// True while the endpoint is ejected.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Skips the endpoint for `duration`.
    pub fn eject(&self, duration: Duration) {
        let until = now_ms() + duration.as_millis() as u64;
        self.ejected_until.store(until, Ordering::Relaxed);
        tracing::warn!(endpoint = %self.addr, ?duration, "endpoint ejected");
    }

    /// A connection: an idle or shared one if there is one, else a new one, opened within
    /// `connect_timeout` if given. The duration is how long a reused HTTP/1.1 connection sat
    /// idle (zero otherwise).
    pub async fn checkout(
        &self,
        connector: &Connector,
        connect_timeout: Option<Duration>,
    ) -> Result<(Conn, Duration), ConnectError> {
        if let Some(reused) = self.reuse().await {
            return Ok(reused);
        }
        // Boxed: connecting (TCP, TLS, handshake) is a large future and a rare one; inline,
        // it would make every request's future as large, and moving that costs on each request.
        let conn = Box::pin(connector.connect(self.addr, self.protocol, connect_timeout)).await?;
        if let Conn::H2(sender) = &conn {
            *self.h2.lock().unwrap() = Some(sender.clone());
        }
        // A successful connect ends an ejection early.
        self.ejected_until.store(0, Ordering::Relaxed);
        Ok((conn, Duration::ZERO))
    }

    async fn reuse(&self) -> Option<(Conn, Duration)> {
        if self.protocol != AppProtocol::Http1 {
            let shared = self.h2.lock().unwrap().clone();
            match shared {
                Some(sender) if !sender.is_closed() => {
                    return Some((Conn::H2(sender), Duration::ZERO));
                }
                Some(_) => *self.h2.lock().unwrap() = None,
                None => {}
            }
        }
        loop {
            let (mut h1, since) = self.idle.lock().unwrap().pop()?;
            let idle_for = since.elapsed();
            if idle_for > idle_timeout() {
                continue;
            }
            // Nobody polled it while idle, and it is not polled here either: the first poll
            // that sends the request reads first, so a close by the server meanwhile hands
            // the request back unsent (and `Backend::forward` tries the next connection).
            if std::future::poll_fn(|cx| Poll::Ready(h1.is_ready(cx) || h1.poll_reusable(cx))).await
            {
                return Some((Conn::H1(h1), idle_for));
            }
        }
    }

    /// Returns an HTTP/1.1 connection whose exchange has completed and that is ready for
    /// another. Over [`MAX_IDLE`], it is closed instead.
    pub fn put_idle(self: &Arc<Self>, h1: Box<H1Conn>) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE.max(self.peak_in_flight.load(Ordering::Relaxed)) {
            idle.push((h1, Instant::now()));
            // Checked under the lock, which the sweeper holds when it stops.
            if !self.sweeping.swap(true, Ordering::Relaxed) {
                tokio::spawn(sweep(Arc::downgrade(self)));
            }
        }
    }

    /// Closes the idle connections older than the idle timeout, those the server closed, and
    /// the oldest of those over `max(MAX_IDLE, peak in flight since the last sweep)`; starts a
    /// new peak. Returns how many stay.
    fn close_stale(&self) -> usize {
        let timeout = idle_timeout();
        // Polled without a waker: that only reads an end of stream from a server that closed.
        let mut cx = Context::from_waker(Waker::noop());
        let mut idle = self.idle.lock().unwrap();
        idle.retain_mut(|(h1, since)| since.elapsed() <= timeout && h1.poll_reusable(&mut cx));
        let peak = self
            .peak_in_flight
            .swap(self.in_flight(), Ordering::Relaxed);
        let keep = MAX_IDLE.max(peak);
        if idle.len() > keep {
            let excess = idle.len() - keep;
            idle.drain(..excess);
        }
        if idle.is_empty() {
            self.sweeping.store(false, Ordering::Relaxed);
        }
        idle.len()
    }

    /// Idle HTTP/1.1 connections held.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// Watches an endpoint's idle connections while it has some: without it, connections at the
/// bottom of the stack would never be popped, hence never checked, and would stay open (with
/// their memory) for the life of the endpoint after a burst. A quarter of the timeout between
/// sweeps: a connection is closed at most 1.25 timeouts after it became idle, for one timer
/// event per endpoint every 15 s by default.
async fn sweep(endpoint: Weak<Endpoint>) {
    loop {
        tokio::time::sleep((idle_timeout() / 4).max(Duration::from_millis(10))).await;
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
        if endpoint.close_stale() == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_expires() {
        let ep = Endpoint::new("127.0.0.1:1".parse().unwrap(), AppProtocol::Http1);
        assert!(!ep.is_ejected());
        ep.eject(Duration::from_secs(60));
        assert!(ep.is_ejected());
        ep.eject(Duration::ZERO);
        assert!(!ep.is_ejected());
        assert_eq!(ep.idle_count(), 0);
    }
}
