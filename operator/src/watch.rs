//! Cluster mode: one watch per kind feeding the shared index.
//!
//! Each watch reads untyped objects and decodes them one by one, so that an object that does
//! not decode (a newer API field of the wrong shape, a broken custom resource) is skipped with
//! a warning instead of failing a whole list and stalling the watch. A re-list replaces the
//! kind's objects at once when it is complete. Errors are retried by kube-runtime's backoff.
//!
//! Secrets are watched cluster-wide but not those of types that never hold a certificate or a
//! CA (service-account tokens, Helm releases, registry credentials, bootstrap tokens, basic and
//! SSH auth): an Ingress may name an Opaque Secret holding `tls.crt` and `tls.key`, so a
//! selector on `kubernetes.io/tls` alone would miss some, while the excluded types are where
//! most of a cluster's Secrets are. `kube-root-ca.crt`, the ConfigMap in every namespace, is
//! excluded likewise.

use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use portico_crds::IngressPolicy;
use portico_translate::{Kind, Object, ObjectKey};
use serde::de::DeserializeOwned;

use crate::batch::{Shared, clear_kind};
use crate::metrics::{KindLabel, Metrics};

/// Secret types that never carry a certificate, key or CA bundle.
pub const SECRET_FIELD_SELECTOR: &str = "type!=kubernetes.io/service-account-token,\
type!=helm.sh/release.v1,type!=kubernetes.io/dockercfg,type!=kubernetes.io/dockerconfigjson,\
type!=bootstrap.kubernetes.io/token,type!=kubernetes.io/basic-auth,type!=kubernetes.io/ssh-auth";
/// The cluster CA ConfigMap published into every namespace.
pub const CONFIG_MAP_FIELD_SELECTOR: &str = "metadata.name!=kube-root-ca.crt";

/// The kinds watched, as named in [`Shared`]'s pending sources.
pub fn sources() -> Vec<String> {
    [
        Kind::IngressClass,
        Kind::Ingress,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::IngressPolicy,
    ]
    .iter()
    .map(|k| kind_name(*k).to_owned())
    .collect()
}

/// A kind's name, for logs, metrics and [`Shared`].
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::IngressClass => "IngressClass",
        Kind::Ingress => "Ingress",
        Kind::Service => "Service",
        Kind::EndpointSlice => "EndpointSlice",
        Kind::Secret => "Secret",
        Kind::ConfigMap => "ConfigMap",
        Kind::IngressPolicy => "IngressPolicy",
    }
}

/// Spawns one watch task per kind.
pub fn spawn_all(client: Client, shared: Arc<Shared>, metrics: Arc<Metrics>) {
    let config = watcher::Config::default;
    let (c, s, m) = (&client, &shared, &metrics);
    spawn::<IngressClass>(c, s, m, Kind::IngressClass, config(), |o| {
        Object::IngressClass(Box::new(o))
    });
    spawn::<Ingress>(c, s, m, Kind::Ingress, config(), |o| {
        Object::Ingress(Box::new(o))
    });
    spawn::<Service>(c, s, m, Kind::Service, config(), |o| {
        Object::Service(Box::new(o))
    });
    spawn::<EndpointSlice>(c, s, m, Kind::EndpointSlice, config(), |o| {
        Object::EndpointSlice(Box::new(o))
    });
    spawn::<Secret>(
        c,
        s,
        m,
        Kind::Secret,
        config().fields(SECRET_FIELD_SELECTOR),
        |o| Object::Secret(Box::new(o)),
    );
    spawn::<ConfigMap>(
        c,
        s,
        m,
        Kind::ConfigMap,
        config().fields(CONFIG_MAP_FIELD_SELECTOR),
        |o| Object::ConfigMap(Box::new(o)),
    );
    spawn::<IngressPolicy>(c, s, m, Kind::IngressPolicy, config(), |o| {
        Object::IngressPolicy(Box::new(o))
    });
}

fn spawn<K>(
    client: &Client,
    shared: &Arc<Shared>,
    metrics: &Arc<Metrics>,
    kind: Kind,
    config: watcher::Config,
    wrap: fn(K) -> Object,
) where
    K: Resource<DynamicType = ()> + DeserializeOwned + Debug + Send + 'static,
{
    let api = Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<K>(&()));
    tokio::spawn(follow(
        api,
        config,
        kind,
        wrap,
        shared.clone(),
        metrics.clone(),
    ));
}

/// Turns an untyped object into an index object, or says why not.
fn decode<K>(mut object: DynamicObject, wrap: fn(K) -> Object) -> Result<Object, String>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    // Managed fields are bookkeeping of the API server; dropping them halves some objects.
    object.metadata.managed_fields = None;
    object.try_parse::<K>().map(wrap).map_err(|e| e.to_string())
}

