//! Prometheus metrics.
//!
//! Labels are bounded: they come from the snapshot's routes (IngressClass, Ingress, Service,
//! IngressPolicy) and from fixed sets (status class, policy block), never from request data.
//! Requests that match no route are counted under empty route labels.
//!
//! Recording takes no lookup: the handles of a route are resolved once per snapshot into its
//! [`RouteMetrics`], and the process-wide ones are fields of [`Metrics`] (counters and
//! [`Histogram`]s are atomics). When a snapshot is applied, the series of routes it no longer has
//! are removed.
//!
//! Every route has a counter and a histogram per status class from the start, so at 10,000
//! routes the series dominate the proxy's memory: a route's label values and its ten series are
//! one allocation each ([`RouteCells`]), and histograms are a fixed array of atomics.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use portico_otlp::ExportCounters;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::head_timeout::{H2Stream, H2Streams};

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request latency buckets, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label values of a route's series, held once per route: its ten series (a counter and a
/// histogram per status class) and the set of live routes share them.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RouteSeries(Arc<RouteValues>);

#[derive(Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteValues {
    ingress_class: Arc<str>,
    namespace: Arc<str>,
    ingress: Arc<str>,
    service: Arc<str>,
}

impl EncodeLabelSet for RouteSeries {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// An index into [`STATUS_CLASSES`].
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct StatusClass(u8);

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&STATUS_CLASSES[usize::from(self.0)], encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    #[prometheus(flatten)]
    route: RouteSeries,
    status_class: StatusClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    namespace: Arc<str>,
    service: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    /// The IngressPolicy, `namespace/name`.
    policy: Arc<str>,
    /// The block that refused: `rateLimit`, `authentication`, `ipAccess`, ...
    block: &'static str,
}

/// A latency histogram over [`DURATION_BUCKETS`], exported as prometheus-client's `Histogram`
/// is. Lock-free, and 144 bytes where that one, with its bucket vector and native-histogram
/// state, takes over 500: there are five per route.
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Observations per bucket (not cumulative); the last bucket is `+Inf`. Their total is the
    /// count, so the exported count always equals the `+Inf` bucket.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// Records one observation (NaN counts in the `+Inf` bucket).
    pub fn observe(&self, value: f64) {
        self.0.observe(value);
    }
}

