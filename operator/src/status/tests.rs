//! Status scenarios against a scripted API server.

use http::Method;
use portico_crds::{IngressPolicyStatus, conditions};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{
    ApiServer, ingress_class, mock_client, output, proxy_class, proxy_service, within_a_second,
};

const NS: &str = "portico-system";
const SERVICE_URI: &str = "/api/v1/namespaces/portico-system/services/portico-proxy-portico";
const INGRESS_STATUS_URI: &str = "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web/status?&force=true&fieldManager=portico-operator";
const POLICY_STATUS_URI: &str = "/apis/portico.dev/v1alpha1/namespaces/shop/ingresspolicies/login/status?&force=true&fieldManager=portico-operator";
const POLICY_URI: &str = "/apis/portico.dev/v1alpha1/namespaces/shop/ingresspolicies/login";
const EVENTS_URI: &str = "/apis/events.k8s.io/v1/namespaces/shop/events?";

fn writer() -> (StatusWriter, ApiServer) {
    let (client, server) = mock_client();
    (StatusWriter::new(client, NS, Leadership::always()), server)
}

fn ingress_answer() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web"}})
}

fn policy_answer() -> Value {
    json!({"apiVersion": "portico.dev/v1alpha1", "kind": "IngressPolicy",
           "metadata": {"name": "login", "namespace": "shop", "uid": "uid-login"}, "spec": {}})
}

fn service_json(addresses: &[&str]) -> Value {
    serde_json::to_value(proxy_service(NS, "portico", addresses)).unwrap()
}

#[tokio::test]
async fn an_ingress_gets_the_load_balancer_address_once() {
    let (mut writer, mut server) = writer();
    let out = output().ingress("shop/web", "portico", &[]).build();
    within_a_second(async {
        let server_side = async {
            server
                .expect(Method::GET, SERVICE_URI)
                .await
                .respond(200, service_json(&["203.0.113.7", "lb.example.net"]));
            let patch = server.expect(Method::PATCH, INGRESS_STATUS_URI).await;
            let body = patch.body.clone();
            patch.respond(200, ingress_answer());
            // The second, identical translation only reads the Service.
            server
                .expect(Method::GET, SERVICE_URI)
                .await
                .respond(200, service_json(&["203.0.113.7", "lb.example.net"]));
            body
        };
        let updates = async {
            writer.update(&out).await.unwrap();
            writer.update(&out).await.unwrap();
        };
        let ((), body) = tokio::join!(updates, server_side);
        assert_eq!(
            body,
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "status": {"loadBalancer": {"ingress": [
                    {"ip": "203.0.113.7"}, {"hostname": "lb.example.net"}
                ]}}
            })
        );
    })
    .await;
    drop(writer);
    server.done().await;
}

#[tokio::test]
async fn without_a_load_balancer_the_publish_addresses_are_used() {
    let (mut writer, mut server) = writer();
    let out = output().ingress("shop/web", "portico", &[]).build();
    within_a_second(async {
        let server_side = async {
            server
                .expect(Method::GET, SERVICE_URI)
                .await
                .respond(200, service_json(&[]));
            server
                .expect(
                    Method::GET,
                    "/apis/networking.k8s.io/v1/ingressclasses/portico",
                )
                .await
                .respond(
                    200,
                    serde_json::to_value(&*ingress_class("portico").proxy_class("edge").build())
                        .unwrap(),
                );
            server
                .expect(Method::GET, "/apis/portico.dev/v1alpha1/proxyclasses/edge")
                .await
                .respond(
                    200,
                    proxy_class("edge")
                        .publish_address("ingress.example.com")
                        .publish_address("198.51.100.1")
                        .json(),
                );
            let patch = server.expect(Method::PATCH, INGRESS_STATUS_URI).await;
            let body = patch.body.clone();
            patch.respond(200, ingress_answer());
            body
        };
        let (result, body) = tokio::join!(writer.update(&out), server_side);
        result.unwrap();
        assert_eq!(
            body["status"]["loadBalancer"]["ingress"],
            json!([{"hostname": "ingress.example.com"}, {"ip": "198.51.100.1"}])
        );
    })
    .await;
    drop(writer);
    server.done().await;
}

