//! IngressPolicy: typed traffic policy (timeouts, retries, rate limits, authentication, mTLS,
//! IP access, CORS, header edits, body size) attached to IngressClasses, Ingresses or single
//! Ingress paths.
//!
//! Everything a user writes is validated twice by the API server: by the OpenAPI schema (types,
//! enums, patterns, lengths, ranges) and by CEL rules (`x-kubernetes-validations`) for the
//! relations between fields. Nothing is free text copied into proxy configuration: header
//! values are literals, hosts and paths are matched, never interpreted.
//!
//! Precedence (applied by the translator, per block): `overrides` from IngressClass targets in
//! the platform namespace win; otherwise the most specific `defaults` win (path > Ingress >
//! IngressClass). Each block is taken whole, never merged field by field, and a block with
//! `disabled: true` removes a less specific default.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Portico's controller name: the `spec.controller` of IngressClasses it serves, and the
/// `status.ancestors[].controllerName` it writes.
pub const CONTROLLER_NAME: &str = "portico.dev/ingress-controller";

/// Gateway API Duration: up to four `<digits><unit>` groups, units `h`, `m`, `s`, `ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// HTTP header field name: one or more RFC 9110 token characters.
pub const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";

/// Headers a policy may not set, add or remove: hop-by-hop headers, `Host` and the framing
/// headers the proxy owns.
pub const PROTECTED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A rule for an optional block: either `disabled: true` alone, or at least one of `fields`.
fn block_rule(block: &str, fields: &[&str]) -> Rule {
    let any = fields
        .iter()
        .map(|f| format!("has(self.{f})"))
        .collect::<Vec<_>>()
        .join(" || ");
    Rule::new(format!(
        "has(self.disabled) && self.disabled ? !({any}) : ({any})"
    ))
    .message(kube::core::Message::Message(format!(
        "{block}: set either `disabled: true` alone (to drop an inherited default) or at least one of: {}",
        fields.join(", ")
    )))
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------------
// Scalar newtypes with their own schema.

/// A Gateway API Duration string such as `1m30s` or `250ms`. Must be greater than zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Duration(pub String);

impl Duration {
    /// The duration as a [`std::time::Duration`].
    pub fn to_std(&self) -> Result<std::time::Duration, String> {
        parse_duration(&self.0)
    }

    /// The duration in whole milliseconds (saturating).
    pub fn as_millis(&self) -> Result<u64, String> {
        self.to_std()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl From<&str> for Duration {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A Gateway API Duration: up to four <number><unit> groups with units h, m, s or ms, e.g. 1h30m, 10s, 250ms.",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
            "x-kubernetes-validations": [{
                "rule": "duration(self) > duration('0s')",
                "message": "must be greater than zero"
            }]
        })
    }
}

/// An HTTP header name (RFC 9110 token). Matched case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct HeaderName(pub String);

impl From<&str> for HeaderName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl JsonSchema for HeaderName {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "HeaderName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An HTTP header name (letters, digits and !#$%&'*+.^_`|~-).",
            "pattern": HEADER_NAME_PATTERN,
            "minLength": 1,
            "maxLength": 256
        })
    }
}

/// A header name a policy writes: a [`HeaderName`] that is not hop-by-hop, `Host` or
/// `Content-Length`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct WritableHeaderName(pub String);

