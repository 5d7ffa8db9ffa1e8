//! The routing snapshot: the one contract between Portico's operator (or the standalone
//! manifests source) and the proxy, plus the pure route matcher.
//!
//! A [`Snapshot`] is immutable and self-contained: every Secret the proxy needs (certificates,
//! htpasswd files, API keys, JWKS) is resolved into it, so the proxy never talks to Kubernetes.
//! The crate has no kube, hyper or tokio dependency on purpose.

pub mod matcher;
pub mod policy;
pub mod snapshot;

pub use matcher::{HostMap, RouteMatch, Router, normalize_host};
pub use policy::RoutePolicy;
pub use snapshot::{
    AppProtocol, Backend, Certificate, ClientCa, Endpoint, FORMAT_VERSION, LoadBalancer, PathKind,
    PathMatch, Route, RouteSource, ServiceRef, Snapshot, SniHost, VirtualHost,
};
