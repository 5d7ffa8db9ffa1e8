//! Status and events: what users see of a translation on their own objects.
//!
//! - Ingress `status.loadBalancer`: the addresses of the class's proxy Service
//!   (`portico-proxy-<class>`) once a load balancer assigned them, else the ProxyClass's
//!   `publishAddresses`, else none.
//! - IngressPolicy `status.ancestors`: as the translator resolved them, with
//!   `lastTransitionTime` stamped here (kept while a condition's status stays the same).
//! - Events (`events.k8s.io`): a Warning on an Ingress for each translator warning (missing
//!   Secret, unsupported backend, ...), and on an IngressPolicy for each `Accepted` or
//!   `ResolvedRefs` condition that is `False` (invalid, conflicted, unresolved reference). Each is published once when it
//!   appears, not on every translation.
//!
//! Statuses are written with server-side apply under [`FIELD_MANAGER`], and only when they
//! changed (timestamps aside): the writer remembers what it wrote, and reads an IngressPolicy's
//! status the first time it sees the policy, so transition times survive a restart or a new
//! leader. Only the holder of the Lease writes ([`crate::leader`]); a writer that is not leader
//! forgets what it wrote and starts afresh once it becomes leader.
//!
//! Entry point for the runtime: [`StatusWriter::new`]`(client, namespace, leadership)`, then
//! [`StatusWriter::update`]`(&output)` after each translation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use portico_crds::{IngressPolicy, IngressPolicyStatus, ProxyClass, conditions};
use portico_translate::Output;
use serde_json::json;
use tracing::Instrument as _;

use crate::leader::Leadership;
use crate::provision::{FIELD_MANAGER, object_name, proxy_class_name};

/// What went wrong in one [`StatusWriter::update`].
#[derive(Debug, thiserror::Error)]
#[error("{failed} status writes failed; first: {action}: {source}")]
pub struct Error {
    /// How many objects could not be read or written.
    pub failed: usize,
    /// What the first failure was doing.
    pub action: String,
    #[source]
    pub source: kube::Error,
}

impl Error {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        "kube"
    }
}

/// What was last written to one object.
#[derive(Debug, Clone, Default)]
struct Written<S> {
    status: S,
    /// Problems already announced as Events.
    announced: BTreeSet<(String, String)>,
    /// The object's uid, learnt from the API server's answer, so Events show up in
    /// `kubectl describe`.
    uid: Option<String>,
}

/// The single writer of Ingress and IngressPolicy status.
pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
    namespace: String,
    leadership: Leadership,
    ingresses: HashMap<String, Written<IngressLoadBalancerStatus>>,
    policies: HashMap<String, Written<IngressPolicyStatus>>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("namespace", &self.namespace)
            .field("leader", &self.leadership.is_leader())
            .field("ingresses", &self.ingresses.len())
            .field("policies", &self.policies.len())
            .finish_non_exhaustive()
    }
}

/// Collects failures of one update: the first one and a count.
#[derive(Default)]
struct Failures(Option<Error>);

impl Failures {
    fn add(&mut self, action: String, source: kube::Error) {
        tracing::warn!(%source, "{action}");
        match &mut self.0 {
            Some(first) => first.failed += 1,
            None => {
                self.0 = Some(Error {
                    failed: 1,
                    action,
                    source,
                })
            }
        }
    }

