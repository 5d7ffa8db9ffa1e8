//! One endpoint: its idle HTTP/1.1 connections, its shared HTTP/2 connection, its in-flight
//! count (for least-request balancing) and its ejection deadline.
//!
//! Endpoints outlive snapshots: a new snapshot naming the same address and protocol reuses the
//! endpoint, so a configuration change keeps warm upstream connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::request_body::RequestBody;
use hyper::client::conn::{http1, http2};
use portico_api::AppProtocol;

use super::connect::{Conn, ConnectError, Connector};

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE: usize = 1024;
/// Idle HTTP/1.1 connections older than this are not reused (servers close idle connections
/// after a while; nginx's default keepalive_timeout is 75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
    idle: Mutex<Vec<(http1::SendRequest<RequestBody>, Instant)>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    in_flight: AtomicUsize,
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
            h2: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn start_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
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

    /// A connection: an idle or shared one if there is one, else a new one. The duration is
    /// how long a reused HTTP/1.1 connection sat idle (zero otherwise).
    pub async fn checkout(&self, connector: &Connector) -> Result<(Conn, Duration), ConnectError> {
        if let Some(reused) = self.reuse().await {
            return Ok(reused);
        }
        // Boxed: connecting (TCP, TLS, handshake) is a large future and a rare one; inline,
        // it would make every request's future as large, and moving that costs on each request.
        let conn = Box::pin(connector.connect(self.addr, self.protocol)).await?;
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
            let (mut sender, since) = self.idle.lock().unwrap().pop()?;
            if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            // The connection is handed back when the response body ends, a moment before
            // hyper is ready for the next request on it.
            if sender.ready().await.is_ok() {
                return Some((Conn::H1(sender), since.elapsed()));
            }
        }
    }

    /// Returns an HTTP/1.1 connection whose exchange has completed.
    pub fn put_idle(&self, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    /// Idle HTTP/1.1 connections held.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
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
