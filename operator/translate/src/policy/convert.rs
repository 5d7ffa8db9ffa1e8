//! One IngressPolicy body into resolved snapshot blocks: durations to milliseconds, quantities
//! to bytes, header names lower-cased, Secrets, ConfigMaps and Services resolved.
//!
//! A body is converted once per policy, not per route; only rate-limit bucket ids depend on the
//! route and are finished by [`Value::apply`].
//!
//! Failing closed: a block whose reference cannot be resolved is still applied in a form that
//! refuses requests, never dropped. A missing htpasswd Secret gives an empty htpasswd (every
//! request is refused with 401), a missing JWKS gives an empty key set, missing API key Secrets
//! give fewer (maybe no) keys, a missing external-auth Service gives a backend id without
//! endpoints (the auth call fails, so the request is refused unless `failOpen`), and a missing
//! client CA keeps `required: true` without a CA (no certificate can verify). A route whose
//! authentication cannot be resolved must never become open.
//!
//! The API server enforces the schema and CEL rules, but standalone mode reads files without
//! one, so the checks that matter for safety (durations, quantities, CIDRs, header names) are
//! repeated here and reported as `Invalid`.

use std::collections::BTreeMap;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{IngressBackend, IngressServiceBackend, ServiceBackendPort};
use portico_api::Backend;
use portico_api::policy as api;
use portico_crds as crd;

use crate::backend::Backends;
use crate::{Index, ObjectKey};

/// The nine blocks, in the order they are resolved and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Block {
    Timeouts,
    Retry,
    RateLimit,
    Authentication,
    ClientCertificate,
    IpAccess,
    Cors,
    Headers,
    Body,
}

impl Block {
    pub(crate) const ALL: [Block; 9] = [
        Block::Timeouts,
        Block::Retry,
        Block::RateLimit,
        Block::Authentication,
        Block::ClientCertificate,
        Block::IpAccess,
        Block::Cors,
        Block::Headers,
        Block::Body,
    ];

    /// The block's field name in the spec, used in `origins` and messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Block::Timeouts => "timeouts",
            Block::Retry => "retry",
            Block::RateLimit => "rateLimit",
            Block::Authentication => "authentication",
            Block::ClientCertificate => "clientCertificate",
            Block::IpAccess => "ipAccess",
            Block::Cors => "cors",
            Block::Headers => "headers",
            Block::Body => "body",
        }
    }
}

/// A rate-limit rule whose bucket id is finished per route.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuleTemplate {
    rule: api::RateLimitRule,
    shared: bool,
}

/// A resolved block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Timeouts(api::Timeouts),
    Retry(api::Retry),
    RateLimit(Vec<RuleTemplate>, Option<api::Concurrency>),
    Authentication(api::Authentication),
    /// The per-route rules and the host's CA (PEM), `None` when it could not be resolved.
    ClientCertificate(api::ClientCertificate, Option<String>),
    IpAccess(api::IpAccess),
    Cors(api::Cors),
    Headers(api::Headers),
    Body(api::Body),
}

impl Value {
    /// Writes this block into `policy` for the route `route_id`.
    pub(crate) fn apply(&self, policy: &mut api::RoutePolicy, route_id: &str) {
        match self {
            Value::Timeouts(v) => policy.timeouts = Some(Box::new(v.clone())),
            Value::Retry(v) => policy.retry = Some(Box::new(v.clone())),
            Value::RateLimit(rules, concurrency) => {
                policy.rate_limit = Some(Box::new(api::RateLimit {
                    rules: rules
                        .iter()
                        .map(|t| {
                            let mut rule = t.rule.clone();
                            if !t.shared {
                                rule.bucket_id = format!("{}/{route_id}", rule.bucket_id);
                            }
                            rule
                        })
                        .collect(),
                    concurrency: concurrency.clone(),
                }));
            }
            Value::Authentication(v) => policy.authentication = Some(Box::new(v.clone())),
            Value::ClientCertificate(v, _) => policy.client_certificate = Some(Box::new(v.clone())),
            Value::IpAccess(v) => policy.ip_access = Some(Box::new(v.clone())),
            Value::Cors(v) => policy.cors = Some(Box::new(v.clone())),
            Value::Headers(v) => policy.headers = Some(Box::new(v.clone())),
            Value::Body(v) => policy.body = Some(Box::new(v.clone())),
        }
    }
}

