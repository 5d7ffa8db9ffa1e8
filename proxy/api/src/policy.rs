//! The effective IngressPolicy of a route, as the proxy enforces it.
//!
//! The translator has already applied precedence (overrides, most specific default, `disabled`)
//! and resolved every reference: Secrets become their contents, Services become backend ids.
//! Each block is whole: the proxy never merges blocks.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One optional entry per IngressPolicy block. Blocks are boxed: most routes carry few or none,
/// and a route without policy then costs a handful of pointers, not every block's size.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoutePolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Box<Timeouts>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<Retry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Box<RateLimit>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Box<Authentication>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Box<ClientCertificate>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_access: Option<Box<IpAccess>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<Cors>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Box<Headers>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<Body>>,
    /// Which IngressPolicy (`namespace/name`) supplied each block, by block name
    /// (`timeouts`, `rateLimit`, ...). For logs, traces and `/config`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub origins: BTreeMap<String, String>,
}

impl RoutePolicy {
    /// True when no block applies.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `timeouts`. Each is optional; absent means the proxy's default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Timeouts {
    /// Whole request, retries included: 504 when exceeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// One try to the backend: 504 when exceeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_request_ms: Option<u64>,
    /// TCP (and TLS) connect to an endpoint: 504 and the endpoint ejected when exceeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    /// Longest silence between proxy and backend within one try, either direction: 504 before
    /// the response head, the response cut short after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    /// Time a client has to send the request headers. Not enforced per route (the headers are
    /// read before the route is known; `--header-read-timeout` applies); the translator says
    /// so in the policy's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers_ms: Option<u64>,
}

/// `retry`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Retry {
    /// Retries after the first try (0 disables).
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    pub on: Vec<RetryOn>,
    /// Status codes retried under `retriable-status-codes`.
    pub status_codes: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Retry POST, PATCH and other non-idempotent methods too.
    pub non_idempotent: bool,
}

/// Retry conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    /// 502, 503 and 504.
    GatewayError,
    #[serde(rename = "5xx")]
    FiveXx,
    RetriableStatusCodes,
}

/// Exponential backoff between tries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

/// Retries allowed as a share of requests, so retries cannot multiply an outage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryBudget {
    pub percent: u32,
    pub min_per_second: u32,
}

/// `rateLimit`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimit {
    pub rules: Vec<RateLimitRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// One rate-limit rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRule {
    pub name: String,
    /// Identity of the bucket: routes with the same `bucket_id` share counters. For `Shared`
    /// rules it names the policy and rule; for `PerTarget` the route too. A bucket whose id and
    /// rule are unchanged survives a snapshot swap.
    pub bucket_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<RateLimitMatch>,
    pub key: RateLimitKey,
    pub limit: Limit,
    #[serde(default)]
    pub replicas: Replicas,
    #[serde(default)]
    pub stage: Stage,
}

/// Which requests a rule counts. All present conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimitMatch {
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    pub headers: Vec<HeaderMatch>,
}

/// Header equality (name lower-case).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitKey {
    pub r#type: KeyType,
    /// Header name (lower-case) for `Header`, claim name for `JWTClaim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    #[serde(rename = "ClientIP")]
    ClientIp,
    Header,
    #[serde(rename = "JWTClaim")]
    JwtClaim,
    #[serde(rename = "APIKey")]
    ApiKey,
    Global,
}

/// `requests` per `period_ms`, with `burst` extra requests allowed at once.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Limit {
    pub requests: u32,
    pub period_ms: u64,
    pub burst: u32,
}

/// How a limit is shared among proxy replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Replicas {
    /// Each replica enforces the whole limit.
    #[default]
    PerReplica,
    /// Each replica enforces `limit / Snapshot::replicas`.
    DividedAmongReplicas,
    /// Counters live in Redis and the limit holds across replicas.
    Distributed,
}

/// Before or after authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Stage {
    #[default]
    PreAuth,
    PostAuth,
}

/// In-flight request cap; 503 above it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    pub max_in_flight: u32,
    /// Cap per key; absent means one cap for the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
}

