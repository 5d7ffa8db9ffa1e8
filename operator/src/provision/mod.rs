//! Provisioning: the proxies of every Portico IngressClass.
//!
//! For each IngressClass whose `spec.controller` is [`portico_crds::CONTROLLER_NAME`], the
//! operator keeps a ServiceAccount, a Deployment, a Service and a PodDisruptionBudget named
//! `portico-proxy-<class>` in its own namespace, rendered by [`resources::render`] from the
//! class's ProxyClass (or the defaults) and applied with server-side apply under
//! [`FIELD_MANAGER`]. They are owned by the IngressClass, so deleting the class deletes them.
//!
//! Entry point for the runtime: [`run`]`(client, settings)`, a future that runs until the
//! process ends. It is a kube-runtime [`Controller`] on IngressClasses that also watches the
//! four kinds of children (so drift is repaired within a watch event) and ProxyClasses (so an
//! edit rolls out at once). Every replica of the operator may run it: applies are idempotent.
//! The translator needs two values of a class's ProxyClass: [`replicas`] (for rate limits
//! divided among replicas) and [`platform_namespace`] (whose `overrides` count); with
//! [`proxy_class_name`] the runtime finds the ProxyClass of an IngressClass.
//!
//! It installs no signal handler; to stop it, drop the future (or abort its task): a half-done
//! reconcile is simply redone by the next one.

pub mod resources;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use portico_crds::{
    CONTROLLER_NAME, PROXY_CLASS_GROUP, PROXY_CLASS_KIND, ProxyClass, ProxyClassSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use resources::{CLASS_LABEL, MANAGED_BY, object_name, platform_namespace, replicas};

/// The field manager of every server-side apply the operator makes (children and status).
pub const FIELD_MANAGER: &str = "portico-operator";

/// How often a class is reconciled without any change, as a safety net for missed events.
const RESYNC: Duration = Duration::from_secs(3600);
/// Retry after an API error.
const RETRY: Duration = Duration::from_secs(15);
/// Retry while the ProxyClass a class names does not exist (its creation also triggers).
const WAIT_FOR_PROXY_CLASS: Duration = Duration::from_secs(300);

/// What the provisioner needs to know about the operator's own deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The operator's namespace, where the proxies run.
    pub namespace: String,
    /// Proxy image when the ProxyClass names none.
    pub proxy_image: String,
    /// URL the proxies fetch snapshots from.
    pub control_plane: String,
}

impl Settings {
    /// Settings for an operator in `namespace`: the proxy image of the operator's own version
    /// and the `portico-operator` Service of that namespace as the control plane.
    pub fn new(namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Self {
            proxy_image: default_proxy_image(),
            control_plane: format!("https://portico-operator.{namespace}.svc:8443"),
            namespace,
        }
    }
}

/// `ghcr.io/portico-dev/portico-proxy:<version of this build>`.
pub fn default_proxy_image() -> String {
    format!(
        "ghcr.io/portico-dev/portico-proxy:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// What can go wrong while provisioning a class.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// The class name does not fit into a Service name.
    #[error(
        "IngressClass {class:?} cannot be served: its proxy objects would be named {name:?}, which is not a valid Service name (lower-case letters, digits and '-', at most 63 characters)"
    )]
    InvalidClassName { class: String, name: String },
    /// The object came without a uid (never from an API server).
    #[error("IngressClass {0:?} has no uid")]
    MissingUid(String),
    /// A ProxyClass value the API server should have refused.
    #[error("invalid ProxyClass: {0}")]
    InvalidProxyClass(String),
}

impl Error {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::InvalidClassName { .. } => "invalid_class_name",
            Self::MissingUid(_) => "missing_uid",
            Self::InvalidProxyClass(_) => "invalid_proxy_class",
        }
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared state of the reconciler.
#[derive(Clone)]
pub struct Context {
    client: Client,
    recorder: Recorder,
    settings: Settings,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose events are reported as the `portico-operator` controller.
    pub fn new(client: Client, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("PORTICO_POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
        }
    }
}

/// Whether Portico serves `class`.
pub fn is_ours(class: &IngressClass) -> bool {
    class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER_NAME)
}

/// The ProxyClass named by the class's `spec.parameters`: `Ok(None)` without parameters,
/// `Err(message)` when the parameters name something else.
pub fn proxy_class_name(class: &IngressClass) -> Result<Option<String>, String> {
    let Some(params) = class.spec.as_ref().and_then(|s| s.parameters.as_ref()) else {
        return Ok(None);
    };
    let group = params.api_group.as_deref().unwrap_or_default();
    let scope = params.scope.as_deref().unwrap_or("Cluster");
    if group != PROXY_CLASS_GROUP || params.kind != PROXY_CLASS_KIND || scope != "Cluster" {
        return Err(format!(
            "spec.parameters must name a {PROXY_CLASS_KIND} (apiGroup {PROXY_CLASS_GROUP}, scope Cluster), not {} {}/{} with scope {scope}",
            if group.is_empty() { "core" } else { group },
            params.kind,
            params.name,
        ));
    }
    Ok(Some(params.name.clone()))
}

