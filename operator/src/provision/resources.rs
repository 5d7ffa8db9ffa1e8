//! The objects that run one IngressClass's proxies, rendered from the class, its ProxyClass
//! and the operator's settings. Pure: no I/O, so every field is tested without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecurityContext, Service, ServiceAccount, ServiceAccountTokenProjection, ServicePort,
    ServiceSpec, SleepAction, TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use portico_crds::{LogFormat, OtlpProtocol, ProxyClassSpec};

use super::{Error, Settings};

/// `app.kubernetes.io/managed-by` of every object the operator creates.
pub const MANAGED_BY: &str = "portico-operator";
/// Label naming the IngressClass an object serves; the controller maps changes back by it.
pub const CLASS_LABEL: &str = "portico.dev/ingress-class";
/// Audience of the token a proxy presents to the distribution server.
pub const TOKEN_AUDIENCE: &str = "portico.dev";
/// ConfigMap (key `ca.crt`) with the CA that signs the distribution server's certificate.
pub const CA_CONFIG_MAP: &str = "portico-ca";
/// Where the proxy finds its token and the CA; the proxy's flag defaults point here.
pub const TOKEN_DIR: &str = "/var/run/secrets/portico.dev/token";
/// See [`TOKEN_DIR`].
pub const CA_DIR: &str = "/var/run/secrets/portico.dev/ca";

/// Container ports of the proxy.
const HTTP_PORT: i32 = 8080;
const HTTPS_PORT: i32 = 8443;
const ADMIN_PORT: i32 = 9901;
/// Seconds a stopping pod keeps serving before the proxy starts draining, so that load
/// balancers and kube-proxy notice the endpoint is gone first.
const PRE_STOP_SECONDS: i64 = 5;
/// Slack on top of preStop and drain before the kubelet kills the proxy.
const GRACE_SLACK_SECONDS: i64 = 10;
const DEFAULT_REPLICAS: i32 = 2;
const DEFAULT_DRAIN_MS: u64 = 30_000;
const TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// The non-root user of the distroless image.
const RUN_AS: i64 = 65532;

/// The four objects of one class, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub service: Service,
    pub pod_disruption_budget: PodDisruptionBudget,
}

/// Proxy replicas of a class with this ProxyClass.
pub fn replicas(proxy: &ProxyClassSpec) -> i32 {
    proxy.replicas.unwrap_or(DEFAULT_REPLICAS)
}

/// Namespace whose IngressPolicy `overrides` apply to a class with this ProxyClass.
pub fn platform_namespace(proxy: &ProxyClassSpec, settings: &Settings) -> String {
    proxy
        .platform_namespace
        .clone()
        .unwrap_or_else(|| settings.namespace.clone())
}

/// `portico-proxy-<class>`: the name of every object of the class. The distribution server
/// authorizes a proxy by its ServiceAccount, so this name is part of the contract.
pub fn object_name(class: &str) -> String {
    format!("portico-proxy-{class}")
}

/// Checks that the class's objects can be named after it: a Service name is a DNS label of at
/// most 63 characters starting with a letter, while an IngressClass may be a longer DNS
/// subdomain with dots.
pub fn check_class_name(class: &str) -> Result<(), Error> {
    let name = object_name(class);
    let valid = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidClassName {
            class: class.to_owned(),
            name,
        })
    }
}

/// Labels of every object of `class`.
pub fn labels(class: &str) -> BTreeMap<String, String> {
    let mut labels = selector(class);
    labels.insert("app.kubernetes.io/instance".into(), object_name(class));
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// Labels that select the proxy pods of `class`. Never changed once a Deployment exists: a
/// Deployment's selector is immutable.
fn selector(class: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "portico-proxy".into()),
        (CLASS_LABEL.into(), class.into()),
    ])
}