    fn into_result(self) -> Result<(), Error> {
        self.0.map_or(Ok(()), Err)
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

impl StatusWriter {
    /// A writer for the proxies in `namespace` (the operator's), writing only while
    /// `leadership` is held.
    pub fn new(client: Client, namespace: impl Into<String>, leadership: Leadership) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("PORTICO_POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace: namespace.into(),
            leadership,
            ingresses: HashMap::new(),
            policies: HashMap::new(),
        }
    }

    /// Writes the statuses and events of `output`. Objects that could not be written are
    /// written by a later call; the error says how many and the first reason. Traced only when
    /// this replica holds the Lease (the others write nothing).
    pub async fn update(&mut self, output: &Output) -> Result<(), Error> {
        if !self.leadership.is_leader() {
            self.ingresses.clear();
            self.policies.clear();
            return Ok(());
        }
        let span = tracing::info_span!(
            "status write",
            portico.ingresses = output.ingresses.len(),
            otel.status_description = tracing::field::Empty,
        );
        async {
            let mut failures = Failures::default();
            self.update_ingresses(output, &mut failures).await;
            self.update_policies(output, &mut failures).await;
            let result = failures.into_result();
            if let Err(error) = &result {
                let span = tracing::Span::current();
                span.record("otel.status_description", error.to_string());
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn update_ingresses(&mut self, output: &Output, failures: &mut Failures) {
        let classes: BTreeSet<&str> = output
            .ingresses
            .values()
            .map(|r| r.class.as_str())
            .collect();
        let mut addresses = BTreeMap::new();
        for class in classes {
            match self.addresses(class).await {
                Ok(list) => {
                    addresses.insert(class, list);
                }
                Err((action, error)) => failures.add(action, error),
            }
        }
        for (key, report) in &output.ingresses {
            // A class whose addresses could not be read keeps what was written before.
            let Some(list) = addresses.get(report.class.as_str()) else {
                continue;
            };
            // No address yet: an empty `loadBalancer`, as Kubernetes writes it.
            let desired = IngressLoadBalancerStatus {
                ingress: (!list.is_empty()).then(|| list.clone()),
            };
            let written = self.ingresses.get(key);
            if written.is_none_or(|w| w.status != desired) {
                match self.patch_ingress(key, &desired).await {
                    Ok(Some(uid)) => {
                        let entry = self.ingresses.entry(key.clone()).or_default();
                        entry.status = desired;
                        entry.uid = Some(uid);
                    }
                    // Deleted meanwhile: the next translation drops it.
                    Ok(None) => continue,
                    Err(error) => {
                        failures.add(format!("patch status of Ingress {key}"), error);
                        continue;
                    }
                }
            }
            let problems: BTreeSet<(String, String)> = report
                .warnings
                .iter()
                .map(|w| (w.reason.clone(), w.message.clone()))
                .collect();
            let entry = self.ingresses.entry(key.clone()).or_default();
            let (namespace, name) = split_key(key);
            let reference = ObjectReference {
                api_version: Some(Ingress::api_version(&()).into_owned()),
                kind: Some(Ingress::kind(&()).into_owned()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                uid: entry.uid.clone(),
                ..ObjectReference::default()
            };
            announce(&self.recorder, &reference, &problems, &mut entry.announced).await;
        }
        // Ingresses no longer served by Portico: give back the addresses.
        let gone: Vec<String> = self
            .ingresses
            .keys()
            .filter(|k| !output.ingresses.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            match self
                .patch_ingress(&key, &IngressLoadBalancerStatus::default())
                .await
            {
                Ok(_) => {
                    self.ingresses.remove(&key);
                }
                Err(error) => failures.add(format!("clear status of Ingress {key}"), error),
            }
        }
    }

    /// The addresses of `class`: its Service's load-balancer ingress, else the ProxyClass's
    /// publish addresses.
    async fn addresses(
        &self,
        class: &str,
    ) -> Result<Vec<IngressLoadBalancerIngress>, (String, kube::Error)> {
        let service_name = object_name(class);
        let services = Api::<Service>::namespaced(self.client.clone(), &self.namespace);
        let service = services
            .get_opt(&service_name)
            .await
            .map_err(|e| (format!("get Service {}/{service_name}", self.namespace), e))?;
        let from_service: Vec<IngressLoadBalancerIngress> = service
            .and_then(|s| s.status?.load_balancer?.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.ip.is_some() || i.hostname.is_some())
            .map(|i| IngressLoadBalancerIngress {
                ip: i.ip,
                hostname: i.hostname,
                ports: None,
            })
            .collect();
        if !from_service.is_empty() {
            return Ok(from_service);
        }
        let classes = Api::<IngressClass>::all(self.client.clone());
        let Some(ingress_class) = classes
            .get_opt(class)
            .await
            .map_err(|e| (format!("get IngressClass {class}"), e))?
        else {
            return Ok(Vec::new());
        };
        let Ok(Some(proxy_class)) = proxy_class_name(&ingress_class) else {
            return Ok(Vec::new());
        };
        let proxy_classes = Api::<ProxyClass>::all(self.client.clone());
        let publish = proxy_classes
            .get_opt(&proxy_class)
            .await
            .map_err(|e| (format!("get ProxyClass {proxy_class}"), e))?
            .map(|p| p.spec.publish_addresses)
            .unwrap_or_default();
        Ok(publish
            .into_iter()
            .map(|address| {
                if address.parse::<std::net::IpAddr>().is_ok() {
                    IngressLoadBalancerIngress {
                        ip: Some(address),
                        ..IngressLoadBalancerIngress::default()
                    }
                } else {
                    IngressLoadBalancerIngress {
                        hostname: Some(address),
                        ..IngressLoadBalancerIngress::default()
                    }
                }
            })
            .collect())
    }

    /// Applies `status.loadBalancer` of one Ingress. `Ok(None)` when the Ingress is gone.
    async fn patch_ingress(
        &self,
        key: &str,
        load_balancer: &IngressLoadBalancerStatus,
    ) -> Result<Option<String>, kube::Error> {
        let (namespace, name) = split_key(key);
        let api = Api::<Ingress>::namespaced(self.client.clone(), namespace);
        let patch = json!({
            "apiVersion": Ingress::api_version(&()),
            "kind": Ingress::kind(&()),
            "status": IngressStatus { load_balancer: Some(load_balancer.clone()) },
        });
        match api
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(ingress) => Ok(Some(ingress.uid().unwrap_or_default())),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn update_policies(&mut self, output: &Output, failures: &mut Failures) {
        // Whole seconds, as the API server writes metav1.Time.
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        for (key, status) in &output.policies {
            let (namespace, name) = split_key(key);
            let api = Api::<IngressPolicy>::namespaced(self.client.clone(), namespace);
            if !self.policies.contains_key(key) {
                // First sight (start, or new leader): read what the previous writer left, so
                // transition times survive and an unchanged status is not rewritten.
                match api.get_opt(name).await {
                    Ok(Some(current)) => {
                        let problems = problems(&current.status.clone().unwrap_or_default());
                        let entry = self.policies.entry(key.clone()).or_default();
                        entry.uid = current.uid();
                        entry.status = current.status.unwrap_or_default();
                        // Problems already in the status were announced when they appeared.
                        entry.announced = problems;
                    }
                    Ok(None) => continue,
                    Err(error) => {
                        failures.add(format!("get IngressPolicy {key}"), error);
                        continue;
                    }
                }
            }
            let written = self.policies.get(key);
            let desired = stamp(status, written.map(|w| &w.status), &now);
            if written.is_none_or(|w| w.status != desired) {
                let patch = json!({
                    "apiVersion": IngressPolicy::api_version(&()),
                    "kind": IngressPolicy::kind(&()),
                    "status": desired,
                });
                match api
                    .patch_status(
                        name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&patch),
                    )
                    .await
                {
                    Ok(policy) => {
                        let entry = self.policies.entry(key.clone()).or_default();
                        entry.status = desired;
                        entry.uid = policy.uid();
                    }
                    Err(error) if is_not_found(&error) => continue,
                    Err(error) => {
                        failures.add(format!("patch status of IngressPolicy {key}"), error);
                        continue;
                    }
                }
            }
            let problems = problems(status);
            let entry = self.policies.entry(key.clone()).or_default();
            let reference = ObjectReference {
                api_version: Some(IngressPolicy::api_version(&()).into_owned()),
                kind: Some(IngressPolicy::kind(&()).into_owned()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                uid: entry.uid.clone(),
                ..ObjectReference::default()
            };
            announce(&self.recorder, &reference, &problems, &mut entry.announced).await;
        }
        // Deleted policies: nothing to write, only to forget.
        self.policies.retain(|k, _| output.policies.contains_key(k));
    }
}

/// The problems of a policy status worth an event: `Accepted` or `ResolvedRefs` conditions that
/// are `False`. (`Programmed=False` means pending or overridden: state, not a problem.)
fn problems(status: &IngressPolicyStatus) -> BTreeSet<(String, String)> {
    status
        .ancestors
        .iter()
        .flat_map(|a| &a.conditions)
        .filter(|c| {
            c.status == "False"
                && (c.r#type == conditions::ACCEPTED || c.r#type == conditions::RESOLVED_REFS)
        })
        .map(|c| (c.reason.clone(), c.message.clone()))
        .collect()
}

/// `status` with each condition's `lastTransitionTime`: kept from `previous` while the
/// condition (same ancestor, same type) keeps its status, `now` otherwise.
fn stamp(
    status: &IngressPolicyStatus,
    previous: Option<&IngressPolicyStatus>,
    now: &str,
) -> IngressPolicyStatus {
    let mut stamped = status.clone();
    for ancestor in &mut stamped.ancestors {
        let before = previous.and_then(|p| {
            p.ancestors
                .iter()
                .find(|a| a.ancestor_ref == ancestor.ancestor_ref)
        });
        for condition in &mut ancestor.conditions {
            let kept = before
                .and_then(|b| b.conditions.iter().find(|c| c.r#type == condition.r#type))
                .filter(|c| c.status == condition.status)
                .and_then(|c| c.last_transition_time.clone());
            condition.last_transition_time = Some(kept.unwrap_or_else(|| now.to_owned()));
        }
    }
    stamped
}

/// Publishes a Warning event for each problem not yet announced, and forgets problems that
/// went away (so that they are announced again if they come back).
async fn announce(
    recorder: &Recorder,
    reference: &ObjectReference,
    problems: &BTreeSet<(String, String)>,
    announced: &mut BTreeSet<(String, String)>,
) {
    announced.retain(|p| problems.contains(p));
    for (reason, message) in problems {
        if announced.contains(&(reason.clone(), message.clone())) {
            continue;
        }
        let event = Event {
            type_: EventType::Warning,
            reason: reason.clone(),
            note: Some(message.clone()),
            action: "Translate".into(),
            secondary: None,
        };
        match recorder.publish(&event, reference).await {
            Ok(()) => {
                announced.insert((reason.clone(), message.clone()));
            }
            Err(error) => tracing::warn!(%error, reason, "cannot publish event"),
        }
    }
}

#[cfg(test)]
mod tests;