impl From<&str> for WritableHeaderName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl JsonSchema for WritableHeaderName {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "WritableHeaderName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let list = PROTECTED_HEADERS
            .iter()
            .map(|h| format!("'{h}'"))
            .collect::<Vec<_>>()
            .join(", ");
        json_schema!({
            "type": "string",
            "description": "An HTTP header name a policy may write: not a hop-by-hop header, Host or Content-Length.",
            "pattern": HEADER_NAME_PATTERN,
            "minLength": 1,
            "maxLength": 256,
            "x-kubernetes-validations": [{
                "rule": format!("!(self.lowerAscii() in [{list}])"),
                "message": "hop-by-hop headers (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Connection), Host and Content-Length are managed by the proxy and cannot be used here"
            }]
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The resource.

/// Traffic policy for IngressClasses, Ingresses and Ingress paths in this namespace.
// Clippy reads the repeated `type_` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "portico.dev",
    version = "v1alpha1",
    kind = "IngressPolicy",
    namespaced,
    status = "IngressPolicyStatus",
    shortname = "ipol",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "Target",
        type_ = "string",
        description = "The first target (see spec for all)",
        json_path = ".spec.targetRefs[0].name"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        description = "Accepted condition of the first ancestor",
        json_path = ".status.ancestors[0].conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        description = "Programmed condition of the first ancestor",
        json_path = ".status.ancestors[0].conditions[?(@.type==\"Programmed\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "(has(self.targetRefs) && size(self.targetRefs) > 0) || (has(self.targetSelectors) && size(self.targetSelectors) > 0)"
).message("at least one target is required: set targetRefs or targetSelectors"))]
#[x_kube(validation = Rule::new("has(self.defaults) || has(self.overrides)")
    .message("set defaults, overrides, or both"))]
#[x_kube(validation = Rule::new(
    "!has(self.overrides) || ((!has(self.targetSelectors) || size(self.targetSelectors) == 0) && has(self.targetRefs) && self.targetRefs.all(r, r.kind == 'IngressClass'))"
).message("overrides are only allowed when every targetRef is an IngressClass and there are no targetSelectors; use defaults for Ingresses and paths"))]
#[serde(rename_all = "camelCase")]
pub struct IngressPolicySpec {
    /// Objects this policy attaches to: IngressClasses, Ingresses in this namespace, or one
    /// path of an Ingress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<PolicyTargetRef>,
    /// Ingresses in this namespace selected by labels. Weaker than a targetRef at the same level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub target_selectors: Vec<PolicyTargetSelector>,
    /// Blocks applied unless a more specific default or an override sets the same block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<PolicyBody>,
    /// Blocks that win over every default. Only on IngressClass targets, and only honoured
    /// from the platform namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<PolicyBody>,
}

/// Kinds a targetRef may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    /// A Portico IngressClass (cluster-scoped).
    #[default]
    IngressClass,
    /// An Ingress in the policy's namespace, or one of its paths.
    Ingress,
}

/// The API group of targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum TargetGroup {
    /// `networking.k8s.io`.
    #[default]
    #[serde(rename = "networking.k8s.io")]
    NetworkingK8sIo,
}

/// Ingress path types, as in the Ingress spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TargetPathType {
    Exact,
    Prefix,
    ImplementationSpecific,
}

impl TargetPathType {
    /// The name as written in an Ingress.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "Exact",
            Self::Prefix => "Prefix",
            Self::ImplementationSpecific => "ImplementationSpecific",
        }
    }
}

/// A reference to an IngressClass, an Ingress, or one path of an Ingress.
///
/// A path target names the Ingress rule by `host` (`""` selects rules without a host) and the
/// path exactly as written in the Ingress; `pathType` narrows it when the same path appears
/// with two types.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.kind == 'Ingress' || (!has(self.host) && !has(self.path) && !has(self.pathType))")
    .message("host, path and pathType are only allowed on targets of kind Ingress"))]
#[x_kube(validation = Rule::new("!has(self.path) || has(self.host)")
    .message("a path target needs host as well (use host: \"\" for Ingress rules without a host)"))]
#[x_kube(validation = Rule::new("!has(self.host) || has(self.path)")
    .message("host is only used together with path to select one Ingress path"))]
#[x_kube(validation = Rule::new("!has(self.pathType) || has(self.path)")
    .message("pathType requires path"))]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// Always `networking.k8s.io`.
    pub group: TargetGroup,
    /// `IngressClass` or `Ingress`.
    pub kind: TargetKind,
    /// Name of the IngressClass or Ingress.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Host of the Ingress rule holding the path; `""` for rules without a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(
            pattern = r"^$|^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        )
    )]
    pub host: Option<String>,
    /// The path as written in the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// Narrows a path target to the path of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_type: Option<TargetPathType>,
}

