//! 408 for HTTP/1.1 clients too slow to send a request head (slowloris), the idle limit of
//! client connections, HTTP/1.1 and HTTP/2, and the limit on HTTP/1.1 clients that stall in
//! the middle of an exchange.
//!
//! hyper's own header timeout closes such connections without a word. [`HeadTimeoutIo`] wraps a
//! client connection and enforces the limit itself: once the first byte of a request head has
//! arrived, the rest must follow within `--header-read-timeout`, or the proxy writes
//! `408 Request Timeout` and closes the connection. A connection that sends nothing, new or
//! between requests, is closed silently after `--idle-timeout`, as clients expect of idle
//! keep-alive connections. In the middle of an exchange, a client that stops sending a request
//! body it owes (slow POST), or stops taking the response (slow read), gets as long before the
//! connection is closed: the time between two reads or two writes that make progress, like
//! nginx's `client_body_timeout` and `send_timeout`. Waiting for the upstream is not stalling.
//!
//! The wrapper knows where heads begin and end from [`HeadTimer`], which the connection shares
//! with the request path: the dispatcher marks the head received when it is called, and the
//! response body marks the exchange over when it is dropped. Only then, with no response in
//! flight, can the 408 be written without corrupting anything. A connection that turns out to
//! speak HTTP/2 (prior knowledge) is told so by the listener once its whole preface has arrived
//! ([`HeadTimeoutIo::stand_aside`]), and is passed through untouched from then on; until then,
//! a preface is a head like any other, and one that stalls is timed out.
//!
//! An HTTP/2 connection is idle while it has no stream open: [`H2Streams`] counts them, and the
//! listener closes the connection (GOAWAY, then the end of the stream) once it has had none for
//! the idle limit. Pings do not count as activity. [`H2Streams`] also follows each response: one
//! that has waited for the client to take more (its flow-control window, or a full socket) for
//! the idle limit gets the connection dropped, checked once per limit, so within twice it. A
//! response waiting on its upstream is not waiting on the client.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n";

/// Where a connection is between requests, shared with its requests.
#[derive(Debug, Default)]
pub struct HeadTimer {
    /// A request is in flight: from its head to the end of its response.
    busy: AtomicBool,
    /// The connection was upgraded (WebSocket): no more heads.
    upgraded: AtomicBool,
    /// The client still owes part of the request body.
    body_owed: AtomicBool,
    /// Counts heads received and exchanges done, so the connection sees each transition even
    /// when it was not reading at the time.
    transitions: AtomicU64,
}

impl HeadTimer {
    /// The head of a request has been read.
    pub fn head_received(&self) {
        self.busy.store(true, Ordering::Release);
        self.transitions.fetch_add(1, Ordering::AcqRel);
    }

    /// The response is done: the next bytes begin a new head.
    pub fn exchange_done(&self) {
        self.body_owed.store(false, Ordering::Release);
        self.busy.store(false, Ordering::Release);
        self.transitions.fetch_add(1, Ordering::AcqRel);
    }

    /// The request has a body, not all of it read yet: reads the connection waits on are the
    /// client's to make.
    pub fn body_owed(&self) {
        self.body_owed.store(true, Ordering::Release);
    }

    /// The request body has been read whole, or will not be read any further.
    pub fn body_settled(&self) {
        self.body_owed.store(false, Ordering::Release);
    }

    /// The connection now carries another protocol.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }
}

/// The streams open on an HTTP/2 connection, since when it has had none, and the progress of
/// the responses being sent on it.
#[derive(Debug)]
pub struct H2Streams(Mutex<Slots>);

/// The responses of a connection's open streams, each in a slot; `None` slots are free, listed
/// in `free`. The streams open are the slots taken.
#[derive(Debug)]
struct Slots {
    sending: Vec<Option<Arc<Sending>>>,
    free: Vec<usize>,
    /// When the last stream ended (or the connection began).
    idle_since: Instant,
}

impl Slots {
    /// Since when the connection has had no stream open; `None` while it has one.
    fn idle_since(&self) -> Option<Instant> {
        (self.sending.len() == self.free.len()).then_some(self.idle_since)
    }
}

/// A stream's place on its connection: counted open until dropped.
#[derive(Debug)]
pub struct H2Stream {
    streams: Arc<H2Streams>,
    slot: usize,
    sending: Arc<Sending>,
}

