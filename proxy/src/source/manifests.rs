//! Standalone mode: snapshots from a directory of manifests.
//!
//! The directory is read and watched by `portico-manifests` (each file keeps its last good
//! parse; a deleted file's objects go); every change to some file's objects is translated here
//! into the snapshot this proxy serves, and the translation's warnings are logged once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portico_api::Snapshot;
use portico_translate::{Index, Options, translate};

use super::{SnapshotSource, SourceError};
use crate::state::State;

/// A manifests directory and how to translate it.
#[derive(Debug)]
pub struct ManifestsSource {
    pub dir: PathBuf,
    /// `--class`: serve only this class; otherwise every class, combined.
    pub class: Option<String>,
    pub platform_namespace: Option<String>,
    pub debounce: Duration,
}

impl ManifestsSource {
    fn options(&self) -> Options {
        Options {
            only_class: self.class.clone(),
            combine_classes: self.class.is_none(),
            platform_namespace: self.platform_namespace.clone(),
            class_platform_namespaces: Default::default(),
            replicas: 1,
        }
    }

    /// Translates the files into the snapshot this proxy serves, and records what the
    /// translator said of each Ingress and IngressPolicy (logged, and on `/status`).
    fn snapshot(&self, index: &Index, state: &State) -> Snapshot {
        let mut output = translate(index, &self.options());
        for (ingress, report) in &output.ingresses {
            for w in &report.warnings {
                tracing::warn!(%ingress, reason = %w.reason, "{}", w.message);
            }
        }
        for (policy, status) in &output.policies {
            for ancestor in &status.ancestors {
                for c in ancestor.conditions.iter().filter(|c| c.status != "True") {
                    tracing::warn!(%policy, condition = %c.r#type, reason = %c.reason, "{}", c.message);
                }
            }
        }
        let class = self.class.clone().unwrap_or_default();
        let mut snapshots = std::mem::take(&mut output.snapshots);
        state.set_translation_status(output);
        let picked = match &self.class {
            Some(class) => snapshots.remove(class),
            None => snapshots.into_values().next(),
        };
        picked.unwrap_or_else(|| Snapshot::empty(class))
    }

    fn apply(&self, index: &Index, state: &State, version: &mut u64) {
        let mut snapshot = self.snapshot(index, state);
        *version += 1;
        snapshot.version = *version;
        let routes = snapshot.route_count();
        match state.apply(snapshot) {
            Ok(v) => tracing::info!(version = v, routes, "snapshot applied"),
            Err(e) => tracing::error!(error = %e, "snapshot refused; keeping the current one"),
        }
    }
}

impl SnapshotSource for ManifestsSource {
    fn start(self: Box<Self>, state: Arc<State>) -> Result<(), SourceError> {
        let mut version = 0;
        let (dir, debounce) = (self.dir.clone(), self.debounce);
        portico_manifests::follow(dir, debounce, move |files| match files {
            Ok(files) => self.apply(files.index(), &state, &mut version),
            Err(e) => {
                state.count_snapshot_error();
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the manifests directory; keeping the current snapshot");
            }
        })?;
        Ok(())
    }
}