/// Kinds a targetSelector may select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum SelectorKind {
    #[default]
    Ingress,
}

/// Ingresses of the policy's namespace selected by labels. An empty selector is rejected, so
/// that a policy never silently applies to every Ingress of a namespace.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new(
    "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)"
).message("a targetSelector needs matchLabels or matchExpressions (an empty selector would select every Ingress in the namespace)"))]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetSelector {
    /// Always `Ingress`.
    pub kind: SelectorKind,
    /// Labels an Ingress must all have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub match_labels: BTreeMap<String, String>,
    /// Label requirements an Ingress must all meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<LabelRequirement>,
}

/// Label selector operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One label requirement, as in a Kubernetes LabelSelector.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new(
    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)"
).message("values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"))]
#[serde(rename_all = "camelCase")]
pub struct LabelRequirement {
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    pub operator: LabelOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 63)))]
    pub values: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The body.

/// The policy blocks. Each is optional and taken whole by precedence.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct PolicyBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificatePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_access: Option<IpAccessPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeadersPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyPolicy>,
}

/// `timeouts`.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = block_rule("timeouts", &["request", "backendRequest", "connect", "idle", "requestHeaders"]))]
#[x_kube(validation = Rule::new(
    "!has(self.request) || !has(self.backendRequest) || duration(self.backendRequest) <= duration(self.request)"
).message("backendRequest (one try) must not be longer than request (the whole request, retries included)"))]
#[serde(rename_all = "camelCase")]
pub struct TimeoutPolicy {
    /// Drop an inherited default `timeouts` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// The whole request, retries included (504 when exceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// One try to the backend (504 when exceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
    /// TCP and TLS connect to an endpoint, when a request needs a new connection (default:
    /// the proxy's --connect-timeout). Running out answers 504 and ejects the endpoint for a
    /// while, like a refused connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// The longest nothing may move between the proxy and the backend during a request, in
    /// either direction (request body sent, response head or body received). Before the
    /// response head: 504; after it: the response is cut short (the client's connection closed
    /// or its HTTP/2 stream reset). Unset: no limit. Upgraded (WebSocket) connections are not
    /// watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
    /// Not applied per route: request headers are read before the route is known, so every
    /// request gets the proxy's --header-read-timeout (408 when exceeded). A policy that sets
    /// it is reported as PartiallyProgrammed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Duration>,
}

/// Retry conditions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    /// 502, 503 and 504.
    GatewayError,
    #[serde(rename = "5xx")]
    FiveXx,
    /// The codes listed in `statusCodes`.
    RetriableStatusCodes,
}

/// `retry`.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.disabled) && self.disabled ? !has(self.attempts) : has(self.attempts)")
    .message("retry: set attempts, or `disabled: true` alone to drop an inherited default"))]
#[x_kube(validation = Rule::new(
    "(has(self.on) && 'retriable-status-codes' in self.on) == (has(self.statusCodes) && size(self.statusCodes) > 0)"
).message("statusCodes and the retriable-status-codes condition in `on` go together"))]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Drop an inherited default `retry` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Retries after the first try; 0 turns retries off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub attempts: Option<u32>,
    /// Timeout of each try (defaults to timeouts.backendRequest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// When to retry. Empty means connect-failure and refused-stream, which are safe for
    /// every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub on: Vec<RetryOn>,
    /// Status codes retried under retriable-status-codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 400, max = 599)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub status_codes: Vec<u16>,
    /// Exponential backoff between tries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<RetryBackoff>,
    /// Retries allowed as a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Also retry POST, PATCH and other non-idempotent requests. Off by default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub non_idempotent: bool,
}

/// Backoff between tries.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("duration(self.base) <= duration(self.max)")
    .message("backoff.base must not be longer than backoff.max"))]
