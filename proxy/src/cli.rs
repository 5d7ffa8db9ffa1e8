//! The command line. Every flag can also come from an environment variable `PORTICO_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
pub use portico_crds::LogFormat;
use portico_crds::parse_flag_duration;
use portico_otlp::Flags;

const ABOUT: &str = "Portico's data plane: an HTTP/1.1, HTTP/2 and TLS reverse proxy that serves \
Kubernetes Ingresses.";

const LONG_ABOUT: &str = "\
Portico's data plane: an HTTP/1.1, HTTP/2 and TLS reverse proxy that serves Kubernetes Ingresses.

In standalone mode (--manifests) the proxy reads Kubernetes objects (IngressClass, Ingress, \
Service, EndpointSlice, Secret, ConfigMap, IngressPolicy) from YAML or JSON files in a directory, \
translates them into a routing snapshot and serves it. The directory is watched: a change is live \
within a second, without dropping a connection. A file that stops parsing keeps its last good \
contents until it is fixed.

In cluster mode (--control-plane) the proxy holds no Kubernetes credentials: it follows the \
snapshot of one IngressClass (--class) streamed by the Portico operator over HTTP/2 and TLS, \
trusting only the CA in --control-plane-ca and presenting the ServiceAccount token in \
--token-file (audience portico.dev); both files are re-read on every reconnect, as a projected \
token rotates. Changes arrive as they happen; endpoint changes arrive as small deltas. The proxy \
turns ready with its first snapshot, and when it loses the operator it keeps serving the last \
one and reconnects with backoff.

Requests are routed by host and path as the Ingress specification says (exact hosts, then \
one-label wildcards, then rules without a host; Exact paths, then the longest Prefix), to pooled \
keep-alive connections to the ready endpoints of the backend Service (HTTP/1.1, h2c or TLS). \
Certificates are chosen by SNI from the Ingresses' TLS sections; clients without a matching name \
get a generated self-signed certificate. Upstream certificates are not verified (like nginx's \
proxy_ssl_verify off).

IngressPolicy objects are enforced per route: ipAccess, client certificates, CORS, body size, \
rate limits (local, divided among replicas, or shared through Redis with --redis-url), \
authentication (basic, JWT, API keys, external), header edits, timeouts and retries.

Errors are short plain-text answers: 404 no route, 503 no endpoints or overloaded, 502 upstream \
connect or protocol error, 504 upstream timeout, 400 bad request, 401 unauthorized, 403 \
forbidden by policy, 408 request head too slow, 413 body too large, 421 misdirected request, \
429 rate limited.

On SIGTERM or SIGINT the proxy turns unready, closes its listeners, lets in-flight requests finish \
for up to --drain-timeout, closes upgraded connections (WebSockets) at that deadline and exits 0.

The admin listener serves /healthz, /readyz, /metrics (Prometheus), /config (JSON summary of \
the routes in force) and /status (what the translator reported of each Ingress and IngressPolicy).

Every request is written to the access log on stdout (--access-log) and, with --otlp-endpoint or \
OTEL_EXPORTER_OTLP_ENDPOINT, traced: a server span per request and a client span per upstream try, \
exported over OTLP (gRPC or HTTP/protobuf) in batches that never hold a request up.";

const AFTER_HELP: &str = "\
Examples:
  Serve every Portico IngressClass found in ./manifests on the default ports:
    portico-proxy --manifests ./manifests

  Serve one class on one core, with JSON logs:
    portico-proxy --manifests ./manifests --class portico --workers 1 --log-format json

  Pick free ports (the bound addresses are logged as `listening http=.. https=.. admin=..`):
    portico-proxy --manifests ./m --http 127.0.0.1:0 --https 127.0.0.1:0 --admin 127.0.0.1:0

  Follow the class `portico` from an operator (defaults fit a pod with projected token and CA):
    portico-proxy --control-plane https://portico-operator.portico-system.svc:8443 --class portico

  The same outside a cluster, against `portico-operator --manifests DIR --tls-dir D`:
    portico-proxy --control-plane https://127.0.0.1:8443 --class portico \\
      --control-plane-ca D/ca.crt --token-file ./token

  The same through the environment:
    PORTICO_MANIFESTS=./m PORTICO_WORKERS=1 portico-proxy

  Send 10% of new traces to Jaeger over OTLP/gRPC, text access logs:
    portico-proxy --manifests ./m --otlp-endpoint http://jaeger:4317 --otlp-protocol grpc \\
      --trace-sampling 0.1 --access-log text

