//! Prometheus metrics. Labels are bounded: status class only, no hosts, paths or routes.
//!
//! The per-request counters are resolved once at start-up, so recording a request takes no
//! lock and no lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusClass {
    class: &'static str,
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by status class, `1xx` to `5xx`.
    by_class: [Counter; 5],
    /// Seconds from request head to response head.
    duration: Histogram,
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
    /// Distributed rate-limit checks that fell back to local limits (Redis unreachable/slow).
    pub rate_limit_backend_errors: Counter,
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
        let requests = Family::<StatusClass, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by status class",
            requests.clone(),
        );
        let by_class = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| requests.get_or_create(&StatusClass { class }).clone());
        let duration = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            duration.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "Open client connections",
            active_connections.clone(),
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
        Self {
            registry,
            by_class,
            duration,
            active_connections,
            upstream_connect_errors,
            snapshot_version,
            snapshot_applies,
            snapshot_errors,
            rate_limit_backend_errors,
        }
    }

    /// Records one answered request.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.duration.observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_classes() {
        let m = Metrics::new();
        m.record(200, 0.001);
        m.record(404, 0.001);
        m.record(503, 0.001);
        let text = m.encode();
        assert!(
            text.contains("portico_proxy_requests_total{class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("portico_proxy_requests_total{class=\"4xx\"} 1"));
        assert!(text.contains("portico_proxy_request_duration_seconds_count 3"));
    }
}