#[serde(rename_all = "camelCase")]
pub struct RetryBackoff {
    pub base: Duration,
    pub max: Duration,
}

/// Retry budget.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries allowed as a percentage of requests.
    #[schemars(range(min = 1, max = 100))]
    pub percent: u32,
    /// Retries always allowed per second, whatever the percentage.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub min_per_second: u32,
}

/// `rateLimit`.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = block_rule("rateLimit", &["rules", "concurrency"]))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicy {
    /// Drop an inherited default `rateLimit` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Request-rate rules; a request must pass all that match it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub rules: Vec<RateLimitRule>,
    /// Cap on requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyLimit>,
}

/// One rate-limit rule.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new(
    "!(self.key.type in ['JWTClaim', 'APIKey']) || !has(self.stage) || self.stage == 'PostAuth'"
).message("JWTClaim and APIKey keys are only known after authentication: use stage PostAuth (the default for them)"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRule {
    /// Unique within the block; names the bucket.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Which requests this rule counts; absent counts all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<RateLimitMatch>,
    /// What requests are counted by.
    pub key: RateLimitKey,
    pub limit: RateLimitValue,
    /// How the limit is shared among proxy replicas (default PerReplica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaMode>,
    /// Whether targets share one bucket (default PerTarget: each route its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketMode>,
    /// Before or after authentication (default PreAuth, PostAuth for JWTClaim and APIKey keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<RateLimitStage>,
}

/// HTTP methods.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl HttpMethod {
    /// The upper-case method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
        }
    }
}

/// Which requests a rate-limit rule counts; all present conditions must hold.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.methods) || has(self.pathPrefix) || has(self.headers)")
    .message("match needs methods, pathPrefix or headers; omit match to count every request"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub methods: Vec<HttpMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub headers: Vec<HeaderMatch>,
}

/// A header equality match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    pub name: HeaderName,
    #[schemars(length(max = 4096), regex(pattern = r"^[^\r\n\x00]*$"))]
    pub value: String,
}

/// Rate-limit key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum KeyType {
    /// The client IP (per the class's trusted-proxy settings).
    #[serde(rename = "ClientIP")]
    ClientIp,
    /// A request header, named by `name`.
    Header,
    /// A claim of the verified JWT, named by `name`.
    #[serde(rename = "JWTClaim")]
    JwtClaim,
    /// The client id of the matched API key.
    #[serde(rename = "APIKey")]
    ApiKey,
    /// One counter for everyone.
    Global,
}

/// What a limit counts by.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("(self.type in ['Header', 'JWTClaim']) == has(self.name)")
    .message("name is required for Header and JWTClaim keys, and not allowed for the other key types"))]
#[x_kube(validation = Rule::new(
    "self.type != 'Header' || self.name.matches('^[A-Za-z0-9!#$%&*+.^_|~-]+$')"
).message("a Header key name must be an HTTP header name"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitKey {
    pub r#type: KeyType,
    /// Header name or claim name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
}

/// `requests` per `period`, plus `burst` requests allowed at once.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitValue {
    #[schemars(range(min = 1, max = 1000000))]
    pub requests: u32,
    pub period: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub burst: Option<u32>,
}

/// How a limit is shared among proxy replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum ReplicaMode {
    /// Each replica enforces the whole limit.
    #[default]
    PerReplica,
    /// Each replica enforces the limit divided by the number of replicas.
    DividedAmongReplicas,
    /// Counters are shared (Redis) and the limit holds across replicas.
    Distributed,
}

/// Whether targets share counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum BucketMode {
    /// Each route (Ingress path) has its own bucket.
    #[default]
    PerTarget,
    /// Every route the policy applies to shares one bucket per rule.
    Shared,
}

/// When a rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum RateLimitStage {
    #[default]
    PreAuth,
    PostAuth,
}

/// Cap on requests in flight; 503 above it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyLimit {
    #[schemars(range(min = 1, max = 100000))]
    pub max_in_flight: u32,
    /// Cap per key; absent means one cap for the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
}

