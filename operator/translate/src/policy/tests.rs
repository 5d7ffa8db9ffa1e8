//! Unit tests of policy resolution: precedence, references, statuses.

use portico_api::Route;
use portico_api::policy::KeyType;
use portico_crds::PolicyCondition;

use crate::{Index, Options, Output, parse_manifests, translate};

/// An IngressClass `portico`, a Service and Ingresses `shop/shop` (oldest, label app=shop,
/// paths `/login` and `/`) and `shop/blog` (label app=shop, path `/`), then `extra`.
fn run(extra: &str) -> Output {
    run_with(
        extra,
        Options {
            platform_namespace: Some("portico-system".into()),
            ..Options::default()
        },
    )
}

fn run_with(extra: &str, options: Options) -> Output {
    let base = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop, labels: {app: shop}, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  ingressClassName: portico
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /login, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: blog, namespace: shop, labels: {app: shop}, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  ingressClassName: portico
  rules:
  - host: blog.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let text = format!("{base}\n---\n{extra}");
    let parsed = parse_manifests(&text, "default");
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    translate(&Index::from_objects(parsed.objects), &options)
}

fn route<'a>(out: &'a Output, ingress: &str, path: &str) -> &'a Route {
    out.snapshots
        .values()
        .flat_map(|s| s.hosts.iter().flat_map(|h| h.routes.iter()))
        .find(|r| r.source.ingress == ingress && r.source.path == path)
        .unwrap_or_else(|| panic!("no route {ingress} {path}"))
}

fn request_ms(out: &Output, ingress: &str, path: &str) -> Option<u64> {
    route(out, ingress, path)
        .policy
        .timeouts
        .as_ref()
        .and_then(|t| t.request_ms)
}

/// The condition `type` of the first ancestor of `policy` (`ns/name`).
fn cond<'a>(out: &'a Output, policy: &str, r#type: &str) -> &'a PolicyCondition {
    cond_at(out, policy, 0, r#type)
}

fn cond_at<'a>(
    out: &'a Output,
    policy: &str,
    ancestor: usize,
    r#type: &str,
) -> &'a PolicyCondition {
    out.policies[policy].ancestors[ancestor]
        .conditions
        .iter()
        .find(|c| c.r#type == r#type)
        .unwrap_or_else(|| panic!("{policy} has no {type} condition", type = r#type))
}

fn policy(ns: &str, name: &str, created: &str, spec: &str) -> String {
    format!(
        "apiVersion: portico.dev/v1alpha1\nkind: IngressPolicy\nmetadata: {{name: {name}, namespace: {ns}, generation: 7, creationTimestamp: \"{created}\"}}\nspec:\n{spec}\n---\n"
    )
}

const CLASS: &str =
    "  targetRefs: [{group: networking.k8s.io, kind: IngressClass, name: portico}]\n";
const SHOP: &str = "  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop}]\n";
const LOGIN: &str = "  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: shop, host: shop.example.com, path: /login}]\n";
const SELECT: &str = "  targetSelectors: [{kind: Ingress, matchLabels: {app: shop}}]\n";

#[test]
fn no_policy_no_block() {
    let out = run("");
    assert!(route(&out, "shop", "/").policy.is_empty());
    assert!(out.policies.is_empty());
}

#[test]
fn class_override_beats_ingress_default() {
    let out = run(&(policy(
        "portico-system",
        "platform",
        "2024-06-01T00:00:00Z",
        &format!("{CLASS}  overrides: {{timeouts: {{request: 30s}}}}"),
    ) + &policy(
        "shop",
        "mine",
        "2023-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{request: 5s}}}}"),
    )));
    assert_eq!(request_ms(&out, "shop", "/"), Some(30_000));
    assert_eq!(
        route(&out, "shop", "/").policy.origins["timeouts"],
        "portico-system/platform"
    );
    let programmed = cond(&out, "shop/mine", "Programmed");
    assert_eq!(programmed.reason, "Overridden");
    assert!(
        programmed
            .message
            .contains("portico-system/platform (override)")
    );
    assert_eq!(programmed.observed_generation, Some(7));
}

#[test]
fn request_headers_timeout_is_reported_as_not_applied() {
    let out = run(&(policy(
        "shop",
        "slow-clients",
        "2024-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{requestHeaders: 5s, idle: 30s}}}}"),
    ) + &policy(
        "shop",
        "plain",
        "2024-01-01T00:00:00Z",
        "  targetRefs: [{group: networking.k8s.io, kind: Ingress, name: blog}]\n  defaults: {timeouts: {idle: 30s}}",
    )));
    // Still accepted, and the rest of the block applies.
    assert_eq!(cond(&out, "shop/slow-clients", "Accepted").status, "True");
    let timeouts = route(&out, "shop", "/").policy.timeouts.clone().unwrap();
    assert_eq!(timeouts.idle_ms, Some(30_000));
    let programmed = cond(&out, "shop/slow-clients", "Programmed");
    assert_eq!(programmed.reason, "PartiallyProgrammed");
    assert!(
        programmed
            .message
            .contains("defaults.timeouts.requestHeaders is not applied"),
        "{}",
        programmed.message
    );
    // A policy without it is simply programmed.
    assert_eq!(cond(&out, "shop/plain", "Programmed").reason, "Programmed");
}