impl HistogramCells {
    fn observe(&self, value: f64) {
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|upper| value <= *upper)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0); DURATION_BUCKETS.len() + 1];
        for (i, (upper, count)) in buckets.iter_mut().enumerate() {
            if let Some(bound) = DURATION_BUCKETS.get(i) {
                *upper = *bound;
            }
            *count = self.buckets[i].load(Ordering::Relaxed);
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The request counters and latency histograms of one route's series, one of each per status
/// class, in one allocation.
#[derive(Debug, Default)]
struct RouteCells {
    requests: [AtomicU64; STATUS_CLASSES.len()],
    durations: [HistogramCells; STATUS_CLASSES.len()],
}

/// The series of every route: exported as the `requests` counters ([`RouteRequests`]) and the
/// `request_duration_seconds` histograms ([`RouteDurations`]).
type RouteFamily = Arc<RwLock<HashMap<RouteSeries, Arc<RouteCells>>>>;

/// Encodes each route's series of each status class, as a `Family` of its metric would.
fn encode_routes(
    routes: &RouteFamily,
    encoder: &mut MetricEncoder,
    mut each: impl FnMut(&RouteCells, usize, MetricEncoder) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let routes = routes.read().unwrap_or_else(|e| e.into_inner());
    for (series, cells) in routes.iter() {
        for (i, labels) in series.by_status_class().iter().enumerate() {
            each(cells, i, encoder.encode_family(labels)?)?;
        }
    }
    Ok(())
}

#[derive(Debug)]
struct RouteRequests(RouteFamily);

impl TypedMetric for RouteRequests {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for RouteRequests {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encode_routes(&self.0, &mut encoder, |cells, i, mut encoder| {
            let count = cells.requests[i].load(Ordering::Relaxed);
            encoder.encode_counter::<NoLabelSet, _, u64>(&count, None)
        })
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[derive(Debug)]
struct RouteDurations(RouteFamily);

impl TypedMetric for RouteDurations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for RouteDurations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encode_routes(&self.0, &mut encoder, |cells, i, encoder| {
            cells.durations[i].encode(encoder)
        })
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    routes: RouteFamily,
    /// Upstream latency by Service, resolved per backend by the upstreams.
    pub upstream_durations: UpstreamDurations,
    rejections: Family<RejectionLabels, Counter>,
    /// The route series of the snapshot in force and of the one being built.
    live: Mutex<(Live<RouteSeries>, Live<RejectionLabels>)>,
    /// Requests that matched no route (404, 400, 421).
    unmatched: RouteMetrics,
    /// Open client connections.
    pub active_connections: Gauge,
    /// Failed connection attempts to endpoints.
    pub upstream_connect_errors: Counter,
    /// Version of the snapshot in force.
    pub snapshot_version: Gauge,
    /// Snapshots applied.
    pub snapshot_applies: Counter,
    /// Snapshots refused or failed to build.
    pub snapshot_errors: Counter,
    snapshot_applied_at: SnapshotAge,
    /// Distributed rate-limit checks that fell back to local limits (Redis unreachable/slow).
    pub rate_limit_backend_errors: Counter,
    /// Spans accepted by the OTLP collector, and spans lost on the way.
    pub spans: ExportCounters,
    /// Access log lines lost because stdout could not keep up.
    pub access_log_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `portico_proxy` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portico_proxy");
        let routes = RouteFamily::default();
        registry.register(
            "requests",
            "Requests answered, by IngressClass, Ingress, Service and status class",
            RouteRequests(routes.clone()),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by IngressClass, Ingress, Service and status class",
            RouteDurations(routes.clone()),
        );
        let upstream_durations = UpstreamDurations {
            family: Family::default(),
            live: Arc::default(),
        };
        registry.register(
            "upstream_response_duration_seconds",
            "Time from choosing an endpoint to its response head, per try, by Service",
            upstream_durations.family.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "policy_rejections",
            "Requests refused by an IngressPolicy block (rateLimit 429, authentication 401, ipAccess and clientCertificate 403)",
            rejections.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "Open client connections",
            active_connections.clone(),
        );
        registry.register(
            "active_streams",
            "Requests in progress (HTTP/1.1 exchanges and HTTP/2 streams), until their response body ends",
            ActiveStreams,
        );
        let upstream_connect_errors = Counter::default();
        registry.register(
            "upstream_connect_errors",
            "Failed connection attempts to endpoints",
            upstream_connect_errors.clone(),
        );
        let snapshot_version = Gauge::default();
        registry.register(
            "snapshot_version",
            "Version of the snapshot in force",
            snapshot_version.clone(),
        );
        let snapshot_applied_at = SnapshotAge::default();
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the snapshot in force was applied (0 before the first)",
            snapshot_applied_at.clone(),
        );
        let snapshot_applies = Counter::default();
        registry.register(
            "snapshot_applies",
            "Snapshots applied",
            snapshot_applies.clone(),
        );
        let snapshot_errors = Counter::default();
        registry.register(
            "snapshot_errors",
            "Snapshots refused or failed to build",
            snapshot_errors.clone(),
        );
        let rate_limit_backend_errors = Counter::default();
        registry.register(
            "rate_limit_backend_errors",
            "Distributed rate-limit checks decided locally because Redis did not answer",
            rate_limit_backend_errors.clone(),
        );
        let spans = ExportCounters::registered(&mut registry);
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines lost because stdout could not keep up",
            access_log_dropped.clone(),
        );
        let unmatched = RouteLabels::default();
        let unmatched = route_metrics(
            &routes,
            &rejections,
            &RouteSeries::of(&unmatched),
            &unmatched,
        );
        Self {
            registry,
            routes,
            upstream_durations,
            rejections,
            live: Mutex::default(),
            unmatched,
            active_connections,
            upstream_connect_errors,
            snapshot_version,
            snapshot_applies,
            snapshot_errors,
            snapshot_applied_at,
            rate_limit_backend_errors,
            spans,
            access_log_dropped,
        }
    }

    /// The handles of a route, resolved once per snapshot (before [`Metrics::snapshot_applied`]).
    pub fn route(&self, labels: &RouteLabels) -> RouteMetrics {
        let series = RouteSeries::of(labels);
        let mut live = self.live.lock().unwrap();
        // Routes of one Ingress and Service share their series, and so their label values.
        let series = match live.0.next.get(&series) {
            Some(known) => known.clone(),
            None => {
                live.0.note(series.clone());
                series
            }
        };
        for (block, policy) in &labels.policies {
            live.1.note(RejectionLabels {
                policy: policy.clone(),
                block,
            });
        }
        drop(live);
        route_metrics(&self.routes, &self.rejections, &series, labels)
    }
}

