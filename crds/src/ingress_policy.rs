//! IngressPolicy (placeholder until the types land).
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Placeholder spec.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "portico.dev",
    version = "v1alpha1",
    kind = "IngressPolicy",
    namespaced
)]
#[kube(status = "IngressPolicyStatus", shortname = "ipol")]
pub struct IngressPolicySpec {}

/// Placeholder status.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct IngressPolicyStatus {}
