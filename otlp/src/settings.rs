//! Trace export settings: flags first, then the standard `OTEL_*` environment variables.

use std::time::Duration;

use clap::ValueEnum;

use crate::export::BatchSettings;

/// OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    Http,
}

/// What the command line says; each `None` falls back to the environment. Both programs
/// flatten these into their command lines.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Flags {
    /// OTLP collector to send traces to, such as `http://jaeger:4318` (HTTP) or
    /// `http://otel-collector:4317` (gRPC). Without it (and without OTEL_EXPORTER_OTLP_ENDPOINT)
    /// tracing is off. For HTTP, `/v1/traces` is appended unless the URL has a path.
    #[arg(
        long = "otlp-endpoint",
        env = "PORTICO_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,

    /// OTLP transport. Default: OTEL_EXPORTER_OTLP_PROTOCOL, else http.
    #[arg(
        long = "otlp-protocol",
        env = "PORTICO_OTLP_PROTOCOL",
        value_name = "PROTOCOL"
    )]
    pub protocol: Option<Protocol>,

    /// Fraction of new traces to record (0 to 1); a trace continued from a trusted, sampled
    /// parent is always recorded. Default: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG,
    /// else 1.
    #[arg(long = "trace-sampling", env = "PORTICO_TRACE_SAMPLING", value_name = "RATIO", value_parser = parse_ratio)]
    pub sampling: Option<f64>,
}

/// Where and how traces are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The full URL: for HTTP, with its `/v1/traces` path.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Fraction of new traces recorded.
    pub ratio: f64,
    /// Follow the parent's decision when there is one.
    pub parent_based: bool,
    /// Resource attributes in order; a later entry wins over an earlier one of the same key.
    pub resource: Vec<(String, String)>,
    pub batch: BatchSettings,
}

impl TraceSettings {
    /// The settings in force, `None` when no endpoint is configured (tracing off).
    ///
    /// `resource` is the program's own attributes (`service.name`, `service.version`, ...); the
    /// pod name, then `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME` are added after them
    /// and win. `env` reads a variable (a closure so that tests need not touch the process's).
    pub fn resolve(
        flags: &Flags,
        resource: Vec<(String, String)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let protocol = match flags.protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .as_deref()
                .map(str::trim)
            {
                None | Some("http/protobuf") => Protocol::Http,
                Some("grpc") => Protocol::Grpc,
                Some(other) => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported (use grpc or http/protobuf)"
                    ));
                }
            },
        };
        // A signal-specific URL is used as it is; a base URL gets the signal's path (HTTP).
        let endpoint = match (&flags.endpoint, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(base), _) => signal_url(base, protocol),
            (None, Some(full)) => full,
            (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => signal_url(&base, protocol),
                None => return Ok(None),
            },
        };
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("invalid OTLP endpoint `{endpoint}`: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "invalid OTLP endpoint `{endpoint}`: expected http://HOST:PORT or https://HOST:PORT"
            ));
        }
        let (ratio, parent_based) = sampler(flags.sampling, &env)?;
        Ok(Some(Self {
            endpoint,
            protocol,
            ratio,
            parent_based,
            resource: with_environment(resource, &env),
            batch: batch(&env)?,
        }))
    }
}

/// Parses a sampling ratio between 0 and 1.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a ratio between 0 and 1 (try 0.1)")),
    }
}

fn signal_url(base: &str, protocol: Protocol) -> String {
    let base = base.trim();
    if protocol == Protocol::Grpc {
        return base.to_owned();
    }
    match base.parse::<http::Uri>() {
        Ok(uri) if uri.path() != "/" => base.to_owned(),
        _ => format!("{}/v1/traces", base.trim_end_matches('/')),
    }
}

/// `(ratio, parent_based)` from the flag, else `OTEL_TRACES_SAMPLER[_ARG]`.
fn sampler(
    flag: Option<f64>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(f64, bool), String> {
    if let Some(ratio) = flag {
        return Ok((ratio, true));
    }
    let arg = || -> Result<f64, String> {
        match env("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(a) => parse_ratio(&a).map_err(|e| format!("OTEL_TRACES_SAMPLER_ARG: {e}")),
        }
    };
    let name = env("OTEL_TRACES_SAMPLER");
    Ok(match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => (1.0, true),
        Some("always_on") => (1.0, false),
        Some("always_off") => (0.0, false),
        Some("parentbased_always_off") => (0.0, true),
        Some("traceidratio") => (arg()?, false),
        Some("parentbased_traceidratio") => (arg()?, true),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER `{other}` is not supported (use always_on, always_off, traceidratio or their parentbased_ forms)"
            ));
        }
    })
}

