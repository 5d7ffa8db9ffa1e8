//! Cluster mode: snapshots streamed by the Portico operator.
//!
//! The proxy follows one IngressClass with [`portico_distribute::client::run`], which
//! reassembles backend deltas, acknowledges each version applied here and reconnects with
//! backoff and jitter. Until the first snapshot arrives the proxy is not ready; afterwards a lost
//! operator changes nothing here: the last snapshot stays in force. The client runs on a thread
//! of its own, so applying a snapshot never runs on the serving threads.

use std::path::PathBuf;
use std::sync::Arc;

use portico_distribute::client::{self, ClientConfig};

use super::{SnapshotSource, SourceError};
use crate::state::State;

/// The operator's URL and how to prove who we are to it.
#[derive(Debug)]
pub struct ControlPlaneSource {
    pub url: String,
    pub class: String,
    /// CA certificate (PEM) of the operator; re-read on every connect.
    pub ca_file: PathBuf,
    /// Bearer token file; re-read on every connect.
    pub token_file: PathBuf,
    /// Name in the operator's reports.
    pub proxy_id: String,
}

impl SnapshotSource for ControlPlaneSource {
    fn start(self: Box<Self>, state: Arc<State>) -> Result<(), SourceError> {
        if self.class.is_empty() {
            return Err(SourceError::ControlPlane("--class is required".into()));
        }
        let config = ClientConfig::new(
            self.url,
            self.class,
            self.proxy_id,
            self.ca_file,
            self.token_file,
        );
        config
            .validate()
            .map_err(|e| SourceError::ControlPlane(e.to_string()))?;
        // A thread and runtime of its own: building a large snapshot's routes must not hold up
        // the serving threads, as in standalone mode.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SourceError::ControlPlane(format!("cannot start its runtime: {e}")))?;
        std::thread::Builder::new()
            .name("portico-control-plane".into())
            .spawn(move || {
                runtime.block_on(client::run(config, move |snapshot| {
                    let routes = snapshot.route_count();
                    match state.apply(snapshot) {
                        Ok(version) => {
                            tracing::info!(version, routes, "snapshot applied");
                            Ok(())
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "snapshot refused; keeping the current one");
                            Err(e.to_string())
                        }
                    }
                }))
            })
            .map_err(|e| SourceError::ControlPlane(format!("cannot start its thread: {e}")))?;
        Ok(())
    }
}

/// The host name, the default proxy id outside a pod.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "portico-proxy".to_owned())
}
