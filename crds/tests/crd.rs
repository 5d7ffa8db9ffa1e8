//! The checked-in CRD YAML, the example manifest and the shape of the generated schema.

use kube::CustomResourceExt;
use portico_crds::{
    IngressPolicy, KeyType, ReplicaMode, TargetKind, TargetPathType, crd_yaml, parse_duration,
};

const EXAMPLE: &str = r#"
apiVersion: portico.dev/v1alpha1
kind: IngressPolicy
metadata: {name: shop-login, namespace: shop}
spec:
  targetRefs:
  - {group: networking.k8s.io, kind: Ingress, name: shop, host: shop.example.com, path: /login, pathType: Prefix}
  defaults:
    timeouts: {request: 60s, backendRequest: 55s}
    rateLimit:
      rules:
      - name: login-per-ip
        key: {type: ClientIP}
        limit: {requests: 10, period: 1m, burst: 5}
        replicas: DividedAmongReplicas
"#;

fn schema_json() -> serde_json::Value {
    serde_json::to_value(IngressPolicy::crd()).unwrap()
}

/// Every `x-kubernetes-validations` rule in the schema, with its message.
fn rules(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(list)) = map.get("x-kubernetes-validations") {
                for r in list {
                    out.push((
                        r["rule"].as_str().unwrap_or_default().to_owned(),
                        r["message"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            map.values().for_each(|v| rules(v, out));
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| rules(v, out)),
        _ => {}
    }
}

#[test]
fn checked_in_crd_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(portico_crds::CRD_PATH);
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == crd_yaml(),
        "{} is stale or missing: run `make crds`",
        path.display()
    );
}

#[test]
fn example_manifest_round_trips() {
    let policy: IngressPolicy = serde_yaml_ng::from_str(EXAMPLE).unwrap();
    let target = &policy.spec.target_refs[0];
    assert_eq!(target.kind, TargetKind::Ingress);
    assert_eq!(target.host.as_deref(), Some("shop.example.com"));
    assert_eq!(target.path.as_deref(), Some("/login"));
    assert_eq!(target.path_type, Some(TargetPathType::Prefix));
    let defaults = policy.spec.defaults.as_ref().unwrap();
    let timeouts = defaults.timeouts.as_ref().unwrap();
    assert_eq!(timeouts.request.as_ref().unwrap().as_millis(), Ok(60_000));
    assert_eq!(
        timeouts.backend_request.as_ref().unwrap().as_millis(),
        Ok(55_000)
    );
    let rule = &defaults.rate_limit.as_ref().unwrap().rules[0];
    assert_eq!(rule.name, "login-per-ip");
    assert_eq!(rule.key.r#type, KeyType::ClientIp);
    assert_eq!(rule.limit.requests, 10);
    assert_eq!(parse_duration(&rule.limit.period.0).unwrap().as_secs(), 60);
    assert_eq!(rule.limit.burst, Some(5));
    assert_eq!(rule.replicas, Some(ReplicaMode::DividedAmongReplicas));
    assert!(policy.spec.overrides.is_none());

    // Serialise and read back: nothing lost, nothing added.
    let json = serde_json::to_value(&policy).unwrap();
    assert_eq!(json["spec"]["targetRefs"][0]["pathType"], "Prefix");
    assert_eq!(
        json["spec"]["defaults"]["rateLimit"]["rules"][0]["key"]["type"],
        "ClientIP"
    );
    assert!(
        json["spec"]["defaults"]["timeouts"]
            .get("disabled")
            .is_none()
    );
    let back: IngressPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(back, policy);
}

#[test]
fn unknown_enum_values_do_not_parse() {
    let bad = EXAMPLE.replace("type: ClientIP", "type: ClientIp");
    assert!(serde_yaml_ng::from_str::<IngressPolicy>(&bad).is_err());
}

#[test]
fn schema_carries_the_cel_rules() {
    let mut all = Vec::new();
    rules(&schema_json(), &mut all);
    let has = |needle: &str| all.iter().any(|(rule, _)| rule.contains(needle));
    // overrides only on IngressClass targets
    assert!(has("self.targetRefs.all(r, r.kind == 'IngressClass')"));
    // at least one target, at least one body
    assert!(has("size(self.targetRefs) > 0"));
    assert!(has("has(self.defaults) || has(self.overrides)"));
    // host/path only on Ingress; path needs host
    assert!(has("self.kind == 'Ingress' || (!has(self.host)"));
    assert!(has("!has(self.path) || has(self.host)"));
    // key name for Header and JWTClaim
    assert!(has(
        "(self.type in ['Header', 'JWTClaim']) == has(self.name)"
    ));
    // backendRequest within request
    assert!(has(
        "duration(self.backendRequest) <= duration(self.request)"
    ));
    // CIDRs, durations, protected headers, quantities
    assert!(has("isCIDR(c)"));
    assert!(has("duration(self) > duration('0s')"));
    assert!(has("self.lowerAscii() in ['connection'"));
    assert!(has("isQuantity(string(self))"));
    // Every rule explains itself.
    for (rule, message) in &all {
        assert!(!message.is_empty(), "rule without a message: {rule}");
    }
}

#[test]
fn schema_is_structural_and_bounded() {
    let text = serde_json::to_string(&schema_json()).unwrap();
    for forbidden in [
        "\"$ref\"",
        "\"anyOf\"",
        "\"oneOf\"",
        "\"allOf\"",
        "\"additionalProperties\":true",
    ] {
        assert!(!text.contains(forbidden), "schema contains {forbidden}");
    }
    // Every array is bounded, so CEL cost estimates stay finite.
    fn arrays_bounded(v: &serde_json::Value, at: &str) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("type").and_then(|t| t.as_str()) == Some("array") {
                    assert!(
                        map.contains_key("maxItems"),
                        "array without maxItems at {at}"
                    );
                }
                for (k, v) in map {
                    arrays_bounded(v, &format!("{at}.{k}"));
                }
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| arrays_bounded(v, at)),
            _ => {}
        }
    }
    let crd = schema_json();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    arrays_bounded(&schema["properties"]["spec"], "spec");
    arrays_bounded(&schema["properties"]["status"], "status");
}

#[test]
fn crd_names_and_subresources() {
    let crd = schema_json();
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "ipol");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Target", "Accepted", "Programmed", "Age"]);
}