impl H2Stream {
    /// The connection asks for the next frame of the response.
    pub fn polling(&self) {
        self.sending.waiting.store(false, Ordering::Relaxed);
    }

    /// A frame of the response was handed over, and more are to come.
    pub fn handed(&self) {
        self.sending.taken.fetch_add(1, Ordering::Relaxed);
        self.sending.waiting.store(true, Ordering::Relaxed);
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.streams.closed(self.slot);
    }
}

/// One stream's response on its way to the client.
#[derive(Debug, Default)]
struct Sending {
    /// Frames the connection has taken from the response so far.
    taken: AtomicU64,
    /// A frame was handed over and the connection has not asked for the next one: it is waiting
    /// for the client to take more (flow control), or writing.
    waiting: AtomicBool,
}

/// Why [`H2Streams::watch`] gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No stream open for the idle limit: close it gracefully (GOAWAY).
    Idle,
    /// A response waited for the client to take more for the idle limit: drop the connection.
    Stalled,
}

impl Default for H2Streams {
    fn default() -> Self {
        Self(Mutex::new(Slots {
            sending: Vec::new(),
            free: Vec::new(),
            idle_since: Instant::now(),
        }))
    }
}

impl H2Streams {
    /// A stream (request) began; it ends when the returned handle drops.
    pub fn open(self: &Arc<Self>) -> H2Stream {
        let sending = Arc::new(Sending::default());
        let mut slots = self.0.lock().unwrap();
        let slot = match slots.free.pop() {
            Some(slot) => {
                slots.sending[slot] = Some(sending.clone());
                slot
            }
            None => {
                slots.sending.push(Some(sending.clone()));
                slots.sending.len() - 1
            }
        };
        H2Stream {
            streams: self.clone(),
            slot,
            sending,
        }
    }

    /// The stream in `slot` ended: its response is over, or it was reset.
    fn closed(&self, slot: usize) {
        let mut slots = self.0.lock().unwrap();
        slots.sending[slot] = None;
        slots.free.push(slot);
        slots.idle_since = Instant::now();
    }