Durations are written like 30s, 500ms, 2m, 1h or 1m30s; a bare number means seconds.";

/// Command line of `portico-proxy`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "portico-proxy",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// Directory of Kubernetes manifests (*.yaml, *.yml, *.json; not recursive) to serve.
    #[arg(
        long,
        env = "PORTICO_MANIFESTS",
        value_name = "DIR",
        required_unless_present = "control_plane"
    )]
    pub manifests: Option<PathBuf>,

    /// Follow snapshots streamed by the Portico operator at this https:// URL instead of
    /// reading a manifests directory. Requires --class.
    #[arg(
        long,
        env = "PORTICO_CONTROL_PLANE",
        value_name = "URL",
        conflicts_with = "manifests",
        requires = "class"
    )]
    pub control_plane: Option<String>,

    /// Serve only this IngressClass. Without it (standalone mode only), every Portico class is
    /// served together.
    #[arg(long, env = "PORTICO_CLASS", value_name = "NAME")]
    pub class: Option<String>,

    /// CA certificate (PEM) that signed the operator's serving certificate.
    #[arg(
        long,
        env = "PORTICO_CONTROL_PLANE_CA",
        value_name = "FILE",
        default_value = "/var/run/secrets/portico.dev/ca/ca.crt"
    )]
    pub control_plane_ca: PathBuf,

    /// File holding the ServiceAccount token presented to the operator (audience
    /// portico.dev).
    #[arg(
        long,
        env = "PORTICO_TOKEN_FILE",
        value_name = "FILE",
        default_value = "/var/run/secrets/portico.dev/token/token"
    )]
    pub token_file: PathBuf,

    /// This proxy's name in the operator's reports. Default: the host name.
    #[arg(long, env = "PORTICO_POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// Address of the plain HTTP listener (HTTP/1.1 and h2c with prior knowledge).
    #[arg(
        long,
        env = "PORTICO_HTTP",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http: SocketAddr,

    /// Address of the TLS listener (HTTP/2 and HTTP/1.1 by ALPN).
    #[arg(
        long,
        env = "PORTICO_HTTPS",
        value_name = "ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub https: SocketAddr,

    /// Address of the admin listener (/healthz, /readyz, /metrics, /config).
    #[arg(
        long,
        env = "PORTICO_ADMIN",
        value_name = "ADDR",
        default_value = "127.0.0.1:9901"
    )]
    pub admin: SocketAddr,

    /// Worker threads. Default: the number of CPUs. 1 runs everything on one current-thread
    /// runtime.
    #[arg(long, env = "PORTICO_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_flag_duration)]
    pub drain_timeout: Duration,

    /// Most client connections open at once; further connections wait in the accept backlog.
    #[arg(long, env = "PORTICO_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Time a client has to send request headers once it started (and to finish a TLS
    /// handshake): 408 and the connection closed when exceeded.
    #[arg(long, env = "PORTICO_HEADER_READ_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_flag_duration)]
    pub header_read_timeout: Duration,

    /// A client connection with no request for this long is closed: HTTP/1.1 when it sends
    /// nothing (new, or between requests), HTTP/2 when it has no stream open (after a GOAWAY).
    /// A client that stops sending an HTTP/1.1 request body, or stops reading a response
    /// (HTTP/1.1, or HTTP/2 within twice this), for this long is disconnected too.
    #[arg(long, env = "PORTICO_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_flag_duration)]
    pub idle_timeout: Duration,

    /// Time allowed to open a TCP (and TLS) connection to an endpoint; 504 when exceeded.
    #[arg(long, env = "PORTICO_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = parse_flag_duration)]
    pub connect_timeout: Duration,

    /// Keep an incoming X-Request-Id instead of replacing it with a generated one.
    #[arg(long, env = "PORTICO_TRUST_REQUEST_ID")]
    pub trust_request_id: bool,

    /// Peers (CIDRs, comma-separated) whose X-Forwarded-For is believed when policies look at
    /// the client IP (ipAccess with source ClientIP, rate limits by ClientIP): the client is the
    /// right-most address that is not one of them. Without it the client is always the peer.
    #[arg(
        long,
        env = "PORTICO_TRUSTED_PROXIES",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Expect a PROXY protocol header (v1 or v2) at the start of every connection, from a load
    /// balancer in front, and take the client address from it. Connections without one are
    /// closed.
    #[arg(long, env = "PORTICO_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Redis server for rate limits with replicas: Distributed (`redis://HOST:PORT/DB`). Without
    /// it such limits are enforced per replica, divided among the replicas.
    #[arg(long, env = "PORTICO_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Namespace whose IngressPolicy overrides on IngressClasses are honoured.
    #[arg(
        long,
        env = "PORTICO_PLATFORM_NAMESPACE",
        value_name = "NS",
        default_value = "portico-system"
    )]
    pub platform_namespace: String,

    /// Log line format on stderr.
    #[arg(
        long,
        env = "PORTICO_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive such as
    /// `portico_proxy=debug,info`.
    #[arg(
        long,
        env = "PORTICO_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,

    /// Quiet time after a change in the manifests directory before it is re-read.
    #[arg(long, env = "PORTICO_WATCH_DEBOUNCE", value_name = "DURATION", default_value = "100ms", value_parser = parse_flag_duration, hide = true)]
    pub watch_debounce: Duration,

    /// How long an upstream HTTP/1.1 connection may stay idle in the pool before it is closed.
    #[arg(long, env = "PORTICO_UPSTREAM_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_flag_duration, hide = true)]
    pub upstream_idle_timeout: Duration,

    /// Trace export: --otlp-endpoint, --otlp-protocol, --trace-sampling.
    #[command(flatten)]
    pub otlp: Flags,

    /// Continue the trace of an incoming `traceparent`/`tracestate` instead of starting a new
    /// trace for every request (trust it only when clients are your own services).
    #[arg(long, env = "PORTICO_TRUST_TRACE_CONTEXT")]
    pub trust_trace_context: bool,

    /// Access log on stdout: one line per request.
    #[arg(
        long,
        env = "PORTICO_ACCESS_LOG",
        value_name = "FORMAT",
        default_value = "json"
    )]
    pub access_log: AccessLogFormat,
}

