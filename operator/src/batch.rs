//! The shared index and the batch loop: changes are held briefly, translated once, and each
//! class's snapshot published to the hub.
//!
//! Sources (the watchers, or the manifests directory) mutate the index under its lock and bump
//! a change counter. Nothing is translated before every source has delivered its first
//! complete list: a snapshot of a half-listed cluster would withdraw routes from proxies.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portico_distribute::server::Hub;
use portico_translate::{Index, Kind, Options, Output, translate};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The index every source feeds, and what has been heard from them.
#[derive(Debug)]
pub struct Shared {
    pub(crate) index: Mutex<Index>,
    changes: watch::Sender<u64>,
    /// Sources that have not delivered their first complete list yet.
    pending: watch::Sender<BTreeSet<String>>,
}

impl Shared {
    /// An empty index waiting for the named sources.
    pub fn new(sources: impl IntoIterator<Item = String>) -> Arc<Self> {
        Arc::new(Self {
            index: Mutex::default(),
            changes: watch::Sender::new(0),
            pending: watch::Sender::new(sources.into_iter().collect()),
        })
    }

    /// Runs `f` on the index and, when it returns true, wakes the batch loop.
    pub fn update(&self, f: impl FnOnce(&mut Index) -> bool) {
        let changed = f(&mut self.index.lock().unwrap());
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Records that `source` delivered a complete list.
    pub fn synced(&self, source: &str) {
        self.pending.send_if_modified(|p| p.remove(source));
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// True once every source has listed.
    pub fn is_synced(&self) -> bool {
        self.pending.borrow().is_empty()
    }

    async fn wait_synced(&self) {
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(BTreeSet::is_empty).await;
    }
}

/// Empties one kind's map, before a fresh list of it is applied.
pub fn clear_kind(index: &mut Index, kind: Kind) {
    match kind {
        Kind::IngressClass => index.ingress_classes.clear(),
        Kind::Ingress => index.ingresses.clear(),
        Kind::Service => index.services.clear(),
        Kind::EndpointSlice => index.endpoint_slices.clear(),
        Kind::Secret => index.secrets.clear(),
        Kind::ConfigMap => index.config_maps.clear(),
        Kind::IngressPolicy => index.policies.clear(),
    }
}

/// What the last translation produced, for the status writer.
#[derive(Debug, Clone, Default)]
pub struct Translated {
    /// Ingress reports and IngressPolicy statuses. `output.snapshots` is left empty: the
    /// snapshots live in the [`Hub`], which streams them.
    pub output: Output,
    /// The version now published for each class: a class is programmed on a proxy once the
    /// proxy's ack (see [`Hub::acks`]) reaches it.
    pub versions: std::collections::BTreeMap<String, u64>,
}

/// Proxy replicas per class, as the provisioning controller runs them; carried in each
/// class's snapshot for `DividedAmongReplicas` rate limits. A class not listed gets 1.
pub type ClassReplicas = std::collections::BTreeMap<String, u32>;

/// Classes whose ProxyClass names a platform namespace of its own (for IngressPolicy
/// `overrides`), by class. Classes not listed use the operator's namespace.
pub type ClassPlatforms = std::collections::BTreeMap<String, String>;

/// Timing of the batch loop.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Quiet time after a change.
    pub delay: Duration,
    /// Longest a stream of changes can postpone a translation.
    pub max_delay: Duration,
}

/// Translates and publishes after every batch of changes (to the index, `replicas` or
/// `platforms`), for ever.
#[allow(clippy::too_many_arguments)] // each is one input of the loop; a struct would only rename them
pub async fn run(
    shared: Arc<Shared>,
    options: Options,
    batching: Batching,
    hub: Hub,
    replicas: watch::Receiver<ClassReplicas>,
    platforms: watch::Receiver<ClassPlatforms>,
    translated: watch::Sender<Arc<Translated>>,
    metrics: Arc<Metrics>,
) {
    {
        let (shared, mut replicas) = (shared.clone(), replicas.clone());
        tokio::spawn(async move {
            while replicas.changed().await.is_ok() {
                shared.update(|_| true);
            }
        });
    }
    {
        let (shared, mut platforms) = (shared.clone(), platforms.clone());
        tokio::spawn(async move {
            while platforms.changed().await.is_ok() {
                shared.update(|_| true);
            }
        });
    }
    shared.wait_synced().await;
    let mut changes = shared.changes.subscribe();
    loop {
        changes.borrow_and_update();
        // One span per pass: the translation and the publishing are its children; each
        // snapshot published is an event on it.
        let pass = tracing::info_span!(
            "translation pass",
            portico.ingresses = tracing::field::Empty,
            portico.classes = tracing::field::Empty,
            portico.routes = tracing::field::Empty,
            portico.warnings = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        let shared2 = shared.clone();
        let mut options2 = options.clone();
        options2.class_platform_namespaces = platforms.borrow().clone();
        let started = Instant::now();
        let translating = tracing::info_span!(parent: &pass, "translate");
        let output = tokio::task::spawn_blocking(move || {
            translating.in_scope(|| {
                let index = shared2.index.lock().unwrap();
                translate(&index, &options2)
            })
        })
        .await;
        let mut output = match output {
            Ok(output) => output,
            Err(e) => {
                pass.in_scope(|| {
                    tracing::error!(error = %e, "translation failed; keeping the published snapshots");
                });
                pass.record("otel.status_description", e.to_string().as_str());
                drop(pass);
                wait_batch(&mut changes, batching).await;
                continue;
            }
        };
        metrics.translations.inc();
        metrics
            .translation_duration
            .observe(started.elapsed().as_secs_f64());
        let mut warnings = 0;
        for (ingress, report) in &output.ingresses {
            for w in &report.warnings {
                warnings += 1;
                tracing::debug!(%ingress, reason = %w.reason, "{}", w.message);
            }
        }

        pass.in_scope(|| {
            let _publishing = tracing::info_span!("publish").entered();
            let snapshots = std::mem::take(&mut output.snapshots);
            let mut versions = std::collections::BTreeMap::new();
            let mut all_routes = 0;
            for (class, mut snapshot) in snapshots {
                snapshot.replicas = replicas.borrow().get(&class).copied().unwrap_or(1).max(1);
                let routes = snapshot.route_count();
                all_routes += routes;
                let before = hub.version(&class);
                let version = hub.publish(&class, snapshot);
                if before != Some(version) {
                    tracing::info!(%class, version, routes, "snapshot published");
                }
                versions.insert(class, version);
            }
            for class in hub.classes() {
                if !versions.contains_key(&class) {
                    tracing::info!(%class, "class no longer served; retiring its snapshot");
                    hub.retire(&class);
                }
            }
            metrics.classes.set(versions.len() as i64);
            pass.record("portico.ingresses", output.ingresses.len());
            pass.record("portico.classes", versions.len());
            pass.record("portico.routes", all_routes);
            pass.record("portico.warnings", warnings);
            translated.send_replace(Arc::new(Translated { output, versions }));
        });
        drop(pass);

        if !wait_batch(&mut changes, batching).await {
            return;
        }
    }
}

/// Waits for a change, then for `delay` without one (at most `max_delay` in all). False when
/// every source is gone.
async fn wait_batch(changes: &mut watch::Receiver<u64>, batching: Batching) -> bool {
    if changes.changed().await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + batching.max_delay;
    loop {
        let quiet = tokio::time::sleep(batching.delay);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return true;
                }
                if tokio::time::Instant::now() >= deadline {
                    return true;
                }
            }
            () = quiet => return true,
            () = tokio::time::sleep_until(deadline) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_one_batch_bounded_by_the_max_delay() {
        let (tx, mut rx) = watch::channel(0u64);
        let batching = Batching {
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        // Changes every 50 ms for 5 s: the batch closes at the max delay, not at the end.
        let writer = tokio::spawn(async move {
            for i in 0..100 {
                tx.send_replace(i);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = tokio::time::Instant::now();
        assert!(wait_batch(&mut rx, batching).await);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
            "{waited:?}"
        );
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_change_waits_only_the_quiet_time() {
        let (tx, mut rx) = watch::channel(0u64);
        let batching = Batching {
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        tx.send_replace(1);
        let start = tokio::time::Instant::now();
        assert!(wait_batch(&mut rx, batching).await);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        drop(tx);
    }

    fn class(name: &str) -> portico_translate::Object {
        let text = format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {name}}}\nspec: {{controller: portico.dev/ingress-controller}}\n"
        );
        portico_translate::parse_manifests(&text, "default")
            .objects
            .remove(0)
    }

    #[tokio::test]
    async fn nothing_is_published_before_every_source_listed_and_gone_classes_retire() {
        let shared = Shared::new(["IngressClass".to_owned(), "Ingress".to_owned()]);
        let hub = Hub::with_epoch("e");
        let (tx, mut translated) = watch::channel(Arc::new(Translated::default()));
        let (replicas, replicas_rx) = watch::channel(ClassReplicas::new());
        let batching = Batching {
            delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        };
        tokio::spawn(run(
            shared.clone(),
            Options::default(),
            batching,
            hub.clone(),
            replicas_rx,
            watch::channel(ClassPlatforms::new()).1,
            tx,
            Arc::new(Metrics::new()),
        ));
        shared.update(|index| {
            index.apply(class("web"));
            index.apply(class("internal"));
            true
        });
        shared.synced("IngressClass");
        // Longer than a whole batch: had the loop not waited, it would have published.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(hub.classes().is_empty(), "Ingresses have not listed yet");

        shared.synced("Ingress");
        let wait = Duration::from_secs(1);
        tokio::time::timeout(wait, translated.changed())
            .await
            .unwrap()
            .unwrap();
        let versions = translated.borrow_and_update().versions.clone();
        assert_eq!(versions.keys().collect::<Vec<_>>(), ["internal", "web"]);
        assert_eq!(hub.classes().len(), 2);
        assert!(
            translated.borrow().output.snapshots.is_empty(),
            "snapshots live in the hub"
        );

        shared.update(|index| {
            index.remove(
                Kind::IngressClass,
                &portico_translate::ObjectKey::new("", "internal"),
            )
        });
        tokio::time::timeout(wait, translated.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            translated.borrow().versions.keys().collect::<Vec<_>>(),
            ["web"]
        );
        assert_eq!(hub.classes().into_iter().collect::<Vec<_>>(), ["web"]);
        assert_eq!(
            hub.version("web"),
            Some(1),
            "an unchanged class keeps its version"
        );

        // The provisioning controller scales the class: a new version saying so.
        replicas.send_replace(ClassReplicas::from([("web".to_owned(), 3)]));
        tokio::time::timeout(wait, translated.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(translated.borrow().versions["web"], 2);
        assert_eq!(hub.snapshot("web").unwrap().replicas, 3);
        assert_eq!(hub.snapshot("internal"), None);
    }

    #[test]
    fn endpoint_churn_changes_only_backends_so_it_travels_as_a_delta() {
        let manifests = |port: u16| {
            format!(
                "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: web}}
spec: {{controller: portico.dev/ingress-controller}}
---
apiVersion: v1
kind: Service
metadata: {{name: shop, namespace: shop}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: shop-1, namespace: shop, labels: {{kubernetes.io/service-name: shop}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [10.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  ingressClassName: web
  rules:
  - host: shop.example
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: shop, port: {{number: 80}}}}}}}}
"
            )
        };
        let snapshot = |port| {
            let index = Index::from_objects(
                portico_translate::parse_manifests(&manifests(port), "default").objects,
            );
            translate(&index, &Options::default())
                .snapshots
                .remove("web")
                .unwrap()
        };
        let (before, after) = (snapshot(8080), snapshot(9090));
        assert_ne!(before.backends, after.backends);
        assert!(portico_distribute::protocol::same_routing(&before, &after));
    }
}
