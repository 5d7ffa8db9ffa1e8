//! Development mode: the index fed from a directory of manifests instead of a cluster.
//!
//! The directory is read and watched by `portico-manifests`, as the proxy's standalone mode
//! does (each file keeps its last good parse; a deleted file's objects go); every change to some
//! file's objects replaces the shared index with the directory's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::batch::Shared;

/// Name of this source in [`Shared`].
pub const SOURCE: &str = "manifests";
const DEBOUNCE: Duration = Duration::from_millis(50);

pub use portico_manifests::DirError as ManifestsError;

/// Loads `dir` into `shared` and follows it on a thread of its own.
pub fn start(dir: PathBuf, shared: Arc<Shared>) -> Result<(), ManifestsError> {
    let shown = dir.display().to_string();
    let mut first = true;
    portico_manifests::follow(dir, DEBOUNCE, move |files| match files {
        Ok(files) => {
            let index = files.index().clone();
            if !first {
                tracing::info!(objects = index.len(), "manifests changed");
            }
            shared.update(|i| {
                *i = index;
                true
            });
            if std::mem::take(&mut first) {
                shared.synced(SOURCE);
            }
        }
        Err(e) => {
            tracing::error!(dir = %shown, error = %e, "cannot read the manifests directory; keeping the current objects")
        }
    })
}