#[tokio::test]
async fn a_missing_secret_is_one_warning_event_on_the_ingress() {
    let (mut writer, mut server) = writer();
    let warning = (
        "SecretNotFound",
        "TLS Secret shop/shop-tls not found; shop.example.com is served with a self-signed certificate",
    );
    let out = output().ingress("shop/web", "portico", &[warning]).build();
    within_a_second(async {
        let server_side = async {
            server
                .expect(Method::GET, SERVICE_URI)
                .await
                .respond(200, service_json(&["203.0.113.7"]));
            server
                .expect(Method::PATCH, INGRESS_STATUS_URI)
                .await
                .respond(200, ingress_answer());
            let event = server.expect(Method::POST, EVENTS_URI).await.echo();
            server
                .expect(Method::GET, SERVICE_URI)
                .await
                .respond(200, service_json(&["203.0.113.7"]));
            event
        };
        let updates = async {
            writer.update(&out).await.unwrap();
            // The same warning again: no second event.
            writer.update(&out).await.unwrap();
        };
        let ((), event) = tokio::join!(updates, server_side);
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "SecretNotFound");
        assert_eq!(event["note"], warning.1);
        assert_eq!(event["reportingController"], "portico-operator");
        assert_eq!(
            event["regarding"],
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "namespace": "shop", "name": "web", "uid": "uid-web"})
        );
    })
    .await;
    drop(writer);
    server.done().await;
}

#[tokio::test]
async fn policy_ancestors_are_written_once_and_problems_become_events() {
    let (mut writer, mut server) = writer();
    let out = output()
        .policy(
            "shop/login",
            "web",
            7,
            &[
                (
                    "Accepted",
                    "False",
                    "Conflicted",
                    "another policy sets rateLimit on shop/web",
                ),
                (
                    "ResolvedRefs",
                    "False",
                    "InvalidRef",
                    "Secret shop/jwks not found",
                ),
                ("Programmed", "False", "Pending", ""),
            ],
        )
        .build();
    within_a_second(async {
        let server_side = async {
            server
                .expect(Method::GET, POLICY_URI)
                .await
                .respond(200, policy_answer());
            let patch = server.expect(Method::PATCH, POLICY_STATUS_URI).await;
            let body = patch.body.clone();
            patch.respond(200, policy_answer());
            let events = [
                server.expect(Method::POST, EVENTS_URI).await.echo(),
                server.expect(Method::POST, EVENTS_URI).await.echo(),
            ];
            (body, events)
        };
        let updates = async {
            writer.update(&out).await.unwrap();
            writer.update(&out).await.unwrap();
        };
        let ((), (body, events)) = tokio::join!(updates, server_side);
        assert_eq!(body["apiVersion"], "portico.dev/v1alpha1");
        assert_eq!(body["kind"], "IngressPolicy");
        let ancestor = &body["status"]["ancestors"][0];
        assert_eq!(
            ancestor["ancestorRef"],
            json!({"group": "networking.k8s.io", "kind": "Ingress", "namespace": "shop", "name": "web"})
        );
        assert_eq!(ancestor["controllerName"], "portico.dev/ingress-controller");
        let accepted = &ancestor["conditions"][0];
        assert_eq!(accepted["type"], "Accepted");
        assert_eq!(accepted["reason"], "Conflicted");
        assert_eq!(accepted["observedGeneration"], 7);
        let time = accepted["lastTransitionTime"].as_str().unwrap();
        assert_eq!((time.len(), &time[10..11], &time[19..]), (20, "T", "Z"), "{time}");
        let reasons: Vec<&str> = events.iter().map(|e| e["reason"].as_str().unwrap()).collect();
        // Pending is state, not a problem: no event for it.
        assert_eq!(reasons, ["Conflicted", "InvalidRef"]);
        assert_eq!(events[0]["regarding"]["kind"], "IngressPolicy");
        assert_eq!(events[0]["regarding"]["uid"], "uid-login");
    })
    .await;
    drop(writer);
    server.done().await;
}

#[tokio::test]
async fn an_ingress_that_leaves_portico_gets_its_address_back() {
    let (mut writer, mut server) = writer();
    let served = output().ingress("shop/web", "portico", &[]).build();
    within_a_second(async {
        let server_side = async {
            server
                .expect(Method::GET, SERVICE_URI)
                .await
                .respond(200, service_json(&["203.0.113.7"]));
            server
                .expect(Method::PATCH, INGRESS_STATUS_URI)
                .await
                .respond(200, ingress_answer());
            let clear = server.expect(Method::PATCH, INGRESS_STATUS_URI).await;
            let body = clear.body.clone();
            clear.respond(200, ingress_answer());
            body
        };
        let updates = async {
            writer.update(&served).await.unwrap();
            writer.update(&output().build()).await.unwrap();
        };
        let ((), body) = tokio::join!(updates, server_side);
        assert_eq!(body["status"], json!({"loadBalancer": {}}));
    })
    .await;
    drop(writer);
    server.done().await;
}

