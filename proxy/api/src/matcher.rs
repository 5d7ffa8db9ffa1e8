//! The pure route matcher: `(host, path)` to a route, in time independent of how many routes
//! the snapshot holds.
//!
//! Host selection comes first, path selection second, as in the Ingress spec and every
//! nginx-derived controller:
//!
//! 1. The host: an exact host (hash map), else a `*.` wildcard covering exactly the first label
//!    (hash map keyed by the rest), else the rules without a host (`""`).
//! 2. The path within that host only: an `Exact` path (hash map), else the longest `Prefix`
//!    by whole segments (a trie of segments). Exact beats Prefix.
//! 3. Nothing matched: the default route, if the snapshot has one.
//!
//! A host that matched but has no matching path does not fall back to a less specific host;
//! it goes to the default route. Paths are case-sensitive. The path handed to [`Router::route`]
//! must already be normalised by the caller (percent-decoding of unreserved characters,
//! dot-segments resolved); empty segments (`//`) are ignored by `Prefix` matching.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::snapshot::{PathKind, Route, Snapshot, SniHost, VirtualHost};

/// A map from hosts to values with Ingress host semantics: exact, one-label wildcard, any.
#[derive(Debug, Clone)]
pub struct HostMap<T> {
    exact: HashMap<Box<str>, T>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<Box<str>, T>,
    any: Option<T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: None,
        }
    }
}

impl<T> HostMap<T> {
    /// Inserts `value` for `host` (`""`, exact, or `*.suffix`), returning the previous value.
    /// `host` must be lower-case.
    pub fn insert(&mut self, host: &str, value: T) -> Option<T> {
        if host.is_empty() {
            self.any.replace(value)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            self.wildcard.insert(suffix.into(), value)
        } else {
            self.exact.insert(host.into(), value)
        }
    }

    /// The value for a request host: exact, else wildcard, else any. `host` must be
    /// normalised with [`normalize_host`].
    pub fn get(&self, host: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        if let Some((first, rest)) = host.split_once('.')
            && !first.is_empty()
            && let Some(v) = self.wildcard.get(rest)
        {
            return Some(v);
        }
        self.any.as_ref()
    }

    /// The value stored for exactly this host pattern, without fallback.
    pub fn get_pattern(&self, host: &str) -> Option<&T> {
        if host.is_empty() {
            self.any.as_ref()
        } else if let Some(suffix) = host.strip_prefix("*.") {
            self.wildcard.get(suffix)
        } else {
            self.exact.get(host)
        }
    }

    /// Number of host patterns held.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.any.is_some())
    }

    /// True when no host pattern is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lower-cases an authority or server name and strips a port and a trailing dot:
/// `Foo.Example.com.:8443` becomes `foo.example.com`; `[::1]:80` becomes `[::1]`.
pub fn normalize_host(authority: &str) -> Cow<'_, str> {
    let without_port = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Paths of one host.
#[derive(Debug, Clone, Default)]
struct PathTable {
    /// Exact path to route index in the virtual host.
    exact: HashMap<Box<str>, usize>,
    prefix: Segment,
}

/// A trie node: one path segment.
#[derive(Debug, Clone, Default)]
struct Segment {
    children: HashMap<Box<str>, Segment>,
    /// A `Prefix` route ending at this segment.
    route: Option<usize>,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl PathTable {
    fn new(routes: &[Route]) -> Self {
        let mut table = Self::default();
        for (i, route) in routes.iter().enumerate() {
            let Some(path) = &route.path else { continue };
            match path.kind {
                PathKind::Exact => {
                    table.exact.entry(path.value.as_str().into()).or_insert(i);
                }
                PathKind::Prefix => {
                    let mut node = &mut table.prefix;
                    for seg in segments(&path.value) {
                        node = node.children.entry(seg.into()).or_default();
                    }
                    // The first route for a path wins; the translator has resolved conflicts.
                    node.route.get_or_insert(i);
                }
            }
        }
        table
    }

    fn find(&self, path: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(path) {
            return Some(i);
        }
        let mut node = &self.prefix;
        let mut best = node.route;
        for seg in segments(path) {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    best = node.route.or(best);
                }
                None => break,
            }
        }
        best
    }
}

