//! Translation at cluster scale: 10,000 Ingresses (one host, ten paths over ten Services each),
//! 10,000 Services and 10,000 EndpointSlices of three endpoints, in 100 namespaces; then the
//! same with an IngressPolicy on every Ingress plus one on the class, so that policy
//! resolution is measured at the same scale.
//!
//! `cargo bench -p portico-translate --bench translate`

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portico_translate::{Index, Options, parse_manifests, translate};

const NAMESPACES: usize = 100;
const PER_NAMESPACE: usize = 100;
const PATHS: usize = 10;

/// The manifests: per namespace, `PER_NAMESPACE` Services with a slice each, and as many
/// Ingresses whose paths spread over ten of the namespace's Services.
fn manifests() -> String {
    let mut text = String::with_capacity(64 << 20);
    text.push_str(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portico}\n\
         spec: {controller: portico.dev/ingress-controller}\n",
    );
    for ns in 0..NAMESPACES {
        for s in 0..PER_NAMESPACE {
            let _ = write!(
                text,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: ns-{ns}}}\n\
                 spec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: svc-{s}-abcde, namespace: ns-{ns}, labels: {{kubernetes.io/service-name: svc-{s}}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
            );
            for e in 1..=3 {
                let _ = writeln!(
                    text,
                    "- {{addresses: [10.{ns}.{s}.{e}], conditions: {{ready: true}}}}"
                );
            }
        }
        for i in 0..PER_NAMESPACE {
            let _ = write!(
                text,
                "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n\
                 metadata: {{name: app-{i}, namespace: ns-{ns}}}\n\
                 spec:\n  ingressClassName: portico\n  rules:\n  - host: app-{i}.ns-{ns}.example.com\n    http:\n      paths:\n"
            );
            for p in 0..PATHS {
                let service = (i + p) % PER_NAMESPACE;
                let _ = writeln!(
                    text,
                    "      - {{path: /p{p}, pathType: Prefix, backend: {{service: {{name: svc-{service}, port: {{name: http}}}}}}}}"
                );
            }
        }
    }
    text
}

/// One IngressPolicy per Ingress (timeouts and a rate limit) and a class-wide default.
fn policies() -> String {
    let mut text = String::from(
        "---\napiVersion: portico.dev/v1alpha1\nkind: IngressPolicy\n\
         metadata: {name: baseline, namespace: portico-system}\n\
         spec:\n  targetRefs: [{group: networking.k8s.io, kind: IngressClass, name: portico}]\n\
           defaults: {retry: {attempts: 1, on: [connect-failure]}}\n",
    );
    for ns in 0..NAMESPACES {
        for i in 0..PER_NAMESPACE {
            let _ = write!(
                text,
                "---\napiVersion: portico.dev/v1alpha1\nkind: IngressPolicy\n\
                 metadata: {{name: app-{i}, namespace: ns-{ns}}}\n\
                 spec:\n  targetRefs: [{{group: networking.k8s.io, kind: Ingress, name: app-{i}}}]\n\
                   defaults:\n    timeouts: {{request: 30s}}\n    rateLimit: {{rules: [{{name: per-ip, key: {{type: ClientIP}}, limit: {{requests: 100, period: 1s}}}}]}}\n"
            );
        }
    }
    text
}

fn bench(c: &mut Criterion) {
    let text = manifests();
    let parsed = parse_manifests(&text, "default");
    assert!(parsed.problems.is_empty(), "{:?}", &parsed.problems[..1]);
    let index = Index::from_objects(parsed.objects);
    let output = translate(&index, &Options::default());
    let snapshot = &output.snapshots["portico"];
    println!(
        "{} bytes of YAML; {} Ingresses, {} Services, {} EndpointSlices; {} routes, {} backends",
        text.len(),
        index.ingresses.len(),
        index.services.len(),
        index.endpoint_slices.len(),
        snapshot.route_count(),
        snapshot.backends.len(),
    );

    c.bench_function("translate", |b| {
        b.iter(|| translate(black_box(&index), black_box(&Options::default())))
    });
    c.bench_function("parse_manifests", |b| {
        b.iter(|| parse_manifests(black_box(&text), "default"))
    });

    let with_policies = format!("{text}{}", policies());
    let parsed = parse_manifests(&with_policies, "default");
    assert!(parsed.problems.is_empty(), "{:?}", &parsed.problems[..1]);
    let index = Index::from_objects(parsed.objects);
    let output = translate(&index, &Options::default());
    let accepted = output
        .policies
        .values()
        .filter(|s| !s.ancestors.is_empty())
        .count();
    println!(
        "with {} IngressPolicies ({accepted} with status)",
        index.policies.len()
    );
    c.bench_function("translate with a policy per Ingress", |b| {
        b.iter(|| translate(black_box(&index), black_box(&Options::default())))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
