//! The CRD's CEL rules, evaluated client-side exactly as generated: each rule refuses what it
//! should with its message, and accepts the valid forms. A cluster run (`e2e/`) checks the same
//! rules on a real API server.

use kube::CustomResourceExt;
use kube::core::cel::{AnalysisWarning, compile_schema, estimate_rule_cost};
use portico_crds::IngressPolicy;

/// A policy in namespace `default` with `spec` given as YAML.
fn policy(spec: &str) -> IngressPolicy {
    let spec = spec
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    let yaml = format!(
        "apiVersion: portico.dev/v1alpha1\nkind: IngressPolicy\nmetadata: {{name: p, namespace: default}}\nspec:\n{spec}\n"
    );
    serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const INGRESS: &str = "targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop}]\n";

fn check(spec: &str) -> Result<(), Vec<String>> {
    portico_crds::validate(&policy(spec))
}

/// `(what, spec, expected message fragment)`.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "no target",
        "targetRefs: []\ndefaults: {body: {maxRequestSize: 1Mi}}",
        "at least one target is required",
    ),
    ("no body", INGRESS, "set defaults, overrides, or both"),
    (
        "overrides on an Ingress",
        "targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop}]\noverrides: {body: {maxRequestSize: 1Mi}}",
        "overrides are only allowed when every targetRef is an IngressClass",
    ),
    (
        "overrides with a selector",
        "targetRefs: [{group: networking.k8s.io, kind: IngressClass, name: portico}]\ntargetSelectors: [{kind: Ingress, matchLabels: {a: b}}]\noverrides: {body: {maxRequestSize: 1Mi}}",
        "overrides are only allowed",
    ),
    (
        "path on an IngressClass",
        "targetRefs: [{group: networking.k8s.io, kind: IngressClass, name: portico, host: a.example, path: /x}]\ndefaults: {body: {maxRequestSize: 1Mi}}",
        "only allowed on targets of kind Ingress",
    ),
    (
        "path without host",
        "targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop, path: /x}]\ndefaults: {body: {maxRequestSize: 1Mi}}",
        "a path target needs host as well",
    ),
    (
        "pathType without path",
        "targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop, host: a.example, pathType: Exact}]\ndefaults: {body: {maxRequestSize: 1Mi}}",
        "pathType requires path",
    ),
    (
        "empty selector",
        "targetSelectors: [{kind: Ingress}]\ndefaults: {body: {maxRequestSize: 1Mi}}",
        "an empty selector would select every Ingress",
    ),
    (
        "zero duration",
        "defaults: {timeouts: {request: 0s}}",
        "must be greater than zero",
    ),
    (
        "try longer than request",
        "defaults: {timeouts: {request: 5s, backendRequest: 10s}}",
        "backendRequest (one try) must not be longer than request",
    ),
    (
        "empty retry",
        "defaults: {retry: {}}",
        "retry: set attempts",
    ),
    (
        "statusCodes without the condition",
        "defaults: {retry: {attempts: 2, statusCodes: [503]}}",
        "statusCodes and the retriable-status-codes condition",
    ),
    (
        "backoff base above max",
        "defaults: {retry: {attempts: 2, backoff: {base: 2s, max: 1s}}}",
        "backoff.base must not be longer than backoff.max",
    ),
    (
        "header key without name",
        "defaults: {rateLimit: {rules: [{name: r, key: {type: Header}, limit: {requests: 1, period: 1s}}]}}",
        "name is required for Header and JWTClaim keys",
    ),
    (
        "client IP key with a name",
        "defaults: {rateLimit: {rules: [{name: r, key: {type: ClientIP, name: x}, limit: {requests: 1, period: 1s}}]}}",
        "not allowed for the other key types",
    ),
    (
        "JWT claim before authentication",
        "defaults: {rateLimit: {rules: [{name: r, key: {type: JWTClaim, name: sub}, stage: PreAuth, limit: {requests: 1, period: 1s}}]}}",
        "only known after authentication",
    ),
    (
        "empty match",
        "defaults: {rateLimit: {rules: [{name: r, match: {}, key: {type: Global}, limit: {requests: 1, period: 1s}}]}}",
        "match needs methods, pathPrefix or headers",
    ),
    (
        "disabled block with fields",
        "defaults: {rateLimit: {disabled: true, rules: [{name: r, key: {type: Global}, limit: {requests: 1, period: 1s}}]}}",
        "rateLimit: set either `disabled: true` alone",
    ),
    (
        "both JWKS sources",
        "defaults: {authentication: {jwt: {providers: [{name: p, localJWKS: {secretRef: {name: s}, key: jwks.json}, remoteJWKS: {uri: 'https://id.example/jwks'}}]}}}",
        "set exactly one of localJWKS and remoteJWKS",
    ),
    (
        "external auth with neither target",
        "defaults: {authentication: {external: {http: {timeout: 1s}}}}",
        "set exactly one of backendRef and url",
    ),
    (
        "claim copied into Host",
        "defaults: {authentication: {jwt: {providers: [{name: p, remoteJWKS: {uri: 'https://id.example/jwks'}, claimToHeaders: [{claim: sub, header: Host}]}]}}}",
        "hop-by-hop headers",
    ),
    (
        "not a CIDR",
        "defaults: {ipAccess: {allow: ['10.0.0.0/8', 'nope']}}",
        "allow entries must be CIDRs",
    ),
    (
        "credentials with any origin",
        "defaults: {cors: {allowOrigins: ['*'], allowCredentials: true}}",
        "allowCredentials cannot be combined with the wildcard origin",
    ),
    (
        "setting Transfer-Encoding",
        "defaults: {headers: {request: {set: [{name: Transfer-Encoding, value: chunked}]}}}",
        "hop-by-hop headers",
    ),
    (
        "setting a header twice",
        "defaults: {headers: {response: {set: [{name: X-A, value: '1'}, {name: x-a, value: '2'}]}}}",
        "each header may be set only once",
    ),
    (
        "fractional body size",
        "defaults: {body: {maxRequestSize: 500m}}",
        "maxRequestSize must be a positive whole number",
    ),
    (
        "empty body block",
        "defaults: {body: {}}",
        "body: set maxRequestSize",
    ),
];

