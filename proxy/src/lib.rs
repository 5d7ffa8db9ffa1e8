//! Portico's data plane.
//!
//! ```text
//! source (manifests dir │ control plane) ──snapshot──▶ state (ArcSwap<Config>)
//!                                                          │ read per request
//! listener ─▶ TLS/SNI ─▶ hyper (h1, h2) ─▶ dispatch ─▶ route stack ─▶ upstream pool ─▶ endpoint
//! ```
//!
//! `admin` serves health, readiness, metrics and the route summary; `error` is the one place
//! failures become responses; `hygiene` owns the headers; `telemetry` has the traces (OTLP) and
//! the access log.

mod admin;
mod body;
pub mod cli;
mod dispatch;
mod error;
mod head_timeout;
mod hygiene;
mod listener;
mod metrics;
mod path;
pub mod policy;
mod proxy_protocol;
mod source;
mod state;
mod telemetry;
mod tls;
mod upstream;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;

use cli::{Cli, LogFormat};
use hygiene::Hygiene;
use listener::ServeOptions;
use source::{ControlPlaneSource, ManifestsSource, SnapshotSource, SourceError};
use state::{State, StateOptions};

/// Why the proxy stopped with an error.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start: {0}")]
    State(#[from] state::StateError),
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("telemetry: {0}")]
    Telemetry(#[from] telemetry::TelemetryError),
}

impl RunError {
    /// 2 for a configuration the user must fix, 1 otherwise.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Source(_)
            | Self::State(state::StateError::Redis(_))
            | Self::Telemetry(telemetry::TelemetryError::Invalid(_)) => 2,
            _ => 1,
        }
    }
}

/// Parses the command line, runs the proxy and returns its exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_tracing(&cli) {
        eprintln!(
            "portico-proxy: invalid --log-level `{}`: {e}",
            cli.log_level
        );
        return ExitCode::from(2);
    }
    let workers = cli
        .workers
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("portico-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico-proxy: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_tracing(cli: &Cli) -> Result<(), tracing_subscriber::filter::ParseError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Listen backlog: a burst of a thousand new connections must not overflow the kernel queue
/// (the default of 128 would make clients retry SYNs after a second).
const BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // Restarts must not fail on connections of the previous process in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|source| RunError::Bind { addr, source })
}

async fn run(cli: Cli) -> Result<(), RunError> {
    // Process-wide: `StateOptions` (state.rs) has no field for it yet.
    upstream::set_idle_timeout(cli.upstream_idle_timeout);
    let state = Arc::new(State::new(StateOptions {
        connect_timeout: cli.connect_timeout,
        hygiene: Hygiene {
            trust_request_id: cli.trust_request_id,
        },
        trusted_proxies: cli.trusted_proxies.clone(),
        redis_url: cli.redis_url.clone(),
    })?);
    let settings = telemetry::Settings::resolve(&cli, |name| std::env::var(name).ok())
        .map_err(telemetry::TelemetryError::Invalid)?;
    telemetry::init(&settings, &state.metrics)?;
    let source: Box<dyn SnapshotSource> = match (&cli.control_plane, &cli.manifests) {
        (Some(url), _) => Box::new(ControlPlaneSource {
            url: url.clone(),
            class: cli.class.clone().unwrap_or_default(),
            ca_file: cli.control_plane_ca.clone(),
            token_file: cli.token_file.clone(),
            proxy_id: cli.pod_name.clone().unwrap_or_else(source::host_name),
        }),
        (None, Some(dir)) => Box::new(ManifestsSource {
            dir: dir.clone(),
            class: cli.class.clone(),
            platform_namespace: Some(cli.platform_namespace.clone()),
            debounce: cli.watch_debounce,
        }),
        (None, None) => unreachable!("clap requires --manifests or --control-plane"),
    };
    source.start(state.clone())?;

    let http = bind(cli.http)?;
    let https = bind(cli.https)?;
    let admin = bind(cli.admin)?;
    let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    tracing::info!(
        "listening http={} https={} admin={}",
        local(&http, cli.http),
        local(&https, cli.https),
        local(&admin, cli.admin)
    );

    let options = ServeOptions {
        header_read_timeout: cli.header_read_timeout,
        idle_timeout: cli.idle_timeout,
        max_connections: cli.max_connections,
        proxy_protocol: cli.proxy_protocol,
    };
    let drain = Arc::new(listener::Drain::default());
    for (listener, tls) in [(http, false), (https, true)] {
        tokio::spawn(listener::serve(
            listener,
            tls,
            state.clone(),
            options.clone(),
            drain.clone(),
        ));
    }
    tokio::spawn(admin::serve(admin, state.clone()));

    wait_for_signal().await?;
    let deadline = tokio::time::Instant::now() + cli.drain_timeout;
    tracing::info!(drain_timeout = ?cli.drain_timeout, "draining");
    state.start_draining();
    if tokio::time::timeout_at(deadline, drain.drain())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached with requests in flight; closing them");
    }
    while state.tunnels.active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if state.tunnels.active() > 0 {
        tracing::info!(
            tunnels = state.tunnels.active(),
            "closing upgraded connections"
        );
        state.tunnels.close_all();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    telemetry::flush(Duration::from_secs(2)).await;
    tracing::info!("drained; exiting");
    Ok(())
}

async fn wait_for_signal() -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
