//! IngressPolicy resolution: targets, precedence per block, reference resolution, status.
//!
//! Runs after Ingress translation, over the routes it produced. For every route (the default
//! route included) and every block, the first policy in this order that sets the block wins:
//!
//! 1. `overrides` of policies in the platform namespace targeting the route's IngressClass,
//!    oldest first (`creationTimestamp`, then namespace/name);
//! 2. `defaults`, most specific first: a path target, then an Ingress target, then an
//!    IngressClass target; at one level a targetRef before a targetSelector, then the oldest,
//!    then namespace/name.
//!
//! A winning block with `disabled: true` leaves the route without that block, so a more
//! specific default can drop an inherited default; overrides always come first, so they cannot
//! be dropped that way.
//!
//! Decisions:
//! - `defaults` on an IngressClass from the platform namespace apply to every Ingress of the
//!   class; from any other namespace they apply only to Ingresses of the class in the policy's
//!   own namespace, so that one tenant cannot set defaults for another.
//! - `overrides` are honoured only from the platform namespace; a policy elsewhere that sets
//!   them is not accepted at all (`Accepted: False, Invalid`), so nothing half-applies.
//! - A path target names the Ingress rule host (`""` for rules without a host, compared
//!   case-insensitively) and the path as written; `pathType`, when set, must match too.
//! - A policy that is not accepted (semantic errors) applies nowhere; a policy with some
//!   missing targets still applies to the targets that exist.
//! - Unresolved references fail closed (see [`convert`]).
//! - The client CA of `clientCertificate` is per host: it is set on the host's SNI entry (an
//!   exact entry is created from a covering wildcard when needed). A host without TLS cannot
//!   verify certificates; this is reported and its routes that require one refuse requests.
//!   When two policies give one host different CAs, the first route's (in host, path order)
//!   wins and the other policy reports it.
//! - In standalone mode nothing acknowledges a snapshot, so applied means `Programmed`.

mod convert;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portico_api::{ClientCa, Route, RoutePolicy, RouteSource, Snapshot, SniHost};
use portico_crds::conditions::{self as cond, accepted, programmed, resolved_refs};
use portico_crds::{
    AncestorRef, IngressPolicy, IngressPolicyStatus, LabelOperator, PolicyAncestorStatus,
    PolicyCondition, PolicyTargetSelector, TargetKind,
};

use crate::backend::Backends;
use crate::class::is_ours;
use crate::{CONTROLLER_NAME, Index, ObjectKey, Options, Output};
use convert::{Block, Converted, Converter, Problems, Value};

const GROUP: &str = "networking.k8s.io";
const MAX_ANCESTORS: usize = 16;

/// Where a policy attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attach {
    Class(String),
    Ingress {
        ingress: ObjectKey,
        selector: bool,
    },
    Path {
        ingress: ObjectKey,
        host: String,
        path: String,
        path_type: Option<String>,
    },
}

/// Precedence level of a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    // Declared most specific first, so that sorting puts it first.
    Path,
    Ingress,
    Class,
}

/// One policy's claim on one route. Sorts winner first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank<'i> {
    /// Overrides (`false`) before defaults (`true`).
    default: bool,
    level: Level,
    selector: bool,
    created: Option<&'i Time>,
    key: &'i ObjectKey,
}

impl Rank<'_> {
    fn same_level(&self, other: &Rank<'_>) -> bool {
        self.default == other.default
            && self.level == other.level
            && self.selector == other.selector
    }

    fn describe(&self) -> &'static str {
        match (self.default, self.level) {
            (false, _) => "override",
            (true, Level::Path) => "path default",
            (true, Level::Ingress) if self.selector => "Ingress default by selector",
            (true, Level::Ingress) => "Ingress default",
            (true, Level::Class) => "IngressClass default",
        }
    }
}

/// What happened to one policy at one ancestor.
#[derive(Debug, Default)]
struct Ancestor {
    aref: AncestorRef,
    missing: Vec<String>,
    routes: BTreeSet<String>,
    won: BTreeSet<Block>,
    /// Block to the policies that won it (`namespace/name (kind)`), and whether one of them
    /// was at the same level (so that only age or name decided).
    lost: BTreeMap<Block, (BTreeSet<String>, bool)>,
    problems: BTreeSet<String>,
}

