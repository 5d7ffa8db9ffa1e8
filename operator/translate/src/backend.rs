//! Ingress backends into snapshot backends: Service port, protocol, load balancer and ready
//! endpoints.
//!
//! A backend is resolved once per `(namespace, service, port)` and cached, so translating many
//! Ingresses that share a Service costs one lookup each. EndpointSlices are indexed once by
//! `(namespace, kubernetes.io/service-name)`: nothing scans every slice per Ingress.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::networking::v1::IngressBackend;
use portico_api::{AppProtocol, Backend, Endpoint, LoadBalancer, ServiceRef};

use crate::{Index, IndexedService, IndexedSlice, ObjectKey, Warning};

/// Label an EndpointSlice carries naming its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Service annotation choosing the load balancer of its backends.
pub(crate) const LOAD_BALANCER_ANNOTATION: &str = "portico.dev/load-balancer";

/// The port of an Ingress service backend, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PortRef<'a> {
    Number(i32),
    Name(&'a str),
}

impl std::fmt::Display for PortRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// A resolved backend reference.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// `namespace/service:port`: the Service port number, or the port as written when it
    /// could not be resolved.
    pub(crate) id: String,
    /// `None` when the Service or its port is missing or unsupported: routes to `id` answer 503.
    pub(crate) backend: Option<Backend>,
    /// Problems, reported on every Ingress that uses this backend.
    pub(crate) warnings: Vec<Warning>,
    /// A number unique among the backends of one [`Backends`], so that a snapshot can note
    /// which it already holds without comparing ids.
    pub(crate) slot: usize,
}

/// Resolves backends against one index.
#[derive(Debug)]
pub(crate) struct Backends<'a> {
    index: &'a Index,
    /// By namespace and Service: each slice with its name.
    slices: Slices<'a>,
    /// By namespace, then Service name: looked up by `&str`, so a hit allocates nothing.
    cache: HashMap<String, HashMap<String, PortCache>>,
    next_slot: usize,
}

type Slices<'a> = HashMap<(&'a str, &'a str), Vec<(&'a str, &'a IndexedSlice)>>;

/// The resolved ports of one Service, by port number or name as the Ingress wrote it.
#[derive(Debug, Default)]
struct PortCache {
    by_number: HashMap<i32, Resolved>,
    by_name: HashMap<String, Resolved>,
}

impl<'a> Backends<'a> {
    pub(crate) fn new(index: &'a Index) -> Self {
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        // The index iterates by key, so each service's slices stay in a stable order.
        for (key, slice) in &index.endpoint_slices {
            if let Some(service) = &slice.service {
                slices
                    .entry((key.namespace.as_str(), service.as_str()))
                    .or_default()
                    .push((key.name.as_str(), slice));
            }
        }
        Self {
            index,
            slices,
            cache: HashMap::new(),
            next_slot: 0,
        }
    }

    /// Resolves `backend` of an Ingress in `namespace`. `Err` means the backend cannot be served
    /// at all and its path is skipped (a `resource` backend, or no Service port given).
    pub(crate) fn resolve(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
    ) -> Result<&Resolved, Warning> {
        let service = match (&backend.service, &backend.resource) {
            (Some(service), _) => service,
            (None, Some(resource)) => {
                return Err(Warning::new(
                    "UnsupportedBackend",
                    format!(
                        "resource backend {} {:?} is not supported, only Service backends",
                        resource.kind, resource.name
                    ),
                ));
            }
            (None, None) => {
                return Err(Warning::new(
                    "InvalidBackend",
                    "backend names neither a Service nor a resource",
                ));
            }
        };
        let port = service
            .port
            .as_ref()
            .and_then(|p| match (&p.number, &p.name) {
                (Some(n), _) => Some(PortRef::Number(*n)),
                (None, Some(name)) if !name.is_empty() => Some(PortRef::Name(name)),
                _ => None,
            });
        let (Some(port), false) = (port, service.name.is_empty()) else {
            return Err(Warning::new(
                "InvalidBackend",
                format!(
                    "Service backend {:?} needs a name and a port number or name",
                    service.name
                ),
            ));
        };
        let name = service.name.as_str();
        if !self.cache.contains_key(namespace) {
            self.cache.insert(namespace.to_owned(), HashMap::new());
        }
        let services = self.cache.get_mut(namespace).expect("inserted above");
        if !services.contains_key(name) {
            services.insert(name.to_owned(), PortCache::default());
        }
        let ports = services.get_mut(name).expect("inserted above");
        let (index, slices, next_slot) = (self.index, &self.slices, &mut self.next_slot);
        let mut resolve = || {
            *next_slot += 1;
            resolve_uncached(index, slices, namespace, name, port, *next_slot)
        };
        Ok(match port {
            PortRef::Number(n) => ports.by_number.entry(n).or_insert_with(resolve),
            PortRef::Name(wanted) => {
                if !ports.by_name.contains_key(wanted) {
                    ports.by_name.insert(wanted.to_owned(), resolve());
                }
                &ports.by_name[wanted]
            }
        })
    }
}