/// `authentication`: a request passes when any configured method accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Authentication {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalAuth>,
}

/// HTTP basic authentication against an htpasswd file (bcrypt, `{SHA}` or apr1 lines).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BasicAuth {
    pub realm: String,
    /// Contents of the htpasswd file.
    pub htpasswd: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// JWT bearer tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtAuth {
    pub providers: Vec<JwtProvider>,
}

/// One token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtProvider {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    pub jwks: Jwks,
    /// Where the token is read from; empty means `Authorization: Bearer`.
    pub extract_from: Vec<TokenSource>,
    /// Claims copied into request headers (after the client's copies are removed).
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Allowed clock skew for `exp` and `nbf`.
    pub clock_skew_ms: u64,
    /// Forward the token to the backend (default: strip it).
    pub forward_token: bool,
}

/// Key set of a JWT provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Jwks {
    /// JWKS JSON resolved from a Secret or ConfigMap.
    Inline(String),
    /// Fetched by the proxy, cached, refetched on an unknown `kid`.
    Remote { uri: String, cache_duration_ms: u64 },
}

impl Default for Jwks {
    fn default() -> Self {
        Self::Inline(String::new())
    }
}

/// A place a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum TokenSource {
    /// Header name (lower-case) and a value prefix to strip, e.g. `Bearer `.
    Header {
        name: String,
        prefix: String,
    },
    Cookie(String),
    Query(String),
}

/// Claim name to request header name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClaimToHeader {
    pub claim: String,
    pub header: String,
}

/// Static API keys.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApiKeyAuth {
    /// Client id to key, from the referenced Secrets (each data key is a client id).
    pub keys: BTreeMap<String, String>,
    pub extract_from: Vec<TokenSource>,
    /// Header that carries the matched client id to the backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_client_id_header: Option<String>,
}

impl std::fmt::Debug for ApiKeyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyAuth")
            .field("clients", &self.keys.keys().collect::<Vec<_>>())
            .field("extract_from", &self.extract_from)
            .finish_non_exhaustive()
    }
}

/// Forward authentication over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExternalAuth {
    pub target: ExternalTarget,
    /// Path requested on the auth service (default `/`); the original path goes in
    /// `X-Forwarded-Uri`.
    pub path: String,
    /// Client request headers sent to the auth service (lower-case); empty sends the standard set.
    pub headers_to_auth: Vec<String>,
    /// Auth response headers copied onto the upstream request (lower-case).
    pub response_headers_to_backend: Vec<String>,
    pub timeout_ms: u64,
    /// Let requests through when the auth service cannot be reached.
    pub fail_open: bool,
}

/// Where forward auth goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExternalTarget {
    /// A backend id in [`crate::Snapshot::backends`].
    Backend(String),
    /// An absolute `http://` or `https://` URL.
    Url(String),
}

impl Default for ExternalTarget {
    fn default() -> Self {
        Self::Url(String::new())
    }
}

/// Per-route client certificate rules; the CA is per host ([`crate::SniHost::client_ca`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientCertificate {
    /// 403 without a verified client certificate.
    pub required: bool,
    /// Accepted SANs (DNS names, URIs, emails); empty accepts any verified certificate.
    pub allowed_sans: Vec<String>,
}

/// `ipAccess`: deny wins over allow; a non-empty allow list denies everything else.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpAccess {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub source: IpSource,
}

/// Which address ipAccess looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum IpSource {
    /// The TCP peer.
    #[default]
    Peer,
    /// The client IP as the class's trusted-proxy settings determine it.
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// `cors`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Cors {
    /// Exact origins, `*`, or `https://*.example.com`.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    pub allow_credentials: bool,
}

/// `headers`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Headers {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

/// Literal header edits, applied remove, then set, then add.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderOps {
    pub set: Vec<HeaderValue>,
    pub add: Vec<HeaderValue>,
    pub remove: Vec<String>,
}

/// A header name (lower-case) and literal value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

/// `body`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Body {
    /// 413 above this many bytes, by Content-Length or while streaming.
    pub max_request_bytes: u64,
}