/// One IngressPolicy being resolved.
#[derive(Debug)]
struct State<'i> {
    key: &'i ObjectKey,
    policy: &'i IngressPolicy,
    problems: Problems,
    defaults: Option<Converted>,
    overrides: Option<Converted>,
    attachments: Vec<(Attach, usize)>,
    ancestors: Vec<Ancestor>,
}

impl State<'_> {
    fn accepted(&self) -> bool {
        self.problems.invalid.is_empty()
    }

    fn ancestor(&mut self, aref: AncestorRef) -> usize {
        if let Some(i) = self.ancestors.iter().position(|a| a.aref == aref) {
            return i;
        }
        self.ancestors.push(Ancestor {
            aref,
            ..Ancestor::default()
        });
        self.ancestors.len() - 1
    }
}

pub(crate) fn resolve(
    index: &Index,
    options: &Options,
    out: &mut Output,
) -> BTreeMap<String, IngressPolicyStatus> {
    let mut backends = Backends::new(index);
    let served = served_classes(index, options, out);
    let paths = served_paths(out);
    let platform = Platforms {
        default: options.platform_namespace.as_deref(),
        by_class: &options.class_platform_namespaces,
    };

    let mut states: Vec<State<'_>> = index
        .policies
        .iter()
        .map(|(key, policy)| {
            let mut state = State {
                key,
                policy,
                problems: Problems::default(),
                defaults: None,
                overrides: None,
                attachments: Vec::new(),
                ancestors: Vec::new(),
            };
            prepare(
                &mut state,
                index,
                &mut backends,
                platform,
                &served,
                &paths,
                out,
            );
            state
        })
        .collect();

    apply_to_routes(&mut states, platform, out);
    statuses(&states)
}

/// The platform namespace of each class: its own (from its ProxyClass), else the default.
#[derive(Debug, Clone, Copy)]
struct Platforms<'o> {
    default: Option<&'o str>,
    by_class: &'o BTreeMap<String, String>,
}

impl<'o> Platforms<'o> {
    fn of(&self, class: &str) -> Option<&'o str> {
        self.by_class
            .get(class)
            .map(String::as_str)
            .or(self.default)
    }

    /// True when `namespace` is the platform namespace of some class.
    fn includes(&self, namespace: &str) -> bool {
        self.default == Some(namespace) || self.by_class.values().any(|p| p == namespace)
    }
}

/// The classes whose IngressClass this translation serves.
fn served_classes(index: &Index, options: &Options, out: &Output) -> BTreeSet<String> {
    let mut served: BTreeSet<String> = index
        .ingress_classes
        .iter()
        .filter(|(_, class)| is_ours(class))
        .map(|(name, _)| name.clone())
        .collect();
    served.extend(out.ingresses.values().map(|r| r.class.clone()));
    if let Some(only) = &options.only_class {
        served.retain(|c| c == only);
    }
    served
}

/// The sources of every served route, by `(namespace, ingress)`: a path target is checked
/// against its own Ingress's few paths, never against every route.
type ServedPaths<'o> = HashMap<(&'o str, &'o str), Vec<&'o RouteSource>>;

fn served_paths(out: &Output) -> ServedPaths<'_> {
    let mut paths: ServedPaths<'_> = HashMap::new();
    for route in out
        .snapshots
        .values()
        .flat_map(|s| s.hosts.iter().flat_map(|h| &h.routes))
    {
        let source = &route.source;
        paths
            .entry((source.namespace.as_str(), source.ingress.as_str()))
            .or_default()
            .push(source);
    }
    paths
}