impl RouteSeries {
    fn of(labels: &RouteLabels) -> Self {
        Self(Arc::new(RouteValues {
            ingress_class: labels.ingress_class.clone(),
            namespace: labels.namespace.clone(),
            ingress: labels.ingress.clone(),
            service: labels.service.clone(),
        }))
    }

    /// The labels of its series of each status class.
    fn by_status_class(&self) -> [RequestLabels; STATUS_CLASSES.len()] {
        std::array::from_fn(|i| RequestLabels {
            route: self.clone(),
            status_class: StatusClass(i as u8),
        })
    }
}

fn route_metrics(
    routes: &RouteFamily,
    rejections: &Family<RejectionLabels, Counter>,
    series: &RouteSeries,
    labels: &RouteLabels,
) -> RouteMetrics {
    let mut routes = routes.write().unwrap_or_else(|e| e.into_inner());
    let cells = routes.entry(series.clone()).or_default().clone();
    drop(routes);
    let rejection = |block: &'static str| {
        let policy = labels.policies.iter().find(|(b, _)| *b == block)?;
        Some(
            rejections
                .get_or_create(&RejectionLabels {
                    policy: policy.1.clone(),
                    block,
                })
                .clone(),
        )
    };
    RouteMetrics {
        cells,
        rate_limited: rejection("rateLimit"),
        unauthenticated: rejection("authentication"),
        ip_denied: rejection("ipAccess"),
        cert_denied: rejection("clientCertificate"),
    }
}

impl Metrics {
    /// Requests that matched no route.
    pub fn unmatched(&self) -> &RouteMetrics {
        &self.unmatched
    }

    /// Records that snapshot `version` is now in force.
    /// The series of routes and Services the new snapshot no longer has are removed.
    pub fn snapshot_applied(&self, version: u64) {
        {
            let mut live = self.live.lock().unwrap();
            let gone = live.0.turn();
            if !gone.is_empty() {
                let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
                for series in gone {
                    routes.remove(&series);
                }
            }
            for gone in live.1.turn() {
                self.rejections.remove(&gone);
            }
        }
        self.upstream_durations.turn();
        self.snapshot_version.set(version as i64);
        self.snapshot_applies.inc();
        self.snapshot_applied_at.set_now();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Upstream latency histograms by Service.
#[derive(Debug, Clone)]
pub struct UpstreamDurations {
    family: Family<ServiceLabels, Histogram>,
    live: Arc<Mutex<Live<ServiceLabels>>>,
}

impl UpstreamDurations {
    /// The histogram of a Service, resolved once per snapshot.
    pub fn service(&self, namespace: &str, service: &str) -> Histogram {
        let key = ServiceLabels {
            namespace: namespace.into(),
            service: service.into(),
        };
        let histogram = self.family.get_or_create(&key).clone();
        self.live.lock().unwrap().note(key);
        histogram
    }

    fn turn(&self) {
        for gone in self.live.lock().unwrap().turn() {
            self.family.remove(&gone);
        }
    }
}

/// The label sets of the snapshot in force and of the one being built, so that series of
/// routes that are gone can be removed rather than exported forever.
#[derive(Debug)]
struct Live<S> {
    current: HashSet<S>,
    next: HashSet<S>,
}

impl<S> Default for Live<S> {
    fn default() -> Self {
        Self {
            current: HashSet::new(),
            next: HashSet::new(),
        }
    }
}

impl<S: Clone + Eq + Hash> Live<S> {
    fn note(&mut self, key: S) {
        self.next.insert(key);
    }

    /// The label sets the new snapshot no longer has; the new snapshot's become current.
    fn turn(&mut self) -> Vec<S> {
        let gone = self.current.difference(&self.next).cloned().collect();
        self.current = std::mem::take(&mut self.next);
        gone
    }
}

/// What a route's metrics are labelled with.
#[derive(Debug, Clone, Default)]
pub struct RouteLabels {
    pub ingress_class: Arc<str>,
    pub namespace: Arc<str>,
    pub ingress: Arc<str>,
    /// The backend Service's name (its namespace is the Ingress's).
    pub service: Arc<str>,
    /// The IngressPolicy (`namespace/name`) of each block of the route's policy.
    pub policies: Vec<(&'static str, Arc<str>)>,
}

/// Why an IngressPolicy refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    RateLimit,
    Authentication,
    IpAccess,
    ClientCertificate,
}

/// The metric handles of one route.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    cells: Arc<RouteCells>,
    rate_limited: Option<Counter>,
    unauthenticated: Option<Counter>,
    ip_denied: Option<Counter>,
    cert_denied: Option<Counter>,
}

impl RouteMetrics {
    /// Records one answered request.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.cells.requests[class].fetch_add(1, Ordering::Relaxed);
        self.cells.durations[class].observe(seconds);
    }