    /// Resolves once the connection should close: it has had no stream open for `limit`, or a
    /// response has waited for the client to take more for `limit` (checked every `limit`, so
    /// noticed within twice that). Costs a timer per `limit`, not one per stream.
    pub async fn watch(&self, limit: Duration) -> Close {
        // The responses found waiting at the last check, with the frames they had sent.
        let mut waiting: Vec<(Arc<Sending>, u64)> = Vec::new();
        loop {
            let idle_since = self.0.lock().unwrap().idle_since();
            let Some(since) = idle_since else {
                tokio::time::sleep(limit).await;
                if self.stalled(&mut waiting) {
                    return Close::Stalled;
                }
                continue;
            };
            waiting.clear();
            let deadline = since + limit;
            if deadline <= Instant::now() {
                return Close::Idle;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// True if a response found waiting at the last check is still waiting, with no frame sent
    /// since; `waiting` becomes the responses waiting now.
    fn stalled(&self, waiting: &mut Vec<(Arc<Sending>, u64)>) -> bool {
        let slots = self.0.lock().unwrap();
        let mut now = Vec::new();
        for sending in slots.sending.iter().flatten() {
            if !sending.waiting.load(Ordering::Relaxed) {
                continue;
            }
            let taken = sending.taken.load(Ordering::Relaxed);
            if waiting
                .iter()
                .any(|(before, then)| Arc::ptr_eq(before, sending) && *then == taken)
            {
                return true;
            }
            now.push((sending.clone(), taken));
        }
        *waiting = now;
        false
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

/// A client connection under the head and idle timeouts.
#[derive(Debug)]
pub struct HeadTimeoutIo<T> {
    inner: T,
    timer: Arc<HeadTimer>,
    limit: Duration,
    idle: Duration,
    phase: Phase,
    /// The last `HeadTimer::transitions` seen.
    seen: u64,
    /// When the head being read began, if one has begun.
    head_started: Option<Instant>,
    /// Since when the connection has had nothing to do.
    idle_since: Instant,
    /// Since when reads have waited for request body bytes the client owes.
    read_stalled: Option<Instant>,
    /// Since when writes have waited for the client to take response bytes.
    write_stalled: Option<Instant>,
    /// One timer for the connection's life, armed lazily: it may fire before the deadline in
    /// force (which then re-arms it), never after. Requests on a busy keep-alive connection
    /// therefore neither allocate a timer nor touch the timer wheel.
    sleep: Option<Pin<Box<Sleep>>>,
}

/// What the pending timer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Head,
    Idle,
}

impl<T> HeadTimeoutIo<T> {
    /// `inner` with `limit` for a head once begun and `idle` for silence between requests.
    pub fn new(inner: T, timer: Arc<HeadTimer>, limit: Duration, idle: Duration) -> Self {
        Self {
            inner,
            timer,
            limit,
            idle,
            phase: Phase::Watching,
            seen: 0,
            head_started: None,
            idle_since: Instant::now(),
            read_stalled: None,
            write_stalled: None,
            sleep: None,
        }
    }

    /// The connection speaks another protocol (HTTP/2, or an upgrade's): no more heads to
    /// time.
    pub fn stand_aside(&mut self) {
        self.phase = Phase::Off;
        self.sleep = None;
    }
}

impl<T> HeadTimeoutIo<T> {
    /// True while the connection is watched: HTTP/1.1, not upgraded, not closing.
    fn watching(&mut self) -> bool {
        if matches!(self.phase, Phase::Watching) && self.timer.upgraded.load(Ordering::Acquire) {
            self.stand_aside();
        }
        matches!(self.phase, Phase::Watching)
    }

    /// Ready once `deadline` has passed. Until then the connection's one timer is set to fire
    /// no later than it: it may fire earlier, for a deadline that no longer holds, and is then
    /// set again.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= deadline {
                break;
            }
            sleep.as_mut().reset(deadline);
        }
        self.sleep = None;
        Poll::Ready(())
    }

    /// True once the 408 is being written or the connection is closed: no more writes.
    fn closing(&self) -> bool {
        matches!(self.phase, Phase::Answering(_) | Phase::Closed)
    }
}

impl<T: AsyncWrite + Unpin> HeadTimeoutIo<T> {
    /// A write (or flush) of the response, `op` on the inner stream: closes the connection once
    /// writes have waited for the client for the idle limit.
    fn write_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let polled = op(Pin::new(&mut self.inner), cx);
        if !polled.is_pending() || !self.watching() {
            self.write_stalled = None;
            return polled;
        }
        let since = *self.write_stalled.get_or_insert_with(Instant::now);
        ready!(self.poll_deadline(cx, since + self.idle));
        tracing::debug!("client took no response bytes in time: connection closed");
        self.phase = Phase::Closed;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading the response",
        )))
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
            Phase::Answering(_) => return this.poll_answer(cx),
            Phase::Closed => return Poll::Ready(Ok(())),
            Phase::Off | Phase::Watching => {}
        }
        if !this.watching() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let transitions = this.timer.transitions.load(Ordering::Acquire);
        if transitions != this.seen {
            // A head was received or an exchange ended since the last read: start afresh.
            this.seen = transitions;
            this.head_started = None;
            this.read_stalled = None;
            this.idle_since = Instant::now();
        }
        let busy = this.timer.busy();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                this.read_stalled = None;
                if !busy && this.head_started.is_none() {
                    this.head_started = Some(Instant::now());
                }
            }
            return polled;
        }
        if !polled.is_pending() {
            return polled;
        }
        if busy {
            // Waiting for the upstream, or for the end of the stream, is not the client's doing.
            if !this.timer.body_owed.load(Ordering::Acquire) {
                return polled;
            }
            let since = *this.read_stalled.get_or_insert_with(Instant::now);
            ready!(this.poll_deadline(cx, since + this.idle));
            tracing::debug!("client sent no request body bytes in time: connection closed");
            this.phase = Phase::Closed;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped sending the request body",
            )));
        }
        let (wait, deadline) = match this.head_started {
            Some(started) => (Wait::Head, started + this.limit),
            None => (Wait::Idle, this.idle_since + this.idle),
        };
        ready!(this.poll_deadline(cx, deadline));
        match wait {
            Wait::Head => {
                this.phase = Phase::Answering(0);
                this.poll_answer(cx)
            }
            Wait::Idle => {
                tracing::debug!("idle connection closed");
                this.phase = Phase::Closed;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadTimeoutIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.write_with(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.write_with(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write_with(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    const IDLE: Duration = Duration::from_secs(100);

    /// A connection under a 10 s head limit and [`IDLE`], through a pipe holding `capacity`
    /// bytes each way: the client's end, the connection's timer, and the watched end.
    fn watched(capacity: usize) -> (DuplexStream, Arc<HeadTimer>, HeadTimeoutIo<DuplexStream>) {
        let (client, server) = duplex(capacity);
        let timer = Arc::new(HeadTimer::default());
        let io = HeadTimeoutIo::new(server, timer.clone(), Duration::from_secs(10), IDLE);
        (client, timer, io)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_gets_408_and_an_idle_connection_is_closed_silently() {
        let (mut client, _, mut io) = watched(4096);
        let mut buf = [0u8; 64];
        // Idle: no head begun, no answer before the idle limit.
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

        // Silence past the idle limit: the end of the stream, and nothing written.
        let (mut client, _, mut io) = watched(4096);
        let started = Instant::now();
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        assert!(started.elapsed() >= IDLE);
        drop(io);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_restarts_after_each_exchange() {
        let (mut client, timer, mut io) = watched(4096);
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        // The server reads the head and answers without reading again.
        timer.head_received();
        tokio::time::sleep(Duration::from_secs(30)).await;
        timer.exchange_done();
        // Long past the first head's deadline: still no 408 while nothing new arrives.
        let quiet = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(quiet.is_err());
        client
            .write_all(b"GET /next HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_stalling_mid_exchange_is_cut_off_after_the_idle_limit() {
        let within = |started: Instant| {
            let waited = started.elapsed();
            waited >= IDLE && waited < IDLE + Duration::from_millis(10)
        };
        let (mut client, timer, mut io) = watched(64);
        let mut buf = [0u8; 64];
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        timer.head_received();
        // Waiting for the upstream: the client owes nothing, and there is no limit.
        let waiting = tokio::time::timeout(IDLE * 2, io.read(&mut buf)).await;
        assert!(waiting.is_err());
        // Body bytes owed that do not come (slow POST).
        timer.body_owed();
        let started = Instant::now();
        let stalled = io.read(&mut buf).await.unwrap_err();
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
        assert!(within(started));
        drop(client);

        // A response the client does not take (slow read): the pipe holds 64 bytes.
        let (client, timer, mut io) = watched(64);
        timer.head_received();
        let started = Instant::now();
        let stalled = io.write_all(&[b'x'; 1024]).await.unwrap_err();
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
        assert!(within(started));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_idle_only_without_streams() {
        const LIMIT: Duration = Duration::from_secs(10);
        let streams = Arc::new(H2Streams::default());
        // New, with nothing open: idle after the limit.
        let started = Instant::now();
        assert_eq!(streams.watch(LIMIT).await, Close::Idle);
        assert_eq!(started.elapsed(), LIMIT);
        // Streams open for longer than the limit, with responses moving or waiting on their
        // upstream, keep the connection.
        let a = streams.open();
        let b = streams.open();
        let watch = streams.watch(LIMIT);
        let moving = async {
            for _ in 0..5 {
                a.polling();
                tokio::time::sleep(LIMIT / 2).await;
                a.handed();
            }
        };
        let busy = tokio::time::timeout(LIMIT * 3, async { tokio::join!(watch, moving).0 }).await;
        assert!(busy.is_err(), "not idle with streams open");
        a.polling();
        drop(a);
        let busy = tokio::time::timeout(LIMIT * 3, streams.watch(LIMIT)).await;
        assert!(busy.is_err(), "not idle with one stream open");
        // The clock starts when the last stream ends.
        drop(b);
        let ended = Instant::now();
        assert_eq!(streams.watch(LIMIT).await, Close::Idle);
        let waited = ended.elapsed();
        assert!(
            waited >= LIMIT && waited < LIMIT + Duration::from_millis(10),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_response_the_client_does_not_take_closes_the_connection() {
        const LIMIT: Duration = Duration::from_secs(10);
        let streams = Arc::new(H2Streams::default());
        let stream = streams.open();
        // A frame handed over, and the connection never asks for the next one.
        stream.polling();
        stream.handed();
        let started = Instant::now();
        assert_eq!(streams.watch(LIMIT).await, Close::Stalled);
        let waited = started.elapsed();
        assert!(waited >= LIMIT && waited <= LIMIT * 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_408_while_a_request_is_in_flight_or_once_told_of_http2() {
        let (mut client, timer, mut io) = watched(4096);
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

        let (mut client, _, mut io) = watched(4096);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        io.stand_aside();
        let h2 = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(h2.is_err(), "HTTP/2 connections are left alone");
    }
}
