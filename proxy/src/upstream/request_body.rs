//! The body sent upstream: the client's, streamed (optionally under a size limit), a buffered
//! copy (a request that may be retried), or nothing (a replayed bodiless request). A streamed
//! body under the route's idle timeout reports each frame to it. The client's body tells its
//! HTTP/1.1 connection while the client still owes part of it ([`ClientBody`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::idle::Activity;
use crate::head_timeout::HeadTimer;

/// Body of every request the route stacks handle and send upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed as it arrives.
    Client(Incoming),
    /// The client's body on HTTP/1.1, while the client owes part of it ([`ClientBody`]). Boxed,
    /// like the other variants larger than `Incoming`: requests move often, and a larger body
    /// makes each move cost more.
    Owed(Box<ClientBody>),
    /// The client's body under a byte limit (IngressPolicy `body`).
    Limited(Box<Limited>),
    /// A body held in memory, sent whole (a request that may be sent more than once).
    Buffered(Option<Bytes>),
    /// No body.
    Empty,
    /// A streamed body whose frames count as activity for `timeouts.idle`.
    Watched(Box<(RequestBody, Arc<Activity>)>),
}

impl RequestBody {
    /// The client's body `inner`, owed on the HTTP/1.1 connection of `timer` unless it is
    /// empty.
    pub fn client(inner: Incoming, timer: Option<&Arc<HeadTimer>>) -> Self {
        match timer {
            Some(timer) if !inner.is_end_stream() => {
                Self::Owed(Box::new(ClientBody::new(inner, Some(timer))))
            }
            _ => Self::Client(inner),
        }
    }

    /// This body, its frames touching `activity` if it streams.
    pub(super) fn watched(self, activity: &Arc<Activity>) -> Self {
        match self {
            Self::Client(_) | Self::Owed(_) | Self::Limited(_) => {
                Self::Watched(Box::new((self, activity.clone())))
            }
            other => other,
        }
    }
}

/// The client's body. On HTTP/1.1 its connection's [`HeadTimer`] knows, until the body has
/// been read whole or given up, that the client owes bytes: a client that stops sending them is
/// timed out, a proxy waiting on its upstream is not.
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    owed: Option<Arc<HeadTimer>>,
}

impl ClientBody {
    /// `inner`, owed on the connection of `timer` unless it is empty.
    pub fn new(inner: Incoming, timer: Option<&Arc<HeadTimer>>) -> Self {
        let owed = timer.filter(|_| !inner.is_end_stream()).cloned();
        if let Some(timer) = &owed {
            timer.body_owed();
        }
        Self { inner, owed }
    }

    fn settle(&mut self) {
        if let Some(timer) = self.owed.take() {
            timer.body_settled();
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.settle();
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let settled = match &polled {
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if settled {
            self.settle();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("client body: {0}")]
    Client(#[from] hyper::Error),
    /// The body grew past the route's limit while streaming.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
}

/// A streamed body that fails once more than `max` bytes have arrived, and says so through
/// a flag the body-limit layer reads to answer 413 rather than 502.
#[derive(Debug)]
pub struct Limited {
    inner: ClientBody,
    max: u64,
    seen: u64,
    tripped: Arc<AtomicBool>,
}

impl Limited {
    /// `inner` limited to `max` bytes; `tripped` is set when the limit is crossed.
    pub fn new(inner: ClientBody, max: u64, tripped: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            max,
            seen: 0,
            tripped,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Client(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            Self::Owed(body) => Pin::new(&mut **body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            Self::Limited(limited) => {
                let polled = Pin::new(&mut limited.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled
                    && let Some(data) = frame.data_ref()
                {
                    limited.seen += data.len() as u64;
                    if limited.seen > limited.max {
                        limited.tripped.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limited.max))));
                    }
                }
                polled.map(|f| f.map(|r| r.map_err(BodyError::from)))
            }
            Self::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Empty => Poll::Ready(None),
            Self::Watched(watched) => {
                let (body, activity) = &mut **watched;
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(_))) = &polled {
                    activity.touch();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Client(body) => body.is_end_stream(),
            Self::Owed(body) => body.is_end_stream(),
            Self::Limited(limited) => limited.inner.is_end_stream(),
            Self::Buffered(bytes) => bytes.is_none(),
            Self::Empty => true,
            Self::Watched(watched) => watched.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Client(body) => body.size_hint(),
            Self::Owed(body) => body.size_hint(),
            Self::Limited(limited) => limited.inner.size_hint(),
            Self::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Self::Empty => SizeHint::with_exact(0),
            Self::Watched(watched) => watched.0.size_hint(),
        }
    }
}
