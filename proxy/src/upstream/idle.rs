//! IngressPolicy `timeouts.idle`: the longest a proxied exchange may go without a byte moving,
//! like Envoy's stream idle timeout and nginx's `proxy_read_timeout`.
//!
//! One [`Activity`] per try is touched by every request body frame sent upstream and every
//! response frame received. The waits watch it lazily: a timer armed for `limit` checks, when it
//! fires, whether anything moved meanwhile and re-arms for the rest, so a busy stream costs an
//! atomic store per frame rather than a timer reset.
//!
//! Before the response head, running out answers 504 ([`crate::error::ProxyError::UpstreamIdle`]);
//! once the head has gone to the client, the response body fails and the client's stream is
//! aborted (HTTP/1.1: the connection is closed; HTTP/2: the stream is reset). The upstream
//! connection is closed either way: it is in the middle of an exchange.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// When bytes last moved in either direction of one try.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last activity.
    last: AtomicU64,
}

impl Activity {
    /// Activity starting now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// Bytes moved.
    pub fn touch(&self) {
        let nanos = self.epoch.elapsed().as_nanos() as u64;
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

/// A timer that fires once `activity` has been still for `limit`.
#[derive(Debug)]
pub struct IdleWatch {
    limit: Duration,
    activity: Arc<Activity>,
    sleep: Pin<Box<Sleep>>,
}

impl IdleWatch {
    pub fn new(limit: Duration, activity: Arc<Activity>) -> Self {
        let sleep = Box::pin(tokio::time::sleep_until(activity.last() + limit));
        Self {
            limit,
            activity,
            sleep,
        }
    }

    /// The limit watched.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Bytes moved.
    pub fn touch(&self) {
        self.activity.touch();
    }

    /// Ready once nothing has moved for the limit; registers for a wake-up otherwise.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let deadline = self.activity.last() + self.limit;
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

/// Runs `work` unless the exchange goes idle first: `None` then.
///
/// A named future rather than an `async fn`: this wraps each request's upstream exchange, and an
/// `async fn` would hold `work` twice (argument and pinned local), making every future around it
/// larger and costlier to move.
pub fn within<F: Future>(watch: Option<&mut IdleWatch>, work: F) -> Within<'_, F> {
    Within { watch, work }
}

pin_project_lite::pin_project! {
    /// The future of [`within`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Within<'w, F> {
        watch: Option<&'w mut IdleWatch>,
        #[pin]
        work: F,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Some(out));
        }
        match this.watch {
            Some(watch) => watch.poll_expired(cx).map(|()| None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn activity_postpones_the_deadline_and_silence_ends_the_wait() {
        let activity = Activity::new();
        let mut watch = IdleWatch::new(Duration::from_millis(300), activity.clone());
        // Bytes every 200 ms keep a 1 s wait alive past the 300 ms limit.
        let toucher = activity.clone();
        let ticking = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                toucher.touch();
            }
        });
        let started = Instant::now();
        let done = within(
            Some(&mut watch),
            tokio::time::sleep(Duration::from_millis(1_000)),
        )
        .await;
        assert!(done.is_some());
        ticking.await.unwrap();
        // Then silence: cut 300 ms after the last byte (at 1 s), not after the 5 s of work.
        let cut = within(Some(&mut watch), tokio::time::sleep(Duration::from_secs(5))).await;
        assert!(cut.is_none());
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(1_300) && elapsed < Duration::from_millis(1_400));
        assert!(within(None, async { 1 }).await == Some(1));
    }
}