    /// Counts a refusal by the route's IngressPolicy.
    pub fn reject(&self, why: Rejection) {
        let counter = match why {
            Rejection::RateLimit => &self.rate_limited,
            Rejection::Authentication => &self.unauthenticated,
            Rejection::IpAccess => &self.ip_denied,
            Rejection::ClientCertificate => &self.cert_denied,
        };
        if let Some(counter) = counter {
            counter.inc();
        }
    }
}

/// In-flight requests: a process-wide atomic, so that a request's guard costs no reference
/// count (HTTP/2 requests also count on their connection, for its idle and slow-read limits).
#[derive(Debug, Clone, Default)]
pub struct ActiveStreams;

static ACTIVE_STREAMS: AtomicI64 = AtomicI64::new(0);

impl ActiveStreams {
    /// Counts a request as active until the guard drops, also on its HTTP/2 connection's
    /// `streams` if it has them.
    pub fn start(streams: Option<&Arc<H2Streams>>) -> StreamGuard {
        ACTIVE_STREAMS.fetch_add(1, Ordering::Relaxed);
        StreamGuard(streams.map(|streams| Box::new(streams.open())))
    }
}

/// One active request; see [`ActiveStreams`]. On HTTP/2, its stream on the connection.
#[derive(Debug)]
pub struct StreamGuard(Option<Box<H2Stream>>);

impl StreamGuard {
    /// The connection asks for the next frame of the response.
    pub fn polling(&self) {
        if let Some(stream) = &self.0 {
            stream.polling();
        }
    }