/// What a body sets for one block: `None` for `disabled: true`.
pub(crate) type Setting = Option<Value>;

/// A converted body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Converted {
    /// Blocks the body sets, disabled ones included.
    pub(crate) blocks: BTreeMap<Block, Setting>,
    /// Backends (external auth Services) the blocks refer to, by id.
    pub(crate) backends: BTreeMap<String, Backend>,
}

/// Problems found while converting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Problems {
    /// Semantic errors: the policy is not accepted.
    pub(crate) invalid: Vec<String>,
    /// Unresolved references: `(reason, message)`.
    pub(crate) refs: Vec<(&'static str, String)>,
    /// Fields accepted but not enforced per route, by block: reported in `Programmed` wherever
    /// the block applies.
    pub(crate) unapplied: Vec<(Block, String)>,
}

/// Converts `body` of policy `namespace/name`; `part` is `defaults` or `overrides`.
pub(crate) struct Converter<'a, 'i> {
    pub(crate) index: &'i Index,
    pub(crate) backends: &'a mut Backends<'i>,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) part: &'static str,
    pub(crate) problems: &'a mut Problems,
}

const DEFAULT_REALM: &str = "Authentication Required";
const DEFAULT_JWKS_CACHE_MS: u64 = 300_000;
const DEFAULT_EXTERNAL_TIMEOUT_MS: u64 = 2_000;
const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

impl Converter<'_, '_> {
    pub(crate) fn convert(&mut self, body: &crd::PolicyBody) -> Converted {
        let mut out = Converted::default();
        macro_rules! block {
            ($field:ident, $block:expr, $convert:ident) => {
                if let Some(b) = &body.$field {
                    let setting = if b.disabled {
                        None
                    } else {
                        Some(self.$convert(b, &mut out))
                    };
                    out.blocks.insert($block, setting);
                }
            };
        }
        block!(timeouts, Block::Timeouts, timeouts);
        block!(retry, Block::Retry, retry);
        block!(rate_limit, Block::RateLimit, rate_limit);
        block!(authentication, Block::Authentication, authentication);
        block!(
            client_certificate,
            Block::ClientCertificate,
            client_certificate
        );
        block!(ip_access, Block::IpAccess, ip_access);
        block!(cors, Block::Cors, cors);
        block!(headers, Block::Headers, headers);
        block!(body, Block::Body, body);
        out
    }

    fn invalid(&mut self, at: &str, why: impl std::fmt::Display) {
        self.problems
            .invalid
            .push(format!("{}.{at}: {why}", self.part));
    }

    fn ms(&mut self, at: &str, d: &crd::Duration) -> u64 {
        match d.as_millis() {
            Ok(0) => {
                self.invalid(at, "must be greater than zero");
                0
            }
            Ok(ms) => ms,
            Err(why) => {
                self.invalid(at, why);
                0
            }
        }
    }

    fn opt_ms(&mut self, at: &str, d: Option<&crd::Duration>) -> Option<u64> {
        d.map(|d| self.ms(at, d))
    }

