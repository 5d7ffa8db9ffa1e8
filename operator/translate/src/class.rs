//! Which IngressClass, if any of Portico's, takes an Ingress.
//!
//! In order, as Kubernetes documents it:
//! 1. `spec.ingressClassName` names an IngressClass; it is ours when that class exists and its
//!    `spec.controller` is [`CONTROLLER_NAME`].
//! 2. Without it, the legacy `kubernetes.io/ingress.class` annotation names the class. The value
//!    [`LEGACY_CLASS`] always selects Portico, even without an IngressClass object; any other
//!    value must name one of our IngressClasses. The annotation, when present, wins over the
//!    default class, so an Ingress annotated for another controller is never taken by default.
//! 3. Otherwise the default IngressClass (`ingressclass.kubernetes.io/is-default-class: "true"`)
//!    selects it, when that class is ours. With several defaults the newest by
//!    `creationTimestamp` is the default, as the DefaultIngressClass admission plugin chooses;
//!    equal timestamps go to the smallest name, and a missing timestamp counts as oldest.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::{CONTROLLER_NAME, Index, LEGACY_CLASS};

const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The IngressClasses of the index, read once.
/// True when Portico is the IngressClass's controller.
pub(crate) fn is_ours(class: &IngressClass) -> bool {
    class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER_NAME)
}

#[derive(Debug)]
pub(crate) struct Classes<'a> {
    /// Names of the IngressClasses whose controller is Portico.
    pub(crate) ours: BTreeSet<&'a str>,
    /// The cluster's default IngressClass, whoever's it is.
    default: Option<&'a str>,
}

impl<'a> Classes<'a> {
    pub(crate) fn new(index: &'a Index) -> Self {
        let ours = index
            .ingress_classes
            .iter()
            .filter(|(_, class)| is_ours(class))
            .map(|(name, _)| name.as_str())
            .collect();
        // Newest wins; on equal timestamps the smallest name (the map iterates by name, and
        // `max_by` keeps the last of equals, so compare names reversed).
        let default = index
            .ingress_classes
            .iter()
            .filter(|(_, class)| is_default(class))
            .max_by(|(a_name, a), (b_name, b)| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
                    .then_with(|| b_name.cmp(a_name))
            })
            .map(|(name, _)| name.as_str());
        Self { ours, default }
    }

    /// The Portico class that selects `ingress`, or `None` when it belongs to someone else.
    pub(crate) fn of(&self, ingress: &Ingress) -> Option<&'a str> {
        if let Some(name) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            return self.ours.get(name).copied();
        }
        if let Some(value) = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLASS_ANNOTATION))
        {
            if value == LEGACY_CLASS {
                return Some(LEGACY_CLASS);
            }
            return self.ours.get(value.as_str()).copied();
        }
        self.default.filter(|name| self.ours.contains(name))
    }
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::networking::v1::{IngressClassSpec, IngressSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;
    use crate::Object;

    fn class(name: &str, controller: &str, default: bool, created: Option<i64>) -> Object {
        let annotations = default
            .then(|| BTreeMap::from([(DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())]));
        Object::IngressClass(Box::new(IngressClass {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations,
                creation_timestamp: created
                    .map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())),
                ..Default::default()
            },
            spec: Some(IngressClassSpec {
                controller: Some(controller.to_owned()),
                ..Default::default()
            }),
        }))
    }

    fn ingress(class_name: Option<&str>, annotation: Option<&str>) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                annotations: annotation
                    .map(|v| BTreeMap::from([(CLASS_ANNOTATION.to_owned(), v.to_owned())])),
                ..Default::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: class_name.map(str::to_owned),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn selection_order() {
        let index = Index::from_objects([
            class("portico", CONTROLLER_NAME, false, None),
            class("internal", CONTROLLER_NAME, true, Some(200)),
            class("nginx", "k8s.io/ingress-nginx", true, Some(100)),
        ]);
        let classes = Classes::new(&index);
        assert_eq!(
            classes.of(&ingress(Some("internal"), None)),
            Some("internal")
        );
        assert_eq!(classes.of(&ingress(Some("nginx"), None)), None);
        assert_eq!(classes.of(&ingress(Some("missing"), None)), None);
        // The field wins over the annotation.
        assert_eq!(classes.of(&ingress(Some("nginx"), Some("portico"))), None);
        assert_eq!(classes.of(&ingress(None, Some("portico"))), Some("portico"));
        assert_eq!(
            classes.of(&ingress(None, Some("internal"))),
            Some("internal")
        );
        // The annotation wins over the default class.
        assert_eq!(classes.of(&ingress(None, Some("nginx"))), None);
        // The newest default is ours.
        assert_eq!(classes.of(&ingress(None, None)), Some("internal"));
    }

    #[test]
    fn legacy_value_needs_no_class_object() {
        let index = Index::default();
        let classes = Classes::new(&index);
        assert_eq!(
            classes.of(&ingress(None, Some(LEGACY_CLASS))),
            Some(LEGACY_CLASS)
        );
        assert_eq!(classes.of(&ingress(None, None)), None);
    }

    #[test]
    fn newest_default_wins_even_when_it_is_not_ours() {
        let index = Index::from_objects([
            class("internal", CONTROLLER_NAME, true, Some(100)),
            class("nginx", "k8s.io/ingress-nginx", true, Some(200)),
        ]);
        assert_eq!(Classes::new(&index).of(&ingress(None, None)), None);
    }

    #[test]
    fn equal_default_timestamps_go_to_the_smallest_name() {
        let index = Index::from_objects([
            class("b", CONTROLLER_NAME, true, Some(100)),
            class("a", "someone/else", true, Some(100)),
        ]);
        assert_eq!(Classes::new(&index).of(&ingress(None, None)), None);
        let index = Index::from_objects([
            class("a", CONTROLLER_NAME, true, None),
            class("b", "someone/else", true, None),
        ]);
        assert_eq!(Classes::new(&index).of(&ingress(None, None)), Some("a"));
    }
}