/// A Secret or ConfigMap in the policy's namespace.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// `authentication`: a request passes when any configured method accepts it.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = block_rule("authentication", &["basic", "jwt", "apiKey", "external"]))]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationPolicy {
    /// Drop an inherited default `authentication` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalAuth>,
}

/// HTTP basic authentication.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// A Secret holding an htpasswd file under key `auth` (as ingress-nginx) or `.htpasswd`.
    /// bcrypt, `{SHA}` and apr1 hashes.
    pub secret_ref: LocalObjectRef,
    /// Realm shown by browsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = r#"^[^"\\\r\n\x00]*$"#))]
    pub realm: Option<String>,
}

/// JWT bearer tokens.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtAuth {
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub providers: Vec<JwtProvider>,
}

/// One token issuer.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.localJWKS) != has(self.remoteJWKS)")
    .message("set exactly one of localJWKS and remoteJWKS"))]
#[serde(rename_all = "camelCase")]
pub struct JwtProvider {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Required `iss`; absent means not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty means not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    pub audiences: Vec<String>,
    /// Key set from a Secret or ConfigMap in this namespace.
    #[serde(default, rename = "localJWKS", skip_serializing_if = "Option::is_none")]
    pub local_jwks: Option<LocalJwks>,
    /// Key set fetched over HTTPS by the proxy.
    #[serde(
        default,
        rename = "remoteJWKS",
        skip_serializing_if = "Option::is_none"
    )]
    pub remote_jwks: Option<RemoteJwks>,
    /// Where the token is read from; absent means `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_from: Option<CredentialSources>,
    /// Claims copied into request headers (client-sent copies are removed first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Allowed clock skew for `exp` and `nbf` (default 0s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<Duration>,
    /// Forward the token to the backend (default: it is stripped).
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_token: bool,
}

/// A JWKS document in a Secret or ConfigMap.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.configMapRef)")
    .message("set exactly one of secretRef and configMapRef"))]
#[serde(rename_all = "camelCase")]
pub struct LocalJwks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectRef>,
    /// Data key holding the JWKS JSON.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A JWKS fetched by the proxy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteJwks {
    /// An `https://` URL.
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https://[^\s]+$"))]
    pub uri: String,
    /// How long a fetched key set is used (default 5m); an unknown `kid` refetches sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<Duration>,
}

/// Places a credential is read from.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.headers) || has(self.cookies) || has(self.query)")
    .message("extractFrom needs headers, cookies or query; omit it for the default"))]
#[serde(rename_all = "camelCase")]
pub struct CredentialSources {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub headers: Vec<HeaderSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 4),
        inner(
            length(min = 1, max = 256),
            regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
        )
    )]
    pub cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 4),
        inner(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9._~-]+$"))
    )]
    pub query: Vec<String>,
}

/// A header a credential is read from, with a prefix to strip (e.g. `Bearer `).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSource {
    pub name: HeaderName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^[^\r\n\x00]*$"))]
    pub prefix: Option<String>,
}

/// A claim copied into a request header.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    #[schemars(length(min = 1, max = 256))]
    pub claim: String,
    pub header: WritableHeaderName,
}

/// Static API keys.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAuth {
    /// Secrets in this namespace; each data key is a client id, its value the API key.
    #[schemars(length(min = 1, max = 16))]
    pub secret_refs: Vec<LocalObjectRef>,
    /// Where the key is read from; absent means the `x-api-key` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_from: Option<CredentialSources>,
    /// Header carrying the matched client id to the backend.
    #[serde(
        default,
        rename = "forwardClientIDHeader",
        skip_serializing_if = "Option::is_none"
    )]
    pub forward_client_id_header: Option<WritableHeaderName>,
}

/// Forward authentication.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAuth {
    pub http: ExternalHttpAuth,
}

/// Forward authentication over HTTP: 2xx lets the request through, anything else is returned
/// to the client.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.backendRef) != has(self.url)")
    .message("set exactly one of backendRef and url"))]
