//! Multi-document YAML (and JSON) text into [`Object`]s. Shared by every caller.
//!
//! The text is split into documents the way `kubectl` does (a line that is `---` followed only by
//! whitespace), so that one broken document does not hide the ones after it, and each piece is
//! read on its own. Decoding goes through the parsed YAML value, strictly typed as the API server
//! would take the JSON (`host: 42` is a number, not a string), and an error names the field path. Nothing here panics on any input: every document that cannot be taken
//! becomes a [`ParseProblem`] naming its 1-based number.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use portico_crds::IngressPolicy;

use crate::Object;

/// What [`parse_manifests`] found in one text.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub problems: Vec<ParseProblem>,
    /// Some document is not YAML at all: the text is mid-edit or damaged, and a caller that
    /// had an earlier good version of it should keep that.
    pub invalid_yaml: bool,
}

/// A document that could not be taken, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParseProblem {
    /// 1-based index of the document in the text.
    pub document: usize,
    /// 1-based line of the text on which the document starts. Positions in YAML syntax errors
    /// are lines of the whole text too.
    pub line: usize,
    pub message: String,
}

/// Parses every document in `text`. Objects without a namespace land in `default_namespace`.
///
/// A `List` (or `IngressList`, `ServiceList`, ...) is expanded into its `items`; items of a typed
/// list may omit `apiVersion` and `kind`, which are then taken from the list. Empty documents
/// are skipped silently. Secrets have `stringData` merged into `data`, as the API server does.
pub fn parse_manifests(text: &str, default_namespace: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (number, (line, document)) in split_documents(text).into_iter().enumerate() {
        let number = number + 1;
        let mut problem = |message: String| {
            parsed.problems.push(ParseProblem {
                document: number,
                line,
                message,
            })
        };
        if is_blank(document) {
            continue;
        }
        let value: Value = match serde_yaml_ng::from_str(document) {
            Ok(value) => value,
            Err(err) => {
                // Parse again behind blank lines, so that positions are lines of the whole text.
                let padded = format!("{}{document}", "\n".repeat(line - 1));
                let err = serde_yaml_ng::from_str::<Value>(&padded)
                    .err()
                    .unwrap_or(err);
                problem(format!("invalid YAML: {err}"));
                parsed.invalid_yaml = true;
                continue;
            }
        };
        let mapping = match value {
            Value::Null => continue,
            Value::Mapping(mapping) => mapping,
            other => {
                problem(format!(
                    "a document must be a mapping (an object), not {}",
                    value_kind(&other)
                ));
                continue;
            }
        };
        let head = match Head::of(&mapping, None) {
            Ok(head) => head,
            Err(message) => {
                problem(message);
                continue;
            }
        };
        if head.is_list() {
            let mut mapping = mapping;
            match mapping.remove("items") {
                Some(Value::Sequence(items)) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let taken = match item {
                            Value::Mapping(item) => Head::of(&item, Some(&head))
                                .and_then(|item_head| decode(&item_head, item, default_namespace)),
                            other => Err(format!(
                                "an item must be a mapping (an object), not {}",
                                value_kind(&other)
                            )),
                        };
                        match taken {
                            Ok(object) => parsed.objects.push(object),
                            Err(message) => parsed.problems.push(ParseProblem {
                                document: number,
                                line,
                                message: format!("{}: items[{i}]: {message}", head.kind),
                            }),
                        }
                    }
                }
                Some(Value::Null) | None => {}
                Some(other) => problem(format!(
                    "{}: items must be a sequence, not {}",
                    head.kind,
                    value_kind(&other)
                )),
            }
            continue;
        }
        match decode(&head, mapping, default_namespace) {
            Ok(object) => parsed.objects.push(object),
            Err(message) => problem(message),
        }
    }
    parsed
}

/// Splits `text` into documents on separator lines, as kubectl's YAML reader does, each with the
/// 1-based line it starts on. A leading piece holding only comments and blank lines before the
/// first separator is not a document.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let (mut start, mut start_line) = (0, 1);
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if let Some(rest) = line.strip_prefix("---")
            && rest.trim().is_empty()
        {
            documents.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    if documents.len() > 1 && is_blank(documents[0].1) {
        documents.remove(0);
    }
    documents
}

fn is_blank(document: &str) -> bool {
    document
        .lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line == "..." || line.starts_with('#'))
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The type fields of one object, read before decoding it.
struct Head {
    api_version: String,
    kind: String,
    /// `namespace/name` or `name`, for messages.
    name: String,
}