/// A matched route.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    pub route: &'a Route,
    /// The virtual host the route belongs to; `None` for the default route.
    pub host: Option<&'a VirtualHost>,
    /// Positions in [`Snapshot::hosts`] and in that host's routes, so that state built alongside
    /// the snapshot (per-route middleware) is found without searching; `None` for the default
    /// route.
    pub index: Option<(usize, usize)>,
}

impl RouteMatch<'_> {
    /// True when nothing but the default backend matched.
    pub fn is_default(&self) -> bool {
        self.host.is_none()
    }
}

/// A snapshot with its lookup structures, built once per snapshot.
#[derive(Debug, Clone)]
pub struct Router {
    snapshot: Snapshot,
    /// Index into `snapshot.hosts` and that host's path table.
    hosts: HostMap<(usize, PathTable)>,
    /// Index into `snapshot.sni`.
    sni: HostMap<usize>,
}

impl Router {
    /// Indexes `snapshot`. Later duplicates of a host pattern are ignored.
    pub fn new(snapshot: Snapshot) -> Self {
        let mut hosts = HostMap::default();
        for (i, vhost) in snapshot.hosts.iter().enumerate() {
            if hosts.get_pattern(&vhost.host).is_none() {
                hosts.insert(&vhost.host, (i, PathTable::new(&vhost.routes)));
            }
        }
        let mut sni = HostMap::default();
        for (i, entry) in snapshot.sni.iter().enumerate() {
            if sni.get_pattern(&entry.host).is_none() {
                sni.insert(&entry.host, i);
            }
        }
        Self {
            snapshot,
            hosts,
            sni,
        }
    }