#[tokio::test]
async fn a_failed_write_is_reported_and_retried_by_the_next_update() {
    let (mut writer, mut server) = writer();
    let out = output().ingress("shop/web", "portico", &[]).build();
    within_a_second(async {
        let server_side = async {
            server
                .expect(Method::GET, SERVICE_URI)
                .await
                .respond(200, service_json(&["203.0.113.7"]));
            server
                .expect(Method::PATCH, INGRESS_STATUS_URI)
                .await
                .respond(
                    500,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "etcd is down", "reason": "InternalError", "code": 500}),
                );
            server
                .expect(Method::GET, SERVICE_URI)
                .await
                .respond(200, service_json(&["203.0.113.7"]));
            server
                .expect(Method::PATCH, INGRESS_STATUS_URI)
                .await
                .respond(200, ingress_answer());
        };
        let updates = async {
            let error = writer.update(&out).await.unwrap_err();
            assert_eq!(error.failed, 1);
            assert!(error.to_string().contains("Ingress shop/web"), "{error}");
            writer.update(&out).await.unwrap();
        };
        tokio::join!(updates, server_side);
    })
    .await;
    drop(writer);
    server.done().await;
}

#[tokio::test]
async fn a_replica_that_is_not_leader_writes_nothing() {
    let (client, server) = mock_client();
    let mut writer = StatusWriter::new(client, NS, Leadership::fixed(false));
    let out = output()
        .ingress("shop/web", "portico", &[("SecretNotFound", "missing")])
        .policy(
            "shop/login",
            "web",
            1,
            &[("Accepted", "True", "Accepted", "")],
        )
        .build();
    within_a_second(writer.update(&out)).await.unwrap();
    drop(writer);
    server.done().await;
}

#[test]
fn transition_times_move_only_when_a_condition_changes_status() {
    let condition = |t: &str, s: &str| portico_crds::PolicyCondition {
        r#type: t.into(),
        status: s.into(),
        reason: "R".into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: None,
    };
    let status = |accepted: &str| IngressPolicyStatus {
        ancestors: vec![portico_crds::PolicyAncestorStatus {
            ancestor_ref: portico_crds::AncestorRef {
                group: "networking.k8s.io".into(),
                kind: "Ingress".into(),
                namespace: Some("shop".into()),
                name: "web".into(),
            },
            controller_name: portico_crds::CONTROLLER_NAME.into(),
            conditions: vec![
                condition(conditions::ACCEPTED, accepted),
                condition(conditions::PROGRAMMED, "True"),
            ],
        }],
    };
    let first = stamp(&status("True"), None, "2026-01-01T00:00:00Z");
    let times = |s: &IngressPolicyStatus| -> Vec<String> {
        s.ancestors[0]
            .conditions
            .iter()
            .map(|c| c.last_transition_time.clone().unwrap())
            .collect()
    };
    assert_eq!(
        times(&first),
        ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]
    );
    // Same statuses later: nothing moves, so the writer sees no change.
    let same = stamp(&status("True"), Some(&first), "2026-01-02T00:00:00Z");
    assert_eq!(same, first);
    // Accepted flips: only its time moves.
    let flipped = stamp(&status("False"), Some(&first), "2026-01-03T00:00:00Z");
    assert_eq!(
        times(&flipped),
        ["2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z"]
    );
}

#[tokio::test]
async fn with_no_address_anywhere_the_load_balancer_status_is_empty() {
    let (mut writer, mut server) = writer();
    let out = output().ingress("shop/web", "portico", &[]).build();
    within_a_second(async {
        let server_side = async {
            server.expect(Method::GET, SERVICE_URI).await.not_found();
            server
                .expect(
                    Method::GET,
                    "/apis/networking.k8s.io/v1/ingressclasses/portico",
                )
                .await
                .respond(
                    200,
                    serde_json::to_value(&*ingress_class("portico").build()).unwrap(),
                );
            let patch = server.expect(Method::PATCH, INGRESS_STATUS_URI).await;
            let body = patch.body.clone();
            patch.respond(200, ingress_answer());
            body
        };
        let (result, body) = tokio::join!(writer.update(&out), server_side);
        result.unwrap();
        assert_eq!(body["status"], json!({"loadBalancer": {}}));
    })
    .await;
    drop(writer);
    server.done().await;
}

#[tokio::test]
async fn a_new_leader_keeps_the_status_it_finds_when_nothing_changed() {
    let (mut writer, mut server) = writer();
    let out = output()
        .policy(
            "shop/login",
            "web",
            7,
            &[("Accepted", "False", "Invalid", "rateLimit.rules[0]: bad")],
        )
        .build();
    // What the previous leader wrote, a day ago.
    let mut existing = out.policies["shop/login"].clone();
    existing.ancestors[0].conditions[0].last_transition_time = Some("2026-01-01T00:00:00Z".into());
    let mut answer = policy_answer();
    answer["status"] = serde_json::to_value(&existing).unwrap();
    within_a_second(async {
        let server_side = async {
            server
                .expect(Method::GET, POLICY_URI)
                .await
                .respond(200, answer);
        };
        let (result, ()) = tokio::join!(writer.update(&out), server_side);
        result.unwrap();
    })
    .await;
    // No patch, and no second event for a problem already in the status.
    drop(writer);
    server.done().await;
}
