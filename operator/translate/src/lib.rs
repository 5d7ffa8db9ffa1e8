//! Pure translation: Kubernetes objects in, routing snapshots and statuses out.
//!
//! ```text
//! manifests text ──parse──▶ Object ──▶ Index ──translate──▶ Output { snapshots, ingress reports, policy statuses }
//! ```
//!
//! Every caller shares this crate: the proxy's standalone mode (a manifests directory), the
//! operator (watches feed the [`Index`]) and the tests. It performs no I/O: its Cargo.toml has no
//! tokio and no kube client, and [`translate`] is deterministic.

mod backend;
mod class;
mod host;
mod index;
mod ingress;
mod output;
mod parse;
mod policy;
mod tls;

use std::collections::BTreeMap;

pub use index::{Index, IndexedService, IndexedSlice, Kind, Object, ObjectKey};
pub use output::{IngressReport, Output, Warning};
pub use parse::{ParseProblem, Parsed, parse_manifests};

pub use portico_crds::CONTROLLER_NAME;
/// Value of the legacy `kubernetes.io/ingress.class` annotation that selects Portico.
pub const LEGACY_CLASS: &str = "portico";

/// Knobs of a translation. `Default` fits standalone mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Serve only this IngressClass (`--class`).
    pub only_class: Option<String>,
    /// Put every Portico class into one snapshot (standalone mode without `--class`).
    pub combine_classes: bool,
    /// Namespace whose IngressPolicy `overrides` on IngressClass targets are honoured.
    pub platform_namespace: Option<String>,
    /// Classes with a platform namespace of their own (their ProxyClass's), by class name.
    pub class_platform_namespaces: BTreeMap<String, String>,
    /// Proxy replicas per class, carried in each snapshot for `DividedAmongReplicas`.
    pub replicas: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            only_class: None,
            combine_classes: false,
            platform_namespace: Some("portico-system".to_owned()),
            class_platform_namespaces: BTreeMap::new(),
            replicas: 1,
        }
    }
}

/// Translates the index into one snapshot per served IngressClass, a report per Portico
/// Ingress and a status per IngressPolicy. Deterministic: equal indexes give equal output.
pub fn translate(index: &Index, options: &Options) -> Output {
    let mut out = ingress::translate_ingresses(index, options);
    out.policies = policy::resolve(index, options, &mut out);
    out
}
