//! The configuration in force: an `Arc<Config>` in an `ArcSwap`, read once per request.
//!
//! A request loads the current config, picks its route stack, clones it and lets go of the
//! config before any I/O. So a new snapshot applies to the next request of an open keep-alive
//! connection, in-flight requests finish with the stack they started with, and upgraded
//! connections (which hold only their sockets) are untouched by swaps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use ipnet::IpNet;
use portico_api::policy::ExternalTarget;
use portico_api::{FORMAT_VERSION, Router, Snapshot};
use portico_translate::Output;

use crate::dispatch::{RouteStack, route_stack};
use crate::error::ProxyError;
use crate::hygiene::Hygiene;
use crate::metrics::Metrics;
use crate::policy::PolicyEnv;
use crate::policy::auth::AuthEnv;
use crate::policy::rate_limit::{Buckets, Redis};
use crate::tls::{CertError, CertStore, TlsTable};
use crate::upstream::{Tunnels, Upstreams};

/// A snapshot ready to serve: the matcher, a route stack per route, and TLS configs.
#[derive(Debug)]
pub struct Config {
    router: Router,
    /// `routes[i][j]` serves `snapshot.hosts[i].routes[j]`.
    routes: Vec<Vec<RouteStack>>,
    default_route: Option<RouteStack>,
    tls: TlsTable,
}

impl Config {
    /// The route stack for a request's host and normalised path.
    pub fn lookup(&self, host: &str, path: &str) -> Result<&RouteStack, ProxyError> {
        let found = self.router.route(host, path).ok_or(ProxyError::NoRoute)?;
        let stack = match found.index {
            None => self.default_route.as_ref(),
            Some((host, route)) => self.routes.get(host).and_then(|r| r.get(route)),
        };
        stack.ok_or(ProxyError::Internal("route stack missing"))
    }

    /// The matcher and its snapshot.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// TLS configs of this snapshot.
    pub fn tls(&self) -> &TlsTable {
        &self.tls
    }
}

/// Why the state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Tls(#[from] CertError),
    #[error("invalid --redis-url: {0}")]
    Redis(String),
}

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("snapshot format {got} is newer than the supported {FORMAT_VERSION}")]
    FormatTooNew { got: u32 },
}

/// Options fixed at start-up.
#[derive(Debug, Default)]
pub struct StateOptions {
    pub connect_timeout: Duration,
    pub hygiene: Hygiene,
    /// Peers whose `X-Forwarded-For` is believed (client IP for policies).
    pub trusted_proxies: Vec<IpNet>,
    /// Redis for `Distributed` rate limits.
    pub redis_url: Option<String>,
}

/// Everything the listeners, the admin server and the snapshot source share.
#[derive(Debug)]
pub struct State {
    config: ArcSwap<Config>,
    ready: AtomicBool,
    draining: AtomicBool,
    /// Serialises [`State::apply`].
    applying: Mutex<()>,
    upstreams: Upstreams,
    certs: CertStore,
    pub metrics: Metrics,
    pub tunnels: Arc<Tunnels>,
    pub hygiene: Hygiene,
    pub trusted_proxies: Vec<IpNet>,
    policy: PolicyEnv,
    /// What the translator said of the objects (standalone mode): `/status` on the admin port.
    /// Kept typed and made JSON when asked for: as a JSON value, a report per Ingress weighed
    /// megabytes at 10,000 Ingresses.
    translation_status: ArcSwapOption<Output>,
    /// Endpoints of the snapshot being built or in force, by backend id, for forward auth.
    auth_endpoints: Arc<ArcSwap<HashMap<String, Vec<SocketAddr>>>>,
}

impl State {
    /// A state serving an empty snapshot (everything 404) and not yet ready.
    pub fn new(options: StateOptions) -> Result<Self, StateError> {
        let metrics = Metrics::new();
        let redis = options
            .redis_url
            .as_deref()
            .map(|url| Redis::new(url, metrics.rate_limit_backend_errors.clone()))
            .transpose()
            .map_err(|e| StateError::Redis(e.to_string()))?;
        let auth_endpoints: Arc<ArcSwap<HashMap<String, Vec<SocketAddr>>>> = Arc::default();
        let endpoints = auth_endpoints.clone();
        let policy = PolicyEnv {
            rate_limits: Buckets::new(redis),
            retry_budgets: Default::default(),
            auth: AuthEnv::new(Arc::new(move |id: &str| {
                endpoints.load().get(id).cloned().unwrap_or_default()
            })),
        };
        let tunnels = Arc::new(Tunnels::default());
        let upstreams = Upstreams::new(
            options.connect_timeout,
            tunnels.clone(),
            metrics.upstream_connect_errors.clone(),
            metrics.upstream_durations.clone(),
        );
        let certs = CertStore::new()?;
        let empty = Config {
            router: Router::new(Snapshot::empty("")),
            routes: Vec::new(),
            default_route: None,
            tls: certs.empty_table(),
        };
        Ok(Self {
            config: ArcSwap::from_pointee(empty),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            applying: Mutex::new(()),
            upstreams,
            certs,
            metrics,
            tunnels,
            hygiene: options.hygiene,
            trusted_proxies: options.trusted_proxies,
            policy,
            translation_status: ArcSwapOption::empty(),
            auth_endpoints,
        })
    }

