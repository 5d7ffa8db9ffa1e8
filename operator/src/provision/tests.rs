//! Reconcile scenarios against a scripted API server, and the rendered objects field by field.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;
use portico_crds::{ProxyClassSpec, ServiceType};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{ApiServer, ingress_class, mock_client, proxy_class, within_a_second};

const NS: &str = "portico-system";

fn context() -> (Arc<Context>, ApiServer) {
    let (client, server) = mock_client();
    (Arc::new(Context::new(client, Settings::new(NS))), server)
}

fn apply_uri(path: &str, name: &str) -> String {
    format!("{path}/namespaces/{NS}/{name}?&force=true&fieldManager=portico-operator")
}

/// Expects the four applies of `class`, in order, answers each with its body and returns the
/// bodies as `[sa, deployment, service, pdb]`.
async fn expect_children(server: &mut ApiServer, class: &str) -> Vec<Value> {
    let name = format!("portico-proxy-{class}");
    let mut bodies = Vec::new();
    for (path, plural) in [
        ("/api/v1", "serviceaccounts"),
        ("/apis/apps/v1", "deployments"),
        ("/api/v1", "services"),
        ("/apis/policy/v1", "poddisruptionbudgets"),
    ] {
        let call = server
            .expect(Method::PATCH, &apply_uri(path, &format!("{plural}/{name}")))
            .await;
        bodies.push(call.echo());
    }
    bodies
}

#[tokio::test]
async fn our_class_gets_its_four_objects_owned_and_labelled() {
    let (ctx, mut server) = context();
    let class = ingress_class("portico").build();
    let scenario = async {
        let (action, bodies) = tokio::join!(
            reconcile(class, ctx),
            expect_children(&mut server, "portico")
        );
        assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(3600)));
        let owner = json!([{
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "name": "portico", "uid": "uid-portico", "controller": true
        }]);
        let labels = json!({
            "app.kubernetes.io/instance": "portico-proxy-portico",
            "app.kubernetes.io/managed-by": "portico-operator",
            "app.kubernetes.io/name": "portico-proxy",
            "portico.dev/ingress-class": "portico",
        });
        let kinds: Vec<&str> = bodies.iter().map(|b| b["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "Deployment",
                "Service",
                "PodDisruptionBudget"
            ]
        );
        for body in &bodies {
            assert_eq!(body["metadata"]["name"], "portico-proxy-portico");
            assert_eq!(body["metadata"]["namespace"], NS);
            assert_eq!(body["metadata"]["ownerReferences"], owner);
            assert_eq!(body["metadata"]["labels"], labels);
        }
        assert_eq!(bodies[0]["automountServiceAccountToken"], false);
        let pod = &bodies[1]["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "portico-proxy-portico");
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(bodies[1]["spec"]["replicas"], 2);
        let proxy = &pod["containers"][0];
        assert_eq!(
            proxy["args"],
            json!([
                "--control-plane",
                "https://portico-operator.portico-system.svc:8443",
                "--class",
                "portico",
                "--http",
                "0.0.0.0:8080",
                "--https",
                "0.0.0.0:8443",
                "--admin",
                "0.0.0.0:9901"
            ])
        );
        assert_eq!(proxy["image"], default_proxy_image());
        assert_eq!(bodies[2]["spec"]["type"], "LoadBalancer");
        assert_eq!(bodies[3]["spec"]["maxUnavailable"], 1);
        assert_eq!(
            bodies[3]["spec"]["selector"]["matchLabels"],
            bodies[1]["spec"]["selector"]["matchLabels"]
        );
    };
    within_a_second(scenario).await;
    server.done().await;
}

#[tokio::test]
async fn a_class_of_another_controller_gets_nothing() {
    let (ctx, server) = context();
    let class = ingress_class("nginx")
        .controller("k8s.io/ingress-nginx")
        .build();
    let action = within_a_second(async { reconcile(class, ctx).await.unwrap() }).await;
    assert_eq!(action, Action::await_change());
    server.done().await;
}