fn key_of(object: &DynamicObject, kind: Kind) -> ObjectKey {
    let name = object.metadata.name.clone().unwrap_or_default();
    match kind {
        Kind::IngressClass => ObjectKey::new("", name),
        _ => ObjectKey::new(object.metadata.namespace.clone().unwrap_or_default(), name),
    }
}

/// Applies one kind's watch events to the index, for ever.
async fn follow<K>(
    api: Api<DynamicObject>,
    config: watcher::Config,
    kind: Kind,
    wrap: fn(K) -> Object,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
) where
    K: Resource<DynamicType = ()> + DeserializeOwned + Debug + Send + 'static,
{
    let name = kind_name(kind);
    let label = KindLabel { kind: name };
    let events_total = metrics.watch_events.get_or_create(&label).clone();
    let decode_errors = metrics.decode_errors.get_or_create(&label).clone();
    let watch_errors = metrics.watch_errors.get_or_create(&label).clone();
    let mut listing: Vec<Object> = Vec::new();
    let mut synced = false;
    let events = watcher(api, config).default_backoff();
    futures_util::pin_mut!(events);
    while let Some(event) = events.next().await {
        let decoded = |object: DynamicObject| {
            let key = key_of(&object, kind);
            decode::<K>(object, wrap).map_err(|e| {
                decode_errors.inc();
                tracing::warn!(kind = name, object = %key, error = %e, "object skipped: it does not decode");
            })
        };
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(object)) => {
                if let Ok(object) = decoded(object) {
                    listing.push(object);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let objects = std::mem::take(&mut listing);
                tracing::info!(kind = name, objects = objects.len(), "listed");
                shared.update(|index| {
                    clear_kind(index, kind);
                    for object in objects {
                        index.apply(object);
                    }
                    true
                });
                events_total.inc();
                if !synced {
                    synced = true;
                    shared.synced(name);
                }
            }
            Ok(watcher::Event::Apply(object)) => {
                events_total.inc();
                if let Ok(object) = decoded(object) {
                    shared.update(|index| {
                        index.apply(object);
                        true
                    });
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                events_total.inc();
                let key = key_of(&object, kind);
                shared.update(|index| index.remove(kind, &key));
            }
            Err(e) => {
                watch_errors.inc();
                let absent = matches!(
                    &e,
                    watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404
                );
                if absent && !synced {
                    // A CRD not installed yet must not hold back every other kind.
                    synced = true;
                    shared.synced(name);
                    tracing::warn!(
                        kind = name,
                        "this kind is not served by the cluster; translating without it and retrying"
                    );
                } else {
                    tracing::warn!(kind = name, error = %e, "watch failed; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock;

    use super::*;

    fn ingress(name: &str, rules: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"ingressClassName": "portico", "rules": rules},
        })
    }

    fn reply(send: mock::SendResponse<Response<Body>>, body: Vec<u8>) {
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(body))
                .unwrap(),
        );
    }

    #[tokio::test]
    async fn an_object_that_does_not_decode_is_skipped_and_the_watch_goes_on() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let shared = Shared::new(sources());
        let metrics = Arc::new(Metrics::new());
        spawn::<Ingress>(
            &client,
            &shared,
            &metrics,
            Kind::Ingress,
            watcher::Config::default(),
            |o| Object::Ingress(Box::new(o)),
        );
        let api = async {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::GET);
            assert_eq!(
                request.uri().to_string(),
                "/apis/networking.k8s.io/v1/ingresses?&limit=500"
            );
            let list = json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressList",
                "metadata": {"resourceVersion": "10"},
                "items": [ingress("good", json!([])), ingress("bad", json!("not a list"))],
            });
            reply(send, serde_json::to_vec(&list).unwrap());

            let (request, send) = handle.next_request().await.unwrap();
            let uri = request.uri().to_string();
            assert!(
                uri.starts_with("/apis/networking.k8s.io/v1/ingresses?&watch=true")
                    && uri.contains("resourceVersion=10"),
                "{uri}"
            );
            let added = json!({"type": "ADDED", "object": ingress("later", json!([]))});
            let mut events = serde_json::to_vec(&added).unwrap();
            events.push(b'\n');
            reply(send, events);
            handle
        };
        let _handle = tokio::time::timeout(Duration::from_secs(1), api)
            .await
            .expect("the watch lists, then watches");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let names: Vec<String> = {
                let index = shared.index.lock().unwrap();
                index.ingresses.keys().map(ToString::to_string).collect()
            };
            if names == ["shop/good", "shop/later"] {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "index holds {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let label = KindLabel { kind: "Ingress" };
        assert_eq!(metrics.decode_errors.get_or_create(&label).get(), 1);
        assert!(!shared.is_synced(), "other kinds have not listed");
        let index = shared.index.lock().unwrap();
        let good = &index.ingresses[&ObjectKey::new("shop", "good")];
        assert!(
            good.metadata.managed_fields.is_none(),
            "managed fields dropped"
        );
    }
}
