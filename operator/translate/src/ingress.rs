//! Ingress translation: class selection, hosts, paths, backends, TLS, default backend.
//!
//! Decisions, all taken per snapshot (one class, or every class when combined):
//! - Ingresses are visited oldest first (`creationTimestamp`, then namespace/name; a missing
//!   timestamp counts as oldest), so "the oldest wins" is "the first to claim wins".
//! - Rules for one host merge across Ingresses. A route conflicts with an earlier one when host,
//!   effective path type (`ImplementationSpecific` is `Prefix`) and path are the same, where
//!   prefixes ignore trailing slashes (`/foo` and `/foo/` match the same requests). The later
//!   route is dropped with a `ConflictingRule` warning.
//! - A path whose backend names a missing Service or port keeps its route, pointing at a backend
//!   id that has no entry in the snapshot, so it answers 503 instead of falling through to
//!   another route.
//! - `ImplementationSpecific` is `Prefix`; with no path it is `/`. A host left with no valid path
//!   has no virtual host.
//! - `spec.defaultBackend` of the oldest Ingress that has a Service one becomes the snapshot's
//!   default route (id `namespace/ingress:defaultBackend`); the later ones get
//!   `ConflictingDefaultBackend`. A `resource` default backend is refused and claims nothing.
//! - A `spec.tls` entry without hosts gives the default certificate (SNI host `""`), used for
//!   clients that send no or an unknown server name. A TLS host claimed by two Ingresses with
//!   different Secrets goes to the oldest; only Secrets that hold a usable certificate claim.
//! - Every IngressClass of ours has a snapshot, Ingresses or not. The legacy class `portico` has
//!   one when an IngressClass of that name is ours, when an Ingress selects it through the
//!   annotation, or when `only_class` names it. `only_class` naming a class that is not ours
//!   gives no snapshot; so does `combine_classes` when no class is served at all.
//! - Backends: see [`crate::backend`]; certificates: see [`crate::tls`]; hosts and paths are
//!   validated as the API server does ([`crate::host`]), since standalone mode has none.
//!
//! Which route a request takes (Exact before Prefix, longest element-wise prefix, exact host
//! before wildcard before any host) is the matcher's, in `portico_api`; this module only emits
//! the routes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portico_api::{
    FORMAT_VERSION, PathKind, PathMatch, Route, RoutePolicy, RouteSource, Snapshot, SniHost,
    VirtualHost,
};

use crate::backend::Backends;
use crate::class::Classes;
use crate::host::{invalid_path, validate_host};
use crate::{Index, IngressReport, LEGACY_CLASS, ObjectKey, Options, Output, Warning, tls};

pub(crate) fn translate_ingresses(index: &Index, options: &Options) -> Output {
    let classes = Classes::new(index);
    let wanted = |class: &str| {
        options
            .only_class
            .as_deref()
            .is_none_or(|only| only == class)
    };

    // The Ingresses we serve, with their class.
    let mut selected: Vec<(&ObjectKey, &Ingress, &str)> = Vec::new();
    for (key, ingress) in &index.ingresses {
        if let Some(class) = classes.of(ingress).filter(|c| wanted(c)) {
            selected.push((key, ingress, class));
        }
    }

    let mut served: BTreeSet<&str> = classes.ours.iter().copied().filter(|c| wanted(c)).collect();
    served.extend(selected.iter().map(|(_, _, class)| *class));
    if options.only_class.as_deref() == Some(LEGACY_CLASS) {
        served.insert(LEGACY_CLASS);
    }
    let combined = options
        .combine_classes
        .then(|| served.iter().copied().collect::<Vec<_>>().join(","));
    let snapshot_of = |class: &str| combined.clone().unwrap_or_else(|| class.to_owned());

    let mut groups: BTreeMap<String, Vec<(&ObjectKey, &Ingress, &str)>> = served
        .iter()
        .map(|class| (snapshot_of(class), Vec::new()))
        .collect();
    for entry in selected {
        groups.entry(snapshot_of(entry.2)).or_default().push(entry);
    }

    let mut backends = Backends::new(index);
    let mut out = Output::default();
    for (name, mut ingresses) in groups {
        ingresses.sort_by(|a, b| age(a.1).cmp(&age(b.1)).then_with(|| a.0.cmp(b.0)));
        let mut builder = Builder::new(index, &mut backends);
        for (key, ingress, class) in ingresses {
            let mut warnings = builder.add(key, ingress);
            warnings.sort();
            warnings.dedup();
            out.ingresses.insert(
                key.to_string(),
                IngressReport {
                    class: class.to_owned(),
                    warnings,
                },
            );
        }
        let mut snapshot = builder.finish();
        snapshot.class.clone_from(&name);
        snapshot.replicas = options.replicas;
        out.snapshots.insert(name, snapshot);
    }
    out
}