    /// The snapshot this router serves.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The route for a request. `host` is the Host header or `:authority` (port and case are
    /// normalised here); `path` is the normalised path without the query.
    pub fn route(&self, host: &str, path: &str) -> Option<RouteMatch<'_>> {
        let host = normalize_host(host);
        if let Some((vi, table)) = self.hosts.get(&host)
            && let Some(ri) = table.find(path)
        {
            let vhost = &self.snapshot.hosts[*vi];
            return Some(RouteMatch {
                route: &vhost.routes[ri],
                host: Some(vhost),
                index: Some((*vi, ri)),
            });
        }
        self.snapshot
            .default_route
            .as_ref()
            .map(|route| RouteMatch {
                route,
                host: None,
                index: None,
            })
    }

    /// The TLS entry for a server name from SNI: exact, else wildcard, else the entry for `""`
    /// (the default certificate), which also serves clients that send no SNI.
    pub fn sni(&self, server_name: Option<&str>) -> Option<&SniHost> {
        let name = normalize_host(server_name.unwrap_or(""));
        self.sni.get(&name).map(|&i| &self.snapshot.sni[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{PathMatch, RouteSource};

    fn route(kind: PathKind, path: &str) -> Route {
        Route {
            id: format!("{kind:?}:{path}"),
            path: Some(PathMatch {
                kind,
                value: path.to_owned(),
            }),
            backend: String::new(),
            source: RouteSource::default(),
            policy: Default::default(),
        }
    }

    fn router(hosts: Vec<(&str, Vec<Route>)>, default: bool) -> Router {
        let mut s = Snapshot::empty("test");
        s.hosts = hosts
            .into_iter()
            .map(|(h, routes)| VirtualHost {
                host: h.to_owned(),
                routes,
            })
            .collect();
        if default {
            s.default_route = Some(Route {
                path: None,
                ..route(PathKind::Prefix, "/")
            });
            s.default_route.as_mut().unwrap().id = "default".into();
        }
        Router::new(s)
    }

    fn matched(r: &Router, host: &str, path: &str) -> Option<String> {
        r.route(host, path).map(|m| m.route.id.clone())
    }

    /// Every row of the Kubernetes documentation's "Examples" table for path matching.
    #[test]
    fn kubernetes_docs_path_examples() {
        use PathKind::{Exact, Prefix};
        /// Routes, request path, expected route id (`None`: the default backend).
        type Row<'a> = (&'a [(PathKind, &'a str)], &'a str, Option<&'a str>);
        let rows: &[Row] = &[
            (&[(Prefix, "/")], "/anything/at/all", Some("Prefix:/")),
            (&[(Exact, "/foo")], "/foo", Some("Exact:/foo")),
            (&[(Exact, "/foo")], "/bar", None),
            (&[(Exact, "/foo")], "/foo/", None),
            (&[(Exact, "/foo/")], "/foo", None),
            (&[(Prefix, "/foo")], "/foo", Some("Prefix:/foo")),
            (&[(Prefix, "/foo")], "/foo/", Some("Prefix:/foo")),
            (&[(Prefix, "/foo/")], "/foo", Some("Prefix:/foo/")),
            (&[(Prefix, "/foo/")], "/foo/", Some("Prefix:/foo/")),
            (&[(Prefix, "/aaa/bb")], "/aaa/bbb", None),
            (&[(Prefix, "/aaa/bbb")], "/aaa/bbb", Some("Prefix:/aaa/bbb")),
            (
                &[(Prefix, "/aaa/bbb/")],
                "/aaa/bbb",
                Some("Prefix:/aaa/bbb/"),
            ),
            (
                &[(Prefix, "/aaa/bbb")],
                "/aaa/bbb/",
                Some("Prefix:/aaa/bbb"),
            ),
            (
                &[(Prefix, "/aaa/bbb")],
                "/aaa/bbb/ccc",
                Some("Prefix:/aaa/bbb"),
            ),
            (&[(Prefix, "/aaa/bbb")], "/aaa/bbbxyz", None),
            (
                &[(Prefix, "/"), (Prefix, "/aaa")],
                "/aaa/ccc",
                Some("Prefix:/aaa"),
            ),
            (
                &[(Prefix, "/"), (Prefix, "/aaa"), (Prefix, "/aaa/bbb")],
                "/aaa/bbb",
                Some("Prefix:/aaa/bbb"),
            ),
            (
                &[(Prefix, "/"), (Prefix, "/aaa"), (Prefix, "/aaa/bbb")],
                "/ccc",
                Some("Prefix:/"),
            ),
            (&[(Prefix, "/aaa")], "/ccc", None),
            (
                &[(Prefix, "/foo"), (Exact, "/foo")],
                "/foo",
                Some("Exact:/foo"),
            ),
        ];
        for (i, (routes, path, want)) in rows.iter().enumerate() {
            let routes = routes.iter().map(|(k, p)| route(*k, p)).collect();
            let r = router(vec![("foo.example.com", routes)], false);
            assert_eq!(
                matched(&r, "foo.example.com", path).as_deref(),
                *want,
                "row {i}: request {path}"
            );
        }
    }

    #[test]
    fn exact_beats_prefix_and_longest_prefix_wins() {
        let r = router(
            vec![(
                "a.example",
                vec![
                    route(PathKind::Prefix, "/api"),
                    route(PathKind::Prefix, "/api/v1"),
                    route(PathKind::Exact, "/api/v1/health"),
                ],
            )],
            false,
        );
        assert_eq!(
            matched(&r, "a.example", "/api/v1/health").unwrap(),
            "Exact:/api/v1/health"
        );
        assert_eq!(
            matched(&r, "a.example", "/api/v1/health/x").unwrap(),
            "Prefix:/api/v1"
        );
        assert_eq!(matched(&r, "a.example", "/api/v2").unwrap(), "Prefix:/api");
        assert_eq!(matched(&r, "a.example", "/apis"), None);
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any() {
        let r = router(
            vec![
                ("", vec![route(PathKind::Prefix, "/any")]),
                ("*.example.com", vec![route(PathKind::Prefix, "/wild")]),
                ("foo.example.com", vec![route(PathKind::Prefix, "/exact")]),
            ],
            true,
        );
        assert_eq!(
            matched(&r, "foo.example.com", "/exact").unwrap(),
            "Prefix:/exact"
        );
        assert_eq!(
            matched(&r, "FOO.Example.COM:8443", "/exact").unwrap(),
            "Prefix:/exact"
        );
        assert_eq!(
            matched(&r, "foo.example.com.", "/exact").unwrap(),
            "Prefix:/exact"
        );
        assert_eq!(
            matched(&r, "bar.example.com", "/wild").unwrap(),
            "Prefix:/wild"
        );
        // A wildcard covers exactly one label.
        assert_eq!(
            matched(&r, "a.b.example.com", "/any").unwrap(),
            "Prefix:/any"
        );
        assert_eq!(matched(&r, "example.com", "/any").unwrap(), "Prefix:/any");
        assert_eq!(matched(&r, ".example.com", "/any").unwrap(), "Prefix:/any");
        assert_eq!(matched(&r, "other.test", "/any").unwrap(), "Prefix:/any");
        // The host is chosen first; a path it lacks goes to the default route, not to a
        // less specific host.
        assert_eq!(matched(&r, "foo.example.com", "/wild").unwrap(), "default");
        assert_eq!(matched(&r, "bar.example.com", "/any").unwrap(), "default");
        assert!(r.route("foo.example.com", "/nothing").unwrap().is_default());
    }

    #[test]
    fn match_carries_its_position() {
        let r = router(
            vec![
                ("a.example", vec![route(PathKind::Exact, "/x")]),
                (
                    "b.example",
                    vec![route(PathKind::Exact, "/y"), route(PathKind::Prefix, "/z")],
                ),
            ],
            true,
        );
        let m = r.route("b.example", "/z/1").unwrap();
        let (h, i) = m.index.unwrap();
        assert_eq!(&r.snapshot().hosts[h].routes[i], m.route);
        assert_eq!(r.route("c.example", "/").unwrap().index, None);
    }

    #[test]
    fn no_default_route_means_no_match() {
        let r = router(
            vec![("a.example", vec![route(PathKind::Exact, "/")])],
            false,
        );
        assert!(r.route("a.example", "/x").is_none());
        assert!(r.route("b.example", "/").is_none());
    }

    #[test]
    fn prefix_ignores_empty_segments() {
        let r = router(vec![("", vec![route(PathKind::Prefix, "/a/b")])], false);
        assert_eq!(matched(&r, "h", "/a//b/c").unwrap(), "Prefix:/a/b");
        assert_eq!(matched(&r, "h", "//a/b").unwrap(), "Prefix:/a/b");
        assert_eq!(matched(&r, "h", "/A/b"), None, "paths are case-sensitive");
    }

    #[test]
    fn first_duplicate_wins() {
        let mut a = route(PathKind::Prefix, "/x");
        a.id = "first".into();
        let mut b = route(PathKind::Prefix, "/x/");
        b.id = "second".into();
        let r = router(vec![("", vec![a, b])], false);
        assert_eq!(matched(&r, "h", "/x/y").unwrap(), "first");
    }

    #[test]
    fn sni_lookup() {
        let mut s = Snapshot::empty("t");
        s.sni = ["", "*.example.com", "a.example.com"]
            .iter()
            .map(|h| SniHost {
                host: (*h).into(),
                certificate: format!("cert-{h}"),
                client_ca: None,
            })
            .collect();
        let r = Router::new(s);
        let cert = |n: Option<&str>| r.sni(n).map(|e| e.certificate.clone());
        assert_eq!(cert(Some("a.example.com")).unwrap(), "cert-a.example.com");
        assert_eq!(cert(Some("B.example.com")).unwrap(), "cert-*.example.com");
        assert_eq!(cert(Some("x.y.example.com")).unwrap(), "cert-");
        assert_eq!(cert(None).unwrap(), "cert-");
        assert!(Router::new(Snapshot::empty("t")).sni(Some("a")).is_none());
    }

    #[test]
    fn normalize_host_forms() {
        assert_eq!(normalize_host("Example.COM"), "example.com");
        assert_eq!(normalize_host("example.com:80"), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert!(matches!(normalize_host("plain.host"), Cow::Borrowed(_)));
    }

    #[test]
    fn policy_fields_serialise_in_camel_case() {
        use crate::policy::{Jwks, TokenSource};
        let jwks = Jwks::Remote {
            uri: "https://id.example/jwks".into(),
            cache_duration_ms: 5,
        };
        assert_eq!(
            serde_json::to_string(&jwks).unwrap(),
            r#"{"remote":{"uri":"https://id.example/jwks","cacheDurationMs":5}}"#
        );
        let source = TokenSource::Header {
            name: "x-token".into(),
            prefix: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&source).unwrap(),
            r#"{"header":{"name":"x-token","prefix":""}}"#
        );
    }

    #[test]
    fn snapshot_roundtrips_through_json() {
        let r = router(vec![("a", vec![route(PathKind::Exact, "/x")])], true);
        let json = serde_json::to_string(r.snapshot()).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, r.snapshot());
    }
}
