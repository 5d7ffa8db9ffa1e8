//! Snapshots from the Portico operator: not available yet.

use std::sync::Arc;

use super::{SnapshotSource, SourceError};
use crate::state::State;

/// Fetches snapshots from the operator's URL.
#[derive(Debug)]
pub struct ControlPlaneSource {
    pub url: String,
}

impl SnapshotSource for ControlPlaneSource {
    fn start(self: Box<Self>, _state: Arc<State>) -> Result<(), SourceError> {
        let _ = self.url;
        Err(SourceError::Unavailable(
            "cluster mode arrives with the operator; use --manifests DIR for now",
        ))
    }
}