fn age(ingress: &Ingress) -> Option<&Time> {
    ingress.metadata.creation_timestamp.as_ref()
}

/// The Ingress that claimed a route, a TLS host or the default backend.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    /// `namespace/name`.
    name: String,
    created: Option<Time>,
}

impl Owner {
    /// Why this owner, which claimed first, wins over `later`.
    fn precedes(&self, later: &Owner) -> String {
        if self.created < later.created {
            format!("Ingress {}, which is older", self.name)
        } else {
            format!(
                "Ingress {}, which is as old and comes first by namespace/name",
                self.name
            )
        }
    }
}

/// The routes of one host, and which Ingress owns each path.
#[derive(Debug, Default)]
struct HostRoutes {
    routes: Vec<Route>,
    /// Exact paths as written.
    exact: HashMap<String, Rc<Owner>>,
    /// Prefixes without trailing slashes: `/foo` and `/foo/` match the same requests.
    prefix: HashMap<String, Rc<Owner>>,
}

/// One snapshot under construction.
struct Builder<'i, 'b> {
    index: &'i Index,
    backends: &'b mut Backends<'i>,
    snapshot: Snapshot,
    hosts: BTreeMap<String, HostRoutes>,
    /// Backends already in the snapshot, by [`crate::backend::Resolved::slot`].
    used_backends: HashSet<usize>,
    default_owner: Option<Rc<Owner>>,
    /// TLS host to (certificate id, owning Ingress).
    sni: BTreeMap<String, (String, Rc<Owner>)>,
}

impl<'i, 'b> Builder<'i, 'b> {
    fn new(index: &'i Index, backends: &'b mut Backends<'i>) -> Self {
        Self {
            index,
            backends,
            snapshot: Snapshot {
                format: FORMAT_VERSION,
                ..Snapshot::default()
            },
            hosts: BTreeMap::new(),
            used_backends: HashSet::new(),
            default_owner: None,
            sni: BTreeMap::new(),
        }
    }

