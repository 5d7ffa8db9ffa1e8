//! The ProxyClass CRD: the sample parses, the schema is structural and its CEL rules refuse
//! what they should with their messages.

use kube::CustomResourceExt;
use kube::core::cel::{Validator, compile_schema, estimate_rule_cost};
use portico_crds::{LogFormat, OtlpProtocol, ProxyClass, ServiceType, TrafficPolicy};

const SAMPLE: &str = include_str!("../../config/samples/cluster/proxyclass.yaml");

fn sample() -> ProxyClass {
    let first = SAMPLE.split("\n---\n").next().unwrap();
    serde_yaml_ng::from_str(first).unwrap()
}

fn crd_json() -> serde_json::Value {
    serde_json::to_value(ProxyClass::crd()).unwrap()
}

/// Every CEL failure message for `spec` (YAML), evaluated with the generated schema.
fn check(spec: &str) -> Vec<String> {
    let crd = crd_json();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let compiled = compile_schema(schema);
    let spec: serde_json::Value = serde_yaml_ng::from_str(spec).unwrap();
    let object = serde_json::json!({
        "apiVersion": "portico.dev/v1alpha1",
        "kind": "ProxyClass",
        "metadata": {"name": "p"},
        "spec": spec,
    });
    match Validator::new().validate_compiled(&compiled, &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn sample_parses_with_every_field() {
    let class = sample();
    let spec = &class.spec;
    assert_eq!(spec.replicas, Some(3));
    let service = spec.service.as_ref().unwrap();
    assert_eq!(service.r#type, ServiceType::LoadBalancer);
    assert_eq!(service.external_traffic_policy, Some(TrafficPolicy::Local));
    assert_eq!(
        service.annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"],
        "internal"
    );
    assert_eq!(spec.publish_addresses, ["internal.example.com"]);
    assert_eq!(spec.platform_namespace.as_deref(), Some("portico-system"));
    assert_eq!(
        spec.client_ip.as_ref().unwrap().trusted_proxies,
        ["10.0.0.0/8"]
    );
    assert_eq!(spec.drain_timeout.as_ref().unwrap().as_millis(), Ok(45_000));
    assert_eq!(spec.logging.as_ref().unwrap().format, Some(LogFormat::Json));
    let tracing = spec.tracing.as_ref().unwrap();
    assert_eq!(tracing.protocol, OtlpProtocol::Grpc);
    assert_eq!(tracing.sampling_ratio, Some(0.1));
    let resources = spec.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "250m");

    let json = serde_json::to_value(&class).unwrap();
    assert_eq!(json["spec"]["clientIP"]["trustedProxies"][0], "10.0.0.0/8");
    assert_eq!(json["spec"]["service"]["type"], "LoadBalancer");
    assert_eq!(serde_json::from_value::<ProxyClass>(json).unwrap(), class);
}

#[test]
fn an_empty_spec_is_valid_and_serialises_empty() {
    let class: ProxyClass = serde_yaml_ng::from_str(
        "apiVersion: portico.dev/v1alpha1\nkind: ProxyClass\nmetadata: {name: d}\nspec: {}\n",
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&class.spec).unwrap(),
        serde_json::json!({})
    );
    assert!(check("{}").is_empty());
}

#[test]
fn cel_rules_refuse_bad_values_with_messages() {
    let sample_spec = serde_yaml_ng::to_string(&sample().spec).unwrap();
    assert_eq!(check(&sample_spec), Vec::<String>::new());
    let cases = [
        (
            "clientIP: {trustedProxies: [10.0.0.0]}",
            "trustedProxies entries must be CIDRs",
        ),
        (
            "publishAddresses: [Not_A_Host]",
            "publishAddresses entries must be IP addresses or lower-case DNS names",
        ),
        (
            "service: {type: ClusterIP, externalTrafficPolicy: Local}",
            "externalTrafficPolicy applies to LoadBalancer and NodePort Services only",
        ),
    ];
    for (spec, message) in cases {
        let errors = check(spec);
        assert!(
            errors.iter().any(|e| e.contains(message)),
            "{spec}: expected {message:?} in {errors:?}"
        );
    }
    assert!(check("publishAddresses: [203.0.113.7, 2001:db8::1, lb.example.com]").is_empty());
}

#[test]
fn crd_is_cluster_scoped_structural_and_has_columns() {
    let crd = crd_json();
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "pxc");
    let text = serde_json::to_string(&crd).unwrap();
    for forbidden in ["\"$ref\"", "\"anyOf\"", "\"oneOf\"", "\"allOf\""] {
        assert!(!text.contains(forbidden), "schema contains {forbidden}");
    }
    let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Replicas", "Service", "Image", "Age"]);
}

#[test]
fn every_rule_compiles_within_the_cost_budget() {
    let crd = crd_json();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let compiled = compile_schema(schema);
    assert!(
        !compiled.has_errors(),
        "rules that do not compile: {:#?}",
        compiled.compilation_errors()
    );
    fn rules<'a>(value: &'a serde_json::Value, out: &mut Vec<(String, &'a serde_json::Value)>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(list)) = map.get("x-kubernetes-validations") {
                    out.extend(
                        list.iter()
                            .filter_map(|r| r["rule"].as_str().map(|r| (r.to_owned(), value))),
                    );
                }
                map.values().for_each(|v| rules(v, out));
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| rules(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    rules(schema, &mut all);
    assert_eq!(all.len(), 4, "{all:#?}");
    for (rule, at) in &all {
        let warnings = estimate_rule_cost(rule, &compile_schema(at));
        assert!(warnings.is_empty(), "{rule}: {warnings:#?}");
    }
}