/// The owner reference that ties an object to its IngressClass, so that deleting the class
/// deletes it. `blockOwnerDeletion` stays unset: setting it would need update rights on
/// IngressClass finalizers, which the operator has no other use for.
fn owner(class: &IngressClass) -> Result<OwnerReference, Error> {
    let uid = class
        .uid()
        .ok_or_else(|| Error::MissingUid(class.name_any()))?;
    Ok(OwnerReference {
        api_version: IngressClass::api_version(&()).into_owned(),
        kind: IngressClass::kind(&()).into_owned(),
        name: class.name_any(),
        uid,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

fn metadata(class: &IngressClass, settings: &Settings) -> Result<ObjectMeta, Error> {
    let name = class.name_any();
    Ok(ObjectMeta {
        name: Some(object_name(&name)),
        namespace: Some(settings.namespace.clone()),
        labels: Some(labels(&name)),
        owner_references: Some(vec![owner(class)?]),
        ..ObjectMeta::default()
    })
}

/// Renders the objects of `class` with the settings of `proxy` (the class's ProxyClass, or the
/// defaults).
pub fn render(
    class: &IngressClass,
    proxy: &ProxyClassSpec,
    settings: &Settings,
) -> Result<Children, Error> {
    let name = class.name_any();
    check_class_name(&name)?;
    let meta = metadata(class, settings)?;
    Ok(Children {
        service_account: ServiceAccount {
            metadata: meta.clone(),
            // The proxy never talks to the API server: its only credential is the projected
            // token of audience portico.dev.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        deployment: deployment(&name, meta.clone(), proxy, settings)?,
        service: service(&name, meta.clone(), proxy),
        pod_disruption_budget: PodDisruptionBudget {
            metadata: meta,
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector(&name)),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        },
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

/// Runtime settings of the ProxyClass, as the proxy's environment. Flags that the proxy does not
/// know are ignored by it, so the variables can be set before the proxy reads them; tracing uses
/// the standard OpenTelemetry variables.
fn proxy_env(proxy: &ProxyClassSpec, drain_ms: u64) -> Vec<EnvVar> {
    let mut vars = vec![
        EnvVar {
            name: "PORTICO_POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        env("PORTICO_DRAIN_TIMEOUT", format!("{drain_ms}ms")),
    ];
    let logging = proxy.logging.clone().unwrap_or_default();
    vars.push(env(
        "PORTICO_LOG_FORMAT",
        match logging.format.unwrap_or_default() {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        },
    ));
    vars.push(env(
        "PORTICO_LOG_LEVEL",
        logging.level.unwrap_or_else(|| "info".into()),
    ));
    if let Some(client_ip) = &proxy.client_ip {
        if !client_ip.trusted_proxies.is_empty() {
            vars.push(env(
                "PORTICO_TRUSTED_PROXIES",
                client_ip.trusted_proxies.join(","),
            ));
        }
        if client_ip.proxy_protocol {
            vars.push(env("PORTICO_PROXY_PROTOCOL", "true"));
        }
    }
    if let Some(tracing) = &proxy.tracing {
        vars.push(env("OTEL_EXPORTER_OTLP_ENDPOINT", tracing.endpoint.clone()));
        vars.push(env(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            match tracing.protocol {
                OtlpProtocol::Grpc => "grpc",
                OtlpProtocol::Http => "http/protobuf",
            },
        ));
        vars.push(env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"));
        vars.push(env(
            "OTEL_TRACES_SAMPLER_ARG",
            tracing.sampling_ratio.unwrap_or(1.0).to_string(),
        ));
    }
    vars
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("100m".into())),
            ("memory".into(), Quantity("64Mi".into())),
        ])),
        ..ResourceRequirements::default()
    }
}

fn deployment(
    class: &str,
    meta: ObjectMeta,
    proxy: &ProxyClassSpec,
    settings: &Settings,
) -> Result<Deployment, Error> {
    let drain_ms = match &proxy.drain_timeout {
        Some(d) => d.as_millis().map_err(Error::InvalidProxyClass)?,
        None => DEFAULT_DRAIN_MS,
    };
    let drain_seconds = i64::try_from(drain_ms.div_ceil(1000)).unwrap_or(i64::MAX / 2);
    let image = proxy
        .image
        .clone()
        .unwrap_or_else(|| settings.proxy_image.clone());
    let container = Container {
        name: "proxy".into(),
        image: Some(image),
        args: Some(vec![
            "--control-plane".into(),
            settings.control_plane.clone(),
            "--class".into(),
            class.into(),
            "--http".into(),
            format!("0.0.0.0:{HTTP_PORT}"),
            "--https".into(),
            format!("0.0.0.0:{HTTPS_PORT}"),
            "--admin".into(),
            format!("0.0.0.0:{ADMIN_PORT}"),
        ]),
        env: Some(proxy_env(proxy, drain_ms)),
        ports: Some(vec![
            port("http", HTTP_PORT),
            port("https", HTTPS_PORT),
            port("admin", ADMIN_PORT),
        ]),
        readiness_probe: Some(Probe {
            period_seconds: Some(2),
            ..probe("/readyz")
        }),
        liveness_probe: Some(Probe {
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..probe("/healthz")
        }),
        lifecycle: Some(Lifecycle {
            // The sleep action needs no shell or binary in the (distroless) image.
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(proxy.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "ca".into(),
                mount_path: CA_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: meta.name.clone(),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(
            PRE_STOP_SECONDS + drain_seconds + GRACE_SLACK_SECONDS,
        ),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        node_selector: (!proxy.node_selector.is_empty()).then(|| proxy.node_selector.clone()),
        // Spread the replicas over nodes, so one node going away takes one proxy at most;
        // preferred, not required, so a small cluster still schedules them all.
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector(class)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]),
        tolerations: (!proxy.tolerations.is_empty()).then(|| proxy.tolerations.clone()),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "token".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(TOKEN_AUDIENCE.into()),
                            expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                            path: "token".into(),
                        }),
                        ..VolumeProjection::default()
                    }]),
                    ..ProjectedVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "ca".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: CA_CONFIG_MAP.into(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    Ok(Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas(proxy)),
            selector: LabelSelector {
                match_labels: Some(selector(class)),
                ..LabelSelector::default()
            },
            // Start a new pod before stopping an old one: capacity never drops in a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(class)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

fn service(class: &str, mut meta: ObjectMeta, proxy: &ProxyClassSpec) -> Service {
    let config = proxy.service.clone().unwrap_or_default();
    if !config.annotations.is_empty() {
        meta.annotations = Some(config.annotations.clone());
    }
    let node_ports = config.r#type != portico_crds::ServiceType::ClusterIp;
    let service_port = |name: &str, port: i32, target: i32, node_port: Option<i32>| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        node_port: node_port.filter(|_| node_ports),
        ..ServicePort::default()
    };
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(config.r#type.as_str().into()),
            selector: Some(selector(class)),
            ports: Some(vec![
                service_port(
                    "http",
                    config.http_port.unwrap_or(80),
                    HTTP_PORT,
                    config.http_node_port,
                ),
                service_port(
                    "https",
                    config.https_port.unwrap_or(443),
                    HTTPS_PORT,
                    config.https_node_port,
                ),
            ]),
            external_traffic_policy: config.external_traffic_policy.map(|p| {
                match p {
                    portico_crds::TrafficPolicy::Cluster => "Cluster",
                    portico_crds::TrafficPolicy::Local => "Local",
                }
                .into()
            }),
            load_balancer_class: config.load_balancer_class.clone(),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
