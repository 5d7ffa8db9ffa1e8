//! The body sent upstream: the client's, streamed (optionally under a size limit), a buffered
//! copy (a request that may be retried), or nothing (a replayed bodiless request). A streamed
//! body under the route's idle timeout reports each frame to it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::idle::Activity;

/// Body of every request the route stacks handle and send upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed as it arrives.
    Client(Incoming),
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
    /// This body, its frames touching `activity` if it streams.
    pub(super) fn watched(self, activity: &Arc<Activity>) -> Self {
        match self {
            Self::Client(_) | Self::Limited(_) => Self::Watched(Box::new((self, activity.clone()))),
            other => other,
        }
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
    inner: Incoming,
    max: u64,
    seen: u64,
    tripped: Arc<AtomicBool>,
}

impl Limited {
    /// `inner` limited to `max` bytes; `tripped` is set when the limit is crossed.
    pub fn new(inner: Incoming, max: u64, tripped: Arc<AtomicBool>) -> Self {
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
            Self::Limited(limited) => limited.inner.is_end_stream(),
            Self::Buffered(bytes) => bytes.is_none(),
            Self::Empty => true,
            Self::Watched(watched) => watched.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Client(body) => body.size_hint(),
            Self::Limited(limited) => limited.inner.size_hint(),
            Self::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Self::Empty => SizeHint::with_exact(0),
            Self::Watched(watched) => watched.0.size_hint(),
        }
    }
}