impl Head {
    /// Reads `apiVersion`, `kind` and the name; an item of a typed list inherits the list's.
    fn of(mapping: &Mapping, list: Option<&Head>) -> Result<Self, String> {
        let field = |key: &str| match mapping.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let metadata = mapping.get("metadata");
        let meta = |key: &str| match metadata.and_then(|m| m.get(key)) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let name = match (meta("namespace"), meta("name")) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            (None, Some(name)) => name.to_owned(),
            (_, None) => "(unnamed)".to_owned(),
        };
        let inherited = list.and_then(Head::item_kind);
        let api_version = field("apiVersion").or_else(|| inherited.map(|(v, _)| v.to_owned()));
        let kind = field("kind").or_else(|| inherited.map(|(_, k)| k.to_owned()));
        match (api_version, kind) {
            (Some(api_version), Some(kind)) => Ok(Self {
                api_version,
                kind,
                name,
            }),
            (None, Some(kind)) => Err(format!("{kind} {name}: missing apiVersion")),
            (Some(_), None) => Err(format!("{name}: missing kind")),
            (None, None) => Err(format!("{name}: missing apiVersion and kind")),
        }
    }

    fn is_list(&self) -> bool {
        self.kind == "List" || (self.kind.ends_with("List") && self.kind.len() > 4)
    }

    /// For `IngressList` in `networking.k8s.io/v1`: the apiVersion and kind of its items.
    fn item_kind(&self) -> Option<(&str, &str)> {
        let kind = self.kind.strip_suffix("List")?;
        (!kind.is_empty()).then_some((self.api_version.as_str(), kind))
    }
}

fn decode(head: &Head, mapping: Mapping, default_namespace: &str) -> Result<Object, String> {
    let namespaced = |mut meta: ObjectMeta| {
        if meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some(default_namespace.to_owned());
        }
        meta
    };
    let object = match (head.api_version.as_str(), head.kind.as_str()) {
        ("networking.k8s.io/v1", "IngressClass") => {
            // Cluster-scoped: a namespace written by mistake is dropped.
            let mut class: IngressClass = typed(head, mapping)?;
            class.metadata.namespace = None;
            Object::IngressClass(Box::new(class))
        }
        ("networking.k8s.io/v1", "Ingress") => {
            let mut o: Ingress = typed(head, mapping)?;
            o.metadata = namespaced(o.metadata);
            Object::Ingress(Box::new(o))
        }
        ("v1", "Service") => {
            let mut o: Service = typed(head, mapping)?;
            o.metadata = namespaced(o.metadata);
            Object::Service(Box::new(o))
        }
        ("v1", "Secret") => {
            let mut o: Secret = typed(head, mapping)?;
            o.metadata = namespaced(o.metadata);
            merge_string_data(&mut o);
            Object::Secret(Box::new(o))
        }
        ("v1", "ConfigMap") => {
            let mut o: ConfigMap = typed(head, mapping)?;
            o.metadata = namespaced(o.metadata);
            Object::ConfigMap(Box::new(o))
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let mut o: EndpointSlice = typed(head, mapping)?;
            o.metadata = namespaced(o.metadata);
            Object::EndpointSlice(Box::new(o))
        }
        ("portico.dev/v1alpha1", "IngressPolicy") => {
            let mut o: IngressPolicy = typed(head, mapping)?;
            o.metadata = namespaced(o.metadata);
            Object::IngressPolicy(Box::new(o))
        }
        (api_version, kind) => {
            return Err(format!(
                "{kind} {}: unsupported kind {kind} in apiVersion {api_version}",
                head.name
            ));
        }
    };
    Ok(object)
}

/// Decodes `mapping` as `T`; an error names the field path, as in
/// `spec.rules[0].http.paths[0].backend.service.port.number`.
fn typed<T: DeserializeOwned>(head: &Head, mut mapping: Mapping) -> Result<T, String> {
    // Items of a typed list may lack apiVersion and kind, which k8s-openapi insists on.
    for (key, value) in [("apiVersion", &head.api_version), ("kind", &head.kind)] {
        if !matches!(mapping.get(key), Some(Value::String(_))) {
            mapping.insert(key.into(), value.clone().into());
        }
    }
    serde_path_to_error::deserialize(Value::Mapping(mapping)).map_err(|err| {
        let path = err.path().to_string();
        let err = err.into_inner();
        if path == "." {
            format!("{} {}: {err}", head.kind, head.name)
        } else {
            format!("{} {}: {path}: {err}", head.kind, head.name)
        }
    })
}