/// The program's attributes, then the pod, then `OTEL_RESOURCE_ATTRIBUTES`, then
/// `OTEL_SERVICE_NAME`.
fn with_environment(
    mut attributes: Vec<(String, String)>,
    env: &impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let pod = env("PORTICO_POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        });
    if let Some(pod) = pod {
        attributes.push(("k8s.pod.name".to_owned(), pod.clone()));
        attributes.push(("service.instance.id".to_owned(), pod));
    }
    if let Some(extra) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for pair in extra.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                let (k, v) = (percent_decode(k.trim()), percent_decode(v.trim()));
                if !k.is_empty() {
                    attributes.push((k, v));
                }
            }
        }
    }
    if let Some(name) = env("OTEL_SERVICE_NAME") {
        attributes.push(("service.name".to_owned(), name));
    }
    attributes
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `OTEL_BSP_*`: queue, batch, delay and timeout of the span export.
fn batch(env: &impl Fn(&str) -> Option<String>) -> Result<BatchSettings, String> {
    let mut settings = BatchSettings::default();
    let number = |name: &str| -> Result<Option<u64>, String> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{name} `{v}` is not a whole number"))
            })
            .transpose()
    };
    if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE")? {
        settings.max_queue = (n as usize).max(1);
    }
    if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
        settings.max_batch = (n as usize).max(1);
    }
    if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY")? {
        settings.delay = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = number("OTEL_BSP_EXPORT_TIMEOUT")? {
        settings.timeout = Duration::from_millis(ms.max(1));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(flags: Flags, env: &[(&str, &str)]) -> Result<Option<TraceSettings>, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ours = vec![
            ("service.name".to_owned(), "portico-test".to_owned()),
            ("service.version".to_owned(), "1.2.3".to_owned()),
        ];
        TraceSettings::resolve(&flags, ours, |k| env.get(k).cloned())
    }

    fn endpoint(url: &str) -> Flags {
        Flags {
            endpoint: Some(url.to_owned()),
            ..Flags::default()
        }
    }

    #[test]
    fn tracing_is_off_without_an_endpoint() {
        let flags = Flags {
            sampling: Some(0.5),
            ..Flags::default()
        };
        assert_eq!(resolve(flags, &[]).unwrap(), None);
    }

    #[test]
    fn flags_win_over_the_environment() {
        let flags = Flags {
            endpoint: Some("http://jaeger:4317".into()),
            protocol: Some(Protocol::Grpc),
            sampling: Some(0.25),
        };
        let t = resolve(
            flags,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.endpoint, "http://jaeger:4317");
        assert_eq!(t.protocol, Protocol::Grpc);
        assert_eq!((t.ratio, t.parent_based), (0.25, true));
    }

    #[test]
    fn the_standard_variables_configure_tracing() {
        let t = resolve(
            Flags::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_SERVICE_NAME", "edge"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,team=a%2Cb",
                ),
                ("PORTICO_POD_NAME", "portico-0"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(t.protocol, Protocol::Http);
        assert_eq!((t.ratio, t.parent_based), (0.1, false));
        assert_eq!(t.batch.delay, Duration::from_millis(200));
        let get = |k: &str| {
            t.resource
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("service.name"), Some("edge"));
        assert_eq!(get("k8s.pod.name"), Some("portico-0"));
        assert_eq!(get("team"), Some("a,b"));
        assert_eq!(get("deployment.environment"), Some("prod"));
        assert_eq!(get("service.version"), Some("1.2.3"));
    }

    #[test]
    fn a_traces_endpoint_is_used_as_it_is() {
        let t = resolve(
            Flags::default(),
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.endpoint, "http://c:4318/custom");
    }

    #[test]
    fn bad_settings_are_explained() {
        let e = resolve(endpoint("jaeger:4317"), &[]).unwrap_err();
        assert!(e.contains("expected http://HOST:PORT"), "{e}");
        let e = resolve(
            endpoint("http://j:4318"),
            &[("OTEL_TRACES_SAMPLER", "sometimes")],
        )
        .unwrap_err();
        assert!(e.contains("OTEL_TRACES_SAMPLER"), "{e}");
        let e = resolve(
            Flags::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://j:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
        )
        .unwrap_err();
        assert!(e.contains("http/json"), "{e}");
    }

    #[test]
    fn ratios() {
        assert_eq!(parse_ratio("0.25").unwrap(), 0.25);
        assert_eq!(parse_ratio("1").unwrap(), 1.0);
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
        assert!(parse_ratio("half").is_err());
    }
}
