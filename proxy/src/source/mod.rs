//! Where snapshots come from: a manifests directory (standalone mode) or the operator.
//!
//! A source runs on its own thread or task and hands each new snapshot to [`State::apply`].
//! Translation never runs on the serving threads.

mod control_plane;
mod manifests;

use std::sync::Arc;

pub use control_plane::{ControlPlaneSource, host_name};
pub use manifests::ManifestsSource;

use crate::state::State;

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid control plane settings: {0}")]
    ControlPlane(String),
    #[error(transparent)]
    Manifests(#[from] portico_manifests::DirError),
}

/// A producer of snapshots.
pub trait SnapshotSource: Send + 'static {
    /// Starts producing snapshots into `state`, returning once the first snapshot (if the
    /// source can produce one synchronously) is applied. Runs until the process exits.
    fn start(self: Box<Self>, state: Arc<State>) -> Result<(), SourceError>;
}