/// Validates a policy, converts its bodies and resolves its targets into attachments.
fn prepare<'i>(
    state: &mut State<'i>,
    index: &'i Index,
    backends: &mut Backends<'i>,
    platform: Platforms<'_>,
    served: &BTreeSet<String>,
    paths: &ServedPaths<'_>,
    out: &Output,
) {
    let policy: &'i IngressPolicy = state.policy;
    let key: &'i ObjectKey = state.key;
    let spec = &policy.spec;
    let ns = key.namespace.as_str();

    // The CRD's own CEL rules: the API server enforces them in a cluster; standalone mode has
    // none, so the same compiled rules run here and a breach is reported, never applied.
    // As with the API server's refusal, nothing of a policy that breaks them is converted; its
    // targets are still resolved so that the refusal shows in its status.
    let cel_ok = match portico_crds::validate(policy) {
        Ok(()) => true,
        Err(errors) => {
            state.problems.invalid.extend(errors);
            false
        }
    };
    if spec.overrides.is_some() && !platform.includes(ns) {
        state.problems.invalid.push(match platform.default {
            Some(p) => format!(
                "overrides are only honoured from the platform namespace {p}; this policy is in {ns}: move it there or use defaults"
            ),
            None => "overrides are disabled: no platform namespace is configured; use defaults"
                .to_owned(),
        });
    }

    for (part, body, slot) in [
        ("defaults", spec.defaults.as_ref(), &mut state.defaults),
        ("overrides", spec.overrides.as_ref(), &mut state.overrides),
    ] {
        if let Some(body) = body.filter(|_| cel_ok) {
            let mut converter = Converter {
                index,
                backends,
                namespace: ns,
                name: &key.name,
                part,
                problems: &mut state.problems,
            };
            *slot = Some(converter.convert(body));
        }
    }
    state.problems.refs.sort();
    state.problems.refs.dedup();

    // Targets.
    for r in &spec.target_refs {
        match r.kind {
            TargetKind::IngressClass => {
                let i = state.ancestor(AncestorRef {
                    group: GROUP.into(),
                    kind: "IngressClass".into(),
                    namespace: None,
                    name: r.name.clone(),
                });
                if served.contains(&r.name) {
                    state.attachments.push((Attach::Class(r.name.clone()), i));
                } else {
                    let why = match index.ingress_classes.get(&r.name) {
                        None => format!("IngressClass {} not found", r.name),
                        Some(_) => format!("IngressClass {} is not managed by portico", r.name),
                    };
                    state.ancestors[i].missing.push(why);
                }
            }
            TargetKind::Ingress => {
                let ingress = ObjectKey::new(ns, &r.name);
                let i = state.ancestor(ingress_ref(&ingress));
                if let Some(why) = ingress_missing(index, out, &ingress) {
                    state.ancestors[i].missing.push(why);
                    continue;
                }
                match (&r.host, &r.path) {
                    (Some(host), Some(path)) => {
                        let path_type = r.path_type.map(|t| t.as_str().to_owned());
                        let host = host.to_ascii_lowercase();
                        let found = paths
                            .get(&(ingress.namespace.as_str(), ingress.name.as_str()))
                            .is_some_and(|sources| {
                                sources.iter().any(|s| {
                                    s.host.eq_ignore_ascii_case(&host)
                                        && s.path == *path
                                        && path_type.as_ref().is_none_or(|t| *t == s.path_type)
                                })
                            });
                        if found {
                            state.attachments.push((
                                Attach::Path {
                                    ingress,
                                    host,
                                    path: path.clone(),
                                    path_type,
                                },
                                i,
                            ));
                        } else {
                            let shown_host = if host.is_empty() {
                                "(rules without host)"
                            } else {
                                host.as_str()
                            };
                            let typed = path_type.map(|t| format!(" ({t})")).unwrap_or_default();
                            state.ancestors[i].missing.push(format!(
                                "Ingress {ns}/{} has no served path {path}{typed} under host {shown_host}",
                                r.name
                            ));
                        }
                    }
                    _ => state.attachments.push((
                        Attach::Ingress {
                            ingress,
                            selector: false,
                        },
                        i,
                    )),
                }
            }
        }
    }
    for selector in &spec.target_selectors {
        for (key, ingress) in index.ingresses.range(ObjectKey::new(ns, "")..) {
            if key.namespace != ns {
                break;
            }
            if !selects(selector, ingress) || ingress_missing(index, out, key).is_some() {
                continue;
            }
            let i = state.ancestor(ingress_ref(key));
            state.attachments.push((
                Attach::Ingress {
                    ingress: key.clone(),
                    selector: true,
                },
                i,
            ));
        }
    }
}