    /// Adds one Ingress; returns its warnings. Ingresses must come oldest first.
    fn add(&mut self, key: &'i ObjectKey, ingress: &'i Ingress) -> Vec<Warning> {
        let mut warnings = Vec::new();
        let owner = Rc::new(Owner {
            name: key.to_string(),
            created: age(ingress).cloned(),
        });
        let Some(spec) = ingress.spec.as_ref() else {
            return warnings;
        };

        if let Some(default_backend) = &spec.default_backend {
            self.default_backend(key, &owner, default_backend, &mut warnings);
        }

        for rule in spec.rules.as_deref().unwrap_or_default() {
            let written_host = rule.host.as_deref().unwrap_or("");
            let host = if written_host.is_empty() {
                String::new()
            } else {
                match validate_host(written_host) {
                    Ok(host) => host,
                    Err(why) => {
                        warnings.push(Warning::new(
                            "InvalidHost",
                            format!("rule host {written_host:?} is invalid: {why}; rule skipped"),
                        ));
                        continue;
                    }
                }
            };
            let paths = rule
                .http
                .as_ref()
                .map(|h| h.paths.as_slice())
                .unwrap_or_default();
            if paths.is_empty() {
                continue;
            }
            let shown_host = if host.is_empty() { "*" } else { host.as_str() };
            let vhost = self.hosts.entry(host.clone()).or_default();
            for path in paths {
                let written_path = path.path.as_deref().unwrap_or("");
                // Built only for a warning: most paths have none.
                let at = || {
                    if path.path_type.is_empty() {
                        format!("rule host {shown_host} path {written_path:?}")
                    } else {
                        format!(
                            "rule host {shown_host} path {written_path:?} ({})",
                            path.path_type
                        )
                    }
                };
                let (exact, value) = match (path.path_type.as_str(), written_path) {
                    ("", _) => {
                        warnings.push(Warning::new(
                            "InvalidPathType",
                            format!("{}: pathType is required; path skipped", at()),
                        ));
                        continue;
                    }
                    ("ImplementationSpecific", "") => (false, "/"),
                    ("ImplementationSpecific", p) if !p.starts_with('/') => {
                        warnings.push(Warning::new(
                            "InvalidPath",
                            format!(
                                "{}: must be an absolute path, starting with '/'; path skipped",
                                at()
                            ),
                        ));
                        continue;
                    }
                    ("ImplementationSpecific", p) => (false, p),
                    (kind @ ("Exact" | "Prefix"), p) => {
                        if let Some(why) = invalid_path(p) {
                            warnings.push(Warning::new(
                                "InvalidPath",
                                format!("{}: {why}; path skipped", at()),
                            ));
                            continue;
                        }
                        (kind == "Exact", p)
                    }
                    (other, _) => {
                        warnings.push(Warning::new(
                            "InvalidPathType",
                            format!(
                                "{}: pathType {other:?} is not Exact, Prefix or ImplementationSpecific; path skipped",
                                at()
                            ),
                        ));
                        continue;
                    }
                };
                let (claims, claimed) = if exact {
                    (&mut vhost.exact, value)
                } else {
                    (&mut vhost.prefix, trim_trailing_slashes(value))
                };
                if let Some(holder) = claims.get(claimed) {
                    let by = if holder.name == owner.name {
                        "an earlier path of this Ingress".to_owned()
                    } else {
                        holder.precedes(&owner)
                    };
                    warnings.push(Warning::new(
                        "ConflictingRule",
                        format!("{} is already served by {by}; path skipped", at()),
                    ));
                    continue;
                }
                let resolved = match self.backends.resolve(&key.namespace, &path.backend) {
                    Ok(resolved) => resolved,
                    Err(warning) => {
                        warnings.push(Warning::new(
                            warning.reason,
                            format!("{}: {}; path skipped", at(), warning.message),
                        ));
                        continue;
                    }
                };
                warnings.extend(resolved.warnings.iter().cloned());
                if let Some(backend) = &resolved.backend
                    && self.used_backends.insert(resolved.slot)
                {
                    self.snapshot
                        .backends
                        .insert(resolved.id.clone(), backend.clone());
                }
                claims.insert(claimed.to_owned(), Rc::clone(&owner));
                vhost.routes.push(Route {
                    id: format!("{}:{shown_host}:{}:{value}", owner.name, path.path_type),
                    path: Some(PathMatch {
                        kind: if exact {
                            PathKind::Exact
                        } else {
                            PathKind::Prefix
                        },
                        value: value.to_owned(),
                    }),
                    backend: resolved.id.clone(),
                    source: RouteSource {
                        namespace: key.namespace.clone(),
                        ingress: key.name.clone(),
                        host: written_host.to_owned(),
                        path: written_path.to_owned(),
                        path_type: path.path_type.clone(),
                    },
                    policy: RoutePolicy::default(),
                });
            }
        }

        for (i, entry) in spec.tls.as_deref().unwrap_or_default().iter().enumerate() {
            let mut hosts = Vec::new();
            for written in entry.hosts.as_deref().unwrap_or_default() {
                match validate_host(written) {
                    Ok(host) => hosts.push(host),
                    Err(why) => warnings.push(Warning::new(
                        "InvalidHost",
                        format!("spec.tls[{i}] host {written:?} is invalid: {why}; host skipped"),
                    )),
                }
            }
            if entry.hosts.as_deref().unwrap_or_default().is_empty() {
                // No hosts: the default certificate, for SNI-less or unknown names.
                hosts.push(String::new());
            }
            if hosts.is_empty() {
                continue;
            }
            let Some(secret) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                warnings.push(Warning::new(
                    "MissingSecretName",
                    format!(
                        "spec.tls[{i}] names no Secret; TLS passthrough is not supported, its hosts are served over HTTP only"
                    ),
                ));
                continue;
            };
            let certificate = match tls::certificate(self.index, &key.namespace, secret) {
                Ok(certificate) => certificate,
                Err(warning) => {
                    warnings.push(warning);
                    continue;
                }
            };
            let id = format!("{}/{secret}", key.namespace);
            for host in hosts {
                match self.sni.get(&host) {
                    Some((held, _)) if *held == id => {}
                    Some((_, holder)) => {
                        let shown = if host.is_empty() {
                            "(default)"
                        } else {
                            host.as_str()
                        };
                        let by = if holder.name == owner.name {
                            "an earlier spec.tls entry of this Ingress".to_owned()
                        } else {
                            holder.precedes(&owner)
                        };
                        warnings.push(Warning::new(
                            "ConflictingTLSHost",
                            format!(
                                "spec.tls[{i}] host {shown} already has a certificate from {by}; Secret {secret} is not used for it"
                            ),
                        ));
                    }
                    None => {
                        self.snapshot
                            .certificates
                            .entry(id.clone())
                            .or_insert_with(|| certificate.clone());
                        self.sni.insert(host, (id.clone(), Rc::clone(&owner)));
                    }
                }
            }
        }
        warnings
    }

    fn default_backend(
        &mut self,
        key: &'i ObjectKey,
        owner: &Rc<Owner>,
        backend: &'i k8s_openapi::api::networking::v1::IngressBackend,
        warnings: &mut Vec<Warning>,
    ) {
        let resolved = match self.backends.resolve(&key.namespace, backend) {
            Ok(resolved) => resolved,
            Err(warning) => {
                warnings.push(Warning::new(
                    warning.reason,
                    format!("spec.defaultBackend: {}; ignored", warning.message),
                ));
                return;
            }
        };
        warnings.extend(resolved.warnings.iter().cloned());
        if let Some(holder) = &self.default_owner {
            warnings.push(Warning::new(
                "ConflictingDefaultBackend",
                format!(
                    "spec.defaultBackend is ignored in favour of the default backend of {}",
                    holder.precedes(owner)
                ),
            ));
            return;
        }
        if let Some(b) = &resolved.backend
            && self.used_backends.insert(resolved.slot)
        {
            self.snapshot
                .backends
                .insert(resolved.id.clone(), b.clone());
        }
        self.snapshot.default_route = Some(Route {
            id: format!("{}:defaultBackend", owner.name),
            path: None,
            backend: resolved.id.clone(),
            source: RouteSource {
                namespace: key.namespace.clone(),
                ingress: key.name.clone(),
                ..RouteSource::default()
            },
            policy: RoutePolicy::default(),
        });
        self.default_owner = Some(Rc::clone(owner));
    }

    fn finish(mut self) -> Snapshot {
        self.snapshot.hosts = self
            .hosts
            .into_iter()
            .filter(|(_, vhost)| !vhost.routes.is_empty())
            .map(|(host, HostRoutes { mut routes, .. })| {
                routes.sort_by(|a, b| route_order(a).cmp(&route_order(b)));
                // Most hosts have a path or two; without this a vector grown to four slots
                // keeps the spare ones for the life of the snapshot.
                routes.shrink_to_fit();
                VirtualHost { host, routes }
            })
            .collect();
        self.snapshot.sni = self
            .sni
            .into_iter()
            .map(|(host, (certificate, _))| SniHost {
                host,
                certificate,
                client_ca: None,
            })
            .collect();
        self.snapshot
    }
}