#[serde(rename_all = "camelCase")]
pub struct ExternalHttpAuth {
    /// A Service in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<ServiceBackendRef>,
    /// An absolute `http://` or `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: Option<String>,
    /// Path requested on the auth service (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\s?#]*$"))]
    pub path: Option<String>,
    /// Client request headers sent to the auth service; empty sends the standard set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers_to_auth: Vec<HeaderName>,
    /// Auth response headers copied onto the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub response_headers_to_backend: Vec<WritableHeaderName>,
    /// Time the auth service has to answer (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Let requests through when the auth service cannot be reached. Off by default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fail_open: bool,
}

/// A Service port in the policy's namespace.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackendRef {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// `clientCertificate`: mutual TLS.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.disabled) && self.disabled ? !has(self.caRef) : has(self.caRef)")
    .message("clientCertificate: set caRef, or `disabled: true` alone to drop an inherited default"))]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificatePolicy {
    /// Drop an inherited default `clientCertificate` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Secret with the CA bundle under `ca.crt`. The CA applies to the whole host (TLS
    /// handshakes happen before the path is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<LocalObjectRef>,
    /// Reject requests on these routes without a verified certificate (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Accepted SANs (DNS names, URIs, emails); empty accepts any verified certificate.
    #[serde(default, rename = "allowedSANs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    pub allowed_sans: Vec<String>,
}

/// Which address ipAccess looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum IpSourceKind {
    /// The TCP peer.
    #[default]
    Peer,
    /// The client IP as the class's trusted-proxy settings determine it.
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// `ipAccess`: deny wins over allow; a non-empty allow list denies everything else.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = block_rule("ipAccess", &["allow", "deny"]))]
#[serde(rename_all = "camelCase")]
pub struct IpAccessPolicy {
    /// Drop an inherited default `ipAccess` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// CIDRs allowed, e.g. `10.0.0.0/8` or `2001:db8::/32`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 3, max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("allow entries must be CIDRs such as 10.0.0.0/8 or 2001:db8::/32"))]
    pub allow: Vec<String>,
    /// CIDRs denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 3, max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("deny entries must be CIDRs such as 10.0.0.0/8 or 2001:db8::/32"))]
    pub deny: Vec<String>,
    /// Peer (default) or ClientIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpSourceKind>,
}

/// `cors`.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.disabled) && self.disabled ? !has(self.allowOrigins) : has(self.allowOrigins)")
    .message("cors: set allowOrigins, or `disabled: true` alone to drop an inherited default"))]
#[x_kube(validation = Rule::new("!has(self.allowCredentials) || !self.allowCredentials || !has(self.allowOrigins) || !('*' in self.allowOrigins)")
    .message("allowCredentials cannot be combined with the wildcard origin '*' (browsers refuse it); list the origins"))]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Drop an inherited default `cors` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Exact origins (`https://app.example.com`), `*`, or one-label wildcards
    /// (`https://*.example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^(\*|https?://(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?)$"
            )
        )
    )]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub allow_methods: Vec<HttpMethod>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allow_headers: Vec<HeaderName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub expose_headers: Vec<HeaderName>,
    /// Seconds a preflight answer may be cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_age: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_credentials: bool,
}

/// `headers`.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = block_rule("headers", &["request", "response"]))]
#[serde(rename_all = "camelCase")]
pub struct HeadersPolicy {
    /// Drop an inherited default `headers` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Edits to the request before it goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderEdits>,
    /// Edits to the response before it goes to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderEdits>,
}

/// Literal header edits, applied remove, then set, then add.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.set) || has(self.add) || has(self.remove)")
    .message("header edits need set, add or remove"))]
#[serde(rename_all = "camelCase")]
pub struct HeaderEdits {
    /// Replace (or create) these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, a.name.lowerAscii() == b.name.lowerAscii()))").message("each header may be set only once"))]
    pub set: Vec<HeaderLiteral>,
    /// Append these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub add: Vec<HeaderLiteral>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub remove: Vec<WritableHeaderName>,
}

