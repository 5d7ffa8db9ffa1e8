//! One status writer at a time: a `coordination.k8s.io/v1` Lease held by renewing it.
//!
//! Every replica of the operator serves snapshots, but only the holder of the Lease writes
//! status, so two replicas never fight over an Ingress's address. A replica holds the Lease
//! while it renews it within `leaseDurationSeconds`; another takes it over once the holder has
//! stopped renewing for that long. Updates carry the `resourceVersion` they read, so two
//! replicas racing for an expired Lease cannot both win.
//!
//! Entry point for the runtime: [`Elector::new`]`(client, LeaseSettings::new(namespace,
//! identity))`, then [`Elector::run`], which gives a [`Leadership`] to hand to
//! [`crate::status::StatusWriter`] and a future to spawn.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

/// Name of the Lease in the operator's namespace (the Role grants get/update on this name only).
pub const LEASE_NAME: &str = "portico-operator";

/// Who competes for which Lease, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica, e.g. its pod name.
    pub identity: String,
    /// How long a holder that stopped renewing keeps the Lease.
    pub lease_duration: Duration,
    /// Time between two attempts to acquire or renew.
    pub renew_every: Duration,
}

impl LeaseSettings {
    /// The [`LEASE_NAME`] Lease in `namespace`: 15 s duration, renewed every 5 s.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: LEASE_NAME.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// Whether this replica currently holds the Lease. Cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// Leadership that is always held: a single replica, or tests.
    pub fn always() -> Self {
        Self::fixed(true)
    }

    /// Leadership that never changes.
    pub(crate) fn fixed(leader: bool) -> Self {
        let (tx, rx) = watch::channel(leader);
        // Keep the value forever: a receiver whose sender is gone still reads the last value.
        drop(tx);
        Self(rx)
    }

    /// Whether this replica holds the Lease now.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until leadership is gained or lost; returns the new state. Returns the current
    /// state at once, forever, when the elector has stopped.
    pub async fn changed(&mut self) -> bool {
        let _ = self.0.changed().await;
        *self.0.borrow_and_update()
    }
}