fn ingress_ref(key: &ObjectKey) -> AncestorRef {
    AncestorRef {
        group: GROUP.into(),
        kind: "Ingress".into(),
        namespace: Some(key.namespace.clone()),
        name: key.name.clone(),
    }
}

fn ingress_missing(index: &Index, out: &Output, key: &ObjectKey) -> Option<String> {
    if !index.ingresses.contains_key(key) {
        Some(format!("Ingress {key} not found"))
    } else if !out.ingresses.contains_key(&key.to_string()) {
        Some(format!("Ingress {key} is not managed by portico"))
    } else {
        None
    }
}

fn selects(selector: &PolicyTargetSelector, ingress: &Ingress) -> bool {
    let empty = BTreeMap::new();
    let labels = ingress.metadata.labels.as_ref().unwrap_or(&empty);
    // An empty selector selects nothing (the schema rejects it; standalone has no schema).
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        return false;
    }
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|e| {
            let value = labels.get(&e.key);
            match e.operator {
                LabelOperator::In => value.is_some_and(|v| e.values.contains(v)),
                LabelOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                LabelOperator::Exists => value.is_some(),
                LabelOperator::DoesNotExist => value.is_none(),
            }
        })
}

/// A candidate for one route: which policy, through which ancestor, with which rank.
struct Candidate<'s, 'i> {
    state: usize,
    ancestor: usize,
    rank: Rank<'i>,
    body: &'s Converted,
}

/// Which `(policy, attachment)` pairs can reach a route: those on its class and those on its
/// Ingress. A route looks at these only, so resolution stays linear in routes plus targets.
#[derive(Default)]
struct Reach {
    by_class: HashMap<String, Vec<(usize, usize)>>,
    /// namespace, then Ingress name.
    by_ingress: HashMap<String, HashMap<String, Vec<(usize, usize)>>>,
}

