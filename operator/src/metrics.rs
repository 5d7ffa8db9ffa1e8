//! Prometheus metrics. Labels are bounded: object kinds, IngressClasses of this controller, and
//! the proxy pods currently known to the hub; no Ingress or request ever makes a label.

use portico_distribute::server::Hub;
use portico_otlp::ExportCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Watch events applied to the index, by kind.
    pub watch_events: Family<KindLabel, Counter>,
    /// Objects skipped because they did not decode, by kind.
    pub decode_errors: Family<KindLabel, Counter>,
    /// Watch stream errors (each retried with backoff), by kind.
    pub watch_errors: Family<KindLabel, Counter>,
    /// Translations run.
    pub translations: Counter,
    /// Seconds per translation.
    pub translation_duration: Histogram,
    /// Classes with a published snapshot.
    pub classes: Gauge,
    /// Proxies with an open snapshot stream.
    pub proxies_connected: Gauge,
    /// Spans accepted by the OTLP collector, and spans lost on the way.
    pub spans: ExportCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameKind {
    kind: &'static str,
}

/// Reads the hub's counters at scrape time.
#[derive(Debug)]
struct SentCollector(Hub);

impl Collector for SentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sent = self.0.sent();
        for (name, help, full, backends) in [
            (
                "snapshot_frames_sent",
                "Snapshot frames sent to proxies, by kind (full or backends delta)",
                sent.full_frames,
                sent.delta_frames,
            ),
            (
                "snapshot_bytes_sent",
                "Snapshot bytes sent to proxies, by kind (full or backends delta)",
                sent.full_bytes,
                sent.delta_bytes,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (kind, value) in [("full", full), ("backends", backends)] {
                ConstCounter::new(value).encode(family.encode_family(&FrameKind { kind })?)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    ingress_class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxiesLabels {
    ingress_class: String,
    /// `current`: applied the class's current version; `behind`: connected, not yet.
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    ingress_class: String,
    proxy: String,
}

/// Reads, at scrape time, each class's published version and size and where its proxies are.
#[derive(Debug)]
struct RolloutCollector(Hub);

impl Collector for RolloutCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let classes = self.0.classes();
        let class = |c: &str| ClassLabel {
            ingress_class: c.to_owned(),
        };
        let mut family = encoder.encode_descriptor(
            "snapshot_version",
            "Version of the snapshot each IngressClass is served",
            None,
            MetricType::Gauge,
        )?;
        for c in &classes {
            if let Some(version) = self.0.version(c) {
                ConstGauge::new(version as i64).encode(family.encode_family(&class(c))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "snapshot_bytes",
            "Size in bytes of the full frame of each IngressClass's current snapshot, as sent to proxies",
            None,
            MetricType::Gauge,
        )?;
        for c in &classes {
            if let Some(bytes) = self.0.full_frame_len(c) {
                ConstGauge::new(bytes as i64).encode(family.encode_family(&class(c))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "proxies",
            "Connected proxies per IngressClass: current (applied its snapshot version) or behind",
            None,
            MetricType::Gauge,
        )?;
        for c in &classes {
            let Some(rollout) = self.0.rollout(c) else {
                continue;
            };
            for (state, n) in [
                ("current", rollout.applied),
                ("behind", rollout.connected - rollout.applied),
            ] {
                let labels = ProxiesLabels {
                    ingress_class: c.clone(),
                    state,
                };
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        let acks = self.0.acks().borrow().clone();
        let mut family = encoder.encode_descriptor(
            "proxy_applied_version",
            "Snapshot version each connected proxy acknowledged applying",
            None,
            MetricType::Gauge,
        )?;
        for (c, proxies) in &acks {
            for (proxy, ack) in proxies {
                let (true, Some(version)) = (ack.connected, ack.version) else {
                    continue;
                };
                let labels = ProxyLabels {
                    ingress_class: c.clone(),
                    proxy: proxy.clone(),
                };
                ConstGauge::new(version as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    /// Registers every metric under the `portico_operator` prefix, with the frames and bytes
    /// `hub` sends and the versions it serves and its proxies applied.
    pub fn with_hub(hub: Hub) -> Self {
        let mut metrics = Self::new();
        metrics
            .registry
            .register_collector(Box::new(SentCollector(hub.clone())));
        metrics
            .registry
            .register_collector(Box::new(RolloutCollector(hub)));
        metrics
    }

    /// Registers every metric under the `portico_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portico_operator");
        let watch_events = Family::<KindLabel, Counter>::default();
        registry.register(
            "watch_events",
            "Watch events applied to the index, by kind",
            watch_events.clone(),
        );
        let decode_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "decode_errors",
            "Objects skipped because they did not decode, by kind",
            decode_errors.clone(),
        );
        let watch_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "watch_errors",
            "Watch stream errors, retried with backoff, by kind",
            watch_errors.clone(),
        );
        let translations = Counter::default();
        registry.register("translations", "Translations run", translations.clone());
        let translation_duration =
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register(
            "translation_duration_seconds",
            "Seconds per translation",
            translation_duration.clone(),
        );
        let classes = Gauge::default();
        registry.register(
            "classes",
            "IngressClasses with a published snapshot",
            classes.clone(),
        );
        let proxies_connected = Gauge::default();
        registry.register(
            "proxies_connected",
            "Proxies with an open snapshot stream",
            proxies_connected.clone(),
        );
        let spans = ExportCounters::registered(&mut registry);
        Self {
            registry,
            watch_events,
            decode_errors,
            watch_errors,
            translations,
            translation_duration,
            classes,
            proxies_connected,
            spans,
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use portico_api::Snapshot;

    use super::*;

    /// Every operator metric the Grafana dashboard queries is one the operator exports (each
    /// family given a value first: empty families are not written).
    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let hub = Hub::new();
        let metrics = Metrics::with_hub(hub.clone());
        hub.publish("portico", Snapshot::empty("portico"));
        let kind = KindLabel { kind: "Ingress" };
        metrics.watch_events.get_or_create(&kind).inc();
        metrics.watch_errors.get_or_create(&kind).inc();
        metrics.decode_errors.get_or_create(&kind).inc();
        let text = metrics.encode();
        assert!(
            text.contains("portico_operator_snapshot_version{ingress_class=\"portico\"} 1"),
            "{text}"
        );
        assert!(text.contains("portico_operator_snapshot_bytes{ingress_class=\"portico\"} "));

        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let dashboard = include_str!("../../config/grafana/portico-dashboard.json");
        let mut queried = 0;
        for (i, _) in dashboard.match_indices("portico_operator_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(families.contains(&family), "{name} is not exported");
            queried += 1;
        }
        assert!(queried >= 7, "{queried}");
    }
}