/// Routes of a host by path, `Exact` before `Prefix` on equal paths, then by id.
fn route_order(route: &Route) -> (&str, bool, &str) {
    let (path, prefix) = route.path.as_ref().map_or(("", false), |p| {
        (p.value.as_str(), p.kind == PathKind::Prefix)
    });
    (path, prefix, route.id.as_str())
}

/// `/foo/` and `/foo` are one prefix; `/` stays `/`.
fn trim_trailing_slashes(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

#[cfg(test)]
mod tests {
    use portico_api::Router;

    use super::*;
    use crate::parse_manifests;

    fn translate(yaml: &str, options: &Options) -> Output {
        let parsed = parse_manifests(yaml, "default");
        assert_eq!(parsed.problems, vec![]);
        translate_ingresses(&Index::from_objects(parsed.objects), options)
    }

    /// An Ingress of the legacy class with one rule without host, and its Service.
    fn ingress_with_paths(paths: &[(&str, &str)]) -> String {
        let mut yaml = String::from(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\n\
             metadata: {name: web, annotations: {kubernetes.io/ingress.class: portico}}\n\
             spec:\n  rules:\n  - http:\n      paths:\n",
        );
        for (path_type, path) in paths {
            yaml.push_str(&format!(
                "      - {{path: {path:?}, pathType: {path_type}, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
            ));
        }
        yaml
    }

    fn kind(route: &Route) -> (PathKind, &str) {
        let path = route.path.as_ref().unwrap();
        (path.kind, path.value.as_str())
    }

    /// Every row of the path-matching examples in the Kubernetes Ingress documentation. The
    /// translator's part is to emit each path with its kind as written; which route a request
    /// takes is the matcher's (portico_api::Router), run here on the translated snapshot to
    /// check the two agree end to end.
    #[test]
    fn kubernetes_docs_path_matching_examples() {
        use PathKind::{Exact, Prefix};
        // (paths as (pathType, path), request, the path expected to match or None for no match)
        /// (pathType, path) pairs of the Ingress, the request path, and the matched path.
        type Row<'a> = (
            &'a [(&'a str, &'a str)],
            &'a str,
            Option<(PathKind, &'a str)>,
        );
        let rows: &[Row] = &[
            (&[("Prefix", "/")], "/anything/at/all", Some((Prefix, "/"))),
            (&[("Exact", "/foo")], "/foo", Some((Exact, "/foo"))),
            (&[("Exact", "/foo")], "/bar", None),
            (&[("Exact", "/foo")], "/foo/", None),
            (&[("Exact", "/foo/")], "/foo", None),
            (&[("Prefix", "/foo")], "/foo", Some((Prefix, "/foo"))),
            (&[("Prefix", "/foo")], "/foo/", Some((Prefix, "/foo"))),
            (&[("Prefix", "/foo/")], "/foo", Some((Prefix, "/foo/"))),
            (&[("Prefix", "/foo/")], "/foo/", Some((Prefix, "/foo/"))),
            (&[("Prefix", "/aaa/bb")], "/aaa/bbb", None),
            (
                &[("Prefix", "/aaa/bbb")],
                "/aaa/bbb",
                Some((Prefix, "/aaa/bbb")),
            ),
            (
                &[("Prefix", "/aaa/bbb/")],
                "/aaa/bbb",
                Some((Prefix, "/aaa/bbb/")),
            ),
            (
                &[("Prefix", "/aaa/bbb")],
                "/aaa/bbb/",
                Some((Prefix, "/aaa/bbb")),
            ),
            (
                &[("Prefix", "/aaa/bbb")],
                "/aaa/bbb/ccc",
                Some((Prefix, "/aaa/bbb")),
            ),
            (&[("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
            (
                &[("Prefix", "/"), ("Prefix", "/aaa")],
                "/aaa/ccc",
                Some((Prefix, "/aaa")),
            ),
            (
                &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
                "/aaa/bbb",
                Some((Prefix, "/aaa/bbb")),
            ),
            (
                &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
                "/ccc",
                Some((Prefix, "/")),
            ),
            (&[("Prefix", "/aaa")], "/ccc", None),
            (
                &[("Prefix", "/foo"), ("Exact", "/foo")],
                "/foo",
                Some((Exact, "/foo")),
            ),
        ];
        for (paths, request, want) in rows {
            let out = translate(&ingress_with_paths(paths), &Options::default());
            let report = &out.ingresses["default/web"];
            assert_eq!(report.warnings, vec![], "{paths:?}");
            let snapshot = &out.snapshots[LEGACY_CLASS];
            assert_eq!(snapshot.hosts.len(), 1);
            assert_eq!(snapshot.hosts[0].host, "");
            // Every path is a route, kept as written.
            let mut emitted: Vec<_> = snapshot.hosts[0].routes.iter().map(kind).collect();
            let mut written: Vec<_> = paths
                .iter()
                .map(|(t, p)| (if *t == "Exact" { Exact } else { Prefix }, *p))
                .collect();
            emitted.sort_by_key(|(k, p)| (*p, *k == Prefix));
            written.sort_by_key(|(k, p)| (*p, *k == Prefix));
            assert_eq!(emitted, written, "{paths:?}");
            let router = Router::new(snapshot.clone());
            let got = router
                .route("any.example.com", request)
                .map(|m| kind(m.route));
            assert_eq!(got, *want, "{paths:?} {request}");
        }
    }

    #[test]
    fn implementation_specific_is_prefix_and_defaults_to_slash() {
        let out = translate(
            &ingress_with_paths(&[
                ("ImplementationSpecific", "/app"),
                ("ImplementationSpecific", ""),
            ]),
            &Options::default(),
        );
        let routes = &out.snapshots[LEGACY_CLASS].hosts[0].routes;
        let got: Vec<_> = routes.iter().map(|r| (kind(r), r.id.as_str())).collect();
        assert_eq!(
            got,
            [
                (
                    (PathKind::Prefix, "/"),
                    "default/web:*:ImplementationSpecific:/"
                ),
                (
                    (PathKind::Prefix, "/app"),
                    "default/web:*:ImplementationSpecific:/app"
                ),
            ]
        );
        assert_eq!(routes[0].source.path, "");
    }

    #[test]
    fn trailing_slash_prefixes_are_one_route() {
        let out = translate(
            &ingress_with_paths(&[
                ("Prefix", "/foo"),
                ("Prefix", "/foo/"),
                ("ImplementationSpecific", "/foo//"),
                ("Exact", "/foo/"),
            ]),
            &Options::default(),
        );
        let routes = &out.snapshots[LEGACY_CLASS].hosts[0].routes;
        let got: Vec<_> = routes.iter().map(kind).collect();
        assert_eq!(
            got,
            [(PathKind::Prefix, "/foo"), (PathKind::Exact, "/foo/")]
        );
        let reasons: Vec<_> = out.ingresses["default/web"]
            .warnings
            .iter()
            .map(|w| w.reason.as_str())
            .collect();
        assert_eq!(reasons, ["ConflictingRule", "ConflictingRule"]);
    }

    #[test]
    fn translation_is_deterministic() {
        let yaml = ingress_with_paths(&[("Prefix", "/b"), ("Exact", "/a"), ("Prefix", "/a")]);
        let a = translate(&yaml, &Options::default());
        let b = translate(&yaml, &Options::default());
        assert_eq!(a, b);
        assert_eq!(
            serde_yaml_ng::to_string(&a).unwrap(),
            serde_yaml_ng::to_string(&b).unwrap()
        );
    }
}