/// Access log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// One human-readable line per request.
    Text,
    /// No access log.
    Off,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn duration_flags_take_units_or_bare_seconds() {
        let parse = |v: &str| {
            Cli::try_parse_from(["portico-proxy", "--manifests", "/m", "--drain-timeout", v])
                .map(|c| c.drain_timeout)
        };
        assert_eq!(parse("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        let err = parse("1d").unwrap_err().to_string();
        assert!(
            err.contains("--drain-timeout") && err.contains("unit"),
            "{err}"
        );
    }

    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["portico-proxy", "--manifests", "/m"]).unwrap();
        assert_eq!(cli.http.port(), 8080);
        assert_eq!(cli.https.port(), 8443);
        assert_eq!(cli.admin.to_string(), "127.0.0.1:9901");
        assert_eq!(cli.drain_timeout, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["portico-proxy"]).is_err());
        let cp = ["portico-proxy", "--control-plane", "https://op:8443"];
        assert!(Cli::try_parse_from(cp).is_err(), "--class is required");
        let cli = Cli::try_parse_from([&cp[..], &["--class", "web"]].concat()).unwrap();
        assert_eq!(
            cli.token_file,
            Path::new("/var/run/secrets/portico.dev/token/token")
        );
        assert_eq!(
            cli.control_plane_ca,
            Path::new("/var/run/secrets/portico.dev/ca/ca.crt")
        );
        assert!(
            Cli::try_parse_from(["portico-proxy", "--manifests", "/m", "--workers", "0"]).is_err()
        );
        assert_eq!(cli.access_log, AccessLogFormat::Json);
        assert!(cli.otlp.endpoint.is_none() && !cli.trust_trace_context);
    }
}
