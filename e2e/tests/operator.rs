//! The operator on a real cluster: with the CRDs and RBAC of `config/install.yaml` applied, an
//! IngressClass of Portico's gets its proxy ServiceAccount, Deployment, Service and
//! PodDisruptionBudget, owned by the class.
//!
//! The operator runs on this machine (the binary `make e2e` builds), with the cluster's
//! credentials, not as the in-cluster Deployment: the test needs no image.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

const INSTALL_YAML: &str = include_str!("../../config/install.yaml");
const NAMESPACE: &str = "portico-system";
const CLASS: &str = "portico-e2e";
const MANAGER: &str = "portico-e2e";

async fn cluster() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "needs a cluster: run make e2e with KUBECONFIG set"
    );
    Client::try_default()
        .await
        .expect("KUBECONFIG is set but no client could be built")
}

async fn apply_cluster<K>(client: &Client, object: K)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .patch(
            &object.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {}: {e}", K::kind(&()), object.name_any()));
}

async fn apply_namespaced<K>(client: &Client, object: K)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let namespace = object
        .namespace()
        .expect("namespaced objects name their namespace");
    Api::<K>::namespaced(client.clone(), &namespace)
        .patch(
            &object.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {}: {e}", K::kind(&()), object.name_any()));
}

/// Applies the namespace, CRDs and RBAC of the install bundle; leaves out the operator
/// Deployment and Service (the operator runs locally) and the default IngressClass.
async fn install_prerequisites(client: &Client) {
    use serde::Deserialize;
    for document in serde_yaml_ng::Deserializer::from_str(INSTALL_YAML) {
        let value = serde_yaml_ng::Value::deserialize(document).unwrap();
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        fn parse<K: DeserializeOwned>(value: &serde_yaml_ng::Value) -> K {
            serde_yaml_ng::from_value(value.clone()).expect("install.yaml documents parse")
        }
        match kind.as_str() {
            "Namespace" => apply_cluster::<Namespace>(client, parse(&value)).await,
            "CustomResourceDefinition" => {
                apply_cluster::<CustomResourceDefinition>(client, parse(&value)).await
            }
            "ClusterRole" => apply_cluster::<ClusterRole>(client, parse(&value)).await,
            "ClusterRoleBinding" => {
                apply_cluster::<ClusterRoleBinding>(client, parse(&value)).await
            }
            "ServiceAccount" => apply_namespaced::<ServiceAccount>(client, parse(&value)).await,
            "Role" => apply_namespaced::<Role>(client, parse(&value)).await,
            "RoleBinding" => apply_namespaced::<RoleBinding>(client, parse(&value)).await,
            _ => {}
        }
    }
}

/// The operator binary, killed when dropped.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the operator built by `make e2e` (`target/debug/portico-operator`, or the binary named
/// by `PORTICO_OPERATOR_BIN`) against the cluster of `KUBECONFIG`.
fn spawn_operator() -> Operator {
    let binary = std::env::var_os("PORTICO_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/portico-operator")
        });
    let child = Command::new(&binary)
        .env("PORTICO_NAMESPACE", NAMESPACE)
        .env("PORTICO_POD_NAME", "portico-operator-e2e")
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (make e2e builds it)",
                binary.display()
            )
        });
    Operator(child)
}

/// Polls `get` every half second for up to a minute until it returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut get: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..120 {
        if let Some(value) = get().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{what} did not appear within a minute");
}

/// The object `portico-proxy-<CLASS>` of kind `K`, owned by the IngressClass `uid`.
async fn owned<K>(client: &Client, uid: &str) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), NAMESPACE);
    let name = format!("portico-proxy-{CLASS}");
    let object = eventually(&format!("{} {name}", K::kind(&())), || {
        let api = api.clone();
        let name = name.clone();
        async move { api.get_opt(&name).await.ok().flatten() }
    })
    .await;
    let owners = object.owner_references();
    assert!(
        owners
            .iter()
            .any(|o| o.kind == "IngressClass" && o.uid == uid && o.controller == Some(true)),
        "{} {name} is not owned by IngressClass {CLASS}: {owners:?}",
        K::kind(&())
    );
    assert_eq!(
        object
            .labels()
            .get("portico.dev/ingress-class")
            .map(String::as_str),
        Some(CLASS)
    );
    object
}

#[tokio::test]
#[ignore = "needs a cluster: run make e2e with KUBECONFIG set"]
async fn an_ingress_class_of_ours_gets_its_proxies() {
    let client = cluster().await;
    install_prerequisites(&client).await;
    let classes = Api::<IngressClass>::all(client.clone());
    let class: IngressClass = serde_yaml_ng::from_str(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {CLASS}}}\nspec: {{controller: portico.dev/ingress-controller}}\n"
    ))
    .unwrap();
    let class = classes
        .patch(
            CLASS,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&class),
        )
        .await
        .expect("IngressClass applies");
    let uid = class.uid().unwrap();
    let _operator = spawn_operator();

    let account: ServiceAccount = owned(&client, &uid).await;
    assert_eq!(account.automount_service_account_token, Some(false));
    let deployment: Deployment = owned(&client, &uid).await;
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(format!("portico-proxy-{CLASS}").as_str())
    );
    let service: Service = owned(&client, &uid).await;
    assert_eq!(service.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));
    let _: PodDisruptionBudget = owned(&client, &uid).await;

    // Drift is repaired: a scaled-down Deployment comes back to the rendered replicas.
    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    let name = format!("portico-proxy-{CLASS}");
    deployments
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually("the Deployment's replicas repaired", || {
        let deployments = deployments.clone();
        let name = name.clone();
        async move {
            let replicas = deployments.get(&name).await.ok()?.spec?.replicas?;
            (replicas == 2).then_some(())
        }
    })
    .await;

    classes
        .delete(CLASS, &DeleteParams::default())
        .await
        .expect("IngressClass deletes");
}
