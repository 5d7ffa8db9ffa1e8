//! What a translation produces.

use std::collections::BTreeMap;

use portico_api::Snapshot;
use portico_crds::IngressPolicyStatus;
use serde::Serialize;

/// The result of [`crate::translate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// One snapshot per served IngressClass, by class name (or the joined names when classes
    /// are combined).
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Every Ingress Portico serves, by `namespace/name`, with what went wrong in it (warnings
    /// sorted and deduplicated). Ingresses of other controllers are absent.
    pub ingresses: BTreeMap<String, IngressReport>,
    /// Status of every IngressPolicy, by `namespace/name`.
    pub policies: BTreeMap<String, IngressPolicyStatus>,
}

/// How one Ingress was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressReport {
    /// The IngressClass that selected it.
    pub class: String,
    /// Problems, each of which the operator turns into an Event on the Ingress.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// A problem found while translating, in the shape of a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// CamelCase reason, e.g. `ServiceNotFound`.
    pub reason: String,
    /// A sentence for a user.
    pub message: String,
}

impl Warning {
    /// A warning with `reason` and `message`.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}