    /// A frame of the response was handed over, and more are to come.
    pub fn handed(&self) {
        if let Some(stream) = &self.0 {
            stream.handed();
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        ACTIVE_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TypedMetric for ActiveStreams {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for ActiveStreams {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&ACTIVE_STREAMS.load(Ordering::Relaxed))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// When the snapshot in force was applied, shown as an age at scrape time.
#[derive(Debug, Clone, Default)]
struct SnapshotAge(Arc<AtomicU64>);

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SnapshotAge {
    fn set_now(&self) {
        self.0.store(unix_millis(), Ordering::Relaxed);
    }
}

impl TypedMetric for SnapshotAge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for SnapshotAge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let at = self.0.load(Ordering::Relaxed);
        let age = if at == 0 {
            0.0
        } else {
            unix_millis().saturating_sub(at) as f64 / 1000.0
        };
        encoder.encode_gauge(&age)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> RouteLabels {
        RouteLabels {
            ingress_class: "portico".into(),
            namespace: "shop".into(),
            ingress: "web".into(),
            service: "api".into(),
            policies: vec![("rateLimit", "shop/limits".into())],
        }
    }

    /// Our compact histogram writes exactly what prometheus-client's own `Histogram` writes for
    /// the same observations: the buckets are cumulative, `+Inf` equals the count, and the sum
    /// adds up.
    #[test]
    fn the_compact_histogram_encodes_as_the_crates_histogram_does() {
        let values = [
            0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.02, 0.3, 0.9, 4.0, 11.0, 250.0,
        ];
        let ours = Histogram::default();
        let theirs = prometheus_client::metrics::histogram::Histogram::new(DURATION_BUCKETS);
        for v in values {
            ours.observe(v);
            theirs.observe(v);
        }
        fn encode(metric: impl prometheus_client::registry::Metric) -> String {
            let mut registry = Registry::default();
            registry.register("latency", "help", metric);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        }
        let ours = encode(ours);
        assert_eq!(ours, encode(theirs));
        assert!(ours.contains("latency_bucket{le=\"0.001\"} 3\n"), "{ours}");
        assert!(ours.contains("latency_bucket{le=\"+Inf\"} 11\n"), "{ours}");
        assert!(ours.contains("latency_count 11\n"), "{ours}");
    }

    #[test]
    fn routes_are_labelled_by_ingress_service_and_status_class() {
        let m = Metrics::new();
        let route = m.route(&labels());
        route.record(200, 0.001);
        route.record(503, 0.001);
        m.unmatched().record(404, 0.001);
        let text = m.encode();
        assert!(
            text.contains(
                "portico_proxy_requests_total{ingress_class=\"portico\",namespace=\"shop\",ingress=\"web\",service=\"api\",status_class=\"2xx\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "portico_proxy_requests_total{ingress_class=\"\",namespace=\"\",ingress=\"\",service=\"\",status_class=\"4xx\"} 1"
        ));
        assert!(text.contains(
            "portico_proxy_request_duration_seconds_count{ingress_class=\"portico\",namespace=\"shop\",ingress=\"web\",service=\"api\",status_class=\"5xx\"} 1"
        ));
    }

    #[test]
    fn rejections_count_under_the_policy_of_the_block() {
        let m = Metrics::new();
        let route = m.route(&labels());
        route.reject(Rejection::RateLimit);
        route.reject(Rejection::RateLimit);
        // The route has no authentication block: nothing to count it under.
        route.reject(Rejection::Authentication);
        let text = m.encode();
        assert!(
            text.contains(
                "portico_proxy_policy_rejections_total{policy=\"shop/limits\",block=\"rateLimit\"} 2"
            ),
            "{text}"
        );
        assert!(!text.contains("block=\"authentication\""));
    }

    #[test]
    fn series_of_routes_that_are_gone_are_removed() {
        let m = Metrics::new();
        let kept = m.route(&labels());
        let mut other = labels();
        other.ingress = "old".into();
        m.route(&other).record(200, 0.001);
        m.upstream_durations.service("shop", "legacy").observe(0.1);
        m.snapshot_applied(1);
        assert!(m.encode().contains("ingress=\"old\""));
        assert!(m.encode().contains("service=\"legacy\""));
        // The next snapshot has only the first route.
        let again = m.route(&labels());
        m.snapshot_applied(2);
        kept.record(200, 0.001);
        again.record(200, 0.001);
        let text = m.encode();
        assert!(!text.contains("ingress=\"old\""), "{text}");
        assert!(!text.contains("service=\"legacy\""), "{text}");
        assert!(text.contains("ingress=\"web\",service=\"api\",status_class=\"2xx\"} 2"));
        assert!(text.contains("policy=\"shop/limits\""));
        // Unmatched requests keep their series.
        assert!(text.contains("ingress=\"\",service=\"\",status_class=\"4xx\"} 0"));
    }

    #[test]
    fn snapshot_age_and_active_streams() {
        let m = Metrics::new();
        assert!(m.encode().contains("portico_proxy_snapshot_age_seconds 0"));
        m.snapshot_applied(3);
        let text = m.encode();
        assert!(text.contains("portico_proxy_snapshot_version 3"), "{text}");
        assert!(text.contains("portico_proxy_snapshot_applies_total 1"));
        let guard = ActiveStreams::start(None);
        assert!(m.encode().contains("portico_proxy_active_streams "));
        drop(guard);
    }
}