    fn header(&mut self, at: &str, name: &str, writable: bool) -> String {
        let lower = name.to_ascii_lowercase();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b));
        if !token {
            self.invalid(at, format!("{name:?} is not an HTTP header name"));
        } else if writable && crd::PROTECTED_HEADERS.contains(&lower.as_str()) {
            self.invalid(
                at,
                format!("{name} is managed by the proxy and cannot be used by a policy"),
            );
        }
        lower
    }

    fn timeouts(&mut self, b: &crd::TimeoutPolicy, _: &mut Converted) -> Value {
        let t = api::Timeouts {
            request_ms: self.opt_ms("timeouts.request", b.request.as_ref()),
            backend_request_ms: self.opt_ms("timeouts.backendRequest", b.backend_request.as_ref()),
            connect_ms: self.opt_ms("timeouts.connect", b.connect.as_ref()),
            idle_ms: self.opt_ms("timeouts.idle", b.idle.as_ref()),
            request_headers_ms: self.opt_ms("timeouts.requestHeaders", b.request_headers.as_ref()),
        };
        if let (Some(total), Some(one)) = (t.request_ms, t.backend_request_ms)
            && one > total
        {
            self.invalid(
                "timeouts.backendRequest",
                "must not be longer than timeouts.request",
            );
        }
        if t == api::Timeouts::default() {
            self.invalid("timeouts", "sets no timeout");
        }
        if t.request_headers_ms.is_some() {
            self.problems.unapplied.push((
                Block::Timeouts,
                format!(
                    "{}.timeouts.requestHeaders is not applied: request headers are read before the route is known, so every request gets the proxy's --header-read-timeout",
                    self.part
                ),
            ));
        }
        Value::Timeouts(t)
    }

    fn retry(&mut self, b: &crd::RetryPolicy, _: &mut Converted) -> Value {
        let attempts = b.attempts.unwrap_or_else(|| {
            self.invalid("retry.attempts", "is required");
            0
        });
        if attempts > 10 {
            self.invalid("retry.attempts", "must be at most 10");
        }
        let mut on: Vec<api::RetryOn> = b.on.iter().map(|o| retry_on(*o)).collect();
        if on.is_empty() {
            // Safe for every method: the request never reached the backend.
            on = vec![api::RetryOn::ConnectFailure, api::RetryOn::RefusedStream];
        }
        on.sort();
        on.dedup();
        let listed = on.contains(&api::RetryOn::RetriableStatusCodes);
        if listed == b.status_codes.is_empty() {
            self.invalid(
                "retry.statusCodes",
                "statusCodes and the retriable-status-codes condition go together",
            );
        }
        let backoff = b.backoff.as_ref().map(|bo| api::Backoff {
            base_ms: self.ms("retry.backoff.base", &bo.base),
            max_ms: self.ms("retry.backoff.max", &bo.max),
        });
        if let Some(bo) = &backoff
            && bo.base_ms > bo.max_ms
        {
            self.invalid("retry.backoff", "base must not be longer than max");
        }
        let mut status_codes = b.status_codes.clone();
        status_codes.sort_unstable();
        status_codes.dedup();
        Value::Retry(api::Retry {
            attempts,
            per_try_timeout_ms: self.opt_ms("retry.perTryTimeout", b.per_try_timeout.as_ref()),
            on,
            status_codes,
            backoff,
            budget: b.budget.as_ref().map(|bu| api::RetryBudget {
                percent: bu.percent,
                min_per_second: bu.min_per_second,
            }),
            non_idempotent: b.non_idempotent,
        })
    }

    fn key(&mut self, at: &str, k: &crd::RateLimitKey) -> api::RateLimitKey {
        let (r#type, needs_name) = match k.r#type {
            crd::KeyType::ClientIp => (api::KeyType::ClientIp, false),
            crd::KeyType::Header => (api::KeyType::Header, true),
            crd::KeyType::JwtClaim => (api::KeyType::JwtClaim, true),
            crd::KeyType::ApiKey => (api::KeyType::ApiKey, false),
            crd::KeyType::Global => (api::KeyType::Global, false),
        };
        let name = match (&k.name, needs_name) {
            (Some(name), true) if k.r#type == crd::KeyType::Header => {
                Some(self.header(&format!("{at}.name"), name, false))
            }
            (Some(name), true) => Some(name.clone()),
            (None, true) => {
                self.invalid(at, "name is required for Header and JWTClaim keys");
                None
            }
            (Some(_), false) => {
                self.invalid(at, "name is only allowed for Header and JWTClaim keys");
                None
            }
            (None, false) => None,
        };
        api::RateLimitKey { r#type, name }
    }

    fn rate_limit(&mut self, b: &crd::RateLimitPolicy, _: &mut Converted) -> Value {
        let mut rules = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for rule in &b.rules {
            let at = format!("rateLimit.rules[{}]", rule.name);
            if !seen.insert(rule.name.as_str()) {
                self.invalid(&at, "rule names must be unique");
            }
            let key = self.key(&format!("{at}.key"), &rule.key);
            let after_auth = matches!(key.r#type, api::KeyType::JwtClaim | api::KeyType::ApiKey);
            let stage = match rule.stage {
                Some(crd::RateLimitStage::PreAuth) if after_auth => {
                    self.invalid(
                        &at,
                        "JWTClaim and APIKey keys are only known after authentication: use stage PostAuth",
                    );
                    api::Stage::PostAuth
                }
                Some(crd::RateLimitStage::PreAuth) => api::Stage::PreAuth,
                Some(crd::RateLimitStage::PostAuth) => api::Stage::PostAuth,
                None if after_auth => api::Stage::PostAuth,
                None => api::Stage::PreAuth,
            };
            if rule.limit.requests == 0 {
                self.invalid(&format!("{at}.limit.requests"), "must be at least 1");
            }
            let r#match = rule.r#match.as_ref().map(|m| api::RateLimitMatch {
                methods: m.methods.iter().map(|m| m.as_str().to_owned()).collect(),
                path_prefix: m.path_prefix.clone(),
                headers: m
                    .headers
                    .iter()
                    .map(|h| api::HeaderMatch {
                        name: self.header(&format!("{at}.match.headers"), &h.name.0, false),
                        value: h.value.clone(),
                    })
                    .collect(),
            });
            rules.push(RuleTemplate {
                rule: api::RateLimitRule {
                    name: rule.name.clone(),
                    bucket_id: format!("{}/{}/{}", self.namespace, self.name, rule.name),
                    r#match,
                    key,
                    limit: api::Limit {
                        requests: rule.limit.requests,
                        period_ms: self.ms(&format!("{at}.limit.period"), &rule.limit.period),
                        burst: rule.limit.burst.unwrap_or(0),
                    },
                    replicas: match rule.replicas.unwrap_or_default() {
                        crd::ReplicaMode::PerReplica => api::Replicas::PerReplica,
                        crd::ReplicaMode::DividedAmongReplicas => {
                            api::Replicas::DividedAmongReplicas
                        }
                        crd::ReplicaMode::Distributed => api::Replicas::Distributed,
                    },
                    stage,
                },
                shared: rule.bucket.unwrap_or_default() == crd::BucketMode::Shared,
            });
        }
        let concurrency = b.concurrency.as_ref().map(|c| api::Concurrency {
            max_in_flight: c.max_in_flight,
            key: c
                .key
                .as_ref()
                .map(|k| self.key("rateLimit.concurrency.key", k)),
        });
        if rules.is_empty() && concurrency.is_none() {
            self.invalid("rateLimit", "sets neither rules nor concurrency");
        }
        Value::RateLimit(rules, concurrency)
    }

    fn secret_value(&mut self, name: &str, keys: &[&str]) -> Result<String, String> {
        let Some(secret) = self
            .index
            .secrets
            .get(&ObjectKey::new(self.namespace, name))
        else {
            return Err(format!("Secret {}/{name} not found", self.namespace));
        };
        let data = secret.data.as_ref();
        for key in keys {
            if let Some(value) = data.and_then(|d| d.get(*key)) {
                return String::from_utf8(value.0.clone()).map_err(|_| {
                    format!(
                        "Secret {}/{name} key {key} is not UTF-8 text",
                        self.namespace
                    )
                });
            }
        }
        Err(format!(
            "Secret {}/{name} has no key {}",
            self.namespace,
            keys.join(" or ")
        ))
    }

    fn config_map_value(&mut self, name: &str, key: &str) -> Result<String, String> {
        let Some(cm) = self
            .index
            .config_maps
            .get(&ObjectKey::new(self.namespace, name))
        else {
            return Err(format!("ConfigMap {}/{name} not found", self.namespace));
        };
        if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.clone());
        }
        if let Some(v) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(v.0.clone()).map_err(|_| {
                format!(
                    "ConfigMap {}/{name} key {key} is not UTF-8 text",
                    self.namespace
                )
            });
        }
        Err(format!(
            "ConfigMap {}/{name} has no key {key}",
            self.namespace
        ))
    }

    fn bad_ref(&mut self, at: &str, why: String, consequence: &str) {
        self.problems.refs.push((
            crd::conditions::resolved_refs::INVALID_REF,
            format!("{}.{at}: {why}; {consequence}", self.part),
        ));
    }

    fn sources(&mut self, at: &str, s: Option<&crd::CredentialSources>) -> Vec<api::TokenSource> {
        let Some(s) = s else { return Vec::new() };
        let mut out = Vec::new();
        for h in &s.headers {
            out.push(api::TokenSource::Header {
                name: self.header(&format!("{at}.headers"), &h.name.0, false),
                prefix: h.prefix.clone().unwrap_or_default(),
            });
        }
        out.extend(s.cookies.iter().cloned().map(api::TokenSource::Cookie));
        out.extend(s.query.iter().cloned().map(api::TokenSource::Query));
        out
    }

    fn authentication(&mut self, b: &crd::AuthenticationPolicy, out: &mut Converted) -> Value {
        let mut auth = api::Authentication::default();
        if let Some(basic) = &b.basic {
            let htpasswd = match self.secret_value(&basic.secret_ref.name, &["auth", ".htpasswd"]) {
                Ok(text) => text,
                Err(why) => {
                    self.bad_ref(
                        "authentication.basic.secretRef",
                        why,
                        "basic authentication refuses every request",
                    );
                    String::new()
                }
            };
            auth.basic = Some(api::BasicAuth {
                realm: basic
                    .realm
                    .clone()
                    .unwrap_or_else(|| DEFAULT_REALM.to_owned()),
                htpasswd,
            });
        }
        if let Some(jwt) = &b.jwt {
            let mut providers = Vec::new();
            for p in &jwt.providers {
                let at = format!("authentication.jwt.providers[{}]", p.name);
                let jwks = match (&p.local_jwks, &p.remote_jwks) {
                    (Some(local), None) => {
                        let text = match (&local.secret_ref, &local.config_map_ref) {
                            (Some(s), None) => self.secret_value(&s.name, &[local.key.as_str()]),
                            (None, Some(c)) => self.config_map_value(&c.name, &local.key),
                            _ => {
                                self.invalid(
                                    &format!("{at}.localJWKS"),
                                    "set exactly one of secretRef and configMapRef",
                                );
                                Ok(String::new())
                            }
                        };
                        let text = text.and_then(|t| {
                            let doc: serde_json::Value = serde_json::from_str(&t)
                                .map_err(|e| format!("the JWKS is not JSON: {e}"))?;
                            if doc.get("keys").is_some_and(serde_json::Value::is_array) {
                                Ok(t)
                            } else {
                                Err("the JWKS has no \"keys\" array".to_owned())
                            }
                        });
                        api::Jwks::Inline(text.unwrap_or_else(|why| {
                            self.bad_ref(
                                &format!("{at}.localJWKS"),
                                why,
                                "no token from this provider is accepted",
                            );
                            String::new()
                        }))
                    }
                    (None, Some(remote)) => api::Jwks::Remote {
                        uri: remote.uri.clone(),
                        cache_duration_ms: self
                            .opt_ms(
                                &format!("{at}.remoteJWKS.cacheDuration"),
                                remote.cache_duration.as_ref(),
                            )
                            .unwrap_or(DEFAULT_JWKS_CACHE_MS),
                    },
                    _ => {
                        self.invalid(&at, "set exactly one of localJWKS and remoteJWKS");
                        api::Jwks::Inline(String::new())
                    }
                };
                let claim_to_headers = p
                    .claim_to_headers
                    .iter()
                    .map(|c| api::ClaimToHeader {
                        claim: c.claim.clone(),
                        header: self.header(&format!("{at}.claimToHeaders"), &c.header.0, true),
                    })
                    .collect();
                providers.push(api::JwtProvider {
                    name: p.name.clone(),
                    issuer: p.issuer.clone(),
                    audiences: p.audiences.clone(),
                    jwks,
                    extract_from: self
                        .sources(&format!("{at}.extractFrom"), p.extract_from.as_ref()),
                    claim_to_headers,
                    clock_skew_ms: p
                        .clock_skew
                        .as_ref()
                        .map_or(0, |d| self.ms(&format!("{at}.clockSkew"), d)),
                    forward_token: p.forward_token,
                });
            }
            if providers.is_empty() {
                self.invalid(
                    "authentication.jwt.providers",
                    "needs at least one provider",
                );
            }
            auth.jwt = Some(api::JwtAuth { providers });
        }
        if let Some(api_key) = &b.api_key {
            let mut keys = BTreeMap::new();
            for secret_ref in &api_key.secret_refs {
                match self
                    .index
                    .secrets
                    .get(&ObjectKey::new(self.namespace, &secret_ref.name))
                {
                    None => self.bad_ref(
                        "authentication.apiKey.secretRefs",
                        format!("Secret {}/{} not found", self.namespace, secret_ref.name),
                        "its keys are not accepted",
                    ),
                    Some(secret) => {
                        for (client, value) in secret.data.iter().flatten() {
                            match std::str::from_utf8(&value.0) {
                                // `echo key | kubectl create secret` leaves a newline.
                                Ok(key) if !key.trim().is_empty() => {
                                    keys.entry(client.clone())
                                        .or_insert_with(|| key.trim().to_owned());
                                }
                                _ => self.bad_ref(
                                    "authentication.apiKey.secretRefs",
                                    format!(
                                        "Secret {}/{} key {client} is empty or not UTF-8 text",
                                        self.namespace, secret_ref.name
                                    ),
                                    "that client is not accepted",
                                ),
                            }
                        }
                    }
                }
            }
            let mut extract_from = self.sources(
                "authentication.apiKey.extractFrom",
                api_key.extract_from.as_ref(),
            );
            if extract_from.is_empty() {
                extract_from.push(api::TokenSource::Header {
                    name: DEFAULT_API_KEY_HEADER.to_owned(),
                    prefix: String::new(),
                });
            }
            auth.api_key = Some(api::ApiKeyAuth {
                keys,
                extract_from,
                forward_client_id_header: api_key.forward_client_id_header.as_ref().map(|h| {
                    self.header("authentication.apiKey.forwardClientIDHeader", &h.0, true)
                }),
            });
        }
        if let Some(external) = &b.external {
            let h = &external.http;
            let target = match (&h.backend_ref, &h.url) {
                (Some(svc), None) => {
                    let backend = IngressBackend {
                        service: Some(IngressServiceBackend {
                            name: svc.name.clone(),
                            port: Some(ServiceBackendPort {
                                number: Some(i32::from(svc.port)),
                                name: None,
                            }),
                        }),
                        resource: None,
                    };
                    match self.backends.resolve(self.namespace, &backend) {
                        Ok(resolved) => {
                            let id = resolved.id.clone();
                            match &resolved.backend {
                                Some(b) => {
                                    out.backends.insert(id.clone(), b.clone());
                                }
                                None => self.problems.refs.push((
                                    crd::conditions::resolved_refs::BACKEND_NOT_FOUND,
                                    format!(
                                        "{}.authentication.external.http.backendRef: Service {}/{} port {} not found; authentication fails{}",
                                        self.part,
                                        self.namespace,
                                        svc.name,
                                        svc.port,
                                        if h.fail_open { " open (failOpen)" } else { " closed" }
                                    ),
                                )),
                            }
                            api::ExternalTarget::Backend(id)
                        }
                        Err(w) => {
                            self.invalid("authentication.external.http.backendRef", w.message);
                            api::ExternalTarget::Backend(format!(
                                "{}/{}:{}",
                                self.namespace, svc.name, svc.port
                            ))
                        }
                    }
                }
                (None, Some(url)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        self.invalid(
                            "authentication.external.http.url",
                            "must be an http:// or https:// URL",
                        );
                    }
                    api::ExternalTarget::Url(url.clone())
                }
                _ => {
                    self.invalid(
                        "authentication.external.http",
                        "set exactly one of backendRef and url",
                    );
                    api::ExternalTarget::Url(String::new())
                }
            };
            auth.external = Some(api::ExternalAuth {
                target,
                path: h.path.clone().unwrap_or_else(|| "/".to_owned()),
                headers_to_auth: h
                    .headers_to_auth
                    .iter()
                    .map(|n| self.header("authentication.external.http.headersToAuth", &n.0, false))
                    .collect(),
                response_headers_to_backend: h
                    .response_headers_to_backend
                    .iter()
                    .map(|n| {
                        self.header(
                            "authentication.external.http.responseHeadersToBackend",
                            &n.0,
                            true,
                        )
                    })
                    .collect(),
                timeout_ms: h.timeout.as_ref().map_or(DEFAULT_EXTERNAL_TIMEOUT_MS, |d| {
                    self.ms("authentication.external.http.timeout", d)
                }),
                fail_open: h.fail_open,
            });
        }
        if auth == api::Authentication::default() {
            self.invalid("authentication", "configures no method");
        }
        Value::Authentication(auth)
    }

    fn client_certificate(&mut self, b: &crd::ClientCertificatePolicy, _: &mut Converted) -> Value {
        let mut required = b.required.unwrap_or(true);
        let ca = match &b.ca_ref {
            None => {
                self.invalid("clientCertificate.caRef", "is required");
                None
            }
            Some(r) => match self.secret_value(&r.name, &["ca.crt"]) {
                Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem),
                Ok(_) => {
                    self.bad_ref(
                        "clientCertificate.caRef",
                        format!(
                            "Secret {}/{} ca.crt holds no PEM certificate",
                            self.namespace, r.name
                        ),
                        "requests on its routes are refused",
                    );
                    None
                }
                Err(why) => {
                    self.bad_ref(
                        "clientCertificate.caRef",
                        why,
                        "requests on its routes are refused",
                    );
                    None
                }
            },
        };
        if ca.is_none() {
            // Fail closed: without a CA no certificate verifies, so requiring one refuses all.
            required = true;
        }
        Value::ClientCertificate(
            api::ClientCertificate {
                required,
                allowed_sans: b.allowed_sans.clone(),
            },
            ca,
        )
    }

    fn cidrs(&mut self, at: &str, list: &[String]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for c in list {
            match IpNet::from_str(c) {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.invalid(
                    at,
                    format!("{c:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32"),
                ),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn ip_access(&mut self, b: &crd::IpAccessPolicy, _: &mut Converted) -> Value {
        let allow = self.cidrs("ipAccess.allow", &b.allow);
        let deny = self.cidrs("ipAccess.deny", &b.deny);
        if b.allow.is_empty() && b.deny.is_empty() {
            self.invalid("ipAccess", "needs allow or deny");
        }
        Value::IpAccess(api::IpAccess {
            allow,
            deny,
            source: match b.source.unwrap_or_default() {
                crd::IpSourceKind::Peer => api::IpSource::Peer,
                crd::IpSourceKind::ClientIp => api::IpSource::ClientIp,
            },
        })
    }

    fn cors(&mut self, b: &crd::CorsPolicy, _: &mut Converted) -> Value {
        if b.allow_origins.is_empty() {
            self.invalid("cors.allowOrigins", "needs at least one origin");
        }
        if b.allow_credentials && b.allow_origins.iter().any(|o| o == "*") {
            self.invalid(
                "cors.allowCredentials",
                "cannot be combined with the wildcard origin '*'",
            );
        }
        let names = |this: &mut Self, at: &str, list: &[crd::HeaderName]| {
            list.iter()
                .map(|h| this.header(at, &h.0, false))
                .collect::<Vec<_>>()
        };
        Value::Cors(api::Cors {
            allow_origins: b.allow_origins.clone(),
            allow_methods: b
                .allow_methods
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
            allow_headers: names(self, "cors.allowHeaders", &b.allow_headers),
            expose_headers: names(self, "cors.exposeHeaders", &b.expose_headers),
            max_age_seconds: b.max_age.map(u64::from),
            allow_credentials: b.allow_credentials,
        })
    }

    fn header_ops(&mut self, at: &str, edits: Option<&crd::HeaderEdits>) -> api::HeaderOps {
        let Some(e) = edits else {
            return api::HeaderOps::default();
        };
        let literal = |this: &mut Self, what: &str, list: &[crd::HeaderLiteral]| {
            list.iter()
                .map(|h| {
                    if h.value.contains(['\r', '\n', '\0']) {
                        this.invalid(
                            &format!("{at}.{what}"),
                            "values must not contain CR, LF or NUL",
                        );
                    }
                    api::HeaderValue {
                        name: this.header(&format!("{at}.{what}"), &h.name.0, true),
                        value: h.value.clone(),
                    }
                })
                .collect::<Vec<_>>()
        };
        let set = literal(self, "set", &e.set);
        let add = literal(self, "add", &e.add);
        let remove = e
            .remove
            .iter()
            .map(|n| self.header(&format!("{at}.remove"), &n.0, true))
            .collect();
        api::HeaderOps { set, add, remove }
    }

    fn headers(&mut self, b: &crd::HeadersPolicy, _: &mut Converted) -> Value {
        if b.request.is_none() && b.response.is_none() {
            self.invalid("headers", "needs request or response");
        }
        Value::Headers(api::Headers {
            request: self.header_ops("headers.request", b.request.as_ref()),
            response: self.header_ops("headers.response", b.response.as_ref()),
        })
    }

    fn body(&mut self, b: &crd::BodyPolicy, _: &mut Converted) -> Value {
        let bytes = match &b.max_request_size {
            None => {
                self.invalid("body.maxRequestSize", "is required");
                0
            }
            Some(q) => match crd::parse_quantity_bytes(&q.0) {
                Ok(0) => {
                    self.invalid("body.maxRequestSize", "must be greater than zero");
                    0
                }
                Ok(n) => n,
                Err(why) => {
                    self.invalid("body.maxRequestSize", why);
                    0
                }
            },
        };
        Value::Body(api::Body {
            max_request_bytes: bytes,
        })
    }
}

fn retry_on(o: crd::RetryOn) -> api::RetryOn {
    match o {
        crd::RetryOn::ConnectFailure => api::RetryOn::ConnectFailure,
        crd::RetryOn::RefusedStream => api::RetryOn::RefusedStream,
        crd::RetryOn::Reset => api::RetryOn::Reset,
        crd::RetryOn::GatewayError => api::RetryOn::GatewayError,
        crd::RetryOn::FiveXx => api::RetryOn::FiveXx,
        crd::RetryOn::RetriableStatusCodes => api::RetryOn::RetriableStatusCodes,
    }
}
