//! Wiring: every part of the operator, started in order, until SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use portico_distribute::pki::{Pki, PkiError};
use portico_distribute::server::{self, Acks, Authenticator, Hub, ServeOptions, StaticToken};
use portico_translate::Options;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::batch::{self, Batching, ClassPlatforms, ClassReplicas, Shared, Translated};
use crate::cli::Cli;
use crate::manifests::{self, ManifestsError};
use crate::metrics::Metrics;
use crate::pki_secret::{self, PkiSecretError};
use crate::tokenreview::TokenReviewer;

/// Why the operator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Manifests(#[from] ManifestsError),
    #[error("cannot read the static token file {path}: {why}")]
    Token { path: String, why: String },
    #[error("cannot set up the certificates: {0}")]
    Pki(#[from] PkiError),
    #[error("cannot set up the certificates: {0}")]
    PkiSecret(#[from] PkiSecretError),
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

impl RunError {
    /// 2 for a configuration the user must fix, 1 otherwise.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Manifests(_) | Self::Token { .. } => 2,
            _ => 1,
        }
    }
}

/// What the status writer and the provisioning controller work from.
#[derive(Clone)]
pub struct Handles {
    /// The Kubernetes client; `None` in development mode.
    pub client: Option<kube::Client>,
    /// The operator's namespace.
    pub namespace: String,
    /// The published snapshots; [`Hub::acks`] says which proxy applied which version.
    pub hub: Hub,
    /// The latest translation: Ingress reports, IngressPolicy statuses and each class's
    /// published version. Changes after every batch that changed something.
    pub translated: watch::Receiver<Arc<Translated>>,
    /// Proxy replicas per class, for the provisioning controller to keep current: each class's
    /// snapshot carries its count (for `DividedAmongReplicas` rate limits).
    pub replicas: Arc<watch::Sender<ClassReplicas>>,
    /// Platform namespaces of classes whose ProxyClass names one.
    pub platforms: Arc<watch::Sender<ClassPlatforms>>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("client", &self.client.as_ref().map(|_| "kube::Client"))
            .field("namespace", &self.namespace)
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

impl Handles {
    /// Per class and proxy: the version applied and whether it is connected.
    pub fn acks(&self) -> watch::Receiver<Acks> {
        self.hub.acks()
    }
}

/// Parses the command line, runs the operator and returns its exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let traces = match crate::telemetry::trace_settings(&cli, |name| std::env::var(name).ok()) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("portico-operator: {e}");
            return ExitCode::from(2);
        }
    };
    // One process-wide TLS provider for the kube client (the distribution server and the PKI
    // name theirs explicitly).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("portico-operator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hub = Hub::new();
    let metrics = Arc::new(Metrics::with_hub(hub.clone()));
    // The span exporter's task lives on the runtime.
    let exporting = {
        let _runtime = runtime.enter();
        match crate::telemetry::init(&cli, traces.as_ref(), &metrics) {
            Ok(exporting) => exporting,
            Err(e) => {
                eprintln!("portico-operator: {e}");
                return ExitCode::from(2);
            }
        }
    };
    if let Some(t) = &traces {
        tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, ratio = t.ratio, "exporting traces over OTLP");
    }
    let result = runtime.block_on(async {
        let result = run(cli, hub, metrics).await;
        exporting.flush(Duration::from_secs(2)).await;
        result
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico-operator: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    listen().map_err(|source| RunError::Bind { addr, source })
}

fn read_token(path: &std::path::Path) -> Result<String, RunError> {
    let error = |why: String| RunError::Token {
        path: path.display().to_string(),
        why,
    };
    let token = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(error("it is empty".into()));
    }
    Ok(token)
}