impl Reach {
    fn new(states: &[State<'_>]) -> Self {
        let mut reach = Self::default();
        for (s, state) in states.iter().enumerate().filter(|(_, st)| st.accepted()) {
            for (a, (attach, _)) in state.attachments.iter().enumerate() {
                let list = match attach {
                    Attach::Class(class) => reach.by_class.entry(class.clone()).or_default(),
                    Attach::Ingress { ingress, .. } | Attach::Path { ingress, .. } => reach
                        .by_ingress
                        .entry(ingress.namespace.clone())
                        .or_default()
                        .entry(ingress.name.clone())
                        .or_default(),
                };
                list.push((s, a));
            }
        }
        reach
    }

    /// False when no policy is on any class nor on this Ingress: its routes keep no policy, and
    /// cost nothing here.
    fn may_reach(&self, route: &Route) -> bool {
        let src = &route.source;
        !self.by_class.is_empty()
            || self
                .by_ingress
                .get(&src.namespace)
                .is_some_and(|m| m.contains_key(&src.ingress))
    }

    /// Pairs for a route of `class` from `namespace/ingress`, in policy then attachment order.
    fn pairs(&self, class: &str, namespace: &str, ingress: &str) -> Vec<(usize, usize)> {
        let on_ingress = self.by_ingress.get(namespace).and_then(|m| m.get(ingress));
        let mut pairs: Vec<(usize, usize)> = self
            .by_class
            .get(class)
            .into_iter()
            .chain(on_ingress)
            .flatten()
            .copied()
            .collect();
        pairs.sort_unstable();
        pairs
    }
}

fn candidates<'s, 'i>(
    states: &'s [State<'i>],
    reach: &Reach,
    platform: Platforms<'_>,
    class: &str,
    route: &Route,
) -> Vec<Candidate<'s, 'i>> {
    let src = &route.source;
    let mut found: Vec<Candidate<'s, 'i>> = Vec::new();
    for (s, a) in reach.pairs(class, &src.namespace, &src.ingress) {
        let state = &states[s];
        let created = state.policy.metadata.creation_timestamp.as_ref();
        let from_platform = platform.of(class) == Some(state.key.namespace.as_str());
        {
            let (attach, ancestor) = &state.attachments[a];
            let mut push =
                |default: bool, level: Level, selector: bool, body: Option<&'s Converted>| {
                    if let Some(body) = body {
                        found.push(Candidate {
                            state: s,
                            ancestor: *ancestor,
                            rank: Rank {
                                default,
                                level,
                                selector,
                                created,
                                key: state.key,
                            },
                            body,
                        });
                    }
                };
            match attach {
                Attach::Class(c) if c == class => {
                    if from_platform {
                        push(false, Level::Class, false, state.overrides.as_ref());
                    }
                    if from_platform || state.key.namespace == src.namespace {
                        push(true, Level::Class, false, state.defaults.as_ref());
                    }
                }
                Attach::Ingress { ingress, selector }
                    if ingress.namespace == src.namespace && ingress.name == src.ingress =>
                {
                    push(true, Level::Ingress, *selector, state.defaults.as_ref());
                }
                Attach::Path {
                    ingress,
                    host,
                    path,
                    path_type,
                } if ingress.namespace == src.namespace
                    && ingress.name == src.ingress
                    && *host == src.host.to_ascii_lowercase()
                    && *path == src.path
                    && path_type.as_ref().is_none_or(|t| *t == src.path_type) =>
                {
                    push(true, Level::Path, false, state.defaults.as_ref());
                }
                _ => {}
            }
        }
    }
    found.sort_by(|a, b| a.rank.cmp(&b.rank));
    // One claim per policy and part: the strongest (a policy may reach a route twice).
    let mut seen = BTreeSet::new();
    found.retain(|c| seen.insert((c.state, c.rank.default)));
    found
}

/// Policy, ancestor, block, and `Ok` when the policy won the block there or the winner's name
/// and whether it was at the same level.
type Outcome = (usize, usize, Block, Result<(), (String, bool)>);

/// What one route got, for the passes after precedence.
struct Applied {
    /// Winner of `clientCertificate`: its CA, policy and ancestor.
    client_ca: Option<(Option<String>, usize, usize)>,
}