/// Merges `stringData` into `data` (a `stringData` key wins), as the API server does on write.
fn merge_string_data(secret: &mut Secret) {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        parse_manifests(text, "default")
    }

    fn messages(parsed: &Parsed) -> Vec<(usize, &str)> {
        parsed
            .problems
            .iter()
            .map(|p| (p.document, p.message.as_str()))
            .collect()
    }

    #[test]
    fn reads_every_supported_kind() {
        let parsed = parse(
            r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: tls}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc}
addressType: IPv4
endpoints: []
---
apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: p}
spec: {}
"#,
        );
        assert_eq!(messages(&parsed), vec![]);
        let kinds: Vec<_> = parsed
            .objects
            .iter()
            .map(|o| match o {
                Object::IngressClass(o) => ("IngressClass", o.metadata.namespace.clone()),
                Object::Ingress(o) => ("Ingress", o.metadata.namespace.clone()),
                Object::Service(o) => ("Service", o.metadata.namespace.clone()),
                Object::EndpointSlice(o) => ("EndpointSlice", o.metadata.namespace.clone()),
                Object::Secret(o) => ("Secret", o.metadata.namespace.clone()),
                Object::ConfigMap(o) => ("ConfigMap", o.metadata.namespace.clone()),
                Object::IngressPolicy(o) => ("IngressPolicy", o.metadata.namespace.clone()),
            })
            .collect();
        let default = Some("default".to_owned());
        assert_eq!(
            kinds,
            vec![
                ("IngressClass", None),
                ("Ingress", default.clone()),
                ("Service", Some("shop".to_owned())),
                ("Secret", default.clone()),
                ("ConfigMap", default.clone()),
                ("EndpointSlice", default.clone()),
                ("IngressPolicy", default),
            ]
        );
    }

    #[test]
    fn json_is_yaml() {
        let parsed = parse(
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}"#,
        );
        assert_eq!(messages(&parsed), vec![]);
        assert!(matches!(&parsed.objects[..], [Object::Service(_)]));
    }

    #[test]
    fn empty_documents_are_skipped_silently_but_counted() {
        let parsed = parse(
            "# leading comment\n---\n---\n# only a comment\n---\napiVersion: v1\nkind: Nope\n---\n",
        );
        // Documents: 1 empty, 2 comment, 3 the unknown kind, 4 empty.
        assert_eq!(
            messages(&parsed),
            vec![(3, "Nope (unnamed): unsupported kind Nope in apiVersion v1")]
        );
        assert!(parse("").problems.is_empty());
        assert!(parse("---\n...\n").problems.is_empty());
    }

    #[test]
    fn unknown_kinds_and_missing_type_fields_are_problems() {
        let parsed = parse(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: x}\n---\n\
             kind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n---\n\
             metadata: {name: c}\n---\napiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n",
        );
        assert_eq!(
            messages(&parsed),
            vec![
                (
                    1,
                    "Deployment x/d: unsupported kind Deployment in apiVersion apps/v1"
                ),
                (2, "Service a: missing apiVersion"),
                (3, "b: missing kind"),
                (4, "c: missing apiVersion and kind"),
                (
                    5,
                    "Ingress old: unsupported kind Ingress in apiVersion extensions/v1beta1"
                ),
            ]
        );
        assert!(parsed.objects.is_empty());
        assert!(
            !parsed.invalid_yaml,
            "well-formed YAML of kinds we do not take"
        );
    }

    #[test]
    fn non_mapping_documents_are_problems() {
        let parsed = parse("- a\n- b\n---\njust a string\n---\n42\n");
        assert_eq!(
            messages(&parsed),
            vec![
                (
                    1,
                    "a document must be a mapping (an object), not a sequence"
                ),
                (2, "a document must be a mapping (an object), not a string"),
                (3, "a document must be a mapping (an object), not a number"),
            ]
        );
    }

    #[test]
    fn problems_carry_the_line_of_their_document_and_errors_the_line_of_the_text() {
        let parsed = parse(
            "# comment\n---\napiVersion: v1\nkind: Nope\n---\n\napiVersion: v1\nkind: Service\nmetadata: {name: [\n",
        );
        let lines: Vec<_> = parsed
            .problems
            .iter()
            .map(|p| (p.document, p.line))
            .collect();
        assert_eq!(lines, [(1, 3), (2, 6)]);
        assert!(
            parsed.problems[1].message.contains("at line 10"),
            "{}",
            parsed.problems[1].message
        );
    }

    #[test]
    fn syntax_errors_do_not_hide_later_documents() {
        let parsed = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: [\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ok}\n",
        );
        assert_eq!(parsed.problems.len(), 1);
        assert_eq!(parsed.problems[0].document, 1);
        assert_eq!(parsed.problems[0].line, 1);
        assert!(
            parsed.problems[0].message.starts_with("invalid YAML: "),
            "{}",
            parsed.problems[0].message
        );
        assert!(parsed.invalid_yaml);
        assert_eq!(parsed.objects.len(), 1);
    }

    #[test]
    fn decode_errors_name_the_object_and_the_field() {
        let parsed = parse(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  rules:
  - host: a.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: web, port: {number: eighty}}
"#,
        );
        assert_eq!(parsed.problems.len(), 1, "{:?}", parsed.problems);
        let message = &parsed.problems[0].message;
        assert!(message.starts_with("Ingress shop/web: "), "{message}");
        assert!(
            message.contains("spec.rules[0].http.paths[0].backend.service.port.number"),
            "{message}"
        );
    }

    #[test]
    fn lists_are_expanded_and_typed_lists_lend_their_kind() {
        let parsed = parse(
            r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
- apiVersion: v1
  kind: Service
  metadata: {name: b}
  spec: {ports: [{port: "x"}]}
- 7
---
apiVersion: v1
kind: ServiceList
items:
- metadata: {name: c, namespace: other}
"#,
        );
        let names: Vec<_> = parsed
            .objects
            .iter()
            .map(|o| match o {
                Object::Service(s) => s.metadata.name.clone().unwrap(),
                _ => panic!("not a service"),
            })
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(
            messages(&parsed),
            vec![
                (
                    1,
                    "List: items[1]: Service b: spec.ports[0].port: invalid type: string \"x\", expected i32"
                ),
                (
                    1,
                    "List: items[2]: an item must be a mapping (an object), not a number"
                ),
            ]
        );
    }

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let parsed = parse(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: YWFh, b: YmJi}\nstringData: {b: new, c: see}\n",
        );
        let Object::Secret(secret) = &parsed.objects[0] else {
            panic!("not a secret")
        };
        assert_eq!(secret.string_data, None);
        let data: Vec<_> = secret
            .data
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8(v.0.clone()).unwrap()))
            .collect();
        assert_eq!(
            data,
            [
                ("a", "aaa".to_owned()),
                ("b", "new".to_owned()),
                ("c", "see".to_owned())
            ]
        );
    }

    #[test]
    fn namespace_of_ingress_class_is_dropped() {
        let parsed = parse(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: c, namespace: oops}\n",
        );
        let Object::IngressClass(class) = &parsed.objects[0] else {
            panic!("not a class")
        };
        assert_eq!(class.metadata.namespace, None);
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_random_or_truncated_input() {
        let seed = r#"apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: web, annotations: {kubernetes.io/ingress.class: portico}}
  spec:
    tls: [{hosts: [a.example.com], secretName: tls}]
    rules:
    - host: a.example.com
      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}]}
---
apiVersion: v1
kind: Secret
metadata: {name: tls}
type: kubernetes.io/tls
data: {tls.crt: LS0tLS1CRUdJTg==, tls.key: LS0t}
stringData: {x: y}
---
{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "e", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}], "ports": [{"name": "http", "port": 8080}]}
"#;
        let alphabet: &[u8] = b"abcdkind: apiVersion-[]{}\"',\n\t #&*!|>%@`\\\x00\xff---";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..3000 {
            let mut bytes = seed.as_bytes().to_vec();
            match round % 3 {
                // Truncate anywhere.
                0 => bytes.truncate(rng.below(bytes.len() + 1)),
                // Flip a few bytes to characters YAML cares about.
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(bytes.len());
                        bytes[at] = alphabet[rng.below(alphabet.len())];
                    }
                }
                // Pure noise.
                _ => {
                    bytes = (0..rng.below(200))
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect();
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let parsed = parse(&text);
            for problem in &parsed.problems {
                assert!(problem.document >= 1, "{problem:?}");
            }
        }
    }
}