/// A header name and a literal value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderLiteral {
    pub name: WritableHeaderName,
    /// A literal value: no variables are expanded, no CR, LF or NUL.
    #[schemars(length(max = 4096), regex(pattern = r"^[^\r\n\x00]*$"))]
    pub value: String,
}

/// `body`.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.disabled) && self.disabled ? !has(self.maxRequestSize) : has(self.maxRequestSize)")
    .message("body: set maxRequestSize, or `disabled: true` alone to drop an inherited default"))]
#[serde(rename_all = "camelCase")]
pub struct BodyPolicy {
    /// Drop an inherited default `body` block.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// Largest request body accepted (413 above), a quantity such as `8Mi` or `1G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).isInteger()"
    ).message("maxRequestSize must be a positive whole number of bytes such as 1048576, 512Ki, 8Mi or 1G"))]
    pub max_request_size: Option<Quantity>,
}

// ---------------------------------------------------------------------------------------------
// Status.

/// Condition types and reasons written into [`PolicyCondition`].
pub mod conditions {
    /// The policy is valid and its targets exist.
    pub const ACCEPTED: &str = "Accepted";
    /// Every reference (Secrets, ConfigMaps, Services) resolved.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// The policy's blocks are in the proxies' configuration.
    pub const PROGRAMMED: &str = "Programmed";

    /// Reasons for `Accepted`.
    pub mod accepted {
        pub const ACCEPTED: &str = "Accepted";
        pub const INVALID: &str = "Invalid";
        pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
        pub const CONFLICTED: &str = "Conflicted";
    }

    /// Reasons for `ResolvedRefs`.
    pub mod resolved_refs {
        pub const RESOLVED_REFS: &str = "ResolvedRefs";
        pub const INVALID_REF: &str = "InvalidRef";
        pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
        pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    }

    /// Reasons for `Programmed`.
    pub mod programmed {
        pub const PROGRAMMED: &str = "Programmed";
        pub const PARTIALLY_PROGRAMMED: &str = "PartiallyProgrammed";
        pub const OVERRIDDEN: &str = "Overridden";
        pub const PENDING: &str = "Pending";
    }
}

/// Observed state of an IngressPolicy, one entry per target (ancestor).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressPolicyStatus {
    /// Per target, in the shape of Gateway API PolicyAncestorStatus.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The status of the policy for one target.
#[derive(KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: AncestorRef,
    /// Always `portico.dev/ingress-controller`.
    pub controller_name: String,
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<PolicyCondition>,
}

/// The target a status entry is about.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    pub group: String,
    pub kind: String,
    /// Absent for IngressClasses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// A condition, as `metav1.Condition` (lastTransitionTime optional: the status writer stamps it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// `Accepted`, `ResolvedRefs` or `Programmed`.
    pub r#type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// Parses a Gateway API Duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`), e.g. `1h30m` or `250ms`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why}");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut groups = 0;
    let mut total_ms: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return Err(bad("expected a number"));
        }
        if digits.len() > 5 {
            return Err(bad("at most 5 digits per unit"));
        }
        let n: u64 = digits.parse().map_err(|_| bad("bad number"))?;
        let unit_ms = match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'm'), Some(b's')) => {
                i += 2;
                1
            }
            (Some(b'h'), _) => {
                i += 1;
                3_600_000
            }
            (Some(b'm'), _) => {
                i += 1;
                60_000
            }
            (Some(b's'), _) => {
                i += 1;
                1_000
            }
            _ => return Err(bad("expected a unit h, m, s or ms")),
        };
        groups += 1;
        if groups > 4 {
            return Err(bad("at most 4 groups"));
        }
        total_ms += n * unit_ms;
    }
    Ok(std::time::Duration::from_millis(total_ms))
}