/// Runs the provisioner until the process ends.
pub fn run(client: Client, settings: Settings) -> impl Future<Output = ()> + Send {
    let ctx = Arc::new(Context::new(client.clone(), settings));
    let ns = ctx.settings.namespace.clone();
    let children =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let controller = Controller::new(
        Api::<IngressClass>::all(client.clone()),
        watcher::Config::default(),
    );
    let classes = controller.store();
    controller
        .watches(
            Api::<Deployment>::namespaced(client.clone(), &ns),
            children.clone(),
            by_class_label,
        )
        .watches(
            Api::<Service>::namespaced(client.clone(), &ns),
            children.clone(),
            by_class_label,
        )
        .watches(
            Api::<ServiceAccount>::namespaced(client.clone(), &ns),
            children.clone(),
            by_class_label,
        )
        .watches(
            Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns),
            children,
            by_class_label,
        )
        .watches(
            Api::<ProxyClass>::all(client),
            watcher::Config::default(),
            move |proxy_class| {
                let name = proxy_class.name_any();
                classes
                    .state()
                    .into_iter()
                    .filter(|c| proxy_class_name(c).ok().flatten().as_deref() == Some(&name))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((class, _)) => tracing::debug!(class = %class.name, "provisioned"),
                Err(error) => tracing::warn!(%error, "provisioning failed"),
            }
        })
}

/// Maps a child to its IngressClass by [`CLASS_LABEL`]. (`Controller::owns` maps a child to
/// its owner within the child's namespace, which never finds a cluster-scoped IngressClass.)
fn by_class_label<K: Resource>(child: K) -> Option<ObjectRef<IngressClass>> {
    let class = child.meta().labels.as_ref()?.get(CLASS_LABEL)?;
    Some(ObjectRef::new(class))
}

/// Brings the objects of one IngressClass to their rendered state. Traced: a failed reconcile
/// is an error span, each apply a child span.
#[tracing::instrument(
    skip_all,
    fields(class = %class.name_any(), otel.status_description = tracing::field::Empty)
)]
pub async fn reconcile(class: Arc<IngressClass>, ctx: Arc<Context>) -> Result<Action> {
    let result = reconcile_class(class, ctx).await;
    if let Err(error) = &result {
        let span = tracing::Span::current();
        // An error status, with the reason.
        span.record("otel.status_description", error.to_string());
    }
    result
}

async fn reconcile_class(class: Arc<IngressClass>, ctx: Arc<Context>) -> Result<Action> {
    if !is_ours(&class) {
        return Ok(Action::await_change());
    }
    if let Err(error) = resources::check_class_name(&class.name_any()) {
        warn(&ctx, &class, "InvalidName", error.to_string()).await;
        return Ok(Action::await_change());
    }
    let spec = match proxy_class_name(&class) {
        Ok(None) => ProxyClassSpec::default(),
        Ok(Some(name)) => {
            let api = Api::<ProxyClass>::all(ctx.client.clone());
            match api.get_opt(&name).await.map_err(|source| Error::Kube {
                action: format!("get ProxyClass {name}"),
                source,
            })? {
                Some(proxy_class) => proxy_class.spec,
                None => {
                    let note = format!(
                        "ProxyClass {name:?} named in spec.parameters does not exist; the proxies are provisioned once it does"
                    );
                    warn(&ctx, &class, "ProxyClassNotFound", note).await;
                    return Ok(Action::requeue(WAIT_FOR_PROXY_CLASS));
                }
            }
        }
        Err(note) => {
            warn(&ctx, &class, "InvalidParameters", note).await;
            return Ok(Action::await_change());
        }
    };
    let children = match resources::render(&class, &spec, &ctx.settings) {
        Ok(children) => children,
        Err(error @ Error::InvalidProxyClass(_)) => {
            warn(&ctx, &class, "InvalidProxyClass", error.to_string()).await;
            return Ok(Action::await_change());
        }
        Err(error) => return Err(error),
    };
    let ns = &ctx.settings.namespace;
    apply(&ctx.client, ns, &children.service_account).await?;
    apply(&ctx.client, ns, &children.deployment).await?;
    apply(&ctx.client, ns, &children.service).await?;
    apply(&ctx.client, ns, &children.pod_disruption_budget).await?;
    Ok(Action::requeue(RESYNC))
}

/// Logs the error and retries after [`RETRY`].
pub fn error_policy(class: Arc<IngressClass>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(class = %class.name_any(), kind = error.metric_label(), %error, "reconcile failed");
    Action::requeue(RETRY)
}

/// Server-side apply of `object` under [`FIELD_MANAGER`], forcing conflicts: the operator owns
/// these objects, and a field someone else changed is drift to repair.
#[tracing::instrument(skip_all, fields(kind = %K::kind(&()), object = %object.name_any()))]
async fn apply<K>(client: &Client, ns: &str, object: &K) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = object.name_any();
    let api = Api::<K>::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("apply {} {ns}/{name}", K::kind(&())),
        source,
    })?;
    Ok(())
}

/// A Warning event on the IngressClass. A failure to publish is logged, not retried: the
/// reconcile result does not depend on it.
async fn warn(ctx: &Context, class: &IngressClass, reason: &str, note: String) {
    tracing::warn!(class = %class.name_any(), reason, "{note}");
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Provision".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &class.object_ref(&())).await {
        tracing::warn!(%error, "cannot publish event");
    }
}

#[cfg(test)]
mod tests;