fn apply_route(
    states: &mut [State<'_>],
    reach: &Reach,
    platform: Platforms<'_>,
    class: &str,
    route: &mut Route,
    snapshot_backends: &mut BTreeMap<String, portico_api::Backend>,
) -> Applied {
    let mut applied = Applied { client_ca: None };
    let mut policy = RoutePolicy::default();
    // Outcomes are collected first: candidates borrow the states.
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut touched: Vec<(usize, usize)> = Vec::new();
    {
        let found = candidates(states, reach, platform, class, route);
        for c in &found {
            touched.push((c.state, c.ancestor));
        }
        for block in Block::ALL {
            let mut setters = found.iter().filter(|c| c.body.blocks.contains_key(&block));
            let Some(winner) = setters.next() else {
                continue;
            };
            let disabled = if winner.body.blocks[&block].is_none() {
                ", disabled"
            } else {
                ""
            };
            let winner_name = format!("{} ({}{disabled})", winner.rank.key, winner.rank.describe());
            outcomes.push((winner.state, winner.ancestor, block, Ok(())));
            for loser in setters {
                outcomes.push((
                    loser.state,
                    loser.ancestor,
                    block,
                    Err((winner_name.clone(), loser.rank.same_level(&winner.rank))),
                ));
            }
            if let Some(value) = &winner.body.blocks[&block] {
                value.apply(&mut policy, &route.id);
                policy
                    .origins
                    .insert(block.name().to_owned(), winner.rank.key.to_string());
                match value {
                    Value::Authentication(_) => {
                        for (id, backend) in &winner.body.backends {
                            snapshot_backends
                                .entry(id.clone())
                                .or_insert_with(|| backend.clone());
                        }
                    }
                    Value::ClientCertificate(_, ca) => {
                        applied.client_ca = Some((ca.clone(), winner.state, winner.ancestor));
                    }
                    _ => {}
                }
            }
        }
    }
    for (s, a) in touched {
        states[s].ancestors[a].routes.insert(route.id.clone());
    }
    for (s, a, block, outcome) in outcomes {
        let ancestor = &mut states[s].ancestors[a];
        match outcome {
            Ok(()) => {
                ancestor.won.insert(block);
            }
            Err((winner, same)) => {
                let entry = ancestor
                    .lost
                    .entry(block)
                    .or_insert_with(|| (BTreeSet::new(), false));
                entry.0.insert(winner);
                entry.1 |= same;
            }
        }
    }
    route.policy = policy;
    applied
}

fn apply_to_routes(states: &mut [State<'_>], platform: Platforms<'_>, out: &mut Output) {
    let reach = Reach::new(states);
    for snapshot in out.snapshots.values_mut() {
        let Snapshot {
            hosts,
            default_route,
            backends,
            sni,
            ..
        } = snapshot;
        // host -> (CA, policy, ancestor) of the first route that asks for one.
        let mut cas: BTreeMap<String, (String, usize, usize)> = BTreeMap::new();
        for vhost in hosts.iter_mut() {
            for route in vhost.routes.iter_mut().filter(|r| reach.may_reach(r)) {
                let Some(class) = class_of(&out.ingresses, route) else {
                    continue;
                };
                let applied = apply_route(states, &reach, platform, &class, route, backends);
                // An unresolved CA is reported through ResolvedRefs; the route fails closed.
                if let Some((Some(ca), s, a)) = applied.client_ca {
                    match cas.get(&vhost.host) {
                        None => {
                            cas.insert(vhost.host.clone(), (ca, s, a));
                        }
                        Some((held, hs, _)) if *held != ca => {
                            let holder = states[*hs].key.to_string();
                            states[s].ancestors[a].problems.insert(format!(
                                "clientCertificate: host {} already verifies client certificates against the CA of policy {holder}; this policy's CA is not used there",
                                shown(&vhost.host)
                            ));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if let Some(route) = default_route.as_mut().filter(|r| reach.may_reach(r))
            && let Some(class) = class_of(&out.ingresses, route)
        {
            apply_route(states, &reach, platform, &class, route, backends);
        }
        for (host, (ca, s, a)) in cas {
            if let Some(entry) = sni.iter_mut().find(|e| e.host == host) {
                entry.client_ca = Some(ClientCa { ca_pem: ca });
                continue;
            }
            let wildcard = host
                .split_once('.')
                .map(|(_, rest)| format!("*.{rest}"))
                .and_then(|w| sni.iter().find(|e| e.host == w).cloned());
            match wildcard {
                Some(w) if !host.is_empty() && !host.starts_with("*.") => {
                    sni.push(SniHost {
                        host,
                        certificate: w.certificate,
                        client_ca: Some(ClientCa { ca_pem: ca }),
                    });
                    sni.sort_by(|a, b| a.host.cmp(&b.host));
                }
                _ => {
                    states[s].ancestors[a].problems.insert(format!(
                        "clientCertificate: host {} has no TLS certificate in any Ingress, so client certificates cannot be verified; its routes that require one refuse every request",
                        shown(&host)
                    ));
                }
            }
        }
    }
}

fn shown(host: &str) -> &str {
    if host.is_empty() { "(any host)" } else { host }
}

fn class_of(ingresses: &BTreeMap<String, crate::IngressReport>, route: &Route) -> Option<String> {
    ingresses
        .get(&format!(
            "{}/{}",
            route.source.namespace, route.source.ingress
        ))
        .map(|r| r.class.clone())
}

fn condition(
    r#type: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> PolicyCondition {
    PolicyCondition {
        r#type: r#type.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: None,
    }
}

fn statuses(states: &[State<'_>]) -> BTreeMap<String, IngressPolicyStatus> {
    let mut out = BTreeMap::new();
    for state in states {
        let generation = state.policy.metadata.generation;
        let mut ancestors = Vec::new();
        for a in state.ancestors.iter().take(MAX_ANCESTORS) {
            let mut conditions = Vec::new();
            if !state.accepted() {
                conditions.push(condition(
                    cond::ACCEPTED,
                    false,
                    accepted::INVALID,
                    state.problems.invalid.join("; "),
                    generation,
                ));
            } else {
                let all_lost = a.won.is_empty() && !a.lost.is_empty();
                let conflicted = all_lost && a.lost.values().all(|(_, same)| *same);
                conditions.push(if !a.missing.is_empty() {
                    let mut message = a.missing.join("; ");
                    if !a.routes.is_empty() {
                        message.push_str("; the targets that exist still get the policy");
                    }
                    condition(cond::ACCEPTED, false, accepted::TARGET_NOT_FOUND, message, generation)
                } else if conflicted {
                    condition(
                        cond::ACCEPTED,
                        false,
                        accepted::CONFLICTED,
                        format!(
                            "every block this policy sets is taken by another policy, at least once by an older one at the same level: {}",
                            lost_message(&a.lost)
                        ),
                        generation,
                    )
                } else {
                    condition(cond::ACCEPTED, true, accepted::ACCEPTED, "Accepted", generation)
                });
                conditions.push(match state.problems.refs.first() {
                    None => condition(
                        cond::RESOLVED_REFS,
                        true,
                        resolved_refs::RESOLVED_REFS,
                        "all references resolved",
                        generation,
                    ),
                    Some((reason, _)) => condition(
                        cond::RESOLVED_REFS,
                        false,
                        reason,
                        state
                            .problems
                            .refs
                            .iter()
                            .map(|(_, m)| m.as_str())
                            .collect::<Vec<_>>()
                            .join("; "),
                        generation,
                    ),
                });
                let routes = a.routes.len();
                let mut problems = a.problems.iter().cloned().collect::<Vec<_>>();
                problems.extend(
                    state
                        .problems
                        .unapplied
                        .iter()
                        .filter(|(block, _)| a.won.contains(block))
                        .map(|(_, message)| message.clone()),
                );
                let programmed = if all_lost {
                    Some(condition(
                        cond::PROGRAMMED,
                        false,
                        programmed::OVERRIDDEN,
                        format!("no block applies: {}", lost_message(&a.lost)),
                        generation,
                    ))
                } else if !a.lost.is_empty() || !problems.is_empty() {
                    let mut parts = Vec::new();
                    if !a.lost.is_empty() {
                        parts.push(format!(
                            "applied {} to {routes} route(s); not applied: {}",
                            block_list(&a.won),
                            lost_message(&a.lost)
                        ));
                    }
                    parts.extend(problems);
                    Some(condition(
                        cond::PROGRAMMED,
                        true,
                        programmed::PARTIALLY_PROGRAMMED,
                        parts.join("; "),
                        generation,
                    ))
                } else if routes == 0 && !a.missing.is_empty() {
                    None
                } else {
                    Some(condition(
                        cond::PROGRAMMED,
                        true,
                        programmed::PROGRAMMED,
                        format!("applied to {routes} route(s)"),
                        generation,
                    ))
                };
                conditions.extend(programmed);
            }
            ancestors.push(PolicyAncestorStatus {
                ancestor_ref: a.aref.clone(),
                controller_name: CONTROLLER_NAME.to_owned(),
                conditions,
            });
        }
        out.insert(state.key.to_string(), IngressPolicyStatus { ancestors });
    }
    out
}

fn block_list(blocks: &BTreeSet<Block>) -> String {
    if blocks.is_empty() {
        return "no block".into();
    }
    blocks
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn lost_message(lost: &BTreeMap<Block, (BTreeSet<String>, bool)>) -> String {
    lost.iter()
        .map(|(block, (winners, _))| {
            format!(
                "{} is set by {}",
                block.name(),
                winners.iter().cloned().collect::<Vec<_>>().join(" and ")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
