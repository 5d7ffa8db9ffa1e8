//! Test builders and a scripted API server (kube's tower-test pattern).
//!
//! A scenario runs the code under test against a [`kube::Client`] whose transport is
//! [`ApiServer`]: the test says, request by request, which method and exact URI (field manager
//! and `force` included) it expects, looks at the body and answers. Every scenario runs under a
//! one-second timeout, and [`ApiServer::done`] proves that nothing else was sent.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};
use k8s_openapi::api::networking::v1::{
    IngressClass, IngressClassParametersReference, IngressClassSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::client::Body;
use portico_crds::{
    AncestorRef, CONTROLLER_NAME, IngressPolicyStatus, PolicyAncestorStatus, PolicyCondition,
    ProxyClass, ProxyClassSpec, ProxyService, ServiceType,
};
use portico_translate::{IngressReport, Output, Warning};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

/// A client talking to a scripted [`ApiServer`].
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

/// Runs `scenario` against the server side, failing the test after one second.
pub async fn within_a_second<T>(scenario: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(1), scenario)
        .await
        .expect("scenario did not finish within a second")
}

/// The server side of [`mock_client`].
#[derive(Debug)]
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// Waits for the next request and asserts its method and exact URI.
    pub async fn expect(&mut self, method: Method, uri: &str) -> Call {
        let (request, respond) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {method} {uri}, but the client hung up"));
        assert_eq!(
            (request.method(), request.uri().to_string().as_str()),
            (&method, uri),
            "unexpected request"
        );
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request bodies are JSON")
        };
        Call { body, respond }
    }

    /// Asserts that the client sends nothing more. Call it after every client clone is
    /// dropped (the code under test finished and was dropped).
    pub async fn done(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

/// One request the client sent, waiting for its answer.
#[derive(Debug)]
pub struct Call {
    /// The request body (`null` when empty).
    pub body: Value,
    respond: SendResponse<Response<Body>>,
}

impl Call {
    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: u16, body: Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers 200 with the body that was sent, as an apply or a create does.
    pub fn echo(self) -> Value {
        let body = self.body.clone();
        self.respond(200, body.clone());
        body
    }

    /// Answers 404 Not Found as the API server does.
    pub fn not_found(self) {
        self.respond(
            404,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404
            }),
        );
    }
}

/// An IngressClass builder: Portico's controller, uid `uid-<name>`, no parameters.
#[derive(Debug, Clone)]
pub struct ClassBuilder(IngressClass);

/// Starts an [`IngressClass`] named `name`.
pub fn ingress_class(name: &str) -> ClassBuilder {
    ClassBuilder(IngressClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER_NAME.into()),
            parameters: None,
        }),
    })
}

impl ClassBuilder {
    /// Another controller's class.
    pub fn controller(mut self, controller: &str) -> Self {
        self.0.spec.as_mut().unwrap().controller = Some(controller.into());
        self
    }

    /// `spec.parameters` naming the ProxyClass `name`.
    pub fn proxy_class(self, name: &str) -> Self {
        self.parameters("portico.dev", "ProxyClass", name)
    }

    /// Any `spec.parameters`.
    pub fn parameters(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.0.spec.as_mut().unwrap().parameters = Some(IngressClassParametersReference {
            api_group: Some(group.into()),
            kind: kind.into(),
            name: name.into(),
            scope: Some("Cluster".into()),
            namespace: None,
        });
        self
    }

    pub fn build(self) -> Arc<IngressClass> {
        Arc::new(self.0)
    }
}

/// A ProxyClass builder.
#[derive(Debug, Clone)]
pub struct ProxyClassBuilder(ProxyClass);

/// Starts a [`ProxyClass`] named `name` with an empty spec.
pub fn proxy_class(name: &str) -> ProxyClassBuilder {
    ProxyClassBuilder(ProxyClass::new(name, ProxyClassSpec::default()))
}

impl ProxyClassBuilder {
    pub fn replicas(mut self, n: i32) -> Self {
        self.0.spec.replicas = Some(n);
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        self.0.spec.image = Some(image.into());
        self
    }

    pub fn service_type(mut self, r#type: ServiceType) -> Self {
        self.service().r#type = r#type;
        self
    }

    pub fn service_annotation(mut self, key: &str, value: &str) -> Self {
        self.service().annotations.insert(key.into(), value.into());
        self
    }

    pub fn publish_address(mut self, address: &str) -> Self {
        self.0.spec.publish_addresses.push(address.into());
        self
    }

    fn service(&mut self) -> &mut ProxyService {
        self.0
            .spec
            .service
            .get_or_insert_with(ProxyService::default)
    }

    pub fn json(self) -> Value {
        serde_json::to_value(self.0).unwrap()
    }
}

/// The proxy Service of `class` in `namespace` with load-balancer ingress `addresses` (IPs, or
/// host names when they contain a letter).
pub fn proxy_service(namespace: &str, class: &str, addresses: &[&str]) -> Service {
    let ingress = addresses
        .iter()
        .map(|a| {
            if a.parse::<std::net::IpAddr>().is_ok() {
                LoadBalancerIngress {
                    ip: Some((*a).into()),
                    ..LoadBalancerIngress::default()
                }
            } else {
                LoadBalancerIngress {
                    hostname: Some((*a).into()),
                    ..LoadBalancerIngress::default()
                }
            }
        })
        .collect();
    Service {
        metadata: ObjectMeta {
            name: Some(format!("portico-proxy-{class}")),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(ingress),
            }),
            ..ServiceStatus::default()
        }),
        ..Service::default()
    }
}

/// A translator [`Output`] builder.
#[derive(Debug, Clone, Default)]
pub struct OutputBuilder(Output);

/// Starts an empty [`Output`].
pub fn output() -> OutputBuilder {
    OutputBuilder::default()
}

impl OutputBuilder {
    /// An Ingress `namespace/name` served by `class`, with `warnings` as `(reason, message)`.
    pub fn ingress(mut self, key: &str, class: &str, warnings: &[(&str, &str)]) -> Self {
        self.0.ingresses.insert(
            key.into(),
            IngressReport {
                class: class.into(),
                warnings: warnings.iter().map(|(r, m)| Warning::new(*r, *m)).collect(),
            },
        );
        self
    }

    /// An IngressPolicy `namespace/name` with one ancestor (the Ingress `ingress` of the same
    /// namespace) and `conditions` as `(type, status, reason, message)`, at `generation`.
    pub fn policy(
        mut self,
        key: &str,
        ingress: &str,
        generation: i64,
        conditions: &[(&str, &str, &str, &str)],
    ) -> Self {
        let namespace = key.split('/').next().unwrap();
        self.0.policies.insert(
            key.into(),
            IngressPolicyStatus {
                ancestors: vec![PolicyAncestorStatus {
                    ancestor_ref: AncestorRef {
                        group: "networking.k8s.io".into(),
                        kind: "Ingress".into(),
                        namespace: Some(namespace.into()),
                        name: ingress.into(),
                    },
                    controller_name: CONTROLLER_NAME.into(),
                    conditions: conditions
                        .iter()
                        .map(|(t, s, r, m)| PolicyCondition {
                            r#type: (*t).into(),
                            status: (*s).into(),
                            reason: (*r).into(),
                            message: (*m).into(),
                            observed_generation: Some(generation),
                            last_transition_time: None,
                        })
                        .collect(),
                }],
            },
        );
        self
    }

    pub fn build(self) -> Output {
        self.0
    }
}
