//! Portico's custom resources.
mod ingress_policy;
pub use ingress_policy::*;
