//! The response body type: an upstream body streamed frame by frame, or a small fixed body.
//!
//! An enum rather than a boxed body so that no response allocates for its body. While an
//! upstream body streams, polling it drives the HTTP/1.1 connection its [`Lease`] holds; when
//! the body ends, the lease hands the connection back to the pool; when the body is dropped
//! early, the lease drops the connection instead. Under the route's `timeouts.idle`, a body
//! that receives nothing for that long fails, which aborts the client's stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::{IdleWatch, Lease};

/// Why a response body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The upstream connection or stream failed.
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// Nothing arrived for the route's `timeouts.idle`.
    #[error("upstream sent nothing for {0:?}: stream aborted")]
    Idle(Duration),
}

/// Body of every response the proxy sends.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    /// Held until the body is dropped (an in-flight permit of the concurrency limit).
    guard: Option<Guard>,
}

/// Something a response body keeps alive while it streams.
struct Guard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        /// Released at the end of the stream, dropped with the body otherwise.
        lease: Option<Lease>,
        /// The route's idle timeout, if it has one.
        idle: Option<Box<IdleWatch>>,
    },
}

impl ProxyBody {
    /// A fixed body.
    pub fn full(bytes: Bytes) -> Self {
        let bytes = (!bytes.is_empty()).then_some(bytes);
        Self {
            kind: Kind::Full(bytes),
            guard: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            guard: None,
        }
    }

    /// A body streamed from an upstream. `lease` is released when the body ends; a body
    /// already at its end drops it (the caller released it).
    pub fn upstream(body: Incoming, lease: Lease) -> Self {
        let lease = (!body.is_end_stream()).then_some(lease);
        Self {
            kind: Kind::Upstream {
                body,
                lease,
                idle: None,
            },
            guard: None,
        }
    }

    /// Fails the body once nothing has arrived for the watch's limit (an upstream body only).
    pub fn with_idle(mut self, watch: IdleWatch) -> Self {
        if let Kind::Upstream { idle, .. } = &mut self.kind {
            *idle = Some(Box::new(watch));
        }
        self
    }

    /// Keeps `guard` alive until the body is dropped (after its last frame, or when the client
    /// goes away).
    pub fn with_guard(mut self, guard: impl Send + Sync + 'static) -> Self {
        self.guard = Some(Guard(Box::new(guard)));
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, lease, idle } => {
                let mut polled = Pin::new(&mut *body).poll_frame(cx);
                // Nothing buffered: the connection reads more into the body, in this task.
                if polled.is_pending() && lease.as_mut().is_some_and(|l| l.drive(cx)) {
                    polled = Pin::new(&mut *body).poll_frame(cx);
                }
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(mut lease) = lease.take() {
                            lease.release(cx);
                        }
                    }
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => {
                        if let Some(mut lease) = lease.take() {
                            lease.release(cx);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => drop(lease.take()),
                    Poll::Pending => {
                        if let Some(watch) = idle
                            && watch.poll_expired(cx).is_ready()
                        {
                            let limit = watch.limit();
                            tracing::debug!(?limit, "upstream idle mid-body: aborting the stream");
                            // The body and its connection, mid-exchange, are dropped: closed,
                            // never pooled.
                            this.kind = Kind::Full(None);
                            return Poll::Ready(Some(Err(StreamError::Idle(limit))));
                        }
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                }
                if let (Poll::Ready(Some(Ok(_))), Some(watch)) = (&polled, idle) {
                    watch.touch();
                }
                polled.map(|f| f.map(|r| r.map_err(StreamError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_and_empty() {
        let b = ProxyBody::full(Bytes::from_static(b"no route\n"));
        assert_eq!(b.size_hint().exact(), Some(9));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "no route\n");
        let e = ProxyBody::empty();
        assert!(e.is_end_stream());
        assert_eq!(e.size_hint().exact(), Some(0));
    }
}