/// Competes for the Lease.
#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// One round: creates the Lease if there is none, renews it if this replica holds it, takes
    /// it over if its holder stopped renewing. Returns whether this replica holds it now. A
    /// lost race (409 Conflict) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let me = &self.settings.identity;
        let duration_secs =
            i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match self.api.get_opt(&self.settings.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let held_by_me = spec.holder_identity.as_deref() == Some(me.as_str());
                // A Lease without a holder was released: free to take.
                let free = spec.holder_identity.is_none() || expired(spec, now);
                if !held_by_me && !free {
                    return Ok(false);
                }
                if !held_by_me {
                    spec.holder_identity = Some(me.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration_secs);
                spec.renew_time = Some(MicroTime(now));
                // The resourceVersion read above makes this a compare-and-swap.
                self.api
                    .replace(&lease.name_any(), &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up if this replica holds it, so that another replica takes over at once
    /// instead of after the lease duration. For a clean shutdown, after the last status write.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        // An expired renewal lets any replica take the Lease on its next round.
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Competes forever. The [`Leadership`] follows the outcome of each round; after an API
    /// error a holder keeps leadership only while its last renewal is younger than half the
    /// lease duration, so it steps down before anyone else may take over.
    pub fn run(self) -> (Leadership, impl Future<Output = ()> + Send) {
        let (tx, rx) = watch::channel(false);
        let task = async move {
            let mut last_renewal: Option<Instant> = None;
            loop {
                let leader = match self.try_acquire_or_renew().await {
                    Ok(true) => {
                        last_renewal = Some(Instant::now());
                        true
                    }
                    Ok(false) => false,
                    Err(error) => {
                        tracing::warn!(%error, lease = %self.settings.name, "cannot renew the lease");
                        last_renewal
                            .is_some_and(|at| at.elapsed() < self.settings.lease_duration / 2)
                    }
                };
                tx.send_if_modified(|held| {
                    let changed = *held != leader;
                    if changed {
                        tracing::info!(leader, identity = %self.settings.identity, "status writer leadership changed");
                    }
                    *held = leader;
                    changed
                });
                tokio::time::sleep(self.settings.renew_every).await;
            }
        };
        (Leadership(rx), task)
    }
}

/// Whether the holder of `spec` stopped renewing for longer than the lease duration.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed + duration < now
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::fixtures::{mock_client, within_a_second};

    const URI: &str =
        "/apis/coordination.k8s.io/v1/namespaces/portico-system/leases/portico-operator";

    fn elector() -> (Elector, crate::fixtures::ApiServer) {
        let (client, server) = mock_client();
        let settings = LeaseSettings::new("portico-system", "operator-a");
        (Elector::new(client, settings), server)
    }

    fn lease(holder: &str, renewed: &str) -> serde_json::Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "portico-operator", "namespace": "portico-system", "resourceVersion": "41"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 3}
        })
    }

    fn just_now() -> String {
        MicroTime(Timestamp::now()).0.to_string()
    }

    #[tokio::test]
    async fn creates_the_lease_when_there_is_none() {
        let (elector, mut server) = elector();
        within_a_second(async {
            let server_side = async {
                server.expect(Method::GET, URI).await.not_found();
                server
                    .expect(
                        Method::POST,
                        "/apis/coordination.k8s.io/v1/namespaces/portico-system/leases?",
                    )
                    .await
                    .echo()
            };
            let (held, created) = tokio::join!(elector.try_acquire_or_renew(), server_side);
            assert!(held.unwrap());
            assert_eq!(created["spec"]["holderIdentity"], "operator-a");
            assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
            assert_eq!(created["spec"]["leaseTransitions"], 0);
            assert!(created["spec"]["renewTime"].is_string());
        })
        .await;
        drop(elector);
        server.done().await;
    }

    #[tokio::test]
    async fn renews_its_own_lease_with_the_version_it_read() {
        let (elector, mut server) = elector();
        within_a_second(async {
            let server_side = async {
                server
                    .expect(Method::GET, URI)
                    .await
                    .respond(200, lease("operator-a", "2020-01-01T00:00:00Z"));
                server.expect(Method::PUT, &format!("{URI}?")).await.echo()
            };
            let (held, renewed) = tokio::join!(elector.try_acquire_or_renew(), server_side);
            assert!(held.unwrap());
            assert_eq!(renewed["metadata"]["resourceVersion"], "41");
            assert_eq!(renewed["spec"]["holderIdentity"], "operator-a");
            assert_eq!(renewed["spec"]["leaseTransitions"], 3);
            assert_ne!(renewed["spec"]["renewTime"], "2020-01-01T00:00:00Z");
        })
        .await;
        drop(elector);
        server.done().await;
    }

    #[tokio::test]
    async fn leaves_a_live_lease_of_another_replica_alone() {
        let (elector, mut server) = elector();
        within_a_second(async {
            let server_side = async {
                server
                    .expect(Method::GET, URI)
                    .await
                    .respond(200, lease("operator-b", &just_now()));
            };
            let (held, ()) = tokio::join!(elector.try_acquire_or_renew(), server_side);
            assert!(!held.unwrap());
        })
        .await;
        drop(elector);
        server.done().await;
    }

    #[tokio::test]
    async fn takes_over_an_expired_lease_and_loses_a_race_quietly() {
        let (elector, mut server) = elector();
        within_a_second(async {
            let server_side = async {
                server
                    .expect(Method::GET, URI)
                    .await
                    .respond(200, lease("operator-b", "2020-01-01T00:00:00Z"));
                let taken = server.expect(Method::PUT, &format!("{URI}?")).await.echo();
                server
                    .expect(Method::GET, URI)
                    .await
                    .respond(200, lease("operator-b", "2020-01-01T00:00:00Z"));
                server.expect(Method::PUT, &format!("{URI}?")).await.respond(
                    409,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": "the object has been modified", "reason": "Conflict", "code": 409}),
                );
                taken
            };
            let rounds = async {
                let first = elector.try_acquire_or_renew().await.unwrap();
                let second = elector.try_acquire_or_renew().await.unwrap();
                (first, second)
            };
            let ((first, second), taken) = tokio::join!(rounds, server_side);
            assert!(first);
            assert_eq!(taken["spec"]["holderIdentity"], "operator-a");
            assert_eq!(taken["spec"]["leaseTransitions"], 4);
            assert!(!second, "a lost race is not leadership");
        })
        .await;
        drop(elector);
        server.done().await;
    }

    #[tokio::test]
    async fn release_hands_over_only_its_own_lease() {
        let (elector, mut server) = elector();
        within_a_second(async {
            let server_side = async {
                server
                    .expect(Method::GET, URI)
                    .await
                    .respond(200, lease("operator-a", &just_now()));
                let released = server.expect(Method::PUT, &format!("{URI}?")).await.echo();
                server
                    .expect(Method::GET, URI)
                    .await
                    .respond(200, lease("operator-b", &just_now()));
                released
            };
            let rounds = async {
                elector.release().await.unwrap();
                // Someone else's Lease is left alone: no PUT follows.
                elector.release().await.unwrap();
            };
            let ((), released) = tokio::join!(rounds, server_side);
            assert!(released["spec"].get("holderIdentity").is_none());
            assert_eq!(released["spec"]["leaseDurationSeconds"], 1);
            assert_eq!(released["metadata"]["resourceVersion"], "41");
        })
        .await;
        drop(elector);
        server.done().await;
    }

    #[test]
    fn always_is_always_leader() {
        assert!(Leadership::always().is_leader());
    }
}
