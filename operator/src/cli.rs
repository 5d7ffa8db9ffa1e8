//! The command line. Every flag can also come from an environment variable `PORTICO_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use portico_crds::LogFormat;
use portico_crds::parse_flag_duration;
use portico_otlp::Flags;

const ABOUT: &str = "Portico's operator: watches Ingresses and what they reference, translates \
them into routing snapshots and streams each IngressClass's snapshot to its proxies.";

const LONG_ABOUT: &str = "\
Portico's operator: watches Ingresses and what they reference, translates them into routing \
snapshots and streams each IngressClass's snapshot to its proxies.

It is the only Portico component with Kubernetes credentials (in-cluster, or KUBECONFIG outside \
a cluster). It watches IngressClasses, Ingresses, Services, EndpointSlices, Secrets (not those \
of types that never hold certificates: service-account tokens, Helm releases, registry \
credentials, bootstrap tokens, basic and SSH auth), ConfigMaps (not kube-root-ca.crt) and \
IngressPolicies. A change is held for --batch-delay (at most --batch-max-delay under a stream of \
changes), translated, and published as a new snapshot version of each class that changed.

Proxies connect over HTTP/2 and TLS to --listen. The operator keeps its CA and serving \
certificate in the Secret portico-operator-tls of --namespace (created when absent) and \
publishes the CA certificate alone in the ConfigMap portico-ca (key ca.crt) for proxies to \
mount. A proxy presents a ServiceAccount token of audience portico.dev, checked by TokenReview: \
the ServiceAccount must be portico-proxy-<class> in --namespace, and it receives only that \
class's snapshot.

Development mode (--manifests DIR --static-token-file FILE --tls-dir DIR) needs no cluster: the \
objects come from a watched directory of YAML or JSON files, proxies present the token in FILE, \
and the CA and serving certificate are kept in DIR (ca.crt, tls.crt, tls.key; generated when \
absent, for localhost and 127.0.0.1).

The admin listener serves /healthz, /readyz (ready once every watch has listed and the first \
snapshots are published) and /metrics (Prometheus).

With --otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT, the operator traces its work over OTLP: a \
span per translation pass (with the translation and the publishing of each class's snapshot as \
children), per IngressClass reconcile (with each object it applies) and per status write. The \
standard OTEL_* variables (OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_TRACES_SAMPLER[_ARG], \
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*) apply.";

const AFTER_HELP: &str = "\
Examples:
  In a cluster (or against KUBECONFIG):
    portico-operator --namespace portico-system

  Without a cluster, with free ports (bound addresses are logged as `listening distribution=.. admin=..`):
    portico-operator --manifests ./m --static-token-file ./token --tls-dir ./pki \\
      --listen 127.0.0.1:0 --admin 127.0.0.1:0
    portico-proxy --control-plane https://127.0.0.1:PORT --class portico \\
      --control-plane-ca ./pki/ca.crt --token-file ./token

Durations are written like 30s, 500ms, 2m, 1h or 1m30s; a bare number means seconds.";

/// Command line of `portico-operator`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "portico-operator",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// Namespace the operator runs in: its certificates, its proxies' ServiceAccounts, and the
    /// IngressPolicies whose overrides on IngressClasses are honoured.
    #[arg(
        long,
        env = "PORTICO_NAMESPACE",
        value_name = "NS",
        default_value = "portico-system"
    )]
    pub namespace: String,

    /// Address proxies connect to (HTTP/2 over TLS).
    #[arg(
        long,
        env = "PORTICO_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,

    /// Address of the admin listener (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "PORTICO_ADMIN",
        value_name = "ADDR",
        default_value = "0.0.0.0:9901"
    )]
    pub admin: SocketAddr,

    /// Name of the Service in front of the operator; its DNS names go into the serving
    /// certificate.
    #[arg(
        long,
        env = "PORTICO_SERVICE_NAME",
        value_name = "NAME",
        default_value = "portico-operator"
    )]
    pub service_name: String,

    /// Development mode: read objects from this directory of manifests instead of a cluster.
    #[arg(
        long,
        env = "PORTICO_MANIFESTS",
        value_name = "DIR",
        requires_all = ["static_token_file", "tls_dir"]
    )]
    pub manifests: Option<PathBuf>,

    /// Development mode: accept the token in this file (for every class) instead of TokenReview.
    #[arg(
        long,
        env = "PORTICO_STATIC_TOKEN_FILE",
        value_name = "FILE",
        requires = "manifests"
    )]
    pub static_token_file: Option<PathBuf>,

    /// Development mode: keep the CA and serving certificate in this directory.
    #[arg(
        long,
        env = "PORTICO_TLS_DIR",
        value_name = "DIR",
        requires = "manifests"
    )]
    pub tls_dir: Option<PathBuf>,

    /// Quiet time after a change before translating.
    #[arg(long, env = "PORTICO_BATCH_DELAY", value_name = "DURATION", default_value = "100ms", value_parser = parse_flag_duration)]
    pub batch_delay: Duration,

    /// Longest a stream of changes can postpone a translation.
    #[arg(long, env = "PORTICO_BATCH_MAX_DELAY", value_name = "DURATION", default_value = "1s", value_parser = parse_flag_duration)]
    pub batch_max_delay: Duration,

    /// Log line format on stderr.
    #[arg(
        long,
        env = "PORTICO_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive such as
    /// `portico_operator=debug,info`.
    #[arg(
        long,
        env = "PORTICO_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,

    /// Trace export: --otlp-endpoint, --otlp-protocol, --trace-sampling.
    #[command(flatten)]
    pub otlp: Flags,

    /// Interval of keep-alive frames on idle snapshot streams.
    #[arg(long, env = "PORTICO_PING_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = parse_flag_duration, hide = true)]
    pub ping_interval: Duration,
}

impl Cli {
    /// DNS names and addresses the serving certificate is issued for.
    pub fn certificate_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service_name, &self.namespace);
        vec![
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn development_mode_needs_its_three_flags() {
        let cli = Cli::try_parse_from(["portico-operator"]).unwrap();
        assert_eq!(cli.namespace, "portico-system");
        assert!(cli.manifests.is_none());
        assert!(Cli::try_parse_from(["portico-operator", "--manifests", "m"]).is_err());
        assert!(Cli::try_parse_from(["portico-operator", "--static-token-file", "t"]).is_err());
        let cli = Cli::try_parse_from([
            "portico-operator",
            "--manifests",
            "m",
            "--static-token-file",
            "t",
            "--tls-dir",
            "d",
        ])
        .unwrap();
        assert!(cli.manifests.is_some());
        assert!(
            cli.certificate_names()
                .contains(&"portico-operator.portico-system.svc".to_owned())
        );
    }

    #[test]
    fn duration_flags_take_units_or_bare_seconds() {
        let parse = |v: &str| {
            Cli::try_parse_from(["portico-operator", "--batch-delay", v]).map(|c| c.batch_delay)
        };
        assert_eq!(parse("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse("1d").is_err());
    }
}