#[test]
fn most_specific_default_wins() {
    let out = run(&(policy(
        "portico-system",
        "platform",
        "2020-01-01T00:00:00Z",
        &format!("{CLASS}  defaults: {{timeouts: {{request: 30s}}}}"),
    ) + &policy(
        "shop",
        "ingress",
        "2024-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{request: 10s}}}}"),
    ) + &policy(
        "shop",
        "login",
        "2024-01-01T00:00:00Z",
        &format!("{LOGIN}  defaults: {{timeouts: {{request: 60s}}}}"),
    )));
    assert_eq!(
        request_ms(&out, "shop", "/login"),
        Some(60_000),
        "path > Ingress"
    );
    assert_eq!(
        request_ms(&out, "shop", "/"),
        Some(10_000),
        "Ingress > class"
    );
    assert_eq!(request_ms(&out, "blog", "/"), Some(30_000), "class default");
    assert_eq!(
        cond(&out, "shop/ingress", "Programmed").reason,
        "PartiallyProgrammed"
    );
    assert_eq!(cond(&out, "shop/login", "Programmed").reason, "Programmed");
}

#[test]
fn target_refs_beat_selectors_whatever_their_age() {
    let out = run(&(policy(
        "shop",
        "by-label",
        "2020-01-01T00:00:00Z",
        &format!("{SELECT}  defaults: {{timeouts: {{request: 20s}}}}"),
    ) + &policy(
        "shop",
        "by-ref",
        "2024-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{request: 10s}}}}"),
    )));
    assert_eq!(request_ms(&out, "shop", "/"), Some(10_000));
    assert_eq!(request_ms(&out, "blog", "/"), Some(20_000));
}

#[test]
fn oldest_wins_then_name_and_the_loser_is_conflicted() {
    let out = run(&(policy(
        "shop",
        "b-older",
        "2024-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{request: 1s}}}}"),
    ) + &policy(
        "shop",
        "a-younger",
        "2024-02-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{request: 2s}}}}"),
    )));
    assert_eq!(request_ms(&out, "shop", "/"), Some(1_000));
    let accepted = cond(&out, "shop/a-younger", "Accepted");
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "Conflicted")
    );
    assert!(accepted.message.contains("shop/b-older"));

    // Equal timestamps: namespace/name decides.
    let out = run(&(policy(
        "shop",
        "b",
        "2024-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{request: 1s}}}}"),
    ) + &policy(
        "shop",
        "a",
        "2024-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{request: 2s}}}}"),
    )));
    assert_eq!(request_ms(&out, "shop", "/"), Some(2_000));
}

#[test]
fn disabled_drops_a_default_but_not_an_override() {
    let out = run(&(policy(
        "portico-system",
        "platform",
        "2020-01-01T00:00:00Z",
        &format!(
            "{CLASS}  defaults: {{timeouts: {{request: 30s}}}}\n  overrides: {{body: {{maxRequestSize: 1Mi}}}}"
        ),
    ) + &policy(
        "shop",
        "off",
        "2024-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{timeouts: {{disabled: true}}, body: {{disabled: true}}}}"),
    )));
    let shop = &route(&out, "shop", "/").policy;
    assert_eq!(shop.timeouts, None);
    assert!(!shop.origins.contains_key("timeouts"));
    assert_eq!(
        shop.body.as_ref().map(|b| b.max_request_bytes),
        Some(1 << 20)
    );
    assert_eq!(request_ms(&out, "blog", "/"), Some(30_000));
    let programmed = cond(&out, "portico-system/platform", "Programmed");
    assert_eq!(programmed.reason, "PartiallyProgrammed");
    assert!(
        programmed
            .message
            .contains("shop/off (Ingress default, disabled)")
    );
}

