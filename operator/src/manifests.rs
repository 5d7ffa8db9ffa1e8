//! Development mode: the index fed from a directory of manifests instead of a cluster.
//!
//! Like the proxy's standalone mode: every `*.yaml`, `*.yml` and `*.json` file directly in the
//! directory is parsed on its own and keeps its last good parse while it does not parse; a
//! deleted file's objects go. The directory is watched and re-read every two seconds in case
//! an event is lost. On any change the index is rebuilt from every file's objects (this mode
//! serves tests and laptops, not ten thousand Ingresses).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use portico_translate::{Index, Object, parse_manifests};

use crate::batch::Shared;

/// Name of this source in [`Shared`].
pub const SOURCE: &str = "manifests";
const RESCAN: Duration = Duration::from_secs(2);
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Why the directory cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestsError {
    #[error("cannot read the manifests directory {dir}: {source}")]
    Directory {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch the manifests directory: {0}")]
    Watch(#[from] notify::Error),
}

/// Each file's text digest and the objects of its last good parse.
#[derive(Debug, Default)]
struct Files {
    files: BTreeMap<PathBuf, (u64, Vec<Object>)>,
}

fn digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("yaml" | "yml" | "json")) && path.is_file()
}

impl Files {
    /// Re-reads `dir`; true when some file's objects changed.
    fn refresh(&mut self, dir: &Path) -> std::io::Result<bool> {
        let mut seen = Vec::new();
        let mut changed = false;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if !is_manifest(&path) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            seen.push(path.clone());
            let digest = digest(&text);
            if self.files.get(&path).is_some_and(|(d, _)| *d == digest) {
                continue;
            }
            let parsed = parse_manifests(&text, "default");
            let name = path.display();
            if parsed.invalid_yaml || (parsed.objects.is_empty() && !parsed.problems.is_empty()) {
                for p in &parsed.problems {
                    tracing::error!(file = %name, document = p.document, problem = %p.message, "manifest does not parse; keeping its previous contents");
                }
                let previous = self.files.remove(&path).map(|(_, o)| o).unwrap_or_default();
                self.files.insert(path, (digest, previous));
                continue;
            }
            for p in &parsed.problems {
                tracing::warn!(file = %name, document = p.document, problem = %p.message, "manifest document skipped");
            }
            self.files.insert(path, (digest, parsed.objects));
            changed = true;
        }
        let before = self.files.len();
        self.files.retain(|path, _| seen.contains(path));
        Ok(changed || self.files.len() != before)
    }

    fn index(&self) -> Index {
        Index::from_objects(self.files.values().flat_map(|(_, o)| o.iter().cloned()))
    }
}

/// Loads `dir` into `shared` and follows it on a thread of its own.
pub fn start(dir: PathBuf, shared: Arc<Shared>) -> Result<(), ManifestsError> {
    let shown = dir.display().to_string();
    let directory_error = |source| ManifestsError::Directory {
        dir: shown.clone(),
        source,
    };
    if !dir.is_dir() {
        return Err(directory_error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a directory",
        )));
    }
    let mut files = Files::default();
    files.refresh(&dir).map_err(directory_error)?;
    let index = files.index();
    shared.update(|i| {
        *i = index;
        true
    });
    shared.synced(SOURCE);

    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("portico-manifests".into())
        .spawn(move || {
            let _watcher = watcher;
            loop {
                match rx.recv_timeout(RESCAN) {
                    Ok(()) => {
                        // Batch a burst of events, for at most a second.
                        let first = std::time::Instant::now();
                        while first.elapsed() < Duration::from_secs(1)
                            && rx.recv_timeout(DEBOUNCE).is_ok()
                        {}
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                match files.refresh(&dir) {
                    Ok(true) => {
                        let index = files.index();
                        tracing::info!(objects = index.len(), "manifests changed");
                        shared.update(|i| {
                            *i = index;
                            true
                        });
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "cannot read the manifests directory; keeping the current objects")
                    }
                }
            }
        })
        .map_err(directory_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_keeps_its_objects_and_a_deleted_file_goes() {
        let dir = std::env::temp_dir().join(format!("portico-op-manifests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("svc.yaml");
        let good = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
        std::fs::write(&file, good).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let mut files = Files::default();
        assert!(files.refresh(&dir).unwrap());
        assert_eq!(files.index().len(), 1);
        assert!(!files.refresh(&dir).unwrap(), "nothing changed");

        std::fs::write(&file, "kind: [unclosed\n").unwrap();
        assert!(!files.refresh(&dir).unwrap());
        assert_eq!(files.index().len(), 1, "the last good parse stays");

        std::fs::write(&file, good.replace("name: web", "name: api")).unwrap();
        assert!(files.refresh(&dir).unwrap());
        let names: Vec<_> = files
            .index()
            .services
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(names, ["default/api"]);

        std::fs::remove_file(&file).unwrap();
        assert!(files.refresh(&dir).unwrap());
        assert!(files.index().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