#[tokio::test]
async fn proxy_class_fields_reach_the_deployment_and_service() {
    let (ctx, mut server) = context();
    let class = ingress_class("edge").proxy_class("big").build();
    let scenario = async {
        let server_side = async {
            server
                .expect(Method::GET, "/apis/portico.dev/v1alpha1/proxyclasses/big")
                .await
                .respond(
                    200,
                    proxy_class("big")
                        .replicas(5)
                        .image("registry.example/portico-proxy:canary")
                        .service_type(ServiceType::NodePort)
                        .service_annotation("lb.example/internal", "true")
                        .json(),
                );
            expect_children(&mut server, "edge").await
        };
        let (action, bodies) = tokio::join!(reconcile(class, ctx), server_side);
        action.unwrap();
        let deployment = &bodies[1];
        assert_eq!(deployment["spec"]["replicas"], 5);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example/portico-proxy:canary"
        );
        let service = &bodies[2];
        assert_eq!(service["spec"]["type"], "NodePort");
        assert_eq!(
            service["metadata"]["annotations"],
            json!({"lb.example/internal": "true"})
        );
    };
    within_a_second(scenario).await;
    server.done().await;
}

#[tokio::test]
async fn a_missing_proxy_class_is_reported_on_the_class_and_nothing_is_applied() {
    let (ctx, mut server) = context();
    let class = ingress_class("edge").proxy_class("gone").build();
    let scenario = async {
        let server_side = async {
            server
                .expect(Method::GET, "/apis/portico.dev/v1alpha1/proxyclasses/gone")
                .await
                .not_found();
            server
                .expect(
                    Method::POST,
                    "/apis/events.k8s.io/v1/namespaces/default/events?",
                )
                .await
                .echo()
        };
        let (action, event) = tokio::join!(reconcile(class, ctx), server_side);
        assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "ProxyClassNotFound");
        assert_eq!(event["regarding"]["kind"], "IngressClass");
        assert_eq!(event["regarding"]["name"], "edge");
        assert!(event["note"].as_str().unwrap().contains("\"gone\""));
    };
    within_a_second(scenario).await;
    server.done().await;
}

#[tokio::test]
async fn parameters_of_another_kind_are_refused_with_an_event() {
    let (ctx, mut server) = context();
    let class = ingress_class("edge")
        .parameters("k8s.example.com", "IngressParameters", "x")
        .build();
    let scenario = async {
        let server_side = async {
            server
                .expect(
                    Method::POST,
                    "/apis/events.k8s.io/v1/namespaces/default/events?",
                )
                .await
                .echo()
        };
        let (action, event) = tokio::join!(reconcile(class, ctx), server_side);
        assert_eq!(action.unwrap(), Action::await_change());
        assert_eq!(event["reason"], "InvalidParameters");
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("must name a ProxyClass")
        );
    };
    within_a_second(scenario).await;
    server.done().await;
}

#[tokio::test]
async fn an_api_error_fails_the_reconcile_for_a_retry() {
    let (ctx, mut server) = context();
    let class = ingress_class("portico").build();
    let scenario = async {
        let server_side = async {
            server
                .expect(
                    Method::PATCH,
                    &apply_uri("/api/v1", "serviceaccounts/portico-proxy-portico"),
                )
                .await
                .respond(
                    403,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": "forbidden", "reason": "Forbidden", "code": 403}),
                );
        };
        let (result, ()) = tokio::join!(reconcile(class.clone(), ctx.clone()), server_side);
        let error = result.unwrap_err();
        assert_eq!(error.metric_label(), "kube");
        assert!(error.to_string().contains("apply ServiceAccount"));
        assert_eq!(
            error_policy(class, &error, ctx),
            Action::requeue(Duration::from_secs(15))
        );
    };
    within_a_second(scenario).await;
    server.done().await;
}

// ---------------------------------------------------------------------------------------------
// Rendering.

