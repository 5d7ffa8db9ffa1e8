//! The generated files under `config/` are current, and `config/install.yaml` applies on an
//! empty cluster: namespace first, CRDs before anything else, no custom objects.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn generated_files_are_current() {
    for (relative, want) in portico_crds::generated_files(&root()).unwrap() {
        let have = std::fs::read_to_string(root().join(relative)).unwrap_or_default();
        assert!(
            have == want,
            "{relative} is stale or missing: run `make manifests`"
        );
    }
}

/// `(kind, namespace, name)` of every document in the bundle, in order.
fn documents() -> Vec<(String, Option<String>, String)> {
    let text = std::fs::read_to_string(root().join(portico_crds::INSTALL_PATH)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
            let meta = &value["metadata"];
            (
                value["kind"].as_str().unwrap().to_owned(),
                meta["namespace"].as_str().map(str::to_owned),
                meta["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

use serde::Deserialize;

#[test]
fn install_bundle_is_ordered_for_an_empty_cluster() {
    let docs = documents();
    assert_eq!(docs[0], ("Namespace".into(), None, "portico-system".into()));
    let kinds: Vec<&str> = docs.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "IngressClass",
        ]
    );
    // Namespaced objects all live in the operator's namespace.
    for (kind, namespace, name) in &docs {
        if !matches!(
            kind.as_str(),
            "Namespace"
                | "CustomResourceDefinition"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "IngressClass"
        ) {
            assert_eq!(
                namespace.as_deref(),
                Some("portico-system"),
                "{kind}/{name}"
            );
        }
    }
    let crds: Vec<&str> = docs
        .iter()
        .filter(|(k, _, _)| k == "CustomResourceDefinition")
        .map(|(_, _, n)| n.as_str())
        .collect();
    assert_eq!(
        crds,
        ["ingresspolicies.portico.dev", "proxyclasses.portico.dev"]
    );
}

#[test]
fn install_bundle_runs_the_images_of_this_version() {
    let text = std::fs::read_to_string(root().join(portico_crds::INSTALL_PATH)).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let images: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.split_once("ghcr.io/portico-dev/")
                .map(|(_, image)| image.trim())
        })
        .collect();
    assert_eq!(
        images,
        [
            format!("portico-operator:{version}"),
            format!("portico-proxy:{version}"),
        ]
    );
}

#[test]
fn cluster_samples_parse_and_pass_the_crd_rules() {
    let text =
        std::fs::read_to_string(root().join("config/samples/cluster/ingresspolicy.yaml")).unwrap();
    let policy: portico_crds::IngressPolicy = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(portico_crds::validate(&policy), Ok(()));
    let text =
        std::fs::read_to_string(root().join("config/samples/cluster/proxyclass.yaml")).unwrap();
    let kinds: Vec<String> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
            value["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["ProxyClass", "IngressClass"]);
}