#[test]
fn overrides_outside_the_platform_namespace_are_rejected() {
    let out = run(&policy(
        "shop",
        "sneaky",
        "2020-01-01T00:00:00Z",
        &format!("{CLASS}  overrides: {{timeouts: {{request: 1s}}}}"),
    ));
    assert_eq!(request_ms(&out, "shop", "/"), None);
    let accepted = cond(&out, "shop/sneaky", "Accepted");
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "Invalid")
    );
    assert!(
        accepted
            .message
            .contains("platform namespace portico-system")
    );
}

#[test]
fn a_class_with_its_own_platform_namespace_takes_overrides_from_there() {
    let overrides = |ns: &str, name: &str| {
        policy(
            ns,
            name,
            "2020-01-01T00:00:00Z",
            &format!("{CLASS}  overrides: {{timeouts: {{request: 3s}}}}"),
        )
    };
    let options = |own: Option<&str>| Options {
        platform_namespace: Some("portico-system".into()),
        class_platform_namespaces: own
            .map(|ns| [("portico".to_owned(), ns.to_owned())].into())
            .unwrap_or_default(),
        ..Options::default()
    };
    let text = overrides("team-platform", "team");
    // Without a ProxyClass naming it, team-platform is just another namespace.
    let out = run_with(&text, options(None));
    assert_eq!(request_ms(&out, "shop", "/"), None);
    assert_eq!(cond(&out, "team-platform/team", "Accepted").status, "False");
    // With one, its overrides apply to the class, and the default namespace's no longer do.
    let out = run_with(&text, options(Some("team-platform")));
    assert_eq!(request_ms(&out, "shop", "/"), Some(3000));
    assert_eq!(cond(&out, "team-platform/team", "Accepted").status, "True");
    let out = run_with(
        &overrides("portico-system", "central"),
        options(Some("team-platform")),
    );
    assert_eq!(request_ms(&out, "shop", "/"), None);
}

#[test]
fn class_defaults_from_a_tenant_stay_in_its_namespace() {
    let out = run(&policy(
        "other",
        "tenant",
        "2020-01-01T00:00:00Z",
        &format!("{CLASS}  defaults: {{timeouts: {{request: 1s}}}}"),
    ));
    assert_eq!(request_ms(&out, "shop", "/"), None);
    assert_eq!(
        cond(&out, "other/tenant", "Programmed").message,
        "applied to 0 route(s)"
    );
}

#[test]
fn missing_targets_are_reported() {
    let out = run(&policy(
        "shop",
        "lost",
        "2020-01-01T00:00:00Z",
        "  targetRefs:\n  - {group: networking.k8s.io, kind: Ingress, name: shop, host: shop.example.com, path: /nope}\n  - {group: networking.k8s.io, kind: Ingress, name: ghost}\n  - {group: networking.k8s.io, kind: IngressClass, name: nginx}\n  defaults: {timeouts: {request: 1s}}",
    ));
    for (i, needle) in [
        "has no served path /nope under host shop.example.com",
        "Ingress shop/ghost not found",
        "IngressClass nginx not found",
    ]
    .into_iter()
    .enumerate()
    {
        let accepted = cond_at(&out, "shop/lost", i, "Accepted");
        assert_eq!(accepted.reason, "TargetNotFound");
        assert!(accepted.message.contains(needle), "{}", accepted.message);
    }
    assert_eq!(request_ms(&out, "shop", "/"), None);
}

#[test]
fn missing_htpasswd_secret_fails_closed() {
    let out = run(&policy(
        "shop",
        "auth",
        "2020-01-01T00:00:00Z",
        &format!("{SHOP}  defaults: {{authentication: {{basic: {{secretRef: {{name: nope}}}}}}}}"),
    ));
    let auth = route(&out, "shop", "/")
        .policy
        .authentication
        .clone()
        .unwrap();
    let basic = auth.basic.unwrap();
    assert_eq!(basic.htpasswd, "", "an empty htpasswd refuses everyone");
    let refs = cond(&out, "shop/auth", "ResolvedRefs");
    assert_eq!(
        (refs.status.as_str(), refs.reason.as_str()),
        ("False", "InvalidRef")
    );
    assert!(refs.message.contains("Secret shop/nope not found"));
}