#[test]
fn each_rule_refuses_with_its_message() {
    for (what, spec, expected) in REFUSED {
        let spec = if spec.contains("target") {
            spec.to_string()
        } else {
            format!("{INGRESS}{spec}")
        };
        let errors = check(&spec)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted\n{spec}"));
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{what}: expected {expected:?} among {errors:#?}"
        );
    }
}

#[test]
fn valid_policies_pass() {
    let accepted = [
        "targetRefs: [{group: networking.k8s.io, kind: IngressClass, name: portico}]\noverrides: {ipAccess: {deny: ['203.0.113.0/24'], source: ClientIP}, body: {maxRequestSize: 32Mi}}\ndefaults: {timeouts: {request: 30s, backendRequest: 10s, connect: 2s, idle: 300s, requestHeaders: 10s}}",
        "targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop, host: shop.example.com, path: /login, pathType: Prefix}]\ndefaults: {rateLimit: {rules: [{name: login, key: {type: ClientIP}, limit: {requests: 10, period: 1m, burst: 5}, replicas: DividedAmongReplicas}]}}",
        "targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop, host: '', path: /}]\ndefaults: {body: {disabled: true}}",
        "targetSelectors: [{kind: Ingress, matchLabels: {team: shop}}]\ndefaults: {retry: {attempts: 2, on: [connect-failure, retriable-status-codes], statusCodes: [503], backoff: {base: 25ms, max: 1s}, budget: {percent: 20, minPerSecond: 10}}}",
        "targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop}]\ndefaults: {authentication: {basic: {secretRef: {name: users}, realm: shop}, jwt: {providers: [{name: corp, issuer: 'https://id.example', audiences: [shop], remoteJWKS: {uri: 'https://id.example/jwks', cacheDuration: 5m}, claimToHeaders: [{claim: sub, header: X-User}]}]}}, rateLimit: {rules: [{name: per-user, key: {type: JWTClaim, name: sub}, stage: PostAuth, limit: {requests: 100, period: 1s}}]}}",
        "targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop}]\ndefaults: {cors: {allowOrigins: ['https://shop.example.com', 'https://*.example.com'], allowCredentials: true, maxAge: 600}, headers: {response: {set: [{name: Strict-Transport-Security, value: max-age=31536000}], remove: [Server]}}}",
    ];
    for spec in accepted {
        assert_eq!(check(spec), Ok(()), "{spec}");
    }
}

/// The API server refuses a CRD whose rules may exceed the CEL cost budget; catch it here.
/// Each rule is estimated against the schema it is attached to, whose bounds (maxItems,
/// maxLength) are what keep its cost finite.
#[test]
fn every_rule_fits_the_cost_budget() {
    let crd = serde_json::to_value(IngressPolicy::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let compiled = compile_schema(schema);
    assert!(
        !compiled.has_errors(),
        "rules that do not compile: {:#?}",
        compiled.compilation_errors()
    );
    let mut rules = Vec::new();
    collect_rules(schema, &mut rules);
    assert!(
        rules.len() > 40,
        "expected the whole rule set, found {}",
        rules.len()
    );
    let warnings: Vec<AnalysisWarning> = rules
        .iter()
        .flat_map(|(rule, at)| estimate_rule_cost(rule, &compile_schema(at)))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// Every rule with the schema node that carries it.
fn collect_rules<'a>(value: &'a serde_json::Value, out: &mut Vec<(String, &'a serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(list)) = map.get("x-kubernetes-validations") {
                out.extend(
                    list.iter()
                        .filter_map(|r| r["rule"].as_str().map(|r| (r.to_owned(), value))),
                );
            }
            map.values().for_each(|v| collect_rules(v, out));
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| collect_rules(v, out)),
        _ => {}
    }
}