/// Runs the operator until SIGTERM or SIGINT, publishing through `hub` and counting in
/// `metrics` (made with [`Metrics::with_hub`] of the same hub).
pub async fn run(cli: Cli, hub: Hub, metrics: Arc<Metrics>) -> Result<(), RunError> {
    let names = cli.certificate_names();

    // The index's sources, the PKI and proxy authentication: from files in development mode,
    // from the cluster otherwise.
    let (client, shared, pki, auth): (_, _, _, Arc<dyn Authenticator>) = match (
        &cli.manifests,
        &cli.static_token_file,
        &cli.tls_dir,
    ) {
        (Some(dir), Some(token_file), Some(tls_dir)) => {
            let token = read_token(token_file)?;
            let pki = Pki::load_or_generate_dir(tls_dir, &names)?;
            let shared = Shared::new([manifests::SOURCE.to_owned()]);
            manifests::start(dir.clone(), shared.clone())?;
            tracing::info!(dir = %dir.display(), "development mode: objects from a manifests directory, one static token");
            (None, shared, pki, Arc::new(StaticToken::new(token)))
        }
        _ => {
            let client = kube::Client::try_default().await?;
            let pki = pki_secret::ensure(client.clone(), &cli.namespace, &names).await?;
            let shared = Shared::new(crate::watch::sources());
            crate::watch::spawn_all(client.clone(), shared.clone(), metrics.clone());
            let auth = TokenReviewer::new(client.clone(), cli.namespace.clone());
            (Some(client), shared, pki, Arc::new(auth))
        }
    };
    let tls = pki.server_config()?;

    let listener = bind(cli.listen)?;
    let admin = bind(cli.admin)?;
    let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    tracing::info!(
        "listening distribution={} admin={}",
        local(&listener, cli.listen),
        local(&admin, cli.admin)
    );

    let (translated_tx, translated) = watch::channel(Arc::new(Translated::default()));
    let options = Options {
        only_class: None,
        combine_classes: false,
        platform_namespace: Some(cli.namespace.clone()),
        class_platform_namespaces: Default::default(),
        replicas: 1,
    };
    let batching = Batching {
        delay: cli.batch_delay,
        max_delay: cli.batch_max_delay,
    };
    let (replicas, replicas_rx) = watch::channel(ClassReplicas::new());
    let (platforms, platforms_rx) = watch::channel(ClassPlatforms::new());
    tokio::spawn(batch::run(
        shared.clone(),
        options,
        batching,
        hub.clone(),
        replicas_rx,
        platforms_rx,
        translated_tx,
        metrics.clone(),
    ));

    // Ready once every source has listed and the first translation is published.
    let ready = Arc::new(AtomicBool::new(false));
    {
        let (ready, mut translated) = (ready.clone(), translated.clone());
        tokio::spawn(async move {
            if translated.changed().await.is_ok() {
                ready.store(true, Ordering::Release);
                tracing::info!("ready");
            }
        });
    }
    {
        let (metrics, mut acks) = (metrics.clone(), hub.acks());
        tokio::spawn(async move {
            while acks.changed().await.is_ok() {
                let connected = acks
                    .borrow_and_update()
                    .values()
                    .flat_map(|proxies| proxies.values())
                    .filter(|p| p.connected)
                    .count();
                metrics.proxies_connected.set(connected as i64);
            }
        });
    }

    let handles = Handles {
        client,
        namespace: cli.namespace.clone(),
        hub: hub.clone(),
        translated,
        replicas: Arc::new(replicas),
        platforms: Arc::new(platforms),
    };
    // In a cluster: the proxies of each class, their replica counts (for DividedAmongReplicas
    // limits), and status written by the holder of the Lease.
    if let Some(client) = handles.client.clone() {
        spawn_cluster_side(client, &handles);
    }

    tokio::spawn(crate::admin::serve(admin, ready.clone(), metrics.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        tls,
        hub,
        auth,
        ServeOptions {
            ping_interval: cli.ping_interval,
            ..Default::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));

    wait_for_signal().await?;
    ready.store(false, Ordering::Release);
    tracing::info!("stopping; proxies keep their snapshots and reconnect");
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

/// Starts provisioning, the replica follower and the status writer behind the Lease.
fn spawn_cluster_side(client: kube::Client, handles: &Handles) {
    let namespace = handles.namespace.clone();
    let mut settings = crate::provision::Settings::new(namespace.clone());
    if let Ok(image) = std::env::var("PORTICO_PROXY_IMAGE") {
        settings.proxy_image = image;
    }
    tokio::spawn(crate::provision::run(client.clone(), settings));
    tokio::spawn(follow_replicas(
        client.clone(),
        namespace.clone(),
        handles.replicas.clone(),
    ));
    tokio::spawn(follow_platforms(client.clone(), handles.platforms.clone()));
    let identity = std::env::var("PORTICO_POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("portico-operator-{}", std::process::id()));
    let elector = crate::leader::Elector::new(
        client.clone(),
        crate::leader::LeaseSettings::new(namespace.clone(), identity),
    );
    let (leadership, lease) = elector.run();
    tokio::spawn(lease);
    let mut writer = crate::status::StatusWriter::new(client, namespace, leadership);
    let mut translated = handles.translated.clone();
    let hub = handles.hub.clone();
    let mut acks = hub.acks();
    tokio::spawn(async move {
        loop {
            let current = translated.borrow_and_update().clone();
            acks.borrow_and_update();
            let output = with_rollout(&current.output, &hub);
            let pause = match writer.update(&output).await {
                Ok(()) => None,
                Err(error) => {
                    // Written again on the next change, or after a pause.
                    tracing::warn!(%error, "status not fully written");
                    Some(Duration::from_secs(5))
                }
            };
            tokio::select! {
                changed = translated.changed() => if changed.is_err() { return },
                changed = acks.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(pause.unwrap_or(Duration::from_secs(3600))), if pause.is_some() => {}
            }
        }
    });
}

/// `output` with each policy's `Programmed` condition held at `Pending` until every connected
/// proxy of the class acknowledged the version that carries it.
fn with_rollout(output: &portico_translate::Output, hub: &Hub) -> portico_translate::Output {
    use portico_crds::conditions::{PROGRAMMED, programmed};
    let mut output = output.clone();
    let class_of = |kind: &str, namespace: Option<&str>, name: &str| -> Option<String> {
        match kind {
            "IngressClass" => Some(name.to_owned()),
            _ => {
                let key = format!("{}/{name}", namespace.unwrap_or_default());
                output.ingresses.get(&key).map(|r| r.class.clone())
            }
        }
    };
    let mut pending = Vec::new();
    for (policy, status) in &output.policies {
        for (i, ancestor) in status.ancestors.iter().enumerate() {
            let r = &ancestor.ancestor_ref;
            let Some(class) = class_of(&r.kind, r.namespace.as_deref(), &r.name) else {
                continue;
            };
            if let Some(rollout) = hub.rollout(&class)
                && !rollout.complete()
            {
                pending.push((policy.clone(), i, rollout));
            }
        }
    }
    for (policy, i, rollout) in pending {
        let Some(ancestor) = output
            .policies
            .get_mut(&policy)
            .and_then(|s| s.ancestors.get_mut(i))
        else {
            continue;
        };
        for c in &mut ancestor.conditions {
            if c.r#type == PROGRAMMED && c.status == "True" {
                c.status = "False".into();
                c.reason = programmed::PENDING.into();
                c.message = format!(
                    "version {} applied by {} of {} connected proxies",
                    rollout.version, rollout.applied, rollout.connected
                );
            }
        }
    }
    output
}

/// Keeps `platforms` equal to the `platformNamespace` of each Portico class's ProxyClass.
async fn follow_platforms(client: kube::Client, platforms: Arc<watch::Sender<ClassPlatforms>>) {
    use futures_util::StreamExt;
    use k8s_openapi::api::networking::v1::IngressClass;
    use kube::ResourceExt;
    use kube::runtime::{reflector, watcher};
    use portico_crds::ProxyClass;
    let (classes, classes_writer) = reflector::store::<IngressClass>();
    let (proxies, proxies_writer) = reflector::store::<ProxyClass>();
    let class_events = reflector(
        classes_writer,
        watcher(kube::Api::all(client.clone()), watcher::Config::default()),
    )
    .map(|e| e.map(|_| ()));
    let proxy_events = reflector(
        proxies_writer,
        watcher(kube::Api::all(client), watcher::Config::default()),
    )
    .map(|e| e.map(|_| ()));
    let events = futures_util::stream::select(class_events, proxy_events);
    futures_util::pin_mut!(events);
    while let Some(event) = events.next().await {
        if let Err(error) = event {
            tracing::debug!(%error, "watching IngressClasses and ProxyClasses");
            continue;
        }
        let by_class: ClassPlatforms = classes
            .state()
            .iter()
            .filter(|c| {
                c.spec.as_ref().and_then(|s| s.controller.as_deref())
                    == Some(portico_crds::CONTROLLER_NAME)
            })
            .filter_map(|c| {
                let proxy_class = crate::provision::proxy_class_name(c).ok()??;
                let proxy = proxies
                    .state()
                    .into_iter()
                    .find(|p| p.name_any() == proxy_class)?;
                Some((c.name_any(), proxy.spec.platform_namespace.clone()?))
            })
            .collect();
        platforms.send_if_modified(|current| {
            let changed = *current != by_class;
            *current = by_class;
            changed
        });
    }
}

/// Keeps `replicas` equal to the `spec.replicas` of each class's proxy Deployment.
async fn follow_replicas(
    client: kube::Client,
    namespace: String,
    replicas: Arc<watch::Sender<ClassReplicas>>,
) {
    use futures_util::StreamExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;
    use kube::runtime::{reflector, watcher};
    let api: kube::Api<Deployment> = kube::Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels("app.kubernetes.io/managed-by=portico-operator");
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, config));
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, "watching proxy Deployments");
            continue;
        }
        let counts: ClassReplicas = reader
            .state()
            .iter()
            .filter_map(|d| {
                let class = d.labels().get("portico.dev/ingress-class")?.clone();
                let n = d.spec.as_ref()?.replicas.unwrap_or(1);
                Some((class, u32::try_from(n).unwrap_or(1).max(1)))
            })
            .collect();
        replicas.send_if_modified(|current| {
            let changed = *current != counts;
            *current = counts;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use portico_api::Snapshot;
    use serde_json::json;

    use super::*;

    #[test]
    fn programmed_waits_for_every_connected_proxy() {
        let policy = |class_or_ingress: serde_json::Value| -> portico_crds::IngressPolicyStatus {
            serde_json::from_value(json!({"ancestors": [{
                "ancestorRef": class_or_ingress,
                "controllerName": "portico.dev/ingress-controller",
                "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""},
                    {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "applied to 1 route(s)"}
                ]
            }]}))
            .unwrap()
        };
        let mut output = portico_translate::Output::default();
        output.ingresses.insert(
            "shop/web".into(),
            portico_translate::IngressReport {
                class: "portico".into(),
                warnings: vec![],
            },
        );
        output.policies.insert(
            "shop/p".into(),
            policy(json!({"group": "networking.k8s.io", "kind": "Ingress", "namespace": "shop", "name": "web"})),
        );
        output.policies.insert(
            "other/p".into(),
            policy(json!({"group": "networking.k8s.io", "kind": "IngressClass", "name": "unpublished"})),
        );
        let hub = Hub::new();
        hub.publish("portico", Snapshot::empty("portico"));
        let shown = with_rollout(&output, &hub);
        let programmed = &shown.policies["shop/p"].ancestors[0].conditions[1];
        assert_eq!(
            (programmed.status.as_str(), programmed.reason.as_str()),
            ("False", "Pending")
        );
        assert!(
            programmed.message.contains("0 of 0"),
            "{}",
            programmed.message
        );
        // A class the Hub does not serve is left as the translator said.
        assert_eq!(
            shown.policies["other/p"].ancestors[0].conditions[1].status,
            "True"
        );
        assert_eq!(
            shown.policies["shop/p"].ancestors[0].conditions[0].status,
            "True"
        );
    }
}
