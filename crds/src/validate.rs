//! Client-side validation with the CRD's own CEL rules.
//!
//! In a cluster the API server refuses an IngressPolicy that breaks an `x-kubernetes-validations`
//! rule. Standalone mode has no API server, so the translator asks this module instead and
//! reports the same messages in the policy's status. The rules are the ones in the generated
//! CRD, compiled once, so the two can never disagree.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, Validator, compile_schema};

use crate::IngressPolicy;

fn compiled() -> &'static CompiledSchema {
    static SCHEMA: OnceLock<CompiledSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = IngressPolicy::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("the derived CRD has an openAPIV3Schema");
        compile_schema(&serde_json::to_value(schema).expect("a schema serialises"))
    })
}

/// Checks `policy` against every CEL rule of the IngressPolicy CRD. Each failure reads
/// `field.path: message`, in schema order.
pub fn validate(policy: &IngressPolicy) -> Result<(), Vec<String>> {
    thread_local! {
        static VALIDATOR: Validator = Validator::new();
    }
    let object = serde_json::to_value(policy).expect("an IngressPolicy serialises");
    VALIDATOR
        .with(|v| v.validate_compiled(compiled(), &object, None))
        .map_err(|errors| {
            errors
                .into_vec()
                .into_iter()
                .map(|e| {
                    if e.field_path.is_empty() {
                        e.message
                    } else {
                        format!("{}: {}", e.field_path, e.message)
                    }
                })
                .collect()
        })
}