/// A duration on either program's command line: a [`parse_duration`] duration, or a bare number
/// of seconds.
pub fn parse_flag_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(std::time::Duration::from_secs)
            .map_err(|_| format!("invalid duration {s:?}: too large"));
    }
    parse_duration(s)
}

/// Parses a Kubernetes quantity (`1048576`, `512Ki`, `8Mi`, `1G`, `1.5Gi`, `1e6`) as a whole
/// number of bytes. Fractions of a byte round up, as Kubernetes does; negative values and
/// milli-units that do not make a whole byte are rejected.
pub fn parse_quantity_bytes(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid quantity {s:?}: {why}");
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(bad("expected a number"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // Value = mantissa / 10^frac_digits * multiplier / divisor.
    let mantissa: u128 = format!("{int_part}{frac_part}")
        .trim_start_matches('0')
        .parse::<u128>()
        .or_else(|e| {
            if format!("{int_part}{frac_part}").chars().all(|c| c == '0') {
                Ok(0)
            } else {
                Err(e)
            }
        })
        .map_err(|_| bad("number too large"))?;
    let mut divisor: u128 = 10u128
        .checked_pow(u32::try_from(frac_part.len()).map_err(|_| bad("too many digits"))?)
        .ok_or_else(|| bad("too many digits"))?;
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "m" => {
            divisor *= 1000;
            1
        }
        e if e.starts_with(['e', 'E']) => {
            let exp: u32 = e[1..]
                .parse()
                .map_err(|_| bad("bad exponent (negative exponents are not bytes)"))?;
            10u128.checked_pow(exp).ok_or_else(|| bad("too large"))?
        }
        _ => return Err(bad("unknown suffix")),
    };
    let scaled = mantissa
        .checked_mul(multiplier)
        .ok_or_else(|| bad("too large"))?;
    let bytes = scaled.div_ceil(divisor);
    u64::try_from(bytes).map_err(|_| bad("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("10s"), Ok(10_000));
        assert_eq!(ms("1m"), Ok(60_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("1m1ms"), Ok(60_001));
        assert_eq!(ms("1h1m1s1ms"), Ok(3_661_001));
        assert_eq!(ms("0s"), Ok(0));
        assert_eq!(ms("99999h"), Ok(99_999 * 3_600_000));
    }

    #[test]
    fn flag_durations_also_take_bare_seconds() {
        let ms = |s: &str| parse_flag_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("30"), Ok(30_000));
        assert_eq!(ms(" 2 "), Ok(2_000));
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        for bad in ["", "1d", "s", "-1", "99999999999999999999"] {
            assert!(parse_flag_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_reject() {
        for s in [
            "",
            "10",
            "s",
            "1d",
            "1.5s",
            "-1s",
            "100000s",
            "1h1m1s1ms1s",
            "1 s",
            "1S",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn quantities_parse() {
        let q = parse_quantity_bytes;
        assert_eq!(q("1048576"), Ok(1_048_576));
        assert_eq!(q("512Ki"), Ok(524_288));
        assert_eq!(q("8Mi"), Ok(8 << 20));
        assert_eq!(q("1Gi"), Ok(1 << 30));
        assert_eq!(q("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(q("1G"), Ok(1_000_000_000));
        assert_eq!(q("2k"), Ok(2_000));
        assert_eq!(q("1e6"), Ok(1_000_000));
        assert_eq!(q("0.5"), Ok(1), "fractions of a byte round up");
        assert_eq!(q("1500m"), Ok(2));
        assert_eq!(q("0"), Ok(0));
    }

    #[test]
    fn quantities_reject() {
        for s in ["", "-1", "1Xi", "Mi", "1..2", "1e-3", "100Ei"] {
            assert!(parse_quantity_bytes(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn duration_pattern_matches_parser() {
        // Every pattern-valid example parses, and the parser's limits are the pattern's.
        assert_eq!(DURATION_PATTERN, r"^([0-9]{1,5}(h|m|s|ms)){1,4}$");
        assert!(parse_duration("12345h12345m12345s12345ms").is_ok());
    }
}