    /// The config in force. Hold the guard briefly: never across an `.await`.
    pub fn config(&self) -> Guard<Arc<Config>> {
        self.config.load()
    }

    /// Builds and swaps in `snapshot`. A refused snapshot leaves the current one in force.
    pub fn apply(&self, snapshot: Snapshot) -> Result<u64, ApplyError> {
        let _one_at_a_time = self.applying.lock().unwrap();
        if snapshot.format > FORMAT_VERSION {
            self.metrics.snapshot_errors.inc();
            return Err(ApplyError::FormatTooNew {
                got: snapshot.format,
            });
        }
        let version = snapshot.version;
        // Only the backends that forward auth goes to: a map of every backend would weigh
        // megabytes at 10,000 routes.
        let auth_endpoints = auth_backends(&snapshot)
            .filter_map(|id| {
                let b = snapshot.backends.get(id)?;
                let addrs = b
                    .endpoints
                    .iter()
                    .map(|e| SocketAddr::new(e.address, e.port));
                Some((id.to_owned(), addrs.collect()))
            })
            .collect();
        self.auth_endpoints.store(Arc::new(auth_endpoints));
        let backends: HashMap<&str, _> = snapshot
            .backends
            .iter()
            .map(|(id, b)| (id.as_str(), self.upstreams.backend(b)))
            .collect();
        let replicas = snapshot.replicas;
        let class = snapshot.class.as_str();
        let stack = |r| route_stack(r, &backends, &self.policy, replicas, class, &self.metrics);
        let routes = snapshot
            .hosts
            .iter()
            .map(|h| h.routes.iter().map(stack).collect())
            .collect();
        let default_route = snapshot.default_route.as_ref().map(stack);
        drop(backends);
        let router = Router::new(snapshot);
        let tls = self.certs.table(&router);
        self.config.store(Arc::new(Config {
            router,
            routes,
            default_route,
            tls,
        }));
        self.upstreams.prune();
        self.metrics.snapshot_applied(version);
        self.ready.store(true, Ordering::Release);
        Ok(version)
    }

    /// True once a snapshot is in force and until draining starts.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Turns readiness off for good.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Records the translator's report of Ingresses and IngressPolicies: `output` without its
    /// snapshots.
    pub fn set_translation_status(&self, mut output: Output) {
        output.snapshots.clear();
        self.translation_status.store(Some(Arc::new(output)));
    }

    /// The translator's last report, `{}` before the first.
    pub fn translation_status(&self) -> serde_json::Value {
        match self.translation_status.load_full() {
            Some(output) => serde_json::json!({
                "ingresses": output.ingresses,
                "policies": output.policies,
            }),
            None => serde_json::json!({}),
        }
    }

    /// Counts a failure to produce a snapshot (for example a translation that could not run).
    pub fn count_snapshot_error(&self) {
        self.metrics.snapshot_errors.inc();
    }
}

/// Ids of the backends the routes' forward auth goes to.
fn auth_backends(snapshot: &Snapshot) -> impl Iterator<Item = &str> {
    let routes = snapshot.hosts.iter().flat_map(|h| &h.routes);
    routes.chain(&snapshot.default_route).filter_map(|r| {
        match &r.policy.authentication.as_ref()?.external.as_ref()?.target {
            ExternalTarget::Backend(id) => Some(id.as_str()),
            ExternalTarget::Url(_) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use portico_api::{PathKind, PathMatch, Route, RouteSource, VirtualHost};

    use super::*;

    fn state() -> State {
        State::new(StateOptions {
            connect_timeout: Duration::from_secs(1),
            ..StateOptions::default()
        })
        .unwrap()
    }

    fn route(id: &str, path: &str) -> Route {
        Route {
            id: id.into(),
            path: Some(PathMatch {
                kind: PathKind::Prefix,
                value: path.into(),
            }),
            backend: "ns/svc:80".into(),
            source: RouteSource::default(),
            policy: Default::default(),
        }
    }

    #[test]
    fn lookup_finds_the_stack_of_the_matched_route() {
        let s = state();
        assert!(!s.is_ready());
        assert!(matches!(
            s.config().lookup("a", "/"),
            Err(ProxyError::NoRoute)
        ));
        let mut snap = Snapshot::empty("c");
        snap.version = 7;
        snap.hosts = vec![
            VirtualHost {
                host: "a".into(),
                routes: vec![route("a1", "/x"), route("a2", "/y")],
            },
            VirtualHost {
                host: "b".into(),
                routes: vec![route("b1", "/")],
            },
        ];
        assert_eq!(s.apply(snap).unwrap(), 7);
        assert!(s.is_ready());
        let config = s.config();
        assert_eq!(config.lookup("a", "/y/z").unwrap().route_id(), "a2");
        assert_eq!(config.lookup("b", "/q").unwrap().route_id(), "b1");
        assert!(config.lookup("c", "/").is_err());
        s.start_draining();
        assert!(!s.is_ready());
    }

    #[test]
    fn newer_format_is_refused() {
        let s = state();
        let mut snap = Snapshot::empty("c");
        snap.format = FORMAT_VERSION + 1;
        assert!(s.apply(snap).is_err());
        assert!(!s.is_ready());
    }
}
