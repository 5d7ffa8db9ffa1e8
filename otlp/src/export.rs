//! Batch export of finished spans, off the request path (and off the reconcile loop).
//!
//! Ending a span only tries to put it on a bounded queue: when the queue is full (the collector
//! is slow or gone), the span is dropped and counted, and the request carries on. A task on the
//! runtime takes spans off the queue and sends them in batches, each within a timeout; a batch
//! the collector refuses or does not take in time is dropped and counted too.
//!
//! The SDK has a batch processor of its own, but it counts drops where no metric can see them,
//! and runs the exporter on a thread of its own where the tonic and hyper clients cannot run.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

/// Queue and batch sizes (`OTEL_BSP_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSettings {
    /// Most spans waiting for export; more are dropped.
    pub max_queue: usize,
    /// Most spans sent at once.
    pub max_batch: usize,
    /// Longest a span waits before its batch is sent.
    pub delay: Duration,
    /// Longest one export may take.
    pub timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of what became of the spans.
#[derive(Debug, Clone, Default)]
pub struct ExportCounters {
    pub exported: Counter,
    pub dropped: Counter,
}

impl ExportCounters {
    /// New counters, registered in `registry` as `trace_spans_exported` and
    /// `trace_spans_dropped` (the registry adds its prefix).
    pub fn registered(registry: &mut Registry) -> Self {
        let counters = Self::default();
        registry.register(
            "trace_spans_exported",
            "Spans accepted by the OTLP collector",
            counters.exported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans lost: export queue full, collector unreachable, failing or too slow",
            counters.dropped.clone(),
        );
        counters
    }
}

/// The span processor: queues sampled spans for [`run`].
#[derive(Debug)]
pub struct Batcher {
    spans: mpsc::Sender<SpanData>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    dropped: Counter,
}

/// Asks the export task to send everything queued so far.
#[derive(Debug, Clone)]
pub struct Flusher(mpsc::Sender<oneshot::Sender<()>>);

impl Flusher {
    /// Sends what is queued, waiting at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.0.try_send(done).is_ok() {
            let _ = tokio::time::timeout(timeout, wait).await;
        }
    }
}

impl Batcher {
    /// Spawns the export task on the current runtime.
    pub fn start(
        exporter: SpanExporter,
        settings: BatchSettings,
        counters: ExportCounters,
    ) -> (Self, Flusher) {
        let (spans, queue) = mpsc::channel(settings.max_queue.max(1));
        let (flush, flushes) = mpsc::channel(1);
        let dropped = counters.dropped.clone();
        tokio::spawn(run(exporter, queue, flushes, settings, counters));
        let flusher = Flusher(flush.clone());
        (
            Self {
                spans,
                flush,
                dropped,
            },
            flusher,
        )
    }
}

impl SpanProcessor for Batcher {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Asynchronous: the export task sends what it has without waiting for the delay.
        let (done, _) = oneshot::channel();
        let _ = self.flush.try_send(done);
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.force_flush()
    }
}

async fn run(
    exporter: SpanExporter,
    mut queue: mpsc::Receiver<SpanData>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    settings: BatchSettings,
    counters: ExportCounters,
) {
    let mut out = Out {
        exporter,
        batch: Vec::with_capacity(settings.max_batch),
        settings,
        counters,
        failing: false,
    };
    let mut tick = tokio::time::interval(out.settings.delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = queue.recv() => match span {
                Some(span) => {
                    out.batch.push(span);
                    if out.batch.len() >= out.settings.max_batch {
                        out.send().await;
                    }
                }
                None => {
                    out.send().await;
                    return;
                }
            },
            _ = tick.tick() => out.send().await,
            Some(done) = flushes.recv() => {
                while let Ok(span) = queue.try_recv() {
                    out.batch.push(span);
                    if out.batch.len() >= out.settings.max_batch {
                        out.send().await;
                    }
                }
                out.send().await;
                let _ = done.send(());
            }
        }
    }
}

struct Out {
    exporter: SpanExporter,
    batch: Vec<SpanData>,
    settings: BatchSettings,
    counters: ExportCounters,
    /// The last export failed: the next failure is not logged again.
    failing: bool,
}

impl Out {
    async fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.settings.max_batch));
        let result = tokio::time::timeout(self.settings.timeout, self.exporter.export(batch)).await;
        let error = match result {
            Ok(Ok(())) => {
                self.counters.exported.inc_by(n);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("trace export recovered");
                }
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.timeout),
        };
        self.counters.dropped.inc_by(n);
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(%error, spans = n, "trace export failed; spans are dropped until the collector answers");
        } else {
            tracing::debug!(%error, spans = n, "trace export failed");
        }
    }
}