#[test]
fn htpasswd_from_auth_or_dot_htpasswd() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: pw, namespace: shop}\nstringData: {.htpasswd: \"bob:{SHA}abc=\"}\n---\n";
    let out = run(&(secret.to_owned()
        + &policy(
            "shop",
            "auth",
            "2020-01-01T00:00:00Z",
            &format!(
                "{SHOP}  defaults: {{authentication: {{basic: {{secretRef: {{name: pw}}}}}}}}"
            ),
        )));
    let basic = route(&out, "shop", "/")
        .policy
        .authentication
        .clone()
        .unwrap()
        .basic
        .unwrap();
    assert_eq!(basic.htpasswd, "bob:{SHA}abc=");
    assert_eq!(basic.realm, "Authentication Required");
    assert_eq!(cond(&out, "shop/auth", "ResolvedRefs").status, "True");
}

#[test]
fn rate_limit_buckets() {
    let out = run(&policy(
        "shop",
        "rl",
        "2020-01-01T00:00:00Z",
        &format!(
            "{SELECT}  defaults:\n    rateLimit:\n      rules:\n      - {{name: shared, key: {{type: Global}}, limit: {{requests: 5, period: 1s}}, bucket: Shared}}\n      - {{name: each, key: {{type: Header, name: X-Tenant}}, limit: {{requests: 5, period: 1s}}}}\n      - {{name: keyed, key: {{type: APIKey}}, limit: {{requests: 5, period: 1s}}}}"
        ),
    ));
    let rules = |ingress: &str| {
        route(&out, ingress, "/")
            .policy
            .rate_limit
            .clone()
            .unwrap()
            .rules
    };
    let (shop, blog) = (rules("shop"), rules("blog"));
    assert_eq!(shop[0].bucket_id, "shop/rl/shared");
    assert_eq!(
        shop[0].bucket_id, blog[0].bucket_id,
        "Shared buckets are shared"
    );
    assert_ne!(
        shop[1].bucket_id, blog[1].bucket_id,
        "PerTarget buckets are not"
    );
    assert!(shop[1].bucket_id.starts_with("shop/rl/each/"));
    assert_eq!(shop[1].key.name.as_deref(), Some("x-tenant"));
    assert_eq!(shop[2].key.r#type, KeyType::ApiKey);
    assert_eq!(shop[2].stage, portico_api::policy::Stage::PostAuth);
}

#[test]
fn semantic_errors_make_the_policy_invalid() {
    for body in [
        "ipAccess: {allow: [10.0.0.0/33]}",
        "timeouts: {request: '10'}",
        "timeouts: {request: 1s, backendRequest: 2s}",
        "body: {maxRequestSize: 1Xi}",
        "headers: {request: {set: [{name: Host, value: evil}]}}",
        "cors: {allowOrigins: ['*'], allowCredentials: true}",
        "rateLimit: {rules: [{name: r, key: {type: Header}, limit: {requests: 1, period: 1s}}]}",
    ] {
        let out = run(&policy(
            "shop",
            "bad",
            "2020-01-01T00:00:00Z",
            &format!("{SHOP}  defaults: {{{body}}}"),
        ));
        let accepted = cond(&out, "shop/bad", "Accepted");
        assert_eq!(accepted.reason, "Invalid", "{body}: {}", accepted.message);
        assert!(route(&out, "shop", "/").policy.is_empty(), "{body} applied");
    }
}

#[test]
fn ip_access_is_parsed_and_normalised() {
    let out = run(&policy(
        "shop",
        "ips",
        "2020-01-01T00:00:00Z",
        &format!(
            "{SHOP}  defaults: {{ipAccess: {{allow: [10.1.2.3/8, '2001:db8::/32'], source: ClientIP}}}}"
        ),
    ));
    let ip = route(&out, "shop", "/").policy.ip_access.clone().unwrap();
    let allow: Vec<String> = ip.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(ip.source, portico_api::policy::IpSource::ClientIp);
}
