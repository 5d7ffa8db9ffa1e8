//! The snapshot types.
//!
//! Conventions: durations are whole milliseconds in fields ending in `_ms`; hosts are lower-case
//! without a port; collections are sorted by the translator so that equal inputs serialise to
//! byte-identical snapshots.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::policy::RoutePolicy;

/// Version of the snapshot format. A proxy refuses a snapshot whose `format` is newer than the
/// one it was built with, and keeps serving the one it has.
pub const FORMAT_VERSION: u32 = 1;

/// Everything one proxy needs to serve one IngressClass.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Snapshot {
    /// [`FORMAT_VERSION`] of the producer.
    pub format: u32,
    /// Monotonic version stamped by the publisher (the operator or the standalone source).
    /// The translator leaves it at 0.
    pub version: u64,
    /// The IngressClass (or classes, joined by `,`) this snapshot serves.
    pub class: String,
    /// Number of proxy replicas sharing this class, for `DividedAmongReplicas` rate limits.
    pub replicas: u32,
    /// Virtual hosts, sorted by host. Host `""` matches any host (Ingress rules without a host).
    pub hosts: Vec<VirtualHost>,
    /// Route used when no host or no path matched: the oldest Ingress `spec.defaultBackend`.
    pub default_route: Option<Route>,
    /// Upstream backends by id (`namespace/service:port`), referenced from routes. Kept apart
    /// from routes so that endpoint churn can be shipped without the routing table.
    pub backends: BTreeMap<String, Backend>,
    /// Certificates by id (`namespace/secret`).
    pub certificates: BTreeMap<String, Certificate>,
    /// TLS server names and their certificates, sorted by host. Exact and `*.` wildcard hosts.
    pub sni: Vec<SniHost>,
}

impl Snapshot {
    /// An empty snapshot of the current format for `class`.
    pub fn empty(class: impl Into<String>) -> Self {
        Self {
            format: FORMAT_VERSION,
            class: class.into(),
            replicas: 1,
            ..Self::default()
        }
    }

    /// Number of routes, the default route included.
    pub fn route_count(&self) -> usize {
        self.hosts.iter().map(|h| h.routes.len()).sum::<usize>()
            + usize::from(self.default_route.is_some())
    }
}

/// The routes of one host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualHost {
    /// `foo.example.com`, `*.example.com` (exactly one label), or `""` for any host.
    pub host: String,
    /// Routes in precedence order is not required: the matcher orders them itself.
    pub routes: Vec<Route>,
}

/// One Ingress path, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Stable identity of the route (`namespace/ingress` plus host, path type and path), used
    /// for metrics, logs and per-target rate-limit buckets.
    pub id: String,
    /// How the request path is matched. `None` only for the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Id of the backend in [`Snapshot::backends`]. A backend with no ready endpoints, or a
    /// missing id, makes the route answer 503.
    pub backend: String,
    /// Where the route came from.
    pub source: RouteSource,
    /// The effective IngressPolicy for this route, precedence already applied.
    #[serde(default, skip_serializing_if = "RoutePolicy::is_empty")]
    pub policy: RoutePolicy,
}

/// Path match of a route. `ImplementationSpecific` arrives here as `Prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    pub kind: PathKind,
    /// The path as written in the Ingress (always starts with `/`).
    pub value: String,
}

/// Path match kinds, per the Ingress spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathKind {
    /// The whole path, case-sensitive, trailing slash significant.
    Exact,
    /// Element-wise prefix split by `/`; a trailing slash is ignored.
    Prefix,
}

/// The Ingress path a route was made from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteSource {
    pub namespace: String,
    pub ingress: String,
    /// The rule's host as written (`""` when absent).
    pub host: String,
    /// The path as written (`""` for the default backend).
    pub path: String,
    /// `Exact`, `Prefix`, `ImplementationSpecific`, or `""` for the default backend.
    pub path_type: String,
}

/// An upstream service port and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Backend {
    pub service: ServiceRef,
    /// How to speak to the endpoints, from the Service port's `appProtocol` (or its name).
    pub protocol: AppProtocol,
    pub load_balancer: LoadBalancer,
    /// Ready endpoints, sorted. Empty means the routes answer 503.
    pub endpoints: Vec<Endpoint>,
}

/// The Service port a backend stands for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// The Service port number (a named Ingress port is resolved to it).
    pub port: u16,
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AppProtocol {
    /// HTTP/1.1 over cleartext (the default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over cleartext (`appProtocol: kubernetes.io/h2c`).
    H2c,
    /// TLS to the upstream (`appProtocol: https`), HTTP/2 or HTTP/1.1 by ALPN.
    Https,
}

/// Endpoint choice within a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum LoadBalancer {
    #[default]
    RoundRobin,
    /// Power of two random choices by in-flight requests.
    LeastRequest,
}

/// One ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
}

/// A certificate chain and its private key, PEM.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Certificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Certificate {
    // The key never appears in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_pem_len", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A TLS server name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SniHost {
    /// Exact host or `*.` wildcard.
    pub host: String,
    /// Id in [`Snapshot::certificates`].
    pub certificate: String,
    /// Client certificate validation for this host (IngressPolicy `clientCertificate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<ClientCa>,
}

/// CA bundle that client certificates of a host are verified against. The handshake asks for a
/// certificate; routes whose policy requires one reject requests without it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientCa {
    pub ca_pem: String,
}
