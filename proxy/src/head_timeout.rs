//! 408 for HTTP/1.1 clients too slow to send a request head (slowloris).
//!
//! hyper's own header timeout closes such connections without a word. [`HeadTimeoutIo`] wraps a
//! client connection and enforces the limit itself: once the first byte of a request head has
//! arrived, the rest must follow within `--header-read-timeout`, or the proxy writes
//! `408 Request Timeout` and closes the connection. A connection that sends nothing at all is
//! left to the keep-alive limit and closed silently, as browsers expect of idle connections.
//!
//! The wrapper knows where heads begin and end from [`HeadTimer`], which the connection shares
//! with the request path: the dispatcher marks the head received when it is called, and the
//! response body marks the exchange over when it is dropped. Only then, with no response in
//! flight, can the 408 be written without corrupting anything. Connections that turn out to
//! speak HTTP/2 (prior knowledge) are passed through untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Where a connection is between requests, shared with its requests.
#[derive(Debug, Default)]
pub struct HeadTimer {
    /// A request is in flight: from its head to the end of its response.
    busy: AtomicBool,
    /// The connection was upgraded (WebSocket): no more heads.
    upgraded: AtomicBool,
}

impl HeadTimer {
    /// The head of a request has been read.
    pub fn head_received(&self) {
        self.busy.store(true, Ordering::Release);
    }

    /// The response is done: the next bytes begin a new head.
    pub fn exchange_done(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// The connection now carries another protocol.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
enum Phase {
    /// Watching heads.
    Watching,
    /// Writing the 408; `usize` bytes written so far.
    Answering(usize),
    /// The 408 is written: reads see the end of the stream.
    Closed,
    /// Not HTTP/1.1: out of the way.
    Off,
}

/// A client connection under the head timeout.
#[derive(Debug)]
pub struct HeadTimeoutIo<T> {
    inner: T,
    timer: Arc<HeadTimer>,
    limit: Duration,
    phase: Phase,
    /// When the head being read began, if one has begun.
    head_started: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    first_read: bool,
}

impl<T> HeadTimeoutIo<T> {
    pub fn new(inner: T, timer: Arc<HeadTimer>, limit: Duration) -> Self {
        Self {
            inner,
            timer,
            limit,
            phase: Phase::Watching,
            head_started: None,
            sleep: None,
            first_read: true,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> HeadTimeoutIo<T> {
    /// Writes what is left of the 408, then reports the end of the stream.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Phase::Answering(written) = self.phase {
            if written == RESPONSE.len() {
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.phase = Phase::Closed;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &RESPONSE[written..]))?;
            if n == 0 {
                self.phase = Phase::Closed;
                break;
            }
            self.phase = Phase::Answering(written + n);
        }
        tracing::debug!("request head not received in time: 408");
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadTimeoutIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Off => return Pin::new(&mut this.inner).poll_read(cx, buf),
            Phase::Answering(_) => return this.poll_answer(cx),
            Phase::Closed => return Poll::Ready(Ok(())),
            Phase::Watching => {}
        }
        if this.timer.upgraded.load(Ordering::Acquire) {
            this.phase = Phase::Off;
            this.sleep = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.timer.busy() {
            this.head_started = None;
            this.sleep = None;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            if this.first_read && !read.is_empty() {
                this.first_read = false;
                if read.starts_with(H2_PREFACE) || H2_PREFACE.starts_with(read) {
                    this.phase = Phase::Off;
                    return polled;
                }
            }
            if !read.is_empty() && !this.timer.busy() && this.head_started.is_none() {
                let started = Instant::now();
                this.head_started = Some(started);
                this.sleep = Some(Box::pin(tokio::time::sleep_until(started + this.limit)));
            }
            return polled;
        }
        if polled.is_pending()
            && !this.timer.busy()
            && let Some(sleep) = &mut this.sleep
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.sleep = None;
            this.phase = Phase::Answering(0);
            return this.poll_answer(cx);
        }
        polled
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadTimeoutIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Answering(_) | Phase::Closed => {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
            _ => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Answering(_) | Phase::Closed => {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
            _ => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_gets_408_and_an_idle_connection_nothing() {
        let (mut client, server) = duplex(4096);
        let timer = Arc::new(HeadTimer::default());
        let mut io = HeadTimeoutIo::new(server, timer.clone(), Duration::from_secs(10));
        let mut buf = [0u8; 64];
        // Idle: no head begun, no deadline.
        let idle = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(idle.is_err(), "an idle connection is not answered");
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 18);
        // The rest of the head never comes: 408, then the end of the stream.
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        let mut answer = Vec::new();
        drop(io);
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn no_408_while_a_request_is_in_flight_or_for_http2() {
        let (mut client, server) = duplex(4096);
        let timer = Arc::new(HeadTimer::default());
        let mut io = HeadTimeoutIo::new(server, timer.clone(), Duration::from_secs(10));
        let mut buf = [0u8; 64];
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        timer.head_received();
        // A slow body is not a slow head.
        let slow_body = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(slow_body.is_err());
        timer.exchange_done();
        client.write_all(b"GE").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        assert_eq!(io.read(&mut buf).await.unwrap(), 0, "408 for the next head");

        let (mut client, server) = duplex(4096);
        let mut io = HeadTimeoutIo::new(
            server,
            Arc::new(HeadTimer::default()),
            Duration::from_secs(10),
        );
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let h2 = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(h2.is_err(), "HTTP/2 connections are left alone");
    }
}
