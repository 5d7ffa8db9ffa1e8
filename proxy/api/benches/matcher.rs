//! Route lookup cost must not depend on how many routes a snapshot holds.
//!
//! Compares lookups in a snapshot of 2 hosts x 10 paths with lookups in one of 10,000 Ingresses x 10
//! paths (100,000 routes), over the same mix of requests (exact host, wildcard host, deep
//! prefix, exact path, miss), and prints the ratio. Target: within 1.5x.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use portico_api::Router;
use portico_api::snapshot::{PathKind, PathMatch, Route, RouteSource, Snapshot, VirtualHost};

const PATHS: [(&str, PathKind); 10] = [
    ("/", PathKind::Prefix),
    ("/api", PathKind::Prefix),
    ("/api/v1", PathKind::Prefix),
    ("/api/v1/users", PathKind::Prefix),
    ("/api/v1/orders", PathKind::Prefix),
    ("/static", PathKind::Prefix),
    ("/healthz", PathKind::Exact),
    ("/login", PathKind::Exact),
    ("/admin", PathKind::Prefix),
    ("/api/v2", PathKind::Prefix),
];

fn host_routes(host: &str) -> VirtualHost {
    VirtualHost {
        host: host.to_owned(),
        routes: PATHS
            .iter()
            .map(|(p, kind)| Route {
                id: format!("bench/{host}:{p}"),
                path: Some(PathMatch {
                    kind: *kind,
                    value: (*p).to_owned(),
                }),
                backend: format!("bench/{host}:80"),
                source: RouteSource::default(),
                policy: Default::default(),
            })
            .collect(),
    }
}

/// `ingresses` exact hosts of 10 paths each, plus one wildcard host of 10 paths.
fn router(ingresses: usize) -> Router {
    let mut snapshot = Snapshot::empty("bench");
    snapshot.hosts = (0..ingresses)
        .map(|i| host_routes(&format!("svc-{i}.apps.example.com")))
        .chain(std::iter::once(host_routes("*.wild.example.com")))
        .collect();
    Router::new(snapshot)
}

const REQUESTS: [(&str, &str); 5] = [
    ("svc-0.apps.example.com", "/api/v1/users/42/profile"),
    ("Tenant.wild.example.com:443", "/static/css/site.css"),
    ("svc-0.apps.example.com", "/healthz"),
    ("svc-0.apps.example.com", "/nothing/here"),
    ("unknown.example.org", "/"),
];

fn lookups(r: &Router) -> usize {
    REQUESTS
        .iter()
        .filter(|(h, p)| r.route(black_box(h), black_box(p)).is_some())
        .count()
}

fn bench(c: &mut Criterion) {
    let small = router(1);
    let large = router(10_000);
    assert_eq!(small.snapshot().route_count(), 20);
    assert_eq!(large.snapshot().route_count(), 100_010);
    let mut group = c.benchmark_group("route lookup (5 requests)");
    group.bench_function("2 hosts x 10 paths", |b| b.iter(|| lookups(&small)));
    group.bench_function("10,000 ingresses x 10 paths", |b| {
        b.iter(|| lookups(&large))
    });
    group.finish();
    c.bench_function("build router for 10,000 ingresses x 10 paths", |b| {
        let snapshot = large.snapshot().clone();
        b.iter(|| Router::new(black_box(snapshot.clone())))
    });
}

/// Best of several timed batches, so the printed ratio is stable without criterion's analysis.
fn best_ns_per_batch(r: &Router) -> f64 {
    const BATCH: u32 = 200_000;
    (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..BATCH {
                black_box(lookups(r));
            }
            start.elapsed().as_nanos() as f64 / f64::from(BATCH)
        })
        .fold(f64::INFINITY, f64::min)
}

fn ratio_report() {
    let small = router(1);
    let large = router(10_000);
    let (s, l) = (best_ns_per_batch(&small), best_ns_per_batch(&large));
    println!(
        "\nmatcher: 5 lookups take {s:.0} ns with 20 routes and {l:.0} ns with 100,010 routes: \
         ratio {:.2} (target <= 1.5)",
        l / s
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio_report();
}