fn render_default(class: &str) -> resources::Children {
    let class = ingress_class(class).build();
    resources::render(&class, &ProxyClassSpec::default(), &Settings::new(NS)).unwrap()
}

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn the_pod_gets_only_a_projected_token_and_the_ca() {
    let deployment = json_of(&render_default("portico").deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "portico.dev", "expirationSeconds": 3600, "path": "token"}}]}},
            {"name": "ca", "configMap": {"name": "portico-ca"}},
        ])
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["volumeMounts"],
        json!([
            {"name": "token", "mountPath": "/var/run/secrets/portico.dev/token", "readOnly": true},
            {"name": "ca", "mountPath": "/var/run/secrets/portico.dev/ca", "readOnly": true},
        ])
    );
    assert_eq!(
        container["env"][0],
        json!({"name": "PORTICO_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
}

#[test]
fn the_pod_is_locked_down_and_drains_gracefully() {
    let deployment = json_of(&render_default("portico").deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        container["lifecycle"]["preStop"],
        json!({"sleep": {"seconds": 5}})
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // Default drain of 30s: the grace period covers preStop, the drain and some slack.
    assert_eq!(pod["terminationGracePeriodSeconds"], 45);
    let env = container["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "PORTICO_DRAIN_TIMEOUT", "value": "30000ms"})));
}

#[test]
fn a_longer_drain_lengthens_the_grace_period() {
    let class = ingress_class("portico").build();
    let spec = ProxyClassSpec {
        drain_timeout: Some("1m30s".into()),
        ..ProxyClassSpec::default()
    };
    let children = resources::render(&class, &spec, &Settings::new(NS)).unwrap();
    let deployment = json_of(&children.deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 105);
    let env = pod["containers"][0]["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "PORTICO_DRAIN_TIMEOUT", "value": "90000ms"})));
}

#[test]
fn runtime_settings_become_the_proxy_environment() {
    let sample = include_str!("../../../config/samples/cluster/proxyclass.yaml");
    let proxy: portico_crds::ProxyClass =
        serde_yaml_ng::from_str(sample.split("\n---\n").next().unwrap()).unwrap();
    let class = ingress_class("portico-internal")
        .proxy_class("internal")
        .build();
    let children = resources::render(&class, &proxy.spec, &Settings::new(NS)).unwrap();
    let deployment = json_of(&children.deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    let env: Vec<(String, String)> = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(get("PORTICO_TRUSTED_PROXIES"), Some("10.0.0.0/8"));
    assert_eq!(get("PORTICO_LOG_FORMAT"), Some("json"));
    assert_eq!(
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://otel-collector.observability:4317")
    );
    assert_eq!(get("OTEL_EXPORTER_OTLP_PROTOCOL"), Some("grpc"));
    assert_eq!(get("OTEL_TRACES_SAMPLER_ARG"), Some("0.1"));
    assert_eq!(get("PORTICO_PROXY_PROTOCOL"), None);
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["memory"],
        "512Mi"
    );
    let service = json_of(&children.service);
    assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(deployment["spec"]["replicas"], 3);
}

#[test]
fn a_class_name_that_cannot_name_a_service_is_refused() {
    let class = ingress_class("example.com-edge").build();
    let error =
        resources::render(&class, &ProxyClassSpec::default(), &Settings::new(NS)).unwrap_err();
    assert_eq!(error.metric_label(), "invalid_class_name");
    assert!(error.to_string().contains("portico-proxy-example.com-edge"));
    let long = "a".repeat(50);
    assert!(resources::check_class_name(&long).is_err());
    assert!(resources::check_class_name("portico").is_ok());
}

#[test]
fn a_cluster_ip_service_has_no_node_ports() {
    let class = ingress_class("portico").build();
    let spec = ProxyClassSpec {
        service: Some(portico_crds::ProxyService {
            r#type: ServiceType::ClusterIp,
            http_node_port: Some(30080),
            ..Default::default()
        }),
        ..ProxyClassSpec::default()
    };
    let children = resources::render(&class, &spec, &Settings::new(NS)).unwrap();
    let service = json_of(&children.service);
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
        ])
    );
}

#[test]
fn translator_inputs_default_to_the_operator_settings() {
    let settings = Settings::new(NS);
    let empty = ProxyClassSpec::default();
    assert_eq!(replicas(&empty), 2);
    assert_eq!(platform_namespace(&empty, &settings), NS);
    let set = ProxyClassSpec {
        replicas: Some(7),
        platform_namespace: Some("platform".into()),
        ..ProxyClassSpec::default()
    };
    assert_eq!(replicas(&set), 7);
    assert_eq!(platform_namespace(&set, &settings), "platform");
    let class = ingress_class("edge").proxy_class("big").build();
    assert_eq!(proxy_class_name(&class), Ok(Some("big".to_owned())));
    assert_eq!(
        proxy_class_name(&ingress_class("portico").build()),
        Ok(None)
    );
}

#[tokio::test]
async fn the_entry_points_can_be_spawned() {
    fn spawnable<F: Future<Output = ()> + Send + 'static>(_: F) {}
    let (client, _server) = mock_client();
    spawnable(run(client.clone(), Settings::new(NS)));
    let elector = crate::leader::Elector::new(
        client.clone(),
        crate::leader::LeaseSettings::new(NS, "operator-a"),
    );
    let (_leadership, task) = elector.run();
    spawnable(task);
    let mut writer =
        crate::status::StatusWriter::new(client, NS, crate::leader::Leadership::always());
    let output = portico_translate::Output::default();
    spawnable(async move {
        let _ = writer.update(&output).await;
    });
}

// ---------------------------------------------------------------------------------------------
// Traces: what a collector receives of reconciles.

#[tokio::test]
async fn a_reconcile_is_a_span_with_its_applies_and_a_failed_one_is_an_error() {
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use portico_otlp::receiver::Receiver;
    use portico_otlp::{ExportCounters, Flags, TraceSettings};
    use tracing_subscriber::Registry;
    use tracing_subscriber::layer::SubscriberExt as _;

    let receiver = Receiver::start().await;
    let flags = Flags {
        endpoint: Some(receiver.url()),
        ..Flags::default()
    };
    let resource = vec![("service.name".to_owned(), "portico-operator".to_owned())];
    let settings = TraceSettings::resolve(&flags, resource, |_| None)
        .unwrap()
        .unwrap();
    let counters = ExportCounters {
        exported: Default::default(),
        dropped: Default::default(),
    };
    let (provider, flusher) = portico_otlp::start(&settings, counters).unwrap();
    let subscriber = Registry::default().with(crate::telemetry::span_layer(&provider));
    let guard = tracing::subscriber::set_default(subscriber);

    let (ctx, mut server) = context();
    let scenario = async {
        let (action, _) = tokio::join!(
            reconcile(ingress_class("portico").build(), ctx.clone()),
            expect_children(&mut server, "portico")
        );
        action.unwrap();
        let refuse = async {
            server
                .expect(
                    Method::PATCH,
                    &apply_uri("/api/v1", "serviceaccounts/portico-proxy-edge"),
                )
                .await
                .respond(
                    403,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": "forbidden", "reason": "Forbidden", "code": 403}),
                );
        };
        let (result, ()) = tokio::join!(reconcile(ingress_class("edge").build(), ctx), refuse);
        assert!(result.is_err());
    };
    within_a_second(scenario).await;
    server.done().await;
    drop(guard);
    flusher.flush(Duration::from_secs(5)).await;

    let spans = receiver
        .wait_for("two reconcile spans", |spans| {
            spans.iter().filter(|s| s.span.name == "reconcile").count() == 2
        })
        .await;
    let reconcile_of = |class: &str| {
        spans
            .iter()
            .find(|s| s.span.name == "reconcile" && s.attr("class").as_deref() == Some(class))
            .unwrap_or_else(|| panic!("no reconcile span of {class}: {spans:#?}"))
    };
    let applies_of = |parent: &portico_otlp::receiver::Received| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s.span.name == "apply" && s.parent_id() == parent.span_id())
            .map(|s| s.attr("kind").unwrap_or_default())
            .collect()
    };

    let ok = reconcile_of("portico");
    assert_eq!(ok.resource["service.name"], "portico-operator");
    let status = ok.span.status.clone().unwrap_or_default();
    assert_ne!(status.code, StatusCode::Error as i32, "{status:?}");
    let mut kinds = applies_of(ok);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );

    let failed = reconcile_of("edge");
    let status = failed.span.status.clone().unwrap_or_default();
    assert_eq!(status.code, StatusCode::Error as i32, "{status:?}");
    assert!(
        status.message.contains("apply ServiceAccount"),
        "{status:?}"
    );
    assert_eq!(applies_of(failed), ["ServiceAccount"]);
}
