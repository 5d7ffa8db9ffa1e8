//! The IngressPolicy CRD on a real API server: it installs, its CEL rules compile within the
//! cost budget, valid policies are admitted and invalid ones are refused with our messages.
//!
//! Marked `ignore` so a plain `cargo test` lists them as skipped with the reason; `make test` (and
//! `make e2e`) include them when `KUBECONFIG` is set. Objects are created with `dryRun=All`, so
//! the cluster keeps only the CRD.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use portico_crds::IngressPolicy;

const CRD_YAML: &str = include_str!("../../config/crd/portico.dev_ingresspolicies.yaml");

const NEEDS_CLUSTER: &str = "needs a cluster: set KUBECONFIG and run make e2e";

async fn cluster() -> Client {
    assert!(std::env::var_os("KUBECONFIG").is_some(), "{NEEDS_CLUSTER}");
    Client::try_default()
        .await
        .expect("KUBECONFIG is set but no client could be built")
}

async fn install_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(CRD_YAML).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("portico-e2e").force();
    api.patch(&crd.name_any(), &params, &Patch::Apply(&crd))
        .await
        .expect("CRD applies");
    for _ in 0..60 {
        let current = api.get(&crd.name_any()).await.unwrap();
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the IngressPolicy CRD never became Established");
}

async fn dry_run_create(client: &Client, yaml: &str) -> Result<(), String> {
    let policy: IngressPolicy = serde_yaml_ng::from_str(yaml).unwrap();
    let api: Api<IngressPolicy> = Api::namespaced(client.clone(), "default");
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&params, &policy)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
#[ignore = "needs a cluster: set KUBECONFIG and run make e2e"]
async fn crd_installs_and_admits_a_valid_policy() {
    let client = cluster().await;
    install_crd(&client).await;
    dry_run_create(
        &client,
        r#"
apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: shop-login, namespace: default}
spec:
  targetRefs:
  - {group: networking.k8s.io, kind: Ingress, name: shop, host: shop.example.com, path: /login, pathType: Prefix}
  defaults:
    timeouts: {request: 60s, backendRequest: 55s}
    rateLimit:
      rules:
      - name: login-per-ip
        key: {type: ClientIP}
        limit: {requests: 10, period: 1m, burst: 5}
        replicas: DividedAmongReplicas
"#,
    )
    .await
    .expect("a valid policy is admitted");
}

#[tokio::test]
#[ignore = "needs a cluster: set KUBECONFIG and run make e2e"]
async fn crd_refuses_invalid_policies_with_clear_messages() {
    let client = cluster().await;
    install_crd(&client).await;
    let cases = [
        (
            "overrides on an Ingress target",
            r#"
apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: bad-overrides, namespace: default}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop}]
  overrides: {body: {maxRequestSize: 1Mi}}
"#,
            "overrides are only allowed",
        ),
        (
            "no target",
            r#"
apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: no-target, namespace: default}
spec:
  defaults: {body: {maxRequestSize: 1Mi}}
"#,
            "at least one target is required",
        ),
        (
            "backend try longer than the request",
            r#"
apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: bad-timeouts, namespace: default}
spec:
  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop}]
  defaults: {timeouts: {request: 5s, backendRequest: 10s}}
"#,
            "backendRequest",
        ),
    ];
    for (what, yaml, expected) in cases {
        let err = dry_run_create(&client, yaml).await.expect_err(what);
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in {err}"
        );
    }
}