fn resolve_uncached(
    index: &Index,
    slices: &Slices<'_>,
    namespace: &str,
    name: &str,
    port: PortRef<'_>,
    slot: usize,
) -> Resolved {
    let unresolved = |reason: &str, message: String| Resolved {
        id: format!("{namespace}/{name}:{port}"),
        backend: None,
        warnings: vec![Warning::new(reason, message)],
        slot,
    };
    // Never looked up in another namespace: an Ingress can only reach its own Services.
    let Some(service) = index.services.get(&ObjectKey::new(namespace, name)) else {
        return unresolved(
            "ServiceNotFound",
            format!("Service {namespace}/{name} not found; its routes answer 503"),
        );
    };
    if service.external_name {
        return unresolved(
            "UnsupportedServiceType",
            format!(
                "Service {namespace}/{name} is of type ExternalName, which Portico does not support; its routes answer 503"
            ),
        );
    }
    let service_port = service.ports.iter().find(|p| match port {
        PortRef::Number(n) => p.port == n,
        PortRef::Name(wanted) => p.name.as_deref() == Some(wanted),
    });
    let Some((service_port, number)) =
        service_port.and_then(|p| Some((p, u16::try_from(p.port).ok()?)))
    else {
        return unresolved(
            "ServicePortNotFound",
            match port {
                PortRef::Number(n) => {
                    format!("Service {namespace}/{name} has no port {n}; its routes answer 503")
                }
                PortRef::Name(wanted) => format!(
                    "Service {namespace}/{name} has no port named {wanted:?}; its routes answer 503"
                ),
            },
        );
    };
    let mut warnings = Vec::new();
    let load_balancer = load_balancer(namespace, name, service, &mut warnings);
    let endpoints = endpoints(slices, namespace, name, service_port, &mut warnings);
    Resolved {
        id: format!("{namespace}/{name}:{number}"),
        backend: Some(Backend {
            service: ServiceRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                port: number,
            },
            protocol: protocol(service_port),
            load_balancer,
            endpoints,
        }),
        warnings,
        slot,
    }
}

/// Ready endpoints of one Service port, deduplicated and sorted.
///
/// EndpointSlice ports carry the Service port's name (`""` or absent for a single unnamed
/// port), not its number, so that is what they are matched on. An endpoint is ready when
/// `conditions.ready` is true or unset: the API defines nil as ready.
fn endpoints(
    slices: &Slices<'_>,
    namespace: &str,
    name: &str,
    service_port: &ServicePort,
    warnings: &mut Vec<Warning>,
) -> Vec<Endpoint> {
    let port_name = service_port.name.as_deref().unwrap_or("");
    let mut endpoints = BTreeSet::new();
    let slices = slices
        .get(&(namespace, name))
        .map_or(&[][..], Vec::as_slice);
    for (slice_name, slice) in slices {
        let ipv4 = match slice.address_type.as_str() {
            "IPv4" => true,
            "IPv6" => false,
            other => {
                warnings.push(Warning::new(
                        "UnsupportedAddressType",
                        format!(
                            "EndpointSlice {namespace}/{} of Service {name} has addressType {other}, which Portico does not support; its endpoints are ignored",
                            slice_name
                        ),
                    ));
                continue;
            }
        };
        let Some(port) = slice
            .ports
            .iter()
            .find(|(name, _)| name == port_name)
            .and_then(|(_, port)| *port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for address in &slice.ready_addresses {
            // The API server validates addresses; one that does not parse, or is of the
            // other family, is ignored rather than trusted.
            match address.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv4() == ipv4 => {
                    endpoints.insert(Endpoint { address: ip, port });
                }
                _ => {}
            }
        }
    }
    endpoints.into_iter().collect()
}

/// The upstream protocol of a Service port: `appProtocol` when set, else the port's name.
fn protocol(port: &ServicePort) -> AppProtocol {
    match port.app_protocol.as_deref() {
        Some("kubernetes.io/h2c") => AppProtocol::H2c,
        Some("https") => AppProtocol::Https,
        Some(_) => AppProtocol::Http1,
        None => match port.name.as_deref() {
            Some("https") => AppProtocol::Https,
            Some("h2c" | "grpc") => AppProtocol::H2c,
            _ => AppProtocol::Http1,
        },
    }
}

fn load_balancer(
    namespace: &str,
    name: &str,
    service: &IndexedService,
    warnings: &mut Vec<Warning>,
) -> LoadBalancer {
    match service.load_balancer.as_deref() {
        None | Some("round-robin") => LoadBalancer::RoundRobin,
        Some("least-request") => LoadBalancer::LeastRequest,
        Some(other) => {
            warnings.push(Warning::new(
                "InvalidAnnotation",
                format!(
                    "Service {namespace}/{name} annotation {LOAD_BALANCER_ANNOTATION}: {other:?} is neither round-robin nor least-request; round-robin is used"
                ),
            ));
            LoadBalancer::RoundRobin
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: Option<&str>, app_protocol: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_owned),
            app_protocol: app_protocol.map(str::to_owned),
            port: 80,
            ..Default::default()
        }
    }

    #[test]
    fn protocol_from_app_protocol_then_name() {
        let cases = [
            (None, None, AppProtocol::Http1),
            (None, Some("kubernetes.io/h2c"), AppProtocol::H2c),
            (None, Some("https"), AppProtocol::Https),
            (None, Some("http"), AppProtocol::Http1),
            (None, Some("kubernetes.io/ws"), AppProtocol::Http1),
            (Some("https"), None, AppProtocol::Https),
            (Some("h2c"), None, AppProtocol::H2c),
            (Some("grpc"), None, AppProtocol::H2c),
            (Some("http"), None, AppProtocol::Http1),
            // appProtocol, when set, wins over the name.
            (Some("https"), Some("http"), AppProtocol::Http1),
            (Some("grpc"), Some("https"), AppProtocol::Https),
        ];
        for (name, app_protocol, want) in cases {
            assert_eq!(
                protocol(&port(name, app_protocol)),
                want,
                "{name:?} {app_protocol:?}"
            );
        }
    }
}
