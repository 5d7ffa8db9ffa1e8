//! ProxyClass: how the operator runs the proxies of an IngressClass.
//!
//! An IngressClass names one through `spec.parameters` (`apiGroup: portico.dev`,
//! `kind: ProxyClass`, `scope: Cluster`). Every field is optional: a class without a ProxyClass,
//! or a ProxyClass with an empty spec, gets the defaults documented on each field, so a cluster
//! works before anyone writes one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// `IngressClass.spec.parameters.kind` that selects a ProxyClass.
pub const PROXY_CLASS_KIND: &str = "ProxyClass";
/// `IngressClass.spec.parameters.apiGroup` that selects a ProxyClass.
pub const PROXY_CLASS_GROUP: &str = "portico.dev";

/// Deployment, Service and runtime settings for the proxies of the IngressClasses that name
/// this ProxyClass in `spec.parameters`.
// Clippy reads the repeated `type_` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "portico.dev",
    version = "v1alpha1",
    kind = "ProxyClass",
    shortname = "pxc",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        description = "Proxy replicas per IngressClass",
        json_path = ".spec.replicas"
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        description = "Type of the proxy Service",
        json_path = ".spec.service.type"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        priority = 1,
        json_path = ".spec.image"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProxyClassSpec {
    /// Proxy pods per IngressClass. Default 2, so that a rollout or a node drain keeps one
    /// serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Proxy image. Default: the `portico-proxy` image of the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Compute resources of the proxy container. Default: requests of 100m CPU and 64Mi memory,
    /// no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels a proxy pod's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the proxy pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// The Service in front of the proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ProxyService>,
    /// Addresses (IPs or DNS names) written into the status of the class's Ingresses when the
    /// Service has no load-balancer address, e.g. behind an external load balancer or with a
    /// NodePort Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a) || a.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))")
        .message("publishAddresses entries must be IP addresses or lower-case DNS names"))]
    pub publish_addresses: Vec<String>,
    /// Namespace whose IngressPolicy `overrides` on this class are honoured. Default: the
    /// operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub platform_namespace: Option<String>,
    /// How the proxy learns a client's address when it sits behind other proxies.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpDetection>,
    /// How long in-flight requests may take to finish when a proxy pod stops. Default 30s; the
    /// pod's termination grace period is set longer than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Duration>,
    /// Proxy logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Request tracing (OpenTelemetry). Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
}

/// Kubernetes Service types the proxies can be exposed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// An external load balancer from the cloud provider (default).
    #[default]
    LoadBalancer,
    /// A port on every node.
    NodePort,
    /// A cluster-internal address only, e.g. behind another load balancer.
    #[serde(rename = "ClusterIP")]
    ClusterIp,
}

impl ServiceType {
    /// The name as written in a Service.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoadBalancer => "LoadBalancer",
            Self::NodePort => "NodePort",
            Self::ClusterIp => "ClusterIP",
        }
    }
}

/// `externalTrafficPolicy` of the Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TrafficPolicy {
    /// Any node forwards to any proxy (client addresses are lost to SNAT).
    Cluster,
    /// Only nodes with a proxy receive traffic, and client addresses are kept.
    Local,
}

/// The proxy Service.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("!has(self.externalTrafficPolicy) || self.type != 'ClusterIP'")
    .message("externalTrafficPolicy applies to LoadBalancer and NodePort Services only"))]
#[serde(rename_all = "camelCase")]
pub struct ProxyService {
    /// Default `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub r#type: ServiceType,
    /// Annotations of the Service, e.g. for the cloud provider's load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,
    /// Service port of plain HTTP. Default 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub http_port: Option<i32>,
    /// Service port of HTTPS. Default 443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub https_port: Option<i32>,
    /// Node port of plain HTTP (NodePort and LoadBalancer). Default: chosen by Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub http_node_port: Option<i32>,
    /// Node port of HTTPS (NodePort and LoadBalancer). Default: chosen by Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub https_node_port: Option<i32>,
    /// Default: Kubernetes' default (`Cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// `loadBalancerClass` of the Service, to pick a load-balancer implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub load_balancer_class: Option<String>,
}

/// Client address detection. Without it the client is the TCP peer.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpDetection {
    /// Peers whose `X-Forwarded-For` is believed: the client is the last address in it that
    /// is not itself trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 3, max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("trustedProxies entries must be CIDRs such as 10.0.0.0/8 or 2001:db8::/32"))]
    pub trusted_proxies: Vec<String>,
    /// Expect a PROXY protocol (v1 or v2) header on every connection, as sent by load
    /// balancers configured for it. Connections without one are refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
}

/// Log line formats.
// Also the type of both programs' `--log-format` (feature `clap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    #[default]
    Json,
}

/// Proxy logs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Logging {
    /// Default `Json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a tracing directive such as
    /// `portico_proxy=debug,info`. Default `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_=,:.\-]+$"))]
    pub level: Option<String>,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP over gRPC (default).
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    Http,
}

/// Request tracing with OpenTelemetry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tracing {
    /// OTLP collector, e.g. `http://otel-collector.observability:4317`.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^https?://"))]
    pub endpoint: String,
    /// Default `grpc`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Fraction of new traces sampled, from 0 to 1. Requests that arrive with a sampled parent
    /// follow their parent. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: Option<f64>,
}
