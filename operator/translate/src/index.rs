//! The index: every watched object, by kind and key.
//!
//! The operator's watchers call [`Index::apply`] and [`Index::delete`]; after a re-list they clear
//! that kind's map (the fields are public) and apply again. Standalone mode keeps one index and
//! replaces a changed file's objects in it ([`Index::remove`] by [`Kind`] and key). Translation
//! only reads it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use portico_crds::IngressPolicy;

use crate::backend::{LOAD_BALANCER_ANNOTATION, SERVICE_NAME_LABEL};

/// Namespace and name. Cluster-scoped objects (IngressClass) have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// A namespaced key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One object of a kind the translator reads. Boxed, so that a list of objects costs what its
/// objects weigh, not the size of the largest kind (an IngressPolicy) times their number.
#[derive(Debug, Clone)]
pub enum Object {
    IngressClass(Box<IngressClass>),
    Ingress(Box<Ingress>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    IngressPolicy(Box<IngressPolicy>),
}

impl Object {
    /// The key the index holds this object under (no namespace for an IngressClass).
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::IngressClass(o) => {
                ObjectKey::new("", o.metadata.name.clone().unwrap_or_default())
            }
            Object::Ingress(o) => key_of(&o.metadata),
            Object::Service(o) => key_of(&o.metadata),
            Object::EndpointSlice(o) => key_of(&o.metadata),
            Object::Secret(o) => key_of(&o.metadata),
            Object::ConfigMap(o) => key_of(&o.metadata),
            Object::IngressPolicy(o) => key_of(&o.metadata),
        }
    }
}

/// The kinds an [`Index`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    IngressClass,
    Ingress,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
    IngressPolicy,
}

impl Object {
    /// The kind of the object.
    pub fn kind(&self) -> Kind {
        match self {
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Ingress(_) => Kind::Ingress,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::IngressPolicy(_) => Kind::IngressPolicy,
        }
    }
}

/// Every object translation reads, by key. BTreeMaps keep iteration, and so output, ordered;
/// values stay boxed as parsed, so tree nodes hold pointers, not kilobyte-sized objects.
/// Services and EndpointSlices, one of each per backend, are kept as only what translation
/// reads of them: as parsed, with every field of their specs, they were most of the index.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// By name (cluster-scoped).
    pub ingress_classes: BTreeMap<String, Box<IngressClass>>,
    pub ingresses: BTreeMap<ObjectKey, Box<Ingress>>,
    pub services: BTreeMap<ObjectKey, IndexedService>,
    pub endpoint_slices: BTreeMap<ObjectKey, IndexedSlice>,
    pub secrets: BTreeMap<ObjectKey, Box<Secret>>,
    pub config_maps: BTreeMap<ObjectKey, Box<ConfigMap>>,
    pub policies: BTreeMap<ObjectKey, Box<IngressPolicy>>,
}

/// What translation reads of a Service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexedService {
    /// `spec.type` is `ExternalName`.
    pub external_name: bool,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// The `portico.dev/load-balancer` annotation.
    pub load_balancer: Option<String>,
}

impl From<Service> for IndexedService {
    fn from(service: Service) -> Self {
        let spec = service.spec.unwrap_or_default();
        let mut ports = spec.ports.unwrap_or_default();
        ports.shrink_to_fit();
        Self {
            external_name: spec.type_.as_deref() == Some("ExternalName"),
            ports,
            load_balancer: service
                .metadata
                .annotations
                .and_then(|mut a| a.remove(LOAD_BALANCER_ANNOTATION)),
        }
    }
}

/// What translation reads of an EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexedSlice {
    /// The Service it belongs to: its `kubernetes.io/service-name` label.
    pub service: Option<String>,
    pub address_type: String,
    /// Name (`""` when absent) and number of each port, in order.
    pub ports: Vec<(String, Option<i32>)>,
    /// Addresses of the endpoints not known to be unready (`conditions.ready` true or unset),
    /// in order.
    pub ready_addresses: Vec<String>,
}

impl From<EndpointSlice> for IndexedSlice {
    fn from(slice: EndpointSlice) -> Self {
        let ports = slice.ports.unwrap_or_default().into_iter();
        let ready = slice
            .endpoints
            .into_iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
        let mut ready_addresses: Vec<String> = ready.flat_map(|e| e.addresses).collect();
        ready_addresses.shrink_to_fit();
        Self {
            service: slice
                .metadata
                .labels
                .and_then(|mut l| l.remove(SERVICE_NAME_LABEL)),
            address_type: slice.address_type,
            ports: ports
                .map(|p| (p.name.unwrap_or_default(), p.port))
                .collect(),
            ready_addresses,
        }
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

impl Index {
    /// An index holding `objects`; later objects with the same key replace earlier ones.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut index = Self::default();
        for object in objects {
            index.apply(object);
        }
        index
    }

    /// Inserts or replaces an object.
    pub fn apply(&mut self, object: Object) {
        match object {
            Object::IngressClass(o) => {
                self.ingress_classes
                    .insert(o.metadata.name.clone().unwrap_or_default(), o);
            }
            Object::Ingress(o) => {
                self.ingresses.insert(key_of(&o.metadata), o);
            }
            Object::Service(o) => {
                self.services.insert(key_of(&o.metadata), (*o).into());
            }
            Object::EndpointSlice(o) => {
                self.endpoint_slices
                    .insert(key_of(&o.metadata), (*o).into());
            }
            Object::Secret(o) => {
                self.secrets.insert(key_of(&o.metadata), o);
            }
            Object::ConfigMap(o) => {
                self.config_maps.insert(key_of(&o.metadata), o);
            }
            Object::IngressPolicy(o) => {
                self.policies.insert(key_of(&o.metadata), o);
            }
        }
    }

    /// Removes `object` (as a watcher reports a deletion: only its kind and key matter).
    /// Returns whether the index held it.
    pub fn delete(&mut self, object: &Object) -> bool {
        self.remove(object.kind(), &object.key())
    }

    /// Removes the object of `kind` with `key`; returns whether the index held it.
    pub fn remove(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::IngressClass => self.ingress_classes.remove(&key.name).is_some(),
            Kind::Ingress => self.ingresses.remove(key).is_some(),
            Kind::Service => self.services.remove(key).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            Kind::Secret => self.secrets.remove(key).is_some(),
            Kind::ConfigMap => self.config_maps.remove(key).is_some(),
            Kind::IngressPolicy => self.policies.remove(key).is_some(),
        }
    }

    /// Total number of objects held.
    pub fn len(&self) -> usize {
        self.ingress_classes.len()
            + self.ingresses.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.config_maps.len()
            + self.policies.len()
    }

    /// True when the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::IngressClass;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn service(namespace: &str, name: &str) -> Object {
        Object::Service(Box::new(Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        }))
    }

    #[test]
    fn apply_and_delete() {
        let class = Object::IngressClass(Box::new(IngressClass {
            metadata: ObjectMeta {
                name: Some("portico".to_owned()),
                ..Default::default()
            },
            spec: None,
        }));
        assert_eq!(class.key(), ObjectKey::new("", "portico"));
        let mut index =
            Index::from_objects([service("a", "web"), service("b", "web"), class.clone()]);
        assert_eq!(index.len(), 3);

        let web = service("a", "web");
        assert_eq!(web.key().to_string(), "a/web");
        assert!(index.delete(&web));
        assert!(!index.delete(&web));
        assert!(index.delete(&class));
        let keys: Vec<_> = index.services.keys().map(ToString::to_string).collect();
        assert_eq!(keys, ["b/web"]);
        assert!(index.delete(&service("b", "web")));
        assert!(index.is_empty());
    }
}
